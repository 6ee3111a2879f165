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
 */
import { llmInt8Matmul, quantizeActivationsPerToken } from '../algos/awq.js';
import { dequantizeRows, linear, type LinearWeight } from './matmul.js';

export type LinearFn = (out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number) => void;

/** Per-token dynamic symmetric intN quantization of every linear layer's input. */
export function actQuantLinear(bits = 8): LinearFn {
  let scratch = new Float32Array(0);
  return (out, x, w, nTok) => {
    const n = nTok * w.cols;
    if (scratch.length < n) scratch = new Float32Array(n);
    const xq = scratch.subarray(0, n);
    xq.set(x.subarray(0, n));
    quantizeActivationsPerToken(xq, nTok, w.cols, bits);
    linear(out, xq, w, nTok);
  };
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
