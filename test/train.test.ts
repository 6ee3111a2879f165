import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setWasmVariant } from '../src/kernels/wasm.js';
import { gemmErrorFactor, gemmRef, referenceBackend, signStepRef, wasmBackend, type Backend } from '../src/train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../src/train/llama-grad.js';
import { xorshift32 } from '../src/rng.js';
import { repeatUntil } from './worker-wait.js';

function normalRng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => {
    const u = (next() + 1) / 4294967297;
    const v = (next() + 1) / 4294967297;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

export const TINY: TrainConfig = {
  dim: 8, hiddenDim: 12, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 11, seqLen: 16, headDim: 2, normEps: 1e-5, ropeTheta: 10000, ropeDim: 2,
  ropeStyle: 'normal', tiedOutput: false,
};

function tinyBatch(c: TrainConfig, batch: number, ctx: number, seed: number) {
  const r = xorshift32(seed);
  const tokens = Array.from({ length: batch * ctx }, () => r() % c.vocabSize);
  const targets = Array.from({ length: batch * ctx }, (_, i) => (i % 3 === 2 ? -1 : r() % c.vocabSize));
  return { tokens, targets };
}

test('gemm kernel: plain SIMD is bit for bit the scalar spec; relaxed within gamma(k) sum|AB|', () => {
  const r = normalRng(3);
  for (const variant of ['simd', 'relaxed'] as const) {
    setWasmVariant(variant);
    try {
      const be = wasmBackend(1 << 16)!;
      assert.ok(be, 'wasm backend available');
      for (const [m, k, n] of [[1, 1, 1], [5, 7, 13], [9, 33, 70], [4, 16, 8], [17, 64, 129]]) {
        const a = be.alloc(m * k), b = be.alloc(k * n), c = be.alloc(m * n);
        for (let i = 0; i < a.length; i++) a[i] = r();
        for (let i = 0; i < b.length; i++) b[i] = r();
        for (let i = 0; i < c.length; i++) c[i] = r();
        const want = Float32Array.from(c);
        gemmRef(want, 0, n, a, 0, k, b, 0, n, m, k, n, true);
        be.gemm(c, 0, n, a, 0, k, b, 0, n, m, k, n, true);
        if (variant === 'simd') assert.deepEqual(Array.from(c), Array.from(want), `${m}x${k}x${n}`);
        else {
          for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
            let abs = 0;
            for (let p = 0; p < k; p++) abs += Math.abs(a[i * k + p] * b[p * n + j]);
            assert.ok(Math.abs(c[i * n + j] - want[i * n + j]) <= 2 * gemmErrorFactor(k) * abs + 1e-6 * Math.abs(want[i * n + j]), `${m}x${k}x${n} [${i},${j}]`);
          }
        }
      }
    } finally {
      setWasmVariant(undefined);
    }
  }
});

test('gemm kernel, packed panels of B and rows of A: bit for bit the scalar spec (strides, offsets, column and row tails, k past the scratch, threads)', async () => {
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  const r = normalRng(5);
  setWasmVariant('simd');
  try {
    // [m, k, n, threads]: 8+ rows take the packed path (k = 9 / 70 / 5: the rows of A interleaved 4 steps of k at
    // a time, then a tail of 1 / 2 / 1 steps); n = 67 / 130: panels of 64 with groups of 8 and a tail of
    // 3 / 2 columns; 13 rows: a 1-row tail; k = 8200 is past the scratch (B read in place); 64 x 80 x 72 on 2
    // threads: every thread packs into its own scratch
    for (const [m, k, n, threads] of [[8, 9, 16, 1], [13, 70, 67, 1], [12, 5, 130, 1], [9, 8200, 9, 1], [64, 80, 72, 2], [37, 96, 131, 2]]) {
      const be = wasmBackend(1 << 19, threads)!;
      await be.ready?.();
      // operands inside larger arrays: strides past the row length and offsets (ldc = n + 5, lda = k + 3, ldb = n + 11)
      const lda = k + 3, ldb = n + 11, ldc = n + 5, ao = 7, bo = 13, co = 2;
      const a = be.alloc(ao + m * lda), b = be.alloc(bo + k * ldb), c = be.alloc(co + m * ldc);
      for (let i = 0; i < a.length; i++) a[i] = r();
      for (let i = 0; i < b.length; i++) b[i] = r();
      for (let i = 0; i < c.length; i++) c[i] = r();
      const cc = be.alloc(c.length);
      // on 2 threads, again until the worker has run some of the chunks (a loaded machine may leave it all to the caller)
      await repeatUntil(() => {
        for (const accumulate of [true, false]) {
          const want = Float32Array.from(c);
          gemmRef(want, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate);
          cc.set(c);
          be.gemm(cc, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate);
          assert.deepEqual(Array.from(cc), Array.from(want), `${m}x${k}x${n}, ${threads} thread(s), accumulate ${accumulate}`);
        }
      }, () => threads === 1 || (be.workerChunks?.() ?? 0) > 0);
      if (threads > 1) assert.ok((be.workerChunks?.() ?? 0) > 0, 'the worker ran chunks');
      be.close?.();
    }
  } finally {
    setWasmVariant(undefined);
  }
});

function model(be: Backend, c: TrainConfig, batch: number, ctx: number, checkpoint = false): TrainModel {
  const m = new TrainModel(c, be, { batch, ctx, checkpointActivations: checkpoint });
  m.initialize(normalRng(7));
  // larger than the usual init so every path carries signal
  for (let i = 0; i < m.params.length; i++) m.params[i] *= 10;
  return m;
}

