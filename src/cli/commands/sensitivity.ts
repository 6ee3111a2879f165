import { existsSync } from 'node:fs';
import { fail } from '../../errors.js';
import { calibrationWindows, modelShape } from '../../pipeline/passes/load.js';
import { algorithmName, type Recipe } from '../../algos/recipe.js';
import { ptqOptions } from '../../algos/ptq-options.js';
import type { Imatrix } from '../../algos/imatrix.js';
import type { ModelFile } from '../../io/model-file.js';
import { allocateToSize, bytesForBpw, parameterCount, type AllocateMethod, type AllocationResult } from '../../pipeline/allocate.js';
import { DEFAULT_SENSITIVITY_TYPES, kldFitness, measureSensitivity, modelFingerprint, parseSensitivityDb, type SensitivityDb } from '../../pipeline/sensitivity.js';
import { sensitivityReportHtml } from '../../pipeline/sensitivity-report.js';
import { startStream } from '../../pipeline/stats-pass.js';
import { vocabFromGgufMetadata } from '../../io/vocab.js';
import { Tokenizer } from '../../model/tokenizer.js';
import type { Command } from '../args.js';
import { checkOutput, noteInput, readInputText, writeFileAtomic } from '../files.js';
import { openModelPath } from '../model-open.js';
import { threadsFrom } from '../threads.js';
import { QuantizePool } from '../quantize-pool.js';
import { GptqPool } from '../gptq-pool.js';
import { loadModelPath } from './generate.js';
import { renderTable } from './formats.js';

/** Options shared by `sensitivity` and `quantize --target-*` (how costs are measured). */
export const COST_OPTIONS = [
  { name: 'types', type: 'string', help: `candidate GGML types, comma-separated (default ${DEFAULT_SENSITIVITY_TYPES.join(',')}; a type whose block does not divide a row is skipped for that tensor)` },
  { name: 'estimator', type: 'string', choices: ['hessian', 'kld'], default: 'hessian', help: 'hessian: exact tr(ΔW H ΔWᵀ) from one calibration pass; kld: each tensor quantized alone, KL divergence of the outputs' },
  { name: 'output-factor', type: 'string', choices: ['kld', 'none'], default: 'kld', help: 'hessian: scale each tensor\'s costs to KLD units by one KLD probe per tensor (none: raw layer-output error)' },
  { name: 'kld-windows', type: 'int', default: 4, min: 1, max: 4096, help: 'windows of --calib-ctx tokens for the KL divergences' },
  { name: 'plain-costs', type: 'boolean', help: 'costs of the plain quantizers (for a file quantized without --calib/--imatrix; faster) instead of the importance-weighted ones; quantize --calib --target-size --plain-costs then writes the file with the plain quantizers (the text measures the costs only)' },
  { name: 'sample-rows', type: 'int', min: 1, max: 1 << 24, help: 'hessian: estimate each tensor\'s cost from this many evenly spaced rows (default: every row; large models: e.g. 256)' },
] as const;

/** Calibration options of `sensitivity` (quantize has its own with the same names). */
const CALIB_OPTIONS = [
  { name: 'calib-tokens', type: 'int', default: 4096, min: 16, max: 1 << 22, help: 'calibration tokens for the statistics' },
  { name: 'calib-ctx', type: 'int', default: 256, min: 8, max: 65536, help: 'tokens per calibration window' },
  { name: 'seed', type: 'int', default: 1, min: 0, help: 'seed of the calibration windows' },
] as const;

/** calibration settings, with quantize's defaults where its flags were not given */
function calibOf(a: { values: Record<string, unknown> }): { tokens: number; ctx: number; seed: number } {
  return { tokens: (a.values['calib-tokens'] as number | undefined) ?? 16384, ctx: (a.values['calib-ctx'] as number | undefined) ?? 512, seed: (a.values.seed as number | undefined) ?? 0 };
}

