//! Unit tests of the policy with tokens minted here by jwt-simple (every algorithm, every claim rule, every
//! attack of the issue), and of the remote JWKS life cycle through `FakeRootHost`.

use super::*;
use crate::keys::Algorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::{
    Claims, ECDSAP256KeyPairLike, ECDSAP384KeyPairLike, ES256KeyPair, ES384KeyPair, Ed25519KeyPair,
    EdDSAKeyPairLike, HS256Key, HS384Key, HS512Key, MACLike, PS256KeyPair, PS384KeyPair,
    PS512KeyPair, RS256KeyPair, RS384KeyPair, RS512KeyPair, RSAKeyPairLike,
};
use portcullis_common::testing::{FakeHost, FakeRootHost, SharedMemoryStore};
use serde_json::json;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://id.example.test/";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RSA_PEM: &str = include_str!("../../fixtures/rsa2048.pk8.pem");
const RSA_PEM_B: &str = include_str!("../../fixtures/rsa2048-b.pk8.pem");

struct Signers {
    es256: ES256KeyPair,
    es384: ES384KeyPair,
    ed: Ed25519KeyPair,
}

thread_local! {
    static SIGNERS: Signers = Signers {
        es256: ES256KeyPair::generate(),
        es384: ES384KeyPair::generate(),
        ed: Ed25519KeyPair::generate(),
    };
}

fn claims_for(v: Value) -> jwt_simple::prelude::JWTClaims<Value> {
    let mut c = Claims::with_custom_claims(v, jwt_simple::prelude::Duration::from_secs(1));
    c.issued_at = None;
    c.expires_at = None;
    c.invalid_before = None;
    c
}

/// A token for `alg`, signed with the test key of that algorithm (kid `k-<alg>`), carrying exactly `claims`.
fn mint(alg: Algorithm, claims: Value) -> String {
    mint_with(alg, claims, RSA_PEM, true)
}

fn mint_with(alg: Algorithm, claims: Value, pem: &str, kid: bool) -> String {
    let c = claims_for(claims);
    let kid_name = format!("k-{}", alg.name());
    let k = |s: &str| if kid { Some(s.to_string()) } else { None };
    let r = match alg {
        Algorithm::HS256 => {
            with_kid(HS256Key::from_bytes(SECRET.as_bytes()), k(&kid_name)).authenticate(c)
        }
        Algorithm::HS384 => HS384Key::from_bytes(SECRET.as_bytes()).authenticate(c),
        Algorithm::HS512 => HS512Key::from_bytes(SECRET.as_bytes()).authenticate(c),
        Algorithm::RS256 => rsa::<RS256KeyPair>(pem, k(&kid_name)).sign(c),
        Algorithm::RS384 => rsa::<RS384KeyPair>(pem, k(&kid_name)).sign(c),
        Algorithm::RS512 => rsa::<RS512KeyPair>(pem, k(&kid_name)).sign(c),
        Algorithm::PS256 => rsa::<PS256KeyPair>(pem, k(&kid_name)).sign(c),
        Algorithm::PS384 => rsa::<PS384KeyPair>(pem, k(&kid_name)).sign(c),
        Algorithm::PS512 => rsa::<PS512KeyPair>(pem, k(&kid_name)).sign(c),
        Algorithm::ES256 => SIGNERS.with(|s| {
            let mut kp = ES256KeyPair::from_bytes(&s.es256.to_bytes()).unwrap();
            if let Some(id) = k(&kid_name) {
                kp = kp.with_key_id(&id);
            }
            kp.sign(c)
        }),
        Algorithm::ES384 => SIGNERS.with(|s| {
            let mut kp = ES384KeyPair::from_bytes(&s.es384.to_bytes()).unwrap();
            if let Some(id) = k(&kid_name) {
                kp = kp.with_key_id(&id);
            }
            kp.sign(c)
        }),
        Algorithm::EdDSA => SIGNERS.with(|s| {
            let mut kp = Ed25519KeyPair::from_bytes(&s.ed.to_bytes()).unwrap();
            if let Some(id) = k(&kid_name) {
                kp = kp.with_key_id(&id);
            }
            kp.sign(c)
        }),
    };
    r.unwrap()
}

fn with_kid(mut key: HS256Key, kid: Option<String>) -> HS256Key {
    if let Some(k) = kid {
        key = key.with_key_id(&k);
    }
    key
}

trait FromPem: Sized {
    fn load(pem: &str) -> Self;
    fn kid(self, kid: &str) -> Self;
}
macro_rules! from_pem {
    ($($t:ty),*) => {$(
        impl FromPem for $t {
            fn load(pem: &str) -> Self { <$t>::from_pem(pem).unwrap() }
            fn kid(self, kid: &str) -> Self { self.with_key_id(kid) }
        }
    )*};
}
from_pem!(
    RS256KeyPair,
    RS384KeyPair,
    RS512KeyPair,
    PS256KeyPair,
    PS384KeyPair,
    PS512KeyPair
);

fn rsa<T: FromPem>(pem: &str, kid: Option<String>) -> T {
    let k = T::load(pem);
    match kid {
        Some(id) => k.kid(&id),
        None => k,
    }
}

/// The public JWK of the test key for `alg`, with `kid` `k-<alg>`.
fn jwk(alg: Algorithm) -> Value {
    jwk_from(alg, RSA_PEM)
}

