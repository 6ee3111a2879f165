/**
 * Hugging Face LLaMA layout <-> GGUF names, hyper-parameters and the q/k row permutation.
 *
 * HF applies rotary embeddings with rotate_half (pairs (i, i + d/2) of each head); GGUF's llama uses
 * adjacent pairs (2i, 2i + 1), the layout of Meta's and llama2.c's checkpoints. convert_hf_to_gguf.py
 * therefore reorders the rows of q_proj/k_proj within each head: rows of a head viewed as [2, d/2]
 * become [d/2, 2] (i.e. transposed). k uses the kv-head count. toGgufRows / toHfRows do that and back.
 */
import { fail } from '../errors.js';
import { gguf, metaNumber, type GgufValue } from './gguf.js';
import { ggufNameOf, hfNameOf, LLAMA, type ModelConfig, type ModelFamily } from '../model/family.js';

/** HF tensor name -> GGUF name (undefined for tensors GGUF drops, e.g. rotary_emb.inv_freq; fails on unknown). */
export function hfToGgufName(name: string, family: ModelFamily = LLAMA): string | undefined {
  if (/^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(name)) return undefined;
  return ggufNameOf(family, name) ?? fail(`tensor '${name}' is not part of the Hugging Face ${family.name} layout`);
}

/** GGUF name -> HF tensor name (fails on names outside the family's layout). */
export function ggufToHfName(name: string, family: ModelFamily = LLAMA): string {
  return hfNameOf(family, name) ?? fail(`GGUF tensor '${name}' has no Hugging Face ${family.name} name`);
}

/** Which permutation a GGUF-named tensor needs: q uses the head count, k the kv-head count. */
export function ropePermuteHeads(ggufName: string, hp: LlamaHparams, family: ModelFamily = LLAMA): number | undefined {
  const m = /^blk\.\d+\.(.+)\.(weight|bias)$/.exec(ggufName);
  const spec = m ? family.linears.find((s) => s.gguf === m[1]) : undefined;
  if (spec?.ropePermuted === 'heads') return hp.nHeads;
  if (spec?.ropePermuted === 'kvHeads') return hp.nKvHeads;
  return undefined;
}

/**
 * Reorder the rows of a [rows, rowLen] row-major matrix, head by head.
 * toGguf: within a head, row (h, j, i) of the [2, d/2] view goes to (h, i, j) of [d/2, 2];
 * the inverse direction swaps the roles.
 */
function permuteRows(src: Uint8Array, rows: number, rowBytes: number, nHead: number, toGguf: boolean): Uint8Array {
  if (rows % (2 * nHead) !== 0) fail(`cannot permute ${rows} rows for ${nHead} heads (not a multiple of 2 x heads)`);
  if (src.length !== rows * rowBytes) fail(`permute: ${src.length} bytes is not ${rows} rows of ${rowBytes}`);
  const half = rows / nHead / 2;
  const out = new Uint8Array(src.length);
  for (let h = 0; h < nHead; h++)
    for (let j = 0; j < 2; j++)
      for (let i = 0; i < half; i++) {
        const hf = h * 2 * half + j * half + i; // [2, half] view
        const gg = h * 2 * half + i * 2 + j; // [half, 2] view
        const [from, to] = toGguf ? [hf, gg] : [gg, hf];
        out.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
  return out;
}

/** HF q/k rows -> GGUF rows (convert_hf_to_gguf's LlamaModel.permute). */
export function toGgufRows(src: Uint8Array, rows: number, rowBytes: number, nHead: number): Uint8Array {
  return permuteRows(src, rows, rowBytes, nHead, true);
}
/** GGUF q/k rows -> HF rows (the inverse). */
export function toHfRows(src: Uint8Array, rows: number, rowBytes: number, nHead: number): Uint8Array {
  return permuteRows(src, rows, rowBytes, nHead, false);
}

/** The hyper-parameters a llama checkpoint's config.json / GGUF header / llama2.c header give: the model family's one config type's fields (model/family.ts ModelConfig), head size and RoPE base optional. */
export type LlamaHparams = Readonly<Pick<ModelConfig, 'vocabSize' | 'dim' | 'hiddenDim' | 'nLayers' | 'nHeads' | 'nKvHeads' | 'seqLen' | 'normEps'> & Partial<Pick<ModelConfig, 'ropeTheta' | 'headDim'>>>;

function num(c: Record<string, unknown>, k: string, dflt?: number): number {
  const v = c[k] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`config.json: '${k}' is missing or not a number`);
  return v;
}

