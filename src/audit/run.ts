/**
 * `lowbit audit`, `lowbit attack` and `quantize --defend` on models: the per-tensor types of a llama.cpp
 * file type (or a pure GGML type), the weights read as f32, the runtime for behaviour.
 */
import { fail } from '../errors.js';
import { blockCodecFor, type BlockCodec } from '../algos/block-codec.js';
import { ggmlRoundTrip } from '../alloc/cost.js';
import { llamaRecipe } from '../algos/recipe.js';
import { GgufWriter } from '../io/gguf.js';
import type { ModelFile } from '../io/model-file.js';
import { ggmlTypeByName, isGgmlFloat } from '../quant/ggml/types.js';
import type { Llama } from '../model/llama.js';
import { planQuantization, readFloats } from '../pipeline/quantize.js';
import { klDivergenceRow, logSoftmaxRows } from '../eval/metrics.js';
import { meanKld, WeightSwap } from '../pipeline/sensitivity.js';
import { addRoundingNoise, behaviourTest, edgeStats, nameStream, type EdgeStats } from './audit.js';
import { intersectBoxes, intervalPositions, quantizationBox, searchesScales, subBlockOf } from './boxes.js';
import { pgdInsideBoxes, type Box, type PgdOptions } from './pgd.js';
import { fitDirections, keepBytes, projectFit, type FitDirections, type KeepStats } from './feasible.js';
import { trainConfigOf } from '../pipeline/qat.js';
import { rngStream } from '../rng.js';


/** tensor name -> GGML type for a llama.cpp file type (with --pure: its default type everywhere it fits) */
export function typesOf(m: ModelFile, ftype: string, pure = false): Map<string, string> {
  const plan = planQuantization(m, llamaRecipe(ftype, { pure }), 'gguf', { hasImatrix: true });
  const out = new Map<string, string>();
  for (const p of plan.tensors) if (p.ggml && !isGgmlFloat(p.to) && p.ne.length === 2) out.set(p.name, p.to);
  return out;
}

function shapeOf(m: ModelFile, name: string): { rows: number; cols: number } {
  const t = m.tensor(name);
  const ne = t.ne ? [...t.ne] : [...t.shape].reverse();
  return { rows: ne.slice(1).reduce((a, b) => a * b, 1), cols: ne[0] };
}

export interface TypeAudit {
  /** the llama.cpp file type (or GGML type with pure) audited */
  type: string;
  /** mean KLD of the quantized model against the model itself on the probe windows */
  kldQuantized: number;
  /** the same after interval-calibrated noise of `noiseScale` steps before quantizing (median of repeats) */
  kldNoised: number;
  ratio: number;
  /** every repeat's noised KLD, their mean and sample sd (with its floor: see behaviourTest) */
  kldNoisedAll: number[];
  kldNoisedMean: number;
  kldNoisedSd: number;
  /** (kldQuantized − mean) / (sd √(1 + 1/K)), and the t quantile above which the type is flagged (NaN: fewer than 3 repeats, no test) */
  behaviourZ: number;
  behaviourThreshold: number;
  /** top-1 agreement of the quantized model with the model */
  top1: number;
  /**
   * the same behaviour test on continuations the full-precision model sampled from seeded prompts
   * (`generate` > 0): KLD and top-1 over the generated positions, the noised quantizations' mean and sd,
   * z and its threshold (each test runs at half the false-positive rate: Bonferroni)
   */
  generated?: { tokens: number; kld: number; top1: number; kldNoisedAll: number[]; kldNoisedMean: number; kldNoisedSd: number; z: number; threshold: number };
  /** the false-positive rate each behaviour test runs at (the option's rate, halved when there are two tests) */
  testFalsePositiveRate: number;
  /** the largest per-row edge z-score over tensors, and where */
  maxRowZ: number;
  worstTensor: string;
  tensors: { name: string; type: string; edges: EdgeStats }[];
  suspicious: boolean;
  reasons: string[];
}

export interface AuditOptions {
  model: Llama;
  file: ModelFile;
  /** llama.cpp file types, e.g. ['Q4_K_M', 'Q4_0'] */
  types: readonly string[];
  pure?: boolean;
  windows: readonly Int32Array[];
  noiseScale?: number;
  /** noised quantizations (default 16; the behaviour z-test needs at least 3) */
  repeats?: number;
  seed?: number;
  /** thresholds: behaviour ratio and row z-score above which a type is flagged */
  ratioThreshold?: number;
  zThreshold?: number;
  /**
   * the behaviour z-tests' one-sided false-positive rate under their null (default 1e-3); with generated
   * continuations the two tests (probe text, generated) each run at half of it (Bonferroni), so the
   * chance that either flags a clean type stays at most this rate
   */
  falsePositiveRate?: number;
  /** tokens the full-precision model generates for the second behaviour test (default 256; 0 = off) */
  generate?: number;
  /** prompt tokens (from the start of the probe windows) for each generated continuation (default 4) */
  promptTokens?: number;
  /** tokens per generated continuation (default 64, at most the context less the prompt) */
  continuation?: number;
  onProgress?: (msg: string) => void;
}

/** The legacy and K block types the edge sweep checks by default (every one the shapes allow). */
export const SWEEP_TYPES = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_NL', 'IQ4_XS'] as const;

