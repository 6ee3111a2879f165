/**
 * Sensitivity costs of quantizing one weight matrix W (rows = outputs, cols = inputs, row-major).
 *
 * The layer's output error on calibration inputs X (nTok × cols) is ΔY = X ΔWᵀ, so
 *
 *     ||X ΔWᵀ||²_F = Σ_r δ_r H δ_rᵀ = tr(ΔW H ΔWᵀ),   H = XᵀX,   δ_r = row r of ΔW,
 *
 * the quantity GPTQ minimizes and HAWQ-V2 uses as a sensitivity (here exact, with the real ΔW of the
 * candidate type, not a Hessian-trace proxy). `diagonalCost` keeps only diag(H) (what an importance
 * matrix holds): Σ_r Σ_j H_jj δ_rj², the estimate llama.cpp's imatrix-weighted quantizers minimize.
 */
import { fail } from '../errors.js';
import { quantizationErrorsFast } from '../kernels/ggml-quant.js';
import { gemmABt } from '../kernels/gptq.js';
import { ggmlCodec, ggmlRowBytes, ggmlTypeByName } from '../quant/ggml/index.js';

/** tr(ΔW H ΔWᵀ) for ΔW (rows × cols) and a symmetric H (cols × cols). Rows are processed in panels. */
export function hessianCost(delta: Float32Array, rows: number, cols: number, h: Float32Array): number {
  if (delta.length < rows * cols || h.length < cols * cols) fail(`hessianCost: shapes do not match (${rows}×${cols}, H ${h.length})`);
  const panel = Math.max(1, Math.min(rows, Math.floor((1 << 22) / cols)));
  const dh = new Float32Array(panel * cols);
  let total = 0;
  for (let r0 = 0; r0 < rows; r0 += panel) {
    const n = Math.min(panel, rows - r0);
    const d = delta.subarray(r0 * cols, (r0 + n) * cols);
    gemmABt(dh, d, h, n, cols, cols); // (ΔW H)[r, j] = Σ_i δ_ri H_ji, H symmetric
    let s = 0;
    for (let i = 0; i < n * cols; i++) s += d[i] * dh[i];
    total += s;
  }
  return total;
}

/** Σ_r Σ_j hDiag_j δ_rj² (the diagonal of H only). */
export function diagonalCost(delta: Float32Array, rows: number, cols: number, hDiag: Float32Array): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const o = r * cols;
    for (let j = 0; j < cols; j++) s += hDiag[j] * delta[o + j] * delta[o + j];
    total += s;
  }
  return total;
}

/** W quantized to a GGML type and back (its bytes and dequantized values); `importance` as llama-quantize's imatrix. */
export function ggmlRoundTrip(type: string, w: Float32Array, rows: number, cols: number, importance?: Float32Array): { values: Float32Array; bytes: number } {
  const t = ggmlTypeByName(type);
  const codec = t && ggmlCodec(t);
  if (!t || !codec?.quantize) fail(`unknown or not quantizable GGML type '${type}'`);
  const rowBytes = ggmlRowBytes(t, cols);
  const packed = new Uint8Array(rows * rowBytes);
  codec.quantize(w, rows, cols, packed, codec.usesImportance ? importance : undefined);
  const values = new Float32Array(rows * cols);
  codec.dequantize(packed, rows * cols, values);
  return { values, bytes: packed.length };
}

/** W quantized to a GGML type and back, minus W. */
export function ggmlQuantizationError(type: string, w: Float32Array, rows: number, cols: number, importance?: Float32Array): { delta: Float32Array; bytes: number } {
  const t = ggmlTypeByName(type);
  const codec = t && ggmlCodec(t);
  if (t && codec?.quantize && !(codec.usesImportance && importance)) {
    // the kernel's quantize, decode and subtract in its own memory (the same values as below)
    const delta = new Float32Array(rows * cols);
    if (quantizationErrorsFast(t, w, rows, cols, delta)) return { delta, bytes: rows * ggmlRowBytes(t, cols) };
  }
  const { values: delta, bytes } = ggmlRoundTrip(type, w, rows, cols, importance);
  for (let i = 0; i < delta.length; i++) delta[i] -= w[i];
  return { delta, bytes };
}

/** The blocks `packed` of W (rows x cols in a GGML type, quantized elsewhere, e.g. by a thread pool) decoded, minus W (into `out` when given). */
export function ggmlDequantizedError(type: string, packed: Uint8Array, w: Float32Array, rows: number, cols: number, out?: Float32Array): Float32Array {
  const t = ggmlTypeByName(type);
  const codec = t && ggmlCodec(t);
  if (!t || !codec) fail(`unknown GGML type '${type}'`);
  const delta = out ?? new Float32Array(rows * cols);
  codec.dequantize(packed, rows * cols, delta);
  for (let i = 0; i < delta.length; i++) delta[i] -= w[i];
  return delta;
}