test('backward pass matches finite differences in f64 (every tensor, GQA, RoPE, causal attention, SwiGLU)', () => {
  const c = TINY;
  const m = model(referenceBackend('f64'), c, 2, 5);
  const { tokens, targets } = tinyBatch(c, 2, 5, 11);
  m.zeroGrads();
  m.forward(tokens, targets);
  m.backward();
  const r = xorshift32(5);
  let worst = 0;
  for (const t of m.tensors) {
    for (let probe = 0; probe < 4; probe++) {
      const i = t.offset + (r() % t.size);
      const h = 1e-5;
      const x0 = m.params[i];
      m.params[i] = x0 + h;
      const lp = m.forward(tokens, targets);
      m.params[i] = x0 - h;
      const lm = m.forward(tokens, targets);
      m.params[i] = x0;
      const fd = (lp - lm) / (2 * h);
      const err = Math.abs(fd - m.grads[i]) / Math.max(1e-6, Math.abs(fd) + Math.abs(m.grads[i]));
      worst = Math.max(worst, err);
      assert.ok(err < 1e-5 || Math.abs(fd - m.grads[i]) < 1e-9, `${t.name}[${i - t.offset}]: backward ${m.grads[i]} vs finite difference ${fd}`);
    }
  }
  assert.ok(worst < 1e-5);
});

test('f32 WebAssembly gradients agree with the f64 reference (relative L2 error < 1e-4); checkpointed activations give the same bytes', () => {
  const c = { ...TINY, dim: 16, hiddenDim: 24, headDim: 4, ropeDim: 4 };
  const ref = model(referenceBackend('f64'), c, 2, 7);
  const fast = model(wasmBackend(trainModelFloats(c, { batch: 2, ctx: 7 }))!, c, 2, 7);
  const ck = model(wasmBackend(trainModelFloats(c, { batch: 2, ctx: 7, checkpointActivations: true }))!, c, 2, 7, true);
  const { tokens, targets } = tinyBatch(c, 2, 7, 12);
  const losses = [ref, fast, ck].map((m) => {
    m.zeroGrads();
    const l = m.forward(tokens, targets);
    m.backward();
    return l;
  });
  assert.ok(Math.abs(losses[0] - losses[1]) < 1e-5 * losses[0], `loss ${losses[1]} vs ${losses[0]}`);
  for (const t of ref.tensors) {
    let num = 0, den = 0;
    for (let i = t.offset; i < t.offset + t.size; i++) {
      num += (ref.grads[i] - fast.grads[i]) ** 2;
      den += ref.grads[i] ** 2;
    }
    assert.ok(Math.sqrt(num / den) < 1e-4, `${t.name}: relative error ${Math.sqrt(num / den)}`);
  }
  assert.deepEqual(Array.from(ck.grads), Array.from(fast.grads));
});

test('causal attention in blocks of query rows: the same bytes as the full T x T products (loss, every gradient, the layer\'s output and input gradient)', () => {
  const c = { ...TINY, dim: 16, hiddenDim: 24, headDim: 4, ropeDim: 4, seqLen: 11 };
  const ctx = 11; // blocks of 3 rows: 0-3, 3-6, 6-9, 9-11 (a short last block)
  for (const be of [() => wasmBackend(trainModelFloats(c, { batch: 2, ctx }))!, () => referenceBackend('f32')]) {
    const full = model(be(), c, 2, ctx);
    const blocked = model(be(), c, 2, ctx);
    full.causalRows = ctx; // one block: the full products
    blocked.causalRows = 3;
    const { tokens, targets } = tinyBatch(c, 2, ctx, 13);
    const run = (m: TrainModel) => {
      m.zeroGrads();
      const loss = m.forward(tokens, targets);
      m.backward();
      const x = Float32Array.from({ length: 2 * ctx * c.dim }, (_, i) => Math.sin(i * 0.37) * 3);
      const y = Float32Array.from(m.layerForwardOn(1, m.be.f64 ? Float64Array.from(x) : x));
      const dx = Float32Array.from(m.layerBackwardOn(1, m.be.f64 ? Float64Array.from(y) : y));
      return { loss, grads: Float32Array.from(m.grads), y, dx };
    };
    const a = run(full);
    const b = run(blocked);
    const label = full.be.name;
    assert.equal(b.loss, a.loss, `${label}: loss`);
    assert.deepEqual(b.grads, a.grads, `${label}: gradients`);
    assert.deepEqual(b.y, a.y, `${label}: layer output`);
    assert.deepEqual(b.dx, a.dx, `${label}: layer input gradient`);
  }
});