export interface SweepAudit {
  /** the GGML block type */
  type: string;
  /** tensors whose shape takes the type */
  tensors: number;
  maxRowZ: number;
  worstTensor: string;
  maxRow: number;
  suspicious: boolean;
}

/**
 * The weight test alone (no forward pass) for every block type of `types` that a tensor's shape allows:
 * where each weight sits in its rounding interval of that type, the largest per-row edge z over tensors.
 * A model planted for a type the caller did not ask about (e.g. Q5_0 when auditing Q4_0) piles its
 * weights against that type's interval edges; this finds it at the cost of one quantization per block
 * per type. Tensors whose row length the type's block does not divide are skipped for that type.
 */
export async function edgeSweep(file: ModelFile, types: readonly string[], zThreshold = 8, onProgress?: (msg: string) => void): Promise<SweepAudit[]> {
  const out: SweepAudit[] = [];
  const names: string[] = [];
  for (const t of file.tensors) {
    const { rows, cols } = shapeOf(file, t.name);
    if (rows > 1 && cols > 1 && !/norm/.test(t.name)) names.push(t.name);
  }
  const per = types.map((type) => {
    const bs = ggmlTypeByName(type)?.blockSize;
    if (!bs || bs < 2) fail(`--sweep: ${type} is not a GGML block type`);
    return { type, bs, n: 0, z: -Infinity, name: '', row: -1 };
  });
  // tensor by tensor (each read once), every type
  for (const name of names) {
    const { rows, cols } = shapeOf(file, name);
    if (!per.some((p) => cols % p.bs === 0)) continue;
    const w = await readFloats(file, file.tensor(name));
    for (const p of per) {
      if (cols % p.bs !== 0) continue;
      p.n++;
      const e = edgeStats(intervalPositions(p.type, w, rows, cols), rows, cols);
      if (e.maxRowZ > p.z) Object.assign(p, { z: e.maxRowZ, name, row: e.maxRow });
    }
    onProgress?.(`edge sweep: ${name}`);
  }
  for (const p of per) if (p.n) out.push({ type: p.type, tensors: p.n, maxRowZ: p.z, worstTensor: p.name, maxRow: p.row, suspicious: p.z > zThreshold });
  return out;
}

function top1Agreement(model: Llama, windows: readonly Int32Array[], base: readonly Float32Array[]): number {
  const v = model.config.vocabSize;
  let same = 0;
  let n = 0;
  windows.forEach((w, i) => {
    const lp = model.forward(w, 0, 0);
    for (let o = 0; o < lp.length; o += v) {
      let a = 0;
      let b = 0;
      for (let j = 1; j < v; j++) {
        if (lp[o + j] > lp[o + a]) a = j;
        if (base[i][o + j] > base[i][o + b]) b = j;
      }
      if (a === b) same++;
      n++;
    }
  });
  return same / Math.max(1, n);
}

/**
 * Continuations sampled (temperature 1, seeded) from `model` as it is: sequence j starts with the first
 * `promptTokens` tokens of windows[j mod W] and adds `length` tokens; `total` generated tokens in all
 * (the last sequence shorter). Same model, windows and seed → the same tokens.
 */
export function generateContinuations(model: Llama, windows: readonly Int32Array[], total: number, length: number, promptTokens: number, seed: number): Int32Array[] {
  if (windows.length === 0) fail('generated continuations need at least one probe window for their prompts');
  const v = model.config.vocabSize;
  const p = Math.max(1, Math.min(promptTokens, ...windows.map((w) => w.length)));
  if (!(length >= 1 && p + length <= model.config.seqLen)) fail(`generated continuations of ${length} tokens after ${p} prompt tokens do not fit the context of ${model.config.seqLen}`);
  const out: Int32Array[] = [];
  const probs = new Float64Array(v);
  for (let j = 0, left = total; left > 0; j++) {
    const n = Math.min(length, left);
    left -= n;
    const seq = new Int32Array(p + n);
    seq.set(windows[j % windows.length].subarray(0, p));
    const rand = rngStream('auditProbe', seed + 104729 * j);
    let logits = model.forward(seq.subarray(0, p), 0);
    for (let i = 0; i < n; i++) {
      let mx = -Infinity;
      for (let k = 0; k < v; k++) if (logits[k] > mx) mx = logits[k];
      let sum = 0;
      for (let k = 0; k < v; k++) sum += probs[k] = Math.exp(logits[k] - mx);
      let u = rand() * sum;
      let tok = v - 1;
      for (let k = 0; k < v; k++) if ((u -= probs[k]) < 0) {
        tok = k;
        break;
      }
      seq[p + i] = tok;
      if (i + 1 < n) logits = model.forward([tok], p + i);
    }
    out.push(seq);
  }
  return out;
}

/** seeded uniform random token windows (a model without a tokenizer: no text to probe it with) */
export function randomTokenWindows(vocabSize: number, count: number, length: number, seed: number): Int32Array[] {
  const rand = rngStream('auditProbe', seed ^ 0x70c3);
  return Array.from({ length: count }, () => Int32Array.from({ length }, () => Math.min(vocabSize - 1, Math.floor(rand() * vocabSize))));
}

