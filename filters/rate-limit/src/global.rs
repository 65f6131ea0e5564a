//! Multi-node limits on a Redis reached over HTTP: the per-worker health of the store (fallback, automatic
//! recovery, one log line per state change) and the `batched` mode's node-local leases.
//!
//! `batched`: per (limit, key) a node keeps one lease record in shared data (all its workers spend from it):
//! `credit` units Redis granted and not yet spent, and `debt` units admitted before the key's first answer
//! from Redis (at most one slice, charged to Redis by the next reservation). Once a key has an answer, the
//! node admits only against credit. A worker's timer reserves, for each key that ran low, `slice − credit`
//! units (one reservation in flight per key and node, guarded by a lock in the record). Redis never grants
//! more than the budget, so the only units admitted beyond it are (a) a node's unspent credit outliving the
//! window or refill period it was granted in and (b) a first slice of debt that Redis can no longer cover —
//! never both for the same key and period, because a lease is held at least to the end of the limit's current
//! period ([`period_end_us`]) and only a fresh lease admits on debt: **worst-case overshoot per key =
//! nodes × slice**.

use crate::algo::{Algorithm, Outcome};
use crate::config::RedisStore;
use crate::redis::Reservation;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

/// Whether Redis answers, per worker. `down_until`: None = up; Some(t) = use `on_store_error` until `t`,
/// then let one call probe Redis again.
#[derive(Debug, Default)]
pub struct Health {
    down_until: Cell<Option<u64>>,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.down_until.get().is_none()
    }

    /// Whether a call to Redis may be made now: always when up; when down, once per `retry_us` (the probe).
    pub fn may_call(&self, now_us: u64, retry_us: u64) -> bool {
        match self.down_until.get() {
            None => true,
            Some(until) if now_us >= until => {
                self.down_until.set(Some(now_us.saturating_add(retry_us)));
                true
            }
            Some(_) => false,
        }
    }

    /// Records a good answer; true when this recovered the store (logged once).
    pub fn success(&self, upstream: &str) -> bool {
        if self.down_until.replace(None).is_some() {
            log::info!("Redis at {upstream:?} answers again: global limits restored");
            return true;
        }
        false
    }

    /// Records a failure; true when this took the store down (logged once).
    pub fn failure(
        &self,
        now_us: u64,
        retry_us: u64,
        upstream: &str,
        why: &str,
        fallback: &str,
    ) -> bool {
        let was_up = self.down_until.get().is_none();
        if was_up || self.down_until.get().is_some_and(|t| t <= now_us) {
            self.down_until.set(Some(now_us.saturating_add(retry_us)));
        }
        if was_up {
            log::warn!(
                "Redis at {upstream:?} failed ({why}): on_store_error `{fallback}` until it answers"
            );
        }
        was_up
    }
}

/// A node's lease on one (limit, key): the payload of its shared-data record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lease {
    /// Redis answered for this key at least once (no more admission on debt).
    pub synced: bool,
    pub credit: u32,
    pub debt: u32,
    /// A reservation is in flight until then (µs).
    pub lock_until: u64,
    /// Redis had nothing left: no reservation (and no admission) before this (µs).
    pub retry_until: u64,
    /// Redis' remaining budget at the last answer, and when its quota is full again (µs).
    pub remaining: u32,
    pub reset_at: u64,
}

const LEASE_BYTES: usize = 1 + 4 + 4 + 8 + 8 + 4 + 8;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Lease {
    pub fn decode(b: &[u8]) -> Option<Lease> {
        (b.len() == LEASE_BYTES).then_some(())?;
        Some(Lease {
            synced: *b.first()? == 1,
            credit: u32_at(b, 1)?,
            debt: u32_at(b, 5)?,
            lock_until: u64_at(b, 9)?,
            retry_until: u64_at(b, 17)?,
            remaining: u32_at(b, 25)?,
            reset_at: u64_at(b, 29)?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEASE_BYTES);
        out.push(u8::from(self.synced));
        out.extend_from_slice(&self.credit.to_le_bytes());
        out.extend_from_slice(&self.debt.to_le_bytes());
        out.extend_from_slice(&self.lock_until.to_le_bytes());
        out.extend_from_slice(&self.retry_until.to_le_bytes());
        out.extend_from_slice(&self.remaining.to_le_bytes());
        out.extend_from_slice(&self.reset_at.to_le_bytes());
        out
    }

    /// When the record may be dropped: idle for `ttl_us`, no lock or exhaustion pending, and not before
    /// `hold_until` ([`period_end_us`]: an expired lease reads as a fresh, unsynced one that may admit a slice
    /// on debt again, which must not happen in the period where this node may have spent stale credit).
    pub fn expires(&self, now_us: u64, ttl_us: u64, hold_until: u64) -> u64 {
        now_us
            .saturating_add(ttl_us)
            .max(self.lock_until)
            .max(self.retry_until)
            .max(hold_until)
    }
}

/// The end of the limit's current period: the current window (fixed), the current and next window
/// (sliding: the previous window weighs on the next one), or a full refill (token bucket).
pub fn period_end_us(algo: &Algorithm, now_us: u64) -> u64 {
    match *algo {
        Algorithm::TokenBucket {
            rate,
            per_us,
            burst,
        } => {
            let refill = u128::from(burst) * u128::from(per_us) / u128::from(rate.max(1));
            now_us.saturating_add(u64::try_from(refill).unwrap_or(u64::MAX))
        }
        Algorithm::FixedWindow { window_us, .. } => {
            let w = window_us.max(1);
            (now_us - now_us % w).saturating_add(w)
        }
        Algorithm::SlidingWindow { window_us, .. } => {
            let w = window_us.max(1);
            (now_us - now_us % w).saturating_add(w.saturating_mul(2))
        }
    }
}

/// How a request's unit was taken from a lease (to give it back if a later limit rejects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Credit,
    Debt,
}

