//! Attack corpus for `request-guard` (issue 11), through the public API only: `configure` +
//! `on_request_headers`/`on_request_body` with a `FakeHost`. X-Forwarded-For spoofing (prepended hops,
//! several header lines, garbage, IPv6 and IPv4-mapped forms, 200 hops, `trusted_hops` edges) must never let
//! a deny-listed client through, and body-smuggling patterns (lying `content-length`, chunk boundaries one
//! byte over `max_bytes`) must get the documented 413/411.

// Integration tests link the crate with its proxy-wasm exports (`export_policy!`, which defines
// `_initialize`), which the wasm32-wasip1 test runner refuses; the unit tests in src/ cover wasm32.
#![cfg(not(target_arch = "wasm32"))]

use portcullis_common::testing::FakeHost;
use portcullis_common::{Decision, Exchange, Policy};
use portcullis_request_guard::policy::GuardState;
use portcullis_request_guard::RequestGuardPolicy;
use serde_json::{json, Value};
use std::net::IpAddr;

/// The attacker: deny-listed, in IPv4 and IPv6.
const EVIL: &str = "203.0.113.9";
const EVIL6: &str = "2001:db8:bad::1";
/// An innocent address a spoofer would like to be.
const GOOD: &str = "198.51.100.7";
/// The trusted load balancer in front of the gateway.
const LB: &str = "10.0.0.2";

