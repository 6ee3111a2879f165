/**
 * `npm run bench -- schemes [--mib N] [--types Q8_0,Q4_K] [--reps R] [--no-llama]`
 *
 * Quantization throughput, MB/s of float32 input, on N MiB (default 256 MiB = 64 Mi values, seeded
 * normal) for Q8_0, Q4_0, Q4_K, MXFP4 and NVFP4:
 *   - llama.cpp's reference quantizers (quantize_row_X_ref through the from_float_ref type trait),
 *     one thread, built from .cache/llama.cpp-src with tools/ggml-golden's flags
 *     (gcc -O2 -std=gnu11 -ffp-contract=off -fno-fast-math) and with -O3 -march=native, driven by
 *     tools/quant-bench/driver.c on the same data;
 *   - lowbit's WebAssembly quantizers (ggmlCodec(type).quantize) in this thread, and with 2 threads
 *     (src/cli/quantize-pool.ts: this thread + 1 worker claiming row ranges; the input in shared
 *     memory, as `lowbit quantize` reads tensors into it);
 *   - lowbit's scalar TypeScript reference on a 1/64 slice (1/256 for K-quants; rate from the slice).
 * Ratios are lowbit / llama.cpp -O2 measured in the same run (the machine is shared: absolute numbers
 * move, ratios less). The bytes lowbit writes are compared with llama.cpp's: OK or MISMATCH.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { QuantizePool } from '../src/cli/quantize-pool.js';
import { installWasmQuantizers } from '../src/kernels/ggml-quant.js';
import { wasmVariant } from '../src/kernels/wasm.js';
import { ggmlCodec, ggmlTypeByName, kquantRefQuantizers, legacyRefQuantizers } from '../src/quant/ggml/index.js';
import { ggmlReferenceQuantizer } from '../src/quant/ggml/registry.js';

installWasmQuantizers(); // the WebAssembly quantizers the bench measures (nothing installs on import)
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CACHE = path.join(ROOT, '.cache');
const LLAMA_SRC = path.join(CACHE, 'llama.cpp-src');
const DRIVER = path.join(ROOT, 'tools', 'quant-bench', 'driver.c');
/** the golden-vector flags of tools/ggml-golden/generate.mjs: IEEE float32, no FMA contraction */
const BASE_FLAGS = ['-std=gnu11', '-ffp-contract=off', '-fno-fast-math'];
const BUILDS = [
  { label: 'llama.cpp -O2', flags: ['-O2', ...BASE_FLAGS] },
  { label: '-O3 -march=native', flags: ['-O3', '-march=native', ...BASE_FLAGS] },
];
const DEFAULT_TYPES = ['Q8_0', 'Q4_0', 'Q4_K', 'MXFP4', 'NVFP4'];

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** splitmix32 + Box-Muller, seeded */
function seededNormal(n: number, seed: number): Float32Array {
  const x = new Float32Array(new SharedArrayBuffer(n * 4));
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - next()));
    const t = 2 * Math.PI * next();
    x[i] = r * Math.cos(t);
    if (i + 1 < n) x[i + 1] = r * Math.sin(t);
  }
  return x;
}

function buildDriver(flags: string[]): string | null {
  if (!fs.existsSync(path.join(LLAMA_SRC, 'ggml', 'src', 'ggml-quants.c'))) return null;
  const key = createHash('sha256').update(flags.join(' ')).update(fs.readFileSync(DRIVER)).digest('hex').slice(0, 12);
  const dir = path.join(CACHE, 'quant-bench', key);
  const exe = path.join(dir, 'driver');
  if (fs.existsSync(exe)) return exe;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'ggml-version.h'), '#pragma once\n#define GGML_VERSION "bench"\n#define GGML_COMMIT "bench"\n');
  const inc = ['-I', dir, '-I', path.join(LLAMA_SRC, 'ggml', 'include'), '-I', path.join(LLAMA_SRC, 'ggml', 'src')];
  const objs: string[] = [];
  for (const [name, file] of [['ggml', path.join(LLAMA_SRC, 'ggml', 'src', 'ggml.c')], ['ggml-quants', path.join(LLAMA_SRC, 'ggml', 'src', 'ggml-quants.c')], ['driver', DRIVER]]) {
    const obj = path.join(dir, `${name}.o`);
    console.log(`  gcc ${flags.join(' ')} -c ${path.relative(ROOT, file)}`);
    execFileSync('gcc', [...flags, ...inc, '-c', file, '-o', obj], { stdio: 'inherit' });
    objs.push(obj);
  }
  execFileSync('gcc', ['-o', exe + '.tmp', ...objs, '-lm', '-lpthread'], { stdio: 'inherit' });
  fs.renameSync(exe + '.tmp', exe);
  return exe;
}

interface Timing {
  /** wall-clock seconds */
  wall: number;
  /** CPU seconds of the process (one busy thread: its own time, whatever else runs on the machine) */
  cpu: number;
}

