//! Criterion micro-benchmark of the rate-limit policy's decision functions, natively (no Envoy, no wasm), so
//! a regression shows without a gateway: `cargo bench -p portcullis-rate-limit`. Each iteration is one request
//! through a fresh `Exchange` over a `FakeHost` (built outside the timed part), as the adapter runs it.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{criterion_group, BatchSize, Criterion};
    use portcullis_common::testing::{FakeHost, SharedMemoryStore};
    use portcullis_common::{Exchange, Policy};
    use portcullis_rate_limit::RateLimitPolicy;
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
        for (label, limit) in [
            (
                "open",
                r#""rate": 1000000000, "per": "1s", "burst": 1000000000"#,
            ),
            ("limited", r#""rate": 1, "per": "1h", "burst": 1"#),
        ] {
            let policy: RateLimitPolicy = configure(&format!(
                r#"{{"limits": [{{"name": "per_ip", "key": "${{client_ip}}", {limit}}}]}}"#
            ));
            // one store for all iterations: the counter exists, as in a running gateway
            let store = SharedMemoryStore::default();
            bench(
                c,
                &format!("rate-limit/token_bucket/{label}"),
                &policy,
                || request().with_store(&store),
                |p, st, ex| {
                    black_box(p.on_request_headers(st, ex));
                    black_box(p.on_response_headers(st, ex));
                },
            );
        }
    }

    criterion_group!(benches, decision);
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
