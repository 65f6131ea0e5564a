//! Value templates such as `"${client_ip}-${header.x-user}"`, compiled once at load and rendered per
//! request through the [`Exchange`] (so each source is read from the host once).
//!
//! Variables: `client_ip`, `request_id`, `method`, `path` (without query), `path_and_query`, `host`,
//! `route_id`, `service_id` (Kong service id; Envoy cluster name), `header.<name>`, `query.<name>`.
//! `$$` is a literal `$`.

use crate::exchange::Exchange;
use crate::http::HeaderName;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    RequestId,
    Method,
    Path,
    PathAndQuery,
    Host,
    RouteId,
    /// Kong: `kong.service_id`; Envoy: the upstream cluster's name.
    ServiceId,
    Header(HeaderName),
    Query(String),
}

pub const VARIABLES: &str = "client_ip, request_id, method, path, path_and_query, host, route_id, service_id, header.<name>, query.<name>";

/// Longest header value a template may produce; longer results are cut (request headers can be large).
pub const MAX_RENDERED_HEADER_BYTES: usize = 8 * 1024;

/// A template whose literal text is a valid header value; deserializes with that check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate(pub Template);

impl<'de> Deserialize<'de> for HeaderTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse_header_value(&text)
            .map(HeaderTemplate)
            .map_err(de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// The text as written in the config (for schema defaults and messages).
    source: String,
}

/// A rendered template; `complete` is false when a variable had no value (it rendered as empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub value: String,
    pub complete: bool,
}

impl Var {
    fn parse(name: &str) -> Result<Var, String> {
        let var = match name {
            "client_ip" => Var::ClientIp,
            "request_id" => Var::RequestId,
            "method" => Var::Method,
            "path" => Var::Path,
            "path_and_query" => Var::PathAndQuery,
            "host" => Var::Host,
            "route_id" => Var::RouteId,
            "service_id" => Var::ServiceId,
            _ => {
                if let Some(h) = name.strip_prefix("header.") {
                    Var::Header(HeaderName::parse(h)?)
                } else if let Some(q) = name.strip_prefix("query.").filter(|q| !q.is_empty()) {
                    Var::Query(q.to_string())
                } else {
                    return Err(format!(
                        "unknown template variable ${{{name}}} (known: {VARIABLES})"
                    ));
                }
            }
        };
        Ok(var)
    }

