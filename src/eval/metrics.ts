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
