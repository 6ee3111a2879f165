/**
 * The LLaMA forward pass, in the manner of llama2.c's run.c: Config, Weights, RunState with preallocated
 * buffers, and a flat loop over layers.
 *
 *   x = token_embd[token]
 *   for each layer:  x += Wo · attention(RoPE(Wq · rmsnorm(x)), RoPE(Wk · rmsnorm(x)), Wv · rmsnorm(x))
 *                    x += Wdown · (silu(Wgate · rmsnorm(x)) * (Wup · rmsnorm(x)))
 *   logits = Woutput · rmsnorm(x)          (Woutput = token_embd when the classifier is tied)
 *
 * Many tokens go through each matmul together (prompt processing, perplexity chunks); a single token is
 * the decode step. Attention is causal with grouped-query heads (nHeads / nKvHeads query heads share one
 * key/value head). Weights keep their stored type; only `linear` (src/model/matmul.ts) knows about formats.
 */
import { fail } from '../errors.js';
import { attentionRef, MatmulEngine } from '../kernels/matmul.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { dequantizeRows, kernelsEnabled, linear, makeLinearWeight, type LinearWeight } from './matmul.js';
import { ggmlRoundActivations } from './ggml-activations.js';
import type { LlamaConfig, StoredTensor } from './types.js';

// ---------------------------------------------------------------------------------------------------
// Config from GGUF metadata

const NEOX_ARCHS = new Set(['qwen2', 'qwen2moe', 'phi3', 'stablelm', 'gptneox', 'olmo', 'falcon']);

