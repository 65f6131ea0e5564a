// Profile post-processing for host.mjs runs. Rust names in the wasm name section are mangled; c++filt
// (binutils, installed with perf) demangles both Rust manglings, then the hashes are dropped.
//   node profile.mjs perfmap /tmp/perf-PID.map       rewrite V8's perf map in place with readable wasm names
//   node profile.mjs cpuprofile FILE [TOP] [FROM TO]  self time per function (FROM/TO: monotonic µs window)
import { readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

// name -> readable name. A mangled name may follow a prefix, as in wasm-opt's merged functions
// (`byn$mgfn-shared$_ZN…`).
function demangleAll(names) {
  const unique = [...new Set(names)];
  const split = unique.map((n) => n.match(/^(.*?)(_ZN.*|_R[0-9A-Za-z_.]+)$/) ?? [n, n, '']);
  const input = split.map(([, , mangled]) => mangled || '-').join('\n') + '\n';
  const out = spawnSync('c++filt', { input, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (out.status !== 0) throw new Error(`c++filt failed: ${out.stderr || out.error}`);
  const lines = out.stdout.split('\n');
  const map = new Map();
  split.forEach(([n, prefix, mangled], i) => {
    const readable = mangled ? (lines[i] ?? mangled).replace(/::h[0-9a-f]{16}$/, '').replace(/\[[0-9a-f]{16}\]/g, '') : '';
    map.set(n, prefix + readable);
  });
  return map;
}

const [cmd, file, ...rest] = process.argv.slice(2);

if (cmd === 'perfmap') {
  // V8 names wasm code `JS:<name>-<func index>-<tier>`, import wrappers `JS:wasm-to-js:<sig>-<name>-...`.
  const WASM = /^JS:(wasm-to-js:[^-]*-)?(.*)-(\d+)-(turbofan|liftoff)$/;
  const lines = readFileSync(file, 'utf8').split('\n');
  const parsed = lines.map((l) => {
    const [, addr, size, name] = l.match(/^(\S+) (\S+) (.*)$/) ?? [];
    const m = name?.match(WASM);
    return m ? { addr, size, wrapper: m[1], name: m[2], tier: m[4] } : { line: l };
  });
  const names = demangleAll(parsed.filter((p) => p.name).map((p) => p.name));
  let n = 0;
  const out = parsed.map((p) => {
    if (!p.name) return p.line;
    n++;
    const tier = p.tier === 'turbofan' ? '' : ` [${p.tier}]`;
    const prefix = p.wrapper ? `wasm-to-js ${p.wrapper.slice(11, -1)} ` : 'wasm ';
    return `${p.addr} ${p.size} ${prefix}${names.get(p.name)}${tier}`;
  });
  writeFileSync(file, out.join('\n'));
  console.error(`[profile] ${n} wasm symbols renamed in ${file}`);
} else if (cmd === 'cpuprofile') {
  const top = Number(rest[0] ?? 60);
  const [from, to] = rest.slice(1, 3).map(Number);
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  // Sample i happened at startTime + sum(timeDeltas[0..i]) (µs, the same monotonic clock as hrtime).
  const self = new Map();
  let t = prof.startTime, total = 0;
  prof.samples.forEach((id, i) => {
    t += prof.timeDeltas[i];
    if (from && (t < from || t > to)) return;
    const node = byId.get(id);
    self.set(node, (self.get(node) ?? 0) + 1);
    total++;
  });
  const names = demangleAll(prof.nodes.filter((n) => n.callFrame.url.startsWith('wasm://')).map((n) => n.callFrame.functionName));
  const label = (n) => {
    const { functionName: f, url, lineNumber } = n.callFrame;
    if (url.startsWith('wasm://')) return `wasm ${names.get(f) ?? f}`;
    if (!url) return f || '(anonymous)';
    return `js ${f || '(anonymous)'} ${url.replace(/^file:\/\/.*\//, '')}:${lineNumber + 1}`;
  };
  const agg = new Map(), kinds = new Map();
  for (const [node, count] of self) {
    const l = label(node);
    agg.set(l, (agg.get(l) ?? 0) + count);
    const kind = l.startsWith('wasm ') ? 'wasm' : /^\((garbage collector|program|idle)\)$/.test(l) ? l : 'host (JS shim, Node natives)';
    kinds.set(kind, (kinds.get(kind) ?? 0) + count);
  }
  const pct = (c) => `${((100 * c) / total).toFixed(2).padStart(6)}%`;
  console.log(`${total} samples${from ? ' in the timed loop' : ''}; by kind:`);
  for (const [k, c] of [...kinds].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(c)}  ${k}`);
  console.log(`top ${top} by self time:`);
  const ranked = [...agg].sort((a, b) => b[1] - a[1]);
  for (const [l, c] of ranked.slice(0, top)) console.log(`  ${pct(c)}  ${l}`);
  console.log(`wasm functions only (top 40; % of all samples):`);
  for (const [l, c] of ranked.filter(([l]) => l.startsWith('wasm ')).slice(0, 40)) console.log(`  ${pct(c)}  ${l}`);
} else {
  console.error('usage: node profile.mjs perfmap MAPFILE | cpuprofile FILE [TOP] [FROM_US TO_US]');
  process.exit(2);
}
