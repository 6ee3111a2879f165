/**
 * A trained LLaMA as GGUF: the metadata llama.cpp's llama architecture reads, the tokenizer, and the
 * tensors in GGUF naming (dims innermost first: a (rows, cols) weight is ne = [cols, rows]).
 */
import { tokenizerFromVocab } from './convert.js';
import { gguf, GgufWriter, type GgufTensorSpec, type GgufValue } from './gguf.js';
import type { ByteSink } from './sink.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import type { LlamaConfig, Vocab } from '../model/types.js';
export { llamaTensorShapes } from '../model/llama-shapes.js';
import { fail } from '../errors.js';

/** GGUF metadata of a llama model with `c` (general.file_type 0 = all F32; pass another for quantized files). */
export function llamaGgufMetadata(c: LlamaConfig, vocab: Vocab | undefined, name: string, fileType = 0, extra: [string, GgufValue][] = []): [string, GgufValue][] {
  if (c.ropeStyle !== 'normal') fail('GGUF llama output needs the normal (interleaved) RoPE layout');
  const meta: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(name)],
    ['llama.context_length', gguf.u32(c.seqLen)],
    ['llama.embedding_length', gguf.u32(c.dim)],
    ['llama.feed_forward_length', gguf.u32(c.hiddenDim)],
    ['llama.block_count', gguf.u32(c.nLayers)],
    ['llama.attention.head_count', gguf.u32(c.nHeads)],
    ['llama.attention.head_count_kv', gguf.u32(c.nKvHeads)],
    ['llama.rope.dimension_count', gguf.u32(c.ropeDim)],
    ['llama.rope.freq_base', gguf.f32(c.ropeTheta)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(c.normEps)],
    ['general.file_type', gguf.u32(fileType)],
  ];
  if (c.headDim * c.nHeads !== c.dim) meta.push(['llama.attention.key_length', gguf.u32(c.headDim)], ['llama.attention.value_length', gguf.u32(c.headDim)]);
  if (vocab) meta.push(['llama.vocab_size', gguf.u32(vocab.tokens.length)], ...tokenizerFromVocab(vocab));
  return [...meta, ...extra];
}

export interface OutTensor {
  name: string;
  ne: readonly number[];
  type: GgmlTypeInfo;
  data: Uint8Array;
}

/** Write a GGUF of named tensors (already encoded in their type) with llama metadata. */
export async function writeLlamaGguf(sink: ByteSink, metadata: [string, GgufValue][], tensors: readonly OutTensor[]): Promise<void> {
  const specs: GgufTensorSpec[] = tensors.map((t) => ({ name: t.name, ne: t.ne, type: t.type }));
  const w = new GgufWriter(sink, metadata, specs);
  await w.begin();
  for (const t of tensors) await w.write(t.data);
  await w.end();
}

/** f32 tensors as OutTensors */
export function f32Tensor(name: string, ne: readonly number[], values: Float32Array): OutTensor {
  const n = ne.reduce((a, b) => a * b, 1);
  if (values.length !== n) fail(`tensor ${name}: ${values.length} values for shape [${ne.join(', ')}]`);
  return { name, ne, type: ggmlTypeByName('F32') as GgmlTypeInfo, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}

/** The parameters of a trained model as F32 GGUF tensors (views, no copy). */
export function paramTensors(tensors: readonly { name: string; ne: readonly number[]; offset: number; size: number }[], params: Float32Array | Float64Array): OutTensor[] {
  return tensors.map((t) => f32Tensor(t.name, t.ne, params instanceof Float32Array ? params.subarray(t.offset, t.offset + t.size) : Float32Array.from(params.subarray(t.offset, t.offset + t.size))));
}
