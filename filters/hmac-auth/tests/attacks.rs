//! Attack corpus for `hmac-auth` (issue 11), through the public API only: `configure` +
//! `on_request_headers`/`on_request_body` with a `FakeHost`, requests signed with the crate's own client
//! helpers (`sign`, `body_digest`, `http_date`). Every tampered, replayed, stale or downgraded request must
//! get the documented 401 with its message and `WWW-Authenticate` challenge.

// Integration tests link the crate with its proxy-wasm exports (`export_policy!`, which defines
// `_initialize`), which the wasm32-wasip1 test runner refuses; the unit tests in src/ cover wasm32.
#![cfg(not(target_arch = "wasm32"))]

use portcullis_common::testing::{FakeHost, SharedMemoryStore};
use portcullis_common::{Decision, Exchange, Policy};
use portcullis_hmac_auth::policy::HmacState;
use portcullis_hmac_auth::{
    body_digest, http_date, sign, Algorithm, HmacAuthPolicy, SigningRequest,
};
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

/// The gateway clock: 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600;
/// The default `clock_skew` (300 s).
const SKEW: u64 = 300;
const SECRET: &[u8] = b"alice-secret";

const MSG: &str = "HMAC signature cannot be verified";

fn policy(extra: Value) -> HmacAuthPolicy {
    let mut cfg = json!({"credentials": [
        {"username": "alice", "secret": "alice-secret"},
        {"username": "bob", "secret": "bob-secret"}
    ]});
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    HmacAuthPolicy::configure(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{cfg}: {e}"))
}

fn date(secs: u64) -> String {
    http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A request to sign: method, path and headers (in the order they are sent).
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
}

fn req(nonce: &str) -> Req {
    Req {
        method: "GET",
        path: "/orders?id=7",
        headers: vec![("date".into(), date(NOW)), ("x-nonce".into(), nonce.into())],
    }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `Authorization` for this request by `user` with `secret`, signing `names` in that order.
    fn sign_as(&self, user: &str, secret: &[u8], algorithm: Algorithm, names: &[&str]) -> String {
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
        sign(user, secret, algorithm, names, &r).unwrap()
    }

    fn sign(&self) -> String {
        self.sign_as(
            "alice",
            SECRET,
            Algorithm::HmacSha256,
            &["@request-target", "date", "x-nonce"],
        )
    }

    /// The request as the gateway sees it (maybe another method/path than signed), with `authorization`.
    fn host(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        store: &SharedMemoryStore,
    ) -> FakeHost {
        let mut h = FakeHost::request(method, path)
            .with_store(store)
            .at(Duration::from_secs(NOW))
            .with_header("authorization", authorization);
        for (n, v) in &self.headers {
            h = h.with_header(n, v);
        }
        h
    }

    fn sent(&self, authorization: &str, store: &SharedMemoryStore) -> FakeHost {
        self.host(self.method, self.path, authorization, store)
    }
}

fn headers(p: &HmacAuthPolicy, host: &FakeHost) -> (Decision, HmacState, Exchange) {
    let mut state = HmacState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    let d = p.on_request_headers(&mut state, &mut ex);
    (d, state, ex)
}

fn run(p: &HmacAuthPolicy, host: &FakeHost) -> Decision {
    headers(p, host).0
}

/// Asserts a 401 whose JSON message contains `text`, with the `hmac` challenge.
fn assert_401(case: &str, d: &Decision, text: &str) {
    let Decision::Respond(r) = d else {
        panic!("{case}: expected a 401, got {d:?}");
    };
    assert_eq!(r.status, 401, "{case}");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(text),
        "{case}: want {text:?} in {message:?}"
    );
    let challenge = r.header("www-authenticate").unwrap_or_default();
    // the challenge names what a signature must cover: at least the date and the nonce
    assert!(
        challenge.starts_with("hmac realm=\"portcullis\", headers=\"")
            && challenge.contains("date")
            && challenge.contains("x-nonce"),
        "{case}: {challenge}"
    );
}

