//! Shared data (one store per VM id, shared by all worker threads) used safely:
//! every read-modify-write is a compare-and-swap with a bounded number of retries, every key lives in the
//! `portcullis/` namespace (in Kong, the prefix selects the `nginx_wasm_shm_kv_portcullis` zone), and
//! [`BoundedKeys`] maps an unbounded set of logical keys (client IPs, tokens…) onto a fixed number of slots,
//! because Kong's shm_kv never evicts and Envoy's shared data never expires.

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
    /// The host refused (zone full in Kong, bad key, …).
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
/// every host, so [`cas_update`] always writes with the cas it read (0 when the key was absent).
pub trait SharedData {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// Most retries a single update makes before reporting [`StoreError::Contended`].
pub const MAX_CAS_RETRIES: usize = 16;

/// Reads `key`, lets `update` compute the new value and a result, writes it with the cas that was read, and
/// retries from the read on a CAS mismatch. `update` returns `None` to leave the key untouched.
pub fn cas_update<T>(
    store: &mut dyn SharedData,
    key: &str,
    mut update: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, StoreError> {
    for _ in 0..MAX_CAS_RETRIES {
        let current = store.get(key)?;
        let (value, cas) = match &current {
            Some(v) => (Some(v.value.as_slice()), v.cas),
            None => (None, 0),
        };
        let (new_value, result) = update(value);
        let Some(new_value) = new_value else {
            return Ok(result);
        };
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
}

/// Record layout: fingerprint (8 bytes LE) | expires_at in µs since epoch (8 bytes LE) | payload.
const HEADER: usize = 16;
const PROBES: u64 = 4;

impl BoundedKeys {
    pub fn new(namespace: &str, slots: u64) -> Self {
        BoundedKeys {
            namespace: format!("{ZONE}/{namespace}"),
            slots: slots.max(1),
        }
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
        for probe in 0..PROBES.min(self.slots) {
            let slot_key = self.slot_key((home + probe) % self.slots);
            // Whether this slot can hold `key`: decided inside the CAS loop, on the value actually read.
            let mut usable = true;
            let result = cas_update(store, &slot_key, |current| {
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

    /// The live payload of `key`, if any (no write).
    pub fn get(
        &self,
        store: &dyn SharedData,
        key: &str,
        now_us: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let fp = fingerprint(key);
        let home = fp % self.slots;
        for probe in 0..PROBES.min(self.slots) {
            if let Some(v) = store.get(&self.slot_key((home + probe) % self.slots))? {
                if let Some((owner, expires, payload)) = decode_record(&v.value) {
                    if owner == fp && expires > now_us {
                        return Ok(Some(payload.to_vec()));
                    }
                }
            }
        }
        Ok(None)
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
        assert!(full > 9_000, "a full table must say so, got {full}");
        // once the records expire, new keys find room again
        assert_eq!(bump(&keys, &mut store, "late", 2_000), Ok(1));
        assert!(store.len() <= 64);
    }

    #[test]
    fn corrupt_records_are_treated_as_free() {
        let keys = BoundedKeys::new("c", 1);
        let mut store = MemoryStore::default();
        store.set("portcullis/c/0", b"xx", 0).unwrap();
        assert_eq!(bump(&keys, &mut store, "k", 0), Ok(1));
    }
}
