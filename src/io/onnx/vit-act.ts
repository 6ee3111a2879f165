/**
 * Activation quantizers from the vision-transformer PTQ literature, written as ONNX ops onnxruntime runs:
 *
 * - post-softmax (attention probabilities feeding a MatMul):
 *     uniform  b-bit asymmetric (QuantizeLinear uint8, codes clipped to 0..2^b-1 below 8 bits)
 *     log2     x^ = s * 2^-q, q = round(-log2(x / s)) in 0..2^b-1, 0 beyond (FQ-ViT's log2 quantizer;
 *              s = the calibrated maximum): Div, Log, Mul, Round, Max, Less, Pow, Mul, Where
 *     logsqrt2 the same in base sqrt 2 (RepQ-ViT's log-sqrt-2 quantizer): x^ = s * 2^(-q/2), q = round(-2
 *              log2(x / s)); half the relative step of log2 (log2 rounds 0.7 to 0.5 or 1)
 *     twin     PTQ4ViT's twin uniform: R1 = [0, 2^(b-1) D1) with step D1, R2 = [0, 2^(b-1) D2) with step
 *              D2 = 2^m D1 (one bit says which): two int8 QuantizeLinear/DequantizeLinear and a Where
 * - post-GELU (GELU, its Erf form, or swish x * sigmoid(c x), feeding a MatMul/Gemm):
 *     uniform  as above
 *     twin     R1 = [-2^(b-1) D1, 0] for the negative part (D1 covers the calibrated minimum), R2 = [0,
 *              (2^(b-1) - 1) D2] for the positive part (D2 searched): Less(x, 0) selects
 * - LayerNorm inputs (LayerNormalization's X, or the ReduceMean/Sub of a decomposed LayerNorm), where a
 *   few channels carry outliers:
 *     tensor   one uint8 range
 *     ptf      FQ-ViT's power-of-two factor: channel c uses scale s * 2^a_c (a_c in 0..3 chosen per channel
 *              by squared error), one zero point; s from the whole range / 2^3. QuantizeLinear axis = -1.
 *     channel  one range per channel (last axis)
 * Every quantizer's parameters come from calibration samples (the squared error of the quantizer over the
 * captured activations is minimized over its free parameter); `fakeQuant*` are the reference quantizers
 * (float64) whose numbers onnxruntime reproduces (tested).
 */
import { fail } from '../../errors.js';
import { node as mkNode } from './build.js';
import { addInitializer, indexGraph, insertBefore, type GraphIndex } from './graph-edit.js';
import { allGraphs, attrInt, makeTensor, opsetVersion, type OnnxModel } from './model.js';
import type { NodeReport } from './nbits.js';
import { upgradeOpset } from './opset.js';
import { DataType, type GraphProto, type ModelProto, type NodeProto } from './schema.js';

export type SoftmaxQuantizer = 'uniform' | 'log2' | 'logsqrt2' | 'twin';
export type GeluQuantizer = 'uniform' | 'twin';
export type LnQuantizer = 'tensor' | 'ptf' | 'channel';
export const ACT_QUANTIZERS = ['uniform', 'log2', 'logsqrt2', 'twin'] as const;
export const LN_QUANTIZERS = ['tensor', 'ptf', 'channel'] as const;
export type SiteKind = 'softmax' | 'gelu' | 'layernorm';

export interface ActSite {
  kind: SiteKind;
  /** the activation's value name */
  name: string;
  graph: GraphProto;
  graphPath: string;
  /** the nodes whose reads of `name` get the quantized value */
  consumers: NodeProto[];
}

const SHAPE_OPS = new Set(['Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Identity']);
const isDefault = (n: NodeProto) => (n.domain ?? '') === '' || n.domain === 'ai.onnx';

