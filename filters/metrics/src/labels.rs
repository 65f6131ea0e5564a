//! Labels encoded in metric names, and the bounded per-worker table of series.
//!
//! proxy-wasm metrics have names but no labels, so each label set is its own metric whose name carries the
//! labels: `portcullis_http_requests_total;route=orders;method=GET;status_class=2xx`. Each label is
//! `;<label>=<value>` with a value of `[A-Za-z0-9_.:/@+-]` only (anything else becomes `_`, at most
//! [`MAX_VALUE_BYTES`]), so one regex per label takes it back out:
//! - Envoy: `stats_config.stats_tags: [{tag_name: route, regex: "(;route=([^;]*))"}, …]` — the first group
//!   is cut from the name, the second is the tag value; `/stats/prometheus` then shows
//!   `portcullis_http_requests_total{route="orders",method="GET",status_class="2xx"}`.
//! - Kong (3.9+ Prometheus plugin; 3.10 with `wasm_metrics: true`): `metrics.label_patterns` in `portcullis_metrics.meta.json`,
//!   `{"label": "route", "pattern": "(;route=([^;]*))"}` (a PCRE matched with `ngx.re.match`, the same two captures).

use crate::config::Label;
use portcullis_common::metrics::Metric;
use std::collections::{HashMap, HashSet};

/// Longest label value kept (host metric names are limited: ngx_wasm_module's default is 256 bytes).
pub const MAX_VALUE_BYTES: usize = 64;

pub const REQUESTS_TOTAL: &str = "portcullis_http_requests_total";
pub const DURATION_MS: &str = "portcullis_http_request_duration_milliseconds";
pub const REQUEST_BYTES_TOTAL: &str = "portcullis_http_request_bytes_total";
pub const RESPONSE_BYTES_TOTAL: &str = "portcullis_http_response_bytes_total";
pub const SERIES_DROPPED_TOTAL: &str = "portcullis_metrics_series_dropped_total";

/// The value a label takes when the host did not provide one.
pub const UNKNOWN: &str = "unknown";
/// The consumer label of consumers beyond `max_consumers`.
pub const OTHER: &str = "other";

/// Every label the filter can write, in the order Kong lists them.
pub const ALL_LABELS: [Label; 4] = [
    Label::Route,
    Label::Method,
    Label::StatusClass,
    Label::Consumer,
];

/// The regex (Envoy `stats_tags`) and Lua pattern (Kong `label_patterns`) that extract `label`: the first
/// group is cut from the name, the second is the value.
pub fn extraction_pattern(label: Label) -> String {
    format!("(;{}=([^;]*))", label.name())
}

/// The `metrics` object of `portcullis_metrics.meta.json` for Kong's Prometheus plugin:
/// `{"label_patterns": [{"label": "route", "pattern": "(;route=([^;]*))"}, …]}`.
pub fn kong_metrics_meta() -> serde_json::Value {
    let patterns: Vec<serde_json::Value> = ALL_LABELS
        .iter()
        .map(|l| serde_json::json!({ "label": l.name(), "pattern": extraction_pattern(*l) }))
        .collect();
    serde_json::json!({ "label_patterns": patterns })
}

/// Envoy's bootstrap `stats_config` for these labels: `{"stats_tags": [{"tag_name", "regex"}, …]}`.
pub fn envoy_stats_config() -> serde_json::Value {
    let tags: Vec<serde_json::Value> = ALL_LABELS
        .iter()
        .map(|l| serde_json::json!({ "tag_name": l.name(), "regex": extraction_pattern(*l) }))
        .collect();
    serde_json::json!({ "stats_tags": tags })
}

/// Makes a host- or request-provided string safe as a label value.
pub fn sanitize_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_VALUE_BYTES));
    for b in value.bytes().take(MAX_VALUE_BYTES) {
        let keep = b.is_ascii_alphanumeric() || b"_.:/@+-".contains(&b);
        out.push(if keep { char::from(b) } else { '_' });
    }
    if out.is_empty() {
        out.push_str(UNKNOWN);
    }
    out
}

/// Standard methods keep their name; anything else is `OTHER` (a client must not create series at will).
pub fn method_label(method: Option<&str>) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match method {
        Some(m) => KNOWN.iter().find(|k| **k == m).copied().unwrap_or("OTHER"),
        None => UNKNOWN,
    }
}

/// `2xx`…`5xx`; `none` when no response status is known (the client went away before one was sent).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

/// The label values of one request, already sanitized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    pub route: String,
    pub method: String,
    pub status_class: String,
    pub consumer: String,
}

impl Values {
    fn get(&self, label: Label) -> &str {
        match label {
            Label::Route => &self.route,
            Label::Method => &self.method,
            Label::StatusClass => &self.status_class,
            Label::Consumer => &self.consumer,
        }
    }
}

/// `;route=orders;method=GET` for the configured labels, in their configured order.
pub fn suffix(labels: &[Label], values: &Values) -> String {
    let mut out = String::new();
    for label in labels {
        out.push(';');
        out.push_str(label.name());
        out.push('=');
        out.push_str(values.get(*label));
    }
    out
}

/// The metrics of one label set.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub requests: Metric,
    pub duration: Option<Metric>,
    pub request_bytes: Option<Metric>,
    pub response_bytes: Option<Metric>,
}

/// Series defined so far by this worker, bounded in count; consumers seen, bounded in count.
#[derive(Debug)]
pub struct Registry {
    series: HashMap<String, Series>,
    consumers: HashSet<String>,
    max_series: usize,
    max_consumers: usize,
    with_duration: bool,
    with_sizes: bool,
    dropped: Metric,
}

