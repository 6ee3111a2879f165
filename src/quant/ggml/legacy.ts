/**
 * GGML plain and legacy block types, byte-identical to llama.cpp (ggml-quants.c, ggml.c):
 * F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
 *
 * Block layouts (ggml-common.h; fp16 little-endian; 32 elements per block):
 *   Q4_0 (18 B): d:f16 | qs[16]              x = (q - 8) * d,      q in 0..15, qs[j] = q[j] | q[j+16] << 4
 *   Q4_1 (20 B): d:f16 m:f16 | qs[16]        x = q * d + m
 *   Q5_0 (22 B): d:f16 | qh:u32 | qs[16]     x = (q - 16) * d,     bit 4 of q[j] is bit j of qh
 *   Q5_1 (24 B): d:f16 m:f16 | qh:u32 | qs[16]  x = q * d + m
 *   Q8_0 (34 B): d:f16 | qs:i8[32]           x = q * d
 *   Q8_1 (36 B): d:f16 s:f16 | qs:i8[32]     s = d * sum(q)
 *
 * quantizeRef* = quantize_row_X_ref (what `llama-quantize --pure` writes without an imatrix);
 * quantize* = quantize_X / ggml_quantize_chunk: the ref path when no importance is given, the weighted
 * (imatrix) path for Q4_0/Q4_1/Q5_0/Q5_1 when it is. Q8_0 ignores importance, as llama.cpp does.
 */
import { bf16ToF32Row, f16ToF32Row, f32ToBf16Row, f32ToF16Row, u16View } from '../../formats/half.js';
import type { GgmlCodec } from './types.js';
import { ggmlTypeByName } from './types.js';
import {
  checkDequantizeArgs, checkQuantizeArgs, fround, makeQkxQuants, makeQxQuants, readF16, roundAway, writeF16,
} from './common.js';

const QK = 32;
const type = (name: string) => ggmlTypeByName(name)!;
const F32 = type('F32');
const F16 = type('F16');
const BF16 = type('BF16');
const Q4_0 = type('Q4_0');
const Q4_1 = type('Q4_1');
const Q5_0 = type('Q5_0');
const Q5_1 = type('Q5_1');
const Q8_0 = type('Q8_0');
const Q8_1 = type('Q8_1');

// ---------------------------------------------------------------- F32 / F16 / BF16

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function quantizeF32(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void {
  checkQuantizeArgs(F32, src, nRows, rowLength, out, undefined, true);
  const n = nRows * rowLength;
  const bits = u32View(src);
  for (let i = 0, o = 0; i < n; i++, o += 4) {
    const u = bits[i];
    out[o] = u & 0xff; out[o + 1] = (u >>> 8) & 0xff; out[o + 2] = (u >>> 16) & 0xff; out[o + 3] = u >>> 24;
  }
}

function dequantizeF32(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(F32, src, n, out);
  const bits = u32View(out);
  for (let i = 0, o = 0; i < n; i++, o += 4) bits[i] = (src[o] | (src[o + 1] << 8) | (src[o + 2] << 16) | (src[o + 3] << 24)) >>> 0;
}

/** a row of 16-bit values written by `fill` into out (straight into it when aligned) */
function write16(out: Uint8Array, n: number, fill: (h: Uint16Array) => void): void {
  if (out.byteOffset % 2 === 0) return fill(new Uint16Array(out.buffer, out.byteOffset, n));
  const h = new Uint16Array(n);
  fill(h);
  out.set(new Uint8Array(h.buffer), 0);
}

/** ggml_fp32_to_fp16_row (formats/half.ts) */
function quantizeF16(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void {
  checkQuantizeArgs(F16, src, nRows, rowLength, out, undefined, true);
  const n = nRows * rowLength;
  write16(out, n, (h) => f32ToF16Row(src.subarray(0, n), h));
}

function dequantizeF16(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(F16, src, n, out);
  f16ToF32Row(u16View(src, n), out);
}

/** ggml_fp32_to_bf16_row_ref (formats/half.ts) */
function quantizeBF16(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void {
  checkQuantizeArgs(BF16, src, nRows, rowLength, out, undefined, true);
  const n = nRows * rowLength;
  write16(out, n, (h) => f32ToBf16Row(src.subarray(0, n), h));
}

function dequantizeBF16(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(BF16, src, n, out);
  bf16ToF32Row(u16View(src, n), out);
}

// ---------------------------------------------------------------- reference rows (quantize_row_X_ref)
// Each takes nBlocks consecutive blocks starting at src[xo] and writes them at out[yo].

/** quantize_row_q4_0_ref: d = max / -8 where max is the signed value of largest magnitude. */
export function quantizeRowQ4_0Ref(src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let b = 0; b < nBlocks; b++, xo += QK, yo += 18) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = src[xo + j];
      const av = Math.abs(v);
      if (amax < av) { amax = av; max = v; }
    }
    const d = fround(max / -8);
    const id = d ? fround(1 / d) : 0;
    writeF16(out, yo, d);
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x*id + 8.5f) truncates toward zero; values stay in 0..16
      let q0 = fround(fround(src[xo + j] * id) + 8.5) | 0;
      let q1 = fround(fround(src[xo + 16 + j] * id) + 8.5) | 0;
      if (q0 > 15) q0 = 15;
      if (q1 > 15) q1 = 15;
      out[yo + 2 + j] = q0 | (q1 << 4);
    }
  }
}

