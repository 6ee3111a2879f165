/**
 * Calibrated post-training quantization, layer by layer (GPTQ's sequential scheme), as named stages
 * that PTQ and the sensitivity / allocation passes share:
 *
 *   loadWeights          every tensor as float32 (the transforms and quantizers write into them)
 *   calibrationWindows   windows of the calibration text (seeded), each starting with BOS
 *   rotateModel          (--rotate hadamard) fold the RMSNorm gains into the following linears, rotate
 *                        the residual stream (and each head's values) with random-sign Hadamard
 *                        matrices, and check the rotated float model computes the original's logits
 *   LayerCalibration     the per-layer stages over X (calibration tokens x dim, the current layer's input):
 *     .collectHessians(l, input)   run a stage of layer l over every window, capturing the input of its
 *                                  linears: H = 2 X^T X / N, mean |x|, max |x| (InputStats)
 *     .scaleInputs(...)            equivalence transforms (SmoothQuant, AWQ scales) folded into the
 *                                  norm / producer before the group (model/family.ts: foldPairs)
 *     .quantizeGroup(names, st)    round the linears of a group with their algorithms (algorithms.ts);
 *                                  the runtime's weights now hold the quantized values
 *     .measureKld(windows)         KL divergence of the current (partly quantized) model's next-token
 *                                  distributions against reference logits, on calibration windows
 *   runPtq               the driver: for each layer, for each input group of the family (q/k/v share
 *                        attn_norm's output, gate/up share ffn_norm's, ...) collect -> scale -> quantize;
 *                        the quantized layer's outputs become the next layer's input; the head last.
 * Memory: the float weights, X and one layer's statistics.
 *
 * Outputs the transformed float weights and the bytes of every tensor quantized here; the writer
 * (quantize.ts) writes the file from them, quantizing the remaining tensors as usual.
 */
import { fail } from '../errors.js';
import { rngStream } from '../rng.js';
import { awqSearchHessian, smoothQuantScales, type AwqLinear } from '../algos/awq.js';
import { blockCodecFor, type BlockCodec } from '../algos/block-codec.js';
import { finishHessian } from '../algos/gptq.js';
import { hessianCost } from '../alloc/cost.js';
import type { GptqWorkers } from './gptq-parts.js';
import { gemmABt, hessianAccumulator, type HessianAccumulator } from '../kernels/gptq.js';
import { MatmulEngine } from '../kernels/matmul.js';
import { foldNorms, hadamardRotation, isPowerOfTwo, rotateHeads, rotateResidual, type ResidualWiring, type WeightMap } from '../algos/hadamard.js';
import type { PtqOptions } from '../algos/ptq-options.js';
import type { Recipe } from '../algos/recipe.js';
import { klDivergenceRow, logSumExp, sqnrDb } from '../eval/metrics.js';
import { plainValue } from '../io/gguf.js';
import type { ModelFile } from '../io/model-file.js';
import { fromFloat32, toFloat32 } from '../io/tensor-data.js';
import { vocabFromGgufMetadata } from '../io/vocab.js';
import { familyOf, linearOf, storageOf, type FoldPair, residualWriters, type InputGroup, type LayerInput, type LinearRole, type ModelFamily } from '../model/family.js';
import { Llama, llamaConfigFromGguf, rmsnorm } from '../model/llama.js';
import { linear, matmul } from '../model/matmul.js';
import { Tokenizer } from '../model/tokenizer.js';
import type { LlamaConfig, StoredTensor } from '../model/types.js';
import { ggmlRoundsFloats } from '../quant/ggml/registry.js';
import { ggmlTypeByName, isGgmlFloat } from '../quant/ggml/types.js';
import { algorithmsOf, learnsLayer, needsHandler, roundWeight, scalesInputs, type AlgorithmSpec, type ExtraTensor, type InputStatistics } from './algorithms.js';
import type { QuantizePlan, TensorPlan } from './plan.js';
import { autoroundSchedule, BLOCK_TENSORS, BlockRunner, blockObjectiveRefusal, refineBlock, type BlockLinear } from './block-round.js';
import { omniquantLayer } from './omniquant.js';
import { learnRotation, rotationMatrix } from './spinquant.js';

export interface PtqInput {
  recipe: Recipe;
  options: PtqOptions;
  /** calibration text (needed by GPTQ, AWQ, SmoothQuant and imatrix-RTN) */
  calibText?: string;
  /** or calibration tokens directly (synthetic models without a vocabulary) */
  calibStream?: ArrayLike<number>;
  /** threads for the runtime's matmul and the X^T X accumulation (needs a thread starter, see lowbit/node) */
  threads?: number;
  /** threads that quantize row ranges of a weight with GPTQ (the bytes do not depend on them) */
  gptqWorkers?: GptqWorkers;
  onProgress?: (message: string) => void;
}

export interface PtqTensor {
  bytes: Uint8Array;
  sqnrDb: number;
  algorithm: string;
  /** tensors stored beside it (LoRC, EasyQuant outliers) */
  extras?: readonly ExtraTensor[];
}

export interface PtqOutput {
  /** every tensor as float after the equivalence transforms (rotation, AWQ/SmoothQuant scales) */
  floats: Map<string, Float32Array>;
  /** tensors quantized here, in their planned type's bytes */
  quantized: Map<string, PtqTensor>;
  /** new f32 tensors the transforms created (OS+: norm biases and the q/k/v/gate/up biases that undo the shift) */
  added?: Map<string, Float32Array>;
  /** what happened, for the report: rotation check, AWQ alphas, GPTQ times */
  notes: string[];
  /** max |logit difference| of the rotated float model against the original (with --rotate) */
  rotationMaxLogitDiff?: number;
  calibrationTokens?: number;
  seconds: number;
  /** seconds per phase of the layer loop: statistics pass (forward + X^T X), quantization, forward pass */
  phases?: { statistics: number; quantization: number; forward: number };
}

/** A weight as float32, row-major rows x cols. */
export interface FloatTensor {
  data: Float32Array;
  rows: number;
  cols: number;
}

/**
 * nSeq = floor(nTokens / ctx) windows of ctx tokens from the token stream, starting at seeded random
 * offsets (GPTQ's sampling of calibration segments); the first token of each window becomes BOS.
 */
export function calibrationWindows(stream: ArrayLike<number>, nTokens: number, ctx: number, seed: number, bos: number): Int32Array[] {
  const nSeq = Math.floor(nTokens / ctx);
  if (nSeq < 1) fail(`--calib-tokens ${nTokens} is less than one sequence of --calib-ctx ${ctx}`);
  if (stream.length < ctx + 1) fail(`the calibration text has ${stream.length} tokens, fewer than one sequence of ${ctx}`);
  const rand = rngStream('calibrationWindows', seed);
  const out: Int32Array[] = [];
  for (let s = 0; s < nSeq; s++) {
    const start = Math.floor(rand() * (stream.length - ctx));
    const w = Int32Array.from({ length: ctx }, (_, i) => stream[start + i]);
    w[0] = bos;
    out.push(w);
  }
  return out;
}

/**
 * Statistics of one linear layer input: H = 2 X^T X / N and, when `magnitudes` (AWQ, SmoothQuant),
 * mean |x| and max |x| per channel. With `keepInputs` (the sensitivity pass) and fewer tokens than
 * channels (or `always`), X itself is kept instead of H (N x k rather than k x k; `h` stays empty):
 * tr(ΔW H ΔWᵀ) = 2/N ‖X ΔWᵀ‖², the same number (`cost`).
 */
