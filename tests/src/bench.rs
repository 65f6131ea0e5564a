//! Benchmark variants for `scripts/bench`: each is an Envoy bootstrap (one worker, direct-response route, so
//! only the filter chain costs anything) with a Portcullis filter, Envoy's native equivalent, a Lua equivalent,
//! no filter, or an empty wasm filter. Config generation is unit-tested with `envoy --mode validate`.

pub mod wrk;

/// The time a benchmark report is stamped with (`2026-12-05 01:30 UTC`).
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

use crate::envoy::{EnvoyConfig, FilterSpec};
use crate::paths;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Baseline,
    Noop,
    Portcullis,
    Native,
    Lua,
    /// The same policies as one `portcullis` bundle filter (chain group).
    Bundle,
}

#[derive(Debug, Clone)]
pub struct Variant {
    /// Unique name, e.g. `headers/portcullis`.
    pub name: String,
    /// Comparison group (`headers`, `jwt-hs256`, …); baseline and noop are in group `base`.
    pub group: String,
    pub kind: Kind,
    pub http_filters: Vec<Value>,
    /// Headers wrk sends with every request.
    pub request_headers: Vec<(String, String)>,
    /// The .wasm this variant loads, for the size column.
    pub wasm: Option<PathBuf>,
    /// A wrk Lua script (`-s`) that builds each request, e.g. to rotate through a list of tokens.
    pub wrk_script: Option<String>,
    /// Status every response should have (`429` for an always-limited variant); others are counted as errors.
    pub expected_status: u16,
}

/// The empty proxy-wasm filter built from bench/noop.
pub fn noop_wasm() -> PathBuf {
    paths::repo_root().join("target/wasm32-wasip1/release/portcullis_bench_noop.wasm")
}

fn wasm_filter(name: &str, wasm: PathBuf, config: Value) -> Value {
    let mut spec = FilterSpec::new(name, config);
    spec.wasm = wasm;
    spec.to_envoy()
}

fn lua(code: &str) -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": { "inline_string": code }
        }
    })
}

fn variant(group: &str, kind: Kind, filters: Vec<Value>, wasm: Option<PathBuf>) -> Variant {
    let label = match kind {
        Kind::Baseline => "baseline",
        Kind::Noop => "noop",
        Kind::Portcullis => "portcullis",
        Kind::Native => "native",
        Kind::Lua => "lua",
        Kind::Bundle => "bundle",
    };
    Variant {
        name: if group == "base" {
            label.to_string()
        } else {
            format!("{group}/{label}")
        },
        group: group.to_string(),
        kind,
        http_filters: filters,
        request_headers: Vec::new(),
        wasm,
        wrk_script: None,
        expected_status: 200,
    }
}

/// The same edits in three implementations: remove one header, set one from the client address, add one,
/// and stamp one response header.
fn headers_config() -> Value {
    json!({
        "request": {
            "remove": ["x-internal"],
            "set": [{"name": "x-client-ip", "value": "${client_ip}"}],
            "add": [{"name": "x-via", "value": "portcullis"}]
        },
        "response": { "set": [{"name": "x-served-by", "value": "portcullis"}] }
    })
}

fn headers_native() -> Value {
    json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {
                "request_mutations": [
                    { "remove": "x-internal" },
                    { "append": { "header": { "key": "x-client-ip", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
                                  "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" } },
                    { "append": { "header": { "key": "x-via", "value": "portcullis" },
                                  "append_action": "APPEND_IF_EXISTS_OR_ADD" } }
                ],
                "response_mutations": [
                    { "append": { "header": { "key": "x-served-by", "value": "portcullis" },
                                  "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" } }
                ]
            }
        }
    })
}

