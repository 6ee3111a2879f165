/**
 * Calibration for KV caches that fit their datatypes to activations (KVQuant): run the model with its
 * f32 cache over chunks of a text (BOS first, as perplexity does) and keep every layer's keys before
 * RoPE and its values.
 */
import { fail } from '../errors.js';
import type { KvSamples } from '../model/kv/kvquant.js';
import type { Llama } from '../model/llama.js';
import type { TrainModel } from '../train/llama-grad.js';

export function collectKvSamples(model: Llama, tokens: ArrayLike<number>, opts: { ctx: number; chunks: number; bos: number; addBos: boolean }): KvSamples {
  const c = model.config;
  const kvDim = c.nKvHeads * c.headDim;
  const ctx = Math.min(opts.ctx, model.kv.capacity);
  const nChunks = Math.min(opts.chunks, Math.floor(tokens.length / ctx));
  if (nChunks < 1) fail(`the calibration text has ${tokens.length} tokens, fewer than one chunk of ${ctx}`);
  const keys: Float32Array[] = Array.from({ length: c.nLayers }, () => new Float32Array(nChunks * ctx * kvDim));
  const values: Float32Array[] = Array.from({ length: c.nLayers }, () => new Float32Array(nChunks * ctx * kvDim));
  let base = 0;
  const prev = model.hooks.kvInput;
  model.hooks.kvInput = (layer, pos, nTok, k, v) => {
    keys[layer].set(k.subarray(0, nTok * kvDim), (base + pos) * kvDim);
    values[layer].set(v.subarray(0, nTok * kvDim), (base + pos) * kvDim);
  };
  try {
    for (let i = 0; i < nChunks; i++) {
      const chunk = Array.from({ length: ctx }, (_, j) => tokens[i * ctx + j]);
      if (opts.addBos) chunk[0] = opts.bos;
      base = i * ctx;
      model.forward(chunk, 0);
    }
  } finally {
    model.hooks.kvInput = prev;
  }
  return { kvDim, keys, values };
}

/**
 * KVQuant's sensitivity: the loss gradient of every key (before RoPE) and value on the same chunks as
 * collectKvSamples (BOS first, each position predicting the next token of the text), from the training
 * model's backward pass (`tm`: batch 1, ctx = the calibration context, parameters = the model's). The
 * Fisher information of an entry is its squared gradient; KvQuantSide weights its k-means by it.
 */
export function collectKvGrads(tm: TrainModel, tokens: ArrayLike<number>, opts: { ctx: number; chunks: number; bos: number; addBos: boolean }): { keys: Float32Array[]; values: Float32Array[] } {
  const c = tm.config;
  const kvDim = c.nKvHeads * c.headDim;
  const ctx = opts.ctx;
  if (tm.batch !== 1 || tm.ctx !== ctx) fail(`KV gradients: the training model runs ${tm.batch} x ${tm.ctx}, not 1 x ${ctx}`);
  const nChunks = Math.min(opts.chunks, Math.floor(tokens.length / ctx));
  if (nChunks < 1) fail(`the calibration text has ${tokens.length} tokens, fewer than one chunk of ${ctx}`);
  const keys: Float32Array[] = Array.from({ length: c.nLayers }, () => new Float32Array(nChunks * ctx * kvDim));
  const values: Float32Array[] = Array.from({ length: c.nLayers }, () => new Float32Array(nChunks * ctx * kvDim));
  let base = 0;
  const prev = tm.onKvGrads;
  tm.onKvGrads = (l, dk, dv) => {
    for (let i = 0; i < ctx * kvDim; i++) {
      keys[l][base + i] = dk[i];
      values[l][base + i] = dv[i];
    }
  };
  try {
    for (let i = 0; i < nChunks; i++) {
      const chunk = Array.from({ length: ctx }, (_, j) => tokens[i * ctx + j]);
      if (opts.addBos) chunk[0] = opts.bos;
      const targets = Array.from({ length: ctx }, (_, j) => (i * ctx + j + 1 < tokens.length ? tokens[i * ctx + j + 1] : -1));
      base = i * ctx * kvDim;
      tm.zeroGrads();
      tm.forward(chunk, targets);
      tm.backward();
    }
  } finally {
    tm.onKvGrads = prev;
  }
  return { keys, values };
}
