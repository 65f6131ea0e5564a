//! The boundary between policies and the proxy. The wasm adapter implements [`Host`] with proxy-wasm host
//! calls; [`crate::testing::FakeHost`] implements it in memory for native and wasm unit tests.

use crate::header_block::HeaderBlock;
use crate::props::Flavor;
use crate::store::SharedData;
use std::time::Duration;

/// Everything a policy may ask of the proxy while handling one request.
pub trait Host {
    /// Wall-clock time since the Unix epoch, as the host reports it.
    fn now(&self) -> Duration;

    /// Which proxy this is, where it matters for reading the request (see [`crate::props`]).
    fn flavor(&self) -> Flavor {
        Flavor::Unknown
    }

    fn request_header(&self, name: &str) -> Option<String>;
    /// Every request header in one host call, for lookups in place ([`Exchange`](crate::Exchange) reads
    /// headers this way); `None` when the host cannot, and headers are then read one by one.
    fn request_header_block(&self) -> Option<HeaderBlock> {
        None
    }
    /// Replaces every value of `name`; `None` removes the header. Header edits return whether the host
    /// applied them (a refused edit must not let the request go on as if it had been made).
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool;
    /// Appends a value, keeping existing ones.
    fn add_request_header(&mut self, name: &str, value: &str) -> bool;

    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool;
    fn add_response_header(&mut self, name: &str, value: &str) -> bool;

    /// Bytes `[start, start + len)` of the request body buffered so far.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;

    /// A raw property value; see [`crate::props`] for the per-concept accessors that hide host differences.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Sets a property; returns false when the host refuses (unknown or read-only property).
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool;

    fn shared_data(&mut self) -> &mut dyn SharedData;

    /// Starts an HTTP callout from the request's own context; its answer arrives in
    /// `Policy::on_request_callout_response` of this request, which may then resume it (Envoy and Kong both
    /// resume a request paused in its headers from its own callout response). Arguments as
    /// [`RootHost::dispatch_http_call`]. Hosts without callouts refuse.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        _method: &str,
        _path: &str,
        _authority: &str,
        _headers: &[(&str, &str)],
        _body: Option<&[u8]>,
        _timeout: Duration,
    ) -> Result<u32, String> {
        Err(format!("callouts to {upstream:?} are not available here"))
    }
}

/// The answer to a callout made with [`RootHost::dispatch_http_call`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalloutResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, read under [`MAX_CALLOUT_BODY`] (a larger body makes the callout count as failed).
    pub body: Vec<u8>,
}

impl CalloutResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Largest callout response body the adapter reads; bigger answers are reported as a failed callout.
pub const MAX_CALLOUT_BODY: usize = 1 << 20;

/// What a policy may ask of the proxy outside any request: from the root context (start, timer, callouts).
pub trait RootHost {
    /// Wall-clock time since the Unix epoch, as the host reports it.
    fn now(&self) -> Duration;
    fn shared_data(&mut self) -> &mut dyn SharedData;
    /// Starts an HTTP callout; its answer arrives in `Policy::on_callout_response` with the returned token.
    /// `upstream`: Envoy cluster name, or Kong `host:port`; `path` with query; `authority` sets `:authority`.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String>;
    /// Resumes every request paused by this policy (each gets `on_resume(timed_out = false)`), once the
    /// current root callback returns.
    fn wake_paused(&mut self);
}