fn headers_group() -> Vec<Variant> {
    let portcullis = wasm_filter("headers", paths::wasm("headers"), headers_config());
    let native = headers_native();
    let lua = lua(r#"
function envoy_on_request(handle)
  local h = handle:headers()
  h:remove("x-internal")
  local addr = handle:streamInfo():downstreamRemoteAddress()
  h:replace("x-client-ip", string.match(addr, "^(.*):%d+$") or addr)
  h:add("x-via", "portcullis")
end
function envoy_on_response(handle)
  handle:headers():replace("x-served-by", "portcullis")
end
"#);
    let mut v = vec![
        variant(
            "headers",
            Kind::Portcullis,
            vec![portcullis],
            Some(paths::wasm("headers")),
        ),
        variant("headers", Kind::Native, vec![native], None),
        variant("headers", Kind::Lua, vec![lua], None),
    ];
    for x in &mut v {
        x.request_headers.push(("x-internal".into(), "1".into()));
    }
    v
}

/// Rotating-token lists have this many tokens: more than either side's verified-token cache holds (1024), so
/// with round-robin every request misses the cache and pays a full signature check.
pub const ROTATING_TOKENS: usize = 2000;

/// Every variant, in run order. Groups whose filter is not built are left out (and reported as such).
pub fn variants() -> Vec<Variant> {
    variants_with(ROTATING_TOKENS)
}

/// [`variants`] with `rotating` tokens in each rotating-token list (the config test uses a few).
pub fn variants_with(rotating: usize) -> Vec<Variant> {
    let tokens = Tokens::mint(rotating.max(1));
    let mut all = vec![
        variant("base", Kind::Baseline, Vec::new(), None),
        variant(
            "base",
            Kind::Noop,
            vec![wasm_filter("noop", noop_wasm(), json!({}))],
            Some(noop_wasm()),
        ),
    ];
    all.extend(headers_group());
    all.extend(jwt::groups(&tokens));
    all.extend(rate_limit_groups());
    all.extend(request_guard_group());
    all.extend(chain_group(&tokens));
    all
}

/// `scripts/bench --only probe`: the empty filter making one kind of host call 1 or 10 times per request, to
/// price each kind against `noop` (not part of the default run).
pub fn probe_variants() -> Vec<Variant> {
    [
        "request property source.address x10",
        "request property source.address",
        "request header user-agent x10",
        "request header user-agent",
        "request headers",
        "request set x-probe 1 x10",
        "request set x-probe 1",
        "request now x10",
        "request counter x10",
        "request shared-get probe x10",
        "request shared-get probe",
    ]
    .iter()
    .map(|call| {
        let mut v = variant(
            "probe",
            Kind::Noop,
            vec![wasm_filter("probe", noop_wasm(), json!(call))],
            Some(noop_wasm()),
        );
        v.name = format!(
            "probe/{}",
            call.trim_start_matches("request ").replace(' ', "-")
        );
        v.request_headers
            .push(("user-agent".into(), BROWSER_UA.into()));
        v
    })
    .chain(
        [
            // the Portcullis adapter and the bundle's chain around a policy that does nothing
            (
                "probe/adapter-empty",
                wasm_filter("headers", paths::wasm("headers"), json!({})),
            ),
            (
                "probe/bundle-empty",
                wasm_filter(
                    "portcullis",
                    paths::wasm("portcullis"),
                    json!({"chain": [{"policy": "headers", "config": {}}]}),
                ),
            ),
        ]
        .into_iter()
        .map(|(name, filter)| {
            let mut v = variant("probe", Kind::Noop, vec![filter], None);
            v.name = name.to_string();
            v
        }),
    )
    .collect()
}

pub use jwt::Tokens;

/// jwt-auth vs `jwt_authn` vs Lua, RS256 and HS256, one reused token (the verified-token caches hit) and
/// rotating tokens (every request is a full verification).
mod jwt {
    use super::*;
    use jwt_simple::prelude::*;

    pub const ISSUER: &str = "https://issuer.bench.test/";
    pub const AUDIENCE: &str = "bench-api";
    pub const SECRET: &str = "portcullis-bench-hs256-secret-0123456789";
    const KID: &str = "bench";
    const RSA_PEM: &str = include_str!("../../filters/jwt-auth/fixtures/rsa2048.pk8.pem");

    /// Tokens valid for two hours, all for [`ISSUER`] and [`AUDIENCE`], each with its own `sub` and `jti`.
    pub struct Tokens {
        pub rs256: Vec<String>,
        pub hs256: Vec<String>,
        /// The public RS256 JWK (with `kid`).
        pub rs256_jwk: Value,
        /// The RS256 public key as DER (SubjectPublicKeyInfo), for Envoy Lua's `importPublicKey`.
        pub rs256_der: Vec<u8>,
    }

    fn claims(i: usize) -> JWTClaims<NoCustomClaims> {
        Claims::create(Duration::from_hours(2))
            .with_issuer(ISSUER)
            .with_audience(AUDIENCE)
            .with_subject(format!("user-{i}"))
            .with_jwt_id(format!("bench-{i}"))
    }

    impl Tokens {
        pub fn mint(n: usize) -> Tokens {
            let rsa = RS256KeyPair::from_pem(RSA_PEM)
                .expect("fixture key")
                .with_key_id(KID);
            let hs = HS256Key::from_bytes(SECRET.as_bytes());
            let mut jwk: Value =
                serde_json::from_str(&rsa.public_key().to_jwk()).expect("jwk json");
            jwk["kid"] = json!(KID);
            Tokens {
                rs256: (0..n).map(|i| rsa.sign(claims(i)).expect("sign")).collect(),
                hs256: (0..n)
                    .map(|i| hs.authenticate(claims(i)).expect("sign"))
                    .collect(),
                rs256_jwk: jwk,
                rs256_der: rsa.public_key().to_der().expect("der"),
            }
        }
    }

    /// A wrk script sending the tokens round-robin (each wrk thread starts at its own offset).
    pub fn rotating_script(tokens: &[String]) -> String {
        let mut s = String::from("local tokens = {\n");
        for t in tokens {
            s.push_str(&format!("  \"{t}\",\n"));
        }
        s.push_str(
            r#"}
local i = 0
local headers = {}
function init(args)
  for k, v in pairs(wrk.headers) do headers[k] = v end
end
function request()
  i = i + 1
  if i > #tokens then i = 1 end
  headers["authorization"] = "Bearer " .. tokens[i]
  return wrk.format(nil, nil, headers)
end
"#,
        );
        s
    }

    pub fn portcullis_config(alg: &str, t: &Tokens) -> Value {
        let mut provider = json!({
            "name": "bench", "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": [alg]
        });
        if alg == "HS256" {
            provider["secret"] = json!(SECRET);
        } else {
            provider["jwks"] = json!({"keys": [t.rs256_jwk]});
        }
        json!({ "providers": [provider] })
    }

    pub fn native(alg: &str, t: &Tokens) -> Value {
        let jwks = if alg == "HS256" {
            use base64::Engine;
            let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
            json!({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]})
        } else {
            json!({"keys": [t.rs256_jwk]})
        };
        json!({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": { "bench": {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "local_jwks": { "inline_string": jwks.to_string() },
                    // the same cache size as jwt-auth's default `cache_max_entries`
                    "jwt_cache_config": { "jwt_cache_size": 1024 }
                }},
                "rules": [{ "match": { "prefix": "/" }, "requires": { "provider_name": "bench" } }]
            }
        })
    }

    /// RS256 in Envoy Lua: base64url and claim checks in Lua, the signature with `verifySignature` (OpenSSL).
    /// The public key is imported once per worker and kept in a global.
    pub fn lua_rs256(t: &Tokens) -> Value {
        let der: String = t.rs256_der.iter().map(|b| format!("\\{b}")).collect();
        let code = format!(
            r#"
local KEY_DER = "{der}"
local ISSUER = "{ISSUER}"
local AUDIENCE = "{AUDIENCE}"
local B64 = {{}}
do
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  for i = 1, 64 do B64[chars:byte(i)] = i - 1 end
end
local function b64url(s)
  local out, n, bits, acc = {{}}, 0, 0, 0
  for i = 1, #s do
    local v = B64[s:byte(i)]
    if v == nil then return nil end
    acc = acc * 64 + v
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      local b = math.floor(acc / 2 ^ bits)
      n = n + 1
      out[n] = string.char(b)
      acc = acc - b * 2 ^ bits
    end
  end
  return table.concat(out)
end
local function deny(h, why)
  h:respond({{[":status"] = "401", ["www-authenticate"] = 'Bearer error="invalid_token"'}}, why)
end
local KEY_WRAPPER, KEY = nil, nil
function envoy_on_request(h)
  local headers = h:headers()
  local auth = headers:get("authorization")
  local token = auth and auth:match("^[Bb]earer +(.+)$")
  if token == nil then return deny(h, "missing") end
  local hp, pp, sp = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
  if hp == nil then return deny(h, "malformed") end
  local header = b64url(hp)
  if header == nil or not header:find('"alg"%s*:%s*"RS256"') then return deny(h, "algorithm") end
  local payload = b64url(pp)
  if payload == nil then return deny(h, "malformed") end
  if payload:match('"iss"%s*:%s*"([^"]*)"') ~= ISSUER then return deny(h, "issuer") end
  if payload:match('"aud"%s*:%s*"([^"]*)"') ~= AUDIENCE then
    local list = payload:match('"aud"%s*:%s*%[([^%]]*)%]')
    if list == nil or not list:find('"' .. AUDIENCE .. '"', 1, true) then return deny(h, "audience") end
  end
  local now = os.time()
  local exp = tonumber(payload:match('"exp"%s*:%s*(%d+)'))
  if exp == nil or now - 60 >= exp then return deny(h, "expired") end
  local nbf = tonumber(payload:match('"nbf"%s*:%s*(%d+)'))
  if nbf ~= nil and nbf > now + 60 then return deny(h, "not yet valid") end
  local sig = b64url(sp)
  if sig == nil then return deny(h, "malformed") end
  if KEY == nil then
    KEY_WRAPPER = h:importPublicKey(KEY_DER, string.len(KEY_DER))
    KEY = KEY_WRAPPER:get()
  end
  local signed = hp .. "." .. pp
  local ok = h:verifySignature("sha256", KEY, sig, string.len(sig), signed, string.len(signed))
  if not ok then return deny(h, "bad signature") end
  headers:remove("authorization")
end
"#
        );
        lua(&code)
    }

    pub fn groups(t: &Tokens) -> Vec<Variant> {
        let wasm = paths::wasm("jwt-auth");
        let mut out = Vec::new();
        for alg in ["RS256", "HS256"] {
            let list = if alg == "HS256" { &t.hs256 } else { &t.rs256 };
            for rotating in [false, true] {
                let group = format!(
                    "jwt-{}{}",
                    alg.to_ascii_lowercase(),
                    if rotating { "-rotating" } else { "" }
                );
                let mut vs = vec![
                    variant(
                        &group,
                        Kind::Portcullis,
                        vec![wasm_filter(
                            "jwt-auth",
                            wasm.clone(),
                            portcullis_config(alg, t),
                        )],
                        Some(wasm.clone()),
                    ),
                    variant(&group, Kind::Native, vec![native(alg, t)], None),
                ];
                // HS256 in Envoy Lua would need a pure-Lua SHA-256/HMAC (Envoy's Lua API has no HMAC):
                // not a fair stand-in for what a Lua user would deploy, so HS256 has no Lua variant.
                if alg == "RS256" {
                    vs.push(variant(&group, Kind::Lua, vec![lua_rs256(t)], None));
                }
                for v in &mut vs {
                    if rotating {
                        v.wrk_script = Some(rotating_script(list));
                    } else if let Some(token) = list.first() {
                        v.request_headers
                            .push(("authorization".into(), format!("Bearer {token}")));
                    }
                }
                out.extend(vs);
            }
        }
        out
    }
}

