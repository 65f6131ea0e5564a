//! Property decoding (Envoy's binary encodings vs Kong's text): never panics on arbitrary bytes, and the
//! per-concept accessors never panic on a host answering garbage.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::props;
use portcullis_common::testing::SharedMemoryStore;

fuzz_target!(|data: &[u8]| {
    let _ = props::decode_string(data);
    let _ = props::decode_bool(data);
    if let Some(n) = props::decode_u64(data) {
        if data.iter().all(u8::is_ascii_digit) {
            assert_eq!(
                n.to_string().trim_start_matches('0'),
                String::from_utf8_lossy(data).trim_start_matches('0')
            );
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = props::parse_address(&text);
    let mut u = Unstructured::new(data);
    props::reset_flavor();
    let store = SharedMemoryStore::default();
    let mut host = portcullis_fuzz::request(&mut u, &store);
    let _ = props::peer_ip(&host);
    let _ = props::route_id(&host);
    let _ = props::service_id(&host);
    let _ = props::response_status(&host);
    let _ = props::set_upstream_target(&mut host, &text);
    props::reset_flavor();
});
