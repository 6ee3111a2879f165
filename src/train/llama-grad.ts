/**
 * The LLaMA forward and backward pass for training, in the manner of llm.c: parameters and gradients in
 * one flat array each (GGUF tensor order), activations in preallocated buffers with a shape comment,
 * and the backward pass written as the forward pass read backwards.
 *
 *   x = token_embd[tokens]                                                    N x dim  (N = B sequences x T)
 *   per layer: a = rmsnorm(x) ; q, k, v = a Wqᵀ, a Wkᵀ, a Wvᵀ ; q, k = RoPE(q), RoPE(k)
 *              o = causal softmax(q kᵀ / sqrt(headDim)) v   (query head h reads kv head h / (nHeads/nKvHeads))
 *              x = x + o Woᵀ
 *              f = rmsnorm(x) ; x = x + (silu(f Wgateᵀ) * (f Wupᵀ)) Wdownᵀ
 *   logits = rmsnorm(x) Woutputᵀ ; loss = mean over targets of -log softmax(logits)[target]
 *
 * The same math as src/model/llama.ts and llama.cpp's llama graph (RoPE on pairs (2i, 2i+1)), so a
 * trained model written as GGUF runs unchanged in both. The code is generic over the array type: the
 * f64 reference backend runs it in double precision for finite-difference checks.
 *
 * Linear layers go through a LinearOp (default: exact f32 products); the low-precision training
 * modes (src/train/precision.ts) and fake quantization (src/train/qat.ts) plug in there, and
 * `weightOverride` replaces the weight a linear layer sees (its gradient lands in grads as the gradient
 * with respect to that weight, for the caller to map back).
 *
 * Memory: activations of every layer are kept for the backward pass, unless `checkpointActivations`:
 * then only each layer's input is kept and the layer is recomputed during the backward pass (one layer's
 * activations in memory instead of nLayers').
 */
import { fail } from '../errors.js';
import type { LlamaConfig } from '../model/types.js';
import { siluBackwardRef, siluForwardRef, softmaxRowsRef, type AttentionShape, type Backend, type Vec } from './gemm.js';
import { llamaTensorShapes } from '../model/llama-shapes.js';

export interface TrainConfig extends LlamaConfig {
  /** output layer shares token_embd (no output.weight tensor) */
  tiedOutput: boolean;
}

/** One named tensor inside the flat parameter array: ne in ggml order (ne[0] = row length). */
export interface ParamTensor {
  readonly name: string;
  readonly ne: readonly number[];
  readonly offset: number;
  readonly size: number;
  /** rows x cols of a matrix (1 x n for a vector) */
  readonly rows: number;
  readonly cols: number;
  /** matrices get weight decay, norms do not */
  readonly decay: boolean;
}

export function paramLayout(c: TrainConfig): { tensors: ParamTensor[]; total: number } {
  let offset = 0;
  const tensors = llamaTensorShapes(c, c.tiedOutput).map((s) => {
    const size = s.ne.reduce((a, b) => a * b, 1);
    const t: ParamTensor = { name: s.name, ne: s.ne, offset, size, rows: s.ne[1] ?? 1, cols: s.ne[0], decay: s.ne.length > 1 };
    offset += size;
    return t;
  });
  return { tensors, total: offset };
}

/**
 * Attention's products run causally, in blocks of this many query rows: a block of rows r0..r1 needs
 * positions 0..r1 only (P, dP and dS are 0 past the diagonal), about half of the full T x T products.
 * The same values as the full products: each output is the same sequential sum, the terms left out are
 * products with an exact 0 at its end (o, dq) or start (dv, dk), which add +-0 to a sum that is never -0.
 */
export const CAUSAL_ROWS = 64;

/** Validate a training config; a clear error for shapes that do not fit. */
export function checkTrainConfig(c: TrainConfig): void {
  const ints: (keyof TrainConfig)[] = ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'seqLen', 'headDim', 'ropeDim'];
  for (const k of ints) if (!(Number.isInteger(c[k]) && (c[k] as number) > 0)) fail(`config: ${k} must be a positive integer (got ${String(c[k])})`);
  if (c.dim % c.nHeads !== 0) fail(`config: ${c.nHeads} heads do not divide dim ${c.dim}`);
  if (c.nHeads % c.nKvHeads !== 0) fail(`config: ${c.nKvHeads} kv heads do not divide ${c.nHeads} heads`);
  if (c.headDim !== c.dim / c.nHeads) fail(`config: head size ${c.headDim} must be dim / heads = ${c.dim / c.nHeads}`);
  if (c.ropeDim % 2 !== 0 || c.ropeDim > c.headDim) fail(`config: RoPE dimension ${c.ropeDim} must be even and at most the head size ${c.headDim}`);
  if (c.ropeStyle !== 'normal') fail('config: training uses the normal (interleaved) RoPE layout');
  if (!(c.normEps > 0) || !(c.ropeTheta > 0)) fail('config: normEps and ropeTheta must be positive');
}