/// (group, rate, per seconds, burst): "open" never runs out; "limited" allows one request per hour.
const RATE_LIMIT_CASES: [(&str, u64, u64, u64); 2] = [
    ("rate-limit-open", 1_000_000_000, 1, 1_000_000_000),
    ("rate-limit-limited", 1, 3600, 1),
];

/// rate-limit vs `local_ratelimit` vs a Lua token bucket, with a limit never reached (the cost of counting)
/// and a limit always hit (every request answered 429).
fn rate_limit_groups() -> Vec<Variant> {
    let wasm = paths::wasm("rate-limit");
    let mut out = Vec::new();
    for (group, rate, per_s, burst) in RATE_LIMIT_CASES {
        let portcullis = wasm_filter(
            "rate-limit",
            wasm.clone(),
            json!({"limits": [{
                "name": "per_ip", "key": "${client_ip}", "algorithm": "token_bucket",
                "rate": rate, "per": format!("{per_s}s"), "burst": burst
            }],
            // like local_ratelimit's default and the Lua bucket: no RateLimit-* headers on allowed responses
            "headers": false}),
        );
        let native = json!({
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "bench",
                "token_bucket": {
                    "max_tokens": burst, "tokens_per_fill": rate, "fill_interval": format!("{per_s}s")
                },
                "filter_enabled": { "runtime_key": "rl_enabled",
                                    "default_value": { "numerator": 100, "denominator": "HUNDRED" } },
                "filter_enforced": { "runtime_key": "rl_enforced",
                                     "default_value": { "numerator": 100, "denominator": "HUNDRED" } }
            }
        });
        // A per-client token bucket in a per-worker Lua table (Envoy Lua has no shared state across workers;
        // with one worker that is exact).
        let lua_code = format!(
            r#"
local RATE, PER, BURST = {rate}, {per_s}, {burst}
local buckets = {{}}
function envoy_on_request(h)
  local addr = h:streamInfo():downstreamRemoteAddress()
  local ip = string.match(addr, "^(.*):%d+$") or addr
  local now = os.time()
  local b = buckets[ip]
  if b == nil then
    b = {{ tokens = BURST, last = now }}
    buckets[ip] = b
  end
  if now > b.last then
    b.tokens = math.min(BURST, b.tokens + (now - b.last) * RATE / PER)
    b.last = now
  end
  if b.tokens < 1 then
    h:respond({{[":status"] = "429", ["retry-after"] = tostring(PER)}}, "rate limit exceeded")
    return
  end
  b.tokens = b.tokens - 1
end
"#
        );
        let mut vs = vec![
            variant(
                group,
                Kind::Portcullis,
                vec![portcullis],
                Some(wasm.clone()),
            ),
            variant(group, Kind::Native, vec![native], None),
            variant(group, Kind::Lua, vec![lua(&lua_code)], None),
        ];
        if group.ends_with("limited") {
            for v in &mut vs {
                v.expected_status = 429;
            }
        }
        out.extend(vs);
    }
    out
}

