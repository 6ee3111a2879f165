/**
 * The PTQ quality table: stories260K quantized by every method at 4, 3 and 2 bits, scored against the
 * float model with the same evaluator (lowbit's perplexity/KLD, as llama-perplexity --kl-divergence).
 *
 *   calibration: the first 300 000 characters of data/tinystories-valid-head.txt (lowbit: seeded
 *                windows of 256 tokens; llama-imatrix: consecutive chunks of 256 tokens, same count)
 *   evaluation:  TinyStories from character 500 000 on (disjoint), and data/wikitext-2-test.raw (out of
 *                domain); chunks of 128 tokens, the second half of each scored
 *   methods:     RTN (the codec alone), imatrix-RTN (importance = calibration mean x^2), GPTQ, GPTQ with
 *                act-order, AWQ (+ clip search), HQQ (on the asymmetric float-minimum scheme of the same
 *                bpw: uint{b} g64 fzp), rotation (Hadamard) + GPTQ, and llama.cpp's own llama-quantize
 *                with its llama-imatrix importance matrix on the same calibration text.
 *
 *   outlier, low-rank and format methods (issue 21): EasyQuant, LoRC (rank 4, on RTN and GPTQ), OliVe's
 *                outlier-victim pair schemes at the same bpw, FlexQ's INT6 weights and W6A6 with selective
 *                A8, ZeroQuant-FP's FP4 weights (free f16 vs power-of-two scales) with FP8 activations,
 *                and Outlier Suppression+ (--shift) against SmoothQuant under A6/A4 activation quantization
 *                (the `formats21` rows; select them with --only formats21).
 *
 *   npm run build && node dist/scripts/quality-table.js [--model stories260K|tinyllama256] [--quick]
 *       [--only SUBSTRING[,SUBSTRING...]] [--json FILE]   (--only =EXACT matches a whole 'format method'; --no-gptq21: INT6/FP4 rows with RTN weights only; --flexq-chunks N: FlexQ's sensitivity on N chunks, default 16)
 *   node dist/scripts/quality-table.js --render FILE      (the tables of a saved --json result)
 *
 * Prints markdown tables (and progress on stderr). --quick: fewer calibration and evaluation tokens.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineRecipe, llamaRecipe, schemeRecipe, type Algorithm, type Recipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { logitsFileBase, perplexity, type PerplexityResult } from '../src/eval/perplexity.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource, type ByteSource } from '../src/io/source.js';
import { gemmABt } from '../src/kernels/gptq.js';
import { actQuantFloatLinear, actQuantLinear, llmInt8Linear, type LinearFn } from '../src/model/act-quant.js';
import { fp8_e4m3fn } from '../src/formats/registry.js';
import { flexqSensitivity } from '../src/pipeline/flexq.js';
import { setMatmul } from '../src/model/matmul.js';
import { planQuantization, quantize } from '../src/pipeline/quantize.js';
import type { BaseEvaluation } from '../src/pipeline/evaluate.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DATA = path.join(ROOT, 'data');
const argv = process.argv.slice(2);
const MODEL = argv.includes('--model') ? argv[argv.indexOf('--model') + 1] : 'stories260K';
const GGUF = path.join(DATA, `${MODEL}.gguf`);
const OUT = path.join(ROOT, '.cache', 'quality', MODEL);
const LLAMA_BIN = path.join(ROOT, '.cache', 'llama.cpp-build', 'bin');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyList = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : undefined;
/** does a row (format + method) pass --only (any of its comma-separated substrings)? */
const wanted = (what: string) => !onlyList || onlyList.some((o) => (o.startsWith('=') ? what === o.slice(1) : what.includes(o)));
const only = onlyList?.join(',');
/** --no-gptq21: the INT6 / FP4 rows with RTN weights only (GPTQ there takes minutes per run on larger models) */
const noGptq21 = args.includes('--no-gptq21');
/** calibration chunks of 128 tokens for FlexQ's sensitivity analysis (one run per linear) */
const FLEXQ_CHUNKS = args.includes('--flexq-chunks') ? Number(args[args.indexOf('--flexq-chunks') + 1]) : 16;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;

const CALIB_CHARS = 300000;
const CALIB_CTX = 256;
const CALIB_TOKENS = quick ? 4096 : 16384;
const EVAL_CTX = 128;
const EVAL_CHUNKS = quick ? 16 : 96;
const SEED = 1;

