//! The `jwt-auth` policy: finds the token, checks it (shape and header, issuer → provider, algorithm
//! allow-list, key by `kid`, signature, time claims, audience, subject, required claims), then copies claims to
//! headers; or answers with an RFC 6750 challenge. Remote JWKS are fetched by the root context, kept in shared
//! data for every worker, re-fetched on an unknown `kid` (rate-limited), and kept when a fetch fails.

use crate::config::{ClaimRule, JwtAuthConfig, Provider, RemoteJwks, Settings};
use crate::keys::{KeySet, VerifyError};
use crate::token::{self, Rejection};
use portcullis_common::http::sanitize_header_value;
use portcullis_common::metrics::Metric;
use portcullis_common::store::{cas_update, fingerprint, SharedData, ZONE};
use portcullis_common::{
    CalloutResponse, ConfigError, Decision, Exchange, LocalResponse, Policy, RootHost,
};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};
use std::rc::Rc;
use std::time::Duration;

/// Longest value copied from a claim into a header.
pub const MAX_CLAIM_HEADER_BYTES: usize = 1024;
/// Most keys tried for one token without a `kid`.
const MAX_KEY_ATTEMPTS: usize = 8;
/// Root timer period when remote JWKS are configured: picks up other workers' fetches and drives refreshes.
const TICK: Duration = Duration::from_millis(250);
/// Every denial reason, one counter each (`portcullis_jwt_auth_denied_<reason>_total`).
pub const REASONS: [&str; 19] = [
    "missing",
    "invalid_request",
    "malformed",
    "too_large",
    "alg_none",
    "algorithm",
    "crit",
    "embedded_key",
    "issuer",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "lifetime",
    "missing_exp",
    "audience",
    "subject",
    "claims",
    "jwks_unavailable",
];

/// Per-request state: whether this request already waited once for an unknown-`kid` re-fetch, and the JWKS
/// fetch it made itself (token, provider index) where the root context cannot resume it.
#[derive(Default)]
pub struct RequestState {
    waited_for_kid: bool,
    own_fetch: Option<(u32, usize)>,
}

/// Whether a callout a request makes comes back to this policy's `on_request_callout_response`: not inside the
/// `portcullis` bundle, whose chain does not route request callouts to its steps (there a request that must
/// wait for keys on Kong's engine is decided at once, as timed out).
const OWN_FETCH_ROUTED: bool = !cfg!(all(feature = "bundled", target_arch = "wasm32", not(test)));

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    /// RFC 6750 error code (`invalid_token`, `invalid_request`, `insufficient_scope`); None = no token sent.
    pub error: Option<&'static str>,
    pub reason: &'static str,
    pub description: &'static str,
}

impl Denial {
    fn invalid(reason: &'static str, description: &'static str) -> Self {
        Denial {
            status: 401,
            error: Some("invalid_token"),
            reason,
            description,
        }
    }
    fn request(description: &'static str) -> Self {
        Denial {
            status: 401,
            error: Some("invalid_request"),
            reason: "invalid_request",
            description,
        }
    }
}

impl From<Rejection> for Denial {
    fn from(r: Rejection) -> Self {
        Denial::invalid(r.reason(), r.description())
    }
}

struct Metrics {
    allowed: Metric,
    denied: Vec<(&'static str, Metric)>,
    fetch_ok: Metric,
    fetch_failed: Metric,
    cache_hits: Metric,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            allowed: Metric::counter("portcullis_jwt_auth_allowed_total"),
            denied: REASONS
                .iter()
                .map(|r| {
                    (
                        *r,
                        Metric::counter(&format!("portcullis_jwt_auth_denied_{r}_total")),
                    )
                })
                .collect(),
            fetch_ok: Metric::counter("portcullis_jwt_auth_jwks_fetch_success_total"),
            fetch_failed: Metric::counter("portcullis_jwt_auth_jwks_fetch_failure_total"),
            cache_hits: Metric::counter("portcullis_jwt_auth_cache_hits_total"),
        }
    }
    fn denied(&self, reason: &str) {
        if let Some((_, m)) = self.denied.iter().find(|(r, _)| *r == reason) {
            m.inc();
        }
    }
}