/// Denied networks for request-guard, `rbac` and Lua (the bench client, 127.0.0.1, is in none of them).
const GUARD_DENY_V4: [(&str, u8); 6] = [
    ("203.0.113.0", 24),
    ("198.51.100.0", 24),
    ("192.0.2.0", 24),
    ("10.66.0.0", 16),
    ("172.31.250.0", 24),
    ("100.64.0.0", 10),
];
const GUARD_DENY_V6: [(&str, u8); 2] = [("2001:db8::", 32), ("fd00:bad::", 32)];
/// User agents denied (case-insensitive); the bench sends a browser agent.
const GUARD_UA_REGEX: &str = "(?i)(sqlmap|nikto|nmap|masscan|zgrab|nuclei|dirbuster|gobuster)";
const GUARD_UA_NAMES: [&str; 8] = [
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "dirbuster",
    "gobuster",
];
const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

fn guard_config() -> Value {
    let deny: Vec<String> = GUARD_DENY_V4
        .iter()
        .chain(&GUARD_DENY_V6)
        .map(|(a, p)| format!("{a}/{p}"))
        .collect();
    json!({ "ip": { "deny": deny }, "user_agent": { "deny": [GUARD_UA_REGEX] } })
}

fn guard_native() -> Value {
    let mut principals: Vec<Value> = GUARD_DENY_V4
        .iter()
        .chain(&GUARD_DENY_V6)
        .map(|(a, p)| json!({"direct_remote_ip": {"address_prefix": a, "prefix_len": p}}))
        .collect();
    principals.push(json!({"header": {
        "name": "user-agent",
        "string_match": {"safe_regex": {"regex": GUARD_UA_REGEX}}
    }}));
    json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": { "action": "DENY", "policies": { "guard": {
                "permissions": [{ "any": true }],
                "principals": principals
            }}}
        }
    })
}

