/**
 * Public casts. Dispatches to the fast WebAssembly kernel (wasm/cast.ts) where it covers the format and
 * options, else to the scalar reference (formats/cast.ts), which defines the result bit for bit.
 *
 * Covered: rounding 'nearest-even' (the default), saturating or not, any scale, for
 *   - signed minifloats with a zero (fp8_e4m3fn/fnuz, fp8_e5m2/fnuz, fp6, fp4, fp16, bf16, generic eXmY)
 *     whose values are all float32 values (m <= 23, emin >= -126, maxFinite <= float32 max);
 *     encode/decode when the code fits 16 bits;
 *   - intN / uintN.
 * Other rounding modes, codebooks (nf4) and unsigned minifloats (e8m0) use the reference.
 *
 * Arrays are streamed through a fixed buffer inside the kernel's memory in chunks of CHUNK elements
 * (copy in, cast in place, copy out), sized to stay in the L2 cache, so any length works and memory
 * use is constant. The two copies cost about as much as one plain copy of the array, twice the cast
 * on the cached chunk (chunk sizes from 16 to 256 KiB measure the same); a plain-JS cast on the
 * caller's array (e.g. bf16 rounding on a Uint32Array view) is slower than both, since V8 does not
 * vectorize it. For zero-copy fake quantization, allocate the array inside a kernel memory with
 * allocCastArray() and cast it in place (fakeQuant(f, x, opts, x)).
 */
import type { Format, FloatFormat } from '../formats/descriptor.js';
import { allocCodes, decodeOne, decodeRef, encodeOne, encodeRef, fakeQuantRef, resolveCast, type CastOptions, type CodeArray, type ResolvedCast } from '../formats/cast.js';
import { Rounding } from '../formats/rounding.js';
import { kernelInstance, compileKernel, newKernelInstance } from './wasm.js';
import * as castWasm from './wasm/cast.generated.js';

/** Elements per chunk: 128 KiB of float32 plus 64 KiB of codes (L2-resident). */
const CHUNK = 32768;

interface CastExports {
  heapBase(): number;
  setFloat(
    m: number, emin: number, bias: number, bits: number, subnormals: number, maxF: number,
    overV: number, infV: number, nanV: number, hasNegZero: number,
    overC: number, infC: number, nanC: number, overSign: number, spec: number, expBits: number,
  ): void;
  setInt(bits: number, signed: number): void;
  fakeQuantFloat(p: number, n: number): number;
  fakeQuantInt(p: number, n: number): number;
  encodeFloat8(p: number, n: number, out: number): number;
  encodeFloat16(p: number, n: number, out: number): number;
  encodeInt8(p: number, n: number, out: number): number;
  encodeInt16(p: number, n: number, out: number): number;
  decodeFloat8(p: number, n: number, out: number): number;
  decodeFloat16(p: number, n: number, out: number): number;
  decodeInt8(p: number, n: number, out: number): number;
  decodeInt16(p: number, n: number, out: number): number;
  divScale(p: number, n: number, s: number): void;
  mulScale(p: number, n: number, s: number): void;
}

interface Kernel {
  x: CastExports;
  memory: WebAssembly.Memory;
  /** byte offset of the float32 chunk buffer */
  values: number;
  /** byte offset of the code chunk buffer */
  codes: number;
}

const kernels = new WeakMap<object, Kernel>();

function kernel(): Kernel | null {
  const inst = kernelInstance('cast', castWasm, 4);
  if (!inst) return null;
  let k = kernels.get(inst);
  if (!k) {
    const x = inst.exports as unknown as CastExports;
    const values = (x.heapBase() + 63) & ~63;
    const codes = values + CHUNK * 4;
    const need = codes + CHUNK * 2;
    const have = inst.memory.buffer.byteLength;
    if (need > have) inst.memory.grow(Math.ceil((need - have) / 65536));
    k = { x, memory: inst.memory, values, codes };
    kernels.set(inst, k);
  }
  return k;
}

/** Compile the cast kernels asynchronously (needed once in browsers before the fast path is used). */
export function initCastKernels(): Promise<void> {
  return compileKernel('cast', castWasm);
}

const F32_MAX = 3.4028234663852886e38;
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function f32Bits(v: number): number {
  if (v !== v) return 0x7fc00000;
  f32[0] = v;
  return u32[0] | 0;
}

type Op = 'fakeQuant' | 'encode' | 'decode';

function floatCovered(f: FloatFormat, op: Op): boolean {
  if (!f.signed || !f.hasZero || f.manBits > 23 || f.emin < -126 || f.maxFinite > F32_MAX) return false;
  if (op === 'fakeQuant') return true;
  return f.bits <= 16 && f.emin - f.manBits >= -149;
}