/**
 * Measure the costs of the model at `modelPath` (open already as `m`, e.g. quantize's edited model, or
 * opened here). The Hessian statistics come from the streaming calibration pass over the file; the
 * model is loaded into the runtime only for KL divergences (--estimator kld, --output-factor kld).
 */
export async function runSensitivity(modelPath: string, a: { values: Record<string, unknown> }, calibPath: string, onProgress?: (msg: string, done: number, total: number) => void, m?: ModelFile, gptq?: { ptq?: unknown }, sharedPool?: QuantizePool): Promise<SensitivityDb> {
  if (gptq && a.values['plain-costs']) fail('--plain-costs measures the plain RTN quantizers: not with GPTQ candidates (--algo gptq)');
  if (gptq && a.values.estimator === 'kld') fail('GPTQ candidates (--algo gptq) are measured by the hessian estimator (GPTQ needs each input\'s Hessian): not with --estimator kld');
  const types = a.values.types ? String(a.values.types).split(',').map((s) => s.trim().toUpperCase()).filter(Boolean) : [...DEFAULT_SENSITIVITY_TYPES];
  const cal = calibOf(a);
  const opened = m ? undefined : await openModelPath(modelPath);
  const file = m ?? opened!.model;
  let pool: QuantizePool | undefined;
  let gptqPool: GptqPool | undefined;
  try {
    const estimator = a.values.estimator as 'hessian' | 'kld';
    const outputFactor = a.values['output-factor'] as 'kld' | 'none';
    const threads = threadsFrom(a.values.threads as number | undefined);
    const { config, metadata } = modelShape(file);
    if (metadata.get('tokenizer.ggml.tokens') === undefined) fail(`${modelPath} carries no vocabulary to tokenize the calibration text`);
    const tokenizer = new Tokenizer(vocabFromGgufMetadata(metadata));
    const ctx = Math.min(cal.ctx, config.seqLen);
    const weighted = !(a.values['plain-costs'] as boolean | undefined);
    // the candidates' rows are quantized on every thread (as plain quantize does): the caller's pool
    // when it has one (quantize --calib --target-size: the one that then quantizes the file), else our own
    pool = sharedPool ?? (threads > 1 ? new QuantizePool(threads) : undefined);
    gptqPool = gptq && threads > 1 ? new GptqPool(threads - 1) : undefined;
    // the statistics pass (hessian costs, or the importance of weighted ones) and the row workers start
    // now: the threads start up and the first layer's weights are read while this thread tokenizes
    const started = estimator === 'hessian' || weighted ? startStream(file, { threads }) : undefined;
    pool?.start();
    const stream = tokenizer.encode(readInputText(calibPath, 'calibration file (--calib)'), { bos: false });
    const windows = calibrationWindows(stream, cal.tokens, ctx, cal.seed, tokenizer.vocab.bos);
    const nKld = Math.min(windows.length, a.values['kld-windows'] as number);
    // the runtime holds the whole model: only for the KL divergences
    const model = estimator === 'kld' || outputFactor === 'kld' ? (await loadModelPath(modelPath, undefined, { contextLength: ctx, batch: Math.min(ctx, 512), threads })).model : undefined;
    return await measureSensitivity({
      model,
      file,
      windows,
      kldWindows: windows.slice(0, nKld),
      types,
      estimator,
      outputFactor,
      seed: cal.seed,
      maxRows: a.values['sample-rows'] as number | undefined,
      weighted,
      threads,
      started,
      rowQuantizer: pool,
      ...(gptq ? { algo: 'gptq' as const, ptq: ptqOptions(gptq.ptq ?? {}), gptqWorkers: gptqPool } : {}),
      onProgress,
    });
  } finally {
    if (pool !== sharedPool) await pool?.close();
    await gptqPool?.close();
    opened?.close();
  }
}

