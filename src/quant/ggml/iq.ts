/**
 * ggml's IQ block types, byte-identical to llama.cpp (ggml-quants.c).
 *
 * Quantize + dequantize (non-linear 4-bit codebook kvaluesIq4nl, importance-weighted search):
 *   IQ4_NL (id 20), 32 elements, 18 bytes:    d: f16  qs[16]
 *   IQ4_XS (id 23), 256 elements, 136 bytes:  d: f16  scales_h: u16  scales_l[4]  qs[128]
 *     8 sub-blocks of 32 with 6-bit scales ls = (scales_l nibble) | (2 bits of scales_h) << 4,
 *     sub-block scale = d * (ls - 32). In qs, byte 16*b + j holds elements 32*b + j (low nibble)
 *     and 32*b + 16 + j (high nibble).
 *
 * Grid types (quantizers in iq-quant.ts; elements come in groups of 8 (IQ2/IQ1) or 4 (IQ3) from a grid table,
 * with 7 stored sign bits + implied parity bit per 8 via ksignsIq2xs):
 *   IQ2_XXS (16, 66 B)  d  qs: u16[32]                      per 32: 4 grid bytes + u32 (4x7 signs, 4-bit scale)
 *   IQ2_XS  (17, 74 B)  d  qs: u16[32] (9-bit grid | 7 sign bits << 9)  scales[8] (two 4-bit per 32)
 *   IQ2_S   (22, 82 B)  d  qs[32] (grid low 8)  signs[32]  qh[8] (grid high 2 x 4)  scales[8]
 *   IQ3_XXS (18, 98 B)  d  qs[64] (grid index per 4)  u32[8] (4x7 signs, 4-bit scale)
 *   IQ3_S   (21, 110 B) d  qs[64]  qh[8] (9th grid bit)  signs[32]  scales[4] (two 4-bit per 64)
 *   IQ1_S   (19, 50 B)  d  qs[32] (grid low 8)  qh: u16[8] (3x3 grid high bits, 3-bit scale, delta sign)
 *   IQ1_M   (29, 56 B)  qs[32]  qh[16]  scales: u16[4] (3-bit scales; f16 d spread over the top nibbles)
 */
import type { GgmlCodec } from './types.js';
import { ggmlTypeById } from './types.js';
import { f16ToF32, f32ToF16 } from '../../formats/half.js';
import { checkDequantize, checkQuantize } from './ggmlb-check.js';
import { quantizeIq1M, quantizeIq1S, quantizeIq2S, quantizeIq2Xs, quantizeIq2Xxs, quantizeIq3S, quantizeIq3Xxs } from './iq-quant.js';
import {
  iq1sGrid,
  iq2sGrid,
  iq2xsGrid,
  iq2xxsGrid,
  iq3sGrid,
  iq3xxsGrid,
  ksignsIq2xs,
  kvaluesIq4nl,
} from './iq-grids.js';

const fround = Math.fround;

const IQ2_XXS = ggmlTypeById(16);
const IQ2_XS = ggmlTypeById(17);
const IQ3_XXS = ggmlTypeById(18);
const IQ1_S = ggmlTypeById(19);
const IQ4_NL = ggmlTypeById(20);
const IQ3_S = ggmlTypeById(21);
const IQ2_S = ggmlTypeById(22);
const IQ4_XS = ggmlTypeById(23);
const IQ1_M = ggmlTypeById(29);

// ---------------------------------------------------------------- IQ4_NL / IQ4_XS quantization

/** GROUP_MAX_EPS = 1e-15f */
const GROUP_MAX_EPS = fround(1e-15);
const V0 = kvaluesIq4nl[0]; // -127
const V15 = kvaluesIq4nl[15]; // 113

/**
 * Index of the codebook value nearest to float32 x, exactly as ggml's best_index_int8 (bisection to
 * the bracketing pair, then `x - lo < hi - x` in float32, ties upward). Reference version.
 */
export function bestIndexIq4Ref(x: number): number {
  if (x <= V0) return 0;
  if (x >= V15) return 15;
  let ml = 0;
  let mu = 15;
  while (mu - ml > 1) {
    const mav = (ml + mu) >> 1;
    if (x < kvaluesIq4nl[mav]) mu = mav;
    else ml = mav;
  }
  return fround(x - kvaluesIq4nl[mu - 1]) < fround(kvaluesIq4nl[mu] - x) ? mu - 1 : mu;
}

