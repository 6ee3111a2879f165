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
import * as path from 'node:path';
import { fail } from '../errors.js';
import { defineRecipe, recipeFromJSON, RECIPE_VERSION, type OnnxRecipe, type Recipe } from '../algos/recipe.js';
import type { NBitsAlgorithm } from '../io/onnx/nbits.js';
import { QDQ_OPS, type CalibMethod, type QdqFormat } from '../io/onnx/qdq.js';
import type { ActQuantOptions, GeluQuantizer, LnQuantizer, SoftmaxQuantizer } from '../io/onnx/vit-act.js';
import { planQuantization, quantize, type QuantizeReport } from '../pipeline/quantize.js';
import type { OnnxCalibration } from '../pipeline/plan.js';
import type { ParsedArgs } from './args.js';
import type { OptionSpec } from './args.js';
import { checkOutput, noteInput, readInputText, stagedPath, withAtomicFile } from './files.js';
import { openOnnxPath } from './onnx-open.js';
import { CALIB_MEDIA_OPTIONS, readCalibration } from './onnx-calib.js';
import { captureActivations, loadOrt, ortSession, type Feeds } from './onnx-runtime.js';
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

/**
 * The recipe `lowbit quantize model.onnx out.onnx` flags stand for (its `onnx` part; the rules do not
 * apply to ONNX). Bad combinations fail here, one line each, before anything is read.
 */
export function onnxRecipeOf(a: ParsedArgs): Recipe {
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
  const qdqOps = [...new Set((a.values['qdq-ops'] as string).split(',').map((x) => x.trim()).filter(Boolean))];
  for (const op of qdqOps) if (!(QDQ_OPS as readonly string[]).includes(op)) fail(`--qdq-ops ${op}: QDQ handles ${QDQ_OPS.join(', ')}`);
  if (qdq && !dynamic && !weightsOnly && !a.values.calib) fail(`--qdq ${qdq} needs --calib (static activation ranges)${qdq === 'int8' ? ', --dynamic' : ''} or --weights-only`);
  const keep = [...new Set(((a.values.keep as string | undefined) ?? '').split(',').map((x) => x.trim()).filter(Boolean))];
  const algo = ((a.values.algo as string | undefined) ?? 'rtn') as NBitsAlgorithm;
  if (!['rtn', 'gptq', 'hqq'].includes(algo)) fail(`--algo ${algo}: ONNX models take rtn, gptq or hqq`);
  if (bits && algo === 'gptq' && !a.values.calib) fail('--algo gptq needs --calib (a .npy/.npz file or a folder of them: the model\'s inputs)');
  const nKeep = a.values['keep-sensitive'] as number | undefined;
  const n16 = a.values.act16 as number | undefined;
  if (qdq && n16 && (dynamic || weightsOnly || qdq !== 'int8')) fail('--act16 applies to static int8 QDQ (calibrated uint8 activations)');
  if (qdq && (nKeep || n16) && !a.values.calib) fail(`--${nKeep ? 'keep-sensitive' : 'act16'} needs --calib (the sensitivity pass runs the model on it)`);
  const onnx: OnnxRecipe = {
    ...(bits ? { nbits: { bits: bits as 2 | 4 | 8, blockSize: (a.values.group as number | undefined) ?? 32, symmetric: !(a.values.asym as boolean), ...(a.values['accuracy-level'] !== undefined ? { accuracyLevel: a.values['accuracy-level'] as number } : {}), algorithm: algo, ...(gather ? { gather } : {}) } } : {}),
    ...(qdq
      ? {
          qdq: {
            format: qdq,
            ops: qdqOps,
            activations: weightsOnly ? 'none' : dynamic ? 'dynamic' : 'static',
            method,
            granularity: perChannel ? 'channel' : 'tensor',
            biasCorrection: a.values['bias-correction'] as boolean,
            ...(nKeep ? { keepSensitive: nKeep } : {}),
            ...(n16 ? { act16: n16 } : {}),
          },
        }
      : {}),
    ...(actq ? { act: actq } : {}),
    ...(float16 ? { float16 } : {}),
    ...(keep.length ? { keep } : {}),
  };
  return defineRecipe({ lowbitRecipe: RECIPE_VERSION, name: `onnx-${type}`, rules: [], onnx });
}

/** onnxruntime-node as the ONNX writer's calibration runtime, over the samples read from --calib */
function ortCalibration(samples: Feeds[]): OnnxCalibration {
  return {
    samples,
    capture: (proto, names, s, sink) => captureActivations(proto, names, s, sink),
    session: (bytes) => ortSession(bytes),
  };
}

