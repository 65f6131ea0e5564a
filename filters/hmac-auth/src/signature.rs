//! The HMAC signature scheme shared by the verifier (the filter) and signers (clients, tests):
//!
//! ```text
//! Authorization: hmac username="alice", algorithm="hmac-sha256", headers="@request-target date x-nonce", signature="<base64>"
//! Authorization: Signature keyId="alice", algorithm="hmac-sha256", headers="(request-target) date", signature="<base64>"
//! ```
//!
//! The signing string has one line per name in `headers`, joined by `\n`:
//! - `request-line` (Kong): `GET /path?query HTTP/1.1`
//! - `(request-target)` or `@request-target` (draft-cavage): `<name>: <lower-case method> <path?query>`
//! - any other header: `<lower-case name>: <value>` (the header's first value)
//!
//! The signature is base64(HMAC(secret, signing string)) with SHA-256, SHA-384, SHA-512 (or SHA-1).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest `Authorization` value parsed.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Most names in `headers="..."`.
pub const MAX_SIGNED_HEADERS: usize = 32;
/// Longest signing string built (a bound on hashing work and memory per request).
pub const MAX_SIGNING_STRING: usize = 16 * 1024;

/// A MAC algorithm, named as in the `algorithm` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Algorithm {
    /// HMAC-SHA1: weak, accepted only when listed explicitly in `algorithms`.
    #[serde(rename = "hmac-sha1")]
    HmacSha1,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        [
            Algorithm::HmacSha1,
            Algorithm::HmacSha256,
            Algorithm::HmacSha384,
            Algorithm::HmacSha512,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// HMAC of `data` under `key`.
    pub fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            match <M as Mac>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(key, data),
            Algorithm::HmacSha256 => run::<Hmac<Sha256>>(key, data),
            Algorithm::HmacSha384 => run::<Hmac<Sha384>>(key, data),
            Algorithm::HmacSha512 => run::<Hmac<Sha512>>(key, data),
        }
    }

    /// Whether `signature` is the HMAC of `data` under `key`, compared in constant time.
    pub fn verify(self, key: &[u8], data: &[u8], signature: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8], sig: &[u8]) -> bool {
            match <M as Mac>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.verify_slice(sig).is_ok()
                }
                Err(_) => false,
            }
        }
        match self {
            Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(key, data, signature),
            Algorithm::HmacSha256 => run::<Hmac<Sha256>>(key, data, signature),
            Algorithm::HmacSha384 => run::<Hmac<Sha384>>(key, data, signature),
            Algorithm::HmacSha512 => run::<Hmac<Sha512>>(key, data, signature),
        }
    }
}

/// The parameters of a signed request's `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub algorithm: String,
    /// Signed header names, lower-case, in order.
    pub headers: Vec<String>,
    pub signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not an `hmac`/`Signature` authorization at all.
    NotHmac,
    /// The right scheme, but unreadable parameters.
    Malformed,
}

/// Parses `hmac username="..", algorithm="..", headers="..", signature=".."` (also `Signature keyId=..`).
/// A missing `headers` parameter means `date` (Kong and draft-cavage).
pub fn parse_authorization(value: &str) -> Result<Credentials, ParseError> {
    let value = value.trim();
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(ParseError::Malformed);
    }
    let (scheme, params) = value.split_once(' ').ok_or(ParseError::NotHmac)?;
    if !(scheme.eq_ignore_ascii_case("hmac") || scheme.eq_ignore_ascii_case("signature")) {
        return Err(ParseError::NotHmac);
    }
    let mut username = None;
    let mut algorithm = None;
    let mut headers = None;
    let mut signature = None;
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or(ParseError::Malformed)?;
        let key = key.trim();
        let after = after.trim_start();
        let (val, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').ok_or(ParseError::Malformed)?;
                let (v, tail) = quoted.split_at(end);
                (v, tail.get(1..).unwrap_or(""))
            }
            None => match after.find(',') {
                Some(end) => after.split_at(end),
                None => (after, ""),
            },
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "username" | "keyid" => &mut username,
            "algorithm" => &mut algorithm,
            "headers" => &mut headers,
            "signature" => &mut signature,
            _ => return Err(ParseError::Malformed),
        };
        if slot.replace(val.trim().to_string()).is_some() {
            return Err(ParseError::Malformed); // a repeated parameter is ambiguous
        }
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if after.is_empty() => "",
            None => return Err(ParseError::Malformed),
        };
    }
    let headers: Vec<String> = headers
        .as_deref()
        .unwrap_or("date")
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    if headers.is_empty() || headers.len() > MAX_SIGNED_HEADERS {
        return Err(ParseError::Malformed);
    }
    match (username, algorithm, signature) {
        (Some(u), Some(a), Some(s)) if !u.is_empty() && !s.is_empty() => Ok(Credentials {
            username: u,
            algorithm: a,
            headers,
            signature: s,
        }),
        _ => Err(ParseError::Malformed),
    }
}

