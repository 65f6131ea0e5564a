//! The `canary` policy: picks a side for each request, then tags the request for the proxy's routing.
//!
//! Order of decision, first answer wins:
//! 1. the override header (`always` / `never`), when enabled;
//! 2. `rules`, in order (all conditions of a rule must match);
//! 3. the pin cookie (`set_cookie`), when configured and present;
//! 4. the percentage split (ramped when `ramp` is set): bucket of the sticky key's hash below the share →
//!    canary; with no sticky key in the request, the bucket of its request id (random per request).
//!
//! Effect: `tag_header` is set on every request (a client-sent value is replaced); canary requests also get
//! Kong's upstream target when `canary_target` is set; percentage decisions get the pin cookie.

use crate::config::{percent_to_ppm, CanaryConfig, Conditions, KeySource, Side, ValueMatch};
use crate::hash::{bucket, BUCKETS};
use crate::ramp::RampPlan;
use portcullis_common::metrics::Metric;
use portcullis_common::{props, ConfigError, Decision, Exchange, Policy};
use std::cell::Cell;

pub struct CanaryPolicy {
    config: CanaryConfig,
    base_ppm: u64,
    ramp: Option<RampPlan>,
    metrics: Metrics,
    /// Last share recorded in the gauge (a VM is single-threaded), so the gauge is written only on change.
    last_share: Cell<Option<u64>>,
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Override,
    /// Index into `rules`.
    Rule(usize),
    Pinned,
    /// Hash of the sticky key.
    Split,
    /// No sticky key: hash of the request id (or the clock).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub side: Side,
    pub reason: Reason,
}

/// Per-request state: the pin cookie to send with the response, if any.
#[derive(Default)]
pub struct PendingPin {
    side: Option<Side>,
}

struct Metrics {
    canary: Metric,
    stable: Metric,
    rules: Vec<Metric>,
    overridden: Metric,
    pinned: Metric,
    split: Metric,
    random: Metric,
    share: Metric,
}

impl Metrics {
    fn define(config: &CanaryConfig) -> Metrics {
        Metrics {
            canary: Metric::counter("portcullis_canary_canary_total"),
            stable: Metric::counter("portcullis_canary_stable_total"),
            rules: config
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    Metric::counter(&format!(
                        "portcullis_canary_rule_{}_total",
                        r.metric_name(i)
                    ))
                })
                .collect(),
            overridden: Metric::counter("portcullis_canary_override_total"),
            pinned: Metric::counter("portcullis_canary_pinned_total"),
            split: Metric::counter("portcullis_canary_split_total"),
            random: Metric::counter("portcullis_canary_random_total"),
            share: Metric::gauge("portcullis_canary_share_ppm"),
        }
    }

    fn count(&self, outcome: Outcome) {
        match outcome.side {
            Side::Canary => self.canary.inc(),
            Side::Stable => self.stable.inc(),
        }
        match outcome.reason {
            Reason::Override => self.overridden.inc(),
            Reason::Rule(i) => {
                if let Some(m) = self.rules.get(i) {
                    m.inc();
                }
            }
            Reason::Pinned => self.pinned.inc(),
            Reason::Split => self.split.inc(),
            Reason::Random => self.random.inc(),
        }
    }
}

impl Policy for CanaryPolicy {
    const NAME: &'static str = "canary";
    type State = PendingPin;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        let config = CanaryConfig::parse(config)?;
        Ok(CanaryPolicy::new(config))
    }

    fn on_request_headers(&self, state: &mut PendingPin, ex: &mut Exchange) -> Decision {
        let outcome = self.decide(ex);
        self.metrics.count(outcome);
        let c = &self.config;
        let tag = match outcome.side {
            Side::Canary => c.canary_value.as_str(),
            Side::Stable => c.stable_value.as_str(),
        };
        ex.set_request_header(c.tag_header.as_str(), Some(tag));
        if outcome.side == Side::Canary {
            if let Some(target) = &c.canary_target {
                if !props::set_upstream_target(ex.host(), &target.0) {
                    log::debug!("the host did not take upstream target {}", target.0);
                }
            }
        }
        if c.set_cookie.is_some() && matches!(outcome.reason, Reason::Split | Reason::Random) {
            state.side = Some(outcome.side);
        }
        Decision::Continue
    }

    fn on_response_headers(&self, state: &mut PendingPin, ex: &mut Exchange) -> Decision {
        if let (Some(side), Some(cookie)) = (state.side, &self.config.set_cookie) {
            let value = format!(
                "{}={}; Max-Age={}; Path={}; HttpOnly; SameSite=Lax",
                cookie.name,
                side.as_str(),
                cookie.max_age.as_duration().as_secs(),
                cookie.path
            );
            ex.add_response_header("set-cookie", &value);
        }
        Decision::Continue
    }
}

