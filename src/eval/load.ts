/**
 * Open a model file for the runtime: a llama2.c checkpoint or a GGUF file, plus its tokenizer (GGUF metadata, or a separate tokenizer.bin / tokenizer.model).
 */
import { fail } from '../errors.js';
import { isGguf, plainValue, readGguf, type GgufFile } from '../io/gguf.js';
import { hfToGgufName, hparamsFromHfConfig, ropePermuteHeads, toGgufRows } from '../io/hf-llama.js';
import { llama2cConfig, openLlama2c } from '../io/llama2c.js';
import { openModelFile, sniffFormat, storedTensors, type ModelFile } from '../io/model-file.js';
import { dequantizePackedInt4, LOWBIT_TOKENIZER_KEY, packedInt4ConfigOf } from '../io/packed-int4.js';
import type { ByteSink } from '../io/sink.js';
import type { ByteSource } from '../io/source.js';
import { convertHfFolder, llamaRopeFreqsOfConfig } from '../io/hf-families.js';
import { familyOfHfConfig, LLAMA } from '../model/family.js';
import { readVocab, vocabFromGgufMetadata } from '../io/vocab.js';
import { MatmulEngine } from '../kernels/matmul.js';
import { Llama, llamaConfigFromGguf, type LlamaOptions } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import type { LlamaConfig, StoredTensor, Vocab } from '../model/types.js';
import { ggmlTypeByName } from '../quant/ggml/types.js';
import { isLowbitSafetensors, readLowbitSafetensors } from './load-lowbit.js';

export interface LoadedModel {
  model: Llama;
  /** undefined when the file carries no vocabulary and none was given */
  tokenizer?: Tokenizer;
  format: 'llama2c' | 'gguf' | 'safetensors';
}

/**
 * The runtime's tensors of a GGUF or llama2.c file, through the one reader of its container
 * (io/model-file.ts): with a kernel engine, each tensor's bytes go straight into the engine's memory
 * (no second copy); the metadata as plain values.
 */
async function runtimeModel(src: ByteSource, engine: MatmulEngine | null, lazyEmbedding = false): Promise<{ m: ModelFile; metadata: Map<string, unknown>; tensors: StoredTensor[] }> {
  const m = await openModelFile(src, { llama2c: openLlama2c });
  const metadata = new Map<string, unknown>();
  for (const [k, v] of m.metadata) metadata.set(k, typeof v === 'object' ? plainValue(v) : v);
  // token_embd by rows (LoadModelOptions.lazyEmbedding) when it is not the classifier too
  const lazy = lazyEmbedding && m.tensors.some((t) => t.name === 'output.weight') ? (name: string) => name === 'token_embd.weight' : undefined;
  return { m, metadata, tensors: await storedTensors(m, engine ? (n) => engine.allocBytes(n, true) : undefined, lazy) };
}

/**
 * A sink for a GGUF stream (a converter's output: the whole header in the first write, then the tensor
 * data in file order) that puts each tensor's bytes straight into its final home (the kernel engine's
 * memory when there is one), so a model converted on the fly is held once, never as a whole file too.
 */
class GgufTensorSink implements ByteSink {
  private g?: GgufFile;
  private pos = 0;
  private next = 0;
  private readonly tensors = new Map<string, StoredTensor>();
  /** the tensors by their place in the file */
  private order: GgufFile['tensors'] = [];

  constructor(
    private readonly name: string,
    private readonly engine: MatmulEngine | null,
  ) {}

  async write(bytes: Uint8Array): Promise<void> {
    if (!this.g) {
      // the header: parsed as a file that goes on past it (its tensors' data is what comes next)
      const header = bytes.slice();
      const src: ByteSource = {
        size: Number.MAX_SAFE_INTEGER,
        name: this.name,
        async read(offset, length) {
          const out = new Uint8Array(length);
          if (offset < header.length) out.set(header.subarray(offset, Math.min(header.length, offset + length)));
          return out;
        },
      };
      this.g = await readGguf(src);
      // a header cut short would have been read on as zeros: its data section would start far past it
      if (this.g.tensors.length && this.g.dataOffset >= header.length + this.g.alignment) fail(`internal: ${this.name}: the GGUF stream's first write is not its whole header`);
      this.order = [...this.g.tensors].sort((a, b) => a.fileOffset - b.fileOffset);
      this.pos = 0; // the header's bytes are skipped below as bytes before the first tensor
    }
    let o = 0;
    while (o < bytes.length) {
      const at = this.pos + o;
      const t = this.order[this.next];
      if (!t) return; // trailing padding
      if (t.byteLength === 0) {
        this.home(t);
        this.next++;
        continue;
      }
      if (at < t.fileOffset) {
        o += Math.min(bytes.length - o, t.fileOffset - at); // padding before the tensor
        continue;
      }
      const home = this.tensors.get(t.name)?.data ?? this.home(t);
      const n = Math.min(bytes.length - o, t.fileOffset + t.byteLength - at);
      home.set(bytes.subarray(o, o + n), at - t.fileOffset);
      o += n;
      if (at + n === t.fileOffset + t.byteLength) this.next++;
    }
    this.pos += bytes.length;
  }

