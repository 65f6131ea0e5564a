//! Random trace and span ids and sampling decisions. A wasm VM is single-threaded, so one thread-local
//! generator per VM (per worker) is enough; it is seeded from the OS through `std`'s hash-map keys
//! (WASI `random_get` on wasm), so workers do not repeat each other's ids.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

thread_local! {
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x5eed_u64));
}

/// SplitMix64: tiny, fast, and good enough for identifiers (not for secrets).
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A non-zero 64-bit span id.
pub fn span_id() -> [u8; 8] {
    loop {
        let v = next_u64();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

/// A non-zero 128-bit trace id.
pub fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&span_id());
    id
}

/// True with probability `ratio` (0 never, 1 always).
pub fn sample(ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    // 53 random bits → uniform in [0, 1).
    let unit = (next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    unit < ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_zero_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = trace_id();
            assert!(t.iter().any(|b| *b != 0));
            assert!(seen.insert(t), "repeated trace id");
            assert!(span_id().iter().any(|b| *b != 0));
        }
    }

    #[test]
    fn sampling_follows_the_ratio() {
        assert!((0..1000).all(|_| sample(1.0)));
        assert!((0..1000).all(|_| !sample(0.0)));
        let hits = (0..20_000).filter(|_| sample(0.25)).count();
        // 25% of 20000 = 5000; ±600 is more than 8 standard deviations.
        assert!((4400..=5600).contains(&hits), "{hits}");
    }
}
