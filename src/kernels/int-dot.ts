/**
 * The scalar TypeScript reference of the integer matmul (wasm/matmul.ts intMatmulChunk; the engine's
 * MatmulEngine.matmulInt): llama.cpp's CPU path for quantized weights, where each activation row is
 * rounded to the weight type's vec_dot type and multiplied with the stored quants in integers.
 *
 *   activations: Q8_0 (blocks of 32; weights Q4_0, Q5_0, Q8_0, IQ4_NL) or Q8_K (blocks of 256; weights
 *   Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS), by the codecs' own quantize_row_*_ref (so the same bits).
 *   weights: per block the integer values w (sub-block scales folded in where they are integers, e.g.
 *   Q4_K sc * q, Q6_K sc * (q - 32), IQ4_XS (ls - 32) * grid[q]), the block's f32 scale and, for Q4_K /
 *   Q5_K, the 8 sub-block minimums m with their scale dmin.
 *
 * Order of operations (the kernel's, bit for bit): per block b, I = sum of w[e] * x[e] over the block,
 * exactly in integers; then in f32, block after block:
 *   y = y + f32(I) * f32(dw * dx)
 *   y = y - f32(M) * f32(dmin * dx)      (Q4_K, Q5_K) M = sum_j m[j] s[j], s = the sums of 32 quants
 *
 * Error bound against the exact product of the same operands (dequantized weights and rounded
 * activations, in float64): f32(I) rounds once (|I| may exceed 2^24), the scale product, the product
 * and the sum once each, so with at most R = 4 roundings per block (7 with minimums)
 *   |y - exact| <= gamma(R * nb) * sum_e |w_e x_e|  (+ the same for the minimums' terms),
 * nb = blocks per row. `intMatmulErrorFactor` gives gamma(R * nb).
 */
import { fail } from '../errors.js';
import { readF16, readF32 } from '../quant/ggml/common.js';
import { kvaluesIq4nl } from '../quant/ggml/iq-grids.js';
import { quantizeRowQ8_KRef } from '../quant/ggml/kquants.js';
import { quantizeRowQ8_0Ref } from '../quant/ggml/legacy.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../quant/ggml/types.js';

const fround = Math.fround;

/** Block length of the integer path for a GGML type id (32 or 256), 0 when it has none. */
export function intBlockOf(typeId: number): number {
  switch (typeId) {
    case 2: case 6: case 8: case 20: return 32;
    case 11: case 12: case 13: case 14: case 23: return 256;
  }
  return 0;
}

/** Activations rounded to the vec_dot type: int quants, per-block f32 scales, sums of every 32 quants. */
export interface IntActs {
  q: Int16Array;
  d: Float32Array;
  sums: Int32Array;
}

/** Round nTok rows of k activations to Q8_0 (block 32) or Q8_K (block 256) with the codecs' reference. */
export function quantizeActsRef(block: number, x: Float32Array, nTok: number, k: number): IntActs {
  const nb = k / block;
  if (!Number.isInteger(nb)) fail(`row of ${k} is not a multiple of ${block}`);
  const bb = block === 32 ? 34 : 292;
  const bytes = new Uint8Array(nTok * nb * bb);
  if (block === 32) quantizeRowQ8_0Ref(x, 0, bytes, 0, nTok * nb);
  else quantizeRowQ8_KRef(x, 0, bytes, 0, nTok * nb);
  const q = new Int16Array(nTok * k);
  const d = new Float32Array(nTok * nb);
  const sums = new Int32Array((nTok * k) / 32);
  for (let b = 0; b < nTok * nb; b++) {
    const o = b * bb;
    d[b] = block === 32 ? readF16(bytes, o) : readF32(bytes, o);
    const qo = block === 32 ? o + 2 : o + 4;
    for (let j = 0; j < block; j++) q[b * block + j] = (bytes[qo + j] << 24) >> 24;
  }
  for (let i = 0; i < sums.length; i++) {
    let s = 0;
    for (let j = 0; j < 32; j++) s += q[i * 32 + j];
    sums[i] = s;
  }
  return { q, d, sums };
}

