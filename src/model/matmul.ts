/**
 * The one matmul call site of the runtime, and the weight-format plumbing around it.
 *
 *   matmul(out, x, w, nTok, k, n):  out[t][j] = sum_i x[t][i] * w[j][i]
 *   x: nTok x k row-major activations, w: n x k row-major weights (a GGUF tensor with dims [k, n]),
 *   out: nTok x n.
 *
 * Weights stay in their stored GGML type. A linear layer over a block-quantized weight dequantizes a few
 * rows at a time into a scratch buffer (GgmlCodec.dequantize from src/quant/ggml/registry.ts) and runs the
 * same f32 matmul on them. F32 weights are used in place; F16/BF16 are converted per row block too.
 *
 * With the WebAssembly kernels (src/kernels/matmul.ts, the default where WebAssembly SIMD exists), the
 * weights are copied once into the kernel's memory and `linear` hands them over in their stored type;
 * the kernel dequantizes tiles on the fly, on as many threads as the engine was given.
 * `setMatmul` swaps the f32 kernel of the TypeScript path (and turns the WebAssembly path off).
 */
import { fail } from '../errors.js';
import { MatmulEngine, type KernelWeight } from '../kernels/matmul.js';
import { ggmlCodec, ggmlTypeTraits } from '../quant/ggml/registry.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../quant/ggml/types.js';

export type MatmulFn = (out: Float32Array, x: Float32Array, w: Float32Array, nTok: number, k: number, n: number) => void;

/** Plain TypeScript reference matmul (accumulates in float64, like a dot product in JS numbers). */
export const matmulRef: MatmulFn = (out, x, w, nTok, k, n) => {
  for (let t = 0; t < nTok; t++) {
    const xo = t * k;
    const oo = t * n;
    for (let j = 0; j < n; j++) {
      const wo = j * k;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let i = 0;
      for (; i + 3 < k; i += 4) {
        s0 += x[xo + i] * w[wo + i];
        s1 += x[xo + i + 1] * w[wo + i + 1];
        s2 += x[xo + i + 2] * w[wo + i + 2];
        s3 += x[xo + i + 3] * w[wo + i + 3];
      }
      for (; i < k; i++) s0 += x[xo + i] * w[wo + i];
      out[oo + j] = s0 + s1 + s2 + s3;
    }
  }
};

/** The default f32 matmul: the WebAssembly kernel where available, else matmulRef. */
export const matmulAuto: MatmulFn = (out, x, w, nTok, k, n) => {
  const e = MatmulEngine.get();
  if (e) e.matmulF32(out, x, w, nTok, k, n);
  else matmulRef(out, x, w, nTok, k, n);
};

let currentMatmul: MatmulFn = matmulAuto;

/** Is the WebAssembly path on (no other matmul set with setMatmul)? */
export function kernelsEnabled(): boolean {
  return currentMatmul === matmulAuto;
}

/**
 * Replace the f32 matmul kernel used by every linear layer (returns the previous one). Any kernel but
 * matmulAuto also routes weights held by the WebAssembly engine through the TypeScript path.
 */
export function setMatmul(fn: MatmulFn): MatmulFn {
  const prev = currentMatmul;
  currentMatmul = fn;
  return prev;
}

export function matmul(out: Float32Array, x: Float32Array, w: Float32Array, nTok: number, k: number, n: number): void {
  currentMatmul(out, x, w, nTok, k, n);
}

/** Dequantize `nRows` rows of `rowLength` elements of a stored tensor to f32 (the type-traits row: float conversion or block codec). */
export function dequantizeRows(type: GgmlTypeInfo, src: Uint8Array, rowLength: number, nRows: number, out: Float32Array): void {
  const n = rowLength * nRows;
  const row = ggmlTypeTraits(type);
  if (row?.float && row.toFloat) return row.toFloat(src.subarray(0, n * row.typeSize), n, out.subarray(0, n));
  const codec = ggmlCodec(type);
  if (!codec) fail(`no dequantizer for GGML type ${type.name} (its codec is not registered)`);
  codec.dequantize(src, n, out);
}