impl CanaryPolicy {
    pub fn new(config: CanaryConfig) -> CanaryPolicy {
        let base_ppm = percent_to_ppm(config.percentage);
        let ramp = config.ramp.as_ref().map(|r| RampPlan {
            start_us: r.start.0.saturating_mul(1_000_000),
            duration_us: u64::try_from(r.duration.as_duration().as_micros()).unwrap_or(u64::MAX),
            steps: u64::from(r.steps),
            from_ppm: base_ppm,
            to_ppm: percent_to_ppm(r.target),
        });
        CanaryPolicy {
            metrics: Metrics::define(&config),
            config,
            base_ppm,
            ramp,
            last_share: Cell::new(None),
        }
    }

    /// Picks the side of one request (no effects besides host reads).
    pub fn decide(&self, ex: &mut Exchange) -> Outcome {
        let c = &self.config;
        if c.override_header.enabled {
            let forced = ex
                .request_header(c.override_header.header.as_str())
                .and_then(|v| match v.trim() {
                    v if v.eq_ignore_ascii_case("always") => Some(Side::Canary),
                    v if v.eq_ignore_ascii_case("never") => Some(Side::Stable),
                    _ => None,
                });
            if let Some(side) = forced {
                return Outcome {
                    side,
                    reason: Reason::Override,
                };
            }
        }
        for (i, rule) in c.rules.iter().enumerate() {
            if self.matches(&rule.conditions, ex) {
                return Outcome {
                    side: rule.route,
                    reason: Reason::Rule(i),
                };
            }
        }
        if let Some(pin) = &c.set_cookie {
            let pinned = cookie(ex, &pin.name).and_then(|v| match v {
                "canary" => Some(Side::Canary),
                "stable" => Some(Side::Stable),
                _ => None,
            });
            if let Some(side) = pinned {
                return Outcome {
                    side,
                    reason: Reason::Pinned,
                };
            }
        }
        self.split(ex)
    }

    /// The canary share in millionths now (the ramp reads the host clock once per callback).
    pub fn share(&self, ex: &mut Exchange) -> u64 {
        let share = match &self.ramp {
            Some(plan) => plan.share_at(ex.now()),
            None => self.base_ppm,
        };
        if self.last_share.get() != Some(share) {
            self.last_share.set(Some(share));
            self.metrics.share.record(share);
        }
        share
    }

    fn split(&self, ex: &mut Exchange) -> Outcome {
        let share = self.share(ex);
        let salt = self.config.hash_salt.as_str();
        let sticky = self
            .config
            .effective_sticky_key()
            .and_then(|k| key_value(ex, k));
        let (b, reason) = match sticky {
            Some(key) => (bucket(salt, key.as_bytes()), Reason::Split),
            None => {
                let b = match ex.request_id() {
                    Some(id) => bucket(salt, id.as_bytes()),
                    // No request id either: the clock's sub-second part is as good as random here.
                    None => u64::from(ex.now().subsec_nanos()) % BUCKETS,
                };
                (b, Reason::Random)
            }
        };
        let side = if b < share {
            Side::Canary
        } else {
            Side::Stable
        };
        Outcome { side, reason }
    }

    fn matches(&self, cond: &Conditions, ex: &mut Exchange) -> bool {
        if let Some(m) = &cond.header {
            if !value_matches(m, ex.request_header(&m.name)) {
                return false;
            }
        }
        if let Some(m) = &cond.cookie {
            if !value_matches(m, cookie(ex, &m.name)) {
                return false;
            }
        }
        if let Some(m) = &cond.query {
            if !value_matches(m, ex.query_param(&m.name)) {
                return false;
            }
        }
        if let Some(cidrs) = &cond.client_ip {
            match ex.client_ip() {
                Some(ip) if cidrs.iter().any(|c| c.contains(ip)) => {}
                _ => return false,
            }
        }
        if let Some(prefix) = &cond.uid_prefix {
            let uid = self.config.identity.as_ref().and_then(|k| key_value(ex, k));
            if !uid.is_some_and(|u| u.starts_with(prefix.as_str())) {
                return false;
            }
        }
        true
    }
}

