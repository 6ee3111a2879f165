/**
 * llama.cpp's CPU backend does not multiply a quantized weight by float activations: it first converts
 * each activation row to the weight type's `vec_dot_type` (ggml-cpu.c type traits) and takes an
 * integer or half-precision dot product. That rounding of the activations is part of what a user of
 * llama.cpp measures (for Q8_0 weights on stories260K it doubles the KL divergence), so the runtime can
 * emulate it: `activations: 'ggml'` rounds every linear layer's input through the same type first.
 *
 *   F32 -> F32 (unchanged)      F16 -> F16      BF16 -> BF16
 *   Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4, NVFP4, Q1_0, Q2_0 -> Q8_0      Q4_1, Q5_1, Q8_1 -> Q8_1
 *   Q2_K..Q6_K, IQ1..IQ4_XS, TQ1_0, TQ2_0 -> Q8_K
 *
 * Rows whose length is not a multiple of the activation block stay f32 (llama.cpp could not run them).
 */
import { bf16ToF32, f16Table, f32ToBf16, f32ToF16 } from '../formats/half.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName, ggmlVecDotType, type GgmlTypeInfo } from '../quant/ggml/types.js';

/** The type llama.cpp's CPU backend converts activations to before a dot product with `weight` (the type table's vec_dot_type). */
export { ggmlVecDotType };

const scratch = { bytes: new Uint8Array(0) };

/**
 * Round nTok rows of k activations the way llama.cpp does before multiplying by a `weight`-typed
 * matrix; writes into `out` (may not alias x). Returns false (out untouched) when nothing changes.
 */
export function ggmlRoundActivations(weight: GgmlTypeInfo, x: Float32Array, nTok: number, k: number, out: Float32Array): boolean {
  const vt = ggmlVecDotType(weight);
  const n = nTok * k;
  if (vt === 'F32') return false;
  if (vt === 'F16') {
    for (let i = 0; i < n; i++) out[i] = f16Table[f32ToF16(x[i])];
    return true;
  }
  if (vt === 'BF16') {
    for (let i = 0; i < n; i++) out[i] = bf16ToF32(f32ToBf16(x[i]));
    return true;
  }
  const t = ggmlTypeByName(vt)!;
  if (k % t.blockSize !== 0) return false;
  const codec = ggmlCodec(t);
  if (!codec?.quantize) return false;
  const rowBytes = ggmlRowBytes(t, k);
  if (scratch.bytes.length < rowBytes * nTok) scratch.bytes = new Uint8Array(rowBytes * nTok);
  const b = scratch.bytes.subarray(0, rowBytes * nTok);
  codec.quantize(x.subarray(0, n), nTok, k, b);
  codec.dequantize(b, n, out.subarray(0, n));
  return true;
}
