/**
 * GGML K-quants, byte-identical to llama.cpp (ggml-quants.c): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.
 * Super-blocks of QK_K = 256 elements, sub-blocks of 16 or 32 with quantized sub-block scales.
 *
 * Block layouts (ggml-common.h; fp16 little-endian):
 *   Q2_K (84 B):  scales[16] (lo nibble scale, hi nibble min) | qs[64] (2 bit) | d:f16 | dmin:f16
 *                 x = d*sc * q - dmin*m, 16 sub-blocks of 16
 *   Q3_K (110 B): hmask[32] (bit 2 of q) | qs[64] (bits 0-1) | scales[12] (16 x 6 bit, offset 32) | d:f16
 *                 x = d*(sc-32) * (q-4)
 *   Q4_K (144 B): d:f16 | dmin:f16 | scales[12] (8 scales + 8 mins, 6 bit) | qs[128] (4 bit)
 *                 x = d*sc * q - dmin*m, 8 sub-blocks of 32
 *   Q5_K (176 B): d:f16 | dmin:f16 | scales[12] | qh[32] (bit 4) | qs[128] (bits 0-3)
 *   Q6_K (210 B): ql[128] (bits 0-3) | qh[64] (bits 4-5) | scales:i8[16] | d:f16
 *                 x = d*sc * (q-32)
 *   Q8_K (292 B): d:f32 | qs:i8[256] | bsums:i16[16] (sums of 16 quants)
 *
 * quantize_X without importance is quantize_row_X_ref (what llama-quantize writes without an imatrix),
 * with importance the quantize_row_X_impl weighted path. quantizeRowQxKImpl(…, null) also exposes the
 * impl functions' own no-weights branch (Q3_K..Q6_K), which llama.cpp never reaches through quantize_X.
 */
import type { GgmlCodec } from './types.js';
import { ggmlTypeByName } from './types.js';
import {
  checkDequantizeArgs, checkQuantizeArgs, F0_1, fround, GROUP_MAX_EPS, makeQ3Quants, makeQkxQuants, makeQpQuants,
  makeQxQuants, nearestInt, QK_K, readF16, readF32, writeF16, writeF32,
} from './common.js';

const type = (name: string) => ggmlTypeByName(name)!;
const Q2_K = type('Q2_K');
const Q3_K = type('Q3_K');
const Q4_K = type('Q4_K');
const Q5_K = type('Q5_K');
const Q6_K = type('Q6_K');
const Q8_K = type('Q8_K');

// scratch, reused by every block (no per-block allocation)
const Lu = new Uint8Array(QK_K);
const Li = new Int8Array(QK_K);
const weights = new Float32Array(QK_K);
const scales = new Float32Array(16);
const mins = new Float32Array(16);
const sw = new Float32Array(16);
const Ls = new Uint8Array(16);
const Lm = new Uint8Array(16);
const Lsi = new Int8Array(16);

const R_M05 = fround(-0.5);
const R_M09 = fround(-0.9);
const R_M1 = -1;
const D_005 = fround(0.05);

/** sum of x^2 over the super-block, float32 sequential */
function sumSquares(x: Float32Array, xo: number, n: number): number {
  let s = 0;
  for (let l = 0; l < n; l++) s = fround(s + fround(x[xo + l] * x[xo + l]));
  return s;
}

/** weights[base + l] = qw[l] * sqrtf(sigma2 + x^2) */
function imatrixWeights(x: Float32Array, xo: number, qw: Float32Array, qo: number, n: number, sigma2: number): void {
  for (let l = 0; l < n; l++) {
    const v = x[xo + l];
    weights[l] = fround(qw[qo + l] * fround(Math.sqrt(fround(sigma2 + fround(v * v)))));
  }
}

/** packs 2-bit L (groups of 32 interleaved by 4) into qs: the Q2_K / Q3_K low-bit layout */
function pack2(out: Uint8Array, qo: number): void {
  for (let j = 0; j < QK_K; j += 128) {
    for (let l = 0; l < 32; l++) {
      out[qo + j / 4 + l] = Lu[j + l] | (Lu[j + l + 32] << 2) | (Lu[j + l + 64] << 4) | (Lu[j + l + 96] << 6);
    }
  }
}

