//! proxy-wasm glue shared by every filter: turns a [`Policy`] into root and HTTP contexts, implements
//! [`Host`] with host calls (never unwrapping a host result: a trap would abort the request), and logs
//! with the filter's name as prefix so operators see which filter complained on either host.

use crate::decision::{Decision, LocalResponse};
use crate::exchange::Exchange;
use crate::header_block::HeaderBlock;
use crate::host::{CalloutResponse, Host, RootHost, MAX_CALLOUT_BODY};
use crate::metrics;
use crate::policy::Policy;
use crate::props::{self, Flavor};
use crate::store::{SharedData, StoreError, Versioned};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};
use std::cell::{Cell, RefCell};
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
        host_log(level, &format!("[{name}] {}", record.args()));
    }

    fn flush(&self) {}
}

/// One log line. The SDK's `hostcalls::log` panics (traps) on a status other than OK; a line the host refuses
/// has nowhere else to go, so its status is not looked at.
fn host_log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live string; the host copies it during the call.
    unsafe { ffi::proxy_log(level as u32, message.as_ptr(), message.len()) };
}

fn init_logging(name: &'static str) {
    // Set once per module: a second call (never made) would keep the first name.
    let _ = FILTER_NAME.set(name);
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            let name = FILTER_NAME.get().copied().unwrap_or("portcullis");
            host_log(LogLevel::Critical, &format!("[{name}] panic: {info}"));
        }));
    }
    // Info, on every host: the level is not read from the host, because ngx_wasm_module (Kong's engine)
    // declares `proxy_get_log_level` with two parameters where the ABI has one, and a module importing it
    // fails to instantiate there (`incompatible import type`, src/common/proxy_wasm/ngx_proxy_wasm_host.c).
    log::set_max_level(log::LevelFilter::Info);
}

/// Registers `P` as this module's root context. Called from `export_policy!`.
pub fn install<P: Policy>() {
    init_logging(P::NAME);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(PolicyRoot::<P> {
            policy: None,
            context_id,
            next_policy_tick: Duration::ZERO,
            ticking: false,
            started: false,
        })
    });
}

/// Raw host calls whose SDK wrappers panic on an unexpected status (a trap): resuming a request that is
/// already gone, or a host that refuses a tick period, must stay a logged no-op.
#[allow(clashing_extern_declarations)]
mod ffi {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
    }
}

/// One header edit; whether the host answered OK. The SDK's wrappers panic (trap) on any other status.
fn edit_header(map: MapType, name: &str, value: Option<&str>, append: bool) -> bool {
    let map = map as u32;
    // SAFETY: pointers and lengths of live borrowed slices; the host copies them during the call.
    let status = unsafe {
        match value {
            Some(v) if append => {
                ffi::proxy_add_header_map_value(map, name.as_ptr(), name.len(), v.as_ptr(), v.len())
            }
            Some(v) => ffi::proxy_replace_header_map_value(
                map,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => ffi::proxy_remove_header_map_value(map, name.as_ptr(), name.len()),
        }
    };
    if status != 0 {
        log::warn!("the host answered status {status} to an edit of header {name:?}");
    }
    status == 0
}

/// A buffer the host allocated through this module's `proxy_on_memory_allocate` for a host call's answer.
/// SAFETY (callers): `data` is null or a leaked `Vec<u8>` of exactly `size` bytes the host handed over,
/// taken back once, as the SDK itself does.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    Vec::from_raw_parts(data, size, size)
}

