/**
 * The per-layer stages of calibration (LayerCalibration) over X, the residual stream of every
 * calibration window at the current layer's input:
 *   .collectHessians(l, input)   run a stage of layer l over every window, capturing the input of its
 *                                linears: H = 2 X^T X / N, mean |x|, max |x| (InputStats)
 *   .collectExpertStats(l, t)    the same per expert of a 3-D expert tensor
 *   .addPendingResiduals()       the residual writers' outputs added: the next group's input
 *   .collectHeadHessian()        the output head's input
 *   .measureKld(reference)       KL divergence of the current (partly quantized) model against reference logits
 * Its linears read the float weights being transformed and quantized; the phases are timed (timing.ts).
 * The scale folds that rewrite those weights are fold.ts; the driver that walks the family's groups is
 * layer-driver.ts.
 */
import { fail } from '../../errors.js';
import { MatmulEngine } from '../../kernels/matmul.js';
import { klDivergenceRow, logSumExp } from '../../eval/metrics.js';
import { linearOf, type LayerInput, type LinearRole, type ModelFamily } from '../../model/family.js';
import { Llama, rmsnorm } from '../../model/llama.js';
import { linear, matmul } from '../../model/matmul.js';
import type { LlamaConfig, StoredTensor } from '../../model/types.js';
import { ExpertStats, InputStats, keepsInputs, type FloatTensor } from './input-stats.js';
import { PhaseClock } from './timing.js';

/** the most f32 values staged in kernel memory for a pass over the windows (256 MiB: the rest of the kernel memory stays free for the runtime's buffers) */
const STAGE_MAX_FLOATS = 1 << 26;

/** the most bytes of X and stage outputs kept in kernel memory (the rest of its 4 GiB stays free for the kernels' buffers) */
const KERNEL_ARRAYS_MAX = 1.5 * 2 ** 30;

/** weights staged in kernel memory for a pass, and those a pass multiplied from outside it for want of room (tests) */
const stageCounts = { staged: 0, missed: 0 };
export function stagedWeightCounts(): { staged: number; missed: number } {
  return { ...stageCounts };
}

/** the per-sequence buffers a stage's output is kept in between the stages of a layer */
export const stageWidth = (c: LlamaConfig, input: LayerInput) => (input === 'attention' ? c.nHeads * c.headDim : input === 'ffn' ? c.hiddenDim : c.dim);

/**
 * The per-layer stages of calibration over X (the current layer's input for every window): a runtime
 * whose linears read the float weights being transformed and quantized, the stage outputs kept
 * between a layer's groups, and the timings.
 */
