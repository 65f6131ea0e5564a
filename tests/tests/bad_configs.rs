//! Table-driven bad-config test across every filter, natively through each crate's `Policy::configure` (no
//! Envoy): each bad config is rejected, and the error names the offending field's JSON path.
//!
//! Two kinds of cases per filter:
//! - hand-written semantic mistakes (cross-field checks, out-of-range values, invalid names), with their path;
//! - mechanical mutations of a rich valid config: every object gets an unknown field (`deny_unknown_fields`
//!   everywhere), every value is replaced by one of the wrong type. The expected path is where the mutation
//!   was made, so the error must point exactly there.

use portcullis_common::{ConfigError, Policy};
use serde_json::{json, Value};

type Configure = fn(&[u8]) -> Result<(), ConfigError>;

fn configure<P: Policy>(bytes: &[u8]) -> Result<(), ConfigError> {
    P::configure(bytes).map(|_| ())
}

struct Filter {
    name: &'static str,
    configure: Configure,
    /// A valid config using most fields: the base of the mechanical mutations.
    base: Value,
    /// (bad config, expected error path)
    semantic: Vec<(Value, &'static str)>,
    /// JSON paths whose values legitimately accept any JSON (free-form maps/values): not type-mutated.
    free_form: &'static [&'static str],
}

