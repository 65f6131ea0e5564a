//! Kong's WebAssembly engine as a test host: nginx with ngx_wasm_module (what Kong 3.4–3.10 embed), started
//! on a loopback port with a generated `nginx.conf`, and stopped on drop — also when a test panics, and
//! (via PDEATHSIG) when the test process dies.
//!
//! The chain is a list of `proxy_wasm` lines in a proxied `location`, the shared data zone is
//! `shm_kv portcullis`, as Kong's `nginx_wasm_shm_kv_portcullis` declares it. Envoy-shaped routes and
//! clusters given to the [`crate::Gateway`] builder are translated: a route becomes a `location` (header
//! matches through a `map`), a cluster named in a filter's `cluster`/`upstream` field becomes its
//! `host:port`, which is what ngx_wasm_module's `dispatch_http_call` takes.
//!
//! What bare nginx cannot show of real Kong: Kong's Lua layer (chains attached per route at run time, configs
//! validated against `meta.json` and re-encoded, the `kong.*` properties such as `kong.route_id`), and
//! Kong's metrics endpoint (the filters' metrics live in the engine's shared memory, read only by Lua).

use crate::envoy::{FilterSpec, StartError};
use crate::paths;
use crate::process::{self, MetricFlushWait};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Startup includes compiling every module in every worker (wasmtime, ~0.2–1 s per module).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Error-log levels that fail a test: a worker that cannot start, a lost connection to the engine, a trap.
const FATAL_MARKERS: [&str; 5] = ["[emerg]", "[alert]", "[crit]", "wasm trap", "host trap"];

/// Everything the engine's `nginx.conf` is made from.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub chain: Vec<FilterSpec>,
    pub upstream: SocketAddr,
    /// Named upstreams (Envoy clusters): route targets, and callout targets in filter configs.
    pub clusters: Vec<(String, SocketAddr)>,
    /// Envoy-shaped routes (`name`, `match.prefix|path`, `match.headers[].string_match.exact`,
    /// `route.cluster`); default: everything to `upstream`.
    pub routes: Option<Value>,
    pub workers: usize,
    /// Keep nginx running when its filters refuse their configuration (to show what clients then get).
    pub keep_on_refusal: bool,
    /// nginx's own directives beside the chain (benchmarks' native anchors, e.g. `limit_req`).
    pub native: NativeDirectives,
    /// Pin nginx, master and workers, to this CPU with `taskset` (benchmarks).
    pub cpu: Option<usize>,
    /// nginx itself serves `upstream` (`return 200 "ok\n"`) and proxies to it over kept-alive connections,
    /// as Kong does by default: benchmarks, which measure no other process.
    pub origin_in_engine: bool,
    /// Size of the `portcullis` shared-data zone (`shm_kv portcullis <size> eviction=none`).
    pub shared_memory: String,
}

/// The `portcullis` zone's size unless a test sets one: what `portcullis render` ships.
pub const SHARED_MEMORY: &str = "32m";

/// Native nginx directives, each a complete line (`;` or block included).
#[derive(Debug, Clone, Default)]
pub struct NativeDirectives {
    /// In the `http` block (e.g. `limit_req_zone …;`, a `server` block).
    pub http: Vec<String>,
    /// In every location that runs the chain, before it.
    pub location: Vec<String>,
}

impl EngineConfig {
    /// A benchmark's engine: one worker running `chain` and `native` in front of an origin served by the same
    /// nginx ([`EngineConfig::origin_in_engine`]).
    pub fn bench(
        chain: Vec<FilterSpec>,
        native: NativeDirectives,
        cpu: Option<usize>,
    ) -> std::io::Result<EngineConfig> {
        Ok(EngineConfig {
            chain,
            upstream: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            clusters: Vec::new(),
            routes: None,
            workers: 1,
            keep_on_refusal: false,
            native,
            cpu,
            origin_in_engine: true,
            shared_memory: SHARED_MEMORY.into(),
        })
    }
}

