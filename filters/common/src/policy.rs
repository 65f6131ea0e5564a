//! The one trait every Portcullis policy implements. The same implementation runs as its own filter
//! (through the generic adapter) or as one step of the `portcullis` chain bundle.

use crate::config::ConfigError;
use crate::decision::Decision;
use crate::exchange::Exchange;
use crate::host::{CalloutResponse, RootHost};
use std::time::Duration;

/// The bundle's policy name, which is also its artifact name.
pub const BUNDLE: &str = "portcullis";

/// The name of a policy's build artifacts (`dist/<name>.wasm`, `<name>.meta.json`), of its Kong filter and of
/// its Envoy VM: `portcullis_<policy>` with `_` for `-` (`portcullis_rate_limit`, the crate's library name),
/// the bundle `portcullis`.
/// - The prefix: Kong refuses to start when a wasm filter is named like a plugin it bundles (`duplicate
///   plugin/wasm filter name`, Kong 3.9 `kong/conf_loader/init.lua`; `hmac-auth` is one).
/// - No `-`: Kong's Prometheus plugin finds a wasm metric's filter with `pw:([\w\.]+):` and indexes the match
///   without a check (Kong 3.9 `kong/plugins/prometheus/wasmx.lua`), so a filter named with `-` that defines a
///   metric breaks `/metrics`; the name also becomes part of the Prometheus metric name, where `-` is invalid.
pub fn artifact_name(policy: &str) -> String {
    if policy == BUNDLE {
        BUNDLE.to_string()
    } else {
        format!("{BUNDLE}_{}", policy.replace('-', "_"))
    }
}

pub trait Policy: Sized + 'static {
    /// The policy's name: what a policy file's `filter:` and the bundle's chain call it, and its log prefix.
    /// Its artifacts are named [`artifact_name`]`(NAME)`.
    const NAME: &'static str;

    /// Per-request state the policy carries from one callback to the next.
    type State: Default + 'static;

    /// Parses and validates the JSON configuration. Errors name the offending field's path.
    fn configure(config: &[u8]) -> Result<Self, ConfigError>;

    fn on_request_headers(&self, _state: &mut Self::State, _ex: &mut Exchange) -> Decision {
        Decision::Continue
    }

    /// Whether request body callbacks are needed; when false the adapter never reads the body.
    fn wants_request_body(&self) -> bool {
        false
    }

    /// A request body chunk arrived; `body_size` bytes are buffered so far (read them through
    /// `ex.host().request_body`). `Decision::Pause` here buffers until more arrives.
    fn on_request_body(
        &self,
        _state: &mut Self::State,
        _ex: &mut Exchange,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> Decision {
        Decision::Continue
    }

    fn on_response_headers(&self, _state: &mut Self::State, _ex: &mut Exchange) -> Decision {
        Decision::Continue
    }

    /// The request is complete (also after resets and local responses); runs for every policy that saw
    /// the request headers.
    fn on_log(&self, _state: &mut Self::State, _ex: &mut Exchange) {}

    // ---- Root-context hooks (timer, callouts, paused requests). All default to no-ops. Policies keep the
    // state these hooks update in `Cell`/`RefCell` fields: a wasm VM is single-threaded.

    /// Timer period the policy needs on the root context (JWKS refresh, batch flush). None = no timer.
    /// Set once at configure (Kong cannot change it). A policy that pauses requests needs one: paused
    /// requests' `max_pause` deadlines are checked on each tick.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// Runs once per successful configure, on the root context's first tick after it (start the first fetch,
    /// …): not in `on_configure` itself, where ngx_wasm_module traps a callout.
    fn on_start(&self, _root: &mut dyn RootHost) {}

    /// Runs every `tick_period`.
    fn on_tick(&self, _root: &mut dyn RootHost) {}

    /// A callout made with [`RootHost::dispatch_http_call`] finished; `response` is None on failure or timeout.
    fn on_callout_response(
        &self,
        _root: &mut dyn RootHost,
        _token: u32,
        _response: Option<CalloutResponse>,
    ) {
    }

    /// A callout this request made with [`crate::Host::dispatch_http_call`] finished (`response` is None on
    /// failure or timeout). `Continue`/`Respond` resume the request; `Pause` keeps it waiting, which is only
    /// allowed after dispatching another callout (otherwise the adapter continues the request).
    fn on_request_callout_response(
        &self,
        _state: &mut Self::State,
        _ex: &mut Exchange,
        _token: u32,
        _response: Option<CalloutResponse>,
    ) -> Decision {
        Decision::Continue
    }

    /// A request this policy paused (`Decision::Pause` from `on_request_headers`/`on_request_body`) is
    /// resumed: decide again now (the awaited data arrived, or the wait timed out).
    fn on_resume(
        &self,
        _state: &mut Self::State,
        _ex: &mut Exchange,
        _timed_out: bool,
    ) -> Decision {
        Decision::Continue
    }

    /// Longest a paused request may wait before `on_resume(timed_out = true)`. Hosts that cannot resume a
    /// request from the root context (ngx_wasm_module) call `on_resume(timed_out = true)` right away.
    fn max_pause(&self) -> Duration {
        Duration::from_secs(5)
    }
}
