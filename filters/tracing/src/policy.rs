//! The `tracing` policy.
//!
//! Request headers: read the incoming context in the configured `extract` order (the first valid one
//! wins; a B3 sampling-only header such as `b3: 0` only decides sampling), else start a trace (sampled with
//! `sample_ratio`); make a new span id for the gateway's server span and write it to the upstream request
//! in every `inject` format. Response headers: optionally tell the client the trace id. Log: for sampled
//! requests with an exporter, queue the span; the root context's timer sends batches.

use crate::config::{Exporter, Format, TracingConfig};
use crate::ids;
use crate::otlp::{self, AttrValue, Span};
use portcullis_common::batch::{BatchQueue, CalloutTarget};
use portcullis_common::trace_context::{self, TraceContext, B3};
use portcullis_common::{
    props, CalloutResponse, ConfigError, Decision, Exchange, Policy, RootHost,
};
use std::time::Duration;

/// Prefix of the exporter's counters: `_dropped_total`, `_sent_total`, `_failed_total`.
pub const METRIC_PREFIX: &str = "portcullis_tracing_spans";
/// Longest attribute value exported (paths, user agents).
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

pub struct TracingPolicy {
    config: TracingConfig,
    export: Option<Export>,
}

/// The exporter's queue, destination and the batch envelope (fixed per configuration).
struct Export {
    queue: BatchQueue,
    target: CalloutTarget,
    prefix: String,
    suffix: String,
}

/// The gateway's span of one request.
#[derive(Debug, Default)]
pub struct Traced {
    /// The gateway span's context (None until the request headers were seen).
    pub span: Option<TraceContext>,
    pub parent: Option<[u8; 8]>,
    start: Duration,
}

impl Policy for TracingPolicy {
    const NAME: &'static str = "tracing";
    type State = Traced;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        Ok(TracingPolicy::new(TracingConfig::parse(config)?))
    }

    fn on_request_headers(&self, state: &mut Traced, ex: &mut Exchange) -> Decision {
        let (incoming, forced) = self.extract(ex);
        let continues_w3c = matches!(incoming, Some((_, Format::W3c)));
        let (trace_id, parent, sampled) = match incoming {
            Some((ctx, _)) => (ctx.trace_id, Some(ctx.span_id), ctx.sampled),
            None => (
                ids::trace_id(),
                None,
                forced.unwrap_or_else(|| ids::sample(self.config.sample_ratio)),
            ),
        };
        let span = TraceContext {
            trace_id,
            span_id: ids::span_id(),
            sampled,
        };
        self.inject(ex, &span, parent.as_ref(), continues_w3c);
        state.span = Some(span);
        state.parent = parent;
        state.start = ex.now();
        if sampled && self.export.is_some() {
            // Read now (cached by the exchange): some hosts no longer offer request data at log time.
            ex.method();
            ex.path();
            ex.authority();
            ex.request_header("user-agent");
            ex.request_header(":scheme");
        }
        Decision::Continue
    }

    fn on_response_headers(&self, state: &mut Traced, ex: &mut Exchange) -> Decision {
        if let (Some(header), Some(span)) = (&self.config.trace_id_response_header, &state.span) {
            ex.set_response_header(header.as_str(), Some(&span.trace_id_hex()));
        }
        Decision::Continue
    }

    fn on_log(&self, state: &mut Traced, ex: &mut Exchange) {
        let (Some(export), Some(span)) = (&self.export, &state.span) else {
            return;
        };
        if !span.sampled {
            return;
        }
        let record = self.server_span(state, span, ex);
        export.queue.push(record.to_json());
    }

    fn tick_period(&self) -> Option<Duration> {
        self.config.exporter.as_ref().map(|e| e.flush_interval.0)
    }

    fn on_tick(&self, root: &mut dyn RootHost) {
        if let Some(e) = &self.export {
            e.queue.flush(root, &e.target, |spans| {
                otlp::frame(&e.prefix, &e.suffix, spans)
            });
        }
    }

    fn on_callout_response(
        &self,
        _root: &mut dyn RootHost,
        token: u32,
        response: Option<CalloutResponse>,
    ) {
        if let Some(e) = &self.export {
            e.queue.on_response(token, response.as_ref());
        }
    }
}

impl TracingPolicy {
    pub fn new(config: TracingConfig) -> Self {
        let export = config.exporter.as_ref().map(|e| Export::new(e, &config));
        TracingPolicy { config, export }
    }

    /// Spans waiting for export.
    pub fn queued(&self) -> usize {
        self.export.as_ref().map_or(0, |e| e.queue.len())
    }

