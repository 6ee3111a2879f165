/**
 * The ONNX protobuf messages (onnx/onnx.proto, IR version 10/11) as schemas for proto.ts, and typed
 * views of the decoded objects. Field numbers are the spec's; messages lowbit does not interpret
 * (TrainingInfoProto, device configurations) stay as unknown fields and are written back unchanged.
 */
import type { Int64, Message, MessageSchema } from './proto.js';

// --- typed views (fields absent in the file are undefined; repeated fields may be absent too) -------

export interface StringStringEntry extends Message {
  key?: string;
  value?: string;
}
export interface OperatorSetId extends Message {
  domain?: string;
  version?: Int64;
}
export interface TensorProto extends Message {
  dims?: Int64[];
  data_type?: number;
  segment?: Message;
  float_data?: Float32Array | number[];
  int32_data?: number[];
  string_data?: Uint8Array[];
  int64_data?: Int64[];
  name?: string;
  doc_string?: string;
  raw_data?: Uint8Array;
  external_data?: StringStringEntry[];
  /** 0 DEFAULT, 1 EXTERNAL */
  data_location?: number;
  double_data?: Float64Array | number[];
  uint64_data?: (number | bigint)[];
  metadata_props?: StringStringEntry[];
}
export interface SparseTensorProto extends Message {
  values?: TensorProto;
  indices?: TensorProto;
  dims?: Int64[];
}
export interface Dimension extends Message {
  dim_value?: Int64;
  dim_param?: string;
  denotation?: string;
}
export interface TensorShapeProto extends Message {
  dim?: Dimension[];
}
export interface TypeProto extends Message {
  tensor_type?: { elem_type?: number; shape?: TensorShapeProto } & Message;
  sequence_type?: { elem_type?: TypeProto } & Message;
  map_type?: { key_type?: number; value_type?: TypeProto } & Message;
  optional_type?: { elem_type?: TypeProto } & Message;
  sparse_tensor_type?: { elem_type?: number; shape?: TensorShapeProto } & Message;
  denotation?: string;
}
export interface ValueInfoProto extends Message {
  name?: string;
  type?: TypeProto;
  doc_string?: string;
  metadata_props?: StringStringEntry[];
}
export interface AttributeProto extends Message {
  name?: string;
  ref_attr_name?: string;
  doc_string?: string;
  type?: number;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparse_tensor?: SparseTensorProto;
  tp?: TypeProto;
  floats?: number[] | Float32Array;
  ints?: Int64[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparse_tensors?: SparseTensorProto[];
  type_protos?: TypeProto[];
}
export interface NodeProto extends Message {
  input?: string[];
  output?: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  overload?: string;
  attribute?: AttributeProto[];
  doc_string?: string;
  metadata_props?: StringStringEntry[];
}
export interface GraphProto extends Message {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  sparse_initializer?: SparseTensorProto[];
  doc_string?: string;
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  value_info?: ValueInfoProto[];
  quantization_annotation?: Message[];
  metadata_props?: StringStringEntry[];
}
export interface FunctionProto extends Message {
  name?: string;
  input?: string[];
  output?: string[];
  attribute?: string[];
  attribute_proto?: AttributeProto[];
  node?: NodeProto[];
  doc_string?: string;
  opset_import?: OperatorSetId[];
  domain?: string;
  overload?: string;
  value_info?: ValueInfoProto[];
  metadata_props?: StringStringEntry[];
}
export interface ModelProto extends Message {
  ir_version?: Int64;
  opset_import?: OperatorSetId[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: Int64;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props?: StringStringEntry[];
  functions?: FunctionProto[];
}

// --- schemas ---------------------------------------------------------------------------------------

const S = (name: string, fields: MessageSchema['fields']): MessageSchema => ({ name, fields });

export const StringStringEntrySchema = S('StringStringEntryProto', [
  { no: 1, name: 'key', kind: 'string' },
  { no: 2, name: 'value', kind: 'string' },
]);
export const OperatorSetIdSchema = S('OperatorSetIdProto', [
  { no: 1, name: 'domain', kind: 'string' },
  { no: 2, name: 'version', kind: 'int64' },
]);
const SegmentSchema = S('TensorProto.Segment', [
  { no: 1, name: 'begin', kind: 'int64' },
  { no: 2, name: 'end', kind: 'int64' },
]);
export const TensorSchema: MessageSchema = S('TensorProto', [
  { no: 1, name: 'dims', kind: 'int64', repeated: true },
  { no: 2, name: 'data_type', kind: 'int32' },
  { no: 3, name: 'segment', kind: 'message', message: () => SegmentSchema },
  { no: 4, name: 'float_data', kind: 'float', repeated: true, packed: true },
  { no: 5, name: 'int32_data', kind: 'int32', repeated: true, packed: true },
  { no: 6, name: 'string_data', kind: 'bytes', repeated: true },
  { no: 7, name: 'int64_data', kind: 'int64', repeated: true, packed: true },
  { no: 8, name: 'name', kind: 'string' },
  { no: 12, name: 'doc_string', kind: 'string' },
  { no: 9, name: 'raw_data', kind: 'bytes' },
  { no: 13, name: 'external_data', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
  { no: 14, name: 'data_location', kind: 'enum' },
  { no: 10, name: 'double_data', kind: 'double', repeated: true, packed: true },
  { no: 11, name: 'uint64_data', kind: 'uint64', repeated: true, packed: true },
  { no: 16, name: 'metadata_props', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
]);
export const SparseTensorSchema: MessageSchema = S('SparseTensorProto', [
  { no: 1, name: 'values', kind: 'message', message: () => TensorSchema },
  { no: 2, name: 'indices', kind: 'message', message: () => TensorSchema },
  { no: 3, name: 'dims', kind: 'int64', repeated: true },
]);
const DimensionSchema = S('TensorShapeProto.Dimension', [
  { no: 1, name: 'dim_value', kind: 'int64' },
  { no: 2, name: 'dim_param', kind: 'string' },
  { no: 3, name: 'denotation', kind: 'string' },
]);
const TensorShapeSchema = S('TensorShapeProto', [{ no: 1, name: 'dim', kind: 'message', repeated: true, message: () => DimensionSchema }]);
const TypeTensorSchema = S('TypeProto.Tensor', [
  { no: 1, name: 'elem_type', kind: 'int32' },
  { no: 2, name: 'shape', kind: 'message', message: () => TensorShapeSchema },
]);
const TypeSequenceSchema: MessageSchema = S('TypeProto.Sequence', [{ no: 1, name: 'elem_type', kind: 'message', message: () => TypeSchema }]);
const TypeMapSchema: MessageSchema = S('TypeProto.Map', [
  { no: 1, name: 'key_type', kind: 'int32' },
  { no: 2, name: 'value_type', kind: 'message', message: () => TypeSchema },
]);
const TypeOptionalSchema: MessageSchema = S('TypeProto.Optional', [{ no: 1, name: 'elem_type', kind: 'message', message: () => TypeSchema }]);
export const TypeSchema: MessageSchema = S('TypeProto', [
  { no: 1, name: 'tensor_type', kind: 'message', message: () => TypeTensorSchema },
  { no: 4, name: 'sequence_type', kind: 'message', message: () => TypeSequenceSchema },
  { no: 5, name: 'map_type', kind: 'message', message: () => TypeMapSchema },
  { no: 9, name: 'optional_type', kind: 'message', message: () => TypeOptionalSchema },
  { no: 8, name: 'sparse_tensor_type', kind: 'message', message: () => TypeTensorSchema },
  { no: 6, name: 'denotation', kind: 'string' },
]);
export const ValueInfoSchema = S('ValueInfoProto', [
  { no: 1, name: 'name', kind: 'string' },
  { no: 2, name: 'type', kind: 'message', message: () => TypeSchema },
  { no: 3, name: 'doc_string', kind: 'string' },
  { no: 4, name: 'metadata_props', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
]);
export const AttributeSchema: MessageSchema = S('AttributeProto', [
  { no: 1, name: 'name', kind: 'string' },
  { no: 21, name: 'ref_attr_name', kind: 'string' },
  { no: 13, name: 'doc_string', kind: 'string' },
  { no: 20, name: 'type', kind: 'enum' },
  { no: 2, name: 'f', kind: 'float' },
  { no: 3, name: 'i', kind: 'int64' },
  { no: 4, name: 's', kind: 'bytes' },
  { no: 5, name: 't', kind: 'message', message: () => TensorSchema },
  { no: 6, name: 'g', kind: 'message', message: () => GraphSchema },
  { no: 22, name: 'sparse_tensor', kind: 'message', message: () => SparseTensorSchema },
  { no: 14, name: 'tp', kind: 'message', message: () => TypeSchema },
  { no: 7, name: 'floats', kind: 'float', repeated: true },
  { no: 8, name: 'ints', kind: 'int64', repeated: true },
  { no: 9, name: 'strings', kind: 'bytes', repeated: true },
  { no: 10, name: 'tensors', kind: 'message', repeated: true, message: () => TensorSchema },
  { no: 11, name: 'graphs', kind: 'message', repeated: true, message: () => GraphSchema },
  { no: 23, name: 'sparse_tensors', kind: 'message', repeated: true, message: () => SparseTensorSchema },
  { no: 15, name: 'type_protos', kind: 'message', repeated: true, message: () => TypeSchema },
]);
export const NodeSchema: MessageSchema = S('NodeProto', [
  { no: 1, name: 'input', kind: 'string', repeated: true },
  { no: 2, name: 'output', kind: 'string', repeated: true },
  { no: 3, name: 'name', kind: 'string' },
  { no: 4, name: 'op_type', kind: 'string' },
  { no: 7, name: 'domain', kind: 'string' },
  { no: 8, name: 'overload', kind: 'string' },
  { no: 5, name: 'attribute', kind: 'message', repeated: true, message: () => AttributeSchema },
  { no: 6, name: 'doc_string', kind: 'string' },
  { no: 9, name: 'metadata_props', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
]);
export const GraphSchema: MessageSchema = S('GraphProto', [
  { no: 1, name: 'node', kind: 'message', repeated: true, message: () => NodeSchema },
  { no: 2, name: 'name', kind: 'string' },
  { no: 5, name: 'initializer', kind: 'message', repeated: true, message: () => TensorSchema },
  { no: 15, name: 'sparse_initializer', kind: 'message', repeated: true, message: () => SparseTensorSchema },
  { no: 10, name: 'doc_string', kind: 'string' },
  { no: 11, name: 'input', kind: 'message', repeated: true, message: () => ValueInfoSchema },
  { no: 12, name: 'output', kind: 'message', repeated: true, message: () => ValueInfoSchema },
  { no: 13, name: 'value_info', kind: 'message', repeated: true, message: () => ValueInfoSchema },
  { no: 14, name: 'quantization_annotation', kind: 'message', repeated: true, message: () => QuantAnnotationSchema },
  { no: 16, name: 'metadata_props', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
]);
const QuantAnnotationSchema = S('TensorAnnotation', [
  { no: 1, name: 'tensor_name', kind: 'string' },
  { no: 2, name: 'quant_parameter_tensor_names', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
]);
export const FunctionSchema: MessageSchema = S('FunctionProto', [
  { no: 1, name: 'name', kind: 'string' },
  { no: 4, name: 'input', kind: 'string', repeated: true },
  { no: 5, name: 'output', kind: 'string', repeated: true },
  { no: 6, name: 'attribute', kind: 'string', repeated: true },
  { no: 11, name: 'attribute_proto', kind: 'message', repeated: true, message: () => AttributeSchema },
  { no: 7, name: 'node', kind: 'message', repeated: true, message: () => NodeSchema },
  { no: 8, name: 'doc_string', kind: 'string' },
  { no: 9, name: 'opset_import', kind: 'message', repeated: true, message: () => OperatorSetIdSchema },
  { no: 10, name: 'domain', kind: 'string' },
  { no: 13, name: 'overload', kind: 'string' },
  { no: 12, name: 'value_info', kind: 'message', repeated: true, message: () => ValueInfoSchema },
  { no: 14, name: 'metadata_props', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
]);
export const ModelSchema: MessageSchema = S('ModelProto', [
  { no: 1, name: 'ir_version', kind: 'int64' },
  { no: 8, name: 'opset_import', kind: 'message', repeated: true, message: () => OperatorSetIdSchema },
  { no: 2, name: 'producer_name', kind: 'string' },
  { no: 3, name: 'producer_version', kind: 'string' },
  { no: 4, name: 'domain', kind: 'string' },
  { no: 5, name: 'model_version', kind: 'int64' },
  { no: 6, name: 'doc_string', kind: 'string' },
  { no: 7, name: 'graph', kind: 'message', message: () => GraphSchema },
  { no: 14, name: 'metadata_props', kind: 'message', repeated: true, message: () => StringStringEntrySchema },
  { no: 25, name: 'functions', kind: 'message', repeated: true, message: () => FunctionSchema },
]);

// --- tensor element types (TensorProto.DataType) ----------------------------------------------------

export const enum DataType {
  UNDEFINED = 0,
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  UINT16 = 4,
  INT16 = 5,
  INT32 = 6,
  INT64 = 7,
  STRING = 8,
  BOOL = 9,
  FLOAT16 = 10,
  DOUBLE = 11,
  UINT32 = 12,
  UINT64 = 13,
  COMPLEX64 = 14,
  COMPLEX128 = 15,
  BFLOAT16 = 16,
  FLOAT8E4M3FN = 17,
  FLOAT8E4M3FNUZ = 18,
  FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20,
  UINT4 = 21,
  INT4 = 22,
  FLOAT4E2M1 = 23,
  FLOAT8E8M0 = 24,
}

/** name and storage bits per element of every data type (STRING: variable, 0) */
export const DATA_TYPES: Readonly<Record<number, { name: string; bits: number }>> = Object.freeze({
  1: { name: 'float32', bits: 32 },
  2: { name: 'uint8', bits: 8 },
  3: { name: 'int8', bits: 8 },
  4: { name: 'uint16', bits: 16 },
  5: { name: 'int16', bits: 16 },
  6: { name: 'int32', bits: 32 },
  7: { name: 'int64', bits: 64 },
  8: { name: 'string', bits: 0 },
  9: { name: 'bool', bits: 8 },
  10: { name: 'float16', bits: 16 },
  11: { name: 'float64', bits: 64 },
  12: { name: 'uint32', bits: 32 },
  13: { name: 'uint64', bits: 64 },
  14: { name: 'complex64', bits: 64 },
  15: { name: 'complex128', bits: 128 },
  16: { name: 'bfloat16', bits: 16 },
  17: { name: 'float8e4m3fn', bits: 8 },
  18: { name: 'float8e4m3fnuz', bits: 8 },
  19: { name: 'float8e5m2', bits: 8 },
  20: { name: 'float8e5m2fnuz', bits: 8 },
  21: { name: 'uint4', bits: 4 },
  22: { name: 'int4', bits: 4 },
  23: { name: 'float4e2m1', bits: 4 },
  24: { name: 'float8e8m0', bits: 8 },
});

export function dataTypeName(t: number | undefined): string {
  return (t !== undefined && DATA_TYPES[t]?.name) || `unknown(${t})`;
}

/** AttributeProto.AttributeType */
export const enum AttrType {
  UNDEFINED = 0,
  FLOAT = 1,
  INT = 2,
  STRING = 3,
  TENSOR = 4,
  GRAPH = 5,
  FLOATS = 6,
  INTS = 7,
  STRINGS = 8,
  TENSORS = 9,
  GRAPHS = 10,
  SPARSE_TENSOR = 11,
  SPARSE_TENSORS = 12,
  TYPE_PROTO = 13,
  TYPE_PROTOS = 14,
}
