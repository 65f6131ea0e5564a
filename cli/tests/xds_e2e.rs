//! `portcullis serve --xds`: Envoy bootstrapped only with the xDS server's address serves traffic per the
//! policy file; editing the rate limit in the file changes behaviour within 2 s without restarting Envoy; a
//! broken edit is rejected and changes nothing; a later good edit applies again.

use portcullis_e2e::envoy::Envoy;
use portcullis_e2e::{paths, Request, Response, Upstream};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kills the server when the test ends, also on panic.
struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(policy: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--xds", "127.0.0.1:0", "--poll-ms", "100"])
            .arg(policy)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start portcullis serve");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let first = lines.lock().expect("lock").first().cloned();
            if let Some(addr) = first
                .as_deref()
                .and_then(|l| l.strip_prefix("serving xDS on "))
                .and_then(|l| l.split(": ").next())
                .and_then(|a| a.parse().ok())
            {
                break addr;
            }
            assert!(Instant::now() < deadline, "serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Server { child, lines, addr }
    }

    fn log(&self) -> String {
        self.lines.lock().expect("lock").join("\n")
    }
}

fn policy(listen: u16, upstream: SocketAddr, limit: &str, version: &str) -> String {
    format!(
        "
gateway: {{ listen: '127.0.0.1:{listen}', admin: '127.0.0.1:0' }}
upstreams:
  echo: {{ url: 'http://{upstream}' }}
routes:
  - name: api
    match: {{ path: / }}
    upstream: echo
    chain:
      - filter: rate-limit
        config: {{ namespace: ns-{version}, limits: [ {{ name: all, key: all, {limit} }} ] }}
      - filter: headers
        config: {{ response: {{ set: [ {{ name: x-policy-version, value: '{version}' }} ] }} }}
"
    )
}

