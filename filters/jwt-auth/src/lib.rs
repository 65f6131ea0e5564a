//! `jwt-auth` filter: JWT authentication with providers (secret, inline JWKS or remote JWKS), an algorithm
//! allow-list, claim rules and RFC 6750 errors. The policy is in [`policy`]; this file only exports it.

pub mod config;
pub mod keys;
pub mod policy;
pub mod token;

pub use policy::JwtAuthPolicy;

portcullis_common::export_policy!(JwtAuthPolicy);
