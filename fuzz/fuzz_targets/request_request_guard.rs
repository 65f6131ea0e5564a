//! The request-guard policy over a few hostile requests sharing one store: never panics, local responses are
//! well-formed, no invalid header value is created.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_request_guard::RequestGuardPolicy;

const CONFIGS: &[&str] = &[
    r#"{"client_ip": {"source": "x_forwarded_for", "trusted_proxies": ["127.0.0.1/32"]}, "ip": {"deny": ["203.0.113.0/24"]}, "user_agent": {"block_scanners": true, "deny_missing": true}, "methods": ["GET", "POST"], "body": {"max_bytes": "8KiB", "json": true}}"#,
    r#"{"ip":{"allow":["10.0.0.0/8","::1/128"]},"methods":["GET","POST","PUT"],"hosts":{"allow":["example.test","*.example.test"]},"user_agent":{"deny":["^curl/"]},"body":{"max_bytes":"1KiB","require_content_length":true,"json":true,"max_json_depth":8}}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: RequestGuardPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=4u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
});