/** Does the WebAssembly kernel compute this cast (given the options' rounding)? */
export function wasmCovers(f: Format, op: Op, rounding: Rounding = Rounding.NearestEven): boolean {
  if (rounding !== Rounding.NearestEven) return false;
  if (f.kind === 'int') return f.bits <= 16;
  if (f.kind === 'float') return floatCovered(f, op);
  return false;
}

const SPECIALS_CODE = { none: 0, ieee: 1, fn: 2, fnuz: 3 } as const;

/** Load the format's parameters into the kernel. The special codes come from the reference encoder. */
function setFormat(k: Kernel, f: Format, o: ResolvedCast): void {
  if (f.kind === 'int') {
    k.x.setInt(f.bits, f.signed ? 1 : 0);
    return;
  }
  if (f.kind !== 'float') throw new Error('unreachable');
  const big = f.maxFinite * 4; // beyond every rounding boundary: a finite overflow
  const overC = encodeOne(f, big, o, 0);
  const overSign = encodeOne(f, -big, o, 0) !== overC ? 1 : 0;
  const infC = encodeOne(f, Infinity, o, 0);
  const nanC = f.hasNaN ? f.nanCode : 0;
  k.x.setFloat(
    f.manBits, f.emin, f.bias, f.bits, f.subnormals ? 1 : 0, f.maxFinite,
    f32Bits(decodeOne(f, overC)), f32Bits(decodeOne(f, infC)), f32Bits(decodeOne(f, nanC)), f.hasNegZero ? 1 : 0,
    overC, infC, nanC, overSign, SPECIALS_CODE[f.specials], f.expBits,
  );
}

/** A NaN was seen: an error unless the format has NaN or nan-to-zero is on. */
function nanIsError(f: Format, o: ResolvedCast): boolean {
  return !f.hasNaN && !o.nanToZero;
}

function padTo16(n: number): number {
  return (n + 15) & ~15;
}

export function encode(f: Format, src: Float32Array, opts: CastOptions = {}, out?: CodeArray): CodeArray {
  const o = resolveCast(f, opts);
  const want = f.bits <= 8 ? Uint8Array : f.bits <= 16 ? Uint16Array : Uint32Array;
  if (!wasmCovers(f, 'encode', o.rounding) || (out && (!(out instanceof want) || out.length < src.length))) return encodeRef(f, src, opts, out);
  const k = kernel();
  if (!k) return encodeRef(f, src, opts, out);
  const dst = out ?? allocCodes(f, src.length);
  setFormat(k, f, o);
  const wide = f.bits > 8;
  const run = f.kind === 'int' ? (wide ? k.x.encodeInt16 : k.x.encodeInt8) : wide ? k.x.encodeFloat16 : k.x.encodeFloat8;
  const buf = k.memory.buffer;
  const mem = new Float32Array(buf);
  const codeView = wide ? new Uint16Array(buf, k.codes, CHUNK) : new Uint8Array(buf, k.codes, CHUNK);
  const at = k.values >> 2;
  for (let i = 0; i < src.length; i += CHUNK) {
    const m = Math.min(CHUNK, src.length - i);
    const mp = padTo16(m);
    mem.set(src.subarray(i, i + m), at);
    if (mp > m) mem.fill(0, at + m, at + mp);
    if (o.scale !== 1) k.x.divScale(k.values, mp, o.scale);
    if (run(k.values, mp, k.codes) && nanIsError(f, o)) nanError(f, opts);
    dst.set(codeView.subarray(0, m), i);
  }
  return dst;
}

export function decode(f: Format, codes: ArrayLike<number>, out?: Float32Array, scale = 1): Float32Array {
  const want = f.bits <= 8 ? Uint8Array : f.bits <= 16 ? Uint16Array : Uint32Array;
  if (!wasmCovers(f, 'decode') || !(codes instanceof want) || (out && out.length < codes.length)) return decodeRef(f, codes, out, scale);
  const k = kernel();
  if (!k) return decodeRef(f, codes, out, scale);
  const dst = out ?? new Float32Array(codes.length);
  setFormat(k, f, resolveCast(f));
  const wide = f.bits > 8;
  const run = f.kind === 'int' ? (wide ? k.x.decodeInt16 : k.x.decodeInt8) : wide ? k.x.decodeFloat16 : k.x.decodeFloat8;
  const buf = k.memory.buffer;
  const mem = new Float32Array(buf, k.values, CHUNK);
  const codeView = wide ? new Uint16Array(buf, k.codes, CHUNK) : new Uint8Array(buf, k.codes, CHUNK);
  const src = codes as Uint8Array | Uint16Array;
  for (let i = 0; i < src.length; i += CHUNK) {
    const m = Math.min(CHUNK, src.length - i);
    const mp = padTo16(m);
    codeView.set(src.subarray(i, i + m));
    if (mp > m) codeView.fill(0, m, mp);
    if (run(k.codes, mp, k.values)) return decodeRef(f, codes, out, scale); // throws: a code outside the format
    if (scale !== 1) k.x.mulScale(k.values, mp, scale);
    dst.set(mem.subarray(0, m), i);
  }
  return dst;
}

