/**
 * ggml's ternary block types (BitNet b1.58 / TriLM), byte-identical to llama.cpp
 * (ggml-quants.c quantize_row_tq{1,2}_0_ref). Elements are {-1, 0, +1} * d with d = absmax (fp16).
 *
 *   TQ1_0 (id 34), 256 elements, 54 bytes:  qs[48]  qh[4]  d: f16
 *     5 trits per byte of qs, 4 trits per byte of qh. A byte holding trits t0..t4 (t0 most
 *     significant, each t = q + 1 in {0,1,2}) stores ceil(256 * (t0*81 + t1*27 + t2*9 + t3*3 + t4) / 243),
 *     so trit n is read back as ((uint8)(byte * 3^n) * 3) >> 8. qh bytes hold 4 trits and a zero fifth.
 *     Element order: qs[0..32) hold elements m + 32n (n = trit index) of the first 160, qs[32..48)
 *     hold 160 + m + 16n, qh[j] holds 240 + j + 4n.
 *   TQ2_0 (id 35), 256 elements, 66 bytes:  qs[64]  d: f16
 *     2 bits per element (q + 1); byte 32*c + m holds elements 128*c + m + 32*n in bits 2n..2n+1.
 */
import type { GgmlCodec } from './types.js';
import { ggmlTypeById } from './types.js';
import { f16ToF32, f32ToF16 } from '../../formats/half.js';
import { checkDequantize, checkQuantize, roundHalfAway } from './ggmlb-check.js';

const fround = Math.fround;
const TQ1_0 = ggmlTypeById(34);
const TQ2_0 = ggmlTypeById(35);

function absmax256(x: Float32Array, xo: number): number {
  let amax = 0;
  for (let j = 0; j < 256; j++) {
    const a = Math.abs(x[xo + j]);
    amax = amax > a ? amax : a;
  }
  return amax;
}

/** lroundf(x * id) + 1 in {0, 1, 2} */
function trit(v: number, id: number): number {
  return roundHalfAway(fround(v * id)) + 1;
}

function quantizeTq1Blocks(x: Float32Array, n: number, out: Uint8Array): void {
  const nb = n >>> 8;
  for (let i = 0; i < nb; i++) {
    let xo = i * 256;
    const o = i * 54;
    const d = absmax256(x, xo);
    const id = d ? fround(1 / d) : 0;
    // qs[0..32): 5 trits along 32
    for (let m = 0; m < 32; m++) {
      let q = 0;
      for (let t = 0; t < 5; t++) q = q * 3 + trit(x[xo + m + t * 32], id);
      out[o + m] = ((q * 256 + 242) / 243) | 0;
    }
    xo += 160;
    // qs[32..48): 5 trits along 16
    for (let m = 0; m < 16; m++) {
      let q = 0;
      for (let t = 0; t < 5; t++) q = q * 3 + trit(x[xo + m + t * 16], id);
      out[o + 32 + m] = ((q * 256 + 242) / 243) | 0;
    }
    xo += 80;
    // qh[0..4): 4 trits, the first in the most significant position
    for (let j = 0; j < 4; j++) {
      let q = 0;
      for (let t = 0; t < 4; t++) q = q * 3 + trit(x[xo + j + t * 4], id);
      q *= 3;
      out[o + 48 + j] = ((q * 256 + 242) / 243) | 0;
    }
    const h = f32ToF16(d);
    out[o + 52] = h & 0xff;
    out[o + 53] = h >>> 8;
  }
}

const POW3 = [1, 3, 9, 27, 81, 243];

/** trit n of a packed byte, minus 1 */
function unpackTrit(b: number, n: number): number {
  const q = (b * POW3[n]) & 0xff;
  return ((q * 3) >>> 8) - 1;
}

function dequantizeTq1(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(TQ1_0, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = i * 54;
    let yo = i * 256;
    const d = f16ToF32(src[o + 52] | (src[o + 53] << 8));
    for (let t = 0; t < 5; t++) for (let m = 0; m < 32; m++) y[yo++] = unpackTrit(src[o + m], t) * d;
    for (let t = 0; t < 5; t++) for (let m = 0; m < 16; m++) y[yo++] = unpackTrit(src[o + 32 + m], t) * d;
    for (let t = 0; t < 4; t++) for (let j = 0; j < 4; j++) y[yo++] = unpackTrit(src[o + 48 + j], t) * d;
  }
}

function quantizeTq2Blocks(x: Float32Array, n: number, out: Uint8Array): void {
  const nb = n >>> 8;
  for (let i = 0; i < nb; i++) {
    const xo = i * 256;
    const o = i * 66;
    const d = absmax256(x, xo);
    const id = d ? fround(1 / d) : 0;
    for (let c = 0; c < 2; c++) {
      for (let m = 0; m < 32; m++) {
        let q = 0;
        for (let t = 0; t < 4; t++) q += (trit(x[xo + 128 * c + m + 32 * t], id) & 3) << (2 * t);
        out[o + 32 * c + m] = q;
      }
    }
    const h = f32ToF16(d);
    out[o + 64] = h & 0xff;
    out[o + 65] = h >>> 8;
  }
}

function dequantizeTq2(src: Uint8Array, n: number, y: Float32Array): void {
  const nb = checkDequantize(TQ2_0, src, n, y);
  for (let i = 0; i < nb; i++) {
    const o = i * 66;
    let yo = i * 256;
    const d = f16ToF32(src[o + 64] | (src[o + 65] << 8));
    for (let c = 0; c < 2; c++)
      for (let t = 0; t < 4; t++)
        for (let m = 0; m < 32; m++) y[yo++] = (((src[o + 32 * c + m] >>> (2 * t)) & 3) - 1) * d;
  }
}

export const tq1_0Codec: GgmlCodec = Object.freeze({
  type: TQ1_0,
  quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    checkQuantize(TQ1_0, src, nRows, rowLength, out, importance);
    quantizeTq1Blocks(src, nRows * rowLength, out);
  },
  dequantize: dequantizeTq1,
});

export const tq2_0Codec: GgmlCodec = Object.freeze({
  type: TQ2_0,
  quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
    checkQuantize(TQ2_0, src, nRows, rowLength, out, importance);
    quantizeTq2Blocks(src, nRows * rowLength, out);
  },
  dequantize: dequantizeTq2,
});

export const ternaryCodecs: readonly GgmlCodec[] = Object.freeze([tq1_0Codec, tq2_0Codec]);
