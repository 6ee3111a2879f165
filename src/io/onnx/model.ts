/**
 * ONNX model files: read (from a byte-range source, with external data files resolved through a
 * callback), validate, find weights wherever they are (graph initializers, Constant nodes, subgraphs
 * of If/Loop/Scan, functions), read tensor data, and write (optionally moving big tensors to an
 * external data file, as models over 2 GB must).
 *
 * External data (onnx/docs/ExternalData.md): a TensorProto with data_location = EXTERNAL and
 * external_data entries location (a path relative to the model's folder), offset and length (decimal
 * strings, bytes); raw_data is absent. Locations that are absolute or climb out of the folder are
 * refused (as onnxruntime does).
 */
import { fail } from '../../errors.js';
import { f16ToF32, bf16ToF32 } from '../../formats/half.js';
import type { ByteSink } from '../sink.js';
import type { ByteSource } from '../source.js';
import { concatParts, decodeMessage, encodeMessage, type Int64 } from './proto.js';
import {
  AttrType,
  DATA_TYPES,
  DataType,
  dataTypeName,
  ModelSchema,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type StringStringEntry,
  type TensorProto,
} from './schema.js';

export interface OnnxReadOptions {
  /** opens an external data file named by a tensor's location (relative to the model's folder) */
  openExternal?: (location: string) => ByteSource | Promise<ByteSource>;
}

export interface OnnxModel {
  readonly proto: ModelProto;
  /** the file's name (error messages) */
  readonly name: string;
  readonly size: number;
  readonly openExternal?: (location: string) => ByteSource | Promise<ByteSource>;
}

/** protobuf cannot hold more than 2 GiB in one message; bigger models keep weights outside */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;

export async function readOnnx(src: ByteSource, opts: OnnxReadOptions = {}): Promise<OnnxModel> {
  if (src.size === 0) fail(`${src.name}: empty file, not an ONNX model`);
  if (src.size > PROTOBUF_LIMIT) fail(`${src.name}: ${src.size} bytes is over protobuf's 2 GiB limit; an ONNX model this big keeps its weights in external data files`);
  const bytes = await src.read(0, src.size);
  return parseOnnx(bytes, src.name, opts);
}

export function parseOnnx(bytes: Uint8Array, name = 'model.onnx', opts: OnnxReadOptions = {}): OnnxModel {
  const proto = decodeMessage(bytes, ModelSchema, `${name}: ONNX`) as ModelProto;
  validateModel(proto, name);
  return { proto, name, size: bytes.length, openExternal: opts.openExternal };
}

// ---------------------------------------------------------------------------------------------------
// Walking graphs

/** the subgraphs held by a node's attributes (If branches, Loop/Scan bodies) */
export function subgraphs(node: NodeProto): { attr: string; graph: GraphProto }[] {
  const out: { attr: string; graph: GraphProto }[] = [];
  for (const a of node.attribute ?? []) {
    if (a.g) out.push({ attr: a.name ?? '', graph: a.g });
    for (const g of a.graphs ?? []) out.push({ attr: a.name ?? '', graph: g });
  }
  return out;
}

/** Visit a graph and every graph nested in it; `path` names the nesting ('' for the main graph). */
export function walkGraphs(graph: GraphProto, fn: (g: GraphProto, path: string) => void, path = ''): void {
  fn(graph, path);
  for (const n of graph.node ?? [])
    for (const s of subgraphs(n)) walkGraphs(s.graph, fn, `${path}${path ? '/' : ''}${n.name || n.op_type}.${s.attr}`);
}

/** every graph of the model (main graph, subgraphs, function bodies as pseudo-graphs) */
export function allGraphs(m: ModelProto): { graph: GraphProto; path: string }[] {
  const out: { graph: GraphProto; path: string }[] = [];
  if (m.graph) walkGraphs(m.graph, (graph, path) => out.push({ graph, path }));
  for (const f of m.functions ?? []) walkGraphs({ node: f.node }, (graph, path) => out.push({ graph, path: `function ${f.domain ?? ''}.${f.name}${path ? '/' + path : ''}` }));
  return out;
}

