/**
 * Open a model file for the runtime: a llama2.c checkpoint or a GGUF file, plus its tokenizer (GGUF metadata, or a separate tokenizer.bin / tokenizer.model).
 */
import { fail } from '../errors.js';
import { isGguf, plainValue, readGguf, readGgufTensor } from '../io/gguf.js';
import { hfToGgufName, hparamsFromHfConfig, ropePermuteHeads, toGgufRows } from '../io/hf-llama.js';
import { readLlama2c } from '../io/llama2c.js';
import { openModelFile, sniffFormat, type ModelFile } from '../io/model-file.js';
import type { ByteSource } from '../io/source.js';
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
 * GGUF metadata as plain values and the tensors with their bytes. With a kernel engine and a source
 * that can read into a given array, the bytes go straight into the engine's memory (no second copy).
 */
async function readGgufModel(src: ByteSource, engine: MatmulEngine | null): Promise<{ metadata: Map<string, unknown>; tensors: StoredTensor[] }> {
  const g = await readGguf(src);
  const metadata = new Map<string, unknown>();
  for (const [k, v] of g.metadata) metadata.set(k, plainValue(v));
  const tensors: StoredTensor[] = [];
  for (const t of g.tensors) {
    const direct = engine && src.readInto ? engine.allocBytes(t.byteLength) : null;
    if (direct) await src.readInto!(t.fileOffset, direct);
    const bytes = direct ?? (await readGgufTensor(g, t));
    tensors.push({ name: t.name, type: t.type, dims: t.ne, data: bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes) });
  }
  return { metadata, tensors };
}

export interface LoadModelOptions extends LlamaOptions {
  /** tokenizer.bin / tokenizer.model (required for llama2.c and safetensors models) */
  tokenizer?: ByteSource;
  /** the config.json object of a safetensors checkpoint */
  hfConfig?: unknown;
}

/** Load a GGUF file, a llama2.c checkpoint or a single-file safetensors checkpoint (with opts.hfConfig). */
export async function loadModel(src: ByteSource, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  let vocab: Vocab | undefined;
  let loaded: Omit<LoadedModel, 'tokenizer'>;
  if (await isGguf(src)) {
    const g = await readGgufModel(src, opts.kernels === 'reference' || opts.dequantize ? null : MatmulEngine.get());
    const config = llamaConfigFromGguf(g.metadata, g.tensors);
    const model = new Llama(config, g.tensors, { contextLength: Math.min(config.seqLen, 4096), ...opts });
    if (g.metadata.get('tokenizer.ggml.tokens') !== undefined) vocab = vocabFromGgufMetadata(g.metadata);
    loaded = { model, format: 'gguf' };
  } else if ((await sniffFormat(src)) !== 'llama2c' && (await isLowbitSafetensors(src))) {
    const g = await readLowbitSafetensors(src);
    const config = llamaConfigFromGguf(g.metadata, g.tensors);
    const model = new Llama(config, g.tensors, { contextLength: Math.min(config.seqLen, 4096), ...opts });
    if (g.metadata.get('tokenizer.ggml.tokens') !== undefined) vocab = vocabFromGgufMetadata(g.metadata);
    loaded = { model, format: 'safetensors' };
  } else if ((await sniffFormat(src)) !== 'llama2c') {
    if (opts.hfConfig === undefined) fail(`${src.name}: a safetensors checkpoint needs its config.json`);
    loaded = { model: await llamaFromSafetensors(await openModelFile(src), opts.hfConfig, opts), format: 'safetensors' };
  } else {
    const m = await readLlama2c(src);
    loaded = { model: new Llama(m.config, m.tensors, opts), format: 'llama2c' };
  }
  if (opts.tokenizer) vocab = await readVocab(opts.tokenizer, loaded.model.config.vocabSize);
  if (vocab && vocab.tokens.length !== loaded.model.config.vocabSize)
    fail(`tokenizer has ${vocab.tokens.length} tokens but the model's vocabulary is ${loaded.model.config.vocabSize}`);
  return { ...loaded, tokenizer: vocab ? new Tokenizer(vocab) : undefined };
}

const SAFETENSORS_TO_GGML: Readonly<Record<string, string>> = { F32: 'F32', F16: 'F16', BF16: 'BF16' };

/**
 * A Hugging Face llama checkpoint (safetensors, opened with io/model-file's openModelFile) and its
 * config.json object. Tensors are renamed to GGUF names and q/k rows permuted to GGUF's interleaved RoPE
 * layout (as convert_hf_to_gguf does), so the runtime sees the same model as the converted GGUF.
 */
export async function llamaFromSafetensors(m: ModelFile, hfConfig: unknown, opts: LlamaOptions = {}): Promise<Llama> {
  if (m.format !== 'safetensors') fail(`${m.name}: expected a safetensors model, got ${m.format}`);
  const hp = hparamsFromHfConfig(hfConfig);
  const headDim = hp.headDim ?? hp.dim / hp.nHead;
  const config: LlamaConfig = {
    dim: hp.dim,
    hiddenDim: hp.hiddenDim,
    nLayers: hp.nLayers,
    nHeads: hp.nHead,
    nKvHeads: hp.nHeadKv,
    vocabSize: hp.vocabSize,
    seqLen: hp.contextLength,
    headDim,
    normEps: hp.rmsEps,
    ropeTheta: hp.ropeTheta ?? 10000,
    ropeDim: headDim,
    ropeStyle: 'normal',
  };
  const tensors: StoredTensor[] = [];
  for (const t of m.tensors) {
    const name = hfToGgufName(t.name);
    if (name === undefined) continue;
    const typeName = SAFETENSORS_TO_GGML[t.type];
    if (!typeName) fail(`${m.name}: tensor ${t.name} has dtype ${t.type}; the runtime reads F32, F16 and BF16 safetensors`);
    const type = ggmlTypeByName(typeName)!;
    let data: Uint8Array = new Uint8Array(await m.read(t));
    const heads = ropePermuteHeads(name, hp);
    if (heads !== undefined && t.shape.length === 2) data = toGgufRows(data, t.shape[0], t.shape[1] * type.typeSize, heads);
    tensors.push({ name, type, dims: [...t.shape].reverse(), data });
  }
  return new Llama(config, tensors, { contextLength: Math.min(config.seqLen, 4096), ...opts });
}
