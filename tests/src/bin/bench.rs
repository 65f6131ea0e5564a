//! `scripts/bench`: every variant of `portcullis_e2e::bench` in its own Envoy (one worker, pinned to CPU 1 when
//! there are two), loaded in turn by wrk (pinned to CPU 0) for several interleaved rounds (A B C A B C …) so
//! drift hits every variant alike; then the same on Kong's engine when one is installed (one nginx worker
//! pinned the same way; `bench::engine_variants`). Writes bench/results.json, bench/results-kong-engine.json
//! and bench/RESULTS.md.
//!   bench [--quick] [--duration SECS] [--rounds N] [--connections N] [--only SUBSTRING] [--nice N] [--report-only]
//!         [--host envoy|kong-engine|all]   (default all: Envoy, then Kong's engine if there is one; `kong-engine`
//!                                          without an engine prints `skipped: <reason>` and exits 3)
//!         [--perf]   (instead of measuring: `perf record` each variant's proxy under load, print where its CPU went)

use portcullis_e2e::bench::utc_now;
use portcullis_e2e::bench::wrk::{parse_wrk, Sample};
use portcullis_e2e::bench::{
    bootstrap, engine_variants, variants, wasm_files, EngineVariant, Variant,
};
use portcullis_e2e::kong_engine::{EngineConfig, KongEngine};
use portcullis_e2e::{paths, Envoy, HostKind, Proxy};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

