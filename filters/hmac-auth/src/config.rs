//! `hmac-auth` configuration.
//!
//! ```json
//! { "credentials": [{ "username": "alice", "secret": "alice-secret" },
//!                   { "username": "batch", "secret_base64": "c2VjcmV0LWJ5dGVz" }],
//!   "enforce_headers": ["@request-target", "date"],
//!   "clock_skew": "300s",
//!   "replay_protection": true, "nonce_header": "x-nonce", "max_nonces": 10000,
//!   "validate_request_body": false, "hide_credentials": true,
//!   "consumer_header": "x-consumer-username" }
//! ```

use crate::signature::{is_request_target, Algorithm};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::HeaderName;
use portcullis_common::units::{ByteSize, DurationSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most credentials inline.
pub const MAX_CREDENTIALS: usize = 1024;
/// Longest username.
pub const MAX_USERNAME_LEN: usize = 256;
/// Longest accepted clock skew.
pub const MAX_CLOCK_SKEW_SECS: u64 = 3600;
/// Most nonces remembered (shared-data keys).
pub const MAX_MAX_NONCES: u64 = 10_000_000;

/// HMAC request signatures (Kong `hmac-auth` compatible) with replay protection.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacAuthConfig {
    /// Who may sign: usernames with their shared secrets.
    pub credentials: Vec<Credential>,
    /// Accepted algorithms. Default: hmac-sha256, hmac-sha384, hmac-sha512 (hmac-sha1 only when listed).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Largest difference between the request's `x-date` (or `date`) and the gateway clock, either way.
    #[serde(default = "default_clock_skew")]
    pub clock_skew: DurationSpec,
    /// Names that every signature must cover (e.g. `@request-target`, `date`, `digest`), besides the date
    /// header and, with replay protection, the nonce header, which are always required.
    #[serde(default)]
    pub enforce_headers: Vec<String>,
    /// Require a signed `Digest: SHA-256=<base64>` (or SHA-512) header that matches the body; the body is
    /// buffered up to `max_body_bytes` to check it.
    #[serde(default)]
    pub validate_request_body: bool,
    /// Largest body buffered for `validate_request_body`; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
    /// Remove the `Authorization` header before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Header that carries the authenticated username upstream (a client-sent value is always removed).
    #[serde(default = "default_consumer_header")]
    pub consumer_header: HeaderName,
    /// Realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Require a signed single-use nonce and refuse a second use within the clock-skew window (401).
    #[serde(default = "default_true")]
    pub replay_protection: bool,
    /// Header carrying the nonce (8 to 128 visible ASCII characters).
    #[serde(default = "default_nonce_header")]
    pub nonce_header: HeaderName,
    /// Most nonces remembered at once (one shared-data key each). When no slot is free the request is
    /// refused with 503 (fail closed) instead of forgetting a live nonce.
    #[serde(default = "default_max_nonces")]
    #[schemars(range(min = 1, max = MAX_MAX_NONCES))]
    pub max_nonces: u64,
}

/// One signer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The `username` (or `keyId`) clients put in the signature; forwarded in `consumer_header`.
    pub username: String,
    /// The shared secret as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The shared secret as standard base64 (for binary secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_base64: Option<String>,
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ]
}
fn default_clock_skew() -> DurationSpec {
    DurationSpec::from_secs(300)
}
fn default_max_body_bytes() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_consumer_header() -> HeaderName {
    HeaderName::parse("x-consumer-username").unwrap_or_else(|_| unreachable!())
}
fn default_nonce_header() -> HeaderName {
    HeaderName::parse("x-nonce").unwrap_or_else(|_| unreachable!())
}
fn default_realm() -> String {
    "portcullis".to_string()
}
fn default_true() -> bool {
    true
}
fn default_max_nonces() -> u64 {
    10_000
}

/// A credential with its secret decoded.
#[derive(Debug, Clone)]
pub struct Signer {
    pub username: String,
    pub secret: Vec<u8>,
}

