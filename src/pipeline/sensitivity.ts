/**
 * Sensitivity of a model to the quantization of each weight tensor: for every quantizable tensor and
 * every candidate GGML type, the bytes it would take and a measured cost. Two estimators:
 *
 * - 'hessian' (HAWQ-V2 style, one forward pass): H = XᵀX of every linear layer's input on calibration
 *   text (the original model; q/k/v share one H, gate/up one), then for each candidate the exact
 *   tr(ΔW H ΔWᵀ) of its real quantization error ΔW (src/alloc/cost.ts). Costs of different tensors are
 *   in different units (the error energy at that layer's output); with `outputFactor: 'kld'` each
 *   tensor's costs are scaled by α = KLD / tr(ΔW H ΔWᵀ) measured once at a probe type (the tensor alone
 *   quantized, the model's output KL divergence on calibration text), which puts every tensor in KLD
 *   units, so that the additive model Σ cost ≈ KLD of the whole file holds.
 * - 'kld' (end to end): for every tensor and type, that tensor alone quantized, the mean KL divergence
 *   of the model's next-token distribution from the original's on calibration text.
 *
 * The token embedding is a lookup: its "input" is one-hot, so H is diagonal with the token counts and
 * tr(ΔE H ΔEᵀ) = Σ_v count(v) ‖δ_v‖².
 */
import { fail } from '../errors.js';
import { klDivergenceRow, logSoftmaxRows } from '../eval/metrics.js';
import { diagonalCost, ggmlDequantizedError, ggmlQuantizationError } from '../alloc/cost.js';
import { blockCodecFor, codeLayout } from '../algos/block-codec.js';
import { DEFAULT_PTQ, type PtqOptions } from '../algos/ptq-options.js';
import { ALGORITHM_TABLE, roundWeight, type InputStatistics } from './algorithms.js';
import type { GptqWorkers } from './gptq-parts.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import { toFloat32 } from '../io/tensor-data.js';
import { layerLinears, type Llama } from '../model/llama.js';
import { linear, makeLinearWeight, type LinearWeight } from '../model/matmul.js';
import { ggmlCodec, ggmlRowBytes, ggmlTypeByName } from '../quant/ggml/index.js';
import { IQ_NEEDS_IMPORTANCE } from '../quant/ggml/iq-quant.js';
import { readFloats, type RowQuantizer } from './quantize.js';
import { InputStats, type ExpertStats } from './passes/input-stats.js';
import { modelShape } from './passes/load.js';
import { streamStatistics, type StreamStart } from './stats-pass.js';

export const SENSITIVITY_VERSION = 1;
export const DEFAULT_SENSITIVITY_TYPES = ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_0', 'IQ4_XS'] as const;

export interface SensitivityCandidate {
  readonly type: string;
  /** bytes of the tensor's data in this type (no file alignment) */
  readonly bytes: number;
  readonly cost: number;
  /** the raw tr(ΔW H ΔWᵀ) (hessian estimator) */
  readonly hessian?: number;
}

export interface TensorSensitivity {
  readonly name: string;
  /** [rows, cols] */
  readonly shape: readonly [number, number];
  /** bytes when kept as in the input (F32/F16), for reference */
  readonly candidates: readonly SensitivityCandidate[];
  /** the output-side factor applied to the hessian costs */
  readonly factor?: number;
}

export interface SensitivityDb {
  readonly lowbitSensitivity: typeof SENSITIVITY_VERSION;
  /** fingerprint of the model (tensor names, shapes, types and leading bytes) */
  readonly modelHash: string;
  readonly estimator: 'hessian' | 'kld';
  readonly outputFactor: 'kld' | 'none';
  /** costs of the importance-weighted quantizers (absent: true) */
  readonly weighted?: boolean;
  /** 'gptq': every candidate's cost is that of the tensor rounded by GPTQ at that type (absent: RTN) */
  readonly algo?: 'gptq';
  readonly calibration: { readonly tokens: number; readonly ctx: number; readonly seed: number };
  readonly tensors: readonly TensorSensitivity[];
  readonly seconds: number;
  /**
   * where the seconds went: the streaming statistics pass (its forward stages, the statistics, reading
   * the weights, the hessian costs measured inside it) and the KL divergences; of the hessian costs
   * (the classifier's and the embedding's included): rounding the candidates (ΔW of the sampled rows)
   * and the products tr(ΔW H ΔWᵀ)
   */
  readonly timings?: { readonly pass: number; readonly setup?: number; readonly forward: number; readonly statistics: number; readonly read: number; readonly costs: number; readonly kld: number; readonly rounding?: number; readonly products?: number };
}

