/**
 * A lazy view of a llama2.c (legacy version 0) checkpoint for the model-file API: tensor names in
 * GGUF naming and byte offsets, nothing read but the 28-byte header. (src/io/llama2c.ts, owned by the
 * runtime, loads the weights for inference.)
 *
 * Layout: 7 x int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab < 0
 * = separate classifier), then float32 arrays kind by kind over all layers: token_embedding, rms_att,
 * wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real, freq_cis_imag, [wcls].
 */
import { fail } from '../errors.js';
import type { ModelTensor } from './model-file.js';
import type { ByteSource } from './source.js';

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

export function parseLlama2cHeaderLazy(b: Uint8Array, name: string, fileSize: number): { header: Llama2cHeader; expectedBytes: number } {
  if (b.length < 28) fail(`${name}: ${fileSize} bytes is too short for a llama2.c checkpoint (28-byte header)`);
  const dv = new DataView(b.buffer, b.byteOffset, 28);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  if (h[0] === 0x616b3432) fail(`${name}: llama2.c export version 1/2 ("ak42" magic) is not supported`);
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h;
  const bad = (what: string, v: number) => fail(`${name}: not a llama2.c checkpoint: ${what} ${v} is out of range`);
  if (dim <= 0 || dim > 65536) bad('dim', dim);
  if (hiddenDim <= 0 || hiddenDim > 1 << 20) bad('hidden_dim', hiddenDim);
  if (nLayers <= 0 || nLayers > 1024) bad('n_layers', nLayers);
  if (nHeads <= 0 || dim % nHeads !== 0) bad('n_heads', nHeads);
  if (nKvHeads <= 0 || nHeads % nKvHeads !== 0) bad('n_kv_heads', nKvHeads);
  if (vocabRaw === 0 || Math.abs(vocabRaw) > 1 << 24) bad('vocab_size', vocabRaw);
  if (seqLen <= 0 || seqLen > 1 << 24) bad('seq_len', seqLen);
  const vocabSize = Math.abs(vocabRaw);
  const shared = vocabRaw > 0;
  const headDim = dim / nHeads;
  const kvDim = nKvHeads * headDim;
  const floats =
    vocabSize * dim +
    nLayers * (2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * hiddenDim * dim) +
    dim +
    seqLen * headDim +
    (shared ? 0 : vocabSize * dim);
  const expectedBytes = 28 + floats * 4;
  return { header: { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen, sharedClassifier: shared }, expectedBytes };
}

/** Tensors of a llama2.c file in the order llama.cpp's convert-llama2c-to-ggml writes them (no output.weight when shared). */
export async function openLlama2cLazy(src: ByteSource): Promise<{ metadata: Map<string, number>; tensors: ModelTensor[]; header: Llama2cHeader }> {
  if (src.size < 28) fail(`${src.name}: ${src.size} bytes is too short for a llama2.c checkpoint (28-byte header)`);
  const { header: h, expectedBytes } = parseLlama2cHeaderLazy(await src.read(0, 28), src.name, src.size);
  if (src.size !== expectedBytes) fail(`${src.name}: size ${src.size} bytes does not match the llama2.c header, which needs ${expectedBytes} bytes`);
  const headDim = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headDim;
  const at = new Map<string, ModelTensor>();
  let offset = 28;
  const put = (name: string, ne: number[]) => {
    const n = ne.reduce((a, b) => a * b, 1);
    at.set(name, { name, ne, shape: [...ne].reverse(), type: 'F32', nElements: n, byteOffset: offset, byteLength: n * 4, source: src });
    offset += n * 4;
  };
  const perLayer = (suffix: string, ne: number[]) => {
    for (let l = 0; l < h.nLayers; l++) put(`blk.${l}.${suffix}`, ne);
  };
  put('token_embd.weight', [h.dim, h.vocabSize]);
  perLayer('attn_norm.weight', [h.dim]);
  perLayer('attn_q.weight', [h.dim, h.dim]);
  perLayer('attn_k.weight', [h.dim, kvDim]);
  perLayer('attn_v.weight', [h.dim, kvDim]);
  perLayer('attn_output.weight', [h.dim, h.dim]);
  perLayer('ffn_norm.weight', [h.dim]);
  perLayer('ffn_gate.weight', [h.dim, h.hiddenDim]);
  perLayer('ffn_down.weight', [h.hiddenDim, h.dim]);
  perLayer('ffn_up.weight', [h.dim, h.hiddenDim]);
  put('output_norm.weight', [h.dim]);
  offset += h.seqLen * headDim * 4;
  if (!h.sharedClassifier) put('output.weight', [h.dim, h.vocabSize]);
  // a shared classifier is token_embd.weight itself: not listed (convert adds the alias GGUF needs)
  const order = ['token_embd.weight', 'output_norm.weight', ...(h.sharedClassifier ? [] : ['output.weight'])];
  for (let l = 0; l < h.nLayers; l++)
    for (const s of ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'attn_norm', 'ffn_gate', 'ffn_down', 'ffn_up', 'ffn_norm']) order.push(`blk.${l}.${s}.weight`);
  const metadata = new Map<string, number>([
    ['dim', h.dim],
    ['hidden_dim', h.hiddenDim],
    ['n_layers', h.nLayers],
    ['n_heads', h.nHeads],
    ['n_kv_heads', h.nKvHeads],
    ['vocab_size', h.vocabSize],
    ['seq_len', h.seqLen],
    ['shared_classifier', h.sharedClassifier ? 1 : 0],
  ]);
  return { metadata, tensors: order.map((n) => at.get(n)!), header: h };
}
