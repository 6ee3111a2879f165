/**
 * Quantization schemes: how elements of a [rows x rowLength] float32 matrix share scales.
 *
 * A scheme = element format (formats/) + block rule (which elements share a scale) + scale format.
 * Each scheme has a reference quantizer (float32 rows -> packed bytes) and dequantizer (packed bytes ->
 * float32); these plain scalar loops are the spec that fast kernels (registered later through
 * registry.ts `registerFastPath`) are tested against.
 *
 * Matrices are row-major: element (r, c) is src[r * rowLength + c]. "Per-channel" means one scale per
 * row (output channel of a weight matrix) or per column.
 */
import { fail } from '../errors.js';
import { encodeOne, decodeOne } from '../formats/cast.js';
import { fp8_e4m3fn, e8m0 } from '../formats/registry.js';
import { Rounding } from '../formats/rounding.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../formats/half.js';

export type SchemeFamily = 'mx' | 'nvfp4' | 'nf4' | 'generic' | 'ggml' | 'element' | 'olive';

export interface QuantScheme {
  /** stable id (lower case), never reused for another layout */
  readonly id: string;
  /** display name */
  readonly name: string;
  readonly description: string;
  readonly family: SchemeFamily;
  /** elements per block along a row; rowLength must be a multiple. 0: one block per row (per-channel) */
  readonly blockSize: number;
  /** how elements share a scale, for listings: '32', 'row', 'column', 'tensor', '32x32' */
  readonly blockRule?: string;
  /** bytes of one block (scale + codes); for tensor-scoped layouts, bytes per blockSize elements excluding headers */
  readonly bytesPerBlock: number;
  /** storage bits per weight for a large matrix (4096 x 4096), headers amortized */
  readonly bitsPerWeight: number;
  /** scales or statistics are shared across rows: the whole matrix must be quantized at once */
  readonly tensorScoped: boolean;
  /** total packed bytes of a [rows x rowLength] matrix (fails on a bad shape) */
  packedBytes(rows: number, rowLength: number): number;
  /** reference quantizer */
  quantizeRef(src: Float32Array, rows: number, rowLength: number): Uint8Array;
  /** reference dequantizer */
  dequantizeRef(packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array): Float32Array;
}

/** A fast implementation of a scheme (e.g. WebAssembly), tested against the reference. */
export interface SchemeFastPath {
  quantize?(src: Float32Array, rows: number, rowLength: number): Uint8Array;
  dequantize?(packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array): Float32Array;
}

/** Reference shape used to state bits per weight (headers amortized). */
export const BPW_ROWS = 4096;
export const BPW_ROW_LENGTH = 4096;

export function bitsPerWeightOf(packedBytes: (rows: number, rowLength: number) => number): number {
  return (packedBytes(BPW_ROWS, BPW_ROW_LENGTH) * 8) / (BPW_ROWS * BPW_ROW_LENGTH);
}

export function checkShape(s: { name: string; blockSize: number }, n: number, rows: number, rowLength: number): void {
  if (!Number.isSafeInteger(rows) || rows < 1) fail(`${s.name}: row count must be a positive integer, got ${rows}`);
  if (!Number.isSafeInteger(rowLength) || rowLength < 1) fail(`${s.name}: row length must be a positive integer, got ${rowLength}`);
  if (rows * rowLength !== n) fail(`${s.name}: ${n} values are not ${rows} rows of ${rowLength}`);
  if (s.blockSize > 1 && rowLength % s.blockSize !== 0)
    fail(`${s.name}: row length ${rowLength} is not a multiple of the block size ${s.blockSize}`);
}

/** Fail on the first NaN or infinity (for schemes whose storage cannot hold them). */
export function checkFinite(schemeName: string, src: Float32Array): void {
  for (let i = 0; i < src.length; i++) {
    const x = src[i];
    if (!Number.isFinite(x)) fail(`${schemeName} cannot hold ${x} (input value ${i})`);
  }
}

export function checkPackedLength(name: string, packed: Uint8Array, need: number): void {
  if (packed.length !== need) fail(`${name}: packed data has ${packed.length} bytes, expected ${need}`);
}

// ---------------------------------------------------------------------------------------------
// Scale formats

