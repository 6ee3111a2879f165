/**
 * Quantizers of ggml's grid IQ types, byte-identical to llama.cpp (ggml-quants.c of the pinned
 * llama.cpp, quantize_iq2_xxs / iq2_xs / iq2_s / iq3_xxs / iq3_s / iq1_s / iq1_m). Scalar reference
 * code: every float operation is rounded to float32 in C's order (no FMA contraction), so the
 * searches take the same branches as the C code.
 *
 * How they work (facts of the format, see docs in iq.ts for the block layouts):
 *  - elements come in groups of 8 (IQ2/IQ1) or 4 (IQ3) whose magnitudes must be a point of a fixed
 *    grid (256..2048 points, coordinates 2l+1 for small integers l);
 *  - a group's signs are stored as 8 bits (IQ2_S, IQ3_S) or 7 bits with even parity (IQ2_XXS,
 *    IQ2_XS, IQ3_XXS: an odd count flips the least important element);
 *  - per sub-block, a scale search over a few candidate inverse scales rounds each group to the
 *    lattice; a group off the grid takes the best of its precomputed grid neighbours (the grid points
 *    at the nearest one to three squared distances), and the weighted least-squares scale of the best
 *    candidate is kept;
 *  - IQ1_S/IQ1_M (values {-1, 0, 1} shifted by +-1/8) find the optimal 3-way split of the sorted
 *    sub-block exhaustively, then snap groups to the grid the same way.
 * Sub-block scales are stored as 4-bit (3-bit for IQ1) multiples of a per-superblock fp16 scale.
 */
import { fail } from '../../errors.js';
import { checkQuantizeArgs, fround, GROUP_MAX_EPS, makeQpQuants, nearestInt, QK_K, writeF16 } from './common.js';
import { iq1sGrid, iq2sGrid, iq2xsGrid, iq2xxsGrid, iq3sGrid, iq3xxsGrid } from './iq-grids.js';
import { f32ToF16 } from '../../formats/half.js';
import { ggmlTypeByName, type GgmlTypeInfo } from './types.js';

const f = fround;
const FLT_MAX = 3.4028234663852886e38;
const F0_1 = f(0.1);
const F0_2 = f(0.2);
const EPS_IQ3_XXS = f(1e-8);
const EPS_IQ2_S = f(1e-8);
const EPS_IQ1_M = f(1e-7);
const EPS_IQ1_S = f(1e-12);
const IQ1_DELTA = 0.125;

// ---------------------------------------------------------------- grids, maps and neighbour lists

/**
 * A quantization grid as the searches see it: point j has coordinates pos[w*j + i] = 2*l + 1, a
 * point's key packs its l values `bits` bits each; map[key] is the point's index or -1. The neighbour
 * list of an off-grid key (the grid points within the `nwant` smallest squared distances, ordered by
 * distance then index, as llama.cpp's qsort on (distance, index) orders them) is computed on first use.
 */
class IqGrid {
  readonly pos: Int8Array;
  readonly map: Int32Array;
  readonly size: number;
  private readonly lists = new Map<number, Uint16Array>();
  private readonly d2: Int32Array;

  constructor(
    grid: ArrayLike<number>,
    readonly w: number,
    readonly bits: number,
    private readonly nwant: number,
  ) {
    // the grid tables hold dequantized magnitudes; their distinct values in order are l = 0, 1, 2, ...
    const values = [...new Set(Array.from(grid))].sort((a, b) => a - b);
    this.size = grid.length / w;
    this.pos = new Int8Array(grid.length);
    this.map = new Int32Array(1 << (bits * w)).fill(-1);
    for (let j = 0; j < this.size; j++) {
      let key = 0;
      for (let i = 0; i < w; i++) {
        const l = values.indexOf(grid[j * w + i]);
        this.pos[j * w + i] = 2 * l + 1;
        key |= l << (bits * i);
      }
      this.map[key] = j;
    }
    this.d2 = new Int32Array(this.size);
  }

  neighbours(key: number): Uint16Array {
    let list = this.lists.get(key);
    if (list) return list;
    const { w, bits, size, pos, d2 } = this;
    const mask = (1 << bits) - 1;
    const p = new Int32Array(w);
    for (let i = 0; i < w; i++) p[i] = 2 * ((key >> (bits * i)) & mask) + 1;
    for (let j = 0; j < size; j++) {
      let s = 0;
      for (let i = 0; i < w; i++) {
        const d = pos[j * w + i] - p[i];
        s += d * d;
      }
      d2[j] = s;
    }
    // the nwant smallest distinct distances
    const levels: number[] = [];
    for (let j = 0; j < size; j++) {
      const v = d2[j];
      if (levels.includes(v)) continue;
      if (levels.length < this.nwant) levels.push(v);
      else if (v < levels[levels.length - 1]) levels[levels.length - 1] = v;
      else continue;
      levels.sort((a, b) => a - b);
    }
    const out: number[] = [];
    for (const lv of levels) for (let j = 0; j < size; j++) if (d2[j] === lv) out.push(j);
    list = Uint16Array.from(out);
    this.lists.set(key, list);
    return list;
  }
}

