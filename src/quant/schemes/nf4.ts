/**
 * NF4 with double quantization, as QLoRA (Dettmers et al. 2023) and bitsandbytes define it
 * (`bitsandbytes.functional.quantize_4bit(x, blocksize=64, compress_statistics=True, quant_type='nf4')`):
 *
 *   1. blocks of 64 elements in flat (row-major) order; absmax_b = max |x| of block b (float32);
 *      code_i = argmin_j |clamp(x_i * (1 / absmax_b), -1, 1) - NF4[j]|  (ties: the lower code)
 *   2. offset = mean_b absmax_b (float32, one per tensor); c_b = absmax_b - offset
 *   3. the c_b are quantized by `quantize_blockwise(c, blocksize=256)` with bitsandbytes' signed
 *      8-bit dynamic map (`create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`):
 *      per 256 consecutive c_b, absmax2 = max |c_b| (float32) and q_b = argmin_j |c_b / absmax2 - DYN[j]|
 *   Dequantization: absmax_b = DYN[q_b] * absmax2 + offset;  x_i = NF4[code_i] * absmax_b.
 *
 * The dynamic map (256 values, sorted ascending): for i = 0..6, the means of adjacent points of
 * linspace(0.1, 1, 2^i + 1), times ±10^(i - 6); plus 0 and 1.0. Values here are computed in float64
 * and rounded to float32 (torch computes linspace in float32; entries may differ from it by an ulp).
 *
 * Packed layout (tensor-scoped; sections in this order):
 *   bytes 0..3             offset, float32 little-endian
 *   4 * ceil(nb / 256)     absmax2 per group of 256 blocks, float32 little-endian
 *   nb                     q_b, one byte per 64-element block
 *   n / 2                  NF4 codes, two per byte, FIRST element in the HIGH nibble (bitsandbytes order)
 * nb = n / 64 blocks. 4 + 8/64 + 32/(64*256) = 4.127 bits per weight (plus 32 bits per tensor).
 * NaN and infinities cannot be held (fail). An all-zero block stores absmax 0 and code 7 (= 0.0).
 */
import { NF4_LEVELS } from '../../formats/registry.js';
import { checkFinite, checkPackedLength, checkShape, type QuantScheme } from '../scheme.js';

export const NF4_BLOCK = 64;
export const NF4_DQ_GROUP = 256;

const NF4 = Float32Array.from(NF4_LEVELS);

/** bitsandbytes' signed 8-bit dynamic quantization map (see above), ascending. */
export const DYNAMIC_MAP: Float32Array = (() => {
  const data: number[] = [];
  const maxExponentBits = 7;
  for (let i = 0; i < maxExponentBits; i++) {
    const items = 2 ** i + 1;
    const scale = 10 ** (-(maxExponentBits - 1) + i);
    for (let k = 0; k < items - 1; k++) {
      const a = Math.fround(0.1 + ((1 - 0.1) * k) / (items - 1));
      const b = Math.fround(0.1 + ((1 - 0.1) * (k + 1)) / (items - 1));
      const mean = Math.fround((a + b) / 2);
      data.push(Math.fround(scale * mean), Math.fround(-scale * mean));
    }
  }
  data.push(0, 1);
  data.sort((x, y) => x - y);
  return Float32Array.from(data);
})();

/** argmin_j |v - table[j]| over an ascending table, ties to the lower index (torch.argmin). */
function nearestIndex(table: Float32Array, v: number): number {
  let best = 0;
  let bestD = Infinity;
  for (let j = 0; j < table.length; j++) {
    const d = Math.fround(Math.abs(Math.fround(v - table[j])));
    if (d < bestD) {
      bestD = d;
      best = j;
    }
  }
  return best;
}

function clamp1(v: number): number {
  return v < -1 ? -1 : v > 1 ? 1 : v;
}

function layout(n: number) {
  const nb = n / NF4_BLOCK;
  const ng = Math.ceil(nb / NF4_DQ_GROUP);
  const absmax2At = 4;
  const qAt = absmax2At + 4 * ng;
  const codesAt = qAt + nb;
  return { nb, ng, absmax2At, qAt, codesAt, total: codesAt + n / 2 };
}

