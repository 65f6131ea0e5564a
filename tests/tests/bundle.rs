//! The `portcullis` bundle runs a chain inside one filter with the same client- and upstream-visible results
//! as the same policies as separate filters.

use portcullis_e2e::{json, FilterSpec, Gateway, Response};

fn chain() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "headers",
            json!({"request": {"set": [{"name": "x-step", "value": "one"}]},
                           "response": {"add": [{"name": "x-order", "value": "first"}]}}),
        ),
        (
            "headers",
            json!({"request": {"set": [{"name": "x-seen", "value": "${header.x-step}"}],
                                       "remove": ["x-secret"]},
                           "response": {"add": [{"name": "x-order", "value": "second"}]}}),
        ),
    ]
}

fn run(gw: &Gateway) -> (Response, portcullis_e2e::Recorded) {
    let resp = gw.get("/same").header("x-secret", "s").send();
    (resp, gw.upstream.last())
}

#[test]
fn bundle_matches_separate_filters() {
    let mut separate = Gateway::new();
    for (i, (name, config)) in chain().into_iter().enumerate() {
        let mut spec = FilterSpec::new(name, config);
        spec.vm_id = format!("{name}-{i}");
        separate = separate.filter_spec(spec);
    }
    let separate = separate.start().unwrap_or_else(|e| panic!("{e}"));
    let items: Vec<_> = chain()
        .into_iter()
        .map(|(p, c)| json!({"policy": p, "config": c}))
        .collect();
    let bundle = Gateway::new()
        .filter("portcullis", json!({ "chain": items }))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));

    let (a_resp, a_up) = run(&separate);
    let (b_resp, b_up) = run(&bundle);
    a_resp.assert_status(200);
    b_resp.assert_status(200);
    for name in ["x-step", "x-seen", "x-secret"] {
        assert_eq!(
            a_up.header(name),
            b_up.header(name),
            "upstream header {name}"
        );
    }
    assert_eq!(
        b_up.header("x-seen"),
        Some("one"),
        "later policy sees the earlier edit"
    );
    if portcullis_e2e::host::is_kong_engine() {
        // Kong's engine cannot remove a request header: ngx_wasm_module only marks the line deleted
        // (`hash = 0`, src/http/ngx_http_wasm_headers.c) and nginx's proxy module forwards every line
        // (ngx_http_proxy_create_request, src/http/modules/ngx_http_proxy_module.c), so the exchange empties
        // it instead (filters/common/src/exchange.rs): the client's value never reaches the upstream.
        assert_eq!(b_up.header("x-secret"), Some(""));
    } else {
        assert_eq!(b_up.header("x-secret"), None);
    }
    // response callbacks run in the host's order in both forms
    assert_eq!(
        a_resp.header_values("x-order"),
        b_resp.header_values("x-order")
    );
    if portcullis_e2e::host::is_kong_engine() {
        // ngx_wasm_module runs the response steps of a chain from the first filter to the last, like the request
        // steps (ngx_proxy_wasm_resume, src/common/proxy_wasm/ngx_proxy_wasm.c); the bundle follows it
        assert_eq!(b_resp.header_values("x-order"), vec!["first", "second"]);
    } else {
        assert_eq!(b_resp.header_values("x-order"), vec!["second", "first"]);
    }
}

#[test]
fn bundle_config_errors_name_the_chain_item() {
    let err = match Gateway::new()
        .filter("portcullis", json!({"chain": [{"policy": "headers", "config": {"request": {"add": [{"name": "ok", "value": "${bogus}"}]}}}]}))
        .start()
    {
        Ok(_) => panic!("envoy accepted an invalid bundle config"),
        Err(e) => e,
    };
    assert!(
        err.log().contains("[portcullis] invalid configuration: chain[0].config.request.add[0].value: unknown template variable ${bogus}"),
        "{}",
        err.log()
    );
}