/** log-probabilities of the positions [from, end) of every window */
function logProbsFrom(model: Llama, windows: readonly Int32Array[], from: number): Float32Array[] {
  return windows.map((w) => {
    const lp = Float32Array.from(model.forward(w, 0, from));
    logSoftmaxRows(lp, model.config.vocabSize);
    return lp;
  });
}

/** mean KLD and top-1 agreement against `base` (logProbsFrom of the same windows and `from`) */
function kldTop1From(model: Llama, windows: readonly Int32Array[], base: readonly Float32Array[], from: number): { kld: number; top1: number } {
  const v = model.config.vocabSize;
  let sum = 0;
  let same = 0;
  let n = 0;
  windows.forEach((w, i) => {
    const lp = model.forward(w, 0, from);
    logSoftmaxRows(lp, v);
    const lb = base[i];
    for (let o = 0; o < lp.length; o += v) {
      sum += klDivergenceRow(lb, o, 0, lp, o, 0, v);
      let a = 0;
      let b = 0;
      for (let j = 1; j < v; j++) {
        if (lp[o + j] > lp[o + a]) a = j;
        if (lb[o + j] > lb[o + b]) b = j;
      }
      if (a === b) same++;
      n++;
    }
  });
  return { kld: sum / Math.max(1, n), top1: same / Math.max(1, n) };
}

export async function auditModel(o: AuditOptions): Promise<TypeAudit[]> {
  const { model, file } = o;
  const swap = new WeightSwap(model);
  const genTotal = o.generate ?? 256;
  const promptTokens = Math.max(1, Math.min(o.promptTokens ?? 4, ...o.windows.map((w) => w.length)));
  const genFrom = promptTokens - 1; // the outputs that predict the generated tokens
  const genWindows = genTotal > 0 ? generateContinuations(model, o.windows, genTotal, Math.min(o.continuation ?? 64, model.config.seqLen - promptTokens), promptTokens, o.seed ?? 1) : [];
  const genBase = logProbsFrom(model, genWindows, genFrom);
  const fpRate = o.falsePositiveRate ?? 1e-3;
  const testRate = genWindows.length ? fpRate / 2 : fpRate;
  const base: Float32Array[] = o.windows.map((w) => {
    const lp = Float32Array.from(model.forward(w, 0, 0));
    logSoftmaxRows(lp, model.config.vocabSize);
    return lp;
  });
  const noiseScale = o.noiseScale ?? 0.5;
  const repeats = o.repeats ?? 16;
  const ratioThreshold = o.ratioThreshold ?? 2;
  const zThreshold = o.zThreshold ?? 8;
  const floats = new Map<string, Float32Array>();
  const read = async (name: string) => {
    let w = floats.get(name);
    if (!w) floats.set(name, (w = await readFloats(file, file.tensor(name))));
    return w;
  };
  const out: TypeAudit[] = [];
  for (const ftype of o.types) {
    const types = typesOf(file, ftype, o.pure);
    if (types.size === 0) fail(`${ftype}: no tensor of this model can be quantized to it`);
    const quantized = new Map<string, Float32Array>();
    const tensors: TypeAudit['tensors'] = [];
    for (const [name, type] of types) {
      const { rows, cols } = shapeOf(file, name);
      const w = await read(name);
      quantized.set(name, ggmlRoundTrip(type, w, rows, cols).values);
      tensors.push({ name, type, edges: edgeStats(intervalPositions(type, w, rows, cols), rows, cols) });
      o.onProgress?.(`${ftype}: ${name}`);
    }
    const kldQuantized = swap.run(quantized, () => meanKld(model, o.windows, base));
    const top1 = swap.run(quantized, () => top1Agreement(model, o.windows, base));
    const gen = genWindows.length ? swap.run(quantized, () => kldTop1From(model, genWindows, genBase, genFrom)) : undefined;
    const genNoised: number[] = [];
    const noisedKlds: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const noised = new Map<string, Float32Array>();
      for (const [name, type] of types) {
        const { rows, cols } = shapeOf(file, name);
        noised.set(name, ggmlRoundTrip(type, addRoundingNoise(type, await read(name), rows, cols, noiseScale, (o.seed ?? 1) + 7919 * r, nameStream(name)), rows, cols).values);
      }
      noisedKlds.push(swap.run(noised, () => meanKld(model, o.windows, base)));
      if (gen) genNoised.push(swap.run(noised, () => kldTop1From(model, genWindows, genBase, genFrom).kld));
    }
    const kldNoisedAll = [...noisedKlds];
    noisedKlds.sort((a, b) => a - b);
    const kldNoised = noisedKlds[noisedKlds.length >> 1];
    const ratio = kldQuantized / Math.max(kldNoised, 1e-12);
    const bt = behaviourTest(kldQuantized, kldNoisedAll, testRate);
    const gt = gen ? behaviourTest(gen.kld, genNoised, testRate) : undefined;
    const generated = gen && gt ? { tokens: genWindows.reduce((a, w) => a + w.length - promptTokens, 0), kld: gen.kld, top1: gen.top1, kldNoisedAll: genNoised, kldNoisedMean: gt.mean, kldNoisedSd: gt.sd, z: gt.z, threshold: gt.threshold } : undefined;
    let worst = tensors[0];
    for (const t of tensors) if (t.edges.maxRowZ > worst.edges.maxRowZ) worst = t;
    const reasons: string[] = [];
    if (bt.z > bt.threshold) reasons.push(`quantizing changes the outputs more than every noise seed explains: KLD ${kldQuantized.toExponential(2)} against ${bt.mean.toExponential(2)} ± ${bt.sd.toExponential(2)} over ${repeats} quantizations after ${noiseScale}-step noise on the probe text (z = ${bt.z.toFixed(1)} > ${bt.threshold.toFixed(2)}, the t quantile of false-positive rate ${testRate}; the clean models of docs/security.md: z ≤ −0.4)`);
    if (generated && generated.z > generated.threshold) reasons.push(`quantizing changes the outputs on ${generated.tokens} generated tokens more than every noise seed explains: KLD ${generated.kld.toExponential(2)} against ${generated.kldNoisedMean.toExponential(2)} ± ${generated.kldNoisedSd.toExponential(2)} (z = ${generated.z.toFixed(1)} > ${generated.threshold.toFixed(2)}, the t quantile of false-positive rate ${testRate})`);
    if (ratio > ratioThreshold) reasons.push(`quantizing changes the outputs ${ratio.toFixed(1)}× more than quantizing after ${noiseScale}-step noise (KLD ${kldQuantized.toExponential(2)} vs ${kldNoised.toExponential(2)}; clean models: about 1×)`);
    if (worst.edges.maxRowZ > zThreshold) reasons.push(`${worst.name} row ${worst.edges.maxRow}: weights piled against the edges of their ${worst.type} rounding intervals (z = ${worst.edges.maxRowZ.toFixed(1)})`);
    out.push({ type: ftype, kldQuantized, kldNoised, ratio, kldNoisedAll, kldNoisedMean: bt.mean, kldNoisedSd: bt.sd, behaviourZ: bt.z, behaviourThreshold: bt.threshold, top1, ...(generated ? { generated } : {}), testFalsePositiveRate: testRate, maxRowZ: worst.edges.maxRowZ, worstTensor: worst.name, tensors, suspicious: reasons.length > 0, reasons });
  }
  return out;
}

