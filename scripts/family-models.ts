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
import { readFileSync } from 'node:fs';
import { tokenizerFromVocab } from '../src/io/convert.js';
import { parseSentencepieceModel } from '../src/io/vocab.js';
import { trainByteBpe } from '../src/model/bpe-train.js';
import { llama3RopeFreqs } from '../src/io/hf-families.js';
import { toHfRows } from '../src/io/hf-llama.js';
import { gguf, type GgufValue } from '../src/io/gguf.js';
import type { Vocab } from '../src/model/types.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

/** Llama 3.1's rope_scaling, with its rope_theta */
const LLAMA3_ROPE = { rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };

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

const vocabCache = new Map<string, Vocab>();

/**
 * The vocabulary a family's test models use: tok512.model (sentencepiece), or a byte-level BPE vocabulary
 * learned on the shipped texts with the family's pre-tokenizer (500 merges). `data` is the data/ folder.
 */
export function familyVocab(family: Family, data: URL): Vocab {
  const k = FAMILY_VOCAB[family];
  let v = vocabCache.get(k);
  if (!v) {
    const read = (f: string) => readFileSync(new URL(f, data));
    v =
      k === 'spm'
        ? parseSentencepieceModel(new Uint8Array(read('tok512.model')))
        : trainByteBpe(read('tinystories-valid-head.txt').toString('utf8').slice(0, 60_000) + read('wikitext-2-test.raw').toString('utf8').slice(0, 30_000), { pre: k, merges: 500 });
    vocabCache.set(k, v);
  }
  return v;
}

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
  // norm gains 1 +- 0.2; the pre-attention / pre-FFN norms have 4 outlier channels (gain 8), as trained
  // models do (the activation outliers AWQ and SmoothQuant are about)
  const norm = (name: string, n: number) => {
    const next = xorshift32(streamSeed(name, seed));
    const g = Float32Array.from({ length: n }, () => 1 + 0.4 * (next() / 4294967296 - 0.5));
    if (/(attn_norm|ffn_norm)\.weight$/.test(name)) for (let i = 0; i < 4; i++) g[(i * 17 + 3) % n] = 8;
    add(name, [n], g);
  };
  random('token_embd.weight', [dim, nVocab], gemma ? 1 / 4 : 2); // gemma scales embeddings by sqrt(dim)
  norm('output_norm.weight', dim);
  const tied = family === 'qwen2' || gemma;
  if (!tied) random('output.weight', [dim, nVocab], 3);
  if (family === 'llama3') add('rope_freqs.weight', [headDim / 2], llama3RopeFreqs(headDim, LLAMA3_ROPE));
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
    [`${arch}.attention.layer_norm_rms_epsilon`, gguf.f32(gemma ? 1e-6 : 1e-5)],
    ['general.file_type', gguf.u32(0)],
  ];
  // convert_hf_to_gguf's Gemma2Model writes no RoPE base (llama.cpp's default 10000 applies)
  if (family !== 'gemma2') m.push([`${arch}.rope.freq_base`, gguf.f32(family === 'llama3' ? 500000 : gemma ? 1000000 : 10000)]);
  if (arch === 'llama') m.push(['llama.vocab_size', gguf.u32(nVocab)], ['llama.rope.dimension_count', gguf.u32(headDim)]);
  if (headDim !== dim / nHeads || gemma) m.push([`${arch}.attention.key_length`, gguf.u32(headDim)], [`${arch}.attention.value_length`, gguf.u32(headDim)]);
  if (moe) m.push([`${arch}.expert_count`, gguf.u32(nExperts)], [`${arch}.expert_used_count`, gguf.u32(2)]);
  if (family === 'qwen3moe') m.push(['qwen3moe.expert_feed_forward_length', gguf.u32(expertHidden)]);
  if (family === 'phi3') m.push(['phi3.rope.scaling.original_context_length', gguf.u32(4096)], ['phi3.rope.dimension_count', gguf.u32(headDim)], ['phi3.attention.sliding_window', gguf.u32(2047)]);
  if (family === 'gemma2') m.push(['gemma2.attn_logit_softcapping', gguf.f32(50)], ['gemma2.final_logit_softcapping', gguf.f32(30)], ['gemma2.attention.sliding_window', gguf.u32(8)]);
  if (family === 'gemma3') m.push(['gemma3.attention.sliding_window', gguf.u32(8)], ['gemma3.rope.freq_base_swa', gguf.f32(10000)]);
  m.push(...tokenizerFromVocab(gemma ? { ...vocab, addSpacePrefix: false } : vocab));
  return { family, arch, metadata: m, tensors };
}

