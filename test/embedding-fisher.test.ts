/**
 * The token embedding's Fisher (src/pipeline/embedding-fisher.ts, --embedding-fisher): on windows of one
 * token (no attention across positions, so the mean Fisher is exact) the quadratic form e^T (H / 2) e
 * matches the finite-difference KL divergence of the model with every embedding row moved by eps e,
 * 2 KL / eps^2; the same seed gives the same H.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModelConfig } from '../src/model/family.js';
import { embeddingFisher } from '../src/pipeline/embedding-fisher.js';
import { mulberry32 } from '../src/rng.js';
import { referenceBackend } from '../src/train/gemm.js';
import { TrainModel, type TrainConfig } from '../src/train/llama-grad.js';

const config: ModelConfig = { dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen: 8, headDim: 8, normEps: 1e-5, ropeTheta: 10000, ropeDim: 8, ropeStyle: 'normal' };

function randomModel(ctx: number, seed: number): { weights: Map<string, Float32Array>; model: TrainModel } {
  const tc: TrainConfig = { ...config, seqLen: ctx, tiedOutput: false };
  const model = new TrainModel(tc, referenceBackend('f64'), { batch: 1, ctx });
  const rand = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const weights = new Map<string, Float32Array>();
  for (const t of model.tensors) {
    const v = Float32Array.from({ length: t.size }, () => (t.decay ? normal() * 0.35 : 1 + 0.1 * normal()));
    weights.set(t.name, v);
    model.view(t.name).set(v);
  }
  return { weights, model };
}

/** mean KL(p_float || p_moved) over one-token windows, every embedding row moved by d */
function meanKl(model: TrainModel, emb: Float32Array, tokens: number[], d: Float32Array): number {
  const V = config.vocabSize;
  const view = model.view('token_embd.weight');
  const logp = (z: ArrayLike<number>) => {
    let mx = -Infinity;
    for (let i = 0; i < V; i++) mx = Math.max(mx, z[i]);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(z[i] - mx);
    return Array.from({ length: V }, (_, i) => z[i] - mx - Math.log(s));
  };
  let kl = 0;
  for (const t of tokens) {
    view.set(emb);
    model.forward([t]);
    const f = logp(model.logits());
    for (let r = 0; r < emb.length / config.dim; r++) for (let j = 0; j < config.dim; j++) view[r * config.dim + j] = emb[r * config.dim + j] + d[j];
    model.forward([t]);
    const q = logp(model.logits());
    for (let i = 0; i < V; i++) kl += Math.exp(f[i]) * (f[i] - q[i]);
  }
  view.set(emb);
  return kl / tokens.length;
}

test('embedding Fisher: e^T (H/2) e is the KL divergence\'s curvature along e (one-token windows), deterministic', () => {
  const { weights, model } = randomModel(1, 7);
  const rand = mulberry32(11);
  const tokens = Array.from({ length: 48 }, () => Math.floor(rand() * config.vocabSize));
  const windows = tokens.map((t) => Int32Array.of(t));
  const stats = embeddingFisher(config, (n) => weights.get(n), windows, 1, 48, 3);
  const again = embeddingFisher(config, (n) => weights.get(n), windows, 1, 48, 3);
  assert.deepEqual(again.h, stats.h, 'same seed, same H');
  const dim = config.dim;
  for (let a = 0; a < dim; a++) for (let b = 0; b < dim; b++) assert.ok(Math.abs(stats.h[a * dim + b] - stats.h[b * dim + a]) < 1e-12);
  const emb = weights.get('token_embd.weight')!;
  const eps = 1e-3;
  for (let k = 0; k < 3; k++) {
    const e = Float32Array.from({ length: dim }, () => rand() - 0.5);
    const curv = (2 * meanKl(model, emb, tokens, e.map((x) => x * eps))) / (eps * eps);
    let quad = 0;
    for (let a = 0; a < dim; a++) for (let b = 0; b < dim; b++) quad += (e[a] * stats.h[a * dim + b] * e[b]) / 2;
    assert.ok(curv > 0);
    assert.ok(Math.abs(quad / curv - 1) < 0.15, `direction ${k}: Fisher ${quad.toExponential(3)} vs KL curvature ${curv.toExponential(3)}`);
  }
});

test('embedding Fisher: refused on a block the training engine does not run', () => {
  const { weights } = randomModel(1, 7);
  assert.throws(() => embeddingFisher({ ...config, ropeStyle: 'neox' }, (n) => weights.get(n), [Int32Array.of(1)], 1, 1, 0), /--embedding-fisher needs plain LLaMA layers \(RoPE layout neox\)/);
  assert.throws(() => embeddingFisher(config, (n) => weights.get(n), [Int32Array.of(1)], 1, 0, 0), /whole number >= 1/);
});
