use super::*;
use crate::signature::{body_digest, http_date, sign, SigningRequest};
use portcullis_common::metrics;
use portcullis_common::testing::{FakeHost, SharedMemoryStore};
use serde_json::json;
use std::time::{Duration, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z: the gateway clock in these tests.
const NOW: u64 = 1_767_225_600;

fn policy(extra: serde_json::Value) -> HmacAuthPolicy {
    let mut config = json!({"credentials": [
        {"username": "alice", "secret": "alice-secret"},
        {"username": "bob", "secret_base64": "Ym9iLXNlY3JldA=="}
    ]});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    HmacAuthPolicy::configure(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{config}: {e}"))
}

/// A request description the tests sign and then (maybe) tamper with.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
    signed: Vec<&'static str>,
    user: &'static str,
    secret: &'static [u8],
    algorithm: Algorithm,
}

fn req(nonce: &str) -> Req {
    Req {
        method: "GET",
        path: "/orders?id=7",
        headers: vec![("date".into(), date(NOW)), ("x-nonce".into(), nonce.into())],
        signed: vec!["@request-target", "date", "x-nonce"],
        user: "alice",
        secret: b"alice-secret",
        algorithm: Algorithm::HmacSha256,
    }
}

fn date(secs: u64) -> String {
    http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

impl Req {
    fn authorization(&self) -> String {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let r = SigningRequest {
            method: self.method,
            path: self.path,
            protocol: "HTTP/1.1",
            headers: &headers,
        };
        sign(self.user, self.secret, self.algorithm, &self.signed, &r).unwrap()
    }

    fn host(&self, authorization: &str, store: &SharedMemoryStore) -> FakeHost {
        let mut h = FakeHost::request(self.method, self.path)
            .with_store(store)
            .at(Duration::from_secs(NOW))
            .with_header("authorization", authorization);
        for (n, v) in &self.headers {
            h = h.with_header(n, v);
        }
        h
    }

    fn signed_host(&self, store: &SharedMemoryStore) -> FakeHost {
        self.host(&self.authorization(), store)
    }
}

fn run(p: &HmacAuthPolicy, host: FakeHost) -> Decision {
    let mut ex = Exchange::new(Box::new(host));
    p.on_request_headers(&mut HmacState::default(), &mut ex)
}

fn status(d: &Decision) -> u16 {
    match d {
        Decision::Respond(r) => r.status,
        _ => 0,
    }
}

#[test]
fn a_valid_signature_passes_and_names_the_consumer() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let host = req("nonce-0001")
        .signed_host(&store)
        .with_header("x-consumer-username", "mallory");
    assert_eq!(run(&p, host.clone()), Decision::Continue);
    assert_eq!(host.header_values("x-consumer-username"), vec!["alice"]);
    assert!(
        host.header("authorization").is_some(),
        "kept unless hide_credentials"
    );
}

#[test]
fn verification_table() {
    let p = policy(json!({}));
    let tamper_nonce = |mut r: Req| {
        let auth = r.authorization();
        r.headers[1].1 = "nonce-other".into();
        (r, Some(auth))
    };
    type Case = (&'static str, Req, Option<String>, u16);
    let mut cases: Vec<Case> = Vec::new();
    let base = || req(&format!("nonce-{:08}", cases_len()));
    fn cases_len() -> u32 {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
    cases.push(("valid", base(), None, 0));
    cases.push((
        "bob's base64 secret",
        Req {
            user: "bob",
            secret: b"bob-secret",
            ..base()
        },
        None,
        0,
    ));
    cases.push((
        "wrong secret",
        Req {
            secret: b"guess",
            ..base()
        },
        None,
        401,
    ));
    cases.push((
        "unknown user",
        Req {
            user: "eve",
            ..base()
        },
        None,
        401,
    ));
    cases.push((
        "sha512",
        Req {
            algorithm: Algorithm::HmacSha512,
            ..base()
        },
        None,
        0,
    ));
    cases.push((
        "sha384",
        Req {
            algorithm: Algorithm::HmacSha384,
            ..base()
        },
        None,
        0,
    ));
    cases.push((
        "sha1 not enabled",
        Req {
            algorithm: Algorithm::HmacSha1,
            ..base()
        },
        None,
        401,
    ));
    let mut expired = base();
    expired.headers[0].1 = date(NOW - 301);
    cases.push(("expired", expired, None, 401));
    let mut old_ok = base();
    old_ok.headers[0].1 = date(NOW - 300);
    cases.push(("at the skew limit", old_ok, None, 0));
    let mut future = base();
    future.headers[0].1 = date(NOW + 301);
    cases.push(("future", future, None, 401));
    let (t, a) = tamper_nonce(base());
    cases.push(("header tampered", t, a, 401));
    cases.push((
        "date not signed",
        Req {
            signed: vec!["@request-target", "x-nonce"],
            ..base()
        },
        None,
        401,
    ));
    cases.push((
        "nonce not signed",
        Req {
            signed: vec!["@request-target", "date"],
            ..base()
        },
        None,
        401,
    ));
    let mut no_nonce = base();
    no_nonce.headers.truncate(1);
    no_nonce.signed = vec!["date"];
    cases.push(("nonce missing", no_nonce, None, 401));
    let mut short_nonce = base();
    short_nonce.headers[1].1 = "abc".into();
    cases.push(("nonce too short", short_nonce, None, 401));
    let mut bad_date = base();
    bad_date.headers[0].1 = "yesterday".into();
    cases.push(("unparsable date", bad_date, None, 401));
    cases.push((
        "garbage signature",
        base(),
        Some(r#"hmac username="alice", algorithm="hmac-sha256", headers="date x-nonce", signature="!!!""#.into()),
        401,
    ));
    cases.push(("not hmac", base(), Some("Bearer abc".into()), 401));
    cases.push((
        "malformed",
        base(),
        Some("hmac username=alice\"".into()),
        401,
    ));

    for (name, r, auth, want) in cases {
        let store = SharedMemoryStore::default();
        let host = match &auth {
            Some(a) => r.host(a, &store),
            None => r.signed_host(&store),
        };
        let d = run(&p, host);
        assert_eq!(status(&d), want, "{name}: {d:?}");
        if let Decision::Respond(resp) = &d {
            assert_eq!(
                resp.header("www-authenticate"),
                Some(r#"hmac realm="portcullis", headers="date x-nonce""#),
                "{name}"
            );
        }
    }
}

#[test]
fn path_tampering_is_caught_by_the_request_target() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-path-1");
    let auth = r.authorization();
    let tampered = Req {
        path: "/orders?id=8",
        ..r
    };
    assert_eq!(status(&run(&p, tampered.host(&auth, &store))), 401);
}

#[test]
fn a_replayed_request_is_refused_with_401() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-replay-1");
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
    let before = metrics::value("portcullis_hmac_auth_denied_replay_total").unwrap_or(0);
    let d = run(&p, r.signed_host(&store));
    assert_eq!(status(&d), 401);
    let Decision::Respond(resp) = d else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(&resp.body).contains("nonce already used"));
    if cfg!(not(target_arch = "wasm32")) {
        // natively, metrics live in an in-memory registry; under wasm the host keeps them
        assert_eq!(
            metrics::value("portcullis_hmac_auth_denied_replay_total").unwrap_or(0) - before,
            1
        );
    }
    // another nonce is fine; the same nonce for another user is that user's own
    assert_eq!(
        run(&p, req("nonce-replay-2").signed_host(&store)),
        Decision::Continue
    );
    let bob = Req {
        user: "bob",
        secret: b"bob-secret",
        ..req("nonce-replay-1")
    };
    assert_eq!(run(&p, bob.signed_host(&store)), Decision::Continue);
}

#[test]
fn replay_is_caught_across_workers_sharing_one_store() {
    // Two policy instances (two worker threads' root contexts) over the same shared data, with
    // ngx_wasm_module's strict cas rules and with Envoy's (cas 0 = unconditional write).
    for memory in [
        portcullis_common::testing::MemoryStore::default(),
        portcullis_common::testing::MemoryStore::envoy(),
    ] {
        let worker_a = policy(json!({}));
        let worker_b = policy(json!({}));
        let store = SharedMemoryStore(std::rc::Rc::new(std::cell::RefCell::new(memory)));
        let r = req("nonce-xworker");
        assert_eq!(run(&worker_a, r.signed_host(&store)), Decision::Continue);
        assert_eq!(status(&run(&worker_b, r.signed_host(&store))), 401);
        assert_eq!(status(&run(&worker_a, r.signed_host(&store))), 401);
    }
}

#[test]
fn nonces_are_forgotten_once_their_date_is_out_of_the_window() {
    let p = policy(json!({"clock_skew": "10s"}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-expiry");
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
    // later, the same request is refused: first as a replay, then by the date check; never accepted
    for later in [1, 5, 10, 11, 60] {
        let host = r.signed_host(&store).at(Duration::from_secs(NOW + later));
        assert_eq!(status(&run(&p, host)), 401, "+{later}s");
    }
}

#[test]
fn a_full_nonce_table_fails_closed() {
    let p = policy(json!({"max_nonces": 1, "clock_skew": "10s"}));
    let store = SharedMemoryStore::default();
    assert_eq!(
        run(&p, req("nonce-full-1").signed_host(&store)),
        Decision::Continue
    );
    let d = run(&p, req("nonce-full-2").signed_host(&store));
    assert_eq!(status(&d), 503, "{d:?}");
    let Decision::Respond(resp) = d else {
        unreachable!()
    };
    assert_eq!(resp.header("retry-after"), Some("1"));
    // the first nonce is still remembered: full never means forgetting
    assert_eq!(
        status(&run(&p, req("nonce-full-1").signed_host(&store))),
        401
    );
    // once it expires, its slot is reused
    let mut later = req("nonce-full-3");
    later.headers[0].1 = date(NOW + 20);
    let host = later.signed_host(&store).at(Duration::from_secs(NOW + 20));
    assert_eq!(run(&p, host), Decision::Continue);
    assert_eq!(store.0.borrow().len(), 1);
}

#[test]
fn a_contended_store_fails_closed() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    store
        .0
        .borrow_mut()
        .inject_cas_mismatches(portcullis_common::store::MAX_CAS_RETRIES + 1);
    assert_eq!(
        status(&run(&p, req("nonce-contended").signed_host(&store))),
        503
    );
}

#[test]
fn unauthenticated_requests_never_write_nonces() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let bad = Req {
        secret: b"wrong",
        ..req("nonce-unauth")
    };
    assert_eq!(status(&run(&p, bad.signed_host(&store))), 401);
    assert!(store.0.borrow().is_empty());
    // and the real owner can still use the nonce
    assert_eq!(
        run(&p, req("nonce-unauth").signed_host(&store)),
        Decision::Continue
    );
}

#[test]
fn without_replay_protection_no_nonce_is_needed() {
    let p = policy(json!({"replay_protection": false}));
    let store = SharedMemoryStore::default();
    let mut r = req("unused");
    r.headers.truncate(1);
    r.signed = vec!["date"];
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
    assert!(store.0.borrow().is_empty());
}

#[test]
fn enforce_headers_must_be_signed() {
    let p = policy(json!({"enforce_headers": ["request-line", "date"]}));
    let store = SharedMemoryStore::default();
    assert_eq!(
        status(&run(&p, req("nonce-enforce-1").signed_host(&store))),
        401
    );
    let r = Req {
        signed: vec!["request-line", "date", "x-nonce"],
        ..req("nonce-enforce-2")
    };
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
}

#[test]
fn sha1_works_only_when_enabled() {
    let p = policy(json!({"algorithms": ["hmac-sha1", "hmac-sha256"]}));
    let store = SharedMemoryStore::default();
    let r = Req {
        algorithm: Algorithm::HmacSha1,
        ..req("nonce-sha1-1")
    };
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
}

#[test]
fn x_date_takes_precedence_and_must_be_signed() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let mut r = req("nonce-xdate-1");
    r.headers[0].0 = "x-date".into();
    r.signed = vec!["x-date", "x-nonce"];
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
    // a stale signed date cannot be refreshed through an unsigned x-date
    let mut stale = req("nonce-xdate-2");
    stale.headers[0].1 = date(NOW - 3600);
    let host = stale.signed_host(&store).with_header("x-date", &date(NOW));
    assert_eq!(status(&run(&p, host)), 401);
}

#[test]
fn hide_credentials_removes_the_authorization_header() {
    let p = policy(json!({"hide_credentials": true, "consumer_header": "x-user"}));
    let store = SharedMemoryStore::default();
    let host = req("nonce-hide-1").signed_host(&store);
    assert_eq!(run(&p, host.clone()), Decision::Continue);
    assert_eq!(host.header("authorization"), None);
    assert_eq!(host.header("x-user").as_deref(), Some("alice"));
}

#[test]
fn a_spoofed_consumer_header_is_removed_even_when_refused() {
    let p = policy(json!({}));
    let host = FakeHost::request("GET", "/").with_header("x-consumer-username", "admin");
    assert_eq!(status(&run(&p, host.clone())), 401);
    assert_eq!(host.header("x-consumer-username"), None);
}

#[test]
fn signature_scheme_with_key_id_is_accepted() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-cavage-1");
    let auth = r
        .authorization()
        .replacen("hmac username=", "Signature keyId=", 1);
    assert_eq!(run(&p, r.host(&auth, &store)), Decision::Continue);
}