let gridCache: Record<string, IqGrid> | undefined;
function grids(): Record<string, IqGrid> {
  if (!gridCache) {
    const lazy = {} as Record<string, IqGrid>;
    const def = (name: string, make: () => IqGrid) => {
      let g: IqGrid | undefined;
      Object.defineProperty(lazy, name, { get: () => (g ??= make()) });
    };
    def('iq2xxs', () => new IqGrid(iq2xxsGrid, 8, 2, 2));
    def('iq2xs', () => new IqGrid(iq2xsGrid, 8, 2, 2));
    def('iq2s', () => new IqGrid(iq2sGrid, 8, 2, 1));
    def('iq1s', () => new IqGrid(Array.from(iq1sGrid), 8, 2, 3));
    def('iq3xxs', () => new IqGrid(iq3xxsGrid, 4, 3, 2));
    def('iq3s', () => new IqGrid(iq3sGrid, 4, 3, 3));
    gridCache = lazy;
  }
  return gridCache;
}

/** iq2_find_best_neighbour / iq3_find_best_neighbour: the neighbour nearest to xval/scale (weights w) */
function bestNeighbour(g: IqGrid, key: number, xval: Float32Array, xo: number, wt: Float32Array, scale: number, L: Int8Array): number {
  const nb = g.neighbours(key);
  const { w, pos } = g;
  let best = FLT_MAX;
  let gi = -1;
  for (let j = 0; j < nb.length; j++) {
    const po = nb[j] * w;
    let d2 = 0;
    for (let i = 0; i < w; i++) {
      const diff = f(f(scale * pos[po + i]) - xval[xo + i]);
      d2 = f(d2 + f(f(wt[xo + i] * diff) * diff));
    }
    if (d2 < best) {
      best = d2;
      gi = nb[j];
    }
  }
  if (gi < 0) fail('IQ quantize: no grid neighbour (non-finite intermediate value)');
  for (let i = 0; i < w; i++) L[xo + i] = (pos[gi * w + i] - 1) >> 1;
  return gi;
}

/**
 * Rounds group k (w elements at xo = w*k) to the lattice at inverse scale id, into L; an off-grid
 * result takes the best neighbour at scale `scale`. Returns true when the rounded point was on the grid.
 */
function roundGroup(g: IqGrid, kMaxQ: number, id: number, scale: number, xval: Float32Array, wt: Float32Array, xo: number, L: Int8Array): boolean {
  let key = 0;
  for (let i = 0; i < g.w; i++) {
    let l = nearestInt(f(0.5 * f(f(id * xval[xo + i]) - 1)));
    l = l < 0 ? 0 : l > kMaxQ - 1 ? kMaxQ - 1 : l;
    L[xo + i] = l;
    key |= l << (g.bits * i);
  }
  if (g.map[key] >= 0) return true;
  bestNeighbour(g, key, xval, xo, wt, scale, L);
  return false;
}

/** the grid index of group k of L (which must be on the grid) */
function gridIndex(g: IqGrid, L: Int8Array, xo: number): number {
  let key = 0;
  for (let i = 0; i < g.w; i++) key |= L[xo + i] << (g.bits * i);
  const gi = g.map[key];
  if (gi < 0) fail('IQ quantize: internal error, a point is not on the grid');
  return gi;
}

/** sum w*x*q and sum w*q*q with q = 2L+1 (float32, in order) */
function lsq(n: number, wt: Float32Array, xval: Float32Array, L: Int8Array, out: Float32Array): void {
  let sumqx = 0;
  let sumq2 = 0;
  for (let i = 0; i < n; i++) {
    const w = wt[i];
    const q = 2 * L[i] + 1;
    sumqx = f(sumqx + f(f(w * xval[i]) * q));
    sumq2 = f(sumq2 + f(f(w * q) * q));
  }
  out[0] = sumqx;
  out[1] = sumq2;
}

/** sigma2 of a superblock: sum x^2 / 256 (scaled by `mul`) */
function sigma2Of(x: Float32Array, xo: number, mul: number): number {
  let s = 0;
  for (let i = 0; i < QK_K; i++) s = f(s + f(x[xo + i] * x[xo + i]));
  return f(f(mul * s) / QK_K);
}

/** weight[i] = qw[i] * sqrt(sigma2 + x^2), or the fallback when there is no importance */
function weights(n: number, x: Float32Array, xo: number, qw: Float32Array | null, qo: number, sigma2: number, wt: Float32Array, noQw: 'x2' | 'iq2s'): void {
  for (let i = 0; i < n; i++) {
    const x2 = f(x[xo + i] * x[xo + i]);
    if (qw) wt[i] = f(qw[qo + i] * f(Math.sqrt(f(sigma2 + x2))));
    else wt[i] = noQw === 'x2' ? x2 : f(f(0.25 * sigma2) + x2);
  }
}

/**
 * |x| into xval and the sign bits per 8 into signs; with `parity`, an odd number of negatives flips
 * the element of least w*x^2 (its sign is implied), and signs keep 7 bits.
 */
function signsOf(n: number, x: Float32Array, xo: number, wt: Float32Array, xval: Float32Array, signs: Uint8Array, parity: boolean): void {
  for (let k = 0; k < n / 8; k++) {
    let nflip = 0;
    let s = 0;
    for (let i = 0; i < 8; i++) {
      const v = x[xo + 8 * k + i];
      if (v >= 0) xval[8 * k + i] = v;
      else {
        xval[8 * k + i] = -v;
        nflip++;
        s |= 1 << i;
      }
    }
    if (parity && nflip % 2) {
      let imin = 0;
      let min = f(f(wt[8 * k] * x[xo + 8 * k]) * x[xo + 8 * k]);
      for (let i = 1; i < 8; i++) {
        const ax = f(f(wt[8 * k + i] * x[xo + 8 * k + i]) * x[xo + 8 * k + i]);
        if (ax < min) {
          min = ax;
          imin = i;
        }
      }
      xval[8 * k + imin] = -xval[8 * k + imin];
      s ^= 1 << imin;
    }
    signs[k] = parity ? s & 127 : s;
  }
}

