//! traceparent / B3 parsing: never panics; what parses re-serializes to something that parses to the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_common::trace_context::{
    from_headers, parse_b3_multi, parse_b3_single, parse_traceparent, B3,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(c) = parse_traceparent(&text) {
        let again = parse_traceparent(&c.traceparent());
        assert_eq!(again.as_ref(), Some(&c), "{text:?}");
    }
    if let Some(B3::Context { context, .. }) = parse_b3_single(&text) {
        let single = context.b3_single(None);
        match parse_b3_single(&single) {
            Some(B3::Context { context: again, .. }) => {
                assert_eq!(again.trace_id, context.trace_id)
            }
            other => panic!("{text:?} -> {single:?} -> {other:?}"),
        }
    }
    let parts: Vec<&str> = text.splitn(4, '|').collect();
    let at = |i: usize| parts.get(i).copied();
    let _ = parse_b3_multi(at(0), at(1), at(2), at(3));
    let _ = from_headers(|name| match name {
        "traceparent" => at(0).map(str::to_owned),
        "b3" => at(1).map(str::to_owned),
        "x-b3-traceid" => at(2).map(str::to_owned),
        _ => at(3).map(str::to_owned),
    });
});