test('the training layer\'s attention as one WebAssembly job a head (a kv group in the backward): bit for bit the TypeScript path (GQA, odd causal blocks, row and column tails, 1 and 2 threads)', async () => {
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  // head size 6 / 10: P V, dq, dk and dv are 6 columns wide (a group of 4 and 2 single columns) / 10 (a packed group
  // of 8 and 2 single columns); ctx 45 in blocks of 7 query rows: blocks of 7 (a 4-row tile and 3 single rows) and a
  // last block of 3 rows; the transposed operands (Pᵀ, dSᵀ) of dv and dk take every one of those paths. 6 heads on 2
  // kv heads: dk and dv sum 3 heads' products (in another order, other bits)
  for (const hd of [6, 10]) {
  const c: TrainConfig = { ...TINY, dim: 6 * hd, hiddenDim: 40, nHeads: 6, nKvHeads: 2, headDim: hd, ropeDim: hd, vocabSize: 30, seqLen: 45, nLayers: 2 };
  const batch = 2;
  const ctx = 45;
  const { tokens, targets } = tinyBatch(c, batch, ctx, 9);
  const run = async (threads: number, job: boolean, rows: number) => {
    const be = wasmBackend(trainModelFloats(c, { batch, ctx }), threads)!;
    await be.ready?.();
    let jobs = 0;
    let workerHeads = 0; // chunks of the attention jobs the worker ran
    const counted = (f: () => boolean) => {
      const before = be.workerChunks?.() ?? 0;
      const ran = f();
      workerHeads += (be.workerChunks?.() ?? 0) - before;
      if (ran) jobs++;
      return ran;
    };
    const used: Backend = job
      ? { ...be, attention: (...a) => counted(() => be.attention!(...a)), attentionBackward: (...a) => counted(() => be.attentionBackward!(...a)) }
      : { ...be, attention: undefined, attentionBackward: undefined };
    const m = model(used, c, batch, ctx);
    m.causalRows = rows;
    m.zeroGrads();
    const loss = m.forward(tokens, targets);
    m.backward();
    const x = Float32Array.from({ length: batch * ctx * c.dim }, (_, i) => Math.sin(i * 0.37) * 3);
    const y = Float32Array.from(m.layerForwardOn(1, x));
    const dx = Float32Array.from(m.layerBackwardOn(1, y));
    const out = { loss, logits: Float32Array.from(m.logits()), grads: Float32Array.from(m.grads), y, dx, workerHeads, jobs };
    be.close?.();
    return out;
  };
  for (const rows of [7, 64]) {
    const plain = await run(1, false, rows);
    for (const threads of [1, 2]) {
      // on 2 threads, again until the worker has run some heads (a loaded machine may leave them all to the caller)
      let fast = await run(threads, true, rows);
      for (let rep = 0; threads > 1 && fast.workerHeads === 0 && rep < 100; rep++) fast = await run(threads, true, rows);
      assert.equal(fast.jobs, 2 * c.nLayers + 2, 'every attention ran as the job');
      assert.equal(fast.loss, plain.loss, `loss, head size ${hd}, rows ${rows}, ${threads} thread(s)`);
      assert.deepEqual(fast.logits, plain.logits, `logits, rows ${rows}, ${threads} thread(s)`);
      assert.deepEqual(fast.grads, plain.grads, `gradients, rows ${rows}, ${threads} thread(s)`);
      assert.deepEqual(fast.y, plain.y, `layer output, rows ${rows}, ${threads} thread(s)`);
      assert.deepEqual(fast.dx, plain.dx, `layer input gradient, rows ${rows}, ${threads} thread(s)`);
      if (threads === 2) assert.ok(fast.workerHeads > 0, 'the worker ran heads');
    }
  }
  }
});

// [rows, cols, threads]: n = 138, not a multiple of 4 (the element-by-element tail); n = 300 x 459 on 2 threads:
// element ranges of 2^16 on the threads (from 2^17 elements), the last one short
for (const [rows, cols, threads] of [[6, 23, 1], [300, 459, 2]])
test(`AutoRound's signed-gradient step: the WebAssembly kernel agrees bit for bit with signStepRef (zero and NaN gradients, one-level elements, clamps, flips into values and the transpose; ${threads} thread(s))`, async () => {
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  const n = rows * cols;
  const be = wasmBackend(16 * n + 4096, threads);
  if (!be) return; // no WebAssembly SIMD here: nothing to compare
  await be.ready?.();
  assert.ok(be.signStep, 'the wasm backend has the step kernel');
  const r = xorshift32(9);
  const u = () => (r() + 0.5) / 4294967296;
  const make = (alloc: (n: number) => Float32Array, chOf: (n: number) => Uint8Array) => {
    const a = { g: alloc(n), lo: alloc(n), hi: alloc(n), t: alloc(n), v: alloc(n), values: alloc(n), tr: alloc(n), ch: chOf(n) };
    return a;
  };
  const fast = make((k) => be.alloc(k) as Float32Array, (k) => { const f = be.alloc(Math.ceil(k / 4)); return new Uint8Array(f.buffer, f.byteOffset, k); });
  const ref = make((k) => new Float32Array(k), (k) => new Uint8Array(k));
  for (let e = 0; e < n; e++) {
    const lo = (u() - 0.5) * 0.2;
    const hi = e % 17 === 5 ? lo : lo + 0.01 + 0.05 * u(); // some elements with one level
    const t = u();
    const v = e % 11 === 3 ? 0.499 : e % 13 === 4 ? -0.4995 : (u() - 0.5) * 0.2; // some near the clamps
    const ch = t + v >= 0.5 ? 1 : 0;
    for (const x of [fast, ref]) {
      x.lo[e] = lo, x.hi[e] = hi, x.t[e] = t, x.v[e] = v, x.ch[e] = ch, x.values[e] = ch ? hi : lo;
      const rr = (e / cols) | 0;
      x.tr[(e - rr * cols) * rows + rr] = x.values[e];
    }
  }
  let flips = 0;
  const chunks0 = be.workerChunks?.() ?? 0;
  for (let it = 0; it < 25; it++) {
    const step = 0.04 * (1 - it / 25);
    for (let e = 0; e < n; e++) {
      const g = e % 19 === 7 ? 0 : (e === 50 || e === 70000) && it === 3 ? NaN : u() - 0.45;
      fast.g[e] = g;
      ref.g[e] = g;
    }
    const before = Uint8Array.from(ref.ch);
    be.signStep!(fast.g, fast.lo, fast.hi, fast.t, fast.v, fast.ch, fast.values, step, { t: fast.tr, rows, cols });
    signStepRef(ref.g, ref.lo, ref.hi, ref.t, ref.v, ref.ch, ref.values, step, { t: ref.tr, rows, cols });
    for (let e = 0; e < n; e++) if (before[e] !== ref.ch[e]) flips++;
    assert.deepEqual(fast.ch, ref.ch, `step ${it}: choices`);
    assert.deepEqual(Array.from(fast.v), Array.from(ref.v), `step ${it}: offsets`); // as numbers: a NaN's bits may differ (its choices do not)
    assert.deepEqual(fast.values, ref.values, `step ${it}: values`);
    assert.deepEqual(fast.tr, ref.tr, `step ${it}: transpose`);
  }
  assert.ok(flips > 30, `the steps flipped ${flips} choices`);
  if (threads > 1) {
    // again until the worker has run some of the ranges (a loaded machine may leave them all to the caller)
    await repeatUntil(() => {
      be.signStep!(fast.g, fast.lo, fast.hi, fast.t, fast.v, fast.ch, fast.values, 0.001, { t: fast.tr, rows, cols });
      signStepRef(ref.g, ref.lo, ref.hi, ref.t, ref.v, ref.ch, ref.values, 0.001, { t: ref.tr, rows, cols });
    }, () => (be.workerChunks?.() ?? 0) > chunks0);
    assert.ok((be.workerChunks?.() ?? 0) > chunks0, 'the worker ran ranges of the step');
    assert.deepEqual(fast.ch, ref.ch);
    assert.deepEqual(Array.from(fast.v), Array.from(ref.v));
    assert.deepEqual(fast.values, ref.values);
    assert.deepEqual(fast.tr, ref.tr);
  }
  // arrays outside the backend's memory: the reference runs (the same values)
  const plain = make((k) => new Float32Array(k), (k) => new Uint8Array(k));
  for (const k of ['g', 'lo', 'hi', 't', 'v', 'values', 'tr', 'ch'] as const) plain[k].set(ref[k] as never);
  be.signStep!(plain.g, plain.lo, plain.hi, plain.t, plain.v, plain.ch, plain.values, 0.01);
  signStepRef(ref.g, ref.lo, ref.hi, ref.t, ref.v, ref.ch, ref.values, 0.01);
  assert.deepEqual(Array.from(plain.v), Array.from(ref.v));
  be.close?.();
});

