//! In-memory host for unit tests of policies, natively and under wasm32-wasip1. Cloning a [`FakeHost`] gives
//! another handle to the same request, so a test can hand one to an `Exchange` and inspect the other.

use crate::exchange::Exchange;
use crate::header_block::HeaderBlock;
use crate::host::{Host, RootHost};
use crate::policy::Policy;
use crate::props::Flavor;
use crate::store::{SharedData, StoreError, Versioned};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Shared data with real CAS semantics, plus injected mismatches to exercise retry paths.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: HashMap<String, Versioned>,
    next_cas: u32,
    forced_mismatches: usize,
    /// Envoy's rules instead of the strict ones (see [`MemoryStore::envoy`]).
    envoy_cas: bool,
}

impl MemoryStore {
    /// A store with Envoy's (proxy-wasm-cpp-host's) cas rules: `cas = 0` overwrites an existing key
    /// unconditionally and any cas creates a missing key. The default store follows ngx_wasm_module's strict
    /// rule (the cas must equal the key's, 0 for a missing key).
    pub fn envoy() -> Self {
        MemoryStore {
            envoy_cas: true,
            ..Self::default()
        }
    }
    /// The next `n` writes fail with a CAS mismatch, as if another worker had just written.
    pub fn inject_cas_mismatches(&mut self, n: usize) {
        self.forced_mismatches = n;
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

impl SharedData for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.forced_mismatches > 0 {
            self.forced_mismatches -= 1;
            // a concurrent writer got there first: bump the version like a real write would
            self.next_cas += 1;
            if let Some(v) = self.entries.get_mut(key) {
                v.cas = self.next_cas;
            }
            return Err(StoreError::CasMismatch);
        }
        let current = self.entries.get(key).map(|v| v.cas);
        let accepted = match (self.envoy_cas, current) {
            (true, None) => true,
            (true, Some(c)) => cas == 0 || cas == c,
            (false, c) => cas == c.unwrap_or(0),
        };
        if !accepted {
            return Err(StoreError::CasMismatch);
        }
        self.next_cas += 1;
        self.entries.insert(
            key.to_string(),
            Versioned {
                value: value.to_vec(),
                cas: self.next_cas,
            },
        );
        Ok(())
    }

