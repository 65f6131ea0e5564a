//! Criterion micro-benchmark of the access-log policy's decision functions, natively (no Envoy, no wasm), so
//! a regression shows without a gateway: `cargo bench -p portcullis-access-log`. Each iteration is one request
//! through a fresh `Exchange` over a `FakeHost` (built outside the timed part), as the adapter runs it.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{criterion_group, BatchSize, Criterion};
    use portcullis_access_log::AccessLogPolicy;
    use portcullis_common::testing::FakeHost;
    use portcullis_common::{Exchange, Policy};
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
        // the default sink is the host log (no logger is installed natively: this measures the record)
        let policy: AccessLogPolicy = configure(
            r#"{"request_headers": ["authorization", "accept"], "fields": {"service": "orders"}}"#,
        );
        bench(
            c,
            "access-log/request+log",
            &policy,
            || {
                request()
                    .with_header("authorization", "Bearer secret")
                    .with_property(&["request", "total_size"], &120u64.to_le_bytes())
                    .with_property(&["response", "total_size"], &80u64.to_le_bytes())
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
