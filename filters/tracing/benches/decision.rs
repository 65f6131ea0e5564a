//! Criterion micro-benchmark of the tracing policy's decision functions, natively (no Envoy, no wasm), so
//! a regression shows without a gateway: `cargo bench -p portcullis-tracing`. Each iteration is one request
//! through a fresh `Exchange` over a `FakeHost` (built outside the timed part), as the adapter runs it.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{criterion_group, BatchSize, Criterion};
    use portcullis_common::testing::FakeHost;
    use portcullis_common::{Exchange, Policy};
    use portcullis_tracing::TracingPolicy;
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
        // spans queue per worker (max_queue) until a tick flushes them; past the cap they are dropped and
        // counted, which is what this measures after the first 1000 iterations
        let policy: TracingPolicy = configure(
            r#"{"sample_ratio": 1.0, "inject": ["w3c"], "exporter": {"upstream": "otel"}}"#,
        );
        bench(
            c,
            "tracing/continue-w3c-trace",
            &policy,
            || {
                request().with_header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
            },
            |p, st, ex| {
                black_box(p.on_request_headers(st, ex));
                black_box(p.on_response_headers(st, ex));
                p.on_log(st, ex);
            },
        );
    }

    criterion_group!(benches, decision);
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
