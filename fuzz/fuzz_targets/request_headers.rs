//! The headers policy's request and response path on a hostile request.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_headers::HeadersPolicy;

pub const CONFIGS: &[&str] = &[
    r#"{"request":{"set":[{"name":"x-client","value":"${client_ip}"},{"name":"x-echo","value":"${header.x-a}|${query.y}|${path}"}],
        "add":[{"name":"x-route","value":"${route_id}/${service_id}/${request_id}"}],
        "remove":["cookie"],"rename":[{"from":"x-user-id","to":"x-uid"}]},
       "response":{"set":[{"name":"x-method","value":"${method} ${host} ${path_and_query}"}],"add":[{"name":"x-fwd","value":"${header.x-forwarded-for}"}],"remove":["content-type"]}}"#,
    r#"{"request":{"set":[{"name":"authorization","value":"${header.authorization}${header.authorization}"}]}}"#,
    r#"{}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: HeadersPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    portcullis_fuzz::drive(&policy, &mut u, &store);
});
