//! The generated Kong schemas and the filters' own config parsers agree.
//!
//! - `tests/configs/<filter>/valid/*.yaml` must pass both the filter's JSON Schema (the `config_schema` of its
//!   generated meta.json, checked by a draft-4 validator whose patterns are
//!   PCRE2, as in Kong: `portcullis_cli::kong_schema`) and `<Policy as portcullis_common::Policy>::configure`.
//! - `tests/configs/<filter>/invalid/*.yaml` must fail both, and each starts with a line
//!   `# error: <path>` (`rules[0].match.uid_prefix`, or `(root)`): the parser's error path must be exactly that
//!   path and one of the schema validator's errors (nested `oneOf`/`anyOf` branch errors included) must point at
//!   the same place.
//! - Every filter config in every filter chain of kong/kong.yml passes its filter's schema and parser.

use portcullis_cli::kong_schema;
use portcullis_cli::validate::dotted;
use portcullis_common::{ConfigError, Policy};
use portcullis_e2e::meta;
use portcullis_e2e::paths::repo_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Parse = fn(&[u8]) -> Result<(), ConfigError>;

fn parse_with<P: Policy>(bytes: &[u8]) -> Result<(), ConfigError> {
    P::configure(bytes).map(|_| ())
}

fn entry<P: Policy>() -> (&'static str, Parse) {
    (P::NAME, parse_with::<P>)
}

/// Every filter's config parser, by filter name (its `Policy::NAME`, which is also the name of its .wasm and
/// meta.json).
fn parsers() -> BTreeMap<&'static str, Parse> {
    [
        entry::<portcullis_headers::HeadersPolicy>(),
        entry::<portcullis_canary::CanaryPolicy>(),
        entry::<portcullis_circuit_breaker::CircuitBreakerPolicy>(),
        entry::<portcullis_bundle::BundlePolicy>(),
        entry::<portcullis_request_guard::RequestGuardPolicy>(),
        entry::<portcullis_jwt_auth::JwtAuthPolicy>(),
        entry::<portcullis_rate_limit::RateLimitPolicy>(),
        entry::<portcullis_hmac_auth::HmacAuthPolicy>(),
        entry::<portcullis_metrics::MetricsPolicy>(),
        entry::<portcullis_access_log::AccessLogPolicy>(),
        entry::<portcullis_tracing::TracingPolicy>(),
    ]
    .into_iter()
    .collect()
}

/// One filter's two checkers.
struct Checker {
    schema: jsonschema::Validator,
    parse: Parse,
}

fn checkers() -> BTreeMap<String, Checker> {
    let parsers = parsers();
    let mut out = BTreeMap::new();
    for (name, doc) in meta::all() {
        let parse = *parsers
            .get(name)
            .unwrap_or_else(|| panic!("no parser registered for filter {name}"));
        let schema = kong_schema::draft4(&doc["config_schema"]).unwrap_or_else(|e| {
            panic!("{name}: generated schema does not compile as in Kong: {e}")
        });
        out.insert(name.to_string(), Checker { schema, parse });
    }
    assert_eq!(
        out.len(),
        parsers.len(),
        "a parser is registered for a filter without a meta.json"
    );
    out
}

