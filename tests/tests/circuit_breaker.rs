//! `portcullis_circuit_breaker.wasm` in a real Envoy with two workers: the breaker state is shared, so a trip seen by
//! one worker rejects on the other; rejected requests never reach the upstream; after `open_for` one probe
//! passes, its success closes the breaker and its failure re-opens it; Envoy's own 503 for an unreachable
//! upstream counts as a failure (nginx's 502 on Kong's engine).

use portcullis_circuit_breaker::policy::state_gauge_name;
use portcullis_e2e::host::is_kong_engine;
use portcullis_e2e::{json, Gateway, Reply, Response, Upstream};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

const TRIPS: &str = "wasmcustom.portcullis_circuit_breaker_trips_total";

/// The breaker key (`scope: "route"`) of the requests through the route named `route`. Envoy gives the
/// route's name (`xds.route_name`; the harness names its catch-all route `default`). Bare nginx has no route
/// id: `kong.route_id` is defined by Kong's Lua layer (kong/runloop/wasm.lua), and ngx_wasm_module answers
/// NotFound for a `kong.*` property nothing defined (src/common/proxy_wasm/ngx_proxy_wasm_properties.c). So
/// on the engine every request shares the breaker `route:` — the documented fallback for an unnamed route
/// (filters/circuit-breaker/README.md).
fn route_key(route: &str) -> String {
    if is_kong_engine() {
        "route:".to_string()
    } else {
        format!("route:{route}")
    }
}

/// The state gauge of that breaker, by its Envoy stat name.
fn state_gauge(route: &str) -> String {
    format!("wasmcustom.{}", state_gauge_name(&route_key(route)))
}

fn gateway(upstream: Upstream, config: serde_json::Value) -> Gateway {
    Gateway::new()
        .upstream(upstream)
        .concurrency(2)
        .filter("circuit-breaker", config)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Outcomes are recorded in the log callback, which may run just after the client got its response:
/// wait until Envoy's stats show the expected state instead of racing it. (The state gauge is set at once;
/// counters reach Envoy on the filter's next metrics flush, up to a second later.)
fn wait_for_stat(gw: &Gateway, name: &str, value: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = gw.proxy.stat_now(name);
        if seen == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {seen:?}, expected {value}; envoy log:\n{}",
            gw.proxy.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn assert_rejected_by_breaker(resp: &Response, state: &str) {
    resp.assert_status(503)
        .assert_header("x-circuit-state", state)
        .assert_header("content-type", "application/json");
    assert_eq!(resp.json()["message"], "circuit breaker is open");
    let retry: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("retry-after missing: {:?}", resp.headers));
    assert!((1..=30).contains(&retry), "retry-after {retry}");
}

/// Opens the breaker; the trip counter is checked at the end of each test (it trails the state gauge).
fn trip(gw: &Gateway) {
    for _ in 0..3 {
        gw.get("/").send().assert_status(500);
    }
    wait_for_stat(gw, &state_gauge("default"), 1);
}

#[test]
fn three_failures_open_the_breaker_then_a_successful_probe_closes_it() {
    let gw = gateway(
        Upstream::start(|_| Reply::status(500)),
        json!({"open_for": "1s", "state_header": "x-circuit-state"}),
    );
    trip(&gw);
    assert_eq!(gw.upstream.count(), 3);
    // several requests, spread over both workers: all rejected without reaching the upstream
    for _ in 0..4 {
        assert_rejected_by_breaker(&gw.get("/").send(), "open");
    }
    assert_eq!(
        gw.upstream.count(),
        3,
        "rejected requests must not reach the upstream"
    );
    assert!(
        gw.proxy
            .logs()
            .contains(&format!("circuit {}: closed -> open", route_key("default"))),
        "{}",
        gw.proxy.logs()
    );

    gw.upstream.set_handler(|_| Reply::status(200));
    thread::sleep(Duration::from_millis(1_100));
    gw.get("/")
        .send()
        .assert_status(200)
        .assert_header("x-circuit-state", "half-open");
    assert_eq!(gw.upstream.count(), 4, "exactly one probe went through");
    wait_for_stat(&gw, &state_gauge("default"), 0);
    for _ in 0..3 {
        gw.get("/")
            .send()
            .assert_status(200)
            .assert_header("x-circuit-state", "closed");
    }
    assert_eq!(gw.upstream.count(), 7);
    let logs = gw.proxy.logs();
    assert_eq!(
        logs.matches("closed -> open").count(),
        1,
        "each change logged once:\n{logs}"
    );
    assert_eq!(logs.matches("open -> half-open").count(), 1, "{logs}");
    assert_eq!(logs.matches("half-open -> closed").count(), 1, "{logs}");
    wait_for_stat(&gw, TRIPS, 1);
}

#[test]
fn a_failed_probe_reopens_the_breaker() {
    let gw = gateway(
        Upstream::start(|_| Reply::status(500)),
        json!({"open_for": "1s", "state_header": "x-circuit-state"}),
    );
    trip(&gw);
    thread::sleep(Duration::from_millis(1_100));
    gw.get("/")
        .send()
        .assert_status(500)
        .assert_header("x-circuit-state", "half-open");
    assert_eq!(gw.upstream.count(), 4);
    wait_for_stat(&gw, &state_gauge("default"), 1);
    assert_rejected_by_breaker(&gw.get("/").send(), "open");
    assert_eq!(gw.upstream.count(), 4);
    wait_for_stat(&gw, TRIPS, 2);
    assert!(
        gw.proxy
            .stat("wasmcustom.portcullis_circuit_breaker_rejected_total")
            >= Some(1)
    );
}

#[test]
fn only_one_probe_is_admitted_across_workers_while_half_open() {
    let gw = gateway(
        Upstream::start(|_| Reply::status(500)),
        json!({"open_for": "1s", "state_header": "x-circuit-state"}),
    );
    trip(&gw);
    gw.upstream.set_handler(|_| {
        thread::sleep(Duration::from_millis(1_000));
        Reply::status(200)
    });
    thread::sleep(Duration::from_millis(1_100));
    let listener = gw.proxy.listener();
    let probe = thread::spawn(move || portcullis_e2e::Request::new(listener, "GET", "/").send());
    thread::sleep(Duration::from_millis(300));
    // new connections land on either worker: each sees the one probe slot taken
    for _ in 0..4 {
        assert_rejected_by_breaker(&gw.get("/").send(), "half-open");
    }
    let probe = probe.join().expect("probe thread");
    probe
        .assert_status(200)
        .assert_header("x-circuit-state", "half-open");
    wait_for_stat(&gw, &state_gauge("default"), 0);
    gw.get("/").send().assert_status(200);
    assert_eq!(
        gw.upstream.count(),
        5,
        "3 failures, 1 probe, 1 after closing"
    );
    wait_for_stat(&gw, TRIPS, 1);
}

#[test]
fn a_failure_ratio_over_the_window_trips_the_breaker() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = AtomicUsize::new(0);
    // every other answer fails: never 2 failures in a row, but a 50% failure ratio
    let upstream = Upstream::start(move |_| {
        Reply::status(if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            200
        } else {
            500
        })
    });
    let gw = gateway(
        upstream,
        json!({"consecutive_failures": 2, "failure_ratio": 0.5, "min_requests": 6, "window": "30s",
               "state_header": "x-circuit-state"}),
    );
    for i in 0..6 {
        let status = gw.get("/").send().status;
        assert_eq!(status, if i % 2 == 0 { 200 } else { 500 }, "request {i}");
        if i < 5 {
            // let each outcome land before the next (the log callback runs after the response)
            thread::sleep(Duration::from_millis(50));
            assert_eq!(
                gw.proxy.stat(TRIPS).unwrap_or(0),
                0,
                "tripped early, after request {i}"
            );
        }
    }
    wait_for_stat(&gw, TRIPS, 1);
    assert_rejected_by_breaker(&gw.get("/").send(), "open");
    assert_eq!(gw.upstream.count(), 6);
}