/** A weight row unpacked for the integer path. */
export interface IntRow {
  w: Int16Array;
  scale: Float32Array;
  /** Q4_K, Q5_K: 8 minimums per super-block, and their scale dmin */
  mins?: Int16Array;
  dmin?: Float32Array;
}

const scaleK4 = (s: Uint8Array, o: number, j: number) => (j < 4 ? s[o + j] & 63 : (s[o + j + 4] & 0xf) | ((s[o + j - 4] >> 6) << 4));
const minK4 = (s: Uint8Array, o: number, j: number) => (j < 4 ? s[o + j + 4] & 63 : (s[o + j + 4] >> 4) | ((s[o + j] >> 6) << 4));

/** Unpack one stored row of k elements of a type with an integer path. */
export function unpackIntRow(type: GgmlTypeInfo, src: Uint8Array, k: number): IntRow {
  const bl = intBlockOf(type.id);
  if (!bl) fail(`no integer path for ${type.name}`);
  const nb = k / bl;
  const w = new Int16Array(k);
  const scale = new Float32Array(nb);
  const mins = type.id === 12 || type.id === 13 ? new Int16Array(nb * 8) : undefined;
  const dmin = mins ? new Float32Array(nb) : undefined;
  const s8 = (v: number) => (v << 24) >> 24;
  for (let b = 0; b < nb; b++) {
    const p = b * type.typeSize;
    const o = b * bl;
    switch (type.id) {
      case 8: // Q8_0
        scale[b] = readF16(src, p);
        for (let j = 0; j < 32; j++) w[o + j] = s8(src[p + 2 + j]);
        break;
      case 2: // Q4_0
        scale[b] = readF16(src, p);
        for (let j = 0; j < 16; j++) {
          w[o + j] = (src[p + 2 + j] & 15) - 8;
          w[o + j + 16] = (src[p + 2 + j] >> 4) - 8;
        }
        break;
      case 6: { // Q5_0
        scale[b] = readF16(src, p);
        const qh = (src[p + 2] | (src[p + 3] << 8) | (src[p + 4] << 16) | (src[p + 5] << 24)) >>> 0;
        for (let j = 0; j < 16; j++) {
          w[o + j] = ((src[p + 6 + j] & 15) | (((qh >>> j) & 1) << 4)) - 16;
          w[o + j + 16] = ((src[p + 6 + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
        }
        break;
      }
      case 20: // IQ4_NL
        scale[b] = readF16(src, p);
        for (let j = 0; j < 16; j++) {
          w[o + j] = kvaluesIq4nl[src[p + 2 + j] & 15];
          w[o + j + 16] = kvaluesIq4nl[src[p + 2 + j] >> 4];
        }
        break;
      case 12: // Q4_K
      case 13: { // Q5_K
        const five = type.id === 13;
        scale[b] = readF16(src, p);
        dmin![b] = readF16(src, p + 2);
        const qs = p + (five ? 48 : 16);
        for (let is = 0; is < 8; is++) {
          const sc = scaleK4(src, p + 4, is);
          mins![b * 8 + is] = minK4(src, p + 4, is);
          for (let l = 0; l < 32; l++) {
            const byte = src[qs + (is >> 1) * 32 + l];
            let q = is & 1 ? byte >> 4 : byte & 15;
            if (five) q |= ((src[p + 16 + l] >> is) & 1) << 4;
            w[o + is * 32 + l] = sc * q;
          }
        }
        break;
      }
      case 14: { // Q6_K
        scale[b] = readF16(src, p + 208);
        for (let h = 0; h < 2; h++) {
          const ql = p + h * 64;
          const qh = p + 128 + h * 32;
          const sc = p + 192 + h * 8;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const q1 = ((src[ql + l] & 15) | ((src[qh + l] & 3) << 4)) - 32;
            const q2 = ((src[ql + l + 32] & 15) | (((src[qh + l] >> 2) & 3) << 4)) - 32;
            const q3 = ((src[ql + l] >> 4) | (((src[qh + l] >> 4) & 3) << 4)) - 32;
            const q4 = ((src[ql + l + 32] >> 4) | ((src[qh + l] >> 6) << 4)) - 32;
            const y = o + h * 128;
            w[y + l] = s8(src[sc + is]) * q1;
            w[y + l + 32] = s8(src[sc + is + 2]) * q2;
            w[y + l + 64] = s8(src[sc + is + 4]) * q3;
            w[y + l + 96] = s8(src[sc + is + 6]) * q4;
          }
        }
        break;
      }
      case 23: { // IQ4_XS
        scale[b] = readF16(src, p);
        const sh = src[p + 2] | (src[p + 3] << 8);
        for (let ib = 0; ib < 8; ib++) {
          const ls = ((src[p + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4);
          for (let j = 0; j < 16; j++) {
            const byte = src[p + 8 + 16 * ib + j];
            w[o + ib * 32 + j] = (ls - 32) * kvaluesIq4nl[byte & 15];
            w[o + ib * 32 + j + 16] = (ls - 32) * kvaluesIq4nl[byte >> 4];
          }
        }
        break;
      }
      case 11: { // Q3_K: hmask[32] | qs[64] | scales[12] | d
        scale[b] = readF16(src, p + 108);
        const s = p + 96;
        const q3Scale = (j: number) => {
          const lo = j < 8 ? src[s + j] & 0xf : src[s + j - 8] >> 4;
          return (lo | (((src[s + 8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4)) - 32;
        };
        let is = 0;
        let y = o;
        let m = 1;
        for (let n = 0; n < 2; n++) {
          const q = p + 32 + n * 32;
          for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
            for (let half = 0; half < 32; half += 16, is++) {
              const sc = q3Scale(is);
              for (let l = 0; l < 16; l++) {
                const lo = (src[q + half + l] >> shift) & 3;
                w[y++] = sc * (lo - (src[p + half + l] & m ? 0 : 4));
              }
            }
          }
        }
        break;
      }
    }
  }
  return { w, scale, mins, dmin };
}

/**
 * out (nTok x n) = vecdot(x rounded, W) for a weight of n rows of k in `type` (stored bytes), in the
 * integer kernel's order of operations (bit for bit).
 */
export function intMatmulRef(out: Float32Array, x: Float32Array, type: GgmlTypeInfo, bytes: Uint8Array, nTok: number, k: number, n: number): void {
  const bl = intBlockOf(type.id);
  if (!bl || k % bl !== 0) fail(`no integer path for ${type.name} with ${k} columns`);
  const nb = k / bl;
  const acts = quantizeActsRef(bl, x, nTok, k);
  const rowBytes = ggmlRowBytes(type, k);
  for (let r = 0; r < n; r++) {
    const row = unpackIntRow(type, bytes.subarray(r * rowBytes, (r + 1) * rowBytes), k);
    for (let t = 0; t < nTok; t++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        let I = 0;
        for (let e = 0; e < bl; e++) I += row.w[b * bl + e] * acts.q[t * k + b * bl + e];
        const dx = acts.d[t * nb + b];
        acc = fround(acc + fround(fround(I) * fround(row.scale[b] * dx)));
        if (row.mins) {
          const so = (t * k + b * bl) / 32;
          let M = 0;
          for (let j = 0; j < 8; j++) M += row.mins[b * 8 + j] * acts.sums[so + j];
          acc = fround(acc - fround(fround(M) * fround(row.dmin![b] * dx)));
        }
      }
      out[t * n + r] = acc;
    }
  }
}

/** gamma(R nb) of the bound above for a row of k in a type with block bl (R = 7 with minimums, else 4) */
export function intMatmulErrorFactor(typeId: number, k: number): number {
  const bl = intBlockOf(typeId);
  const R = typeId === 12 || typeId === 13 ? 7 : 4;
  const m = R * Math.ceil(k / bl);
  const u = 2 ** -24;
  return (m * u) / (1 - m * u);
}
