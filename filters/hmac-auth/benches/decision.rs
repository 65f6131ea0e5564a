//! Criterion micro-benchmark of the hmac-auth policy's decision functions, natively (no Envoy, no wasm), so
//! a regression shows without a gateway: `cargo bench -p portcullis-hmac-auth`. Each iteration is one request
//! through a fresh `Exchange` over a `FakeHost` (built outside the timed part), as the adapter runs it.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{criterion_group, BatchSize, Criterion};
    use portcullis_common::testing::{FakeHost, SharedMemoryStore};
    use portcullis_common::{Exchange, Policy};
    use portcullis_hmac_auth::{http_date, sign, Algorithm, HmacAuthPolicy, SigningRequest};
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
        let date = http_date(std::time::UNIX_EPOCH + NOW);
        let headers = [("date", date.as_str()), ("x-nonce", "3f1c0a9e-7b1d-4c1e")];
        let req = SigningRequest {
            method: "GET",
            path: "/orders?id=7",
            protocol: "HTTP/1.1",
            headers: &headers,
        };
        let authorization = sign(
            "alice",
            b"alice-secret",
            Algorithm::HmacSha256,
            &["@request-target", "date", "x-nonce"],
            &req,
        )
        .expect("sign");
        for replay in [false, true] {
            let policy: HmacAuthPolicy = configure(&format!(
                r#"{{"credentials": [{{"username": "alice", "secret": "alice-secret"}}],
                    "enforce_headers": ["@request-target", "date"], "replay_protection": {replay}}}"#
            ));
            let label = if replay { "with-nonce" } else { "no-nonce" };
            // a fresh store per request (FakeHost::request makes one): the nonce is new every time
            bench(
                c,
                &format!("hmac-auth/hmac-sha256/{label}"),
                &policy,
                || {
                    request()
                        .with_header("date", &date)
                        .with_header("x-nonce", "3f1c0a9e-7b1d-4c1e")
                        .with_header("authorization", &authorization)
                        .with_store(&SharedMemoryStore::default())
                },
                |p, st, ex| {
                    black_box(p.on_request_headers(st, ex));
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
