/**
 * QDQ quantization (onnxruntime's "QDQ format"): weights stored as int8 with per-output-channel scales
 * behind DequantizeLinear (axis = the output channel), activations through QuantizeLinear ->
 * DequantizeLinear with calibrated per-tensor uint8 ranges (static) or DynamicQuantizeLinear ->
 * DequantizeLinear (dynamic). onnxruntime fuses the pattern into integer kernels where it has them;
 * either way the numbers are those of int8 inference.
 *
 *   weight:     s_c = max|w_c| / 127, q = clamp(round(w / s_c), -127, 127), zero point 0 (symmetric)
 *   activation: s = (hi - lo) / 255, zp = round(-lo / s) in 0..255, lo <= 0 <= hi (0 exact)
 * Ranges (lo, hi) come from calibration: minmax, percentile (99.99 % of values inside), mse (the clip of
 * each end of [min, max], by 0.9^k, with the least quantization error over the histogram) or entropy (the clip
 * with the least KL divergence between the histogram and its 256-level quantization, TensorRT's rule).
 * Per-axis DequantizeLinear needs opset 13: older models are raised first (opset.ts).
 *
 * FP8 (`format: 'fp8'`, opset 21, float8e4m3fn codes, zero point 0): weights s_c = max|w_c| / 448,
 * activations s = max(|lo|, |hi|) / 448 (static only: DynamicQuantizeLinear is uint8), codes by
 * lowbit's e4m3fn encoder (round to nearest even, saturating as QuantizeLinear's saturate = 1 does).
 */
import { fail } from '../../errors.js';
import { encodeOne, decodeOne, resolveCast } from '../../formats/cast.js';
import { fp8_e4m3fn } from '../../formats/registry.js';
import { node as mkNode } from './build.js';
import { addInitializer, indexGraph, insertBefore, nodeLabel, removeIfUnused, useCounts } from './graph-edit.js';
import { allGraphs, attrInt, isFloatType, makeTensor, opsetVersion, tensorFloat32, tensorShape, type OnnxModel, type WeightRef } from './model.js';
import { sqnrDb, type NodeReport } from './nbits.js';
import { upgradeOpset } from './opset.js';
import { DataType, type GraphProto, type NodeProto } from './schema.js';

export type CalibMethod = 'minmax' | 'percentile' | 'mse' | 'entropy';
export const CALIB_METHODS: readonly CalibMethod[] = ['minmax', 'percentile', 'mse', 'entropy'];
export const QDQ_OPS = ['Conv', 'MatMul', 'Gemm'] as const;
export type QdqFormat = 'int8' | 'fp8';
/** (1 + 6/8) * 2^8 = 448, e4m3fn's largest finite value */
const FP8_MAX = 448;
const FP8_CAST = resolveCast(fp8_e4m3fn);
/** e4m3fn code of a float32 value (nearest even, saturating) and its value */
export const fp8Code = (x: number): number => encodeOne(fp8_e4m3fn, Math.fround(x), FP8_CAST, 0);
export const fp8Value = (code: number): number => decodeOne(fp8_e4m3fn, code);

export interface QdqTarget {
  readonly node: NodeProto;
  readonly graph: GraphProto;
  readonly graphPath: string;
  readonly weight: WeightRef;
  readonly activation: string;
  /** the weight's output-channel axis */
  readonly axis: number;
}

/** Conv / MatMul / Gemm nodes (of the requested op types) with a constant float weight. */
export function qdqTargets(m: OnnxModel, ops: ReadonlySet<string>): QdqTarget[] {
  const idx = indexGraph(m.proto);
  const out: QdqTarget[] = [];
  for (const { graph, path } of allGraphs(m.proto))
    for (const n of graph.node ?? []) {
      const op = n.op_type ?? '';
      if ((n.domain ?? '') !== '' || !ops.has(op)) continue;
      const w = idx.constants.get(n.input?.[1] ?? '');
      if (!w || !isFloatType(w.tensor.data_type)) continue;
      const rank = tensorShape(w.tensor).length;
      if (op === 'Conv' ? rank < 3 : rank !== 2) continue;
      if (op === 'Gemm' && attrInt(n, 'transA', 0) !== 0) continue;
      const axis = op === 'Conv' ? 0 : op === 'Gemm' && attrInt(n, 'transB', 0) !== 0 ? 0 : 1;
      out.push({ node: n, graph, graphPath: path, weight: w, activation: n.input![0], axis });
    }
  return out;
}

