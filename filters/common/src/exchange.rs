//! The per-request context every policy works through. It reads each host value (header, property, clock)
//! at most once per request and keeps its cache coherent with the edits policies make, so a chain of
//! policies costs no more host calls than its most demanding member.

use crate::header_block::HeaderBlock;
use crate::host::Host;
use crate::props::{self, Flavor};
use std::net::IpAddr;
use std::time::Duration;

/// A host value read lazily: `None` = not asked yet.
type Lazy<T> = Option<T>;

pub struct Exchange {
    host: Box<dyn Host>,
    /// Request headers known apart from `header_block`: edits made through the exchange, values read one
    /// by one, and lossily decoded values (lower-case name → first value, `None` when absent). Checked first.
    request_headers: Vec<(String, Option<String>)>,
    /// Every request header as the host had them when first asked (read in one host call).
    header_block: Lazy<Option<HeaderBlock>>,
    peer_ip: Lazy<Option<IpAddr>>,
    client_ip: Option<IpAddr>,
    /// The client address formatted (templates render it more than once per request).
    client_ip_text: Option<(IpAddr, String)>,
    route_id: Lazy<Option<String>>,
    request_id: Lazy<Option<String>>,
    now: Lazy<Duration>,
    /// Whether a body follows the request headers, as the host reported it (`None`: not reported).
    request_has_body: Option<bool>,
    /// Request header lines this exchange appended (lower-case names), for the line count Kong needs.
    added_request_headers: Vec<String>,
    /// The first header edit the host did not (or on this host could not) apply: the adapter answers with
    /// it instead of letting the request or response go on unedited.
    edit_failure: Option<EditFailure>,
}

/// A header edit that did not take effect, and the answer the client gets instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditFailure {
    pub status: u16,
    pub message: String,
}

impl Exchange {
    pub fn new(host: Box<dyn Host>) -> Self {
        Exchange {
            host,
            request_headers: Vec::new(),
            header_block: None,
            peer_ip: None,
            client_ip: None,
            client_ip_text: None,
            route_id: None,
            request_id: None,
            now: None,
            request_has_body: None,
            added_request_headers: Vec::new(),
            edit_failure: None,
        }
    }

    /// The first header edit that did not take effect since the last call, if any.
    pub fn take_edit_failure(&mut self) -> Option<EditFailure> {
        self.edit_failure.take()
    }

    fn edit_failed(&mut self, status: u16, message: String) {
        log::error!("{message}");
        self.edit_failure
            .get_or_insert(EditFailure { status, message });
    }

    fn on_kong(&self) -> bool {
        self.host.flavor() == Flavor::Kong
    }

    /// Whether the root context can resume this request once it pauses without a callout of its own
    /// (`RootHost::wake_paused`, `Policy::max_pause` deadlines). Envoy can; Kong's engine cannot:
    /// ngx_wasm_module's `proxy_set_effective_context` does nothing (src/common/proxy_wasm/ngx_proxy_wasm_host.c),
    /// so the adapter decides such a pause at once, as timed out. A policy that must wait there makes a callout
    /// from the request itself (`Host::dispatch_http_call`): its answer resumes the request on both hosts.
    pub fn root_can_resume(&self) -> bool {
        !self.on_kong()
    }

    /// Whether the host runs separate filters' response callbacks in reverse chain order. Envoy does (its
    /// filter manager encodes from the last filter to the first); ngx_wasm_module runs every step, response
    /// headers included, from the first filter to the last (`ngx_proxy_wasm_resume`,
    /// src/common/proxy_wasm/ngx_proxy_wasm.c). The chain bundle follows the host so it matches separate filters.
    pub fn response_callbacks_reversed(&self) -> bool {
        !self.on_kong()
    }

    /// Direct host access, for what the exchange does not cache (bodies, shared data, properties).
    pub fn host(&mut self) -> &mut dyn Host {
        self.host.as_mut()
    }

    /// Host time, read once per callback: the adapter calls [`Exchange::new_callback`] between callbacks.
    pub fn now(&mut self) -> Duration {
        *self.now.get_or_insert_with(|| self.host.now())
    }

