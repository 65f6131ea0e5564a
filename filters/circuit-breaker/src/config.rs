//! `circuit-breaker` configuration. Every field is optional; `{}` is a per-route breaker that opens after 3
//! consecutive 5xx (500/502/503/504) answers for 5 s and closes after one successful probe.
//!
//! ```json
//! { "scope": "route", "consecutive_failures": 3, "failure_ratio": 0.5, "window": "10s", "min_requests": 20,
//!   "open_for": "5s", "max_open_for": "1m", "half_open_requests": 1, "success_to_close": 2,
//!   "slow_call_threshold": "2s", "state_header": "x-circuit-state" }
//! ```

use crate::machine::Limits;
use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::{is_valid_status, HeaderName};
use portcullis_common::template::Template;
use portcullis_common::units::DurationSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A circuit breaker per route, service or templated key, shared by all workers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// What one breaker covers: `route` (Envoy route name / Kong route id), `service` (Envoy cluster name /
    /// Kong service id), `global` (one breaker for everything through this filter) or `key` (the `key` template).
    #[serde(default)]
    pub scope: Scope,
    /// With `scope: "key"`: a template naming the breaker, e.g. `"${header.host}"` or `"${route_id}-${method}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Template>,
    /// Response statuses that count as failures. Envoy's own 503/504 for connect failures and upstream
    /// timeouts count like upstream answers.
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
    /// When set, a response whose headers arrive this long (or longer) after the request started is a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_threshold: Option<DurationSpec>,
    /// Open after this many failures in a row (0 disables this trip rule).
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 0, max = MAX_COUNT))]
    pub consecutive_failures: u32,
    /// When set (0 < ratio ≤ 1): open when, within `window`, at least `min_requests` completed and this
    /// share of them failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub failure_ratio: Option<f64>,
    /// The sliding window of the failure ratio, kept as 10 buckets of `window / 10`.
    #[serde(default = "default_window")]
    pub window: DurationSpec,
    /// Fewest completed requests in `window` before the failure ratio may trip the breaker.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub min_requests: u32,
    /// How long the breaker stays open (rejecting) after a trip before it lets probes through.
    #[serde(default = "default_open_for")]
    pub open_for: DurationSpec,
    /// When set: each trip that follows a failed probe doubles the open time, up to this much. A close
    /// resets it to `open_for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_for: Option<DurationSpec>,
    /// Most concurrent probe requests admitted while half-open, across all workers.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub half_open_requests: u32,
    /// Successful probes needed to close the breaker; any failed probe re-opens it.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub success_to_close: u32,
    /// A probe that has not completed after this long frees its half-open slot (guards against lost probes).
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout: DurationSpec,
    /// Status of the response sent while the breaker is open.
    #[serde(default = "default_status")]
    pub status: u16,
    /// `message` of the JSON body sent while the breaker is open.
    #[serde(default = "default_message")]
    pub message: String,
    /// When set, this response header carries the breaker state (`closed`, `open`, `half-open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_header: Option<HeaderName>,
    /// Most breakers (distinct keys) kept in shared data; requests for keys beyond it pass unguarded.
    #[serde(default = "default_max_keys")]
    #[schemars(range(min = 1, max = MAX_KEYS))]
    pub max_keys: u64,
    /// Most keys per worker that get their own state gauge (bounds metric cardinality for templated keys).
    #[serde(default = "default_max_state_gauges")]
    #[schemars(range(min = 0, max = MAX_STATE_GAUGES))]
    pub max_state_gauges: u32,
}

/// What one breaker covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Route,
    Service,
    Global,
    Key,
}

fn default_failure_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}
fn default_consecutive_failures() -> u32 {
    3
}
fn default_window() -> DurationSpec {
    DurationSpec::from_secs(10)
}
fn default_min_requests() -> u32 {
    10
}
fn default_open_for() -> DurationSpec {
    DurationSpec::from_secs(5)
}
fn default_one() -> u32 {
    1
}
fn default_probe_timeout() -> DurationSpec {
    DurationSpec::from_secs(30)
}
fn default_status() -> u16 {
    503
}
fn default_message() -> String {
    "circuit breaker is open".into()
}
fn default_max_keys() -> u64 {
    1024
}
fn default_max_state_gauges() -> u32 {
    32
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            scope: Scope::Route,
            key: None,
            failure_statuses: default_failure_statuses(),
            slow_call_threshold: None,
            consecutive_failures: default_consecutive_failures(),
            failure_ratio: None,
            window: default_window(),
            min_requests: default_min_requests(),
            open_for: default_open_for(),
            max_open_for: None,
            half_open_requests: 1,
            success_to_close: 1,
            probe_timeout: default_probe_timeout(),
            status: default_status(),
            message: default_message(),
            state_header: None,
            max_keys: default_max_keys(),
            max_state_gauges: default_max_state_gauges(),
        }
    }
}

