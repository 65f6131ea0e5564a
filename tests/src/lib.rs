//! End-to-end harness for Portcullis filters running in a real gateway: Envoy, or Kong's WebAssembly engine
//! (nginx + ngx_wasm_module), chosen per run by `PORTCULLIS_E2E_HOST` (see [`host`]).
//!
//! ```ignore
//! use portcullis_e2e::{Gateway, json};
//! let gw = Gateway::new()
//!     .filter("headers", json!({"request": {"set": [{"name": "x-a", "value": "1"}]}}))
//!     .start()
//!     .expect("envoy starts");
//! let resp = gw.get("/x").send();
//! resp.assert_status(200);
//! gw.upstream.last().assert_header("x-a", "1");
//! ```
//! The proxy listens on loopback ports and is stopped when the [`Gateway`] drops (also on panic).

pub mod bench;
pub mod client;
pub mod envoy;
pub mod gateway;
pub mod host;
pub mod kong;
pub mod kong_engine;
pub mod meta;
pub mod paths;
pub mod process;
pub mod scenario;
pub mod upstream;

pub use client::{Request, Response};
pub use envoy::{Envoy, EnvoyConfig, FilterSpec, StartError};
pub use gateway::{FilterLogLine, Gateway, GatewayBuilder, Proxy};
pub use host::HostKind;
pub use serde_json::json;
pub use upstream::{Recorded, Reply, Upstream};
