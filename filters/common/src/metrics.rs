//! Counters, gauges and histograms defined once (at configure time) and updated by id per request.
//!
//! Naming on each host: a metric defined as `portcullis_headers_edits_total` appears in Envoy as the stat
//! `wasmcustom.portcullis_headers_edits_total` (Prometheus: `envoy_wasmcustom_portcullis_headers_edits_total`),
//! and in Kong (ngx_wasm_module) as `pw.<filter>.portcullis_headers_edits_total`. The host adds its prefix;
//! filters pass the bare name. On native targets metrics are kept in memory so tests can read them.

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
        Metric {
            id: imp::define(kind, name),
            kind,
        }
    }

    /// Adds to a counter or gauge (negative deltas only make sense for gauges).
    pub fn add(&self, delta: i64) {
        if let Some(id) = self.id {
            imp::increment(id, delta);
        }
    }

    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets a gauge or records a histogram sample.
    pub fn record(&self, value: u64) {
        if let Some(id) = self.id {
            imp::record(id, self.kind, value);
        }
    }
}

/// The current value of a metric in the native in-memory registry (tests only; None on wasm).
pub fn value(name: &str) -> Option<i64> {
    imp::value(name)
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
        let _ = hostcalls::increment_metric(id, delta);
    }
    pub fn record(id: u32, _kind: Kind, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
    pub fn value(_name: &str) -> Option<i64> {
        None
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Kind;
    use std::cell::RefCell;

    thread_local! {
        // (name, value); a test thread sees only its own metrics.
        static REGISTRY: RefCell<Vec<(String, i64)>> = const { RefCell::new(Vec::new()) };
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
        REGISTRY.with(|r| {
            if let Some(entry) = r.borrow_mut().get_mut(id as usize) {
                entry.1 = entry.1.saturating_add(delta);
            }
        });
    }
    /// Gauges take the value; histograms keep their last sample, which is enough for tests.
    pub fn record(id: u32, _kind: Kind, value: u64) {
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
}
