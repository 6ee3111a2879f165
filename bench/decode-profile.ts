/**
 * `npm run bench -- decode-profile [types=Q8_0,Q4_0] [threads=1] [tokens=128]`: where a decoded token's wall
 * time goes on the synthetic ~155M llama (LOWBIT_SYNTH=1.1b: the 1.1B shapes), as `lowbit generate` runs it
 * (`prepareDecode`, then one-token forwards at positions 5, 6, ... after a 5-token prompt). The engine's
 * matmul, attention and SwiGLU calls are timed by performance.now (a few calls a layer, so the timer
 * costs little); "outside the kernels" is the rest of the forward (TypeScript: norms, RoPE, KV store,
 * residual adds, copies). Prints the unwrapped time per token too, best of 3 passes each, and the first
 * pass's (the one `lowbit generate --stats` times, after its one warm-up decode: the JIT and the threads not yet warm),
 * also by stretches of 16 tokens with the chunks the workers ran. On 2+ threads, the hand-off of the timed passes: dispatches
 * to the workers a token, the calling thread's wait for the workers' chunks after its own (a token and a dispatch), the
 * share of dispatches whose workers had finished first, and the workers' sleeps a token (each a wake-up at the next job).
 */
import { useNodeThreads } from '../src/cli/threads.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import '../src/index.js';
import { MatmulEngine, type KernelWeight } from '../src/kernels/matmul.js';
import { KernelThreads } from '../src/kernels/threads.js';
import { modelFile } from './profile.js';

export async function run(args: string[]): Promise<void> {
  const types = (args[0] ?? 'Q8_0,Q4_0').split(',');
  const threads = Number(args[1] ?? 1);
  const N = Number(args[2] ?? 128);
  useNodeThreads();
  const E = MatmulEngine.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const type of types) {
    const src = fileSource(await modelFile(type));
    const { model } = await loadModel(src, { contextLength: N + 8, threads, activations: 'ggml' });
    model.prepareDecode();
    const toks = Array.from({ length: N + 5 }, (_, i) => 1 + ((i * 7919) % 31000));
    const acc = new Map<string, number>();
    const wrap = (name: string) => {
      const orig = E[name];
      E[name] = function (this: unknown, ...a: unknown[]) {
        const t0 = performance.now();
        try {
          return orig.apply(this, a);
        } finally {
          const w = a[2] as KernelWeight;
          // matmulF32: f32 weights outside the kernels' memory (copied in a block at a time: the 1.1B model in F32 does not fit its 4 GiB)
          // decodeInt / attentionOne: a decoded token's matmulInt / attention from their cached set-up (false: not run, ~0 µs)
          const key = name === 'matmulF32' ? `matmul F32 ${a[5]} x ${a[4]} (copied in)` : name.startsWith('matmul') || name === 'decodeInt' ? `matmul ${w.type.name} ${w.rows} x ${w.cols}` : name === 'attentionOne' ? 'attention' : name;
          acc.set(key, (acc.get(key) ?? 0) + performance.now() - t0);
        }
      };
      return () => (E[name] = orig);
    };
    const engine = MatmulEngine.get('relaxed') ?? MatmulEngine.get('simd');
    // the first pass by 16 tokens: ms a token and the chunks the workers ran a token (2+ threads)
    const stretches: string[] = [];
    const pass = (record = false) => {
      model.forward(toks.slice(0, 5), 0);
      acc.clear(); // the prompt's matmuls are not the decode's
      const t0 = performance.now();
      let ts = t0;
      let w0 = engine?.threadStats().workerChunks ?? 0;
      let s0 = engine?.threadStats().workerSleeps ?? 0;
      for (let p = 5; p < 5 + N; p++) {
        model.forward([toks[p]], p);
        if (record && ((p - 4) % 16 === 0 || p === 4 + N)) {
          const n = ((p - 5) % 16) + 1;
          const now = performance.now();
          const w = engine?.threadStats().workerChunks ?? 0;
          const sl = engine?.threadStats().workerSleeps ?? 0;
          stretches.push(`${(now - ts) / n >= 10 ? ((now - ts) / n).toFixed(1) : ((now - ts) / n).toFixed(2)}${threads > 1 ? ` (w ${((w - w0) / n).toFixed(0)}, s ${((sl - s0) / n).toFixed(1)})` : ''}`);
          [ts, w0, s0] = [now, w, sl];
        }
      }
      return (performance.now() - t0) / N;
    };
    // the first pass is what `lowbit generate` times (its KV positions mapped before and one warm-up decode
    // at position 0, as generate does)
    model.reserveKv(N + 5);
    model.forward([toks[0]], 0);
    const first = pass(true);
    let plain = Infinity;
    for (let r = 0; r < 3; r++) plain = Math.min(plain, pass());
    const undo = ['matmulInt', 'decodeInt', 'matmul', 'matmulF32', 'attention', 'attentionOne', 'siluMul'].map(wrap);
    let best = Infinity;
    let parts = new Map<string, number>();
    const s0 = engine?.threadStats();
    KernelThreads.timing = true;
    for (let r = 0; r < 3; r++) {
      const t = pass();
      if (t < best) [best, parts] = [t, new Map(acc)];
    }
    KernelThreads.timing = false;
    const s1 = engine?.threadStats();
    undo.forEach((u) => u());
    await src.close?.();
    let inKernels = 0;
    for (const v of parts.values()) inKernels += v / N;
    console.log(`llama ${process.env.LOWBIT_SYNTH === '1.1b' ? '1.1B' : '155M'} ${type}, ${threads} thread(s), ${N} tokens: ${(plain * 1000).toFixed(0)} µs per token (${(1000 / plain).toFixed(1)} tok/s), first pass ${(first * 1000).toFixed(0)} µs; timed pass ${(best * 1000).toFixed(0)} µs`);
    console.log(`  first pass by 16 tokens, ms a token${threads > 1 ? ' (chunks the workers ran a token, w; their sleeps a token, s)' : ''}: ${stretches.join(', ')}`);
    for (const [k, v] of [...parts.entries()].sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(30)} ${((v / N) * 1000).toFixed(0).padStart(6)} µs`);
    console.log(`  ${'outside the kernels'.padEnd(30)} ${((best - inKernels) * 1000).toFixed(0).padStart(6)} µs`);
    if (threads > 1 && s0 && s1) {
      // the 3 timed passes (prompts included: 5 tokens each, a few dispatches)
      const runs = s1.handOff.runs - s0.handOff.runs;
      const wait = s1.handOff.waitMs - s0.handOff.waitMs;
      const per = (v: number) => (v / (3 * N)).toFixed(1);
      console.log(
        `  hand-off: ${per(runs)} dispatches a token; the caller waited for the workers ${((wait * 1000) / (3 * N)).toFixed(0)} µs a token ` +
          `(${((wait * 1000) / Math.max(1, runs)).toFixed(1)} µs a dispatch); the workers finished first in ${((100 * (s1.handOff.workersFirst - s0.handOff.workersFirst)) / Math.max(1, runs)).toFixed(0)} % of them; ` +
          `${per(s1.workerSleeps - s0.workerSleeps)} worker sleeps a token`,
      );
    }
  }
  for (const v of ['relaxed', 'simd'] as const) MatmulEngine.get(v)?.close();
}
