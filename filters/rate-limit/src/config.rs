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
    #[schemars(range(min = 1, max = MAX_MAX_KEYS))]
    pub max_keys: u64,
    /// What to do when the store fails (shared data refuses or has no free slot; with a `redis_http` store
    /// also when Redis is unreachable, slow or answers nonsense): `allow` the request (skipping that limit),
    /// `deny` it, or `local` (redis_http only: apply the same limits per node, in shared data). Counted in
    /// `portcullis_rate_limit_store_errors_total`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Where the counters live: `{"type": "local"}` (default; per node) or a Redis shared by every node,
    /// reached over HTTP (`{"type": "redis_http", "upstream": …}`); see the README's "Multi-node limits".
    #[serde(default)]
    pub store: StoreConfig,
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
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub rate: Option<u64>,
    /// Token bucket: the period of `rate` (default "1s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<DurationSpec>,
    /// Token bucket: most tokens held, i.e. the largest burst (default: `rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub burst: Option<u64>,
    /// Windows: requests allowed per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
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
    /// Admit the request (that limit is skipped).
    #[default]
    Allow,
    /// Reject the request (without rate headers).
    Deny,
    /// Redis store only: fall back to the node-local limits.
    Local,
}

/// Where the counters live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `local`: shared data of this node (exact across its workers). `redis_http`: one Redis shared by every
    /// node, reached over HTTP with webdis' path-style REST protocol (`GET /EVAL/<script>/…`).
    #[serde(rename = "type", default)]
    pub kind: StoreKind,
    /// redis_http: where webdis (or a Redis REST API) listens: an Envoy cluster name, or `host:port` on Kong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// redis_http: the `:authority` (Host) of the calls; default: `upstream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// redis_http: path prefix before the command (`/` for webdis; e.g. `/redis/` behind a path-routing proxy).
    #[serde(default = "default_base_path")]
    pub base_path: String,
    /// redis_http: credentials sent as the `Authorization` header: `{"type": "bearer", "token": …}` or
    /// `{"type": "basic", "username": …, "password": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<StoreAuth>,
    /// redis_http: the longest a call to Redis may take (a request never waits longer); then `on_store_error`.
    #[serde(default = "default_store_timeout")]
    pub timeout: DurationSpec,
    /// redis_http: `per_request` (each request waits for one atomic EVAL: exact across nodes) or `batched`
    /// (nodes reserve slices of the budget in the background; requests never wait; bounded overshoot).
    #[serde(default)]
    pub sync: SyncMode,
    /// redis_http: prefix of every Redis key (`<prefix><namespace>:<limit>:<key>`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// batched: most units a node reserves from Redis at once (worst-case overshoot = nodes × slice);
    /// default: 10% of the limit's capacity, at least 1, at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<u64>,
    /// batched: how often a node reserves slices for the keys that need them.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: DurationSpec,
    /// redis_http: after a failure, how long the node uses `on_store_error` before trying Redis again.
    #[serde(default = "default_retry_interval")]
    pub retry_interval: DurationSpec,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Local,
            upstream: None,
            authority: None,
            base_path: default_base_path(),
            auth: None,
            timeout: default_store_timeout(),
            sync: SyncMode::PerRequest,
            key_prefix: default_key_prefix(),
            slice: None,
            sync_interval: default_sync_interval(),
            retry_interval: default_retry_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Node-local shared data.
    #[default]
    Local,
    /// Redis over HTTP (webdis protocol).
    RedisHttp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// One EVAL per request; the request waits for it.
    #[default]
    PerRequest,
    /// Background reservations of budget slices; requests never wait.
    Batched,
}

/// Credentials for the Redis REST endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreAuth {
    /// `bearer` (with `token`) or `basic` (with `username` and `password`).
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// bearer: the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// basic: the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// basic: the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Bearer,
    Basic,
}

fn default_base_path() -> String {
    "/".into()
}
fn default_store_timeout() -> DurationSpec {
    DurationSpec(std::time::Duration::from_millis(200))
}
fn default_key_prefix() -> String {
    "portcullis:rl:".into()
}
fn default_sync_interval() -> DurationSpec {
    DurationSpec(std::time::Duration::from_millis(100))
}
fn default_retry_interval() -> DurationSpec {
    DurationSpec(std::time::Duration::from_secs(1))
}

/// A validated Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStore {
    pub upstream: String,
    pub authority: String,
    /// Ends with `/`.
    pub base_path: String,
    /// The `Authorization` header value.
    pub authorization: Option<String>,
    pub timeout: std::time::Duration,
    pub sync: SyncMode,
    pub key_prefix: String,
    /// batched: explicit slice (else derived per limit).
    pub slice: Option<u64>,
    pub sync_interval: std::time::Duration,
    pub retry_interval_us: u64,
}

/// Longest `upstream`, `authority`, `base_path`, `key_prefix`, credentials.
const MAX_STORE_TEXT: usize = 256;

