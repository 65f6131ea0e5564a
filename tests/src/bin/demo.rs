//! `scripts/demo`: starts the echo upstreams and the gateway with the demo's config, sends requests that show
//! each filter's effect, prints what the client sent, what the upstream received and what the client got back,
//! then stops everything. `--serve` keeps it running until Ctrl-C.
//! The gateway is `--host envoy` (default; `--config FILE` is the bootstrap, default `envoy/demo.yaml`, which
//! `portcullis render` generates from `envoy/demo.portcullis.yaml`) or `--host kong-engine`: Kong's WebAssembly
//! engine, nginx + ngx_wasm_module, on the nginx.conf `portcullis render --target kong-engine` makes of the
//! same policy (`--config FILE`, default `target/demo/nginx.conf`), or `--host kong`: a real Kong
//! (`PORTCULLIS_KONG` or `kong` on PATH) DB-less on the kong.yml `portcullis render --target kong` makes of it
//! (`--config FILE`, default `target/demo/kong/kong.yml`).
//! Every demo is a route of the one listener, selected by its Host (`headers.demo.test`, `jwt.demo.test`, …).
//! Exits non-zero if an expected effect is missing, so the demo doubles as a smoke check.

use portcullis_e2e::gateway::nginx_filter_log;
use portcullis_e2e::kong::{Kong, Store};
use portcullis_e2e::kong_engine::KongEngine;
use portcullis_e2e::upstream::echo;
use portcullis_e2e::{paths, Envoy, HostKind, Proxy, Recorded, Reply, Request, Response, Upstream};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// The echo upstream (`echo` in envoy/demo.portcullis.yaml; the stable side of the canary demo).
const UPSTREAM: &str = "127.0.0.1:18080";
/// The canary side of the canary demo (`echo-canary`).
const CANARY_UPSTREAM: &str = "127.0.0.1:18081";

/// One demonstration: requests sent to the demo listener with the Host of the demo's route in
/// `envoy/demo.portcullis.yaml`, and a check that the filter's effect is visible.
struct Step {
    title: &'static str,
    /// The Host header that selects the demo's route.
    host: &'static str,
    requests: fn(SocketAddr) -> Vec<Request>,
    /// Gets the gateway, the responses, the requests the echo upstream received and those the canary upstream
    /// received during the step; Err names a missing effect.
    check: Check,
}

type Check = fn(&Demo, &[Response], &[Recorded], &[Recorded]) -> Result<(), String>;

/// The gateway the demo runs on: Envoy or Kong's engine (the harness's [`Proxy`]), or a real Kong.
enum Demo {
    Proxy(Proxy),
    Kong(Kong),
}

impl Demo {
    fn listener(&self) -> SocketAddr {
        match self {
            Demo::Proxy(p) => p.listener(),
            Demo::Kong(k) => k.proxy,
        }
    }

    /// The gateway runs Kong's engine (bare or inside Kong).
    fn is_kong_engine(&self) -> bool {
        match self {
            Demo::Proxy(p) => p.host() == HostKind::KongEngine,
            Demo::Kong(_) => true,
        }
    }

    fn filter_log(&self, filter: &str) -> Vec<portcullis_e2e::FilterLogLine> {
        match self {
            Demo::Proxy(p) => p.filter_log(filter),
            Demo::Kong(k) => nginx_filter_log(&k.error_log(), filter),
        }
    }
}

/// What the upstream sees of a request header a filter removed: nothing on Envoy; on Kong's engine the header
/// arrives empty (nginx forwards the lines ngx_wasm_module marks removed, so Portcullis blanks the value in
/// place: filters/common/src/exchange.rs).
fn removed(gateway: &Demo) -> Option<&'static str> {
    gateway.is_kong_engine().then_some("")
}

/// The gateway's own status when the upstream cannot be reached: Envoy 503, nginx and Kong 502.
fn upstream_unreachable(gateway: &Demo) -> u16 {
    if gateway.is_kong_engine() {
        502
    } else {
        503
    }
}

