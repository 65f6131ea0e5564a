//! `access-log` filter: one JSON object per request, written when the request completes.

pub mod config;
pub mod policy;
pub mod record;

pub use policy::AccessLogPolicy;

portcullis_common::export_policy!(AccessLogPolicy);