/// A running nginx with ngx_wasm_module.
pub struct KongEngine {
    child: Child,
    pub listener: SocketAddr,
    /// Where nginx answers [`READY_PATH`] and [`METRIC_PATH`]: the listener, or with
    /// [`KongEngine::start_file`] a loopback port of the harness's own.
    control: SocketAddr,
    pub dir: PathBuf,
    log_path: PathBuf,
    /// Markers of fatal log lines the test expects (e.g. a filter refusing its configuration).
    pub expected_errors: bool,
    /// The chain's module names (metric name prefixes).
    filters: Vec<String>,
    metric_flush: MetricFlushWait,
}

impl KongEngine {
    pub fn start(config: &EngineConfig) -> Result<KongEngine, StartError> {
        let binary = paths::kong_engine_binary().map_err(StartError::Spawn)?;
        // The listener port is chosen here (nginx cannot report an ephemeral one): another process may take
        // it first, so a bind failure is retried on a fresh port.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&binary, config) {
                Err(StartError::Exited { log, .. }) if log.contains("Address already in use") => {
                    last = Some(StartError::Exited { code: None, log });
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| StartError::Spawn("nginx did not start".into())))
    }

    fn start_once(binary: &Path, config: &EngineConfig) -> Result<KongEngine, StartError> {
        let dir = paths::scratch_dir("kong-engine");
        let port = free_port().map_err(|e| StartError::Spawn(format!("no free port: {e}")))?;
        let listener = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = render(config, &dir, listener)?;
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| StartError::Spawn(e.to_string()))?;
        let child = spawn(binary, &dir, &conf_path, config.cpu, None)?;
        let mut engine = KongEngine {
            child,
            listener,
            control: listener,
            log_path: dir.join("error.log"),
            dir,
            expected_errors: false,
            filters: modules(&config.chain).into_iter().map(|(n, _)| n).collect(),
            metric_flush: MetricFlushWait::default(),
        };
        engine.wait_ready(Some(config.workers), config.keep_on_refusal)?;
        Ok(engine)
    }

    /// Starts nginx on a config file written elsewhere (`portcullis render --target kong-engine`), from the
    /// repository root so relative module paths resolve, with `dir` as its prefix (logs, temporary files).
    /// Clients connect to the file's first `listen` address. The harness runs a copy, `dir/harness.conf`,
    /// with what it reads through added: the metric reader's module and a server on a loopback port of its
    /// own answering [`READY_PATH`] and [`METRIC_PATH`]; nginx runs in the foreground and logs at `info`
    /// to `dir/error.log` ([`KongEngine::logs`]) besides the file's own `error_log`.
    pub fn start_file(conf_path: &Path, dir: &Path) -> Result<KongEngine, StartError> {
        let binary = paths::kong_engine_binary().map_err(StartError::Spawn)?;
        let text = std::fs::read_to_string(conf_path)
            .map_err(|e| StartError::Spawn(format!("{}: {e}", conf_path.display())))?;
        let listener = first_listen(&text).ok_or_else(|| {
            StartError::Spawn(format!("{}: no `listen ip:port`", conf_path.display()))
        })?;
        let control = SocketAddr::from((
            [127, 0, 0, 1],
            free_port().map_err(|e| StartError::Spawn(format!("no free port: {e}")))?,
        ));
        let conf = with_control_server(&text, dir, control).ok_or_else(|| {
            StartError::Spawn(format!(
                "{}: no `wasm {{` or `http {{` line",
                conf_path.display()
            ))
        })?;
        let run_path = dir.join("harness.conf");
        let log_path = dir.join("error.log");
        std::fs::create_dir_all(dir.join("logs"))
            .and_then(|_| std::fs::write(&run_path, conf))
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let globals = format!("daemon off; error_log {} info;", log_path.display());
        let child = spawn(&binary, dir, &run_path, None, Some(&globals))?;
        let mut engine = KongEngine {
            child,
            listener,
            control,
            dir: dir.to_path_buf(),
            log_path,
            expected_errors: false,
            filters: text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("module "))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect(),
            metric_flush: MetricFlushWait::default(),
        };
        engine.wait_ready(None, false)?;
        Ok(engine)
    }

    /// A filter refused its configuration and fails closed (filters/common/src/adapter.rs): checked here
    /// with a request, which must get the filter's 500. Then, as Envoy's refusal does, the start fails with the
    /// log (and [`FAILED_CLOSED`] appended), unless the test asked to see what clients get.
    fn failed_closed(&mut self, keep_on_refusal: bool) -> Result<(), StartError> {
        self.expected_errors = true;
        if keep_on_refusal {
            return Ok(());
        }
        let probe = crate::client::Request::new(self.listener, "GET", "/")
            .timeout(Duration::from_secs(5))
            .try_send();
        self.stop();
        let mut log = self.logs();
        match probe {
            Ok(r) if r.status == 500 && r.text().contains("is not configured") => {
                log.push_str(&format!("\n{FAILED_CLOSED}\n"));
            }
            other => log.push_str(&format!(
                "\n[harness] the filter refused its configuration but a request got {:?}\n",
                other.map(|r| (r.status, r.text()))
            )),
        }
        Err(StartError::Exited { code: None, log })
    }

    /// Ready when every worker (`workers`, or as many as nginx started) has loaded every module and a request
    /// is answered; a worker that could not start its filters (`[emerg]`) makes the start fail with the log,
    /// as Envoy's refusal does.
    fn wait_ready(
        &mut self,
        workers: Option<usize>,
        keep_on_refusal: bool,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let last_module = self.filters.last().cloned();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.expected_errors = true;
                return Err(StartError::Exited {
                    code: status.code(),
                    log: self.logs(),
                });
            }
            let log = self.logs();
            if keep_on_refusal && log.contains(REFUSAL_MARKER) {
                // what the operator sees is in the log; the test asks what clients get
                self.expected_errors = true;
                return Ok(());
            }
            if FATAL_MARKERS.iter().any(|m| log.contains(m)) {
                self.abandon();
                return Err(StartError::Exited {
                    code: None,
                    log: self.logs(),
                });
            }
            let loaded = match &last_module {
                Some(m) => workers_done(&log, &format!("successfully loaded \"{m}\" module")),
                None => workers_started(&log),
            };
            let workers = workers.unwrap_or_else(|| workers_started(&log).max(1));
            if loaded >= workers && self.answers_ready() {
                // on_configure runs right after the last module loads: give its error a moment to land
                std::thread::sleep(Duration::from_millis(150));
                let log = self.logs();
                if FATAL_MARKERS.iter().any(|m| log.contains(m)) {
                    self.abandon();
                    return Err(StartError::Exited {
                        code: None,
                        log: self.logs(),
                    });
                }
                if log.contains(portcullis_common::config::FAIL_CLOSED) {
                    return self.failed_closed(keep_on_refusal);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.abandon();
        Err(StartError::TimedOut { log: self.logs() })
    }

    fn answers_ready(&self) -> bool {
        crate::client::Request::new(self.control, "GET", READY_PATH)
            .try_send()
            .is_ok_and(|r| r.status == 200)
    }

    /// nginx's error log so far (filters log through it).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Log lines that fail a test (see [`FATAL_MARKERS`]), except the metric reader's trap for a metric no
    /// filter defined yet (see [`KongEngine::stat_now`]).
    pub fn fatal_log_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| FATAL_MARKERS.iter().any(|m| l.contains(m)))
            .filter(|l| !is_unknown_metric_read(l))
            .map(str::to_owned)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker processes' ids, as the master logged them (`start worker process <pid>`).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.logs()
            .lines()
            .filter_map(|l| l.split("start worker process ").nth(1)?.trim().parse().ok())
            .collect()
    }

    /// A filter metric by its Envoy stat name (`wasmcustom.<metric>`), read from the engine's shared memory
    /// through the metric-reader filter at [`METRIC_PATH`]: the engine names it `pw:<filter>:<metric>`
    /// (ngx_wasm_module `src/common/proxy_wasm/ngx_proxy_wasm_host.c`). Like Envoy's `/stats`, it first waits
    /// out the filters' metric flush period unless it was read moments ago.
    pub fn stat(&self, name: &str) -> Option<i64> {
        self.metric_flush.before_read();
        self.stat_now(name)
    }

    /// A filter metric as the engine holds it right now (counters trail by up to one flush period); `None`
    /// while no filter defined it, as Envoy's `/stats` has no such stat. The engine has no lookup that fails
    /// softly: `proxy_get_metric` on an unknown id traps the reader ("could not retrieve metric id …: metric
    /// not found", ngx_wasm_module `src/common/proxy_wasm/ngx_proxy_wasm_host.c`), which answers 500 and
    /// logs the trap; those lines fail no test ([`KongEngine::fatal_log_lines`]). Histograms trap the same
    /// way ("metric is a histogram") and are not readable here.
    pub fn stat_now(&self, name: &str) -> Option<i64> {
        let metric = name.strip_prefix("wasmcustom.").unwrap_or(name);
        let filter = self.metric_owner(metric)?;
        let path = format!("{METRIC_PATH}?name=pw:{filter}:{metric}");
        let r = crate::client::Request::new(self.control, "GET", &path)
            .try_send()
            .ok()?;
        (r.status == 200)
            .then(|| r.text().trim().parse().ok())
            .flatten()
    }

    /// The filter that defines `metric` (`portcullis_<policy>_…`, the `metrics` filter's
    /// `portcullis_http_…` series, or the bundle's): the engine prefixes each name with its filter's.
    fn metric_owner(&self, metric: &str) -> Option<&str> {
        // a filter's own metrics start with its artifact name (`portcullis_rate_limit_…`)
        self.filters
            .iter()
            .find(|f| metric.starts_with(&format!("{f}_")))
            .or_else(|| {
                let series = metric.starts_with("portcullis_http_");
                let metrics = portcullis_common::artifact_name("metrics");
                self.filters.iter().find(|f| series && **f == metrics)
            })
            .or_else(|| self.filters.iter().find(|f| *f == "portcullis"))
            .or_else(|| (self.filters.len() == 1).then(|| &self.filters[0]))
            .map(String::as_str)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fast shutdown (SIGTERM: the master stops its workers), then SIGKILL if it lingers.
    /// Stops nginx; its log is returned to the caller as a start error, so it fails no test by itself.
    fn abandon(&mut self) {
        self.expected_errors = true;
        self.stop();
    }

    fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KongEngine {
    fn drop(&mut self) {
        self.stop();
        if !self.expected_errors && !std::thread::panicking() {
            let fatal = self.fatal_log_lines();
            assert!(
                fatal.is_empty(),
                "Kong's engine logged fatal errors ({}):\n{}",
                self.log_path.display(),
                fatal.join("\n")
            );
        }
    }
}

/// What each worker logs when a filter's `on_configure` refuses its configuration.
const REFUSAL_MARKER: &str = "filter (on_configure failure)";

/// Appended to a start error's log when a filter refused its configuration on Kong's engine and a request got
/// its 500 ([`KongEngine::failed_closed`]).
pub const FAILED_CLOSED: &str =
    "[harness] the filter refused its configuration and failed closed: a request got 500";

/// A path nginx answers itself, outside every filter chain, to tell that a worker serves requests.
pub const READY_PATH: &str = "/__portcullis/ready";
/// Where the metric reader (bench/noop's `metric-reply` step, outside the chain) answers.
pub const METRIC_PATH: &str = "/__portcullis/metric";
/// The metric reader's module name (not a filter name any test uses).
const METRIC_READER: &str = "portcullis_metric_reader";

/// The metric reader's trap for a metric no filter defined (only the reader's, only that cause).
fn is_unknown_metric_read(line: &str) -> bool {
    line.contains("metric not found") && line.contains(&format!("<module: \"{METRIC_READER}\""))
}

/// Starts nginx on `conf_path` with prefix `dir` from the repository root (relative module paths resolve
/// against it, as Envoy's do), its early errors in `dir/error.log` and its output in `dir/stdout.log`.
fn spawn(
    binary: &Path,
    dir: &Path,
    conf_path: &Path,
    cpu: Option<usize>,
    globals: Option<&str>,
) -> Result<Child, StartError> {
    let log_path = dir.join("error.log");
    let out = std::fs::File::create(dir.join("stdout.log"))
        .map_err(|e| StartError::Spawn(e.to_string()))?;
    let mut cmd = process::command_on_cpu(binary, cpu);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf_path)
        .arg("-e")
        .arg(&log_path)
        .args(globals.map(|g| ["-g", g]).into_iter().flatten())
        .current_dir(paths::repo_root())
        .stdin(Stdio::null())
        .stdout(
            out.try_clone()
                .map_err(|e| StartError::Spawn(e.to_string()))?,
        )
        .stderr(out);
    // SIGTERM (not SIGKILL): nginx's master then stops its workers too
    process::spawn_tied(cmd, libc::SIGTERM, binary)
}

