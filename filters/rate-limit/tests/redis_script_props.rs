//! Property: the Lua scripts that run in Redis (`store.type: redis_http`) decide exactly like the local
//! algorithms ([`Algorithm::consume`]) with the same clock: same admissions, `RateLimit-*` values and
//! `Retry-After`, for any parameters in the scripts' exact domain and any clock sequence (including clocks
//! that go backwards). The scripts run for real in a `redis-server` started on a loopback ephemeral port;
//! without `redis-server` the tests print `skipped: …` (scripts/setup installs it).
#![cfg(not(target_arch = "wasm32"))]

use portcullis_common::template::Template;
use portcullis_common::testing::MemoryStore;
use portcullis_rate_limit::algo::Algorithm;
use portcullis_rate_limit::config::{Limit, OnMissingKey, OnStoreError};
use portcullis_rate_limit::core::{Key, LimitResult, Limiter};
use portcullis_rate_limit::redis::{algo_args, check_script, reserve_script};
use proptest::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process, killed on drop. The tests of this file take turns (`_turn`): two servers
/// started at once could be handed the same just-released ephemeral port, and the test whose server lost the
/// bind would then talk to (and, on drop, outlive) the other test's server.
struct Redis {
    child: Child,
    port: u16,
    _turn: std::sync::MutexGuard<'static, ()>,
}

static ONE_SERVER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<Redis> {
    let turn = ONE_SERVER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("skipped: redis-server is not installed ({e}); run scripts/setup");
            return None;
        }
    };
    let mut redis = Redis {
        child,
        port,
        _turn: turn,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = redis.child.try_wait() {
            panic!("redis-server exited at start ({status}): is port {port} taken?");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(redis);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not listen on port {port}");
}

/// A minimal RESP client: commands as arrays of bulk strings; replies as integers, arrays or errors.
struct Conn {
    reader: BufReader<TcpStream>,
}

#[derive(Debug, PartialEq)]
enum Reply {
    Int(i64),
    Array(Vec<Reply>),
    Text(String),
    Nil,
}

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        Conn {
            reader: BufReader::new(s),
        }
    }

    fn call(&mut self, args: &[String]) -> Reply {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader.get_mut().write_all(out.as_bytes()).unwrap();
        self.read()
    }

    fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            ":" => Reply::Int(rest.parse().unwrap()),
            "+" => Reply::Text(rest.to_string()),
            "-" => panic!("redis error: {rest}"),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Nil;
                }
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf).unwrap();
                Reply::Text(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Reply::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            _ => panic!("unexpected reply {line:?}"),
        }
    }

    fn ints(&mut self, args: &[String]) -> Vec<u64> {
        match self.call(args) {
            Reply::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Reply::Int(v) => u64::try_from(v).unwrap(),
                    other => panic!("not an integer: {other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        }
    }

    /// The check script for (key, algorithm) pairs at `now`.
    fn check(&mut self, limits: &[(String, Algorithm)], now: u64) -> Vec<u64> {
        let mut args = vec!["EVAL".to_string(), check_script(), limits.len().to_string()];
        args.extend(limits.iter().map(|(k, _)| k.clone()));
        args.push(now.to_string());
        for (_, algo) in limits {
            args.extend(algo_args(algo).iter().map(u64::to_string));
        }
        self.ints(&args)
    }

    fn reserve(&mut self, key: &str, algo: &Algorithm, debt: u64, want: u64, now: u64) -> Vec<u64> {
        let mut args = vec![
            "EVAL".to_string(),
            reserve_script(),
            "1".to_string(),
            key.to_string(),
            now.to_string(),
            debt.to_string(),
            want.to_string(),
        ];
        args.extend(algo_args(algo).iter().map(u64::to_string));
        self.ints(&args)
    }
}

const T0: u64 = 1_700_000_000_000_000;

/// Parameters inside the scripts' exact domain (burst × per < 9·10⁹ µs, requests × window < 9·10¹⁵).
fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        (1u64..50, 1u64..5_000_000, 1u64..20).prop_map(|(rate, per_us, burst)| {
            Algorithm::TokenBucket {
                rate,
                per_us,
                burst,
            }
        }),
        (1u64..20, 1u64..5_000_000).prop_map(|(requests, window_us)| Algorithm::FixedWindow {
            requests,
            window_us
        }),
        (1u64..20, 1u64..5_000_000).prop_map(|(requests, window_us)| {
            Algorithm::SlidingWindow {
                requests,
                window_us,
            }
        }),
    ]
}

/// Clock steps in µs: mostly forward (often 0: concurrent requests), sometimes backwards (another node's
/// clock).
fn steps() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(0i64),
            4 => 0i64..400_000,
            1 => 0i64..10_000_000,
            1 => -2_000_000i64..0,
        ],
        1..40,
    )
}

/// A window limit: its local refund is exact (count − 1). A token bucket's local take-then-refund can lose a
/// millionth of a token to the floor of two split refills, which the all-or-nothing script never takes.
fn window_algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        (1u64..20, 1u64..5_000_000).prop_map(|(requests, window_us)| Algorithm::FixedWindow {
            requests,
            window_us
        }),
        (1u64..20, 1u64..5_000_000).prop_map(|(requests, window_us)| {
            Algorithm::SlidingWindow {
                requests,
                window_us,
            }
        }),
    ]
}

