/**
 * Hugging Face checkpoints (config.json + safetensors, single or sharded, + tokenizer.json or
 * tokenizer.model) -> GGUF for the families people quantize, with llama.cpp's convert_hf_to_gguf
 * conventions (read from conversion/{llama,qwen,phi,gemma}.py and base.py; facts, not code):
 *
 *   family    HF architectures                     GGUF arch  what the converter does besides renaming
 *   llama     Llama/Mistral/MixtralForCausalLM     llama      q/k rows permuted per head (rotate_half ->
 *                                                            adjacent pairs); Llama 3 rope_scaling ->
 *                                                            rope_freqs.weight; Mixtral experts stacked
 *   qwen2     Qwen2ForCausalLM                     qwen2      biases kept
 *   qwen3     Qwen3ForCausalLM                     qwen3      q_norm/k_norm -> attn_q_norm/attn_k_norm
 *   qwen3moe  Qwen3MoeForCausalLM                  qwen3moe   experts stacked into 3-D ffn_*_exps
 *   phi3      Phi3ForCausalLM                      phi3       qkv_proj -> attn_qkv, gate_up_proj -> ffn_up
 *   gemma2    Gemma2ForCausalLM                    gemma2     every *norm.weight + 1 (Gemma's RMSNorm
 *                                                            multiplies by 1 + w); lm_head dropped (tied)
 *   gemma3    Gemma3ForCausalLM                    gemma3     the same, q/k norms too
 *
 * Tensor types: 1-D tensors, *_norm.weight, biases and ffn_gate_inp are F32; other float tensors keep
 * their dtype (or take --type). Stacking experts = writing expert 0's bytes, then expert 1's, ...
 * (torch.stack on dim 0, the outermost). The tokenizer: tokenizer.json's BPE vocabulary and merges with
 * the pre-tokenizer recognised from its Split regex (llama-bpe, qwen2, tekken) or ByteLevel (gpt-2),
 * padded to config.vocab_size with [PADn] UNUSED tokens; added tokens are CONTROL when special, else
 * USER_DEFINED; BOS/EOS from tokenizer_config.json; or a sentencepiece tokenizer.model.
 */
import { fail } from '../errors.js';
import { gguf, GgufWriter, type GgufValue } from './gguf.js';
import { toGgufRows } from './hf-llama.js';
import type { ModelFile, ModelTensor } from './model-file.js';
import type { ByteSink } from './sink.js';
import { fromFloat32, ggmlInfo, isFloatKind, toFloat32 } from './tensor-data.js';
import { tokenizerFromVocab } from './convert.js';
import { parseSentencepieceModel } from './vocab.js';
import { TokenType } from '../model/types.js';
import { preTokenizerKind, preTokenizerTraits } from '../model/pretokenize.js';
import { FAMILIES, hfTensorOf, type ModelFamily } from '../model/family.js';
import { dequantizePackedInt4, LOWBIT_TOKENIZER_KEY, packedInt4ConfigOf, type PackedInt4Group } from './packed-int4.js';
import { vocabFromGgufMetadata } from './vocab.js';

/** The HF architectures `lowbit convert` knows: every row of the family table (model/family.ts). */
export const HF_ARCHITECTURES: readonly string[] = FAMILIES.flatMap((f) => f.hfArchitectures);

type Config = Record<string, unknown>;

function familyOf(config: Config): ModelFamily {
  const archs = config.architectures;
  const a = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  if (a === undefined) fail(`config.json has no architectures[0] (known: ${HF_ARCHITECTURES.join(', ')})`);
  const f = FAMILIES.find((x) => x.hfArchitectures.includes(a));
  if (!f) fail(`config.json: architecture '${a}' is not one lowbit converts (known: ${HF_ARCHITECTURES.join(', ')})`);
  return f;
}

const numOr = (c: Config, keys: readonly string[], dflt?: number): number | undefined => {
  for (const k of keys) if (typeof c[k] === 'number') return c[k] as number;
  return dflt;
};
const need = (c: Config, keys: readonly string[]): number => numOr(c, keys) ?? fail(`config.json: '${keys[0]}' is missing or not a number`);

/** RoPE parameters as convert_hf_to_gguf reads them: rope_parameters (newer transformers) or rope_theta + rope_scaling */
function ropeParams(c: Config): Record<string, unknown> {
  const rp = c.rope_parameters;
  if (rp && typeof rp === 'object') {
    const r = rp as Record<string, unknown>;
    return (r.full_attention as Record<string, unknown>) ?? r;
  }
  const out: Record<string, unknown> = { ...((c.rope_scaling as Record<string, unknown>) ?? {}) };
  if (out.type !== undefined && out.rope_type === undefined) out.rope_type = out.type;
  if (typeof c.rope_theta === 'number') out.rope_theta = c.rope_theta;
  return out;
}

