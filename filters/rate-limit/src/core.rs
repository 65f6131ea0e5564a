//! The decision across all limits of one request, against any [`SharedData`]: no host, no clock of its own.
//!
//! Exactness: each limit's counter lives in one shared-data record (one slot of a [`BoundedKeys`] table
//! with a single probe, so a key can never have two records), and every change to it is a compare-and-swap
//! on what was read ([`portcullis_common::store::cas_update`]), including the first write of a slot
//! ([`SharedData::create`] never overwrites). Two workers therefore can never both spend the same unit.
//!
//! Several limits: they are checked in order, each taking its unit; when limit `i` rejects, the units taken
//! from limits `0..i` are given back (each refund is a CAS too). Between the take and the refund, a
//! concurrent request may see those units as spent and be rejected: the error is only ever toward
//! rejecting, never toward over-admission.

use crate::algo::{Algorithm, Outcome};
use crate::config::{Limit, OnStoreError};
use portcullis_common::store::{BoundedKeys, SharedData, StoreError};

/// The key a limit counts this request under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Count under this value.
    Value(String),
    /// The limit does not apply (`on_missing_key: skip`).
    Skip,
    /// Reject: the key is missing and `on_missing_key` is `deny`.
    Deny,
}

/// The key value used by `on_missing_key: global` (cannot collide with a rendered value: those never
/// contain a NUL byte... and even if one did, it would only share this counter).
pub const GLOBAL_KEY: &str = "\u{0}global";

/// What happened to one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitResult {
    /// Not checked: skipped for a missing key, or after an earlier limit rejected.
    NotChecked,
    Checked(Outcome),
    StoreError(StoreError),
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// One entry per configured limit.
    pub results: Vec<LimitResult>,
    /// Why the request is rejected, if it is.
    pub rejection: Option<Rejection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Limit `i` is exhausted.
    Limited(usize),
    /// Limit `i` needed a key the request does not have (`on_missing_key: deny`).
    MissingKey(usize),
    /// The store failed on limit `i` and `on_store_error` is `deny`.
    StoreError(usize),
}

pub struct Limiter {
    pub limits: Vec<Limit>,
    table: BoundedKeys,
    on_store_error: OnStoreError,
}

impl Limiter {
    pub fn new(
        limits: Vec<Limit>,
        namespace: &str,
        max_keys: u64,
        on_store_error: OnStoreError,
    ) -> Self {
        Limiter {
            limits,
            table: BoundedKeys::new(&format!("rl/{namespace}"), max_keys).with_probes(1),
            on_store_error,
        }
    }

    pub fn table(&self) -> &BoundedKeys {
        &self.table
    }

    /// The record's logical key: limit name and key value (names cannot contain NUL).
    fn logical_key(limit: &Limit, value: &str) -> String {
        let mut k = String::with_capacity(limit.name.len() + 1 + value.len());
        k.push_str(&limit.name);
        k.push('\u{0}');
        k.push_str(value);
        k
    }

    /// Checks and counts one request at `now_us` (µs since the epoch). `keys` has one entry per limit.
    pub fn check(&self, keys: &[Key], now_us: u64, store: &mut dyn SharedData) -> Verdict {
        let mut results = vec![LimitResult::NotChecked; self.limits.len()];
        // (limit, logical key, refund mark) of every unit taken so far
        let mut taken: Vec<(&Algorithm, String, u64)> = Vec::new();
        let mut rejection = None;
        for (i, limit) in self.limits.iter().enumerate() {
            let value = match keys.get(i) {
                Some(Key::Value(v)) => v.as_str(),
                Some(Key::Deny) => {
                    rejection = Some(Rejection::MissingKey(i));
                    break;
                }
                Some(Key::Skip) | None => continue,
            };
            let logical = Self::logical_key(limit, value);
            let algo = &limit.algorithm;
            let step = self.table.update(store, &logical, now_us, |state| {
                let step = algo.consume(state, now_us);
                (step.write, (step.outcome, step.mark))
            });
            match step {
                Ok((outcome, mark)) => {
                    results[i] = LimitResult::Checked(outcome);
                    if !outcome.allowed {
                        rejection = Some(Rejection::Limited(i));
                        break;
                    }
                    taken.push((algo, logical, mark));
                }
                Err(e) => {
                    results[i] = LimitResult::StoreError(e);
                    if self.on_store_error == OnStoreError::Deny {
                        rejection = Some(Rejection::StoreError(i));
                        break;
                    }
                }
            }
        }
        if rejection.is_some() {
            for (algo, logical, mark) in taken {
                // A failed refund leaves the unit spent: conservative, and nothing better can be done.
                let _ = self.table.update(store, &logical, now_us, |state| {
                    (algo.refund(state, mark), ())
                });
            }
        }
        Verdict { results, rejection }
    }
}