    /// Microseconds since the Unix epoch (the unit of shared-data expiries).
    pub fn now_us(&mut self) -> u64 {
        u64::try_from(self.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records whether a body follows the request headers (the adapter passes the host's
    /// `!end_of_stream` of the request-headers callback).
    pub fn set_request_has_body(&mut self, has_body: bool) {
        self.request_has_body = Some(has_body);
    }

    /// Whether a body follows the request headers, when the host said so. Envoy removes
    /// `transfer-encoding` from HTTP/1 requests and HTTP/2 bodies need no length header, so this is the
    /// only reliable signal for a body of unknown length there. `None` on Kong's engine, which reports no
    /// body for no request (the adapter leaves it unset; nginx keeps `transfer-encoding` and
    /// `content-length` for policies to read), and in unit tests unless set.
    pub fn request_has_body(&self) -> Option<bool> {
        self.request_has_body
    }

    /// Forgets values that may change between callbacks (the clock).
    pub fn new_callback(&mut self) {
        self.now = None;
    }

    /// First value of a request header; `name` is compared case-insensitively. The first lookup reads every
    /// request header in one host call; pseudo-headers a host leaves out of that block (`:path`… on some
    /// hosts) and hosts without it are asked header by header.
    pub fn request_header(&mut self, name: &str) -> Option<&str> {
        enum Found {
            Known(usize),
            /// Pair `i` of the header block, valid UTF-8.
            InBlock(usize),
        }
        let found = match self.known_header(name) {
            Some(i) => Found::Known(i),
            None => {
                let block = self.loaded_block();
                match block.map(|b| (b, b.position(name))) {
                    Some((b, Some(i))) if std::str::from_utf8(b.value_at(i)).is_ok() => {
                        Found::InBlock(i)
                    }
                    Some((b, Some(i))) => {
                        let lossy = String::from_utf8_lossy(b.value_at(i)).into_owned();
                        Found::Known(self.push_known(name, Some(lossy)))
                    }
                    Some((b, None)) if !name.starts_with(':') && b.complete() => {
                        Found::Known(self.push_known(name, None))
                    }
                    _ => {
                        let value = self.host.request_header(name);
                        Found::Known(self.push_known(name, value))
                    }
                }
            }
        };
        match found {
            Found::Known(i) => self.request_headers[i].1.as_deref(),
            // the borrow checker cannot return the value from the match above, so it is looked up again by
            // index (no scan); UTF-8 was checked there
            Found::InBlock(i) => self
                .header_block
                .as_ref()
                .and_then(Option::as_ref)
                .and_then(|b| std::str::from_utf8(b.value_at(i)).ok()),
        }
    }

    /// Every line of a request header as the request arrived (a proxy may add its own line), for
    /// forwarding headers. Edits made through the exchange are not reflected. From the header block; where
    /// the host truncated it (Kong past 100 headers) and the name is not in it, the host's single value.
    pub fn request_header_lines(&mut self, name: &str) -> Vec<String> {
        let (lines, complete) = match self.loaded_block() {
            Some(b) => (
                b.get_all(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect::<Vec<_>>(),
                b.complete(),
            ),
            None => (Vec::new(), false),
        };
        if lines.is_empty() && !complete {
            return self.host.request_header(name).into_iter().collect();
        }
        lines
    }

    /// Every request header, read from the host on first use (`None`: the host cannot hand them out at once).
    fn loaded_block(&mut self) -> Option<&HeaderBlock> {
        self.header_block
            .get_or_insert_with(|| self.host.request_header_block())
            .as_ref()
    }

    /// Whether the header block, already read and complete, shows that the request lacks `name`.
    fn block_lacks(&self, name: &str) -> bool {
        matches!(&self.header_block,
            Some(Some(block)) if block.complete() && block.get(name).is_none())
    }

    fn known_header(&self, name: &str) -> Option<usize> {
        self.request_headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn push_known(&mut self, name: &str, value: Option<String>) -> usize {
        self.request_headers
            .push((name.to_ascii_lowercase(), value));
        self.request_headers.len() - 1
    }

    pub fn method(&mut self) -> Option<&str> {
        self.request_header(":method")
    }

    /// The request target as sent, path and query (`/a/b?x=1`): what the upstream receives. Envoy's
    /// `:path` is that target; ngx_wasm_module's `:path` is nginx's normalised, percent-decoded URI, so there
    /// it comes from `request.path` (nginx's `$request_uri`), until a policy sets `:path`.
    pub fn path_and_query(&mut self) -> Option<&str> {
        if self.on_kong() && self.known_header(":path").is_none() {
            let target = self
                .host
                .property(&["request", "path"])
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            self.push_known(":path", target);
        }
        self.request_header(":path")
    }

    /// The path without the query string.
    pub fn path(&mut self) -> Option<&str> {
        self.path_and_query()
            .map(|p| p.split_once('?').map_or(p, |(path, _)| path))
    }

    /// The raw (still percent-encoded) value of query parameter `name`; the first one wins.
    pub fn query_param(&mut self, name: &str) -> Option<&str> {
        let (_, query) = self.path_and_query()?.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The host the client asked for. Envoy: `:authority`. ngx_wasm_module's `:authority` is the server's
    /// own name and port, so there the client's `Host` header.
    pub fn authority(&mut self) -> Option<&str> {
        if self.on_kong() {
            return self.request_header("host");
        }
        self.request_header(":authority")
    }

    /// Replaces (or with `None` removes) a request header, upstream-visible and visible to later policies.
    /// An edit that does not take effect is recorded ([`Exchange::take_edit_failure`]).
    pub fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        // Removing a header the request is known not to have needs no host call (the usual case for
        // "strip what clients must not send").
        if value.is_some() || !self.known_absent(name) {
            let applied = if self.on_kong() && !name.starts_with(':') {
                self.replace_on_kong(name, value)
            } else {
                self.host.set_request_header(name, value)
            };
            if !applied {
                self.edit_failed(
                    500,
                    format!("the host refused to edit request header {name:?}"),
                );
            }
        }
        self.remember(name, value.map(str::to_owned));
    }

    /// Kong's engine marks a removed request header as deleted, and so does its replace for every line but
    /// the first, yet nginx's proxy module still forwards such lines upstream (ngx_wasm_module
    /// `src/http/ngx_http_wasm_headers.c` sets `hash = 0`; nginx's `ngx_http_proxy_create_request` copies
    /// every line). So there a header is only ever replaced in place: a removal leaves it present and empty,
    /// and a header the request carries on several lines cannot be replaced at all — refused with 400,
    /// never forwarded with the client's values.
    fn replace_on_kong(&mut self, name: &str, value: Option<&str>) -> bool {
        let lines = self.request_header_lines(name).len()
            + self
                .added_request_headers
                .iter()
                .filter(|n| n.eq_ignore_ascii_case(name))
                .count();
        if lines == 0 && value.is_none() {
            return true; // nothing to blank (a replace would create the header)
        }
        if lines > 1 {
            self.edit_failed(
                400,
                format!(
                    "request header {name:?} is sent {lines} times; it must be sent at most once"
                ),
            );
            return true;
        }
        self.host
            .set_request_header(name, Some(value.unwrap_or("")))
    }

    /// Whether the request surely lacks `name`: remembered absent, or missing from the header block.
    fn known_absent(&self, name: &str) -> bool {
        match self.known_header(name) {
            Some(i) => self.request_headers[i].1.is_none(),
            None => self.block_lacks(name),
        }
    }

    /// Appends a request header value.
    pub fn add_request_header(&mut self, name: &str, value: &str) {
        if !self.host.add_request_header(name, value) {
            self.edit_failed(
                500,
                format!("the host refused to add request header {name:?}"),
            );
        }
        if self.on_kong() {
            self.added_request_headers.push(name.to_ascii_lowercase());
        }
        // Only the first value is remembered, and it changes only if the header was known to be absent;
        // a header never read stays unread (reading it now would cost a host call nobody asked for).
        if let Some(i) = self.known_header(name) {
            self.request_headers[i]
                .1
                .get_or_insert_with(|| value.to_owned());
        } else if self.block_lacks(name) {
            self.push_known(name, Some(value.to_owned()));
        }
    }

    fn remember(&mut self, name: &str, value: Option<String>) {
        match self
            .request_headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(entry) => entry.1 = value,
            None => self
                .request_headers
                .push((name.to_ascii_lowercase(), value)),
        }
    }

    pub fn response_header(&mut self, name: &str) -> Option<String> {
        self.host.response_header(name)
    }

    pub fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        if !self.host.set_response_header(name, value) {
            self.edit_failed(
                502,
                format!("the host refused to edit response header {name:?}"),
            );
        }
    }

    pub fn add_response_header(&mut self, name: &str, value: &str) {
        if !self.host.add_response_header(name, value) {
            self.edit_failed(
                502,
                format!("the host refused to add response header {name:?}"),
            );
        }
    }

    /// The directly connected peer's address.
    pub fn peer_ip(&mut self) -> Option<IpAddr> {
        if self.peer_ip.is_none() {
            self.peer_ip = Some(props::peer_ip(self.host.as_ref()));
        }
        self.peer_ip.flatten()
    }

    /// The client's address: the peer, unless a policy resolved a forwarded address (trusted proxies).
    pub fn client_ip(&mut self) -> Option<IpAddr> {
        match self.client_ip {
            Some(ip) => Some(ip),
            None => self.peer_ip(),
        }
    }

    /// [`Exchange::client_ip`] as text, formatted once per request.
    pub fn client_ip_text(&mut self) -> Option<&str> {
        let ip = self.client_ip()?;
        if self
            .client_ip_text
            .as_ref()
            .is_none_or(|(cached, _)| *cached != ip)
        {
            self.client_ip_text = Some((ip, ip.to_string()));
        }
        self.client_ip_text.as_ref().map(|(_, text)| text.as_str())
    }

    /// Records the client address resolved from forwarding headers, for every later policy.
    pub fn set_client_ip(&mut self, ip: IpAddr) {
        self.client_ip = Some(ip);
    }

    /// Envoy: `x-request-id` (Envoy sets it). Kong: the header if present, else nginx's `$request_id`.
    pub fn request_id(&mut self) -> Option<&str> {
        if self.request_id.is_none() {
            let id = match self.request_header("x-request-id") {
                Some(v) => Some(v.to_owned()),
                None => self
                    .host
                    .property(&["ngx", "request_id"])
                    .and_then(|b| props::decode_string(&b)),
            };
            self.request_id = Some(id);
        }
        self.request_id.as_ref().and_then(Option::as_deref)
    }

    /// Envoy route name or Kong route id.
    pub fn route_id(&mut self) -> Option<&str> {
        if self.route_id.is_none() {
            self.route_id = Some(props::route_id(self.host.as_ref()));
        }
        self.route_id.as_ref().and_then(Option::as_deref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_block::HOST_PAIR_LIMIT;
    use crate::testing::{FakeHost, RecordingHost};

    #[test]
    fn all_request_headers_come_from_one_host_call() {
        let host = FakeHost::request("GET", "/a?x=1").with_header("x-user", "alice");
        let mut ex = Exchange::new(Box::new(host.clone()));
        for _ in 0..3 {
            assert_eq!(ex.request_header("X-User"), Some("alice"));
            assert_eq!(ex.request_header("x-missing"), None);
            assert_eq!(ex.method(), Some("GET"));
        }
        assert_eq!(host.state.borrow().header_reads, 1);
    }

    #[test]
    fn removing_a_header_the_request_lacks_costs_no_host_call() {
        let host = RecordingHost::new(FakeHost::request("GET", "/").with_header("x-a", "1"));
        let mut ex = Exchange::new(Box::new(host.clone()));
        ex.set_request_header("x-a", None); // not read yet: the host is asked
        assert_eq!(ex.request_header("x-b"), None);
        ex.set_request_header("x-b", None); // known absent: nothing to do
        ex.set_request_header("x-a", None); // removed already
        ex.set_request_header("X-C", None); // absent from the block
        assert_eq!(host.take(), vec!["set header x-a", "header block"]);
        assert_eq!(ex.request_header("x-a"), None);
    }

    /// Kong hands out at most 100 headers in one map: a header past them must still be seen (a token, a
    /// scanner's user agent) and still be removed (a forged identity header).
    #[test]
    fn headers_past_a_truncated_block_are_still_read_and_removed() {
        let mut host = FakeHost::request("GET", "/").with_header_pair_limit(HOST_PAIR_LIMIT);
        for i in 0..HOST_PAIR_LIMIT {
            host = host.with_header(&format!("x-junk-{i}"), "1");
        }
        let host = host
            .with_header("authorization", "Bearer t")
            .with_header("x-user-id", "forged")
            .with_header("x-forwarded-for", "203.0.113.7");
        let rec = RecordingHost::new(host.clone());
        let mut ex = Exchange::new(Box::new(rec.clone()));
        assert_eq!(ex.request_header("authorization"), Some("Bearer t"));
        ex.set_request_header("x-user-id", None);
        assert_eq!(host.header("x-user-id"), None, "the forged header is gone");
        assert_eq!(
            ex.request_header_lines("x-forwarded-for"),
            vec!["203.0.113.7"]
        );
        assert_eq!(
            rec.take(),
            vec![
                "header block",
                "header authorization",
                "set header x-user-id",
                "header x-forwarded-for"
            ]
        );
    }

    #[test]
    fn without_the_block_each_request_header_is_read_once() {
        let host = FakeHost::request("GET", "/a?x=1")
            .with_header("x-user", "alice")
            .without_header_block();
        let mut ex = Exchange::new(Box::new(host.clone()));
        for _ in 0..3 {
            assert_eq!(ex.request_header("X-User"), Some("alice"));
            assert_eq!(ex.request_header("x-missing"), None);
        }
        assert_eq!(host.state.borrow().header_reads, 2);
    }

    #[test]
    fn pseudo_headers_missing_from_the_block_are_asked_for_alone() {
        let host = FakeHost::new().with_header("x-user", "alice");
        let mut ex = Exchange::new(Box::new(host.clone()));
        assert_eq!(ex.request_header("x-user"), Some("alice"));
        assert_eq!(ex.method(), None);
        assert_eq!(ex.request_header("x-other"), None);
        assert_eq!(
            host.state.borrow().header_reads,
            2,
            "the block, then :method"
        );
    }

    #[test]
    fn invalid_utf8_in_the_block_reads_as_replacement_characters() {
        let host = FakeHost::new();
        host.state
            .borrow_mut()
            .request_headers
            .push(("x-bin".into(), String::new()));
        let block = HeaderBlock::encode([("x-bin", &b"a\xffb"[..])]);
        struct BlockHost(Vec<u8>, FakeHost);
        impl Host for BlockHost {
            fn now(&self) -> Duration {
                self.1.now()
            }
            fn request_header(&self, n: &str) -> Option<String> {
                self.1.request_header(n)
            }
            fn request_header_block(&self) -> Option<HeaderBlock> {
                HeaderBlock::parse(self.0.clone())
            }
            fn set_request_header(&mut self, n: &str, v: Option<&str>) -> bool {
                self.1.set_request_header(n, v)
            }
            fn add_request_header(&mut self, n: &str, v: &str) -> bool {
                self.1.add_request_header(n, v)
            }
            fn response_header(&self, n: &str) -> Option<String> {
                self.1.response_header(n)
            }
            fn set_response_header(&mut self, n: &str, v: Option<&str>) -> bool {
                self.1.set_response_header(n, v)
            }
            fn add_response_header(&mut self, n: &str, v: &str) -> bool {
                self.1.add_response_header(n, v)
            }
            fn request_body(&self, s: usize, l: usize) -> Option<Vec<u8>> {
                self.1.request_body(s, l)
            }
            fn property(&self, p: &[&str]) -> Option<Vec<u8>> {
                self.1.property(p)
            }
            fn set_property(&mut self, p: &[&str], v: &[u8]) -> bool {
                self.1.set_property(p, v)
            }
            fn shared_data(&mut self) -> &mut dyn crate::store::SharedData {
                self.1.shared_data()
            }
        }
        let mut ex = Exchange::new(Box::new(BlockHost(block, host)));
        assert_eq!(ex.request_header("x-bin"), Some("a\u{fffd}b"));
        ex.add_request_header("x-new", "1");
        assert_eq!(
            ex.request_header("x-new"),
            Some("1"),
            "an added header absent from the block"
        );
    }

    #[test]
    fn edits_are_visible_to_later_reads_without_host_calls() {
        let host = FakeHost::request("GET", "/");
        let mut ex = Exchange::new(Box::new(host.clone()));
        ex.set_request_header("x-a", Some("1"));
        assert_eq!(ex.request_header("x-a"), Some("1"));
        ex.set_request_header("x-a", None);
        assert_eq!(ex.request_header("x-a"), None);
        ex.add_request_header("x-b", "first");
        ex.add_request_header("x-b", "second");
        assert_eq!(ex.request_header("x-b"), Some("first"));
        assert_eq!(host.header_values("x-b"), vec!["first", "second"]);
    }

    #[test]
    fn path_query_and_method_come_from_pseudo_headers() {
        let mut ex = Exchange::new(Box::new(FakeHost::request(
            "POST",
            "/v1/orders?id=7&x&id=8",
        )));
        assert_eq!(ex.method(), Some("POST"));
        assert_eq!(ex.path(), Some("/v1/orders"));
        assert_eq!(ex.query_param("id"), Some("7"));
        assert_eq!(ex.query_param("x"), Some(""));
        assert_eq!(ex.query_param("y"), None);
        assert_eq!(ex.authority(), Some("example.test"));
    }

    /// Kong's engine: `:path` is nginx's normalised URI and `:authority` the server's own name; the raw
    /// target (what the upstream gets) and the client's Host are what policies must see.
    #[test]
    fn on_kongs_engine_the_raw_target_and_the_host_header_are_read() {
        let host = FakeHost::kong_request("GET", "/a/%2e%2e/admin?x=1", "/admin");
        let mut ex = Exchange::new(Box::new(host));
        assert_eq!(ex.path_and_query(), Some("/a/%2e%2e/admin?x=1"));
        assert_eq!(ex.path(), Some("/a/%2e%2e/admin"));
        assert_eq!(ex.query_param("x"), Some("1"));
        assert_eq!(ex.authority(), Some("example.test"));
        ex.set_request_header(":path", Some("/b"));
        assert_eq!(ex.path_and_query(), Some("/b"));
    }

    /// nginx forwards request headers ngx_wasm_module marks removed: on Kong's engine a removal empties the
    /// value in place, and a header sent twice cannot be rewritten there, so the request is refused.
    #[test]
    fn on_kongs_engine_removal_empties_the_header_and_repeated_headers_are_refused() {
        let host = FakeHost::kong_request("GET", "/", "/")
            .with_header("authorization", "Bearer secret")
            .with_header("x-user", "forged-1")
            .with_header("x-user", "forged-2");
        let mut ex = Exchange::new(Box::new(host.clone()));
        ex.set_request_header("authorization", None);
        assert_eq!(host.header_values("authorization"), vec![""]);
        assert_eq!(ex.request_header("authorization"), None);
        assert_eq!(ex.take_edit_failure(), None);
        ex.set_request_header("x-absent", None);
        assert_eq!(host.header("x-absent"), None, "no empty header created");

        ex.set_request_header("x-user", Some("alice"));
        let failure = ex
            .take_edit_failure()
            .expect("a repeated header is refused");
        assert_eq!(failure.status, 400);
        assert!(failure.message.contains("x-user"), "{}", failure.message);
    }

    #[test]
    fn an_edit_the_host_refuses_is_reported_once() {
        let host = FakeHost::request("GET", "/")
            .with_header("x-a", "1")
            .refusing_header_edits();
        let mut ex = Exchange::new(Box::new(host));
        ex.set_request_header("x-a", None);
        ex.set_response_header("x-b", Some("2"));
        let failure = ex.take_edit_failure().expect("reported");
        assert_eq!(failure.status, 500);
        assert_eq!(ex.take_edit_failure(), None);
    }

    #[test]
    fn client_ip_is_the_peer_unless_resolved() {
        let host =
            FakeHost::request("GET", "/").with_property(&["source", "address"], b"10.0.0.1:1234");
        let mut ex = Exchange::new(Box::new(host.clone()));
        assert_eq!(ex.client_ip(), "10.0.0.1".parse().ok());
        ex.set_client_ip("203.0.113.9".parse().unwrap());
        assert_eq!(ex.client_ip(), "203.0.113.9".parse().ok());
        assert_eq!(ex.peer_ip(), "10.0.0.1".parse().ok());
        assert_eq!(host.state.borrow().property_reads, 1);
    }

    #[test]
    fn request_id_prefers_the_header_then_the_kong_variable() {
        let mut ex = Exchange::new(Box::new(
            FakeHost::request("GET", "/").with_header("x-request-id", "abc"),
        ));
        assert_eq!(ex.request_id(), Some("abc"));
        let kong = FakeHost::request("GET", "/").with_property(&["ngx", "request_id"], b"f00d");
        let mut ex = Exchange::new(Box::new(kong));
        assert_eq!(ex.request_id(), Some("f00d"));
    }

    #[test]
    fn clock_is_read_once_per_callback() {
        let host = FakeHost::request("GET", "/").at(Duration::from_secs(5));
        let mut ex = Exchange::new(Box::new(host.clone()));
        assert_eq!(ex.now(), Duration::from_secs(5));
        host.state.borrow_mut().now = Duration::from_secs(6);
        assert_eq!(ex.now(), Duration::from_secs(5));
        ex.new_callback();
        assert_eq!(ex.now_us(), 6_000_000);
    }
}