fn store_text(value: &str, path: &str) -> Result<(), ConfigError> {
    if value.len() > MAX_STORE_TEXT || value.bytes().any(|b| b.is_ascii_control()) {
        return Err(ConfigError::at(
            path,
            format!("must be at most {MAX_STORE_TEXT} bytes without control characters"),
        ));
    }
    Ok(())
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl StoreConfig {
    fn validate(&self, on_store_error: OnStoreError) -> Result<Option<RedisStore>, ConfigError> {
        if self.kind == StoreKind::Local {
            if on_store_error == OnStoreError::Local {
                return Err(ConfigError::at(
                    "on_store_error",
                    "`local` needs a shared store (`store.type: redis_http`)",
                ));
            }
            if self.upstream.is_some() || self.auth.is_some() {
                return Err(ConfigError::at(
                    "store.type",
                    "`upstream` and `auth` need `type: redis_http`",
                ));
            }
            return Ok(None);
        }
        // In the bundle's chain a paused step is resumed by the chain, not by its own callout's answer.
        // (Only in the built bundle: `cargo test --workspace` unifies the `bundled` feature into every build.)
        if cfg!(all(feature = "bundled", target_arch = "wasm32", not(test))) {
            return Err(ConfigError::at(
                "store.type",
                "redis_http is not available in the portcullis bundle (use the rate-limit filter)",
            ));
        }
        let upstream = self
            .upstream
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                ConfigError::at(
                    "store.upstream",
                    "required with `type: redis_http` (Envoy cluster name or Kong host:port)",
                )
            })?;
        store_text(&upstream, "store.upstream")?;
        let authority = self.authority.clone().unwrap_or_else(|| upstream.clone());
        store_text(&authority, "store.authority")?;
        if authority.is_empty() {
            return Err(ConfigError::at("store.authority", "must not be empty"));
        }
        store_text(&self.base_path, "store.base_path")?;
        if !self.base_path.starts_with('/') || self.base_path.contains(['?', '#', ' ']) {
            return Err(ConfigError::at(
                "store.base_path",
                "must start with `/` and hold no query, fragment or space",
            ));
        }
        let mut base_path = self.base_path.clone();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        store_text(&self.key_prefix, "store.key_prefix")?;
        let authorization = match &self.auth {
            None => None,
            Some(auth) => Some(match auth.kind {
                AuthKind::Bearer => {
                    if auth.username.is_some() || auth.password.is_some() {
                        return Err(ConfigError::at(
                            "store.auth",
                            "bearer auth takes only `token`",
                        ));
                    }
                    let token =
                        auth.token
                            .as_deref()
                            .filter(|t| !t.is_empty())
                            .ok_or_else(|| {
                                ConfigError::at("store.auth.token", "required for bearer auth")
                            })?;
                    store_text(token, "store.auth.token")?;
                    format!("Bearer {token}")
                }
                AuthKind::Basic => {
                    if auth.token.is_some() {
                        return Err(ConfigError::at(
                            "store.auth.token",
                            "basic auth takes `username` and `password`",
                        ));
                    }
                    let user = auth.username.as_deref().ok_or_else(|| {
                        ConfigError::at("store.auth.username", "required for basic auth")
                    })?;
                    let password = auth.password.as_deref().unwrap_or("");
                    store_text(user, "store.auth.username")?;
                    store_text(password, "store.auth.password")?;
                    if user.contains(':') {
                        return Err(ConfigError::at(
                            "store.auth.username",
                            "must not contain `:`",
                        ));
                    }
                    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
                }
            }),
        };
        let timeout = self.timeout.0;
        if timeout.is_zero() || timeout > std::time::Duration::from_secs(60) {
            return Err(ConfigError::at(
                "store.timeout",
                "must be longer than 0 and at most 60s",
            ));
        }
        let sync_interval = self.sync_interval.0;
        if sync_interval < std::time::Duration::from_millis(10)
            || sync_interval > std::time::Duration::from_secs(60)
        {
            return Err(ConfigError::at(
                "store.sync_interval",
                "must be between 10ms and 60s",
            ));
        }
        let retry = self.retry_interval.0;
        if retry.is_zero() || retry > std::time::Duration::from_secs(3600) {
            return Err(ConfigError::at(
                "store.retry_interval",
                "must be longer than 0 and at most 1h",
            ));
        }
        if let Some(slice) = self.slice {
            if self.sync != SyncMode::Batched {
                return Err(ConfigError::at(
                    "store.slice",
                    "applies to `sync: batched` only",
                ));
            }
            if slice == 0 || slice > 1_000_000 {
                return Err(ConfigError::at(
                    "store.slice",
                    format!("must be between 1 and 1000000, got {slice}"),
                ));
            }
        }
        Ok(Some(RedisStore {
            upstream,
            authority,
            base_path,
            authorization,
            timeout,
            sync: self.sync,
            key_prefix: self.key_prefix.clone(),
            slice: self.slice,
            sync_interval,
            retry_interval_us: u64::try_from(retry.as_micros()).unwrap_or(u64::MAX),
        }))
    }
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
    /// Set for `store.type: redis_http`.
    pub redis: Option<RedisStore>,
}

impl RateLimitConfig {
    pub fn parse(bytes: &[u8]) -> Result<Validated, ConfigError> {
        let raw: RateLimitConfig = portcullis_common::parse_config(bytes)?;
        let limits = raw.validate()?;
        let redis = raw.store.validate(raw.on_store_error)?;
        Ok(Validated { raw, limits, redis })
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