/** The RoPE frequency factors convert_hf_to_gguf writes as rope_freqs.weight for rope_type llama3 */
export function llama3RopeFreqs(headDim: number, rp: Record<string, unknown>): Float32Array {
  const base = (rp.rope_theta as number) ?? 10000;
  const factor = (rp.factor as number) ?? 8;
  const low = (rp.low_freq_factor as number) ?? 1;
  const high = (rp.high_freq_factor as number) ?? 4;
  const old = (rp.original_max_position_embeddings as number) ?? 8192;
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) {
    const freq = 1 / Math.pow(base, Math.fround((2 * i) / headDim)); // torch: arange(0, dim, 2, float32) / dim
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < old / high) out[i] = 1;
    else if (wavelen > old / low) out[i] = factor;
    else {
      const smooth = (old / wavelen - low) / (high - low);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

/**
 * The config.json rope_scaling of rope type llama3 whose factors (llama3RopeFreqs) are `freqs` (a GGUF's
 * rope_freqs.weight): the inverse of the converter, for writing Hugging Face checkpoints of Llama 3.
 * The curve fixes the factor (its largest value) and the two wavelength thresholds
 * original_max_position_embeddings / high_freq_factor and / low_freq_factor, not the three numbers
 * apart (scaling all three by k gives the same factors): low_freq_factor is taken as 1 (every Llama 3.x
 * config), Llama 3.1's values (8192, 1, 4) are tried first, then the thresholds fitted to the factors
 * between 1 and the factor. Every factor of the result is checked against `freqs` (relative 1e-6).
 * All factors 1: no rope_scaling (undefined). Fails, naming the problem, when no llama3 curve fits.
 */
export function llama3RopeScaling(freqs: Float32Array, headDim: number, ropeTheta: number, what = 'rope_freqs.weight'): Record<string, unknown> | undefined {
  if (freqs.length !== headDim / 2) fail(`${what}: ${freqs.length} factors, expected head size / 2 = ${headDim / 2}`);
  for (let i = 0; i < freqs.length; i++) if (!(Number.isFinite(freqs[i]) && freqs[i] >= 1)) fail(`${what}: factor ${i} is ${freqs[i]}; Llama 3's RoPE factors are finite and >= 1`);
  if (freqs.every((f) => f === 1)) return undefined;
  const factor = Math.max(...freqs);
  const fits = (rs: Record<string, unknown>) => {
    const got = llama3RopeFreqs(headDim, { ...rs, rope_theta: ropeTheta });
    return got.every((g, i) => Math.abs(g - freqs[i]) <= 1e-6 * freqs[i]);
  };
  const scaling = (orig: number, high: number) => ({ rope_type: 'llama3', factor: short(factor), low_freq_factor: 1, high_freq_factor: high, original_max_position_embeddings: orig });
  for (const orig of [8192, 4096, 2048, 16384, 32768, 65536, 131072]) {
    const rs = scaling(orig, 4);
    if (fits(rs)) return rs;
  }
  // the factors strictly between 1 and the factor: smooth_i = (1/f_i - 1/factor) / (1 - 1/factor) is
  // (orig / wavelen_i - 1) / (high - 1) = a / wavelen_i + b: fitted by least squares over those points
  const xs: number[] = [];
  const ss: number[] = [];
  for (let i = 0; i < freqs.length; i++) {
    const f = freqs[i];
    if (f > 1 && f < factor) {
      const freq = 1 / Math.pow(ropeTheta, Math.fround((2 * i) / headDim));
      xs.push(freq / (2 * Math.PI));
      ss.push((1 / f - 1 / factor) / (1 - 1 / factor));
    }
  }
  if (xs.length >= 2) {
    const n = xs.length;
    const mx = xs.reduce((a, b) => a + b, 0) / n;
    const ms = ss.reduce((a, b) => a + b, 0) / n;
    const a = xs.reduce((acc, x, i) => acc + (x - mx) * (ss[i] - ms), 0) / xs.reduce((acc, x) => acc + (x - mx) ** 2, 0);
    const b = ms - a * mx;
    if (b < 0 && a > 0) {
      const high = 1 - 1 / b;
      const orig = -a / b;
      for (const rs of [scaling(Math.round(orig), Number(high.toPrecision(6))), scaling(orig, high)]) if (fits(rs)) return rs;
    }
  }
  fail(`${what}: its factors are not a llama3 rope_scaling curve (1 for short wavelengths, factor ${factor} for long ones, smooth between) for any original_max_position_embeddings and high_freq_factor with low_freq_factor 1: config.json cannot express them`);
}

/** a float32 value as the shortest decimal that reads back to it (8, not 8.000000000001) */
function short(v: number): number {
  for (let p = 1; p < 17; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === Math.fround(v)) return d;
  }
  return v;
}

/**
 * The rope_freqs.weight factors a llama config.json's rope_scaling asks for (rope type llama3), undefined
 * without rope_scaling; a rope type the llama runtime has no form for fails (convert to GGUF instead).
 */