/// Writes atomically (the server must never see half a file).
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls until `ok` holds for a response, up to `within`; returns the time it took.
fn until(addr: SocketAddr, within: Duration, ok: impl Fn(&Response) -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(r) = Request::new(addr, "GET", "/x").try_send() {
            if ok(&r) {
                return Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

#[test]
fn envoy_follows_policy_edits_over_xds_and_ignores_broken_ones() {
    if !paths::envoy_binary().exists() {
        println!("skipped: no Envoy at {}", paths::envoy_binary().display());
        return;
    }
    let upstream = Upstream::echo();
    let dir = paths::scratch_dir("cli-xds");
    let file = dir.join("portcullis.yaml");
    let listen = free_port();
    write(
        &file,
        &policy(listen, upstream.addr, "rate: 1, per: 1m", "v1"),
    );
    let server = Server::start(&file);

    let bootstrap = dir.join("envoy.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("render")
        .arg(&file)
        .args(["--target", "envoy", "--xds", &server.addr.to_string(), "-o"])
        .arg(&bootstrap)
        .output()
        .expect("render");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&bootstrap).expect("bootstrap");
    assert!(
        !text.contains("static_resources:\n  listeners"),
        "bootstrap must only point at xDS:\n{text}"
    );
    let mut envoy = Envoy::start_file(&bootstrap, &dir, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(envoy.listener.port(), listen);
    let get = || Request::new(envoy.listener, "GET", "/x").send();

    // Version 1 from xDS: 1 request per minute.
    let r = get();
    r.assert_status(200);
    assert_eq!(r.header("x-policy-version"), Some("v1"));
    get().assert_status(429);

    // Raise the limit in the file: Envoy follows within 2 s, without a restart.
    write(
        &file,
        &policy(listen, upstream.addr, "rate: 1000, per: 1s", "v2"),
    );
    let took = until(envoy.listener, Duration::from_secs(2), |r| {
        r.status == 200 && r.header("x-policy-version") == Some("v2")
    });
    assert!(
        took.is_some(),
        "edit not applied within 2 s; server log:\n{}",
        server.log()
    );
    println!("rate-limit edit applied after {took:?}");
    for _ in 0..5 {
        get().assert_status(200);
    }

    // A broken edit is rejected; v2 keeps serving.
    write(
        &file,
        &policy(listen, upstream.addr, "rate: 1, per: 1fortnight", "v3"),
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.log().contains("rejected") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server
            .log()
            .contains("routes[0].chain[0].config.limits[0].per"),
        "{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(1200)); // more than two of Envoy's polls
    for _ in 0..5 {
        let r = get();
        r.assert_status(200);
        assert_eq!(r.header("x-policy-version"), Some("v2"));
    }

    // Fixing the file applies again: back to 1 per minute (fresh counters in a new namespace).
    write(
        &file,
        &policy(listen, upstream.addr, "rate: 1, per: 1m", "v4"),
    );
    let took = until(envoy.listener, Duration::from_secs(2), |r| {
        r.header("x-policy-version") == Some("v4")
    });
    assert!(
        took.is_some(),
        "fix not applied within 2 s; server log:\n{}",
        server.log()
    );
    // Each filter's config is its own ECDS resource, applied on its own: the rate limit may trail the
    // headers filter by a moment.
    assert!(
        until(envoy.listener, Duration::from_secs(2), |r| r.status == 429).is_some(),
        "the v4 limit did not apply; server log:\n{}",
        server.log()
    );
    assert!(envoy.is_running(), "Envoy must not have restarted");
    assert!(server.log().contains("version 3:"), "{}", server.log());
    // The edits changed filter configs only: served over ECDS, the listener, routes and clusters stayed.
    assert!(
        server.log().contains("version 2: ") && server.log().contains("(changed: filter configs)"),
        "{}",
        server.log()
    );
    let dump = envoy
        .admin_get_now("/config_dump?resource=ecds_filters")
        .expect("config_dump")
        .text();
    for name in [
        "portcullis.api.0.rate-limit",
        "portcullis.api.1.headers",
        "ns-v4",
    ] {
        assert!(dump.contains(name), "{name} not in ECDS dump:\n{dump}");
    }
    let listeners = envoy
        .admin_get_now("/config_dump?resource=dynamic_listeners")
        .expect("config_dump")
        .text();
    assert!(
        listeners.contains("\"version_info\": \"1\""),
        "the listener is still version 1:\n{listeners}"
    );
}

/// `serve --output json`: every event is one JSON line a machine can follow.
#[test]
fn serve_reports_events_as_json_lines() {
    let dir = paths::scratch_dir("cli-xds-json");
    let file = dir.join("portcullis.yaml");
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    write(
        &file,
        &policy(free_port(), upstream, "rate: 1, per: 1m", "v1"),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--xds",
            "127.0.0.1:0",
            "--poll-ms",
            "50",
            "--output",
            "json",
        ])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start portcullis serve");
    let mut server = Server {
        child,
        lines: Arc::default(),
        addr: "127.0.0.1:0".parse().expect("addr"),
    }; // killed on drop, also when an assertion fails
    let stdout = server.child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an event within 10 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let serving = next();
    assert_eq!(serving["event"], "serving", "{serving}");
    assert!(serving["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    write(
        &file,
        &policy(free_port(), upstream, "rate: 1, per: 1fortnight", "v2"),
    );
    let rejected = next();
    assert_eq!(rejected["event"], "rejected", "{rejected}");
    assert!(rejected["problems"][0]
        .as_str()
        .is_some_and(|p| p.contains("routes[0].chain[0].config.limits[0].per")));
    write(
        &file,
        &policy(free_port(), upstream, "rate: 5, per: 1m", "v3"),
    );
    let applied = next();
    drop(server);
    assert_eq!(applied["event"], "applied", "{applied}");
    assert_eq!(applied["version"], 2);
    assert!(applied["changed"]
        .as_array()
        .is_some_and(|c| c.iter().any(|t| t == "filter configs")));
}
