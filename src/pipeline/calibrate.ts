/**
 * Calibrated post-training quantization of a LLaMA model, layer by layer (GPTQ's sequential scheme):
 *
 *   tokens = windows of the calibration text (seeded), each starting with BOS
 *   X = embeddings of the tokens (token_embd quantized first, as the file will store it)
 *   for each layer l:
 *     1. run layer l (earlier layers already quantized, this one still float) over every sequence,
 *        capturing the inputs of its linear layers through the runtime's hooks: per distinct input
 *        (q/k/v share one, gate/up share one) H = 2 X^T X / N, mean |x|, max |x|
 *     2. equivalence transforms (SmoothQuant, AWQ scales) folded into the norms / previous linears
 *     3. quantize the layer's linears (GPTQ, AWQ's rounding, imatrix-RTN, HQQ) into the target codec's
 *        bytes; the runtime's weights now hold the quantized values
 *     4. run the quantized layer over every sequence: X becomes the next layer's input
 *   the output head last (its input: the final norm of X).
 * Memory: the float weights, X (calibration tokens x dim) and one layer's statistics.
 *
 * Before any of this, `--rotate hadamard` folds the RMSNorm gains into the following linears and
 * rotates the residual stream (and each head's values) with random-sign Hadamard matrices; the rotated
 * float model is checked to compute the same logits as the original.
 *
 * Outputs the transformed float weights and the bytes of every tensor quantized here; quantizeModel
 * (quantize.ts) writes the file from them, quantizing the remaining tensors as usual.
 */
import { fail } from '../errors.js';
import { awqSearchHessian, smoothQuantScales, type AwqLinear } from '../algos/awq.js';
import { blockCodecFor, CLIP_SEARCH_MAX_BITS, codeLayout, type BlockCodec } from '../algos/block-codec.js';
import { clipBlocks, hqqApplies, hqqBlocks, rtnBlocks, type BlockResult } from '../algos/blockwise.js';
import { finishHessian } from '../algos/gptq.js';
import { gptqBlocksParallel, partTarget, type GptqWorkers } from './gptq-parts.js';
import { hessianAccumulator, type HessianAccumulator } from '../kernels/gptq.js';
import { MatmulEngine } from '../kernels/matmul.js';
import { foldNorms, hadamardRotation, isPowerOfTwo, rotateHeads, rotateResidual, type WeightMap } from '../algos/hadamard.js';
import type { PtqOptions } from '../algos/ptq-options.js';
import { ruleFor, type Algorithm, type Recipe } from '../algos/recipe.js';
import { sqnrDb } from '../eval/metrics.js';
import { plainValue } from '../io/gguf.js';
import type { ModelFile } from '../io/model-file.js';
import { fromFloat32, toFloat32 } from '../io/tensor-data.js';
import { vocabFromGgufMetadata } from '../io/vocab.js';
import { Llama, llamaConfigFromGguf, rmsnorm } from '../model/llama.js';
import { linear, matmul } from '../model/matmul.js';
import { Tokenizer } from '../model/tokenizer.js';
import type { LlamaConfig, StoredTensor } from '../model/types.js';
import { ggmlTypeByName } from '../quant/ggml/types.js';
import type { QuantizePlan, TensorPlan } from './quantize.js';
import { readFloats } from './quantize.js';

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
}

export interface PtqOutput {
  /** every tensor as float after the equivalence transforms (rotation, AWQ/SmoothQuant scales) */
  floats: Map<string, Float32Array>;
  /** tensors quantized here, in their planned type's bytes */
  quantized: Map<string, PtqTensor>;
  /** what happened, for the report: rotation check, AWQ alphas, GPTQ times */
  notes: string[];
  /** max |logit difference| of the rotated float model against the original (with --rotate) */
  rotationMaxLogitDiff?: number;
  calibrationTokens?: number;
  seconds: number;
  /** seconds per phase of the layer loop: statistics pass (forward + X^T X), quantization, forward pass */
  phases?: { statistics: number; quantization: number; forward: number };
}

interface Tensor {
  data: Float32Array;
  rows: number;
  cols: number;
}

