//! The boundary between policies and the proxy. The wasm adapter implements [`Host`] with proxy-wasm host
//! calls; [`crate::testing::FakeHost`] implements it in memory for native and wasm unit tests.

use crate::store::SharedData;
use std::time::Duration;

/// Everything a policy may ask of the proxy while handling one request.
pub trait Host {
    /// Wall-clock time since the Unix epoch, as the host reports it.
    fn now(&self) -> Duration;

    fn request_header(&self, name: &str) -> Option<String>;
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Replaces every value of `name`; `None` removes the header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// Appends a value, keeping existing ones.
    fn add_request_header(&mut self, name: &str, value: &str);

    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>);
    fn add_response_header(&mut self, name: &str, value: &str);

    /// Bytes `[start, start + len)` of the request body buffered so far.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;

    /// A raw property value; see [`crate::props`] for the per-concept accessors that hide host differences.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Sets a property; returns false when the host refuses (unknown or read-only property).
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool;

    fn shared_data(&mut self) -> &mut dyn SharedData;
}
