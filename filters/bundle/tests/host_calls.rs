//! Every host call crosses the wasm boundary (~0.3–0.7 µs each in Envoy's V8, more than most policies'
//! own work), so the chain the benchmark runs is held to a budget of host calls per request.
//! Native only: linked as a test binary for wasm32, the bundle would export its filter entry point, which a
//! WASI command must not have.
#![cfg(not(target_arch = "wasm32"))]

use jwt_simple::prelude::*;
use portcullis_bundle::BundlePolicy;
use portcullis_common::chain::ChainState;
use portcullis_common::testing::{FakeHost, MemoryStore, RecordingHost, SharedMemoryStore};
use portcullis_common::{metrics, Exchange, Policy};
use std::cell::RefCell;
use std::rc::Rc;

const SECRET: &[u8] = b"portcullis-bench-hs256-secret-0123456789";

fn token() -> String {
    let key = HS256Key::from_bytes(SECRET);
    let claims = Claims::create(jwt_simple::prelude::Duration::from_hours(1))
        .with_issuer("https://issuer.bench.test/")
        .with_audience("bench-api");
    key.authenticate(claims).unwrap()
}

/// The benchmark's chain (scripts/bench `chain/bundle`), with an HS256 key instead of RS256.
fn bench_chain() -> BundlePolicy {
    let config = serde_json::json!({"chain": [
        {"policy": "request-guard", "config": {
            "ip": {"deny": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]},
            "user_agent": {"deny": ["(?i)(sqlmap|nikto|nmap|masscan|zgrab|nuclei|dirbuster|gobuster)"]}}},
        {"policy": "jwt-auth", "config": {"providers": [{
            "name": "bench", "issuer": "https://issuer.bench.test/", "audiences": ["bench-api"],
            "algorithms": ["HS256"], "secret": std::str::from_utf8(SECRET).unwrap()}]}},
        {"policy": "rate-limit", "config": {"limits": [{
            "name": "per_ip", "key": "${client_ip}", "rate": 1_000_000_000u64, "per": "1s", "burst": 1_000_000_000u64}],
            "headers": false}},
        {"policy": "headers", "config": {
            "request": {"remove": ["x-internal"], "set": [{"name": "x-client-ip", "value": "${client_ip}"}],
                        "add": [{"name": "x-via", "value": "portcullis"}]},
            "response": {"set": [{"name": "x-served-by", "value": "portcullis"}]}}},
        {"policy": "metrics", "config": {}}
    ]});
    BundlePolicy::configure(config.to_string().as_bytes()).unwrap()
}

