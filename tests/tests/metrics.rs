//! `portcullis_metrics.wasm` in a real Envoy: after N requests `/stats/prometheus` shows the documented names with
//! labels (through the `stats_config.stats_tags` documented in filters/metrics/README.md) and exact counts;
//! a bad config keeps Envoy from starting with an error naming the field.
//!
//! On Kong's engine the same series are read by their full names (labels in the name) through the harness'
//! metric reader: Envoy's `/stats/prometheus` with tag extraction exists only in Envoy's admin API (Kong exports
//! them in its Lua Prometheus plugin, which bare nginx lacks), and histograms are Envoy-only here (ngx_wasm_module's
//! `proxy_get_metric` refuses a histogram, src/common/proxy_wasm/ngx_proxy_wasm_host.c). Bare nginx has no route
//! id either: `kong.route_id` is defined by Kong's Lua layer (kong/runloop/wasm.lua), ngx_wasm_module answers
//! NotFound for it (src/common/proxy_wasm/ngx_proxy_wasm_properties.c), and the route label is then `unknown`
//! for every request (filters/metrics/README.md), so the routes' series merge.

use portcullis_e2e::host::is_kong_engine;
use portcullis_e2e::GatewayBuilder;
use portcullis_e2e::{json, Gateway, Reply, Upstream};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The bootstrap `stats_config` documented in the README: one tag extractor per label.
fn stats_config() -> Value {
    let documented = portcullis_metrics::labels::envoy_stats_config();
    let tags: Vec<Value> = ["route", "method", "status_class", "consumer"]
        .iter()
        .map(|l| json!({"tag_name": l, "regex": format!("(;{l}=([^;]*))")}))
        .collect();
    let config = json!({ "stats_tags": tags });
    assert_eq!(
        config, documented,
        "the README's stats_config is what the filter crate generates"
    );
    config
}

fn routes() -> Value {
    json!([
        {"name": "orders", "match": {"prefix": "/orders"}, "route": {"cluster": "upstream"}},
        {"name": "health", "match": {"prefix": "/health"}, "route": {"cluster": "upstream"}}
    ])
}

