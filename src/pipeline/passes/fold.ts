/**
 * Pass "scale folding": equivalence transforms that rewrite the float weights without changing the
 * function. Scales s on a linear input are folded as (previous op) / s and (consumer columns) * s: into
 * a norm group's RMSNorm gain (SmoothQuant, AWQ) or across a fold pair of the model family (v -> o,
 * up -> down: the producer's rows, model/family.ts foldPairs); Outlier Suppression+'s shift adds biases.
 * The statistics of the input are rescaled with it.
 */
import { fail } from '../../errors.js';
import { awqSearchHessian, smoothQuantScales, type AwqLinear } from '../../algos/awq.js';
import type { InputGroup, LinearRole } from '../../model/family.js';
import type { TensorPlan } from '../plan.js';
import { expertView, type ExpertStats, type FloatTensor, type InputStats } from './input-stats.js';
import { codecOf } from './load.js';
import type { LayerCalibration } from './stages.js';

/** every expert's matrix of a 3-D tensor for AWQ's search: its own Hessian, weighted by its share of the tokens */
export function expertAwqLinears(lc: LayerCalibration, tensor: string, planOf: ReadonlyMap<string, TensorPlan>, ex: ExpertStats): AwqLinear[] {
  const t = lc.linear(tensor);
  const nExp = lc.config.nExperts!;
  const codec = codecOf(planOf.get(tensor)!)!;
  const total = ex.perExpert.reduce((a, x) => a + x.count, 0);
  return ex.perExpert.map((st, e) => {
    const v = expertView(t, e, nExp);
    return { w: v.data, n: v.rows, codec, h: st.h, weight: st.count / Math.max(1, total) };
  });
}

/** equivalence transform: scales s folded as (previous op) / s, (consumer columns) * s */
export function foldScales(lc: LayerCalibration, s: Float32Array, st: InputStats, consumers: (string | FloatTensor)[], prev: { norm?: Float32Array; runtimeNorm?: Float32Array; rows?: FloatTensor; rowScale?: (r: number) => number; bias?: Float32Array[] }): void {
  for (const c of consumers) {
    const t = typeof c === 'string' ? lc.linear(c) : c;
    for (let r = 0; r < t.rows; r++) for (let j = 0; j < t.cols; j++) t.data[r * t.cols + j] = Math.fround(t.data[r * t.cols + j] * s[j]);
  }
  if (prev.norm) {
    for (let j = 0; j < s.length; j++) prev.norm[j] = Math.fround(prev.norm[j] / s[j]);
    prev.runtimeNorm!.set(prev.norm);
  }
  if (prev.rows) {
    const t = prev.rows;
    for (let r = 0; r < t.rows; r++) {
      const d = prev.rowScale!(r);
      for (let j = 0; j < t.cols; j++) t.data[r * t.cols + j] = Math.fround(t.data[r * t.cols + j] / d);
      for (const b of prev.bias ?? []) b[r] = Math.fround(b[r] / d);
    }
  }
  st.divideInput(s);
}

export function awqLinears(lc: LayerCalibration, names: string[], planOf: ReadonlyMap<string, TensorPlan>): AwqLinear[] {
  return names.map((c) => ({ w: lc.linear(c).data, n: lc.linear(c).rows, codec: codecOf(planOf.get(c)!)! }));
}

/**
 * AWQ across a fold pair: search the consumer's input scales and move them into the producer's rows.
 * 'heads': the consumer's input channel (head h, i) is the producer's row (kv head of h, i); heads
 * sharing a kv head share a scale (their mean |x| averaged).
 */