struct Options {
    duration_s: u64,
    rounds: usize,
    connections: usize,
    only: Option<String>,
    quick: bool,
    nice: i32,
    /// Rewrite RESULTS.md and the chart from bench/results.json without measuring.
    report_only: bool,
    perf: bool,
    /// `None`: every host there is.
    host: Option<HostKind>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        duration_s: 3,
        rounds: 8,
        connections: 16,
        only: None,
        quick: false,
        nice: -10,
        report_only: false,
        perf: false,
        host: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.quick = true;
                o.duration_s = 2;
                o.rounds = 1;
            }
            "--duration" => {
                o.duration_s = value("--duration")?.parse().map_err(|e| format!("{e}"))?
            }
            "--rounds" => o.rounds = value("--rounds")?.parse().map_err(|e| format!("{e}"))?,
            "--connections" => {
                o.connections = value("--connections")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--only" => o.only = Some(value("--only")?),
            "--report-only" => o.report_only = true,
            "--perf" => o.perf = true,
            "--host" => {
                o.host = match value("--host")?.as_str() {
                    "all" => None,
                    name => Some(
                        HostKind::parse(name)
                            .ok_or(format!("--host {name}: expected envoy, kong-engine or all"))?,
                    ),
                }
            }
            "--nice" => o.nice = value("--nice")?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn wrk(
    addr: std::net::SocketAddr,
    v: &Variant,
    script: Option<&std::path::Path>,
    o: &Options,
    duration_s: u64,
    pin: bool,
) -> Result<Sample, String> {
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    cmd.args([
        "-t1",
        &format!("-c{}", o.connections),
        &format!("-d{duration_s}s"),
        "--latency",
    ]);
    for (n, val) in &v.request_headers {
        cmd.arg("-H").arg(format!("{n}: {val}"));
    }
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}/bench"));
    let out = cmd
        .output()
        .map_err(|e| format!("wrk: {e} (install it: apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).ok_or_else(|| {
        format!(
            "cannot read wrk output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Samples the proxy's CPU (`perf record` of Envoy, or of the engine's worker) while wrk loads it, then prints
/// the split by shared object (Envoy's C++ and V8's JIT code = the wasm; nginx, libwasmtime and its JIT code;
/// libc, kernel) and the hottest symbols. Envoy's binary is stripped, so its own frames show as addresses; JIT
/// code shows as `[JIT]`/unknown unless the runtime writes a perf map.
fn profile(t: &Target, o: &Options, pin: bool) -> Result<(), String> {
    let v = &t.variant;
    let data = t.dir().join("perf.data");
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "2999",
            "-p",
            &t.busy_pid().to_string(),
            "-o",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|err| format!("perf: {err} (install linux-perf)"))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sample = wrk(
        t.proxy.listener(),
        v,
        t.script.as_deref(),
        o,
        o.duration_s,
        pin,
    );
    // SAFETY: SIGINT to the perf child we spawned, so it writes its data file and exits.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let _ = perf.wait();
    let sample = sample?;
    println!("== {} ({:.0} rps)", v.name, sample.rps);
    for sort in ["dso", "dso,sym"] {
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "-q",
                "--percent-limit",
                "1.5",
                "--sort",
                sort,
                "-i",
            ])
            .arg(&data)
            .output()
            .map_err(|err| format!("perf report: {err}"))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn allocated_bytes(envoy: &Envoy) -> Option<u64> {
    let mem = envoy.admin_get("/memory").ok()?.json();
    mem["allocated"].as_str()?.parse().ok()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} × {cpu}")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Requests that did not get the variant's expected status.
fn unexpected(v: &Variant, s: &Sample) -> u64 {
    if v.expected_status == 200 {
        s.non_2xx
    } else {
        s.requests.saturating_sub(s.non_2xx)
    }
}

/// One variant running in its own proxy, with the wrk script that builds its requests.
struct Target {
    variant: Variant,
    proxy: Proxy,
    script: Option<PathBuf>,
}

impl Target {
    /// The process that serves the requests: Envoy, or the engine's (single) worker.
    fn busy_pid(&self) -> u32 {
        match &self.proxy {
            Proxy::KongEngine(k) => k.worker_pids().first().copied().unwrap_or(k.pid()),
            other => other.pid(),
        }
    }

    fn dir(&self) -> &Path {
        match &self.proxy {
            Proxy::Envoy(e) => &e.dir,
            Proxy::KongEngine(k) => &k.dir,
        }
    }

    fn log_tail(&self) -> String {
        let mut log = self.proxy.logs();
        if log.len() > 3000 {
            let mut at = log.len() - 3000;
            while !log.is_char_boundary(at) {
                at += 1;
            }
            log = log.split_off(at);
        }
        log
    }

    /// Memory after warm-up: Envoy's `/memory` `allocated`, the engine worker's resident set.
    fn memory_bytes(&self) -> Option<u64> {
        match &self.proxy {
            Proxy::Envoy(e) => allocated_bytes(e),
            Proxy::KongEngine(_) => {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", self.busy_pid())).ok()?;
                let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
                Some(
                    kb.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()?
                        * 1024,
                )
            }
        }
    }
}

/// The variants `--only` selects whose wasm files are built; the others are reported as skipped.
fn choose<T>(
    items: Vec<T>,
    variant: impl Fn(&T) -> &Variant,
    o: &Options,
) -> (Vec<T>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for item in items {
        let v = variant(&item);
        if o.only
            .as_ref()
            .is_some_and(|s| !v.name.contains(s.as_str()) && v.group != "base")
        {
            continue;
        }
        let missing: Vec<String> = wasm_files(v)
            .into_iter()
            .filter(|w| !paths::repo_root().join(w).exists())
            .map(|w| w.display().to_string())
            .collect();
        if missing.is_empty() {
            chosen.push(item);
        } else {
            skipped.push(format!("{} ({} not built)", v.name, missing.join(", ")));
        }
    }
    (chosen, skipped)
}

/// A fresh folder for one variant, with its wrk script if it has one.
fn scratch(v: &Variant) -> Result<(PathBuf, Option<PathBuf>), String> {
    let dir = paths::scratch_dir("bench");
    let script = match &v.wrk_script {
        Some(text) => {
            let p = dir.join("wrk.lua");
            std::fs::write(&p, text).map_err(|e| e.to_string())?;
            Some(p)
        }
        None => None,
    };
    Ok((dir, script))
}

/// Warm-up (JIT tiers, connection pools, allocator, the verified-token caches), which also checks that every
/// variant answers what it should.
fn warm_up(targets: &[Target], o: &Options, pin: bool) -> Result<(), String> {
    for t in targets {
        let v = &t.variant;
        match wrk(t.proxy.listener(), v, t.script.as_deref(), o, 1, pin) {
            // (an always-limited variant lets its first request through: its bucket starts full)
            Ok(s) if unexpected(v, &s) > s.requests / 100 => {
                return Err(format!(
                "warm-up {}: {} of {} responses were not {} — the variant is misconfigured:\n{}",
                v.name,
                unexpected(v, &s),
                s.requests,
                v.expected_status,
                t.log_tail()
            ))
            }
            Ok(_) => {}
            Err(err) => return Err(format!("warm-up {}: {err}\n{}", v.name, t.log_tail())),
        }
    }
    Ok(())
}

/// Interleaved rounds (A B C A B C …): every variant's samples, and the load average after each round.
fn measure(
    targets: &[Target],
    o: &Options,
    pin: bool,
) -> Result<(Vec<Vec<Sample>>, Vec<String>), String> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    let mut loads = Vec::new();
    for round in 0..o.rounds {
        for (i, t) in targets.iter().enumerate() {
            let v = &t.variant;
            let s = wrk(
                t.proxy.listener(),
                v,
                t.script.as_deref(),
                o,
                o.duration_s,
                pin,
            )
            .map_err(|e| format!("{}: {e}", v.name))?;
            println!(
                "  round {} {:<28} {:>9.0} rps  p50 {:>7.0} µs  p99 {:>7.0} µs",
                round + 1,
                v.name,
                s.rps,
                s.p50_us,
                s.p99_us
            );
            if unexpected(v, &s) > 0 {
                println!(
                    "    ({} responses were not {})",
                    unexpected(v, &s),
                    v.expected_status
                );
            }
            samples[i].push(s);
        }
        loads.push(load_average());
        println!("  (load after round {}: {})", round + 1, loads[round]);
    }
    Ok((samples, loads))
}

/// One row per variant (its best round), with ratios to no filter, native and Lua and the µs it adds.
fn rows(
    targets: &[Target],
    samples: &[Vec<Sample>],
    memory: &[Option<u64>],
    memory_key: &str,
) -> Vec<Value> {
    let summary: Vec<Value> = targets
        .iter()
        .zip(samples)
        .zip(memory)
        .map(|((t, s), mem)| {
            let v = &t.variant;
            let best = s
                .iter()
                .max_by(|a, b| a.rps.total_cmp(&b.rps))
                .cloned()
                .unwrap_or_default();
            let sizes: Vec<u64> = wasm_files(v)
                .iter()
                .filter_map(|w| std::fs::metadata(paths::repo_root().join(w)).ok())
                .map(|m| m.len())
                .collect();
            let mut row = json!({
                "name": v.name, "group": v.group, "kind": v.kind,
                // The best round (highest RPS) stands for the variant: on a shared machine interference only
                // ever lowers throughput, so the least disturbed round is the closest to the filter's own cost.
                "rps": best.rps,
                "p50_us": best.p50_us,
                "p99_us": best.p99_us,
                "rps_median": median(s.iter().map(|x| x.rps).collect()),
                "p99_us_median": median(s.iter().map(|x| x.p99_us).collect()),
                "rps_rounds": s.iter().map(|x| x.rps.round()).collect::<Vec<_>>(),
                "expected_status": v.expected_status,
                "unexpected_responses": s.iter().map(|x| unexpected(v, x)).sum::<u64>(),
                "wasm_filters": sizes.len(),
                "wasm_bytes": (!sizes.is_empty()).then(|| sizes.iter().sum::<u64>()),
                "largest_wasm_bytes": sizes.iter().max(),
            });
            row[memory_key] = json!(mem);
            row
        })
        .collect();
    let find = |pred: &dyn Fn(&Value) -> bool| summary.iter().find(|x| pred(x)).cloned();
    let baseline = find(&|x| x["kind"] == "baseline");
    let noop = find(&|x| x["kind"] == "noop");
    // mean service time per request (1 worker: 1/RPS) minus another variant's: the difference in CPU cost
    let service_us = |x: &Value| x["rps"].as_f64().map(|r| 1e6 / r);
    let mut out = Vec::new();
    for x in &summary {
        let group = x["group"].as_str().unwrap_or("");
        let of = |kind: &str| find(&|y| y["group"] == group && y["kind"] == kind);
        let ratio = |other: &Option<Value>| {
            other
                .as_ref()
                .and_then(|o| o["rps"].as_f64())
                .map(|r| x["rps"].as_f64().unwrap_or(0.0) / r)
        };
        let added = |other: &Option<Value>| {
            other
                .as_ref()
                .and_then(|o| Some(service_us(x)? - service_us(o)?))
        };
        let mut row = x.clone();
        row["vs_baseline"] = json!(ratio(&baseline));
        row["vs_native"] = json!(if x["kind"] == "native" {
            None
        } else {
            ratio(&of("native"))
        });
        row["vs_lua"] = json!(if x["kind"] == "lua" {
            None
        } else {
            ratio(&of("lua"))
        });
        row["added_p99_over_noop_us"] = json!(noop
            .as_ref()
            .and_then(|n| Some(x["p99_us"].as_f64()? - n["p99_us"].as_f64()?)));
        row["added_p50_over_noop_us"] = json!(noop
            .as_ref()
            .and_then(|n| Some(x["p50_us"].as_f64()? - n["p50_us"].as_f64()?)));
        row["added_us_per_request"] = json!(added(&baseline));
        row["added_us_over_noop"] = json!(added(&noop));
        out.push(row);
    }
    out
}

fn write_json(name: &str, report: &Value) {
    let dir = paths::repo_root().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(name),
        serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
    );
}

/// Measures `targets` (the report's common part), or with `--perf` profiles them (`None`).
fn run(
    targets: &[Target],
    o: &Options,
    pin: bool,
    memory_key: &str,
) -> Result<Option<Value>, String> {
    warm_up(targets, o, pin)?;
    if o.perf {
        for t in targets {
            profile(t, o, pin).map_err(|err| format!("perf {}: {err}", t.variant.name))?;
        }
        return Ok(None);
    }
    let memory: Vec<Option<u64>> = targets.iter().map(Target::memory_bytes).collect();
    let (samples, loads) = measure(targets, o, pin)?;
    Ok(Some(json!({
        "date": utc_now(), "machine": machine(),
        "quick": o.quick, "duration_s": o.duration_s, "rounds": o.rounds, "connections": o.connections,
        "pinned": pin, "load_average_rounds": loads,
        "results": rows(targets, &samples, &memory, memory_key),
    })))
}

/// The Envoy run: bench/results.json.
fn run_envoy(o: &Options, pin: bool, niced: bool) -> Result<(), String> {
    let load_before = load_average();
    let mut all = variants();
    if o.only.as_deref().is_some_and(|s| s.starts_with("probe")) {
        all.extend(portcullis_e2e::bench::probe_variants());
    }
    let (chosen, skipped) = choose(all, |v| v, o);
    println!(
        "bench (envoy): {} variants, {} round(s) × {} s, {} connections, envoy pinned: {pin}, load {load_before}",
        chosen.len(),
        o.rounds,
        o.duration_s,
        o.connections
    );
    let mut targets = Vec::new();
    for v in chosen {
        let (dir, script) = scratch(&v)?;
        let path = dir.join("envoy.json");
        std::fs::write(&path, bootstrap(&v).to_string()).map_err(|e| e.to_string())?;
        let envoy = Envoy::start_file_on_cpu(&path, &dir, 1, pin.then_some(1))
            .map_err(|e| format!("{} did not start: {e}", v.name))?;
        targets.push(Target {
            variant: v,
            proxy: Proxy::Envoy(envoy),
            script,
        });
    }
    let report = run(&targets, o, pin, "envoy_allocated_bytes")?;
    drop(targets);
    let Some(mut report) = report else {
        return Ok(());
    };
    report["envoy"] = json!("1.40.0 (--concurrency 1)");
    report["nice"] = json!(niced.then_some(o.nice));
    report["load_average_before"] = json!(load_before);
    report["load_average_after"] = json!(load_average());
    report["rotating_tokens"] = json!(portcullis_e2e::bench::ROTATING_TOKENS);
    report["skipped"] = json!(skipped);
    write_json("results.json", &report);
    Ok(())
}

/// The engine's versions: nginx from `nginx -V`, ngx_wasm_module's commit and wasmtime's version from the
/// sources and headers it was built with (as its configure line names them), where they are still there.
fn engine_pins(binary: &Path) -> String {
    let v = Command::new(binary)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    let nginx = v
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("nginx version: "))
        .unwrap_or("nginx (unknown version)")
        .replace('/', " ");
    // the configure line's words, quotes removed (`--with-cc-opt='-I/x -O2'`)
    let words: Vec<String> = v.split_whitespace().map(|w| w.replace('\'', "")).collect();
    let arg = |prefix: &str| {
        words.iter().find_map(|w| {
            let w = w.strip_prefix("--with-cc-opt=").unwrap_or(w);
            w.strip_prefix(prefix).map(str::to_string)
        })
    };
    // the module's folder, named by nginx -V's `add-module` option (read, never run)
    let module = words
        .iter()
        .find_map(|w| {
            let (option, value) = w.trim_start_matches('-').split_once('=')?;
            (option == "add-module").then(|| value.to_string())
        })
        .and_then(|dir| {
            let out = Command::new("git")
                .args(["-C", &dir, "rev-parse", "--short=7", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "(commit unknown)".into());
    let wasmtime = arg("-I")
        .and_then(|inc| std::fs::read_to_string(Path::new(&inc).join("wasmtime.h")).ok())
        .and_then(|h| {
            h.lines().find_map(|l| {
                l.strip_prefix("#define WASMTIME_VERSION ")
                    .map(|x| x.trim().trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "(version unknown)".into());
    format!("{nginx} + ngx_wasm_module {module} + wasmtime {wasmtime}")
}

/// The Kong-engine run: bench/results-kong-engine.json.
fn run_engine(o: &Options, pin: bool, niced: bool, binary: &Path) -> Result<(), String> {
    let load_before = load_average();
    let (chosen, skipped) = choose(engine_variants(), |e: &EngineVariant| &e.variant, o);
    let engine = engine_pins(binary);
    println!(
        "bench (kong-engine: {engine}): {} variants, {} round(s) × {} s, {} connections, worker pinned: {pin}, load {load_before}",
        chosen.len(),
        o.rounds,
        o.duration_s,
        o.connections
    );
    let mut targets = Vec::new();
    for e in chosen {
        let (_, script) = scratch(&e.variant)?;
        let config = EngineConfig::bench(e.chain, e.native, pin.then_some(1))
            .map_err(|err| format!("{}: {err}", e.variant.name))?;
        let engine = KongEngine::start(&config)
            .map_err(|err| format!("{} did not start: {err}", e.variant.name))?;
        targets.push(Target {
            variant: e.variant,
            proxy: Proxy::KongEngine(engine),
            script,
        });
    }
    let report = run(&targets, o, pin, "worker_rss_bytes");
    // a trap or a failed worker fails the run here, with its lines, rather than in the engine's drop
    let mut fatal = Vec::new();
    for t in &mut targets {
        if let Proxy::KongEngine(k) = &t.proxy {
            let lines = k.fatal_log_lines();
            if let Some(first) = lines.first() {
                fatal.push(format!(
                    "{} ({} lines): {first}",
                    t.variant.name,
                    lines.len()
                ));
            }
        }
        t.proxy.expect_fatal_log_lines();
    }
    drop(targets);
    let report = report?;
    if !fatal.is_empty() {
        return Err(format!(
            "Kong's engine logged fatal errors:\n{}",
            fatal.join("\n")
        ));
    }
    let Some(mut report) = report else {
        return Ok(());
    };
    report["host"] = json!("kong-engine");
    report["engine"] = json!(engine);
    report["nice"] = json!(niced.then_some(o.nice));
    report["load_average_before"] = json!(load_before);
    report["load_average_after"] = json!(load_average());
    report["skipped"] = json!(skipped);
    write_json("results-kong-engine.json", &report);
    Ok(())
}

/// Exit status of `--host kong-engine` without an engine (a skip, as in scripts/test).
const SKIPPED: u8 = 3;

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if o.report_only {
        return write_report();
    }
    let pin = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    // The proxies and wrk inherit this priority: on a machine shared with compilers the measured processes win
    // their CPU (root only; otherwise the run goes on at normal priority and the report says so).
    // SAFETY: setpriority on our own process with plain integer arguments.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, o.nice) } == 0;
    let hosts = match o.host {
        Some(h) => vec![h],
        None => vec![HostKind::Envoy, HostKind::KongEngine],
    };
    for host in hosts {
        let result = match host {
            HostKind::Envoy => run_envoy(&o, pin, niced),
            HostKind::KongEngine => match paths::kong_engine_binary() {
                Ok(binary) => run_engine(&o, pin, niced, &binary),
                Err(reason) if o.host.is_some() => {
                    println!("skipped: {reason}");
                    return ExitCode::from(SKIPPED);
                }
                Err(reason) => {
                    println!("bench: Kong's engine skipped: {reason}");
                    Ok(())
                }
            },
        };
        if let Err(e) = result {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    if o.perf {
        return ExitCode::SUCCESS;
    }
    write_report()
}

fn read_report(name: &str) -> Option<Value> {
    let path = paths::repo_root().join("bench").join(name);
    let text = std::fs::read_to_string(&path).ok()?;
    serde_json::from_str(&text)
        .map_err(|e| eprintln!("bench: {}: {e}", path.display()))
        .ok()
}

/// bench/RESULTS.md from bench/results.json and bench/results-kong-engine.json (whichever exist), and the
/// chart bench/ratios.png from Envoy's.
fn write_report() -> ExitCode {
    let dir = paths::repo_root().join("bench");
    let envoy = read_report("results.json");
    let engine = read_report("results-kong-engine.json");
    if envoy.is_none() && engine.is_none() {
        eprintln!("bench: no bench/results.json or bench/results-kong-engine.json to report");
        return ExitCode::FAILURE;
    }
    let mut md = match &envoy {
        Some(report) => markdown(report),
        None => "# Benchmark results\n\n".to_string(),
    };
    if let Some(report) = &engine {
        md.push_str(&engine_markdown(report));
    }
    // real Kong against its Lua plugins (kong-bench writes its own section)
    if let Some(section) =
        read_report("results-kong.json").and_then(|r| r["markdown"].as_str().map(str::to_string))
    {
        md.push_str(&section);
    }
    // The hand-written analysis of the committed run (where the time goes, what was profiled) is kept in
    // bench/ANALYSIS.md and appended, so a re-run refreshes the numbers without losing it.
    if let Ok(notes) = std::fs::read_to_string(dir.join("ANALYSIS.md")) {
        md.push('\n');
        md.push_str(&notes);
    }
    let _ = std::fs::write(dir.join("RESULTS.md"), &md);
    println!("\n{md}");
    let Some(report) = envoy else {
        return ExitCode::SUCCESS;
    };
    let svg = chart::svg(&report);
    let svg_path = dir.join("ratios.svg");
    let png_path = dir.join("ratios.png");
    let _ = std::fs::write(&svg_path, &svg);
    match Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png_path)
        .arg(&svg_path)
        .status()
    {
        Ok(s) if s.success() => println!("chart: {}", png_path.display()),
        _ => eprintln!(
            "bench: rsvg-convert (Debian librsvg2-bin) failed; the chart is only in {}",
            svg_path.display()
        ),
    }
    ExitCode::SUCCESS
}

fn fmt_ratio(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |r| format!("{r:.2}×"))
}

fn fmt_us(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |v| format!("{v:.0}"))
}

/// The Markdown table (the narrative around it lives in bench/RESULTS.md's notes, appended by hand after a run).
fn markdown(report: &Value) -> String {
    let mut out = String::new();
    out.push_str("# Benchmark results\n\n");
    out.push_str(&format!(
        "Measured {} on {} with `scripts/bench{}`: Envoy {}, direct-response route, wrk 1 thread × {} connections, \
         {} s × {} interleaved round(s); each variant's numbers are from its best round (highest RPS; the \
         median RPS of all rounds is in results.json); Envoy pinned to CPU 1 and wrk to CPU 0: {}; nice {}. \
         Load average before / after: {} / {}. Rotating-token variants send {} distinct tokens round-robin.\n\
         Absolute numbers are noisy on this machine; compare ratios within one run.\n\n",
        report["date"].as_str().unwrap_or(""),
        report["machine"].as_str().unwrap_or(""),
        if report["quick"] == true { " --quick" } else { "" },
        report["envoy"].as_str().unwrap_or(""),
        report["connections"], report["duration_s"], report["rounds"], report["pinned"], report["nice"],
        report["load_average_before"].as_str().unwrap_or(""),
        report["load_average_after"].as_str().unwrap_or(""),
        report["rotating_tokens"],
    ));
    out.push_str("| variant | RPS | RPS per round | p50 µs | p99 µs | added p50 / p99 vs noop µs | added µs/request vs baseline | vs baseline | vs native | vs Lua | Envoy allocated MB | .wasm KB |\n");
    out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in report["results"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            row_name(r),
            r["rps"].as_f64().unwrap_or(0.0),
            rps_rounds(r),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            fmt_us(&r["added_p50_over_noop_us"]),
            fmt_us(&r["added_p99_over_noop_us"]),
            fmt_us(&r["added_us_per_request"]),
            fmt_ratio(&r["vs_baseline"]),
            fmt_ratio(&r["vs_native"]),
            fmt_ratio(&r["vs_lua"]),
            r["envoy_allocated_bytes"]
                .as_u64()
                .map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e6)),
            wasm_size(r),
        ));
    }
    out.push_str(&targets(report));
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !skipped.is_empty() {
        out.push_str(&format!(
            "\nNot measured (filter not built): {}\n",
            skipped.join(", ")
        ));
    }
    out
}

/// A row's variant name, flagged when some responses were not the expected status.
fn row_name(r: &Value) -> String {
    let mut name = r["name"].as_str().unwrap_or("").to_string();
    if r["unexpected_responses"].as_u64().unwrap_or(0) > 0 {
        name.push_str(&format!(
            " ⚠ {} responses not {}",
            r["unexpected_responses"], r["expected_status"]
        ));
    }
    name
}

fn rps_rounds(r: &Value) -> String {
    let rounds: Vec<String> = r["rps_rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .map(|x| format!("{x:.0}"))
        .collect();
    rounds.join(" ")
}

fn wasm_size(r: &Value) -> String {
    match (r["wasm_bytes"].as_u64(), r["wasm_filters"].as_u64()) {
        (Some(b), Some(n)) if n > 1 => format!("{:.0} ({n} files)", b as f64 / 1e3),
        (Some(b), _) => format!("{:.0}", b as f64 / 1e3),
        _ => "–".into(),
    }
}

fn fmt_added_us(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |v| format!("{v:+.1}"))
}

/// Goals on Kong's engine: each single filter adds at most this much over the empty filter…
const ENGINE_SINGLE_FILTER_MAX_US: f64 = 2.0;
/// …and the 5-policy bundle keeps at least this share of the no-filter throughput.
const ENGINE_BUNDLE_MIN_RATIO: f64 = 0.6;

/// The "Kong's engine" section of RESULTS.md (from bench/results-kong-engine.json): method, table, goals.
fn engine_markdown(report: &Value) -> String {
    let text = |key: &str| report[key].as_str().unwrap_or("").to_string();
    let loads: Vec<&str> = report["load_average_rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str()?.split_whitespace().next())
        .collect();
    let mut out = String::from("\n## Kong's engine\n\n");
    out.push_str(&format!(
        "Measured {} on {} with `scripts/bench --host kong-engine{}`: {}. The variants of the Envoy table that are \
         made only of wasm filters, running the same `.wasm` files with the same configuration texts, plus nginx's own \
         `proxy_set_header` (with `add_header`) and `limit_req` as native anchors. Method as for Envoy: one nginx \
         worker pinned to CPU 1 (taskset) and wrk (1 thread × {} connections) to CPU 0 (pinned: {}); nice {}; {} s × {} \
         interleaved round(s), each variant's numbers from its best round (highest RPS). Each request is proxied \
         (`proxy_pass`, upstream connections kept alive as Kong keeps them by default) to an origin served by the \
         same worker (`return 200`), so only the engine is measured. µs/request is the difference in mean service time \
         (1/RPS of the one worker) from no filter and from the empty filter (`noop`, bench/noop). Load average \
         (1/5/15 min) before / after: {} / {}; 1-minute load after each round: {}.\n\n",
        text("date"),
        text("machine"),
        if report["quick"] == true { " --quick" } else { "" },
        text("engine"),
        report["connections"],
        report["pinned"],
        report["nice"],
        report["duration_s"],
        report["rounds"],
        text("load_average_before"),
        text("load_average_after"),
        loads.join(", "),
    ));
    out.push_str("| variant | RPS | RPS per round | p50 µs | p99 µs | vs no filter | µs/request over no filter | µs/request over empty filter | vs native | worker RSS MB | .wasm KB |\n");
    out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let rows: Vec<&Value> = report["results"].as_array().into_iter().flatten().collect();
    for r in &rows {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            row_name(r),
            r["rps"].as_f64().unwrap_or(0.0),
            rps_rounds(r),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            fmt_ratio(&r["vs_baseline"]),
            fmt_added_us(&r["added_us_per_request"]),
            fmt_added_us(&r["added_us_over_noop"]),
            fmt_ratio(&r["vs_native"]),
            r["worker_rss_bytes"]
                .as_u64()
                .map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e6)),
            wasm_size(r),
        ));
    }
    out.push_str(
        "\n### Goals on Kong's engine\n\n| goal | variant | measured | status |\n|---|---|---:|---|\n",
    );
    for r in &rows {
        // one Portcullis filter alone (the chain group's 5 separate filters are not one filter)
        if r["kind"] != "portcullis" || r["group"] == "chain" {
            continue;
        }
        let Some(us) = r["added_us_over_noop"].as_f64() else {
            continue;
        };
        // as in Envoy's targets, rotating tokens (a full signature check each) and a variant that answers
        // every request itself (never proxying, unlike the empty filter) are shown without a goal
        let (goal, status) = if r["group"]
            .as_str()
            .is_some_and(|g| g.ends_with("-rotating"))
        {
            ("(no goal) the same, every token new".to_string(), "–")
        } else if r["expected_status"] != 200 {
            (
                "(no goal) the same, answering every request itself".to_string(),
                "–",
            )
        } else {
            (
                format!("each single filter ≤ +{ENGINE_SINGLE_FILTER_MAX_US} µs/request over the empty filter"),
                verdict(us <= ENGINE_SINGLE_FILTER_MAX_US),
            )
        };
        out.push_str(&format!(
            "| {goal} | {} | {us:+.1} µs | {status} |\n",
            r["name"].as_str().unwrap_or("")
        ));
    }
    for (goal, name) in [
        (
            format!("bundle of 5 ≥ {ENGINE_BUNDLE_MIN_RATIO}× no filter"),
            "chain/bundle",
        ),
        (
            "(no goal) the 5 policies as separate filters vs no filter".to_string(),
            "chain/portcullis",
        ),
    ] {
        let Some(r) = rows.iter().find(|r| r["name"] == name) else {
            continue;
        };
        if let Some(ratio) = r["vs_baseline"].as_f64() {
            let status = if name == "chain/bundle" {
                verdict(ratio >= ENGINE_BUNDLE_MIN_RATIO)
            } else {
                "–"
            };
            out.push_str(&format!(
                "| {goal} | {name} | {ratio:.2}× ({} µs/request) | {status} |\n",
                fmt_added_us(&r["added_us_per_request"])
            ));
        }
    }
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !skipped.is_empty() {
        out.push_str(&format!(
            "\nNot measured (filter not built): {}\n",
            skipped.join(", ")
        ));
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// The issue's targets, each checked against this run's numbers.
fn targets(report: &Value) -> String {
    let rows: Vec<&Value> = report["results"].as_array().into_iter().flatten().collect();
    let get = |name: &str| rows.iter().find(|r| r["name"] == name).copied();
    let noop = rows.iter().find(|r| r["kind"] == "noop").copied();
    let mut out = String::from(
        "\n## Targets\n\n| target | variant | measured | status |\n|---|---|---:|---|\n",
    );
    let mut ratio_row = |target: &str, name: &str, field: &str, min: f64| {
        if let Some(v) = get(name).and_then(|r| r[field].as_f64()) {
            let status = if target.starts_with("(no target)") {
                "–"
            } else {
                verdict(v >= min)
            };
            out.push_str(&format!("| {target} | {name} | {v:.2}× | {status} |\n"));
        }
    };
    for g in ["jwt-rs256", "jwt-hs256"] {
        ratio_row(
            "jwt-auth ≥ 1.0× jwt_authn (reused token: both caches hit)",
            &format!("{g}/portcullis"),
            "vs_native",
            1.0,
        );
    }
    for g in ["jwt-rs256-rotating", "jwt-hs256-rotating"] {
        ratio_row(
            "(no target) jwt-auth vs jwt_authn, every token new",
            &format!("{g}/portcullis"),
            "vs_native",
            1.0,
        );
    }
    for g in ["rate-limit-open", "rate-limit-limited"] {
        ratio_row(
            "rate-limit ≥ 1.0× local_ratelimit",
            &format!("{g}/portcullis"),
            "vs_native",
            1.0,
        );
    }
    for r in &rows {
        if r["kind"] == "portcullis" && r["vs_lua"].is_number() {
            ratio_row(
                "≥ 2× the Lua equivalent",
                r["name"].as_str().unwrap_or(""),
                "vs_lua",
                2.0,
            );
        }
    }
    ratio_row(
        "bundle of 5 ≥ 0.65× no filter",
        "chain/bundle",
        "vs_baseline",
        0.65,
    );
    ratio_row(
        "(no target) 5 separate filters vs no filter",
        "chain/portcullis",
        "vs_baseline",
        0.65,
    );
    for r in &rows {
        if r["kind"] != "portcullis" && r["kind"] != "bundle" {
            continue;
        }
        if let Some(v) = r["added_p99_over_noop_us"].as_f64() {
            let per_request = r["added_us_per_request"]
                .as_f64()
                .zip(noop.and_then(|n| n["added_us_per_request"].as_f64()));
            out.push_str(&format!(
                "| added p99 ≤ 50 µs over noop (wrk -c{}) | {} | {v:.0} µs (p50 {} µs; service time {}) | {} |\n",
                report["connections"],
                r["name"].as_str().unwrap_or(""),
                fmt_us(&r["added_p50_over_noop_us"]),
                per_request.map_or("–".into(), |(x, n)| format!("+{:.1} µs/request", x - n)),
                verdict(v <= 50.0)
            ));
        }
    }
    let mut wasm: Vec<(String, u64)> = std::fs::read_dir(
        paths::wasm("x")
            .parent()
            .unwrap_or(std::path::Path::new("dist")),
    )
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".wasm")?.to_string();
        Some((stem, e.metadata().ok()?.len()))
    })
    .collect();
    wasm.sort();
    for (name, bytes) in wasm {
        out.push_str(&format!(
            "| each .wasm ≤ 300 KB (300 000 B) | dist/{name}.wasm | {:.0} KB ({bytes} B) | {} |\n",
            bytes as f64 / 1e3,
            verdict(bytes <= 300_000)
        ));
    }
    out
}