/// The first `listen ip:port` of an nginx.conf, as a client reaches it (an unspecified address on loopback).
fn first_listen(conf: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("listen "))
        .find_map(|l| l.split([' ', ';']).next()?.parse().ok())?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Some(addr)
}

/// `conf` with the metric reader's module first in its `wasm` block and, first in its `http` block, a server
/// on `control` answering [`READY_PATH`] and [`METRIC_PATH`] (as the harness's own config does on its
/// listener); None without those blocks.
fn with_control_server(conf: &str, dir: &Path, control: SocketAddr) -> Option<String> {
    let not_found = dir.join("not-found.sock");
    let module = format!(
        "    module {METRIC_READER} {};\n",
        crate::bench::noop_wasm().display()
    );
    let server = format!(
        "    server {{\n        listen {control};\n        location = {READY_PATH} {{ return 200; }}\n        \
         location = {METRIC_PATH} {{\n            proxy_wasm {METRIC_READER} 'request metric-reply';\n            \
         proxy_pass http://unix:{nf}:;\n        }}\n    }}\n    server {{\n        listen unix:{nf};\n        \
         location / {{ return 404; }}\n    }}\n",
        nf = not_found.display()
    );
    let (mut wasm, mut http) = (false, false);
    let mut out = String::with_capacity(conf.len() + module.len() + server.len());
    for line in conf.lines() {
        out.push_str(line);
        out.push('\n');
        match line.trim() {
            "wasm {" if !wasm => {
                out.push_str(&module);
                wasm = true;
            }
            "http {" if !http => {
                out.push_str(&server);
                http = true;
            }
            _ => {}
        }
    }
    (wasm && http).then_some(out)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn workers_started(log: &str) -> usize {
    log.matches("start worker process ").count()
}

/// How many distinct processes logged `marker` (one per worker).
fn workers_done(log: &str, marker: &str) -> usize {
    let mut pids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids.len()
}

/// One `module` directive per distinct wasm file, named after the file as Kong names a filter after the
/// `.wasm` in `wasm_filters_path` (`portcullis_headers`).
fn modules(chain: &[FilterSpec]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for spec in chain {
        if out.iter().any(|(_, p)| *p == spec.wasm) {
            continue;
        }
        let mut name = spec
            .wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.name.clone());
        while out.iter().any(|(n, _)| *n == name) {
            name.push('_');
        }
        out.push((name, spec.wasm.clone()));
    }
    out
}