  /** where a tensor's bytes go: kernel memory when the engine has room, else an array of its own */
  private home(t: GgufFile['tensors'][number]): Uint8Array {
    const data = this.engine?.allocBytes(t.byteLength, true) ?? new Uint8Array(t.byteLength);
    this.tensors.set(t.name, { name: t.name, type: t.type, dims: t.ne, data });
    return data;
  }

  /** the metadata (plain values) and the tensors, once every tensor's bytes have come */
  result(): { metadata: Map<string, unknown>; tensors: StoredTensor[] } {
    const g = this.g ?? fail(`internal: ${this.name}: the GGUF stream wrote nothing`);
    while (this.order[this.next]?.byteLength === 0) this.home(this.order[this.next++]);
    if (this.next !== g.tensors.length) fail(`internal: ${this.name}: the GGUF stream ended after ${this.next} of ${g.tensors.length} tensors`);
    const metadata = new Map<string, unknown>();
    for (const [k, v] of g.metadata) metadata.set(k, plainValue(v));
    return { metadata, tensors: g.tensors.map((t) => this.tensors.get(t.name)!) };
  }
}

/** The runtime's model (and the GGUF vocabulary, when present) of GGUF metadata and tensors. */
function ggufModel(g: { metadata: Map<string, unknown>; tensors: StoredTensor[] }, opts: LlamaOptions, name: string): { model: Llama; vocab?: Vocab } {
  const config = llamaConfigFromGguf(g.metadata, g.tensors);
  const model = new Llama(config, g.tensors, runOptions(config, opts, name));
  return { model, vocab: g.metadata.get('tokenizer.ggml.tokens') !== undefined ? vocabFromGgufMetadata(g.metadata) : undefined };
}

/** The most KV cache lowbit allocates (keys and values of every layer, f32): 4 GiB. */
export const MAX_KV_BYTES = 4 * 2 ** 30;

/**
 * The run options of a model with its context checked before anything is allocated: the context
 * asked for (default: the model's, at most 4096) must be a positive integer, at most the model's
 * trained context, and its KV cache at most MAX_KV_BYTES.
 */
export function runOptions<T extends LlamaOptions>(config: LlamaConfig, opts: T, name: string): T {
  const trained = Number.isSafeInteger(config.seqLen) && config.seqLen > 0 ? config.seqLen : undefined;
  const asked = opts.contextLength;
  const ctx = asked ?? Math.min(trained ?? 4096, 4096);
  if (!(Number.isSafeInteger(ctx) && ctx >= 1)) fail(`context ${ctx} must be a positive integer`);
  if (asked !== undefined && trained !== undefined && asked > trained) fail(`a context of ${asked} tokens is longer than the model's ${trained} (${name})`);
  const kvDim = config.nKvHeads * config.headDim;
  const kvBytes = 2 * config.nLayers * ctx * kvDim * 4;
  if (!(kvBytes <= MAX_KV_BYTES))
    fail(`a context of ${ctx} tokens needs ${(kvBytes / 2 ** 30).toFixed(1)} GiB of KV cache (${config.nLayers} layers x ${kvDim} values x 2, f32); at most ${MAX_KV_BYTES / 2 ** 30} GiB: give a smaller context`);
  return { ...opts, contextLength: ctx, batch: opts.batch === undefined ? undefined : Math.min(opts.batch, ctx) };
}

export interface LoadModelOptions extends LlamaOptions {
  /** tokenizer.bin / tokenizer.model (required for llama2.c and safetensors models) */
  tokenizer?: ByteSource;
  /** the config.json object of a safetensors checkpoint */
  hfConfig?: unknown;
  /**
   * GGUF with its own output.weight: read token_embd's rows when a token first uses them, not at load
   * (a run meets a few hundred of its 32 000+ rows; reading the whole table is ~16 % of a 155M model's
   * bytes). Only with a source that reads synchronously (ByteSource.readIntoSync: a Node file opened
   * for sync reads, an in-memory array), which the caller keeps open while the model is used; otherwise
   * the table is read at load as usual.
   */
  lazyEmbedding?: boolean;
}

/** the kernel engine whose memory the weights are read into, unless the reference kernels or dequantized weights are asked for */
const kernelEngine = (opts: LlamaOptions): MatmulEngine | null => (opts.kernels === 'reference' || opts.dequantize ? null : MatmulEngine.get());

