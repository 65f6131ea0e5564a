// Minimal proxy-wasm ABI 0.2.1 host for Node, to profile a Portcullis filter's wasm outside Envoy.
//   TOKEN=<jwt> node [--no-liftoff] bench/wasm-profile/host.mjs WASM CONFIG_JSON_FILE [N]
// Runs 20 000 warm-up requests, then times N (default 300 000) identical requests and prints µs/request
// and the host calls each request made. ABI details follow proxy-wasm-0.2.5/src/hostcalls.rs.
import { readFileSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';

const [wasmPath, configPath, nArg] = process.argv.slice(2);
if (!wasmPath || !configPath) {
  console.error('usage: node host.mjs WASM CONFIG_JSON_FILE [N]');
  process.exit(2);
}
const N = Number(nArg ?? 300_000);
const WARMUP = Number(process.env.WARMUP ?? 20_000);
const TOKEN = process.env.TOKEN;
if (!TOKEN) {
  console.error('TOKEN env var is required (a JWT for the chain config; see token.mjs)');
  process.exit(2);
}
// Envoy answers proxy_get_log_level with its `wasm` logger level; scripts/bench runs Envoy with `-l error`.
const LOG_LEVEL = Number(process.env.LOG_LEVEL ?? 4);

// proxy-wasm Status (types.rs).
const OK = 0, NOT_FOUND = 1, CAS_MISMATCH = 8;

// ---- wasm memory: a Buffer over it, rebuilt when memory.grow detaches the old one (length drops to 0) ----
let memory, mb, alloc;
const mem = () => (mb.length === 0 ? (mb = Buffer.from(memory.buffer)) : mb);
const bytesAt = (ptr, len) => mem().subarray(ptr, ptr + len);
// utf8Slice: Buffer#toString('utf8') without its argument checks (an undocumented but long-stable method).
const strAt = (ptr, len) => mem().utf8Slice(ptr, ptr + len);
const putU32 = (ptr, v) => mem().writeUInt32LE(v, ptr);
const putU64 = (ptr, v) => mem().writeBigUInt64LE(v, ptr);

// Hands data to the module the way Envoy does: a buffer from proxy_on_memory_allocate (a leaked Vec the SDK
// takes back with Vec::from_raw_parts), its pointer and size written to the two return slots.
function giveBytes(bytes, retPtr, retSize) {
  const p = alloc(bytes.length);
  mem().set(bytes, p); // after the allocation, which may have grown memory
  putU32(retPtr, p);
  putU32(retSize, bytes.length);
  return OK;
}
function giveString(str, retPtr, retSize) {
  const len = Buffer.byteLength(str);
  const p = alloc(len);
  mem().write(str, p, len, 'utf8');
  putU32(retPtr, p);
  putU32(retSize, len);
  return OK;
}

const u64le = (v) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};

