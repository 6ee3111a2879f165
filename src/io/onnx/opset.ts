/**
 * Raising a model's default-domain opset (to 13, where QuantizeLinear/DequantizeLinear take per-axis
 * scales, or 21, where they and the data-movement ops take float8). Ops whose inputs or semantics changed between the model's opset and 13 are rewritten to the
 * new form; ops known to be unchanged pass; anything else stops the upgrade with its name, so a
 * model is never silently reinterpreted.
 *   Slice (<10)                    starts/ends/axes attributes -> int64 inputs
 *   Clip (<11)                     min/max attributes -> float inputs
 *   Pad (<11)                      pads/value attributes -> inputs
 *   TopK (<10)                     k attribute -> input
 *   Squeeze/Unsqueeze/ReduceSum/Split (<13)   axes / split attributes -> int64 inputs
 *   ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare (<18, target 21)   axes -> int64 input
 *   Softmax/LogSoftmax/Hardmax (<13)  the 2-D coercion of old versions kept explicitly:
 *                                  Flatten(axis) -> op(axis = -1) -> Reshape(to Shape(x))
 *   Dropout (inference)            -> Identity
 */
import { fail } from '../../errors.js';
import { node } from './build.js';
import { indexGraph, type GraphIndex } from './graph-edit.js';
import { allGraphs, attr, attrFloat, attrInt, attrInts, makeTensor, opsetVersion } from './model.js';
import { DataType, type GraphProto, type ModelProto, type NodeProto } from './schema.js';

/** default-domain ops whose meaning (for inference, default attributes) did not change from 9 to 13 */
const UNCHANGED = new Set(
  (
    'Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Concat Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh ' +
    'DepthToSpace DequantizeLinear Div Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater ' +
    'GreaterOrEqual HardSigmoid Identity If InstanceNormalization IsInf IsNaN LRN LSTM LeakyRelu Less LessOrEqual Log Loop LpNormalization LpPool MatMul MatMulInteger Max MaxPool MaxUnpool Mean Min Mod Mul ' +
    'Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pow QLinearConv QLinearMatMul QuantizeLinear RNN Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ' +
    'ReduceProd ReduceSumSquare Relu Reshape Resize Round Scan ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Softplus Softsign SpaceToDepth Sqrt Sub Sum Tan Tanh ' +
    'ThresholdedRelu Tile Transpose Trilu Where Xor CumSum DynamicQuantizeLinear Celu GreaterOrEqual ' +
    // 13 -> 21: new attributes or types only, defaults keeping the old meaning (not GridSample, whose
    // modes were renamed at 20, nor DFT, whose axis became an input)
    'HardSwish LayerNormalization Mish Shape CenterCropPad Col2Im BitwiseAnd BitwiseOr BitwiseXor BitwiseNot Gelu'
  ).split(/\s+/),
);

function i64(idx: GraphIndex, graph: GraphProto, base: string, values: number[]): string {
  const name = idx.fresh(base);
  (graph.initializer ??= []).push(makeTensor(name, DataType.INT64, [values.length], BigInt64Array.from(values.map((v) => BigInt(v)))));
  return name;
}
function f32(idx: GraphIndex, graph: GraphProto, base: string, v: number): string {
  const name = idx.fresh(base);
  (graph.initializer ??= []).push(makeTensor(name, DataType.FLOAT, [], Float32Array.of(v)));
  return name;
}
const without = (n: NodeProto, names: string[]) => (n.attribute = (n.attribute ?? []).filter((a) => !names.includes(a.name ?? '')));

