import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setWasmVariant } from '../src/kernels/wasm.js';
import { gemmErrorFactor, gemmRef, referenceBackend, wasmBackend, type Backend } from '../src/train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../src/train/llama-grad.js';
import { xorshift32 } from '../src/rng.js';

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