/**
 * Symmetric per-channel quantization of a weight along `axis` to int8 (codes as Int8Array) or e4m3fn
 * (codes as bytes): codes, scales and the dequantized values.
 */
export function quantizePerChannel(w: Float32Array, shape: number[], axis: number, format: QdqFormat = 'int8'): { q: Int8Array | Uint8Array; scales: Float32Array; dq: Float32Array } {
  const fp8 = format === 'fp8';
  const qmax = fp8 ? FP8_MAX : 127;
  const C = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = w.length / (C * inner);
  const scales = new Float32Array(C);
  const q = fp8 ? new Uint8Array(w.length) : new Int8Array(w.length);
  const dq = new Float32Array(w.length);
  // channel c covers runs [(o * C + c) * inner, +inner) for every outer index o
  for (let c = 0; c < C; c++) {
    let amax = 0;
    for (let o = 0; o < outer; o++) {
      const base = (o * C + c) * inner;
      for (let j = 0; j < inner; j++) amax = Math.max(amax, Math.abs(w[base + j]));
    }
    scales[c] = amax > 0 ? amax / qmax : 1;
  }
  for (let c = 0; c < C; c++) {
    const s = scales[c];
    for (let o = 0; o < outer; o++) {
      const base = (o * C + c) * inner;
      for (let j = 0; j < inner; j++) {
        if (fp8) {
          const code = fp8Code(w[base + j] / s);
          q[base + j] = code;
          dq[base + j] = Math.fround(fp8Value(code) * s);
          continue;
        }
        const v = Math.max(-127, Math.min(127, Math.round(w[base + j] / s)));
        q[base + j] = v;
        dq[base + j] = Math.fround(v * s);
      }
    }
  }
  return { q, scales, dq };
}

/** uint8 (or uint16) activation parameters of a range (0 exactly representable) */
export function activationParams(lo: number, hi: number, bits: 8 | 16 = 8): { scale: number; zeroPoint: number } {
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  const qmax = bits === 16 ? 65535 : 255;
  const scale = Math.fround(hi > lo ? (hi - lo) / qmax : 1);
  return { scale, zeroPoint: Math.max(0, Math.min(qmax, Math.round(-lo / scale))) };
}

/**
 * The activation quantizer of a calibrated range: uint8 (asymmetric, activationParams) or e4m3fn
 * (symmetric, zero point 0); `fq` is its fake quantization (QuantizeLinear then DequantizeLinear).
 */
export function activationQuantizer(lo: number, hi: number, format: QdqFormat = 'int8'): { scale: number; zeroPoint: number; fq: (v: number) => number } {
  if (format === 'fp8') {
    const amax = Math.max(Math.abs(lo), Math.abs(hi));
    const scale = Math.fround(amax > 0 ? amax / FP8_MAX : 1);
    return { scale, zeroPoint: 0, fq: (v) => fp8Value(fp8Code(v / scale)) * scale };
  }
  const { scale, zeroPoint } = activationParams(lo, hi);
  return { scale, zeroPoint, fq: (v) => (Math.max(0, Math.min(255, Math.round(v / scale) + zeroPoint)) - zeroPoint) * scale };
}

// ---------------------------------------------------------------------------------------------------
// Calibration ranges

const BINS = 2048;