// ================================================================ Q2_K

function requantizeQ2(x: Float32Array, xo: number, out: Uint8Array, yo: number): void {
  const dAll = readF16(out, yo + 80);
  const mAll = readF16(out, yo + 82);
  for (let j = 0; j < 16; j++) {
    const sc = out[yo + j];
    const d = fround(dAll * (sc & 0xf));
    if (!d) continue;
    const dm = fround(mAll * (sc >>> 4));
    for (let ii = 0; ii < 16; ii++) {
      let l = nearestInt(fround(fround(x[xo + 16 * j + ii] + dm) / d));
      l = l < 0 ? 0 : l > 3 ? 3 : l;
      Lu[16 * j + ii] = l;
    }
  }
  pack2(out, yo + 16);
}

/** quantize_row_q2_K_ref */
export function quantizeRowQ2_KRef(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  const q4scale = 15;
  for (let i = 0; i < nBlocks; i++, xo += QK_K, yo += 84) {
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 16; j++) {
      for (let l = 0; l < 16; l++) weights[l] = Math.abs(x[xo + 16 * j + l]);
      scales[j] = makeQkxQuants(16, 3, x, xo + 16 * j, weights, 0, Lu, 16 * j, mins, j, R_M05, F0_1, 15, true);
      if (scales[j] > maxScale) maxScale = scales[j];
      if (mins[j] > maxMin) maxMin = mins[j];
    }
    if (maxScale > 0) {
      const iscale = fround(q4scale / maxScale);
      for (let j = 0; j < 16; j++) out[yo + j] = nearestInt(fround(iscale * scales[j]));
      writeF16(out, yo + 80, fround(maxScale / q4scale));
    } else {
      for (let j = 0; j < 16; j++) out[yo + j] = 0;
      writeF16(out, yo + 80, 0);
    }
    if (maxMin > 0) {
      const iscale = fround(q4scale / maxMin);
      for (let j = 0; j < 16; j++) out[yo + j] |= nearestInt(fround(iscale * mins[j])) << 4;
      writeF16(out, yo + 82, fround(maxMin / q4scale));
    } else {
      writeF16(out, yo + 82, 0);
    }
    requantizeQ2(x, xo, out, yo);
  }
}

/** quantize_row_q2_K_impl (imatrix path; llama.cpp asserts weights are present) */
export function quantizeRowQ2_KImpl(x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array): void {
  const nb = rowLength / QK_K;
  for (let i = 0; i < nb; i++, xo += QK_K, yo += 84) {
    const sigma2 = fround(sumSquares(x, xo, QK_K) / QK_K);
    for (let j = 0; j < 16; j++) {
      imatrixWeights(x, xo + 16 * j, qw, QK_K * i + 16 * j, 16, sigma2);
      let s = 0;
      for (let l = 0; l < 16; l++) s = fround(s + weights[l]);
      sw[j] = s;
      scales[j] = makeQkxQuants(16, 3, x, xo + 16 * j, weights, 0, Lu, 16 * j, mins, j, R_M09, D_005, 36, false);
    }
    const dm = makeQpQuants(16, 15, scales, Ls, sw);
    const mm = makeQpQuants(16, 15, mins, Lm, sw);
    writeF16(out, yo + 80, dm);
    writeF16(out, yo + 82, mm);
    for (let j = 0; j < 16; j++) out[yo + j] = Ls[j] | (Lm[j] << 4);
    requantizeQ2(x, xo, out, yo);
  }
}

export function dequantizeQ2_K(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q2_K, src, n, out);
  let y = 0;
  for (let xo = 0; y < n; xo += 84) {
    const d = readF16(src, xo + 80);
    const min = readF16(src, xo + 82);
    let is = 0;
    for (let q = xo + 16; q < xo + 80; q += 32) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (let half = 0; half < 32; half += 16) {
          const sc = src[xo + is++];
          const dl = fround(d * (sc & 0xf));
          const ml = fround(min * (sc >>> 4));
          for (let l = 0; l < 16; l++) out[y++] = fround(fround(dl * ((src[q + half + l] >>> shift) & 3)) - ml);
        }
      }
    }
  }
}