    fn create(&mut self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        if self.envoy_cas {
            crate::store::create_if_absent(self, key, value)
        } else {
            // the strict rule makes `cas = 0` an atomic create-if-absent (as in ngx_wasm_module): one write
            match self.set(key, value, 0) {
                Ok(()) => Ok(true),
                Err(StoreError::CasMismatch) => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// A [`MemoryStore`] shared between several fake requests (like workers sharing one VM's shared data).
#[derive(Debug, Clone, Default)]
pub struct SharedMemoryStore(pub Rc<RefCell<MemoryStore>>);

impl SharedData for SharedMemoryStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.borrow().get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.0.borrow_mut().set(key, value, cas)
    }
    fn create(&mut self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.0.borrow_mut().create(key, value)
    }
}

#[derive(Debug, Default)]
pub struct FakeRequest {
    pub now: Duration,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub properties: HashMap<String, Vec<u8>>,
    /// Host calls made, by kind, so tests can check a policy reads each value only once.
    pub header_reads: usize,
    pub property_reads: usize,
    /// Callouts made from the request context (tokens count up from 1).
    pub calls: Vec<DispatchedCall>,
    /// When set, the request context's `dispatch_http_call` fails with this message.
    pub dispatch_error: Option<String>,
    /// Behave like a host that cannot hand out all request headers at once.
    pub no_header_block: bool,
    /// Hand out at most this many pairs in the header block, like ngx_wasm_module (100).
    pub header_pair_limit: Option<usize>,
    /// Refuse every header edit, like a host answering an error status.
    pub refuse_header_edits: bool,
    /// Which host this fake stands for (`Unknown`: Envoy's conventions).
    pub flavor: Flavor,
}

#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    pub state: Rc<RefCell<FakeRequest>>,
    pub store: SharedMemoryStore,
}

fn property_key(path: &[&str]) -> String {
    path.join(".")
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    let name = name.to_ascii_lowercase();
    let at = headers.iter().position(|(n, _)| *n == name);
    headers.retain(|(n, _)| *n != name);
    if let Some(v) = value {
        let at = at.unwrap_or(headers.len()).min(headers.len());
        headers.insert(at, (name, v.to_string()));
    }
}

/// Appends a header line, its name lower-cased as both hosts report names.
fn push(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.push((name.to_ascii_lowercase(), value.to_string()));
}

impl FakeHost {
    /// A header edit, unless the fake refuses edits (then it reports the refusal, as a host's status would).
    fn edit(&self, apply: impl FnOnce(&mut FakeRequest)) -> bool {
        let mut s = self.state.borrow_mut();
        if s.refuse_header_edits {
            return false;
        }
        apply(&mut s);
        true
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// A request `GET path` with `:method`, `:path`, `:authority` pseudo-headers, like both hosts present it.
    pub fn request(method: &str, path: &str) -> Self {
        Self::new()
            .with_header(":method", method)
            .with_header(":path", path)
            .with_header(":authority", "example.test")
    }

    pub fn with_header(self, name: &str, value: &str) -> Self {
        push(&mut self.state.borrow_mut().request_headers, name, value);
        self
    }

    pub fn with_response_header(self, name: &str, value: &str) -> Self {
        push(&mut self.state.borrow_mut().response_headers, name, value);
        self
    }

    pub fn with_property(self, path: &[&str], value: &[u8]) -> Self {
        self.state
            .borrow_mut()
            .properties
            .insert(property_key(path), value.to_vec());
        self
    }

    /// A request as Kong's engine (ngx_wasm_module) presents it: `:path` normalised by nginx, the raw target in
    /// the `request.path` property, `:authority` naming the server (not the client's `Host`), which comes as
    /// the `host` header.
    pub fn kong_request(method: &str, raw_target: &str, normalized_path: &str) -> Self {
        let host = Self::new()
            .with_header(":method", method)
            .with_header(":path", normalized_path)
            .with_header(":authority", "gateway:8000")
            .with_header("host", "example.test")
            .with_property(&["request", "path"], raw_target.as_bytes());
        host.state.borrow_mut().flavor = Flavor::Kong;
        host
    }

    /// A host that answers every header edit with an error status.
    pub fn refusing_header_edits(self) -> Self {
        self.state.borrow_mut().refuse_header_edits = true;
        self
    }

    /// Like ngx_wasm_module: the header block holds at most `limit` pairs (the rest are dropped).
    pub fn with_header_pair_limit(self, limit: usize) -> Self {
        self.state.borrow_mut().header_pair_limit = Some(limit);
        self
    }

    /// Like a host without `proxy_get_header_map_pairs`: headers are read one by one.
    pub fn without_header_block(self) -> Self {
        self.state.borrow_mut().no_header_block = true;
        self
    }

    pub fn with_body(self, body: &[u8]) -> Self {
        self.state.borrow_mut().request_body = body.to_vec();
        self
    }

    pub fn with_store(mut self, store: &SharedMemoryStore) -> Self {
        self.store = store.clone();
        self
    }

    pub fn at(self, now: Duration) -> Self {
        self.state.borrow_mut().now = now;
        self
    }

    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.state.borrow().request_headers, name).map(str::to_owned)
    }

    pub fn header_values(&self, name: &str) -> Vec<String> {
        let s = self.state.borrow();
        s.request_headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn response_header_value(&self, name: &str) -> Option<String> {
        find(&self.state.borrow().response_headers, name).map(str::to_owned)
    }

    pub fn property_value(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.state
            .borrow()
            .properties
            .get(&property_key(path))
            .cloned()
    }
}

impl Host for FakeHost {
    fn now(&self) -> Duration {
        self.state.borrow().now
    }

    fn flavor(&self) -> Flavor {
        self.state.borrow().flavor
    }

    fn request_header(&self, name: &str) -> Option<String> {
        let mut s = self.state.borrow_mut();
        s.header_reads += 1;
        find(&s.request_headers, name).map(str::to_owned)
    }

    fn request_header_block(&self) -> Option<HeaderBlock> {
        let mut s = self.state.borrow_mut();
        if s.no_header_block {
            return None;
        }
        s.header_reads += 1;
        let limit = s.header_pair_limit.unwrap_or(usize::MAX);
        HeaderBlock::parse(HeaderBlock::encode(
            s.request_headers
                .iter()
                .take(limit)
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        ))
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
        self.edit(|s| set(&mut s.request_headers, name, value))
    }

