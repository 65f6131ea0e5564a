//! Attack corpus for `jwt-auth` (issue 11), through the public API only: `configure` + `on_request_headers`
//! with a `FakeHost`. Every hostile token must get the documented 401 (or 403) and its RFC 6750 challenge,
//! and none may panic. Tokens are built by hand (raw JSON, so duplicate keys and odd types are possible) and
//! HMAC'd with `hmac-sha256`, or signed by jwt-simple for RSA.

// Integration tests link the crate with its proxy-wasm exports (`export_policy!`, which defines
// `_initialize`), which the wasm32-wasip1 test runner refuses; the unit tests in src/ cover wasm32.
#![cfg(not(target_arch = "wasm32"))]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::{Claims, JWTClaims, RS256KeyPair, RSAKeyPairLike};
use portcullis_common::testing::{FakeHost, FakeRootHost};
use portcullis_common::{CalloutResponse, Decision, Exchange, Policy};
use portcullis_jwt_auth::policy::RequestState;
use portcullis_jwt_auth::JwtAuthPolicy;
use serde_json::{json, Value};
use std::time::Duration;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://id.example.test/";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RSA_PEM: &str = include_str!("../fixtures/rsa2048.pk8.pem");
const RSA_PEM_B: &str = include_str!("../fixtures/rsa2048-b.pk8.pem");

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with a raw (possibly odd) JSON header and payload, HMAC-SHA256'd with `key`.
fn hs256_raw(header: &str, payload: &[u8], key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let mac = hmac_sha256::HMAC::mac(input.as_bytes(), key);
    format!("{input}.{}", b64(mac))
}

/// Good claims as raw JSON text (so tests can splice in duplicates and odd values).
fn claims_text(exp: &str) -> String {
    format!(
        r#"{{"iss":"{ISS}","sub":"alice","aud":"orders","iat":{},"exp":{exp}}}"#,
        NOW - 10
    )
}

fn good_claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "orders", "iat": NOW - 10, "exp": NOW + 600})
}

/// A validly signed HS256 token for the secret provider.
fn valid_hs() -> String {
    hs256_raw(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        claims_text(&(NOW + 600).to_string()).as_bytes(),
        SECRET.as_bytes(),
    )
}

fn rsa_claims(v: Value) -> JWTClaims<Value> {
    let mut c = Claims::with_custom_claims(v, jwt_simple::prelude::Duration::from_secs(1));
    c.issued_at = None;
    c.expires_at = None;
    c.invalid_before = None;
    c
}

/// An RS256 token signed with `pem`, with header `kid`.
fn rs256(pem: &str, kid: Option<&str>, claims: Value) -> String {
    let mut kp = RS256KeyPair::from_pem(pem).unwrap();
    if let Some(k) = kid {
        kp = kp.with_key_id(k);
    }
    kp.sign(rsa_claims(claims)).unwrap()
}

/// The public JWK of `pem` for RS256, with `kid`.
fn rsa_jwk(pem: &str, kid: &str) -> Value {
    let text = RS256KeyPair::from_pem(pem).unwrap().public_key().to_jwk();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["kid"] = json!(kid);
    v
}

fn secret_provider() -> Value {
    json!({"name": "hs", "issuer": ISS, "audiences": ["orders"], "algorithms": ["HS256"], "secret": SECRET})
}

fn rsa_provider(algorithms: &[&str]) -> Value {
    json!({"name": "idp", "issuer": ISS, "audiences": ["orders"], "algorithms": algorithms,
           "jwks": {"keys": [rsa_jwk(RSA_PEM, "k1")]}})
}

fn policy_with(provider: Value, extra: Value) -> JwtAuthPolicy {
    let mut cfg = json!({ "providers": [provider] });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    JwtAuthPolicy::configure(cfg.to_string().as_bytes()).unwrap_or_else(|e| panic!("{cfg}: {e}"))
}

