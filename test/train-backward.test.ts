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
import { repeatUntil } from './worker-wait.js';

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
        await repeatUntil(() => {
          for (const accumulate of [true, false]) {
            be.transpose(at, 0, k, a, ao, lda, k, m);
            want.set(c);
            be.gemm(want, co, ldc, at, 0, k, b, bo, ldb, m, k, n, accumulate);
            got.set(c);
            assert.equal(be.gemmTA!(got, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate), true);
            assert.deepEqual(bitsOf(got), bitsOf(want), `${variant} ${m}x${k}x${n}, ${threads} thread(s), accumulate ${accumulate}`);
            cases++;
          }
        }, () => threads === 1 || (be.workerChunks?.() ?? 0) > 0);
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

test('the SiLU and softmax kernels\' two-lane exp is the one-lane kernel\'s (fdlibm) lane by lane; the kernels on odd lengths and extreme arguments are the TypeScript loops bit for bit', async () => {
  const { wasmExp, wasmExp2, siluForwardRef, siluBackwardRef, softmaxRowsRef } = await import('../src/train/gemm.js');
  if (wasmExp2(0, 0) === null) return; // no WebAssembly SIMD here
  const r = xorshift32(23);
  const f32 = new Float32Array(1);
  // every path of fdlibm's reduction and its edges (|x| < 2^-28, ln2 / 2, 1.5 ln2, 709.78, subnormal results, inf, NaN)
  const specials = [0, -0, 1e-300, -1e-300, 2 ** -28, -(2 ** -28), 2 ** -29, -(2 ** -29), 0.34657359, -0.34657359, 0.3465736, -0.3465736, 1.0397, -1.0397, 1.03972077, -1.03972077,
    709.78, 709.79, -745.13, -745.14, -708.3, -708.5, -720, -707.7, Infinity, -Infinity, NaN, 88.7, -103.9, 1, -1, 0.5, -0.5];
  const xs = [...specials, ...Array.from({ length: 400000 }, (_, i) => {
    const x = (r() / 2 ** 32 - 0.5) * [2, 60, 1500, 40, 1e-6][i % 5];
    f32[0] = x;
    return i % 5 === 3 ? f32[0] : x;
  })];
  const same = (a: number, b: number) => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
  for (let i = 0; i < xs.length; i++) {
    // every argument in both lanes, beside a neighbour of another path
    const a = xs[i], b = xs[(i * 7 + 3) % xs.length];
    const [ea, eb] = wasmExp2(a, b)!;
    // the one-lane kernel (fdlibm; V8's Math.exp is the same but for exp(1), which V8 returns as Math.E)
    if (!same(ea, wasmExp(a)!) || !same(eb, wasmExp(b)!)) assert.fail(`exp(${a}), exp(${b}): ${ea}, ${eb} vs ${wasmExp(a)}, ${wasmExp(b)}`);
  }
  // the kernels: odd lengths (a last element alone), arguments past the two-lane path (|g| > 709, subnormal e^-g)
  const be = wasmBackend(1 << 18)!;
  for (const n of [1, 2, 7, 1001]) {
    const g = Float32Array.from({ length: n }, (_, i) => (i % 9 === 4 ? (i % 2 ? 800 : -730) : (r() / 2 ** 32 - 0.5) * 40));
    const u = Float32Array.from({ length: n }, () => r() / 2 ** 32 - 0.5);
    const dh = Float32Array.from({ length: n }, () => r() / 2 ** 32 - 0.5);
    const [g2, u2, h2, dh2, dg2, du2] = [0, 0, 0, 0, 0, 0].map(() => be.alloc(n) as Float32Array);
    g2.set(g), u2.set(u), dh2.set(dh);
    const h = new Float32Array(n), dg = new Float32Array(n), du = new Float32Array(n);
    siluForwardRef(g, u, h, n);
    be.silu!(g2, u2, h2, n);
    assert.deepEqual(bitsOf(h2), bitsOf(h), `silu, ${n}`);
    siluBackwardRef(g, u, dh, dg, du, n);
    be.siluBackward!(g2, u2, dh2, dg2, du2, n);
    assert.deepEqual(bitsOf(dg2), bitsOf(dg), `silu backward dg, ${n}`);
    assert.deepEqual(bitsOf(du2), bitsOf(du), `silu backward du, ${n}`);
  }
  for (const T of [1, 2, 5, 64]) {
    // scores with a wide range: e^(z - max) down to subnormal and 0 on some rows
    const p = Float32Array.from({ length: 2 * T * T }, (_, i) => (i % 11 === 5 ? -3000 : (r() / 2 ** 32 - 0.5) * 60));
    const p2 = be.alloc(2 * T * T) as Float32Array;
    p2.set(p);
    for (let b = 0; b < 2; b++) softmaxRowsRef(p, b * T * T, T, 0, T, 0.3535533905932738);
    be.softmax!(p2, 0, T, 2, 0.3535533905932738);
    assert.deepEqual(bitsOf(p2), bitsOf(p), `softmax, T = ${T}`);
  }
  be.close?.();
});

