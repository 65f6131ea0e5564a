//! Shared helpers of the fuzz targets: a hostile request built from fuzzer bytes, and a driver that runs a
//! policy through every request callback and checks the invariants every policy must keep.

use arbitrary::Unstructured;
use portcullis_common::http::{is_valid_header_name, is_valid_header_value};
use portcullis_common::testing::{FakeHost, SharedMemoryStore};
use portcullis_common::{Decision, Exchange, Policy};
use std::time::Duration;

/// Header names a policy is likely to look at, so the fuzzer reaches the interesting paths quickly.
const NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    "x-forwarded-for",
    "x-real-ip",
    "cookie",
    "x-user-id",
    "x-canary",
    "x-canary-override",
    "authorization",
    "x-request-id",
    "traceparent",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "content-type",
    "content-length",
    "x-api-key",
    "x-a",
    "host",
    "date",
    "x-signature",
    "tracestate",
    "user-agent",
    "digest",
    "x-b3-flags",
];

/// Property paths either host may answer.
const PROPS: &[&str] = &[
    "source.address",
    "ngx.remote_addr",
    "xds.route_name",
    "route_name",
    "kong.route_id",
    "xds.cluster_name",
    "cluster_name",
    "kong.service_id",
    "response.code",
    "kong.service.target",
    "ngx.request_id",
    "request.id",
];

/// Interesting values: addresses, lists, huge and near-limit strings.
const VALUES: &[&str] = &[
    "10.0.0.1",
    "127.0.0.1:5678",
    "[::1]:80",
    "::ffff:10.0.0.1",
    "1.2.3.4, 10.0.0.2, 10.0.0.3",
    "unknown, 1.1.1.1",
    "GET",
    "POST",
    "/a/b?x=1&y=2",
    "cn=canary; other=1",
    "true",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "Bearer a.b.c",
    // HS256, the demo jwt-auth config's secret, issuer and audience; exp 2030
    "Bearer eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAiaHR0cHM6Ly9kZW1vLnBvcnRjdWxsaXMudGVzdC8iLCAiYXVkIjogIm9yZGVycy1hcGkiLCAic3ViIjogInUxIiwgInNjb3BlIjogIm9yZGVyczpyZWFkIiwgInRlbmFudCI6IHsiaWQiOiAidDEifSwgImV4cCI6IDE5MDAwMDAwMDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.Ht7MmMliBY0_6SP22n96N6qZa4wIGjhNkd0AFOyUlls",
    "hmac username=\"alice\", algorithm=\"hmac-sha256\", headers=\"@request-target date\", signature=\"c2ln\"",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "sqlmap/1.7",
    "Mozilla/5.0",
    "",
    " ",
];

/// A string from fuzzer bytes: a known value, arbitrary bytes decoded lossily (as a host hands invalid UTF-8
/// to a filter), or a huge repetition.
pub fn text(u: &mut Unstructured) -> String {
    match u.int_in_range(0..=9u8).unwrap_or(0) {
        0..=2 => VALUES[u.choose_index(VALUES.len()).unwrap_or(0)].to_string(),
        3 => {
            let unit = lossy(u, 8);
            let n = u.int_in_range(1..=70_000usize).unwrap_or(1);
            let mut s = String::new();
            while s.len() < n && !unit.is_empty() {
                s.push_str(&unit);
            }
            s
        }
        _ => lossy(u, 256),
    }
}

fn lossy(u: &mut Unstructured, max: usize) -> String {
    let len = u.int_in_range(0..=max).unwrap_or(0);
    let bytes = u.bytes(len.min(u.len())).unwrap_or(&[]);
    String::from_utf8_lossy(bytes).into_owned()
}

fn name(u: &mut Unstructured) -> String {
    if u.ratio(3u8, 4u8).unwrap_or(true) {
        NAMES[u.choose_index(NAMES.len()).unwrap_or(0)].to_string()
    } else {
        lossy(u, 40).to_ascii_lowercase()
    }
}