/** mulberry32: a small seeded PRNG for choosing calibration windows */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * nSeq = floor(nTokens / ctx) windows of ctx tokens from the token stream, starting at seeded random
 * offsets (GPTQ's sampling of calibration segments); the first token of each window becomes BOS.
 */
export function calibrationWindows(stream: ArrayLike<number>, nTokens: number, ctx: number, seed: number, bos: number): Int32Array[] {
  const nSeq = Math.floor(nTokens / ctx);
  if (nSeq < 1) fail(`--calib-tokens ${nTokens} is less than one sequence of --calib-ctx ${ctx}`);
  if (stream.length < ctx + 1) fail(`the calibration text has ${stream.length} tokens, fewer than one sequence of ${ctx}`);
  const rand = prng(seed ^ 0x5eed);
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
 * mean |x| and max |x| per channel.
 */
class InputStats {
  h: Float64Array = new Float64Array(0);
  readonly sumAbs: Float64Array;
  readonly absMax: Float32Array;
  count = 0;
  private acc: HessianAccumulator | undefined;
  constructor(readonly k: number, maxTok: number, engine?: MatmulEngine | null, readonly magnitudes = true) {
    this.acc = hessianAccumulator(k, maxTok, engine);
    this.sumAbs = new Float64Array(k);
    this.absMax = new Float32Array(k);
  }
  add(x: Float32Array, nTok: number): void {
    const k = this.k;
    this.acc!.add(x, nTok);
    this.count += nTok;
    if (!this.magnitudes) return;
    for (let t = 0; t < nTok; t++)
      for (let j = 0; j < k; j++) {
        const a = Math.abs(x[t * k + j]);
        this.sumAbs[j] += a;
        if (a > this.absMax[j]) this.absMax[j] = a;
      }
  }
  finish(): void {
    this.h = this.acc!.result();
    this.acc = undefined;
    finishHessian(this.h, this.k, this.count);
  }
  meanAbs(): Float64Array {
    return this.sumAbs.map((s) => s / Math.max(1, this.count));
  }
  diag(): Float32Array {
    return Float32Array.from({ length: this.k }, (_, i) => this.h[i * this.k + i]);
  }
  /** the input becomes x / s (a fold of s into the previous op) */
  divideInput(s: Float32Array): void {
    const k = this.k;
    for (let i = 0; i < k; i++) {
      this.sumAbs[i] /= s[i];
      this.absMax[i] /= s[i];
      for (let j = 0; j < k; j++) this.h[i * k + j] /= s[i] * s[j];
    }
  }
}

const FLOAT_TYPES = new Set(['F32', 'F16', 'BF16']);

/** the codec a planned tensor is quantized with, or undefined for a float target */
function codecOf(p: TensorPlan): BlockCodec | undefined {
  if (p.scheme) return blockCodecFor(p.scheme, p.ne[0]);
  if (p.ggml && !FLOAT_TYPES.has(p.ggml.name)) return blockCodecFor(p.ggml.name, p.ne[0]);
  return undefined;
}

export async function runPtq(m: ModelFile, plan: QuantizePlan, input: PtqInput): Promise<PtqOutput> {
  const t0 = performance.now();
  const o = input.options;
  const say = input.onProgress ?? (() => {});
  const notes: string[] = [];
  const planOf = new Map(plan.tensors.map((p) => [p.name, p]));
  const algorithmOf = (name: string): Algorithm => ruleFor(input.recipe, name)?.algorithm ?? input.recipe.algorithm ?? 'rtn';

  // ---- weights as float32 ------------------------------------------------------------------------
  const weights = new Map<string, Tensor>();
  for (const t of m.tensors) {
    const ne = t.ne ? [...t.ne] : [...t.shape].reverse();
    const data = new Float32Array(await readFloats(m, t)); // a copy: transforms write into it
    weights.set(t.name, { data, rows: ne.slice(1).reduce((a, b) => a * b, 1), cols: ne[0] });
  }
  const wmap: WeightMap = { get: (n) => weights.get(n), set: (n, t) => void weights.set(n, t) };
  if (!m.gguf) fail(`calibrated quantization needs a GGUF input (convert first: lowbit convert ${m.name} model.gguf)`);
  const metadata = new Map<string, unknown>([...m.gguf.metadata].map(([k, v]) => [k, plainValue(v)]));
  const f32 = ggmlTypeByName('F32')!;
  const stored = (): StoredTensor[] =>
    [...weights].map(([name, t]) => ({ name, type: f32, dims: shapeOf(m, name), data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) }));
  const config: LlamaConfig = llamaConfigFromGguf(metadata, stored());
  const nLayers = config.nLayers;

  // ---- tokens ------------------------------------------------------------------------------------
  const hasCalib = input.calibText !== undefined || input.calibStream !== undefined;
  const needsCalibration = plan.tensors.some((p) => codecOf(p) && ['gptq', 'awq', 'awq+gptq'].includes(algorithmOf(p.name))) || o.smooth > 0 || (hasCalib && plan.tensors.some((p) => codecOf(p) && algorithmOf(p.name) === 'rtn'));
  let windows: Int32Array[] = [];
  const ctx = Math.min(o.calibCtx, config.seqLen);
  if (input.calibStream) windows = calibrationWindows(input.calibStream, o.calibTokens, ctx, o.seed, Number(metadata.get('tokenizer.ggml.bos_token_id') ?? 1));
  else if (needsCalibration || (o.rotate === 'hadamard' && input.calibText)) {
    if (input.calibText === undefined) fail(`${[...new Set(plan.tensors.map((p) => algorithmOf(p.name)))].filter((a) => a !== 'rtn' && a !== 'hqq').join('/') || 'SmoothQuant'} needs calibration text: --calib FILE`);
    if (metadata.get('tokenizer.ggml.tokens') === undefined) fail(`${m.name} carries no vocabulary to tokenize the calibration text`);
    const tok = new Tokenizer(vocabFromGgufMetadata(metadata));
    const stream = tok.encode(input.calibText, { bos: false });
    windows = calibrationWindows(stream, o.calibTokens, ctx, o.seed, tok.vocab.bos);
  }

  // ---- what this pipeline covers per family ----------------------------------------------------------
  const family = config.arch ?? 'llama';
  const fused = [...weights.keys()].find((n) => /\.attn_qkv\.weight$/.test(n) || (/\.ffn_up\.weight$/.test(n) && !weights.has(n.replace('ffn_up', 'ffn_gate'))));
  if (o.rotate === 'hadamard') {
    // rotating the residual stream must leave the function unchanged: refuse where it would not
    if (config.nExperts) fail(`--rotate hadamard: ${family} is a mixture of experts; the rotation does not cover its router and experts (not function-preserving here)`);
    if (fused) fail(`--rotate hadamard: ${family} stores fused ${fused.split('.')[2]}; the rotation does not cover fused tensors (not function-preserving here)`);
    if (config.arch === 'gemma2' || config.arch === 'gemma3')
      fail(`--rotate hadamard: ${family}'s post-attention and post-FFN RMSNorms scale the residual update per channel after normalizing it, so a rotation of the residual stream cannot be folded into the weights (not function-preserving)`);
  }

  // ---- rotation ----------------------------------------------------------------------------------
  let rotationMaxLogitDiff: number | undefined;
  if (o.rotate === 'hadamard') {
    if (!weights.has('output.weight')) fail('--rotate hadamard: the model ties its output to token_embd; untie it first (not supported yet)');
    if (!isPowerOfTwo(config.dim)) fail(`--rotate hadamard: the residual width ${config.dim} is not a power of two (only 2^n Hadamard matrices are built)`);
    const original = new Map([...weights].map(([n, t]) => [n, { ...t, data: Float32Array.from(t.data) }]));
    foldNorms(wmap, nLayers);
    rotateResidual(wmap, nLayers, hadamardRotation(config.dim, o.seed));
    if (o.rotateHeads) {
      if (!isPowerOfTwo(config.headDim)) fail(`--rotate-heads: the head size ${config.headDim} is not a power of two`);
      rotateHeads(wmap, nLayers, hadamardRotation(config.headDim, o.seed + 1), config.nHeads, config.nKvHeads);
    }
    // computational invariance: the rotated float model computes the same logits
    const probe = windows[0]?.subarray(0, Math.min(64, ctx)) ?? Int32Array.from({ length: Math.min(64, config.seqLen) }, (_, i) => (i * 7919 + 1) % config.vocabSize);
    const before = new Llama(config, [...original].map(([name, t]) => ({ name, type: f32, dims: shapeOf(m, name), data: new Uint8Array(t.data.buffer) })), { contextLength: probe.length });
    const after = new Llama(config, stored(), { contextLength: probe.length });
    const a = before.forward(probe, 0, 0);
    const b = after.forward(probe, 0, 0);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < a.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
      maxAbs = Math.max(maxAbs, Math.abs(a[i]));
    }
    rotationMaxLogitDiff = maxDiff;
    notes.push(`rotation: max |logit difference| of the rotated float model = ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(2)}, ${probe.length} tokens)`);
    if (!(maxDiff <= 1e-3 * (1 + maxAbs))) fail(`internal error: the rotated model's logits differ by ${maxDiff} from the original's`);
  }

  const quantized = new Map<string, PtqTensor>();
  const floats = new Map([...weights].map(([n, t]) => [n, t.data]));
  const commit = (name: string, r: BlockResult, algorithm: string) => {
    const t = weights.get(name)!;
    quantized.set(name, { bytes: r.bytes, sqnrDb: sqnrDb(t.data, r.q), algorithm });
    t.data.set(r.q); // the runtime (and later layers) now see the quantized weights
  };
  /** float targets: round to the stored float type so later layers see what the file holds */
  const roundFloat = (name: string) => {
    const p = planOf.get(name);
    const t = weights.get(name)!;
    if (p && (p.to === 'F16' || p.to === 'BF16')) {
      floats.set(name, Float32Array.from(t.data)); // the file gets (and its report measures) the float values
      t.data.set(toFloat32(p.to, fromFloat32(p.to, t.data)));
    }
  };

  // ---- calibration-free algorithms ---------------------------------------------------------------
  if (!needsCalibration) {
    for (const p of plan.tensors) {
      const codec = codecOf(p);
      if (!codec || algorithmOf(p.name) !== 'hqq') continue;
      if (!hqqApplies(codec.name)) fail(`HQQ optimizes a zero-point: ${p.name} is planned as ${codec.name}, which has none (use an asymmetric target such as --type uint4 --group 64 --asym, or Q4_1)`);
      const t = weights.get(p.name)!;
      commit(p.name, hqqBlocks(codec, t.data, t.rows, t.cols, { iters: o.hqqIters, p: o.hqqP }), 'hqq');
    }
    return { floats, quantized, notes, rotationMaxLogitDiff, seconds: (performance.now() - t0) / 1000 };
  }

  // ---- layer by layer ----------------------------------------------------------------------------
  const model = new Llama(config, stored(), { contextLength: ctx, batch: Math.min(ctx, 512), threads: input.threads, weightsInKernel: false });
  const engine = MatmulEngine.get();
  // every linear reads its weight from `weights` (the arrays the transforms and quantizers write into;
  // the runtime's own copy of a weight would go stale) with the f32 kernel on every thread
  model.hooks.linear = (out, x, w, nTok) => {
    const t = weights.get(w.name);
    if (t && t.rows === w.rows && t.cols === w.cols) matmul(out, x, t.data, nTok, t.cols, t.rows);
    else linear(out, x, w, nTok);
  };
  const nSeq = windows.length;
  const { dim, hiddenDim } = config;
  const qDim = config.nHeads * config.headDim;
  say(`calibration: ${nSeq} sequences of ${ctx} tokens`);

  const quantizeLinear = async (name: string, stats: InputStats | undefined): Promise<void> => {
    const p = planOf.get(name);
    const t = weights.get(name);
    if (!p || !t) fail(`model has no tensor ${name}`);
    const codec = codecOf(p);
    if (!codec) return roundFloat(name);
    const alg = algorithmOf(name);
    const { data: w, rows: n, cols: k } = t;
    if (alg === 'hqq') {
      if (!hqqApplies(codec.name)) fail(`HQQ optimizes a zero-point: ${name} is planned as ${codec.name}, which has none`);
      return commit(name, hqqBlocks(codec, w, n, k, { iters: o.hqqIters, p: o.hqqP }), 'hqq');
    }
    if (!stats) return commit(name, rtnBlocks(codec, w, n, k), 'rtn');
    if (alg === 'gptq' || alg === 'awq+gptq') {
      const diag = stats.diag();
      const clip = o.gptqClip && codeLayout(codec).bits <= CLIP_SEARCH_MAX_BITS;
      const target = partTarget(p.scheme, p.ggml?.name);
      const r = await gptqBlocksParallel(w, n, k, stats.h, codec, target, { percDamp: o.percDamp, blockSize: o.gptqBlock, actOrder: o.actOrder, importance: o.gptqImportance && codec.usesImportance ? diag : undefined, clipWeights: clip ? diag : undefined }, input.gptqWorkers);
      return commit(name, r, alg);
    }
    const searchable = codeLayout(codec).bits <= CLIP_SEARCH_MAX_BITS;
    if (alg === 'awq') {
      const clip = o.awqClip && searchable && !/attn_[qk]\.weight$/.test(name);
      return commit(name, clip ? clipBlocks(codec, w, n, k, { h: stats.h }) : rtnBlocks(codec, w, n, k), clip ? 'awq+clip' : 'awq');
    }
    // imatrix-RTN: the codec's importance path with mean x^2 (diag H / 2), or a weighted clip search
    // (codecs without an importance path, at most CLIP_SEARCH_MAX_BITS bits)
    const imp = stats.diag();
    if (codec.usesImportance) return commit(name, rtnBlocks(codec, w, n, k, imp), 'imatrix-rtn');
    return commit(name, searchable ? clipBlocks(codec, w, n, k, { importance: imp }) : rtnBlocks(codec, w, n, k), searchable ? 'imatrix-rtn' : 'rtn');
  };

  // token embeddings: no calibration (a lookup, not a product); quantized first so layer 0 sees them
  await quantizeLinear('token_embd.weight', undefined);
  const X = new Float32Array(nSeq * ctx * dim);
  windows.forEach((w, s) => model.embed(w, X.subarray(s * ctx * dim, (s + 1) * ctx * dim)));
  const seq = (s: number) => X.subarray(s * ctx * dim, (s + 1) * ctx * dim);
  // per sequence: the attention output (input of Wo) and the SwiGLU output (input of Wdown) of the
  // current layer, kept between its stages
  const att = Array.from({ length: nSeq }, () => new Float32Array(ctx * qDim));
  const act = Array.from({ length: nSeq }, () => new Float32Array(ctx * hiddenDim));
  const normed = new Float32Array(ctx * dim);
  const product = new Float32Array(ctx * dim);

  const phases = { statistics: 0, quantization: 0, forward: 0 };
  const timed = (phase: keyof typeof phases, f: () => void) => {
    const t = performance.now();
    f();
    phases[phase] += (performance.now() - t) / 1000;
  };
  const magnitudes = o.smooth > 0 || plan.tensors.some((p) => algorithmOf(p.name).startsWith('awq'));
  const statsOf = (k: number) => new InputStats(k, Math.min(ctx, 512), engine, magnitudes);
  /** add the rows of x (ctx tokens) to st */
  const observe = (st: InputStats, x: Float32Array) => timed('statistics', () => {
    for (let b = 0; b < ctx; b += 512) {
      const nb = Math.min(512, ctx - b);
      st.add(x.subarray(b * st.k, (b + nb) * st.k), nb);
    }
    });
  /**
   * X_s += x_s W^T for every sequence (W: the named linear of the layer); Gemma: X_s += rmsnorm(x_s W^T) * g
   * with the layer's post-attention / post-FFN norm gain g
   */
  const residualAdd = (name: string, xs: Float32Array[], postNorm?: string) => timed('forward', () => {
    const t = weights.get(name)!;
    const g = postNorm ? weights.get(postNorm)?.data : undefined;
    for (let s = 0; s < nSeq; s++) {
      matmul(product, xs[s], t.data, ctx, t.cols, t.rows);
      if (g) rmsnorm(product, product, g, ctx, dim, config.normEps);
      const r = seq(s);
      for (let i = 0; i < r.length; i++) r[i] += product[i];
    }
  });

  if (config.nExperts) fail(`${family} is a mixture of experts: calibrated GPTQ/AWQ/SmoothQuant per expert is not supported yet; use a llama.cpp type with an importance matrix from lowbit imatrix (per-expert statistics, as llama-imatrix)`);
  if (fused) fail(`${family} stores fused ${fused.split('.')[2]}: calibrated GPTQ/AWQ/SmoothQuant for fused tensors is not supported yet; use a llama.cpp type (with --imatrix from lowbit imatrix)`);
  for (let l = 0; l < nLayers; l++) {
    const tl = performance.now();
    const P = `blk.${l}.`;
    const L = model.weights.layers[l];
    const linear = (n: string): Tensor => weights.get(P + n)!;
    const quantizable = (names: string[]) => names.every((n) => codecOf(planOf.get(P + n)!));
    const usesAwq = (names: string[]) => names.some((n) => algorithmOf(P + n).startsWith('awq')) && quantizable(names);
    const quantize = async (names: string[], st: InputStats) => {
      const t = performance.now();
      for (const n of names) await quantizeLinear(P + n, st);
      phases.quantization += (performance.now() - t) / 1000;
    };
    // equivalence transforms: scales s folded as (previous op) / s, (consumer columns) * s
    const fold = (s: Float32Array, st: InputStats, consumers: string[], prev: { norm?: Float32Array; runtimeNorm?: Float32Array; rows?: Tensor; rowScale?: (r: number) => number }) => {
      for (const c of consumers) {
        const t = linear(c);
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
        }
      }
      st.divideInput(s);
    };
    const awqCodecs = (names: string[]): AwqLinear[] => names.map((c) => ({ w: linear(c).data, n: linear(c).rows, codec: codecOf(planOf.get(P + c)!)! }));
    const alphas: string[] = [];
    /** SmoothQuant and AWQ scales of a group of linears reading one RMSNorm's output */
    const normGroup = (st: InputStats, consumers: string[], norm: string, runtimeNorm: Float32Array) => timed('quantization', () => {
      if (o.smooth > 0) {
        const s = smoothQuantScales(st.absMax, consumers.map((c) => ({ w: linear(c).data, n: linear(c).rows })), o.smooth);
        fold(s, st, consumers, { norm: linear(norm).data, runtimeNorm });
      }
      if (usesAwq(consumers)) {
        const r = awqSearchHessian(st.meanAbs(), st.h, st.k, awqCodecs(consumers), o.awqGrid);
        fold(r.scales, st, consumers, { norm: linear(norm).data, runtimeNorm });
        alphas.push(`${norm.split('_')[0]} ${r.alpha.toFixed(2)}`);
      }
    });
    const finish = (st: InputStats) => timed('statistics', () => st.finish());

    /** run a stage of the layer over every window (outputs into outs[s], or a scratch): its input statistics */
    const pass = (stage: 'attnNorm' | 'ffnNorm' | 'attention' | 'ffn', width: number, outs?: Float32Array[]) => {
      const st = statsOf(width);
      for (let s = 0; s < nSeq; s++) {
        const out = outs ? outs[s] : normed;
        timed('forward', () => model.runStage(stage, l, seq(s), out));
        observe(st, out);
      }
      finish(st);
      return st;
    };

    // 1. q, k, v: their input is attn_norm(X)
    const stAttn = pass('attnNorm', dim);
    normGroup(stAttn, ['attn_q.weight', 'attn_k.weight', 'attn_v.weight'], 'attn_norm.weight', L.attnNorm);
    // AWQ between v and o scales v's rows: v is quantized after that scale is chosen
    const awqVo = usesAwq(['attn_output.weight']) && quantizable(['attn_v.weight']);
    await quantize(awqVo ? ['attn_q.weight', 'attn_k.weight'] : ['attn_q.weight', 'attn_k.weight', 'attn_v.weight'], stAttn);

    // 2. o: its input is the attention output (with the quantized q, k, v)
    let stO = pass('attention', qDim, att);
    if (awqVo) {
      // v -> o: o's input channel (head h, i) is v's row (kv head of h, i); heads sharing a kv head share s
      timed('quantization', () => {
        const { headDim, nHeads, nKvHeads } = config;
        const group = nHeads / nKvHeads;
        const mean = stO.meanAbs();
        const tied = new Float64Array(mean.length);
        for (let c = 0; c < nKvHeads * headDim; c++) {
          const kvh = Math.floor(c / headDim);
          const i = c % headDim;
          let a = 0;
          for (let g = 0; g < group; g++) a += mean[(kvh * group + g) * headDim + i];
          for (let g = 0; g < group; g++) tied[(kvh * group + g) * headDim + i] = a / group;
        }
        const r = awqSearchHessian(tied, stO.h, stO.k, awqCodecs(['attn_output.weight']), o.awqGrid);
        const rowScale = (row: number) => r.scales[Math.floor(row / headDim) * group * headDim + (row % headDim)];
        fold(r.scales, stO, ['attn_output.weight'], { rows: linear('attn_v.weight'), rowScale });
        // Qwen 2: v's bias is part of its rows' output, scaled with them
        const bv = weights.get(P + 'attn_v.bias');
        if (bv && L.bv) {
          for (let row = 0; row < bv.data.length; row++) bv.data[row] = Math.fround(bv.data[row] / rowScale(row));
          L.bv.set(bv.data);
        }
        alphas.push(`v>o ${r.alpha.toFixed(2)}`);
      });
      await quantize(['attn_v.weight'], stAttn);
      stO = pass('attention', qDim, att); // again, with the quantized v
    }
    await quantize(['attn_output.weight'], stO);

    // 3. gate, up: their input is ffn_norm(X + attention)
    residualAdd(P + 'attn_output.weight', att, P + 'post_attention_norm.weight');
    const stFfn = pass('ffnNorm', dim);
    normGroup(stFfn, ['ffn_gate.weight', 'ffn_up.weight'], 'ffn_norm.weight', L.ffnNorm);
    const awqUd = usesAwq(['ffn_down.weight']) && quantizable(['ffn_up.weight']);
    await quantize(awqUd ? ['ffn_gate.weight'] : ['ffn_gate.weight', 'ffn_up.weight'], stFfn);

    // 4. down: its input is silu(gate) * up (quantized)
    let stDown = pass('ffn', hiddenDim, act);
    if (awqUd) {
      timed('quantization', () => {
        const r = awqSearchHessian(stDown.meanAbs(), stDown.h, stDown.k, awqCodecs(['ffn_down.weight']), o.awqGrid);
        fold(r.scales, stDown, ['ffn_down.weight'], { rows: linear('ffn_up.weight'), rowScale: (row) => r.scales[row] });
        alphas.push(`up>down ${r.alpha.toFixed(2)}`);
      });
      await quantize(['ffn_up.weight'], stFfn);
      stDown = pass('ffn', hiddenDim, act);
    }
    await quantize(['ffn_down.weight'], stDown);
    if (alphas.length) notes.push(`layer ${l} AWQ alpha: ${alphas.join(', ')}`);
    roundFloat(P + 'attn_norm.weight');
    roundFloat(P + 'ffn_norm.weight');
    L.attnNorm.set(linear('attn_norm.weight').data);
    L.ffnNorm.set(linear('ffn_norm.weight').data);

    // 5. X += down(act): the next layer's input
    residualAdd(P + 'ffn_down.weight', act, P + 'post_ffw_norm.weight');
    say(`layer ${l + 1}/${nLayers} (${((performance.now() - tl) / 1000).toFixed(1)} s)`);
  }

  // output head: input = final RMSNorm of X
  if (weights.has('output.weight')) {
    const st = new InputStats(dim, 512, engine);
    const logits = new Float32Array(Math.min(ctx, 512) * config.vocabSize);
    model.hooks.linearInput = (name, x, nTok) => {
      if (name === 'output.weight') st.add(x, nTok);
    };
    for (let s = 0; s < nSeq; s++)
      for (let b = 0; b < ctx; b += 512) {
        const rows = seq(s).subarray(b * dim, Math.min(ctx, b + 512) * dim);
        model.head(rows, logits.subarray(0, (rows.length / dim) * config.vocabSize));
      }
    model.hooks.linearInput = undefined;
    st.finish();
    await quantizeLinear('output.weight', st);
  }
  return { floats, quantized, notes, rotationMaxLogitDiff, calibrationTokens: nSeq * ctx, seconds: (performance.now() - t0) / 1000, phases };
}

function shapeOf(m: ModelFile, name: string): number[] {
  const t = m.tensor(name);
  return t.ne ? [...t.ne] : [...t.shape].reverse();
}