export class InputStats implements InputStatistics {
  h: Float64Array = new Float64Array(0);
  readonly sumAbs: Float64Array;
  readonly absMax: Float32Array;
  /** per channel minimum and maximum of x (OS+'s shift is their midpoint) */
  readonly min: Float32Array;
  readonly max: Float32Array;
  count = 0;
  private acc: HessianAccumulator | undefined;
  private x: Float32Array | undefined;
  private h32: Float32Array | undefined;
  constructor(readonly k: number, maxTok: number, private readonly engine?: MatmulEngine | null, readonly magnitudes = true, keepInputs?: { tokens: number; always?: boolean }) {
    // (X grows as rows come: an expert's matrix sees only the tokens routed to it, the pooled statistics of
    // experts more than `tokens` rows)
    if (keepInputs && (keepInputs.always || keepInputs.tokens < k)) this.x = new Float32Array(Math.min(keepInputs.tokens, 64) * k);
    else this.acc = hessianAccumulator(k, maxTok, engine);
    this.sumAbs = new Float64Array(k);
    this.absMax = new Float32Array(k);
    this.min = new Float32Array(k).fill(Infinity);
    this.max = new Float32Array(k).fill(-Infinity);
  }
  add(x: Float32Array, nTok: number): void {
    const k = this.k;
    if (this.x) {
      if ((this.count + nTok) * k > this.x.length) {
        const grown = new Float32Array(Math.max(2 * this.x.length, (this.count + nTok) * k));
        grown.set(this.x.subarray(0, this.count * k));
        this.x = grown;
      }
      this.x.set(x.subarray(0, nTok * k), this.count * k);
    }
    else this.acc!.add(x, nTok);
    this.count += nTok;
    if (!this.magnitudes) return;
    for (let t = 0; t < nTok; t++)
      for (let j = 0; j < k; j++) {
        const v = x[t * k + j];
        const a = Math.abs(v);
        this.sumAbs[j] += a;
        if (a > this.absMax[j]) this.absMax[j] = a;
        if (v < this.min[j]) this.min[j] = v;
        if (v > this.max[j]) this.max[j] = v;
      }
  }
  finish(): void {
    if (this.x && this.engine) {
      // X moves into kernel memory once (when it is shared): the cost products then take it in place
      const slot = this.engine.allocF32(this.count * this.k, this);
      if (slot) {
        slot.array.set(this.x.subarray(0, this.count * this.k));
        this.x = slot.array;
      }
    }
    if (!this.acc) return;
    this.h = this.acc.result();
    this.acc = undefined;
    finishHessian(this.h, this.k, this.count);
  }
  /** tr(ΔW H ΔWᵀ) for ΔW of m rows (row-major m x k): the layer's output error energy on the calibration inputs */
  cost(delta: Float32Array, m: number): number {
    if (!this.x) return hessianCost(delta, m, this.k, (this.h32 ??= Float32Array.from(this.h)));
    return this.rowCosts(delta, m).reduce((a, b) => a + b, 0);
  }
  /**
   * δ_r H δ_rᵀ for each row r of ΔW (m rows): the costs of several candidates' rows in one product (the
   * sensitivity pass stacks every candidate type's error rows of a tensor)
   */
  rowCosts(delta: Float32Array, m: number): Float64Array {
    const k = this.k;
    const out = new Float64Array(m);
    if (!this.x) {
      const h = (this.h32 ??= Float32Array.from(this.h));
      const panel = Math.max(1, Math.min(m, Math.floor((1 << 22) / k)));
      const dh = new Float32Array(panel * k);
      for (let r0 = 0; r0 < m; r0 += panel) {
        const n = Math.min(panel, m - r0);
        const d = delta.subarray(r0 * k, (r0 + n) * k);
        gemmABt(dh, d, h, n, k, k); // (ΔW H)[r, j], H symmetric
        for (let r = 0; r < n; r++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += d[r * k + j] * dh[r * k + j];
          out[r0 + r] = s;
        }
      }
      return out;
    }
    const n = this.count;
    const panel = Math.max(1, Math.min(m, Math.floor((1 << 22) / Math.max(1, n))));
    const y = new Float32Array(panel * n);
    for (let r0 = 0; r0 < m; r0 += panel) {
      const p = Math.min(panel, m - r0);
      matmul(y, delta.subarray(r0 * k, (r0 + p) * k), this.x, p, k, n); // (p x N) = ΔW Xᵀ, X the weights (in place when in kernel memory)
      for (let r = 0; r < p; r++) {
        let s = 0;
        for (let t = 0; t < n; t++) s += y[r * n + t] * y[r * n + t];
        out[r0 + r] = (2 * s) / Math.max(1, n);
      }
    }
    return out;
  }
  meanAbs(): Float64Array {
    return this.sumAbs.map((s) => s / Math.max(1, this.count));
  }
  diag(): Float32Array {
    const k = this.k;
    if (!this.x) return Float32Array.from({ length: k }, (_, i) => this.h[i * k + i]);
    const d = new Float32Array(k);
    for (let t = 0; t < this.count; t++) for (let j = 0; j < k; j++) d[j] += this.x[t * k + j] * this.x[t * k + j];
    for (let j = 0; j < k; j++) d[j] *= 2 / Math.max(1, this.count);
    return d;
  }
  /** the input becomes x / s (a fold of s into the previous op) */
  divideInput(s: Float32Array): void {
    const k = this.k;
    for (let i = 0; i < k; i++) {
      this.sumAbs[i] /= s[i];
      this.absMax[i] /= s[i];
      this.min[i] /= s[i];
      this.max[i] /= s[i];
      for (let j = 0; j < k; j++) this.h[i * k + j] /= s[i] * s[j];
    }
  }
}

/**
 * The input statistics of every expert's matrix of a 3-D tensor (each expert sees only the rows routed
 * to it) and of all experts pooled. An expert that saw fewer than `minTokens` rows (max(16, k/8): its
 * Hessian would be far from full rank) is calibrated with the pooled statistics instead -- the inputs
 * of its peers, the closest estimate of what it will see -- and listed in `fallbacks` (the report says so).
 */
export class ExpertStats {
  readonly minTokens: number;
  readonly fallbacks: number[] = [];
  constructor(readonly tensor: string, readonly perExpert: InputStats[], readonly pooled: InputStats) {
    this.minTokens = Math.max(16, Math.ceil(pooled.k / 8));
  }
  finish(): void {
    for (const st of this.perExpert) st.finish();
    this.pooled.finish();
    this.perExpert.forEach((st, e) => st.count < this.minTokens && this.fallbacks.push(e));
  }
  /** the statistics expert e is calibrated with */
  pick(e: number): InputStats {
    return this.perExpert[e].count < this.minTokens ? this.pooled : this.perExpert[e];
  }
  divideInput(s: Float32Array): void {
    for (const st of this.perExpert) st.divideInput(s);
    this.pooled.divideInput(s);
  }
}

/** expert e's matrix of a 3-D tensor (nExp matrices stacked by rows): a view */
export function expertView(t: FloatTensor, e: number, nExp: number): FloatTensor {
  const rows = t.rows / nExp;
  return { data: t.data.subarray(e * rows * t.cols, (e + 1) * rows * t.cols), rows, cols: t.cols };
}

/** is a planned tensor quantized (not a float target)? */
export const isQuantized = (p: TensorPlan) => p.scheme !== undefined || (p.ggml !== undefined && !isGgmlFloat(p.ggml));

/** the codec a planned tensor is quantized with, or undefined for a float target */
export function codecOf(p: TensorPlan): BlockCodec | undefined {
  if (p.scheme) return blockCodecFor(p.scheme, p.ne[0]);
  if (p.ggml && !isGgmlFloat(p.ggml)) return blockCodecFor(p.ggml.name, p.ne[0]);
  return undefined;
}

const shapeOf = (m: ModelFile, name: string): number[] => {
  const t = m.tensor(name);
  return t.ne ? [...t.ne] : [...t.shape].reverse();
};

/** Stage: every tensor of the model as float32 (fresh arrays: transforms and quantizers write into them); `skip`: names left out (read later by readWeight) */
export async function loadWeights(m: ModelFile, skip?: ReadonlySet<string>): Promise<Map<string, FloatTensor>> {
  const weights = new Map<string, FloatTensor>();
  for (const t of m.tensors) if (!skip?.has(t.name)) weights.set(t.name, await readWeight(m, t.name));
  return weights;
}

/** one tensor of the model as float32 (a fresh array) */
async function readWeight(m: ModelFile, name: string): Promise<FloatTensor> {
  const ne = shapeOf(m, name);
  return { data: await m.readFloat32(m.tensor(name)), rows: ne.slice(1).reduce((a, b) => a * b, 1), cols: ne[0] };
}

let layerByLayer = true;

/** Load the whole f32 model first even where the layer pass could read it layer by layer (tests compare the two). */
export function setLayerByLayerLoading(on: boolean): void {
  layerByLayer = on;
}

/**
 * The layers' matrices the layer pass may read one layer at a time (read when the pass reaches their
 * layer, let go when it has rounded them): when every quantized tensor's algorithms are GPTQ or RTN and
 * nothing transforms across layers (no rotation, SmoothQuant, OS+ shift, experts or fused tensors).
 * Empty otherwise: the whole f32 model is loaded first.
 */