/** LlamaConfig from GGUF metadata (`{arch}.embedding_length` etc.) and the tensor list. */
export function llamaConfigFromGguf(meta: ReadonlyMap<string, unknown> | Readonly<Record<string, unknown>>, tensors: readonly StoredTensor[]): LlamaConfig {
  const get = (k: string): unknown => (meta instanceof Map ? meta.get(k) : (meta as Record<string, unknown>)[k]);
  const arch = get('general.architecture');
  if (typeof arch !== 'string') fail('GGUF metadata has no general.architecture');
  if (!['llama', 'mistral', 'qwen2'].includes(arch)) fail(`GGUF architecture '${arch}' is not supported (llama, mistral, qwen2)`);
  const num = (k: string, dflt?: number): number => {
    const v = get(`${arch}.${k}`);
    if (v === undefined) {
      if (dflt === undefined) fail(`GGUF metadata is missing ${arch}.${k}`);
      return dflt;
    }
    const x = Number(v as number | bigint);
    if (!Number.isFinite(x)) fail(`GGUF metadata ${arch}.${k} = ${String(v)} is not a number`);
    return x;
  };
  const emb = tensors.find((t) => t.name === 'token_embd.weight');
  if (!emb) fail('model has no token_embd.weight tensor');
  const dim = num('embedding_length');
  const nHeads = num('attention.head_count');
  const headDim = num('attention.key_length', dim / nHeads);
  const nKvHeadsRaw = get(`${arch}.attention.head_count_kv`);
  if (Array.isArray(nKvHeadsRaw) || ArrayBuffer.isView(nKvHeadsRaw)) fail(`per-layer ${arch}.attention.head_count_kv is not supported`);
  return {
    dim,
    hiddenDim: num('feed_forward_length'),
    nLayers: num('block_count'),
    nHeads,
    nKvHeads: num('attention.head_count_kv', nHeads),
    vocabSize: emb.dims[1],
    seqLen: num('context_length'),
    headDim,
    normEps: num('attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: num('rope.freq_base', 10000),
    ropeDim: num('rope.dimension_count', headDim),
    ropeStyle: NEOX_ARCHS.has(arch) ? 'neox' : 'normal',
  };
}

// ---------------------------------------------------------------------------------------------------
// Weights

export interface LayerWeights {
  attnNorm: Float32Array; // (dim)
  wq: LinearWeight; // (nHeads*headDim, dim)
  wk: LinearWeight; // (nKvHeads*headDim, dim)
  wv: LinearWeight; // (nKvHeads*headDim, dim)
  wo: LinearWeight; // (dim, nHeads*headDim)
  bq?: Float32Array; // (nHeads*headDim) qwen2 biases
  bk?: Float32Array; // (kvDim)
  bv?: Float32Array; // (kvDim)
  ffnNorm: Float32Array; // (dim)
  gate: LinearWeight; // w1 (hiddenDim, dim)
  down: LinearWeight; // w2 (dim, hiddenDim)
  up: LinearWeight; // w3 (hiddenDim, dim)
}

export interface LlamaWeights {
  /** token embedding rows (vocab, dim) in their stored type; one row is dequantized per token */
  tokenEmbedding: { type: GgmlTypeInfo; data: Uint8Array; rowBytes: number };
  layers: LayerWeights[];
  outputNorm: Float32Array; // (dim)
  output: LinearWeight; // (vocab, dim), token_embd when tied
}

export interface LoadOptions {
  /** dequantize every weight to f32 once at load ("fake quant": quantization error without the kernels) */
  dequantize?: boolean;
  /**
   * 'wasm' (default): WebAssembly SIMD matmul on the stored weights where the engine supports it
   * (LOWBIT_WASM=off turns it off); 'reference': the plain TypeScript path.
   */
  kernels?: 'wasm' | 'reference';
  /**
   * false: leave the weights where they are instead of copying them into kernel memory (for a caller
   * that multiplies through hooks.linear with weights it keeps changing, e.g. calibration); the
   * kernels still run attention, SwiGLU and the KV cache. Default true.
   */
  weightsInKernel?: boolean;
  /**
   * threads for the WebAssembly matmul (the calling one included); needs a thread starter installed by
   * the host (Node: useNodeThreads() from 'lowbit/node'). The engine is shared: the last value set wins.
   */
  threads?: number;
}

function buildWeights(c: LlamaConfig, tensors: readonly StoredTensor[], opts: LoadOptions, engine: MatmulEngine | null): LlamaWeights {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const get = (name: string, dims: number[]): StoredTensor => {
    const t = byName.get(name);
    if (!t) fail(`model is missing tensor ${name}`);
    if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) fail(`${name} has dims [${t.dims.join(', ')}], expected [${dims.join(', ')}]`);
    return t;
  };
  const vector = (name: string, n: number): Float32Array => {
    const t = get(name, [n]);
    const v = new Float32Array(n);
    dequantizeRows(t.type, t.data, n, 1, v);
    return v;
  };
  const optionalVector = (name: string, n: number) => (byName.has(name) ? vector(name, n) : undefined);
  const lin = (name: string, cols: number, rows: number): LinearWeight => {
    const t = get(name, [cols, rows]);
    return makeLinearWeight(name, t.type, rows, cols, t.data, opts.dequantize ?? false, engine);
  };
  const { dim, hiddenDim, vocabSize } = c;
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const emb = get('token_embd.weight', [dim, vocabSize]);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      attnNorm: vector(`${p}attn_norm.weight`, dim),
      wq: lin(`${p}attn_q.weight`, dim, qDim),
      wk: lin(`${p}attn_k.weight`, dim, kvDim),
      wv: lin(`${p}attn_v.weight`, dim, kvDim),
      wo: lin(`${p}attn_output.weight`, qDim, dim),
      bq: optionalVector(`${p}attn_q.bias`, qDim),
      bk: optionalVector(`${p}attn_k.bias`, kvDim),
      bv: optionalVector(`${p}attn_v.bias`, kvDim),
      ffnNorm: vector(`${p}ffn_norm.weight`, dim),
      gate: lin(`${p}ffn_gate.weight`, dim, hiddenDim),
      down: lin(`${p}ffn_down.weight`, hiddenDim, dim),
      up: lin(`${p}ffn_up.weight`, dim, hiddenDim),
    });
  }
  return {
    tokenEmbedding: { type: emb.type, data: emb.data, rowBytes: ggmlRowBytes(emb.type, dim) },
    layers,
    outputNorm: vector('output_norm.weight', dim),
    output: byName.has('output.weight') ? lin('output.weight', dim, vocabSize) : lin('token_embd.weight', dim, vocabSize),
  };
}

// ---------------------------------------------------------------------------------------------------
// KV cache

/** Where keys and values live. f32 now; a quantized store dequantizes into scratch on read. */
export interface KvStorage {
  /** positions each layer can hold */
  readonly capacity: number;
  /** store the key and value vectors (kvDim each) of position `pos` of `layer` */
  store(layer: number, pos: number, key: Float32Array, value: Float32Array): void;
  /** keys of positions [0, n) of `layer` as f32, kvDim per position, contiguous */
  keys(layer: number, n: number): Float32Array;
  /** values of positions [0, n) of `layer` as f32, kvDim per position, contiguous */
  values(layer: number, n: number): Float32Array;
}

