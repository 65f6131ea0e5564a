//! Criterion micro-benchmark of the request-guard policy's decision functions, natively (no Envoy, no wasm), so
//! a regression shows without a gateway: `cargo bench -p portcullis-request-guard`. Each iteration is one request
//! through a fresh `Exchange` over a `FakeHost` (built outside the timed part), as the adapter runs it.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{criterion_group, BatchSize, Criterion};
    use portcullis_common::testing::FakeHost;
    use portcullis_common::{Exchange, Policy};
    use portcullis_request_guard::RequestGuardPolicy;
    use std::hint::black_box;

    #[allow(unused_imports)]
    use portcullis_common::testing::{
        configured as configure, run_request, typical_request as request, FIXED_NOW as NOW,
    };

    /// Runs `f` once per iteration on a fresh request from `make` (setup not timed).
    fn bench<P: Policy>(
        c: &mut Criterion,
        name: &str,
        policy: &P,
        make: impl Fn() -> FakeHost,
        f: impl Fn(&P, &mut P::State, &mut Exchange),
    ) {
        c.bench_function(name, |b| {
            b.iter_batched(
                &make,
                |host| black_box(run_request(policy, host, &f)),
                BatchSize::SmallInput,
            )
        });
    }

    fn decision(c: &mut Criterion) {
        let policy: RequestGuardPolicy = configure(
            r#"{"ip": {"deny": ["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "10.66.0.0/16",
                               "172.31.250.0/24", "100.64.0.0/10", "2001:db8::/32", "fd00:bad::/32"]},
                "user_agent": {"deny": ["(?i)(sqlmap|nikto|nmap|masscan|zgrab|nuclei|dirbuster|gobuster)"],
                               "block_scanners": true},
                "methods": ["GET", "POST"]}"#,
        );
        bench(c, "request-guard/pass", &policy, request, |p, st, ex| {
            black_box(p.on_request_headers(st, ex));
        });
        bench(
            c,
            "request-guard/blocked-scanner",
            &policy,
            || {
                FakeHost::request("GET", "/")
                    .with_header("user-agent", "sqlmap/1.7")
                    .with_property(&["source", "address"], b"127.0.0.1:40000")
                    .at(NOW)
            },
            |p, st, ex| {
                black_box(p.on_request_headers(st, ex));
            },
        );
    }

    criterion_group!(benches, decision);
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