    /// The first valid incoming context (and its format), and a sampling decision from a B3
    /// sampling-only header.
    fn extract(&self, ex: &mut Exchange) -> (Option<(TraceContext, Format)>, Option<bool>) {
        let mut forced = None;
        for format in &self.config.extract {
            let b3 = match format {
                Format::W3c => {
                    let ctx = ex
                        .request_header("traceparent")
                        .and_then(trace_context::parse_traceparent);
                    if let Some(ctx) = ctx {
                        return (Some((ctx, Format::W3c)), forced);
                    }
                    continue;
                }
                Format::B3 => ex
                    .request_header("b3")
                    .and_then(trace_context::parse_b3_single),
                Format::B3multi => {
                    let mut get = |n: &str| ex.request_header(n).map(str::to_owned);
                    let (t, s) = (get("x-b3-traceid"), get("x-b3-spanid"));
                    let (sampled, flags) = (get("x-b3-sampled"), get("x-b3-flags"));
                    trace_context::parse_b3_multi(
                        t.as_deref(),
                        s.as_deref(),
                        sampled.as_deref(),
                        flags.as_deref(),
                    )
                }
            };
            match b3 {
                Some(B3::Context {
                    mut context,
                    sampled,
                }) => {
                    // A deferred B3 decision (no sampling field) is ours to make.
                    context.sampled = sampled
                        .or(forced)
                        .unwrap_or_else(|| ids::sample(self.config.sample_ratio));
                    return (Some((context, *format)), forced);
                }
                Some(B3::SamplingOnly(s)) => forced = forced.or(Some(s)),
                None => {}
            }
        }
        (None, forced)
    }

    fn inject(
        &self,
        ex: &mut Exchange,
        span: &TraceContext,
        parent: Option<&[u8; 8]>,
        continues_w3c: bool,
    ) {
        for format in &self.config.inject {
            match format {
                Format::W3c => {
                    ex.set_request_header("traceparent", Some(&span.traceparent()));
                    if !continues_w3c {
                        // A tracestate belongs to the trace of the traceparent it came with.
                        ex.set_request_header("tracestate", None);
                    }
                }
                Format::B3 => ex.set_request_header("b3", Some(&span.b3_single(parent))),
                Format::B3multi => {
                    let parent_hex = parent.map(|p| trace_context::to_hex(p));
                    ex.set_request_header("x-b3-traceid", Some(&span.trace_id_hex()));
                    ex.set_request_header("x-b3-spanid", Some(&span.span_id_hex()));
                    ex.set_request_header("x-b3-parentspanid", parent_hex.as_deref());
                    ex.set_request_header(
                        "x-b3-sampled",
                        Some(if span.sampled { "1" } else { "0" }),
                    );
                    ex.set_request_header("x-b3-flags", None);
                }
            }
        }
    }

    /// The server span with the OpenTelemetry HTTP semantic-convention attributes.
    fn server_span(&self, state: &Traced, span: &TraceContext, ex: &mut Exchange) -> Span {
        let end = ex.now();
        let status = props::response_status(ex.host());
        let text = |s: &str| AttrValue::Str(cut(s, MAX_ATTRIBUTE_BYTES));
        let mut attributes = Vec::with_capacity(9);
        let method = ex.method().unwrap_or("_OTHER").to_string();
        attributes.push(("http.request.method", text(&method)));
        if let Some(path) = ex.path() {
            attributes.push(("url.path", text(path)));
        }
        if let Some(scheme) = ex.request_header(":scheme") {
            attributes.push(("url.scheme", text(scheme)));
        }
        if let Some(authority) = ex.authority() {
            let host = authority_host(authority);
            attributes.push(("server.address", text(host)));
        }
        if let Some(ip) = ex.client_ip() {
            attributes.push(("client.address", AttrValue::Str(ip.to_string())));
        }
        if let Some(ua) = ex.request_header("user-agent") {
            attributes.push(("user_agent.original", text(ua)));
        }
        if let Some(s) = status {
            attributes.push(("http.response.status_code", AttrValue::Int(i64::from(s))));
        }
        let route = ex.route_id().map(str::to_owned);
        if let Some(r) = &route {
            attributes.push(("portcullis.route", text(r)));
        }
        let name = match &route {
            Some(r) => format!("{method} {}", cut(r, 128)),
            None => method,
        };
        Span {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: state.parent,
            name,
            start_unix_nano: nanos(state.start),
            end_unix_nano: nanos(end.max(state.start)),
            attributes,
            error: status.is_some_and(|s| s >= 500),
        }
    }
}

