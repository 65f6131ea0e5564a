//! The `circuit-breaker` policy: on request headers, admit or reject through the shared state of the request's
//! breaker; on log (which runs for every admitted request, including resets and local replies), report the
//! outcome. Accounting in on_log rather than on response headers is what keeps half-open probe slots from
//! leaking when a probe is reset or aborted.
//!
//! Shared data: one record per breaker key in a [`BoundedKeys`] table of `max_keys` slots
//! (`portcullis/circuit-breaker/<max_keys>/<n>`), updated with compare-and-swap. In Envoy a write
//! with cas 0 is unconditional, and cas 0 is what a read of a missing key yields. Whatever path the shared
//! `cas_update` takes to create a missing key, a write that would reach the host with cas 0 is turned by
//! [`NoBlindWrites`] into a write of a 1-byte placeholder (which every reader treats as a free slot = a fresh,
//! closed breaker) followed by a retry with a real cas. So a blind write can only ever replace a record by
//! "fresh": it can forget the few outcomes recorded since the key was first created, but never invent or
//! resurrect a state, and half-open probes are protected by generations and lease expiry.

use crate::config::{CircuitBreakerConfig, Scope, Validated};
use crate::machine::{
    admit_stored, complete_stored, Admission, Outcome, Phase, Ticket, Transition,
};
use portcullis_common::metrics::Metric;
use portcullis_common::store::{BoundedKeys, SharedData, StoreError, Versioned};
use portcullis_common::{props, ConfigError, Decision, Exchange, LocalResponse, Policy};
use std::cell::RefCell;

/// Longest breaker key kept (longer rendered keys are cut; the key is hashed into a slot anyway).
pub const MAX_KEY_BYTES: usize = 256;
/// Longest key suffix in a state gauge's name.
const MAX_GAUGE_KEY_BYTES: usize = 64;
/// Record lifetime beyond the longest period the state must survive idle.
const IDLE_TTL_MS: u64 = 60_000;

pub struct CircuitBreakerPolicy {
    cfg: Validated,
    keys: BoundedKeys,
    ttl_ms: u64,
    rejected: Metric,
    trips: Metric,
    store_errors: Metric,
    /// State gauges this worker defined, one per key, at most `max_state_gauges`.
    gauges: RefCell<Vec<(String, Metric)>>,
}

/// What one request carries from admission to its log callback.
#[derive(Debug, Default)]
pub struct Pending {
    key: String,
    /// Set when the request was admitted and tracked.
    ticket: Option<Ticket>,
    started_ms: u64,
    responded_ms: Option<u64>,
    /// `:status` seen in the response headers (fallback for hosts without `response.code` at log time).
    status: Option<u16>,
}

pub const METRIC_PREFIX: &str = "portcullis_circuit_breaker";

fn ms(ex: &mut Exchange) -> u64 {
    u64::try_from(ex.now().as_millis()).unwrap_or(u64::MAX)
}

