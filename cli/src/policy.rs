//! The policy file (`portcullis.yaml`): upstreams, routes with their matches, and per-route filter chains.
//!
//! Loading runs in stages, each reporting every problem it finds with file, line and JSON path:
//! YAML syntax → `${ENV}` substitution → structure (serde, unknown fields rejected) → cross references and
//! value checks. The filter configs themselves are checked by [`crate::validate`].

use crate::diag::{join, Diagnostic};
use crate::locate::locate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

/// Names of upstreams and routes become Kong entity names and Envoy resource names: keep them plain.
const NAME_MAX: usize = 64;
/// Caps so a hostile file cannot make us build huge configs.
const MAX_ROUTES: usize = 1000;
const MAX_CHAIN: usize = 32;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Where the gateway listens and where it finds the filters.
    #[serde(default)]
    pub gateway: Gateway,
    /// Backends by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routes, matched in order (first match wins on Envoy; see README for Kong's ordering).
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Envoy listener address (`ip:port`; port 0 = any free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Envoy admin address.
    #[serde(default = "default_admin")]
    pub admin: String,
    /// Folder holding `<filter>.wasm` as Envoy sees it (relative to Envoy's working directory).
    #[serde(default = "default_dist")]
    pub dist: String,
    /// Kong's `wasm_filters_path` (the folder on the Kong node holding the .wasm and .meta.json files).
    #[serde(default = "default_kong_filters_path")]
    pub kong_filters_path: String,
    /// The Kong release `render --target kong` writes for: `"3.10"` (default) or `"3.9"`. They differ in the
    /// Prometheus plugin: 3.10 exports filter metrics only with `wasm_metrics: true`, 3.9 always and has no
    /// such field (it refuses the config with it).
    #[serde(default = "default_kong_version", deserialize_with = "kong_version")]
    pub kong_version: String,
}

/// The Kong releases `render --target kong` knows (the ones whose Prometheus plugin exports wasm metrics).
pub const KONG_VERSIONS: [&str; 2] = ["3.9", "3.10"];

fn kong_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_str() {
        Some(s) if KONG_VERSIONS.contains(&s) => Ok(s.to_string()),
        Some(s) => Err(serde::de::Error::custom(format!(
            "kong_version {s:?}: expected one of {KONG_VERSIONS:?}"
        ))),
        None => Err(serde::de::Error::custom(format!(
            "kong_version {v}: write it as a string, e.g. \"3.10\" (YAML reads 3.10 as the number 3.1)"
        ))),
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: default_listen(),
            admin: default_admin(),
            dist: default_dist(),
            kong_filters_path: default_kong_filters_path(),
            kong_version: default_kong_version(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8000".into()
}
fn default_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_dist() -> String {
    "dist".into()
}
fn default_kong_version() -> String {
    "3.10".into()
}
fn default_kong_filters_path() -> String {
    "/opt/portcullis/filters".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `http://host:port` or `https://host:port` (no path).
    pub url: String,
    /// TCP connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: Match,
    /// Name of an entry in `upstreams`.
    pub upstream: String,
    /// Filters run in this order on requests that match the route.
    #[serde(default)]
    pub chain: Vec<ChainItem>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Exact host name (the Host header, any port).
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix; default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Any of these methods; empty = all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name → exact value; all must match.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Match {
    pub fn path_prefix(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainItem {
    /// The policy: `rate-limit`, `jwt-auth`, …, or the `portcullis` bundle. Its `.wasm` and Kong filter name is
    /// [`ChainItem::artifact`].
    pub filter: String,
    /// The filter's configuration, exactly as the filter takes it; absent = `{}`.
    #[serde(default)]
    pub config: Value,
}

impl ChainItem {
    /// The filter's artifact name: `dist/<artifact>.wasm`, the Kong filter and the Envoy VM
    /// (`portcullis_rate_limit`; the bundle `portcullis`).
    pub fn artifact(&self) -> String {
        portcullis_common::artifact_name(&self.filter)
    }

    /// The config as the filter receives it (`null` becomes `{}`).
    pub fn config_value(&self) -> Value {
        match &self.config {
            Value::Null => Value::Object(Default::default()),
            v => v.clone(),
        }
    }
}

/// A parsed upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(
            "must not have a path, query or fragment (routes keep the request path)".into(),
        );
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| format!("invalid port {p:?}"))?;
            (h, port)
        }
        _ => (rest, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
    {
        return Err(format!("invalid host {host:?}"));
    }
    if port == 0 {
        return Err("port must be 1-65535".into());
    }
    Ok(Endpoint {
        tls,
        host: host.to_string(),
        port,
    })
}

/// A loaded, structurally valid policy file with its source (for locating later errors).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    pub text: String,
    pub policy: PolicyFile,
}

