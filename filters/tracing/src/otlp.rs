//! OTLP/HTTP JSON encoding of server spans (`ExportTraceServiceRequest`, POSTed to `/v1/traces` with
//! `content-type: application/json`). JSON rather than protobuf: no protobuf crate in a size-sensitive wasm
//! module, and every OpenTelemetry Collector OTLP/HTTP receiver accepts it. Per the OTLP JSON mapping,
//! trace and span ids are lowercase hex strings, 64-bit integers (timestamps, `intValue`) are decimal
//! strings, and enums are integers (`kind: 2` = SERVER, `status.code: 2` = ERROR).

use portcullis_common::trace_context::to_hex;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
}

/// One finished server span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Server spans are errors for 5xx answers (and when no answer was sent), not for 4xx.
    pub error: bool,
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let v = match value {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
    };
    json!({ "key": key, "value": v })
}

impl Span {
    /// The span as one OTLP JSON `Span` object.
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        m.insert("traceId".into(), to_hex(&self.trace_id).into());
        m.insert("spanId".into(), to_hex(&self.span_id).into());
        if let Some(p) = &self.parent_span_id {
            m.insert("parentSpanId".into(), to_hex(p).into());
        }
        m.insert("name".into(), self.name.clone().into());
        m.insert("kind".into(), 2.into());
        m.insert(
            "startTimeUnixNano".into(),
            self.start_unix_nano.to_string().into(),
        );
        m.insert(
            "endTimeUnixNano".into(),
            self.end_unix_nano.to_string().into(),
        );
        m.insert(
            "attributes".into(),
            Value::Array(
                self.attributes
                    .iter()
                    .map(|(k, v)| attribute(k, v))
                    .collect(),
            ),
        );
        if self.error {
            m.insert("status".into(), json!({ "code": 2 }));
        }
        Value::Object(m).to_string()
    }
}

/// The text around a batch of span objects: `(prefix, suffix)` of an `ExportTraceServiceRequest` whose
/// single resource carries `service.name` and the extra resource attributes.
pub fn envelope<'a>(
    service_name: &str,
    resource_attributes: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> (String, String) {
    let mut attributes = vec![attribute(
        "service.name",
        &AttrValue::Str(service_name.to_string()),
    )];
    attributes.extend(
        resource_attributes
            .into_iter()
            .map(|(k, v)| attribute(k, &AttrValue::Str(v.clone()))),
    );
    let resource = json!({ "attributes": attributes });
    let scope = json!({ "name": "portcullis-tracing", "version": env!("CARGO_PKG_VERSION") });
    (
        format!(
            r#"{{"resourceSpans":[{{"resource":{resource},"scopeSpans":[{{"scope":{scope},"spans":["#
        ),
        "]}]}]}".to_string(),
    )
}

/// A batch body: the envelope around the comma-separated span objects.
pub fn frame(prefix: &str, suffix: &str, spans: &[String]) -> Vec<u8> {
    let len = prefix.len() + suffix.len() + spans.iter().map(|s| s.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(prefix.as_bytes());
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(suffix.as_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> Span {
        Span {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent_span_id: Some([0x02; 8]),
            name: "GET \"quoted\"".into(),
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_042_000_000,
            attributes: vec![
                ("http.request.method", AttrValue::Str("GET".into())),
                ("http.response.status_code", AttrValue::Int(503)),
            ],
            error: true,
        }
    }

    #[test]
    fn spans_follow_the_otlp_json_mapping() {
        let v: Value = serde_json::from_str(&span().to_json()).unwrap();
        assert_eq!(
            v,
            json!({
                "traceId": "abababababababababababababababab",
                "spanId": "0101010101010101",
                "parentSpanId": "0202020202020202",
                "name": "GET \"quoted\"",
                "kind": 2,
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000042000000",
                "attributes": [
                    {"key": "http.request.method", "value": {"stringValue": "GET"}},
                    {"key": "http.response.status_code", "value": {"intValue": "503"}}
                ],
                "status": {"code": 2}
            })
        );
        let ok = Span {
            parent_span_id: None,
            error: false,
            ..span()
        };
        let v: Value = serde_json::from_str(&ok.to_json()).unwrap();
        assert!(v.get("parentSpanId").is_none() && v.get("status").is_none());
    }

    #[test]
    fn a_batch_is_one_export_request_with_the_resource() {
        let attrs = [("deployment.environment".to_string(), "test".to_string())];
        let (prefix, suffix) = envelope("edge", attrs.iter().map(|(k, v)| (k, v)));
        let spans = [span().to_json(), span().to_json()];
        let body = frame(&prefix, &suffix, &spans);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"],
            json!([
                {"key": "service.name", "value": {"stringValue": "edge"}},
                {"key": "deployment.environment", "value": {"stringValue": "test"}}
            ])
        );
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "portcullis-tracing");
        assert_eq!(
            rs["scopeSpans"][0]["spans"].as_array().map(Vec::len),
            Some(2)
        );
        let empty = frame(&prefix, &suffix, &[]);
        assert!(serde_json::from_slice::<Value>(&empty).is_ok());
    }
}