export function f32KvStorage(nLayers: number, capacity: number, kvDim: number): KvStorage {
  const k = new Float32Array(nLayers * capacity * kvDim); // (layer, pos, kvDim)
  const v = new Float32Array(nLayers * capacity * kvDim); // (layer, pos, kvDim)
  const base = (layer: number, pos: number) => (layer * capacity + pos) * kvDim;
  return {
    capacity,
    store(layer, pos, key, value) {
      k.set(key.subarray(0, kvDim), base(layer, pos));
      v.set(value.subarray(0, kvDim), base(layer, pos));
    },
    keys: (layer, n) => k.subarray(base(layer, 0), base(layer, n)),
    values: (layer, n) => v.subarray(base(layer, 0), base(layer, n)),
  };
}

/** f32 storage in a kernel engine's memory, where the WebAssembly attention reads it. */
interface KernelKvStorage extends KvStorage {
  readonly engine: MatmulEngine;
  /** byte offsets of position 0 of a layer's keys / values */
  keysAt(layer: number): number;
  valuesAt(layer: number): number;
}

function kernelKvStorage(engine: MatmulEngine, nLayers: number, capacity: number, kvDim: number): KernelKvStorage | null {
  const owner = {};
  const k = engine.allocF32(nLayers * capacity * kvDim, owner); // (layer, pos, kvDim)
  const v = k && engine.allocF32(nLayers * capacity * kvDim, owner); // (layer, pos, kvDim)
  if (!k || !v) return null;
  const base = (layer: number, pos: number) => (layer * capacity + pos) * kvDim;
  return {
    engine,
    capacity,
    store(layer, pos, key, value) {
      void owner; // the arrays live as long as this storage
      k.array.set(key.subarray(0, kvDim), base(layer, pos));
      v.array.set(value.subarray(0, kvDim), base(layer, pos));
    },
    keys: (layer, n) => k.array.subarray(base(layer, 0), base(layer, n)),
    values: (layer, n) => v.array.subarray(base(layer, 0), base(layer, n)),
    keysAt: (layer) => k.at + base(layer, 0) * 4,
    valuesAt: (layer) => v.at + base(layer, 0) * 4,
  };
}

// ---------------------------------------------------------------------------------------------------
// Run state

/**
 * Buffers for up to `batch` tokens per forward step. With a kernel engine the f32 buffers live in its
 * memory, where the kernels read and write them without copies.
 */
class RunState {
  readonly x: Float32Array; // (batch, dim) residual stream
  readonly xb: Float32Array; // (batch, dim) normalized input of a block
  readonly q: Float32Array; // (batch, nHeads*headDim)
  readonly k: Float32Array; // (batch, kvDim)
  readonly v: Float32Array; // (batch, kvDim)
  readonly att: Float32Array; // (batch, nHeads*headDim) attention output before Wo
  readonly xb2: Float32Array; // (batch, dim) output of Wo / Wdown
  readonly hb: Float32Array; // (batch, hiddenDim) gate, then silu(gate) * up
  readonly hb2: Float32Array; // (batch, hiddenDim) up
  readonly scores: Float64Array; // (capacity) attention scores of one head
  readonly ropeFreq: Float64Array; // (ropeDim/2) theta^(-2i/ropeDim)
  readonly lastLogits: Float32Array; // (vocab)
  constructor(c: LlamaConfig, readonly batch: number, capacity: number, engine: MatmulEngine | null) {
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    const f32 = (n: number) => engine?.allocF32(n, this)?.array ?? new Float32Array(n);
    this.x = f32(batch * c.dim);
    this.xb = f32(batch * c.dim);
    this.q = f32(batch * qDim);
    this.k = f32(batch * kvDim);
    this.v = f32(batch * kvDim);
    this.att = f32(batch * qDim);
    this.xb2 = f32(batch * c.dim);
    this.hb = f32(batch * c.hiddenDim);
    this.hb2 = f32(batch * c.hiddenDim);
    this.scores = new Float64Array(capacity);
    this.ropeFreq = new Float64Array(c.ropeDim / 2);
    for (let i = 0; i < c.ropeDim / 2; i++) this.ropeFreq[i] = Math.pow(c.ropeTheta, (-2 * i) / c.ropeDim);
    this.lastLogits = new Float32Array(c.vocabSize);
  }
}

