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
import { attentionRef, MatmulEngine, type KernelWeight } from '../kernels/matmul.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { dequantizeRows, kernelsEnabled, linear, makeLinearWeight, type LinearWeight } from './matmul.js';
import { ggmlRoundActivations } from './ggml-activations.js';
import { f16ToF32, f32ToF16 } from '../formats/half.js';
import type { LlamaConfig, StoredTensor } from './types.js';
import { familyOf, KNOWN_ARCHITECTURES } from './family.js';
import { isDefaultKvCache, packedKvStorage, type KvCacheOptions } from './kv/cache.js';
import { f32KvStorage, reserveLayers, type KvStorage } from './kv/storage.js';

// ---------------------------------------------------------------------------------------------------
// Config from GGUF metadata

/** The GGUF architectures the runtime knows: every row of the family table (model/family.ts). */
export const RUNTIME_ARCHITECTURES: readonly string[] = KNOWN_ARCHITECTURES;

/** LlamaConfig from GGUF metadata (`{arch}.embedding_length` etc.) and the tensor list. */
export function llamaConfigFromGguf(meta: ReadonlyMap<string, unknown> | Readonly<Record<string, unknown>>, tensors: readonly StoredTensor[]): LlamaConfig {
  const get = (k: string): unknown => (meta instanceof Map ? meta.get(k) : (meta as Record<string, unknown>)[k]);
  const arch = get('general.architecture');
  if (typeof arch !== 'string') fail('GGUF metadata has no general.architecture');
  // the family row says what differs from Llama 2 (Mixtral: arch llama with expert tensors)
  const family = familyOf(arch, tensors.some((t) => /^blk\.\d+\.ffn_gate_inp\.weight$/.test(t.name)));
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
  const nLayers = num('block_count');
  const c: LlamaConfig = {
    dim,
    hiddenDim: num('feed_forward_length'),
    nLayers,
    nHeads,
    nKvHeads: num('attention.head_count_kv', nHeads),
    vocabSize: emb.dims[1],
    seqLen: num('context_length'),
    headDim,
    normEps: num('attention.layer_norm_rms_epsilon', family.normEps),
    ropeTheta: num('rope.freq_base', 10000),
    ropeDim: num('rope.dimension_count', headDim),
    ropeStyle: family.ropeStyle,
    arch,
    family: family.name,
  };
  // RoPE scaling as llama.cpp reads it: type (default linear) and factor; YaRN with the original context
  const scaling = get(`${arch}.rope.scaling.type`) ?? 'linear';
  const factor = num('rope.scaling.factor', 0);
  if (scaling !== 'none' && scaling !== 'linear' && scaling !== 'yarn') fail(`${arch}.rope.scaling.type '${String(scaling)}' is not supported by the runtime (none, linear, yarn; Llama 3 factors come as rope_freqs.weight)`);
  if (scaling !== 'none' && factor !== 0 && factor !== 1) c.ropeFreqScale = 1 / factor;
  const attnFactor = num('rope.scaling.attn_factor', 1);
  if (scaling === 'yarn') {
    if (get(`${arch}.rope.scaling.yarn_log_multiplier`) !== undefined) fail(`${arch}.rope.scaling.yarn_log_multiplier (DeepSeek's YaRN) is not supported by the runtime`);
    const f = factor || 1;
    // llama.cpp: attn_factor = mscale(f) / (1 + 0.1 ln f) cancels ggml's own (1 + 0.1 ln f), so cos and sin
    // are multiplied by (1 + 0.1 ln f) for f > 1 (HF's attention_factor), times rope.scaling.attn_factor
    c.ropeYarn = { origCtx: num('rope.scaling.original_context_length', c.seqLen), betaFast: 32, betaSlow: 1 };
    c.ropeMscale = attnFactor * (f > 1 ? 1 + 0.1 * Math.log(f) : 1);
  } else if (attnFactor !== 1) c.ropeMscale = attnFactor;
  if (tensors.some((t) => /^blk\.\d+\.rope_factors_long/.test(t.name))) fail('Phi-3 LongRoPE (rope_factors_long/short) is not supported by the runtime');
  // mixture of experts
  const nExperts = num('expert_count', 0);
  if (nExperts > 0) {
    const used = num('expert_used_count', 0);
    if (!(Number.isInteger(used) && used >= 1 && used <= nExperts)) fail(`${arch}.expert_used_count = ${used} must be between 1 and ${arch}.expert_count = ${nExperts}`);
    c.nExperts = nExperts;
    c.nExpertsUsed = used;
    const gate = tensors.find((t) => t.name === 'blk.0.ffn_gate_exps.weight');
    c.expertHiddenDim = num('expert_feed_forward_length', gate?.dims[1] ?? c.hiddenDim);
  }
  if (c.nExperts) c.expertWeightsNorm = family.moe?.normalizeTopK ?? true;
  if (family.activation !== 'silu') c.activation = family.activation;
  if (family.embedScaleSqrtDim) c.embedScale = Math.fround(Math.sqrt(dim));
  // llama.cpp: Gemma's 27B models scale queries by 1/sqrt(dim/heads) (query_pre_attn_scalar), the rest by 1/sqrt(headDim)
  if (family.wideQueryScaleLayers !== undefined) c.attnScale = Math.fround(1 / Math.sqrt(nLayers === family.wideQueryScaleLayers ? Math.floor(dim / nHeads) : headDim));
  if (family.softcaps?.final) {
    const cap = num('final_logit_softcapping', 0);
    if (cap > 0) c.finalSoftcap = cap;
  }
  if (family.softcaps?.attention) {
    const cap = num('attn_logit_softcapping', 0);
    if (cap > 0) c.attnSoftcap = cap;
  }
  const sw = family.slidingWindow;
  const window = sw ? num('attention.sliding_window', sw.window) : 0;
  if (sw && window > 0) {
    const patternRaw = get(`${arch}.attention.sliding_window_pattern`);
    let flags: boolean[];
    if (Array.isArray(patternRaw) || ArrayBuffer.isView(patternRaw)) flags = Array.from(patternRaw as ArrayLike<unknown>, Boolean);
    else {
      const n = num('attention.sliding_window_pattern', sw.pattern);
      flags = Array.from({ length: nLayers }, (_, l) => n === 0 || l % n < n - 1);
    }
    if (flags.length !== nLayers) fail(`${arch}.attention.sliding_window_pattern has ${flags.length} entries for ${nLayers} layers`);
    c.slidingWindow = window;
    c.swaLayers = flags;
    c.ropeThetaSwa = num('rope.freq_base_swa', sw.ropeBaseSwa ?? c.ropeTheta);
    if (sw.swaRopeUnscaled && c.ropeFreqScale !== undefined) c.ropeFreqScaleSwa = 1; // llama.cpp: local layers are not scaled
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Weights

export interface LayerWeights {
  attnNorm: Float32Array; // (dim)
  wq: LinearWeight; // (nHeads*headDim, dim); with a fused attn_qkv: the q rows of it (a view)
  wk: LinearWeight; // (nKvHeads*headDim, dim)
  wv: LinearWeight; // (nKvHeads*headDim, dim)
  /** Phi-3: q, k and v rows in one tensor (nHeads*headDim + 2*kvDim, dim); wq/wk/wv are views of it */
  wqkv?: LinearWeight;
  wo: LinearWeight; // (dim, nHeads*headDim)
  bq?: Float32Array; // (nHeads*headDim) qwen2 biases
  bk?: Float32Array; // (kvDim)
  bv?: Float32Array; // (kvDim)
  /** per-head RMSNorm gains of q and k (Qwen 3, Gemma 3) */
  qNorm?: Float32Array; // (headDim)
  kNorm?: Float32Array; // (headDim)
  /** Gemma: RMSNorm of the attention output and of the FFN output before each residual add */
  attnPostNorm?: Float32Array; // (dim)
  ffnPostNorm?: Float32Array; // (dim)
  ffnNorm: Float32Array; // (dim)
  /** Outlier Suppression+ (lowbit quantize --shift): norm biases (the channel shift folded in) and the gate/up biases that undo it */
  attnNormBias?: Float32Array; // (dim)
  ffnNormBias?: Float32Array; // (dim)
  bGate?: Float32Array; // (hiddenDim)
  bUp?: Float32Array; // (hiddenDim)
  /** dense FFN (absent in MoE layers); with a fused ffn_up (Phi-3) gate and up are views of gateUp */
  gate?: LinearWeight; // w1 (hiddenDim, dim)
  down?: LinearWeight; // w2 (dim, hiddenDim)
  up?: LinearWeight; // w3 (hiddenDim, dim)
  /** Phi-3: gate rows then up rows in one tensor (2*hiddenDim, dim) */
  gateUp?: LinearWeight;
  /** MoE: router (nExperts, dim) and each expert's gate/up (expertHidden, dim) and down (dim, expertHidden) */
  router?: LinearWeight;
  experts?: { gate: LinearWeight; up: LinearWeight; down: LinearWeight }[];
}

export interface LlamaWeights {
  /**
   * token embedding rows (vocab, dim) in their stored type; one row is dequantized per token. With
   * `fill` (a tensor loaded lazily: StoredTensor.fill), a row is read from the file the first time a
   * token uses it and marked in `loaded`.
   */
  tokenEmbedding: { type: GgmlTypeInfo; data: Uint8Array; rowBytes: number; fill?: (start: number, dest: Uint8Array) => void; loaded?: Uint8Array };
  layers: LayerWeights[];
  outputNorm: Float32Array; // (dim)
  output: LinearWeight; // (vocab, dim), token_embd when tied
  /** Llama 3 RoPE frequency factors (rope_freqs.weight): theta_i is divided by factor i */
  ropeFactors?: Float32Array; // (ropeDim/2)
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

/**
 * The linear weights of a layer as the file stores them: a fused attn_qkv / ffn_up (Phi-3) once, not its
 * q/k/v or gate/up views; the router and every expert's gate/up/down (views of the 3-D tensors).
 */
export function layerLinears(L: LayerWeights): LinearWeight[] {
  const out: LinearWeight[] = L.wqkv ? [L.wqkv] : [L.wq, L.wk, L.wv];
  out.push(L.wo);
  if (L.gateUp) out.push(L.gateUp, L.down!);
  else if (L.gate) out.push(L.gate, L.up!, L.down!);
  if (L.router) out.push(L.router);
  for (const e of L.experts ?? []) out.push(e.gate, e.up, e.down);
  return out;
}

/** A linear weight over rows [r0, r0 + rows) of another one (a row range of a fused or 3-D tensor). */
function rowView(w: { name: string; type: GgmlTypeInfo; data: Uint8Array; cols: number }, r0: number, rows: number, name: string, opts: LoadOptions, engine: MatmulEngine | null): LinearWeight {
  const rb = ggmlRowBytes(w.type, w.cols);
  return makeLinearWeight(name, w.type, rows, w.cols, w.data.subarray(r0 * rb, (r0 + rows) * rb), opts.dequantize ?? false, engine);
}

function buildWeights(c: LlamaConfig, tensors: readonly StoredTensor[], opts: LoadOptions, engine: MatmulEngine | null): LlamaWeights {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  /** lazily loaded tensors (StoredTensor.fill) read whole so far */
  const whole = new Set<StoredTensor>();
  const get = (name: string, dims: number[], byRows = false): StoredTensor => {
    const t = byName.get(name);
    if (!t) fail(`model is missing tensor ${name}`);
    if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) fail(`${name} has dims [${t.dims.join(', ')}], expected [${dims.join(', ')}]`);
    if (t.fill && !byRows && !whole.has(t)) {
      t.fill(0, t.data);
      whole.add(t);
    }
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
  const emb = get('token_embd.weight', [dim, vocabSize], true);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `blk.${l}.`;
    const has = (n: string) => byName.has(p + n);
    // attention: separate q/k/v or Phi-3's fused attn_qkv (views of its row ranges)
    let wq: LinearWeight, wk: LinearWeight, wv: LinearWeight, wqkv: LinearWeight | undefined;
    if (has('attn_qkv.weight')) {
      wqkv = lin(`${p}attn_qkv.weight`, dim, qDim + 2 * kvDim);
      const src = { name: wqkv.name, type: wqkv.type, data: wqkv.data, cols: dim };
      wq = rowView(src, 0, qDim, `${p}attn_q.weight`, opts, null);
      wk = rowView(src, qDim, kvDim, `${p}attn_k.weight`, opts, null);
      wv = rowView(src, qDim + kvDim, kvDim, `${p}attn_v.weight`, opts, null);
    } else {
      wq = lin(`${p}attn_q.weight`, dim, qDim);
      wk = lin(`${p}attn_k.weight`, dim, kvDim);
      wv = lin(`${p}attn_v.weight`, dim, kvDim);
    }
    const L: LayerWeights = {
      attnNorm: vector(`${p}attn_norm.weight`, dim),
      wq,
      wk,
      wv,
      wqkv,
      wo: lin(`${p}attn_output.weight`, qDim, dim),
      bq: optionalVector(`${p}attn_q.bias`, qDim),
      bk: optionalVector(`${p}attn_k.bias`, kvDim),
      bv: optionalVector(`${p}attn_v.bias`, kvDim),
      qNorm: optionalVector(`${p}attn_q_norm.weight`, c.headDim),
      kNorm: optionalVector(`${p}attn_k_norm.weight`, c.headDim),
      attnPostNorm: optionalVector(`${p}post_attention_norm.weight`, dim),
      ffnPostNorm: optionalVector(`${p}post_ffw_norm.weight`, dim),
      ffnNorm: vector(`${p}ffn_norm.weight`, dim),
      attnNormBias: optionalVector(`${p}attn_norm.bias`, dim),
      ffnNormBias: optionalVector(`${p}ffn_norm.bias`, dim),
      bGate: optionalVector(`${p}ffn_gate.bias`, hiddenDim),
      bUp: optionalVector(`${p}ffn_up.bias`, hiddenDim),
    };
    if (has('ffn_gate_inp.weight')) {
      const nExp = c.nExperts ?? fail(`${p}ffn_gate_inp.weight is a mixture-of-experts router, but the metadata has no expert_count`);
      const eh = c.expertHiddenDim!;
      // every expert tensor must hold expert_count experts
      for (const part of ['gate_inp', 'gate_exps', 'up_exps', 'down_exps']) {
        const t = byName.get(`${p}ffn_${part}.weight`);
        const n = t?.dims[t.dims.length - 1];
        if (t && n !== nExp) fail(`${t.name} has dims [${t.dims.join(', ')}]: ${n} experts, but ${c.arch ?? 'llama'}.expert_count is ${nExp} (inconsistent expert counts)`);
      }
      L.router = lin(`${p}ffn_gate_inp.weight`, dim, nExp);
      const exps = (part: string, cols: number, rows: number) => {
        const t = byName.get(`${p}ffn_${part}_exps.weight`);
        if (!t) fail(`model is missing tensor ${p}ffn_${part}_exps.weight (the layer has a router)`);
        if (t.dims.length !== 3 || t.dims[0] !== cols || t.dims[1] !== rows || t.dims[2] !== nExp)
          fail(`${t.name} has dims [${t.dims.join(', ')}], expected [${cols}, ${rows}, ${nExp}] (expert_count ${nExp}): inconsistent expert counts`);
        return t;
      };
      const g = exps('gate', dim, eh);
      const u = exps('up', dim, eh);
      const d = exps('down', eh, dim);
      L.experts = [];
      for (let e = 0; e < nExp; e++) {
        L.experts.push({
          gate: rowView({ ...g, cols: dim }, e * eh, eh, g.name, opts, engine),
          up: rowView({ ...u, cols: dim }, e * eh, eh, u.name, opts, engine),
          down: rowView({ ...d, cols: eh }, e * dim, dim, d.name, opts, engine),
        });
      }
    } else if (!has('ffn_gate.weight') && has('ffn_up.weight')) {
      // Phi-3: ffn_up holds gate rows then up rows
      L.gateUp = lin(`${p}ffn_up.weight`, dim, 2 * hiddenDim);
      const src = { name: L.gateUp.name, type: L.gateUp.type, data: L.gateUp.data, cols: dim };
      L.gate = rowView(src, 0, hiddenDim, `${p}ffn_gate.weight`, opts, null);
      L.up = rowView(src, hiddenDim, hiddenDim, `${p}ffn_up.weight`, opts, null);
      L.down = lin(`${p}ffn_down.weight`, hiddenDim, dim);
    } else {
      L.gate = lin(`${p}ffn_gate.weight`, dim, hiddenDim);
      L.down = lin(`${p}ffn_down.weight`, hiddenDim, dim);
      L.up = lin(`${p}ffn_up.weight`, dim, hiddenDim);
    }
    layers.push(L);
  }
  if (c.nExperts && !layers.some((L) => L.router)) fail(`the metadata says ${c.nExperts} experts, but no layer has a router (ffn_gate_inp.weight)`);
  // (a tied classifier reads token_embd whole: a lazy one is read here, before its rows are set up)
  const output = byName.has('output.weight') ? lin('output.weight', dim, vocabSize) : lin('token_embd.weight', dim, vocabSize);
  const lazyRows = emb.fill && !whole.has(emb) ? { fill: emb.fill, loaded: new Uint8Array(vocabSize) } : {};
  return {
    tokenEmbedding: { type: emb.type, data: emb.data, rowBytes: ggmlRowBytes(emb.type, dim), ...lazyRows },
    layers,
    outputNorm: vector('output_norm.weight', dim),
    output,
    ropeFactors: optionalVector('rope_freqs.weight', c.ropeDim / 2),
  };
}

// ---------------------------------------------------------------------------------------------------
// KV cache

export { f32KvStorage, type KvStorage } from './kv/storage.js';

/** f32 storage in a kernel engine's memory, where the WebAssembly attention reads it. */
interface KernelKvStorage extends KvStorage {
  readonly engine: MatmulEngine;
  /** the type of a stored row (what the attention kernel reads): f32 rows of kvDim now */
  readonly rowType: 'F32';
  /** byte offsets of position 0 of a layer's keys / values */
  keysAt(layer: number): number;
  valuesAt(layer: number): number;
}

function kernelKvStorage(engine: MatmulEngine, nLayers: number, capacity: number, kvDim: number, reportedLayers = nLayers): KernelKvStorage | null {
  const owner = {};
  const k = engine.allocF32(nLayers * capacity * kvDim, owner); // (layer, pos, kvDim)
  const v = k && engine.allocF32(nLayers * capacity * kvDim, owner); // (layer, pos, kvDim)
  if (!k || !v) return null;
  const base = (layer: number, pos: number) => (layer * capacity + pos) * kvDim;
  const put = (dst: { at: number; array: Float32Array }, at: number, src: Float32Array, n: number) => {
    const own = engine.ptrOf(src, n * kvDim);
    if (own >= 0) engine.copyWithin(dst.at + at * 4, own, n * kvDim * 4);
    else dst.array.set(src.subarray(0, n * kvDim), at);
  };
  return {
    engine,
    rowType: 'F32',
    capacity,
    bytesPerToken: 8 * reportedLayers * kvDim,
    store(layer, pos, key, value) {
      void owner; // the arrays live as long as this storage
      put(k, base(layer, pos), key, 1);
      put(v, base(layer, pos), value, 1);
    },
    append(layer, pos, n, keys, values) {
      put(k, base(layer, pos), keys, n);
      put(v, base(layer, pos), values, n);
    },
    keys: (layer, n) => k.array.subarray(base(layer, 0), base(layer, n)),
    values: (layer, n) => v.array.subarray(base(layer, 0), base(layer, n)),
    keysAt: (layer) => k.at + base(layer, 0) * 4,
    valuesAt: (layer) => v.at + base(layer, 0) * 4,
    reserve: (n) => reserveLayers(k.array, v.array, nLayers, capacity, n, base),
  };
}

/** consecutive one-token matmuls of one input and one weight type, with their fused weight (fuseDecode) or null */
interface DecodeRun {
  readonly weights: LinearWeight[];
  kernel: KernelWeight | null;
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
  readonly ropeFreq: Float64Array; // (ropeDim/2) theta^(-2i/ropeDim) * freqScale / factor_i
  readonly ropeFreqSwa: Float64Array; // (ropeDim/2) the same for sliding-window layers
  readonly lastLogits: Float32Array; // (vocab)
  // family buffers, allocated when the model needs them
  readonly qkv: Float32Array; // (batch, qDim + 2*kvDim) fused q|k|v (Phi-3)
  readonly gateUp: Float32Array; // (batch, 2*hiddenDim) fused gate|up (Phi-3)
  readonly router: Float32Array; // (batch, nExperts) router logits
  readonly expertIn: Float32Array; // (batch, dim) the rows routed to one expert
  readonly expertGate: Float32Array; // (batch, expertHidden)
  readonly expertUp: Float32Array; // (batch, expertHidden)
  readonly expertOut: Float32Array; // (batch, dim)
  constructor(c: LlamaConfig, readonly batch: number, capacity: number, engine: MatmulEngine | null, w: LlamaWeights) {
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    const f32 = (n: number) => (n === 0 ? new Float32Array(0) : (engine?.allocF32(n, this)?.array ?? new Float32Array(n)));
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
    const table = (theta: number, scale: number) => {
      const f = new Float64Array(c.ropeDim / 2);
      const y = c.ropeYarn;
      // YaRN (ggml's rope_yarn): dimension i mixes the interpolated (x scale) and the extrapolated
      // frequency by a ramp between the correction dims of beta_fast and beta_slow
      const corr = (beta: number) => (c.ropeDim * Math.log(y!.origCtx / (beta * 2 * Math.PI))) / (2 * Math.log(theta));
      const lo = y ? Math.max(0, Math.floor(corr(y.betaFast))) : 0;
      const hi = y ? Math.min(c.ropeDim - 1, Math.ceil(corr(y.betaSlow))) : 0;
      for (let i = 0; i < c.ropeDim / 2; i++) {
        const mix = y ? 1 - Math.min(1, Math.max(0, (i - lo) / Math.max(0.001, hi - lo))) : 0;
        f[i] = (Math.pow(theta, (-2 * i) / c.ropeDim) * (scale * (1 - mix) + mix)) / (w.ropeFactors ? w.ropeFactors[i] : 1);
      }
      return f;
    };
    this.ropeFreq = table(c.ropeTheta, c.ropeFreqScale ?? 1);
    this.ropeFreqSwa = table(c.ropeThetaSwa ?? c.ropeTheta, c.ropeFreqScaleSwa ?? c.ropeFreqScale ?? 1);
    this.lastLogits = f32(c.vocabSize); // kernel memory: the output matmul writes it in place
    const L = w.layers;
    const eh = c.expertHiddenDim ?? 0;
    this.qkv = f32(L.some((x) => x.wqkv) ? batch * (qDim + 2 * kvDim) : 0);
    this.gateUp = f32(L.some((x) => x.gateUp) ? batch * 2 * c.hiddenDim : 0);
    const moe = L.some((x) => x.router);
    this.router = f32(moe ? batch * c.nExperts! : 0);
    this.expertIn = f32(moe ? batch * c.dim : 0);
    this.expertGate = f32(moe ? batch * eh : 0);
    this.expertUp = f32(moe ? batch * eh : 0);
    this.expertOut = f32(moe ? batch * c.dim : 0);
  }
}

// ---------------------------------------------------------------------------------------------------
// Building blocks

/** out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, for nTok rows of `size` (out may be x) */
export function rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, nTok: number, size: number, eps: number): void {
  let t = 0;
  // four rows at a time: their sums are four independent chains of f64 additions (a row's own sum is
  // the same sequence as below: the same value)
  for (; t + 4 <= nTok; t += 4) {
    const o0 = t * size;
    const o1 = o0 + size;
    const o2 = o1 + size;
    const o3 = o2 + size;
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let i = 0; i < size; i++) {
      s0 += x[o0 + i] * x[o0 + i];
      s1 += x[o1 + i] * x[o1 + i];
      s2 += x[o2 + i] * x[o2 + i];
      s3 += x[o3 + i] * x[o3 + i];
    }
    const c0 = 1 / Math.sqrt(s0 / size + eps);
    const c1 = 1 / Math.sqrt(s1 / size + eps);
    const c2 = 1 / Math.sqrt(s2 / size + eps);
    const c3 = 1 / Math.sqrt(s3 / size + eps);
    for (let i = 0; i < size; i++) out[o0 + i] = x[o0 + i] * c0 * weight[i];
    for (let i = 0; i < size; i++) out[o1 + i] = x[o1 + i] * c1 * weight[i];
    for (let i = 0; i < size; i++) out[o2 + i] = x[o2 + i] * c2 * weight[i];
    for (let i = 0; i < size; i++) out[o3 + i] = x[o3 + i] * c3 * weight[i];
  }
  for (; t < nTok; t++) {
    const o = t * size;
    let ss = 0;
    for (let i = 0; i < size; i++) ss += x[o + i] * x[o + i];
    const scale = 1 / Math.sqrt(ss / size + eps);
    for (let i = 0; i < size; i++) out[o + i] = x[o + i] * scale * weight[i];
  }
}