export function attr(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}
export function attrInt(node: NodeProto, name: string, dflt: number): number {
  const a = attr(node, name);
  return a?.i === undefined ? dflt : Number(a.i);
}
export function attrFloat(node: NodeProto, name: string, dflt: number): number {
  const a = attr(node, name);
  return a?.f === undefined ? dflt : a.f;
}
export function attrInts(node: NodeProto, name: string): number[] | undefined {
  const a = attr(node, name);
  return a?.ints ? a.ints.map(Number) : undefined;
}
export function attrString(node: NodeProto, name: string): string | undefined {
  const a = attr(node, name);
  return a?.s ? new TextDecoder().decode(a.s) : undefined;
}

/** Attribute builders (the type field set as the spec requires). */
export const makeAttr = {
  int: (name: string, i: Int64): AttributeProto => ({ name, type: AttrType.INT, i }),
  float: (name: string, f: number): AttributeProto => ({ name, type: AttrType.FLOAT, f }),
  ints: (name: string, ints: Int64[]): AttributeProto => ({ name, type: AttrType.INTS, ints }),
  string: (name: string, s: string): AttributeProto => ({ name, type: AttrType.STRING, s: new TextEncoder().encode(s) }),
  tensor: (name: string, t: TensorProto): AttributeProto => ({ name, type: AttrType.TENSOR, t }),
};

/** the opset version of a domain ('' / 'ai.onnx' is the default domain), or undefined */
export function opsetVersion(m: ModelProto, domain = ''): number | undefined {
  const d = domain === 'ai.onnx' ? '' : domain;
  const o = m.opset_import?.find((x) => (x.domain ?? '') === d || (d === '' && x.domain === 'ai.onnx'));
  return o?.version === undefined ? undefined : Number(o.version);
}

// ---------------------------------------------------------------------------------------------------
// Weights

export interface WeightRef {
  readonly name: string;
  readonly tensor: TensorProto;
  /** where the tensor lives */
  readonly kind: 'initializer' | 'constant';
  readonly graph: GraphProto;
  /** nesting path of the graph ('' = main graph) */
  readonly graphPath: string;
  /** the Constant node, for kind 'constant' */
  readonly node?: NodeProto;
}

/** Every constant tensor of the model: initializers and Constant-node values, in every graph. */
export function onnxWeights(m: ModelProto): WeightRef[] {
  const out: WeightRef[] = [];
  for (const { graph, path } of allGraphs(m)) {
    for (const t of graph.initializer ?? []) out.push({ name: t.name ?? '', tensor: t, kind: 'initializer', graph, graphPath: path });
    for (const n of graph.node ?? []) {
      if (n.op_type !== 'Constant' || (n.domain ?? '') !== '') continue;
      const v = attr(n, 'value');
      if (v?.t) out.push({ name: n.output?.[0] ?? '', tensor: v.t, kind: 'constant', graph, graphPath: path, node: n });
    }
  }
  return out;
}

export function tensorShape(t: TensorProto): number[] {
  return (t.dims ?? []).map(Number);
}
export function tensorElements(t: TensorProto): number {
  return tensorShape(t).reduce((a, b) => a * b, 1);
}
/** bytes of the tensor's data in raw (little-endian, packed 4-bit) form */
export function tensorByteLength(t: TensorProto): number {
  const bits = DATA_TYPES[t.data_type ?? 0]?.bits ?? 0;
  return Math.ceil((tensorElements(t) * bits) / 8);
}

function externalInfo(t: TensorProto): { location: string; offset: number; length?: number } {
  const kv = new Map((t.external_data ?? []).map((e: StringStringEntry) => [e.key ?? '', e.value ?? '']));
  const location = kv.get('location');
  if (!location) fail(`tensor ${t.name}: external data without a location`);
  const num = (k: string) => {
    const v = kv.get(k);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) fail(`tensor ${t.name}: external data ${k} '${v}' is not a byte count`);
    return Number(v);
  };
  return { location, offset: num('offset') ?? 0, length: num('length') };
}

