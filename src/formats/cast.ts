/**
 * Array-level reference casts: float32 in, codes or float32 out. These scalar loops are the spec the
 * fast kernels (kernels/cast.ts) are tested against bit for bit.
 *
 * fakeQuant(x) = fround(decode(encode(fround(x / scale))) * scale)   (scale = 1 skips both steps)
 */
import { fail } from '../errors.js';
import { decodeCodebook, encodeCodebook } from './codebook.js';
import type { Format } from './descriptor.js';
import { decodeFloat, encodeFloat, type LoweredCast } from './float.js';
import { decodeInt, encodeInt } from './int.js';
import { Rounding, randomWord, roundingCode, seedKey, type RoundingMode } from './rounding.js';

export interface CastOptions {
  /** default 'nearest-even' */
  rounding?: RoundingMode;
  /** seed of stochastic rounding (default 0) */
  seed?: number;
  /** clamp overflow to ±max finite (default true); false: IEEE overflow to inf, else NaN */
  saturate?: boolean;
  /** map NaN to 0 in formats without NaN instead of failing */
  nanToZero?: boolean;
  /** values are divided by scale before quantizing and multiplied after decoding (default 1) */
  scale?: number;
  /** index of src[0] in the whole stream, so stochastic rounding of chunks equals that of the whole */
  offset?: number;
}

export type CodeArray = Uint8Array | Uint16Array | Uint32Array;

export interface ResolvedCast extends LoweredCast {
  scale: number;
  key: number;
  offset: number;
}

export function resolveCast(f: Format, o: CastOptions = {}): ResolvedCast {
  const rounding = roundingCode(o.rounding);
  const scale = o.scale ?? 1;
  if (!(Number.isFinite(scale) && scale > 0)) fail(`scale must be a finite positive number, got ${scale}`);
  const saturate = o.saturate ?? true;
  if (!saturate && !f.hasInf && !f.hasNaN)
    fail(`--no-saturate needs a format with inf or NaN to overflow to; ${f.name} has neither`);
  const offset = o.offset ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0) fail(`offset must be a non-negative integer, got ${offset}`);
  return { rounding, saturate, nanToZero: o.nanToZero ?? false, scale, key: seedKey(o.seed ?? 0), offset };
}

/** Storage for one code per element: bytes up to 8 bits, 16-bit words up to 16, else 32-bit words. */
export function allocCodes(f: Format, n: number): CodeArray {
  return f.bits <= 8 ? new Uint8Array(n) : f.bits <= 16 ? new Uint16Array(n) : new Uint32Array(n);
}

export function encodeOne(f: Format, x: number, o: LoweredCast, u: number): number {
  switch (f.kind) {
    case 'float':
      return encodeFloat(f, x, o, u);
    case 'int':
      return encodeInt(f, x, o, u);
    case 'codebook':
      return encodeCodebook(f, x, o, u);
  }
}

export function decodeOne(f: Format, code: number): number {
  switch (f.kind) {
    case 'float':
      return decodeFloat(f, code);
    case 'int':
      return decodeInt(f, code);
    case 'codebook':
      return decodeCodebook(f, code);
  }
}

export function encodeRef(f: Format, src: Float32Array, opts: CastOptions = {}, out?: CodeArray): CodeArray {
  const o = resolveCast(f, opts);
  const dst = out ?? allocCodes(f, src.length);
  if (dst.length < src.length) fail(`output has ${dst.length} elements, need ${src.length}`);
  const stochastic = o.rounding === Rounding.Stochastic;
  const inv = o.scale;
  for (let i = 0; i < src.length; i++) {
    const x = inv === 1 ? src[i] : Math.fround(src[i] / inv);
    dst[i] = encodeOne(f, x, o, stochastic ? randomWord(o.key, o.offset + i) : 0);
  }
  return dst;
}

export function decodeRef(f: Format, codes: ArrayLike<number>, out?: Float32Array, scale = 1): Float32Array {
  const dst = out ?? new Float32Array(codes.length);
  const limit = 2 ** f.bits;
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c >= limit) fail(`code ${c} at index ${i} does not fit in ${f.bits} bits of ${f.name}`);
    const v = decodeOne(f, c);
    dst[i] = scale === 1 ? v : v * scale;
  }
  return dst;
}

export function fakeQuantRef(f: Format, src: Float32Array, opts: CastOptions = {}, out?: Float32Array): Float32Array {
  const o = resolveCast(f, opts);
  const dst = out ?? new Float32Array(src.length);
  const stochastic = o.rounding === Rounding.Stochastic;
  const s = o.scale;
  for (let i = 0; i < src.length; i++) {
    const x = s === 1 ? src[i] : Math.fround(src[i] / s);
    const v = decodeOne(f, encodeOne(f, x, o, stochastic ? randomWord(o.key, o.offset + i) : 0));
    dst[i] = s === 1 ? v : v * s;
  }
  return dst;
}