// ---------------------------------------------------------------------------------------------------
// the training loop

import { Trainer, checkpointBytes, restoreCheckpoint, DEFAULT_TRAIN, type TrainOptions } from '../src/train/trainer.js';
import { llamaGgufMetadata, paramTensors, writeLlamaGguf } from '../src/io/llama-writer.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { loadModel } from '../src/eval/load.js';

const SMALL: TrainConfig = { ...TINY, dim: 16, hiddenDim: 32, headDim: 4, ropeDim: 4, vocabSize: 13, seqLen: 8 };
/** a learnable stream: token i+1 = (token i * 3 + 1) mod 13, with some noise */
function stream(n: number, seed: number): Int32Array {
  const r = xorshift32(seed);
  const s = new Int32Array(n);
  for (let i = 1; i < n; i++) s[i] = r() % 5 === 0 ? r() % 13 : (s[i - 1] * 3 + 1) % 13;
  return s;
}
const opts = (o: Partial<TrainOptions> = {}): TrainOptions => ({ ...DEFAULT_TRAIN, steps: 6, batch: 3, ctx: 8, lr: 1e-2, warmup: 2, ...o });

test('training lowers the loss; same seed -> same bytes; a resumed run equals an uninterrupted one', () => {
  const data = stream(2000, 1);
  const a = new Trainer(SMALL, opts({ steps: 40 }), data);
  const first = a.trainStep().loss;
  while (a.step < 40) a.trainStep();
  const last = a.history.slice(-5).reduce((s, r) => s + r.loss, 0) / 5;
  assert.ok(last < 0.75 * first, `loss ${first} -> ${last}`);
  const b = new Trainer(SMALL, opts({ steps: 40 }), data);
  while (b.step < 20) b.trainStep();
  const ck = checkpointBytes(b);
  const c = new Trainer(SMALL, opts({ steps: 40 }), data);
  restoreCheckpoint(c, ck);
  while (c.step < 40) c.trainStep();
  assert.deepEqual(new Uint8Array(c.model.params.slice().buffer), new Uint8Array(a.model.params.slice().buffer));
  // a checkpoint from another shape or other options is refused with a clear message
  assert.throws(() => restoreCheckpoint(new Trainer({ ...SMALL, hiddenDim: 24 }, opts({ steps: 40 }), data), ck), /different model \(hiddenDim 32 vs 24\)/);
  assert.throws(() => restoreCheckpoint(new Trainer(SMALL, opts({ steps: 40, lr: 2e-2 }), data), ck), /different options \(lr 0.01 vs 0.02\)/);
  assert.throws(() => restoreCheckpoint(c, ck.subarray(0, ck.length - 4)), /truncated/);
});

test('threads: the products cut into row blocks across worker threads give the same bytes as one thread', async () => {
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  const cfg: TrainConfig = { ...SMALL, dim: 64, hiddenDim: 128, nHeads: 4, nKvHeads: 2, headDim: 16, ropeDim: 16, vocabSize: 64, seqLen: 64 };
  const data = stream(4000, 3).map((x) => x % 64);
  const run = async (threads: number) => {
    const t = new Trainer(cfg, { ...opts({ steps: 3 }), batch: 4, ctx: 64, threads }, data);
    await t.model.be.ready?.();
    while (t.step < 3) t.trainStep();
    const r = { params: new Uint8Array(t.model.params.slice().buffer), threads: t.model.be.threads, chunks: t.model.be.workerChunks?.() ?? 0 };
    t.close();
    return r;
  };
  const one = await run(1);
  const two = await run(2);
  assert.equal(two.threads, 2);
  assert.ok(two.chunks > 0, 'the worker thread computed row blocks');
  assert.deepEqual(two.params, one.params);
});

test('gradient accumulation: 2 micro-batches of 3 = one batch of 6 (same windows)', () => {
  const data = stream(2000, 2);
  const a = new Trainer(SMALL, opts({ batch: 6, accum: 1 }), data);
  const b = new Trainer(SMALL, opts({ batch: 3, accum: 2 }), data);
  for (let s = 0; s < 3; s++) {
    const ra = a.trainStep();
    const rb = b.trainStep();
    assert.ok(Math.abs(ra.loss - rb.loss) < 1e-5, `step ${s}: loss ${ra.loss} vs ${rb.loss}`);
  }
  let maxDiff = 0;
  for (let i = 0; i < a.model.params.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.model.params[i] - b.model.params[i]));
  assert.ok(maxDiff < 1e-4, `max parameter difference ${maxDiff}`);
});

