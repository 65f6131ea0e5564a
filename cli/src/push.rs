//! `portcullis push`: idempotent sync of a policy to a running Kong through its Admin API.
//!
//! 1. Read the current services, routes and filter chains (`GET /services`, `/routes`, `/filter-chains`,
//!    following `next` pages).
//! 2. Diff them with the policy, field by field, on the fields the policy manages.
//! 3. Apply in dependency order: services (`PUT /services/{name}`), routes (`PUT /routes/{name}` with
//!    `service.id`), filter chains (`POST /routes/{id}/filter-chains`, `PATCH /filter-chains/{id}`); then
//!    remove what the CLI created earlier (tag `portcullis`) and the policy no longer has: chains, routes,
//!    services (`DELETE …/{id}`). Unchanged entities get no request, so a second push writes nothing.
//!
//! Every request is retried on connection errors, 429 and 5xx with exponential backoff. Each entity gets
//! its own result; an entity whose parent failed is skipped.

use crate::http::{self, BaseUrl, Response};
use crate::policy::PolicyFile;
use crate::render::{kong_filters, kong_route_fields, kong_service_fields, TAG};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Pages followed per collection (Kong's default page is 100 entities).
const MAX_PAGES: usize = 1000;

#[derive(Debug, Clone)]
pub struct Options {
    pub admin: BaseUrl,
    pub dry_run: bool,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Delay before the first retry; doubles each time.
    pub backoff: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Dry run: what would be done.
    Planned,
    Ok,
    Failed,
    /// Not attempted because an entity it depends on failed.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub action: Action,
    pub status: Status,
    /// Fields that differ (updates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub changes: Vec<Change>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| matches!(c.status, Status::Failed | Status::Skipped))
            .count()
    }
}

struct Client<'a> {
    o: &'a Options,
}

impl Client<'_> {
    /// One request with retries; Err carries the last error (transport or HTTP status with Kong's message).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, String> {
        let mut delay = self.o.backoff;
        let mut attempt = 0;
        loop {
            let result = http::request(&self.o.admin, method, path, body, self.o.timeout);
            let retryable = match &result {
                Ok(r) => r.status == 429 || r.status >= 500,
                Err(_) => true,
            };
            if !retryable || attempt >= self.o.retries {
                return match result {
                    Ok(r) if (200..300).contains(&r.status) => Ok(r),
                    Ok(r) => Err(format!(
                        "{method} {path}: HTTP {}: {}",
                        r.status,
                        kong_message(&r)
                    )),
                    Err(e) => Err(format!("{method} {path}: {e}")),
                };
            }
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
            attempt += 1;
        }
    }

    /// Every entity of a collection, following `next`.
    fn list(&self, path: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        let mut pages = 0;
        while let Some(p) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(format!("GET {path}: more than {MAX_PAGES} pages"));
            }
            let r = self.call("GET", &p, None)?;
            let body = r
                .json()
                .ok_or_else(|| format!("GET {p}: response is not JSON"))?;
            if let Some(data) = body.get("data").and_then(Value::as_array) {
                out.extend(data.iter().cloned());
            }
            next = body.get("next").and_then(Value::as_str).map(|n| {
                n.strip_prefix(self.o.admin.base.as_str())
                    .unwrap_or(n)
                    .to_string()
            });
        }
        Ok(out)
    }
}

fn kong_message(r: &Response) -> String {
    r.json()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).chars().take(300).collect())
}

fn by_name(items: Vec<Value>) -> BTreeMap<String, Value> {
    items
        .into_iter()
        .filter_map(|v| Some((v.get("name")?.as_str()?.to_string(), v)))
        .collect()
}

fn id_of(v: &Value) -> Option<String> {
    v.get("id").and_then(Value::as_str).map(String::from)
}

fn tagged(v: &Value) -> bool {
    v.get("tags")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|x| x == TAG))
}

