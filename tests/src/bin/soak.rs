//! `scripts/soak [minutes]`: the full filter chain in a real Envoy under mixed valid and invalid load for
//! `minutes`, with 100 000 distinct client keys. Records Envoy's allocated memory (admin `/memory`) after a
//! warm-up and at the end, and writes bench/SOAK.md. Exits non-zero when memory grew more than 10% after the
//! warm-up, Envoy stopped answering, a wasm VM failed or a filter panicked.

use portcullis_e2e::client::send_raw;
use portcullis_e2e::{json, paths, Gateway};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;
const CLIENTS: usize = 4;
/// HS256 for the jwt-auth config below (secret, issuer, audience, scope); exp in 2030.
const TOKEN: &str = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAiaHR0cHM6Ly9kZW1vLnBvcnRjdWxsaXMudGVzdC8iLCAiYXVkIjogIm9yZGVycy1hcGkiLCAic3ViIjogInUxIiwgInNjb3BlIjogIm9yZGVyczpyZWFkIiwgInRlbmFudCI6IHsiaWQiOiAidDEifSwgImV4cCI6IDE5MDAwMDAwMDAsICJpYXQiOiAxNzAwMDAwMDAwfQ.Ht7MmMliBY0_6SP22n96N6qZa4wIGjhNkd0AFOyUlls";

