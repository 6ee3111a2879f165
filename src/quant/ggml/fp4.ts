/**
 * ggml's FP4 block types, byte-identical to llama.cpp (ggml-quants.c quantize_row_{mxfp4,nvfp4}_ref):
 *
 *   MXFP4 (id 39), 32 elements, 17 bytes:  e: u8 (E8M0 scale)  qs[16]: nibbles
 *   NVFP4 (id 40), 64 elements, 36 bytes:  d[4]: u8 (UE4M3 scale per 16)  qs[32]: nibbles
 *
 * Elements are e2m1 codes (bit 3 = sign). ggml keeps the e2m1 values doubled (kvaluesFp4 =
 * 2 * e2m1) and halves the scale instead, so value = kvaluesFp4[code] * scale/2.
 * Nibble order (per 32 MXFP4 elements, per 16 NVFP4 elements): byte j holds element j in its low
 * nibble and element j + half in its high nibble.
 * Rounding: each element takes the code whose float32 product with the scale is nearest, ties to the
 * lowest code (so +0 beats -0 and a tie between two magnitudes goes to the smaller one).
 * MXFP4 scale: e = floor(log2(amax)) - 2 + 127, i.e. 2^(e-127) puts amax in [4, 8) e2m1 units; elements
 * above 6 units saturate to the top code (OCP MX v1.0 rule).
 * NVFP4 scale: ggml's own UE4M3 rounding of amax/6 (mantissa rounded half up, no tensor scale).
 */
import type { GgmlCodec } from './types.js';
import { ggmlTypeById } from './types.js';
import { checkDequantize, checkQuantize } from './ggmlb-check.js';
import { kvaluesFp4 } from './iq-grids.js';

const fround = Math.fround;

/** float32 E8M0 exponent -> scale/2 = 2^(e - 128) (ggml_e8m0_to_fp32_half; e = 0, 1 give subnormals). */
export function e8m0ToF32Half(e: number): number {
  return 2 ** ((e & 0xff) - 128);
}

/** ggml_ue4m3_to_fp32: UE4M3 byte -> scale/2 (0 and 0x7F decode to 0; bit 7 is ignored). */
export function ue4m3ToF32Half(x: number): number {
  x &= 0xff;
  if (x === 0 || x === 0x7f) return 0;
  const exp = (x >>> 3) & 0xf;
  const man = x & 7;
  const raw = exp === 0 ? man * 2 ** -9 : (1 + man / 8) * 2 ** (exp - 7);
  return raw * 0.5;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** ggml_fp32_to_ue4m3: positive float32 -> UE4M3 byte; mantissa rounded half up; saturates to 0x7E (448). */
export function f32ToUe4m3(x: number): number {
  x = fround(x);
  if (!(x > 0)) return 0;
  if (x > 448) x = 448;
  f32[0] = x;
  const bits = u32[0];
  let exp = ((bits >>> 23) & 0xff) - 127 + 7;
  if (exp <= 0) {
    // subnormal UE4M3: man * 2^-9, man = (int)(x * 512 + 0.5) in float32
    const man = Math.trunc(fround(fround(x * 512) + 0.5));
    if (man < 1) return 0;
    return man > 7 ? 7 : man;
  }
  if (exp >= 15) return 0x7e;
  let man = ((bits >>> 20) & 7) + ((bits >>> 19) & 1);
  if (man > 7) {
    man = 0;
    exp++;
    if (exp >= 15) return 0x7e;
  }
  return (exp << 3) | man;
}

/** products kvaluesFp4[m] * scale for m = 0..7 (float32), per block */
const prod = new Float64Array(8);

function setProducts(d: number): void {
  for (let m = 0; m < 8; m++) prod[m] = fround(kvaluesFp4[m] * d);
}

/**
 * ggml's best_index_mxfp4: the first code k in 0..15 minimising |float32(kv[k]*d - x)|. Since codes
 * 8..15 mirror 0..7 and come later, the winner is the best magnitude code for |x|, with the sign bit
 * set only for x < 0 and a non-zero magnitude. The error is V-shaped over the sorted magnitudes, so the
 * scan stops at the first strictly worse candidate. Reference version (uses `prod`).
 */
function bestCodeRef(x: number): number {
  const a = Math.abs(x);
  let best = 0;
  let bestErr = a; // |0 - x|
  for (let m = 1; m < 8; m++) {
    const err = Math.abs(fround(prod[m] - a));
    if (err < bestErr) {
      bestErr = err;
      best = m;
    } else if (err > bestErr) break;
  }
  return x < 0 && best !== 0 ? best | 8 : best;
}

/**
 * Fast path: for a fixed scale d the reference's magnitude code is a non-decreasing step function of
 * |x| as long as |x| stays within 32 d (then float32 rounding of |p - x| cannot create ties between
 * distinct products, which are >= d apart), so it is given by 7 float32 thresholds per scale, found by
 * bisection over float32 values with the reference itself and cached per scale code (256 E8M0 or
 * 128 UE4M3 codes). Blocks with amax > 32 d or a subnormal scale use the reference scan.
 */
const THRESHOLDS_PER_SCALE = 8;
const thresholds = new Float64Array(2 * 256 * THRESHOLDS_PER_SCALE); // [kind][scale code][m]
const thresholdsReady = new Uint8Array(2 * 256);
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);
const t = new Float64Array(8); // thresholds of the current block, t[m] = smallest |x| with code >= m

