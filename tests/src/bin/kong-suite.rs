//! The Kong suite on a real Kong (`PORTCULLIS_KONG` or `kong` on PATH; see tests/src/kong.rs), run by
//! `scripts/kong-test`. Without a Kong it prints `skipped: <reason>` and exits 3.
//!
//! 1. The scenario suite (tests/scenarios) on a DB-less Kong: what the client and the upstream receive.
//! 2. Never open, DB-less: every valid example config of every filter and the bundle (tests/configs/*/valid),
//!    rendered by `portcullis render --target kong`, each on its own route behind a marker filter: every route
//!    must answer with the marker (its chain runs) and Kong must log no chain that failed to build.
//! 3. The same policy pushed with `portcullis push` to a Kong with PostgreSQL: created, every chain running, a
//!    second push changes nothing (empty lists included), then the push test policy (create, rate limit through
//!    the pushed chain, an edit as exactly one update, a dry run that writes nothing).
//! 4. Kong's own validation: a bad filter config is refused by `POST /config` and by the Admin API with the
//!    field named.
//! 5. Metrics through Kong's `prometheus` plugin.

use portcullis_e2e::kong::{self, run, Kong, Postgres, Store};
use portcullis_e2e::paths::repo_root;
use portcullis_e2e::scenario::{kong_declarative, load_dir};
use portcullis_e2e::{json, HostKind, Request, Upstream};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The response header the marker filter sets on every route of the never-open policy.
const MARKER: &str = "x-portcullis-chain";

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("ok    {name}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL  {name}: {e}");
            }
        }
    }
}

fn main() -> ExitCode {
    let bin = match kong::binary() {
        Ok(b) => b,
        Err(reason) => {
            println!("skipped: {reason}");
            return ExitCode::from(3);
        }
    };
    println!("Kong {} ({})", kong::version(&bin), bin.display());
    let mut t = Tally::default();
    let echo = Upstream::echo();
    let echo_url = format!("http://{}", echo.addr);

    shipped_files(&mut t, &echo_url);
    scenarios(&mut t, &echo_url);
    fails_closed(&mut t, &echo);
    breaker_counts_upstream_answers(&mut t);
    let policy = never_open_policy(&echo_url);
    let policy_file = write_policy(&policy);
    never_open_dbless(&mut t, &policy, &policy_file);
    match Postgres::start() {
        Ok(pg) => with_postgres(&mut t, &pg, &policy, &policy_file, &echo_url),
        Err(e) => t.check("PostgreSQL for DB mode", Err(e)),
    }
    println!("kong: {} passed, {} failed", t.passed, t.failed);
    if t.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn scenarios(t: &mut Tally, echo_url: &str) {
    let scenarios = match load_dir(&repo_root().join("tests/scenarios")) {
        Ok(s) => s,
        Err(e) => return t.check("load tests/scenarios", Err(e)),
    };
    let config = kong_declarative(&scenarios, echo_url);
    let kong = match Kong::start(Store::Declarative(&config), &[]) {
        Ok(k) => k,
        Err(e) => return t.check("scenarios: start DB-less Kong", Err(e)),
    };
    for s in &scenarios {
        let result = match s.request(kong.proxy, &s.kong_prefix()).try_send() {
            // Kong embeds ngx_wasm_module: a removed request header arrives empty there too
            Ok(response) => {
                let problems = s.check_on(HostKind::KongEngine, &response);
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            }
            Err(e) => Err(format!("request failed: {e}")),
        };
        t.check(&format!("scenario {}", s.name), result);
    }
    t.check("scenarios: no chain failed to build", no_failures(&kong));
}

/// kong/kong.conf and kong/kong.yml as shipped: Kong starts with them (the conf's paths pointed at this run's
/// files, its upstream `echo:8080` at the echo), every chain builds, and the headers demo route answers with
/// its response headers.
fn shipped_files(t: &mut Tally, echo_url: &str) {
    let root = repo_root();
    let conf = std::fs::read_to_string(root.join("kong/kong.conf")).unwrap_or_default();
    let managed = ["declarative_config", "wasm_filters_path", "database"];
    let lines: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !managed.iter().any(|k| l.starts_with(k)))
        .collect();
    let text = std::fs::read_to_string(root.join("kong/kong.yml"))
        .unwrap_or_default()
        .replace("http://echo:8080", echo_url)
        .replace(
            "\"echo:8080\"",
            &format!("\"{}\"", echo_url.trim_start_matches("http://")),
        );
    let config: Value = match serde_norway::from_str(&text) {
        Ok(v) => v,
        Err(e) => return t.check("kong/kong.yml parses", Err(e.to_string())),
    };
    let kong = match Kong::start(Store::Declarative(&config), &lines) {
        Ok(k) => k,
        Err(e) => return t.check("Kong starts with kong/kong.conf and kong/kong.yml", Err(e)),
    };
    t.check(
        "Kong starts with kong/kong.conf and kong/kong.yml; every chain builds",
        {
            let r = Request::new(kong.proxy, "GET", "/headers/hello")
                .header("x-user", "alice")
                .try_send();
            match r {
                Ok(r)
                    if r.status == 200 && r.header("x-served-by") == Some("portcullis-headers") =>
                {
                    no_failures(&kong)
                }
                Ok(r) => Err(format!("/headers/hello: {} {:?}", r.status, r.headers)),
                Err(e) => Err(e.to_string()),
            }
        },
    );
}

