/**
 * Streaming model conversion: any ModelFile -> GGUF v3 or safetensors, tensor by tensor in bounded
 * chunks (constant memory, except q/k tensors that need a row permutation, read whole).
 *
 * Conventions follow llama.cpp's converters: 2-D+ float tensors take the requested type, 1-D tensors
 * (norms) stay F32; block-quantized tensors are copied unchanged. HF-named llama tensors are renamed
 * and their q/k rows permuted (see hf-llama.ts); GGUF metadata is kept verbatim.
 */
import { fail } from '../errors.js';
import { gguf, GgufType, GgufWriter, type GgufValue } from './gguf.js';
import { ggufLlamaMetadata, ggufToHfName, hfConfigFromHparams, hfToGgufName, hparamsFromGguf, hparamsFromHfConfig, ropePermuteHeads, toGgufRows, toHfRows, type LlamaHparams } from './hf-llama.js';
import type { Vocab } from '../model/types.js';
import type { ModelFile, ModelTensor } from './model-file.js';
import { dequantizePackedInt4, packedInt4ConfigOf, type PackedInt4Group } from './packed-int4.js';
import { SafetensorsWriter } from './safetensors.js';
import type { ByteSink } from './sink.js';
import { FLOAT_KIND_BYTES, fromFloat32, ggmlInfo, isFloatKind, toFloat32 } from './tensor-data.js';

export type FloatType = 'F32' | 'F16' | 'BF16';

export interface ConvertOptions {
  readonly to: 'gguf' | 'safetensors';
  /** type of 2-D+ float tensors (default: keep F32/F16/BF16 as they are) */
  readonly type?: FloatType;
  /** GGUF tokenizer.* entries to embed (from tokenizerFromLlama2c or another GGUF) */
  readonly tokenizer?: readonly [string, GgufValue][];
  /** HF config.json object, needed for safetensors llama input -> GGUF */
  readonly hfConfig?: unknown;
  /** bytes read per chunk (default 16 MiB) */
  readonly chunkBytes?: number;
}

export interface ConvertResult {
  readonly tensors: number;
  readonly bytesWritten: number;
  readonly hfConfig?: Record<string, unknown>;
}

interface Plan {
  readonly src: ModelTensor;
  readonly name: string;
  /** output shape, row-major */
  readonly shape: number[];
  /** output element kind (GGML type name; for safetensors a dtype) */
  readonly kind: string;
  /** rows permuted with this many heads */
  readonly permute?: { heads: number; toGguf: boolean };
  /** a GPTQ/AWQ packed int4 layer (src is its qweight), dequantized whole */
  readonly packed?: PackedInt4Group;
}

// llama.cpp's token types (sentencepiece ModelProto piece types)
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

/**
 * GGUF tokenizer entries from a llama2.c tokenizer.bin, as convert-llama2c-to-ggml builds them:
 * ids 0/1/2 are <unk>/<s>/</s>, byte pieces <0xHH> are BYTE, spaces become U+2581.
 * Returns [head entries (tokens, scores, token_type, model), special-token entries].
 */