export function awqFoldPair(lc: LayerCalibration, channels: 'rows' | 'heads', st: InputStats, consumer: FloatTensor, producer: FloatTensor, consumerPlan: TensorPlan, grid: number, bias: Float32Array[] = []): { alpha: number } {
  let mean = st.meanAbs();
  let rowScale: (s: Float32Array) => (row: number) => number = (s) => (row) => s[row];
  if (channels === 'heads') {
    const { headDim, nHeads, nKvHeads } = lc.config;
    const group = nHeads / nKvHeads;
    const tied = new Float64Array(mean.length);
    for (let c = 0; c < nKvHeads * headDim; c++) {
      const kvh = Math.floor(c / headDim);
      const i = c % headDim;
      let a = 0;
      for (let g = 0; g < group; g++) a += mean[(kvh * group + g) * headDim + i];
      for (let g = 0; g < group; g++) tied[(kvh * group + g) * headDim + i] = a / group;
    }
    mean = tied;
    rowScale = (s) => (row) => s[Math.floor(row / headDim) * group * headDim + (row % headDim)];
  }
  const r = awqSearchHessian(mean, st.h, st.k, [{ w: consumer.data, n: consumer.rows, codec: codecOf(consumerPlan)! }], grid);
  foldScales(lc, r.scales, st, [consumer], { rows: producer, rowScale: rowScale(r.scales), bias });
  return r;
}

/** the runtime's bias field of a linear that OS+ gives a bias */
const BIAS_FIELD: Partial<Record<LinearRole, 'bq' | 'bk' | 'bv' | 'bGate' | 'bUp'>> = { q: 'bq', k: 'bk', v: 'bv', gate: 'bGate', up: 'bUp' };

/**
 * Outlier Suppression+ (Wei et al. 2023) on one norm group, folded: the norm output x is shifted by
 * z_j = (max_j + min_j) / 2 (the channel's asymmetry removed) and scaled by s_j, so the linears read
 * x' = (x - z) / s, whose channels are centred and of similar range (easier to quantize per token).
 * Exact rewrite: norm gain g / s, a new norm bias -z / s, linear columns W diag(s), and a new bias
 * W z per linear (y = W x = W diag(s) x' + W z). The scale is SmoothQuant's formula on the shifted
 * half-ranges, s_j = r_j^alpha / max|W_j|^(1 - alpha) (OS+ searches its scaling threshold instead).
 * LLaMA has no norm or gate/up biases in llama.cpp's graph: the result is lowbit safetensors only.
 */
export function shiftGroup(lc: LayerCalibration, l: number, g: InputGroup, st: InputStats, name: (r: LinearRole) => string, norm: string, runtimeNorm: Float32Array, alpha: number, weights: Map<string, FloatTensor>, added: Map<string, Float32Array>): void {
  const k = st.k;
  const L = lc.model.weights.layers[l];
  const normBias = norm.replace(/\.weight$/, '.bias');
  const lins = g.linears.map((r) => ({ role: r, t: lc.linear(name(r)), bias: name(r).replace(/\.weight$/, '.bias') }));
  for (const x of [normBias, ...lins.map((x) => x.bias)]) if (weights.has(x)) fail(`--shift: ${x} exists already; models with norm or linear biases are not supported by the OS+ fold yet`);
  const z = Float32Array.from({ length: k }, (_, j) => Math.fround((st.max[j] + st.min[j]) / 2));
  const half = Float32Array.from({ length: k }, (_, j) => Math.fround((st.max[j] - st.min[j]) / 2));
  for (const { role, t, bias } of lins) {
    const field = BIAS_FIELD[role] ?? fail(`--shift: no bias for ${name(role)}`);
    const b = new Float32Array(t.rows);
    for (let r = 0; r < t.rows; r++) {
      let acc = 0;
      for (let j = 0; j < k; j++) acc += t.data[r * k + j] * z[j];
      b[r] = Math.fround(acc);
    }
    added.set(bias, b);
    L[field] = b;
  }
  const sc = smoothQuantScales(half, lins.map(({ t }) => ({ w: t.data, n: t.rows })), alpha);
  const nb = Float32Array.from({ length: k }, (_, j) => Math.fround(-z[j] / sc[j]));
  added.set(normBias, nb);
  if (g.input === 'attnNorm') L.attnNormBias = nb;
  else L.ffnNormBias = nb;
  foldScales(lc, sc, st, lins.map(({ role }) => name(role)), { norm: weights.get(norm)!.data, runtimeNorm });
}
