//! Distributed-trace context in the two header formats gateways meet: W3C Trace Context (`traceparent`,
//! <https://www.w3.org/TR/trace-context/>) and B3 (the single `b3` header and the multi-header
//! `X-B3-*` form, <https://github.com/openzipkin/b3-propagation>). Parsing is strict where the specs are
//! (W3C: lowercase hex, no all-zero ids, version `ff` invalid, version `00` has exactly four fields) and
//! lenient where B3 deployments are (uppercase hex accepted, 64-bit trace ids left-padded to 128 bits).

use std::fmt::Write;

/// A trace position: the trace, the span that sent the request, and whether the trace is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

/// What a B3 header set says: a full context, or only a sampling decision (`b3: 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3 {
    Context {
        context: TraceContext,
        /// `None` when the sender deferred the decision (no sampling field).
        sampled: Option<bool>,
    },
    SamplingOnly(bool),
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes exactly `N` bytes of hex; `lowercase_only` rejects `A-F`.
fn from_hex<const N: usize>(text: &str, lowercase_only: bool) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if !lowercase_only => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let (hi, lo) = (digit(*pair.first()?)?, digit(*pair.get(1)?)?);
        *out.get_mut(i)? = (hi << 4) | lo;
    }
    Some(out)
}

fn nonzero(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| *b != 0)
}