/// A property read without the SDK's two allocations for the path (the segments are NUL-joined on the
/// stack when short, as property paths are).
fn get_property(path: &[&str]) -> Option<Vec<u8>> {
    let mut inline = [0u8; 64];
    let mut heap = Vec::new();
    let len = path
        .iter()
        .map(|s| s.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    let buffer: &mut [u8] = if len <= inline.len() {
        &mut inline[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            at += 1; // the NUL separator (already zero)
        }
        buffer[at..at + segment.len()].copy_from_slice(segment.as_bytes());
        at += segment.len();
    }
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: see `take_host_buffer`; the path buffer outlives the call.
    unsafe {
        if ffi::proxy_get_property(buffer.as_ptr(), buffer.len(), &mut data, &mut size) != 0 {
            return None;
        }
        (!data.is_null()).then(|| take_host_buffer(data, size))
    }
}

fn set_effective_context(context_id: u32) -> bool {
    // SAFETY: plain integer arguments; the host validates the id.
    unsafe { ffi::proxy_set_effective_context(context_id) == 0 }
}

fn continue_request() -> bool {
    // SAFETY: plain integer argument (0 = the request stream).
    unsafe { ffi::proxy_continue_stream(0) == 0 }
}

/// A paused request the root context can resume: type-erased so the registry needs no policy type.
trait Resumable {
    fn resume(&self, timed_out: bool) -> Decision;
    fn max_pause(&self) -> Duration;
}

struct PausedRequest {
    root_id: u32,
    context_id: u32,
    deadline: Duration,
    handle: Rc<dyn Resumable>,
}

thread_local! {
    /// Requests paused by a policy, waiting for its root context to resume them. Entries leave on resume
    /// or when the request ends (on_log / on_done), so nothing outlives its request.
    static PAUSED: RefCell<Vec<PausedRequest>> = const { RefCell::new(Vec::new()) };
    /// Callouts dispatched from an HTTP context during the current callback: a request that pauses after
    /// making one waits for its answer (`on_request_callout_response`), not for its root context.
    static REQUEST_CALLOUTS: Cell<u32> = const { Cell::new(0) };
}

fn request_callouts_made() -> bool {
    REQUEST_CALLOUTS.with(|c| c.replace(0)) > 0
}

/// Sets a root context's tick period, once: ngx_wasm_module traps on a second `set_tick_period`.
fn set_root_tick(period: Duration) {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX).max(1);
    // SAFETY: a plain integer argument.
    if unsafe { ffi::proxy_set_tick_period_milliseconds(ms) } != 0 {
        log::warn!("the host refused a tick period of {ms} ms");
    }
}

fn unregister_paused(context_id: u32) {
    PAUSED.with(|p| p.borrow_mut().retain(|e| e.context_id != context_id));
}

/// Resumes this root's paused requests: all of them when `wake_all`, else only those past their deadline
/// (which get `timed_out = true`). A request the policy pauses again goes back with a fresh deadline if its
/// wait had timed out.
fn resume_paused(root_id: u32, now: Duration, wake_all: bool) {
    let due: Vec<PausedRequest> = PAUSED.with(|p| {
        let mut p = p.borrow_mut();
        let (due, keep): (Vec<_>, Vec<_>) = p
            .drain(..)
            .partition(|e| e.root_id == root_id && (wake_all || e.deadline <= now));
        *p = keep;
        due
    });
    if due.is_empty() {
        return;
    }
    for entry in due {
        if !set_effective_context(entry.context_id) {
            continue; // the request is gone
        }
        let timed_out = entry.deadline <= now;
        match entry.handle.resume(timed_out) {
            Decision::Continue => {
                if !continue_request() {
                    log::debug!("request {} could not be resumed", entry.context_id);
                }
            }
            Decision::Respond(response) => send_local_response(&response),
            Decision::Pause => {
                let deadline = if timed_out {
                    now + entry.handle.max_pause()
                } else {
                    entry.deadline
                };
                PAUSED.with(|p| p.borrow_mut().push(PausedRequest { deadline, ..entry }));
            }
        }
    }
    set_effective_context(root_id);
}

/// The root context's view of the host for [`Policy`] root hooks.
struct ProxyRootHost {
    store: ProxyHost,
    wake: bool,
}

impl RootHost for ProxyRootHost {
    fn now(&self) -> Duration {
        self.store.now()
    }

    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.store
    }

    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let mut all = Vec::with_capacity(headers.len() + 3);
        all.push((":method", method));
        all.push((":path", path));
        all.push((":authority", authority));
        all.extend_from_slice(headers);
        hostcalls::dispatch_http_call(upstream, all, body, Vec::new(), timeout)
            .map_err(|status| format!("the host refused the call to {upstream:?}: {status:?}"))
    }

    fn wake_paused(&mut self) {
        self.wake = true;
    }
}

struct PolicyRoot<P: Policy> {
    policy: Option<Rc<P>>,
    context_id: u32,
    /// When the policy's own timer fires next (the host may tick early or late).
    next_policy_tick: Duration,
    /// Whether the tick period was set (it can be set only once on Kong).
    ticking: bool,
    /// Whether `Policy::on_start` ran for the current configuration. It runs on the first tick, not in
    /// `on_configure`: ngx_wasm_module traps a `dispatch_http_call` made during `on_configure` ("can only send
    /// HTTP dispatch during on_request_headers, on_request_body, on_tick, …",
    /// src/common/proxy_wasm/ngx_proxy_wasm_host.c), which stops the worker, and `on_start` starts fetches.
    started: bool,
}

