//! A test gateway: an in-process upstream plus a real proxy — Envoy or Kong's engine, whichever
//! [`crate::host::current`] names — running the given filter chain. Tests describe the chain, routes and
//! named upstreams once; each host gets them in its own configuration language.

use crate::client::Request;
use crate::envoy::{Envoy, EnvoyConfig, FilterSpec, StartError};
use crate::host::{self, HostKind};
use crate::kong_engine::{EngineConfig, KongEngine};
use crate::upstream::Upstream;
use serde_json::Value;
use std::net::SocketAddr;

/// The running proxy of a [`Gateway`].
pub enum Proxy {
    Envoy(Envoy),
    KongEngine(KongEngine),
}

impl Proxy {
    /// Where clients connect.
    pub fn listener(&self) -> SocketAddr {
        match self {
            Proxy::Envoy(e) => e.listener,
            Proxy::KongEngine(k) => k.listener,
        }
    }

    /// The proxy's log so far (every filter logs through it).
    pub fn logs(&self) -> String {
        match self {
            Proxy::Envoy(e) => e.logs(),
            Proxy::KongEngine(k) => k.logs(),
        }
    }

    /// Every line filter `filter` logged, in order: the message after its `[<filter>] ` prefix and the
    /// worker that wrote it (Envoy: the thread id; nginx: `pid#tid`). nginx's trailing request context
    /// (`, client: …, server: …`) is cut off.
    pub fn filter_log(&self, filter: &str) -> Vec<FilterLogLine> {
        match self {
            Proxy::Envoy(_) => {
                let prefix = format!("[{filter}] ");
                self.logs()
                    .lines()
                    .filter_map(|line| {
                        let (head, message) = line.split_once(&prefix)?;
                        // [2026-12-04 21:00:00.000][1234][info][wasm] [source/…] wasm log …: [filter] msg
                        let worker = head.split('[').nth(2)?.split(']').next()?;
                        Some(FilterLogLine {
                            worker: worker.to_string(),
                            message: message.to_string(),
                        })
                    })
                    .collect()
            }
            Proxy::KongEngine(_) => nginx_filter_log(&self.logs(), filter),
        }
    }

    pub fn host(&self) -> HostKind {
        match self {
            Proxy::Envoy(_) => HostKind::Envoy,
            Proxy::KongEngine(_) => HostKind::KongEngine,
        }
    }

    /// The Envoy, for what only Envoy exposes (its admin API: `/stats/prometheus`, `/memory`).
    pub fn envoy(&self) -> Option<&Envoy> {
        match self {
            Proxy::Envoy(e) => Some(e),
            Proxy::KongEngine(_) => None,
        }
    }

    /// A filter metric by its Envoy stat name (`wasmcustom.<metric>`), once pending metric additions
    /// reached the host.
    pub fn stat(&self, name: &str) -> Option<i64> {
        match self {
            Proxy::Envoy(e) => e.stat(name),
            Proxy::KongEngine(k) => k.stat(name),
        }
    }

    /// A filter metric as the host holds it now (for polling loops).
    pub fn stat_now(&self, name: &str) -> Option<i64> {
        match self {
            Proxy::Envoy(e) => e.stat_now(name),
            Proxy::KongEngine(k) => k.stat_now(name),
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Proxy::Envoy(e) => e.pid(),
            Proxy::KongEngine(k) => k.pid(),
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self {
            Proxy::Envoy(e) => e.is_running(),
            Proxy::KongEngine(k) => k.is_running(),
        }
    }

    /// For tests that provoke error-level engine logs on purpose: the engine's fatal-line check is off.
    pub fn expect_fatal_log_lines(&mut self) {
        if let Proxy::KongEngine(k) = self {
            k.expected_errors = true;
        }
    }
}

/// A filter's message from an nginx error-log line: nginx appends its request context as
/// `[ while <action>], client: …` (`ngx_http_log_error`, src/http/ngx_http_request.c), e.g.
/// ` while logging request` for lines written in the log phase. Actions are nginx's own phrases, letters
/// and spaces only, so a message that merely contains " while " keeps it.
fn nginx_message(line: &str) -> &str {
    let Some(at) = line.rfind(", client: ") else {
        return line;
    };
    let message = &line[..at];
    match message.rfind(" while ") {
        Some(w)
            if message[w + 7..]
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b' ') =>
        {
            &message[..w]
        }
        _ => message,
    }
}

/// Every line filter `filter` logged in an nginx error log (Kong's engine, Kong):
/// `2026/12/04 21:00:00 [info] 1234#1234: *5 [proxy-wasm]["f" #1] [filter] msg, client: …`, the worker being
/// `pid#tid` and nginx's trailing request context cut off.
pub fn nginx_filter_log(log: &str, filter: &str) -> Vec<FilterLogLine> {
    let prefix = format!("[{filter}] ");
    log.lines()
        .filter_map(|line| {
            let (head, message) = line.split_once(&prefix)?;
            let worker = head.split_whitespace().nth(3)?.trim_end_matches(':');
            Some(FilterLogLine {
                worker: worker.to_string(),
                message: nginx_message(message).to_string(),
            })
        })
        .collect()
}

/// One line a filter logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterLogLine {
    /// The worker (thread or process) that wrote it.
    pub worker: String,
    pub message: String,
}

pub struct Gateway {
    pub upstream: Upstream,
    pub proxy: Proxy,
}

