/**
 * float16 conversion of an ONNX graph (`--float16`, transformers.js's "fp16" / the f16 half of "q4f16"):
 * float32 weights become float16 (rounded to nearest even),
 * and every float32 edge between converted nodes carries float16. The model's inputs and outputs keep
 * float32: a Cast follows each float input and precedes each float output.
 *
 * Nodes stay in float32, with Casts around them, when
 *  - they read a constant with values beyond float16's range (|x| > 65504: BatchNorm variances);
 *  - their op type is in `keepOps` (the ops a runtime has no float16 kernel for: the CLI asks onnxruntime
 *    and adds each op it refuses), their name is in `keepNodes`, or their domain is not ai.onnx /
 *    com.microsoft;
 *  - they take quantization parameters in float32 (QuantizeLinear, DequantizeLinear,
 *    DynamicQuantizeLinear) or hold subgraphs (If, Loop, Scan: the node keeps its float32 interface, an
 *    outer name the subgraphs read is cast back to float32 for them, and each subgraph is converted
 *    inside as a graph of its own, with Casts at its inputs and outputs). A constant the subgraphs read
 *    from the enclosing graph (Silero VAD's LSTM weights) is stored float16 there and reaches them through
 *    a Cast to float32 placed before the node.
 * Slots that are float32 whatever the data type (Resize's roi and scales, Upsample's scales) keep
 * float32 too. A constant read only by float16 slots is converted in place; one also read as float32
 * stays float32 and the float16 readers get a Cast.
 *
 * Element types of the intermediate values come from a small inference over the graph (types of inputs,
 * constants and value_info, and per-op output rules: Shape -> int64, comparisons -> bool, Cast -> `to`, ...).
 */
import { fail } from '../../errors.js';
import { f32ToF16 } from '../../formats/half.js';
import { node as mkNode } from './build.js';
import { indexGraph } from './graph-edit.js';
import { attr, makeTensor, subgraphs, tensorFloat32, tensorShape, type OnnxModel } from './model.js';
import { DataType, type GraphProto, type NodeProto, type TensorProto } from './schema.js';

export interface Float16Options {
  /** op types left in float32 */
  keepOps?: ReadonlySet<string>;
  /** node names left in float32 */
  keepNodes?: ReadonlySet<string>;
}

export interface Float16Report {
  /** float32 constants converted to float16 */
  tensors: number;
  /** nodes converted */
  nodes: number;
  /** nodes left in float32, by op type */
  keptOps: Record<string, number>;
  /** Cast nodes added */
  casts: number;
  /** subgraphs (If branches, Loop/Scan bodies) converted */
  subgraphs: number;
}

const FLOAT_ONLY_OPS = new Set(['QuantizeLinear', 'DequantizeLinear', 'DynamicQuantizeLinear']);
/** input slots that are float32 whatever the op's data type */
const FLOAT32_SLOTS: Readonly<Record<string, readonly number[]>> = { Resize: [1, 2], Upsample: [1] };
const BOOL_OPS = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Not', 'Xor', 'IsNaN', 'IsInf']);
const INT64_OPS = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin', 'NonMaxSuppression']);

const elemType = (v: { type?: { tensor_type?: { elem_type?: number } } }): number | undefined => v.type?.tensor_type?.elem_type;

/**
 * Element types of the values of `graph` (outer: the types visible from enclosing graphs). Unknown
 * values are absent from the map.
 */
export function inferElementTypes(graph: GraphProto, outer: ReadonlyMap<string, number> = new Map()): Map<string, number> {
  const t = new Map(outer);
  for (const v of [...(graph.input ?? []), ...(graph.value_info ?? [])]) {
    const e = elemType(v);
    if (e) t.set(v.name ?? '', e);
  }
  for (const i of graph.initializer ?? []) t.set(i.name ?? '', i.data_type ?? 0);
  for (const n of graph.node ?? []) {
    const outs = outputTypes(n, t);
    (n.output ?? []).forEach((o, k) => {
      if (o && outs[k] && !t.has(o)) t.set(o, outs[k]!);
    });
  }
  return t;
}

