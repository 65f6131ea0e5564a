//! Where the harness finds the built filters and the Envoy binary.

use std::path::PathBuf;

/// The repository root (the workspace that contains this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `dist/<name>.wasm`, as built by `scripts/setup` (override the folder with `PORTCULLIS_DIST`).
pub fn wasm(name: &str) -> PathBuf {
    let dist = std::env::var_os("PORTCULLIS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist"));
    dist.join(format!("{name}.wasm"))
}

/// The Envoy binary: `PORTCULLIS_ENVOY`, else the one `scripts/setup` installed in `.venv`.
pub fn envoy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PORTCULLIS_ENVOY") {
        return PathBuf::from(p);
    }
    let linked = repo_root().join(".venv/bin/envoy-bin");
    if linked.exists() {
        return linked;
    }
    repo_root().join(".venv/bin/envoy")
}

/// A fresh scratch folder under `target/e2e/` for one Envoy's config and logs.
pub fn scratch_dir(label: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = repo_root()
        .join("target/e2e")
        .join(format!("{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}