fn gateway() -> Gateway {
    let client_ip = json!({"source": "x_forwarded_for", "trusted_proxies": ["127.0.0.1/32"]});
    Gateway::new()
        .filter("request-guard", json!({"client_ip": client_ip, "ip": {"deny": ["203.0.113.0/24"]},
                                        "body": {"max_bytes": "16KiB"}}))
        .filter("rate-limit", json!({"client_ip": client_ip, "max_keys": 10000,
                 "limits": [{"name": "per_ip", "key": "${client_ip}", "rate": 5, "per": "1s", "burst": 5}]}))
        .filter("tracing", json!({"sample_ratio": 0.5}))
        .filter("jwt-auth", json!({"allow_missing": true, "providers": [{"name": "demo",
                 "issuer": "https://demo.portcullis.test/", "audiences": ["orders-api"], "algorithms": ["HS256"],
                 "secret": "portcullis-demo-secret-0123456789abcdef"}],
                 "claims_to_headers": [{"claim": "sub", "header": "x-user"}]}))
        .filter("headers", json!({"request": {"set": [{"name": "x-client", "value": "${client_ip}"}]}}))
        .filter("canary", json!({"identity": {"header": "x-user-id"}, "percentage": 20}))
        .filter("circuit-breaker", json!({"scope": "key", "key": "${header.x-tenant}", "max_keys": 1000,
                 "consecutive_failures": 5, "open_for": "2s"}))
        .filter("access-log", json!({"log": {"enabled": false},
                 "http": {"upstream": "upstream", "path": "/logs", "batch_size": 100, "flush_interval": "1s"}}))
        .filter("metrics", json!({"labels": ["route", "method", "status_class"]}))
        .concurrency(2)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ip(n: u64) -> String {
    format!("100.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// One request of the mix; returns (class, status or 0 on I/O error).
fn one(gw_addr: SocketAddr, n: u64) -> (&'static str, u16) {
    let key = n % KEYS;
    let req = |path: &str| portcullis_e2e::Request::new(gw_addr, "GET", path);
    let status = |r: std::io::Result<portcullis_e2e::Response>| r.map(|r| r.status).unwrap_or(0);
    match n % 10 {
        0..=4 => (
            "valid",
            status(
                req("/v")
                    .header("x-forwarded-for", &ip(key))
                    .header("x-user-id", &format!("u{key}"))
                    .header("x-tenant", &format!("t{}", key % 2000))
                    .try_send(),
            ),
        ),
        // 20 hot clients: these reach the per-IP limit (429)
        5 => (
            "valid jwt, hot ip",
            status(
                req("/v")
                    .header("x-forwarded-for", &ip(key % 20))
                    .header("authorization", &format!("Bearer {TOKEN}"))
                    .try_send(),
            ),
        ),
        6 => (
            "bad jwt",
            status(
                req("/v")
                    .header("x-forwarded-for", &ip(key))
                    .header(
                        "authorization",
                        &format!("Bearer {}x", &TOKEN[..TOKEN.len() - 3]),
                    )
                    .try_send(),
            ),
        ),
        7 => (
            "denied ip",
            status(
                req("/v")
                    .header("x-forwarded-for", &format!("203.0.113.{}", key % 250))
                    .try_send(),
            ),
        ),
        8 => {
            let raw = format!(
                "GET /bin HTTP/1.1\r\nhost: s\r\nx-forwarded-for: {}\r\nx-user-id: ",
                ip(key)
            );
            let mut bytes = raw.into_bytes();
            bytes.extend_from_slice(
                b"\xff\xfe\x80 user\r\nx-tenant: \xc3\r\nconnection: close\r\n\r\n",
            );
            ("invalid utf-8", status(send_raw(gw_addr, &bytes)))
        }
        _ => (
            "8 KiB header",
            status(
                req("/big")
                    .header("x-forwarded-for", &ip(key))
                    .header("x-big", &"b".repeat(8 * 1024))
                    .header("x-tenant", &format!("t{}", key % 2000))
                    .try_send(),
            ),
        ),
    }
}

fn allocated(gw: &Gateway) -> Option<u64> {
    let m = gw.proxy.envoy()?.admin_get("/memory").ok()?.json();
    m["allocated"].as_str()?.parse().ok()
}

fn wasm_failures(gw: &Gateway) -> Vec<String> {
    let stats = gw
        .proxy
        .envoy()
        .expect("Envoy admin API")
        .admin_get("/stats")
        .map(|r| r.text())
        .unwrap_or_default();
    stats
        .lines()
        .filter(|l| {
            l.starts_with("wasm")
                && (l.contains("fail") || l.contains("crash") || l.contains("vm_reload"))
        })
        .filter(|l| l.rsplit(": ").next().is_some_and(|v| v.trim() != "0"))
        .map(str::to_owned)
        .collect()
}

fn main() -> ExitCode {
    let minutes: f64 = std::env::args()
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(10.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let warmup = (total / 5).min(Duration::from_secs(60));
    let gw = Arc::new(gateway());
    let addr = gw.proxy.listener();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let tally: Arc<Mutex<BTreeMap<(&'static str, u16), u64>>> = Arc::default();
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, next, tally) = (stop.clone(), next.clone(), tally.clone());
            thread::spawn(move || {
                let mut local: BTreeMap<(&'static str, u16), u64> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    *local.entry(one(addr, n)).or_default() += 1;
                }
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                for (k, v) in local {
                    *t.entry(k).or_default() += v;
                }
            })
        })
        .collect();
    thread::sleep(warmup);
    let after_warmup = allocated(&gw);
    let sent_at_warmup = next.load(Ordering::Relaxed);
    thread::sleep(total.saturating_sub(warmup));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    let at_end = allocated(&gw);
    let sent = next.load(Ordering::Relaxed);
    let healthy = portcullis_e2e::Request::new(addr, "GET", "/health")
        .header("x-forwarded-for", "198.51.100.77")
        .try_send()
        .map(|r| r.status == 200)
        .unwrap_or(false);
    let failures = wasm_failures(&gw);
    let logs = gw.proxy.logs();
    let panics = logs
        .lines()
        .filter(|l| l.contains("panic") || l.contains("Wasm VM failed"))
        .count();
    let growth = match (after_warmup, at_end) {
        (Some(a), Some(b)) if a > 0 => Some((b as f64 - a as f64) / a as f64 * 100.0),
        _ => None,
    };
    let ok = healthy && failures.is_empty() && panics == 0 && growth.is_some_and(|g| g <= 10.0);

    let mib = |b: Option<u64>| {
        b.map_or("?".to_string(), |b| {
            format!("{:.1} MiB ({b} bytes)", b as f64 / 1048576.0)
        })
    };
    let mut md = String::new();
    md.push_str("# Soak result\n\n");
    md.push_str(&format!(
        "Written by `scripts/soak {minutes}` ({}). Envoy {}, concurrency 2, {CLIENTS} client threads on the same \
         2-core machine, one new connection per request.\n\n",
        if ok { "PASS" } else { "FAIL" },
        "1.40"
    ));
    md.push_str("Chain (separate wasm filters, in order): request-guard (trusted XFF, denied network), rate-limit \
                 (per client IP, 5/s burst 5, 10 000-slot table), tracing (50% sampled), jwt-auth (HS256, \
                 missing token allowed), headers, canary (identity header, 20%), circuit-breaker (per tenant key, \
                 1 000-slot table), access-log (HTTP batch sink to the upstream), metrics.\n\n");
    md.push_str(&format!(
        "Load: {KEYS} distinct client keys (IP via `x-forwarded-for`, user id, 2 000 tenants), cycled; mix per 10 \
         requests: 5 valid, 1 valid JWT from one of 20 hot client IPs (these reach the rate limit), 1 bad JWT signature, 1 denied network, 1 invalid UTF-8 header values, \
         1 with an 8 KiB header.\n\n"
    ));
    md.push_str("| figure | value |\n|---|---|\n");
    md.push_str(&format!(
        "| run time | {:.0} s (warm-up {:.0} s) |\n",
        elapsed.as_secs_f64(),
        warmup.as_secs_f64()
    ));
    md.push_str(&format!(
        "| requests sent | {sent} ({:.0}/s); {sent_at_warmup} during warm-up |\n",
        sent as f64 / elapsed.as_secs_f64()
    ));
    md.push_str(&format!(
        "| distinct keys covered | {} of {KEYS} |\n",
        sent.min(KEYS)
    ));
    md.push_str(&format!(
        "| Envoy allocated after warm-up | {} |\n",
        mib(after_warmup)
    ));
    md.push_str(&format!(
        "| Envoy allocated at the end | {} |\n",
        mib(at_end)
    ));
    md.push_str(&format!(
        "| growth after warm-up | {} (limit 10%) |\n",
        growth.map_or("?".into(), |g| format!("{g:+.2}%"))
    ));
    md.push_str(&format!(
        "| Envoy answers afterwards | {} |\n",
        if healthy { "yes" } else { "NO" }
    ));
    md.push_str(&format!(
        "| wasm failure counters | {} |\n",
        if failures.is_empty() {
            "none".to_string()
        } else {
            failures.join(", ")
        }
    ));
    md.push_str(&format!(
        "| log lines with panic / VM failed | {panics} |\n\n"
    ));
    md.push_str("Responses by request class and status (0 = I/O error):\n\n| class | status | count |\n|---|---|---|\n");
    for ((class, status), n) in tally.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        md.push_str(&format!("| {class} | {status} | {n} |\n"));
    }
    if let Ok(note) = std::env::var("SOAK_NOTE") {
        md.push_str(&format!("\nNote: {note}\n"));
    }
    md.push_str("\nShared-data key counts are not visible through Envoy's admin API; they are bounded by construction \
                 (rate-limit and circuit-breaker keep fixed slot tables: `max_keys` keys at most) and checked by the \
                 `store` fuzz target and the rate-limit/circuit-breaker unit tests, not measured here.\n");
    let path = paths::repo_root().join("bench/SOAK.md");
    if let Err(e) = std::fs::write(&path, &md) {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    print!("{md}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
