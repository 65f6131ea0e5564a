//! `scripts/bench --host kong`: Portcullis filters against Kong's own Lua plugins doing the same job, in the
//! same real Kong, same run — the comparison a Kong user makes. One Kong worker pinned to CPU 1; wrk and the
//! upstream (this process) on CPU 0. Every variant is a route of one DB-less Kong, measured in interleaved
//! rounds; each variant's best round counts. Writes bench/results-kong.json; `bench --report` puts its table in
//! bench/RESULTS.md. Without a Kong it prints `skipped: <reason>` and exits 3.
//!   kong-bench [--duration SECS] [--rounds N] [--connections N] | --report-only (re-render the json's table)

use portcullis_e2e::bench::wrk::{parse_wrk, Sample};
use portcullis_e2e::bench::Tokens;
use portcullis_e2e::kong::{self, Kong, Store};
use portcullis_e2e::paths::repo_root;
use portcullis_e2e::{json, Upstream};
use serde_json::Value;
use std::process::{Command, ExitCode};

const SECRET: &str = "portcullis-bench-hs256-secret-0123456789";
const KEY: &str = "https://issuer.bench.test/";

struct Variant {
    name: &'static str,
    /// The Lua plugin variant this one replaces (`None` for Lua variants and the baseline).
    replaces: Option<&'static str>,
    route: Value,
    headers: Vec<(&'static str, String)>,
}

fn filter(policy: &str, config: Value) -> Value {
    json!({"name": portcullis_common::artifact_name(policy), "config": config})
}

fn route(name: &str, plugins: Vec<Value>, filters: Vec<Value>) -> Value {
    let mut r = json!({"name": name, "paths": [format!("/{name}")], "plugins": plugins});
    if !filters.is_empty() {
        r["filter_chains"] = json!([{"name": name, "filters": filters}]);
    }
    r
}

fn variants(token: &str) -> Vec<Variant> {
    let bearer = vec![("authorization", format!("Bearer {token}"))];
    let huge_limit = json!({"limits": [{"name": "all", "key": "all", "rate": 100_000_000, "per": "1s"}], "headers": false});
    let lua_limit =
        json!({"name": "rate-limiting", "config": {"second": 100_000_000, "policy": "local"}});
    let lua_jwt = json!({"name": "jwt", "config": {"claims_to_verify": ["exp"]}});
    let jwt = json!({"providers": [{"name": "bench", "issuer": KEY, "algorithms": ["HS256"], "secret": SECRET,
                                     "audiences": ["bench-api"]}]});
    let lua_transform = json!({"name": "request-transformer", "config": {
        "remove": {"headers": ["x-internal"]}, "add": {"headers": ["x-added:1"]}}});
    let headers =
        json!({"request": {"remove": ["x-internal"], "add": [{"name": "x-added", "value": "1"}]}});
    let chain = |policy: &str, config: &Value| json!({"policy": policy, "config": config});
    vec![
        Variant {
            name: "none",
            replaces: None,
            route: route("none", vec![], vec![]),
            headers: vec![],
        },
        Variant {
            name: "lua-rate-limiting",
            replaces: None,
            route: route("lua-rate-limiting", vec![lua_limit.clone()], vec![]),
            headers: vec![],
        },
        Variant {
            name: "rate-limit",
            replaces: Some("lua-rate-limiting"),
            route: route(
                "rate-limit",
                vec![],
                vec![filter("rate-limit", huge_limit.clone())],
            ),
            headers: vec![],
        },
        Variant {
            name: "lua-jwt",
            replaces: None,
            route: route("lua-jwt", vec![lua_jwt.clone()], vec![]),
            headers: bearer.clone(),
        },
        Variant {
            name: "jwt-auth-hs256",
            replaces: Some("lua-jwt"),
            route: route(
                "jwt-auth-hs256",
                vec![],
                vec![filter("jwt-auth", jwt.clone())],
            ),
            headers: bearer.clone(),
        },
        Variant {
            name: "lua-request-transformer",
            replaces: None,
            route: route(
                "lua-request-transformer",
                vec![lua_transform.clone()],
                vec![],
            ),
            headers: vec![],
        },
        Variant {
            name: "headers",
            replaces: Some("lua-request-transformer"),
            route: route("headers", vec![], vec![filter("headers", headers.clone())]),
            headers: vec![],
        },
        Variant {
            name: "lua-chain",
            replaces: None,
            route: route("lua-chain", vec![lua_jwt, lua_limit, lua_transform], vec![]),
            headers: bearer.clone(),
        },
        Variant {
            name: "bundle",
            replaces: Some("lua-chain"),
            route: route(
                "bundle",
                vec![],
                vec![filter(
                    "portcullis",
                    json!({"chain": [
                chain("jwt-auth", &jwt), chain("rate-limit", &huge_limit), chain("headers", &headers)]}),
                )],
            ),
            headers: bearer.clone(),
        },
        Variant {
            name: "separate-filters",
            replaces: Some("lua-chain"),
            route: route(
                "separate-filters",
                vec![],
                vec![
                    filter("jwt-auth", jwt),
                    filter("rate-limit", huge_limit),
                    filter("headers", headers),
                ],
            ),
            headers: bearer,
        },
    ]
}

struct Options {
    duration_s: u64,
    rounds: usize,
    connections: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        duration_s: 3,
        rounds: 4,
        connections: 16,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| args.get(i + 1).ok_or(format!("{} needs a value", args[i]));
        match args[i].as_str() {
            "--duration" => {
                o.duration_s = value(i)?.parse().map_err(|e| format!("--duration: {e}"))?
            }
            "--rounds" => o.rounds = value(i)?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--connections" => {
                o.connections = value(i)?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    Ok(o)
}

fn wrk(kong: &Kong, v: &Variant, o: &Options) -> Result<Sample, String> {
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        "0",
        "wrk",
        "-t1",
        &format!("-c{}", o.connections),
        &format!("-d{}s", o.duration_s),
        "--latency",
    ]);
    for (n, val) in &v.headers {
        cmd.arg("-H").arg(format!("{n}: {val}"));
    }
    cmd.arg(format!("http://{}/{}", kong.proxy, v.name));
    let out = cmd.output().map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let s = parse_wrk(&text).ok_or_else(|| format!("cannot read wrk output:\n{text}"))?;
    if s.non_2xx > 0 {
        return Err(format!("{}: {} responses were not 2xx", v.name, s.non_2xx));
    }
    Ok(s)
}

