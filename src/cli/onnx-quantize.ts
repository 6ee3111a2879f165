/**
 * `lowbit quantize model.onnx out.onnx ...`: ONNX models in, ONNX out.
 *   --type int2|int4|int8     MatMul/Gemm weights -> com.microsoft MatMulNBits (--group, --asym,
 *                             --accuracy-level, --algo rtn|gptq|hqq; gptq calibrates with --calib)
 *   --qdq int8|fp8            QuantizeLinear/DequantizeLinear on --qdq-ops (Conv per output channel,
 *                             MatMul/Gemm left by --type): static ranges from --calib (--calib-method) or
 *                             --dynamic activations
 *   --type qdq                only the QDQ part
 * Calibration data: .npy (single-input models), .npz (arrays named by input) or a folder of them.
 * The written model is loaded by onnxruntime-node (when installed) before the command ends.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { fail } from '../errors.js';
import { accumulateHessian, finishHessian } from '../algos/gptq.js';
import { readNpy, readNpz } from '../io/npy.js';
import { writeOnnx, inlineExternalData, PROTOBUF_LIMIT } from '../io/onnx/model.js';
import { matmulTargets, quantizeMatMulNBits, type NBitsAlgorithm, type NodeReport } from '../io/onnx/nbits.js';
import type { ParsedArgs } from './args.js';
import type { OptionSpec } from './args.js';
import { checkOutput, noteInput, stagedPath, withAtomicFile } from './files.js';
import { openOnnxPath } from './onnx-open.js';
import { captureActivations, loadOrt, ortSession, type Feeds } from './onnx-runtime.js';
import { renderTable } from './commands/formats.js';

/** options only ONNX models use (added to `lowbit quantize`'s table) */
export const ONNX_QUANTIZE_OPTIONS: readonly OptionSpec[] = [
  { name: 'accuracy-level', type: 'int', help: 'ONNX MatMulNBits: accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute)', min: 0, max: 4 },
  { name: 'calib-samples', type: 'int', help: 'ONNX: use at most this many calibration samples', min: 1 },
];

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

/** Calibration samples: each a feed per model input, from .npy/.npz files or a folder of them. */
export function readCalibration(p: string, inputNames: readonly string[], max = Infinity): Feeds[] {
  if (!fs.existsSync(p)) fail(`--calib ${p} does not exist`);
  const files = fs.statSync(p).isDirectory()
    ? fs
        .readdirSync(p)
        .filter((f) => /\.(npy|npz)$/i.test(f))
        .sort()
        .map((f) => path.join(p, f))
    : [p];
  if (!files.length) fail(`--calib ${p}: no .npy or .npz files`);
  const out: Feeds[] = [];
  for (const f of files) {
    if (out.length >= max) break;
    const bytes = new Uint8Array(fs.readFileSync(f));
    if (/\.npz$/i.test(f)) {
      const arrays = readNpz(bytes, f, (d) => new Uint8Array(inflateRawSync(d)));
      const feeds: Feeds = {};
      for (const name of inputNames) feeds[name] = arrays.get(name) ?? fail(`${f}: no array named '${name}' (model inputs: ${inputNames.join(', ')}; arrays: ${[...arrays.keys()].join(', ')})`);
      out.push(feeds);
    } else {
      if (inputNames.length !== 1) fail(`${f}: a .npy holds one array, the model has ${inputNames.length} inputs (${inputNames.join(', ')}); use .npz files named by input`);
      out.push({ [inputNames[0]]: readNpy(bytes, f) });
    }
  }
  return out;
}

