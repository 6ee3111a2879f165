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
import { diagonalCost, ggmlQuantizationError } from '../alloc/cost.js';
import { MatmulEngine } from '../kernels/matmul.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import { toFloat32 } from '../io/tensor-data.js';
import { layerLinears, type Llama } from '../model/llama.js';
import { linear, makeLinearWeight, type LinearWeight } from '../model/matmul.js';
import { ggmlCodec, ggmlRowBytes, ggmlTypeByName } from '../quant/ggml/index.js';
import { readFloats } from './quantize.js';
import { InputStats } from './calibrate.js';

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
  readonly calibration: { readonly tokens: number; readonly ctx: number; readonly seed: number };
  readonly tensors: readonly TensorSensitivity[];
  readonly seconds: number;
}

export interface SensitivityOptions {
  /** the original model, loaded with f32 (or its own) weights; its hooks are borrowed during the run */
  model: Llama;
  /** the file it was loaded from (weights are read as f32 from it) */
  file: ModelFile;
  /** calibration windows: token sequences starting with BOS */
  windows: readonly Int32Array[];
  /** windows used for KL divergence (default: the first 4 of `windows`) */
  kldWindows?: readonly Int32Array[];
  /** which tensors (default: every 2-D weight the model multiplies with) */
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
  /** probe type for the output factor (default Q3_K where the row allows, else the first candidate) */
  probeType?: string;
  seed?: number;
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
 * versions), everything else as loaded: linear layers through the runtime's `linear` hook, the token
 * embedding (any stored type) by swapping in an F32 table and back.
 */
