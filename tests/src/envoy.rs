//! Starts a real Envoy with a generated bootstrap (JSON) on ephemeral loopback ports, waits until its admin
//! endpoint reports LIVE, and kills it on drop — also when a test panics, and (via PDEATHSIG) when the test
//! process dies.

use crate::client::{Request, Response};
use crate::paths;
use crate::process::{self, MetricFlushWait};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready (V8 compiles each wasm module at start).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One proxy-wasm filter in the chain.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// Filter name (also its `.wasm` name in `dist/` and its root id).
    pub name: String,
    pub wasm: PathBuf,
    pub config: Value,
    /// Filters with the same vm_id and code share one VM (and its shared data).
    pub vm_id: String,
}

impl FilterSpec {
    pub fn new(name: &str, config: Value) -> Self {
        FilterSpec {
            name: name.to_string(),
            wasm: paths::wasm(name),
            config,
            vm_id: name.to_string(),
        }
    }

    /// The `envoy.filters.http.wasm` entry for this filter.
    pub fn to_envoy(&self) -> Value {
        let configuration = match &self.config {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": self.name,
                    "root_id": self.name,
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": configuration
                    },
                    "vm_config": {
                        "vm_id": self.vm_id,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": self.wasm.to_string_lossy() } }
                    }
                }
            }
        })
    }
}

/// Everything that varies between test bootstraps.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// HTTP filters before the router, in order (wasm filters or native ones as raw JSON).
    pub http_filters: Vec<Value>,
    pub upstream: SocketAddr,
    /// More static clusters, by name (e.g. a JWKS server or an OTLP collector).
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// Routes of the single virtual host; default: everything to `upstream`, route name `default`.
    pub routes: Option<Value>,
    pub concurrency: usize,
}

impl EnvoyConfig {
    pub fn new(upstream: SocketAddr) -> Self {
        EnvoyConfig {
            http_filters: Vec::new(),
            upstream,
            extra_clusters: Vec::new(),
            routes: None,
            concurrency: 1,
        }
    }

    /// The bootstrap as JSON (Envoy reads `.json` bootstraps as readily as YAML).
    pub fn bootstrap(&self) -> Value {
        let mut filters = self.http_filters.clone();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let routes = self.routes.clone().unwrap_or_else(|| {
            json!([{ "name": "default", "match": {"prefix": "/"}, "route": {"cluster": "upstream"} }])
        });
        let mut clusters = vec![cluster("upstream", self.upstream)];
        clusters.extend(self.extra_clusters.iter().map(|(n, a)| cluster(n, *a)));
        json!({
            "admin": { "address": loopback(0) },
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": loopback(0),
                    "filter_chains": [{ "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": "local",
                                "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }]
                            },
                            "http_filters": filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }
}

fn loopback(port: u16) -> Value {
    json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } })
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() }
            }}}]}]
        }
    })
}

#[derive(Debug)]
pub enum StartError {
    /// Envoy exited before becoming ready (e.g. a filter refused its configuration); `log` is its output.
    Exited {
        code: Option<i32>,
        log: String,
    },
    TimedOut {
        log: String,
    },
    Spawn(String),
}

impl StartError {
    pub fn log(&self) -> &str {
        match self {
            StartError::Exited { log, .. } | StartError::TimedOut { log } => log,
            StartError::Spawn(e) => e,
        }
    }

    /// Whether the gateway refused a filter's configuration: Envoy will not create the plugin (and exits); on
    /// Kong's engine the filter fails closed, which the harness checked with a request
    /// ([`crate::kong_engine::FAILED_CLOSED`]).
    pub fn refused_filter_config(&self) -> bool {
        let log = self.log();
        log.contains("Unable to create Wasm HTTP filter")
            || log.contains("Unable to create Wasm plugin")
            || log.contains(crate::kong_engine::FAILED_CLOSED)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Exited { code, log } => write!(f, "the gateway exited ({code:?}):\n{log}"),
            StartError::TimedOut { log } => write!(f, "the gateway was not ready in time:\n{log}"),
            StartError::Spawn(e) => write!(f, "{e}"),
        }
    }
}

fn find_stat(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let (n, v) = line.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    log_path: PathBuf,
    metric_flush: MetricFlushWait,
}

