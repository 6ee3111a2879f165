/**
 * Seeded random-weight models of every architecture family lowbit runs, as GGUF with the metadata and
 * tensor layout llama.cpp's convert_hf_to_gguf writes for them: Llama 3 (rope_freqs factors, byte-level
 * BPE), Mistral (sentencepiece), Mixtral (llama + 3-D experts), Qwen 2 (q/k/v biases, tied output),
 * Qwen 3 (q/k norms, head size != dim/heads), Qwen3-MoE, Phi-3 (fused qkv and gate|up), Gemma 2
 * (softcaps, sliding window, post norms, tied), Gemma 3 (q/k norms, 5:1 sliding pattern, local RoPE base).
 *
 * Weights are N(0, (gain/sqrt(cols))^2) by a per-tensor seeded stream (gain 1.5 for the output so the
 * next-token distributions are peaked, as a trained model's are); norm gains 1 +- 0.2. Same seed -> same bytes.
 */
import { tokenizerFromVocab } from '../src/io/convert.js';
import { gguf, type GgufValue } from '../src/io/gguf.js';
import type { Vocab } from '../src/model/types.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

export const FAMILIES = ['llama3', 'mistral', 'mixtral', 'qwen2', 'qwen3', 'qwen3moe', 'phi3', 'gemma2', 'gemma3'] as const;
export type Family = (typeof FAMILIES)[number];

/** which vocabulary a family's real models use: byte-level BPE with this pre-tokenizer, or sentencepiece */
export const FAMILY_VOCAB: Readonly<Record<Family, string>> = Object.freeze({
  llama3: 'llama-bpe',
  mistral: 'spm',
  mixtral: 'spm',
  qwen2: 'qwen2',
  qwen3: 'qwen2',
  qwen3moe: 'qwen2',
  phi3: 'spm',
  gemma2: 'spm',
  gemma3: 'spm',
});

export interface FamilyTensor {
  name: string;
  /** ggml order, innermost first */
  ne: number[];
  type: GgmlTypeInfo;
  data: Uint8Array;
}

export interface FamilyModel {
  family: Family;
  arch: string;
  metadata: [string, GgufValue][];
  tensors: FamilyTensor[];
}

function streamSeed(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0 || 1;
}

