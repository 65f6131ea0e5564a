//! `jwt-auth` configuration: serde types (what operators write) and their validation into the checked
//! [`Provider`]s the policy uses. Every error names its JSON path.
//!
//! ```json
//! { "providers": [{ "name": "corp", "issuer": "https://id.example.com/", "audiences": ["orders-api"],
//!                   "algorithms": ["RS256"],
//!                   "jwks_uri": { "cluster": "idp", "url": "https://id.example.com/.well-known/jwks.json" } }],
//!   "claims_to_headers": [{ "claim": "sub", "header": "x-user" }] }
//! ```

use crate::keys::{Algorithm, KeySet};
use base64::Engine;
use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::HeaderName;
use portcullis_common::units::{ByteSize, DurationSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// JWT authentication: which issuers are trusted, where the token is, what it must claim.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// Trusted token issuers (at least one). A token is checked by the provider whose `issuer` equals its `iss`.
    pub providers: Vec<ProviderConfig>,
    /// Headers that may carry the token, tried in order. Default: `Authorization` with prefix `Bearer `.
    #[serde(default = "default_from_headers")]
    pub from_headers: Vec<HeaderSource>,
    /// Query parameters that may carry the token. Default: `access_token`.
    #[serde(default = "default_from_params")]
    pub from_params: Vec<String>,
    /// Cookies that may carry the token. Default: none.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Tolerance applied to `exp`, `nbf` and `iat` for clock differences between issuer and gateway.
    #[serde(default = "default_clock_skew")]
    pub clock_skew: DurationSpec,
    /// Longest accepted token lifetime (`exp` − `iat`); unset = no limit.
    #[serde(default)]
    pub max_lifetime: Option<DurationSpec>,
    /// Reject tokens without an `exp` claim.
    #[serde(default = "yes")]
    pub require_expiration: bool,
    /// Claims copied to request headers after successful verification (the header is always removed from
    /// the incoming request first, so clients cannot forge it).
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// If set, the verified payload (base64url JSON, as in the token) is sent upstream in this header.
    #[serde(default)]
    pub forward_payload_header: Option<HeaderName>,
    /// Keep the token in the request sent upstream (false: it is removed from its header/parameter/cookie).
    #[serde(default)]
    pub forward: bool,
    /// The `realm` of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Let requests without any token through (bad tokens are still rejected).
    #[serde(default)]
    pub allow_missing: bool,
    /// Let CORS preflight requests (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) through.
    #[serde(default)]
    pub bypass_cors_preflight: bool,
    /// Tokens longer than this are rejected before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: ByteSize,
    /// Most verified tokens remembered per worker (until their `exp`; at most 4 MiB of token text, tokens over
    /// 16 KiB are never cached); 0 disables.
    #[serde(default = "default_cache_entries")]
    pub cache_max_entries: u32,
    /// Messages of the JSON error bodies.
    #[serde(default)]
    pub messages: Messages,
}

/// A header that may carry the token.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    /// The header name.
    pub name: HeaderName,
    /// Text before the token (compared case-insensitively), e.g. `Bearer `; empty = the whole value.
    #[serde(default)]
    pub value_prefix: String,
}

/// Copies one claim into a request header.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The claim, as a dotted path for nested claims (`realm_access.roles`).
    pub claim: String,
    /// The request header that receives it (strings as is, arrays comma-joined, objects as JSON; sanitised).
    pub header: HeaderName,
}

/// A claim the token must carry.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// The claim, as a dotted path for nested claims.
    pub claim: String,
    /// Accepted values (any of). Empty = the claim only has to be present. A space-separated string claim
    /// (like `scope`) or an array claim matches if any of its items is accepted.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Error body messages.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    /// When no token was sent (401).
    #[serde(default = "default_missing")]
    pub missing: String,
    /// When the token is invalid (401).
    #[serde(default = "default_invalid")]
    pub invalid: String,
    /// When the token is valid but a required claim is missing (403).
    #[serde(default = "default_forbidden")]
    pub forbidden: String,
}