export function llamaRopeFreqsOfConfig(config: Record<string, unknown>, headDim: number): Float32Array | undefined {
  const rp = ropeParams(config);
  const type = typeof rp.rope_type === 'string' ? rp.rope_type.toLowerCase() : undefined;
  if (type === undefined || type === 'default') return undefined;
  if (type === 'llama3') return llama3RopeFreqs(headDim, rp);
  fail(`config.json: rope_scaling of rope type '${type}' is not read by the llama safetensors loader (llama3 is); convert the folder to GGUF first (lowbit convert)`);
}

/** GGUF metadata for an HF config.json, as convert_hf_to_gguf writes it for the family. */
export function hfGgufMetadata(config: unknown, nLayersCheck?: number): { arch: string; metadata: [string, GgufValue][] } {
  if (typeof config !== 'object' || config === null) fail('config.json is not a JSON object');
  const c = config as Config;
  const f = familyOf(c);
  const a = f.architectures[0];
  const m: [string, GgufValue][] = [['general.architecture', gguf.str(a)]];
  if (typeof c._name_or_path === 'string' && c._name_or_path) m.push(['general.name', gguf.str(String(c._name_or_path).split('/').pop()!)]);
  const u32 = (k: string, v: number | undefined) => v !== undefined && m.push([`${a}.${k}`, gguf.u32(v)]);
  const f32 = (k: string, v: number | undefined) => v !== undefined && m.push([`${a}.${k}`, gguf.f32(v)]);
  const nLayers = need(c, ['num_hidden_layers']);
  if (nLayersCheck !== undefined && nLayersCheck !== nLayers) fail(`config.json says ${nLayers} layers, the checkpoint has ${nLayersCheck}`);
  const dim = need(c, ['hidden_size']);
  const nHead = need(c, ['num_attention_heads']);
  const rp = ropeParams(c);
  const gemma = f.hfNormPlusOne === true;
  u32('block_count', nLayers);
  u32('context_length', numOr(c, ['max_position_embeddings'], a === 'gemma3' ? 131072 : undefined));
  u32('embedding_length', dim);
  u32('feed_forward_length', need(c, ['intermediate_size']));
  u32('attention.head_count', nHead);
  u32('attention.head_count_kv', numOr(c, ['num_key_value_heads'], nHead));
  if (a === 'gemma2') {
    // convert_hf_to_gguf's Gemma2Model writes no rope.freq_base (llama.cpp's default 10000 is Gemma 2's)
  } else if (rp.rope_theta !== undefined) f32('rope.freq_base', rp.rope_theta as number);
  else if (a === 'gemma3') f32('rope.freq_base', 1_000_000);
  else if (a === 'phi3') f32('rope.freq_base', 10000);
  f32('attention.layer_norm_rms_epsilon', numOr(c, ['rms_norm_eps'], gemma ? 1e-6 : undefined));
  const ropeType = typeof rp.rope_type === 'string' ? rp.rope_type.toLowerCase() : undefined;
  if (ropeType === 'linear' && typeof rp.factor === 'number') {
    m.push([`${a}.rope.scaling.type`, gguf.str('linear')]);
    f32('rope.scaling.factor', rp.factor);
  } else if (ropeType === 'yarn' && typeof rp.factor === 'number') {
    m.push([`${a}.rope.scaling.type`, gguf.str('yarn')]);
    f32('rope.scaling.factor', rp.factor);
    u32('rope.scaling.original_context_length', need(rp as Config, ['original_max_position_embeddings']));
    f32('rope.scaling.yarn_ext_factor', numOr(rp as Config, ['extrapolation_factor']));
    f32('rope.scaling.yarn_attn_factor', numOr(rp as Config, ['attention_factor', 'attn_factor']));
    f32('rope.scaling.yarn_beta_fast', numOr(rp as Config, ['beta_fast']));
    f32('rope.scaling.yarn_beta_slow', numOr(rp as Config, ['beta_slow']));
  }
  else if (ropeType === 'longrope' || ropeType === 'su') fail('config.json: Phi-3 LongRoPE (rope_scaling long_factor/short_factor) is not supported by lowbit convert yet');
  const nExperts = numOr(c, ['num_local_experts', 'num_experts']);
  if (nExperts !== undefined && f.moe) {
    u32('expert_count', nExperts);
    u32('expert_used_count', need(c, ['num_experts_per_tok']));
  }
  if (typeof c.head_dim === 'number' || gemma) {
    const hd = numOr(c, ['head_dim'], a === 'gemma3' ? 256 : dim / nHead)!;
    u32('attention.key_length', hd);
    u32('attention.value_length', hd);
  }
  if (a === 'llama') {
    u32('vocab_size', need(c, ['vocab_size']));
    u32('rope.dimension_count', numOr(c, ['head_dim'], Math.floor(dim / nHead)));
  }
  if (a === 'qwen3moe') u32('expert_feed_forward_length', numOr(c, ['moe_intermediate_size']));
  if (a === 'phi3') {
    const orig = numOr(rp as Config, ['original_max_position_embeddings'], numOr(c, ['original_max_position_embeddings'], numOr(c, ['max_position_embeddings'])));
    u32('rope.scaling.original_context_length', orig);
    u32('rope.dimension_count', Math.floor((numOr(c, ['partial_rotary_factor'], 1)! * dim) / nHead));
    u32('attention.sliding_window', numOr(c, ['sliding_window'], 0));
  }
  if (a === 'gemma2') {
    f32('attn_logit_softcapping', numOr(c, ['attn_logit_softcapping']));
    f32('final_logit_softcapping', numOr(c, ['final_logit_softcapping']));
    u32('attention.sliding_window', numOr(c, ['sliding_window']));
  }
  if (a === 'gemma3') {
    if (c.attn_logit_softcapping != null) fail('config.json: Gemma 3 has no attention soft-capping, but attn_logit_softcapping is set');
    const cap = numOr(c, ['final_logit_softcapping']);
    if (cap) f32('final_logit_softcapping', cap);
    if (c.sliding_window_pattern !== 1) u32('attention.sliding_window', numOr(c, ['sliding_window']));
    const local = (c.rope_parameters as Record<string, Record<string, unknown>> | undefined)?.sliding_attention?.rope_theta ?? c.rope_local_base_freq;
    if (typeof local === 'number') f32('rope.freq_base_swa', local);
  }
  return { arch: a, metadata: m };
}

