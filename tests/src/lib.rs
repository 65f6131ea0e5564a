//! End-to-end harness for Portcullis filters running in a real Envoy.
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
//! Envoy listens on ephemeral loopback ports and is killed when the [`Gateway`] drops (also on panic).

pub mod bench;
pub mod client;
pub mod envoy;
pub mod meta;
pub mod paths;
pub mod scenario;
pub mod upstream;

pub use client::{Request, Response};
pub use envoy::{Envoy, EnvoyConfig, FilterSpec, Gateway, StartError};
pub use serde_json::json;
pub use upstream::{Recorded, Reply, Upstream};