/// The filter config as the engine receives it: clusters named in `cluster`/`upstream` fields become
/// `host:port`, like `portcullis render --target kong` writes them.
fn engine_config(config: &Value, clusters: &[(String, SocketAddr)]) -> String {
    fn rewrite(v: &mut Value, clusters: &[(String, SocketAddr)]) {
        match v {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if let (true, Value::String(s)) =
                        (key == "cluster" || key == "upstream", &*value)
                    {
                        if let Some((_, addr)) = clusters.iter().find(|(n, _)| n == s) {
                            *value = Value::String(addr.to_string());
                            continue;
                        }
                    }
                    rewrite(value, clusters);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, clusters)),
            _ => {}
        }
    }
    match config {
        Value::String(raw) => raw.clone(),
        other => {
            let mut other = other.clone();
            rewrite(&mut other, clusters);
            other.to_string()
        }
    }
}

/// A single-quoted nginx string: nginx unescapes `\\`, `\'`, `\"`, `\n`, `\r`, `\t` inside quotes.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One nginx `location` block per route path; header-matched routes choose their target through a `map`.
struct Location {
    directive: String,
    /// (header, exact value, target), in route order; then the route without header matches.
    header_targets: Vec<(String, String, SocketAddr)>,
    default_target: Option<SocketAddr>,
}

