//! Config loading: JSON → serde types with the JSON path of the first bad field in every error.
//!
//! Field-level checks live in the types themselves (see [`crate::units`] and [`crate::http`]): a value that
//! deserializes is already valid, so serde reports the failing field's path for us. Cross-field checks run
//! afterwards and build their own [`ConfigError`] with [`ConfigError::at`].

use serde::de::DeserializeOwned;
use std::fmt;

/// What a filter on Kong's engine logs after refusing its configuration: there the host would not close the
/// route (see `refusal_closes_the_route` in adapter.rs), so the filter takes the configuration and answers
/// every request with 500 instead.
pub const FAIL_CLOSED: &str =
    "failing closed: every request through this filter is answered with 500 until the configuration is fixed";

/// A configuration error, located by its JSON path (`limits[0].window`); the path is empty for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Nests this error under `prefix` (e.g. `chain[1].config`) when a config is embedded in a larger one.
    pub fn within(self, prefix: &str) -> Self {
        let path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_string(),
            (false, false) if self.path.starts_with('[') => format!("{prefix}{}", self.path),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        ConfigError {
            path,
            message: self.message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a filter configuration. Empty input (or only whitespace) means `{}`, so every field's default applies.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ConfigError::at("", "configuration is not valid UTF-8"))?
        .trim();
    let text = if text.is_empty() { "{}" } else { text };
    // Parse to a Value first: errors raised while mapping a Value carry no "at line N column M" noise,
    // so the message is exactly the field's own complaint.
    let mut value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::at("", format!("configuration is not valid JSON: {e}")))?;
    // Kong stores a filter's config and hands it over re-encoded by Lua's cjson, which writes an empty list
    // as `{}`. A list the operator left empty must mean the same on Kong as on Envoy — refusing it there
    // would leave the route running without its chain (Kong keeps proxying when a filter refuses its
    // config) — so an empty object where a list is expected is read as an empty list.
    for _ in 0..MAX_EMPTY_LIST_REPAIRS {
        match serde_path_to_error::deserialize(value.clone()) {
            Ok(config) => return Ok(config),
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let message = e.into_inner().to_string();
                let repaired = message.starts_with("invalid type: map, expected")
                    && value_at(&mut value, &path).is_some_and(|v| {
                        let empty_object = v.as_object().is_some_and(|o| o.is_empty());
                        if empty_object {
                            *v = serde_json::Value::Array(Vec::new());
                        }
                        empty_object
                    });
                if !repaired {
                    return Err(ConfigError::at(path, message));
                }
            }
        }
    }
    Err(ConfigError::at("", "too many empty lists written as {}"))
}

/// Empty lists written as `{}` that one configuration may contain (each costs one more parse).
const MAX_EMPTY_LIST_REPAIRS: usize = 64;

/// The value at a serde_path_to_error path (`a.b[2].c`); `None` if the path does not lead anywhere.
fn value_at<'v>(root: &'v mut serde_json::Value, path: &str) -> Option<&'v mut serde_json::Value> {
    let mut at = root;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            at = at.get_mut(key)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let index: usize = index.strip_suffix(']')?.parse().ok()?;
            at = at.get_mut(index)?;
        }
    }
    Some(at)
}

/// Builds the path of a list item: `item_path("rules", 2)` → `rules[2]`.
pub fn item_path(list: &str, index: usize) -> String {
    format!("{list}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        rules: Vec<Rule>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        #[allow(dead_code)]
        window: crate::units::DurationSpec,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lists {
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        inner: Vec<Inner>,
        #[serde(default)]
        table: std::collections::BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        tags: Vec<String>,
    }

    /// Kong re-encodes a stored config with cjson, which writes `[]` as `{}`: the filter must read the same
    /// config, not refuse it (a refused config leaves the Kong route running without its chain).
    #[test]
    fn empty_lists_written_as_empty_objects_are_empty_lists() {
        let c: Lists = parse_config(
            br#"{"names": {}, "inner": [{"tags": {}}, {"tags": ["a"]}], "table": {}}"#,
        )
        .unwrap();
        assert!(c.names.is_empty() && c.table.is_empty());
        assert!(c.inner[0].tags.is_empty());
        assert_eq!(c.inner[1].tags, ["a"]);
        // a non-empty object where a list belongs is still an error, at its path
        let e = parse_config::<Lists>(br#"{"inner": [{"tags": {"x": 1}}]}"#).unwrap_err();
        assert_eq!(e.path, "inner[0].tags");
    }

    #[test]
    fn empty_config_means_all_defaults() {
        let cfg: Outer = parse_config(b"  \n").unwrap();
        assert!(cfg.rules.is_empty());
    }

    #[test]
    fn field_error_names_the_json_path() {
        let err =
            parse_config::<Outer>(br#"{"rules":[{"window":"1s"},{"window":"fast"}]}"#).unwrap_err();
        assert_eq!(err.path, "rules[1].window");
        assert_eq!(
            err.to_string(),
            r#"rules[1].window: expected a duration like "1s", got "fast""#
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = parse_config::<Outer>(br#"{"rules":[{"window":"1s","extra":1}]}"#).unwrap_err();
        assert!(err.path.starts_with("rules[0]"), "{err}");
        assert!(err.message.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn invalid_json_is_a_root_error() {
        let err = parse_config::<Outer>(b"{rules:").unwrap_err();
        assert_eq!(err.path, "");
        assert!(err.message.starts_with("configuration is not valid JSON"));
    }

    #[test]
    fn non_utf8_config_is_rejected() {
        let err = parse_config::<Outer>(&[0xff, 0xfe]).unwrap_err();
        assert!(err.message.contains("UTF-8"));
    }

    #[test]
    fn errors_nest_under_a_prefix() {
        let e = ConfigError::at("providers[0].issuer", "must not be empty");
        assert_eq!(
            e.within("chain[1].config").path,
            "chain[1].config.providers[0].issuer"
        );
        assert_eq!(ConfigError::at("", "x").within("chain[0]").path, "chain[0]");
        assert_eq!(ConfigError::at("[2]", "x").within("list").path, "list[2]");
    }
}