/// A remote provider's keys as this worker knows them.
#[derive(Default)]
struct RemoteState {
    keys: Option<Rc<KeySet>>,
    /// Shared-data version of the installed JWKS (None = installed from nowhere yet).
    cas: Option<u32>,
    fetched_at: Duration,
    in_flight: Option<(u32, Duration)>,
    /// When a request of this worker last started its own fetch (hosts whose root cannot resume requests):
    /// the root's start-up fetch waits for its answer instead of fetching the same document again.
    request_fetch: Option<Duration>,
    failures: u32,
    next_attempt: Duration,
    refetch_wanted: bool,
    last_refetch: Option<Duration>,
}

/// A verified token remembered until its `exp`.
struct Cached {
    provider: usize,
    claims: Rc<Map<String, Value>>,
}

/// Verified tokens by their exact text: a hit is an exact match (no hash to trust), and a lookup hashes only
/// the token's tail (see [`TailHash`]) instead of a SHA-256 (which cost more than the rest of a hit in wasm).
#[derive(Default)]
struct TokenCache {
    entries: HashMap<Box<str>, Cached, TailHash>,
    /// Bytes of token text held, kept under [`MAX_CACHED_TOKEN_BYTES`].
    bytes: usize,
}

/// Bytes at the end of a token that [`TailHash`] hashes: well inside any signature.
const HASHED_TAIL: usize = 32;

/// The token cache's hasher: keyed SipHash over a token's length and its last [`HASHED_TAIL`] bytes, which
/// are signature bytes and so differ between any two tokens. A lookup hashes 40 bytes instead of the whole
/// token (~600). Only verified tokens are stored, so no one without a signing key can crowd one bucket.
#[derive(Default, Clone)]
struct TailHash(RandomState);

struct TailHasher(DefaultHasher);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Token text the verified-token cache may hold per worker; longer tokens than [`MAX_CACHEABLE_TOKEN`] are
/// verified every time.
const MAX_CACHED_TOKEN_BYTES: usize = 4 << 20;
const MAX_CACHEABLE_TOKEN: usize = 16 << 10;

pub struct JwtAuthPolicy {
    settings: Settings,
    remote: Vec<Option<RefCell<RemoteState>>>,
    cache: RefCell<TokenCache>,
    metrics: Metrics,
}

/// Where the token was found, to strip it before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header(String),
    Param(String),
    Cookie(String),
}

enum Verified {
    Ok {
        provider: usize,
        claims: Rc<Map<String, Value>>,
    },
    Pause,
}

fn shared_key(p: &Provider, r: &RemoteJwks) -> String {
    format!(
        "{ZONE}/jwt-auth/jwks/{:016x}",
        fingerprint(&format!("{}|{}|{}", p.name, r.cluster, r.path))
    )
}

