//! Shared data (one store per VM id, shared by all worker threads) used safely:
//! every read-modify-write is a compare-and-swap with a bounded number of retries, every key lives in the
//! `portcullis/` namespace (in Kong, the prefix selects the `nginx_wasm_shm_kv_portcullis` zone), and
//! [`BoundedKeys`] maps an unbounded set of logical keys (client IPs, tokens…) onto a fixed number of slots,
//! because Envoy's shared data never expires and Portcullis ships Kong's zone with `eviction=none` (a full zone
//! then fails the write, and ngx_wasm_module answers the request with 500, rather than evicting a key).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// Shared-data key prefix; in Kong it names the shm_kv zone (`nginx_wasm_shm_kv_portcullis`).
pub const ZONE: &str = "portcullis";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another worker changed the value between our read and write.
    CasMismatch,
    /// Every retry lost the race; the caller decides (allow/deny) by its `on_store_error` policy.
    Contended,
    /// No free slot for a new key (all candidates hold live entries of other keys).
    Full,
    /// The host refused (bad key, …). A full zone on Kong's engine never gets here: the engine traps the filter.
    Host,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreError::CasMismatch => "compare-and-swap mismatch",
            StoreError::Contended => "too much contention on a shared key",
            StoreError::Full => "no free slot in the bounded key space",
            StoreError::Host => "the host refused the shared-data operation",
        })
    }
}

/// A versioned value: `cas` must be passed back to overwrite exactly what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub cas: u32,
}

/// Host shared data. `cas = 0` on `set` means "only if the key does not exist yet" is *not* guaranteed by
/// every host (Envoy writes unconditionally), so [`cas_update`] creates absent keys with
/// [`SharedData::create`] and otherwise writes with the cas it read.
pub trait SharedData {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;

    /// Writes `value` only if `key` does not exist: `Ok(true)` when created, `Ok(false)` when the key exists
    /// (nothing written). Never overwrites, on either host:
    /// - Envoy (proxy-wasm-cpp-host) ignores the cas of a missing key and treats `cas = 0` on an existing key
    ///   as unconditional. So the first try passes [`CREATE_CAS`], a non-zero cas: a missing key is created,
    ///   an existing one answers CasMismatch (its cas is the global write counter's value at its last write,
    ///   which equals [`CREATE_CAS`] only for the 4 294 967 295th write of the process, and only then once).
    /// - ngx_wasm_module (Kong) compares the cas strictly: a non-zero cas on a missing key is a mismatch and
    ///   `cas = 0` means "create if absent", atomically. So after a mismatch we look again: still absent (only
    ///   possible on such a host, since neither host deletes keys we never delete) → `cas = 0` create.
    fn create(&mut self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        create_if_absent(self, key, value)
    }
}

