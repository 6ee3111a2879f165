/**
 * Quantization-aware training: the forward pass sees every quantized weight through its codec (quantize
 * to the target type's bytes, dequantize: exactly what the written file will hold), the backward pass
 * maps the gradient with respect to the quantized weight back to the f32 master weight:
 *
 *   ste  straight-through estimator: dL/dw = dL/dq(w)
 *   dge  differentiable gradient estimator (Wang et al. 2025): dL/dw = dL/dq(w) · f'(w), f a smooth
 *        approximation of the staircase, f'(u) = (1/k)|2u - 1|^(1/k - 1) (k = 5, clipped at 3), u the
 *        position of w between its two neighbouring levels (level spacing: the block's dequantized
 *        range / (2^bits - 1))
 *   lsq  learned step size (Esser et al. 2020): each block's scale d is a parameter trained beside the
 *        weights. q(w) = d · grid[k], k the level nearest to v = w / d (d rounded to f16, as the file
 *        stores it); dL/dw = dL/dq where grid[0] <= v <= grid[last] (0 where v is clipped),
 *        dL/dd = Σ dL/dq · (grid[k] - v inside, grid[k] clipped) · 1/sqrt(block · Qp) (LSQ's gradient
 *        scale, Qp the largest level magnitude); the scales get their own Adam. Formats: those whose
 *        only scale is one f16 per block in front of level indices (Q4_0, Q5_0, Q8_0, Q2_0, Q1_0,
 *        IQ4_NL: see ScaledGrid); the output packs the learned scales and levels as they are.
 *
 * Losses: 'ce' next-token cross-entropy; 'kd' distillation, KL(teacher || student) of the next-token
 * distributions at every position, the teacher being the original model.
 */
import { fail } from '../errors.js';
import { f16ToF32, f32ToF16 } from '../formats/half.js';
import type { Vec } from './gemm.js';
import type { TrainModel } from './llama-grad.js';

export type QatMethod = 'ste' | 'dge' | 'lsq';
export const QAT_METHODS: readonly QatMethod[] = ['ste', 'dge', 'lsq'];

/**
 * A block format whose one scale LSQ can learn: value = d · grid[k], d an f16 in the first two bytes of
 * each block of `block` consecutive values along a row, then the level indices.
 */
export interface ScaledGrid {
  readonly block: number;
  readonly blockBytes: number;
  /** the element levels, ascending */
  readonly grid: readonly number[];
  /** write one block's level indices (the f16 scale is already at out[o], out[o + 1]) */
  packLevels(idx: Uint8Array, out: Uint8Array, o: number): void;
}

/** A weight codec: round-trip rows x cols values through the target format. */
export interface WeightCodec {
  /** nominal bits per element of the grid (for DGE's level spacing) */
  readonly bits: number;
  fakeQuant(src: Float32Array, rows: number, cols: number, out: Float32Array): void;
  /** the format's own bytes of rows x cols values (LSQ reads its starting scales there) */
  quantize?(src: Float32Array, rows: number, cols: number): Uint8Array;
  /** present where LSQ applies */
  readonly scaled?: ScaledGrid;
}

export interface QatOptions {
  /** LSQ: learning rate of the scales relative to the weights' (default 0.1) */
  scaleLr?: number;
  /** LSQ: start from the scales in these bytes of the target format (e.g. GPTQ's) instead of the codec's */
  initBytes?: ReadonlyMap<string, Uint8Array>;
}

export class Qat {
  /** the fake-quantized weights the forward pass uses */
  readonly quantized = new Map<string, Vec>();
  /** LSQ: the learned scales of each tensor (one per block) */
  readonly lsq = new Map<string, LsqScales>();
  constructor(readonly model: TrainModel, readonly codecs: ReadonlyMap<string, WeightCodec>, readonly method: QatMethod, readonly opts: QatOptions = {}) {
    for (const [name, codec] of codecs) {
      const p = model.byName.get(name);
      if (!p) fail(`QAT: the model has no tensor ${name}`);
      const buf = model.be.alloc(p.size);
      this.quantized.set(name, buf);
      model.weightOverride.set(name, buf);
      if (method === 'lsq') {
        if (!codec.scaled || !codec.quantize) fail(`--method lsq learns one f16 scale per block (Q4_0, Q5_0, Q8_0, Q2_0, Q1_0, IQ4_NL); ${name}'s target type has other scales (use ste or dge)`);
        const w = model.view(name) as Float32Array;
        const bytes = opts.initBytes?.get(name) ?? codec.quantize(w, p.rows, p.cols);
        this.lsq.set(name, new LsqScales(codec.scaled, w, bytes));
      }
    }
    this.refresh();
  }