/** How one linear layer multiplies: y = x Wᵀ forward, dx = dy W and dW += dyᵀ x backward. */
export interface LinearOp {
  /** y (n x rows) = x (n x cols) · wᵀ (w: rows x cols) */
  forward(name: string, y: Vec, x: Vec, w: Vec, n: number, rows: number, cols: number): void;
  /** dx (n x cols) = dy · w (when dx is given, overwritten); dw (rows x cols) += dyᵀ · x (= with `overwrite`, where `overwrites`) */
  backward(name: string, dx: Vec | null, dw: Vec, dy: Vec, x: Vec, w: Vec, n: number, rows: number, cols: number, overwrite?: boolean): void;
  /** backward honours `overwrite` (TrainModel.freshGrads is used only then) */
  readonly overwrites?: boolean;
}

/** Exact products on the backend (scratch arrays for the transposes). */
export function exactLinear(be: Backend, scratch: () => { t1: Vec; t2: Vec }): LinearOp {
  return {
    forward(_name, y, x, w, n, rows, cols) {
      const { t1 } = scratch();
      be.transpose(t1, 0, rows, w, 0, cols, rows, cols); // wᵀ: cols x rows
      be.gemm(y, 0, rows, x, 0, cols, t1, 0, rows, n, cols, rows, false);
    },
    backward(_name, dx, dw, dy, x, w, n, rows, cols, overwrite = false) {
      if (dx) be.gemm(dx, 0, cols, dy, 0, rows, w, 0, cols, n, rows, cols, false);
      // dyᵀ read in place where the backend can (the same bits as the transposed copy)
      if (be.gemmTA?.(dw, 0, cols, dy, 0, rows, x, 0, cols, rows, n, cols, !overwrite)) return;
      const { t2 } = scratch();
      be.transpose(t2, 0, n, dy, 0, rows, n, rows); // dyᵀ: rows x n
      be.gemm(dw, 0, cols, t2, 0, n, x, 0, cols, rows, n, cols, !overwrite);
    },
    overwrites: true,
  };
}

interface LayerActs {
  x: Vec; // (N, dim) layer input
  a: Vec; // (N, dim) rmsnorm(x) with attn_norm
  rA: Vec; // (N) 1/rms of x
  q: Vec; // (N, qDim) after RoPE
  k: Vec; // (N, kvDim) after RoPE
  v: Vec; // (N, kvDim)
  p: Vec; // (B, nHeads, T, T) attention probabilities (row t: positions 0..t)
  o: Vec; // (N, qDim) attention output (input of Wo)
  x2: Vec; // (N, dim) x + o Woᵀ
  f: Vec; // (N, dim) rmsnorm(x2) with ffn_norm
  rF: Vec; // (N)
  g: Vec; // (N, hidden) gate pre-activation
  u: Vec; // (N, hidden) up
  h: Vec; // (N, hidden) silu(g) * u (input of Wdown)
}

export interface TrainModelOptions {
  /** sequences per micro-batch */
  batch: number;
  /** tokens per sequence */
  ctx: number;
  checkpointActivations?: boolean;
}

/** Floats a TrainModel takes from its backend (to size the WebAssembly memory up front). */
export function trainModelFloats(c: TrainConfig, o: TrainModelOptions): number {
  return planBuffers(c, o).reduce((s, [, n]) => s + n + 16, 0) + paramLayout(c).total * 2;
}

function planBuffers(c: TrainConfig, o: TrainModelOptions): [string, number][] {
  const N = o.batch * o.ctx;
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const T = o.ctx;
  const layer = (l: number): [string, number][] => [
    [`a${l}`, N * c.dim], [`rA${l}`, N], [`q${l}`, N * qDim], [`k${l}`, N * kvDim], [`v${l}`, N * kvDim], [`p${l}`, o.batch * c.nHeads * T * T],
    [`o${l}`, N * qDim], [`x2${l}`, N * c.dim], [`f${l}`, N * c.dim], [`rF${l}`, N], [`g${l}`, N * c.hiddenDim], [`u${l}`, N * c.hiddenDim], [`h${l}`, N * c.hiddenDim],
  ];
  const sets = o.checkpointActivations ? 1 : c.nLayers;
  const big = Math.max(c.dim, c.hiddenDim, qDim) ;
  const bufs: [string, number][] = [];
  for (let l = 0; l <= c.nLayers; l++) bufs.push([`x${l}`, N * c.dim]);
  for (let l = 0; l < sets; l++) bufs.push(...layer(l));
  bufs.push(
    ['xf', N * c.dim], ['rFinal', N], ['logits', N * c.vocabSize],
    ['dx', N * c.dim], ['dx2', N * c.dim], ['da', N * c.dim], ['dq', N * qDim], ['dk', N * kvDim], ['dv', N * kvDim], ['do', N * qDim],
    ['dh', N * c.hiddenDim], ['dg', N * c.hiddenDim], ['du', N * c.hiddenDim], ['dlogits', N * c.vocabSize],
    ['t1', Math.max(big * big, c.vocabSize * c.dim, c.hiddenDim * c.dim, T * T)], ['t2', Math.max(N * Math.max(c.vocabSize, big), T * T)],
    ['ktr', c.headDim * T], ['dp', T * T], ['tmp', T * Math.max(c.headDim, T)],
    ['rope', 4 * T * (c.ropeDim / 2)], // RoPE's cos and sin tables (f64, T x ropeDim / 2 each), in the backend's memory
  );
  return bufs;
}

