//! Where the harness finds the built filters, the Envoy binary and Kong's engine.

use std::path::PathBuf;

/// The repository root (the workspace that contains this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Policy `policy`'s filter, `dist/<artifact name>.wasm` (`dist/portcullis_headers.wasm`), as built by
/// `scripts/setup` (override the folder with `PORTCULLIS_DIST`).
pub fn wasm(policy: &str) -> PathBuf {
    let dist = std::env::var_os("PORTCULLIS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist"));
    dist.join(format!("{}.wasm", portcullis_common::artifact_name(policy)))
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

/// The program named by environment variable `var`, else the first `program` on `PATH`; with where it was
/// found (`var` or `PATH`).
pub fn env_or_path(var: &str, program: &str) -> Option<(PathBuf, String)> {
    if let Some(p) = std::env::var_os(var) {
        return Some((PathBuf::from(p), var.to_string()));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .map(|p| (p, "PATH".to_string()))
}

/// Kong's WebAssembly engine: `PORTCULLIS_KONG_NGINX`, else an `nginx` on `PATH` whose `nginx -V` lists
/// ngx_wasm_module. The project never ships or builds it (see kong/README.md); `Err` says why none is usable.
pub fn kong_engine_binary() -> Result<PathBuf, String> {
    let (candidate, origin) = env_or_path("PORTCULLIS_KONG_NGINX", "nginx")
        .ok_or("no Kong wasm engine (set PORTCULLIS_KONG_NGINX)")?;
    let version = std::process::Command::new(&candidate)
        .arg("-V")
        .output()
        .map_err(|e| format!("{} ({origin}) does not run: {e}", candidate.display()))?;
    let text = String::from_utf8_lossy(&version.stderr);
    if text.contains("ngx_wasm_module") || text.contains("ngx_wasmx_module") {
        Ok(candidate)
    } else {
        Err(format!(
            "no Kong wasm engine: {} ({origin}) is built without ngx_wasm_module (set PORTCULLIS_KONG_NGINX)",
            candidate.display()
        ))
    }
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