fn translate_routes(config: &EngineConfig) -> Result<Vec<Location>, StartError> {
    let unsupported = |what: &str| {
        StartError::Spawn(format!(
            "route {what} cannot be expressed on Kong's engine by the test harness"
        ))
    };
    let Some(routes) = &config.routes else {
        return Ok(vec![Location {
            directive: "location /".into(),
            header_targets: Vec::new(),
            default_target: Some(config.upstream),
        }]);
    };
    let mut out: Vec<Location> = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        let m = &route["match"];
        let directive = match (m["prefix"].as_str(), m["path"].as_str()) {
            (Some(p), None) => format!("location {p}"),
            (None, Some(p)) => format!("location = {p}"),
            _ => return Err(unsupported(&format!("match {m}"))),
        };
        let cluster = route["route"]["cluster"]
            .as_str()
            .ok_or_else(|| unsupported(&format!("action {}", route["route"])))?;
        let target = if cluster == "upstream" {
            config.upstream
        } else {
            config
                .clusters
                .iter()
                .find(|(n, _)| n == cluster)
                .map(|(_, a)| *a)
                .ok_or_else(|| unsupported(&format!("cluster {cluster:?} (unknown)")))?
        };
        let at = match out.iter().position(|l| l.directive == directive) {
            Some(i) => i,
            None => {
                out.push(Location {
                    directive,
                    header_targets: Vec::new(),
                    default_target: None,
                });
                out.len() - 1
            }
        };
        let location = &mut out[at];
        match m["headers"].as_array() {
            Some(headers) => {
                for h in headers {
                    let (Some(name), Some(value)) =
                        (h["name"].as_str(), h["string_match"]["exact"].as_str())
                    else {
                        return Err(unsupported(&format!("header match {h}")));
                    };
                    location
                        .header_targets
                        .push((name.to_string(), value.to_string(), target));
                }
            }
            None => {
                location.default_target.get_or_insert(target);
            }
        }
    }
    Ok(out)
}