export class TrainModel {
  readonly config: TrainConfig;
  readonly be: Backend;
  readonly batch: number;
  readonly ctx: number;
  readonly checkpointActivations: boolean;
  readonly tensors: ParamTensor[];
  readonly byName: Map<string, ParamTensor>;
  /** all parameters, GGUF tensor order */
  readonly params: Vec;
  /** gradients, same layout (accumulated by backward until zeroGrads) */
  readonly grads: Vec;
  /** how linear layers multiply (precision modes replace it) */
  linear: LinearOp;
  /** a replacement for the weight a linear layer uses (fake quantization); its gradient lands in grads */
  weightOverride = new Map<string, Vec>();
  /**
   * Called by backward for each layer with the loss gradient of its keys before RoPE and of its values
   * ((batch x ctx) rows of nKvHeads * headDim each; views, valid during the call): KVQuant's Fisher
   * weights (src/eval/kv-calibrate.ts).
   */
  onKvGrads: ((layer: number, dk: Vec, dv: Vec) => void) | null = null;
  /**
   * false: layerBackwardOn(0) leaves out the gradient of the layer's input (and attn_norm's), for callers
   * that learn only the first layer's linears (AutoRound's block objective): the q/k/v input products are skipped.
   */
  inputGradient = true;
  /** attention's query rows per causal block (CAUSAL_ROWS; ctx or more: the full T x T products) */
  causalRows = CAUSAL_ROWS;
  /**
   * Called by backward with the loss gradient of the residual stream at layer l's input (l = nLayers: the
   * last layer's output) for l = nLayers, ..., 0 ((batch x ctx) x dim; a view, valid during the call):
   * the Fisher of the block outputs (src/pipeline/embedding-fisher.ts).
   */
  onResidualGrads: ((l: number, dx: Vec) => void) | null = null;
  private readonly buf = new Map<string, Vec>();
  private readonly acts: LayerActs[] = [];
  private readonly ropeCos: Float64Array; // (T, ropeDim/2)
  private readonly ropeSin: Float64Array;
  private tokens = new Int32Array(0);
  private targets = new Int32Array(0);