fn jwk_from(alg: Algorithm, pem: &str) -> Value {
    let text = match alg {
        Algorithm::RS256 => RS256KeyPair::from_pem(pem).unwrap().public_key().to_jwk(),
        Algorithm::RS384 => RS384KeyPair::from_pem(pem).unwrap().public_key().to_jwk(),
        Algorithm::RS512 => RS512KeyPair::from_pem(pem).unwrap().public_key().to_jwk(),
        Algorithm::PS256 => PS256KeyPair::from_pem(pem).unwrap().public_key().to_jwk(),
        Algorithm::PS384 => PS384KeyPair::from_pem(pem).unwrap().public_key().to_jwk(),
        Algorithm::PS512 => PS512KeyPair::from_pem(pem).unwrap().public_key().to_jwk(),
        Algorithm::ES256 => SIGNERS.with(|s| s.es256.public_key().to_jwk()),
        Algorithm::ES384 => SIGNERS.with(|s| s.es384.public_key().to_jwk()),
        Algorithm::EdDSA => SIGNERS.with(|s| s.ed.public_key().to_jwk()),
        hs => {
            return json!({"kty": "oct", "alg": hs.name(), "kid": format!("k-{}", hs.name()),
                          "k": URL_SAFE_NO_PAD.encode(SECRET)})
        }
    };
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["kid"] = json!(format!("k-{}", alg.name()));
    v
}

fn good_claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "orders", "iat": NOW - 10, "exp": NOW + 600,
           "scope": "orders:read profile", "roles": ["admin", "dev"], "org": {"id": "acme", "tier": 3}})
}

fn jwks_provider(algs: &[Algorithm]) -> Value {
    let keys: Vec<Value> = algs.iter().map(|a| jwk(*a)).collect();
    let names: Vec<&str> = algs.iter().map(|a| a.name()).collect();
    json!({"name": "idp", "issuer": ISS, "audiences": ["orders"], "algorithms": names, "jwks": {"keys": keys}})
}

