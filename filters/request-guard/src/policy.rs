//! The `request-guard` policy. Request headers: resolve the client address, then check, in order, the IP
//! lists (403), the method (405 + `Allow`), the host (421 or 403), the user agent (403) and the declared
//! body size (413 on `content-length`, 411 without one when required). Request body: count bytes chunk by
//! chunk (413 once over `max_bytes`), and with `json` buffer the body (at most `max_bytes`) and check it at
//! the end (400). In `dry_run` every rule is evaluated, logged and counted, and nothing is blocked.

use crate::config::{scanner_pattern, Pattern, RequestGuardConfig};
use crate::json::{self, JsonProblem};
use portcullis_common::client_ip;
use portcullis_common::metrics::Metric;
use portcullis_common::{ConfigError, Decision, Exchange, LocalResponse, Policy};
use std::cell::RefCell;
use std::collections::HashMap;

/// Longest user-agent prefix matched against the patterns: bounds per-request regex work.
pub const MAX_USER_AGENT_MATCH: usize = 1024;

/// Why a request is (or in dry run would be) blocked. Each reason has its own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    IpDenied,
    IpNotAllowed,
    IpUnknown,
    Method,
    Host,
    UserAgentMissing,
    UserAgentDenied,
    UserAgentScanner,
    UserAgentNotAllowed,
    BodyTooLarge,
    LengthRequired,
    InvalidJson,
}

pub const REASONS: [Reason; 12] = [
    Reason::IpDenied,
    Reason::IpNotAllowed,
    Reason::IpUnknown,
    Reason::Method,
    Reason::Host,
    Reason::UserAgentMissing,
    Reason::UserAgentDenied,
    Reason::UserAgentScanner,
    Reason::UserAgentNotAllowed,
    Reason::BodyTooLarge,
    Reason::LengthRequired,
    Reason::InvalidJson,
];