// ================================================================ Q3_K

/** 6-bit scale j (0..15) of a Q3_K block, minus 32 */
function q3Scale(b: Uint8Array, so: number, j: number): number {
  const lo = j < 8 ? b[so + j] & 0xf : b[so + j - 8] >>> 4;
  return (lo | (((b[so + 8 + (j & 3)] >>> (2 * (j >>> 2))) & 3) << 4)) - 32;
}

/** requantizes with the stored scales, then writes hmask + qs (shared by ref and impl) */
function finishQ3(x: Float32Array, xo: number, out: Uint8Array, yo: number): void {
  const dAll = readF16(out, yo + 108);
  for (let j = 0; j < 16; j++) {
    const d = fround(dAll * q3Scale(out, yo + 96, j));
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) {
      let l = nearestInt(fround(x[xo + 16 * j + ii] / d));
      l = l < -4 ? -4 : l > 3 ? 3 : l;
      Li[16 * j + ii] = l + 4;
    }
  }
  // high bit of element j goes to hmask[j % 32], bit j / 32
  for (let m = 0; m < 32; m++) out[yo + m] = 0;
  for (let j = 0; j < QK_K; j++) {
    let l = Li[j];
    if (l > 3) {
      out[yo + (j & 31)] |= 1 << (j >>> 5);
      l -= 4;
    }
    Lu[j] = l;
  }
  pack2(out, yo + 32);
}

/** stores 6-bit value l (0..63) as Q3_K scale j */
function storeQ3Scale(out: Uint8Array, so: number, j: number, l: number): void {
  if (j < 8) out[so + j] = l & 0xf;
  else out[so + j - 8] |= (l & 0xf) << 4;
  out[so + 8 + (j & 3)] |= (l >> 4) << (2 * (j >>> 2));
}

/** quantize_row_q3_K_ref */
export function quantizeRowQ3_KRef(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let i = 0; i < nBlocks; i++, xo += QK_K, yo += 110) {
    let maxScale = 0;
    let amax = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = makeQ3Quants(16, 4, x, xo + 16 * j, Li, 16 * j, true);
      const s = Math.abs(scales[j]);
      if (s > amax) { amax = s; maxScale = scales[j]; }
    }
    for (let k = 0; k < 12; k++) out[yo + 96 + k] = 0;
    if (maxScale) {
      const iscale = fround(-32 / maxScale);
      for (let j = 0; j < 16; j++) {
        let l = (nearestInt(fround(iscale * scales[j])) << 24) >> 24; // int8_t l = nearest_int(...)
        l = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
        storeQ3Scale(out, yo + 96, j, l);
      }
      writeF16(out, yo + 108, fround(1 / iscale));
    } else {
      writeF16(out, yo + 108, 0);
    }
    finishQ3(x, xo, out, yo);
  }
}

/**
 * quantize_row_q3_K_impl: per-16 scales by make_qx_quants weighted with qw * sqrt(sigma2 + x^2)
 * (or x^2 when qw is null), then the 16 scales themselves quantized to 6 bits by make_qx_quants.
 */
export function quantizeRowQ3_KImpl(x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array | null): void {
  const nb = rowLength / QK_K;
  for (let i = 0; i < nb; i++, xo += QK_K, yo += 110) {
    const sigma2 = fround(fround(2 * sumSquares(x, xo, QK_K)) / QK_K);
    for (let j = 0; j < 16; j++) {
      if (qw) imatrixWeights(x, xo + 16 * j, qw, QK_K * i + 16 * j, 16, sigma2);
      else for (let l = 0; l < 16; l++) weights[l] = fround(x[xo + 16 * j + l] * x[xo + 16 * j + l]);
      let s = 0;
      for (let l = 0; l < 16; l++) s = fround(s + weights[l]);
      sw[j] = s;
      scales[j] = makeQxQuants(16, 4, x, xo + 16 * j, Li, 16 * j, 1, weights, 0);
    }
    for (let k = 0; k < 12; k++) out[yo + 96 + k] = 0;
    const dBlock = makeQxQuants(16, 32, scales, 0, Lsi, 0, 1, sw, 0);
    for (let j = 0; j < 16; j++) storeQ3Scale(out, yo + 96, j, Lsi[j]);
    writeF16(out, yo + 108, dBlock);
    finishQ3(x, xo, out, yo);
  }
}