fn request_guard_group() -> Vec<Variant> {
    let wasm = paths::wasm("request-guard");
    let nets: String = GUARD_DENY_V4
        .iter()
        .map(|(a, p)| format!("{{\"{a}\", {p}}}, "))
        .collect();
    let names: String = GUARD_UA_NAMES
        .iter()
        .map(|n| format!("\"{n}\", "))
        .collect();
    // IPv4 CIDRs as (network, mask) numbers; the client is IPv4, so the IPv6 entries cannot match it.
    let lua_code = format!(
        r#"
local NETS = {{ {nets} }}
local UA = {{ {names} }}
local function ip4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a == nil then return nil end
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end
local DENY = {{}}
for i, n in ipairs(NETS) do
  local size = 2 ^ (32 - n[2])
  DENY[i] = {{ ip4(n[1]), size }}
end
local function forbid(h)
  h:respond({{[":status"] = "403", ["content-type"] = "application/json"}},
    '{{"message": "forbidden", "status": 403}}')
end
function envoy_on_request(h)
  local addr = h:streamInfo():downstreamDirectRemoteAddress()
  local ip = ip4(string.match(addr, "^(.*):%d+$") or addr)
  if ip ~= nil then
    for _, d in ipairs(DENY) do
      if ip - ip % d[2] == d[1] then return forbid(h) end
    end
  end
  local ua = h:headers():get("user-agent")
  if ua ~= nil then
    ua = string.lower(ua)
    for _, name in ipairs(UA) do
      if string.find(ua, name, 1, true) then return forbid(h) end
    end
  end
end
"#
    );
    let mut vs = vec![
        variant(
            "request-guard",
            Kind::Portcullis,
            vec![wasm_filter("request-guard", wasm.clone(), guard_config())],
            Some(wasm),
        ),
        variant("request-guard", Kind::Native, vec![guard_native()], None),
        variant("request-guard", Kind::Lua, vec![lua(&lua_code)], None),
    ];
    for v in &mut vs {
        v.request_headers
            .push(("user-agent".into(), BROWSER_UA.into()));
    }
    vs
}

