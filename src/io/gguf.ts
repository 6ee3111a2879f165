/**
 * GGUF v2/v3 reader and v3 writer (spec: ggml/docs/gguf.md; rules as in ggml/src/gguf.cpp).
 *
 * Layout (little-endian):
 *   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x (string key | u32 value type | value)            string = u64 length + UTF-8 bytes
 *   n_tensors x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset)
 *   zero padding to `alignment` (general.alignment, default 32)
 *   tensor data; each tensor starts at data + offset (a multiple of alignment) and is zero-padded
 *   to the alignment, the last one included.
 * The reader parses the header lazily from byte ranges and reads tensor data one tensor (or range) at
 * a time. Every count and length is checked against the bytes left before anything is allocated.
 */
import { fail } from '../errors.js';
import { ggmlTypeByIdOrUndefined, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { ByteWriter, decodeUtf8, SourceReader } from './reader.js';
import type { ByteSink, TensorWriter } from './sink.js';
import type { ByteSource } from './source.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const GGML_MAX_DIMS = 4;

/** GGUF metadata value types (gguf.h). */
export const GgufType = Object.freeze({
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
});
export const GGUF_TYPE_NAMES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'];
/** bytes per scalar of each fixed-size type (0 for string/array) */
const SCALAR_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

export type GgufNumericArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;

/** An array value. Bool arrays are Uint8Array (0/1). `rawStrings` keeps non-UTF-8 items verbatim. */
export interface GgufArray {
  readonly itemType: number;
  readonly values: GgufNumericArray | string[] | GgufArray[];
  readonly rawStrings?: Uint8Array[];
}

export type GgufScalar = number | bigint | boolean | string;

/** One metadata value with its GGUF type, kept exactly so files can be rewritten verbatim. */
export interface GgufValue {
  readonly type: number;
  readonly value: GgufScalar | GgufArray;
  /** original bytes of a string that is not valid UTF-8 */
  readonly raw?: Uint8Array;
}

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: ne[0] is the row length (innermost) */
  readonly ne: readonly number[];
  readonly type: GgmlTypeInfo;
  /** offset inside the data section */
  readonly offset: number;
  /** absolute file offset */
  readonly fileOffset: number;
  readonly byteLength: number;
  readonly nElements: number;
}

export interface GgufFile {
  readonly source: ByteSource;
  readonly version: number;
  readonly alignment: number;
  readonly metadata: Map<string, GgufValue>;
  readonly tensors: readonly GgufTensorInfo[];
  /** absolute offset of the data section */
  readonly dataOffset: number;
}

const MAX_ARRAY_DEPTH = 8;

function typeName(t: number): string {
  return GGUF_TYPE_NAMES[t] ?? `#${t}`;
}

/** true when the source starts with the GGUF magic */
export async function isGguf(src: ByteSource): Promise<boolean> {
  if (src.size < 4) return false;
  const b = await src.read(0, 4);
  return b[0] === 0x47 && b[1] === 0x47 && b[2] === 0x55 && b[3] === 0x46;
}

async function readString(r: SourceReader, what: string): Promise<{ text: string; raw?: Uint8Array }> {
  await r.need(8, `length of ${what}`);
  const n = r.u64(`length of ${what}`);
  if (n > r.remaining) fail(`${r.src.name}: GGUF ${what} length ${n} runs past the end of the file (${r.remaining} bytes remain at offset ${r.pos})`);
  await r.need(n, what);
  return stringOf(r.viewBytes(n));
}

/** a GGUF string's text from a view of its bytes; not UTF-8: the lossy text and a copy of the bytes (raw) */
function stringOf(bytes: Uint8Array): { text: string; raw?: Uint8Array } {
  const text = decodeUtf8(bytes);
  if (text === undefined) return { text: new TextDecoder().decode(bytes), raw: bytes.slice() };
  return { text };
}

/**
 * readString without awaiting, when the string is already buffered (a vocabulary's 32 000+ strings: two
 * awaits and a message string per item cost ~100 ms of a model's start-up); undefined, nothing consumed,
 * when it is not (readString then reads it, or fails with the message)
 */
