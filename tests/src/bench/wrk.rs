//! wrk, the load generator of `scripts/bench`: its `--latency` output read into a [`Sample`].

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    pub requests: u64,
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> Option<Sample> {
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