/// Names of the desired fields whose current value differs (absent ≡ null).
fn differing(desired: &Map<String, Value>, current: &Value) -> Vec<String> {
    desired
        .iter()
        .filter(|(k, v)| current.get(k.as_str()).unwrap_or(&Value::Null) != *v)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Filters as compared: config parsed when Kong returns it as a string, `enabled` defaulting to true.
fn normalize_filters(filters: &Value) -> Value {
    let Some(list) = filters.as_array() else {
        return Value::Null;
    };
    Value::Array(
        list.iter()
            .map(|f| {
                let config = match f.get("config") {
                    Some(Value::String(s)) => {
                        serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                    }
                    Some(v) => v.clone(),
                    None => Value::Null,
                };
                let config = empty_lists_as_kong_returns_them(config);
                json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "config": config,
                    "enabled": f.get("enabled").cloned().unwrap_or(Value::Bool(true)),
                })
            })
            .collect(),
    )
}

/// Kong keeps proxying a route whose chain a filter refuses (it logs `failed rebuilding filter chain state`
/// and runs the route without the chain: open). So every chain Kong stores is checked the way the filters will
/// see it: each config as Kong returns it (the same cjson encoding it hands the filter: `[]` comes back as
/// `{}`, no schema defaults filled in) through that filter's own parser. A refusal fails the push.
fn fail_unless_filters_accept(ch: &mut Change, stored: Option<&Value>) {
    let Some(stored) = stored else {
        return;
    };
    if let Err(e) = filters_accept(stored) {
        ch.status = Status::Failed;
        ch.error = Some(format!(
            "{e}: Kong would run this route WITHOUT its filter chain (it does not close a route whose chain \
             fails to build)"
        ));
    }
}

/// Whether every enabled filter of a chain entity as Kong stores it accepts its config.
pub fn filters_accept(chain: &Value) -> Result<(), String> {
    for (i, f) in chain["filters"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if f.get("enabled") == Some(&Value::Bool(false)) {
            continue;
        }
        let name = f["name"].as_str().unwrap_or_default();
        let Some(filter) = crate::registry::find_artifact(name) else {
            return Err(format!("filters[{i}]: {name:?} is no Portcullis filter"));
        };
        let bytes = match &f["config"] {
            Value::String(text) => text.clone().into_bytes(),
            Value::Null => b"{}".to_vec(),
            config => serde_json::to_vec(config).unwrap_or_default(),
        };
        (filter.parse)(&bytes).map_err(|e| {
            format!(
                "filters[{i}] ({name}): the filter refuses its config as Kong stores it ({}): {e}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
    }
    Ok(())
}

/// Kong stores and returns an empty list as `{}` (cjson cannot tell them apart), so for comparison both are
/// `{}`: otherwise a policy with an empty list would "update" its chain on every push.
fn empty_lists_as_kong_returns_them(v: Value) -> Value {
    match v {
        Value::Array(items) if items.is_empty() => Value::Object(Map::new()),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(empty_lists_as_kong_returns_them)
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, empty_lists_as_kong_returns_them(v)))
                .collect(),
        ),
        other => other,
    }
}

fn change(kind: &'static str, name: &str, action: Action, fields: Vec<String>) -> Change {
    Change {
        kind,
        name: name.to_string(),
        action,
        status: Status::Planned,
        fields,
        error: None,
    }
}