/// Parses a `traceparent` header. `None` for anything the W3C spec says to ignore.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let value = value.trim_matches([' ', '\t']);
    let mut fields = value.split('-');
    let version: [u8; 1] = from_hex(fields.next()?, true)?;
    if version == [0xff] {
        return None;
    }
    let trace_id: [u8; 16] = from_hex(fields.next()?, true)?;
    let span_id: [u8; 8] = from_hex(fields.next()?, true)?;
    let flags: [u8; 1] = from_hex(fields.next()?, true)?;
    // Version 00 has exactly four fields; later versions may append fields after a '-'.
    if version == [0] && fields.next().is_some() {
        return None;
    }
    if !(nonzero(&trace_id) && nonzero(&span_id)) {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

impl TraceContext {
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// `00-<trace>-<span>-<01|00>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id_hex(),
            self.span_id_hex(),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The single `b3` header: `<trace>-<span>-<1|0>[-<parent>]`.
    pub fn b3_single(&self, parent: Option<&[u8; 8]>) -> String {
        let mut out = format!(
            "{}-{}-{}",
            self.trace_id_hex(),
            self.span_id_hex(),
            if self.sampled { '1' } else { '0' }
        );
        if let Some(p) = parent {
            out.push('-');
            out.push_str(&to_hex(p));
        }
        out
    }
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, left-padded with zeros).
fn b3_trace_id(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    let id = match text.len() {
        16 => {
            let low: [u8; 8] = from_hex(text, false)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => from_hex(text, false)?,
    };
    nonzero(&id).then_some(id)
}

fn b3_span_id(text: &str) -> Option<[u8; 8]> {
    from_hex(text.trim(), false).filter(|id: &[u8; 8]| nonzero(id))
}

/// B3 sampling field: `1`/`d` (debug) sample, `0` do not; `true`/`false` are accepted from old senders.
fn b3_sampled(text: &str) -> Option<bool> {
    match text.trim() {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Parses the single `b3` header: `<trace>-<span>[-<sampled>[-<parent>]]`, or just `<sampled>`.
pub fn parse_b3_single(value: &str) -> Option<B3> {
    let value = value.trim();
    if let Some(sampled) = b3_sampled(value) {
        return Some(B3::SamplingOnly(sampled));
    }
    let mut fields = value.split('-');
    let trace_id = b3_trace_id(fields.next()?)?;
    let span_id = b3_span_id(fields.next()?)?;
    let sampled = match fields.next() {
        Some(s) => Some(b3_sampled(s)?),
        None => None,
    };
    if let Some(parent) = fields.next() {
        b3_span_id(parent)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(B3::Context {
        context: TraceContext {
            trace_id,
            span_id,
            sampled: sampled.unwrap_or(false),
        },
        sampled,
    })
}

/// Parses `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` and `X-B3-Flags` (debug, `1`, implies sampled).
pub fn parse_b3_multi(
    trace_id: Option<&str>,
    span_id: Option<&str>,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Option<B3> {
    let debug = flags.map(str::trim) == Some("1");
    let sampled = if debug {
        Some(true)
    } else {
        match sampled {
            Some(s) => Some(b3_sampled(s)?),
            None => None,
        }
    };
    match (trace_id, span_id) {
        (Some(t), Some(s)) => {
            let context = TraceContext {
                trace_id: b3_trace_id(t)?,
                span_id: b3_span_id(s)?,
                sampled: sampled.unwrap_or(false),
            };
            Some(B3::Context { context, sampled })
        }
        (None, None) => sampled.map(B3::SamplingOnly),
        _ => None,
    }
}

/// The context a request carries in any format: `traceparent`, else `b3`, else `X-B3-TraceId`/`-SpanId`.
/// `header` looks up a request header by (lower-case) name.
pub fn from_headers(mut header: impl FnMut(&str) -> Option<String>) -> Option<TraceContext> {
    if let Some(c) = header("traceparent").and_then(|v| parse_traceparent(&v)) {
        return Some(c);
    }
    if let Some(B3::Context { context, .. }) = header("b3").and_then(|v| parse_b3_single(&v)) {
        return Some(context);
    }
    let trace = header("x-b3-traceid");
    let span = header("x-b3-spanid");
    let sampled = header("x-b3-sampled");
    match parse_b3_multi(trace.as_deref(), span.as_deref(), sampled.as_deref(), None) {
        Some(B3::Context { context, .. }) => Some(context),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    fn ctx(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: from_hex(T, true).unwrap(),
            span_id: from_hex(S, true).unwrap(),
            sampled,
        }
    }

    #[test]
    fn traceparent_edge_cases() {
        let zeros32 = "0".repeat(32);
        let zeros16 = "0".repeat(16);
        let cases: Vec<(String, Option<TraceContext>)> = vec![
            (format!("00-{T}-{S}-01"), Some(ctx(true))),
            (format!("00-{T}-{S}-00"), Some(ctx(false))),
            (format!("00-{T}-{S}-09"), Some(ctx(true))),
            (format!(" 00-{T}-{S}-01\t"), Some(ctx(true))),
            // a future version may append fields; version 00 may not
            (
                format!("01-{T}-{S}-01-what-the-future-holds"),
                Some(ctx(true)),
            ),
            (format!("00-{T}-{S}-01-extra"), None),
            (format!("ff-{T}-{S}-01"), None),
            (format!("0-{T}-{S}-01"), None),
            (format!("00-{zeros32}-{S}-01"), None),
            (format!("00-{T}-{zeros16}-01"), None),
            (format!("00-{}-{S}-01", T.to_uppercase()), None),
            (format!("00-{T}-{}-01", S.to_uppercase()), None),
            (format!("00-{T}-{S}-1"), None),
            (format!("00-{T}-{S}"), None),
            (format!("00-{}-{S}-01", &T[..30]), None),
            (format!("00-{T}x-{S}-01"), None),
            ("".to_string(), None),
            ("00-é-é-é".to_string(), None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(&value), want, "{value:?}");
        }
    }

    #[test]
    fn traceparent_round_trips() {
        for sampled in [true, false] {
            let c = ctx(sampled);
            assert_eq!(parse_traceparent(&c.traceparent()), Some(c));
        }
        assert_eq!(ctx(true).traceparent(), format!("00-{T}-{S}-01"));
    }

    #[test]
    fn b3_single_header_forms() {
        let with = |sampled: Option<bool>| {
            Some(B3::Context {
                context: ctx(sampled.unwrap_or(false)),
                sampled,
            })
        };
        let p = "05e3ac9a4f6e3b90";
        let cases = [
            (format!("{T}-{S}"), with(None)),
            (format!("{T}-{S}-1"), with(Some(true))),
            (format!("{T}-{S}-d"), with(Some(true))),
            (format!("{T}-{S}-0-{p}"), with(Some(false))),
            (format!("{}-{}-1", T.to_uppercase(), S), with(Some(true))),
            ("0".to_string(), Some(B3::SamplingOnly(false))),
            ("1".to_string(), Some(B3::SamplingOnly(true))),
            (format!("{T}-{S}-x"), None),
            (format!("{T}-{S}-1-bad"), None),
            (format!("{T}-{S}-1-{p}-more"), None),
            (T.to_string(), None),
            ("".to_string(), None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_b3_single(&value), want, "{value:?}");
        }
        assert_eq!(ctx(true).b3_single(None), format!("{T}-{S}-1"));
        let parent: [u8; 8] = from_hex(p, true).unwrap();
        assert_eq!(
            ctx(false).b3_single(Some(&parent)),
            format!("{T}-{S}-0-{p}")
        );
    }

    #[test]
    fn b3_sixty_four_bit_trace_ids_are_padded() {
        let Some(B3::Context { context, .. }) = parse_b3_single(&format!("a3ce929d0e0e4736-{S}"))
        else {
            panic!("64-bit id not accepted");
        };
        assert_eq!(context.trace_id_hex(), "0000000000000000a3ce929d0e0e4736");
    }

    #[test]
    fn from_headers_prefers_w3c_then_b3_single_then_multi() {
        let headers = |list: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                list.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        const B3_VALUE: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let got = from_headers(headers(&[("traceparent", W3C), ("b3", B3_VALUE)]));
        assert_eq!(got, Some(ctx(true)));
        let got = from_headers(headers(&[("traceparent", "garbage"), ("b3", B3_VALUE)]));
        assert_eq!(
            got.map(|c| c.span_id_hex()).as_deref(),
            Some("e457b5a2e4d86bd1")
        );
        let got = from_headers(headers(&[("x-b3-traceid", T), ("x-b3-spanid", S)]));
        assert_eq!(got, Some(ctx(false)));
        assert_eq!(from_headers(headers(&[("b3", "1")])), None);
    }

    #[test]
    fn b3_multi_headers() {
        let m = parse_b3_multi(Some(T), Some(S), Some("1"), None);
        assert_eq!(
            m,
            Some(B3::Context {
                context: ctx(true),
                sampled: Some(true)
            })
        );
        assert_eq!(
            parse_b3_multi(Some(T), Some(S), Some("0"), Some("1")),
            Some(B3::Context {
                context: ctx(true),
                sampled: Some(true)
            }),
            "debug flag forces sampling"
        );
        assert_eq!(
            parse_b3_multi(None, None, Some("0"), None),
            Some(B3::SamplingOnly(false))
        );
        assert_eq!(parse_b3_multi(Some(T), None, None, None), None);
        assert_eq!(parse_b3_multi(Some(T), Some(S), Some("maybe"), None), None);
        assert_eq!(parse_b3_multi(Some("xyz"), Some(S), None, None), None);
        assert_eq!(parse_b3_multi(None, None, None, None), None);
    }
}