function bufferedString(r: SourceReader): { text: string; raw?: Uint8Array } | undefined {
  if (!r.has(8)) return undefined;
  const len = r.peekU64();
  if (len > BigInt(r.remaining - 8) || !r.has(8 + Number(len))) return undefined;
  r.pos += 8;
  return stringOf(r.viewBytes(Number(len)));
}

async function readName(r: SourceReader, what: string): Promise<string> {
  const s = await readString(r, what);
  if (s.raw) fail(`${r.src.name}: GGUF ${what} is not valid UTF-8`);
  return s.text;
}

function newNumericArray(type: number, n: number): GgufNumericArray {
  switch (type) {
    case GgufType.UINT8:
    case GgufType.BOOL:
      return new Uint8Array(n);
    case GgufType.INT8:
      return new Int8Array(n);
    case GgufType.UINT16:
      return new Uint16Array(n);
    case GgufType.INT16:
      return new Int16Array(n);
    case GgufType.UINT32:
      return new Uint32Array(n);
    case GgufType.INT32:
      return new Int32Array(n);
    case GgufType.FLOAT32:
      return new Float32Array(n);
    case GgufType.FLOAT64:
      return new Float64Array(n);
    case GgufType.UINT64:
      return new BigUint64Array(n);
    case GgufType.INT64:
      return new BigInt64Array(n);
  }
  fail(`GGUF: type ${typeName(type)} is not numeric`);
}

async function readScalar(r: SourceReader, type: number, what: string): Promise<GgufValue> {
  if (type === GgufType.STRING) {
    const s = await readString(r, what);
    return s.raw ? { type, value: s.text, raw: s.raw } : { type, value: s.text };
  }
  const size = SCALAR_SIZE[type];
  await r.need(size, what);
  switch (type) {
    case GgufType.UINT8:
      return { type, value: r.u8() };
    case GgufType.INT8:
      return { type, value: r.i8() };
    case GgufType.UINT16:
      return { type, value: r.u16() };
    case GgufType.INT16:
      return { type, value: r.i16() };
    case GgufType.UINT32:
      return { type, value: r.u32() };
    case GgufType.INT32:
      return { type, value: r.i32() };
    case GgufType.FLOAT32:
      return { type, value: r.f32() };
    case GgufType.BOOL:
      return { type, value: r.u8() !== 0 };
    case GgufType.UINT64:
      return { type, value: r.u64big() };
    case GgufType.INT64:
      return { type, value: r.i64big() };
    case GgufType.FLOAT64:
      return { type, value: r.f64() };
  }
  fail(`${r.src.name}: GGUF ${what} has unknown value type ${type}`);
}

async function readArray(r: SourceReader, what: string, depth: number): Promise<GgufArray> {
  if (depth > MAX_ARRAY_DEPTH) fail(`${r.src.name}: GGUF ${what} nests arrays deeper than ${MAX_ARRAY_DEPTH}`);
  await r.need(12, `array header of ${what}`);
  const itemType = r.u32();
  const n = r.u64(`array length of ${what}`);
  if (itemType > GgufType.FLOAT64) fail(`${r.src.name}: GGUF ${what} is an array of unknown value type ${itemType}`);
  // every item needs at least this many bytes: cap the count before allocating
  const minItem = itemType === GgufType.STRING ? 8 : itemType === GgufType.ARRAY ? 12 : SCALAR_SIZE[itemType];
  if (n * minItem > r.remaining)
    fail(`${r.src.name}: GGUF ${what} array of ${n} ${typeName(itemType)} runs past the end of the file (${r.remaining} bytes remain at offset ${r.pos})`);
  if (itemType === GgufType.STRING) {
    const values: string[] = new Array(n);
    let raws: Uint8Array[] | undefined;
    for (let i = 0; i < n; i++) {
      const s = bufferedString(r) ?? (await readString(r, `${what}[${i}]`));
      values[i] = s.text;
      if (s.raw) {
        raws ??= [];
        raws[i] = s.raw;
      }
    }
    if (raws) {
      const enc = new TextEncoder();
      for (let i = 0; i < n; i++) raws[i] ??= enc.encode(values[i]);
    }
    return raws ? { itemType, values, rawStrings: raws } : { itemType, values };
  }
  if (itemType === GgufType.ARRAY) {
    const values: GgufArray[] = [];
    for (let i = 0; i < n; i++) values.push(await readArray(r, `${what}[${i}]`, depth + 1));
    return { itemType, values };
  }
  const size = SCALAR_SIZE[itemType];
  await r.need(n * size, what);
  const bytes = r.bytes(n * size); // a fresh, aligned copy
  const values = newNumericArray(itemType, 0);
  const Ctor = values.constructor as new (b: ArrayBufferLike, o: number, n: number) => GgufNumericArray;
  return { itemType, values: new Ctor(bytes.buffer, 0, n) };
}

