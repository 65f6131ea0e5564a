//! JWT compact-serialization parsing on arbitrary text: never panics; the size cap is honoured.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_jwt_auth::token;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cap = 4096;
    if let Ok(parsed) = token::parse(&text, cap) {
        assert!(text.len() <= cap);
        let _ = format!("{:?}", parsed);
    }
    if let Err(r) = token::parse(&text, 16) {
        assert!(!r.reason().is_empty() && !r.description().is_empty());
    }
});