// ---- header maps: arrays of [name, value] in insertion order, plus their serialization until changed ----
const REQUEST_HEADERS = [
  [':method', 'GET'],
  [':path', '/bench'],
  [':authority', '127.0.0.1:10000'],
  [':scheme', 'http'],
  ['user-agent', 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'],
  ['x-internal', '1'],
  ['authorization', `Bearer ${TOKEN}`],
  ['x-forwarded-proto', 'http'],
  ['x-request-id', '4bf92f35-77b3-4da6-a3ce-929d0e0e4736'],
];
const RESPONSE_HEADERS = [
  [':status', '200'],
  ['content-length', '2'],
];
const maps = { 0: { pairs: [], bytes: null }, 2: { pairs: [], bytes: null } }; // 0 request, 2 response headers
function mapOf(type) {
  const m = maps[type];
  if (m === undefined) once(`header map type ${type}`);
  return m;
}
function resetMaps() {
  maps[0].pairs = REQUEST_HEADERS.map(([k, v]) => [k, v]);
  maps[0].bytes = REQUEST_BYTES;
  maps[2].pairs = RESPONSE_HEADERS.map(([k, v]) => [k, v]);
  maps[2].bytes = RESPONSE_BYTES;
}

// Serialized map: u32 count, count × (u32 name len, u32 value len), then each name NUL value NUL.
function serializeMap(pairs) {
  const encoded = pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
  let size = 4 + 8 * pairs.length;
  for (const [k, v] of encoded) size += k.length + v.length + 2;
  const out = Buffer.alloc(size);
  out.writeUInt32LE(pairs.length, 0);
  let p = 4 + 8 * pairs.length;
  encoded.forEach(([k, v], i) => {
    out.writeUInt32LE(k.length, 4 + i * 8);
    out.writeUInt32LE(v.length, 8 + i * 8);
    out.set(k, p); p += k.length + 1;
    out.set(v, p); p += v.length + 1;
  });
  return out;
}
function indexOf(pairs, key) {
  for (let i = 0; i < pairs.length; i++) if (pairs[i][0] === key) return i;
  return -1;
}
// Removes the pairs named `key` from index `from` on, in place; whether any were.
function removeAll(pairs, key, from) {
  let w = from;
  for (let r = from; r < pairs.length; r++) if (pairs[r][0] !== key) pairs[w++] = pairs[r];
  const removed = w < pairs.length;
  pairs.length = w;
  return removed;
}
const REQUEST_BYTES = serializeMap(REQUEST_HEADERS), RESPONSE_BYTES = serializeMap(RESPONSE_HEADERS);
function deserializeMap(bytes) {
  const b = Buffer.from(bytes);
  if (b.length === 0) return [];
  const n = b.readUInt32LE(0);
  const pairs = [];
  let p = 4 + 8 * n;
  for (let i = 0; i < n; i++) {
    const kl = b.readUInt32LE(4 + i * 8), vl = b.readUInt32LE(8 + i * 8);
    const k = b.toString('utf8', p, p + kl); p += kl + 1;
    const v = b.toString('utf8', p, p + vl); p += vl + 1;
    pairs.push([k, v]);
  }
  return pairs;
}

// ---- properties (Envoy encodings: strings as bytes, integers u64 LE) ----
const PROPERTIES = new Map([
  ['source\0address', Buffer.from('127.0.0.1:40000')],
  ['xds\0route_name', Buffer.from('bench')],
  ['response\0code', u64le(200)],
  ['request\0total_size', u64le(0)],
  ['response\0total_size', u64le(2)],
  ['plugin_root_id', Buffer.from('portcullis')],
  ['plugin_name', Buffer.from('portcullis')],
]);

// ---- host state ----
const shared = new Map(); // key -> {value: Buffer, cas}
let nextCas = 1;
const metrics = []; // id -> {type, name, value: bigint}
const metricIds = new Map();
let tickPeriod = 0;
let currentContext = 0;
let localResponse = null; // what proxy_send_local_response sent for the current request
const logged = new Set();
function once(what) {
  if (!logged.has(what)) {
    logged.add(what);
    console.error(`[host] unimplemented/unknown: ${what}`);
  }
}
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'critical'];

// Real time, ns: wall clock at start plus the monotonic clock since.
const T0_WALL = BigInt(Date.now()) * 1_000_000n, T0_MONO = process.hrtime.bigint();
const nowNs = () => T0_WALL + (process.hrtime.bigint() - T0_MONO);