fn filters() -> Vec<Filter> {
    vec![
        Filter {
            name: "headers",
            configure: configure::<portcullis_headers::HeadersPolicy>,
            base: json!({"request": {"remove": ["x-internal"], "rename": [{"from": "x-user", "to": "x-consumer"}],
                                     "set": [{"name": "x-client-ip", "value": "${client_ip}"}],
                                     "add": [{"name": "via", "value": "1.1 portcullis"}]},
                         "response": {"set": [{"name": "x-request-id", "value": "${request_id}"}]}}),
            semantic: vec![
                (
                    json!({"request": {"set": [{"name": "x y", "value": "v"}]}}),
                    "request.set[0].name",
                ),
                (
                    json!({"request": {"set": [{"name": "x", "value": "a\r\nb"}]}}),
                    "request.set[0].value",
                ),
                (
                    json!({"request": {"set": [{"name": "x", "value": "${nope}"}]}}),
                    "request.set[0].value",
                ),
                (
                    json!({"request": {"add": [{"name": "x", "value": "${unterminated"}]}}),
                    "request.add[0].value",
                ),
                (
                    json!({"request": {"remove": [":path"]}}),
                    "request.remove[0]",
                ),
                (
                    json!({"response": {"rename": [{"from": "a", "to": "b c"}]}}),
                    "response.rename[0].to",
                ),
            ],
            free_form: &[],
        },
        Filter {
            name: "canary",
            configure: configure::<portcullis_canary::CanaryPolicy>,
            base: json!({"identity": {"header": "x-user-id"},
                         "rules": [{"name": "r1", "match": {"header": {"name": "x-canary", "equals": "true"},
                                                             "client_ip": ["10.0.0.0/8"]}, "route": "canary"}],
                         "percentage": 5, "hash_salt": "s", "override_header": {"enabled": true, "header": "x-co"},
                         "set_cookie": {"name": "cn", "max_age": "10m", "path": "/"}}),
            semantic: vec![
                (json!({"percentage": 101}), "percentage"),
                (json!({"percentage": -1}), "percentage"),
                (
                    json!({"percentage": 5, "rules": [{"match": {"uid_prefix": "abc"}, "route": "canary"}]}),
                    "rules[0].match.uid_prefix",
                ),
                (
                    json!({"rules": [{"match": {"client_ip": ["10.0.0.0/33"]}, "route": "canary"}]}),
                    "rules[0].match.client_ip[0]",
                ),
                (
                    json!({"rules": [{"match": {}, "route": "sideways"}]}),
                    "rules[0].route",
                ),
                (
                    json!({"set_cookie": {"name": "cn", "max_age": "forever"}}),
                    "set_cookie.max_age",
                ),
            ],
            free_form: &[],
        },
        Filter {
            name: "circuit-breaker",
            configure: configure::<portcullis_circuit_breaker::CircuitBreakerPolicy>,
            base: json!({"scope": "key", "key": "${header.x-tenant}", "failure_statuses": [500, 503],
                         "slow_call_threshold": "2s", "consecutive_failures": 5, "failure_ratio": 0.5,
                         "window": "30s", "min_requests": 10, "open_for": "5s", "max_open_for": "1m",
                         "half_open_requests": 2, "success_to_close": 2, "probe_timeout": "10s", "status": 503,
                         "message": "down", "state_header": "x-circuit-state", "max_keys": 100,
                         "max_state_gauges": 10}),
            semantic: vec![
                (json!({"scope": "key"}), "key"),
                (json!({"window": "2h"}), "window"),
                (json!({"open_for": "2d"}), "open_for"),
                (json!({"status": 99}), "status"),
                (json!({"failure_ratio": 1.5}), "failure_ratio"),
                (json!({"window": "-1s"}), "window"),
                (json!({"state_header": "bad header"}), "state_header"),
            ],
            free_form: &[],
        },
        Filter {
            name: "portcullis (bundle)",
            configure: configure::<portcullis_bundle::BundlePolicy>,
            base: json!({"chain": [
                {"policy": "headers", "config": {"request": {"set": [{"name": "x-a", "value": "1"}]}}},
                {"policy": "circuit-breaker", "config": {"open_for": "1s", "consecutive_failures": 3}},
                {"policy": "canary", "config": {"percentage": 5}}]}),
            semantic: vec![
                (json!({"chain": []}), "chain"),
                (
                    json!({"chain": [{"policy": "nope", "config": {}}]}),
                    "chain[0].policy",
                ),
                (
                    json!({"chain": [{"policy": "canary", "config": {"percentage": 500}}]}),
                    "chain[0].config.percentage",
                ),
                (
                    json!({"chain": [{"policy": "headers", "config": {"request": {"set": [{"name": "x y", "value": "v"}]}}}]}),
                    "chain[0].config.request.set[0].name",
                ),
            ],
            // each `config` is parsed by the named policy: an unknown policy config key is reported by it
            free_form: &[],
        },
        Filter {
            name: "rate-limit",
            configure: configure::<portcullis_rate_limit::RateLimitPolicy>,
            base: json!({"limits": [{"name": "per_ip", "key": "${client_ip}", "algorithm": "token_bucket",
                                     "rate": 1, "per": "1s", "burst": 5, "on_missing_key": "skip"},
                                    {"name": "win", "key": "all", "algorithm": "fixed_window",
                                     "requests": 10, "window": "1m"}],
                         "max_keys": 1000, "on_store_error": "allow", "headers": true, "dry_run": false,
                         "status": 429, "message": "slow down", "namespace": "api",
                         "client_ip": {"source": "x_forwarded_for", "trusted_proxies": ["10.0.0.0/8"]}}),
            semantic: vec![
                (
                    json!({"limits": [{"name": "a", "key": "k", "algorithm": "fixed_window", "rate": 1, "requests": 1, "window": "1s"}]}),
                    "limits[0].rate",
                ),
                (
                    json!({"limits": [{"name": "a", "key": "${nope}", "rate": 1, "per": "1s"}]}),
                    "limits[0].key",
                ),
                (
                    json!({"limits": [{"name": "a", "key": "k", "rate": 1, "per": "1s"}],
                        "client_ip": {"trusted_proxies": ["10.0.0.0/99"]}}),
                    "client_ip.trusted_proxies[0]",
                ),
            ],
            free_form: &[],
        },
        Filter {
            name: "request-guard",
            configure: configure::<portcullis_request_guard::RequestGuardPolicy>,
            base: json!({"client_ip": {"source": "x_forwarded_for", "trusted_proxies": ["127.0.0.1/32"]},
                         "ip": {"deny": ["203.0.113.0/24"], "allow": ["0.0.0.0/0"]},
                         "user_agent": {"block_scanners": true, "deny_missing": true, "deny": ["^curl/"]},
                         "methods": ["GET", "POST"], "hosts": {"allow": ["example.test"]},
                         "body": {"max_bytes": "8KiB", "json": true, "max_json_depth": 16,
                                  "require_content_length": false},
                         "dry_run": false}),
            semantic: vec![
                (json!({"ip": {"deny": ["1.2.3.4/40"]}}), "ip.deny[0]"),
                (json!({"user_agent": {"deny": ["("]}}), "user_agent.deny[0]"),
                (json!({"body": {"max_bytes": "lots"}}), "body.max_bytes"),
                (
                    json!({"client_ip": {"source": "sideways"}}),
                    "client_ip.source",
                ),
            ],
            free_form: &[],
        },
        Filter {
            name: "jwt-auth",
            configure: configure::<portcullis_jwt_auth::JwtAuthPolicy>,
            base: json!({"realm": "demo", "providers": [{"name": "demo", "issuer": "https://demo.portcullis.test/",
                          "audiences": ["orders-api"], "algorithms": ["HS256"],
                          "secret": "portcullis-demo-secret-0123456789abcdef",
                          "required_claims": [{"claim": "scope", "values": ["orders:read"]}]}],
                         "claims_to_headers": [{"claim": "sub", "header": "x-user"}]}),
            semantic: vec![
                (
                    json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["none"], "secret": "portcullis-demo-secret-0123456789abcdef"}]}),
                    "providers[0].algorithms[0]",
                ),
                (
                    json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["HS256"], "secret": "portcullis-demo-secret-0123456789abcdef"}],
                        "claims_to_headers": [{"claim": "sub", "header": "x y"}]}),
                    "claims_to_headers[0].header",
                ),
            ],
            free_form: &[],
        },
        Filter {
            name: "hmac-auth",
            configure: configure::<portcullis_hmac_auth::HmacAuthPolicy>,
            base: json!({"credentials": [{"username": "alice", "secret": "alice-secret"}],
                         "algorithms": ["hmac-sha256"], "clock_skew": "300s",
                         "enforce_headers": ["@request-target", "date"], "validate_request_body": true,
                         "max_body_bytes": "64KiB", "hide_credentials": true, "consumer_header": "x-consumer",
                         "realm": "api", "replay_protection": true, "nonce_header": "x-nonce", "max_nonces": 1000}),
            semantic: vec![(
                json!({"credentials": [{"username": "alice", "secret": "s"}], "enforce_headers": ["x y"]}),
                "enforce_headers[0]",
            )],
            free_form: &[],
        },
        Filter {
            name: "metrics",
            configure: configure::<portcullis_metrics::MetricsPolicy>,
            base: json!({"labels": ["route", "method", "status_class", "consumer"], "consumer_header": "x-consumer",
                         "max_consumers": 50, "max_series": 1000, "duration": true, "sizes": true}),
            semantic: vec![
                (json!({"labels": ["colour"]}), "labels[0]"),
                (json!({"consumer_header": "x y"}), "consumer_header"),
            ],
            free_form: &[],
        },
        Filter {
            name: "access-log",
            configure: configure::<portcullis_access_log::AccessLogPolicy>,
            base: json!({"request_headers": ["authorization", "user-agent"], "response_headers": ["content-type"],
                         "fields": {"service": "demo"}, "redact": ["authorization"], "consumer_header": "x-consumer",
                         "max_value_bytes": 512, "log": {"enabled": true, "level": "info"},
                         "http": {"upstream": "logs", "path": "/ingest", "batch_size": 10,
                                  "flush_interval": "1s", "max_queue": 100, "timeout": "2s"}}),
            semantic: vec![
                (
                    json!({"request_headers": ["bad header"]}),
                    "request_headers[0]",
                ),
                (
                    json!({"http": {"upstream": "logs", "path": "/i", "flush_interval": "soon"}}),
                    "http.flush_interval",
                ),
            ],
            // static fields are a free-form map of names to values
            free_form: &["fields"],
        },
        Filter {
            name: "tracing",
            configure: configure::<portcullis_tracing::TracingPolicy>,
            base: json!({"extract": ["w3c", "b3"], "inject": ["w3c"], "sample_ratio": 1.0, "service_name": "gw",
                         "resource_attributes": {"env": "test"}, "trace_id_response_header": "x-trace-id",
                         "exporter": {"upstream": "otel", "path": "/v1/traces", "batch_size": 10,
                                      "flush_interval": "1s", "max_queue": 100, "timeout": "2s"}}),
            semantic: vec![
                (json!({"sample_ratio": 2.0}), "sample_ratio"),
                (json!({"inject": ["smoke-signals"]}), "inject[0]"),
                (
                    json!({"trace_id_response_header": "x y"}),
                    "trace_id_response_header",
                ),
            ],
            // resource attributes are a free-form map of names to values
            free_form: &["resource_attributes"],
        },
    ]
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Every mechanical mutation of `value`: (mutated root, expected path).
fn mutations(root: &Value, free_form: &[&str]) -> Vec<(Value, String)> {
    fn walk(
        root: &Value,
        node: &Value,
        pointer: &str,
        path: &str,
        free_form: &[&str],
        out: &mut Vec<(Value, String)>,
    ) {
        if free_form.contains(&path) {
            return;
        }
        let mut mutated = root.clone();
        let Some(slot) = mutated.pointer_mut(pointer) else {
            return;
        };
        match node {
            Value::Object(map) => {
                if let Some(obj) = slot.as_object_mut() {
                    obj.insert("zz_unknown".into(), json!(1));
                    out.push((mutated, join(path, "zz_unknown")));
                }
                if !path.is_empty() {
                    let mut wrong = root.clone();
                    if let Some(slot) = wrong.pointer_mut(pointer) {
                        *slot = json!("not an object");
                        out.push((wrong, path.to_string()));
                    }
                }
                for (k, v) in map {
                    walk(
                        root,
                        v,
                        &format!("{pointer}/{k}"),
                        &join(path, k),
                        free_form,
                        out,
                    );
                }
            }
            Value::Array(items) => {
                *slot = json!({"zz": 1});
                out.push((mutated, path.to_string()));
                for (i, v) in items.iter().enumerate() {
                    walk(
                        root,
                        v,
                        &format!("{pointer}/{i}"),
                        &format!("{path}[{i}]"),
                        free_form,
                        out,
                    );
                }
            }
            _ => {
                *slot = json!({"zz": [1]});
                out.push((mutated, path.to_string()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, "", "", free_form, &mut out);
    out
}

#[test]
fn every_bad_config_is_rejected_with_the_path_of_its_field() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for f in filters() {
        let base = serde_json::to_vec(&f.base).unwrap();
        if let Err(e) = (f.configure)(&base) {
            failures.push(format!("{}: the base config is rejected: {e}", f.name));
            continue;
        }
        let mut cases: Vec<(Value, String)> = f
            .semantic
            .iter()
            .map(|(v, p)| (v.clone(), p.to_string()))
            .collect();
        // a bundle's mutations inside `chain[i].config` are reported by that policy's parser, under the same path
        cases.extend(mutations(&f.base, f.free_form));
        counts.push(format!("{}: {}", f.name, cases.len()));
        if cases.len() < 10 {
            failures.push(format!("{}: only {} bad configs", f.name, cases.len()));
        }
        for (config, want) in cases {
            let bytes = serde_json::to_vec(&config).unwrap();
            match (f.configure)(&bytes) {
                Ok(()) => failures.push(format!(
                    "{}: accepted {config}\n   (expected an error at `{want}`)",
                    f.name
                )),
                Err(e) if e.path != want => failures.push(format!(
                    "{}: {config}\n   error at `{}` ({}), expected `{want}`",
                    f.name, e.path, e.message
                )),
                Err(_) => {}
            }
        }
    }
    eprintln!("bad configs per filter: {}", counts.join(", "));
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
