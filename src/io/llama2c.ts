/**
 * llama2.c checkpoints (karpathy/llama2.c `run.c`, legacy "version 0" export), read through a ByteSource.
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
import { ggmlTypeByName } from '../quant/ggml/types.js';
import type { ByteSource } from './source.js';

export interface Llama2cModel {
  config: LlamaConfig;
  /** GGUF-named tensors; no output.weight when the classifier is shared with token_embd.weight */
  tensors: StoredTensor[];
  sharedClassifier: boolean;
}

const HEADER_BYTES = 28;
/** "ak42": the magic of llama2.c's newer export formats (version 1/2), which this reader does not take */
const AK42_MAGIC = 0x616b3432;

/** Parse and validate the 7-int header; returns the config and the expected file size. */
export function parseLlama2cHeader(header: Uint8Array, name: string, fileSize: number): { config: LlamaConfig; shared: boolean; expectedBytes: number } {
  if (header.length < HEADER_BYTES) fail(`${name}: ${fileSize} bytes is too short for a llama2.c checkpoint (28-byte header)`);
  const dv = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  if (h[0] === AK42_MAGIC) fail(`${name}: llama2.c export version 1/2 ("ak42" magic) is not supported; use the legacy (version 0) export`);
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h;
  const bad = (what: string, v: number) => fail(`${name}: not a llama2.c checkpoint: ${what} = ${v} in the header`);
  if (!(dim > 0 && dim <= 1 << 16)) bad('dim', dim);
  if (!(hiddenDim > 0 && hiddenDim <= 1 << 18)) bad('hidden_dim', hiddenDim);
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
  const perLayer = dim + dim * dim + 2 * kvDim * dim + dim * dim + dim + 3 * hiddenDim * dim;
  const floats = vocabSize * dim + nLayers * perLayer + dim + seqLen * headDim + (shared ? 0 : vocabSize * dim);
  const config: LlamaConfig = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen,
    headDim,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeDim: headDim,
    ropeStyle: 'normal',
  };
  return { config, shared, expectedBytes: HEADER_BYTES + floats * 4 };
}

/** Read a llama2.c checkpoint: config + GGUF-named F32 tensors. */
export async function readLlama2c(src: ByteSource): Promise<Llama2cModel> {
  if (src.size < HEADER_BYTES) fail(`${src.name}: ${src.size} bytes is too short for a llama2.c checkpoint (28-byte header)`);
  const { config, shared, expectedBytes } = parseLlama2cHeader(await src.read(0, HEADER_BYTES), src.name, src.size);
  if (src.size !== expectedBytes) {
    fail(
      `${src.name}: size ${src.size} bytes does not match the header (dim ${config.dim}, hidden ${config.hiddenDim}, ` +
        `${config.nLayers} layers, ${config.nHeads}/${config.nKvHeads} heads, vocab ${config.vocabSize}${shared ? '' : ' + separate classifier'}, ` +
        `seq_len ${config.seqLen}) which needs ${expectedBytes} bytes`,
    );
  }
  const { dim, hiddenDim, nLayers, vocabSize, seqLen, headDim } = config;
  const kvDim = config.nKvHeads * headDim;
  const f32 = ggmlTypeByName('F32')!;
  const tensors: StoredTensor[] = [];
  let offset = HEADER_BYTES;
  // one read per tensor kind (all layers), sliced into per-layer tensors
  const take = async (count: number): Promise<Uint8Array> => {
    const bytes = await src.read(offset, count * 4);
    offset += count * 4;
    return bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes) /* a copy (Buffer.slice would not copy) */;
  };
  const perLayer = async (suffix: string, dims: number[]) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const all = await take(nLayers * n);
    for (let l = 0; l < nLayers; l++) {
      tensors.push({ name: `blk.${l}.${suffix}`, type: f32, dims, data: all.subarray(l * n * 4, (l + 1) * n * 4) });
    }
  };
  tensors.push({ name: 'token_embd.weight', type: f32, dims: [dim, vocabSize], data: await take(vocabSize * dim) });
  await perLayer('attn_norm.weight', [dim]);
  await perLayer('attn_q.weight', [dim, dim]);
  await perLayer('attn_k.weight', [dim, kvDim]);
  await perLayer('attn_v.weight', [dim, kvDim]);
  await perLayer('attn_output.weight', [dim, dim]);
  await perLayer('ffn_norm.weight', [dim]);
  await perLayer('ffn_gate.weight', [dim, hiddenDim]);
  await perLayer('ffn_down.weight', [hiddenDim, dim]);
  await perLayer('ffn_up.weight', [dim, hiddenDim]);
  tensors.push({ name: 'output_norm.weight', type: f32, dims: [dim], data: await take(dim) });
  offset += seqLen * headDim * 4; // freq_cis_real + freq_cis_imag
  if (!shared) tensors.push({ name: 'output.weight', type: f32, dims: [dim, vocabSize], data: await take(vocabSize * dim) });
  return { config, tensors, sharedClassifier: shared };
}
