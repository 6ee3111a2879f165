/**
 * Fast GGML block quantizers: the WebAssembly kernels of wasm/quant.ts behind the registered codecs
 * (quant/ggml/registry.ts). installWasmQuantizers() puts them into the type-traits table, after which
 * `ggmlCodec('Q4_K').quantize(...)` without an importance vector runs the kernel; with importance (the
 * imatrix paths) it runs the scalar reference, as does everything when WebAssembly SIMD is missing or
 * turned off (setWasmVariant('off'); the CLI maps LOWBIT_WASM=off to it).
 *
 * Covered (quantize_row_X_ref, byte-identical to the scalar references and so to llama.cpp; and
 * dequantize_row_X, float-identical to the references):
 *   Q8_0 Q4_0 Q4_1 Q5_0 Q5_1  Q2_K Q3_K Q4_K Q5_K Q6_K  MXFP4 NVFP4
 *
 * The input is streamed through a buffer inside the kernel's memory, CHUNK floats at a time (copy in,
 * quantize, copy out); rows do not matter to these quantizers, only whole blocks. A NaN or infinity
 * makes the kernel decline, and the reference then reports the bad element.
 */
import { ggmlFastQuantizer, registerGgmlFastDequantizer, registerGgmlFastQuantizer, type GgmlFastDequantize, type GgmlFastQuantize } from '../quant/ggml/registry.js';
import { rowErrorSums } from '../quant/ggml/row-error.js';
import { ggmlTypeByName, type GgmlCodec, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { installSchemeFastPaths } from './scheme-quant.js';
import { compileKernel, kernelInstance, type KernelInstance } from './wasm.js';
import * as quantWasm from './wasm/quant.generated.js';

/** floats per chunk (a multiple of every block size): 256 KiB in, at most 272 KiB out */
const CHUNK = 65536;

type KernelFn = (src: number, nBlocks: number, dst: number) => number;

/** GGML type name -> exported kernel */
export const WASM_QUANTIZERS: Readonly<Record<string, string>> = Object.freeze({
  Q8_0: 'quantizeQ8_0',
  Q4_0: 'quantizeQ4_0',
  Q4_1: 'quantizeQ4_1',
  Q5_0: 'quantizeQ5_0',
  Q5_1: 'quantizeQ5_1',
  Q2_K: 'quantizeQ2_K',
  Q3_K: 'quantizeQ3_K',
  Q4_K: 'quantizeQ4_K',
  Q5_K: 'quantizeQ5_K',
  Q6_K: 'quantizeQ6_K',
  MXFP4: 'quantizeMxfp4',
  NVFP4: 'quantizeNvfp4',
});

interface Kernel {
  inst: KernelInstance;
  /** byte offsets of the input chunk, the output chunk, its dequantized values and the row error sums */
  input: number;
  output: number;
  dequant: number;
  errors: number;
}

const kernels = new WeakMap<object, Kernel>();

/**
 * floor(Math.fround(Math.log2(x))) for float32 x > 0, the way fp4.ts computes MXFP4's shared exponent,
 * as a table for the kernel: entry ex + 149 (ex = -149..127, the exact floor of log2 x) holds the bits
 * of the smallest float32 in [2^ex, 2^(ex+1)) whose rounded log2 reaches ex + 1 (0xffffffff: none).
 */
function log2Table(): Uint32Array {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const floorLog2 = (bits: number): number => {
    u[0] = bits;
    return Math.floor(Math.fround(Math.log2(f[0])));
  };
  const t = new Uint32Array(280).fill(0xffffffff);
  for (let ex = -149; ex <= 127; ex++) {
    const lo = ex >= -126 ? (ex + 127) * 2 ** 23 : 2 ** (ex + 149);
    const hi = ex >= -127 ? (ex + 128) * 2 ** 23 : 2 ** (ex + 150); // first bits of the next binade
    if (floorLog2(lo) !== ex) throw new Error(`Math.log2(2^${ex}) is not ${ex}`);
    if (floorLog2(hi - 1) === ex) continue;
    let a = lo; // floorLog2(a) = ex
    let b = hi - 1; // floorLog2(b) = ex + 1
    while (b - a > 1) {
      const mid = a + Math.floor((b - a) / 2);
      if (floorLog2(mid) > ex) b = mid;
      else a = mid;
    }
    t[ex + 149] = b;
  }
  return t;
}

let log2Bits: Uint32Array | undefined;

function kernel(): Kernel | null {
  const inst = kernelInstance('quant', quantWasm, 2);
  return inst ? prepare(inst) : null;
}

function prepare(inst: KernelInstance): Kernel {
  let k = kernels.get(inst);
  if (k) return k;
  const x = inst.exports as { heapBase(): number; log2Table(): number };
  const input = (x.heapBase() + 63) & ~63;
  const output = input + CHUNK * 4;
  const dequant = output + CHUNK * 2;
  const errors = dequant + CHUNK * 4;
  const need = errors + CHUNK * 4; // 2 float64 per row of >= 8 values
  const have = inst.memory.buffer.byteLength;
  if (need > have) inst.memory.grow(Math.ceil((need - have) / 65536));
  log2Bits ??= log2Table();
  new Uint32Array(inst.memory.buffer, x.log2Table(), log2Bits.length).set(log2Bits);
  k = { inst, input, output, dequant, errors };
  kernels.set(inst, k);
  return k;
}

/** Compile the quantizer kernels asynchronously (needed once in browsers before the fast path is used). */
export function initQuantKernels(): Promise<void> {
  return compileKernel('quant', quantWasm);
}

function run(k: Kernel, t: GgmlTypeInfo, fn: KernelFn, src: Float32Array, n: number, out: Uint8Array): boolean {
  const buf = k.inst.memory.buffer;
  const mem = new Float32Array(buf, k.input, CHUNK);
  const bytes = new Uint8Array(buf, k.output, (CHUNK / t.blockSize) * t.typeSize);
  for (let i = 0, o = 0; i < n; i += CHUNK) {
    const m = Math.min(CHUNK, n - i);
    const nb = m / t.blockSize;
    const ob = nb * t.typeSize;
    mem.set(src.subarray(i, i + m));
    if (fn(k.input, nb, k.output) !== 0) return false; // NaN or infinity: the reference reports it
    out.set(bytes.subarray(0, ob), o);
    o += ob;
  }
  return true;
}

function fastQuantizer(t: GgmlTypeInfo, exportName: string): GgmlFastQuantize {
  return (src, nRows, rowLength, out) => {
    // anything unusual goes to the reference, which checks arguments and reports the problem
    if (!Number.isSafeInteger(nRows) || nRows < 0 || !Number.isSafeInteger(rowLength) || rowLength <= 0 || rowLength % t.blockSize !== 0) return false;
    const n = nRows * rowLength;
    if (src.length < n || out.length < (n / t.blockSize) * t.typeSize) return false;
    const k = kernel();
    if (!k) return false;
    return run(k, t, k.inst.exports[exportName] as KernelFn, src, n, out);
  };
}

type DequantFn = (src: number, nBlocks: number, dst: number) => void;

function fastDequantizer(t: GgmlTypeInfo, exportName: string): GgmlFastDequantize {
  return (src, n, out) => {
    if (!Number.isSafeInteger(n) || n < 0 || n % t.blockSize !== 0 || out.length < n || src.length < (n / t.blockSize) * t.typeSize) return false;
    const k = kernel();
    if (!k) return false;
    const fn = k.inst.exports[exportName] as DequantFn;
    const buf = k.inst.memory.buffer;
    const floats = new Float32Array(buf, k.input, CHUNK);
    const bytes = new Uint8Array(buf, k.output, (CHUNK / t.blockSize) * t.typeSize);
    for (let i = 0, o = 0; i < n; i += CHUNK) {
      const m = Math.min(CHUNK, n - i);
      const nb = m / t.blockSize;
      const ib = nb * t.typeSize;
      bytes.set(src.subarray(o, o + ib));
      fn(k.output, nb, k.input);
      out.set(floats.subarray(0, m), i);
      o += ib;
    }
    return true;
  };
}

type RowErrorsFn = (src: number, deq: number, nRows: number, rowLength: number, out: number) => void;

/** run() of whole rows (at most CHUNK values each) that also measures each row's error (see quantizeRowsMeasured) */
function runMeasured(k: Kernel, t: GgmlTypeInfo, fn: KernelFn, deq: DequantFn, src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, rowErr: Float64Array): boolean {
  const perChunk = Math.floor(CHUNK / rowLength);
  const buf = k.inst.memory.buffer;
  const mem = new Float32Array(buf, k.input, CHUNK);
  const bytes = new Uint8Array(buf, k.output, (CHUNK / t.blockSize) * t.typeSize);
  const errs = new Float64Array(buf, k.errors, 2 * perChunk);
  const fused = k.inst.exports[`rowErrors${t.name}`] as RowErrorsFn | undefined; // dequantizes as it goes
  const rowErrors = k.inst.exports.rowErrors as RowErrorsFn;
  for (let r = 0, o = 0; r < nRows; r += perChunk) {
    const nr = Math.min(perChunk, nRows - r);
    const m = nr * rowLength;
    const nb = m / t.blockSize;
    const ob = nb * t.typeSize;
    mem.set(src.subarray(r * rowLength, r * rowLength + m));
    if (fn(k.input, nb, k.output) !== 0) return false; // NaN or infinity: the reference reports it
    if (fused) fused(k.input, k.output, nr, rowLength, k.errors);
    else {
      deq(k.output, nb, k.dequant);
      rowErrors(k.input, k.dequant, nr, rowLength, k.errors);
    }
    out.set(bytes.subarray(0, ob), o);
    rowErr.set(errs.subarray(0, 2 * nr), 2 * r);
    o += ob;
  }
  return true;
}

type ErrorsFn = (deq: number, src: number, n: number) => void;

/**
 * The quantization errors ΔW = dequantize(quantize(src)) - src of nRows rows in a GGML type, without
 * importance, into out (nRows * rowLength floats): each chunk is quantized, decoded and subtracted in
 * the kernel's memory (wasm errorsInPlace), so the blocks never travel through JavaScript. The values
 * of codec.quantize, then codec.dequantize, then `out[i] -= src[i]` (a float32 subtraction) -- what
 * the sensitivity pass's candidates did before, checked equal in kernels-quant's tests. Returns false
 * (out not guaranteed written) when the type has no kernel here (or another fast quantizer replaced
 * it), the shapes are unusual, or the kernel declines a NaN or infinity: the caller then runs the codec,
 * which reports bad input.
 */
export function quantizationErrorsFast(t: GgmlTypeInfo, src: Float32Array, nRows: number, rowLength: number, out: Float32Array): boolean {
  const name = WASM_QUANTIZERS[t.name];
  if (name === undefined || ggmlFastQuantizer(t) !== registered.get(t.name)) return false;
  if (!Number.isSafeInteger(nRows) || nRows < 0 || !Number.isSafeInteger(rowLength) || rowLength <= 0 || rowLength % t.blockSize !== 0) return false;
  const n = nRows * rowLength;
  if (src.length < n || out.length < n) return false;
  const k = kernel();
  if (!k) return false;
  const sub = k.inst.exports.errorsInPlace as ErrorsFn | undefined;
  if (!sub) return false;
  const fn = k.inst.exports[name] as KernelFn;
  const deq = k.inst.exports[name.replace(/^quantize/, 'dequantize')] as DequantFn;
  const buf = k.inst.memory.buffer;
  const mem = new Float32Array(buf, k.input, CHUNK);
  const err = new Float32Array(buf, k.dequant, CHUNK);
  for (let i = 0; i < n; i += CHUNK) {
    const m = Math.min(CHUNK, n - i);
    const nb = m / t.blockSize;
    mem.set(src.subarray(i, i + m));
    if (fn(k.input, nb, k.output) !== 0) return false; // NaN or infinity: the codec reports it
    deq(k.output, nb, k.dequant);
    sub(k.dequant, k.input, m);
    out.set(err.subarray(0, m), i);
  }
  return true;
}

/** the wasm quantizers registered by this module, by type name (to tell whether they are still in use) */
const registered = new Map<string, GgmlFastQuantize>();

/**
 * codec.quantize (same bytes) that also measures what each row lost, for the quantize report:
 * rowErr[2r] = sum x^2, rowErr[2r + 1] = sum (x - dequantized)^2 in float64, summed in
 * rowErrorSums' order (src/quant/ggml/row-error.ts), so the values do not depend on the path taken
 * (kernel or reference) or on how rows are split. With the WebAssembly kernel the dequantization and
 * the sums run on each chunk while it is in the kernel's memory.
 */
export function quantizeRowsMeasured(codec: GgmlCodec, src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, rowErr: Float64Array, importance?: Float32Array): void {
  const t = codec.type;
  const name = WASM_QUANTIZERS[t.name];
  const fast = name !== undefined && importance === undefined && ggmlFastQuantizer(t) === registered.get(t.name);
  if (
    fast && Number.isSafeInteger(nRows) && nRows >= 0 && Number.isSafeInteger(rowLength) && rowLength > 0 && rowLength <= CHUNK && rowLength % t.blockSize === 0 && rowLength % 8 === 0 &&
    src.length >= nRows * rowLength && out.length >= ((nRows * rowLength) / t.blockSize) * t.typeSize && rowErr.length >= 2 * nRows
  ) {
    const k = kernel();
    if (k && runMeasured(k, t, k.inst.exports[name] as KernelFn, k.inst.exports[name.replace(/^quantize/, 'dequantize')] as DequantFn, src, nRows, rowLength, out, rowErr)) return;
  }
  codec.quantize!(src, nRows, rowLength, out, importance); // reports bad input
  measureRows(codec, src, nRows, rowLength, out, rowErr);
}

/** rowErr of quantizeRowsMeasured for rows already quantized into bytes (dequantized a chunk at a time) */
export function measureRows(codec: GgmlCodec, src: Float32Array, nRows: number, rowLength: number, bytes: Uint8Array, rowErr: Float64Array): void {
  const t = codec.type;
  const rowBytes = (rowLength / t.blockSize) * t.typeSize;
  const perChunk = Math.max(1, Math.floor(CHUNK / rowLength));
  const y = new Float32Array(Math.min(nRows, perChunk) * rowLength);
  for (let r = 0; r < nRows; r += perChunk) {
    const nr = Math.min(perChunk, nRows - r);
    const yr = y.subarray(0, nr * rowLength);
    codec.dequantize(bytes.subarray(r * rowBytes, (r + nr) * rowBytes), nr * rowLength, yr);
    rowErrorSums(src.subarray(r * rowLength, (r + nr) * rowLength), yr, nr, rowLength, rowErr.subarray(2 * r, 2 * (r + nr)));
  }
}

/** The WebAssembly dequantizer of a covered type, or undefined. */
export function wasmDequantizer(typeName: string): GgmlFastDequantize | undefined {
  const t = ggmlTypeByName(typeName);
  const name = t ? WASM_QUANTIZERS[t.name] : undefined;
  return t && name ? fastDequantizer(t, name.replace(/^quantize/, 'dequantize')) : undefined;
}

/** The WebAssembly quantizer of a covered type (module-wide instance), or undefined. */
export function wasmQuantizer(typeName: string): GgmlFastQuantize | undefined {
  const t = ggmlTypeByName(typeName);
  const name = t ? WASM_QUANTIZERS[t.name] : undefined;
  return t && name ? fastQuantizer(t, name) : undefined;
}

/**
 * Install the WebAssembly quantizers and dequantizers into the rows of the GGML type-traits table
 * (quant/ggml/registry.ts), and the MX / NVFP4 fast paths into the scheme registry
 * (kernels/scheme-quant.ts installSchemeFastPaths), once; the entry points call it (the CLI, quantize(),
 * the Lab's worker, the library's index). Nothing is installed by importing this module.
 */
export function installWasmQuantizers(): void {
  installSchemeFastPaths();
  if (registered.size) return;
  for (const name of Object.keys(WASM_QUANTIZERS)) {
    const q = wasmQuantizer(name)!;
    registered.set(name, q);
    registerGgmlFastQuantizer(name, q);
    registerGgmlFastDequantizer(name, wasmDequantizer(name));
  }
}
