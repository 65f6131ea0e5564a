//! `canary` filter: sticky traffic split between a stable and a canary upstream, by ordered rules
//! (header, cookie, query, client IP, user-id prefix), then a hashed percentage with an optional time ramp.
//! The policy is in [`policy`]; this file only exports it as a proxy-wasm filter.

pub mod config;
pub mod hash;
pub mod policy;
pub mod ramp;

pub use policy::CanaryPolicy;

portcullis_common::export_policy!(CanaryPolicy);