// ---- env imports ----
const env = {
  proxy_log(level, ptr, len) {
    if (level >= 3 || process.env.LOG_ALL) console.error(`[wasm ${LEVELS[level] ?? level}] ${strAt(ptr, len)}`);
    return OK;
  },
  proxy_get_log_level(retPtr) { putU32(retPtr, LOG_LEVEL); return OK; },
  proxy_get_current_time_nanoseconds(retPtr) { putU64(retPtr, nowNs()); return OK; },
  proxy_set_tick_period_milliseconds(ms) { tickPeriod = ms; return OK; },
  proxy_set_effective_context(id) { currentContext = id; return OK; },
  proxy_continue_stream(_stream) { return OK; },
  proxy_close_stream(_stream) { return OK; },
  proxy_done() { return OK; },

  proxy_get_buffer_bytes(type, start, max, retPtr, retSize) {
    // u32 arguments arrive as signed i32: the SDK asks for "everything" with max = u32::MAX (-1 here)
    start >>>= 0;
    max >>>= 0;
    const buf = buffers[type];
    if (buf === undefined) { once(`proxy_get_buffer_bytes type ${type}`); return NOT_FOUND; }
    return giveBytes(buf.subarray(start, start + max), retPtr, retSize);
  },
  proxy_get_buffer_status(type, retLen, retFlags) {
    const buf = buffers[type];
    if (buf === undefined) return NOT_FOUND;
    putU32(retLen, buf.length); putU32(retFlags, 0);
    return OK;
  },

  proxy_get_header_map_pairs(type, retPtr, retSize) {
    const m = mapOf(type);
    if (!m) return NOT_FOUND;
    m.bytes ??= serializeMap(m.pairs);
    return giveBytes(m.bytes, retPtr, retSize);
  },
  proxy_set_header_map_pairs(type, ptr, len) {
    const m = mapOf(type);
    if (!m) return NOT_FOUND;
    m.pairs = deserializeMap(bytesAt(ptr, len)).map(([k, v]) => [k.toLowerCase(), v]);
    m.bytes = null;
    return OK;
  },
  proxy_get_header_map_value(type, kPtr, kLen, retPtr, retSize) {
    const m = mapOf(type);
    if (!m) return NOT_FOUND;
    const i = indexOf(m.pairs, strAt(kPtr, kLen).toLowerCase());
    return i < 0 ? NOT_FOUND : giveString(m.pairs[i][1], retPtr, retSize);
  },
  proxy_add_header_map_value(type, kPtr, kLen, vPtr, vLen) {
    const m = mapOf(type);
    if (!m) return NOT_FOUND;
    m.pairs.push([strAt(kPtr, kLen).toLowerCase(), strAt(vPtr, vLen)]);
    m.bytes = null;
    return OK;
  },
  // Replaces the first value and drops the others of that name (Envoy's setCopy); adds it when absent.
  proxy_replace_header_map_value(type, kPtr, kLen, vPtr, vLen) {
    const m = mapOf(type);
    if (!m) return NOT_FOUND;
    const key = strAt(kPtr, kLen).toLowerCase(), value = strAt(vPtr, vLen);
    const i = indexOf(m.pairs, key);
    if (i < 0) m.pairs.push([key, value]);
    else {
      m.pairs[i] = [key, value];
      removeAll(m.pairs, key, i + 1);
    }
    m.bytes = null;
    return OK;
  },
  proxy_remove_header_map_value(type, kPtr, kLen) {
    const m = mapOf(type);
    if (!m) return NOT_FOUND;
    if (removeAll(m.pairs, strAt(kPtr, kLen).toLowerCase(), 0)) m.bytes = null;
    return OK;
  },

  proxy_get_property(pPtr, pLen, retPtr, retSize) {
    const path = strAt(pPtr, pLen); // segments joined by NUL, no trailing NUL (serialize_property_path)
    const value = PROPERTIES.get(path);
    if (value === undefined) { once(`property ${path.replaceAll('\0', '.')}`); return NOT_FOUND; }
    return giveBytes(value, retPtr, retSize);
  },
  proxy_set_property(pPtr, pLen, _vPtr, _vLen) {
    once(`proxy_set_property ${strAt(pPtr, pLen).replaceAll('\0', '.')}`);
    return OK;
  },

  // Envoy semantics: every set gets a fresh cas; a set with cas != 0 on an existing key must match it.
  proxy_get_shared_data(kPtr, kLen, retPtr, retSize, retCas) {
    const e = shared.get(strAt(kPtr, kLen));
    if (!e) return NOT_FOUND;
    giveBytes(e.value, retPtr, retSize);
    putU32(retCas, e.cas);
    return OK;
  },
  proxy_set_shared_data(kPtr, kLen, vPtr, vLen, cas) {
    const key = strAt(kPtr, kLen);
    const e = shared.get(key);
    if (e && cas !== 0 && cas !== e.cas) return CAS_MISMATCH;
    shared.set(key, { value: Buffer.from(bytesAt(vPtr, vLen)), cas: nextCas++ });
    return OK;
  },

  proxy_define_metric(type, nPtr, nLen, retId) {
    const name = strAt(nPtr, nLen);
    let id = metricIds.get(name);
    if (id === undefined) {
      id = metrics.length + 1;
      metrics[id - 1] = { type, name, value: 0n };
      metricIds.set(name, id);
    }
    putU32(retId, id);
    return OK;
  },
  proxy_increment_metric(id, delta) {
    const m = metrics[id - 1];
    if (!m) return NOT_FOUND;
    m.value += BigInt(delta);
    return OK;
  },
  proxy_record_metric(id, value) {
    const m = metrics[id - 1];
    if (!m) return NOT_FOUND;
    m.value = BigInt(value);
    return OK;
  },
  proxy_get_metric(id, retPtr) {
    const m = metrics[id - 1];
    if (!m) return NOT_FOUND;
    putU64(retPtr, BigInt.asUintN(64, m.value));
    return OK;
  },

  proxy_send_local_response(status, _dPtr, _dLen, bPtr, bLen, hPtr, hLen, grpc) {
    localResponse = {
      status,
      body: strAt(bPtr, bLen),
      headers: deserializeMap(bytesAt(hPtr, hLen)),
      grpc,
    };
    return OK;
  },
};