const f32Scratch = new Float32Array(1);
const i32Scratch = new Int32Array(f32Scratch.buffer);
/** float32 with ordinal o (monotone in value: o = bits for x >= 0, -(bits & 0x7fffffff) for x < 0) */
function f32FromOrdinal(o: number): number {
  i32Scratch[0] = o >= 0 ? o : -o | 0x80000000;
  return f32Scratch[0];
}
function f32Ordinal(x: number): number {
  f32Scratch[0] = x;
  const b = i32Scratch[0];
  return b >= 0 ? b : -(b & 0x7fffffff);
}

/**
 * The reference decision is monotone in x, so it is fully described by 15 float32 thresholds
 * IQ4_THRESHOLD[k] = the smallest x whose index is > k (found by bisection over float32 values with
 * the reference itself; they sit near the midpoints and are >= 11 apart). IQ4_BELOW[floor(x) + 127]
 * counts thresholds <= floor(x); at most one more can lie in (floor(x), x].
 */
const IQ4_THRESHOLD = new Float64Array(16);
const IQ4_BELOW = new Uint8Array(241);
{
  for (let k = 0; k < 15; k++) {
    let lo = f32Ordinal(kvaluesIq4nl[k]); // index <= k here
    let hi = f32Ordinal(kvaluesIq4nl[k + 1]); // index k + 1 here
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (bestIndexIq4Ref(f32FromOrdinal(mid)) > k) hi = mid;
      else lo = mid;
    }
    IQ4_THRESHOLD[k] = f32FromOrdinal(hi);
  }
  IQ4_THRESHOLD[15] = Infinity;
  for (let b = 0; b < 241; b++) {
    let c = 0;
    while (c < 15 && IQ4_THRESHOLD[c] <= b - 127) c++;
    IQ4_BELOW[b] = c;
  }
}

/** bestIndexIq4Ref by table lookup (same result for every float32 x, NaN -> 15 like the bisection) */
export function bestIndexIq4(x: number): number {
  if (x <= V0) return 0;
  if (!(x < V15)) return 15;
  let i = IQ4_BELOW[Math.floor(x) + 127];
  if (x >= IQ4_THRESHOLD[i]) i++;
  return i;
}

/** ggml's nearest_int: float32 add of 1.5 * 2^23 rounds to the nearest integer, ties to even */
function nearestInt(v: number): number {
  return fround(v + 12582912) - 12582912;
}

// scratch, reused across blocks (no per-block allocation)
const L_MAIN = new Uint8Array(256); // codebook index per element
const L_REF = new Uint8Array(32); // the quick IQ4_NL path's own scratch, kept across calls (see quantizeIq4NlRef)
let L = L_MAIN;
const weight = new Float64Array(32); // float32 values
const scales = new Float64Array(8); // float32 values

const xs = new Float64Array(32); // the current sub-block (float32 values)
const KV = /* @__PURE__ */ Float64Array.from(kvaluesIq4nl);
let sumQX = 0;
let sumQ2 = 0;

/**
 * For scale 1/id: codes l_j = bestIndex(id * x_j) and the float32 sums sumQX = sum (w q) x,
 * sumQ2 = sum (w q) q in C's order; codes are stored at L[lOut..] when lOut >= 0.
 */
function weightedSums(id: number, lOut: number): void {
  let sqx = 0;
  let sq2 = 0;
  for (let j = 0; j < 32; j++) {
    const v = xs[j];
    const a = fround(id * v);
    let l: number;
    if (a <= V0) l = 0;
    else if (!(a < V15)) l = 15;
    else {
      l = IQ4_BELOW[Math.floor(a) + 127];
      if (a >= IQ4_THRESHOLD[l]) l++;
    }
    if (lOut >= 0) L[lOut + j] = l;
    const q = KV[l];
    const wq = fround(weight[j] * q);
    sqx = fround(sqx + fround(wq * v));
    sq2 = fround(sq2 + fround(wq * q));
  }
  sumQX = sqx;
  sumQ2 = sq2;
}