/// A request as a proxy could present it: up to 150 arbitrary headers (duplicates, invalid bytes, huge values),
/// arbitrary properties in either host's encoding, an arbitrary clock.
pub fn request(u: &mut Unstructured, store: &SharedMemoryStore) -> FakeHost {
    let mut host = FakeHost::new().with_store(store);
    if u.ratio(7u8, 8u8).unwrap_or(true) {
        host = host
            .with_header(":method", "GET")
            .with_header(":path", "/")
            .with_header(":authority", "example.test");
    }
    let headers = u.int_in_range(0..=150usize).unwrap_or(0);
    for _ in 0..headers {
        if u.is_empty() {
            break;
        }
        let (n, v) = (name(u), text(u));
        host = host.with_header(&n, &v);
    }
    let props = u.int_in_range(0..=PROPS.len()).unwrap_or(0);
    for _ in 0..props {
        let path: Vec<&str> = PROPS[u.choose_index(PROPS.len()).unwrap_or(0)]
            .split('.')
            .collect();
        let value = match u.int_in_range(0..=2u8).unwrap_or(0) {
            0 => text(u).into_bytes(),
            1 => u.arbitrary::<u64>().unwrap_or(0).to_le_bytes().to_vec(),
            _ => u.bytes(u.len().min(32)).unwrap_or(&[]).to_vec(),
        };
        host = host.with_property(&path, &value);
    }
    let now = u.arbitrary::<u64>().unwrap_or(0);
    // mostly plausible clocks (around 2026), sometimes anything
    let now = if u.ratio(1u8, 8u8).unwrap_or(false) {
        Duration::from_micros(now)
    } else {
        Duration::from_secs(1_780_000_000) + Duration::from_millis(now % 10_000_000)
    };
    host.at(now)
}

/// Panics (= a fuzz crash) when a local response is malformed.
pub fn check_decision(d: &Decision) {
    if let Decision::Respond(r) = d {
        assert!((100..=599).contains(&r.status), "bad status {}", r.status);
        for (n, v) in &r.headers {
            assert!(is_valid_header_name(n), "bad response header name {n:?}");
            assert!(
                is_valid_header_value(v),
                "bad response header value {n}: {v:?}"
            );
        }
        assert!(
            r.body.len() <= 64 * 1024,
            "local response body of {} bytes",
            r.body.len()
        );
    }
}

/// Every request header value that is invalid after the policy ran must be one the client sent: a policy
/// may pass hostile bytes through, never create them.
pub fn check_no_new_invalid_headers(before: &[(String, String)], host: &FakeHost) {
    let after = host.state.borrow().request_headers.clone();
    for (n, v) in &after {
        if !is_valid_header_value(v) {
            assert!(
                before.iter().any(|(_, bv)| bv == v),
                "policy wrote an invalid header value {n}: {v:?}"
            );
        }
    }
    for (n, v) in &host.state.borrow().response_headers {
        assert!(
            is_valid_header_value(v),
            "invalid response header {n}: {v:?}"
        );
    }
}

/// Runs one request through every callback of `policy`, with fuzzer-chosen response status and timing.
pub fn drive<P: Policy>(policy: &P, u: &mut Unstructured, store: &SharedMemoryStore) {
    let host = request(u, store);
    let before = host.state.borrow().request_headers.clone();
    let mut state = P::State::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    ex.set_request_has_body(u.arbitrary().unwrap_or(false));
    let mut d = policy.on_request_headers(&mut state, &mut ex);
    check_decision(&d);
    if d == Decision::Pause {
        d = policy.on_resume(&mut state, &mut ex, true);
        check_decision(&d);
    }
    if d == Decision::Continue && policy.wants_request_body() {
        let body = lossy(u, 4096).into_bytes();
        let len = body.len();
        {
            host.state.borrow_mut().request_body = body;
        }
        d = policy.on_request_body(&mut state, &mut ex, len, true);
        check_decision(&d);
    }
    if d == Decision::Continue {
        let status: u16 = u.int_in_range(100..=599).unwrap_or(200);
        let later = Duration::from_millis(u.int_in_range(0..=120_000u64).unwrap_or(0));
        {
            let mut s = host.state.borrow_mut();
            s.now += later;
            s.properties.insert(
                "response.code".to_string(),
                u64::from(status).to_le_bytes().to_vec(),
            );
            s.response_headers
                .push(("content-type".into(), "text/plain".into()));
        }
        ex.new_callback();
        let r = policy.on_response_headers(&mut state, &mut ex);
        check_decision(&r);
    }
    policy.on_log(&mut state, &mut ex);
    check_no_new_invalid_headers(&before, &host);
}

/// A policy from one of `configs` chosen by the first fuzzer byte (configs must be valid).
pub fn pick<P: Policy>(u: &mut Unstructured, configs: &[&str]) -> P {
    let i = u.choose_index(configs.len()).unwrap_or(0);
    match P::configure(configs[i].as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("seed config {i} of {} is invalid: {e}", P::NAME),
    }
}

/// Runs a configure function on arbitrary bytes: it must return, never panic; an error must name its field
/// path or say what is wrong, and be printable.
pub fn configure_any<P: Policy>(data: &[u8]) {
    match P::configure(data) {
        Ok(_) => {}
        Err(e) => {
            let s = e.to_string();
            assert!(!s.is_empty(), "empty config error");
        }
    }
}
