//! `portcullis_jwt_auth.wasm` in a real Envoy: valid tokens reach the upstream with claim headers, bad ones get RFC 6750
//! challenges, bad configs keep Envoy from starting, and remote JWKS (served here by an in-process server) are
//! fetched before the first request is decided, re-fetched on an unknown `kid`, and kept when the server fails.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use portcullis_e2e::host::is_kong_engine;
use portcullis_e2e::{json, Gateway, Reply, Response, Upstream};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

const ISS: &str = "https://id.portcullis.test/";
const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-0123456789";

fn claims(sub: &str, aud: &str, valid_for_secs: u64) -> JWTClaims<Value> {
    Claims::with_custom_claims(
        json!({"scope": "orders:read profile", "tenant": {"id": "acme"}}),
        Duration::from_secs(valid_for_secs),
    )
    .with_issuer(ISS)
    .with_subject(sub)
    .with_audience(aud)
}

fn public_jwk(key: &ES256KeyPair, kid: &str) -> Value {
    let mut v: Value = serde_json::from_str(&key.public_key().to_jwk()).unwrap();
    v["kid"] = json!(kid);
    v
}

fn es256(kid: &str) -> ES256KeyPair {
    ES256KeyPair::generate().with_key_id(kid)
}

fn bearer(gw: &Gateway, token: &str) -> Response {
    gw.get("/orders")
        .header("authorization", &format!("Bearer {token}"))
        .send()
}

fn assert_challenge(resp: &Response, status: u16, contains: &str) {
    resp.assert_status(status);
    let c = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        c.starts_with("Bearer realm=\"orders\"") && c.contains(contains),
        "challenge {c:?} should contain {contains:?}"
    );
    assert_eq!(resp.json()["status"], status);
}

