# Shared helpers for the scripts in this folder (sourced, not run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLCHAIN="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
ENVOY_VERSION="1.40.0"
ENVOY_BIN="$ROOT/.venv/bin/envoy-bin"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '\n== %s\n' "$*"; }

# Every filter crate (a cdylib under filters/), as "package-name policy-name" pairs.
filter_crates() {
  local manifest pkg
  for manifest in filters/*/Cargo.toml; do
    grep -q 'cdylib' "$manifest" || continue
    pkg="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)"
    echo "$pkg ${pkg#portcullis-}"
  done
}

# A filter crate's artifact name (dist/<name>.wasm, Kong filter name): its library name, the bundle "portcullis".
dist_name() {
  case "$1" in
    portcullis-bundle) echo portcullis ;;
    *) echo "${1//-/_}" ;; # portcullis_<policy>: see artifact_name in filters/common/src/policy.rs
  esac
}

setup_is_complete() {
  [ -x "$ENVOY_BIN" ] && command -v redis-server >/dev/null && command -v webdis >/dev/null &&
    rustup target list --installed --toolchain "$TOOLCHAIN" 2>/dev/null | grep -qx wasm32-wasip1
}

# Kong's WebAssembly engine (nginx + ngx_wasm_module), which the project never ships or builds: prints the binary
# and its module line, or (exit 1) why there is none. Same rule as tests/src/paths.rs::kong_engine_binary.
kong_engine() {
  local bin="${PORTCULLIS_KONG_NGINX:-}" origin="PORTCULLIS_KONG_NGINX"
  if [ -z "$bin" ]; then
    bin="$(command -v nginx || true)"; origin="PATH"
  fi
  if [ -z "$bin" ]; then
    echo "no Kong wasm engine (set PORTCULLIS_KONG_NGINX)"; return 1
  fi
  local version
  version="$("$bin" -V 2>&1)" || { echo "no Kong wasm engine: $bin ($origin) does not run"; return 1; }
  if ! grep -q "ngx_wasm" <<<"$version"; then
    echo "no Kong wasm engine: $bin ($origin) is built without ngx_wasm_module (set PORTCULLIS_KONG_NGINX)"
    return 1
  fi
  echo "$bin, $(head -1 <<<"$version" | sed 's/^nginx version: //')"
}
