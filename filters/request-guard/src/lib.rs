//! `request-guard` filter: the first line of defence — who may call (client IP allow/deny lists, user
//! agents, methods, hosts) and what they may send (body size, well-formed JSON). The policy is in
//! [`policy`]; this file only exports it as a proxy-wasm filter.

pub mod config;
pub mod json;
pub mod policy;

pub use config::RequestGuardConfig;
pub use policy::RequestGuardPolicy;

portcullis_common::export_policy!(RequestGuardPolicy);
