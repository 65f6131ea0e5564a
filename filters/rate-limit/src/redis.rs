//! Redis over HTTP (webdis' path-style REST protocol): the Lua scripts that run the algorithms atomically
//! in Redis, the request paths that carry them (`GET <base>/EVAL/<script>/<n>/<keys…>/<args…>`), and the
//! strict parsing of the JSON answers (`{"EVAL": [1, 5, …]}`; `{"result": …}` from hosted REST APIs).
//! Pure functions: no host, no clock.
//!
//! The scripts mirror [`crate::algo`] unit for unit (token bucket in millionths of a token, epoch-aligned
//! windows, Cloudflare's weighted sliding window) so a limit means the same in Redis and locally. Lua numbers
//! are doubles: the arithmetic is exact while `burst × per(µs) < 9·10⁹` (token bucket) and
//! `requests × window(µs) < 9·10¹⁵` (windows); beyond that a refill may differ by a millionth of a token.

use crate::algo::{Algorithm, Outcome};

/// Shared helpers of both scripts. Records: bucket `"1 <tokens µ> <last µs>"`, windows
/// `"<2|3> <start µs> <count> <prev>"`, each with a TTL that ends when the record equals a fresh one.
const PRELUDE: &str = r#"
local M = 1000000
local function clock(arg)
  local n = tonumber(arg)
  if n and n > 0 then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * M + tonumber(t[2])
end
local function fmt(x) return string.format('%.0f', x) end
local function load(key, algo, a, b, c, now)
  local raw = redis.call('GET', key)
  if algo == 1 then
    local cap = c * M
    local s = {tokens = cap, last = now}
    if raw then
      local t, l = string.match(raw, '^1 (%d+) (%d+)$')
      if t then s.tokens = tonumber(t); s.last = tonumber(l) end
    end
    if now > s.last then
      local elapsed = now - s.last
      if elapsed * a >= c * b then s.tokens = cap
      else s.tokens = math.min(cap, s.tokens + math.floor(elapsed * a * M / b)) end
      s.last = now
    end
    s.tokens = math.min(s.tokens, cap)
    return s
  end
  local cur = now - (now % b)
  local s = {start = cur, count = 0, prev = 0}
  if raw then
    local st, co, pr = string.match(raw, '^' .. algo .. ' (%d+) (%d+) (%d+)$')
    if st then s.start = tonumber(st); s.count = tonumber(co); s.prev = tonumber(pr) end
  end
  if cur > s.start then
    if cur == s.start + b then s.prev = s.count else s.prev = 0 end
    s.count = 0
    s.start = cur
  end
  return s
end
local function weight(algo, s, b, now)
  if algo ~= 3 then return 0, math.min(math.max(now - s.start, 0), b - 1) end
  local elapsed = math.min(math.max(now - s.start, 0), b - 1)
  return s.prev * (b - elapsed), elapsed
end
local function avail(algo, s, a, b, c, now)
  if algo == 1 then return math.floor(s.tokens / M) end
  local pw = weight(algo, s, b, now)
  local k = math.floor((a * b - pw) / b) - s.count
  if k < 0 then return 0 end
  return k
end
local function take(algo, s, n)
  if algo == 1 then s.tokens = s.tokens - n * M else s.count = s.count + n end
end
local function report(algo, s, a, b, c, now, allowed)
  if algo == 1 then
    local reset = math.ceil((c * M - s.tokens) * b / (a * M))
    local retry = 0
    if not allowed then retry = math.max(1, math.ceil((M - s.tokens) * b / (a * M))) end
    return c, math.floor(s.tokens / M), reset, retry
  end
  local pw, elapsed = weight(algo, s, b, now)
  local window_end = math.max(0, s.start + b - now)
  local retry = 0
  if not allowed then
    if algo == 3 and s.count < a and s.prev > 0 then
      local room = math.floor((a - s.count - 1) * b / s.prev)
      retry = math.max(1, (b - elapsed) - room)
    else
      retry = math.max(1, window_end)
    end
  end
  return a, math.floor(math.max(0, a * b - pw - s.count * b) / b), window_end, retry
end
local function save(key, algo, s, a, b, c, now)
  local expires
  local value
  if algo == 1 then
    expires = s.last + math.ceil((c * M - s.tokens) * b / (a * M))
    value = '1 ' .. fmt(s.tokens) .. ' ' .. fmt(s.last)
  else
    if algo == 3 then expires = s.start + 2 * b else expires = s.start + b end
    value = algo .. ' ' .. fmt(s.start) .. ' ' .. fmt(s.count) .. ' ' .. fmt(s.prev)
  end
  redis.call('SET', key, value, 'PX', fmt(math.max(1, math.ceil((expires - now) / 1000))))
end
"#;

