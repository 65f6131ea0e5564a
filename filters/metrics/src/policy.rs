//! The `metrics` policy: notes the start time, route and method when the request arrives, and when it
//! completes (`on_log`, also after local responses and resets) counts it in the series of its labels.

use crate::config::{Label, MetricsConfig};
use crate::labels::{self, Registry, Values};
use portcullis_common::props::{self, Flavor};
use portcullis_common::{ConfigError, Decision, Exchange, Host, Policy};
use std::cell::RefCell;
use std::time::Duration;

pub struct MetricsPolicy {
    config: MetricsConfig,
    /// Series defined by this worker (wasm VMs are single-threaded: a RefCell is enough).
    registry: RefCell<Registry>,
}

/// What the request phase learns for the log phase.
#[derive(Debug, Default)]
pub struct Started {
    start: Option<Duration>,
    route: String,
    method: &'static str,
}

impl Policy for MetricsPolicy {
    const NAME: &'static str = "metrics";
    type State = Started;

    fn configure(config: &[u8]) -> Result<Self, ConfigError> {
        Ok(MetricsPolicy::new(MetricsConfig::parse(config)?))
    }

    fn on_request_headers(&self, state: &mut Started, ex: &mut Exchange) -> Decision {
        state.start = Some(ex.now());
        state.method = labels::method_label(ex.method());
        if self.config.labels.contains(&Label::Route) {
            state.route = labels::sanitize_value(ex.route_id().unwrap_or(labels::UNKNOWN));
        }
        Decision::Continue
    }

    fn on_log(&self, state: &mut Started, ex: &mut Exchange) {
        let status = props::response_status(ex.host());
        let consumer = match (&self.config.consumer_header, self.wants(Label::Consumer)) {
            (Some(header), true) => {
                let value = ex.request_header(header.as_str()).map(str::to_owned);
                self.registry.borrow_mut().consumer_label(value.as_deref())
            }
            _ => String::new(),
        };
        let values = Values {
            route: std::mem::take(&mut state.route),
            method: state.method.to_string(),
            status_class: labels::status_class(status).to_string(),
            consumer,
        };
        let suffix = labels::suffix(&self.config.labels, &values);
        let Some(series) = self.registry.borrow_mut().series(&suffix) else {
            return;
        };
        series.requests.inc();
        if let (Some(histogram), Some(start)) = (series.duration, state.start) {
            let elapsed = ex.now().saturating_sub(start);
            histogram.record(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        }
        if let Some(counter) = series.request_bytes {
            counter.add(request_bytes(ex.host()).map_or(0, saturating_i64));
        }
        if let Some(counter) = series.response_bytes {
            counter.add(response_bytes(ex.host()).map_or(0, saturating_i64));
        }
    }
}

impl MetricsPolicy {
    pub fn new(config: MetricsConfig) -> Self {
        let registry = Registry::new(
            config.max_series,
            config.max_consumers,
            config.duration,
            config.sizes,
        );
        MetricsPolicy {
            config,
            registry: RefCell::new(registry),
        }
    }