/** Refuse external locations outside the model's folder (absolute, drive letters, '..'). */
export function checkExternalLocation(location: string, tensor: string): void {
  if (/^([a-zA-Z]:|[\\/])/.test(location) || location.split(/[\\/]/).includes('..') || location.includes('\0'))
    fail(`tensor ${tensor}: external data location '${location}' is outside the model's folder`);
}

/** The tensor's data as raw little-endian bytes (the raw_data layout), wherever it is stored. */
export async function tensorBytes(model: OnnxModel, t: TensorProto): Promise<Uint8Array> {
  const want = tensorByteLength(t);
  if (t.data_location === 1) {
    const { location, offset, length } = externalInfo(t);
    checkExternalLocation(location, t.name ?? '');
    if (!model.openExternal) fail(`tensor ${t.name}: its data is in external file '${location}', which cannot be opened here`);
    const src = await model.openExternal(location);
    const len = length ?? want;
    if (len !== want) fail(`tensor ${t.name}: external data length ${len} does not match its shape [${tensorShape(t)}] of ${dataTypeName(t.data_type)} (${want} bytes)`);
    if (offset + len > src.size) fail(`tensor ${t.name}: external data [${offset}, ${offset + len}) is past the end of '${location}' (${src.size} bytes)`);
    return src.read(offset, len);
  }
  return inlineBytes(t, want);
}

function inlineBytes(t: TensorProto, want: number): Uint8Array {
  const type = t.data_type ?? 0;
  if (t.raw_data !== undefined) return t.raw_data;
  const out = new Uint8Array(want);
  const dv = new DataView(out.buffer);
  const n = tensorElements(t);
  const bits = DATA_TYPES[type]?.bits ?? 0;
  switch (type) {
    case DataType.FLOAT:
    case DataType.COMPLEX64: {
      const f = t.float_data ?? [];
      for (let i = 0; i < f.length && i * 4 < want; i++) dv.setFloat32(i * 4, f[i], true);
      return out;
    }
    case DataType.DOUBLE:
    case DataType.COMPLEX128: {
      const f = t.double_data ?? [];
      for (let i = 0; i < f.length && i * 8 < want; i++) dv.setFloat64(i * 8, f[i], true);
      return out;
    }
    case DataType.INT64: {
      const v = t.int64_data ?? [];
      for (let i = 0; i < v.length && i < n; i++) dv.setBigInt64(i * 8, BigInt(v[i]), true);
      return out;
    }
    case DataType.UINT32:
    case DataType.UINT64: {
      const v = t.uint64_data ?? [];
      for (let i = 0; i < v.length && i < n; i++) {
        if (type === DataType.UINT32) dv.setUint32(i * 4, Number(v[i]) >>> 0, true);
        else dv.setBigUint64(i * 8, BigInt(v[i]), true);
      }
      return out;
    }
    case DataType.STRING:
      fail(`tensor ${t.name}: string tensors have no numeric data`);
    default: {
      // int32_data carries everything else, one element (or one packed 4-bit pair) per entry
      const v = t.int32_data ?? [];
      const w = bits >= 8 ? bits / 8 : 1;
      for (let i = 0; i < v.length && i * w < want; i++) {
        if (w === 1) out[i] = v[i] & 0xff;
        else if (w === 2) dv.setUint16(i * 2, v[i] & 0xffff, true);
        else dv.setInt32(i * 4, v[i], true);
      }
      return out;
    }
  }
}

/** A float tensor (float32/16, bfloat16, double) as float32 values. */
export async function tensorFloat32(model: OnnxModel, t: TensorProto): Promise<Float32Array> {
  const b = await tensorBytes(model, t);
  const n = tensorElements(t);
  const type = t.data_type ?? 0;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = new Float32Array(n);
  if (type === DataType.FLOAT) {
    // (a copy of the bytes is aligned; little-endian hosts only, as every engine lowbit runs on)
    out.set(new Float32Array(b.byteOffset % 4 === 0 ? b.buffer : b.slice().buffer, b.byteOffset % 4 === 0 ? b.byteOffset : 0, n));
  } else if (type === DataType.FLOAT16) for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(i * 2, true));
  else if (type === DataType.BFLOAT16) for (let i = 0; i < n; i++) out[i] = bf16ToF32(dv.getUint16(i * 2, true));
  else if (type === DataType.DOUBLE) for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
  else fail(`tensor ${t.name}: ${dataTypeName(type)} is not a float type`);
  return out;
}

