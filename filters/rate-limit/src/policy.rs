//! The `rate-limit` policy: renders each limit's key from the request, runs the [`Limiter`], counts the
//! result in metrics, and answers 429 (or adds the `RateLimit-*` headers to the upstream's response).

use crate::algo::Outcome;
use crate::config::{OnMissingKey, RateLimitConfig, Validated};
use crate::core::{Key, LimitResult, Limiter, Rejection, Verdict, GLOBAL_KEY};
use portcullis_common::client_ip::{self, ClientIpConfig};
use portcullis_common::metrics::Metric;
use portcullis_common::{ConfigError, Decision, Exchange, LocalResponse, Policy};

pub struct RateLimitPolicy {
    config: RateLimitConfig,
    limiter: Limiter,
    metrics: Vec<LimitMetrics>,
    store_errors: Metric,
    resolve_client_ip: bool,
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
    type State = PendingHeaders;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let Validated { raw, limits } = RateLimitConfig::parse(config)?;
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
        })
    }

    fn on_request_headers(&self, state: &mut PendingHeaders, ex: &mut Exchange) -> Decision {
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
        let verdict = self.limiter.check(&keys, now, ex.host().shared_data());
        self.count(&verdict);
        let outcome = verdict.reported();
        let headers = outcome.as_ref().map(rate_headers).unwrap_or_default();
        match verdict.rejection {
            Some(rejection) if !self.config.dry_run => {
                Decision::Respond(self.rejection(rejection, outcome, headers))
            }
            Some(_) => {
                state.0 = headers;
                Decision::Continue
            }
            None => {
                if self.config.headers {
                    state.0 = headers;
                }
                Decision::Continue
            }
        }
    }

    fn on_response_headers(&self, state: &mut PendingHeaders, ex: &mut Exchange) -> Decision {
        for (name, value) in state.0.drain(..) {
            ex.set_response_header(name, Some(&value));
        }
        Decision::Continue
    }
}

impl RateLimitPolicy {
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
        let mut state = PendingHeaders::default();
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
}
