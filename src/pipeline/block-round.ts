/**
 * AutoRound on the transformer block's output (Cheng et al. 2023, the paper's objective). Each
 * quantized linear of a layer starts from its per-linear result (its grids and choices: GPTQ's in
 * 'gptq+autoround', per-linear AutoRound's in 'autoround'); then every element's rounding offset v
 * (between its start level and the neighbour towards w, algos/autoround.ts's Levels) is learned for
 * all the layer's linears at once, by signed gradient descent on
 *
 *   L = mean over tokens || block_Q(x_q) - block_F(x_f) ||^2
 *
 * x_q: the layer's input in the partly quantized model (earlier layers quantized), x_f: the float
 * model's, block_F the float layer, block_Q the layer with the current quantized weights. The errors of
 * q/k/v, o, gate/up and down compensate each other through the softmax, SiLU and norms, and the
 * earlier layers' error is corrected, which no per-linear objective sees. Gradient: the training
 * engine's backward pass of one layer (src/train/llama-grad.ts), straight-through to v:
 *
 *   q = hi if t + v >= 0.5 else lo,   dL/dv = dL/dq (hi - lo),   v -= lr_i sign(dL/dv),  v in [-0.5, 0.5]
 *   lr_i = lr (1 - i / iters) (AutoRound's linear decay), a minibatch of calibration windows per step.
 *
 * The grids (scales) stay those of the start, so any block codec keeps its exact bytes. The result is
 * the best of the start, the last iterate and (minibatches of 2+ windows) the best minibatch iterate on EVAL_WINDOWS windows of the
 * calibration set (spread evenly; all of them when there are fewer), measured by the runner or by the
 * caller's judge (the layer driver: its runtime's pass of the last iterate is the next layer's input).
 * Forwards reuse each linear's transpose (keepTransposes); a step writes its flips into both.
 */
import { fail } from '../errors.js';
import { affineGrid, bracketBlock, chooseStart, newLevels, writeChoices, type Levels } from '../algos/autoround.js';
import { BlockGrids, type BlockCodec } from '../algos/block-codec.js';
import { startChunksKernel } from '../kernels/autoround.js';
import type { ModelConfig } from '../model/family.js';
import { matmul } from '../model/matmul.js';
import { rngStream } from '../rng.js';
import { referenceBackend, signStepRef, wasmBackend, type Backend, type Vec } from '../train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';

/**
 * Steps of the block objective (and of its per-linear start after GPTQ) by default, one calibration
 * window each (--autoround-batch 1): 14 window passes per layer (20 until session 40). On tinyllama256
 * Q3_K --pure (gptq+autoround) 20 x 1 and 40 x 1 gave the KLD of 40 steps of 4 windows (160 passes)
 * within its standard error; plain autoround at 14 x 1 against 20 x 1 over three calibration seeds:
 * the same mean KLD ratio to GPTQ in domain (0.66x), WikiText-2 0.79x vs 0.76x (120 chunks) and 0.81x vs
 * 0.79x (480 chunks), within one standard error, for ~30 % fewer step passes (docs/ptq.md, session 40).
 */
export const BLOCK_ITERS = 14;
/**
 * The block objective's first step by default: BLOCK_MOVE * 2 / steps, decayed linearly, so an offset
 * moves at most BLOCK_MOVE in all (1/70 at 14 steps, 0.01 at 20, 0.005 — AutoRound's 1 / 200 — at 40).
 */
export const BLOCK_MOVE = 0.1;
/** iterations of the per-linear objective by default (within 0.2 % of 200's output error) */
export const LINEAR_ITERS = 100;

/**
 * AutoRound's iterations and first step (0 = the default). The block objective's steps: BLOCK_ITERS from
 * 2 BLOCK_MOVE / steps. The per-linear stage (the block objective's start, or the whole method on
 * --autoround-objective linear): LINEAR_ITERS from 1 / iterations, except that after GPTQ on the block
 * objective it takes the block's schedule (measured so: 0.68x GPTQ's KLD on tinyllama256 Q3_K; from
 * round to nearest the block's small steps left the start near RTN, 1.22x). The block stage alone takes
 * --autoround-block-iters / --autoround-block-lr when set (the per-linear start then keeps its own).
 */
export function autoroundSchedule(o: { autoroundIters: number; autoroundLr: number; autoroundObjective: 'block' | 'linear'; autoroundBlockIters?: number; autoroundBlockLr?: number }, stage: 'block' | 'linear', afterGptq = false): { iters: number; lr: number } {
  if (stage === 'block') {
    const iters = o.autoroundBlockIters || o.autoroundIters || BLOCK_ITERS;
    return { iters, lr: o.autoroundBlockLr || o.autoroundLr || (2 * BLOCK_MOVE) / iters };
  }
  if (afterGptq && o.autoroundObjective === 'block') {
    const iters = o.autoroundIters || BLOCK_ITERS;
    return { iters, lr: o.autoroundLr || (2 * BLOCK_MOVE) / iters };
  }
  const iters = o.autoroundIters || LINEAR_ITERS;
  return { iters, lr: o.autoroundLr || 1 / iters };
}

