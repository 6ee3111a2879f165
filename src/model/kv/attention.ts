/**
 * Attention over a quantized cache as llama.cpp's CPU backend computes it with flash attention
 * (ggml-cpu ops.cpp, ggml_compute_forward_flash_attn_ext_f16_one_chunk), the reference the packed
 * cache is measured against. For each query row and head, over positions 0..p in order, in f32:
 *
 *   s = (q' . k) * scale                  q' = q rounded to the key type's vec_dot type (by the caller)
 *   s > M:  ms = exp(M - s), M = s, acc *= ms, vs = 1      else: vs = exp(s - M)
 *   acc += v * vs,  S = S * ms + vs;       out = acc / S
 *
 * With an F16 value cache llama.cpp keeps `acc` in f16 (ggml_vec_scale_f16 / ggml_vec_mad_f16: each
 * update computed in f32, then rounded to f16); any other value type accumulates in f32.
 */
import { f16Table, f32ToF16 } from '../../formats/half.js';
import type { AttentionShape } from './storage.js';

const fr = Math.fround;

/**
 * Causal attention of nTok query rows at positions pos0.. against keys/values of positions [0, pos0 + nTok)
 * (kvDim per position). `acc` must hold headDim values.
 */
export function attentionGgmlRef(q: Float32Array, keys: Float32Array, values: Float32Array, nTok: number, pos0: number, shape: AttentionShape, out: Float32Array, accF16: boolean): void {
  const { nHeads, nKvHeads, headDim, scale } = shape;
  const kvDim = nKvHeads * headDim;
  const qDim = nHeads * headDim;
  const group = nHeads / nKvHeads;
  const acc = new Float32Array(headDim);
  const h16 = (x: number) => f16Table[f32ToF16(x)];
  for (let t = 0; t < nTok; t++) {
    const p = pos0 + t;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qDim + h * headDim;
      const ko = Math.floor(h / group) * headDim;
      let S = 0;
      let M = -Infinity;
      acc.fill(0);
      for (let j = 0; j <= p; j++) {
        const kp = j * kvDim + ko;
        let dot = 0;
        for (let i = 0; i < headDim; i++) dot += q[qo + i] * keys[kp + i];
        const s = fr(fr(dot) * scale);
        let ms = 1;
        let vs = 1;
        if (s > M) {
          ms = M === -Infinity ? 0 : fr(Math.exp(M - s));
          M = s;
          if (accF16) for (let i = 0; i < headDim; i++) acc[i] = h16(acc[i] * ms);
          else for (let i = 0; i < headDim; i++) acc[i] = fr(acc[i] * ms);
        } else vs = fr(Math.exp(s - M));
        const vp = j * kvDim + ko;
        if (accF16) for (let i = 0; i < headDim; i++) acc[i] = h16(acc[i] + values[vp + i] * vs);
        else for (let i = 0; i < headDim; i++) acc[i] = fr(acc[i] + fr(values[vp + i] * vs));
        S = fr(fr(S * ms) + vs);
      }
      const inv = S === 0 ? 0 : fr(1 / S);
      for (let i = 0; i < headDim; i++) out[qo + i] = fr(acc[i] * inv);
    }
  }
}