  constructor(config: TrainConfig, backend: Backend, opts: TrainModelOptions) {
    checkTrainConfig(config);
    if (!(Number.isInteger(opts.batch) && opts.batch > 0 && Number.isInteger(opts.ctx) && opts.ctx > 0)) fail(`batch ${opts.batch} and ctx ${opts.ctx} must be positive integers`);
    this.config = config;
    this.be = backend;
    this.batch = opts.batch;
    this.ctx = opts.ctx;
    this.checkpointActivations = opts.checkpointActivations ?? false;
    const layout = paramLayout(config);
    this.tensors = layout.tensors;
    this.byName = new Map(this.tensors.map((t) => [t.name, t]));
    this.params = backend.alloc(layout.total);
    this.grads = backend.alloc(layout.total);
    for (const [name, n] of planBuffers(config, opts)) this.buf.set(name, backend.alloc(n));
    const sets = this.checkpointActivations ? 1 : config.nLayers;
    for (let l = 0; l < config.nLayers; l++) {
      const s = l % sets;
      const b = (n: string) => this.buf.get(`${n}${s}`)!;
      this.acts.push({ x: this.buf.get(`x${l}`)!, a: b('a'), rA: b('rA'), q: b('q'), k: b('k'), v: b('v'), p: b('p'), o: b('o'), x2: b('x2'), f: b('f'), rF: b('rF'), g: b('g'), u: b('u'), h: b('h') });
    }
    const half = config.ropeDim / 2;
    // the tables in the backend's memory (its RoPE kernel reads them there): f64 views of the 'rope' buffer
    const tab = this.buf.get('rope')!;
    const f64 = tab instanceof Float64Array ? tab : new Float64Array(tab.buffer, tab.byteOffset, 2 * this.ctx * half);
    this.ropeCos = f64.subarray(0, this.ctx * half);
    this.ropeSin = f64.subarray(this.ctx * half, 2 * this.ctx * half);
    for (let p = 0; p < this.ctx; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p * Math.pow(config.ropeTheta, (-2 * i) / config.ropeDim);
        this.ropeCos[p * half + i] = Math.cos(angle);
        this.ropeSin[p * half + i] = Math.sin(angle);
      }
    }
    this.linear = exactLinear(backend, () => ({ t1: this.buf.get('t1')!, t2: this.buf.get('t2')! }));
  }

  /** the parameter (or gradient, with `of = grads`) tensor as a view */
  view(name: string, of: Vec = this.params): Vec {
    const t = this.byName.get(name);
    if (!t) fail(`no parameter named ${name}`);
    return of.subarray(t.offset, t.offset + t.size);
  }

  /** names of the linear layers (weights multiplied by activations), in order */
  linearNames(): string[] {
    return this.tensors.filter((t) => t.ne.length === 2 && t.name !== 'token_embd.weight').map((t) => t.name);
  }

  /**
   * Initialize as llama2.c / GPT-2 do: matrices normal(0, 0.02), the projections into the residual
   * stream (attn_output, ffn_down) scaled by 1/sqrt(2 nLayers), norms 1. `normal` draws N(0, 1).
   */
  initialize(normal: () => number): void {
    const resid = 0.02 / Math.sqrt(2 * this.config.nLayers);
    for (const t of this.tensors) {
      const v = this.view(t.name);
      if (!t.decay) v.fill(1);
      else {
        const std = /attn_output|ffn_down/.test(t.name) ? resid : 0.02;
        for (let i = 0; i < v.length; i++) v[i] = normal() * std;
      }
    }
  }

  zeroGrads(): void {
    this.grads.fill(0);
  }

  /**
   * The next layerBackwardOn writes the layer's gradients instead of adding to them (its linears' dW =
   * dyᵀ x, its norms' from 0), where the linear op `overwrites`: what zeroGrads then layerBackwardOn gives
   * for that layer's tensors, up to the sign of a zero sum (0 + -0 is +0), without refilling every
   * gradient (AutoRound's block steps). The other tensors' gradients are left as they are. Use
   * `freshGradients()` to ask for it: false when the linear op cannot (then zeroGrads).
   */
  private freshGrads = false;

  /** see freshGrads: true when the next layerBackwardOn writes its gradients (else call zeroGrads) */
  freshGradients(): boolean {
    this.freshGrads = this.linear.overwrites === true;
    return this.freshGrads;
  }

  private weight(name: string): Vec {
    return this.weightOverride.get(name) ?? this.view(name);
  }

  /**
   * Forward pass over `tokens` (batch x ctx ids); with `targets` (same shape, -1 = no target) returns the
   * mean cross-entropy and leaves the probabilities for backward; logits stay in `logits()`.
   */
  forward(tokens: ArrayLike<number>, targets?: ArrayLike<number>): number {
    const c = this.config;
    const N = this.batch * this.ctx;
    if (tokens.length !== N) fail(`forward: ${tokens.length} tokens, expected batch ${this.batch} x ctx ${this.ctx}`);
    if (targets && targets.length !== N) fail(`forward: ${targets.length} targets for ${N} tokens`);
    this.tokens = Int32Array.from(tokens);
    this.targets = targets ? Int32Array.from(targets) : new Int32Array(N).fill(-1);
    for (const id of this.tokens) if (!(id >= 0 && id < c.vocabSize)) fail(`token id ${id} is outside the ${c.vocabSize}-token vocabulary`);
    for (const id of this.targets) if (!(id >= -1 && id < c.vocabSize)) fail(`target id ${id} is outside the ${c.vocabSize}-token vocabulary`);
    // embedding
    const emb = this.weight('token_embd.weight');
    const x0 = this.acts[0].x;
    for (let t = 0; t < N; t++) x0.set(emb.subarray(this.tokens[t] * c.dim, (this.tokens[t] + 1) * c.dim), t * c.dim);
    for (let l = 0; l < c.nLayers; l++) this.layerForward(l, l + 1 < c.nLayers ? this.acts[l + 1].x : this.buf.get(`x${c.nLayers}`)!);
    // head
    const xL = this.buf.get(`x${c.nLayers}`)!;
    const xf = this.buf.get('xf')!;
    rmsnormForward(xf, this.buf.get('rFinal')!, xL, this.view('output_norm.weight'), N, c.dim, c.normEps);
    const logits = this.buf.get('logits')!;
    this.linear.forward(this.outputName(), logits, xf, this.weight(this.outputName()), N, c.vocabSize, c.dim);
    // cross-entropy; dlogits = (softmax - onehot) / count
    const V = c.vocabSize;
    const dl = this.buf.get('dlogits')!;
    let loss = 0;
    let count = 0;
    for (let t = 0; t < N; t++) if (this.targets[t] >= 0) count++;
    for (let t = 0; t < N; t++) {
      const row = t * V;
      const y = this.targets[t];
      if (y < 0) {
        dl.fill(0, row, row + V);
        continue;
      }
      let max = -Infinity;
      for (let i = 0; i < V; i++) if (logits[row + i] > max) max = logits[row + i];
      let sum = 0;
      for (let i = 0; i < V; i++) sum += Math.exp(logits[row + i] - max);
      const lse = max + Math.log(sum);
      loss += lse - logits[row + y];
      for (let i = 0; i < V; i++) dl[row + i] = Math.exp(logits[row + i] - lse) / count;
      dl[row + y] -= 1 / count;
    }
    return count ? loss / count : 0;
  }

  /** logits of the last forward pass: (batch x ctx) x vocab */
  logits(): Vec {
    return this.buf.get('logits')!;
  }

  /**
   * Replace the gradient of the loss with respect to the logits (the default is that of the mean
   * cross-entropy, set by forward): distillation losses (src/train/qat.ts) write theirs here.
   */
  logitGrads(): Vec {
    return this.buf.get('dlogits')!;
  }

  private outputName(): string {
    return this.config.tiedOutput ? 'token_embd.weight' : 'output.weight';
  }

  /**
   * Layer l alone on the residual stream x (batch x ctx x dim): its output (a view of the model's
   * buffer, valid until the next pass). Block-wise PTQ (AutoRound on a block's output) drives one
   * layer this way; layerBackwardOn then adds the gradients of its weights to `grads`.
   */
  layerForwardOn(l: number, x: Vec): Vec {
    const c = this.config;
    if (!(l >= 0 && l < c.nLayers) || x.length !== this.batch * this.ctx * c.dim) fail(`layerForwardOn: layer ${l} of ${c.nLayers}, input of ${x.length} values`);
    this.acts[l].x.set(x);
    const out = l + 1 < c.nLayers ? this.acts[l + 1].x : this.buf.get(`x${c.nLayers}`)!;
    this.layerForward(l, out);
    return out;
  }

  /** Backward of the last layerForwardOn(l), dOut the loss gradient of its output; returns the input's gradient (a view). */
  layerBackwardOn(l: number, dOut: Vec): Vec {
    const dx = this.buf.get('dx')!;
    dx.set(dOut);
    this.layerBackward(l, dx);
    return dx;
  }

  private layerForward(l: number, out: Vec): void {
    const c = this.config;
    const A = this.acts[l];
    const N = this.batch * this.ctx;
    const p = `blk.${l}.`;
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    this.rmsnorm(A.a, A.rA, A.x, this.view(`${p}attn_norm.weight`), N);
    this.linear.forward(`${p}attn_q.weight`, A.q, A.a, this.weight(`${p}attn_q.weight`), N, qDim, c.dim);
    this.linear.forward(`${p}attn_k.weight`, A.k, A.a, this.weight(`${p}attn_k.weight`), N, kvDim, c.dim);
    this.linear.forward(`${p}attn_v.weight`, A.v, A.a, this.weight(`${p}attn_v.weight`), N, kvDim, c.dim);
    this.rope(A.q, c.nHeads, 1);
    this.rope(A.k, c.nKvHeads, 1);
    this.attentionForward(A);
    const x2 = A.x2;
    this.linear.forward(`${p}attn_output.weight`, x2, A.o, this.weight(`${p}attn_output.weight`), N, c.dim, qDim);
    this.addInto(x2, A.x, N * c.dim);
    this.rmsnorm(A.f, A.rF, x2, this.view(`${p}ffn_norm.weight`), N);
    this.linear.forward(`${p}ffn_gate.weight`, A.g, A.f, this.weight(`${p}ffn_gate.weight`), N, c.hiddenDim, c.dim);
    this.linear.forward(`${p}ffn_up.weight`, A.u, A.f, this.weight(`${p}ffn_up.weight`), N, c.hiddenDim, c.dim);
    if (this.be.silu) this.be.silu(A.g, A.u, A.h, N * c.hiddenDim);
    else siluForwardRef(A.g, A.u, A.h, N * c.hiddenDim);
    this.linear.forward(`${p}ffn_down.weight`, out, A.h, this.weight(`${p}ffn_down.weight`), N, c.dim, c.hiddenDim);
    this.addInto(out, x2, N * c.dim);
  }

  /** rmsnormForward of n tokens of dim values, on the backend's threads where it can (the same values) */
  private rmsnorm(out: Vec, r: Vec, x: Vec, w: Vec, n: number): void {
    const c = this.config;
    if (!this.be.rmsnorm?.(out, r, x, w, n, c.dim, c.normEps)) rmsnormForward(out, r, x, w, n, c.dim, c.normEps);
  }

  /** a[i] += b[i], i < n, on the backend's threads where it can (the same values) */
  private addInto(a: Vec, b: Vec, n: number): void {
    if (!this.be.addInto?.(a, b, n)) for (let i = 0; i < n; i++) a[i] += b[i];
  }

  /** rotate pairs (2i, 2i+1) of each head by angle pos * theta^(-2i/ropeDim); sign -1 is the inverse (backward) */
  private rope(v: Vec, heads: number, sign: 1 | -1): void {
    const c = this.config;
    const half = c.ropeDim / 2;
    // on the backend's threads (the same values as the loops below)
    if (this.be.rope?.(v, this.ropeCos, this.ropeSin, this.batch * this.ctx, this.ctx, heads, c.headDim, half, sign)) return;
    const row = heads * c.headDim;
    for (let b = 0; b < this.batch; b++) {
      for (let t = 0; t < this.ctx; t++) {
        const o = (b * this.ctx + t) * row;
        for (let i = 0; i < half; i++) {
          const cos = this.ropeCos[t * half + i];
          const sin = sign * this.ropeSin[t * half + i];
          for (let h = 0; h < heads; h++) {
            const at = o + h * c.headDim + 2 * i;
            const x0 = v[at];
            const x1 = v[at + 1];
            v[at] = x0 * cos - x1 * sin;
            v[at + 1] = x0 * sin + x1 * cos;
          }
        }
      }
    }
  }

  private attentionShape(): AttentionShape {
    const c = this.config;
    return { batch: this.batch, T: this.ctx, hd: c.headDim, nHeads: c.nHeads, nKvHeads: c.nKvHeads, rows: this.causalRows, scale: 1 / Math.sqrt(c.headDim) };
  }

  private attentionForward(A: LayerActs): void {
    const c = this.config;
    const T = this.ctx;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = c.nKvHeads * hd;
    const group = c.nHeads / c.nKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const be = this.be;
    // a head per chunk in WebAssembly (the same values as the loops below)
    if (be.attention?.(this.attentionShape(), A.q, A.k, A.v, A.p, A.o)) return;
    const kt = this.buf.get('ktr')!; // (hd, T)
    for (let b = 0; b < this.batch; b++) {
      const row0 = b * T;
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / group);
        const pOff = (b * c.nHeads + h) * T * T;
        // S = q_h k_hᵀ into p, causal: rows r0..r1 only up to column r1 (softmax zeroes the rest)
        be.transpose(kt, 0, T, A.k, row0 * kvDim + kvh * hd, kvDim, T, hd);
        for (let r0 = 0; r0 < T; r0 += this.causalRows) {
          const r1 = Math.min(T, r0 + this.causalRows);
          be.gemm(A.p, pOff + r0 * T, T, A.q, (row0 + r0) * qDim + h * hd, qDim, kt, 0, T, r1 - r0, hd, r1, false);
        }
      }
      // causal softmax in place, every head's rows at once (each row on its own: the same values as head by head)
      const pb = b * c.nHeads * T * T;
      if (be.softmax) be.softmax(A.p, pb, T, c.nHeads, scale);
      else for (let h = 0; h < c.nHeads; h++) softmaxRowsRef(A.p, pb + h * T * T, T, 0, T, scale);
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / group);
        const pOff = (b * c.nHeads + h) * T * T;
        const P = A.p;
        // o_h = P v_h: rows r0..r1 sum over positions 0..r1 (P is 0 past the diagonal: the terms left out are +-0)
        for (let r0 = 0; r0 < T; r0 += this.causalRows) {
          const r1 = Math.min(T, r0 + this.causalRows);
          be.gemm(A.o, (row0 + r0) * qDim + h * hd, qDim, P, pOff + r0 * T, T, A.v, row0 * kvDim + kvh * hd, kvDim, r1 - r0, r1, hd, false);
        }
      }
    }
  }

  /** Backward pass of the last forward: gradients are added to `grads`. */
  backward(): void {
    this.freshGrads = false; // layerBackwardOn's alone
    const c = this.config;
    const N = this.batch * this.ctx;
    const xf = this.buf.get('xf')!;
    const dl = this.buf.get('dlogits')!;
    const dxf = this.buf.get('da')!;
    const out = this.outputName();
    this.linear.backward(out, dxf, this.view(out, this.grads), dl, xf, this.weight(out), N, c.vocabSize, c.dim);
    const dx = this.buf.get('dx')!;
    dx.fill(0);
    rmsnormBackward(dx, this.view('output_norm.weight', this.grads), dxf, this.buf.get(`x${c.nLayers}`)!, this.buf.get('rFinal')!, this.view('output_norm.weight'), N, c.dim);
    this.onResidualGrads?.(c.nLayers, dx);
    for (let l = c.nLayers - 1; l >= 0; l--) {
      if (this.checkpointActivations) this.layerForward(l, this.buf.get('xf')!); // recompute (xf is free scratch now)
      this.layerBackward(l, dx);
      this.onResidualGrads?.(l, dx);
    }
    // embedding rows
    const gEmb = this.view('token_embd.weight', this.grads);
    for (let t = 0; t < N; t++) {
      const o = this.tokens[t] * c.dim;
      for (let i = 0; i < c.dim; i++) gEmb[o + i] += dx[t * c.dim + i];
    }
  }

  /** dx: gradient of the layer's output on entry, of its input on return */
  private layerBackward(l: number, dx: Vec): void {
    const c = this.config;
    const A = this.acts[l];
    const N = this.batch * this.ctx;
    const p = `blk.${l}.`;
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    const G = (name: string) => this.view(`${p}${name}`, this.grads);
    const W = (name: string) => this.weight(`${p}${name}`);
    const dh = this.buf.get('dh')!;
    const dg = this.buf.get('dg')!;
    const du = this.buf.get('du')!;
    const da = this.buf.get('da')!;
    // freshGradients(): this layer's gradients written, not added (the norms' summed from 0)
    const ow = this.freshGrads && this.linear.overwrites === true;
    this.freshGrads = false;
    if (ow) {
      G('ffn_norm.weight').fill(0);
      G('attn_norm.weight').fill(0);
    }
    // FFN: out = x2 + down(h)
    this.linear.backward(`${p}ffn_down.weight`, dh, G('ffn_down.weight'), dx, A.h, W('ffn_down.weight'), N, c.dim, c.hiddenDim, ow);
    if (this.be.siluBackward) this.be.siluBackward(A.g, A.u, dh, dg, du, N * c.hiddenDim);
    else siluBackwardRef(A.g, A.u, dh, dg, du, N * c.hiddenDim);
    this.linear.backward(`${p}ffn_gate.weight`, da, G('ffn_gate.weight'), dg, A.f, W('ffn_gate.weight'), N, c.hiddenDim, c.dim, ow);
    const dx2 = this.buf.get('dx2')!;
    this.linear.backward(`${p}ffn_up.weight`, dx2, G('ffn_up.weight'), du, A.f, W('ffn_up.weight'), N, c.hiddenDim, c.dim, ow);
    this.addInto(da, dx2, N * c.dim);
    // dx2 = dx + rmsnorm'(da)
    dx2.set(dx);
    rmsnormBackward(dx2, G('ffn_norm.weight'), da, A.x2, A.rF, this.view(`${p}ffn_norm.weight`), N, c.dim);
    // attention: x2 = x + Wo(o)
    const dO = this.buf.get('do')!;
    this.linear.backward(`${p}attn_output.weight`, dO, G('attn_output.weight'), dx2, A.o, W('attn_output.weight'), N, c.dim, qDim, ow);
    const dq = this.buf.get('dq')!;
    const dk = this.buf.get('dk')!;
    const dv = this.buf.get('dv')!;
    this.attentionBackward(A, dO, dq, dk, dv);
    this.rope(dq, c.nHeads, -1);
    this.rope(dk, c.nKvHeads, -1);
    this.onKvGrads?.(l, dk, dv);
    if (!this.inputGradient && l === 0) {
      this.linear.backward(`${p}attn_q.weight`, null, G('attn_q.weight'), dq, A.a, W('attn_q.weight'), N, qDim, c.dim, ow);
      this.linear.backward(`${p}attn_k.weight`, null, G('attn_k.weight'), dk, A.a, W('attn_k.weight'), N, kvDim, c.dim, ow);
      this.linear.backward(`${p}attn_v.weight`, null, G('attn_v.weight'), dv, A.a, W('attn_v.weight'), N, kvDim, c.dim, ow);
      return;
    }
    this.linear.backward(`${p}attn_q.weight`, da, G('attn_q.weight'), dq, A.a, W('attn_q.weight'), N, qDim, c.dim, ow);
    const scratch = this.buf.get('xf')!; // N x dim, free during the layers' backward (a recomputed layer's output is not needed)
    this.linear.backward(`${p}attn_k.weight`, scratch, G('attn_k.weight'), dk, A.a, W('attn_k.weight'), N, kvDim, c.dim, ow);
    this.addInto(da, scratch, N * c.dim);
    this.linear.backward(`${p}attn_v.weight`, scratch, G('attn_v.weight'), dv, A.a, W('attn_v.weight'), N, kvDim, c.dim, ow);
    this.addInto(da, scratch, N * c.dim);
    // dx = dx2 + rmsnorm'(da)
    dx.set(dx2);
    rmsnormBackward(dx, G('attn_norm.weight'), da, A.x, A.rA, this.view(`${p}attn_norm.weight`), N, c.dim);
  }

  private attentionBackward(A: LayerActs, dO: Vec, dq: Vec, dk: Vec, dv: Vec): void {
    const c = this.config;
    const T = this.ctx;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = c.nKvHeads * hd;
    const group = c.nHeads / c.nKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const be = this.be;
    const tr = this.buf.get('ktr')!; // (hd, T)
    const dp = this.buf.get('dp')!; // (T, T)
    const pt = this.buf.get('t1')!; // (T, T)
    dk.fill(0);
    dv.fill(0);
    // a kv group of heads per chunk in WebAssembly (the same values as the loops below)
    if (be.attentionBackward?.(this.attentionShape(), A.q, A.k, A.v, A.p, dO, dq, dk, dv)) return;
    for (let b = 0; b < this.batch; b++) {
      const row0 = b * T;
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / group);
        const pOff = (b * c.nHeads + h) * T * T;
        const P = A.p;
        // dP = dO_h v_hᵀ, causal: rows r0..r1 up to column r1 (only s <= t is read below)
        be.transpose(tr, 0, T, A.v, row0 * kvDim + kvh * hd, kvDim, T, hd);
        for (let r0 = 0; r0 < T; r0 += this.causalRows) {
          const r1 = Math.min(T, r0 + this.causalRows);
          be.gemm(dp, r0 * T, T, dO, (row0 + r0) * qDim + h * hd, qDim, tr, 0, T, r1 - r0, hd, r1, false);
        }
        // dv_h += Pᵀ dO_h: row s of Pᵀ is 0 before position s, rows r0..r1 sum from position r0
        be.transpose(pt, 0, T, P, pOff, T, T, T);
        for (let r0 = 0; r0 < T; r0 += this.causalRows) {
          const r1 = Math.min(T, r0 + this.causalRows);
          be.gemm(dv, (row0 + r0) * kvDim + kvh * hd, kvDim, pt, r0 * T + r0, T, dO, (row0 + r0) * qDim + h * hd, qDim, r1 - r0, T - r0, hd, true);
        }
        // dS = P * (dP - sum_s P dP) * scale (into dp)
        for (let t = 0; t < T; t++) {
          const r = t * T;
          let dot = 0;
          for (let s = 0; s <= t; s++) dot += P[pOff + r + s] * dp[r + s];
          for (let s = 0; s <= t; s++) dp[r + s] = P[pOff + r + s] * (dp[r + s] - dot) * scale;
          for (let s = t + 1; s < T; s++) dp[r + s] = 0;
        }
        // dq_h = dS k_h ; dk_h += dSᵀ q_h (causal as o_h and dv_h)
        for (let r0 = 0; r0 < T; r0 += this.causalRows) {
          const r1 = Math.min(T, r0 + this.causalRows);
          be.gemm(dq, (row0 + r0) * qDim + h * hd, qDim, dp, r0 * T, T, A.k, row0 * kvDim + kvh * hd, kvDim, r1 - r0, r1, hd, false);
        }
        be.transpose(pt, 0, T, dp, 0, T, T, T);
        for (let r0 = 0; r0 < T; r0 += this.causalRows) {
          const r1 = Math.min(T, r0 + this.causalRows);
          be.gemm(dk, (row0 + r0) * kvDim + kvh * hd, kvDim, pt, r0 * T + r0, T, A.q, (row0 + r0) * qDim + h * hd, qDim, r1 - r0, T - r0, hd, true);
        }
      }
    }
  }
}

/** out = x / rms(x) * w per row; r = 1 / rms */
export function rmsnormForward(out: Vec, r: Vec, x: Vec, w: Vec, n: number, d: number, eps: number): void {
  for (let t = 0; t < n; t++) {
    const o = t * d;
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[o + i] * x[o + i];
    const s = 1 / Math.sqrt(ss / d + eps);
    r[t] = s;
    for (let i = 0; i < d; i++) out[o + i] = x[o + i] * s * w[i];
  }
}

/** dx += d/dx, dw += d/dw of out = x r w given dout (r = (mean x² + eps)^-1/2) */
export function rmsnormBackward(dx: Vec, dw: Vec, dout: Vec, x: Vec, r: Vec, w: Vec, n: number, d: number): void {
  for (let t = 0; t < n; t++) {
    const o = t * d;
    const s = r[t];
    let dot = 0;
    for (let i = 0; i < d; i++) {
      dot += dout[o + i] * w[i] * x[o + i];
      dw[i] += dout[o + i] * x[o + i] * s;
    }
    const k = (s * s * s * dot) / d;
    for (let i = 0; i < d; i++) dx[o + i] += dout[o + i] * w[i] * s - x[o + i] * k;
  }
}