/** 2 X^T X / n per activation feeding a quantizable MatMul (GPTQ). */
async function collectHessians(m: Awaited<ReturnType<typeof openOnnxPath>>['model'], samples: Feeds[], warn: (s: string) => void): Promise<Map<string, Float64Array>> {
  const targets = matmulTargets(m).filter((t) => t.graphPath === '');
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

export async function runOnnxQuantize(a: ParsedArgs): Promise<void> {
  const [input, output] = a.positionals;
  if (!output) fail('quantize needs an output path');
  if (!/\.onnx$/i.test(input)) fail(`input ${input}: ONNX output needs an ONNX input (.onnx)`);
  if (!/\.onnx$/i.test(output)) fail(`output ${output}: an ONNX model is written as .onnx`);
  noteInput(input);
  noteInput(a.values.calib as string | undefined);
  checkOutput(output, 'output');
  const type = (a.values.type as string | undefined)?.toLowerCase() ?? fail('quantize model.onnx needs --type int4 (also int2, int8)');
  const bitsOf: Record<string, number> = { int2: 2, int4: 4, int8: 8, q4: 4, q8: 8 };
  const bits = bitsOf[type] ?? fail(`--type ${type}: for ONNX models use int2, int4 or int8 (MatMulNBits)`);
  const algo = ((a.values.algo as string | undefined) ?? 'rtn') as NBitsAlgorithm;
  if (!['rtn', 'gptq', 'hqq'].includes(algo)) fail(`--algo ${algo}: ONNX models take rtn, gptq or hqq`);
  const calib = a.values.calib as string | undefined;
  if (algo === 'gptq' && !calib) fail('--algo gptq needs --calib (a .npy/.npz file or a folder of them: the model\'s inputs)');
  const json = a.values.json as boolean;
  const warnings: string[] = [];
  const warn = (s: string) => {
    warnings.push(s);
    if (!json) process.stderr.write(`lowbit: warning: ${s}\n`);
  };
  const t0 = performance.now();
  const { model, close } = await openOnnxPath(input);
  try {
    let hessians: Map<string, Float64Array> | undefined;
    if (algo === 'gptq') {
      const s = await ortSession(path.resolve(input));
      const names = s.inputNames;
      await s.release();
      const samples = readCalibration(calib!, names, a.values['calib-samples'] as number | undefined);
      hessians = await collectHessians(model, samples, warn);
    }
    if (!matmulTargets(model).length) fail(`${input}: no MatMul or Gemm with a constant 2-D float weight to quantize`);
    const reports: NodeReport[] = await quantizeMatMulNBits(
      model,
      { bits, blockSize: (a.values.group as number | undefined) ?? 32, symmetric: !(a.values.asym as boolean), accuracyLevel: a.values['accuracy-level'] as number | undefined, algorithm: algo, hessians },
      warn,
    );
    if (!reports.some((r) => r.action.startsWith('MatMulNBits'))) fail(`nothing was quantized: ${reports.map((r) => `${r.node}: ${r.reason}`).join('; ')}`);
    await inlineExternalData(model);
    let bytes = 0;
    await withAtomicFile(output, async (f) => {
      bytes = await writeOnnx(model.proto, { write: (b) => f.write(b) });
    });
    if (bytes > PROTOBUF_LIMIT) fail('internal error: model over 2 GiB written inline');
    let loads: boolean | undefined;
    try {
      await loadOrt();
      const s = await ortSession(path.resolve(stagedPath(output))); // the written file, renamed into place when the run succeeds
      await s.release();
      loads = true;
    } catch (e) {
      if (!/needs onnxruntime-node/.test((e as Error).message)) throw e;
    }
    const seconds = (performance.now() - t0) / 1000;
    const report = { input, output, inputBytes: model.size, outputBytes: bytes, seconds, nodes: reports, warnings, onnxruntimeLoads: loads };
    if (json) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      const rows = reports.map((r) => [r.node, r.op, `${r.K}x${r.N}`, r.action, r.sqnrDb === undefined ? '-' : r.sqnrDb.toFixed(2)]);
      process.stdout.write(renderTable(['node', 'op', 'K x N', 'to', 'SQNR dB'], rows, [false, false, false, false, true]) + '\n');
      process.stdout.write(`${input} (${model.size} bytes) -> ${output} (${bytes} bytes, ${((100 * bytes) / model.size).toFixed(1)} %), ${seconds.toFixed(2)} s${loads ? '; onnxruntime-node loads it' : ''}\n`);
    }
  } finally {
    close();
  }
}