/// Whether a signed-header name is one of the request-target pseudo-headers.
pub fn is_request_target(name: &str) -> bool {
    name == "(request-target)" || name == "@request-target"
}

/// Builds the signing string. `header(name)` returns the request's (first) value of a header; `Err` names
/// a signed header the request lacks (or that makes the string too long).
pub fn signing_string(
    names: &[String],
    method: &str,
    path_and_query: &str,
    protocol: &str,
    mut header: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if name == "request-line" {
            out.push_str(&format!("{method} {path_and_query} {protocol}"));
        } else if is_request_target(name) {
            out.push_str(&format!(
                "{name}: {} {path_and_query}",
                method.to_ascii_lowercase()
            ));
        } else {
            let value = header(name).ok_or_else(|| name.clone())?;
            out.push_str(name);
            out.push_str(": ");
            out.push_str(&value);
        }
        if out.len() > MAX_SIGNING_STRING {
            return Err(name.clone());
        }
    }
    Ok(out)
}

/// What a client needs to sign: the request line and its headers (names case-insensitive).
#[derive(Debug, Clone)]
pub struct SigningRequest<'a> {
    pub method: &'a str,
    /// Path with query, exactly as sent (`/orders?id=7`).
    pub path: &'a str,
    /// Only used by the `request-line` item: `HTTP/1.1` unless the request goes out over HTTP/2.
    pub protocol: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

/// Signs a request: returns the `Authorization` header value. Every name in `signed_headers` other than
/// the request-target pseudo-headers must be among `request.headers` (including `date`/`x-date`, and the
/// nonce and `digest` headers when the gateway requires them).
///
/// (`no_run`: a doctest links the filter's wasm exports, which the wasm32 test runner refuses; the same
/// flow runs in the unit and e2e tests.)
///
/// ```no_run
/// use portcullis_hmac_auth::{body_digest, http_date, sign, Algorithm, SigningRequest};
/// let date = http_date(std::time::SystemTime::now());
/// let body = br#"{"amount": 10}"#;
/// let digest = body_digest(body);
/// let headers = [("date", date.as_str()), ("x-nonce", "3f1c0a9e-7b1d"), ("digest", digest.as_str())];
/// let request = SigningRequest { method: "POST", path: "/payments", protocol: "HTTP/1.1", headers: &headers };
/// let authorization = sign("alice", b"alice-secret", Algorithm::HmacSha256,
///                          &["@request-target", "date", "x-nonce", "digest"], &request).unwrap();
/// assert!(authorization.starts_with(r#"hmac username="alice", algorithm="hmac-sha256""#));
/// ```
pub fn sign(
    username: &str,
    secret: &[u8],
    algorithm: Algorithm,
    signed_headers: &[&str],
    request: &SigningRequest,
) -> Result<String, String> {
    if username.is_empty() || username.contains('"') || username.chars().any(char::is_control) {
        return Err(format!("username {username:?} cannot be put in the header"));
    }
    let names: Vec<String> = signed_headers
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let string = signing_string(
        &names,
        request.method,
        request.path,
        request.protocol,
        |name| {
            request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_string())
        },
    )
    .map_err(|name| format!("signed header {name:?} is not among the request's headers"))?;
    let signature = STANDARD.encode(algorithm.mac(secret, string.as_bytes()));
    Ok(format!(
        "hmac username=\"{username}\", algorithm=\"{}\", headers=\"{}\", signature=\"{signature}\"",
        algorithm.name(),
        names.join(" ")
    ))
}

