//! `portcullis_hmac_auth.wasm` in a real Envoy with two workers: a request signed with the crate's own `sign` helper
//! passes and names the consumer upstream, the same request replayed is refused on every worker, tampered
//! requests and bodies are refused, and a bad config keeps Envoy from starting.

use portcullis_e2e::{json, Gateway, Request};
use portcullis_hmac_auth::{body_digest, http_date, sign, Algorithm, SigningRequest};
use std::time::SystemTime;

fn gateway(extra: serde_json::Value) -> Gateway {
    let mut config = json!({
        "credentials": [{"username": "alice", "secret": "alice-secret"}],
        "hide_credentials": true
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Gateway::new()
        .filter("hmac-auth", config)
        .concurrency(2)
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A request carrying `headers` plus a signature over `@request-target` and every header given.
fn signed(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Request {
    let names: Vec<&str> = std::iter::once("@request-target")
        .chain(headers.iter().map(|(n, _)| *n))
        .collect();
    let r = SigningRequest {
        method,
        path,
        protocol: "HTTP/1.1",
        headers,
    };
    let auth = sign("alice", b"alice-secret", Algorithm::HmacSha256, &names, &r)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut req = gw.request(method, path).header("authorization", &auth);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    match body {
        Some(b) => req.body(b.to_vec()),
        None => req,
    }
}

/// Thread ids of the Envoy log lines that report a refused replay (`[date][thread][level]...`).
fn replay_threads(gw: &Gateway) -> std::collections::BTreeSet<String> {
    gw.proxy
        .filter_log("hmac-auth")
        .into_iter()
        .filter(|l| l.message.starts_with("denied: replay"))
        .map(|l| l.worker)
        .collect()
}

fn nonce(tag: &str) -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{tag}-{t}")
}

#[test]
fn signed_request_passes_and_its_replay_is_refused_on_every_worker() {
    let gw = gateway(json!({}));
    let date = http_date(SystemTime::now());
    let n = nonce("replay");
    let request = signed(
        &gw,
        "GET",
        "/orders?id=7",
        &[("date", &date), ("x-nonce", &n)],
        None,
    );
    request
        .clone()
        .header("x-consumer-username", "mallory")
        .send()
        .assert_status(200);
    let seen = gw.upstream.last();
    seen.assert_header("x-consumer-username", "alice")
        .assert_no_header("authorization");
    // Connections are closed after each request, so the kernel spreads the replays over both workers; the
    // nonce lives in shared data, which every worker sees. Replay until denials came from two worker
    // threads (Envoy's log lines carry the thread id), so at least one ran on another worker than the
    // original request.
    let mut replays = 0;
    while replay_threads(&gw).len() < 2 && replays < 40 {
        let resp = request.send();
        resp.assert_status(401);
        assert_eq!(
            resp.json()["message"],
            "HMAC signature cannot be verified: nonce already used"
        );
        replays += 1;
    }
    assert_eq!(
        replay_threads(&gw).len(),
        2,
        "replays were refused on both workers"
    );
    assert_eq!(gw.upstream.count(), 1);
    assert_eq!(
        gw.proxy
            .stat("wasmcustom.portcullis_hmac_auth_denied_replay_total"),
        Some(replays)
    );
    assert_eq!(
        gw.proxy
            .stat("wasmcustom.portcullis_hmac_auth_allowed_total"),
        Some(1)
    );
    // a fresh nonce is fine
    let n2 = nonce("fresh");
    signed(
        &gw,
        "GET",
        "/orders?id=7",
        &[("date", &date), ("x-nonce", &n2)],
        None,
    )
    .send()
    .assert_status(200);
}

#[test]
fn unsigned_and_tampered_requests_get_401_with_a_challenge() {
    let gw = gateway(json!({}));
    gw.get("/").send().assert_status(401).assert_header(
        "www-authenticate",
        r#"hmac realm="portcullis", headers="date x-nonce""#,
    );
    let date = http_date(SystemTime::now());
    let n = nonce("tamper");
    let request = signed(
        &gw,
        "GET",
        "/orders?id=7",
        &[("date", &date), ("x-nonce", &n)],
        None,
    );
    let mut tampered = request.clone();
    tampered.path = "/orders?id=8".into();
    tampered.send().assert_status(401);
    let old = http_date(SystemTime::now() - std::time::Duration::from_secs(600));
    let n = nonce("old");
    signed(&gw, "GET", "/", &[("date", &old), ("x-nonce", &n)], None)
        .send()
        .assert_status(401);
    assert_eq!(gw.upstream.count(), 0);
}

#[test]
fn request_body_must_match_its_signed_digest() {
    let gw = gateway(json!({"validate_request_body": true, "max_body_bytes": "64KiB"}));
    let date = http_date(SystemTime::now());
    let body = br#"{"amount": 10}"#;
    let digest = body_digest(body);
    let n = nonce("body-ok");
    signed(
        &gw,
        "POST",
        "/payments",
        &[("date", &date), ("x-nonce", &n), ("digest", &digest)],
        Some(body),
    )
    .chunked(4)
    .send()
    .assert_status(200);
    assert_eq!(gw.upstream.last().body, body.to_vec());
    let n = nonce("body-bad");
    let resp = signed(
        &gw,
        "POST",
        "/payments",
        &[("date", &date), ("x-nonce", &n), ("digest", &digest)],
        None,
    )
    .body(br#"{"amount": 99}"#.to_vec())
    .send();
    resp.assert_status(401);
    assert_eq!(gw.upstream.count(), 1);
}

#[test]
fn invalid_config_keeps_envoy_from_starting_and_names_the_field() {
    let err = match Gateway::new()
        .filter(
            "hmac-auth",
            json!({"credentials": [{"username": "alice", "secret_base64": "not base64!"}]}),
        )
        .start()
    {
        Ok(_) => panic!("envoy accepted an invalid hmac-auth config"),
        Err(e) => e,
    };
    let log = err.log();
    assert!(
        log.contains("[hmac-auth] invalid configuration: credentials[0].secret_base64: not base64"),
        "the filter's error should name the field; envoy said:\n{log}"
    );
}

#[test]
fn a_request_signed_with_openssl_in_a_shell_is_accepted() {
    // The README's shell recipe, minus curl: the signing string piped through `openssl dgst -hmac`.
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("openssl") && have("base64")) {
        println!("skipped: openssl or base64 is not installed");
        return;
    }
    let gw = gateway(json!({}));
    let date = http_date(SystemTime::now());
    let n = nonce("shell");
    let script = r#"printf '@request-target: get /orders?id=7\ndate: %s\nx-nonce: %s' "$1" "$2" \
        | openssl dgst -sha256 -hmac 'alice-secret' -binary | base64"#;
    let out = std::process::Command::new("sh")
        .args(["-c", script, "sh", &date, &n])
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let auth = format!(
        r#"hmac username="alice", algorithm="hmac-sha256", headers="@request-target date x-nonce", signature="{sig}""#
    );
    gw.get("/orders?id=7")
        .header("date", &date)
        .header("x-nonce", &n)
        .header("authorization", &auth)
        .send()
        .assert_status(200);
}