function layerByLayerNames(m: ModelFile, plan: QuantizePlan, o: PtqOptions, algorithmsFor: (name: string) => readonly AlgorithmSpec[]): Set<string> {
  if (!layerByLayer) return new Set();
  const names = m.tensors.map((t) => t.name);
  const across = o.rotate !== 'none' || o.shift || o.smooth > 0 || names.some((n) => /_exps\.weight$|\.attn_qkv\.weight$/.test(n) || (/\.ffn_up\.weight$/.test(n) && !names.includes(n.replace('ffn_up', 'ffn_gate'))));
  const simple = plan.tensors.every((p) => !isQuantized(p) || algorithmsFor(p.name).every((a) => a.name === 'gptq' || a.name === 'rtn'));
  if (across || !simple) return new Set();
  return new Set(m.tensors.filter((t) => /^blk\.\d+\./.test(t.name) && shapeOf(m, t.name).length >= 2 && m.tensor(t.name).nElements > 0).map((t) => t.name));
}

/** The residual-stream wiring of a family (the rotation's view of model/family.ts). */
export function residualWiring(f: ModelFamily, nLayers: number): ResidualWiring {
  const w = (r: LinearRole) => `${linearOf(f, r).gguf}.weight`;
  return {
    nLayers,
    normGroups: f.inputGroups.filter((g) => g.norm).map((g) => ({ norm: `${g.norm}.weight`, linears: g.linears.map(w) })),
    writers: residualWriters(f).map(w),
    values: w('v'),
    output: w('o'),
  };
}

/**
 * Stage: rotate the model (QuaRot-style, folded into the weights) and check computational invariance:
 * the rotated float model computes the original's logits on `probe` (bound 1e-3 x (1 + max |logit|)).
 */
export function rotateModel(weights: Map<string, FloatTensor>, config: LlamaConfig, family: ModelFamily, o: PtqOptions, stored: () => StoredTensor[], probe: Int32Array, learn?: (r0: Float64Array) => { matrix: Float64Array }): { maxDiff: number; note: string } {
  if (!weights.has('output.weight')) fail(`--rotate ${o.rotate}: the model ties its output to token_embd; untie it first (not supported yet)`);
  if (!isPowerOfTwo(config.dim)) fail(`--rotate ${o.rotate}: the residual width ${config.dim} is not a power of two (only 2^n Hadamard matrices are built)`);
  const wmap: WeightMap = { get: (n) => weights.get(n), set: (n, t) => void weights.set(n, t) };
  const wiring = residualWiring(family, config.nLayers);
  const before = new Llama(config, stored(), { contextLength: probe.length });
  const a = Float32Array.from(before.forward(probe, 0, 0));
  foldNorms(wmap, wiring);
  const heads = () => {
    if (!o.rotateHeads) return;
    if (!isPowerOfTwo(config.headDim)) fail(`--rotate-heads: the head size ${config.headDim} is not a power of two`);
    rotateHeads(wmap, wiring, hadamardRotation(config.headDim, o.seed + 1), config.nHeads, config.nKvHeads);
  };
  const h = hadamardRotation(config.dim, o.seed);
  if (learn) {
    // the heads first (W_v rows, W_o columns; they commute with the residual rotation): the learned R1 sees the quantized model as it will be
    heads();
    rotateResidual(wmap, wiring, { n: config.dim, signs: h.signs, matrix: learn(rotationMatrix(h)).matrix });
  } else {
    rotateResidual(wmap, wiring, h);
    heads();
  }
  const after = new Llama(config, stored(), { contextLength: probe.length });
  const b = after.forward(probe, 0, 0);
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    maxAbs = Math.max(maxAbs, Math.abs(a[i]));
  }
  if (!(maxDiff <= 1e-3 * (1 + maxAbs))) fail(`internal error: the rotated model's logits differ by ${maxDiff} from the original's`);
  return { maxDiff, note: `rotation: max |logit difference| of the rotated float model = ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(2)}, ${probe.length} tokens)` };
}

/** Does a plan need the layer-by-layer calibration driver, and does it need calibration text? */
export function calibrationNeeds(plan: QuantizePlan, options: PtqOptions, hasCalib: boolean): { layerPass: boolean; needsText: boolean; algorithms: string[]; tensorPass: boolean } {
  const algorithms = new Set<string>();
  let needsText = options.smooth > 0 || options.shift;
  if (options.shift) algorithms.add('Outlier Suppression+ (--shift)');
  let tensorPass = false;
  for (const p of plan.tensors) {
    if (!isQuantized(p)) continue;
    const list = algorithmsOf(plan.recipe, p.name);
    for (const a of list) if (a.needsCalibration) {
      needsText = true;
      algorithms.add(a.name);
    }
    if (needsHandler(list, options)) tensorPass = true;
  }
  const hasRtn = plan.tensors.some((p) => isQuantized(p) && algorithmsOf(plan.recipe, p.name).every((a) => a.name === 'rtn'));
  return { layerPass: needsText || (hasCalib && hasRtn), needsText, algorithms: [...algorithms], tensorPass };
}

/** the per-sequence buffers a stage's output is kept in between the stages of a layer */
const stageWidth = (c: LlamaConfig, input: LayerInput) => (input === 'attention' ? c.nHeads * c.headDim : input === 'ffn' ? c.hiddenDim : c.dim);

