//! Runs every scenario in tests/scenarios/ through a real Envoy (the Kong runner runs the same files).

use portcullis_e2e::scenario::load_dir;
use portcullis_e2e::{FilterSpec, Gateway};

#[test]
fn every_scenario_passes_in_envoy() {
    let dir = portcullis_e2e::paths::repo_root().join("tests/scenarios");
    let scenarios = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!scenarios.is_empty(), "no scenarios in {}", dir.display());
    let mut failures = Vec::new();
    for s in &scenarios {
        let mut builder = Gateway::new();
        for item in &s.chain {
            builder = builder.filter_spec(FilterSpec::new(&item.filter, item.config.clone()));
        }
        let gw = match builder.start() {
            Ok(gw) => gw,
            Err(e) => {
                failures.push(format!("{}: envoy did not start: {e}", s.name));
                continue;
            }
        };
        let response = s.request(gw.envoy.listener, "").send();
        for problem in s.check(&response) {
            failures.push(format!("{}: {problem}", s.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} scenario problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{} scenarios passed in Envoy", scenarios.len());
}
