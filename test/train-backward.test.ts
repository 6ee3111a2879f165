/**
 * The training backward's speed paths give the bytes of the paths they replace (AutoRound's block
 * objective runs on them, and its output must not move):
 *  - gemmTA (dW = dyᵀ x with dy read in place, wasm/train.ts gemmT and the threaded product's word 12)
 *    is transpose-then-gemm bit for bit, in both builds, on 1 and 2 threads, with row / column tails,
 *    strides, offsets, accumulating or not;
 *  - TrainModel's linear backward through gemmTA gives the gradients of the transposed path.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hasRelaxedSimd } from '../src/env.js';
import { setWasmVariant } from '../src/kernels/wasm.js';
import { wasmBackend } from '../src/train/gemm.js';
import { xorshift32 } from '../src/rng.js';

const bitsOf = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

test('gemmTA (A read transposed in place) is transpose + gemm bit for bit (builds, threads, tails, strides, accumulate)', async () => {
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  const r = xorshift32(11);
  const rnd = () => (r() / 2 ** 32 - 0.5) * 4;
  const variants = hasRelaxedSimd() ? (['simd', 'relaxed'] as const) : (['simd'] as const);
  let cases = 0;
  for (const variant of variants) {
    setWasmVariant(variant);
    try {
      // [m, k, n, threads]: m = rows of C (of W), k = tokens (rows of dy), n = columns (of x); 4-row tiles and a
      // 1..3-row tail, 64-column panels with 8-column groups and a 4 / 1-column tail, 2 threads with the product cut in row blocks
      for (const [m, k, n, threads] of [[4, 3, 8, 1], [7, 9, 13, 1], [13, 70, 67, 1], [37, 96, 131, 2], [96, 64, 72, 2], [66, 130, 41, 2]]) {
        const be = wasmBackend(1 << 19, threads)!;
        if (!be.gemmTA) assert.fail('the wasm backend has gemmTA');
        await be.ready?.();
        const lda = m + 3, ldb = n + 5, ldc = n + 2, ao = 5, bo = 3, co = 7;
        const a = be.alloc(ao + k * lda) as Float32Array, b = be.alloc(bo + k * ldb) as Float32Array, c = be.alloc(co + m * ldc) as Float32Array;
        for (const x of [a, b, c]) for (let i = 0; i < x.length; i++) x[i] = rnd();
        const at = be.alloc(m * k) as Float32Array; // Aᵀ copied: m x k
        const want = be.alloc(c.length) as Float32Array;
        const got = be.alloc(c.length) as Float32Array;
        for (let rep = 0; rep < (threads > 1 ? 200 : 1) && !(rep > 0 && (be.workerChunks?.() ?? 0) > 0); rep++)
          for (const accumulate of [true, false]) {
            be.transpose(at, 0, k, a, ao, lda, k, m);
            want.set(c);
            be.gemm(want, co, ldc, at, 0, k, b, bo, ldb, m, k, n, accumulate);
            got.set(c);
            assert.equal(be.gemmTA(got, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate), true);
            assert.deepEqual(bitsOf(got), bitsOf(want), `${variant} ${m}x${k}x${n}, ${threads} thread(s), accumulate ${accumulate}`);
            cases++;
          }
        if (threads > 1) assert.ok((be.workerChunks?.() ?? 0) > 0, `the worker ran chunks (${m}x${k}x${n} ${variant})`);
        // past the packing scratch: not taken (the caller transposes)
        assert.equal(be.gemmTA(got, 0, 1, a, 0, 1, b, 0, 1, 1, 9000, 1, false), false);
        be.close?.();
      }
    } finally {
      setWasmVariant(undefined);
    }
  }
  assert.ok(cases >= 12);
});

test('freshGradients: layerBackwardOn writes the layer\'s gradients, equal to zeroGrads then layerBackwardOn (wasm and f32 reference, 1 and 2 windows, input gradient on and off)', async () => {
  const { TrainModel, trainModelFloats } = await import('../src/train/llama-grad.js');
  const { referenceBackend } = await import('../src/train/gemm.js');
  // one layer, 12 tokens, dims that leave 4-row and 8-column tails
  const c = { dim: 20, hiddenDim: 28, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 1, seqLen: 12, headDim: 5, normEps: 1e-5, ropeTheta: 10000, ropeDim: 4, ropeStyle: 'normal' as const, tiedOutput: true };
  const ctx = 12;
  const r = xorshift32(3);
  const rnd = () => (r() / 2 ** 32 - 0.5) * 2;
  let checked = 0;
  for (const be of [wasmBackend(2 * trainModelFloats(c, { batch: 1, ctx }), 1)!, referenceBackend('f32')])
    for (const inputGradient of [false, true]) {
      const m = new TrainModel(c, be, { batch: 1, ctx });
      for (let i = 0; i < m.params.length; i++) m.params[i] = rnd();
      m.inputGradient = inputGradient;
      const xs = [0, 1].map(() => Float32Array.from({ length: ctx * c.dim }, rnd));
      const ds = [0, 1].map(() => Float32Array.from({ length: ctx * c.dim }, rnd));
      const run = (fresh: boolean, windows: number) => {
        for (let i = 0; i < m.grads.length; i++) m.grads[i] = 1e3 + i; // stale values: must not leak into the layer's gradients
        if (fresh) assert.equal(m.freshGradients(), true);
        else m.zeroGrads();
        for (let w = 0; w < windows; w++) {
          m.layerForwardOn(0, xs[w]);
          m.layerBackwardOn(0, ds[w]);
        }
        return Float64Array.from(m.grads);
      };
      for (const windows of [1, 2]) {
        const want = run(false, windows);
        const got = run(true, windows);
        for (const t of m.tensors) {
          if (!t.name.startsWith('blk.0.')) continue; // the layer's tensors (the others are left as they are)
          if (!inputGradient && t.name === 'blk.0.attn_norm.weight') continue; // not computed without the input gradient
          for (let e = t.offset; e < t.offset + t.size; e++)
            if (!(got[e] === want[e])) assert.fail(`${be.name}, ${windows} window(s), input gradient ${inputGradient}: ${t.name}[${e - t.offset}] ${got[e]} != ${want[e]}`);
          checked++;
        }
      }
    }
  assert.equal(checked, 4 * 2 * 9 - 2 * 2);
});
