/**
 * NVFP4 (NVIDIA Blackwell): FP4 E2M1 elements in blocks of 16 along a row, one FP8 E4M3 scale per
 * block, and one float32 scale per tensor.
 *
 * NVIDIA's recipe (Transformer Engine / TensorRT Model Optimizer) picks the tensor scale so that the
 * largest block scale lands on the top of E4M3 and the largest element on the top of E2M1:
 *
 *   tensorScale = amax(tensor) / (6 * 448)                       (6 = max E2M1, 448 = max E4M3)
 *   blockScale  = e4m3(amax(block) / 6 / tensorScale)            (round to nearest even, saturating)
 *   P_i         = e2m1(V_i / (blockScale * tensorScale))         (round to nearest even, saturating)
 *   V_i        ~= P_i * blockScale * tensorScale
 *
 * amax(tensor) = 0 stores tensorScale 0 and all-zero blocks. NaN and infinities cannot be held (fail).
 *
 * Packed layout (tensor-scoped: the tensor scale spans all rows):
 *   bytes 0..3   tensorScale, float32 little-endian
 *   then per 16-element block, blocks in row order (9 bytes):
 *     byte 0     E4M3 block scale
 *     bytes 1..8 16 E2M1 codes, two per byte, low nibble first
 * 4.5 bits per weight plus 32 bits per tensor.
 * (ggml's NVFP4 type is a different 64-element layout: `ggml_nvfp4`.)
 */
import { encodeOne, decodeOne } from '../../formats/cast.js';
import { fp4_e2m1fn, fp8_e4m3fn } from '../../formats/registry.js';
import { Rounding } from '../../formats/rounding.js';
import { checkFinite, checkPackedLength, checkShape, type QuantScheme } from '../scheme.js';

export const NVFP4_BLOCK = 16;
const BLOCK_BYTES = 9;
const HEADER = 4;
const LOWERED = { rounding: Rounding.NearestEven, saturate: true, nanToZero: false };
const E2M1_MAX = 6;
const E4M3_MAX = 448;

export const nvfp4Scheme: QuantScheme = Object.freeze({
  id: 'nvfp4',
  name: 'NVFP4',
  description: 'NVIDIA NVFP4: 16 x FP4 E2M1 + FP8 E4M3 block scale + f32 tensor scale',
  family: 'nvfp4',
  blockSize: NVFP4_BLOCK,
  bytesPerBlock: BLOCK_BYTES,
  bitsPerWeight: (BLOCK_BYTES * 8) / NVFP4_BLOCK + 32 / (4096 * 4096),
  tensorScoped: true,
  packedBytes(rows: number, rowLength: number): number {
    checkShape(nvfp4Scheme, rows * rowLength, rows, rowLength);
    return HEADER + ((rows * rowLength) / NVFP4_BLOCK) * BLOCK_BYTES;
  },
  quantizeRef(src: Float32Array, rows: number, rowLength: number): Uint8Array {
    checkShape(nvfp4Scheme, src.length, rows, rowLength);
    checkFinite('nvfp4', src);
    let amax = 0;
    for (let i = 0; i < src.length; i++) amax = Math.max(amax, Math.abs(src[i]));
    const tensorScale = Math.fround(amax / (E2M1_MAX * E4M3_MAX));
    const nBlocks = src.length / NVFP4_BLOCK;
    const out = new Uint8Array(HEADER + nBlocks * BLOCK_BYTES);
    new DataView(out.buffer).setFloat32(0, tensorScale, true);
    if (tensorScale === 0) return out; // all zero (or all below the f32 range of the tensor scale)
    for (let b = 0; b < nBlocks; b++) {
      const base = b * NVFP4_BLOCK;
      let bmax = 0;
      for (let i = 0; i < NVFP4_BLOCK; i++) bmax = Math.max(bmax, Math.abs(src[base + i]));
      const sc = encodeOne(fp8_e4m3fn, Math.fround(Math.fround(bmax / E2M1_MAX) / tensorScale), LOWERED, 0);
      const at = HEADER + b * BLOCK_BYTES;
      out[at] = sc;
      const scale = Math.fround(decodeOne(fp8_e4m3fn, sc) * tensorScale);
      if (scale === 0) continue;
      for (let i = 0; i < NVFP4_BLOCK; i += 2) {
        const lo = encodeOne(fp4_e2m1fn, Math.fround(src[base + i] / scale), LOWERED, 0);
        const hi = encodeOne(fp4_e2m1fn, Math.fround(src[base + i + 1] / scale), LOWERED, 0);
        out[at + 1 + (i >>> 1)] = lo | (hi << 4);
      }
    }
    return out;
  },
  dequantizeRef(packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array): Float32Array {
    checkShape(nvfp4Scheme, rows * rowLength, rows, rowLength);
    const n = rows * rowLength;
    const nBlocks = n / NVFP4_BLOCK;
    checkPackedLength('nvfp4', packed, HEADER + nBlocks * BLOCK_BYTES);
    const dst = out ?? new Float32Array(n);
    const tensorScale = new DataView(packed.buffer, packed.byteOffset, 4).getFloat32(0, true);
    for (let b = 0; b < nBlocks; b++) {
      const at = HEADER + b * BLOCK_BYTES;
      const scale = decodeOne(fp8_e4m3fn, packed[at]) * tensorScale;
      const base = b * NVFP4_BLOCK;
      for (let i = 0; i < NVFP4_BLOCK; i += 2) {
        const byte = packed[at + 1 + (i >>> 1)];
        dst[base + i] = decodeOne(fp4_e2m1fn, byte & 15) * scale;
        dst[base + i + 1] = decodeOne(fp4_e2m1fn, byte >>> 4) * scale;
      }
    }
    return dst;
  },
});