export function dequantizeQ3_K(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q3_K, src, n, out);
  let y = 0;
  for (let xo = 0; y < n; xo += 110) {
    const dAll = readF16(src, xo + 108);
    let is = 0;
    let m = 1;
    for (let q = xo + 32; q < xo + 96; q += 32) {
      for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (let half = 0; half < 32; half += 16) {
          const dl = fround(dAll * q3Scale(src, xo + 96, is++));
          for (let l = 0; l < 16; l++) {
            const v = ((src[q + half + l] >>> shift) & 3) - (src[xo + half + l] & m ? 0 : 4);
            out[y++] = fround(dl * v);
          }
        }
      }
    }
  }
}

// ================================================================ Q4_K / Q5_K shared

/** get_scale_min_k4: 6-bit scale and min of sub-block j from the 12-byte field at so */
function scaleK4(b: Uint8Array, so: number, j: number): number {
  return j < 4 ? b[so + j] & 63 : (b[so + j + 4] & 0xf) | ((b[so + j - 4] >>> 6) << 4);
}
function minK4(b: Uint8Array, so: number, j: number): number {
  return j < 4 ? b[so + j + 4] & 63 : (b[so + j + 4] >>> 4) | ((b[so + j] >>> 6) << 4);
}

function storeScalesK4(out: Uint8Array, so: number, j: number, ls: number, lm: number): void {
  if (j < 4) {
    out[so + j] = ls;
    out[so + j + 4] = lm;
  } else {
    out[so + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
    out[so + j - 4] |= (ls >>> 4) << 6;
    out[so + j] |= (lm >>> 4) << 6;
  }
}

/** requantize with the stored 6-bit scales/mins into Lu (levels 0..nmax) */
function requantizeK4(x: Float32Array, xo: number, out: Uint8Array, yo: number, nmax: number): void {
  const dAll = readF16(out, yo);
  const mAll = readF16(out, yo + 2);
  for (let j = 0; j < 8; j++) {
    const d = fround(dAll * scaleK4(out, yo + 4, j));
    if (!d) continue;
    const dm = fround(mAll * minK4(out, yo + 4, j));
    for (let ii = 0; ii < 32; ii++) {
      let l = nearestInt(fround(fround(x[xo + 32 * j + ii] + dm) / d));
      l = l < 0 ? 0 : l > nmax ? nmax : l;
      Lu[32 * j + ii] = l;
    }
  }
}

/** ref path sub-block scales: make_qkx2_quants weighted by sqrt(mean x^2) + |x|; scales to 6 bits by max */
function refScalesK4(x: Float32Array, xo: number, out: Uint8Array, yo: number, nmax: number, rmin: number, nstep: number): void {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const bo = xo + 32 * j;
    const avX = fround(Math.sqrt(fround(sumSquares(x, bo, 32) / 32)));
    for (let l = 0; l < 32; l++) weights[l] = fround(avX + Math.abs(x[bo + l]));
    scales[j] = makeQkxQuants(32, nmax, x, bo, weights, 0, Lu, 32 * j, mins, j, rmin, F0_1, nstep, false);
    if (scales[j] > maxScale) maxScale = scales[j];
    if (mins[j] > maxMin) maxMin = mins[j];
  }
  const invScale = maxScale > 0 ? fround(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fround(63 / maxMin) : 0;
  for (let j = 0; j < 8; j++) {
    let ls = nearestInt(fround(invScale * scales[j])) & 0xff;
    let lm = nearestInt(fround(invMin * mins[j])) & 0xff;
    if (ls > 63) ls = 63;
    if (lm > 63) lm = 63;
    storeScalesK4(out, yo + 4, j, ls, lm);
  }
  writeF16(out, yo, fround(maxScale / 63));
  writeF16(out, yo + 2, fround(maxMin / 63));
}

/** impl path sub-block scales: make_qkx3_quants with imatrix (or sqrt(2 mean x^2) + |x|) weights, scales by make_qp_quants */
function implScalesK4(x: Float32Array, xo: number, out: Uint8Array, yo: number, nmax: number, qw: Float32Array | null, qo: number): void {
  const sigma2 = fround(fround(2 * sumSquares(x, xo, QK_K)) / QK_K);
  const avX = fround(Math.sqrt(sigma2));
  for (let j = 0; j < 8; j++) {
    const bo = xo + 32 * j;
    if (qw) imatrixWeights(x, bo, qw, qo + 32 * j, 32, sigma2);
    else for (let l = 0; l < 32; l++) weights[l] = fround(avX + Math.abs(x[bo + l]));
    let s = 0;
    for (let l = 0; l < 32; l++) s = fround(s + weights[l]);
    sw[j] = s;
    scales[j] = makeQkxQuants(32, nmax, x, bo, weights, 0, Lu, 32 * j, mins, j, R_M09, D_005, 36, false);
  }
  const dBlock = makeQpQuants(8, 63, scales, Ls, sw);
  const mBlock = makeQpQuants(8, 63, mins, Lm, sw);
  for (let j = 0; j < 8; j++) {
    let ls = Ls[j];
    let lm = Lm[j];
    if (nmax === 31) {
      // Q5_K clamps to 63, Q4_K stores as is (only differs if a level wrapped negative in make_qp_quants)
      if (ls > 63) ls = 63;
      if (lm > 63) lm = 63;
    }
    storeScalesK4(out, yo + 4, j, ls, lm);
  }
  writeF16(out, yo, dBlock);
  writeF16(out, yo + 2, mBlock);
}

function packQ4K(out: Uint8Array, yo: number): void {
  for (let j = 0, q = yo + 16; j < QK_K; j += 64, q += 32) {
    for (let l = 0; l < 32; l++) out[q + l] = Lu[j + l] | (Lu[j + l + 32] << 4);
  }
}

function packQ5K(out: Uint8Array, yo: number): void {
  const qh = yo + 16;
  for (let k = 0; k < 32; k++) out[qh + k] = 0;
  let m1 = 1;
  let m2 = 2;
  for (let n = 0, ql = yo + 48; n < QK_K; n += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
    for (let j = 0; j < 32; j++) {
      let l1 = Lu[n + j];
      if (l1 > 15) { l1 -= 16; out[qh + j] |= m1; }
      let l2 = Lu[n + j + 32];
      if (l2 > 15) { l2 -= 16; out[qh + j] |= m2; }
      out[ql + j] = l1 | (l2 << 4);
    }
  }
}

// ================================================================ Q4_K

/** quantize_row_q4_K_ref */
export function quantizeRowQ4_KRef(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let i = 0; i < nBlocks; i++, xo += QK_K, yo += 144) {
    refScalesK4(x, xo, out, yo, 15, R_M1, 20);
    requantizeK4(x, xo, out, yo, 15);
    packQ4K(out, yo);
  }
}