/**
 * The config.json of a GGUF model of a non-llama family: the inverse of hfGgufMetadata (what
 * convert_hf_to_gguf reads back into the same metadata), for the packed GPTQ/AWQ checkpoints. Llama
 * models keep io/hf-llama.ts hfConfigFromHparams.
 */
export function hfConfigFromGguf(meta: ReadonlyMap<string, GgufValue>, f: ModelFamily, o: { vocabSize: number; tied: boolean; dtype?: string }): Record<string, unknown> {
  const arch = meta.get('general.architecture')?.value;
  const a = typeof arch === 'string' ? arch : f.architectures[0];
  const num = (k: string): number | undefined => {
    const v = meta.get(`${a}.${k}`)?.value;
    return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
  };
  const need = (k: string): number => num(k) ?? fail(`GGUF metadata ${a}.${k} is missing`);
  // a float32 value as the shortest decimal that reads back to it (1e-5, not 9.999999747378752e-6)
  const short = (v: number): number => {
    for (let p = 1; p < 17; p++) {
      const d = Number(v.toPrecision(p));
      if (Math.fround(d) === Math.fround(v)) return d;
    }
    return v;
  };
  const numF = (k: string): number | undefined => {
    const v = num(k);
    return v === undefined ? undefined : short(v);
  };
  const dim = need('embedding_length');
  const nHead = need('attention.head_count');
  const c: Record<string, unknown> = {
    architectures: [f.hfArchitectures[0]],
    model_type: f.hfModelTypes[f.hfModelTypes.length - 1], // gemma3: gemma3_text (Gemma3ForCausalLM's config)
    vocab_size: o.vocabSize,
    hidden_size: dim,
    intermediate_size: need('feed_forward_length'),
    num_hidden_layers: need('block_count'),
    num_attention_heads: nHead,
    num_key_value_heads: num('attention.head_count_kv') ?? nHead,
    rms_norm_eps: numF('attention.layer_norm_rms_epsilon') ?? f.normEps,
    tie_word_embeddings: o.tied,
    torch_dtype: o.dtype ?? 'float16',
  };
  const ctx = num('context_length');
  if (ctx !== undefined) c.max_position_embeddings = ctx;
  c[f.activation === 'gelu' ? 'hidden_activation' : 'hidden_act'] = f.activation === 'gelu' ? 'gelu_pytorch_tanh' : 'silu';
  const theta = numF('rope.freq_base');
  if (theta !== undefined) c.rope_theta = theta;
  else if (a === 'gemma2') c.rope_theta = 10000;
  const kl = num('attention.key_length');
  if (kl !== undefined) c.head_dim = kl;
  const scaling = meta.get(`${a}.rope.scaling.type`)?.value;
  const factor = numF('rope.scaling.factor');
  if (scaling === 'linear' && factor !== undefined) c.rope_scaling = { rope_type: 'linear', factor };
  else if (scaling === 'yarn' && factor !== undefined) {
    const y: Record<string, unknown> = { rope_type: 'yarn', factor, original_max_position_embeddings: need('rope.scaling.original_context_length') };
    for (const [k, g] of [['extrapolation_factor', 'yarn_ext_factor'], ['attention_factor', 'yarn_attn_factor'], ['beta_fast', 'yarn_beta_fast'], ['beta_slow', 'yarn_beta_slow']] as const) {
      const v = numF(`rope.scaling.${g}`);
      if (v !== undefined) y[k] = v;
    }
    c.rope_scaling = y;
  } else if (scaling !== undefined && scaling !== 'none') fail(`GGUF metadata ${a}.rope.scaling.type '${String(scaling)}' has no config.json form here (linear, yarn)`);
  const experts = num('expert_count');
  if (f.moe && experts !== undefined) {
    c[a === 'qwen3moe' ? 'num_experts' : 'num_local_experts'] = experts;
    c.num_experts_per_tok = need('expert_used_count');
  }
  if (a === 'qwen3moe') {
    c.moe_intermediate_size = need('expert_feed_forward_length');
    c.norm_topk_prob = true;
  }
  if (a === 'phi3') {
    c.original_max_position_embeddings = num('rope.scaling.original_context_length') ?? ctx;
    const rot = num('rope.dimension_count');
    if (rot !== undefined && rot !== Math.floor(dim / nHead)) c.partial_rotary_factor = (rot * nHead) / dim;
    c.sliding_window = num('attention.sliding_window') || null;
  }
  if (a === 'gemma2') {
    c.attn_logit_softcapping = numF('attn_logit_softcapping') ?? null;
    c.final_logit_softcapping = numF('final_logit_softcapping') ?? null;
    c.sliding_window = num('attention.sliding_window');
    c.query_pre_attn_scalar = need('block_count') === f.wideQueryScaleLayers ? dim / nHead : (kl ?? dim / nHead);
  }
  if (a === 'gemma3') {
    c.final_logit_softcapping = numF('final_logit_softcapping') ?? null;
    c.attn_logit_softcapping = null;
    const window = num('attention.sliding_window');
    if (window === undefined) c.sliding_window_pattern = 1;
    else c.sliding_window = window;
    const local = numF('rope.freq_base_swa');
    if (local !== undefined) c.rope_local_base_freq = local;
  }
  for (const [k, key] of [['bos_token_id', 'tokenizer.ggml.bos_token_id'], ['eos_token_id', 'tokenizer.ggml.eos_token_id']] as const) {
    const v = meta.get(key)?.value;
    if (typeof v === 'number') c[k] = v;
  }
  return c;
}