export class LayerCalibration extends PhaseClock {
  readonly model: Llama;
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
    /** kvOneLayer: the runtime's KV cache holds one layer (Llama's option: only stages run, layer after layer) */
    opts: { kvOneLayer?: boolean } = {},
  ) {
    super();
    this.model = new Llama(config, tensors, { contextLength: ctx, batch: Math.min(ctx, 512), threads, weightsInKernel: false, kvOneLayer: opts.kvOneLayer });
    this.engine = MatmulEngine.get();
    // every linear reads its weight from `weights` (the arrays the transforms and quantizers write into;
    // the runtime's own copy of a weight would go stale) with the f32 kernel on every thread
    this.model.hooks.linear = (out, x, w, nTok, expert) => {
      const t = weights.get(w.name);
      if (!t && this.notLoaded.has(w.name)) fail(`internal: ${w.name} was read while not loaded`);
      if (t && expert !== undefined && t.rows === w.rows * (config.nExperts ?? 0) && t.cols === w.cols) matmul(out, x, t.data.subarray(expert * w.rows * w.cols, (expert + 1) * w.rows * w.cols), nTok, t.cols, w.rows);
      else if (t && t.rows === w.rows && t.cols === w.cols) this.mm(out, x, t, nTok);
      else linear(out, x, w, nTok);
    };
    // the layers' matrices by their shapes: those loaded now and those the layer pass reads when it
    // reaches their layer (their stored tensors are zeros of the right size until then). Counted from
    // the loaded weights only, a model read layer by layer had no arena at all, and every linear call
    // of every window copied its weight into kernel memory a row block at a time
    const perLayer = new Map<string, number>();
    const matrices = new Map<string, number>();
    for (const t of tensors) if (t.dims.length >= 2 && t.dims.slice(1).reduce((a, b) => a * b, 1) > 1) matrices.set(t.name, t.dims.reduce((a, b) => a * b, 1));
    for (const [name, t] of weights) if (t.rows > 1) matrices.set(name, t.data.length);
    for (const [name, n] of matrices) {
      const m = /^blk\.(\d+)\./.exec(name);
      if (m) perLayer.set(m[1], (perLayer.get(m[1]) ?? 0) + ((n + 15) & ~15));
    }
    this.stageFloats = Math.min(STAGE_MAX_FLOATS, Math.max(0, ...perLayer.values()));
    this.X = this.kernelArray(windows.length * ctx * config.dim);
    this.scratch = new Float32Array(ctx * config.dim);
    // in kernel memory (when shared): the residual writers' products land there without a copy out
    this.product = this.engine?.allocF32(ctx * config.dim, this)?.array ?? new Float32Array(ctx * config.dim);
  }

  /**
   * Weights staged in kernel memory for one pass over the windows (`pass`): the f32 kernel multiplies
   * them in place instead of copying every weight in a row block at a time on every call (~4.5 GB per
   * layer of the 112M model at 128 windows). Within a pass no weight changes (the transforms and
   * quantizers run between passes), so a weight is copied once per pass; the map is emptied when the
   * outermost pass ends. The arena is one kernel allocation reused pass after pass (at most
   * STAGE_MAX_FLOATS; weights past it are multiplied as before). The products are the same bits: the
   * kernel's dot products do not depend on where the rows live or how they are split.
   */
  private readonly staged = new Map<Float32Array, Float32Array>();
  private stageArena: { array: Float32Array; used: number } | null = null;
  private passDepth = 0;
  /** the arena's size: the f32 values of the largest layer's matrices (at most STAGE_MAX_FLOATS) */
  private readonly stageFloats: number;

  /** run fn as one pass over the windows (weights staged in kernel memory until the outermost pass ends) */
  private pass<T>(fn: () => T): T {
    this.passDepth++;
    try {
      return fn();
    } finally {
      if (--this.passDepth === 0) {
        this.staged.clear();
        if (this.stageArena) this.stageArena.used = 0;
      }
    }
  }

  /** w's values in kernel memory for the current pass (w itself outside a pass, or when there is no room) */
  private stagedWeight(w: Float32Array): Float32Array {
    const e = this.engine;
    if (!e || this.passDepth === 0 || e.ptrOf(w, w.length) >= 0) return w;
    const have = this.staged.get(w);
    if (have) return have;
    if (this.stageArena === null) {
      // one layer's linears at most (the largest layer), allocated on first use and kept (owner: this)
      const slot = this.stageFloats > 0 ? e.allocF32(this.stageFloats, this) : null;
      this.stageArena = { array: slot?.array ?? new Float32Array(0), used: 0 };
    }
    const a = this.stageArena;
    const n = (w.length + 15) & ~15; // 64-byte aligned sub-allocations
    if (a.used + n > a.array.length) {
      stageCounts.missed++;
      return w;
    }
    const s = a.array.subarray(a.used, a.used + w.length);
    s.set(w);
    a.used += n;
    this.staged.set(w, s);
    stageCounts.staged++;
    return s;
  }

  /** out (nTok x t.rows) = x t.dataᵀ, t staged in kernel memory within a pass */
  private mm(out: Float32Array, x: Float32Array, t: FloatTensor, nTok: number): void {
    matmul(out, x, this.stagedWeight(t.data), nTok, t.cols, t.rows);
  }

  /** bytes of X and the stage outputs placed in kernel memory so far (at most KERNEL_ARRAYS_MAX) */
  private kernelBytes = 0;

  /**
   * n zeroed f32 for X or a stage's outputs: in kernel memory (when shared) while those stay within
   * KERNEL_ARRAYS_MAX bytes -- the kernels then read and write them in place (the residual adds, the
   * norms, the residual writers' products) -- else a plain array. The values are the same either way.
   */
  private kernelArray(n: number): Float32Array {
    if (this.engine && this.kernelBytes + 4 * n <= KERNEL_ARRAYS_MAX) {
      const slot = this.engine.allocF32(n, this);
      if (slot) {
        this.kernelBytes += 4 * n;
        return slot.array;
      }
    }
    return new Float32Array(n);
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

  private statsOf(k: number, buffer?: Float32Array, hessianInto?: Float64Array): InputStats {
    return new InputStats(k, Math.min(this.ctx, 512), this.engine, this.magnitudes, this.keepInputs && { ...this.keepInputs, buffer }, hessianInto);
  }

  /**
   * Reuse each stage's H (k x k f64) from layer to layer: collectHessians of stage `input` in layer l
   * finishes its H into the array the same stage's statistics of an earlier layer had (63 MB at k = 2816,
   * otherwise fresh memory: a page fault per 4 KiB). So the statistics collectHessians returns hold their
   * H only until the same stage runs in a later layer -- for callers that are done with a layer's
   * statistics when the next layer starts (the layer pass). Off by default.
   */
  reuseHessians = false;
  private readonly hessianBuffers = new Map<LayerInput, { layer: number; array: Float64Array }>();
  private hessianBuffer(l: number, input: LayerInput, k: number): Float64Array | undefined {
    if (!this.reuseHessians || keepsInputs(this.keepInputs, k)) return undefined;
    const b = this.hessianBuffers.get(input);
    // a stage collected again in the same layer (after a fold) gets a fresh array: its earlier statistics may still be read
    if (b && b.layer !== l && b.array.length >= k * k) {
      b.layer = l;
      return b.array;
    }
    const array = new Float64Array(k * k);
    this.hessianBuffers.set(input, { layer: l, array });
    return array;
  }

  /**
   * With keepInputs: one buffer per stage for X (every window's rows, in kernel memory when it is
   * shared), reused layer after layer -- fresh memory costs a page fault per 4 KiB (~10 µs each in a
   * virtual machine), and X of every stage of every layer was ~0.7 GB on a 1.1B model. So the
   * statistics a stage returns hold their X until the same stage runs in the next layer.
   */
  private readonly inputBuffers = new Map<LayerInput, Float32Array>();
  private inputBuffer(input: LayerInput, k: number): Float32Array | undefined {
    const n = this.nSeq * this.ctx * k;
    if (!keepsInputs(this.keepInputs, k)) return undefined;
    let b = this.inputBuffers.get(input);
    if (!b || b.length < n) this.inputBuffers.set(input, (b = this.engine?.allocF32(n, this)?.array ?? new Float32Array(n)));
    return b.subarray(0, n);
  }

  /**
   * Stage "collect Hessians": run stage `input` of layer l over every window (its outputs kept per
   * window for a later residual add when it is not a norm) and return the statistics of its output,
   * the input of the linears that read it.
   */
  collectHessians(l: number, input: LayerInput): InputStats {
    return this.pass(() => {
      this.layer = l;
      const width = stageWidth(this.config, input);
      const keep = input === 'attention' || input === 'ffn';
      const n = this.ctx * width;
      let outs = this.outs.get(input);
      if (keep && !outs) {
        const all = this.kernelArray(this.nSeq * n);
        this.outs.set(input, (outs = Array.from({ length: this.nSeq }, (_, s) => all.subarray(s * n, (s + 1) * n))));
      }
      const st = this.statsOf(width, this.inputBuffer(input, width), this.hessianBuffer(l, input, width));
      // `per` windows' outputs lying one after another in kernel memory (the kept ones, or a ring of per
      // windows) are one product of H where they lie, no copy of the rows: where add() of the windows one
      // by one (in blocks of at most 512 rows) gathers exactly that many rows before each product
      const span = st.productRows;
      const per = span > 0 && span % this.ctx === 0 && (this.ctx <= 512 || this.ctx % 512 === 0) ? span / this.ctx : 0;
      const ring = !keep && per > 0 ? this.stageRing(per * n) : null;
      const outOf = (s: number) => (keep ? outs![s] : ring ? ring.subarray((s % per) * n, (s % per + 1) * n) : this.scratch);
      const addWindow = (out: Float32Array) => {
        for (let b = 0; b < this.ctx; b += 512) {
          const nb = Math.min(512, this.ctx - b);
          st.add(out.subarray(b * width, (b + nb) * width), nb);
        }
      };
      let from = 0; // the first window not added yet
      for (let s = 0; s < this.nSeq; s++) {
        const out = outOf(s);
        this.timed('forward', () => this.model.runStage(input, l, this.seq(s), out));
        if (per === 0) {
          this.timed('statistics', () => addWindow(out));
          from = s + 1;
        }
        else if (s + 1 - from === per)
          this.timed('statistics', () => {
            const first = outOf(from); // (from is a multiple of per: the ring's first slot)
            if (!st.addInPlace(new Float32Array(first.buffer, first.byteOffset, per * n), per * this.ctx)) for (let w = from; w <= s; w++) addWindow(outOf(w));
            from = s + 1;
          });
      }
      for (let w = from; w < this.nSeq; w++) this.timed('statistics', () => addWindow(outOf(w)));
      this.timed('statistics', () => st.finish());
      return st;
    });
  }

  private ring: Float32Array | null = null;
  /** n floats in kernel memory (when shared) for the outputs of a few windows of a stage that are not kept, reused stage after stage */
  private stageRing(n: number): Float32Array {
    if (!this.ring || this.ring.length < n) this.ring = this.engine?.allocF32(n, this)?.array ?? new Float32Array(n);
    return this.ring.subarray(0, n);
  }

  /** the statistics of the output head's input (the final RMSNorm of X; no logits are computed) */
  collectHeadHessian(): InputStats {
    const { dim, normEps } = this.config;
    const st = new InputStats(dim, 512, this.engine, this.keepInputs ? this.magnitudes : true, this.keepInputs);
    const rows = this.scratch;
    for (let s = 0; s < this.nSeq; s++)
      this.timed('statistics', () => {
        if (this.engine) this.engine.rmsnorm(rows, this.seq(s), this.model.weights.outputNorm, this.ctx, dim, normEps); // the same bits
        else rmsnorm(rows, this.seq(s), this.model.weights.outputNorm, this.ctx, dim, normEps);
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
    return this.pass(() => {
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
              this.mm(this.product, xs[s], t, this.ctx);
              this.addResidual(this.seq(s), layer, input);
            }
          }
        });
    });
  }

  /**
   * Window s of X with the pending residuals added (what addPendingResiduals would leave there, the same
   * operations in the same order) into out; X and the pending list stay as they are.
   */
  peekPendingResiduals(s: number, out: Float32Array): Float32Array {
    return this.pass(() => {
      out.set(this.seq(s));
      for (const { input, writers, layer, moe } of this.pending)
        this.timed('forward', () => {
          if (moe) fail('internal: peekPendingResiduals with an expert block');
          for (const name of writers) {
            const t = this.weights.get(name)!;
            this.mm(this.product, this.outs.get(input)![s], t, this.ctx);
            this.addResidual(out, layer, input);
          }
        });
      return out;
    });
  }

  /** layer l (its current weights) on window s of xIn (residual stream at layer l) into out */
  layerOutput(l: number, xIn: Float32Array, s: number, out: Float32Array): Float32Array {
    return this.pass(() => {
      const n = this.ctx * this.config.dim;
      out.set(xIn.subarray(s * n, (s + 1) * n));
      const att = new Float32Array(this.ctx * stageWidth(this.config, 'attention'));
      const act = new Float32Array(this.ctx * stageWidth(this.config, 'ffn'));
      this.timed('forward', () => this.layerOn(out, l, att, act));
      return out;
    });
  }

  /** r += this.product, through the layer's post-norm of that block when the family has one (Gemma) */
  private addResidual(r: Float32Array, layer: number, input: LayerInput): void {
    const g = this.weights.get(`blk.${layer}.${input === 'attention' ? 'post_attention_norm' : 'post_ffw_norm'}.weight`)?.data;
    if (g) rmsnorm(this.product, this.product, g, r.length / this.config.dim, this.config.dim, this.config.normEps);
    if (this.engine?.addInto(r, this.product, r.length)) return; // the same f32 sums in WebAssembly
    for (let i = 0; i < r.length; i++) r[i] += this.product[i];
  }

  /**
   * Stage "collect Hessians" of a mixture of experts: run layer l's expert block over every window and
   * keep the input statistics of each expert's matrix of `tensor` (ffn_gate_exps: the rows routed to the
   * expert; ffn_down_exps: its inner activations), and of all experts pooled.
   */
  collectExpertStats(l: number, tensor: string): ExpertStats {
    return this.pass(() => {
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
    });
  }

  /** the float biases (the pipeline's copy and the runtime's) of a layer's q/k/v producer, to scale with its rows */
  biasOf(l: number, gguf: string): Float32Array[] {
    const L = this.model.weights.layers[l];
    const runtime = gguf === 'attn_q' ? L.bq : gguf === 'attn_k' ? L.bk : gguf === 'attn_v' ? L.bv : undefined;
    const own = this.weights.get(`blk.${l}.${gguf}.bias`)?.data;
    return [own, runtime].filter((b): b is Float32Array => b !== undefined);
  }

  /**
   * Stage "measure KLD": mean KL divergence (nats per token) of the current model's next-token
   * distributions from `reference` logits (ctx x vocab per window), running the layers from
   * `fromLayer` on `x` (the residual stream at that layer for every window, e.g. X kept before a layer
   * was quantized) through the head. The model reads the current float weights.
   */
  measureKld(reference: readonly Float32Array[], x: Float32Array = this.X, fromLayer = this.layer): number {
    return this.pass(() => {
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
    });
  }

  /** the logits of every window from the residual stream x at layer fromLayer (measureKld's reference) */
  referenceLogits(x: Float32Array = this.X, fromLayer = this.layer): Float32Array[] {
    return this.pass(() => {
      return this.windows.map((_, s) => this.logitsFrom(x, fromLayer, s, new Float32Array(this.ctx * this.config.vocabSize)));
    });
  }

  /** h (one window's residual stream) through layer l with the current weights; att, act: stage scratch */
  private layerOn(h: Float32Array, l: number, att: Float32Array, act: Float32Array): void {
    const add = (src: Float32Array, role: LinearRole, input: LayerInput) => {
      const t = this.weights.get(`blk.${l}.${linearOf(this.family, role).gguf}.weight`)!;
      this.mm(this.product, src, t, this.ctx);
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
    return this.pass(() => {
      this.pending = [];
      this.X.set(xIn);
      const att = new Float32Array(this.ctx * stageWidth(this.config, 'attention'));
      const act = new Float32Array(this.ctx * stageWidth(this.config, 'ffn'));
      this.timed('forward', () => { for (let s = 0; s < this.nSeq; s++) this.layerOn(this.seq(s), l, att, act); });
    });
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
