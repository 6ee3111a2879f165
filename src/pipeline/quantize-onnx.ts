/**
 * The ONNX writer (a row of WRITERS in quantize.ts): the ONNX model a ModelFile holds, rewritten as its
 * plan says (plan.ts planOnnx: the recipe's `onnx` part), written into a ByteSink. In order:
 *   1. MatMul/Gemm -> com.microsoft MatMulNBits (RTN, HQQ, or GPTQ on Hessians captured on the
 *      calibration samples), Gather tables -> GatherBlockQuantized;
 *   2. QDQ (int8 / fp8): calibration ranges, bias correction and the sensitivity pass all run on the
 *      model as rewritten so far (they see the upstream weight-only error);
 *   3. activation quantizers (post-softmax, post-GELU/swish, LayerNorm inputs), calibrated;
 *   4. float16 for the rest.
 * Running the model (activations, the sensitivity pass) is the host's job: `OnnxCalibration` (the CLI
 * gives onnxruntime-node's; the core never loads a runtime).
 */
import { fail } from '../errors.js';
import { accumulateHessian, finishHessian } from '../algos/gptq.js';
import type { ModelFile } from '../io/model-file.js';
import type { ByteSink } from '../io/sink.js';
import { encodeOnnx, inlineExternalData, parseOnnx, PROTOBUF_LIMIT, writeOnnx, type OnnxModel } from '../io/onnx/model.js';
import { onnxModelToRewrite } from '../io/onnx/model-file.js';
import { nodeLabel } from '../io/onnx/graph-edit.js';
import { matmulTargets, quantizeMatMulNBits, type NodeReport } from '../io/onnx/nbits.js';
import { qdqTargets, quantizeQdq, RangeCollector, type QdqOptions } from '../io/onnx/qdq.js';
import { convertFloat16, type Float16Report } from '../io/onnx/float16.js';
import { quantizeGatherBlocks } from '../io/onnx/gather.js';
import { actSites, quantizeActivations, requestedKinds, type ActQuantOptions } from '../io/onnx/vit-act.js';
import type { ModelProto, NodeProto } from '../io/onnx/schema.js';
import type { OnnxCalibration, OnnxFeeds, OnnxValue, OnnxWriteReport, QuantizeOptions, QuantizePlan, QuantizeReport } from './plan.js';

/** output SQNR (dB) of `got` against `ref`, over every float output */
function outputSqnr(ref: Map<string, OnnxValue>[], got: Map<string, OnnxValue>[]): number {
  let s = 0;
  let e = 0;
  ref.forEach((r, i) => {
    for (const [k, a] of r) {
      const b = got[i].get(k);
      if (!b) continue;
      for (let j = 0; j < a.data.length; j++) {
        s += a.data[j] ** 2;
        e += (a.data[j] - b.data[j]) ** 2;
      }
    }
  });
  return e === 0 ? Infinity : 10 * Math.log10(s / e);
}

/**
 * The per-node sensitivity pass: each QDQ target quantized alone (weights and activation as they will
 * be), the model run on the calibration samples, output SQNR against the float model. Worst first.
 */
async function qdqSensitivity(cal: OnnxCalibration, bytes: Uint8Array, name: string, opts: QdqOptions, samples: readonly OnnxFeeds[], onNode?: (i: number, n: number) => void): Promise<{ node: string; sqnrDb: number }[]> {
  const labels = qdqTargets(parseOnnx(bytes, name), opts.ops).map((t) => nodeLabel(t.node));
  const run = async (model: Uint8Array) => {
    const s = await cal.session(model);
    try {
      const out: Map<string, OnnxValue>[] = [];
      for (const f of samples) out.push(await s.run(f));
      return out;
    } finally {
      await s.release();
    }
  };
  const ref = await run(bytes);
  const res: { node: string; sqnrDb: number }[] = [];
  for (const [i, l] of labels.entries()) {
    onNode?.(i, labels.length);
    const m = parseOnnx(bytes, name);
    await quantizeQdq(m, { ...opts, keep: new Set([...labels.filter((x) => x !== l), ...(opts.keep ?? [])]) });
    res.push({ node: l, sqnrDb: outputSqnr(ref, await run(encodeOnnx(m.proto))) });
  }
  return res.sort((a, b) => a.sqnrDb - b.sqnrDb);
}