fn gateway(config: Value) -> GatewayBuilder {
    // POSTs fail upstream with 503, everything else is 200.
    let upstream = Upstream::start(|r| {
        if r.method == "POST" {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    });
    Gateway::new()
        .upstream(upstream)
        .filter("metrics", config)
        .routes(routes())
        .bootstrap_field("stats_config", stats_config())
        .bootstrap_field("stats_flush_on_admin", json!(true))
}

fn prometheus(gw: &Gateway) -> String {
    gw.proxy
        .envoy()
        .expect("Envoy admin API")
        .admin_get("/stats/prometheus")
        .expect("admin answers")
        .text()
}

/// The value of the sample line `series` (name and labels exactly as Envoy prints them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// A counter series on Kong's engine, by its full name: `labels` as the filter writes them (`;route=unknown…`).
fn engine_counter(gw: &Gateway, metric: &str, labels: &str) -> Option<i64> {
    gw.proxy.stat(&format!("wasmcustom.{metric}{labels}"))
}

/// Histograms are merged from the workers on a flush; poll until the sample shows up.
fn eventually(gw: &Gateway, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = prometheus(gw);
        if sample(&text, series) == Some(want) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn requests_are_counted_in_prometheus_with_route_method_and_status_labels() {
    let gw = gateway(json!({"sizes": true}))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        gw.get("/orders/1").send().assert_status(200);
    }
    for _ in 0..2 {
        gw.request("POST", "/orders")
            .body("{}")
            .send()
            .assert_status(503);
    }
    gw.get("/health").send().assert_status(200);
    gw.get("/nowhere").send().assert_status(404);

    if is_kong_engine() {
        // every route is `unknown` here (module docs): orders and health share their series
        let requests = |labels| engine_counter(&gw, "portcullis_http_requests_total", labels);
        assert_eq!(
            requests(";route=unknown;method=GET;status_class=2xx"),
            Some(4)
        );
        assert_eq!(
            requests(";route=unknown;method=POST;status_class=5xx"),
            Some(2)
        );
        assert_eq!(
            requests(";route=unknown;method=GET;status_class=4xx"),
            Some(1)
        );
        assert_eq!(
            gw.proxy
                .stat("wasmcustom.portcullis_metrics_series_dropped_total"),
            Some(0)
        );
        // the client's request line and headers alone are over 50 bytes per request
        let req_bytes = engine_counter(
            &gw,
            "portcullis_http_request_bytes_total",
            ";route=unknown;method=GET;status_class=2xx",
        )
        .unwrap_or(0);
        assert!(req_bytes > 200, "4 requests, {req_bytes} bytes");
        let resp_bytes = engine_counter(
            &gw,
            "portcullis_http_response_bytes_total",
            ";route=unknown;method=POST;status_class=5xx",
        )
        .unwrap_or(0);
        assert!(resp_bytes > 0, "{resp_bytes}");
        return;
    }
    let count = r#"portcullis_http_request_duration_milliseconds_count{route="orders",method="GET",status_class="2xx"}"#;
    let text = eventually(&gw, count, 3.0);
    let expect = [
        (
            r#"portcullis_http_requests_total{route="orders",method="GET",status_class="2xx"}"#,
            3.0,
        ),
        (
            r#"portcullis_http_requests_total{route="orders",method="POST",status_class="5xx"}"#,
            2.0,
        ),
        (
            r#"portcullis_http_requests_total{route="health",method="GET",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"portcullis_http_requests_total{route="unknown",method="GET",status_class="4xx"}"#,
            1.0,
        ),
        (count, 3.0),
        (
            r#"portcullis_http_request_duration_milliseconds_bucket{route="orders",method="POST",status_class="5xx",le="+Inf"}"#,
            2.0,
        ),
        ("portcullis_metrics_series_dropped_total{}", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert!(
        text.contains("# TYPE portcullis_http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE portcullis_http_request_duration_milliseconds histogram"),
        "{text}"
    );
    // Byte counters: the client's request line and headers alone are over 50 bytes per request.
    let req_bytes = sample(
        &text,
        r#"portcullis_http_request_bytes_total{route="orders",method="GET",status_class="2xx"}"#,
    )
    .unwrap_or(0.0);
    assert!(req_bytes > 150.0, "3 requests, {req_bytes} bytes:\n{text}");
    let resp_bytes = sample(
        &text,
        r#"portcullis_http_response_bytes_total{route="orders",method="POST",status_class="5xx"}"#,
    )
    .unwrap_or(0.0);
    assert!(resp_bytes > 0.0, "{text}");
}

#[test]
fn counts_are_exact_across_workers() {
    // Two workers, two wasm VMs: each defines the same series; Envoy keeps one stat per name.
    let gw = gateway(json!({"labels": ["route", "method"], "duration": false}))
        .concurrency(2)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..20 {
        gw.get("/health").send().assert_status(200);
    }
    if is_kong_engine() {
        // two worker processes; the engine keeps one value per name in shared memory
        assert_eq!(
            engine_counter(
                &gw,
                "portcullis_http_requests_total",
                ";route=unknown;method=GET"
            ),
            Some(20)
        );
        return;
    }
    let text = prometheus(&gw);
    assert_eq!(
        sample(
            &text,
            r#"portcullis_http_requests_total{route="health",method="GET"}"#
        ),
        Some(20.0),
        "{text}"
    );
}

#[test]
fn consumers_are_labelled_up_to_max_consumers_then_other() {
    let gw = gateway(json!({
        "labels": ["route", "consumer"], "consumer_header": "x-consumer",
        "max_consumers": 2, "duration": false, "sizes": false
    }))
    .start()
    .unwrap_or_else(|e| panic!("{e}"));
    for consumer in ["alice", "bob", "alice", "carol", "dave"] {
        gw.get("/orders")
            .header("x-consumer", consumer)
            .send()
            .assert_status(200);
    }
    gw.get("/orders").send().assert_status(200);
    if is_kong_engine() {
        for (consumer, want) in [("alice", 2), ("bob", 1), ("other", 2), ("anonymous", 1)] {
            assert_eq!(
                engine_counter(
                    &gw,
                    "portcullis_http_requests_total",
                    &format!(";route=unknown;consumer={consumer}")
                ),
                Some(want),
                "{consumer}"
            );
        }
        // no byte counters defined (the duration histogram cannot be read here: module docs)
        assert_eq!(
            engine_counter(
                &gw,
                "portcullis_http_request_bytes_total",
                ";route=unknown;consumer=alice"
            ),
            None
        );
        return;
    }
    let text = prometheus(&gw);
    let expect = [
        (
            r#"portcullis_http_requests_total{route="orders",consumer="alice"}"#,
            2.0,
        ),
        (
            r#"portcullis_http_requests_total{route="orders",consumer="bob"}"#,
            1.0,
        ),
        (
            r#"portcullis_http_requests_total{route="orders",consumer="other"}"#,
            2.0,
        ),
        (
            r#"portcullis_http_requests_total{route="orders",consumer="anonymous"}"#,
            1.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    assert!(!text.contains("portcullis_http_request_duration"), "{text}");
    assert!(
        !text.contains("portcullis_http_request_bytes_total"),
        "{text}"
    );
}

#[test]
fn without_stats_tags_the_labels_stay_in_valid_metric_names() {
    let gw = Gateway::new()
        .filter("metrics", json!({"labels": ["method"]}))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    gw.get("/").send().assert_status(200);
    assert_eq!(
        gw.proxy
            .stat("wasmcustom.portcullis_http_requests_total;method=GET"),
        Some(1)
    );
    if is_kong_engine() {
        return; // the name as Prometheus shows it untagged: Envoy's admin API only (module docs)
    }
    let text = prometheus(&gw);
    assert_eq!(
        sample(&text, "portcullis_http_requests_total_method_GET{}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn invalid_config_keeps_envoy_from_starting_and_names_the_field() {
    let err = match Gateway::new()
        .filter("metrics", json!({"labels": ["route", "consumer"]}))
        .start()
    {
        Ok(_) => panic!("envoy accepted an invalid metrics config"),
        Err(e) => e,
    };
    let log = err.log();
    assert!(
        log.contains("[metrics] invalid configuration: consumer_header: the consumer label needs consumer_header"),
        "{log}"
    );
}