const MAX_TRIES = 15; // 2 * 7 + 1, a multiple of 5
const tryId = new Float64Array(MAX_TRIES);
const trySumQX = new Float64Array(MAX_TRIES);
const trySumQ2 = new Float64Array(MAX_TRIES);

/** codebook index of float32 a (bestIndexIq4, inlined form) */
function iq4Index(a: number): number {
  if (a <= V0) return 0;
  if (!(a < V15)) return 15;
  const l = IQ4_BELOW[Math.floor(a) + 127];
  return a >= IQ4_THRESHOLD[l] ? l + 1 : l;
}

/**
 * weightedSums for the scales 1/id, id = (itry - 127) / max, itry = -ntry..ntry, into
 * trySumQX/Q2[itry + ntry]. Five tries at a time side by side, so that their float32 accumulation
 * chains (each strictly sequential, as in C) overlap.
 */
function weightedSumsMany(max: number, ntry: number): void {
  const nt = 2 * ntry + 1;
  for (let t = 0; t < nt; t++) tryId[t] = fround((t - ntry + V0) / max);
  for (let t0 = 0; t0 < nt; t0 += 5) {
    const id0 = tryId[t0];
    const id1 = tryId[t0 + 1];
    const id2 = tryId[t0 + 2];
    const id3 = tryId[t0 + 3];
    const id4 = tryId[t0 + 4];
    let x0 = 0, x1 = 0, x2 = 0, x3 = 0, x4 = 0; // prettier-ignore
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0; // prettier-ignore
    for (let j = 0; j < 32; j++) {
      const v = xs[j];
      const w = weight[j];
      let q = KV[iq4Index(fround(id0 * v))];
      let wq = fround(w * q);
      x0 = fround(x0 + fround(wq * v));
      s0 = fround(s0 + fround(wq * q));
      q = KV[iq4Index(fround(id1 * v))];
      wq = fround(w * q);
      x1 = fround(x1 + fround(wq * v));
      s1 = fround(s1 + fround(wq * q));
      q = KV[iq4Index(fround(id2 * v))];
      wq = fround(w * q);
      x2 = fround(x2 + fround(wq * v));
      s2 = fround(s2 + fround(wq * q));
      q = KV[iq4Index(fround(id3 * v))];
      wq = fround(w * q);
      x3 = fround(x3 + fround(wq * v));
      s3 = fround(s3 + fround(wq * q));
      q = KV[iq4Index(fround(id4 * v))];
      wq = fround(w * q);
      x4 = fround(x4 + fround(wq * v));
      s4 = fround(s4 + fround(wq * q));
    }
    trySumQX[t0] = x0;
    trySumQX[t0 + 1] = x1;
    trySumQX[t0 + 2] = x2;
    trySumQX[t0 + 3] = x3;
    trySumQX[t0 + 4] = x4;
    trySumQ2[t0] = s0;
    trySumQ2[t0 + 1] = s1;
    trySumQ2[t0 + 2] = s2;
    trySumQ2[t0 + 3] = s3;
    trySumQ2[t0 + 4] = s4;
  }
}

/**
 * The shared IQ4_NL / IQ4_XS search (quantize_row_iq4_nl_impl) for one super-block of `superBlock`
 * elements (32 for IQ4_NL, 256 for IQ4_XS) in sub-blocks of 32. For each sub-block, scales
 * d = max / (-127 + t), t in [-ntry, ntry], are tried and the one maximising (sum w q x)^2 / sum w q^2
 * kept, with weights w = qw * sqrt(sigma2 + x^2) (importance) or x^2. ntry is 7 (quantize_X, with or
 * without importance) or -1 (the quick path of quantize_row_iq4_nl_ref: one pass with d = max / -127,
 * then the least-squares refit). All arithmetic in float32, in C's order.
 */
