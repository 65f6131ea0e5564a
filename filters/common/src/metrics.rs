//! Counters, gauges and histograms defined once (at configure time) and updated by id per request.
//!
//! Naming on each host: a metric defined as `portcullis_headers_edits_total` appears in Envoy as the stat
//! `wasmcustom.portcullis_headers_edits_total` (Prometheus: `envoy_wasmcustom_portcullis_headers_edits_total`),
//! and in Kong (ngx_wasm_module) as `pw.<filter>.portcullis_headers_edits_total`. The host adds its prefix;
//! filters pass the bare name. On native targets metrics are kept in memory so tests can read them.
//!
//! Counter (and gauge) *additions* are summed in the VM and handed to the host by [`flush`], which the adapter
//! calls on its root timer every [`FLUSH_PERIOD`]: a host call costs more than most policies' own work, and
//! a chain would otherwise make several per request. So the host's counters trail by at most one period
//! (Prometheus scrapes every 10–60 s), and what was added in the last period before a VM stops is lost.
//! Histogram samples and gauge values are recorded at once.

use std::cell::RefCell;
use std::time::Duration;

/// How often pending counter additions reach the host (see the module docs).
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A defined metric. If the host refused the definition, updates are silently dropped (metrics must never
/// fail a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    id: Option<u32>,
    kind: Kind,
    /// Index of this metric's pending sum in `PENDING`.
    slot: usize,
}

thread_local! {
    /// (host metric id, sum of additions not yet passed to the host); one entry per defined metric id.
    static PENDING: RefCell<Vec<(u32, i64)>> = const { RefCell::new(Vec::new()) };
}

fn pending_slot(id: u32) -> usize {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.iter().position(|(i, _)| *i == id) {
            Some(slot) => slot,
            None => {
                p.push((id, 0));
                p.len() - 1
            }
        }
    })
}

impl Metric {
    pub fn counter(name: &str) -> Metric {
        Metric::define(Kind::Counter, name)
    }
    pub fn gauge(name: &str) -> Metric {
        Metric::define(Kind::Gauge, name)
    }
    pub fn histogram(name: &str) -> Metric {
        Metric::define(Kind::Histogram, name)
    }

    fn define(kind: Kind, name: &str) -> Metric {
        let id = imp::define(kind, name);
        let slot = match (id, kind) {
            (Some(id), Kind::Counter | Kind::Gauge) => pending_slot(id),
            _ => usize::MAX,
        };
        Metric { id, kind, slot }
    }

    /// Adds to a counter or gauge (negative deltas only make sense for gauges); reaches the host at the next
    /// [`flush`].
    pub fn add(&self, delta: i64) {
        if self.id.is_some() {
            PENDING.with(|p| {
                if let Some(entry) = p.borrow_mut().get_mut(self.slot) {
                    entry.1 = entry.1.saturating_add(delta);
                }
            });
        }
    }

    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets a gauge or records a histogram sample, at once. A gauge's pending additions go first, so the
    /// value set is the last word.
    pub fn record(&self, value: u64) {
        if let Some(id) = self.id {
            if self.kind == Kind::Gauge {
                PENDING.with(|p| {
                    if let Some(entry) = p.borrow_mut().get_mut(self.slot) {
                        entry.1 = 0;
                    }
                });
            }
            imp::record(id, self.kind, value);
        }
    }
}

/// Passes every pending addition to the host (one host call per metric that changed).
pub fn flush() {
    let changed: Vec<(u32, i64)> = PENDING.with(|p| {
        p.borrow_mut()
            .iter_mut()
            .filter(|(_, sum)| *sum != 0)
            .map(|(id, sum)| (*id, std::mem::take(sum)))
            .collect()
    });
    for (id, sum) in changed {
        imp::increment(id, sum);
    }
}

/// The current value of a metric in the native in-memory registry, pending additions included (tests only;
/// None on wasm).
pub fn value(name: &str) -> Option<i64> {
    #[cfg(not(target_arch = "wasm32"))]
    flush();
    imp::value(name)
}