/** Rotate the first ropeDim dims of each head of vec (nTok rows of nHeads*headDim) by position. */
export function rope(c: LlamaConfig, freq: Float64Array, vec: Float32Array, nTok: number, nHeads: number, pos0: number): void {
  const half = c.ropeDim / 2;
  const mscale = c.ropeMscale ?? 1;
  for (let t = 0; t < nTok; t++) {
    const p = pos0 + t;
    for (let i = 0; i < half; i++) {
      const angle = p * freq[i];
      rotatePair(c, vec, t, nHeads, i, Math.cos(angle) * mscale, Math.sin(angle) * mscale);
    }
  }
}

/** rotates pair i of every head of token t by (cos, sin): 'normal' pairs (2i, 2i+1), 'neox' (i, i + ropeDim/2) */
function rotatePair(c: LlamaConfig, vec: Float32Array, t: number, nHeads: number, i: number, cos: number, sin: number): void {
  const normal = c.ropeStyle === 'normal';
  const a = normal ? 2 * i : i;
  const b = normal ? 2 * i + 1 : i + c.ropeDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const o = (t * nHeads + h) * c.headDim;
    const x0 = vec[o + a];
    const x1 = vec[o + b];
    vec[o + a] = x0 * cos - x1 * sin;
    vec[o + b] = x0 * sin + x1 * cos;
  }
}