export async function runPtq(m: ModelFile, plan: QuantizePlan, input: PtqInput): Promise<PtqOutput> {
  const t0 = performance.now();
  let o = input.options;
  const say = input.onProgress ?? (() => {});
  const notes: string[] = [];
  const planOf = new Map(plan.tensors.map((p) => [p.name, p]));
  const algorithmsFor = (name: string) => algorithmsOf(input.recipe, name);

  if (!m.gguf) fail(`calibrated quantization needs a GGUF input (convert first: lowbit convert ${m.name} model.gguf)`);
  const hasCalib = input.calibText !== undefined || input.calibStream !== undefined;
  const needs = calibrationNeeds(plan, o, hasCalib);
  const needsCalibration = needs.layerPass;
  // the layers' matrices read one layer at a time where the pass allows it (peak memory: one layer's f32, not the model's)
  const lazy = needsCalibration ? layerByLayerNames(m, plan, o, algorithmsFor) : new Set<string>();
  const weights = await loadWeights(m, lazy);
  const metadata = new Map<string, unknown>([...m.gguf.metadata].map(([k, v]) => [k, plainValue(v)]));
  const f32 = ggmlTypeByName('F32')!;
  // a matrix not read yet (or let go) stands in the runtime as zeros of its size: the layer pass never reads it (LayerCalibration.notLoaded)
  const zeros = new Uint8Array(Math.max(0, ...[...lazy].map((n) => 4 * m.tensor(n).nElements)));
  const inFile = new Set(m.tensors.map((t) => t.name));
  const stored = (): StoredTensor[] =>
    [...inFile, ...[...weights.keys()].filter((n) => !inFile.has(n))].map((name) => {
      const t = weights.get(name);
      return { name, type: f32, dims: shapeOf(m, name), data: t ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : zeros.subarray(0, 4 * m.tensor(name).nElements) };
    });
  const config: LlamaConfig = llamaConfigFromGguf(metadata, stored());
  // the family's wiring (model/family.ts)
  const archName = config.arch ?? String(metadata.get('general.architecture'));
  const family = familyOf(archName, config.nExperts !== undefined);
  const nLayers = config.nLayers;
  // ---- what this pipeline covers per family ----------------------------------------------------------
  const names = inFile;
  const fused = [...names].find((n) => /\.attn_qkv\.weight$/.test(n) || (/\.ffn_up\.weight$/.test(n) && !names.has(n.replace('ffn_up', 'ffn_gate'))));
  if (o.rotate !== 'none') {
    // rotating the residual stream must leave the function unchanged: refuse where it would not
    if (config.nExperts) fail(`--rotate ${o.rotate}: ${archName} is a mixture of experts; the rotation does not cover its router and experts (not function-preserving here)`);
    if (fused) fail(`--rotate ${o.rotate}: ${archName} stores fused ${fused.split('.')[2]}; the rotation does not cover fused tensors (not function-preserving here)`);
    if (config.arch === 'gemma2' || config.arch === 'gemma3')
      fail(`--rotate ${o.rotate}: ${archName}'s post-attention and post-FFN RMSNorms scale the residual update per channel after normalizing it, so a rotation of the residual stream cannot be folded into the weights (not function-preserving)`);
  }

  // ---- tokens ------------------------------------------------------------------------------------
  let windows: Int32Array[] = [];
  const ctx = Math.min(o.calibCtx, config.seqLen);
  if (input.calibStream) windows = calibrationWindows(input.calibStream, o.calibTokens, ctx, o.seed, Number(metadata.get('tokenizer.ggml.bos_token_id') ?? 1));
  else if (needsCalibration || o.rotate === 'learned' || (o.rotate === 'hadamard' && input.calibText)) {
    if (o.rotate === 'learned' && input.calibText === undefined) fail('--rotate learned needs calibration text: --calib FILE (or { calibText } in quantize())');
    if (input.calibText === undefined) fail(`${needs.algorithms.join('/') || 'SmoothQuant'} needs calibration text: --calib FILE (or { calibText } in quantize())`);
    if (metadata.get('tokenizer.ggml.tokens') === undefined) fail(`${m.name} carries no vocabulary to tokenize the calibration text`);
    const tok = new Tokenizer(vocabFromGgufMetadata(metadata));
    const stream = tok.encode(input.calibText, { bos: false });
    windows = calibrationWindows(stream, o.calibTokens, ctx, o.seed, tok.vocab.bos);
  }

  // ---- rotation ----------------------------------------------------------------------------------
  let rotationMaxLogitDiff: number | undefined;
  if (o.rotate !== 'none') {
    const probe = windows[0]?.subarray(0, Math.min(64, ctx)) ?? Int32Array.from({ length: Math.min(64, config.seqLen) }, (_, i) => (i * 7919 + 1) % config.vocabSize);
    const learn = o.rotate === 'learned' ? (r0: Float64Array) => {
      const r = learnRotation(config, weights, (n) => { const p = planOf.get(n); return p && codecOf(p); }, r0, windows, { iters: o.rotateIters, lr: o.rotateLr, batch: o.rotateBatch, seed: o.seed, threads: input.threads });
      notes.push(`rotation learned (SpinQuant R1, ${o.rotateIters} Cayley SGD steps): quantized model KL on the calibration windows ${r.lossStart.toExponential(3)} (Hadamard) -> ${r.loss.toExponential(3)} (step ${r.step}, ${r.seconds.toFixed(1)} s)`);
      return r;
    } : undefined;
    const r = rotateModel(weights, config, family, o, stored, probe, learn);
    rotationMaxLogitDiff = r.maxDiff;
    notes.push(r.note);
  }

  const quantized = new Map<string, PtqTensor>();
  const floats = new Map([...weights].map(([n, t]) => [n, t.data]));
  // AutoRound on the block output: the float model's residual stream beside the quantized one
  const block = needsCalibration ? blockObjective(plan, input.recipe, o, config, [...names], notes) : undefined;
  const blockAutoround = !!block && o.autoroundObjective === 'block';
  if (!blockAutoround && o.autoroundObjective === 'block') o = { ...o, autoroundObjective: 'linear' };
  /** round a weight with its algorithms; the runtime (and later layers) then see the quantized values */
  const quantizeWeight = async (name: string, stats: InputStats | undefined): Promise<void> => {
    const p = planOf.get(name);
    const t = weights.get(name);
    if (!p || !t) fail(`model has no tensor ${name}`);
    const codec = codecOf(p);
    if (!codec) return roundFloat(name);
    if (blockAutoround && name.startsWith('blk.') && algorithmsFor(name).at(-1)?.name === 'autoround') block.before.set(name, Float32Array.from(t.data)); // the float its start was rounded from
    const r = await roundWeight(algorithmsFor(name), { name, codec, w: t.data, rows: t.rows, cols: t.cols, scheme: p.scheme, ggmlType: p.ggml?.name, stats, options: o, gptqWorkers: input.gptqWorkers });
    quantized.set(name, { bytes: r.bytes, sqnrDb: sqnrDb(t.data, r.q), algorithm: r.label, ...(r.extras ? { extras: r.extras } : {}) });
    t.data.set(r.q);
  };
  /** float targets: round to the stored float type so later layers see what the file holds */
  const roundFloat = (name: string) => {
    const p = planOf.get(name);
    const t = weights.get(name)!;
    if (p && ggmlRoundsFloats(p.to)) {
      floats.set(name, Float32Array.from(t.data)); // the file gets (and its report measures) the float values
      t.data.set(toFloat32(p.to, fromFloat32(p.to, t.data)));
    }
  };

  // ---- calibration-free algorithms (per tensor) --------------------------------------------------
  if (!needsCalibration) {
    for (const p of plan.tensors) if (needsHandler(algorithmsFor(p.name), o) && codecOf(p)) await quantizeWeight(p.name, undefined);
    return { floats, quantized, notes, rotationMaxLogitDiff, seconds: (performance.now() - t0) / 1000 };
  }

  // ---- layer by layer ----------------------------------------------------------------------------
  if (o.shift && (config.nExperts || fused)) fail(`--shift: ${archName}'s ${config.nExperts ? 'experts' : 'fused tensors'} are not covered by the Outlier Suppression+ fold (not function-preserving here)`);
  const added = new Map<string, Float32Array>();
  const lc = new LayerCalibration(config, family, weights, stored(), windows, ctx, input.threads, o.smooth > 0 || o.shift || plan.tensors.some((p) => scalesInputs(algorithmsFor(p.name))));
  lc.notLoaded = new Set(lazy);
  say(`calibration: ${windows.length} sequences of ${ctx} tokens`);
  // token embeddings: no calibration (a lookup, not a product); quantized first so layer 0 sees them
  const embFp = block ? Float32Array.from(weights.get('token_embd.weight')!.data) : undefined;
  await quantizeWeight('token_embd.weight', undefined);
  lc.embed();
  let xFp: Float32Array | undefined;
  if (block) {
    xFp = new Float32Array(lc.X.length);
    windows.forEach((w, s) => w.forEach((tok, i) => xFp!.set(embFp!.subarray(tok * config.dim, (tok + 1) * config.dim), (s * ctx + i) * config.dim)));
    block.runner = new BlockRunner(config, ctx, input.threads);
  }
  const nExp = config.nExperts ?? 0;
  const expertNotes: string[] = [];
  /** round each expert's matrix of a 3-D tensor with its own input statistics (experts.pick decides the fallback) */
  const quantizeExperts = async (tensor: string, ex: ExpertStats): Promise<void> => {
    const p = planOf.get(tensor);
    const t = weights.get(tensor);
    if (!p || !t) fail(`model has no tensor ${tensor}`);
    const codec = codecOf(p);
    if (!codec) return roundFloat(tensor);
    const parts: Uint8Array[] = [];
    const original = Float32Array.from(t.data);
    let label = '';
    for (let e = 0; e < nExp; e++) {
      const v = expertView(t, e, nExp);
      const r = await roundWeight(algorithmsFor(tensor), { name: tensor, codec, w: v.data, rows: v.rows, cols: v.cols, scheme: p.scheme, ggmlType: p.ggml?.name, stats: ex.pick(e), options: o, gptqWorkers: input.gptqWorkers });
      parts.push(r.bytes);
      v.data.set(r.q);
      label = r.label;
    }
    const bytes = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
    parts.reduce((at, b) => (bytes.set(b, at), at + b.length), 0);
    quantized.set(tensor, { bytes, sqnrDb: sqnrDb(original, t.data), algorithm: label });
  };

  /** AutoRound on layer l's output: relearn the rounding of its AutoRound linears; false when none */
  const refineLayer = (l: number, xIn: Float32Array, target: Float32Array): boolean => {
    const runner = block!.runner!;
    const full = (n: string) => `blk.${l}.${n}.weight`;
    const specs: BlockLinear[] = [];
    for (const n of BLOCK_TENSORS) {
      const list = algorithmsFor(full(n));
      const q = quantized.get(full(n));
      if (!q || list[list.length - 1]?.name !== 'autoround') continue;
      const t = weights.get(full(n))!;
      specs.push({ name: n, codec: codecOf(planOf.get(full(n))!)!, w: block!.before.get(full(n))!, start: { bytes: q.bytes, q: Float32Array.from(t.data) } });
    }
    if (!specs.length) return false;
    runner.unlearn();
    runner.load((n) => weights.get(full(n))!.data);
    const r = refineBlock(runner, specs, xIn, target, { ...autoroundSchedule(o, 'block'), batch: o.autoroundBatch, seed: o.seed + l });
    for (const sp of specs) {
      const x = r.linears.get(sp.name)!;
      const q = quantized.get(full(sp.name))!;
      quantized.set(full(sp.name), { ...q, bytes: x.bytes, sqnrDb: sqnrDb(sp.w, x.q), algorithm: `${q.algorithm} (block)` });
      weights.get(full(sp.name))!.data.set(x.q);
      block!.before.delete(full(sp.name));
    }
    notes.push(`layer ${l} AutoRound block output error ${r.lossStart.toExponential(3)} -> ${r.loss.toExponential(3)} (${r.pick}, ${specs.length} linears, ${r.seconds.toFixed(1)} s)`);
    return true;
  };

  /**
   * OmniQuant on layer l (its linears' algorithms learn whole layers): the equivalent transforms and
   * clip ratios learned on the layer's output and folded (pipeline/omniquant.ts); with '+autoround'
   * the rounding is then learned on the same objective from that start. False when layer l's linears
   * do not use OmniQuant.
   */
  const omniLayer = async (l: number, xIn: Float32Array, target: Float32Array): Promise<boolean> => {
    const full = (n: string) => `blk.${l}.${n}.weight`;
    const lins = BLOCK_TENSORS.filter((n) => !n.endsWith('_norm'));
    const uses = lins.filter((n) => learnsLayer(algorithmsFor(full(n))));
    if (!uses.length) return false;
    const quantizedLins = lins.filter((n) => codecOf(planOf.get(full(n))!));
    const other = quantizedLins.find((n) => !uses.includes(n));
    if (other) fail(`OmniQuant learns whole layers: ${full(other)} has another algorithm (${algorithmsFor(full(other)).map((a) => a.name).join('+')}) than the rest of layer ${l}`);
    const runner = block!.runner!;
    const codecs = new Map(quantizedLins.map((n) => [n, codecOf(planOf.get(full(n))!)!] as const));
    const r = await lc.timed('quantization', async () => omniquantLayer(runner, (n) => weights.get(full(n))!.data, codecs, xIn, target, { iters: o.omniquantIters, lr: o.omniquantLr, batch: o.omniquantBatch, seed: o.seed + l, let: o.omniquantLet, clip: true }));
    for (const [n, v] of r.floats) weights.get(full(n))!.data.set(v); // the transforms folded: the float layer is unchanged
    notes.push(`layer ${l} OmniQuant block output error ${r.lossStart.toExponential(3)} -> ${r.loss.toExponential(3)} (${r.pick}; scales ${r.scaleRange[0].toFixed(3)}..${r.scaleRange[1].toFixed(3)}, mean clip ratio ${r.alphaMean.toFixed(3)}; ${r.seconds.toFixed(1)} s)`);
    let linears = r.linears;
    let label = 'omniquant';
    const list = algorithmsFor(full(quantizedLins[0] ?? lins[0])).map((a) => a.name);
    const last = list.at(-1);
    if (list.includes('gptq')) {
      // omniquant+gptq: the learned transforms stay folded, GPTQ (and what follows it) rounds the layer as usual
      for (const g of family.inputGroups) if (g.norm) lc.runtimeNorm(l, g.input).set(weights.get(`blk.${l}.${g.norm}.weight`)!.data);
      return false;
    }
    if (last === 'autoround' && linears.size) {
      const specs: BlockLinear[] = [...linears].map(([n, x]) => ({ name: n, codec: codecs.get(n)!, w: r.floats.get(n)!, start: x }));
      const rb = await lc.timed('quantization', async () => refineBlock(runner, specs, xIn, target, { ...autoroundSchedule(o, 'block'), batch: o.autoroundBatch, seed: o.seed + l }));
      notes.push(`layer ${l} AutoRound (from OmniQuant) block output error ${rb.lossStart.toExponential(3)} -> ${rb.loss.toExponential(3)} (${rb.pick}, ${rb.seconds.toFixed(1)} s)`);
      linears = rb.linears as typeof linears;
      label = 'omniquant+autoround';
    }
    for (const n of lins) {
      const x = linears.get(n);
      if (!x) {
        roundFloat(full(n));
        continue;
      }
      quantized.set(full(n), { bytes: x.bytes, sqnrDb: sqnrDb(r.floats.get(n)!, x.q), algorithm: `${label} (block)` });
      weights.get(full(n))!.data.set(x.q);
    }
    for (const g of family.inputGroups)
      if (g.norm) {
        roundFloat(`blk.${l}.${g.norm}.weight`);
        lc.runtimeNorm(l, g.input).set(weights.get(`blk.${l}.${g.norm}.weight`)!.data);
      }
    return true;
  };

  try {
    for (let l = 0; l < nLayers; l++) {
      const tl = performance.now();
      const P = `blk.${l}.`;
      const layerLazy = [...lazy].filter((n) => n.startsWith(P));
      for (const n of layerLazy) {
        const t = await readWeight(m, n);
        weights.set(n, t);
        floats.set(n, t.data);
        lc.notLoaded.delete(n);
      }
      // block objective: this layer's quantized-model input and the float layer's output on the float input
      let blockIn: Float32Array | undefined;
      let blockTarget: Float32Array | undefined;
      if (block?.runner && xFp) {
        blockIn = Float32Array.from(lc.X);
        const runner = block.runner;
        lc.timed('forward', () => {
          runner.load((n) => weights.get(`${P}${n}.weight`)!.data);
          runner.unlearn();
          blockTarget = runner.outputs(xFp!);
        });
        xFp = blockTarget;
      }
      if (block?.runner && blockIn && blockTarget && (await omniLayer(l, blockIn, blockTarget))) {
        lc.rerunLayer(l, blockIn);
        say(`layer ${l + 1}/${nLayers} (${((performance.now() - tl) / 1000).toFixed(1)} s)`);
        continue;
      }
      const name = (r: LinearRole) => `${P}${linearOf(family, r).gguf}.weight`;
      const perExpert = (r: LinearRole) => linearOf(family, r).perExpert === true;
      const lists = new Map(family.linears.map((s) => [s.role, algorithmsFor(name(s.role))] as [LinearRole, readonly AlgorithmSpec[]]));
      const quantizable = (roles: readonly LinearRole[]) => roles.every((r) => codecOf(planOf.get(name(r))!));
      // the router stays float in llama.cpp's recipes: it takes a group's scales exactly and joins AWQ's search only when quantized
      const searched = (roles: readonly LinearRole[]) => roles.filter((r) => r !== 'router' || quantizable([r]));
      const usesAwq = (roles: readonly LinearRole[]) => searched(roles).some((r) => scalesInputs(lists.get(r)!)) && quantizable(searched(roles));
      /** a fold pair's producer: its storage tensor (Phi-3: the fused one) and its rows there */
      const producerOf = (fp: FoldPair) => storageOf(family, fp.producer, config);
      const experts = new Map<LayerInput, ExpertStats>();
      const quantizeGroup = (roles: readonly LinearRole[], st: InputStats, input: LayerInput) =>
        lc.timed('quantization', () => (async () => { for (const r of roles) await (perExpert(r) ? quantizeExperts(name(r), experts.get(input)!) : quantizeWeight(name(r), st)); })());
      const alphas: string[] = [];
      const statsOfGroup = new Map<InputGroup, InputStats>();
      // a producer whose rows take the AWQ scales of its consumer's input is rounded after that fold
      const deferred = new Set(family.foldPairs.filter((fp) => usesAwq([fp.consumer]) && quantizable([producerOf(fp).spec.role])).map((fp) => producerOf(fp).spec.role));
      /** statistics of a group's input: all tokens, and for a group of experts each expert's own rows */
      const collect = (g: InputGroup): InputStats => {
        const expertRole = g.linears.find(perExpert);
        if (!expertRole) return lc.collectHessians(l, g.input);
        const ex = lc.collectExpertStats(l, name(expertRole));
        experts.set(g.input, ex);
        return g.norm ? lc.collectHessians(l, g.input) : ex.pooled;
      };

      for (const g of family.inputGroups) {
        // the residual writers of the previous groups have written: the input of a norm group is ready
        if (g.norm) lc.addPendingResiduals();
        let st = collect(g);
        statsOfGroup.set(g, st);
        const normName = g.norm;
        if (normName) {
          const runtimeNorm = lc.runtimeNorm(l, g.input);
          const norm = `${P}${normName}.weight`;
          const ex = experts.get(g.input);
          const fold = (sc: Float32Array) => {
            lc.fold(sc, st, g.linears.map(name), { norm: weights.get(norm)!.data, runtimeNorm });
            ex?.divideInput(sc);
          };
          if (o.shift) {
            lc.timed('quantization', () => shiftGroup(lc, l, g, st, name, norm, runtimeNorm, o.smooth > 0 ? o.smooth : 0.5, weights, added));
            st = collect(g); // the statistics of the shifted, scaled input
            statsOfGroup.set(g, st);
          }
          lc.timed('quantization', () => {
            if (o.smooth > 0 && !o.shift) fold(smoothQuantScales(st.absMax, g.linears.map((r) => ({ w: lc.linear(name(r)).data, n: lc.linear(name(r)).rows })), o.smooth));
            if (usesAwq(g.linears)) {
              // experts: each matrix's error weighted by its own Hessian and its share of the tokens
              const lins = searched(g.linears).flatMap((r) => (perExpert(r) ? lc.expertAwqLinears(name(r), planOf, ex!) : lc.awqLinears([name(r)], planOf)));
              const r = awqSearchHessian(st.meanAbs(), st.h, st.k, lins, o.awqGrid);
              fold(r.scales);
              alphas.push(`${normName.split('_')[0]} ${r.alpha.toFixed(2)}`);
            }
          });
        }
        // fold pairs ending in this group (v -> o, up -> down, per expert): AWQ's scales of the consumer's
        // input move into the producer's rows (a row range of a fused tensor, with its bias); the
        // producer is rounded then, and the stage rerun with it
        for (const fp of family.foldPairs.filter((x) => g.linears.includes(x.consumer) && deferred.has(producerOf(x).spec.role))) {
          const prod = producerOf(fp);
          const producerGroup = family.inputGroups.find((x) => x.linears.includes(prod.spec.role))!;
          lc.timed('quantization', () => {
            const consumer = lc.linear(name(fp.consumer));
            const producer = lc.linear(name(prod.spec.role));
            const rowsOf = (t: FloatTensor) => (prod.rows === undefined ? t : { data: t.data.subarray(prod.r0 * t.cols, (prod.r0 + prod.rows) * t.cols), rows: prod.rows, cols: t.cols });
            if (perExpert(fp.consumer)) {
              const ex = experts.get(g.input)!;
              const a: number[] = [];
              for (let e = 0; e < nExp; e++) {
                if (ex.perExpert[e].count === 0) continue; // no token reached it: nothing to weigh the scales by
                a.push(lc.awqFoldPair(fp.channels, ex.perExpert[e], expertView(consumer, e, nExp), rowsOf(expertView(producer, e, nExp)), planOf.get(name(fp.consumer))!, o.awqGrid).alpha);
              }
              alphas.push(`${fp.producer}>${fp.consumer} mean ${(a.reduce((x, y) => x + y, 0) / Math.max(1, a.length)).toFixed(2)} (${a.length} experts)`);
            } else {
              const bias = prod.rows === undefined ? lc.biasOf(l, prod.spec.gguf) : [];
              alphas.push(`${fp.producer}>${fp.consumer} ${lc.awqFoldPair(fp.channels, st, consumer, rowsOf(producer), planOf.get(name(fp.consumer))!, o.awqGrid, bias).alpha.toFixed(2)}`);
            }
          });
          await quantizeGroup([prod.spec.role], statsOfGroup.get(producerGroup)!, producerGroup.input);
          st = collect(g); // again, with the quantized producer
        }
        await quantizeGroup(g.linears.filter((r) => !deferred.has(r)), st, g.input);
        if (!g.norm) lc.pendResidual(g.input, g.linears.map(name), g.linears.some(perExpert));
      }
      for (const ex of experts.values()) if (ex.fallbacks.length) expertNotes.push(`layer ${l} ${ex.tensor.split('.')[2]}: experts [${ex.fallbacks.join(', ')}] saw fewer than ${ex.minTokens} tokens: calibrated with all experts' inputs pooled`);
      if (alphas.length) notes.push(`layer ${l} AWQ alpha: ${alphas.join(', ')}`);
      for (const g of family.inputGroups)
        if (g.norm) {
          roundFloat(`${P}${g.norm}.weight`);
          lc.runtimeNorm(l, g.input).set(weights.get(`${P}${g.norm}.weight`)!.data);
        }
      const learned = block && blockIn && blockTarget ? await lc.timed('quantization', async () => refineLayer(l, blockIn!, blockTarget!)) : false;
      // X += the last writers' outputs: the next layer's input (or the whole layer again, its weights relearned)
      if (learned) lc.rerunLayer(l, blockIn!);
      else lc.addPendingResiduals();
      // the layer's matrices are rounded (their bytes are kept) and applied: let their f32 go
      for (const n of layerLazy)
        if (quantized.has(n)) {
          weights.delete(n);
          floats.delete(n);
          lc.notLoaded.add(n);
        }
      say(`layer ${l + 1}/${nLayers} (${((performance.now() - tl) / 1000).toFixed(1)} s)`);
    }
  } finally {
    block?.runner?.close(); // the block runner's worker threads
  }
  notes.push(...expertNotes);

  // output head: input = final RMSNorm of X
  if (weights.has('output.weight')) await quantizeWeight('output.weight', lc.collectHeadHessian());
  return { floats, quantized, ...(added.size ? { added } : {}), notes, rotationMaxLogitDiff, calibrationTokens: windows.length * ctx, seconds: (performance.now() - t0) / 1000, phases: lc.phases };
}

