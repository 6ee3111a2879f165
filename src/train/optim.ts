/**
 * AdamW (Loshchilov & Hutter, decoupled weight decay), learning-rate schedules, global-norm gradient
 * clipping. The state (m, v, step) is plain f32 arrays so a checkpoint holds it byte for byte.
 *
 *   g = grad * clipScale ; m = b1 m + (1 - b1) g ; v = b2 v + (1 - b2) g²
 *   p -= lr * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p )     (wd only on matrices)
 */
import { fail } from '../errors.js';
import type { Vec } from './gemm.js';
import type { ParamTensor } from './llama-grad.js';

export type Schedule = 'cosine' | 'linear' | 'constant';

export interface OptimOptions {
  lr: number;
  /** the schedule decays to lr * minLrRatio */
  minLrRatio: number;
  warmup: number;
  schedule: Schedule;
  steps: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** clip the global gradient norm to this (0: no clipping) */
  clip: number;
}

export const DEFAULT_OPTIM: Readonly<Omit<OptimOptions, 'steps'>> = Object.freeze({
  lr: 1e-3, minLrRatio: 0.1, warmup: 0, schedule: 'cosine' as Schedule, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1,
});

/** learning rate of step `step` (0-based): linear warm-up over `warmup` steps, then the schedule */
export function learningRate(o: OptimOptions, step: number): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  if (o.schedule === 'constant') return o.lr;
  const span = Math.max(1, o.steps - o.warmup);
  const r = Math.min(1, (step - o.warmup) / span);
  const min = o.lr * o.minLrRatio;
  if (o.schedule === 'linear') return o.lr - (o.lr - min) * r;
  return min + 0.5 * (o.lr - min) * (1 + Math.cos(Math.PI * r));
}

/** L2 norm of all gradients (f64 sum, fixed order) */
export function gradNorm(grads: Vec): number {
  let s = 0;
  for (let i = 0; i < grads.length; i++) s += grads[i] * grads[i];
  return Math.sqrt(s);
}

export class AdamW {
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** steps taken */
  t = 0;
  constructor(readonly opts: OptimOptions, readonly tensors: readonly ParamTensor[], size: number) {
    for (const k of ['lr', 'eps'] as const) if (!(opts[k] > 0)) fail(`${k} must be positive (got ${opts[k]})`);
    if (!(opts.beta1 >= 0 && opts.beta1 < 1 && opts.beta2 >= 0 && opts.beta2 < 1)) fail('Adam betas must be in [0, 1)');
    if (!(opts.weightDecay >= 0) || !(opts.clip >= 0)) fail('weight decay and clip must be >= 0');
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
  }

  /** One update of params from grads (clipped to opts.clip first). Returns the gradient norm before clipping and the lr. */
  step(params: Vec, grads: Vec, mask?: (t: ParamTensor) => boolean): { gradNorm: number; lr: number } {
    const o = this.opts;
    const norm = gradNorm(grads);
    const scale = o.clip > 0 && norm > o.clip ? o.clip / norm : 1;
    const lr = learningRate(o, this.t);
    this.t++;
    const bc1 = 1 - Math.pow(o.beta1, this.t);
    const bc2 = 1 - Math.pow(o.beta2, this.t);
    const { m, v } = this;
    for (const t of this.tensors) {
      if (mask && !mask(t)) continue;
      const wd = t.decay ? o.weightDecay : 0;
      for (let i = t.offset; i < t.offset + t.size; i++) {
        const g = grads[i] * scale;
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        params[i] -= lr * (m[i] / bc1 / (Math.sqrt(v[i] / bc2) + o.eps) + wd * params[i]);
      }
    }
    return { gradNorm: norm, lr };
  }
}
