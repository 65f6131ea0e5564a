//! `portcullis` — validate, render and push a Portcullis policy file.
//!
//! Exit codes: 0 success; 1 the policy file is invalid (or cannot be rendered for Kong's engine); 2 usage error or I/O failure (unreadable file,
//! unwritable output, Admin API unreachable); 3 `push` applied some changes but others failed.

use portcullis_cli::policy::LoadError;
use portcullis_cli::{diagnostics_json, load_and_validate, process_env, push, render};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
portcullis — one policy file → validated Envoy and Kong configuration

USAGE:
    portcullis validate FILE [--output human|json]
    portcullis render FILE --target envoy|kong|kong-engine [-o OUT]
    portcullis push FILE --kong-admin URL [--dry-run] [--output human|json] [--retries N]
    portcullis serve --xds ADDR FILE [--poll-ms N] [--output human|json]
    portcullis render FILE --target envoy --xds ADDR [-o OUT]
    portcullis render FILE --target kong [--kong-version 3.9|3.10] [-o DIR]
    portcullis help

render: envoy writes the bootstrap YAML to OUT (default: stdout); kong writes kong.yml to stdout, or
        OUT/kong.yml and OUT/kong.conf when -o names a folder; kong-engine writes an nginx.conf for Kong's
        WebAssembly engine without Kong (nginx + ngx_wasm_module) to OUT (default: stdout).