/**
 * The block objective's state when AutoRound's objective is 'block' and some tensor's algorithms end
 * with autoround; undefined (with a note) where the training engine cannot run the model's layers.
 */
function blockObjective(plan: QuantizePlan, recipe: Recipe, o: PtqOptions, config: LlamaConfig, names: string[], notes: string[]): { before: Map<string, Float32Array>; runner?: BlockRunner } | undefined {
  const quantized = plan.tensors.filter(isQuantized).map((p) => algorithmsOf(recipe, p.name));
  const autoround = o.autoroundObjective === 'block' && quantized.some((list) => list.at(-1)?.name === 'autoround');
  const omni = quantized.some(learnsLayer);
  if (!autoround && !omni) return undefined;
  // LoRC's factors would be fitted to each linear alone after the layer was learned as a whole: refused (quantize.ts checkExtras), never silently per-linear
  if (o.lorc > 0) fail('internal: --lorc with a method learned on whole layers');
  const why = o.shift ? '--shift adds biases' : Array.from({ length: config.nLayers }, (_, l) => blockObjectiveRefusal(config, names, l)).find((x) => x);
  if (why) {
    if (autoround) notes.push(`AutoRound: the block objective needs plain LLaMA layers (${why}); each linear's own output error was used`);
    if (omni) notes.push(`OmniQuant: learning on the layer output needs plain LLaMA layers (${why}); each linear's clip ratios were searched on its own output error, without equivalent transforms`);
    return undefined;
  }
  return { before: new Map() };
}