    fn wants(&self, label: Label) -> bool {
        self.config.labels.contains(&label)
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An integer property by its Envoy name, else its Kong (nginx variable) name.
fn size_property(host: &dyn Host, envoy: &[&str], kong: &[&str]) -> Option<u64> {
    if props::flavor() != Flavor::Kong {
        if let Some(v) = host.property(envoy).and_then(|b| props::decode_u64(&b)) {
            return Some(v);
        }
    }
    host.property(kong).and_then(|b| props::decode_u64(&b))
}

/// Bytes received from the client (headers and body): Envoy `request.total_size`, nginx `$request_length`.
pub fn request_bytes(host: &dyn Host) -> Option<u64> {
    size_property(host, &["request", "total_size"], &["ngx", "request_length"])
}

/// Bytes sent to the client (headers and body): Envoy `response.total_size`, nginx `$bytes_sent`.
pub fn response_bytes(host: &dyn Host) -> Option<u64> {
    size_property(host, &["response", "total_size"], &["ngx", "bytes_sent"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_common::testing::FakeHost;

    fn policy(json: &str) -> MetricsPolicy {
        MetricsPolicy::configure(json.as_bytes()).unwrap()
    }

    /// Runs one request through the policy: arrives at `t0`, completes 42 ms later with `status`.
    fn request(p: &MetricsPolicy, host: FakeHost, status: Option<u64>) {
        let host = host.at(Duration::from_secs(100));
        let mut ex = Exchange::new(Box::new(host.clone()));
        let mut state = Started::default();
        assert_eq!(
            p.on_request_headers(&mut state, &mut ex),
            Decision::Continue
        );
        if let Some(s) = status {
            host.state
                .borrow_mut()
                .properties
                .insert("response.code".into(), s.to_le_bytes().to_vec());
        }
        host.state.borrow_mut().now = Duration::from_millis(100_042);
        ex.new_callback();
        p.on_log(&mut state, &mut ex);
    }

    fn envoy_request(route: &str, method: &str) -> FakeHost {
        FakeHost::request(method, "/x")
            .with_property(&["xds", "route_name"], route.as_bytes())
            .with_property(&["request", "total_size"], &120u64.to_le_bytes())
            .with_property(&["response", "total_size"], &300u64.to_le_bytes())
    }

    // Metric values live in a thread-local registry, so each test uses its own route names.
    #[cfg(not(target_arch = "wasm32"))]
    fn value(name: &str) -> Option<i64> {
        portcullis_common::metrics::value(name)
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn requests_are_counted_per_route_method_and_status_class() {
        props::reset_flavor();
        let p = policy(r#"{"sizes":true}"#);
        request(&p, envoy_request("orders", "GET"), Some(200));
        request(&p, envoy_request("orders", "GET"), Some(204));
        request(&p, envoy_request("orders", "POST"), Some(503));
        request(&p, envoy_request("orders", "BREW"), None);
        let base = "portcullis_http_requests_total;route=orders";
        assert_eq!(
            value(&format!("{base};method=GET;status_class=2xx")),
            Some(2)
        );
        assert_eq!(
            value(&format!("{base};method=POST;status_class=5xx")),
            Some(1)
        );
        assert_eq!(
            value(&format!("{base};method=OTHER;status_class=none")),
            Some(1)
        );
        assert_eq!(
            value("portcullis_http_request_duration_milliseconds;route=orders;method=GET;status_class=2xx"),
            Some(42),
            "the native registry keeps the last sample"
        );
        assert_eq!(
            value("portcullis_http_request_bytes_total;route=orders;method=GET;status_class=2xx"),
            Some(240)
        );
        assert_eq!(
            value("portcullis_http_response_bytes_total;route=orders;method=GET;status_class=2xx"),
            Some(600)
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn kong_sizes_and_route_ids_come_from_kong_names() {
        props::reset_flavor();
        let p = policy(r#"{"labels":["route"],"duration":false,"sizes":true}"#);
        let host = FakeHost::request("GET", "/")
            .with_property(&["kong", "route_id"], b"8f0b-kong-route")
            .with_property(&["ngx", "request_length"], b"77")
            .with_property(&["ngx", "bytes_sent"], b"1000");
        request(&p, host, Some(200));
        assert_eq!(
            value("portcullis_http_requests_total;route=8f0b-kong-route"),
            Some(1)
        );
        assert_eq!(
            value("portcullis_http_request_bytes_total;route=8f0b-kong-route"),
            Some(77)
        );
        assert_eq!(
            value("portcullis_http_response_bytes_total;route=8f0b-kong-route"),
            Some(1000)
        );
        assert_eq!(
            value("portcullis_http_request_duration_milliseconds;route=8f0b-kong-route"),
            None,
            "duration disabled"
        );
        props::reset_flavor();
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn consumers_are_labelled_up_to_the_bound() {
        props::reset_flavor();
        let p = policy(
            r#"{"labels":["route","consumer"],"consumer_header":"x-consumer","max_consumers":1,"sizes":false}"#,
        );
        let with = |c: &str| envoy_request("consumers-test", "GET").with_header("x-consumer", c);
        request(&p, with("alice"), Some(200));
        request(&p, with("bob"), Some(200));
        request(&p, with("mallory;route=x"), Some(200));
        request(&p, envoy_request("consumers-test", "GET"), Some(200));
        let base = "portcullis_http_requests_total;route=consumers-test";
        assert_eq!(value(&format!("{base};consumer=alice")), Some(1));
        assert_eq!(value(&format!("{base};consumer=other")), Some(2));
        assert_eq!(value(&format!("{base};consumer=anonymous")), Some(1));
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn hostile_route_names_cannot_forge_labels() {
        props::reset_flavor();
        let p = policy(r#"{"labels":["route","method"]}"#);
        request(&p, envoy_request("a;method=PUT", "GET"), Some(200));
        assert_eq!(
            value("portcullis_http_requests_total;route=a_method_PUT;method=GET"),
            Some(1)
        );
    }

    #[test]
    fn a_request_without_host_values_is_still_counted_without_panicking() {
        props::reset_flavor();
        let p = policy(r#"{"labels":["route","method","status_class"]}"#);
        let mut ex = Exchange::new(Box::new(FakeHost::new()));
        let mut state = Started::default();
        p.on_request_headers(&mut state, &mut ex);
        p.on_log(&mut state, &mut ex);
        assert_eq!(p.registry.borrow().len(), 1);
    }

    #[test]
    fn series_are_bounded() {
        props::reset_flavor();
        let p = policy(r#"{"labels":["route"],"max_series":2}"#);
        for route in ["bound-a", "bound-b", "bound-c", "bound-d"] {
            request(&p, envoy_request(route, "GET"), Some(200));
        }
        assert_eq!(p.registry.borrow().len(), 2);
    }
}