/** cos and sin (times the YaRN mscale) of every (position, pair) below a capacity, as rope() computes them */
export interface RopeTable {
  readonly cos: Float64Array;
  readonly sin: Float64Array;
  readonly positions: number;
}

export function ropeTable(c: LlamaConfig, freq: Float64Array, positions: number): RopeTable {
  const half = c.ropeDim / 2;
  const mscale = c.ropeMscale ?? 1;
  const cos = new Float64Array(positions * half);
  const sin = new Float64Array(positions * half);
  for (let p = 0; p < positions; p++) ropeAngles(freq, half, mscale, p, cos, sin, p * half);
  return { cos, sin, positions };
}

/** rope()'s cos and sin of position p for pairs 0..half - 1 into cos / sin at `at` (the same f64 values) */
export function ropeAngles(freq: Float64Array, half: number, mscale: number, p: number, cos: Float64Array, sin: Float64Array, at: number): void {
  for (let i = 0; i < half; i++) {
    const angle = p * freq[i];
    cos[at + i] = Math.cos(angle) * mscale;
    sin[at + i] = Math.sin(angle) * mscale;
  }
}

/** rope() reading cos and sin from a table (bit-identical: the same f64 values and operations) */
export function ropeTabled(c: LlamaConfig, t: RopeTable, vec: Float32Array, nTok: number, nHeads: number, pos0: number): void {
  const half = c.ropeDim / 2;
  if (pos0 + nTok > t.positions) throw new Error(`rope table: positions ${pos0}..${pos0 + nTok - 1} past ${t.positions}`);
  for (let tk = 0; tk < nTok; tk++) {
    const at = (pos0 + tk) * half;
    for (let i = 0; i < half; i++) rotatePair(c, vec, tk, nHeads, i, t.cos[at + i], t.sin[at + i]);
  }
}

