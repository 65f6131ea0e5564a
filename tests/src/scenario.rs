//! End-to-end scenarios as data (`tests/scenarios/*.json`), run against both hosts: the Envoy runner
//! (tests/tests/scenarios.rs) starts a gateway per scenario with its chain; the Kong runner
//! (`scripts/test --kong`, bin `kong-scenarios`) renders one Kong route per scenario and sends the same requests.
//!
//! The upstream's view is read from the echo body (`{"headers": {...}}`), which both our in-process upstream
//! and the Kong compose file's echo server produce.

use crate::client::{Request, Response};
use crate::host::{self, HostKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Filters in order, each with its config (the same objects on both hosts).
    pub chain: Vec<ChainItem>,
    pub request: ScenarioRequest,
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainItem {
    pub filter: String,
    #[serde(default)]
    pub config: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRequest {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
}

fn get() -> String {
    "GET".into()
}

/// Expected results; a `null` header value means "must be absent".
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    #[serde(default)]
    pub response_headers: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Option<String>>,
    /// Request headers the client sends and the chain removes: absent upstream on Envoy; on Kong's engine
    /// present and empty, because a removed request header cannot be dropped there (see [`removed_header`]).
    #[serde(default)]
    pub upstream_headers_removed: Vec<String>,
    /// Upstream header values that must end with the given text (paths differ by host routing prefixes).
    #[serde(default)]
    pub upstream_header_suffixes: BTreeMap<String, String>,
    /// Substrings the response body must contain (e.g. a JSON error message).
    #[serde(default)]
    pub body_contains: Vec<String>,
}

/// Loads every `*.json` scenario file in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let list: Vec<Scenario> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        all.extend(list);
    }
    Ok(all)
}

impl Scenario {
    /// The request, sent to `addr` with `path_prefix` before the scenario's path (Kong routes by prefix).
    pub fn request(&self, addr: SocketAddr, path_prefix: &str) -> Request {
        let mut r = Request::new(
            addr,
            &self.request.method,
            &format!("{path_prefix}{}", self.request.path),
        );
        for (n, v) in &self.request.headers {
            r = r.header(n, v);
        }
        if let Some(body) = &self.request.body {
            r = r.body(body.clone().into_bytes());
        }
        r
    }

    /// Every way the response differs from the expectation on this run's host (empty = pass).
    pub fn check(&self, response: &Response) -> Vec<String> {
        self.check_on(host::current(), response)
    }

    /// Every way the response differs from the expectation on `host` (empty = pass).
    pub fn check_on(&self, host: HostKind, response: &Response) -> Vec<String> {
        let mut problems = Vec::new();
        let e = &self.expect;
        if response.status != e.status {
            problems.push(format!(
                "status {} (expected {}); body {}",
                response.status,
                e.status,
                response.text()
            ));
        }
        for (name, want) in &e.response_headers {
            let got = response.header(name);
            if got != want.as_deref() {
                problems.push(format!(
                    "response header {name}: {got:?} (expected {want:?})"
                ));
            }
        }
        let upstream = upstream_headers(response);
        if !(e.upstream_headers.is_empty()
            && e.upstream_headers_removed.is_empty()
            && e.upstream_header_suffixes.is_empty())
            && upstream.is_none()
        {
            problems.push("the response is not an upstream echo (no headers object)".into());
        }
        let upstream = upstream.unwrap_or_default();
        for (name, want) in &e.upstream_headers {
            let got = upstream.get(name).and_then(Value::as_str);
            if got != want.as_deref() {
                problems.push(format!(
                    "upstream header {name}: {got:?} (expected {want:?})"
                ));
            }
        }
        for name in &e.upstream_headers_removed {
            let got = upstream.get(name).and_then(Value::as_str);
            let want = removed_header(host);
            if got != want {
                problems.push(format!(
                    "upstream header {name} (removed): {got:?} (expected {want:?} on {})",
                    host.name()
                ));
            }
        }
        for (name, suffix) in &e.upstream_header_suffixes {
            let got = upstream.get(name).and_then(Value::as_str);
            if !got.is_some_and(|v| v.ends_with(suffix.as_str())) {
                problems.push(format!(
                    "upstream header {name}: {got:?} (expected …{suffix})"
                ));
            }
        }
        let body = response.text();
        for needle in &e.body_contains {
            if !body.contains(needle.as_str()) {
                problems.push(format!("body does not contain {needle:?}: {body}"));
            }
        }
        problems
    }

    /// The Kong route path for this scenario.
    pub fn kong_prefix(&self) -> String {
        format!("/s/{}", self.name)
    }
}

/// What the upstream receives of a request header the chain removed. Envoy drops it. Kong's engine cannot:
/// ngx_wasm_module only marks a removed line deleted (`hash = 0`, src/http/ngx_http_wasm_headers.c) and nginx's
/// proxy module forwards every line of the request (ngx_http_proxy_create_request,
/// src/http/modules/ngx_http_proxy_module.c), so the exchange empties it instead
/// (filters/common/src/exchange.rs): present, with an empty value.
pub fn removed_header(host: HostKind) -> Option<&'static str> {
    match host {
        HostKind::Envoy => None,
        HostKind::KongEngine => Some(""),
    }
}

/// Header map (lower-case names) from an echo body `{"headers": {...}}`.
fn upstream_headers(response: &Response) -> Option<Map<String, Value>> {
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    let headers = body.get("headers")?.as_object()?;
    Some(
        headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
    )
}

/// A Kong 3.x declarative config with one service (`upstream_url`) and one route per scenario, each with its
/// chain as a route-level filter chain.
pub fn kong_declarative(scenarios: &[Scenario], upstream_url: &str) -> Value {
    let routes: Vec<Value> = scenarios
        .iter()
        .map(|s| {
            let filters: Vec<Value> = s
                .chain
                .iter()
                .map(|c| json!({ "name": portcullis_common::artifact_name(&c.filter), "config": c.config }))
                .collect();
            json!({
                "name": s.name,
                "paths": [s.kong_prefix()],
                "strip_path": true,
                "filter_chains": [{ "name": s.name, "filters": filters }]
            })
        })
        .collect();
    json!({
        "_format_version": "3.0",
        "services": [{ "name": "scenarios", "url": upstream_url, "routes": routes }]
    })
}
