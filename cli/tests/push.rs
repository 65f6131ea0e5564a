//! `portcullis push` against an in-process fake of Kong's Admin API. The fake keeps services, routes and
//! filter chains and answers with the request shapes Kong's own Admin API spec uses
//! (spec/02-integration/20-wasm/01-admin-api_spec.lua: `POST /routes/{id}/filter-chains` → 201,
//! `PATCH /filter-chains/{id}` → 200, `DELETE /filter-chains/{id}` → 204, collections as `{data, next}`),
//! pages collections two entities at a time, and can fail chosen requests.

use portcullis_cli::http::BaseUrl;
use portcullis_cli::policy::{load_str, PolicyFile};
use portcullis_cli::push::{self, Action, Options, Report, Status};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    services: Vec<Value>,
    routes: Vec<Value>,
    chains: Vec<Value>,
    /// (method, path, body) of every request, in order.
    log: Vec<(String, String, Value)>,
    /// "METHOD path" → (status, remaining times) to answer instead of handling.
    faults: BTreeMap<String, (u16, u32)>,
    next_id: u32,
}

struct FakeKong {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeKong {
    fn start() -> FakeKong {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &s);
            }
        });
        FakeKong { addr, state }
    }

    fn options(&self, dry_run: bool) -> Options {
        Options {
            admin: BaseUrl::parse(&format!("http://{}", self.addr)).expect("url"),
            dry_run,
            retries: 3,
            backoff: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
        }
    }

    fn writes(&self) -> Vec<(String, String, Value)> {
        let st = self.state.lock().expect("lock");
        st.log
            .iter()
            .filter(|(m, _, _)| m != "GET")
            .cloned()
            .collect()
    }

    fn clear_log(&self) {
        self.state.lock().expect("lock").log.clear();
    }

    fn fault(&self, method: &str, path: &str, status: u16, times: u32) {
        self.state
            .lock()
            .expect("lock")
            .faults
            .insert(format!("{method} {path}"), (status, times));
    }

    fn entity(&self, kind: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().expect("lock");
        let list = match kind {
            "services" => &st.services,
            "routes" => &st.routes,
            _ => &st.chains,
        };
        list.iter().find(|e| e["name"] == name).cloned()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, reply) = handle(&mut state.lock().expect("lock"), &method, &target, body);
    let text = if reply.is_null() {
        String::new()
    } else {
        reply.to_string()
    };
    let mut out = stream;
    // Chunked, as Kong (OpenResty) answers.
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{text}\r\n0\r\n\r\n",
        text.len()
    );
}