/// The host-portable implementation of [`SharedData::create`] (see there), for stores that override it.
pub fn create_if_absent<S: SharedData + ?Sized>(
    store: &mut S,
    key: &str,
    value: &[u8],
) -> Result<bool, StoreError> {
    match store.set(key, value, CREATE_CAS) {
        Ok(()) => return Ok(true),
        Err(StoreError::CasMismatch) => {}
        Err(e) => return Err(e),
    }
    if store.get(key)?.is_some() {
        return Ok(false);
    }
    match store.set(key, value, 0) {
        Ok(()) => Ok(true),
        Err(StoreError::CasMismatch) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The cas [`SharedData::create`] passes first: never the cas of a live key in practice (see there).
pub const CREATE_CAS: u32 = u32::MAX;

/// Most retries a single update makes before reporting [`StoreError::Contended`].
pub const MAX_CAS_RETRIES: usize = 16;

/// Reads `key`, lets `update` compute the new value and a result, writes it with the cas that was read, and
/// retries from the read on a CAS mismatch. `update` returns `None` to leave the key untouched.
pub fn cas_update<T>(
    store: &mut dyn SharedData,
    key: &str,
    update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, StoreError> {
    cas_update_from(store, key, None, update)
}

/// [`cas_update`] whose first attempt starts from `first_read`, a read of `key` the caller has just made
/// (`Some(None)`: the key was absent), saving one host call; a stale read only costs a retry.
fn cas_update_from<T>(
    store: &mut dyn SharedData,
    key: &str,
    mut first_read: Option<Option<Versioned>>,
    mut update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, StoreError> {
    for _ in 0..MAX_CAS_RETRIES {
        let current = match first_read.take() {
            Some(read) => read,
            None => store.get(key)?,
        };
        let (value, cas) = match &current {
            Some(v) => (Some(v.value.as_slice()), v.cas),
            None => (None, 0),
        };
        let (new_value, result) = update(value);
        let Some(new_value) = new_value else {
            return Ok(result);
        };
        if current.is_none() {
            // Never `set(.., 0)` here: on Envoy that would overwrite a value another worker just created.
            match store.create(key, &new_value) {
                Ok(true) => return Ok(result),
                Ok(false) => continue,
                Err(e) => return Err(e),
            }
        }
        match store.set(key, &new_value, cas) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// A 64-bit fingerprint of a logical key (SipHash with fixed keys: identical in every worker of one build).
pub fn fingerprint(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// A fixed set of `slots` shared-data keys `portcullis/<namespace>/<n>` that hold records for any number of
/// logical keys. A record remembers its key's fingerprint and an expiry; an expired record's slot is reused
/// by the next key that hashes there. A key probes up to `PROBES` consecutive slots, so memory never exceeds
/// `slots × (record header + payload)` bytes whatever the traffic.
#[derive(Debug, Clone)]
pub struct BoundedKeys {
    namespace: String,
    slots: u64,
    probes: u64,
}

/// What [`BoundedKeys::search`] found.
struct Search {
    /// The probe `update` starts at.
    start: u64,
    /// That slot as read (`None`: absent).
    start_read: Option<Versioned>,
    /// Whether that slot holds the key's live record.
    live: bool,
}

/// Record layout: fingerprint (8 bytes LE) | expires_at in µs since epoch (8 bytes LE) | payload.
const HEADER: usize = 16;
const PROBES: u64 = 4;

impl BoundedKeys {
    pub fn new(namespace: &str, slots: u64) -> Self {
        BoundedKeys {
            namespace: format!("{ZONE}/{namespace}"),
            slots: slots.max(1),
            probes: PROBES,
        }
    }

    /// Sets how many consecutive slots a key may probe (1..=`PROBES`). With 1 a key has exactly one slot,
    /// so two workers can never create two records for one key (with several probes they can, when a
    /// record in an earlier probe slot expires between their reads): use 1 when every update must be seen
    /// by every later one (exact counters); a key whose slot holds another live key gets `Full`.
    pub fn with_probes(mut self, probes: u64) -> Self {
        self.probes = probes.clamp(1, PROBES);
        self
    }

    /// The shared-data key of slot `slot` (for tests and diagnostics).
    pub fn slot_key_of(&self, slot: u64) -> String {
        self.slot_key(slot)
    }

    pub fn slots(&self) -> u64 {
        self.slots
    }

    fn slot_key(&self, slot: u64) -> String {
        format!("{}/{}", self.namespace, slot)
    }

    /// Read-modify-write of `key`'s payload. `update(payload)` gets the current payload (None when the key has
    /// no live record) and returns the new payload with its expiry (µs since epoch), or `None` to leave it.
    pub fn update<T>(
        &self,
        store: &mut dyn SharedData,
        key: &str,
        now_us: u64,
        mut update: impl FnMut(Option<&[u8]>) -> (Option<(Vec<u8>, u64)>, T),
    ) -> Result<T, StoreError> {
        let fp = fingerprint(key);
        let home = fp % self.slots;
        let probes = self.probes.min(self.slots);
        // The key's own live record comes first wherever it sits in the probe window: otherwise a slot that
        // frees up earlier in the window would get a second, fresh record and hide the live one. Without one,
        // the key takes the first usable slot from its home slot (which is what lets `search` stop at the
        // first absent slot); the CAS loop never goes past an absent slot, as it is usable.
        let (start, mut start_read) = if probes > 1 {
            let search = self.search(store, fp, home, now_us)?;
            (search.start, Some(search.start_read))
        } else {
            (0, None)
        };
        for k in 0..probes {
            let probe = (start + k) % probes;
            let slot_key = self.slot_key((home + probe) % self.slots);
            // Whether this slot can hold `key`: decided inside the CAS loop, on the value actually read.
            let mut usable = true;
            let result = cas_update_from(store, &slot_key, start_read.take(), |current| {
                let live_payload = match current.and_then(decode_record) {
                    Some((owner, expires, payload)) if owner == fp && expires > now_us => {
                        Some(payload)
                    }
                    Some((owner, expires, _)) if owner != fp && expires > now_us => {
                        usable = false;
                        return (None, None);
                    }
                    _ => None, // empty, expired or corrupt: the slot is free for this key
                };
                usable = true;
                let (new, out) = update(live_payload);
                let bytes = new.map(|(payload, expires)| encode_record(fp, expires, &payload));
                (bytes, Some(out))
            })?;
            if usable {
                if let Some(out) = result {
                    return Ok(out);
                }
            }
        }
        Err(StoreError::Full)
    }

    /// Where `update` starts for fingerprint `fp`: the first probe (0-based from the home slot) holding a
    /// live record of `fp`, else the home slot; with what was read there.
    ///
    /// A probe slot that does not exist ends the search: no record of `fp` can sit behind it. Records are only
    /// written by [`BoundedKeys::update`] (nothing else writes under a table's namespace), which writes in a
    /// probe slot only after reading every earlier probe slot of that key to exist: without a live record it
    /// takes the first usable slot from the home slot, and an absent slot is usable. And no slot key is ever
    /// deleted ([`SharedData`] has no delete; Kong's zone is declared `eviction=none`), so those earlier slots still exist. This
    /// keeps the common case (a new key, or a key in its home slot) at one shared-data read, each a host call,
    /// instead of one per probe; and `update` starts its compare-and-swap from that read.
    fn search(
        &self,
        store: &dyn SharedData,
        fp: u64,
        home: u64,
        now_us: u64,
    ) -> Result<Search, StoreError> {
        let mut home_read = None;
        for probe in 0..self.probes.min(self.slots) {
            let read = store.get(&self.slot_key((home + probe) % self.slots))?;
            let Some(v) = &read else {
                break;
            };
            if let Some((owner, expires, _)) = decode_record(&v.value) {
                if owner == fp && expires > now_us {
                    return Ok(Search {
                        start: probe,
                        start_read: read,
                        live: true,
                    });
                }
            }
            if probe == 0 {
                home_read = read;
            }
        }
        Ok(Search {
            start: 0,
            start_read: home_read,
            live: false,
        })
    }

    /// The live payload of `key`, if any (no write).
    pub fn get(
        &self,
        store: &dyn SharedData,
        key: &str,
        now_us: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let fp = fingerprint(key);
        let search = self.search(store, fp, fp % self.slots, now_us)?;
        Ok(search
            .start_read
            .filter(|_| search.live)
            .and_then(|v| decode_record(&v.value).map(|(_, _, payload)| payload.to_vec())))
    }
}

fn encode_record(fp: u64, expires_us: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&fp.to_le_bytes());
    out.extend_from_slice(&expires_us.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode_record(bytes: &[u8]) -> Option<(u64, u64, &[u8])> {
    let fp = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let expires = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((fp, expires, bytes.get(HEADER..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryStore;

    fn incr(store: &mut dyn SharedData, key: &str) -> Result<u64, StoreError> {
        cas_update(store, key, |cur| {
            let n = cur
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
                + 1;
            (Some(n.to_le_bytes().to_vec()), n)
        })
    }

    #[test]
    fn cas_update_retries_after_a_mismatch() {
        let mut store = MemoryStore::default();
        store.inject_cas_mismatches(3);
        assert_eq!(incr(&mut store, "k"), Ok(1));
        assert_eq!(incr(&mut store, "k"), Ok(2));
    }

    #[test]
    fn cas_update_gives_up_after_bounded_retries() {
        let mut store = MemoryStore::default();
        store.inject_cas_mismatches(MAX_CAS_RETRIES + 1);
        assert_eq!(incr(&mut store, "k"), Err(StoreError::Contended));
    }

    #[test]
    fn cas_update_can_leave_the_value_alone() {
        let mut store = MemoryStore::default();
        let r = cas_update(&mut store, "k", |_| (None, 7));
        assert_eq!(r, Ok(7));
        assert_eq!(store.len(), 0);
    }

    fn bump(
        keys: &BoundedKeys,
        store: &mut MemoryStore,
        key: &str,
        now: u64,
    ) -> Result<u8, StoreError> {
        keys.update(store, key, now, |cur| {
            let n = cur.and_then(|p| p.first().copied()).unwrap_or(0) + 1;
            (Some((vec![n], now + 1_000)), n)
        })
    }

    #[test]
    fn bounded_keys_keep_separate_counts_per_key() {
        let keys = BoundedKeys::new("test", 1000);
        let mut store = MemoryStore::default();
        assert_eq!(bump(&keys, &mut store, "a", 0), Ok(1));
        assert_eq!(bump(&keys, &mut store, "a", 10), Ok(2));
        assert_eq!(bump(&keys, &mut store, "b", 10), Ok(1));
        assert_eq!(keys.get(&store, "a", 10).unwrap(), Some(vec![2]));
        assert_eq!(keys.get(&store, "a", 5_000).unwrap(), None, "expired");
    }

    #[test]
    fn bounded_keys_never_exceed_their_slots_and_reuse_expired_ones() {
        let keys = BoundedKeys::new("flood", 64);
        let mut store = MemoryStore::default();
        let mut full = 0;
        for i in 0..10_000 {
            if bump(&keys, &mut store, &format!("client-{i}"), 0) == Err(StoreError::Full) {
                full += 1;
            }
        }
        assert!(store.len() <= 64, "{} keys", store.len());
        assert_eq!(
            full,
            10_000 - store.len(),
            "every key that found no slot says so"
        );
        // once the records expire, new keys find room again
        assert_eq!(bump(&keys, &mut store, "late", 2_000), Ok(1));
        assert!(store.len() <= 64);
    }

    #[test]
    fn create_never_overwrites_an_existing_key_on_either_host() {
        for mut store in [MemoryStore::default(), MemoryStore::envoy()] {
            assert_eq!(store.create("k", b"first"), Ok(true));
            assert_eq!(store.create("k", b"second"), Ok(false));
            assert_eq!(store.get("k").unwrap().unwrap().value, b"first");
        }
    }

    #[test]
    fn a_stale_first_write_cannot_clobber_a_value_another_worker_created() {
        // Worker B reads "absent"; before B writes, worker A creates the key and updates it twice. B's write
        // must fail and B must recompute from A's value (on Envoy a plain `set(.., 0)` would erase A's work).
        use crate::testing::SharedMemoryStore;
        for memory in [MemoryStore::default(), MemoryStore::envoy()] {
            let shared = SharedMemoryStore(std::rc::Rc::new(std::cell::RefCell::new(memory)));
            let mut worker_a = shared.clone();
            let mut worker_b = shared.clone();
            let mut seen = Vec::new();
            let b = cas_update(&mut worker_b, "n", |cur| {
                let n = cur
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                seen.push(n);
                if seen.len() == 1 {
                    // A runs between B's read and B's write
                    assert_eq!(incr(&mut worker_a, "n"), Ok(1));
                    assert_eq!(incr(&mut worker_a, "n"), Ok(2));
                }
                (Some((n + 1).to_le_bytes().to_vec()), n + 1)
            });
            assert_eq!(seen, vec![0, 2], "B retried from A's value");
            assert_eq!(b, Ok(3));
            assert_eq!(incr(&mut worker_a, "n"), Ok(4));
        }
    }

    #[test]
    fn an_update_whose_probe_read_went_stale_retries_from_the_new_value() {
        // The probe scan's read seeds the compare-and-swap; another worker writing the slot in between makes
        // that first write fail, and the update is recomputed from the other worker's record.
        use crate::testing::SharedMemoryStore;
        for memory in [MemoryStore::default(), MemoryStore::envoy()] {
            let shared = SharedMemoryStore(std::rc::Rc::new(std::cell::RefCell::new(memory)));
            let keys = BoundedKeys::new("stale", 64);
            let (mut worker_a, mut worker_b) = (shared.clone(), shared.clone());
            let mut count = |store: &mut SharedMemoryStore, seen: &mut Vec<u8>, race: bool| {
                keys.update(store, "k", 0, |cur| {
                    let n = cur.and_then(|p| p.first().copied()).unwrap_or(0);
                    seen.push(n);
                    if race && seen.len() == 1 {
                        let mut ignored = Vec::new();
                        let a = keys.update(&mut worker_a, "k", 0, |cur| {
                            let n = cur.and_then(|p| p.first().copied()).unwrap_or(0);
                            ignored.push(n);
                            (Some((vec![n + 1], 1_000)), n + 1)
                        });
                        assert!(a.is_ok());
                    }
                    (Some((vec![n + 1], 1_000)), n + 1)
                })
            };
            let mut seen = Vec::new();
            assert_eq!(count(&mut worker_b, &mut seen, false), Ok(1));
            let mut seen = Vec::new();
            assert_eq!(count(&mut worker_b, &mut seen, true), Ok(3));
            assert_eq!(seen, vec![1, 2], "retried from the other worker's value");
        }
    }

    #[test]
    fn envoy_semantics_let_cas_zero_overwrite_which_is_why_create_exists() {
        let mut store = MemoryStore::envoy();
        store.set("k", b"a", 0).unwrap();
        store.set("k", b"b", 0).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().value, b"b");
    }

    #[test]
    fn a_single_probe_table_keeps_one_record_per_key() {
        let keys = BoundedKeys::new("one", 8).with_probes(1);
        let mut store = MemoryStore::default();
        let mut full = 0;
        for i in 0..100 {
            match bump(&keys, &mut store, &format!("k{i}"), 0) {
                Ok(_) => {}
                Err(StoreError::Full) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(store.len() <= 8);
        assert_eq!(
            full,
            100 - store.len(),
            "every key that found no slot says so"
        );
    }

    #[test]
    fn a_live_record_later_in_the_window_wins_over_an_earlier_free_slot() {
        // Find two keys with the same home slot: the second one lands in the next probe slot.
        let keys = BoundedKeys::new("order", 16);
        let home = |k: &str| fingerprint(k) % 16;
        let first = "k0".to_string();
        let second = (1..1000)
            .map(|i| format!("k{i}"))
            .find(|k| home(k) == home(&first))
            .unwrap();
        let mut store = MemoryStore::default();
        let bump_until = |store: &mut MemoryStore, key: &str, now: u64, expires: u64| {
            keys.update(store, key, now, |cur| {
                let n = cur.and_then(|p| p.first().copied()).unwrap_or(0) + 1;
                (Some((vec![n], expires)), n)
            })
        };
        // `first` in the home slot until t=100, `second` in the next slot
        assert_eq!(bump_until(&mut store, &first, 0, 100), Ok(1));
        assert_eq!(bump_until(&mut store, &second, 0, 10_000), Ok(1));
        // the first key's record expires: its (earlier) slot is free, yet `second` finds its own record
        let seen = keys.update(&mut store, &second, 200, |cur| {
            (None, cur.map(<[u8]>::to_vec))
        });
        assert_eq!(seen, Ok(Some(vec![1])));
        // and keeps counting there
        assert_eq!(bump_until(&mut store, &second, 200, 10_000), Ok(2));
        assert_eq!(keys.get(&store, &second, 200).unwrap(), Some(vec![2]));
        assert_eq!(store.len(), 2, "no second record for `second`");
    }

    /// A key with home slot `home` in a table of `slots`, other than those in `not`.
    fn key_at_home(slots: u64, home: u64, not: &[String]) -> String {
        (0..100_000)
            .map(|i| format!("key-{i}"))
            .find(|k| fingerprint(k) % slots == home && !not.contains(k))
            .unwrap()
    }

    #[test]
    fn a_key_whose_probe_slots_are_all_taken_gets_full_even_in_an_empty_table() {
        let keys = BoundedKeys::new("hood", 64);
        let mut store = MemoryStore::default();
        let target = "target".to_string();
        let home = fingerprint(&target) % 64;
        let mut neighbours = vec![target.clone()];
        for probe in 0..PROBES {
            let k = key_at_home(64, (home + probe) % 64, &neighbours);
            assert_eq!(bump(&keys, &mut store, &k, 0), Ok(1));
            neighbours.push(k);
        }
        assert_eq!(store.len(), 4, "each neighbour in its own home slot");
        assert_eq!(bump(&keys, &mut store, &target, 0), Err(StoreError::Full));
        assert_eq!(store.len(), 4);
        // once the neighbours' records expire, the key takes its home slot
        assert_eq!(bump(&keys, &mut store, &target, 2_000), Ok(1));
        let owner = store
            .get(&keys.slot_key_of(home))
            .unwrap()
            .and_then(|v| decode_record(&v.value).map(|(fp, _, _)| fp));
        assert_eq!(owner, Some(fingerprint(&target)));
        assert_eq!(keys.get(&store, &target, 2_000).unwrap(), Some(vec![1]));
    }

    #[test]
    fn a_key_without_a_record_writes_nothing() {
        let keys = BoundedKeys::new("quiet", 1024);
        let mut store = MemoryStore::default();
        let r = keys.update(&mut store, "quiet", 0, |cur| (None, cur.is_none()));
        assert_eq!(r, Ok(true));
        assert!(store.is_empty());
    }

    /// Shared data that logs every read, to count host calls.
    struct CountingStore {
        inner: MemoryStore,
        reads: std::cell::RefCell<Vec<String>>,
    }

    impl SharedData for CountingStore {
        fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
            self.reads.borrow_mut().push(key.to_string());
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_slot_that_was_never_created_ends_the_probe_scan() {
        let keys = BoundedKeys::new("reads", 64);
        let mut store = CountingStore {
            inner: MemoryStore::envoy(),
            reads: Default::default(),
        };
        let home = keys.slot_key_of(fingerprint("new") % 64);
        // a new key in an empty table: the probe scan reads the home slot once (not all 4 probe slots), and
        // the compare-and-swap starts from that read to create the record
        let r = keys.update(&mut store, "new", 0, |_| (Some((vec![1], 1_000)), ()));
        assert_eq!(r, Ok(()));
        assert_eq!(store.reads.take(), vec![home.clone()]);
        // a key in its home slot: the same single read
        let r = keys.update(&mut store, "new", 10, |_| (Some((vec![2], 1_000)), ()));
        assert_eq!(r, Ok(()));
        assert_eq!(store.reads.take(), vec![home.clone()]);
        // lookups read one slot, whether the key is there or not
        assert_eq!(keys.get(&store, "new", 10), Ok(Some(vec![2])));
        assert_eq!(store.reads.take(), vec![home]);
        assert_eq!(keys.get(&store, "absent", 10), Ok(None));
        assert_eq!(
            store.reads.take(),
            vec![keys.slot_key_of(fingerprint("absent") % 64)]
        );
    }

    #[test]
    fn placeholders_and_corrupt_records_are_free_slots() {
        // a 1-byte placeholder (what the circuit breaker stores instead of a blind write) or a short value
        for value in [&[0u8][..], b"xx"] {
            let keys = BoundedKeys::new("c", 1);
            let mut store = MemoryStore::default();
            store.set("portcullis/c/0", value, 0).unwrap();
            assert_eq!(keys.get(&store, "k", 0).unwrap(), None);
            assert_eq!(bump(&keys, &mut store, "k", 0), Ok(1));
            assert_eq!(keys.get(&store, "k", 0).unwrap(), Some(vec![1]));
        }
    }
}
