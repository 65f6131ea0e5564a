//! The canary policy's request path on a hostile request (rules, cookies, client IPs, ramp, override header).
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_canary::CanaryPolicy;
use portcullis_common::testing::SharedMemoryStore;

const CONFIGS: &[&str] = &[
    r#"{"identity":{"header":"x-user-id"},"rules":[{"name":"uid","match":{"uid_prefix":"abc"},"route":"canary"}],"percentage":5}"#,
    r#"{"percentage":50,"set_cookie":{"name":"cn","max_age":"10m"},"sticky_key":{"cookie":"cn"}}"#,
    r#"{"identity":{"header":"x-user-id"},"percentage":0,"override_header":{"header":"x-canary-override"}}"#,
    r#"{"percentage":100,"rules":[{"match":{"header":{"name":"x-canary","regex":"^(t|y).*$"}},"route":"stable"},
        {"match":{"cookie":{"name":"cn","equals":"canary"}},"route":"canary"},
        {"match":{"query":{"name":"y","prefix":"1"}},"route":"canary"},
        {"match":{"client_ip":["10.0.0.0/8","::1/128"]},"route":"canary"}],
       "sticky_key":{"client_ip":true},"canary_target":"10.0.0.9:8080"}"#,
    r#"{"percentage":1,"ramp":{"start":"2026-01-01T00:00:00Z","duration":"1h","steps":4,"target":90}}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: CanaryPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    portcullis_fuzz::drive(&policy, &mut u, &store);
});