/// One request against a lease: the new lease (None when nothing changes), what was taken, the outcome,
/// and whether the key needs a reservation.
pub fn spend(
    lease: Option<Lease>,
    capacity: u64,
    slice: u64,
    retry_default_us: u64,
    now_us: u64,
) -> (Option<Lease>, Option<Taken>, Outcome, bool) {
    let mut l = lease.unwrap_or_default();
    let taken = if l.credit > 0 {
        l.credit -= 1;
        Some(Taken::Credit)
    } else if !l.synced && u64::from(l.debt) < slice {
        l.debt += 1;
        Some(Taken::Debt)
    } else {
        None
    };
    let retry_after_us = if taken.is_some() {
        0
    } else if l.retry_until > now_us {
        l.retry_until - now_us
    } else {
        retry_default_us.max(1)
    };
    let remaining = if l.synced {
        u64::from(l.remaining).saturating_add(u64::from(l.credit))
    } else {
        capacity.saturating_sub(u64::from(l.debt))
    };
    let outcome = Outcome {
        allowed: taken.is_some(),
        limit: capacity,
        remaining: remaining.min(capacity),
        reset_us: l.reset_at.saturating_sub(now_us),
        retry_after_us,
    };
    let exhausted = l.synced && l.retry_until > now_us;
    let needs_sync = l.debt > 0 || (!exhausted && u64::from(l.credit).saturating_mul(2) <= slice);
    (taken.map(|_| l), taken, outcome, needs_sync)
}

/// Gives back a unit taken by [`spend`].
pub fn refund(lease: Option<Lease>, taken: Taken) -> Option<Lease> {
    let mut l = lease?;
    match taken {
        Taken::Credit => l.credit = l.credit.saturating_add(1),
        Taken::Debt => l.debt = l.debt.saturating_sub(1),
    }
    Some(l)
}

/// What a reservation asks for: (debt to charge, units wanted), or None when the key needs nothing now
/// (enough credit, a reservation already in flight, or Redis exhausted and nothing to report).
pub fn reservation_for(lease: &Lease, slice: u64, now_us: u64) -> Option<(u64, u64)> {
    if lease.lock_until > now_us {
        return None;
    }
    let debt = u64::from(lease.debt);
    let exhausted = lease.synced && lease.retry_until > now_us;
    let want = if exhausted {
        0
    } else {
        slice.saturating_sub(u64::from(lease.credit))
    };
    (debt > 0 || want > 0).then_some((debt, want))
}

/// Applies an answer to the lease that asked for (`debt`, `want`).
pub fn settle(lease: Option<Lease>, debt: u64, want: u64, r: &Reservation, now_us: u64) -> Lease {
    let mut l = lease.unwrap_or_default();
    l.debt = sat_u32(u64::from(l.debt).saturating_sub(debt));
    l.credit = sat_u32(u64::from(l.credit).saturating_add(r.granted));
    l.synced = true;
    l.lock_until = 0;
    l.remaining = sat_u32(r.remaining);
    l.reset_at = now_us.saturating_add(r.reset_us);
    l.retry_until = if r.granted < want {
        now_us.saturating_add(r.retry_after_us.max(1))
    } else {
        0
    };
    l
}

/// Most keys a worker remembers as needing a reservation; more are dropped until the next request.
pub const MAX_DIRTY: usize = 4096;
/// Most reservations one worker has in flight.
pub const MAX_IN_FLIGHT: usize = 64;

/// A reservation on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub token: u32,
    pub limit: usize,
    /// The Redis key (also the lease's logical key).
    pub value: String,
    pub debt: u64,
    pub want: u64,
}

/// Per-worker state of `batched` mode.
#[derive(Debug, Default)]
pub struct Batched {
    /// (limit, Redis key) of the keys that need a reservation.
    pub dirty: RefCell<BTreeSet<(usize, String)>>,
    pub in_flight: RefCell<Vec<InFlight>>,
}