#[test]
fn a_replayed_request_is_refused_even_across_workers_and_with_a_fresh_signature() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-replay-1");
    let auth = r.sign();
    assert_eq!(run(&p, &r.sent(&auth, &store)), Decision::Continue);
    // the identical request again
    assert_401(
        "replay",
        &run(&p, &r.sent(&auth, &store)),
        "nonce already used",
    );
    // on another worker of the same VM (another policy instance, same shared data)
    let other = policy(json!({}));
    assert_401(
        "other worker",
        &run(&other, &r.sent(&auth, &store)),
        "nonce already used",
    );
    // re-signed by alice with a newer date, same nonce
    let mut fresh = req("nonce-replay-1");
    fresh.headers[0].1 = date(NOW + 1);
    let host = fresh.sent(&fresh.sign(), &store);
    host.state.borrow_mut().now = Duration::from_secs(NOW + 1);
    assert_401("fresh signature", &run(&p, &host), "nonce already used");
    // a second x-nonce line appended to the replay: the first value is the signed one and the nonce
    let host = r
        .clone()
        .header("x-nonce", "nonce-brand-new")
        .sent(&auth, &store);
    assert_401("extra nonce line", &run(&p, &host), "nonce already used");
    // a new nonce prepended (so the gateway reads it first): the signature no longer matches
    let mut prepended = r.clone();
    prepended
        .headers
        .insert(0, ("x-nonce".into(), "nonce-brand-new".into()));
    assert_401(
        "prepended nonce",
        &run(&p, &prepended.sent(&auth, &store)),
        MSG,
    );
    // nonces are per user: bob may use the same string
    let bob = r.sign_as(
        "bob",
        b"bob-secret",
        Algorithm::HmacSha256,
        &["@request-target", "date", "x-nonce"],
    );
    assert_eq!(run(&p, &r.sent(&bob, &store)), Decision::Continue);
    assert_401(
        "bob replay",
        &run(&p, &r.sent(&bob, &store)),
        "nonce already used",
    );
    // a failed request does not burn the nonce: an unsigned-date attempt, then the real one passes
    let r2 = req("nonce-not-burnt");
    let bad = r2.sign_as(
        "alice",
        b"wrong",
        Algorithm::HmacSha256,
        &["@request-target", "date", "x-nonce"],
    );
    assert_401("wrong key", &run(&p, &r2.sent(&bad, &store)), MSG);
    assert_eq!(run(&p, &r2.sent(&r2.sign(), &store)), Decision::Continue);
}

#[test]
fn the_clock_skew_edges_are_inclusive_and_one_second_beyond_is_refused() {
    // Documented: the date must be within clock_skew of the gateway clock, in either direction.
    let store = SharedMemoryStore::default();
    for (skew, cfg) in [
        (SKEW, json!({})),
        (1, json!({"clock_skew": "1s"})),
        (3600, json!({"clock_skew": "1h"})),
    ] {
        let p = policy(cfg);
        let cases = [
            (NOW - skew, true),
            (NOW + skew, true),
            (NOW - skew - 1, false),
            (NOW + skew + 1, false),
            (NOW, true),
        ];
        for (i, (at, ok)) in cases.into_iter().enumerate() {
            let mut r = req(&format!("nonce-skew-{skew}-{i}"));
            r.headers[0].1 = date(at);
            let d = run(&p, &r.sent(&r.sign(), &store));
            let case = format!("skew {skew}, date {at} (now {NOW})");
            if ok {
                assert_eq!(d, Decision::Continue, "{case}");
            } else {
                assert_401(&case, &d, "clock skew exceeded");
            }
        }
    }
    // far past and far future, and x-date (which wins over date) out of range
    let p = policy(json!({}));
    for at in [0, 1, NOW - 86_400, NOW + 86_400, 253_402_300_799] {
        let mut r = req(&format!("nonce-far-{at}"));
        r.headers[0].1 = date(at);
        assert_401(
            "far",
            &run(&p, &r.sent(&r.sign(), &store)),
            "clock skew exceeded",
        );
    }
    let r = req("nonce-xdate-1").header("x-date", &date(NOW - SKEW - 1));
    let auth = r.sign_as(
        "alice",
        SECRET,
        Algorithm::HmacSha256,
        &["@request-target", "x-date", "date", "x-nonce"],
    );
    assert_401(
        "x-date",
        &run(&p, &r.sent(&auth, &store)),
        "clock skew exceeded",
    );
    // a fresh unsigned x-date cannot refresh a stale signed date
    let mut stale = req("nonce-xdate-2");
    stale.headers[0].1 = date(NOW - SKEW - 10);
    let auth = stale.sign();
    let host = stale.header("x-date", &date(NOW)).sent(&auth, &store);
    assert_401(
        "unsigned x-date",
        &run(&p, &host),
        "the date header must be signed",
    );
}

