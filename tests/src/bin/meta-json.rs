//! Writes `<filter>.meta.json` for every filter into each folder given (default: dist/ and kong/meta/).

use portcullis_e2e::meta;
use portcullis_e2e::paths::repo_root;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = vec![repo_root().join("dist"), repo_root().join("kong/meta")];
    }
    for dir in &dirs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("meta-json: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for (name, doc) in meta::all() {
            let path = dir.join(format!(
                "{}.meta.json",
                portcullis_common::artifact_name(name)
            ));
            if let Err(e) = std::fs::write(&path, meta::render(&doc)) {
                eprintln!("meta-json: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
