//! `scripts/demo`: starts the echo upstream and Envoy with `envoy/demo.yaml`, sends requests that show each
//! filter's effect, prints what the client sent, what the upstream received and what the client got back,
//! then stops everything. `--serve` keeps it running until Ctrl-C.
//! Exits non-zero if an expected effect is missing, so the demo doubles as a smoke check.

use portcullis_e2e::upstream::echo;
use portcullis_e2e::{paths, Envoy, Recorded, Reply, Request, Response, Upstream};
use std::net::SocketAddr;
use std::process::ExitCode;

const UPSTREAM: &str = "127.0.0.1:18080";

/// One demonstration: requests sent to one listener of `envoy/demo.yaml`, and a check that the filter's
/// effect is visible. Listener ports: 10000 headers, 10001 jwt-auth, 10002 rate-limit, 10003 circuit-breaker,
/// 10004 request-guard, 10005 hmac-auth, 10006 canary, 10007 observability, 10010 the portcullis bundle.
struct Step {
    title: &'static str,
    port: u16,
    requests: fn(SocketAddr) -> Vec<Request>,
    /// Gets the responses and the requests the upstream received during the step; Err names a missing effect.
    check: fn(&[Response], &[Recorded]) -> Result<(), String>,
}

fn steps() -> Vec<Step> {
    vec![Step {
        title: "headers: request context added, internals stripped, response stamped",
        port: 10000,
        requests: |addr| {
            vec![Request::new(addr, "GET", "/orders?id=7")
                .header("x-user", "alice")
                .header("x-internal-debug", "1")
                .header("x-request-id", "demo-req-1")]
        },
        check: |responses, seen| {
            let up = seen.first().ok_or("the upstream received nothing")?;
            expect_headers(
                "upstream",
                &up.headers,
                &[
                    ("x-consumer", Some("alice")),
                    ("x-user", None),
                    ("x-internal-debug", None),
                    ("x-client-ip", Some("127.0.0.1")),
                    ("x-forwarded-route", Some("GET /orders")),
                    ("via", Some("1.1 portcullis")),
                ],
            )?;
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
    }]
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

fn main() -> ExitCode {
    let serve = std::env::args().any(|a| a == "--serve");
    let upstream = match Upstream::bind(UPSTREAM, backend) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("demo: cannot listen on {UPSTREAM} for the echo upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = paths::repo_root().join("envoy/demo.yaml");
    let dir = paths::scratch_dir("demo");
    let envoy = match Envoy::start_file(&config, &dir, 1) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("demo: Envoy did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Envoy is up on http://{} (admin http://{}), echo upstream on {UPSTREAM}\n",
        envoy.listener, envoy.admin
    );

    let mut all_ok = true;
    for step in steps() {
        println!("== {}", step.title);
        let addr = SocketAddr::from(([127, 0, 0, 1], step.port));
        let requests = (step.requests)(addr);
        let detailed = requests.len() <= 2;
        let before = upstream.count();
        let mut responses = Vec::new();
        for request in &requests {
            let seen_before = upstream.count();
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
                "  {} {} (port {}) -> {}",
                request.method, request.path, step.port, response.status
            );
            if detailed {
                show("client sent", &request.headers);
                if let Some(seen) = upstream.requests().get(seen_before) {
                    show("upstream received", &seen.headers);
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
            let seen: Vec<Recorded> = upstream.requests().split_off(before);
            match (step.check)(&responses, &seen) {
                Ok(()) => println!("  ok"),
                Err(e) => {
                    println!("  MISSING EFFECT: {e}");
                    all_ok = false;
                }
            }
        }
        println!();
    }

    if serve {
        println!(
            "Serving: try  curl -si http://{}/hello -H 'x-user: you'   (Ctrl-C to stop)",
            envoy.listener
        );
        loop {
            std::thread::park();
        }
    }
    drop(envoy);
    drop(upstream);
    if all_ok {
        println!("demo: every filter showed its effect.");
        ExitCode::SUCCESS
    } else {
        println!("demo: some effects were missing (see above).");
        ExitCode::FAILURE
    }
}