impl Registry {
    pub fn new(max_series: u32, max_consumers: u32, with_duration: bool, with_sizes: bool) -> Self {
        Registry {
            series: HashMap::new(),
            consumers: HashSet::new(),
            max_series: max_series as usize,
            max_consumers: max_consumers as usize,
            with_duration,
            with_sizes,
            dropped: Metric::counter(SERIES_DROPPED_TOTAL),
        }
    }

    /// The consumer's label value: itself while fewer than `max_consumers` distinct ones were seen.
    pub fn consumer_label(&mut self, consumer: Option<&str>) -> String {
        let Some(consumer) = consumer.filter(|c| !c.is_empty()) else {
            return "anonymous".to_string();
        };
        let value = sanitize_value(consumer);
        if self.consumers.contains(&value) {
            return value;
        }
        if self.consumers.len() < self.max_consumers {
            self.consumers.insert(value.clone());
            return value;
        }
        OTHER.to_string()
    }

    /// The series for a label suffix, defining its metrics on first use; None (and one more dropped
    /// request counted) once `max_series` series exist.
    pub fn series(&mut self, suffix: &str) -> Option<Series> {
        if let Some(s) = self.series.get(suffix) {
            return Some(*s);
        }
        if self.series.len() >= self.max_series {
            self.dropped.inc();
            return None;
        }
        let define = |name: &str, histogram: bool| {
            let full = format!("{name}{suffix}");
            if histogram {
                Metric::histogram(&full)
            } else {
                Metric::counter(&full)
            }
        };
        let series = Series {
            requests: define(REQUESTS_TOTAL, false),
            duration: self.with_duration.then(|| define(DURATION_MS, true)),
            request_bytes: self.with_sizes.then(|| define(REQUEST_BYTES_TOTAL, false)),
            response_bytes: self.with_sizes.then(|| define(RESPONSE_BYTES_TOTAL, false)),
        };
        self.series.insert(suffix.to_string(), series);
        Some(series)
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_keep_safe_characters_only() {
        let cases = [
            ("orders", "orders"),
            ("a1b2-c3d4-uuid", "a1b2-c3d4-uuid"),
            ("svc.ns:8080/x@y+z_", "svc.ns:8080/x@y+z_"),
            ("a;route=evil", "a_route_evil"),
            ("quote\"new\nline", "quote_new_line"),
            ("é", "__"),
            ("", "unknown"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_value(input), want, "{input:?}");
        }
        assert_eq!(sanitize_value(&"x".repeat(500)).len(), MAX_VALUE_BYTES);
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        let cases = [
            (Some("GET"), "GET"),
            (Some("PATCH"), "PATCH"),
            (Some("get"), "OTHER"),
            (Some("BREW"), "OTHER"),
            (None, "unknown"),
        ];
        for (m, want) in cases {
            assert_eq!(method_label(m), want, "{m:?}");
        }
    }

    #[test]
    fn status_classes_cover_every_code() {
        let cases = [
            (Some(100), "1xx"),
            (Some(204), "2xx"),
            (Some(302), "3xx"),
            (Some(429), "4xx"),
            (Some(599), "5xx"),
            (Some(600), "none"),
            (Some(0), "none"),
            (None, "none"),
        ];
        for (s, want) in cases {
            assert_eq!(status_class(s), want, "{s:?}");
        }
    }

    #[test]
    fn suffix_follows_the_configured_label_order() {
        let v = Values {
            route: "r".into(),
            method: "GET".into(),
            status_class: "2xx".into(),
            consumer: "c".into(),
        };
        assert_eq!(
            suffix(&[Label::StatusClass, Label::Route], &v),
            ";status_class=2xx;route=r"
        );
        assert_eq!(suffix(&[], &v), "");
    }

    #[test]
    fn extraction_patterns_are_the_same_for_envoy_and_kong() {
        assert_eq!(
            extraction_pattern(Label::StatusClass),
            "(;status_class=([^;]*))"
        );
        let kong = kong_metrics_meta();
        let envoy = envoy_stats_config();
        for (i, label) in ALL_LABELS.iter().enumerate() {
            assert_eq!(kong["label_patterns"][i]["label"], label.name());
            assert_eq!(envoy["stats_tags"][i]["tag_name"], label.name());
            assert_eq!(
                kong["label_patterns"][i]["pattern"],
                envoy["stats_tags"][i]["regex"]
            );
        }
    }

    #[test]
    fn consumers_beyond_the_bound_are_other() {
        let mut r = Registry::new(10, 2, false, false);
        assert_eq!(r.consumer_label(Some("alice")), "alice");
        assert_eq!(r.consumer_label(Some("bob")), "bob");
        assert_eq!(r.consumer_label(Some("carol")), OTHER);
        assert_eq!(r.consumer_label(Some("alice")), "alice");
        assert_eq!(r.consumer_label(None), "anonymous");
        assert_eq!(r.consumer_label(Some("")), "anonymous");
    }

    #[test]
    fn series_beyond_the_bound_are_dropped_and_counted() {
        let mut r = Registry::new(2, 10, true, true);
        assert!(r.series(";route=a-bound-test").is_some());
        assert!(r.series(";route=b-bound-test").is_some());
        assert!(
            r.series(";route=a-bound-test").is_some(),
            "existing series stay"
        );
        assert!(r.series(";route=c-bound-test").is_none());
        assert_eq!(r.len(), 2);
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(
            portcullis_common::metrics::value(SERIES_DROPPED_TOTAL),
            Some(1)
        );
    }
}
