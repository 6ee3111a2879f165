/**
 * `lowbit quantize model.onnx out.onnx ...`: ONNX models in, ONNX out.
 *   --type int2|int4|int8     MatMul/Gemm weights -> com.microsoft MatMulNBits (--group, --asym,
 *                             --accuracy-level, --algo rtn|gptq|hqq; gptq calibrates with --calib)
 *   --qdq int8|fp8            QuantizeLinear/DequantizeLinear on --qdq-ops (Conv per output channel,
 *                             MatMul/Gemm left by --type): static ranges from --calib (--calib-method) or
 *                             --dynamic activations
 *   --type qdq                only the QDQ part
 *   --gather                  Gather embedding tables -> com.microsoft GatherBlockQuantized (--type's bits)
 *   --float16                 the rest of the graph in float16 (inputs/outputs stay float32; with
 *                             --type int4 this is transformers.js's q4f16)
 * Calibration data (onnx-calib.ts): .npy (single-input models), .npz (arrays named by input), .png
 * images, .wav audio, or a folder of them.
 * The written model is loaded by onnxruntime-node (when installed) before the command ends.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';
import { accumulateHessian, finishHessian } from '../algos/gptq.js';
import { encodeOnnx, inlineExternalData, parseOnnx, PROTOBUF_LIMIT, writeOnnx } from '../io/onnx/model.js';
import { nodeLabel } from '../io/onnx/graph-edit.js';
import { matmulTargets, quantizeMatMulNBits, type NBitsAlgorithm, type NodeReport } from '../io/onnx/nbits.js';
import { QDQ_OPS, qdqTargets, quantizeQdq, RangeCollector, type CalibMethod, type QdqFormat, type QdqOptions } from '../io/onnx/qdq.js';
import { convertFloat16, type Float16Report } from '../io/onnx/float16.js';
import { gatherTargets, quantizeGatherBlocks } from '../io/onnx/gather.js';
import { actSites, quantizeActivations, requestedKinds, type ActQuantOptions, type GeluQuantizer, type LnQuantizer, type SoftmaxQuantizer } from '../io/onnx/vit-act.js';
import type { ParsedArgs } from './args.js';
import type { OptionSpec } from './args.js';
import { checkOutput, noteInput, stagedPath, withAtomicFile } from './files.js';
import { openOnnxPath } from './onnx-open.js';
import { CALIB_MEDIA_OPTIONS, readCalibration } from './onnx-calib.js';
import { captureActivations, loadOrt, ortSession, type Feeds, type OutTensor } from './onnx-runtime.js';
import { renderTable } from './commands/formats.js';

/** options only ONNX models use (added to `lowbit quantize`'s table) */
export const ONNX_QUANTIZE_OPTIONS: readonly OptionSpec[] = [
  { name: 'accuracy-level', type: 'int', help: 'ONNX MatMulNBits: accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute)', min: 0, max: 4 },
  ...CALIB_MEDIA_OPTIONS,
  { name: 'calib-samples', type: 'int', help: 'ONNX: use at most this many calibration samples', min: 1 },
  { name: 'qdq', type: 'string', choices: ['int8', 'fp8'], help: 'ONNX: QuantizeLinear/DequantizeLinear on --qdq-ops: int8 (weights per output channel, uint8 activations static from --calib or --dynamic) or fp8 (float8e4m3fn weights and activations, opset 19; static or --weights-only)' },
  { name: 'gather', type: 'boolean', help: 'ONNX: also quantize Gather embedding tables (constant [V, D], axis 0) to com.microsoft GatherBlockQuantized with --type\'s bits and --group' },
  { name: 'float16', type: 'boolean', help: 'ONNX: convert the remaining float32 weights and activations to float16 (model inputs/outputs stay float32, Casts at the boundaries)' },
  { name: 'qdq-ops', type: 'string', help: 'ONNX: op types that get QDQ (MatMul/Gemm already turned into MatMulNBits are not touched)', default: 'Conv,MatMul,Gemm' },
  { name: 'calib-method', type: 'string', choices: ['minmax', 'percentile', 'mse', 'entropy'], help: 'ONNX QDQ: how calibrated activation ranges are chosen', default: 'minmax' },
  { name: 'act-granularity', type: 'string', choices: ['tensor', 'channel'], default: 'tensor', help: 'ONNX QDQ static activations: one range per tensor, or per channel (axis 1: QuantizeLinear with 1-D scales; onnxruntime runs it dequantized)' },
  { name: 'dynamic', type: 'boolean', help: 'ONNX QDQ: activations quantized at run time (DynamicQuantizeLinear), no calibration' },
  { name: 'weights-only', type: 'boolean', help: 'ONNX QDQ: int8 weights behind DequantizeLinear, activations left in float (with --calib: bias-corrected)' },
  { name: 'bias-correction', type: 'boolean', default: true, help: 'ONNX QDQ with --calib: correct each Conv bias so its output channel means stay the float model\'s (--no-bias-correction to skip)' },
  { name: 'act-quantizer', type: 'string', help: 'ONNX: quantize post-softmax and post-GELU/swish activations feeding MatMul/Gemm (calibrated, --calib): uniform, log2 (softmax log2, GELU twin), logsqrt2 (base sqrt 2, GELU twin) or twin (PTQ4ViT twin uniform), or per site: softmax:log2,gelu:twin' },
  { name: 'ln-quantizer', type: 'string', choices: ['tensor', 'ptf', 'channel'], help: 'ONNX: quantize LayerNorm inputs (calibrated, --calib): tensor (one uint8 range), ptf (FQ-ViT power-of-two factor per channel) or channel (a range per channel)' },
  { name: 'act-bits', type: 'int', min: 2, max: 8, default: 8, help: 'ONNX: bits of the --act-quantizer / --ln-quantizer activations' },
  { name: 'keep', type: 'string', help: 'ONNX: comma-separated node names left in float' },
  { name: 'keep-sensitive', type: 'int', help: 'ONNX QDQ: measure each node quantized alone on the calibration data (output SQNR) and leave the N most sensitive in float', min: 1 },
  { name: 'act16', type: 'int', help: 'ONNX QDQ static: the N most sensitive nodes (the sensitivity pass, after those --keep-sensitive keeps) get uint16 activations instead of uint8 (opset 21)', min: 1 },
];