function f32FromBits(b: number): number {
  u32Scratch[0] = b;
  return f32Scratch[0];
}

/** loads t[] for scale d (prod[] already set); slot = kind * 256 + scale code */
function loadThresholds(slot: number, d: number): void {
  const base = slot * THRESHOLDS_PER_SCALE;
  if (!thresholdsReady[slot]) {
    f32Scratch[0] = 32 * d;
    const top = Math.min(u32Scratch[0], 0x7f7fffff); // bits of min(32 d, FLT_MAX); positive floats order like their bits
    for (let m = 1; m < 8; m++) {
      if (bestCodeRef(f32FromBits(top)) < m) {
        thresholds[base + m] = Infinity;
        continue;
      }
      let lo = 0; // code(lo) < m (code(0) = 0)
      let hi = top; // code(hi) >= m
      while (hi - lo > 1) {
        const mid = lo + Math.floor((hi - lo) / 2);
        if (bestCodeRef(f32FromBits(mid)) >= m) hi = mid;
        else lo = mid;
      }
      thresholds[base + m] = f32FromBits(hi);
    }
    thresholdsReady[slot] = 1;
  }
  for (let m = 1; m < 8; m++) t[m] = thresholds[base + m];
}

/** bestCodeRef through the thresholds in t[] (valid for |x| <= 32 d, d normal) */
function bestCodeFast(x: number): number {
  const a = Math.abs(x);
  const c = +(a >= t[1]) + +(a >= t[2]) + +(a >= t[3]) + +(a >= t[4]) + +(a >= t[5]) + +(a >= t[6]) + +(a >= t[7]);
  return x < 0 && c !== 0 ? c | 8 : c;
}

/** prepares a block with scale d; returns true when the threshold path applies */
function prepareScale(kind: number, code: number, d: number, amax: number): boolean {
  setProducts(d);
  if (!(d >= 2 ** -126) || amax > 32 * d) return false;
  loadThresholds(kind * 256 + code, d);
  return true;
}

const MXFP4 = ggmlTypeById(39);
const NVFP4 = ggmlTypeById(40);