/**
 * GeGLU as ggml's CPU backend computes it: gelu (tanh form) is read from a table indexed by the f16 value
 * of the gate, so the gate is rounded to f16 and the result to f16; |g| >= 10 passes through (0 or g).
 */
function gegluGgml(gate: Float32Array, up: Float32Array, n: number): void {
  const table = gegluTable();
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = g <= -10 ? 0 : g >= 10 ? g * up[i] : table[f32ToF16(g)] * up[i];
  }
}

let geluF16: Float32Array | null = null;
function gegluTable(): Float32Array {
  if (geluF16) return geluF16;
  const t = new Float32Array(65536);
  const c = Math.fround(Math.sqrt(2 / Math.PI));
  for (let h = 0; h < 65536; h++) {
    const x = f16ToF32(h);
    const inner = Math.fround(c * Math.fround(x * Math.fround(1 + Math.fround(Math.fround(0.044715 * x) * x))));
    const y = Math.fround(Math.fround(0.5 * x) * Math.fround(1 + Math.fround(Math.tanh(inner))));
    t[h] = f16ToF32(f32ToF16(y));
  }
  return (geluF16 = t);
}

/** x = cap * tanh(x / cap) over n values */
function softcap(x: Float32Array, n: number, cap: number): void {
  for (let i = 0; i < n; i++) x[i] = cap * Math.tanh(x[i] / cap);
}

/**
 * Causal attention with the family options the kernel does not have: a sliding window (token at position
 * p sees p-window+1 .. p) and soft-capped scores (s = cap*tanh(s/cap), after the query scale). Plain
 * TypeScript, float64 accumulation as attentionRef.
 */