/** Two passes over the calibration activations: min/max, then (for the other methods) a histogram. */
export class RangeCollector {
  readonly min = new Map<string, number>();
  readonly max = new Map<string, number>();
  readonly hist = new Map<string, Float64Array>();
  /** channel counts of activations observed per channel */
  readonly channels = new Map<string, number>();
  /** per-channel sums of the float activation and of its quantized value (axis 1), for bias correction */
  readonly chanSum = new Map<string, { x: Float64Array; q: Float64Array; n: number }>();
  observeMinMax(name: string, x: Float32Array): void {
    let lo = this.min.get(name) ?? Infinity;
    let hi = this.max.get(name) ?? -Infinity;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    this.min.set(name, lo);
    this.max.set(name, hi);
  }
  /**
   * The same observations per channel (axis 1, NCHW) under the names `name#c`: per-channel activation
   * ranges (QuantizeLinear with axis = 1) use every method of `range` channel by channel.
   */
  observePerChannel(name: string, x: Float32Array, dims: readonly number[], what: 'minmax' | 'histogram'): void {
    if (dims.length < 2) return;
    const C = dims[1];
    const inner = dims.slice(2).reduce((a, b) => a * b, 1);
    for (let b = 0; b < x.length / (C * inner); b++)
      for (let c = 0; c < C; c++) {
        const part = x.subarray((b * C + c) * inner, (b * C + c + 1) * inner);
        if (what === 'minmax') this.observeMinMax(`${name}#${c}`, part);
        else this.observeHistogram(`${name}#${c}`, part);
      }
    this.channels.set(name, C);
  }
  /** per-channel ranges (after observePerChannel) */
  channelRanges(name: string, method: CalibMethod): [Float32Array, Float32Array] | undefined {
    const C = this.channels.get(name);
    if (!C) return undefined;
    const lo = new Float32Array(C);
    const hi = new Float32Array(C);
    for (let c = 0; c < C; c++) [lo[c], hi[c]] = this.range(`${name}#${c}`, method);
    return [lo, hi];
  }
  observeHistogram(name: string, x: Float32Array): void {
    const lo = this.min.get(name)!;
    const hi = this.max.get(name)!;
    let h = this.hist.get(name);
    if (!h) this.hist.set(name, (h = new Float64Array(BINS)));
    const w = (hi - lo) / BINS || 1;
    for (let i = 0; i < x.length; i++) h[Math.min(BINS - 1, Math.max(0, Math.floor((x[i] - lo) / w)))]++;
  }
  /**
   * Per-channel (axis 1, NCHW) sums of the activation and, when `range` is given, of its uint8 (or
   * e4m3fn) fake-quantized value: E[x_c] and E[q(x)_c] for bias correction.
   */
  observeChannels(name: string, x: Float32Array, dims: readonly number[], range?: [number, number] | [Float32Array, Float32Array], format: QdqFormat = 'int8'): void {
    if (dims.length < 2) return;
    const C = dims[1];
    const inner = dims.slice(2).reduce((a, b) => a * b, 1);
    let acc = this.chanSum.get(name);
    if (!acc) this.chanSum.set(name, (acc = { x: new Float64Array(C), q: new Float64Array(C), n: 0 }));
    const fqs = range ? Array.from({ length: C }, (_, c) => (typeof range[0] === 'number' ? activationQuantizer(range[0], range[1] as number, format) : activationQuantizer(range[0][c], (range[1] as Float32Array)[c], format)).fq) : undefined;
    for (let b = 0; b < x.length / (C * inner); b++)
      for (let c = 0; c < C; c++) {
        let sx = 0;
        let sq = 0;
        const base = (b * C + c) * inner;
        const fq = fqs?.[c];
        for (let j = 0; j < inner; j++) {
          const v = x[base + j];
          sx += v;
          if (fq) sq += fq(v);
        }
        acc.x[c] += sx;
        acc.q[c] += range ? sq : sx;
      }
    acc.n += x.length / C;
  }
  /** E[x_c] and E[q(x)_c] per channel */
  channelMeans(name: string): { x: Float64Array; q: Float64Array } | undefined {
    const a = this.chanSum.get(name);
    return a && { x: a.x.map((v) => v / a.n), q: a.q.map((v) => v / a.n) };
  }
  range(name: string, method: CalibMethod, percentile = 99.99): [number, number] {
    const lo = this.min.get(name);
    const hi = this.max.get(name);
    if (lo === undefined || hi === undefined) fail(`internal error: no calibration range for ${name}`);
    if (method === 'minmax' || !(hi > lo)) return [lo, hi];
    const h = this.hist.get(name) ?? fail(`internal error: no histogram for ${name}`);
    const w = (hi - lo) / BINS;
    const center = (b: number) => lo + (b + 0.5) * w;
    if (method === 'percentile') {
      const total = h.reduce((a, b) => a + b, 0);
      const tail = (total * (100 - percentile)) / 200;
      let acc = 0;
      let b0 = 0;
      while (b0 < BINS - 1 && acc + h[b0] <= tail) acc += h[b0++];
      acc = 0;
      let b1 = BINS - 1;
      while (b1 > 0 && acc + h[b1] <= tail) acc += h[b1--];
      return [lo + b0 * w, lo + (b1 + 1) * w];
    }
    // clip the top, then the bottom: candidates shrink each end geometrically (0.9^k, to 1 %). Entropy
    // (as TensorRT and onnxruntime do) only considers clips spanning at least one histogram bin per
    // quantization level: narrower, each level holds one bin, Q equals P inside and KL stops measuring
    // the rounding at all (it then picks the narrowest clip and the model collapses: 0/200 PP-OCRv4 lines).
    const minSpan = method === 'entropy' ? 256 * w : 0;
    const cost = (cl: number, ch: number) => {
      const { scale, zeroPoint } = activationParams(cl, ch);
      return method === 'mse' ? mseCost(h, center, scale, zeroPoint) : klCost(h, lo, w, scale, zeroPoint);
    };
    let best: [number, number] = [lo, hi];
    for (const end of [1, 0] as const) {
      let bestCost = cost(best[0], best[1]);
      const start = best[end];
      for (let r = 0.9; r >= 0.01; r *= 0.9) {
        const cand: [number, number] = end ? [best[0], start * r] : [start * r, best[1]];
        if (cand[1] - cand[0] < minSpan) break;
        const c = cost(cand[0], cand[1]);
        if (c < bestCost) {
          bestCost = c;
          best = cand;
        }
      }
    }
    return best;
  }
}

