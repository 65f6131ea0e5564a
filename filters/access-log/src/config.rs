//! `access-log` configuration. Every field is optional; `{}` writes one JSON line per request to the host
//! log at `info`, with `authorization`, `proxy-authorization`, `cookie` and `set-cookie` redacted.
//!
//! ```json
//! { "request_headers": ["x-forwarded-for"], "response_headers": ["content-type"],
//!   "fields": {"service": "orders"}, "redact": ["authorization", "x-api-key"],
//!   "consumer_header": "x-consumer", "log": {"level": "info"},
//!   "http": {"upstream": "collector", "path": "/logs", "batch_size": 100, "flush_interval": "1s"} }
//! ```

use portcullis_common::config::ConfigError;
use portcullis_common::http::HeaderName;
use portcullis_common::units::DurationSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most headers per direction and most fixed fields: a bound on the size of every line.
pub const MAX_LISTED: usize = 32;
/// Longest fixed field value.
pub const MAX_FIELD_VALUE_BYTES: usize = 256;

/// A JSON access log line per request.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Request headers logged under `request_headers` (first value; absent headers are left out).
    #[serde(default)]
    pub request_headers: Vec<HeaderName>,
    /// Response headers logged under `response_headers`.
    #[serde(default)]
    pub response_headers: Vec<HeaderName>,
    /// Fixed string fields added to every line (e.g. `{"service": "orders"}`); names must not clash with
    /// the built-in fields.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Headers whose values are logged as `[REDACTED]`. Replaces the default list.
    #[serde(default = "default_redact")]
    pub redact: Vec<HeaderName>,
    /// Request header naming the consumer (set by an authentication filter), logged as `consumer`.
    #[serde(default)]
    pub consumer_header: Option<HeaderName>,
    /// Longest header value, path or user agent logged, in bytes; longer values are cut.
    #[serde(default = "default_max_value_bytes")]
    #[schemars(range(min = 16, max = 65536))]
    pub max_value_bytes: u32,
    /// The host-log sink (Envoy's log, Kong's error.log).
    #[serde(default)]
    pub log: LogSink,
    /// The batched HTTP sink: lines are queued and POSTed as a JSON array to a collector.
    #[serde(default)]
    pub http: Option<HttpSink>,
}

/// Writes each line through the proxy's own log.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSink {
    /// Whether lines go to the host log.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Log level of the lines; the host must log at this level or more verbosely.
    #[serde(default)]
    pub level: Level,
}

impl Default for LogSink {
    fn default() -> Self {
        LogSink {
            enabled: true,
            level: Level::Info,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn to_log(self) -> log::Level {
        match self {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        }
    }
}

/// Batches lines and POSTs them (`content-type: application/json`, body a JSON array of lines) from the
/// root context's timer: requests never wait for the collector.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    /// Envoy: the cluster name of the collector. Kong: `host:port`.
    pub upstream: String,
    /// Request path (with query) on the collector.
    #[serde(default = "default_path")]
    pub path: String,
    /// `:authority` of the POST; default: `upstream`.
    #[serde(default)]
    pub authority: Option<String>,
    /// Lines per POST; a full batch is sent at the next tick.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,
    /// How often queued lines are sent.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: DurationSpec,
    /// Most lines waiting per worker; further lines are dropped and counted in
    /// `portcullis_access_log_dropped_total`.
    #[serde(default = "default_max_queue")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_queue: u32,
    /// How long one POST may take.
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
}

fn default_redact() -> Vec<HeaderName> {
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ]
    .iter()
    .filter_map(|h| HeaderName::parse(h).ok())
    .collect()
}
fn default_max_value_bytes() -> u32 {
    1024
}
fn default_true() -> bool {
    true
}
fn default_path() -> String {
    "/".to_string()
}
fn default_batch_size() -> u32 {
    100
}
fn default_flush_interval() -> DurationSpec {
    DurationSpec::from_secs(1)
}
fn default_max_queue() -> u32 {
    1000
}
fn default_timeout() -> DurationSpec {
    DurationSpec::from_secs(5)
}

/// The fields every line may carry; fixed `fields` cannot reuse these names.
pub const BUILT_IN_FIELDS: [&str; 17] = [
    "time",
    "client_ip",
    "method",
    "path",
    "host",
    "status",
    "duration_ms",
    "request_bytes",
    "response_bytes",
    "user_agent",
    "request_id",
    "route",
    "consumer",
    "trace_id",
    "span_id",
    "request_headers",
    "response_headers",
];