/** quantize_row_q4_1_ref: d = (max - min) / 15, m = min. */
export function quantizeRowQ4_1Ref(src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let b = 0; b < nBlocks; b++, xo += QK, yo += 20) {
    let min = 3.4028234663852886e38;
    let max = -3.4028234663852886e38;
    for (let j = 0; j < QK; j++) {
      const v = src[xo + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const d = fround(fround(max - min) / 15);
    const id = d ? fround(1 / d) : 0;
    writeF16(out, yo, d);
    writeF16(out, yo + 2, min);
    for (let j = 0; j < 16; j++) {
      let q0 = fround(fround(fround(src[xo + j] - min) * id) + 0.5) | 0;
      let q1 = fround(fround(fround(src[xo + 16 + j] - min) * id) + 0.5) | 0;
      if (q0 > 15) q0 = 15;
      if (q1 > 15) q1 = 15;
      out[yo + 4 + j] = q0 | (q1 << 4);
    }
  }
}

function storeQ5(out: Uint8Array, qhOffset: number, j: number, q0: number, q1: number, qh: number): number {
  out[qhOffset + 4 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
  return qh | (((q0 & 0x10) >>> 4) << j) | (((q1 & 0x10) >>> 4) << (j + 16));
}

function writeU32(out: Uint8Array, o: number, u: number): void {
  out[o] = u & 0xff; out[o + 1] = (u >>> 8) & 0xff; out[o + 2] = (u >>> 16) & 0xff; out[o + 3] = u >>> 24;
}

/** quantize_row_q5_0_ref: d = max / -16. */
export function quantizeRowQ5_0Ref(src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let b = 0; b < nBlocks; b++, xo += QK, yo += 22) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = src[xo + j];
      const av = Math.abs(v);
      if (amax < av) { amax = av; max = v; }
    }
    const d = fround(max / -16);
    const id = d ? fround(1 / d) : 0;
    writeF16(out, yo, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      let q0 = fround(fround(src[xo + j] * id) + 16.5) | 0;
      let q1 = fround(fround(src[xo + 16 + j] * id) + 16.5) | 0;
      if (q0 > 31) q0 = 31;
      if (q1 > 31) q1 = 31;
      qh = storeQ5(out, yo + 2, j, q0, q1, qh);
    }
    writeU32(out, yo + 2, qh);
  }
}