export function tokenizerFromLlama2c(bytes: Uint8Array, vocabSize: number, name = 'tokenizer.bin'): { head: [string, GgufValue][]; special: [string, GgufValue][] } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) fail(`${name}: too short for a llama2.c tokenizer`);
  let p = 4; // max_token_length (unused)
  const tokens: string[] = [];
  const scores = new Float32Array(vocabSize);
  const types = new Int32Array(vocabSize);
  const dec = new TextDecoder();
  for (let id = 0; id < vocabSize; id++) {
    if (p + 8 > bytes.length) fail(`${name}: truncated at token ${id} of ${vocabSize}`);
    scores[id] = dv.getFloat32(p, true);
    const len = dv.getInt32(p + 4, true);
    p += 8;
    if (len < 0 || p + len > bytes.length) fail(`${name}: token ${id} length ${len} runs past the end of the file`);
    let text = dec.decode(bytes.subarray(p, p + len));
    p += len;
    let type = TOKEN_NORMAL;
    if (id === 0) [text, type] = ['<unk>', TOKEN_UNKNOWN];
    else if (id === 1) [text, type] = ['<s>', TOKEN_CONTROL];
    else if (id === 2) [text, type] = ['</s>', TOKEN_CONTROL];
    else if (text === '') type = TOKEN_CONTROL;
    else if (/^<0x[0-9a-fA-F]{1,2}/.test(text)) type = TOKEN_BYTE;
    tokens.push(text.replaceAll(' ', '\u2581'));
    types[id] = type;
  }
  if (p !== bytes.length) {
    // more tokens follow: a tokenizer of a larger vocabulary (count them for the message)
    let more = 0;
    while (p + 8 <= bytes.length) {
      const len = dv.getInt32(p + 4, true);
      if (len < 0 || p + 8 + len > bytes.length) break;
      p += 8 + len;
      more++;
    }
    fail(`${name}: a tokenizer of ${vocabSize + more}${p !== bytes.length ? '+' : ''} tokens, but the model's vocabulary is ${vocabSize}: give the model's own tokenizer`);
  }
  return {
    head: [
      ['tokenizer.ggml.tokens', gguf.strings(tokens)],
      ['tokenizer.ggml.scores', gguf.f32s(scores)],
      ['tokenizer.ggml.token_type', gguf.i32s(types)],
      ['tokenizer.ggml.model', gguf.str('llama')],
    ],
    special: [
      ['tokenizer.ggml.unknown_token_id', gguf.u32(0)],
      ['tokenizer.ggml.bos_token_id', gguf.u32(1)],
      ['tokenizer.ggml.eos_token_id', gguf.u32(2)],
      ['tokenizer.ggml.seperator_token_id', gguf.u32(0xffffffff)],
      ['tokenizer.ggml.padding_token_id', gguf.u32(0xffffffff)],
    ],
  };
}

/**
 * GGUF tokenizer entries from a parsed sentencepiece vocabulary (tokenizer.model), with the keys
 * llama.cpp's convert_hf_to_gguf.py writes for the llama (SPM) tokenizer.
 */
export function tokenizerFromVocab(v: Vocab): [string, GgufValue][] {
  if (v.model === 'gpt2') {
    // convert_hf_to_gguf's _set_vocab_gpt2: no scores, merges as "left right"
    return [
      ['tokenizer.ggml.model', gguf.str('gpt2')],
      ['tokenizer.ggml.pre', gguf.str(v.pre ?? 'default')],
      ['tokenizer.ggml.tokens', gguf.strings([...v.tokens])],
      ['tokenizer.ggml.token_type', gguf.i32s(Int32Array.from(v.types))],
      ['tokenizer.ggml.merges', gguf.strings([...(v.merges ?? [])])],
      ['tokenizer.ggml.bos_token_id', gguf.u32(v.bos)],
      ['tokenizer.ggml.eos_token_id', gguf.u32(v.eos)],
      ['tokenizer.ggml.add_bos_token', gguf.bool(v.addBos)],
    ];
  }
  return [
    ['tokenizer.ggml.model', gguf.str('llama')],
    ['tokenizer.ggml.tokens', gguf.strings([...v.tokens])],
    ['tokenizer.ggml.scores', gguf.f32s(Float32Array.from(v.scores))],
    ['tokenizer.ggml.token_type', gguf.i32s(Int32Array.from(v.types))],
    ['tokenizer.ggml.bos_token_id', gguf.u32(v.bos)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(v.eos)],
    ['tokenizer.ggml.unknown_token_id', gguf.u32(v.unk)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(v.addBos)],
    ['tokenizer.ggml.add_eos_token', gguf.bool(false)],
    ['tokenizer.ggml.add_space_prefix', gguf.bool(v.addSpacePrefix)],
  ];
}

/** The tokenizer.* entries of a GGUF file's metadata, verbatim. */
export function tokenizerFromGguf(meta: Map<string, GgufValue>): [string, GgufValue][] {
  return [...meta].filter(([k]) => k.startsWith('tokenizer.'));
}

