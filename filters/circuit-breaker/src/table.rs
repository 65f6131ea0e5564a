//! The bounded table of breaker records in shared data: `slots` keys `portcullis/circuit-breaker/<slots>/<n>`,
//! each holding `fingerprint (8 LE) | expires µs (8 LE) | payload`. A breaker key may live in any of the
//! `PROBES` consecutive slots from its home slot.
//!
//! Unlike a first-free-slot lookup, every update first looks for the key's own live record in *all* its probe
//! slots, and only then takes the first free one. Otherwise a slot earlier in the probe order that becomes free
//! (another key's record expired) would shadow the key's record: the breaker would read as fresh and closed
//! while its real, open state sat one slot further. Keys are never deleted, so a probe slot that does not
//! exist at all ends the search (no record can sit behind it), which keeps the common case at one read.

use portcullis_common::store::{cas_update, fingerprint, SharedData, StoreError, ZONE};

/// Slots a key may use, starting at its home slot.
pub const PROBES: u64 = 4;
const HEADER: usize = 16;

#[derive(Debug, Clone)]
pub struct BreakerTable {
    namespace: String,
    slots: u64,
}

enum Slot {
    /// The key was never created: nothing lives here or further along the probe sequence.
    Absent,
    /// Empty, expired, a placeholder or corrupt.
    Free,
    Owned,
    Taken,
}

impl BreakerTable {
    /// The slot count is part of the namespace: a key must map to the same slots in every worker.
    pub fn new(slots: u64) -> Self {
        let slots = slots.max(1);
        BreakerTable {
            namespace: format!("{ZONE}/circuit-breaker/{slots}"),
            slots,
        }
    }

    pub fn slot_key(&self, slot: u64) -> String {
        format!("{}/{}", self.namespace, slot)
    }

    fn classify(
        &self,
        store: &dyn SharedData,
        slot: u64,
        fp: u64,
        now_us: u64,
    ) -> Result<Slot, StoreError> {
        Ok(match store.get(&self.slot_key(slot))? {
            None => Slot::Absent,
            Some(v) => match decode(&v.value) {
                Some((owner, expires, _)) if expires > now_us => {
                    if owner == fp {
                        Slot::Owned
                    } else {
                        Slot::Taken
                    }
                }
                _ => Slot::Free,
            },
        })
    }

    /// Read-modify-write of `key`'s payload: `update(payload)` gets the live payload (None = no record) and
    /// returns the new payload with its expiry (µs), or None to write nothing. `Full` when every probe slot
    /// holds another key's live record.
    pub fn update<T>(
        &self,
        store: &mut dyn SharedData,
        key: &str,
        now_us: u64,
        mut update: impl FnMut(Option<&[u8]>) -> (Option<(Vec<u8>, u64)>, T),
    ) -> Result<T, StoreError> {
        let fp = fingerprint(key);
        let home = fp % self.slots;
        let mut owned = None;
        let mut first_free = None;
        for probe in 0..PROBES.min(self.slots) {
            let slot = (home + probe) % self.slots;
            match self.classify(store, slot, fp, now_us)? {
                Slot::Owned => {
                    owned = Some(slot);
                    break;
                }
                Slot::Absent => {
                    first_free.get_or_insert(slot);
                    break;
                }
                Slot::Free => {
                    first_free.get_or_insert(slot);
                }
                Slot::Taken => {}
            }
        }
        let slot = owned.or(first_free).ok_or(StoreError::Full)?;
        // Decided again inside the CAS loop, on the value actually read: another key may have taken the slot.
        let mut taken = false;
        let result = cas_update(store, &self.slot_key(slot), |current| {
            let payload = match current.and_then(decode) {
                Some((owner, expires, payload)) if expires > now_us => {
                    if owner != fp {
                        taken = true;
                        return (None, None);
                    }
                    Some(payload)
                }
                _ => None,
            };
            taken = false;
            let (new, out) = update(payload);
            let bytes = new.map(|(payload, expires)| encode(fp, expires, &payload));
            (bytes, Some(out))
        })?;
        match result {
            Some(out) if !taken => Ok(out),
            _ => Err(StoreError::Full),
        }
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
            let Some(v) = store.get(&self.slot_key((home + probe) % self.slots))? else {
                return Ok(None);
            };
            if let Some((owner, expires, payload)) = decode(&v.value) {
                if owner == fp && expires > now_us {
                    return Ok(Some(payload.to_vec()));
                }
            }
        }
        Ok(None)
    }
}

fn encode(fp: u64, expires_us: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&fp.to_le_bytes());
    out.extend_from_slice(&expires_us.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64, &[u8])> {
    let fp = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let expires = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((fp, expires, bytes.get(HEADER..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::MemoryStore;

    fn put(
        t: &BreakerTable,
        store: &mut MemoryStore,
        key: &str,
        value: u8,
        expires: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        t.update(store, key, now, |_| (Some((vec![value], expires)), ()))
    }

    /// Two keys whose home slot is the same in a table of `slots`.
    fn colliding(slots: u64) -> (String, String) {
        let home = |k: &str| fingerprint(k) % slots;
        let a = "key-0".to_string();
        let b = (1..10_000)
            .map(|i| format!("key-{i}"))
            .find(|k| home(k) == home(&a))
            .unwrap();
        (a, b)
    }

    #[test]
    fn a_freed_earlier_slot_never_shadows_a_live_record() {
        let t = BreakerTable::new(64);
        let mut store = MemoryStore::default();
        let (a, b) = colliding(64);
        put(&t, &mut store, &a, 1, 100, 0).unwrap(); // a takes the home slot until t=100
        put(&t, &mut store, &b, 2, 1_000, 0).unwrap(); // b goes one slot further
        assert_eq!(t.get(&store, &b, 200).unwrap(), Some(vec![2]));
        // at t=200 a's record has expired: b must still find (and update) its own record
        let seen = t
            .update(&mut store, &b, 200, |cur| (None, cur.map(<[u8]>::to_vec)))
            .unwrap();
        assert_eq!(seen, Some(vec![2]));
        put(&t, &mut store, &b, 3, 1_000, 200).unwrap();
        assert_eq!(t.get(&store, &b, 200).unwrap(), Some(vec![3]));
        assert_eq!(store.len(), 2, "no second record for b");
    }

    #[test]
    fn keys_stay_within_their_slots_and_a_full_neighbourhood_says_so() {
        let t = BreakerTable::new(8);
        let mut store = MemoryStore::default();
        let mut full = 0;
        for i in 0..200 {
            if put(&t, &mut store, &format!("k{i}"), 1, 1_000, 0) == Err(StoreError::Full) {
                full += 1;
            }
        }
        assert!(store.len() <= 8);
        assert!(full >= 192, "{full}");
        // expired records free their slots
        assert_eq!(put(&t, &mut store, "late", 1, 5_000, 2_000), Ok(()));
    }

    #[test]
    fn a_key_without_a_record_writes_nothing() {
        let t = BreakerTable::new(1024);
        let mut store = MemoryStore::default();
        assert_eq!(
            t.update(&mut store, "quiet", 0, |cur| (None, cur.is_none())),
            Ok(true)
        );
        assert!(store.is_empty());
    }

    #[test]
    fn placeholders_and_corrupt_values_are_free_slots() {
        let t = BreakerTable::new(1);
        let mut store = MemoryStore::default();
        store.set(&t.slot_key(0), &[0], 0).unwrap();
        assert_eq!(put(&t, &mut store, "k", 4, 10, 0), Ok(()));
        assert_eq!(t.get(&store, "k", 0).unwrap(), Some(vec![4]));
    }
}
