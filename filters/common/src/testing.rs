//! In-memory host for unit tests of policies, natively and under wasm32-wasip1. Cloning a [`FakeHost`] gives
//! another handle to the same request, so a test can hand one to an `Exchange` and inspect the other.

use crate::host::Host;
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
}

impl MemoryStore {
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
        let current = self.entries.get(key).map_or(0, |v| v.cas);
        if cas != current {
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

impl FakeHost {
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
        self.state
            .borrow_mut()
            .request_headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_response_header(self, name: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .response_headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_property(self, path: &[&str], value: &[u8]) -> Self {
        self.state
            .borrow_mut()
            .properties
            .insert(property_key(path), value.to_vec());
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

    fn request_header(&self, name: &str) -> Option<String> {
        let mut s = self.state.borrow_mut();
        s.header_reads += 1;
        find(&s.request_headers, name).map(str::to_owned)
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        let mut s = self.state.borrow_mut();
        s.header_reads += 1;
        s.request_headers.clone()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.state.borrow_mut().request_headers, name, value);
    }

    fn add_request_header(&mut self, name: &str, value: &str) {
        self.state
            .borrow_mut()
            .request_headers
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    fn response_header(&self, name: &str) -> Option<String> {
        find(&self.state.borrow().response_headers, name).map(str::to_owned)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        set(&mut self.state.borrow_mut().response_headers, name, value);
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        self.state
            .borrow_mut()
            .response_headers
            .push((name.to_ascii_lowercase(), value.to_string()));
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
}