fn config(provider: Value, extra: Value) -> Value {
    let mut c = json!({"providers": [provider]});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn policy(cfg: &Value) -> JwtAuthPolicy {
    JwtAuthPolicy::configure(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn bearer(token: &str) -> FakeHost {
    FakeHost::request("GET", "/orders").with_header("authorization", &format!("Bearer {token}"))
}

fn run(p: &JwtAuthPolicy, host: &FakeHost) -> Decision {
    run_at(p, host, NOW)
}

fn run_at(p: &JwtAuthPolicy, host: &FakeHost, now: u64) -> Decision {
    host.state.borrow_mut().now = Duration::from_secs(now);
    let mut ex = Exchange::new(Box::new(host.clone()));
    p.on_request_headers(&mut RequestState::default(), &mut ex)
}

fn status(d: &Decision) -> u16 {
    match d {
        Decision::Continue => 200,
        Decision::Pause => 0,
        Decision::Respond(r) => r.status,
    }
}

fn challenge(d: &Decision) -> String {
    match d {
        Decision::Respond(r) => r.header("www-authenticate").unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// Runs `token` against `p` and returns (status, error_description or reason text).
fn check(p: &JwtAuthPolicy, token: &str) -> (u16, String) {
    let d = run(p, &bearer(token));
    (status(&d), challenge(&d))
}

#[test]
fn every_algorithm_verifies_its_own_tokens_and_passes_claims_upstream() {
    for alg in Algorithm::ALL {
        let provider = if alg.is_hmac() {
            json!({"name": "hs", "issuer": ISS, "algorithms": [alg.name()], "secret": SECRET})
        } else {
            jwks_provider(&[alg])
        };
        let p = policy(&config(
            provider,
            json!({"claims_to_headers": [{"claim": "sub", "header": "x-user"}]}),
        ));
        let host = bearer(&mint(alg, good_claims()));
        let d = run(&p, &host);
        assert_eq!(d, Decision::Continue, "{}: {}", alg.name(), challenge(&d));
        assert_eq!(
            host.header("x-user").as_deref(),
            Some("alice"),
            "{}",
            alg.name()
        );
        assert_eq!(
            host.header("authorization"),
            None,
            "the token is not forwarded by default"
        );
    }
}

#[test]
fn tokens_of_another_key_or_tampered_tokens_have_a_bad_signature() {
    let p = policy(&config(
        jwks_provider(&[Algorithm::RS256, Algorithm::ES256]),
        json!({}),
    ));
    let other = mint_with(Algorithm::RS256, good_claims(), RSA_PEM_B, true);
    assert_eq!(check(&p, &other).0, 401);
    assert!(
        check(&p, &other).1.contains("signature is invalid"),
        "{}",
        check(&p, &other).1
    );

    // payload swapped: the signature no longer covers it
    let t = mint(Algorithm::ES256, good_claims());
    let mut evil = good_claims();
    evil["sub"] = json!("root");
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(evil.to_string()),
        parts[2]
    );
    let (s, c) = check(&p, &forged);
    assert_eq!(s, 401);
    assert!(c.contains("error=\"invalid_token\""), "{c}");
    // truncated signature
    let (s, _) = check(&p, &t[..t.len() - 4]);
    assert_eq!(s, 401);
}

#[test]
fn claim_rules_decide_with_the_right_status_and_reason() {
    let provider = json!({"name": "idp", "issuer": ISS, "audiences": ["orders", "billing"],
        "subjects": ["alice", "bob"], "algorithms": ["HS256"], "secret": SECRET,
        "required_claims": [{"claim": "scope", "values": ["orders:read"]}, {"claim": "org.id", "values": ["acme"]}]});
    let p = policy(&config(provider, json!({"max_lifetime": "1h"})));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good_claims();
        f(&mut c);
        mint(Algorithm::HS256, c)
    };
    let n = NOW;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("valid", with(&|_| {}), 200, ""),
        (
            "expired",
            with(&|c| c["exp"] = json!(n - 61)),
            401,
            "has expired",
        ),
        (
            "expired within the skew",
            with(&|c| c["exp"] = json!(n - 30)),
            200,
            "",
        ),
        (
            "exp as a string",
            with(&|c| c["exp"] = json!("soon")),
            401,
            "malformed",
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            401,
            "no expiration",
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(n + 120)),
            401,
            "not valid yet",
        ),
        (
            "nbf within the skew",
            with(&|c| c["nbf"] = json!(n + 30)),
            200,
            "",
        ),
        (
            "iat in the future",
            with(&|c| c["iat"] = json!(n + 3600)),
            401,
            "not valid yet",
        ),
        (
            "lifetime over max",
            with(&|c| c["exp"] = json!(n + 7200)),
            401,
            "lifetime",
        ),
        (
            "other audience",
            with(&|c| c["aud"] = json!("admin")),
            401,
            "audience",
        ),
        (
            "audience in a list",
            with(&|c| c["aud"] = json!(["x", "billing"])),
            200,
            "",
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            401,
            "audience",
        ),
        (
            "other issuer",
            with(&|c| c["iss"] = json!("https://evil.test/")),
            401,
            "issuer",
        ),
        (
            "other subject",
            with(&|c| c["sub"] = json!("mallory")),
            401,
            "subject",
        ),
        (
            "scope missing the value",
            with(&|c| c["scope"] = json!("profile")),
            403,
            "insufficient_scope",
        ),
        (
            "scope as an array",
            with(&|c| c["scope"] = json!(["orders:read"])),
            200,
            "",
        ),
        (
            "nested claim mismatch",
            with(&|c| c["org"]["id"] = json!("globex")),
            403,
            "insufficient_scope",
        ),
        (
            "nested claim absent",
            with(&|c| c["org"] = json!("acme")),
            403,
            "insufficient_scope",
        ),
    ];
    for (name, token, want, text) in cases {
        let (s, c) = check(&p, &token);
        assert_eq!(s, want, "{name}: {c}");
        assert!(c.contains(text), "{name}: {c}");
        if want == 403 {
            assert!(
                c.starts_with("Bearer realm=\"portcullis\", error=\"insufficient_scope\""),
                "{c}"
            );
        }
    }
}

#[test]
fn expiry_is_optional_when_not_required() {
    let p = policy(&config(
        json!({"name": "idp", "issuer": ISS, "algorithms": ["HS256"], "secret": SECRET}),
        json!({"require_expiration": false}),
    ));
    let mut c = good_claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(check(&p, &mint(Algorithm::HS256, c)).0, 200);
}

/// An unsigned token: header `{"alg":"none"}`, empty signature.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A token with an arbitrary header, HMAC-signed with `key`.
fn hs256_with_header(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mac = hmac_sha256::HMAC::mac(signing_input.as_bytes(), key);
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

#[test]
fn known_jwt_attacks_are_rejected_with_their_reason() {
    // A provider trusting RS256 (JWKS) and, separately, HS256 with its own secret.
    let rsa_only = policy(&config(jwks_provider(&[Algorithm::RS256]), json!({})));
    let mixed = policy(&config(
        json!({"name": "mixed", "issuer": ISS, "audiences": ["orders"], "algorithms": ["RS256", "HS256"],
               "jwks": {"keys": [jwk(Algorithm::RS256)]}}),
        json!({}),
    ));
    let secret_p = policy(&config(
        json!({"name": "hs", "issuer": ISS, "algorithms": ["HS256"], "secret": SECRET}),
        json!({"max_token_bytes": 1024}),
    ));
    let claims = good_claims();
    // key confusion: the attacker HMACs with the RSA public key's bytes (as PEM, DER or JWK text)
    let public_pem = RS256KeyPair::from_pem(RSA_PEM)
        .unwrap()
        .public_key()
        .to_pem()
        .unwrap();
    let confused = hs256_with_header(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims,
        public_pem.as_bytes(),
    );
    let confused_kid = hs256_with_header(
        &json!({"alg": "HS256", "kid": "k-RS256"}),
        &claims,
        jwk(Algorithm::RS256).to_string().as_bytes(),
    );
    let valid_hs = mint(Algorithm::HS256, claims.clone());
    let cases: Vec<(&str, &JwtAuthPolicy, String, &str)> = vec![
        (
            "alg none",
            &rsa_only,
            unsigned(&claims),
            "unsigned tokens are not accepted",
        ),
        (
            "alg none on a secret provider",
            &secret_p,
            unsigned(&claims),
            "unsigned tokens",
        ),
        (
            "HS256 against an RS256-only provider",
            &rsa_only,
            confused.clone(),
            "algorithm is not allowed",
        ),
        (
            "HS256 with the RSA key as secret",
            &mixed,
            confused,
            "no key matches",
        ),
        (
            "HS256 naming the RSA kid",
            &mixed,
            confused_kid,
            "no key matches",
        ),
        (
            "crit header",
            &secret_p,
            hs256_with_header(
                &json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
                &claims,
                SECRET.as_bytes(),
            ),
            "critical header",
        ),
        (
            "jku header",
            &secret_p,
            hs256_with_header(
                &json!({"alg": "HS256", "jku": "https://evil.test/jwks"}),
                &claims,
                SECRET.as_bytes(),
            ),
            "names its own key",
        ),
        (
            "x5u header",
            &secret_p,
            hs256_with_header(
                &json!({"alg": "HS256", "x5u": "https://evil.test/c"}),
                &claims,
                SECRET.as_bytes(),
            ),
            "names its own key",
        ),
        (
            "embedded jwk",
            &secret_p,
            hs256_with_header(
                &json!({"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}),
                &claims,
                SECRET.as_bytes(),
            ),
            "names its own key",
        ),
        (
            "oversized token",
            &secret_p,
            format!("{valid_hs}{}", "A".repeat(1024)),
            "too large",
        ),
        ("garbage", &secret_p, "not-a-jwt".into(), "compact JWS"),
        ("bad base64", &secret_p, "eyJ!.eyJ.sig".into(), "base64url"),
        (
            "header not JSON",
            &secret_p,
            format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("{oops")),
            "not a JSON object",
        ),
    ];
    for (name, p, token, text) in cases {
        let (s, c) = check(p, &token);
        assert_eq!(s, 401, "{name}: {c}");
        assert!(c.contains(text), "{name}: {c}");
        assert!(c.contains("error=\"invalid_token\""), "{name}: {c}");
    }
    // the same secret provider accepts a well-formed HS256 token: the rejections above are not blanket
    assert_eq!(check(&secret_p, &valid_hs).0, 200);
}

// The in-memory metrics registry exists on native targets only; under wasm the host keeps metrics.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn denials_are_counted_by_reason() {
    let p = policy(&config(jwks_provider(&[Algorithm::ES256]), json!({})));
    let before = |r: &str| {
        portcullis_common::metrics::value(&format!("portcullis_jwt_auth_denied_{r}_total"))
            .unwrap_or(0)
    };
    let (none0, exp0, ok0) = (
        before("alg_none"),
        before("expired"),
        portcullis_common::metrics::value("portcullis_jwt_auth_allowed_total").unwrap_or(0),
    );
    check(&p, &unsigned(&good_claims()));
    let mut c = good_claims();
    c["exp"] = json!(NOW - 3600);
    check(&p, &mint(Algorithm::ES256, c));
    check(&p, &mint(Algorithm::ES256, good_claims()));
    assert_eq!(before("alg_none"), none0 + 1);
    assert_eq!(before("expired"), exp0 + 1);
    assert_eq!(
        portcullis_common::metrics::value("portcullis_jwt_auth_allowed_total"),
        Some(ok0 + 1)
    );
}

#[test]
fn missing_token_gets_a_bare_challenge_or_passes_when_allowed() {
    let p = policy(&config(
        jwks_provider(&[Algorithm::ES256]),
        json!({"realm": "orders", "messages": {"missing": "log in"}}),
    ));
    let d = run(&p, &FakeHost::request("GET", "/"));
    assert_eq!(status(&d), 401);
    assert_eq!(challenge(&d), "Bearer realm=\"orders\"");
    let Decision::Respond(r) = d else {
        unreachable!()
    };
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, json!({"message": "log in", "status": 401}));

    let open = policy(&config(
        jwks_provider(&[Algorithm::ES256]),
        json!({"allow_missing": true, "claims_to_headers": [{"claim": "sub", "header": "x-user"}]}),
    ));
    // a client cannot forge the claim header when it sends no token
    let host = FakeHost::request("GET", "/").with_header("x-user", "admin");
    assert_eq!(run(&open, &host), Decision::Continue);
    assert_eq!(host.header("x-user"), None);
    // bad tokens are still refused
    assert_eq!(status(&run(&open, &bearer("garbage"))), 401);
}

#[test]
fn token_sources_are_found_in_order_and_conflicts_refused() {
    let p = policy(&config(
        jwks_provider(&[Algorithm::EdDSA]),
        json!({"from_headers": [{"name": "authorization", "value_prefix": "Bearer "}, {"name": "x-jwt"}],
               "from_params": ["access_token"], "from_cookies": ["session"]}),
    ));
    let t = mint(Algorithm::EdDSA, good_claims());
    let cases: Vec<(&str, FakeHost, u16, &str)> = vec![
        ("bearer header", bearer(&t), 200, ""),
        (
            "lower-case scheme",
            FakeHost::request("GET", "/").with_header("authorization", &format!("bearer {t}")),
            200,
            "",
        ),
        (
            "custom header without prefix",
            FakeHost::request("GET", "/").with_header("x-jwt", &t),
            200,
            "",
        ),
        (
            "query parameter",
            FakeHost::request("GET", &format!("/o?a=1&access_token={t}")),
            200,
            "",
        ),
        (
            "cookie",
            FakeHost::request("GET", "/").with_header("cookie", &format!("a=b; session={t}")),
            200,
            "",
        ),
        (
            "header and parameter",
            FakeHost::request("GET", &format!("/?access_token={t}")).with_header("x-jwt", &t),
            401,
            "several tokens",
        ),
        (
            "basic scheme",
            FakeHost::request("GET", "/").with_header("authorization", "Basic dXNlcjpwYXNz"),
            401,
            "header is malformed",
        ),
        (
            "two tokens in one header",
            FakeHost::request("GET", "/")
                .with_header("authorization", &format!("Bearer {t}, Bearer {t}")),
            401,
            "malformed",
        ),
        (
            "empty bearer",
            FakeHost::request("GET", "/").with_header("authorization", "Bearer "),
            401,
            "malformed",
        ),
    ];
    for (name, host, want, text) in cases {
        let d = run(&p, &host);
        assert_eq!(status(&d), want, "{name}: {}", challenge(&d));
        assert!(challenge(&d).contains(text), "{name}: {}", challenge(&d));
        if want == 401 {
            assert!(
                challenge(&d).contains("error=\"invalid_request\""),
                "{name}"
            );
        }
    }
}

#[test]
fn the_token_is_stripped_from_its_source_unless_forwarded() {
    let strip = policy(&config(
        jwks_provider(&[Algorithm::ES256]),
        json!({"from_cookies": ["session"]}),
    ));
    let keep = policy(&config(
        jwks_provider(&[Algorithm::ES256]),
        json!({"forward": true}),
    ));
    let t = mint(Algorithm::ES256, good_claims());
    let host = FakeHost::request("GET", &format!("/o?x=1&access_token={t}&y=2"));
    assert_eq!(run(&strip, &host), Decision::Continue);
    assert_eq!(host.header(":path").as_deref(), Some("/o?x=1&y=2"));
    let host = FakeHost::request("GET", &format!("/o?access_token={t}"));
    run(&strip, &host);
    assert_eq!(host.header(":path").as_deref(), Some("/o"));
    let host =
        FakeHost::request("GET", "/").with_header("cookie", &format!("a=b; session={t}; c=d"));
    run(&strip, &host);
    assert_eq!(host.header("cookie").as_deref(), Some("a=b; c=d"));
    let host = bearer(&t);
    assert_eq!(run(&keep, &host), Decision::Continue);
    assert_eq!(host.header("authorization"), Some(format!("Bearer {t}")));
}

#[test]
fn claims_become_sanitised_headers_and_forged_ones_are_replaced() {
    let p = policy(&config(
        jwks_provider(&[Algorithm::ES256]),
        json!({"claims_to_headers": [
            {"claim": "sub", "header": "x-user"}, {"claim": "roles", "header": "x-roles"},
            {"claim": "org.id", "header": "x-org"}, {"claim": "org", "header": "x-org-json"},
            {"claim": "evil", "header": "x-evil"}, {"claim": "long", "header": "x-long"},
            {"claim": "absent", "header": "x-absent"}],
            "forward_payload_header": "x-jwt-payload"}),
    ));
    let mut c = good_claims();
    c["evil"] = json!("a\r\nx-admin: true");
    c["long"] = json!("y".repeat(5000));
    let t = mint(Algorithm::ES256, c);
    let host = bearer(&t)
        .with_header("x-absent", "forged")
        .with_header("x-user", "forged");
    assert_eq!(run(&p, &host), Decision::Continue);
    assert_eq!(host.header("x-user").as_deref(), Some("alice"));
    assert_eq!(host.header("x-roles").as_deref(), Some("admin,dev"));
    assert_eq!(host.header("x-org").as_deref(), Some("acme"));
    assert_eq!(
        host.header("x-org-json").as_deref(),
        Some(r#"{"id":"acme","tier":3}"#)
    );
    let evil = host.header("x-evil").unwrap();
    assert!(!evil.contains('\r') && !evil.contains('\n'), "{evil:?}");
    assert_eq!(
        host.header("x-long").map(|v| v.len()),
        Some(MAX_CLAIM_HEADER_BYTES)
    );
    assert_eq!(host.header("x-absent"), None);
    assert_eq!(host.header("x-jwt-payload").as_deref(), t.split('.').nth(1));
}

#[test]
fn cors_preflight_bypasses_only_when_enabled() {
    let preflight = || {
        FakeHost::request("OPTIONS", "/")
            .with_header("origin", "https://app.test")
            .with_header("access-control-request-method", "POST")
    };
    let on = policy(&config(
        jwks_provider(&[Algorithm::ES256]),
        json!({"bypass_cors_preflight": true}),
    ));
    let off = policy(&config(jwks_provider(&[Algorithm::ES256]), json!({})));
    assert_eq!(run(&on, &preflight()), Decision::Continue);
    assert_eq!(status(&run(&off, &preflight())), 401);
    // a plain OPTIONS is not a preflight
    assert_eq!(status(&run(&on, &FakeHost::request("OPTIONS", "/"))), 401);
}

#[test]
fn verified_tokens_are_cached_until_they_expire() {
    let p = policy(&config(jwks_provider(&[Algorithm::RS256]), json!({})));
    let hits =
        || portcullis_common::metrics::value("portcullis_jwt_auth_cache_hits_total").unwrap_or(0);
    let mut c = good_claims();
    c["exp"] = json!(NOW + 100);
    let t = mint(Algorithm::RS256, c);
    let h0 = hits();
    assert_eq!(run(&p, &bearer(&t)), Decision::Continue);
    assert_eq!(p.cache.borrow().entries.len(), 1);
    assert_eq!(run(&p, &bearer(&t)), Decision::Continue);
    assert_eq!(p.cache.borrow().entries.len(), 1);
    if cfg!(not(target_arch = "wasm32")) {
        assert_eq!(hits(), h0 + 1);
    }
    // past exp + skew the cached entry does not help
    let d = run_at(&p, &bearer(&t), NOW + 200);
    assert!(challenge(&d).contains("expired"), "{}", challenge(&d));
    // a forged token never hits the cache entry of a valid one
    assert_eq!(status(&run(&p, &bearer(&format!("{t}x")))), 401);
    // nor one that hashes the same (same length and tail) but differs earlier
    let mut forged = t.clone().into_bytes();
    let early = forged.len() - HASHED_TAIL - 10;
    forged[early] = if forged[early] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(status(&run(&p, &bearer(&forged))), 401);
}

#[test]
fn cache_speeds_up_repeated_tokens() {
    let p = policy(&config(jwks_provider(&[Algorithm::RS256]), json!({})));
    let uncached = policy(&config(
        jwks_provider(&[Algorithm::RS256]),
        json!({"cache_max_entries": 0}),
    ));
    let t = mint(Algorithm::RS256, good_claims());
    let time = |p: &JwtAuthPolicy| {
        let start = std::time::Instant::now();
        for _ in 0..20 {
            assert_eq!(run(p, &bearer(&t)), Decision::Continue);
        }
        start.elapsed()
    };
    let (cached, plain) = (time(&p), time(&uncached));
    println!("20 RS256 requests: cached {cached:?}, uncached {plain:?}");
    assert!(cached < plain, "cached {cached:?} vs uncached {plain:?}");
}

#[test]
fn the_cache_stays_bounded() {
    let p = policy(&config(
        json!({"name": "hs", "issuer": ISS, "algorithms": ["HS256"], "secret": SECRET}),
        json!({"cache_max_entries": 4}),
    ));
    for i in 0..20 {
        let mut c = good_claims();
        c["n"] = json!(i);
        assert_eq!(check(&p, &mint(Algorithm::HS256, c)).0, 200);
        assert!(p.cache.borrow().entries.len() <= 4);
    }
}

#[test]
fn bad_configs_name_the_field() {
    let hs = |extra: Value| {
        let mut p = json!({"name": "hs", "issuer": ISS, "algorithms": ["HS256"], "secret": SECRET});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        json!({"providers": [p]})
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing field `providers`"),
        (json!({"providers": []}), "providers: at least one provider"),
        (
            hs(json!({"algorithms": ["HS999"]})),
            "providers[0].algorithms[0]: unknown variant `HS999`",
        ),
        (
            hs(json!({"algorithms": []})),
            "providers[0].algorithms: list at least one",
        ),
        (
            hs(json!({"secret": "short"})),
            "providers[0].secret: HS256 needs a secret of at least 32 bytes",
        ),
        (
            hs(json!({"algorithms": ["HS256", "HS512"], "secret": "x".repeat(40)})),
            "providers[0].secret: HS512 needs a secret of at least 64 bytes, got 40",
        ),
        (
            hs(json!({"secret": "!!!", "secret_is_base64": true})),
            "providers[0].secret: is not valid base64",
        ),
        (
            hs(json!({"algorithms": ["RS256"]})),
            "providers[0].algorithms: a secret only verifies",
        ),
        (
            hs(json!({"jwks": {"keys": []}})),
            "providers[0]: set exactly one of",
        ),
        (
            hs(json!({"issuer": ""})),
            "providers[0].issuer: must not be empty",
        ),
        (hs(json!({"name": "a b"})), "providers[0].name"),
        (hs(json!({"extra": 1})), "unknown field `extra`"),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["RS256"], "jwks": {"nope": 1}}]}),
            "providers[0].jwks: must be a JSON object with a \"keys\" array",
        ),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["RS256"], "jwks": "{not json"}]}),
            "providers[0].jwks: is not valid JSON",
        ),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["RS256"],
                "jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}]}),
            "providers[0].jwks: keys[0]: invalid key",
        ),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["ES256"],
                "jwks": {"keys": [jwk(Algorithm::RS256)]}}]}),
            "providers[0].jwks: keys[0]: a \"RSA\" key is not usable",
        ),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["RS256"],
                "jwks_uri": {"cluster": "idp", "url": "ftp://x/jwks"}}]}),
            "providers[0].jwks_uri.url: \"ftp://x/jwks\" must start with http",
        ),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["HS256"],
                "jwks_uri": {"cluster": "idp", "url": "http://x/jwks"}}]}),
            "providers[0].algorithms: HS* algorithms need a secret",
        ),
        (
            json!({"providers": [{"name": "j", "issuer": ISS, "algorithms": ["RS256"],
                "jwks_uri": {"cluster": "idp", "url": "http://x/jwks", "timeout": "0s"}}]}),
            "providers[0].jwks_uri.timeout",
        ),
        (
            hs(json!({"required_claims": [{"claim": "a..b"}]})),
            "providers[0].required_claims[0].claim",
        ),
        (
            json!({"providers": [hs(json!({}))["providers"][0], hs(json!({"issuer": "other"}))["providers"][0]]}),
            "providers[1].name: duplicate provider name",
        ),
        (
            json!({"providers": [hs(json!({}))["providers"][0], hs(json!({"name": "b"}))["providers"][0]]}),
            "providers[1].issuer: another provider already has issuer",
        ),
        (
            json!({"providers": hs(json!({}))["providers"], "realm": "a\"b"}),
            "realm: must be",
        ),
        (
            json!({"providers": hs(json!({}))["providers"], "from_params": ["a b"]}),
            "from_params[0]",
        ),
        (
            json!({"providers": hs(json!({}))["providers"], "claims_to_headers": [{"claim": "sub", "header": "x y"}]}),
            "claims_to_headers[0].header",
        ),
        (
            json!({"providers": hs(json!({}))["providers"], "clock_skew": 60}),
            "clock_skew",
        ),
        (
            json!({"providers": hs(json!({}))["providers"], "from_headers": [], "from_params": []}),
            "no token source",
        ),
    ];
    for (cfg, want) in cases {
        let err = match JwtAuthPolicy::configure(cfg.to_string().as_bytes()) {
            Ok(_) => panic!("accepted {cfg}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{cfg}\n  got:  {err}\n  want: {want}");
    }
}

