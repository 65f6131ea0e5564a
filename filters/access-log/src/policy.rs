//! The `access-log` policy: notes the start of the request, copies the configured response headers when
//! the response starts, and at the end of the stream (`on_log`) builds one JSON object and writes it to the
//! host log and/or the bounded queue of the HTTP sink.

use crate::config::AccessLogConfig;
use crate::record::{self, cut};
use portcullis_common::batch::{BatchQueue, CalloutTarget};
use portcullis_common::http::HeaderName;
use portcullis_common::trace_context;
use portcullis_common::{
    props, CalloutResponse, ConfigError, Decision, Exchange, Policy, RootHost,
};
use serde_json::{Map, Value};
use std::time::Duration;

pub const REDACTED: &str = "[REDACTED]";
/// Prefix of the HTTP sink's counters: `_dropped_total`, `_sent_total`, `_failed_total`.
pub const METRIC_PREFIX: &str = "portcullis_access_log";

pub struct AccessLogPolicy {
    pub(crate) config: AccessLogConfig,
    /// The HTTP sink: lines waiting per worker (the root and HTTP contexts share this policy) and where
    /// they go.
    sink: Option<(BatchQueue, CalloutTarget)>,
}

/// What earlier phases leave for the log phase.
#[derive(Debug, Default)]
pub struct Pending {
    start: Option<Duration>,
    response_headers: Vec<(String, String)>,
}

impl Policy for AccessLogPolicy {
    const NAME: &'static str = "access-log";
    type State = Pending;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        Ok(AccessLogPolicy::new(AccessLogConfig::parse(config)?))
    }

    fn on_request_headers(&self, state: &mut Pending, ex: &mut Exchange) -> Decision {
        state.start = Some(ex.now());
        // Read now (cached by the exchange): some hosts no longer offer request data in the log phase.
        ex.method();
        ex.path();
        ex.authority();
        ex.request_id();
        ex.request_header("user-agent");
        Decision::Continue
    }

    fn on_response_headers(&self, state: &mut Pending, ex: &mut Exchange) -> Decision {
        let max = self.max_value();
        for name in &self.config.response_headers {
            if let Some(value) = ex.response_header(name.as_str()) {
                let value = self.shown(name, &value, max);
                state
                    .response_headers
                    .push((name.as_str().to_string(), value));
            }
        }
        Decision::Continue
    }

    fn on_log(&self, state: &mut Pending, ex: &mut Exchange) {
        let line = self.line(state, ex).to_string();
        if self.config.log.enabled {
            log::log!(self.config.log.level.to_log(), "{line}");
        }
        if let Some((queue, _)) = &self.sink {
            queue.push(line);
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        self.config.http.as_ref().map(|h| h.flush_interval.0)
    }

    fn on_tick(&self, root: &mut dyn RootHost) {
        if let Some((queue, target)) = &self.sink {
            queue.flush(root, target, json_array);
        }
    }

    fn on_callout_response(
        &self,
        _root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        if let Some((queue, _)) = &self.sink {
            queue.on_response(token, response.as_ref());
        }
    }
}

/// A batch as the POST body: a JSON array of the line objects.
pub fn json_array(lines: &[String]) -> Vec<u8> {
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(line.as_bytes());
    }
    body.push(b']');
    body
}

impl AccessLogPolicy {
    pub fn new(config: AccessLogConfig) -> Self {
        let sink = config.http.as_ref().map(|h| {
            let queue = BatchQueue::new(METRIC_PREFIX, h.max_queue as usize, h.batch_size as usize);
            let target = CalloutTarget {
                upstream: h.upstream.clone(),
                path: h.path.clone(),
                authority: h.authority().to_string(),
                content_type: "application/json".to_string(),
                timeout: h.timeout.0,
            };
            (queue, target)
        });
        AccessLogPolicy { config, sink }
    }

    /// Lines waiting for the HTTP sink.
    pub fn queued(&self) -> usize {
        self.sink.as_ref().map_or(0, |(q, _)| q.len())
    }

    fn max_value(&self) -> usize {
        self.config.max_value_bytes as usize
    }

    fn shown(&self, name: &HeaderName, value: &str, max: usize) -> String {
        if self.config.redact.contains(name) {
            REDACTED.to_string()
        } else {
            cut(value, max)
        }
    }