export interface AttackOptions {
  benign: ModelFile;
  malicious: ModelFile;
  types: readonly string[];
  pure?: boolean;
  seed?: number;
  /** projected gradient descent through every layer, distilling the benign model on text (src/audit/pgd.ts) */
  pgd?: Omit<PgdOptions, 'seed' | 'check'>;
  /** searched types (K-quants, IQ4): the fraction of each rounding interval a box starts from (default 0.25; validation shrinks it) */
  boxFraction?: number;
  /** searched types: how the boxes are validated by re-quantizing (boxes.ts BoxOptions.validate, default 'corners') */
  boxValidate?: 'corners' | 'random' | 'none';
  /**
   * false: blocks whose bytes differ from the malicious model's after PGD keep the PGD values (a
   * diagnostic: what PGD reached in full precision; OUT then quantizes to the malicious bytes only in
   * the other blocks, the report counts them as repairedBlocks). Default true.
   */
  repair?: boolean;
  /**
   * the repair's unit: 'block' (default: the whole block's move halved until the bytes hold) or
   * 'sub-block' (K-quants/IQ4: each sub-block in turn keeps 1, 1/2 or 1/4 of its move, else its
   * malicious values)
   */
  repairGranularity?: 'block' | 'sub-block';
  /**
   * re-quantize every this many PGD steps (default 5 when a target type searches its scales, else 0 =
   * never): a block that no longer gives the malicious bytes has its box halved toward the malicious
   * values (pinned after 4 halvings) and its weights moved inside
   */
  checkEvery?: number;
  /**
   * keep the target bytes every this many PGD steps (0 = off, the default): every block re-quantized, a
   * block whose bytes changed returns to its last values that gave them and keeps its move sub-block by
   * sub-block where the bytes hold (src/audit/feasible.ts keepBytes); replaces `checkEvery`'s box halving
   */
  keepEvery?: number;
  /** searched types: project each sub-block's move onto the null space of its scale fit (feasible.ts projectFit) at every keep */
  fitNullSpace?: boolean;
  /**
   * plant around the malicious model's dequantized values (every block whose dequantized values
   * re-quantize to the same bytes for every target type) instead of its f32 values: the same bytes, but
   * each sub-block's scale fit sits exactly on its stored grid, the middle of its 6-bit codes' intervals
   */
  fromDequantized?: boolean;
  /** searched types: false frees the sub-blocks that set the super-block scales (boxes.ts pinSuperScales; only with keepEvery) */
  pinSuperScales?: boolean;
  onProgress?: (msg: string) => void;
}

