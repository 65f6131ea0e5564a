//! HMAC `Authorization`, `Date` and `Digest` header parsing on arbitrary text: never panics; parsed
//! credentials name only valid header names (lower-case).
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_hmac_auth::signature::{
    parse_authorization, parse_digest, parse_http_date, Algorithm,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = parse_authorization(&text) {
        for h in &c.headers {
            assert_eq!(h, &h.to_ascii_lowercase(), "{text:?}");
        }
        let _ = Algorithm::from_name(&c.algorithm);
    }
    let _ = parse_http_date(&text);
    let _ = parse_digest(&text);
    if let Some(a) = Algorithm::from_name(&text) {
        let mac = a.mac(data, data);
        assert!(a.verify(data, data, &mac));
    }
});
