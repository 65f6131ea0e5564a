//! Kong `<filter>.meta.json` documents, generated from each filter's Rust config type. `scripts/build` writes
//! them to dist/ next to the .wasm files; committed copies live in kong/meta/ and a test keeps them current.

use portcullis_common::schema::kong_meta;
use serde_json::Value;

/// (filter name, meta.json document) for every filter.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        (
            "headers",
            kong_meta::<portcullis_headers::config::HeadersConfig>(),
        ),
        (
            "rate-limit",
            kong_meta::<portcullis_rate_limit::config::RateLimitConfig>(),
        ),
        (
            "portcullis",
            kong_meta::<portcullis_bundle::registry::BundleConfig>(),
        ),
        (
            "request-guard",
            kong_meta::<portcullis_request_guard::config::RequestGuardConfig>(),
        ),
        (
            "hmac-auth",
            kong_meta::<portcullis_hmac_auth::config::HmacAuthConfig>(),
        ),
        (
            "circuit-breaker",
            kong_meta::<portcullis_circuit_breaker::config::CircuitBreakerConfig>(),
        ),
        (
            "canary",
            kong_meta::<portcullis_canary::config::CanaryConfig>(),
        ),
        ("metrics", {
            // Kong's Prometheus plugin (wasm_metrics) turns name-encoded labels back into labels with these.
            let mut doc = kong_meta::<portcullis_metrics::config::MetricsConfig>();
            doc["metrics"] = portcullis_metrics::labels::kong_metrics_meta();
            doc
        }),
        (
            "access-log",
            kong_meta::<portcullis_access_log::config::AccessLogConfig>(),
        ),
        (
            "tracing",
            kong_meta::<portcullis_tracing::config::TracingConfig>(),
        ),
        (
            "jwt-auth",
            kong_meta::<portcullis_jwt_auth::config::JwtAuthConfig>(),
        ),
    ]
}

/// The file content: pretty JSON with a trailing newline.
pub fn render(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    text
}