test('the per-token parts in WebAssembly (rmsnorm, RoPE, residual adds; job kind 7 on 1 and 2 threads) give the TypeScript loops\' bytes: a layer\'s forward and backward with and without them', async () => {
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  const { TrainModel, trainModelFloats } = await import('../src/train/llama-grad.js');
  // dim 84 (4-wide steps: 84 = 21 x 4; the norm's 2-token lanes and an odd last token: 401 tokens, past the threaded size),
  // head size 14 with ropeDim 10 (half 5: two pairs at a time, then one), GQA
  const c = { dim: 84, hiddenDim: 100, nLayers: 1, nHeads: 6, nKvHeads: 3, vocabSize: 1, seqLen: 401, headDim: 14, normEps: 1e-5, ropeTheta: 10000, ropeDim: 10, ropeStyle: 'normal' as const, tiedOutput: true };
  const ctx = 401;
  const r = xorshift32(29);
  const rnd = () => (r() / 2 ** 32 - 0.5) * 3;
  const params = Float32Array.from({ length: 1 << 20 }, rnd);
  const x = Float32Array.from({ length: ctx * c.dim }, rnd);
  const dOut = Float32Array.from({ length: ctx * c.dim }, rnd);
  const run = async (threads: number, kernels: boolean, inputGradient: boolean) => {
    const be = wasmBackend(trainModelFloats(c, { batch: 1, ctx }), threads)!;
    await be.ready?.();
    if (!be.rmsnorm || !be.rope || !be.addInto) assert.fail('the wasm backend has the per-token parts');
    const used = kernels ? be : { ...be, rmsnorm: undefined, rope: undefined, addInto: undefined };
    const m = new TrainModel(c, used, { batch: 1, ctx });
    m.params.set(params.subarray(0, m.params.length));
    m.inputGradient = inputGradient;
    m.zeroGrads();
    const y = Float32Array.from(m.layerForwardOn(0, x));
    const dx = Float32Array.from(m.layerBackwardOn(0, dOut));
    const out = { y: bitsOf(y), dx: bitsOf(dx), grads: bitsOf(Float32Array.from(m.grads)), chunks: be.workerChunks?.() ?? 0 };
    be.close?.();
    return out;
  };
  for (const inputGradient of [true, false]) {
    const plain = await run(1, false, inputGradient);
    for (const threads of [1, 2]) {
      let fast = await run(threads, true, inputGradient);
      // 2 threads: again until the worker has run some chunks (a loaded machine may leave them all to the caller)
      for (let rep = 0; threads > 1 && fast.chunks === 0 && rep < 20; rep++) fast = await run(threads, true, inputGradient);
      assert.deepEqual(fast.y, plain.y, `output, ${threads} thread(s)`);
      assert.deepEqual(fast.dx, plain.dx, `input gradient, ${threads} thread(s)`);
      assert.deepEqual(fast.grads, plain.grads, `gradients, ${threads} thread(s)`);
      if (threads > 1) assert.ok(fast.chunks > 0, 'the worker ran chunks');
    }
  }
});
