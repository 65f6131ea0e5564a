//! `headers` configuration. Every field is optional; an empty config changes nothing.
//!
//! ```json
//! { "request":  { "remove": ["x-internal"], "rename": [{"from": "x-user", "to": "x-consumer"}],
//!                 "set": [{"name": "x-client-ip", "value": "${client_ip}"}],
//!                 "add": [{"name": "x-via", "value": "portcullis"}] },
//!   "response": { "set": [{"name": "x-request-id", "value": "${request_id}"}] } }
//! ```

use portcullis_common::config::{item_path, ConfigError};
use portcullis_common::http::HeaderName;
use portcullis_common::template::HeaderTemplate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Request and response header transforms.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Edits applied to the request before it goes upstream.
    #[serde(default)]
    pub request: Transform,
    /// Edits applied to the response before it goes to the client.
    #[serde(default)]
    pub response: Transform,
}

/// One direction's edits, applied in this order: remove, rename, set, add.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Headers to delete (every value).
    #[serde(default)]
    pub remove: Vec<HeaderName>,
    /// Headers to move to a new name (the old name is removed; an existing `to` is overwritten).
    #[serde(default)]
    pub rename: Vec<Rename>,
    /// Headers to overwrite (or create) with a templated value.
    #[serde(default)]
    pub set: Vec<HeaderEdit>,
    /// Header values to append, keeping existing values.
    #[serde(default)]
    pub add: Vec<HeaderEdit>,
}

/// Moves a header's value to another name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// The header to rename.
    pub from: HeaderName,
    /// Its new name.
    pub to: HeaderName,
}

/// A header and its (templated) value.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdit {
    /// The header name.
    pub name: HeaderName,
    /// A template: literal text with `${variable}`s (see the shared template variables).
    pub value: HeaderTemplate,
}

/// Most edits one direction may hold: a bound on per-request work, far above any real use.
pub const MAX_EDITS: usize = 64;

impl HeadersConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: HeadersConfig = portcullis_common::parse_config(bytes)?;
        config.request.validate("request")?;
        config.response.validate("response")?;
        Ok(config)
    }
}

impl Transform {
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let total = self.remove.len() + self.rename.len() + self.set.len() + self.add.len();
        if total > MAX_EDITS {
            return Err(ConfigError::at(
                path,
                format!("{total} edits is more than the maximum of {MAX_EDITS}"),
            ));
        }
        for (i, r) in self.rename.iter().enumerate() {
            if r.from == r.to {
                return Err(ConfigError::at(
                    format!("{}.to", item_path(&format!("{path}.rename"), i)),
                    format!("renaming {:?} to itself does nothing", r.from.as_str()),
                ));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        HeadersConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_config_is_valid_and_does_nothing() {
        let c = HeadersConfig::parse(b"").unwrap();
        assert!(c.request.is_empty() && c.response.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let c = HeadersConfig::parse(
            br#"{"request":{"remove":["X-Internal"],"rename":[{"from":"a","to":"b"}],
                 "set":[{"name":"x-ip","value":"${client_ip}"}],"add":[{"name":"x-via","value":"p"}]},
                 "response":{"set":[{"name":"x-rid","value":"${request_id}"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.request.remove[0].as_str(), "x-internal");
        assert_eq!(c.response.set.len(), 1);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                r#"{"request":{"set":[{"name":"x y","value":"v"}]}}"#,
                "request.set[0].name: \"x y\" is not a valid header name",
            ),
            (
                r#"{"request":{"add":[{"name":"x","value":"a\r\nb"}]}}"#,
                "request.add[0].value: ",
            ),
            (
                r#"{"response":{"set":[{"name":"x","value":"${nope}"}]}}"#,
                "response.set[0].value: unknown template variable ${nope}",
            ),
            (r#"{"request":{"remove":[":path"]}}"#, "request.remove[0]: "),
            (
                r#"{"request":{"rename":[{"from":"a","to":"A"}]}}"#,
                "request.rename[0].to: renaming",
            ),
            (
                r#"{"request":{"set":[{"name":"x"}]}}"#,
                "request.set[0]: missing field `value`",
            ),
            (
                r#"{"request":{"sett":[]}}"#,
                "request.sett: unknown field `sett`",
            ),
            (r#"{"requests":{}}"#, "requests: unknown field `requests`"),
            (
                r#"{"request":{"remove":"x"}}"#,
                "request.remove: invalid type",
            ),
            (r#"[1]"#, "invalid type"),
        ];
        for (json, want) in cases {
            let err = error(json);
            assert!(
                err.starts_with(want) || err.contains(want),
                "{json}\n  got:  {err}\n  want: {want}"
            );
        }
    }

    #[test]
    fn schema_describes_every_field_and_forbids_unknown_ones() {
        let s = portcullis_common::schema::config_schema::<HeadersConfig>();
        assert_eq!(s["additionalProperties"], false);
        let t = &s["properties"]["request"];
        assert_eq!(t["additionalProperties"], false);
        for field in ["remove", "rename", "set", "add"] {
            assert!(
                t["properties"][field]["description"].is_string(),
                "{field}: {t}"
            );
        }
        assert_eq!(
            t["properties"]["set"]["items"]["required"],
            serde_json::json!(["name", "value"])
        );
    }

    #[test]
    fn too_many_edits_are_refused() {
        let edits: Vec<String> = (0..=MAX_EDITS).map(|i| format!("\"x-{i}\"")).collect();
        let json = format!(r#"{{"request":{{"remove":[{}]}}}}"#, edits.join(","));
        assert!(error(&json).starts_with("request: 65 edits"));
    }
}
