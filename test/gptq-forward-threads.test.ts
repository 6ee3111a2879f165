/**
 * The calibration forward's RoPE from a table on 2 threads (MatmulEngine.ropeTabled, matmul pool job
 * kind 19: the tokens split between the threads from 2^16 values) against its TypeScript reference
 * model/llama.ts ropeTabled, bit for bit, in both builds: normal and neox pairs, a partial rotary
 * dimension, positions past 0, token counts that leave a short last chunk; the worker ran tokens.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { hasRelaxedSimd } from '../src/env.js';
import { ropeTable, ropeTabled } from '../src/model/llama.js';
import type { LlamaConfig } from '../src/model/types.js';
import { useNodeThreads } from '../src/node.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

function values(n: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  return Float32Array.from({ length: n }, () => ((next() / 2 ** 32 - 0.5) * 2) ** 3 * 2 ** ((next() % 24) - 12));
}

test('RoPE from a table on 2 threads (tokens split, job kind 19): ropeTabled\'s bits, the worker running tokens', async () => {
  useNodeThreads();
  let cases = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const owner = {};
    e.setThreads(2);
    try {
      const t0 = Date.now();
      while (e.threadStats().ready < 1 && Date.now() - t0 < 20000) await new Promise((res) => setTimeout(res, 10));
      const before = e.threadStats().workerChunks;
      for (const style of ['normal', 'neox'] as const)
        for (const [headDim, ropeDim, nHeads, nTok, pos0] of [[64, 64, 12, 512, 0], [64, 32, 8, 131, 7], [128, 128, 4, 97, 300]]) {
          const c = { ropeDim, headDim, ropeStyle: style, ropeMscale: style === 'neox' ? 1.25 : undefined } as unknown as LlamaConfig;
          const freq = Float64Array.from({ length: ropeDim / 2 }, (_, i) => Math.pow(10000, (-2 * i) / ropeDim));
          const table = ropeTable(c, freq, pos0 + nTok);
          const v = values(nTok * nHeads * headDim, nTok * 31 + headDim + pos0);
          const ref = Float32Array.from(v);
          ropeTabled(c, table, ref, nTok, nHeads, pos0);
          const vk = e.allocF32(v.length, owner)!.array;
          vk.set(v);
          assert.equal(e.ropeTabled(vk, nTok, nHeads, headDim, ropeDim / 2, pos0, table.cos, table.sin, style === 'normal'), true);
          const a = new Uint32Array(vk.buffer, vk.byteOffset, vk.length);
          const b = new Uint32Array(ref.buffer, ref.byteOffset, ref.length);
          for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${variant} ${style} head ${headDim} rope ${ropeDim} heads ${nHeads} tokens ${nTok} at ${pos0}: element ${i} ${vk[i]} vs ${ref[i]}`);
          cases++;
        }
      assert.ok(e.threadStats().workerChunks > before, 'the worker ran tokens');
    } finally {
      e.setThreads(1);
    }
  }
  assert.equal(cases, variants.length * 6);
});
