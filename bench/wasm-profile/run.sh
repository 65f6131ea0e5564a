#!/usr/bin/env bash
# Builds portcullis.wasm with its function names kept, then runs it in Node's V8 under host.mjs (a minimal
# proxy-wasm host) with the chain of chain.json, optionally profiled.
#   bench/wasm-profile/run.sh [--perf | --cpu-prof] [--no-opt] [N]
#     (none)      print µs/request and the host calls per request
#     --perf      perf record the run; print the top 60 symbols (self time, main thread, timed loop only)
#     --cpu-prof  V8's sampling profiler; print the top 60 functions by self time (timed loop only)
#     --no-opt    run cargo's output as is, without scripts/build's wasm-opt -Oz pass (see below)
# Env: NODE_FLAGS (default --no-liftoff: Envoy's V8 runs wasm with Liftoff off, TurboFan only), WARMUP.
# Reading the numbers: µs/request includes the JS host shim (~40 % of the samples), which stands in for Envoy's
# C++ host calls but costs differently; the per-function wasm shares are what carry over to Envoy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode="" opt=1 n=300000
for arg in "$@"; do
  case "$arg" in
  --perf | --cpu-prof) mode="$arg" ;;
  --no-opt) opt=0 ;;
  [0-9]*) n="$arg" ;;
  *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
node_flags=(${NODE_FLAGS:---no-liftoff})

# The repo's release profile strips the wasm; keep the name section (and line tables) in a separate target dir.
target=/tmp/wasmprof-target
(cd "$repo" && CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \
  cargo build --release --target wasm32-wasip1 -p portcullis-bundle --target-dir "$target")
wasm="$target/wasm32-wasip1/release/portcullis_bundle.wasm"
# dist/portcullis.wasm (what Envoy runs) is that build through wasm-opt -Oz (scripts/build): do the same, keeping
# the name section (-g) but not the DWARF, which V8 ignores.
if [ "$opt" = 1 ] && command -v wasm-opt >/dev/null 2>&1; then
  wasm-opt --strip-dwarf -Oz -g --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-multivalue --enable-reference-types "$wasm" -o "$target/portcullis.wasm"
  wasm="$target/portcullis.wasm"
elif [ "$opt" = 1 ]; then
  echo "(wasm-opt not found: profiling cargo's output, not what dist/ ships)" >&2
fi
echo "wasm: $wasm" >&2

TOKEN="$(node "$here/token.mjs")"
export TOKEN
out=/tmp/wasmprof-run.txt
window() { sed -n 's/^timed loop (CLOCK_MONOTONIC µs): //p' "$out"; }

case "$mode" in
"")
  node "${node_flags[@]}" "$here/host.mjs" "$wasm" "$here/chain.json" "$n"
  ;;
--perf)
  perf record -F 10000 -k mono -g -o /tmp/wasmprof.data \
    node "${node_flags[@]}" --perf-basic-prof --interpreted-frames-native-stack \
    "$here/host.mjs" "$wasm" "$here/chain.json" "$n" | tee "$out"
  pid="$(sed -n 's/^node pid: //p' "$out")"
  # perf report reads /tmp/perf-PID.map at report time: give the wasm functions their Rust names.
  node "$here/profile.mjs" perfmap "/tmp/perf-$pid.map"
  read -r from to < <(window)
  range="$(awk -v a="$from" -v b="$to" 'BEGIN { printf "%.6f,%.6f", a / 1e6, b / 1e6 }')"
  echo "== perf: main thread, timed loop ($range s), self time =="
  perf report -i /tmp/wasmprof.data --tid="$pid" --time="$range" --percentage relative --no-children \
    --sort sym --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >/tmp/wasmprof-report.txt
  # Where the time goes: wasm code (incl. V8's out-of-line memory.copy/fill) vs the rest (the JS host shim,
  # import wrappers, V8 and Node internals, kernel).
  awk '{ p = $1 + 0; s = $0; sub(/^ *[0-9.]+% +\[[.k]\] /, "", s)
         if (s ~ /^wasm / || s ~ /wasm::memory_(copy|fill)/) w += p; else o += p }
       END { t = w + o; printf "wasm %.1f%%, host shim/V8/node/kernel %.1f%%\n", 100 * w / t, 100 * o / t }' \
    /tmp/wasmprof-report.txt
  head -60 /tmp/wasmprof-report.txt
  echo "== the same, wasm functions only (top 40; % of all main-thread samples in the loop) =="
  grep -E '\] (wasm |v8::internal::wasm::memory_)' /tmp/wasmprof-report.txt | head -40
  echo "(full report with call graphs: perf report -i /tmp/wasmprof.data --no-children --sort sym --tid=$pid --time=$range)"
  ;;
--cpu-prof)
  dir=/tmp/wasmprof-cpuprof
  rm -rf "$dir"
  node "${node_flags[@]}" --cpu-prof --cpu-prof-dir="$dir" --cpu-prof-interval 100 \
    "$here/host.mjs" "$wasm" "$here/chain.json" "$n" | tee "$out"
  read -r from to < <(window)
  echo "== cpu-prof: timed loop, self time =="
  node "$here/profile.mjs" cpuprofile "$dir"/*.cpuprofile 60 "$from" "$to"
  echo "(open $(ls "$dir"/*.cpuprofile) in Chrome DevTools > Performance for the call tree)"
  ;;
esac