fn inline_gateway(key: &ES256KeyPair) -> Gateway {
    Gateway::new()
        .filter(
            "jwt-auth",
            json!({
                "realm": "orders",
                "providers": [
                    {"name": "idp", "issuer": ISS, "audiences": ["orders-api"], "algorithms": ["ES256"],
                     "jwks": {"keys": [public_jwk(key, "k1")]},
                     "required_claims": [{"claim": "scope", "values": ["orders:read"]}]},
                    {"name": "internal", "issuer": "internal", "algorithms": ["HS256"], "secret": SECRET}
                ],
                "claims_to_headers": [{"claim": "sub", "header": "x-user"},
                                      {"claim": "tenant.id", "header": "x-tenant"}]
            }),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_valid_token_reaches_the_upstream_as_claim_headers_without_the_token() {
    let key = es256("k1");
    let gw = inline_gateway(&key);
    let token = key.sign(claims("alice", "orders-api", 600)).unwrap();
    bearer(&gw, &token).assert_status(200);
    gw.upstream
        .last()
        .assert_header("x-user", "alice")
        .assert_header("x-tenant", "acme")
        .assert_no_header("authorization");

    // the HS256 provider, selected by its issuer
    let hs = HS256Key::from_bytes(SECRET.as_bytes());
    let token = hs
        .authenticate(
            Claims::create(Duration::from_secs(60))
                .with_issuer("internal")
                .with_subject("batch"),
        )
        .unwrap();
    bearer(&gw, &token).assert_status(200);
    gw.upstream.last().assert_header("x-user", "batch");
    // forged claim headers never pass: the header is rewritten from the verified token
    gw.get("/orders")
        .header("authorization", &format!("Bearer {token}"))
        .header("x-tenant", "evil")
        .send()
        .assert_status(200);
    gw.upstream.last().assert_no_header("x-tenant");
    assert!(
        gw.proxy
            .stat("wasmcustom.portcullis_jwt_auth_allowed_total")
            >= Some(3)
    );
}

/// A token sent as a query parameter is verified and taken out of the request target. Envoy forwards the new
/// `:path`; Kong's engine does not: ngx_wasm_module's `:path` setter changes nginx's `$uri`/`$args` only, and
/// `proxy_pass` without a URI part sends the original target (kong/README.md, "Kong's engine, measured") — a
/// known gap, asserted here so that it shows when it closes.
#[test]
fn a_query_token_is_verified_and_taken_out_of_the_target_where_the_host_can() {
    let key = es256("k1");
    let gw = inline_gateway(&key);
    let token = key.sign(claims("alice", "orders-api", 600)).unwrap();
    gw.get(&format!("/orders?id=7&access_token={token}"))
        .send()
        .assert_status(200);
    let seen = gw.upstream.last();
    seen.assert_header("x-user", "alice");
    if portcullis_e2e::host::is_kong_engine() {
        assert_eq!(seen.path, format!("/orders?id=7&access_token={token}"));
    } else {
        assert_eq!(seen.path, "/orders?id=7");
    }
}

#[test]
fn bad_tokens_get_rfc6750_challenges_and_never_reach_the_upstream() {
    let key = es256("k1");
    let gw = inline_gateway(&key);
    let other = es256("k1");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({"iss": ISS, "sub": "root", "aud": "orders-api", "exp": 4_000_000_000u64})
                .to_string()
        )
    );
    let expired = {
        let mut c = claims("alice", "orders-api", 600);
        c.expires_at = Some(Clock::now_since_epoch() - Duration::from_secs(3600));
        key.sign(c).unwrap()
    };
    let no_scope = key
        .sign(
            Claims::create(Duration::from_secs(600))
                .with_issuer(ISS)
                .with_audience("orders-api"),
        )
        .unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired",
            expired,
            401,
            "error=\"invalid_token\", error_description=\"the token has expired\"",
        ),
        (
            "wrong audience",
            key.sign(claims("alice", "billing", 600)).unwrap(),
            401,
            "audience",
        ),
        (
            "wrong signature",
            other.sign(claims("alice", "orders-api", 600)).unwrap(),
            401,
            "signature is invalid",
        ),
        (
            "alg none",
            unsigned,
            401,
            "unsigned tokens are not accepted",
        ),
        ("garbage", "abc".into(), 401, "error=\"invalid_token\""),
        (
            "missing scope",
            no_scope,
            403,
            "error=\"insufficient_scope\"",
        ),
    ];
    for (name, token, status, text) in cases {
        let resp = bearer(&gw, &token);
        assert_eq!(resp.status, status, "{name}: {}", resp.text());
        assert_challenge(&resp, status, text);
    }
    // two Authorization headers (one valid): refused, whichever the proxy would have picked
    let valid = key.sign(claims("alice", "orders-api", 600)).unwrap();
    let resp = gw
        .get("/orders")
        .header("authorization", &format!("Bearer {valid}"))
        .header("authorization", "Bearer other")
        .send();
    if is_kong_engine() {
        // nginx refuses a repeated Authorization line itself while reading the request headers, before any
        // filter runs: its own 400, without a challenge (nginx src/http/ngx_http_request.c: Authorization is
        // processed by ngx_http_process_unique_header_line, "client sent duplicate header line").
        resp.assert_status(400);
        assert_eq!(resp.header("www-authenticate"), None);
        assert!(
            gw.proxy
                .logs()
                .contains("client sent duplicate header line: \"authorization: Bearer other\""),
            "{}",
            gw.proxy.logs()
        );
    } else {
        assert_challenge(&resp, 401, "error=\"invalid_request\"");
    }
    // a token in the header and another in the query
    let resp = gw
        .get(&format!("/orders?access_token={valid}"))
        .header("authorization", &format!("Bearer {valid}"))
        .send();
    assert_challenge(&resp, 401, "several tokens");
    // no token: a bare challenge (RFC 6750 §3.1)
    let resp = gw.get("/orders").send();
    resp.assert_status(401)
        .assert_header("www-authenticate", "Bearer realm=\"orders\"");
    assert_eq!(
        gw.upstream.count(),
        0,
        "no rejected request reached the upstream"
    );
    assert_eq!(
        gw.proxy
            .stat("wasmcustom.portcullis_jwt_auth_denied_alg_none_total"),
        Some(1)
    );
    assert_eq!(
        gw.proxy
            .stat("wasmcustom.portcullis_jwt_auth_denied_expired_total"),
        Some(1)
    );
    for line in gw.proxy.filter_log("jwt-auth") {
        assert!(
            !line.message.contains("eyJ"),
            "tokens must never be logged: {line:?}"
        );
    }
    let logs = gw.proxy.logs();
    if is_kong_engine() {
        // nginx's own text in its error log holds tokens the client sent: the duplicate-header notice quotes
        // both lines, and every line logged while a request runs ends with its request line
        // (`, client: …, request: "GET /orders?access_token=…"`, ngx_http_log_error_handler in nginx
        // src/http/ngx_http_request.c). Nothing before that context may hold one.
        for line in logs.lines().filter(|l| l.contains("eyJ")) {
            let before_context = line.split(", client: ").next().unwrap_or(line);
            assert!(
                (line.contains("client sent duplicate header line")
                    && !line.contains("[jwt-auth]"))
                    || !before_context.contains("eyJ"),
                "tokens must never be logged: {line}"
            );
        }
    } else {
        assert!(!logs.contains("eyJ"), "tokens must never be logged");
    }
}

