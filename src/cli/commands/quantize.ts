import * as fs from 'node:fs';
import { isGgmlFloat } from '../../quant/ggml/types.js';
import * as path from 'node:path';
import { fail } from '../../errors.js';
import { LLAMA_FTYPES } from '../../algos/llama-types.js';
import { PTQ_OPTIONS, type PtqOptions } from '../../algos/ptq-options.js';
import { algorithmName, ALGORITHMS, defineRecipe, llamaRecipe, recipeFromJSON, schemeRecipe, type Algorithm, type Recipe } from '../../algos/recipe.js';
import { checkImatrix, planQuantization, quantize, type QuantizeReport, type TensorReport } from '../../pipeline/quantize.js';
import { evaluateQuantization, type QuantizeEvaluation } from '../../pipeline/evaluate.js';
import { readImatrix } from '../../pipeline/imatrix-file.js';
import { quantizeReportHtml } from '../../pipeline/report-html.js';
import type { Command, ParsedArgs } from '../args.js';
import { checkOutput, noteInput, readInputText, stagedPath, withAtomicFile, writeFileAtomic, type AtomicFile } from '../files.js';
import { splitPartsOf, splitPath } from '../../io/gguf-split.js';
import { directSink } from '../direct-sink.js';
import { openModelPath, pipelinedSink, withSplitOutput } from '../model-open.js';
import { QuantizePool } from '../quantize-pool.js';
import { defaultThreads, threadsFrom } from '../threads.js';
import { GptqPool } from '../gptq-pool.js';
import { fileSource } from '../node-source.js';
import { renderTable } from './formats.js';
import { SCHEME_OPTIONS, schemeOptionFlag } from '../../quant/scheme-options.js';
import { isOnnxPath } from '../onnx-open.js';
import { isTfjsPath, runTfjsQuantize } from '../tfjs-quantize.js';
import { ONNX_QUANTIZE_OPTIONS, runOnnxQuantize } from '../onnx-quantize.js';
import { ALLOCATE_OPTIONS, allocatedRecipe, COST_OPTIONS } from './sensitivity.js';
import type { AllocationResult } from '../../pipeline/allocate.js';
import { editModel, recipeWithOverrides, parseKvOverride, parsePruneLayers, parseTensorTypeFile, parseTensorTypeOverride, remapImatrix, unmatchedOverrides, type TensorTypeOverride } from '../../pipeline/model-edit.js';
import { defendedModel } from '../../audit/run.js';

/** AutoRound options that only its block objective reads (refused with --autoround-objective linear) */
const AUTOROUND_BLOCK_FLAGS = ['autoround-block-iters', 'autoround-block-lr', 'autoround-block-eval', 'autoround-head-iters', 'autoround-head-lr', 'autoround-embedding', 'autoround-block-fisher', 'autoround-e2e-iters', 'autoround-e2e-lr', 'autoround-e2e-batch', 'autoround-e2e-flips'];

/** options that only one algorithm reads */
const ALGORITHM_FLAGS: readonly (readonly [string, string])[] = [
  ['act-order', 'gptq'],
  ['damp', 'gptq'],
  ['gptq-block', 'gptq'],
  ['gptq-importance', 'gptq'],
  ['gptq-clip', 'gptq'],
  ['awq-grid', 'awq'],
  ['awq-clip', 'awq'],
  ['hqq-iters', 'hqq'],
  ['hqq-p', 'hqq'],
  ['autoround-iters', 'autoround'],
  ['autoround-lr', 'autoround'],
  ['autoround-clip', 'autoround'],
  ['autoround-objective', 'autoround'],
  ['autoround-batch', 'autoround'],
  ...AUTOROUND_BLOCK_FLAGS.map((f) => [f, 'autoround'] as const),
  ['easyquant-outliers', 'easyquant'],
  ['omniquant-iters', 'omniquant'],
  ['omniquant-lr', 'omniquant'],
  ['omniquant-batch', 'omniquant'],
  ['omniquant-let', 'omniquant'],
];

