//! Property: a limit never admits more than it allows, for any interleaving of requests from several workers
//! sharing one store, any clock sequence (each worker's clock is skewed from the others, so the store sees time
//! go backwards), injected CAS races, and a second limit that rejects (and refunds) some of the requests the
//! first one counted.
//! - fixed and sliding window: at most `requests` admitted in any aligned window, where a request whose clock
//!   is behind the stored window counts in the stored window (the documented skew rule: never a new window);
//! - token bucket: at most `burst + rate × elapsed / per` admitted over the whole run.
#![cfg(not(target_arch = "wasm32"))]

use portcullis_common::template::Template;
use portcullis_common::testing::MemoryStore;
use portcullis_rate_limit::algo::Algorithm;
use portcullis_rate_limit::config::{Limit, OnMissingKey, OnStoreError};
use portcullis_rate_limit::core::{Key, Limiter};
use proptest::prelude::*;
use std::collections::HashMap;

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        (1u64..5, 1u64..2_000_000, 1u64..6).prop_map(|(rate, per_us, burst)| {
            Algorithm::TokenBucket {
                rate,
                per_us,
                burst,
            }
        }),
        (1u64..6, 1u64..2_000_000).prop_map(|(requests, window_us)| Algorithm::FixedWindow {
            requests,
            window_us
        }),
        (1u64..6, 1u64..2_000_000).prop_map(|(requests, window_us)| {
            Algorithm::SlidingWindow {
                requests,
                window_us,
            }
        }),
    ]
}

fn limit(name: &str, algorithm: Algorithm) -> Limit {
    Limit {
        name: name.to_string(),
        key: Template::parse("k").expect("constant template"),
        on_missing_key: OnMissingKey::Skip,
        algorithm,
    }
}

#[derive(Debug, Clone)]
struct Request {
    /// Which worker's clock: each worker runs its own clock, skewed from the others.
    worker: usize,
    /// How far this worker's clock moves before the request (µs).
    advance: u64,
    /// CAS mismatches injected before the check (another worker racing).
    races: usize,
    /// Whether the second limit (shared by all requests) applies to this one.
    second: bool,
}

fn requests() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec(
        (
            0usize..3,
            prop_oneof![Just(0u64), 0u64..300_000, 0u64..3_000_000],
            prop_oneof![8 => Just(0usize), 1 => 0usize..40],
            any::<bool>(),
        )
            .prop_map(|(worker, advance, races, second)| Request {
                worker,
                advance,
                races,
                second,
            }),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_limit_never_admits_more_than_it_allows(
        first in algorithm(),
        second in algorithm(),
        skews in prop::array::uniform3(0u64..5_000_000),
        start in 1u64 << 40..1u64 << 50,
        reqs in requests(),
    ) {
        let limiter = Limiter::new(vec![limit("a", first), limit("b", second)], "p", 64, OnStoreError::Deny);
        let mut store = MemoryStore::envoy();
        let mut clocks = skews.map(|s| start + s);
        let (mut lowest, mut highest) = (u64::MAX, 0u64);
        let mut admitted: Vec<u64> = Vec::new();
        // the latest instant limit `a` counted a request at: its stored window never moves backwards
        let mut stored = 0u64;
        for r in reqs {
            clocks[r.worker] += r.advance;
            let now = clocks[r.worker];
            store.inject_cas_mismatches(r.races);
            let keys = [
                Key::Value("k".into()),
                if r.second { Key::Value("k".into()) } else { Key::Skip },
            ];
            let verdict = limiter.check(&keys, now, &mut store);
            lowest = lowest.min(now);
            highest = highest.max(now);
            let counted_by_a = matches!(
                verdict.results.first(),
                Some(portcullis_rate_limit::core::LimitResult::Checked(o)) if o.allowed
            );
            if counted_by_a {
                stored = stored.max(now);
            }
            if verdict.rejection.is_none() {
                admitted.push(stored.max(now));
            }
        }
        match first {
            Algorithm::TokenBucket { rate, per_us, burst } => {
                let elapsed = u128::from(highest.saturating_sub(lowest));
                let refill = (u128::from(rate) * elapsed).div_ceil(u128::from(per_us));
                let bound = u128::from(burst) + refill;
                prop_assert!(admitted.len() as u128 <= bound,
                    "token bucket admitted {} > {} (burst {}, rate {}/{}us over {}us)",
                    admitted.len(), bound, burst, rate, per_us, elapsed);
            }
            Algorithm::FixedWindow { requests, window_us }
            | Algorithm::SlidingWindow { requests, window_us } => {
                let mut per_window: HashMap<u64, u64> = HashMap::new();
                for t in &admitted {
                    *per_window.entry(t / window_us).or_default() += 1;
                }
                for (w, n) in per_window {
                    prop_assert!(n <= requests, "{:?}: window {} admitted {} > {}", first, w, n, requests);
                }
            }
        }
    }
}
