//! The `portcullis` command: one policy file (`portcullis.yaml`) → validated Envoy and Kong configuration,
//! rendered to files or pushed to Kong's Admin API. See cli/README.md.

pub mod diag;
pub mod http;
pub mod kong_schema;
pub mod locate;
pub mod policy;
pub mod push;
pub mod registry;
pub mod render;
pub mod shape;
pub mod validate;
pub mod xds;

use diag::Diagnostic;
use policy::{LoadError, Loaded};
use std::path::Path;

/// Loads a policy file and checks every filter config: the policy, or every problem found.
pub fn load_and_validate(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, LoadError> {
    let loaded = policy::load_file(path, env)?;
    let errors = validate::check_filters(&loaded);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

/// The process environment, for `${NAME}` references.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Diagnostics as the JSON `validate --output json` prints.
pub fn diagnostics_json(ok: bool, errors: &[Diagnostic]) -> serde_json::Value {
    serde_json::json!({ "ok": ok, "errors": errors })
}