/** quantize_row_q4_K_impl (qw null: the impl's own no-imatrix branch) */
export function quantizeRowQ4_KImpl(x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array | null): void {
  const nb = rowLength / QK_K;
  for (let i = 0; i < nb; i++, xo += QK_K, yo += 144) {
    implScalesK4(x, xo, out, yo, 15, qw, QK_K * i);
    requantizeK4(x, xo, out, yo, 15);
    packQ4K(out, yo);
  }
}

export function dequantizeQ4_K(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q4_K, src, n, out);
  let y = 0;
  for (let xo = 0; y < n; xo += 144) {
    const d = readF16(src, xo);
    const min = readF16(src, xo + 2);
    for (let is = 0, q = xo + 16; is < 8; is += 2, q += 32) {
      const d1 = fround(d * scaleK4(src, xo + 4, is));
      const m1 = fround(min * minK4(src, xo + 4, is));
      const d2 = fround(d * scaleK4(src, xo + 4, is + 1));
      const m2 = fround(min * minK4(src, xo + 4, is + 1));
      for (let l = 0; l < 32; l++) out[y++] = fround(fround(d1 * (src[q + l] & 0xf)) - m1);
      for (let l = 0; l < 32; l++) out[y++] = fround(fround(d2 * (src[q + l] >>> 4)) - m2);
    }
  }
}

// ================================================================ Q5_K

