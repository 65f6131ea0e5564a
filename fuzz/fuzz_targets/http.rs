//! Header names/values: parsers never panic; sanitize_header_value always yields a valid value within its cap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_common::http::{
    is_valid_header_name, is_valid_header_value, sanitize_header_value, HeaderName, HeaderValue,
};

fuzz_target!(|data: &[u8]| {
    let (cap, rest) = match data.split_first() {
        Some((c, r)) => (usize::from(*c) * 33, r),
        None => (0, data),
    };
    let text = String::from_utf8_lossy(rest);
    if let Ok(n) = HeaderName::parse(&text) {
        assert!(is_valid_header_name(n.as_str()));
    }
    if let Ok(v) = HeaderValue::parse(&text) {
        assert!(is_valid_header_value(v.as_str()));
    }
    let clean = sanitize_header_value(&text, cap);
    assert!(is_valid_header_value(&clean), "{text:?} -> {clean:?}");
    assert!(clean.len() <= cap, "{} > {cap}", clean.len());
    assert_eq!(clean.trim(), clean, "not trimmed");
    let _ = serde_json::from_slice::<HeaderName>(rest);
    let _ = serde_json::from_slice::<HeaderValue>(rest);
});