fn bearer(token: &str) -> FakeHost {
    FakeHost::request("GET", "/orders")
        .with_header("authorization", &format!("Bearer {token}"))
        .at(Duration::from_secs(NOW))
}

fn run_host(p: &JwtAuthPolicy, host: &FakeHost) -> Decision {
    let mut ex = Exchange::new(Box::new(host.clone()));
    p.on_request_headers(&mut RequestState::default(), &mut ex)
}

/// (status, `WWW-Authenticate`, JSON message); status 200 = the request went on.
fn check(p: &JwtAuthPolicy, token: &str) -> (u16, String, String) {
    match run_host(p, &bearer(token)) {
        Decision::Continue => (200, String::new(), String::new()),
        Decision::Pause => (0, String::new(), String::new()),
        Decision::Respond(r) => {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["status"], r.status);
            (
                r.status,
                r.header("www-authenticate").unwrap_or_default().to_string(),
                body["message"].as_str().unwrap_or_default().to_string(),
            )
        }
    }
}

/// Asserts a 401 `invalid_token` whose description contains `text`.
fn assert_invalid(p: &JwtAuthPolicy, case: &str, token: &str, text: &str) {
    let (status, challenge, message) = check(p, token);
    assert_eq!(status, 401, "{case}: {challenge}");
    assert!(
        challenge.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
        "{case}: {challenge}"
    );
    assert!(
        challenge.contains(text),
        "{case}: want {text:?} in {challenge}"
    );
    assert_eq!(message, "invalid token", "{case}");
}

#[test]
fn the_valid_baselines_pass() {
    // Without these, every rejection below could come from a broken setup.
    assert_eq!(
        check(&policy_with(secret_provider(), json!({})), &valid_hs()).0,
        200
    );
    let rsa = policy_with(rsa_provider(&["RS256"]), json!({}));
    assert_eq!(
        check(&rsa, &rs256(RSA_PEM, Some("k1"), good_claims())).0,
        200
    );
}

