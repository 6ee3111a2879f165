/**
 * GPTQ (Frantar et al. 2023): quantize a weight matrix column by column, spreading each column's
 * rounding error over the columns not yet quantized with the inverse Hessian H = 2 X^T X of the layer's
 * calibration inputs. Dampening: H += percDamp * mean(diag H) * I. Lazy batch updates in blocks of
 * `blockSize` columns. actOrder processes columns by decreasing diag(H); groups are then "static"
 * (their scales fitted on the original weights before any update), so the file keeps natural order.
 * Without actOrder, a group's scale/zero are fitted when its first column is reached.
 *
 * Layout: W is n x k row-major (n outputs, k inputs: GGML's layout, a row is an output channel);
 * groups run along rows (k), as every GGML block and grouped scheme does.
 */
import { fail } from '../errors.js';
import { choleskyInverse, cholesky, choleskyUpper } from './linalg.js';

/**
 * How GPTQ quantizes: a group of `groupSize` consecutive values of one row shares `paramCount`
 * parameters (scale, zero, ...) chosen by `fit`; `quant` maps one value to the nearest value
 * representable with those parameters.
 */
export interface GptqGrid {
  readonly name: string;
  readonly groupSize: number;
  readonly paramCount: number;
  fit(x: Float32Array, off: number, params: Float64Array, pOff: number): void;
  quant(x: number, params: Float64Array, pOff: number): number;
}

export interface GptqOptions {
  /** dampening as a fraction of mean(diag H) (default 0.01) */
  percDamp?: number;
  /** lazy-update block width (default 128) */
  blockSize?: number;
  actOrder?: boolean;
}

export interface GptqResult {
  /** quantized weights (on the grid), n x k */
  q: Float32Array;
  /** group parameters, n x (k / groupSize) x paramCount */
  params: Float64Array;
}

/** Accumulate H += 2 / total * X^T X for nTok rows of x (k wide); call finishHessian after the last batch. */
export function accumulateHessian(h: Float64Array, x: Float32Array, nTok: number, k: number): void {
  for (let t = 0; t < nTok; t++) {
    const o = t * k;
    for (let i = 0; i < k; i++) {
      const xi = x[o + i];
      if (xi === 0) continue;
      const row = i * k;
      for (let j = 0; j <= i; j++) h[row + j] += xi * x[o + j];
    }
  }
}

/** Symmetrize (the accumulation fills the lower triangle) and scale by 2 / nTok. */
export function finishHessian(h: Float64Array, k: number, nTok: number): void {
  const s = 2 / Math.max(1, nTok);
  for (let i = 0; i < k; i++)
    for (let j = 0; j <= i; j++) {
      const v = h[i * k + j] * s;
      h[i * k + j] = v;
      h[j * k + i] = v;
    }
}

export function gptq(w: Float32Array, n: number, k: number, hessian: Float64Array, grid: GptqGrid, opts: GptqOptions = {}): GptqResult {
  const g = grid.groupSize;
  if (k % g !== 0) fail(`GPTQ: row length ${k} is not a multiple of the group size ${g} of ${grid.name}`);
  if (w.length !== n * k || hessian.length !== k * k) fail('GPTQ: weight or Hessian has the wrong size');
  const percDamp = opts.percDamp ?? 0.01;
  const B = opts.blockSize ?? 128;
  const H = Float64Array.from(hessian);
  const W = new Float64Array(n * k);
  for (let i = 0; i < n * k; i++) W[i] = w[i];
  // dead inputs: no signal, any value works; quantize them as zero weights
  for (let i = 0; i < k; i++)
    if (H[i * k + i] === 0) {
      H[i * k + i] = 1;
      for (let r = 0; r < n; r++) W[r * k + i] = 0;
    }
  const nGroups = k / g;
  const params = new Float64Array(n * nGroups * grid.paramCount);
  const tmp = new Float32Array(g);
  const fitGroup = (src: Float64Array, r: number, grp: number) => {
    for (let j = 0; j < g; j++) tmp[j] = src[r * k + grp * g + j];
    grid.fit(tmp, 0, params, (r * nGroups + grp) * grid.paramCount);
  };
  // act-order: static groups fitted on the original weights
  let perm: Int32Array | undefined;
  if (opts.actOrder) {
    for (let r = 0; r < n; r++) for (let grp = 0; grp < nGroups; grp++) fitGroup(W, r, grp);
    perm = Int32Array.from({ length: k }, (_, i) => i).sort((a, b) => H[b * k + b] - H[a * k + a] || a - b);
    const Wp = new Float64Array(n * k);
    const Hp = new Float64Array(k * k);
    for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) Wp[r * k + c] = W[r * k + perm[c]];
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) Hp[i * k + j] = H[perm[i] * k + perm[j]];
    W.set(Wp);
    H.set(Hp);
  }
  let mean = 0;
  for (let i = 0; i < k; i++) mean += H[i * k + i];
  const damp = (percDamp * mean) / k;
  for (let i = 0; i < k; i++) H[i * k + i] += damp;
  // Hinv = upper Cholesky factor of H^-1
  cholesky(H, k);
  const Hinv = choleskyUpper(choleskyInverse(H, k), k);
  const Q = new Float64Array(n * k);
  const err = new Float64Array(n * B);
  for (let i1 = 0; i1 < k; i1 += B) {
    const i2 = Math.min(i1 + B, k);
    const count = i2 - i1;
    for (let i = 0; i < count; i++) {
      const col = i1 + i;
      const orig = perm ? perm[col] : col;
      const grp = Math.floor(orig / g);
      if (!perm && orig % g === 0) for (let r = 0; r < n; r++) fitGroup(W, r, grp);
      const d = Hinv[col * k + col];
      for (let r = 0; r < n; r++) {
        const x = W[r * k + col];
        const q = grid.quant(x, params, (r * nGroups + grp) * grid.paramCount);
        Q[r * k + col] = q;
        const e = (x - q) / d;
        err[r * B + i] = e;
        // update the rest of this block
        const wr = r * k;
        const hr = col * k;
        for (let j = col + 1; j < i2; j++) W[wr + j] -= e * Hinv[hr + j];
      }
    }
    // lazy update of the columns after this block
    if (i2 < k)
      for (let r = 0; r < n; r++) {
        const wr = r * k;
        for (let i = 0; i < count; i++) {
          const e = err[r * B + i];
          if (e === 0) continue;
          const hr = (i1 + i) * k;
          for (let j = i2; j < k; j++) W[wr + j] -= e * Hinv[hr + j];
        }
      }
  }
  const q = new Float32Array(n * k);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) q[r * k + (perm ? perm[c] : c)] = Q[r * k + c];
  return { q, params };
}

/** Round-to-nearest with the same grid (the baseline GPTQ is measured against). */
export function rtnWithGrid(w: Float32Array, n: number, k: number, grid: GptqGrid): GptqResult {
  const g = grid.groupSize;
  if (k % g !== 0) fail(`row length ${k} is not a multiple of the group size ${g} of ${grid.name}`);
  const nGroups = k / g;
  const params = new Float64Array(n * nGroups * grid.paramCount);
  const q = new Float32Array(n * k);
  for (let r = 0; r < n; r++)
    for (let grp = 0; grp < nGroups; grp++) {
      const pOff = (r * nGroups + grp) * grid.paramCount;
      grid.fit(w, r * k + grp * g, params, pOff);
      for (let j = 0; j < g; j++) q[r * k + grp * g + j] = grid.quant(w[r * k + grp * g + j], params, pOff);
    }
  return { q, params };
}