export interface SensitivityOptions {
  /**
   * the original model loaded in the runtime: needed only for KL divergences (estimator 'kld', output
   * factor 'kld'); its hooks are borrowed during the run. The Hessian statistics come from the
   * calibration pipeline's streaming pass over `file` (pipeline/stats-pass.ts), never from it.
   */
  model?: Llama;
  /** the model file (the statistics pass and the costs read its weights as f32) */
  file: ModelFile;
  /** calibration windows: token sequences starting with BOS, all of one length */
  windows: readonly Int32Array[];
  /** windows used for KL divergence (default: the first 4 of `windows`) */
  kldWindows?: readonly Int32Array[];
  /** which tensors (default: every weight the model multiplies with, and the token embedding) */
  tensors?: readonly string[];
  types?: readonly string[];
  estimator?: 'hessian' | 'kld';
  outputFactor?: 'kld' | 'none';
  /** hessian: keep H = XᵀX or X itself (default: whichever is smaller; the costs are the same) */
  statForm?: 'auto' | 'hessian' | 'inputs';
  /** hessian: estimate each tensor's cost from at most this many evenly spaced rows (default: all) */
  maxRows?: number;
  /**
   * costs of the importance-weighted quantizers (diag(H) as llama-quantize's imatrix: what a file
   * quantized with calibration text or --imatrix holds; default) or of the plain ones (a file
   * quantized without: also much faster, the WebAssembly quantizers)
   */
  weighted?: boolean;
  /**
   * 'gptq': the candidates are the GPTQ versions of the types (hessian estimator): each candidate's ΔW is
   * GPTQ's at that type with the input Hessian the pass collects (the PTQ pipeline's GPTQ, `ptq` options),
   * so the costs are those of the file `quantize --algo gptq` writes; default 'rtn'
   */
  algo?: 'rtn' | 'gptq';
  /** options of GPTQ with algo 'gptq' (default: the PTQ defaults) */
  ptq?: PtqOptions;
  /**
   * threads that quantize the candidates' rows (the quantize pool of `lowbit quantize`): the same
   * bytes as this thread alone, split by rows
   */
  rowQuantizer?: RowQuantizer;
  /** threads that run GPTQ on ranges of rows (algo gptq; the same bytes) */
  gptqWorkers?: GptqWorkers;
  /** probe type for the output factor (default Q3_K where the row allows, else the first candidate) */
  probeType?: string;
  seed?: number;
  /** threads of the statistics pass's matmuls */
  threads?: number;
  /** the statistics pass, started on `file` before the windows were known (stats-pass.ts startStream) */
  started?: StreamStart;
  onProgress?: (message: string, done: number, total: number) => void;
}

/** FNV-1a over names, shapes, types and the first 4 KiB of every tensor: tells models apart cheaply. */
export async function modelFingerprint(m: ModelFile): Promise<string> {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ 0x5bd1e995;
  const eat = (b: number) => {
    h1 = Math.imul(h1 ^ b, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ b, 0x5bd1e995) >>> 0;
    h2 ^= h2 >>> 15;
  };
  const text = (s: string) => {
    for (let i = 0; i < s.length; i++) eat(s.charCodeAt(i) & 0xff);
  };
  for (const t of m.tensors) {
    text(`${t.name}|${t.shape.join('x')}|${t.type};`);
    const head = await m.read(t, 0, Math.min(4096, t.byteLength));
    for (let i = 0; i < head.length; i++) eat(head[i]);
  }
  return h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0');
}

/**
 * Runs the model with some weights replaced by other f32 values (their quantized-and-dequantized
 * versions), everything else as loaded: linear layers through the runtime's `linear` hook (a 3-D
 * expert tensor: each expert's matrix of it), the token embedding (any stored type) by swapping in an
 * F32 table and back.
 */