/** Kernel instances owning the memories of arrays from allocCastArray(). */
const arenas = new WeakMap<ArrayBuffer, Kernel>();

/**
 * A zero-filled Float32Array of n values inside a WebAssembly memory of its own (never grown, so the
 * view stays valid), which fakeQuant casts in place without copies. A plain Float32Array where
 * WebAssembly SIMD is unavailable. Memory is at most 4 GiB: n < 2^30 - 2^16.
 */
export function allocCastArray(n: number): Float32Array {
  const bytes = n * 4 + 65536 * 2;
  const inst = bytes <= 2 ** 32 ? newKernelInstance('cast', castWasm, Math.ceil(bytes / 65536)) : null;
  if (!inst) return new Float32Array(n);
  const x = inst.exports as unknown as CastExports;
  const values = (x.heapBase() + 63) & ~63;
  arenas.set(inst.memory.buffer, { x, memory: inst.memory, values, codes: values });
  return new Float32Array(inst.memory.buffer, values, n);
}

/** In-place fake quantization of an array inside a kernel memory; the last n % 16 values by the chunk path. */
function fakeQuantArena(k: Kernel, f: Format, o: ResolvedCast, x: Float32Array): boolean {
  const whole = x.length & ~15;
  setFormat(k, f, o);
  const p = x.byteOffset;
  if (o.scale !== 1) k.x.divScale(p, whole, o.scale);
  const nan = (f.kind === 'int' ? k.x.fakeQuantInt : k.x.fakeQuantFloat)(p, whole);
  if (nan && nanIsError(f, o)) return false;
  if (o.scale !== 1) k.x.mulScale(p, whole, o.scale);
  if (whole < x.length) {
    const k2 = kernel();
    const tail = x.subarray(whole);
    if (!k2) fakeQuantRef(f, tail, { rounding: 'nearest-even', saturate: o.saturate, nanToZero: o.nanToZero, scale: o.scale }, tail);
    else if (!fakeQuantChunked(k2, f, o, tail, tail)) return false;
  }
  return true;
}

/** Throw the reference's error for NaN input (our input may already be overwritten in place). */
function nanError(f: Format, opts: CastOptions): never {
  fakeQuantRef(f, new Float32Array([NaN]), opts);
  throw new Error('unreachable: the reference accepted NaN');
}

/** Chunked fake quantization through the kernel's buffer; false if a NaN was seen where it is an error. */
function fakeQuantChunked(k: Kernel, f: Format, o: ResolvedCast, src: Float32Array, dst: Float32Array): boolean {
  setFormat(k, f, o);
  const run = f.kind === 'int' ? k.x.fakeQuantInt : k.x.fakeQuantFloat;
  const mem = new Float32Array(k.memory.buffer);
  const at = k.values >> 2;
  for (let i = 0; i < src.length; i += CHUNK) {
    const m = Math.min(CHUNK, src.length - i);
    const mp = padTo16(m);
    mem.set(src.subarray(i, i + m), at);
    if (mp > m) mem.fill(0, at + m, at + mp);
    if (o.scale !== 1) k.x.divScale(k.values, mp, o.scale);
    if (run(k.values, mp) && nanIsError(f, o)) return false;
    if (o.scale !== 1) k.x.mulScale(k.values, mp, o.scale);
    dst.set(mem.subarray(at, at + m), i);
  }
  return true;
}

export function fakeQuant(f: Format, src: Float32Array, opts: CastOptions = {}, out?: Float32Array): Float32Array {
  const o = resolveCast(f, opts);
  if (!wasmCovers(f, 'fakeQuant', o.rounding) || (out && out.length < src.length)) return fakeQuantRef(f, src, opts, out);
  const arena = out && arenas.get(out.buffer as ArrayBuffer);
  if (arena && out) {
    // zero copy: (copy src into out within the same memory, then) cast out in place
    const dst = out.length === src.length ? out : out.subarray(0, src.length);
    if (src.buffer !== dst.buffer || src.byteOffset !== dst.byteOffset) dst.set(src);
    if (!fakeQuantArena(arena, f, o, dst)) nanError(f, opts);
    return out;
  }
  const k = kernel();
  if (!k) return fakeQuantRef(f, src, opts, out);
  const dst = out ?? new Float32Array(src.length);
  if (!fakeQuantChunked(k, f, o, src, dst)) nanError(f, opts);
  return dst;
}
