//! `canary` configuration: serde types (with the JSON Schema Kong validates against) and the cross-field
//! checks of [`CanaryConfig::parse`]. Values that can be checked alone (header names, CIDRs, regexes,
//! durations) are checked while deserializing, so their errors carry the field's JSON path.
//!
//! ```json
//! { "identity": {"header": "x-user-id"},
//!   "rules": [{"name": "abc_users", "match": {"uid_prefix": "abc"}, "route": "canary"}],
//!   "percentage": 5 }
//! ```

use crate::ramp::RampStart;
use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::{HeaderName, HeaderValue};
use portcullis_common::units::DurationSpec;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::net::IpAddr;

/// Most rules a config may hold: a bound on per-request work.
pub const MAX_RULES: usize = 64;
/// Most CIDRs one `client_ip` condition may hold.
pub const MAX_CIDRS: usize = 256;
/// Longest regex source accepted.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled-regex memory cap (regex-lite's NFA size limit).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Most ramp steps.
pub const MAX_RAMP_STEPS: u32 = 1000;
/// Longest rule name (it becomes part of a metric name).
pub const MAX_RULE_NAME_LEN: usize = 64;

/// Sticky canary traffic split: ordered rules, then a hashed percentage (optionally ramped over time).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Ordered routing rules; the first rule whose conditions all match decides the side.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where the user id comes from, for `uid_prefix` conditions and as the default `sticky_key`
    /// (e.g. `{"header": "x-user-id"}` set by jwt-auth, or `{"cookie": "uid"}`).
    #[serde(default)]
    pub identity: Option<KeySource>,
    /// Share of requests no rule matched that go to canary, in percent (0–100, decimals allowed).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percentage: f64,
    /// What the percentage split hashes, so one user always lands on the same side. Defaults to `identity`.
    /// A request without the key is split at random (by a hash of its request id).
    #[serde(default)]
    pub sticky_key: Option<KeySource>,
    /// Salt mixed into the split hash: change it to reshuffle which users are in the canary share.
    #[serde(default = "default_hash_salt")]
    pub hash_salt: String,
    /// Optional time-based ramp of the percentage from `percentage` up to `ramp.target`.
    #[serde(default)]
    pub ramp: Option<Ramp>,
    /// Header a client may send to force a side (`always` = canary, `never` = stable), for testing.
    #[serde(default)]
    pub override_header: OverrideHeader,
    /// The header the filter sets on every request for the proxy's routing (any client-sent value is replaced).
    #[serde(default = "default_tag_header")]
    pub tag_header: HeaderName,
    /// `tag_header` value for requests routed to canary.
    #[serde(default = "default_canary_value")]
    pub canary_value: HeaderValue,
    /// `tag_header` value for requests routed to stable.
    #[serde(default = "default_stable_value")]
    pub stable_value: HeaderValue,
    /// Kong only: `host:port` of the canary upstream, set as the `kong.service.target` property for canary
    /// requests. Envoy routes on `tag_header` instead.
    #[serde(default)]
    pub canary_target: Option<Target>,
    /// Optional cookie that pins a user on the side they got (sent with the response, honoured after rules).
    #[serde(default)]
    pub set_cookie: Option<PinCookie>,
}

fn default_hash_salt() -> String {
    "portcullis-canary".into()
}
fn default_tag_header() -> HeaderName {
    HeaderName::parse("x-canary").unwrap_or_else(|_| unreachable!())
}
fn default_canary_value() -> HeaderValue {
    HeaderValue::parse("true").unwrap_or_else(|_| unreachable!())
}
fn default_stable_value() -> HeaderValue {
    HeaderValue::parse("false").unwrap_or_else(|_| unreachable!())
}

/// The side a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Canary,
    Stable,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Canary => "canary",
            Side::Stable => "stable",
        }
    }
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name used in metrics (`portcullis_canary_rule_<name>_total`): lower-case letters, digits, `_`.
    /// Default: `rule<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Conditions, all of which must hold.
    #[serde(rename = "match")]
    pub conditions: Conditions,
    /// Where a matching request goes.
    pub route: Side,
}

/// Conditions of a rule; every condition given must match (at least one is required).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// A request header test.
    #[serde(default)]
    pub header: Option<ValueMatch>,
    /// A cookie test.
    #[serde(default)]
    pub cookie: Option<ValueMatch>,
    /// A query parameter test (on the raw, still percent-encoded value).
    #[serde(default)]
    pub query: Option<ValueMatch>,
    /// The client address is in one of these CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
    #[serde(default)]
    pub client_ip: Option<Vec<Cidr>>,
    /// The user id (from `identity`) starts with this prefix (case-sensitive).
    #[serde(default)]
    pub uid_prefix: Option<String>,
}

