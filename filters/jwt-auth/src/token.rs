//! Token shape and header checks made before any key is touched (RFC 8725): size cap, compact form,
//! strict base64url, JSON objects, `alg` (never `none`), no `crit`, no keys or key URLs named by the token.

use crate::keys::Algorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// Largest decoded JOSE header accepted.
const MAX_HEADER_BYTES: usize = 2048;

/// A token whose shape and header passed the checks; the signature is not verified yet.
#[derive(Debug)]
pub struct Parsed<'t> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The base64url payload as in the token (for `forward_payload_header`).
    pub payload_b64: &'t str,
    pub claims: Map<String, Value>,
}

/// Why a token was refused before signature verification. `reason()` is the metric/log label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    TooLarge,
    Malformed(&'static str),
    AlgNone,
    UnsupportedAlg,
    Crit,
    EmbeddedKey(&'static str),
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::Malformed(_) => "malformed",
            Rejection::AlgNone => "alg_none",
            Rejection::UnsupportedAlg => "algorithm",
            Rejection::Crit => "crit",
            Rejection::EmbeddedKey(_) => "embedded_key",
        }
    }

    /// RFC 6750 `error_description`: fixed text, never token content.
    pub fn description(&self) -> &'static str {
        match self {
            Rejection::TooLarge => "the token is too large",
            Rejection::Malformed(what) => what,
            Rejection::AlgNone => "unsigned tokens are not accepted",
            Rejection::UnsupportedAlg => "the token algorithm is not supported",
            Rejection::Crit => "the token has critical header parameters that are not understood",
            Rejection::EmbeddedKey(_) => {
                "the token header names its own key, which is never trusted"
            }
        }
    }
}

fn is_b64url(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Rejection::Malformed(what)),
    }
}