fn as_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Policy for JwtAuthPolicy {
    const NAME: &'static str = "jwt-auth";
    type State = RequestState;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let settings = JwtAuthConfig::parse(config)?;
        let remote = settings
            .providers
            .iter()
            .map(|p| {
                p.remote
                    .as_ref()
                    .map(|_| RefCell::new(RemoteState::default()))
            })
            .collect();
        Ok(JwtAuthPolicy {
            settings,
            remote,
            cache: RefCell::new(TokenCache::default()),
            metrics: Metrics::new(),
        })
    }

    fn on_request_headers(&self, state: &mut RequestState, ex: &mut Exchange) -> Decision {
        self.decide(state, ex, true)
    }

    fn on_resume(&self, state: &mut RequestState, ex: &mut Exchange, timed_out: bool) -> Decision {
        self.decide(state, ex, !timed_out)
    }

    fn tick_period(&self) -> Option<Duration> {
        self.remote.iter().any(Option::is_some).then_some(TICK)
    }

    fn max_pause(&self) -> Duration {
        self.settings
            .providers
            .iter()
            .filter_map(|p| p.remote.as_ref().map(|r| r.timeout))
            .max()
            .map_or(Duration::from_secs(5), |t| t + Duration::from_secs(1))
    }

    fn on_start(&self, root: &mut dyn RootHost) {
        self.refresh(root);
    }

    fn on_tick(&self, root: &mut dyn RootHost) {
        self.refresh(root);
    }

    fn on_callout_response(
        &self,
        root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        let now = root.now();
        for (i, p) in self.settings.providers.iter().enumerate() {
            let (Some(remote), Some(cell)) =
                (&p.remote, self.remote.get(i).and_then(Option::as_ref))
            else {
                continue;
            };
            let mut st = cell.borrow_mut();
            if st.in_flight.map(|(t, _)| t) != Some(token) {
                continue;
            }
            st.in_flight = None;
            // let the next refresh (by any worker) start without waiting for the lease to expire
            let lease = format!("{}/lease", shared_key(p, remote));
            let _ = cas_update(root.shared_data(), &lease, |_| {
                (Some(0u64.to_le_bytes().to_vec()), ())
            });
            self.install_fetched(
                p,
                remote,
                &mut st,
                root.shared_data(),
                now,
                response.as_ref(),
            );
            drop(st);
            root.wake_paused();
        }
    }

    fn on_request_callout_response(
        &self,
        state: &mut RequestState,
        ex: &mut Exchange,
        token: u32,
        response: Option<CalloutResponse>,
    ) -> Decision {
        let Some((_, index)) = state.own_fetch.take_if(|(t, _)| *t == token) else {
            // not this request's fetch: decide again without waiting (never let it through undecided)
            return self.decide(state, ex, false);
        };
        if let (Some(p), Some(cell)) = (
            self.settings.providers.get(index),
            self.remote.get(index).and_then(Option::as_ref),
        ) {
            if let Some(remote) = &p.remote {
                let now = ex.now();
                let mut st = cell.borrow_mut();
                st.request_fetch = None;
                self.install_fetched(
                    p,
                    remote,
                    &mut st,
                    ex.host().shared_data(),
                    now,
                    response.as_ref(),
                );
            }
        }
        self.decide(state, ex, false)
    }
}

