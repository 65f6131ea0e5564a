//! The jwt-auth policy over a few hostile requests sharing one store: never panics, local responses are
//! well-formed, no invalid header value is created.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::testing::SharedMemoryStore;
use portcullis_jwt_auth::JwtAuthPolicy;

const CONFIGS: &[&str] = &[
    r#"{"realm": "demo", "providers": [{"name": "demo", "issuer": "https://demo.portcullis.test/", "audiences": ["orders-api"], "algorithms": ["HS256"], "secret": "portcullis-demo-secret-0123456789abcdef", "required_claims": [{"claim": "scope", "values": ["orders:read"]}]}], "claims_to_headers": [{"claim": "sub", "header": "x-user"}, {"claim": "tenant.id", "header": "x-tenant"}]}"#,
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let policy: JwtAuthPolicy = portcullis_fuzz::pick(&mut u, CONFIGS);
    let store = SharedMemoryStore::default();
    let n = u.int_in_range(1..=4u8).unwrap_or(1);
    for _ in 0..n {
        if u.is_empty() {
            break;
        }
        portcullis_fuzz::drive(&policy, &mut u, &store);
    }
});