export class WeightSwap {
  private readonly linears: Map<string, LinearWeight>;
  constructor(readonly model: Llama) {
    this.linears = linearNames(model);
  }
  run<T>(replacements: ReadonlyMap<string, Float32Array>, fn: () => T): T {
    const model = this.model;
    const subst = new Map<string, LinearWeight | LinearWeight[]>();
    const f32 = ggmlTypeByName('F32')!;
    const bytesOf = (v: Float32Array) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    let restoreEmbedding: (() => void) | undefined;
    for (const [name, values] of replacements) {
      const lw = this.linears.get(name);
      if (name === 'token_embd.weight') {
        // the lookup dequantizes one row per token in the stored type: swap in an F32 table and back
        const weights = model.weights;
        const saved = weights.tokenEmbedding;
        const dim = model.config.dim;
        if (values.length !== model.config.vocabSize * dim) fail(`token_embd.weight replacement has ${values.length} values, the model needs ${model.config.vocabSize * dim}`);
        weights.tokenEmbedding = { type: f32, data: bytesOf(values), rowBytes: dim * 4 };
        restoreEmbedding = () => {
          weights.tokenEmbedding = saved;
        };
      } else if (!lw) fail(`the model multiplies with no tensor named ${name}`);
      if (!lw) continue;
      const nExp = values.length / (lw.rows * lw.cols);
      if (nExp > 1 && Number.isInteger(nExp) && nExp === model.config.nExperts) {
        // a 3-D expert tensor: expert e's matrix is rows [e * rows, (e + 1) * rows)
        const n = lw.rows * lw.cols;
        subst.set(name, Array.from({ length: nExp }, (_, e) => makeLinearWeight(name, f32, lw.rows, lw.cols, bytesOf(values.subarray(e * n, (e + 1) * n)), false, null)));
      } else if (values.length === lw.rows * lw.cols) subst.set(name, makeLinearWeight(name, f32, lw.rows, lw.cols, bytesOf(values), false, null));
      else fail(`${name} replacement has ${values.length} values, the model's weight ${lw.rows * lw.cols}`);
    }
    const prev = model.hooks;
    model.hooks = {
      ...prev,
      linear: (out, x, w, nTok, expert) => {
        const s = subst.get(w.name);
        if (s) linear(out, x, Array.isArray(s) ? s[expert ?? fail(`${w.name} is an expert tensor, called without an expert`)] : s, nTok);
        else if (prev.linear) prev.linear(out, x, w, nTok, expert);
        else linear(out, x, w, nTok);
      },
    };
    try {
      return fn();
    } finally {
      model.hooks = prev;
      restoreEmbedding?.();
    }
  }
}

/** mean KL(base || model) over every position of the windows, base as log-probabilities */
export function meanKld(model: Llama, windows: readonly Int32Array[], base: readonly Float32Array[]): number {
  const vocab = model.config.vocabSize;
  let sum = 0;
  let count = 0;
  windows.forEach((w, i) => {
    const lp = model.forward(w, 0, 0);
    logSoftmaxRows(lp, vocab);
    const lb = base[i];
    for (let o = 0; o < lp.length; o += vocab) {
      sum += klDivergenceRow(lb, o, 0, lp, o, 0, vocab);
      count++;
    }
  });
  return sum / Math.max(1, count);
}

interface TensorShape {
  name: string;
  /** rows of every matrix (a 3-D expert tensor: its experts' matrices stacked) */
  rows: number;
  cols: number;
  tensor: ModelTensor;
  /** a 3-D expert tensor: the number of experts */
  experts?: number;
}

/** Rows `ids` (increasing) of a row-major tensor as float32: runs of consecutive rows read at once. */
async function readRows(file: ModelFile, w: TensorShape, ids: Int32Array): Promise<Float32Array> {
  if (ids.length === w.rows) return readFloats(file, w.tensor);
  const rowBytes = w.tensor.byteLength / w.rows;
  const out = new Float32Array(ids.length * w.cols);
  for (let i = 0; i < ids.length; ) {
    let j = i + 1;
    while (j < ids.length && ids[j] === ids[j - 1] + 1) j++;
    const bytes = await file.read(w.tensor, ids[i] * rowBytes, (j - i) * rowBytes);
    toFloat32(w.tensor.type, bytes, out.subarray(i * w.cols, j * w.cols));
    i = j;
  }
  return out;
}

/** Types that can encode rows of `cols` (block size divides it) and that lowbit can quantize. */
export function typesForRow(types: readonly string[], cols: number): string[] {
  return types.filter((n) => {
    const t = ggmlTypeByName(n);
    if (!t) fail(`unknown GGML type '${n}' in the candidate list`);
    if (!ggmlCodec(t)?.quantize) fail(`lowbit cannot quantize to ${t.name} yet`);
    return cols % t.blockSize === 0;
  });
}

/**
 * The candidates a tensor can take given its importance: IQ2_XXS, IQ2_XS and IQ1_S need one (as in
 * llama.cpp), so a tensor without (plain costs; the token embedding, whose input is no activation) is
 * measured without them and the allocation never gives it those types.
 */
function withImportance(cand: string[], imp: Importance): string[] {
  return imp ? cand : cand.filter((t) => !IQ_NEEDS_IMPORTANCE.has(t));
}

/** The linear layers the runtime multiplies with, by tensor name (an expert tensor: expert 0's matrix of it). */
function linearNames(model: Llama): Map<string, LinearWeight> {
  const out = new Map<string, LinearWeight>();
  for (const L of model.weights.layers) for (const w of layerLinears(L)) if (!out.has(w.name)) out.set(w.name, w);
  out.set(model.weights.output.name, model.weights.output);
  return out;
}

