//! `tracing` filter: continues the caller's trace (W3C `traceparent`, B3) or starts one (`sample_ratio`),
//! injects the gateway's span into the upstream request, and exports one OTLP server span per sampled
//! request in batches from the root context. Config in [`config`], ids in [`ids`], the OTLP/HTTP JSON
//! encoding in [`otlp`], the policy in [`policy`]; this file only exports it.

pub mod config;
pub mod ids;
pub mod otlp;
pub mod policy;

pub use policy::TracingPolicy;

portcullis_common::export_policy!(TracingPolicy);
