//! The `rate-limit` policy: renders each limit's key from the request, runs the [`Limiter`], counts the
//! result in metrics, and answers 429 (or adds the `RateLimit-*` headers to the upstream's response).

use crate::algo::{Algorithm, Outcome};
use crate::config::{OnMissingKey, OnStoreError, RateLimitConfig, RedisStore, SyncMode, Validated};
use crate::core::{Key, LimitResult, Limiter, Rejection, Verdict, GLOBAL_KEY};
use crate::global::{self, Batched, Health, InFlight, Lease, Taken};
use crate::redis::{self, Checked, Paths};
use portcullis_common::client_ip::{self, ClientIpConfig};
use portcullis_common::metrics::Metric;
use portcullis_common::store::{BoundedKeys, StoreError};
use portcullis_common::{
    CalloutResponse, ConfigError, Decision, Exchange, LocalResponse, Policy, RootHost,
};
use std::time::Duration;

pub struct RateLimitPolicy {
    config: RateLimitConfig,
    limiter: Limiter,
    metrics: Vec<LimitMetrics>,
    store_errors: Metric,
    resolve_client_ip: bool,
    global: Option<Global>,
}

/// The Redis side of a `redis_http` store.
struct Global {
    store: RedisStore,
    paths: Paths,
    health: Health,
    /// Set in `batched` mode: the leases' table and this worker's reservations.
    batched: Option<(BoundedKeys, Batched)>,
    /// Failed calls (no answer, timeout, bad answer).
    redis_errors: Metric,
    /// Requests decided by `on_store_error` because Redis failed or is considered down.
    fallbacks: Metric,
    /// Units admitted on a lease (batched).
    reservations: Metric,
}

/// Failed calls to Redis (no answer, timeout, error status, bad answer).
pub const REDIS_ERRORS_METRIC: &str = "portcullis_rate_limit_redis_errors_total";
/// Requests decided by `on_store_error` because Redis failed or is considered down.
pub const FALLBACK_METRIC: &str = "portcullis_rate_limit_store_fallback_total";
/// Reservations answered by Redis (batched).
pub const RESERVATIONS_METRIC: &str = "portcullis_rate_limit_redis_reservations_total";

/// Per-request state: headers for the response, and the check waiting on Redis.
#[derive(Default)]
pub struct RequestState {
    headers: PendingHeaders,
    pending: Option<PendingCheck>,
}

struct PendingCheck {
    token: u32,
    keys: Vec<Key>,
    /// Indices of the limits sent to Redis, in order.
    checked: Vec<usize>,
}

struct LimitMetrics {
    allowed: Metric,
    limited: Metric,
    dry_run_limited: Metric,
}

/// Metric name of a per-limit counter: `portcullis_rate_limit_<limit>_<what>_total`.
pub fn metric_name(limit: &str, what: &str) -> String {
    format!("portcullis_rate_limit_{limit}_{what}_total")
}

pub const STORE_ERRORS_METRIC: &str = "portcullis_rate_limit_store_errors_total";