/** the start, last and best iterates are compared on at most this many calibration windows (spread evenly) */
export const EVAL_WINDOWS = 8;
/** a start's choice against the nearest level sits this far past the threshold (GPTQ's choices are deliberate) */
const START_MARGIN = 0.05;
/** The tensors of one plain LLaMA layer, as blk.L.<name>.weight. */
export const BLOCK_TENSORS = ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down'] as const;

/**
 * Why layer l cannot be learned on its block output (the training engine's layer is plain LLaMA:
 * RMSNorm, RoPE on pairs, SwiGLU, no biases), or undefined when it can.
 */
export function blockObjectiveRefusal(config: ModelConfig, tensorNames: Iterable<string>, l: number): string | undefined {
  if ((config.arch ?? 'llama') !== 'llama' || config.nExperts) return `${config.arch ?? 'llama'}${config.nExperts ? ' with experts' : ''} is not a plain LLaMA block`;
  if (config.ropeStyle !== 'normal') return `RoPE layout ${config.ropeStyle}`;
  if ((config.activation ?? 'silu') !== 'silu' || config.attnScale !== undefined || config.attnSoftcap !== undefined || config.slidingWindow || config.ropeYarn || (config.ropeFreqScale ?? 1) !== 1 || (config.ropeMscale ?? 1) !== 1)
    return 'the model uses attention or RoPE variants the training engine does not run';
  const known = new Set(BLOCK_TENSORS.map((n) => `blk.${l}.${n}.weight`));
  for (const n of tensorNames) if (n.startsWith(`blk.${l}.`) && !known.has(n)) return `layer ${l} has ${n}`;
  for (const n of known) if (![...tensorNames].includes(n)) return `layer ${l} has no ${n}`;
  return undefined;
}

/** One linear to learn: its name inside the layer, codec, the float weight its start was rounded from, and the start. */
export interface BlockLinear {
  readonly name: (typeof BLOCK_TENSORS)[number];
  readonly codec: BlockCodec;
  readonly w: Float32Array;
  readonly start: { bytes: Uint8Array; q: Float32Array };
}

export interface BlockRoundOptions {
  iters: number;
  /** first step (decayed linearly to 0); 0 = 1 / iters */
  lr: number;
  /** calibration windows per step */
  batch: number;
  seed: number;
  /**
   * every this many steps, the iterate is judged on the evaluation windows and the best one kept
   * (it replaces the best-minibatch iterate); 0 = off (the start, the last and, with 2+ windows per step,
   * the best minibatch iterate)
   */
  evalEvery?: number;
  /**
   * layer 0 only: also learn the token embedding's rounding (its rows are the layer's input, xIn =
   * embedding rows of the windows' tokens), through the layer's input gradient; xIn is rewritten with
   * the final embedding's rows. Rows of tokens that no calibration window holds keep their start.
   */
  input?: InputLearner;
  /**
   * who measures the start and the iterates on the evaluation windows (default: the runner's forward;
   * the runner's forward also when evalEvery or input is set: the checkpoints judge mid-run iterates, and
   * the embedding learner rewrites xIn, which the caller's runtime does not see)
   */
  judge?: BlockJudge;
}

/** The token embedding learned as layer 0's input: its codec, float rows (vocab x dim), start, and every calibration window's tokens. */
export interface InputLearner {
  readonly codec: BlockCodec;
  readonly w: Float32Array;
  readonly start: { bytes: Uint8Array; q: Float32Array };
  readonly tokens: readonly Int32Array[];
}

/**
 * The block output error (mean squared error per token on the evaluation windows, evalWindows) of the
 * start and of an iterate, measured by the caller: the layer driver runs the layer on its own runtime,
 * whose run of the last iterate over every window is the next layer's input anyway (one pass for both).
 */
export interface BlockJudge {
  /** the start's error */
  start(): number;
  /** the error with the learned linears at `values` (name inside the layer -> values); `last`: the last iterate */
  loss(values: ReadonlyMap<string, Float32Array>, last: boolean): number;
}

/** the windows the start and the iterates are judged on: EVAL_WINDOWS spread evenly over nSeq (all when fewer) */
export function evalWindows(nSeq: number): number[] {
  const nEval = Math.min(nSeq, EVAL_WINDOWS);
  return Array.from({ length: nEval }, (_, i) => Math.floor((i * nSeq) / nEval));
}

/**
 * The windows of iteration `it`'s minibatch: the next `batch` of `order`, which is reshuffled with `rand`
 * at the start of every pass over the windows (call it for it = 0, 1, ... in turn).
 */
