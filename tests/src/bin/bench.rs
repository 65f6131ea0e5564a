//! `scripts/bench`: every variant of `portcullis_e2e::bench` in its own Envoy (one worker, pinned to CPU 1 when
//! there are two), loaded in turn by wrk (pinned to CPU 0) for several interleaved rounds (A B C A B C …) so
//! drift hits every variant alike. Writes bench/results.json and bench/RESULTS.md.
//!   bench [--quick] [--duration SECS] [--rounds N] [--connections N] [--only SUBSTRING] [--nice N] [--report-only]
//!         [--perf]   (instead of measuring: `perf record` each variant's Envoy under load, print where its CPU went)

use portcullis_e2e::bench::{bootstrap, variants, wasm_files, Variant};
use portcullis_e2e::{paths, Envoy};
use serde_json::{json, Value};
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
            "--nice" => o.nice = value("--nice")?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

#[derive(Debug, Clone, Default)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx: u64,
    requests: u64,
}

/// Parses wrk's `--latency` output.
fn parse_wrk(out: &str) -> Option<Sample> {
    let mut s = Sample::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            s.rps = v.trim().parse().ok()?;
        } else if let Some(v) = t.strip_prefix("50%") {
            s.p50_us = duration_us(v.trim())?;
        } else if let Some(v) = t.strip_prefix("99%") {
            s.p99_us = duration_us(v.trim())?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx = v.trim().parse().ok()?;
        } else if let Some((n, _)) = t.split_once(" requests in ") {
            s.requests = n.trim().parse().ok()?;
        }
    }
    (s.rps > 0.0).then_some(s)
}

fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    })
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