/** isFloatType: weights the quantizers may touch */
export function isFloatType(type: number | undefined): boolean {
  return type === DataType.FLOAT || type === DataType.FLOAT16 || type === DataType.BFLOAT16 || type === DataType.DOUBLE;
}

export function makeTensor(name: string, dataType: number, dims: readonly number[], data: Uint8Array | ArrayBufferView): TensorProto {
  const raw = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const t: TensorProto = { dims: [...dims], data_type: dataType, name, raw_data: raw };
  if (raw.length !== tensorByteLength(t)) fail(`internal error: tensor ${name} has ${raw.length} bytes for shape [${dims}] of ${dataTypeName(dataType)}`);
  return t;
}

// ---------------------------------------------------------------------------------------------------
// Validation (the reader's checks: every problem named)

function validateTensor(t: TensorProto, where: string): void {
  const label = `${where}tensor '${t.name ?? ''}'`;
  const type = t.data_type ?? 0;
  if (!DATA_TYPES[type]) fail(`${label}: unknown data type ${type}`);
  let n = 1;
  for (const d of t.dims ?? []) {
    if (typeof d !== 'number' || d < 0) fail(`${label}: impossible dimension ${d}`);
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) fail(`${label}: shape [${t.dims}] is too large`);
  }
  if (t.data_location === 1) {
    const { location } = externalInfo(t);
    checkExternalLocation(location, t.name ?? '');
    if (t.raw_data !== undefined) fail(`${label}: has both external data and raw_data`);
    return;
  }
  if (t.data_location !== undefined && t.data_location !== 0) fail(`${label}: unknown data_location ${t.data_location}`);
  if (type === DataType.STRING) {
    if (n !== (t.string_data?.length ?? 0)) fail(`${label}: ${t.string_data?.length ?? 0} strings for shape [${t.dims}]`);
    return;
  }
  const want = tensorByteLength(t);
  if (t.raw_data !== undefined) {
    if (t.raw_data.length !== want) fail(`${label}: raw_data has ${t.raw_data.length} bytes, its shape [${t.dims ?? []}] of ${dataTypeName(type)} needs ${want}`);
    return;
  }
  const bits = DATA_TYPES[type].bits;
  const count =
    type === DataType.FLOAT || type === DataType.COMPLEX64
      ? (t.float_data?.length ?? 0)
      : type === DataType.DOUBLE || type === DataType.COMPLEX128
        ? (t.double_data?.length ?? 0)
        : type === DataType.INT64
          ? (t.int64_data?.length ?? 0)
          : type === DataType.UINT32 || type === DataType.UINT64
            ? (t.uint64_data?.length ?? 0)
            : (t.int32_data?.length ?? 0);
  const expected = type === DataType.COMPLEX64 || type === DataType.COMPLEX128 ? 2 * n : bits === 4 ? Math.ceil(n / 2) : n;
  // an empty tensor may have no data field at all
  if (count !== expected && !(expected === 0 && count === 0)) fail(`${label}: ${count} values stored for shape [${t.dims ?? []}] of ${dataTypeName(type)} (${expected} expected)`);
}

