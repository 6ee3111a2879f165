/**
 * Small dense linear algebra in float64 for the PTQ algorithms (Hessians are k x k with k = a layer's
 * input width; k <= a few thousand).
 */
import { fail } from '../errors.js';

/** In-place lower Cholesky factor of the symmetric positive-definite k x k matrix a (row-major). */
export function cholesky(a: Float64Array, k: number): void {
  for (let j = 0; j < k; j++) {
    let s = a[j * k + j];
    for (let p = 0; p < j; p++) s -= a[j * k + p] * a[j * k + p];
    if (!(s > 0)) fail(`matrix is not positive definite (pivot ${j} = ${s}); increase dampening`);
    const d = Math.sqrt(s);
    a[j * k + j] = d;
    for (let i = j + 1; i < k; i++) {
      let t = a[i * k + j];
      for (let p = 0; p < j; p++) t -= a[i * k + p] * a[j * k + p];
      a[i * k + j] = t / d;
    }
    for (let i = 0; i < j; i++) a[i * k + j] = 0;
  }
}

/** Inverse of an SPD matrix from its lower Cholesky factor l: (L L^T)^-1. */
export function choleskyInverse(l: Float64Array, k: number): Float64Array {
  // invert L (lower triangular)
  const li = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    li[i * k + i] = 1 / l[i * k + i];
    for (let j = 0; j < i; j++) {
      let s = 0;
      for (let p = j; p < i; p++) s += l[i * k + p] * li[p * k + j];
      li[i * k + j] = -s / l[i * k + i];
    }
  }
  // (L^-1)^T L^-1
  const inv = new Float64Array(k * k);
  for (let i = 0; i < k; i++)
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let p = i; p < k; p++) s += li[p * k + i] * li[p * k + j];
      inv[i * k + j] = s;
      inv[j * k + i] = s;
    }
  return inv;
}

/** Upper Cholesky factor U (U^T U = a) of an SPD matrix, returned as a new array. */
export function choleskyUpper(a: Float64Array, k: number): Float64Array {
  const l = Float64Array.from(a);
  cholesky(l, k);
  const u = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) u[j * k + i] = l[i * k + j];
  return u;
}

/**
 * The upper Cholesky factor U of H^-1 (H^-1 = U^T U), as GPTQ uses it, in one Cholesky and one
 * triangular inverse (k^3/3 multiply-adds): with J the reversal permutation, factor J H J = M M^T
 * (M lower); then H = R R^T with R = J M J upper, H^-1 = (R^-1)^T R^-1, and U = R^-1 = J M^-1 J.
 * `h` is not modified.
 */
export function inverseCholeskyUpper(h: Float64Array, k: number): Float64Array {
  const m = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) m[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
  cholesky(m, k);
  // X = M^-1 row by row: X[i] = (e_i - sum_{p<i} M[i][p] X[p]) / M[i][i]  (X[p] is zero past column p)
  const x = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    const xi = i * k;
    for (let p = 0; p < i; p++) {
      const a = m[i * k + p];
      if (a === 0) continue;
      const xp = p * k;
      for (let j = 0; j <= p; j++) x[xi + j] -= a * x[xp + j];
    }
    x[xi + i] += 1;
    const d = 1 / m[i * k + i];
    for (let j = 0; j <= i; j++) x[xi + j] *= d;
  }
  const u = m; // reuse: U[i][j] = X[k-1-i][k-1-j]
  u.fill(0);
  for (let i = 0; i < k; i++) for (let j = i; j < k; j++) u[i * k + j] = x[(k - 1 - i) * k + (k - 1 - j)];
  return u;
}