function mseCost(h: Float64Array, center: (b: number) => number, scale: number, zp: number): number {
  let e = 0;
  for (let b = 0; b < BINS; b++) {
    if (!h[b]) continue;
    const v = center(b);
    const q = (Math.max(0, Math.min(255, Math.round(v / scale) + zp)) - zp) * scale;
    e += h[b] * (v - q) ** 2;
  }
  return e;
}

/**
 * KL(P || Q) as TensorRT's entropy calibration defines it: P the histogram restricted to the clip range
 * with the mass outside folded into the edge bins, Q that P merged into the 256 uint8 levels and spread
 * evenly over each level's non-empty bins.
 */
function klCost(h: Float64Array, lo: number, w: number, scale: number, zp: number): number {
  const cl = (0 - zp) * scale;
  const ch = (255 - zp) * scale;
  const b0 = Math.max(0, Math.min(BINS - 1, Math.floor((cl - lo) / w)));
  const b1 = Math.max(b0, Math.min(BINS - 1, Math.floor((ch - lo) / w)));
  // P: in-range bins, the outside mass folded into the edges; Q from the in-range bins only (the
  // folded mass is what clipping costs)
  const n = b1 - b0 + 1;
  const p = new Float64Array(n);
  for (let b = 0; b < BINS; b++) p[Math.min(b1, Math.max(b0, b)) - b0] += h[b];
  const level = new Int32Array(n);
  const sum = new Float64Array(256);
  const cnt = new Float64Array(256);
  let totalP = 0;
  let totalQ = 0;
  for (let i = 0; i < n; i++) {
    const v = lo + (b0 + i + 0.5) * w;
    const l = Math.max(0, Math.min(255, Math.round(v / scale) + zp));
    level[i] = l;
    totalP += p[i];
    const inRange = h[b0 + i];
    if (!inRange) continue;
    sum[l] += inRange;
    cnt[l]++;
    totalQ += inRange;
  }
  let kl = 0;
  for (let i = 0; i < n; i++) {
    if (!p[i]) continue;
    const q = cnt[level[i]] && h[b0 + i] ? sum[level[i]] / cnt[level[i]] / totalQ : 1e-12;
    kl += (p[i] / totalP) * Math.log(p[i] / totalP / q);
  }
  return kl;
}