#[test]
fn schema_documents_every_field() {
    let s = portcullis_common::schema::config_schema::<JwtAuthConfig>();
    assert_eq!(s["additionalProperties"], false);
    for field in [
        "providers",
        "from_headers",
        "from_params",
        "from_cookies",
        "clock_skew",
        "max_lifetime",
        "require_expiration",
        "claims_to_headers",
        "forward_payload_header",
        "forward",
        "realm",
        "allow_missing",
        "bypass_cors_preflight",
        "max_token_bytes",
        "cache_max_entries",
        "messages",
    ] {
        assert!(
            s["properties"][field]["description"].is_string(),
            "{field}: {}",
            s["properties"][field]
        );
    }
    assert_eq!(s["required"], json!(["providers"]));
}

// ---- remote JWKS -------------------------------------------------------------------------------------------

fn remote_config(extra: Value) -> Value {
    let mut r = json!({"cluster": "jwks", "url": "https://id.example.test/.well-known/jwks.json",
                       "timeout": "2s", "cache_duration": "60s", "refetch_interval": "10s"});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    json!({"providers": [{"name": "remote", "issuer": ISS, "algorithms": ["RS256", "ES256"], "jwks_uri": r}]})
}

fn jwks_body(keys: &[Value]) -> CalloutResponse {
    CalloutResponse {
        status: 200,
        headers: vec![(":status".into(), "200".into())],
        body: json!({ "keys": keys }).to_string().into_bytes(),
    }
}

