//! The one trait every Portcullis policy implements. The same implementation runs as its own filter
//! (through the generic adapter) or as one step of the `portcullis` chain bundle.

use crate::config::ConfigError;
use crate::decision::Decision;
use crate::exchange::Exchange;

pub trait Policy: Sized + 'static {
    /// The filter's name: its `.wasm` file, its Kong filter name and its log prefix.
    const NAME: &'static str;

    /// Per-request state the policy carries from one callback to the next.
    type State: Default;

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
}