impl HmacAuthConfig {
    /// Parses and validates; returns the config and the decoded signers.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Vec<Signer>), ConfigError> {
        let config: HmacAuthConfig = portcullis_common::parse_config(bytes)?;
        let signers = config.validate()?;
        Ok((config, signers))
    }

    fn validate(&self) -> Result<Vec<Signer>, ConfigError> {
        if self.credentials.is_empty() {
            return Err(ConfigError::at(
                "credentials",
                "at least one credential is required",
            ));
        }
        if self.credentials.len() > MAX_CREDENTIALS {
            return Err(ConfigError::at(
                "credentials",
                format!("more than the maximum of {MAX_CREDENTIALS} credentials"),
            ));
        }
        let mut signers: Vec<Signer> = Vec::with_capacity(self.credentials.len());
        for (i, c) in self.credentials.iter().enumerate() {
            let at = |field: &str| format!("{}.{field}", item_path("credentials", i));
            let bad_name = c.username.is_empty()
                || c.username.len() > MAX_USERNAME_LEN
                || c.username.contains('"')
                || c.username.chars().any(|ch| ch.is_control());
            if bad_name {
                return Err(ConfigError::at(
                    at("username"),
                    format!("must be 1 to {MAX_USERNAME_LEN} characters, without quotes or control characters"),
                ));
            }
            if signers.iter().any(|s| s.username == c.username) {
                return Err(ConfigError::at(
                    at("username"),
                    format!("{:?} is listed twice", c.username),
                ));
            }
            let secret = match (&c.secret, &c.secret_base64) {
                (Some(s), None) => s.as_bytes().to_vec(),
                (None, Some(b)) => STANDARD.decode(b.trim()).map_err(|e| {
                    ConfigError::at(at("secret_base64"), format!("not base64: {e}"))
                })?,
                _ => {
                    return Err(ConfigError::at(
                        item_path("credentials", i),
                        "exactly one of secret and secret_base64 is required",
                    ))
                }
            };
            if secret.is_empty() {
                return Err(ConfigError::at(at("secret"), "must not be empty"));
            }
            signers.push(Signer {
                username: c.username.clone(),
                secret,
            });
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::at(
                "algorithms",
                "at least one algorithm is required",
            ));
        }
        let skew = self.clock_skew.as_duration();
        if skew.as_secs() < 1 || skew.as_secs() > MAX_CLOCK_SKEW_SECS {
            return Err(ConfigError::at(
                "clock_skew",
                format!("must be between 1s and {MAX_CLOCK_SKEW_SECS}s"),
            ));
        }
        for (i, name) in self.enforce_headers.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            let ok = is_request_target(&lower)
                || lower == "request-line"
                || portcullis_common::http::is_valid_header_name(&lower);
            if !ok {
                return Err(ConfigError::at(
                    item_path("enforce_headers", i),
                    format!("{name:?} is not a header name, \"@request-target\", \"(request-target)\" or \"request-line\""),
                ));
            }
        }
        if self.enforce_headers.len() > crate::signature::MAX_SIGNED_HEADERS {
            return Err(ConfigError::at("enforce_headers", "too many names"));
        }
        if self.realm.is_empty()
            || self.realm.len() > 128
            || self.realm.contains('"')
            || !portcullis_common::http::is_valid_header_value(&self.realm)
        {
            return Err(ConfigError::at(
                "realm",
                "must be 1 to 128 characters, without quotes or control characters",
            ));
        }
        if self.replay_protection && (self.max_nonces == 0 || self.max_nonces > MAX_MAX_NONCES) {
            return Err(ConfigError::at(
                "max_nonces",
                format!("must be between 1 and {MAX_MAX_NONCES}"),
            ));
        }
        if self.max_body_bytes.0 == 0 {
            return Err(ConfigError::at("max_body_bytes", "must be greater than 0"));
        }
        Ok(signers)
    }

    /// The names every signature must cover: `enforce_headers`, the date header (`x-date` or `date`,
    /// whichever the request sends, is checked separately), the nonce header and `digest` when enabled.
    pub fn required_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .enforce_headers
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let mut add = |n: &str| {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_string());
            }
        };
        if self.replay_protection {
            add(self.nonce_header.as_str());
        }
        if self.validate_request_body {
            add("digest");
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        HmacAuthConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_takes_safe_defaults() {
        let (c, signers) =
            HmacAuthConfig::parse(br#"{"credentials":[{"username":"alice","secret":"s"}]}"#)
                .unwrap();
        assert_eq!(c.algorithms, default_algorithms());
        assert!(!c.algorithms.contains(&Algorithm::HmacSha1));
        assert_eq!(c.clock_skew, DurationSpec::from_secs(300));
        assert!(c.replay_protection);
        assert_eq!(c.nonce_header.as_str(), "x-nonce");
        assert_eq!(c.max_nonces, 10_000);
        assert_eq!(signers[0].secret, b"s");
        assert_eq!(c.required_headers(), vec!["x-nonce"]);
    }

    #[test]
    fn base64_secrets_are_decoded() {
        let (_, signers) = HmacAuthConfig::parse(
            br#"{"credentials":[{"username":"b","secret_base64":"AAECAw=="}]}"#,
        )
        .unwrap();
        assert_eq!(signers[0].secret, vec![0, 1, 2, 3]);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cred = r#""credentials":[{"username":"a","secret":"s"}]"#;
        let cases = [
            (r#"{}"#.to_string(), "missing field `credentials`"),
            (
                r#"{"credentials":[]}"#.to_string(),
                "credentials: at least one",
            ),
            (
                r#"{"credentials":[{"username":"a"}]}"#.to_string(),
                "credentials[0]: exactly one of secret",
            ),
            (
                r#"{"credentials":[{"username":"a","secret":"s","secret_base64":"cw=="}]}"#
                    .to_string(),
                "credentials[0]: exactly one of secret",
            ),
            (
                r#"{"credentials":[{"username":"a","secret_base64":"!!"}]}"#.to_string(),
                "credentials[0].secret_base64: not base64",
            ),
            (
                r#"{"credentials":[{"username":"a","secret":""}]}"#.to_string(),
                "credentials[0].secret: must not be empty",
            ),
            (
                r#"{"credentials":[{"username":"a\"b","secret":"s"}]}"#.to_string(),
                "credentials[0].username: must be",
            ),
            (
                r#"{"credentials":[{"username":"a","secret":"s"},{"username":"a","secret":"t"}]}"#
                    .to_string(),
                "credentials[1].username: \"a\" is listed twice",
            ),
            (
                format!(r#"{{{cred},"algorithms":["hmac-md5"]}}"#),
                "algorithms[0]: unknown variant",
            ),
            (
                format!(r#"{{{cred},"algorithms":[]}}"#),
                "algorithms: at least one",
            ),
            (
                format!(r#"{{{cred},"clock_skew":"2h"}}"#),
                "clock_skew: must be between",
            ),
            (
                format!(r#"{{{cred},"clock_skew":300}}"#),
                "clock_skew: expected a duration",
            ),
            (
                format!(r#"{{{cred},"enforce_headers":["date","bad header"]}}"#),
                "enforce_headers[1]: ",
            ),
            (
                format!(r#"{{{cred},"max_nonces":0}}"#),
                "max_nonces: must be between",
            ),
            (
                format!(r#"{{{cred},"nonce_header":"x y"}}"#),
                "nonce_header: ",
            ),
            (format!(r#"{{{cred},"realm":"a\"b"}}"#), "realm: must be"),
            (
                format!(r#"{{{cred},"secret":"s"}}"#),
                "secret: unknown field",
            ),
        ];
        for (json, want) in cases {
            let err = error(&json);
            assert!(
                err.starts_with(want),
                "{json}\n  got:  {err}\n  want: {want}"
            );
        }
    }

    #[test]
    fn sha1_is_accepted_only_when_listed() {
        let (c, _) = HmacAuthConfig::parse(
            br#"{"credentials":[{"username":"a","secret":"s"}],"algorithms":["hmac-sha1"]}"#,
        )
        .unwrap();
        assert_eq!(c.algorithms, vec![Algorithm::HmacSha1]);
    }

    #[test]
    fn schema_describes_every_field() {
        let s = portcullis_common::schema::config_schema::<HmacAuthConfig>();
        assert_eq!(s["additionalProperties"], false);
        for field in [
            "credentials",
            "algorithms",
            "clock_skew",
            "enforce_headers",
            "validate_request_body",
            "max_body_bytes",
            "hide_credentials",
            "consumer_header",
            "realm",
            "replay_protection",
            "nonce_header",
            "max_nonces",
        ] {
            assert!(
                s["properties"][field]["description"].is_string(),
                "{field}: {s}"
            );
        }
        assert_eq!(s["required"], serde_json::json!(["credentials"]));
        assert!(!s.to_string().contains("$ref"));
    }
}