fn body_req(nonce: &str, body: &[u8]) -> Req {
    let mut r = req(nonce);
    r.method = "POST";
    r.headers.push(("digest".into(), body_digest(body)));
    r.headers
        .push(("content-length".into(), body.len().to_string()));
    r.signed.push("digest");
    r
}

/// Headers, then the body in one buffered piece the way the host delivers it after `Pause`s.
fn run_with_body(p: &HmacAuthPolicy, host: FakeHost, body: &[u8], chunks: usize) -> Decision {
    let mut state = HmacState::default();
    let mut ex = Exchange::new(Box::new(host.clone().with_body(body)));
    let d = p.on_request_headers(&mut state, &mut ex);
    if d != Decision::Continue {
        return d;
    }
    let step = body.len().div_ceil(chunks.max(1)).max(1);
    let mut last = Decision::Continue;
    let mut size = 0;
    while size < body.len() {
        size = (size + step).min(body.len());
        last = p.on_request_body(&mut state, &mut ex, size, size == body.len());
        if size < body.len() && last != Decision::Pause {
            return last;
        }
    }
    last
}

#[test]
fn request_body_digest_is_verified() {
    let p = policy(json!({"validate_request_body": true, "max_body_bytes": 64}));
    let store = SharedMemoryStore::default();
    let body = br#"{"amount": 10}"#;
    let r = body_req("nonce-body-1", body);
    assert_eq!(
        run_with_body(&p, r.signed_host(&store), body, 3),
        Decision::Continue
    );
    // same signed headers, different body
    let r = body_req("nonce-body-2", body);
    let d = run_with_body(&p, r.signed_host(&store), br#"{"amount": 99}"#, 2);
    assert_eq!(status(&d), 401);
    // digest not signed
    let mut unsigned = body_req("nonce-body-3", body);
    unsigned.signed.pop();
    assert_eq!(
        status(&run_with_body(&p, unsigned.signed_host(&store), body, 1)),
        401
    );
    // too large to buffer
    let big = [b'x'; 65];
    let r = body_req("nonce-body-4", &big);
    assert_eq!(
        status(&run_with_body(&p, r.signed_host(&store), &big, 2)),
        413
    );
}

#[test]
fn an_empty_body_is_verified_at_the_headers() {
    let p = policy(json!({"validate_request_body": true}));
    let store = SharedMemoryStore::default();
    let mut r = req("nonce-empty-1");
    r.headers.push(("digest".into(), body_digest(b"")));
    r.signed.push("digest");
    assert_eq!(run(&p, r.signed_host(&store)), Decision::Continue);
    let mut wrong = req("nonce-empty-2");
    wrong
        .headers
        .push(("digest".into(), body_digest(b"something")));
    wrong.signed.push("digest");
    assert_eq!(status(&run(&p, wrong.signed_host(&store))), 401);
}

#[test]
fn request_line_uses_the_reported_protocol() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = Req {
        signed: vec!["request-line", "date", "x-nonce"],
        ..req("nonce-line-1")
    };
    let host = r
        .signed_host(&store)
        .with_property(&["request", "protocol"], b"HTTP/1.1");
    assert_eq!(run(&p, host), Decision::Continue);
    let r = Req {
        signed: vec!["request-line", "date", "x-nonce"],
        ..req("nonce-line-2")
    };
    let host = r
        .signed_host(&store)
        .with_property(&["request", "protocol"], b"HTTP/2");
    assert_eq!(
        status(&run(&p, host)),
        401,
        "signed for HTTP/1.1, sent over HTTP/2"
    );
}

