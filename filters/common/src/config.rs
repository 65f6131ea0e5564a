//! Config loading: JSON → serde types with the JSON path of the first bad field in every error.
//!
//! Field-level checks live in the types themselves (see [`crate::units`] and [`crate::http`]): a value that
//! deserializes is already valid, so serde reports the failing field's path for us. Cross-field checks run
//! afterwards and build their own [`ConfigError`] with [`ConfigError::at`].

use serde::de::DeserializeOwned;
use std::fmt;

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
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::at("", format!("configuration is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::at(path, e.into_inner().to_string())
    })
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