/// A test on a named value (header, cookie or query parameter). Give exactly one of `equals`, `prefix`,
/// `regex`, `present`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// Header, cookie or query parameter name (headers are case-insensitive, the others are not).
    pub name: String,
    /// The value equals this text.
    #[serde(default)]
    pub equals: Option<String>,
    /// The value starts with this text.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The value matches this regular expression (unanchored; use `^…$` to match the whole value).
    #[serde(default)]
    pub regex: Option<Pattern>,
    /// `true`: the value is present (any value); `false`: it is absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// Where a key (user id or sticky key) comes from. Give exactly one field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// A request header, e.g. `x-user-id`.
    #[serde(default)]
    pub header: Option<HeaderName>,
    /// A cookie name.
    #[serde(default)]
    pub cookie: Option<String>,
    /// `true`: the client IP address.
    #[serde(default)]
    pub client_ip: Option<bool>,
}

/// Time-based ramp: from `percentage` at `start`, in `steps` equal steps, to `target` at `start + duration`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// When the ramp starts: Unix time in seconds, or UTC text `"2026-12-01T09:00:00Z"`.
    pub start: RampStart,
    /// How long the ramp takes, e.g. `"2h"`.
    pub duration: DurationSpec,
    /// Number of equal increases between `percentage` and `target` (1–1000).
    #[schemars(range(min = 1, max = MAX_RAMP_STEPS))]
    pub steps: u32,
    /// Percentage reached at the end of the ramp (default 100).
    #[serde(default = "default_ramp_target")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub target: f64,
}

fn default_ramp_target() -> f64 {
    100.0
}

/// The testing override header.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideHeader {
    /// Whether clients may force a side (disable in production unless only trusted clients reach the route).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The header name; its values `always` (canary) and `never` (stable) force a side, others are ignored.
    #[serde(default = "default_tag_header")]
    pub header: HeaderName,
}

impl Default for OverrideHeader {
    fn default() -> Self {
        OverrideHeader {
            enabled: true,
            header: default_tag_header(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// The side-pinning cookie.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinCookie {
    /// Cookie name; its value is `canary` or `stable`.
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// Cookie lifetime (`Max-Age`), e.g. `"1d"`.
    #[serde(default = "default_cookie_max_age")]
    pub max_age: DurationSpec,
    /// Cookie `Path` attribute.
    #[serde(default = "default_cookie_path")]
    pub path: String,
}

fn default_cookie_name() -> String {
    "portcullis_canary".into()
}
fn default_cookie_max_age() -> DurationSpec {
    DurationSpec::from_secs(86_400)
}
fn default_cookie_path() -> String {
    "/".into()
}

/// `host:port` (Kong's `kong.service.target` format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(pub String);

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let bad = || format!("{text:?} is not host:port");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
        if port_ok && host_ok {
            Ok(Target(text.to_string()))
        } else {
            Err(bad())
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Target::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}
impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl JsonSchema for Target {
    fn schema_name() -> Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^.+:[0-9]{1,5}$",
            "description": "An upstream as host:port, e.g. \"10.0.0.7:8080\"."})
    }
}

/// An IP network: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| format!("{text:?} is not a CIDR ({why})");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| bad("bad address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen as ::ffff:a.b.c.d still matches IPv4 networks.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(n)), self.prefix, 32)
                    == masked(u128::from(u32::from(a)), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), self.prefix, 128) == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8, width: u32) -> u128 {
    let host_bits = width.saturating_sub(u32::from(prefix));
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cidr::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}
impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 2, "maxLength": 64,
            "description": "An IP network (\"10.0.0.0/8\", \"2001:db8::/32\") or a single address."})
    }
}

/// A compiled regular expression (regex-lite syntax: no Unicode classes; linear-time matching).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex_lite::Regex);

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.len() > MAX_REGEX_LEN {
            return Err(format!(
                "regex is {} bytes, more than the maximum of {MAX_REGEX_LEN}",
                text.len()
            ));
        }
        regex_lite::RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| format!("invalid regex {text:?}: {e}"))
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Pattern::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}
impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}
impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Regex".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "maxLength": MAX_REGEX_LEN,
            "description": "A regular expression (unanchored; regex-lite syntax)."})
    }
}

