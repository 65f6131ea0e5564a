//! The rate-limit policy over a few hostile requests sharing one store: never panics, local responses are
//! well-formed, no invalid header value is created.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_rate_limit::RateLimitPolicy;

const CONFIGS: &[&str] = &[
    r#"{"limits": [{"name": "per_ip", "key": "${client_ip}", "algorithm": "token_bucket", "rate": 1, "per": "1s", "burst": 5}, {"name": "gateway", "key": "all", "algorithm": "token_bucket", "rate": 10, "per": "1s", "burst": 10}]}"#,
    r#"{"limits":[{"name":"per_user","key":"${header.x-user-id}","algorithm":"fixed_window","requests":3,"window":"1s"}]}"#,
    r#"{"max_keys":16,"client_ip":{"source":"x_forwarded_for","trusted_hops":1},"limits":[{"name":"sw","key":"${header.x-forwarded-for}","algorithm":"sliding_window","requests":2,"window":"10s"}]}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: RateLimitPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=4u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
});