/** Parse a GGUF header (metadata + tensor infos); tensor data stays in the source. */
export async function readGguf(src: ByteSource): Promise<GgufFile> {
  const name = src.name;
  const r = new SourceReader(src, 'GGUF');
  if (src.size < 4) fail(`${name}: not a GGUF file (${src.size} bytes, too short for the magic)`);
  await r.need(4, 'magic');
  const magic = r.u32();
  if (magic !== GGUF_MAGIC) fail(`${name}: not a GGUF file (bad magic 0x${magic.toString(16).padStart(8, '0')})`);
  await r.need(20, 'header');
  const version = r.u32();
  if (version === 1) fail(`${name}: GGUF version 1 is not supported (re-convert the model)`);
  if ((version & 0xffff) === 0 && version !== 0) fail(`${name}: GGUF version ${version} looks big-endian; only little-endian files are supported`);
  if (version > GGUF_VERSION) fail(`${name}: GGUF version ${version} is newer than supported (${GGUF_VERSION})`);
  if (version < 1) fail(`${name}: GGUF version ${version} is invalid`);
  const nTensors = r.u64('tensor count');
  const nKv = r.u64('metadata count');
  // each key-value takes >= 13 bytes (8 key length + 1 key byte + 4 type), each tensor info >= 24
  if (nKv * 13 > r.remaining) fail(`${name}: GGUF metadata count ${nKv} is larger than the file could hold`);
  if (nTensors * 24 > r.remaining) fail(`${name}: GGUF tensor count ${nTensors} is larger than the file could hold`);

  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const key = await readName(r, `metadata key #${i}`);
    if (key.length === 0) fail(`${name}: GGUF metadata key #${i} is empty`);
    if (metadata.has(key)) fail(`${name}: GGUF duplicate metadata key '${key}'`);
    await r.need(4, `type of ${key}`);
    const type = r.u32();
    if (type > GgufType.FLOAT64) fail(`${name}: GGUF metadata '${key}' has unknown value type ${type}`);
    const v = type === GgufType.ARRAY ? { type, value: await readArray(r, `metadata '${key}'`, 1) } : await readScalar(r, type, `metadata '${key}'`);
    metadata.set(key, v);
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== GgufType.UINT32) fail(`${name}: GGUF general.alignment has type ${typeName(al.type)}, expected u32`);
    alignment = al.value as number;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0) fail(`${name}: GGUF general.alignment ${alignment} is not a power of 2`);
  }

  const infos: { name: string; ne: number[]; type: GgmlTypeInfo; offset: number; nElements: number; byteLength: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const tname = await readName(r, `tensor name #${i}`);
    if (names.has(tname)) fail(`${name}: GGUF duplicate tensor name '${tname}'`);
    names.add(tname);
    await r.need(4, `dimension count of tensor '${tname}'`);
    const nDims = r.u32();
    if (nDims > GGML_MAX_DIMS) fail(`${name}: GGUF tensor '${tname}' has ${nDims} dimensions (at most ${GGML_MAX_DIMS})`);
    await r.need(8 * nDims + 12, `shape of tensor '${tname}'`);
    const ne: number[] = [];
    let nElements = 1;
    for (let d = 0; d < nDims; d++) {
      const v = r.i64big();
      if (v < 0n) fail(`${name}: GGUF tensor '${tname}' dimension ${d} is negative (${v})`);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${name}: GGUF tensor '${tname}' dimension ${d} (${v}) is too large`);
      ne.push(Number(v));
      nElements *= Number(v);
      if (!Number.isSafeInteger(nElements)) fail(`${name}: GGUF tensor '${tname}' shape [${ne.join(', ')}...] has too many elements (overflow)`);
    }
    const typeId = r.u32();
    const type = ggmlTypeByIdOrUndefined(typeId);
    if (!type) fail(`${name}: GGUF tensor '${tname}' has unknown GGML type id ${typeId}`);
    const offset = r.u64(`offset of tensor '${tname}'`);
    const rowLen = nDims > 0 ? ne[0] : 1;
    if (rowLen % type.blockSize !== 0)
      fail(`${name}: GGUF tensor '${tname}' of type ${type.name} has ${rowLen} elements per row, not a multiple of the block size ${type.blockSize}`);
    const byteLength = (nElements / type.blockSize) * type.typeSize;
    if (!Number.isSafeInteger(byteLength)) fail(`${name}: GGUF tensor '${tname}' byte size overflows`);
    if (offset % alignment !== 0) fail(`${name}: GGUF tensor '${tname}' offset ${offset} is not a multiple of the alignment ${alignment}`);
    infos.push({ name: tname, ne, type, offset, nElements, byteLength });
  }
  const dataOffset = nTensors > 0 ? Math.ceil(r.pos / alignment) * alignment : r.pos;
  if (nTensors > 0 && dataOffset > src.size) fail(`${name}: GGUF truncated: data section would start at ${dataOffset}, past the end of the file (${src.size} bytes)`);
  const dataSize = src.size - dataOffset;
  for (const t of infos)
    if (t.offset + t.byteLength > dataSize)
      fail(`${name}: GGUF tensor '${t.name}' (${t.byteLength} bytes at data offset ${t.offset}) runs past the end of the file (data section is ${dataSize} bytes): truncated or corrupt`);
  const sorted = [...infos].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1];
    if (p.offset + p.byteLength > sorted[i].offset && p.byteLength > 0 && sorted[i].byteLength > 0)
      fail(`${name}: GGUF tensors '${p.name}' and '${sorted[i].name}' overlap`);
  }
  const tensors: GgufTensorInfo[] = infos.map((t) => Object.freeze({ ...t, ne: Object.freeze(t.ne), fileOffset: dataOffset + t.offset }));
  return { source: src, version, alignment, metadata, tensors, dataOffset };
}

/** Bytes of one tensor (or a sub-range of it). */
export function readGgufTensor(f: GgufFile, t: GgufTensorInfo, start = 0, length = t.byteLength - start): Promise<Uint8Array> {
  if (start < 0 || length < 0 || start + length > t.byteLength) fail(`${f.source.name}: range ${start}+${length} is outside tensor '${t.name}' (${t.byteLength} bytes)`);
  return f.source.read(t.fileOffset + start, length);
}

/** A metadata value as plain JS: numbers, bigints, strings, booleans, arrays of those. */
export function plainValue(v: GgufValue | GgufArray): unknown {
  if ('itemType' in v) {
    if (v.itemType === GgufType.ARRAY) return (v.values as GgufArray[]).map(plainValue);
    if (v.itemType === GgufType.BOOL) return Array.from(v.values as Uint8Array, (x) => x !== 0);
    return Array.from(v.values as ArrayLike<unknown>);
  }
  if (v.type === GgufType.ARRAY) return plainValue(v.value as GgufArray);
  return v.value;
}

/** A numeric metadata value as a number (undefined when absent or not numeric). */
export function metaNumber(m: Map<string, GgufValue>, key: string): number | undefined {
  const v = m.get(key);
  if (!v) return undefined;
  if (typeof v.value === 'number') return v.value;
  if (typeof v.value === 'bigint') return Number(v.value);
  return undefined;
}

export function metaString(m: Map<string, GgufValue>, key: string): string | undefined {
  const v = m.get(key);
  return v && typeof v.value === 'string' ? v.value : undefined;
}

// ---- values for writing ----
export const gguf = Object.freeze({
  u32: (value: number): GgufValue => ({ type: GgufType.UINT32, value }),
  i32: (value: number): GgufValue => ({ type: GgufType.INT32, value }),
  f32: (value: number): GgufValue => ({ type: GgufType.FLOAT32, value }),
  u64: (value: number | bigint): GgufValue => ({ type: GgufType.UINT64, value: BigInt(value) }),
  bool: (value: boolean): GgufValue => ({ type: GgufType.BOOL, value }),
  str: (value: string): GgufValue => ({ type: GgufType.STRING, value }),
  strings: (values: string[]): GgufValue => ({ type: GgufType.ARRAY, value: { itemType: GgufType.STRING, values } }),
  f32s: (values: Float32Array): GgufValue => ({ type: GgufType.ARRAY, value: { itemType: GgufType.FLOAT32, values } }),
  i32s: (values: Int32Array): GgufValue => ({ type: GgufType.ARRAY, value: { itemType: GgufType.INT32, values } }),
});

const enc = new TextEncoder();

function writeString(w: ByteWriter, s: string, raw?: Uint8Array): void {
  const b = raw ?? enc.encode(s);
  w.u64(b.length);
  w.bytes(b);
}

function writeScalar(w: ByteWriter, type: number, v: GgufScalar, raw?: Uint8Array): void {
  switch (type) {
    case GgufType.UINT8:
      return w.u8(Number(v));
    case GgufType.INT8:
      return w.i8(Number(v));
    case GgufType.UINT16:
      return w.u16(Number(v));
    case GgufType.INT16:
      return w.i16(Number(v));
    case GgufType.UINT32:
      return w.u32(Number(v));
    case GgufType.INT32:
      return w.i32(Number(v));
    case GgufType.FLOAT32:
      return w.f32(Number(v));
    case GgufType.BOOL:
      return w.u8(v ? 1 : 0);
    case GgufType.STRING:
      return writeString(w, String(v), raw);
    case GgufType.UINT64:
      return w.u64(BigInt(v as number | bigint));
    case GgufType.INT64:
      return w.i64(BigInt(v as number | bigint));
    case GgufType.FLOAT64:
      return w.f64(Number(v));
  }
  fail(`GGUF writer: unknown value type ${type}`);
}

function writeArray(w: ByteWriter, a: GgufArray): void {
  w.u32(a.itemType);
  w.u64(a.values.length);
  if (a.itemType === GgufType.STRING) {
    const vs = a.values as string[];
    for (let i = 0; i < vs.length; i++) writeString(w, vs[i], a.rawStrings?.[i]);
  } else if (a.itemType === GgufType.ARRAY) {
    for (const x of a.values as GgufArray[]) writeArray(w, x);
  } else {
    const t = a.values as GgufNumericArray;
    if (t.BYTES_PER_ELEMENT !== SCALAR_SIZE[a.itemType]) fail(`GGUF writer: array of ${typeName(a.itemType)} given as ${t.constructor.name}`);
    w.bytes(new Uint8Array(t.buffer, t.byteOffset, t.byteLength)); // little-endian hosts only, as ggml
  }
}

/** What the writer needs to know about a tensor before its data. */
export interface GgufTensorSpec {
  readonly name: string;
  /** ggml order (ne[0] = row length) */
  readonly ne: readonly number[];
  readonly type: GgmlTypeInfo;
}

export function ggufTensorBytes(t: GgufTensorSpec): number {
  const n = t.ne.reduce((a, b) => a * b, 1);
  if ((t.ne[0] ?? 1) % t.type.blockSize !== 0) fail(`tensor '${t.name}': row of ${t.ne[0]} is not a multiple of ${t.type.name}'s block size ${t.type.blockSize}`);
  return (n / t.type.blockSize) * t.type.typeSize;
}

const pad = (n: number, a: number) => Math.ceil(n / a) * a;

/** The exact size of the GGUF file with this metadata and these tensors: header, data, every padding. */
export function ggufFileSize(metadata: Iterable<[string, GgufValue]>, tensors: readonly GgufTensorSpec[]): number {
  const m = new Map(metadata);
  const al = m.get('general.alignment');
  const alignment = al ? Number(al.value) : GGUF_DEFAULT_ALIGNMENT;
  return tensors.reduce((a, t) => a + pad(ggufTensorBytes(t), alignment), ggufHeaderBytes(m, tensors, alignment).length);
}

/** Serialize the GGUF header (everything up to the data section, padding included). */
export function ggufHeaderBytes(metadata: Iterable<[string, GgufValue]>, tensors: readonly GgufTensorSpec[], alignment = GGUF_DEFAULT_ALIGNMENT): Uint8Array {
  if (alignment <= 0 || (alignment & (alignment - 1)) !== 0) fail(`GGUF alignment ${alignment} is not a power of 2`);
  const kv = [...metadata];
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(kv.length);
  const keys = new Set<string>();
  for (const [k, v] of kv) {
    if (keys.has(k)) fail(`GGUF writer: duplicate metadata key '${k}'`);
    keys.add(k);
    writeString(w, k);
    w.u32(v.type);
    if (v.type === GgufType.ARRAY) writeArray(w, v.value as GgufArray);
    else writeScalar(w, v.type, v.value as GgufScalar, v.raw);
  }
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) fail(`GGUF writer: duplicate tensor name '${t.name}'`);
    names.add(t.name);
    if (t.ne.length > GGML_MAX_DIMS) fail(`GGUF writer: tensor '${t.name}' has more than ${GGML_MAX_DIMS} dimensions`);
    writeString(w, t.name);
    w.u32(t.ne.length);
    for (const d of t.ne) w.i64(d);
    w.u32(t.type.id);
    w.u64(offset);
    offset += pad(ggufTensorBytes(t), alignment);
  }
  w.zeros(pad(w.length, alignment) - w.length);
  return w.result();
}