impl Export {
    fn new(e: &Exporter, config: &TracingConfig) -> Self {
        let (prefix, suffix) = otlp::envelope(&config.service_name, &config.resource_attributes);
        Export {
            queue: BatchQueue::new(METRIC_PREFIX, e.max_queue as usize, e.batch_size as usize),
            target: CalloutTarget {
                upstream: e.upstream.clone(),
                path: e.path.clone(),
                authority: e.authority().to_string(),
                content_type: "application/json".to_string(),
                timeout: e.timeout.0,
            },
            prefix,
            suffix,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn cut(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while end > 0 && !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default().to_string()
}

/// `host` of `host[:port]` / `[v6]:port`.
fn authority_host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::{FakeHost, FakeRootHost};
    use serde_json::Value;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    fn policy(json: &str) -> TracingPolicy {
        TracingPolicy::configure(json.as_bytes()).unwrap()
    }

    fn run(p: &TracingPolicy, host: &FakeHost) -> Traced {
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = Traced::default();
        assert_eq!(
            p.on_request_headers(&mut state, &mut ex),
            Decision::Continue
        );
        p.on_response_headers(&mut state, &mut ex);
        host.state.borrow_mut().now += Duration::from_millis(5);
        ex.new_callback();
        p.on_log(&mut state, &mut ex);
        state
    }

    fn span_of(state: &Traced) -> TraceContext {
        state.span.expect("a span was started")
    }

    #[test]
    fn an_incoming_w3c_trace_is_continued_with_a_new_span() {
        let p = policy("{}");
        let host = FakeHost::request("GET", "/")
            .with_header("traceparent", &format!("00-{T}-{S}-01"))
            .with_header("tracestate", "vendor=1");
        let st = run(&p, &host);
        let span = span_of(&st);
        assert_eq!(span.trace_id_hex(), T);
        assert_ne!(span.span_id_hex(), S);
        assert!(span.sampled);
        assert_eq!(
            st.parent.map(|p| trace_context::to_hex(&p)).as_deref(),
            Some(S)
        );
        assert_eq!(host.header("traceparent"), Some(span.traceparent()));
        assert_eq!(host.header("tracestate").as_deref(), Some("vendor=1"));
    }

    #[test]
    fn the_incoming_sampling_decision_is_followed() {
        let p = policy(r#"{"sample_ratio":1.0}"#);
        let host =
            FakeHost::request("GET", "/").with_header("traceparent", &format!("00-{T}-{S}-00"));
        let span = span_of(&run(&p, &host));
        assert!(!span.sampled);
        assert!(host
            .header("traceparent")
            .unwrap_or_default()
            .ends_with("-00"));
    }

    #[test]
    fn a_new_trace_is_started_when_none_arrives_and_stale_tracestate_is_removed() {
        let p = policy(r#"{"sample_ratio":1.0}"#);
        let host = FakeHost::request("GET", "/")
            .with_header("traceparent", "00-garbage")
            .with_header("tracestate", "other=trace");
        let st = run(&p, &host);
        let span = span_of(&st);
        assert!(span.sampled && st.parent.is_none());
        assert_ne!(span.trace_id_hex(), T);
        assert_eq!(
            trace_context::parse_traceparent(&host.header("traceparent").unwrap_or_default()),
            Some(span)
        );
        assert_eq!(host.header("tracestate"), None);
    }

    #[test]
    fn sample_ratio_zero_starts_unsampled_traces() {
        let p = policy(r#"{"sample_ratio":0.0}"#);
        for _ in 0..20 {
            let host = FakeHost::request("GET", "/");
            assert!(!span_of(&run(&p, &host)).sampled);
        }
    }

    #[test]
    fn b3_contexts_are_extracted_and_injected_in_every_configured_format() {
        let p = policy(r#"{"inject":["w3c","b3","b3multi"]}"#);
        let host = FakeHost::request("GET", "/")
            .with_header("x-b3-traceid", T)
            .with_header("x-b3-spanid", S)
            .with_header("x-b3-sampled", "1")
            .with_header("x-b3-flags", "0");
        let st = run(&p, &host);
        let span = span_of(&st);
        assert_eq!(span.trace_id_hex(), T);
        let s = span.span_id_hex();
        assert_eq!(host.header("traceparent"), Some(format!("00-{T}-{s}-01")));
        assert_eq!(host.header("b3"), Some(format!("{T}-{s}-1-{S}")));
        assert_eq!(host.header("x-b3-traceid").as_deref(), Some(T));
        assert_eq!(host.header("x-b3-spanid"), Some(s));
        assert_eq!(host.header("x-b3-parentspanid").as_deref(), Some(S));
        assert_eq!(host.header("x-b3-sampled").as_deref(), Some("1"));
        assert_eq!(host.header("x-b3-flags"), None);
    }

    #[test]
    fn extraction_follows_the_configured_order() {
        let other = "80f198ee56343ba864fe8b2a57d3eff7";
        let host = || {
            FakeHost::request("GET", "/")
                .with_header("traceparent", &format!("00-{T}-{S}-01"))
                .with_header("b3", &format!("{other}-e457b5a2e4d86bd1-1"))
        };
        assert_eq!(span_of(&run(&policy("{}"), &host())).trace_id_hex(), T);
        let b3_first = policy(r#"{"extract":["b3","w3c"]}"#);
        assert_eq!(span_of(&run(&b3_first, &host())).trace_id_hex(), other);
        let w3c_only = policy(r#"{"extract":["w3c"]}"#);
        let h =
            FakeHost::request("GET", "/").with_header("b3", &format!("{other}-e457b5a2e4d86bd1-1"));
        assert_ne!(span_of(&run(&w3c_only, &h)).trace_id_hex(), other);
    }

    #[test]
    fn a_b3_sampling_only_header_decides_a_new_trace() {
        let p = policy(r#"{"sample_ratio":1.0}"#);
        let host = FakeHost::request("GET", "/").with_header("b3", "0");
        let st = run(&p, &host);
        assert!(!span_of(&st).sampled && st.parent.is_none());
    }

    #[test]
    fn the_trace_id_can_be_returned_to_the_client() {
        let p = policy(r#"{"trace_id_response_header":"x-trace-id"}"#);
        let host =
            FakeHost::request("GET", "/").with_header("traceparent", &format!("00-{T}-{S}-01"));
        run(&p, &host);
        assert_eq!(host.response_header_value("x-trace-id").as_deref(), Some(T));
    }

    #[test]
    fn sampled_spans_are_exported_in_otlp_batches_on_tick() {
        props::reset_flavor();
        let p = policy(
            r#"{"service_name":"edge","exporter":{"upstream":"otel","batch_size":10,"flush_interval":"200ms"}}"#,
        );
        assert_eq!(p.tick_period(), Some(Duration::from_millis(200)));
        let host = FakeHost::request("POST", "/orders/1?secret=x")
            .at(Duration::from_secs(1_700_000_000))
            .with_header("traceparent", &format!("00-{T}-{S}-01"))
            .with_header("user-agent", "ua/1")
            .with_property(&["source", "address"], b"10.0.0.9:4000")
            .with_property(&["xds", "route_name"], b"orders")
            .with_property(&["response", "code"], &502u64.to_le_bytes());
        let st = run(&p, &host);
        // unsampled requests are not exported
        run(
            &p,
            &FakeHost::request("GET", "/").with_header("traceparent", &format!("00-{T}-{S}-00")),
        );
        assert_eq!(p.queued(), 1);

        let mut root = FakeRootHost::new();
        p.on_tick(&mut root);
        let call = root.calls[0].clone();
        assert_eq!(
            (
                call.upstream.as_str(),
                call.path.as_str(),
                call.method.as_str()
            ),
            ("otel", "/v1/traces", "POST")
        );
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap_or_default()).unwrap();
        let rs = &body["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "edge"
        );
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], T);
        assert_eq!(span["parentSpanId"], S);
        assert_eq!(span["spanId"], span_of(&st).span_id_hex());
        assert_eq!(span["name"], "POST orders");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000005000000");
        assert_eq!(span["status"]["code"], 2);
        let attrs: Vec<(String, Value)> = span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone()))
            .collect();
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("http.request.method"),
            Some(serde_json::json!({"stringValue": "POST"}))
        );
        assert_eq!(
            get("url.path"),
            Some(serde_json::json!({"stringValue": "/orders/1"}))
        );
        assert_eq!(
            get("server.address"),
            Some(serde_json::json!({"stringValue": "example.test"}))
        );
        assert_eq!(
            get("client.address"),
            Some(serde_json::json!({"stringValue": "10.0.0.9"}))
        );
        assert_eq!(
            get("user_agent.original"),
            Some(serde_json::json!({"stringValue": "ua/1"}))
        );
        assert_eq!(
            get("http.response.status_code"),
            Some(serde_json::json!({"intValue": "502"}))
        );
        p.on_callout_response(
            &mut root,
            call.token,
            Some(CalloutResponse {
                status: 200,
                ..Default::default()
            }),
        );
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(
            portcullis_common::metrics::value("portcullis_tracing_spans_sent_total"),
            Some(1)
        );
        props::reset_flavor();
    }

    #[test]
    fn authority_hosts_drop_the_port() {
        for (a, h) in [
            ("a.test:8080", "a.test"),
            ("a.test", "a.test"),
            ("[::1]:80", "::1"),
            ("x:y", "x:y"),
        ] {
            assert_eq!(authority_host(a), h);
        }
    }
}
