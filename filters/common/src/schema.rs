//! JSON Schemas for the config types (Kong's `<filter>.meta.json`), generated from the same Rust types the
//! parser uses. Custom value types (durations, sizes, header names, templates) describe their accepted
//! syntax here; [`kong_meta`] produces the draft-4 document Kong requires.

use crate::http::{HeaderName, HeaderValue};
use crate::template::{HeaderTemplate, Template, VARIABLES};
use crate::units::{ByteSize, DurationSpec};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;
use std::borrow::Cow;

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?(us|µs|ms|s|m|h|d)\\s*$",
            "description": "A duration: a number and a unit (us, ms, s, m, h, d), e.g. \"250ms\", \"1s\", \"5m\"."
        })
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "integer"],
            "minimum": 0,
            "pattern": "^\\s*[0-9]+\\s*(B|KB|kB|MB|GB|KiB|MiB|GiB)?\\s*$",
            "description": "A size in bytes: a number (512) or a number and a unit (\"64KiB\", \"1MiB\", \"2MB\")."
        })
    }
}

impl JsonSchema for HeaderName {
    fn schema_name() -> Cow<'static, str> {
        "HeaderName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
            "minLength": 1,
            "maxLength": 256,
            "description": "An HTTP header name (case-insensitive)."
        })
    }
}

impl JsonSchema for HeaderValue {
    fn schema_name() -> Cow<'static, str> {
        "HeaderValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$",
            "description": "An HTTP header value (no CR, LF or other control characters)."
        })
    }
}

fn template_schema(description: &str) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$",
        "description": description
    })
}

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        template_schema(&format!(
            "Text with ${{variable}} placeholders ({VARIABLES}); \"$$\" is a literal \"$\"."
        ))
    }
}

impl JsonSchema for HeaderTemplate {
    fn schema_name() -> Cow<'static, str> {
        "HeaderTemplate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        template_schema(&format!(
            "A header value with ${{variable}} placeholders ({VARIABLES}); \"$$\" is a literal \"$\"."
        ))
    }
}

/// The JSON Schema (draft 4, all definitions inlined) of a config type.
pub fn config_schema<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft07().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    to_draft4(&mut value);
    value
}

/// `{"config_schema": …}` — the content of Kong's `<filter>.meta.json`.
pub fn kong_meta<T: JsonSchema>() -> Value {
    serde_json::json!({ "config_schema": config_schema::<T>() })
}

/// Rewrites draft-7 keywords that draft 4 (Kong's validator) lacks: `const` → one-value `enum`, numeric
/// `exclusiveMinimum/Maximum` → the draft-4 boolean form; drops `$schema`, `examples` and non-standard
/// `format`s.
fn to_draft4(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("$schema");
            map.remove("examples");
            map.remove("$defs");
            map.remove("definitions");
            // schemars marks Rust number types ("uint32", "double"): not draft-4 formats, so drop them.
            let standard = ["date-time", "email", "hostname", "ipv4", "ipv6", "uri"];
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| !standard.contains(&f))
            {
                map.remove("format");
            }
            if let Some(c) = map.remove("const") {
                map.insert("enum".into(), Value::Array(vec![c]));
            }
            for (exclusive, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(n) = map.get(exclusive).filter(|v| v.is_number()).cloned() {
                    map.insert(bound.into(), n);
                    map.insert(exclusive.into(), Value::Bool(true));
                }
            }
            for v in map.values_mut() {
                to_draft4(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_draft4),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A sample config.
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        /// How long to wait.
        #[serde(default = "default_timeout")]
        timeout: DurationSpec,
        /// Where to put it.
        header: HeaderName,
        #[serde(default)]
        mode: Mode,
        /// Share of traffic, exclusive of zero.
        #[schemars(range(min = 0.0, max = 100.0))]
        share: f64,
    }

    #[derive(Deserialize, serde::Serialize, JsonSchema, Default)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Allow,
        Deny,
    }

    fn default_timeout() -> DurationSpec {
        DurationSpec::from_secs(1)
    }

    #[test]
    fn schemas_are_inlined_draft4_with_descriptions_and_no_extra_fields() {
        let s = config_schema::<Sample>();
        let text = s.to_string();
        assert!(
            !text.contains("$ref") && !text.contains("$defs") && !text.contains("\"const\""),
            "{text}"
        );
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["properties"]["timeout"]["description"],
            "How long to wait."
        );
        assert_eq!(
            s["properties"]["header"]["pattern"],
            "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
        );
        assert_eq!(s["required"], serde_json::json!(["header", "share"]));
        let modes = s["properties"]["mode"].to_string();
        assert!(modes.contains("allow") && modes.contains("deny"), "{modes}");
        assert_eq!(s["properties"]["timeout"]["default"], "1s");
        assert!(
            s["properties"]["share"].get("format").is_none(),
            "{}",
            s["properties"]["share"]
        );
        assert_eq!(s["properties"]["mode"]["default"], "allow");
        assert_eq!(kong_meta::<Sample>()["config_schema"], s);
    }
}
