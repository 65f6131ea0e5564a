//! Criterion micro-benchmark of the jwt-auth policy's decision functions, natively (no Envoy, no wasm), so
//! a regression shows without a gateway: `cargo bench -p portcullis-jwt-auth`. Each iteration is one request
//! through a fresh `Exchange` over a `FakeHost` (built outside the timed part), as the adapter runs it.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{criterion_group, BatchSize, Criterion};
    use jwt_simple::prelude::*;
    use portcullis_common::testing::FakeHost;
    use portcullis_common::{Exchange, Policy};
    use portcullis_jwt_auth::JwtAuthPolicy;
    use std::hint::black_box;
    use std::time::{SystemTime, UNIX_EPOCH};

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

    const RSA_PEM: &str = include_str!("../fixtures/rsa2048.pk8.pem");
    const SECRET: &str = "portcullis-bench-hs256-secret-0123456789";

    fn decision(c: &mut Criterion) {
        // tokens carry the real time (jwt-simple), so the fake clock follows it
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = || {
            Claims::create(jwt_simple::prelude::Duration::from_hours(2))
                .with_issuer("https://issuer.bench.test/")
                .with_audience("bench-api")
                .with_subject("alice")
        };
        let rsa = RS256KeyPair::from_pem(RSA_PEM)
            .expect("key")
            .with_key_id("k1");
        let mut jwk: serde_json::Value =
            serde_json::from_str(&rsa.public_key().to_jwk()).expect("jwk");
        jwk["kid"] = "k1".into();
        let rs_token = rsa.sign(claims()).expect("sign");
        let hs_token = HS256Key::from_bytes(SECRET.as_bytes())
            .authenticate(claims())
            .expect("sign");
        for (alg, token) in [("HS256", &hs_token), ("RS256", &rs_token)] {
            let key = if alg == "HS256" {
                format!(r#""secret": "{SECRET}""#)
            } else {
                format!(r#""jwks": {{"keys": [{jwk}]}}"#)
            };
            for cache in [1024, 0] {
                let policy: JwtAuthPolicy = configure(&format!(
                    r#"{{"cache_max_entries": {cache}, "providers": [{{"name": "bench",
                        "issuer": "https://issuer.bench.test/", "audiences": ["bench-api"],
                        "algorithms": ["{alg}"], {key}}}]}}"#
                ));
                let label = if cache > 0 { "cached" } else { "uncached" };
                let bearer = format!("Bearer {token}");
                bench(
                    c,
                    &format!("jwt-auth/{alg}/{label}"),
                    &policy,
                    || request().at(now).with_header("authorization", &bearer),
                    |p, st, ex| {
                        black_box(p.on_request_headers(st, ex));
                    },
                );
            }
        }
    }

    criterion_group!(benches, decision);
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