// Buffers readable through proxy_get_buffer_bytes (6 VmConfiguration, 7 PluginConfiguration).
const pluginConfig = readFileSync(configPath);
const buffers = { 6: Buffer.alloc(0), 7: pluginConfig };

// ---- wasi imports ----
const ERRNO_BADF = 8;
const wasi = {
  fd_write(fd, iovs, iovsLen, retWritten) {
    let n = 0;
    for (let i = 0; i < iovsLen; i++) {
      const p = mem().readUInt32LE(iovs + i * 8), l = mem().readUInt32LE(iovs + i * 8 + 4);
      const data = bytesAt(p, l);
      if (fd === 1) process.stdout.write(data);
      else if (fd === 2) process.stderr.write(data);
      else return ERRNO_BADF;
      n += l;
    }
    putU32(retWritten, n);
    return 0;
  },
  random_get(ptr, len) { randomFillSync(mem(), ptr, len); return 0; },
  clock_time_get(id, _precision, retPtr) {
    putU64(retPtr, id === 0 ? nowNs() : process.hrtime.bigint());
    return 0;
  },
  environ_sizes_get(retCount, retSize) { putU32(retCount, 0); putU32(retSize, 0); return 0; },
  environ_get() { return 0; },
  args_sizes_get(retCount, retSize) { putU32(retCount, 0); putU32(retSize, 0); return 0; },
  args_get() { return 0; },
  proc_exit(code) { throw new Error(`wasm called proc_exit(${code})`); },
  fd_close() { return 0; },
  fd_seek() { return 0; },
  fd_fdstat_get() { return 0; },
  fd_prestat_get() { return ERRNO_BADF; },
  sched_yield() { return 0; },
};