/// A percentage in millionths (parts per million of all requests): `5.25` → 52 500. Integer thresholds keep
/// the split identical on every host and build.
pub fn percent_to_ppm(percent: f64) -> u64 {
    // Validated to 0..=100 first, so the cast cannot saturate.
    (percent * 10_000.0).round().clamp(0.0, 1_000_000.0) as u64
}

impl CanaryConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: CanaryConfig = portcullis_common::parse_config(bytes)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_percent("percentage", self.percentage)?;
        if self.rules.len() > MAX_RULES {
            return Err(ConfigError::at(
                "rules",
                format!(
                    "{} rules is more than the maximum of {MAX_RULES}",
                    self.rules.len()
                ),
            ));
        }
        let mut names: Vec<String> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let path = item_path("rules", i);
            rule.conditions.validate(&format!("{path}.match"))?;
            if rule.conditions.uid_prefix.is_some() && self.identity.is_none() {
                return Err(ConfigError::at(
                    format!("{path}.match.uid_prefix"),
                    "uid_prefix needs `identity` (where the user id comes from)",
                ));
            }
            let name = rule.metric_name(i);
            if let Some(n) = &rule.name {
                let ok = !n.is_empty()
                    && n.len() <= MAX_RULE_NAME_LEN
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(ConfigError::at(
                        format!("{path}.name"),
                        format!(
                            "{n:?} must be 1–{MAX_RULE_NAME_LEN} lower-case letters, digits or '_'"
                        ),
                    ));
                }
            }
            if names.contains(&name) {
                return Err(ConfigError::at(
                    format!("{path}.name"),
                    format!("duplicate rule name {name:?}"),
                ));
            }
            names.push(name);
        }
        if let Some(id) = &self.identity {
            id.validate("identity")?;
        }
        if let Some(key) = &self.sticky_key {
            key.validate("sticky_key")?;
        }
        if let Some(ramp) = &self.ramp {
            check_percent("ramp.target", ramp.target)?;
            if !(1..=MAX_RAMP_STEPS).contains(&ramp.steps) {
                return Err(ConfigError::at(
                    "ramp.steps",
                    format!("must be between 1 and {MAX_RAMP_STEPS}"),
                ));
            }
            if ramp.duration.as_duration().is_zero() {
                return Err(ConfigError::at("ramp.duration", "must be > 0"));
            }
        }
        if self.canary_value == self.stable_value {
            return Err(ConfigError::at(
                "stable_value",
                "must differ from canary_value (routing could not tell the sides apart)",
            ));
        }
        if let Some(cookie) = &self.set_cookie {
            if !is_cookie_token(&cookie.name) {
                return Err(ConfigError::at(
                    "set_cookie.name",
                    format!("{:?} is not a valid cookie name", cookie.name),
                ));
            }
            let path_ok = cookie.path.starts_with('/')
                && cookie
                    .path
                    .bytes()
                    .all(|b| (0x21..0x7f).contains(&b) && b != b';');
            if !path_ok {
                return Err(ConfigError::at(
                    "set_cookie.path",
                    "must start with '/' and hold no spaces, ';' or control characters",
                ));
            }
        }
        Ok(())
    }

    /// The key the percentage split hashes: `sticky_key`, else `identity`.
    pub fn effective_sticky_key(&self) -> Option<&KeySource> {
        self.sticky_key.as_ref().or(self.identity.as_ref())
    }
}

impl Rule {
    pub fn metric_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("rule{index}"))
    }
}

fn check_percent(path: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            format!("{value} is not a percentage between 0 and 100"),
        ))
    }
}

/// RFC 6265 cookie-name: an HTTP token.
fn is_cookie_token(name: &str) -> bool {
    portcullis_common::http::is_valid_header_name(name)
}

