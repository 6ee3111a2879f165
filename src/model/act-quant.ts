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
import { dequantizeRows, linear, type LinearWeight } from './matmul.js';
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