impl Policy for CircuitBreakerPolicy {
    const NAME: &'static str = "circuit-breaker";
    type State = Pending;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let cfg = CircuitBreakerConfig::parse(config)?;
        let l = &cfg.limits;
        let ttl_ms = l
            .window_ms
            .saturating_add(l.max_open_ms)
            .saturating_add(l.probe_timeout_ms)
            .saturating_add(IDLE_TTL_MS);
        Ok(CircuitBreakerPolicy {
            keys: breaker_table(cfg.raw.max_keys),
            ttl_ms,
            rejected: Metric::counter(&format!("{METRIC_PREFIX}_rejected_total")),
            trips: Metric::counter(&format!("{METRIC_PREFIX}_trips_total")),
            store_errors: Metric::counter(&format!("{METRIC_PREFIX}_store_errors_total")),
            gauges: RefCell::new(Vec::new()),
            cfg,
        })
    }

    fn on_request_headers(&self, state: &mut Pending, ex: &mut Exchange) -> Decision {
        let key = self.key(ex);
        let now = ms(ex);
        let limits = &self.cfg.limits;
        let result = self.keys.update(
            &mut NoBlindWrites(ex.host().shared_data()),
            &key,
            now.saturating_mul(1000),
            |stored| {
                let (next, admission, change) = admit_stored(stored, now, limits);
                let write = next.map(|b| (b.encode(), self.expiry_us(now)));
                (write, (admission, change))
            },
        );
        let admission = match result {
            Ok((admission, change)) => {
                if let Some(change) = change {
                    self.report(&key, change);
                }
                admission
            }
            Err(e) => {
                // fail open: a broken store must not take the route down with it
                self.store_errors.inc();
                log::debug!("breaker {key}: {e}; request passes unguarded");
                return Decision::Continue;
            }
        };
        match admission {
            Admission::Allow(ticket) => {
                state.ticket = Some(ticket);
                state.started_ms = now;
                state.key = key;
                Decision::Continue
            }
            Admission::Reject {
                retry_after_s,
                phase,
            } => {
                self.rejected.inc();
                let mut response =
                    LocalResponse::json_error(self.cfg.raw.status, &self.cfg.raw.message)
                        .with_header("retry-after", retry_after_s.to_string());
                if let Some(h) = &self.cfg.raw.state_header {
                    response = response.with_header(h.as_str(), phase.name());
                }
                Decision::Respond(response)
            }
        }
    }

    fn on_response_headers(&self, state: &mut Pending, ex: &mut Exchange) -> Decision {
        let Some(ticket) = state.ticket else {
            return Decision::Continue;
        };
        state.responded_ms = Some(ms(ex));
        state.status = ex
            .response_header(":status")
            .and_then(|s| s.trim().parse().ok());
        if let Some(h) = &self.cfg.raw.state_header {
            let phase = match ticket {
                Ticket::Normal { .. } => Phase::Closed,
                Ticket::Probe { .. } => Phase::HalfOpen,
            };
            ex.set_response_header(h.as_str(), Some(phase.name()));
        }
        Decision::Continue
    }

    fn on_log(&self, state: &mut Pending, ex: &mut Exchange) {
        let Some(ticket) = state.ticket.take() else {
            return;
        };
        let now = ms(ex);
        let status = props::response_status(ex.host()).or(state.status);
        let outcome = self.classify(status, state.started_ms, state.responded_ms, now);
        let limits = &self.cfg.limits;
        let key = std::mem::take(&mut state.key);
        let result = self.keys.update(
            &mut NoBlindWrites(ex.host().shared_data()),
            &key,
            now.saturating_mul(1000),
            |stored| {
                let (next, change) = complete_stored(stored, ticket, outcome, now, limits);
                let write = next.map(|b| (b.encode(), self.expiry_us(now)));
                (write, change)
            },
        );
        match result {
            Ok(Some(change)) => self.report(&key, change),
            Ok(None) => {}
            Err(e) => {
                // a lost probe result is recovered by the probe lease (probe_timeout)
                self.store_errors.inc();
                log::debug!("breaker {key}: outcome not recorded: {e}");
            }
        }
    }
}

/// The table of breaker records: `max_keys` slots `portcullis/circuit-breaker/<max_keys>/<n>`. The slot count is
/// part of the namespace, so a configuration with another `max_keys` never reads this one's slots (a key maps to
/// other slots there).
fn breaker_table(max_keys: u64) -> BoundedKeys {
    BoundedKeys::new(&format!("circuit-breaker/{max_keys}"), max_keys)
}