/// Samples Envoy's CPU (`perf record`) while wrk loads it, then prints the split by shared object (Envoy's
/// C++, V8's JIT code = the wasm, libc, kernel) and the hottest symbols. Envoy's binary is stripped, so its
/// own frames show as addresses; the wasm shows as `[JIT]`/unknown unless V8 writes a perf map.
fn profile(
    v: &Variant,
    e: &Envoy,
    script: Option<&std::path::Path>,
    o: &Options,
    pin: bool,
) -> Result<(), String> {
    let data = e.dir.join("perf.data");
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "2999",
            "-p",
            &e.pid().to_string(),
            "-o",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|err| format!("perf: {err} (install linux-perf)"))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sample = wrk(e.listener, v, script, o, o.duration_s, pin);
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

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if o.report_only {
        let path = paths::repo_root().join("bench/results.json");
        return match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(report) => write_report(&report),
            Err(e) => {
                eprintln!("bench: {}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    let pin = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    // Envoy and wrk inherit this priority: on a machine shared with compilers the measured processes win
    // their CPU (root only; otherwise the run goes on at normal priority and the report says so).
    // SAFETY: setpriority on our own process with plain integer arguments.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, o.nice) } == 0;
    let load_before = load_average();
    let mut chosen: Vec<Variant> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut all = variants();
    if o.only.as_deref().is_some_and(|s| s.starts_with("probe")) {
        all.extend(portcullis_e2e::bench::probe_variants());
    }
    for v in all {
        if o.only
            .as_ref()
            .is_some_and(|s| !v.name.contains(s.as_str()) && v.group != "base")
        {
            continue;
        }
        let missing: Vec<String> = wasm_files(&v)
            .into_iter()
            .filter(|w| !paths::repo_root().join(w).exists())
            .map(|w| w.display().to_string())
            .collect();
        if missing.is_empty() {
            chosen.push(v);
        } else {
            skipped.push(format!("{} ({} not built)", v.name, missing.join(", ")));
        }
    }
    println!(
        "bench: {} variants, {} round(s) × {} s, {} connections, envoy pinned: {pin}, load {load_before}",
        chosen.len(),
        o.rounds,
        o.duration_s,
        o.connections
    );
    let mut envoys = Vec::new();
    let mut scripts: Vec<Option<std::path::PathBuf>> = Vec::new();
    for v in &chosen {
        let dir = paths::scratch_dir("bench");
        let path = dir.join("envoy.json");
        if let Err(e) = std::fs::write(&path, bootstrap(v).to_string()) {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
        let script = v.wrk_script.as_ref().map(|text| {
            let p = dir.join("wrk.lua");
            let _ = std::fs::write(&p, text);
            p
        });
        scripts.push(script);
        match Envoy::start_file_on_cpu(&path, &dir, 1, pin.then_some(1)) {
            Ok(e) => envoys.push(e),
            Err(e) => {
                eprintln!("bench: {} did not start: {e}", v.name);
                return ExitCode::FAILURE;
            }
        }
    }
    // warm-up: JIT tiers, connection pools, allocator, the verified-token caches
    for ((v, e), script) in chosen.iter().zip(&envoys).zip(&scripts) {
        match wrk(e.listener, v, script.as_deref(), &o, 1, pin) {
            // (an always-limited variant lets its first request through: its bucket starts full)
            Ok(s) if unexpected(v, &s) > s.requests / 100 => {
                let mut log = e.logs();
                if log.len() > 3000 {
                    log = log.split_off(log.len() - 3000);
                }
                eprintln!(
                    "bench: warm-up {}: {} of {} responses were not {} — the variant is misconfigured:\n{log}",
                    v.name,
                    unexpected(v, &s),
                    s.requests,
                    v.expected_status
                );
                return ExitCode::FAILURE;
            }
            Ok(_) => {}
            Err(err) => {
                let mut log = e.logs();
                if log.len() > 3000 {
                    log = log.split_off(log.len() - 3000);
                }
                eprintln!("bench: warm-up {}: {err}\n{log}", v.name);
                return ExitCode::FAILURE;
            }
        }
    }
    if o.perf {
        for ((v, e), script) in chosen.iter().zip(&envoys).zip(&scripts) {
            if let Err(err) = profile(v, e, script.as_deref(), &o, pin) {
                eprintln!("bench: perf {}: {err}", v.name);
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let memory: Vec<Option<u64>> = envoys.iter().map(allocated_bytes).collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); chosen.len()];
    for round in 0..o.rounds {
        for (i, ((v, e), script)) in chosen.iter().zip(&envoys).zip(&scripts).enumerate() {
            match wrk(e.listener, v, script.as_deref(), &o, o.duration_s, pin) {
                Ok(s) => {
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
                Err(e) => {
                    eprintln!("bench: {}: {e}", v.name);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    drop(envoys);
    let load_after = load_average();

    let summary: Vec<Value> = chosen
        .iter()
        .zip(&samples)
        .zip(&memory)
        .map(|((v, s), mem)| {
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
            json!({
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
                "envoy_allocated_bytes": mem,
                "wasm_filters": sizes.len(),
                "wasm_bytes": (!sizes.is_empty()).then(|| sizes.iter().sum::<u64>()),
                "largest_wasm_bytes": sizes.iter().max(),
            })
        })
        .collect();
    let find = |pred: &dyn Fn(&Value) -> bool| summary.iter().find(|x| pred(x)).cloned();
    let baseline = find(&|x| x["kind"] == "baseline");
    let noop = find(&|x| x["kind"] == "noop");
    let mut rows = Vec::new();
    for x in &summary {
        let group = x["group"].as_str().unwrap_or("");
        let of = |kind: &str| find(&|y| y["group"] == group && y["kind"] == kind);
        let ratio = |other: &Option<Value>| {
            other
                .as_ref()
                .and_then(|o| o["rps"].as_f64())
                .map(|r| x["rps"].as_f64().unwrap_or(0.0) / r)
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
        // mean service time per request (1 worker: 1/RPS) minus the no-filter one: the filter's CPU cost
        row["added_us_per_request"] = json!(baseline
            .as_ref()
            .and_then(|b| Some(1e6 / x["rps"].as_f64()? - 1e6 / b["rps"].as_f64()?)));
        rows.push(row);
    }
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let report = json!({
        "date": date, "machine": machine(), "envoy": "1.40.0 (--concurrency 1)",
        "quick": o.quick, "duration_s": o.duration_s, "rounds": o.rounds, "connections": o.connections,
        "pinned": pin, "nice": niced.then_some(o.nice), "load_average_before": load_before, "load_average_after": load_after,
        "rotating_tokens": portcullis_e2e::bench::ROTATING_TOKENS,
        "results": rows, "skipped": skipped,
    });
    let dir = paths::repo_root().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    );
    write_report(&report)
}

/// bench/RESULTS.md and bench/ratios.png from a report.
fn write_report(report: &Value) -> ExitCode {
    let dir = paths::repo_root().join("bench");
    let md = markdown(report);
    let _ = std::fs::write(dir.join("RESULTS.md"), &md);
    println!("\n{md}");
    let svg = chart::svg(report);
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
        let rounds: Vec<String> = r["rps_rounds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|x| format!("{x:.0}"))
            .collect();
        let mut name = r["name"].as_str().unwrap_or("").to_string();
        if r["unexpected_responses"].as_u64().unwrap_or(0) > 0 {
            name.push_str(&format!(
                " ⚠ {} responses not {}",
                r["unexpected_responses"], r["expected_status"]
            ));
        }
        let wasm = match (r["wasm_bytes"].as_u64(), r["wasm_filters"].as_u64()) {
            (Some(b), Some(n)) if n > 1 => format!("{:.0} ({n} files)", b as f64 / 1e3),
            (Some(b), _) => format!("{:.0}", b as f64 / 1e3),
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            name,
            r["rps"].as_f64().unwrap_or(0.0),
            rounds.join(" "),
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
            wasm,
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
    // The hand-written analysis of the committed run (where the time goes, what was profiled) is kept in
    // bench/ANALYSIS.md and appended, so a re-run refreshes the numbers without losing it.
    if let Ok(notes) = std::fs::read_to_string(paths::repo_root().join("bench/ANALYSIS.md")) {
        out.push('\n');
        out.push_str(&notes);
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