impl Default for Messages {
    fn default() -> Self {
        Messages {
            missing: default_missing(),
            invalid: default_invalid(),
            forbidden: default_forbidden(),
        }
    }
}

/// One trusted issuer and its keys.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The exact `iss` value of this provider's tokens.
    pub issuer: String,
    /// Accepted `aud` values (any of); empty = `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `sub` values (any of); unset = any subject.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// Accepted signature algorithms (required): HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384,
    /// PS512, ES256, ES384, EdDSA. A token whose `alg` is not listed is rejected.
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS* algorithms (at least as long as the hash: 32/48/64 bytes).
    #[serde(default)]
    pub secret: Option<String>,
    /// `secret` is base64 (standard or URL-safe alphabet).
    #[serde(default)]
    pub secret_is_base64: bool,
    /// Inline JWKS (a JSON object `{"keys": [...]}` or a string holding one).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Remote JWKS, fetched from the root context and shared by all workers.
    #[serde(default)]
    pub jwks_uri: Option<RemoteJwksConfig>,
    /// Claims the token must carry; a missing or unaccepted value answers 403.
    #[serde(default)]
    pub required_claims: Vec<ClaimRule>,
}

/// Where and how often to fetch a JWKS.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    /// Envoy: the cluster name; Kong: `host:port`.
    pub cluster: String,
    /// The JWKS URL (`http(s)://host/path`); its host becomes `:authority`, its path the request path.
    pub url: String,
    /// Fetch timeout; also the longest a request waits for the first fetch.
    #[serde(default = "default_fetch_timeout")]
    pub timeout: DurationSpec,
    /// How long a fetched JWKS is used before it is fetched again.
    #[serde(default = "default_cache_duration")]
    pub cache_duration: DurationSpec,
    /// Minimum time between two re-fetches caused by tokens with an unknown `kid`.
    #[serde(default = "default_refetch_interval")]
    pub refetch_interval: DurationSpec,
}

fn yes() -> bool {
    true
}
fn default_from_headers() -> Vec<HeaderSource> {
    vec![HeaderSource {
        name: HeaderName::parse("authorization").unwrap_or_else(|_| unreachable!()),
        value_prefix: "Bearer ".into(),
    }]
}
fn default_from_params() -> Vec<String> {
    vec!["access_token".into()]
}
fn default_clock_skew() -> DurationSpec {
    DurationSpec::from_secs(60)
}
fn default_realm() -> String {
    "portcullis".into()
}
fn default_max_token_bytes() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_cache_entries() -> u32 {
    1024
}
fn default_missing() -> String {
    "authentication required".into()
}
fn default_invalid() -> String {
    "invalid token".into()
}
fn default_forbidden() -> String {
    "insufficient scope".into()
}
fn default_fetch_timeout() -> DurationSpec {
    DurationSpec::from_secs(5)
}
fn default_cache_duration() -> DurationSpec {
    DurationSpec::from_secs(600)
}
fn default_refetch_interval() -> DurationSpec {
    DurationSpec::from_secs(30)
}

/// Bounds on config sizes: per-request work and memory stay small whatever the config says.
pub const MAX_PROVIDERS: usize = 32;
pub const MAX_SOURCES: usize = 16;
pub const MAX_RULES: usize = 32;
pub const MAX_CLAIM_HEADERS: usize = 32;

/// A validated remote JWKS source.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub cache_duration: Duration,
    pub refetch_interval: Duration,
}

/// A validated provider.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub subjects: Option<Vec<String>>,
    pub algorithms: Vec<Algorithm>,
    /// Keys known at configure time (secret and inline JWKS).
    pub static_keys: KeySet,
    pub remote: Option<RemoteJwks>,
    pub required_claims: Vec<ClaimRule>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Settings {
    pub raw: JwtAuthConfig,
    pub providers: Vec<Provider>,
}

