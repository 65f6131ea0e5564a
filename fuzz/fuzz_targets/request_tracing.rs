//! The tracing policy over a few hostile requests sharing one store: never panics, local responses are
//! well-formed, no invalid header value is created.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_tracing::TracingPolicy;

const CONFIGS: &[&str] =
    &[r#"{"sample_ratio": 1.0, "inject": ["w3c"], "trace_id_response_header": "x-trace-id"}"#];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: TracingPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=4u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
});
