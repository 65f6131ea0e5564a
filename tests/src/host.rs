//! Which gateway the end-to-end tests drive. Every test is written once against [`crate::Gateway`]; the host
//! is the run's parameter, `PORTCULLIS_E2E_HOST`:
//! - `envoy` (default): Envoy from `.venv` (`scripts/setup`), or `PORTCULLIS_ENVOY`;
//! - `kong-engine`: Kong's WebAssembly engine, nginx + ngx_wasm_module, from `PORTCULLIS_KONG_NGINX` or an
//!   `nginx` on `PATH` built with the module (never shipped by this project: see `kong/README.md`).
//!
//! `scripts/test` runs the suite once per host and reports a host it cannot find as skipped, with the reason.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Envoy,
    KongEngine,
}

impl HostKind {
    pub fn parse(name: &str) -> Option<HostKind> {
        match name {
            "envoy" => Some(HostKind::Envoy),
            "kong-engine" => Some(HostKind::KongEngine),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostKind::Envoy => "envoy",
            HostKind::KongEngine => "kong-engine",
        }
    }
}

/// The host of this test run (read once). An unknown name is a mistake worth stopping for.
pub fn current() -> HostKind {
    static HOST: OnceLock<HostKind> = OnceLock::new();
    *HOST.get_or_init(|| match std::env::var("PORTCULLIS_E2E_HOST") {
        Err(_) => HostKind::Envoy,
        Ok(name) => HostKind::parse(&name).unwrap_or_else(|| {
            panic!("PORTCULLIS_E2E_HOST={name:?}: expected \"envoy\" or \"kong-engine\"")
        }),
    })
}

/// Whether this run's gateway is Kong's engine (for the few assertions where the hosts really differ).
pub fn is_kong_engine() -> bool {
    current() == HostKind::KongEngine
}
