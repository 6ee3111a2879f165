/**
 * llama2.c checkpoints (karpathy/llama2.c `run.c`, legacy "version 0" export): the one reader, a lazy
 * view for the model-file API (GGUF tensor names and byte offsets, nothing read but the 28-byte
 * header), and `readLlama2c`, the same view with every tensor's bytes read (the runtime's input).
 *
 * Layout, all little-endian:
 *   header: 7 x int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *           (vocab_size < 0 means a separate classifier follows; |vocab_size| is the vocabulary)
 *   float32 arrays, each kind for ALL layers before the next kind (run.c memory_map_weights):
 *     token_embedding [vocab][dim]
 *     rms_att [layers][dim]
 *     wq [layers][dim][dim]   wk [layers][kvDim][dim]   wv [layers][kvDim][dim]   wo [layers][dim][dim]
 *     rms_ffn [layers][dim]
 *     w1 [layers][hidden][dim]   w2 [layers][dim][hidden]   w3 [layers][hidden][dim]
 *     rms_final [dim]
 *     freq_cis_real [seq_len][headDim/2]   freq_cis_imag [seq_len][headDim/2]   (unused: RoPE is recomputed)
 *     wcls [vocab][dim]   (only when vocab_size < 0)
 * kvDim = n_kv_heads * dim / n_heads. Tensors come out with GGUF names and GGUF dims (innermost first).
 */
import { fail } from '../errors.js';
import type { LlamaConfig, StoredTensor } from '../model/types.js';
import { openModelFile, storedTensors, type ModelTensor } from './model-file.js';
import type { ByteSource } from './source.js';

/** The header's seven numbers, under the runtime config's names, and whether the classifier is token_embd. */
export type Llama2cHeader = Pick<LlamaConfig, 'dim' | 'hiddenDim' | 'nLayers' | 'nHeads' | 'nKvHeads' | 'vocabSize' | 'seqLen'> & { sharedClassifier: boolean };

export interface Llama2cModel {
  config: LlamaConfig;
  /** GGUF-named tensors; no output.weight when the classifier is shared with token_embd.weight */
  tensors: StoredTensor[];
  sharedClassifier: boolean;
}

const HEADER_BYTES = 28;
/** "ak42": the magic of llama2.c's newer export formats (version 1/2), which this reader does not take */
const AK42_MAGIC = 0x616b3432;

/** Parse and validate the 7-int header; returns it, the runtime's config and the expected file size. */
export function parseLlama2cHeader(b: Uint8Array, name: string, fileSize: number): { header: Llama2cHeader; config: LlamaConfig; expectedBytes: number } {
  if (b.length < HEADER_BYTES) fail(`${name}: ${fileSize} bytes is too short for a llama2.c checkpoint (28-byte header)`);
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  if (h[0] === AK42_MAGIC) fail(`${name}: llama2.c export version 1/2 ("ak42" magic) is not supported; use the legacy (version 0) export`);
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h;
  const bad = (what: string, v: number) => fail(`${name}: not a llama2.c checkpoint: ${what} ${v} is out of range`);
  if (!(dim > 0 && dim <= 65536)) bad('dim', dim);
  if (!(hiddenDim > 0 && hiddenDim <= 1 << 20)) bad('hidden_dim', hiddenDim);
  if (!(nLayers > 0 && nLayers <= 1024)) bad('n_layers', nLayers);
  if (!(nHeads > 0 && dim % nHeads === 0)) bad('n_heads', nHeads);
  if (!(nKvHeads > 0 && nHeads % nKvHeads === 0)) bad('n_kv_heads', nKvHeads);
  if (vocabRaw === 0 || Math.abs(vocabRaw) > 1 << 24) bad('vocab_size', vocabRaw);
  if (!(seqLen > 0 && seqLen <= 1 << 24)) bad('seq_len', seqLen);
  const vocabSize = Math.abs(vocabRaw);
  const shared = vocabRaw > 0;
  const headDim = dim / nHeads;
  if (headDim % 2 !== 0) fail(`${name}: head size ${headDim} (dim ${dim} / n_heads ${nHeads}) must be even for RoPE`);
  const kvDim = nKvHeads * headDim;
  const floats = vocabSize * dim + nLayers * (2 * dim + 2 * dim * dim + 2 * kvDim * dim + 3 * hiddenDim * dim) + dim + seqLen * headDim + (shared ? 0 : vocabSize * dim);
  const dims = { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen };
  const header: Llama2cHeader = { ...dims, sharedClassifier: shared };
  return { header, config: configOf(dims), expectedBytes: HEADER_BYTES + floats * 4 };
}

/** The runtime's config of the header's numbers (run.c's fixed choices: eps 1e-5, RoPE base 10000, normal pairs). */
function configOf(dims: Omit<Llama2cHeader, 'sharedClassifier'>): LlamaConfig {
  const headDim = dims.dim / dims.nHeads;
  return { ...dims, headDim, normEps: 1e-5, ropeTheta: 10000, ropeDim: headDim, ropeStyle: 'normal' };
}

/** The runtime's config of a llama2.c ModelFile's metadata (openLlama2c's header fields). */
export function llama2cConfig(metadata: ReadonlyMap<string, unknown>): LlamaConfig {
  const n = (k: string) => Number(metadata.get(k));
  return configOf({ dim: n('dim'), hiddenDim: n('hidden_dim'), nLayers: n('n_layers'), nHeads: n('n_heads'), nKvHeads: n('n_kv_heads'), vocabSize: n('vocab_size'), seqLen: n('seq_len') });
}

/** Tensors of a llama2.c file in the order llama.cpp's convert-llama2c-to-ggml writes them (no output.weight when shared). */
export async function openLlama2c(src: ByteSource): Promise<{ metadata: Map<string, number>; tensors: ModelTensor[]; header: Llama2cHeader; config: LlamaConfig }> {
  if (src.size < HEADER_BYTES) fail(`${src.name}: ${src.size} bytes is too short for a llama2.c checkpoint (28-byte header)`);
  const { header: h, config, expectedBytes } = parseLlama2cHeader(await src.read(0, HEADER_BYTES), src.name, src.size);
  if (src.size !== expectedBytes)
    fail(
      `${src.name}: size ${src.size} bytes does not match the header (dim ${h.dim}, hidden ${h.hiddenDim}, ${h.nLayers} layers, ` +
        `${h.nHeads}/${h.nKvHeads} heads, vocab ${h.vocabSize}${h.sharedClassifier ? '' : ' + separate classifier'}, seq_len ${h.seqLen}) which needs ${expectedBytes} bytes`,
    );
  const { headDim } = config;
  const kvDim = h.nKvHeads * headDim;
  const at = new Map<string, ModelTensor>();
  let offset = HEADER_BYTES;
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
  offset += h.seqLen * headDim * 4; // freq_cis_real + freq_cis_imag
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
  return { metadata, tensors: order.map((n) => at.get(n)!), header: h, config };
}

/** Read a llama2.c checkpoint: config + GGUF-named F32 tensors (its ModelFile's tensors, read: io/model-file.ts storedTensors). */
export async function readLlama2c(src: ByteSource): Promise<Llama2cModel> {
  const m = await openModelFile(src, { llama2c: openLlama2c, as: 'llama2c' });
  return { config: llama2cConfig(m.metadata), tensors: await storedTensors(m), sharedClassifier: m.metadata.get('shared_classifier') === 1 };
}