    fn add_request_header(&mut self, name: &str, value: &str) -> bool {
        self.edit(|s| push(&mut s.request_headers, name, value))
    }

    fn response_header(&self, name: &str) -> Option<String> {
        find(&self.state.borrow().response_headers, name).map(str::to_owned)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool {
        self.edit(|s| set(&mut s.response_headers, name, value))
    }

    fn add_response_header(&mut self, name: &str, value: &str) -> bool {
        self.edit(|s| push(&mut s.response_headers, name, value))
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        let end = start.saturating_add(len).min(s.request_body.len());
        s.request_body.get(start..end).map(<[u8]>::to_vec)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let mut s = self.state.borrow_mut();
        s.property_reads += 1;
        s.properties.get(&property_key(path)).cloned()
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        self.state
            .borrow_mut()
            .properties
            .insert(property_key(path), value.to_vec());
        true
    }

    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.store
    }

    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let mut state = self.state.borrow_mut();
        if let Some(e) = &state.dispatch_error {
            return Err(e.clone());
        }
        let token = u32::try_from(state.calls.len() + 1).unwrap_or(u32::MAX);
        state.calls.push(DispatchedCall {
            token,
            upstream: upstream.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            authority: authority.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.map(<[u8]>::to_vec),
            timeout,
        });
        Ok(token)
    }
}

/// A [`FakeHost`] that also writes down every host call a request makes, in order (`"header :method"`,
/// `"property source.address"`, `"shared get portcullis/…"`, …): each one crosses the wasm boundary in a real
/// proxy, so tests can hold a chain to a host-call budget.
#[derive(Clone, Default)]
pub struct RecordingHost {
    pub inner: FakeHost,
    pub log: Rc<RefCell<Vec<String>>>,
}

impl RecordingHost {
    pub fn new(inner: FakeHost) -> Self {
        RecordingHost {
            inner,
            log: Rc::default(),
        }
    }

    fn note(&self, call: String) {
        self.log.borrow_mut().push(call);
    }

    /// The calls made so far, emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

impl Host for RecordingHost {
    fn now(&self) -> Duration {
        self.note("now".into());
        self.inner.now()
    }
    fn flavor(&self) -> Flavor {
        self.inner.flavor()
    }
    fn request_header(&self, name: &str) -> Option<String> {
        self.note(format!("header {name}"));
        self.inner.request_header(name)
    }
    fn request_header_block(&self) -> Option<HeaderBlock> {
        self.note("header block".into());
        self.inner.request_header_block()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> bool {
        self.note(format!("set header {name}"));
        self.inner.set_request_header(name, value)
    }
    fn add_request_header(&mut self, name: &str, value: &str) -> bool {
        self.note(format!("add header {name}"));
        self.inner.add_request_header(name, value)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.note(format!("response header {name}"));
        self.inner.response_header(name)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> bool {
        self.note(format!("set response header {name}"));
        self.inner.set_response_header(name, value)
    }
    fn add_response_header(&mut self, name: &str, value: &str) -> bool {
        self.note(format!("add response header {name}"));
        self.inner.add_response_header(name, value)
    }
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.note("request body".into());
        self.inner.request_body(start, len)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.note(format!("property {}", path.join(".")));
        self.inner.property(path)
    }
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool {
        self.note(format!("set property {}", path.join(".")));
        self.inner.set_property(path, value)
    }
    fn shared_data(&mut self) -> &mut dyn SharedData {
        self
    }
    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        self.note(format!("http call {upstream}"));
        self.inner
            .dispatch_http_call(upstream, method, path, authority, headers, body, timeout)
    }
}

impl SharedData for RecordingHost {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.note(format!("shared get {key}"));
        self.inner.store.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let result = self.inner.store.set(key, value, cas);
        match &result {
            Ok(()) => self.note(format!("shared set {key}")),
            Err(e) => self.note(format!("shared set {key} (failed: {e})")),
        }
        result
    }
}

/// A callout recorded by [`FakeRootHost`] (or by a [`FakeHost`] request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchedCall {
    pub token: u32,
    pub upstream: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// In-memory root context for tests of `on_start`/`on_tick`/`on_callout_response`: records every callout
