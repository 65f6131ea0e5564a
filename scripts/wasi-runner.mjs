// Runs a wasm32-wasip1 test binary under Node's WASI (cargo's runner for `cargo test --target wasm32-wasip1`).
// Filter crates link proxy-wasm, whose host functions (`env.proxy_*`) do not exist here. They are stubbed to
// answer Ok (status 0) with no data, like an empty host; unit tests use the in-memory FakeHost for the rest.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const [, , wasmPath, ...args] = process.argv;
const wasi = new WASI({
  version: "preview1",
  args: [wasmPath, ...args],
  env: process.env,
  preopens: { "/": "/" },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(wasmPath));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === "wasi_snapshot_preview1" || imp.kind !== "function") continue;
  imports[imp.module] ??= {};
  imports[imp.module][imp.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
process.exitCode = wasi.start(instance);