impl Conditions {
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let given = [
            self.header.is_some(),
            self.cookie.is_some(),
            self.query.is_some(),
            self.client_ip.is_some(),
            self.uid_prefix.is_some(),
        ];
        if !given.contains(&true) {
            return Err(ConfigError::at(
                path,
                "needs at least one of header, cookie, query, client_ip, uid_prefix",
            ));
        }
        if let Some(h) = &self.header {
            h.validate(&format!("{path}.header"))?;
            HeaderName::parse(&h.name)
                .map_err(|e| ConfigError::at(format!("{path}.header.name"), e))?;
        }
        if let Some(c) = &self.cookie {
            c.validate(&format!("{path}.cookie"))?;
            if !is_cookie_token(&c.name) {
                return Err(ConfigError::at(
                    format!("{path}.cookie.name"),
                    format!("{:?} is not a valid cookie name", c.name),
                ));
            }
        }
        if let Some(q) = &self.query {
            q.validate(&format!("{path}.query"))?;
        }
        if let Some(cidrs) = &self.client_ip {
            if cidrs.is_empty() || cidrs.len() > MAX_CIDRS {
                return Err(ConfigError::at(
                    format!("{path}.client_ip"),
                    format!("must list 1 to {MAX_CIDRS} networks"),
                ));
            }
        }
        if self.uid_prefix.as_deref() == Some("") {
            return Err(ConfigError::at(
                format!("{path}.uid_prefix"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

impl ValueMatch {
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(ConfigError::at(
                format!("{path}.name"),
                "must be 1 to 256 characters",
            ));
        }
        let tests = [
            self.equals.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
            self.present.is_some(),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        if tests != 1 {
            return Err(ConfigError::at(
                path,
                "give exactly one of equals, prefix, regex, present",
            ));
        }
        Ok(())
    }
}

impl KeySource {
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let given = [
            self.header.is_some(),
            self.cookie.is_some(),
            self.client_ip == Some(true),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        if given != 1 || self.client_ip == Some(false) {
            return Err(ConfigError::at(
                path,
                "give exactly one of header, cookie, client_ip: true",
            ));
        }
        if let Some(c) = &self.cookie {
            if !is_cookie_token(c) {
                return Err(ConfigError::at(
                    format!("{path}.cookie"),
                    format!("{c:?} is not a valid cookie name"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        CanaryConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_config_sends_everything_to_stable_with_default_tag() {
        let c = CanaryConfig::parse(b"").unwrap();
        assert!(c.rules.is_empty());
        assert_eq!(percent_to_ppm(c.percentage), 0);
        assert_eq!(c.tag_header.as_str(), "x-canary");
        assert_eq!(c.canary_value.as_str(), "true");
        assert_eq!(c.stable_value.as_str(), "false");
        assert!(c.override_header.enabled);
        assert_eq!(c.override_header.header.as_str(), "x-canary");
    }

    #[test]
    fn seed_scenario_parses() {
        let c = CanaryConfig::parse(
            br#"{"identity":{"header":"x-user-id"},"percentage":5,
                 "rules":[{"name":"uid_prefix_abc","match":{"uid_prefix":"abc"},"route":"canary"}],
                 "canary_target":"canary.internal:8080"}"#,
        )
        .unwrap();
        assert_eq!(c.rules[0].route, Side::Canary);
        assert_eq!(percent_to_ppm(c.percentage), 50_000);
        assert!(c.effective_sticky_key().is_some_and(|k| k.header.is_some()));
    }

    #[test]
    fn percentages_convert_to_millionths() {
        for (p, ppm) in [
            (0.0, 0),
            (5.0, 50_000),
            (0.01, 100),
            (33.3333, 333_333),
            (100.0, 1_000_000),
        ] {
            assert_eq!(percent_to_ppm(p), ppm, "{p}");
        }
    }

    #[test]
    fn cidrs_contain_their_addresses_only() {
        let cases = [
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3", "10.1.2.3", true),
            ("10.1.2.3", "10.1.2.4", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("0.0.0.0/0", "::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("::/0", "::1", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
        ];
        for (cidr, ip, want) in cases {
            let c = Cidr::parse(cidr).unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{cidr} ∋ {ip}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/1",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_are_host_and_port() {
        assert!(Target::parse("canary:8080").is_ok());
        assert!(Target::parse("10.0.0.7:80").is_ok());
        assert!(Target::parse("[::1]:80").is_ok());
        for bad in [
            "canary",
            "canary:",
            ":80",
            "canary:0",
            "canary:99999",
            "a b:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                r#"{"percentage":101}"#,
                "percentage: 101 is not a percentage",
            ),
            (r#"{"percentage":-1}"#, "percentage: -1 is not a percentage"),
            (r#"{"percentage":"5%"}"#, "percentage: invalid type"),
            (
                r#"{"rules":[{"match":{},"route":"canary"}]}"#,
                "rules[0].match: needs at least one",
            ),
            (
                r#"{"rules":[{"match":{"uid_prefix":"abc"},"route":"canary"}]}"#,
                "rules[0].match.uid_prefix: uid_prefix needs `identity`",
            ),
            (
                r#"{"rules":[{"match":{"header":{"name":"x","equals":"1","prefix":"2"}},"route":"canary"}]}"#,
                "rules[0].match.header: give exactly one",
            ),
            (
                r#"{"rules":[{"match":{"header":{"name":"x y","present":true}},"route":"canary"}]}"#,
                "rules[0].match.header.name: \"x y\" is not a valid header name",
            ),
            (
                r#"{"rules":[{"match":{"query":{"name":"q","regex":"(a"}},"route":"stable"}]}"#,
                "rules[0].match.query.regex: invalid regex",
            ),
            (
                r#"{"rules":[{"match":{"client_ip":["10.0.0.0/40"]},"route":"canary"}]}"#,
                "rules[0].match.client_ip[0]: \"10.0.0.0/40\" is not a CIDR",
            ),
            (
                r#"{"rules":[{"match":{"client_ip":["10.0.0.0/8"]},"route":"sideways"}]}"#,
                "rules[0].route: unknown variant `sideways`",
            ),
            (
                r#"{"rules":[{"name":"Beta Users","match":{"client_ip":["::1"]},"route":"canary"}]}"#,
                "rules[0].name: \"Beta Users\" must be",
            ),
            (
                r#"{"rules":[{"match":{"client_ip":["::1"]},"route":"canary"},{"name":"rule0","match":{"client_ip":["::1"]},"route":"canary"}]}"#,
                "rules[1].name: duplicate rule name",
            ),
            (
                r#"{"identity":{"header":"x-user-id","cookie":"uid"}}"#,
                "identity: give exactly one",
            ),
            (r#"{"sticky_key":{}}"#, "sticky_key: give exactly one"),
            (
                r#"{"ramp":{"start":0,"duration":"1h","steps":0}}"#,
                "ramp.steps: must be between 1 and 1000",
            ),
            (
                r#"{"ramp":{"start":0,"duration":"0s","steps":3}}"#,
                "ramp.duration: must be > 0",
            ),
            (
                r#"{"ramp":{"start":"yesterday","duration":"1h","steps":3}}"#,
                "ramp.start: ",
            ),
            (
                r#"{"ramp":{"start":0,"duration":"1h","steps":3,"target":200}}"#,
                "ramp.target: 200 is not a percentage",
            ),
            (
                r#"{"canary_target":"nohost"}"#,
                "canary_target: \"nohost\" is not host:port",
            ),
            (r#"{"stable_value":"true"}"#, "stable_value: must differ"),
            (r#"{"tag_header":":authority"}"#, "tag_header: "),
            (r#"{"set_cookie":{"name":"a b"}}"#, "set_cookie.name: "),
            (
                r#"{"set_cookie":{"path":"x"}}"#,
                "set_cookie.path: must start",
            ),
            (r#"{"percent":5}"#, "percent: unknown field `percent`"),
        ];
        for (json, want) in cases {
            let err = error(json);
            assert!(
                err.starts_with(want),
                "{json}\n  got:  {err}\n  want: {want}"
            );
        }
    }

    #[test]
    fn too_many_rules_are_refused() {
        let rule = r#"{"match":{"client_ip":["::1"]},"route":"canary"}"#;
        let rules: Vec<String> = (0..=MAX_RULES)
            .map(|i| rule.replace("{\"match\"", &format!("{{\"name\":\"r{i}\",\"match\"")))
            .collect();
        let json = format!(r#"{{"rules":[{}]}}"#, rules.join(","));
        assert!(error(&json).starts_with("rules: 65 rules"));
    }

    #[test]
    fn oversized_regex_is_refused() {
        let json = format!(
            r#"{{"rules":[{{"match":{{"header":{{"name":"x","regex":"{}"}}}},"route":"canary"}}]}}"#,
            "a".repeat(MAX_REGEX_LEN + 1)
        );
        assert!(error(&json).contains("more than the maximum"));
    }

    #[test]
    fn schema_describes_every_field_and_forbids_unknown_ones() {
        let s = portcullis_common::schema::config_schema::<CanaryConfig>();
        assert_eq!(s["additionalProperties"], false);
        let props = s["properties"].as_object().unwrap();
        for (name, field) in props {
            assert!(field["description"].is_string(), "{name}: {field}");
        }
        let text = s.to_string();
        assert!(!text.contains("$ref"), "{text}");
        assert!(text.contains("uid_prefix"));
    }
}