/// Checks a token's size, shape and header.
pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, Rejection> {
    if token.len() > max_bytes {
        return Err(Rejection::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed(
            "the token is not a compact JWS (three parts)",
        ));
    };
    if header.is_empty()
        || payload.is_empty()
        || !is_b64url(header)
        || !is_b64url(payload)
        || !is_b64url(signature)
    {
        return Err(Rejection::Malformed("the token is not valid base64url"));
    }
    if header.len() > MAX_HEADER_BYTES * 4 / 3 + 4 {
        return Err(Rejection::Malformed("the token header is too large"));
    }
    let h = decode_object(header, "the token header is not a JSON object")?;
    let alg = h
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Rejection::Malformed("the token header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(Rejection::AlgNone);
    }
    let alg = Algorithm::from_name(alg).ok_or(Rejection::UnsupportedAlg)?;
    if signature.is_empty() {
        return Err(Rejection::Malformed("the token has no signature"));
    }
    // RFC 7515 §4.1.11: a recipient must reject a token whose `crit` lists extensions it does not
    // understand; Portcullis understands none.
    if h.contains_key("crit") {
        return Err(Rejection::Crit);
    }
    for (name, label) in [
        ("jku", "jku"),
        ("x5u", "x5u"),
        ("jwk", "jwk"),
        ("x5c", "x5c"),
    ] {
        if h.contains_key(name) {
            return Err(Rejection::EmbeddedKey(label));
        }
    }
    if let Some(typ) = h.get("typ") {
        let ok = typ.as_str().is_some_and(|t| {
            let t = t.to_ascii_lowercase();
            t == "jwt" || t == "at+jwt" || t.ends_with("+jwt") || t == "application/jwt"
        });
        if !ok {
            return Err(Rejection::Malformed("the token typ is not JWT"));
        }
    }
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err(Rejection::Malformed("the token kid is not a short string")),
    };
    let claims = decode_object(payload, "the token payload is not a JSON object")?;
    Ok(Parsed {
        alg,
        kid,
        payload_b64: payload,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn header_and_shape_attacks_are_rejected_before_any_key_is_used() {
        let ok_payload = r#"{"iss":"x"}"#;
        let cases: Vec<(String, Rejection)> = vec![
            (
                "a.b".into(),
                Rejection::Malformed("the token is not a compact JWS (three parts)"),
            ),
            (
                "a.b.c.d".into(),
                Rejection::Malformed("the token is not a compact JWS (three parts)"),
            ),
            (
                "a+b.c.d".into(),
                Rejection::Malformed("the token is not valid base64url"),
            ),
            (
                format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(ok_payload)),
                Rejection::AlgNone,
            ),
            (token(r#"{"alg":"NoNe"}"#, ok_payload), Rejection::AlgNone),
            (
                token(r#"{"alg":"HS1"}"#, ok_payload),
                Rejection::UnsupportedAlg,
            ),
            (
                token(r#"{"alg":"rs256"}"#, ok_payload),
                Rejection::UnsupportedAlg,
            ),
            (
                token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, ok_payload),
                Rejection::Crit,
            ),
            (
                token(r#"{"alg":"RS256","jku":"https://evil/jwks"}"#, ok_payload),
                Rejection::EmbeddedKey("jku"),
            ),
            (
                token(r#"{"alg":"RS256","x5u":"https://evil/cert"}"#, ok_payload),
                Rejection::EmbeddedKey("x5u"),
            ),
            (
                token(
                    r#"{"alg":"RS256","jwk":{"kty":"oct","k":"AA"}}"#,
                    ok_payload,
                ),
                Rejection::EmbeddedKey("jwk"),
            ),
            (
                token(r#"{"alg":"RS256","x5c":["MII"]}"#, ok_payload),
                Rejection::EmbeddedKey("x5c"),
            ),
            (
                token(r#"["alg"]"#, ok_payload),
                Rejection::Malformed("the token header is not a JSON object"),
            ),
            (
                token(r#"{"alg":5}"#, ok_payload),
                Rejection::Malformed("the token header has no alg"),
            ),
            (
                token(r#"{"alg":"RS256","typ":"JWE"}"#, ok_payload),
                Rejection::Malformed("the token typ is not JWT"),
            ),
            (
                token(r#"{"alg":"RS256","kid":7}"#, ok_payload),
                Rejection::Malformed("the token kid is not a short string"),
            ),
            (
                token(r#"{"alg":"RS256"}"#, "[1]"),
                Rejection::Malformed("the token payload is not a JSON object"),
            ),
            (
                token(r#"{"alg":"RS256"}"#, "{not json"),
                Rejection::Malformed("the token payload is not a JSON object"),
            ),
            (
                format!("{}.{}.", b64(r#"{"alg":"RS256"}"#), b64(ok_payload)),
                Rejection::Malformed("the token has no signature"),
            ),
            // padding or the standard alphabet are not base64url
            (
                format!("{}=.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(ok_payload)),
                Rejection::Malformed("the token is not valid base64url"),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(parse(&t, 8192).map(|_| ()), Err(want.clone()), "{t}");
            assert!(!want.description().is_empty());
        }
    }

    #[test]
    fn oversized_tokens_are_rejected_without_parsing() {
        let t = "x".repeat(9000);
        assert_eq!(parse(&t, 8192).unwrap_err(), Rejection::TooLarge);
        assert_eq!(parse(&t, 8192).unwrap_err().reason(), "too_large");
    }

    #[test]
    fn non_canonical_base64_never_panics() {
        for t in [
            "\u{e9}.a.b",
            "..",
            "....",
            "=.=.=",
            "_-_.-_-.___",
            "AAAA.AAAA.AAAA",
            "eyJ.eyJ.e",
        ] {
            assert!(parse(t, 8192).is_err(), "{t}");
        }
    }

    #[test]
    fn a_well_formed_token_yields_alg_kid_and_claims() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
            r#"{"iss":"me","n":{"a":1}}"#,
        );
        let p = parse(&t, 8192).unwrap();
        assert_eq!(p.alg, Algorithm::ES256);
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.claims["n"]["a"], 1);
        assert_eq!(p.payload_b64, t.split('.').nth(1).unwrap());
    }
}
