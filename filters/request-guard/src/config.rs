//! `request-guard` configuration. Every section is optional; an empty config lets everything through.
//!
//! ```json
//! { "client_ip": { "source": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/8"] },
//!   "ip": { "deny": ["203.0.113.0/24"] },
//!   "user_agent": { "block_scanners": true, "deny_missing": true, "deny": ["(?i)curl/"] },
//!   "methods": ["GET", "POST"],
//!   "hosts": { "allow": ["api.example.com", "*.example.com"] },
//!   "body": { "max_bytes": "1MiB", "json": true, "max_json_depth": 32 },
//!   "dry_run": false }
//! ```

use portcullis_common::cidr::IpNetList;
use portcullis_common::client_ip::ClientIpConfig;
use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::units::ByteSize;
use regex_lite::{Regex, RegexBuilder};
use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

/// Most patterns per user-agent list, methods, or hosts: bounds per-request work.
pub const MAX_PATTERNS: usize = 64;
/// Longest user-agent pattern accepted.
pub const MAX_PATTERN_LEN: usize = 512;
/// Compiled size limit of one pattern (regex-lite's NFA), so a pathological pattern fails at load.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Deepest JSON nesting `max_json_depth` may allow.
pub const MAX_JSON_DEPTH: u32 = 128;

/// Request guard: client IP, user agent, method, host and body rules. Rules run in this order and the
/// first that blocks answers (in `dry_run` every rule is evaluated and counted, nothing is blocked).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestGuardConfig {
    /// How to find the client address the `ip` rules check (default: the directly connected peer).
    #[serde(default)]
    pub client_ip: ClientIpConfig,
    /// Client address allow and deny lists (CIDRs); blocked requests get 403.
    #[serde(default)]
    pub ip: IpRules,
    /// Allowed methods (e.g. `["GET", "POST"]`); others get 405 with an `Allow` header. Empty: any.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Allowed hosts (`:authority`/`Host`, port ignored); others get `hosts.status`.
    #[serde(default)]
    pub hosts: HostRules,
    /// User-agent rules; blocked requests get 403.
    #[serde(default)]
    pub user_agent: UserAgentRules,
    /// Body limits: size (413), `content-length` requirement (411), well-formed JSON (400).
    #[serde(default)]
    pub body: BodyRules,
    /// Log and count what would have been blocked, but let every request through.
    #[serde(default)]
    pub dry_run: bool,
}

/// Client address rules. `deny` wins over `allow`; with a non-empty `allow`, every other address is denied.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRules {
    /// Addresses or CIDR networks (IPv4 and IPv6) that may call; empty: everyone not denied.
    #[serde(default)]
    pub allow: IpNetList,
    /// Addresses or CIDR networks that may not call (checked first).
    #[serde(default)]
    pub deny: IpNetList,
}

impl IpRules {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// User-agent rules, checked in this order: `deny_missing`, `deny` and `block_scanners`, then `allow`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserAgentRules {
    /// Regular expressions (regex-lite syntax; add `(?i)` for case-insensitive); a match is denied.
    #[serde(default)]
    pub deny: Vec<Pattern>,
    /// Regular expressions; when non-empty, a user agent must match one of them.
    #[serde(default)]
    pub allow: Vec<Pattern>,
    /// Deny the built-in list of common vulnerability scanners and attack tools (sqlmap, nikto, nmap, …).
    #[serde(default)]
    pub block_scanners: bool,
    /// Deny requests without a `user-agent` header (or with an empty one).
    #[serde(default)]
    pub deny_missing: bool,
}

impl UserAgentRules {
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && !self.block_scanners && !self.deny_missing
    }
}

/// Host allow-list.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostRules {
    /// Host names (case-insensitive, no port); `*.example.com` matches any subdomain of example.com (not
    /// example.com itself). Empty: any host.
    #[serde(default)]
    pub allow: Vec<HostPattern>,
    /// Status for a host not in the list: 421 (Misdirected Request, the default: this server is not
    /// authoritative for that host) or 403.
    #[serde(default = "default_host_status")]
    #[schemars(range(min = 403, max = 421))]
    pub status: u16,
}

impl Default for HostRules {
    fn default() -> Self {
        HostRules {
            allow: Vec::new(),
            status: default_host_status(),
        }
    }
}

fn default_host_status() -> u16 {
    421
}

/// Body rules.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyRules {
    /// Largest request body; larger ones get 413. Checked on `content-length` before the body arrives and by
    /// counting body chunks (requests without `content-length`, e.g. chunked). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
    /// Answer 411 to a request that sends a body without a `content-length` header (chunked uploads).
    #[serde(default)]
    pub require_content_length: bool,
    /// The body (when there is one) must be well-formed JSON; otherwise 400. Buffers the body, so `max_bytes`
    /// is required.
    #[serde(default)]
    pub json: bool,
    /// Deepest nesting of arrays and objects accepted when `json` is on.
    #[serde(default = "default_max_json_depth")]
    #[schemars(range(min = 1, max = 128))]
    pub max_json_depth: u32,
}

