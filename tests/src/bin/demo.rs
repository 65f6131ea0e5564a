//! `scripts/demo`: starts the echo upstream and Envoy with `envoy/demo.yaml`, sends requests that show each
//! filter's effect, prints what the client sent, what the upstream received and what the client got back,
//! then stops everything. `--serve` keeps it running until Ctrl-C.
//! Exits non-zero if an expected effect is missing, so the demo doubles as a smoke check.

use portcullis_e2e::upstream::echo;
use portcullis_e2e::{paths, Envoy, Recorded, Reply, Request, Upstream};
use std::process::ExitCode;

const UPSTREAM: &str = "127.0.0.1:18080";

struct Step {
    title: &'static str,
    request: fn(std::net::SocketAddr) -> Request,
    /// (header, expected value or None for "removed") as the upstream must see it.
    upstream_expect: &'static [(&'static str, Option<&'static str>)],
    /// (header, expected value or None for "removed") as the client must see it.
    client_expect: &'static [(&'static str, Option<&'static str>)],
}

fn steps() -> Vec<Step> {
    vec![Step {
        title: "headers: request context added, internals stripped, response stamped",
        request: |addr| {
            Request::new(addr, "GET", "/orders?id=7")
                .header("x-user", "alice")
                .header("x-internal-debug", "1")
                .header("x-request-id", "demo-req-1")
        },
        upstream_expect: &[
            ("x-consumer", Some("alice")),
            ("x-user", None),
            ("x-internal-debug", None),
            ("x-client-ip", Some("127.0.0.1")),
            ("x-forwarded-route", Some("GET /orders")),
            ("via", Some("1.1 portcullis")),
        ],
        client_expect: &[
            ("x-powered-by", None),
            ("x-request-id", Some("demo-req-1")),
            ("x-served-by", Some("portcullis-headers")),
        ],
    }]
}

fn backend(r: &Recorded) -> Reply {
    echo(r).header("x-powered-by", "demo-backend/1.0")
}

fn show(label: &str, headers: &[(String, String)]) {
    println!("  {label}:");
    for (n, v) in headers {
        if !n.starts_with(':') && n != "content-length" && n != "date" {
            println!("      {n}: {v}");
        }
    }
}

fn check(who: &str, expect: &[(&str, Option<&str>)], headers: &[(String, String)]) -> bool {
    let mut ok = true;
    for (name, want) in expect {
        let got = headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        if got != *want {
            println!("  MISSING EFFECT: {who} header {name}: expected {want:?}, got {got:?}");
            ok = false;
        }
    }
    ok
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
        let request = (step.request)(envoy.listener);
        println!("== {}", step.title);
        println!("  client sends: {} {}", request.method, request.path);
        show("client request headers", &request.headers);
        let before = upstream.count();
        let response = match request.try_send() {
            Ok(r) => r,
            Err(e) => {
                println!("  request failed: {e}");
                all_ok = false;
                continue;
            }
        };
        let seen = upstream.requests().get(before).cloned();
        match &seen {
            Some(seen) => {
                show("upstream received", &seen.headers);
                all_ok &= check("upstream", step.upstream_expect, &seen.headers);
            }
            None => {
                println!("  upstream received nothing");
                all_ok &= step.upstream_expect.is_empty();
            }
        }
        println!("  client got: {}", response.status);
        show("response headers", &response.headers);
        all_ok &= check("client", step.client_expect, &response.headers);
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
