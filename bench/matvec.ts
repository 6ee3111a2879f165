/**
 * `npm run bench -- matvec [types=Q8_0,Q6_K,Q4_0,Q4_K] [k=768] [threads=1]`: the one-token integer matvec
 * (MatmulEngine.matmulInt on the decode copy made by prepareDecode, as `lowbit generate` runs it) alone,
 * on a weight that stays in cache (512 rows) and on one that does not (65536 rows, ~50 MB in Q8_0).
 * GB/s counts the weight's bytes in the file's layout (rows x rowBytes), as bench decode does; "copy
 * GB/s" the bytes of the decode copy actually read. About the same GB/s in cache and from memory: the
 * kernel is compute-bound (more arithmetic per byte would not be hidden); much less from memory: it is
 * at the memory bandwidth, and only fewer bytes help.
 */
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { kernelEngine, storeRandomWeight } from './_kernels.js';

export async function run(args: string[]): Promise<void> {
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