impl Default for BodyRules {
    fn default() -> Self {
        BodyRules {
            max_bytes: None,
            require_content_length: false,
            json: false,
            max_json_depth: default_max_json_depth(),
        }
    }
}

fn default_max_json_depth() -> u32 {
    32
}

impl BodyRules {
    pub fn is_empty(&self) -> bool {
        self.max_bytes.is_none() && !self.require_content_length && !self.json
    }
}

/// An HTTP method (a token, compared case-sensitively; written upper-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(pub String);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let valid = !text.is_empty()
            && text.len() <= 32
            && text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
        if valid {
            Ok(Method(text))
        } else {
            Err(de::Error::custom(format!(
                "{text:?} is not an upper-case HTTP method like \"GET\""
            )))
        }
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for Method {
    fn schema_name() -> Cow<'static, str> {
        "Method".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Z_-]{1,32}$",
            "description": "An upper-case HTTP method, e.g. \"GET\"."
        })
    }
}

/// A host name, or `*.` and a domain for any of its subdomains. Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(pub String);

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let ipv6_literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        let valid = ipv6_literal
            || (!name.is_empty()
                && lower.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !name.starts_with('.')
                && !name.contains(".."));
        if valid {
            Ok(HostPattern(lower))
        } else {
            Err(format!(
                "{text:?} is not a host name or \"*.domain\" pattern (ports are not part of it)"
            ))
        }
    }

    /// `host` is already lower-case and without port.
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.0 == host,
        }
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPattern::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for HostPattern {
    fn schema_name() -> Cow<'static, str> {
        "HostPattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "description": "A host name (\"api.example.com\") or \"*.example.com\" for its subdomains."
        })
    }
}

/// A regular expression compiled once at load (regex-lite: linear-time matching, no backtracking blow-up).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: Regex,
}

impl Pattern {
    pub fn compile(source: &str) -> Result<Pattern, String> {
        if source.is_empty() || source.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "a pattern must have 1 to {MAX_PATTERN_LEN} characters"
            ));
        }
        let regex = RegexBuilder::new(source)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regular expression {source:?}: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::compile(&text).map_err(de::Error::custom)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Pattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_PATTERN_LEN,
            "description": "A regular expression (regex-lite / Rust regex syntax), searched anywhere in the value."
        })
    }
}

/// The built-in scanner list (`user_agent.block_scanners`): tools whose user agents announce them.
pub const SCANNERS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "dirbuster",
    "gobuster",
    "feroxbuster",
    "fuzz faster u fool",
    "wpscan",
    "acunetix",
    "netsparker",
    "w3af",
    "havij",
    "openvas",
    "nessus",
    "arachni",
    "skipfish",
    "whatweb",
    "jaeles",
    "zmeu",
    "morfeus",
    "l9explore",
    "censysinspect",
];

/// One case-insensitive regex for the whole scanner list.
pub fn scanner_pattern() -> Result<Pattern, String> {
    Pattern::compile(&format!("(?i){}", SCANNERS.join("|")))
}