impl JwtAuthConfig {
    pub fn parse(bytes: &[u8]) -> Result<Settings, ConfigError> {
        let raw: JwtAuthConfig = portcullis_common::parse_config(bytes)?;
        let providers = raw.validate()?;
        Ok(Settings { raw, providers })
    }

    fn validate(&self) -> Result<Vec<Provider>, ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::at(
                "providers",
                "at least one provider is required",
            ));
        }
        if self.providers.len() > MAX_PROVIDERS {
            return Err(ConfigError::at(
                "providers",
                format!("at most {MAX_PROVIDERS} providers"),
            ));
        }
        if self.from_headers.len() + self.from_params.len() + self.from_cookies.len() > MAX_SOURCES
        {
            return Err(ConfigError::at(
                "from_headers",
                format!("at most {MAX_SOURCES} token sources"),
            ));
        }
        if self.from_headers.is_empty()
            && self.from_params.is_empty()
            && self.from_cookies.is_empty()
        {
            return Err(ConfigError::at(
                "from_headers",
                "no token source: configure from_headers, from_params or from_cookies",
            ));
        }
        for (i, p) in self.from_params.iter().enumerate() {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            {
                return Err(ConfigError::at(
                    item_path("from_params", i),
                    format!("{p:?} is not a plain parameter name"),
                ));
            }
        }
        for (i, c) in self.from_cookies.iter().enumerate() {
            if c.is_empty() || !portcullis_common::http::is_valid_header_name(c) {
                return Err(ConfigError::at(
                    item_path("from_cookies", i),
                    format!("{c:?} is not a valid cookie name"),
                ));
            }
        }
        for (i, h) in self.from_headers.iter().enumerate() {
            if !portcullis_common::http::is_valid_header_value(&h.value_prefix) {
                return Err(ConfigError::at(
                    format!("{}.value_prefix", item_path("from_headers", i)),
                    "control characters are not allowed",
                ));
            }
        }
        if self.claims_to_headers.len() > MAX_CLAIM_HEADERS {
            return Err(ConfigError::at(
                "claims_to_headers",
                format!("at most {MAX_CLAIM_HEADERS} entries"),
            ));
        }
        for (i, c) in self.claims_to_headers.iter().enumerate() {
            check_claim_path(&c.claim).map_err(|m| {
                ConfigError::at(format!("{}.claim", item_path("claims_to_headers", i)), m)
            })?;
        }
        if self.realm.is_empty()
            || !self
                .realm
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::at(
                "realm",
                "must be non-empty printable ASCII without quotes or backslashes",
            ));
        }
        if self.max_token_bytes.0 < 16 || self.max_token_bytes.0 > 1 << 20 {
            return Err(ConfigError::at(
                "max_token_bytes",
                "must be between 16 bytes and 1MiB",
            ));
        }
        if self.cache_max_entries > 100_000 {
            return Err(ConfigError::at("cache_max_entries", "at most 100000"));
        }
        let mut out = Vec::with_capacity(self.providers.len());
        for (i, p) in self.providers.iter().enumerate() {
            let path = item_path("providers", i);
            out.push(p.validate(&path)?);
            if self.providers[..i].iter().any(|q| q.issuer == p.issuer) {
                return Err(ConfigError::at(
                    format!("{path}.issuer"),
                    format!("another provider already has issuer {:?} (tokens pick their provider by iss)", p.issuer),
                ));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::at(
                    format!("{path}.name"),
                    format!("duplicate provider name {:?}", p.name),
                ));
            }
        }
        Ok(out)
    }
}

/// A dotted claim path: non-empty segments, bounded length.
fn check_claim_path(claim: &str) -> Result<(), String> {
    if claim.is_empty() || claim.len() > 256 || claim.split('.').any(str::is_empty) {
        return Err(format!(
            "{claim:?} is not a claim path (dotted names, e.g. \"realm_access.roles\")"
        ));
    }
    Ok(())
}

