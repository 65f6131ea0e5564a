//! Benchmark variants for `scripts/bench`: each is an Envoy bootstrap (one worker, direct-response route, so
//! only the filter chain costs anything) with a Portcullis filter, Envoy's native equivalent, a Lua equivalent,
//! no filter, or an empty wasm filter. Config generation is unit-tested with `envoy --mode validate`.

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
    }
}

/// The same edits in three implementations: remove one header, set one from the client address, add one,
/// and stamp one response header.
fn headers_group() -> Vec<Variant> {
    let portcullis = wasm_filter(
        "headers",
        paths::wasm("headers"),
        json!({
            "request": {
                "remove": ["x-internal"],
                "set": [{"name": "x-client-ip", "value": "${client_ip}"}],
                "add": [{"name": "x-via", "value": "portcullis"}]
            },
            "response": { "set": [{"name": "x-served-by", "value": "portcullis"}] }
        }),
    );
    let native = json!({
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
    });
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

/// Every variant, in run order. Groups whose filter is not built are left out (and reported as such).
pub fn variants() -> Vec<Variant> {
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
    all
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
        let variants = variants();
        assert!(variants.iter().any(|v| v.kind == Kind::Native));
        for v in variants {
            // Validation needs real files for wasm code; the noop filter may not be built in unit tests.
            if v.wasm.as_ref().is_some_and(|w| !w.exists()) {
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