function outputTypes(n: NodeProto, t: ReadonlyMap<string, number>): (number | undefined)[] {
  const op = n.op_type ?? '';
  const inp = (k: number) => t.get(n.input?.[k] ?? '');
  const dtype = (name: string, dflt: number | undefined) => {
    const a = attr(n, name);
    return a?.i !== undefined ? Number(a.i) : dflt;
  };
  const all = (e: number | undefined) => (n.output ?? []).map(() => e);
  if (BOOL_OPS.has(op)) return all(DataType.BOOL);
  if (INT64_OPS.has(op)) return all(DataType.INT64);
  switch (op) {
    case 'Constant': {
      const v = attr(n, 'value');
      if (v?.t) return [v.t.data_type];
      if (attr(n, 'value_float') || attr(n, 'value_floats')) return [DataType.FLOAT];
      if (attr(n, 'value_int') || attr(n, 'value_ints')) return [DataType.INT64];
      return [undefined];
    }
    case 'ConstantOfShape':
      return [attr(n, 'value')?.t?.data_type ?? DataType.FLOAT];
    case 'Cast':
      return [dtype('to', undefined)];
    case 'CastLike':
      return [inp(1)];
    case 'TopK':
    case 'MaxPool':
      return [inp(0), DataType.INT64];
    case 'Unique':
      return [inp(0), DataType.INT64, DataType.INT64, DataType.INT64];
    case 'DynamicQuantizeLinear':
      return [DataType.UINT8, DataType.FLOAT, DataType.UINT8];
    case 'QuantizeLinear':
      return [dtype('output_dtype', undefined) || (inp(2) ?? DataType.UINT8)];
    case 'DequantizeLinear':
      return [inp(1)];
    case 'Where':
      return [inp(1)];
    case 'OneHot':
      return [inp(2)];
    case 'GatherBlockQuantized':
      return [inp(2)];
    case 'EyeLike':
    case 'RandomNormalLike':
    case 'RandomUniformLike':
      return [dtype('dtype', inp(0))];
    case 'RandomNormal':
    case 'RandomUniform':
      return [dtype('dtype', DataType.FLOAT)];
    case 'MatMulInteger':
    case 'ConvInteger':
      return [DataType.INT32];
    case 'QLinearConv':
    case 'QLinearMatMul':
      return [inp((n.input?.length ?? 1) - 1)];
    case 'If':
    case 'Loop':
    case 'Scan': {
      const body = subgraphs(n)[0]?.graph;
      const outs = (body?.output ?? []).map(elemType);
      return op === 'Loop' ? outs.slice(1) : outs;
    }
    default:
      return all(inp(0));
  }
}

/** names read by a graph (and its nested graphs) that it does not define itself */
function outerReads(g: GraphProto, out = new Set<string>()): Set<string> {
  const defined = new Set<string>([...(g.input ?? []).map((v) => v.name ?? ''), ...(g.initializer ?? []).map((i) => i.name ?? '')]);
  for (const n of g.node ?? []) {
    for (const x of n.input ?? []) if (x && !defined.has(x)) out.add(x);
    for (const s of subgraphs(n)) for (const x of outerReads(s.graph)) if (!defined.has(x)) out.add(x);
    for (const o of n.output ?? []) defined.add(o);
  }
  for (const v of g.output ?? []) if (!defined.has(v.name ?? '')) out.add(v.name ?? '');
  return out;
}

/** rename reads of `from` to `to` inside a graph (and its nested graphs) */
function renameReads(g: GraphProto, from: string, to: string): void {
  for (const n of g.node ?? []) {
    n.input = (n.input ?? []).map((x) => (x === from ? to : x));
    for (const s of subgraphs(n)) renameReads(s.graph, from, to);
  }
  for (const v of g.output ?? []) if (v.name === from) v.name = to;
}

/** float32 values as float16 bits; beyond ±65504 clamped (instead of becoming inf) */
export function toFloat16Bits(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16(Math.max(-65504, Math.min(65504, x[i])));
  return out;
}

const beyondHalf = (x: Float32Array) => x.some((v) => Math.abs(v) > 65504);

