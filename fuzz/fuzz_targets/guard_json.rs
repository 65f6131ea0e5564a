//! request-guard's streaming JSON well-formedness/depth check on arbitrary bodies: never panics (nor overflows
//! the stack on deep nesting); what it accepts is JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_request_guard::json::check;

fuzz_target!(|data: &[u8]| {
    let depth = u32::from(data.first().copied().unwrap_or(0) % 64) + 1;
    let body = data.get(1..).unwrap_or(&[]);
    let ours = check(body, depth);
    let _ = check(body, u32::MAX);
    if ours.is_ok() {
        let parsed = serde_json::from_slice::<serde::de::IgnoredAny>(body);
        assert!(parsed.is_ok(), "accepted invalid JSON {body:?}");
    }
});