/** best of `reps` runs of llama.cpp's reference for the type; writes outdir/TYPE.bin */
function runDriver(exe: string, input: string, n: number, reps: number, outdir: string, type: string): Timing {
  const out = execFileSync(exe, [input, String(n), String(reps), outdir, type], { encoding: 'utf8', maxBuffer: 1 << 20 });
  const r = JSON.parse(out.trim().split('\n')[0]) as { seconds: number; cpu: number };
  return { wall: r.seconds, cpu: r.cpu };
}

/** one timed run in this process */
async function timed(f: () => unknown | Promise<unknown>): Promise<Timing> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6 };
}

function minTiming(a: Timing, b: Timing): Timing {
  return { wall: Math.min(a.wall, b.wall), cpu: Math.min(a.cpu, b.cpu) };
}

const NONE: Timing = { wall: Infinity, cpu: Infinity };

/**
 * How much faster 2 busy threads finish 2 units of pure computation than 1 thread finishes 1 x 2:
 * ~2 on an idle 2-core machine, ~1 when other processes already use every core. Read 2T/1T with it.
 */
async function parallelCapacity(): Promise<number> {
  const code = `const { parentPort } = require('node:worker_threads');
    parentPort.on('message', (n) => { let s = 0; for (let i = 0; i < n; i++) s = (s + (i ^ (s >>> 3))) | 0; parentPort.postMessage(s); });`;
  const ws = [new Worker(code, { eval: true }), new Worker(code, { eval: true })];
  const work = (w: Worker, n: number) => new Promise((r) => { w.once('message', r); w.postMessage(n); });
  try {
    const n = 2e8;
    await Promise.all(ws.map((w) => work(w, 1e6)));
    let one = Infinity, two = Infinity;
    for (let r = 0; r < 3; r++) {
      let t0 = performance.now();
      await work(ws[0], 2 * n);
      one = Math.min(one, performance.now() - t0);
      t0 = performance.now();
      await Promise.all(ws.map((w) => work(w, n)));
      two = Math.min(two, performance.now() - t0);
    }
    return one / two;
  } finally {
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

const fmt = (v: number | undefined, w = 8) => (v === undefined ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(1)).padStart(w);
const ratio = (a: number | undefined, b: number | undefined, w = 6) => (a === undefined || b === undefined ? '-' : (a / b).toFixed(2) + 'x').padStart(w);

export async function run(args: string[]): Promise<void> {
  const mib = Number(arg(args, '--mib') ?? 256);
  const reps = Number(arg(args, '--reps') ?? 3);
  const types = (arg(args, '--types') ?? DEFAULT_TYPES.join(',')).split(',').map((t) => ggmlTypeByName(t)?.name ?? t);
  const n = Math.floor((mib * 2 ** 20) / 4 / 256) * 256;
  const mb = (n * 4) / 1e6;
  console.log(`quantize ${n} float32 values (${mib} MiB, seeded normal) per type; MB/s of float32 input; WebAssembly build: ${wasmVariant()}`);
  const x = seededNormal(n, 20240607);
  const plain = new Float32Array(x); // a non-shared copy for the single-thread runs

  // llama.cpp
  const dir = path.join(CACHE, 'quant-bench', 'run');
  fs.mkdirSync(dir, { recursive: true });
  const drivers = args.includes('--no-llama') ? [] : BUILDS.map((b) => ({ ...b, exe: buildDriver(b.flags) }));
  if (drivers.length && drivers.some((d) => !d.exe)) console.log(`  llama.cpp sources missing at ${path.relative(ROOT, LLAMA_SRC)} (node scripts/build-llama-cpp.mjs): llama.cpp columns skipped`);
  const input = path.join(dir, 'input.f32');
  if (drivers.some((d) => d.exe)) fs.writeFileSync(input, new Uint8Array(x.buffer));

  const pool = new QuantizePool(2);
  const rows: string[] = [];
  const cpuRows: string[] = [];
  const header = `  ${'type'.padEnd(6)} ${'llama.cpp -O2'.padStart(13)} ${'-O3 native'.padStart(10)}   ${'lowbit 1T'.padStart(9)} ${'ratio'.padStart(6)}   ${'lowbit 2T'.padStart(9)} ${'ratio'.padStart(6)} ${'2T/1T'.padStart(6)} ${'worker'.padStart(7)}   ${'TS ref'.padStart(7)} ${'ratio'.padStart(6)}   bytes vs llama.cpp`;
  try {
    for (const name of types) {
      const t = ggmlTypeByName(name);
      const codec = t ? ggmlCodec(t) : undefined;
      if (!t || !codec?.quantize) throw new Error(`unknown or dequantize-only type ${name}`);
      const rowLength = 4096 % t.blockSize === 0 ? 4096 : t.blockSize;
      const nRows = n / rowLength;
      const bytes = (n / t.blockSize) * t.typeSize;
      const heavy = t.blockSize === 256;
      // rounds alternate llama.cpp and lowbit so that load from other processes hits both alike; best of each
      const rounds = heavy ? Math.min(reps, 2) : reps;
      const cBest: Timing[] = drivers.map(() => NONE);
      const cFiles: (string | undefined)[] = drivers.map((d) => (d.exe ? path.join(dir, d.flags.join('').replace(/[^A-Za-z0-9]/g, '')) : undefined));
      for (const f of cFiles) if (f) fs.mkdirSync(f, { recursive: true });
      const out1 = new Uint8Array(bytes);
      let out2: Uint8Array = new Uint8Array(0);
      let t1 = NONE, t2 = NONE;
      await pool.quantizeRows(t, x.subarray(0, rowLength * 64), 64, rowLength); // start the workers
      let share = 0;
      for (let r = 0; r < rounds; r++) {
        drivers.forEach((d, i) => {
          if (d.exe) cBest[i] = minTiming(cBest[i], runDriver(d.exe, input, n, 1, cFiles[i]!, t.name));
        });
        t1 = minTiming(t1, await timed(() => codec.quantize!(plain, nRows, rowLength, out1))); // this thread (WebAssembly behind the codec)
        t2 = minTiming(t2, await timed(async () => (out2 = await pool.quantizeRows(t, x, nRows, rowLength)))); // 2 threads
        share = Math.max(share, pool.lastSplit.byWorkers / pool.lastSplit.ranges);
      }
      const rate = (x: Timing | undefined, k: keyof Timing) => (x && x[k] < Infinity ? mb / x[k] : undefined);
      const cRate = cBest.map((c) => rate(c, 'wall'));
      const w1 = mb / t1.wall;
      const w2 = mb / t2.wall;
      // scalar TypeScript reference on a slice
      const slice = Math.max(4096, Math.floor(n / (heavy ? 256 : 64) / 4096) * 4096);
      const ref = (legacyRefQuantizers[t.name] ?? kquantRefQuantizers[t.name] ?? ggmlReferenceQuantizer(t)!) as (s: Float32Array, r: number, l: number, o: Uint8Array) => void;
      const refOut = new Uint8Array((slice / t.blockSize) * t.typeSize);
      let tRef = NONE;
      for (let r = 0; r < 3; r++) tRef = minTiming(tRef, await timed(() => ref(plain.subarray(0, slice), slice / rowLength, rowLength, refOut)));
      const ts = (slice * 4) / 1e6 / tRef.wall;
      // bytes
      const checks: string[] = [];
      if (!Buffer.from(out1.buffer, out1.byteOffset, out1.length).equals(Buffer.from(out2.buffer, out2.byteOffset, out2.length))) checks.push('2T MISMATCH');
      if (!Buffer.from(refOut).equals(Buffer.from(out1.buffer, out1.byteOffset, refOut.length))) checks.push('TS ref MISMATCH');
      cFiles.forEach((f, i) => {
        if (!f) return;
        const c = fs.readFileSync(path.join(f, `${t.name}.bin`));
        checks.push(`${i === 0 ? '-O2' : '-O3'} ${c.length === bytes && c.equals(Buffer.from(out1.buffer, out1.byteOffset, bytes)) ? 'OK' : 'MISMATCH'}`);
      });
      const line = `  ${t.name.padEnd(6)} ${fmt(cRate[0], 13)} ${fmt(cRate[1], 10)}   ${fmt(w1, 9)} ${ratio(w1, cRate[0])}   ${fmt(w2, 9)} ${ratio(w2, cRate[0])} ${ratio(w2, w1)} ${(Math.round(share * 100) + '%').padStart(7)}   ${fmt(ts, 7)} ${ratio(ts, cRate[0])}   ${checks.join(', ') || '-'}`;
      if (!rows.length) console.log(header);
      rows.push(line);
      console.log(line);
      const sliceMb = (slice * 4) / 1e6;
      cpuRows.push(`  ${t.name.padEnd(6)} ${fmt(rate(cBest[0], 'cpu'), 13)} ${fmt(rate(cBest[1], 'cpu'), 10)}   ${fmt(mb / t1.cpu, 9)} ${ratio(mb / t1.cpu, rate(cBest[0], 'cpu'))}   ${fmt(sliceMb / tRef.cpu, 7)} ${ratio(sliceMb / tRef.cpu, rate(cBest[0], 'cpu'))}`);
    }
  } finally {
    await pool.close();
  }
  console.log('  ratio = lowbit / llama.cpp -O2 (same data, same run); llama.cpp and "1T" use one thread; "2T" = this thread + 1 worker, "worker" = share of the rows the worker took');
  console.log('  per CPU-second (one busy thread, so insensitive to what else runs on the machine):');
  console.log(`  ${'type'.padEnd(6)} ${'llama.cpp -O2'.padStart(13)} ${'-O3 native'.padStart(10)}   ${'lowbit 1T'.padStart(9)} ${'ratio'.padStart(6)}   ${'TS ref'.padStart(7)} ${'ratio'.padStart(6)}`);
  for (const r of cpuRows) console.log(r);
  console.log(`  parallel capacity now: 2 threads do ${(await parallelCapacity()).toFixed(2)}x the work of 1 on pure computation (2.00 = two idle cores)`);
}