// ---- the same model as a Hugging Face folder -------------------------------------------------------

/** GGUF name inside a layer -> HF name inside model.layers.N., per family (the HF side of the layouts) */
function hfLayerName(family: Family, gg: string): string {
  const gemma = family === 'gemma2' || family === 'gemma3';
  const table: Record<string, string> = {
    'attn_norm.weight': 'input_layernorm.weight',
    'attn_q.weight': 'self_attn.q_proj.weight',
    'attn_k.weight': 'self_attn.k_proj.weight',
    'attn_v.weight': 'self_attn.v_proj.weight',
    'attn_output.weight': 'self_attn.o_proj.weight',
    'attn_q.bias': 'self_attn.q_proj.bias',
    'attn_k.bias': 'self_attn.k_proj.bias',
    'attn_v.bias': 'self_attn.v_proj.bias',
    'attn_q_norm.weight': 'self_attn.q_norm.weight',
    'attn_k_norm.weight': 'self_attn.k_norm.weight',
    'attn_qkv.weight': 'self_attn.qkv_proj.weight',
    'ffn_norm.weight': gemma ? 'pre_feedforward_layernorm.weight' : 'post_attention_layernorm.weight',
    'post_attention_norm.weight': 'post_attention_layernorm.weight',
    'post_ffw_norm.weight': 'post_feedforward_layernorm.weight',
    'ffn_gate.weight': 'mlp.gate_proj.weight',
    'ffn_up.weight': family === 'phi3' ? 'mlp.gate_up_proj.weight' : 'mlp.up_proj.weight',
    'ffn_down.weight': 'mlp.down_proj.weight',
    'ffn_gate_inp.weight': family === 'mixtral' ? 'block_sparse_moe.gate.weight' : 'mlp.gate.weight',
  };
  const h = table[gg];
  if (!h) throw new Error(`no HF name for ${gg} in ${family}`);
  return h;
}

const EXPERT_HF: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  mixtral: { 'ffn_gate_exps.weight': 'block_sparse_moe.experts.E.w1.weight', 'ffn_down_exps.weight': 'block_sparse_moe.experts.E.w2.weight', 'ffn_up_exps.weight': 'block_sparse_moe.experts.E.w3.weight' },
  qwen3moe: { 'ffn_gate_exps.weight': 'mlp.experts.E.gate_proj.weight', 'ffn_up_exps.weight': 'mlp.experts.E.up_proj.weight', 'ffn_down_exps.weight': 'mlp.experts.E.down_proj.weight' },
};

export interface HfFolder {
  config: Record<string, unknown>;
  /** safetensors tensors: HF name, row-major shape, F32 bytes */
  tensors: { name: string; shape: number[]; data: Uint8Array }[];
  tokenizerJson?: string;
  tokenizerConfig: string;
  /** copy data/tok512.model as tokenizer.model */
  sentencepiece: boolean;
}

/**
 * The Hugging Face checkpoint that convert_hf_to_gguf would turn into `fm`: HF names, q/k rows in HF's
 * rotate_half order (llama), Gemma norms stored as w - 1, experts as separate 2-D tensors, Llama 3's
 * RoPE factors as config rope_scaling, tied output as no lm_head.
 */