    /// Appends the variable's value to `out`; false when the request has no value for it.
    fn append(&self, ex: &mut Exchange, out: &mut String) -> bool {
        let value = match self {
            Var::ClientIp => ex.client_ip_text(),
            Var::RequestId => ex.request_id(),
            Var::Method => ex.method(),
            Var::Path => ex.path(),
            Var::PathAndQuery => ex.path_and_query(),
            Var::Host => ex.authority(),
            Var::RouteId => ex.route_id(),
            Var::ServiceId => {
                return crate::props::service_id(&*ex.host())
                    .map(|id| out.push_str(&id))
                    .is_some()
            }
            Var::Header(name) => ex.request_header(name.as_str()),
            Var::Query(name) => ex.query_param(name),
        };
        value.map(|v| out.push_str(v)).is_some()
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let end = tail
                    .find('}')
                    .ok_or_else(|| format!("unterminated \"${{\" in template {text:?}"))?;
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(Var::parse(tail[..end].trim())?));
                rest = &tail[end + 1..];
            } else {
                return Err(format!(
                    "a \"$\" must start \"${{variable}}\" or be doubled (\"$$\") in template {text:?}"
                ));
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            parts,
            source: text.to_string(),
        })
    }

    /// Parses a template that will become a header value: its literal text must be a valid header value.
    pub fn parse_header_value(text: &str) -> Result<Template, String> {
        if !crate::http::is_valid_header_value(text) {
            return Err(format!(
                "{text:?} is not a valid header value (control characters such as CR/LF are not allowed)"
            ));
        }
        Template::parse(text)
    }

    /// Renders for use as a header value: request-derived parts are sanitised (no control characters) and
    /// the result is capped at [`MAX_RENDERED_HEADER_BYTES`].
    pub fn render_header_value(&self, ex: &mut Exchange) -> Rendered {
        let mut r = self.render(ex);
        if r.value.len() > MAX_RENDERED_HEADER_BYTES
            || !crate::http::is_valid_header_value(&r.value)
        {
            r.value = crate::http::sanitize_header_value(&r.value, MAX_RENDERED_HEADER_BYTES);
        }
        r
    }

    /// True when the template has no variables (its value is known at load time).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Literal text of a constant template (empty string when it has variables' parts only).
    pub fn constant_text(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Literal(_) => None,
        })
    }

    pub fn render(&self, ex: &mut Exchange) -> Rendered {
        if let Some(text) = self.constant_text() {
            return Rendered {
                value: text.to_owned(),
                complete: true,
            };
        }
        let mut value = String::new();
        let mut complete = true;
        for part in &self.parts {
            match part {
                Part::Literal(s) => value.push_str(s),
                Part::Var(v) => complete &= v.append(ex, &mut value),
            }
        }
        Rendered { value, complete }
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl Serialize for HeaderTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    fn exchange() -> Exchange {
        Exchange::new(Box::new(
            FakeHost::request("PUT", "/v1/items?id=42")
                .with_header("x-user", "alice")
                .with_header("x-request-id", "rid-1")
                .with_property(&["source", "address"], b"198.51.100.4:5555"),
        ))
    }

    #[test]
    fn renders_every_variable() {
        let t = Template::parse(
            "${client_ip}|${request_id}|${method}|${path}|${path_and_query}|${host}|${header.X-User}|${query.id}",
        )
        .unwrap();
        let r = t.render(&mut exchange());
        assert_eq!(
            r.value,
            "198.51.100.4|rid-1|PUT|/v1/items|/v1/items?id=42|example.test|alice|42"
        );
        assert!(r.complete);
    }

    #[test]
    fn missing_values_render_empty_and_are_reported() {
        let t = Template::parse("u=${header.x-nope};").unwrap();
        let r = t.render(&mut exchange());
        assert_eq!(r.value, "u=;");
        assert!(!r.complete);
    }

    #[test]
    fn dollar_escapes_and_constants() {
        let t = Template::parse("cost: $$5").unwrap();
        assert!(t.is_constant());
        assert_eq!(t.render(&mut exchange()).value, "cost: $5");
        assert_eq!(Template::parse("").unwrap().constant_text(), Some(""));
    }

    #[test]
    fn header_templates_reject_crlf_and_sanitise_rendered_values() {
        assert!(Template::parse_header_value("a\r\nb: c").is_err());
        let t = Template::parse_header_value("<${header.x-evil}>").unwrap();
        let host = FakeHost::request("GET", "/").with_header("x-evil", "1\r\nSet-Cookie: a=b");
        let r = t.render_header_value(&mut Exchange::new(Box::new(host)));
        assert!(
            crate::http::is_valid_header_value(&r.value),
            "{:?}",
            r.value
        );
        let big = "x".repeat(MAX_RENDERED_HEADER_BYTES * 2);
        let host = FakeHost::request("GET", "/").with_header("x-evil", &big);
        let r = t.render_header_value(&mut Exchange::new(Box::new(host)));
        assert_eq!(r.value.len(), MAX_RENDERED_HEADER_BYTES);
    }

    #[test]
    fn malformed_templates_are_rejected_with_a_reason() {
        let cases = [
            ("${nope}", "unknown template variable ${nope}"),
            ("${header.x y}", "not a valid header name"),
            ("${query.}", "unknown template variable"),
            ("abc${client_ip", "unterminated"),
            ("5$", "must start"),
            ("$x", "must start"),
        ];
        for (text, want) in cases {
            let err = Template::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