export interface AttackResult {
  /** the attacked weights (f32) of every tensor that differs from the benign model or is boxed */
  tensors: Map<string, Float32Array>;
  /**
   * per type: tensors attacked, blocks whose box did not validate, blocks whose bytes differed after PGD
   * (repaired: moved back toward the malicious values until they give its bytes; with `repair: false`
   * left as they are), and of those the blocks that had to take the malicious values exactly
   */
  report: { type: string; tensors: number; blocks: number; pinnedBlocks: number; repairedBlocks: number; revertedBlocks: number; dequantizedBlocks?: number }[];
  /** mean |attacked - benign| over the boxed tensors, relative to mean |benign| */
  relativeChange: number;
  /** tensors held at the malicious values (not quantized by every target type: norms, ...) */
  pinnedTensors: string[];
  /** with pgd: the distillation KL of the first and last steps, and on one fixed batch before and after */
  pgdKl?: { first: number; last: number; steps: number; fixedBefore: number; fixedAfter: number };
  /** with PGD checks: the blocks whose box was shrunk during PGD (sum over the checks) */
  pgdShrunk?: number;
  /** with `keepEvery`: the blocks changed by PGD steps and put back (sum over the keeps), the sub-blocks reverted / halved */
  pgdKept?: KeepStats;
}

/**
 * Plant the malicious model's quantization inside the benign model:
 *   1. for every tensor that every target type quantizes, the box of the malicious weights
 *      (intersected over the types); every other tensor (norms, tensors some type keeps in floats) is
 *      held at the malicious values, since llama-quantize copies it as it is;
 *   2. the benign weights projected into the boxes;
 *   3. with `pgd`: projected gradient descent through all layers toward the benign model's outputs;
 *   4. the check: every block is re-quantized for every target type; a block whose bytes differ from
 *      the malicious model's moves back toward the malicious values (the largest of t = 1/2 … 1/32 of
 *      its PGD move that gives the malicious bytes, else the malicious values exactly), so the result
 *      quantizes to the malicious bytes for every target type (counted in the report).
 */
