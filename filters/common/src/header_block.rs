//! All request headers in one buffer, as proxy-wasm's `proxy_get_header_map_pairs` returns them: one host
//! call instead of one per header a chain reads, looked up in place without copying each pair.
//!
//! Layout (little-endian `u32`s): the pair count `n`, then `n` × (name length, value length), then each
//! name and value followed by a NUL byte.
//!
//! ngx_wasm_module (Kong) hands out at most [`HOST_PAIR_LIMIT`] request headers this way and drops the rest
//! ("truncated request headers to 100"), and leaves out pseudo-headers. So a block that holds that many pairs
//! may be missing headers: absence is only trusted in a block below the limit (see [`HeaderBlock::complete`]).

/// Most request headers ngx_wasm_module returns in one map (`NGX_HTTP_WASM_MAX_REQ_HEADERS`).
pub const HOST_PAIR_LIMIT: usize = 100;

pub struct HeaderBlock {
    bytes: Vec<u8>,
    /// Per pair: where its name and value are in `bytes` (found once, so lookups are a tight scan).
    pairs: Vec<PairSpan>,
}

#[derive(Clone, Copy)]
struct PairSpan {
    name_at: u32,
    name_len: u32,
    value_at: u32,
    value_len: u32,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl HeaderBlock {
    /// Checks the layout once; `None` if the host sent something malformed (lengths running past the end).
    pub fn parse(bytes: Vec<u8>) -> Option<HeaderBlock> {
        if bytes.is_empty() {
            return Some(HeaderBlock {
                bytes,
                pairs: Vec::new(),
            });
        }
        let count = usize::try_from(read_u32(&bytes, 0)?).ok()?;
        let mut at = count.checked_mul(8)?.checked_add(4)?;
        if at > bytes.len() {
            return None;
        }
        let mut pairs = Vec::with_capacity(count);
        for i in 0..count {
            let name_len = read_u32(&bytes, 4 + i * 8)?;
            let value_len = read_u32(&bytes, 8 + i * 8)?;
            let name_at = u32::try_from(at).ok()?;
            let value_at = name_at.checked_add(name_len)?.checked_add(1)?;
            let end = value_at.checked_add(value_len)?.checked_add(1)?;
            at = usize::try_from(end).ok()?;
            pairs.push(PairSpan {
                name_at,
                name_len,
                value_at,
                value_len,
            });
        }
        (at <= bytes.len()).then_some(HeaderBlock { bytes, pairs })
    }

    /// Encodes pairs in the host's layout (for test hosts).
    pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])> + Clone) -> Vec<u8> {
        let count = pairs.clone().into_iter().count();
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
        for (name, value) in pairs.clone() {
            for len in [name.len(), value.len()] {
                out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
            }
        }
        for (name, value) in pairs {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(value);
            out.push(0);
        }
        out
    }

    /// Every (name, value) pair in the host's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs.iter().map(|p| {
            (
                self.slice(p.name_at, p.name_len),
                self.slice(p.value_at, p.value_len),
            )
        })
    }

    fn slice(&self, at: u32, len: u32) -> &[u8] {
        // `parse` checked every span against the buffer, so this never falls back.
        let (at, len) = (at as usize, len as usize);
        self.bytes.get(at..at + len).unwrap_or_default()
    }

    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.position(name).map(|i| self.value_at(i))
    }

    /// Index of the first pair named `name` (compared case-insensitively), for [`HeaderBlock::value_at`].
    pub fn position(&self, name: &str) -> Option<usize> {
        let name = name.as_bytes();
        self.pairs.iter().position(|p| {
            p.name_len as usize == name.len()
                && self.slice(p.name_at, p.name_len).eq_ignore_ascii_case(name)
        })
    }

    /// The value of pair `i` (empty past the end).
    pub fn value_at(&self, i: usize) -> &[u8] {
        self.pairs
            .get(i)
            .map_or(&[], |p| self.slice(p.value_at, p.value_len))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether every request header is here: false when the block is at a host's pair limit (Kong drops the
    /// headers past it), so a name missing from it may still be in the request.
    pub fn complete(&self) -> bool {
        self.pairs.len() < HOST_PAIR_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_lookup_is_case_insensitive_first_wins() {
        let pairs: [(&str, &[u8]); 4] = [
            (":method", b"GET"),
            ("User-Agent", b"curl/8"),
            ("x-a", b"1"),
            ("x-a", b"2"),
        ];
        let block = HeaderBlock::parse(HeaderBlock::encode(pairs)).unwrap();
        assert_eq!(block.get("user-agent"), Some(&b"curl/8"[..]));
        assert_eq!(block.get("X-A"), Some(&b"1"[..]));
        assert_eq!(block.get(":path"), None);
        assert_eq!(block.iter().count(), 4);
        assert!(HeaderBlock::parse(Vec::new()).is_some_and(|b| b.get("x").is_none()));
        let all: Vec<&[u8]> = block.get_all("x-a").collect();
        assert_eq!(all, vec![&b"1"[..], &b"2"[..]]);
        assert!(block.complete());
    }

    #[test]
    fn a_block_at_the_host_limit_may_be_missing_headers() {
        let names: Vec<String> = (0..HOST_PAIR_LIMIT).map(|i| format!("x-{i}")).collect();
        let block = HeaderBlock::parse(HeaderBlock::encode(
            names.iter().map(|n| (n.as_str(), &b"v"[..])),
        ))
        .unwrap();
        assert!(!block.complete());
    }

    #[test]
    fn malformed_blocks_are_refused_not_read_past_their_end() {
        let good = HeaderBlock::encode([("x-a", &b"1"[..])]);
        for cut in 1..good.len() {
            assert!(
                HeaderBlock::parse(good[..cut].to_vec()).is_none(),
                "cut at {cut}"
            );
        }
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderBlock::parse(huge_count).is_none());
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderBlock::parse(huge_len).is_none());
    }
}