impl Loaded {
    /// A diagnostic at `path`, with its line and column looked up in the source.
    pub fn at(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        diag_at(&self.file, &self.text, path, message)
    }
}

fn diag_at(file: &str, text: &str, path: &str, message: impl Into<String>) -> Diagnostic {
    let loc = locate(text, path);
    Diagnostic {
        file: file.to_string(),
        line: loc.map(|l| l.0),
        column: loc.map(|l| l.1),
        path: path.to_string(),
        message: message.into(),
    }
}

/// Why a file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file cannot be read (exit code 2).
    Io(String),
    /// The file is not a valid policy (exit code 1).
    Invalid(Vec<Diagnostic>),
}

/// Reads and loads a policy file; `env` resolves `${NAME}` references.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, LoadError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| LoadError::Io(format!("{file}: {e}")))?;
    // A policy file is a few kilobytes; refuse anything absurd before reading it.
    if meta.len() > 16 * 1024 * 1024 {
        return Err(LoadError::Io(format!("{file}: larger than 16 MiB")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io(format!("{file}: {e}")))?;
    load_str(&file, &text, env).map_err(LoadError::Invalid)
}

/// Loads a policy from text (`file` names it in diagnostics).
pub fn load_str(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<Diagnostic>> {
    // 1. YAML syntax (and YAML → JSON data model).
    let mut value: Value = serde_norway::from_str(text).map_err(|e| {
        let loc = e.location();
        vec![Diagnostic {
            file: file.to_string(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            path: String::new(),
            message: format!("invalid YAML: {}", strip_location(&e.to_string())),
        }]
    })?;
    // 2. ${ENV} substitution in every string value.
    let mut errors = Vec::new();
    substitute(&mut value, "", env, &mut |path, msg| {
        errors.push(diag_at(file, text, path, msg))
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    // 3. Structure.
    let policy: PolicyFile = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![diag_at(file, text, &path, e.inner().to_string())]
    })?;
    let loaded = Loaded {
        file: file.to_string(),
        text: text.to_string(),
        policy,
    };
    // 4. References and values.
    let errors = check(&loaded);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// serde_norway appends " at line L column C"; the diagnostic carries those separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Replaces `${NAME}` (NAME = upper-case letters, digits, `_`) in string values with the environment
/// variable. `$${NAME}` is left alone (the filters' templates read `$$` as a literal `$`), and lower-case
/// references such as `${client_ip}` or `${header.x}` are filter templates, also left alone.
fn substitute(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut dyn FnMut(&str, String),
) {
    match value {
        Value::String(s) => match expand(s, env) {
            Ok(Some(new)) => *s = new,
            Ok(None) => {}
            Err(name) => err(
                path,
                format!("environment variable {name} is not set (referenced as ${{{name}}})"),
            ),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, err);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                substitute(v, &join(path, k), env, err);
            }
        }
        _ => {}
    }
}

/// Ok(None) when the string has no reference; Err(name) for the first unset variable.
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push_str("$$");
            rest = after;
            continue;
        }
        if let Some(body) = tail.strip_prefix("${") {
            if let Some(end) = body.find('}') {
                let name = &body[..end];
                let is_env = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if is_env {
                    let v = env(name).ok_or_else(|| name.to_string())?;
                    out.push_str(&v);
                    rest = &body[end + 1..];
                    changed = true;
                    continue;
                }
            }
        }
        out.push('$');
        rest = &tail[1..];
    }
    out.push_str(rest);
    Ok(changed.then_some(out))
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

