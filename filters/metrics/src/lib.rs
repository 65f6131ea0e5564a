//! `metrics` filter: Prometheus-style request metrics with labels encoded in the metric name, so that
//! Envoy's `stats_tags` and Kong's Prometheus plugin turn them back into labels. The label encoding is in
//! [`labels`], the configuration in [`config`], the policy in [`policy`]; this file only exports it.

pub mod config;
pub mod labels;
pub mod policy;

pub use policy::MetricsPolicy;

portcullis_common::export_policy!(MetricsPolicy);
