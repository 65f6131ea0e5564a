//! Properties of the breaker state machine over arbitrary event sequences, limits and (skewed) clocks:
//! - while open and before its deadline, nothing is admitted; a deadline is never further than the longest
//!   open time from the admitting clock;
//! - half-open admits at most `half_open_requests` probes at once;
//! - a closed breaker admits everything, and opens only when a failure of the current period completes;
//! - it closes only from half-open, after `success_to_close` probe successes;
//! - a late answer from an earlier period changes nothing;
//! - the stored record round-trips through encode/decode and window failures never exceed its requests.
#![cfg(not(target_arch = "wasm32"))]

use portcullis_circuit_breaker::machine::{Admission, Breaker, Limits, Outcome, Phase, Ticket};
use proptest::prelude::*;

fn limits() -> impl Strategy<Value = Limits> {
    (
        0u16..5,
        prop::option::of(0.1f64..1.0),
        1u32..10,
        1u64..5_000,
        1u64..3_000,
        0u64..20_000,
        1u16..4,
        1u16..4,
        1u64..5_000,
    )
        .prop_map(
            |(cf, ratio, min, window, open, max_open, hor, stc, probe)| Limits {
                // at least one trip rule
                consecutive_failures: if ratio.is_none() { cf.max(1) } else { cf },
                failure_ratio: ratio,
                min_requests: min,
                window_ms: window,
                open_ms: open,
                max_open_ms: max_open,
                half_open_requests: hor,
                success_to_close: stc,
                probe_timeout_ms: probe,
            },
        )
}

#[derive(Debug, Clone)]
enum Event {
    /// A request arrives after `dt` ms (negative: a worker whose clock is behind).
    Arrive { dt: i64 },
    /// The `nth` outstanding request completes.
    Complete { nth: usize, outcome: Outcome },
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            (-500i64..4_000).prop_map(|dt| Event::Arrive { dt }),
            (
                0usize..8,
                prop_oneof![
                    3 => Just(Outcome::Failure),
                    3 => Just(Outcome::Success),
                    1 => Just(Outcome::Neutral)
                ]
            )
                .prop_map(|(nth, outcome)| Event::Complete { nth, outcome }),
        ],
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_keeps_its_invariants(limits in limits(), events in events(), start in 0u64..1u64 << 45) {
        let longest_open = limits.max_open_ms.max(limits.open_ms);
        let mut b = Breaker::default();
        let mut now = start;
        let mut outstanding: Vec<Ticket> = Vec::new();
        for e in events {
            match e {
                Event::Arrive { dt } => {
                    now = now.saturating_add_signed(dt);
                    let before = b.clone();
                    let (next, admission) = b.admit(now, &limits);
                    match (before.phase, admission) {
                        (Phase::Closed, a) => prop_assert!(matches!(a, Admission::Allow(Ticket::Normal { .. })), "closed breaker answered {:?}", a),
                        (Phase::Open, Admission::Allow(_)) => {
                            let until = before.open_until.min(now.saturating_add(longest_open));
                            prop_assert!(now >= until, "admitted at {} while open until {}", now, until);
                            prop_assert_eq!(next.phase, Phase::HalfOpen);
                        }
                        (_, Admission::Reject { retry_after_s, .. }) => prop_assert!(retry_after_s >= 1),
                        (Phase::HalfOpen, Admission::Allow(t)) => prop_assert!(matches!(t, Ticket::Probe { .. }), "half-open ticket {:?}", t),
                    }
                    if next.phase == Phase::Open {
                        prop_assert!(next.open_until <= now.saturating_add(longest_open));
                    }
                    if next.phase == Phase::HalfOpen {
                        prop_assert!(next.in_flight <= limits.half_open_requests,
                            "{} probes in flight, limit {}", next.in_flight, limits.half_open_requests);
                    }
                    if let Admission::Allow(t) = admission {
                        outstanding.push(t);
                    }
                    b = next;
                }
                Event::Complete { nth, outcome } => {
                    if outstanding.is_empty() {
                        continue;
                    }
                    let ticket = outstanding.remove(nth % outstanding.len());
                    let before = b.clone();
                    let next = b.complete(ticket, outcome, now, &limits);
                    let generation = match ticket {
                        Ticket::Normal { generation } | Ticket::Probe { generation } => generation,
                    };
                    if generation != before.generation {
                        prop_assert_eq!(&next, &before, "a late answer changed the breaker");
                    }
                    match (before.phase, next.phase) {
                        (Phase::Closed, Phase::Open) | (Phase::HalfOpen, Phase::Open) => {
                            prop_assert_eq!(outcome, Outcome::Failure);
                            prop_assert_eq!(next.generation, before.generation.wrapping_add(1));
                            prop_assert!(next.open_until > now);
                        }
                        (Phase::HalfOpen, Phase::Closed) => {
                            prop_assert_eq!(outcome, Outcome::Success);
                            prop_assert!(before.successes + 1 >= limits.success_to_close);
                        }
                        (from, to) => prop_assert_eq!(from, to, "unexpected transition on completion"),
                    }
                    if before.phase == Phase::Closed && next.phase == Phase::Open && limits.failure_ratio.is_none() {
                        prop_assert!(before.consecutive + 1 >= limits.consecutive_failures);
                    }
                    b = next;
                }
            }
            let (total, failures) = b.window_totals();
            prop_assert!(failures <= total);
            prop_assert_eq!(Breaker::decode(&b.encode()), Some(b.clone()));
        }
    }

    #[test]
    fn consecutive_failures_trip_exactly_at_the_threshold(k in 1u16..20, start in 0u64..1u64 << 40) {
        let limits = Limits {
            consecutive_failures: k,
            failure_ratio: None,
            min_requests: 1,
            window_ms: 10_000,
            open_ms: 1_000,
            max_open_ms: 8_000,
            half_open_requests: 1,
            success_to_close: 1,
            probe_timeout_ms: 1_000,
        };
        let mut b = Breaker::default();
        for i in 1..=k {
            let (next, a) = b.admit(start, &limits);
            let Admission::Allow(t) = a else {
                return Err(TestCaseError::fail("a closed breaker rejected"));
            };
            b = next.complete(t, Outcome::Failure, start, &limits);
            prop_assert_eq!(b.phase == Phase::Open, i == k, "after {} failures of {}", i, k);
        }
    }
}