// ---------------------------------------------------------------------------------------------------
// Building blocks

/** out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, for nTok rows of `size` */
function rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, nTok: number, size: number, eps: number): void {
  for (let t = 0; t < nTok; t++) {
    const o = t * size;
    let ss = 0;
    for (let i = 0; i < size; i++) ss += x[o + i] * x[o + i];
    const scale = 1 / Math.sqrt(ss / size + eps);
    for (let i = 0; i < size; i++) out[o + i] = x[o + i] * scale * weight[i];
  }
}

/** Rotate the first ropeDim dims of each head of vec (nTok rows of nHeads*headDim) by position. */
function rope(c: LlamaConfig, freq: Float64Array, vec: Float32Array, nTok: number, nHeads: number, pos0: number): void {
  const half = c.ropeDim / 2;
  const rowLen = nHeads * c.headDim;
  for (let t = 0; t < nTok; t++) {
    const p = pos0 + t;
    for (let i = 0; i < half; i++) {
      const angle = p * freq[i];
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      // 'normal' pairs (2i, 2i+1); 'neox' pairs (i, i + ropeDim/2)
      const a = c.ropeStyle === 'normal' ? 2 * i : i;
      const b = c.ropeStyle === 'normal' ? 2 * i + 1 : i + half;
      for (let h = 0; h < nHeads; h++) {
        const o = t * rowLen + h * c.headDim;
        const x0 = vec[o + a];
        const x1 = vec[o + b];
        vec[o + a] = x0 * cos - x1 * sin;
        vec[o + b] = x0 * sin + x1 * cos;
      }
    }
  }
}

function addBias(x: Float32Array, bias: Float32Array | undefined, nTok: number): void {
  if (!bias) return;
  const n = bias.length;
  for (let t = 0; t < nTok; t++) for (let i = 0; i < n; i++) x[t * n + i] += bias[i];
}

// ---------------------------------------------------------------------------------------------------
// The model

export interface ForwardHooks {
  /**
   * Called with the input of every linear layer before it is applied: `x` holds nTok rows of k values
   * (a view into the run state: copy what you keep). `name` is the weight's tensor name.
   */
  linearInput?: (name: string, x: Float32Array, nTok: number, k: number) => void;
  /**
   * Replaces the linear layer itself (out = x w^T for nTok rows): activation quantization modes
   * (W8A8, LLM.int8(), see src/model/act-quant.ts) plug in here. Must not modify x.
   */
  linear?: (out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number) => void;
}

export interface LlamaOptions extends LoadOptions {
  /** positions the KV cache holds (default: config.seqLen) */
  contextLength?: number;
  /** tokens per forward step (default 128) */
  batch?: number;
  /** KV cache storage (default f32) */
  kv?: KvStorage;
  /**
   * 'ggml': round each linear layer's input to the weight type's llama.cpp `vec_dot_type` first (Q8_0,
   * Q8_1, Q8_K, F16, BF16), as llama.cpp's CPU backend does, so KLD/PPL match what llama.cpp measures;
   * with the WebAssembly kernels, Q4_0, Q5_0, Q8_0, IQ4_NL, Q3_K..Q6_K and IQ4_XS weights then run on
   * integer dot products (MatmulEngine.matmulInt), the fast path. 'f32' (the library default; the CLI's
   * is 'ggml'): weights are the only thing quantized, multiplied in f32.
   */
  activations?: 'f32' | 'ggml';
}

export class Llama {
  readonly config: LlamaConfig;
  readonly weights: LlamaWeights;
  readonly kv: KvStorage;
  hooks: ForwardHooks = {};
  readonly activations: 'f32' | 'ggml';
  private readonly s: RunState;
  /** the WebAssembly kernels, when in use */
  private readonly engine: MatmulEngine | null;
  /** rounded activations in 'ggml' mode: batch x max(k) */
  private actScratch = new Float32Array(0);