function maxOf(n: number, v: Float32Array): number {
  let m = v[0];
  for (let i = 1; i < n; i++) m = m > v[i] ? m : v[i];
  return m;
}

/** 4-bit sub-block scale index: nearest_int(0.5*(id*scale - 1)) clamped to 0..15 */
function scaleIndex(id: number, scale: number, max: number): number {
  const l = nearestInt(f(0.5 * f(f(id * scale) - 1)));
  return l < 0 ? 0 : l > max ? max : l;
}

// scratch (single-threaded per module instance)
const weight = new Float32Array(32);
const waux = new Float32Array(32);
const xval = new Float32Array(32);
const L = new Int8Array(32);
const Lu8 = new Uint8Array(L.buffer);
const Laux = new Int8Array(32);
const scales = new Float32Array(16);
const blockSigns = new Uint8Array(8);
const onGrid = new Array<boolean>(8);
const onGridAux = new Array<boolean>(8);
const sums = new Float32Array(2);

// ---------------------------------------------------------------- shared search (IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S)

interface SearchSpec {
  g: IqGrid;
  n: number; // sub-block length
  kMaxQ: number;
  step: number; // 0.1f or 0.2f
  nsteps: number; // is in -nsteps..nsteps
  /** initial on-grid flags (IQ3_S starts from "off grid", so it always refines) */
  initialOnGrid: boolean;
  /** refine only the groups that were off the grid (else all) */
  refineOffGridOnly: boolean;
}

/** the search of quantize_row_iq2_xs/iq2_s/iq3_xxs/iq3_s for one sub-block with max > eps; returns the scale (L is set) */
function searchSubBlock(s: SearchSpec, max: number): number {
  const { g, n, kMaxQ } = s;
  const ng = n / g.w;
  let best = 0;
  let scale = f(max / (2 * kMaxQ - 1));
  for (let k = 0; k < ng; k++) onGrid[k] = s.initialOnGrid;
  for (let is = -s.nsteps; is <= s.nsteps; is++) {
    const id = f(f(2 * kMaxQ - 1 + f(is * s.step)) / max);
    const thisScale = f(1 / id);
    for (let k = 0; k < ng; k++) onGridAux[k] = roundGroup(g, kMaxQ, id, thisScale, xval, waux, g.w * k, Laux);
    lsq(n, weight, xval, Laux, sums);
    const sumqx = sums[0];
    const sumq2 = sums[1];
    if (sumq2 > 0 && f(sumqx * sumqx) > f(best * sumq2)) {
      scale = f(sumqx / sumq2);
      best = f(scale * sumqx);
      L.set(Laux.subarray(0, n));
      for (let k = 0; k < ng; k++) onGrid[k] = onGridAux[k];
    }
  }
  let off = 0;
  for (let k = 0; k < ng; k++) if (!onGrid[k]) off++;
  if (off > 0 && scale > 0) {
    const id = f(1 / scale);
    for (let k = 0; k < ng; k++) {
      if (s.refineOffGridOnly && onGrid[k]) continue;
      // L: the rounding when on the grid, else the best neighbour (both llama.cpp variants end so)
      roundGroup(g, kMaxQ, id, scale, xval, waux, g.w * k, L);
    }
    lsq(n, weight, xval, L, sums);
    if (sums[1] > 0) scale = f(sums[0] / sums[1]);
  }
  return scale;
}

// ---------------------------------------------------------------- IQ2_XXS (66 bytes / 256)

function quantizeRowIq2Xxs(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array | null, qo: number): void {
  const g = grids().iq2xxs;
  const kMaxQ = 3;
  const q2 = new Uint32Array(16);
  for (let ibl = 0; ibl < nBlocks; ibl++) {
    const bo = yo + 66 * ibl;
    const xbo = xo + QK_K * ibl;
    out[bo] = 0;
    out[bo + 1] = 0;
    q2.fill(0);
    let maxScale = 0;
    const sigma2 = sigma2Of(x, xbo, 1);
    for (let ib = 0; ib < 8; ib++) {
      const xb = xbo + 32 * ib;
      weights(32, x, xb, qw, qo + QK_K * ibl + 32 * ib, sigma2, weight, 'x2');
      for (let i = 0; i < 32; i++) waux[i] = f(Math.sqrt(weight[i]));
      signsOf(32, x, xb, weight, xval, blockSigns, true);
      const max = maxOf(32, xval);
      if (max < GROUP_MAX_EPS) {
        scales[ib] = 0;
        continue;
      }
      let scale = makeQpQuants(32, kMaxQ + 1, xval, Lu8, weight);
      const effMax = f(scale * kMaxQ);
      if (effMax <= 0) {
        scales[ib] = 0;
        continue;
      }
      let best = 0;
      for (let is = -6; is <= 6; is++) {
        const id = f(f(2 * kMaxQ - 1 + f(is * F0_1)) / effMax);
        const thisScale = f(1 / id);
        for (let k = 0; k < 4; k++) roundGroup(g, kMaxQ, id, thisScale, xval, waux, 8 * k, Laux);
        lsq(32, weight, xval, Laux, sums);
        if (sums[1] > 0 && f(sums[0] * sums[0]) > f(best * sums[1])) {
          scale = f(sums[0] / sums[1]);
          best = f(scale * sums[0]);
          L.set(Laux);
        }
      }
      if (scale > 0) {
        const id = f(1 / scale);
        for (let k = 0; k < 4; k++) roundGroup(g, kMaxQ, id, scale, xval, waux, 8 * k, L);
        lsq(32, weight, xval, L, sums);
        if (sums[1] > 0) scale = f(sums[0] / sums[1]);
      }
      if (scale < 0) {
        scale = -scale;
        for (let k = 0; k < 4; k++) blockSigns[k] = ~blockSigns[k] & 127;
      }
      for (let k = 0; k < 4; k++) {
        const gi = gridIndex(g, L, 8 * k);
        q2[2 * ib] |= gi << (8 * k);
        q2[2 * ib + 1] |= blockSigns[k] << (7 * k);
      }
      scales[ib] = scale;
      maxScale = maxScale > scale ? maxScale : scale;
    }
    if (!maxScale) {
      out.fill(0, bo + 2, bo + 66);
      continue;
    }
    const d = f(maxScale / 31);
    writeF16(out, bo, d);
    const id = f(1 / d);
    for (let ib = 0; ib < 8; ib++) q2[2 * ib + 1] |= scaleIndex(id, scales[ib], 15) << 28;
    for (let j = 0; j < 16; j++) {
      const v = q2[j];
      const o = bo + 2 + 4 * j;
      out[o] = v & 255;
      out[o + 1] = (v >>> 8) & 255;
      out[o + 2] = (v >>> 16) & 255;
      out[o + 3] = v >>> 24;
    }
  }
}

