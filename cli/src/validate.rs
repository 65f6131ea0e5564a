//! Checks every filter config of a loaded policy with the filter's own parser and with its JSON Schema.

use crate::diag::{join, Diagnostic};
use crate::policy::Loaded;
use crate::{kong_schema, registry};
use std::collections::BTreeMap;

/// Every problem in the filter configs (empty = valid). The parser's error comes first; schema errors
/// are added when they point elsewhere (a schema/parser disagreement is worth knowing: Kong checks the
/// schema, the filter checks with its parser).
pub fn check_filters(l: &Loaded) -> Vec<Diagnostic> {
    let mut validators: BTreeMap<String, Option<jsonschema::Validator>> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, route) in l.policy.routes.iter().enumerate() {
        for (j, item) in route.chain.iter().enumerate() {
            let Some(filter) = registry::find(&item.filter) else {
                continue; // already reported by the loader
            };
            let base = format!("routes[{i}].chain[{j}].config");
            let config = item.config_value();
            let bytes = serde_json::to_vec(&config).unwrap_or_default();
            let mut parser_path = None;
            if let Err(e) = (filter.parse)(&bytes) {
                let path = join(&base, &e.path);
                out.push(l.at(&path, format!("{}: {}", item.filter, e.message)));
                parser_path = Some(path);
            }
            let validator = validators
                .entry(item.filter.clone())
                .or_insert_with(|| kong_schema::draft4(&(filter.schema)()).ok());
            match validator {
                Some(v) => {
                    let mut seen = Vec::new();
                    for err in v.iter_errors(&config) {
                        let path = join(&base, &dotted(err.instance_path()));
                        // The parser names an unknown field itself; the schema names its object: one report.
                        let same = parser_path
                            .as_deref()
                            .is_some_and(|p| p.starts_with(path.as_str()));
                        if same || seen.contains(&path) {
                            continue;
                        }
                        out.push(l.at(&path, format!("{} (schema): {err}", item.filter)));
                        seen.push(path);
                    }
                }
                None => out.push(l.at(
                    &base,
                    format!("{}: the generated schema does not compile", item.filter),
                )),
            }
        }
    }
    out
}

/// A JSON pointer location (`/limits/0/per`) written the way the parsers write paths (`limits[0].per`).
pub fn dotted(location: &jsonschema::paths::Location) -> String {
    let mut path = String::new();
    for segment in location {
        match segment {
            jsonschema::paths::LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
            jsonschema::paths::LocationSegment::Property(p) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&p);
            }
        }
    }
    path
}