fn fresh_key(conn: &mut Conn, n: &std::cell::Cell<u64>) -> String {
    n.set(n.get() + 1);
    let key = format!("prop:{}", n.get());
    conn.call(&["DEL".to_string(), key.clone()]);
    key
}

#[test]
fn the_check_script_decides_like_the_local_algorithms() {
    let Some(redis) = start_redis() else {
        return;
    };
    let conn = std::cell::RefCell::new(Conn::new(redis.port));
    let n = std::cell::Cell::new(0u64);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(96));
    runner
        .run(&(algorithm(), steps()), |(algo, steps)| {
            let mut conn = conn.borrow_mut();
            let key = fresh_key(&mut conn, &n);
            let mut state: Option<Vec<u8>> = None;
            let mut now = T0;
            for step in steps {
                now = now.saturating_add_signed(step);
                let local = algo.consume(state.as_deref(), now);
                if let Some((bytes, _)) = &local.write {
                    state = Some(bytes.clone());
                }
                let got = conn.check(&[(key.clone(), algo)], now);
                let o = local.outcome;
                let want = vec![
                    if o.allowed { 1 } else { 2 },
                    o.limit,
                    o.remaining,
                    o.reset_us,
                    o.retry_after_us,
                ];
                prop_assert_eq!(&got, &want, "{:?} at +{}µs", algo, now - T0);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn several_limits_are_all_or_nothing_like_the_local_limiter_with_refunds() {
    let Some(redis) = start_redis() else {
        return;
    };
    let conn = std::cell::RefCell::new(Conn::new(redis.port));
    let n = std::cell::Cell::new(0u64);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(
            &(window_algorithm(), algorithm(), steps()),
            |(a, b, steps)| {
                let mut conn = conn.borrow_mut();
                let keys = [fresh_key(&mut conn, &n), fresh_key(&mut conn, &n)];
                let limit = |name: &str, algorithm| Limit {
                    name: name.into(),
                    key: Template::parse("k").unwrap(),
                    on_missing_key: OnMissingKey::Skip,
                    algorithm,
                };
                let limiter = Limiter::new(
                    vec![limit("a", a), limit("b", b)],
                    "props",
                    64,
                    OnStoreError::Deny,
                );
                let mut store = MemoryStore::default();
                let mut now = T0;
                for step in steps {
                    now = now.saturating_add_signed(step.max(0));
                    let local = limiter.check(
                        &[Key::Value("k".into()), Key::Value("k".into())],
                        now,
                        &mut store,
                    );
                    let got = conn.check(&[(keys[0].clone(), a), (keys[1].clone(), b)], now);
                    prop_assert_eq!(got[0] == 1 && got[5] == 1, local.rejection.is_none());
                    // the same limit rejects, with the same outcome
                    for (i, result) in local.results.iter().enumerate() {
                        let status = got[i * 5];
                        match result {
                            LimitResult::Checked(o) => {
                                prop_assert_eq!(status, if o.allowed { 1 } else { 2 });
                                prop_assert_eq!(
                                    &got[i * 5 + 1..i * 5 + 5],
                                    &[o.limit, o.remaining, o.reset_us, o.retry_after_us][..]
                                );
                            }
                            LimitResult::NotChecked => prop_assert_eq!(status, 0),
                            LimitResult::StoreError(e) => panic!("local store error {e:?}"),
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn a_reservation_grants_what_that_many_single_checks_would_admit() {
    let Some(redis) = start_redis() else {
        return;
    };
    let conn = std::cell::RefCell::new(Conn::new(redis.port));
    let n = std::cell::Cell::new(0u64);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(96));
    runner
        .run(
            &(algorithm(), steps(), 0u64..6, 0u64..6),
            |(algo, steps, debt, want)| {
                let mut conn = conn.borrow_mut();
                let key = fresh_key(&mut conn, &n);
                let mut state: Option<Vec<u8>> = None;
                let mut now = T0;
                for step in steps {
                    now = now.saturating_add_signed(step);
                    // the same number of units taken one by one, locally
                    let mut admitted = 0;
                    for _ in 0..debt + want {
                        let s = algo.consume(state.as_deref(), now);
                        if let Some((bytes, _)) = s.write {
                            state = Some(bytes);
                            admitted += 1;
                        } else {
                            break;
                        }
                    }
                    let got = conn.reserve(&key, &algo, debt, want, now);
                    prop_assert_eq!(got.len(), 5);
                    prop_assert_eq!(got[0], admitted.min(debt), "charged");
                    prop_assert_eq!(got[1], admitted - admitted.min(debt), "granted");
                    // what is left, and when the next unit comes, agree with a local check right after
                    let next = algo.consume(state.as_deref(), now).outcome;
                    if !next.allowed {
                        prop_assert_eq!(got[4], next.retry_after_us, "retry after");
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
