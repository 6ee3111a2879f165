/**
 * LoRC (ZeroQuant-V2, Yao et al. 2023): low-rank compensation of a weight's quantization error.
 * E = W - Q (n x k) is approximated by its best rank-r factorization A B (A: n x r, B: r x k, both
 * stored as f16), so the runtime computes with Q + A B. Cost: 16 r (n + k) bits per matrix, i.e.
 * 16 r (n + k) / (n k) extra bits per weight (0.06 bpw for r = 8 on 4096 x 4096; 4 bpw on 64 x 64).
 *
 * The factorization is a truncated SVD by subspace iteration: V (k x r) starts seeded-random and is
 * repeatedly replaced by an orthonormal basis of E^T E V (Gram-Schmidt, twice for stability); after
 * `iters` steps span(V) is the top-r right singular subspace to within (s_{r+1} / s_r)^(2 iters), and
 * A = E V, B = V^T gives E V V^T, the projection of E on it (the Eckart-Young optimum when span(V)
 * is exact). A and B are then rounded to f16 and Q + A B uses the rounded factors.
 */
import { fail } from '../errors.js';
import { fakeQuantRef } from '../formats/cast.js';
import { fp16 } from '../formats/registry.js';
import { rngStream } from '../rng.js';

export interface LowRank {
  /** n x r, f16 values */
  a: Float32Array;
  /** r x k, f16 values */
  b: Float32Array;
  rank: number;
}

/** the largest rank a n x k matrix has */
export const maxRank = (n: number, k: number) => Math.min(n, k);

/** Check a LoRC rank against a matrix (one clear line when it does not fit). */
export function checkRank(rank: number, name: string, n: number, k: number): void {
  if (!Number.isSafeInteger(rank) || rank < 0) fail(`--lorc ${rank}: the rank must be a non-negative integer`);
  if (rank > maxRank(n, k)) fail(`--lorc ${rank}: larger than the rank of ${name} (${n} x ${k} has rank at most ${maxRank(n, k)})`);
}

/** orthonormalize the r columns of v (k x r, row-major) in place by modified Gram-Schmidt */
function orthonormalize(v: Float64Array, k: number, r: number, seed: () => number): void {
  for (let c = 0; c < r; c++) {
    for (let pass = 0; pass < 2; pass++)
      for (let p = 0; p < c; p++) {
        let d = 0;
        for (let i = 0; i < k; i++) d += v[i * r + c] * v[i * r + p];
        for (let i = 0; i < k; i++) v[i * r + c] -= d * v[i * r + p];
      }
    let norm = 0;
    for (let i = 0; i < k; i++) norm += v[i * r + c] ** 2;
    norm = Math.sqrt(norm);
    if (norm < 1e-30) {
      // E has rank < c + 1 in this subspace: any direction orthogonal to the others serves
      for (let i = 0; i < k; i++) v[i * r + c] = seed() - 0.5;
      c--;
      continue;
    }
    for (let i = 0; i < k; i++) v[i * r + c] /= norm;
  }
}

/** Rank-r factors of e (n x k): e ~ a b. Deterministic for a seed. */
export function lowRankFactors(e: Float32Array, n: number, k: number, rank: number, opts: { iters?: number; seed?: number } = {}): LowRank {
  if (e.length !== n * k) fail(`LoRC: ${e.length} values are not ${n} x ${k}`);
  checkRank(rank, 'the matrix', n, k);
  const r = rank;
  const iters = opts.iters ?? 12;
  const rand = rngStream('lorcStart', opts.seed ?? 0);
  const v = Float64Array.from({ length: k * r }, () => rand() - 0.5);
  const ev = new Float64Array(n * r);
  orthonormalize(v, k, r, rand);
  const mulEV = () => {
    ev.fill(0);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < k; j++) {
        const x = e[i * k + j];
        if (x === 0) continue;
        for (let c = 0; c < r; c++) ev[i * r + c] += x * v[j * r + c];
      }
  };
  for (let it = 0; it < iters; it++) {
    mulEV();
    v.fill(0); // V = E^T (E V)
    for (let i = 0; i < n; i++)
      for (let j = 0; j < k; j++) {
        const x = e[i * k + j];
        if (x === 0) continue;
        for (let c = 0; c < r; c++) v[j * r + c] += x * ev[i * r + c];
      }
    orthonormalize(v, k, r, rand);
  }
  mulEV();
  const a = fakeQuantRef(fp16, Float32Array.from(ev));
  const bt = new Float32Array(r * k);
  for (let j = 0; j < k; j++) for (let c = 0; c < r; c++) bt[c * k + j] = v[j * r + c];
  return { a, b: fakeQuantRef(fp16, bt), rank: r };
}

/** q += a b (n x k) */
export function addLowRank(q: Float32Array, n: number, k: number, f: LowRank): void {
  const { a, b, rank: r } = f;
  for (let i = 0; i < n; i++)
    for (let c = 0; c < r; c++) {
      const x = a[i * r + c];
      if (x === 0) continue;
      const bo = c * k;
      for (let j = 0; j < k; j++) q[i * k + j] = Math.fround(q[i * k + j] + x * b[bo + j]);
    }
}