export async function runOnnxQuantize(a: ParsedArgs): Promise<void> {
  const [input, output] = a.positionals;
  const dry = a.values['dry-run'] as boolean;
  if (!output && !dry) fail('quantize needs an output path');
  if (!/\.onnx$/i.test(input)) fail(`input ${input}: ONNX output needs an ONNX input (.onnx)`);
  if (output && !/\.onnx$/i.test(output)) fail(`output ${output}: an ONNX model is written as .onnx`);
  noteInput(input);
  noteInput(a.values.calib as string | undefined);
  if (output) checkOutput(output, 'output');
  // --recipe FILE with an `onnx` part, or the flags' recipe
  const recipeFile = a.values.recipe as string | undefined;
  const recipe = recipeFile ? recipeFromJSON(readInputText(recipeFile, 'recipe file')) : onnxRecipeOf(a);
  const o = recipe.onnx ?? fail(`${recipeFile}: recipe ${recipe.name} has no onnx part (an ONNX model is quantized by recipe.onnx)`);
  if (o.nbits?.algorithm === 'gptq' && !a.values.calib) fail('--algo gptq needs --calib (a .npy/.npz file or a folder of them: the model\'s inputs)');
  if (dry) {
    const { file, close } = await openOnnxPath(input);
    try {
      const plan = planQuantization(file, recipe, 'onnx');
      if (a.values.json) process.stdout.write(JSON.stringify({ input, recipe, tensors: plan.tensors.map((p) => ({ name: p.name, shape: [...p.ne].reverse(), from: p.from, to: p.to })) }) + '\n');
      else process.stdout.write(renderTable(['tensor', 'shape', 'from', 'to'], plan.tensors.filter((p) => p.to !== p.from).map((p) => [p.name, [...p.ne].reverse().join('x'), p.from, p.to]), [false, false, false, false]) + `\n${plan.tensors.filter((p) => p.to !== p.from).length} of ${plan.tensors.length} tensors change (the rest are copied)\n`);
    } finally {
      close();
    }
    return;
  }
  const calib = a.values.calib as string | undefined;
  const json = a.values.json as boolean;
  const t0 = performance.now();
  const { model, file, close } = await openOnnxPath(input);
  try {
    // the samples are read when a part of the recipe runs the model (GPTQ, QDQ, activation quantizers)
    let samples: Feeds[] | undefined;
    if (calib && (o.nbits?.algorithm === 'gptq' || o.qdq || o.act)) samples = await readCalibration(calib, model.proto, a, a.values['calib-samples'] as number | undefined, path.resolve(input));
    const tty = !json && process.stderr.isTTY;
    let progressed = false;
    let report!: QuantizeReport;
    await withAtomicFile(output, async (f) => {
      report = await quantize(file, recipe, { write: (b) => f.write(b) }, {
        output: 'onnx',
        ...(samples ? { onnxCalibration: ortCalibration(samples) } : {}),
        onWarning: (s) => {
          if (!json) process.stderr.write(`lowbit: warning: ${s}\n`);
        },
        onProgress: (msg) => {
          if (!tty) return;
          process.stderr.write(`\r${msg}`);
          progressed = true;
        },
      });
      if (progressed) process.stderr.write('\r' + ' '.repeat(40) + '\r');
    });
    const r = report.onnx!;
    const warnings = r.warnings;
    const warn = (s: string) => {
      warnings.push(s);
      if (!json) process.stderr.write(`lowbit: warning: ${s}\n`);
    };
    const bytes = report.bytes;
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
        if (o.qdq?.format !== 'fp8' || !/float8/.test((e as Error).message)) throw e;
        s = await ortSession(written, 1, 'basic');
        warn("onnxruntime-node loads this FP8 model only with graphOptimizationLevel 'basic' (its QDQ fusion makes a float8 QLinearConv, which has no kernel)");
      }
      await s.release();
      loads = true;
    } catch (e) {
      if (!/needs onnxruntime-node/.test((e as Error).message)) throw e;
    }
    const seconds = (performance.now() - t0) / 1000;
    const reports = r.nodes;
    const half = r.float16;
    const sensitivity = r.sensitivity;
    const out = { input, output, inputBytes: model.size, outputBytes: bytes, seconds, nodes: reports, float16: half, sensitivity, warnings, onnxruntimeLoads: loads, recipe };
    if (json) process.stdout.write(JSON.stringify(out) + '\n');
    else {
      const rows = reports.map((x) => [x.node, x.op, x.N ? `${x.K}x${x.N}` : x.K ? `C=${x.K}` : '-', x.action, x.sqnrDb === undefined ? '-' : x.sqnrDb.toFixed(2)]);
      process.stdout.write(renderTable(['node', 'op', 'K x N', 'to', 'SQNR dB'], rows, [false, false, false, false, true]) + '\n');
      if (half) process.stdout.write(`float16: ${half.tensors} weights, ${half.nodes} nodes converted (${half.subgraphs} subgraphs), ${half.casts} Casts; kept in float32: ${Object.entries(half.keptOps).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}\n`);
      if (sensitivity) process.stdout.write(`most sensitive (output SQNR quantized alone): ${sensitivity.slice(0, 8).map((x) => `${x.node} ${x.sqnrDb.toFixed(1)} dB`).join(', ')}\n`);
      process.stdout.write(`${input} (${model.size} bytes) -> ${output} (${bytes} bytes, ${((100 * bytes) / model.size).toFixed(1)} %), ${seconds.toFixed(2)} s${loads ? '; onnxruntime-node loads it' : ''}\n`);
    }
  } finally {
    close();
  }
}
