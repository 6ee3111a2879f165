/**
 * `npm run bench -- matvec [types=Q8_0,Q6_K,Q4_0,Q4_K] [k=768] [threads=1]`: the one-token integer matvec
 * (MatmulEngine.matmulInt on the decode copy made by prepareDecode, as `lowbit generate` runs it) alone,
 * on a weight that stays in cache (512 rows) and on one that does not (65536 rows, ~50 MB in Q8_0).
 * GB/s counts the weight's bytes in the file's layout (rows x rowBytes), as bench decode does; "copy
 * GB/s" the bytes of the decode copy actually read. About the same GB/s in cache and from memory: the
 * kernel is compute-bound (more arithmetic per byte would not be hidden); much less from memory: it is
 * at the memory bandwidth, and only fewer bytes help.
 *
 * `npm run bench -- matvec dram [types=Q4_0,Q8_0,F32] [threads=1,2] [MB=640] [rounds=5] [strands=1,4]`: the
 * DRAM-honest case. Many distinct weights of the 155M decode's shapes (5632 x 768: gate | up; 768 x 2816:
 * down), ~MB of file bytes in all, each with its own decode copy (prepareDecode), cycled so none stays in
 * cache: one-token matmulInt (F32: matmul, its rows in place in 4 strands) as `lowbit generate` runs them.
 * Per thread count, the block-32 copies' strand counts (MatmulEngine.q32Strands) alternate `rounds` times in
 * one process; GB/s of file bytes and of copy bytes per pass, and the pairs' ratio to the first strand
 * count. Each type runs in its own process (the weights of all three do not fit one 4 GiB memory).
 */
import { spawnSync } from 'node:child_process';
import { type KernelWeight } from '../src/kernels/matmul.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { kernelEngine, storeRandomWeight } from './_kernels.js';

export async function run(args: string[]): Promise<void> {
  if (args[0] === 'dram') return dram(args.slice(1));
  const types = (args[0] ?? 'Q8_0,Q6_K,Q4_0,Q4_K').split(',');
  const k = Number(args[1] ?? 768);
  const threads = Number(args[2] ?? 1);
  const e = kernelEngine(threads);
  if (!e) return;
  console.log(`one-token matvec (matmulInt, decode copy), K = ${k}, ${e.threads} thread(s), ${e.variant} build; best of 5`);
  const next = xorshift32(7);
  for (const name of types) {
    const type = ggmlTypeByName(name);
    const codec = type && ggmlCodec(type);
    if (!type || !codec?.quantize) {
      console.log(`  ${name}: no such quantizable type`);
      continue;
    }
    for (const n of [512, 65536]) {
      const { w, rowBytes: rb } = storeRandomWeight(e, type, codec, n, k, next);
      const copy = e.prepareDecode(w) || n * rb;
      const x = Float32Array.from({ length: k }, (_, i) => Math.sin(i));
      const y = new Float32Array(n);
      e.matmulInt(y, x, w, 1);
      const reps = Math.max(3, Math.round(5e8 / (n * rb)));
      let best = Infinity;
      let bestCpu = Infinity;
      for (let r = 0; r < 5; r++) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < reps; i++) e.matmulInt(y, x, w, 1, true);
        best = Math.min(best, (performance.now() - t0) / 1000 / reps);
        const c = process.cpuUsage(c0);
        bestCpu = Math.min(bestCpu, (c.user + c.system) / 1e6 / reps);
      }
      console.log(
        `  ${name.padEnd(6)} ${String(n).padStart(6)} rows ${((n * rb) / 1e6).toFixed(2).padStart(7)} MB  ${(best * 1e6).toFixed(1).padStart(8)} µs  ` +
          `${((n * rb) / best / 1e9).toFixed(1).padStart(5)} GB/s  copy ${((copy / (n * rb)) * 100 - 100).toFixed(0).padStart(3)} % larger, ${(copy / best / 1e9).toFixed(1).padStart(5)} GB/s` +
          (threads === 1 ? `  (CPU time: ${((n * rb) / bestCpu / 1e9).toFixed(1).padStart(5)} GB/s)` : ''),
      );
    }
  }
  e.close();
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1];