/** quantize_row_q5_1_ref: d = (max - min) / 31, m = min. */
export function quantizeRowQ5_1Ref(src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let b = 0; b < nBlocks; b++, xo += QK, yo += 24) {
    let min = 3.4028234663852886e38;
    let max = -3.4028234663852886e38;
    for (let j = 0; j < QK; j++) {
      const v = src[xo + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const d = fround(fround(max - min) / 31);
    const id = d ? fround(1 / d) : 0;
    writeF16(out, yo, d);
    writeF16(out, yo + 2, min);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      // (uint8_t)(x + 0.5f): no clamp in C; values stay in 0..31
      const q0 = (fround(fround(fround(src[xo + j] - min) * id) + 0.5) | 0) & 0xff;
      const q1 = (fround(fround(fround(src[xo + 16 + j] - min) * id) + 0.5) | 0) & 0xff;
      qh = storeQ5(out, yo + 4, j, q0, q1, qh);
    }
    writeU32(out, yo + 4, qh);
  }
}

/** quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d). */
export function quantizeRowQ8_0Ref(src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let b = 0; b < nBlocks; b++, xo += QK, yo += 34) {
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const av = Math.abs(src[xo + j]);
      amax = amax > av ? amax : av;
    }
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    writeF16(out, yo, d);
    // roundf(x * id): |x * id| <= 127.x, so truncating v +- 0.5 (exact in float64) is roundf
    for (let j = 0; j < QK; j++) {
      const v = fround(src[xo + j] * id);
      out[yo + 2 + j] = (v < 0 ? v - 0.5 : v + 0.5) | 0;
    }
  }
}

/** quantize_row_q8_1_ref: as Q8_0 plus s = fp16(sum(q) * d). */
export function quantizeRowQ8_1Ref(src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number): void {
  for (let b = 0; b < nBlocks; b++, xo += QK, yo += 36) {
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const av = Math.abs(src[xo + j]);
      amax = amax > av ? amax : av;
    }
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    writeF16(out, yo, d);
    let sum = 0;
    for (let j = 0; j < QK; j++) {
      const q = roundAway(fround(src[xo + j] * id));
      out[yo + 4 + j] = q & 0xff;
      sum += (q << 24) >> 24;
    }
    writeF16(out, yo + 2, fround(sum * d));
  }
}

// ---------------------------------------------------------------- imatrix rows (quantize_row_X_impl)

const weight32 = new Float32Array(QK);
const Li8 = new Int8Array(QK);
const Lu8 = new Uint8Array(QK);
const minOut = new Float32Array(1);

/** sigma2 = sum(x^2) / n over the whole row (float32, sequential) */
function rowSigma2(src: Float32Array, xo: number, n: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s = fround(s + fround(src[xo + j] * src[xo + j]));
  return fround(s / n);
}

/** weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2) */
function blockWeights(src: Float32Array, xo: number, qw: Float32Array, qo: number, sigma2: number): void {
  for (let j = 0; j < QK; j++) {
    const x = src[xo + j];
    weight32[j] = fround(qw[qo + j] * fround(Math.sqrt(fround(sigma2 + fround(x * x)))));
  }
}

function quantizeRowQ4_0Impl(src: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array): void {
  const sigma2 = rowSigma2(src, xo, rowLength);
  for (let ib = 0; ib < rowLength / QK; ib++, yo += 18) {
    const bo = xo + ib * QK;
    blockWeights(src, bo, qw, ib * QK, sigma2);
    const d = makeQxQuants(QK, 8, src, bo, Li8, 0, 1, weight32, 0);
    writeF16(out, yo, d);
    for (let j = 0; j < 16; j++) out[yo + 2 + j] = Li8[j] | (Li8[j + 16] << 4);
  }
}

function quantizeRowQ5_0Impl(src: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array): void {
  const sigma2 = rowSigma2(src, xo, rowLength);
  for (let ib = 0; ib < rowLength / QK; ib++, yo += 22) {
    const bo = xo + ib * QK;
    blockWeights(src, bo, qw, ib * QK, sigma2);
    const d = makeQxQuants(QK, 16, src, bo, Li8, 0, 1, weight32, 0);
    writeF16(out, yo, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) qh = storeQ5(out, yo + 2, j, Li8[j], Li8[j + 16], qh);
    writeU32(out, yo + 2, qh);
  }
}

const RMIN = fround(-0.9);
const RDELTA = fround(0.05);

