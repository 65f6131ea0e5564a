//! `portcullis_headers.wasm` in a real Envoy: request edits reach the upstream, response edits reach the client,
//! and a bad config keeps Envoy from starting with a message that names the field.

use portcullis_e2e::{json, Gateway};

#[test]
fn request_headers_are_transformed_before_the_upstream_sees_them() {
    let gw = Gateway::new()
        .filter(
            "headers",
            json!({"request": {
                "remove": ["x-internal"],
                "rename": [{"from": "x-user", "to": "x-consumer"}],
                "set": [{"name": "x-client-ip", "value": "${client_ip}"},
                        {"name": "x-route", "value": "${method} ${path}"}],
                "add": [{"name": "x-via", "value": "portcullis"}]
            }}),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    gw.get("/orders?id=7")
        .header("x-internal", "secret")
        .header("x-user", "alice")
        .header("x-via", "client")
        .send()
        .assert_status(200);
    let seen = gw.upstream.last();
    seen.assert_no_header("x-internal")
        .assert_no_header("x-user")
        .assert_header("x-consumer", "alice")
        .assert_header("x-client-ip", "127.0.0.1")
        .assert_header("x-route", "GET /orders");
    assert_eq!(seen.header_values("x-via"), vec!["client", "portcullis"]);
}

#[test]
fn response_headers_are_transformed_before_the_client_sees_them() {
    let upstream = portcullis_e2e::Upstream::start(|_| {
        portcullis_e2e::Reply::status(200)
            .header("x-powered-by", "php")
            .header("x-backend", "b1")
    });
    let gw = Gateway::new()
        .upstream(upstream)
        .filter(
            "headers",
            json!({"response": {
                "remove": ["x-powered-by"],
                "rename": [{"from": "x-backend", "to": "x-served-by"}],
                "set": [{"name": "x-request-id", "value": "${request_id}"}],
                "add": [{"name": "x-user-echo", "value": "${header.x-user}"}]
            }}),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = gw
        .get("/")
        .header("x-request-id", "req-42")
        .header("x-user", "bob")
        .send();
    resp.assert_status(200)
        .assert_no_header("x-powered-by")
        .assert_no_header("x-backend")
        .assert_header("x-served-by", "b1")
        .assert_header("x-request-id", "req-42")
        .assert_header("x-user-echo", "bob");
}

#[test]
fn invalid_config_keeps_envoy_from_starting_and_names_the_field() {
    let err = match Gateway::new()
        .filter(
            "headers",
            json!({"request": {"set": [{"name": "x ok", "value": "v"}]}}),
        )
        .start()
    {
        Ok(_) => panic!("envoy accepted an invalid headers config"),
        Err(e) => e,
    };
    let log = err.log();
    assert!(
        log.contains(r#"[headers] invalid configuration: request.set[0].name: "x ok" is not a valid header name"#),
        "the filter's error should name the field; envoy said:\n{log}"
    );
    assert!(err.refused_filter_config(), "{log}");
}

#[test]
fn crlf_in_a_request_value_cannot_inject_a_header_upstream() {
    let gw = Gateway::new()
        .filter(
            "headers",
            json!({"request": {"set": [{"name": "x-copy", "value": "${query.q}"}]}}),
        )
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    gw.get("/?q=a%0D%0Ax-admin:%20true")
        .send()
        .assert_status(200);
    let seen = gw.upstream.last();
    seen.assert_no_header("x-admin");
    seen.assert_header("x-copy", "a%0D%0Ax-admin:%20true");
}