/** The tensors sensitivity measures by default: every linear weight of the file's family, the classifier and the token embedding. */
export function sensitivityTensors(m: ModelFile): string[] {
  const { config, family } = modelShape(m);
  const inFile = new Set(m.tensors.map((t) => t.name));
  const out: string[] = [];
  for (let l = 0; l < config.nLayers; l++) for (const s of family.linears) if (inFile.has(`blk.${l}.${s.gguf}.weight`)) out.push(`blk.${l}.${s.gguf}.weight`);
  if (inFile.has('output.weight')) out.push('output.weight');
  out.push('token_embd.weight');
  return out;
}

/** importance of a tensor's rows: one vector, or one per expert of a 3-D tensor */
type Importance = Float32Array | readonly (Float32Array | undefined)[] | undefined;

/** ggmlQuantizationError over a tensor of `nExp` stacked matrices, each with its own importance */
function quantizationError(type: string, w: Float32Array, rows: number, cols: number, importance: Importance): Float32Array {
  if (!Array.isArray(importance)) return ggmlQuantizationError(type, w, rows, cols, importance as Float32Array | undefined).delta;
  const nExp = importance.length;
  const per = rows / nExp;
  const delta = new Float32Array(rows * cols);
  for (let e = 0; e < nExp; e++) delta.set(ggmlQuantizationError(type, w.subarray(e * per * cols, (e + 1) * per * cols), per, cols, importance[e]).delta, e * per * cols);
  return delta;
}