/// Builder for a [`Gateway`].
pub struct GatewayBuilder {
    host: HostKind,
    upstream: Option<Upstream>,
    chain: Vec<Link>,
    concurrency: usize,
    clusters: Vec<(String, SocketAddr)>,
    routes: Option<Value>,
    /// Envoy-only bootstrap fields (e.g. `stats_config`); other hosts have no equivalent and ignore them.
    bootstrap_fields: Vec<(String, Value)>,
    keep_on_refusal: bool,
    shared_memory: String,
}

enum Link {
    Wasm(FilterSpec),
    /// A native Envoy filter (benchmarks' comparisons): Envoy only.
    EnvoyNative(Value),
}

impl Gateway {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> GatewayBuilder {
        GatewayBuilder {
            host: host::current(),
            upstream: None,
            chain: Vec::new(),
            concurrency: 1,
            clusters: Vec::new(),
            routes: None,
            bootstrap_fields: Vec::new(),
            keep_on_refusal: false,
            shared_memory: crate::kong_engine::SHARED_MEMORY.into(),
        }
    }

    pub fn request(&self, method: &str, path: &str) -> Request {
        Request::new(self.proxy.listener(), method, path)
    }

    pub fn get(&self, path: &str) -> Request {
        self.request("GET", path)
    }

    pub fn listener(&self) -> SocketAddr {
        self.proxy.listener()
    }
}

impl GatewayBuilder {
    /// This gateway on another host than the run's (tests that compare hosts).
    pub fn on(mut self, host: HostKind) -> Self {
        self.host = host;
        self
    }

    /// Adds a Portcullis filter (`dist/<name>.wasm`) with its JSON config.
    pub fn filter(self, name: &str, config: Value) -> Self {
        self.filter_spec(FilterSpec::new(name, config))
    }

    /// Adds a filter spec (custom vm_id or wasm path).
    pub fn filter_spec(mut self, spec: FilterSpec) -> Self {
        self.chain.push(Link::Wasm(spec));
        self
    }

    /// Adds a native Envoy HTTP filter as raw JSON (Envoy only: starting on another host fails).
    pub fn native_filter(mut self, filter: Value) -> Self {
        self.chain.push(Link::EnvoyNative(filter));
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Worker threads (Envoy) or worker processes (nginx).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// A named upstream: an Envoy cluster, or on Kong's engine the `host:port` that filter configs naming it
    /// in a `cluster`/`upstream` field are given.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_string(), addr));
        self
    }

    /// Envoy-shaped routes of the single virtual host (Kong's engine gets `location`s for them).
    pub fn routes(mut self, routes: Value) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Sets a top-level Envoy bootstrap field (replacing any generated one), e.g.
    /// `.bootstrap_field("stats_config", json!({"stats_tags": [..]}))`; no effect on Kong's engine.
    pub fn bootstrap_field(mut self, name: &str, value: Value) -> Self {
        self.bootstrap_fields.push((name.to_string(), value));
        self
    }

    /// Where the host keeps running after a filter refused its configuration (Kong's engine: nginx stays up
    /// with its workers gone), `start` returns the gateway instead of an error, to test what clients get.
    /// Envoy exits on a refused filter, so there `start` still fails.
    pub fn keep_running_if_refused(mut self) -> Self {
        self.keep_on_refusal = true;
        self
    }

    /// The size of Kong's engine's shared-data zone (`shm_kv portcullis <size> eviction=none`; nginx's minimum
    /// is 3 pages). Envoy's shared data has no size limit, so Envoy ignores it.
    pub fn shared_memory(mut self, size: &str) -> Self {
        self.shared_memory = size.to_string();
        self
    }

    fn envoy_filters(&self) -> Vec<Value> {
        self.chain
            .iter()
            .map(|link| match link {
                Link::Wasm(spec) => spec.to_envoy(),
                Link::EnvoyNative(v) => v.clone(),
            })
            .collect()
    }

    /// The Envoy bootstrap for this gateway (benchmarks and the demo start Envoy from it).
    pub fn config(&self, upstream: SocketAddr) -> EnvoyConfig {
        EnvoyConfig {
            http_filters: self.envoy_filters(),
            upstream,
            extra_clusters: self.clusters.clone(),
            routes: self.routes.clone(),
            concurrency: self.concurrency,
        }
    }

    pub fn start(mut self) -> Result<Gateway, StartError> {
        let upstream = self.upstream.take().unwrap_or_else(Upstream::echo);
        let proxy = match self.host {
            HostKind::Envoy => {
                let mut bootstrap = self.config(upstream.addr).bootstrap();
                for (name, value) in &self.bootstrap_fields {
                    bootstrap[name] = value.clone();
                }
                Proxy::Envoy(Envoy::start_bootstrap(&bootstrap, self.concurrency)?)
            }
            HostKind::KongEngine => {
                let mut chain = Vec::new();
                for link in self.chain {
                    match link {
                        Link::Wasm(spec) => chain.push(spec),
                        Link::EnvoyNative(v) => {
                            return Err(StartError::Spawn(format!(
                                "native Envoy filter {} has no Kong-engine equivalent",
                                v["name"]
                            )))
                        }
                    }
                }
                Proxy::KongEngine(KongEngine::start(&EngineConfig {
                    chain,
                    upstream: upstream.addr,
                    clusters: self.clusters,
                    routes: self.routes,
                    workers: self.concurrency,
                    keep_on_refusal: self.keep_on_refusal,
                    native: Default::default(),
                    cpu: None,
                    origin_in_engine: false,
                    shared_memory: self.shared_memory,
                })?)
            }
        };
        Ok(Gateway { upstream, proxy })
    }
}
