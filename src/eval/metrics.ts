/**
 * Signal-to-quantization-noise ratio in dB: 10 log10(sum x^2 / sum (x - y)^2).
 * +Infinity when the reconstruction is exact.
 */
export function sqnrDb(ref: ArrayLike<number>, approx: ArrayLike<number>): number {
  if (ref instanceof Float32Array && approx instanceof Float32Array) return sqnrDbF32(ref, approx);
  let signal = 0;
  let noise = 0;
  for (let i = 0; i < ref.length; i++) {
    const x = ref[i];
    const d = x - approx[i];
    signal += x * x;
    noise += d * d;
  }
  if (noise === 0) return Infinity;
  return 10 * Math.log10(signal / noise);
}

/** sqnrDb on float32 arrays: the same float64 sums in the same order, in a loop the engine specializes */
function sqnrDbF32(ref: Float32Array, approx: Float32Array): number {
  let signal = 0;
  let noise = 0;
  const n = ref.length;
  for (let i = 0; i < n; i++) {
    const x = ref[i];
    const d = x - approx[i];
    signal += x * x;
    noise += d * d;
  }
  if (noise === 0) return Infinity;
  return 10 * Math.log10(signal / noise);
}

/** Largest |ref - approx|. */
export function maxAbsError(ref: ArrayLike<number>, approx: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ref[i] - approx[i]);
    if (d > m || d !== d) m = d;
  }
  return m;
}

/** log Σ exp(x[off .. off + n)), in float64 (max-shifted) */
export function logSumExp(x: ArrayLike<number>, off: number, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i] > m) m = x[off + i];
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[off + i] - m);
  return m + Math.log(s);
}

/** log-softmax of each row of `width` logits, in place */
export function logSoftmaxRows(x: Float32Array, width: number): void {
  for (let o = 0; o < x.length; o += width) {
    const lse = logSumExp(x, o, width);
    for (let i = 0; i < width; i++) x[o + i] -= lse;
  }
}

/**
 * KL(P || Q) in nats of two next-token distributions given as rows of logits minus their log-sum-exp
 * (lseP, lseQ; 0 for rows that are log-probabilities already): Σ p (log p - log q), never negative.
 * The one KL divergence of the calibration stages, the sensitivity pass and the audit.
 */
export function klDivergenceRow(p: ArrayLike<number>, pOff: number, lseP: number, q: ArrayLike<number>, qOff: number, lseQ: number, n: number): number {
  let kl = 0;
  for (let i = 0; i < n; i++) {
    const a = p[pOff + i] - lseP;
    kl += Math.exp(a) * (a - (q[qOff + i] - lseQ));
  }
  return Math.max(0, kl);
}