fn steps() -> Vec<Step> {
    vec![Step {
        title: "headers: request context added, internals stripped, response stamped",
        host: "headers.demo.test",
        requests: |addr| {
            vec![Request::new(addr, "GET", "/orders?id=7")
                .header("x-user", "alice")
                .header("x-internal-debug", "1")
                .header("x-request-id", "demo-req-1")]
        },
        check: |proxy, responses, seen, _| {
            let up = seen.first().ok_or("the upstream received nothing")?;
            expect_headers(
                "upstream",
                &up.headers,
                &[
                    ("x-consumer", Some("alice")),
                    ("x-user", removed(proxy)),
                    ("x-internal-debug", removed(proxy)),
                    ("x-client-ip", Some("127.0.0.1")),
                    ("x-forwarded-route", Some("GET /orders")),
                ],
            )?;
            let via = up.headers.iter().find(|(n, _)| n == "via").map(|(_, v)| v.as_str());
            if let Demo::Kong(_) = proxy {
                // Kong sets Via (and Host, X-Forwarded-*) with proxy_set_header from what it computed before the
                // chain ran (kong/templates/nginx_kong.lua): a filter's value never reaches the upstream.
                if !via.is_some_and(|v| v.starts_with("1.1 kong/")) {
                    return Err(format!("upstream via: {via:?}, expected Kong's own"));
                }
                println!("    (Kong replaced the filter's `via: 1.1 portcullis` with its own: {})", via.unwrap_or(""));
            } else if via != Some("1.1 portcullis") {
                return Err(format!("upstream via: {via:?}, expected \"1.1 portcullis\""));
            }
            expect_headers(
                "client",
                &responses[0].headers,
                &[
                    ("x-powered-by", None),
                    ("x-request-id", Some("demo-req-1")),
                    ("x-served-by", Some("portcullis-headers")),
                ],
            )
        },
    },
    Step {
        title: "jwt-auth: no token 401, a valid HS256 token passes as x-user/x-tenant, a forged one 401",
        host: "jwt.demo.test",
        requests: |addr| {
            use jwt_simple::prelude::*;
            let key = HS256Key::from_bytes(b"portcullis-demo-secret-0123456789abcdef");
            let claims = Claims::with_custom_claims(
                serde_json::json!({"scope": "orders:read", "tenant": {"id": "acme"}}),
                Duration::from_mins(5),
            )
            .with_issuer("https://demo.portcullis.test/")
            .with_audience("orders-api")
            .with_subject("alice");
            let token = key.authenticate(claims).unwrap_or_default();
            let forged = HS256Key::from_bytes(b"not-the-demo-secret-0123456789abcdef")
                .authenticate(
                    Claims::create(Duration::from_mins(5))
                        .with_issuer("https://demo.portcullis.test/")
                        .with_audience("orders-api"),
                )
                .unwrap_or_default();
            vec![
                Request::new(addr, "GET", "/orders"),
                Request::new(addr, "GET", "/orders").header("authorization", &format!("Bearer {token}")),
                Request::new(addr, "GET", "/orders").header("authorization", &format!("Bearer {forged}")),
            ]
        },
        check: |proxy, responses, seen, _| {
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            if statuses != [401, 200, 401] {
                return Err(format!("statuses {statuses:?}, expected [401, 200, 401]"));
            }
            let [up] = seen else {
                return Err(format!("the upstream received {} requests, expected 1", seen.len()));
            };
            expect_headers(
                "upstream",
                &up.headers,
                &[("x-user", Some("alice")), ("x-tenant", Some("acme")), ("authorization", removed(proxy))],
            )?;
            expect_headers("client", &responses[0].headers, &[("www-authenticate", Some("Bearer realm=\"demo\""))])?;
            let c = responses[2].header("www-authenticate").unwrap_or_default();
            if !c.contains("error=\"invalid_token\"") {
                return Err(format!("forged token challenge: {c:?}"));
            }
            Ok(())
        },
    },
    Step {
        title: "rate-limit: the seed's per-IP bucket (burst 5, 1/s): 5 pass with RateLimit-* headers, then 429",
        host: "ratelimit.demo.test",
        requests: |addr| (0..7).map(|_| Request::new(addr, "GET", "/search")).collect(),
        check: |_, responses, seen, _| {
            if seen.len() != 5 {
                return Err(format!("{} requests reached the upstream, expected 5", seen.len()));
            }
            for (i, r) in responses.iter().take(5).enumerate() {
                let remaining = (4 - i).to_string();
                if r.status != 200 {
                    return Err(format!("request {} should pass, got {}", i + 1, r.status));
                }
                expect_headers(
                    "client",
                    &r.headers,
                    &[("ratelimit-limit", Some("5")), ("ratelimit-remaining", Some(remaining.as_str()))],
                )?;
            }
            let last = responses.last().ok_or("no response")?;
            if last.status != 429 {
                return Err(format!("the 7th request should get 429, got {}", last.status));
            }
            expect_headers("client", &last.headers, &[("retry-after", Some("1")), ("ratelimit-remaining", Some("0"))])
        },
    },
    Step {
        title: "circuit-breaker: 3 upstream failures (nothing listens: Envoy answers 503, nginx 502) open it; then it rejects at once",
        host: "breaker.demo.test",
        // more than 4 requests: the trip is recorded in the log callback, just after the 3rd response
        requests: |addr| (0..6).map(|_| Request::new(addr, "GET", "/flaky")).collect(),
        check: |proxy, responses, seen, _| {
            if !seen.is_empty() {
                return Err(format!("{} requests reached the echo upstream", seen.len()));
            }
            let breaker = |r: &Response| r.text().contains("circuit breaker is open");
            let failed = upstream_unreachable(proxy);
            if let Demo::Kong(_) = proxy {
                // Kong answers a failed upstream connection from its error handler (an internal redirect),
                // whose response no filter sees: the breaker cannot count it (kong/README.md, known limits).
                if responses.iter().any(|r| r.status != failed || breaker(r)) {
                    return Err(format!("expected Kong's {failed} for every request"));
                }
                println!("    (Kong's own {failed}s are not seen by filters: the breaker counts only what an upstream answers)");
                return Ok(());
            }
            if let Some((i, r)) = responses.iter().take(3).enumerate().find(|(_, r)| r.status != failed || breaker(r)) {
                return Err(format!("request {} should fail upstream with the gateway's {failed}, got {} {}", i + 1, r.status, r.text()));
            }
            let last = responses.last().ok_or("no response")?;
            if last.status != 503 || !breaker(last) {
                return Err(format!("the last request should get the breaker's 503, got {} {}", last.status, last.text()));
            }
            expect_headers("client", &last.headers, &[("x-circuit-state", Some("open")), ("retry-after", Some("10"))])
        },
    },
    Step {
        title: "request-guard: a browser passes; a scanner, a blacklisted forwarded address and an oversize chunked body do not",
        host: "guard.demo.test",
        requests: |addr| {
            let browser = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0";
            vec![
                Request::new(addr, "GET", "/products").header("user-agent", browser),
                Request::new(addr, "GET", "/products").header("user-agent", "sqlmap/1.7.2#stable"),
                Request::new(addr, "GET", "/products")
                    .header("user-agent", browser)
                    .header("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
                Request::new(addr, "POST", "/orders")
                    .header("user-agent", browser)
                    .body(vec![b'x'; 64 * 1024])
                    .chunked(1024),
            ]
        },
        check: |_, responses, seen, _| {
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            if statuses != [200, 403, 403, 413] {
                return Err(format!("expected statuses [200, 403, 403, 413], got {statuses:?}"));
            }
            if seen.len() != 1 {
                return Err(format!("only the browser request should reach the upstream, it got {}", seen.len()));
            }
            Ok(())
        },
    },
    Step {
        title: "hmac-auth: a signed request passes as alice; the same request replayed and an unsigned one get 401",
        host: "hmac.demo.test",
        requests: |addr| {
            let signed = demo_signed_request(addr);
            vec![signed.clone(), signed, Request::new(addr, "GET", "/ledger")]
        },
        check: |proxy, responses, seen, _| {
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            if statuses != [200, 401, 401] {
                return Err(format!("expected statuses [200, 401, 401], got {statuses:?}"));
            }
            let up = seen.first().ok_or("the upstream received nothing")?;
            expect_headers(
                "upstream",
                &up.headers,
                &[("x-consumer-username", Some("alice")), ("authorization", removed(proxy))],
            )?;
            if !responses[1].text().contains("nonce already used") {
                return Err(format!("the replay should be refused as such, got {}", responses[1].text()));
            }
            Ok(())
        },
    },
    Step {
        title: "canary: uid_prefix_abc users tagged and routed to canary, others split 5% by user-id hash",
        host: "canary.demo.test",
        requests: |addr| {
            vec![
                Request::new(addr, "GET", "/release").header("x-user-id", "abc42"),
                // alice's hash bucket is above 5%: stable; a client-sent tag is replaced
                Request::new(addr, "GET", "/release")
                    .header("x-user-id", "alice")
                    .header("x-canary", "true"),
            ]
        },
        check: |proxy, _, seen, canary| {
            if let Demo::Kong(_) = proxy {
                // Kong picks the route (and so the service) before the chain runs: the tag the canary filter
                // sets cannot select the header-matched route, and a client's own tag does (kong/README.md).
                println!("    (not shown on Kong: routes are chosen before filters; see kong/README.md, known limits)");
                return Ok(());
            }
            // The upstream tells which route the gateway picked after the filter set x-canary: `to_canary` goes
            // to the canary upstream, `to_stable` to the echo upstream (on Kong's engine: a map on x-canary that
            // nginx evaluates when it connects upstream, after the filter ran).
            let [abc] = canary else {
                return Err(format!("the canary upstream received {} requests, expected 1 (abc42's)", canary.len()));
            };
            let [alice] = seen else {
                return Err(format!("the stable upstream received {} requests, expected 1 (alice's)", seen.len()));
            };
            expect_headers(
                "canary upstream (abc42)",
                &abc.headers,
                &[("x-user-id", Some("abc42")), ("x-canary", Some("true"))],
            )?;
            expect_headers(
                "stable upstream (alice)",
                &alice.headers,
                &[("x-user-id", Some("alice")), ("x-canary", Some("false"))],
            )
        },
    },
    Step {
        title: "observability: trace continued/started (x-trace-id), one JSON log line, labelled request counts",
        host: "observability.demo.test",
        requests: |addr| {
            vec![
                Request::new(addr, "GET", "/orders/42")
                    .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .header("authorization", "Bearer demo-secret"),
                Request::new(addr, "GET", "/orders/43"),
            ]
        },
        check: |proxy, responses, seen, _| {
            let [continued, started] = seen else {
                return Err(format!("the upstream received {} requests, expected 2", seen.len()));
            };
            let trace_of = |r: &Recorded| {
                let tp = r.headers.iter().find(|(n, _)| n == "traceparent").map(|(_, v)| v.clone()).unwrap_or_default();
                tp.split('-').nth(1).unwrap_or_default().to_string()
            };
            if trace_of(continued) != "4bf92f3577b34da6a3ce929d0e0e4736" {
                return Err(format!("the client's trace was not continued: {:?}", continued.headers));
            }
            let new_trace = trace_of(started);
            if new_trace.len() != 32 {
                return Err(format!("no trace was started: {:?}", started.headers));
            }
            expect_headers("client", &responses[1].headers, &[("x-trace-id", Some(new_trace.as_str()))])?;
            match proxy {
                Demo::Proxy(Proxy::Envoy(envoy)) => envoy_request_count(envoy)?,
                Demo::Proxy(engine) => engine_request_count(engine)?,
                Demo::Kong(kong) => kong_request_count(kong)?,
            }
            // The access-log filter writes its line through the host's log: Envoy's output, nginx's error log.
            let mut line = None;
            for _ in 0..50 {
                line = proxy.filter_log("access-log").into_iter().next().map(|l| l.message);
                if line.is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let line = line.ok_or("no access log line in the gateway's log")?;
            println!("    access log line:\n        {line}");
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("not JSON: {e}"))?;
            if v["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || v["request_headers"]["authorization"] != "[REDACTED]" {
                return Err(format!("log line lacks the trace id or the redaction: {line}"));
            }
            Ok(())
        },
    },
        Step {
            title: "portcullis bundle: guard → rate-limit (burst 3) → headers → metrics in one wasm filter",
            host: "bundle.demo.test",
            requests: |addr| {
                let mut r = vec![Request::new(addr, "GET", "/bundle").header("user-agent", "sqlmap/1.7")];
                for _ in 0..4 {
                    r.push(Request::new(addr, "GET", "/bundle").header("user-agent", "curl/8.5"));
                }
                r
            },
            check: |_, responses, seen, _| {
                let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
                if statuses != [403, 200, 200, 200, 429] {
                    return Err(format!("expected [403, 200, 200, 200, 429], got {statuses:?}"));
                }
                if seen.len() != 3 {
                    return Err(format!("the upstream should see the 3 admitted requests, saw {}", seen.len()));
                }
                expect_headers("upstream", &seen[0].headers, &[("x-client-ip", Some("127.0.0.1"))])?;
                expect_headers(
                    "client",
                    &responses[1].headers,
                    &[("x-served-by", Some("portcullis-bundle")), ("ratelimit-limit", Some("3"))],
                )
            },
        }
    ]
}

/// The observability step's two requests as the metrics filter counted them, in Envoy's Prometheus output.
fn envoy_request_count(envoy: &Envoy) -> Result<(), String> {
    // Counter additions reach Envoy on the filter's timer (portcullis_common::metrics::FLUSH_PERIOD, 1 s):
    // poll a little longer than that.
    let counted = r#"portcullis_http_requests_total{route="observability",method="GET",status_class="2xx"} 2"#;
    let mut text = String::new();
    for _ in 0..30 {
        text = envoy
            .admin_get_now("/stats/prometheus")
            .map_err(|e| format!("admin: {e}"))?
            .text();
        if text.lines().any(|l| l == counted) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("    /stats/prometheus excerpt:");
    // (the latency histogram appears once Envoy merges histograms, every stats flush: 5 s)
    for line in text
        .lines()
        .filter(|l| l.starts_with("portcullis_http_") && !l.contains("duration"))
    {
        println!("        {line}");
    }
    if !text.lines().any(|l| l == counted) {
        return Err(format!("missing metric line {counted}"));
    }
    Ok(())
}

/// The same count on Kong's engine. The engine has no metrics endpoint (Kong's Prometheus plugin reads its
/// shared memory from Lua), so the demo reads the counter through the harness's metric reader: a module and a
/// server on a port of the harness's own that `KongEngine::start_file` adds to the rendered nginx.conf. The
/// engine names the series `pw:portcullis_metrics:<name>`; bare nginx gives filters no route name (`xds.route_name` on
/// Envoy, `kong.route_id` on Kong), so the route label is `unknown`.
fn engine_request_count(proxy: &Proxy) -> Result<(), String> {
    let series = "portcullis_http_requests_total;route=unknown;method=GET;status_class=2xx";
    let mut count = None;
    for _ in 0..30 {
        count = proxy.stat_now(series);
        if count == Some(2) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("    counter read through the harness's metric reader (the engine serves no metrics itself):");
    match count {
        Some(n) => println!("        pw:portcullis_metrics:{series} {n}"),
        None => println!("        pw:portcullis_metrics:{series} (not defined)"),
    }
    if count != Some(2) {
        return Err(format!(
            "pw:portcullis_metrics:{series} is {count:?}, expected 2"
        ));
    }
    Ok(())
}

/// The same count in a real Kong: its `prometheus` plugin (rendered into kong.yml because a route runs the
/// metrics filter) exports the filter's series on the Admin API's `/metrics`, the route label being Kong's
/// route id.
fn kong_request_count(kong: &Kong) -> Result<(), String> {
    let counted = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("pw_portcullis_metrics_portcullis_http_requests_total{")
                    && l.contains(r#"method="GET",status_class="2xx"} 2"#)
            })
            .map(str::to_string)
    };
    let mut line = None;
    for _ in 0..30 {
        line = counted(&kong.admin("GET", "/metrics", None).text());
        if line.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let line = line
        .ok_or("no pw_portcullis_metrics_portcullis_http_requests_total{…} 2 on Kong's /metrics")?;
    println!("    Kong's /metrics (prometheus plugin) excerpt:\n        {line}");
    Ok(())
}

/// A GET signed as alice with `portcullis_hmac_auth::sign`: `@request-target`, `date` and a fresh nonce.
fn demo_signed_request(addr: SocketAddr) -> Request {
    use portcullis_hmac_auth::{http_date, sign, Algorithm, SigningRequest};
    let now = std::time::SystemTime::now();
    let date = http_date(now);
    let nonce = format!(
        "demo-{}",
        now.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let headers = [("date", date.as_str()), ("x-nonce", nonce.as_str())];
    let request = SigningRequest {
        method: "GET",
        path: "/ledger",
        protocol: "HTTP/1.1",
        headers: &headers,
    };
    let authorization = sign(
        "alice",
        b"alice-secret",
        Algorithm::HmacSha256,
        &["@request-target", "date", "x-nonce"],
        &request,
    )
    .unwrap_or_default();
    Request::new(addr, "GET", "/ledger")
        .header("date", &date)
        .header("x-nonce", &nonce)
        .header("authorization", &authorization)
}

/// Checks (header, expected value; None = absent) pairs.
fn expect_headers(
    who: &str,
    headers: &[(String, String)],
    expect: &[(&str, Option<&str>)],
) -> Result<(), String> {
    for (name, want) in expect {
        let got = headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        if got != *want {
            return Err(format!(
                "{who} header {name}: expected {want:?}, got {got:?}"
            ));
        }
    }
    Ok(())
}

fn backend(r: &Recorded) -> Reply {
    echo(r).header("x-powered-by", "demo-backend/1.0")
}

fn show(label: &str, headers: &[(String, String)]) {
    println!("    {label}:");
    for (n, v) in headers {
        if !n.starts_with(':') && n != "content-length" && n != "date" {
            println!("        {n}: {v}");
        }
    }
}

/// `--serve`, `--host envoy|kong-engine` and `--config FILE` (Envoy's bootstrap, default `envoy/demo.yaml`;
/// the engine's nginx.conf, default `target/demo/nginx.conf`).
struct Args {
    serve: bool,
    /// `None`: a real Kong.
    host: Option<HostKind>,
    config: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        serve: false,
        host: Some(HostKind::Envoy),
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--serve" => args.serve = true,
            "--host" => {
                let name = it.next().ok_or("--host needs envoy, kong-engine or kong")?;
                args.host = match name.as_str() {
                    "kong" => None,
                    other => Some(
                        HostKind::parse(other)
                            .ok_or(format!("--host {name:?}: envoy, kong-engine or kong"))?,
                    ),
                };
            }
            "--config" => {
                let file = it.next().ok_or("--config needs a file")?;
                // The gateway runs in the repository root: make a path relative to where we were started
                // absolute.
                args.config =
                    Some(std::path::absolute(&file).map_err(|e| format!("--config {file}: {e}"))?);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (--serve, --host envoy|kong-engine|kong, --config FILE)"
                ))
            }
        }
    }
    Ok(args)
}