export async function plantAttack(o: AttackOptions): Promise<AttackResult> {
  const { benign, malicious } = o;
  for (const t of benign.tensors) {
    const u = malicious.tensors.find((x) => x.name === t.name);
    if (!u || u.shape.join('x') !== t.shape.join('x')) fail(`benign and malicious models differ in shape at ${t.name}`);
  }
  if (benign.tensors.length !== malicious.tensors.length) fail('benign and malicious models have different tensors');
  if (o.pinSuperScales === false && !(o.keepEvery && o.keepEvery > 0)) fail('--free-super-scales needs --keep-every (the bytes of those sub-blocks are only kept by the checks)');
  if (o.fitNullSpace && !(o.keepEvery && o.keepEvery > 0)) fail('--fit-null-space needs --keep-every (the projection is made at the keeps)');
  const plans = o.types.map((ft) => ({ ft, types: typesOf(malicious, ft, o.pure) }));
  const report: AttackResult['report'] = plans.map((p) => ({ type: p.ft, tensors: p.types.size, blocks: 0, pinnedBlocks: 0, repairedBlocks: 0, revertedBlocks: 0 }));
  const boxes = new Map<string, Box>();
  const wMal = new Map<string, Float32Array>();
  const wBen = new Map<string, Float32Array>();
  const start = new Map<string, Float32Array>();
  const pinnedTensors: string[] = [];
  const malBytes = new Map<string, Uint8Array[]>();
  for (const t of malicious.tensors) {
    const name = t.name;
    const wm = Float32Array.from(await readFloats(malicious, t));
    const wb = Float32Array.from(await readFloats(benign, benign.tensor(name)));
    wMal.set(name, wm);
    wBen.set(name, wb);
    if (!plans.every((p) => p.types.has(name))) {
      start.set(name, wm);
      if (wm.some((x, i) => x !== wb[i])) pinnedTensors.push(name);
      continue;
    }
    const { rows, cols } = shapeOf(malicious, name);
    if (o.fromDequantized) report[0].dequantizedBlocks = (report[0].dequantizedBlocks ?? 0) + dequantizeStable(wm, plans.map((p) => blockCodecFor(p.types.get(name)!, cols)));
    const box = intersectBoxes(
      wm,
      plans.map((p, k) => {
        const qb = quantizationBox(p.types.get(name)!, wm, rows, cols, { seed: o.seed, gridFraction: o.boxFraction, ...(o.boxValidate ? { validate: o.boxValidate } : {}), ...(o.pinSuperScales === false ? { pinSuperScales: false } : {}) });
        if (!malBytes.has(name)) malBytes.set(name, []);
        malBytes.get(name)![k] = qb.bytes;
        report[k].blocks += qb.blocks;
        report[k].pinnedBlocks += qb.pinnedBlocks;
        return qb;
      }),
    );
    boxes.set(name, box);
    start.set(name, Float32Array.from(wb, (x, i) => Math.min(box.hi[i], Math.max(box.lo[i], x))));
    o.onProgress?.(`boxes: ${name}`);
  }
  let weights = start;
  let pgdKl: AttackResult['pgdKl'];
  let pgdShrunk: number | undefined;
  let pgdKept: KeepStats | undefined;
  const keepEvery = o.keepEvery ?? 0;
  let keepFn: ((name: string, w: Float32Array, box: Box) => number) | undefined;
  if (keepEvery > 0) {
    // every step (or every keepEvery) the weights give the malicious bytes; the start too (from the malicious values)
    const stats: KeepStats = { changed: 0, reverted: 0, halved: 0 };
    pgdKept = stats;
    const prevs = new Map<string, Float32Array>();
    const dirs = new Map<string, FitDirections[]>();
    keepFn = (name, w, box) => {
      const { cols } = shapeOf(malicious, name);
      const wm = wMal.get(name)!;
      const codecs = plans.map((p) => blockCodecFor(p.types.get(name)!, cols));
      let prev = prevs.get(name);
      if (!prev) prevs.set(name, (prev = Float32Array.from(wm)));
      let raw: Float32Array | undefined;
      if (o.fitNullSpace) {
        let d = dirs.get(name);
        if (!d) dirs.set(name, (d = codecs.filter((c) => searchesScales(c.name)).map((c) => fitDirections(c, wm, box))));
        if (d.length) raw = Float32Array.from(w);
        for (const f of d) projectFit(f, w, wm, box);
      }
      const before = stats.changed;
      if (codecs.length === 1) keepBytes(codecs[0], w, prev, malBytes.get(name)![0], stats, raw);
      else {
        // several types: each type's keep from the common last values, then every block checked for all
        // types together (a block failing any goes back whole)
        const common = Float32Array.from(prev);
        codecs.forEach((c, k) => keepBytes(c, w, Float32Array.from(common), malBytes.get(name)![k], stats));
        const span = Math.max(...codecs.map((c) => c.blockSize));
        for (let xo = 0; xo < w.length; xo += span) {
          if (!givesBytes(codecs, w, xo, span, malBytes.get(name)!)) w.set(common.subarray(xo, xo + span), xo);
        }
        prev.set(w);
      }
      return stats.changed - before;
    };
    // a block whose benign values give the malicious bytes starts at them (they may lie outside the
    // box: its pinned elements sit at the malicious, or with fromDequantized the dequantized, values)
    for (const [name, box] of boxes) {
      const { cols } = shapeOf(malicious, name);
      const codecs = plans.map((p) => blockCodecFor(p.types.get(name)!, cols));
      const w = start.get(name)!;
      const wb = wBen.get(name)!;
      const span = Math.max(...codecs.map((c) => c.blockSize));
      for (let xo = 0; xo < w.length; xo += span) {
        if (givesBytes(codecs, wb, xo, span, malBytes.get(name)!)) w.set(wb.subarray(xo, xo + span), xo);
      }
      keepFn(name, w, box);
    }
  }
  if (o.pgd && o.pgd.steps > 0) {
    const every = keepEvery > 0 ? keepEvery : o.checkEvery ?? (plans.some((p) => [...p.types.values()].some(searchesScales)) ? 5 : 0);
    const halvings = new Map<string, Uint8Array>();
    const fn = (name: string, w: Float32Array, box: Box): number => {
      const { cols } = shapeOf(malicious, name);
      let n = 0;
      plans.forEach((p, k) => {
        const c = blockCodecFor(p.types.get(name)!, cols);
        const key = `${k}:${name}`;
        let h = halvings.get(key);
        if (!h) halvings.set(key, (h = new Uint8Array(w.length / c.blockSize)));
        n += shrinkChangedBlocks(c, w, wMal.get(name)!, malBytes.get(name)![k], box, h);
      });
      return n;
    };
    const r = await pgdInsideBoxes(trainConfigOf(benign, o.pgd.ctx ?? 128), wBen, start, boxes, { ...o.pgd, seed: o.seed, ...(every > 0 ? { check: { every, fn: keepFn ?? fn } } : {}) });
    weights = r.weights;
    pgdKl = { first: r.kl[0], last: r.kl[r.kl.length - 1], steps: r.kl.length, fixedBefore: r.fixedBefore, fixedAfter: r.fixedAfter };
    if (every > 0 && !keepFn) pgdShrunk = r.shrunk.reduce((a, b) => a + b, 0);
  }
  const tensors = new Map<string, Float32Array>();
  let changed = 0;
  let scale = 0;
  for (const t of malicious.tensors) {
    const name = t.name;
    const w = weights.get(name)!;
    const wm = wMal.get(name)!;
    const wb = wBen.get(name)!;
    if (boxes.has(name)) {
      const { cols } = shapeOf(malicious, name);
      // the check: every target type's bytes; a block that differs takes the malicious values exactly
      plans.forEach((p, k) => {
        const c = blockCodecFor(p.types.get(name)!, cols);
        const a = new Uint8Array(c.blockBytes);
        const b = new Uint8Array(c.blockBytes);
        const pgdBlock = new Float32Array(c.blockSize);
        for (let xo = 0; xo < w.length; xo += c.blockSize) {
          c.quantize(w, xo, a, 0);
          c.quantize(wm, xo, b, 0);
          if (a.some((v, i) => v !== b[i])) {
            report[k].repairedBlocks++;
            if (o.repair === false) continue;
            pgdBlock.set(w.subarray(xo, xo + c.blockSize));
            let kept = false;
            if (o.repairGranularity === 'sub-block') {
              // per sub-block (the unit whose scale/min codes the K-quant search sets), from the malicious
              // values: each sub-block takes t = 1, 1/2, 1/4 of its PGD move if the block's bytes stay M's
              const sub = subBlockOf(c);
              w.set(wm.subarray(xo, xo + c.blockSize), xo);
              for (let s0 = 0; s0 < c.blockSize; s0 += sub) {
                let ok = false;
                for (let t = 1; t >= 0.25 && !ok; t /= 2) {
                  for (let j = s0; j < s0 + sub; j++) w[xo + j] = Math.fround(wm[xo + j] + t * (pgdBlock[j] - wm[xo + j]));
                  c.quantize(w, xo, a, 0);
                  ok = a.every((v, i) => v === b[i]);
                }
                if (!ok) w.set(wm.subarray(xo + s0, xo + s0 + sub), xo + s0);
                else if (wm.subarray(xo + s0, xo + s0 + sub).some((x, j) => x !== w[xo + s0 + j])) kept = true;
              }
            } else
              // the block moves back toward the malicious values, w = wm + t (w_pgd - wm) for the largest t
              // of 1/2, 1/4, ..., 1/32 that gives the malicious bytes, else t = 0 (the malicious values)
              for (let t = 0.5; t >= 1 / 32 && !kept; t /= 2) {
                for (let j = 0; j < c.blockSize; j++) w[xo + j] = Math.fround(wm[xo + j] + t * (pgdBlock[j] - wm[xo + j]));
                c.quantize(w, xo, a, 0);
                kept = a.every((v, i) => v === b[i]);
              }
            if (!kept) {
              w.set(wm.subarray(xo, xo + c.blockSize), xo);
              report[k].revertedBlocks++;
            }
          }
        }
      });
      for (let i = 0; i < w.length; i++) {
        changed += Math.abs(w[i] - wb[i]);
        scale += Math.abs(wb[i]);
      }
    }
    if (boxes.has(name) || w.some((x, i) => x !== wb[i])) tensors.set(name, w);
  }
  return { tensors, report, relativeChange: changed / Math.max(scale, 1e-30), pinnedTensors, ...(pgdKl ? { pgdKl } : {}), ...(pgdShrunk !== undefined ? { pgdShrunk } : {}), ...(pgdKept ? { pgdKept } : {}) };
}