async function tensorToFloat16(m: OnnxModel, t: TensorProto): Promise<TensorProto> {
  const bits = toFloat16Bits(await tensorFloat32(m, t));
  return makeTensor(t.name ?? '', DataType.FLOAT16, tensorShape(t), bits);
}

/**
 * Convert the model to float16 in place (see the file header). Subgraphs (If branches, Loop and Scan
 * bodies) are converted the same way, each as an island with a float32 interface: their float inputs
 * (and outer values they read) are cast to float16 inside, their float outputs cast back to float32, so
 * the If/Loop/Scan node itself keeps its float32 types.
 */
export async function convertFloat16(m: OnnxModel, opts: Float16Options = {}): Promise<Float16Report> {
  const graph = m.proto.graph ?? fail('the model has no graph');
  const idx = indexGraph(m.proto);
  const report: Float16Report = { tensors: 0, nodes: 0, keptOps: {}, casts: 0, subgraphs: 0 };
  await convertGraph(m, graph, new Map(), opts, idx, report);
  return report;
}

async function convertGraph(m: OnnxModel, graph: GraphProto, outer: ReadonlyMap<string, number>, opts: Float16Options, idx: ReturnType<typeof indexGraph>, report: Float16Report, outerWide: ReadonlySet<string> = new Set()): Promise<void> {
  const types = inferElementTypes(graph, outer);
  // constants beyond float16's range (PP-OCRv4 det's BatchNorm variances reach 1e8): their readers stay
  // float32 (also in nested subgraphs reading them from here)
  const wide = new Set<string>(outerWide);
  for (const t of graph.initializer ?? []) if (t.data_type === DataType.FLOAT && beyondHalf(await tensorFloat32(m, t))) wide.add(t.name ?? '');
  for (const n of graph.node ?? []) {
    const v = attr(n, 'value')?.t;
    if (n.op_type === 'Constant' && v?.data_type === DataType.FLOAT && beyondHalf(await tensorFloat32(m, v))) wide.add(n.output?.[0] ?? '');
  }
  const kept = (n: NodeProto) => {
    const op = n.op_type ?? '';
    const d = n.domain ?? '';
    return !!((n.input ?? []).some((x) => wide.has(x)) || opts.keepOps?.has(op) || (n.name && opts.keepNodes?.has(n.name)) || (d !== '' && d !== 'ai.onnx' && d !== 'com.microsoft') || FLOAT_ONLY_OPS.has(op) || subgraphs(n).length || op === 'Constant');
  };
  const wants = (n: NodeProto, slot: number) => (kept(n) || FLOAT32_SLOTS[n.op_type ?? '']?.includes(slot) ? DataType.FLOAT : DataType.FLOAT16);
  const isF32 = (name: string) => !!name && types.get(name) === DataType.FLOAT;

  // constants: in place when every reader wants float16
  const readers = new Map<string, number[]>();
  for (const n of graph.node ?? []) {
    (n.input ?? []).forEach((x, k) => isF32(x) && readers.set(x, [...(readers.get(x) ?? []), wants(n, k)]));
    // a value the node's subgraphs read from here: a constant stored in float16 here reaches them
    // through a Cast to float32 before the node (the subgraphs keep a float32 interface)
    if (subgraphs(n).length) for (const x of outerReads({ node: [n] })) if (isF32(x)) readers.set(x, [...(readers.get(x) ?? []), wide.has(x) ? DataType.FLOAT : DataType.FLOAT16]);
  }
  for (const v of graph.output ?? []) if (isF32(v.name ?? '')) readers.set(v.name ?? '', [...(readers.get(v.name ?? '') ?? []), DataType.FLOAT]);
  const current = new Map<string, number>();
  const toHalf = (name: string) => (readers.get(name) ?? []).length > 0 && readers.get(name)!.every((w) => w === DataType.FLOAT16);
  for (const [i, t] of (graph.initializer ?? []).entries()) {
    const name = t.name ?? '';
    if (t.data_type !== DataType.FLOAT || !toHalf(name)) continue;
    graph.initializer![i] = await tensorToFloat16(m, t);
    current.set(name, DataType.FLOAT16);
    report.tensors++;
  }
  for (const n of graph.node ?? []) {
    const v = attr(n, 'value');
    if (n.op_type !== 'Constant' || (n.domain ?? '') !== '' || !v?.t || v.t.data_type !== DataType.FLOAT || !toHalf(n.output?.[0] ?? '')) continue;
    v.t = await tensorToFloat16(m, v.t);
    current.set(n.output![0], DataType.FLOAT16);
    report.tensors++;
  }
  const typeNow = (name: string) => current.get(name) ?? types.get(name);

  // nodes in order, casting float inputs to what each slot wants
  const castOf = new Map<string, string>();
  const out: NodeProto[] = [];
  const cast = (name: string, to: number) => {
    const key = `${name}|${to}`;
    let c = castOf.get(key);
    if (!c) {
      c = idx.fresh(`${name}_${to === DataType.FLOAT16 ? 'fp16' : 'fp32'}`);
      out.push(mkNode('Cast', [name], [c], { to }, `${c}_cast`));
      castOf.set(key, c);
      current.set(c, to);
      report.casts++;
    }
    return c;
  };
  for (const n of graph.node ?? []) {
    const keep = kept(n);
    if (n.op_type !== 'Constant') {
      n.input = (n.input ?? []).map((x, k) => {
        if (!isF32(x)) return x;
        const w = wants(n, k);
        return typeNow(x) === w ? x : cast(x, w);
      });
      if (subgraphs(n).length)
        for (const x of outerReads({ node: [n] }))
          if (isF32(x) && typeNow(x) === DataType.FLOAT16) {
            const c = cast(x, DataType.FLOAT);
            for (const s of subgraphs(n)) renameReads(s.graph, x, c);
          }
    }
    if (keep) {
      if (n.op_type !== 'Constant') report.keptOps[n.op_type ?? ''] = (report.keptOps[n.op_type ?? ''] ?? 0) + 1;
    } else {
      report.nodes++;
      // float32-typed attributes of converted nodes
      const to = attr(n, 'to');
      if (n.op_type === 'Cast' && to && Number(to.i) === DataType.FLOAT) to.i = DataType.FLOAT16;
      const dt = attr(n, 'dtype');
      if (dt && Number(dt.i) === DataType.FLOAT) dt.i = DataType.FLOAT16;
      const value = attr(n, 'value');
      if (n.op_type === 'ConstantOfShape' && value?.t?.data_type === DataType.FLOAT) value.t = await tensorToFloat16(m, value.t);
      for (const o of n.output ?? []) if (isF32(o)) current.set(o, DataType.FLOAT16);
    }
    out.push(n);
  }
  // float outputs back to float32
  for (const v of graph.output ?? []) {
    const name = v.name ?? '';
    if (!isF32(name) || typeNow(name) !== DataType.FLOAT16) continue;
    const inner = idx.fresh(`${name}_fp16`);
    for (const n of out) {
      n.output = (n.output ?? []).map((o) => (o === name ? inner : o));
      if (n.output.includes(inner)) continue;
      n.input = (n.input ?? []).map((x) => (x === name ? inner : x));
      for (const s of subgraphs(n)) renameReads(s.graph, name, inner);
    }
    current.set(inner, DataType.FLOAT16);
    current.set(name, DataType.FLOAT);
    out.push(mkNode('Cast', [inner], [name], { to: DataType.FLOAT }, `${name}_cast`));
    report.casts++;
  }
  graph.node = out;
  // value_info that no longer tells the truth goes (runtimes infer it)
  graph.value_info = (graph.value_info ?? []).filter((v) => elemType(v) === undefined || typeNow(v.name ?? '') === elemType(v));
  // the subgraphs, each with the types visible here (outer values they read are float32 by now)
  const visible = new Map(types);
  for (const [k, v] of current) visible.set(k, v);
  for (const n of out)
    for (const sg of subgraphs(n)) {
      if (opts.keepNodes?.has(n.name ?? '')) continue;
      await convertGraph(m, sg.graph, visible, opts, idx, report, wide);
      report.subgraphs++;
    }
}
