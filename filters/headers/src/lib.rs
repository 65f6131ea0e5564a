//! `headers` filter: request and response header transforms. The policy is in [`policy`]; this file only
//! exports it as a proxy-wasm filter.

pub mod config;
pub mod policy;

pub use policy::HeadersPolicy;

portcullis_common::export_policy!(HeadersPolicy);
