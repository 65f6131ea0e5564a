//! proxy-wasm glue shared by every filter: turns a [`Policy`] into root and HTTP contexts, implements
//! [`Host`] with host calls (never unwrapping a host result: a trap would abort the request), and logs
//! with the filter's name as prefix so operators see which filter complained on either host.

use crate::decision::{Decision, LocalResponse};
use crate::exchange::Exchange;
use crate::host::Host;
use crate::policy::Policy;
use crate::store::{SharedData, StoreError, Versioned};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

static FILTER_NAME: OnceLock<&'static str> = OnceLock::new();

struct PrefixLogger;
static LOGGER: PrefixLogger = PrefixLogger;

impl log::Log for PrefixLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        let name = FILTER_NAME.get().copied().unwrap_or("portcullis");
        let _ = hostcalls::log(level, &format!("[{name}] {}", record.args()));
    }

    fn flush(&self) {}
}

fn init_logging(name: &'static str) {
    let _ = FILTER_NAME.set(name);
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let name = FILTER_NAME.get().copied().unwrap_or("portcullis");
            let _ = hostcalls::log(LogLevel::Critical, &format!("[{name}] panic: {info}"));
        }));
    }
    log::set_max_level(log::LevelFilter::Info);
}

/// Follows the host's log level. Not callable from `_initialize` (Envoy restricts host calls there), so it
/// runs at configure time. ngx_wasm_module has no proxy_get_log_level: info there.
fn follow_host_log_level() {
    let level = match hostcalls::get_log_level() {
        Ok(LogLevel::Trace) => log::LevelFilter::Trace,
        Ok(LogLevel::Debug) => log::LevelFilter::Debug,
        Ok(LogLevel::Warn) => log::LevelFilter::Warn,
        Ok(LogLevel::Error) | Ok(LogLevel::Critical) => log::LevelFilter::Error,
        _ => log::LevelFilter::Info,
    };
    log::set_max_level(level);
}

/// Registers `P` as this module's root context. Called from `export_policy!`.
pub fn install<P: Policy>() {
    init_logging(P::NAME);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PolicyRoot::<P> { policy: None })
    });
}

struct PolicyRoot<P: Policy> {
    policy: Option<Rc<P>>,
}

impl<P: Policy> Context for PolicyRoot<P> {}

impl<P: Policy> RootContext for PolicyRoot<P> {
    fn on_configure(&mut self, size: usize) -> bool {
        follow_host_log_level();
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log::error!("cannot read the filter configuration: {e:?}");
                return false;
            }
        };
        match P::configure(&config) {
            Ok(policy) => {
                self.policy = Some(Rc::new(policy));
                true
            }
            Err(e) => {
                log::error!("invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic; an unconfigured filter answers 500 instead of hanging.
        Some(Box::new(PolicyHttp {
            policy: self.policy.clone(),
            state: P::State::default(),
            ex: Exchange::new(Box::new(ProxyHost)),
            started: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct PolicyHttp<P: Policy> {
    policy: Option<Rc<P>>,
    state: P::State,
    ex: Exchange,
    /// Whether on_request_headers ran, so on_log runs only for requests the policy saw.
    started: bool,
}

impl<P: Policy> Context for PolicyHttp<P> {}

/// Sends a local response; the host then stops the filter chain for this request.
pub fn send_local_response(response: &LocalResponse) {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(e) =
        hostcalls::send_http_response(u32::from(response.status), headers, Some(&response.body))
    {
        log::error!("could not send a local {} response: {e:?}", response.status);
    }
}

/// Translates a decision into the host's action.
pub fn apply(decision: Decision) -> Action {
    match decision {
        Decision::Continue => Action::Continue,
        Decision::Pause => Action::Pause,
        Decision::Respond(response) => {
            send_local_response(&response);
            Action::Pause
        }
    }
}

impl<P: Policy> HttpContext for PolicyHttp<P> {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            send_local_response(&LocalResponse::json_error(
                500,
                &format!("filter {} is not configured", P::NAME),
            ));
            return Action::Pause;
        };
        self.started = true;
        self.ex.new_callback();
        apply(policy.on_request_headers(&mut self.state, &mut self.ex))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self
            .policy
            .as_ref()
            .filter(|p| p.wants_request_body())
            .cloned()
        else {
            return Action::Continue;
        };
        self.ex.new_callback();
        apply(policy.on_request_body(&mut self.state, &mut self.ex, body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone().filter(|_| self.started) else {
            return Action::Continue;
        };
        self.ex.new_callback();
        apply(policy.on_response_headers(&mut self.state, &mut self.ex))
    }

    fn on_log(&mut self) {
        if let Some(policy) = self.policy.clone().filter(|_| self.started) {
            self.ex.new_callback();
            policy.on_log(&mut self.state, &mut self.ex);
        }
    }
}

/// The real host: every method is one proxy-wasm host call; failures read as "absent".
pub struct ProxyHost;

impl Host for ProxyHost {
    fn now(&self) -> Duration {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default()
    }

    fn request_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn add_request_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, start, len)
            .ok()
            .flatten()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        hostcalls::set_property(path.to_vec(), Some(value)).is_ok()
    }

    fn shared_data(&mut self) -> &mut dyn SharedData {
        self
    }
}

impl SharedData for ProxyHost {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Ok(Some(Versioned { value, cas })),
            Ok((Some(value), None)) => Ok(Some(Versioned { value, cas: 0 })),
            Ok((None, _)) => Ok(None),
            Err(Status::NotFound) => Ok(None),
            Err(_) => Err(StoreError::Host),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Host),
        }
    }
}