const say = (s: string) => process.stderr.write(s + '\n');
fs.mkdirSync(OUT, { recursive: true });
const stories = fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8');
const calibText = stories.slice(0, CALIB_CHARS);
const calibFile = path.join(OUT, 'calib.txt');
fs.writeFileSync(calibFile, calibText);
const evalSets = [
  { key: 'ts', label: 'TinyStories (held out)', text: stories.slice(500000) },
  { key: 'wiki', label: 'WikiText-2', text: fs.readFileSync(path.join(DATA, 'wikitext-2-test.raw'), 'utf8').slice(0, 400000) },
];

// every model runs its f32 products through the same SIMD kernel (f32 accumulation)
setMatmul(gemmABt);

// ---------------------------------------------------------------------------------------------------
// evaluation

async function baseOf(text: string): Promise<BaseEvaluation> {
  const m = await loadModel(fileSource(GGUF), { contextLength: EVAL_CTX, batch: EVAL_CTX });
  const tokens = m.tokenizer!.encode(text);
  const sink = memorySink();
  const result = await perplexity(m.model, tokens, { ctx: EVAL_CTX, chunks: EVAL_CHUNKS, bos: m.tokenizer!.vocab.bos, addBos: m.tokenizer!.vocab.addBos, saveLogits: (b) => sink.write(b) });
  const base = await logitsFileBase(bytesSource(sink.bytes(), 'base logits'));
  return { result, base, tokens: base.tokens ?? tokens };
}

async function score(src: ByteSource, base: BaseEvaluation, linear?: LinearFn): Promise<PerplexityResult> {
  const m = await loadModel(src, { contextLength: EVAL_CTX, batch: EVAL_CTX });
  if (linear) m.model.hooks.linear = linear;
  return perplexity(m.model, base.tokens, { ctx: EVAL_CTX, chunks: EVAL_CHUNKS, bos: 1, addBos: true, base: base.base });
}

/** tensor bits per weight of a model file (every tensor, norms included) */
async function bpwOf(bytes: Uint8Array): Promise<{ bpw: number; linearBpw: number }> {
  const m = await openModelFile(bytesSource(bytes, 'model'));
  let bits = 0;
  let n = 0;
  let lb = 0;
  let ln = 0;
  // LoRC factors and EasyQuant outliers (W.lorc_a, W.outlier_value, ...) count as W's bits, not as elements
  const EXTRA = /\.(lorc_[ab]|outlier_(index|value))$/;
  for (const t of m.tensors) {
    const b = t.byteLength * 8;
    bits += b;
    if (!EXTRA.test(t.name)) n += t.nElements;
    if (/blk\.\d+\.(attn_[qkvo]|attn_output|ffn_(gate|up|down))\.weight$/.test(t.name.replace(EXTRA, ''))) {
      lb += b;
      if (!EXTRA.test(t.name)) ln += t.nElements;
    }
  }
  // safetensors quantized tensors are stored as U8 blobs: count their logical elements
  if (m.format === 'safetensors') {
    n = 0;
    ln = 0;
    for (const t of m.tensors) {
      if (EXTRA.test(t.name)) continue;
      const q = m.metadata.get(`lowbit.quant.${t.name}`);
      const shape = q ? (JSON.parse(String(q)) as { shape: number[] }).shape : t.shape;
      const el = shape.reduce((a, b) => a * b, 1);
      n += el;
      if (/blk\.\d+\.(attn_[qkv]|attn_output|ffn_(gate|up|down))\.weight$/.test(t.name)) ln += el;
    }
  }
  return { bpw: bits / n, linearBpw: lb / ln };
}

// ---------------------------------------------------------------------------------------------------
// lowbit quantization

async function lowbitQuantize(recipe: Recipe, kind: 'gguf' | 'safetensors', calib: boolean): Promise<{ bytes: Uint8Array; seconds: number }> {
  const src = fileSource(GGUF);
  try {
    const t0 = performance.now();
    const m = await openModelFile(src);
    const sink = memorySink();
    await quantize(m, recipe, sink, { output: kind, calibText: calib ? calibText : undefined });
    return { bytes: sink.bytes(), seconds: (performance.now() - t0) / 1000 };
  } finally {
    src.close();
  }
}

const ptqCommon = { calibTokens: CALIB_TOKENS, calibCtx: CALIB_CTX, seed: SEED };
const withAlgo = (r: Recipe, algorithm: Algorithm, ptq: Record<string, unknown> = {}) => defineRecipe({ ...JSON.parse(JSON.stringify(r)), algorithm, ptq: { ...ptqCommon, ...ptq } });