#[test]
fn invalid_configs_keep_envoy_from_starting_and_name_the_field() {
    let cases = [
        (
            json!({"providers": []}),
            "providers: at least one provider is required",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": ISS, "algorithms": ["XS256"], "secret": SECRET}]}),
            "providers[0].algorithms[0]: unknown variant `XS256`",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": ISS, "algorithms": ["HS256"], "secret": "short"}]}),
            "providers[0].secret: HS256 needs a secret of at least 32 bytes, got 5",
        ),
        (
            json!({"providers": [{"name": "a", "issuer": ISS, "algorithms": ["ES256"], "jwks": {"keys": 1}}]}),
            "providers[0].jwks: must be a JSON object with a \"keys\" array",
        ),
    ];
    for (config, want) in cases {
        let err = match Gateway::new().filter("jwt-auth", config.clone()).start() {
            Ok(_) => panic!("envoy accepted {config}"),
            Err(e) => e,
        };
        assert!(
            err.log()
                .contains(&format!("[jwt-auth] invalid configuration: {want}")),
            "want {want:?}; envoy said:\n{}",
            err.log()
        );
    }
}

/// A JWKS server whose document (and failure mode) the test changes while Envoy runs.
struct JwksServer {
    upstream: Upstream,
    doc: Arc<Mutex<Value>>,
    fail: Arc<Mutex<bool>>,
}

impl JwksServer {
    fn start(doc: Value, delay: StdDuration) -> JwksServer {
        let doc = Arc::new(Mutex::new(doc));
        let fail = Arc::new(Mutex::new(false));
        let (d, f) = (doc.clone(), fail.clone());
        let upstream = Upstream::start(move |_| {
            std::thread::sleep(delay);
            if *f.lock().unwrap() {
                return Reply::status(503);
            }
            Reply::json(200, &d.lock().unwrap())
        });
        JwksServer {
            upstream,
            doc,
            fail,
        }
    }
}

fn remote_gateway(jwks: &JwksServer, cache_duration: &str) -> Gateway {
    remote_gateway_with(jwks, cache_duration, 1)
}

fn remote_gateway_with(jwks: &JwksServer, cache_duration: &str, workers: usize) -> Gateway {
    Gateway::new()
        .concurrency(workers)
        .cluster("jwks", jwks.upstream.addr)
        .filter(
            "jwt-auth",
            json!({
                "realm": "orders",
                "providers": [{"name": "remote", "issuer": ISS, "audiences": ["orders-api"],
                    "algorithms": ["ES256"],
                    "jwks_uri": {"cluster": "jwks", "url": "http://jwks.test/.well-known/jwks.json",
                                 "timeout": "3s", "cache_duration": cache_duration, "refetch_interval": "1s"}}],
                "claims_to_headers": [{"claim": "sub", "header": "x-user"}]
            }),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_first_request_waits_for_the_remote_jwks_instead_of_failing() {
    let key = es256("k1");
    // the JWKS server is slow: the request arrives while the first fetch is still in flight
    let jwks = JwksServer::start(
        json!({"keys": [public_jwk(&key, "k1")]}),
        StdDuration::from_millis(800),
    );
    let gw = remote_gateway(&jwks, "10m");
    let token = key.sign(claims("alice", "orders-api", 600)).unwrap();
    let started = Instant::now();
    let resp = bearer(&gw, &token);
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), gw.proxy.logs());
    gw.upstream.last().assert_header("x-user", "alice");
    assert!(
        started.elapsed() < StdDuration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let fetched = jwks.upstream.requests();
    // Envoy configures the plugin on the main thread too: at most one start-up fetch there and one per worker.
    // Kong's engine cannot resume a request from the root context, so a request that finds no keys fetches
    // them itself (the worker's root then waits for that answer): one fetch, or two if the root's had started.
    assert!(
        (1..=2).contains(&fetched.len()),
        "{} fetches",
        fetched.len()
    );
    assert_eq!(fetched[0].path, "/.well-known/jwks.json");
    assert_eq!(fetched[0].header("host"), Some("jwks.test"));
    assert!(
        gw.proxy
            .stat("wasmcustom.portcullis_jwt_auth_jwks_fetch_success_total")
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn rotated_keys_are_fetched_on_an_unknown_kid() {
    let old = es256("k1");
    let jwks = JwksServer::start(json!({"keys": [public_jwk(&old, "k1")]}), StdDuration::ZERO);
    let gw = remote_gateway(&jwks, "10m");
    bearer(&gw, &old.sign(claims("alice", "orders-api", 600)).unwrap()).assert_status(200);
    let fetches = jwks.upstream.count();

    // the issuer rotates: new key k2 published, tokens signed with it
    let new = es256("k2");
    *jwks.doc.lock().unwrap() = json!({"keys": [public_jwk(&old, "k1"), public_jwk(&new, "k2")]});
    let resp = bearer(&gw, &new.sign(claims("bob", "orders-api", 600)).unwrap());
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), gw.proxy.logs());
    gw.upstream.last().assert_header("x-user", "bob");
    assert_eq!(jwks.upstream.count(), fetches + 1, "exactly one re-fetch");

    // a kid nobody publishes: rejected, and re-fetches stay rate-limited
    let stranger = es256("k9");
    for _ in 0..5 {
        let resp = bearer(
            &gw,
            &stranger.sign(claims("eve", "orders-api", 600)).unwrap(),
        );
        assert_challenge(&resp, 401, "no key matches");
    }
    assert!(
        jwks.upstream.count() <= fetches + 2,
        "{} fetches",
        jwks.upstream.count()
    );
}

#[test]
fn last_good_keys_keep_working_while_the_jwks_server_is_down() {
    let key = es256("k1");
    let jwks = JwksServer::start(json!({"keys": [public_jwk(&key, "k1")]}), StdDuration::ZERO);
    let gw = remote_gateway(&jwks, "1s");
    let token = key.sign(claims("alice", "orders-api", 600)).unwrap();
    bearer(&gw, &token).assert_status(200);
    *jwks.fail.lock().unwrap() = true;
    // refreshes every second now fail
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while gw
        .proxy
        .stat("wasmcustom.portcullis_jwt_auth_jwks_fetch_failure_total")
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "no failed refresh observed");
        std::thread::sleep(StdDuration::from_millis(200));
    }
    let fresh = key.sign(claims("carol", "orders-api", 600)).unwrap();
    bearer(&gw, &fresh).assert_status(200);
    gw.upstream.last().assert_header("x-user", "carol");
    assert!(gw.proxy.logs().contains("keeping the last good keys"));
}