impl ProviderConfig {
    fn validate(&self, path: &str) -> Result<Provider, ConfigError> {
        let at = |field: &str, msg: String| ConfigError::at(format!("{path}.{field}"), msg);
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(at(
                "name",
                "must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.issuer.is_empty() {
            return Err(at("issuer", "must not be empty".into()));
        }
        if self.algorithms.is_empty() {
            return Err(at("algorithms", "list at least one algorithm".into()));
        }
        if self.required_claims.len() > MAX_RULES {
            return Err(at("required_claims", format!("at most {MAX_RULES} rules")));
        }
        for (i, r) in self.required_claims.iter().enumerate() {
            check_claim_path(&r.claim)
                .map_err(|m| at(&format!("{}.claim", item_path("required_claims", i)), m))?;
        }
        let sources = [
            self.secret.is_some(),
            self.jwks.is_some(),
            self.jwks_uri.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(ConfigError::at(
                path,
                "set exactly one of secret, jwks, jwks_uri",
            ));
        }
        let hs: Vec<Algorithm> = self
            .algorithms
            .iter()
            .copied()
            .filter(|a| a.is_hmac())
            .collect();
        let mut static_keys = KeySet::default();
        if let Some(secret) = &self.secret {
            if hs.len() != self.algorithms.len() {
                return Err(at(
                    "algorithms",
                    "a secret only verifies HS256/HS384/HS512".into(),
                ));
            }
            let bytes = if self.secret_is_base64 {
                decode_any_base64(secret)
                    .ok_or_else(|| at("secret", "is not valid base64".into()))?
            } else {
                secret.as_bytes().to_vec()
            };
            for alg in &hs {
                if bytes.len() < alg.min_secret_bytes() {
                    return Err(at(
                        "secret",
                        format!(
                            "{} needs a secret of at least {} bytes, got {}",
                            alg.name(),
                            alg.min_secret_bytes(),
                            bytes.len()
                        ),
                    ));
                }
            }
            static_keys = KeySet::from_secret(&bytes, &hs);
        } else if !hs.is_empty() && self.jwks_uri.is_some() {
            // Symmetric keys from a remote document: anyone who can read the JWKS could mint tokens.
            return Err(at(
                "algorithms",
                "HS* algorithms need a secret (or inline jwks), not a remote jwks_uri".into(),
            ));
        }
        if let Some(jwks) = &self.jwks {
            let text = match jwks {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            static_keys = KeySet::parse_jwks(text.as_bytes(), &self.algorithms, true)
                .map_err(|e| at("jwks", e))?;
        }
        let remote = match &self.jwks_uri {
            Some(r) => Some(r.validate(&format!("{path}.jwks_uri"))?),
            None => None,
        };
        Ok(Provider {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            subjects: self.subjects.clone(),
            algorithms: self.algorithms.clone(),
            static_keys,
            remote,
            required_claims: self.required_claims.clone(),
        })
    }
}

impl RemoteJwksConfig {
    fn validate(&self, path: &str) -> Result<RemoteJwks, ConfigError> {
        let at = |field: &str, msg: String| ConfigError::at(format!("{path}.{field}"), msg);
        if self.cluster.is_empty() {
            return Err(at("cluster", "must not be empty".into()));
        }
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| {
                at(
                    "url",
                    format!("{:?} must start with http:// or https://", self.url),
                )
            })?;
        let (authority, path_part) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty()
            || !portcullis_common::http::is_valid_header_value(&self.url)
            || self.url.contains(' ')
        {
            return Err(at("url", format!("{:?} is not a valid URL", self.url)));
        }
        let timeout = self.timeout.as_duration();
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(at("timeout", "must be between 1ms and 60s".into()));
        }
        let cache_duration = self.cache_duration.as_duration();
        if cache_duration < Duration::from_secs(1) {
            return Err(at("cache_duration", "must be at least 1s".into()));
        }
        Ok(RemoteJwks {
            cluster: self.cluster.clone(),
            authority: authority.to_string(),
            path: path_part.to_string(),
            timeout,
            cache_duration,
            refetch_interval: self.refetch_interval.as_duration(),
        })
    }
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let t = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(t).ok())
}