#[test]
fn signing_the_headers_in_another_order_than_listed_is_refused() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-order-1");
    let signed = r.sign();
    // same names, same signature, another list order in the header
    for order in [
        "date @request-target x-nonce",
        "x-nonce date @request-target",
        "@request-target x-nonce date",
    ] {
        let tampered = signed.replace("@request-target date x-nonce", order);
        assert_ne!(tampered, signed);
        assert_401(order, &run(&p, &r.sent(&tampered, &store)), MSG);
    }
    // a name listed twice or dropped
    for list in [
        "@request-target date x-nonce x-nonce",
        "@request-target date date x-nonce",
        "date x-nonce",
    ] {
        let tampered = signed.replace("@request-target date x-nonce", list);
        assert_401(list, &run(&p, &r.sent(&tampered, &store)), MSG);
    }
    // the request's header lines in another order do not matter (only the listed order does)
    let mut reordered = r.clone();
    reordered.headers.reverse();
    assert_eq!(
        run(&p, &reordered.sent(&signed, &store)),
        Decision::Continue
    );
    // signed in a different order than the client lists: alice signed date-first, lists target-first
    let r2 = req("nonce-order-2");
    let date_first = r2.sign_as(
        "alice",
        SECRET,
        Algorithm::HmacSha256,
        &["date", "@request-target", "x-nonce"],
    );
    let listed = date_first.replace(
        "date @request-target x-nonce",
        "@request-target date x-nonce",
    );
    assert_401("relisted", &run(&p, &r2.sent(&listed, &store)), MSG);
    // …while the honest date-first header passes (same nonce: not burnt by the failure)
    assert_eq!(run(&p, &r2.sent(&date_first, &store)), Decision::Continue);
}

#[test]
fn a_downgrade_to_sha1_is_refused_unless_enabled() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let names = ["@request-target", "date", "x-nonce"];
    let r = req("nonce-sha1-1");
    let sha1 = r.sign_as("alice", SECRET, Algorithm::HmacSha1, &names);
    assert!(sha1.contains("algorithm=\"hmac-sha1\""));
    assert_401(
        "sha1",
        &run(&p, &r.sent(&sha1, &store)),
        "algorithm not allowed",
    );
    // other spellings of a weak or unknown algorithm
    let sha256 = r.sign();
    for alg in [
        "HMAC-SHA1",
        "Hmac-Sha1",
        "hmac-md5",
        "hmac-sha224",
        "none",
        "",
        "sha256",
        "hs256",
    ] {
        let tampered = sha256.replace("algorithm=\"hmac-sha256\"", &format!("algorithm=\"{alg}\""));
        assert_401(
            alg,
            &run(&p, &r.sent(&tampered, &store)),
            "algorithm not allowed",
        );
    }
    // the algorithm label swapped to another enabled one: the MAC does not match
    let relabelled = sha256.replace("hmac-sha256", "hmac-sha512");
    assert_401("relabelled", &run(&p, &r.sent(&relabelled, &store)), MSG);
    // only a listed algorithm set restricts further: sha512-only refuses sha256
    let strict = policy(json!({"algorithms": ["hmac-sha512"]}));
    assert_401(
        "not listed",
        &run(&strict, &r.sent(&sha256, &store)),
        "algorithm not allowed",
    );
    // the refusals above are the configuration's: with sha1 listed, the same sha1 request passes
    let legacy = policy(json!({"algorithms": ["hmac-sha1", "hmac-sha256"]}));
    assert_eq!(run(&legacy, &r.sent(&sha1, &store)), Decision::Continue);
}