impl Reason {
    /// `<rule>_<reason>`: the metric name part and the log tag.
    pub fn name(self) -> &'static str {
        match self {
            Reason::IpDenied => "ip_denied",
            Reason::IpNotAllowed => "ip_not_allowed",
            Reason::IpUnknown => "ip_unknown",
            Reason::Method => "method_not_allowed",
            Reason::Host => "host_not_allowed",
            Reason::UserAgentMissing => "user_agent_missing",
            Reason::UserAgentDenied => "user_agent_denied",
            Reason::UserAgentScanner => "user_agent_scanner",
            Reason::UserAgentNotAllowed => "user_agent_not_allowed",
            Reason::BodyTooLarge => "body_too_large",
            Reason::LengthRequired => "body_length_required",
            Reason::InvalidJson => "body_invalid_json",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct Counters {
    blocked: Metric,
    dry_run: Metric,
}

pub struct RequestGuardPolicy {
    config: RequestGuardConfig,
    scanners: Option<Pattern>,
    /// Pre-rendered `Allow` header value for 405s.
    allow_header: String,
    counters: Vec<Counters>,
    passed: Metric,
    /// User-agent verdicts this worker already computed. Traffic repeats a handful of agents and matching them
    /// against the patterns is most of this policy's cost; bounded by [`UA_CACHE_ENTRIES`] (cleared when full).
    ua_verdicts: RefCell<HashMap<String, Option<Reason>>>,
}

/// Most user agents whose verdict is remembered per worker (each key ≤ 1 KiB: at most ~128 KiB).
const UA_CACHE_ENTRIES: usize = 128;

/// What the policy remembers between the header and body callbacks of one request.
#[derive(Debug, Default)]
pub struct GuardState {
    /// The request's `content-length`, if it sent one.
    content_length: Option<u64>,
    /// Body bytes already let through in earlier (non-buffered) chunks.
    passed: u64,
    /// The missing `content-length` was already reported (dry run goes on counting).
    length_flagged: bool,
    /// A body rule already decided (blocked, or flagged in dry run): ignore further chunks.
    body_done: bool,
}

impl Policy for RequestGuardPolicy {
    const NAME: &'static str = "request-guard";
    type State = GuardState;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let config = RequestGuardConfig::parse(config)?;
        Ok(RequestGuardPolicy::new(config))
    }

    fn on_request_headers(&self, state: &mut GuardState, ex: &mut Exchange) -> Decision {
        match self.check_headers(state, ex) {
            Some(decision) => decision,
            None => {
                if !self.wants_request_body() {
                    self.passed.inc();
                }
                Decision::Continue
            }
        }
    }

    fn wants_request_body(&self) -> bool {
        !self.config.body.is_empty()
    }

    fn on_request_body(
        &self,
        state: &mut GuardState,
        ex: &mut Exchange,
        body_size: usize,
        end_of_stream: bool,
    ) -> Decision {
        if state.body_done {
            return Decision::Continue;
        }
        let body = &self.config.body;
        let size = u64::try_from(body_size).unwrap_or(u64::MAX);
        // With json on, earlier chunks were buffered (Pause), so `body_size` already counts them.
        let total = state.passed.saturating_add(size);
        if body.require_content_length
            && state.content_length.is_none()
            && total > 0
            && !state.length_flagged
        {
            state.length_flagged = true;
            if let Some(d) = self.block(Reason::LengthRequired, ex, None) {
                state.body_done = true;
                return d;
            }
        }
        if let Some(max) = body.max_bytes {
            if total > max.0 {
                state.body_done = true;
                if let Some(d) = self.block(Reason::BodyTooLarge, ex, Some(total)) {
                    return d;
                }
            }
        }
        if body.json && !state.body_done {
            if !end_of_stream {
                return Decision::Pause;
            }
            state.body_done = true;
            let bytes = ex.host().request_body(0, body_size).unwrap_or_default();
            if bytes.len() < body_size {
                // The host did not hand over the whole body, and an unchecked body must not pass. Kong's
                // engine cannot read a body nginx buffered to a temporary file, i.e. one larger than
                // `client_body_buffer_size` ("cannot read request body buffered to file", ngx_wasm_module
                // src/common/proxy_wasm/ngx_proxy_wasm_host.c): too large for this gateway to inspect, as
                // Envoy says itself with its 413 beyond its buffer limit.
                log::warn!(
                    "the host handed over {} of {body_size} request body bytes; refused as too large to \
                     inspect (Kong: client_body_buffer_size must hold body.max_bytes)",
                    bytes.len()
                );
                if let Some(d) = self.block(Reason::BodyTooLarge, ex, Some(total)) {
                    return d;
                }
            } else if !bytes.is_empty() {
                if let Err(problem) = json::check(&bytes, body.max_json_depth) {
                    let detail = match problem {
                        JsonProblem::Invalid => 0,
                        JsonProblem::TooDeep => 1,
                    };
                    if let Some(d) = self.block(Reason::InvalidJson, ex, Some(detail)) {
                        return d;
                    }
                }
            }
        } else {
            state.passed = total;
        }
        if end_of_stream {
            self.passed.inc();
        }
        Decision::Continue
    }
}

impl RequestGuardPolicy {
    pub fn new(config: RequestGuardConfig) -> Self {
        let scanners = if config.user_agent.block_scanners {
            // The built-in list is a fixed, tested pattern: it always compiles.
            scanner_pattern().ok()
        } else {
            None
        };
        let allow_header = config
            .methods
            .iter()
            .map(|m| m.0.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let counters = REASONS
            .iter()
            .map(|r| Counters {
                blocked: Metric::counter(&format!(
                    "portcullis_request_guard_blocked_{}_total",
                    r.name()
                )),
                dry_run: Metric::counter(&format!(
                    "portcullis_request_guard_dry_run_{}_total",
                    r.name()
                )),
            })
            .collect();
        RequestGuardPolicy {
            config,
            scanners,
            allow_header,
            counters,
            passed: Metric::counter("portcullis_request_guard_passed_total"),
            ua_verdicts: RefCell::new(HashMap::new()),
        }
    }

    /// Counts and logs a blocking rule. Returns the response to send, or `None` in dry run (go on).
    fn block(&self, reason: Reason, ex: &mut Exchange, detail: Option<u64>) -> Option<Decision> {
        let client = ex
            .client_ip()
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        let counters = self.counters.get(reason.index());
        if self.config.dry_run {
            if let Some(c) = counters {
                c.dry_run.inc();
            }
            log::warn!("dry run: would block {} (client {client})", reason.name());
            return None;
        }
        if let Some(c) = counters {
            c.blocked.inc();
        }
        log::info!("blocked {} (client {client})", reason.name());
        Some(Decision::Respond(self.response(reason, detail)))
    }

    fn response(&self, reason: Reason, detail: Option<u64>) -> LocalResponse {
        match reason {
            Reason::IpDenied | Reason::IpNotAllowed | Reason::IpUnknown => {
                LocalResponse::json_error(403, "client address not allowed")
            }
            Reason::Method => LocalResponse::json_error(405, "method not allowed")
                .with_header("allow", self.allow_header.clone()),
            Reason::Host => match self.config.hosts.status {
                403 => LocalResponse::json_error(403, "host not allowed"),
                status => LocalResponse::json_error(status, "misdirected request: unknown host"),
            },
            Reason::UserAgentMissing
            | Reason::UserAgentDenied
            | Reason::UserAgentScanner
            | Reason::UserAgentNotAllowed => {
                LocalResponse::json_error(403, "user agent not allowed")
            }
            Reason::BodyTooLarge => LocalResponse::json_error(413, "request body too large"),
            Reason::LengthRequired => LocalResponse::json_error(411, "content-length required"),
            Reason::InvalidJson => LocalResponse::json_error(
                400,
                if detail == Some(1) {
                    "request body JSON is nested too deeply"
                } else {
                    "request body is not valid JSON"
                },
            ),
        }
    }

    /// Runs the header rules; `Some` is the decision of the first rule that blocks.
    fn check_headers(&self, state: &mut GuardState, ex: &mut Exchange) -> Option<Decision> {
        let cfg = &self.config;
        if !cfg.ip.is_empty() {
            let reason = match client_ip::resolve(&cfg.client_ip, ex) {
                None => Some(Reason::IpUnknown),
                Some(ip) if cfg.ip.deny.contains(ip) => Some(Reason::IpDenied),
                Some(ip) if !cfg.ip.allow.is_empty() && !cfg.ip.allow.contains(ip) => {
                    Some(Reason::IpNotAllowed)
                }
                Some(_) => None,
            };
            if let Some(d) = reason.and_then(|r| self.block(r, ex, None)) {
                return Some(d);
            }
        } else if cfg.client_ip != Default::default() {
            // No IP rules, but record the resolved client for later policies and logs.
            client_ip::resolve(&cfg.client_ip, ex);
        }

        if !cfg.methods.is_empty() {
            let allowed = ex
                .method()
                .is_some_and(|m| cfg.methods.iter().any(|a| a.0 == m));
            if !allowed {
                if let Some(d) = self.block(Reason::Method, ex, None) {
                    return Some(d);
                }
            }
        }

        if !cfg.hosts.allow.is_empty() {
            let host = ex.authority().map(host_without_port).unwrap_or_default();
            if !cfg.hosts.allow.iter().any(|p| p.matches(&host)) {
                if let Some(d) = self.block(Reason::Host, ex, None) {
                    return Some(d);
                }
            }
        }

        if !cfg.user_agent.is_empty() {
            if let Some(reason) = self.user_agent_verdict(ex) {
                if let Some(d) = self.block(reason, ex, None) {
                    return Some(d);
                }
            }
        }

        if !cfg.body.is_empty() {
            return self.check_declared_body(state, ex);
        }
        None
    }

    fn user_agent_verdict(&self, ex: &mut Exchange) -> Option<Reason> {
        let rules = &self.config.user_agent;
        let ua = ex.request_header("user-agent").unwrap_or_default();
        if ua.trim().is_empty() {
            // A missing agent is denied only by deny_missing; allow-lists do not match "nothing".
            return rules.deny_missing.then_some(Reason::UserAgentMissing);
        }
        let ua = truncate(ua, MAX_USER_AGENT_MATCH);
        if let Some(verdict) = self.ua_verdicts.borrow().get(ua) {
            return *verdict;
        }
        let verdict = self.match_user_agent(ua);
        let mut cache = self.ua_verdicts.borrow_mut();
        if cache.len() >= UA_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(ua.to_owned(), verdict);
        verdict
    }

    /// The pattern rules for a present user agent: `deny`, then the scanner list, then `allow`.
    fn match_user_agent(&self, ua: &str) -> Option<Reason> {
        let rules = &self.config.user_agent;
        if rules.deny.iter().any(|p| p.regex.is_match(ua)) {
            return Some(Reason::UserAgentDenied);
        }
        if self.scanners.as_ref().is_some_and(|p| p.regex.is_match(ua)) {
            return Some(Reason::UserAgentScanner);
        }
        if !rules.allow.is_empty() && !rules.allow.iter().any(|p| p.regex.is_match(ua)) {
            return Some(Reason::UserAgentNotAllowed);
        }
        None
    }

    /// Checks `content-length` (and its absence) before any body byte arrives.
    fn check_declared_body(&self, state: &mut GuardState, ex: &mut Exchange) -> Option<Decision> {
        let body = &self.config.body;
        let declared = ex.request_header("content-length").map(str::to_owned);
        state.content_length = declared.as_deref().and_then(parse_content_length);
        if let (Some(max), Some(len)) = (body.max_bytes, state.content_length) {
            if len > max.0 {
                state.body_done = true;
                return self.block(Reason::BodyTooLarge, ex, Some(len));
            }
        }
        if body.require_content_length && state.content_length.is_none() {
            // Envoy strips `transfer-encoding` from HTTP/1 requests: its end-of-stream flag tells instead.
            let body_follows = ex.request_has_body() == Some(true)
                || ex
                    .request_header("transfer-encoding")
                    .is_some_and(|te| !te.trim().is_empty());
            if body_follows {
                state.length_flagged = true;
                return self.block(Reason::LengthRequired, ex, None);
            }
        }
        None
    }
}

/// `content-length` as a number: only digits (the hosts already reject malformed values; this never
/// guesses).
fn parse_content_length(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `Host`/`:authority` without port, lower-case, without a trailing dot; IPv6 literals keep their brackets.
pub fn host_without_port(authority: &str) -> String {
    let a = authority.trim();
    let host = if a.starts_with('[') {
        a.find(']').and_then(|end| a.get(..=end)).unwrap_or(a)
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The first `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests;
