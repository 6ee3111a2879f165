/**
 * One API over every model file lowbit reads: GGUF, safetensors (single or sharded via
 * model.safetensors.index.json) and llama2.c checkpoints. Opened by sniffing the first bytes.
 * Tensors are listed with a row-major `shape` (outermost first, as numpy/safetensors);
 * GGUF tensors also carry ggml's `ne` (innermost first).
 */
import { fail } from '../errors.js';
import { plainValue, readGguf, type GgufFile, type GgufValue } from './gguf.js';
import { decodeUtf8 } from './reader.js';
import { parseSafetensorsIndex, readSafetensors, readShardedSafetensors, type SafetensorsTensorInfo } from './safetensors.js';
import { findPackedInt4, type PackedInt4Group } from './packed-int4.js';
import type { ByteSource } from './source.js';
import { toFloat32 } from './tensor-data.js';
import type { StoredTensor } from '../model/types.js';
import { ggmlTypeByName } from '../quant/ggml/types.js';

/** 'onnx': io/onnx/model-file.ts (an OnnxModelFile, its tensors the initializers and Constant values) */
export type ModelFormat = 'gguf' | 'safetensors' | 'llama2c' | 'onnx';

export interface ModelTensor {
  readonly name: string;
  /** row-major, outermost first */
  readonly shape: readonly number[];
  /** ggml order (innermost first), for GGUF and llama2.c tensors */
  readonly ne?: readonly number[];
  /** GGML type name ('F32', 'Q4_K') for GGUF/llama2.c, safetensors dtype otherwise */
  readonly type: string;
  readonly nElements: number;
  /** absolute offset inside `source` */
  readonly byteOffset: number;
  readonly byteLength: number;
  readonly source: ByteSource;
}

export interface ModelFile {
  readonly format: ModelFormat;
  readonly name: string;
  /** GGUF version; undefined otherwise */
  readonly version?: number;
  /** GGUF metadata (typed), safetensors __metadata__ (as string values), llama2.c header fields */
  readonly metadata: Map<string, GgufValue | string | number>;
  readonly tensors: readonly ModelTensor[];
  readonly gguf?: GgufFile;
  /** GPTQ/AWQ-style packed int4 layers found in safetensors files */
  readonly packedInt4?: readonly PackedInt4Group[];
  /** `P.qweight` tensors that could not be read as packed int4 layers, one message each */
  readonly packedInt4Problems?: readonly string[];
  /** every source opened (shards), to close afterwards */
  readonly sources: readonly ByteSource[];
  tensor(name: string): ModelTensor;
  read(t: ModelTensor, start?: number, length?: number): Promise<Uint8Array>;
  /** read dest.length bytes of a tensor from byte `start` into dest (no intermediate buffer when the source can) */
  readInto?(t: ModelTensor, start: number, dest: Uint8Array): Promise<void>;
  readFloat32(t: ModelTensor): Promise<Float32Array>;
}

export interface OpenOptions {
  /** open a file next to the input (safetensors shards) */
  openSibling?: (fileName: string) => Promise<ByteSource>;
  /** the llama2.c reader (from src/io/llama2c.ts), plugged in so this module does not depend on it */
  llama2c?: (src: ByteSource) => Promise<{ metadata: Map<string, number>; tensors: ModelTensor[] }>;
  /** open as this format without sniffing (llama2.c checkpoints have no magic: their reader's checks speak) */
  as?: 'llama2c';
}

