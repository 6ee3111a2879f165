/**
 * The token embedding's "Hessian": the Fisher information of the float model's next-token
 * distributions with respect to the embedding rows it reads, for rounding token_embd like a linear.
 *
 * The embedding is a lookup, not a product, so calibration gives it no H = X^T X (it is rounded to
 * nearest by default). An error e in the row of the token at position i moves every later position's
 * logits; to second order the KL divergence of the quantized model from the float one is
 *
 *   KL ~ 1/2 e^T F_i e,   F_i = sum_t J_ti^T (diag p_t - p_t p_t^T) J_ti = E_y [ g_i g_i^T ],
 *
 * J_ti = d logits_t / d x_i, g_i = d/dx_i sum_t log p(y_t) with every y_t drawn from the float model's
 * own p_t (the cross terms vanish in expectation). Averaged over the calibration positions, F = mean_i F_i
 * is a token-independent metric (dim x dim): every row of the embedding — also of tokens the
 * calibration text rarely holds — is rounded on it, by the weight's algorithms as a linear with this
 * H (GPTQ's error feedback along the columns, AutoRound's per-linear objective). One forward and one
 * backward of the whole float model per window and sample, on the training engine.
 */
import { fail } from '../errors.js';
import type { ModelConfig } from '../model/family.js';
import { rngStream } from '../rng.js';
import { referenceBackend, wasmBackend } from '../train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';
import type { InputStatistics } from './algorithms.js';
import { BLOCK_TENSORS, blockObjectiveRefusal } from './block-round.js';

/** H = 2 mean_i g_i g_i^T as InputStatistics (the scale of H = 2 X^T X / N; GPTQ's damping is relative) */
export class FisherStats implements InputStatistics {
  constructor(readonly k: number, readonly h: Float64Array) {}
  diag(): Float32Array {
    return Float32Array.from({ length: this.k }, (_, j) => this.h[j * this.k + j]);
  }
}

/**
 * The embedding Fisher of the float model (weights by GGUF name, untied or tied output) over the
 * calibration windows, `samples` sampled label sets per window (seeded: the same bytes for the same seed).
 */
export function embeddingFisher(config: ModelConfig, weight: (name: string) => Float32Array | undefined, windows: readonly Int32Array[], ctx: number, samples: number, seed: number, threads = 1): FisherStats {
  return new FisherStats(config.dim, residualFisher(config, weight, windows, ctx, samples, seed, [0], threads).get(0)!);
}

/**
 * The same Fisher at residual points of the float model: point l is layer l's input (0: the embedding
 * rows, l: layer l - 1's output, nLayers: the last layer's output, before the final norm), each
 * H = 2 mean over positions g g^T (dim x dim) of the sampled log-likelihood's gradient there. Point
 * l + 1 is the metric of layer l's output error in the KL divergence of the model's distributions
 * (the later layers' Jacobians included, to first order).
 */
export function residualFisher(config: ModelConfig, weight: (name: string) => Float32Array | undefined, windows: readonly Int32Array[], ctx: number, samples: number, seed: number, points: readonly number[], threads = 1): Map<number, Float64Array> {
  if (!points.every((p) => Number.isInteger(p) && p >= 0 && p <= config.nLayers)) fail(`internal: residual points ${points.join(', ')} outside 0..${config.nLayers}`);
  if (!(Number.isInteger(samples) && samples >= 1)) fail(`--embedding-fisher: samples per window must be a whole number >= 1, got ${samples}`);
  const names: string[] = [];
  for (let l = 0; l < config.nLayers; l++) for (const n of BLOCK_TENSORS) names.push(`blk.${l}.${n}.weight`);
  for (let l = 0; l < config.nLayers; l++) {
    const why = blockObjectiveRefusal(config, names, l);
    if (why) fail(`--embedding-fisher needs plain LLaMA layers (${why})`);
  }
  const tied = weight('output.weight') === undefined;
  const tc: TrainConfig = { ...config, seqLen: ctx, tiedOutput: tied, nExperts: undefined };
  const mo = { batch: 1, ctx };
  const be = wasmBackend(trainModelFloats(tc, mo), threads) ?? referenceBackend('f32');
  try {
    const m = new TrainModel(tc, be, mo);
    for (const t of m.tensors) {
      const v = weight(t.name);
      if (!v || v.length !== t.size) fail(`--embedding-fisher: the model has no ${t.name} of ${t.size} values`);
      m.view(t.name).set(v);
    }
    const dim = config.dim;
    const V = config.vocabSize;
    const hs = new Map(points.map((p) => [p, new Float64Array(dim * dim)]));
    m.onResidualGrads = (l, g) => {
      const h = hs.get(l);
      if (!h) return;
      for (let t = 0; t < ctx; t++) {
        const gt = g.subarray(t * dim, (t + 1) * dim);
        for (let a = 0; a < dim; a++) {
          const ga = gt[a];
          if (ga === 0) continue;
          const ha = a * dim;
          for (let b = 0; b < dim; b++) h[ha + b] += ga * gt[b];
        }
      }
    };
    const rand = rngStream('embeddingFisher', seed);
    const ex = new Float64Array(V); // exp(z - max) of one position, computed once
    let count = 0;
    for (const w of windows) {
      if (w.length !== ctx) fail('--embedding-fisher: calibration windows must be ctx tokens');
      for (let s = 0; s < samples; s++) {
        m.forward(w); // no targets: the logits' gradient is ours
        const z = m.logits();
        const dl = m.logitGrads();
        for (let t = 0; t < ctx; t++) {
          const row = t * V;
          let mx = -Infinity;
          for (let i = 0; i < V; i++) if (z[row + i] > mx) mx = z[row + i];
          let sum = 0;
          for (let i = 0; i < V; i++) sum += ex[i] = Math.exp(z[row + i] - mx);
          // y ~ p_t; d(-log p(y))/dz = p - onehot(y)
          const u = rand() * sum;
          let acc = 0;
          let y = -1;
          for (let i = 0; i < V; i++) {
            const e = ex[i];
            dl[row + i] = e / sum;
            if (y < 0 && (acc += e) > u) y = i;
          }
          dl[row + (y < 0 ? V - 1 : y)] -= 1;
        }
        m.zeroGrads();
        m.backward();
        count += ctx;
      }
    }
    for (const h of hs.values()) for (let i = 0; i < h.length; i++) h[i] *= 2 / count;
    return hs;
  } finally {
    be.close?.();
  }
}

/** the ridge added to each normalized block-output Fisher (a tenth of the squared error stays in the objective) */
export const BLOCK_FISHER_RIDGE = 0.1;

/**
 * --autoround-block-fisher: per layer output (point l + 1, l < nLayers) the metric M = F / (tr F / dim) +
 * BLOCK_FISHER_RIDGE I of its error, F the residual Fisher there (residualFisher).
 */
export function blockFisherMetrics(config: ModelConfig, weight: (name: string) => Float32Array | undefined, windows: readonly Int32Array[], ctx: number, samples: number, seed: number, threads = 1): Map<number, Float64Array> {
  const dim = config.dim;
  const points = Array.from({ length: config.nLayers }, (_, l) => l + 1);
  const fs = residualFisher(config, weight, windows, ctx, samples, seed, points, threads);
  for (const h of fs.values()) {
    let tr = 0;
    for (let j = 0; j < dim; j++) tr += h[j * dim + j];
    const k = tr > 0 ? dim / tr : 0;
    for (let i = 0; i < h.length; i++) h[i] *= k;
    for (let j = 0; j < dim; j++) h[j * dim + j] += BLOCK_FISHER_RIDGE;
  }
  return fs;
}