function quantizeIq4Block(
  superBlock: number,
  x: Float32Array,
  xo: number,
  qw: Float32Array | undefined,
  qwo: number,
  out: Uint8Array,
  o: number,
  ntry: number,
): void {
  let sigma2 = 0;
  for (let j = 0; j < superBlock; j++) sigma2 = fround(sigma2 + fround(x[xo + j] * x[xo + j]));
  sigma2 = fround(sigma2 * fround(2 / superBlock));

  const nsub = superBlock >>> 5;
  let maxScale = 0;
  let amaxScale = 0;
  for (let ib = 0; ib < nsub; ib++) {
    const xb = xo + 32 * ib;
    const lb = 32 * ib;
    if (qw) {
      for (let j = 0; j < 32; j++) {
        const v = x[xb + j];
        weight[j] = fround(qw[qwo + 32 * ib + j] * fround(Math.sqrt(fround(sigma2 + fround(v * v)))));
      }
    } else {
      for (let j = 0; j < 32; j++) weight[j] = fround(x[xb + j] * x[xb + j]);
    }
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const ax = Math.abs(x[xb + j]);
      if (ax > amax) {
        amax = ax;
        max = x[xb + j];
      }
    }
    if (amax < GROUP_MAX_EPS) {
      scales[ib] = 0;
      continue;
    }
    for (let j = 0; j < 32; j++) xs[j] = x[xb + j];
    let d = ntry > 0 ? fround(-max / V0) : fround(max / V0);
    weightedSums(fround(1 / d), lb);
    d = sumQ2 > 0 ? fround(sumQX / sumQ2) : 0;
    let best = fround(d * sumQX);
    if (ntry > 0) {
      // the 2 ntry + 1 candidate scales are independent: their sums are computed side by side, then
      // visited in C's order
      weightedSumsMany(max, ntry);
      for (let t = 0; t <= 2 * ntry; t++) {
        const sqx = trySumQX[t];
        const sq2 = trySumQ2[t];
        if (sq2 > 0 && fround(sqx * sqx) > fround(best * sq2)) {
          d = fround(sqx / sq2);
          best = fround(d * sqx);
        }
      }
    }
    scales[ib] = d;
    const absD = Math.abs(d);
    if (absD > amaxScale) {
      amaxScale = absD;
      maxScale = d;
    }
  }

  let qs: number;
  if (nsub > 1) {
    // IQ4_XS: 6-bit signed sub-block scales relative to d = -maxScale / 32
    const d = fround(-maxScale / 32);
    const h = f32ToF16(d);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    const id = d ? fround(1 / d) : 0;
    let scalesH = 0;
    for (let ib = 0; ib < nsub; ib++) {
      let l = nearestInt(fround(id * scales[ib]));
      l = l < -32 ? -32 : l > 31 ? 31 : l;
      const dl = fround(d * l);
      const idl = dl ? fround(1 / dl) : 0;
      const xb = xo + 32 * ib;
      for (let j = 0; j < 32; j++) L[32 * ib + j] = bestIndexIq4(fround(idl * x[xb + j]));
      l += 32;
      if (ib % 2 === 0) out[o + 4 + (ib >> 1)] = l & 0xf;
      else out[o + 4 + (ib >> 1)] |= (l & 0xf) << 4;
      scalesH |= (l >> 4) << (2 * ib);
    }
    out[o + 2] = scalesH & 0xff;
    out[o + 3] = scalesH >>> 8;
    qs = o + 8;
  } else {
    // IQ4_NL: the block scale itself, stored as f16
    const h = f32ToF16(scales[0]);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    if (ntry > 0) {
      const id = scales[0] ? fround(1 / scales[0]) : 0;
      for (let j = 0; j < 32; j++) L[j] = bestIndexIq4(fround(id * x[xo + j]));
    }
    qs = o + 2;
  }
  for (let b = 0; b < nsub; b++) {
    for (let j = 0; j < 16; j++) out[qs + 16 * b + j] = L[32 * b + j] | (L[32 * b + 16 + j] << 4);
  }
}

/**
 * quantize_row_iq4_nl_ref applied to nRows rows in turn: the quick IQ4_NL path (one pass with
 * d = max / -127, refit, no scale search, no importance). For a block with |x| < 1e-15 everywhere
 * llama.cpp writes d = 0 and leaves the codes as its stack scratch held them: zeros in a fresh process,
 * then the codes of the last block quantized by the previous row's call. This emulates exactly that
 * (scratch zeroed per call, kept across rows); the dequantized values are 0 either way.
 */