    /// The JSON object of one request.
    pub fn line(&self, state: &mut Pending, ex: &mut Exchange) -> Value {
        let max = self.max_value();
        let now = ex.now();
        let mut m = Map::new();
        let text = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(cut(s, max)));
        m.insert(
            "time".into(),
            record::rfc3339(state.start.unwrap_or(now)).into(),
        );
        m.insert(
            "client_ip".into(),
            ex.client_ip()
                .map_or(Value::Null, |ip| ip.to_string().into()),
        );
        m.insert("method".into(), text(ex.method()));
        m.insert("path".into(), text(ex.path()));
        m.insert("host".into(), text(ex.authority()));
        m.insert(
            "status".into(),
            props::response_status(ex.host()).map_or(Value::Null, Value::from),
        );
        m.insert(
            "duration_ms".into(),
            state.start.map_or(Value::Null, |s| {
                Value::from(u64::try_from(now.saturating_sub(s).as_millis()).unwrap_or(u64::MAX))
            }),
        );
        m.insert("request_bytes".into(), size(ex, true));
        m.insert("response_bytes".into(), size(ex, false));
        m.insert("user_agent".into(), text(ex.request_header("user-agent")));
        m.insert("request_id".into(), text(ex.request_id()));
        m.insert("route".into(), text(ex.route_id()));
        if let Some(h) = &self.config.consumer_header {
            let consumer = ex.host().request_header(h.as_str());
            m.insert("consumer".into(), text(consumer.as_deref()));
        }
        let (trace_id, span_id) = trace_context(ex).unzip();
        m.insert("trace_id".into(), trace_id.map_or(Value::Null, Value::from));
        m.insert("span_id".into(), span_id.map_or(Value::Null, Value::from));
        if !self.config.request_headers.is_empty() {
            let mut headers = Map::new();
            for name in &self.config.request_headers {
                if let Some(v) = ex.request_header(name.as_str()).map(str::to_owned) {
                    headers.insert(name.as_str().into(), self.shown(name, &v, max).into());
                }
            }
            m.insert("request_headers".into(), Value::Object(headers));
        }
        if !self.config.response_headers.is_empty() {
            let headers: Map<String, Value> = std::mem::take(&mut state.response_headers)
                .into_iter()
                .map(|(n, v)| (n, Value::String(v)))
                .collect();
            m.insert("response_headers".into(), Value::Object(headers));
        }
        for (name, value) in &self.config.fields {
            m.insert(name.clone(), Value::String(value.clone()));
        }
        Value::Object(m)
    }
}

fn size(ex: &mut Exchange, request: bool) -> Value {
    let host = ex.host();
    let (envoy, kong): (&[&str], &[&str]) = if request {
        (&["request", "total_size"], &["ngx", "request_length"])
    } else {
        (&["response", "total_size"], &["ngx", "bytes_sent"])
    };
    let from_envoy = if props::flavor() == props::Flavor::Kong {
        None
    } else {
        host.property(envoy).and_then(|b| props::decode_u64(&b))
    };
    from_envoy
        .or_else(|| host.property(kong).and_then(|b| props::decode_u64(&b)))
        .map_or(Value::Null, Value::from)
}