impl AccessLogConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: AccessLogConfig = portcullis_common::parse_config(bytes)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (path, list) in [
            ("request_headers", &self.request_headers),
            ("response_headers", &self.response_headers),
            ("redact", &self.redact),
        ] {
            if list.len() > MAX_LISTED {
                return Err(ConfigError::at(
                    path,
                    format!("at most {MAX_LISTED} headers, got {}", list.len()),
                ));
            }
        }
        if self.fields.len() > MAX_LISTED {
            return Err(ConfigError::at(
                "fields",
                format!("at most {MAX_LISTED} fields, got {}", self.fields.len()),
            ));
        }
        for (name, value) in &self.fields {
            let path = format!("fields.{name}");
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
            if !valid_name {
                return Err(ConfigError::at(
                    path,
                    "field names are 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
                ));
            }
            if BUILT_IN_FIELDS.contains(&name.as_str()) {
                return Err(ConfigError::at(
                    path,
                    format!("{name:?} is a built-in field"),
                ));
            }
            if value.len() > MAX_FIELD_VALUE_BYTES {
                return Err(ConfigError::at(
                    path,
                    format!("longer than {MAX_FIELD_VALUE_BYTES} bytes"),
                ));
            }
        }
        if !(16..=65_536).contains(&self.max_value_bytes) {
            return Err(ConfigError::at(
                "max_value_bytes",
                format!("must be between 16 and 65536, got {}", self.max_value_bytes),
            ));
        }
        if let Some(http) = &self.http {
            http.validate("http")?;
        }
        if !self.log.enabled && self.http.is_none() {
            return Err(ConfigError::at(
                "log.enabled",
                "with the host log disabled and no http sink, nothing would be logged",
            ));
        }
        Ok(())
    }
}

impl HttpSink {
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.upstream.trim().is_empty() {
            return Err(ConfigError::at(
                format!("{path}.upstream"),
                "must name a cluster (Envoy) or host:port (Kong)",
            ));
        }
        if !self.path.starts_with('/')
            || self.path.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err(ConfigError::at(
                format!("{path}.path"),
                format!(
                    "must be an absolute path without spaces, got {:?}",
                    self.path
                ),
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError::at(
                format!("{path}.batch_size"),
                "must be between 1 and 10000",
            ));
        }
        if !(1..=100_000).contains(&self.max_queue) {
            return Err(ConfigError::at(
                format!("{path}.max_queue"),
                "must be between 1 and 100000",
            ));
        }
        if self.flush_interval.0 < std::time::Duration::from_millis(10) {
            return Err(ConfigError::at(
                format!("{path}.flush_interval"),
                "must be at least 10ms",
            ));
        }
        if self.timeout.0.is_zero() {
            return Err(ConfigError::at(format!("{path}.timeout"), "must be > 0"));
        }
        Ok(())
    }

    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.upstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_logs_to_the_host_and_redacts_credentials() {
        let c = AccessLogConfig::parse(b"").unwrap();
        assert!(c.log.enabled);
        assert_eq!(c.log.level, Level::Info);
        let redacted: Vec<&str> = c.redact.iter().map(HeaderName::as_str).collect();
        assert_eq!(
            redacted,
            [
                "authorization",
                "proxy-authorization",
                "cookie",
                "set-cookie"
            ]
        );
        assert!(c.http.is_none());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"request_headers":["ok","x y"]}"#, "request_headers[1]"),
            (r#"{"fields":{"status":"x"}}"#, "fields.status"),
            (r#"{"fields":{"bad name":"x"}}"#, "fields.bad name"),
            (r#"{"max_value_bytes":1}"#, "max_value_bytes"),
            (r#"{"log":{"level":"loud"}}"#, "log.level"),
            (r#"{"log":{"enabled":false}}"#, "log.enabled"),
            (r#"{"http":{"upstream":""}}"#, "http.upstream"),
            (r#"{"http":{"upstream":"c","path":"logs"}}"#, "http.path"),
            (
                r#"{"http":{"upstream":"c","batch_size":0}}"#,
                "http.batch_size",
            ),
            (
                r#"{"http":{"upstream":"c","flush_interval":"1ms"}}"#,
                "http.flush_interval",
            ),
            (
                r#"{"http":{"upstream":"c","flush_interval":"soon"}}"#,
                "http.flush_interval",
            ),
            (
                r#"{"http":{"upstream":"c","max_queue":0}}"#,
                "http.max_queue",
            ),
        ];
        for (json, path) in cases {
            let err = AccessLogConfig::parse(json.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }

    #[test]
    fn http_sink_defaults() {
        let c = AccessLogConfig::parse(br#"{"http":{"upstream":"collector"}}"#).unwrap();
        let h = c.http.unwrap();
        assert_eq!(h.path, "/");
        assert_eq!(h.authority(), "collector");
        assert_eq!((h.batch_size, h.max_queue), (100, 1000));
        assert_eq!(h.flush_interval.0, std::time::Duration::from_secs(1));
    }
}
