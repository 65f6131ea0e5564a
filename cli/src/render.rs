//! `portcullis render`: the Envoy bootstrap and the Kong declarative config for a loaded policy.
//!
//! Envoy: one listener; one virtual host whose routes keep the file's order (first match wins); one cluster
//! per upstream. Each chain item becomes its own `envoy.filters.http.wasm` entry in the connection manager,
//! disabled by default and enabled only on its route (`typed_per_filter_config` → `FilterConfig`), so every
//! route runs exactly its own chain. Filters of one kind share a VM (`vm_id` = filter name), as on Kong.
//!
//! Kong: one service per upstream, its routes nested, each route's chain as a route-level filter chain
//! named after the route; everything tagged `portcullis` (what `push` owns).

use crate::policy::{parse_url, Loaded, PolicyFile};
use serde_json::{json, Map, Value};

/// Tag on every Kong entity the CLI manages.
pub const TAG: &str = "portcullis";

/// The Envoy filter name of route `route`'s chain item `index`.
pub fn envoy_filter_name(route: &str, index: usize, filter: &str) -> String {
    format!("portcullis.{route}.{index}.{filter}")
}

fn socket(addr: &str) -> Value {
    // Validated by the loader; fall back to a harmless value rather than panic.
    let parsed: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    json!({ "socket_address": { "address": parsed.ip().to_string(), "port_value": parsed.port() } })
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The Envoy bootstrap as a JSON value.
pub fn envoy(p: &PolicyFile) -> Value {
    let mut http_filters = Vec::new();
    let mut routes = Vec::new();
    for route in &p.routes {
        let mut per_filter = Map::new();
        for (i, item) in route.chain.iter().enumerate() {
            let name = envoy_filter_name(&route.name, i, &item.filter);
            http_filters.push(json!({
                "name": name,
                "disabled": true,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": name,
                        "root_id": item.filter,
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": item.config_value().to_string()
                        },
                        "vm_config": {
                            "vm_id": item.filter,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": { "local": { "filename": format!("{}/{}.wasm", p.gateway.dist.trim_end_matches('/'), item.filter) } }
                        }
                    }
                }
            }));
            per_filter.insert(
                name,
                // An empty `config` is Envoy's "enabled here, no per-route settings" (router/per_filter_config.cc).
                json!({ "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {} }),
            );
        }
        let m = &route.matcher;
        let mut headers = Vec::new();
        if let Some(host) = &m.host {
            headers.push(json!({
                "name": ":authority",
                "string_match": { "safe_regex": { "regex": format!("(?i)^{}(:[0-9]+)?$", regex_escape(host)) } }
            }));
        }
        if !m.methods.is_empty() {
            headers.push(json!({
                "name": ":method",
                "string_match": { "safe_regex": { "regex": format!("^({})$", m.methods.join("|")) } }
            }));
        }
        for (name, value) in &m.headers {
            headers.push(json!({ "name": name, "string_match": { "exact": value } }));
        }
        let mut matcher = json!({ "prefix": m.path_prefix() });
        if !headers.is_empty() {
            matcher["headers"] = Value::Array(headers);
        }
        let mut r = json!({
            "name": route.name,
            "match": matcher,
            "route": { "cluster": route.upstream }
        });
        if !per_filter.is_empty() {
            r["typed_per_filter_config"] = Value::Object(per_filter);
        }
        routes.push(r);
    }
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    }));
    let clusters: Vec<Value> = p
        .upstreams
        .iter()
        .map(|(name, up)| {
            let ep = parse_url(&up.url).unwrap_or(crate::policy::Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1,
            });
            let mut c = json!({
                "name": name,
                "type": if ep.is_ip() { "STATIC" } else { "STRICT_DNS" },
                "connect_timeout": format!("{}s", up.connect_timeout_ms as f64 / 1000.0),
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                        "socket_address": { "address": ep.host, "port_value": ep.port }
                    }}}]}]
                }
            });
            if ep.tls {
                c["transport_socket"] = json!({
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        "sni": ep.host
                    }
                });
            }
            c
        })
        .collect();
    json!({
        "admin": { "address": socket(&p.gateway.admin) },
        "static_resources": {
            "listeners": [{
                "name": "portcullis",
                "address": socket(&p.gateway.listen),
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "portcullis",
                        "codec_type": "AUTO",
                        "route_config": {
                            "name": "portcullis",
                            "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }]
                        },
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}

/// A Kong route entity (without service and chains): the fields `push` manages.
pub fn kong_route_fields(route: &crate::policy::Route) -> Map<String, Value> {
    let m = &route.matcher;
    let mut r = Map::new();
    r.insert("name".into(), json!(route.name));
    r.insert("paths".into(), json!([m.path_prefix()]));
    r.insert(
        "hosts".into(),
        m.host.as_ref().map_or(Value::Null, |h| json!([h])),
    );
    r.insert(
        "methods".into(),
        if m.methods.is_empty() {
            Value::Null
        } else {
            json!(m.methods)
        },
    );
    r.insert(
        "headers".into(),
        if m.headers.is_empty() {
            Value::Null
        } else {
            Value::Object(
                m.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), json!([v])))
                    .collect(),
            )
        },
    );
    // Envoy forwards the full path; so does Kong with strip_path off.
    r.insert("strip_path".into(), json!(false));
    r.insert("preserve_host".into(), json!(true));
    r.insert("tags".into(), json!([TAG]));
    r
}

/// A Kong service entity (the fields `push` manages).
pub fn kong_service_fields(name: &str, up: &crate::policy::Upstream) -> Map<String, Value> {
    let ep = parse_url(&up.url).unwrap_or(crate::policy::Endpoint {
        tls: false,
        host: "127.0.0.1".into(),
        port: 1,
    });
    let mut s = Map::new();
    s.insert("name".into(), json!(name));
    s.insert("protocol".into(), json!(ep.scheme()));
    s.insert("host".into(), json!(ep.host));
    s.insert("port".into(), json!(ep.port));
    s.insert("path".into(), Value::Null);
    s.insert("connect_timeout".into(), json!(up.connect_timeout_ms));
    s.insert("tags".into(), json!([TAG]));
    s
}

/// The filters of a route's chain as Kong takes them (`config` as a JSON object: the meta.json files are
/// installed next to the .wasm files).
pub fn kong_filters(route: &crate::policy::Route) -> Value {
    Value::Array(
        route
            .chain
            .iter()
            .map(|c| json!({ "name": c.filter, "config": c.config_value(), "enabled": true }))
            .collect(),
    )
}

/// Kong declarative config (`_format_version: "3.0"`).
pub fn kong(p: &PolicyFile) -> Value {
    let services: Vec<Value> = p
        .upstreams
        .iter()
        .map(|(name, up)| {
            let mut s = kong_service_fields(name, up);
            s.remove("path");
            let routes: Vec<Value> = p
                .routes
                .iter()
                .filter(|r| &r.upstream == name)
                .map(|r| {
                    let mut fields = kong_route_fields(r);
                    fields.retain(|_, v| !v.is_null());
                    if !r.chain.is_empty() {
                        fields.insert(
                            "filter_chains".into(),
                            json!([{ "name": r.name, "filters": kong_filters(r), "tags": [TAG] }]),
                        );
                    }
                    Value::Object(fields)
                })
                .collect();
            if !routes.is_empty() {
                s.insert("routes".into(), Value::Array(routes));
            }
            Value::Object(s)
        })
        .collect();
    json!({ "_format_version": "3.0", "services": services })
}

/// The kong.conf keys the rendered kong.yml needs.
pub fn kong_conf(p: &PolicyFile) -> String {
    let mut used: Vec<&str> = p
        .routes
        .iter()
        .flat_map(|r| r.chain.iter().map(|c| c.filter.as_str()))
        .collect();
    used.sort_unstable();
    used.dedup();
    format!(
        "# Generated by `portcullis render --target kong`. Append to kong.conf (or set as KONG_* variables).\n\
         # Copy these filters (<name>.wasm and <name>.meta.json from dist/) into wasm_filters_path: {}\n\
         wasm = on\n\
         wasm_filters_path = {}\n\
         # Shared data of the filters (every Portcullis key starts with \"portcullis/\"); Kong 3.4-3.5: nginx_wasm_shm_portcullis.\n\
         nginx_wasm_shm_kv_portcullis = 32m\n",
        if used.is_empty() { "(none)".to_string() } else { used.join(", ") },
        p.gateway.kong_filters_path
    )
}

/// Renders to YAML text with a header naming the source.
pub fn to_yaml(value: &Value, l: &Loaded, what: &str) -> String {
    let body = serde_norway::to_string(value).unwrap_or_default();
    format!(
        "# {what} generated by `portcullis render` from {}. Do not edit: change the policy file and render again.\n{body}",
        l.file
    )
}