/** quantize_row_q5_K_ref */
export function quantizeRowQ5_KRef(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let i = 0; i < nBlocks; i++, xo += QK_K, yo += 176) {
    refScalesK4(x, xo, out, yo, 31, R_M05, 15);
    requantizeK4(x, xo, out, yo, 31);
    packQ5K(out, yo);
  }
}

/** quantize_row_q5_K_impl (qw null: the impl's own no-imatrix branch) */
export function quantizeRowQ5_KImpl(x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array | null): void {
  const nb = rowLength / QK_K;
  for (let i = 0; i < nb; i++, xo += QK_K, yo += 176) {
    implScalesK4(x, xo, out, yo, 31, qw, QK_K * i);
    requantizeK4(x, xo, out, yo, 31);
    packQ5K(out, yo);
  }
}

export function dequantizeQ5_K(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q5_K, src, n, out);
  let y = 0;
  for (let xo = 0; y < n; xo += 176) {
    const d = readF16(src, xo);
    const min = readF16(src, xo + 2);
    const qh = xo + 16;
    let u1 = 1;
    let u2 = 2;
    for (let is = 0, ql = xo + 48; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      const d1 = fround(d * scaleK4(src, xo + 4, is));
      const m1 = fround(min * minK4(src, xo + 4, is));
      const d2 = fround(d * scaleK4(src, xo + 4, is + 1));
      const m2 = fround(min * minK4(src, xo + 4, is + 1));
      for (let l = 0; l < 32; l++) out[y++] = fround(fround(d1 * ((src[ql + l] & 0xf) + (src[qh + l] & u1 ? 16 : 0))) - m1);
      for (let l = 0; l < 32; l++) out[y++] = fround(fround(d2 * ((src[ql + l] >>> 4) + (src[qh + l] & u2 ? 16 : 0))) - m2);
    }
  }
}

// ================================================================ Q6_K

/** scales, requantization and packing after the per-16 scales are known (shared by ref and impl) */
function finishQ6(x: Float32Array, xo: number, out: Uint8Array, yo: number): void {
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const a = Math.abs(scales[ib]);
    if (a > maxAbsScale) { maxAbsScale = a; maxScale = scales[ib]; }
  }
  if (maxAbsScale < GROUP_MAX_EPS) {
    for (let k = 0; k < 210; k++) out[yo + k] = 0;
    return;
  }
  const iscale = fround(-128 / maxScale);
  writeF16(out, yo + 208, fround(1 / iscale));
  for (let ib = 0; ib < 16; ib++) {
    const l = nearestInt(fround(iscale * scales[ib]));
    out[yo + 192 + ib] = (l < 127 ? l : 127) & 0xff;
  }
  const dAll = readF16(out, yo + 208);
  for (let j = 0; j < 16; j++) {
    const d = fround(dAll * ((out[yo + 192 + j] << 24) >> 24));
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) {
      let l = nearestInt(fround(x[xo + 16 * j + ii] / d));
      l = l < -32 ? -32 : l > 31 ? 31 : l;
      Li[16 * j + ii] = l + 32;
    }
  }
  for (let j = 0, ql = yo, qh = yo + 128; j < QK_K; j += 128, ql += 64, qh += 32) {
    for (let l = 0; l < 32; l++) {
      const a = Li[j + l];
      const b = Li[j + l + 32];
      const c = Li[j + l + 64];
      const e = Li[j + l + 96];
      out[ql + l] = (a & 0xf) | ((c & 0xf) << 4);
      out[ql + l + 32] = (b & 0xf) | ((e & 0xf) << 4);
      out[qh + l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
    }
  }
}

/** quantize_row_q6_K_ref */
export function quantizeRowQ6_KRef(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let i = 0; i < nBlocks; i++, xo += QK_K, yo += 210) {
    for (let ib = 0; ib < 16; ib++) scales[ib] = makeQxQuants(16, 32, x, xo + 16 * ib, Li, 16 * ib, 1, null, 0);
    finishQ6(x, xo, out, yo);
  }
}