// ---------------------------------------------------------------- IQ2_XS (74 bytes) and IQ2_S (82 bytes)

function quantizeRowIq2XsOrS(kind: 'xs' | 's', x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array | null, qo: number): void {
  const xs = kind === 'xs';
  const g = xs ? grids().iq2xs : grids().iq2s;
  const bytes = xs ? 74 : 82;
  const spec: SearchSpec = { g, n: 16, kMaxQ: 3, step: F0_1, nsteps: 9, initialOnGrid: true, refineOffGridOnly: true };
  const q2 = new Uint16Array(32);
  for (let ibl = 0; ibl < nBlocks; ibl++) {
    const bo = yo + bytes * ibl;
    const xbo = xo + QK_K * ibl;
    out.fill(0, bo, bo + bytes);
    q2.fill(0);
    let maxScale = 0;
    const sigma2 = sigma2Of(x, xbo, xs ? 1 : 2);
    for (let ib = 0; ib < 16; ib++) {
      const xb = xbo + 16 * ib;
      weights(16, x, xb, qw, qo + QK_K * ibl + 16 * ib, sigma2, weight, 'iq2s');
      for (let i = 0; i < 16; i++) waux[i] = f(Math.sqrt(weight[i]));
      signsOf(16, x, xb, weight, xval, blockSigns, xs);
      const max = maxOf(16, xval);
      L.fill(0);
      if (max < (xs ? GROUP_MAX_EPS : EPS_IQ2_S)) {
        scales[ib] = 0;
        continue;
      }
      let scale = searchSubBlock(spec, max);
      if (scale < 0) {
        scale = -scale;
        for (let k = 0; k < 2; k++) blockSigns[k] = xs ? ~blockSigns[k] & 127 : ~blockSigns[k] & 255;
      }
      for (let k = 0; k < 2; k++) {
        const gi = gridIndex(g, L, 8 * k);
        if (xs) q2[2 * ib + k] = gi | (blockSigns[k] << 9);
        else {
          const i8 = 2 * ib + k;
          out[bo + 2 + i8] = gi & 255;
          out[bo + 66 + (i8 >> 2)] |= (gi >> 8) << (2 * (i8 % 4));
          out[bo + 2 + 32 + i8] = blockSigns[k];
        }
      }
      scales[ib] = scale;
      maxScale = maxScale > scale ? maxScale : scale;
    }
    if (!maxScale) continue; // IQ2_XS: qs zero (C memsets them), IQ2_S: block stays as written
    const d = f(maxScale / 31);
    writeF16(out, bo, xs ? d : f(d * f(0.9875)));
    const id = f(1 / d);
    const so = bo + (xs ? 66 : 74);
    for (let ib = 0; ib < 16; ib++) {
      const l = scaleIndex(id, scales[ib], 15);
      if (ib % 2 === 0) out[so + (ib >> 1)] = l;
      else out[so + (ib >> 1)] |= l << 4;
    }
    if (xs) for (let j = 0; j < 32; j++) {
      out[bo + 2 + 2 * j] = q2[j] & 255;
      out[bo + 3 + 2 * j] = q2[j] >>> 8;
    }
  }
}

// ---------------------------------------------------------------- IQ3_XXS (98 bytes) and IQ3_S (110 bytes)