fn value_matches(m: &ValueMatch, value: Option<&str>) -> bool {
    if let Some(want) = m.present {
        return value.is_some() == want;
    }
    let Some(value) = value else {
        return false;
    };
    if let Some(eq) = &m.equals {
        return value == eq;
    }
    if let Some(prefix) = &m.prefix {
        return value.starts_with(prefix.as_str());
    }
    if let Some(re) = &m.regex {
        return re.0.is_match(value);
    }
    false
}

/// The value of a key source in this request (`None` when absent or empty).
fn key_value(ex: &mut Exchange, key: &KeySource) -> Option<String> {
    let value = if let Some(h) = &key.header {
        ex.request_header(h.as_str()).map(str::to_owned)
    } else if let Some(name) = &key.cookie {
        cookie(ex, name).map(str::to_owned)
    } else if key.client_ip == Some(true) {
        ex.client_ip().map(|ip| ip.to_string())
    } else {
        None
    };
    value.filter(|v| !v.is_empty())
}

/// The first cookie called `name` in the `cookie` header (`a=1; b=2`); values keep their quotes.
fn cookie<'a>(ex: &'a mut Exchange, name: &str) -> Option<&'a str> {
    ex.request_header("cookie")?.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::FakeHost;
    use std::time::Duration;

    fn policy(json: &str) -> CanaryPolicy {
        CanaryPolicy::configure(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    /// Runs request and response callbacks; returns the host for inspection.
    fn run(p: &CanaryPolicy, host: FakeHost) -> FakeHost {
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = PendingPin::default();
        assert_eq!(
            p.on_request_headers(&mut state, &mut ex),
            Decision::Continue
        );
        ex.new_callback();
        assert_eq!(
            p.on_response_headers(&mut state, &mut ex),
            Decision::Continue
        );
        host
    }

    fn decide(p: &CanaryPolicy, host: FakeHost) -> Outcome {
        p.decide(&mut Exchange::new(Box::new(host)))
    }

    fn req() -> FakeHost {
        FakeHost::request("GET", "/api?beta=1")
            .with_property(&["source", "address"], b"10.1.2.3:5555")
    }

    const SEED: &str = r#"{"identity":{"header":"x-user-id"},"percentage":5,
        "rules":[{"name":"uid_prefix_abc","match":{"uid_prefix":"abc"},"route":"canary"}]}"#;

    #[test]
    fn uid_prefix_users_always_go_to_canary() {
        let p = policy(SEED);
        for uid in ["abc", "abc-1", "abcdef", "abc/../x"] {
            let o = decide(&p, req().with_header("x-user-id", uid));
            assert_eq!(
                o,
                Outcome {
                    side: Side::Canary,
                    reason: Reason::Rule(0)
                },
                "{uid}"
            );
        }
        for uid in ["ab", "xabc", "ABC1", ""] {
            let o = decide(&p, req().with_header("x-user-id", uid));
            assert_ne!(o.reason, Reason::Rule(0), "{uid}");
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = policy(
            r#"{"percentage":100,"rules":[
                {"name":"internal","match":{"client_ip":["10.0.0.0/8"],"header":{"name":"x-team","equals":"qa"}},"route":"stable"},
                {"name":"beta_cookie","match":{"cookie":{"name":"beta","equals":"yes"}},"route":"canary"},
                {"name":"beta_query","match":{"query":{"name":"beta","prefix":"1"}},"route":"stable"},
                {"name":"mobile","match":{"header":{"name":"user-agent","regex":"(?i)^okhttp/"}},"route":"canary"},
                {"name":"debug","match":{"header":{"name":"x-debug","present":true}},"route":"stable"}]}"#,
        );
        let cases: Vec<(FakeHost, Outcome)> = vec![
            // all conditions of rule 0 hold
            (
                req()
                    .with_header("x-team", "qa")
                    .with_header("cookie", "beta=yes"),
                Outcome {
                    side: Side::Stable,
                    reason: Reason::Rule(0),
                },
            ),
            // rule 0 needs both: the address alone is not enough
            (
                req().with_header("cookie", "a=1; beta=yes"),
                Outcome {
                    side: Side::Canary,
                    reason: Reason::Rule(1),
                },
            ),
            (
                req(),
                Outcome {
                    side: Side::Stable,
                    reason: Reason::Rule(2),
                },
            ),
            (
                FakeHost::request("GET", "/").with_header("user-agent", "OkHttp/4.9"),
                Outcome {
                    side: Side::Canary,
                    reason: Reason::Rule(3),
                },
            ),
            (
                FakeHost::request("GET", "/").with_header("x-debug", ""),
                Outcome {
                    side: Side::Stable,
                    reason: Reason::Rule(4),
                },
            ),
            // nothing matched: 100% split
            (
                FakeHost::request("GET", "/?beta=0").with_header("cookie", "beta=no"),
                Outcome {
                    side: Side::Canary,
                    reason: Reason::Random,
                },
            ),
        ];
        for (i, (host, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(&p, host), want, "case {i}");
        }
    }

    #[test]
    fn absent_header_matches_only_present_false() {
        let m = |json: &str| -> ValueMatch { serde_json::from_str(json).unwrap() };
        assert!(value_matches(&m(r#"{"name":"x","present":false}"#), None));
        assert!(!value_matches(
            &m(r#"{"name":"x","present":false}"#),
            Some("")
        ));
        assert!(!value_matches(&m(r#"{"name":"x","equals":""}"#), None));
        assert!(!value_matches(&m(r#"{"name":"x","prefix":""}"#), None));
        assert!(value_matches(&m(r#"{"name":"x","prefix":""}"#), Some("v")));
    }

    #[test]
    fn split_of_100_000_synthetic_users_is_within_half_a_point() {
        for percent in [0.5, 5.0, 12.5, 50.0, 99.0] {
            let p = policy(&format!(
                r#"{{"sticky_key":{{"header":"x-user-id"}},"percentage":{percent}}}"#
            ));
            let share = p.base_ppm;
            let canary = (0..100_000)
                .filter(|i| {
                    let key = format!("user-{i}");
                    bucket(&p.config.hash_salt, key.as_bytes()) < share
                })
                .count();
            let got = canary as f64 / 1000.0;
            assert!((got - percent).abs() <= 0.5, "{percent}%: got {got}%");
        }
    }

    #[test]
    fn split_through_the_policy_matches_the_target_and_is_sticky() {
        let p = policy(SEED);
        let mut canary = 0;
        for i in 0..2000 {
            let host = || req().with_header("x-user-id", &format!("u{i}"));
            let first = decide(&p, host());
            assert_eq!(first.reason, Reason::Split);
            for _ in 0..2 {
                assert_eq!(decide(&p, host()), first, "user u{i} changed side");
            }
            if first.side == Side::Canary {
                canary += 1;
            }
        }
        // 5% of 2000 = 100; binomial σ ≈ 9.7, so ±40 is over 4σ.
        assert!((60..=140).contains(&canary), "{canary}");
    }

    #[test]
    fn zero_and_full_percentages_send_everyone_to_one_side() {
        for (percent, side) in [(0, Side::Stable), (100, Side::Canary)] {
            let p = policy(&format!(
                r#"{{"sticky_key":{{"client_ip":true}},"percentage":{percent}}}"#
            ));
            for i in 0..200 {
                let ip = format!("192.0.2.{}:1", i % 256);
                let host = FakeHost::request("GET", "/")
                    .with_property(&["source", "address"], ip.as_bytes());
                assert_eq!(decide(&p, host).side, side);
            }
        }
    }

    #[test]
    fn without_a_sticky_key_the_request_id_decides() {
        let p = policy(r#"{"sticky_key":{"cookie":"uid"},"percentage":50}"#);
        let mut sides = [0, 0];
        for i in 0..400 {
            let host =
                FakeHost::request("GET", "/").with_header("x-request-id", &format!("rid-{i}"));
            let o = decide(&p, host.clone());
            assert_eq!(o.reason, Reason::Random);
            // the same request id gives the same answer (deterministic), different ids spread
            assert_eq!(decide(&p, host).side, o.side);
            sides[usize::from(o.side == Side::Canary)] += 1;
        }
        assert!(sides[0] > 120 && sides[1] > 120, "{sides:?}");
    }

    #[test]
    fn cookie_identity_and_client_ip_keys_are_read() {
        let p = policy(
            r#"{"identity":{"cookie":"uid"},"rules":[{"match":{"uid_prefix":"abc"},"route":"canary"}]}"#,
        );
        let o = decide(&p, req().with_header("cookie", "theme=dark; uid=abc42"));
        assert_eq!(o.reason, Reason::Rule(0));
        let o = decide(&p, req().with_header("cookie", "uid=zzz; other=abc"));
        assert_eq!(
            o,
            Outcome {
                side: Side::Stable,
                reason: Reason::Split
            }
        );
    }

    #[test]
    fn override_header_forces_a_side_unless_disabled() {
        let p = policy(SEED);
        let h = || req().with_header("x-user-id", "abc1");
        assert_eq!(
            decide(&p, h().with_header("x-canary", "never")),
            Outcome {
                side: Side::Stable,
                reason: Reason::Override
            }
        );
        assert_eq!(
            decide(
                &p,
                FakeHost::request("GET", "/").with_header("x-canary", " Always ")
            ),
            Outcome {
                side: Side::Canary,
                reason: Reason::Override
            }
        );
        // any other value (e.g. a spoofed tag) is ignored and later replaced
        assert_eq!(
            decide(&p, h().with_header("x-canary", "true")).reason,
            Reason::Rule(0)
        );
        let off = policy(r#"{"override_header":{"enabled":false},"percentage":0}"#);
        let o = decide(
            &off,
            FakeHost::request("GET", "/").with_header("x-canary", "always"),
        );
        assert_eq!(o.side, Side::Stable);
    }

    #[test]
    fn tag_header_replaces_a_client_value_and_kong_target_is_set_for_canary_only() {
        props::reset_flavor();
        let p = policy(
            r#"{"rules":[{"match":{"header":{"name":"x-beta","equals":"1"}},"route":"canary"}],
                "tag_header":"x-route-to","canary_value":"green","stable_value":"blue",
                "canary_target":"canary.internal:8080"}"#,
        );
        let host = run(
            &p,
            req()
                .with_header("x-beta", "1")
                .with_header("x-route-to", "blue"),
        );
        assert_eq!(host.header_values("x-route-to"), vec!["green"]);
        assert_eq!(
            host.property_value(&["kong", "service", "target"])
                .as_deref(),
            Some(&b"canary.internal:8080"[..])
        );
        let host = run(&p, req().with_header("x-route-to", "green"));
        assert_eq!(host.header_values("x-route-to"), vec!["blue"]);
        assert_eq!(host.property_value(&["kong", "service", "target"]), None);
    }

    #[test]
    fn pin_cookie_is_set_for_percentage_decisions_and_honoured_after_rules() {
        let p = policy(
            r#"{"percentage":100,"set_cookie":{"name":"cn","max_age":"1h"},
                "rules":[{"match":{"header":{"name":"x-qa","present":true}},"route":"stable"}]}"#,
        );
        let host = run(&p, FakeHost::request("GET", "/"));
        assert_eq!(
            host.response_header_value("set-cookie").as_deref(),
            Some("cn=canary; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax")
        );
        // a pinned user keeps their side even though the split would say canary
        let pinned = FakeHost::request("GET", "/").with_header("cookie", "cn=stable");
        assert_eq!(
            decide(&p, pinned.clone()),
            Outcome {
                side: Side::Stable,
                reason: Reason::Pinned
            }
        );
        assert_eq!(run(&p, pinned).response_header_value("set-cookie"), None);
        // rules still win over the pin, and rule decisions are not pinned
        let qa = FakeHost::request("GET", "/")
            .with_header("x-qa", "1")
            .with_header("cookie", "cn=canary");
        assert_eq!(decide(&p, qa.clone()).reason, Reason::Rule(0));
        assert_eq!(run(&p, qa).response_header_value("set-cookie"), None);
        // a garbage pin is ignored
        let junk = FakeHost::request("GET", "/").with_header("cookie", "cn=maybe");
        assert_eq!(decide(&p, junk).reason, Reason::Random);
    }

    #[test]
    fn ramp_raises_the_share_with_the_injected_clock() {
        // 0% → 100% in 4 steps over 400 s starting at t=1000 s.
        let p = policy(
            r#"{"sticky_key":{"header":"x-user-id"},"percentage":0,
                "ramp":{"start":1000,"duration":"400s","steps":4}}"#,
        );
        let share_at = |secs: u64| {
            let mut ex = Exchange::new(Box::new(
                FakeHost::request("GET", "/").at(Duration::from_secs(secs)),
            ));
            p.share(&mut ex)
        };
        let cases = [
            (0, 0),
            (1099, 0),
            (1100, 250_000),
            (1250, 500_000),
            (1399, 750_000),
            (1400, 1_000_000),
        ];
        for (secs, ppm) in cases {
            assert_eq!(share_at(secs), ppm, "at {secs}s");
        }
        // users who were in canary at a lower share stay in canary as it grows
        let canary_at = |secs: u64| -> Vec<usize> {
            (0..500)
                .filter(|i| {
                    let host = FakeHost::request("GET", "/")
                        .with_header("x-user-id", &format!("user-{i}"))
                        .at(Duration::from_secs(secs));
                    decide(&p, host).side == Side::Canary
                })
                .collect()
        };
        let (early, later) = (canary_at(1100), canary_at(1250));
        assert!(
            early.len() < later.len(),
            "{} !< {}",
            early.len(),
            later.len()
        );
        assert!(early.iter().all(|u| later.contains(u)));
    }

    #[test]
    fn ramp_start_accepts_utc_text() {
        let p = policy(
            r#"{"ramp":{"start":"2026-12-01T09:00:00Z","duration":"1h","steps":2},"percentage":10}"#,
        );
        let at = |secs: u64| {
            p.share(&mut Exchange::new(Box::new(
                FakeHost::request("GET", "/").at(Duration::from_secs(secs)),
            )))
        };
        assert_eq!(at(1_796_115_599), 100_000);
        assert_eq!(at(1_796_115_600 + 1800), 550_000);
        assert_eq!(at(1_796_115_600 + 3600), 1_000_000);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn decisions_are_counted_per_side_and_per_rule() {
        let p = policy(
            r#"{"percentage":0,"rules":[{"name":"beta","match":{"header":{"name":"x-beta","present":true}},"route":"canary"}]}"#,
        );
        let read = |n: &str| portcullis_common::metrics::value(n).unwrap_or(0);
        let before = [
            read("portcullis_canary_canary_total"),
            read("portcullis_canary_stable_total"),
            read("portcullis_canary_rule_beta_total"),
            read("portcullis_canary_random_total"),
            read("portcullis_canary_override_total"),
        ];
        run(&p, FakeHost::request("GET", "/").with_header("x-beta", "1"));
        run(&p, FakeHost::request("GET", "/").with_header("x-beta", "1"));
        run(&p, FakeHost::request("GET", "/"));
        run(
            &p,
            FakeHost::request("GET", "/").with_header("x-canary", "always"),
        );
        let after = [
            read("portcullis_canary_canary_total"),
            read("portcullis_canary_stable_total"),
            read("portcullis_canary_rule_beta_total"),
            read("portcullis_canary_random_total"),
            read("portcullis_canary_override_total"),
        ];
        let delta: Vec<i64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(delta, vec![3, 1, 2, 1, 1]);
        assert_eq!(
            portcullis_common::metrics::value("portcullis_canary_share_ppm"),
            Some(0)
        );
    }

    #[test]
    fn each_request_value_is_read_from_the_host_once() {
        let p = policy(
            r#"{"identity":{"cookie":"uid"},"percentage":50,"rules":[
                {"match":{"uid_prefix":"abc"},"route":"canary"},
                {"match":{"cookie":{"name":"beta","present":true}},"route":"canary"}]}"#,
        );
        let host = FakeHost::request("GET", "/").with_header("cookie", "uid=zz");
        run(&p, host.clone());
        // override header and cookie come from one read of all headers; the tag header is written, not read
        assert_eq!(host.state.borrow().header_reads, 1);
    }

    #[test]
    fn hostile_cookie_headers_do_not_break_parsing() {
        let p = policy(
            r#"{"identity":{"cookie":"uid"},"rules":[{"match":{"uid_prefix":"a"},"route":"canary"}]}"#,
        );
        for c in [
            ";;;",
            "=",
            "uid",
            "uid=",
            "=a; uid",
            "uid==a",
            &"x=y;".repeat(2000),
        ] {
            let o = decide(&p, FakeHost::request("GET", "/").with_header("cookie", c));
            assert_ne!(o.reason, Reason::Rule(0), "{c:.20}");
        }
    }
}