export const sensitivityCommand: Command = {
  name: 'sensitivity',
  summary: 'measure how much each tensor suffers from each candidate type (HAWQ-style Hessian cost or KL divergence), for bit allocation',
  usage: 'lowbit sensitivity MODEL --calib FILE [--types Q2_K,Q3_K,...] [--estimator hessian|kld] [--db costs.json] [--report out.html] [--json]',
  positionals: [1, 1],
  options: [
    { name: 'calib', type: 'string', help: 'calibration text (UTF-8)' },
    { name: 'algo', type: 'string', choices: ['rtn', 'gptq'], default: 'rtn', help: 'gptq: the candidates are the GPTQ versions of the types (each cost measured on the GPTQ-rounded weights, with the Hessians of the pass); for quantize --db --algo gptq' },
    ...COST_OPTIONS,
    ...CALIB_OPTIONS,
    { name: 'db', type: 'string', help: 'write the costs to this JSON file (quantize --db reads it)' },
    { name: 'report', type: 'string', help: 'write an HTML report (Pareto front of bytes vs cost per tensor)' },
    { name: 'threads', type: 'int', min: 1, max: 256, help: 'threads for the forward passes' },
    { name: 'json', type: 'boolean', help: 'print the database as JSON (no progress)' },
  ],
  async run(a) {
    const [modelPath] = a.positionals;
    const calib = a.values.calib as string | undefined;
    if (!calib) fail('sensitivity needs --calib FILE (calibration text)');
    const db = a.values.db as string | undefined;
    const report = a.values.report as string | undefined;
    // validate everything, then write: inputs noted, outputs checked before the measurement
    noteInput(modelPath);
    noteInput(calib);
    if (db) checkOutput(db, 'database (--db)');
    if (report) checkOutput(report, 'report (--report)');
    const json = a.values.json as boolean;
    const tty = !json && process.stderr.isTTY;
    const r = await runSensitivity(modelPath, a, calib, tty ? (msg, done, total) => process.stderr.write(`\r[${done}/${total}] ${msg}`.padEnd(80).slice(0, 80)) : undefined, undefined, a.values.algo === 'gptq' ? {} : undefined);
    if (tty) process.stderr.write('\r' + ' '.repeat(80) + '\r');
    if (db) writeFileAtomic(db, JSON.stringify(r) + '\n', 'database (--db)');
    if (report) writeFileAtomic(report, sensitivityReportHtml(r, modelPath), 'report (--report)');
    if (json) {
      process.stdout.write(JSON.stringify(r) + '\n');
      return;
    }
    const types = [...new Set(r.tensors.flatMap((t) => t.candidates.map((c) => c.type)))];
    const rows = r.tensors.map((t) => [t.name, t.shape.join('x'), ...types.map((ty) => {
      const c = t.candidates.find((x) => x.type === ty);
      return c ? c.cost.toExponential(2) : '-';
    })]);
    process.stdout.write(renderTable(['tensor', 'shape', ...types], rows, [false, false, ...types.map(() => true)]) + '\n');
    process.stdout.write(`${r.tensors.length} tensors, ${r.estimator} costs${r.estimator === 'hessian' && r.outputFactor === 'kld' ? ' in KLD units' : ''}, ${r.calibration.tokens} calibration tokens, ${r.seconds.toFixed(1)} s${db ? `; wrote ${db}` : ''}\n`);
  },
};

/** Options of `quantize` for allocation to a size budget. */
export const ALLOCATE_OPTIONS = [
  { name: 'target-size', type: 'int', min: 1, help: 'allocate per-tensor types so that the output file is at most this many bytes (everything counted)' },
  { name: 'target-bpw', type: 'number', min: 0.5, max: 32, help: 'allocate per-tensor types to this many bits per weight (file bytes × 8 / parameters)' },
  { name: 'allocate', type: 'string', choices: ['greedy', 'ilp', 'evo'], default: 'ilp', help: 'greedy: Lagrangian + repair; ilp: exact branch and bound; evo: EvoPress search with KLD fitness, seeded by ilp' },
  { name: 'db', type: 'string', help: 'sensitivity database (lowbit sensitivity --db): read when it exists (checked against the model), else measured and written' },
  { name: 'evo-generations', type: 'int', default: 30, min: 1, max: 100000, help: 'evo: generations' },
  { name: 'evo-offspring', type: 'int', default: 8, min: 1, max: 1024, help: 'evo: offspring per generation' },
] as const;

