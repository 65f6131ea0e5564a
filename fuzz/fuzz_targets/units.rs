//! Duration and byte-size parsers (as text and through serde): never panic; accepted values are in range
//! and reparse to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_common::units::{parse_byte_size, parse_duration, ByteSize, DurationSpec};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(d) = parse_duration(&text) {
        assert!(
            d <= Duration::from_secs(11 * 366 * 24 * 3600),
            "{text:?} -> {d:?}"
        );
        let again = parse_duration(&format!("{}us", d.as_micros()));
        assert_eq!(
            again,
            Ok(d),
            "{text:?} does not round-trip through microseconds"
        );
    }
    if let Ok(n) = parse_byte_size(&text) {
        assert_eq!(parse_byte_size(&n.to_string()), Ok(n), "{text:?}");
    }
    let _ = serde_json::from_slice::<DurationSpec>(data);
    let _ = serde_json::from_slice::<ByteSize>(data);
});
