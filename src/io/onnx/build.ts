/**
 * Building ONNX graphs: nodes, value infos and whole models from plain arguments (tests, the
 * quantizers' rewrites, synthetic models).
 */
import { makeAttr, makeTensor } from './model.js';
import type { AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from './schema.js';

export type AttrValue = number | string | number[] | TensorProto | { float: number } | { graph: GraphProto };

/** integers become INT, {float: x} FLOAT, strings STRING, arrays INTS, tensors TENSOR, {graph} GRAPH */
export function attribute(name: string, v: AttrValue): AttributeProto {
  if (typeof v === 'number') return Number.isInteger(v) ? makeAttr.int(name, v) : makeAttr.float(name, v);
  if (typeof v === 'string') return makeAttr.string(name, v);
  if (Array.isArray(v)) return makeAttr.ints(name, v);
  if ('float' in v && typeof v.float === 'number') return makeAttr.float(name, v.float);
  if ('graph' in v) return { name, type: 5, g: v.graph as GraphProto };
  return makeAttr.tensor(name, v as TensorProto);
}

export function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name?: string, domain?: string): NodeProto {
  const n: NodeProto = { input: inputs, output: outputs, op_type: opType };
  if (name) n.name = name;
  if (domain) n.domain = domain;
  const a = Object.entries(attrs).map(([k, v]) => attribute(k, v));
  if (a.length) n.attribute = a;
  return n;
}

export function valueInfo(name: string, elemType: number, shape?: (number | string)[]): ValueInfoProto {
  return {
    name,
    type: { tensor_type: { elem_type: elemType, ...(shape ? { shape: { dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } : {}) } },
  };
}

export function floatTensor(name: string, dims: number[], values: ArrayLike<number>): TensorProto {
  return makeTensor(name, 1, dims, Float32Array.from(values));
}

export function int64Tensor(name: string, dims: number[], values: ArrayLike<number>): TensorProto {
  return makeTensor(name, 7, dims, BigInt64Array.from(Array.from(values, (v) => BigInt(v))));
}

export interface ModelSpec {
  nodes: NodeProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers?: TensorProto[];
  opset?: number;
  /** extra operator sets, e.g. { 'com.microsoft': 1 } */
  domains?: Record<string, number>;
  irVersion?: number;
  name?: string;
}

export function buildModel(s: ModelSpec): ModelProto {
  return {
    ir_version: s.irVersion ?? 8,
    producer_name: 'lowbit',
    opset_import: [{ domain: '', version: s.opset ?? 17 }, ...Object.entries(s.domains ?? {}).map(([domain, version]) => ({ domain, version }))],
    graph: { node: s.nodes, name: s.name ?? 'graph', initializer: s.initializers ?? [], input: s.inputs, output: s.outputs },
  };
}
