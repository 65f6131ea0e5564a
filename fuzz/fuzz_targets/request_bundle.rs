//! The portcullis bundle: a chain of the finished policies on a hostile request.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_bundle::BundlePolicy;
use portcullis_common::testing::SharedMemoryStore;

const CONFIGS: &[&str] = &[
    r#"{"chain":[
        {"policy":"headers","config":{"request":{"set":[{"name":"x-a","value":"${client_ip}-${header.x-user-id}"}]}}},
        {"policy":"canary","config":{"identity":{"header":"x-a"},"percentage":30}},
        {"policy":"circuit-breaker","config":{"consecutive_failures":2,"open_for":"1s","state_header":"x-circuit-state"}},
        {"policy":"headers","config":{"response":{"set":[{"name":"x-b","value":"${header.x-a}"}]}}}]}"#,
    r#"{"chain":[{"policy":"circuit-breaker","config":{"scope":"key","key":"${header.x-user-id}","max_keys":4}},
                 {"policy":"headers","config":{"request":{"remove":["cookie"]}}}]}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: BundlePolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=6u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
});
