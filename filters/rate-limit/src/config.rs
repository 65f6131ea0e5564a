//! `rate-limit` configuration: the serde types (with defaults and docs that become Kong's schema) and the
//! validation that turns each limit into a checked [`Limit`].
//!
//! ```json
//! { "limits": [
//!     {"name": "per_ip", "key": "${client_ip}", "algorithm": "token_bucket", "rate": 1, "per": "1s", "burst": 5},
//!     {"name": "gateway", "key": "global", "algorithm": "token_bucket", "rate": 10, "per": "1s", "burst": 10}
//!   ],
//!   "max_keys": 100000, "on_store_error": "allow", "headers": true }
//! ```

use crate::algo::Algorithm;
use portcullis_common::client_ip::ClientIpConfig;
use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::template::Template;
use portcullis_common::units::DurationSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most limits one filter checks per request.
pub const MAX_LIMITS: usize = 16;
/// Largest `max_keys`: 10 million slots (about 2 GB of shared data on Envoy in the worst case).
pub const MAX_MAX_KEYS: u64 = 10_000_000;
/// Largest `rate`, `burst` and `requests`.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// Longest limit name / namespace.
pub const MAX_NAME_LEN: usize = 64;

/// Rate limits checked on every request; a request is rejected when any limit is exceeded.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits, checked in order. A request passes only if every limit allows it; when one rejects,
    /// the units already taken from earlier limits are given back.
    pub limits: Vec<LimitConfig>,
    /// Most shared-data records (one per limit and key value, all limits together). Memory is bounded by
    /// this whatever the traffic; a key whose slot holds another key's live record is a store error.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
    /// What to do when the shared store fails or has no free slot for a key: `allow` the request
    /// (skipping that limit) or `deny` it. Counted in `portcullis_rate_limit_store_errors_total`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Add `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` to allowed responses too
    /// (rejections always carry them, with `Retry-After`).
    #[serde(default = "default_true")]
    pub headers: bool,
    /// Count and add headers, but never reject (to try limits on live traffic).
    #[serde(default)]
    pub dry_run: bool,
    /// HTTP status of a rejection.
    #[serde(default = "default_status")]
    pub status: u16,
    /// The `message` of the JSON error body of a rejection.
    #[serde(default = "default_message")]
    pub message: String,
    /// A rejection body sent as-is instead of the JSON error (with `content_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Content type of `body`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Shared-data namespace of the counters: filters sharing a VM and a namespace share counters.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// How `${client_ip}` is determined (trusted proxies and forwarding headers); default: the peer.
    #[serde(default)]
    pub client_ip: ClientIpConfig,
}

/// One limit: a key template and an algorithm with its parameters.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in metrics (`portcullis_rate_limit_<name>_allowed_total`…): letters, digits, `_`.
    pub name: String,
    /// What is counted, as a template: `${client_ip}`, `${header.x-consumer}`, `${query.api_key}`,
    /// `${path}`, `${method}`, `${route_id}`, `${service_id}` (Kong), combinations such as
    /// `${client_ip}:${path}`, or a constant (one global counter).
    #[serde(default = "default_key")]
    pub key: Template,
    /// When a variable of `key` has no value: `skip` this limit, `deny` the request, or count it in
    /// one shared `global` counter of this limit.
    #[serde(default)]
    pub on_missing_key: OnMissingKey,
    /// `token_bucket` (`rate`, `per`, `burst`), `fixed_window` or `sliding_window` (`requests`, `window`).
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// Token bucket: tokens added every `per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Token bucket: the period of `rate` (default "1s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<DurationSpec>,
    /// Token bucket: most tokens held, i.e. the largest burst (default: `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Windows: requests allowed per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Windows: the window length (fixed windows are aligned on multiples of it since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<DurationSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    #[default]
    TokenBucket,
    FixedWindow,
    SlidingWindow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingKey {
    /// The limit does not apply to this request.
    #[default]
    Skip,
    /// The request is rejected.
    Deny,
    /// The request counts against one counter shared by all requests without a key.
    Global,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Allow,
    Deny,
}