// ---- tokenizer -------------------------------------------------------------------------------------

const PRE_REGEX: readonly [string, string][] = [
  ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", 'llama-bpe'],
  ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", 'qwen2'],
  ['[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+', 'tekken'],
];

/** tokenizer.ggml.pre for a tokenizer.json pre_tokenizer: recognised by its regex (llama.cpp hashes a tokenization instead) */
export function hfPreTokenizer(pre: unknown): string {
  const regexes: string[] = [];
  let byteLevelRegex = false;
  const visit = (p: unknown) => {
    if (!p || typeof p !== 'object') return;
    const o = p as Record<string, unknown>;
    if (o.type === 'Sequence' && Array.isArray(o.pretokenizers)) o.pretokenizers.forEach(visit);
    if (o.type === 'Split') {
      const r = (o.pattern as Record<string, unknown> | undefined)?.Regex;
      if (typeof r === 'string') regexes.push(r);
    }
    if (o.type === 'ByteLevel' && o.use_regex !== false) byteLevelRegex = true;
  };
  visit(pre);
  if (regexes.length === 0 && byteLevelRegex) return 'gpt-2';
  if (regexes.length === 1) {
    const hit = PRE_REGEX.find(([r]) => r === regexes[0]);
    if (hit) return hit[1];
  }
  fail(`tokenizer.json: unknown pre-tokenizer (${regexes.length ? `Split regex ${JSON.stringify(regexes[0]).slice(0, 80)}` : 'no Split regex, no ByteLevel regex'}); known: llama-bpe (Llama 3), qwen2, tekken, gpt-2`);
}

export interface HfTokenizerFiles {
  /** tokenizer.json text */
  tokenizerJson?: string;
  /** tokenizer_config.json text */
  tokenizerConfig?: string;
  /** sentencepiece tokenizer.model bytes */
  sentencepiece?: Uint8Array;
}