function outKind(t: ModelTensor, want: FloatType | undefined, to: 'gguf' | 'safetensors'): string {
  const isFloat = isFloatKind(t.type);
  if (!isFloat) {
    if (to === 'safetensors' && ggmlBlockType(t.type)) fail(`tensor '${t.name}' is ${t.type}; safetensors cannot hold GGML block types (dequantize first)`);
    if (to === 'gguf' && !ggmlBlockType(t.type) && !['I8', 'I16', 'I32', 'I64', 'F64'].includes(t.type))
      fail(`tensor '${t.name}' has dtype ${t.type}, which GGUF cannot store`);
    return t.type;
  }
  if (!want) return t.type;
  if (to === 'gguf' && t.shape.length <= 1) return 'F32';
  return want;
}

function ggmlBlockType(name: string): boolean {
  try {
    return ggmlInfo(name).blockSize > 1;
  } catch {
    return false;
  }
}

function elementBytes(kind: string): number {
  if (kind in FLOAT_KIND_BYTES) return FLOAT_KIND_BYTES[kind as FloatType];
  const t = ggmlInfo(kind);
  return t.typeSize / t.blockSize;
}

/** Convert `m` into `sink`. */
export async function convertModel(m: ModelFile, sink: ByteSink, opts: ConvertOptions): Promise<ConvertResult> {
  const hfNamed = m.format === 'safetensors' && m.tensors.some((t) => t.name.startsWith('model.layers.') || t.name === 'model.embed_tokens.weight');
  let hp: LlamaHparams | undefined;
  const plans: Plan[] = [];
  // GPTQ/AWQ packed int4 layers become float tensors (F32 unless --type): P.qweight stands for the layer,
  // P.qzeros / P.scales / P.g_idx are consumed with it, and AutoGPTQ's all-zero P.bias is dropped
  if (m.packedInt4Problems?.length) fail(`${m.name}: ${m.packedInt4Problems[0]}`);
  const groups = m.packedInt4 ?? [];
  const packedConfig = groups.length ? packedInt4ConfigOf(opts.hfConfig) : undefined;
  const packedParts = new Map<string, PackedInt4Group | undefined>();
  for (const g of groups) {
    packedParts.set(g.qweight.name, g);
    for (const t of [g.scales, g.qzeros, g.gIdx]) if (t) packedParts.set(t.name, undefined);
    const bias = m.tensors.find((t) => t.name === `${g.prefix}.bias`);
    if (bias && (await m.readFloat32(bias)).every((x) => x === 0)) packedParts.set(bias.name, undefined);
  }
  const packedPlan = (t: ModelTensor, name: string): Plan | undefined => {
    const g = packedParts.get(t.name);
    if (!g) return undefined;
    if (packedConfig && g.layout !== packedConfig.method) fail(`${g.qweight.name}: shapes are ${g.layout}'s layout but config.json says ${packedConfig.method}`);
    return { src: t, name, shape: [g.outFeatures, g.inFeatures], kind: opts.type ?? 'F32', packed: g };
  };
  if (opts.to === 'gguf') {
    if (hfNamed) {
      if (!opts.hfConfig) fail(`${m.name}: converting Hugging Face safetensors to GGUF needs config.json next to the model`);
      hp = hparamsFromHfConfig(opts.hfConfig);
    } else if (m.format === 'gguf') {
      hp = tryHparams(m);
    } else if (m.format === 'llama2c') {
      hp = llama2cHparams(m);
    }
    for (const t of m.tensors) {
      if (packedParts.has(t.name)) {
        const g = packedParts.get(t.name);
        const name = g && (hfNamed ? hfToGgufName(`${g.prefix}.weight`) : `${g.prefix}.weight`);
        const heads = name && hfNamed && hp ? ropePermuteHeads(name, hp) : undefined;
        const p = name ? packedPlan(t, name) : undefined;
        if (p) plans.push({ ...p, permute: heads ? { heads, toGguf: true } : undefined });
        continue;
      }
      const name = hfNamed ? hfToGgufName(t.name) : t.name;
      if (name === undefined) continue;
      const heads = hfNamed && hp ? ropePermuteHeads(name, hp) : undefined;
      plans.push({ src: t, name, shape: [...t.shape], kind: outKind(t, opts.type, 'gguf'), permute: heads ? { heads, toGguf: true } : undefined });
      // llama2.c with a shared classifier: llama.cpp's converter writes output.weight = token_embd.weight
      if (m.format === 'llama2c' && name === 'output_norm.weight' && m.metadata.get('shared_classifier') === 1) {
        const e = m.tensor('token_embd.weight');
        plans.push({ src: e, name: 'output.weight', shape: [...e.shape], kind: outKind(e, opts.type, 'gguf') });
      }
    }
  } else {
    const llamaNamed = m.format !== 'safetensors' && m.tensors.every((t) => isLlamaGgufName(t.name));
    if (m.format === 'gguf' && llamaNamed) hp = tryHparams(m);
    if (m.format === 'llama2c') hp = llama2cHparams(m);
    for (const t of m.tensors) {
      if (packedParts.has(t.name)) {
        const g = packedParts.get(t.name);
        const p = g ? packedPlan(t, `${g.prefix}.weight`) : undefined;
        if (p) plans.push(p);
        continue;
      }
      const heads = llamaNamed && hp ? ropePermuteHeads(t.name, hp) : undefined;
      plans.push({
        src: t,
        name: llamaNamed ? ggufToHfName(t.name) : t.name,
        shape: [...t.shape],
        kind: outKind(t, opts.type, 'safetensors'),
        permute: heads ? { heads, toGguf: false } : undefined,
      });
    }
  }

  const chunk = opts.chunkBytes ?? 1 << 24;
  let written = 0;
  const counting: ByteSink = {
    async write(b) {
      written += b.length;
      await sink.write(b);
    },
  };
  let write: (b: Uint8Array) => Promise<void>;
  let end: () => Promise<void>;
  if (opts.to === 'gguf') {
    const meta = ggufMetadataFor(m, hp, opts, hfNamed);
    const w = new GgufWriter(
      counting,
      meta,
      plans.map((p) => ({ name: p.name, ne: [...p.shape].reverse(), type: ggmlInfo(p.kind) })),
    );
    await w.begin();
    write = (b) => w.write(b);
    end = () => w.end();
  } else {
    const md: Record<string, string> = { format: 'pt' };
    const w = new SafetensorsWriter(
      counting,
      plans.map((p) => ({ name: p.name, dtype: p.kind, shape: p.shape })),
      md,
    );
    await w.begin();
    write = (b) => w.write(b);
    end = () => w.end();
  }

  // one job per chunk (whole elements, whole blocks for block types); q/k tensors that need a row
  // permutation are one job. The next job's read is started before the current one is converted, so
  // an asynchronous source overlaps reading with converting and writing.
  interface Job {
    readonly p: Plan;
    readonly at: number;
    readonly n: number;
  }
  const jobs: Job[] = [];
  for (const p of plans) {
    const t = p.src;
    if (p.permute || p.packed) {
      jobs.push({ p, at: 0, n: t.byteLength });
      continue;
    }
    const unit = p.kind === t.type ? blockBytes(t.type) : elementBytes(t.type);
    const step = Math.max(unit, Math.floor(chunk / unit) * unit);
    for (let at = 0; at < t.byteLength; at += step) jobs.push({ p, at, n: Math.min(step, t.byteLength - at) });
  }
  const readJob = (j: Job) => {
    const r = j.p.packed ? Promise.resolve(new Uint8Array(0)) : m.read(j.p.src, j.at, j.n);
    r.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
    return r;
  };
  let next = jobs.length ? readJob(jobs[0]) : undefined;
  for (let i = 0; i < jobs.length; i++) {
    const { p, n } = jobs[i];
    const t = p.src;
    const bytes = await next!;
    next = i + 1 < jobs.length ? readJob(jobs[i + 1]) : undefined;
    const same = p.kind === t.type;
    // output buffers are fresh per chunk: a sink may hold them until its write completes
    const data = p.packed
      ? fromFloat32(p.kind as FloatType, await dequantizePackedInt4(p.packed, async (s) => toFloat32(s.dtype, await s.source.read(s.fileOffset, s.byteLength)), { gptqZeroOffset: packedConfig?.gptqZeroOffset }))
      : same
        ? bytes
        : convertChunk(t.type, p.kind as FloatType, bytes, n / elementBytes(t.type));
    if (p.permute) {
      const rows = p.shape[0];
      const rowBytes = data.length / rows;
      await write(p.permute.toGguf ? toGgufRows(data, rows, rowBytes, p.permute.heads) : toHfRows(data, rows, rowBytes, p.permute.heads));
    } else await write(data);
  }
  await end();
  // a llama checkpoint written as Hugging Face safetensors needs its config.json to be read back
  let hfConfig: Record<string, unknown> | undefined;
  if (opts.to === 'safetensors' && hp && m.format !== 'safetensors') {
    const kinds = new Set(plans.map((p) => p.kind));
    const dtype = kinds.has('BF16') ? 'bfloat16' : kinds.has('F16') ? 'float16' : 'float32';
    hfConfig = { ...hfConfigFromHparams(hp, dtype), tie_word_embeddings: !m.tensors.some((t) => t.name === 'output.weight') };
  }
  return { tensors: plans.length, bytesWritten: written, hfConfig };
}

