//! Templates: parsing arbitrary text never panics; a header template rendered against a hostile request never
//! yields CR/LF/NUL or more than MAX_RENDERED_HEADER_BYTES.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::http::is_valid_header_value;
use portcullis_common::template::{Template, MAX_RENDERED_HEADER_BYTES};
use portcullis_common::testing::SharedMemoryStore;
use portcullis_common::Exchange;

const SEEDS: &[&str] = &[
    "${client_ip}",
    "${header.x-a}-${query.q}",
    "${method} ${path_and_query} ${host}",
    "$${route_id} ${route_id} ${service_id} ${request_id}",
    "x=${header.cookie};y=${header.x-forwarded-for}",
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let source = if u.arbitrary::<bool>().unwrap_or(false) {
        SEEDS[u.choose_index(SEEDS.len()).unwrap_or(0)].to_string()
    } else {
        let n = u.int_in_range(0..=200usize).unwrap_or(0);
        let n = n.min(u.len());
        String::from_utf8_lossy(u.bytes(n).unwrap_or(&[])).into_owned()
    };
    let _ = Template::parse(&source);
    let Ok(t) = Template::parse_header_value(&source) else {
        return;
    };
    assert_eq!(t.source(), source);
    let store = SharedMemoryStore::default();
    let host = portcullis_fuzz::request(&mut u, &store);
    let mut ex = Exchange::new(Box::new(host));
    let r = t.render_header_value(&mut ex);
    assert!(
        is_valid_header_value(&r.value),
        "{source:?} rendered {:?}",
        r.value
    );
    assert!(r.value.len() <= MAX_RENDERED_HEADER_BYTES.max(source.len()));
    let _ = t.render(&mut ex);
});
