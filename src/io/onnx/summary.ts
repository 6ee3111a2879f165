/**
 * What `lowbit inspect model.onnx` shows: header facts, inputs/outputs with types and shapes, operator
 * counts (by domain), subgraphs, and every weight (initializers and Constant nodes, in every graph).
 */
import { allGraphs, onnxWeights, tensorByteLength, tensorElements, tensorShape, type OnnxModel } from './model.js';
import { dataTypeName, type TypeProto, type ValueInfoProto } from './schema.js';

export interface OnnxValueSummary {
  name: string;
  type: string;
  shape?: (number | string)[];
}
export interface OnnxSummary {
  file: string;
  format: 'onnx';
  irVersion: number;
  producer: string;
  opsets: { domain: string; version: number }[];
  inputs: OnnxValueSummary[];
  outputs: OnnxValueSummary[];
  /** op type (domain-qualified outside the default domain) -> count, over every graph */
  ops: Record<string, number>;
  nodes: number;
  subgraphs: { path: string; nodes: number }[];
  weights: { name: string; shape: number[]; type: string; bytes: number; where: string; external?: boolean }[];
  totals: { weights: number; parameters: number; bytes: number; fileBytes: number };
}

export function typeString(t: TypeProto | undefined): { type: string; shape?: (number | string)[] } {
  if (!t) return { type: '?' };
  if (t.tensor_type) {
    const shape = t.tensor_type.shape?.dim?.map((d) => (d.dim_value !== undefined ? Number(d.dim_value) : d.dim_param || '?'));
    return { type: dataTypeName(t.tensor_type.elem_type), shape };
  }
  if (t.sequence_type) return { type: `seq(${typeString(t.sequence_type.elem_type).type})` };
  if (t.map_type) return { type: `map(${dataTypeName(t.map_type.key_type)}, ${typeString(t.map_type.value_type).type})` };
  if (t.optional_type) return { type: `optional(${typeString(t.optional_type.elem_type).type})` };
  return { type: '?' };
}

const valueSummary = (v: ValueInfoProto): OnnxValueSummary => ({ name: v.name ?? '', ...typeString(v.type) });

export function onnxSummary(m: OnnxModel): OnnxSummary {
  const p = m.proto;
  const g = p.graph!;
  const initNames = new Set((g.initializer ?? []).map((t) => t.name));
  const ops: Record<string, number> = {};
  let nodes = 0;
  const subs: { path: string; nodes: number }[] = [];
  for (const { graph, path } of allGraphs(p)) {
    if (path) subs.push({ path, nodes: graph.node?.length ?? 0 });
    for (const n of graph.node ?? []) {
      const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.op_type}` : (n.op_type ?? '');
      ops[key] = (ops[key] ?? 0) + 1;
      nodes++;
    }
  }
  let parameters = 0;
  let bytes = 0;
  const weights = onnxWeights(p).map((w) => {
    const n = tensorElements(w.tensor);
    const b = tensorByteLength(w.tensor);
    parameters += n;
    bytes += b;
    return {
      name: w.name,
      shape: tensorShape(w.tensor),
      type: dataTypeName(w.tensor.data_type),
      bytes: b,
      where: `${w.kind}${w.graphPath ? ` in ${w.graphPath}` : ''}`,
      ...(w.tensor.data_location === 1 ? { external: true } : {}),
    };
  });
  return {
    file: m.name,
    format: 'onnx',
    irVersion: Number(p.ir_version),
    producer: `${p.producer_name ?? ''}${p.producer_version ? ' ' + p.producer_version : ''}`,
    opsets: (p.opset_import ?? []).map((o) => ({ domain: o.domain || 'ai.onnx', version: Number(o.version) })),
    // graph inputs that are initializers (IR < 4 lists weights as inputs too) are not real inputs
    inputs: (g.input ?? []).filter((v) => !initNames.has(v.name)).map(valueSummary),
    outputs: (g.output ?? []).map(valueSummary),
    ops,
    nodes,
    subgraphs: subs,
    weights,
    totals: { weights: weights.length, parameters, bytes, fileBytes: m.size },
  };
}

const shapeText = (s?: (number | string)[]) => (s ? `[${s.join(', ')}]` : '[?]');

export function onnxSummaryText(s: OnnxSummary, maxWeights = Infinity): string {
  const out: string[] = [];
  out.push(`${s.file}: onnx, IR ${s.irVersion}${s.producer ? `, producer ${s.producer}` : ''}, opsets ${s.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}`);
  out.push(`inputs (${s.inputs.length}):`);
  for (const v of s.inputs) out.push(`  ${v.name}  ${v.type} ${shapeText(v.shape)}`);
  out.push(`outputs (${s.outputs.length}):`);
  for (const v of s.outputs) out.push(`  ${v.name}  ${v.type} ${shapeText(v.shape)}`);
  const ops = Object.entries(s.ops).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  out.push(`nodes (${s.nodes}) by op type: ${ops.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (s.subgraphs.length) {
    out.push(`subgraphs (${s.subgraphs.length}):`);
    for (const g of s.subgraphs) out.push(`  ${g.path}  (${g.nodes} nodes)`);
  }
  out.push(`weights (${s.weights.length}):`);
  const shown = s.weights.slice(0, maxWeights);
  const w = Math.max(4, ...shown.map((t) => t.name.length));
  out.push(`  ${'name'.padEnd(w)}  ${'shape'.padEnd(18)} ${'type'.padEnd(8)} ${'bytes'.padStart(10)}  where`);
  for (const t of shown) out.push(`  ${t.name.padEnd(w)}  ${shapeText(t.shape).padEnd(18)} ${t.type.padEnd(8)} ${String(t.bytes).padStart(10)}  ${t.where}${t.external ? ' (external data)' : ''}`);
  if (shown.length < s.weights.length) out.push(`  ... ${s.weights.length - shown.length} more (--json lists all)`);
  out.push(`total: ${s.totals.parameters} parameters in ${s.totals.weights} weights, ${s.totals.bytes} bytes of weights, file ${s.totals.fileBytes} bytes`);
  return out.join('\n');
}