/** the runtime's bias field of a linear that OS+ gives a bias */
const BIAS_FIELD: Partial<Record<LinearRole, 'bq' | 'bk' | 'bv' | 'bGate' | 'bUp'>> = { q: 'bq', k: 'bk', v: 'bv', gate: 'bGate', up: 'bUp' };

/**
 * Outlier Suppression+ (Wei et al. 2023) on one norm group, folded: the norm output x is shifted by
 * z_j = (max_j + min_j) / 2 (the channel's asymmetry removed) and scaled by s_j, so the linears read
 * x' = (x - z) / s, whose channels are centred and of similar range (easier to quantize per token).
 * Exact rewrite: norm gain g / s, a new norm bias -z / s, linear columns W diag(s), and a new bias
 * W z per linear (y = W x = W diag(s) x' + W z). The scale is SmoothQuant's formula on the shifted
 * half-ranges, s_j = r_j^alpha / max|W_j|^(1 - alpha) (OS+ searches its scaling threshold instead).
 * LLaMA has no norm or gate/up biases in llama.cpp's graph: the result is lowbit safetensors only.
 */
function shiftGroup(lc: LayerCalibration, l: number, g: InputGroup, st: InputStats, name: (r: LinearRole) => string, norm: string, runtimeNorm: Float32Array, alpha: number, weights: Map<string, FloatTensor>, added: Map<string, Float32Array>): void {
  const k = st.k;
  const L = lc.model.weights.layers[l];
  const normBias = norm.replace(/\.weight$/, '.bias');
  const lins = g.linears.map((r) => ({ role: r, t: lc.linear(name(r)), bias: name(r).replace(/\.weight$/, '.bias') }));
  for (const x of [normBias, ...lins.map((x) => x.bias)]) if (weights.has(x)) fail(`--shift: ${x} exists already; models with norm or linear biases are not supported by the OS+ fold yet`);
  const z = Float32Array.from({ length: k }, (_, j) => Math.fround((st.max[j] + st.min[j]) / 2));
  const half = Float32Array.from({ length: k }, (_, j) => Math.fround((st.max[j] - st.min[j]) / 2));
  for (const { role, t, bias } of lins) {
    const field = BIAS_FIELD[role] ?? fail(`--shift: no bias for ${name(role)}`);
    const b = new Float32Array(t.rows);
    for (let r = 0; r < t.rows; r++) {
      let acc = 0;
      for (let j = 0; j < k; j++) acc += t.data[r * k + j] * z[j];
      b[r] = Math.fround(acc);
    }
    added.set(bias, b);
    L[field] = b;
  }
  const sc = smoothQuantScales(half, lins.map(({ t }) => ({ w: t.data, n: t.rows })), alpha);
  const nb = Float32Array.from({ length: k }, (_, j) => Math.fround(-z[j] / sc[j]));
  added.set(normBias, nb);
  if (g.input === 'attnNorm') L.attnNormBias = nb;
  else L.ffnNormBias = nb;
  lc.fold(sc, st, lins.map(({ role }) => name(role)), { norm: weights.get(norm)!.data, runtimeNorm });
}