/** quantize_row_mxfp4_ref over n elements (a multiple of 32); no importance path in llama.cpp. */
function quantizeMxfp4Blocks(x: Float32Array, n: number, out: Uint8Array, fast = true): void {
  const nb = n >>> 5;
  for (let i = 0, xo = 0, o = 0; i < nb; i++, xo += 32, o += 17) {
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(x[xo + j]);
      if (amax < a) amax = a;
    }
    // (uint8_t)(floorf(log2f(amax)) - 2 + 127); out-of-range values wrap like x86's cvttss2si + truncation
    const e = amax > 0 ? (Math.floor(fround(Math.log2(amax))) - 2 + 127) & 0xff : 0;
    const d = e8m0ToF32Half(e);
    out[o] = e;
    if (prepareScale(0, e, d, amax) && fast) {
      for (let j = 0; j < 16; j++) out[o + 1 + j] = bestCodeFast(x[xo + j]) | (bestCodeFast(x[xo + 16 + j]) << 4);
    } else {
      for (let j = 0; j < 16; j++) out[o + 1 + j] = bestCodeRef(x[xo + j]) | (bestCodeRef(x[xo + 16 + j]) << 4);
    }
  }
}

function dequantizeMxfp4(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(MXFP4, src, n, y);
  for (let i = 0, o = 0, yo = 0; i < nb; i++, o += 17, yo += 32) {
    const d = e8m0ToF32Half(src[o]);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 1 + j];
      y[yo + j] = kvaluesFp4[q & 15] * d;
      y[yo + 16 + j] = kvaluesFp4[q >>> 4] * d;
    }
  }
}

/** quantize_row_nvfp4_ref over n elements (a multiple of 64). */
function quantizeNvfp4Blocks(x: Float32Array, n: number, out: Uint8Array, fast = true): void {
  const nb = n >>> 6;
  for (let i = 0, xo = 0, o = 0; i < nb; i++, o += 36) {
    for (let s = 0; s < 4; s++, xo += 16) {
      let amax = 0;
      for (let j = 0; j < 16; j++) {
        const a = Math.abs(x[xo + j]);
        if (amax < a) amax = a;
      }
      const ue = f32ToUe4m3(fround(amax / 6));
      out[o + s] = ue;
      const qo = o + 4 + s * 8;
      if (prepareScale(1, ue & 0x7f, ue4m3ToF32Half(ue), amax) && fast) {
        for (let j = 0; j < 8; j++) out[qo + j] = bestCodeFast(x[xo + j]) | (bestCodeFast(x[xo + 8 + j]) << 4);
      } else {
        for (let j = 0; j < 8; j++) out[qo + j] = bestCodeRef(x[xo + j]) | (bestCodeRef(x[xo + 8 + j]) << 4);
      }
    }
  }
}

function dequantizeNvfp4(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(NVFP4, src, n, y);
  for (let i = 0, o = 0, yo = 0; i < nb; i++, o += 36) {
    for (let s = 0; s < 4; s++, yo += 16) {
      const d = ue4m3ToF32Half(src[o + s]);
      const qo = o + 4 + s * 8;
      for (let j = 0; j < 8; j++) {
        const q = src[qo + j];
        y[yo + j] = kvaluesFp4[q & 15] * d;
        y[yo + 8 + j] = kvaluesFp4[q >>> 4] * d;
      }
    }
  }
}

export const mxfp4Codec: GgmlCodec = Object.freeze({
  type: MXFP4,
  quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    checkQuantize(MXFP4, src, nRows, rowLength, out, importance);
    quantizeMxfp4Blocks(src, nRows * rowLength, out);
  },
  dequantize: dequantizeMxfp4,
});

export const nvfp4Codec: GgmlCodec = Object.freeze({
  type: NVFP4,
  quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    checkQuantize(NVFP4, src, nRows, rowLength, out, importance);
    quantizeNvfp4Blocks(src, nRows * rowLength, out);
  },
  dequantize: dequantizeNvfp4,
});

/** The plain-scan quantizers (no threshold tables), for testing the fast path against. */
export function quantizeMxfp4Scan(x: Float32Array, n: number, out: Uint8Array): void {
  quantizeMxfp4Blocks(x, n, out, false);
}
export function quantizeNvfp4Scan(x: Float32Array, n: number, out: Uint8Array): void {
  quantizeNvfp4Blocks(x, n, out, false);
}

export const fp4Codecs: readonly GgmlCodec[] = Object.freeze([mxfp4Codec, nvfp4Codec]);