export async function measureSensitivity(o: SensitivityOptions): Promise<SensitivityDb> {
  const t0 = performance.now();
  const estimator = o.estimator ?? 'hessian';
  const outputFactor = o.outputFactor ?? 'kld';
  const weighted = o.weighted ?? true;
  const types = o.types ?? DEFAULT_SENSITIVITY_TYPES;
  if (o.windows.length === 0) fail('sensitivity needs calibration text (at least one window)');
  const needsKld = estimator === 'kld' || outputFactor === 'kld';
  const model = o.model;
  if (needsKld && !model) fail('KL divergences need the model loaded in the runtime (options.model)');
  const say = o.onProgress ?? (() => {});
  const names = o.tensors ?? sensitivityTensors(o.file);
  // shapes only: each tensor's values come with the statistics pass (or are read for the KLDs), then dropped
  const shapes = new Map<string, TensorShape>();
  for (const name of names) {
    const t = o.file.tensor(name);
    const ne = t.ne ? [...t.ne] : [...t.shape].reverse();
    if (ne.length !== 2 && ne.length !== 3) fail(`${name} is not a matrix or a stack of expert matrices`);
    shapes.set(name, { name, rows: t.nElements / ne[0], cols: ne[0], tensor: t, experts: ne.length === 3 ? ne[2] : undefined });
  }
  const tensors = new Map<string, TensorSensitivity>();
  const importance = new Map<string, Importance>();
  const probes = new Map<string, { type: string; hessian: number }>();
  const totalTokens = o.windows.reduce((a, w) => a + w.length, 0);
  let done = 0;

  // ---- hessian costs, a tensor at a time, while the streaming pass holds its weights -------------
  // (GGML types quantize rows independently: the costs of a deterministic sample of rows, scaled up to
  // the whole tensor, are an unbiased estimate of the sum over rows)
  const gptq = o.algo === 'gptq';
  const ptq = o.ptq ?? DEFAULT_PTQ;
  if (gptq && estimator !== 'hessian') fail('GPTQ candidates are measured by the hessian estimator (GPTQ needs each input\'s Hessian)');
  if (gptq)
    for (const type of types) {
      const t = ggmlTypeByName(type) ?? fail(`unknown GGML type '${type}' in the candidate list`);
      try {
        codeLayout(blockCodecFor(type, t.blockSize));
      } catch (e) {
        fail(`GPTQ cannot round ${type} (${(e as Error).message}): leave it out of the candidate types (--types)`);
      }
    }
  /**
   * A candidate's error rows ΔW of n rows: GPTQ's at that type with the rows' input Hessian (algo gptq;
   * rows are independent given H, so sampled rows give the rows of the whole tensor's GPTQ), else the
   * GGML quantizer's (split over the row quantizer's threads when there is one). `before` runs once this
   * thread has done its share of the work. Returns the step left to do on this thread: with the row
   * quantizer, decoding the blocks into `out` (the caller runs it as the next candidate's `before`, while
   * the workers quantize their last rows of that one).
   */
  const byGptq = (algo: 'rtn' | 'gptq', st: InputStatistics | undefined, cols: number) => algo === 'gptq' && st !== undefined && st.h.length === cols * cols;
  const errorRows = async (out: Float32Array, type: string, algo: 'rtn' | 'gptq', rows: Float32Array, n: number, cols: number, imp: Float32Array | undefined, st: InputStatistics | undefined, before?: () => void): Promise<(() => void) | undefined> => {
    const t = ggmlTypeByName(type)!;
    const gptqRows = byGptq(algo, st, cols);
    if (o.rowQuantizer && !gptqRows) {
      const q = o.rowQuantizer.quantizeRows(t, rows, n, cols, ggmlCodec(t)?.usesImportance ? imp : undefined);
      try {
        before?.();
      } catch (e) {
        await q.catch(() => undefined);
        throw e;
      }
      const packed = await q;
      return () => void ggmlDequantizedError(type, packed, rows, n, cols, out);
    }
    before?.();
    if (gptqRows) {
      const r = await roundWeight([ALGORITHM_TABLE.gptq], { name: type, codec: blockCodecFor(type, cols), w: rows, rows: n, cols, ggmlType: type, stats: st, options: ptq, gptqWorkers: o.gptqWorkers });
      for (let i = 0; i < n * cols; i++) out[i] = r.q[i] - rows[i];
    } else out.set(ggmlQuantizationError(type, rows, n, cols, imp).delta);
    return undefined;
  };

  // ---- hessian costs, a tensor at a time, while the streaming pass holds its weights -------------
  // (GGML types quantize rows independently: the costs of a deterministic sample of rows, scaled up to
  // the whole tensor, are an unbiased estimate of the sum over rows)
  // grow-only scratch for the sampled rows and the stacked error rows: fresh arrays per tensor were
  // ~0.6 GB of new memory on a 1.1B model (a page fault per 4 KiB, ~10 µs each in a virtual machine)
  let sampleScratch: Float32Array = new Float32Array(0);
  let deltaScratch: Float32Array = new Float32Array(0);
  const scratch = (a: Float32Array, n: number): Float32Array => (a.length >= n ? a : new Float32Array(n));
  const costSplit = { rounding: 0, products: 0 };
  const hessianCosts = async (w: TensorShape, values: Float32Array, stats: InputStats | { rowCosts(delta: Float32Array, m: number): Float64Array } | undefined, experts: ExpertStats | undefined, extra?: (type: string, delta: Float32Array, rowIds: Int32Array) => number, lookup = false): Promise<{ out: SensitivityCandidate[]; probe?: { type: string; hessian: number } }> => {
    const imp = importance.get(w.name);
    const cand = withImportance(typesForRow(types, w.cols), imp);
    const m = o.maxRows && o.maxRows < w.rows ? o.maxRows : w.rows;
    const rowIds = Int32Array.from({ length: m }, (_, i) => Math.floor((i * w.rows) / m));
    const scale = w.rows / m;
    // sampled rows grouped by expert (one group for a 2-D tensor): [first sample, end, expert]
    const nExp = w.experts ?? 1;
    const per = w.rows / nExp;
    const groups: [number, number, number][] = [];
    for (let i = 0; i < m; ) {
      const e = Math.floor(rowIds[i] / per);
      let j = i;
      while (j < m && Math.floor(rowIds[j] / per) === e) j++;
      groups.push([i, j, e]);
      i = j;
    }
    const sample = m === w.rows ? values : (sampleScratch = scratch(sampleScratch, m * w.cols)).subarray(0, m * w.cols);
    if (sample !== values) rowIds.forEach((r, i) => sample.set(values.subarray(r * w.cols, (r + 1) * w.cols), i * w.cols));
    const probeType = o.probeType && cand.includes(o.probeType) ? o.probeType : cand.includes('Q3_K') ? 'Q3_K' : cand[0];
    // what is rounded: every candidate (GPTQ's versions with algo gptq) and, with GPTQ candidates, the
    // probe type's RTN too (the KLD probe replaces the whole tensor by its RTN rounding: the output
    // factor is the ratio of that KLD to that RTN cost)
    // (a lookup, the token embedding, has no input Hessian to round with: RTN, as the PTQ pipeline does)
    const jobs: { type: string; algo: 'rtn' | 'gptq' }[] = cand.map((type) => ({ type, algo: gptq && !lookup ? 'gptq' : 'rtn' }));
    if (gptq && !lookup && cand.length && outputFactor === 'kld') jobs.push({ type: probeType, algo: 'rtn' });
    const out: SensitivityCandidate[] = [];
    let probe: { type: string; hessian: number } | undefined;
    const hc = new Float64Array(jobs.length);
    for (const [i, j, e] of groups) {
      const n = j - i;
      const rowsOf = sample.subarray(i * w.cols, j * w.cols);
      const impOf = Array.isArray(imp) ? imp[e] : (imp as Float32Array | undefined);
      const st = experts ? experts.pick(e) : stats instanceof InputStats ? stats : undefined;
      // the candidates' error rows of this group stacked (up to 2^24 values): one product for several
      const per = Math.max(1, Math.floor((1 << 24) / (n * w.cols)));
      for (let c0 = 0; c0 < jobs.length; c0 += per) {
        const batch = jobs.slice(c0, c0 + per);
        let deltas: Float32Array;
        const tr = performance.now();
        const pooled = o.rowQuantizer?.errorRows;
        if (pooled && batch.every((j) => !byGptq(j.algo, st, w.cols))) {
          // every candidate of the batch in one job of the row quantizer's threads (quantized and decoded there)
          const ts = batch.map((j) => ggmlTypeByName(j.type)!);
          deltas = await pooled.call(o.rowQuantizer, ts, rowsOf, n, w.cols, impOf, ts.map((t) => ggmlCodec(t)?.usesImportance === true));
        } else {
          deltas = (deltaScratch = scratch(deltaScratch, batch.length * n * w.cols)).subarray(0, batch.length * n * w.cols);
          let decode: (() => void) | undefined; // the previous candidate's decoding, run while this one is quantized
          for (let c = 0; c < batch.length; c++) decode = await errorRows(deltas.subarray(c * n * w.cols, (c + 1) * n * w.cols), batch[c].type, batch[c].algo, rowsOf, n, w.cols, impOf, st, decode);
          decode?.();
        }
        const tp = performance.now();
        costSplit.rounding += (tp - tr) / 1000;
        let rc: Float64Array | undefined;
        let weight = 1;
        if (experts) {
          // expert e's part of the layer's output error: 2/N ‖X_e ΔW_eᵀ‖² over the tokens routed to it
          // (its own inputs, exact however few: the pooled fallback is for inverting a Hessian) -- its
          // statistics are normalized by its own count, hence the share count_e / N
          const own = experts.perExpert[e];
          weight = own.count / Math.max(1, totalTokens);
          if (own.count > 0) rc = own.rowCosts(deltas, batch.length * n);
        } else if (stats) rc = stats.rowCosts(deltas, batch.length * n);
        costSplit.products += (performance.now() - tp) / 1000;
        batch.forEach(({ type }, c) => {
          const d = deltas.subarray(c * n * w.cols, (c + 1) * n * w.cols);
          if (rc) for (let r = 0; r < n; r++) hc[c0 + c] += weight * rc[c * n + r];
          else if (!experts) hc[c0 + c] += diagonalCost(d, n, w.cols, new Float32Array(w.cols).fill(1));
          if (extra) hc[c0 + c] += extra(type, d, rowIds.subarray(i, j));
        });
      }
    }
    jobs.forEach(({ type, algo }, c) => {
      const cost = hc[c] * scale;
      // (the pass computes no logits, where the runtime would stop at a non-finite activation)
      if (!Number.isFinite(cost)) fail(`${w.name}: the cost of ${type} is not finite: the model's activations on the calibration text are not finite (NaN or infinity in its weights?)`);
      if (c < cand.length) out.push({ type, bytes: tensorBytes(type, w.rows, w.cols), cost, hessian: cost });
      if (type === probeType && algo === 'rtn') probe = { type, hessian: cost };
    });
    return { out, probe };
  };

  // a tensor whose costs come from sampled rows read from the file on their own (the token embedding,
  // and the classifier when rows are sampled: the pass computes no logits, so it need not read it
  // whole): the sample is the whole "tensor" handed to hessianCosts, the costs scaled up after
  // (population: the rows that can have a cost, all of them unless given; the sample is evenly spaced in it)
  const sampledCosts = async (w: TensorShape, stats: InputStats | { rowCosts(delta: Float32Array, m: number): Float64Array } | undefined, extra?: (rowIds: Int32Array) => (type: string, delta: Float32Array) => number, population?: Int32Array): Promise<void> => {
    const size = population ? population.length : w.rows;
    const m = o.maxRows && o.maxRows < size ? o.maxRows : size;
    const rowIds = Int32Array.from({ length: m }, (_, i) => {
      const k = Math.floor((i * size) / m);
      return population ? population[k] : k;
    });
    const sample = await readRows(o.file, w, rowIds);
    const { out, probe } = await hessianCosts({ ...w, rows: m }, sample, stats, undefined, extra?.(rowIds), extra !== undefined);
    const scale = m ? size / m : 0;
    const scaled = out.map((c) => ({ ...c, bytes: tensorBytes(c.type, w.rows, w.cols), cost: c.cost * scale, hessian: c.hessian! * scale }));
    if (probe) probes.set(w.name, { type: probe.type, hessian: probe.hessian * scale });
    tensors.set(w.name, { name: w.name, shape: [w.rows, w.cols], candidates: scaled });
    say(`costs of ${w.name}`, ++done, names.length);
  };

  let tiedHead: InputStats | undefined;
  let tokenCounts: Float32Array | undefined;
  const timings = { pass: 0, setup: 0, forward: 0, statistics: 0, read: 0, costs: 0, kld: 0 };
  if (estimator === 'hessian' || weighted) {
    const tp = performance.now();
    const head = shapes.get('output.weight');
    // the classifier's sampled rows are read after the pass (it is never read whole)
    const headSampled = head !== undefined && o.maxRows !== undefined && o.maxRows < head.rows;
    const pass = await streamStatistics(o.file, {
      windows: o.windows,
      threads: o.threads,
      // (GPTQ inverts H itself: with GPTQ candidates H is kept, never X)
      statForm: gptq ? 'hessian' : (o.statForm ?? 'auto'),
      headWeight: head !== undefined && !headSampled,
      started: o.started,
      onLinear: async (x) => {
        const w = shapes.get(x.name);
        if (!w) return;
        if (weighted) importance.set(x.name, x.experts ? x.experts.perExpert.map((_, e) => x.experts!.pick(e).diag()) : x.stats.diag());
        if (estimator !== 'hessian' || typesForRow(types, w.cols).length === 0) return;
        const { out, probe } = await hessianCosts(w, x.w.data, x.stats, x.experts);
        if (probe) probes.set(x.name, probe);
        tensors.set(x.name, { name: x.name, shape: [w.rows, w.cols], candidates: out });
        say(`costs of ${x.name}`, ++done, names.length);
      },
      onProgress: (msg, d, n) => say(`statistics pass: ${msg}`, d, n),
    });
    tiedHead = pass.tiedHead;
    tokenCounts = pass.tokenCounts;
    let headCosts = 0;
    if (head && headSampled) {
      const th = performance.now();
      if (weighted) importance.set(head.name, pass.head.diag());
      if (estimator === 'hessian' && typesForRow(types, head.cols).length > 0) await sampledCosts(head, pass.head);
      headCosts = (performance.now() - th) / 1000;
    }
    Object.assign(timings, { pass: (performance.now() - tp) / 1000, forward: pass.seconds.forward, statistics: pass.seconds.statistics, read: pass.seconds.read, costs: pass.seconds.consumer + headCosts, setup: pass.seconds.setup });
  }
  // the token embedding: one-hot inputs, H = diag(token counts) over its rows (the vocabulary); plus the
  // output layer's cost when the classifier is tied to it
  const emb = shapes.get('token_embd.weight');
  if (emb && estimator === 'hessian' && typesForRow(types, emb.cols).length > 0) {
    if (weighted && tiedHead) importance.set(emb.name, tiedHead.diag());
    const counts = tokenCounts!;
    const lookup = (rowIds: Int32Array) => (_: string, delta: Float32Array): number => {
      let s = 0;
      for (let i = 0; i < rowIds.length; i++) {
        const count = counts[rowIds[i]];
        if (count === 0) continue;
        let r = 0;
        for (let j = 0; j < emb.cols; j++) r += delta[i * emb.cols + j] ** 2;
        s += count * r;
      }
      return (2 * s) / Math.max(1, totalTokens); // 2/N as finishHessian
    };
    // untied, a row's cost is its token's count times its error: with sampled rows, sample among the tokens
    // the calibration text uses (evenly spaced rows of a 32 000-token vocabulary would almost never hold
    // one of 256 calibration tokens, and every cost would be 0); all of them, exactly, when they fit
    const seen = !tiedHead && o.maxRows !== undefined && o.maxRows < emb.rows ? Int32Array.from(counts.keys()).filter((r) => counts[r] > 0) : undefined;
    await sampledCosts(emb, tiedHead ?? { rowCosts: (_: Float32Array, m: number) => new Float64Array(m) }, lookup, seen);
  }

  // ---- KL divergences: one tensor's weights replaced, everything else original --------------------
  const tk = performance.now();
  if (needsKld) {
    const kldWindows = o.kldWindows ?? o.windows.slice(0, 4);
    const base: Float32Array[] = [];
    for (const w of kldWindows) {
      const lp = Float32Array.from(model!.forward(w, 0, 0));
      logSoftmaxRows(lp, model!.config.vocabSize);
      base.push(lp);
    }
    const swap = new WeightSwap(model!);
    const kldOf = (name: string, w: Float32Array, delta: Float32Array): number => {
      const q = new Float32Array(delta.length);
      for (let i = 0; i < q.length; i++) q[i] = w[i] + delta[i];
      return swap.run(new Map([[name, q]]), () => meanKld(model!, kldWindows, base));
    };
    for (const name of names) {
      const w = shapes.get(name)!;
      const imp = importance.get(name);
      const cand = withImportance(typesForRow(types, w.cols), imp);
      if (cand.length === 0) continue;
      if (estimator === 'kld') {
        const data = await readFloats(o.file, w.tensor);
        const out: SensitivityCandidate[] = [];
        for (const type of cand) out.push({ type, bytes: tensorBytes(type, w.rows, w.cols), cost: kldOf(name, data, quantizationError(type, data, w.rows, w.cols, imp)) });
        tensors.set(name, { name, shape: [w.rows, w.cols], candidates: out });
        say(`KLD costs of ${name}`, ++done, names.length);
        continue;
      }
      const probe = probes.get(name);
      const t = tensors.get(name);
      if (!probe || !t || !(probe.hessian > 0)) continue;
      const data = await readFloats(o.file, w.tensor);
      const factor = kldOf(name, data, quantizationError(probe.type, data, w.rows, w.cols, imp)) / probe.hessian;
      tensors.set(name, { ...t, candidates: t.candidates.map((c) => ({ ...c, cost: c.hessian! * factor })), factor });
      say(`KLD probe of ${name}`, ++done, 2 * names.length);
    }
  }
  return {
    lowbitSensitivity: SENSITIVITY_VERSION,
    modelHash: await modelFingerprint(o.file),
    estimator,
    outputFactor,
    ...(weighted ? {} : { weighted }),
    ...(gptq ? { algo: 'gptq' as const } : {}),
    calibration: { tokens: totalTokens, ctx: o.windows[0].length, seed: o.seed ?? 0 },
    tensors: names.flatMap((n) => tensors.get(n) ?? []),
    seconds: (performance.now() - t0) / 1000,
    timings: { ...timings, kld: (performance.now() - tk) / 1000, ...(estimator === 'hessian' ? costSplit : {}) },
  };
}