/** A ModelFile over tensors a reader has listed (GGUF, safetensors, llama2.c here; ONNX in io/onnx/model-file.ts). */
export function modelFileOf(format: ModelFormat, name: string, metadata: ModelFile['metadata'], tensors: ModelTensor[], sources: ByteSource[], extra: Partial<ModelFile> = {}): ModelFile {
  const by = new Map(tensors.map((t) => [t.name, t]));
  return {
    format,
    name,
    metadata,
    tensors,
    sources,
    ...extra,
    tensor(n) {
      const t = by.get(n);
      if (!t) fail(`${name}: no tensor named '${n}'`);
      return t;
    },
    read(t, start = 0, length = t.byteLength - start) {
      if (start < 0 || length < 0 || start + length > t.byteLength) fail(`${name}: range ${start}+${length} is outside tensor '${t.name}'`);
      return t.source.read(t.byteOffset + start, length);
    },
    async readInto(t, start, dest) {
      if (start < 0 || start + dest.length > t.byteLength) fail(`${name}: range ${start}+${dest.length} is outside tensor '${t.name}'`);
      if (t.source.readInto) await t.source.readInto(t.byteOffset + start, dest);
      else dest.set(await t.source.read(t.byteOffset + start, dest.length));
    },
    async readFloat32(t) {
      return toFloat32(t.type, await t.source.read(t.byteOffset, t.byteLength));
    },
  };
}

function packedExtra(tensors: readonly SafetensorsTensorInfo[]): Partial<ModelFile> {
  const problems: string[] = [];
  const packedInt4 = findPackedInt4(tensors, (p) => problems.push(p));
  return { packedInt4, ...(problems.length ? { packedInt4Problems: problems } : {}) };
}

function fromSafetensorsInfo(t: SafetensorsTensorInfo): ModelTensor {
  return { name: t.name, shape: t.shape, type: t.dtype, nElements: t.nElements, byteOffset: t.fileOffset, byteLength: t.byteLength, source: t.source };
}

export async function sniffFormat(src: ByteSource): Promise<ModelFormat | 'safetensors-index'> {
  const head = await src.read(0, Math.min(src.size, 16));
  if (head.length >= 4 && head[0] === 0x47 && head[1] === 0x47 && head[2] === 0x55 && head[3] === 0x46) return 'gguf';
  let i = 0;
  while (i < head.length && (head[i] === 0x20 || head[i] === 0x0a || head[i] === 0x0d || head[i] === 0x09)) i++;
  if (head[i] === 0x7b) return 'safetensors-index';
  // the name and the magic decide; a file named for a format is reported as that format's problem
  const name = src.name ?? '';
  if (/\.gguf$/i.test(name)) fail(`${name}: not a GGUF file (no 'GGUF' magic at byte 0)`);
  const namedSafetensors = /\.safetensors$/i.test(name);
  if (namedSafetensors && head.length < 9) fail(`${name}: too short for a safetensors file (${src.size} bytes)`);
  if (head.length >= 9) {
    const n = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
    const json = head[8] === 0x7b;
    if (n >= 2n && n <= BigInt(src.size - 8) && json) return 'safetensors';
    if (namedSafetensors || (json && n > BigInt(src.size - 8) && n < 1n << 48n)) {
      if (n > BigInt(src.size - 8)) fail(`${name}: safetensors header length ${n} runs past the end of the file (${src.size} bytes): truncated or not safetensors`);
      if (!json) fail(`${name}: safetensors header is not JSON (byte 8 is not '{')`);
      fail(`${name}: safetensors header length ${n} is too small`);
    }
  }
  if (src.size >= 28) return 'llama2c';
  fail(`${src.name}: not a GGUF, safetensors or llama2.c file`);
}