fn handle(st: &mut State, method: &str, target: &str, body: Value) -> (u16, Value) {
    st.log
        .push((method.to_string(), target.to_string(), body.clone()));
    let key = format!("{method} {target}");
    if let Some((status, left)) = st.faults.get_mut(&key) {
        if *left > 0 {
            *left -= 1;
            return (*status, json!({"message": "injected failure"}));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let offset: usize = query
        .strip_prefix("offset=")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    st.next_id += 1;
    let new_id = format!("00000000-0000-4000-8000-{:012}", st.next_id);
    let list = |st: &State, coll: &str| -> Vec<Value> {
        match coll {
            "services" => st.services.clone(),
            "routes" => st.routes.clone(),
            _ => st.chains.clone(),
        }
    };
    match (method, segs.as_slice()) {
        ("GET", [coll @ ("services" | "routes" | "filter-chains")]) => {
            let all = list(st, coll);
            let page: Vec<Value> = all.iter().skip(offset).take(2).cloned().collect();
            let next = if offset + 2 < all.len() {
                json!(format!("/{coll}?offset={}", offset + 2))
            } else {
                Value::Null
            };
            (200, json!({ "data": page, "next": next }))
        }
        ("PUT", ["services", name]) => {
            let mut e = body;
            let id = st
                .services
                .iter()
                .find(|s| s["name"] == *name)
                .map(|s| s["id"].clone())
                .unwrap_or(json!(new_id));
            e["id"] = id;
            st.services.retain(|s| s["name"] != *name);
            st.services.push(e.clone());
            (200, e)
        }
        ("PUT", ["routes", name]) => {
            let sid = &body["service"]["id"];
            if !st.services.iter().any(|s| &s["id"] == sid) {
                return (
                    400,
                    json!({"message": "schema violation (service.id: does not exist)"}),
                );
            }
            let mut e = body;
            let id = st
                .routes
                .iter()
                .find(|r| r["name"] == *name)
                .map(|r| r["id"].clone())
                .unwrap_or(json!(new_id));
            e["id"] = id;
            st.routes.retain(|r| r["name"] != *name);
            st.routes.push(e.clone());
            (200, e)
        }
        ("POST", ["routes", rid, "filter-chains"]) => {
            if !st.routes.iter().any(|r| r["id"] == *rid) {
                return (404, json!({"message": "Not found"}));
            }
            let mut e = body;
            e["id"] = json!(new_id);
            e["route"] = json!({ "id": rid });
            e["service"] = Value::Null;
            st.chains.push(e.clone());
            (201, e)
        }
        ("PATCH", ["filter-chains", id]) => match st.chains.iter_mut().find(|c| c["id"] == *id) {
            Some(c) => {
                if let (Some(c), Some(b)) = (c.as_object_mut(), body.as_object()) {
                    for (k, v) in b {
                        c.insert(k.clone(), v.clone());
                    }
                }
                (200, c.clone())
            }
            None => (404, json!({"message": "Not found"})),
        },
        ("DELETE", [coll, id]) => {
            if *coll == "services" && st.routes.iter().any(|r| r["service"]["id"] == *id) {
                return (
                    400,
                    json!({"message": "an existing 'routes' entity references this 'services' entity"}),
                );
            }
            if *coll == "routes" && st.chains.iter().any(|c| c["route"]["id"] == *id) {
                return (
                    400,
                    json!({"message": "an existing 'filter_chains' entity references this 'routes' entity"}),
                );
            }
            let l = match *coll {
                "services" => &mut st.services,
                "routes" => &mut st.routes,
                "filter-chains" => &mut st.chains,
                _ => return (405, Value::Null),
            };
            l.retain(|e| e["id"] != *id);
            (204, Value::Null)
        }
        _ => (405, json!({"message": "Method not allowed"})),
    }
}

const POLICY: &str = "
upstreams:
  orders: { url: 'http://10.0.0.5:8080' }
  idp: { url: 'https://idp.example.com', connect_timeout_ms: 2000 }
routes:
  - name: read
    match: { path: /orders, methods: [GET] }
    upstream: orders
    chain:
      - filter: rate-limit
        config: { limits: [ { name: per_ip, rate: 5, per: 1s } ] }
  - name: write
    match: { path: /orders, methods: [POST], host: api.example.com }
    upstream: orders
    chain:
      - filter: headers
        config: { request: { set: [ { name: x-a, value: '1' } ] } }
  - name: health
    match: { path: /healthz, headers: { x-probe: 'yes' } }
    upstream: orders
";

fn policy(text: &str) -> PolicyFile {
    load_str("test.yaml", text, &|_| None)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .policy
}

fn run(kong: &FakeKong, text: &str, dry_run: bool) -> Report {
    push::push(&policy(text), &kong.options(dry_run)).unwrap_or_else(|e| panic!("{e}"))
}

fn actions(r: &Report) -> Vec<(String, String, Action)> {
    r.changes
        .iter()
        .map(|c| (c.kind.to_string(), c.name.clone(), c.action))
        .collect()
}

#[test]
fn first_push_creates_services_then_routes_then_chains_with_kong_request_shapes() {
    let kong = FakeKong::start();
    let report = run(&kong, POLICY, false);
    assert_eq!(report.failed(), 0, "{}", push::describe(&report));
    let writes = kong.writes();
    let order: Vec<String> = writes.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    let service_orders = kong.entity("services", "orders").expect("service created");
    let read = kong.entity("routes", "read").expect("route created");
    let write = kong.entity("routes", "write").expect("route created");
    assert_eq!(
        order,
        vec![
            "PUT /services/idp".to_string(),
            "PUT /services/orders".into(),
            "PUT /routes/read".into(),
            "PUT /routes/write".into(),
            "PUT /routes/health".into(),
            format!(
                "POST /routes/{}/filter-chains",
                read["id"].as_str().unwrap_or("")
            ),
            format!(
                "POST /routes/{}/filter-chains",
                write["id"].as_str().unwrap_or("")
            ),
        ]
    );
    // Service: url split the way Kong stores it, tagged as ours.
    assert_eq!(
        writes[1].2,
        json!({"name": "orders", "protocol": "http", "host": "10.0.0.5", "port": 8080, "path": null,
               "connect_timeout": 1000, "tags": ["portcullis"]})
    );
    assert_eq!(
        kong.entity("services", "idp").expect("idp")["protocol"],
        "https"
    );
    // Route: references the service by the id Kong assigned; matches as Kong fields.
    assert_eq!(write["service"]["id"], service_orders["id"]);
    assert_eq!(write["hosts"], json!(["api.example.com"]));
    assert_eq!(write["methods"], json!(["POST"]));
    assert_eq!(write["strip_path"], json!(false));
    assert_eq!(
        kong.entity("routes", "health").expect("health")["headers"],
        json!({"x-probe": ["yes"]})
    );
    // Chain: named after the route, config as a JSON object.
    assert_eq!(
        writes[5].2,
        json!({"name": "read", "enabled": true, "tags": ["portcullis"], "filters": [
            {"name": "portcullis_rate_limit", "enabled": true, "config": {"limits": [{"name": "per_ip", "rate": 5, "per": "1s"}]}}
        ]})
    );
    // A route without a chain gets none.
    assert!(kong.entity("filter-chains", "health").is_none());
}

#[test]
fn a_second_push_of_the_same_policy_writes_nothing() {
    let kong = FakeKong::start();
    run(&kong, POLICY, false);
    kong.clear_log();
    let report = run(&kong, POLICY, false);
    assert!(kong.writes().is_empty(), "{:?}", kong.writes());
    assert!(report
        .changes
        .iter()
        .all(|c| c.action == Action::Unchanged && c.status == Status::Ok));
    assert_eq!(report.changes.len(), 2 + 3 + 2);
    // Paging: 3 routes at 2 per page means the second page was read.
    let gets: Vec<String> = kong
        .state
        .lock()
        .expect("lock")
        .log
        .iter()
        .map(|l| l.1.clone())
        .collect();
    assert!(gets.contains(&"/routes?offset=2".to_string()), "{gets:?}");
}

#[test]
fn edits_are_diffed_and_dry_run_changes_nothing() {
    let kong = FakeKong::start();
    run(&kong, POLICY, false);
    kong.clear_log();
    // read: new rate; write: removed; health: new path.
    let edited = POLICY
        .replace("rate: 5", "rate: 7")
        .replace("path: /healthz", "path: /health");
    let start = edited.find("  - name: write").expect("write route");
    let end = edited.find("  - name: health").expect("health route");
    let edited = format!("{}{}", &edited[..start], &edited[end..]);

    let plan = run(&kong, &edited, true);
    assert!(
        kong.writes().is_empty(),
        "dry run wrote: {:?}",
        kong.writes()
    );
    assert!(plan
        .changes
        .iter()
        .all(|c| c.status == Status::Planned || c.action == Action::Unchanged));
    let changed: Vec<_> = actions(&plan)
        .into_iter()
        .filter(|a| a.2 != Action::Unchanged)
        .collect();
    let expected = vec![
        ("route".to_string(), "health".to_string(), Action::Update),
        ("filter_chain".into(), "read".into(), Action::Update),
        ("filter_chain".into(), "write".into(), Action::Delete),
        ("route".into(), "write".into(), Action::Delete),
    ];
    assert_eq!(changed, expected);
    let health = plan
        .changes
        .iter()
        .find(|c| c.name == "health")
        .expect("health");
    assert_eq!(health.fields, vec!["paths".to_string()]);

    let report = run(&kong, &edited, false);
    assert_eq!(report.failed(), 0, "{}", push::describe(&report));
    let chain = kong.entity("filter-chains", "read").expect("chain");
    let order: Vec<String> = kong
        .writes()
        .iter()
        .map(|(m, p, _)| format!("{m} {}", p.split('/').nth(1).unwrap_or("")))
        .collect();
    assert_eq!(
        order,
        vec![
            "PUT routes",
            "PATCH filter-chains",
            "DELETE filter-chains",
            "DELETE routes"
        ]
    );
    assert_eq!(chain["filters"][0]["config"]["limits"][0]["rate"], 7);
    assert!(kong.entity("routes", "write").is_none());
    assert_eq!(
        kong.entity("routes", "health").expect("health")["paths"],
        json!(["/health"])
    );
    // And now it is in sync.
    kong.clear_log();
    run(&kong, &edited, false);
    assert!(kong.writes().is_empty());
}

#[test]
fn transient_errors_are_retried_with_backoff() {
    let kong = FakeKong::start();
    kong.fault("PUT", "/services/orders", 503, 2);
    let report = run(&kong, POLICY, false);
    assert_eq!(report.failed(), 0, "{}", push::describe(&report));
    let attempts = kong
        .writes()
        .iter()
        .filter(|(m, p, _)| m == "PUT" && p == "/services/orders")
        .count();
    assert_eq!(attempts, 3);
}

#[test]
fn a_failed_route_is_reported_and_its_chain_skipped() {
    let kong = FakeKong::start();
    kong.fault("PUT", "/routes/read", 400, 99);
    let report = run(&kong, POLICY, false);
    let by_name = |kind: &str, name: &str| {
        report
            .changes
            .iter()
            .find(|c| c.kind == kind && c.name == name)
            .map(|c| c.status)
    };
    assert_eq!(by_name("route", "read"), Some(Status::Failed));
    assert_eq!(by_name("filter_chain", "read"), Some(Status::Skipped));
    assert_eq!(by_name("route", "write"), Some(Status::Ok));
    assert_eq!(by_name("filter_chain", "write"), Some(Status::Ok));
    assert_eq!(report.failed(), 2);
    // 4xx is not retried.
    let attempts = kong
        .writes()
        .iter()
        .filter(|(_, p, _)| p == "/routes/read")
        .count();
    assert_eq!(attempts, 1);
    let error = report
        .changes
        .iter()
        .find(|c| c.name == "read" && c.kind == "route")
        .and_then(|c| c.error.clone());
    assert!(error.is_some_and(|e| e.contains("HTTP 400") && e.contains("injected failure")));
}

#[test]
fn the_command_prints_a_json_report_and_exits_3_on_failures() {
    let kong = FakeKong::start();
    let dir = std::env::temp_dir().join(format!("portcullis-push-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("p.yaml");
    std::fs::write(&file, POLICY).expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .env("PORTCULLIS_PUSH_BACKOFF_MS", "1")
            .output()
            .expect("run")
    };
    let url = format!("http://{}", kong.addr);
    let f = file.to_string_lossy().to_string();
    let out = run(&[
        "push",
        &f,
        "--kong-admin",
        &url,
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        report["changes"][0],
        json!({"kind": "service", "name": "idp", "action": "create", "status": "planned"})
    );
    assert!(kong.writes().is_empty());

    kong.fault("PUT", "/services/idp", 500, 99);
    let out = run(&["push", &f, "--kong-admin", &url, "--retries", "1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("service       idp") && text.contains("FAILED"),
        "{text}"
    );

    // Nothing listening: exit 2.
    let out = run(&[
        "push",
        &f,
        "--kong-admin",
        "http://127.0.0.1:1",
        "--retries",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
