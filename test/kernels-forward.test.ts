/**
 * The forward's elementwise steps in WebAssembly (wasm/matmul.ts rmsnormRows, addInto, ropeRows through
 * MatmulEngine.rmsnorm / addInto / ropeTabled) against their TypeScript references (model/llama.ts
 * rmsnorm and ropeTabled, the f32 residual add), bit for bit, in both builds, on odd shapes (tails of
 * the 4-row and 4-column loops), in place and not, in and out of kernel memory; rmsnorm and RoPE (job kind 19)
 * also on 2 threads, with the worker seen running chunks.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { useNodeThreads } from '../src/cli/threads.js';
import { rmsnorm, ropeTable, ropeTabled } from '../src/model/llama.js';
import type { LlamaConfig } from '../src/model/types.js';
import { xorshift32 } from '../src/rng.js';
import { repeatUntil, untilReady } from './worker-wait.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

function values(n: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  // wide magnitudes: sums whose f64 order matters, products that round differently with a fused multiply-add
  return Float32Array.from({ length: n }, () => ((next() / 2 ** 32 - 0.5) * 2) ** 3 * 2 ** ((next() % 24) - 12));
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} ${a[i]} vs ${b[i]}`);
}

/** a kernel-memory array holding v */
function kernelCopy(e: MatmulEngine, v: Float32Array, owner: object): Float32Array {
  const a = e.allocF32(v.length, owner)!.array;
  a.set(v);
  return a;
}

test('rmsnorm: the kernel gives the TypeScript bits (rows 1..9, sizes with tails, in place, in and out of kernel memory)', () => {
  let cases = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const owner = {};
    for (const size of [4, 6, 7, 64, 768, 770]) {
      for (const nTok of [1, 2, 3, 4, 5, 8, 9]) {
        const x = values(nTok * size, 17 * size + nTok);
        const w = values(size, size);
        const eps = nTok % 2 ? 1e-5 : 1e-6;
        const ref = new Float32Array(nTok * size);
        rmsnorm(ref, x, w, nTok, size, eps);
        // plain arrays (copied in and out)
        const out = new Float32Array(nTok * size);
        e.rmsnorm(out, x, w, nTok, size, eps);
        sameBits(out, ref, `${variant} size ${size} rows ${nTok}`);
        // kernel memory, out of place and in place
        const xk = kernelCopy(e, x, owner);
        const ok = e.allocF32(nTok * size, owner)!.array;
        e.rmsnorm(ok, xk, w, nTok, size, eps);
        sameBits(ok, ref, `${variant} size ${size} rows ${nTok} (kernel memory)`);
        // x in kernel memory, out not: x stays as it was
        const plainOut = new Float32Array(nTok * size);
        e.rmsnorm(plainOut, xk, w, nTok, size, eps);
        sameBits(plainOut, ref, `${variant} size ${size} rows ${nTok} (out of kernel memory)`);
        sameBits(xk, x, `${variant} size ${size} rows ${nTok} (x untouched)`);
        e.rmsnorm(xk, xk, w, nTok, size, eps);
        sameBits(xk, ref, `${variant} size ${size} rows ${nTok} (in place)`);
        cases++;
      }
    }
  }
  assert.equal(cases, variants.length * 42);
});

/**
 * body(e, variant, owner) on each build's engine with 2 threads (after its worker is ready), then the
 * assertion that the worker ran chunks of the job (`what` names them); back to 1 thread either way.
 */
async function onTwoThreads(what: string, body: (e: MatmulEngine, variant: string, owner: object) => void): Promise<void> {
  useNodeThreads();
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    e.setThreads(2);
    try {
      await untilReady(() => e.threadStats().ready);
      // a loaded machine can leave every chunk to the caller: run again (the bits are checked every time)
      // until the worker has taken one
      let ran = false;
      await repeatUntil(() => {
        const before = e.threadStats().workerChunks;
        body(e, variant, {});
        ran = e.threadStats().workerChunks > before;
      }, () => ran, 30000, 50);
      assert.ok(ran, `the worker ran ${what}`);
    } finally {
      e.setThreads(1);
    }
  }
}

test('rmsnorm on 2 threads (rows split in multiples of 4 from 2^16 values): the TypeScript bits, in place and not, the worker running rows', async () => {
  await onTwoThreads('rows', (e, variant, owner) => {
    for (const [nTok, size] of [[86, 770], [512, 768], [93, 1024]]) {
      const x = values(nTok * size, 5 * size + nTok);
      const w = values(size, size + 1);
      const ref = new Float32Array(nTok * size);
      rmsnorm(ref, x, w, nTok, size, 1e-5);
      const xk = kernelCopy(e, x, owner);
      const ok = e.allocF32(nTok * size, owner)!.array.fill(NaN);
      e.rmsnorm(ok, xk, w, nTok, size, 1e-5);
      sameBits(ok, ref, `${variant} ${nTok} x ${size}, 2 threads`);
      e.rmsnorm(xk, xk, w, nTok, size, 1e-5);
      sameBits(xk, ref, `${variant} ${nTok} x ${size}, 2 threads, in place`);
    }
  });
});