  constructor(config: LlamaConfig, tensors: readonly StoredTensor[], opts: LlamaOptions = {}) {
    const c = config;
    if (c.dim <= 0 || c.nLayers <= 0 || c.nHeads <= 0 || c.nKvHeads <= 0 || c.nHeads % c.nKvHeads !== 0) fail(`bad model shape: ${JSON.stringify(c)}`);
    if (c.ropeDim % 2 !== 0 || c.ropeDim > c.headDim) fail(`RoPE dimension ${c.ropeDim} must be even and at most the head size ${c.headDim}`);
    this.config = c;
    const engine = opts.kernels === 'reference' ? null : MatmulEngine.get();
    if (engine && opts.threads !== undefined) engine.setThreads(opts.threads);
    this.weights = buildWeights(c, tensors, opts, opts.weightsInKernel === false ? null : engine);
    const capacity = opts.contextLength ?? c.seqLen;
    const kvDim = c.nKvHeads * c.headDim;
    const kernelKv = engine && c.headDim % 4 === 0 && !opts.kv ? kernelKvStorage(engine, c.nLayers, capacity, kvDim) : null;
    this.kv = opts.kv ?? kernelKv ?? f32KvStorage(c.nLayers, capacity, kvDim);
    this.engine = engine;
    this.s = new RunState(c, Math.max(1, opts.batch ?? 128), this.kv.capacity, engine);
    this.activations = opts.activations ?? 'f32';
  }

  /**
   * Run `tokens` at positions pos, pos+1, ... (the KV cache must hold positions [0, pos) already).
   * Returns the logits of tokens [outputsFrom, tokens.length): by default only the last token's
   * (a reused buffer); otherwise a new (tokens.length - outputsFrom) x vocab array.
   */
  forward(tokens: ArrayLike<number>, pos: number, outputsFrom = tokens.length - 1): Float32Array {
    const c = this.config;
    const n = tokens.length;
    if (n === 0) fail('forward needs at least one token');
    if (pos < 0 || pos + n > this.kv.capacity) fail(`positions ${pos}..${pos + n - 1} do not fit the context of ${this.kv.capacity}`);
    if (!(outputsFrom >= 0 && outputsFrom < n)) fail(`outputsFrom ${outputsFrom} is outside the ${n} tokens`);
    const onlyLast = outputsFrom === n - 1;
    const out = onlyLast ? this.s.lastLogits : new Float32Array((n - outputsFrom) * c.vocabSize);
    for (let b = 0; b < n; b += this.s.batch) {
      const nb = Math.min(this.s.batch, n - b);
      const ids = Array.from({ length: nb }, (_, i) => tokens[b + i]);
      this.step(ids, pos + b);
      const from = Math.max(outputsFrom, b); // first token of this batch that needs logits
      if (from < b + nb) this.logits(out.subarray((from - outputsFrom) * c.vocabSize, (b + nb - outputsFrom) * c.vocabSize), from - b, b + nb - from);
    }
    return out;
  }

  /**
   * The parts of a layer, for calibration that quantizes a layer's linears one stage at a time
   * (src/pipeline/calibrate.ts). x: residual-stream rows (nTok x dim, not modified) at positions
   * pos, pos+1, ...; out: the stage's output rows.
   *   'attnNorm', 'ffnNorm': the RMSNorm of x (the input of q/k/v, of gate/up)      nTok x dim
   *   'attention': attention before Wo (the input of Wo), keys/values into the cache  nTok x nHeads*headDim
   *   'ffn': silu(gate(x')) * up(x'), x' = ffnNorm(x) (the input of Wdown)              nTok x hiddenDim
   */
  runStage(stage: 'attnNorm' | 'ffnNorm' | 'attention' | 'ffn', l: number, x: Float32Array, out: Float32Array, pos = 0): void {
    const c = this.config;
    const dim = c.dim;
    const n = x.length / dim;
    if (!(l >= 0 && l < c.nLayers)) fail(`layer ${l} does not exist (the model has ${c.nLayers})`);
    if (!Number.isInteger(n) || pos < 0 || pos + n > this.kv.capacity) fail(`runStage: ${x.length} values are not whole tokens at positions ${pos}.. within ${this.kv.capacity}`);
    const width = stage === 'attention' ? c.nHeads * c.headDim : stage === 'ffn' ? c.hiddenDim : dim;
    if (out.length < n * width) fail(`runStage ${stage}: output holds ${out.length} values, needs ${n * width}`);
    const s = this.s;
    const L = this.weights.layers[l];
    for (let b = 0; b < n; b += s.batch) {
      const nb = Math.min(s.batch, n - b);
      const rows = x.subarray(b * dim, (b + nb) * dim);
      const dst = out.subarray(b * width, (b + nb) * width);
      if (stage === 'attnNorm' || stage === 'ffnNorm') {
        rmsnorm(dst, rows, stage === 'attnNorm' ? L.attnNorm : L.ffnNorm, nb, dim, c.normEps);
        continue;
      }
      s.x.set(rows);
      if (stage === 'attention') {
        this.attentionBlock(l, nb, pos + b);
        dst.set(s.att.subarray(0, nb * width));
      } else {
        this.ffnBlock(l, nb);
        dst.set(s.hb.subarray(0, nb * width));
      }
    }
  }