function quantizeRowQx_1Impl(src: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array, five: boolean): void {
  const sigma2 = rowSigma2(src, xo, rowLength);
  const nmax = five ? 31 : 15;
  const bytes = five ? 24 : 20;
  for (let ib = 0; ib < rowLength / QK; ib++, yo += bytes) {
    const bo = xo + ib * QK;
    blockWeights(src, bo, qw, ib * QK, sigma2);
    const d = makeQkxQuants(QK, nmax, src, bo, weight32, 0, Lu8, 0, minOut, 0, RMIN, RDELTA, 36, false);
    writeF16(out, yo, d);
    writeF16(out, yo + 2, -minOut[0]);
    if (five) {
      let qh = 0;
      for (let j = 0; j < 16; j++) qh = storeQ5(out, yo + 4, j, Lu8[j], Lu8[j + 16], qh);
      writeU32(out, yo + 4, qh);
    } else {
      for (let j = 0; j < 16; j++) out[yo + 4 + j] = Lu8[j] | (Lu8[j + 16] << 4);
    }
  }
}

// ---------------------------------------------------------------- whole-tensor entry points

type RowRef = (src: Float32Array, xo: number, out: Uint8Array, yo: number, nBlocks: number) => void;
type RowImpl = (src: Float32Array, xo: number, out: Uint8Array, yo: number, rowLength: number, qw: Float32Array) => void;

function makeQuantize(t: typeof Q4_0, ref: RowRef, impl: RowImpl | null) {
  const refAll = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array): void => {
    checkQuantizeArgs(t, src, nRows, rowLength, out, undefined);
    ref(src, 0, out, 0, (nRows * rowLength) / t.blockSize);
  };
  const quantize = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void => {
    if (!impl || !importance) return refAll(src, nRows, rowLength, out);
    const rowBytes = checkQuantizeArgs(t, src, nRows, rowLength, out, importance);
    for (let r = 0; r < nRows; r++) impl(src, r * rowLength, out, r * rowBytes, rowLength, importance);
  };
  return { refAll, quantize };
}

const q4_0 = makeQuantize(Q4_0, quantizeRowQ4_0Ref, quantizeRowQ4_0Impl);
const q4_1 = makeQuantize(Q4_1, quantizeRowQ4_1Ref, (s, x, o, y, n, w) => quantizeRowQx_1Impl(s, x, o, y, n, w, false));
const q5_0 = makeQuantize(Q5_0, quantizeRowQ5_0Ref, quantizeRowQ5_0Impl);
const q5_1 = makeQuantize(Q5_1, quantizeRowQ5_1Ref, (s, x, o, y, n, w) => quantizeRowQx_1Impl(s, x, o, y, n, w, true));
const q8_0 = makeQuantize(Q8_0, quantizeRowQ8_0Ref, null);
const q8_1 = makeQuantize(Q8_1, quantizeRowQ8_1Ref, null);

/** quantize_row_X_ref over whole rows (no importance). */
export const quantizeQ4_0Ref = q4_0.refAll;
export const quantizeQ4_1Ref = q4_1.refAll;
export const quantizeQ5_0Ref = q5_0.refAll;
export const quantizeQ5_1Ref = q5_1.refAll;
export const quantizeQ8_0Ref = q8_0.refAll;
export const quantizeQ8_1Ref = q8_1.refAll;

/** quantize_X (ggml_quantize_chunk): ref without importance, imatrix path with it. */
export const quantizeQ4_0 = q4_0.quantize;
export const quantizeQ4_1 = q4_1.quantize;
export const quantizeQ5_0 = q5_0.quantize;
export const quantizeQ5_1 = q5_1.quantize;
export const quantizeQ8_0 = q8_0.quantize;

// ---------------------------------------------------------------- dequantize (dequantize_row_X)

export function dequantizeQ4_0(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q4_0, src, n, out);
  for (let xo = 0, yo = 0; yo < n; xo += 18, yo += QK) {
    const d = readF16(src, xo);
    for (let j = 0; j < 16; j++) {
      const q = src[xo + 2 + j];
      out[yo + j] = fround(((q & 0x0f) - 8) * d);
      out[yo + j + 16] = fround(((q >>> 4) - 8) * d);
    }
  }
}