impl Batched {
    pub fn mark(&self, limit: usize, value: &str) {
        let mut dirty = self.dirty.borrow_mut();
        if dirty.len() < MAX_DIRTY {
            dirty.insert((limit, value.to_owned()));
        }
    }
}

/// The slice of a limit: the configured one, else 10% of its capacity (1..=100).
pub fn slice_of(store: &RedisStore, capacity: u64) -> u64 {
    store
        .slice
        .unwrap_or_else(|| capacity.div_ceil(10).clamp(1, 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000_000;

    fn answer(charged: u64, granted: u64) -> Reservation {
        Reservation {
            charged,
            granted,
            remaining: 0,
            reset_us: 1_000_000,
            retry_after_us: 500_000,
        }
    }

    #[test]
    fn a_new_key_admits_one_slice_on_debt_then_only_granted_credit() {
        let mut lease = None;
        let mut admitted = 0;
        for _ in 0..5 {
            let (new, taken, _, needs_sync) = spend(lease, 20, 3, 100_000, NOW);
            assert!(needs_sync);
            if let Some(l) = new {
                lease = Some(l);
                admitted += 1;
                assert_eq!(taken, Some(Taken::Debt));
            }
        }
        assert_eq!(admitted, 3, "one slice before Redis answered");
        let l = lease.unwrap();
        assert_eq!(reservation_for(&l, 3, NOW), Some((3, 3)));
        // Redis charged the debt and granted 2 of 3, so the budget is exhausted
        let settled = settle(Some(l), 3, 3, &answer(3, 2), NOW);
        assert_eq!((settled.debt, settled.credit, settled.synced), (0, 2, true));
        let mut lease = Some(settled);
        let mut admitted = 0;
        for _ in 0..5 {
            let (new, _, outcome, _) = spend(lease, 20, 3, 100_000, NOW + 1);
            if let Some(l) = new {
                lease = Some(l);
                admitted += 1;
            } else {
                assert_eq!(outcome.retry_after_us, 499_999);
            }
        }
        assert_eq!(admitted, 2, "no debt once Redis has answered");
        assert_eq!(
            reservation_for(&lease.unwrap(), 3, NOW + 1),
            None,
            "exhausted: wait"
        );
        assert_eq!(
            reservation_for(&lease.unwrap(), 3, NOW + 600_000),
            Some((0, 3))
        );
    }

    #[test]
    fn a_locked_lease_is_not_reserved_twice_and_refunds_restore_units() {
        let l = Lease {
            lock_until: NOW + 10,
            debt: 1,
            ..Lease::default()
        };
        assert_eq!(reservation_for(&l, 5, NOW), None);
        assert_eq!(reservation_for(&l, 5, NOW + 10), Some((1, 5)));
        let with_credit = Lease {
            credit: 2,
            synced: true,
            ..Lease::default()
        };
        let (spent, taken, _, _) = spend(Some(with_credit), 10, 4, 1, NOW);
        assert_eq!(spent.unwrap().credit, 1);
        assert_eq!(refund(spent, taken.unwrap()), Some(with_credit));
        assert_eq!(Lease::decode(&with_credit.encode()), Some(with_credit));
        assert_eq!(Lease::decode(b"short"), None);
    }

    #[test]
    fn leases_are_held_to_the_end_of_the_limits_period() {
        const S: u64 = 1_000_000;
        let fixed = Algorithm::FixedWindow {
            requests: 5,
            window_us: 60 * S,
        };
        let sliding = Algorithm::SlidingWindow {
            requests: 5,
            window_us: 60 * S,
        };
        let bucket = Algorithm::TokenBucket {
            rate: 2,
            per_us: S,
            burst: 10,
        };
        let t = 1_700_000_040 * S + 7; // 40 s + 7 µs into a minute
        assert_eq!(period_end_us(&fixed, t), 1_700_000_100 * S);
        assert_eq!(period_end_us(&sliding, t), 1_700_000_160 * S);
        assert_eq!(period_end_us(&bucket, t), t + 5 * S, "a full refill");
        let l = Lease::default();
        assert_eq!(l.expires(t, S, period_end_us(&fixed, t)), 1_700_000_100 * S);
        assert_eq!(l.expires(t, 100 * S, 0), t + 100 * S);
    }

    #[test]
    fn health_logs_once_per_change_and_probes_once_per_interval() {
        let h = Health::default();
        assert!(h.may_call(NOW, 1000));
        assert!(h.failure(NOW, 1000, "redis", "timeout", "local"));
        assert!(!h.failure(NOW + 1, 1000, "redis", "timeout", "local"));
        assert!(!h.may_call(NOW + 999, 1000));
        assert!(h.may_call(NOW + 1000, 1000), "the probe");
        assert!(!h.may_call(NOW + 1001, 1000), "one probe at a time");
        assert!(h.success("redis"));
        assert!(!h.success("redis"));
        assert!(h.is_up());
    }
}
