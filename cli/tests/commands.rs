//! The `portcullis` binary: validate's exit codes and located errors, render's outputs (Envoy's own
//! validator accepts the bootstrap; every filter config in kong.yml passes the filter's schema and parser).

use portcullis_cli::registry;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> String {
    repo()
        .join("cli/examples/portcullis.yaml")
        .to_string_lossy()
        .to_string()
}

fn portcullis(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args).current_dir(repo()).env_remove("JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run portcullis")
}

fn scratch(name: &str) -> PathBuf {
    let dir = repo()
        .join("target/cli-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write(dir: &Path, text: &str) -> String {
    let file = dir.join("portcullis.yaml");
    std::fs::write(&file, text).expect("write policy");
    file.to_string_lossy().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn the_example_policy_validates_when_its_secret_is_set() {
    let out = portcullis(&["validate", &example()], &[("JWT_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("ok (1 upstreams, 4 routes, 6 filter configs)"));
}

/// The policy scripts/kong-test pushes to a real Kong (where Docker exists) must stay valid here too.
#[test]
fn the_kong_push_test_policy_validates_and_renders_its_version() {
    let file = repo().join("kong/push-test.portcullis.yaml");
    let file = file.to_string_lossy();
    let out = portcullis(&["validate", &file], &[("PUSH_VERSION", "v1")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = portcullis(
        &["render", &file, "--target", "kong"],
        &[("PUSH_VERSION", "v7")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let kong = String::from_utf8_lossy(&out.stdout);
    assert!(
        kong.contains("value: v7") && kong.contains("host: echo"),
        "{kong}"
    );
    let out = portcullis(&["validate", &file], &[]);
    assert_eq!(out.status.code(), Some(1), "PUSH_VERSION unset must fail");
}

#[test]
fn an_unset_secret_fails_validation_naming_the_variable_and_its_line() {
    let out = portcullis(&["validate", &example()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let text = std::fs::read_to_string(example()).expect("example");
    let line = text
        .lines()
        .position(|l| l.contains("${JWT_SECRET}"))
        .expect("reference")
        + 1;
    let want = format!(
        "portcullis.yaml:{line}:23: routes[1].chain[1].config.providers[0].secret: environment variable JWT_SECRET is not set"
    );
    assert!(err.contains(&want), "expected {want:?} in:\n{err}");
}

#[test]
fn filter_config_errors_carry_file_line_and_json_path() {
    let dir = scratch("invalid");
    let file = write(
        &dir,
        "upstreams:\n  up: { url: 'http://127.0.0.1:9' }\nroutes:\n  - name: a\n    upstream: up\n    chain:\n      - filter: rate-limit\n        config:\n          limits:\n            - name: per_ip\n              rate: 10\n              per: 1fortnight\n      - filter: headers\n        config: { request: { sett: [] } }\n",
    );
    let out = portcullis(&["validate", &file], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("portcullis.yaml:12:20: routes[0].chain[0].config.limits[0].per: rate-limit:"),
        "{err}"
    );
    assert!(err.contains("portcullis.yaml:14:"), "{err}");
    assert!(
        err.contains("routes[0].chain[1].config.request.sett: headers:"),
        "{err}"
    );

    let out = portcullis(&["validate", &file, "--output", "json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ok"], false);
    assert_eq!(report["errors"][0]["line"], 12);
    assert_eq!(
        report["errors"][0]["path"],
        "routes[0].chain[0].config.limits[0].per"
    );
}

#[test]
fn structural_errors_are_located_too() {
    let cases: &[(&str, &str, &str)] = &[
        // (policy, expected location prefix, expected message part)
        ("upstreams: {}\nroutes:\n  - name: a\n    upstream: nowhere\n", ":4:15: routes[0].upstream:", "unknown upstream \"nowhere\""),
        ("upstreams:\n  u: { url: 'ftp://x' }\nroutes: []\n", ":2:13: upstreams.u.url:", "http://"),
        ("upstreams: {}\nroutes:\n  - name: a\n    upstream: u\n    colour: red\n", ":", "unknown field `colour`"),
        ("upstreams:\n  u: { url: 'http://127.0.0.1:9' }\nroutes:\n  - name: a\n    upstream: u\n    chain: [ { filter: nope } ]\n", ":6:", "unknown filter \"nope\""),
        ("upstreams: {\n", ":", "invalid YAML"),
        ("upstreams:\n  u: { url: 'http://127.0.0.1:9' }\nroutes:\n  - { name: a, upstream: u, match: { methods: [get] } }\n", ":4:", "unknown method \"get\""),
    ];
    let dir = scratch("structural");
    for (policy, location, message) in cases {
        let file = write(&dir, policy);
        let out = portcullis(&["validate", &file], &[]);
        assert_eq!(out.status.code(), Some(1), "{policy}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("portcullis.yaml{location}")),
            "{policy}\n{err}"
        );
        assert!(err.contains(message), "{policy}\n{err}");
    }
}

#[test]
fn usage_and_io_errors_exit_2() {
    for args in [
        vec!["validate"],
        vec!["frobnicate", "x.yaml"],
        vec!["validate", "/nonexistent/portcullis.yaml"],
        vec!["render", "cli/examples/portcullis.yaml"],
        vec![
            "render",
            "cli/examples/portcullis.yaml",
            "--target",
            "nginx",
        ],
        vec!["validate", "cli/examples/portcullis.yaml", "--bogus"],
        vec!["push", "cli/examples/portcullis.yaml"],
        vec!["serve", "cli/examples/portcullis.yaml"],
        vec![
            "serve",
            "cli/examples/portcullis.yaml",
            "--xds",
            "127.0.0.1:notaport",
        ],
        vec![
            "render",
            "cli/examples/portcullis.yaml",
            "--target",
            "envoy",
            "--xds",
            "nowhere",
        ],
    ] {
        let out = portcullis(&args, &[("JWT_SECRET", SECRET)]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn rendered_envoy_bootstrap_passes_envoys_own_validation() {
    let envoy = repo().join(".venv/bin/envoy-bin");
    if !envoy.exists() {
        println!("skipped: no Envoy at {}", envoy.display());
        return;
    }
    let dir = scratch("render-envoy");
    let out_file = dir.join("envoy.yaml");
    let out = portcullis(
        &[
            "render",
            &example(),
            "--target",
            "envoy",
            "-o",
            &out_file.to_string_lossy(),
        ],
        &[("JWT_SECRET", SECRET)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let check = Command::new(&envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&out_file)
        .current_dir(repo())
        .output()
        .expect("run envoy");
    assert!(
        check.status.success(),
        "envoy --mode validate refused the rendered bootstrap:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Each chain item is its own wasm filter, enabled only on its route.
    let text = std::fs::read_to_string(&out_file).expect("rendered");
    let doc: Value = serde_norway::from_str(&text).expect("yaml");
    let hcm =
        &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let names: Vec<&str> = hcm["http_filters"]
        .as_array()
        .expect("filters")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names.len(), 6 + 1);
    assert_eq!(names[0], "portcullis.orders-write.0.request-guard");
    let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
    assert!(routes[0].get("typed_per_filter_config").is_none());
    assert_eq!(
        routes[1]["typed_per_filter_config"]["portcullis.orders-write.1.jwt-auth"]["config"],
        serde_json::json!({})
    );
}

#[test]
fn rendered_kong_config_passes_every_filters_schema_and_parser() {
    let dir = scratch("render-kong");
    let out = portcullis(
        &[
            "render",
            &example(),
            "--target",
            "kong",
            "-o",
            &dir.to_string_lossy(),
        ],
        &[("JWT_SECRET", SECRET)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yml = std::fs::read_to_string(dir.join("kong.yml")).expect("kong.yml");
    let doc: Value = serde_norway::from_str(&yml).expect("yaml");
    assert_eq!(doc["_format_version"], "3.0");
    let conf = std::fs::read_to_string(dir.join("kong.conf")).expect("kong.conf");
    assert!(
        conf.contains("wasm = on\n")
            && conf.contains("wasm_filters_path = /opt/portcullis/filters\n")
    );
    assert!(
        conf.contains("portcullis_jwt_auth, portcullis_rate_limit, portcullis_request_guard"),
        "{conf}"
    );
    let mut checked = 0;
    for service in doc["services"].as_array().expect("services") {
        for route in service["routes"].as_array().into_iter().flatten() {
            for chain in route["filter_chains"].as_array().into_iter().flatten() {
                for f in chain["filters"].as_array().expect("filters") {
                    let name = f["name"].as_str().expect("name");
                    let filter = registry::find_artifact(name)
                        .unwrap_or_else(|| panic!("unknown filter {name}"));
                    let schema = portcullis_cli::kong_schema::draft4(&(filter.schema)())
                        .expect("schema compiles as in Kong");
                    let errors: Vec<String> = schema
                        .iter_errors(&f["config"])
                        .map(|e| e.to_string())
                        .collect();
                    assert!(errors.is_empty(), "{name}: {errors:?}");
                    let bytes = serde_json::to_vec(&f["config"]).expect("json");
                    (filter.parse)(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6);
    // Matches map to Kong route fields.
    let routes = &doc["services"][0]["routes"];
    assert_eq!(
        routes[1]["methods"],
        serde_json::json!(["POST", "PUT", "DELETE"])
    );
    assert_eq!(
        routes[3]["hosts"],
        serde_json::json!(["partner.example.com"])
    );
    assert_eq!(
        routes[3]["headers"],
        serde_json::json!({"x-partner": ["acme"]})
    );
}

#[test]
fn the_cli_knows_every_filter_with_a_meta_json() {
    let mut cli = registry::names();
    cli.sort_unstable();
    let mut meta: Vec<&str> = portcullis_e2e::meta::all()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    meta.sort_unstable();
    assert_eq!(cli, meta);
}

/// `envoy/demo.yaml` (what `scripts/demo` runs, and the example the docs link to) is generated from
/// `envoy/demo.portcullis.yaml`: no hand-maintained duplicate.
#[test]
fn the_committed_demo_bootstrap_is_what_render_makes_of_the_demo_policy() {
    // The relative path, as the header names the file it was rendered from.
    let out = portcullis(
        &["render", "envoy/demo.portcullis.yaml", "--target", "envoy"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rendered = String::from_utf8_lossy(&out.stdout);
    let committed = std::fs::read_to_string(repo().join("envoy/demo.yaml")).unwrap_or_default();
    if committed != rendered {
        let first_difference = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map_or("its length".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "envoy/demo.yaml is stale (first difference: {first_difference}): run \
             `portcullis render envoy/demo.portcullis.yaml --target envoy -o envoy/demo.yaml` from the repository root"
        );
    }
}

#[test]
fn the_demo_policy_renders_for_kong_and_its_envoy_bootstrap_is_accepted_by_envoy() {
    let dir = scratch("render-demo");
    let out = portcullis(
        &[
            "render",
            "envoy/demo.portcullis.yaml",
            "--target",
            "kong",
            "-o",
            &dir.to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yml = std::fs::read_to_string(dir.join("kong.yml")).expect("kong.yml");
    let doc: Value = serde_norway::from_str(&yml).expect("yaml");
    let services: Vec<&str> = doc["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(services, ["dead", "echo", "echo-canary"]);

    // The metrics demo's labels become Prometheus labels: the bootstrap has the metrics crate's stats_config.
    let text = std::fs::read_to_string(repo().join("envoy/demo.yaml")).expect("envoy/demo.yaml");
    let bootstrap: Value = serde_norway::from_str(&text).expect("yaml");
    assert_eq!(
        bootstrap["stats_config"],
        portcullis_metrics::labels::envoy_stats_config()
    );
    let envoy = repo().join(".venv/bin/envoy-bin");
    if !envoy.exists() {
        println!(
            "skipped: envoy --mode validate (no Envoy at {})",
            envoy.display()
        );
        return;
    }
    let check = Command::new(&envoy)
        .args(["--mode", "validate", "-c", "envoy/demo.yaml"])
        .current_dir(repo())
        .output()
        .expect("run envoy");
    assert!(
        check.status.success(),
        "envoy --mode validate refused envoy/demo.yaml:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
