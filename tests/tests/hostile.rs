//! Hostile traffic through a chain of the Portcullis filters in a real Envoy: huge header values, many headers,
//! invalid UTF-8 in header values, many distinct client addresses via a trusted `x-forwarded-for`, and
//! slowloris-style slow bodies. Afterwards Envoy still answers normal requests, no wasm VM failed (admin
//! stats) and no filter logged a panic or a trap.

use portcullis_e2e::client::{send_raw, send_slowly};
use portcullis_e2e::{json, Gateway};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const CLIENT_IP: &str = r#"{"source": "x_forwarded_for", "trusted_proxies": ["127.0.0.1/32"]}"#;

fn gateway() -> Gateway {
    let client_ip: serde_json::Value = serde_json::from_str(CLIENT_IP).unwrap();
    Gateway::new()
        .filter(
            "request-guard",
            json!({"client_ip": client_ip, "ip": {"deny": ["203.0.113.0/24"]}, "body": {"max_bytes": "64KiB"}}),
        )
        .filter(
            "rate-limit",
            json!({"client_ip": client_ip, "max_keys": 256,
                   "limits": [{"name": "per_ip", "key": "${client_ip}", "rate": 1000, "per": "1s", "burst": 1000}]}),
        )
        .filter("tracing", json!({"sample_ratio": 1.0, "trace_id_response_header": "x-trace-id"}))
        .filter("jwt-auth", json!({"allow_missing": true, "providers": [{"name": "p", "issuer": "https://i.test/",
                "algorithms": ["HS256"], "secret": "portcullis-hostile-secret-0123456789"}]}))
        .filter(
            "headers",
            json!({"request": {"set": [{"name": "x-client", "value": "${client_ip}"},
                                       {"name": "x-echo", "value": "${header.x-big}|${header.x-bin}"}]},
                   "response": {"set": [{"name": "x-seen", "value": "${header.x-bin}"}]}}),
        )
        .filter("canary", json!({"identity": {"header": "x-user-id"}, "percentage": 50}))
        .filter("circuit-breaker", json!({"consecutive_failures": 1000, "open_for": "1s"}))
        .filter("access-log", json!({"request_headers": ["x-big", "x-bin", "user-agent"]}))
        .filter("metrics", json!({"labels": ["route", "method", "status_class"]}))
        .concurrency(2)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn raw_request(headers: &[(&[u8], &[u8])], body: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"GET /hostile HTTP/1.1\r\nhost: portcullis.test\r\n".to_vec();
    for (n, v) in headers {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(b) = body {
        out.extend_from_slice(format!("content-length: {}\r\n", b.len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// Envoy answers a plain request through the whole chain.
fn assert_healthy(gw: &Gateway, when: &str) {
    let r = gw
        .get("/health")
        .header("x-forwarded-for", "198.51.100.1")
        .send();
    assert_eq!(
        r.status,
        200,
        "{when}: a plain request got {} {}",
        r.status,
        r.text()
    );
}

/// No wasm VM failed and no filter panicked or trapped. Envoy counts VM failures; Kong's engine logs them
/// (its fatal lines also fail the test when the gateway stops).
fn assert_no_wasm_failure(gw: &Gateway) {
    if let Some(envoy) = gw.proxy.envoy() {
        assert_no_envoy_vm_failure(envoy);
    }
    let logs = gw.proxy.logs();
    for needle in [
        "panic",
        "Wasm VM failed",
        "unreachable",
        "wasm trap",
        "Function: proxy_on",
        "[crit]",
        "[alert]",
        "[emerg]",
    ] {
        let hits: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(needle))
            .take(3)
            .collect();
        assert!(
            hits.is_empty(),
            "the gateway's log holds {needle:?}: {hits:#?}"
        );
    }
}

fn assert_no_envoy_vm_failure(envoy: &portcullis_e2e::Envoy) {
    let stats = envoy
        .admin_get("/stats")
        .map(|r| r.text())
        .unwrap_or_default();
    let failed: Vec<&str> = stats
        .lines()
        .filter(|l| {
            l.starts_with("wasm")
                && (l.contains("fail") || l.contains("crash") || l.contains("vm_reload"))
        })
        .filter(|l| l.rsplit(": ").next().is_some_and(|v| v.trim() != "0"))
        .collect();
    assert!(failed.is_empty(), "wasm failure counters: {failed:?}");
    // Envoy 1.40 reloads a failed VM (`wasm.<vm_id>.vm_reload`): the counters must exist for the check to mean
    // anything
    assert!(
        stats.contains("wasm.request-guard.vm_reload: "),
        "no wasm.<vm_id>.vm_reload counters in /stats"
    );
}

#[test]
fn hostile_traffic_leaves_envoy_and_every_filter_healthy() {
    let started = Instant::now();
    let gw = gateway();
    let addr: SocketAddr = gw.proxy.listener();
    assert_healthy(&gw, "at start");

    // 8 KiB header values (five of them: 40 KiB of headers, under Envoy's 60 KiB default)
    let big = "b".repeat(8 * 1024);
    let r = gw
        .get("/big")
        .header("x-big", &big)
        .header("x-user-id", &big)
        .header("user-agent", &big)
        .header(
            "x-forwarded-for",
            &format!("{}, 10.1.1.1", "1.1.1.1,".repeat(900)),
        )
        .header("cookie", &big)
        .send();
    assert_eq!(r.status, 200, "8 KiB values: {} {}", r.status, r.text());
    let echo = gw
        .upstream
        .last()
        .header("x-echo")
        .map(str::len)
        .unwrap_or_default();
    assert!(echo <= 8 * 1024, "a templated header grew to {echo} bytes");
    // an 8 KiB garbage bearer token is refused by jwt-auth, not crashed on
    let r = gw
        .get("/big")
        .header("authorization", &format!("Bearer {big}"))
        .send();
    assert_eq!(r.status, 401, "8 KiB token: {}", r.text());

    // 100 headers in all (Envoy's default max_headers_count): host, connection and 98 more
    let mut req = gw.get("/many");
    for i in 0..98 {
        req = req.header(&format!("x-h-{i}"), &format!("value-{i}"));
    }
    req.send().assert_status(200);
    gw.upstream.last().assert_header("x-h-97", "value-97");

    // invalid UTF-8 and obs-text in header values the filters read and template
    let binary: &[u8] = b"\xff\xfe caf\xc3 \x80\x81 \xed\xa0\x80 end";
    for (name, value) in [
        (&b"x-bin"[..], binary),
        (b"x-user-id", binary),
        (b"x-forwarded-for", b"\xff\xff, 10.0.0.1"),
        (b"authorization", b"Bearer \xff.\xfe.\xfd"),
        (
            b"traceparent",
            b"00-\xff4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ),
        (b"user-agent", b"\xc0\xc1\xf5\xff"),
    ] {
        let resp = send_raw(addr, &raw_request(&[(name, value)], None))
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(name)));
        let logs = gw.proxy.logs();
        let panics: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("panic"))
            .take(3)
            .collect();
        assert!(
            [200, 400, 401, 403].contains(&resp.status),
            "{}: status {} {} {panics:#?}",
            String::from_utf8_lossy(name),
            resp.status,
            resp.text()
        );
    }
    assert_healthy(&gw, "after invalid UTF-8");

    // many distinct clients through the trusted proxy: the rate-limit table (256 slots) must stay bounded
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600u32 {
        let ip = format!("100.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let s = gw.get("/ip").header("x-forwarded-for", &ip).send().status;
        *statuses.entry(s).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get(&200),
        Some(&600),
        "distinct clients: {statuses:?}"
    );
    // a denied network is still denied when it arrives via the trusted proxy
    gw.get("/ip")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .assert_status(403);

    // slowloris-style: bodies trickled in small pieces from several clients at once (bounded: ~3 s each)
    let body = vec![b'x'; 600];
    let slow: Vec<_> = (0..6)
        .map(|i| {
            let bytes = raw_request(
                &[(b"x-user-id", format!("slow-{i}").as_bytes())],
                Some(&body),
            );
            thread::spawn(move || send_slowly(addr, &bytes, 40, Duration::from_millis(150)))
        })
        .collect();
    // meanwhile, normal traffic is served
    for _ in 0..10 {
        assert_healthy(&gw, "during slow bodies");
    }
    for t in slow {
        match t.join() {
            Ok(Ok(r)) => assert!(
                [200, 408, 413].contains(&r.status),
                "slow body: {}",
                r.status
            ),
            Ok(Err(e)) => panic!("slow body: {e}"),
            Err(_) => panic!("slow client thread panicked"),
        }
    }
    // a body that stops half-way: the client goes away; Envoy must not hang on it
    let mut half = raw_request(&[], Some(&body));
    half.truncate(half.len() - 300);
    let _ = std::net::TcpStream::connect(addr).and_then(|mut s| {
        use std::io::Write;
        s.write_all(&half)
    });

    assert_healthy(&gw, "at the end");
    assert_no_wasm_failure(&gw);
    eprintln!("hostile traffic run took {:?}", started.elapsed());
}