// ---------------------------------------------------------------------------------------------------
// llama.cpp

function llamaTool(name: string, argv: string[]): void {
  const bin = path.join(LLAMA_BIN, name);
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: build it with node scripts/build-llama-cpp.mjs`);
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = spawnSync(bin, argv, { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status === 0) return;
    say(`${name} failed (exit ${r.status}), retrying: ${r.stderr.split('\n').slice(-3).join(' | ')}`);
  }
  throw new Error(`${name} ${argv.join(' ')} failed`);
}

let llamaImatrix: string | undefined;
function llamaCppQuantize(ftype: string, pure: boolean): Uint8Array {
  if (!llamaImatrix) {
    llamaImatrix = path.join(OUT, 'llama-imatrix.gguf');
    llamaTool('llama-imatrix', ['-m', GGUF, '-f', calibFile, '-o', llamaImatrix, '-c', String(CALIB_CTX), '--chunks', String(CALIB_TOKENS / CALIB_CTX), '-t', '2']);
  }
  const out = path.join(OUT, `llama-${ftype}${pure ? '-pure' : ''}.gguf`);
  llamaTool('llama-quantize', [...(pure ? ['--pure'] : []), '--imatrix', llamaImatrix, GGUF, out, ftype, '2']);
  return new Uint8Array(fs.readFileSync(out));
}

// ---------------------------------------------------------------------------------------------------
// the grid

interface Format {
  label: string;
  bits: number;
  kind: 'gguf' | 'safetensors';
  recipe: Recipe;
  /** HQQ's equal-bpw asymmetric scheme, when HQQ applies */
  hqq?: Recipe;
  /** llama.cpp's closest file type at the same bpw, or why there is none */
  llama?: { ftype: string; pure: boolean } | string;
}

const STORIES_FORMATS: Format[] = [
  { label: 'int4 g32', bits: 4, kind: 'safetensors', recipe: schemeRecipe('int4', { groupSize: 32 }), hqq: schemeRecipe('int4', { groupSize: 64, asym: true, zeroPoint: 'float' }), llama: { ftype: 'Q4_0', pure: true } },
  { label: 'Q4_0', bits: 4, kind: 'gguf', recipe: llamaRecipe('Q4_0'), llama: { ftype: 'Q4_0', pure: false } },
  { label: 'Q4_K_M', bits: 4, kind: 'gguf', recipe: llamaRecipe('Q4_K_M'), llama: { ftype: 'Q4_K_M', pure: false } },
  { label: 'int3 g32', bits: 3, kind: 'safetensors', recipe: schemeRecipe('int3', { groupSize: 32 }), hqq: schemeRecipe('int3', { groupSize: 64, asym: true, zeroPoint: 'float' }), llama: 'no llama.cpp 3-bit type fits rows of 64 (Q3_K and IQ3 need 256)' },
  { label: 'Q3_K_M', bits: 3, kind: 'gguf', recipe: llamaRecipe('Q3_K_M'), llama: { ftype: 'Q3_K_M', pure: false } },
  { label: 'int2 g32', bits: 2, kind: 'safetensors', recipe: schemeRecipe('int2', { groupSize: 32 }), hqq: schemeRecipe('int2', { groupSize: 64, asym: true, zeroPoint: 'float' }), llama: 'no llama.cpp type at 2.5 bpw fits rows of 64 (see Q2_0 pure)' },
  { label: 'Q2_0 pure', bits: 2, kind: 'gguf', recipe: llamaRecipe('Q2_0', { pure: true }), llama: { ftype: 'Q2_0', pure: true } },
];
// the 256-aligned model: K-quants apply, so llama.cpp's 3- and 2-bit types have rows of their own
const ALIGNED_FORMATS: Format[] = [
  { label: 'int4 g32', bits: 4, kind: 'safetensors', recipe: schemeRecipe('int4', { groupSize: 32 }), hqq: schemeRecipe('int4', { groupSize: 64, asym: true, zeroPoint: 'float' }), llama: { ftype: 'Q4_0', pure: true } },
  { label: 'Q4_K_M', bits: 4, kind: 'gguf', recipe: llamaRecipe('Q4_K_M'), llama: { ftype: 'Q4_K_M', pure: false } },
  { label: 'int3 g32', bits: 3, kind: 'safetensors', recipe: schemeRecipe('int3', { groupSize: 32 }), hqq: schemeRecipe('int3', { groupSize: 64, asym: true, zeroPoint: 'float' }), llama: { ftype: 'Q3_K_S', pure: true } },
  { label: 'Q3_K pure', bits: 3, kind: 'gguf', recipe: llamaRecipe('Q3_K_S', { pure: true }), llama: { ftype: 'Q3_K_S', pure: true } },
  { label: 'int2 g32', bits: 2, kind: 'safetensors', recipe: schemeRecipe('int2', { groupSize: 32 }), hqq: schemeRecipe('int2', { groupSize: 64, asym: true, zeroPoint: 'float' }), llama: { ftype: 'Q2_K', pure: true } },
  { label: 'Q2_K pure', bits: 2, kind: 'gguf', recipe: llamaRecipe('Q2_K', { pure: true }), llama: { ftype: 'Q2_K', pure: true } },
];
const FORMATS = MODEL === 'stories260K' ? STORIES_FORMATS : ALIGNED_FORMATS;
// Q2_K is not in the grid: on stories260K every Q2_K/Q3_K choice falls back (rows of 64, 172) and the
// file holds exactly Q4_0's types (see the note printed under the table).

interface Row {
  format: string;
  method: string;
  bpw: number;
  linearBpw: number;
  seconds?: number;
  scores: Record<string, { kld: number; ppl: number; top1: number }>;
  note?: string;
  /** a remark printed under the table (which layers FlexQ kept at A8) */
  note2?: string;
}

async function main(): Promise<void> {
  say(`calibration ${CALIB_TOKENS} tokens (windows of ${CALIB_CTX}); evaluation ${EVAL_CHUNKS} chunks of ${EVAL_CTX} tokens per text`);
  const bases = new Map<string, BaseEvaluation>();
  for (const e of evalSets) bases.set(e.key, await baseOf(e.text));
  const rows: Row[] = [];
  const evaluate = async (format: string, method: string, bytes: Uint8Array, seconds?: number, linear?: LinearFn) => {
    const { bpw, linearBpw } = await bpwOf(bytes);
    const scores: Row['scores'] = {};
    for (const e of evalSets) {
      const r = await score(bytesSource(bytes, `${format} ${method}`), bases.get(e.key)!, linear);
      scores[e.key] = { kld: r.kld!.mean, ppl: r.ppl, top1: r.top1! };
    }
    const row: Row = { format, method, bpw, linearBpw, seconds, scores };
    rows.push(row);
    // the rows so far, so an interrupted run keeps them
    if (jsonOut) fs.writeFileSync(`${jsonOut}.partial`, JSON.stringify({ calibTokens: CALIB_TOKENS, evalChunks: EVAL_CHUNKS, base: { ts: bases.get('ts')!.result.ppl, wiki: bases.get('wiki')!.result.ppl }, rows, act: [] }, null, 1));
    say(`${format.padEnd(10)} ${method.padEnd(16)} bpw ${bpw.toFixed(3)}  KLD ${scores.ts.kld.toFixed(5)} / ${scores.wiki.kld.toFixed(5)}${seconds !== undefined ? `  (${seconds.toFixed(1)} s)` : ''}`);
    return row;
  };
  const run = async (f: Format, method: string, recipe: Recipe, calib: boolean) => {
    if (!wanted(`${f.label} ${method}`)) return;
    const q = await lowbitQuantize(recipe, f.kind, calib);
    if (f.kind === 'gguf') fs.writeFileSync(path.join(OUT, `${f.label.replace(/ /g, '_')}-${method.replace(/[ +]/g, '_')}.gguf`), q.bytes);
    await evaluate(f.label, method, q.bytes, q.seconds);
  };
  for (const f of FORMATS) {
    await run(f, 'RTN', f.recipe, false);
    await run(f, 'imatrix-RTN', withAlgo(f.recipe, 'rtn'), true);
    await run(f, 'GPTQ', withAlgo(f.recipe, 'gptq'), true);
    await run(f, 'GPTQ act-order', withAlgo(f.recipe, 'gptq', { actOrder: true }), true);
    await run(f, 'AWQ', withAlgo(f.recipe, 'awq'), true);
    await run(f, 'AWQ+GPTQ', withAlgo(f.recipe, 'awq+gptq'), true);
    if (f.hqq) await run(f, 'HQQ (g64 fzp)', withAlgo(f.hqq, 'hqq'), false);
    else if (!only) rows.push({ format: f.label, method: 'HQQ', bpw: NaN, linearBpw: NaN, scores: {}, note: 'n/a: the planned GGML types here are symmetric (no zero-point to optimize)' });
    await run(f, 'rotation+GPTQ', withAlgo(f.recipe, 'gptq', { rotate: 'hadamard', actOrder: true }), true);
    // issue 21, learned on the block output: AutoRound (block objective), OmniQuant (LWC + LET), learned rotation
    await run(f, 'AutoRound (block)', withAlgo(f.recipe, 'autoround'), true);
    await run(f, 'GPTQ+AutoRound (block)', withAlgo(f.recipe, 'gptq+autoround'), true);
    await run(f, 'OmniQuant', withAlgo(f.recipe, 'omniquant'), true);
    await run(f, 'OmniQuant+GPTQ', withAlgo(f.recipe, 'omniquant+gptq'), true);
    await run(f, 'learned rotation+GPTQ', withAlgo(f.recipe, 'gptq', { rotate: 'learned', actOrder: true }), true);
    // issue 21: outliers in f16 (EasyQuant), low-rank error compensation (LoRC), outlier-victim pairs (OliVe)
    if (f.kind === 'safetensors') {
      await run(f, 'EasyQuant', withAlgo(f.recipe, 'easyquant'), false);
      await run(f, 'RTN+LoRC4', withAlgo(f.recipe, 'rtn', { lorc: 4 }), false);
      await run(f, 'GPTQ+LoRC4', withAlgo(f.recipe, 'gptq', { lorc: 4 }), true);
      await run(f, `OliVe (olive${f.bits}_g32)`, schemeRecipe(`olive${f.bits}_g32`), false);
    } else if (wanted(`${f.label} EasyQuant`)) rows.push({ format: f.label, method: 'EasyQuant, LoRC', bpw: NaN, linearBpw: NaN, scores: {}, note: 'n/a: GGUF cannot hold their f16 outliers / low-rank factors (refused)' });
    if (typeof f.llama === 'object') {
      if (wanted(`${f.label} llama.cpp`)) {
        const t0 = performance.now();
        const bytes = llamaCppQuantize(f.llama.ftype, f.llama.pure);
        await evaluate(f.label, `llama.cpp ${f.llama.ftype}${f.llama.pure ? ' pure' : ''}+imatrix`, bytes, (performance.now() - t0) / 1000);
      }
    } else if (f.llama && wanted(`${f.label} llama.cpp`)) rows.push({ format: f.label, method: 'llama.cpp', bpw: NaN, linearBpw: NaN, scores: {}, note: f.llama });
  }

  // activation quantization (runtime modes): W8A8 with and without SmoothQuant, LLM.int8()
  const act: Row[] = [];
  if (wanted('activations')) {
    const f32 = (await lowbitQuantize(llamaRecipe('F32'), 'gguf', false)).bytes;
    const w8 = (await lowbitQuantize(schemeRecipe('int8_ch'), 'safetensors', false)).bytes;
    act.push(await evaluate('F32 weights', 'A8 (per token)', f32, undefined, actQuantLinear(8)));
    act.push(await evaluate('int8_ch', 'W8A8', w8, undefined, actQuantLinear(8)));
    for (const alpha of [0.5, 0.8]) {
      const sq = (await lowbitQuantize(withAlgo(schemeRecipe('int8_ch'), 'rtn', { smooth: alpha }), 'safetensors', true)).bytes;
      act.push(await evaluate('int8_ch', `SmoothQuant α=${alpha} W8A8`, sq, undefined, actQuantLinear(8)));
    }
    act.push(await evaluate('F32 weights', 'A6 (per token)', f32, undefined, actQuantLinear(6)));
    const sq6 = (await lowbitQuantize(withAlgo(llamaRecipe('F32'), 'rtn', { smooth: 0.5 }), 'gguf', true)).bytes;
    act.push(await evaluate('F32 weights', 'SmoothQuant α=0.5 A6', sq6, undefined, actQuantLinear(6)));
    act.push(await evaluate('F32 weights', 'LLM.int8() t=6', f32, undefined, llmInt8Linear(6)));
    act.push(await evaluate('F32 weights', 'LLM.int8() t=2', f32, undefined, llmInt8Linear(2)));
    rows.splice(rows.length - act.length, act.length);
  }
  // issue 21: INT6 weights (FlexQ), FP4 weights with FP8 activations (ZeroQuant-FP), Outlier Suppression+
  if (wanted('formats21')) {
    const before = rows.length;
    const calibTokens = (await loadModel(fileSource(GGUF), { contextLength: EVAL_CTX, batch: EVAL_CTX })).tokenizer!.encode(calibText);
    for (const [label, recipe] of [['int6 g32', schemeRecipe('int6_g32')], ['int6 g128', schemeRecipe('int6_g128')]] as const) {
      if (MODEL === 'stories260K' ? label === 'int6 g128' : label === 'int6 g32') continue; // rows of 64; FlexQ's own groups of 128 where they fit
      for (const algo of noGptq21 ? (['rtn'] as const) : (['rtn', 'gptq'] as const)) {
        const w = (await lowbitQuantize(withAlgo(recipe, algo), 'safetensors', algo === 'gptq')).bytes;
        const name = algo === 'rtn' ? 'RTN' : 'GPTQ';
        await evaluate(label, `${name} W6`, w);
        await evaluate(label, `${name} W6A8`, w, undefined, actQuantLinear(8));
        await evaluate(label, `${name} W6A6`, w, undefined, actQuantLinear(6));
        const m = await loadModel(bytesSource(w, label), { contextLength: EVAL_CTX, batch: EVAL_CTX });
        const s = await flexqSensitivity(m.model, calibTokens, { ctx: EVAL_CTX, chunks: FLEXQ_CHUNKS, bos: 1, addBos: true, fraction: 0.2 });
        const keep = new Set(s.keep8);
        say(`FlexQ keeps int8 inputs for ${s.keep8.join(', ')}`);
        const row = await evaluate(label, `${name} W6A6 FlexQ (A8 for ${s.keep8.length} of ${s.scores.length})`, w, undefined, actQuantLinear(6, (n) => keep.has(n)));
        row.note2 = `A8: ${[...new Set(s.keep8.map((n) => n.replace(/^blk\.\d+\./, '')))].join(', ')}`;
      }
    }
    const fp4: [string, Recipe][] = [
      ['FP4 g32, f16 scale', schemeRecipe('fp4_e2m1fn', { groupSize: 32 })],
      ['FP4 g32, pow2 scale (nearest)', schemeRecipe('fp4_g32_pow2')],
      ['MXFP4 (pow2 scale, floor)', schemeRecipe('mxfp4')],
    ];
    for (const [label, recipe] of fp4) {
      const w = (await lowbitQuantize(recipe, 'safetensors', false)).bytes;
      await evaluate(label, 'RTN W4', w);
      await evaluate(label, 'RTN W4A8 (FP8 E4M3)', w, undefined, actQuantFloatLinear(fp8_e4m3fn));
      if (noGptq21) continue;
      const g = (await lowbitQuantize(withAlgo(recipe, 'gptq'), 'safetensors', true)).bytes;
      await evaluate(label, 'GPTQ W4A8 (FP8 E4M3)', g, undefined, actQuantFloatLinear(fp8_e4m3fn));
    }
    const f32 = (await lowbitQuantize(llamaRecipe('F32'), 'gguf', false)).bytes;
    await evaluate('F32 weights', 'A8 (FP8 E4M3)', f32, undefined, actQuantFloatLinear(fp8_e4m3fn));
    // Outlier Suppression+ against SmoothQuant and plain per-token activation quantization, int8_ch weights
    const w8: [string, Uint8Array][] = [
      ['W8 (no transform)', (await lowbitQuantize(schemeRecipe('int8_ch'), 'safetensors', false)).bytes],
      ['SmoothQuant α=0.5', (await lowbitQuantize(withAlgo(schemeRecipe('int8_ch'), 'rtn', { smooth: 0.5 }), 'safetensors', true)).bytes],
      ['OS+ shift+scale α=0.5', (await lowbitQuantize(withAlgo(schemeRecipe('int8_ch'), 'rtn', { shift: true }), 'safetensors', true)).bytes],
    ];
    for (const bits of [6, 4]) for (const [label, w] of w8) await evaluate('int8_ch', `${label} W8A${bits}`, w, undefined, actQuantLinear(bits));
    act.push(...rows.splice(before, rows.length - before));
  }

  const result: TableJson = { calibTokens: CALIB_TOKENS, evalChunks: EVAL_CHUNKS, base: { ts: bases.get('ts')!.result.ppl, wiki: bases.get('wiki')!.result.ppl }, rows, act };
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result, null, 1));
  process.stdout.write(await render(result));
}

interface TableJson {
  calibTokens: number;
  evalChunks: number;
  base: Record<string, number>;
  rows: Row[];
  act: Row[];
}

/** The markdown of a result (also from a saved --json file: --render FILE). */
async function render(t: TableJson): Promise<string> {
  const fmt = (x: number | null | undefined, d: number) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '—');
  const keys = evalSets.map((e) => e.key);
  const line = (r: Row) =>
    r.note
      ? `| ${r.format} | ${r.method} | | | ${r.note} |${' |'.repeat(3 * keys.length - 1)}`
      : `| ${r.format} | ${r.method} | ${fmt(r.bpw, 2)} | ${fmt(r.linearBpw, 2)} | ` + keys.map((k) => `${r.scores[k].kld.toFixed(4)} | ${r.scores[k].ppl.toFixed(2)} | ${(100 * r.scores[k].top1).toFixed(1)}`).join(' | ') + ' |';
  const head = `| format | method | bpw file | bpw linears | ${evalSets.map((e) => `KLD ${e.key} | PPL ${e.key} | top-1 % ${e.key}`).join(' | ')} |\n|---|---|--:|--:|${evalSets.map(() => '--:|--:|--:').join('|')}|`;
  const out: string[] = [];
  out.push(`Base (F32) PPL: TinyStories (ts) ${t.base.ts.toFixed(3)}, WikiText-2 (wiki) ${t.base.wiki.toFixed(3)}; ${t.evalChunks} chunks of ${EVAL_CTX} tokens per text, KLD against the F32 model; calibration ${t.calibTokens} tokens.`, '');
  out.push(head, ...t.rows.map(line));
  // the Q2_K mixture on this model: the same GGML type for every tensor as Q4_0's
  if (MODEL === 'stories260K') {
    const m = await openModelFile(fileSource(GGUF));
    const types = (ft: string) => planQuantization(m, llamaRecipe(ft), 'gguf').tensors.map((x) => x.to).join(',');
    out.push('', types('Q2_K') === types('Q4_0') ? 'Q2_K: on stories260K every tensor gets the same type as in Q4_0 (Q2_K/Q3_K need rows of 256 and fall back to Q4_0; ffn_down to F16), so its row would repeat Q4_0\'s.' : 'Q2_K: differs from Q4_0 on this model (not expected)');
  }
  // lowbit's best against llama.cpp's at the same bpw
  const summary: string[] = [];
  for (const f of [...new Set(t.rows.map((r) => r.format))]) {
    const mine = t.rows.filter((r) => r.format === f && !r.note && !r.method.startsWith('llama.cpp'));
    const theirs = t.rows.find((r) => r.format === f && !r.note && r.method.startsWith('llama.cpp'));
    if (!theirs || !mine.length) continue;
    const cells = keys.map((k) => {
      const best = mine.reduce((a, b) => (b.scores[k].kld < a.scores[k].kld ? b : a));
      return `${best.method} ${best.scores[k].kld.toFixed(4)} | ${theirs.scores[k].kld.toFixed(4)} | ${(best.scores[k].kld / theirs.scores[k].kld).toFixed(2)}`;
    });
    summary.push(`| ${f} | ${fmt(theirs.linearBpw, 2)} | ${cells.join(' | ')} |`);
  }
  if (summary.length)
    out.push('', 'lowbit\'s best KLD against llama.cpp\'s (llama-quantize with its imatrix) at the same bpw:', '',
      `| format | bpw linears | ${keys.map((k) => `lowbit best ${k} | llama.cpp ${k} | ratio ${k}`).join(' | ')} |`, `|---|--:|${keys.map(() => '---|--:|--:').join('|')}|`, ...summary);
  if (t.act.length) out.push('', 'Activation quantization (runtime modes of `lowbit eval`):', '', head, ...t.act.map(line));
  const remarks = t.act.filter((r) => r.note2).map((r) => `- ${r.format} ${r.method}: ${r.note2}`);
  if (remarks.length) out.push('', ...remarks);
  return out.join('\n') + '\n';
}

const renderFile = args.includes('--render') ? args[args.indexOf('--render') + 1] : undefined;
if (renderFile) process.stdout.write(await render(JSON.parse(fs.readFileSync(renderFile, 'utf8')) as TableJson));
else await main();