/** Open a model file of any supported format. */
export async function openModelFile(src: ByteSource, opts: OpenOptions = {}): Promise<ModelFile> {
  const fmt = opts.as ?? (await sniffFormat(src));
  if (fmt === 'gguf') {
    const g = await readGguf(src);
    const tensors = g.tensors.map<ModelTensor>((t) => ({
      name: t.name,
      shape: [...t.ne].reverse(),
      ne: t.ne,
      type: t.type.name,
      nElements: t.nElements,
      byteOffset: t.fileOffset,
      byteLength: t.byteLength,
      source: src,
    }));
    return modelFileOf('gguf', src.name, g.metadata, tensors, [src], { version: g.version, gguf: g });
  }
  if (fmt === 'safetensors') {
    const f = await readSafetensors(src);
    const tensors = f.tensors.map(fromSafetensorsInfo);
    return modelFileOf('safetensors', src.name, new Map(Object.entries(f.metadata)), tensors, [src], packedExtra(f.tensors));
  }
  if (fmt === 'safetensors-index') {
    if (src.size > 100_000_000) fail(`${src.name}: JSON index larger than 100 MB`);
    const text = decodeUtf8(await src.read(0, src.size));
    if (text === undefined) fail(`${src.name}: index is not valid UTF-8`);
    const index = parseSafetensorsIndex(text, src.name);
    if (!opts.openSibling) fail(`${src.name}: a sharded safetensors index needs access to its shard files`);
    const sources: ByteSource[] = [];
    const open = async (f: string) => {
      const s = await opts.openSibling!(f);
      sources.push(s);
      return s;
    };
    const sh = await readShardedSafetensors(index, open);
    const meta = new Map<string, string | number>(Object.entries(sh.metadata));
    for (const [k, v] of Object.entries(index.metadata)) if (typeof v === 'string' || typeof v === 'number') meta.set(`index.${k}`, v);
    return modelFileOf('safetensors', src.name, meta, sh.tensors.map(fromSafetensorsInfo), sources, packedExtra(sh.tensors));
  }
  if (!opts.llama2c) fail(`${src.name}: looks like a llama2.c checkpoint, but no llama2.c reader is available`);
  const l = await opts.llama2c(src);
  return modelFileOf('llama2c', src.name, l.metadata, l.tensors, [src]);
}

/**
 * Every tensor's bytes for the runtime (model/types.ts StoredTensor: GGML type, ggml dims), read once:
 * straight into `alloc(n)`'s array when it gives one and the source can read into a given array (the
 * kernel engine's memory: no second copy), else into an array of its own. Only GGML-typed files (GGUF,
 * llama2.c). All reads settle before an error surfaces (the caller closes the file after it).
 * lazy(name): leave that tensor's bytes unread when its source reads synchronously (readIntoSync): its
 * array is allocated (untouched pages cost nothing) and StoredTensor.fill reads parts of it on demand
 * (the caller then keeps the file open while the tensor is used).
 */
export async function storedTensors(m: ModelFile, alloc?: (bytes: number) => Uint8Array | null, lazy?: (name: string) => boolean): Promise<StoredTensor[]> {
  const out: StoredTensor[] = [];
  const reads: Promise<void>[] = []; // straight into the given arrays: all at once (a source may read them concurrently)
  for (const t of m.tensors) {
    const type = ggmlTypeByName(t.type);
    if (!type || !t.ne) fail(`${m.name}: ${t.name}: a ${t.type} tensor is not a GGML tensor`);
    const src = t.source;
    if (lazy?.(t.name) && src.readIntoSync && t.byteLength > 0) {
      const data = alloc?.(t.byteLength) ?? new Uint8Array(t.byteLength);
      const fill = (start: number, dest: Uint8Array): void => {
        if (!(Number.isSafeInteger(start) && start >= 0 && start + dest.length <= t.byteLength)) fail(`internal: ${m.name}: ${t.name}: read of ${dest.length} bytes at ${start} is outside the tensor`);
        src.readIntoSync!(t.byteOffset + start, dest);
      };
      out.push({ name: t.name, type, dims: t.ne, data, fill });
      continue;
    }
    const direct = alloc && t.source.readInto ? alloc(t.byteLength) : null;
    if (direct) reads.push(m.readInto!(t, 0, direct));
    const bytes = direct ?? (await m.read(t));
    out.push({ name: t.name, type, dims: t.ne, data: bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes) /* a copy (Buffer.slice would not copy) */ });
  }
  for (const r of await Promise.allSettled(reads)) if (r.status === 'rejected') throw r.reason;
  return out;
}

/** Metadata as plain JSON-able values (bigints as numbers when safe, else strings). */
export function plainMetadata(m: ModelFile['metadata']): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of m) out[k] = typeof v === 'object' ? plainValue(v) : v;
  return out;
}