fn default_max_keys() -> u64 {
    100_000
}
fn default_true() -> bool {
    true
}
fn default_status() -> u16 {
    429
}
fn default_message() -> String {
    "rate limit exceeded".into()
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_namespace() -> String {
    "rate-limit".into()
}
fn default_key() -> Template {
    Template::parse("${client_ip}").unwrap_or_else(|_| unreachable_template())
}
#[cold]
fn unreachable_template() -> Template {
    // `${client_ip}` always parses; an empty constant keeps this panic-free regardless.
    Template::parse("").unwrap_or_else(|_| unreachable_template())
}

/// A validated limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub key: Template,
    pub on_missing_key: OnMissingKey,
    pub algorithm: Algorithm,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn count(value: Option<u64>, path: &str, field: &str, what: &str) -> Result<u64, ConfigError> {
    let v =
        value.ok_or_else(|| ConfigError::at(path, format!("missing field `{field}` ({what})")))?;
    if v == 0 || v > MAX_COUNT {
        return Err(ConfigError::at(
            format!("{path}.{field}"),
            format!("must be between 1 and {MAX_COUNT}, got {v}"),
        ));
    }
    Ok(v)
}

fn duration_us(value: DurationSpec, path: &str) -> Result<u64, ConfigError> {
    let us = u64::try_from(value.0.as_micros()).unwrap_or(u64::MAX);
    if us == 0 {
        return Err(ConfigError::at(path, "must be longer than 0"));
    }
    Ok(us)
}

fn forbid(present: bool, path: &str, field: &str, algo: &str) -> Result<(), ConfigError> {
    if present {
        return Err(ConfigError::at(
            format!("{path}.{field}"),
            format!("`{field}` does not apply to the {algo} algorithm"),
        ));
    }
    Ok(())
}

impl LimitConfig {
    fn validate(&self, path: &str) -> Result<Limit, ConfigError> {
        if !valid_name(&self.name) {
            return Err(ConfigError::at(
                format!("{path}.name"),
                format!(
                    "{:?} must be 1 to {MAX_NAME_LEN} letters, digits or underscores",
                    self.name
                ),
            ));
        }
        let algorithm = match self.algorithm {
            AlgorithmName::TokenBucket => {
                forbid(self.requests.is_some(), path, "requests", "token_bucket")?;
                forbid(self.window.is_some(), path, "window", "token_bucket")?;
                let rate = count(self.rate, path, "rate", "tokens added every `per`")?;
                let burst = count(self.burst.or(Some(rate)), path, "burst", "bucket size")?;
                let per = self.per.unwrap_or(DurationSpec::from_secs(1));
                Algorithm::TokenBucket {
                    rate,
                    per_us: duration_us(per, &format!("{path}.per"))?,
                    burst,
                }
            }
            name @ (AlgorithmName::FixedWindow | AlgorithmName::SlidingWindow) => {
                let algo = if name == AlgorithmName::FixedWindow {
                    "fixed_window"
                } else {
                    "sliding_window"
                };
                forbid(self.rate.is_some(), path, "rate", algo)?;
                forbid(self.per.is_some(), path, "per", algo)?;
                forbid(self.burst.is_some(), path, "burst", algo)?;
                let requests = count(self.requests, path, "requests", "requests per window")?;
                if requests > u64::from(u32::MAX) {
                    return Err(ConfigError::at(format!("{path}.requests"), "too large"));
                }
                let window = self.window.ok_or_else(|| {
                    ConfigError::at(path, "missing field `window` (window length)")
                })?;
                let window_us = duration_us(window, &format!("{path}.window"))?;
                if name == AlgorithmName::FixedWindow {
                    Algorithm::FixedWindow {
                        requests,
                        window_us,
                    }
                } else {
                    Algorithm::SlidingWindow {
                        requests,
                        window_us,
                    }
                }
            }
        };
        Ok(Limit {
            name: self.name.clone(),
            key: self.key.clone(),
            on_missing_key: self.on_missing_key,
            algorithm,
        })
    }
}

/// The validated configuration the policy runs with.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: RateLimitConfig,
    pub limits: Vec<Limit>,
}