export const nf4DqScheme: QuantScheme = Object.freeze({
  id: 'nf4_dq',
  name: 'NF4 + double quant',
  description: 'QLoRA/bitsandbytes NF4: 64-element blocks, absmax scales 8-bit quantized in groups of 256 (offset = mean)',
  family: 'nf4',
  blockSize: NF4_BLOCK,
  bytesPerBlock: 33,
  bitsPerWeight: (layout(4096 * 4096).total * 8) / (4096 * 4096),
  tensorScoped: true,
  packedBytes(rows: number, rowLength: number): number {
    checkShape(nf4DqScheme, rows * rowLength, rows, rowLength);
    return layout(rows * rowLength).total;
  },
  quantizeRef(src: Float32Array, rows: number, rowLength: number): Uint8Array {
    checkShape(nf4DqScheme, src.length, rows, rowLength);
    checkFinite('nf4_dq', src);
    const L = layout(src.length);
    const out = new Uint8Array(L.total);
    const dv = new DataView(out.buffer);
    const absmax = new Float32Array(L.nb);
    for (let b = 0; b < L.nb; b++) {
      let m = 0;
      for (let i = b * NF4_BLOCK; i < (b + 1) * NF4_BLOCK; i++) m = Math.max(m, Math.abs(src[i]));
      absmax[b] = m;
      const inv = Math.fround(1 / m);
      for (let i = b * NF4_BLOCK; i < (b + 1) * NF4_BLOCK; i += 2) {
        const hi = m === 0 ? 7 : nearestIndex(NF4, clamp1(Math.fround(src[i] * inv)));
        const lo = m === 0 ? 7 : nearestIndex(NF4, clamp1(Math.fround(src[i + 1] * inv)));
        out[L.codesAt + (i >>> 1)] = (hi << 4) | lo;
      }
    }
    let sum = 0;
    for (let b = 0; b < L.nb; b++) sum += absmax[b];
    const offset = Math.fround(sum / L.nb);
    dv.setFloat32(0, offset, true);
    for (let b = 0; b < L.nb; b++) absmax[b] = Math.fround(absmax[b] - offset);
    for (let g = 0; g < L.ng; g++) {
      const end = Math.min(L.nb, (g + 1) * NF4_DQ_GROUP);
      let m = 0;
      for (let b = g * NF4_DQ_GROUP; b < end; b++) m = Math.max(m, Math.abs(absmax[b]));
      dv.setFloat32(L.absmax2At + 4 * g, m, true);
      const inv = Math.fround(1 / m);
      for (let b = g * NF4_DQ_GROUP; b < end; b++)
        out[L.qAt + b] = nearestIndex(DYNAMIC_MAP, m === 0 ? 0 : clamp1(Math.fround(absmax[b] * inv)));
    }
    return out;
  },
  dequantizeRef(packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array): Float32Array {
    checkShape(nf4DqScheme, rows * rowLength, rows, rowLength);
    const n = rows * rowLength;
    const L = layout(n);
    checkPackedLength('nf4_dq', packed, L.total);
    const dv = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
    const offset = dv.getFloat32(0, true);
    const dst = out ?? new Float32Array(n);
    for (let b = 0; b < L.nb; b++) {
      const absmax2 = dv.getFloat32(L.absmax2At + 4 * Math.floor(b / NF4_DQ_GROUP), true);
      const absmax = Math.fround(Math.fround(DYNAMIC_MAP[packed[L.qAt + b]] * absmax2) + offset);
      for (let i = b * NF4_BLOCK; i < (b + 1) * NF4_BLOCK; i += 2) {
        const byte = packed[L.codesAt + (i >>> 1)];
        dst[i] = NF4[byte >>> 4] * absmax;
        dst[i + 1] = NF4[byte & 15] * absmax;
      }
    }
    return dst;
  },
});