fn resume(
    p: &JwtAuthPolicy,
    state: &mut RequestState,
    host: &FakeHost,
    timed_out: bool,
) -> Decision {
    let mut ex = Exchange::new(Box::new(host.clone()));
    p.on_resume(state, &mut ex, timed_out)
}

#[test]
fn remote_jwks_is_fetched_on_start_and_paused_requests_resume_when_it_arrives() {
    let store = SharedMemoryStore::default();
    let p = policy(&remote_config(json!({})));
    assert_eq!(p.tick_period(), Some(TICK));
    assert_eq!(p.max_pause(), Duration::from_secs(3));
    let mut root = FakeRootHost::new()
        .at(Duration::from_secs(NOW))
        .with_store(&store);
    p.on_start(&mut root);
    let call = root.last_call().unwrap().clone();
    assert_eq!(call.upstream, "jwks");
    assert_eq!(call.path, "/.well-known/jwks.json");
    assert_eq!(call.authority, "id.example.test");
    assert_eq!(call.timeout, Duration::from_secs(2));

    let host = bearer(&mint(Algorithm::RS256, good_claims()))
        .with_store(&store)
        .at(Duration::from_secs(NOW));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);

    p.on_callout_response(
        &mut root,
        call.token,
        Some(jwks_body(&[jwk(Algorithm::RS256)])),
    );
    assert_eq!(root.wakes, 1);
    assert_eq!(resume(&p, &mut state, &host, false), Decision::Continue);

    // another worker (same shared data) uses the keys without fetching
    let other = policy(&remote_config(json!({})));
    let mut other_root = FakeRootHost::new()
        .at(Duration::from_secs(NOW + 1))
        .with_store(&store);
    other.on_start(&mut other_root);
    assert!(other_root.calls.is_empty(), "{:?}", other_root.calls);
    assert_eq!(
        run(
            &other,
            &bearer(&mint(Algorithm::RS256, good_claims())).with_store(&store)
        ),
        Decision::Continue
    );
}

