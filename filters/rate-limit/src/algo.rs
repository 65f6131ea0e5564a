//! The three algorithms as pure functions of (stored state, now): no host, no clock, no store. Each call
//! returns the new state to write (or nothing) and what the caller needs for headers. Times are
//! microseconds since the Unix epoch; a clock that goes backwards never adds capacity.
//!
//! Compact binary states (the payload of one shared-data record, after its 16-byte slot header):
//! - token bucket:   `1 | tokens (u64 LE, in millionths of a token) | last refill µs (u64 LE)` = 17 bytes
//! - fixed window:   `2 | window start µs (u64 LE) | count (u32 LE)`                          = 13 bytes
//! - sliding window: `3 | window start µs (u64 LE) | count (u32 LE) | previous count (u32 LE)` = 17 bytes
//!
//! A state is stored with an expiry: the moment it becomes equal to a fresh state (bucket full again,
//! window over). A slot whose record expired is therefore free to reuse without changing any decision.

/// Millionths of a token: refill is exact to a millionth whatever `rate`/`per`.
const MICRO: u128 = 1_000_000;

/// Largest state payload in bytes (for the documented worst case).
pub const MAX_STATE_BYTES: usize = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rate` tokens every `per_us`, holding at most `burst`; a request takes one token.
    TokenBucket { rate: u64, per_us: u64, burst: u64 },
    /// At most `requests` per window aligned on multiples of `window_us` since the epoch.
    FixedWindow { requests: u64, window_us: u64 },
    /// At most `requests` in any window, estimated as the current window's count plus the previous
    /// window's count weighted by how much of it still overlaps the last `window_us`.
    SlidingWindow { requests: u64, window_us: u64 },
}

/// What one check found, for headers and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// The limit's capacity (`burst` or `requests`).
    pub limit: u64,
    /// Requests still allowed right now, after this one.
    pub remaining: u64,
    /// Microseconds until the quota is fully restored (bucket full, window over).
    pub reset_us: u64,
    /// When rejected: microseconds until a request can pass (≥ 1). 0 when allowed.
    pub retry_after_us: u64,
}

/// The result of [`Algorithm::consume`]: the state to write (payload, expiry µs) and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub write: Option<(Vec<u8>, u64)>,
    pub outcome: Outcome,
    /// What [`Algorithm::refund`] needs to give this request's unit back.
    pub mark: u64,
}

const TAG_TOKEN: u8 = 1;
const TAG_FIXED: u8 = 2;
const TAG_SLIDING: u8 = 3;

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn sat_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn ceil_div(a: u128, b: u128) -> u128 {
    if b == 0 {
        0
    } else {
        a.div_ceil(b)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    tokens: u128,
    last: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: u64,
    count: u32,
    prev: u32,
}

impl Bucket {
    fn decode(b: &[u8]) -> Option<Bucket> {
        (b.len() == 17 && b.first() == Some(&TAG_TOKEN)).then_some(())?;
        Some(Bucket {
            tokens: u128::from(u64_at(b, 1)?),
            last: u64_at(b, 9)?,
        })
    }
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(TAG_TOKEN);
        out.extend_from_slice(&sat_u64(self.tokens).to_le_bytes());
        out.extend_from_slice(&self.last.to_le_bytes());
        out
    }
}

impl Window {
    fn decode(b: &[u8], tag: u8) -> Option<Window> {
        let len = if tag == TAG_FIXED { 13 } else { 17 };
        (b.len() == len && b.first() == Some(&tag)).then_some(())?;
        Some(Window {
            start: u64_at(b, 1)?,
            count: u32_at(b, 9)?,
            prev: if tag == TAG_SLIDING {
                u32_at(b, 13)?
            } else {
                0
            },
        })
    }
    fn encode(&self, tag: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(tag);
        out.extend_from_slice(&self.start.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        if tag == TAG_SLIDING {
            out.extend_from_slice(&self.prev.to_le_bytes());
        }
        out
    }
}

impl Algorithm {
    /// The limit's capacity, as reported in `RateLimit-Limit`.
    pub fn limit(&self) -> u64 {
        match *self {
            Algorithm::TokenBucket { burst, .. } => burst,
            Algorithm::FixedWindow { requests, .. } | Algorithm::SlidingWindow { requests, .. } => {
                requests
            }
        }
    }

    /// Checks one request against `state` (None or unreadable = fresh) at `now` and, if it passes,
    /// returns the state with the request counted. A rejected request writes nothing.
    pub fn consume(&self, state: Option<&[u8]>, now: u64) -> Step {
        match *self {
            Algorithm::TokenBucket {
                rate,
                per_us,
                burst,
            } => token_consume(rate, per_us, burst, state, now),
            Algorithm::FixedWindow {
                requests,
                window_us,
            } => window_consume(false, requests, window_us, state, now),
            Algorithm::SlidingWindow {
                requests,
                window_us,
            } => window_consume(true, requests, window_us, state, now),
        }
    }

    /// Gives back the unit a request took with [`Algorithm::consume`] (returning `mark` from its step),
    /// because a later limit rejected the request. None = nothing to write (state gone or moved on).
    pub fn refund(&self, state: Option<&[u8]>, mark: u64) -> Option<(Vec<u8>, u64)> {
        let state = state?;
        match *self {
            Algorithm::TokenBucket {
                rate,
                per_us,
                burst,
            } => {
                let mut b = Bucket::decode(state)?;
                b.tokens = (b.tokens + MICRO).min(u128::from(burst) * MICRO);
                let expires = b
                    .last
                    .saturating_add(token_reset_us(rate, per_us, burst, b.tokens));
                Some((b.encode(), expires))
            }
            Algorithm::FixedWindow { window_us, .. } => {
                let mut w = Window::decode(state, TAG_FIXED)?;
                (w.start == mark && w.count > 0).then_some(())?;
                w.count -= 1;
                Some((w.encode(TAG_FIXED), w.start.saturating_add(window_us)))
            }
            Algorithm::SlidingWindow { window_us, .. } => {
                let mut w = Window::decode(state, TAG_SLIDING)?;
                if w.start == mark && w.count > 0 {
                    w.count -= 1;
                } else if w.start == mark.saturating_add(window_us) && w.prev > 0 {
                    w.prev -= 1;
                } else {
                    return None;
                }
                let expires = w.start.saturating_add(window_us.saturating_mul(2));
                Some((w.encode(TAG_SLIDING), expires))
            }
        }
    }
}

/// Microseconds until a bucket holding `tokens` (millionths) is full again.
fn token_reset_us(rate: u64, per_us: u64, burst: u64, tokens: u128) -> u64 {
    let missing = (u128::from(burst) * MICRO).saturating_sub(tokens);
    sat_u64(ceil_div(
        missing * u128::from(per_us),
        u128::from(rate) * MICRO,
    ))
}

fn token_consume(rate: u64, per_us: u64, burst: u64, state: Option<&[u8]>, now: u64) -> Step {
    let capacity = u128::from(burst) * MICRO;
    let mut b = state.and_then(Bucket::decode).unwrap_or(Bucket {
        tokens: capacity,
        last: now,
    });
    // Refill for the time since the last update; a clock behind `last` adds nothing and keeps `last`.
    if now > b.last {
        let added = u128::from(now - b.last) * u128::from(rate) * MICRO / u128::from(per_us.max(1));
        b.tokens = (b.tokens.saturating_add(added)).min(capacity);
        b.last = now;
    }
    b.tokens = b.tokens.min(capacity);
    let allowed = b.tokens >= MICRO;
    let retry_after_us = if allowed {
        0
    } else {
        sat_u64(ceil_div(
            (MICRO - b.tokens) * u128::from(per_us),
            u128::from(rate) * MICRO,
        ))
        .max(1)
    };
    if allowed {
        b.tokens -= MICRO;
    }
    let reset_us = token_reset_us(rate, per_us, burst, b.tokens);
    let outcome = Outcome {
        allowed,
        limit: burst,
        remaining: sat_u64(b.tokens / MICRO),
        reset_us,
        retry_after_us,
    };
    let write = allowed.then(|| (b.encode(), b.last.saturating_add(reset_us)));
    Step {
        write,
        outcome,
        mark: 0,
    }
}

fn window_consume(
    sliding: bool,
    requests: u64,
    window_us: u64,
    state: Option<&[u8]>,
    now: u64,
) -> Step {
    let tag = if sliding { TAG_SLIDING } else { TAG_FIXED };
    let w_len = window_us.max(1);
    let current_start = now - now % w_len;
    let mut w = state
        .and_then(|s| Window::decode(s, tag))
        .unwrap_or(Window {
            start: current_start,
            count: 0,
            prev: 0,
        });
    if current_start > w.start {
        // A later window: the old count becomes the previous one only if it was the window just before.
        w.prev = if current_start == w.start.saturating_add(w_len) {
            w.count
        } else {
            0
        };
        w.count = 0;
        w.start = current_start;
    }
    // A clock behind the stored window counts as the stored window's first instant (never a new window).
    let elapsed = now.saturating_sub(w.start).min(w_len - 1);
    let window = u128::from(w_len);
    let budget = u128::from(requests) * window;
    let prev_weight = |prev: u32| {
        if sliding {
            u128::from(prev) * (window - u128::from(elapsed))
        } else {
            0
        }
    };
    let weighted = prev_weight(w.prev) + u128::from(w.count) * window;
    let allowed = weighted + window <= budget && w.count < u32::MAX;
    let window_end_us = w.start.saturating_add(w_len).saturating_sub(now);
    let retry_after_us = if allowed {
        0
    } else if sliding && u64::from(w.count) < requests && w.prev > 0 {
        // The previous window's weight must shrink until one more request fits in this window.
        let room = (u128::from(requests) - u128::from(w.count) - 1) * window / u128::from(w.prev);
        sat_u64((window - u128::from(elapsed)).saturating_sub(room)).max(1)
    } else {
        window_end_us.max(1)
    };
    if allowed {
        w.count += 1;
    }
    let used = prev_weight(w.prev) + u128::from(w.count) * window;
    let outcome = Outcome {
        allowed,
        limit: requests,
        remaining: sat_u64(budget.saturating_sub(used) / window),
        reset_us: window_end_us,
        retry_after_us,
    };
    let expires = if sliding {
        w.start.saturating_add(w_len.saturating_mul(2))
    } else {
        w.start.saturating_add(w_len)
    };
    let write = allowed.then(|| (w.encode(tag), expires));
    Step {
        write,
        outcome,
        mark: w.start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    /// An arbitrary epoch time (µs), aligned to whole seconds and minutes.
    const T0: u64 = 1_700_000_040 * S;

    /// Runs requests at the given times against one state; returns which passed.
    fn run(algo: Algorithm, times: &[u64]) -> Vec<bool> {
        let mut state: Option<Vec<u8>> = None;
        times
            .iter()
            .map(|&t| {
                let step = algo.consume(state.as_deref(), t);
                if let Some((bytes, expires)) = step.write {
                    assert!(expires >= t, "a written state expires after now");
                    state = Some(bytes);
                }
                step.outcome.allowed
            })
            .collect()
    }

    fn bucket(rate: u64, per_us: u64, burst: u64) -> Algorithm {
        Algorithm::TokenBucket {
            rate,
            per_us,
            burst,
        }
    }

    #[test]
    fn token_bucket_cases() {
        let seed_per_ip = bucket(1, S, 5);
        let cases: Vec<(&str, Algorithm, Vec<u64>, Vec<bool>)> = vec![
            (
                "a burst of 5 passes, the 6th at the same instant is rejected",
                seed_per_ip,
                vec![T0; 6],
                vec![true, true, true, true, true, false],
            ),
            (
                "one token per second refills after the burst",
                seed_per_ip,
                vec![T0, T0, T0, T0, T0, T0 + S - 1, T0 + S, T0 + S],
                vec![true, true, true, true, true, false, true, false],
            ),
            (
                "refill never exceeds the burst",
                seed_per_ip,
                [vec![T0], vec![T0 + 100 * S; 6]].concat(),
                vec![true, true, true, true, true, true, false],
            ),
            (
                "a clock going backwards adds no tokens",
                bucket(1, S, 2),
                vec![T0, T0, T0 - 10 * S, T0 - 5 * S, T0 + S - 1, T0 + S],
                vec![true, true, false, false, false, true],
            ),
            (
                "fractional rates refill exactly: 3 per second = one every 333333.3µs",
                bucket(3, S, 3),
                vec![
                    T0,
                    T0,
                    T0,
                    T0 + 333_333,
                    T0 + 333_334,
                    T0 + 666_666,
                    T0 + 666_667,
                ],
                vec![true, true, true, false, true, false, true],
            ),
            (
                "the seed's gateway-wide bucket: 10/s burst 10",
                bucket(10, S, 10),
                [vec![T0; 11], vec![T0 + S / 10]].concat(),
                [vec![true; 10], vec![false, true]].concat(),
            ),
        ];
        for (name, algo, times, want) in cases {
            assert_eq!(run(algo, &times), want, "{name}");
        }
    }

    #[test]
    fn token_bucket_reports_remaining_reset_and_retry_after() {
        let algo = bucket(1, S, 5);
        let step = algo.consume(None, T0);
        assert_eq!(step.outcome.remaining, 4);
        assert_eq!(step.outcome.limit, 5);
        assert_eq!(step.outcome.reset_us, S, "one token short of full");
        let mut state = step.write.unwrap().0;
        for _ in 0..4 {
            state = algo.consume(Some(&state), T0).write.unwrap().0;
        }
        let rejected = algo.consume(Some(&state), T0 + S / 4);
        assert!(!rejected.outcome.allowed);
        assert_eq!(rejected.write, None, "a rejection writes nothing");
        assert_eq!(rejected.outcome.remaining, 0);
        assert_eq!(rejected.outcome.retry_after_us, 3 * S / 4);
        assert_eq!(rejected.outcome.reset_us, 5 * S - S / 4);
    }

    #[test]
    fn token_bucket_state_expires_exactly_when_it_is_full_again() {
        let algo = bucket(1, S, 5);
        let step = algo.consume(None, T0);
        let (bytes, expires) = step.write.unwrap();
        assert_eq!(expires, T0 + S);
        assert_eq!(bytes.len(), MAX_STATE_BYTES);
        // at expiry, the stored state and a fresh one decide identically
        let stored = algo.consume(Some(&bytes), expires);
        let fresh = algo.consume(None, expires);
        assert_eq!(stored.outcome, fresh.outcome);
    }

    #[test]
    fn fixed_window_cases() {
        let algo = Algorithm::FixedWindow {
            requests: 3,
            window_us: 60 * S,
        };
        let cases: Vec<(&str, Vec<u64>, Vec<bool>)> = vec![
            (
                "three per window, the fourth is rejected",
                vec![T0, T0 + 1, T0 + 2, T0 + 3],
                vec![true, true, true, false],
            ),
            (
                "the count resets at the window edge, not a window after the first request",
                vec![
                    T0 + 59 * S,
                    T0 + 59 * S,
                    T0 + 59 * S,
                    T0 + 60 * S - 1,
                    T0 + 60 * S,
                ],
                vec![true, true, true, false, true],
            ),
            (
                "a clock going back into the previous window stays in the stored window",
                vec![
                    T0 + 60 * S,
                    T0 + 60 * S,
                    T0 + 60 * S,
                    T0 + 59 * S,
                    T0 + 30 * S,
                ],
                vec![true, true, true, false, false],
            ),
        ];
        for (name, times, want) in cases {
            assert_eq!(run(algo, &times), want, "{name}");
        }
        let step = algo.consume(None, T0 + 20 * S);
        assert_eq!(step.outcome.reset_us, 40 * S);
        assert_eq!(step.outcome.remaining, 2);
        assert_eq!(step.write.as_ref().unwrap().1, T0 + 60 * S);
    }

    #[test]
    fn sliding_window_cases() {
        let algo = Algorithm::SlidingWindow {
            requests: 4,
            window_us: 10 * S,
        };
        let cases: Vec<(&str, Vec<u64>, Vec<bool>)> = vec![
            (
                "four in a window, the fifth is rejected",
                vec![T0; 5],
                vec![true, true, true, true, false],
            ),
            (
                "just after the edge the previous window still weighs almost fully",
                [vec![T0; 4], vec![T0 + 10 * S, T0 + 10 * S + S]].concat(),
                vec![true, true, true, true, false, false],
            ),
            (
                "after 25% of the new window, one request fits (4·0.75 + 0 + 1 ≤ 4)",
                [vec![T0; 4], vec![T0 + 12 * S + S / 2, T0 + 12 * S + S / 2]].concat(),
                vec![true, true, true, true, true, false],
            ),
            (
                "a window with no traffic in between forgets the old count",
                [vec![T0; 4], vec![T0 + 20 * S; 4]].concat(),
                vec![true; 8],
            ),
            (
                "a clock going backwards never opens a new window",
                [vec![T0 + 10 * S; 4], vec![T0, T0 + 5 * S]].concat(),
                vec![true, true, true, true, false, false],
            ),
        ];
        for (name, times, want) in cases {
            assert_eq!(run(algo, &times), want, "{name}");
        }
    }

    #[test]
    fn sliding_window_retry_after_points_at_the_first_instant_that_passes() {
        let algo = Algorithm::SlidingWindow {
            requests: 4,
            window_us: 10 * S,
        };
        let mut state = None::<Vec<u8>>;
        for _ in 0..4 {
            state = algo.consume(state.as_deref(), T0).write.map(|w| w.0);
        }
        let rejected = algo.consume(state.as_deref(), T0 + 10 * S);
        let wait = rejected.outcome.retry_after_us;
        assert_eq!(wait, 10 * S / 4);
        assert!(
            !algo
                .consume(state.as_deref(), T0 + 10 * S + wait - 1)
                .outcome
                .allowed
        );
        assert!(
            algo.consume(state.as_deref(), T0 + 10 * S + wait)
                .outcome
                .allowed
        );
    }

    #[test]
    fn refund_gives_back_exactly_one_unit() {
        let algos = [
            bucket(1, S, 2),
            Algorithm::FixedWindow {
                requests: 2,
                window_us: 60 * S,
            },
            Algorithm::SlidingWindow {
                requests: 2,
                window_us: 60 * S,
            },
        ];
        for algo in algos {
            let first = algo.consume(None, T0);
            let second = algo.consume(first.write.as_ref().map(|w| w.0.as_slice()), T0);
            let full = second.write.unwrap().0;
            assert!(!algo.consume(Some(&full), T0).outcome.allowed, "{algo:?}");
            let (refunded, _) = algo.refund(Some(&full), second.mark).unwrap();
            let again = algo.consume(Some(&refunded), T0);
            assert!(again.outcome.allowed, "{algo:?}");
            assert!(
                !algo
                    .consume(again.write.as_ref().map(|w| w.0.as_slice()), T0)
                    .outcome
                    .allowed
            );
            assert_eq!(algo.refund(None, second.mark), None, "nothing to refund");
        }
        // a window that has moved on is not refunded (the unit expired with its window)
        let fixed = Algorithm::FixedWindow {
            requests: 2,
            window_us: 60 * S,
        };
        let later = fixed.consume(None, T0 + 60 * S).write.unwrap().0;
        assert_eq!(fixed.refund(Some(&later), T0), None);
    }

    #[test]
    fn unreadable_or_foreign_states_count_as_fresh() {
        let algo = bucket(1, S, 1);
        for junk in [&b""[..], b"\x02abc", &[1u8; 16], &[9u8; 17]] {
            assert!(algo.consume(Some(junk), T0).outcome.allowed, "{junk:?}");
        }
        let window_state = Algorithm::FixedWindow {
            requests: 1,
            window_us: S,
        }
        .consume(None, T0)
        .write
        .unwrap()
        .0;
        assert!(algo.consume(Some(&window_state), T0).outcome.allowed);
    }
}