export function dequantizeQ4_1(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q4_1, src, n, out);
  for (let xo = 0, yo = 0; yo < n; xo += 20, yo += QK) {
    const d = readF16(src, xo);
    const m = readF16(src, xo + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[xo + 4 + j];
      out[yo + j] = fround(fround((q & 0x0f) * d) + m);
      out[yo + j + 16] = fround(fround((q >>> 4) * d) + m);
    }
  }
}

function readU32(src: Uint8Array, o: number): number {
  return (src[o] | (src[o + 1] << 8) | (src[o + 2] << 16) | (src[o + 3] << 24)) >>> 0;
}

export function dequantizeQ5_0(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q5_0, src, n, out);
  for (let xo = 0, yo = 0; yo < n; xo += 22, yo += QK) {
    const d = readF16(src, xo);
    const qh = readU32(src, xo + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[xo + 6 + j];
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[yo + j] = fround((((q & 0x0f) | h0) - 16) * d);
      out[yo + j + 16] = fround((((q >>> 4) | h1) - 16) * d);
    }
  }
}

export function dequantizeQ5_1(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q5_1, src, n, out);
  for (let xo = 0, yo = 0; yo < n; xo += 24, yo += QK) {
    const d = readF16(src, xo);
    const m = readF16(src, xo + 2);
    const qh = readU32(src, xo + 4);
    for (let j = 0; j < 16; j++) {
      const q = src[xo + 8 + j];
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      out[yo + j] = fround(fround(((q & 0x0f) | h0) * d) + m);
      out[yo + j + 16] = fround(fround(((q >>> 4) | h1) * d) + m);
    }
  }
}

export function dequantizeQ8_0(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q8_0, src, n, out);
  for (let xo = 0, yo = 0; yo < n; xo += 34, yo += QK) {
    const d = readF16(src, xo);
    for (let j = 0; j < QK; j++) out[yo + j] = fround(((src[xo + 2 + j] << 24) >> 24) * d);
  }
}

/** ggml has no dequantize_row_q8_1 (Q8_1 is a dot-product intermediate); this decodes q * d the same way. */
export function dequantizeQ8_1(src: Uint8Array, n: number, out: Float32Array): void {
  checkDequantizeArgs(Q8_1, src, n, out);
  for (let xo = 0, yo = 0; yo < n; xo += 36, yo += QK) {
    const d = readF16(src, xo);
    for (let j = 0; j < QK; j++) out[yo + j] = fround(((src[xo + 4 + j] << 24) >> 24) * d);
  }
}

// ---------------------------------------------------------------- codecs

export const legacyCodecs: readonly GgmlCodec[] = Object.freeze([
  { type: F32, quantize: quantizeF32, dequantize: dequantizeF32 },
  { type: F16, quantize: quantizeF16, dequantize: dequantizeF16 },
  { type: BF16, quantize: quantizeBF16, dequantize: dequantizeBF16 },
  { type: Q4_0, quantize: quantizeQ4_0, usesImportance: true, dequantize: dequantizeQ4_0 },
  { type: Q4_1, quantize: quantizeQ4_1, usesImportance: true, dequantize: dequantizeQ4_1 },
  { type: Q5_0, quantize: quantizeQ5_0, usesImportance: true, dequantize: dequantizeQ5_0 },
  { type: Q5_1, quantize: quantizeQ5_1, usesImportance: true, dequantize: dequantizeQ5_1 },
  { type: Q8_0, quantize: quantizeQ8_0, dequantize: dequantizeQ8_0 },
  { type: Q8_1, quantize: quantizeQ8_1Ref, dequantize: dequantizeQ8_1 },
]);

/** the quantize_row_X_ref variant per type name, for types whose default quantize can differ */
export const legacyRefQuantizers: Readonly<Record<string, (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array) => void>> = Object.freeze({
  Q4_0: quantizeQ4_0Ref, Q4_1: quantizeQ4_1Ref, Q5_0: quantizeQ5_0Ref, Q5_1: quantizeQ5_1Ref, Q8_0: quantizeQ8_0Ref, Q8_1: quantizeQ8_1Ref,
});