serve: an xDS server on ADDR (ADS over gRPC: listener, routes, clusters, and each filter's config over ECDS)
       that follows edits of FILE and pushes changes to connected Envoys; invalid edits are reported and the
       last good version keeps serving. `render --target envoy --xds ADDR` writes the bootstrap for it.
       With --output json every event is one JSON line (serving, applied, rejected, refused_by_envoy).
${NAME} in string values is replaced by the environment variable NAME (upper case; $${NAME} is kept).

EXIT CODES:
    0  ok
    1  the policy file is invalid (every problem is printed as file:line:column: path: message), or
       render --target kong-engine cannot express it in nginx (the reason is printed)
    2  usage error or I/O failure (unreadable file, unwritable output, Admin API unreachable)
    3  push: some changes failed (see the per-entity report)
";

struct Args {
    command: String,
    file: Option<PathBuf>,
    target: Option<String>,
    out: Option<PathBuf>,
    json: bool,
    kong_admin: Option<String>,
    dry_run: bool,
    retries: u32,
    xds: Option<String>,
    poll_ms: u64,
    kong_version: Option<String>,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    let command = it.next().cloned().ok_or("missing command")?;
    let mut a = Args {
        command,
        file: None,
        target: None,
        out: None,
        json: false,
        kong_admin: None,
        dry_run: false,
        retries: 4,
        xds: None,
        poll_ms: 200,
        kong_version: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--target" => a.target = Some(value("--target")?),
            "-o" | "--out" => a.out = Some(PathBuf::from(value("-o")?)),
            "--output" => match value("--output")?.as_str() {
                "json" => a.json = true,
                "human" => a.json = false,
                other => {
                    return Err(format!(
                        "--output: unknown format {other:?} (human or json)"
                    ))
                }
            },
            "--kong-admin" => a.kong_admin = Some(value("--kong-admin")?),
            "--dry-run" => a.dry_run = true,
            "--xds" => a.xds = Some(value("--xds")?),
            "--kong-version" => {
                let v = value("--kong-version")?;
                if !portcullis_cli::policy::KONG_VERSIONS.contains(&v.as_str()) {
                    return Err(format!(
                        "--kong-version {v:?}: one of {:?}",
                        portcullis_cli::policy::KONG_VERSIONS
                    ));
                }
                a.kong_version = Some(v);
            }
            "--poll-ms" => {
                a.poll_ms = value("--poll-ms")?
                    .parse()
                    .ok()
                    .filter(|n| (10..=60_000).contains(n))
                    .ok_or("--poll-ms: a number 10-60000")?
            }
            "--retries" => {
                a.retries = value("--retries")?
                    .parse()
                    .ok()
                    .filter(|n| *n <= 10)
                    .ok_or("--retries: a number 0-10")?
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            file if a.file.is_none() => a.file = Some(PathBuf::from(file)),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() || matches!(argv[0].as_str(), "help" | "-h" | "--help") {
        print!("{USAGE}");
        return ExitCode::from(if argv.is_empty() { 2 } else { 0 });
    }
    if matches!(argv[0].as_str(), "-V" | "--version") {
        println!("portcullis {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    match args.command.as_str() {
        "validate" | "render" | "push" | "serve" => {}
        other => return usage(&format!("unknown command {other:?}")),
    }
    let Some(file) = args.file.clone() else {
        return usage("missing FILE");
    };
    let mut loaded = match load_and_validate(&file, &process_env) {
        Ok(l) => l,
        Err(LoadError::Io(e)) => {
            if args.json && args.command != "render" {
                let error = serde_json::json!({ "file": file.display().to_string(), "message": e });
                println!("{}", serde_json::json!({ "ok": false, "errors": [error] }));
            } else {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
        Err(LoadError::Invalid(errors)) => {
            if args.json && args.command != "render" {
                println!("{}", diagnostics_json(false, &errors));
            } else {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{}: invalid ({} problem{})",
                    file.display(),
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
            }
            return ExitCode::from(1);
        }
    };
    match args.command.as_str() {
        "validate" => {
            if args.json {
                println!("{}", diagnostics_json(true, &[]));
            } else {
                let filters: usize = loaded.policy.routes.iter().map(|r| r.chain.len()).sum();
                println!(
                    "{}: ok ({} upstreams, {} routes, {} filter configs)",
                    file.display(),
                    loaded.policy.upstreams.len(),
                    loaded.policy.routes.len(),
                    filters
                );
            }
            ExitCode::SUCCESS
        }
        "render" => match args.target.as_deref() {
            Some("envoy") => {
                let bootstrap = match args.xds.as_deref().map(str::parse::<SocketAddr>) {
                    None => render::envoy(&loaded.policy),
                    Some(Ok(xds)) => portcullis_cli::xds::bootstrap(&loaded, xds),
                    Some(Err(_)) => return usage("--xds: an ip:port address"),
                };
                let text = render::to_yaml(&bootstrap, &loaded, "Envoy bootstrap");
                emit(args.out.as_deref(), &text)
            }
            Some("kong") => {
                if let Some(v) = &args.kong_version {
                    loaded.policy.gateway.kong_version = v.clone();
                }
                for w in render::kong_route_warnings(&loaded.policy) {
                    eprintln!("warning: {}: {w}", file.display());
                }
                let yml = render::to_yaml(
                    &render::kong(&loaded.policy),
                    &loaded,
                    "Kong declarative config",
                );
                let conf = render::kong_conf(&loaded.policy);
                match &args.out {
                    None => {
                        print!("{yml}");
                        ExitCode::SUCCESS
                    }
                    Some(dir) => {
                        let written = std::fs::create_dir_all(dir)
                            .and_then(|_| std::fs::write(dir.join("kong.yml"), &yml))
                            .and_then(|_| std::fs::write(dir.join("kong.conf"), &conf));
                        match written {
                            Ok(()) => {
                                eprintln!("wrote {0}/kong.yml and {0}/kong.conf", dir.display());
                                ExitCode::SUCCESS
                            }
                            Err(e) => {
                                eprintln!("error: {}: {e}", dir.display());
                                ExitCode::from(2)
                            }
                        }
                    }
                }
            }
            Some("kong-engine") => match render::kong_engine(&loaded) {
                Ok(conf) => emit(args.out.as_deref(), &conf),
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::from(1)
                }
            },
            Some(other) => usage(&format!(
                "--target: unknown target {other:?} (envoy, kong or kong-engine)"
            )),
            None => usage("render needs --target envoy|kong|kong-engine"),
        },
        "serve" => {
            let Some(addr) = args.xds.as_deref() else {
                return usage("serve needs --xds ADDR");
            };
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: bind {addr}: {e}");
                    return ExitCode::from(2);
                }
            };
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            if args.json {
                let started = serde_json::json!({
                    "event": "serving", "address": bound, "version": 1, "file": file.display().to_string()
                });
                println!("{started}");
            } else {
                println!("serving xDS on {bound}: version 1 from {}", file.display());
            }
            let log: fn(&portcullis_cli::xds::Event) = if args.json {
                |event| println!("{}", event.json())
            } else {
                |event| println!("{}", event.human())
            };
            let served = portcullis_cli::xds::serve(
                listener,
                file.clone(),
                loaded,
                Duration::from_millis(args.poll_ms),
                process_env,
                log,
            );
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            let Some(url) = args.kong_admin.as_deref() else {
                return usage("push needs --kong-admin URL");
            };
            let admin = match portcullis_cli::http::BaseUrl::parse(url) {
                Ok(a) => a,
                Err(e) => return usage(&e),
            };
            let options = push::Options {
                admin,
                dry_run: args.dry_run,
                retries: args.retries,
                backoff: Duration::from_millis(
                    std::env::var("PORTCULLIS_PUSH_BACKOFF_MS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(250),
                ),
                timeout: Duration::from_secs(10),
            };
            for w in render::kong_route_warnings(&loaded.policy) {
                eprintln!("warning: {}: {w}", file.display());
            }
            match push::push(&loaded.policy, &options) {
                Ok(report) => {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        );
                    } else {
                        print!("{}", push::describe(&report));
                    }
                    if report.failed() > 0 {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: cannot read Kong's current state: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

fn emit(out: Option<&Path>, text: &str) -> ExitCode {
    match out {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => {
                eprintln!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                ExitCode::from(2)
            }
        },
    }
}