test('a trained model written as GGUF runs in lowbit\'s runtime with the trainer\'s logits', async () => {
  const data = stream(2000, 3);
  const t = new Trainer(SMALL, opts({ steps: 5 }), data);
  while (t.step < 5) t.trainStep();
  const sink = memorySink();
  await writeLlamaGguf(sink, llamaGgufMetadata(SMALL, undefined, 'tiny'), paramTensors(t.model.tensors, t.model.params));
  const loaded = await loadModel(bytesSource(sink.bytes(), 'tiny.gguf'), { contextLength: 8, batch: 8 });
  const seq = Array.from(data.subarray(100, 108));
  const tokens = [...seq, ...seq, ...seq];
  t.model.forward(tokens, new Array(24).fill(-1));
  const ours = t.model.logits();
  const rt = loaded.model.forward(seq, 0, 0);
  let worst = 0;
  for (let i = 0; i < 8 * SMALL.vocabSize; i++) worst = Math.max(worst, Math.abs(rt[i] - ours[i]));
  assert.ok(worst < 1e-4, `max |Δlogit| ${worst}`);
});

// ---------------------------------------------------------------------------------------------------
// low-precision training

import { PRECISIONS, quantizeOperand, dgeFactors, type OperandQuant } from '../src/train/precision.js';

function sqnr(ref: ArrayLike<number>, q: ArrayLike<number>): number {
  let s = 0, e = 0;
  for (let i = 0; i < ref.length; i++) {
    s += ref[i] ** 2;
    e += (ref[i] - q[i]) ** 2;
  }
  return 10 * Math.log10(s / e);
}

test('operand quantizers: SQNR of each format on gaussian data, idempotence, Hadamard-rotated MXFP4 products', () => {
  const r = normalRng(9);
  const rows = 64, K = 96;
  const x = Float32Array.from({ length: rows * K }, () => r());
  // expected SQNR: bf16 ~ 8 bits of mantissa (> 45 dB), e4m3 ~ 31 dB, e5m2 ~ 25 dB, int8 blocks > 35 dB, fp4 ~ 15-20 dB
  const cases: [OperandQuant, number, number][] = [
    [{ kind: 'bf16' }, 45, 60],
    [{ kind: 'tensor', format: 'e4m3' }, 28, 35],
    [{ kind: 'tensor', format: 'e5m2' }, 22, 29],
    [{ kind: 'int8-block', block: 32 }, 35, 45],
    [{ kind: 'int8-rows' }, 35, 45],
    [{ kind: 'mxfp4', hadamard: false, stochastic: false }, 13, 21],
    [{ kind: 'nvfp4' }, 15, 23],
  ];
  for (const [q, lo, hi] of cases) {
    const y = new Float32Array(x.length);
    quantizeOperand(q, y, x, rows, K);
    const db = sqnr(x, y);
    assert.ok(db > lo && db < hi, `${JSON.stringify(q)}: SQNR ${db.toFixed(1)} dB not in (${lo}, ${hi})`);
    if (q.kind !== 'mxfp4') {
      const z = new Float32Array(x.length);
      quantizeOperand(q, z, y, rows, K);
      assert.deepEqual(z, y, `${q.kind} is idempotent`);
    }
  }
  // rotated MXFP4 on both operands of a product: the rotation cancels, the product stays close
  const w = Float32Array.from({ length: 8 * K }, () => r());
  const exact = new Float64Array(rows * 8), rot = new Float64Array(rows * 8);
  const qx = new Float32Array(x.length), qw = new Float32Array(w.length);
  quantizeOperand({ kind: 'mxfp4', hadamard: true, stochastic: false }, qx, x, rows, K);
  quantizeOperand({ kind: 'mxfp4', hadamard: true, stochastic: false }, qw, w, 8, K);
  for (let i = 0; i < rows; i++) for (let j = 0; j < 8; j++) for (let k = 0; k < K; k++) {
    exact[i * 8 + j] += x[i * K + k] * w[j * K + k];
    rot[i * 8 + j] += qx[i * K + k] * qw[j * K + k];
  }
  assert.ok(sqnr(exact, rot) > 10, `rotated MXFP4 product SQNR ${sqnr(exact, rot)}`);
  // stochastic rounding is unbiased: the mean of many roundings approaches the input
  const one = Float32Array.from({ length: 32 }, (_, i) => 0.3 + i * 0.01);
  const mean = new Float64Array(32);
  for (let s = 0; s < 400; s++) {
    const y = new Float32Array(32);
    quantizeOperand({ kind: 'mxfp4', hadamard: false, stochastic: true }, y, one, 1, 32, s);
    for (let i = 0; i < 32; i++) mean[i] += y[i] / 400;
  }
  for (let i = 0; i < 32; i++) assert.ok(Math.abs(mean[i] - one[i]) < 0.03, `SR mean ${mean[i]} vs ${one[i]}`);
  // DGE: derivative 1/k |2u-1|^(1/k-1): largest (clipped) mid-interval, ~0.2 at the levels
  const d = new Float32Array(3);
  dgeFactors(d, Float32Array.from([6, 1.25, 1.01]), 1, 3);
  assert.equal(d[0], 0); // at the largest level: saturated
  assert.equal(d[1], 3); // midpoint of [1, 1.5]: clipped
  assert.ok(d[2] > 0.2 && d[2] < 0.3, `near a level ${d[2]}`);
});

test('every precision trains (loss falls, finite) and is deterministic', () => {
  const c: TrainConfig = { ...TINY, dim: 32, hiddenDim: 64, headDim: 8, ropeDim: 8, vocabSize: 13, seqLen: 8 };
  const data = stream(3000, 4);
  for (const p of PRECISIONS) {
    const run = () => {
      const t = new Trainer(c, opts({ steps: 25, precision: p, lr: 2e-2 }), data);
      while (t.step < 25) t.trainStep();
      return t;
    };
    const a = run();
    const first = a.history[0].loss;
    const last = a.history.slice(-5).reduce((s, r) => s + r.loss, 0) / 5;
    assert.ok(last < 0.8 * first, `${p}: loss ${first} -> ${last}`);
    if (p === 'quartet' || p === 'fp8') assert.deepEqual(run().model.params, a.model.params, `${p} is deterministic`);
  }
});

