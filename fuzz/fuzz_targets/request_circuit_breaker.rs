//! The circuit breaker over a sequence of hostile requests sharing one store, with arbitrary statuses and
//! clock jumps: never panics, local responses are well-formed, and the key table stays bounded.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_circuit_breaker::CircuitBreakerPolicy;
use portcullis_common::testing::SharedMemoryStore;

pub const CONFIGS: &[&str] = &[
    r#"{"open_for":"1s","consecutive_failures":2,"state_header":"x-circuit-state"}"#,
    r#"{"consecutive_failures":3,"failure_ratio":0.5,"min_requests":4,"window":"30s","half_open_requests":2,"success_to_close":2}"#,
    r#"{"scope":"key","key":"${header.x-user-id}","max_keys":8,"open_for":"1s","max_open_for":"10s","slow_call_threshold":"100ms"}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: CircuitBreakerPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=12u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
    let keys = store.0.borrow().len();
    assert!(keys <= 64, "circuit-breaker left {keys} shared-data keys");
});