/// (tokens count up from 1) and every `wake_paused`. Share `store` with [`FakeHost`]s (`with_store`) to model
/// one VM's shared data seen by the root and by requests.
#[derive(Debug, Default)]
pub struct FakeRootHost {
    pub now: Duration,
    pub store: SharedMemoryStore,
    pub calls: Vec<DispatchedCall>,
    /// How many times the policy asked to resume its paused requests.
    pub wakes: usize,
    /// When set, `dispatch_http_call` fails with this message (unknown cluster, …).
    pub dispatch_error: Option<String>,
    next_token: u32,
}

impl FakeRootHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn at(mut self, now: Duration) -> Self {
        self.now = now;
        self
    }

    pub fn with_store(mut self, store: &SharedMemoryStore) -> Self {
        self.store = store.clone();
        self
    }

    /// The most recent callout, if any.
    pub fn last_call(&self) -> Option<&DispatchedCall> {
        self.calls.last()
    }
}

impl RootHost for FakeRootHost {
    fn now(&self) -> Duration {
        self.now
    }

    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.store
    }

    fn dispatch_http_call(
        &mut self,
        upstream: &str,
        method: &str,
        path: &str,
        authority: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        if let Some(e) = &self.dispatch_error {
            return Err(e.clone());
        }
        self.next_token += 1;
        self.calls.push(DispatchedCall {
            token: self.next_token,
            upstream: upstream.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            authority: authority.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.map(<[u8]>::to_vec),
            timeout,
        });
        Ok(self.next_token)
    }

    fn wake_paused(&mut self) {
        self.wakes += 1;
    }
}

/// A fixed clock for benchmarks and tests that need a realistic date: 2027-01-15.
pub const FIXED_NOW: Duration = Duration::from_secs(1_800_000_000);