fn bench_request(token: &str, store: &SharedMemoryStore) -> FakeHost {
    FakeHost::request("GET", "/bench")
        .with_store(store)
        .with_header(":authority", "127.0.0.1:10000")
        .with_header(":scheme", "http")
        .with_header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .with_header("x-internal", "1")
        .with_header("authorization", &format!("Bearer {token}"))
        .with_header("x-forwarded-proto", "http")
        .with_header("x-request-id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
        .with_response_header(":status", "200")
        .with_property(&["source", "address"], b"127.0.0.1:40000")
        .with_property(&["xds", "route_name"], b"bench")
        .with_property(&["response", "code"], &200u64.to_le_bytes())
        .with_property(&["request", "total_size"], &420u64.to_le_bytes())
        .with_property(&["response", "total_size"], &90u64.to_le_bytes())
        .at(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap())
}

/// One request through the chain as the adapter runs it; returns the host calls of each phase.
fn run(chain: &BundlePolicy, host: FakeHost) -> [(Vec<String>, u64); 3] {
    let rec = RecordingHost::new(host);
    let mut ex = Exchange::new(Box::new(rec.clone()));
    let mut state = ChainState::default();
    let m0 = metrics::updates_made();
    let decision = chain.on_request_headers(&mut state, &mut ex);
    assert_eq!(decision, portcullis_common::Decision::Continue);
    let request = (rec.take(), metrics::updates_made() - m0);
    ex.new_callback();
    let m1 = metrics::updates_made();
    chain.on_response_headers(&mut state, &mut ex);
    let response = (rec.take(), metrics::updates_made() - m1);
    ex.new_callback();
    let m2 = metrics::updates_made();
    chain.on_log(&mut state, &mut ex);
    let log = (rec.take(), metrics::updates_made() - m2);
    [request, response, log]
}

/// The host calls of a request after the first (which fills the caches and creates the counters).
fn steady_state_request() -> [(Vec<String>, u64); 3] {
    let chain = bench_chain();
    let token = token();
    let store = SharedMemoryStore(Rc::new(RefCell::new(MemoryStore::envoy())));
    run(&chain, bench_request(&token, &store));
    run(&chain, bench_request(&token, &store))
}

/// Calls that return data cost the most (~0.6 µs in Envoy 1.40: the host calls back into the module to
/// allocate the answer); calls that only pass data in cost ~0.1–0.3 µs (`scripts/bench --only probe`).
fn returns_data(call: &str) -> bool {
    ["header", "property", "shared get", "response header"]
        .iter()
        .any(|kind| call.starts_with(kind))
}

#[test]
fn the_benchmark_chain_stays_within_its_host_call_budget() {
    let phases = steady_state_request();
    let mut all = Vec::new();
    let mut metric_updates = 0;
    for ((calls, updates), phase) in phases.iter().zip(["request", "response", "log"]) {
        println!(
            "{phase}: {} host calls + {updates} metric updates",
            calls.len()
        );
        for c in calls {
            println!("    {c}");
        }
        all.extend(calls.iter().cloned());
        metric_updates += updates;
    }
    let reads: Vec<&String> = all.iter().filter(|c| returns_data(c)).collect();
    for (i, read) in reads.iter().enumerate() {
        assert!(!reads[..i].contains(read), "{read} read twice: {all:#?}");
    }
    // all request headers in one read; source.address, the rate-limit slot, the route name, the status
    assert!(reads.len() <= 5, "{} reads: {reads:#?}", reads.len());
    // counters are flushed on the timer; the duration histogram is the one update per request
    assert!(metric_updates <= 1, "{metric_updates} metric updates");
    assert!(
        all.len() + metric_updates as usize <= 14,
        "{} host calls + {metric_updates} metric updates: {all:#?}",
        all.len()
    );
}

/// `scripts/bench`'s `chain/host-calls-only` prices this chain's host traffic by having the empty filter make
/// the steps of `bench/chain-host-calls.txt`; that list must stay what the bundle really does.
#[test]
fn the_benchmark_floor_makes_the_same_host_calls_as_the_bundle() {
    let steps = include_str!("../../../bench/chain-host-calls.txt");
    let phases = steady_state_request();
    for ((calls, updates), phase) in phases.iter().zip(["request", "response", "log"]) {
        let mut expected = Vec::new();
        let mut histograms = 0;
        for step in steps.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let words: Vec<&str> = step.split_whitespace().collect();
            if words[0] != phase {
                continue;
            }
            let on_response = if phase == "request" { "" } else { "response " };
            // RecordingHost's names for the calls (a removal is a `set` to nothing; shared keys differ)
            expected.push(match words[1..] {
                ["property", path] => format!("property {path}"),
                ["headers"] => "header block".to_string(),
                ["now"] => "now".to_string(),
                ["remove", name] | ["set", name, _] => format!("set {on_response}header {name}"),
                ["add", name, _] => format!("add {on_response}header {name}"),
                ["shared-get", _] => "shared get".to_string(),
                ["shared-set", _] => "shared set".to_string(),
                ["histogram"] => {
                    histograms += 1;
                    continue;
                }
                _ => panic!("unknown step {step:?}"),
            });
        }
        let made: Vec<String> = calls
            .iter()
            .map(|c| match c.strip_prefix("shared ") {
                Some(rest) => format!("shared {}", rest.split(' ').next().unwrap_or_default()),
                None => c.clone(),
            })
            .collect();
        assert_eq!(made, expected, "{phase} phase");
        assert_eq!(*updates, histograms, "{phase} phase metric updates");
    }
}