/** Rewrite one node from `from` semantics to opset 13; returns the replacement nodes. */
function upgradeNode(n: NodeProto, from: number, to: number, graph: GraphProto, idx: GraphIndex): NodeProto[] {
  const op = n.op_type ?? '';
  const label = n.name || op;
  const inputs = (n.input ??= []);
  switch (op) {
    case 'Slice':
      if (from < 10) {
        const starts = attrInts(n, 'starts') ?? fail(`${label}: Slice without starts`);
        const ends = attrInts(n, 'ends') ?? fail(`${label}: Slice without ends`);
        const axes = attrInts(n, 'axes');
        // ends of INT64_MAX style (attrInts reads them as numbers; 2^63-1 rounds to 2^63, still "to the end")
        inputs.push(i64(idx, graph, `${label}_starts`, starts), i64(idx, graph, `${label}_ends`, ends.map((e) => Math.min(e, Number.MAX_SAFE_INTEGER))));
        if (axes) inputs.push(i64(idx, graph, `${label}_axes`, axes));
        without(n, ['starts', 'ends', 'axes']);
      }
      return [n];
    case 'Clip':
      if (from < 11) {
        const lo = attr(n, 'min') ? attrFloat(n, 'min', 0) : undefined;
        const hi = attr(n, 'max') ? attrFloat(n, 'max', 0) : undefined;
        inputs.push(lo === undefined ? '' : f32(idx, graph, `${label}_min`, lo), hi === undefined ? '' : f32(idx, graph, `${label}_max`, hi));
        while (inputs.length && inputs[inputs.length - 1] === '') inputs.pop();
        without(n, ['min', 'max']);
      }
      return [n];
    case 'Pad':
      if (from < 11) {
        const pads = attrInts(n, 'pads') ?? fail(`${label}: Pad without pads`);
        inputs.push(i64(idx, graph, `${label}_pads`, pads));
        if (attr(n, 'value')) inputs.push(f32(idx, graph, `${label}_value`, attrFloat(n, 'value', 0)));
        without(n, ['pads', 'value']);
      }
      return [n];
    case 'TopK':
      if (from < 10) {
        inputs.push(i64(idx, graph, `${label}_k`, [attrInt(n, 'k', 1)]));
        without(n, ['k']);
      }
      return [n];
    case 'Squeeze':
    case 'Unsqueeze':
    case 'ReduceSum':
    case 'ReduceMean':
    case 'ReduceMax':
    case 'ReduceMin':
    case 'ReduceProd':
    case 'ReduceL1':
    case 'ReduceL2':
    case 'ReduceLogSum':
    case 'ReduceLogSumExp':
    case 'ReduceSumSquare': {
      // axes became an input at 13 (Squeeze, Unsqueeze, ReduceSum) or 18 (the other reductions)
      const axes = attrInts(n, 'axes');
      const at = op === 'Squeeze' || op === 'Unsqueeze' || op === 'ReduceSum' ? 13 : 18;
      if (axes && to >= at) {
        inputs.length = 1;
        inputs.push(i64(idx, graph, `${label}_axes`, axes));
        without(n, ['axes']);
      }
      return [n];
    }
    case 'Split': {
      const split = attrInts(n, 'split');
      if (split) {
        inputs.length = 1;
        inputs.push(i64(idx, graph, `${label}_split`, split));
        without(n, ['split']);
      }
      return [n];
    }
    case 'Softmax':
    case 'LogSoftmax':
    case 'Hardmax': {
      if (from >= 13) return [n];
      const axis = attrInt(n, 'axis', 1);
      const x = inputs[0];
      const y = n.output![0];
      const flat = idx.fresh(`${label}_2d`);
      const shape = idx.fresh(`${label}_shape`);
      const inner = idx.fresh(`${label}_out2d`);
      return [
        node('Shape', [x], [shape], {}, `${label}_shape`),
        node('Flatten', [x], [flat], { axis }, `${label}_flatten`),
        node(op, [flat], [inner], { axis: -1 }, label),
        node('Reshape', [inner, shape], [y], {}, `${label}_reshape`),
      ];
    }
    case 'Dropout':
      return [node('Identity', [inputs[0]], [n.output![0]], {}, label)];
    default:
      if (UNCHANGED.has(op)) return [n];
      fail(`cannot raise the opset from ${from} to ${to}: op ${op} (${label}) is not known to keep its meaning`);
  }
}

/**
 * Raise the default-domain opset to `target` (13, or 21 for float8 QuantizeLinear/DequantizeLinear),
 * rewriting nodes as needed. No-op when already there.
 */
export function upgradeOpset(m: ModelProto, target = 13): boolean {
  const from = opsetVersion(m, '') ?? fail('the model has no default-domain opset');
  if (from >= target) return false;
  if (target !== 13 && target !== 21) fail(`internal error: opset upgrade to ${target}`);
  const idx = indexGraph(m);
  for (const { graph } of allGraphs(m)) {
    const out: NodeProto[] = [];
    for (const n of graph.node ?? []) {
      if ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx') {
        out.push(n);
        continue;
      }
      out.push(...upgradeNode(n, from, target, graph, idx));
    }
    graph.node = out;
  }
  const o = m.opset_import!.find((x) => (x.domain ?? '') === '' || x.domain === 'ai.onnx')!;
  o.version = target;
  // IR 7 for opset 13; IR 10 for opset 21 (IR 9 brought the float8 types)
  const ir = target >= 21 ? 10 : 7;
  if (Number(m.ir_version) < ir) m.ir_version = ir;
  return true;
}
