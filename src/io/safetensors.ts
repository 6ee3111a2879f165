/**
 * safetensors read + write (format: huggingface/safetensors README).
 *
 * Layout: u64 N (little-endian) | N bytes of UTF-8 JSON | data.
 * JSON: { "__metadata__"?: {string: string}, name: { dtype, shape: [..], data_offsets: [begin, end] } }
 * Offsets are relative to the data section; the tensors must cover it exactly, contiguously and
 * without overlap; shape product x dtype size = end - begin. Writers pad the JSON with spaces so the
 * data starts 8-byte aligned. Sharded checkpoints add model.safetensors.index.json
 * ({ metadata, weight_map: { tensor: file } }).
 */
import { fail } from '../errors.js';
import { decodeUtf8 } from './reader.js';
import type { ByteSink, TensorWriter } from './sink.js';
import type { ByteSource } from './source.js';

export const SAFETENSORS_MAX_HEADER = 100_000_000;

/** dtype -> bytes per element */
export const SAFETENSORS_DTYPES: Readonly<Record<string, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
});

export interface SafetensorsTensorInfo {
  readonly name: string;
  readonly dtype: string;
  /** row-major (outermost first) */
  readonly shape: readonly number[];
  readonly nElements: number;
  /** absolute offset in `source` */
  readonly fileOffset: number;
  readonly byteLength: number;
  /** the file holding the data (a shard for sharded checkpoints) */
  readonly source: ByteSource;
}

export interface SafetensorsFile {
  readonly source: ByteSource;
  readonly headerSize: number;
  readonly metadata: Record<string, string>;
  readonly tensors: readonly SafetensorsTensorInfo[];
  readonly dataOffset: number;
}

/** Top-level keys of a JSON object in order (to catch duplicates, which JSON.parse hides). */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let i = 0;
  let expectKey = false;
  while (i < json.length) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, j + 1)) as string);
      expectKey = false;
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') {
      depth++;
      expectKey = c === '{' && depth === 1;
    } else if (c === '}' || c === ']') depth--;
    else if (c === ',' && depth === 1) expectKey = true;
    i++;
  }
  return keys;
}

function isIntArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x >= 0);
}

export async function isSafetensors(src: ByteSource): Promise<boolean> {
  if (src.size < 10) return false;
  const b = await src.read(0, 10);
  const n = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  return n >= 2n && n <= BigInt(src.size - 8) && b[8] === 0x7b; // '{'
}

/** Parse a safetensors header; data stays in the source. */
export async function readSafetensors(src: ByteSource): Promise<SafetensorsFile> {
  const name = src.name;
  if (src.size < 8) fail(`${name}: not a safetensors file (${src.size} bytes, too short for the header size)`);
  const head = await src.read(0, 8);
  const n64 = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(SAFETENSORS_MAX_HEADER)) fail(`${name}: safetensors header size ${n64} exceeds the ${SAFETENSORS_MAX_HEADER}-byte limit`);
  const n = Number(n64);
  if (n > src.size - 8) fail(`${name}: safetensors header size ${n} is larger than the file (${src.size} bytes)`);
  if (n < 2) fail(`${name}: safetensors header size ${n} is too small for a JSON object`);
  const text = decodeUtf8(await src.read(8, n));
  if (text === undefined) fail(`${name}: safetensors header is not valid UTF-8`);
  if (text[0] !== '{') fail(`${name}: safetensors header does not start with '{'`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`${name}: safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(`${name}: safetensors header is not a JSON object`);
  const keys = topLevelKeys(text);
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k)) fail(`${name}: safetensors header has duplicate key '${k}'`);
    seen.add(k);
  }
  const dataOffset = 8 + n;
  const dataSize = src.size - dataOffset;
  let metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [k, v] of Object.entries(json as Record<string, unknown>)) {
    if (k === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${name}: safetensors __metadata__ is not an object`);
      for (const [mk, mv] of Object.entries(v)) if (typeof mv !== 'string') fail(`${name}: safetensors __metadata__ '${mk}' is not a string`);
      metadata = v as Record<string, string>;
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${name}: safetensors tensor '${k}' entry is not an object`);
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string' || !(e.dtype in SAFETENSORS_DTYPES)) fail(`${name}: safetensors tensor '${k}' has unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!isIntArray(e.shape)) fail(`${name}: safetensors tensor '${k}' has an invalid shape ${JSON.stringify(e.shape)}`);
    if (!isIntArray(e.data_offsets) || e.data_offsets.length !== 2) fail(`${name}: safetensors tensor '${k}' has invalid data_offsets ${JSON.stringify(e.data_offsets)}`);
    const [begin, end] = e.data_offsets;
    if (end < begin) fail(`${name}: safetensors tensor '${k}' data_offsets end ${end} < begin ${begin}`);
    if (end > dataSize) fail(`${name}: safetensors tensor '${k}' data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes): truncated or corrupt`);
    let nElements = 1;
    for (const d of e.shape) {
      nElements *= d;
      if (!Number.isSafeInteger(nElements)) fail(`${name}: safetensors tensor '${k}' shape [${e.shape.join(', ')}] overflows`);
    }
    const bytes = nElements * SAFETENSORS_DTYPES[e.dtype];
    if (!Number.isSafeInteger(bytes) || bytes !== end - begin)
      fail(`${name}: safetensors tensor '${k}' shape [${e.shape.join(', ')}] x ${e.dtype} is ${bytes} bytes but data_offsets span ${end - begin}`);
    tensors.push({ name: k, dtype: e.dtype, shape: Object.freeze([...e.shape]), nElements, fileOffset: dataOffset + begin, byteLength: bytes, source: src });
    ranges.push({ name: k, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const r of ranges) {
    if (r.begin < at) fail(`${name}: safetensors tensor '${r.name}' overlaps the previous tensor (begins at ${r.begin}, previous ends at ${at})`);
    if (r.begin > at) fail(`${name}: safetensors data has a gap before tensor '${r.name}' (${at}..${r.begin}): offsets must be contiguous`);
    at = r.end;
  }
  if (at !== dataSize) fail(`${name}: safetensors data section is ${dataSize} bytes but tensors cover ${at}`);
  return { source: src, headerSize: n, metadata, tensors, dataOffset };
}

