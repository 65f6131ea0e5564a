//! Multi-node limits: two Envoy instances (two workers each) running `portcullis_rate_limit.wasm` with a `redis_http`
//! store share one real `redis-server` through a real `webdis`, all on loopback ephemeral ports.
//! - `per_request`: a limit of 20 across both nodes admits exactly 20 of 200 parallel requests;
//! - `batched`: the overshoot stays within the documented bound (nodes × slice) and requests never wait;
//! - Redis stopped mid-test: the nodes switch to their local limits, no request waits longer than `timeout`,
//!   and they return to Redis once it is back.
//!
//! Needs `redis-server` and `webdis` (Debian packages; scripts/setup installs them): without them each test
//! prints `skipped: <reason>`.

use portcullis_e2e::{json, Gateway, Response};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A child process killed on drop (also when a test fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port}");
}

fn installed(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).is_file()))
        .unwrap_or(false)
}

/// redis-server + webdis on loopback ephemeral ports, config and logs in a temp dir. Tests take turns
/// (`_turn`): servers started at once can be handed the same just-released ephemeral port.
struct RedisHttp {
    _turn: std::sync::MutexGuard<'static, ()>,
    redis: Option<Proc>,
    redis_port: u16,
    _webdis: Proc,
    webdis: SocketAddr,
    dir: PathBuf,
}