/** Read a sensitivity database (JSON), checking it belongs to this model. */
export function parseSensitivityDb(text: string, modelHash: string, what = 'sensitivity database'): SensitivityDb {
  let o: SensitivityDb;
  try {
    o = JSON.parse(text) as SensitivityDb;
  } catch {
    fail(`${what} is not JSON`);
  }
  if (!o || o.lowbitSensitivity !== SENSITIVITY_VERSION || !Array.isArray(o.tensors)) fail(`${what} is not a lowbit sensitivity database (version ${SENSITIVITY_VERSION})`);
  if (o.modelHash !== modelHash) fail(`${what} was measured on another model (fingerprint ${o.modelHash}, this model ${modelHash})`);
  for (const t of o.tensors)
    for (const c of t.candidates) if (!(Number.isFinite(c.cost) && Number.isFinite(c.bytes) && ggmlTypeByName(c.type))) fail(`${what}: bad entry for ${t.name} ${c.type}`);
  return o;
}

/** bytes of a row-major rows × cols tensor in a GGML type */
export function tensorBytes(type: string, rows: number, cols: number): number {
  return rows * ggmlRowBytes(ggmlTypeByName(type)!, cols);
}

/**
 * Fitness for the evolutionary allocation: the model's mean KLD against the original with every
 * tensor of an assignment quantized to its type. The dequantized values of every candidate (tensor,
 * type) are prepared up front (memory: parameters × candidate types × 4 bytes). Stage s scores the
 * first `stageWindows[s]` windows.
 */