export function quantizeIq4NlRef(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void {
  const rowBytes = checkQuantize(IQ4_NL, src, nRows, rowLength, out);
  L = L_REF;
  L.fill(0);
  try {
    for (let r = 0; r < nRows; r++) {
      for (let ib = 0; ib < rowLength / 32; ib++) quantizeIq4Block(32, src, r * rowLength + 32 * ib, undefined, 0, out, r * rowBytes + 18 * ib, -1);
    }
  } finally {
    L = L_MAIN;
  }
}

function makeIq4Quantize(t: typeof IQ4_NL, superBlock: number) {
  return function quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    const rowBytes = checkQuantize(t, src, nRows, rowLength, out, importance);
    const nblock = rowLength / superBlock;
    for (let row = 0; row < nRows; row++) {
      for (let ibl = 0; ibl < nblock; ibl++) {
        quantizeIq4Block(superBlock, src, row * rowLength + superBlock * ibl, importance, superBlock * ibl, out, row * rowBytes + ibl * t.typeSize, 7);
      }
    }
  };
}

function dequantizeIq4Nl(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ4_NL, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 18 * i;
    const yo = 32 * i;
    const d = f16ToF32(src[o] | (src[o + 1] << 8));
    for (let j = 0; j < 16; j++) {
      const q = src[o + 2 + j];
      y[yo + j] = d * kvaluesIq4nl[q & 15];
      y[yo + 16 + j] = d * kvaluesIq4nl[q >>> 4];
    }
  }
}

function dequantizeIq4Xs(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ4_XS, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 136 * i;
    const d = f16ToF32(src[o] | (src[o + 1] << 8));
    const scalesH = src[o + 2] | (src[o + 3] << 8);
    for (let ib = 0; ib < 8; ib++) {
      const ls = ((src[o + 4 + (ib >> 1)] >>> (4 * (ib & 1))) & 0xf) | (((scalesH >>> (2 * ib)) & 3) << 4);
      const dl = fround(d * (ls - 32));
      const qo = o + 8 + 16 * ib;
      const yo = 256 * i + 32 * ib;
      for (let j = 0; j < 16; j++) {
        const q = src[qo + j];
        y[yo + j] = dl * kvaluesIq4nl[q & 15];
        y[yo + 16 + j] = dl * kvaluesIq4nl[q >>> 4];
      }
    }
  }
}

// ---------------------------------------------------------------- grid types (dequantize only)

const u16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
const u32 = (b: Uint8Array, o: number): number => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/** 8 elements: y = ±(db * grid[g*8 + j]) with sign bit j of `signs` */
function put8(y: Float32Array, yo: number, db: number, grid: Uint8Array, go: number, signs: number): void {
  for (let j = 0; j < 8; j++) {
    const v = fround(db * grid[go + j]);
    y[yo + j] = (signs >>> j) & 1 ? -v : v;
  }
}

function dequantizeIq2Xxs(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ2_XXS, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 66 * i;
    const d = f16ToF32(u16(src, o));
    for (let ib = 0; ib < 8; ib++) {
      const qo = o + 2 + 8 * ib;
      const aux1 = u32(src, qo + 4);
      const db = fround(fround(d * (0.5 + (aux1 >>> 28))) * 0.25);
      for (let l = 0; l < 4; l++) {
        put8(y, 256 * i + 32 * ib + 8 * l, db, iq2xxsGrid, 8 * src[qo + l], ksignsIq2xs[(aux1 >>> (7 * l)) & 127]);
      }
    }
  }
}

function dequantizeIq2Xs(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ2_XS, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 74 * i;
    const d = f16ToF32(u16(src, o));
    for (let ib = 0; ib < 8; ib++) {
      const sc = src[o + 66 + ib];
      const db0 = fround(fround(d * (0.5 + (sc & 0xf))) * 0.25);
      const db1 = fround(fround(d * (0.5 + (sc >>> 4))) * 0.25);
      for (let l = 0; l < 4; l++) {
        const q = u16(src, o + 2 + 2 * (4 * ib + l));
        put8(y, 256 * i + 32 * ib + 8 * l, l < 2 ? db0 : db1, iq2xsGrid, 8 * (q & 511), ksignsIq2xs[q >>> 9]);
      }
    }
  }
}