/** output SQNR (dB) of `got` against `ref`, over every float output */
function outputSqnr(ref: Map<string, OutTensor>[], got: Map<string, OutTensor>[]): number {
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
async function qdqSensitivity(bytes: Uint8Array, name: string, opts: QdqOptions, samples: Feeds[], onNode?: (i: number, n: number) => void): Promise<{ node: string; sqnrDb: number }[]> {
  const labels = qdqTargets(parseOnnx(bytes, name), opts.ops).map((t) => nodeLabel(t.node));
  const run = async (model: Uint8Array) => {
    const s = await ortSession(model);
    try {
      const out: Map<string, OutTensor>[] = [];
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

export interface OnnxQuantizeOptions {
  input: string;
  output: string;
  type: string;
  group: number;
  asym: boolean;
  algo: NBitsAlgorithm;
  accuracyLevel?: number;
  calib?: string;
  calibSamples?: number;
  json: boolean;
}

/** 2 X^T X / n per activation feeding a quantizable MatMul (GPTQ). */
async function collectHessians(m: Awaited<ReturnType<typeof openOnnxPath>>['model'], samples: Feeds[], warn: (s: string) => void): Promise<Map<string, Float64Array>> {
  const targets = matmulTargets(m);
  const ks = new Map(targets.map((t) => [t.activation, t.K]));
  const h = new Map<string, Float64Array>();
  const rows = new Map<string, number>();
  await captureActivations(m.proto, [...ks.keys()], samples, (name, t) => {
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

/** `--act-quantizer uniform|log2|twin` or `softmax:Q,gelu:Q`, `--ln-quantizer`, `--act-bits` */
function parseActQuantizers(spec: string | undefined, ln: LnQuantizer | undefined, bits: number): ActQuantOptions | undefined {
  if (!spec && !ln) return undefined;
  const o: ActQuantOptions = { bits, layernorm: ln };
  for (const part of (spec ?? '').split(',').map((x) => x.trim()).filter(Boolean)) {
    const [site, q] = part.includes(':') ? part.split(':') : ['', part];
    const okSoftmax = q === 'uniform' || q === 'log2' || q === 'logsqrt2' || q === 'twin';
    if (site === '') {
      if (!okSoftmax) fail(`--act-quantizer ${q}: use uniform, log2, logsqrt2 or twin (or softmax:Q,gelu:Q)`);
      o.softmax = q as SoftmaxQuantizer;
      o.gelu = q === 'log2' || q === 'logsqrt2' ? 'twin' : (q as GeluQuantizer);
    } else if (site === 'softmax') {
      if (!okSoftmax) fail(`--act-quantizer softmax:${q}: post-softmax takes uniform, log2, logsqrt2 or twin`);
      o.softmax = q as SoftmaxQuantizer;
    } else if (site === 'gelu') {
      if (q !== 'uniform' && q !== 'twin') fail(`--act-quantizer gelu:${q}: post-GELU takes uniform or twin (log2 has no negative values)`);
      o.gelu = q;
    } else fail(`--act-quantizer ${part}: sites are softmax and gelu`);
  }
  return o;
}

export async function runOnnxQuantize(a: ParsedArgs): Promise<void> {
  const [input, output] = a.positionals;
  if (!output) fail('quantize needs an output path');
  if (!/\.onnx$/i.test(input)) fail(`input ${input}: ONNX output needs an ONNX input (.onnx)`);
  if (!/\.onnx$/i.test(output)) fail(`output ${output}: an ONNX model is written as .onnx`);
  noteInput(input);
  noteInput(a.values.calib as string | undefined);
  checkOutput(output, 'output');
  const float16 = a.values.float16 as boolean;
  const actq = parseActQuantizers(a.values['act-quantizer'] as string | undefined, a.values['ln-quantizer'] as LnQuantizer | undefined, a.values['act-bits'] as number);
  const type = (a.values.type as string | undefined)?.toLowerCase() ?? (a.values.qdq ? 'qdq' : float16 ? 'float16' : actq ? 'acts' : fail('quantize model.onnx needs --type int4 (also int2, int8: MatMulNBits), --qdq int8|fp8, --act-quantizer / --ln-quantizer and/or --float16'));
  if (actq && !a.values.calib) fail('--act-quantizer / --ln-quantizer need --calib (the activations are calibrated)');
  if (type === 'acts' && !actq) fail('--type acts needs --act-quantizer or --ln-quantizer');
  if (type === 'int3' || type === 'q3') fail(`--type ${type}: onnxruntime's MatMulNBits runs 2, 4 and 8 bits only (its CPU kernel refuses bits = 3): use int2, int4 or int8`);
  const bitsOf: Record<string, number> = { int2: 2, int4: 4, int8: 8, q4: 4, q8: 8 };
  const bits = type === 'qdq' || type === 'float16' || type === 'acts' ? 0 : (bitsOf[type] ?? fail(`--type ${type}: for ONNX models use int2, int4 or int8 (MatMulNBits), qdq or float16`));
  const qdq = a.values.qdq as QdqFormat | undefined;
  if (type === 'qdq' && !qdq) fail('--type qdq needs --qdq int8 or --qdq fp8');
  if (type === 'float16' && !float16) fail('--type float16 is --float16');
  const gather = a.values.gather as boolean;
  if (gather && !bits) fail('--gather needs --type int2, int4 or int8 (the bits of GatherBlockQuantized)');
  const dynamic = a.values.dynamic as boolean;
  const weightsOnly = a.values['weights-only'] as boolean;
  if (weightsOnly && dynamic) fail('--weights-only and --dynamic exclude each other (--dynamic quantizes the activations at run time)');
  const method = a.values['calib-method'] as CalibMethod;
  const perChannel = a.values['act-granularity'] === 'channel';
  if (perChannel && (!qdq || dynamic || weightsOnly)) fail('--act-granularity channel is for static QDQ activations (--qdq with --calib)');
  if (qdq === 'fp8' && dynamic) fail('--qdq fp8 has no --dynamic (DynamicQuantizeLinear is uint8): use --calib or --weights-only');
  if (qdq === 'fp8' && (method === 'mse' || method === 'entropy')) fail(`--calib-method ${method} searches a uint8 grid; --qdq fp8 takes minmax or percentile`);
  const qdqOps = new Set((a.values['qdq-ops'] as string).split(',').map((x) => x.trim()).filter(Boolean));
  for (const op of qdqOps) if (!(QDQ_OPS as readonly string[]).includes(op)) fail(`--qdq-ops ${op}: QDQ handles ${QDQ_OPS.join(', ')}`);
  if (qdq && !dynamic && !weightsOnly && !a.values.calib) fail(`--qdq ${qdq} needs --calib (static activation ranges)${qdq === 'int8' ? ', --dynamic' : ''} or --weights-only`);
  const keep = new Set(((a.values.keep as string | undefined) ?? '').split(',').map((x) => x.trim()).filter(Boolean));
  const algo = ((a.values.algo as string | undefined) ?? 'rtn') as NBitsAlgorithm;
  if (!['rtn', 'gptq', 'hqq'].includes(algo)) fail(`--algo ${algo}: ONNX models take rtn, gptq or hqq`);
  const calib = a.values.calib as string | undefined;
  if (bits && algo === 'gptq' && !calib) fail('--algo gptq needs --calib (a .npy/.npz file or a folder of them: the model\'s inputs)');
  const json = a.values.json as boolean;
  const warnings: string[] = [];
  const warn = (s: string) => {
    warnings.push(s);
    if (!json) process.stderr.write(`lowbit: warning: ${s}\n`);
  };
  const t0 = performance.now();
  const { model, close } = await openOnnxPath(input);
  try {
    let samples: Feeds[] | undefined;
    if (calib && ((bits && algo === 'gptq') || qdq || actq)) samples = await readCalibration(calib, model.proto, a, a.values['calib-samples'] as number | undefined, path.resolve(input));
    const reports: NodeReport[] = [];
    if (bits) {
      const hessians = algo === 'gptq' ? await collectHessians(model, samples!, warn) : undefined;
      if (!matmulTargets(model).length && !qdq && !(gather && gatherTargets(model).length)) fail(`${input}: no MatMul or Gemm with a constant 2-D float weight to quantize`);
      reports.push(
        ...(await quantizeMatMulNBits(
          model,
          { bits, blockSize: (a.values.group as number | undefined) ?? 32, symmetric: !(a.values.asym as boolean), accuracyLevel: a.values['accuracy-level'] as number | undefined, algorithm: algo, hessians, keep },
          warn,
        )),
      );
      if (gather) reports.push(...(await quantizeGatherBlocks(model, { bits, blockSize: (a.values.group as number | undefined) ?? 32, symmetric: !(a.values.asym as boolean), keep }, warn)));
    }
    // QDQ calibration runs on the model as rewritten so far (after MatMulNBits): the ranges, the bias
    // correction and the sensitivity pass see the upstream weight-only error (sequential calibration)
    const baseBytes = a.values['keep-sensitive'] || a.values.act16 ? encodeOnnx(model.proto) : undefined;
    let ranges: QdqOptions['ranges'];
    const rc = new RangeCollector();
    if (qdq && !dynamic && !weightsOnly) {
      const acts = [...new Set(qdqTargets(model, qdqOps).map((t) => t.activation))];
      if (perChannel) {
        // per channel (axis 1) where the activation has channels (Conv inputs); per tensor elsewhere
        await captureActivations(model.proto, acts, samples!, (name, t) => (t.dims.length >= 3 ? rc.observePerChannel(name, t.data, t.dims, 'minmax') : rc.observeMinMax(name, t.data)));
        if (method !== 'minmax') await captureActivations(model.proto, acts, samples!, (name, t) => (t.dims.length >= 3 ? rc.observePerChannel(name, t.data, t.dims, 'histogram') : rc.observeHistogram(name, t.data)));
      } else {
        await captureActivations(model.proto, acts, samples!, (name, t) => rc.observeMinMax(name, t.data));
        if (method !== 'minmax') await captureActivations(model.proto, acts, samples!, (name, t) => rc.observeHistogram(name, t.data));
      }
      ranges = new Map(acts.flatMap((n) => { const r = rc.channelRanges(n, method) ?? (rc.min.has(n) ? rc.range(n, method) : undefined); return r ? [[n, r] as const] : []; }));
    }
    // bias correction: E[x] and E[q(x)] per channel of each Conv input
    let means: QdqOptions['means'];
    if (qdq && samples && a.values['bias-correction']) {
      const acts = [...new Set(qdqTargets(model, qdqOps).filter((t) => t.node.op_type === 'Conv').map((t) => t.activation))];
      const rc = new RangeCollector();
      await captureActivations(model.proto, acts, samples, (name, t) => rc.observeChannels(name, t.data, t.dims, ranges?.get(name), qdq));
      means = new Map(acts.flatMap((n) => { const cm = rc.channelMeans(n); return cm ? [[n, cm] as const] : []; }));
    }
    let sensitivity: { node: string; sqnrDb: number }[] | undefined;
    if (qdq) {
      // activations the --act-quantizer pass quantizes (post-GELU inputs of MatMuls) are left to it
      const skipActivations = actq ? new Set(actSites(model.proto, requestedKinds(actq)).map((s) => s.name)) : undefined;
      const qopts: QdqOptions = { ops: qdqOps, activations: weightsOnly ? 'none' : dynamic ? 'dynamic' : 'static', ranges, keep, means, format: qdq, skipActivations };
      const nKeep = a.values['keep-sensitive'] as number | undefined;
      const n16 = a.values.act16 as number | undefined;
      if (n16 && (dynamic || weightsOnly || qdq !== 'int8')) fail('--act16 applies to static int8 QDQ (calibrated uint8 activations)');
      if (nKeep || n16) {
        if (!samples) fail(`--${nKeep ? 'keep-sensitive' : 'act16'} needs --calib (the sensitivity pass runs the model on it)`);
        const tty = !json && process.stderr.isTTY;
        sensitivity = await qdqSensitivity(baseBytes!, input, qopts, samples.slice(0, 4), tty ? (i, n) => process.stderr.write(`\rsensitivity ${i + 1}/${n}`) : undefined);
        if (tty) process.stderr.write('\r' + ' '.repeat(40) + '\r');
        for (const s of sensitivity.slice(0, nKeep ?? 0)) keep.add(s.node);
        if (n16) {
          qopts.act16 = new Set(sensitivity.slice(nKeep ?? 0, (nKeep ?? 0) + n16).map((s) => s.node));
          // 16 bits need no clipping: those activations take their min-max range (a clipped outlier is the
          // error that remains; measured on PP-OCRv4 det: percentile + uint16 20/42 boxes, min-max + uint16 40/42)
          for (const t of qdqTargets(model, qdqOps)) if (qopts.act16.has(nodeLabel(t.node)) && typeof ranges?.get(t.activation)?.[0] === 'number' && rc.min.has(t.activation)) ranges.set(t.activation, rc.range(t.activation, 'minmax'));
        }
      }
      reports.push(...(await quantizeQdq(model, qopts, warn)));
    }
    if (actq) {
      const r = await quantizeActivations(model, actq, (proto, names, sink) => captureActivations(proto, names, samples!, sink), warn);
      if (!r.length) warn('--act-quantizer / --ln-quantizer: no post-softmax, post-GELU or LayerNorm-input activation found');
      reports.push(...r);
    }
    let half: Float16Report | undefined;
    if (float16) half = await convertFloat16(model, { keepNodes: keep });
    if (!half?.tensors && !reports.some((r) => r.action !== 'kept')) fail(`nothing was quantized${reports.length ? `: ${reports.map((r) => `${r.node}: ${r.reason}`).join('; ')}` : ''}`);
    await inlineExternalData(model);
    let bytes = 0;
    await withAtomicFile(output, async (f) => {
      bytes = await writeOnnx(model.proto, { write: (b) => f.write(b) });
    });
    if (bytes > PROTOBUF_LIMIT) fail('internal error: model over 2 GiB written inline');
    let loads: boolean | undefined;
    try {
      await loadOrt();
      const written = path.resolve(stagedPath(output)); // the written file, renamed into place when the run succeeds
      let s: Awaited<ReturnType<typeof ortSession>>;
      try {
        s = await ortSession(written);
      } catch (e) {
        // onnxruntime 1.30 (CPU) fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv without
        // checking the type, and QLinearConv has no float8 kernel: static FP8 graphs load only without
        // that fusion (graph optimization 'basic')
        if (qdq !== 'fp8' || !/float8/.test((e as Error).message)) throw e;
        s = await ortSession(written, 1, 'basic');
        warn("onnxruntime-node loads this FP8 model only with graphOptimizationLevel 'basic' (its QDQ fusion makes a float8 QLinearConv, which has no kernel)");
      }
      await s.release();
      loads = true;
    } catch (e) {
      if (!/needs onnxruntime-node/.test((e as Error).message)) throw e;
    }
    const seconds = (performance.now() - t0) / 1000;
    const report = { input, output, inputBytes: model.size, outputBytes: bytes, seconds, nodes: reports, float16: half, sensitivity, warnings, onnxruntimeLoads: loads };
    if (json) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      const rows = reports.map((r) => [r.node, r.op, r.N ? `${r.K}x${r.N}` : r.K ? `C=${r.K}` : '-', r.action, r.sqnrDb === undefined ? '-' : r.sqnrDb.toFixed(2)]);
      process.stdout.write(renderTable(['node', 'op', 'K x N', 'to', 'SQNR dB'], rows, [false, false, false, false, true]) + '\n');
      if (half) process.stdout.write(`float16: ${half.tensors} weights, ${half.nodes} nodes converted (${half.subgraphs} subgraphs), ${half.casts} Casts; kept in float32: ${Object.entries(half.keptOps).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}\n`);
      if (sensitivity) process.stdout.write(`most sensitive (output SQNR quantized alone): ${sensitivity.slice(0, 8).map((s) => `${s.node} ${s.sqnrDb.toFixed(1)} dB`).join(', ')}\n`);
      process.stdout.write(`${input} (${model.size} bytes) -> ${output} (${bytes} bytes, ${((100 * bytes) / model.size).toFixed(1)} %), ${seconds.toFixed(2)} s${loads ? '; onnxruntime-node loads it' : ''}\n`);
    }
  } finally {
    close();
  }
}