type ChannelMeans = { x: Float64Array; q: Float64Array };

/**
 * Sequential bias correction: each main-graph Conv corrected with E[x] of the float model (`floatMeans`)
 * and E[q(x)] of its input as it arrives, quantized, in the model whose upstream Convs already carry
 * their final correction. (On PP-OCRv4 det most of an activation sits at one background level, where the
 * uint8 error is a sawtooth of the level: measured on the float model, the correction of a node flips
 * sign as soon as anything upstream gets more accurate, e.g. uint16; see docs/onnx.md.) One calibration
 * run per wave: a Conv is measured once every Conv upstream of it is final, so Convs on parallel branches
 * share a run; the result equals correcting them one by one in graph order. Convs inside subgraphs keep
 * the float-model correction. Returns node label -> correction terms (QdqOptions.nodeMeans).
 */
export async function sequentialBiasMeans(cal: OnnxCalibration, bytes: Uint8Array, name: string, opts: QdqOptions, floatMeans: ReadonlyMap<string, ChannelMeans>, samples: readonly OnnxFeeds[], onWave?: (done: number, n: number) => void): Promise<Map<string, ChannelMeans>> {
  const base = parseOnnx(bytes, name);
  const main = base.proto.graph;
  const convs = qdqTargets(base, opts.ops).filter((t) => t.node.op_type === 'Conv' && t.graph === main && floatMeans.has(t.activation) && !opts.keep?.has(nodeLabel(t.node)) && !opts.keep?.has(t.node.name ?? ''));
  // the Convs upstream of each (main graph producers, walked back from its input)
  const producer = new Map<string, NodeProto>();
  for (const n of main?.node ?? []) for (const o of n.output ?? []) if (o) producer.set(o, n);
  const convOf = new Map(convs.map((t) => [t.node, nodeLabel(t.node)]));
  const upstream = convs.map((t) => {
    const ups = new Set<string>();
    const seen = new Set<NodeProto>();
    const stack = [t.activation];
    while (stack.length) {
      const n = producer.get(stack.pop()!);
      if (!n || seen.has(n)) continue;
      seen.add(n);
      const l = convOf.get(n);
      if (l) ups.add(l);
      stack.push(...(n.input ?? []).filter((i) => i));
    }
    return ups;
  });
  const final = new Map<string, ChannelMeans>();
  while (final.size < convs.length) {
    onWave?.(final.size, convs.length);
    const ready = convs.filter((t, i) => !final.has(nodeLabel(t.node)) && [...upstream[i]].every((u) => final.has(u))).map((t) => nodeLabel(t.node));
    if (!ready.length) fail('internal error: sequential bias correction found no Conv to measure');
    const m = parseOnnx(bytes, name);
    const ts = new Map(qdqTargets(m, opts.ops).map((t) => [nodeLabel(t.node), t]));
    await quantizeQdq(m, { ...opts, nodeMeans: final });
    // after the rewrite each ready Conv reads its input through its QuantizeLinear/DequantizeLinear
    const arrives = new Map(ready.map((l) => [l, ts.get(l)!.node.input![0]]));
    const mc = new RangeCollector();
    await cal.capture(m.proto, [...new Set(arrives.values())], samples, (n, t) => mc.observeChannels(n, t.data, t.dims));
    for (const l of ready) {
      const t = ts.get(l)!;
      const got = mc.channelMeans(arrives.get(l)!) ?? fail(`internal error: no activation captured for ${l}`);
      final.set(l, { x: floatMeans.get(t.activation)!.x, q: got.x });
    }
  }
  return final;
}

/** 2 X^T X / n per activation feeding a quantizable MatMul (GPTQ). */
async function collectHessians(cal: OnnxCalibration, m: OnnxModel, warn: (s: string) => void): Promise<Map<string, Float64Array>> {
  const targets = matmulTargets(m);
  const ks = new Map(targets.map((t) => [t.activation, t.K]));
  const h = new Map<string, Float64Array>();
  const rows = new Map<string, number>();
  await cal.capture(m.proto, [...ks.keys()], cal.samples, (name, t) => {
    const k = ks.get(name)!;
    if (t.dims[t.dims.length - 1] !== k) {
      warn(`activation ${name} has shape [${t.dims}], expected last dimension ${k}`);
      return;
    }
    let acc = h.get(name);
    if (!acc) h.set(name, (acc = new Float64Array(k * k)));
    const n = t.data.length / k;
    accumulateHessian(acc, t.data, n, k);
    rows.set(name, (rows.get(name) ?? 0) + n);
  });
  for (const [name, acc] of h) finishHessian(acc, ks.get(name)!, rows.get(name)!);
  return h;
}

