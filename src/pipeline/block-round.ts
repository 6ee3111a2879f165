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
import { bracketBlock, chooseStart, newLevels, writeChoices, type Levels } from '../algos/autoround.js';
import { BlockGrids, type BlockCodec } from '../algos/block-codec.js';
import type { ModelConfig } from '../model/family.js';
import { rngStream } from '../rng.js';
import { referenceBackend, wasmBackend, type Vec } from '../train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';

/**
 * Steps of the block objective (and of its per-linear start after GPTQ) by default, one calibration
 * window each (--autoround-batch 1): 20 window passes per layer. On tinyllama256 Q3_K --pure
 * (gptq+autoround) 20 x 1 and 40 x 1 gave the KLD of 40 steps of 4 windows (160 passes) within its
 * standard error (docs/ptq.md).
 */
export const BLOCK_ITERS = 20;
/**
 * The block objective's first step by default: BLOCK_MOVE * 2 / steps, decayed linearly, so an offset
 * moves at most BLOCK_MOVE in all (0.01 at 20 steps, 0.005 — AutoRound's 1 / 200 — at 40).
 */
export const BLOCK_MOVE = 0.1;
/** iterations of the per-linear objective by default (within 0.2 % of 200's output error) */
export const LINEAR_ITERS = 100;

/**
 * AutoRound's iterations and first step (0 = the default). The block objective's steps: BLOCK_ITERS from
 * 2 BLOCK_MOVE / steps. The per-linear stage (the block objective's start, or the whole method on
 * --autoround-objective linear): LINEAR_ITERS from 1 / iterations, except that after GPTQ on the block
 * objective it takes the block's schedule (measured so: 0.68x GPTQ's KLD on tinyllama256 Q3_K; from
 * round to nearest the block's small steps left the start near RTN, 1.22x).
 */