function attentionWindowed(q: Float32Array, keys: Float32Array, values: Float32Array, nTok: number, pos0: number, nHeads: number, nKvHeads: number, headDim: number, scale: number, window: number, cap: number, out: Float32Array, scores: Float64Array, ring = 0): void {
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  for (let t = 0; t < nTok; t++) {
    const p = pos0 + t;
    const from = window > 0 ? Math.max(0, p - window + 1) : 0;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * nHeads * headDim + h * headDim;
      const ko = Math.floor(h / group) * headDim;
      let max = -Infinity;
      for (let j = from; j <= p; j++) {
        let dot = 0;
        const kr = (ring ? j % ring : j) * kvDim + ko;
        for (let i = 0; i < headDim; i++) dot += q[qo + i] * keys[kr + i];
        let sc = dot * scale;
        if (cap > 0) sc = cap * Math.tanh(sc / cap);
        scores[j] = sc;
        if (sc > max) max = sc;
      }
      let sum = 0;
      for (let j = from; j <= p; j++) {
        scores[j] = Math.exp(scores[j] - max);
        sum += scores[j];
      }
      for (let i = 0; i < headDim; i++) {
        let acc = 0;
        for (let j = from; j <= p; j++) acc += scores[j] * values[(ring ? j % ring : j) * kvDim + ko + i];
        out[qo + i] = acc / sum;
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
  linearInput?: (name: string, x: Float32Array, nTok: number, k: number, expert?: number) => void;
  /**
   * Replaces the linear layer itself (out = x w^T for nTok rows): activation quantization modes
   * (W8A8, LLM.int8(), see src/model/act-quant.ts) plug in here. Must not modify x.
   */
  linear?: (out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number, expert?: number) => void;
  /** Called with each layer's keys before RoPE and its values (nTok rows of kvDim, views: copy what you keep), KV-cache calibration */
  kvInput?: (layer: number, pos: number, nTok: number, keys: Float32Array, values: Float32Array) => void;
}

export interface LlamaOptions extends LoadOptions {
  /** positions the KV cache holds (default: config.seqLen) */
  contextLength?: number;
  /** tokens per forward step (default 128) */
  batch?: number;
  /** KV cache storage (default f32) */
  kv?: KvStorage;
  /** KV cache types (-ctk / -ctv): a packed cache (src/model/kv/cache.ts) unless both are f32 */
  kvCache?: KvCacheOptions;
  /**
   * One KV cache slot shared by every layer (sliding-window layers keep their rings): for callers whose
   * layers never read an earlier layer's cache after the next layer has run. The calibration stages
   * (runStage) run a layer's attention over whole windows before the next layer's; perplexity's chunks
   * run from position 0 in one batch (`forward` then fails on any other position or on more than one
   * batch). The cache holds one layer, not nLayers (12x less memory to map on the 155M model, ~9k fewer
   * first-touch page faults); the kernel cache's bytesPerToken still reports every layer's (the format's cost).
   */
  kvOneLayer?: boolean;
  /**
   * 'ggml': round each linear layer's input to the weight type's llama.cpp `vec_dot_type` first (Q8_0,
   * Q8_1, Q8_K, F16, BF16), as llama.cpp's CPU backend does, so KLD/PPL match what llama.cpp measures;
   * with the WebAssembly kernels, Q4_0, Q5_0, Q8_0, IQ4_NL, Q3_K..Q6_K and IQ4_XS weights then run on
   * integer dot products (MatmulEngine.matmulInt), the fast path. 'f32' (the library default; the CLI's
   * is 'ggml'): weights are the only thing quantized, multiplied in f32.
   */
  activations?: 'f32' | 'ggml';
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** most (position, pair) entries of a batch's RoPE table (two f64 arrays: 16 MiB) */
const ROPE_TABLE_MAX = 1 << 20;

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
  /** the input of the last lin that ran an integer matmul (null after any other lin) */
  private lastIntInput: Float32Array | null = null;
  /**
   * One-token matmuls of one input run as one dispatch (prepareDecode, MatmulEngine.fuseDecode): per layer,
   * q | k | v and gate | up cut into runs of consecutive weights of one type, a run of 2 or 3 with its
   * fused weight; `fusedOut` receives a fused run's rows. Empty until prepareDecode.
   */
  private decodeRuns: { qkv: DecodeRun[]; gateUp: DecodeRun[] }[] = [];
  private fusedOut: Float32Array | null = null;
  /** rope's cos and sin (times mscale) of one position for one frequency table: the last token's */
  private readonly ropeOne: { freq: Float64Array | null; pos: number; cos: Float64Array; sin: Float64Array };

  /**
   * Sliding-window layers (Gemma) keep only their last window + batch - 1 positions, in a ring (as
   * llama.cpp's SWA cache); the KV cache (`kv`) then holds the global layers only. Absent when no
   * layer slides, with a caller's `kv`, or when the context is no longer than the ring.
   */
  readonly swaCache?: { readonly positions: number; readonly layers: number };
  /** per layer: its slot in `kv`, or -1 - (its ring) for a sliding-window layer in the ring */
  private readonly kvSlot: Int32Array;
  /** LlamaOptions.kvOneLayer: every non-sliding layer in slot 0 (forward then runs one batch from position 0) */
  private readonly oneLayerKv: boolean;
  private readonly ringK: Float32Array = new Float32Array(0);
  private readonly ringV: Float32Array = new Float32Array(0);

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
    const batch = Math.max(1, opts.batch ?? 128);
    if (opts.kv && !isDefaultKvCache(opts.kvCache)) fail('give either a KV storage or KV cache types, not both');
    const ring = c.slidingWindow ? c.slidingWindow + batch - 1 : Infinity;
    const sliding = (l: number) => !opts.kv && isDefaultKvCache(opts.kvCache) && ring < capacity && c.swaLayers?.[l] === true;
    this.kvSlot = new Int32Array(c.nLayers);
    let nGlobal = 0;
    let nRing = 0;
    for (let l = 0; l < c.nLayers; l++) this.kvSlot[l] = sliding(l) ? -1 - nRing++ : nGlobal++;
    // kvOneLayer: the non-sliding layers share slot 0; nAll of them are reported as the cache's cost
    const nAll = nGlobal;
    this.oneLayerKv = opts.kvOneLayer === true && nGlobal > 1;
    if (this.oneLayerKv) {
      for (let l = 0; l < c.nLayers; l++) if (this.kvSlot[l] >= 0) this.kvSlot[l] = 0;
      nGlobal = 1;
    }
    if (nRing > 0) {
      this.swaCache = { positions: ring, layers: nRing };
      this.ringK = new Float32Array(nRing * ring * kvDim);
      this.ringV = new Float32Array(nRing * ring * kvDim);
    }
    const packed = isDefaultKvCache(opts.kvCache) ? null : packedKvStorage(opts.kvCache!, { nLayers: nGlobal, capacity, nKvHeads: c.nKvHeads, headDim: c.headDim }, engine);
    const kernelKv = engine && c.headDim % 4 === 0 && !opts.kv && !packed ? kernelKvStorage(engine, nGlobal, capacity, kvDim, nAll) : null;
    this.kv = opts.kv ?? packed ?? kernelKv ?? f32KvStorage(nGlobal, capacity, kvDim);
    this.engine = engine;
    this.s = new RunState(c, batch, this.kv.capacity, engine, this.weights);
    this.ropeOne = { freq: null, pos: -1, cos: new Float64Array(c.ropeDim / 2), sin: new Float64Array(c.ropeDim / 2) };
    this.activations = opts.activations ?? 'f32';
    // a pre-RoPE store ropes its whole cache every step: cos and sin of every position once, per frequency table
    const tables = new Map<Float64Array, RopeTable>();
    const tableOf = (layer: number): RopeTable => {
      const freq = c.swaLayers?.[layer] === true ? this.s.ropeFreqSwa : this.s.ropeFreq;
      let t = tables.get(freq);
      if (!t) tables.set(freq, (t = ropeTable(c, freq, this.kv.capacity)));
      return t;
    };
    this.kv.setRope?.(
      (layer, rows, n, pos0) => ropeTabled(c, tableOf(layer), rows, n, c.nKvHeads, pos0),
      (layer) => ({ ...tableOf(layer), half: c.ropeDim / 2, normal: c.ropeStyle === 'normal' }),
    );
  }

  /**
   * Run `tokens` at positions pos, pos+1, ... (the KV cache must hold positions [0, pos) already).
   * Returns the logits of tokens [outputsFrom, tokens.length): by default only the last token's
   * (a reused buffer); otherwise a new (tokens.length - outputsFrom) x vocab array, or with `reuse` a
   * buffer of the model's, overwritten by its next forward call (perplexity: no fresh array of
   * rows x vocab per chunk; its page faults and copy cost as much as the output matmul's products on
   * the 155M model at ctx 512; when the kernels' memory is shared, the matmul writes into it in place).
   */
  forward(tokens: ArrayLike<number>, pos: number, outputsFrom = tokens.length - 1, reuse = false): Float32Array {
    const c = this.config;
    const n = tokens.length;
    if (n === 0) fail('forward needs at least one token');
    if (pos < 0 || pos + n > this.kv.capacity) fail(`positions ${pos}..${pos + n - 1} do not fit the context of ${this.kv.capacity}`);
    if (!(outputsFrom >= 0 && outputsFrom < n)) fail(`outputsFrom ${outputsFrom} is outside the ${n} tokens`);
    if (this.oneLayerKv && (pos !== 0 || n > this.s.batch)) fail(`internal: a model with a one-layer KV cache (kvOneLayer) ran ${n} tokens at position ${pos} (batch ${this.s.batch})`);
    const onlyLast = outputsFrom === n - 1;
    const size = (n - outputsFrom) * c.vocabSize;
    const out = onlyLast ? this.s.lastLogits : reuse ? this.reusedLogits(size) : new Float32Array(size);
    for (let b = 0; b < n; b += this.s.batch) {
      const nb = Math.min(this.s.batch, n - b);
      const ids = b === 0 && nb === n ? tokens : Array.from({ length: nb }, (_, i) => tokens[b + i]);
      this.step(ids, pos + b, this.lastLayerSkip(outputsFrom - b, nb));
      const from = Math.max(outputsFrom, b); // first token of this batch that needs logits
      if (from < b + nb) this.logits(out.subarray((from - outputsFrom) * c.vocabSize, (b + nb - outputsFrom) * c.vocabSize), from - b, b + nb - from);
    }
    return out;
  }

  /** forward's reused logits (reuse = true): at least `size` floats, in the kernels' memory when it can be */
  private logitsBuffer: { array: Float32Array; owner: object } | null = null;
  private reusedLogits(size: number): Float32Array {
    if (!this.logitsBuffer || this.logitsBuffer.array.length < size) {
      // a kernel-memory block lives as long as its owner: a replaced buffer is released with its owner
      const owner = {};
      this.logitsBuffer = { array: this.engine?.allocF32(size, owner)?.array ?? new Float32Array(size), owner };
    }
    return this.logitsBuffer.array.subarray(0, size);
  }

  /**
   * Map the KV cache's memory for positions [0, positions) now (each page written once with its own bytes:
   * no value changes), so that decoding them takes no page faults. A fresh page is mapped on its first
   * write, ~25 µs per 4 KiB on the VMs measured here: 18 pages a token on the 155M model (~0.45 ms, 10 % of
   * a Q4_0 token) when the cache grew one position at a time. llama.cpp clears its whole KV buffer when it
   * makes a context; `generate` reserves the positions it will use. Caches without `reserve` (packed
   * ones, a caller's storage) are left as they are.
   */
  reserveKv(positions: number): void {
    this.kv.reserve?.(Math.min(positions, this.kv.capacity));
  }

  /**
   * Prepare the weights for decoding one token at a time (`--activations ggml`, the integer path): the
   * kernel's copies interleaved by 4 rows (MatmulEngine.prepareDecode), made here instead of during the
   * first decoded token. Returns the bytes copied (0 when there is nothing to prepare).
   */
  prepareDecode(): number {
    if (this.activations !== 'ggml' || !kernelsEnabled() || this.hooks.linear) return 0;
    let bytes = 0;
    const seen = new Set<KernelWeight>();
    const visit = (w: unknown) => {
      const kw = (w as LinearWeight | undefined)?.kernel;
      if (!kw || seen.has(kw)) return;
      seen.add(kw);
      bytes += kw.engine.prepareDecode(kw);
    };
    // q | k | v and gate | up: one copy per run of one type (fuseDecode), made instead of the members' own
    const engine = this.engine;
    const runs = (ws: LinearWeight[]): DecodeRun[] => {
      const out: DecodeRun[] = [];
      for (const w of ws) {
        const last = out[out.length - 1];
        if (last && last.weights[0].type.id === w.type.id) last.weights.push(w);
        else out.push({ weights: [w], kernel: null });
      }
      for (const r of out) {
        if (r.weights.length < 2 || !engine || r.weights.some((w) => !w.kernel)) continue;
        // the members' engine (a weight past the first memory lives in the next one: MatmulEngine.spill)
        const we = r.weights[0].kernel!.engine;
        r.kernel = we.fuseDecode(r.weights.map((w) => w.kernel!));
        if (!r.kernel) continue;
        bytes += we.prepareDecode(r.kernel);
        for (const w of r.weights) seen.add(w.kernel!);
      }
      return out;
    };
    if (engine && this.decodeRuns.length === 0) {
      const c = this.config;
      this.decodeRuns = this.weights.layers.map((L) => ({
        qkv: L.wqkv ? [] : runs([L.wq, L.wk, L.wv]),
        gateUp: L.gateUp || !L.gate || !L.up ? [] : runs([L.gate, L.up]),
      }));
      if (this.decodeRuns.some((d) => [...d.qkv, ...d.gateUp].some((r) => r.kernel))) {
        this.fusedOut = engine.allocF32(Math.max(c.nHeads * c.headDim + 2 * c.nKvHeads * c.headDim, 2 * c.hiddenDim), this)?.array ?? null;
      }
    }
    for (const L of this.weights.layers) for (const v of Object.values(L)) (Array.isArray(v) ? v : [v]).forEach(visit);
    visit(this.weights.output);
    return bytes;
  }

  /**
   * The runs of one input's one-token matmuls (prepareDecode) into `targets` (one per weight, in order):
   * a fused run as one matmul into fusedOut, then its rows copied out; the same bits as one lin each
   * (the input rounded once, as lin's sameInput does). False when they do not apply (not one token, no
   * fused run, hooks set, kernels off): the caller runs its lins.
   */
  private linRuns(runs: DecodeRun[] | undefined, targets: Float32Array[], x: Float32Array, nTok: number): boolean {
    const out = this.fusedOut;
    if (nTok !== 1 || !runs || !out || !runs.some((r) => r.kernel) || this.hooks.linear || this.hooks.linearInput || !kernelsEnabled()) return false;
    let i = 0;
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r];
      const kw = run.kernel;
      if (!kw) {
        for (const w of run.weights) {
          const first = i === 0;
          this.lin(targets[i++], x, w, 1, undefined, !first);
        }
        continue;
      }
      if (kw.type.id === 0) {
        kw.engine.matmul(out, x, kw, 1);
        this.lastIntInput = null;
      } else {
        const same = r > 0 && this.lastIntInput === x;
        if (!kw.engine.decodeInt(out, x, kw, same)) kw.engine.matmulInt(out, x, kw, 1, same);
        this.lastIntInput = x;
      }
      let o = 0;
      for (const w of run.weights) {
        targets[i++].set(out.subarray(o, o + w.rows));
        o += w.rows;
      }
    }
    return true;
  }

  /**
   * The parts of a layer, for calibration that quantizes a layer's linears one stage at a time
   * (src/pipeline/calibrate.ts). x: residual-stream rows (nTok x dim, not modified) at positions
   * pos, pos+1, ...; out: the stage's output rows.
   *   'attnNorm', 'ffnNorm': the RMSNorm of x (the input of q/k/v, of gate/up)      nTok x dim
   *   'attention': attention before Wo (the input of Wo), keys/values into the cache  nTok x nHeads*headDim
   *   'ffn': silu(gate(x')) * up(x'), x' = ffnNorm(x) (the input of Wdown)              nTok x hiddenDim
   *   'moe': a mixture-of-experts block's output (router, experts, weighted sum)       nTok x dim
   */
  runStage(stage: 'attnNorm' | 'ffnNorm' | 'attention' | 'ffn' | 'moe', l: number, x: Float32Array, out: Float32Array, pos = 0): void {
    const c = this.config;
    const dim = c.dim;
    const n = x.length / dim;
    if (!(l >= 0 && l < c.nLayers)) fail(`layer ${l} does not exist (the model has ${c.nLayers})`);
    if (!Number.isInteger(n) || pos < 0 || pos + n > this.kv.capacity) fail(`runStage: ${x.length} values are not whole tokens at positions ${pos}.. within ${this.kv.capacity}`);
    const width = stage === 'attention' ? c.nHeads * c.headDim : stage === 'ffn' ? c.hiddenDim : dim;
    if ((stage === 'moe') !== (this.weights.layers[l].router !== undefined) && (stage === 'moe' || stage === 'ffn')) fail(`runStage ${stage}: layer ${l} ${stage === 'moe' ? 'has no experts' : 'is a mixture of experts (stage moe)'}`);
    if (out.length < n * width) fail(`runStage ${stage}: output holds ${out.length} values, needs ${n * width}`);
    const s = this.s;
    const L = this.weights.layers[l];
    for (let b = 0; b < n; b += s.batch) {
      const nb = Math.min(s.batch, n - b);
      const rows = x.subarray(b * dim, (b + nb) * dim);
      const dst = out.subarray(b * width, (b + nb) * width);
      if (stage === 'attnNorm' || stage === 'ffnNorm') {
        this.norm(dst, rows, stage === 'attnNorm' ? L.attnNorm : L.ffnNorm, nb, dim);
        addBias(dst, stage === 'attnNorm' ? L.attnNormBias : L.ffnNormBias, nb);
        continue;
      }
      // the attention and FFN blocks read x only through their norm: from the rows where they are (no copy
      // into s.x), and write their output straight into dst (no copy out of the scratch: the calibration
      // stages keep ~1 GB of those per layer of a 100M model)
      if (stage === 'attention') this.attentionBlock(l, nb, pos + b, rows, dst);
      else if (stage === 'moe') {
        s.x.set(rows);
        this.moeBlock(l, nb);
        dst.set(s.xb2.subarray(0, nb * width));
      } else this.ffnBlock(l, nb, rows, dst);
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
    // the kernel's dequantizer when the table and out live in its memory (the same values as the
    // TypeScript codecs, bit for bit; a row of the TypeScript path cost ~15-70 µs per decoded token)
    const engine = this.engine && kernelsEnabled() ? this.engine : null;
    for (let t = 0; t < tokens.length; t++) {
      const id = tokens[t];
      if (!(Number.isInteger(id) && id >= 0 && id < c.vocabSize)) fail(`token id ${id} is outside the ${c.vocabSize}-token vocabulary`);
      const row = out.subarray(t * c.dim, (t + 1) * c.dim);
      const src = e.data.subarray(id * e.rowBytes, (id + 1) * e.rowBytes);
      if (e.fill && !e.loaded![id]) {
        e.fill(id * e.rowBytes, src); // a lazily loaded table: the row's first use
        e.loaded![id] = 1;
      }
      // F32 rows: their bytes (dequantizeRows' F32 copy, little-endian), without the per-element loop
      if (e.type.id === 0 && LITTLE_ENDIAN && src.byteOffset % 4 === 0) row.set(new Float32Array(src.buffer, src.byteOffset, c.dim));
      else if (!engine?.dequantizeInto(e.type, src, e.rowBytes, 1, c.dim, row)) dequantizeRows(e.type, src, c.dim, 1, row);
      if (c.embedScale !== undefined) for (let i = 0; i < c.dim; i++) row[i] = Math.fround(row[i] * c.embedScale);
    }
  }

  /** rmsnorm (out may be x) by the kernel when it is in use (engine.rmsnorm: the same bits), else in TypeScript */
  private norm(out: Float32Array, x: Float32Array, weight: Float32Array, nTok: number, size: number): void {
    if (this.engine && kernelsEnabled()) this.engine.rmsnorm(out, x, weight, nTok, size, this.config.normEps);
    else rmsnorm(out, x, weight, nTok, size, this.config.normEps);
  }

  /** ropeTabled by the kernel when vec lives in its memory (engine.ropeTabled: the same bits), else in TypeScript */
  private ropeRows(t: RopeTable, vec: Float32Array, nTok: number, nHeads: number, pos0: number): void {
    const c = this.config;
    if (this.engine && kernelsEnabled() && this.engine.ropeTabled(vec, nTok, nHeads, c.headDim, c.ropeDim / 2, pos0, t.cos, t.sin, c.ropeStyle === 'normal')) return;
    ropeTabled(c, t, vec, nTok, nHeads, pos0);
  }

  /** out = x · wᵀ (nTok rows); sameInput: x is unchanged since the previous lin (its rounding is reused) */
  private lin(out: Float32Array, x: Float32Array, w: LinearWeight, nTok: number, expert?: number, sameInput = false): void {
    if (this.hooks.linearInput) this.hooks.linearInput(w.name, x.subarray(0, nTok * w.cols), nTok, w.cols, expert);
    if (this.activations === 'ggml') {
      // llama.cpp's own path: integer dot products on the stored blocks (activations rounded in the kernel)
      const kw = w.kernel;
      if (kw && !this.hooks.linear && kernelsEnabled() && kw.engine.intBlock(kw) > 0) {
        // reuse the rounding only right after an integer matmul of the same input (lastIntInput); one token:
        // the call's words as the last token ran it (decodeInt), else matmulInt (which keeps them for the next)
        const same = sameInput && this.lastIntInput === x && !this.hooks.linearInput;
        if (!(nTok === 1 && kw.engine.decodeInt(out, x, kw, same))) kw.engine.matmulInt(out, x, kw, nTok, same);
        this.lastIntInput = x;
        return;
      }
      this.lastIntInput = null;
      if (this.actScratch.length < nTok * w.cols) this.actScratch = new Float32Array(this.s.batch * Math.max(w.cols, this.config.hiddenDim, this.config.dim, this.config.expertHiddenDim ?? 0));
      if (ggmlRoundActivations(w.type, x, nTok, w.cols, this.actScratch)) x = this.actScratch;
    }
    this.lastIntInput = null;
    if (this.hooks.linear) this.hooks.linear(out, x.subarray(0, nTok * w.cols), w, nTok, expert);
    else linear(out, x, w, nTok);
  }

  /**
   * How many leading rows of a batch of nb tokens the last layer may leave out past its keys and values,
   * when only rows from `needed` on have logits asked for (as llama.cpp computes only the output rows in
   * its last layer): their queries, attention, Wo and FFN feed nothing but their own residual rows. A
   * multiple of 16 leaving at least 16 rows (the prefill kernels' shapes; every op is row by row, so the
   * rows kept get the same bits); 0 with hooks (they see every row's inputs) or a last layer of experts
   * or fused q|k|v.
   */
  private lastLayerSkip(needed: number, nb: number): number {
    let skip = Math.max(0, Math.min(needed, nb)) & ~15;
    if (nb - skip < 16) skip = Math.max(0, skip - 16);
    const L = this.weights.layers[this.config.nLayers - 1];
    if (skip === 0 || this.hooks.linear || this.hooks.linearInput || L.router || L.wqkv) return 0;
    return skip;
  }

  /**
   * one batch through all layers, leaving the final residual stream in s.x (the last layer's first `skip`
   * rows left out: lastLayerSkip). A NaN or infinity in the residual stream is an error naming the first
   * layer (and token position) where it appeared.
   */
  private step(tokens: ArrayLike<number>, pos: number, skip = 0): void {
    const dim = this.config.dim;
    const n = tokens.length * dim;
    this.embed(tokens, this.s.x);
    const engine = this.engine && kernelsEnabled() ? this.engine : null;
    checkFinite(this.s.x, n, dim, pos, 'the token embeddings (token_embd.weight)', engine);
    const last = this.config.nLayers - 1;
    for (let l = 0; l < this.config.nLayers; l++) {
      const k = l === last ? skip : 0;
      this.layer(l, tokens.length, pos, k);
      checkFinite(k ? this.s.x.subarray(k * dim) : this.s.x, n - k * dim, dim, pos + k, `the output of layer ${l} (blk.${l})`, engine);
    }
  }

  /**
   * layer l on the nTok rows of s.x (positions pos, pos+1, ...), in place; with `skip`, rows [0, skip)
   * only give their keys and values (their rows of s.x are left as they were)
   */
  private layer(l: number, nTok: number, pos: number, skip = 0): void {
    const c = this.config;
    const s = this.s;
    const L = this.weights.layers[l];
    const nT = nTok - skip;
    const n = nT * c.dim;
    const x = skip ? s.x.subarray(skip * c.dim) : s.x;
    this.attentionBlock(l, nTok, pos, s.x, s.att, skip);
    this.lin(s.xb2, s.att, L.wo, nT);
    if (L.attnPostNorm) this.norm(s.xb2, s.xb2, L.attnPostNorm, nT, c.dim);
    this.addResidual(n, x);
    if (L.router) this.moeBlock(l, nTok);
    else {
      // sameInput: ffnBlock may have rounded s.hb for down already (fused with SwiGLU: lastIntInput)
      this.ffnBlock(l, nT, x, s.hb, L.down);
      this.lin(s.xb2, s.hb, L.down!, nT, undefined, true);
    }
    if (L.ffnPostNorm) this.norm(s.xb2, s.xb2, L.ffnPostNorm, nT, c.dim);
    this.addResidual(n, x);
  }

  /** x += s.xb2 over n values: in WebAssembly when both live in kernel memory (the same f32 sums) */
  private addResidual(n: number, x = this.s.x): void {
    const s = this.s;
    if (this.engine && kernelsEnabled() && this.engine.addInto(x, s.xb2, n)) return;
    for (let i = 0; i < n; i++) x[i] += s.xb2[i];
  }

  /**
   * rmsnorm, q/k/v, RoPE, keys and values into the cache, causal attention: s.x -> att (before Wo; s.att
   * unless given). With `skip` (lastLayerSkip), keys and values of all nTok rows, queries and attention
   * of rows [skip, nTok) only (att from its start).
   */
  private attentionBlock(l: number, nTok: number, pos: number, x: Float32Array = this.s.x, att: Float32Array = this.s.att, skip = 0): void {
    const c = this.config;
    const s = this.s;
    const { dim, headDim, nHeads, nKvHeads } = c;
    const qDim = nHeads * headDim;
    const kvDim = nKvHeads * headDim;
    const L = this.weights.layers[l];
    const slot = this.kvSlot[l];
    // a batch's keys and values straight into the cache's rows when it is this engine's f32 storage (positions
    // pos.. of a slot are one block of rows): the same values through the same operations, without the copy
    const kkv = this.kv as Partial<KernelKvStorage>;
    const direct = nTok >= 16 && slot >= 0 && !L.wqkv && !this.hooks.kvInput && this.kv.preRopeKeys !== true && this.engine !== null && kkv.engine === this.engine && kkv.keysAt !== undefined && kernelsEnabled();
    const kb = direct ? this.kv.keys(slot, pos + nTok).subarray(pos * kvDim) : s.k;
    const vb = direct ? this.kv.values(slot, pos + nTok).subarray(pos * kvDim) : s.v;
    this.norm(s.xb, x, L.attnNorm, nTok, dim);
    addBias(s.xb, L.attnNormBias, nTok);
    if (L.wqkv) {
      // Phi-3: one matmul, then the q | k | v column ranges of each row
      const w = qDim + 2 * kvDim;
      this.lin(s.qkv, s.xb, L.wqkv, nTok);
      for (let t = 0; t < nTok; t++) {
        s.q.set(s.qkv.subarray(t * w, t * w + qDim), t * qDim);
        s.k.set(s.qkv.subarray(t * w + qDim, t * w + qDim + kvDim), t * kvDim);
        s.v.set(s.qkv.subarray(t * w + qDim + kvDim, (t + 1) * w), t * kvDim);
      }
    } else if (skip) {
      // keys and values of every row; queries of the rows kept (their own rounding of the input)
      this.lin(kb, s.xb, L.wk, nTok);
      this.lin(vb, s.xb, L.wv, nTok, undefined, true);
      this.lin(s.q, s.xb.subarray(skip * dim), L.wq, nTok - skip);
    } else if (!this.linRuns(this.decodeRuns[l]?.qkv, [s.q, kb, vb], s.xb, nTok)) {
      this.lin(s.q, s.xb, L.wq, nTok);
      this.lin(kb, s.xb, L.wk, nTok, undefined, true);
      this.lin(vb, s.xb, L.wv, nTok, undefined, true);
    }
    // the queries: qN rows from position qPos (all rows unless skip)
    const qN = nTok - skip;
    const qPos = pos + skip;
    addBias(s.q, L.bq, qN);
    addBias(kb, L.bk, nTok);
    addBias(vb, L.bv, nTok);
    if (L.qNorm) rmsnorm(s.q, s.q, L.qNorm, qN * nHeads, headDim, c.normEps);
    if (L.kNorm) rmsnorm(kb, kb, L.kNorm, nTok * nKvHeads, headDim, c.normEps);
    const swa = c.swaLayers?.[l] === true;
    const freq = swa ? s.ropeFreqSwa : s.ropeFreq;
    this.hooks.kvInput?.(l, pos, nTok, s.k, s.v);
    const preRope = this.kv.preRopeKeys === true;
    // a store that keeps keys before RoPE (KVQuant) takes them here and applies RoPE when it reads them
    if (preRope) this.kv.append!(this.kvSlot[l], pos, nTok, s.k, s.v);
    const oneTable = nTok === 1 && this.engine && kernelsEnabled() ? this.ropeTableOf(freq) : null;
    if (oneTable && pos < oneTable.positions) {
      // one token with the kernels: the table's row of its position (ropeAngles' values) by the kernel's ropeRows
      // (the same bits as rotatePair below, without a JavaScript loop over every pair and head)
      this.ropeRows(oneTable, s.q, 1, nHeads, pos);
      if (!preRope) this.ropeRows(oneTable, s.k, 1, nKvHeads, pos);
    } else if (nTok === 1) {
      // one token: the cos and sin of its position once for every layer's q and k (as rope computes them)
      const r = this.ropeOne;
      if (r.freq !== freq || r.pos !== pos) {
        ropeAngles(freq, r.cos.length, c.ropeMscale ?? 1, pos, r.cos, r.sin, 0);
        r.freq = freq;
        r.pos = pos;
      }
      for (let i = 0; i < r.cos.length; i++) rotatePair(c, s.q, 0, nHeads, i, r.cos[i], r.sin[i]);
      if (!preRope) for (let i = 0; i < r.cos.length; i++) rotatePair(c, s.k, 0, nKvHeads, i, r.cos[i], r.sin[i]);
    } else {
      // a batch: cos and sin from a table of every position (once per frequency table) when it is small
      const table = this.ropeTableOf(freq);
      if (table && pos + nTok <= table.positions) {
        this.ropeRows(table, s.q, qN, nHeads, qPos);
        if (!preRope) this.ropeRows(table, kb, nTok, nKvHeads, pos);
      } else {
        rope(c, freq, s.q, qN, nHeads, qPos);
        if (!preRope) rope(c, freq, kb, nTok, nKvHeads, pos);
      }
    }
    const scale = c.attnScale ?? 1 / Math.sqrt(headDim);
    const window = swa ? c.slidingWindow! : 0;
    const cap = c.attnSoftcap ?? 0;
    if (slot < 0) {
      // a sliding-window layer in its ring: position p lives in row p mod R (R >= window + batch - 1)
      const R = this.swaCache!.positions;
      const o = (-1 - slot) * R * kvDim;
      const keys = this.ringK.subarray(o, o + R * kvDim);
      const values = this.ringV.subarray(o, o + R * kvDim);
      for (let t = 0; t < nTok; t++) {
        const r = ((pos + t) % R) * kvDim;
        keys.set(s.k.subarray(t * kvDim, (t + 1) * kvDim), r);
        values.set(s.v.subarray(t * kvDim, (t + 1) * kvDim), r);
      }
      attentionWindowed(s.q, keys, values, qN, qPos, nHeads, nKvHeads, headDim, scale, window, cap, att, s.scores, R);
      return;
    }
    if (preRope || direct) {
      // (appended before RoPE, or written in place)
    } else if (this.kv.append) this.kv.append(slot, pos, nTok, s.k, s.v);
    else for (let t = 0; t < nTok; t++) this.kv.store(slot, pos + t, s.k.subarray(t * kvDim, (t + 1) * kvDim), s.v.subarray(t * kvDim, (t + 1) * kvDim));
    if (this.kv.attention && window === 0 && cap === 0) {
      this.kv.attention(slot, s.q, qN, qPos, { nHeads, nKvHeads, headDim, scale }, att);
      return;
    }
    if (window > 0 || cap > 0) {
      const keys = this.kv.keys(slot, pos + nTok);
      const values = this.kv.values(slot, pos + nTok);
      attentionWindowed(s.q, keys, values, qN, qPos, nHeads, nKvHeads, headDim, scale, window, cap, att, s.scores);
      return;
    }
    // causal attention (WebAssembly kernel when the cache lives in its memory)
    if (kkv.engine && kernelsEnabled()) {
      // one token: attentionOne (the same job without attention()'s general set-up), else attention()
      const kAt = kkv.keysAt!(slot);
      const vAt = kkv.valuesAt!(slot);
      if (!(qN === 1 && kkv.engine.attentionOne(s.q, qPos, nHeads, nKvHeads, headDim, kAt, vAt, kvDim, scale, att))) kkv.engine.attention(s.q, qN, qPos, nHeads, nKvHeads, headDim, kAt, vAt, kvDim, scale, att);
    } else this.attention(slot, qN, qPos, scale, att);
  }

  /** rope()'s cos and sin of every position of the cache for one frequency table (the same f64 values), null past ROPE_TABLE_MAX entries */
  private readonly ropeTables = new Map<Float64Array, RopeTable>();
  private ropeTableOf(freq: Float64Array): RopeTable | null {
    const positions = this.kv.capacity;
    if (positions * (this.config.ropeDim / 2) > ROPE_TABLE_MAX) return null;
    let t = this.ropeTables.get(freq);
    if (!t) this.ropeTables.set(freq, (t = ropeTable(this.config, freq, positions)));
    return t;
  }

  /**
   * gate(x') * up(x') through the family's activation, x' = ffnNorm(x): s.x -> hb (the input of Wdown; s.hb
   * unless given). With `down` (the forward's FFN): SwiGLU and down's activation rounding in one pass when
   * the integer path takes it (MatmulEngine.siluMulRound; lastIntInput = hb for the lin that follows)
   */
  private ffnBlock(l: number, nTok: number, x: Float32Array = this.s.x, hb: Float32Array = this.s.hb, down?: LinearWeight): void {
    const c = this.config;
    const s = this.s;
    const L = this.weights.layers[l];
    const h = c.hiddenDim;
    this.norm(s.xb, x, L.ffnNorm, nTok, c.dim);
    addBias(s.xb, L.ffnNormBias, nTok);
    if (L.gateUp) {
      // Phi-3: one matmul, gate columns then up columns of each row
      this.lin(s.gateUp, s.xb, L.gateUp, nTok);
      for (let t = 0; t < nTok; t++) {
        hb.set(s.gateUp.subarray(2 * t * h, (2 * t + 1) * h), t * h);
        s.hb2.set(s.gateUp.subarray((2 * t + 1) * h, (2 * t + 2) * h), t * h);
      }
    } else {
      if (!this.linRuns(this.decodeRuns[l]?.gateUp, [hb, s.hb2], s.xb, nTok)) {
        this.lin(hb, s.xb, L.gate!, nTok);
        this.lin(s.hb2, s.xb, L.up!, nTok, undefined, true);
      }
      addBias(hb, L.bGate, nTok);
      addBias(s.hb2, L.bUp, nTok);
    }
    const kw = down?.kernel;
    if (kw && this.activations === 'ggml' && c.activation !== 'gelu' && this.engine && kernelsEnabled() && !this.hooks.linear && !this.hooks.linearInput && kw.engine === this.engine && this.engine.siluMulRound(hb, s.hb2, nTok, kw)) {
      this.lastIntInput = hb;
      return;
    }
    this.activate(hb, s.hb2, nTok * h);
  }

  /** gate = act(gate) * up over n values */
  private activate(gate: Float32Array, up: Float32Array, n: number): void {
    if (this.config.activation === 'gelu') gegluGgml(gate, up, n);
    else if (this.engine && kernelsEnabled()) this.engine.siluMul(gate, up, n);
    else {
      for (let i = 0; i < n; i++) {
        const g = gate[i];
        gate[i] = (g / (1 + Math.exp(-g))) * up[i];
      }
    }
  }

  /**
   * Mixture of experts (Mixtral, Qwen3-MoE, as llama.cpp's build_moe_ffn with softmax gating): router
   * probabilities p = softmax(Wrouter x'), the top-k experts by p, their weights p_e / sum(top-k p)
   * (the sum clamped below at 2^-14); out = sum_e w_e down_e(silu(gate_e x') * up_e x'). Each expert
   * runs on the rows routed to it (so hooks see each expert's own inputs): s.x -> s.xb2.
   */
  private moeBlock(l: number, nTok: number): void {
    const c = this.config;
    const s = this.s;
    const L = this.weights.layers[l];
    const nExp = c.nExperts!;
    const k = c.nExpertsUsed!;
    const eh = c.expertHiddenDim!;
    const dim = c.dim;
    rmsnorm(s.xb, s.x, L.ffnNorm, nTok, dim, c.normEps);
    this.lin(s.router, s.xb, L.router!, nTok);
    // per expert: the token rows routed to it and their weights
    const rows: number[][] = Array.from({ length: nExp }, () => []);
    const weights: number[][] = Array.from({ length: nExp }, () => []);
    const order = new Int32Array(nExp);
    const p = new Float64Array(nExp);
    for (let t = 0; t < nTok; t++) {
      const logits = s.router.subarray(t * nExp, (t + 1) * nExp);
      let max = -Infinity;
      for (let e = 0; e < nExp; e++) max = Math.max(max, logits[e]);
      let sum = 0;
      for (let e = 0; e < nExp; e++) sum += (p[e] = Math.exp(logits[e] - max));
      for (let e = 0; e < nExp; e++) {
        p[e] = Math.fround(p[e] / sum);
        order[e] = e;
      }
      order.sort((a, b) => p[b] - p[a] || a - b);
      let wsum = 0;
      for (let j = 0; j < k; j++) wsum += p[order[j]];
      wsum = c.expertWeightsNorm === false ? 1 : Math.max(wsum, 6.103515625e-5);
      for (let j = 0; j < k; j++) {
        rows[order[j]].push(t);
        weights[order[j]].push(p[order[j]] / wsum);
      }
    }
    s.xb2.fill(0, 0, nTok * dim);
    for (let e = 0; e < nExp; e++) {
      const n = rows[e].length;
      if (n === 0) continue;
      const E = L.experts![e];
      for (let r = 0; r < n; r++) s.expertIn.set(s.xb.subarray(rows[e][r] * dim, (rows[e][r] + 1) * dim), r * dim);
      this.lin(s.expertGate, s.expertIn, E.gate, n, e);
      this.lin(s.expertUp, s.expertIn, E.up, n, e);
      this.activate(s.expertGate, s.expertUp, n * eh);
      this.lin(s.expertOut, s.expertGate, E.down, n, e);
      for (let r = 0; r < n; r++) {
        const w = weights[e][r];
        const o = rows[e][r] * dim;
        for (let i = 0; i < dim; i++) s.xb2[o + i] += w * s.expertOut[r * dim + i];
      }
    }
  }

  /** causal attention of KV slot l in TypeScript: token t (position pos + t) sees positions 0 .. pos + t */
  private attention(l: number, nTok: number, pos: number, scale: number, att = this.s.att): void {
    const { headDim, nHeads, nKvHeads } = this.config;
    const keys = this.kv.keys(l, pos + nTok);
    const values = this.kv.values(l, pos + nTok);
    attentionRef(this.s.q, keys, values, nTok, pos, nHeads, nKvHeads, headDim, scale, att, this.s.scores);
  }

  /** logits of tokens [from, from + count) of the last batch into out (count x vocab) */
  private logits(out: Float32Array, from: number, count: number): void {
    const c = this.config;
    const s = this.s;
    const x = s.x.subarray(from * c.dim, (from + count) * c.dim);
    rmsnorm(s.xb, x, this.weights.outputNorm, count, c.dim, c.normEps);
    this.lin(out, s.xb, this.weights.output, count);
    checkFinite(out, count * c.vocabSize, c.vocabSize, -1, 'the logits (output.weight)', this.engine && kernelsEnabled() ? this.engine : null);
    if (c.finalSoftcap !== undefined) softcap(out, count * c.vocabSize, c.finalSoftcap);
  }
}

/**
 * The one place a non-finite activation becomes an error: x[0, n) must be finite (rows of `width`
 * values, the first at token position `pos`; -1: positions unknown). A sum is finite exactly when every
 * term is (f32 values summed in f64 cannot overflow), so the common case is one pass of additions;
 * when x lives in `engine`'s memory the kernel checks it (MatmulEngine.allFinite: the logits, ~30 µs a
 * token in TypeScript).
 */
export function checkFinite(x: Float32Array, n: number, width: number, pos: number, where: string, engine: MatmulEngine | null = null): void {
  if (engine?.allFinite(x, n) === true) return;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += x[i];
  if (Number.isFinite(sum)) return;
  let i = 0;
  while (i < n && Number.isFinite(x[i])) i++;
  const row = Math.floor(i / width);
  fail(`non-finite value (${x[i]}) in ${where}${pos >= 0 ? ` at token position ${pos + row}` : ` (row ${row})`}: the model overflows or its weights hold NaN/inf`);
}
