//! A bounded queue of records (log lines, spans) filled by HTTP contexts and sent in batches by the root
//! context's timer through [`RootHost::dispatch_http_call`]. Requests never wait for the collector: a full
//! queue drops the record and counts it. A worker's root and HTTP contexts share one policy object (and so
//! one queue); a wasm VM is single-threaded, so `RefCell` suffices.
//!
//! Counters (`<prefix>` chosen by the filter): `<prefix>_dropped_total` (queue full), `<prefix>_sent_total`
//! (records in batches the collector answered 2xx), `<prefix>_failed_total` (records in batches that
//! failed: dispatch refused, timeout, non-2xx). Failed batches are not retried.

use crate::host::{CalloutResponse, RootHost};
use crate::metrics::Metric;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

/// Most batches one worker has on the wire at once; further flushes wait for the next tick.
pub const MAX_IN_FLIGHT: usize = 4;

/// Where batches go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutTarget {
    /// Envoy cluster name, or Kong `host:port`.
    pub upstream: String,
    pub path: String,
    pub authority: String,
    pub content_type: String,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct BatchQueue {
    items: RefCell<VecDeque<String>>,
    /// (callout token, records in that batch).
    in_flight: RefCell<Vec<(u32, usize)>>,
    max_queue: usize,
    batch_size: usize,
    dropped: Metric,
    sent: Metric,
    failed: Metric,
}

impl BatchQueue {
    pub fn new(metric_prefix: &str, max_queue: usize, batch_size: usize) -> Self {
        BatchQueue {
            items: RefCell::new(VecDeque::new()),
            in_flight: RefCell::new(Vec::new()),
            max_queue,
            batch_size: batch_size.max(1),
            dropped: Metric::counter(&format!("{metric_prefix}_dropped_total")),
            sent: Metric::counter(&format!("{metric_prefix}_sent_total")),
            failed: Metric::counter(&format!("{metric_prefix}_failed_total")),
        }
    }

    /// Queues a record; false (and one more dropped) when the queue is full.
    pub fn push(&self, item: String) -> bool {
        let mut items = self.items.borrow_mut();
        if items.len() >= self.max_queue {
            self.dropped.inc();
            return false;
        }
        items.push_back(item);
        true
    }

    pub fn len(&self) -> usize {
        self.items.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.borrow().is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Sends queued records, `batch_size` per POST, while fewer than [`MAX_IN_FLIGHT`] batches are on the
    /// wire. `frame` turns a batch into the request body. Returns how many batches were dispatched.
    pub fn flush(
        &self,
        root: &mut dyn RootHost,
        target: &CalloutTarget,
        frame: impl Fn(&[String]) -> Vec<u8>,
    ) -> usize {
        let mut dispatched = 0;
        while self.in_flight() < MAX_IN_FLIGHT {
            let batch: Vec<String> = {
                let mut items = self.items.borrow_mut();
                let n = self.batch_size.min(items.len());
                if n == 0 {
                    break;
                }
                items.drain(..n).collect()
            };
            let body = frame(&batch);
            let headers = [("content-type", target.content_type.as_str())];
            match root.dispatch_http_call(
                &target.upstream,
                "POST",
                &target.path,
                &target.authority,
                &headers,
                Some(&body),
                target.timeout,
            ) {
                Ok(token) => {
                    self.in_flight.borrow_mut().push((token, batch.len()));
                    dispatched += 1;
                }
                Err(e) => {
                    log::warn!(
                        "could not send {} records to {}: {e}",
                        batch.len(),
                        target.upstream
                    );
                    self.failed.add(count(batch.len()));
                    break;
                }
            }
        }
        dispatched
    }

    /// Accounts for a finished callout; false when `token` is not one of this queue's batches.
    pub fn on_response(&self, token: u32, response: Option<&CalloutResponse>) -> bool {
        let records = {
            let mut in_flight = self.in_flight.borrow_mut();
            let Some(at) = in_flight.iter().position(|(t, _)| *t == token) else {
                return false;
            };
            in_flight.swap_remove(at).1
        };
        match response {
            Some(r) if (200..300).contains(&r.status) => self.sent.add(count(records)),
            Some(r) => {
                log::warn!(
                    "the collector answered {} to a batch of {records}",
                    r.status
                );
                self.failed.add(count(records));
            }
            None => {
                log::warn!("a batch of {records} records failed (no answer from the collector)");
                self.failed.add(count(records));
            }
        }
        true
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRootHost;

    fn target() -> CalloutTarget {
        CalloutTarget {
            upstream: "collector".into(),
            path: "/v1/logs".into(),
            authority: "collector".into(),
            content_type: "application/json".into(),
            timeout: Duration::from_secs(2),
        }
    }

    fn join(batch: &[String]) -> Vec<u8> {
        batch.join(",").into_bytes()
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let q = BatchQueue::new("test_batch_full", 2, 10);
        assert!(q.push("a".into()));
        assert!(q.push("b".into()));
        assert!(!q.push("c".into()));
        assert_eq!(q.len(), 2);
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(
            crate::metrics::value("test_batch_full_dropped_total"),
            Some(1)
        );
    }

    #[test]
    fn flush_sends_batches_up_to_the_in_flight_bound() {
        let q = BatchQueue::new("test_batch_flush", 100, 2);
        for i in 0..11 {
            q.push(i.to_string());
        }
        let mut root = FakeRootHost::new();
        assert_eq!(q.flush(&mut root, &target(), join), MAX_IN_FLIGHT);
        assert_eq!(root.calls.len(), MAX_IN_FLIGHT);
        let first = &root.calls[0];
        assert_eq!(
            (
                first.method.as_str(),
                first.path.as_str(),
                first.upstream.as_str()
            ),
            ("POST", "/v1/logs", "collector")
        );
        assert_eq!(first.body.as_deref(), Some(&b"0,1"[..]));
        assert_eq!(
            first.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
        assert_eq!(q.len(), 3, "the rest waits for a free slot");

        let ok = CalloutResponse {
            status: 204,
            ..Default::default()
        };
        assert!(q.on_response(1, Some(&ok)));
        assert!(q.on_response(2, None));
        assert!(!q.on_response(99, Some(&ok)), "not ours");
        assert_eq!(q.flush(&mut root, &target(), join), 2);
        assert!(q.is_empty());
        #[cfg(not(target_arch = "wasm32"))]
        {
            assert_eq!(
                crate::metrics::value("test_batch_flush_sent_total"),
                Some(2)
            );
            assert_eq!(
                crate::metrics::value("test_batch_flush_failed_total"),
                Some(2)
            );
        }
    }

    #[test]
    fn a_refused_dispatch_counts_the_batch_as_failed() {
        let q = BatchQueue::new("test_batch_refused", 10, 5);
        q.push("x".into());
        let mut root = FakeRootHost::new();
        root.dispatch_error = Some("unknown cluster".into());
        assert_eq!(q.flush(&mut root, &target(), join), 0);
        assert!(q.is_empty());
        assert_eq!(q.in_flight(), 0);
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(
            crate::metrics::value("test_batch_refused_failed_total"),
            Some(1)
        );
    }
}