fn unused_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[test]
fn envoy_503s_for_an_unreachable_upstream_trip_the_breaker() {
    let gw = Gateway::new()
        .concurrency(2)
        .cluster("dead", unused_port())
        .routes(json!([{ "name": "dead", "match": {"prefix": "/"}, "route": {"cluster": "dead"} }]))
        .filter(
            "circuit-breaker",
            json!({"state_header": "x-circuit-state"}),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    // The host's own answer for a refused connection: Envoy 503; nginx 502 (`ngx_http_upstream_next` maps
    // a connect error, NGX_HTTP_UPSTREAM_FT_ERROR, to NGX_HTTP_BAD_GATEWAY, src/http/ngx_http_upstream.c).
    // Both are in the default failure_statuses.
    let unreachable = if is_kong_engine() { 502 } else { 503 };
    for _ in 0..3 {
        let resp = gw.get("/").send();
        resp.assert_status(unreachable);
        assert!(
            resp.header("x-circuit-state").is_some(),
            "{:?}",
            resp.headers
        );
        assert!(
            !resp.text().contains("circuit breaker is open"),
            "{}",
            resp.text()
        );
    }
    wait_for_stat(&gw, TRIPS, 1);
    wait_for_stat(&gw, &state_gauge("dead"), 1);
    assert_rejected_by_breaker(&gw.get("/").send(), "open");
}

#[test]
fn invalid_config_keeps_envoy_from_starting_and_names_the_field() {
    let err = match Gateway::new()
        .filter("circuit-breaker", json!({"failure_ratio": 2}))
        .start()
    {
        Ok(_) => panic!("envoy accepted an invalid circuit-breaker config"),
        Err(e) => e,
    };
    let log = err.log();
    assert!(
        log.contains(
            "[circuit-breaker] invalid configuration: failure_ratio: must be > 0 and <= 1, got 2"
        ),
        "the filter's error should name the field; envoy said:\n{log}"
    );
}