/// Starts the gateway of `host` on `config`, its logs in `dir`; prints where it is up.
fn start_gateway(
    host: Option<HostKind>,
    config: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Demo, String> {
    let Some(host) = host else {
        let text =
            std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
        let declarative: serde_json::Value =
            serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
        let kong = Kong::start(Store::Declarative(&declarative), &[])
            .map_err(|e| format!("Kong did not start with {}: {e}", config.display()))?;
        println!(
            "Kong {} is up on http://{} (Admin API http://{}) with {}",
            portcullis_e2e::kong::version(&portcullis_e2e::kong::binary()?),
            kong.proxy,
            kong.admin,
            config.display()
        );
        return Ok(Demo::Kong(kong));
    };
    Ok(Demo::Proxy(match host {
        HostKind::Envoy => {
            let envoy = Envoy::start_file(config, dir, 1)
                .map_err(|e| format!("Envoy did not start with {}: {e}", config.display()))?;
            println!(
                "Envoy is up on http://{} (admin http://{}) with {}",
                envoy.listener,
                envoy.admin,
                config.display()
            );
            Proxy::Envoy(envoy)
        }
        HostKind::KongEngine => {
            let engine = KongEngine::start_file(config, dir).map_err(|e| {
                format!(
                    "Kong's engine (nginx + ngx_wasm_module) did not start with {}: {e}",
                    config.display()
                )
            })?;
            println!(
                "Kong's engine (nginx + ngx_wasm_module, pid {}) is up on http://{} with {} (its logs in {})",
                engine.pid(),
                engine.listener,
                config.display(),
                dir.display()
            );
            Proxy::KongEngine(engine)
        }
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let upstream = match Upstream::bind(UPSTREAM, backend) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("demo: cannot listen on {UPSTREAM} for the echo upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let canary = match Upstream::bind(CANARY_UPSTREAM, backend) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("demo: cannot listen on {CANARY_UPSTREAM} for the canary upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = paths::scratch_dir("demo");
    let config = args.config.clone().unwrap_or_else(|| {
        paths::repo_root().join(match args.host {
            Some(HostKind::Envoy) => "envoy/demo.yaml",
            Some(HostKind::KongEngine) => "target/demo/nginx.conf",
            None => "target/demo/kong/kong.yml",
        })
    });
    let mut gateway = match start_gateway(args.host, &config, &dir) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("echo upstreams on {UPSTREAM} (stable) and {CANARY_UPSTREAM} (canary)\n");

    let mut all_ok = true;
    for step in steps() {
        println!("== {}", step.title);
        let requests: Vec<Request> = (step.requests)(gateway.listener())
            .into_iter()
            .map(|r| r.header("host", step.host))
            .collect();
        let detailed = requests.len() <= 2;
        let before = (upstream.count(), canary.count());
        let mut responses = Vec::new();
        for request in &requests {
            let seen_before = (upstream.count(), canary.count());
            let response = match request.try_send() {
                Ok(r) => r,
                Err(e) => {
                    println!(
                        "  {} {} -> request failed: {e}",
                        request.method, request.path
                    );
                    all_ok = false;
                    break;
                }
            };
            println!(
                "  {} {} (host {}) -> {}",
                request.method, request.path, step.host, response.status
            );
            if detailed {
                show("client sent", &request.headers);
                if let Some(seen) = upstream.requests().get(seen_before.0) {
                    show("upstream received", &seen.headers);
                } else if let Some(seen) = canary.requests().get(seen_before.1) {
                    show("canary upstream received", &seen.headers);
                } else {
                    println!("    (the upstream received nothing)");
                }
                show("client got", &response.headers);
                if response.status >= 400 {
                    println!("    body: {}", response.text());
                }
            }
            responses.push(response);
        }
        if responses.len() == requests.len() {
            let seen: Vec<Recorded> = upstream.requests().split_off(before.0);
            let seen_canary: Vec<Recorded> = canary.requests().split_off(before.1);
            match (step.check)(&gateway, &responses, &seen, &seen_canary) {
                Ok(()) => println!("  ok"),
                Err(e) => {
                    println!("  MISSING EFFECT: {e}");
                    all_ok = false;
                }
            }
        }
        println!();
    }

    if args.serve {
        let hosts: Vec<&str> = steps().iter().map(|s| s.host).collect();
        println!(
            "Serving: try  curl -si http://{}/hello -H 'host: headers.demo.test' -H 'x-user: you'   (Ctrl-C to stop)\n\
             Each demo is a Host: {}",
            gateway.listener(),
            hosts.join(", ")
        );
        loop {
            std::thread::park();
        }
    }
    if let Demo::Kong(kong) = &gateway {
        let failures = kong.chain_failures();
        if !failures.is_empty() {
            println!("Kong logged chain failures:\n  {}", failures.join("\n  "));
            all_ok = false;
        }
    }
    if let Demo::Proxy(Proxy::KongEngine(engine)) = &mut gateway {
        let fatal = engine.fatal_log_lines();
        if !fatal.is_empty() {
            println!(
                "Kong's engine logged fatal errors:\n  {}",
                fatal.join("\n  ")
            );
            engine.expected_errors = true; // reported here, not again when it stops
            all_ok = false;
        }
    }
    drop(gateway);
    drop(upstream);
    drop(canary);
    if all_ok && args.host.is_none() {
        println!(
            "demo: every step passed; in Kong the canary is not shown and the breaker cannot count Kong's own 502s \
             (kong/README.md, known limits)."
        );
        ExitCode::SUCCESS
    } else if all_ok {
        println!("demo: every filter showed its effect.");
        ExitCode::SUCCESS
    } else {
        println!("demo: some effects were missing (see above).");
        ExitCode::FAILURE
    }
}