fn policy(config: Value) -> RequestGuardPolicy {
    RequestGuardPolicy::configure(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{config}: {e}"))
}

/// XFF from the 10/8 load balancers, deny-listing the attacker's networks.
fn xff_policy(client_ip: Value) -> RequestGuardPolicy {
    policy(json!({
        "client_ip": client_ip,
        "ip": {"deny": ["203.0.113.0/24", "2001:db8:bad::/48"]}
    }))
}

fn behind_lb() -> RequestGuardPolicy {
    xff_policy(json!({"source": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/8"]}))
}

/// A request from `peer` (Envoy's `ip:port` form) with one `x-forwarded-for` line per entry of `xff`.
fn from(peer: &str, xff: &[&str]) -> FakeHost {
    let mut h =
        FakeHost::request("GET", "/").with_property(&["source", "address"], peer.as_bytes());
    for line in xff {
        h = h.with_header("x-forwarded-for", line);
    }
    h
}

/// The header decision and the client address the policy resolved (recorded for later policies).
fn resolve(p: &RequestGuardPolicy, host: FakeHost) -> (u16, Option<IpAddr>) {
    let mut ex = Exchange::new(Box::new(host));
    let d = p.on_request_headers(&mut GuardState::default(), &mut ex);
    let status = match &d {
        Decision::Continue => 0,
        Decision::Pause => 1,
        Decision::Respond(r) => {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            if r.status == 403 {
                assert_eq!(body["message"], "client address not allowed");
            }
            r.status
        }
    };
    (status, ex.client_ip())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_attacker_is_denied_whatever_it_prepends_to_x_forwarded_for() {
    let p = behind_lb();
    let peer = format!("{LB}:40000");
    // (lines of x-forwarded-for as the gateway receives them; the LB appended the real client last)
    let cases: Vec<Vec<String>> = vec![
        vec![EVIL.into()],
        vec![format!("{GOOD}, {EVIL}")],
        vec![format!("{GOOD}, 10.9.9.9, {EVIL}")],
        vec![format!("127.0.0.1, ::1, {EVIL}")],
        vec![format!("10.0.0.1, {EVIL}")],
        vec![format!("{GOOD},{EVIL}")],
        vec![format!("  {GOOD} ,  {EVIL}  ")],
        vec![format!("{GOOD}, , ,{EVIL}, ,")],
        vec![format!("{GOOD}:443, {EVIL}:51234")],
        // garbage written by the client, left of the real hop
        vec![format!("garbage, {EVIL}")],
        vec![format!("<script>alert(1)</script>, {EVIL}")],
        vec![format!("unknown, _hidden, {EVIL}")],
        vec![format!("3405803785, 0xcb.0.113.9, 203.0.113.009, {EVIL}")],
        vec![format!("{GOOD}\u{0}, {EVIL}")],
        vec![format!("for={GOOD};proto=https, {EVIL}")],
        vec![format!("{}{EVIL}", ",".repeat(4000))],
        // several header lines: read in order as one list, the client's first line never wins
        vec![GOOD.into(), EVIL.into()],
        vec![format!("{GOOD}, 10.1.1.1"), EVIL.into()],
        vec![GOOD.into(), "".into(), EVIL.into()],
        vec![GOOD.into(), format!("{EVIL}, 10.1.1.1")],
        // trusted internal hops right of the attacker are skipped
        vec![format!("{GOOD}, {EVIL}, 10.1.1.1, 10.2.2.2")],
        vec![format!("{GOOD}, {EVIL}, ::ffff:10.1.1.1")],
    ];
    for lines in &cases {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (status, client) = resolve(&p, from(&peer, &refs));
        assert_eq!(status, 403, "{lines:?} resolved to {client:?}");
        assert_eq!(client, Some(ip(EVIL)), "{lines:?}");
    }
    // an untrusted peer's header is ignored entirely: the attacker connecting directly cannot claim GOOD
    for xff in [GOOD, "10.0.0.5", "127.0.0.1"] {
        let (status, client) = resolve(&p, from(&format!("{EVIL}:1234"), &[xff]));
        assert_eq!((status, client), (403, Some(ip(EVIL))), "{xff}");
    }
    // and the innocent client behind the LB passes, even with junk it wrote itself
    let (status, client) = resolve(&p, from(&peer, &[&format!("{EVIL}, junk, {GOOD}")]));
    assert_eq!((status, client), (0, Some(ip(GOOD))));
}

#[test]
fn ipv6_and_ipv4_mapped_forms_of_the_attacker_are_denied() {
    let p = behind_lb();
    let peer = format!("{LB}:40000");
    let forms = [
        (EVIL6, EVIL6),
        ("2001:DB8:BAD::1", EVIL6),
        ("2001:0db8:0bad:0000:0000:0000:0000:0001", EVIL6),
        ("[2001:db8:bad::1]", EVIL6),
        ("[2001:db8:bad::1]:443", EVIL6),
        (
            "2001:db8:bad:ffff:ffff:ffff:ffff:ffff",
            "2001:db8:bad:ffff:ffff:ffff:ffff:ffff",
        ),
        // IPv4-mapped forms of the IPv4 attacker match its IPv4 network
        ("::ffff:203.0.113.9", "::ffff:203.0.113.9"),
        ("::FFFF:cb00:7109", "::ffff:203.0.113.9"),
        ("[::ffff:203.0.113.9]:8080", "::ffff:203.0.113.9"),
    ];
    for (written, resolved) in forms {
        let (status, client) = resolve(&p, from(&peer, &[&format!("{GOOD}, {written}")]));
        assert_eq!(status, 403, "{written} resolved to {client:?}");
        assert_eq!(client, Some(ip(resolved)), "{written}");
    }
    // an IPv6 or IPv4-mapped trusted proxy as peer
    for peer in ["[::ffff:10.0.0.2]:40000", "::ffff:10.0.0.2"] {
        let (status, client) = resolve(&p, from(peer, &[&format!("{GOOD}, {EVIL}")]));
        assert_eq!((status, client), (403, Some(ip(EVIL))), "{peer}");
    }
    // an IPv6 attacker connecting directly
    let (status, _) = resolve(&p, from(&format!("[{EVIL6}]:5555"), &[GOOD]));
    assert_eq!(status, 403);
    // a mapped deny entry catches the plain IPv4 attacker too
    let mapped = policy(json!({"ip": {"deny": ["::ffff:203.0.113.0/120"]}}));
    assert_eq!(resolve(&mapped, from(&format!("{EVIL}:1"), &[])).0, 403);
}

#[test]
fn two_hundred_hops_are_walked_boundedly_and_cannot_hide_the_attacker() {
    let p = behind_lb();
    let peer = format!("{LB}:40000");
    // 199 spoofed hops written by the client, then the real one
    let spoofed = vec![GOOD; 199].join(", ");
    let (status, client) = resolve(&p, from(&peer, &[&format!("{spoofed}, {EVIL}")]));
    assert_eq!((status, client), (403, Some(ip(EVIL))));
    // 200 hops on 200 header lines
    let mut lines = vec![GOOD; 199];
    lines.push(EVIL);
    assert_eq!(resolve(&p, from(&peer, &lines)), (403, Some(ip(EVIL))));
    // 200 garbage hops
    let junk = vec!["x"; 199].join(",");
    assert_eq!(
        resolve(&p, from(&peer, &[&format!("{junk},{EVIL}")])),
        (403, Some(ip(EVIL)))
    );
    // 200 trusted hops: documented, at most 64 are examined and the walk stops at the 64th (a trusted,
    // internal address): the far-left entry, 136 hops beyond, is never believed
    let mut hops: Vec<String> = vec![GOOD.to_string()];
    hops.extend((0..199).map(|i| format!("10.{}.{}.1", i / 250, i % 250)));
    let (status, client) = resolve(&p, from(&peer, &[&hops.join(", ")]));
    assert_eq!(status, 0);
    let client = client.unwrap();
    assert_ne!(
        client,
        ip(GOOD),
        "a hop beyond the 64 examined was believed"
    );
    assert_eq!(client, ip(&hops[200 - 64]), "the 64th hop from the right");
}

#[test]
fn trusted_hops_pick_the_nth_address_from_the_right() {
    let peer = "192.0.2.50:40000"; // any peer: trusted_hops without trusted_proxies trusts every peer
    let hops = |n: u32| xff_policy(json!({"source": "x_forwarded_for", "trusted_hops": n}));
    let cases: &[(u32, &str, u16, &str)] = &[
        // (trusted_hops, x-forwarded-for, status, client)
        (1, EVIL, 403, EVIL),
        (1, "198.51.100.7, 203.0.113.9", 403, EVIL),
        (2, "203.0.113.9, 192.0.2.1", 403, EVIL),
        (2, "198.51.100.7, 203.0.113.9, 192.0.2.1", 403, EVIL),
        // the hop right of the client is trusted whatever its address, even a deny-listed one
        (2, "198.51.100.7, 203.0.113.8", 0, GOOD),
        // fewer hops than trusted: every hop trusted, the left-most is the client (documented)
        (3, "203.0.113.9, 192.0.2.1", 403, EVIL),
        (16, "203.0.113.9", 403, EVIL),
        (16, "203.0.113.9, 10.0.0.1, 10.0.0.2", 403, EVIL),
        // no header: the peer
        (1, "", 0, "192.0.2.50"),
        // garbage in a trusted position stops the walk at the hop right of it (here: the peer)
        (2, "203.0.113.9, garbage", 0, "192.0.2.50"),
        (2, "198.51.100.7, garbage, 192.0.2.1", 0, "192.0.2.1"),
    ];
    for (n, xff, want_status, want_client) in cases {
        let p = hops(*n);
        let lines: Vec<&str> = if xff.is_empty() { vec![] } else { vec![xff] };
        let (status, client) = resolve(&p, from(peer, &lines));
        assert_eq!(
            (status, client),
            (*want_status, Some(ip(want_client))),
            "hops {n}, xff {xff:?}"
        );
    }
    // trusted_hops combined with trusted_proxies: only the listed peers are believed
    let both = xff_policy(
        json!({"source": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/8"], "trusted_hops": 2}),
    );
    assert_eq!(
        resolve(&both, from(&format!("{EVIL}:1"), &[GOOD])),
        (403, Some(ip(EVIL)))
    );
    assert_eq!(
        resolve(
            &both,
            from("10.0.0.2:1", &["198.51.100.7, 203.0.113.9, 192.0.2.1"])
        ),
        (403, Some(ip(EVIL)))
    );
    // out-of-range configurations are refused with the field path
    for (cfg, field) in [
        (
            json!({"source": "x_forwarded_for", "trusted_hops": 17}),
            "client_ip.trusted_hops",
        ),
        (
            json!({"source": "x_forwarded_for", "trusted_hops": 0}),
            "client_ip.trusted_proxies",
        ),
        (
            json!({"source": "x_forwarded_for", "trusted_hops": -1}),
            "client_ip.trusted_hops",
        ),
        (
            json!({"source": "peer", "trusted_hops": 1}),
            "client_ip.source",
        ),
    ] {
        let text = json!({"client_ip": cfg}).to_string();
        let err = match RequestGuardPolicy::configure(text.as_bytes()) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(field), "{text}: {err}");
    }
}

/// Headers, then `chunks` the way the hosts deliver them: after `Continue` the next callback sees only
/// the new chunk, after `Pause` the buffer grows. Returns the first local response's status (0 = passed)
/// and how many chunks were read.
fn stream(p: &RequestGuardPolicy, host: FakeHost, chunks: &[&[u8]]) -> (u16, usize) {
    let mut state = GuardState::default();
    let mut ex = Exchange::new(Box::new(host.clone()));
    match p.on_request_headers(&mut state, &mut ex) {
        Decision::Continue => {}
        Decision::Respond(r) => return (r.status, 0),
        Decision::Pause => panic!("paused on headers"),
    }
    let mut buffered = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        buffered.extend_from_slice(chunk);
        host.state.borrow_mut().request_body = buffered.clone();
        ex.new_callback();
        match p.on_request_body(&mut state, &mut ex, buffered.len(), i + 1 == chunks.len()) {
            Decision::Continue => buffered.clear(),
            Decision::Pause => {}
            Decision::Respond(r) => {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                if r.status == 413 {
                    assert_eq!(body["message"], "request body too large");
                }
                return (r.status, i + 1);
            }
        }
    }
    (0, chunks.len())
}

fn post(headers: &[(&str, &str)]) -> FakeHost {
    let mut h = FakeHost::request("POST", "/upload");
    for (n, v) in headers {
        h = h.with_header(n, v);
    }
    h
}

/// (name, request headers, body chunks, expected (status, chunks read)).
type SmuggleCase<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<&'a [u8]>,
    (u16, usize),
);

#[test]
fn smuggled_bodies_are_counted_past_a_lying_content_length() {
    const MAX: usize = 100;
    let x = [b'x'; MAX + 1];
    for json_on in [false, true] {
        let p = policy(json!({"body": {"max_bytes": MAX, "json": json_on}}));
        let te = ("transfer-encoding", "chunked");
        let cases: Vec<SmuggleCase> = vec![
            // content-length smaller than the streamed body
            (
                "cl 10, 101 bytes",
                vec![("content-length", "10")],
                vec![&x[..10], &x[10..]],
                (413, 2),
            ),
            (
                "cl 0, 101 bytes",
                vec![("content-length", "0")],
                vec![&x[..]],
                (413, 1),
            ),
            (
                "cl 100, 101 bytes",
                vec![("content-length", "100")],
                vec![&x[..100], &x[100..]],
                (413, 2),
            ),
            // CL.TE: both headers, the body is what counts
            (
                "cl+te",
                vec![("content-length", "5"), te],
                vec![&x[..5], &x[5..]],
                (413, 2),
            ),
            (
                "te+cl",
                vec![te, ("content-length", "5")],
                vec![&x[..50], &x[50..]],
                (413, 2),
            ),
            // content-length values the filter does not believe: the body is counted instead
            (
                "cl list",
                vec![("content-length", "10, 10")],
                vec![&x[..]],
                (413, 1),
            ),
            (
                "cl sign",
                vec![("content-length", "+10")],
                vec![&x[..]],
                (413, 1),
            ),
            (
                "cl negative",
                vec![("content-length", "-1")],
                vec![&x[..]],
                (413, 1),
            ),
            (
                "cl hex",
                vec![("content-length", "0x10")],
                vec![&x[..]],
                (413, 1),
            ),
            (
                "cl > u64",
                vec![("content-length", "18446744073709551616")],
                vec![&x[..]],
                (413, 1),
            ),
            // split at chunk boundaries, one byte over in the last chunk
            (
                "50+50+1",
                vec![te],
                vec![&x[..50], &x[50..100], &x[100..]],
                (413, 3),
            ),
            ("99+2", vec![te], vec![&x[..99], &x[99..]], (413, 2)),
            (
                "empty chunks",
                vec![te],
                vec![b"", &x[..100], b"", &x[100..], b"never read"],
                (413, 4),
            ),
            // exactly max_bytes passes, however it is split
            ("50+50", vec![te], vec![&x[..50], &x[50..100]], (0, 2)),
            (
                "100",
                vec![("content-length", "100")],
                vec![&x[..100]],
                (0, 1),
            ),
        ];
        for (name, hdrs, chunks, want) in cases {
            // json: bodies are buffered; make the accepted ones valid JSON of the same length
            let json_body: Vec<u8>;
            let chunks: Vec<&[u8]> = if json_on && want.0 == 0 {
                let total: usize = chunks.iter().map(|c| c.len()).sum();
                json_body = format!("\"{}\"", "x".repeat(total - 2)).into_bytes();
                let mut at = 0;
                chunks
                    .iter()
                    .map(|c| {
                        let part = &json_body[at..at + c.len()];
                        at += c.len();
                        part
                    })
                    .collect()
            } else {
                chunks
            };
            assert_eq!(
                stream(&p, post(&hdrs), &chunks),
                want,
                "{name} (json {json_on})"
            );
        }
    }
    // one byte per chunk: the 101st byte is refused (101 callbacks, not a buffer of 101 bytes)
    let p = policy(json!({"body": {"max_bytes": MAX}}));
    let bytes: Vec<&[u8]> = x.chunks(1).collect();
    assert_eq!(
        stream(&p, post(&[("transfer-encoding", "chunked")]), &bytes),
        (413, MAX + 1)
    );
    // a declared oversize length is refused before any body byte
    assert_eq!(
        stream(&p, post(&[("content-length", "101")]), &[&x[..]]),
        (413, 0)
    );
    assert_eq!(
        stream(
            &p,
            post(&[("content-length", "99999999999999999999")]),
            &[&x[..]]
        ),
        (413, 1)
    );
}

#[test]
fn a_body_without_a_believable_length_gets_411_when_one_is_required() {
    let p = policy(json!({"body": {"require_content_length": true, "max_bytes": 100}}));
    // chunked: refused at the headers
    assert_eq!(
        stream(&p, post(&[("transfer-encoding", "chunked")]), &[b"x"]),
        (411, 0)
    );
    assert_eq!(
        stream(&p, post(&[("transfer-encoding", "gzip, chunked")]), &[b"x"]),
        (411, 0)
    );
    // an unbelievable content-length with a body: refused at the first byte
    for cl in ["10, 10", "+1", "1e2", "", "abc"] {
        assert_eq!(
            stream(&p, post(&[("content-length", cl)]), &[b"x"]),
            (411, 1),
            "{cl:?}"
        );
    }
    // a body the host announces (HTTP/2, or Envoy after removing transfer-encoding)
    let mut state = GuardState::default();
    let mut ex = Exchange::new(Box::new(post(&[])));
    ex.set_request_has_body(true);
    match p.on_request_headers(&mut state, &mut ex) {
        Decision::Respond(r) => assert_eq!(r.status, 411),
        other => panic!("{other:?}"),
    }
    // a believable length still gets the body counted: lying short is a 413
    assert_eq!(
        stream(&p, post(&[("content-length", "1")]), &[&[b'x'; 101]]),
        (413, 1)
    );
    assert_eq!(
        stream(&p, post(&[("content-length", "3")]), &[b"abc"]),
        (0, 1)
    );
}
