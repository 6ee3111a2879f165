/**
 * AWQ (Lin et al. 2024): protect the input channels that matter most — found from activation
 * magnitudes, not weights — by scaling weight column j by s_j = mean|X_j|^alpha (normalized so that
 * sqrt(max s * min s) = 1) and dividing the input by s_j, which is folded into the preceding RMSNorm
 * gain (or the rows of the previous linear layer). alpha is grid-searched in [0, 1) (20 steps) to
 * minimize the output error of the quantized layers on calibration inputs:
 *   L(alpha) = sum over layers || X W^T - X (Q(W diag s) diag 1/s)^T ||^2.
 */
import type { BlockCodec } from './block-codec.js';
import { rtnBlocks } from './blockwise.js';

export interface Linear {
  /** n x k row-major (rows are outputs) */
  w: Float32Array;
  n: number;
}

export interface AwqResult {
  /** per input channel scale (k) */
  scales: Float32Array;
  alpha: number;
  /** output squared error at the chosen alpha, and at alpha = 0 (plain RTN) */
  loss: number;
  lossRtn: number;
}

/** Apply scales: weight columns times s_j (the previous op must divide its output channel j by s_j). */
export function scaleColumns(l: Linear, k: number, s: Float32Array): void {
  for (let o = 0; o < l.n; o++) for (let j = 0; j < k; j++) l.w[o * k + j] = Math.fround(l.w[o * k + j] * s[j]);
}

/** Fold 1/s into a vector (an RMSNorm gain) or into the rows of the previous linear layer. */
export function divideRows(w: Float32Array, rows: number, cols: number, s: Float32Array): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) w[r * cols + c] = Math.fround(w[r * cols + c] / s[r]);
}

/**
 * SmoothQuant (Xiao et al. 2023): s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) over every weight that
 * reads input channel j; the input is divided by s (folded into the previous op) and the weights'
 * columns multiplied by s, moving activation outliers into the weights for W8A8.
 */
export function smoothQuantScales(actAbsMax: Float32Array, layers: readonly Linear[], alpha = 0.5): Float32Array {
  const k = actAbsMax.length;
  const wmax = new Float64Array(k);
  for (const l of layers) for (let o = 0; o < l.n; o++) for (let j = 0; j < k; j++) wmax[j] = Math.max(wmax[j], Math.abs(l.w[o * k + j]));
  const s = new Float32Array(k);
  for (let j = 0; j < k; j++) {
    const v = Math.pow(Math.max(actAbsMax[j], 1e-5), alpha) / Math.pow(Math.max(wmax[j], 1e-5), 1 - alpha);
    s[j] = Math.fround(Math.max(v, 1e-5));
  }
  return s;
}

/**
 * Per-token dynamic symmetric int8 quantization of activations (the A8 of W8A8): each row of x is
 * scaled by absmax / 127, rounded to nearest even and dequantized, in place.
 */
export function quantizeActivationsPerToken(x: Float32Array, nTok: number, k: number, bits = 8): void {
  const qmax = 2 ** (bits - 1) - 1;
  for (let t = 0; t < nTok; t++) {
    let a = 0;
    for (let j = 0; j < k; j++) a = Math.max(a, Math.abs(x[t * k + j]));
    if (a === 0) continue;
    const s = a / qmax;
    for (let j = 0; j < k; j++) {
      const v = x[t * k + j] / s;
      const f = Math.floor(v);
      const r = v - f > 0.5 || (v - f === 0.5 && f % 2 !== 0) ? f + 1 : f;
      x[t * k + j] = Math.fround(r * s);
    }
  }
}

/**
 * LLM.int8() (Dettmers et al. 2022) as a matmul mode: input features whose magnitude exceeds
 * `threshold` in any token are outliers and go through a 16-bit (fp16-rounded) product; the rest use
 * int8 with per-token (row) scales for x and per-output-channel scales for w. y = x w^T, n x k weights.
 */
