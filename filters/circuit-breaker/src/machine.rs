//! The breaker state machine: a pure function of (state, event, now, limits), with no host access, so every
//! transition is unit-tested with an injected clock. [`Breaker`] is what one key stores in shared data
//! (a fixed 78-byte little-endian record, see [`Breaker::encode`]).
//!
//! ```text
//!            failure trips a rule                 open_for elapsed, a request arrives
//!  CLOSED ─────────────────────────► OPEN ─────────────────────────────────────► HALF-OPEN
//!    ▲                                ▲                                             │  │
//!    │                                └───────── any probe fails (open time ×2) ────┘  │
//!    └──────────────────────── success_to_close probes succeed ────────────────────────┘
//! ```
//!
//! Clock skew between workers: stored instants come from whichever worker wrote last, so `now` may be earlier
//! than them. Every comparison is saturating, the ratio window never moves backwards (an older `now` counts
//! in the newest bucket), and an open deadline further ahead than `max_open_for` is clamped.

/// Trip and recovery rules, validated from the config (all durations in milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// 0 = rule disabled.
    pub consecutive_failures: u16,
    pub failure_ratio: Option<f64>,
    pub min_requests: u32,
    pub window_ms: u64,
    pub open_ms: u64,
    pub max_open_ms: u64,
    pub half_open_requests: u16,
    pub success_to_close: u16,
    pub probe_timeout_ms: u64,
}

/// Buckets of the ratio window.
pub const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half-open",
        }
    }
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u64 {
        match self {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        }
    }
}

/// One breaker's shared state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Breaker {
    pub phase: Phase,
    /// Incremented on every trip; outcomes carry the generation they were admitted in, so a late answer
    /// from an earlier period can never close or release a later one.
    pub generation: u32,
    /// Trips since the breaker was last closed (drives the growing open time).
    pub trips: u16,
    /// Failures in a row while closed.
    pub consecutive: u16,
    /// Half-open probes admitted and not yet completed.
    pub in_flight: u16,
    /// Successful probes in the current half-open period.
    pub successes: u16,
    /// Open: when probes may start (ms since epoch).
    pub open_until: u64,
    /// Half-open: when the newest probe lease expires; past it, `in_flight` is forgotten.
    pub lease_until: u64,
    /// Index (time / bucket width) of the newest ratio bucket.
    pub head: u64,
    /// (requests, failures) per bucket; bucket `i` holds index `i mod BUCKETS`.
    pub buckets: [(u16, u16); BUCKETS],
}

/// How an admitted request takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// Admitted while closed: its outcome feeds the trip rules.
    Normal { generation: u32 },
    /// Admitted as a half-open probe: its outcome closes or re-opens the breaker, and frees the slot.
    Probe { generation: u32 },
}

/// The answer to a request arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow(Ticket),
    /// Reject; the client may retry after this many whole seconds (≥ 1).
    Reject {
        retry_after_s: u64,
        phase: Phase,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// No verdict (the client went away before a response): only frees a probe slot.
    Neutral,
}

/// A state change, reported once by the worker whose write made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    /// For a change to open: how long it stays open.
    pub open_ms: u64,
}

fn transition(from: &Breaker, to: &Breaker, now: u64) -> Option<Transition> {
    (from.phase != to.phase).then(|| Transition {
        from: from.phase,
        to: to.phase,
        open_ms: if to.phase == Phase::Open {
            to.open_until.saturating_sub(now)
        } else {
            0
        },
    })
}

impl Limits {
    fn bucket_ms(&self) -> u64 {
        (self.window_ms / BUCKETS as u64).max(1)
    }

