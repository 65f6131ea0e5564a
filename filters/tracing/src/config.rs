//! `tracing` configuration. Every field is optional; `{}` continues W3C/B3 traces, starts a sampled W3C
//! trace when none arrives, injects `traceparent`, and exports nothing.
//!
//! ```json
//! { "extract": ["w3c", "b3", "b3multi"], "inject": ["w3c", "b3"], "sample_ratio": 0.1,
//!   "service_name": "edge-gateway", "trace_id_response_header": "x-trace-id",
//!   "exporter": {"upstream": "otel", "path": "/v1/traces", "batch_size": 50, "flush_interval": "1s"} }
//! ```

use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::HeaderName;
use portcullis_common::units::DurationSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most resource attributes: a bound on the size of every export.
pub const MAX_RESOURCE_ATTRIBUTES: usize = 32;

/// Trace propagation and span export.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Header formats an incoming trace is read from, first valid one wins: `w3c` (`traceparent`),
    /// `b3` (single `b3` header), `b3multi` (`X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`).
    #[serde(default = "default_extract")]
    pub extract: Vec<Format>,
    /// Header formats written to the upstream request, carrying the gateway's span. Formats not listed
    /// are left as the client sent them.
    #[serde(default = "default_inject")]
    pub inject: Vec<Format>,
    /// Share of new traces (requests that arrive without a trace) that are sampled, 0.0–1.0. Incoming
    /// sampling decisions are always followed.
    #[serde(default = "default_sample_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// More resource attributes of the exported spans (string values).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Response header that tells the client the trace id (none by default).
    #[serde(default)]
    pub trace_id_response_header: Option<HeaderName>,
    /// Where sampled spans are sent (OTLP/HTTP JSON); without it spans are not exported.
    #[serde(default)]
    pub exporter: Option<Exporter>,
}

/// A trace header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    W3c,
    B3,
    B3multi,
}

/// OTLP/HTTP exporter: spans are queued per worker and POSTed as `ExportTraceServiceRequest` JSON
/// (`content-type: application/json`) from the root context's timer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exporter {
    /// Envoy: the cluster name of the collector. Kong: `host:port`.
    pub upstream: String,
    /// Request path on the collector.
    #[serde(default = "default_path")]
    pub path: String,
    /// `:authority` of the POST; default: `upstream`.
    #[serde(default)]
    pub authority: Option<String>,
    /// Spans per POST.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: u32,
    /// How often queued spans are sent.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: DurationSpec,
    /// Most spans waiting per worker; further spans are dropped and counted in
    /// `portcullis_tracing_spans_dropped_total`.
    #[serde(default = "default_max_queue")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_queue: u32,
    /// How long one POST may take.
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
}

fn default_extract() -> Vec<Format> {
    vec![Format::W3c, Format::B3, Format::B3multi]
}
fn default_inject() -> Vec<Format> {
    vec![Format::W3c]
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_service_name() -> String {
    "portcullis".to_string()
}
fn default_path() -> String {
    "/v1/traces".to_string()
}
fn default_batch_size() -> u32 {
    50
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

impl TracingConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: TracingConfig = portcullis_common::parse_config(bytes)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (path, list) in [("extract", &self.extract), ("inject", &self.inject)] {
            for (i, f) in list.iter().enumerate() {
                if list[..i].contains(f) {
                    return Err(ConfigError::at(item_path(path, i), "listed twice"));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::at(
                "sample_ratio",
                format!("must be between 0.0 and 1.0, got {}", self.sample_ratio),
            ));
        }
        if self.service_name.trim().is_empty() || self.service_name.len() > 256 {
            return Err(ConfigError::at("service_name", "must be 1-256 characters"));
        }
        if self.resource_attributes.len() > MAX_RESOURCE_ATTRIBUTES {
            return Err(ConfigError::at(
                "resource_attributes",
                format!("at most {MAX_RESOURCE_ATTRIBUTES} attributes"),
            ));
        }
        for (k, v) in &self.resource_attributes {
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                return Err(ConfigError::at(
                    format!("resource_attributes.{k}"),
                    "keys are 1-128 bytes, values at most 256 bytes",
                ));
            }
        }
        if let Some(e) = &self.exporter {
            e.validate()?;
        }
        Ok(())
    }
}

impl Exporter {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.upstream.trim().is_empty() {
            return Err(ConfigError::at(
                "exporter.upstream",
                "must name a cluster (Envoy) or host:port (Kong)",
            ));
        }
        if !self.path.starts_with('/')
            || self.path.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err(ConfigError::at(
                "exporter.path",
                format!(
                    "must be an absolute path without spaces, got {:?}",
                    self.path
                ),
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError::at(
                "exporter.batch_size",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=100_000).contains(&self.max_queue) {
            return Err(ConfigError::at(
                "exporter.max_queue",
                "must be between 1 and 100000",
            ));
        }
        if self.flush_interval.0 < std::time::Duration::from_millis(10) {
            return Err(ConfigError::at(
                "exporter.flush_interval",
                "must be at least 10ms",
            ));
        }
        if self.timeout.0.is_zero() {
            return Err(ConfigError::at("exporter.timeout", "must be > 0"));
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
    fn empty_config_propagates_w3c_and_exports_nothing() {
        let c = TracingConfig::parse(b"").unwrap();
        assert_eq!(c.extract, [Format::W3c, Format::B3, Format::B3multi]);
        assert_eq!(c.inject, [Format::W3c]);
        assert_eq!(c.sample_ratio, 1.0);
        assert_eq!(c.service_name, "portcullis");
        assert!(c.exporter.is_none());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"extract":["w3c","jaeger"]}"#, "extract[1]"),
            (r#"{"inject":["b3","b3"]}"#, "inject[1]"),
            (r#"{"sample_ratio":1.5}"#, "sample_ratio"),
            (r#"{"sample_ratio":-0.1}"#, "sample_ratio"),
            (r#"{"service_name":" "}"#, "service_name"),
            (
                r#"{"trace_id_response_header":"x y"}"#,
                "trace_id_response_header",
            ),
            (r#"{"exporter":{}}"#, "exporter"),
            (r#"{"exporter":{"upstream":""}}"#, "exporter.upstream"),
            (
                r#"{"exporter":{"upstream":"o","path":"v1"}}"#,
                "exporter.path",
            ),
            (
                r#"{"exporter":{"upstream":"o","batch_size":0}}"#,
                "exporter.batch_size",
            ),
            (
                r#"{"exporter":{"upstream":"o","flush_interval":"0s"}}"#,
                "exporter.flush_interval",
            ),
            (
                r#"{"resource_attributes":{"":"x"}}"#,
                "resource_attributes.",
            ),
        ];
        for (json, path) in cases {
            let err = TracingConfig::parse(json.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }

    #[test]
    fn exporter_defaults() {
        let c = TracingConfig::parse(br#"{"exporter":{"upstream":"otel"}}"#).unwrap();
        let e = c.exporter.unwrap();
        assert_eq!((e.path.as_str(), e.authority()), ("/v1/traces", "otel"));
        assert_eq!((e.batch_size, e.max_queue), (50, 1000));
    }
}
