//! Every filter the policy file may name: its own config parser (compiled natively) and its JSON Schema
//! (the `config_schema` of the `<filter>.meta.json` Kong validates with).

use portcullis_common::schema::kong_meta;
use portcullis_common::{ConfigError, Policy};
use serde_json::Value;

type Parse = fn(&[u8]) -> Result<(), ConfigError>;
type Schema = fn() -> Value;

pub struct Filter {
    pub name: &'static str,
    pub parse: Parse,
    pub schema: Schema,
}

fn parse_with<P: Policy>(bytes: &[u8]) -> Result<(), ConfigError> {
    P::configure(bytes).map(|_| ())
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    kong_meta::<T>()["config_schema"].clone()
}

macro_rules! filter {
    ($policy:ty, $config:ty) => {
        Filter {
            name: <$policy as Policy>::NAME,
            parse: parse_with::<$policy>,
            schema: schema_of::<$config>,
        }
    };
}

/// All filters, in the order the README lists them.
pub fn all() -> Vec<Filter> {
    vec![
        filter!(
            portcullis_headers::HeadersPolicy,
            portcullis_headers::config::HeadersConfig
        ),
        filter!(
            portcullis_jwt_auth::JwtAuthPolicy,
            portcullis_jwt_auth::config::JwtAuthConfig
        ),
        filter!(
            portcullis_rate_limit::RateLimitPolicy,
            portcullis_rate_limit::config::RateLimitConfig
        ),
        filter!(
            portcullis_circuit_breaker::CircuitBreakerPolicy,
            portcullis_circuit_breaker::config::CircuitBreakerConfig
        ),
        filter!(
            portcullis_request_guard::RequestGuardPolicy,
            portcullis_request_guard::config::RequestGuardConfig
        ),
        filter!(
            portcullis_hmac_auth::HmacAuthPolicy,
            portcullis_hmac_auth::config::HmacAuthConfig
        ),
        filter!(
            portcullis_canary::CanaryPolicy,
            portcullis_canary::config::CanaryConfig
        ),
        filter!(
            portcullis_metrics::MetricsPolicy,
            portcullis_metrics::config::MetricsConfig
        ),
        filter!(
            portcullis_access_log::AccessLogPolicy,
            portcullis_access_log::config::AccessLogConfig
        ),
        filter!(
            portcullis_tracing::TracingPolicy,
            portcullis_tracing::config::TracingConfig
        ),
        filter!(
            portcullis_bundle::BundlePolicy,
            portcullis_bundle::registry::BundleConfig
        ),
    ]
}

pub fn names() -> Vec<&'static str> {
    all().iter().map(|f| f.name).collect()
}

pub fn find(name: &str) -> Option<Filter> {
    all().into_iter().find(|f| f.name == name)
}

/// The filter whose artifact (`.wasm`, Kong filter name) is `artifact`: `portcullis_rate_limit`, `portcullis`.
pub fn find_artifact(artifact: &str) -> Option<Filter> {
    all()
        .into_iter()
        .find(|f| portcullis_common::artifact_name(f.name) == artifact)
}