/** The recipe of the flags, with --algo and the PTQ options that were given folded in. */
function recipeOf(a: ParsedArgs, output: 'gguf' | 'safetensors'): Recipe {
  const base = baseRecipeOf(a, output);
  const algo = a.values.algo as Algorithm | undefined;
  const given = PTQ_OPTIONS.filter((o) => a.given.has(o.flag));
  if (!algo && !given.length) return base;
  const ptq = { ...(base.ptq ?? {}), ...Object.fromEntries(given.map((o) => [o.key, a.values[o.flag]])) };
  return defineRecipe({ ...JSON.parse(JSON.stringify(base)), ...(algo ? { algorithm: algo } : {}), ...(Object.keys(ptq).length ? { ptq } : {}) });
}

function baseRecipeOf(a: ParsedArgs, output: 'gguf' | 'safetensors'): Recipe {
  const file = a.values.recipe as string | undefined;
  const type = a.values.type as string | undefined;
  if (file && type) fail('give either --type or --recipe, not both');
  if (file) return recipeFromJSON(readInputText(file, 'recipe file'));
  if (!type) fail(`quantize needs --type T (llama.cpp types: ${Object.keys(LLAMA_FTYPES).join(', ')}; or a scheme such as int4, mxfp4, nvfp4, nf4) or --recipe FILE`);
  // names that are both (NVFP4): a llama.cpp file type for GGUF output, the NVIDIA scheme for safetensors
  const isFtype = output === 'gguf' && Object.keys(LLAMA_FTYPES).some((k) => k.toLowerCase() === type.toLowerCase());
  // flags of the other kind of target are refused, not ignored
  const LLAMA_ONLY = ['pure', 'output-tensor-type', 'token-embedding-type', 'leave-output-tensor'];
  const GENERIC_ONLY = ['group', 'asym', 'zero-point', 'keep-embeddings'];
  for (const f of isFtype ? GENERIC_ONLY : LLAMA_ONLY)
    if (a.given.has(f)) fail(isFtype ? `--${f} applies to generic schemes (int4, mxfp4, ...), not to the llama.cpp type ${type}` : `--${f} applies to llama.cpp types (Q4_K_M, ...), not to the scheme ${type}`);
  if (isFtype)
    return llamaRecipe(type, {
      pure: a.values.pure as boolean,
      outputTensorType: (a.values['output-tensor-type'] as string | undefined)?.toUpperCase(),
      tokenEmbeddingType: (a.values['token-embedding-type'] as string | undefined)?.toUpperCase(),
      leaveOutputTensor: a.values['leave-output-tensor'] as boolean,
    });
  if (a.given.has('zero-point') && !a.values.asym) fail('--zero-point applies with --asym');
  return schemeRecipe(type, { groupSize: a.values.group as number | undefined, asym: a.values.asym as boolean, zeroPoint: a.values['zero-point'] as 'int' | 'float' | undefined, keepEmbeddings: a.values['keep-embeddings'] as boolean });
}

/** --tensor-type / --tensor-type-file entries in command-line order (files read as given) */
function tensorTypeOverrides(a: ParsedArgs): TensorTypeOverride[] {
  const out: TensorTypeOverride[] = [];
  for (const [name, v] of a.repeated) {
    if (name === 'tensor-type') out.push(parseTensorTypeOverride(v));
    else if (name === 'tensor-type-file') out.push(...parseTensorTypeFile(readInputText(v, '--tensor-type-file'), v));
  }
  return out;
}

function allocationSummary(r: AllocationResult, actual: number) {
  return { targetBytes: r.targetBytes, fileBytes: actual, predictedBytes: r.fileBytes, bitsPerWeight: (8 * actual) / r.parameters, cost: r.cost, baseCost: r.baseCost, optimal: r.optimal, lowerBound: r.lowerBound, ...(r.evo ? { evo: r.evo } : {}), types: Object.fromEntries(r.rows.map((x) => [x.name, x.type])) };
}