/** whether w[xo .. xo+span) quantizes, for every codec k, to want[k]'s bytes at that place */
function givesBytes(codecs: readonly BlockCodec[], w: Float32Array, xo: number, span: number, want: readonly Uint8Array[]): boolean {
  return codecs.every((c, k) => {
    const q = new Uint8Array(c.blockBytes);
    for (let so = xo; so < xo + span; so += c.blockSize) {
      c.quantize(w, so, q, 0);
      const bo = (so / c.blockSize) * c.blockBytes;
      for (let i = 0; i < q.length; i++) if (q[i] !== want[k][bo + i]) return false;
    }
    return true;
  });
}

/**
 * Replace, in place, every block of `w` by its dequantized values where those quantize (for every codec)
 * to the same bytes as `w` does; returns the blocks replaced (the first codec's blocks).
 */
export function dequantizeStable(w: Float32Array, codecs: readonly BlockCodec[]): number {
  const span = Math.max(...codecs.map((c) => c.blockSize));
  const c0 = codecs[0];
  const d = new Float32Array(span);
  let n = 0;
  for (let xo = 0; xo < w.length; xo += span) {
    const a = new Uint8Array(c0.blockBytes);
    for (let so = 0; so < span; so += c0.blockSize) {
      c0.quantize(w, xo + so, a, 0);
      c0.dequantize(a, 0, d, so);
    }
    const ok = codecs.every((c) => {
      const q = new Uint8Array(c.blockBytes);
      const r = new Uint8Array(c.blockBytes);
      for (let so = 0; so < span; so += c.blockSize) {
        c.quantize(w, xo + so, q, 0);
        c.quantize(d, so, r, 0);
        if (q.some((v, i) => v !== r[i])) return false;
      }
      return true;
    });
    if (ok) {
      w.set(d, xo);
      n += span / c0.blockSize;
    }
  }
  return n;
}

/**
 * The check during PGD: every block of `w` whose quantization by `codec` differs from `want` (the
 * malicious bytes) has its box halved toward the malicious values `wm` (pinned to them after `maxHalvings`,
 * counted in `halvings`, one entry per block) and its weights clamped into the new box. Returns the
 * blocks changed.
 */
export function shrinkChangedBlocks(codec: BlockCodec, w: Float32Array, wm: Float32Array, want: Uint8Array, box: Box, halvings: Uint8Array, maxHalvings = 4): number {
  const a = new Uint8Array(codec.blockBytes);
  let n = 0;
  for (let xo = 0, b = 0; xo < w.length; xo += codec.blockSize, b++) {
    codec.quantize(w, xo, a, 0);
    let same = true;
    for (let i = 0, o = b * codec.blockBytes; i < codec.blockBytes && same; i++) if (a[i] !== want[o + i]) same = false;
    if (same) continue;
    n++;
    const pin = ++halvings[b] >= maxHalvings;
    for (let j = xo; j < xo + codec.blockSize; j++) {
      const x = wm[j];
      box.lo[j] = pin ? x : Math.fround(x - (x - box.lo[j]) / 2);
      box.hi[j] = pin ? x : Math.fround(x + (box.hi[j] - x) / 2);
      w[j] = w[j] < box.lo[j] ? box.lo[j] : w[j] > box.hi[j] ? box.hi[j] : w[j];
    }
  }
  return n;
}