export function minibatchWindows(order: number[], rand: () => number, it: number, batch: number): number[] {
  const nSeq = order.length;
  if ((it * batch) % nSeq < batch)
    for (let i = nSeq - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
  return Array.from({ length: batch }, (_, b) => order[(it * batch + b) % nSeq]);
}

/**
 * every window refineBlock reads with these options (its minibatches and evaluation windows), ascending;
 * evalEvery's checkpoints and the input learner read no others (the evaluation windows, the minibatches)
 */
export function blockWindowsUsed(nSeq: number, o: Pick<BlockRoundOptions, 'iters' | 'batch' | 'seed'>): number[] {
  const used = new Set(evalWindows(nSeq));
  const rand = rngStream('blockRoundOrder', o.seed);
  const order = Array.from({ length: nSeq }, (_, i) => i);
  const batch = Math.min(o.batch, nSeq);
  for (let it = 0; it < o.iters; it++) for (const w of minibatchWindows(order, rand, it, batch)) used.add(w);
  return [...used].sort((a, b) => a - b);
}

export interface BlockRoundResult {
  /** the token embedding's bytes and values (with o.input) */
  readonly input?: { bytes: Uint8Array; q: Float32Array };
  /** per linear name: the bytes and their exact values */
  readonly linears: Map<string, { bytes: Uint8Array; q: Float32Array }>;
  /** mean squared block-output error per token at the start and at the end (on EVAL_WINDOWS windows of the calibration set) */
  readonly lossStart: number;
  readonly loss: number;
  readonly pick: 'start' | 'last' | 'best';
  readonly seconds: number;
}

/** A learned linear's levels, offsets and choices (BlockRunner.stepArrays); the levels' codes, the start's and best choices */
export interface StepArrays {
  lo: Float32Array;
  hi: Float32Array;
  t: Float32Array;
  v: Float32Array;
  ch: Uint8Array;
  loC: Uint16Array;
  hiC: Uint16Array;
  startCh: Uint8Array;
  bestCh: Uint8Array;
}

/** One LLaMA layer on the training engine (batch 1, ctx tokens), fed window by window. */
export class BlockRunner {
  readonly model: TrainModel;
  private readonly dOut: Vec;
  private readonly x: Vec;
  /** the override arrays the learned linears' current values live in (allocated by the backend) */
  readonly values = new Map<string, Vec>();
  /** the input's gradient of the last backward (with model.inputGradient) */
  dX?: Vec;

  constructor(readonly config: ModelConfig, readonly ctx: number, threads = 1) {
    const tc: TrainConfig = { ...config, nLayers: 1, vocabSize: 1, seqLen: ctx, tiedOutput: true, nExperts: undefined };
    const mo = { batch: 1, ctx };
    const qDim = config.nHeads * config.headDim;
    const kvDim = config.nKvHeads * config.headDim;
    const linearFloats = config.dim * (2 * qDim + 2 * kvDim + 3 * config.hiddenDim);
    // the override arrays and the linears' transposes (the cache below)
    const extra = 2 * ctx * config.dim + 2 * linearFloats + 64 * 32;
    // AutoRound's step arrays (stepArrays: levels, offsets, choices), where the backend's step kernel reads them: when they fit
    const stepFloats = 4 * linearFloats + Math.ceil(linearFloats / 4) + 64 * 64;
    const base = trainModelFloats(tc, mo) + extra;
    this.stepRoom = (base + stepFloats) * 4 <= 3 * 2 ** 30;
    const be = wasmBackend(base + (this.stepRoom ? stepFloats : 0), threads) ?? referenceBackend('f32');
    this.model = new TrainModel(tc, be, mo);
    this.dOut = be.alloc(ctx * config.dim);
    this.x = be.alloc(ctx * config.dim);
    // the forward of a linear multiplies by its weight's transpose: while caching (keepTransposes), each
    // weight is transposed once and kept (the same product on the same numbers: the same bytes)
    const plain = this.model.linear;
    this.model.linear = {
      forward: (name, y, x, w, n, rows, cols) => {
        if (!this.caching) return plain.forward(name, y, x, w, n, rows, cols);
        let c = this.transposes.get(name);
        if (!c) this.transposes.set(name, (c = { t: be.alloc(rows * cols), of: null }));
        // the same array: the same object, or the same region of the same memory (a parameter's view is a
        // new subarray on every call)
        if (!sameArray(c.of, w)) {
          be.transpose(c.t, 0, rows, w, 0, cols, rows, cols);
          c.of = w;
        }
        be.gemm(y, 0, rows, x, 0, cols, c.t, 0, rows, n, cols, rows, false);
      },
      backward: (...a) => plain.backward(...a),
      overwrites: plain.overwrites,
    };
  }

  private caching = false;
  private readonly transposes = new Map<string, { t: Vec; of: Vec | null }>();
  private readonly stepRoom: boolean;
  private readonly steps = new Map<string, StepArrays>();

  /**
   * Arrays of n elements for linear `name`'s step state in the backend's memory (the backend's signStep
   * runs on them in place; the codes and the start's and best choices beside it), the same ones on every
   * call (layer after layer: new arrays took their pages from the system at the first touch, ~25 us a
   * 4 KiB page on the bench machine); undefined when they did not fit
   */
  stepArrays(name: string, n: number): StepArrays | undefined {
    const be = this.model.be;
    if (!this.stepRoom || be.f64) return undefined;
    let a = this.steps.get(name);
    if (!a) {
      const chF = be.alloc(Math.ceil(n / 4));
      a = { lo: be.alloc(n) as Float32Array, hi: be.alloc(n) as Float32Array, t: be.alloc(n) as Float32Array, v: be.alloc(n) as Float32Array, ch: new Uint8Array(chF.buffer, chF.byteOffset, n), loC: new Uint16Array(n), hiC: new Uint16Array(n), startCh: new Uint8Array(n), bestCh: new Uint8Array(n) };
      this.steps.set(name, a);
    }
    return a.v.length === n ? a : undefined;
  }

  /**
   * Run f with each linear's transpose kept between forwards. During f a weight changes only through
   * load / learn / staleTransposes, or element by element in both the weight and transposeOf's array
   * (refineBlock's steps); anything else would leave a stale transpose.
   */
  keepTransposes<T>(f: () => T): T {
    this.caching = true;
    try {
      return f();
    } finally {
      this.caching = false;
      this.staleTransposes();
    }
  }

  /** every kept transpose is stale (weights were rewritten) */
  staleTransposes(): void {
    for (const c of this.transposes.values()) c.of = null;
  }

  /** the kept transpose of linear `name` (rows x cols) when it is current, for a caller that changes elements of both */
  transposeOf(name: string): Vec | undefined {
    const c = this.transposes.get(`blk.0.${name}.weight`);
    return this.caching && c && c.of === this.model.weightOverride.get(`blk.0.${name}.weight`) ? c.t : undefined;
  }

  /** set the layer's tensors (name inside the layer -> values) */
  load(get: (name: string) => Float32Array): void {
    for (const n of BLOCK_TENSORS) this.model.view(`blk.0.${n}.weight`).set(get(n));
    this.staleTransposes();
  }

  /** learn linear `name` through an override array (its values change without touching the params) */
  learn(name: string, start: Float32Array): Vec {
    let v = this.values.get(name);
    if (!v) this.values.set(name, (v = this.model.be.alloc(start.length)));
    v.set(start);
    this.model.weightOverride.set(`blk.0.${name}.weight`, v);
    this.staleTransposes();
    return v;
  }

  /** every linear reads its loaded values again (no overrides) */
  unlearn(): void {
    this.model.weightOverride.clear();
  }

  /** the layer's output on window x (ctx x dim; a view valid until the next pass) */
  forward(x: Float32Array): Vec {
    this.x.set(x);
    return this.model.layerForwardOn(0, this.x);
  }

  /**
   * --autoround-block-fisher: the output error's metric (dim x dim, symmetric): the error of a token is
   * d^T M d instead of d^T d (null: the plain squared error)
   */
  metric: Float64Array | null = null;

  /** squared error of the last forward's output against target; with `backward`, its gradient (scaled by `scale`) is added to grads */
  error(y: Vec, target: Float32Array, backward = false, scale = 1): number {
    if (this.metric) return this.metricError(this.metric, y, target, backward, scale);
    let s = 0;
    for (let i = 0; i < y.length; i++) {
      const d = y[i] - target[i];
      s += d * d;
      if (backward) this.dOut[i] = 2 * d * scale;
    }
    if (backward) this.dX = this.model.layerBackwardOn(0, this.dOut);
    return s;
  }

  private metricError(M: Float64Array, y: Vec, target: Float32Array, backward: boolean, scale: number): number {
    const dim = this.config.dim;
    const d = new Float64Array(dim);
    let s = 0;
    for (let t = 0; t < y.length / dim; t++) {
      const o = t * dim;
      for (let j = 0; j < dim; j++) d[j] = y[o + j] - target[o + j];
      for (let a = 0; a < dim; a++) {
        let md = 0;
        const ra = a * dim;
        for (let b = 0; b < dim; b++) md += M[ra + b] * d[b];
        s += d[a] * md;
        if (backward) this.dOut[o + a] = 2 * md * scale;
      }
    }
    if (backward) this.dX = this.model.layerBackwardOn(0, this.dOut);
    return s;
  }

  /**
   * The summed error of iteration `it`'s minibatch: the next `batch` windows of `order`, which is reshuffled
   * with `rand` at the start of every pass over the windows; its gradient (scaled by 1 / (batch x ctx)) is added
   * to grads.
   */
  minibatchError(X: Float32Array, target: Float32Array, order: number[], rand: () => number, it: number, batch: number, inputGrad?: (window: number, dX: Vec) => void): number {
    const n = this.ctx * this.config.dim;
    let s = 0;
    for (const w of minibatchWindows(order, rand, it, batch)) {
      s += this.error(this.forward(X.subarray(w * n, (w + 1) * n)), target.subarray(w * n, (w + 1) * n), true, 1 / (batch * this.ctx));
      if (inputGrad) inputGrad(w, this.dX!);
    }
    return s;
  }

  /**
   * the layer's outputs on every window of X (nSeq x ctx x dim), or on the windows listed (the others
   * zero); into `into` (not X) when given, else a new array
   */
  outputs(X: Float32Array, windows?: readonly number[], into?: Float32Array): Float32Array {
    const n = this.ctx * this.config.dim;
    if (into && (into.length !== X.length || into.buffer === X.buffer)) fail('BlockRunner.outputs: the output array must be as long as X, apart from it');
    const out = into ?? new Float32Array(X.length);
    const list = windows ?? Array.from({ length: X.length / n }, (_, w) => w);
    if (into) {
      const listed = new Set(list);
      for (let s = 0; s < X.length / n; s++) if (!listed.has(s)) out.fill(0, s * n, (s + 1) * n);
    }
    for (const s of list) out.set(this.forward(X.subarray(s * n, (s + 1) * n)), s * n);
    return out;
  }

  /** mean squared output error per token over every window, or over the windows listed */
  loss(X: Float32Array, target: Float32Array, windows?: readonly number[]): number {
    const n = this.ctx * this.config.dim;
    const list = windows ?? Array.from({ length: X.length / n }, (_, w) => w);
    let s = 0;
    for (const w of list) s += this.error(this.forward(X.subarray(w * n, (w + 1) * n)), target.subarray(w * n, (w + 1) * n));
    return s / (list.length * this.ctx);
  }

  close(): void {
    this.model.be.close?.();
  }
}

/** a and b are the same array: one object, or views of the same elements of one buffer */
function sameArray(a: Vec | null, b: Vec): boolean {
  return a === b || (a !== null && a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.length === b.length && a.constructor === b.constructor);
}

/**
 * One signed-gradient step of every offset v against its gradient g (gemm.ts signStepRef): on the
 * backend's kernel when it has one (it falls back to the reference for arrays outside its memory).
 */
function stepOffsets(g: Vec, lv: Levels, v: Float32Array, ch: Uint8Array, values: Vec, step: number, transposed?: { t: Vec; rows: number; cols: number }, be?: Backend): void {
  if (be?.signStep) be.signStep(g, lv.lo, lv.hi, lv.t, v, ch, values, step, transposed);
  else signStepRef(g, lv.lo, lv.hi, lv.t, v, ch, values, step, transposed);
}

interface Learned {
  readonly spec: BlockLinear;
  readonly lv: Levels;
  readonly grids: BlockGrids;
  readonly v: Float32Array;
  readonly ch: Uint8Array;
  readonly startCh: Uint8Array;
  readonly bestCh: Uint8Array;
  readonly values: Vec;
}

/**
 * a learned tensor's start: every block's levels bracketed around its start bytes, offsets and choices from
 * the start values; `into`: the levels, offsets and choices written there (the step arrays), not into new arrays
 */
export function roundingStart(c: BlockCodec, w: Float32Array, start: { bytes: Uint8Array; q: Float32Array }, into?: StepArrays) {
  const N = w.length;
  const bs = c.blockSize;
  const grids = new BlockGrids(c, 1);
  const lv: Levels = into ? { lo: into.lo, hi: into.hi, t: into.t, loC: into.loC, hiC: into.hiC } : newLevels(N);
  const v = into ? into.v : new Float32Array(N);
  const ch = into ? into.ch : new Uint8Array(N);
  const nBlocks = N / bs;
  const sk = c.affine ? startChunksKernel() : null;
  if (!sk || bs > sk.chunk) {
    for (let blk = 0; blk < nBlocks; blk++) {
      bracketBlock(grids, w, blk, start.bytes, blk * c.blockBytes, lv, blk * bs, start.q);
      chooseStart(lv, start.q, ch, v, blk * bs, bs, START_MARGIN);
    }
    return { grids, lv, v, ch };
  }
  // affine grids: chunks of whole blocks in WebAssembly (the same operations as the loop above); a block
  // without an affine grid (affineGrid's n = 0: a zero scale, say) takes the loop's path after its chunk
  const per = Math.floor(sk.chunk / bs);
  const slow: number[] = [];
  for (let b0 = 0; b0 < nBlocks; b0 += per) {
    const b1 = Math.min(nBlocks, b0 + per);
    const e0 = b0 * bs;
    const e1 = b1 * bs;
    const len = e1 - e0;
    sk.w.set(w.subarray(e0, e1));
    sk.q.set(start.q.subarray(e0, e1));
    slow.length = 0;
    for (let blk = b0; blk < b1; blk++) {
      const g = affineGrid(c, grids.nCodes, start.bytes, blk * c.blockBytes);
      if (!g.n) {
        slow.push(blk);
        continue;
      }
      sk.gv.set(g.gv.subarray(0, g.n));
      sk.gc.set(g.gc.subarray(0, g.n));
      sk.run((blk - b0) * bs, g.n, bs, START_MARGIN);
    }
    lv.lo.set(sk.lo.subarray(0, len), e0);
    lv.hi.set(sk.hi.subarray(0, len), e0);
    lv.t.set(sk.t.subarray(0, len), e0);
    lv.loC.set(sk.loC.subarray(0, len), e0);
    lv.hiC.set(sk.hiC.subarray(0, len), e0);
    v.set(sk.v.subarray(0, len), e0);
    ch.set(sk.ch.subarray(0, len), e0);
    for (const blk of slow) {
      bracketBlock(grids, w, blk, start.bytes, blk * c.blockBytes, lv, blk * bs, start.q);
      chooseStart(lv, start.q, ch, v, blk * bs, bs, START_MARGIN);
    }
  }
  return { grids, lv, v, ch };
}

/**
 * Learn the rounding of `linears` on the block output: the runner holds the layer's current tensors
 * (norms and the linears not learned), xIn the layer's quantized-model input and target the float
 * layer's output on the float input (both nSeq x ctx x dim).
 */
export function refineBlock(runner: BlockRunner, linears: readonly BlockLinear[], xIn: Float32Array, target: Float32Array, o: BlockRoundOptions): BlockRoundResult {
  const t0 = performance.now();
  const { ctx, config } = runner;
  const n = ctx * config.dim;
  const nSeq = xIn.length / n;
  if (!Number.isInteger(nSeq) || nSeq < 1 || target.length !== xIn.length) fail('AutoRound (block): input and target must be whole windows of the same size');
  if (!(Number.isInteger(o.iters) && o.iters >= 0)) fail(`AutoRound (block): iterations must be a whole number >= 0, got ${o.iters}`);
  if (!(Number.isInteger(o.batch) && o.batch >= 1)) fail(`AutoRound (block): the minibatch must be at least one window, got ${o.batch}`);
  const lr = o.lr || 1 / Math.max(1, o.iters);
  const batch = Math.min(o.batch, nSeq);
  const evalEvery = o.evalEvery ?? 0;
  if (!(Number.isInteger(evalEvery) && evalEvery >= 0)) fail(`AutoRound (block): the evaluation interval must be a whole number >= 0, got ${evalEvery}`);
  const state: Learned[] = linears.map((spec) => {
    const { codec: c, w, start } = spec;
    const N = w.length;
    if (N % c.blockSize !== 0 || start.q.length !== N || start.bytes.length !== (N / c.blockSize) * c.blockBytes) fail(`AutoRound (block): ${spec.name}'s start has the wrong size`);
    // the step state in the backend's memory when it has room (its kernel steps it in place), bracketed there
    const into = runner.stepArrays(spec.name, N);
    const r = roundingStart(c, w, start, into);
    const copy = (kept: Uint8Array | undefined) => (kept ? (kept.set(r.ch), kept) : Uint8Array.from(r.ch));
    return { spec, lv: r.lv, grids: r.grids, v: r.v, ch: r.ch, startCh: copy(into?.startCh), bestCh: copy(into?.bestCh), values: runner.learn(spec.name, start.q) };
  });
  // the token embedding as a learned input (layer 0): its levels, offsets and choices like a linear's
  const inp = o.input;
  const emb = inp ? (() => {
    const { codec: c, w, start } = inp;
    const N = w.length;
    const bs = c.blockSize;
    const dim = config.dim;
    if (N % dim !== 0 || N % bs !== 0 || start.q.length !== N || start.bytes.length !== (N / bs) * c.blockBytes) fail('AutoRound (block): the embedding\'s start has the wrong size');
    if (inp.tokens.length !== nSeq || inp.tokens.some((t) => t.length !== ctx)) fail('AutoRound (block): the embedding\'s tokens must be the windows of the input');
    const { grids, lv, v, ch } = roundingStart(c, w, start);
    return { lv, grids, v, ch, startCh: Uint8Array.from(ch), bestCh: Uint8Array.from(ch), values: Float32Array.from(start.q), grad: new Float32Array(N) };
  })() : undefined;
  /** window w of xIn from the embedding's current values */
  const gather = (w: number) => {
    if (!emb || !inp) return;
    const dim = config.dim;
    const t = inp.tokens[w];
    for (let i = 0; i < ctx; i++) xIn.set(emb.values.subarray(t[i] * dim, (t[i] + 1) * dim), w * n + i * dim);
  };
  const gatherAll = () => {
    if (emb) for (let w = 0; w < nSeq; w++) gather(w);
  };
  const setValues = (from: 'ch' | 'startCh' | 'bestCh') => {
    runner.staleTransposes();
    for (const s of state) {
      const c = s[from];
      for (let e = 0; e < c.length; e++) s.values[e] = c[e] ? s.lv.hi[e] : s.lv.lo[e];
    }
    if (emb) {
      const c = emb[from];
      for (let e = 0; e < c.length; e++) emb.values[e] = c[e] ? emb.lv.hi[e] : emb.lv.lo[e];
      gatherAll();
    }
  };
  // the iterates are judged on EVAL_WINDOWS windows spread over the set (each a full forward pass)
  const evalSet = evalWindows(nSeq);
  const values = new Map(state.map((s) => [s.spec.name, s.values as Float32Array]));
  // the caller's judge only without checkpoints (they judge mid-run iterates) and without the input learner
  // (it rewrites xIn, which the caller's runtime does not see): then the runner's own loss throughout
  // (and without a metric: the caller's judge measures the plain squared error)
  const judge = !evalEvery && !emb && !runner.metric ? o.judge : undefined;
  const evalLoss = (last: boolean) => (judge ? judge.loss(values, last) : runner.loss(xIn, target, evalSet));
  const m = runner.model;
  m.inputGradient = !!emb; // only the linears' gradients are used (and the input's when the embedding learns)
  try {
    return runner.keepTransposes(() => {
      const lossStart = judge ? judge.start() : runner.loss(xIn, target, evalSet);
      let bestMini = Infinity;
      let bestEval = Infinity;
      const rand = rngStream('blockRoundOrder', o.seed);
      const order = Array.from({ length: nSeq }, (_, i) => i);
      for (let it = 0; it < o.iters; it++) {
        const step = lr * (1 - it / o.iters);
        // the step's first backward writes the layer's gradients (no refill of every gradient; the sign step
        // reads only the learned linears', where a zero is skipped whatever its sign)
        if (!m.freshGradients()) m.zeroGrads();
        if (emb) emb.grad.fill(0);
        const mini = runner.minibatchError(xIn, target, order, rand, it, batch, emb ? (w, dX) => {
          const dim = config.dim;
          const t = inp!.tokens[w];
          for (let i = 0; i < ctx; i++) {
            const r = t[i] * dim;
            for (let j = 0; j < dim; j++) emb.grad[r + j] += dX[i * dim + j];
          }
        } : undefined);
        if (!evalEvery && batch > 1 && mini < bestMini) {
          bestMini = mini;
          for (const s of state) s.bestCh.set(s.ch);
          emb?.bestCh.set(emb.ch);
        }
        // the flips go into the kept transposes too; the embedding has none (its rows are gathered into xIn)
        for (const s of state) {
          const tr = runner.transposeOf(s.spec.name);
          const cols = m.byName.get(`blk.0.${s.spec.name}.weight`)!.ne[0];
          stepOffsets(m.view(`blk.0.${s.spec.name}.weight`, m.grads), s.lv, s.v, s.ch, s.values, step, tr && { t: tr, rows: s.v.length / cols, cols }, m.be);
        }
        if (emb) {
          stepOffsets(emb.grad, emb.lv, emb.v, emb.ch, emb.values, step);
          gatherAll();
        }
        if (evalEvery && (it + 1) % evalEvery === 0 && it + 1 < o.iters) {
          const l = runner.loss(xIn, target, evalSet);
          if (l < bestEval) {
            bestEval = l;
            for (const s of state) s.bestCh.set(s.ch);
            emb?.bestCh.set(emb.ch);
          }
        }
      }
      // the best of: the last iterate, the best minibatch (or checkpoint) iterate, the start (on the evaluation windows)
      let pick: BlockRoundResult['pick'] = 'last';
      let loss = o.iters > 0 ? evalLoss(true) : lossStart;
      if (evalEvery && bestEval < loss) (loss = bestEval), (pick = 'best');
      // one window per step: the minibatch errors are of different windows, no iterate is 'best' among them
      else if (!evalEvery && o.iters > 0 && batch > 1) {
        setValues('bestCh');
        const lb = evalLoss(false);
        if (lb < loss) (loss = lb), (pick = 'best');
      }
      if (!(loss < lossStart)) (loss = lossStart), (pick = 'start');
      const final = pick === 'start' ? 'startCh' : pick === 'best' ? 'bestCh' : 'ch';
      const out = new Map<string, { bytes: Uint8Array; q: Float32Array }>();
      for (const s of state) {
        const c = s.spec.codec;
        const bytes = Uint8Array.from(s.spec.start.bytes);
        const q = writeChoices(c, s.grids, bytes, s.lv, s[final], s.v.length / c.blockSize);
        out.set(s.spec.name, { bytes, q });
      }
      setValues(final);
      let input: BlockRoundResult['input'];
      if (emb && inp) {
        const bytes = Uint8Array.from(inp.start.bytes);
        input = { bytes, q: writeChoices(inp.codec, emb.grids, bytes, emb.lv, emb[final], emb.v.length / inp.codec.blockSize) };
      }
      return { linears: out, input, lossStart, loss, pick, seconds: (performance.now() - t0) / 1000 };
    });
  } finally {
    m.inputGradient = true;
  }
}

export interface HeadRoundOptions {
  iters: number;
  /** first step (decayed linearly to 0) */
  lr: number;
  /** calibration windows per step */
  batch: number;
  seed: number;
  /** every this many steps the iterate is judged on the evaluation windows and the best kept (0 = off) */
  evalEvery?: number;
}

/**
 * AutoRound on the output head's logits: the rounding offsets of `lin` (the head, vocab x dim, from its
 * per-linear start) learned by signed gradient descent on the KL divergence of the quantized model's
 * next-token distribution from the float model's,
 *
 *   L = mean over tokens KL(softmax(W h_f) || softmax(Q h_q)),   dL/dQ = (p_q - p_f) h_q^T / tokens
 *
 * h_q: the final norm's output in the quantized model (every layer quantized), h_f: the float model's
 * (both nSeq x ctx x dim). The per-linear objective weighs every vocabulary row's output error alike;
 * this one weighs it by what it does to the distribution (the likely tokens' rows). The grids stay the
 * start's (exact codec bytes); the result is the best of the start, the last iterate and (evalEvery)
 * the checkpoints, on EVAL_WINDOWS windows.
 */
export function refineHead(lin: { codec: BlockCodec; w: Float32Array; start: { bytes: Uint8Array; q: Float32Array } }, hQ: Float32Array, hF: Float32Array, dim: number, ctx: number, o: HeadRoundOptions): { bytes: Uint8Array; q: Float32Array; lossStart: number; loss: number; pick: 'start' | 'last' | 'best'; seconds: number } {
  const t0 = performance.now();
  const { codec: c, w, start } = lin;
  const N = w.length;
  const bs = c.blockSize;
  const vocab = N / dim;
  const n = ctx * dim;
  const nSeq = hQ.length / n;
  if (!Number.isInteger(vocab) || N % bs !== 0 || start.q.length !== N || start.bytes.length !== (N / bs) * c.blockBytes) fail('AutoRound (head): the start has the wrong size');
  if (!Number.isInteger(nSeq) || nSeq < 1 || hF.length !== hQ.length) fail('AutoRound (head): inputs must be whole windows of the same size');
  if (!(Number.isInteger(o.iters) && o.iters >= 0)) fail(`AutoRound (head): iterations must be a whole number >= 0, got ${o.iters}`);
  const evalEvery = o.evalEvery ?? 0;
  const batch = Math.max(1, Math.min(o.batch, nSeq));
  const lr = o.lr || 1 / Math.max(1, o.iters);
  const { grids, lv, v, ch } = roundingStart(c, w, start);
  const startCh = Uint8Array.from(ch);
  const bestCh = Uint8Array.from(ch);
  const values = Float32Array.from(start.q);
  const zq = new Float32Array(ctx * vocab);
  const zf = new Float32Array(ctx * vocab);
  const dT = new Float32Array(vocab * ctx); // (p_q - p_f)^T, vocab x ctx
  const hT = new Float32Array(dim * ctx); // h_q^T of the window
  const gw = new Float32Array(N);
  const grad = new Float32Array(N);
  /** the summed KL of window s; with `scale`, its gradient times scale is added to grad */
  const window = (s: number, scale = 0): number => {
    const xq = hQ.subarray(s * n, (s + 1) * n);
    matmul(zq, xq, values, ctx, dim, vocab);
    matmul(zf, hF.subarray(s * n, (s + 1) * n), w, ctx, dim, vocab);
    let kl = 0;
    for (let tk = 0; tk < ctx; tk++) {
      const q = zq.subarray(tk * vocab, (tk + 1) * vocab);
      const f = zf.subarray(tk * vocab, (tk + 1) * vocab);
      let mq = -Infinity;
      let mf = -Infinity;
      for (let r = 0; r < vocab; r++) (mq = Math.max(mq, q[r])), (mf = Math.max(mf, f[r]));
      let sq = 0;
      let sf = 0;
      for (let r = 0; r < vocab; r++) (sq += Math.exp(q[r] - mq)), (sf += Math.exp(f[r] - mf));
      const lq = mq + Math.log(sq);
      const lf = mf + Math.log(sf);
      for (let r = 0; r < vocab; r++) {
        const pf = Math.exp(f[r] - lf);
        kl += pf * (f[r] - lf - (q[r] - lq));
        if (scale) dT[r * ctx + tk] = (Math.exp(q[r] - lq) - pf) * scale;
      }
    }
    if (scale) {
      for (let tk = 0; tk < ctx; tk++) for (let j = 0; j < dim; j++) hT[j * ctx + tk] = xq[tk * dim + j];
      matmul(gw, dT, hT, vocab, ctx, dim); // (p_q - p_f)^T h_q: vocab x dim
      for (let e = 0; e < N; e++) grad[e] += gw[e];
    }
    return kl;
  };
  const nEval = Math.min(nSeq, EVAL_WINDOWS);
  const evalSet = Array.from({ length: nEval }, (_, i) => Math.floor((i * nSeq) / nEval));
  const evalLoss = () => evalSet.reduce((a, s) => a + window(s), 0) / (nEval * ctx);
  const setValues = (from: Uint8Array) => {
    for (let e = 0; e < N; e++) values[e] = from[e] ? lv.hi[e] : lv.lo[e];
  };
  const lossStart = evalLoss();
  let bestEval = Infinity;
  const rand = rngStream('blockRoundOrder', o.seed) // the driver passes seed + nLayers: a stream no layer uses;
  const order = Array.from({ length: nSeq }, (_, i) => i);
  for (let it = 0; it < o.iters; it++) {
    const step = lr * (1 - it / o.iters);
    if ((it * batch) % nSeq < batch)
      for (let i = nSeq - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    grad.fill(0);
    for (let b = 0; b < batch; b++) window(order[(it * batch + b) % nSeq], 1 / (batch * ctx));
    for (let e = 0; e < N; e++) {
      const ge = grad[e];
      if (ge === 0 || lv.hi[e] === lv.lo[e]) continue;
      let vv = v[e] - (ge > 0 ? step : -step);
      vv = vv > 0.5 ? 0.5 : vv < -0.5 ? -0.5 : vv;
      v[e] = vv;
      const cc = lv.t[e] + vv >= 0.5 ? 1 : 0;
      if (cc !== ch[e]) {
        ch[e] = cc;
        values[e] = cc ? lv.hi[e] : lv.lo[e];
      }
    }
    if (evalEvery && (it + 1) % evalEvery === 0 && it + 1 < o.iters) {
      const l = evalLoss();
      if (l < bestEval) (bestEval = l), bestCh.set(ch);
    }
  }
  let pick: 'start' | 'last' | 'best' = 'last';
  let loss = o.iters > 0 ? evalLoss() : lossStart;
  if (bestEval < loss) (loss = bestEval), (pick = 'best');
  if (!(loss < lossStart)) (loss = lossStart), (pick = 'start');
  const final = pick === 'start' ? startCh : pick === 'best' ? bestCh : ch;
  const bytes = Uint8Array.from(start.bytes);
  const q = writeChoices(c, grids, bytes, lv, final, N / bs);
  setValues(final);
  return { bytes, q, lossStart, loss, pick, seconds: (performance.now() - t0) / 1000 };
}