#[test]
fn a_signature_for_another_method_or_path_is_refused() {
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let r = req("nonce-target-1");
    let auth = r.sign();
    let elsewhere: [(&str, &str); 9] = [
        ("POST", "/orders?id=7"),
        ("DELETE", "/orders?id=7"),
        ("get", "/orders?id=7x"),
        ("GET", "/orders?id=8"),
        ("GET", "/orders"),
        ("GET", "/orders?id=7&admin=1"),
        ("GET", "/Orders?id=7"),
        ("GET", "/orders/?id=7"),
        ("GET", "/admin/../orders?id=7"),
    ];
    for (method, path) in elsewhere {
        let d = run(&p, &r.host(method, path, &auth, &store));
        assert_401(&format!("{method} {path}"), &d, MSG);
    }
    // the original target still passes (nothing above burnt the nonce)
    assert_eq!(run(&p, &r.sent(&auth, &store)), Decision::Continue);
    // with @request-target not signed but enforced, the signature cannot be moved either
    let enforced = policy(json!({"enforce_headers": ["@request-target"]}));
    let r2 = req("nonce-target-2");
    let no_target = r2.sign_as("alice", SECRET, Algorithm::HmacSha256, &["date", "x-nonce"]);
    assert_401(
        "target not signed",
        &run(&enforced, &r2.sent(&no_target, &store)),
        "a required header is not signed",
    );
}

/// Headers then the whole body in `chunks` pieces (`Pause` buffers, as the hosts do).
fn run_body(p: &HmacAuthPolicy, host: &FakeHost, body: &[u8], chunks: usize) -> Decision {
    host.state.borrow_mut().request_body = body.to_vec();
    let (d, mut state, mut ex) = headers(p, host);
    if d != Decision::Continue {
        return d;
    }
    let step = body.len().div_ceil(chunks.max(1)).max(1);
    let mut size = 0;
    let mut last = Decision::Continue;
    while size < body.len() {
        size = (size + step).min(body.len());
        ex.new_callback();
        last = p.on_request_body(&mut state, &mut ex, size, size == body.len());
        if size < body.len() && last != Decision::Pause {
            return last;
        }
    }
    last
}