export interface SafetensorsIndex {
  readonly metadata: Record<string, unknown>;
  /** tensor name -> shard file name */
  readonly weightMap: Map<string, string>;
  /** shard file names in first-use order */
  readonly shards: string[];
}

export function parseSafetensorsIndex(text: string, name = 'model.safetensors.index.json'): SafetensorsIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`${name}: not valid JSON (${(e as Error).message})`);
  }
  const j = json as { metadata?: unknown; weight_map?: unknown };
  if (typeof j !== 'object' || j === null || typeof j.weight_map !== 'object' || j.weight_map === null) fail(`${name}: no weight_map object`);
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [t, f] of Object.entries(j.weight_map as Record<string, unknown>)) {
    if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f === '..' || f === '.') fail(`${name}: weight_map '${t}' names an invalid shard ${JSON.stringify(f)}`);
    weightMap.set(t, f);
    if (!shards.includes(f)) shards.push(f);
  }
  return { metadata: (typeof j.metadata === 'object' && j.metadata ? j.metadata : {}) as Record<string, unknown>, weightMap, shards };
}

/** Open every shard of an index and check the weight map against the shards' headers. */
export async function readShardedSafetensors(index: SafetensorsIndex, openShard: (file: string) => Promise<ByteSource>): Promise<{ files: SafetensorsFile[]; tensors: SafetensorsTensorInfo[]; metadata: Record<string, string> }> {
  const files: SafetensorsFile[] = [];
  const tensors: SafetensorsTensorInfo[] = [];
  const where = new Map<string, string>();
  let metadata: Record<string, string> = {};
  for (const shard of index.shards) {
    const f = await readSafetensors(await openShard(shard));
    files.push(f);
    if (files.length === 1) metadata = f.metadata;
    for (const t of f.tensors) {
      const prev = where.get(t.name);
      if (prev) fail(`${shard}: tensor '${t.name}' is also in shard ${prev}`);
      where.set(t.name, shard);
      const want = index.weightMap.get(t.name);
      if (want !== shard) fail(`${shard}: tensor '${t.name}' is not mapped to this shard by the index (${want ?? 'absent'})`);
      tensors.push(t);
    }
  }
  for (const [t, shard] of index.weightMap) if (!where.has(t)) fail(`index: tensor '${t}' is mapped to ${shard} but that shard does not contain it`);
  return { files, tensors, metadata };
}

export interface SafetensorsTensorSpec {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
}

export function safetensorsTensorBytes(t: SafetensorsTensorSpec): number {
  const size = SAFETENSORS_DTYPES[t.dtype];
  if (!size) fail(`safetensors writer: unknown dtype ${t.dtype} for '${t.name}'`);
  return t.shape.reduce((a, b) => a * b, 1) * size;
}

/** The header bytes (size + JSON padded with spaces to an 8-byte boundary). */
export function safetensorsHeaderBytes(tensors: readonly SafetensorsTensorSpec[], metadata?: Record<string, string>): Uint8Array {
  const obj: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') fail(`safetensors writer: __metadata__ '${k}' is not a string`);
    obj.__metadata__ = metadata;
  }
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in obj) fail(`safetensors writer: duplicate or reserved tensor name '${t.name}'`);
    const n = safetensorsTensorBytes(t);
    obj[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = new TextEncoder().encode(JSON.stringify(obj));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  json = out;
  return json;
}

/** Streamed safetensors writer: header, then each tensor's bytes in order (any chunking). */
export class SafetensorsWriter implements TensorWriter {
  private index = 0;
  private written = 0;
  private readonly sizes: number[];
  private started = false;
  constructor(
    private readonly sink: ByteSink,
    readonly tensors: readonly SafetensorsTensorSpec[],
    private readonly metadata?: Record<string, string>,
  ) {
    this.sizes = tensors.map(safetensorsTensorBytes);
  }
  async begin(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.sink.write(safetensorsHeaderBytes(this.tensors, this.metadata));
    this.advance();
  }
  private advance(): void {
    while (this.index < this.tensors.length && this.written === this.sizes[this.index]) {
      this.index++;
      this.written = 0;
    }
  }
  async write(bytes: Uint8Array): Promise<void> {
    await this.begin();
    if (bytes.length === 0) return;
    const t = this.tensors[this.index];
    if (!t) fail('safetensors writer: more tensor data than declared');
    if (this.written + bytes.length > this.sizes[this.index]) fail(`safetensors writer: tensor '${t.name}' got more than its ${this.sizes[this.index]} bytes`);
    if (bytes.length) await this.sink.write(bytes);
    this.written += bytes.length;
    this.advance();
  }
  async end(): Promise<void> {
    await this.begin();
    if (this.index < this.tensors.length) fail(`safetensors writer: tensor '${this.tensors[this.index].name}' is incomplete`);
  }
}

export async function writeSafetensors(sink: ByteSink, tensors: readonly (SafetensorsTensorSpec & { data: Uint8Array })[], metadata?: Record<string, string>): Promise<void> {
  const w = new SafetensorsWriter(sink, tensors, metadata);
  await w.begin();
  for (const t of tensors) await w.write(t.data);
  await w.end();
}

// packed int4 layouts (GPTQ / AWQ) over these tensors: see packed-int4.ts