// ---------------------------------------------------------------------------------------------------
// The rewrite

export interface QdqOptions {
  ops: ReadonlySet<string>;
  /** 'static' needs ranges; 'none' quantizes weights only */
  activations: 'static' | 'dynamic' | 'none';
  /**
   * int8 weights + uint8 activations (default, opset 13) or e4m3fn both (opset 21: float8 QDQ exists
   * from 19, but onnxruntime moves Q/DQ pairs across Reshape/Unsqueeze/Transpose, which take float8
   * only from 21; at 19 such a model fails to load)
   */
  format?: QdqFormat;
  /** activation name -> [lo, hi] (static), or per channel (axis 1): QuantizeLinear with 1-D scales */
  ranges?: Map<string, [number, number] | [Float32Array, Float32Array]>;
  keep?: ReadonlySet<string>;
  /**
   * Bias correction (Nagel et al. 2019, "Data-Free Quantization", empirical form): per input channel
   * E[x] and E[q(x)] of each Conv's activation on the calibration data (RangeCollector.channelMeans).
   * The Conv bias becomes b + sum W E[x] - sum Wq E[q(x)]: the mean of each output channel is the
   * float model's. Needed where a kernel sums to ~0 over a large constant input (edge filters on a
   * white page), so a tiny weight error times the input's level moves the whole output.
   */
  means?: Map<string, { x: Float64Array; q: Float64Array }>;
  /**
   * Per-node bias correction terms (node label -> E[x] per input channel of the float model and E[q(x)]
   * of the input as it arrives, quantized, in the partly quantized model: the sequential correction of
   * quantize-onnx.ts). Used as given (no uint16 substitution) and before `means`.
   */
  nodeMeans?: ReadonlyMap<string, { x: Float64Array; q: Float64Array }>;
  /** activations left alone (another quantizer handles them: vit-act.ts) */
  skipActivations?: ReadonlySet<string>;
  /**
   * node labels whose static activation is uint16 instead of uint8 (per tensor, the same calibrated
   * range: 256x finer steps for the few activations whose range is wide). QuantizeLinear takes 16-bit
   * integers from opset 21, so the model is raised to 21.
   */
  act16?: ReadonlySet<string>;
}

/** the corrected Conv bias (see QdqOptions.means); undefined when the shapes do not fit */
export function correctedConvBias(w: Float32Array, dq: Float32Array, shape: readonly number[], group: number, bias: Float32Array | undefined, mean: { x: Float64Array; q: Float64Array }): Float32Array | undefined {
  const [OC, ICg] = shape;
  const k = shape.slice(2).reduce((a, b) => a * b, 1);
  if (mean.x.length !== ICg * group || OC % group) return undefined;
  const out = new Float32Array(OC);
  const perGroup = OC / group;
  for (let oc = 0; oc < OC; oc++) {
    const icBase = Math.floor(oc / perGroup) * ICg;
    let d = 0;
    for (let ic = 0; ic < ICg; ic++) {
      let sw = 0;
      let sq = 0;
      const base = (oc * ICg + ic) * k;
      for (let j = 0; j < k; j++) {
        sw += w[base + j];
        sq += dq[base + j];
      }
      d += sw * mean.x[icBase + ic] - sq * mean.q[icBase + ic];
    }
    out[oc] = (bias?.[oc] ?? 0) + d;
  }
  return out;
}