function convertChunk(from: string, to: FloatType, bytes: Uint8Array, count: number): Uint8Array {
  // F32 input is used in place (no decode copy) when its bytes are 4-byte aligned
  const x = from === 'F32' && bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, count) : toFloat32(from, bytes);
  return fromFloat32(to, x);
}

function blockBytes(kind: string): number {
  if (kind in FLOAT_KIND_BYTES) return FLOAT_KIND_BYTES[kind as FloatType];
  try {
    return ggmlInfo(kind).typeSize;
  } catch {
    const sizes: Record<string, number> = { F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, U64: 8, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };
    return sizes[kind] ?? 1;
  }
}

function isLlamaGgufName(n: string): boolean {
  try {
    ggufToHfName(n);
    return true;
  } catch {
    return false;
  }
}

function tryHparams(m: ModelFile): LlamaHparams | undefined {
  if (!m.gguf) return undefined;
  try {
    return hparamsFromGguf(m.gguf.metadata);
  } catch {
    return undefined;
  }
}

/** Hyper-parameters of a llama2.c checkpoint opened as a ModelFile (as convert-llama2c-to-ggml writes them). */
export function llama2cHparams(m: ModelFile): LlamaHparams {
  const g = (k: string) => m.metadata.get(k) as number;
  return {
    vocabSize: g('vocab_size'),
    dim: g('dim'),
    hiddenDim: g('hidden_dim'),
    nLayers: g('n_layers'),
    nHeads: g('n_heads'),
    nKvHeads: g('n_kv_heads'),
    seqLen: 2048, // what convert-llama2c-to-ggml writes (its n_ctx default), not the checkpoint's seq_len
    normEps: Math.fround(1e-5),
  };
}

