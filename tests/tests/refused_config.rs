//! A configuration a filter refuses never leaves a route open, on either host: the operator finds the bad
//! field in the gateway's log, and no client request reaches the upstream. Envoy refuses the filter and does
//! not start. On Kong's engine a refusal would not close the route (bare nginx loses its workers; Kong proxies
//! the route without the chain), so there the filter takes the configuration and answers every request with
//! 500 (it fails closed, filters/common/src/adapter.rs).

use portcullis_e2e::{host, json, Gateway};
use serde_json::Value;
use std::time::Duration;

/// (filter, refused config, what the filter's error must say)
fn cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "headers",
            json!({"request": {"remove": ["x ok"]}}),
            "request.remove[0]",
        ),
        (
            "rate-limit",
            json!({"limits": [{"name": "ip", "key": "${client_ip}", "rate": 0, "per": "1s"}]}),
            "limits[0]",
        ),
        (
            "jwt-auth",
            json!({"providers": [], "claims_to_headers": []}),
            "providers",
        ),
        (
            "portcullis",
            json!({"chain": [{"policy": "headers", "config": {"request": {"set": [{"name": "x", "value": "${nope}"}]}}}]}),
            "chain[0]",
        ),
    ]
}

#[test]
fn a_refused_config_names_its_field_and_lets_no_request_through() {
    for (filter, config, field) in cases() {
        let started = Gateway::new()
            .filter(filter, config.clone())
            .keep_running_if_refused()
            .start();
        let gw = match started {
            // Envoy: the listener never comes up
            Err(e) => {
                assert!(
                    e.refused_filter_config(),
                    "{filter}: the gateway did not report a refused filter:\n{}",
                    e.log()
                );
                assert!(
                    e.log().contains(field),
                    "{filter}: {field} not named:\n{}",
                    e.log()
                );
                assert!(
                    !host::is_kong_engine(),
                    "{filter}: Kong's engine should keep running"
                );
                continue;
            }
            Ok(gw) => gw,
        };
        assert!(host::is_kong_engine(), "{filter}: {config} was accepted");
        let log = gw.proxy.logs();
        assert!(log.contains(field), "{filter}: {field} not named:\n{log}");
        assert!(
            log.contains(portcullis_common::config::FAIL_CLOSED),
            "{log}"
        );
        for method in ["GET", "POST", "DELETE"] {
            let answer = gw
                .request(method, "/anything?x=1")
                .timeout(Duration::from_secs(5))
                .try_send()
                .unwrap_or_else(|e| panic!("{filter}: {method}: no answer: {e}"));
            assert_eq!(answer.status, 500, "{filter}: {method}: {}", answer.text());
        }
        assert_eq!(gw.upstream.count(), 0, "{filter}: the upstream was reached");
    }
}