  /** logits (nTok x vocab) of residual-stream rows x (nTok x dim): final RMSNorm and the output layer */
  head(x: Float32Array, out: Float32Array): void {
    const { dim, vocabSize } = this.config;
    const n = x.length / dim;
    for (let b = 0; b < n; b += this.s.batch) {
      const nb = Math.min(this.s.batch, n - b);
      this.s.x.set(x.subarray(b * dim, (b + nb) * dim));
      this.logits(out.subarray(b * vocabSize, (b + nb) * vocabSize), 0, nb);
    }
  }

  /** the token embeddings of `tokens` (tokens.length x dim) into out */
  embed(tokens: ArrayLike<number>, out: Float32Array): void {
    const c = this.config;
    const e = this.weights.tokenEmbedding;
    for (let t = 0; t < tokens.length; t++) {
      const id = tokens[t];
      if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) fail(`token id ${id} is outside the ${c.vocabSize}-token vocabulary`);
      dequantizeRows(e.type, e.data.subarray(id * e.rowBytes, (id + 1) * e.rowBytes), c.dim, 1, out.subarray(t * c.dim, (t + 1) * c.dim));
    }
  }

  private lin(out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number): void {
    const input = x.subarray(0, nTok * w.cols);
    this.hooks.linearInput?.(w.name, input, nTok, w.cols);
    if (this.activations === 'ggml') {
      // llama.cpp's own path: integer dot products on the stored blocks (activations rounded in the kernel)
      const kw = w.kernel;
      if (kw && !this.hooks.linear && kernelsEnabled() && kw.engine.intBlock(kw) > 0) {
        kw.engine.matmulInt(out, x, kw, nTok);
        return;
      }
      if (this.actScratch.length < nTok * w.cols) this.actScratch = new Float32Array(this.s.batch * Math.max(w.cols, this.config.hiddenDim, this.config.dim));
      if (ggmlRoundActivations(w.type, x, nTok, w.cols, this.actScratch)) x = this.actScratch;
    }
    if (this.hooks.linear) this.hooks.linear(out, x.subarray(0, nTok * w.cols), w, nTok);
    else linear(out, x, w, nTok);
  }

  /**
   * one batch through all layers, leaving the final residual stream in s.x. A NaN or infinity in the
   * residual stream is an error naming the first layer (and token position) where it appeared.
   */
  private step(tokens: number[], pos: number): void {
    const n = tokens.length * this.config.dim;
    this.embed(tokens, this.s.x);
    checkFinite(this.s.x, n, this.config.dim, pos, 'the token embeddings (token_embd.weight)');
    for (let l = 0; l < this.config.nLayers; l++) {
      this.layer(l, tokens.length, pos);
      checkFinite(this.s.x, n, this.config.dim, pos, `the output of layer ${l} (blk.${l})`);
    }
  }

  /** layer l on the nTok rows of s.x (positions pos, pos+1, ...), in place */
  private layer(l: number, nTok: number, pos: number): void {
    const s = this.s;
    const L = this.weights.layers[l];
    const n = nTok * this.config.dim;
    this.attentionBlock(l, nTok, pos);
    this.lin(s.xb2, s.att, L.wo, nTok);
    for (let i = 0; i < n; i++) s.x[i] += s.xb2[i];
    this.ffnBlock(l, nTok);
    this.lin(s.xb2, s.hb, L.down, nTok);
    for (let i = 0; i < n; i++) s.x[i] += s.xb2[i];
  }

  /** rmsnorm, q/k/v, RoPE, keys and values into the cache, causal attention: s.x -> s.att (before Wo) */
  private attentionBlock(l: number, nTok: number, pos: number): void {
    const c = this.config;
    const s = this.s;
    const { dim, headDim, nHeads, nKvHeads } = c;
    const kvDim = nKvHeads * headDim;
    const L = this.weights.layers[l];
    rmsnorm(s.xb, s.x, L.attnNorm, nTok, dim, c.normEps);
    this.lin(s.q, s.xb, L.wq, nTok);
    this.lin(s.k, s.xb, L.wk, nTok);
    this.lin(s.v, s.xb, L.wv, nTok);
    addBias(s.q, L.bq, nTok);
    addBias(s.k, L.bk, nTok);
    addBias(s.v, L.bv, nTok);
    rope(c, s.ropeFreq, s.q, nTok, nHeads, pos);
    rope(c, s.ropeFreq, s.k, nTok, nKvHeads, pos);
    for (let t = 0; t < nTok; t++) this.kv.store(l, pos + t, s.k.subarray(t * kvDim, (t + 1) * kvDim), s.v.subarray(t * kvDim, (t + 1) * kvDim));
    // causal attention (WebAssembly kernel when the cache lives in its memory)
    const kkv = this.kv as Partial<KernelKvStorage>;
    if (kkv.engine && kernelsEnabled()) {
      kkv.engine.attention(s.q, nTok, pos, nHeads, nKvHeads, headDim, kkv.keysAt!(l), kkv.valuesAt!(l), kvDim, 1 / Math.sqrt(headDim), s.att);
    } else this.attention(l, nTok, pos);
  }

  /** rmsnorm, gate and up, SwiGLU: s.x -> s.hb = silu(gate(x)) * up(x) (the input of Wdown) */
  private ffnBlock(l: number, nTok: number): void {
    const c = this.config;
    const s = this.s;
    const L = this.weights.layers[l];
    rmsnorm(s.xb, s.x, L.ffnNorm, nTok, c.dim, c.normEps);
    this.lin(s.hb, s.xb, L.gate, nTok);
    this.lin(s.hb2, s.xb, L.up, nTok);
    const n = nTok * c.hiddenDim;
    if (this.engine && kernelsEnabled()) this.engine.siluMul(s.hb, s.hb2, n);
    else {
      for (let i = 0; i < n; i++) {
        const g = s.hb[i];
        s.hb[i] = (g / (1 + Math.exp(-g))) * s.hb2[i];
      }
    }
  }

  /** causal attention of layer l in TypeScript: token t (position pos + t) sees positions 0 .. pos + t */
  private attention(l: number, nTok: number, pos: number): void {
    const { headDim, nHeads, nKvHeads } = this.config;
    const keys = this.kv.keys(l, pos + nTok);
    const values = this.kv.values(l, pos + nTok);
    attentionRef(this.s.q, keys, values, nTok, pos, nHeads, nKvHeads, headDim, 1 / Math.sqrt(headDim), this.s.att, this.s.scores);
  }

  /** logits of tokens [from, from + count) of the last batch into out (count x vocab) */
  private logits(out: Float32Array, from: number, count: number): void {
    const c = this.config;
    const s = this.s;
    const x = s.x.subarray(from * c.dim, (from + count) * c.dim);
    rmsnorm(s.xb, x, this.weights.outputNorm, count, c.dim, c.normEps);
    this.lin(out, s.xb, this.weights.output, count);
    checkFinite(out, count * c.vocabSize, c.vocabSize, -1, 'the logits (output.weight)');
  }
}

/**
 * The one place a non-finite activation becomes an error: x[0, n) must be finite (rows of `width`
 * values, the first at token position `pos`; -1: positions unknown). A sum is finite exactly when every
 * term is (f32 values summed in f64 cannot overflow), so the common case is one pass of additions.
 */
export function checkFinite(x: Float32Array, n: number, width: number, pos: number, where: string): void {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += x[i];
  if (Number.isFinite(sum)) return;
  let i = 0;
  while (i < n && Number.isFinite(x[i])) i++;
  const row = Math.floor(i / width);
  fail(`non-finite value (${x[i]}) in ${where}${pos >= 0 ? ` at token position ${pos + row}` : ` (row ${row})`}: the model overflows or its weights hold NaN/inf`);
}
