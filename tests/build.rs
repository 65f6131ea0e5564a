//! Probes for the `docker compose` CLI once per build: with it, tests/tests/compose_files.rs runs
//! `docker compose -f kong/docker-compose.yml config`; without it that test is reported as ignored with the
//! reason "skipped: docker compose not available" (never as passed).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(docker_compose)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=DOCKER_CONFIG");
    let available = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if available {
        println!("cargo:rustc-cfg=docker_compose");
    }
}