/// How many metric updates reached the host (each one a host call in a proxy) on this thread so far (tests
/// only; 0 on wasm).
pub fn updates_made() -> u64 {
    imp::updates_made()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Kind;
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::MetricType;

    pub fn define(kind: Kind, name: &str) -> Option<u32> {
        let t = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        match hostcalls::define_metric(t, name) {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("metric {name} not defined by the host: {e:?}");
                None
            }
        }
    }
    pub fn increment(id: u32, delta: i64) {
        if let Err(e) = hostcalls::increment_metric(id, delta) {
            refused(id, e);
        }
    }
    pub fn record(id: u32, _kind: Kind, value: u64) {
        if let Err(e) = hostcalls::record_metric(id, value) {
            refused(id, e);
        }
    }
    /// Logged once per VM: a host that refuses one update refuses them all, once a second.
    fn refused(id: u32, e: proxy_wasm::types::Status) {
        use std::sync::atomic::{AtomicBool, Ordering};
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if !LOGGED.swap(true, Ordering::Relaxed) {
            log::warn!("the host refused an update of metric {id}: {e:?}");
        }
    }
    pub fn value(_name: &str) -> Option<i64> {
        None
    }
    pub fn updates_made() -> u64 {
        0
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Kind;
    use std::cell::RefCell;

    thread_local! {
        // (name, value); a test thread sees only its own metrics.
        static REGISTRY: RefCell<Vec<(String, i64)>> = const { RefCell::new(Vec::new()) };
        static UPDATES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    pub fn updates_made() -> u64 {
        UPDATES.with(|u| u.get())
    }

    pub fn define(_kind: Kind, name: &str) -> Option<u32> {
        REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let id = match r.iter().position(|(n, _)| n == name) {
                Some(i) => i,
                None => {
                    r.push((name.to_string(), 0));
                    r.len() - 1
                }
            };
            u32::try_from(id).ok()
        })
    }
    pub fn increment(id: u32, delta: i64) {
        UPDATES.with(|u| u.set(u.get() + 1));
        REGISTRY.with(|r| {
            if let Some(entry) = r.borrow_mut().get_mut(id as usize) {
                entry.1 = entry.1.saturating_add(delta);
            }
        });
    }
    /// Gauges take the value; histograms keep their last sample, which is enough for tests.
    pub fn record(id: u32, _kind: Kind, value: u64) {
        UPDATES.with(|u| u.set(u.get() + 1));
        REGISTRY.with(|r| {
            if let Some(entry) = r.borrow_mut().get_mut(id as usize) {
                entry.1 = i64::try_from(value).unwrap_or(i64::MAX);
            }
        });
    }
    pub fn value(name: &str) -> Option<i64> {
        REGISTRY.with(|r| r.borrow().iter().find(|(n, _)| n == name).map(|(_, v)| *v))
    }
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn updates_never_fail_even_when_the_host_refuses_definitions() {
        let m = Metric::counter("refused_or_not_total");
        m.inc();
        m.record(3);
    }

    // The in-memory registry exists on native targets only; under wasm the host keeps metrics.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn counters_and_gauges_accumulate_by_name() {
        let c = Metric::counter("test_requests_total");
        c.inc();
        c.add(2);
        assert_eq!(
            Metric::counter("test_requests_total"),
            c,
            "same name, same metric"
        );
        assert_eq!(value("test_requests_total"), Some(3));
        let g = Metric::gauge("test_state");
        g.record(2);
        g.record(1);
        assert_eq!(value("test_state"), Some(1));
        assert_eq!(value("never_defined"), None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn additions_reach_the_host_summed_at_the_flush() {
        let a = Metric::counter("flush_a_total");
        let b = Metric::counter("flush_b_total");
        flush();
        let before = updates_made();
        for _ in 0..100 {
            a.inc();
            b.add(2);
        }
        assert_eq!(updates_made(), before, "no host call per addition");
        flush();
        assert_eq!(
            updates_made(),
            before + 2,
            "one host call per changed metric"
        );
        flush();
        assert_eq!(updates_made(), before + 2, "nothing pending, nothing sent");
        assert_eq!(value("flush_a_total"), Some(100));
        assert_eq!(value("flush_b_total"), Some(200));
    }
}
