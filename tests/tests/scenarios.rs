//! Runs every scenario in tests/scenarios/ through the run's gateway, Envoy or Kong's engine (the Kong runner
//! runs the same files against a real Kong).
//! Scenarios with several policies run twice — as separate filters and as one `portcullis` bundle — and
//! both forms must meet the expectation and give the client the same answer.

use portcullis_e2e::scenario::{load_dir, Scenario};
use portcullis_e2e::{json, FilterSpec, Gateway, Response};

fn run_separate(s: &Scenario) -> Result<Response, String> {
    let mut builder = Gateway::new();
    for (i, item) in s.chain.iter().enumerate() {
        let mut spec = FilterSpec::new(&item.filter, item.config.clone());
        spec.vm_id = format!("{}-{i}", item.filter);
        builder = builder.filter_spec(spec);
    }
    let gw = builder
        .start()
        .map_err(|e| format!("the gateway did not start: {e}"))?;
    Ok(s.request(gw.proxy.listener(), "").send())
}

fn run_bundle(s: &Scenario) -> Result<Response, String> {
    let chain: Vec<_> = s
        .chain
        .iter()
        .map(|c| json!({"policy": c.filter, "config": c.config}))
        .collect();
    let gw = Gateway::new()
        .filter("portcullis", json!({ "chain": chain }))
        .start()
        .map_err(|e| format!("the gateway did not start with the bundle: {e}"))?;
    Ok(s.request(gw.proxy.listener(), "").send())
}

/// What the client sees, minus what legitimately differs between two runs.
fn client_view(r: &Response) -> (u16, Vec<(String, String)>, String) {
    let varying = [
        "date",
        "x-envoy-upstream-service-time",
        "x-request-id",
        "ratelimit-reset",
        "retry-after",
    ];
    let mut headers: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| !varying.contains(&n.as_str()))
        .cloned()
        .collect();
    headers.sort();
    // The echo body lists the upstream's view; the request id inside it differs per run.
    let body = match serde_json::from_slice::<serde_json::Value>(&r.body) {
        Ok(mut v) => {
            if let Some(h) = v.get_mut("headers").and_then(|h| h.as_object_mut()) {
                h.remove("x-request-id");
            }
            v.to_string()
        }
        Err(_) => r.text(),
    };
    (r.status, headers, body)
}

#[test]
fn every_scenario_passes_in_envoy_and_chains_match_the_bundle() {
    let dir = portcullis_e2e::paths::repo_root().join("tests/scenarios");
    let scenarios = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!scenarios.is_empty(), "no scenarios in {}", dir.display());
    let mut failures = Vec::new();
    let mut bundled = 0;
    for s in &scenarios {
        let separate = match run_separate(s) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", s.name));
                continue;
            }
        };
        for problem in s.check(&separate) {
            failures.push(format!("{} (separate filters): {problem}", s.name));
        }
        if s.chain.len() < 2 {
            continue;
        }
        bundled += 1;
        match run_bundle(s) {
            Ok(bundle) => {
                for problem in s.check(&bundle) {
                    failures.push(format!("{} (bundle): {problem}", s.name));
                }
                let (a, b) = (client_view(&separate), client_view(&bundle));
                if a != b {
                    failures.push(format!("{}: bundle differs from separate filters:\n  separate {a:?}\n  bundle   {b:?}", s.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", s.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} scenario problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        bundled >= 3,
        "expected multi-policy scenarios, found {bundled}"
    );
    println!(
        "{} scenarios passed on {} ({bundled} also as a bundle)",
        scenarios.len(),
        portcullis_e2e::host::current().name()
    );
}
