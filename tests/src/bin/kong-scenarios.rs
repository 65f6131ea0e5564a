//! The Kong side of the scenario suite.
//!   kong-scenarios render FILE          writes a Kong declarative config with one route per scenario
//!   kong-scenarios run [HOST:PORT]      sends every scenario to a running Kong proxy (default 127.0.0.1:8000)
//! `scripts/test --kong` drives both around `docker compose -f kong/docker-compose.yml`.

use portcullis_e2e::paths::repo_root;
use portcullis_e2e::scenario::{kong_declarative, load_dir};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenarios = match load_dir(&repo_root().join("tests/scenarios")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kong-scenarios: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.first().map(String::as_str) {
        Some("render") => {
            let Some(out) = args.get(1) else {
                eprintln!("usage: kong-scenarios render FILE");
                return ExitCode::FAILURE;
            };
            let config = kong_declarative(&scenarios, "http://echo:8080");
            let text = serde_json::to_string_pretty(&config).unwrap_or_default();
            if let Err(e) = std::fs::write(out, text) {
                eprintln!("kong-scenarios: write {out}: {e}");
                return ExitCode::FAILURE;
            }
            println!("wrote {} routes to {out}", scenarios.len());
            ExitCode::SUCCESS
        }
        Some("run") => {
            let addr: SocketAddr =
                match args.get(1).map_or("127.0.0.1:8000", String::as_str).parse() {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("kong-scenarios: bad address: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            run(&scenarios, addr)
        }
        _ => {
            eprintln!("usage: kong-scenarios render FILE | run [HOST:PORT]");
            ExitCode::FAILURE
        }
    }
}

fn run(scenarios: &[portcullis_e2e::scenario::Scenario], addr: SocketAddr) -> ExitCode {
    let (mut passed, mut failed) = (0, 0);
    for s in scenarios {
        // Kong applies declarative config asynchronously after start: retry briefly on 404.
        let deadline = Instant::now() + Duration::from_secs(20);
        let problems = loop {
            let problems = match s.request(addr, &s.kong_prefix()).try_send() {
                Ok(response) if response.status == 404 && Instant::now() < deadline => None,
                // Kong embeds ngx_wasm_module: a removed request header arrives empty there too
                Ok(response) => Some(s.check_on(portcullis_e2e::HostKind::KongEngine, &response)),
                Err(e) => Some(vec![format!("request failed: {e}")]),
            };
            match problems {
                Some(p) => break p,
                None => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        if problems.is_empty() {
            passed += 1;
            println!("ok    {}", s.name);
        } else {
            failed += 1;
            println!("FAIL  {}: {}", s.name, problems.join("; "));
        }
    }
    println!("kong: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