/**
 * Streamed GGUF v3 writer: the header goes out first, then each tensor's bytes in order through
 * `write` (any chunking); padding after each tensor is inserted automatically.
 */
export class GgufWriter implements TensorWriter {
  private index = 0;
  private written = 0;
  private readonly sizes: number[];
  readonly alignment: number;
  private started = false;

  constructor(
    private readonly sink: ByteSink,
    private readonly metadata: Iterable<[string, GgufValue]>,
    readonly tensors: readonly GgufTensorSpec[],
  ) {
    const m = new Map(metadata);
    const al = m.get('general.alignment');
    this.alignment = al ? Number(al.value) : GGUF_DEFAULT_ALIGNMENT;
    this.sizes = tensors.map(ggufTensorBytes);
  }

  async begin(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.sink.write(ggufHeaderBytes(this.metadata, this.tensors, this.alignment));
    await this.skipEmpty();
  }

  private async skipEmpty(): Promise<void> {
    while (this.index < this.tensors.length && this.written === this.sizes[this.index]) {
      const p = pad(this.sizes[this.index], this.alignment) - this.sizes[this.index];
      if (p) await this.sink.write(new Uint8Array(p));
      this.index++;
      this.written = 0;
    }
  }

  /** the tensor whose bytes are expected next (undefined when all are written) */
  get current(): GgufTensorSpec | undefined {
    return this.tensors[this.index];
  }