impl Verdict {
    /// The outcome to report in headers: the rejecting limit's, else the checked limit with the fewest
    /// requests remaining (the first of equals).
    pub fn reported(&self) -> Option<Outcome> {
        if let Some(Rejection::Limited(i)) = self.rejection {
            if let Some(LimitResult::Checked(o)) = self.results.get(i) {
                return Some(*o);
            }
        }
        self.results
            .iter()
            .filter_map(|r| match r {
                LimitResult::Checked(o) => Some(*o),
                _ => None,
            })
            .min_by_key(|o| o.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnMissingKey;
    use portcullis_common::template::Template;
    use portcullis_common::testing::MemoryStore;
    #[cfg(not(target_arch = "wasm32"))]
    use std::sync::{Arc, Mutex};

    const S: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn limit(name: &str, algorithm: Algorithm) -> Limit {
        Limit {
            name: name.into(),
            key: Template::parse("${client_ip}").unwrap(),
            on_missing_key: OnMissingKey::Skip,
            algorithm,
        }
    }

    fn bucket(rate: u64, burst: u64) -> Algorithm {
        Algorithm::TokenBucket {
            rate,
            per_us: S,
            burst,
        }
    }

    fn key(v: &str) -> Key {
        Key::Value(v.into())
    }

    fn admitted(
        l: &Limiter,
        keys: &[Key],
        now: u64,
        store: &mut dyn SharedData,
        n: usize,
    ) -> usize {
        (0..n)
            .filter(|_| l.check(keys, now, store).rejection.is_none())
            .count()
    }

    #[test]
    fn keys_are_independent_and_limits_are_per_name() {
        let l = Limiter::new(
            vec![limit("a", bucket(1, 2)), limit("b", bucket(1, 3))],
            "t",
            1000,
            OnStoreError::Allow,
        );
        let mut store = MemoryStore::default();
        assert_eq!(admitted(&l, &[key("x"), Key::Skip], T0, &mut store, 5), 2);
        assert_eq!(admitted(&l, &[key("y"), Key::Skip], T0, &mut store, 5), 2);
        assert_eq!(admitted(&l, &[Key::Skip, key("x")], T0, &mut store, 5), 3);
    }

    #[test]
    fn a_rejection_gives_back_what_earlier_limits_took() {
        // per-key 3, global 2: the third request of key x is rejected by the global limit, and must not
        // have spent one of x's units.
        let l = Limiter::new(
            vec![
                limit("per_key", bucket(1, 3)),
                limit("global", bucket(1, 2)),
            ],
            "t",
            1000,
            OnStoreError::Allow,
        );
        let mut store = MemoryStore::default();
        let g = key("all");
        assert_eq!(admitted(&l, &[key("x"), g.clone()], T0, &mut store, 5), 2);
        let v = l.check(&[key("x"), g.clone()], T0, &mut store);
        assert_eq!(v.rejection, Some(Rejection::Limited(1)));
        assert_eq!(
            v.reported().unwrap().limit,
            2,
            "the rejecting limit is reported"
        );
        // the global bucket refills one token; x still has exactly one unit left (3 - 2 admitted)
        let only_x = [key("x"), Key::Skip];
        assert_eq!(admitted(&l, &only_x, T0, &mut store, 5), 1);
    }

    #[test]
    fn missing_keys_can_deny() {
        let l = Limiter::new(vec![limit("a", bucket(1, 1))], "t", 10, OnStoreError::Allow);
        let mut store = MemoryStore::default();
        let v = l.check(&[Key::Deny], T0, &mut store);
        assert_eq!(v.rejection, Some(Rejection::MissingKey(0)));
        assert!(store.is_empty());
        assert_eq!(l.check(&[Key::Skip], T0, &mut store).rejection, None);
    }

    /// A store whose every operation fails, to exercise `on_store_error`.
    struct Broken;
    impl SharedData for Broken {
        fn get(&self, _: &str) -> Result<Option<portcullis_common::store::Versioned>, StoreError> {
            Err(StoreError::Host)
        }
        fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
            Err(StoreError::Host)
        }
    }

    #[test]
    fn store_errors_follow_on_store_error() {
        let allow = Limiter::new(vec![limit("a", bucket(1, 1))], "t", 10, OnStoreError::Allow);
        let v = allow.check(&[key("x")], T0, &mut Broken);
        assert_eq!(v.rejection, None);
        assert_eq!(v.results, vec![LimitResult::StoreError(StoreError::Host)]);
        let deny = Limiter::new(vec![limit("a", bucket(1, 1))], "t", 10, OnStoreError::Deny);
        assert_eq!(
            deny.check(&[key("x")], T0, &mut Broken).rejection,
            Some(Rejection::StoreError(0))
        );
    }

    #[test]
    fn a_full_table_is_a_store_error_not_a_shared_counter() {
        let l = Limiter::new(vec![limit("a", bucket(1, 1))], "t", 1, OnStoreError::Deny);
        let mut store = MemoryStore::default();
        assert_eq!(l.check(&[key("x")], T0, &mut store).rejection, None);
        assert_eq!(
            l.check(&[key("y")], T0, &mut store).rejection,
            Some(Rejection::StoreError(0)),
            "y must not reuse x's live record"
        );
        // once x's record expires (bucket full again after 1s) the slot serves y
        assert_eq!(l.check(&[key("y")], T0 + S, &mut store).rejection, None);
    }

    #[test]
    fn two_hundred_thousand_distinct_keys_stay_within_max_keys() {
        let max_keys = 100_000; // the default
        let l = Limiter::new(
            vec![limit("a", bucket(1, 5))],
            "mem",
            max_keys,
            OnStoreError::Allow,
        );
        let mut store = MemoryStore::default();
        let mut errors = 0;
        for i in 0..200_000u64 {
            // 10 000 new keys per simulated second: records expire after 1s, so slots are reused
            let now = T0 + (i / 10_000) * S;
            let v = l.check(&[key(&format!("client-{i}"))], now, &mut store);
            if matches!(v.results[0], LimitResult::StoreError(_)) {
                errors += 1;
            }
        }
        assert!(store.len() as u64 <= max_keys, "{} records", store.len());
        assert!(
            store.len() as u64 > max_keys / 2,
            "slots are used: {}",
            store.len()
        );
        let biggest = store
            .keys()
            .map(|k| store.get(k).unwrap().unwrap().value.len())
            .max()
            .unwrap();
        assert_eq!(biggest, 16 + crate::algo::MAX_STATE_BYTES);
        let bytes: usize = store
            .keys()
            .map(|k| k.len() + store.get(k).unwrap().unwrap().value.len())
            .sum();
        let longest_key = l.table().slot_key_of(max_keys - 1).len();
        assert_eq!(longest_key, "portcullis/rl/mem/99999".len());
        assert!(
            bytes <= max_keys as usize * (longest_key + 33),
            "{bytes} bytes"
        );
        // with at most 10 000 live keys in 100 000 slots, a new key meets a live record < 1 time in 10
        assert!(errors < 200_000 / 10, "{errors} collisions");
    }

    /// Shared data behind a mutex, shared by threads like workers share one VM's store. Each `get` and
    /// `set` locks separately, so other threads interleave between a read and its write. (Threads: native
    /// only; wasm32-wasip1 has none.)
    #[cfg(not(target_arch = "wasm32"))]
    #[derive(Clone)]
    struct ThreadStore(Arc<Mutex<MemoryStore>>, Arc<Mutex<u64>>);
    #[cfg(not(target_arch = "wasm32"))]
    impl SharedData for ThreadStore {
        fn get(
            &self,
            key: &str,
        ) -> Result<Option<portcullis_common::store::Versioned>, StoreError> {
            let r = self.0.lock().map_err(|_| StoreError::Host)?.get(key);
            std::thread::yield_now();
            r
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            let mut guard = self.0.lock().map_err(|_| StoreError::Host)?;
            // every 7th write also fails as if another worker had just written (on top of the real races;
            // injecting much more often livelocks the threads, since each injection invalidates every read)
            let mut n = self.1.lock().map_err(|_| StoreError::Host)?;
            *n += 1;
            if *n % 7 == 0 {
                guard.inject_cas_mismatches(1);
            }
            drop(n);
            guard.set(key, value, cas)
        }
    }

    #[cfg(not(target_arch = "wasm32"))] // threads: native only
    fn hammer(
        store: MemoryStore,
        algos: &[Algorithm],
        threads: usize,
        per_thread: usize,
    ) -> Vec<usize> {
        let store = ThreadStore(Arc::new(Mutex::new(store)), Arc::new(Mutex::new(0)));
        let limits: Vec<Limit> = algos
            .iter()
            .enumerate()
            .map(|(i, a)| limit(&format!("l{i}"), *a))
            .collect();
        let l = Arc::new(Limiter::new(limits, "race", 100, OnStoreError::Deny));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (l, mut s) = (l.clone(), store.clone());
                std::thread::spawn(move || {
                    let keys = vec![key("same"); l.limits.len()];
                    let mut mine = vec![0usize; 3];
                    for _ in 0..per_thread {
                        match l.check(&keys, T0, &mut s).rejection {
                            None => mine[0] += 1,
                            Some(Rejection::Limited(_)) => mine[1] += 1,
                            Some(_) => mine[2] += 1,
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(vec![0; 3], |acc, m| {
                acc.iter().zip(m).map(|(a, b)| a + b).collect()
            })
    }

    #[cfg(not(target_arch = "wasm32"))] // threads: native only
    #[test]
    fn interleaved_workers_with_injected_cas_mismatches_never_over_admit() {
        let algos = [
            bucket(1, 25),
            Algorithm::FixedWindow {
                requests: 25,
                window_us: 60 * S,
            },
            Algorithm::SlidingWindow {
                requests: 25,
                window_us: 60 * S,
            },
        ];
        for envoy in [false, true] {
            for algo in algos {
                let store = if envoy {
                    MemoryStore::envoy()
                } else {
                    MemoryStore::default()
                };
                let [ok, limited, errors] = hammer(store, &[algo], 6, 40)[..] else {
                    unreachable!()
                };
                // Every request sees the same instant: exactly 25 units exist and all are spent
                // (a request that lost too many CAS races is a store error, denied, and spends nothing).
                assert_eq!(
                    ok, 25,
                    "{algo:?} envoy={envoy}: {limited} limited, {errors} errors"
                );
                assert_eq!(ok + limited + errors, 240);
            }
        }
        // two limits at once: the refunds keep the tighter one exact and the looser one unspent
        let [ok, _, _] = hammer(MemoryStore::envoy(), &[bucket(1, 30), bucket(1, 10)], 6, 40)[..]
        else {
            unreachable!()
        };
        assert_eq!(ok, 10);
    }

    /// Worker B's view of the store: runs `between` (worker A's requests) after B's first read and before
    /// B's first write, the interleaving that loses updates when a first write may overwrite. `naive`
    /// replaces [`SharedData::create`] by a plain `set(.., 0)`, as a filter unaware of Envoy's rule would.
    struct Interleaved<'a> {
        store: portcullis_common::testing::SharedMemoryStore,
        between: Option<Box<dyn FnOnce() + 'a>>,
        naive: bool,
    }
    impl SharedData for Interleaved<'_> {
        fn get(
            &self,
            key: &str,
        ) -> Result<Option<portcullis_common::store::Versioned>, StoreError> {
            self.store.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if let Some(f) = self.between.take() {
                f();
            }
            self.store.set(key, value, cas)
        }
        fn create(&mut self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
            if self.naive {
                if let Some(f) = self.between.take() {
                    f();
                }
                return self.store.set(key, value, 0).map(|()| true);
            }
            // the trait's own implementation, through our `set`
            match self.set(key, value, portcullis_common::store::CREATE_CAS) {
                Ok(()) => return Ok(true),
                Err(StoreError::CasMismatch) => {}
                Err(e) => return Err(e),
            }
            if self.get(key)?.is_some() {
                return Ok(false);
            }
            match self.set(key, value, 0) {
                Ok(()) => Ok(true),
                Err(StoreError::CasMismatch) => Ok(false),
                Err(e) => Err(e),
            }
        }
    }

    fn first_write_race(naive: bool) -> usize {
        let l = Limiter::new(
            vec![limit("a", bucket(1, 5))],
            "race",
            10,
            OnStoreError::Deny,
        );
        let shared = portcullis_common::testing::SharedMemoryStore(std::rc::Rc::new(
            std::cell::RefCell::new(MemoryStore::envoy()),
        ));
        let mut worker_a = shared.clone();
        let l_ref = &l;
        let mut worker_b = Interleaved {
            store: shared.clone(),
            between: Some(Box::new(move || {
                for _ in 0..3 {
                    assert_eq!(l_ref.check(&[key("ip")], T0, &mut worker_a).rejection, None);
                }
            })),
            naive,
        };
        assert_eq!(l.check(&[key("ip")], T0, &mut worker_b).rejection, None);
        // 4 requests passed so far (3 by A, 1 by B); count how many more the store lets through
        let mut after = shared.clone();
        (0..10)
            .filter(|_| l.check(&[key("ip")], T0, &mut after).rejection.is_none())
            .count()
    }

    #[test]
    fn a_racing_first_write_on_envoy_cannot_erase_another_workers_counts() {
        assert_eq!(
            first_write_race(false),
            1,
            "burst 5 - 4 passed = exactly 1 more"
        );
        // control: with a plain cas-0 first write, B erases A's three counts and 4 more get through
        assert_eq!(first_write_race(true), 4);
    }
}