export function familyHfFolder(fm: FamilyModel, vocab: Vocab): HfFolder {
  const f = fm.family;
  const gemma = f === 'gemma2' || f === 'gemma3';
  const meta = new Map(fm.metadata.map(([k, v]) => [k, v.value]));
  const a = fm.arch;
  const num = (k: string) => meta.get(`${a}.${k}`) as number | undefined;
  const nHeads = num('attention.head_count')!;
  const nKv = num('attention.head_count_kv')!;
  const tensors: HfFolder['tensors'] = [];
  for (const t of fm.tensors) {
    const shape = [...t.ne].reverse();
    if (t.name === 'rope_freqs.weight') continue;
    if (t.name === 'token_embd.weight') tensors.push({ name: 'model.embed_tokens.weight', shape, data: t.data });
    else if (t.name === 'output.weight') tensors.push({ name: 'lm_head.weight', shape, data: t.data });
    else if (t.name === 'output_norm.weight') tensors.push({ name: 'model.norm.weight', shape, data: gemma ? minusOne(t.data) : t.data });
    else {
      const [, l, rest] = /^blk\.(\d+)\.(.+)$/.exec(t.name)!;
      const ex = EXPERT_HF[f]?.[rest];
      if (ex) {
        const per = t.data.length / shape[0];
        for (let e = 0; e < shape[0]; e++) tensors.push({ name: `model.layers.${l}.${ex.replace('E', String(e))}`, shape: shape.slice(1), data: t.data.subarray(e * per, (e + 1) * per) });
        continue;
      }
      let data = t.data;
      if (a === 'llama' && /^attn_[qk]\.weight$/.test(rest)) data = toHfRows(data, shape[0], data.length / shape[0], rest.startsWith('attn_q') ? nHeads : nKv);
      if (gemma && rest.endsWith('norm.weight')) data = minusOne(data);
      tensors.push({ name: `model.layers.${l}.${hfLayerName(f, rest)}`, shape, data });
    }
  }
  const hfArch: Record<Family, string> = {
    llama3: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', mixtral: 'MixtralForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM',
    qwen3moe: 'Qwen3MoeForCausalLM', phi3: 'Phi3ForCausalLM', gemma2: 'Gemma2ForCausalLM', gemma3: 'Gemma3ForCausalLM',
  };
  const config: Record<string, unknown> = {
    architectures: [hfArch[f]],
    model_type: f === 'llama3' ? 'llama' : f,
    vocab_size: vocab.tokens.length,
    hidden_size: num('embedding_length'),
    intermediate_size: num('feed_forward_length'),
    num_hidden_layers: num('block_count'),
    num_attention_heads: nHeads,
    num_key_value_heads: nKv,
    max_position_embeddings: num('context_length'),
    rms_norm_eps: num('attention.layer_norm_rms_epsilon'),
    tie_word_embeddings: !fm.tensors.some((t) => t.name === 'output.weight'),
    bos_token_id: vocab.bos,
    eos_token_id: vocab.eos,
    torch_dtype: 'float32',
  };
  const theta = num('rope.freq_base');
  if (theta !== undefined) config.rope_theta = theta;
  if (f === 'gemma2') config.rope_theta = 10000;
  if (f === 'llama3') config.rope_scaling = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  const kl = num('attention.key_length');
  if (kl !== undefined) config.head_dim = kl;
  if (num('expert_count') !== undefined) {
    config[f === 'mixtral' ? 'num_local_experts' : 'num_experts'] = num('expert_count');
    config.num_experts_per_tok = num('expert_used_count');
  }
  if (f === 'qwen3moe') config.moe_intermediate_size = num('expert_feed_forward_length');
  if (f === 'phi3') Object.assign(config, { original_max_position_embeddings: num('rope.scaling.original_context_length'), sliding_window: 2047, rope_scaling: null });
  if (f === 'gemma2') Object.assign(config, { attn_logit_softcapping: num('attn_logit_softcapping'), final_logit_softcapping: num('final_logit_softcapping'), sliding_window: num('attention.sliding_window'), query_pre_attn_scalar: kl });
  if (f === 'gemma3') Object.assign(config, { sliding_window: num('attention.sliding_window'), rope_local_base_freq: num('rope.freq_base_swa'), final_logit_softcapping: null, attn_logit_softcapping: null, sliding_window_pattern: 6 });
  const tokenizerConfig = JSON.stringify({ bos_token: vocab.tokens[vocab.bos], eos_token: vocab.tokens[vocab.eos], add_bos_token: vocab.addBos });
  if (vocab.model !== 'gpt2') return { config, tensors, tokenizerConfig, sentencepiece: true };
  const regex: Record<string, string> = {
    'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  };
  const specials = vocab.tokens.map((t, id) => ({ t, id })).filter(({ id }) => vocab.types[id] === 3);
  const normal = Object.fromEntries(vocab.tokens.map((t, id) => [t, id]).filter(([, id]) => vocab.types[id as number] !== 3));
  const tokenizerJson = JSON.stringify({
    version: '1.0',
    added_tokens: specials.map(({ t, id }) => ({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: regex[vocab.pre!] }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: vocab.addBos ? { type: 'TemplateProcessing', single: [{ SpecialToken: { id: vocab.tokens[vocab.bos], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }] } : null,
    model: { type: 'BPE', vocab: normal, merges: vocab.merges },
  });
  return { config, tensors, tokenizerJson, tokenizerConfig: JSON.stringify({ bos_token: vocab.tokens[vocab.bos], eos_token: vocab.tokens[vocab.eos] }), sentencepiece: false };
}

function minusOne(data: Uint8Array): Uint8Array {
  const x = new Float32Array(new Uint8Array(data).buffer);
  for (let i = 0; i < x.length; i++) x[i] -= 1;
  return new Uint8Array(x.buffer);
}
