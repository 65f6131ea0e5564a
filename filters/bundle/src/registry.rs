//! The policies compiled into this bundle (one Cargo feature each) and the bundle's config schema.

use portcullis_common::chain::{DynPolicy, Step};
use portcullis_common::config::ConfigError;
use portcullis_common::Policy;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// A chain of Portcullis policies run inside one filter: `{"chain": [{"policy": NAME, "config": {...}}]}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// The policies to run, in order; each `config` is the config of that policy's own filter.
    pub chain: Vec<ChainItem>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainItem {
    /// The policy's name (the same as its single filter's name).
    pub policy: String,
    /// The policy's configuration.
    #[serde(default)]
    pub config: Value,
}

type Build = fn(&[u8]) -> Result<Box<dyn DynPolicy>, ConfigError>;
type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

/// Lists every policy once as (cargo feature, policy type, config type). Builders and schemas are separate
/// lists so the wasm build, which only builds, does not link the schema generator.
macro_rules! policies {
    ($each:ident) => {{
        #[allow(unused_mut)]
        let mut all = Vec::new();
        #[cfg(feature = "request-guard")]
        all.push($each!(
            portcullis_request_guard::RequestGuardPolicy,
            portcullis_request_guard::RequestGuardConfig
        ));
        #[cfg(feature = "hmac-auth")]
        all.push($each!(
            portcullis_hmac_auth::HmacAuthPolicy,
            portcullis_hmac_auth::HmacAuthConfig
        ));
        #[cfg(feature = "jwt-auth")]
        all.push($each!(
            portcullis_jwt_auth::JwtAuthPolicy,
            portcullis_jwt_auth::config::JwtAuthConfig
        ));
        #[cfg(feature = "headers")]
        all.push($each!(
            portcullis_headers::HeadersPolicy,
            portcullis_headers::config::HeadersConfig
        ));
        #[cfg(feature = "rate-limit")]
        all.push($each!(
            portcullis_rate_limit::RateLimitPolicy,
            portcullis_rate_limit::config::RateLimitConfig
        ));
        #[cfg(feature = "circuit-breaker")]
        all.push($each!(
            portcullis_circuit_breaker::CircuitBreakerPolicy,
            portcullis_circuit_breaker::CircuitBreakerConfig
        ));
        #[cfg(feature = "canary")]
        all.push($each!(
            portcullis_canary::CanaryPolicy,
            portcullis_canary::config::CanaryConfig
        ));
        #[cfg(feature = "metrics")]
        all.push($each!(
            portcullis_metrics::MetricsPolicy,
            portcullis_metrics::config::MetricsConfig
        ));
        #[cfg(feature = "access-log")]
        all.push($each!(
            portcullis_access_log::AccessLogPolicy,
            portcullis_access_log::config::AccessLogConfig
        ));
        #[cfg(feature = "tracing")]
        all.push($each!(
            portcullis_tracing::TracingPolicy,
            portcullis_tracing::config::TracingConfig
        ));
        all
    }};
}

macro_rules! builder {
    ($policy:ty, $config:ty) => {
        (
            <$policy as Policy>::NAME,
            (|bytes: &[u8]| {
                <$policy as Policy>::configure(bytes).map(|p| Box::new(p) as Box<dyn DynPolicy>)
            }) as Build,
        )
    };
}

macro_rules! schema {
    ($policy:ty, $config:ty) => {
        (
            <$policy as Policy>::NAME,
            (|g: &mut SchemaGenerator| g.subschema_for::<$config>()) as SchemaOf,
        )
    };
}

#[allow(clippy::vec_init_then_push)]
fn builders() -> Vec<(&'static str, Build)> {
    policies!(builder)
}

#[allow(clippy::vec_init_then_push)]
fn schemas() -> Vec<(&'static str, SchemaOf)> {
    policies!(schema)
}

/// The names of the policies compiled in.
pub fn policy_names() -> Vec<&'static str> {
    builders().into_iter().map(|(name, _)| name).collect()
}

/// Builds step `index` with the policy's own parser; errors are pathed `chain[index].…`.
pub fn build(index: usize, item: &ChainItem) -> Result<Step, ConfigError> {
    let path = format!("chain[{index}]");
    let Some((_, build)) = builders()
        .into_iter()
        .find(|(name, _)| *name == item.policy)
    else {
        return Err(ConfigError::at(
            format!("{path}.policy"),
            format!(
                "unknown policy {:?} (built in: {})",
                item.policy,
                policy_names().join(", ")
            ),
        ));
    };
    // A missing `config` means the policy's defaults, as for the single filter with an empty config.
    let bytes = match &item.config {
        Value::Null => b"{}".to_vec(),
        config => serde_json::to_vec(config).unwrap_or_default(),
    };
    let policy = build(&bytes).map_err(|e| e.within(&format!("{path}.config")))?;
    Ok(Step { policy, path })
}

/// Each chain item is one of the compiled-in policies with that policy's config schema.
impl JsonSchema for ChainItem {
    fn schema_name() -> Cow<'static, str> {
        "ChainItem".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let variants: Vec<Value> = schemas()
            .into_iter()
            .map(|(name, schema_of)| {
                let config = schema_of(g).to_value();
                serde_json::json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["policy"],
                    "properties": {
                        "policy": { "enum": [name], "description": "The policy's name." },
                        "config": config
                    }
                })
            })
            .collect();
        json_schema!({ "oneOf": variants, "description": "One policy of the chain and its configuration." })
    }
}