#[test]
fn a_request_paused_for_the_first_fetch_is_denied_when_the_wait_times_out() {
    let p = policy(&remote_config(json!({})));
    let mut root = FakeRootHost::new().at(Duration::from_secs(NOW));
    p.on_start(&mut root);
    let token = root.last_call().unwrap().token;
    let host = bearer(&mint(Algorithm::RS256, good_claims())).at(Duration::from_secs(NOW));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    // the fetch fails: the request keeps waiting until its deadline, then is denied
    p.on_callout_response(&mut root, token, None);
    assert_eq!(resume(&p, &mut state, &host, false), Decision::Pause);
    let d = resume(&p, &mut state, &host, true);
    assert_eq!(status(&d), 401);
    assert!(
        challenge(&d).contains("signing keys are not available"),
        "{}",
        challenge(&d)
    );
    // retried with backoff, not immediately
    root.now = Duration::from_secs(NOW) + Duration::from_millis(500);
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 1);
    root.now = Duration::from_secs(NOW + 2);
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 2);
}

#[test]
fn an_unknown_kid_triggers_one_rate_limited_refetch() {
    let p = policy(&remote_config(json!({})));
    let mut root = FakeRootHost::new().at(Duration::from_secs(NOW));
    p.on_start(&mut root);
    let first = root.last_call().unwrap().token;
    p.on_callout_response(&mut root, first, Some(jwks_body(&[jwk(Algorithm::RS256)])));
    assert_eq!(check(&p, &mint(Algorithm::RS256, good_claims())).0, 200);

    // the issuer rotated to an ES256 key the worker has not seen
    let rotated = mint(Algorithm::ES256, good_claims());
    let host = bearer(&rotated).at(Duration::from_secs(NOW + 1));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    root.now = Duration::from_secs(NOW + 1);
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 2, "the unknown kid starts a re-fetch");
    // woken early (e.g. another worker shared a JWKS): the request keeps waiting for the re-fetch
    assert_eq!(resume(&p, &mut state, &host, false), Decision::Pause);
    let second = root.last_call().unwrap().token;
    p.on_callout_response(
        &mut root,
        second,
        Some(jwks_body(&[jwk(Algorithm::RS256), jwk(Algorithm::ES256)])),
    );
    assert_eq!(resume(&p, &mut state, &host, false), Decision::Continue);

    // a flood of unknown kids does not cause more fetches within refetch_interval
    let stranger = rsa::<RS256KeyPair>(RSA_PEM_B, Some("nobody".into()))
        .sign(claims_for(good_claims()))
        .unwrap();
    for _ in 0..5 {
        let d = run_at(&p, &bearer(&stranger), NOW + 2);
        assert_eq!(status(&d), 401);
        assert!(
            challenge(&d).contains("no key matches"),
            "{}",
            challenge(&d)
        );
    }
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 2);
}

