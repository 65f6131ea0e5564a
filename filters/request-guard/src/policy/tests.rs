use super::*;
use portcullis_common::metrics;
use portcullis_common::testing::FakeHost;
use serde_json::json;

fn policy(config: serde_json::Value) -> RequestGuardPolicy {
    RequestGuardPolicy::configure(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{config}: {e}"))
}

fn get(peer: &str) -> FakeHost {
    FakeHost::request("GET", "/").with_property(&["source", "address"], peer.as_bytes())
}

/// Status of the local response, or 0 when the request goes on.
fn status(d: &Decision) -> u16 {
    match d {
        Decision::Respond(r) => r.status,
        Decision::Continue => 0,
        Decision::Pause => 1,
    }
}

fn headers(p: &RequestGuardPolicy, host: FakeHost) -> (Decision, GuardState) {
    let mut state = GuardState::default();
    let mut ex = Exchange::new(Box::new(host));
    let d = p.on_request_headers(&mut state, &mut ex);
    (d, state)
}

/// Runs the request through headers and then `chunks` of body the way the hosts deliver them: after a
/// `Continue` the next callback sees only the new chunk; after a `Pause` the buffer keeps growing.
/// Returns the first non-Continue/Pause decision (or the last decision) and how many chunks were read.
fn run(p: &RequestGuardPolicy, host: FakeHost, chunks: &[&[u8]]) -> (Decision, usize) {
    let mut state = GuardState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    let d = p.on_request_headers(&mut state, &mut ex);
    if d != Decision::Continue {
        return (d, 0);
    }
    let mut buffered: Vec<u8> = Vec::new();
    let mut last = Decision::Continue;
    for (i, chunk) in chunks.iter().enumerate() {
        buffered.extend_from_slice(chunk);
        host.state.borrow_mut().request_body = buffered.clone();
        let eos = i + 1 == chunks.len();
        ex.new_callback();
        last = p.on_request_body(&mut state, &mut ex, buffered.len(), eos);
        match last {
            Decision::Continue => buffered.clear(),
            Decision::Pause => {}
            Decision::Respond(_) => return (last, i + 1),
        }
    }
    (last, chunks.len())
}

#[test]
fn ip_rules_table() {
    let cases = [
        // (ip rules, peer, expected status)
        (json!({"deny": ["203.0.113.0/24"]}), "203.0.113.9:1", 403),
        (json!({"deny": ["203.0.113.0/24"]}), "198.51.100.1:1", 0),
        (json!({"allow": ["10.0.0.0/8"]}), "10.1.2.3:1", 0),
        (json!({"allow": ["10.0.0.0/8"]}), "11.1.2.3:1", 403),
        // deny wins over allow
        (
            json!({"allow": ["10.0.0.0/8"], "deny": ["10.6.0.0/16"]}),
            "10.6.1.1:1",
            403,
        ),
        (json!({"allow": ["0.0.0.0/0"]}), "[2001:db8::1]:1", 403),
        (
            json!({"allow": ["0.0.0.0/0", "::/0"]}),
            "[2001:db8::1]:1",
            0,
        ),
        (
            json!({"deny": ["2001:db8::/32"]}),
            "[2001:db8:1::5]:443",
            403,
        ),
        (json!({"deny": ["2001:db8::1/128"]}), "[2001:db8::2]:443", 0),
        // IPv4 clients on a dual-stack listener appear IPv4-mapped
        (
            json!({"deny": ["192.0.2.0/24"]}),
            "[::ffff:192.0.2.1]:1",
            403,
        ),
        (json!({"allow": ["192.0.2.1"]}), "[::ffff:192.0.2.1]:1", 0),
        // Kong reports the address without a port
        (json!({"deny": ["192.0.2.1/32"]}), "192.0.2.1", 403),
    ];
    for (rules, peer, want) in cases {
        let p = policy(json!({ "ip": rules }));
        let (d, _) = headers(&p, get(peer));
        assert_eq!(status(&d), want, "{rules} peer {peer}");
    }
}

#[test]
fn unknown_client_address_is_denied_when_ip_rules_exist() {
    let p = policy(json!({"ip": {"deny": ["192.0.2.0/24"]}}));
    let (d, _) = headers(&p, FakeHost::request("GET", "/"));
    assert_eq!(status(&d), 403);
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let p = policy(json!({
        "client_ip": {"source": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/8"]},
        "ip": {"deny": ["198.51.100.7"]}
    }));
    let cases = [
        // (peer, x-forwarded-for, status)
        ("10.0.0.2:1", "198.51.100.7", 403),
        // a client behind the proxy cannot hide by prepending an address
        ("10.0.0.2:1", "1.1.1.1, 198.51.100.7", 403),
        // nor frame someone else
        ("10.0.0.2:1", "198.51.100.7, 203.0.113.1", 0),
        // an untrusted peer's header is ignored in both directions
        ("203.0.113.5:1", "198.51.100.7", 0),
        ("198.51.100.7:1", "10.1.1.1", 403),
    ];
    for (peer, xff, want) in cases {
        let host = get(peer).with_header("x-forwarded-for", xff);
        let (d, _) = headers(&p, host);
        assert_eq!(status(&d), want, "peer {peer} xff {xff}");
    }
}

#[test]
fn resolved_client_is_recorded_even_without_ip_rules() {
    let p = policy(json!({
        "client_ip": {"source": "header", "header": "x-real-ip", "trusted_proxies": ["127.0.0.1"]}
    }));
    let host = get("127.0.0.1:9").with_header("x-real-ip", "198.51.100.3");
    let mut ex = Exchange::new(Box::new(host));
    let d = p.on_request_headers(&mut GuardState::default(), &mut ex);
    assert_eq!(d, Decision::Continue);
    assert_eq!(ex.client_ip(), "198.51.100.3".parse().ok());
}

#[test]
fn disallowed_method_gets_405_with_allow_header() {
    let p = policy(json!({"methods": ["GET", "POST"]}));
    let (d, _) = headers(&p, FakeHost::request("DELETE", "/"));
    let Decision::Respond(r) = d else {
        panic!("{d:?}")
    };
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert_eq!(
        headers(&p, FakeHost::request("POST", "/")).0,
        Decision::Continue
    );
    // methods are case-sensitive tokens
    assert_eq!(status(&headers(&p, FakeHost::request("get", "/")).0), 405);
}

#[test]
fn host_allow_list_table() {
    let cases = [
        // (rules, authority, status)
        (json!({"allow": ["api.example.com"]}), "api.example.com", 0),
        (
            json!({"allow": ["api.example.com"]}),
            "API.Example.COM:8443",
            0,
        ),
        (json!({"allow": ["api.example.com"]}), "api.example.com.", 0),
        (json!({"allow": ["api.example.com"]}), "evil.test", 421),
        (json!({"allow": ["api.example.com"]}), "", 421),
        (json!({"allow": ["*.example.com"]}), "a.example.com:80", 0),
        (json!({"allow": ["*.example.com"]}), "example.com", 421),
        (
            json!({"allow": ["api.example.com"], "status": 403}),
            "other.test",
            403,
        ),
        (json!({"allow": ["[::1]"]}), "[::1]:8080", 0),
    ];
    for (rules, authority, want) in cases {
        let p = policy(json!({ "hosts": rules }));
        let host = FakeHost::new()
            .with_header(":method", "GET")
            .with_header(":path", "/")
            .with_header(":authority", authority);
        assert_eq!(status(&headers(&p, host).0), want, "{rules} {authority:?}");
    }
}

#[test]
fn user_agent_rules_table() {
    let rules = json!({
        "deny_missing": true,
        "block_scanners": true,
        "deny": ["(?i)^curl/", "BadBot"],
        "allow": ["^Mozilla/", "^curl/", "^partner-client/"]
    });
    let p = policy(json!({ "user_agent": rules }));
    let cases: &[(Option<&str>, u16)] = &[
        (None, 403),
        (Some(""), 403),
        (Some("   "), 403),
        (Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"), 0),
        (Some("partner-client/2.1"), 0),
        // deny wins over allow
        (Some("curl/8.5.0"), 403),
        (Some("Mozilla/5.0 BadBot/1.0"), 403),
        // scanners are denied even when the allow list would match
        (Some("Mozilla/5.0 (compatible; Nmap Scripting Engine)"), 403),
        (Some("sqlmap/1.7"), 403),
        // not in the allow list
        (Some("python-requests/2.31"), 403),
    ];
    for (ua, want) in cases {
        let mut host = FakeHost::request("GET", "/");
        if let Some(ua) = ua {
            host = host.with_header("user-agent", ua);
        }
        assert_eq!(status(&headers(&p, host).0), *want, "{ua:?}");
    }
}

#[test]
fn remembered_user_agent_verdicts_match_fresh_ones_and_stay_bounded() {
    let p = policy(
        json!({"user_agent": {"deny": ["(?i)curl/"], "block_scanners": true, "allow": ["^Mozilla/"]}}),
    );
    let ua = |agent: &str| get("127.0.0.1:1").with_header("user-agent", agent);
    for _ in 0..3 {
        assert_eq!(status(&headers(&p, ua("curl/8.5")).0), 403);
        assert_eq!(status(&headers(&p, ua("sqlmap/1.7")).0), 403);
        assert_eq!(status(&headers(&p, ua("Mozilla/5.0 (X11)")).0), 0);
        assert_eq!(
            status(&headers(&p, ua("Wget/1.21")).0),
            403,
            "not on the allow list"
        );
    }
    for i in 0..3 * UA_CACHE_ENTRIES {
        let agent = format!("Mozilla/5.0 client-{i}");
        assert_eq!(status(&headers(&p, ua(&agent)).0), 0);
        assert!(p.ua_verdicts.borrow().len() <= UA_CACHE_ENTRIES);
    }
    assert_eq!(
        status(&headers(&p, ua("curl/8.5")).0),
        403,
        "a verdict evicted and recomputed"
    );
}

#[test]
fn missing_user_agent_passes_unless_deny_missing() {
    let p = policy(json!({"user_agent": {"deny": ["evil"], "allow": ["^ok"]}}));
    assert_eq!(
        headers(&p, FakeHost::request("GET", "/")).0,
        Decision::Continue
    );
}

#[test]
fn user_agent_is_matched_on_a_bounded_prefix() {
    let p = policy(json!({"user_agent": {"deny": ["sqlmap"]}}));
    let early = format!("sqlmap{}", "é".repeat(5000));
    let late = format!("{}sqlmap", "a".repeat(MAX_USER_AGENT_MATCH));
    assert_eq!(
        status(
            &headers(
                &p,
                FakeHost::request("GET", "/").with_header("user-agent", &early)
            )
            .0
        ),
        403
    );
    assert_eq!(
        headers(
            &p,
            FakeHost::request("GET", "/").with_header("user-agent", &late)
        )
        .0,
        Decision::Continue
    );
}

#[test]
fn declared_content_length_over_the_limit_is_refused_before_the_body() {
    let p = policy(json!({"body": {"max_bytes": 100}}));
    let post = |len: &str| FakeHost::request("POST", "/").with_header("content-length", len);
    assert_eq!(status(&run(&p, post("101"), &[]).0), 413);
    assert_eq!(run(&p, post("100"), &[&[b'x'; 100]]).0, Decision::Continue);
    assert_eq!(run(&p, post("0"), &[]).0, Decision::Continue);
}

#[test]
fn streamed_bodies_are_counted_across_chunk_boundaries() {
    let p = policy(json!({"body": {"max_bytes": 10}}));
    let chunked = || FakeHost::request("POST", "/").with_header("transfer-encoding", "chunked");
    let cases: &[(&[&[u8]], u16, usize)] = &[
        // (chunks, status, chunks read before the decision)
        (&[b"12345", b"67890"], 0, 2),
        (&[b"1234567890"], 0, 1),
        (&[b"12345", b"67890", b"1"], 413, 3),
        (&[b"12345678901"], 413, 1),
        (&[b"1234567890", b"", b"x", b"never read"], 413, 3),
        (&[b"", b""], 0, 2),
    ];
    for (chunks, want, read) in cases {
        let (d, n) = run(&p, chunked(), chunks);
        assert_eq!((status(&d), n), (*want, *read), "{chunks:?}");
    }
}

#[test]
fn a_lying_content_length_is_still_caught_by_counting() {
    let p = policy(json!({"body": {"max_bytes": 10}}));
    let host = FakeHost::request("POST", "/").with_header("content-length", "5");
    let (d, _) = run(&p, host, &[b"12345", b"678901"]);
    assert_eq!(status(&d), 413);
}

#[test]
fn content_length_can_be_required() {
    let p = policy(json!({"body": {"require_content_length": true}}));
    let chunked = FakeHost::request("POST", "/").with_header("transfer-encoding", "chunked");
    assert_eq!(status(&run(&p, chunked, &[b"x"]).0), 411);
    // a body arriving without either header (HTTP/2) is caught at the first byte
    assert_eq!(
        status(&run(&p, FakeHost::request("POST", "/"), &[b"x"]).0),
        411
    );
    let sized = FakeHost::request("POST", "/").with_header("content-length", "1");
    assert_eq!(run(&p, sized, &[b"x"]).0, Decision::Continue);
    assert_eq!(
        run(&p, FakeHost::request("GET", "/"), &[]).0,
        Decision::Continue
    );
}

#[test]
fn json_bodies_are_buffered_and_checked_at_the_end() {
    let p = policy(json!({"body": {"max_bytes": 64, "json": true, "max_json_depth": 3}}));
    let post = || FakeHost::request("POST", "/");
    let cases: &[(&[&[u8]], u16)] = &[
        (&[br#"{"a": [1, "#, br#"2]}"#], 0),
        (&[b"[[["], 400),
        (&[br#"{"a": "#, b"nope}"], 400),
        (&[b"[[[[1]]]]"], 400),
        (&[b"[1,2]", b"  "], 0),
        // over max_bytes while buffering: 413, never parsed
        (&[&[b' '; 40], &[b' '; 40]], 413),
    ];
    for (chunks, want) in cases {
        assert_eq!(status(&run(&p, post(), chunks).0), *want, "{chunks:?}");
    }
    // until the end of the body, chunks are held (buffered by the host)
    let mut state = GuardState::default();
    let host = post().with_body(b"{\"a\":");
    let mut ex = Exchange::new(Box::new(host));
    assert_eq!(
        p.on_request_headers(&mut state, &mut ex),
        Decision::Continue
    );
    assert_eq!(
        p.on_request_body(&mut state, &mut ex, 5, false),
        Decision::Pause
    );
}

#[test]
fn a_json_body_the_host_does_not_hand_over_is_refused_as_too_large() {
    // Kong's engine hands over no body that nginx buffered to a file: the check must not pass it unread.
    let p = policy(json!({"body": {"max_bytes": 64, "json": true}}));
    let host = FakeHost::request("POST", "/");
    let mut state = GuardState::default();
    let mut ex = Exchange::new(Box::new(host));
    assert_eq!(
        p.on_request_headers(&mut state, &mut ex),
        Decision::Continue
    );
    let d = p.on_request_body(&mut state, &mut ex, 20, true);
    assert_eq!(status(&d), 413, "{d:?}");
    // an empty body is still fine
    let mut state = GuardState::default();
    let mut ex = Exchange::new(Box::new(FakeHost::request("POST", "/")));
    p.on_request_headers(&mut state, &mut ex);
    assert_eq!(
        p.on_request_body(&mut state, &mut ex, 0, true),
        Decision::Continue
    );
}

#[test]
fn too_deep_json_says_so() {
    let p = policy(json!({"body": {"max_bytes": 64, "json": true, "max_json_depth": 1}}));
    let (d, _) = run(&p, FakeHost::request("POST", "/"), &[b"[[]]"]);
    let Decision::Respond(r) = d else {
        panic!("{d:?}")
    };
    assert!(String::from_utf8_lossy(&r.body).contains("nested too deeply"));
}

#[test]
fn body_callbacks_are_requested_only_with_body_rules() {
    assert!(!policy(json!({"methods": ["GET"]})).wants_request_body());
    assert!(policy(json!({"body": {"max_bytes": 1}})).wants_request_body());
    assert!(policy(json!({"body": {"require_content_length": true}})).wants_request_body());
}

/// A metric's value in the in-memory registry (0 when never defined). Tests compare before/after, as
/// under wasm32-wasip1 every test shares one registry.
fn count(name: &str) -> i64 {
    metrics::value(name).unwrap_or(0)
}

#[test]
fn dry_run_counts_every_rule_but_blocks_nothing() {
    let p = policy(json!({
        "dry_run": true,
        "ip": {"deny": ["192.0.2.0/24"]},
        "methods": ["GET"],
        "user_agent": {"block_scanners": true},
        "body": {"max_bytes": 4, "json": true}
    }));
    let reasons = [
        "ip_denied",
        "method_not_allowed",
        "user_agent_scanner",
        "body_too_large",
    ];
    let name = |kind: &str, r: &str| format!("portcullis_request_guard_{kind}_{r}_total");
    let before: Vec<(i64, i64)> = reasons
        .iter()
        .map(|r| (count(&name("dry_run", r)), count(&name("blocked", r))))
        .collect();
    let host = FakeHost::request("POST", "/")
        .with_property(&["source", "address"], b"192.0.2.1:1")
        .with_header("user-agent", "sqlmap/1.0");
    let (d, _) = run(&p, host, &[b"{\"a\":1}"]);
    assert_eq!(d, Decision::Continue);
    // Under wasm the host keeps metrics; the in-memory registry exists only natively.
    if cfg!(target_arch = "wasm32") {
        return;
    }
    for (r, (dry, blocked)) in reasons.iter().zip(before) {
        assert_eq!(count(&name("dry_run", r)) - dry, 1, "{r}");
        assert_eq!(count(&name("blocked", r)) - blocked, 0, "{r}");
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn blocks_and_passes_are_counted_per_reason() {
    let p = policy(json!({"user_agent": {"deny_missing": true, "deny": ["x"]}}));
    let names = [
        "portcullis_request_guard_blocked_user_agent_missing_total",
        "portcullis_request_guard_blocked_user_agent_denied_total",
        "portcullis_request_guard_passed_total",
    ];
    let before: Vec<i64> = names.iter().map(|n| count(n)).collect();
    headers(&p, FakeHost::request("GET", "/"));
    headers(&p, FakeHost::request("GET", "/"));
    headers(
        &p,
        FakeHost::request("GET", "/").with_header("user-agent", "x"),
    );
    headers(
        &p,
        FakeHost::request("GET", "/").with_header("user-agent", "ok"),
    );
    let after: Vec<i64> = names
        .iter()
        .map(|n| count(n) - before[names.iter().position(|m| m == n).unwrap()])
        .collect();
    assert_eq!(after, vec![2, 1, 1]);
}

#[test]
fn authority_parsing_strips_ports_only() {
    let cases = [
        ("Example.COM:8080", "example.com"),
        ("example.com", "example.com"),
        ("[2001:db8::1]:443", "[2001:db8::1]"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("host:notaport", "host:notaport"),
        ("example.com.", "example.com"),
    ];
    for (input, want) in cases {
        assert_eq!(host_without_port(input), want, "{input}");
    }
}

#[test]
fn a_body_of_unknown_length_gets_411_up_front_when_the_host_says_one_follows() {
    let p = policy(json!({"body": {"require_content_length": true}}));
    let mut ex = Exchange::new(Box::new(FakeHost::request("POST", "/")));
    ex.set_request_has_body(true);
    let d = p.on_request_headers(&mut GuardState::default(), &mut ex);
    assert_eq!(status(&d), 411);
    let mut ex = Exchange::new(Box::new(FakeHost::request("GET", "/")));
    ex.set_request_has_body(false);
    assert_eq!(
        p.on_request_headers(&mut GuardState::default(), &mut ex),
        Decision::Continue
    );
}
