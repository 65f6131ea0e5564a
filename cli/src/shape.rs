//! Decisions about Envoy's shape of a policy that the static bootstrap (`render`) and the xDS server (`serve`)
//! both make, taken once here so the two always agree.

use crate::policy::{parse_url, ChainItem, Endpoint, Match, PolicyFile, Upstream};

/// Name of the one listener, its route configuration and its virtual host.
pub const LISTENER: &str = "portcullis";
pub const ROUTE_CONFIG: &str = "portcullis";
pub const VIRTUAL_HOST: &str = "all";
pub const STAT_PREFIX: &str = "portcullis";

/// The Envoy filter name of route `route`'s chain item `index`.
pub fn envoy_filter_name(route: &str, index: usize, filter: &str) -> String {
    format!("portcullis.{route}.{index}.{filter}")
}

/// Where Envoy finds a filter's `.wasm`.
pub fn wasm_filename(p: &PolicyFile, item: &ChainItem) -> String {
    format!(
        "{}/{}.wasm",
        p.gateway.dist.trim_end_matches('/'),
        item.artifact()
    )
}

/// How a route matches one request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// RE2 regex over the whole value.
    Regex(String),
    Exact(String),
}

/// The header conditions of a route besides its path prefix: host (any port, any case), methods, headers.
pub fn header_matches(m: &Match) -> Vec<(String, HeaderMatch)> {
    let mut out = Vec::new();
    if let Some(host) = &m.host {
        out.push((
            ":authority".to_string(),
            HeaderMatch::Regex(format!("(?i)^{}(:[0-9]+)?$", regex_escape(host))),
        ));
    }
    if !m.methods.is_empty() {
        out.push((
            ":method".to_string(),
            HeaderMatch::Regex(format!("^({})$", m.methods.join("|"))),
        ));
    }
    for (name, value) in &m.headers {
        out.push((name.clone(), HeaderMatch::Exact(value.clone())));
    }
    out
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

/// An upstream's endpoint (the loader validated the URL; a harmless value stands in rather than a panic).
pub fn endpoint(up: &Upstream) -> Endpoint {
    parse_url(&up.url).unwrap_or(Endpoint {
        tls: false,
        host: "127.0.0.1".into(),
        port: 1,
    })
}

/// An `ip:port` the loader validated, or a harmless stand-in.
pub fn socket_addr(addr: &str) -> std::net::SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_any_port_and_case_and_methods_are_anchored() {
        let m = Match {
            host: Some("api.example.test".into()),
            methods: vec!["GET".into(), "HEAD".into()],
            headers: [("x-env".to_string(), "blue".to_string())].into(),
            ..Match::default()
        };
        assert_eq!(
            header_matches(&m),
            vec![
                (
                    ":authority".into(),
                    HeaderMatch::Regex(r"(?i)^api\.example\.test(:[0-9]+)?$".into())
                ),
                (":method".into(), HeaderMatch::Regex("^(GET|HEAD)$".into())),
                ("x-env".into(), HeaderMatch::Exact("blue".into())),
            ]
        );
    }
}