impl<P: Policy> PolicyRoot<P> {
    fn root_host() -> ProxyRootHost {
        ProxyRootHost {
            store: ProxyHost,
            wake: false,
        }
    }

    /// After every root callback: resume what is due (woken, or past its deadline; deadlines are checked
    /// on each tick, so a pausing policy needs a `tick_period`).
    fn finish(&mut self, host: ProxyRootHost) {
        resume_paused(self.context_id, host.now(), host.wake);
    }
}

impl<P: Policy> Context for PolicyRoot<P> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(policy) = self.policy.clone() else {
            return;
        };
        let response = read_callout_response(body_size);
        let mut host = Self::root_host();
        policy.on_callout_response(&mut host, token_id, response);
        self.finish(host);
    }
}

/// The finished callout's answer; None when it failed (no `:status`: reset, timeout) or is oversized.
fn read_callout_response(body_size: usize) -> Option<CalloutResponse> {
    let headers = map_pairs(MapType::HttpCallResponseHeaders);
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok())?;
    if body_size > MAX_CALLOUT_BODY {
        log::warn!(
            "callout response body of {body_size} bytes exceeds {MAX_CALLOUT_BODY}: ignored"
        );
        return None;
    }
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    Some(CalloutResponse {
        status,
        headers,
        body,
    })
}

/// Whether refusing a configuration (`on_configure` false) closes the route. Envoy rejects the filter: the
/// listener or the config update is refused, nothing is served with it. Kong's engine does not: Kong logs
/// `failed rebuilding filter chain state` and proxies the route **without** the chain (Kong 3.9
/// `kong/runloop/wasm.lua`, measured in Kong 3.9.3), and bare nginx loses its workers. Only Envoy answers
/// `xds.node` (its node, also outside requests; measured in Envoy 1.40); ngx_wasm_module answers an error
/// status without logging (properties it does not know under `xds.`, unlike `node` or `plugin_vm_id`,
/// which it logs as `[error]`/`[alert]`).
fn refusal_closes_the_route() -> bool {
    matches!(hostcalls::get_property(vec!["xds", "node"]), Ok(Some(node)) if !node.is_empty())
}