/** Llama 3's RoPE frequency factors as convert_hf_to_gguf computes them from rope_scaling */
export function llama3RopeFactors(headDim: number, base: number, factor = 8, lowFreqFactor = 1, highFreqFactor = 4, oldContext = 8192): Float32Array {
  const out = new Float32Array(headDim / 2);
  const lowWavelen = oldContext / lowFreqFactor;
  const highWavelen = oldContext / highFreqFactor;
  for (let i = 0; i < headDim / 2; i++) {
    const freq = 1 / Math.pow(base, Math.fround((2 * i) / headDim));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = factor;
    else {
      const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

export function familyModel(family: Family, vocab: Vocab, seed = 1): FamilyModel {
  const f32 = ggmlTypeByName('F32')!;
  const moe = family === 'mixtral' || family === 'qwen3moe';
  const gemma = family === 'gemma2' || family === 'gemma3';
  const arch = family === 'llama3' || family === 'mistral' || family === 'mixtral' ? 'llama' : family;
  const dim = 64;
  const nHeads = 4;
  const nKv = 2;
  const headDim = family === 'qwen3' || family === 'qwen3moe' || family === 'gemma3' ? 32 : dim / nHeads;
  const hidden = 96;
  const expertHidden = 48;
  const nExperts = 4;
  const layers = family === 'gemma3' ? 6 : 2;
  const nVocab = vocab.tokens.length;
  const qDim = nHeads * headDim;
  const kvDim = nKv * headDim;
  const tensors: FamilyTensor[] = [];
  const add = (name: string, ne: number[], values: Float32Array) => tensors.push({ name, ne, type: f32, data: new Uint8Array(values.buffer) });
  const random = (name: string, ne: number[], gain = 1) => {
    const n = ne.reduce((a, b) => a * b, 1);
    const next = xorshift32(streamSeed(name, seed));
    const u = () => next() / 4294967296;
    const v = new Float32Array(n);
    const std = gain / Math.sqrt(ne[0]);
    for (let i = 0; i < n; i++) v[i] = std * (u() + u() + u() + u() - 2) * 1.7320508;
    add(name, ne, v);
  };
  const norm = (name: string, n: number) => {
    const next = xorshift32(streamSeed(name, seed));
    add(name, [n], Float32Array.from({ length: n }, () => 1 + 0.4 * (next() / 4294967296 - 0.5)));
  };
  random('token_embd.weight', [dim, nVocab], gemma ? 1 / 4 : 2); // gemma scales embeddings by sqrt(dim)
  norm('output_norm.weight', dim);
  const tied = family === 'qwen2' || gemma;
  if (!tied) random('output.weight', [dim, nVocab], 3);
  if (family === 'llama3') add('rope_freqs.weight', [headDim / 2], llama3RopeFactors(headDim, 500000));
  for (let l = 0; l < layers; l++) {
    const p = `blk.${l}.`;
    norm(`${p}attn_norm.weight`, dim);
    if (family === 'phi3') random(`${p}attn_qkv.weight`, [dim, qDim + 2 * kvDim], 2);
    else {
      random(`${p}attn_q.weight`, [dim, qDim], 2);
      random(`${p}attn_k.weight`, [dim, kvDim], 2);
      random(`${p}attn_v.weight`, [dim, kvDim]);
    }
    if (family === 'qwen2') {
      random(`${p}attn_q.bias`, [qDim], 1);
      random(`${p}attn_k.bias`, [kvDim], 1);
      random(`${p}attn_v.bias`, [kvDim], 1);
    }
    if (family === 'qwen3' || family === 'qwen3moe' || family === 'gemma3') {
      norm(`${p}attn_q_norm.weight`, headDim);
      norm(`${p}attn_k_norm.weight`, headDim);
    }
    random(`${p}attn_output.weight`, [qDim, dim]);
    if (gemma) norm(`${p}post_attention_norm.weight`, dim);
    norm(`${p}ffn_norm.weight`, dim);
    if (moe) {
      random(`${p}ffn_gate_inp.weight`, [dim, nExperts], 4);
      random(`${p}ffn_gate_exps.weight`, [dim, expertHidden, nExperts]);
      random(`${p}ffn_up_exps.weight`, [dim, expertHidden, nExperts]);
      random(`${p}ffn_down_exps.weight`, [expertHidden, dim, nExperts]);
    } else if (family === 'phi3') {
      random(`${p}ffn_up.weight`, [dim, 2 * hidden]);
      random(`${p}ffn_down.weight`, [hidden, dim]);
    } else {
      random(`${p}ffn_gate.weight`, [dim, hidden]);
      random(`${p}ffn_up.weight`, [dim, hidden]);
      random(`${p}ffn_down.weight`, [hidden, dim]);
    }
    if (gemma) norm(`${p}post_ffw_norm.weight`, dim);
  }
  // metadata, in the order and with the keys convert_hf_to_gguf writes
  const m: [string, GgufValue][] = [
    ['general.architecture', gguf.str(arch)],
    ['general.name', gguf.str('lowbit-random')],
    [`${arch}.block_count`, gguf.u32(layers)],
    [`${arch}.context_length`, gguf.u32(family === 'phi3' ? 4096 : 8192)],
    [`${arch}.embedding_length`, gguf.u32(dim)],
    [`${arch}.feed_forward_length`, gguf.u32(moe && arch === 'llama' ? expertHidden : hidden)],
    [`${arch}.attention.head_count`, gguf.u32(nHeads)],
    [`${arch}.attention.head_count_kv`, gguf.u32(nKv)],
    [`${arch}.rope.freq_base`, gguf.f32(family === 'llama3' ? 500000 : gemma ? 1000000 : 10000)],
    [`${arch}.attention.layer_norm_rms_epsilon`, gguf.f32(gemma ? 1e-6 : 1e-5)],
    ['general.file_type', gguf.u32(0)],
  ];
  if (arch === 'llama') m.push(['llama.vocab_size', gguf.u32(nVocab)], ['llama.rope.dimension_count', gguf.u32(headDim)]);
  if (headDim !== dim / nHeads || gemma) m.push([`${arch}.attention.key_length`, gguf.u32(headDim)], [`${arch}.attention.value_length`, gguf.u32(headDim)]);
  if (moe) m.push([`${arch}.expert_count`, gguf.u32(nExperts)], [`${arch}.expert_used_count`, gguf.u32(2)]);
  if (family === 'qwen3moe') m.push(['qwen3moe.expert_feed_forward_length', gguf.u32(expertHidden)]);
  if (family === 'phi3') m.push(['phi3.rope.scaling.original_context_length', gguf.u32(4096)], ['phi3.rope.dimension_count', gguf.u32(headDim)], ['phi3.attention.sliding_window', gguf.u32(0)]);
  if (family === 'gemma2') m.push(['gemma2.attn_logit_softcapping', gguf.f32(50)], ['gemma2.final_logit_softcapping', gguf.f32(30)], ['gemma2.attention.sliding_window', gguf.u32(8)]);
  if (family === 'gemma3') m.push(['gemma3.attention.sliding_window', gguf.u32(8)], ['gemma3.rope.freq_base_swa', gguf.f32(10000)]);
  m.push(...tokenizerFromVocab(gemma ? { ...vocab, addSpacePrefix: false } : vocab));
  return { family, arch, metadata: m, tensors };
}
