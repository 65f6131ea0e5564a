//! `rate-limit` filter: token bucket, fixed and sliding window limits keyed by templates, exact across
//! workers (every update is a compare-and-swap on shared data) with bounded memory. The algorithms are in
//! [`algo`], the multi-limit decision in [`core`], the request glue in [`policy`]; this file only exports
//! the policy as a proxy-wasm filter.

pub mod algo;
pub mod config;
pub mod core;
pub mod global;
pub mod policy;
pub mod redis;

pub use config::RateLimitConfig;
pub use policy::RateLimitPolicy;

portcullis_common::export_policy!(RateLimitPolicy);