/** Load a GGUF file, a llama2.c checkpoint or a single-file safetensors checkpoint (with opts.hfConfig). */
export async function loadModel(src: ByteSource, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  let vocab: Vocab | undefined;
  let loaded: Omit<LoadedModel, 'tokenizer'>;
  if (await isGguf(src)) {
    const g = ggufModel(await runtimeModel(src, kernelEngine(opts), opts.lazyEmbedding), opts, src.name);
    vocab = g.vocab;
    loaded = { model: g.model, format: 'gguf' };
  } else if ((await sniffFormat(src)) !== 'llama2c' && (await isLowbitSafetensors(src))) {
    const g = await readLowbitSafetensors(src);
    const config = llamaConfigFromGguf(g.metadata, g.tensors);
    const model = new Llama(config, g.tensors, runOptions(config, opts, src.name));
    if (g.metadata.get('tokenizer.ggml.tokens') !== undefined) vocab = vocabFromGgufMetadata(g.metadata);
    loaded = { model, format: 'safetensors' };
  } else if ((await sniffFormat(src)) !== 'llama2c') {
    if (opts.hfConfig === undefined) fail(`${src.name}: a safetensors checkpoint needs its config.json`);
    const st = await openModelFile(src);
    if (typeof opts.hfConfig === 'object' && opts.hfConfig !== null && familyOfHfConfig(opts.hfConfig as Record<string, unknown>) !== LLAMA) {
      // the other families (float or GPTQ/AWQ packed): the converter's GGUF (io/hf-families.ts; packed
      // layers dequantized to F32), streamed tensor by tensor into the runtime's memory and run as any
      // GGUF: the model is held once (no GGUF file in memory beside it)
      const sink = new GgufTensorSink(src.name, kernelEngine(opts));
      await convertHfFolder(st, opts.hfConfig, sink, { tokenizer: {}, tokenizerOptional: true });
      const g = ggufModel(sink.result(), opts, src.name);
      loaded = { model: g.model, format: 'gguf' };
      vocab = g.vocab;
    } else {
      loaded = { model: await llamaFromSafetensors(st, opts.hfConfig, opts), format: 'safetensors' };
      // a checkpoint written by `lowbit quantize --layout gptq|awq` carries the GGUF tokenizer entries
      const tok = st.metadata.get(LOWBIT_TOKENIZER_KEY);
      if (typeof tok === 'string') vocab = vocabFromGgufMetadata(parseJsonMetadata(tok, `${src.name}: ${LOWBIT_TOKENIZER_KEY}`));
    }
  } else {
    const { m, tensors } = await runtimeModel(src, kernelEngine(opts));
    const config = llama2cConfig(m.metadata);
    loaded = { model: new Llama(config, tensors, runOptions(config, opts, src.name)), format: 'llama2c' };
  }
  if (opts.tokenizer) vocab = await readVocab(opts.tokenizer, loaded.model.config.vocabSize);
  if (vocab && vocab.tokens.length !== loaded.model.config.vocabSize)
    fail(`tokenizer has ${vocab.tokens.length} tokens but the model's vocabulary is ${loaded.model.config.vocabSize}`);
  return { ...loaded, tokenizer: vocab ? new Tokenizer(vocab) : undefined };
}

export { LOWBIT_TOKENIZER_KEY } from '../io/packed-int4.js';

function parseJsonMetadata(text: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* reported below */
  }
  fail(`${what} is not a JSON object`);
}

const SAFETENSORS_TO_GGML: Readonly<Record<string, string>> = { F32: 'F32', F16: 'F16', BF16: 'BF16' };

/** The runtime's config for HF llama hyper-parameters (RoPE on adjacent pairs: q/k rows are permuted at load). */
function llamaConfigFromHf(hfConfig: unknown): LlamaConfig {
  const hp = hparamsFromHfConfig(hfConfig);
  const headDim = hp.headDim ?? hp.dim / hp.nHeads;
  return {
    dim: hp.dim,
    hiddenDim: hp.hiddenDim,
    nLayers: hp.nLayers,
    nHeads: hp.nHeads,
    nKvHeads: hp.nKvHeads,
    vocabSize: hp.vocabSize,
    seqLen: hp.seqLen,
    headDim,
    normEps: hp.normEps,
    ropeTheta: hp.ropeTheta ?? 10000,
    ropeDim: headDim,
    ropeStyle: 'normal',
  };
}