#[test]
fn a_body_of_unknown_length_is_expected_from_the_hosts_end_of_stream_flag() {
    let p = policy(json!({"validate_request_body": true}));
    let store = SharedMemoryStore::default();
    let body = br#"{"chunked": true}"#;
    let chunked = |nonce: &str| {
        let mut r = body_req(nonce, body);
        r.headers.retain(|(n, _)| n != "content-length");
        r
    };
    // Envoy: no content-length, transfer-encoding stripped, but the headers did not end the stream
    let mut ex = Exchange::new(Box::new(
        chunked("nonce-eos-1").signed_host(&store).with_body(body),
    ));
    ex.set_request_has_body(true);
    let mut state = HmacState::default();
    assert_eq!(
        p.on_request_headers(&mut state, &mut ex),
        Decision::Continue
    );
    assert_eq!(
        p.on_request_body(&mut state, &mut ex, body.len(), true),
        Decision::Continue
    );
    // Kong keeps transfer-encoding
    let host = chunked("nonce-eos-2")
        .signed_host(&store)
        .with_header("transfer-encoding", "chunked");
    assert_eq!(run_with_body(&p, host, body, 2), Decision::Continue);
    // the headers ended the stream: the signed digest must be the empty body's
    let mut ex = Exchange::new(Box::new(chunked("nonce-eos-3").signed_host(&store)));
    ex.set_request_has_body(false);
    let d = p.on_request_headers(&mut HmacState::default(), &mut ex);
    assert_eq!(status(&d), 401);
}

#[test]
fn a_nonce_in_a_later_probe_slot_is_still_found_after_the_earlier_slot_frees_up() {
    // Two slots: the home slot holds nonce X (old date, expires first); N shares X's home slot and lands
    // in the next one. Once X expires, its slot is free again, yet N's replay must still be caught.
    let p = policy(json!({"max_nonces": 2, "clock_skew": "300s"}));
    let store = SharedMemoryStore::default();
    let home = |nonce: &str| portcullis_common::store::fingerprint(&format!("alice\n{nonce}")) % 2;
    let x = "nonce-probe-x";
    let n = (0..1000)
        .map(|i| format!("nonce-probe-{i:04}"))
        .find(|n| home(n) == home(x))
        .unwrap();
    let mut first = req(x);
    first.headers[0].1 = date(NOW - 290); // remembered until NOW + 11
    assert_eq!(run(&p, first.signed_host(&store)), Decision::Continue);
    let second = req(&n);
    assert_eq!(run(&p, second.signed_host(&store)), Decision::Continue);
    let later = second.signed_host(&store).at(Duration::from_secs(NOW + 20));
    assert_eq!(status(&run(&p, later)), 401);
}
