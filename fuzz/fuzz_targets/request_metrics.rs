//! The metrics policy over a few hostile requests sharing one store: never panics, local responses are
//! well-formed, no invalid header value is created.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_metrics::MetricsPolicy;

const CONFIGS: &[&str] = &[r#"{"labels": ["route", "method", "status_class"]}"#];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: MetricsPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=4u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
});