impl<P: Policy> RootContext for PolicyRoot<P> {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log::error!("cannot read the filter configuration: {e:?}");
                return false;
            }
        };
        match P::configure(&config) {
            Ok(policy) => {
                let policy = Rc::new(policy);
                self.policy = Some(policy.clone());
                let host = Self::root_host();
                // The root timer also hands pending metric additions to the host (metrics::flush).
                let mut root_period = metrics::FLUSH_PERIOD;
                if let Some(period) = policy.tick_period() {
                    self.next_policy_tick = host.now() + period;
                    root_period = root_period.min(period);
                }
                if !self.ticking {
                    set_root_tick(root_period);
                    self.ticking = true;
                }
                // on_start runs on the next tick (see `started`)
                self.started = false;
                self.finish(host);
                true
            }
            Err(e) => {
                if refusal_closes_the_route() {
                    log::error!("invalid configuration: {e}");
                    return false;
                }
                log::error!("invalid configuration: {e}; {}", crate::config::FAIL_CLOSED);
                self.policy = None;
                true
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(policy) = self.policy.clone() else {
            return;
        };
        metrics::flush();
        let mut host = Self::root_host();
        if !self.started {
            self.started = true;
            policy.on_start(&mut host);
        }
        if let Some(period) = policy.tick_period() {
            let now = host.now();
            if now >= self.next_policy_tick {
                self.next_policy_tick = now + period;
                policy.on_tick(&mut host);
            }
        }
        self.finish(host);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic; an unconfigured filter answers 500 instead of hanging.
        Some(Box::new(PolicyHttp {
            policy: self.policy.clone(),
            inner: Rc::new(RefCell::new(HttpInner {
                state: P::State::default(),
                ex: Exchange::new(Box::new(ProxyHost)),
                started: false,
            })),
            context_id,
            root_id: self.context_id,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct HttpInner<P: Policy> {
    state: P::State,
    ex: Exchange,
    /// Whether on_request_headers ran, so on_log runs only for requests the policy saw.
    started: bool,
}

struct PolicyHttp<P: Policy> {
    policy: Option<Rc<P>>,
    /// Shared with the paused-request registry while the request waits for its root context.
    inner: Rc<RefCell<HttpInner<P>>>,
    context_id: u32,
    root_id: u32,
}

struct Resume<P: Policy> {
    policy: Rc<P>,
    inner: Rc<RefCell<HttpInner<P>>>,
}

impl<P: Policy> Resumable for Resume<P> {
    fn resume(&self, timed_out: bool) -> Decision {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return Decision::Pause;
        };
        let inner = &mut *inner;
        inner.ex.new_callback();
        let decision = self
            .policy
            .on_resume(&mut inner.state, &mut inner.ex, timed_out);
        unless_an_edit_failed(decision, &mut inner.ex)
    }

    fn max_pause(&self) -> Duration {
        self.policy.max_pause()
    }
}

impl<P: Policy> PolicyHttp<P> {
    /// Applies a request-phase decision; a pause registers the request for its root context to resume.
    fn apply_request_decision(&self, policy: &Rc<P>, decision: Decision) -> Action {
        let awaits_callout = request_callouts_made();
        if decision != Decision::Pause {
            return apply(decision);
        }
        if awaits_callout {
            // The request's own callout answer resumes it (on_http_call_response below); its timeout
            // bounds the wait.
            return Action::Pause;
        }
        // Only Envoy lets a root context resume a request: ngx_wasm_module accepts
        // `proxy_set_effective_context` but ignores it, so there a pause is decided at once (as timed out).
        if ProxyHost.flavor() != Flavor::Envoy {
            // No root-driven resume on this host: decide now, as if the wait had timed out.
            let decision = match self.inner.try_borrow_mut() {
                Ok(mut inner) => {
                    let inner = &mut *inner;
                    let decision = policy.on_resume(&mut inner.state, &mut inner.ex, true);
                    unless_an_edit_failed(decision, &mut inner.ex)
                }
                Err(_) => Decision::Continue,
            };
            return apply(match decision {
                Decision::Pause => Decision::Respond(LocalResponse::json_error(
                    503,
                    "the request cannot wait on this host",
                )),
                other => other,
            });
        }
        let now = ProxyHost.now();
        PAUSED.with(|p| {
            let mut p = p.borrow_mut();
            p.retain(|e| e.context_id != self.context_id);
            p.push(PausedRequest {
                root_id: self.root_id,
                context_id: self.context_id,
                deadline: now + policy.max_pause(),
                handle: Rc::new(Resume {
                    policy: policy.clone(),
                    inner: self.inner.clone(),
                }),
            });
        });
        Action::Pause
    }
}

impl<P: Policy> Context for PolicyHttp<P> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(policy) = self.policy.clone() else {
            return;
        };
        let response = read_callout_response(body_size);
        REQUEST_CALLOUTS.with(|c| c.set(0));
        let decision = match self.inner.try_borrow_mut() {
            Ok(mut inner) => {
                let inner = &mut *inner;
                inner.ex.new_callback();
                let decision = policy.on_request_callout_response(
                    &mut inner.state,
                    &mut inner.ex,
                    token_id,
                    response,
                );
                unless_an_edit_failed(decision, &mut inner.ex)
            }
            Err(_) => Decision::Continue,
        };
        match decision {
            Decision::Pause if request_callouts_made() => {}
            Decision::Respond(response) => send_local_response(&response),
            _ => {
                if !continue_request() {
                    log::debug!("request {} could not be resumed", self.context_id);
                }
            }
        }
    }

    fn on_done(&mut self) -> bool {
        unregister_paused(self.context_id);
        true
    }
}

/// A decision, unless a header edit the policy made did not take effect: then the client gets an error
/// instead of the request (or response) going on unedited — a header that should have been removed (a
/// credential, a forged identity) must never pass because the host dropped the edit.
fn unless_an_edit_failed(decision: Decision, ex: &mut Exchange) -> Decision {
    let Some(failure) = ex.take_edit_failure() else {
        return decision;
    };
    if matches!(decision, Decision::Respond(_)) {
        return decision;
    }
    let message = if failure.status < 500 {
        failure.message.as_str()
    } else {
        "the gateway could not apply a header edit"
    };
    Decision::Respond(LocalResponse::json_error(failure.status, message))
}

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
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            send_local_response(&LocalResponse::json_error(
                500,
                &format!("filter {} is not configured", P::NAME),
            ));
            return Action::Pause;
        };
        let decision = {
            let Ok(mut inner) = self.inner.try_borrow_mut() else {
                return Action::Continue;
            };
            let inner = &mut *inner;
            inner.started = true;
            inner.ex.new_callback();
            REQUEST_CALLOUTS.with(|c| c.set(0));
            // ngx_wasm_module passes eof 0 to every on_request_headers, body or not
            // (src/http/proxy_wasm/ngx_http_proxy_wasm.c): there the flag says nothing, and policies read
            // the request's own headers instead (nginx keeps `transfer-encoding`).
            if ProxyHost.flavor() != Flavor::Kong {
                inner.ex.set_request_has_body(!end_of_stream);
            }
            let decision = policy.on_request_headers(&mut inner.state, &mut inner.ex);
            unless_an_edit_failed(decision, &mut inner.ex)
        };
        self.apply_request_decision(&policy, decision)
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
        let decision = {
            let Ok(mut inner) = self.inner.try_borrow_mut() else {
                return Action::Continue;
            };
            let inner = &mut *inner;
            inner.ex.new_callback();
            let decision =
                policy.on_request_body(&mut inner.state, &mut inner.ex, body_size, end_of_stream);
            unless_an_edit_failed(decision, &mut inner.ex)
        };
        // Body buffering pauses are the host's own (more data resumes them), not root-resumed waits.
        apply(decision)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return Action::Continue;
        };
        let inner = &mut *inner;
        if !inner.started {
            return Action::Continue;
        }
        inner.ex.new_callback();
        let decision = policy.on_response_headers(&mut inner.state, &mut inner.ex);
        apply(unless_an_edit_failed(decision, &mut inner.ex))
    }

    fn on_log(&mut self) {
        unregister_paused(self.context_id);
        let Some(policy) = self.policy.clone() else {
            return;
        };
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        let inner = &mut *inner;
        if inner.started {
            inner.ex.new_callback();
            policy.on_log(&mut inner.state, &mut inner.ex);
        }
    }
}