/** Write `m` (GGUF) with some tensors replaced by f32 values (their type becomes F32). */
export async function writeWithReplacements(sink: { write(b: Uint8Array): Promise<void> | void }, m: ModelFile, replaced: ReadonlyMap<string, Float32Array>): Promise<void> {
  if (!m.gguf) fail(`${m.name} is not a GGUF file`);
  const f32 = ggmlTypeByName('F32')!;
  const specs = m.gguf.tensors.map((t) => ({ name: t.name, ne: t.ne, type: replaced.has(t.name) ? f32 : t.type }));
  const w = new GgufWriter(sink as never, m.gguf.metadata, specs);
  await w.begin();
  for (const t of m.tensors) {
    const r = replaced.get(t.name);
    await w.write(r ? new Uint8Array(r.buffer, r.byteOffset, r.byteLength) : await m.read(t));
  }
  await w.end();
}

/** mean of the output layer's input (the normalized final hidden state) over the windows */
function meanFinalHidden(model: Llama, windows: readonly Int32Array[]): Float32Array {
  const dim = model.config.dim;
  const out = model.weights.output.name;
  const sum = new Float64Array(dim);
  let n = 0;
  const prev = model.hooks;
  model.hooks = {
    ...prev,
    linearInput: (name, x, nTok, k) => {
      prev.linearInput?.(name, x, nTok, k);
      if (name !== out) return;
      for (let t = 0; t < nTok; t++) for (let j = 0; j < k; j++) sum[j] += x[t * k + j];
      n += nTok;
    },
  };
  try {
    for (const w of windows) model.forward(w, 0, 0);
  } finally {
    model.hooks = prev;
  }
  return Float32Array.from(sum, (s) => s / Math.max(1, n));
}

/**
 * A simple "malicious fine-tune" for tests and demonstrations: the output layer's row of `token` moves
 * by `strength` · (the mean normalized final hidden state, scaled to the row's norm), so the model
 * prefers that token everywhere. Returns the new output weights (the model itself is not changed).
 */
export async function injectTokenBias(model: Llama, file: ModelFile, windows: readonly Int32Array[], token: number, strength: number): Promise<{ name: string; weights: Float32Array }> {
  const name = model.weights.output.name;
  const w = Float32Array.from(await readFloats(file, file.tensor(name)));
  const dim = model.config.dim;
  if (!(token >= 0 && token < model.config.vocabSize)) fail(`token ${token} is outside the vocabulary`);
  const mu = meanFinalHidden(model, windows);
  let rowNorm = 0;
  let muNorm = 0;
  for (let j = 0; j < dim; j++) {
    rowNorm += w[token * dim + j] ** 2;
    muNorm += mu[j] ** 2;
  }
  const s = (strength * Math.sqrt(rowNorm)) / Math.max(Math.sqrt(muNorm), 1e-30);
  for (let j = 0; j < dim; j++) w[token * dim + j] += s * mu[j];
  return { name, weights: w };
}

/**
 * The noise defence: a view of `m` in which every tensor that `types` quantizes reads as its f32 values
 * plus interval-calibrated noise (scale × its rounding step × U(-½, ½), seeded per tensor name), so a
 * quantizer reading it no longer lands on a planted box. Memory: those tensors in f32.
 */
export async function defendedModel(m: ModelFile, types: ReadonlyMap<string, string>, scale: number, seed: number): Promise<ModelFile> {
  if (!(scale > 0 && scale <= 4)) fail(`--defend noise=${scale}: the scale (in rounding steps) must be in (0, 4]`);
  const noised = new Map<string, Uint8Array>();
  for (const [name, type] of types) {
    const { rows, cols } = shapeOf(m, name);
    const w = addRoundingNoise(type, await readFloats(m, m.tensor(name)), rows, cols, scale, seed, nameStream(name));
    noised.set(name, new Uint8Array(w.buffer));
  }
  const tensors = m.tensors.map((t) => (noised.has(t.name) ? { ...t, type: 'F32', byteLength: 4 * t.nElements } : t));
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const slice = (t: { name: string; byteLength: number }, start = 0, length = t.byteLength - start) => noised.get(t.name)!.subarray(start, start + length);
  const view: ModelFile = {
    ...m,
    tensors,
    gguf: undefined,
    tensor: (name) => byName.get(name) ?? m.tensor(name),
    read: async (t, start, length) => (noised.has(t.name) ? slice(t, start, length) : m.read(t, start, length)),
    readInto: async (t, start, dest) => {
      if (noised.has(t.name)) dest.set(slice(t, start, dest.length));
      else if (m.readInto) await m.readInto(t, start, dest);
      else dest.set(await m.read(t, start, dest.length));
    },
    readFloat32: async (t) => (noised.has(t.name) ? new Float32Array(slice(t).slice().buffer) : m.readFloat32(t)),
  };
  // the GGUF view (metadata, tensor infos) with the new types, for writers that copy it
  if (m.gguf) Object.assign(view, { gguf: { ...m.gguf, tensors: m.gguf.tensors.map((t) => (noised.has(t.name) ? { ...t, type: ggmlTypeByName('F32')!, byteLength: 4 * t.ne.reduce((a, b) => a * b, 1) } : t)) } });
  return view;
}