/// bench/ratios.svg (converted to bench/ratios.png): RPS relative to no filter for every variant, and each
/// Portcullis variant relative to the native and Lua filters of its group, with the targets drawn in.
mod chart {
    use serde_json::Value;
    use std::fmt::Write;

    const W: f64 = 980.0;
    const LABEL: f64 = 250.0;
    const BAR_H: f64 = 15.0;
    const GAP: f64 = 5.0;

    fn color(kind: &str) -> &'static str {
        match kind {
            "baseline" => "#777777",
            "noop" => "#aaaaaa",
            "portcullis" => "#1f77b4",
            "bundle" => "#17becf",
            "native" => "#2ca02c",
            "lua" => "#ff7f0e",
            _ => "#444444",
        }
    }

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// One horizontal bar chart; `bars` = (label, value, colour); `marks` = (value, label) vertical lines.
    fn panel(
        out: &mut String,
        y0: f64,
        title: &str,
        bars: &[(String, f64, &str)],
        max: f64,
        marks: &[(f64, &str)],
    ) -> f64 {
        let plot_w = W - LABEL - 80.0;
        let x = |v: f64| LABEL + plot_w * (v / max).clamp(0.0, 1.0);
        let _ = writeln!(
            out,
            r#"<text x="10" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
            y0 + 16.0,
            esc(title)
        );
        let top = y0 + 42.0;
        let bottom = top + bars.len() as f64 * (BAR_H + GAP);
        for (i, (label, v, c)) in bars.iter().enumerate() {
            let y = top + i as f64 * (BAR_H + GAP);
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
                LABEL - 6.0,
                y + BAR_H - 3.0,
                esc(label)
            );
            let _ = writeln!(
                out,
                r#"<rect x="{LABEL}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{c}"/>"#,
                x(*v) - LABEL
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="11">{v:.2}×</text>"#,
                x(*v) + 4.0,
                y + BAR_H - 3.0
            );
        }
        for (v, label) in marks {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
                x(*v),
                top - 4.0,
                bottom
            );
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#d62728" text-anchor="middle">{}</text>"##,
                x(*v),
                top - 7.0,
                esc(label)
            );
        }
        bottom + 20.0
    }

    pub fn svg(report: &Value) -> String {
        let rows: Vec<&Value> = report["results"].as_array().into_iter().flatten().collect();
        let vs_base: Vec<(String, f64, &str)> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    r["name"].as_str()?.to_string(),
                    r["vs_baseline"].as_f64()?,
                    color(r["kind"].as_str()?),
                ))
            })
            .collect();
        let mut vs_other: Vec<(String, f64, &str)> = Vec::new();
        for r in &rows {
            let kind = r["kind"].as_str().unwrap_or("");
            if kind != "portcullis" && kind != "bundle" {
                continue;
            }
            let name = r["name"].as_str().unwrap_or("");
            if let Some(v) = r["vs_native"].as_f64() {
                vs_other.push((format!("{name} ÷ native"), v, "#2ca02c"));
            }
            if let Some(v) = r["vs_lua"].as_f64() {
                vs_other.push((format!("{name} ÷ Lua"), v, "#ff7f0e"));
            }
        }
        let max1 = vs_base.iter().map(|b| b.1).fold(1.1f64, f64::max);
        let max2 = vs_other.iter().map(|b| b.1).fold(2.2f64, f64::max);
        let mut body = String::new();
        let mut y = panel(
            &mut body,
            50.0,
            "RPS relative to no filter (baseline = 1.00×)",
            &vs_base,
            max1 * 1.05,
            &[(1.0, "baseline"), (0.65, "bundle target 0.65")],
        );
        y = panel(
            &mut body,
            y,
            "Portcullis RPS relative to Envoy native (target ≥ 1.0×) and Envoy Lua (target ≥ 2.0×)",
            &vs_other,
            max2 * 1.05,
            &[(1.0, "1.0×"), (2.0, "2.0×")],
        );
        let legend = [
            ("baseline", "no filter"),
            ("noop", "empty wasm"),
            ("portcullis", "Portcullis"),
            ("bundle", "bundle"),
            ("native", "native"),
            ("lua", "Lua"),
        ];
        let mut head = String::new();
        let _ = writeln!(
            head,
            r#"<text x="10" y="22" font-size="16" font-weight="bold">Portcullis bench — {} — {}{}</text>"#,
            esc(report["date"].as_str().unwrap_or("")),
            esc(report["machine"].as_str().unwrap_or("")),
            if report["quick"] == true {
                " (quick)"
            } else {
                ""
            }
        );
        for (i, (k, label)) in legend.iter().enumerate() {
            let x = 10.0 + i as f64 * 110.0;
            let _ = writeln!(
                head,
                r#"<rect x="{x}" y="32" width="10" height="10" fill="{}"/><text x="{}" y="41" font-size="11">{label}</text>"#,
                color(k),
                x + 13.0
            );
        }
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{:.0}" font-family="DejaVu Sans, sans-serif">
<rect width="100%" height="100%" fill="white"/>
{head}{body}</svg>
"#,
            y + 10.0
        )
    }
}