async function dram(args: string[]): Promise<void> {
  const types = (args[0] ?? 'Q4_0,Q8_0,F32').split(',');
  if (types.length > 1) {
    for (const t of types) spawnSync(process.execPath, [...process.execArgv, process.argv[1], 'matvec', 'dram', t, ...args.slice(1)], { stdio: 'inherit' });
    return;
  }
  const threadList = (args[1] ?? '1,2').split(',').map(Number);
  const mb = Number(args[2] ?? 640);
  const rounds = Number(args[3] ?? 5);
  const name = types[0];
  const type = ggmlTypeByName(name);
  const codec = type && ggmlCodec(type);
  const f32 = name === 'F32';
  const strands = f32 ? [0] : (args[4] ?? '1,4').split(',').map(Number);
  if (!type || (!f32 && !codec?.quantize)) {
    console.log(`  ${name}: no such quantizable type`);
    return;
  }
  const e = kernelEngine(1);
  if (!e) return;
  const shapes = [[5632, 768], [768, 2816]];
  const next = xorshift32(11);
  // one weight's bytes per shape, stored many times (the addresses, not the values, decide what is cached)
  const data = shapes.map(([n, k]) => {
    const src = Float32Array.from({ length: n * k }, () => next() / 2 ** 32 - 0.5);
    if (f32) return new Uint8Array(src.buffer);
    const bytes = new Uint8Array(n * ggmlRowBytes(type, k));
    codec!.quantize!(src, n, k, bytes);
    return bytes;
  });
  const ws: KernelWeight[] = [];
  let bytes = 0;
  let copyBytes = 0;
  for (let i = 0; bytes < mb * 1e6; i++) {
    const s = i % 2;
    const [n, k] = shapes[s];
    const w = e.storeWeight(type, n, k, data[s].length / n, data[s]);
    if (!w) throw new Error('kernel memory is full');
    ws.push(w);
    bytes += data[s].length;
    copyBytes += e.prepareDecode(w) || data[s].length;
  }
  // all gate | up shapes, then all down shapes: one rounding of the token per shape (sameInput)
  ws.sort((a, b) => b.rows - a.rows);
  const xs = new Map<number, Float32Array>(shapes.map(([, k]) => [k, Float32Array.from({ length: k }, (_, i) => Math.sin(i))]));
  const ys = new Map<number, Float32Array>(shapes.map(([n]) => [n, new Float32Array(n)]));
  const pass = (): number => {
    const t0 = performance.now();
    if (f32) for (const w of ws) e.matmul(ys.get(w.rows)!, xs.get(w.cols)!, w, 1);
    else for (const w of ws) e.matmulInt(ys.get(w.rows)!, xs.get(w.cols)!, w, 1, true);
    return (performance.now() - t0) / 1000;
  };
  console.log(
    `one-token ${name} matvecs from DRAM: ${ws.length} weights (5632 x 768, 768 x 2816), ${(bytes / 1e6).toFixed(0)} MB of file bytes, ` +
      `${(copyBytes / 1e6).toFixed(0)} MB of copies, ${e.variant} build; ${rounds} rounds alternated`,
  );
  for (const t of threadList) {
    e.setThreads(t);
    pass(); // warm: compiles, pages
    const secs: number[][] = strands.map(() => []);
    for (let r = 0; r < rounds; r++) {
      strands.forEach((st, i) => {
        if (!f32) e.q32Strands = st;
        secs[i].push(pass());
      });
    }
    e.q32Strands = 4;
    strands.forEach((st, i) => {
      const best = Math.min(...secs[i]);
      const med = median(secs[i]);
      const ratio = i === 0 ? '' : `, pairs ${median(secs[i].map((s, r) => secs[0][r] / s)).toFixed(3)}x of strands ${strands[0]}`;
      console.log(
        `  ${e.threads} thread(s) ${f32 ? 'F32 rows in place (4 strands)' : `strands ${st}`}: file ${(bytes / med / 1e9).toFixed(2)} GB/s median, ${(bytes / best / 1e9).toFixed(2)} best; ` +
          `copy ${(copyBytes / med / 1e9).toFixed(2)} / ${(copyBytes / best / 1e9).toFixed(2)} GB/s${ratio}`,
      );
    });
  }
  e.close();
}