/** GGUF tokenizer.* entries for an HF tokenizer, padded to the model's vocab_size. */
export function hfTokenizerMetadata(files: HfTokenizerFiles, config: Config, arch: string): [string, GgufValue][] {
  const vocabSize = numOr(config, ['vocab_size']);
  const tc = files.tokenizerConfig ? parseJson(files.tokenizerConfig, 'tokenizer_config.json') : {};
  const tokenText = (v: unknown) => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as Record<string, unknown>).content === 'string' ? ((v as Record<string, unknown>).content as string) : undefined);
  const gemma = arch.startsWith('gemma');
  const tj = files.tokenizerJson ? parseJson(files.tokenizerJson, 'tokenizer.json') : undefined;
  const model = tj?.model as Record<string, unknown> | undefined;
  if (tj && model?.type === 'BPE' && !files.sentencepiece) {
    const vocab = model.vocab as Record<string, number>;
    const byId = new Map<number, string>();
    for (const [t, id] of Object.entries(vocab)) byId.set(id, t);
    const added = new Map<number, { content: string; special: boolean }>();
    for (const t of (tj.added_tokens as { id: number; content: string; special: boolean }[] | undefined) ?? []) added.set(t.id, t);
    const n = Math.max(vocabSize ?? 0, ...byId.keys(), ...added.keys()) + (vocabSize === undefined ? 1 : 0);
    const tokens: string[] = [];
    const types = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const a = added.get(i);
      if (a) {
        tokens.push(a.content);
        types[i] = a.special ? TokenType.CONTROL : TokenType.USER_DEFINED;
      } else if (byId.has(i)) {
        tokens.push(byId.get(i)!);
        types[i] = TokenType.NORMAL;
      } else {
        tokens.push(`[PAD${i}]`);
        types[i] = TokenType.UNUSED;
      }
    }
    const merges = ((model.merges as unknown[]) ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : String(m)));
    const pre = hfPreTokenizer(tj.pre_tokenizer);
    const idOf = (v: unknown) => {
      const t = tokenText(v);
      const i = t === undefined ? -1 : tokens.indexOf(t);
      return i >= 0 ? i : undefined;
    };
    const out: [string, GgufValue][] = [
      ['tokenizer.ggml.model', gguf.str('gpt2')],
      ['tokenizer.ggml.pre', gguf.str(pre)],
      ['tokenizer.ggml.tokens', gguf.strings(tokens)],
      ['tokenizer.ggml.token_type', gguf.i32s(types)],
      ['tokenizer.ggml.merges', gguf.strings(merges)],
    ];
    const bos = idOf(tc.bos_token) ?? numOr(config, ['bos_token_id']);
    const eos = idOf(tc.eos_token) ?? numOr(config, ['eos_token_id']);
    if (bos !== undefined) out.push(['tokenizer.ggml.bos_token_id', gguf.u32(bos)]);
    if (eos !== undefined) out.push(['tokenizer.ggml.eos_token_id', gguf.u32(eos)]);
    const pad = idOf(tc.pad_token);
    if (pad !== undefined) out.push(['tokenizer.ggml.padding_token_id', gguf.u32(pad)]);
    // add_bos_token: tokenizer_config.json, else whether the post-processor's single template starts with BOS
    let addBos = typeof tc.add_bos_token === 'boolean' ? tc.add_bos_token : undefined;
    if (addBos === undefined) {
      const single = ((tj.post_processor as Record<string, unknown> | undefined)?.single ?? ((tj.post_processor as Record<string, unknown> | undefined)?.processors as Record<string, unknown>[] | undefined)?.find((p) => p.single)?.single) as Record<string, unknown>[] | undefined;
      const first = single?.[0]?.SpecialToken as Record<string, unknown> | undefined;
      if (first && bos !== undefined && first.id === tokens[bos]) addBos = true;
    }
    // undetermined: llama.cpp's default for the pre-tokenizer, written out
    out.push(['tokenizer.ggml.add_bos_token', gguf.bool(addBos ?? preTokenizerTraits(preTokenizerKind(pre)).addBosDefault)]);
    if (typeof tc.chat_template === 'string') out.push(['tokenizer.chat_template', gguf.str(tc.chat_template)]);
    return out;
  }
  if (files.sentencepiece) {
    const v = parseSentencepieceModel(files.sentencepiece, 'tokenizer.model');
    let { tokens, scores, types } = v;
    if (vocabSize !== undefined && vocabSize > tokens.length) {
      // convert_hf_to_gguf pads to vocab_size with [PADn] UNUSED tokens (score -1000)
      const n = vocabSize;
      tokens = [...tokens, ...Array.from({ length: n - tokens.length }, (_, i) => `[PAD${v.tokens.length + i}]`)];
      scores = Float32Array.from({ length: n }, (_, i) => (i < v.scores.length ? v.scores[i] : -1000));
      types = Int32Array.from({ length: n }, (_, i) => (i < v.types.length ? v.types[i] : TokenType.UNUSED));
    }
    const addBos = typeof tc.add_bos_token === 'boolean' ? tc.add_bos_token : v.addBos;
    const out = tokenizerFromVocab({ ...v, tokens, scores, types, addBos, addSpacePrefix: gemma ? false : v.addSpacePrefix });
    if (typeof tc.chat_template === 'string') out.push(['tokenizer.chat_template', gguf.str(tc.chat_template)]);
    return out;
  }
  if (tj) fail(`tokenizer.json: model type '${String(model?.type)}' is not supported (BPE, or a sentencepiece tokenizer.model)`);
  fail('the folder has no tokenizer.json or tokenizer.model');
}

function parseJson(text: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* below */
  }
  fail(`${what} is not a JSON object`);
}

// ---- tensors -----------------------------------------------------------------------------------------

