/**
 * GPTQ's own phase, without the forward passes: the seven linears of one layer of the bench gptq model
 * (dim 768, hidden 2816; q/k/v and gate/up share their Hessian as in the pipeline) quantized to int4 g128
 * with the clip search, from synthetic Hessians (2 X^T X / N of seeded correlated inputs, N tokens), through
 * the pipeline's gptqBlocksParallel (its rows split over `threads` threads). Prints seconds per step of
 * each linear (factor, rows) and a sha256 of all the bytes (must not change with speed work, on 1 or 2
 * threads).
 *
 *   npm run bench -- gptq-phase [layers=1] [threads=2] [tokens=1024]
 */
import { createHash } from 'node:crypto';
import { finishHessian, gptqFactor } from '../src/algos/gptq.js';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { hessianAccumulator } from '../src/kernels/gptq.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { useNodeThreads } from '../src/node.js';
import { GptqPool } from '../src/cli/gptq-pool.js';
import { gptqBlocksParallel } from '../src/pipeline/gptq-parts.js';
import { resolveScheme } from '../src/quant/registry.js';
import { DIM, HIDDEN, normal } from './gptq.js';

/** 2 X^T X / N of N tokens k wide: a few shared directions plus noise, channel scales varied (some large) */
function hessian(k: number, nTok: number, seed: number): Float64Array {
  const rnd = normal(seed);
  const dirs = 16;
  const basis = Float32Array.from({ length: dirs * k }, rnd);
  const scale = Float32Array.from({ length: k }, (_, i) => (i % 97 === 5 ? 6 : 0.5 + Math.abs(rnd())));
  const x = new Float32Array(nTok * k);
  for (let t = 0; t < nTok; t++) {
    const c = Float32Array.from({ length: dirs }, rnd);
    for (let i = 0; i < k; i++) {
      let v = rnd();
      for (let d = 0; d < dirs; d++) v += 0.5 * c[d] * basis[d * k + i];
      x[t * k + i] = v * scale[i];
    }
  }
  const acc = hessianAccumulator(k, nTok, MatmulEngine.get());
  acc.add(x, nTok);
  const h = acc.result();
  finishHessian(h, k, nTok);
  return h;
}

export async function run(args: string[]): Promise<void> {
  const layers = Number(args[0] ?? 1);
  const threads = Number(args[1] ?? 2);
  const nTok = Number(args[2] ?? 1024);
  useNodeThreads();
  MatmulEngine.get()?.setThreads(threads);
  const scheme = resolveScheme('int4_g128');
  const target = `scheme:${scheme.id}`;
  const workers = threads > 1 ? new GptqPool(threads - 1) : undefined;
  const hash = createHash('sha256');
  const rnd = normal(4242);
  const weight = (n: number, k: number) => Float32Array.from({ length: n * k }, () => rnd() / Math.sqrt(k));
  const linears: [string, number, number, string][] = [
    ['attn_q', DIM, DIM, 'x'],
    ['attn_k', DIM, DIM, 'x'],
    ['attn_v', DIM, DIM, 'x'],
    ['attn_output', DIM, DIM, 'o'],
    ['ffn_gate', HIDDEN, DIM, 'f'],
    ['ffn_up', HIDDEN, DIM, 'f'],
    ['ffn_down', DIM, HIDDEN, 'd'],
  ];
  let total = 0;
  const per = new Map<string, { factor: number; rows: number }>();
  for (let l = 0; l < layers; l++) {
    const hs = new Map<string, Float64Array>();
    for (const [, , k, src] of linears) if (!hs.has(src)) hs.set(src, hessian(k, nTok, 1000 * l + src.charCodeAt(0)));
    for (const [name, n, k, src] of linears) {
      const h = hs.get(src)!;
      const diag = Float32Array.from({ length: k }, (_, i) => h[i * k + i]);
      const w = weight(n, k);
      const codec = blockCodecFor(scheme, k);
      const t0 = performance.now();
      gptqFactor(h, k, { percDamp: 0.01 });
      const t1 = performance.now();
      const r = await gptqBlocksParallel(w, n, k, h, codec, target, { percDamp: 0.01, blockSize: 128, clipWeights: diag }, workers);
      const t2 = performance.now();
      hash.update(r.bytes);
      const p = per.get(name) ?? { factor: 0, rows: 0 };
      p.factor += (t1 - t0) / 1000;
      p.rows += (t2 - t1) / 1000;
      per.set(name, p);
      total += (t2 - t0) / 1000;
    }
  }
  await workers?.close();
  for (const [name, p] of per) console.log(`  ${name.padEnd(12)} factor ${p.factor.toFixed(2).padStart(6)} s  rows ${p.rows.toFixed(2).padStart(6)} s`);
  console.log(`GPTQ phase, ${layers} layer(s), ${threads} thread(s): ${total.toFixed(2)} s (${(total / layers).toFixed(2)} s per layer); sha256 ${hash.digest('hex').slice(0, 16)}`);
}