/** The per-tensor recipe for `quantize --target-size/--target-bpw`, from a database or a fresh measurement. */
export async function allocatedRecipe(
  a: { values: Record<string, unknown>; given: ReadonlySet<string> },
  input: string,
  m: ModelFile,
  base: Recipe,
  calibFile: string | undefined,
  say?: (msg: string) => void,
  imatrix?: Imatrix,
  pool?: QuantizePool,
): Promise<AllocationResult> {
  const size = a.values['target-size'] as number | undefined;
  const bpw = a.values['target-bpw'] as number | undefined;
  if (size !== undefined && bpw !== undefined) fail('give either --target-size or --target-bpw, not both');
  const target = size ?? bytesForBpw(parameterCount(m), bpw!);
  const dbFile = a.values.db as string | undefined;
  let db: SensitivityDb;
  const hash = await modelFingerprint(m);
  // GPTQ rounds the file: the candidates are GPTQ's versions of the types (costs measured on them)
  const gptq = algorithmName(base.algorithm) === 'gptq';
  if (dbFile && existsSync(dbFile)) {
    db = parseSensitivityDb(readInputText(dbFile, 'sensitivity database (--db)'), hash, `--db ${dbFile}`);
    if (db.algo === 'gptq' && !gptq) fail(`--db ${dbFile} holds the costs of GPTQ's candidates (lowbit sensitivity --algo gptq): quantize with --algo gptq`);
  } else {
    if (!calibFile) fail('--target-size/--target-bpw need costs: --calib FILE (measured now) or --db FILE from lowbit sensitivity');
    db = await runSensitivity(input, a, calibFile, say ? (msg, done, total) => say(`sensitivity [${done}/${total}] ${msg}`) : undefined, m, gptq ? { ptq: base.ptq } : undefined, pool);
    if (dbFile) writeFileAtomic(dbFile, JSON.stringify(db) + '\n', 'sensitivity database (--db)');
  }
  const method = a.values.allocate as AllocateMethod;
  let fitness: ((types: ReadonlyMap<string, string>, stage: number) => number) | undefined;
  if (method === 'evo') {
    if (!calibFile) fail('--allocate evo measures KL divergence: it needs --calib FILE');
    const cal = calibOf(a);
    const ctx = cal.ctx;
    const loaded = await loadModelPath(input, undefined, { contextLength: ctx, batch: Math.min(ctx, 512) });
    if (!loaded.tokenizer) fail(`${input} carries no vocabulary to tokenize the calibration text`);
    const stream = loaded.tokenizer.encode(readInputText(calibFile, 'calibration file (--calib)'), { bos: false });
    const windows = calibrationWindows(stream, cal.tokens, Math.min(ctx, loaded.model.config.seqLen), (cal.seed ^ 0x1234) >>> 0, loaded.tokenizer.vocab.bos);
    const n = Math.min(windows.length, a.values['kld-windows'] as number);
    fitness = await kldFitness(loaded.model, m, new Map(db.tensors.map((t) => [t.name, t.candidates.map((c) => c.type)])), windows, [Math.max(1, n >> 2), n]);
  }
  return allocateToSize(m, base, db, target, {
    method,
    fitness,
    generations: a.values['evo-generations'] as number,
    offspring: a.values['evo-offspring'] as number,
    seed: calibOf(a).seed,
    imatrix,
    onProgress: say,
  });
}