/// The host calls the bundle makes for a `chain` request, in order, as steps of the empty filter's probe
/// (`filters/bundle/tests/host_calls.rs` checks that they match what the bundle does).
const CHAIN_HOST_CALLS: &str = include_str!("../../bench/chain-host-calls.txt");

/// The full chain guard → jwt-auth (RS256, one reused token) → rate-limit (never reached) → headers → metrics:
/// five wasm filters (one VM each), the same five policies as one `portcullis` bundle, and Envoy's native
/// chain (rbac + jwt_authn + local_ratelimit + header_mutation; Envoy's own stats stand in for metrics).
fn chain_group(t: &Tokens) -> Vec<Variant> {
    let rate_limit = json!({"limits": [{
        "name": "per_ip", "key": "${client_ip}", "rate": 1_000_000_000u64, "per": "1s", "burst": 1_000_000_000u64
    }], "headers": false});
    let headers = headers_config();
    let steps = [
        ("request-guard", guard_config()),
        ("jwt-auth", jwt::portcullis_config("RS256", t)),
        ("rate-limit", rate_limit),
        ("headers", headers),
        ("metrics", json!({})),
    ];
    let separate: Vec<Value> = steps
        .iter()
        .map(|(name, config)| wasm_filter(name, paths::wasm(name), config.clone()))
        .collect();
    let bundle_config = json!({
        "chain": steps.iter().map(|(name, config)| json!({"policy": name, "config": config})).collect::<Vec<_>>()
    });
    let bundle = wasm_filter("portcullis", paths::wasm("portcullis"), bundle_config);
    let native = vec![
        guard_native(),
        jwt::native("RS256", t),
        json!({
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "bench",
                "token_bucket": { "max_tokens": 1_000_000_000u64, "tokens_per_fill": 1_000_000_000u64, "fill_interval": "1s" },
                "filter_enabled": { "runtime_key": "rl_enabled",
                                    "default_value": { "numerator": 100, "denominator": "HUNDRED" } },
                "filter_enforced": { "runtime_key": "rl_enforced",
                                     "default_value": { "numerator": 100, "denominator": "HUNDRED" } }
            }
        }),
        headers_native(),
    ];
    let mut vs = vec![
        variant("chain", Kind::Portcullis, separate, None),
        variant(
            "chain",
            Kind::Bundle,
            vec![bundle],
            Some(paths::wasm("portcullis")),
        ),
        variant("chain", Kind::Native, native, None),
    ];
    // The bundle's host traffic for this request (filters/bundle/tests/host_calls.rs) made by the empty
    // filter with no policy logic: the floor any wasm implementation of this chain pays in Envoy's V8.
    let mut floor = variant(
        "chain",
        Kind::Noop,
        vec![wasm_filter("probe", noop_wasm(), json!(CHAIN_HOST_CALLS))],
        Some(noop_wasm()),
    );
    floor.name = "chain/host-calls-only".to_string();
    vs.push(floor);
    // Each policy alone in the bundle, same request: where the bundle's time goes, policy by policy.
    for (name, config) in &steps {
        let config = json!({"chain": [{"policy": name, "config": config}]});
        let mut part = variant(
            "chain",
            Kind::Bundle,
            vec![wasm_filter("portcullis", paths::wasm("portcullis"), config)],
            Some(paths::wasm("portcullis")),
        );
        part.name = format!("chain/bundle-only-{name}");
        vs.push(part);
    }
    for v in &mut vs {
        v.request_headers
            .push(("user-agent".into(), BROWSER_UA.into()));
        v.request_headers.push(("x-internal".into(), "1".into()));
        if let Some(token) = t.rs256.first() {
            v.request_headers
                .push(("authorization".into(), format!("Bearer {token}")));
        }
    }
    vs
}

