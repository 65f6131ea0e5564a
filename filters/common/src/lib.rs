//! Shared library of the Portcullis filters.
//!
//! A filter crate writes only its policy: a validated config type and an implementation of [`Policy`].
//! Everything host-specific lives here once: the proxy-wasm adapter (`adapter`, wasm only), property names
//! and encodings that differ between Envoy and Kong ([`props`]), shared-data counters ([`store`]),
//! metrics ([`metrics`]), and the per-request [`Exchange`] that reads each host value at most once.

pub mod batch;
pub mod chain;
pub mod cidr;
pub mod client_ip;
pub mod config;
pub mod decision;
pub mod exchange;
pub mod header_block;
pub mod host;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod props;
pub mod schema;
pub mod store;
pub mod template;
pub mod testing;
pub mod trace_context;
pub mod units;

#[cfg(target_arch = "wasm32")]
pub mod adapter;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use proxy_wasm;

pub use config::{parse_config, ConfigError};
pub use decision::{Decision, LocalResponse};
pub use exchange::Exchange;
pub use host::{CalloutResponse, Host, RootHost};
pub use policy::{artifact_name, Policy};

/// Exports a [`Policy`] as a complete proxy-wasm filter (`_initialize` + root and HTTP contexts).
/// Does nothing when compiled for a native target or as a test binary (a test runs as a WASI command,
/// which must not also be a reactor), so the filter crate stays testable with `cargo test`; nor when the
/// filter crate is linked into the `portcullis` bundle (its feature `bundled`), which exports the chain.
/// Build the bundle in its own cargo invocation: Cargo unifies features within one build.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[allow(unexpected_cfgs)]
        mod __portcullis_export {
            #[allow(unused_imports)]
            use super::*;
            #[cfg(all(target_arch = "wasm32", not(test), not(feature = "bundled")))]
            $crate::proxy_wasm::main! {{
                $crate::adapter::install::<$policy>();
            }}
        }
    };
}