static ONE_STORE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl RedisHttp {
    fn start() -> Option<RedisHttp> {
        let turn = ONE_STORE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for binary in ["redis-server", "webdis"] {
            if !installed(binary) {
                println!("skipped: `{binary}` is not installed (apt-get install redis-server webdis; scripts/setup)");
                return None;
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "portcullis-rl-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let redis_port = free_port();
        let redis = Self::start_redis(redis_port);
        let webdis_port = free_port();
        let config = json!({
            "redis_host": "127.0.0.1", "redis_port": redis_port,
            "http_host": "127.0.0.1", "http_port": webdis_port,
            "threads": 2, "pool_size": 8, "daemonize": false, "websockets": false,
            "database": 0, "verbosity": 3, "logfile": dir.join("webdis.log"),
        });
        let config_path = dir.join("webdis.json");
        std::fs::write(&config_path, config.to_string()).expect("webdis.json");
        let webdis = Command::new("webdis")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("webdis");
        let webdis = Proc(webdis);
        wait_listening(webdis_port, "webdis");
        Some(RedisHttp {
            _turn: turn,
            redis: Some(redis),
            redis_port,
            _webdis: webdis,
            webdis: SocketAddr::from(([127, 0, 0, 1], webdis_port)),
            dir,
        })
    }

    fn start_redis(port: u16) -> Proc {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let p = Proc(child);
        wait_listening(port, "redis-server");
        p
    }

    /// Freezes redis-server (SIGSTOP): connections stay open and commands hang, the worst case for callers.
    fn freeze_redis(&self) {
        if let Some(p) = &self.redis {
            let pid = i32::try_from(p.0.id()).expect("pid");
            // SAFETY: signalling our own child process.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        }
    }

    fn kill_redis(&mut self) {
        self.redis = None;
    }

    fn restart_redis(&mut self) {
        self.redis = Some(Self::start_redis(self.redis_port));
    }
}

impl Drop for RedisHttp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node: Envoy with two workers and the filter, its `redis` cluster pointing at webdis.
fn node(webdis: SocketAddr, config: serde_json::Value) -> Gateway {
    Gateway::new()
        .concurrency(2)
        .cluster("redis", webdis)
        .filter("rate-limit", config)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `n` requests at once (one thread each, released together), alternating between the nodes; returns
/// each response with how long it took.
fn parallel(nodes: &[&Gateway], n: usize) -> Vec<(Response, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let request = nodes[i % nodes.len()].get(&format!("/r/{i}"));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let r = request.try_send().expect("a response");
                (r, start.elapsed())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("sender"))
        .collect()
}

fn admitted(responses: &[(Response, Duration)]) -> usize {
    for (r, _) in responses {
        assert!(
            r.status == 200 || r.status == 429,
            "unexpected {} {}",
            r.status,
            r.text()
        );
    }
    responses.iter().filter(|(r, _)| r.status == 200).count()
}

fn stat(gw: &Gateway, name: &str) -> i64 {
    gw.proxy
        .stat(&format!("wasmcustom.{name}"))
        .unwrap_or_default()
}

/// 20 per hour (a refill of one token per hour cannot land inside the test).
fn twenty(store: serde_json::Value) -> serde_json::Value {
    json!({
        "on_store_error": "local",
        "store": store,
        "limits": [{"name": "all", "key": "all", "rate": 1, "per": "1h", "burst": 20}]
    })
}

#[test]
fn per_request_a_limit_of_20_across_two_nodes_admits_exactly_20_of_200_parallel_requests() {
    let Some(redis) = RedisHttp::start() else {
        return;
    };
    let config = twenty(json!({"type": "redis_http", "upstream": "redis", "timeout": "2s"}));
    let (a, b) = (
        node(redis.webdis, config.clone()),
        node(redis.webdis, config),
    );
    let responses = parallel(&[&a, &b], 200);
    assert_eq!(admitted(&responses), 20);
    let rejected = responses
        .iter()
        .find(|(r, _)| r.status == 429)
        .map(|(r, _)| r.clone())
        .expect("a rejection");
    rejected.assert_header("ratelimit-limit", "20");
    rejected.assert_header("ratelimit-remaining", "0");
    assert!(rejected.header("retry-after").is_some());
    let allowed = |gw: &Gateway| stat(gw, "portcullis_rate_limit_all_allowed_total");
    assert_eq!(
        allowed(&a) + allowed(&b),
        20,
        "each node counted what it admitted"
    );
    for gw in [&a, &b] {
        // which node gets the 20 is a race; each decided all of its 100 through the shared Redis
        let limited = stat(gw, "portcullis_rate_limit_all_limited_total");
        assert_eq!(allowed(gw) + limited, 100);
    }
    for gw in [&a, &b] {
        assert_eq!(stat(gw, "portcullis_rate_limit_redis_errors_total"), 0);
        assert_eq!(stat(gw, "portcullis_rate_limit_store_fallback_total"), 0);
    }
}

#[test]
fn batched_overshoot_stays_within_nodes_times_slice_and_requests_never_wait() {
    let Some(redis) = RedisHttp::start() else {
        return;
    };
    let slice = 2;
    let config = twenty(
        json!({"type": "redis_http", "upstream": "redis", "sync": "batched",
                               "slice": slice, "sync_interval": "20ms", "timeout": "500ms"}),
    );
    let (a, b) = (
        node(redis.webdis, config.clone()),
        node(redis.webdis, config),
    );
    let mut total = 0;
    let mut slowest = Duration::ZERO;
    // a parallel burst, then more waves while the nodes reserve the rest of the budget
    for wave in 0..8 {
        let responses = parallel(&[&a, &b], if wave == 0 { 200 } else { 20 });
        total += admitted(&responses);
        slowest = slowest.max(responses.iter().map(|(_, d)| *d).max().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(150));
    }
    let nodes = 2;
    let bound = 20 + nodes * slice;
    assert!(
        total <= bound,
        "admitted {total}, documented bound 20 + nodes × slice = {bound}"
    );
    // every unit Redis handed out was spent, except at most one slice of credit per node
    assert!(total >= 20 - nodes * slice, "admitted only {total}");
    let reservations = stat(&a, "portcullis_rate_limit_redis_reservations_total")
        + stat(&b, "portcullis_rate_limit_redis_reservations_total");
    assert!(reservations >= 2, "both nodes reserved: {reservations}");
    assert_eq!(stat(&a, "portcullis_rate_limit_redis_errors_total"), 0);
    println!(
        "batched: admitted {total} (limit 20, bound {bound}), {reservations} reservations, slowest {slowest:?}"
    );
}

#[test]
fn stopping_redis_switches_to_local_limits_without_waiting_longer_than_the_timeout_and_recovers() {
    let Some(mut redis) = RedisHttp::start() else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let config = json!({
        "on_store_error": "local",
        "store": {"type": "redis_http", "upstream": "redis", "timeout": "300ms", "retry_interval": "500ms"},
        "limits": [{"name": "five", "key": "all", "rate": 1, "per": "1h", "burst": 5}]
    });
    let (a, b) = (
        node(redis.webdis, config.clone()),
        node(redis.webdis, config),
    );
    // Redis counts across both nodes: 5 in all
    let statuses: Vec<u16> = (0..8)
        .map(|i| [&a, &b][i % 2].get("/").send().status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );

    redis.freeze_redis();
    // each node now applies the limit on its own (its local bucket is still full): 5 per node
    let mut slowest = Duration::ZERO;
    for gw in [&a, &b] {
        let mut ok = 0;
        for _ in 0..8 {
            let start = Instant::now();
            let r = gw.get("/").send();
            slowest = slowest.max(start.elapsed());
            ok += usize::from(r.status == 200);
        }
        assert_eq!(ok, 5, "local limit of 5 per node");
    }
    assert!(
        slowest < timeout + Duration::from_millis(200),
        "a request waited {slowest:?} (timeout {timeout:?})"
    );
    // the frozen Redis was really waited on (up to the timeout) before the fallback
    assert!(
        slowest >= timeout - Duration::from_millis(50),
        "slowest {slowest:?}"
    );
    println!("Redis frozen: slowest request {slowest:?} (timeout {timeout:?})");
    let fallbacks = stat(&a, "portcullis_rate_limit_store_fallback_total");
    assert!(fallbacks >= 8, "fallbacks counted: {fallbacks}");
    assert!(stat(&a, "portcullis_rate_limit_redis_errors_total") >= 1);
    let down_lines = a
        .proxy
        .logs()
        .matches("on_store_error `local` until it answers")
        .count();
    assert!(
        (1..=2).contains(&down_lines),
        "logged once per worker and state change, got {down_lines}"
    );

    // Redis is back (a new, empty one): after the retry interval the nodes use it again — a fresh budget of 5 shared by
    // both, although both local buckets are exhausted
    redis.kill_redis();
    redis.restart_redis();
    std::thread::sleep(Duration::from_millis(700));
    let mut ok = 0;
    for i in 0..16 {
        let r = [&a, &b][i % 2].get("/").send();
        ok += usize::from(r.status == 200);
        if i < 4 {
            // the first requests after the retry interval may still be decided locally by a worker
            // that has not probed yet; give each worker its probe
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        a.proxy.logs().contains("answers again") || b.proxy.logs().contains("answers again"),
        "recovery logged"
    );
    assert_eq!(ok, 5, "the shared Redis budget again");
}

/// The latency a Redis store adds, measured with `wrk` (not a pass/fail test; run with
/// `cargo test -p portcullis-e2e --test rate_limit_redis -- --ignored --nocapture`): one Envoy (one worker)
/// per store mode, a limit that never rejects (1 000 000 per second, one key), `wrk -t1 -c8 -d5s --latency`.
#[test]
#[ignore]
fn measure_added_latency_with_wrk() {
    let Some(redis) = RedisHttp::start() else {
        return;
    };
    if !installed("wrk") {
        println!("skipped: `wrk` is not installed");
        return;
    }
    let limits = json!([{"name": "all", "key": "all", "algorithm": "fixed_window",
                         "requests": 1_000_000, "window": "1s"}]);
    let modes = [
        ("local", json!({"type": "local"})),
        (
            "redis_http per_request",
            json!({"type": "redis_http", "upstream": "redis"}),
        ),
        (
            "redis_http batched",
            json!({"type": "redis_http", "upstream": "redis", "sync": "batched", "slice": 100_000}),
        ),
    ];
    // two rounds, to see the noise of a shared machine
    for (name, store) in modes.iter().chain(modes.iter()) {
        let gw = Gateway::new()
            .cluster("redis", redis.webdis)
            .filter(
                "rate-limit",
                json!({"store": store, "limits": limits, "headers": false}),
            )
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/", gw.proxy.listener());
        let out = Command::new("wrk")
            .args(["-t1", "-c8", "-d5s", "--latency", &url])
            .output()
            .expect("wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        let pick = |prefix: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        println!(
            "{name}: {} | p50 {} | p99 {} | {} | {}",
            pick("Latency"),
            pick("50%"),
            pick("99%"),
            pick("Requests/sec"),
            pick("Non-2xx")
        );
    }
}

#[test]
fn a_redis_store_without_upstream_stops_envoy_with_the_field_named() {
    let err = Gateway::new()
        .filter(
            "rate-limit",
            json!({"store": {"type": "redis_http"}, "limits": [{"name": "a", "rate": 1}]}),
        )
        .start()
        .err()
        .expect("Envoy must refuse the config");
    let log = err.to_string();
    assert!(
        log.contains("[rate-limit] invalid configuration: store.upstream: required"),
        "the filter's error should name the field; envoy said:\n{log}"
    );
}