/** post-softmax, post-GELU/swish and LayerNorm-input activations (every graph) */
export function actSites(m: ModelProto, kinds: ReadonlySet<SiteKind>): ActSite[] {
  const out: ActSite[] = [];
  for (const { graph, path } of allGraphs(m)) {
    const nodes = graph.node ?? [];
    const producer = new Map<string, NodeProto>();
    const readers = new Map<string, NodeProto[]>();
    for (const n of nodes) {
      for (const o of n.output ?? []) producer.set(o, n);
      for (const i of n.input ?? []) if (i) readers.set(i, [...(readers.get(i) ?? []), n]);
    }
    const matmulReaders = (v: string) => (readers.get(v) ?? []).filter((r) => isDefault(r) && (r.op_type === 'MatMul' || r.op_type === 'Gemm'));
    const seen = new Set<string>();
    const add = (kind: SiteKind, name: string, consumers: NodeProto[]) => {
      if (!consumers.length || seen.has(name)) return;
      seen.add(name);
      out.push({ kind, name, graph, graphPath: path, consumers });
    };
    /** is `v` computed from `x` by at most one Mul/Div by a constant-looking operand? */
    const scaledFrom = (v: string, x: string) => v === x || ((p) => !!p && (p.op_type === 'Mul' || p.op_type === 'Div') && p.input?.[0] === x)(producer.get(v));
    for (const n of nodes) {
      const op = n.op_type ?? '';
      const o = n.output?.[0] ?? '';
      if (kinds.has('softmax') && op === 'Softmax' && isDefault(n)) {
        // through shape-only ops (opset 13's explicit Flatten -> Softmax -> Reshape): quantization commutes with them
        let v = o;
        for (let r = readers.get(v) ?? []; r.length === 1 && SHAPE_OPS.has(r[0].op_type ?? '') && r[0].input?.[0] === v; r = readers.get(v) ?? []) v = r[0].output![0];
        add('softmax', v, matmulReaders(v));
      }
      if (kinds.has('gelu')) {
        if (op === 'Gelu' || op === 'FastGelu') add('gelu', o, matmulReaders(o));
        // swish: Mul(x, Sigmoid(x or c x))
        if (op === 'Mul' && isDefault(n) && n.input?.length === 2) {
          const [a, b] = n.input;
          for (const [x, s] of [[a, b], [b, a]]) {
            const sg = producer.get(s);
            if (sg?.op_type === 'Sigmoid' && scaledFrom(sg.input?.[0] ?? '', x)) add('gelu', o, matmulReaders(o));
          }
        }
        // Erf GELU: x * (1 + erf(x / sqrt 2)) (* 0.5, before or after)
        if (op === 'Erf') {
          const x = producer.get(n.input?.[0] ?? '')?.input?.[0];
          const plus = (readers.get(o) ?? []).find((r) => r.op_type === 'Add');
          const times = plus && (readers.get(plus.output?.[0] ?? '') ?? []).find((r) => r.op_type === 'Mul');
          if (x && times) {
            // x * (1 + erf) then * 0.5, or (0.5 x) * (1 + erf)
            const half = times.input?.includes(x) ? (readers.get(times.output?.[0] ?? '') ?? []).find((r) => r.op_type === 'Mul') : undefined;
            const last = half ?? times;
            add('gelu', last.output![0], matmulReaders(last.output![0]));
          }
        }
      }
      if (kinds.has('layernorm')) {
        if (op === 'LayerNormalization' && attrInt(n, 'axis', -1) === -1) add('layernorm', n.input![0], [n]);
        // decomposed: ReduceMean(x) -> Sub(x, mean)
        if (op === 'ReduceMean') {
          const x = n.input?.[0] ?? '';
          const sub = (readers.get(o) ?? []).find((r) => r.op_type === 'Sub' && r.input?.[0] === x && r.input?.[1] === o);
          if (sub) add('layernorm', x, [n, sub]);
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Reference quantizers (float64)

/** round half to even, as ONNX Round and QuantizeLinear */
export function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** b-bit asymmetric uniform: codes clamp(round(x / s) + zp, 0, 2^b - 1) */
export function fakeQuantUniform(x: number, scale: number, zp: number, bits: number): number {
  return (Math.max(0, Math.min(2 ** bits - 1, roundEven(x / scale) + zp)) - zp) * scale;
}

/** log2: s * 2^-q, q = max(0, round(-log2(x / s))), 0 when q >= 2^b or x <= 0; k = 2: base sqrt 2 (s * 2^(-q/2), q = round(-2 log2(x / s))) */
export function fakeQuantLog2(x: number, s: number, bits: number, k = 1): number {
  if (!(x > 0)) return 0;
  const q = Math.max(0, roundEven(-k * Math.log2(x / s)));
  return q < 2 ** bits ? s * 2 ** (-q / k) : 0;
}

/** int8-style symmetric codes clamp(round(x / d), -2^(b-1), 2^(b-1) - 1) * d */
const symQ = (x: number, d: number, bits: number) => Math.max(-(2 ** (bits - 1)), Math.min(2 ** (bits - 1) - 1, roundEven(x / d))) * d;

/**
 * twin uniform: softmax form (x below `threshold` = (2^(b-1) - 1/2) d1 uses step d1, the rest d2);
 * GELU form (threshold 0: negative values step d1, the rest d2)
 */
export function fakeQuantTwin(x: number, d1: number, d2: number, threshold: number, bits: number): number {
  return x < threshold ? symQ(x, d1, bits) : symQ(x, d2, bits);
}

// ---------------------------------------------------------------------------------------------------
// Calibration

/** values kept per site for the parameter searches */
const SAMPLE_CAP = 1 << 18;
/** LayerNorm rows (tokens) kept per site */
const ROW_CAP = 4096;

export class ActCollector {
  readonly min = new Map<string, number>();
  readonly max = new Map<string, number>();
  readonly samples = new Map<string, number[]>();
  /** per-channel (last axis) min/max and sampled rows of LayerNorm inputs */
  readonly rows = new Map<string, { C: number; lo: Float64Array; hi: Float64Array; kept: number[] }>();
  observe(site: ActSite, data: Float32Array, dims: readonly number[]): void {
    const name = site.name;
    let lo = this.min.get(name) ?? Infinity;
    let hi = this.max.get(name) ?? -Infinity;
    for (let i = 0; i < data.length; i++) {
      if (data[i] < lo) lo = data[i];
      if (data[i] > hi) hi = data[i];
    }
    this.min.set(name, lo);
    this.max.set(name, hi);
    if (site.kind === 'layernorm') {
      const C = dims[dims.length - 1];
      let r = this.rows.get(name);
      if (!r) this.rows.set(name, (r = { C, lo: new Float64Array(C).fill(Infinity), hi: new Float64Array(C).fill(-Infinity), kept: [] }));
      if (r.C !== C) fail(`LayerNorm input ${name}: last dimension changed from ${r.C} to ${C} between calibration samples`);
      const nRows = data.length / C;
      const stride = Math.max(1, Math.ceil(nRows / 512));
      for (let t = 0; t < nRows; t++) {
        for (let c = 0; c < C; c++) {
          const v = data[t * C + c];
          if (v < r.lo[c]) r.lo[c] = v;
          if (v > r.hi[c]) r.hi[c] = v;
        }
        if (t % stride === 0 && r.kept.length < ROW_CAP * C) for (let c = 0; c < C; c++) r.kept.push(data[t * C + c]);
      }
      return;
    }
    const s = this.samples.get(name) ?? [];
    this.samples.set(name, s);
    const stride = Math.max(1, Math.ceil(data.length / (SAMPLE_CAP / 8)));
    for (let i = 0; i < data.length && s.length < SAMPLE_CAP; i += stride) s.push(data[i]);
  }
}

/** the quantizer written for one site */
export type ActParams =
  | { q: 'uniform'; scale: number; zp: number }
  | { q: 'log2'; scale: number; k: 1 | 2 }
  | { q: 'twin'; d1: number; d2: number; threshold: number }
  | { q: 'uniform-axis'; scales: Float32Array; zps: Uint8Array; alphas?: Uint8Array };

const sse = (xs: ArrayLike<number>, f: (x: number) => number) => {
  let e = 0;
  for (let i = 0; i < xs.length; i++) e += (xs[i] - f(xs[i])) ** 2;
  return e;
};

function uniformParams(lo: number, hi: number, bits: number): { scale: number; zp: number } {
  lo = Math.min(lo, 0);
  hi = Math.max(hi, 0);
  const levels = 2 ** bits - 1;
  const scale = Math.fround(hi > lo ? (hi - lo) / levels : 1);
  return { scale, zp: Math.max(0, Math.min(levels, roundEven(-lo / scale))) };
}

/** uniform b-bit range by least squared error: the top, then the bottom clipped by 1 - k/50 (k < 45) */
export function searchUniform(all: ArrayLike<number>, lo: number, hi: number, bits: number): { scale: number; zp: number } {
  // the search runs on at most 2^16 values (strided), the range ends are the whole data's
  const stride = Math.ceil(all.length / 65536);
  const xs = stride > 1 ? Array.from({ length: Math.ceil(all.length / stride) }, (_, i) => all[i * stride]) : all;
  let best = [lo, hi];
  const cost = (l: number, h: number) => {
    const { scale, zp } = uniformParams(l, h, bits);
    return sse(xs, (x) => fakeQuantUniform(x, scale, zp, bits));
  };
  for (const end of [1, 0]) {
    let bestCost = cost(best[0], best[1]);
    const start = best[end];
    for (let k = 1; k < 45; k++) {
      const cand = end ? [best[0], start * (1 - k / 50)] : [start * (1 - k / 50), best[1]];
      const c = cost(cand[0], cand[1]);
      if (c < bestCost) {
        bestCost = c;
        best = cand;
      }
    }
  }
  return uniformParams(best[0], best[1], bits);
}

/** the parameters of one site's quantizer from its calibration data */
export function siteParams(c: ActCollector, site: ActSite, quantizer: SoftmaxQuantizer | LnQuantizer, bits: number): ActParams {
  const lo = c.min.get(site.name);
  const hi = c.max.get(site.name);
  if (lo === undefined || hi === undefined) fail(`internal error: no calibration data for ${site.name}`);
  const half = 2 ** (bits - 1);
  if (site.kind === 'layernorm') {
    const r = c.rows.get(site.name)!;
    const { C, kept } = r;
    if (quantizer === 'tensor') return { q: 'uniform', ...searchUniform(kept, lo, hi, bits) };
    const scales = new Float32Array(C);
    const zps = new Uint8Array(C);
    const col = (ch: number) => {
      const v: number[] = [];
      for (let i = ch; i < kept.length; i += C) v.push(kept[i]);
      return v;
    };
    if (quantizer === 'channel') {
      for (let ch = 0; ch < C; ch++) ({ scale: scales[ch], zp: zps[ch] } = searchUniform(col(ch), r.lo[ch], r.hi[ch], bits));
      return { q: 'uniform-axis', scales, zps };
    }
    // ptf: s = whole range / (2^b - 1) / 2^K, channel scale s * 2^a, one zero point
    const K = 3;
    const { scale: sTop, zp } = uniformParams(lo, hi, bits);
    const s = sTop / 2 ** K;
    const alphas = new Uint8Array(C);
    for (let ch = 0; ch < C; ch++) {
      const v = col(ch);
      let best = Infinity;
      for (let a = 0; a <= K; a++) {
        const sc = Math.fround(s * 2 ** a);
        const e = sse(v, (x) => fakeQuantUniform(x, sc, zp, bits));
        if (e < best) {
          best = e;
          alphas[ch] = a;
        }
      }
      scales[ch] = Math.fround(s * 2 ** alphas[ch]);
      zps[ch] = zp;
    }
    return { q: 'uniform-axis', scales, zps, alphas };
  }
  const xs = c.samples.get(site.name)!;
  if (quantizer === 'uniform') return { q: 'uniform', ...searchUniform(xs, lo, hi, bits) };
  if (quantizer === 'log2' || quantizer === 'logsqrt2') {
    if (site.kind !== 'softmax') fail(`the ${quantizer} quantizer is for post-softmax activations (${site.name} is ${site.kind})`);
    return { q: 'log2', scale: Math.fround(hi > 0 ? hi : 1), k: quantizer === 'log2' ? 1 : 2 };
  }
  if (quantizer !== 'twin') fail(`internal error: quantizer ${quantizer} for ${site.kind}`);
  if (site.kind === 'softmax') {
    // R2 covers [0, max]; R1 = R2 / 2^m, m by squared error
    const d2 = Math.fround((hi > 0 ? hi : 1) / (half - 1));
    let best = { q: 'twin' as const, d1: d2, d2, threshold: Math.fround((half - 0.5) * d2) };
    let bestCost = Infinity;
    for (let m = 0; m <= 12; m++) {
      const d1 = Math.fround(d2 / 2 ** m);
      const threshold = Math.fround((half - 0.5) * d1);
      const e = sse(xs, (x) => fakeQuantTwin(x, d1, d2, threshold, bits));
      if (e < bestCost) {
        bestCost = e;
        best = { q: 'twin', d1, d2, threshold };
      }
    }
    return best;
  }
  // GELU: R1 covers [min, 0] (min >= -0.17 for GELU, -0.28 for swish), R2's step searched
  const d1 = Math.fround(lo < 0 ? -lo / half : 1e-3);
  let best = { q: 'twin' as const, d1, d2: d1, threshold: 0 };
  let bestCost = Infinity;
  for (let k = 0; k < 45; k++) {
    const d2 = Math.fround((Math.max(hi, 0) * (1 - k / 50)) / (half - 1) || d1);
    const e = sse(xs, (x) => fakeQuantTwin(x, d1, d2, 0, bits));
    if (e < bestCost) {
      bestCost = e;
      best = { q: 'twin', d1, d2, threshold: 0 };
    }
  }
  return best;
}

/** the reference fake quantization of a parameter set (per tensor forms; per channel with the channel) */
export function fakeQuant(p: ActParams, bits: number): (x: number, channel?: number) => number {
  switch (p.q) {
    case 'uniform':
      return (x) => fakeQuantUniform(x, p.scale, p.zp, bits);
    case 'log2':
      return (x) => fakeQuantLog2(x, p.scale, bits, p.k);
    case 'twin':
      return (x) => fakeQuantTwin(x, p.d1, p.d2, p.threshold, bits);
    case 'uniform-axis':
      return (x, ch = 0) => fakeQuantUniform(x, p.scales[ch], p.zps[ch], bits);
  }
}

// ---------------------------------------------------------------------------------------------------
// The rewrite

const scalar = (idx: GraphIndex, m: ModelProto, g: GraphProto, base: string, type: number, v: number) => {
  const name = idx.fresh(base);
  const data = type === DataType.FLOAT ? Float32Array.of(v) : type === DataType.UINT8 ? Uint8Array.of(v) : Int8Array.of(v);
  addInitializer(m, g, makeTensor(name, type, [], data));
  return name;
};

/** QuantizeLinear -> (Clip below 8 bits) -> DequantizeLinear of `x`; returns the dequantized name */
function qdqChain(idx: GraphIndex, m: ModelProto, g: GraphProto, nodes: NodeProto[], x: string, scale: string, zp: string, signed: boolean, bits: number, attrs: Record<string, number> = {}): string {
  let q = idx.fresh(`${x}_q`);
  nodes.push(mkNode('QuantizeLinear', [x, scale, zp], [q], attrs, `${q}_node`));
  if (bits < 8) {
    const t = signed ? DataType.INT8 : DataType.UINT8;
    const lo = scalar(idx, m, g, `${x}_qmin`, t, signed ? -(2 ** (bits - 1)) : 0);
    const hi = scalar(idx, m, g, `${x}_qmax`, t, signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1);
    const c = idx.fresh(`${x}_qclip`);
    nodes.push(mkNode('Clip', [q, lo, hi], [c], {}, `${c}_node`));
    q = c;
  }
  const d = idx.fresh(`${x}_dq`);
  nodes.push(mkNode('DequantizeLinear', [q, scale, zp], [d], attrs, `${d}_node`));
  return d;
}

/** write one site's quantizer into its graph; consumers read the result */
export function insertActQuantizer(m: ModelProto, idx: GraphIndex, site: ActSite, p: ActParams, bits: number): void {
  const g = site.graph;
  const x = site.name;
  const nodes: NodeProto[] = [];
  let out: string;
  if (p.q === 'uniform') {
    out = qdqChain(idx, m, g, nodes, x, scalar(idx, m, g, `${x}_scale`, DataType.FLOAT, p.scale), scalar(idx, m, g, `${x}_zero_point`, DataType.UINT8, p.zp), false, bits);
  } else if (p.q === 'uniform-axis') {
    const sn = idx.fresh(`${x}_scale`);
    const zn = idx.fresh(`${x}_zero_point`);
    addInitializer(m, g, makeTensor(sn, DataType.FLOAT, [p.scales.length], p.scales));
    addInitializer(m, g, makeTensor(zn, DataType.UINT8, [p.zps.length], p.zps));
    out = qdqChain(idx, m, g, nodes, x, sn, zn, false, bits, { axis: -1 });
  } else if (p.q === 'twin') {
    const zero = scalar(idx, m, g, `${x}_zero_point`, DataType.INT8, 0);
    const a = qdqChain(idx, m, g, nodes, x, scalar(idx, m, g, `${x}_scale1`, DataType.FLOAT, p.d1), zero, true, bits);
    const b = qdqChain(idx, m, g, nodes, x, scalar(idx, m, g, `${x}_scale2`, DataType.FLOAT, p.d2), zero, true, bits);
    const cond = idx.fresh(`${x}_in_r1`);
    nodes.push(mkNode('Less', [x, scalar(idx, m, g, `${x}_threshold`, DataType.FLOAT, p.threshold)], [cond], {}, `${cond}_node`));
    out = idx.fresh(`${x}_twin`);
    nodes.push(mkNode('Where', [cond, a, b], [out], {}, `${out}_node`));
  } else {
    // q = max(0, round(-k ln(x / s) / ln 2)); out = q < 2^b ? s * 2^(-q/k) : 0   (x = 0: ln = -inf, q = inf -> 0)
    const f = (base: string, v: number) => scalar(idx, m, g, `${x}_${base}`, DataType.FLOAT, v);
    const t = (base: string) => idx.fresh(`${x}_${base}`);
    const [r, l, nl, q0, q, e, p2, y, keep] = ['ratio', 'ln', 'nlog2', 'round', 'code', 'exponent', 'pow2', 'value', 'in_range'].map(t);
    out = t('log2');
    nodes.push(
      mkNode('Div', [x, f('scale', p.scale)], [r]),
      mkNode('Log', [r], [l]),
      mkNode('Mul', [l, f('neg_inv_ln2', -p.k / Math.LN2)], [nl]),
      mkNode('Round', [nl], [q0]),
      mkNode('Max', [q0, f('zero', 0)], [q]),
      mkNode('Mul', [q, f('neg_inv_k', -1 / p.k)], [e]),
      mkNode('Pow', [f('two', 2), e], [p2]),
      mkNode('Mul', [p2, f('scale_out', p.scale)], [y]),
      mkNode('Less', [q, f('levels', 2 ** bits)], [keep]),
      mkNode('Where', [keep, y, f('zero_out', 0)], [out]),
    );
    for (const n of nodes) n.name = `${n.output![0]}_node`;
  }
  for (const c of site.consumers) c.input = (c.input ?? []).map((i) => (i === x ? out : i));
  const first = (g.node ?? []).find((n) => site.consumers.includes(n));
  if (!first) fail(`internal error: no consumer of ${x} in its graph`);
  insertBefore(g, first, nodes);
}

export interface ActQuantOptions {
  softmax?: SoftmaxQuantizer;
  gelu?: GeluQuantizer;
  layernorm?: LnQuantizer;
  bits: number;
}

/** the site kinds the options ask for */
export function requestedKinds(o: ActQuantOptions): Set<SiteKind> {
  return new Set<SiteKind>([...(o.softmax ? ['softmax' as const] : []), ...(o.gelu ? ['gelu' as const] : []), ...(o.layernorm ? ['layernorm' as const] : [])]);
}

/**
 * Calibrate and insert the requested quantizers. `capture` runs the model on the calibration data and
 * hands over each named activation (onnxruntime-node in the CLI). Sites without data (inside a Loop body,
 * the untaken If branch) stay float with a warning.
 */
export async function quantizeActivations(
  model: OnnxModel,
  o: ActQuantOptions,
  capture: (proto: ModelProto, names: string[], sink: (name: string, t: { data: Float32Array; dims: number[] }) => void) => Promise<void>,
  warn: (msg: string) => void = () => {},
): Promise<NodeReport[]> {
  if (!(o.bits >= 2 && o.bits <= 8)) fail(`--act-bits ${o.bits}: activation quantizers take 2..8 bits`);
  if (!actSites(model.proto, requestedKinds(o)).length) return [];
  if ((opsetVersion(model.proto, '') ?? 0) < 13) upgradeOpset(model.proto, 13);
  const sites = actSites(model.proto, requestedKinds(o));
  const byName = new Map(sites.map((s) => [s.name, s]));
  const c = new ActCollector();
  await capture(model.proto, [...byName.keys()], (name, t) => c.observe(byName.get(name)!, t.data, t.dims));
  const idx = indexGraph(model.proto);
  const reports: NodeReport[] = [];
  for (const s of sites) {
    const op = s.kind === 'softmax' ? 'Softmax' : s.kind === 'gelu' ? 'GELU' : 'LayerNorm in';
    if (!c.min.has(s.name)) {
      warn(`${s.name} (${op}): no calibration data reached it (inside a Loop/Scan body?); left in float`);
      reports.push({ node: s.name, op, K: 0, N: 0, action: 'kept', reason: 'no calibration data' });
      continue;
    }
    const which = s.kind === 'softmax' ? o.softmax! : s.kind === 'gelu' ? o.gelu! : o.layernorm!;
    const p = siteParams(c, s, which, o.bits);
    const f = fakeQuant(p, o.bits);
    const r = c.rows.get(s.name);
    const xs = r ? r.kept : c.samples.get(s.name)!;
    let sig = 0;
    let err = 0;
    for (let i = 0; i < xs.length; i++) {
      sig += xs[i] ** 2;
      err += (xs[i] - f(xs[i], r ? i % r.C : 0)) ** 2;
    }
    insertActQuantizer(model.proto, idx, s, p, o.bits);
    const extra = p.q === 'twin' ? ` (steps ${p.d1.toExponential(2)} / ${p.d2.toExponential(2)})` : p.q === 'uniform-axis' && p.alphas ? ` (2^a: ${[0, 1, 2, 3].map((a) => p.alphas!.filter((x) => x === a).length).join('/')} channels)` : '';
    reports.push({ node: s.name, op, K: r?.C ?? 0, N: 0, action: `${which} ${o.bits}-bit${extra}`, sqnrDb: err === 0 ? Infinity : 10 * Math.log10(sig / err) });
  }
  return reports;
}