/// The trace and span id the upstream saw (W3C `traceparent`, else B3). Read fresh from the host: a
/// tracing filter earlier in the chain may have set them.
fn trace_context(ex: &mut Exchange) -> Option<(String, String)> {
    let host = ex.host();
    trace_context::from_headers(|name| host.request_header(name))
        .map(|c| (c.trace_id_hex(), c.span_id_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::{FakeHost, FakeRootHost};

    fn policy(json: &str) -> AccessLogPolicy {
        AccessLogPolicy::configure(json.as_bytes()).unwrap()
    }

    fn run(p: &AccessLogPolicy, host: &FakeHost) -> Value {
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = Pending::default();
        p.on_request_headers(&mut state, &mut ex);
        p.on_response_headers(&mut state, &mut ex);
        host.state.borrow_mut().now += Duration::from_millis(7);
        ex.new_callback();
        p.line(&mut state, &mut ex)
    }

    fn envoy_host() -> FakeHost {
        props::reset_flavor();
        FakeHost::request("GET", "/orders/7?debug=1")
            .at(Duration::from_millis(1_798_360_112_123))
            .with_header("user-agent", "curl/8")
            .with_header("x-request-id", "rid-1")
            .with_header("authorization", "Bearer secret")
            .with_header("x-consumer", "alice")
            .with_header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_response_header("content-type", "application/json")
            .with_response_header("set-cookie", "sid=1")
            .with_property(&["source", "address"], b"10.1.2.3:5555")
            .with_property(&["xds", "route_name"], b"orders")
            .with_property(&["response", "code"], &201u64.to_le_bytes())
            .with_property(&["request", "total_size"], &99u64.to_le_bytes())
            .with_property(&["response", "total_size"], &512u64.to_le_bytes())
    }

    #[test]
    fn a_line_has_every_built_in_field() {
        let p = policy(
            r#"{"consumer_header":"x-consumer","request_headers":["authorization","user-agent","x-absent"],
                "response_headers":["content-type","set-cookie"],"fields":{"service":"orders-api"}}"#,
        );
        let v = run(&p, &envoy_host());
        let want = serde_json::json!({
            "time": "2026-12-27T08:28:32.123Z", "client_ip": "10.1.2.3", "method": "GET",
            "path": "/orders/7", "host": "example.test", "status": 201, "duration_ms": 7,
            "request_bytes": 99, "response_bytes": 512, "user_agent": "curl/8", "request_id": "rid-1",
            "route": "orders", "consumer": "alice",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
            "request_headers": {"authorization": "[REDACTED]", "user-agent": "curl/8"},
            "response_headers": {"content-type": "application/json", "set-cookie": "[REDACTED]"},
            "service": "orders-api"
        });
        assert_eq!(v, want);
    }

    #[test]
    fn missing_host_values_are_null_not_errors() {
        props::reset_flavor();
        let p = policy("{}");
        let v = run(&p, &FakeHost::new());
        for key in ["client_ip", "method", "path", "status", "route", "trace_id"] {
            assert_eq!(v[key], Value::Null, "{key}");
        }
        assert!(v.get("consumer").is_none(), "no consumer_header configured");
        assert!(v.get("request_headers").is_none());
    }

    #[test]
    fn hostile_values_are_escaped_and_cut() {
        let p = policy(r#"{"max_value_bytes":16,"request_headers":["x-evil"]}"#);
        let host = envoy_host().with_header("x-evil", "a\"}\n{\"status\":200,\u{7}");
        let v = run(&p, &host);
        let line = v.to_string();
        assert!(!line.contains('\n'), "{line}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["request_headers"]["x-evil"], "a\"}\n{\"status\":20");
        assert_eq!(back["status"], 201);
    }

    #[test]
    fn b3_headers_give_the_trace_id_when_there_is_no_traceparent() {
        props::reset_flavor();
        let p = policy("{}");
        let multi = FakeHost::request("GET", "/")
            .with_header("x-b3-traceid", "a3ce929d0e0e4736")
            .with_header("x-b3-spanid", "00f067aa0ba902b7");
        let v = run(&p, &multi);
        assert_eq!(v["trace_id"], "0000000000000000a3ce929d0e0e4736");
        let single = FakeHost::request("GET", "/").with_header(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        );
        let v = run(&p, &single);
        assert_eq!(v["trace_id"], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(v["span_id"], "e457b5a2e4d86bd1");
    }

    #[test]
    fn kong_sizes_come_from_nginx_variables() {
        props::reset_flavor();
        let p = policy("{}");
        let host = FakeHost::request("GET", "/")
            .with_property(&["kong", "route_id"], b"r-uuid")
            .with_property(&["response", "code"], b"404")
            .with_property(&["ngx", "request_length"], b"70")
            .with_property(&["ngx", "bytes_sent"], b"300");
        let v = run(&p, &host);
        assert_eq!(
            (
                &v["route"],
                &v["status"],
                &v["request_bytes"],
                &v["response_bytes"]
            ),
            (
                &Value::from("r-uuid"),
                &Value::from(404),
                &Value::from(70),
                &Value::from(300)
            )
        );
        props::reset_flavor();
    }

    #[test]
    fn lines_queue_for_the_http_sink_and_leave_as_json_arrays_on_tick() {
        props::reset_flavor();
        let p = policy(
            r#"{"log":{"enabled":false},"http":{"upstream":"collector","path":"/logs","batch_size":2,"max_queue":3,"flush_interval":"100ms"}}"#,
        );
        assert_eq!(p.tick_period(), Some(Duration::from_millis(100)));
        for i in 0..5 {
            let host = FakeHost::request("GET", &format!("/r{i}"));
            let mut ex = Exchange::new(Box::new(host));
            let mut state = Pending::default();
            p.on_request_headers(&mut state, &mut ex);
            p.on_log(&mut state, &mut ex);
        }
        assert_eq!(p.queued(), 3, "bounded by max_queue");
        let mut root = FakeRootHost::new();
        p.on_tick(&mut root);
        assert_eq!(root.calls.len(), 2);
        let call = root.calls[0].clone();
        assert_eq!(
            (call.upstream.as_str(), call.path.as_str()),
            ("collector", "/logs")
        );
        let batch: Value =
            serde_json::from_slice(call.body.as_deref().unwrap_or_default()).unwrap();
        let ids: Vec<&Value> = batch
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["path"])
            .collect();
        assert_eq!(ids, [&Value::from("/r0"), &Value::from("/r1")]);
        p.on_callout_response(&mut root, call.token, None);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let value = portcullis_common::metrics::value;
            assert_eq!(value("portcullis_access_log_dropped_total"), Some(2));
            assert_eq!(value("portcullis_access_log_failed_total"), Some(2));
        }
    }

    #[test]
    fn without_an_http_sink_there_is_no_timer() {
        assert_eq!(policy("{}").tick_period(), None);
        assert_eq!(json_array(&["1".into(), "{}".into()]), b"[1,{}]");
    }
}
