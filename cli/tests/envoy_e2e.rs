//! A policy file rendered by `portcullis render --target envoy` runs in a real Envoy: routes match on
//! path, method, host and header; each route runs exactly its own chain (other routes' filters stay off);
//! two routes with rate-limit keep separate counters (namespaces).

use portcullis_e2e::envoy::Envoy;
use portcullis_e2e::{paths, Request, Upstream};
use std::process::Command;

#[test]
fn rendered_bootstrap_serves_traffic_with_per_route_chains() {
    if !paths::envoy_binary().exists() {
        println!("skipped: no Envoy at {}", paths::envoy_binary().display());
        return;
    }
    let upstream = Upstream::echo();
    let dir = paths::scratch_dir("cli-render");
    let policy = format!(
        "
gateway: {{ listen: '127.0.0.1:0', admin: '127.0.0.1:0' }}
upstreams:
  echo: {{ url: 'http://{addr}' }}
routes:
  - name: tagged
    match: {{ path: /tagged, methods: [GET] }}
    upstream: echo
    chain:
      - filter: headers
        config: {{ request: {{ set: [ {{ name: x-route, value: '${{TAG_VALUE}}' }} ] }} }}
  - name: limited
    match: {{ path: /limited }}
    upstream: echo
    chain:
      - filter: rate-limit
        config: {{ namespace: limited, limits: [ {{ name: all, key: 'all', rate: 2, per: 1m }} ] }}
      - filter: headers
        config: {{ response: {{ set: [ {{ name: x-limited, value: 'yes' }} ] }} }}
  - name: partner
    match: {{ host: partner.example.com, path: /, headers: {{ x-partner: acme }} }}
    upstream: echo
    chain:
      - filter: request-guard
        config: {{ methods: [GET] }}
  - name: open
    match: {{ path: / }}
    upstream: echo
",
        addr = upstream.addr
    );
    let policy_file = dir.join("portcullis.yaml");
    std::fs::write(&policy_file, policy).expect("write policy");
    let bootstrap = dir.join("envoy.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("render")
        .arg(&policy_file)
        .args(["--target", "envoy", "-o"])
        .arg(&bootstrap)
        .env("TAG_VALUE", "from-env")
        .output()
        .expect("run portcullis");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envoy = Envoy::start_file(&bootstrap, &dir, 1).unwrap_or_else(|e| panic!("{e}"));
    let req = |method: &str, path: &str| Request::new(envoy.listener, method, path);

    // tagged: its headers filter runs (with the value substituted from the environment).
    req("GET", "/tagged").send().assert_status(200);
    upstream.last().assert_header("x-route", "from-env");
    // A method the route does not match falls through to `open`, which has no filters.
    req("POST", "/tagged").send().assert_status(200);
    upstream.last().assert_no_header("x-route");

    // limited: 2 per minute, then 429; the second filter of the chain runs too.
    for _ in 0..2 {
        let r = req("GET", "/limited/x").send();
        r.assert_status(200);
        assert_eq!(r.header("x-limited"), Some("yes"));
    }
    req("GET", "/limited/x").send().assert_status(429);
    // Other routes are not limited and do not get the limited route's headers.
    for _ in 0..3 {
        let r = req("GET", "/other").send();
        r.assert_status(200);
        assert_eq!(r.header("x-limited"), None);
    }

    // partner: host (any port, any case) and header must both match; its guard allows only GET.
    let partner = |method: &str| {
        req(method, "/p")
            .header("host", "Partner.Example.com:8080")
            .header("x-partner", "acme")
            .send()
    };
    partner("GET").assert_status(200);
    assert_eq!(partner("DELETE").status, 405);
    // Without the header the request is `open`'s: DELETE passes.
    req("DELETE", "/p")
        .header("host", "partner.example.com")
        .send()
        .assert_status(200);
}