#[test]
fn last_good_keys_keep_working_when_refreshes_fail() {
    let p = policy(&remote_config(json!({})));
    let mut root = FakeRootHost::new().at(Duration::from_secs(NOW));
    p.on_start(&mut root);
    p.on_callout_response(&mut root, 1, Some(jwks_body(&[jwk(Algorithm::RS256)])));
    // past cache_duration a refresh starts; it fails (server down, then a 500)
    root.now = Duration::from_secs(NOW + 61);
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 2);
    p.on_callout_response(&mut root, 2, None);
    root.now = Duration::from_secs(NOW + 63);
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 3);
    p.on_callout_response(
        &mut root,
        3,
        Some(CalloutResponse {
            status: 500,
            headers: vec![],
            body: b"oops".to_vec(),
        }),
    );
    // an answer with no usable key is a failure too
    root.now = Duration::from_secs(NOW + 70);
    p.on_tick(&mut root);
    p.on_callout_response(
        &mut root,
        4,
        Some(jwks_body(&[json!({"kty": "EC", "crv": "P-521"})])),
    );
    assert_eq!(
        run_at(
            &p,
            &bearer(&mint(Algorithm::RS256, good_claims())),
            NOW + 70
        ),
        Decision::Continue
    );
}

/// A bearer request as Kong's engine presents it (its root context cannot resume a paused request).
fn kong_bearer(token: &str) -> FakeHost {
    let host = bearer(token);
    host.state.borrow_mut().flavor = portcullis_common::props::Flavor::Kong;
    host
}