function quantizeRowIq3Xxs(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array | null, qo: number): void {
  const g = grids().iq3xxs;
  const spec: SearchSpec = { g, n: 32, kMaxQ: 8, step: F0_2, nsteps: 15, initialOnGrid: true, refineOffGridOnly: true };
  const sas = new Uint32Array(8);
  for (let ibl = 0; ibl < nBlocks; ibl++) {
    const bo = yo + 98 * ibl;
    const xbo = xo + QK_K * ibl;
    out.fill(0, bo, bo + 98);
    sas.fill(0);
    let maxScale = 0;
    const sigma2 = sigma2Of(x, xbo, 2);
    for (let ib = 0; ib < 8; ib++) {
      const xb = xbo + 32 * ib;
      weights(32, x, xb, qw, qo + QK_K * ibl + 32 * ib, sigma2, weight, 'x2');
      for (let i = 0; i < 32; i++) waux[i] = f(Math.sqrt(weight[i]));
      signsOf(32, x, xb, weight, xval, blockSigns, true);
      const max = maxOf(32, xval);
      L.fill(0);
      if (max < EPS_IQ3_XXS) {
        scales[ib] = 0;
        continue;
      }
      let scale = searchSubBlock(spec, max);
      if (scale < 0) {
        scale = -scale;
        for (let k = 0; k < 4; k++) blockSigns[k] = ~blockSigns[k] & 127;
      }
      for (let k = 0; k < 8; k++) out[bo + 2 + 8 * ib + k] = gridIndex(g, L, 4 * k);
      sas[ib] = (blockSigns[0] | (blockSigns[1] << 7) | (blockSigns[2] << 14) | (blockSigns[3] << 21)) >>> 0;
      scales[ib] = scale;
      maxScale = maxScale > scale ? maxScale : scale;
    }
    if (!maxScale) {
      out.fill(0, bo + 2, bo + 98);
      continue;
    }
    const d = f(maxScale / 31);
    writeF16(out, bo, f(d * f(1.0125)));
    const id = f(1 / d);
    for (let ib = 0; ib < 8; ib++) {
      const v = (sas[ib] | (scaleIndex(id, scales[ib], 15) << 28)) >>> 0;
      const o = bo + 2 + 64 + 4 * ib;
      out[o] = v & 255;
      out[o + 1] = (v >>> 8) & 255;
      out[o + 2] = (v >>> 16) & 255;
      out[o + 3] = v >>> 24;
    }
  }
}

function quantizeRowIq3S(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array | null, qo: number): void {
  const g = grids().iq3s;
  const spec: SearchSpec = { g, n: 32, kMaxQ: 8, step: F0_2, nsteps: 9, initialOnGrid: false, refineOffGridOnly: false };
  for (let ibl = 0; ibl < nBlocks; ibl++) {
    const bo = yo + 110 * ibl;
    const xbo = xo + QK_K * ibl;
    out.fill(0, bo, bo + 110);
    let qsAt = 0;
    let signsAt = 0;
    let maxScale = 0;
    const sigma2 = sigma2Of(x, xbo, 2);
    for (let ib = 0; ib < 8; ib++) {
      const xb = xbo + 32 * ib;
      weights(32, x, xb, qw, qo + QK_K * ibl + 32 * ib, sigma2, weight, 'x2');
      for (let i = 0; i < 32; i++) waux[i] = f(Math.sqrt(weight[i]));
      signsOf(32, x, xb, weight, xval, blockSigns, false);
      const max = maxOf(32, xval);
      L.fill(0);
      if (!max) {
        scales[ib] = 0;
        continue;
      }
      let scale = searchSubBlock(spec, max);
      if (scale < 0) {
        scale = -scale;
        for (let k = 0; k < 4; k++) blockSigns[k] = ~blockSigns[k] & 255;
      }
      // llama.cpp advances its qs/signs pointers only past the sub-blocks it stores (an all-zero
      // sub-block is skipped and the next one takes its place); qh is indexed by sub-block
      for (let k = 0; k < 8; k++) {
        const gi = gridIndex(g, L, 4 * k);
        out[bo + 2 + qsAt + k] = gi & 255;
        out[bo + 66 + ib] |= (gi >> 8) << k;
      }
      for (let k = 0; k < 4; k++) out[bo + 74 + signsAt + k] = blockSigns[k];
      qsAt += 8;
      signsAt += 4;
      scales[ib] = scale;
      maxScale = maxScale > scale ? maxScale : scale;
    }
    if (!maxScale) continue;
    const d = f(maxScale / 31);
    writeF16(out, bo, f(d * f(1.033)));
    const id = f(1 / d);
    for (let ib = 0; ib < 8; ib += 2) out[bo + 106 + (ib >> 1)] = scaleIndex(id, scales[ib], 15) | (scaleIndex(id, scales[ib + 1], 15) << 4);
  }
}

// ---------------------------------------------------------------- IQ1_S (50 bytes) and IQ1_M (56 bytes)

const X_P = Float32Array.from([-1 + IQ1_DELTA, IQ1_DELTA, 1 + IQ1_DELTA]);
const X_M = Float32Array.from([-1 - IQ1_DELTA, -IQ1_DELTA, 1 - IQ1_DELTA]);

/** iq1_find_best_neighbour2: the neighbour nearest to x (signed) at `scale` with values xg[l] */
function bestNeighbourIq1(g: IqGrid, key: number, x: Float32Array, xo: number, wt: Float32Array, wo: number, scale: number, xg: Float32Array, L: Int8Array, lo: number): number {
  const nb = g.neighbours(key);
  const pos = g.pos;
  let best = FLT_MAX;
  let gi = -1;
  for (let j = 0; j < nb.length; j++) {
    const po = nb[j] * 8;
    let d2 = 0;
    for (let i = 0; i < 8; i++) {
      const q = xg[(pos[po + i] - 1) >> 1];
      const diff = f(f(scale * q) - x[xo + i]);
      d2 = f(d2 + f(f(wt[wo + i] * diff) * diff));
    }
    if (d2 < best) {
      best = d2;
      gi = nb[j];
    }
  }
  if (gi < 0) fail('IQ1 quantize: no grid neighbour (non-finite intermediate value)');
  for (let i = 0; i < 8; i++) L[lo + i] = (pos[gi * 8 + i] - 1) >> 1;
  return gi;
}