impl Envoy {
    pub fn start(config: &EnvoyConfig) -> Result<Envoy, StartError> {
        Envoy::start_bootstrap(&config.bootstrap(), config.concurrency)
    }

    pub fn start_bootstrap(bootstrap: &Value, concurrency: usize) -> Result<Envoy, StartError> {
        let dir = paths::scratch_dir("envoy");
        let config_path = dir.join("envoy.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(bootstrap).unwrap_or_default(),
        )
        .map_err(|e| StartError::Spawn(format!("write config: {e}")))?;
        Envoy::start_file(&config_path, &dir, concurrency)
    }

    /// Starts Envoy on a config file as written (YAML or JSON), from the repository root so relative
    /// `dist/…` paths resolve; logs and the admin address go to `dir`.
    pub fn start_file(
        config_path: &std::path::Path,
        dir: &std::path::Path,
        concurrency: usize,
    ) -> Result<Envoy, StartError> {
        Envoy::start_file_on_cpu(config_path, dir, concurrency, None)
    }

    /// Like [`Envoy::start_file`], optionally pinned to one CPU with `taskset` (benchmarks).
    pub fn start_file_on_cpu(
        config_path: &std::path::Path,
        dir: &std::path::Path,
        concurrency: usize,
        cpu: Option<usize>,
    ) -> Result<Envoy, StartError> {
        let binary = paths::envoy_binary();
        if !binary.exists() {
            return Err(StartError::Spawn(format!(
                "no Envoy at {} — run scripts/setup (or set PORTCULLIS_ENVOY)",
                binary.display()
            )));
        }
        let dir = dir.to_path_buf();
        let admin_path = dir.join("admin-address.txt");
        let log_path = dir.join("envoy.log");
        let _ = std::fs::remove_file(&admin_path);
        let log = std::fs::File::create(&log_path).map_err(|e| StartError::Spawn(e.to_string()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let mut cmd = process::command_on_cpu(&binary, cpu);
        cmd.arg("-c")
            .arg(config_path)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--use-dynamic-base-id")
            .arg("--disable-hot-restart")
            .args(["-l", "info"])
            .current_dir(paths::repo_root())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = process::spawn_tied(cmd, libc::SIGKILL, &binary)?;
        let mut envoy = Envoy {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            log_path,
            metric_flush: MetricFlushWait::default(),
        };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &std::path::Path) -> Result<(), StartError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StartError::Exited {
                    code: status.code(),
                    log: self.logs(),
                });
            }
            let admin = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            if let Some(admin) = admin {
                self.admin = admin;
                let ready = Request::new(admin, "GET", "/ready").try_send();
                if ready.is_ok_and(|r| r.status == 200) {
                    if let Some(listener) = self.find_listener() {
                        self.listener = listener;
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StartError::TimedOut { log: self.logs() })
    }

    fn find_listener(&self) -> Option<SocketAddr> {
        let listeners = self.admin_get("/listeners?format=json").ok()?.json();
        let sa = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
        let ip = sa["address"].as_str()?;
        let port = u16::try_from(sa["port_value"].as_u64()?).ok()?;
        format!("{ip}:{port}").parse().ok()
    }

    /// An admin endpoint. Reads of `/stats…` first wait out the filters' metric flush period (counter
    /// additions reach Envoy on each VM's timer, at most one `FLUSH_PERIOD` later), unless stats were read
    /// moments ago (back-to-back reads). Polling loops use [`Envoy::admin_get_now`].
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        if path.starts_with("/stats") {
            self.metric_flush.before_read();
        }
        self.admin_get_now(path)
    }

    /// An admin endpoint, read at once.
    pub fn admin_get_now(&self, path: &str) -> std::io::Result<Response> {
        Request::new(self.admin, "GET", path).try_send()
    }

    /// Envoy's own output so far (including every filter's log lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A stat by its exact name from `/stats` (e.g. `wasmcustom.portcullis_x_total`), once the filters'
    /// pending counter additions have reached Envoy; None if absent.
    pub fn stat(&self, name: &str) -> Option<i64> {
        find_stat(&self.admin_get("/stats").ok()?.text(), name)
    }

    /// A stat as Envoy has it right now (for polling loops: counters trail by up to one flush period).
    pub fn stat_now(&self, name: &str) -> Option<i64> {
        find_stat(&self.admin_get_now("/stats").ok()?.text(), name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether Envoy is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