// ---- instantiate: every import the module asks for, counted; unknown ones are loud stubs returning 0 ----
const module = new WebAssembly.Module(readFileSync(wasmPath));
const counts = {}; // import name -> {n}: one counter object per import keeps each wrapper monomorphic
const imports = {};
for (const { module: mod, name, kind } of WebAssembly.Module.imports(module)) {
  if (kind !== 'function') throw new Error(`unsupported import ${mod}.${name} (${kind})`);
  const impl = (mod === 'env' ? env : mod === 'wasi_snapshot_preview1' ? wasi : {})[name];
  const c = (counts[name] = { n: 0 });
  imports[mod] ??= {};
  imports[mod][name] = impl
    ? (a, b, d, e, f, g, h, i, j, k, l, m) => (c.n++, impl(a, b, d, e, f, g, h, i, j, k, l, m))
    : (...args) => (c.n++, once(`${mod}.${name}(${args.join(', ')})`), 0);
}
const ex = new WebAssembly.Instance(module, imports).exports;
memory = ex.memory;
mb = Buffer.from(memory.buffer);
const allocFn = ex.proxy_on_memory_allocate ?? ex.malloc;
if (!allocFn) throw new Error('module exports neither proxy_on_memory_allocate nor malloc');
alloc = (n) => allocFn(n) >>> 0;
const call = (name, ...args) => (ex[name] ? ex[name](...args) : undefined);

// ---- start the VM and the plugin ----
if (ex._initialize) ex._initialize();
else if (ex._start) ex._start();
const ROOT = 1;
currentContext = ROOT;
call('proxy_on_context_create', ROOT, 0);
if (call('proxy_on_vm_start', ROOT, buffers[6].length) === 0) {
  console.error('proxy_on_vm_start returned false');
  process.exit(1);
}
if (call('proxy_on_configure', ROOT, pluginConfig.length) === 0) {
  console.error(`proxy_on_configure returned false: the module rejected ${configPath} (see the log above)`);
  process.exit(1);
}

// ---- one request ----
let requests = 0;
let nextContext = 2;
function request() {
  const id = nextContext++;
  resetMaps();
  localResponse = null;
  currentContext = id;
  ex.proxy_on_context_create(id, ROOT);
  const action = ex.proxy_on_request_headers(id, maps[0].pairs.length, 1);
  if (action !== 0 || localResponse) {
    console.error(`request ${requests}: proxy_on_request_headers returned ${action} (expected 0 = Continue)`);
    if (localResponse) console.error('local response:', JSON.stringify(localResponse));
    process.exit(1);
  }
  ex.proxy_on_response_headers(id, maps[2].pairs.length, 0);
  call('proxy_on_log', id);
  call('proxy_on_done', id);
  call('proxy_on_delete', id);
  requests++;
  if (tickPeriod && requests % 10_000 === 0) {
    currentContext = ROOT;
    call('proxy_on_tick', ROOT);
  }
}

// Sanity: show what one request did to the headers.
request();
console.error('[host] request headers after the chain:', JSON.stringify(maps[0].pairs));
console.error('[host] response headers after the chain:', JSON.stringify(maps[2].pairs));

for (let i = 1; i < WARMUP; i++) request();
for (const k in counts) counts[k].n = 0;
const t0 = process.hrtime.bigint();
for (let i = 0; i < N; i++) request();
const t1 = process.hrtime.bigint();
const ns = Number(t1 - t0);

console.log(`node pid: ${process.pid}`);
// CLOCK_MONOTONIC, as perf record -k mono and V8's cpuprofile timestamps use: lets profiles keep only this loop.
console.log(`timed loop (CLOCK_MONOTONIC µs): ${t0 / 1000n} ${t1 / 1000n}`);
console.log(`requests: ${N} (after ${WARMUP} warm-up), ${(ns / 1e9).toFixed(3)} s`);
console.log(`µs/request: ${(ns / 1e3 / N).toFixed(3)}`);
console.log('host calls per request (timed loop):');
for (const [k, v] of Object.entries(counts).map(([k, c]) => [k, c.n]).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])) {
  console.log(`  ${(v / N).toFixed(4).padStart(8)}  ${k}`);
}
const counted = metrics.filter((m) => m.value !== 0n);
console.log(`wasm memory: ${(memory.buffer.byteLength / 1048576).toFixed(1)} MiB; shared keys: ${shared.size}; ` +
  `metrics: ${metrics.length} defined, non-zero: ${counted.map((m) => `${m.name}=${m.value}`).join(' ')}`);