    /// Open time of the `trips`-th trip in a row: open_ms × 2^(trips-1), capped at max_open_ms.
    pub fn open_time(&self, trips: u16) -> u64 {
        let doublings = u32::from(trips.saturating_sub(1)).min(40);
        self.open_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_open_ms.max(self.open_ms))
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl Breaker {
    /// A request arrives at `now`. Returns the new state (possibly unchanged) and the admission.
    pub fn admit(&self, now: u64, limits: &Limits) -> (Breaker, Admission) {
        let mut next = self.clone();
        match self.phase {
            Phase::Closed => (
                next,
                Admission::Allow(Ticket::Normal {
                    generation: self.generation,
                }),
            ),
            Phase::Open => {
                // A deadline further away than the longest open time comes from a skewed or reset clock:
                // it is clamped in the stored record too, so it runs out instead of moving with `now`.
                let until = self
                    .open_until
                    .min(now.saturating_add(limits.max_open_ms.max(limits.open_ms)));
                next.open_until = until;
                if now < until {
                    return (
                        next,
                        Admission::Reject {
                            retry_after_s: ceil_secs(until - now),
                            phase: Phase::Open,
                        },
                    );
                }
                next.phase = Phase::HalfOpen;
                next.in_flight = 1;
                next.successes = 0;
                next.lease_until = now.saturating_add(limits.probe_timeout_ms);
                (
                    next,
                    Admission::Allow(Ticket::Probe {
                        generation: self.generation,
                    }),
                )
            }
            Phase::HalfOpen => {
                // a lease beyond probe_timeout from now was written with a clock running ahead: clamp it
                next.lease_until = self
                    .lease_until
                    .min(now.saturating_add(limits.probe_timeout_ms));
                if now >= next.lease_until {
                    // every lease ran out: those probes are lost (reset, crashed worker, lost write)
                    next.in_flight = 0;
                }
                if next.in_flight >= limits.half_open_requests {
                    // a probe usually answers soon (its lease is only the worst case): retry in a second
                    return (
                        next,
                        Admission::Reject {
                            retry_after_s: 1,
                            phase: Phase::HalfOpen,
                        },
                    );
                }
                next.in_flight += 1;
                next.lease_until = now.saturating_add(limits.probe_timeout_ms);
                (
                    next,
                    Admission::Allow(Ticket::Probe {
                        generation: self.generation,
                    }),
                )
            }
        }
    }

    /// A request admitted with `ticket` completed with `outcome` at `now`.
    pub fn complete(&self, ticket: Ticket, outcome: Outcome, now: u64, limits: &Limits) -> Breaker {
        let mut next = self.clone();
        match (self.phase, ticket) {
            (Phase::Closed, Ticket::Normal { generation }) if generation == self.generation => {
                if outcome == Outcome::Neutral {
                    return next;
                }
                let failed = outcome == Outcome::Failure;
                // the window is kept only when the ratio rule needs it: without it, healthy traffic leaves the
                // record unchanged and costs no shared-data write
                if limits.failure_ratio.is_some() {
                    next.record(now, failed, limits);
                }
                if failed {
                    next.consecutive = next.consecutive.saturating_add(1);
                    if next.should_trip(limits) {
                        next.trip(now, limits);
                    }
                } else {
                    next.consecutive = 0;
                }
                next
            }
            (Phase::HalfOpen, Ticket::Probe { generation }) if generation == self.generation => {
                next.in_flight = next.in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Neutral => {}
                    Outcome::Failure => next.trip(now, limits),
                    Outcome::Success => {
                        next.successes = next.successes.saturating_add(1);
                        if next.successes >= limits.success_to_close {
                            next = Breaker {
                                generation: self.generation,
                                head: self.head,
                                ..Breaker::default()
                            };
                        }
                    }
                }
                next
            }
            // Answers from an earlier period (admitted before a trip, or probes of a half-open period that
            // already ended) say nothing about the current one.
            _ => next,
        }
    }

    fn trip(&mut self, now: u64, limits: &Limits) {
        let trips = self.trips.saturating_add(1);
        *self = Breaker {
            phase: Phase::Open,
            generation: self.generation.wrapping_add(1),
            trips,
            open_until: now.saturating_add(limits.open_time(trips)),
            head: self.head,
            ..Breaker::default()
        };
    }

    fn should_trip(&self, limits: &Limits) -> bool {
        if limits.consecutive_failures > 0 && self.consecutive >= limits.consecutive_failures {
            return true;
        }
        let Some(ratio) = limits.failure_ratio else {
            return false;
        };
        let (total, failures) = self.window_totals();
        total >= u64::from(limits.min_requests) && failures as f64 >= ratio * total as f64
    }