impl JwtAuthPolicy {
    /// Installs a fetched JWKS (this worker, and shared data for the others), or counts the failure and
    /// backs off; the last good keys stay in use.
    fn install_fetched(
        &self,
        p: &Provider,
        remote: &RemoteJwks,
        st: &mut RemoteState,
        store: &mut dyn SharedData,
        now: Duration,
        response: Option<&CalloutResponse>,
    ) {
        let parsed = match response {
            Some(r) if r.status == 200 => KeySet::parse_jwks(&r.body, &p.algorithms, false),
            Some(r) => Err(format!("status {}", r.status)),
            None => Err("no response (connection failure or timeout)".into()),
        };
        match parsed {
            Ok(keys) => {
                self.metrics.fetch_ok.inc();
                log::info!(
                    "provider {}: JWKS fetched ({} keys)",
                    p.name,
                    keys.keys.len()
                );
                let body = response.map(|r| r.body.as_slice()).unwrap_or_default();
                let mut record = as_us(now).to_le_bytes().to_vec();
                record.extend_from_slice(body);
                let key = shared_key(p, remote);
                let written = cas_update(store, &key, |_| (Some(record.clone()), ()));
                if let Err(e) = written {
                    log::warn!(
                        "provider {}: JWKS not shared with other workers: {e}",
                        p.name
                    );
                }
                st.cas = store.get(&key).ok().flatten().map(|v| v.cas);
                st.keys = Some(Rc::new(keys));
                st.fetched_at = now;
                st.failures = 0;
                st.next_attempt = Duration::ZERO;
                self.cache.borrow_mut().entries.clear();
            }
            Err(e) => {
                self.metrics.fetch_failed.inc();
                st.failures = st.failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << st.failures.min(6).saturating_sub(1))
                    .min(remote.cache_duration);
                st.next_attempt = now + backoff;
                log::warn!(
                    "provider {}: JWKS fetch failed: {e}; {} (retry in {backoff:?})",
                    p.name,
                    if st.keys.is_some() {
                        "keeping the last good keys"
                    } else {
                        "no keys yet"
                    }
                );
            }
        }
    }

    /// Root work: install JWKS other workers fetched, then fetch what is stale, wanted or missing.
    fn refresh(&self, root: &mut dyn RootHost) {
        let now = root.now();
        let mut woke = false;
        for (i, p) in self.settings.providers.iter().enumerate() {
            let (Some(remote), Some(cell)) =
                (&p.remote, self.remote.get(i).and_then(Option::as_ref))
            else {
                continue;
            };
            let key = shared_key(p, remote);
            if self.sync(p, cell, root.shared_data(), &key) {
                woke = true;
            }
            let mut st = cell.borrow_mut();
            if let Some((_, started)) = st.in_flight {
                // the host always answers a callout; this only guards against a lost answer
                if now > started + remote.timeout + Duration::from_secs(5) {
                    st.in_flight = None;
                } else {
                    continue;
                }
            }
            if let Some(started) = st.request_fetch {
                // a request of this worker is fetching the same document; its answer installs the keys
                if now > started + remote.timeout + Duration::from_secs(1) {
                    st.request_fetch = None;
                } else {
                    continue;
                }
            }
            let stale = st.keys.is_none() || now >= st.fetched_at + remote.cache_duration;
            let wanted = st.refetch_wanted;
            if !(stale || wanted) || now < st.next_attempt {
                continue;
            }
            // A stale JWKS is refreshed by one worker at a time (a lease in shared data); the others pick it
            // up from shared data. A worker with no keys at all fetches at once (requests wait on it), and a
            // re-fetch for an unknown kid is this worker's own (rate-limited).
            let first = st.keys.is_none();
            if !wanted
                && !first
                && !take_lease(
                    root.shared_data(),
                    &format!("{key}/lease"),
                    now,
                    remote.timeout,
                )
            {
                continue;
            }
            st.refetch_wanted = false;
            match root.dispatch_http_call(
                &remote.cluster,
                "GET",
                &remote.path,
                &remote.authority,
                &[("accept", "application/json")],
                None,
                remote.timeout,
            ) {
                Ok(token) => {
                    log::debug!("provider {}: fetching the JWKS", p.name);
                    st.in_flight = Some((token, now));
                }
                Err(e) => {
                    self.metrics.fetch_failed.inc();
                    st.failures = st.failures.saturating_add(1);
                    st.next_attempt = now + Duration::from_secs(1);
                    log::warn!("provider {}: JWKS fetch not started: {e}", p.name);
                }
            }
        }
        if woke {
            root.wake_paused();
        }
    }

    /// Starts a JWKS fetch from the request itself, for hosts whose root context cannot resume a paused request
    /// (Kong's engine, see [`Exchange::root_can_resume`]): the answer comes back to this request
    /// (`on_request_callout_response`), which installs it and decides. False when no fetch was started.
    fn fetch_for_request(
        &self,
        state: &mut RequestState,
        ex: &mut Exchange,
        index: usize,
        remote: &RemoteJwks,
        cell: &RefCell<RemoteState>,
        now: Duration,
    ) -> bool {
        if !OWN_FETCH_ROUTED {
            return false;
        }
        match ex.host().dispatch_http_call(
            &remote.cluster,
            "GET",
            &remote.path,
            &remote.authority,
            &[("accept", "application/json")],
            None,
            remote.timeout,
        ) {
            Ok(token) => {
                state.own_fetch = Some((token, index));
                cell.borrow_mut().request_fetch = Some(now);
                true
            }
            Err(e) => {
                self.metrics.fetch_failed.inc();
                log::warn!("JWKS fetch for a waiting request not started: {e}");
                false
            }
        }
    }

    /// Installs the shared JWKS if its version differs from ours. Returns true when keys changed.
    fn sync(
        &self,
        p: &Provider,
        cell: &RefCell<RemoteState>,
        store: &mut dyn SharedData,
        key: &str,
    ) -> bool {
        let Ok(Some(v)) = store.get(key) else {
            return false;
        };
        let mut st = cell.borrow_mut();
        if st.cas == Some(v.cas) {
            return false;
        }
        st.cas = Some(v.cas);
        let (Some(at), Some(body)) = (v.value.get(..8), v.value.get(8..)) else {
            return false;
        };
        let fetched_at = Duration::from_micros(u64::from_le_bytes(at.try_into().unwrap_or([0; 8])));
        match KeySet::parse_jwks(body, &p.algorithms, false) {
            Ok(keys) => {
                st.keys = Some(Rc::new(keys));
                st.fetched_at = fetched_at;
                self.cache.borrow_mut().entries.clear();
                true
            }
            Err(e) => {
                log::warn!("provider {}: shared JWKS unusable: {e}", p.name);
                false
            }
        }
    }

    /// The whole decision for one request. `may_pause`: waiting for keys is still allowed.
    fn decide(&self, state: &mut RequestState, ex: &mut Exchange, may_pause: bool) -> Decision {
        let cfg = &self.settings.raw;
        if cfg.bypass_cors_preflight && is_preflight(ex) {
            return Decision::Continue;
        }
        let found = match find_token(cfg, ex) {
            Ok(f) => f,
            Err(d) => return self.deny(d, None),
        };
        let Some((token, source)) = found else {
            if cfg.allow_missing {
                self.strip_claim_headers(ex);
                return Decision::Continue;
            }
            return self.deny(
                Denial {
                    status: 401,
                    error: None,
                    reason: "missing",
                    description: "",
                },
                None,
            );
        };
        let (provider, claims) = match self.verify(state, ex, &token, may_pause) {
            Ok(Verified::Ok { provider, claims }) => (provider, claims),
            Ok(Verified::Pause) => return Decision::Pause,
            Err((d, provider)) => return self.deny(d, provider),
        };
        let Some(p) = self.settings.providers.get(provider) else {
            return self.deny(
                Denial::invalid("issuer", "the token issuer is not trusted"),
                None,
            );
        };
        if let Some(rule) = p.required_claims.iter().find(|r| !rule_matches(r, &claims)) {
            log::debug!(
                "provider {}: required claim {:?} not satisfied",
                p.name,
                rule.claim
            );
            return self.deny(
                Denial {
                    status: 403,
                    error: Some("insufficient_scope"),
                    reason: "claims",
                    description: "the token lacks a required claim",
                },
                Some(provider),
            );
        }
        self.metrics.allowed.inc();
        for c in &cfg.claims_to_headers {
            let value = lookup(&claims, &c.claim).and_then(claim_to_string);
            let value = value.map(|v| sanitize_header_value(&v, MAX_CLAIM_HEADER_BYTES));
            ex.set_request_header(c.header.as_str(), value.as_deref());
        }
        if let Some(h) = &cfg.forward_payload_header {
            let payload = token.split('.').nth(1).unwrap_or_default();
            ex.set_request_header(h.as_str(), Some(payload));
        }
        if !cfg.forward {
            strip_token(ex, &source);
        }
        Decision::Continue
    }

    fn verify(
        &self,
        state: &mut RequestState,
        ex: &mut Exchange,
        token: &str,
        may_pause: bool,
    ) -> Result<Verified, (Denial, Option<usize>)> {
        let cfg = &self.settings.raw;
        let now = ex.now();
        let cacheable = cfg.cache_max_entries > 0 && token.len() <= MAX_CACHEABLE_TOKEN;
        if cacheable {
            let hit = self
                .cache
                .borrow()
                .entries
                .get(token)
                .map(|c| (c.provider, c.claims.clone()));
            if let Some((provider, claims)) = hit {
                // times are checked again on every hit: a cached token expires like any other
                check_times(cfg, &claims, now).map_err(|d| (d, Some(provider)))?;
                self.metrics.cache_hits.inc();
                return Ok(Verified::Ok { provider, claims });
            }
        }
        let parsed = token::parse(
            token,
            usize::try_from(cfg.max_token_bytes.0).unwrap_or(usize::MAX),
        )
        .map_err(|r| (Denial::from(r), None))?;
        let iss = parsed.claims.get("iss").and_then(Value::as_str);
        let Some((index, p)) = self
            .settings
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| Some(p.issuer.as_str()) == iss)
        else {
            return Err((
                Denial::invalid("issuer", "the token issuer is not trusted"),
                None,
            ));
        };
        let fail = |d: Denial| (d, Some(index));
        if !p.algorithms.contains(&parsed.alg) {
            return Err(fail(Denial::invalid(
                "algorithm",
                "the token algorithm is not allowed",
            )));
        }
        let keys: Rc<KeySet>;
        let keys_ref: &KeySet = match (&p.remote, self.remote.get(index).and_then(Option::as_ref)) {
            (Some(remote), Some(cell)) => {
                if cell.borrow().keys.is_none() {
                    self.sync(p, cell, ex.host().shared_data(), &shared_key(p, remote));
                }
                let current = cell.borrow().keys.clone();
                match current {
                    Some(k) => {
                        keys = k;
                        if let Some(kid) = parsed.kid.as_deref() {
                            if !keys.has_kid(kid) {
                                let mut st = cell.borrow_mut();
                                if may_pause
                                    && state.waited_for_kid
                                    && (st.refetch_wanted || st.in_flight.is_some())
                                {
                                    // woken by something else (another worker's JWKS): keep waiting
                                    return Ok(Verified::Pause);
                                }
                                let allowed = st
                                    .last_refetch
                                    .is_none_or(|t| now >= t + remote.refetch_interval);
                                if may_pause && allowed && !state.waited_for_kid {
                                    st.last_refetch = Some(now);
                                    state.waited_for_kid = true;
                                    log::info!(
                                        "provider {}: unknown kid, re-fetching the JWKS",
                                        p.name
                                    );
                                    if ex.root_can_resume() {
                                        st.refetch_wanted = true;
                                        return Ok(Verified::Pause);
                                    }
                                    drop(st);
                                    if self.fetch_for_request(state, ex, index, remote, cell, now) {
                                        return Ok(Verified::Pause);
                                    }
                                    // no fetch of its own: this request is decided now, the root re-fetches
                                    cell.borrow_mut().refetch_wanted = true;
                                }
                                return Err(fail(Denial::invalid(
                                    "unknown_key",
                                    "no key matches the token kid",
                                )));
                            }
                        }
                        &keys
                    }
                    None if may_pause => {
                        // Where the root context cannot resume the request, it fetches the keys itself (if
                        // it cannot, the adapter decides the pause at once, as timed out).
                        if !ex.root_can_resume() {
                            self.fetch_for_request(state, ex, index, remote, cell, now);
                        }
                        return Ok(Verified::Pause);
                    }
                    None => {
                        return Err(fail(Denial::invalid(
                            "jwks_unavailable",
                            "the signing keys are not available",
                        )))
                    }
                }
            }
            _ => &p.static_keys,
        };
        let mut tried = 0;
        let mut result = Err(VerifyError::BadSignature);
        for key in keys_ref
            .candidates(parsed.alg, parsed.kid.as_deref())
            .take(MAX_KEY_ATTEMPTS)
        {
            tried += 1;
            result = key.verify(token);
            if result.is_ok() {
                break;
            }
        }
        if tried == 0 {
            return Err(fail(Denial::invalid(
                "unknown_key",
                "no key matches the token kid and algorithm",
            )));
        }
        match result {
            Ok(()) => {}
            Err(VerifyError::BadSignature) => {
                return Err(fail(Denial::invalid(
                    "bad_signature",
                    "the token signature is invalid",
                )))
            }
            Err(VerifyError::Malformed) => {
                return Err(fail(Denial::invalid(
                    "malformed",
                    "the token claims are malformed",
                )))
            }
        }
        let claims = parsed.claims;
        check_times(cfg, &claims, now).map_err(fail)?;
        if !p.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => p.audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| p.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(fail(Denial::invalid(
                    "audience",
                    "the token audience is not accepted",
                )));
            }
        }
        if let Some(subjects) = &p.subjects {
            let sub = claims.get("sub").and_then(Value::as_str);
            if !sub.is_some_and(|s| subjects.iter().any(|x| x == s)) {
                return Err(fail(Denial::invalid(
                    "subject",
                    "the token subject is not accepted",
                )));
            }
        }
        let claims = Rc::new(claims);
        if cacheable {
            let mut cache = self.cache.borrow_mut();
            let max = cfg.cache_max_entries as usize;
            let full = |c: &TokenCache| {
                c.entries.len() >= max || c.bytes + token.len() > MAX_CACHED_TOKEN_BYTES
            };
            if full(&cache) {
                let now_s = now.as_secs_f64();
                cache.entries.retain(|_, c| {
                    c.claims
                        .get("exp")
                        .and_then(Value::as_f64)
                        .is_none_or(|e| e > now_s)
                });
                cache.bytes = cache.entries.keys().map(|k| k.len()).sum();
                if full(&cache) {
                    cache.entries.clear();
                    cache.bytes = 0;
                }
            }
            let previous = cache.entries.insert(
                token.into(),
                Cached {
                    provider: index,
                    claims: claims.clone(),
                },
            );
            if previous.is_none() {
                cache.bytes += token.len();
            }
        }
        Ok(Verified::Ok {
            provider: index,
            claims,
        })
    }

    fn deny(&self, d: Denial, provider: Option<usize>) -> Decision {
        self.metrics.denied(d.reason);
        let name = provider
            .and_then(|i| self.settings.providers.get(i))
            .map_or("-", |p| p.name.as_str());
        if d.reason != "missing" {
            log::info!("denied: provider={name} reason={}", d.reason);
        }
        let cfg = &self.settings.raw;
        let message = match (d.status, d.error) {
            (403, _) => &cfg.messages.forbidden,
            (_, None) => &cfg.messages.missing,
            _ => &cfg.messages.invalid,
        };
        let mut challenge = format!("Bearer realm=\"{}\"", cfg.realm);
        if let Some(error) = d.error {
            challenge.push_str(&format!(
                ", error=\"{error}\", error_description=\"{}\"",
                d.description
            ));
        }
        Decision::Respond(
            LocalResponse::json_error(d.status, message).with_header("www-authenticate", challenge),
        )
    }

    fn strip_claim_headers(&self, ex: &mut Exchange) {
        for c in &self.settings.raw.claims_to_headers {
            ex.set_request_header(c.header.as_str(), None);
        }
        if let Some(h) = &self.settings.raw.forward_payload_header {
            ex.set_request_header(h.as_str(), None);
        }
    }
}