/// The circuit breaker in Kong: 5xx answers of the upstream open it (the 4th request gets the breaker's own
/// 503); Kong's own 502 for an upstream it cannot reach is never seen by filters (Kong answers it from its
/// error handler), so the same breaker in front of a dead upstream never opens — asserted, as a known limit.
fn breaker_counts_upstream_answers(t: &mut Tally) {
    let failing = Upstream::start(|_| portcullis_e2e::Reply::status(503));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let breaker = |name: &str| {
        json!({"name": name, "paths": [format!("/{name}")], "filter_chains": [{"name": name, "filters": [
            {"name": portcullis_common::artifact_name("circuit-breaker"),
             "config": {"consecutive_failures": 3, "open_for": "10s"}}]}]})
    };
    let config = json!({"_format_version": "3.0", "services": [
        {"name": "failing", "url": format!("http://{}", failing.addr), "routes": [breaker("failing")]},
        {"name": "dead", "url": dead, "retries": 0, "routes": [breaker("dead")]}]});
    let kong = match Kong::start(Store::Declarative(&config), &[]) {
        Ok(k) => k,
        Err(e) => return t.check("circuit breaker: start DB-less Kong", Err(e)),
    };
    let answers = |path: &str| -> Vec<(u16, bool)> {
        (0..5)
            .map(|_| match Request::new(kong.proxy, "GET", path).try_send() {
                Ok(r) => (r.status, r.text().contains("circuit breaker is open")),
                Err(_) => (0, false),
            })
            .collect()
    };
    let failing_answers = answers("/failing");
    t.check(
        "circuit breaker: 3 upstream 503s open it, then it answers itself",
        if failing_answers[..3].iter().all(|a| *a == (503, false))
            && failing_answers[3..].iter().all(|a| *a == (503, true))
        {
            Ok(())
        } else {
            Err(format!("{failing_answers:?}"))
        },
    );
    let dead_answers = answers("/dead");
    t.check(
        "circuit breaker (known limit): Kong's own 502s for a dead upstream are not seen, it stays closed",
        if dead_answers.iter().all(|a| *a == (502, false)) { Ok(()) } else { Err(format!("{dead_answers:?}")) },
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(1, |a| a.port())
}

/// Configs Kong's schema accepts and the filter refuses (a bound the schema does not carry): Kong would proxy
/// the route without the chain; the filter takes the config and answers 500 instead.
fn fails_closed(t: &mut Tally, echo: &Upstream) {
    let route = |name: &str, filter: &str, config: Value| {
        json!({"name": name, "paths": [format!("/{name}")], "filter_chains": [{"name": name, "filters": [
            {"name": portcullis_common::artifact_name(filter), "config": config}]}]})
    };
    let config = json!({"_format_version": "3.0", "services": [{"name": "echo", "url": format!("http://{}", echo.addr),
    "routes": [
        // a cross-field rule only the parser checks: `requests` belongs to the window algorithms
        route("rate-limit", "rate-limit", json!({"limits": [{"name": "all", "key": "all", "rate": 1, "per": "1m", "requests": 5}]})),
        route("bundle", "portcullis", json!({"chain": [{"policy": "rate-limit", "config":
            {"limits": [{"name": "all", "key": "all", "rate": 1, "per": "1m", "requests": 5}]}}]})),
    ]}]});
    let kong = match Kong::start(Store::Declarative(&config), &[]) {
        Ok(k) => k,
        Err(e) => return t.check("fails closed: start DB-less Kong", Err(e)),
    };
    let before = echo.count();
    for path in ["/rate-limit", "/bundle"] {
        let statuses: Vec<u16> = (0..3)
            .map(|_| {
                Request::new(kong.proxy, "GET", path)
                    .try_send()
                    .map_or(0, |r| r.status)
            })
            .collect();
        let log = kong.error_log();
        t.check(
            &format!(
                "fails closed: {path}: a config Kong accepts and the filter refuses answers 500"
            ),
            if statuses == [500, 500, 500] && log.contains(portcullis_common::config::FAIL_CLOSED) {
                Ok(())
            } else {
                Err(format!(
                    "{statuses:?}\n{}",
                    kong.chain_failures().join("\n")
                ))
            },
        );
    }
    t.check(
        "fails closed: the upstream was never reached",
        if echo.count() == before {
            Ok(())
        } else {
            Err(format!("{} requests reached it", echo.count() - before))
        },
    );
}

fn no_failures(kong: &Kong) -> Result<(), String> {
    let failures = kong.chain_failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// A policy file with one route per valid example config (`/open/<filter>/<example>`), each chain led by a
/// headers filter that stamps [`MARKER`] on the response, and the metrics filter on one more route.
fn never_open_policy(echo_url: &str) -> Value {
    let mut routes = Vec::new();
    let dir = repo_root().join("tests/configs");
    let mut filters: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    filters.sort();
    for filter_dir in filters {
        let filter = filter_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut examples: Vec<PathBuf> = std::fs::read_dir(filter_dir.join("valid"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        examples.sort();
        for example in examples {
            let stem = example
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&example).unwrap_or_default();
            let config: Value = serde_norway::from_str(&text).unwrap_or(Value::Null);
            let name = format!("{filter}.{stem}");
            routes.push(json!({
                "name": name,
                "match": { "path": format!("/open/{filter}/{stem}") },
                "upstream": "echo",
                "chain": [
                    { "filter": "headers", "config": { "response": { "set": [ { "name": MARKER, "value": name } ] } } },
                    { "filter": filter, "config": config }
                ]
            }));
        }
    }
    let echo = json!({ "url": echo_url });
    json!({
        "gateway": { "kong_version": "3.9" },
        // upstream names the example configs call out to (jwks, log and trace collectors): all the echo
        "upstreams": { "echo": echo, "idp.example.com": echo, "logs.internal": echo, "otel-collector": echo },
        "routes": routes
    })
}

fn write_policy(policy: &Value) -> PathBuf {
    let dir = kong::scratch_dir("kong-policy").expect("temp dir");
    let file = dir.join("never-open.portcullis.yaml");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(policy).unwrap_or_default(),
    )
    .expect("write");
    file
}

fn portcullis() -> Command {
    let bin = std::env::var_os("PORTCULLIS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/portcullis"));
    Command::new(bin)
}

/// Every route of the policy answers with its marker: its chain runs. Retries while Kong rebuilds its router
/// after an Admin API write.
fn every_chain_runs(kong: &Kong, policy: &Value) -> Result<(), String> {
    every_chain_answers(kong, policy, false)
}

/// [`every_chain_runs`] where the marker filter may run after the filter under test (Kong orders plugins by
/// priority, and filter-plugins all have priority 0): a route also counts as running its chain when a filter
/// answered it locally, a 4xx that did not come from the upstream (no Lua plugin is on these routes, and
/// Kong's own answers without one are 404 and 5xx). A route that proxies without its marker fails.
fn every_chain_answers(
    kong: &Kong,
    policy: &Value,
    local_answer_counts: bool,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for route in policy["routes"].as_array().into_iter().flatten() {
        let name = route["name"].as_str().unwrap_or_default();
        let path = format!("{}/x", route["match"]["path"].as_str().unwrap_or("/"));
        let deadline = Instant::now() + Duration::from_secs(15);
        let last = loop {
            let r = Request::new(kong.proxy, "GET", &path)
                .timeout(Duration::from_secs(10))
                .try_send();
            let marker = r
                .as_ref()
                .ok()
                .and_then(|r| r.header(MARKER).map(str::to_string));
            // a local answer from a filter has no echo body (`headers`)
            let local = r.as_ref().is_ok_and(|r| {
                serde_json::from_slice::<Value>(&r.body)
                    .map_or(true, |b| b.get("headers").is_none())
            });
            let settled = marker.as_deref() == Some(name)
                || (local_answer_counts && local && r.as_ref().is_ok_and(|r| r.status != 404));
            if settled || Instant::now() > deadline {
                break (r.map(|r| (r.status, marker)), name);
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        match last {
            (Ok((_, Some(m))), name) if m == name => {}
            (Ok((status, None)), _)
                if local_answer_counts && (400..500).contains(&status) && status != 404 => {}
            (Ok((status, marker)), name) => problems.push(format!(
                "{name}: {status} without its chain's marker ({marker:?}): the route runs without its chain"
            )),
            (Err(e), name) => problems.push(format!("{name}: {e}")),
        }
    }
    if problems.is_empty() {
        no_failures(kong)
    } else {
        Err(problems.join("\n"))
    }
}

fn never_open_dbless(t: &mut Tally, policy: &Value, policy_file: &std::path::Path) {
    let out = match kong::scratch_dir("kong-render") {
        Ok(d) => d,
        Err(e) => return t.check("render dir", Err(e.to_string())),
    };
    let rendered = run(portcullis()
        .arg("render")
        .arg(policy_file)
        .args(["--target", "kong", "-o"])
        .arg(&out));
    if let Err(e) = rendered {
        return t.check("never open: portcullis render --target kong", Err(e));
    }
    let text = std::fs::read_to_string(out.join("kong.yml")).unwrap_or_default();
    let config: Value = match serde_norway::from_str(&text) {
        Ok(v) => v,
        Err(e) => return t.check("never open: rendered kong.yml parses", Err(e.to_string())),
    };
    let kong = match Kong::start(Store::Declarative(&config), &[]) {
        Ok(k) => k,
        Err(e) => {
            return t.check(
                "never open: DB-less Kong loads the rendered kong.yml",
                Err(e),
            )
        }
    };
    t.check(
        &format!(
            "never open (DB-less): all {} example chains run",
            policy["routes"].as_array().map_or(0, Vec::len)
        ),
        every_chain_runs(&kong, policy),
    );
    t.check(
        "metrics: Kong's prometheus plugin (rendered) exports the metrics filter's series with its labels",
        prometheus_exports_filter_metrics(&kong),
    );
    drop(kong);
    for (how, attached) in [
        ("as filter chains on services", chains_on_services(&config)),
        ("as plugins (Kong 3.9+)", chains_as_plugins(&config)),
    ] {
        let plugins = how.starts_with("as plugins");
        match Kong::start(Store::Declarative(&attached), &[]) {
            Ok(kong) => t.check(
                &format!("never open (DB-less), {how}: all example chains run"),
                every_chain_answers(&kong, policy, plugins),
            ),
            Err(e) => t.check(&format!("never open, {how}: Kong loads the config"), Err(e)),
        }
    }
    let kong = match Kong::start(Store::Declarative(&config), &[]) {
        Ok(k) => k,
        Err(e) => return t.check("never open: DB-less Kong restarts", Err(e)),
    };
    t.check("Kong refuses a bad filter config in POST /config, naming the field", {
        let bad = json!({"_format_version": "3.0", "services": [{"name": "s", "url": "http://127.0.0.1:9",
            "routes": [{"name": "r", "paths": ["/r"], "filter_chains": [{"name": "c", "filters": [
                {"name": "portcullis_rate_limit", "config": {"limits": [{"name": "x", "rate": "five", "per": "1s"}]}}]}]}]}]});
        let r = kong.admin("POST", "/config", Some(&bad));
        let text = r.text();
        if r.status == 400 && text.contains("limits") && text.contains("rate") {
            Ok(())
        } else {
            Err(format!("{}: {text}", r.status))
        }
    });
}

/// The rendered config with each route's chain moved to a service of its own (same upstream): Kong runs a
/// service's chain for its routes.
fn chains_on_services(config: &Value) -> Value {
    let mut services = Vec::new();
    for service in config["services"].as_array().into_iter().flatten() {
        for route in service["routes"].as_array().into_iter().flatten() {
            let mut s = service.clone();
            let mut r = route.clone();
            let name = r["name"].as_str().unwrap_or_default().to_string();
            s["name"] = json!(format!("{}-svc", name));
            if let Some(chains) = r.as_object_mut().and_then(|o| o.remove("filter_chains")) {
                s["filter_chains"] = chains;
            }
            s["routes"] = json!([r]);
            services.push(s);
        }
    }
    let mut out = config.clone();
    out["services"] = json!(services);
    out
}

/// The rendered config with each route's chain given as route plugins, one per filter. Kong takes one plugin of
/// a name per route (`uniqueness violation`), so a route whose chain uses a filter twice (the headers examples
/// behind the headers marker) keeps its filter chain.
fn chains_as_plugins(config: &Value) -> Value {
    let mut out = config.clone();
    for service in out["services"].as_array_mut().into_iter().flatten() {
        for route in service["routes"].as_array_mut().into_iter().flatten() {
            let filters: Vec<Value> = route["filter_chains"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["filters"].as_array().cloned().unwrap_or_default())
                .collect();
            let mut names: Vec<&str> = filters.iter().filter_map(|f| f["name"].as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            if filters.is_empty() || names.len() != before {
                continue;
            }
            if let Some(o) = route.as_object_mut() {
                o.remove("filter_chains");
            }
            let plugins: Vec<Value> = filters
                .iter()
                .map(|f| json!({"name": f["name"], "config": f["config"]}))
                .collect();
            route["plugins"] = json!(plugins);
        }
    }
    out
}

/// After [`every_chain_runs`] sent a GET through every route, the metrics filter's request counter is on Kong's
/// `/metrics` (Admin API) as `pw_<filter>_<metric>{labels}`, its labels taken out of the name by the
/// `label_patterns` of the filter's meta.json, the route label being Kong's route id.
fn prometheus_exports_filter_metrics(kong: &Kong) -> Result<(), String> {
    let r = kong.admin("GET", "/metrics", None);
    let text = r.text();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pw_portcullis_metrics_portcullis_http_requests_total{"))
        .collect();
    let labelled = series.iter().any(|l| {
        l.contains("method=\"GET\"")
            && l.contains("status_class=")
            && l.contains("route=\"")
            && !l.contains(";")
    });
    if r.status == 200 && labelled {
        Ok(())
    } else {
        Err(format!(
            "{}: no labelled pw_portcullis_metrics_portcullis_http_requests_total series: {:?}\n{}",
            r.status,
            series,
            text.lines()
                .filter(|l| l.starts_with("pw_"))
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}

fn with_postgres(
    t: &mut Tally,
    pg: &Postgres,
    policy: &Value,
    policy_file: &std::path::Path,
    echo_url: &str,
) {
    // Each worker learns of an Admin API write on its own, after the write returns: right after a push one
    // worker can route the new path while another answers 404 (seen with `worker_consistency = strict` too:
    // [200, 404, 200]). One worker makes "the push took effect" one observable state.
    let kong = match Kong::start(
        Store::Postgres(pg),
        &["worker_consistency = strict", "nginx_worker_processes = 1"],
    ) {
        Ok(k) => k,
        Err(e) => return t.check("DB mode: kong migrations bootstrap and start", Err(e)),
    };
    let admin = kong.admin_url();
    let push = |file: &std::path::Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = portcullis();
        cmd.arg("push")
            .arg(file)
            .args(["--kong-admin", &admin])
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    match push(policy_file, &[], &[]) {
        Ok(_) => {
            t.check(
                "never open (PostgreSQL): pushed chains all run",
                every_chain_runs(&kong, policy),
            );
            t.check(
                "never open (PostgreSQL): a second push changes nothing (empty lists included)",
                push(policy_file, &[], &[]).and_then(|out| {
                    if out.contains("0 to create, 0 to update, 0 to delete") {
                        Ok(())
                    } else {
                        Err(out)
                    }
                }),
            );
        }
        Err(e) => t.check("never open (PostgreSQL): push", Err(e)),
    }
    t.check(
        "push: a policy without those routes deletes every chain, route and service it created",
        push_deletes_everything(&kong, policy, &push),
    );
    t.check(
        "Kong's Admin API refuses a bad filter config, naming the field",
        {
            let bad = json!({"name": "bad", "filters": [{"name": "portcullis_rate_limit",
            "config": {"limits": [{"name": "x", "rate": 5, "per": "soon"}]}}]});
            let r = kong.admin("POST", "/filter-chains", Some(&bad));
            let text = r.text();
            if r.status == 400 && text.contains("per") {
                Ok(())
            } else {
                Err(format!("{}: {text}", r.status))
            }
        },
    );
    push_test(t, &kong, &push, echo_url);
}

/// Pushes an empty policy after the never-open one: every entity the CLI created goes, chains first, and the
/// routes then answer 404.
fn push_deletes_everything(kong: &Kong, policy: &Value, push: &Push<'_>) -> Result<(), String> {
    let routes = policy["routes"].as_array().map_or(0, Vec::len);
    let services = policy["upstreams"].as_object().map_or(0, |u| u.len());
    let file = write_policy(&json!({"upstreams": {}, "routes": []}));
    let out = push(&file, &[], &[])?;
    let want = format!(
        "0 to create, 0 to update, {} to delete",
        2 * routes + services
    );
    if !out.contains(&want) {
        return Err(format!("expected {want:?}:\n{out}"));
    }
    for route in policy["routes"].as_array().into_iter().flatten() {
        let path = format!("{}/x", route["match"]["path"].as_str().unwrap_or("/"));
        let status = Request::new(kong.proxy, "GET", &path)
            .try_send()
            .map_or(0, |r| r.status);
        if status != 404 {
            return Err(format!("{path}: {status} after the delete"));
        }
    }
    Ok(())
}

type Push<'a> = dyn Fn(&std::path::Path, &[&str], &[(&str, &str)]) -> Result<String, String> + 'a;

/// kong/push-test.portcullis.yaml against the database-backed Kong, its upstream pointed at the echo.
fn push_test(t: &mut Tally, kong: &Kong, push: &Push<'_>, echo_url: &str) {
    let text = std::fs::read_to_string(repo_root().join("kong/push-test.portcullis.yaml"))
        .unwrap_or_default();
    let dir = kong::scratch_dir("kong-push").expect("temp dir");
    let file = dir.join("push-test.portcullis.yaml");
    std::fs::write(&file, text.replace("http://echo:8080", echo_url)).expect("write");
    let header_becomes = |path: &str, name: &str, want: &str| -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = Request::new(kong.proxy, "GET", path)
                .try_send()
                .ok()
                .and_then(|r| r.header(name).map(str::to_string));
            if got.as_deref() == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("GET {path}: {name} is {got:?}, expected {want:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let v = |version: &'static str| [("PUSH_VERSION", version)];
    t.check(
        "push: create, then the pushed chain answers",
        push(&file, &[], &v("v1"))
            .and_then(|_| header_becomes("/push-hello", "x-policy-version", "v1")),
    );
    t.check(
        "push: a second push is a no-op",
        push(&file, &[], &v("v1")).and_then(|out| {
            if out.contains("0 to create, 0 to update, 0 to delete") {
                Ok(())
            } else {
                Err(out)
            }
        }),
    );
    t.check("push: the pushed rate limit gives 200 200 429", {
        let codes: Vec<u16> = (0..3)
            .map(|_| {
                Request::new(kong.proxy, "GET", "/push-limited")
                    .try_send()
                    .map_or(0, |r| r.status)
            })
            .collect();
        if codes == [200, 200, 429] {
            Ok(())
        } else {
            Err(format!("{codes:?}"))
        }
    });
    t.check(
        "push: an edit is exactly one update and takes effect",
        push(&file, &[], &v("v2")).and_then(|out| {
            if !out.contains("0 to create, 1 to update, 0 to delete") {
                return Err(out);
            }
            header_becomes("/push-hello", "x-policy-version", "v2")
        }),
    );
    t.check(
        "push: a dry run plans the update and writes nothing",
        push(&file, &["--dry-run"], &v("v3")).and_then(|out| {
            if !out.contains("dry run: 0 to create, 1 to update") {
                return Err(out);
            }
            std::thread::sleep(Duration::from_secs(1));
            header_becomes("/push-hello", "x-policy-version", "v2")
        }),
    );
}