/** indices 0..n-1 ordered by x (a stable sort, as glibc's merge-sort qsort orders equal keys) */
function sortedOrder(n: number, x: Float32Array, xo: number, idx: Int32Array): void {
  const a = Array.from({ length: n }, (_, i) => i);
  a.sort((p, q) => (x[xo + p] < x[xo + q] ? -1 : x[xo + p] > x[xo + q] ? 1 : 0));
  for (let i = 0; i < n; i++) idx[i] = a[i];
}

function quantizeRowIq1S(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array, qo: number): void {
  const g = grids().iq1s;
  const bs = 32;
  const idx = new Int32Array(bs);
  const sumx = new Float32Array(bs + 1);
  const sumw = new Float32Array(bs + 1);
  const shifts = new Int8Array(8);
  const index = new Uint16Array(4);
  for (let ibl = 0; ibl < nBlocks; ibl++) {
    const bo = yo + 50 * ibl;
    const xbo = xo + QK_K * ibl;
    out.fill(0, bo, bo + 50);
    let maxScale = 0;
    const sigma2 = sigma2Of(x, xbo, 2);
    for (let ib = 0; ib < 8; ib++) {
      const xb = xbo + bs * ib;
      weights(bs, x, xb, qw, qo + QK_K * ibl + bs * ib, sigma2, weight, 'x2');
      let max = Math.abs(x[xb]);
      for (let i = 1; i < bs; i++) max = max > Math.abs(x[xb + i]) ? max : Math.abs(x[xb + i]);
      if (max < EPS_IQ1_S) {
        scales[ib] = 0;
        shifts[ib] = 1;
        continue;
      }
      sortedOrder(bs, x, xb, idx);
      sumx[0] = 0;
      sumw[0] = 0;
      for (let j = 0; j < bs; j++) {
        const i = idx[j];
        sumx[j + 1] = f(sumx[j] + f(weight[i] * x[xb + i]));
        sumw[j + 1] = f(sumw[j] + weight[i]);
      }
      let bestScore = -FLT_MAX;
      let scale = max;
      let besti1 = -1;
      let besti2 = -1;
      let bestShift = 0;
      for (let i1 = 0; i1 <= bs; i1++) {
        for (let i2 = i1; i2 <= bs; i2++) {
          for (const [xx, sh] of [[X_P, 1], [X_M, -1]] as const) {
            const sumqx = f(f(f(f(sumx[i1] - sumx[0]) * xx[0]) + f(f(sumx[i2] - sumx[i1]) * xx[1])) + f(f(sumx[bs] - sumx[i2]) * xx[2]));
            const sumq2 = f(f(f(f(f(sumw[i1] - sumw[0]) * xx[0]) * xx[0]) + f(f(f(sumw[i2] - sumw[i1]) * xx[1]) * xx[1])) + f(f(f(sumw[bs] - sumw[i2]) * xx[2]) * xx[2]));
            if (sumq2 > 0 && f(sumqx * sumqx) > f(bestScore * sumq2)) {
              scale = f(sumqx / sumq2);
              bestScore = f(scale * sumqx);
              besti1 = i1;
              besti2 = i2;
              bestShift = sh;
            }
          }
        }
      }
      if (besti1 < 0 || besti2 < 0 || bestShift === 0) {
        scales[ib] = 0;
        shifts[ib] = 1;
        continue;
      }
      for (let j = 0; j < besti1; j++) L[idx[j]] = 0;
      for (let j = besti1; j < besti2; j++) L[idx[j]] = 1;
      for (let j = besti2; j < bs; j++) L[idx[j]] = 2;
      if (scale < 0) {
        for (let j = 0; j < bs; j++) L[j] = 2 - L[j];
        scale = -scale;
        bestShift = -bestShift;
      }
      let allOnGrid = true;
      const xx = bestShift === 1 ? X_P : X_M;
      for (let k = 0; k < 4; k++) {
        let key = 0;
        for (let j = 0; j < 8; j++) key |= L[8 * k + j] << (2 * j);
        let gi = g.map[key];
        if (gi < 0) {
          allOnGrid = false;
          gi = bestNeighbourIq1(g, key, x, xb + 8 * k, weight, 8 * k, scale, xx, L, 8 * k);
        }
        index[k] = gi;
      }
      if (!allOnGrid) {
        let sumqx = 0;
        let sumq2 = 0;
        for (let k = 0; k < 4; k++) {
          const po = index[k] * 8;
          for (let j = 0; j < 8; j++) {
            const w = weight[8 * k + j];
            const q = xx[(g.pos[po + j] - 1) >> 1];
            sumqx = f(sumqx + f(f(w * q) * x[xb + 8 * k + j]));
            sumq2 = f(sumq2 + f(f(w * q) * q));
          }
        }
        if (sumqx > 0 && sumq2 > 0) scale = f(sumqx / sumq2);
      }
      let h = 0;
      for (let k = 0; k < 4; k++) {
        out[bo + 2 + 4 * ib + k] = index[k] & 255;
        h |= (index[k] >> 8) << (3 * k);
      }
      out[bo + 34 + 2 * ib] = h & 255;
      out[bo + 35 + 2 * ib] = h >> 8;
      scales[ib] = scale;
      shifts[ib] = bestShift;
      maxScale = maxScale > scale ? maxScale : scale;
    }
    if (!maxScale) continue;
    const d = f(maxScale / 15);
    writeF16(out, bo, f(d * f(1.125)));
    const id = f(1 / d);
    for (let ib = 0; ib < 8; ib++) {
      let l = scaleIndex(id, scales[ib], 7);
      if (shifts[ib] === -1) l |= 8;
      out[bo + 35 + 2 * ib] |= l << 4;
    }
  }
}

