//! `scripts/bench`: every variant of `portcullis_e2e::bench` in its own Envoy (one worker, pinned to CPU 1 when
//! there are two), loaded in turn by wrk (pinned to CPU 0) for several interleaved rounds (A B C A B C …) so
//! drift hits every variant alike. Writes bench/results.json and bench/RESULTS.md.
//!   bench [--quick] [--duration SECS] [--rounds N] [--connections N] [--only SUBSTRING]

use portcullis_e2e::bench::{bootstrap, variants, Variant};
use portcullis_e2e::{paths, Envoy};
use serde_json::{json, Value};
use std::process::{Command, ExitCode};

struct Options {
    duration_s: u64,
    rounds: usize,
    connections: usize,
    only: Option<String>,
    quick: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        duration_s: 10,
        rounds: 3,
        connections: 16,
        only: None,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.quick = true;
                o.duration_s = 3;
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

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pin = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let mut chosen: Vec<Variant> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for v in variants() {
        if o.only
            .as_ref()
            .is_some_and(|s| !v.name.contains(s.as_str()) && v.group != "base")
        {
            continue;
        }
        match &v.wasm {
            Some(w) if !w.exists() => {
                skipped.push(format!("{} ({} not built)", v.name, w.display()))
            }
            _ => chosen.push(v),
        }
    }
    println!(
        "bench: {} variants, {} round(s) × {} s, {} connections, envoy pinned: {pin}",
        chosen.len(),
        o.rounds,
        o.duration_s,
        o.connections
    );
    let mut envoys = Vec::new();
    for v in &chosen {
        let dir = paths::scratch_dir("bench");
        let path = dir.join("envoy.json");
        if let Err(e) = std::fs::write(&path, bootstrap(v).to_string()) {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
        match Envoy::start_file_on_cpu(&path, &dir, 1, pin.then_some(1)) {
            Ok(e) => envoys.push(e),
            Err(e) => {
                eprintln!("bench: {} did not start: {e}", v.name);
                return ExitCode::FAILURE;
            }
        }
    }
    // warm-up: JIT tiers, connection pools, allocator
    for (v, e) in chosen.iter().zip(&envoys) {
        if let Err(e) = wrk(e.listener, v, &o, 1, pin) {
            eprintln!("bench: warm-up {}: {e}", v.name);
            return ExitCode::FAILURE;
        }
    }
    let memory: Vec<Option<u64>> = envoys.iter().map(allocated_bytes).collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); chosen.len()];
    for round in 0..o.rounds {
        for (i, (v, e)) in chosen.iter().zip(&envoys).enumerate() {
            match wrk(e.listener, v, &o, o.duration_s, pin) {
                Ok(s) => {
                    println!(
                        "  round {} {:<28} {:>9.0} rps  p50 {:>7.0} µs  p99 {:>7.0} µs",
                        round + 1,
                        v.name,
                        s.rps,
                        s.p50_us,
                        s.p99_us
                    );
                    if s.non_2xx > 0 {
                        println!("    ({} non-2xx responses)", s.non_2xx);
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

    let summary: Vec<Value> = chosen
        .iter()
        .zip(&samples)
        .zip(&memory)
        .map(|((v, s), mem)| {
            json!({
                "name": v.name, "group": v.group, "kind": v.kind,
                "rps": median(s.iter().map(|x| x.rps).collect()),
                "p50_us": median(s.iter().map(|x| x.p50_us).collect()),
                "p99_us": median(s.iter().map(|x| x.p99_us).collect()),
                "non_2xx": s.iter().map(|x| x.non_2xx).sum::<u64>(),
                "envoy_allocated_bytes": mem,
                "wasm_bytes": v.wasm.as_ref().and_then(|w| std::fs::metadata(w).ok()).map(|m| m.len()),
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
        "pinned": pin, "results": rows, "skipped": skipped,
    });
    let dir = paths::repo_root().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    );
    let md = markdown(&report);
    let _ = std::fs::write(dir.join("RESULTS.md"), &md);
    println!("\n{md}");
    ExitCode::SUCCESS
}

fn fmt_ratio(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |r| format!("{r:.2}×"))
}

fn markdown(report: &Value) -> String {
    let mut out = String::new();
    out.push_str("# Benchmark results\n\n");
    out.push_str(&format!(
        "Measured {} on {} with `scripts/bench{}`: Envoy {}, direct-response route, wrk 1 thread × {} connections, \
         {} s × {} interleaved round(s), medians; Envoy pinned to CPU 1 and wrk to CPU 0: {}.\n\
         Absolute numbers are noisy on this machine; compare ratios within one run.\n\n",
        report["date"].as_str().unwrap_or(""),
        report["machine"].as_str().unwrap_or(""),
        if report["quick"] == true { " --quick" } else { "" },
        report["envoy"].as_str().unwrap_or(""),
        report["connections"], report["duration_s"], report["rounds"], report["pinned"],
    ));
    out.push_str("| variant | RPS | p50 µs | p99 µs | added p99 vs noop µs | vs baseline | vs native | vs Lua | Envoy allocated MB | .wasm KB |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in report["results"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            r["name"].as_str().unwrap_or(""),
            r["rps"].as_f64().unwrap_or(0.0),
            r["p50_us"].as_f64().unwrap_or(0.0),
            r["p99_us"].as_f64().unwrap_or(0.0),
            r["added_p99_over_noop_us"]
                .as_f64()
                .map_or("–".into(), |v| format!("{v:.0}")),
            fmt_ratio(&r["vs_baseline"]),
            fmt_ratio(&r["vs_native"]),
            fmt_ratio(&r["vs_lua"]),
            r["envoy_allocated_bytes"]
                .as_u64()
                .map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e6)),
            r["wasm_bytes"]
                .as_u64()
                .map_or("–".into(), |b| format!("{:.0}", b as f64 / 1e3)),
        ));
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