/// A typical API request from 127.0.0.1 on Envoy (user agent, accept, request id, route, response code),
/// at [`FIXED_NOW`]: the common starting point of the policies' micro-benchmarks.
pub fn typical_request() -> FakeHost {
    FakeHost::request("GET", "/orders?id=7")
        .with_header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .with_header("accept", "application/json")
        .with_header("x-request-id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
        .with_property(&["source", "address"], b"127.0.0.1:40000")
        .with_property(&["xds", "route_name"], b"orders")
        .with_property(&["response", "code"], &200u64.to_le_bytes())
        .at(FIXED_NOW)
}

/// Builds a policy from its JSON config, panicking with the config error (tests and benchmarks only).
pub fn configured<P: Policy>(json: &str) -> P {
    match P::configure(json.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("config: {e}"),
    }
}

/// Runs one request on `host` through `f` with a fresh `Exchange` and state, as the adapter does per request.
pub fn run_request<P: Policy>(
    policy: &P,
    host: FakeHost,
    f: impl Fn(&P, &mut P::State, &mut Exchange),
) -> P::State {
    let mut ex = Exchange::new(Box::new(host));
    let mut state = P::State::default();
    f(policy, &mut state, &mut ex);
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Decision;
    use crate::exchange::Exchange;
    use crate::host::CalloutResponse;
    use crate::policy::Policy;
    use crate::ConfigError;
    use std::cell::{Cell, RefCell};

    /// A policy using every root hook: fetches a value on start, stores it in shared data when the callout
    /// answers, pauses requests until then.
    #[derive(Default)]
    struct Fetcher {
        pending: Cell<Option<u32>>,
        value: RefCell<Option<Vec<u8>>>,
    }

    impl Policy for Fetcher {
        const NAME: &'static str = "fetcher";
        type State = ();
        fn configure(_: &[u8]) -> Result<Self, ConfigError> {
            Ok(Fetcher::default())
        }
        fn tick_period(&self) -> Option<Duration> {
            Some(Duration::from_secs(30))
        }
        fn on_start(&self, root: &mut dyn RootHost) {
            let token = root.dispatch_http_call(
                "keys",
                "GET",
                "/v?x=1",
                "keys.test",
                &[("accept", "text/plain")],
                None,
                Duration::from_secs(2),
            );
            self.pending.set(token.ok());
        }
        fn on_callout_response(
            &self,
            root: &mut dyn RootHost,
            token: u32,
            response: Option<CalloutResponse>,
        ) {
            if self.pending.get() != Some(token) {
                return;
            }
            if let Some(r) = response.filter(|r| r.status == 200) {
                let _ = root.shared_data().set("portcullis/fetcher", &r.body, 0);
                *self.value.borrow_mut() = Some(r.body);
                root.wake_paused();
            }
        }
        fn on_request_headers(&self, _: &mut (), _: &mut Exchange) -> Decision {
            if self.value.borrow().is_some() {
                Decision::Continue
            } else {
                Decision::Pause
            }
        }
        fn on_resume(&self, _: &mut (), _: &mut Exchange, timed_out: bool) -> Decision {
            match (self.value.borrow().is_some(), timed_out) {
                (true, _) => Decision::Continue,
                (false, true) => {
                    Decision::Respond(crate::LocalResponse::json_error(503, "no value"))
                }
                (false, false) => Decision::Pause,
            }
        }
    }

    #[test]
    fn fake_root_records_callouts_and_wakes() {
        let store = SharedMemoryStore::default();
        let mut root = FakeRootHost::new()
            .at(Duration::from_secs(9))
            .with_store(&store);
        let p = Fetcher::configure(b"").unwrap();
        assert_eq!(p.tick_period(), Some(Duration::from_secs(30)));
        p.on_start(&mut root);
        let call = root.last_call().unwrap().clone();
        assert_eq!(
            (call.token, call.upstream.as_str(), call.method.as_str()),
            (1, "keys", "GET")
        );
        assert_eq!(
            (call.path.as_str(), call.authority.as_str()),
            ("/v?x=1", "keys.test")
        );
        assert_eq!(
            call.headers,
            vec![("accept".to_string(), "text/plain".to_string())]
        );
        assert_eq!(call.timeout, Duration::from_secs(2));

        let mut ex = Exchange::new(Box::new(FakeHost::request("GET", "/").with_store(&store)));
        assert_eq!(p.on_request_headers(&mut (), &mut ex), Decision::Pause);
        assert_eq!(p.on_resume(&mut (), &mut ex, false), Decision::Pause);

        // an answer to an unknown token changes nothing
        p.on_callout_response(&mut root, 99, None);
        assert_eq!(root.wakes, 0);
        let ok = CalloutResponse {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"v1".to_vec(),
        };
        assert_eq!(ok.header("content-type"), Some("text/plain"));
        p.on_callout_response(&mut root, 1, Some(ok));
        assert_eq!(root.wakes, 1);
        assert_eq!(p.on_resume(&mut (), &mut ex, false), Decision::Continue);
        // the request side sees what the root stored: one VM, one store
        let seen = ex.host().shared_data().get("portcullis/fetcher").unwrap();
        assert_eq!(seen.map(|v| v.value), Some(b"v1".to_vec()));
    }

    #[test]
    fn a_refused_dispatch_is_an_error_not_a_token() {
        let mut root = FakeRootHost {
            dispatch_error: Some("unknown cluster".into()),
            ..FakeRootHost::default()
        };
        let p = Fetcher::configure(b"").unwrap();
        p.on_start(&mut root);
        assert!(root.calls.is_empty());
        assert_eq!(p.pending.get(), None);
        let mut ex = Exchange::new(Box::new(FakeHost::request("GET", "/")));
        assert!(matches!(
            p.on_resume(&mut (), &mut ex, true),
            Decision::Respond(r) if r.status == 503
        ));
    }

    /// A policy that uses none of the hooks keeps the no-op defaults.
    struct Plain;
    impl Policy for Plain {
        const NAME: &'static str = "plain";
        type State = ();
        fn configure(_: &[u8]) -> Result<Self, ConfigError> {
            Ok(Plain)
        }
    }

    #[test]
    fn root_hooks_default_to_no_ops() {
        let mut root = FakeRootHost::new();
        let p = Plain;
        assert_eq!(p.tick_period(), None);
        assert_eq!(p.max_pause(), Duration::from_secs(5));
        p.on_start(&mut root);
        p.on_tick(&mut root);
        p.on_callout_response(&mut root, 1, None);
        assert!(root.calls.is_empty() && root.wakes == 0);
        let mut ex = Exchange::new(Box::new(FakeHost::request("GET", "/")));
        assert_eq!(p.on_resume(&mut (), &mut ex, true), Decision::Continue);
    }
}
