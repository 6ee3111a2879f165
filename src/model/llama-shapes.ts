/** Tensor names and shapes of a LLaMA model in GGUF naming (shared by the trainer and the writers). */
import type { LlamaConfig } from './types.js';

/** The tensor names and ggml shapes of a llama with config c, in the order lowbit writes them. */
export function llamaTensorShapes(c: LlamaConfig, tiedOutput: boolean): { name: string; ne: number[] }[] {
  const q = c.nHeads * c.headDim;
  const kv = c.nKvHeads * c.headDim;
  const t: { name: string; ne: number[] }[] = [{ name: 'token_embd.weight', ne: [c.dim, c.vocabSize] }];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    t.push(
      { name: `${p}attn_norm.weight`, ne: [c.dim] },
      { name: `${p}attn_q.weight`, ne: [c.dim, q] },
      { name: `${p}attn_k.weight`, ne: [c.dim, kv] },
      { name: `${p}attn_v.weight`, ne: [c.dim, kv] },
      { name: `${p}attn_output.weight`, ne: [q, c.dim] },
      { name: `${p}ffn_norm.weight`, ne: [c.dim] },
      { name: `${p}ffn_gate.weight`, ne: [c.dim, c.hiddenDim] },
      { name: `${p}ffn_down.weight`, ne: [c.hiddenDim, c.dim] },
      { name: `${p}ffn_up.weight`, ne: [c.dim, c.hiddenDim] },
    );
  }
  t.push({ name: 'output_norm.weight', ne: [c.dim] });
  if (!tiedOutput) t.push({ name: 'output.weight', ne: [c.dim, c.vocabSize] });
  return t;
}
