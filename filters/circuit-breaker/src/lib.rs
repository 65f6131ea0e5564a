//! `circuit-breaker` filter: a per-route (or per-key) breaker whose state lives in shared data, so every
//! worker sees the same state. The pure state machine is in [`machine`], the request glue in [`policy`];
//! this file only exports the policy as a proxy-wasm filter.

pub mod config;
pub mod machine;
pub mod policy;

pub use config::CircuitBreakerConfig;
pub use policy::CircuitBreakerPolicy;

portcullis_common::export_policy!(CircuitBreakerPolicy);