  /** recompute the quantized weights from the master weights (after every optimizer step) */
  refresh(): void {
    for (const [name, codec] of this.codecs) {
      const p = this.model.byName.get(name)!;
      const w = this.model.view(name) as Float32Array;
      const q = this.quantized.get(name)! as Float32Array;
      const l = this.lsq.get(name);
      if (l) l.fakeQuant(w, q);
      else codec.fakeQuant(w, p.rows, p.cols, q);
    }
  }

  /** turn grads (with respect to the quantized weights) into grads of the master weights (and, LSQ, of the scales) */
  mapGrads(): void {
    if (this.method === 'ste') return;
    for (const [name, codec] of this.codecs) {
      const p = this.model.byName.get(name)!;
      const g = this.model.view(name, this.model.grads);
      const l = this.lsq.get(name);
      if (l) l.backward(g, this.model.view(name));
      else dgeScale(g, this.model.view(name), this.quantized.get(name)!, p.cols, 32, codec.bits);
    }
  }

  /** LSQ: one Adam step of every tensor's scales at the weights' learning rate `lr` (call before refresh) */
  stepScales(lr: number, beta1: number, beta2: number, eps: number): void {
    for (const l of this.lsq.values()) l.adam(lr * (this.opts.scaleLr ?? 0.1), beta1, beta2, eps);
  }

  /** LSQ: the target format's bytes of a tensor (learned scales, levels of the master weights) */
  lsqBytes(name: string): Uint8Array | undefined {
    return this.lsq.get(name)?.pack(this.model.view(name));
  }
}

/** LSQ scales of one tensor and their Adam state. */
export class LsqScales {
  readonly scales: Float32Array;
  readonly grads: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  t = 0;
  private readonly uniform: boolean;
  private readonly gradScale: number;

  /** starting scales: per block, the better (squared error) of the scale in `bytes` and a search over its multiples */
  constructor(readonly f: ScaledGrid, w: Vec, bytes: Uint8Array) {
    const nb = w.length / f.block;
    if (!Number.isInteger(nb) || bytes.length !== nb * f.blockBytes) fail(`LSQ: ${w.length} values do not fill blocks of ${f.block} (${bytes.length} bytes)`);
    const g = f.grid;
    this.uniform = g.every((x, i) => i === 0 || x - g[i - 1] === 1);
    this.gradScale = 1 / Math.sqrt(f.block * Math.max(Math.abs(g[0]), Math.abs(g[g.length - 1])));
    this.scales = new Float32Array(nb);
    this.grads = new Float32Array(nb);
    this.m = new Float32Array(nb);
    this.v = new Float32Array(nb);
    const asym = g[0] !== -g[g.length - 1];
    for (let b = 0; b < nb; b++) {
      const d0 = f16ToF32(bytes[b * f.blockBytes] | (bytes[b * f.blockBytes + 1] << 8));
      let best = d0;
      let bestErr = this.blockError(w, b, d0);
      for (let c = 0.3; c <= 1.3001 && d0 !== 0; c += 0.01) {
        for (const sign of asym ? [1, -1] : [1]) {
          const d = sign * c * d0;
          const e = this.blockError(w, b, d);
          if (e < bestErr) { bestErr = e; best = d; }
        }
      }
      this.scales[b] = best;
    }
  }

