//! `metrics` configuration. Every field is optional; `{}` counts requests by route, method and status class.
//!
//! ```json
//! { "labels": ["route", "method", "status_class", "consumer"], "consumer_header": "x-consumer",
//!   "max_consumers": 100, "max_series": 1000, "duration": true, "sizes": false }
//! ```

use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Request metrics: a request counter, a latency histogram and byte counters, all with the same labels.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Labels attached to every metric, in this order: any of `route` (Envoy route name / Kong route id),
    /// `method`, `status_class` (`2xx`…), `consumer` (needs `consumer_header`).
    #[serde(default = "default_labels")]
    pub labels: Vec<Label>,
    /// Request header holding the consumer id (set by an authentication filter earlier in the chain); read
    /// when the request completes. Required by the `consumer` label.
    #[serde(default)]
    pub consumer_header: Option<HeaderName>,
    /// Most distinct consumer values one worker labels individually; later ones are labelled `other`.
    #[serde(default = "default_max_consumers")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_consumers: u32,
    /// Most distinct label combinations (series per metric) one worker creates; requests that would need
    /// more are counted in `portcullis_metrics_series_dropped_total` instead.
    #[serde(default = "default_max_series")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_series: u32,
    /// Record the `portcullis_http_request_duration_milliseconds` histogram.
    #[serde(default = "default_true")]
    pub duration: bool,
    /// Count `portcullis_http_request_bytes_total` and `portcullis_http_response_bytes_total` (off by default,
    /// like `bandwidth_metrics` of Kong's Prometheus plugin: two more host reads per request).
    #[serde(default)]
    pub sizes: bool,
}

/// A label the filter can attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Route,
    Method,
    StatusClass,
    Consumer,
}

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Label::Route => "route",
            Label::Method => "method",
            Label::StatusClass => "status_class",
            Label::Consumer => "consumer",
        }
    }
}

fn default_labels() -> Vec<Label> {
    vec![Label::Route, Label::Method, Label::StatusClass]
}
fn default_max_consumers() -> u32 {
    100
}
fn default_max_series() -> u32 {
    1000
}
fn default_true() -> bool {
    true
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            labels: default_labels(),
            consumer_header: None,
            max_consumers: default_max_consumers(),
            max_series: default_max_series(),
            duration: true,
            sizes: false,
        }
    }
}

impl MetricsConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: MetricsConfig = portcullis_common::parse_config(bytes)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (i, label) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(label) {
                return Err(ConfigError::at(
                    item_path("labels", i),
                    format!("label {:?} is listed twice", label.name()),
                ));
            }
        }
        if self.labels.contains(&Label::Consumer) && self.consumer_header.is_none() {
            return Err(ConfigError::at(
                "consumer_header",
                "the consumer label needs consumer_header (the request header that names the consumer)",
            ));
        }
        if !(1..=10_000).contains(&self.max_consumers) {
            return Err(ConfigError::at(
                "max_consumers",
                format!("must be between 1 and 10000, got {}", self.max_consumers),
            ));
        }
        if !(1..=100_000).contains(&self.max_series) {
            return Err(ConfigError::at(
                "max_series",
                format!("must be between 1 and 100000, got {}", self.max_series),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_labels_route_method_and_status_class() {
        let c = MetricsConfig::parse(b"").unwrap();
        assert_eq!(
            c.labels,
            vec![Label::Route, Label::Method, Label::StatusClass]
        );
        assert!(c.duration && !c.sizes);
        assert_eq!((c.max_consumers, c.max_series), (100, 1000));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"labels":["route","path"]}"#, "labels[1]"),
            (r#"{"labels":["method","method"]}"#, "labels[1]"),
            (r#"{"labels":["consumer"]}"#, "consumer_header"),
            (r#"{"max_consumers":0}"#, "max_consumers"),
            (r#"{"max_series":1000001}"#, "max_series"),
            (r#"{"consumer_header":"a b"}"#, "consumer_header"),
        ];
        for (json, path) in cases {
            let err = MetricsConfig::parse(json.as_bytes()).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
        }
    }

    #[test]
    fn unknown_field_error_names_it() {
        let err = MetricsConfig::parse(br#"{"durations":true}"#).unwrap_err();
        assert!(err.message.contains("unknown field `durations`"), "{err}");
    }

    #[test]
    fn schema_has_descriptions_and_defaults() {
        let s = portcullis_common::schema::config_schema::<MetricsConfig>();
        assert_eq!(s["additionalProperties"], false);
        assert!(s["properties"]["labels"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("status_class")));
        assert_eq!(s["properties"]["max_series"]["default"], 1000);
    }
}