/** The calibration the recipe's onnx part needs, or a clear error (never a silent fallback). */
export function onnxNeedsCalibration(o: NonNullable<QuantizePlan['onnx']>): string | undefined {
  if (o.nbits?.algorithm === 'gptq') return 'MatMulNBits GPTQ (Hessians of the MatMul inputs)';
  if (o.qdq?.activations === 'static') return `static ${o.qdq.format} QDQ (activation ranges)`;
  if (o.qdq?.keepSensitive || o.qdq?.act16) return 'the QDQ sensitivity pass';
  if (o.act) return 'the activation quantizers';
  return undefined;
}

/** ModelWriter for ONNX: see the module comment. */
export async function writeOnnxModel(m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions): Promise<Partial<QuantizeReport>> {
  const o = plan.onnx ?? fail('internal: an ONNX plan without its onnx part');
  const cal = opts.onnxCalibration;
  const needs = onnxNeedsCalibration(o);
  if (needs && !cal) fail(`${needs} needs calibration samples (--calib, or { onnxCalibration } in quantize())`);
  const warnings: string[] = [];
  const warn = (s: string) => {
    warnings.push(s);
    opts.onWarning?.(s);
  };
  const model = await onnxModelToRewrite(m);
  const samples = cal?.samples;
  const keep = new Set(o.keep ?? []);
  const reports: NodeReport[] = [];
  const nb = o.nbits;
  if (nb) {
    const hessians = nb.algorithm === 'gptq' ? await collectHessians(cal!, model, warn) : undefined;
    reports.push(...(await quantizeMatMulNBits(model, { bits: nb.bits, blockSize: nb.blockSize, symmetric: nb.symmetric, accuracyLevel: nb.accuracyLevel, algorithm: nb.algorithm, hessians, keep }, warn)));
    if (nb.gather) reports.push(...(await quantizeGatherBlocks(model, { bits: nb.bits, blockSize: nb.blockSize, symmetric: nb.symmetric, keep }, warn)));
  }
  const q = o.qdq;
  const act: ActQuantOptions | undefined = o.act && { bits: o.act.bits, ...(o.act.softmax ? { softmax: o.act.softmax } : {}), ...(o.act.gelu ? { gelu: o.act.gelu } : {}), ...(o.act.layernorm ? { layernorm: o.act.layernorm } : {}) };
  const capture = (proto: ModelProto, names: readonly string[], sinkFn: (name: string, t: OnnxValue) => void) => cal!.capture(proto, names, samples!, sinkFn);
  let sensitivity: { node: string; sqnrDb: number }[] | undefined;
  if (q) {
    const qdqOps = new Set(q.ops);
    // QDQ calibration runs on the model as rewritten so far (after MatMulNBits): the ranges, the bias
    // correction and the sensitivity pass see the upstream weight-only error (sequential calibration)
    const baseBytes = q.keepSensitive || q.act16 ? encodeOnnx(model.proto) : undefined;
    let ranges: QdqOptions['ranges'];
    const rc = new RangeCollector();
    if (q.activations === 'static') {
      const acts = [...new Set(qdqTargets(model, qdqOps).map((t) => t.activation))];
      if (q.granularity === 'channel') {
        // per channel (axis 1) where the activation has channels (Conv inputs); per tensor elsewhere
        await capture(model.proto, acts, (name, t) => (t.dims.length >= 3 ? rc.observePerChannel(name, t.data, t.dims, 'minmax') : rc.observeMinMax(name, t.data)));
        if (q.method !== 'minmax') await capture(model.proto, acts, (name, t) => (t.dims.length >= 3 ? rc.observePerChannel(name, t.data, t.dims, 'histogram') : rc.observeHistogram(name, t.data)));
      } else {
        await capture(model.proto, acts, (name, t) => rc.observeMinMax(name, t.data));
        if (q.method !== 'minmax') await capture(model.proto, acts, (name, t) => rc.observeHistogram(name, t.data));
      }
      ranges = new Map(
        acts.flatMap((n) => {
          const r = rc.channelRanges(n, q.method) ?? (rc.min.has(n) ? rc.range(n, q.method) : undefined);
          return r ? [[n, r] as const] : [];
        }),
      );
    }
    // bias correction: E[x] and E[q(x)] per channel of each Conv input
    let means: QdqOptions['means'];
    if (samples && q.biasCorrection) {
      const acts = [...new Set(qdqTargets(model, qdqOps).filter((t) => t.node.op_type === 'Conv').map((t) => t.activation))];
      const mc = new RangeCollector();
      await capture(model.proto, acts, (name, t) => mc.observeChannels(name, t.data, t.dims, ranges?.get(name), q.format));
      means = new Map(
        acts.flatMap((n) => {
          const cm = mc.channelMeans(n);
          return cm ? [[n, cm] as const] : [];
        }),
      );
    }
    // activations the activation-quantizer pass quantizes (post-GELU inputs of MatMuls) are left to it
    const skipActivations = act ? new Set(actSites(model.proto, requestedKinds(act)).map((s) => s.name)) : undefined;
    const qopts: QdqOptions = { ops: qdqOps, activations: q.activations, ranges, keep, means, format: q.format, skipActivations };
    if (q.keepSensitive || q.act16) {
      sensitivity = await qdqSensitivity(cal!, baseBytes!, model.name, qopts, samples!.slice(0, 4), (i, n) => opts.onProgress?.(`sensitivity ${i + 1}/${n}`));
      for (const s of sensitivity.slice(0, q.keepSensitive ?? 0)) keep.add(s.node);
      if (q.act16) {
        qopts.act16 = new Set(sensitivity.slice(q.keepSensitive ?? 0, (q.keepSensitive ?? 0) + q.act16).map((s) => s.node));
        // 16 bits need no clipping: those activations take their min-max range (a clipped outlier is the
        // error that remains; measured on PP-OCRv4 det: percentile + uint16 20/42 boxes, min-max + uint16 40/42)
        for (const t of qdqTargets(model, qdqOps)) if (qopts.act16.has(nodeLabel(t.node)) && typeof ranges?.get(t.activation)?.[0] === 'number' && rc.min.has(t.activation)) ranges.set(t.activation, rc.range(t.activation, 'minmax'));
      }
    }
    // uint16 nodes: bias correction measured where each Conv's input arrives in the quantized model
    // (sequential); measured on the float model it flips sign on PP-OCRv4 det (docs/onnx.md)
    if (means && q.activations === 'static' && qopts.act16?.size) qopts.nodeMeans = await sequentialBiasMeans(cal!, baseBytes!, model.name, qopts, means, samples!, (i, n) => opts.onProgress?.(`bias correction ${i}/${n}`));
    reports.push(...(await quantizeQdq(model, qopts, warn)));
  }
  if (act) {
    const r = await quantizeActivations(model, act, (proto, names, sinkFn) => capture(proto, names, sinkFn), warn);
    if (!r.length) warn('--act-quantizer / --ln-quantizer: no post-softmax, post-GELU or LayerNorm-input activation found');
    reports.push(...r);
  }
  let half: Float16Report | undefined;
  if (o.float16) half = await convertFloat16(model, { keepNodes: keep });
  if (!half?.tensors && !reports.some((r) => r.action !== 'kept')) fail(`nothing was quantized${reports.length ? `: ${reports.map((r) => `${r.node}: ${r.reason}`).join('; ')}` : ''}`);
  await inlineExternalData(model);
  const bytes = await writeOnnx(model.proto, sink);
  if (bytes > PROTOBUF_LIMIT) fail('internal error: model over 2 GiB written inline');
  const parameters = m.tensors.reduce((s, t) => s + (/^(F|BF)\d+$/.test(t.type) ? t.nElements : 0), 0);
  const onnx: OnnxWriteReport = { inputBytes: model.size, nodes: reports, ...(half ? { float16: half } : {}), ...(sensitivity ? { sensitivity } : {}), warnings };
  return { output: 'onnx', bytes, parameters, bitsPerWeight: parameters ? (bytes * 8) / parameters : 0, onnx };
}