interface OutTensor {
  readonly name: string;
  /** row-major shape, outermost first */
  readonly shape: number[];
  readonly type: string;
  /** sources written one after the other (experts stacked), or generated values; a packed GPTQ/AWQ layer is read dequantized (F32) */
  readonly sources: readonly Source[];
  readonly values?: Float32Array;
  /** rows reordered per head (llama q/k) */
  readonly permuteHeads?: number;
  readonly plusOne?: boolean;
}

export type HfFloatType = 'F32' | 'F16' | 'BF16';

/** a tensor of the checkpoint, or a packed int4 layer standing for its weight */
interface Source {
  readonly tensor: ModelTensor;
  readonly packed?: PackedInt4Group;
  /** row-major shape ([out, in] for a packed layer) */
  readonly shape: readonly number[];
  /** the dtype it is read as */
  readonly type: string;
}

export interface HfConvertOptions {
  readonly type?: HfFloatType;
  readonly tokenizer: HfTokenizerFiles;
  /** without tokenizer files or a carried tokenizer, write no tokenizer entries instead of failing (the runtime's loader, given a tokenizer of its own) */
  readonly tokenizerOptional?: boolean;
}

/** Convert an HF checkpoint (its ModelFile and parsed config.json) to GGUF into `sink`. Returns the tensor count. */
export async function convertHfFolder(m: ModelFile, config: unknown, sink: ByteSink, opts: HfConvertOptions): Promise<{ arch: string; tensors: number }> {
  if (m.format !== 'safetensors') fail(`${m.name}: expected safetensors weights`);
  const c = config as Config;
  // GPTQ/AWQ packed int4 layers (lowbit quantize --layout gptq|awq of any family, AutoGPTQ, AutoAWQ):
  // P.qweight stands for the layer's weight, dequantized (F32 unless --type); P.qzeros / P.scales / P.g_idx
  // go with it; the all-zero P.bias AutoGPTQ writes for layers without a bias in the family is dropped
  if (m.packedInt4Problems?.length) fail(`${m.name}: ${m.packedInt4Problems[0]}`);
  const groups = m.packedInt4 ?? [];
  const packedConfig = packedInt4ConfigOf(config);
  if (packedConfig && !groups.length) fail(`${m.name}: config.json says ${packedConfig.method}, but the file has no packed int4 layers (P.qweight + P.scales)`);
  const packedOf = new Map<string, PackedInt4Group | undefined>();
  for (const g of groups) {
    if (packedConfig && g.layout !== packedConfig.method) fail(`${g.qweight.name}: shapes are ${g.layout}'s layout but config.json says ${packedConfig.method}`);
    packedOf.set(g.qweight.name, g);
    for (const t of [g.scales, g.qzeros, g.gIdx]) if (t) packedOf.set(t.name, undefined);
  }
  const zeroBiasOfPacked = async (t: ModelTensor) => {
    const prefix = t.name.endsWith('.bias') ? t.name.slice(0, -'.bias'.length) : undefined;
    return prefix !== undefined && groups.some((g) => g.prefix === prefix) && (await m.readFloat32(t)).every((x) => x === 0);
  };
  const f = familyOf(c);
  const layers = new Set<number>();
  for (const t of m.tensors) {
    const x = /^model\.layers\.(\d+)\./.exec(t.name);
    if (x) layers.add(Number(x[1]));
  }
  const { arch, metadata } = hfGgufMetadata(config, layers.size);
  const byName = new Map(m.tensors.map((t) => [t.name, t]));
  const f32Bytes = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  const nHead = need(c, ['num_attention_heads']);
  const nKv = numOr(c, ['num_key_value_heads'], nHead)!;
  const nExperts = numOr(c, ['num_local_experts', 'num_experts']);
  const outType = (t: Source, gg: string, dims: number): string => {
    if (!isFloatKind(t.type)) fail(`${t.tensor.name}: dtype ${t.type} is not a float type (F32, F16, BF16)`);
    if (dims <= 1 || gg.endsWith('_norm.weight') || !gg.endsWith('.weight') || gg.endsWith('ffn_gate_inp.weight')) return 'F32';
    return opts.type ?? t.type;
  };
  const out: OutTensor[] = [];
  const experts = new Map<string, { shape: number[]; type: string; byExpert: Map<number, Source> }>();
  for (const tensor of m.tensors) {
    if (tensor.name.endsWith('.rotary_emb.inv_freq')) continue;
    if (tensor.name === 'lm_head.weight' && f.hfDropLmHead) continue;
    if (packedOf.has(tensor.name) && !packedOf.get(tensor.name)) continue; // read with its qweight
    const g = packedOf.get(tensor.name);
    const t: Source = g ? { tensor, packed: g, shape: [g.outFeatures, g.inFeatures], type: 'F32' } : { tensor, shape: tensor.shape, type: tensor.type };
    const name = g ? `${g.prefix}.weight` : tensor.name;
    const hit = hfTensorOf(f, name);
    if (!hit && (await zeroBiasOfPacked(tensor))) continue;
    if (!hit) fail(`tensor '${name}' is not part of the ${f.hfArchitectures[0]} layout`);
    const gg = hit.gguf;
    if (hit.spec?.perExpert) {
      let g = experts.get(gg);
      if (!g) experts.set(gg, (g = { shape: [...t.shape], type: outType(t, gg, 3), byExpert: new Map() }));
      if (t.shape.join() !== g.shape.join()) fail(`${name}: shape [${t.shape}] differs from the other experts' [${g.shape}]`);
      g.byExpert.set(hit.expert!, t);
      continue;
    }
    // q/k rows (and biases) of a family whose GGUF keeps Meta's adjacent rotary pairs are reordered per head
    const rope = f.linears.find((s) => s.ropePermuted && new RegExp(`^blk\\.\\d+\\.${s.gguf}\\.(weight|bias)$`).test(gg))?.ropePermuted;
    const permuteHeads = rope === 'heads' ? nHead : rope === 'kvHeads' ? nKv : undefined;
    out.push({ name: gg, shape: [...t.shape], type: outType(t, gg, t.shape.length), sources: [t], permuteHeads, plusOne: f.hfNormPlusOne && gg.endsWith('norm.weight') });
  }
  for (const [gg, g] of experts) {
    if (nExperts === undefined) fail(`${gg}: expert tensors, but config.json has no num_local_experts / num_experts`);
    const ids = [...g.byExpert.keys()].sort((a, b) => a - b);
    if (ids.length !== nExperts || ids.some((id, i) => id !== i)) fail(`${gg}: the checkpoint has experts [${ids.join(', ')}], but config.json says ${nExperts} (inconsistent expert counts)`);
    out.push({ name: gg, shape: [nExperts, ...g.shape], type: g.type, sources: ids.map((i) => g.byExpert.get(i)!) });
  }
  const rp = ropeParams(c);
  if (arch === 'llama' && typeof rp.rope_type === 'string' && rp.rope_type.toLowerCase() === 'llama3') {
    const hd = numOr(c, ['head_dim'], Math.floor(need(c, ['hidden_size']) / nHead))!;
    out.unshift({ name: 'rope_freqs.weight', shape: [hd / 2], type: 'F32', sources: [], values: llama3RopeFreqs(hd, rp) });
  }
  // the tensor order of the file: globals first, then layer by layer (the order convert_hf_to_gguf's sorted names give)
  const key = (n: string) => {
    const b = /^blk\.(\d+)\./.exec(n);
    return b ? [1, Number(b[1]), n] : [0, 0, n];
  };
  out.sort((a, b) => {
    const [x0, x1, x2] = key(a.name);
    const [y0, y1, y2] = key(b.name);
    return (x0 as number) - (y0 as number) || (x1 as number) - (y1 as number) || (x2 < y2 ? -1 : x2 > y2 ? 1 : 0);
  });
  const fileType = opts.type === 'F16' ? 1 : opts.type === 'BF16' ? 32 : opts.type === 'F32' ? 0 : undefined;
  const meta: [string, GgufValue][] = [...metadata];
  if (fileType !== undefined) meta.push(['general.file_type', gguf.u32(fileType)]);
  // a checkpoint written by lowbit's GPTQ/AWQ writer carries the GGUF tokenizer entries when the folder has no tokenizer files
  const carried = m.metadata.get(LOWBIT_TOKENIZER_KEY);
  const noFiles = !opts.tokenizer.tokenizerJson && !opts.tokenizer.sentencepiece;
  if (noFiles && typeof carried === 'string') meta.push(...tokenizerFromVocab(vocabFromGgufMetadata(parseJson(carried, `${m.name}: ${LOWBIT_TOKENIZER_KEY}`))));
  else if (!(noFiles && opts.tokenizerOptional)) meta.push(...hfTokenizerMetadata(opts.tokenizer, c, arch));
  const w = new GgufWriter(
    sink,
    meta,
    out.map((t) => ({ name: t.name, ne: [...t.shape].reverse(), type: ggmlInfo(t.type) })),
  );
  await w.begin();
  for (const t of out) {
    if (t.values) {
      await w.write(fromFloat32('F32', t.values));
      continue;
    }
    for (const s of t.sources) {
      let bytes = s.packed ? f32Bytes(await dequantizePackedInt4(s.packed, (x) => m.readFloat32(byName.get(x.name)!), { gptqZeroOffset: packedConfig?.gptqZeroOffset ?? 1 })) : await m.read(s.tensor);
      const same = s.type === t.type && !t.plusOne;
      if (!same) {
        const x = toFloat32(s.type as HfFloatType, bytes);
        if (t.plusOne) for (let i = 0; i < x.length; i++) x[i] += 1;
        bytes = fromFloat32(t.type as HfFloatType, x);
      }
      if (t.permuteHeads !== undefined) bytes = toGgufRows(bytes, s.shape[0], bytes.length / s.shape[0], t.permuteHeads);
      await w.write(bytes);
    }
  }
  await w.end();
  return { arch, tensors: out.length };
}