function dequantizeIq2S(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ2_S, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 82 * i;
    const d = f16ToF32(u16(src, o));
    const qs = o + 2;
    const signs = qs + 32;
    const qh = o + 66;
    const scales = o + 74;
    for (let ib = 0; ib < 8; ib++) {
      const sc = src[scales + ib];
      const db0 = fround(fround(d * (0.5 + (sc & 0xf))) * 0.25);
      const db1 = fround(fround(d * (0.5 + (sc >>> 4))) * 0.25);
      for (let l = 0; l < 4; l++) {
        const g = src[qs + 4 * ib + l] | ((src[qh + ib] << (8 - 2 * l)) & 0x300);
        put8(y, 256 * i + 32 * ib + 8 * l, l < 2 ? db0 : db1, iq2sGrid, 8 * g, src[signs + 4 * ib + l]);
      }
    }
  }
}

/** 4 + 4 elements from two IQ3 grid entries, signs bits 0..7 */
function put4x2(y: Float32Array, yo: number, db: number, grid: Uint8Array, g1: number, g2: number, signs: number): void {
  for (let j = 0; j < 4; j++) {
    const v1 = fround(db * grid[4 * g1 + j]);
    const v2 = fround(db * grid[4 * g2 + j]);
    y[yo + j] = (signs >>> j) & 1 ? -v1 : v1;
    y[yo + 4 + j] = (signs >>> (j + 4)) & 1 ? -v2 : v2;
  }
}

function dequantizeIq3Xxs(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ3_XXS, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 98 * i;
    const d = f16ToF32(u16(src, o));
    for (let ib = 0; ib < 8; ib++) {
      const qs = o + 2 + 8 * ib;
      const aux = u32(src, o + 2 + 64 + 4 * ib);
      const db = fround(fround(d * (0.5 + (aux >>> 28))) * 0.5);
      for (let l = 0; l < 4; l++) {
        put4x2(y, 256 * i + 32 * ib + 8 * l, db, iq3xxsGrid, src[qs + 2 * l], src[qs + 2 * l + 1], ksignsIq2xs[(aux >>> (7 * l)) & 127]);
      }
    }
  }
}

function dequantizeIq3S(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ3_S, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 110 * i;
    const d = f16ToF32(u16(src, o));
    const qs = o + 2;
    const qh = o + 66;
    const signs = o + 74;
    const scales = o + 106;
    for (let ib = 0; ib < 8; ib++) {
      const sc = src[scales + (ib >> 1)];
      const db = fround(d * (1 + 2 * (ib & 1 ? sc >>> 4 : sc & 0xf)));
      const h = src[qh + ib];
      for (let l = 0; l < 4; l++) {
        const g1 = src[qs + 8 * ib + 2 * l] | ((h << (8 - 2 * l)) & 256);
        const g2 = src[qs + 8 * ib + 2 * l + 1] | ((h << (7 - 2 * l)) & 256);
        put4x2(y, 256 * i + 32 * ib + 8 * l, db, iq3sGrid, g1, g2, src[signs + 4 * ib + l]);
      }
    }
  }
}

/** IQ1S_DELTA = IQ1M_DELTA = 0.125 */
const IQ1_DELTA = 0.125;

/** 8 elements: y = dl * (grid + delta), grid values in {-1, 0, 1} */
function put1(y: Float32Array, yo: number, dl: number, g: number, delta: number): void {
  for (let j = 0; j < 8; j++) y[yo + j] = dl * (iq1sGrid[8 * g + j] + delta);
}

function dequantizeIq1S(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ1_S, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 50 * i;
    const d = f16ToF32(u16(src, o));
    for (let ib = 0; ib < 8; ib++) {
      const qh = u16(src, o + 34 + 2 * ib);
      const dl = fround(d * (2 * ((qh >>> 12) & 7) + 1));
      const delta = qh & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
      for (let l = 0; l < 4; l++) {
        put1(y, 256 * i + 32 * ib + 8 * l, dl, src[o + 2 + 4 * ib + l] | (((qh >>> (3 * l)) & 7) << 8), delta);
      }
    }
  }
}