fn render(config: &EngineConfig, dir: &Path, listener: SocketAddr) -> Result<String, StartError> {
    let not_found = dir.join("not-found.sock");
    let modules = modules(&config.chain);
    let mut chain = String::new();
    let origin = config.origin_in_engine.then_some(config.upstream);
    let mut proxy_headers = vec![PROXY_HOST];
    if origin.is_some() {
        // keeps upstream connections open (nginx sends `Connection: close` by default)
        proxy_headers.push("proxy_set_header Connection \"\"");
    }
    let native = &config.native.location;
    if native.iter().any(|d| d.starts_with("proxy_set_header")) {
        // a level with its own proxy_set_header inherits none from the http block
        for h in &proxy_headers {
            chain.push_str(&format!("            {h};\n"));
        }
    }
    for directive in native {
        chain.push_str(&format!("            {directive}\n"));
    }
    for spec in &config.chain {
        let module = modules
            .iter()
            .find(|(_, p)| *p == spec.wasm)
            .map(|(n, _)| n.as_str())
            .unwrap_or_default();
        let text = engine_config(&spec.config, &config.clusters);
        chain.push_str(&format!(
            "            proxy_wasm {module} {};\n",
            quoted(&text)
        ));
    }
    let mut maps = String::new();
    let mut locations = String::new();
    let routes = translate_routes(config)?;
    for (i, location) in routes.iter().enumerate() {
        let fallback = location
            .default_target
            .map(|a| match origin {
                Some(o) if o == a => format!("http://{ORIGIN}"),
                _ => format!("http://{a}"),
            })
            .unwrap_or_else(|| format!("http://unix:{}:", not_found.display()));
        let pass = if location.header_targets.is_empty() {
            fallback
        } else {
            // nginx evaluates the variable when it connects upstream, after the filters ran (like Envoy,
            // which matches routes again after filters change headers).
            let var = format!("$portcullis_target_{i}");
            let mut map = String::new();
            for (name, value, target) in &location.header_targets {
                let header = name.to_ascii_lowercase().replace('-', "_");
                map.push_str(&format!(
                    "    map $http_{header} {var} {{\n        {} http://{target};\n        default {fallback};\n    }}\n",
                    quoted(value)
                ));
            }
            maps.push_str(&map);
            var
        };
        locations.push_str(&format!(
            "        {} {{\n{chain}            proxy_pass {pass};\n        }}\n",
            location.directive
        ));
    }
    if !routes.iter().any(|l| l.directive == "location /") {
        // Envoy runs the filter chain for requests no route matches, then answers 404: so does this.
        locations.push_str(&format!(
            "        location / {{\n{chain}            proxy_pass http://unix:{}:;\n        }}\n",
            not_found.display()
        ));
    }
    let mut module_lines: String = modules
        .iter()
        .map(|(n, p)| format!("    module {n} {};\n", p.display()))
        .collect();
    module_lines.push_str(&format!(
        "    module {METRIC_READER} {};\n",
        crate::bench::noop_wasm().display()
    ));
    Ok(format!(
        r#"# Generated by the Portcullis test harness (tests/src/kong_engine.rs).
daemon off;
master_process on;
worker_processes {workers};
error_log {log} info;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
wasm {{
{module_lines}    shm_kv portcullis {shared_memory} eviction=none;
}}
http {{
    access_log off;
    proxy_http_version 1.1;
    # the client's Host, as Envoy forwards it (and Kong with preserve_host)
{proxy_headers}    # header and body limits near Envoy's defaults (60 KiB of headers), so both hosts see the same requests
    large_client_header_buffers 8 64k;
    client_max_body_size 16m;
{native_http}{maps}    server {{
        listen {listener} reuseport;
        location = {ready} {{ return 200; }}
        location = {metric} {{
            proxy_wasm {METRIC_READER} 'request metric-reply';
            proxy_pass http://unix:{not_found}:;
        }}
{locations}    }}
    server {{
        listen unix:{not_found};
        location / {{ return 404; }}
    }}
}}
"#,
        workers = config.workers.max(1),
        log = dir.join("error.log").display(),
        dir = dir.display(),
        ready = READY_PATH,
        metric = METRIC_PATH,
        shared_memory = config.shared_memory,
        not_found = not_found.display(),
        proxy_headers = proxy_headers
            .iter()
            .map(|h| format!("    {h};\n"))
            .collect::<String>(),
        native_http = origin
            .map(|o| {
                format!(
                    "    upstream {ORIGIN} {{ server {o}; keepalive 16; }}\n    server {{ listen {o}; location / {{ return 200 \"ok\\n\"; }} }}\n"
                )
            })
            .into_iter()
            .chain(config.native.http.iter().map(|d| format!("    {d}\n")))
            .collect::<String>(),
    ))
}

/// The upstream name of [`EngineConfig::origin_in_engine`].
const ORIGIN: &str = "portcullis_origin";

/// How every proxied request names its Host upstream.
const PROXY_HOST: &str = "proxy_set_header Host $http_host";

/// Whether something answers on `addr` (used by tests that wait for a port).
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