/// Claims-based time checks: `exp`, `nbf`, `iat` with the clock skew, and the lifetime cap.
fn check_times(
    cfg: &JwtAuthConfig,
    claims: &Map<String, Value>,
    now: Duration,
) -> Result<(), Denial> {
    let skew = cfg.clock_skew.as_duration().as_secs_f64();
    let now = now.as_secs_f64();
    let num = |name: &str| -> Result<Option<f64>, Denial> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or(Denial::invalid("malformed", "a time claim is not a number")),
        }
    };
    let (exp, nbf, iat) = (num("exp")?, num("nbf")?, num("iat")?);
    match exp {
        Some(exp) if now - skew >= exp => {
            return Err(Denial::invalid("expired", "the token has expired"))
        }
        None if cfg.require_expiration => {
            return Err(Denial::invalid(
                "missing_exp",
                "the token has no expiration",
            ))
        }
        _ => {}
    }
    if nbf.is_some_and(|nbf| now + skew < nbf) || iat.is_some_and(|iat| now + skew < iat) {
        return Err(Denial::invalid(
            "not_yet_valid",
            "the token is not valid yet",
        ));
    }
    if let (Some(max), Some(exp)) = (cfg.max_lifetime, exp) {
        let start = iat.unwrap_or(now);
        if exp - start > max.as_duration().as_secs_f64() {
            return Err(Denial::invalid(
                "lifetime",
                "the token lifetime is too long",
            ));
        }
    }
    Ok(())
}