function quantizeRowIq1M(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array | null, qo: number): void {
  const g = grids().iq1s;
  const bs = 16;
  const masks = [0x00, 0x80, 0x08, 0x88];
  const idx = new Int32Array(bs);
  const px = [new Float32Array(bs + 1), new Float32Array(bs + 1)];
  const pw = [new Float32Array(bs + 1), new Float32Array(bs + 1)];
  const shifts = new Int8Array(16);
  const index = new Uint16Array(2);
  const sc = new Uint16Array(4);
  const sumqx = new Float32Array(4);
  const sumq2 = new Float32Array(4);
  const p2 = X_P[2];
  const m2 = X_M[2];
  const cp1 = f(f(X_P[0] * X_P[0]) - f(X_P[1] * X_P[1]));
  const cp2 = f(f(X_P[1] * X_P[1]) - f(X_P[2] * X_P[2]));
  const cm1 = f(f(X_M[0] * X_M[0]) - f(X_M[1] * X_M[1]));
  const cm2 = f(f(X_M[1] * X_M[1]) - f(X_M[2] * X_M[2]));
  const xxOf = (k: number, bk: number) => (k === 0 ? (bk < 2 ? X_P : X_M) : bk % 2 === 0 ? X_P : X_M);
  for (let ibl = 0; ibl < nBlocks; ibl++) {
    const bo = yo + 56 * ibl;
    const xbo = xo + QK_K * ibl;
    out.fill(0, bo, bo + 56);
    let maxScale = 0;
    const sigma2 = sigma2Of(x, xbo, 2);
    for (let ib = 0; ib < 16; ib++) {
      const xb = xbo + bs * ib;
      weights(bs, x, xb, qw, qo + QK_K * ibl + bs * ib, sigma2, weight, 'x2');
      let max = Math.abs(x[xb]);
      for (let i = 1; i < bs; i++) max = max > Math.abs(x[xb + i]) ? max : Math.abs(x[xb + i]);
      if (max < EPS_IQ1_M) {
        scales[ib] = 0;
        shifts[ib] = 0;
        continue;
      }
      sortedOrder(bs, x, xb, idx);
      let bestScore = -FLT_MAX;
      let scale = max;
      let besti1 = -1;
      let besti2 = -1;
      let bestK = -1;
      px[0][0] = px[1][0] = 0;
      pw[0][0] = pw[1][0] = 0;
      for (let j = 0; j < bs; j++) {
        const i = idx[j];
        const h = i < bs / 2 ? 0 : 1;
        px[h][j + 1] = f(px[h][j] + f(weight[i] * x[xb + i]));
        px[1 - h][j + 1] = px[1 - h][j];
        pw[h][j + 1] = f(pw[h][j] + weight[i]);
        pw[1 - h][j + 1] = pw[1 - h][j];
      }
      const txs0 = px[0][bs];
      const txs1 = px[1][bs];
      const tws0 = pw[0][bs];
      const tws1 = pw[1][bs];
      for (let i1 = 0; i1 <= bs; i1++) {
        for (let i2 = i1; i2 <= bs; i2++) {
          const sx0 = f(px[0][i1] + px[0][i2]);
          const sx1 = f(px[1][i1] + px[1][i2]);
          const qxp0 = f(f(txs0 * p2) - sx0);
          const qxm0 = f(f(txs0 * m2) - sx0);
          const qxp1 = f(f(txs1 * p2) - sx1);
          const qxm1 = f(f(txs1 * m2) - sx1);
          const q2p0 = f(f(f(f(tws0 * p2) * p2) + f(pw[0][i1] * cp1)) + f(pw[0][i2] * cp2));
          const q2m0 = f(f(f(f(tws0 * m2) * m2) + f(pw[0][i1] * cm1)) + f(pw[0][i2] * cm2));
          const q2p1 = f(f(f(f(tws1 * p2) * p2) + f(pw[1][i1] * cp1)) + f(pw[1][i2] * cp2));
          const q2m1 = f(f(f(f(tws1 * m2) * m2) + f(pw[1][i1] * cm1)) + f(pw[1][i2] * cm2));
          sumqx[0] = f(qxp0 + qxp1);
          sumqx[1] = f(qxp0 + qxm1);
          sumqx[2] = f(qxm0 + qxp1);
          sumqx[3] = f(qxm0 + qxm1);
          sumq2[0] = f(q2p0 + q2p1);
          sumq2[1] = f(q2p0 + q2m1);
          sumq2[2] = f(q2m0 + q2p1);
          sumq2[3] = f(q2m0 + q2m1);
          for (let k = 0; k < 4; k++) {
            if (sumq2[k] > 0 && f(sumqx[k] * sumqx[k]) > f(bestScore * sumq2[k])) {
              scale = f(sumqx[k] / sumq2[k]);
              bestScore = f(scale * sumqx[k]);
              besti1 = i1;
              besti2 = i2;
              bestK = k;
            }
          }
        }
      }
      if (besti1 < 0 || besti2 < 0 || bestK < 0) {
        scales[ib] = 0;
        shifts[ib] = 0;
        continue;
      }
      for (let j = 0; j < besti1; j++) L[idx[j]] = 0;
      for (let j = besti1; j < besti2; j++) L[idx[j]] = 1;
      for (let j = besti2; j < bs; j++) L[idx[j]] = 2;
      if (scale < 0) {
        for (let j = 0; j < bs; j++) L[j] = 2 - L[j];
        scale = -scale;
        bestK = 3 - bestK;
      }
      let allOnGrid = true;
      for (let k = 0; k < 2; k++) {
        const xx = xxOf(k, bestK);
        let key = 0;
        for (let j = 0; j < 8; j++) key |= L[8 * k + j] << (2 * j);
        let gi = g.map[key];
        if (gi < 0) {
          allOnGrid = false;
          gi = bestNeighbourIq1(g, key, x, xb + 8 * k, weight, 8 * k, scale, xx, L, 8 * k);
        }
        index[k] = gi;
      }
      if (!allOnGrid) {
        let sqx = 0;
        let sq2 = 0;
        for (let k = 0; k < 2; k++) {
          const xx = xxOf(k, bestK);
          const po = index[k] * 8;
          for (let j = 0; j < 8; j++) {
            const w = weight[8 * k + j];
            const q = xx[(g.pos[po + j] - 1) >> 1];
            sqx = f(sqx + f(f(w * q) * x[xb + 8 * k + j]));
            sq2 = f(sq2 + f(f(w * q) * q));
          }
        }
        if (sqx > 0 && sq2 > 0) scale = f(sqx / sq2);
      }
      out[bo + 2 * ib] = index[0] & 255;
      out[bo + 2 * ib + 1] = index[1] & 255;
      out[bo + 32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4);
      scales[ib] = scale;
      shifts[ib] = bestK;
      maxScale = maxScale > scale ? maxScale : scale;
    }
    if (!maxScale) continue;
    sc.fill(0);
    let d = f(maxScale / 15);
    const id = f(1 / d);
    let sqx = 0;
    let sq2 = 0;
    for (let ib = 0; ib < 16; ib++) {
      const l = scaleIndex(id, scales[ib], 7);
      sc[ib >> 2] |= l << (3 * (ib % 4));
      out[bo + 32 + ib] |= masks[shifts[ib]];
      const xb = xbo + bs * ib;
      weights(bs, x, xb, qw, qo + QK_K * ibl + bs * ib, sigma2, weight, 'x2');
      const qh = out[bo + 32 + ib];
      for (let k = 0; k < 2; k++) {
        const xx = xxOf(k, shifts[ib]);
        const gi = out[bo + 2 * ib + k] + ((qh << (8 - 4 * k)) & 0x700);
        for (let j = 0; j < 8; j++) {
          const w = weight[8 * k + j];
          const q = f(xx[(g.pos[gi * 8 + j] - 1) >> 1] * (2 * l + 1));
          sqx = f(sqx + f(f(w * q) * x[xb + 8 * k + j]));
          sq2 = f(sq2 + f(f(w * q) * q));
        }
      }
    }
    if (sq2 > 0) d = f(sqx / sq2);
    const s = f32ToF16(f(d * f(1.1125)));
    sc[0] |= (s & 0x000f) << 12;
    sc[1] |= (s & 0x00f0) << 8;
    sc[2] |= (s & 0x0f00) << 4;
    sc[3] |= s & 0xf000;
    for (let j = 0; j < 4; j++) {
      out[bo + 48 + 2 * j] = sc[j] & 255;
      out[bo + 49 + 2 * j] = sc[j] >>> 8;
    }
  }
}

