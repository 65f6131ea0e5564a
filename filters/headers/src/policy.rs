//! The `headers` policy: applies the configured edits, request side in `on_request_headers`, response
//! side in `on_response_headers`. Response values are rendered during the request (templates read request
//! data, which not every host still offers once the response starts) and kept in the per-request state.

use crate::config::{HeaderEdit, HeadersConfig, Transform};
use portcullis_common::{ConfigError, Decision, Exchange, Policy};

pub struct HeadersPolicy {
    config: HeadersConfig,
}

/// Response `set`/`add` values rendered at request time, in config order (`set` first, then `add`).
#[derive(Default)]
pub struct PendingResponse {
    values: Vec<String>,
}

impl Policy for HeadersPolicy {
    const NAME: &'static str = "headers";
    type State = PendingResponse;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        Ok(HeadersPolicy {
            config: HeadersConfig::parse(config)?,
        })
    }

    fn on_request_headers(&self, state: &mut PendingResponse, ex: &mut Exchange) -> Decision {
        let response = &self.config.response;
        if !(response.set.is_empty() && response.add.is_empty()) {
            state.values = response
                .set
                .iter()
                .chain(&response.add)
                .map(|edit| edit.value.0.render_header_value(ex).value)
                .collect();
        }
        apply_request(&self.config.request, ex);
        Decision::Continue
    }

    fn on_response_headers(&self, state: &mut PendingResponse, ex: &mut Exchange) -> Decision {
        apply_response(&self.config.response, &state.values, ex);
        Decision::Continue
    }
}

fn apply_request(t: &Transform, ex: &mut Exchange) {
    for name in &t.remove {
        ex.set_request_header(name.as_str(), None);
    }
    for r in &t.rename {
        if let Some(value) = ex.request_header(r.from.as_str()).map(str::to_owned) {
            ex.set_request_header(r.from.as_str(), None);
            ex.set_request_header(r.to.as_str(), Some(&value));
        }
    }
    for HeaderEdit { name, value } in &t.set {
        let v = value.0.render_header_value(ex).value;
        ex.set_request_header(name.as_str(), Some(&v));
    }
    for HeaderEdit { name, value } in &t.add {
        let v = value.0.render_header_value(ex).value;
        ex.add_request_header(name.as_str(), &v);
    }
}

fn apply_response(t: &Transform, rendered: &[String], ex: &mut Exchange) {
    for name in &t.remove {
        ex.set_response_header(name.as_str(), None);
    }
    for r in &t.rename {
        if let Some(value) = ex.response_header(r.from.as_str()) {
            ex.set_response_header(r.from.as_str(), None);
            ex.set_response_header(r.to.as_str(), Some(&value));
        }
    }
    let mut values = rendered.iter();
    for edit in &t.set {
        if let Some(v) = values.next() {
            ex.set_response_header(edit.name.as_str(), Some(v));
        }
    }
    for edit in &t.add {
        if let Some(v) = values.next() {
            ex.add_response_header(edit.name.as_str(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::FakeHost;

    fn policy(json: &str) -> HeadersPolicy {
        HeadersPolicy::configure(json.as_bytes()).unwrap()
    }

    fn run(policy: &HeadersPolicy, host: &FakeHost) {
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = PendingResponse::default();
        assert_eq!(
            policy.on_request_headers(&mut state, &mut ex),
            Decision::Continue
        );
        assert_eq!(
            policy.on_response_headers(&mut state, &mut ex),
            Decision::Continue
        );
    }

    #[test]
    fn request_edits_apply_in_documented_order() {
        // remove → rename → set → add: "x-b" is removed before "x-a" is renamed onto it, then set wins over
        // the renamed value, then add appends.
        let p = policy(
            r#"{"request":{
                "add":[{"name":"x-b","value":"added"}],
                "set":[{"name":"x-c","value":"set-${header.x-b}"}],
                "rename":[{"from":"x-a","to":"x-b"}],
                "remove":["x-b","x-gone"]}}"#,
        );
        let host = FakeHost::request("GET", "/")
            .with_header("x-a", "from-a")
            .with_header("x-b", "original-b")
            .with_header("x-gone", "1");
        run(&p, &host);
        assert_eq!(host.header("x-a"), None);
        assert_eq!(host.header("x-gone"), None);
        assert_eq!(host.header_values("x-b"), vec!["from-a", "added"]);
        assert_eq!(host.header("x-c").as_deref(), Some("set-from-a"));
    }

    #[test]
    fn templates_fill_in_request_values() {
        let p = policy(
            r#"{"request":{"set":[
                {"name":"x-client-ip","value":"${client_ip}"},
                {"name":"x-route","value":"${method} ${path}"},
                {"name":"x-id","value":"id=${request_id}"}]}}"#,
        );
        let host = FakeHost::request("POST", "/orders?id=1")
            .with_header("x-request-id", "r-1")
            .with_property(&["source", "address"], b"203.0.113.5:40000");
        run(&p, &host);
        assert_eq!(host.header("x-client-ip").as_deref(), Some("203.0.113.5"));
        assert_eq!(host.header("x-route").as_deref(), Some("POST /orders"));
        assert_eq!(host.header("x-id").as_deref(), Some("id=r-1"));
    }

    #[test]
    fn rename_of_an_absent_header_does_nothing() {
        let p = policy(r#"{"request":{"rename":[{"from":"x-a","to":"x-b"}]}}"#);
        let host = FakeHost::request("GET", "/").with_header("x-b", "keep");
        run(&p, &host);
        assert_eq!(host.header("x-b").as_deref(), Some("keep"));
    }

    #[test]
    fn response_edits_use_values_rendered_from_the_request() {
        let p = policy(
            r#"{"response":{"remove":["server-timing"],"rename":[{"from":"x-up","to":"x-upstream"}],
                "set":[{"name":"x-request-id","value":"${request_id}"}],
                "add":[{"name":"x-served-for","value":"${header.x-user}"}]}}"#,
        );
        let host = FakeHost::request("GET", "/")
            .with_header("x-request-id", "abc")
            .with_header("x-user", "bob")
            .with_response_header("server-timing", "db;dur=5")
            .with_response_header("x-up", "v1");
        run(&p, &host);
        assert_eq!(host.response_header_value("server-timing"), None);
        assert_eq!(
            host.response_header_value("x-upstream").as_deref(),
            Some("v1")
        );
        assert_eq!(
            host.response_header_value("x-request-id").as_deref(),
            Some("abc")
        );
        assert_eq!(
            host.response_header_value("x-served-for").as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn hostile_request_values_never_inject_headers() {
        let p = policy(r#"{"request":{"set":[{"name":"x-copy","value":"${header.x-in}"}]}}"#);
        let host = FakeHost::request("GET", "/").with_header("x-in", "a\r\nx-admin: true");
        run(&p, &host);
        let v = host.header("x-copy").unwrap();
        assert!(!v.contains('\r') && !v.contains('\n'), "{v:?}");
    }

    #[test]
    fn each_source_header_is_read_once() {
        let p = policy(
            r#"{"request":{"set":[{"name":"x-1","value":"${header.x-user}"},{"name":"x-2","value":"${header.x-user}"}],
                "add":[{"name":"x-3","value":"${header.x-user}"}]}}"#,
        );
        let host = FakeHost::request("GET", "/").with_header("x-user", "u");
        run(&p, &host);
        assert_eq!(host.state.borrow().header_reads, 1);
    }
}