/// Headers to add to the upstream's response.
#[derive(Default)]
pub struct PendingHeaders(Vec<(&'static str, String)>);

fn seconds_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft-ietf-httpapi-ratelimit-headers,
/// the three-header form; Reset in seconds from now).
fn rate_headers(o: &Outcome) -> Vec<(&'static str, String)> {
    vec![
        ("ratelimit-limit", o.limit.to_string()),
        ("ratelimit-remaining", o.remaining.to_string()),
        ("ratelimit-reset", seconds_ceil(o.reset_us).to_string()),
    ]
}

impl Policy for RateLimitPolicy {
    const NAME: &'static str = "rate-limit";
    type State = RequestState;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let Validated { raw, limits, redis } = RateLimitConfig::parse(config)?;
        let global = redis.map(|store| Global {
            paths: Paths::new(&store.base_path),
            health: Health::default(),
            batched: (store.sync == SyncMode::Batched).then(|| {
                (
                    BoundedKeys::new(&format!("rlb/{}", raw.namespace), raw.max_keys)
                        .with_probes(1),
                    Batched::default(),
                )
            }),
            redis_errors: Metric::counter(REDIS_ERRORS_METRIC),
            fallbacks: Metric::counter(FALLBACK_METRIC),
            reservations: Metric::counter(RESERVATIONS_METRIC),
            store,
        });
        let metrics = limits
            .iter()
            .map(|l| LimitMetrics {
                allowed: Metric::counter(&metric_name(&l.name, "allowed")),
                limited: Metric::counter(&metric_name(&l.name, "limited")),
                dry_run_limited: Metric::counter(&metric_name(&l.name, "dry_run_limited")),
            })
            .collect();
        let limiter = Limiter::new(limits, &raw.namespace, raw.max_keys, raw.on_store_error);
        Ok(RateLimitPolicy {
            resolve_client_ip: raw.client_ip != ClientIpConfig::default(),
            config: raw,
            limiter,
            metrics,
            store_errors: Metric::counter(STORE_ERRORS_METRIC),
            global,
        })
    }

    fn on_request_headers(&self, state: &mut RequestState, ex: &mut Exchange) -> Decision {
        if self.resolve_client_ip {
            client_ip::resolve(&self.config.client_ip, ex);
        }
        let keys: Vec<Key> = self
            .limiter
            .limits
            .iter()
            .map(|limit| {
                if let Some(text) = limit.key.constant_text() {
                    return Key::Value(text.to_owned());
                }
                let rendered = limit.key.render(ex);
                if rendered.complete {
                    return Key::Value(rendered.value);
                }
                match limit.on_missing_key {
                    OnMissingKey::Skip => Key::Skip,
                    OnMissingKey::Deny => Key::Deny,
                    OnMissingKey::Global => Key::Value(GLOBAL_KEY.to_owned()),
                }
            })
            .collect();
        let now = ex.now_us();
        let verdict = match &self.global {
            None => self.limiter.check(&keys, now, ex.host().shared_data()),
            Some(g) => match g.batched {
                None => return self.start_check(g, state, ex, keys, now),
                Some(_) => self.check_leases(g, &keys, now, ex),
            },
        };
        self.decide(state, verdict)
    }

    fn on_request_callout_response(
        &self,
        state: &mut RequestState,
        ex: &mut Exchange,
        token: u32,
        response: Option<CalloutResponse>,
    ) -> Decision {
        let (Some(g), Some(pending)) = (&self.global, state.pending.take()) else {
            return Decision::Continue;
        };
        let now = ex.now_us();
        if pending.token != token {
            // Not our call (cannot happen: one call per request); decide now rather than admit unchecked.
            return self.fallback(g, state, ex, &pending.keys, now);
        }
        let answer = response
            .ok_or_else(|| "no answer (timeout or connection failure)".to_string())
            .and_then(|r| redis::parse_check(r.status, &r.body, pending.checked.len()));
        match answer {
            Ok(checked) => {
                g.health.success(&g.store.upstream);
                let mut results = vec![LimitResult::NotChecked; self.limiter.limits.len()];
                let mut rejection = None;
                for (&i, c) in pending.checked.iter().zip(checked) {
                    if let (Some(slot), Checked::Checked(o)) = (results.get_mut(i), c) {
                        *slot = LimitResult::Checked(o);
                        if !o.allowed && rejection.is_none() {
                            rejection = Some(Rejection::Limited(i));
                        }
                    }
                }
                self.decide(state, Verdict { results, rejection })
            }
            Err(why) => {
                self.redis_failed(g, now, &why);
                self.fallback(g, state, ex, &pending.keys, now)
            }
        }
    }

    fn on_response_headers(&self, state: &mut RequestState, ex: &mut Exchange) -> Decision {
        for (name, value) in state.headers.0.drain(..) {
            ex.set_response_header(name, Some(&value));
        }
        Decision::Continue
    }

    fn tick_period(&self) -> Option<Duration> {
        let g = self.global.as_ref()?;
        g.batched.as_ref().map(|_| g.store.sync_interval)
    }

    fn on_tick(&self, root: &mut dyn RootHost) {
        if let Some(g) = &self.global {
            self.reserve(g, root);
        }
    }

    fn on_callout_response(
        &self,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        if let Some(g) = &self.global {
            self.settle(g, root, token, response);
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// How long an idle lease is kept: ten sync intervals, two timeouts, at least a second.
fn lease_ttl_us(store: &RedisStore) -> u64 {
    duration_us(store.sync_interval)
        .saturating_mul(10)
        .max(duration_us(store.timeout).saturating_mul(2))
        .max(1_000_000)
}

fn capacity(algo: &Algorithm) -> u64 {
    match *algo {
        Algorithm::TokenBucket { burst, .. } => burst,
        Algorithm::FixedWindow { requests, .. } | Algorithm::SlidingWindow { requests, .. } => {
            requests
        }
    }
}

impl RateLimitPolicy {
    /// Counts a verdict and turns it into the request's decision.
    fn decide(&self, state: &mut RequestState, verdict: Verdict) -> Decision {
        self.count(&verdict);
        let outcome = verdict.reported();
        let headers = outcome.as_ref().map(rate_headers).unwrap_or_default();
        match verdict.rejection {
            Some(rejection) if !self.config.dry_run => {
                Decision::Respond(self.rejection(rejection, outcome, headers))
            }
            Some(_) => {
                state.headers.0 = headers;
                Decision::Continue
            }
            None => {
                if self.config.headers {
                    state.headers.0 = headers;
                }
                Decision::Continue
            }
        }
    }

    fn authorization(g: &Global) -> Vec<(&str, &str)> {
        g.store
            .authorization
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default()
    }

    fn redis_key(&self, g: &Global, limit: &str, value: &str) -> String {
        redis::redis_key(&g.store.key_prefix, &self.config.namespace, limit, value)
    }

    fn redis_failed(&self, g: &Global, now: u64, why: &str) {
        g.redis_errors.inc();
        let fallback = match self.config.on_store_error {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        };
        g.health.failure(
            now,
            g.store.retry_interval_us,
            &g.store.upstream,
            why,
            fallback,
        );
    }

    /// `per_request`: sends one EVAL for every limit with a key and pauses the request until it answers.
    fn start_check(
        &self,
        g: &Global,
        state: &mut RequestState,
        ex: &mut Exchange,
        keys: Vec<Key>,
        now: u64,
    ) -> Decision {
        if let Some(i) = keys.iter().position(|k| *k == Key::Deny) {
            // Limits before a missing key would be taken and given back: nothing to ask Redis.
            let verdict = Verdict {
                results: vec![LimitResult::NotChecked; self.limiter.limits.len()],
                rejection: Some(Rejection::MissingKey(i)),
            };
            return self.decide(state, verdict);
        }
        let mut checked = Vec::new();
        let mut sent = Vec::new();
        for (i, (limit, key)) in self.limiter.limits.iter().zip(&keys).enumerate() {
            if let Key::Value(v) = key {
                checked.push(i);
                let rkey =
                    redis::redis_key(&g.store.key_prefix, &self.config.namespace, &limit.name, v);
                sent.push((rkey, limit.algorithm));
            }
        }
        if checked.is_empty() {
            return self.decide(
                state,
                Verdict {
                    results: vec![LimitResult::NotChecked; self.limiter.limits.len()],
                    rejection: None,
                },
            );
        }
        if !g.health.may_call(now, g.store.retry_interval_us) {
            return self.fallback(g, state, ex, &keys, now);
        }
        let path = g.paths.check(&sent, 0);
        let headers = Self::authorization(g);
        match ex.host().dispatch_http_call(
            &g.store.upstream,
            "GET",
            &path,
            &g.store.authority,
            &headers,
            None,
            g.store.timeout,
        ) {
            Ok(token) => {
                state.pending = Some(PendingCheck {
                    token,
                    keys,
                    checked,
                });
                Decision::Pause
            }
            Err(why) => {
                self.redis_failed(g, now, &why);
                self.fallback(g, state, ex, &keys, now)
            }
        }
    }

    /// Decides without Redis, following `on_store_error`.
    fn fallback(
        &self,
        g: &Global,
        state: &mut RequestState,
        ex: &mut Exchange,
        keys: &[Key],
        now: u64,
    ) -> Decision {
        g.fallbacks.inc();
        let verdict = self.fallback_verdict(ex, keys, now);
        self.decide(state, verdict)
    }

    /// The verdict without Redis, following `on_store_error`: the node-local limit, allow, or deny.
    fn fallback_verdict(&self, ex: &mut Exchange, keys: &[Key], now: u64) -> Verdict {
        match self.config.on_store_error {
            OnStoreError::Local => self.limiter.check(keys, now, ex.host().shared_data()),
            OnStoreError::Allow => Verdict {
                results: vec![LimitResult::NotChecked; self.limiter.limits.len()],
                rejection: None,
            },
            OnStoreError::Deny => {
                let at = keys
                    .iter()
                    .position(|k| matches!(k, Key::Value(_)))
                    .unwrap_or(0);
                let mut results = vec![LimitResult::NotChecked; self.limiter.limits.len()];
                if let Some(r) = results.get_mut(at) {
                    *r = LimitResult::StoreError(StoreError::Host);
                }
                Verdict {
                    results,
                    rejection: Some(Rejection::StoreError(at)),
                }
            }
        }
    }

    /// `batched`: spends from this node's leases (never waits on Redis); keys running low are marked for
    /// the next reservation.
    fn check_leases(&self, g: &Global, keys: &[Key], now: u64, ex: &mut Exchange) -> Verdict {
        let Some((table, batched)) = &g.batched else {
            return self.limiter.check(keys, now, ex.host().shared_data());
        };
        if !g.health.is_up() {
            // mark keys so the timer's probe has something to ask for
            for (i, (limit, key)) in self.limiter.limits.iter().zip(keys).enumerate() {
                if let Key::Value(v) = key {
                    batched.mark(i, &self.redis_key(g, &limit.name, v));
                }
            }
            g.fallbacks.inc();
            return self.fallback_verdict(ex, keys, now);
        }
        let ttl = lease_ttl_us(&g.store);
        let retry_default = duration_us(g.store.sync_interval);
        let store = ex.host().shared_data();
        let mut results = vec![LimitResult::NotChecked; self.limiter.limits.len()];
        let mut rejection = None;
        let mut taken: Vec<(String, Taken, u64)> = Vec::new();
        for (i, limit) in self.limiter.limits.iter().enumerate() {
            let value = match keys.get(i) {
                Some(Key::Value(v)) => v,
                Some(Key::Deny) => {
                    rejection = Some(Rejection::MissingKey(i));
                    break;
                }
                _ => continue,
            };
            let cap = capacity(&limit.algorithm);
            let slice = global::slice_of(&g.store, cap);
            // The lease's logical key is the Redis key: bounded in length, so the set of keys waiting for a
            // reservation is bounded in bytes too.
            let logical = self.redis_key(g, &limit.name, value);
            let hold = global::period_end_us(&limit.algorithm, now);
            let step = table.update(store, &logical, now, |payload| {
                let lease = payload.and_then(Lease::decode);
                let (new, took, outcome, needs_sync) =
                    global::spend(lease, cap, slice, retry_default, now);
                let write = new.map(|l| (l.encode(), l.expires(now, ttl, hold)));
                (write, (took, outcome, needs_sync))
            });
            match step {
                Ok((took, outcome, needs_sync)) => {
                    if needs_sync {
                        batched.mark(i, &logical);
                    }
                    results[i] = LimitResult::Checked(outcome);
                    match took {
                        Some(t) => taken.push((logical, t, hold)),
                        None => {
                            rejection = Some(Rejection::Limited(i));
                            break;
                        }
                    }
                }
                Err(e) => {
                    results[i] = LimitResult::StoreError(e);
                    if self.config.on_store_error == OnStoreError::Deny {
                        rejection = Some(Rejection::StoreError(i));
                        break;
                    }
                }
            }
        }
        if rejection.is_some() {
            for (logical, t, hold) in taken {
                let _ = table.update(store, &logical, now, |payload| {
                    let lease = global::refund(payload.and_then(Lease::decode), t);
                    (lease.map(|l| (l.encode(), l.expires(now, ttl, hold))), ())
                });
            }
        }
        Verdict { results, rejection }
    }

    /// `batched`, on the timer: reserves slices for the keys that ran low.
    fn reserve(&self, g: &Global, root: &mut dyn RootHost) {
        let Some((table, batched)) = &g.batched else {
            return;
        };
        let now = duration_us(root.now());
        if batched.dirty.borrow().is_empty() || !g.health.may_call(now, g.store.retry_interval_us) {
            return;
        }
        let lock = duration_us(g.store.timeout).saturating_add(1_000_000);
        let ttl = lease_ttl_us(&g.store);
        let dirty: Vec<(usize, String)> = std::mem::take(&mut *batched.dirty.borrow_mut())
            .into_iter()
            .collect();
        let headers = Self::authorization(g);
        for (i, value) in dirty {
            if batched.in_flight.borrow().len() >= global::MAX_IN_FLIGHT {
                batched.mark(i, &value);
                continue;
            }
            let Some(limit) = self.limiter.limits.get(i) else {
                continue;
            };
            let slice = global::slice_of(&g.store, capacity(&limit.algorithm));
            let logical = value.clone();
            let hold = global::period_end_us(&limit.algorithm, now);
            let ask = table.update(root.shared_data(), &logical, now, |payload| {
                let lease = payload.and_then(Lease::decode).unwrap_or_default();
                match global::reservation_for(&lease, slice, now) {
                    Some(ask) => {
                        let locked = Lease {
                            lock_until: now.saturating_add(lock),
                            ..lease
                        };
                        (
                            Some((locked.encode(), locked.expires(now, ttl, hold))),
                            Some(ask),
                        )
                    }
                    None => (None, None),
                }
            });
            let Ok(Some((debt, want))) = ask else {
                continue;
            };
            let path = g.paths.reserve(&value, &limit.algorithm, debt, want, 0);
            match root.dispatch_http_call(
                &g.store.upstream,
                "GET",
                &path,
                &g.store.authority,
                &headers,
                None,
                g.store.timeout,
            ) {
                Ok(token) => batched.in_flight.borrow_mut().push(InFlight {
                    token,
                    limit: i,
                    value,
                    debt,
                    want,
                }),
                Err(why) => {
                    self.unlock(g, root, &logical, now, ttl, hold);
                    self.redis_failed(g, now, &why);
                    return;
                }
            }
        }
    }

    fn unlock(
        &self,
        g: &Global,
        root: &mut dyn RootHost,
        logical: &str,
        now: u64,
        ttl: u64,
        hold: u64,
    ) {
        if let Some((table, _)) = &g.batched {
            let _ = table.update(root.shared_data(), logical, now, |payload| {
                let lease = payload
                    .and_then(Lease::decode)
                    .map(|l| Lease { lock_until: 0, ..l });
                (lease.map(|l| (l.encode(), l.expires(now, ttl, hold))), ())
            });
        }
    }

    /// `batched`: a reservation's answer.
    fn settle(
        &self,
        g: &Global,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        let Some((table, batched)) = &g.batched else {
            return;
        };
        let entry = {
            let mut in_flight = batched.in_flight.borrow_mut();
            let Some(at) = in_flight.iter().position(|f| f.token == token) else {
                return;
            };
            in_flight.swap_remove(at)
        };
        let now = duration_us(root.now());
        let ttl = lease_ttl_us(&g.store);
        let logical = entry.value.clone();
        let Some(limit) = self.limiter.limits.get(entry.limit) else {
            return;
        };
        let hold = global::period_end_us(&limit.algorithm, now);
        let answer = response
            .ok_or_else(|| "no answer (timeout or connection failure)".to_string())
            .and_then(|r| redis::parse_reserve(r.status, &r.body, entry.debt, entry.want));
        match answer {
            Ok(r) => {
                g.health.success(&g.store.upstream);
                g.reservations.inc();
                let _ = table.update(root.shared_data(), &logical, now, |payload| {
                    let lease = payload.and_then(Lease::decode);
                    let l = global::settle(lease, entry.debt, entry.want, &r, now);
                    (Some((l.encode(), l.expires(now, ttl, hold))), ())
                });
            }
            Err(why) => {
                self.unlock(g, root, &logical, now, ttl, hold);
                self.redis_failed(g, now, &why);
            }
        }
    }

    fn count(&self, verdict: &Verdict) {
        let rejected_at = match verdict.rejection {
            Some(Rejection::Limited(i) | Rejection::MissingKey(i)) => Some(i),
            _ => None,
        };
        for (i, (result, m)) in verdict.results.iter().zip(&self.metrics).enumerate() {
            if let LimitResult::StoreError(_) = result {
                self.store_errors.inc();
            } else if rejected_at == Some(i) {
                if self.config.dry_run {
                    m.dry_run_limited.inc();
                } else {
                    m.limited.inc();
                }
            } else if verdict.rejection.is_none() && matches!(result, LimitResult::Checked(_)) {
                m.allowed.inc();
            }
        }
    }

    fn rejection(
        &self,
        rejection: Rejection,
        outcome: Option<Outcome>,
        headers: Vec<(&'static str, String)>,
    ) -> LocalResponse {
        let status = self.config.status;
        let mut response = match &self.config.body {
            Some(body) => LocalResponse {
                status,
                headers: vec![("content-type".into(), self.config.content_type.clone())],
                body: body.clone().into_bytes(),
            },
            None => LocalResponse::json_error(status, &self.config.message),
        };
        if let (Rejection::Limited(_), Some(o)) = (rejection, outcome) {
            response = response.with_header(
                "retry-after",
                seconds_ceil(o.retry_after_us).max(1).to_string(),
            );
            for (name, value) in headers {
                response = response.with_header(name, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::metrics;
    use portcullis_common::testing::{FakeHost, SharedMemoryStore};
    use std::time::Duration;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    /// Checks a metric natively; under wasm the host keeps metrics (the in-memory registry is native only),
    /// so metric values are checked by the native run and the e2e tests.
    fn assert_metric(name: &str, want: i64) {
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(metrics::value(name), Some(want), "{name}");
        #[cfg(target_arch = "wasm32")]
        let _ = (name, want, metrics::value);
    }

    fn policy(json: &str) -> RateLimitPolicy {
        RateLimitPolicy::configure(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn request(store: &SharedMemoryStore, ip: &str, at: Duration) -> FakeHost {
        FakeHost::request("GET", "/orders?id=1")
            .with_property(&["source", "address"], format!("{ip}:4000").as_bytes())
            .with_store(store)
            .at(at)
    }

    /// Runs the request and response phases; returns the local response if the request was rejected,
    /// otherwise the headers added to the upstream response.
    fn run(p: &RateLimitPolicy, host: FakeHost) -> Result<FakeHost, LocalResponse> {
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = RequestState::default();
        match p.on_request_headers(&mut state, &mut ex) {
            Decision::Respond(r) => Err(r),
            Decision::Continue => {
                p.on_response_headers(&mut state, &mut ex);
                Ok(host)
            }
            Decision::Pause => panic!("rate-limit never pauses"),
        }
    }

    const SEED: &str =
        r#"{"limits":[{"name":"per_ip","key":"${client_ip}","rate":1,"per":"1s","burst":5}]}"#;

    #[test]
    fn burst_then_429_with_retry_after_and_ratelimit_headers() {
        let p = policy(SEED);
        let store = SharedMemoryStore::default();
        for i in 0..5 {
            let host = run(&p, request(&store, "10.0.0.1", T0)).expect("within the burst");
            assert_eq!(
                host.response_header_value("ratelimit-limit").as_deref(),
                Some("5")
            );
            assert_eq!(
                host.response_header_value("ratelimit-remaining"),
                Some((4 - i).to_string())
            );
        }
        let r = run(
            &p,
            request(&store, "10.0.0.1", T0 + Duration::from_millis(300)),
        )
        .unwrap_err();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        assert_eq!(r.header("ratelimit-reset"), Some("5"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["message"], "rate limit exceeded");
        // another client is independent; after a second the first one gets exactly one more
        assert!(run(&p, request(&store, "10.0.0.2", T0)).is_ok());
        assert!(run(&p, request(&store, "10.0.0.1", T0 + Duration::from_secs(1))).is_ok());
        assert!(run(&p, request(&store, "10.0.0.1", T0 + Duration::from_secs(1))).is_err());
        assert_metric(&metric_name("per_ip", "allowed"), 7);
        assert_metric(&metric_name("per_ip", "limited"), 2);
    }

    #[test]
    fn dry_run_counts_and_adds_headers_but_never_rejects() {
        let p = policy(
            r#"{"dry_run":true,"headers":false,"limits":[{"name":"dry","rate":1,"burst":1}]}"#,
        );
        let store = SharedMemoryStore::default();
        let first = run(&p, request(&store, "10.0.0.1", T0)).unwrap();
        assert_eq!(
            first.response_header_value("ratelimit-limit"),
            None,
            "headers: false"
        );
        let second = run(&p, request(&store, "10.0.0.1", T0)).expect("dry run never rejects");
        assert_eq!(
            second
                .response_header_value("ratelimit-remaining")
                .as_deref(),
            Some("0")
        );
        assert_metric(&metric_name("dry", "dry_run_limited"), 1);
        assert_metric(&metric_name("dry", "limited"), 0);
    }

    #[test]
    fn keys_come_from_headers_queries_and_constants_with_missing_key_policies() {
        let p = policy(
            r#"{"limits":[
                {"name":"consumer","key":"${header.x-consumer}","rate":1,"burst":1,"on_missing_key":"deny"},
                {"name":"q","key":"${query.id}:${method}","rate":1,"burst":2}]}"#,
        );
        let store = SharedMemoryStore::default();
        let with = |c: &str| request(&store, "10.0.0.1", T0).with_header("x-consumer", c);
        assert!(run(&p, with("alice")).is_ok());
        assert!(run(&p, with("alice")).is_err(), "consumer limit");
        assert!(
            run(&p, with("bob")).is_ok(),
            "query limit allows 2 for id=1:GET"
        );
        assert_eq!(
            run(&p, with("carol"))
                .unwrap_err()
                .header("ratelimit-limit"),
            Some("2"),
            "third request for id=1:GET hits the query limit"
        );
        let missing = run(&p, request(&store, "10.0.0.1", T0)).unwrap_err();
        assert_eq!(missing.status, 429);
        assert_eq!(
            missing.header("retry-after"),
            None,
            "a missing key is not a matter of time"
        );
    }

    #[test]
    fn missing_keys_can_share_one_global_counter_or_skip_the_limit() {
        let p = policy(
            r#"{"limits":[{"name":"g","key":"${header.x-api-key}","rate":1,"burst":2,"on_missing_key":"global"}]}"#,
        );
        let store = SharedMemoryStore::default();
        let ok = (0..5)
            .filter(|i| run(&p, request(&store, &format!("10.0.0.{i}"), T0)).is_ok())
            .count();
        assert_eq!(ok, 2, "all keyless requests share one bucket");
        let skip =
            policy(r#"{"limits":[{"name":"s","key":"${header.x-api-key}","rate":1,"burst":1}]}"#);
        assert!((0..5).all(|_| run(&skip, request(&store, "10.0.0.1", T0)).is_ok()));
    }

    #[test]
    fn custom_status_and_body() {
        let p = policy(
            r#"{"status":503,"body":"slow down","content_type":"text/plain","limits":[{"name":"a","rate":1,"burst":1}]}"#,
        );
        let store = SharedMemoryStore::default();
        assert!(run(&p, request(&store, "10.0.0.1", T0)).is_ok());
        let r = run(&p, request(&store, "10.0.0.1", T0)).unwrap_err();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"slow down"[..]));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }

    #[test]
    fn client_ip_can_come_from_a_trusted_proxy() {
        let p = policy(
            r#"{"client_ip":{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]},
                "limits":[{"name":"ip","rate":1,"burst":1}]}"#,
        );
        let store = SharedMemoryStore::default();
        let via_proxy =
            |client: &str| request(&store, "10.1.1.1", T0).with_header("x-forwarded-for", client);
        assert!(run(&p, via_proxy("203.0.113.1")).is_ok());
        assert!(
            run(&p, via_proxy("203.0.113.2")).is_ok(),
            "a different client behind the proxy"
        );
        assert!(run(&p, via_proxy("203.0.113.1")).is_err());
    }

    #[test]
    fn store_errors_are_counted_and_follow_the_policy() {
        let p = policy(
            r#"{"max_keys":1,"on_store_error":"deny","limits":[{"name":"tiny","rate":1,"burst":5}]}"#,
        );
        let store = SharedMemoryStore::default();
        assert!(run(&p, request(&store, "10.0.0.1", T0)).is_ok());
        let r = run(&p, request(&store, "10.0.0.2", T0)).unwrap_err();
        assert_eq!(r.status, 429);
        assert_metric(STORE_ERRORS_METRIC, 1);
    }

    // ---- redis_http store

    const REDIS: &str = r#"{"on_store_error":"local","store":{"type":"redis_http","upstream":"redis","auth":{"type":"bearer","token":"s3cret"},"timeout":"150ms","retry_interval":"1s"},
        "limits":[{"name":"per_ip","rate":1,"per":"1s","burst":2}]}"#;

    fn answer(status: u16, body: &str) -> Option<CalloutResponse> {
        Some(CalloutResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    /// Starts a request that must pause on one callout; returns its state, exchange and host.
    fn paused(p: &RateLimitPolicy, host: FakeHost) -> (RequestState, Exchange, FakeHost) {
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = RequestState::default();
        assert_eq!(p.on_request_headers(&mut state, &mut ex), Decision::Pause);
        assert_eq!(host.state.borrow().calls.len(), 1);
        (state, ex, host)
    }

    #[test]
    fn per_request_mode_waits_for_one_eval_and_follows_its_answer() {
        let p = policy(REDIS);
        let store = SharedMemoryStore::default();
        let (mut state, mut ex, host) = paused(&p, request(&store, "10.0.0.1", T0));
        let call = host.state.borrow().calls[0].clone();
        assert_eq!(
            (call.upstream.as_str(), call.method.as_str()),
            ("redis", "GET")
        );
        assert!(call.path.starts_with("/EVAL/"), "{}", call.path);
        assert!(
            call.path
                .ends_with("/1/portcullis%3Arl%3Arate-limit%3Aper_ip%3A10.0.0.1/0/1/1/1000000/2"),
            "{}",
            call.path
        );
        assert_eq!(
            call.headers,
            vec![("authorization".to_string(), "Bearer s3cret".to_string())]
        );
        assert_eq!(call.timeout, Duration::from_millis(150));
        let allowed = answer(200, r#"{"EVAL":[1,2,1,1000000,0]}"#);
        assert_eq!(
            p.on_request_callout_response(&mut state, &mut ex, call.token, allowed),
            Decision::Continue
        );
        p.on_response_headers(&mut state, &mut ex);
        assert_eq!(
            host.response_header_value("ratelimit-remaining").as_deref(),
            Some("1")
        );

        let (mut state, mut ex, host) = paused(&p, request(&store, "10.0.0.1", T0));
        let token = host.state.borrow().calls[0].token;
        let rejected = answer(200, r#"{"EVAL":[2,2,0,2000000,1500000]}"#);
        match p.on_request_callout_response(&mut state, &mut ex, token, rejected) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 429);
                assert_eq!(r.header("retry-after"), Some("2"));
                assert_eq!(r.header("ratelimit-remaining"), Some("0"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.0.borrow().len(),
            0,
            "nothing counted locally while Redis answers"
        );
    }

    #[test]
    fn a_failing_redis_falls_back_to_local_limits_and_recovers_after_the_retry_interval() {
        let p = policy(REDIS);
        let store = SharedMemoryStore::default();
        let failures: [Option<CalloutResponse>; 1] = [answer(200, "{not json")];
        for bad in failures {
            let (mut state, mut ex, host) = paused(&p, request(&store, "10.0.0.1", T0));
            let token = host.state.borrow().calls[0].token;
            assert_eq!(
                p.on_request_callout_response(&mut state, &mut ex, token, bad),
                Decision::Continue,
                "local bucket of 2"
            );
        }
        // down: no call for a second, the local bucket decides (1 left, then 429)
        let next = request(&store, "10.0.0.1", T0 + Duration::from_millis(10));
        assert!(run(&p, next.clone()).is_ok());
        assert!(next.state.borrow().calls.is_empty(), "no call while down");
        assert_eq!(
            run(&p, request(&store, "10.0.0.1", T0)).unwrap_err().status,
            429
        );
        assert_metric(FALLBACK_METRIC, 3);
        assert_metric(REDIS_ERRORS_METRIC, 1);
        // after retry_interval one request probes; a good answer restores Redis
        let later = T0 + Duration::from_millis(1100);
        let (mut state, mut ex, host) = paused(&p, request(&store, "10.0.0.1", later));
        let token = host.state.borrow().calls[0].token;
        let ok = answer(200, r#"{"EVAL":[1,2,1,1000000,0]}"#);
        assert_eq!(
            p.on_request_callout_response(&mut state, &mut ex, token, ok),
            Decision::Continue
        );
        paused(&p, request(&store, "10.0.0.1", later));
    }

    #[test]
    fn timeouts_errors_and_refused_calls_follow_on_store_error() {
        for (on_error, want_ok) in [("allow", true), ("deny", false)] {
            let p = policy(&REDIS.replace(r#""local""#, &format!("{on_error:?}")));
            let store = SharedMemoryStore::default();
            let (mut state, mut ex, host) = paused(&p, request(&store, "10.0.0.2", T0));
            let token = host.state.borrow().calls[0].token;
            let d = p.on_request_callout_response(&mut state, &mut ex, token, None);
            assert_eq!(matches!(d, Decision::Continue), want_ok, "{on_error}");
        }
        let p = policy(REDIS);
        let store = SharedMemoryStore::default();
        let host = request(&store, "10.0.0.3", T0);
        host.state.borrow_mut().dispatch_error = Some("unknown cluster".into());
        assert!(run(&p, host).is_ok(), "refused call: local limit");
        for (i, body) in [
            r#"{"EVAL":[false,"ERR script"]}"#,
            r#"{"EVAL":[1,2]}"#,
            r#"{"EVAL":[1,2,1,1000000,-5]}"#,
            "",
        ]
        .into_iter()
        .enumerate()
        {
            let p = policy(REDIS);
            let ip = format!("10.0.1.{i}");
            let (mut state, mut ex, host) = paused(&p, request(&store, &ip, T0));
            let token = host.state.borrow().calls[0].token;
            assert_eq!(
                p.on_request_callout_response(&mut state, &mut ex, token, answer(200, body)),
                Decision::Continue,
                "{body}: local limit"
            );
        }
    }

    #[test]
    fn batched_mode_spends_leases_and_reserves_on_the_timer() {
        use portcullis_common::testing::FakeRootHost;
        let p = policy(
            r#"{"on_store_error":"local","store":{"type":"redis_http","upstream":"redis","sync":"batched","slice":3,"sync_interval":"50ms"},
                "limits":[{"name":"all","key":"all","algorithm":"fixed_window","requests":20,"window":"1m"}]}"#,
        );
        assert_eq!(p.tick_period(), Some(Duration::from_millis(50)));
        let store = SharedMemoryStore::default();
        let admitted = (0..5)
            .filter(|_| run(&p, request(&store, "10.0.0.1", T0)).is_ok())
            .count();
        assert_eq!(
            admitted, 3,
            "one slice before the first answer; requests never wait"
        );
        let mut root = FakeRootHost::new().at(T0).with_store(&store);
        p.on_tick(&mut root);
        assert_eq!(root.calls.len(), 1);
        let call = root.calls[0].clone();
        assert!(
            call.path
                .contains("/1/portcullis%3Arl%3Arate-limit%3Aall%3Aall/0/3/3/2/20/60000000/0"),
            "{}",
            call.path
        );
        p.on_tick(&mut root);
        assert_eq!(root.calls.len(), 1, "one reservation in flight per key");
        p.on_callout_response(
            &mut root,
            call.token,
            answer(200, r#"{"EVAL":[3,3,14,30000000,0]}"#),
        );
        let admitted = (0..5)
            .filter(|_| run(&p, request(&store, "10.0.0.1", T0)).is_ok())
            .count();
        assert_eq!(admitted, 3, "the granted credit");
        p.on_tick(&mut root);
        let call = root.last_call().unwrap().clone();
        assert!(
            call.path.contains("/0/0/3/2/"),
            "no debt, want 3: {}",
            call.path
        );
        // Redis is exhausted: 1 granted of 3
        p.on_callout_response(
            &mut root,
            call.token,
            answer(200, r#"{"EVAL":[0,1,0,30000000,30000000]}"#),
        );
        let results: Vec<_> = (0..3)
            .map(|_| run(&p, request(&store, "10.0.0.1", T0)))
            .collect();
        assert!(results[0].is_ok());
        let r = results[1].as_ref().unwrap_err();
        assert_eq!(r.header("retry-after"), Some("30"));
        let calls = root.calls.len();
        p.on_tick(&mut root);
        assert_eq!(root.calls.len(), calls, "no reservation while exhausted");
        // a failed reservation switches to the local limit
        let mut later = FakeRootHost::new()
            .at(T0 + Duration::from_secs(31))
            .with_store(&store);
        run(
            &p,
            request(&store, "10.0.0.1", T0 + Duration::from_secs(31)),
        )
        .ok();
        p.on_tick(&mut later);
        let token = later.last_call().expect("a reservation").token;
        p.on_callout_response(&mut later, token, None);
        assert!(
            run(
                &p,
                request(&store, "10.0.0.1", T0 + Duration::from_secs(31))
            )
            .is_ok(),
            "local fallback"
        );
    }

    #[test]
    fn redis_store_configs_are_checked() {
        let bad = [
            (
                r#"{"store":{"type":"redis_http"},"limits":[{"name":"a","rate":1}]}"#,
                "store.upstream: required",
            ),
            (
                r#"{"on_store_error":"local","limits":[{"name":"a","rate":1}]}"#,
                "on_store_error: `local` needs",
            ),
            (
                r#"{"store":{"type":"redis_http","upstream":"r","slice":2},"limits":[{"name":"a","rate":1}]}"#,
                "store.slice: applies to",
            ),
            (
                r#"{"store":{"type":"redis_http","upstream":"r","timeout":"0s"},"limits":[{"name":"a","rate":1}]}"#,
                "store.timeout: must be",
            ),
            (
                r#"{"store":{"type":"redis_http","upstream":"r","auth":{"type":"basic"}},"limits":[{"name":"a","rate":1}]}"#,
                "store.auth.username: required",
            ),
            (
                r#"{"store":{"type":"redis_http","upstream":"r","base_path":"x"},"limits":[{"name":"a","rate":1}]}"#,
                "store.base_path: must start",
            ),
            (
                r#"{"store":{"type":"redis","upstream":"r"},"limits":[{"name":"a","rate":1}]}"#,
                "store.type: unknown variant",
            ),
            (
                r#"{"store":{"upstream":"r"},"limits":[{"name":"a","rate":1}]}"#,
                "store.type: `upstream` and `auth` need",
            ),
        ];
        for (json, want) in bad {
            let err = RateLimitPolicy::configure(json.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with(want),
                "{json}\n  got:  {err}\n  want: {want}"
            );
        }
        let basic = RateLimitConfig::parse(br#"{"store":{"type":"redis_http","upstream":"r","base_path":"/redis","auth":{"type":"basic","username":"Aladdin","password":"open sesame"}},"limits":[{"name":"a","rate":1}]}"#).unwrap();
        let redis = basic.redis.unwrap();
        assert_eq!(
            redis.authorization.as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(redis.base_path, "/redis/");
        assert_eq!(redis.authority, "r");
    }
}