// ---------------------------------------------------------------- entry points

type Row = (x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number, qw: Float32Array | null, qo: number) => void;

/** llama.cpp asserts an importance matrix for these (llama-quantize refuses them without one) */
export const IQ_NEEDS_IMPORTANCE: ReadonlySet<string> = new Set(['IQ2_XXS', 'IQ2_XS', 'IQ1_S']);

function entry(name: string, row: Row) {
  const t = ggmlTypeByName(name) as GgmlTypeInfo;
  return (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void => {
    const rowBytes = checkQuantizeArgs(t, src, nRows, rowLength, out, importance);
    if (!importance && IQ_NEEDS_IMPORTANCE.has(name)) fail(`${name} needs an importance matrix (--imatrix), as in llama.cpp`);
    const nb = rowLength / QK_K;
    for (let r = 0; r < nRows; r++) row(src, r * rowLength, out, r * rowBytes, nb, importance ?? null, 0);
  };
}

export const quantizeIq2Xxs = entry('IQ2_XXS', quantizeRowIq2Xxs);
export const quantizeIq2Xs = entry('IQ2_XS', (x, xo, out, yo, nb, qw, qo) => quantizeRowIq2XsOrS('xs', x, xo, out, yo, nb, qw, qo));
export const quantizeIq2S = entry('IQ2_S', (x, xo, out, yo, nb, qw, qo) => quantizeRowIq2XsOrS('s', x, xo, out, yo, nb, qw, qo));
export const quantizeIq3Xxs = entry('IQ3_XXS', quantizeRowIq3Xxs);
export const quantizeIq3S = entry('IQ3_S', quantizeRowIq3S);
export const quantizeIq1S = entry('IQ1_S', (x, xo, out, yo, nb, qw, qo) => quantizeRowIq1S(x, xo, out, yo, nb, qw!, qo));
export const quantizeIq1M = entry('IQ1_M', quantizeRowIq1M);
