//! A configuration a filter refuses never leaves a route open, on either host: the operator finds the bad
//! field in the gateway's log, and no client request reaches the upstream. Envoy refuses to start; Kong's
//! engine keeps nginx up but every worker exits (ngx_wasm_module fails the filter in `init_worker`), so
//! clients get no answer at all.

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
        assert!(log.contains("on_configure failure"), "{log}");
        // every worker is gone: the request is accepted by the listening socket and never answered
        let answer = gw.get("/").timeout(Duration::from_millis(1500)).try_send();
        assert!(
            answer.is_err(),
            "{filter}: a client got an answer through a refused chain: {:?}",
            answer.map(|r| r.status)
        );
        assert_eq!(gw.upstream.count(), 0, "{filter}: the upstream was reached");
    }
}