export function llmInt8Matmul(x: Float32Array, nTok: number, k: number, w: Float32Array, n: number, threshold = 6): Float32Array {
  const outlier = new Uint8Array(k);
  for (let t = 0; t < nTok; t++) for (let j = 0; j < k; j++) if (Math.abs(x[t * k + j]) > threshold) outlier[j] = 1;
  const r8 = (v: number) => Math.max(-127, Math.min(127, Math.round(v)));
  const xs = new Float32Array(nTok);
  const ws = new Float32Array(n);
  for (let t = 0; t < nTok; t++) {
    let a = 0;
    for (let j = 0; j < k; j++) if (!outlier[j]) a = Math.max(a, Math.abs(x[t * k + j]));
    xs[t] = a / 127 || 1;
  }
  for (let o = 0; o < n; o++) {
    let a = 0;
    for (let j = 0; j < k; j++) if (!outlier[j]) a = Math.max(a, Math.abs(w[o * k + j]));
    ws[o] = a / 127 || 1;
  }
  const half = (v: number) => {
    // fp16 rounding of the outlier path
    const f = Math.fround(v);
    if (f === 0) return 0;
    const e = Math.floor(Math.log2(Math.abs(f)));
    const q = 2 ** (Math.max(e, -14) - 10);
    return Math.round(f / q) * q;
  };
  const y = new Float32Array(nTok * n);
  for (let t = 0; t < nTok; t++)
    for (let o = 0; o < n; o++) {
      let acc = 0;
      let accHalf = 0;
      for (let j = 0; j < k; j++) {
        const xv = x[t * k + j];
        const wv = w[o * k + j];
        if (outlier[j]) accHalf += half(xv) * half(wv);
        else acc += r8(xv / xs[t]) * r8(wv / ws[o]);
      }
      y[t * n + o] = Math.fround(acc * xs[t] * ws[o] + accHalf);
    }
  return y;
}

/** A linear layer for the Hessian-based AWQ search: n x k weights and the codec that will store them. */
export interface AwqLinear {
  w: Float32Array;
  n: number;
  codec: BlockCodec;
  /** this linear's own input Hessian (an expert sees only the tokens routed to it), else the group's */
  h?: Float64Array;
  /** its share of the group's loss (an expert: its tokens / all tokens), default 1 */
  weight?: number;
}

/** sum over rows of d^T H d, d = w - q (H: k x k symmetric) — the output error ||X (W - Q)^T||^2 * 2 / N */
export function outputErrorHessian(w: Float32Array, q: Float32Array, n: number, k: number, h: Float64Array): number {
  const d = new Float64Array(k);
  let loss = 0;
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < k; j++) d[j] = w[r * k + j] - q[r * k + j];
    for (let i = 0; i < k; i++) {
      if (d[i] === 0) continue;
      const hr = i * k;
      let s = 0;
      for (let j = 0; j < k; j++) s += h[hr + j] * d[j];
      loss += d[i] * s;
    }
  }
  return loss;
}

/**
 * AWQ's scale search from calibration statistics: meanAbs (mean |x_j| per input channel) and the
 * Hessian h = 2 X^T X / N, so the output error of a candidate is sum_rows d^T H d exactly (no second
 * pass over the activations). Each candidate alpha scales the weights' columns by s, quantizes them with
 * the real codec (round to nearest) and divides by s again.
 */
export function awqSearchHessian(meanAbs: Float64Array, h: Float64Array, k: number, layers: readonly AwqLinear[], steps = 20): AwqResult {
  const scales = new Float32Array(k);
  const scaled = layers.map((l) => new Float32Array(l.w.length));
  let best = { alpha: 0, loss: Infinity, scales: new Float32Array(k).fill(1) };
  let lossRtn = Infinity;
  for (let step = 0; step < steps; step++) {
    const alpha = step / steps;
    let mx = 0;
    let mn = Infinity;
    for (let j = 0; j < k; j++) {
      const s = Math.max(Math.pow(Math.max(meanAbs[j], 1e-8), alpha), 1e-4);
      scales[j] = s;
      mx = Math.max(mx, s);
      mn = Math.min(mn, s);
    }
    const norm = Math.sqrt(mx * mn);
    for (let j = 0; j < k; j++) scales[j] = Math.fround(scales[j] / norm);
    let loss = 0;
    layers.forEach((l, li) => {
      const ws = scaled[li];
      for (let o = 0; o < l.n; o++) for (let j = 0; j < k; j++) ws[o * k + j] = Math.fround(l.w[o * k + j] * scales[j]);
      const { q } = rtnBlocks(l.codec, ws, l.n, k);
      for (let o = 0; o < l.n; o++) for (let j = 0; j < k; j++) q[o * k + j] = q[o * k + j] / scales[j];
      if (l.weight !== 0) loss += (l.weight ?? 1) * outputErrorHessian(l.w, q, l.n, k, l.h ?? h);
    });
    if (step === 0) lossRtn = loss;
    if (loss < best.loss) best = { alpha, loss, scales: Float32Array.from(scales) };
  }
  return { scales: best.scales, alpha: best.alpha, loss: best.loss, lossRtn };
}