#[test]
fn a_body_that_does_not_match_the_signed_digest_is_refused() {
    let p = policy(json!({"validate_request_body": true, "max_body_bytes": 1024}));
    let store = SharedMemoryStore::default();
    let names = ["@request-target", "date", "x-nonce", "digest"];
    let signed_body = br#"{"amount": 10}"#;
    let post = |nonce: &str, body: &[u8]| {
        let mut r = req(nonce).header("digest", &body_digest(body));
        r.method = "POST";
        r.header("content-length", &body.len().to_string())
    };
    // baseline: the signed body passes, in one piece and in chunks
    for (i, chunks) in [1, 3].into_iter().enumerate() {
        let r = post(&format!("nonce-body-ok-{i}"), signed_body);
        let auth = r.sign_as("alice", SECRET, Algorithm::HmacSha256, &names);
        assert_eq!(
            run_body(&p, &r.sent(&auth, &store), signed_body, chunks),
            Decision::Continue
        );
    }
    // another body under the signed digest, whole or split at every chunk count
    for (i, (body, chunks)) in [
        (&br#"{"amount": 99}"#[..], 1),
        (&br#"{"amount": 10} "#[..], 2),
        (&br#"{"amount": 1}"#[..], 5),
        (&b""[..], 1),
    ]
    .into_iter()
    .enumerate()
    {
        let r = post(&format!("nonce-body-bad-{i}"), signed_body);
        let auth = r.sign_as("alice", SECRET, Algorithm::HmacSha256, &names);
        let host = r.sent(&auth, &store);
        if body.is_empty() {
            host.state
                .borrow_mut()
                .request_headers
                .retain(|(n, _)| n != "content-length");
            let d = run(&p, &host);
            assert_401("empty body", &d, "body digest mismatch");
        } else {
            let d = run_body(&p, &host, body, chunks);
            assert_401(&format!("{body:?}"), &d, "body digest mismatch");
        }
    }
    // the digest header swapped for the new body's: the signature covers the old one
    let evil = br#"{"amount": 99999}"#;
    let r = post("nonce-body-swap", signed_body);
    let auth = r.sign_as("alice", SECRET, Algorithm::HmacSha256, &names);
    let mut swapped = r.clone();
    for (n, v) in &mut swapped.headers {
        if n == "digest" {
            *v = body_digest(evil);
        }
    }
    assert_401(
        "swapped digest",
        &run_body(&p, &swapped.sent(&auth, &store), evil, 1),
        MSG,
    );
    // an unsigned digest is refused before the body
    let r = post("nonce-body-unsigned", evil);
    let auth = r.sign();
    assert_401(
        "unsigned digest",
        &run(&p, &r.sent(&auth, &store)),
        "a required header is not signed",
    );
    // a malformed digest value, signed
    let mut r = req("nonce-body-garbage").header("digest", "SHA-256=not base64!");
    r.method = "POST";
    let auth = r.sign_as("alice", SECRET, Algorithm::HmacSha256, &names);
    assert_401(
        "garbage digest",
        &run(&p, &r.sent(&auth, &store)),
        "invalid digest header",
    );
}

#[test]
fn a_replay_at_the_far_edge_of_the_date_window_is_still_refused() {
    // A request dated at the future edge (now + skew) stays acceptable by date until now + 2·skew; its
    // nonce must be remembered at least that long, to the microsecond.
    let p = policy(json!({}));
    let store = SharedMemoryStore::default();
    let mut r = req("nonce-window-edge");
    r.headers[0].1 = date(NOW + SKEW);
    let auth = r.sign();
    assert_eq!(run(&p, &r.sent(&auth, &store)), Decision::Continue);
    for at in [
        Duration::from_secs(NOW + SKEW),
        Duration::from_secs(NOW + 2 * SKEW),
        Duration::from_secs(NOW + 2 * SKEW) + Duration::from_micros(999_999),
    ] {
        let host = r.sent(&auth, &store);
        host.state.borrow_mut().now = at;
        assert_401(
            &format!("replay at {at:?}"),
            &run(&p, &host),
            "nonce already used",
        );
    }
    // one second later the date check refuses it instead
    let host = r.sent(&auth, &store);
    host.state.borrow_mut().now = Duration::from_secs(NOW + 2 * SKEW + 1);
    assert_401("after the window", &run(&p, &host), "clock skew exceeded");
    // and a request dated at the past edge (now − skew), replayed a second later, fails by date
    let mut old = req("nonce-window-past");
    old.headers[0].1 = date(NOW - SKEW);
    let auth = old.sign();
    assert_eq!(run(&p, &old.sent(&auth, &store)), Decision::Continue);
    assert_401(
        "same second",
        &run(&p, &old.sent(&auth, &store)),
        "nonce already used",
    );
    let host = old.sent(&auth, &store);
    host.state.borrow_mut().now = Duration::from_secs(NOW + 1);
    assert_401("a second later", &run(&p, &host), "clock skew exceeded");
}
