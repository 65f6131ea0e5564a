//! An in-process HTTP/1.1 upstream that records every request it receives and answers through a handler
//! (by default: 200 with a JSON echo of what it saw). Keep-alive, content-length and chunked bodies.

use crate::client::{read_chunked, read_headers};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Mutex<Arc<Handler>>>,
    stop: Arc<AtomicBool>,
}

/// The default answer: 200 and a JSON body `{"method", "path", "headers": {name: value}, "body_bytes"}`.
pub fn echo(r: &Recorded) -> Reply {
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Reply::json(
        200,
        &serde_json::json!({
            "method": r.method, "path": r.path, "headers": headers, "body_bytes": r.body.len()
        }),
    )
}

impl Upstream {
    pub fn echo() -> Upstream {
        Upstream::start(echo)
    }

    /// Starts on an ephemeral loopback port.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Upstream::serve(listener, Arc::new(handler))
    }

    /// Starts on a fixed address (the demo's upstreams, whose ports are in `envoy/demo.portcullis.yaml`).
    pub fn bind(
        addr: &str,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Upstream> {
        Ok(Upstream::serve(TcpListener::bind(addr)?, Arc::new(handler)))
    }

    fn serve(listener: TcpListener, handler: Arc<Handler>) -> Upstream {
        let addr = listener.local_addr().expect("upstream address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(Mutex::new(handler));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, h, st) = (requests.clone(), handler.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, h) = (reqs.clone(), h.clone());
                thread::spawn(move || serve_connection(conn, reqs, h));
            }
        });
        Upstream {
            addr,
            requests,
            handler,
            stop,
        }
    }

    /// Replaces the handler (e.g. switch the upstream to failing mid-test).
    pub fn set_handler(&self, handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(handler);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The most recent request; panics if none arrived.
    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // wake the accept loop so it sees the flag
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_connection(
    conn: TcpStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Mutex<Arc<Handler>>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_string(), path.to_string());
        let Ok(headers) = read_headers(&mut reader) else {
            return;
        };
        let find = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
        let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            match read_chunked(&mut reader) {
                Ok(b) => b,
                Err(_) => return,
            }
        } else {
            let len: usize = find("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let recorded = Recorded {
            method,
            path,
            headers,
            body,
        };
        requests.lock().unwrap().push(recorded.clone());
        let handler = handler.lock().unwrap().clone();
        let reply = handler(&recorded);
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (n, v) in &reply.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&reply.body);
        if writer.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn assert_header(&self, name: &str, value: &str) -> &Self {
        assert_eq!(
            self.header(name),
            Some(value),
            "upstream header {name}; all headers {:?}",
            self.headers
        );
        self
    }

    /// The header did not reach the upstream — on Kong's engine, with no value: there nginx forwards a
    /// request header a filter removed, so Portcullis empties it instead (kong/README.md, "Kong's engine").
    pub fn assert_no_header(&self, name: &str) -> &Self {
        let values = self.header_values(name);
        let removed = if crate::host::is_kong_engine() {
            values.len() <= 1 && values.iter().all(|v| v.is_empty())
        } else {
            values.is_empty()
        };
        assert!(
            removed,
            "upstream header {name} should be absent (on {}); all {:?}",
            crate::host::current().name(),
            self.headers
        );
        self
    }
}