pub use engine::{engine_variants, engine_variants_from, EngineVariant};

/// The same benchmark on Kong's engine (nginx + ngx_wasm_module; `scripts/bench --host kong-engine`): every
/// variant above made only of wasm filters — no filter, the empty filter, each Portcullis filter, the chain as
/// separate filters and as the bundle — running the very filters and configuration texts Envoy gets, plus
/// nginx's own equivalents as native anchors (`proxy_set_header`, `limit_req`). The engine's `nginx.conf` is
/// rendered by [`crate::kong_engine`], like the e2e tests'.
mod engine {
    use super::*;
    use crate::kong_engine::NativeDirectives;

    pub struct EngineVariant {
        /// Name, group, kind, request headers, wrk script and expected status as on Envoy.
        pub variant: Variant,
        pub chain: Vec<FilterSpec>,
        pub native: NativeDirectives,
    }

    /// The filter an `envoy.filters.http.wasm` entry runs, with its configuration text unchanged; `None` for
    /// any other (native or Lua) filter.
    fn wasm_spec(filter: &Value) -> Option<FilterSpec> {
        if filter["name"] != "envoy.filters.http.wasm" {
            return None;
        }
        let config = &filter["typed_config"]["config"];
        Some(FilterSpec {
            name: config["name"].as_str()?.to_string(),
            wasm: PathBuf::from(config["vm_config"]["code"]["local"]["filename"].as_str()?),
            config: Value::String(config["configuration"]["value"].as_str()?.to_string()),
            vm_id: config["vm_config"]["vm_id"].as_str()?.to_string(),
        })
    }

    /// nginx's own directives for a group's policy, where nginx has one.
    fn native_anchor(group: &str) -> Option<NativeDirectives> {
        if group == "headers" {
            // headers_config's edits: remove one header, set one from the client address, add one, stamp the
            // response (a location-level proxy_set_header also repeats the Host line: the renderer does that)
            return Some(NativeDirectives {
                http: Vec::new(),
                location: vec![
                    "proxy_set_header X-Internal \"\";".into(),
                    "proxy_set_header X-Client-IP $remote_addr;".into(),
                    "proxy_set_header X-Via portcullis;".into(),
                    "add_header X-Served-By portcullis always;".into(),
                ],
            });
        }
        let (_, rate, per_s, burst) = RATE_LIMIT_CASES.iter().find(|c| c.0 == group)?;
        // nginx counts requests per second or per minute (1r/m at the slowest); its burst is the requests
        // allowed beyond the first
        let rate = if *per_s == 1 {
            format!("{rate}r/s")
        } else {
            format!("{}r/m", (rate * 60 / per_s).max(1))
        };
        Some(NativeDirectives {
            http: vec![format!(
                "limit_req_zone $binary_remote_addr zone=bench:1m rate={rate};"
            )],
            location: vec![
                match burst.saturating_sub(1) {
                    0 => "limit_req zone=bench nodelay;".to_string(),
                    extra => format!("limit_req zone=bench burst={extra} nodelay;"),
                },
                "limit_req_status 429;".into(),
                // nginx logs every refusal, which Envoy's local_ratelimit does not: keep it out of the log
                "limit_req_log_level info;".into(),
                "error_log stderr notice;".into(),
            ],
        })
    }

    /// [`engine_variants_from`] of every Envoy variant.
    pub fn engine_variants() -> Vec<EngineVariant> {
        engine_variants_from(variants())
    }

    /// The variants made only of wasm filters, each followed by nginx's native anchor for its group if any.
    pub fn engine_variants_from(all: Vec<Variant>) -> Vec<EngineVariant> {
        let mut out = Vec::new();
        for v in all {
            if v.kind == Kind::Noop && v.group != "base" {
                // a host-call probe of Envoy's V8 (`chain/host-calls-only`): its shared-data key lies outside
                // the engine's `portcullis` zone, where the engine traps
                continue;
            }
            let Some(chain) = v
                .http_filters
                .iter()
                .map(wasm_spec)
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let anchor = if v.kind == Kind::Portcullis {
                native_anchor(&v.group).map(|native| {
                    let mut n = v.clone();
                    n.kind = Kind::Native;
                    n.name = format!("{}/native", v.group);
                    n.http_filters = Vec::new();
                    n.wasm = None;
                    EngineVariant {
                        variant: n,
                        chain: Vec::new(),
                        native,
                    }
                })
            } else {
                None
            };
            out.push(EngineVariant {
                variant: v,
                chain,
                native: NativeDirectives::default(),
            });
            out.extend(anchor);
        }
        out
    }
}