/// One request against every limit, all or nothing. KEYS: one per limit; ARGV: now (µs, 0 = Redis' TIME),
/// then `algo a b c` per limit. Returns 5 integers per limit: status (0 not checked, 1 allowed,
/// 2 rejected), limit, remaining, reset µs, retry-after µs. Writes only when every limit allows.
const CHECK: &str = r#"
local now = clock(ARGV[1])
local out = {}
local states = {}
local rejected = false
for i = 1, #KEYS do
  local algo, a, b, c = tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i]), tonumber(ARGV[4*i+1])
  if not rejected then
    local s = load(KEYS[i], algo, a, b, c, now)
    local ok = avail(algo, s, a, b, c, now) >= 1
    if ok then take(algo, s, 1) end
    local lim, rem, reset, retry = report(algo, s, a, b, c, now, ok)
    states[i] = s
    if ok then out[#out+1] = 1 else out[#out+1] = 2; rejected = true end
    out[#out+1] = lim; out[#out+1] = rem; out[#out+1] = reset; out[#out+1] = retry
  else
    for _ = 1, 5 do out[#out+1] = 0 end
  end
end
if not rejected then
  for i = 1, #KEYS do
    save(KEYS[i], tonumber(ARGV[4*i-2]), states[i], tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i]), tonumber(ARGV[4*i+1]), now)
  end
end
return out
"#;

/// A node's reservation for one key. ARGV: now, debt (units the node admitted on credit, charged first, as
/// far as the budget allows), want (units to reserve), `algo a b c`. Returns: charged, granted, remaining
/// after the grant, reset µs, µs until one more unit is available.
const RESERVE: &str = r#"
local now = clock(ARGV[1])
local debt, want = tonumber(ARGV[2]), tonumber(ARGV[3])
local algo, a, b, c = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local s = load(KEYS[1], algo, a, b, c, now)
local av = avail(algo, s, a, b, c, now)
local charged = math.min(debt, av)
local granted = math.min(want, av - charged)
take(algo, s, charged + granted)
if charged + granted > 0 then save(KEYS[1], algo, s, a, b, c, now) end
local _, rem, reset, retry = report(algo, s, a, b, c, now, false)
return {charged, granted, rem, reset, retry}
"#;

/// The script source without comments, indentation or blank lines (it travels in every request path).
fn compact(body: &str) -> String {
    let mut out = String::new();
    for line in PRELUDE.lines().chain(body.lines()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The check script's source (for tests running it against a real Redis).
pub fn check_script() -> String {
    compact(CHECK)
}

/// The reservation script's source.
pub fn reserve_script() -> String {
    compact(RESERVE)
}

/// Percent-encodes every byte except RFC 3986 unreserved ones (webdis decodes each path segment).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

const HEX: [u8; 16] = *b"0123456789ABCDEF";

/// Longest key value used as-is in a Redis key; longer ones are replaced by a 128-bit hash.
pub const MAX_KEY_VALUE: usize = 200;

fn fnv1a(seed: u64, text: &str) -> u64 {
    text.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The Redis key of (limit, key value): `<prefix><namespace>:<limit>:<value>`; values longer than
/// [`MAX_KEY_VALUE`] become `#<32 hex digits>` (FNV-1a, stable across builds and nodes).
pub fn redis_key(prefix: &str, namespace: &str, limit: &str, value: &str) -> String {
    let mut key = format!("{prefix}{namespace}:{limit}:");
    if value.len() <= MAX_KEY_VALUE {
        key.push_str(value);
    } else {
        let a = fnv1a(0xcbf2_9ce4_8422_2325, value);
        let b = fnv1a(0x6c62_272e_07bb_0142, value);
        key.push_str(&format!("#{a:016x}{b:016x}"));
    }
    key
}

/// `algo a b c` of a limit as the scripts read them.
pub fn algo_args(algo: &Algorithm) -> [u64; 4] {
    match *algo {
        Algorithm::TokenBucket {
            rate,
            per_us,
            burst,
        } => [1, rate, per_us, burst],
        Algorithm::FixedWindow {
            requests,
            window_us,
        } => [2, requests, window_us, 0],
        Algorithm::SlidingWindow {
            requests,
            window_us,
        } => [3, requests, window_us, 0],
    }
}

/// Builds `EVAL` paths; the script is encoded once.
#[derive(Debug, Clone)]
pub struct Paths {
    base: String,
    check: String,
    reserve: String,
}

impl Paths {
    /// `base` ends with `/`.
    pub fn new(base: &str) -> Self {
        Paths {
            base: base.to_owned(),
            check: encode(&check_script()),
            reserve: encode(&reserve_script()),
        }
    }

    /// The path of one check of `limits` (Redis key, algorithm) at `now_us` (0: Redis' clock).
    pub fn check(&self, limits: &[(String, Algorithm)], now_us: u64) -> String {
        let mut p = format!("{}EVAL/{}/{}", self.base, self.check, limits.len());
        for (key, _) in limits {
            p.push('/');
            p.push_str(&encode(key));
        }
        p.push_str(&format!("/{now_us}"));
        for (_, algo) in limits {
            for v in algo_args(algo) {
                p.push_str(&format!("/{v}"));
            }
        }
        p
    }

    /// The path of a reservation of `want` units after charging `debt`.
    pub fn reserve(
        &self,
        key: &str,
        algo: &Algorithm,
        debt: u64,
        want: u64,
        now_us: u64,
    ) -> String {
        let mut p = format!(
            "{}EVAL/{}/1/{}/{now_us}/{debt}/{want}",
            self.base,
            self.reserve,
            encode(key)
        );
        for v in algo_args(algo) {
            p.push_str(&format!("/{v}"));
        }
        p
    }
}

/// Largest answer body we parse (ours are a few hundred bytes).
const MAX_ANSWER: usize = 16 * 1024;

/// Parses an `EVAL` answer into exactly `len` non-negative integers. Anything else — another status, bad
/// JSON, a Redis error (`[false, "ERR …"]`), another shape — is an error, never a panic. The grammar is the
/// one answer shape we accept (`{"EVAL": [n, …]}` or `{"result": [n, …]}`, JSON whitespace allowed), parsed by
/// hand: no JSON tree, so the filter stays small.
pub fn parse_integers(status: u16, body: &[u8], len: usize) -> Result<Vec<u64>, String> {
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if body.len() > MAX_ANSWER {
        return Err(format!("answer of {} bytes", body.len()));
    }
    let unexpected = || {
        format!(
            "unexpected answer {:?}",
            truncate(&String::from_utf8_lossy(body))
        )
    };
    let mut p = Cursor { s: body, at: 0 };
    p.eat(b'{').ok_or_else(unexpected)?;
    let key = p.key().ok_or_else(unexpected)?;
    if key != b"EVAL" && key != b"result" {
        return Err(unexpected());
    }
    p.eat(b':').ok_or_else(unexpected)?;
    p.eat(b'[').ok_or_else(unexpected)?;
    let mut out = Vec::with_capacity(len);
    if p.eat(b']').is_none() {
        loop {
            out.push(p.integer().ok_or_else(unexpected)?);
            if out.len() > len {
                return Err(format!("expected {len} integers, got more"));
            }
            if p.eat(b',').is_some() {
                continue;
            }
            p.eat(b']').ok_or_else(unexpected)?;
            break;
        }
    }
    p.eat(b'}').ok_or_else(unexpected)?;
    p.skip_ws();
    if p.at != body.len() {
        return Err(unexpected());
    }
    if out.len() != len {
        return Err(format!("expected {len} integers, got {}", out.len()));
    }
    Ok(out)
}

/// A position in an answer.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Skips whitespace, then consumes `b`.
    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.s.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    /// A member name without escapes.
    fn key(&mut self) -> Option<&[u8]> {
        self.eat(b'"')?;
        let start = self.at;
        while let Some(&b) = self.s.get(self.at) {
            match b {
                b'"' => {
                    self.at += 1;
                    return self.s.get(start..self.at - 1);
                }
                b'\\' => return None,
                _ => self.at += 1,
            }
        }
        None
    }

    /// A non-negative JSON integer that fits a u64 (no sign, fraction or exponent).
    fn integer(&mut self) -> Option<u64> {
        self.skip_ws();
        let start = self.at;
        while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = self.s.get(start..self.at)?;
        if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

/// One limit's result in a check answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    NotChecked,
    Checked(Outcome),
}

/// Decodes a check answer for `n` limits.
pub fn parse_check(status: u16, body: &[u8], n: usize) -> Result<Vec<Checked>, String> {
    let ints = parse_integers(status, body, n * 5)?;
    let mut out = Vec::with_capacity(n);
    let mut rejected = false;
    for chunk in ints.chunks(5) {
        let [state, limit, remaining, reset_us, retry_after_us] = *chunk else {
            return Err("truncated answer".into());
        };
        out.push(match state {
            0 => Checked::NotChecked,
            1 | 2 if !rejected => {
                rejected = state == 2;
                Checked::Checked(Outcome {
                    allowed: state == 1,
                    limit,
                    remaining,
                    reset_us,
                    retry_after_us,
                })
            }
            _ => return Err(format!("unexpected limit state {state}")),
        });
    }
    Ok(out)
}

/// A reservation answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub charged: u64,
    pub granted: u64,
    pub remaining: u64,
    pub reset_us: u64,
    pub retry_after_us: u64,
}

pub fn parse_reserve(
    status: u16,
    body: &[u8],
    debt: u64,
    want: u64,
) -> Result<Reservation, String> {
    let ints = parse_integers(status, body, 5)?;
    let [charged, granted, remaining, reset_us, retry_after_us] = ints[..] else {
        return Err("truncated answer".into());
    };
    if charged > debt || granted > want {
        return Err(format!(
            "charged {charged} of {debt} / granted {granted} of {want}"
        ));
    }
    Ok(Reservation {
        charged,
        granted,
        remaining,
        reset_us,
        retry_after_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_carry_the_encoded_script_keys_and_arguments() {
        let paths = Paths::new("/redis/");
        let p = paths.check(
            &[
                (
                    "rl:ns:per_ip:10.0.0.1".into(),
                    Algorithm::TokenBucket {
                        rate: 1,
                        per_us: 1_000_000,
                        burst: 5,
                    },
                ),
                (
                    "rl:ns:g:a/b c".into(),
                    Algorithm::FixedWindow {
                        requests: 9,
                        window_us: 60_000_000,
                    },
                ),
            ],
            0,
        );
        assert!(p.starts_with("/redis/EVAL/"), "{p}");
        assert!(p.ends_with(
            "/2/rl%3Ans%3Aper_ip%3A10.0.0.1/rl%3Ans%3Ag%3Aa%2Fb%20c/0/1/1/1000000/5/2/9/60000000/0"
        ));
        // "", "redis", "EVAL", script, numkeys, 2 keys, now, 2 × 4 algorithm arguments
        assert_eq!(p.split('/').count(), 5 + 2 + 1 + 8);
        assert!(!check_script().contains("\n\n"));
    }

    #[test]
    fn long_key_values_are_hashed_to_a_fixed_length() {
        let long = "x".repeat(MAX_KEY_VALUE + 1);
        let k = redis_key("p:", "ns", "l", &long);
        assert_eq!(k.len(), "p:ns:l:#".len() + 32);
        assert_ne!(
            k,
            redis_key("p:", "ns", "l", &"y".repeat(MAX_KEY_VALUE + 1))
        );
        assert_eq!(redis_key("p:", "ns", "l", "v"), "p:ns:l:v");
    }

    #[test]
    fn answers_are_parsed_strictly() {
        let ok = br#"{"EVAL":[1,5,4,1000000,0,2,3,0,5,7]}"#;
        let r = parse_check(200, ok, 2).unwrap();
        assert_eq!(
            r[1],
            Checked::Checked(Outcome {
                allowed: false,
                limit: 3,
                remaining: 0,
                reset_us: 5,
                retry_after_us: 7
            })
        );
        assert!(parse_check(200, br#"{"result":[0,0,0,0,0]}"#, 1).is_ok());
        assert!(parse_check(200, b" {\n \"EVAL\" : [ 1 , 5,4,1000000,0 ] }\n", 1).is_ok());
        let bad: [(u16, &[u8]); 18] = [
            (500, ok),
            (200, b""),
            (200, b"not json"),
            (200, br#"{"EVAL":[1,5,4,1000000,0"#),
            (200, br#"[1,2,3]"#),
            (200, br#"{"EVAL":[false,"ERR boom"]}"#),
            (200, br#"{"EVAL":"1"}"#),
            (200, br#"{"EVAL":[1,5,4,1000000]}"#),
            (200, br#"{"EVAL":[1,5,4,1000000,-1]}"#),
            (200, br#"{"EVAL":[1,5,4,1000000,0.5]}"#),
            (200, br#"{"EVAL":[7,5,4,1000000,0]}"#),
            (200, br#"{"EVAL":[1,1,1,1,1],"x":1}"#),
            (200, br#"{"EVAL":[1,1,1,1,01]}"#),
            (200, br#"{"EVAL":[1,1,1,1,1]}x"#),
            (200, br#"{"EV\u0041L":[1,1,1,1,1]}"#),
            (200, br#"{"EVAL":[1,1,1,1,99999999999999999999999]}"#),
            (200, br#"{"EVAL":[1,1,1,1,[1]]}"#),
            (200, br#"{"EVAL":[1,1,1,1,1,]}"#),
        ];
        for (status, body) in bad {
            assert!(
                parse_check(status, body, 1).is_err(),
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
        // a rejection followed by a checked limit cannot come from the script
        assert!(parse_check(200, br#"{"EVAL":[2,1,0,1,1,1,1,0,1,0]}"#, 2).is_err());
        assert!(parse_reserve(200, br#"{"EVAL":[1,3,0,0,0]}"#, 1, 2).is_err());
        assert_eq!(
            parse_reserve(200, br#"{"EVAL":[1,2,7,8,9]}"#, 1, 2)
                .unwrap()
                .granted,
            2
        );
    }
}