export type ScaleFormatName = 'f32' | 'f16' | 'bf16' | 'fp8_e4m3' | 'e8m0';
export const SCALE_FORMATS: readonly ScaleFormatName[] = ['f32', 'f16', 'bf16', 'fp8_e4m3', 'e8m0'];

export interface ScaleFormat {
  readonly name: ScaleFormatName;
  readonly bytes: number;
  /** the stored code of a scale value (round to nearest even, saturating for fp8/e8m0) */
  encode(x: number): number;
  decode(code: number): number;
}

const NEAREST_SATURATE = { rounding: Rounding.NearestEven, saturate: true, nanToZero: false };
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export const scaleFormats: Readonly<Record<ScaleFormatName, ScaleFormat>> = Object.freeze({
  f32: {
    name: 'f32',
    bytes: 4,
    encode(x: number) {
      f32Scratch[0] = x;
      return u32Scratch[0];
    },
    decode(c: number) {
      u32Scratch[0] = c;
      return f32Scratch[0];
    },
  },
  f16: { name: 'f16', bytes: 2, encode: f32ToF16, decode: f16ToF32 },
  bf16: { name: 'bf16', bytes: 2, encode: f32ToBf16, decode: bf16ToF32 },
  fp8_e4m3: {
    name: 'fp8_e4m3',
    bytes: 1,
    encode: (x: number) => encodeOne(fp8_e4m3fn, x, NEAREST_SATURATE, 0),
    decode: (c: number) => decodeOne(fp8_e4m3fn, c),
  },
  e8m0: {
    name: 'e8m0',
    bytes: 1,
    encode: (x: number) => encodeOne(e8m0, x, NEAREST_SATURATE, 0),
    decode: (c: number) => decodeOne(e8m0, c),
  },
});

export function scaleFormat(name: string): ScaleFormat {
  const key = name.toLowerCase().replace(/^fp8_e4m3fn$/, 'fp8_e4m3').replace(/^fp16$/, 'f16').replace(/^fp32$/, 'f32');
  const f = (scaleFormats as Record<string, ScaleFormat>)[key];
  if (!f) fail(`unknown scale format '${name}' (valid: ${SCALE_FORMATS.join(', ')})`);
  return f;
}

/** Write a little-endian unsigned code of `bytes` bytes. */
export function writeLE(out: Uint8Array, at: number, code: number, bytes: number): void {
  for (let i = 0; i < bytes; i++) out[at + i] = (code >>> (8 * i)) & 0xff;
}

export function readLE(src: Uint8Array, at: number, bytes: number): number {
  let v = 0;
  for (let i = 0; i < bytes; i++) v += src[at + i] * 2 ** (8 * i);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Bit packing of element codes: element i occupies bits [i*bits, (i+1)*bits) of a little-endian
// bit stream, so 4-bit codes go two per byte low nibble first, and 6-bit codes four per three bytes
// (e0 | e1 << 6 | e2 << 12 | e3 << 18 as a 24-bit little-endian word).

export function packedCodeBytes(count: number, bits: number): number {
  return Math.ceil((count * bits) / 8);
}

export function packCodes(codes: ArrayLike<number>, count: number, bits: number, out: Uint8Array, at: number): void {
  if (bits === 8) {
    for (let i = 0; i < count; i++) out[at + i] = codes[i];
    return;
  }
  const nbytes = packedCodeBytes(count, bits);
  out.fill(0, at, at + nbytes);
  let bit = 0;
  for (let i = 0; i < count; i++) {
    let c = codes[i];
    let left = bits;
    while (left > 0) {
      const byte = at + (bit >>> 3);
      const off = bit & 7;
      const take = Math.min(left, 8 - off);
      out[byte] |= (c & ((1 << take) - 1)) << off;
      c >>>= take;
      left -= take;
      bit += take;
    }
  }
}

export function unpackCodes(src: Uint8Array, at: number, count: number, bits: number, out: Uint16Array | Uint8Array): void {
  if (bits === 8) {
    for (let i = 0; i < count; i++) out[i] = src[at + i];
    return;
  }
  let bit = 0;
  for (let i = 0; i < count; i++) {
    let c = 0;
    let got = 0;
    while (got < bits) {
      const off = bit & 7;
      const take = Math.min(bits - got, 8 - off);
      c |= ((src[at + (bit >>> 3)] >>> off) & ((1 << take) - 1)) << got;
      got += take;
      bit += take;
    }
    out[i] = c;
  }
}