  /** Next bytes of the current tensor (a chunk must not cross into the next tensor). */
  async write(bytes: Uint8Array): Promise<void> {
    await this.begin();
    if (bytes.length === 0) return;
    const t = this.tensors[this.index];
    if (!t) fail('GGUF writer: more tensor data than declared');
    if (this.written + bytes.length > this.sizes[this.index])
      fail(`GGUF writer: tensor '${t.name}' got ${this.written + bytes.length} bytes, expected ${this.sizes[this.index]}`);
    if (bytes.length) await this.sink.write(bytes);
    this.written += bytes.length;
    await this.skipEmpty();
  }

  async end(): Promise<void> {
    await this.begin();
    if (this.index < this.tensors.length) fail(`GGUF writer: tensor '${this.tensors[this.index].name}' is incomplete (${this.written} of ${this.sizes[this.index]} bytes)`);
  }
}

/** Write a whole GGUF from in-memory tensors (tests, small models). */
export async function writeGguf(sink: ByteSink, metadata: Iterable<[string, GgufValue]>, tensors: readonly (GgufTensorSpec & { data: Uint8Array })[]): Promise<void> {
  const w = new GgufWriter(sink, metadata, tensors);
  await w.begin();
  for (const t of tensors) await w.write(t.data);
  await w.end();
}
