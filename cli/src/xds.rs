//! `portcullis serve --xds ADDR FILE`: serves the policy to Envoy over xDS and follows edits of the file.
//!
//! Protocol: Envoy's REST-JSON xDS (v3): Envoy polls `POST /v3/discovery:listeners` and
//! `POST /v3/discovery:clusters` with a `DiscoveryRequest` and gets a `DiscoveryResponse` whose resources are
//! the same listener and clusters `render --target envoy` writes (the wasm filter configs inlined in the
//! listener). The bootstrap that points Envoy here comes from `render --target envoy --xds ADDR`.
//!
//! The file is polled; every change is loaded and validated like `portcullis validate`. A valid edit gets a
//! new version that Envoy picks up on its next poll; an invalid one is reported and ignored, and the last
//! good version keeps being served.

use crate::policy::{LoadError, Loaded};
use crate::render;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Largest discovery request read (Envoy's requests carry its node description: a few KB).
const MAX_REQUEST: usize = 1024 * 1024;
/// Longest request or header line.
const MAX_LINE: u64 = 16 * 1024;
/// Connections served at once (one Envoy holds one or two).
const MAX_CONNECTIONS: usize = 64;

/// The served snapshot: a version and the resources of each type.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub listeners: Vec<Value>,
    pub clusters: Vec<Value>,
}

impl Snapshot {
    pub fn from_policy(version: u64, l: &Loaded) -> Snapshot {
        let bootstrap = render::envoy(&l.policy);
        let with_type = |items: &Value, type_url: &str| -> Vec<Value> {
            items
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|item| {
                            let mut r = item.clone();
                            if let Some(obj) = r.as_object_mut() {
                                obj.insert("@type".into(), json!(type_url));
                            }
                            r
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Snapshot {
            version,
            listeners: with_type(&bootstrap["static_resources"]["listeners"], LISTENER_TYPE),
            clusters: with_type(&bootstrap["static_resources"]["clusters"], CLUSTER_TYPE),
        }
    }

    /// The DiscoveryResponse for a request path, or None for an unknown path.
    pub fn response(&self, path: &str) -> Option<Value> {
        let (type_url, resources) = match path {
            "/v3/discovery:listeners" => (LISTENER_TYPE, &self.listeners),
            "/v3/discovery:clusters" => (CLUSTER_TYPE, &self.clusters),
            _ => return None,
        };
        Some(json!({
            "version_info": self.version.to_string(),
            "type_url": type_url,
            "resources": resources,
        }))
    }
}

/// The bootstrap that makes Envoy take its listeners and clusters from the xDS server at `xds`.
pub fn bootstrap(l: &Loaded, xds: std::net::SocketAddr) -> Value {
    let admin: std::net::SocketAddr = l
        .policy
        .gateway
        .admin
        .parse()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let source = json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": ["portcullis_xds"],
            "refresh_delay": "0.5s",
            "request_timeout": "1s"
        }
    });
    json!({
        "node": { "id": "portcullis", "cluster": "portcullis" },
        "admin": { "address": { "socket_address": { "address": admin.ip().to_string(), "port_value": admin.port() } } },
        "dynamic_resources": { "lds_config": source, "cds_config": source },
        "static_resources": { "clusters": [{
            "name": "portcullis_xds",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "portcullis_xds",
                "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "socket_address": { "address": xds.ip().to_string(), "port_value": xds.port() }
                }}}]}]
            }
        }]}
    })
}

/// Runs the server until the process ends. `log` receives one line per event (start, update, rejection).
pub fn serve(
    listener: TcpListener,
    file: PathBuf,
    first: Loaded,
    poll: Duration,
    env: fn(&str) -> Option<String>,
    log: fn(&str),
) -> std::io::Result<()> {
    let state = Arc::new(RwLock::new(Snapshot::from_policy(1, &first)));
    let watched = state.clone();
    std::thread::spawn(move || watch(&file, &watched, poll, env, log));
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closes the connection
        }
        let state = state.clone();
        let open = open.clone();
        std::thread::spawn(move || {
            let _ = answer(stream, &state);
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn stamp(path: &Path) -> Option<(SystemTime, u64, Vec<u8>)> {
    let meta = std::fs::metadata(path).ok()?;
    // Content too: two writes within the mtime granularity must still count as a change.
    let content = std::fs::read(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), content))
}

fn watch(
    file: &Path,
    state: &RwLock<Snapshot>,
    poll: Duration,
    env: fn(&str) -> Option<String>,
    log: fn(&str),
) {
    let mut last = stamp(file);
    loop {
        std::thread::sleep(poll);
        let now = stamp(file);
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        match crate::load_and_validate(file, &env) {
            Ok(loaded) => {
                let version = state.read().map(|s| s.version).unwrap_or(0) + 1;
                let snapshot = Snapshot::from_policy(version, &loaded);
                if let Ok(mut s) = state.write() {
                    *s = snapshot;
                }
                log(&format!("version {version}: {} applied", file.display()));
            }
            Err(LoadError::Io(e)) => log(&format!(
                "rejected: {e}; still serving the last good version"
            )),
            Err(LoadError::Invalid(errors)) => {
                for e in &errors {
                    log(&format!("rejected: {e}"));
                }
                log("rejected: still serving the last good version");
            }
        }
    }
}

fn answer(stream: TcpStream, state: &RwLock<Snapshot>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        // Keep-alive: Envoy reuses the connection for its polls.
        let mut line = String::new();
        if (&mut reader).take(MAX_LINE).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if (&mut reader).take(MAX_LINE).read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if n.eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        if length > MAX_REQUEST {
            return write_response(&mut out, 413, "{}", true);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let snapshot = state.read().map(|s| s.clone()).ok();
        let reply = match (method.as_str(), snapshot.and_then(|s| s.response(&path))) {
            ("POST", Some(r)) => (200, r.to_string()),
            (_, Some(_)) => (405, "{}".to_string()),
            (_, None) => (404, "{}".to_string()),
        };
        write_response(&mut out, reply.0, &reply.1, close)?;
        if close {
            return Ok(());
        }
    }
}

fn write_response(
    out: &mut TcpStream,
    status: u16,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Payload Too Large",
    };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    )?;
    out.flush()
}