/// Upper bounds that keep the shared record compact (16-bit counters) and memory bounded.
pub const MAX_COUNT: u32 = 10_000;
pub const MAX_STATUSES: usize = 64;
pub const MAX_KEYS: u64 = 65_536;
pub const MAX_STATE_GAUGES: u32 = 1_024;
pub const MAX_MESSAGE_BYTES: usize = 1_024;

/// The validated configuration the policy runs with.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: CircuitBreakerConfig,
    pub limits: Limits,
    pub slow_call_ms: Option<u64>,
}

fn ms(d: DurationSpec) -> u64 {
    u64::try_from(d.as_duration().as_millis()).unwrap_or(u64::MAX)
}

fn range(path: &str, value: u32, min: u32, max: u32) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::at(
            path,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

fn at_least(path: &str, d: DurationSpec, min: Duration) -> Result<(), ConfigError> {
    if d.as_duration() < min {
        return Err(ConfigError::at(
            path,
            format!("must be at least {}ms", min.as_millis()),
        ));
    }
    Ok(())
}

impl CircuitBreakerConfig {
    pub fn parse(bytes: &[u8]) -> Result<Validated, ConfigError> {
        let config: CircuitBreakerConfig = portcullis_common::parse_config(bytes)?;
        config.validate()
    }

    pub fn validate(self) -> Result<Validated, ConfigError> {
        match (self.scope, &self.key) {
            (Scope::Key, None) => {
                return Err(ConfigError::at("key", "is required when scope is \"key\""))
            }
            (Scope::Key, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(ConfigError::at(
                    "key",
                    "is only used with scope \"key\" (set \"scope\": \"key\" or remove it)",
                ))
            }
        }
        if self.failure_statuses.is_empty() && self.slow_call_threshold.is_none() {
            return Err(ConfigError::at(
                "failure_statuses",
                "must not be empty unless slow_call_threshold is set (nothing could fail)",
            ));
        }
        if self.failure_statuses.len() > MAX_STATUSES {
            return Err(ConfigError::at(
                "failure_statuses",
                format!("at most {MAX_STATUSES} statuses"),
            ));
        }
        for (i, s) in self.failure_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                return Err(ConfigError::at(
                    item_path("failure_statuses", i),
                    format!("{s} is not an HTTP status (100-599)"),
                ));
            }
        }
        if let Some(t) = self.slow_call_threshold {
            at_least("slow_call_threshold", t, Duration::from_millis(1))?;
        }
        range(
            "consecutive_failures",
            self.consecutive_failures,
            0,
            MAX_COUNT,
        )?;
        if let Some(r) = self.failure_ratio {
            if !(r > 0.0 && r <= 1.0) {
                return Err(ConfigError::at(
                    "failure_ratio",
                    format!("must be > 0 and <= 1, got {r}"),
                ));
            }
        }
        if self.consecutive_failures == 0 && self.failure_ratio.is_none() {
            return Err(ConfigError::at(
                "consecutive_failures",
                "is 0 and failure_ratio is not set: the breaker could never open",
            ));
        }
        at_least("window", self.window, Duration::from_millis(10))?;
        if self.window.as_duration() > Duration::from_secs(3600) {
            return Err(ConfigError::at("window", "must be at most 1h"));
        }
        range("min_requests", self.min_requests, 1, MAX_COUNT)?;
        at_least("open_for", self.open_for, Duration::from_millis(1))?;
        if self.open_for.as_duration() > Duration::from_secs(86_400) {
            return Err(ConfigError::at("open_for", "must be at most 1d"));
        }
        if let Some(max) = self.max_open_for {
            if max < self.open_for {
                return Err(ConfigError::at(
                    "max_open_for",
                    "must not be shorter than open_for",
                ));
            }
            if max.as_duration() > Duration::from_secs(86_400) {
                return Err(ConfigError::at("max_open_for", "must be at most 1d"));
            }
        }
        range("half_open_requests", self.half_open_requests, 1, MAX_COUNT)?;
        range("success_to_close", self.success_to_close, 1, MAX_COUNT)?;
        at_least(
            "probe_timeout",
            self.probe_timeout,
            Duration::from_millis(1),
        )?;
        if self.probe_timeout.as_duration() > Duration::from_secs(3600) {
            return Err(ConfigError::at("probe_timeout", "must be at most 1h"));
        }
        if !is_valid_status(self.status) {
            return Err(ConfigError::at(
                "status",
                format!("{} is not a valid response status", self.status),
            ));
        }
        if self.message.len() > MAX_MESSAGE_BYTES {
            return Err(ConfigError::at(
                "message",
                format!("must be at most {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        if !(1..=MAX_KEYS).contains(&self.max_keys) {
            return Err(ConfigError::at(
                "max_keys",
                format!("must be between 1 and {MAX_KEYS}, got {}", self.max_keys),
            ));
        }
        range(
            "max_state_gauges",
            self.max_state_gauges,
            0,
            MAX_STATE_GAUGES,
        )?;

        let open_ms = ms(self.open_for);
        // the counts fit u16 fields: bounded above by MAX_COUNT
        let small = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        let limits = Limits {
            consecutive_failures: small(self.consecutive_failures),
            failure_ratio: self.failure_ratio,
            min_requests: self.min_requests,
            window_ms: ms(self.window),
            open_ms,
            max_open_ms: self.max_open_for.map_or(open_ms, ms),
            half_open_requests: small(self.half_open_requests),
            success_to_close: small(self.success_to_close),
            probe_timeout_ms: ms(self.probe_timeout),
        };
        Ok(Validated {
            slow_call_ms: self.slow_call_threshold.map(ms),
            raw: self,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        CircuitBreakerConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_config_is_the_documented_default() {
        let v = CircuitBreakerConfig::parse(b"").unwrap();
        assert_eq!(v.raw.scope, Scope::Route);
        assert_eq!(v.raw.failure_statuses, vec![500, 502, 503, 504]);
        assert_eq!(v.limits.consecutive_failures, 3);
        assert_eq!(v.limits.open_ms, 5_000);
        assert_eq!(v.limits.max_open_ms, 5_000, "no growth unless max_open_for");
        assert_eq!(v.limits.half_open_requests, 1);
        assert_eq!(v.limits.success_to_close, 1);
        assert_eq!(v.slow_call_ms, None);
    }

    #[test]
    fn full_config_parses_into_limits() {
        let v = CircuitBreakerConfig::parse(
            br#"{"scope":"key","key":"${header.host}","failure_statuses":[500,429],
                 "slow_call_threshold":"250ms","consecutive_failures":0,"failure_ratio":0.5,
                 "window":"20s","min_requests":8,"open_for":"2s","max_open_for":"1m",
                 "half_open_requests":3,"success_to_close":2,"probe_timeout":"5s","status":429,
                 "message":"busy","state_header":"X-Circuit-State","max_keys":16,"max_state_gauges":4}"#,
        )
        .unwrap();
        assert_eq!(v.slow_call_ms, Some(250));
        assert_eq!(v.limits.window_ms, 20_000);
        assert_eq!(v.limits.max_open_ms, 60_000);
        assert_eq!(v.limits.failure_ratio, Some(0.5));
        assert_eq!(
            v.raw.state_header.as_ref().map(|h| h.as_str()),
            Some("x-circuit-state")
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"scope":"key"}"#, "key: is required"),
            (r#"{"key":"${path}"}"#, "key: is only used with scope"),
            (r#"{"scope":"cluster"}"#, "scope: unknown variant"),
            (
                r#"{"failure_statuses":[500,700]}"#,
                "failure_statuses[1]: 700 is not an HTTP status",
            ),
            (
                r#"{"failure_statuses":[]}"#,
                "failure_statuses: must not be empty",
            ),
            (
                r#"{"failure_ratio":1.5}"#,
                "failure_ratio: must be > 0 and <= 1",
            ),
            (r#"{"failure_ratio":0}"#, "failure_ratio: must be > 0"),
            (
                r#"{"consecutive_failures":0}"#,
                "consecutive_failures: is 0",
            ),
            (
                r#"{"consecutive_failures":100000}"#,
                "consecutive_failures: must be between",
            ),
            (r#"{"window":"5ms"}"#, "window: must be at least 10ms"),
            (r#"{"window":"2h"}"#, "window: must be at most 1h"),
            (r#"{"min_requests":0}"#, "min_requests: must be between 1"),
            (r#"{"open_for":"0s"}"#, "open_for: must be at least"),
            (
                r#"{"open_for":"10s","max_open_for":"5s"}"#,
                "max_open_for: must not be shorter",
            ),
            (
                r#"{"half_open_requests":0}"#,
                "half_open_requests: must be between 1",
            ),
            (
                r#"{"success_to_close":0}"#,
                "success_to_close: must be between 1",
            ),
            (r#"{"status":1000}"#, "status: 1000 is not a valid"),
            (
                r#"{"state_header":"x y"}"#,
                "state_header: \"x y\" is not a valid header name",
            ),
            (r#"{"max_keys":0}"#, "max_keys: must be between 1"),
            (r#"{"open_for":"fast"}"#, "open_for: expected a duration"),
            (r#"{"timeout":"1s"}"#, "unknown field `timeout`"),
        ];
        for (json, expected) in cases {
            let e = error(json);
            assert!(e.contains(expected), "{json}: got {e:?}, want {expected:?}");
        }
    }

    #[test]
    fn schema_documents_every_field() {
        let schema = portcullis_common::schema::config_schema::<CircuitBreakerConfig>();
        let props = schema["properties"].as_object().unwrap();
        assert_eq!(props.len(), 18);
        for (name, p) in props {
            assert!(p["description"].is_string(), "{name} has no description");
        }
    }
}