/** quantize_row_q6_K_impl: make_qx_quants weighted directly by the imatrix (null: same as ref) */
export function quantizeRowQ6_KImpl(x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array | null): void {
  const nb = rowLength / QK_K;
  for (let i = 0; i < nb; i++, xo += QK_K, yo += 210) {
    for (let ib = 0; ib < 16; ib++) scales[ib] = makeQxQuants(16, 32, x, xo + 16 * ib, Li, 16 * ib, 1, qw, QK_K * i + 16 * ib);
    finishQ6(x, xo, out, yo);
  }
}

export function dequantizeQ6_K(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q6_K, src, n, out);
  for (let xo = 0, y = 0; y < n; xo += 210) {
    const d = readF16(src, xo + 208);
    for (let h = 0, ql = xo, qh = xo + 128, sc = xo + 192; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8) {
      for (let l = 0; l < 32; l++) {
        const is = l >>> 4;
        const hb = src[qh + l];
        const q1 = ((src[ql + l] & 0xf) | ((hb & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32] & 0xf) | (((hb >>> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l] >>> 4) | (((hb >>> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32] >>> 4) | (((hb >>> 6) & 3) << 4)) - 32;
        out[y + l] = fround(fround(d * ((src[sc + is] << 24) >> 24)) * q1);
        out[y + l + 32] = fround(fround(d * ((src[sc + is + 2] << 24) >> 24)) * q2);
        out[y + l + 64] = fround(fround(d * ((src[sc + is + 4] << 24) >> 24)) * q3);
        out[y + l + 96] = fround(fround(d * ((src[sc + is + 6] << 24) >> 24)) * q4);
      }
    }
  }
}

// ================================================================ Q8_K

/** quantize_row_q8_K_ref: d = max / -127 (float32, not fp16), plus per-16 sums of the quants */
export function quantizeRowQ8_KRef(x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let i = 0; i < nBlocks; i++, xo += QK_K, yo += 292) {
    let max = 0;
    let amax = 0;
    for (let j = 0; j < QK_K; j++) {
      const ax = Math.abs(x[xo + j]);
      if (ax > amax) { amax = ax; max = x[xo + j]; }
    }
    if (!amax) {
      // llama.cpp leaves bsums unwritten here; lowbit writes zeros
      for (let k = 0; k < 292; k++) out[yo + k] = 0;
      continue;
    }
    const iscale = fround(-127 / max);
    for (let j = 0; j < QK_K; j++) {
      const v = nearestInt(fround(iscale * x[xo + j]));
      out[yo + 4 + j] = (v < 127 ? v : 127) & 0xff;
    }
    for (let j = 0; j < 16; j++) {
      let sum = 0;
      for (let ii = 0; ii < 16; ii++) sum += (out[yo + 4 + 16 * j + ii] << 24) >> 24;
      out[yo + 260 + 2 * j] = sum & 0xff;
      out[yo + 261 + 2 * j] = (sum >> 8) & 0xff;
    }
    writeF32(out, yo, fround(1 / iscale));
  }
}

export function dequantizeQ8_K(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q8_K, src, n, out);
  for (let xo = 0, y = 0; y < n; xo += 292) {
    const d = readF32(src, xo);
    for (let j = 0; j < QK_K; j++) out[y++] = fround(d * ((src[xo + 4 + j] << 24) >> 24));
  }
}

// ================================================================ whole-tensor entry points

type RowRef = (x: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number) => void;
type RowImpl = (x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array) => void;
type Quantize = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array) => void;

