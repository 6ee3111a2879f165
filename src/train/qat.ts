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
 *   (LSQ, learned step sizes, is not implemented: GGML codecs choose their own block scales)
 *
 * Losses: 'ce' next-token cross-entropy; 'kd' distillation, KL(teacher || student) of the next-token
 * distributions at every position, the teacher being the original model.
 */
import { fail } from '../errors.js';
import type { Vec } from './gemm.js';
import type { TrainModel } from './llama-grad.js';

export type QatMethod = 'ste' | 'dge';
export const QAT_METHODS: readonly QatMethod[] = ['ste', 'dge'];

/** A weight codec: round-trip rows x cols values through the target format. */
export interface WeightCodec {
  /** nominal bits per element of the grid (for DGE's level spacing) */
  readonly bits: number;
  fakeQuant(src: Float32Array, rows: number, cols: number, out: Float32Array): void;
}

export class Qat {
  /** the fake-quantized weights the forward pass uses */
  readonly quantized = new Map<string, Vec>();
  constructor(readonly model: TrainModel, readonly codecs: ReadonlyMap<string, WeightCodec>, readonly method: QatMethod) {
    for (const [name, codec] of codecs) {
      const p = model.byName.get(name);
      if (!p) fail(`QAT: the model has no tensor ${name}`);
      const buf = model.be.alloc(p.size);
      this.quantized.set(name, buf);
      model.weightOverride.set(name, buf);
    }
    this.refresh();
  }

  /** recompute the quantized weights from the master weights (after every optimizer step) */
  refresh(): void {
    for (const [name, codec] of this.codecs) {
      const p = this.model.byName.get(name)!;
      const w = this.model.view(name) as Float32Array;
      const q = this.quantized.get(name)! as Float32Array;
      codec.fakeQuant(w, p.rows, p.cols, q);
    }
  }

  /** turn grads (with respect to the quantized weights) into grads of the master weights */
  mapGrads(): void {
    if (this.method === 'ste') return;
    for (const [name, codec] of this.codecs) {
      const p = this.model.byName.get(name)!;
      dgeScale(this.model.view(name, this.model.grads), this.model.view(name), this.quantized.get(name)!, p.cols, 32, codec.bits);
    }
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