function validateModel(m: ModelProto, name: string): void {
  if (!m.graph) fail(`${name}: not an ONNX model (no graph; is this a protobuf of another kind?)`);
  if (m.ir_version === undefined) fail(`${name}: not an ONNX model (no ir_version)`);
  const ir = Number(m.ir_version);
  if (!(ir >= 1 && ir <= 64)) fail(`${name}: unsupported ONNX IR version ${m.ir_version}`);
  if (!m.opset_import?.length && ir >= 3) fail(`${name}: no opset_import (every ONNX model since IR 3 declares its operator sets)`);
  for (const o of m.opset_import ?? []) if (typeof o.version !== 'number' || o.version < 1) fail(`${name}: opset_import of domain '${o.domain ?? ''}' has version ${o.version}`);
  for (const { graph, path } of allGraphs(m)) {
    const where = `${name}: ${path ? `graph ${path}: ` : ''}`;
    for (const t of graph.initializer ?? []) validateTensor(t, where);
    for (const n of graph.node ?? []) {
      if (!n.op_type) fail(`${where}node '${n.name ?? ''}' has no op_type`);
      for (const a of n.attribute ?? []) {
        if (!a.name && !a.ref_attr_name) fail(`${where}node '${n.name ?? ''}' (${n.op_type}) has an attribute without a name`);
        if (a.t) validateTensor(a.t, `${where}node '${n.name ?? ''}' attribute ${a.name}: `);
        for (const t of a.tensors ?? []) validateTensor(t, `${where}node '${n.name ?? ''}' attribute ${a.name}: `);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Writing

export interface OnnxWriteOptions {
  /**
   * Move tensors of at least `minBytes` bytes (default 1024) to an external data file written to `sink`,
   * referenced as `location` (relative to the model file). Needed for models over 2 GB.
   */
  external?: { location: string; sink: ByteSink; minBytes?: number };
}

/** Load every external tensor's bytes inline (before writing a model that should be self-contained). */
export async function inlineExternalData(model: OnnxModel): Promise<void> {
  for (const w of onnxWeights(model.proto)) {
    if (w.tensor.data_location !== 1) continue;
    const b = await tensorBytes(model, w.tensor);
    w.tensor.raw_data = b;
    delete w.tensor.data_location;
    delete w.tensor.external_data;
  }
}

/**
 * Encode `proto` (its inline tensors) to `sink`. With `external`, raw tensors of minBytes or more go to
 * the external sink instead (64-byte aligned, as onnx's converter writes them). Returns the byte
 * count of the model file.
 */
export async function writeOnnx(proto: ModelProto, sink: ByteSink, opts: OnnxWriteOptions = {}): Promise<number> {
  let out: ModelProto = proto;
  if (opts.external) {
    const ext = opts.external;
    checkExternalLocation(ext.location, '(output)');
    const min = ext.minBytes ?? 1024;
    let offset = 0;
    // rewrite a copy: the caller's model keeps its inline data
    out = structuredCloneShallow(proto);
    for (const w of onnxWeights(out)) {
      const t = w.tensor;
      if (t.data_location === 1 || !t.raw_data || t.raw_data.length < min) continue;
      const pad = (64 - (offset % 64)) % 64;
      if (pad) await ext.sink.write(new Uint8Array(pad));
      offset += pad;
      await ext.sink.write(t.raw_data);
      const entry = (key: string, value: string): StringStringEntry => ({ key, value });
      t.external_data = [entry('location', ext.location), entry('offset', String(offset)), entry('length', String(t.raw_data.length))];
      t.data_location = 1;
      offset += t.raw_data.length;
      delete t.raw_data;
    }
  }
  const { parts, length } = encodeMessage(out, ModelSchema);
  if (length > PROTOBUF_LIMIT) fail(`the model is ${length} bytes, over protobuf's 2 GiB limit: write its weights to an external data file`);
  for (const p of parts) await sink.write(p);
  return length;
}

/** The model's bytes in memory (small models, tests). */
export function encodeOnnx(proto: ModelProto): Uint8Array {
  const { parts, length } = encodeMessage(proto, ModelSchema);
  return concatParts(parts, length);
}

/** A deep copy of the message tree that shares tensor payloads (typed arrays are not copied). */
function structuredCloneShallow<T>(m: T): T {
  if (Array.isArray(m)) return m.map(structuredCloneShallow) as T;
  if (m && typeof m === 'object' && !ArrayBuffer.isView(m)) {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(m)) o[k] = structuredCloneShallow(v);
    return o as T;
  }
  return m;
}
export { structuredCloneShallow as cloneMessage };