/// Diffs and (unless dry run) applies. Err = the current state could not be read (nothing was changed).
pub fn push(p: &PolicyFile, o: &Options) -> Result<Report, String> {
    let c = Client { o };
    let services = by_name(c.list("/services")?);
    let routes = by_name(c.list("/routes")?);
    let chains = by_name(c.list("/filter-chains")?);
    let apply = !o.dry_run;
    let mut out = Vec::new();
    let settle = |ch: &mut Change, result: Result<Response, String>| -> Option<Value> {
        match result {
            Ok(r) => {
                ch.status = Status::Ok;
                r.json()
            }
            Err(e) => {
                ch.status = Status::Failed;
                ch.error = Some(e);
                None
            }
        }
    };

    // Services. service_ids: name → id (None = failed; Some("") = not yet created in a dry run).
    let mut service_ids: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (name, up) in &p.upstreams {
        let fields = kong_service_fields(name, up);
        let current = services.get(name);
        let (action, diff) = match current {
            None => (Action::Create, Vec::new()),
            Some(cur) => {
                let d = differing(&fields, cur);
                (
                    if d.is_empty() {
                        Action::Unchanged
                    } else {
                        Action::Update
                    },
                    d,
                )
            }
        };
        let mut ch = change("service", name, action, diff);
        let mut id = current.and_then(id_of);
        if action == Action::Unchanged {
            ch.status = Status::Ok;
        } else if apply {
            let body = Value::Object(fields);
            let r = c.call("PUT", &format!("/services/{name}"), Some(&body));
            id = settle(&mut ch, r).as_ref().and_then(id_of);
        }
        service_ids.insert(
            name.clone(),
            if ch.status == Status::Failed {
                None
            } else {
                Some(id.unwrap_or_default())
            },
        );
        out.push(ch);
    }

    // Routes, then their filter chains.
    let mut route_ids: BTreeMap<String, Option<String>> = BTreeMap::new();
    for route in &p.routes {
        let mut fields = kong_route_fields(route);
        let service_id = service_ids.get(&route.upstream).cloned().flatten();
        let current = routes.get(&route.name);
        let Some(service_id) = service_id else {
            let mut ch = change(
                "route",
                &route.name,
                if current.is_some() {
                    Action::Update
                } else {
                    Action::Create
                },
                Vec::new(),
            );
            ch.status = Status::Skipped;
            ch.error = Some(format!("service {} failed", route.upstream));
            route_ids.insert(route.name.clone(), None);
            out.push(ch);
            continue;
        };
        fields.insert("service".into(), json!({ "id": service_id }));
        let (action, diff) = match current {
            None => (Action::Create, Vec::new()),
            Some(cur) => {
                let d = differing(&fields, cur);
                (
                    if d.is_empty() {
                        Action::Unchanged
                    } else {
                        Action::Update
                    },
                    d,
                )
            }
        };
        let mut ch = change("route", &route.name, action, diff);
        let mut id = current.and_then(id_of);
        if action == Action::Unchanged {
            ch.status = Status::Ok;
        } else if apply {
            let body = Value::Object(fields);
            let r = c.call("PUT", &format!("/routes/{}", route.name), Some(&body));
            id = settle(&mut ch, r).as_ref().and_then(id_of);
        }
        route_ids.insert(
            route.name.clone(),
            if ch.status == Status::Failed {
                None
            } else {
                Some(id.unwrap_or_default())
            },
        );
        out.push(ch);
    }
    for route in p.routes.iter().filter(|r| !r.chain.is_empty()) {
        let current = chains.get(&route.name);
        let Some(route_id) = route_ids.get(&route.name).cloned().flatten() else {
            let mut ch = change(
                "filter_chain",
                &route.name,
                if current.is_some() {
                    Action::Update
                } else {
                    Action::Create
                },
                Vec::new(),
            );
            ch.status = Status::Skipped;
            ch.error = Some(format!("route {} failed", route.name));
            out.push(ch);
            continue;
        };
        let filters = kong_filters(p, route);
        let mut ch = match current {
            None => change("filter_chain", &route.name, Action::Create, Vec::new()),
            Some(cur) => {
                let mut diff = Vec::new();
                if normalize_filters(cur.get("filters").unwrap_or(&Value::Null))
                    != normalize_filters(&filters)
                {
                    diff.push("filters".to_string());
                }
                let cur_route = cur
                    .pointer("/route/id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if cur_route != route_id {
                    diff.push("route".to_string());
                }
                if cur.get("enabled") == Some(&Value::Bool(false)) {
                    diff.push("enabled".to_string());
                }
                if !tagged(cur) {
                    diff.push("tags".to_string());
                }
                let action = if diff.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update
                };
                change("filter_chain", &route.name, action, diff)
            }
        };
        if ch.action == Action::Unchanged {
            ch.status = Status::Ok;
            fail_unless_filters_accept(&mut ch, current);
        } else if apply {
            let r = match current.and_then(id_of) {
                None => {
                    let body = json!({ "name": route.name, "filters": filters, "enabled": true, "tags": [TAG] });
                    c.call(
                        "POST",
                        &format!("/routes/{route_id}/filter-chains"),
                        Some(&body),
                    )
                }
                Some(id) => {
                    let body = json!({ "filters": filters, "route": { "id": route_id }, "enabled": true, "tags": [TAG] });
                    c.call("PATCH", &format!("/filter-chains/{id}"), Some(&body))
                }
            };
            let stored = settle(&mut ch, r);
            fail_unless_filters_accept(&mut ch, stored.as_ref());
        }
        out.push(ch);
    }

    // Removals: what we own and the policy no longer has, children first.
    let keep_chains: Vec<&str> = p
        .routes
        .iter()
        .filter(|r| !r.chain.is_empty())
        .map(|r| r.name.as_str())
        .collect();
    let keep_routes: Vec<&str> = p.routes.iter().map(|r| r.name.as_str()).collect();
    let stale =
        |all: &BTreeMap<String, Value>, keep: &dyn Fn(&str) -> bool| -> Vec<(String, String)> {
            all.iter()
                .filter(|(n, v)| tagged(v) && !keep(n))
                .filter_map(|(n, v)| Some((n.clone(), id_of(v)?)))
                .collect()
        };
    let removals = [
        (
            "filter_chain",
            "filter-chains",
            stale(&chains, &|n| keep_chains.contains(&n)),
        ),
        (
            "route",
            "routes",
            stale(&routes, &|n| keep_routes.contains(&n)),
        ),
        (
            "service",
            "services",
            stale(&services, &|n| p.upstreams.contains_key(n)),
        ),
    ];
    for (kind, collection, list) in removals {
        for (name, id) in list {
            let mut ch = change(kind, &name, Action::Delete, Vec::new());
            if apply {
                let r = c.call("DELETE", &format!("/{collection}/{id}"), None);
                settle(&mut ch, r);
            }
            out.push(ch);
        }
    }
    Ok(Report {
        dry_run: o.dry_run,
        changes: out,
    })
}