/**
 * The per-layer stages of calibration over X (the current layer's input for every window): a runtime
 * whose linears read the float weights being transformed and quantized, the stage outputs kept
 * between a layer's groups, and the timings.
 */
export class LayerCalibration {
  readonly model: Llama;
  readonly phases = { statistics: 0, quantization: 0, forward: 0 };
  /** nSeq x ctx x dim: the residual stream of every window at the current layer's input */
  readonly X: Float32Array;
  private readonly engine: MatmulEngine | null;
  private readonly outs = new Map<LayerInput, Float32Array[]>();
  private readonly scratch: Float32Array;
  private readonly product: Float32Array;
  private pending: { input: LayerInput; writers: string[]; layer: number; moe: boolean }[] = [];
  private layer = 0;
  /** matrices the runtime holds only as zeros (not read yet, or let go): reading one is an internal error */
  notLoaded = new Set<string>();

  constructor(
    readonly config: LlamaConfig,
    readonly family: ModelFamily,
    private readonly weights: Map<string, FloatTensor>,
    tensors: StoredTensor[],
    readonly windows: readonly Int32Array[],
    readonly ctx: number,
    threads: number | undefined,
    private readonly magnitudes: boolean,
  ) {
    this.model = new Llama(config, tensors, { contextLength: ctx, batch: Math.min(ctx, 512), threads, weightsInKernel: false });
    this.engine = MatmulEngine.get();
    // every linear reads its weight from `weights` (the arrays the transforms and quantizers write into;
    // the runtime's own copy of a weight would go stale) with the f32 kernel on every thread
    this.model.hooks.linear = (out, x, w, nTok, expert) => {
      const t = weights.get(w.name);
      if (!t && this.notLoaded.has(w.name)) fail(`internal: ${w.name} was read while not loaded`);
      if (t && expert !== undefined && t.rows === w.rows * (config.nExperts ?? 0) && t.cols === w.cols) matmul(out, x, t.data.subarray(expert * w.rows * w.cols, (expert + 1) * w.rows * w.cols), nTok, t.cols, w.rows);
      else if (t && t.rows === w.rows && t.cols === w.cols) matmul(out, x, t.data, nTok, t.cols, t.rows);
      else linear(out, x, w, nTok);
    };
    this.X = new Float32Array(windows.length * ctx * config.dim);
    this.scratch = new Float32Array(ctx * config.dim);
    this.product = new Float32Array(ctx * config.dim);
  }

  get nSeq(): number {
    return this.windows.length;
  }

  /** the residual stream of window s */
  seq(s: number): Float32Array {
    const n = this.ctx * this.config.dim;
    return this.X.subarray(s * n, (s + 1) * n);
  }

  /** X = the token embeddings of every window */
  embed(): void {
    this.windows.forEach((w, s) => this.model.embed(w, this.seq(s)));
  }

  timed<T>(phase: keyof LayerCalibration['phases'], f: () => T): T {
    const t = performance.now();
    const r = f();
    if (r instanceof Promise) return r.finally(() => void (this.phases[phase] += (performance.now() - t) / 1000)) as T;
    this.phases[phase] += (performance.now() - t) / 1000;
    return r;
  }

  linear(name: string): FloatTensor {
    return this.weights.get(name)!;
  }

  /** the runtime's copy of a layer's norm gain (the input of a norm group) */
  runtimeNorm(l: number, input: LayerInput): Float32Array {
    const L = this.model.weights.layers[l];
    if (input === 'attnNorm') return L.attnNorm;
    if (input === 'ffnNorm') return L.ffnNorm;
    fail(`internal: ${input} is not a norm`);
  }

  /**
   * keep each input X itself instead of H = XᵀX where fewer tokens than channels were seen (the
   * sensitivity pass: InputStats' keepInputs; the costs are the same numbers, see InputStats.cost)
   */
  keepInputs?: { tokens: number; always?: boolean };

  private statsOf(k: number): InputStats {
    return new InputStats(k, Math.min(this.ctx, 512), this.engine, this.magnitudes, this.keepInputs);
  }

  /**
   * Stage "collect Hessians": run stage `input` of layer l over every window (its outputs kept per
   * window for a later residual add when it is not a norm) and return the statistics of its output,
   * the input of the linears that read it.
   */
  collectHessians(l: number, input: LayerInput): InputStats {
    this.layer = l;
    const width = stageWidth(this.config, input);
    const keep = input === 'attention' || input === 'ffn';
    let outs = this.outs.get(input);
    if (keep && !outs) this.outs.set(input, (outs = Array.from({ length: this.nSeq }, () => new Float32Array(this.ctx * width))));
    const st = this.statsOf(width);
    for (let s = 0; s < this.nSeq; s++) {
      const out = keep ? outs![s] : this.scratch;
      this.timed('forward', () => this.model.runStage(input, l, this.seq(s), out));
      this.timed('statistics', () => {
        for (let b = 0; b < this.ctx; b += 512) {
          const nb = Math.min(512, this.ctx - b);
          st.add(out.subarray(b * width, (b + nb) * width), nb);
        }
      });
    }
    this.timed('statistics', () => st.finish());
    return st;
  }

  /** the statistics of the output head's input (the final RMSNorm of X; no logits are computed) */
  collectHeadHessian(): InputStats {
    const { dim, normEps } = this.config;
    const st = new InputStats(dim, 512, this.engine, this.keepInputs ? this.magnitudes : true, this.keepInputs);
    const rows = this.scratch;
    for (let s = 0; s < this.nSeq; s++)
      this.timed('statistics', () => {
        rmsnorm(rows, this.seq(s), this.model.weights.outputNorm, this.ctx, dim, normEps);
        for (let b = 0; b < this.ctx; b += 512) st.add(rows.subarray(b * dim, Math.min(this.ctx, b + 512) * dim), Math.min(512, this.ctx - b));
      });
    this.timed('statistics', () => st.finish());
    return st;
  }

  /** remember that the linears reading `input` write the residual (added before the next norm group); moe: the layer's expert block writes it */
  pendResidual(input: LayerInput, writers: string[], moe = false): void {
    this.pending.push({ input, writers, layer: this.layer, moe });
  }

  /**
   * X_s += x_s W^T for every window and every pending writer W (x_s: its input stage's outputs);
   * Gemma: X_s += rmsnorm(x_s W^T) * g with the layer's post-attention / post-FFN norm gain g;
   * a mixture of experts: X_s += the expert block's output (run again with the current weights)
   */
  addPendingResiduals(): void {
    for (const { input, writers, layer, moe } of this.pending.splice(0))
      this.timed('forward', () => {
        if (moe) {
          for (let s = 0; s < this.nSeq; s++) {
            this.model.runStage('moe', layer, this.seq(s), this.product);
            this.addResidual(this.seq(s), layer, input);
          }
          return;
        }
        for (const name of writers) {
          const t = this.weights.get(name)!;
          const xs = this.outs.get(input)!;
          for (let s = 0; s < this.nSeq; s++) {
            matmul(this.product, xs[s], t.data, this.ctx, t.cols, t.rows);
            this.addResidual(this.seq(s), layer, input);
          }
        }
      });
  }

  /** r += this.product, through the layer's post-norm of that block when the family has one (Gemma) */
  private addResidual(r: Float32Array, layer: number, input: LayerInput): void {
    const g = this.weights.get(`blk.${layer}.${input === 'attention' ? 'post_attention_norm' : 'post_ffw_norm'}.weight`)?.data;
    if (g) rmsnorm(this.product, this.product, g, r.length / this.config.dim, this.config.dim, this.config.normEps);
    for (let i = 0; i < r.length; i++) r[i] += this.product[i];
  }