export async function kldFitness(
  model: Llama,
  file: ModelFile,
  candidates: ReadonlyMap<string, readonly string[]>,
  windows: readonly Int32Array[],
  stageWindows: readonly number[],
  importanceOf?: (name: string) => Importance,
): Promise<(types: ReadonlyMap<string, string>, stage: number) => number> {
  const swap = new WeightSwap(model);
  const vocab = model.config.vocabSize;
  const maxW = Math.min(windows.length, Math.max(...stageWindows));
  const base: Float32Array[] = [];
  for (const w of windows.slice(0, maxW)) {
    const lp = Float32Array.from(model.forward(w, 0, 0));
    logSoftmaxRows(lp, vocab);
    base.push(lp);
  }
  const cache = new Map<string, Float32Array>();
  for (const [name, types] of candidates) {
    const t = file.tensor(name);
    const ne = t.ne ? [...t.ne] : [...t.shape].reverse();
    const data = await readFloats(file, t);
    for (const type of types) {
      const delta = quantizationError(type, data, t.nElements / ne[0], ne[0], importanceOf?.(name));
      for (let i = 0; i < delta.length; i++) delta[i] += data[i];
      cache.set(`${name}|${type}`, delta);
    }
  }
  return (types, stage) => {
    const repl = new Map<string, Float32Array>();
    for (const [name, type] of types) {
      const q = cache.get(`${name}|${type}`);
      if (!q) fail(`kldFitness: ${name} in ${type} is not a prepared candidate`);
      repl.set(name, q);
    }
    const n = Math.min(base.length, stageWindows[Math.min(stage, stageWindows.length - 1)]);
    return swap.run(repl, () => meanKld(model, windows.slice(0, n), base.slice(0, n)));
  };
}