    /// Moves the window to `now` (never backwards) and counts one completed request.
    fn record(&mut self, now: u64, failed: bool, limits: &Limits) {
        let index = now / limits.bucket_ms();
        if index > self.head {
            let stale = (index - self.head).min(BUCKETS as u64);
            for i in 0..stale {
                if let Some(b) = self
                    .buckets
                    .get_mut(((index - i) % BUCKETS as u64) as usize)
                {
                    *b = (0, 0);
                }
            }
            self.head = index;
        }
        // an older `now` (clock skew) counts in the newest bucket
        if let Some(b) = self.buckets.get_mut((self.head % BUCKETS as u64) as usize) {
            b.0 = b.0.saturating_add(1);
            if failed {
                b.1 = b.1.saturating_add(1);
            }
        }
    }

    /// (requests, failures) in the window ending at the newest bucket.
    pub fn window_totals(&self) -> (u64, u64) {
        self.buckets.iter().fold((0, 0), |(t, f), (bt, bf)| {
            (t + u64::from(*bt), f + u64::from(*bf))
        })
    }

    /// The fixed-size record stored in shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
        out.push(self.phase.gauge() as u8);
        out.extend_from_slice(&self.generation.to_le_bytes());
        for v in [self.trips, self.consecutive, self.in_flight, self.successes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.open_until, self.lease_until, self.head] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (t, f) in self.buckets {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&f.to_le_bytes());
        }
        out
    }

    /// Decodes a record; anything malformed (other version, wrong length) reads as `None` (a fresh breaker).
    pub fn decode(bytes: &[u8]) -> Option<Breaker> {
        if bytes.len() != ENCODED_LEN || bytes.first() != Some(&VERSION) {
            return None;
        }
        let mut r = Reader { bytes, at: 1 };
        let phase = match r.u8()? {
            0 => Phase::Closed,
            1 => Phase::Open,
            2 => Phase::HalfOpen,
            _ => return None,
        };
        let mut b = Breaker {
            phase,
            generation: r.u32()?,
            trips: r.u16()?,
            consecutive: r.u16()?,
            in_flight: r.u16()?,
            successes: r.u16()?,
            open_until: r.u64()?,
            lease_until: r.u64()?,
            head: r.u64()?,
            buckets: [(0, 0); BUCKETS],
        };
        for bucket in b.buckets.iter_mut() {
            *bucket = (r.u16()?, r.u16()?);
        }
        Some(b)
    }
}

const VERSION: u8 = 1;
/// version, phase, generation, 4 × u16, 3 × u64, BUCKETS × (u16, u16).
pub const ENCODED_LEN: usize = 1 + 1 + 4 + 4 * 2 + 3 * 8 + BUCKETS * 4;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let out = self.bytes.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

/// Admission applied to a stored record (`None` = no record yet): the record to write (`None` when nothing
/// changed, so steady traffic does not write), the verdict, and the state change it made, if any.
pub fn admit_stored(
    stored: Option<&[u8]>,
    now: u64,
    limits: &Limits,
) -> (Option<Breaker>, Admission, Option<Transition>) {
    let current = stored.and_then(Breaker::decode).unwrap_or_default();
    let (next, admission) = current.admit(now, limits);
    let change = transition(&current, &next, now);
    ((next != current).then_some(next), admission, change)
}