impl RequestGuardConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: RequestGuardConfig = portcullis_common::parse_config(bytes)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.client_ip.validate("client_ip")?;
        for (list, len) in [
            ("methods", self.methods.len()),
            ("hosts.allow", self.hosts.allow.len()),
            ("user_agent.allow", self.user_agent.allow.len()),
            ("user_agent.deny", self.user_agent.deny.len()),
        ] {
            if len > MAX_PATTERNS {
                return Err(ConfigError::at(
                    list,
                    format!("{len} entries is more than the maximum of {MAX_PATTERNS}"),
                ));
            }
        }
        let duplicate = self
            .methods
            .iter()
            .enumerate()
            .find(|(i, m)| self.methods.iter().take(*i).any(|earlier| earlier == *m));
        if let Some((i, m)) = duplicate {
            return Err(ConfigError::at(
                item_path("methods", i),
                format!("{:?} is listed twice", m.0),
            ));
        }
        if !matches!(self.hosts.status, 403 | 421) {
            return Err(ConfigError::at("hosts.status", "must be 403 or 421"));
        }
        let body = &self.body;
        if body.max_json_depth == 0 || body.max_json_depth > MAX_JSON_DEPTH {
            return Err(ConfigError::at(
                "body.max_json_depth",
                format!("must be between 1 and {MAX_JSON_DEPTH}"),
            ));
        }
        if body.json && body.max_bytes.is_none() {
            return Err(ConfigError::at(
                "body.max_bytes",
                "is required when body.json is on (the body is buffered up to this size)",
            ));
        }
        if body.max_bytes.is_some_and(|b| b.0 == 0) {
            return Err(ConfigError::at(
                "body.max_bytes",
                "must be greater than 0 (use methods to forbid bodies)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        RequestGuardConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_config_is_valid_and_has_no_rules() {
        let c = RequestGuardConfig::parse(b"").unwrap();
        assert!(c.ip.is_empty() && c.user_agent.is_empty() && c.body.is_empty());
        assert!(c.methods.is_empty() && c.hosts.allow.is_empty());
        assert_eq!(c.hosts.status, 421);
        assert_eq!(c.body.max_json_depth, 32);
    }

    #[test]
    fn full_config_parses() {
        let c = RequestGuardConfig::parse(
            br#"{"client_ip":{"source":"x_forwarded_for","trusted_proxies":["10.0.0.0/8"]},
                 "ip":{"allow":["0.0.0.0/0","::/0"],"deny":["203.0.113.0/24"]},
                 "user_agent":{"block_scanners":true,"deny_missing":true,"deny":["(?i)curl/"],"allow":["^Mozilla/"]},
                 "methods":["GET","POST"],"hosts":{"allow":["API.example.com","*.example.org"],"status":403},
                 "body":{"max_bytes":"1MiB","require_content_length":true,"json":true,"max_json_depth":8},
                 "dry_run":true}"#,
        )
        .unwrap();
        assert_eq!(c.ip.allow.len(), 2);
        assert_eq!(c.hosts.allow[0].0, "api.example.com");
        assert_eq!(c.body.max_bytes, Some(ByteSize(1024 * 1024)));
        assert!(c.user_agent.deny[0].regex.is_match("CURL/8.0"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (r#"{"ip":{"deny":["10.0.0.0/33"]}}"#, "ip.deny[0]: "),
            (r#"{"ip":{"allow":["example.com"]}}"#, "ip.allow[0]: "),
            (
                r#"{"user_agent":{"deny":["(unclosed"]}}"#,
                "user_agent.deny[0]: invalid regular expression",
            ),
            (r#"{"user_agent":{"deny":[""]}}"#, "user_agent.deny[0]: "),
            (
                r#"{"methods":["get"]}"#,
                "methods[0]: \"get\" is not an upper-case",
            ),
            (
                r#"{"methods":["GET","POST","GET"]}"#,
                "methods[2]: \"GET\" is listed twice",
            ),
            (
                r#"{"hosts":{"allow":["api.example.com:443"]}}"#,
                "hosts.allow[0]: ",
            ),
            (r#"{"hosts":{"allow":["*."]}}"#, "hosts.allow[0]: "),
            (
                r#"{"hosts":{"status":404}}"#,
                "hosts.status: must be 403 or 421",
            ),
            (r#"{"body":{"json":true}}"#, "body.max_bytes: is required"),
            (
                r#"{"body":{"max_bytes":0}}"#,
                "body.max_bytes: must be greater",
            ),
            (
                r#"{"body":{"max_bytes":"1KiB","json":true,"max_json_depth":0}}"#,
                "body.max_json_depth: must be between",
            ),
            (r#"{"body":{"max_bytes":"lots"}}"#, "body.max_bytes: "),
            (
                r#"{"client_ip":{"source":"x_forwarded_for"}}"#,
                "client_ip.trusted_proxies: ",
            ),
            (r#"{"dryrun":true}"#, "dryrun: unknown field"),
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
    fn too_many_patterns_are_refused() {
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("\"x{i}\"")).collect();
        let err = error(&format!(
            r#"{{"user_agent":{{"deny":[{}]}}}}"#,
            many.join(",")
        ));
        assert!(err.starts_with("user_agent.deny: 65 entries"), "{err}");
    }

    #[test]
    fn host_patterns_match_names_and_subdomains() {
        let exact = HostPattern::parse("Api.Example.com.").unwrap();
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("xapi.example.com"));
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("evilexample.com"));
        assert!(!wild.matches(".example.com"));
    }

    #[test]
    fn scanner_list_compiles_and_matches_case_insensitively() {
        let p = scanner_pattern().unwrap();
        assert!(p.regex.is_match("sqlmap/1.7.2#stable (https://sqlmap.org)"));
        assert!(p
            .regex
            .is_match("Mozilla/5.0 (compatible; Nmap Scripting Engine)"));
        assert!(p.regex.is_match("Fuzz Faster U Fool v2.1.0"));
        assert!(!p
            .regex
            .is_match("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"));
        assert!(!p.regex.is_match("curl/8.5.0"));
    }

    #[test]
    fn schema_describes_every_field_and_forbids_unknown_ones() {
        let s = portcullis_common::schema::config_schema::<RequestGuardConfig>();
        assert_eq!(s["additionalProperties"], false);
        for field in [
            "client_ip",
            "ip",
            "methods",
            "hosts",
            "user_agent",
            "body",
            "dry_run",
        ] {
            assert!(
                s["properties"][field]["description"].is_string(),
                "{field}: {s}"
            );
        }
        assert_eq!(
            s["properties"]["body"]["properties"]["max_json_depth"]["default"],
            32
        );
        assert_eq!(
            s["properties"]["hosts"]["properties"]["status"]["default"],
            421
        );
        let text = s.to_string();
        assert!(!text.contains("$ref"), "{text}");
    }
}