#[test]
fn where_the_root_cannot_resume_a_request_it_fetches_the_jwks_itself() {
    let store = SharedMemoryStore::default();
    let p = policy(&remote_config(json!({})));
    let host = kong_bearer(&mint(Algorithm::RS256, good_claims()))
        .with_store(&store)
        .at(Duration::from_secs(NOW));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    assert!(!ex.root_can_resume());
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    let calls = host.state.borrow().calls.clone();
    assert_eq!(calls.len(), 1, "the request's own fetch");
    assert_eq!(
        (calls[0].upstream.as_str(), calls[0].path.as_str()),
        ("jwks", "/.well-known/jwks.json")
    );
    assert_eq!(calls[0].authority, "id.example.test");
    // the root's start-up fetch waits for the request's answer instead of fetching the same document
    let mut root = FakeRootHost::new()
        .at(Duration::from_secs(NOW))
        .with_store(&store);
    p.on_start(&mut root);
    assert!(root.calls.is_empty(), "{:?}", root.calls);
    // the answer resumes the request, installs the keys and shares them with the other workers
    let d = p.on_request_callout_response(
        &mut state,
        &mut ex,
        calls[0].token,
        Some(jwks_body(&[jwk(Algorithm::RS256)])),
    );
    assert_eq!(d, Decision::Continue);
    assert_eq!(
        run(&p, &kong_bearer(&mint(Algorithm::RS256, good_claims()))),
        Decision::Continue
    );
    let other = policy(&remote_config(json!({})));
    let mut other_root = FakeRootHost::new()
        .at(Duration::from_secs(NOW + 1))
        .with_store(&store);
    other.on_start(&mut other_root);
    assert!(other_root.calls.is_empty(), "{:?}", other_root.calls);
}

#[test]
fn where_the_root_cannot_resume_a_failed_own_fetch_denies_the_request() {
    let p = policy(&remote_config(json!({})));
    let host = kong_bearer(&mint(Algorithm::RS256, good_claims())).at(Duration::from_secs(NOW));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    let token = host.state.borrow().calls[0].token;
    let d = p.on_request_callout_response(
        &mut state,
        &mut ex,
        token,
        Some(CalloutResponse {
            status: 503,
            headers: vec![],
            body: Vec::new(),
        }),
    );
    assert_eq!(status(&d), 401);
    assert!(
        challenge(&d).contains("signing keys are not available"),
        "{}",
        challenge(&d)
    );
    // the host refusing the callout: the pause stands, and the adapter decides it at once as timed out
    let refused = kong_bearer(&mint(Algorithm::RS256, good_claims())).at(Duration::from_secs(NOW));
    refused.state.borrow_mut().dispatch_error = Some("no".into());
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(refused.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    assert!(state.own_fetch.is_none());
    assert_eq!(status(&p.on_resume(&mut state, &mut ex, true)), 401);
}

#[test]
fn where_the_root_cannot_resume_an_unknown_kid_is_refetched_by_the_request() {
    let p = policy(&remote_config(json!({})));
    let mut root = FakeRootHost::new().at(Duration::from_secs(NOW));
    p.on_start(&mut root);
    p.on_callout_response(&mut root, 1, Some(jwks_body(&[jwk(Algorithm::RS256)])));
    let rotated =
        kong_bearer(&mint(Algorithm::ES256, good_claims())).at(Duration::from_secs(NOW + 1));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(rotated.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    let token = rotated.state.borrow().calls[0].token;
    let d = p.on_request_callout_response(
        &mut state,
        &mut ex,
        token,
        Some(jwks_body(&[jwk(Algorithm::RS256), jwk(Algorithm::ES256)])),
    );
    assert_eq!(d, Decision::Continue);
    // a kid nobody publishes, within refetch_interval: denied at once, no fetch
    let stranger = rsa::<RS256KeyPair>(RSA_PEM_B, Some("nobody".into()))
        .sign(claims_for(good_claims()))
        .unwrap();
    let host = kong_bearer(&stranger).at(Duration::from_secs(NOW + 2));
    let d = run_at(&p, &host, NOW + 2);
    assert!(
        challenge(&d).contains("no key matches"),
        "{}",
        challenge(&d)
    );
    assert!(host.state.borrow().calls.is_empty());
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 1, "the root fetched only at start");
}

#[test]
fn where_a_request_cannot_fetch_for_itself_an_unknown_kid_is_denied_and_refetched_by_the_root() {
    let p = policy(&remote_config(json!({})));
    let mut root = FakeRootHost::new().at(Duration::from_secs(NOW));
    p.on_start(&mut root);
    p.on_callout_response(&mut root, 1, Some(jwks_body(&[jwk(Algorithm::RS256)])));
    let rotated =
        kong_bearer(&mint(Algorithm::ES256, good_claims())).at(Duration::from_secs(NOW + 1));
    rotated.state.borrow_mut().dispatch_error = Some("refused".into());
    let d = run_at(&p, &rotated, NOW + 1);
    assert!(
        challenge(&d).contains("no key matches"),
        "{}",
        challenge(&d)
    );
    root.now = Duration::from_secs(NOW + 1);
    p.on_tick(&mut root);
    assert_eq!(
        root.calls.len(),
        2,
        "the root re-fetches for the next requests"
    );
}
