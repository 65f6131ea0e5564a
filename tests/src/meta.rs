//! Kong `<filter>.meta.json` documents, generated from each filter's Rust config type. `scripts/build` writes
//! them to dist/ next to the .wasm files; committed copies live in kong/meta/ and a test keeps them current.

use portcullis_common::schema::kong_meta;
use serde_json::Value;

/// (filter name, meta.json document) for every filter.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![("headers", kong_meta::<portcullis_headers::config::HeadersConfig>())]
}

/// The file content: pretty JSON with a trailing newline.
pub fn render(doc: &Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    text
}