export class WeightSwap {
  private readonly linears: Map<string, LinearWeight>;
  constructor(readonly model: Llama) {
    this.linears = linearNames(model);
  }
  run<T>(replacements: ReadonlyMap<string, Float32Array>, fn: () => T): T {
    const model = this.model;
    const subst = new Map<string, LinearWeight>();
    const f32 = ggmlTypeByName('F32')!;
    let restoreEmbedding: (() => void) | undefined;
    for (const [name, values] of replacements) {
      const lw = this.linears.get(name);
      if (name === 'token_embd.weight') {
        // the lookup dequantizes one row per token in the stored type: swap in an F32 table and back
        const weights = model.weights;
        const saved = weights.tokenEmbedding;
        const dim = model.config.dim;
        if (values.length !== model.config.vocabSize * dim) fail(`token_embd.weight replacement has ${values.length} values, the model needs ${model.config.vocabSize * dim}`);
        weights.tokenEmbedding = { type: f32, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength), rowBytes: dim * 4 };
        restoreEmbedding = () => {
          weights.tokenEmbedding = saved;
        };
      } else if (!lw) fail(`the model multiplies with no tensor named ${name}`);
      if (lw) subst.set(name, makeLinearWeight(name, f32, lw.rows, lw.cols, new Uint8Array(values.buffer, values.byteOffset, values.byteLength), false, null));
    }
    const prev = model.hooks;
    model.hooks = {
      ...prev,
      linear: (out, x, w, nTok) => {
        const s = subst.get(w.name);
        if (s) linear(out, x, s, nTok);
        else if (prev.linear) prev.linear(out, x, w, nTok);
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
  rows: number;
  cols: number;
  tensor: ModelTensor;
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

/** The linear layers the runtime multiplies with, by tensor name, and the token embedding. */
function linearNames(model: Llama): Map<string, LinearWeight> {
  const out = new Map<string, LinearWeight>();
  for (const L of model.weights.layers) {
    if (L.router) fail('sensitivity measurement does not cover mixture-of-experts layers yet');
    for (const w of layerLinears(L)) out.set(w.name, w);
  }
  out.set(model.weights.output.name, model.weights.output);
  return out;
}

export async function measureSensitivity(o: SensitivityOptions): Promise<SensitivityDb> {
  const t0 = performance.now();
  const model = o.model;
  const estimator = o.estimator ?? 'hessian';
  const outputFactor = o.outputFactor ?? 'kld';
  const weighted = o.weighted ?? true;
  const types = o.types ?? DEFAULT_SENSITIVITY_TYPES;
  if (o.windows.length === 0) fail('sensitivity needs calibration text (at least one window)');
  const say = o.onProgress ?? (() => {});
  const linears = linearNames(model);
  const names = o.tensors ?? [...linears.keys(), ...(model.weights.output.name === 'token_embd.weight' ? [] : ['token_embd.weight'])];
  // shapes only: each tensor's values are read when its costs are measured (the rows used), then dropped
  const shapes = new Map<string, TensorShape>();
  for (const name of names) {
    const t = o.file.tensor(name);
    const ne = t.ne ? [...t.ne] : [...t.shape].reverse();
    if (ne.length !== 2) fail(`${name} is not a matrix`);
    shapes.set(name, { name, rows: ne[1], cols: ne[0], tensor: t });
  }

  // ---- one pass: statistics per distinct linear input, token counts, base log-probabilities -------
  const engine = MatmulEngine.get();
  const maxTok = Math.max(...o.windows.map((w) => w.length));
  const accs = new Map<string, InputStats>(); // by the first linear of a shared input
  const totalTokens = o.windows.reduce((a, w) => a + w.length, 0);
  const shareOf = new Map<string, string>(); // linear name -> accumulator key
  let last: { buffer: ArrayBufferLike; offset: number; nTok: number; key: string } | undefined;
  const previous = model.hooks;
  const tokenCounts = new Float32Array(model.config.vocabSize);
  model.hooks = {
    ...previous,
    linearInput: (name, x, nTok, k) => {
      previous.linearInput?.(name, x, nTok, k);
      if (!shapes.has(name) || estimator !== 'hessian') return;
      const same = last && last.buffer === x.buffer && last.offset === x.byteOffset && last.nTok === nTok && accs.get(last.key)!.k === k;
      const key = same ? last!.key : shareOf.get(name) ?? name;
      if (!shareOf.has(name)) shareOf.set(name, key);
      last = { buffer: x.buffer, offset: x.byteOffset, nTok, key };
      if (same) return;
      let acc = accs.get(key);
      if (!acc) accs.set(key, (acc = new InputStats(k, maxTok, engine, false, o.statForm === 'hessian' ? undefined : { tokens: totalTokens, always: o.statForm === 'inputs' })));
      acc.add(x, nTok);
    },
  };
  const kldWindows = o.kldWindows ?? o.windows.slice(0, 4);
  const needsKld = estimator === 'kld' || outputFactor === 'kld';
  const base: Float32Array[] = [];
  try {
    if (estimator === 'hessian') {
      o.windows.forEach((w, i) => {
        for (const id of w) tokenCounts[id]++;
        model.forward(w, 0, 0); // every position through output.weight
        last = undefined;
        say('collecting input statistics', i + 1, o.windows.length);
      });
    }
  } finally {
    model.hooks = previous;
  }
  if (needsKld)
    for (const w of kldWindows) {
      const lp = Float32Array.from(model.forward(w, 0, 0));
      logSoftmaxRows(lp, model.config.vocabSize);
      base.push(lp);
    }
  for (const acc of accs.values()) acc.finish();

  // ---- substitution: one tensor's weights replaced, everything else original ----------------------
  const swap = new WeightSwap(model);
  const kldOf = (name: string, w: Float32Array, delta: Float32Array): number => {
    const q = new Float32Array(delta.length);
    for (let i = 0; i < q.length; i++) q[i] = w[i] + delta[i];
    return swap.run(new Map([[name, q]]), () => meanKld(model, kldWindows, base));
  };

  // ---- costs, a tensor at a time -------------------------------------------------------------------
  const tensors: TensorSensitivity[] = [];
  let done = 0;
  for (const name of names) {
    const w = shapes.get(name)!;
    const cand = typesForRow(types, w.cols);
    if (cand.length === 0) {
      done++;
      continue;
    }
    const key = shareOf.get(name);
    const h = key ? accs.get(key) : undefined;
    const importance = weighted ? h?.diag() : undefined;
    const out: SensitivityCandidate[] = [];
    if (estimator === 'kld') {
      const data = await readFloats(o.file, w.tensor);
      for (const type of cand) {
        const { delta, bytes } = ggmlQuantizationError(type, data, w.rows, w.cols, importance);
        out.push({ type, bytes, cost: kldOf(name, data, delta) });
      }
      tensors.push({ name, shape: [w.rows, w.cols], candidates: out });
      say(`costs of ${name}`, ++done, names.length);
      continue;
    }
    // hessian costs on a deterministic sample of rows (GGML types quantize rows independently), scaled
    // up to the whole tensor: an unbiased estimate of the sum over rows; only those rows are read
    const m = o.maxRows && o.maxRows < w.rows ? o.maxRows : w.rows;
    const rowIds = Int32Array.from({ length: m }, (_, i) => Math.floor((i * w.rows) / m));
    const sample = await readRows(o.file, w, rowIds);
    const scale = w.rows / m;
    const probeType = o.probeType && cand.includes(o.probeType) ? o.probeType : cand.includes('Q3_K') ? 'Q3_K' : cand[0];
    let probeHessian = 0;
    for (const type of cand) {
      const { delta } = ggmlQuantizationError(type, sample, m, w.cols, importance);
      let hc: number;
      if (name === 'token_embd.weight') {
        // one-hot inputs: H = diag(token counts) over the rows (the vocabulary); plus the output
        // layer's cost when the classifier is tied to the embedding
        let lookup = 0;
        for (let i = 0; i < m; i++) {
          const count = tokenCounts[rowIds[i]];
          if (count === 0) continue;
          let s = 0;
          for (let j = 0; j < w.cols; j++) s += delta[i * w.cols + j] ** 2;
          lookup += count * s;
        }
        hc = (h ? h.cost(delta, m) : 0) + (2 * lookup) / Math.max(1, totalTokens); // 2/N as finishHessian
      } else if (h) hc = h.cost(delta, m);
      else hc = diagonalCost(delta, m, w.cols, new Float32Array(w.cols).fill(1));
      hc *= scale;
      out.push({ type, bytes: tensorBytes(type, w.rows, w.cols), cost: hc, hessian: hc });
      if (type === probeType) probeHessian = hc;
    }
    let factor: number | undefined;
    if (outputFactor === 'kld' && probeHessian > 0) {
      const data = m === w.rows ? sample : await readFloats(o.file, w.tensor);
      factor = kldOf(name, data, ggmlQuantizationError(probeType, data, w.rows, w.cols, importance).delta) / probeHessian;
      for (let i = 0; i < out.length; i++) out[i] = { ...out[i], cost: out[i].hessian! * factor };
    }
    tensors.push({ name, shape: [w.rows, w.cols], candidates: out, ...(factor !== undefined ? { factor } : {}) });
    say(`costs of ${name}`, ++done, names.length);
  }
  return {
    lowbitSensitivity: SENSITIVITY_VERSION,
    modelHash: await modelFingerprint(o.file),
    estimator,
    outputFactor,
    ...(weighted ? {} : { weighted }),
    calibration: { tokens: totalTokens, ctx: o.windows[0].length, seed: o.seed ?? 0 },
    tensors,
    seconds: (performance.now() - t0) / 1000,
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
  importanceOf?: (name: string) => Float32Array | undefined,
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
      const { delta } = ggmlQuantizationError(type, data, ne[1], ne[0], importanceOf?.(name));
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
