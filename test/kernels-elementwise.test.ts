/**
 * Element-wise kernels on the threads (src/kernels/matmul.ts siluMul, logSoftmaxRows; wasm/matmul.ts job
 * kinds 11 and 12): the same bits on 1 and 2 threads, against their scalar TypeScript references.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import { logSoftmaxParts } from '../src/eval/perplexity.js';
import '../src/index.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

function normals(n: number, seed: number, scale: number): Float32Array {
  const next = xorshift32(seed);
  const r = () => next() / 2 ** 32;
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()));
}

/** the engine's result of fn on `threads` threads (set back to 1 after) */
function onThreads<T>(e: MatmulEngine, threads: number, fn: () => T): T {
  e.setThreads(threads);
  try {
    return fn();
  } finally {
    e.setThreads(1);
  }
}

test('siluMul on 2 threads (element ranges, job kind 11) = one call, bit for bit; within 4 ulp-ish of silu(g) * u', () => {
  useNodeThreads();
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const n of [65536 + 3, 300001]) {
      const g = normals(n, n, 4);
      const u = normals(n, n + 1, 1);
      const one = onThreads(e, 1, () => {
        const a = g.slice();
        e.siluMul(a, u, n);
        return a;
      });
      const two = onThreads(e, 2, () => {
        const a = g.slice();
        e.siluMul(a, u, n);
        return a;
      });
      assert.deepEqual(two, one, `${variant} n=${n}`);
      for (let i = 0; i < n; i++) {
        const want = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
        assert.ok(Math.abs(one[i] - want) <= 1e-6 * Math.abs(want) + 1e-30, `${variant} [${i}]: ${one[i]} vs ${want}`);
      }
    }
  }
});


test('logSoftmaxRows (rows on the threads, job kind 12) = the per-row scan and logSumExp bit for bit, ties to the first index, 1 and 2 threads', () => {
  useNodeThreads();
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const [rows, n] of [[3, 5], [7, 1001], [37, 32000]]) {
      const x = normals(rows * n, rows + n, 3);
      // row 0: its max twice (the first one wins); row 1: the max in the scalar tail; row 2: all equal
      if (n > 4) {
        x[3] = x[n - 2] = 50;
        x[n + n - 1] = 60;
        x.fill(-2, 2 * n, 3 * n);
      }
      for (const threads of [1, 2]) {
        const got = onThreads(e, threads, () => {
          const p = e.logSoftmaxRows(x, rows, n);
          return { max: p.max.slice(), lse: p.lse.slice(), argmax: p.argmax.slice() };
        });
        for (let r = 0; r < rows; r++) {
          const [max, lse, imax] = logSoftmaxParts(x, r * n, n, e); // the perplexity's own scalar scan, with this engine's logSumExp
          const label = `${variant} rows=${rows} n=${n} threads=${threads} row ${r}`;
          assert.equal(got.max[r], max, label);
          assert.equal(got.argmax[r], imax, label);
          assert.equal(got.lse[r], lse, label);
          let sum = 0;
          for (let i = 0; i < n; i++) sum += Math.exp(x[r * n + i] - max);
          assert.ok(Math.abs(got.lse[r] - Math.log(sum)) <= 1e-6 * Math.max(1, Math.abs(Math.log(sum))), label);
        }
        if (n > 4) assert.deepEqual([got.argmax[0], got.argmax[1], got.argmax[2]], [3, n - 1, 0]);
      }
    }
  }
});