impl CircuitBreakerPolicy {
    fn expiry_us(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.ttl_ms).saturating_mul(1000)
    }

    /// The breaker key of this request, prefixed by its scope so a route and a service never share one.
    fn key(&self, ex: &mut Exchange) -> String {
        let mut key = match self.cfg.raw.scope {
            Scope::Route => format!("route:{}", ex.route_id().unwrap_or("")),
            Scope::Service => format!(
                "service:{}",
                props::service_id(ex.host()).unwrap_or_default()
            ),
            Scope::Global => "global".to_string(),
            Scope::Key => match &self.cfg.raw.key {
                Some(t) => format!("key:{}", t.render(ex).value),
                None => "key:".to_string(),
            },
        };
        truncate(&mut key, MAX_KEY_BYTES);
        key
    }

    /// Failure: a configured status (upstream answers and the host's own 503/504 alike) or a slow call.
    /// No status at all (the client went away first) is neutral unless it was already slow.
    pub fn classify(
        &self,
        status: Option<u16>,
        started_ms: u64,
        responded_ms: Option<u64>,
        now_ms: u64,
    ) -> Outcome {
        if let Some(threshold) = self.cfg.slow_call_ms {
            let elapsed = responded_ms.unwrap_or(now_ms).saturating_sub(started_ms);
            if elapsed >= threshold {
                return Outcome::Failure;
            }
        }
        match status {
            Some(s) if self.cfg.raw.failure_statuses.contains(&s) => Outcome::Failure,
            Some(s) if s >= 100 => Outcome::Success,
            _ => Outcome::Neutral,
        }
    }

    /// Logs a state change and updates the metrics; called only by the worker whose write made the change,
    /// so each change is logged and counted once.
    fn report(&self, key: &str, change: Transition) {
        match change.to {
            Phase::Open => {
                self.trips.inc();
                log::warn!(
                    "circuit {key}: {} -> open for {}ms",
                    change.from.name(),
                    change.open_ms
                );
            }
            to => log::info!("circuit {key}: {} -> {}", change.from.name(), to.name()),
        }
        if let Some(gauge) = self.gauge(key) {
            gauge.record(change.to.gauge());
        }
    }

    /// The state gauge of `key`, defined on first use while this worker has fewer than `max_state_gauges`.
    fn gauge(&self, key: &str) -> Option<Metric> {
        let mut gauges = self.gauges.borrow_mut();
        if let Some((_, m)) = gauges.iter().find(|(k, _)| k == key) {
            return Some(*m);
        }
        if gauges.len() >= self.cfg.raw.max_state_gauges as usize {
            return None;
        }
        let m = Metric::gauge(&state_gauge_name(key));
        gauges.push((key.to_string(), m));
        Some(m)
    }
}

/// `portcullis_circuit_breaker_state.<key>` with the key reduced to `[A-Za-z0-9_-]` (dots would split the
/// name in Envoy's stat tree) and cut to 64 bytes.
pub fn state_gauge_name(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_GAUGE_KEY_BYTES)
        .collect();
    format!("{METRIC_PREFIX}_state.{clean}")
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// Shared data that never writes blindly: a write with cas 0 (the key did not exist when read, and Envoy
/// would overwrite whatever another worker wrote since) stores a 1-byte placeholder — a free slot to every
/// reader — and reports a CAS mismatch, so the update is retried against the placeholder's real cas.
pub struct NoBlindWrites<'a>(pub &'a mut dyn SharedData);

pub const PLACEHOLDER: &[u8] = &[0];

