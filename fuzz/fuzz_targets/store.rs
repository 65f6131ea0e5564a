//! BoundedKeys / cas_update against MemoryStore (both cas rules) under arbitrary operations, clocks and injected
//! CAS mismatches: never panics; the table never holds more than `slots` keys; a successful update is read
//! back by `get` until it expires.
#![no_main]
use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use portcullis_common::store::{cas_update, BoundedKeys, SharedData, StoreError};
use portcullis_common::testing::MemoryStore;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut store = if u.arbitrary().unwrap_or(false) {
        MemoryStore::envoy()
    } else {
        MemoryStore::default()
    };
    let slots = u.int_in_range(1..=64u64).unwrap_or(8);
    let probes = u.int_in_range(1..=8u64).unwrap_or(4);
    let table = BoundedKeys::new("fuzz", slots).with_probes(probes);
    let mut now: u64 = u.int_in_range(0..=1u64 << 40).unwrap_or(0);
    let ops = u.int_in_range(0..=400usize).unwrap_or(0);
    for _ in 0..ops {
        if u.is_empty() {
            break;
        }
        let key = format!("k{}", u.int_in_range(0..=200u16).unwrap_or(0));
        match u.int_in_range(0..=5u8).unwrap_or(0) {
            0 | 1 => {
                let ttl = u.int_in_range(0..=10_000_000u64).unwrap_or(1);
                let len = u.int_in_range(0..=16usize).unwrap_or(0).min(u.len());
                let payload = u.bytes(len).unwrap_or(&[]).to_vec();
                let expires = now.saturating_add(ttl);
                let r = table.update(&mut store, &key, now, |_| {
                    (Some((payload.clone(), expires)), ())
                });
                match r {
                    Ok(()) if expires > now => {
                        let got = table.get(&store, &key, now);
                        assert_eq!(got, Ok(Some(payload)), "update of {key} not visible");
                    }
                    Ok(()) | Err(StoreError::Full) | Err(StoreError::Contended) => {}
                    Err(e) => panic!("unexpected store error {e:?}"),
                }
            }
            2 => {
                let _ = table.get(&store, &key, now);
            }
            3 => now = now.saturating_add(u.int_in_range(0..=20_000_000u64).unwrap_or(0)),
            4 => store.inject_cas_mismatches(u.int_in_range(0..=20usize).unwrap_or(0)),
            _ => {
                let r = cas_update(&mut store, "fuzz/counter", |cur| {
                    let n = cur
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .unwrap_or(0);
                    (Some((n + 1).to_le_bytes().to_vec()), n + 1)
                });
                if let Ok(n) = r {
                    let stored = store.get("fuzz/counter").ok().flatten().map(|v| v.value);
                    assert_eq!(stored, Some(n.to_le_bytes().to_vec()));
                }
            }
        }
        let table_keys = store
            .keys()
            .filter(|k| k.starts_with("fuzz/") && *k != "fuzz/counter")
            .count();
        assert!(
            table_keys as u64 <= slots,
            "{table_keys} keys for {slots} slots"
        );
    }
});