impl RateLimitConfig {
    pub fn parse(bytes: &[u8]) -> Result<Validated, ConfigError> {
        let raw: RateLimitConfig = portcullis_common::parse_config(bytes)?;
        let limits = raw.validate()?;
        Ok(Validated { raw, limits })
    }

    fn validate(&self) -> Result<Vec<Limit>, ConfigError> {
        if self.limits.is_empty() {
            return Err(ConfigError::at("limits", "at least one limit is required"));
        }
        if self.limits.len() > MAX_LIMITS {
            return Err(ConfigError::at(
                "limits",
                format!(
                    "{} limits is more than the maximum of {MAX_LIMITS}",
                    self.limits.len()
                ),
            ));
        }
        if self.max_keys == 0 || self.max_keys > MAX_MAX_KEYS {
            return Err(ConfigError::at(
                "max_keys",
                format!(
                    "must be between 1 and {MAX_MAX_KEYS}, got {}",
                    self.max_keys
                ),
            ));
        }
        if !(400..=599).contains(&self.status) {
            return Err(ConfigError::at(
                "status",
                format!("must be an error status (400-599), got {}", self.status),
            ));
        }
        if !portcullis_common::http::is_valid_header_value(&self.content_type) {
            return Err(ConfigError::at(
                "content_type",
                "is not a valid header value",
            ));
        }
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= MAX_NAME_LEN
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ns_ok {
            return Err(ConfigError::at(
                "namespace",
                format!(
                    "{:?} must be 1 to {MAX_NAME_LEN} letters, digits, '-' or '_'",
                    self.namespace
                ),
            ));
        }
        self.client_ip.validate("client_ip")?;
        let mut limits = Vec::with_capacity(self.limits.len());
        for (i, l) in self.limits.iter().enumerate() {
            let path = item_path("limits", i);
            let limit = l.validate(&path)?;
            if limits.iter().any(|o: &Limit| o.name == limit.name) {
                return Err(ConfigError::at(
                    format!("{path}.name"),
                    format!("{:?} is used by an earlier limit", limit.name),
                ));
            }
            limits.push(limit);
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        RateLimitConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_seed_limits_are_expressible_as_is() {
        let c = RateLimitConfig::parse(
            br#"{"limits":[
                {"name":"per_ip","key":"${client_ip}","rate":1,"per":"1s","burst":5},
                {"name":"gateway","key":"all","algorithm":"token_bucket","rate":10,"per":"1s","burst":10}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.limits[0].algorithm,
            Algorithm::TokenBucket {
                rate: 1,
                per_us: 1_000_000,
                burst: 5
            }
        );
        assert!(c.limits[1].key.is_constant());
        assert_eq!(c.raw.max_keys, 100_000);
        assert_eq!(c.raw.on_store_error, OnStoreError::Allow);
        assert!(c.raw.headers && !c.raw.dry_run);
        assert_eq!(c.raw.status, 429);
    }

    #[test]
    fn the_kong_yml_configs_parse() {
        // kong/kong.yml's two rate-limit configs, as Kong hands them over (JSON)
        for json in [
            r#"{"namespace": "api", "limits": [{"name": "per_user", "key": "${header.x-consumer-username}", "rate": 10, "per": "1s", "burst": 20, "on_missing_key": "deny"}, {"name": "per_ip_minute", "algorithm": "sliding_window", "key": "${client_ip}", "requests": 600, "window": "1m"}]}"#,
            r#"{"namespace": "partners", "limits": [{"name": "per_partner", "algorithm": "fixed_window", "key": "${header.x-consumer-username}", "requests": 1000, "window": "1h", "on_missing_key": "deny"}]}"#,
        ] {
            RateLimitConfig::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}"));
        }
    }

    #[test]
    fn windows_parse() {
        let c = RateLimitConfig::parse(
            br#"{"limits":[{"name":"a","algorithm":"fixed_window","requests":100,"window":"1m"},
                {"name":"b","algorithm":"sliding_window","requests":5,"window":"10s","key":"${header.x-consumer}","on_missing_key":"deny"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.limits[0].algorithm,
            Algorithm::FixedWindow {
                requests: 100,
                window_us: 60_000_000
            }
        );
        assert_eq!(c.limits[1].on_missing_key, OnMissingKey::Deny);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{}"#, "missing field `limits`"),
            (r#"{"limits":[]}"#, "limits: at least one limit"),
            (
                r#"{"limits":[{"name":"a","rate":0}]}"#,
                "limits[0].rate: must be between 1",
            ),
            (
                r#"{"limits":[{"name":"a"}]}"#,
                "limits[0]: missing field `rate`",
            ),
            (
                r#"{"limits":[{"name":"a b","rate":1}]}"#,
                "limits[0].name: \"a b\" must be",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1,"per":"0s"}]}"#,
                "limits[0].per: must be longer than 0",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1,"per":"fast"}]}"#,
                "limits[0].per: expected a duration",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1,"window":"1s"}]}"#,
                "limits[0].window: `window` does not apply",
            ),
            (
                r#"{"limits":[{"name":"a","algorithm":"fixed_window","requests":1}]}"#,
                "limits[0]: missing field `window`",
            ),
            (
                r#"{"limits":[{"name":"a","algorithm":"sliding_window","requests":1,"window":"1s","burst":3}]}"#,
                "limits[0].burst: `burst` does not apply",
            ),
            (
                r#"{"limits":[{"name":"a","algorithm":"leaky","rate":1}]}"#,
                "limits[0].algorithm: unknown variant `leaky`",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1,"key":"${nope}"}]}"#,
                "limits[0].key: unknown template variable",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1},{"name":"a","rate":2}]}"#,
                "limits[1].name: \"a\" is used",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1,"extra":1}]}"#,
                "limits[0].extra: unknown field `extra`",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1}],"max_keys":0}"#,
                "max_keys: must be between 1",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1}],"status":200}"#,
                "status: must be an error status",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1}],"on_store_error":"maybe"}"#,
                "on_store_error: unknown variant",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1,"on_missing_key":"nope"}]}"#,
                "limits[0].on_missing_key: unknown variant",
            ),
            (
                r#"{"limits":[{"name":"a","rate":1}],"namespace":"a/b"}"#,
                "namespace: \"a/b\" must be",
            ),
        ];
        for (json, want) in cases {
            let err = error(json);
            assert!(
                err.starts_with(want),
                "{json}\n  got:  {err}\n  want: {want}"
            );
        }
    }

    #[test]
    fn too_many_limits_are_refused() {
        let limits: Vec<String> = (0..=MAX_LIMITS)
            .map(|i| format!(r#"{{"name":"l{i}","rate":1}}"#))
            .collect();
        let json = format!(r#"{{"limits":[{}]}}"#, limits.join(","));
        assert!(error(&json).starts_with("limits: 17 limits"));
    }

    #[test]
    fn schema_describes_every_field_and_forbids_unknown_ones() {
        let s = portcullis_common::schema::config_schema::<RateLimitConfig>();
        assert_eq!(s["additionalProperties"], false);
        for field in [
            "limits",
            "max_keys",
            "on_store_error",
            "headers",
            "dry_run",
            "status",
            "message",
            "namespace",
            "client_ip",
        ] {
            assert!(
                s["properties"][field]["description"].is_string(),
                "{field}: {s}"
            );
        }
        assert_eq!(s["required"], serde_json::json!(["limits"]));
    }
}