/// Human-readable report lines.
pub fn describe(r: &Report) -> String {
    let mut s = String::new();
    for c in &r.changes {
        let action = match c.action {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
        };
        let status = match c.status {
            Status::Planned => "planned",
            Status::Ok => "ok",
            Status::Failed => "FAILED",
            Status::Skipped => "SKIPPED",
        };
        s.push_str(&format!(
            "{:<13} {:<24} {:<9} {status}",
            c.kind, c.name, action
        ));
        if !c.fields.is_empty() {
            s.push_str(&format!(" (fields: {})", c.fields.join(", ")));
        }
        if let Some(e) = &c.error {
            s.push_str(&format!(": {e}"));
        }
        s.push('\n');
    }
    let count = |a: Action| r.changes.iter().filter(|c| c.action == a).count();
    s.push_str(&format!(
        "{}{} to create, {} to update, {} to delete, {} unchanged; {} failed\n",
        if r.dry_run { "dry run: " } else { "" },
        count(Action::Create),
        count(Action::Update),
        count(Action::Delete),
        count(Action::Unchanged),
        r.failed()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_configs_compare_equal_whether_kong_returns_objects_or_strings() {
        let ours = json!([{ "name": "rate-limit", "config": { "limits": [] }, "enabled": true }]);
        let as_string = json!([{ "name": "rate-limit", "config": "{\"limits\": []}" }]);
        let other = json!([{ "name": "rate-limit", "config": { "limits": [1] } }]);
        let disabled =
            json!([{ "name": "rate-limit", "config": { "limits": [] }, "enabled": false }]);
        assert_eq!(normalize_filters(&ours), normalize_filters(&as_string));
        assert_ne!(normalize_filters(&ours), normalize_filters(&other));
        assert_ne!(normalize_filters(&ours), normalize_filters(&disabled));
    }

    #[test]
    fn absent_and_null_fields_are_the_same_and_only_managed_fields_count() {
        let mut desired = Map::new();
        desired.insert("name".into(), json!("a"));
        desired.insert("hosts".into(), Value::Null);
        desired.insert("paths".into(), json!(["/x"]));
        let current = json!({ "name": "a", "paths": ["/x"], "created_at": 1, "id": "u" });
        assert!(differing(&desired, &current).is_empty());
        let moved = json!({ "name": "a", "paths": ["/y"], "hosts": ["h"] });
        assert_eq!(
            differing(&desired, &moved),
            vec!["hosts".to_string(), "paths".to_string()]
        );
    }
}
