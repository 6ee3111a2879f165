/**
 * Activation quantization as runtime modes: linear layers for `Llama.hooks.linear`.
 *
 *   W8A8 (SmoothQuant's runtime): every linear input is quantized per token (row) to symmetric intN
 *     with a dynamic absmax scale, then multiplied with the stored weights. The weights' int8 (e.g. the
 *     int8_ch scheme) and the smoothing scales (folded into the norms by `lowbit quantize --smooth`)
 *     come from the file.
 *   LLM.int8() (Dettmers et al. 2022): input features with |x| > threshold in any token of the batch go
 *     through a 16-bit product; the rest through int8 x int8 with per-token and per-output-channel
 *     absmax scales (vector-wise quantization), as algos/awq.ts llmInt8Matmul computes.
 *   FlexQ (Zhang et al. 2025): INT6 weights everywhere, activations INT6 per token except the linears
 *     a layer-wise sensitivity analysis marks, whose inputs stay INT8 (W6A6 / W6A8): `keep8`.
 *   ZeroQuant-FP (Wu et al. 2023): FP8 (E4M3) activations per token, scale absmax / 448 (the largest
 *     finite E4M3), with FP4 weights whose scales are powers of two (the fp4 scheme with e8m0 scales).
 */
import { llmInt8Matmul, quantizeActivationsPerToken } from '../algos/awq.js';
import { dequantizeRows, linear, makeLinearWeight, type LinearWeight } from './matmul.js';
import { fwht } from '../algos/hadamard.js';
import { dequantizeScheme, quantizeScheme } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';
import { ggmlTypeByName } from '../quant/ggml/types.js';

const F32 = ggmlTypeByName('F32')!;
import { fakeQuantRef } from '../formats/cast.js';
import type { Format } from '../formats/descriptor.js';

export type LinearFn = (out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number) => void;

/** a linear whose input is quantized in place (a copy of x) by `q` before the product */
function quantizedInput(q: (xq: Float32Array, nTok: number, w: LinearWeight) => void): LinearFn {
  let scratch = new Float32Array(0);
  return (out, x, w, nTok) => {
    const n = nTok * w.cols;
    if (scratch.length < n) scratch = new Float32Array(n);
    const xq = scratch.subarray(0, n);
    xq.set(x.subarray(0, n));
    q(xq, nTok, w);
    linear(out, xq, w, nTok);
  };
}

/**
 * Per-token dynamic symmetric intN quantization of every linear layer's input; with `keep8`, the
 * inputs of the linears it names stay int8 (FlexQ's W6A6 with selective A8).
 */
export function actQuantLinear(bits = 8, keep8?: (weightName: string) => boolean): LinearFn {
  return quantizedInput((xq, nTok, w) => quantizeActivationsPerToken(xq, nTok, w.cols, keep8?.(w.name) ? 8 : bits));
}

/** Per-token dynamic quantization of every linear input to a float format (scale = absmax / max finite). */
export function actQuantFloatLinear(format: Format): LinearFn {
  return quantizedInput((xq, nTok, w) => quantizeActivationsFloat(xq, nTok, w.cols, format));
}

/** x (nTok x k) in place: each token's row cast to `format` with scale absmax / max finite */
export function quantizeActivationsFloat(x: Float32Array, nTok: number, k: number, format: Format): void {
  for (let t = 0; t < nTok; t++) {
    const row = x.subarray(t * k, (t + 1) * k);
    let a = 0;
    for (let j = 0; j < k; j++) a = Math.max(a, Math.abs(row[j]));
    if (a > 0) fakeQuantRef(format, row, { scale: a / format.maxFinite }, row);
  }
}

/** LLM.int8() mixed-precision decomposition with the given outlier threshold. */
export function llmInt8Linear(threshold = 6): LinearFn {
  const f32 = new Map<LinearWeight, Float32Array>();
  return (out, x, w, nTok) => {
    let wf = w.f32 ?? f32.get(w);
    if (!wf) {
      wf = new Float32Array(w.rows * w.cols);
      dequantizeRows(w.type, w.data, w.cols, w.rows, wf);
      f32.set(w, wf);
    }
    out.set(llmInt8Matmul(x, nTok, w.cols, wf, w.rows, threshold));
  };
}

/**
 * Per-token block quantization of every linear input with a registered block scheme along the input
 * features (MXFP8 / MXFP4: 32 values per E8M0 scale; NVFP4: 16 per E4M3 scale and a per-row f32 scale):
 * the input rows are quantized and dequantized with the scheme's reference codec. Inputs whose length the
 * block does not divide stay f32.
 */
export function actQuantSchemeLinear(scheme: QuantScheme): LinearFn {
  return quantizedInput((xq, nTok, w) => {
    if (scheme.blockSize > 0 && w.cols % scheme.blockSize !== 0) return;
    const packed = quantizeScheme(scheme, xq, nTok, w.cols);
    dequantizeScheme(scheme, packed, nTok, w.cols, xq);
  });
}

/** The largest power of two (at most 2^16) dividing k: the Hadamard block of an online rotation. */
export function hadamardBlock(k: number): number {
  let b = 1;
  while (b < 65536 && k % (2 * b) === 0) b *= 2;
  return b;
}

/** Rows of x (n of k) times the block-diagonal orthonormal Walsh-Hadamard matrix of block `b`, in place. */
function rotateRowsBlockwise(x: Float32Array, n: number, k: number, b: number): void {
  const norm = 1 / Math.sqrt(b);
  for (let o = 0; o < n * k; o += b) {
    fwht(x, o, b);
    for (let i = 0; i < b; i++) x[o + i] = Math.fround(x[o + i] * norm);
  }
}

/**
 * QuaRot's online rotations (--rotate-act): the inputs of the linears `rotate` names (the FFN
 * down-projection and the attention output) are multiplied by an orthonormal Hadamard H (block-diagonal,
 * the largest power-of-two block dividing the width) before `inner` quantizes them, and the weight by the
 * same H (W' = W H, dequantized to f32 and rotated once), so x W^T = (x H)(W H)^T is unchanged up to the
 * activation rounding, whose outliers H spreads over the block.
 */
export function rotatedInputLinear(inner: LinearFn, rotate: (weightName: string) => boolean): LinearFn {
  const rotated = new Map<LinearWeight, LinearWeight>();
  let scratch = new Float32Array(0);
  return (out, x, w, nTok) => {
    if (!rotate(w.name)) return inner(out, x, w, nTok);
    const b = hadamardBlock(w.cols);
    let wr = rotated.get(w);
    if (!wr) {
      const f = new Float32Array(w.rows * w.cols);
      dequantizeRows(w.type, w.data, w.cols, w.rows, f);
      rotateRowsBlockwise(f, w.rows, w.cols, b);
      wr = makeLinearWeight(w.name, F32, w.rows, w.cols, new Uint8Array(f.buffer), false, null);
      rotated.set(w, wr);
    }
    const n = nTok * w.cols;
    if (scratch.length < n) scratch = new Float32Array(n);
    const xr = scratch.subarray(0, n);
    xr.set(x.subarray(0, n));
    rotateRowsBlockwise(xr, nTok, w.cols, b);
    inner(out, xr, wr, nTok);
  };
}

/** --rotate-act's linears: the FFN down-projection and the attention output (QuaRot's online Hadamards) */
export function isOnlineRotated(weightName: string): boolean {
  return /(^|\.)(ffn_down|attn_output)(_exps)?\.weight$/.test(weightName);
}