/// One header value, invalid UTF-8 replaced by U+FFFD. Never `hostcalls::get_map_value`/`get_map`: they
/// `unwrap()` the UTF-8 conversion, so one header value with a byte like 0xff (which Envoy forwards as
/// obs-text) trapped the VM (found by tests/tests/hostile.rs).
fn map_value(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(map, name)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Every header of a map, values decoded as in [`map_value`] (names are tokens: ASCII on both hosts).
fn map_pairs(map: MapType) -> Vec<(String, String)> {
    hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect()
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
        map_value(MapType::HttpRequestHeaders, name)
    }

    fn request_header_block(&self) -> Option<HeaderBlock> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: see `take_host_buffer`.
        unsafe {
            if ffi::proxy_get_header_map_pairs(
                MapType::HttpRequestHeaders as u32,
                &mut data,
                &mut size,
            ) != 0
            {
                return None;
            }
            HeaderBlock::parse(take_host_buffer(data, size))
        }
    }

    /// Learned on the first request (ngx_wasm_module answers `ngx.*` properties only in a request).
    fn flavor(&self) -> Flavor {
        match props::flavor() {
            Flavor::Unknown => props::detect_flavor(self),
            known => known,
        }
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
        edit_header(MapType::HttpRequestHeaders, name, value, false)
    }

    fn add_request_header(&mut self, name: &str, value: &str) -> bool {
        edit_header(MapType::HttpRequestHeaders, name, Some(value), true)
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpResponseHeaders, name)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool {
        edit_header(MapType::HttpResponseHeaders, name, value, false)
    }

    fn add_response_header(&mut self, name: &str, value: &str) -> bool {
        edit_header(MapType::HttpResponseHeaders, name, Some(value), true)
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, start, len)
            .ok()
            .flatten()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        get_property(path)
    }

    /// Not `hostcalls::set_property`: it panics (traps) on any status but OK, and a host without the property
    /// answers NotFound — bare ngx_wasm_module does for `kong.*` names, which only Kong's Lua layer defines
    /// (`ngx_proxy_wasm_properties_set`, src/common/proxy_wasm/ngx_proxy_wasm_properties.c).
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        let path = path.join("\0");
        // SAFETY: pointers and lengths of live slices; the host copies them during the call.
        unsafe {
            ffi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) == 0
        }
    }

    fn shared_data(&mut self) -> &mut dyn SharedData {
        self
    }

    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let mut all = Vec::with_capacity(headers.len() + 3);
        all.push((":method", method));
        all.push((":path", path));
        all.push((":authority", authority));
        all.extend_from_slice(headers);
        let token = hostcalls::dispatch_http_call(upstream, all, body, Vec::new(), timeout)
            .map_err(|status| format!("the host refused the call to {upstream:?}: {status:?}"))?;
        REQUEST_CALLOUTS.with(|c| c.set(c.get().saturating_add(1)));
        Ok(token)
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