impl SharedData for NoBlindWrites<'_> {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if cas == 0 {
            return match self.0.set(key, PLACEHOLDER, 0) {
                Ok(()) | Err(StoreError::CasMismatch) => Err(StoreError::CasMismatch),
                Err(e) => Err(e),
            };
        }
        self.0.set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::{FakeHost, MemoryStore, SharedMemoryStore};
    use std::collections::HashMap;
    use std::time::Duration;

    const T0: u64 = 1_700_000_000_000;

    fn policy(json: &str) -> CircuitBreakerPolicy {
        CircuitBreakerPolicy::configure(json.as_bytes()).unwrap()
    }

    /// One gateway: several workers share this store.
    struct Gw {
        policy: CircuitBreakerPolicy,
        store: SharedMemoryStore,
    }

    /// A request in flight.
    struct Req {
        host: FakeHost,
        ex: Exchange,
        state: Pending,
    }

    impl Gw {
        fn new(json: &str) -> Gw {
            Gw {
                policy: policy(json),
                store: SharedMemoryStore::default(),
            }
        }

        fn start(&self, route: &str, at_ms: u64) -> (Req, Decision) {
            let host = FakeHost::request("GET", "/")
                .with_property(&["route_name"], route.as_bytes())
                .with_store(&self.store)
                .at(Duration::from_millis(at_ms));
            let mut req = Req {
                ex: Exchange::new(Box::new(host.clone())),
                host,
                state: Pending::default(),
            };
            let d = self.policy.on_request_headers(&mut req.state, &mut req.ex);
            (req, d)
        }

        /// Response headers with `status` at `at_ms`, then the log callback.
        fn finish(&self, mut req: Req, status: Option<u16>, at_ms: u64) {
            req.host.state.borrow_mut().now = Duration::from_millis(at_ms);
            if let Some(s) = status {
                req.host
                    .state
                    .borrow_mut()
                    .response_headers
                    .push((":status".into(), s.to_string()));
                req.host
                    .state
                    .borrow_mut()
                    .properties
                    .insert("response.code".into(), u64::from(s).to_le_bytes().to_vec());
                req.ex.new_callback();
                self.policy.on_response_headers(&mut req.state, &mut req.ex);
            }
            req.ex.new_callback();
            self.policy.on_log(&mut req.state, &mut req.ex);
        }

        /// A whole request; returns the status the client sees (`upstream` when admitted).
        fn call(&self, route: &str, upstream: u16, at_ms: u64) -> u16 {
            match self.start(route, at_ms) {
                (req, Decision::Continue) => {
                    self.finish(req, Some(upstream), at_ms);
                    upstream
                }
                (_, Decision::Respond(r)) => r.status,
                (_, Decision::Pause) => panic!("never pauses"),
            }
        }
    }

    /// Metric values are readable only natively (under wasm the host keeps them).
    fn assert_metric(name: &str, expected: Option<i64>) {
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(portcullis_common::metrics::value(name), expected, "{name}");
        let _ = (name, expected);
    }

    fn rejection(d: &Decision) -> &LocalResponse {
        match d {
            Decision::Respond(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn three_failures_open_the_breaker_and_the_fourth_request_is_rejected() {
        let gw = Gw::new(r#"{"state_header":"x-circuit-state","message":"try later"}"#);
        for i in 0..3 {
            assert_eq!(gw.call("orders", 502, T0 + i), 502);
        }
        let (_, d) = gw.start("orders", T0 + 10);
        let r = rejection(&d);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("5"));
        assert_eq!(r.header("x-circuit-state"), Some("open"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["message"], "try later");
        assert_eq!(body["status"], 503);
        assert_metric("portcullis_circuit_breaker_rejected_total", Some(1));
        assert_metric("portcullis_circuit_breaker_trips_total", Some(1));
        assert_metric("portcullis_circuit_breaker_state.route_orders", Some(1));
    }

    #[test]
    fn breakers_are_per_route() {
        let gw = Gw::new("{}");
        for i in 0..3 {
            gw.call("a", 500, T0 + i);
        }
        assert_eq!(gw.call("a", 200, T0 + 5), 503);
        assert_eq!(gw.call("b", 200, T0 + 5), 200);
    }

    #[test]
    fn only_configured_statuses_count_as_failures() {
        let gw = Gw::new(r#"{"failure_statuses":[429]}"#);
        for (i, status) in [500, 503, 404, 500, 500, 500].into_iter().enumerate() {
            gw.call("r", status, T0 + i as u64);
        }
        assert_eq!(gw.call("r", 200, T0 + 10), 200);
        for i in 0..3 {
            gw.call("r", 429, T0 + 20 + i);
        }
        assert_eq!(gw.call("r", 200, T0 + 30), 503);
    }

    #[test]
    fn after_open_for_one_probe_passes_and_its_success_closes() {
        let gw = Gw::new(r#"{"open_for":"2s","state_header":"x-circuit-state"}"#);
        for i in 0..3 {
            gw.call("r", 503, T0 + i);
        }
        let (probe, d) = gw.start("r", T0 + 2_010);
        assert_eq!(d, Decision::Continue);
        // while the probe is in flight every other request is still rejected, on any worker
        let (_, other) = gw.start("r", T0 + 2_020);
        assert_eq!(
            rejection(&other).header("x-circuit-state"),
            Some("half-open")
        );
        assert_eq!(rejection(&other).header("retry-after"), Some("1"));
        let probe_host = probe.host.clone();
        gw.finish(probe, Some(200), T0 + 2_030);
        assert_eq!(
            probe_host
                .response_header_value("x-circuit-state")
                .as_deref(),
            Some("half-open")
        );
        assert_eq!(gw.call("r", 200, T0 + 2_040), 200);
        assert_metric("portcullis_circuit_breaker_state.route_r", Some(0));
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker() {
        let gw = Gw::new(r#"{"open_for":"1s"}"#);
        for i in 0..3 {
            gw.call("r", 500, T0 + i);
        }
        assert_eq!(
            gw.call("r", 500, T0 + 1_100),
            500,
            "the probe reaches the upstream"
        );
        assert_eq!(gw.call("r", 200, T0 + 1_200), 503);
        assert_metric("portcullis_circuit_breaker_trips_total", Some(2));
    }

    #[test]
    fn an_aborted_probe_frees_its_slot_without_closing_or_reopening() {
        let gw = Gw::new(r#"{"open_for":"1s"}"#);
        for i in 0..3 {
            gw.call("r", 500, T0 + i);
        }
        let (probe, d) = gw.start("r", T0 + 1_010);
        assert_eq!(d, Decision::Continue);
        gw.finish(probe, None, T0 + 1_050); // reset: no response at all, on_log still runs
        let (probe2, d) = gw.start("r", T0 + 1_060);
        assert_eq!(d, Decision::Continue, "the slot was released");
        gw.finish(probe2, Some(200), T0 + 1_070);
        assert_eq!(gw.call("r", 200, T0 + 1_080), 200);
    }

    #[test]
    fn the_logged_status_counts_in_either_host_encoding() {
        // Envoy: integer (8 bytes LE), also for its own 503 after a connect failure; Kong: text.
        type Encode = fn(u64) -> Vec<u8>;
        let envoy: Encode = |c| c.to_le_bytes().to_vec();
        let kong: Encode = |c| c.to_string().into_bytes();
        let encodings = [("envoy", envoy), ("kong", kong)];
        for (host, encode) in encodings {
            let gw = Gw::new("{}");
            for i in 0..3 {
                let (mut req, d) = gw.start("r", T0 + i);
                assert_eq!(d, Decision::Continue);
                // no response headers callback: only the logged status tells the outcome
                req.host
                    .state
                    .borrow_mut()
                    .properties
                    .insert("response.code".into(), encode(503));
                gw.policy.on_log(&mut req.state, &mut req.ex);
            }
            assert_eq!(gw.call("r", 200, T0 + 10), 503, "{host}");
        }
    }

    #[test]
    fn slow_calls_are_failures_measured_to_the_response_headers() {
        let p = policy(r#"{"slow_call_threshold":"500ms"}"#);
        let cases = [
            (Some(200), Some(T0 + 499), T0 + 10_000, Outcome::Success),
            (Some(200), Some(T0 + 500), T0 + 500, Outcome::Failure),
            (Some(500), Some(T0 + 1), T0 + 1, Outcome::Failure),
            (None, None, T0 + 100, Outcome::Neutral),
            (None, None, T0 + 600, Outcome::Failure),
            (Some(0), Some(T0 + 1), T0 + 1, Outcome::Neutral),
        ];
        for (status, responded, now, expected) in cases {
            assert_eq!(
                p.classify(status, T0, responded, now),
                expected,
                "{status:?} {responded:?}"
            );
        }
        let gw = Gw::new(r#"{"slow_call_threshold":"500ms"}"#);
        for i in 0..3 {
            let (req, _) = gw.start("r", T0 + i * 1_000);
            gw.finish(req, Some(200), T0 + i * 1_000 + 800);
        }
        assert_eq!(gw.call("r", 200, T0 + 5_000), 503);
    }

    #[test]
    fn scopes_pick_the_breaker_key() {
        let p = policy(r#"{"scope":"key","key":"${header.host}"}"#);
        let mut ex = Exchange::new(Box::new(
            FakeHost::request("GET", "/").with_header("host", "api.test"),
        ));
        assert_eq!(p.key(&mut ex), "key:api.test");
        let p = policy(r#"{"scope":"service"}"#);
        let mut ex = Exchange::new(Box::new(
            FakeHost::request("GET", "/").with_property(&["cluster_name"], b"backend"),
        ));
        assert_eq!(p.key(&mut ex), "service:backend");
        let p = policy(r#"{"scope":"global"}"#);
        assert_eq!(
            p.key(&mut Exchange::new(Box::new(FakeHost::request("GET", "/")))),
            "global"
        );
        let p = policy(r#"{"scope":"key","key":"${header.x-long}"}"#);
        let long = "é".repeat(1000);
        let mut ex = Exchange::new(Box::new(
            FakeHost::request("GET", "/").with_header("x-long", &long),
        ));
        assert!(p.key(&mut ex).len() <= MAX_KEY_BYTES);
    }

    #[test]
    fn state_gauges_are_bounded_and_named_safely() {
        assert_eq!(
            state_gauge_name("route:a.b/c"),
            "portcullis_circuit_breaker_state.route_a_b_c"
        );
        assert_eq!(
            state_gauge_name(&"x".repeat(500)).len(),
            "portcullis_circuit_breaker_state.".len() + 64
        );
        let gw = Gw::new(r#"{"scope":"key","key":"${header.x-k}","max_state_gauges":2}"#);
        for k in 0..5 {
            for i in 0..3 {
                let host = FakeHost::request("GET", "/")
                    .with_header("x-k", &format!("k{k}"))
                    .with_store(&gw.store)
                    .at(Duration::from_millis(T0 + i));
                let mut req = Req {
                    ex: Exchange::new(Box::new(host.clone())),
                    host,
                    state: Pending::default(),
                };
                gw.policy.on_request_headers(&mut req.state, &mut req.ex);
                gw.finish(req, Some(500), T0 + i);
            }
        }
        assert_eq!(gw.policy.gauges.borrow().len(), 2);
        assert_metric("portcullis_circuit_breaker_state.key_k1", Some(1));
        assert_metric("portcullis_circuit_breaker_state.key_k2", None);
        assert_metric("portcullis_circuit_breaker_trips_total", Some(5));
    }

    #[test]
    fn the_key_space_is_bounded_and_a_full_table_fails_open() {
        let gw = Gw::new(r#"{"scope":"key","key":"${header.x-k}","max_keys":4}"#);
        for k in 0..50 {
            let host = FakeHost::request("GET", "/")
                .with_header("x-k", &format!("k{k}"))
                .with_store(&gw.store)
                .at(Duration::from_millis(T0));
            let mut req = Req {
                ex: Exchange::new(Box::new(host.clone())),
                host,
                state: Pending::default(),
            };
            assert_eq!(
                gw.policy.on_request_headers(&mut req.state, &mut req.ex),
                Decision::Continue
            );
            gw.finish(req, Some(500), T0); // a failure: only keys with something to remember take a slot
        }
        assert!(gw.store.0.borrow().len() <= 4);
        #[cfg(not(target_arch = "wasm32"))]
        assert!(
            portcullis_common::metrics::value("portcullis_circuit_breaker_store_errors_total")
                .unwrap_or(0)
                > 0
        );
    }

    #[test]
    fn records_keep_their_shared_data_layout() {
        // `portcullis/circuit-breaker/<max_keys>/<home slot>`: fingerprint (8 LE) | expires µs (8 LE) | state
        let gw = Gw::new(r#"{"max_keys":16}"#);
        assert_eq!(gw.call("r", 500, T0), 500);
        let fp = portcullis_common::store::fingerprint("route:r");
        let key = format!("portcullis/circuit-breaker/16/{}", fp % 16);
        let keys: Vec<String> = gw.store.0.borrow().keys().map(str::to_owned).collect();
        assert_eq!(keys, vec![key.clone()]);
        let record = gw.store.get(&key).unwrap().unwrap().value;
        assert_eq!(record.get(0..8), Some(&fp.to_le_bytes()[..]));
        let expires = gw.policy.expiry_us(T0).to_le_bytes();
        assert_eq!(record.get(8..16), Some(&expires[..]));
        assert_eq!(record.len(), 16 + 78);
    }

    #[test]
    fn contention_fails_open_instead_of_failing_the_request() {
        let gw = Gw::new("{}");
        gw.store.0.borrow_mut().inject_cas_mismatches(1_000);
        assert_eq!(gw.call("r", 200, T0), 200);
    }

    /// Shared data with Envoy's semantics: a write with cas 0 overwrites unconditionally.
    #[derive(Default)]
    struct EnvoyStore {
        entries: HashMap<String, Versioned>,
        next: u32,
    }

    impl SharedData for EnvoyStore {
        fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            Ok(self.entries.get(key).cloned())
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            // proxy-wasm-cpp-host: a missing key is written whatever the cas; an existing one is compared
            // unless the cas is 0
            if let Some(existing) = self.entries.get(key) {
                if cas != 0 && existing.cas != cas {
                    return Err(StoreError::CasMismatch);
                }
            }
            self.next += 1;
            self.entries.insert(
                key.into(),
                Versioned {
                    value: value.to_vec(),
                    cas: self.next,
                },
            );
            Ok(())
        }
    }

    #[test]
    fn writes_with_cas_zero_only_ever_store_the_placeholder() {
        let mut store = EnvoyStore::default();
        // a worker holds a real record written with a proper cas
        store.entries.insert(
            "k".into(),
            Versioned {
                value: vec![7; 94],
                cas: 9,
            },
        );
        // another worker read "absent" before that write and now writes blindly
        let mut guarded = NoBlindWrites(&mut store);
        assert_eq!(guarded.set("k", b"state", 0), Err(StoreError::CasMismatch));
        assert_eq!(
            store.entries["k"].value, PLACEHOLDER,
            "at worst reset to a fresh breaker"
        );
        // and with a real cas the write goes through
        let cas = store.entries["k"].cas;
        assert_eq!(NoBlindWrites(&mut store).set("k", b"state", cas), Ok(()));
        assert_eq!(store.entries["k"].value, b"state");
        // through the table: the first update of a fresh slot ends with a real record
        let keys = breaker_table(1);
        let mut fresh = EnvoyStore::default();
        let r = keys.update(&mut NoBlindWrites(&mut fresh), "x", 0, |cur| {
            (Some((vec![cur.map_or(1, |_| 2)], 10)), ())
        });
        assert_eq!(r, Ok(()));
        assert_eq!(keys.get(&fresh, "x", 0).unwrap(), Some(vec![1]));
        // the conditional MemoryStore behaves the same
        let mut mem = MemoryStore::default();
        assert_eq!(
            keys.update(&mut NoBlindWrites(&mut mem), "x", 0, |_| (
                Some((vec![5], 10)),
                ()
            )),
            Ok(())
        );
        assert_eq!(keys.get(&mem, "x", 0).unwrap(), Some(vec![5]));
    }

    #[test]
    fn requests_rejected_by_the_breaker_are_not_accounted_at_log_time() {
        let gw = Gw::new("{}");
        for i in 0..3 {
            gw.call("r", 500, T0 + i);
        }
        let (mut req, d) = gw.start("r", T0 + 10);
        assert!(matches!(d, Decision::Respond(_)));
        let snapshot = |store: &SharedMemoryStore| {
            let keys: Vec<String> = store.0.borrow().keys().map(str::to_owned).collect();
            let mut all: Vec<_> = keys
                .iter()
                .map(|k| (k.clone(), store.get(k).unwrap()))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let before = snapshot(&gw.store);
        gw.policy.on_response_headers(&mut req.state, &mut req.ex);
        gw.policy.on_log(&mut req.state, &mut req.ex);
        assert_eq!(snapshot(&gw.store), before);
    }
}