/**
 * The tensors of a Hugging Face llama checkpoint as the runtime stores them: GGUF names, q/k rows
 * permuted to GGUF's interleaved RoPE order (as convert_hf_to_gguf does). GPTQ/AWQ packed int4 layers
 * (P.qweight, P.qzeros, P.scales, P.g_idx) are dequantized to F32 one layer at a time, following
 * config.json's quantization_config for the zero-point convention; their all-zero biases are dropped.
 */
export async function hfLlamaTensors(m: ModelFile, hfConfig: unknown): Promise<StoredTensor[]> {
  if (m.format !== 'safetensors') fail(`${m.name}: expected a safetensors model, got ${m.format}`);
  const hp = hparamsFromHfConfig(hfConfig);
  const packedConfig = packedInt4ConfigOf(hfConfig);
  if (m.packedInt4Problems?.length) fail(`${m.name}: ${m.packedInt4Problems[0]}`);
  const groups = m.packedInt4 ?? [];
  if (packedConfig && !groups.length) fail(`${m.name}: config.json says ${packedConfig.method}, but the file has no packed int4 layers (P.qweight + P.scales)`);
  const f32 = ggmlTypeByName('F32')!;
  const tensors: StoredTensor[] = [];
  // Llama 3's rope_scaling: the factors as the GGUF converter stores them (rope_freqs.weight)
  const ropeFreqs = llamaRopeFreqsOfConfig(hfConfig as Record<string, unknown>, hp.headDim ?? hp.dim / hp.nHeads);
  if (ropeFreqs) tensors.push({ name: 'rope_freqs.weight', type: f32, dims: [ropeFreqs.length], data: new Uint8Array(ropeFreqs.buffer) });
  const packedParts = new Set<string>();
  const packedPrefixes = new Set(groups.map((g) => g.prefix));
  for (const g of groups) for (const t of [g.qweight, g.scales, g.qzeros, g.gIdx]) if (t) packedParts.add(t.name);
  const byName = new Map(m.tensors.map((t) => [t.name, t]));
  const toFloat = (t: { name: string }) => m.readFloat32(byName.get(t.name)!);
  for (const t of m.tensors) {
    if (packedParts.has(t.name)) {
      const g = groups.find((x) => x.qweight.name === t.name);
      if (!g) continue; // qzeros / scales / g_idx: read with their qweight
      if (packedConfig && g.layout !== packedConfig.method) fail(`${g.qweight.name}: shapes are ${g.layout}'s layout but config.json says ${packedConfig.method}`);
      const name = hfToGgufName(g.prefix + '.weight')!;
      const values = await dequantizePackedInt4(g, toFloat, { gptqZeroOffset: packedConfig?.gptqZeroOffset ?? 1 });
      let data = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      const heads = ropePermuteHeads(name, hp);
      if (heads !== undefined) data = toGgufRows(data, g.outFeatures, g.inFeatures * 4, heads);
      tensors.push({ name, type: f32, dims: [g.inFeatures, g.outFeatures], data });
      continue;
    }
    if (t.name.endsWith('.bias') && packedPrefixes.has(t.name.slice(0, -'.bias'.length))) {
      // AutoGPTQ writes a zero bias for every packed layer; llama has none
      const b = await m.readFloat32(t);
      if (b.every((x) => x === 0)) continue;
    }
    const name = hfToGgufName(t.name);
    if (name === undefined) continue;
    const typeName = SAFETENSORS_TO_GGML[t.type];
    if (!typeName) fail(`${m.name}: tensor ${t.name} has dtype ${t.type}; the runtime reads F32, F16 and BF16 safetensors (and GPTQ/AWQ packed int4 layers)`);
    const type = ggmlTypeByName(typeName)!;
    let data: Uint8Array = new Uint8Array(await m.read(t));
    const heads = ropePermuteHeads(name, hp);
    if (heads !== undefined) data = toGgufRows(data, t.shape[0], (t.shape.length === 2 ? t.shape[1] : 1) * type.typeSize, heads);
    tensors.push({ name, type, dims: [...t.shape].reverse(), data });
  }
  return tensors;
}

/**
 * A Hugging Face llama checkpoint (safetensors, opened with io/model-file's openModelFile) and its
 * config.json object. Tensors are renamed to GGUF names and q/k rows permuted to GGUF's interleaved RoPE
 * layout (as convert_hf_to_gguf does), so the runtime sees the same model as the converted GGUF.
 * GPTQ/AWQ int4 layers are dequantized to F32 at load (see hfLlamaTensors).
 */
export async function llamaFromSafetensors(m: ModelFile, hfConfig: unknown, opts: LlamaOptions = {}): Promise<Llama> {
  const config = llamaConfigFromHf(hfConfig);
  const tensors = await hfLlamaTensors(m, hfConfig);
  return new Llama(config, tensors, runOptions(config, opts, m.name));
}
