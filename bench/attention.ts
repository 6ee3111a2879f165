/**
 * `npm run bench -- attention [T=512] [heads=12] [headDim=64] [threads=1,2] [kvHeads=heads] [pos0=0]`: the causal
 * prefill attention (MatmulEngine.attention, wasm/matmul.ts attentionChunk: what eval, GPTQ calibration,
 * the allocation pass and AutoRound run) on T new tokens at positions pos0.. (calibration: T = 512 at 0;
 * eval at ctx 512: batches of 128), the cache laid out as the forward lays it (kvDim floats a position).
 * GFLOP/s counts the scores and the value sums: 2 x (T pos0 + T (T + 1) / 2 positions) x headDim x 2
 * flops a head. Best of 7 (wall), and the CPU time per call.
 */
import { xorshift32 } from '../src/rng.js';
import { kernelEngine } from './_kernels.js';

export async function run(args: string[]): Promise<void> {
  const T = Number(args[0] ?? 512);
  const nHeads = Number(args[1] ?? 12);
  const hd = Number(args[2] ?? 64);
  const threadList = (args[3] ?? '1,2').split(',').map(Number);
  const nKv = Number(args[4] ?? nHeads);
  const pos0 = Number(args[5] ?? 0);
  const next = xorshift32(3);
  const rand = () => next() / 2 ** 32 - 0.5;
  for (const threads of threadList) {
    const e = kernelEngine(threads);
    if (!e) return;
    const t0 = Date.now();
    while (threads > 1 && e.threadStats().ready < 1 && Date.now() - t0 < 20000) await new Promise((res) => setTimeout(res, 10));
    const qDim = nHeads * hd;
    const kvDim = nKv * hd;
    const q = Float32Array.from({ length: T * qDim }, () => 3 * rand());
    const kv = e.allocF32(2 * (pos0 + T) * kvDim, q)!;
    for (let i = 0; i < kv.array.length; i++) kv.array[i] = rand();
    const out = new Float32Array(T * qDim);
    const flops = 2 * nHeads * (T * pos0 + (T * (T + 1)) / 2) * hd * 2;
    const call = () => e.attention(q, T, pos0, nHeads, nKv, hd, kv.at, kv.at + (pos0 + T) * kvDim * 4, kvDim, 1 / Math.sqrt(hd), out);
    call();
    const reps = Math.max(1, Math.round(2e9 / flops));
    let best = Infinity;
    let bestCpu = Infinity;
    for (let r = 0; r < 7; r++) {
      const c0 = process.cpuUsage();
      const w0 = performance.now();
      for (let i = 0; i < reps; i++) call();
      best = Math.min(best, (performance.now() - w0) / reps);
      const c = process.cpuUsage(c0);
      bestCpu = Math.min(bestCpu, (c.user + c.system) / 1000 / reps);
    }
    let h = 0;
    for (let i = 0; i < out.length; i++) h = (Math.imul(h, 31) + new Int32Array(out.buffer, i * 4, 1)[0]) | 0;
    console.log(
      `attention T ${T} at ${pos0}, ${nHeads}/${nKv} heads of ${hd}, ${e.threads} thread(s), ${e.variant}: ${best.toFixed(2)} ms  ` +
        `${(flops / best / 1e6).toFixed(1)} GFLOP/s  (CPU ${bestCpu.toFixed(2)} ms a call)  out hash ${(h >>> 0).toString(16)}`,
    );
    e.close();
  }
}
