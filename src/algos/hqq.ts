/**
 * HQQ (Badri & Shaji 2023, "Half-Quadratic Quantization"): calibration-free. For each group, start
 * from min/max scale and zero, then optimize the (float) zero-point with a half-quadratic solver on a
 * sparsity-promoting l_p (p < 1) error:
 *   Wq = clamp(round(W * s + z)),  Wr = (Wq - z) / s
 *   We = shrink_p(W - Wr, beta)     (generalized soft threshold: sign(e) * max(|e| - |e|^(p-1) / beta, 0))
 *   z  = mean(Wq - (W - We) * s)
 *   beta *= kappa
 * stopping when the mean absolute error stops improving. Defaults as in the paper's code: p = 0.7,
 * beta = 10, kappa = 1.01, 20 iterations.
 */
import { fail } from '../errors.js';

export interface HqqOptions {
  p?: number;
  beta?: number;
  kappa?: number;
  iters?: number;
}

/**
 * Fit scale and zero of one group (asymmetric uint `bits`) on x[off .. off+g). Writes params:
 * [1/s (the step), z] so that a value dequantizes as (q - z) * step.
 */
export function hqqFit(x: Float32Array, off: number, g: number, bits: number, out: Float64Array, o: number, opts: HqqOptions = {}): void {
  const p = opts.p ?? 0.7;
  let beta = opts.beta ?? 10;
  const kappa = opts.kappa ?? 1.01;
  const iters = opts.iters ?? 20;
  const qmax = 2 ** bits - 1;
  let lo = Infinity;
  let hi = -Infinity;
  for (let j = 0; j < g; j++) {
    lo = Math.min(lo, x[off + j]);
    hi = Math.max(hi, x[off + j]);
  }
  if (!(hi > lo)) {
    out[o] = 1;
    out[o + 1] = -lo; // (q - z) * 1 with q = 0 gives lo
    return;
  }
  const s = qmax / (hi - lo);
  let z = -lo * s;
  let best = Infinity;
  let bestZ = z;
  for (let it = 0; it < iters; it++) {
    let err = 0;
    let sum = 0;
    for (let j = 0; j < g; j++) {
      const w = x[off + j];
      const q = Math.min(qmax, Math.max(0, Math.round(w * s + z)));
      const wr = (q - z) / s;
      const e = w - wr;
      err += Math.abs(e);
      const a = Math.abs(e);
      const we = a === 0 ? 0 : Math.sign(e) * Math.max(a - Math.pow(a, p - 1) / beta, 0);
      sum += q - (w - we) * s;
    }
    err /= g;
    if (err < best) {
      best = err;
      bestZ = z;
    } else break;
    z = sum / g;
    beta *= kappa;
  }
  out[o] = 1 / s;
  out[o + 1] = bestZ;
}