  private level(v: number): number {
    const g = this.f.grid;
    const n = g.length;
    if (this.uniform) {
      const k = Math.round(v) - g[0];
      return k < 0 ? 0 : k >= n ? n - 1 : k;
    }
    let lo = 0, hi = n - 1; // last level whose midpoint with the next is below v
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (v > 0.5 * (g[mid] + g[mid + 1])) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private blockError(w: Vec, b: number, scale: number): number {
    const d = f16ToF32(f32ToF16(scale));
    const g = this.f.grid;
    let e = 0;
    for (let i = b * this.f.block, end = i + this.f.block; i < end; i++) {
      const r = d === 0 ? w[i] : w[i] - Math.fround(d * g[this.level(w[i] / d)]);
      e += r * r;
    }
    return e;
  }

  fakeQuant(w: Vec, out: Vec): void {
    const { block, grid } = this.f;
    for (let b = 0; b < this.scales.length; b++) {
      const d = f16ToF32(f32ToF16(this.scales[b]));
      for (let i = b * block, end = i + block; i < end; i++) out[i] = d === 0 ? 0 : Math.fround(d * grid[this.level(w[i] / d)]);
    }
  }

  /** g: gradient with respect to the quantized weights, made that of the master weights; the scales' gradients into this.grads */
  backward(g: Vec, w: Vec): void {
    const { block, grid } = this.f;
    const lo = grid[0], hi = grid[grid.length - 1];
    for (let b = 0; b < this.scales.length; b++) {
      const d = f16ToF32(f32ToF16(this.scales[b]));
      let gs = 0;
      for (let i = b * block, end = i + block; i < end; i++) {
        if (d === 0) continue;
        const v = w[i] / d;
        const q = grid[this.level(v)];
        if (v < lo || v > hi) {
          gs += g[i] * q;
          g[i] = 0;
        } else gs += g[i] * (q - v);
      }
      this.grads[b] = gs * this.gradScale;
    }
  }

  adam(lr: number, beta1: number, beta2: number, eps: number): void {
    this.t++;
    const bc1 = 1 - Math.pow(beta1, this.t), bc2 = 1 - Math.pow(beta2, this.t);
    const { m, v, grads, scales } = this;
    for (let b = 0; b < scales.length; b++) {
      m[b] = beta1 * m[b] + (1 - beta1) * grads[b];
      v[b] = beta2 * v[b] + (1 - beta2) * grads[b] * grads[b];
      const next = scales[b] - (lr * m[b]) / bc1 / (Math.sqrt(v[b] / bc2) + eps);
      if (next * scales[b] > 0) scales[b] = next; // a scale never crosses zero
    }
  }

  /** the format's bytes: f16 scales and the level of every master weight */
  pack(w: Vec): Uint8Array {
    const { block, blockBytes } = this.f;
    const out = new Uint8Array(this.scales.length * blockBytes);
    const idx = new Uint8Array(block);
    for (let b = 0; b < this.scales.length; b++) {
      const h = f32ToF16(this.scales[b]);
      const d = f16ToF32(h);
      for (let j = 0; j < block; j++) idx[j] = d === 0 ? this.level(0) : this.level(w[b * block + j] / d);
      const o = b * blockBytes;
      out[o] = h & 0xff;
      out[o + 1] = h >>> 8;
      this.f.packLevels(idx, out, o);
    }
    return out;
  }
}

/**
 * DGE: scale g[i] by f'(u) where u is w's position between the neighbouring levels of its block of
 * `block` values in a row; level spacing = (max q - min q) / (2^bits - 1) over the block's quantized values.
 */
export function dgeScale(g: Vec, w: Vec, q: Vec, cols: number, block: number, bits: number, k = 5, clip = 3): void {
  const levels = Math.pow(2, Math.max(1, Math.round(bits))) - 1;
  for (let a = 0; a < w.length; a += block) {
    const e = Math.min(w.length, a + block, (Math.floor(a / cols) + 1) * cols);
    let lo = Infinity, hi = -Infinity;
    for (let i = a; i < e; i++) {
      if (q[i] < lo) lo = q[i];
      if (q[i] > hi) hi = q[i];
    }
    const step = (hi - lo) / levels;
    if (!(step > 0)) continue;
    for (let i = a; i < e; i++) {
      const pos = (w[i] - lo) / step;
      if (pos <= 0 || pos >= levels) continue; // outside the grid: pass through
      const u = pos - Math.floor(pos);
      const d = Math.abs(2 * u - 1);
      g[i] *= d === 0 ? clip : Math.min(clip, Math.pow(d, 1 / k - 1) / k);
    }
  }
}

/**
 * Distillation: replace the model's logit gradient by that of mean KL(teacher || student) over the
 * positions with a target (>= 0) and return the loss. Both logit arrays are (positions x vocab).
 */
export function distillationLoss(student: Vec, teacher: Vec, grad: Vec, targets: ArrayLike<number>, vocab: number): number {
  let count = 0;
  for (let t = 0; t < targets.length; t++) if (targets[t] >= 0) count++;
  let loss = 0;
  const ps = new Float64Array(vocab);
  for (let t = 0; t < targets.length; t++) {
    const o = t * vocab;
    if (targets[t] < 0) {
      grad.fill(0, o, o + vocab);
      continue;
    }
    const lseS = logSumExp(student, o, vocab);
    const lseT = logSumExp(teacher, o, vocab);
    for (let i = 0; i < vocab; i++) {
      const lt = teacher[o + i] - lseT;
      const pt = Math.exp(lt);
      ps[i] = Math.exp(student[o + i] - lseS);
      if (pt > 0) loss += pt * (lt - (student[o + i] - lseS));
      grad[o + i] = (ps[i] - pt) / count;
    }
  }
  return count ? loss / count : 0;
}

function logSumExp(v: Vec, o: number, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (v[o + i] > m) m = v[o + i];
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(v[o + i] - m);
  return m + Math.log(s);
}
