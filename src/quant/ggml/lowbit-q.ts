/**
 * ggml's Q1_0 and Q2_0 block types, byte-identical to llama.cpp (ggml-quants.c
 * quantize_row_q{1,2}_0_ref; quantize_q{1,2}_0 ignores the importance vector).
 *
 *   Q1_0 (id 41), 128 elements, 18 bytes:  d: f16  qs[16]
 *     bit j%8 of byte j/8 = (x_j >= 0); value = bit ? d : -d;  d = mean |x| (float32 sum / 128)
 *   Q2_0 (id 42), 64 elements, 18 bytes:   d: f16  qs[16]
 *     bits 2(j%4).. of byte j/4 = clamp(round(x_j / d) + 1, 0, 3), halves away from zero;
 *     value = (q - 1) * d, i.e. {-d, 0, d, 2d};  d = absmax
 */
import type { GgmlCodec } from './types.js';
import { ggmlTypeById } from './types.js';
import { f16ToF32, f32ToF16 } from '../../formats/half.js';
import { checkDequantize, checkQuantize, roundHalfAway } from './ggmlb-check.js';

const fround = Math.fround;
const Q1_0 = ggmlTypeById(41);
const Q2_0 = ggmlTypeById(42);

function quantizeQ1Blocks(x: Float32Array, n: number, out: Uint8Array): void {
  const nb = n >>> 7;
  for (let i = 0; i < nb; i++) {
    const xo = i * 128;
    const o = i * 18;
    let sumAbs = 0;
    for (let j = 0; j < 128; j++) sumAbs = fround(sumAbs + Math.abs(x[xo + j]));
    const h = f32ToF16(fround(sumAbs / 128));
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let b = 0; b < 16; b++) {
      let q = 0;
      for (let k = 0; k < 8; k++) if (x[xo + 8 * b + k] >= 0) q |= 1 << k;
      out[o + 2 + b] = q;
    }
  }
}

function dequantizeQ1(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(Q1_0, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = i * 18;
    const d = f16ToF32(src[o] | (src[o + 1] << 8));
    for (let j = 0; j < 128; j++) y[i * 128 + j] = (src[o + 2 + (j >>> 3)] >>> (j & 7)) & 1 ? d : -d;
  }
}

function quantizeQ2Blocks(x: Float32Array, n: number, out: Uint8Array): void {
  const nb = n >>> 6;
  for (let i = 0; i < nb; i++) {
    const xo = i * 64;
    const o = i * 18;
    let amax = 0;
    for (let j = 0; j < 64; j++) {
      const a = Math.abs(x[xo + j]);
      if (a > amax) amax = a;
    }
    const id = amax > 0 ? fround(1 / amax) : 0;
    const h = f32ToF16(amax);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let b = 0; b < 16; b++) {
      let q4 = 0;
      for (let k = 0; k < 4; k++) {
        let q = roundHalfAway(fround(x[xo + 4 * b + k] * id)) + 1;
        if (q < 0) q = 0;
        if (q > 3) q = 3;
        q4 |= q << (2 * k);
      }
      out[o + 2 + b] = q4;
    }
  }
}

function dequantizeQ2(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(Q2_0, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = i * 18;
    const d = f16ToF32(src[o] | (src[o + 1] << 8));
    for (let j = 0; j < 64; j++) y[i * 64 + j] = (((src[o + 2 + (j >>> 2)] >>> (2 * (j & 3))) & 3) - 1) * d;
  }
}

export const q1_0Codec: GgmlCodec = Object.freeze({
  type: Q1_0,
  quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    checkQuantize(Q1_0, src, nRows, rowLength, out, importance);
    quantizeQ1Blocks(src, nRows * rowLength, out);
  },
  dequantize: dequantizeQ1,
});

export const q2_0Codec: GgmlCodec = Object.freeze({
  type: Q2_0,
  quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    checkQuantize(Q2_0, src, nRows, rowLength, out, importance);
    quantizeQ2Blocks(src, nRows * rowLength, out);
  },
  dequantize: dequantizeQ2,
});

export const lowbitQCodecs: readonly GgmlCodec[] = Object.freeze([q1_0Codec, q2_0Codec]);