/** GGML file type ids of general.file_type (llama_ftype) */
const FILE_TYPE: Record<FloatType, number> = { F32: 0, F16: 1, BF16: 32 };

function ggufMetadataFor(m: ModelFile, hp: LlamaHparams | undefined, opts: ConvertOptions, hfNamed: boolean): [string, GgufValue][] {
  const tok = opts.tokenizer ?? [];
  if (m.format === 'gguf' && m.gguf) {
    // verbatim, with tokenizer.* replaced when a tokenizer is given and file_type updated
    const out: [string, GgufValue][] = [];
    for (const [k, v] of m.gguf.metadata) {
      if (tok.length && k.startsWith('tokenizer.')) continue;
      if (k === 'general.file_type' && opts.type) out.push([k, { type: v.type, value: v.type === GgufType.UINT32 || v.type === GgufType.INT32 ? FILE_TYPE[opts.type] : v.value }]);
      else out.push([k, v]);
    }
    out.push(...tok);
    return out;
  }
  if (m.format === 'llama2c') {
    // the order convert-llama2c-to-ggml uses
    const head = tok.filter(([k]) => !/_token_id$/.test(k));
    const special = tok.filter(([k]) => /_token_id$/.test(k));
    return [...head, ['general.architecture', gguf.str('llama')], ['general.name', gguf.str('llama')], ...special, ...ggufLlamaMetadata(hp!)];
  }
  const out: [string, GgufValue][] = [['general.architecture', gguf.str('llama')], ['general.name', gguf.str('llama')]];
  if (opts.type) out.push(['general.file_type', gguf.u32(FILE_TYPE[opts.type])]);
  if (hp && hfNamed) out.push(['llama.vocab_size', gguf.u32(hp.vocabSize)], ...ggufLlamaMetadata(hp));
  out.push(...tok);
  return out;
}