  /**
   * Stage "collect Hessians" of a mixture of experts: run layer l's expert block over every window and
   * keep the input statistics of each expert's matrix of `tensor` (ffn_gate_exps: the rows routed to the
   * expert; ffn_down_exps: its inner activations), and of all experts pooled.
   */
  collectExpertStats(l: number, tensor: string): ExpertStats {
    this.layer = l;
    const nExp = this.config.nExperts!;
    const k = tensor.endsWith('ffn_down_exps.weight') ? this.config.expertHiddenDim! : this.config.dim;
    const ex = new ExpertStats(tensor, Array.from({ length: nExp }, () => this.statsOf(k)), this.statsOf(k));
    this.model.hooks.linearInput = (name, x, nTok, _k, expert) => {
      if (name !== tensor || expert === undefined) return;
      ex.perExpert[expert].add(x, nTok);
      ex.pooled.add(x, nTok);
    };
    try {
      for (let s = 0; s < this.nSeq; s++) this.timed('forward', () => this.model.runStage('moe', l, this.seq(s), this.scratch));
    } finally {
      this.model.hooks.linearInput = undefined;
    }
    this.timed('statistics', () => ex.finish());
    return ex;
  }

  /** the float biases (the pipeline's copy and the runtime's) of a layer's q/k/v producer, to scale with its rows */
  biasOf(l: number, gguf: string): Float32Array[] {
    const L = this.model.weights.layers[l];
    const runtime = gguf === 'attn_q' ? L.bq : gguf === 'attn_k' ? L.bk : gguf === 'attn_v' ? L.bv : undefined;
    const own = this.weights.get(`blk.${l}.${gguf}.bias`)?.data;
    return [own, runtime].filter((b): b is Float32Array => b !== undefined);
  }

  /** every expert's matrix of a 3-D tensor for AWQ's search: its own Hessian, weighted by its share of the tokens */
  expertAwqLinears(tensor: string, planOf: ReadonlyMap<string, TensorPlan>, ex: ExpertStats): AwqLinear[] {
    const t = this.linear(tensor);
    const nExp = this.config.nExperts!;
    const codec = codecOf(planOf.get(tensor)!)!;
    const total = ex.perExpert.reduce((a, x) => a + x.count, 0);
    return ex.perExpert.map((st, e) => {
      const v = expertView(t, e, nExp);
      return { w: v.data, n: v.rows, codec, h: st.h, weight: st.count / Math.max(1, total) };
    });
  }

  /** equivalence transform: scales s folded as (previous op) / s, (consumer columns) * s */
  fold(s: Float32Array, st: InputStats, consumers: (string | FloatTensor)[], prev: { norm?: Float32Array; runtimeNorm?: Float32Array; rows?: FloatTensor; rowScale?: (r: number) => number; bias?: Float32Array[] }): void {
    for (const c of consumers) {
      const t = typeof c === 'string' ? this.linear(c) : c;
      for (let r = 0; r < t.rows; r++) for (let j = 0; j < t.cols; j++) t.data[r * t.cols + j] = Math.fround(t.data[r * t.cols + j] * s[j]);
    }
    if (prev.norm) {
      for (let j = 0; j < s.length; j++) prev.norm[j] = Math.fround(prev.norm[j] / s[j]);
      prev.runtimeNorm!.set(prev.norm);
    }
    if (prev.rows) {
      const t = prev.rows;
      for (let r = 0; r < t.rows; r++) {
        const d = prev.rowScale!(r);
        for (let j = 0; j < t.cols; j++) t.data[r * t.cols + j] = Math.fround(t.data[r * t.cols + j] / d);
        for (const b of prev.bias ?? []) b[r] = Math.fround(b[r] / d);
      }
    }
    st.divideInput(s);
  }

  awqLinears(names: string[], planOf: ReadonlyMap<string, TensorPlan>): AwqLinear[] {
    return names.map((c) => ({ w: this.linear(c).data, n: this.linear(c).rows, codec: codecOf(planOf.get(c)!)! }));
  }

  /**
   * AWQ across a fold pair: search the consumer's input scales and move them into the producer's rows.
   * 'heads': the consumer's input channel (head h, i) is the producer's row (kv head of h, i); heads
   * sharing a kv head share a scale (their mean |x| averaged).
   */
  awqFoldPair(channels: 'rows' | 'heads', st: InputStats, consumer: FloatTensor, producer: FloatTensor, consumerPlan: TensorPlan, grid: number, bias: Float32Array[] = []): { alpha: number } {
    let mean = st.meanAbs();
    let rowScale: (s: Float32Array) => (row: number) => number = (s) => (row) => s[row];
    if (channels === 'heads') {
      const { headDim, nHeads, nKvHeads } = this.config;
      const group = nHeads / nKvHeads;
      const tied = new Float64Array(mean.length);
      for (let c = 0; c < nKvHeads * headDim; c++) {
        const kvh = Math.floor(c / headDim);
        const i = c % headDim;
        let a = 0;
        for (let g = 0; g < group; g++) a += mean[(kvh * group + g) * headDim + i];
        for (let g = 0; g < group; g++) tied[(kvh * group + g) * headDim + i] = a / group;
      }
      mean = tied;
      rowScale = (s) => (row) => s[Math.floor(row / headDim) * group * headDim + (row % headDim)];
    }
    const r = awqSearchHessian(mean, st.h, st.k, [{ w: consumer.data, n: consumer.rows, codec: codecOf(consumerPlan)! }], grid);
    this.fold(r.scales, st, [consumer], { rows: producer, rowScale: rowScale(r.scales), bias });
    return r;
  }

  /**
   * Stage "measure KLD": mean KL divergence (nats per token) of the current model's next-token
   * distributions from `reference` logits (ctx x vocab per window), running the layers from
   * `fromLayer` on `x` (the residual stream at that layer for every window, e.g. X kept before a layer
   * was quantized) through the head. The model reads the current float weights.
   */
  measureKld(reference: readonly Float32Array[], x: Float32Array = this.X, fromLayer = this.layer): number {
    const { vocabSize } = this.config;
    const logits = new Float32Array(this.ctx * vocabSize);
    let sum = 0;
    for (let s = 0; s < this.nSeq; s++) {
      this.logitsFrom(x, fromLayer, s, logits);
      for (let t = 0; t < this.ctx; t++) {
        const o = t * vocabSize;
        sum += klDivergenceRow(reference[s], o, logSumExp(reference[s], o, vocabSize), logits, o, logSumExp(logits, o, vocabSize), vocabSize);
      }
    }
    return sum / Math.max(1, this.nSeq * this.ctx);
  }

  /** the logits of every window from the residual stream x at layer fromLayer (measureKld's reference) */
  referenceLogits(x: Float32Array = this.X, fromLayer = this.layer): Float32Array[] {
    return this.windows.map((_, s) => this.logitsFrom(x, fromLayer, s, new Float32Array(this.ctx * this.config.vocabSize)));
  }

  /** h (one window's residual stream) through layer l with the current weights; att, act: stage scratch */
  private layerOn(h: Float32Array, l: number, att: Float32Array, act: Float32Array): void {
    const add = (src: Float32Array, role: LinearRole, input: LayerInput) => {
      const t = this.weights.get(`blk.${l}.${linearOf(this.family, role).gguf}.weight`)!;
      matmul(this.product, src, t.data, this.ctx, t.cols, t.rows);
      this.addResidual(h, l, input);
    };
    this.model.runStage('attention', l, h, att);
    add(att, 'o', 'attention');
    if (this.model.weights.layers[l].router) {
      this.model.runStage('moe', l, h, this.product);
      this.addResidual(h, l, 'ffn');
    } else {
      this.model.runStage('ffn', l, h, act);
      add(act, 'down', 'ffn');
    }
  }

  /** X = layer l (its current weights) on xIn, every window: the pending residuals are dropped (the layer's weights changed since) */
  rerunLayer(l: number, xIn: Float32Array): void {
    this.pending = [];
    this.X.set(xIn);
    const att = new Float32Array(this.ctx * stageWidth(this.config, 'attention'));
    const act = new Float32Array(this.ctx * stageWidth(this.config, 'ffn'));
    this.timed('forward', () => { for (let s = 0; s < this.nSeq; s++) this.layerOn(this.seq(s), l, att, act); });
  }

  /** window s of x (residual stream at layer fromLayer) through the remaining layers and the head */
  private logitsFrom(x: Float32Array, fromLayer: number, s: number, out: Float32Array): Float32Array {
    const n = this.ctx * this.config.dim;
    const h = Float32Array.from(x.subarray(s * n, (s + 1) * n));
    const att = new Float32Array(this.ctx * stageWidth(this.config, 'attention'));
    const act = new Float32Array(this.ctx * (this.model.weights.layers.some((L) => L.router) ? 0 : stageWidth(this.config, 'ffn')));
    for (let l = fromLayer; l < this.config.nLayers; l++) this.layerOn(h, l, att, act);
    this.model.head(h, out);
    return out;
  }
}