// ---------------------------------------------------------------------------------------------------
// QAT

import * as fs from 'node:fs';
import * as path from 'node:path';
import { openModelFile } from '../src/io/model-file.js';
import { runQat, writeQatModel } from '../src/pipeline/qat.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';

const DATA = path.resolve(import.meta.dirname, '../../data');

/** stories260K, its vocabulary, and the first `chars` characters of the shipped text as tokens */
async function storiesWithText(chars: number) {
  const m = await openModelFile(bytesSource(new Uint8Array(fs.readFileSync(path.join(DATA, 'stories260K.gguf'))), 'stories260K.gguf'));
  const { Tokenizer } = await import('../src/model/tokenizer.js');
  const { vocabFromGgufMetadata } = await import('../src/io/vocab.js');
  const { plainMetadata } = await import('../src/io/model-file.js');
  const vocab = vocabFromGgufMetadata(plainMetadata(m.metadata));
  const tokens = Int32Array.from(new Tokenizer(vocab).encode(fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8').slice(0, chars)));
  return { m, vocab, tokens };
}

for (const method of ['ste', 'dge', 'lsq'] as const) {
  test(`QAT (${method}, distillation) to Q4_0 --pure lowers the KL to the original; the file holds exactly the weights trained through`, async () => {
    const { m, vocab, tokens: all } = await storiesWithText(30000);
    const data = all.subarray(0, 11000);
    const run = await runQat(m, data, vocab.bos, { type: 'Q4_0', pure: true, method, loss: 'kd', init: 'rtn', steps: 12, lr: 3e-4, batch: 4, ctx: 64, seed: 1, warmup: 0 });
    // KL to the teacher on fixed held-out windows, before and after
    const { sampleBatch, Rng } = await import('../src/train/data.js');
    const held = sampleBatch(all.subarray(11000), 4, 64, new Rng(5), vocab.bos);
    const kl = () => run.trainer.hooks.afterForward!(held, run.trainer.model.forward(held.tokens, held.targets));
    const first = kl();
    while (run.trainer.step < 12) run.trainer.trainStep();
    const last = kl();
    assert.ok(last < 0.8 * first, `held-out KL ${first} -> ${last}`);
    const sink = memorySink();
    const report = await writeQatModel(m, run, sink);
    const out = await openModelFile(bytesSource(sink.bytes(), 'qat.gguf'));
    const wq = out.tensor('blk.1.attn_q.weight');
    assert.equal(wq.type, 'Q4_0');
    const deq = new Float32Array(64 * 64);
    ggmlCodec('Q4_0')!.dequantize(await out.read(wq), deq.length, deq);
    assert.deepEqual(deq, Float32Array.from(run.qat.quantized.get('blk.1.attn_q.weight')!));
    assert.ok(report.bitsPerWeight < 8);
  });
}

test('LSQ: packed bytes of every scaled-grid type decode to the trained values; the starting scales beat the codec\'s; the scale gradient is LSQ\'s', async () => {
  const { ggmlWeightCodec } = await import('../src/pipeline/qat.js');
  const { ggmlTypeByName } = await import('../src/quant/ggml/types.js');
  const { LsqScales } = await import('../src/train/qat.js');
  const r = normalRng(11);
  for (const name of ['Q4_0', 'Q5_0', 'Q8_0', 'Q2_0', 'Q1_0', 'IQ4_NL']) {
    const type = ggmlTypeByName(name)!;
    const codec = ggmlWeightCodec(type);
    assert.ok(codec.scaled, name);
    const rows = 3, cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => 0.05 * r());
    const rtn = new Float32Array(w.length);
    codec.fakeQuant(w, rows, cols, rtn);
    const l = new LsqScales(codec.scaled!, w, codec.quantize!(w, rows, cols));
    const q = new Float32Array(w.length);
    l.fakeQuant(w, q);
    const err = (a: Float32Array) => a.reduce((s, x, i) => s + (x - w[i]) ** 2, 0);
    assert.ok(err(q) <= err(rtn), `${name}: start ${err(q)} vs codec ${err(rtn)}`);
    if (name === 'Q2_0') assert.ok(err(q) < 0.7 * err(rtn), `Q2_0 uses its fourth level: ${err(q)} vs ${err(rtn)}`);
    // move the scales and weights off the codec's choice: the packed file still holds exactly what training saw
    for (let b = 0; b < l.scales.length; b++) l.scales[b] *= 0.8 + 0.01 * (b % 7);
    for (let i = 0; i < w.length; i += 5) w[i] *= 1.5;
    l.fakeQuant(w, q);
    const deq = new Float32Array(w.length);
    ggmlCodec(name)!.dequantize(l.pack(w), w.length, deq);
    assert.deepEqual(deq, q, name);
  }
  // the gradients on a hand-checked block of Q2_0 (levels -1..2, one scale, block 64): v = w / d
  const l = new LsqScales(ggmlWeightCodec(ggmlTypeByName('Q2_0')!).scaled!, new Float32Array(64).fill(0.5), new Uint8Array(18));
  l.scales[0] = 0.25; // exact in f16
  const w = new Float32Array(64);
  w[0] = 0.3; // v = 1.2 -> level 1, inside
  w[1] = 0.8; // v = 3.2 -> level 2, clipped
  w[2] = -0.3; // v = -1.2 -> level -1, clipped
  const g = new Float32Array(64);
  g[0] = 1; g[1] = 2; g[2] = 3;
  l.backward(g, w);
  assert.deepEqual([g[0], g[1], g[2]], [1, 0, 0], 'clipped weights get no gradient');
  const expected = (1 * (1 - Math.fround(0.3) / 0.25) + 2 * 2 + 3 * -1) / Math.sqrt(64 * 2);
  assert.ok(Math.abs(l.grads[0] - expected) < 1e-6, `scale gradient ${l.grads[0]} vs ${expected}`);
});

for (const [type, group] of [['int4', 32], ['nvfp4', undefined], ['mxfp4', undefined]] as const) {
  test(`QAT to ${type}${group ? ` group ${group}` : ''} writes lowbit safetensors that lowbit's runtime loads, with the logits of the trained fake-quant model`, async () => {
    const { m, vocab, tokens: data } = await storiesWithText(8000);
    const run = await runQat(m, data, vocab.bos, { type, container: 'safetensors', groupSize: group, pure: false, method: 'ste', loss: 'kd', init: 'rtn', steps: 3, lr: 1e-3, batch: 2, ctx: 16, seed: 1, warmup: 0 });
    while (run.trainer.step < 3) run.trainer.trainStep();
    const sink = memorySink();
    await writeQatModel(m, run, sink);
    const loaded = await loadModel(bytesSource(sink.bytes(), 'qat.safetensors'), { contextLength: 16, batch: 16 });
    const seq = Array.from(data.subarray(100, 116));
    const model = run.trainer.model;
    model.forward([...seq, ...seq], new Array(32).fill(-1));
    const ours = model.logits();
    const rt = loaded.model.forward(seq, 0, 0);
    let worst = 0;
    for (let i = 0; i < 16 * 512; i++) worst = Math.max(worst, Math.abs(rt[i] - ours[i]));
    assert.ok(worst < 1e-4, `max |Δlogit| ${worst}`); // measured 1.3e-5 (int4 g32)
    // and the quantization is real: the trained master weights differ from what the file holds
    const name = 'blk.0.ffn_up.weight';
    assert.notDeepEqual(Float32Array.from(model.view(name)), Float32Array.from(run.qat.quantized.get(name)!));
  });
}

test('QAT writes through the one verb: its file is byte for byte what quantize() (and the writer before it) writes for the trained weights; LSQ enters as the per-tensor rounding', async () => {
  const { GgufWriter } = await import('../src/io/gguf.js');
  const { ggmlTypeByName } = await import('../src/quant/ggml/types.js');
  const { llamaRecipe } = await import('../src/algos/recipe.js');
  const { quantize, quantizeModel, planQuantization } = await import('../src/pipeline/quantize.js');
  const { m, vocab, tokens: data } = await storiesWithText(8000);
  for (const method of ['ste', 'lsq'] as const) {
    const run = await runQat(m, data, vocab.bos, { type: 'Q4_0', pure: true, method, loss: 'ce', init: 'rtn', steps: 2, lr: 1e-3, batch: 2, ctx: 16, seed: 3, warmup: 0 });
    while (run.trainer.step < 2) run.trainer.trainStep();
    const sink = memorySink();
    await writeQatModel(m, run, sink);
    // the trained weights as an F32 GGUF with the model's metadata (no file type), written here independently
    const f32 = ggmlTypeByName('F32')!;
    const mem = memorySink();
    const w = new GgufWriter(mem, [...m.gguf!.metadata].filter(([k]) => k !== 'general.file_type'), m.tensors.map((t) => ({ name: t.name, ne: [...t.ne!], type: f32 })));
    await w.begin();
    for (const t of m.tensors) await w.write(new Uint8Array(run.floats.get(t.name)!.buffer.slice(0)));
    await w.end();
    const trained = await openModelFile(bytesSource(mem.bytes(), 'trained.gguf'));
    const recipe = llamaRecipe('Q4_0', { pure: true });
    const roundTensor = method === 'lsq' ? (p: { name: string }) => (run.qat.lsqBytes(p.name) ? async () => ({ bytes: run.qat.lsqBytes(p.name)!, q: Float32Array.from(run.qat.quantized.get(p.name)!), label: 'lsq' }) : undefined) : undefined;
    const viaVerb = memorySink();
    await quantize(trained, recipe, viaVerb, roundTensor ? { roundTensor } : {});
    assert.deepEqual(sink.bytes(), viaVerb.bytes(), `${method}: QAT's file = quantize()'s`);
    // and = the writer QAT called by hand before (planQuantization + quantizeModel): the same bytes as before the change
    const byHand = memorySink();
    await quantizeModel(trained, planQuantization(trained, recipe, 'gguf'), byHand, roundTensor ? { roundTensor } : {});
    assert.deepEqual(viaVerb.bytes(), byHand.bytes(), `${method}: quantize() = the writer by hand`);
    if (method === 'ste') {
      // plain QAT is RTN of the trained weights: without the learned rounding the verb gives the same file
      const plain = memorySink();
      await quantize(trained, recipe, plain);
      assert.deepEqual(plain.bytes(), sink.bytes());
    } else {
      // LSQ's learned scales are not what RTN picks: the rounding really comes from QAT
      const plain = memorySink();
      await quantize(trained, recipe, plain);
      assert.notDeepEqual(plain.bytes(), sink.bytes());
    }
  }
});

test('QAT --init gptq starts from the GPTQ file quantize() writes (the verb with the GPTQ recipe): the GPTQ-rounded tensors hold its values, the others the model\'s', async () => {
  const { llamaRecipe } = await import('../src/algos/recipe.js');
  const { quantize } = await import('../src/pipeline/quantize.js');
  const { m, vocab, tokens: data } = await storiesWithText(8000);
  const calibText = fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8').slice(0, 6000);
  const run = await runQat(m, data, vocab.bos, { type: 'Q4_0', pure: true, method: 'ste', loss: 'ce', init: 'gptq', calibText, calibTokens: 256, calibCtx: 64, steps: 1, lr: 1e-3, batch: 2, ctx: 16, seed: 2, warmup: 0 });
  const sink = memorySink();
  const report = await quantize(m, { ...llamaRecipe('Q4_0', { pure: true }), algorithm: 'gptq', ptq: { calibTokens: 256, calibCtx: 64, seed: 2 } } as never, sink, { output: 'gguf', calibText });
  const gptq = await openModelFile(bytesSource(sink.bytes(), 'gptq.gguf'));
  const rounded = Object.keys(report.ptq!.algorithms);
  assert.equal(report.ptq!.algorithms['blk.0.attn_q.weight'], 'gptq');
  for (const t of m.tensors) {
    const mine = Float32Array.from(run.trainer.model.view(t.name));
    if (rounded.includes(t.name)) {
      const v = new Float32Array(mine.length);
      const g = gptq.tensor(t.name);
      ggmlCodec(g.type)!.dequantize(await gptq.read(g), v.length, v);
      assert.deepEqual(mine, v, `${t.name}: GPTQ's values`);
    } else assert.deepEqual(mine, Float32Array.from(await (await import('../src/pipeline/quantize.js')).readFloats(m, t)), `${t.name}: the model's`);
  }
});

test('the training layer\'s SiLU and softmax kernels (WebAssembly, on 1 and 2 threads) agree bit for bit with the TypeScript loops; their exp is Math.exp', async () => {
  const { wasmExp, siluForwardRef, siluBackwardRef, softmaxRowsRef } = await import('../src/train/gemm.js');
  if (wasmExp(0) === null) return; // no WebAssembly SIMD here
  // exp: fdlibm's, as V8's Math.exp: every argument range of its reduction, and the special values
  const r = xorshift32(17);
  const f32 = new Float32Array(1);
  const specials = [0, -0, 1e-300, -1e-300, 2 ** -29, -(2 ** -29), 0.34657359, 0.3465736, 1.0397, -1.0397, 709.78, 709.79, -745.13, -745.14, -708.5, -720, Infinity, -Infinity, NaN, 88.7, -103.9];
  const xs = [...specials, ...Array.from({ length: 300000 }, (_, i) => {
    const x = (r() - 0.5) * [2, 60, 1500, 40][i % 4];
    f32[0] = x;
    return i % 4 === 3 ? f32[0] : x; // f32 arguments, as the kernels' (promoted f32 values)
  })];
  for (const x of xs) assert.ok(Object.is(wasmExp(x), Math.exp(x)), `exp(${x}): ${wasmExp(x)} vs ${Math.exp(x)}`);
  // the layer: forward and backward with and without the kernels (the same products), every buffer the same bits
  const { useNodeThreads } = await import('../src/cli/threads.js');
  useNodeThreads();
  const c: TrainConfig = { ...TINY, dim: 32, hiddenDim: 176, nHeads: 4, nKvHeads: 2, headDim: 8, ropeDim: 8, vocabSize: 40, seqLen: 96, nLayers: 2 };
  const batch = 2;
  const ctx = 96; // more than CAUSAL_ROWS; batch x ctx x hidden and heads x ctx^2 large enough for the threaded jobs
  const { tokens, targets } = tinyBatch(c, batch, ctx, 5);
  const run = async (threads: number, kernels: boolean) => {
    const be = wasmBackend(trainModelFloats(c, { batch, ctx }), threads)!;
    await be.ready?.();
    const used = kernels ? be : { ...be, silu: undefined, siluBackward: undefined, softmax: undefined, attention: undefined, attentionBackward: undefined };
    const m = model(used, c, batch, ctx);
    m.zeroGrads();
    const loss = m.forward(tokens, targets);
    m.backward();
    const out = { loss, logits: Uint8Array.from(new Uint8Array(m.logits().slice().buffer)), grads: Uint8Array.from(new Uint8Array(m.grads.slice().buffer)), chunks: be.workerChunks?.() ?? 0 };
    be.close?.();
    return out;
  };
  const plain = await run(1, false);
  for (const threads of [1, 2]) {
    let fast = await run(threads, true);
    // 2 threads: again until the worker has run some chunks (a loaded machine may leave them all to the caller)
    for (let rep = 0; threads > 1 && fast.chunks === 0 && rep < 20; rep++) fast = await run(threads, true);
    assert.equal(fast.loss, plain.loss);
    assert.deepEqual(fast.logits, plain.logits, `logits, ${threads} thread(s)`);
    assert.deepEqual(fast.grads, plain.grads, `gradients, ${threads} thread(s)`);
    if (threads === 2) assert.ok(fast.chunks > 0, 'the worker ran chunks');
  }
  // the references on arrays outside the backend's memory (its fallback) are the loops the model ran
  const n = 1000;
  const g = Float32Array.from({ length: n }, () => (r() - 0.5) * 20);
  const u = Float32Array.from({ length: n }, () => r() - 0.5);
  const be = wasmBackend(4 * n + 8 * 64 * 64)!;
  const [g2, u2, h2, dh2, dg2, du2] = [0, 0, 0, 0, 0, 0].map(() => be.alloc(n) as Float32Array);
  g2.set(g), u2.set(u), dh2.set(u.map((x) => x * 3));
  const h = new Float32Array(n), dg = new Float32Array(n), du = new Float32Array(n);
  siluForwardRef(g, u, h, n);
  be.silu!(g2, u2, h2, n);
  assert.deepEqual(h2, h);
  siluBackwardRef(g, u, dh2.slice(), dg, du, n);
  be.siluBackward!(g2, u2, dh2, dg2, du2, n);
  assert.deepEqual(dg2, dg);
  assert.deepEqual(du2, du);
  const T = 64;
  const p = Float32Array.from({ length: 2 * T * T }, () => (r() - 0.5) * 30);
  const p2 = be.alloc(2 * T * T) as Float32Array;
  p2.set(p);
  for (let b = 0; b < 2; b++) softmaxRowsRef(p, b * T * T, T, 0, T, 0.3535533905932738);
  be.softmax!(p2, 0, T, 2, 0.3535533905932738);
  assert.deepEqual(p2, p);
});