export function autoroundSchedule(o: { autoroundIters: number; autoroundLr: number; autoroundObjective: 'block' | 'linear' }, stage: 'block' | 'linear', afterGptq = false): { iters: number; lr: number } {
  if (stage === 'block' || (afterGptq && o.autoroundObjective === 'block')) {
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
  /** who measures the start and the iterates on the evaluation windows (default: the runner's forward) */
  judge?: BlockJudge;
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

/** every window refineBlock reads with these options (its minibatches and evaluation windows), ascending */
export function blockWindowsUsed(nSeq: number, o: Pick<BlockRoundOptions, 'iters' | 'batch' | 'seed'>): number[] {
  const used = new Set(evalWindows(nSeq));
  const rand = rngStream('blockRoundOrder', o.seed);
  const order = Array.from({ length: nSeq }, (_, i) => i);
  const batch = Math.min(o.batch, nSeq);
  for (let it = 0; it < o.iters; it++) for (const w of minibatchWindows(order, rand, it, batch)) used.add(w);
  return [...used].sort((a, b) => a - b);
}

export interface BlockRoundResult {
  /** per linear name: the bytes and their exact values */
  readonly linears: Map<string, { bytes: Uint8Array; q: Float32Array }>;
  /** mean squared block-output error per token at the start and at the end (on EVAL_WINDOWS windows of the calibration set) */
  readonly lossStart: number;
  readonly loss: number;
  readonly pick: 'start' | 'last' | 'best';
  readonly seconds: number;
}

/** One LLaMA layer on the training engine (batch 1, ctx tokens), fed window by window. */
export class BlockRunner {
  readonly model: TrainModel;
  private readonly dOut: Vec;
  private readonly x: Vec;
  /** the override arrays the learned linears' current values live in (allocated by the backend) */
  readonly values = new Map<string, Vec>();

  constructor(readonly config: ModelConfig, readonly ctx: number, threads = 1) {
    const tc: TrainConfig = { ...config, nLayers: 1, vocabSize: 1, seqLen: ctx, tiedOutput: true, nExperts: undefined };
    const mo = { batch: 1, ctx };
    const qDim = config.nHeads * config.headDim;
    const kvDim = config.nKvHeads * config.headDim;
    const linearFloats = config.dim * (2 * qDim + 2 * kvDim + 3 * config.hiddenDim);
    // the override arrays and the linears' transposes (the cache below)
    const extra = 2 * ctx * config.dim + 2 * linearFloats + 64 * 32;
    const be = wasmBackend(trainModelFloats(tc, mo) + extra, threads) ?? referenceBackend('f32');
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
        if (c.of !== w) {
          be.transpose(c.t, 0, rows, w, 0, cols, rows, cols);
          c.of = w;
        }
        be.gemm(y, 0, rows, x, 0, cols, c.t, 0, rows, n, cols, rows, false);
      },
      backward: (...a) => plain.backward(...a),
    };
  }

  private caching = false;
  private readonly transposes = new Map<string, { t: Vec; of: Vec | null }>();

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

  /** squared error of the last forward's output against target; with `backward`, its gradient (scaled by `scale`) is added to grads */
  error(y: Vec, target: Float32Array, backward = false, scale = 1): number {
    let s = 0;
    for (let i = 0; i < y.length; i++) {
      const d = y[i] - target[i];
      s += d * d;
      if (backward) this.dOut[i] = 2 * d * scale;
    }
    if (backward) this.model.layerBackwardOn(0, this.dOut);
    return s;
  }

  /**
   * The summed error of iteration `it`'s minibatch: the next `batch` windows of `order`, which is reshuffled
   * with `rand` at the start of every pass over the windows; its gradient (scaled by 1 / (batch x ctx)) is added
   * to grads.
   */
  minibatchError(X: Float32Array, target: Float32Array, order: number[], rand: () => number, it: number, batch: number): number {
    const n = this.ctx * this.config.dim;
    let s = 0;
    for (const w of minibatchWindows(order, rand, it, batch)) {
      s += this.error(this.forward(X.subarray(w * n, (w + 1) * n)), target.subarray(w * n, (w + 1) * n), true, 1 / (batch * this.ctx));
    }
    return s;
  }

  /** the layer's outputs on every window of X (nSeq x ctx x dim), or on the windows listed (the others stay zero) */
  outputs(X: Float32Array, windows?: readonly number[]): Float32Array {
    const n = this.ctx * this.config.dim;
    const out = new Float32Array(X.length);
    for (const s of windows ?? Array.from({ length: X.length / n }, (_, w) => w)) out.set(this.forward(X.subarray(s * n, (s + 1) * n)), s * n);
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

/**
 * One signed-gradient step of every offset v against its gradient g (straight-through: dL/dv = g (hi - lo),
 * hi >= lo): v -= step sign(g), clamped to [-0.5, 0.5]; an element whose choice t + v >= 0.5 changes
 * takes its new level in `values`. Elements with one level (hi = lo) or no gradient stay.
 */
function stepOffsets(g: Vec, lv: Levels, v: Float32Array, ch: Uint8Array, values: Vec, step: number, transposed?: { t: Vec; rows: number; cols: number }): void {
  const { lo, hi, t } = lv;
  const n = v.length;
  for (let e = 0; e < n; e++) {
    const ge = g[e];
    const h = hi[e];
    const l = lo[e];
    if (ge === 0 || h === l) continue;
    const vv = Math.min(0.5, Math.max(-0.5, v[e] - step * Math.sign(ge)));
    v[e] = vv;
    const c = t[e] + vv >= 0.5 ? 1 : 0;
    if (c !== ch[e]) {
      ch[e] = c;
      const q = c ? h : l;
      values[e] = q;
      if (transposed) {
        const r = (e / transposed.cols) | 0;
        transposed.t[(e - r * transposed.cols) * transposed.rows + r] = q;
      }
    }
  }
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
  const state: Learned[] = linears.map((spec) => {
    const { codec: c, w, start } = spec;
    const N = w.length;
    const bs = c.blockSize;
    const grids = new BlockGrids(c, 1);
    const lv = newLevels(N);
    const v = new Float32Array(N);
    const ch = new Uint8Array(N);
    if (N % bs !== 0 || start.q.length !== N || start.bytes.length !== (N / bs) * c.blockBytes) fail(`AutoRound (block): ${spec.name}'s start has the wrong size`);
    for (let blk = 0; blk < N / bs; blk++) {
      bracketBlock(grids, w, blk, start.bytes, blk * c.blockBytes, lv, blk * bs, start.q);
      chooseStart(lv, start.q, ch, v, blk * bs, bs, START_MARGIN);
    }
    return { spec, lv, grids, v, ch, startCh: Uint8Array.from(ch), bestCh: Uint8Array.from(ch), values: runner.learn(spec.name, start.q) };
  });
  const setValues = (from: 'ch' | 'startCh' | 'bestCh') => {
    runner.staleTransposes();
    for (const s of state) {
      const c = s[from];
      for (let e = 0; e < c.length; e++) s.values[e] = c[e] ? s.lv.hi[e] : s.lv.lo[e];
    }
  };
  // the iterates are judged on EVAL_WINDOWS windows spread over the set (each a full forward pass)
  const evalSet = evalWindows(nSeq);
  const values = new Map(state.map((s) => [s.spec.name, s.values as Float32Array]));
  const judge = (last: boolean) => (o.judge ? o.judge.loss(values, last) : runner.loss(xIn, target, evalSet));
  const m = runner.model;
  m.inputGradient = false; // only the linears' gradients are used
  try {
    return runner.keepTransposes(() => {
      const lossStart = o.judge ? o.judge.start() : runner.loss(xIn, target, evalSet);
      let bestMini = Infinity;
      const rand = rngStream('blockRoundOrder', o.seed);
      const order = Array.from({ length: nSeq }, (_, i) => i);
      for (let it = 0; it < o.iters; it++) {
        const step = lr * (1 - it / o.iters);
        m.zeroGrads();
        const mini = runner.minibatchError(xIn, target, order, rand, it, batch);
        if (batch > 1 && mini < bestMini) {
          bestMini = mini;
          for (const s of state) s.bestCh.set(s.ch);
        }
        for (const s of state) {
            const tr = runner.transposeOf(s.spec.name);
            const cols = m.byName.get(`blk.0.${s.spec.name}.weight`)!.ne[0];
            stepOffsets(m.view(`blk.0.${s.spec.name}.weight`, m.grads), s.lv, s.v, s.ch, s.values, step, tr && { t: tr, rows: s.v.length / cols, cols });
        }
      }
      // the best of: the last iterate, the best minibatch iterate, the start (on the evaluation windows)
      let pick: BlockRoundResult['pick'] = 'last';
      let loss = o.iters > 0 ? judge(true) : lossStart;
      // one window per step: the minibatch errors are of different windows, no iterate is 'best' among them
      if (o.iters > 0 && batch > 1) {
        setValues('bestCh');
        const lb = judge(false);
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
      return { linears: out, lossStart, loss, pick, seconds: (performance.now() - t0) / 1000 };
    });
  } finally {
    m.inputGradient = true;
  }
}
