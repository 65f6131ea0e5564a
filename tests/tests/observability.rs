//! The three observability filters chained in one Envoy (tracing → access-log → metrics): the ids the
//! upstream sees in `traceparent` are the ones in the access log line and in the exported OTLP span, and
//! the request is counted once.

use portcullis_e2e::host::is_kong_engine;
use portcullis_e2e::{json, Gateway, Reply, Upstream};
use serde_json::Value;
use std::time::{Duration, Instant};

fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn trace_ids_agree_between_upstream_access_log_and_exported_span() {
    let receiver = Upstream::start(|_| Reply::status(200));
    let gw = Gateway::new()
        .cluster("otel", receiver.addr)
        .routes(
            json!([{"name": "api", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]),
        )
        .filter(
            "tracing",
            json!({"exporter": {"upstream": "otel", "flush_interval": "100ms"}}),
        )
        .filter("access-log", json!({}))
        .filter("metrics", json!({}))
        .bootstrap_field(
            "stats_config",
            portcullis_metrics::labels::envoy_stats_config(),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    gw.get("/api/items").send().assert_status(200);

    let traceparent = gw
        .upstream
        .last()
        .header("traceparent")
        .unwrap_or_default()
        .to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let (trace, span) = (parts[1], parts[2]);

    let line: Value = eventually(|| {
        gw.proxy
            .filter_log("access-log")
            .into_iter()
            .find_map(|l| serde_json::from_str(&l.message).ok())
    })
    .expect("an access log line");
    assert_eq!(line["trace_id"], trace);
    assert_eq!(line["span_id"], span);

    let exported: Value = eventually(|| {
        let r = receiver.requests();
        let body: Value = serde_json::from_slice(&r.first()?.body).ok()?;
        Some(body["resourceSpans"][0]["scopeSpans"][0]["spans"][0].clone())
    })
    .expect("an exported span");
    assert_eq!(exported["traceId"], trace);
    assert_eq!(exported["spanId"], span);

    if is_kong_engine() {
        // Only Envoy's admin API exports the series with labels taken out of the name (`stats_tags`); Kong
        // does that in its Lua Prometheus plugin, absent from bare nginx. The engine holds the series under
        // its full name, read here through the metric reader. Bare nginx has no route id (`kong.route_id`
        // comes from Kong's Lua layer, kong/runloop/wasm.lua; ngx_wasm_module answers NotFound,
        // src/common/proxy_wasm/ngx_proxy_wasm_properties.c): the route label is `unknown`
        // (filters/metrics/README.md).
        assert_eq!(
            gw.proxy.stat(
                "wasmcustom.portcullis_http_requests_total;route=unknown;method=GET;status_class=2xx"
            ),
            Some(1)
        );
        return;
    }
    let prometheus = gw
        .proxy
        .envoy()
        .expect("Envoy admin API")
        .admin_get("/stats/prometheus")
        .unwrap()
        .text();
    assert!(
        prometheus.lines().any(|l| l
            == r#"portcullis_http_requests_total{route="api",method="GET",status_class="2xx"} 1"#),
        "{prometheus}"
    );
}