fn check(l: &Loaded) -> Vec<Diagnostic> {
    let p = &l.policy;
    let mut errors = Vec::new();
    let g = &p.gateway;
    for (field, addr) in [("listen", &g.listen), ("admin", &g.admin)] {
        if addr.parse::<SocketAddr>().is_err() {
            errors.push(l.at(
                &format!("gateway.{field}"),
                format!("{addr:?} is not an ip:port address"),
            ));
        }
    }
    for (name, up) in &p.upstreams {
        let path = format!("upstreams.{name}");
        if !valid_name(name) {
            errors.push(l.at(
                &path,
                format!("name {name:?} must be 1-{NAME_MAX} characters of A-Z a-z 0-9 - _ ."),
            ));
        }
        if let Err(e) = parse_url(&up.url) {
            errors.push(l.at(&format!("{path}.url"), e));
        }
        if up.connect_timeout_ms == 0 || up.connect_timeout_ms > 60_000 {
            errors.push(l.at(&format!("{path}.connect_timeout_ms"), "must be 1-60000"));
        }
    }
    if p.routes.len() > MAX_ROUTES {
        errors.push(l.at("routes", format!("at most {MAX_ROUTES} routes")));
    }
    let mut seen = BTreeSet::new();
    let filters = crate::registry::names();
    for (i, r) in p.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !valid_name(&r.name) {
            errors.push(l.at(
                &format!("{path}.name"),
                format!(
                    "name {:?} must be 1-{NAME_MAX} characters of A-Z a-z 0-9 - _ .",
                    r.name
                ),
            ));
        } else if !seen.insert(r.name.as_str()) {
            errors.push(l.at(
                &format!("{path}.name"),
                format!("duplicate route name {:?}", r.name),
            ));
        }
        if !p.upstreams.contains_key(&r.upstream) {
            errors.push(l.at(
                &format!("{path}.upstream"),
                format!(
                    "unknown upstream {:?} (defined: {})",
                    r.upstream,
                    p.upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let m = &r.matcher;
        if let Some(host) = &m.host {
            let ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
            if !ok {
                errors.push(l.at(
                    &format!("{path}.match.host"),
                    format!("{host:?} is not a host name"),
                ));
            }
        }
        if let Some(prefix) = &m.path {
            if !prefix.starts_with('/')
                || prefix
                    .chars()
                    .any(|c| c.is_ascii_control() || c == ' ' || c == '?' || c == '#')
            {
                errors.push(l.at(
                    &format!("{path}.match.path"),
                    "must start with / and hold no spaces, controls, ? or #",
                ));
            }
        }
        for (j, method) in m.methods.iter().enumerate() {
            if !METHODS.contains(&method.as_str()) {
                errors.push(l.at(
                    &format!("{path}.match.methods[{j}]"),
                    format!("unknown method {method:?} (one of {})", METHODS.join(", ")),
                ));
            }
        }
        for (name, value) in &m.headers {
            let hp = format!("{path}.match.headers.{name}");
            let token = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
            if !token {
                errors.push(l.at(
                    &hp,
                    format!("header name {name:?} must be lower-case letters, digits, - or _"),
                ));
            } else if name == "host" {
                errors.push(l.at(&hp, "match the host with match.host"));
            }
            if value.chars().any(|c| c.is_ascii_control()) {
                errors.push(l.at(&hp, "header value must not hold control characters"));
            }
        }
        if r.chain.len() > MAX_CHAIN {
            errors.push(l.at(
                &format!("{path}.chain"),
                format!("at most {MAX_CHAIN} filters per route"),
            ));
        }
        for (j, item) in r.chain.iter().enumerate() {
            if !filters.contains(&item.filter.as_str()) {
                errors.push(l.at(
                    &format!("{path}.chain[{j}].filter"),
                    format!(
                        "unknown filter {:?} (one of {})",
                        item.filter,
                        filters.join(", ")
                    ),
                ));
            }
            if !item.config.is_object() && !item.config.is_null() {
                errors.push(l.at(&format!("{path}.chain[{j}].config"), "must be an object"));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    #[test]
    fn env_references_are_replaced_and_templates_kept() {
        let cases: &[(&str, Option<&str>)] = &[
            ("plain", None),
            ("${SECRET}", Some("s3cr3t")),
            ("k=${SECRET}; p=${PORT}", Some("k=s3cr3t; p=8080")),
            ("${client_ip}", None),
            ("${header.x-user}", None),
            ("$${SECRET}", None),
            ("${client_ip}-${PORT}", Some("${client_ip}-8080")),
            ("${", None),
            ("${1X}", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                expand(input, &env).unwrap_or_else(|n| panic!("{input}: unset {n}")),
                want.map(String::from),
                "{input}"
            );
        }
    }

    #[test]
    fn an_unset_variable_is_named() {
        assert_eq!(expand("a ${MISSING} b", &env), Err("MISSING".to_string()));
    }

    #[test]
    fn upstream_urls_are_parsed_or_refused() {
        assert_eq!(
            parse_url("http://127.0.0.1:18080"),
            Ok(Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 18080
            })
        );
        assert_eq!(
            parse_url("https://auth.example.com/"),
            Ok(Endpoint {
                tls: true,
                host: "auth.example.com".into(),
                port: 443
            })
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://x:0",
            "http://x:99999",
            "http://x/path",
            "http://a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