#[test]
fn alg_none_is_refused_in_every_casing_with_or_without_a_signature() {
    let providers = [
        policy_with(secret_provider(), json!({})),
        policy_with(rsa_provider(&["RS256"]), json!({})),
    ];
    let payload = claims_text(&(NOW + 600).to_string());
    for casing in ["none", "None", "NONE", "nOnE", "NoNe", "nonE"] {
        let header = format!(r#"{{"alg":"{casing}","typ":"JWT"}}"#);
        let unsigned = format!("{}.{}", b64(&header), b64(&payload));
        let signed_with_secret = hs256_raw(&header, payload.as_bytes(), SECRET.as_bytes());
        for p in &providers {
            assert_invalid(
                p,
                casing,
                &format!("{unsigned}."),
                "unsigned tokens are not accepted",
            );
            assert_invalid(
                p,
                casing,
                &format!("{unsigned}.c2lnbmF0dXJl"),
                "unsigned tokens are not accepted",
            );
            // even a signature the provider's own key would accept does not make `none` acceptable
            assert_invalid(
                p,
                casing,
                &signed_with_secret,
                "unsigned tokens are not accepted",
            );
            // no signature part at all: not a compact JWS
            assert_invalid(p, casing, &unsigned, "not a compact JWS (three parts)");
        }
    }
    // `none` spelled with JSON escapes is still `none`; near-misses are unknown algorithms; a non-string
    // alg is no alg at all
    let cases: &[(&str, &str)] = &[
        (
            r#"{"alg":"\u006e\u006f\u006e\u0065"}"#,
            "unsigned tokens are not accepted",
        ),
        (r#"{"alg":"\u004eONE"}"#, "unsigned tokens are not accepted"),
        (r#"{"alg":"none "}"#, "the token algorithm is not supported"),
        (
            r#"{"alg":"none\u0000"}"#,
            "the token algorithm is not supported",
        ),
        (r#"{"alg":"hs256"}"#, "the token algorithm is not supported"),
        (r#"{"alg":""}"#, "the token algorithm is not supported"),
        (r#"{"alg":["none"]}"#, "the token header has no alg"),
        (r#"{"alg":null}"#, "the token header has no alg"),
        (r#"{"typ":"JWT"}"#, "the token header has no alg"),
    ];
    for (header, text) in cases {
        let t = format!("{}.{}.c2ln", b64(header), b64(&payload));
        for p in &providers {
            assert_invalid(p, header, &t, text);
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let public = RS256KeyPair::from_pem(RSA_PEM).unwrap().public_key();
    let pem = public.to_pem().unwrap();
    let der = public.to_der().unwrap();
    let jwk_text = rsa_jwk(RSA_PEM, "k1").to_string();
    let payload = claims_text(&(NOW + 600).to_string());
    let rsa_only = policy_with(rsa_provider(&["RS256"]), json!({}));
    // a provider that also allows HS256 (but has only the RSA key): the RSA key is never an HMAC secret
    let mixed = policy_with(rsa_provider(&["RS256", "HS256"]), json!({}));
    let secrets: [(&str, &[u8]); 4] = [
        ("pem", pem.as_bytes()),
        ("pem without newline", pem.trim_end().as_bytes()),
        ("der", &der),
        ("jwk", jwk_text.as_bytes()),
    ];
    for (what, secret) in secrets {
        for header in [
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"alg":"HS256","kid":"k1"}"#,
        ] {
            let t = hs256_raw(header, payload.as_bytes(), secret);
            assert_invalid(&rsa_only, what, &t, "the token algorithm is not allowed");
            assert_invalid(
                &mixed,
                what,
                &t,
                "no key matches the token kid and algorithm",
            );
        }
    }
}

/// Kids that would be dangerous if a key store looked them up as paths or SQL.
const HOSTILE_KIDS: &[&str] = &[
    "../../etc/passwd",
    "../../../../../../dev/null",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "' OR 1=1 --",
    "k1' OR '1'='1",
    "k1\"; DROP TABLE keys; --",
    "k1\u{0}",
    "k1\r\nx-injected: 1",
    "%2e%2e%2fetc%2fpasswd",
    "${jndi:ldap://evil.test/a}",
    "",
];

#[test]
fn hostile_kids_match_no_key_of_an_inline_jwks() {
    let p = policy_with(rsa_provider(&["RS256"]), json!({}));
    for kid in HOSTILE_KIDS {
        // signed with the provider's own key: only the kid is hostile
        let t = rs256(RSA_PEM, Some(kid), good_claims());
        assert_invalid(&p, kid, &t, "no key matches the token kid and algorithm");
    }
    // an over-long kid is refused before any key lookup
    let long = "../".repeat(100);
    let t = rs256(RSA_PEM, Some(&long), good_claims());
    assert_invalid(&p, "long kid", &t, "the token kid is not a short string");
}

#[test]
fn hostile_kids_against_a_remote_jwks_refetch_only_the_configured_url_then_fail() {
    let cfg = json!({"providers": [{"name": "remote", "issuer": ISS, "algorithms": ["RS256"],
        "jwks_uri": {"cluster": "jwks", "url": "https://id.example.test/.well-known/jwks.json",
                     "timeout": "2s", "cache_duration": "60s", "refetch_interval": "10s"}}]});
    let p = JwtAuthPolicy::configure(cfg.to_string().as_bytes()).unwrap();
    let jwks = CalloutResponse {
        status: 200,
        headers: vec![(":status".into(), "200".into())],
        body: json!({"keys": [rsa_jwk(RSA_PEM, "k1")]})
            .to_string()
            .into_bytes(),
    };
    let mut root = FakeRootHost::new().at(Duration::from_secs(NOW));
    p.on_start(&mut root);
    let first = root.last_call().unwrap().token;
    p.on_callout_response(&mut root, first, Some(jwks.clone()));
    assert_eq!(check(&p, &rs256(RSA_PEM, Some("k1"), good_claims())).0, 200);

    // the first hostile kid waits for one re-fetch, of the configured URL only
    let host = bearer(&rs256(RSA_PEM, Some("../../etc/passwd"), good_claims()));
    let mut state = RequestState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 2);
    let refetch = root.last_call().unwrap().clone();
    assert_eq!(refetch.path, "/.well-known/jwks.json");
    assert_eq!(refetch.authority, "id.example.test");
    assert_eq!(refetch.upstream, "jwks");
    p.on_callout_response(&mut root, refetch.token, Some(jwks));
    let mut ex = Exchange::new(Box::new(host));
    match p.on_resume(&mut state, &mut ex, false) {
        Decision::Respond(r) => {
            assert_eq!(r.status, 401);
            let c = r.header("www-authenticate").unwrap();
            assert!(c.contains("no key matches the token kid"), "{c}");
        }
        other => panic!("{other:?}"),
    }
    // the others are refused at once (re-fetches are rate-limited), and cause no callout
    for kid in HOSTILE_KIDS {
        let t = rs256(RSA_PEM, Some(kid), good_claims());
        assert_invalid(&p, kid, &t, "no key matches the token kid");
    }
    p.on_tick(&mut root);
    assert_eq!(root.calls.len(), 2, "{:?}", root.calls);
}

#[test]
fn header_named_keys_and_key_urls_are_never_trusted() {
    let p = policy_with(secret_provider(), json!({}));
    let rsa = policy_with(rsa_provider(&["RS256"]), json!({}));
    let payload = claims_text(&(NOW + 600).to_string());
    let attacker_jwk = rsa_jwk(RSA_PEM_B, "evil");
    let injected = [
        json!({"alg": "HS256", "jku": "https://evil.test/jwks.json"}),
        json!({"alg": "HS256", "jku": ""}),
        json!({"alg": "HS256", "x5u": "https://evil.test/cert.pem"}),
        json!({"alg": "HS256", "jwk": {"kty": "oct", "k": b64(SECRET)}}),
        json!({"alg": "HS256", "jwk": null}),
        json!({"alg": "HS256", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
        json!({"alg": "HS256", "kid": "k1", "jku": "file:///etc/passwd"}),
    ];
    for header in injected {
        // signed with the real secret: the header parameter alone gets the token refused
        let t = hs256_raw(&header.to_string(), payload.as_bytes(), SECRET.as_bytes());
        assert_invalid(
            &p,
            &header.to_string(),
            &t,
            "names its own key, which is never trusted",
        );
    }
    // the classic: an RS256 token signed by the attacker's key, with that key embedded as `jwk`
    let header = json!({"alg": "RS256", "typ": "JWT", "jwk": attacker_jwk});
    let input = format!("{}.{}", b64(header.to_string()), b64(&payload));
    // (jwt-simple cannot put a jwk in the header; a real signature is not needed to be refused first)
    let forged = format!("{input}.{}", b64([7u8; 256]));
    assert_invalid(&rsa, "embedded attacker jwk", &forged, "names its own key");
}

#[test]
fn crit_is_always_refused() {
    let p = policy_with(secret_provider(), json!({}));
    let payload = claims_text(&(NOW + 600).to_string());
    for crit in [
        json!(["x-unknown"]),
        json!(["b64"]),
        json!(["exp"]),
        json!([]),
        json!("x-unknown"),
        json!(null),
    ] {
        let header = json!({"alg": "HS256", "crit": crit, "x-unknown": true, "b64": false});
        let t = hs256_raw(&header.to_string(), payload.as_bytes(), SECRET.as_bytes());
        assert_invalid(&p, &crit.to_string(), &t, "critical header parameters");
    }
}

/// A raw DEFLATE stream (one stored block) of `data`: what a `zip: "DEF"` token carries.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn nested_and_compressed_tokens_are_never_unwrapped() {
    let p = policy_with(secret_provider(), json!({}));
    let inner = valid_hs();
    let payload = claims_text(&(NOW + 600).to_string());
    let key = SECRET.as_bytes();
    // compressed payload (JWE-style `zip`), signed with the real secret: never decompressed → not JSON
    let zipped = hs256_raw(
        r#"{"alg":"HS256","zip":"DEF"}"#,
        &deflate_stored(payload.as_bytes()),
        key,
    );
    assert_invalid(&p, "zip", &zipped, "the token payload is not a JSON object");
    // a nested JWT (`cty: JWT`, RFC 7519 §5.2) whose outer layer is validly signed: not unwrapped
    for header in [r#"{"alg":"HS256","cty":"JWT"}"#, r#"{"alg":"HS256"}"#] {
        let nested = hs256_raw(header, inner.as_bytes(), key);
        assert_invalid(
            &p,
            header,
            &nested,
            "the token payload is not a JSON object",
        );
    }
    // an unsigned wrapper around a valid token
    let wrapper = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","cty":"JWT"}"#),
        b64(inner.as_bytes())
    );
    assert_invalid(
        &p,
        "none wrapper",
        &wrapper,
        "unsigned tokens are not accepted",
    );
    // a valid token carried as a claim of a token signed by someone else
    let carrier = format!(
        r#"{{"iss":"{ISS}","aud":"orders","exp":{},"token":"{inner}"}}"#,
        NOW + 600
    );
    let forged = hs256_raw(
        r#"{"alg":"HS256","cty":"JWT"}"#,
        carrier.as_bytes(),
        b"not-the-secret-0123456789abcdef0123",
    );
    assert_invalid(&p, "carrier", &forged, "the token signature is invalid");
    // typ naming an encrypted token
    let jwe = hs256_raw(r#"{"alg":"HS256","typ":"JWE"}"#, payload.as_bytes(), key);
    assert_invalid(&p, "typ JWE", &jwe, "the token typ is not JWT");
    // a five-part JWE compact form
    let five = format!(
        "{}.a.b.c.d",
        b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","zip":"DEF"}"#)
    );
    assert_invalid(&p, "jwe", &five, "not a compact JWS (three parts)");
}

#[test]
fn trailing_data_and_extra_segments_are_refused() {
    let p = policy_with(secret_provider(), json!({}));
    let t = valid_hs();
    let cases: Vec<(String, &str)> = vec![
        (format!("{t}."), "not a compact JWS (three parts)"),
        (format!("{t}.e30"), "not a compact JWS (three parts)"),
        (format!("{t}.{t}"), "not a compact JWS (three parts)"),
        (format!("{t}AAAA"), "the token signature is invalid"),
        (format!("{t}A"), "the token signature is invalid"),
        (format!("{t}="), "not valid base64url"),
        (format!("{t}=="), "not valid base64url"),
        (format!("{t}\u{0}"), "not valid base64url"),
        (format!("{t}%00"), "not valid base64url"),
        (format!("{t}\u{e9}"), "not valid base64url"),
        (format!(".{t}"), "not a compact JWS (three parts)"),
    ];
    for (token, text) in &cases {
        assert_invalid(&p, token, token, text);
    }
    // whitespace or a comma after the token: two credentials, an RFC 6750 invalid_request
    for suffix in [" junk", ",x", "\tx", ", Bearer x"] {
        let (status, challenge, _) = check(&p, &format!("{t}{suffix}"));
        assert_eq!(status, 401, "{suffix:?}");
        assert!(
            challenge.contains("error=\"invalid_request\""),
            "{challenge}"
        );
        assert!(
            challenge.contains("credentials are malformed"),
            "{challenge}"
        );
    }
}

#[test]
fn duplicate_json_keys_cannot_bypass_the_checks() {
    // The filter reads the header and payload with serde_json into a map: the LAST duplicate wins there.
    // jwt-simple (which verifies the signature and re-reads both) refuses duplicate known fields. So a
    // token with two `alg`s is refused whatever order they come in, even when the real secret signed it.
    let p = policy_with(secret_provider(), json!({}));
    let key = SECRET.as_bytes();
    let payload = claims_text(&(NOW + 600).to_string());
    // last alg wins in the filter: `none` → refused before any key
    let t = hs256_raw(r#"{"alg":"HS256","alg":"none"}"#, payload.as_bytes(), key);
    assert_invalid(
        &p,
        "HS256 then none",
        &t,
        "unsigned tokens are not accepted",
    );
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"HS256","alg":"none"}"#),
        b64(&payload)
    );
    assert_invalid(
        &p,
        "HS256 then none, unsigned",
        &unsigned,
        "unsigned tokens",
    );
    // last alg HS256: the filter goes on, the empty signature is refused…
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","alg":"HS256"}"#),
        b64(&payload)
    );
    assert_invalid(
        &p,
        "none then HS256, unsigned",
        &unsigned,
        "the token has no signature",
    );
    // …and a real signature still does not pass: jwt-simple refuses the duplicate field
    let t = hs256_raw(r#"{"alg":"none","alg":"HS256"}"#, payload.as_bytes(), key);
    assert_invalid(
        &p,
        "none then HS256, signed",
        &t,
        "the token claims are malformed",
    );
    // an RS256/HS256 duplicate on an RS256 provider: refused by the allow-list or the key binding
    let rsa = policy_with(rsa_provider(&["RS256"]), json!({}));
    let t = hs256_raw(r#"{"alg":"RS256","alg":"HS256"}"#, payload.as_bytes(), b"x");
    assert_invalid(
        &rsa,
        "RS256 then HS256",
        &t,
        "the token algorithm is not allowed",
    );
    // duplicate claims in a payload the real secret signed: refused, not resolved either way
    for dup in [
        format!(
            r#"{{"iss":"{ISS}","aud":"orders","exp":{},"exp":{}}}"#,
            NOW - 1000,
            NOW + 600
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"orders","exp":{},"exp":{}}}"#,
            NOW + 600,
            NOW - 1000
        ),
        format!(
            r#"{{"iss":"https://evil.test/","iss":"{ISS}","aud":"orders","exp":{}}}"#,
            NOW + 600
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"evil","aud":"orders","exp":{}}}"#,
            NOW + 600
        ),
    ] {
        let t = hs256_raw(r#"{"alg":"HS256"}"#, dup.as_bytes(), key);
        assert_invalid(&p, &dup, &t, "the token claims are malformed");
    }
    // duplicate `kid`: the filter takes the last, jwt-simple refuses the token
    let rsa_kid = policy_with(rsa_provider(&["RS256", "HS256"]), json!({}));
    let t = hs256_raw(
        r#"{"alg":"HS256","kid":"k1","kid":"zz"}"#,
        payload.as_bytes(),
        key,
    );
    assert_invalid(&rsa_kid, "dup kid", &t, "no key matches");
}

#[test]
fn time_claims_of_the_wrong_type_or_range_are_refused() {
    let p = policy_with(secret_provider(), json!({}));
    let key = SECRET.as_bytes();
    let token = |exp: &str| hs256_raw(r#"{"alg":"HS256"}"#, claims_text(exp).as_bytes(), key);
    let cases: &[(&str, &str)] = &[
        // (exp as written in the JSON, description)
        ("\"1700000600\"", "the token claims are malformed"),
        ("\"never\"", "the token claims are malformed"),
        ("true", "the token claims are malformed"),
        ("null", "the token claims are malformed"),
        ("[1700000600]", "the token claims are malformed"),
        ("{\"t\":1}", "the token claims are malformed"),
        ("-1", "the token claims are malformed"),
        ("-9223372036854775808", "the token claims are malformed"),
        // fractional NumericDates are valid JSON numbers: judged by value
        ("1699999000.5", "the token has expired"),
        ("-1.5", "the token has expired"),
        ("0", "the token has expired"),
        // beyond f64: serde_json refuses the payload
        ("1e400", "the token payload is not a JSON object"),
    ];
    for (exp, text) in cases {
        assert_invalid(&p, exp, &token(exp), text);
    }
    // a fractional exp in the future is a valid NumericDate (RFC 7519 §2)
    assert_eq!(check(&p, &token(&format!("{}.25", NOW + 600))).0, 200);
    // Huge expiries (1e300, u64::MAX, u64::MAX + 1): a token that never expires. Without max_lifetime
    // the issuer's word stands (documented: only a number is required); with it they are refused.
    let huge = [
        "1e300",
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740993",
    ];
    for exp in huge {
        assert_eq!(
            check(&p, &token(exp)).0,
            200,
            "{exp}: no lifetime cap configured"
        );
    }
    let capped = policy_with(secret_provider(), json!({"max_lifetime": "1h"}));
    for exp in huge {
        assert_invalid(&capped, exp, &token(exp), "the token lifetime is too long");
    }
    // nbf/iat of the wrong type are refused too
    for claims in [
        format!(
            r#"{{"iss":"{ISS}","aud":"orders","exp":{},"nbf":"0"}}"#,
            NOW + 600
        ),
        format!(
            r#"{{"iss":"{ISS}","aud":"orders","exp":{},"iat":-5}}"#,
            NOW + 600
        ),
    ] {
        let t = hs256_raw(r#"{"alg":"HS256"}"#, claims.as_bytes(), key);
        assert_invalid(&p, &claims, &t, "the token claims are malformed");
    }
}

#[test]
fn a_one_megabyte_token_is_refused_before_parsing() {
    // garbage in every part: the answer names the size, so nothing else was looked at
    let mb = 1024 * 1024;
    let part = "!".repeat(mb / 3);
    let garbage = format!("{part}.{part}.{part}");
    assert!(garbage.len() >= mb - 2);
    let p = policy_with(secret_provider(), json!({}));
    assert_invalid(&p, "1 MB garbage", &garbage, "the token is too large");
    // a well-formed 1 MB token (huge claim) too
    let big_claims = format!(
        r#"{{"iss":"{ISS}","aud":"orders","exp":{},"pad":"{}"}}"#,
        NOW + 600,
        "A".repeat(mb)
    );
    let big = hs256_raw(
        r#"{"alg":"HS256"}"#,
        big_claims.as_bytes(),
        SECRET.as_bytes(),
    );
    assert_invalid(&p, "1 MB valid", &big, "the token is too large");
    // at the largest configurable cap (1 MiB) a token one byte over is still refused by size
    let cap = policy_with(secret_provider(), json!({"max_token_bytes": "1MiB"}));
    let over = format!("{}{}", valid_hs(), "A".repeat(mb + 1 - valid_hs().len()));
    assert_eq!(over.len(), mb + 1);
    assert_invalid(&cap, "1 MiB + 1", &over, "the token is too large");
}

#[test]
fn a_signature_with_non_canonical_base64_padding_bits_is_refused() {
    // A 32-byte MAC is 43 base64url characters; the last one carries 2 unused bits. Flipping them gives
    // another string for the same bytes: a lenient decoder would accept several spellings of one token.
    let p = policy_with(secret_provider(), json!({}));
    let t = valid_hs();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(t.chars().last().unwrap()).unwrap();
    let mut variants = 0;
    for c in alphabet.chars().skip(last & !3).take(4) {
        let mut m = t.clone();
        m.pop();
        m.push(c);
        if m == t {
            assert_eq!(check(&p, &m).0, 200);
        } else {
            variants += 1;
            assert_invalid(&p, &m, &m, "the token signature is invalid");
        }
    }
    assert_eq!(variants, 3);
}