/// Every `.wasm` file a variant loads (for skipping unbuilt filters and for the size column).
pub fn wasm_files(variant: &Variant) -> Vec<PathBuf> {
    variant
        .http_filters
        .iter()
        .filter_map(|f| {
            f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"].as_str()
        })
        .map(PathBuf::from)
        .collect()
}

/// The bootstrap for a variant: one listener, a direct-response route (no upstream), the variant's filters.
pub fn bootstrap(variant: &Variant) -> Value {
    let mut config = EnvoyConfig::new(SocketAddr::from(([127, 0, 0, 1], 9)));
    config.http_filters = variant.http_filters.clone();
    config.routes = Some(json!([{
        "name": "bench",
        "match": { "prefix": "/" },
        "direct_response": { "status": 200, "body": { "inline_string": "ok\n" } }
    }]));
    config.bootstrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_script_lists_every_token_and_keeps_command_line_headers() {
        let tokens = Tokens::mint(3);
        let script = jwt::rotating_script(&tokens.hs256);
        for t in &tokens.hs256 {
            assert!(script.contains(t.as_str()));
        }
        assert!(script.contains("wrk.headers"));
        assert_eq!(tokens.hs256.len(), 3);
        assert_ne!(tokens.hs256[0], tokens.hs256[1]);
    }

    /// Kong's engine runs the Envoy variants' own filters and configuration texts, and has nginx's anchors.
    #[test]
    fn engine_variants_run_the_envoy_variants_filters_unchanged() {
        let all = variants_with(1);
        let engine = engine_variants_from(all.clone());
        for e in &engine {
            if e.variant.kind == Kind::Native {
                assert!(e.chain.is_empty() && !e.native.location.is_empty());
                continue;
            }
            let v = all.iter().find(|v| v.name == e.variant.name).unwrap();
            let envoy: Vec<Value> = e.chain.iter().map(FilterSpec::to_envoy).collect();
            assert_eq!(envoy, v.http_filters, "{}", v.name);
        }
        let names: Vec<&str> = engine.iter().map(|e| e.variant.name.as_str()).collect();
        for name in [
            "baseline",
            "noop",
            "headers/portcullis",
            "headers/native",
            "rate-limit-open/native",
            "chain/portcullis",
            "chain/bundle",
        ] {
            assert!(
                names.contains(&name),
                "no {name} on Kong's engine: {names:?}"
            );
        }
        assert!(all
            .iter()
            .filter(|v| v.kind == Kind::Portcullis)
            .all(|v| names.contains(&v.name.as_str())));
        assert!(!names.contains(&"chain/native"));
    }

    #[test]
    fn every_group_compares_against_a_native_filter() {
        let all = variants_with(1);
        let groups: std::collections::BTreeSet<&str> = all
            .iter()
            .filter(|v| v.group != "base")
            .map(|v| v.group.as_str())
            .collect();
        for g in groups {
            assert!(
                all.iter().any(|v| v.group == g && v.kind == Kind::Native),
                "{g} has no native variant"
            );
        }
    }

    /// Every generated bootstrap is accepted by Envoy's own validator (`--mode validate` parses the config and
    /// instantiates every filter factory without starting listeners).
    #[test]
    fn every_bench_bootstrap_is_valid_envoy_config() {
        let envoy = paths::envoy_binary();
        assert!(
            envoy.exists(),
            "run scripts/setup first: no {}",
            envoy.display()
        );
        let dir = paths::scratch_dir("bench-validate");
        let variants = variants_with(3);
        assert!(variants.iter().any(|v| v.kind == Kind::Native));
        for v in variants {
            // Validation needs real files for wasm code; the noop filter may not be built in unit tests.
            if wasm_files(&v).iter().any(|w| !w.exists()) {
                continue;
            }
            let path = dir.join(format!("{}.json", v.name.replace('/', "_")));
            std::fs::write(&path, bootstrap(&v).to_string()).unwrap();
            let out = std::process::Command::new(&envoy)
                .args(["--mode", "validate", "-c"])
                .arg(&path)
                .args(["--use-dynamic-base-id", "-l", "error"])
                .current_dir(paths::repo_root())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}{}",
                v.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