/** A weight matrix of a linear layer: `rows` outputs of `cols` inputs, in its stored type. */
export interface LinearWeight {
  readonly name: string;
  readonly type: GgmlTypeInfo;
  /** n: output features */
  readonly rows: number;
  /** k: input features */
  readonly cols: number;
  /** stored bytes, rows * rowBytes */
  readonly data: Uint8Array;
  /** f32 values when the weight is F32 (in place) or was dequantized once (fake-quant mode) */
  readonly f32?: Float32Array;
  /** the weight in the WebAssembly kernel's memory (F32 when dequantized once) */
  readonly kernel?: KernelWeight;
}

const F32_TYPE: GgmlTypeInfo = Object.freeze({ id: 0, name: 'F32', blockSize: 1, typeSize: 4 });

/**
 * A linear layer's weight. With an engine, the bytes (or, dequantized once, the f32 values) are copied
 * into its memory and `data` / `f32` are views of that copy; without one, or when its memory is full,
 * they stay where they are.
 */
export function makeLinearWeight(name: string, type: GgmlTypeInfo, rows: number, cols: number, data: Uint8Array, dequantizeOnce: boolean, engine?: MatmulEngine | null): LinearWeight {
  const rowBytes = ggmlRowBytes(type, cols);
  const bytes = rowBytes * rows;
  if (data.length !== bytes) fail(`${name}: ${data.length} bytes, but ${rows} x ${cols} ${type.name} needs ${bytes}`);
  let f32: Float32Array | undefined;
  if (type.name === 'F32' && data.byteOffset % 4 === 0) f32 = new Float32Array(data.buffer, data.byteOffset, rows * cols);
  else if (type.name === 'F32' || dequantizeOnce) {
    f32 = new Float32Array(rows * cols);
    dequantizeRows(type, data, cols, rows, f32);
  }
  if (engine) {
    const kernel =
      f32 && type.name !== 'F32'
        ? engine.storeWeight(F32_TYPE, rows, cols, cols * 4, new Uint8Array(f32.buffer, f32.byteOffset, rows * cols * 4))
        : engine.storeWeight(type, rows, cols, rowBytes, data);
    if (kernel && engine.shared) {
      // use the copy (its views stay valid) and let the original bytes go
      const stored = engine.weightBytes(kernel);
      const f32View = f32 && new Float32Array(stored.buffer, stored.byteOffset, rows * cols);
      return { name, type, rows, cols, data: f32 && type.name !== 'F32' ? data : stored, f32: f32View, kernel };
    }
    if (kernel) return { name, type, rows, cols, data, f32, kernel };
  }
  return { name, type, rows, cols, data, f32 };
}

/** Rows dequantized per step of an on-the-fly linear layer: about 64 KiB of f32 scratch. */
function rowsPerBlock(cols: number, rows: number): number {
  return Math.max(1, Math.min(rows, Math.floor(16384 / cols)));
}

const scratch = { w: new Float32Array(0), o: new Float32Array(0) };

/** out (nTok x w.rows) = x (nTok x w.cols) times w transposed. */
export function linear(out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number): void {
  const k = w.cols;
  const n = w.rows;
  if (w.kernel && currentMatmul === matmulAuto) {
    w.kernel.engine.matmul(out, x, w.kernel, nTok);
    return;
  }
  if (w.f32) {
    matmul(out, x, w.f32, nTok, k, n);
    return;
  }
  const rb = rowsPerBlock(k, n);
  const rowBytes = ggmlRowBytes(w.type, k);
  if (scratch.w.length < rb * k) scratch.w = new Float32Array(rb * k);
  if (scratch.o.length < rb * nTok) scratch.o = new Float32Array(rb * nTok);
  for (let r0 = 0; r0 < n; r0 += rb) {
    const nr = Math.min(rb, n - r0);
    const wb = scratch.w.subarray(0, nr * k);
    dequantizeRows(w.type, w.data.subarray(r0 * rowBytes, (r0 + nr) * rowBytes), k, nr, wb);
    const ob = scratch.o;
    matmul(ob, x, wb, nTok, k, nr);
    for (let t = 0; t < nTok; t++) for (let j = 0; j < nr; j++) out[t * n + r0 + j] = ob[t * nr + j];
  }
}