test('residual add: the kernel gives the f32 sums of the TypeScript loop; false (nothing done) outside kernel memory', () => {
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const owner = {};
    for (const n of [1, 5, 16, 33, 768 * 3 + 7]) {
      const a = values(n, n);
      const b = values(n, n + 1);
      const ref = Float32Array.from(a);
      for (let i = 0; i < n; i++) ref[i] += b[i];
      const ak = kernelCopy(e, a, owner);
      const bk = kernelCopy(e, b, owner);
      assert.equal(e.addInto(ak, bk, n), true);
      sameBits(ak, ref, `${variant} n ${n}`);
      const plain = Float32Array.from(a);
      assert.equal(e.addInto(plain, bk, n), false);
      sameBits(plain, a, `${variant} n ${n} untouched`);
    }
  }
});

test('RoPE from a table: the kernel gives ropeTabled\'s bits (normal and neox pairs, partial rotary dims, positions past 0)', () => {
  let cases = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const owner = {};
    for (const style of ['normal', 'neox'] as const) {
      for (const [headDim, ropeDim] of [[64, 64], [16, 8], [12, 4]]) {
        const c = { ropeDim, headDim, ropeStyle: style, ropeMscale: style === 'neox' ? 1.25 : undefined } as unknown as LlamaConfig;
        const freq = Float64Array.from({ length: ropeDim / 2 }, (_, i) => Math.pow(10000, (-2 * i) / ropeDim));
        const table = ropeTable(c, freq, 40);
        for (const [nTok, nHeads, pos0] of [[1, 1, 0], [3, 2, 5], [7, 3, 33]]) {
          const v = values(nTok * nHeads * headDim, nTok * 31 + headDim + pos0);
          const ref = Float32Array.from(v);
          ropeTabled(c, table, ref, nTok, nHeads, pos0);
          const vk = kernelCopy(e, v, owner);
          assert.equal(e.ropeTabled(vk, nTok, nHeads, headDim, ropeDim / 2, pos0, table.cos, table.sin, style === 'normal'), true);
          sameBits(vk, ref, `${variant} ${style} head ${headDim} rope ${ropeDim} tokens ${nTok} heads ${nHeads} at ${pos0}`);
          cases++;
        }
      }
    }
    // an odd number of pairs, or rows outside kernel memory: not done (the caller runs the reference)
    const c = { ropeDim: 6, headDim: 6, ropeStyle: 'normal' } as unknown as LlamaConfig;
    const t = ropeTable(c, Float64Array.from([1, 0.1, 0.01]), 4);
    assert.equal(e.ropeTabled(kernelCopy(e, values(6, 1), owner), 1, 1, 6, 3, 0, t.cos, t.sin, true), false);
    const t8 = ropeTable({ ropeDim: 8, headDim: 8, ropeStyle: 'normal' } as unknown as LlamaConfig, Float64Array.from([1, 0.1, 0.01, 0.001]), 4);
    assert.equal(e.ropeTabled(values(8, 2), 1, 1, 8, 4, 0, t8.cos, t8.sin, true), false);
  }
  assert.equal(cases, variants.length * 18);
});

test('RoPE from a table on 2 threads (tokens split, job kind 19): ropeTabled\'s bits, the worker running tokens', async () => {
  let cases = 0;
  await onTwoThreads('tokens', (e, variant, owner) => {
    for (const style of ['normal', 'neox'] as const)
      for (const [headDim, ropeDim, nHeads, nTok, pos0] of [[64, 64, 12, 512, 0], [64, 32, 8, 131, 7], [128, 128, 4, 97, 300]]) {
        const c = { ropeDim, headDim, ropeStyle: style, ropeMscale: style === 'neox' ? 1.25 : undefined } as unknown as LlamaConfig;
        const freq = Float64Array.from({ length: ropeDim / 2 }, (_, i) => Math.pow(10000, (-2 * i) / ropeDim));
        const table = ropeTable(c, freq, pos0 + nTok);
        const v = values(nTok * nHeads * headDim, nTok * 31 + headDim + pos0);
        const ref = Float32Array.from(v);
        ropeTabled(c, table, ref, nTok, nHeads, pos0);
        const vk = kernelCopy(e, v, owner);
        assert.equal(e.ropeTabled(vk, nTok, nHeads, headDim, ropeDim / 2, pos0, table.cos, table.sin, style === 'normal'), true);
        sameBits(vk, ref, `${variant} ${style} head ${headDim} rope ${ropeDim} heads ${nHeads} tokens ${nTok} at ${pos0}, 2 threads`);
        cases++;
      }
  });
  assert.equal(cases, variants.length * 6);
});
