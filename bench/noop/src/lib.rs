//! An HTTP filter that does nothing: `scripts/bench` measures every Portcullis filter against it to separate
//! the cost of the wasm hop from the cost of the policy. It uses the plain SDK, not the Portcullis adapter.
//!
//! Given a configuration it becomes a host-call probe: it makes exactly the listed host calls and nothing
//! else, so a run prices the calls themselves (`scripts/bench --only probe`) or the host traffic of a whole
//! chain with no policy logic around it (`chain/host-calls-only`). One step per `;`:
//! `<phase> <call> [args…] [xN]`, phase `request`, `response` or `log`; calls `property a.b`, `header name`,
//! `headers`, `set name value`, `add name value`, `remove name`, `now`, `counter`, `histogram`,
//! `shared-get key`, `shared-set key` (compare-and-swap on the version the last `shared-get` saw).
//!
//! One more call serves the end-to-end tests on Kong's engine, whose filter metrics only Kong's Lua layer can
//! read: `request metric-reply` answers `?name=<full metric name>` with that metric's value, read with
//! `proxy_get_metric` on the id ngx_wasm_module gives the name (the CRC-32 of `pw.<filter>.<metric>`,
//! `src/common/metrics/ngx_wa_metrics.c`). The engine traps the reader (not the filters) when no filter defined
//! that name, or when it is a histogram: the harness asks only for metrics a chain's filter owns.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{ContextType, MetricType};
    use std::rc::Rc;

    #[derive(Clone, Copy, PartialEq)]
    enum Phase {
        Request,
        Response,
        Log,
    }

    enum Call {
        Property(Vec<String>),
        Header(String),
        Headers,
        Set(String, String),
        Add(String, String),
        Remove(String),
        Now,
        Counter,
        Histogram,
        SharedGet(String),
        SharedSet(String),
        MetricReply,
    }

    struct Step {
        phase: Phase,
        call: Call,
        times: u32,
    }

    fn parse_step(text: &str) -> Option<Step> {
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let count = words.last().and_then(|w| w.strip_prefix('x')?.parse().ok());
        let times = match count {
            Some(n) => {
                words.pop();
                n
            }
            None => 1,
        };
        let phase = match *words.first()? {
            "request" => Phase::Request,
            "response" => Phase::Response,
            "log" => Phase::Log,
            _ => return None,
        };
        let arg = |i: usize| words.get(i).map(|w| w.to_string());
        let call = match *words.get(1)? {
            "property" => Call::Property(arg(2)?.split('.').map(str::to_string).collect()),
            "header" => Call::Header(arg(2)?),
            "headers" => Call::Headers,
            "set" => Call::Set(arg(2)?, arg(3)?),
            "add" => Call::Add(arg(2)?, arg(3)?),
            "remove" => Call::Remove(arg(2)?),
            "now" => Call::Now,
            "counter" => Call::Counter,
            "histogram" => Call::Histogram,
            "shared-get" => Call::SharedGet(arg(2)?),
            "shared-set" => Call::SharedSet(arg(2)?),
            "metric-reply" => Call::MetricReply,
            _ => return None,
        };
        Some(Step { phase, call, times })
    }

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_get_metric(metric_id: u32, value: *mut u64) -> u32;
    }

    /// CRC-32 (IEEE, reflected), as nginx's `ngx_crc32_long`.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// The value of the metric named by `?name=`, as the host holds it (all workers summed).
    fn metric_reply() {
        let path =
            hostcalls::get_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, ":path")
                .ok()
                .flatten()
                .unwrap_or_default();
        let name = path
            .split_once("name=")
            .map(|(_, n)| n.split('&').next().unwrap_or(n))
            .unwrap_or("");
        let mut value = 0u64;
        // SAFETY: a plain id and a pointer to a live u64 the host writes.
        let status = unsafe { proxy_get_metric(crc32(name.as_bytes()), &mut value) };
        // (an unknown id traps inside the host call on ngx_wasm_module; other hosts answer a status)
        let (code, body) = if status == 0 {
            (200, value.to_string())
        } else {
            (404, format!("no metric {name} (status {status})"))
        };
        let _ = hostcalls::send_http_response(code, vec![], Some(body.as_bytes()));
    }

    struct Metrics {
        counter: u32,
        histogram: u32,
    }

    #[derive(Default)]
    struct NoopRoot {
        steps: Rc<Vec<Step>>,
        metrics: Option<Rc<Metrics>>,
    }

    struct NoopHttp {
        steps: Rc<Vec<Step>>,
        metrics: Option<Rc<Metrics>>,
        cas: Option<u32>,
        /// Whether a step answered the request itself.
        replied: bool,
    }

    impl Context for NoopRoot {}
    impl RootContext for NoopRoot {
        fn on_configure(&mut self, _: usize) -> bool {
            proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
            let config = self.get_plugin_configuration().unwrap_or_default();
            let config = String::from_utf8_lossy(&config);
            // `{}` (the plain noop's configuration) or nothing: no steps
            let config = config.trim().trim_matches(|c| matches!(c, '"' | '{' | '}'));
            let mut steps = Vec::new();
            for text in config.split(';').filter(|s| !s.trim().is_empty()) {
                match parse_step(text) {
                    Some(step) => steps.push(step),
                    None => {
                        log::error!("noop probe: bad step {text:?}");
                        return false;
                    }
                }
            }
            if !steps.is_empty() {
                let counter = hostcalls::define_metric(MetricType::Counter, "probe_requests_total");
                let histogram =
                    hostcalls::define_metric(MetricType::Histogram, "probe_duration_ms");
                if let (Ok(counter), Ok(histogram)) = (counter, histogram) {
                    self.metrics = Some(Rc::new(Metrics { counter, histogram }));
                }
            }
            self.steps = Rc::new(steps);
            true
        }
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(NoopHttp {
                steps: self.steps.clone(),
                metrics: self.metrics.clone(),
                cas: None,
                replied: false,
            }))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    impl NoopHttp {
        fn run(&mut self, phase: Phase) {
            let steps = self.steps.clone();
            for step in steps.iter().filter(|s| s.phase == phase) {
                for _ in 0..step.times {
                    self.call(phase, &step.call);
                }
            }
        }

        fn call(&mut self, phase: Phase, call: &Call) {
            let map = if phase == Phase::Request {
                proxy_wasm::types::MapType::HttpRequestHeaders
            } else {
                proxy_wasm::types::MapType::HttpResponseHeaders
            };
            match call {
                Call::Property(path) => {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    std::hint::black_box(self.get_property(path));
                }
                Call::Header(name) => {
                    std::hint::black_box(hostcalls::get_map_value(map, name).ok());
                }
                Call::Headers => {
                    // one raw read of the whole block, as `common::header_block` does (no per-pair parsing)
                    let mut data: *mut u8 = std::ptr::null_mut();
                    let mut size: usize = 0;
                    unsafe {
                        if proxy_get_header_map_pairs(map as u32, &mut data, &mut size) == 0
                            && !data.is_null()
                        {
                            std::hint::black_box(Vec::from_raw_parts(data, size, size));
                        }
                    }
                }
                Call::Set(name, value) => {
                    let _ = hostcalls::set_map_value(map, name, Some(value));
                }
                Call::Add(name, value) => {
                    let _ = hostcalls::add_map_value(map, name, value);
                }
                Call::Remove(name) => {
                    let _ = hostcalls::set_map_value(map, name, None);
                }
                Call::Now => {
                    std::hint::black_box(self.get_current_time());
                }
                Call::Counter => {
                    if let Some(m) = &self.metrics {
                        let _ = hostcalls::increment_metric(m.counter, 1);
                    }
                }
                Call::Histogram => {
                    if let Some(m) = &self.metrics {
                        let _ = hostcalls::record_metric(m.histogram, 1);
                    }
                }
                Call::SharedGet(key) => {
                    let (value, cas) = self.get_shared_data(key);
                    std::hint::black_box(value);
                    self.cas = cas;
                }
                Call::SharedSet(key) => {
                    let _ = self.set_shared_data(key, Some(&[1u8; 16]), self.cas);
                }
                Call::MetricReply => {
                    metric_reply();
                    self.replied = true;
                }
            }
        }
    }

    impl Context for NoopHttp {}
    impl HttpContext for NoopHttp {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> proxy_wasm::types::Action {
            self.run(Phase::Request);
            if self.replied {
                return proxy_wasm::types::Action::Pause;
            }
            proxy_wasm::types::Action::Continue
        }
        fn on_http_response_headers(&mut self, _: usize, _: bool) -> proxy_wasm::types::Action {
            self.run(Phase::Response);
            proxy_wasm::types::Action::Continue
        }
        fn on_log(&mut self) {
            self.run(Phase::Log);
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot::default()) });
    }}
}