function allocationText(r: AllocationResult, actual: number): string {
  const counts = new Map<string, number>();
  for (const x of r.rows) counts.set(x.type, (counts.get(x.type) ?? 0) + 1);
  const mix = [...counts].map(([t, n]) => `${n} ${t}`).join(', ');
  return `allocation: ${actual} bytes (target ${r.targetBytes}), ${((8 * actual) / r.parameters).toFixed(3)} bpw; ${mix}; predicted cost ${r.cost.toExponential(3)}${r.baseCost !== undefined ? ` (base mix ${r.baseCost.toExponential(3)})` : ''}${r.optimal ? ', optimal for the additive model' : `, lower bound ${r.lowerBound.toExponential(3)}`}${r.evo ? `; evo KLD ${r.evo.startKld.toExponential(3)} -> ${r.evo.kld.toExponential(3)} in ${r.evo.evaluations} evaluations` : ''}\n`;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 3 : 1)} MiB`;

/** The text report: one row per tensor, totals, and the evaluation when there is one. */
export function reportTable(r: QuantizeReport, ev?: QuantizeEvaluation): string {
  const rows = r.tensors.map((t: TensorReport) => [
    t.name,
    t.shape.join('x'),
    t.type + (t.fallbackFrom ? ` (from ${t.fallbackFrom})` : ''),
    t.bitsPerWeight.toFixed(2),
    Number.isFinite(t.sqnrDb) ? t.sqnrDb.toFixed(2) : 'exact',
  ]);
  const table = renderTable(['tensor', 'shape', 'type', 'bpw', 'SQNR dB'], rows, [false, false, false, true, true]);
  const lines = [table, '', `total: ${r.parameters} parameters, ${mib(r.bytes)} (${r.bytes} bytes) of tensor data, ${r.bitsPerWeight.toFixed(3)} bits per weight, ${r.seconds.toFixed(2)} s`];
  if (ev) {
    const k = ev.kld;
    lines.push(
      `eval: ${ev.text}, ${ev.chunks} chunks of ${ev.ctx}, ${ev.tokens} scored tokens (${ev.seconds.toFixed(1)} s)`,
      `  PPL ${ev.pplBase.toFixed(4)} -> ${ev.ppl.toFixed(4)} +/- ${ev.pplStderr.toFixed(4)} (${(100 * (ev.ppl / ev.pplBase - 1)).toFixed(2)} %)`,
      `  KLD mean ${k.mean.toFixed(6)} +/- ${k.stderr.toFixed(6)}, median ${k.median.toFixed(6)}, p99 ${k.p99.toFixed(6)}, max ${k.max.toFixed(6)}`,
      `  same top-1 token ${(100 * ev.top1).toFixed(2)} %, RMS Δp ${(100 * ev.dp.rms).toFixed(3)} %`,
    );
  }
  return lines.join('\n');
}

/** A one-line progress bar on stderr (TTY only), weighted by parameters. */
function progressBar(totalParams: number) {
  const t0 = performance.now();
  let doneParams = 0;
  return {
    tensor(i: number, n: number, r: TensorReport) {
      doneParams += r.shape.reduce((a, b) => a * b, 1);
      const f = totalParams > 0 ? doneParams / totalParams : i / n;
      const width = 24;
      const bar = '#'.repeat(Math.round(f * width)).padEnd(width, '.');
      const s = (performance.now() - t0) / 1000;
      process.stderr.write(`\r[${bar}] ${(100 * f).toFixed(0).padStart(3)}% ${i}/${n} ${s.toFixed(1)} s  ${r.name.slice(0, 36).padEnd(36)}`);
    },
    line(text: string) {
      process.stderr.write(`\r${text.padEnd(90).slice(0, 90)}`);
    },
    clear() {
      process.stderr.write('\r' + ' '.repeat(90) + '\r');
    },
  };
}

export const quantizeCommand: Command = {
  name: 'quantize',
  summary: 'quantize a model to GGUF (llama.cpp types) or safetensors (generic schemes), with a per-tensor report',
  usage:
    'lowbit quantize IN OUT (--type T | --recipe FILE) [--algo rtn|gptq|awq|hqq|autoround|gptq+autoround|omniquant] [--calib FILE --calib-tokens N --calib-ctx C --seed S] [--rotate hadamard|learned] [--imatrix F] [--pure] [--threads N] [--layout lowbit|gptq|awq] [--eval TEXT] [--report out.html] [--dry-run] [--json]',
  positionals: [1, 2],
  options: [
    { name: 'type', type: 'string', help: 'llama.cpp file type (Q4_K_M, Q8_0, ...) or a scheme (int4, mxfp4, nvfp4, nf4, q4_0, ...)' },
    { name: 'recipe', type: 'string', help: 'a recipe JSON file' },
    ...SCHEME_OPTIONS.filter((o) => o.recipeField).map((o) => schemeOptionFlag(o.flag)), // --group, --asym, --zero-point (the recipe rule's scheme options)
    { name: 'keep-embeddings', type: 'boolean', help: 'generic schemes: keep token_embd/output in f16' },
    { name: 'imatrix', type: 'string', help: 'importance matrix (llama-imatrix .dat or .gguf) for the weighted quantizers' },
    { name: 'pure', type: 'boolean', help: 'llama.cpp types: no mixing, every tensor gets the default type (as llama-quantize --pure)' },
    { name: 'output-tensor-type', type: 'string', help: 'type of output.weight' },
    { name: 'token-embedding-type', type: 'string', help: 'type of token_embd.weight' },
    { name: 'leave-output-tensor', type: 'boolean', help: 'do not quantize output.weight' },
    { name: 'tensor-type', type: 'string', repeatable: true, help: 'PATTERN=TYPE: tensors whose name matches the regular expression get this GGML type (llama-quantize --tensor-type; first match wins)' },
    { name: 'tensor-type-file', type: 'string', repeatable: true, help: 'a file of PATTERN=TYPE entries separated by whitespace (llama-quantize --tensor-type-file)' },
    { name: 'prune-layers', type: 'string', help: 'L0,L1,...: drop these blocks and renumber the rest (llama-quantize --prune-layers)' },
    { name: 'override-kv', type: 'string', repeatable: true, help: 'KEY=TYPE:VALUE (int, float, bool, str): set this metadata in the output (llama-quantize --override-kv)' },
    { name: 'layout', type: 'string', help: 'safetensors layout: lowbit\'s own, or a Hugging Face checkpoint with GPTQ/AWQ packed int4 layers + config.json (int4 schemes)', choices: ['lowbit', 'gptq', 'awq'], default: 'lowbit' },
    { name: 'keep-unpackable', type: 'boolean', help: 'gptq/awq: store linear layers whose shape cannot be packed in F16 instead of failing' },
    { name: 'eval', type: 'string', help: 'evaluate the output against the input on this text: PPL, KLD, top-1 (as lowbit eval --base)' },
    { name: 'eval-ctx', type: 'int', help: 'tokens per evaluation chunk', default: 512, min: 4 },
    { name: 'eval-chunks', type: 'int', help: 'evaluate at most this many chunks (default all)', min: 1 },
    { name: 'report', type: 'string', help: 'also write a self-contained HTML report (tables, SQNR per layer, KLD histogram)' },
    { name: 'threads', type: 'int', help: 'threads quantizing GGML tensors and running calibration (default: all cores; quantization bytes do not depend on it)', min: 1 },
    { name: 'algo', type: 'string', choices: ALGORITHMS, help: 'rtn (default; imatrix-weighted with --calib), gptq, awq, autoround, omniquant (need --calib), hqq (asymmetric targets, no calibration); a+b applies a\'s transform or start, then b rounds' },
    { name: 'calib', type: 'string', help: 'calibration text (UTF-8) for gptq, awq, --smooth and imatrix-rtn' },
    ...PTQ_OPTIONS.map((o) => ({ name: o.flag, type: o.type, help: `${o.help} (default ${String(o.default)})`, ...(o.choices ? { choices: o.choices } : {}), ...(o.min !== undefined ? { min: o.min } : {}), ...(o.max !== undefined ? { max: o.max } : {}) })),
    { name: 'defend', type: 'string', help: 'noise[=SCALE]: add interval-calibrated noise (SCALE rounding steps, default 0.5) to the weights before quantizing: removes planted quantization attacks (docs/security.md)' },
    ...ALLOCATE_OPTIONS,
    ...COST_OPTIONS,
    { name: 'keep-split', type: 'boolean', help: 'GGUF: one output file per input split file, OUT-00001-of-0000N.gguf ... (llama-quantize --keep-split); a split input is read whole without it' },
    { name: 'dry-run', type: 'boolean', help: 'print the per-tensor plan and write nothing' },
    { name: 'force', type: 'boolean', help: '--layout gptq|awq: replace an existing config.json beside OUT' },
    { name: 'json', type: 'boolean', help: 'print the report as JSON (no progress)' },
    ...ONNX_QUANTIZE_OPTIONS,
  ],
  async run(a) {
    const [input, output] = a.positionals;
    if (isOnnxPath(input) || isOnnxPath(output)) return runOnnxQuantize(a);
    if (isTfjsPath(input)) return runTfjsQuantize(a);
    const dry = a.values['dry-run'] as boolean;
    if (!output && !dry) fail('quantize needs an output path (or --dry-run)');
    const out = output ?? 'plan.gguf';
    const kind = /\.gguf$/i.test(out) ? 'gguf' : /\.safetensors$/i.test(out) ? 'safetensors' : fail(`output ${out}: extension must be .gguf or .safetensors`);
    const layout = a.values.layout as 'lowbit' | 'gptq' | 'awq';
    if (layout !== 'lowbit' && kind !== 'safetensors') fail(`--layout ${layout} writes a Hugging Face safetensors checkpoint: OUT must end in .safetensors`);
    if (a.values['keep-unpackable'] && layout === 'lowbit') fail('--keep-unpackable applies to --layout gptq or awq');
    const keepSplit = a.values['keep-split'] as boolean;
    if (keepSplit && kind !== 'gguf') fail('--keep-split writes split GGUF files: OUT must end in .gguf');
    if (keepSplit && a.values.eval) fail('--keep-split: --eval reads one output file; run lowbit eval on OUT-00001-of-0000N.gguf afterwards');
    const splitPrefix = out.replace(/\.gguf$/i, '');
    const configPath = path.join(path.dirname(out), 'config.json');
    const imFile = a.values.imatrix as string | undefined;
    const calibFile = a.values.calib as string | undefined;
    const evalText = a.values.eval as string | undefined;
    const reportFile = a.values.report as string | undefined;
    if (reportFile && !/\.html?$/i.test(reportFile)) fail(`--report ${reportFile}: the report is HTML; name it .html`);
    // validate everything, then write: every input is noted and every output checked before any work
    for (const f of [input, imFile, calibFile, evalText, a.values.recipe as string | undefined]) noteInput(f);
    if (/\.safetensors$|\.json$/i.test(input)) noteInput(path.join(path.dirname(input), 'config.json'));
    if (!dry) {
      if (!keepSplit) checkOutput(out, 'output'); // (--keep-split: the part files, once the input's parts are known)
      if (layout !== 'lowbit') {
        checkOutput(configPath, 'config.json');
        if (fs.existsSync(configPath) && !a.values.force)
          fail(`${configPath} already exists (it may belong to another checkpoint in this folder); write OUT into its own folder, or give --force to replace it`);
      }
      if (reportFile) checkOutput(reportFile, 'report (--report)');
    }
    for (const [name, v] of a.repeated) if (name === 'tensor-type-file') noteInput(v);
    const overrides = tensorTypeOverrides(a);
    const pruneLayers = a.given.has('prune-layers') ? parsePruneLayers(a.values['prune-layers'] as string) : [];
    const kvOverrides = a.repeated.filter(([n]) => n === 'override-kv').map(([, v]) => parseKvOverride(v));
    if ((pruneLayers.length || kvOverrides.length) && kind !== 'gguf') fail('--prune-layers / --override-kv edit a GGUF: OUT must end in .gguf');
    let recipe = recipeWithOverrides(recipeOf(a, kind), overrides);
    // options of one algorithm are refused when no tensor uses it (instead of being silently ignored)
    const algorithmsUsed = [recipe.algorithm ?? 'rtn', ...recipe.rules.map((r) => r.algorithm ?? '')].flatMap((x) => algorithmName(x || undefined).split('+'));
    for (const [flag, algo] of ALGORITHM_FLAGS) if (a.given.has(flag) && !algorithmsUsed.includes(algo)) fail(`--${flag} applies to --algo ${algo} (this run uses ${[...new Set(algorithmsUsed.filter(Boolean))].join(', ')})`);
    const ptqGiven = (recipe.ptq ?? {}) as Partial<PtqOptions>;
    if ((ptqGiven.autoroundObjective ?? 'block') === 'linear') for (const f of AUTOROUND_BLOCK_FLAGS) if (a.given.has(f)) fail(`--${f} applies to AutoRound's block objective (this run gives --autoround-objective linear)`);
    for (const [f, needs, on] of [['autoround-head-lr', 'autoround-head-iters', ptqGiven.autoroundHeadIters], ['autoround-e2e-lr', 'autoround-e2e-iters', ptqGiven.autoroundE2eIters], ['autoround-e2e-batch', 'autoround-e2e-iters', ptqGiven.autoroundE2eIters], ['autoround-e2e-flips', 'autoround-e2e-iters', ptqGiven.autoroundE2eIters]] as const)
      if (a.given.has(f) && !on) fail(`--${f} applies with --${needs} (the stage is off)`);
    if (a.given.has('autoround-e2e-lr') && ptqGiven.autoroundE2eFlips) fail('--autoround-e2e-lr sets the signed-gradient steps: --autoround-e2e-flips replaces them');
    if (a.given.has('embedding-fisher') && !calibFile) fail('--embedding-fisher applies with --calib (the Fisher is measured on the calibration windows)');
    for (const f of ['rotate-iters', 'rotate-lr', 'rotate-batch']) if (a.given.has(f) && recipe.ptq?.rotate !== 'learned') fail(`--${f} applies with --rotate learned`);
    const allocating = a.given.has('target-size') || a.given.has('target-bpw');
    if (!allocating) for (const f of ['allocate', 'db', 'evo-generations', 'evo-offspring', 'types', 'estimator', 'output-factor', 'kld-windows', 'sample-rows', 'plain-costs']) if (a.given.has(f)) fail(`--${f} applies with --target-size or --target-bpw`);
    // --plain-costs: the allocation assumed the plain quantizers, so (when only RTN rounds) the calibration
    // text measures the costs and the file is written without importance weights, as they assumed
    const costsOnly = allocating && a.values['plain-costs'] === true && algorithmsUsed.every((x) => !x || x === 'rtn');
    if (allocating && kind !== 'gguf') fail('--target-size/--target-bpw allocate GGML types: OUT must end in .gguf');
    // the sensitivity database is a cache: read when it exists, else written (replaced only when the run succeeds)
    if (allocating && a.given.has('db') && !dry) checkOutput(a.values.db as string, 'sensitivity database (--db)');
    let imatrix: Awaited<ReturnType<typeof readImatrix>> | undefined;
    if (imFile) {
      const src = fileSource(imFile);
      try {
        imatrix = await readImatrix(src);
      } finally {
        src.close();
      }
    }
    const json = a.values.json as boolean;
    const calibText = calibFile ? readInputText(calibFile, 'calibration file (--calib)') : undefined;
    const evalTextContent = evalText ? readInputText(evalText, '--eval text') : undefined;
    const defend = a.values.defend as string | undefined;
    let defendScale = 0;
    if (defend !== undefined) {
      const m = /^noise(?:=([0-9.eE+-]+))?$/.exec(defend);
      if (!m) fail(`--defend ${defend}: expected noise or noise=SCALE`);
      defendScale = m[1] === undefined ? 0.5 : Number(m[1]);
      if (!(defendScale > 0 && defendScale <= 4)) fail(`--defend noise=${m[1]}: the scale (in rounding steps) must be in (0, 4]`);
      if (kind !== 'gguf') fail('--defend applies to GGUF outputs (GGML types)');
    }
    const { model: opened, close } = await openModelPath(input);
    let model = opened;
    try {
      // --keep-split: each input part's tensors (one part when the input is a single file)
      const splitParts = keepSplit ? (splitPartsOf(opened.sources[0]) ?? [opened.tensors.map((t) => t.name)]) : [];
      if (keepSplit && !dry) for (let i = 0; i < splitParts.length; i++) checkOutput(splitPath(splitPrefix, i, splitParts.length), 'output');
      const edited = editModel(opened, { pruneLayers, kvOverrides });
      model = edited.model;
      if (imatrix) imatrix = remapImatrix(imatrix, edited.originalName);
      const names = model.tensors.map((t) => t.name);
      for (const o of unmatchedOverrides(names, overrides)) process.stderr.write(`lowbit: warning: --tensor-type ${o.pattern}=${o.type} matches no tensor\n`);
      let allocation: AllocationResult | undefined;
      let sharedPool: QuantizePool | undefined;
      if (allocating) {
        const tty0 = !(a.values.json as boolean) && process.stderr.isTTY;
        // costs measured now (--calib, no --db file yet): on the row pool that then quantizes the file (one
        // set of threads started, not two)
        const poolThreads = (a.values.threads as number | undefined) ?? defaultThreads(Infinity);
        if (!(a.values.db && fs.existsSync(a.values.db as string)) && a.values.calib && !dry && poolThreads > 1) sharedPool = new QuantizePool(poolThreads);
        try {
          allocation = await allocatedRecipe(a, input, model, recipe, a.values.calib as string | undefined, tty0 ? (msg) => process.stderr.write(`\r${msg.padEnd(78).slice(0, 78)}`) : undefined, imatrix, sharedPool);
        } catch (e) {
          await sharedPool?.close();
          throw e;
        }
        if (tty0) process.stderr.write('\r' + ' '.repeat(78) + '\r');
        recipe = allocation.recipe;
      }
      // calibration text gives the linears their importance (imatrix-RTN): the types llama-quantize allows
      // only with an imatrix are allowed with it (quantize() checks the same)
      const plan = planQuantization(model, recipe, kind, { hasImatrix: !!imatrix || (calibText !== undefined && !costsOnly), layout, keepUnpackable: a.values['keep-unpackable'] as boolean, mixLayers: edited.mixLayers });
      if (imatrix) checkImatrix(model, plan, imatrix, `imatrix ${imFile}`);
      if (defendScale > 0) {
        const types = new Map(plan.tensors.filter((p) => p.ggml && !isGgmlFloat(p.to) && p.ne.length === 2).map((p) => [p.name, p.to]));
        model = await defendedModel(model, types, defendScale, (a.values.seed as number | undefined) ?? 0);
      }
      // a group size that fits no tensor would silently leave every tensor unquantized
      const quantizable = plan.tensors.filter((p) => p.from !== p.to || p.fallbackFrom);
      if (a.given.has('group') && quantizable.length && quantizable.every((p) => p.fallbackFrom))
        fail(`--group ${a.values.group} fits no tensor of ${input} (every one would fall back to ${quantizable[0].to}); use a group size that divides the rows`);
      if (dry) {
        const rows = plan.tensors.map((p) => [p.name, p.ne.join('x'), p.from, p.to + (p.fallbackFrom ? ` (from ${p.fallbackFrom})` : '')]);
        if (json) process.stdout.write(JSON.stringify({ recipe: plan.recipe, tensors: plan.tensors.map(({ name, ne, from, to, fallbackFrom }) => ({ name, ne, from, to, fallbackFrom })) }, null, 1) + '\n');
        else process.stdout.write(renderTable(['tensor', 'shape', 'from', 'to'], rows) + '\n');
        return;
      }
      const tty = !json && process.stderr.isTTY;
      const progress = tty ? progressBar(plan.tensors.reduce((a, p) => a + p.ne.reduce((x, y) => x * y, 1), 0)) : undefined;
      const threads = (a.values.threads as number | undefined) ?? defaultThreads(Infinity);
      const gptqWorkers = threads > 1 ? new GptqPool(threads - 1) : undefined; // starts threads only when GPTQ runs
      const pool = sharedPool ?? (threads > 1 ? new QuantizePool(threads) : undefined);
      let report: Awaited<ReturnType<typeof quantize>>;
      let splitFiles: string[] = [];
      const writeOut = async <T>(fill: (f: AtomicFile) => Promise<T>): Promise<T> => {
        if (!keepSplit) return withAtomicFile(out, fill);
        const r = await withSplitOutput(splitPrefix, splitParts, fill);
        splitFiles = r.files;
        return r.result;
      };
      try {
        report = await writeOut(async (f) => {
          // writes run on the thread pool while quantize() quantizes the next slabs: with O_DIRECT
          // where the file system takes it, else buffered with a sync every 64 MiB (depth 0: a write
          // resolves once done, as the writer then reuses the buffer)
          const sink = directSink(f) ?? pipelinedSink(f, 0, 64 << 20);
          try {
            // the one verb: runs the recipe's algorithms (calibration on --calib) and writes the file
            const r = await quantize(model, recipe, sink, {
              output: kind,
              layout,
              keepUnpackable: a.values['keep-unpackable'] as boolean,
              imatrix,
              workers: pool,
              onTensor: progress?.tensor,
              calibText: costsOnly ? undefined : calibText,
              threads: threadsFrom(threads),
              gptqWorkers,
              onProgress: progress ? (msg) => progress.line(msg) : undefined,
              mixLayers: edited.mixLayers,
            });
            await sink.flush();
            return r;
          } catch (e) {
            await sink.settle(); // before the temp file is closed and removed
            throw e;
          }
        });
      } finally {
        await gptqWorkers?.close();
        await pool?.close();
      }
      const ptq = report.ptq;
      const outputBytes = () => (keepSplit ? splitFiles : [out]).reduce((n, f) => n + fs.statSync(stagedPath(f)).size, 0);
      // a GPTQ/AWQ checkpoint is a folder: the safetensors file and config.json beside it
      if (report.hfConfig) writeFileAtomic(configPath, JSON.stringify(report.hfConfig, null, 2) + '\n', 'config.json');
      let evaluation: QuantizeEvaluation | undefined;
      if (evalText && evalTextContent !== undefined) {
        const text = evalTextContent;
        const original = fileSource(input);
        const quantized = fileSource(stagedPath(out)); // the written output, renamed into place when the run succeeds
        try {
          evaluation = await evaluateQuantization(original, quantized, text, {
            ctx: a.values['eval-ctx'] as number,
            chunks: a.values['eval-chunks'] as number | undefined,
            textName: evalText,
            onChunk: progress ? (i, n) => progress.line(`eval [${i}/${n}]`) : undefined,
          });
        } finally {
          original.close();
          quantized.close();
        }
      }
      progress?.clear();
      if (reportFile) writeFileAtomic(reportFile, quantizeReportHtml({ report, input, output: out, evaluation, generator: 'lowbit 0.1.0 quantize' }), 'report (--report)');
      const algorithms = ptq?.algorithms ?? {};
      if (json) {
        const ev = evaluation ? (({ kldValues: _omit, ...rest }) => rest)(evaluation) : undefined;
        process.stdout.write(JSON.stringify({ ...report, output: keepSplit ? splitFiles[0] : out, ...(keepSplit ? { outputs: splitFiles } : {}), ...(allocation ? { allocation: allocationSummary(allocation, outputBytes()) } : {}), algorithm: recipe.algorithm ?? 'rtn', ...(ptq ? { ptq: { notes: ptq.notes, seconds: ptq.seconds, calibrationTokens: ptq.calibrationTokens, rotationMaxLogitDiff: ptq.rotationMaxLogitDiff } } : {}), tensors: report.tensors.map((t) => ({ ...t, sqnrDb: Number.isFinite(t.sqnrDb) ? t.sqnrDb : null, ...(algorithms[t.name] ? { algorithm: algorithms[t.name] } : {}) })), ...(ev ? { evaluation: ev } : {}), ...(reportFile ? { report: reportFile } : {}) }) + '\n');
      } else {
        const ptqText = ptq ? `${ptq.notes.join('\n')}\n${ptq.calibrationTokens ? `calibration: ${ptq.calibrationTokens} tokens, ` : ''}${ptq.seconds.toFixed(2)} s\n` : '';
        process.stdout.write(`${keepSplit ? splitFiles.join(', ') : out}: ${recipe.name}${recipe.algorithm ? ` (${recipe.algorithm})` : ''}${report.hfConfig ? ` (${layout} layout; ${configPath} written)` : ''}\n\n${reportTable(report, evaluation)}\n${ptqText}${reportFile ? `report: ${reportFile}\n` : ''}${allocation ? allocationText(allocation, outputBytes()) : ''}`);
      }
    } finally {
      close();
    }
  },
};