fn main() -> ExitCode {
    if let Err(reason) = kong::binary() {
        println!("skipped: {reason}");
        return ExitCode::from(3);
    }
    if std::env::args().any(|a| a == "--report-only") {
        return match rerender() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kong-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kong-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    // pin this process (the upstream's threads) to CPU 0 with wrk; Kong gets CPU 1
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let upstream = Upstream::start(|_| portcullis_e2e::Reply::status(200));
    let token = Tokens::mint(1).hs256.remove(0);
    let variants = variants(&token);
    let config = json!({
        "_format_version": "3.0",
        "consumers": [{"username": "bench", "jwt_secrets": [{"key": KEY, "algorithm": "HS256", "secret": SECRET}]}],
        "services": [{"name": "upstream", "url": format!("http://{}", upstream.addr),
            "routes": variants.iter().map(|v| v.route.clone()).collect::<Vec<_>>()}]
    });
    let kong = Kong::start_pinned(
        Store::Declarative(&config),
        &["nginx_worker_processes = 1"],
        Some(1),
    )?;
    let version = kong::version(&kong::binary()?);
    println!(
        "kong-bench: Kong {version}, {} variants, {} round(s) x {} s, {} connections, worker on CPU 1, wrk + upstream on CPU 0",
        variants.len(), o.rounds, o.duration_s, o.connections
    );
    for v in &variants {
        wrk(
            &kong,
            v,
            &Options {
                duration_s: 1,
                rounds: 1,
                connections: o.connections,
            },
        )?; // warm-up, checks 2xx
    }
    let mut best: Vec<Option<Sample>> = vec![None; variants.len()];
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..o.rounds {
        for (i, v) in variants.iter().enumerate() {
            let s = wrk(&kong, v, &o)?;
            println!(
                "  round {} {:<26} {:>8.0} rps  p50 {:>5.0} us",
                round + 1,
                v.name,
                s.rps,
                s.p50_us
            );
            rounds[i].push(s.rps);
            if best[i].as_ref().is_none_or(|b| s.rps > b.rps) {
                best[i] = Some(s);
            }
        }
    }
    let failures = kong.chain_failures();
    if !failures.is_empty() {
        return Err(format!(
            "Kong logged chain failures:\n{}",
            failures.join("\n")
        ));
    }
    let rps = |name: &str| {
        variants
            .iter()
            .position(|v| v.name == name)
            .and_then(|i| best[i].as_ref())
            .map(|s| s.rps)
    };
    let none = rps("none").unwrap_or(0.0);
    let results: Vec<Value> = variants
        .iter()
        .zip(&best)
        .zip(&rounds)
        .map(|((v, s), r)| {
            let s = s.clone().unwrap_or_default();
            let vs_lua = v.replaces.and_then(rps).map(|lua| s.rps / lua);
            json!({"variant": v.name, "replaces": v.replaces, "rps": s.rps, "rps_rounds": r, "p50_us": s.p50_us,
                   "p99_us": s.p99_us, "vs_no_plugin": s.rps / none, "vs_lua": vs_lua,
                   "us_over_no_plugin": 1e6 / s.rps - 1e6 / none})
        })
        .collect();
    let mut report = json!({
        "date": portcullis_e2e::bench::utc_now(),
        "kong": version,
        "rounds": o.rounds, "duration_s": o.duration_s, "connections": o.connections,
        "results": results,
    });
    report["markdown"] = json!(markdown(&report));
    let path = repo_root().join("bench/results-kong.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("\n{}", report["markdown"].as_str().unwrap_or_default());
    Ok(())
}

fn rerender() -> Result<(), String> {
    let path = repo_root().join("bench/results-kong.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut report: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    report["markdown"] = json!(markdown(&report));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())
}

fn median(r: &Value) -> f64 {
    let mut xs: Vec<f64> = r["rps_rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn markdown(report: &Value) -> String {
    let mut out = format!(
        "\n## Real Kong: Portcullis filters against Kong's Lua plugins\n\n\
         Measured {} with `scripts/bench --host kong` in Kong {} (built from source, see kong/README.md): one \
         worker pinned to CPU 1, wrk (1 thread × {} connections) and the upstream on CPU 0, {} s × {} \
         interleaved round(s); RPS, latencies and \"vs Lua\" from each variant's best round, \"vs Lua (median)\" from \
         the median RPS of its rounds (the steadier figure on this noisy machine). Lua plugins: `rate-limiting` (policy local), `jwt` (a \
         consumer's HS256 credential, `exp` verified), `request-transformer` (remove one header, add one); the \
         filters do the same jobs (rate-limit with one key, jwt-auth HS256 with issuer and audience checks, \
         headers). The chain is those three, as Lua plugins, as the `portcullis` bundle, and as three separate \
         filters. Goal: no filter slower than the Lua plugin it replaces (vs Lua ≥ 1.00×).\n\n\
         | variant | replaces | RPS | RPS per round | p50 µs | p99 µs | vs no plugin | µs/request over no plugin | vs Lua | vs Lua (median) | goal |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---|\n",
        report["date"].as_str().unwrap_or(""),
        report["kong"].as_str().unwrap_or(""),
        report["connections"],
        report["duration_s"],
        report["rounds"],
    );
    let results = report["results"].as_array().cloned().unwrap_or_default();
    for r in &results {
        let vs_lua = r["vs_lua"].as_f64();
        let lua = r["replaces"]
            .as_str()
            .and_then(|name| results.iter().find(|x| x["variant"] == name));
        let vs_lua_median = lua.map(|l| median(r) / median(l));
        let goal = match (vs_lua, vs_lua_median) {
            (Some(best), Some(med)) if best >= 1.0 && med >= 1.0 => "met",
            (Some(best), Some(med)) if best >= 1.0 || med >= 1.0 => {
                "at parity (one figure under 1.00×)"
            }
            (Some(_), Some(_)) => "**missed**",
            _ => "",
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.0} | {:.0} | {:.2}× | {:.1} | {} | {} | {} |\n",
            r["variant"].as_str().unwrap_or(""),
            r["replaces"].as_str().unwrap_or("–"),
            r["rps"].as_f64().unwrap_or(0.0),
            r["rps_rounds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(" / "),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            r["vs_no_plugin"].as_f64().unwrap_or(0.0),
            r["us_over_no_plugin"].as_f64().unwrap_or(0.0),
            vs_lua.map_or("–".into(), |x| format!("{x:.2}×")),
            vs_lua_median.map_or("–".into(), |x| format!("{x:.2}×")),
            goal,
        ));
    }
    out
}