function entryPoints(t: typeof Q2_K, ref: RowRef, impl: RowImpl | null, implNoWeights: ((x: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: null) => void) | null) {
  const quantizeRef = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void => {
    checkQuantizeArgs(t, src, nRows, rowLength, out, undefined);
    ref(src, 0, out, 0, (nRows * rowLength) / QK_K);
  };
  const quantize: Quantize = (src, nRows, rowLength, out, importance) => {
    if (!impl || !importance) return quantizeRef(src, nRows, rowLength, out);
    const rowBytes = checkQuantizeArgs(t, src, nRows, rowLength, out, importance);
    for (let r = 0; r < nRows; r++) impl(src, r * rowLength, out, r * rowBytes, rowLength, importance);
  };
  const quantizeImplNoImportance = implNoWeights
    ? (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void => {
      const rowBytes = checkQuantizeArgs(t, src, nRows, rowLength, out, undefined);
      for (let r = 0; r < nRows; r++) implNoWeights(src, r * rowLength, out, r * rowBytes, rowLength, null);
    }
    : null;
  return { quantizeRef, quantize, quantizeImplNoImportance };
}

const q2k = entryPoints(Q2_K, quantizeRowQ2_KRef, quantizeRowQ2_KImpl, null);
const q3k = entryPoints(Q3_K, quantizeRowQ3_KRef, quantizeRowQ3_KImpl, quantizeRowQ3_KImpl);
const q4k = entryPoints(Q4_K, quantizeRowQ4_KRef, quantizeRowQ4_KImpl, quantizeRowQ4_KImpl);
const q5k = entryPoints(Q5_K, quantizeRowQ5_KRef, quantizeRowQ5_KImpl, quantizeRowQ5_KImpl);
const q6k = entryPoints(Q6_K, quantizeRowQ6_KRef, quantizeRowQ6_KImpl, quantizeRowQ6_KImpl);
const q8k = entryPoints(Q8_K, quantizeRowQ8_KRef, null, null);

/** quantize_X: quantize_row_X_ref without importance (= llama-quantize without imatrix), impl with it */
export const quantizeQ2_K = q2k.quantize;
export const quantizeQ3_K = q3k.quantize;
export const quantizeQ4_K = q4k.quantize;
export const quantizeQ5_K = q5k.quantize;
export const quantizeQ6_K = q6k.quantize;
export const quantizeQ8_K = q8k.quantize;

/** quantize_row_X_ref over whole rows */
export const quantizeQ2_KRef = q2k.quantizeRef;
export const quantizeQ3_KRef = q3k.quantizeRef;
export const quantizeQ4_KRef = q4k.quantizeRef;
export const quantizeQ5_KRef = q5k.quantizeRef;
export const quantizeQ6_KRef = q6k.quantizeRef;
export const quantizeQ8_KRef = q8k.quantizeRef;

/**
 * quantize_row_X_impl(…, quant_weights = NULL): the impl functions' own no-imatrix branch. llama.cpp's
 * quantize_X routes NULL weights to the ref function instead, so nothing in llama.cpp writes these bytes;
 * exposed for comparison only.
 */
export const quantizeQ3_KImplNoImportance = q3k.quantizeImplNoImportance!;
export const quantizeQ4_KImplNoImportance = q4k.quantizeImplNoImportance!;
export const quantizeQ5_KImplNoImportance = q5k.quantizeImplNoImportance!;
export const quantizeQ6_KImplNoImportance = q6k.quantizeImplNoImportance!;

export const kquantCodecs: readonly GgmlCodec[] = Object.freeze([
  { type: Q2_K, quantize: quantizeQ2_K, usesImportance: true, dequantize: dequantizeQ2_K },
  { type: Q3_K, quantize: quantizeQ3_K, usesImportance: true, dequantize: dequantizeQ3_K },
  { type: Q4_K, quantize: quantizeQ4_K, usesImportance: true, dequantize: dequantizeQ4_K },
  { type: Q5_K, quantize: quantizeQ5_K, usesImportance: true, dequantize: dequantizeQ5_K },
  { type: Q6_K, quantize: quantizeQ6_K, usesImportance: true, dequantize: dequantizeQ6_K },
  { type: Q8_K, quantize: quantizeQ8_K, dequantize: dequantizeQ8_K },
]);

export const kquantRefQuantizers: Readonly<Record<string, (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array) => void>> = Object.freeze({
  Q2_K: quantizeQ2_KRef, Q3_K: quantizeQ3_KRef, Q4_K: quantizeQ4_KRef, Q5_K: quantizeQ5_KRef, Q6_K: quantizeQ6_KRef, Q8_K: quantizeQ8_KRef,
});

export const kquantImplNoImportanceQuantizers: Readonly<Record<string, (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array) => void>> = Object.freeze({
  Q3_K: quantizeQ3_KImplNoImportance, Q4_K: quantizeQ4_KImplNoImportance, Q5_K: quantizeQ5_KImplNoImportance, Q6_K: quantizeQ6_KImplNoImportance,
});