/// Completion applied to a stored record: the record to write (`None` when unchanged) and the state change.
pub fn complete_stored(
    stored: Option<&[u8]>,
    ticket: Ticket,
    outcome: Outcome,
    now: u64,
    limits: &Limits,
) -> (Option<Breaker>, Option<Transition>) {
    let current = stored.and_then(Breaker::decode).unwrap_or_default();
    let next = current.complete(ticket, outcome, now, limits);
    let change = transition(&current, &next, now);
    ((next != current).then_some(next), change)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            consecutive_failures: 3,
            failure_ratio: None,
            min_requests: 10,
            window_ms: 10_000,
            open_ms: 5_000,
            max_open_ms: 5_000,
            half_open_requests: 1,
            success_to_close: 1,
            probe_timeout_ms: 30_000,
        }
    }

    const T0: u64 = 1_700_000_000_000;

    /// Admits a request and completes it at once with `outcome`; returns the admission.
    fn call(b: &mut Breaker, now: u64, outcome: Outcome, l: &Limits) -> Admission {
        let (next, admission) = b.admit(now, l);
        *b = next;
        if let Admission::Allow(ticket) = admission {
            *b = b.complete(ticket, outcome, now, l);
        }
        admission
    }

    fn tripped(l: &Limits) -> Breaker {
        let mut b = Breaker::default();
        for _ in 0..l.consecutive_failures {
            call(&mut b, T0, Outcome::Failure, l);
        }
        assert_eq!(b.phase, Phase::Open);
        b
    }

    fn probe(b: &mut Breaker, now: u64, l: &Limits) -> Ticket {
        let (next, admission) = b.admit(now, l);
        *b = next;
        match admission {
            Admission::Allow(t @ Ticket::Probe { .. }) => t,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[test]
    fn closed_breaker_opens_after_consecutive_failures_only() {
        let l = limits();
        let mut b = Breaker::default();
        call(&mut b, T0, Outcome::Failure, &l);
        call(&mut b, T0, Outcome::Failure, &l);
        call(&mut b, T0, Outcome::Success, &l);
        call(&mut b, T0, Outcome::Failure, &l);
        call(&mut b, T0, Outcome::Failure, &l);
        assert_eq!(b.phase, Phase::Closed, "a success resets the streak");
        call(&mut b, T0, Outcome::Failure, &l);
        assert_eq!(b.phase, Phase::Open);
        assert_eq!(b.open_until, T0 + 5_000);
        assert_eq!(b.generation, 1);
        assert_eq!(b.trips, 1);
    }

    #[test]
    fn neutral_outcomes_change_nothing_while_closed() {
        let l = limits();
        let mut b = Breaker::default();
        call(&mut b, T0, Outcome::Failure, &l);
        let before = b.clone();
        call(&mut b, T0, Outcome::Neutral, &l);
        assert_eq!(b, before);
    }

    #[test]
    fn open_breaker_rejects_with_retry_after_until_open_for_elapses() {
        let l = limits();
        let mut b = tripped(&l);
        let cases = [(0, 5), (1, 5), (1_000, 4), (4_001, 1), (4_999, 1)];
        for (after, retry) in cases {
            assert_eq!(
                call(&mut b, T0 + after, Outcome::Success, &l),
                Admission::Reject {
                    retry_after_s: retry,
                    phase: Phase::Open
                },
                "{after}ms after the trip"
            );
        }
        assert_eq!(b.phase, Phase::Open);
    }

    #[test]
    fn first_request_after_open_for_is_a_probe_and_half_opens() {
        let l = limits();
        let mut b = tripped(&l);
        let t = probe(&mut b, T0 + 5_000, &l);
        assert_eq!(t, Ticket::Probe { generation: 1 });
        assert_eq!(b.phase, Phase::HalfOpen);
        assert_eq!(b.in_flight, 1);
    }

    #[test]
    fn half_open_admits_at_most_the_configured_concurrent_probes() {
        for limit in [1u16, 2, 5] {
            let l = Limits {
                half_open_requests: limit,
                ..limits()
            };
            let mut b = tripped(&l);
            let mut tickets = Vec::new();
            for _ in 0..limit {
                tickets.push(probe(&mut b, T0 + 5_000, &l));
            }
            let (_, extra) = b.admit(T0 + 5_001, &l);
            assert!(
                matches!(
                    extra,
                    Admission::Reject {
                        phase: Phase::HalfOpen,
                        ..
                    }
                ),
                "limit {limit}: {extra:?}"
            );
            // a neutral completion frees a slot for the next probe
            b = b.complete(tickets[0], Outcome::Neutral, T0 + 5_002, &l);
            assert_eq!(b.in_flight, limit - 1);
            probe(&mut b, T0 + 5_003, &l);
        }
    }

    #[test]
    fn successful_probes_close_the_breaker_and_reset_everything() {
        let l = Limits {
            success_to_close: 2,
            half_open_requests: 2,
            ..limits()
        };
        let mut b = tripped(&l);
        let p1 = probe(&mut b, T0 + 5_000, &l);
        let p2 = probe(&mut b, T0 + 5_000, &l);
        b = b.complete(p1, Outcome::Success, T0 + 5_010, &l);
        assert_eq!(b.phase, Phase::HalfOpen, "one success of two");
        b = b.complete(p2, Outcome::Success, T0 + 5_020, &l);
        assert_eq!(b.phase, Phase::Closed);
        assert_eq!((b.trips, b.consecutive, b.in_flight), (0, 0, 0));
        assert_eq!(b.generation, 1, "generation only moves on trips");
    }

    #[test]
    fn a_failed_probe_reopens_with_a_new_generation() {
        let l = limits();
        let mut b = tripped(&l);
        let p = probe(&mut b, T0 + 5_000, &l);
        b = b.complete(p, Outcome::Failure, T0 + 5_100, &l);
        assert_eq!(b.phase, Phase::Open);
        assert_eq!(b.generation, 2);
        assert_eq!(b.open_until, T0 + 10_100);
    }

    #[test]
    fn open_time_doubles_with_repeated_trips_up_to_the_maximum() {
        let l = Limits {
            open_ms: 1_000,
            max_open_ms: 5_000,
            ..limits()
        };
        let mut b = tripped(&l);
        let mut now = T0;
        let mut open_times = vec![b.open_until - now];
        for _ in 0..4 {
            now = b.open_until;
            let p = probe(&mut b, now, &l);
            b = b.complete(p, Outcome::Failure, now, &l);
            open_times.push(b.open_until - now);
        }
        assert_eq!(open_times, vec![1_000, 2_000, 4_000, 5_000, 5_000]);
        // a close resets the growth
        now = b.open_until;
        let p = probe(&mut b, now, &l);
        b = b.complete(p, Outcome::Success, now, &l);
        for _ in 0..3 {
            call(&mut b, now, Outcome::Failure, &l);
        }
        assert_eq!(b.open_until - now, 1_000);
        assert_eq!(l.open_time(u16::MAX), 5_000, "no overflow");
    }

    #[test]
    fn failure_ratio_trips_only_with_enough_requests_in_the_window() {
        let l = Limits {
            consecutive_failures: 0,
            failure_ratio: Some(0.5),
            min_requests: 10,
            ..limits()
        };
        // (successes, failures) interleaved within one window → expected phase
        let cases = [
            (5, 4, Phase::Closed),
            (3, 3, Phase::Closed),
            (5, 5, Phase::Open),
            (2, 8, Phase::Open),
            (9, 1, Phase::Closed),
        ];
        for (ok, bad, expected) in cases {
            let mut b = Breaker::default();
            for i in 0..(ok + bad) {
                let outcome = if i < ok {
                    Outcome::Success
                } else {
                    Outcome::Failure
                };
                call(&mut b, T0 + i * 10, outcome, &l);
            }
            assert_eq!(b.phase, expected, "{ok} ok / {bad} failed");
        }
    }

    #[test]
    fn old_requests_slide_out_of_the_ratio_window() {
        let l = Limits {
            consecutive_failures: 0,
            failure_ratio: Some(0.5),
            min_requests: 4,
            ..limits()
        };
        let mut b = Breaker::default();
        for _ in 0..3 {
            call(&mut b, T0, Outcome::Failure, &l);
        }
        call(&mut b, T0 + 1_000, Outcome::Success, &l);
        call(&mut b, T0 + 1_000, Outcome::Success, &l);
        call(&mut b, T0 + 1_000, Outcome::Success, &l);
        assert_eq!(
            b.phase,
            Phase::Closed,
            "the ratio is checked when a failure completes"
        );
        // 10 s later the early failures have left the window: 1 failure of 1 is below min_requests
        call(&mut b, T0 + 10_500, Outcome::Failure, &l);
        assert_eq!(
            b.window_totals(),
            (4, 1),
            "the three failures at T0 expired"
        );
        assert_eq!(b.phase, Phase::Closed);
        // a long idle gap clears every bucket
        call(&mut b, T0 + 100_000, Outcome::Success, &l);
        assert_eq!(b.window_totals(), (1, 0));
    }

    #[test]
    fn ratio_trips_on_the_failure_that_crosses_it() {
        let l = Limits {
            consecutive_failures: 0,
            failure_ratio: Some(0.5),
            min_requests: 4,
            ..limits()
        };
        let mut b = Breaker::default();
        for outcome in [
            Outcome::Failure,
            Outcome::Success,
            Outcome::Success,
            Outcome::Failure,
        ] {
            call(&mut b, T0, outcome, &l);
        }
        assert_eq!(b.phase, Phase::Open, "2 of 4 = 0.5");
    }

    #[test]
    fn late_answers_from_an_earlier_period_are_ignored() {
        let l = limits();
        let mut b = Breaker::default();
        // a slow request admitted while closed, in generation 0
        let (next, slow) = b.admit(T0, &l);
        b = next;
        let Admission::Allow(slow) = slow else {
            panic!()
        };
        for _ in 0..3 {
            call(&mut b, T0, Outcome::Failure, &l);
        }
        let open = b.clone();
        assert_eq!(
            b.complete(slow, Outcome::Success, T0 + 1, &l),
            open,
            "open ignores it"
        );
        let p = probe(&mut b, T0 + 5_000, &l);
        let half = b.clone();
        assert_eq!(
            b.complete(slow, Outcome::Failure, T0 + 5_001, &l),
            half,
            "half-open ignores it"
        );
        b = b.complete(p, Outcome::Failure, T0 + 5_002, &l);
        // the first probe's generation is over: a duplicate completion changes nothing
        let reopened = b.clone();
        assert_eq!(b.complete(p, Outcome::Success, T0 + 5_003, &l), reopened);
        let p2 = probe(&mut b, T0 + 10_002, &l);
        b = b.complete(p2, Outcome::Success, T0 + 10_003, &l);
        assert_eq!(b.phase, Phase::Closed);
        assert_eq!(
            b.complete(p, Outcome::Failure, T0 + 10_004, &l).phase,
            Phase::Closed,
            "stale probe"
        );
    }

    #[test]
    fn lost_probes_free_their_slots_when_the_lease_expires() {
        let l = Limits {
            probe_timeout_ms: 1_000,
            ..limits()
        };
        let mut b = tripped(&l);
        probe(&mut b, T0 + 5_000, &l); // never completes (worker died, record lost…)
        assert!(matches!(
            b.admit(T0 + 5_999, &l).1,
            Admission::Reject { .. }
        ));
        let t = probe(&mut b, T0 + 6_000, &l);
        assert_eq!(b.in_flight, 1);
        b = b.complete(t, Outcome::Success, T0 + 6_001, &l);
        assert_eq!(b.phase, Phase::Closed);
    }

    #[test]
    fn clock_skew_between_workers_never_rewinds_or_wedges_the_breaker() {
        let l = limits();
        // a worker whose clock is 3 s behind sees the trip written by a faster worker
        let mut b = tripped(&l);
        assert!(
            matches!(
                b.admit(T0 - 3_000, &l).1,
                Admission::Reject {
                    retry_after_s: 5,
                    phase: Phase::Open
                }
            ),
            "the deadline is clamped to max_open_for from the slow clock"
        );
        // a deadline absurdly far ahead (clock jumped back) is clamped once, then runs out
        b.open_until = T0 + 1_000_000_000;
        let (clamped, a) = b.admit(T0 + 5_000, &l);
        assert!(
            matches!(
                a,
                Admission::Reject {
                    retry_after_s: 5,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(clamped.open_until, T0 + 10_000);
        assert!(matches!(
            clamped.admit(T0 + 10_000, &l).1,
            Admission::Allow(Ticket::Probe { .. })
        ));
        // probe leases from the future are clamped to probe_timeout, so a lost probe still frees its slot
        let mut h = tripped(&l);
        probe(&mut h, T0 + 5_000, &l);
        h.lease_until = u64::MAX;
        let (h2, a) = h.admit(T0 + 5_001, &l);
        assert!(
            matches!(
                a,
                Admission::Reject {
                    phase: Phase::HalfOpen,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(h2.lease_until, T0 + 35_001);
        assert!(matches!(
            h2.admit(T0 + 35_001, &l).1,
            Admission::Allow(Ticket::Probe { .. })
        ));
        // window counts from a slow clock land in the newest bucket, never in the past
        let l = Limits {
            failure_ratio: Some(0.9),
            ..limits()
        };
        let mut w = Breaker::default();
        call(&mut w, T0 + 9_000, Outcome::Success, &l);
        let head = w.head;
        call(&mut w, T0, Outcome::Failure, &l);
        assert_eq!(w.head, head);
        assert_eq!(w.window_totals(), (2, 1));
        // time zero or the far future never panics
        for now in [0, 1, u64::MAX - 1, u64::MAX] {
            let mut x = tripped(&l);
            call(&mut x, now, Outcome::Failure, &l);
            call(&mut Breaker::default(), now, Outcome::Failure, &l);
        }
    }

    #[test]
    fn records_round_trip_and_garbage_reads_as_fresh() {
        let l = Limits {
            failure_ratio: Some(0.9),
            ..limits()
        };
        let mut b = Breaker::default();
        for i in 0..7 {
            call(&mut b, T0 + i * 1_100, Outcome::Failure, &l);
            call(&mut b, T0 + i * 1_100, Outcome::Success, &l);
        }
        let mut t = tripped(&l);
        probe(&mut t, T0 + 5_000, &l);
        for state in [Breaker::default(), b, t] {
            let bytes = state.encode();
            assert_eq!(bytes.len(), ENCODED_LEN);
            assert_eq!(Breaker::decode(&bytes), Some(state));
        }
        let good = Breaker::default().encode();
        let mut bad_phase = good.clone();
        bad_phase[1] = 9;
        let mut bad_version = good.clone();
        bad_version[0] = 2;
        for bytes in [
            &b""[..],
            &[0u8][..],
            &good[..10],
            &bad_phase[..],
            &bad_version[..],
        ] {
            assert_eq!(Breaker::decode(bytes), None);
        }
        let (write, admission, change) = admit_stored(Some(b"garbage"), T0, &l);
        assert_eq!(
            write, None,
            "garbage reads as a fresh closed breaker, and admitting changes nothing"
        );
        assert!(matches!(
            admission,
            Admission::Allow(Ticket::Normal { generation: 0 })
        ));
        assert_eq!(change, None);
    }

    #[test]
    fn stored_transitions_are_reported_once() {
        let l = limits();
        let mut record: Option<Vec<u8>> = None;
        let mut changes = Vec::new();
        let mut writes = 0;
        let mut store = |b: Option<Breaker>, record: &mut Option<Vec<u8>>| {
            if let Some(b) = b {
                *record = Some(b.encode());
                writes += 1;
            }
        };
        // healthy traffic writes nothing
        for i in 0..5 {
            let (b, a, c) = admit_stored(record.as_deref(), T0 + i, &l);
            assert!(b.is_none() && c.is_none());
            let Admission::Allow(t) = a else { panic!() };
            let (b, c) = complete_stored(record.as_deref(), t, Outcome::Success, T0 + i, &l);
            assert!(b.is_none() && c.is_none());
        }
        for i in 0..3 {
            let (b, a, c) = admit_stored(record.as_deref(), T0 + i, &l);
            store(b, &mut record);
            changes.extend(c);
            let Admission::Allow(t) = a else { panic!() };
            let (b, c) = complete_stored(record.as_deref(), t, Outcome::Failure, T0 + i, &l);
            store(b, &mut record);
            changes.extend(c);
        }
        let (b, a, c) = admit_stored(record.as_deref(), T0 + 6_000, &l);
        store(b, &mut record);
        changes.extend(c);
        let Admission::Allow(t) = a else { panic!() };
        let (b, c) = complete_stored(record.as_deref(), t, Outcome::Success, T0 + 6_001, &l);
        store(b, &mut record);
        changes.extend(c);
        assert_eq!(
            writes, 5,
            "3 failures, the probe admission, the probe result"
        );
        let phases: Vec<_> = changes.iter().map(|c| (c.from, c.to)).collect();
        assert_eq!(
            phases,
            vec![
                (Phase::Closed, Phase::Open),
                (Phase::Open, Phase::HalfOpen),
                (Phase::HalfOpen, Phase::Closed)
            ]
        );
        assert_eq!(changes[0].open_ms, 5_000);
    }
}