/** Read the llama hyper-parameters from an HF config.json object. */
export function hparamsFromHfConfig(config: unknown): LlamaHparams {
  if (typeof config !== 'object' || config === null) fail('config.json is not a JSON object');
  const c = config as Record<string, unknown>;
  const mt = c.model_type;
  if (mt !== undefined && mt !== 'llama' && mt !== 'mistral') fail(`config.json: model_type '${String(mt)}' is not a llama model`);
  // sizes are positive integers in a sane range; heads divide the width (or head_dim is given) and
  // key/value heads divide the heads: a config that cannot describe a model is refused here, once
  const size = (k: string, dflt?: number, max = 2 ** 31 - 1): number => {
    const v = num(c, k, dflt);
    if (!(Number.isSafeInteger(v) && v >= 1 && v <= max)) fail(`config.json: '${k}' = ${v} must be an integer from 1 to ${max}`);
    return v;
  };
  const nHead = size('num_attention_heads', undefined, 1 << 16);
  const dim = size('hidden_size', undefined, 1 << 20);
  const nHeadKv = size('num_key_value_heads', nHead, 1 << 16);
  const headDim = c.head_dim === undefined || c.head_dim === null ? undefined : size('head_dim', undefined, 1 << 16);
  if (nHead % nHeadKv !== 0) fail(`config.json: num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nHeadKv}`);
  if (headDim === undefined && dim % nHead !== 0) fail(`config.json: hidden_size ${dim} is not a multiple of num_attention_heads ${nHead}`);
  const rmsEps = num(c, 'rms_norm_eps', 1e-5);
  if (!(rmsEps > 0 && rmsEps < 1)) fail(`config.json: rms_norm_eps ${rmsEps} must be in (0, 1)`);
  const ropeTheta = typeof c.rope_theta === 'number' ? c.rope_theta : undefined;
  if (ropeTheta !== undefined && !(ropeTheta > 0 && Number.isFinite(ropeTheta))) fail(`config.json: rope_theta ${ropeTheta} must be positive`);
  return {
    vocabSize: size('vocab_size', undefined, 1 << 24),
    dim,
    hiddenDim: size('intermediate_size', undefined, 1 << 22),
    nLayers: size('num_hidden_layers', undefined, 1 << 12),
    nHeads: nHead,
    nKvHeads: nHeadKv,
    seqLen: size('max_position_embeddings', 2048, 1 << 26),
    normEps: rmsEps,
    ropeTheta,
    headDim,
  };
}

/** An HF config.json object for these hyper-parameters. */
export function hfConfigFromHparams(hp: LlamaHparams, dtype = 'float32'): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: hp.vocabSize,
    hidden_size: hp.dim,
    intermediate_size: hp.hiddenDim,
    num_hidden_layers: hp.nLayers,
    num_attention_heads: hp.nHeads,
    num_key_value_heads: hp.nKvHeads,
    max_position_embeddings: hp.seqLen,
    rms_norm_eps: hp.normEps,
    rope_theta: hp.ropeTheta ?? 10000,
    hidden_act: 'silu',
    tie_word_embeddings: false,
    torch_dtype: dtype,
  };
}

/** GGUF llama.* metadata for these hyper-parameters (the keys llama.cpp's converters write). */
export function ggufLlamaMetadata(hp: LlamaHparams): [string, GgufValue][] {
  const m: [string, GgufValue][] = [
    ['llama.context_length', gguf.u32(hp.seqLen)],
    ['llama.embedding_length', gguf.u32(hp.dim)],
    ['llama.feed_forward_length', gguf.u32(hp.hiddenDim)],
    ['llama.attention.head_count', gguf.u32(hp.nHeads)],
    ['llama.attention.head_count_kv', gguf.u32(hp.nKvHeads)],
    ['llama.block_count', gguf.u32(hp.nLayers)],
    ['llama.rope.dimension_count', gguf.u32(hp.headDim ?? hp.dim / hp.nHeads)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(hp.normEps)],
  ];
  if (hp.ropeTheta !== undefined) m.push(['llama.rope.freq_base', gguf.f32(hp.ropeTheta)]);
  return m;
}

/** Hyper-parameters from GGUF metadata (architecture llama); vocab size from the token list or embedding. */
export function hparamsFromGguf(meta: Map<string, GgufValue>, vocabFallback = 0): LlamaHparams {
  const arch = meta.get('general.architecture')?.value;
  const a = typeof arch === 'string' ? arch : 'llama';
  const need = (k: string) => {
    const v = metaNumber(meta, `${a}.${k}`);
    if (v === undefined) fail(`GGUF metadata ${a}.${k} is missing`);
    return v;
  };
  const tokens = meta.get('tokenizer.ggml.tokens')?.value as { values: unknown[] } | undefined;
  const nHead = need('attention.head_count');
  const dim = need('embedding_length');
  const rot = metaNumber(meta, `${a}.rope.dimension_count`);
  return {
    vocabSize: metaNumber(meta, `${a}.vocab_size`) ?? tokens?.values.length ?? vocabFallback,
    dim,
    hiddenDim: need('feed_forward_length'),
    nLayers: need('block_count'),
    nHeads: nHead,
    nKvHeads: metaNumber(meta, `${a}.attention.head_count_kv`) ?? nHead,
    seqLen: metaNumber(meta, `${a}.context_length`) ?? 2048,
    normEps: metaNumber(meta, `${a}.attention.layer_norm_rms_epsilon`) ?? 1e-5,
    ropeTheta: metaNumber(meta, `${a}.rope.freq_base`),
    headDim: rot !== undefined && rot !== dim / nHead ? rot : undefined,
  };
}