fn take_lease(store: &mut dyn SharedData, key: &str, now: Duration, timeout: Duration) -> bool {
    let now_us = as_us(now);
    let until = as_us(now + timeout + Duration::from_secs(1));
    cas_update(store, key, |cur| {
        let held_until = cur
            .and_then(|b| b.get(..8))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        if held_until > now_us {
            (None, false)
        } else {
            (Some(until.to_le_bytes().to_vec()), true)
        }
    })
    // a store that refuses (Kong zone missing/full) must not stop fetching
    .unwrap_or(true)
}

fn is_preflight(ex: &mut Exchange) -> bool {
    ex.method() == Some("OPTIONS")
        && ex.request_header("origin").is_some()
        && ex.request_header("access-control-request-method").is_some()
}

/// Finds the token: `Ok(None)` when none was sent; an error for a malformed header or several tokens.
fn find_token(cfg: &JwtAuthConfig, ex: &mut Exchange) -> Result<Option<(String, Source)>, Denial> {
    let mut found: Option<(String, Source)> = None;
    let mut put = |token: String, source: Source| -> Result<(), Denial> {
        if found.is_some() {
            return Err(Denial::request("several tokens were sent"));
        }
        if token.is_empty() || token.bytes().any(|b| b.is_ascii_whitespace() || b == b',') {
            return Err(Denial::request("the credentials are malformed"));
        }
        found = Some((token, source));
        Ok(())
    };
    for h in &cfg.from_headers {
        let Some(value) = ex.request_header(h.name.as_str()) else {
            continue;
        };
        let prefix = h.value_prefix.as_bytes();
        let token = match value.as_bytes().get(..prefix.len()) {
            Some(head) if head.eq_ignore_ascii_case(prefix) => {
                value.get(prefix.len()..).unwrap_or("").trim()
            }
            _ => return Err(Denial::request("the authorization header is malformed")),
        };
        put(
            token.to_string(),
            Source::Header(h.name.as_str().to_string()),
        )?;
    }
    for name in &cfg.from_params {
        if let Some(v) = ex.query_param(name) {
            let v = v.to_string();
            put(v, Source::Param(name.clone()))?;
        }
    }
    if !cfg.from_cookies.is_empty() {
        let cookies = ex
            .request_header("cookie")
            .map(str::to_owned)
            .unwrap_or_default();
        for name in &cfg.from_cookies {
            for pair in cookies.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == name {
                        put(v.trim().to_string(), Source::Cookie(name.clone()))?;
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Removes the token from where it was found, so the upstream never sees it.
fn strip_token(ex: &mut Exchange, source: &Source) {
    match source {
        Source::Header(name) => ex.set_request_header(name, None),
        Source::Param(name) => {
            let Some(pq) = ex.path_and_query().map(str::to_owned) else {
                return;
            };
            let Some((path, query)) = pq.split_once('?') else {
                return;
            };
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .collect();
            let new = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            ex.set_request_header(":path", Some(&new));
        }
        Source::Cookie(name) => {
            let Some(cookies) = ex.request_header("cookie").map(str::to_owned) else {
                return;
            };
            let kept: Vec<&str> = cookies
                .split(';')
                .map(str::trim)
                .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .collect();
            let value = kept.join("; ");
            ex.set_request_header("cookie", (!value.is_empty()).then_some(value.as_str()));
        }
    }
}

/// A claim by dotted path (`realm_access.roles`); an exact top-level name with dots wins.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

fn claim_to_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

fn rule_matches(rule: &ClaimRule, claims: &Map<String, Value>) -> bool {
    let Some(v) = lookup(claims, &rule.claim) else {
        return false;
    };
    if rule.values.is_empty() {
        return !v.is_null();
    }
    let accepted = |s: &str| rule.values.iter().any(|x| x == s);
    match v {
        Value::String(s) => accepted(s) || s.split(' ').any(accepted),
        Value::Array(items) => items.iter().any(|i| match i {
            Value::String(s) => accepted(s),
            other => accepted(&other.to_string()),
        }),
        Value::Null | Value::Object(_) => false,
        other => accepted(&other.to_string()),
    }
}

#[cfg(test)]
mod tests;