function dequantizeIq1M(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(IQ1_M, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = 56 * i;
    const sc0 = u16(src, o + 48);
    const sc1 = u16(src, o + 50);
    const sc2 = u16(src, o + 52);
    const sc3 = u16(src, o + 54);
    const d = f16ToF32((sc0 >>> 12) | ((sc1 >>> 8) & 0x00f0) | ((sc2 >>> 4) & 0x0f00) | (sc3 & 0xf000));
    for (let ib = 0; ib < 8; ib++) {
      const sc = u16(src, o + 48 + 2 * (ib >> 1));
      const shift = 6 * (ib & 1);
      const dl1 = fround(d * (2 * ((sc >>> shift) & 7) + 1));
      const dl2 = fround(d * (2 * ((sc >>> (shift + 3)) & 7) + 1));
      const qs = o + 4 * ib;
      const qh0 = src[o + 32 + 2 * ib];
      const qh1 = src[o + 33 + 2 * ib];
      const yo = 256 * i + 32 * ib;
      put1(y, yo, dl1, src[qs] | ((qh0 << 8) & 0x700), qh0 & 0x08 ? -IQ1_DELTA : IQ1_DELTA);
      put1(y, yo + 8, dl1, src[qs + 1] | ((qh0 << 4) & 0x700), qh0 & 0x80 ? -IQ1_DELTA : IQ1_DELTA);
      put1(y, yo + 16, dl2, src[qs + 2] | ((qh1 << 8) & 0x700), qh1 & 0x08 ? -IQ1_DELTA : IQ1_DELTA);
      put1(y, yo + 24, dl2, src[qs + 3] | ((qh1 << 4) & 0x700), qh1 & 0x80 ? -IQ1_DELTA : IQ1_DELTA);
    }
  }
}

// ---------------------------------------------------------------- codecs

export const iq4NlCodec: GgmlCodec = Object.freeze({
  type: IQ4_NL,
  quantize: makeIq4Quantize(IQ4_NL, 32),
  usesImportance: true,
  dequantize: dequantizeIq4Nl,
});

export const iq4XsCodec: GgmlCodec = Object.freeze({
  type: IQ4_XS,
  quantize: makeIq4Quantize(IQ4_XS, 256),
  usesImportance: true,
  dequantize: dequantizeIq4Xs,
});

/** quantize_row_iq4_xs_ref (row by row) is quantize_iq4_xs without importance */
export function quantizeIq4XsRef(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void {
  iq4XsCodec.quantize!(src, nRows, rowLength, out);
}

export const iq2XxsCodec: GgmlCodec = Object.freeze({ type: IQ2_XXS, quantize: quantizeIq2Xxs, usesImportance: true, dequantize: dequantizeIq2Xxs });
export const iq2XsCodec: GgmlCodec = Object.freeze({ type: IQ2_XS, quantize: quantizeIq2Xs, usesImportance: true, dequantize: dequantizeIq2Xs });
export const iq2SCodec: GgmlCodec = Object.freeze({ type: IQ2_S, quantize: quantizeIq2S, usesImportance: true, dequantize: dequantizeIq2S });
export const iq3XxsCodec: GgmlCodec = Object.freeze({ type: IQ3_XXS, quantize: quantizeIq3Xxs, usesImportance: true, dequantize: dequantizeIq3Xxs });
export const iq3SCodec: GgmlCodec = Object.freeze({ type: IQ3_S, quantize: quantizeIq3S, usesImportance: true, dequantize: dequantizeIq3S });
export const iq1SCodec: GgmlCodec = Object.freeze({ type: IQ1_S, quantize: quantizeIq1S, usesImportance: true, dequantize: dequantizeIq1S });
export const iq1MCodec: GgmlCodec = Object.freeze({ type: IQ1_M, quantize: quantizeIq1M, usesImportance: true, dequantize: dequantizeIq1M });

export const iqCodecs: readonly GgmlCodec[] = Object.freeze([
  iq4NlCodec,
  iq4XsCodec,
  iq2XxsCodec,
  iq2XsCodec,
  iq2SCodec,
  iq3XxsCodec,
  iq3SCodec,
  iq1SCodec,
  iq1MCodec,
]);
