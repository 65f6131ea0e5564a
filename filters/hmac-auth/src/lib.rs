//! `hmac-auth` filter: HMAC request signatures compatible with Kong's `hmac-auth` plugin (draft-cavage HTTP
//! signatures), plus replay protection with single-use nonces remembered in shared data. The signature
//! scheme (parsing, signing string, MAC, and the client-side [`sign`] helper) is in [`signature`]; the
//! policy in [`policy`]; this file only exports it as a proxy-wasm filter.

pub mod config;
pub mod policy;
pub mod signature;

pub use config::HmacAuthConfig;
pub use policy::HmacAuthPolicy;
pub use signature::{body_digest, http_date, sign, Algorithm, SigningRequest};

portcullis_common::export_policy!(HmacAuthPolicy);