#[test]
fn requests_are_denied_once_the_first_fetch_cannot_complete_in_time() {
    let key = es256("k1");
    let jwks = JwksServer::start(json!({"keys": []}), StdDuration::ZERO);
    *jwks.fail.lock().unwrap() = true;
    let gw = Gateway::new()
        .cluster("jwks", jwks.upstream.addr)
        .filter(
            "jwt-auth",
            json!({"realm": "orders", "providers": [{"name": "remote", "issuer": ISS, "algorithms": ["ES256"],
                "jwks_uri": {"cluster": "jwks", "url": "http://jwks.test/keys", "timeout": "1s"}}]}),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let resp = bearer(&gw, &key.sign(claims("alice", "orders-api", 600)).unwrap());
    assert_challenge(&resp, 401, "the signing keys are not available");
    // the request waited at most the fetch timeout plus a second, and never hung
    assert!(
        started.elapsed() < StdDuration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.upstream.count(), 0);
    assert!(jwks.upstream.count() >= 1, "the filter tried to fetch");
}

#[test]
fn every_worker_verifies_with_the_remote_jwks() {
    let key = es256("k1");
    let jwks = JwksServer::start(json!({"keys": [public_jwk(&key, "k1")]}), StdDuration::ZERO);
    let gw = remote_gateway_with(&jwks, "10m", 3);
    let token = key.sign(claims("alice", "orders-api", 600)).unwrap();
    for _ in 0..12 {
        bearer(&gw, &token).assert_status(200);
    }
    assert_eq!(gw.upstream.count(), 12);
    // at most one start-up fetch per worker plus Envoy's main thread (on Kong's engine, a worker's first
    // request fetches instead of its root if it comes first); none per request
    assert!(
        jwks.upstream.count() <= 4,
        "{} fetches",
        jwks.upstream.count()
    );
}

#[test]
fn a_client_leaving_while_its_request_waits_does_not_disturb_the_others() {
    use std::io::Write;
    let key = es256("k1");
    let jwks = JwksServer::start(
        json!({"keys": [public_jwk(&key, "k1")]}),
        StdDuration::from_millis(1500),
    );
    let gw = remote_gateway(&jwks, "10m");
    let token = key.sign(claims("alice", "orders-api", 600)).unwrap();
    // this client sends a request (paused: the JWKS is still in flight) and hangs up
    let request = gw
        .get("/orders")
        .header("authorization", &format!("Bearer {token}"));
    let mut gone = std::net::TcpStream::connect(gw.proxy.listener()).unwrap();
    gone.write_all(&request.to_bytes()).unwrap();
    std::thread::sleep(StdDuration::from_millis(200));
    drop(gone);
    // a second client waits for the keys and gets through; the abandoned request never reaches the upstream
    bearer(&gw, &token).assert_status(200);
    std::thread::sleep(StdDuration::from_millis(300));
    assert_eq!(gw.upstream.count(), 1);
    assert!(!gw.proxy.logs().contains("panic"), "{}", gw.proxy.logs());
}