/// Instance paths of every schema error, including the errors inside failed `oneOf`/`anyOf` branches.
fn schema_error_paths(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    fn walk(error: &jsonschema::ValidationError<'_>, out: &mut Vec<String>) {
        let at = dotted(error.instance_path());
        // The parser names an unknown field itself (`rules[0].extra`); the schema names its object.
        if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
            error.kind()
        {
            for field in unexpected {
                out.push(if at.is_empty() {
                    field.clone()
                } else {
                    format!("{at}.{field}")
                });
            }
        }
        out.push(at);
        if let jsonschema::error::ValidationErrorKind::OneOfNotValid { context }
        | jsonschema::error::ValidationErrorKind::AnyOf { context } = error.kind()
        {
            for branch in context {
                for inner in branch {
                    walk(inner, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for error in validator.iter_errors(instance) {
        walk(&error, &mut out);
    }
    out
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Reads a YAML example as a JSON value (the form Kong and Envoy hand to the filter).
fn read_yaml(path: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML for a JSON value: {e}", path.display()));
    (text, value)
}

fn expected_error_path(text: &str, path: &Path) -> String {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("# error:"))
        .unwrap_or_else(|| panic!("{}: no `# error: <path>` line", path.display()))
        .trim();
    if line == "(root)" {
        String::new()
    } else {
        line.to_string()
    }
}

fn config_dir() -> PathBuf {
    repo_root().join("tests/configs")
}

#[test]
fn every_filter_has_at_least_three_valid_and_five_invalid_examples() {
    for name in checkers().keys() {
        let valid = yaml_files(&config_dir().join(name).join("valid")).len();
        let invalid = yaml_files(&config_dir().join(name).join("invalid")).len();
        assert!(
            valid >= 3 && invalid >= 5,
            "tests/configs/{name}: {valid} valid and {invalid} invalid examples (want >= 3 and >= 5)"
        );
    }
}

#[test]
fn example_folders_belong_to_known_filters() {
    let known = checkers();
    for entry in std::fs::read_dir(config_dir()).expect("tests/configs exists") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            known.contains_key(name.as_ref()),
            "tests/configs/{name} is not a filter"
        );
    }
}

#[test]
fn valid_examples_pass_the_schema_and_the_parser() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, checker) in checkers() {
        for path in yaml_files(&config_dir().join(&name).join("valid")) {
            let (_, value) = read_yaml(&path);
            let shown = path.strip_prefix(repo_root()).unwrap_or(&path).display();
            let schema_errors: Vec<String> = checker
                .schema
                .iter_errors(&value)
                .map(|e| format!("{}: {e}", dotted(e.instance_path())))
                .collect();
            if !schema_errors.is_empty() {
                failures.push(format!("{shown}: schema rejects it: {schema_errors:?}"));
            }
            if let Err(e) = (checker.parse)(value.to_string().as_bytes()) {
                failures.push(format!("{shown}: parser rejects it: {e}"));
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no valid examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A config as Kong hands it to the filter after storing it: Lua's cjson writes an empty list as `{}` and
/// whole-number floats as integers.
fn kong_reencoded(value: &Value) -> Value {
    match value {
        Value::Array(items) if items.is_empty() => Value::Object(Default::default()),
        Value::Array(items) => Value::Array(items.iter().map(kong_reencoded).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), kong_reencoded(v)))
                .collect(),
        ),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
            _ => value.clone(),
        },
        other => other.clone(),
    }
}

/// No config `validate` accepts may become one the filter refuses once Kong re-encoded it: Kong keeps
/// proxying a route whose chain failed to build (kong/runloop/wasm.lua keeps the previous state when a
/// rebuild fails), so a refusal there leaves the route open.
#[test]
fn valid_examples_and_kong_yml_survive_kongs_reencoding() {
    let parsers = parsers();
    let mut failures = Vec::new();
    let mut with_empty_lists = 0;
    let mut configs: Vec<(String, String, Value)> = Vec::new();
    for name in parsers.keys() {
        for path in yaml_files(&config_dir().join(name).join("valid")) {
            let shown = path
                .strip_prefix(repo_root())
                .unwrap_or(&path)
                .display()
                .to_string();
            configs.push((name.to_string(), shown, read_yaml(&path).1));
        }
    }
    let kong_yml = std::fs::read_to_string(repo_root().join("kong/kong.yml")).unwrap_or_default();
    let doc: Value = serde_norway::from_str(&kong_yml).unwrap_or(Value::Null);
    for (owner, filter, config) in kong_filter_configs(&doc) {
        configs.push((filter, format!("kong/kong.yml {owner}"), config));
    }
    for (filter, shown, config) in configs {
        let Some(parse) = parsers.get(filter.as_str()) else {
            continue;
        };
        let reencoded = kong_reencoded(&config);
        if reencoded.to_string().contains("{}") {
            with_empty_lists += 1;
        }
        if let Err(e) = parse(reencoded.to_string().as_bytes()) {
            failures.push(format!("{shown} ({filter}) as Kong re-encodes it: {e}"));
        }
    }
    assert!(with_empty_lists >= 2, "no example carries an empty list");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_examples_fail_the_schema_and_the_parser_at_the_same_field() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, checker) in checkers() {
        for path in yaml_files(&config_dir().join(&name).join("invalid")) {
            let (text, value) = read_yaml(&path);
            let expected = expected_error_path(&text, &path);
            let shown = path.strip_prefix(repo_root()).unwrap_or(&path).display();
            let schema_paths = schema_error_paths(&checker.schema, &value);
            if schema_paths.is_empty() {
                failures.push(format!("{shown}: schema accepts it"));
            } else if !schema_paths.contains(&expected) {
                failures.push(format!(
                    "{shown}: schema errors at {schema_paths:?}, none at {expected:?}"
                ));
            }
            match (checker.parse)(value.to_string().as_bytes()) {
                Ok(()) => failures.push(format!("{shown}: parser accepts it")),
                Err(e) if e.path != expected => failures.push(format!(
                    "{shown}: parser error at {:?}, expected {expected:?}: {e}",
                    e.path
                )),
                Err(_) => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no invalid examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The policy whose artifact (Kong filter) is named `artifact`, or `artifact` itself when none is.
fn policy_of(artifact: &str) -> String {
    meta::all()
        .into_iter()
        .map(|(policy, _)| policy)
        .find(|policy| portcullis_common::artifact_name(policy) == artifact)
        .unwrap_or(artifact)
        .to_string()
}

/// Every `filter_chains[].filters[]` entry of a Kong declarative config (its policy's name), with a readable
/// location.
fn kong_filter_configs(doc: &Value) -> Vec<(String, String, Value)> {
    fn chains(owner: &str, entity: &Value, out: &mut Vec<(String, String, Value)>) {
        let Some(list) = entity["filter_chains"].as_array() else {
            return;
        };
        for (c, chain) in list.iter().enumerate() {
            let chain_name = chain["name"].as_str().unwrap_or("?");
            for (f, filter) in chain["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let name = filter["name"].as_str().unwrap_or_default();
                let at = format!("{owner}.filter_chains[{c}] ({chain_name}).filters[{f}] ({name})");
                out.push((at, policy_of(name), filter["config"].clone()));
            }
        }
    }
    let mut out = Vec::new();
    for (s, service) in doc["services"].as_array().into_iter().flatten().enumerate() {
        let owner = format!("services[{s}]");
        chains(&owner, service, &mut out);
        for (r, route) in service["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            chains(&format!("{owner}.routes[{r}]"), route, &mut out);
        }
    }
    for (r, route) in doc["routes"].as_array().into_iter().flatten().enumerate() {
        chains(&format!("routes[{r}]"), route, &mut out);
    }
    for (c, chain) in doc["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let wrapped = serde_json::json!({ "filter_chains": [chain] });
        let mut inner = Vec::new();
        chains(&format!("filter_chains[{c}]"), &wrapped, &mut inner);
        out.extend(inner);
    }
    out
}

#[test]
fn kong_yml_filter_configs_pass_their_schema_and_parser() {
    let path = repo_root().join("kong/kong.yml");
    let (_, doc) = read_yaml(&path);
    assert_eq!(doc["_format_version"], "3.0", "kong.yml format");
    let checkers = checkers();
    let configs = kong_filter_configs(&doc);
    assert!(!configs.is_empty(), "kong.yml attaches no filters");
    let mut failures = Vec::new();
    for (at, name, config) in &configs {
        let Some(checker) = checkers.get(name.as_str()) else {
            failures.push(format!(
                "{at}: no Portcullis filter is named so (policy {name:?})"
            ));
            continue;
        };
        // Kong accepts a filter's config as a JSON object (with meta.json) or a JSON string (without).
        let config = match config {
            Value::String(text) => serde_json::from_str(text).unwrap_or_else(|e| {
                failures.push(format!("{at}: config string is not JSON: {e}"));
                Value::Null
            }),
            Value::Null => serde_json::json!({}),
            other => other.clone(),
        };
        for e in checker.schema.iter_errors(&config) {
            failures.push(format!("{at}: schema: {}: {e}", dotted(e.instance_path())));
        }
        if let Err(e) = (checker.parse)(config.to_string().as_bytes()) {
            failures.push(format!("{at}: parser: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kong_yml_uses_every_filter() {
    let (_, doc) = read_yaml(&repo_root().join("kong/kong.yml"));
    let used: std::collections::BTreeSet<String> = kong_filter_configs(&doc)
        .into_iter()
        .map(|(_, name, _)| name)
        .collect();
    let missing: Vec<String> = checkers()
        .into_keys()
        .filter(|name| !used.contains(name))
        .collect();
    assert!(missing.is_empty(), "kong/kong.yml attaches no {missing:?}");
}

#[test]
fn the_checker_rejects_a_config_it_should() {
    // Guards the machinery itself: a known-bad headers config fails both checks at the same path.
    let checkers = checkers();
    let headers = &checkers["headers"];
    let bad = serde_json::json!({"request": {"set": [{"name": "bad header", "value": "x"}]}});
    assert!(schema_error_paths(&headers.schema, &bad).contains(&"request.set[0].name".to_string()));
    let err = (headers.parse)(bad.to_string().as_bytes()).expect_err("parser rejects");
    assert_eq!(err.path, "request.set[0].name");
}

#[test]
fn every_committed_and_built_meta_json_compiles_as_kong_compiles_it() {
    // kong/meta/ is what the docs point at; dist/ is what scripts/build wrote and Kong loads from
    // wasm_filters_path (absent before a build: the committed copies are checked regardless).
    let mut files = Vec::new();
    for dir in ["kong/meta", "dist"] {
        if let Ok(entries) = std::fs::read_dir(repo_root().join(dir)) {
            files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(".meta.json")),
            );
        }
    }
    assert!(
        files.len() >= meta::all().len(),
        "kong/meta/ is incomplete: {files:?}"
    );
    for file in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert!(
            !kong_schema::patterns(&doc["config_schema"]).is_empty(),
            "{}: no patterns found (the walk is broken?)",
            file.display()
        );
        if let Err(e) = kong_schema::draft4(&doc["config_schema"]) {
            panic!("{}: {e}", file.display());
        }
    }
}