/// The `Digest` header value for a body: `SHA-256=<base64>`.
pub fn body_digest(body: &[u8]) -> String {
    format!("SHA-256={}", STANDARD.encode(Sha256::digest(body)))
}

/// A `Date` header value (IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// Seconds since the epoch of an HTTP date (any of the three RFC 9110 formats).
pub fn parse_http_date(value: &str) -> Option<u64> {
    httpdate::parse_http_date(value.trim())
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// A digest algorithm from a `Digest` header entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    pub fn digest(self, body: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha256 => Sha256::digest(body).to_vec(),
            DigestAlgorithm::Sha512 => Sha512::digest(body).to_vec(),
        }
    }
}

/// The first supported entry of a `Digest` header (`SHA-256=<b64>, SHA-512=<b64>`), decoded.
pub fn parse_digest(value: &str) -> Option<(DigestAlgorithm, Vec<u8>)> {
    value.split(',').take(8).find_map(|entry| {
        let (alg, b64) = entry.trim().split_once('=')?;
        let alg = match alg.to_ascii_uppercase().as_str() {
            "SHA-256" => DigestAlgorithm::Sha256,
            "SHA-512" => DigestAlgorithm::Sha512,
            _ => return None,
        };
        Some((alg, STANDARD.decode(b64.trim()).ok()?))
    })
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_parsing_table() {
        let ok = [
            (
                r#"hmac username="alice", algorithm="hmac-sha256", headers="date request-line", signature="c2ln""#,
                ("alice", "hmac-sha256", vec!["date", "request-line"], "c2ln"),
            ),
            (
                r#"Signature keyId="bob",algorithm="hmac-sha512",headers="(request-target) Date",signature="eA==""#,
                (
                    "bob",
                    "hmac-sha512",
                    vec!["(request-target)", "date"],
                    "eA==",
                ),
            ),
            (
                r#"HMAC username="c", algorithm=hmac-sha384, signature="s""#,
                ("c", "hmac-sha384", vec!["date"], "s"),
            ),
        ];
        for (value, (u, a, h, s)) in ok {
            let c = parse_authorization(value).unwrap_or_else(|e| panic!("{value}: {e:?}"));
            assert_eq!(
                (
                    c.username.as_str(),
                    c.algorithm.as_str(),
                    c.headers,
                    c.signature.as_str()
                ),
                (u, a, h.into_iter().map(String::from).collect(), s),
                "{value}"
            );
        }
        let bad = [
            ("Bearer abc", ParseError::NotHmac),
            ("hmac", ParseError::NotHmac),
            (r#"hmac username="a", algorithm="x""#, ParseError::Malformed),
            (
                r#"hmac username="a, algorithm="x", signature="s""#,
                ParseError::Malformed,
            ),
            (
                r#"hmac username="a", username="b", algorithm="x", signature="s""#,
                ParseError::Malformed,
            ),
            (
                r#"hmac username="a", algorithm="x", signature="s", extra="1""#,
                ParseError::Malformed,
            ),
            (r#"hmac username="a" algorithm="x""#, ParseError::Malformed),
            (
                r#"hmac username="", algorithm="x", signature="s""#,
                ParseError::Malformed,
            ),
            (
                r#"hmac username="a", algorithm="x", headers="  ", signature="s""#,
                ParseError::Malformed,
            ),
        ];
        for (value, want) in bad {
            assert_eq!(parse_authorization(value), Err(want), "{value}");
        }
        let long = format!(
            r#"hmac username="a", algorithm="x", signature="{}""#,
            "s".repeat(MAX_AUTHORIZATION_LEN)
        );
        assert_eq!(parse_authorization(&long), Err(ParseError::Malformed));
    }

    #[test]
    fn signing_string_follows_kong_and_cavage() {
        let names: Vec<String> = [
            "request-line",
            "(request-target)",
            "@request-target",
            "date",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let s = signing_string(&names, "GET", "/a?b=1", "HTTP/1.1", |n| {
            (n == "date").then(|| "Thu, 01 Jan 2026 00:00:00 GMT".to_string())
        })
        .unwrap();
        assert_eq!(
            s,
            "GET /a?b=1 HTTP/1.1\n(request-target): get /a?b=1\n@request-target: get /a?b=1\ndate: Thu, 01 Jan 2026 00:00:00 GMT"
        );
        let missing = signing_string(&["x-nonce".to_string()], "GET", "/", "HTTP/1.1", |_| None);
        assert_eq!(missing, Err("x-nonce".to_string()));
    }

    #[test]
    fn known_answer_hmac_sha256() {
        // RFC 4231 test case 2
        let mac = Algorithm::HmacSha256.mac(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn every_algorithm_verifies_its_own_mac_and_rejects_others() {
        for alg in [
            Algorithm::HmacSha1,
            Algorithm::HmacSha256,
            Algorithm::HmacSha384,
            Algorithm::HmacSha512,
        ] {
            let mac = alg.mac(b"k", b"data");
            assert!(alg.verify(b"k", b"data", &mac), "{alg:?}");
            assert!(!alg.verify(b"k2", b"data", &mac), "{alg:?}");
            assert!(!alg.verify(b"k", b"datb", &mac), "{alg:?}");
            assert!(!alg.verify(b"k", b"data", &mac[..mac.len() - 1]), "{alg:?}");
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("hmac-md5"), None);
    }

    #[test]
    fn sign_produces_a_parsable_header_that_verifies() {
        let headers = [
            ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ("x-nonce", "n-1"),
        ];
        let req = SigningRequest {
            method: "POST",
            path: "/p?q",
            protocol: "HTTP/1.1",
            headers: &headers,
        };
        let auth = sign(
            "alice",
            b"s3cret",
            Algorithm::HmacSha512,
            &["@request-target", "date", "X-Nonce"],
            &req,
        )
        .unwrap();
        let c = parse_authorization(&auth).unwrap();
        assert_eq!(c.headers, vec!["@request-target", "date", "x-nonce"]);
        let string = signing_string(&c.headers, "POST", "/p?q", "HTTP/1.1", |n| {
            headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let sig = STANDARD.decode(&c.signature).unwrap();
        assert!(Algorithm::HmacSha512.verify(b"s3cret", string.as_bytes(), &sig));
        assert!(sign("a", b"k", Algorithm::HmacSha256, &["x-missing"], &req).is_err());
    }

    #[test]
    fn digests_and_dates_round_trip() {
        let d = body_digest(b"hello");
        assert_eq!(d, "SHA-256=LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
        let (alg, bytes) = parse_digest(&d).unwrap();
        assert_eq!(alg, DigestAlgorithm::Sha256);
        assert!(ct_eq(&bytes, &alg.digest(b"hello")));
        assert_eq!(
            parse_digest("MD5=abc, SHA-512=AAAA").unwrap().0,
            DigestAlgorithm::Sha512
        );
        assert_eq!(parse_digest("MD5=abc"), None);
        assert_eq!(parse_digest("SHA-256=!!!"), None);
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
        let text = http_date(t);
        assert_eq!(text, "Thu, 01 Jan 2026 00:00:00 GMT");
        assert_eq!(parse_http_date(&text), Some(1_767_225_600));
        assert_eq!(parse_http_date("yesterday"), None);
        assert!(!ct_eq(b"ab", b"abc"));
    }
}