export async function quantizeQdq(m: OnnxModel, opts: QdqOptions, warn: (msg: string) => void = () => {}): Promise<NodeReport[]> {
  const targets = qdqTargets(m, opts.ops);
  if (!targets.length) return [];
  const format = opts.format ?? 'int8';
  if (format === 'fp8' && opts.activations === 'dynamic') fail('FP8 QDQ has no dynamic activations (DynamicQuantizeLinear is uint8): use calibrated ranges or weights only');
  const opset = format === 'fp8' || (opts.act16?.size && opts.activations === 'static') ? 21 : 13;
  if ((opsetVersion(m.proto, '') ?? 0) < opset) upgradeOpset(m.proto, opset);
  const wType = format === 'fp8' ? DataType.FLOAT8E4M3FN : DataType.INT8;
  const wName = format === 'fp8' ? 'fp8' : 'int8';
  const idx = indexGraph(m.proto);
  const reports: NodeReport[] = [];
  const weightDone = new Map<string, { dq: string; sqnr: number }>();
  const actDone = new Map<string, string>();
  const biases: WeightRef[] = [];
  for (const t of targets) {
    const label = nodeLabel(t.node);
    const shape = tensorShape(t.weight.tensor);
    const base = { node: label, op: t.node.op_type ?? '', K: shape.slice(1).reduce((a, b) => a * b, 1), N: shape[t.axis] };
    if (opts.keep?.has(label) || opts.keep?.has(t.node.name ?? '')) {
      reports.push({ ...base, action: 'kept', reason: '--keep' });
      continue;
    }
    // weight: int8 per channel behind DequantizeLinear
    const wkey = `${t.weight.name}|${t.axis}|${t.graphPath}`;
    let wq = weightDone.get(wkey);
    const nodeMean = t.node.op_type === 'Conv' ? opts.nodeMeans?.get(label) : undefined;
    const mean = t.node.op_type === 'Conv' ? (nodeMean ?? opts.means?.get(t.activation)) : undefined;
    if (!wq || mean) {
      const w = await tensorFloat32(m, t.weight.tensor);
      const { q, scales, dq } = quantizePerChannel(w, shape, t.axis, format);
      if (!wq) {
        const qn = idx.fresh(`${t.weight.name}_${wName}`);
        const sn = idx.fresh(`${t.weight.name}_scale`);
        const zn = idx.fresh(`${t.weight.name}_zero_point`);
        const dn = idx.fresh(`${t.weight.name}_dequantized`);
        addInitializer(m.proto, t.graph, makeTensor(qn, wType, shape, q));
        addInitializer(m.proto, t.graph, makeTensor(sn, DataType.FLOAT, [scales.length], scales));
        addInitializer(m.proto, t.graph, makeTensor(zn, wType, [scales.length], new Uint8Array(scales.length)));
        insertBefore(t.graph, t.node, [mkNode('DequantizeLinear', [qn, sn, zn], [dn], { axis: t.axis }, `${dn}_node`)]);
        wq = { dq: dn, sqnr: sqnrDb(w, dq) };
        weightDone.set(wkey, wq);
      }
      // bias correction: a new bias per node (it depends on the node's input), the old one dropped when unused
      const bName = t.node.input?.[2];
      const bRef = bName ? idx.constants.get(bName) : undefined;
      if (mean && (!bName || bRef)) {
        // uint16 activations: E[q(x)] ~ E[x] (the collected E[q(x)] is the uint8 one)
        const act16 = opts.act16?.has(label) || opts.act16?.has(t.node.name ?? '');
        const actMean = nodeMean ?? (opts.activations === 'static' && !act16 ? mean : { x: mean.x, q: mean.x });
        const nb = correctedConvBias(w, dq, shape, attrInt(t.node, 'group', 1), bRef && (await tensorFloat32(m, bRef.tensor)), actMean);
        if (nb) {
          const bn = idx.fresh(`${t.weight.name}_bias_corrected`);
          addInitializer(m.proto, t.graph, makeTensor(bn, DataType.FLOAT, [nb.length], nb));
          (t.node.input ??= []).length = Math.max(t.node.input.length, 3);
          t.node.input[2] = bn;
          if (bRef) biases.push(bRef);
        }
      }
    }
    t.node.input![1] = wq.dq;
    // activation
    let act = 'weights only';
    if (opts.skipActivations?.has(t.activation)) act = 'activation by --act-quantizer';
    else if (opts.activations !== 'none') {
      const wide16 = opts.activations === 'static' && format === 'int8' && !!(opts.act16?.has(label) || opts.act16?.has(t.node.name ?? ''));
      const akey = `${t.activation}|${t.graphPath}|${wide16 ? 16 : 8}`;
      let dqa = actDone.get(akey);
      const range = opts.ranges?.get(t.activation);
      if (!dqa && opts.activations === 'static' && !range) {
        warn(`${label}: no calibration range for its input ${t.activation} (inside a subgraph?); activation left in float`);
      } else if (!dqa) {
        const qa = idx.fresh(`${t.activation}_quantized`);
        dqa = idx.fresh(`${t.activation}_dequantized`);
        if (opts.activations === 'static') {
          // per tensor: scalar scale and zero point; per channel: 1-D along axis 1
          const [lo, hi] = range!;
          const aq = (l: number, h: number) => (wide16 ? activationParams(l, h, 16) : activationQuantizer(l, h, format));
          const params = typeof lo === 'number' ? [aq(lo, hi as number)] : Array.from(lo, (l, c) => aq(l, (hi as Float32Array)[c]));
          const dims = typeof lo === 'number' ? [] : [params.length];
          const attrs: Record<string, number> = typeof lo === 'number' ? {} : { axis: 1 };
          const sn = idx.fresh(`${t.activation}_scale`);
          const zn = idx.fresh(`${t.activation}_zero_point`);
          addInitializer(m.proto, t.graph, makeTensor(sn, DataType.FLOAT, dims, Float32Array.from(params, (p) => p.scale)));
          addInitializer(m.proto, t.graph, wide16 ? makeTensor(zn, DataType.UINT16, dims, Uint16Array.from(params, (p) => p.zeroPoint)) : makeTensor(zn, format === 'fp8' ? DataType.FLOAT8E4M3FN : DataType.UINT8, dims, Uint8Array.from(params, (p) => p.zeroPoint)));
          insertBefore(t.graph, t.node, [mkNode('QuantizeLinear', [t.activation, sn, zn], [qa], attrs, `${qa}_node`), mkNode('DequantizeLinear', [qa, sn, zn], [dqa], attrs, `${dqa}_node`)]);
        } else {
          const sn = idx.fresh(`${t.activation}_scale`);
          const zn = idx.fresh(`${t.activation}_zero_point`);
          insertBefore(t.graph, t.node, [mkNode('DynamicQuantizeLinear', [t.activation], [qa, sn, zn], {}, `${qa}_node`), mkNode('DequantizeLinear', [qa, sn, zn], [dqa], {}, `${dqa}_node`)]);
        }
        actDone.set(akey, dqa);
      }
      if (dqa) {
        t.node.input![0] = dqa;
        act = opts.activations === 'static' ? `${format === 'fp8' ? 'fp8' : wide16 ? 'uint16' : 'uint8'} static${typeof range?.[0] === 'number' ? '' : ' per channel'}` : 'uint8 dynamic';
      }
    }
    reports.push({ ...base, action: `QDQ ${wName}/ch + ${act}`, sqnrDb: wq.sqnr });
  }
  const uses = useCounts(m.proto);
  for (const w of [...targets.map((t) => t.weight), ...biases]) removeIfUnused(m.proto, w, uses);
  return reports;
}
