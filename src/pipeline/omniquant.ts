/**
 * OmniQuant (Shao et al. 2024) on one plain LLaMA layer: learnable weight clipping (LWC) and learnable
 * equivalent transforms (LET), learned together by gradient descent on the block output error
 * (block-round.ts's objective, the training engine's backward pass of the layer):
 *
 *   L = mean over tokens || block_Q(x_q) - block_F(x_f) ||^2
 *
 * LET: per-channel scales s (s = exp(theta), so they stay positive) between an op and the linears that
 * read it, chosen so the float layer computes exactly what it did:
 *   attn_norm -> q, k, v     norm gain g / s,   columns W diag(s)                      (dim)
 *   ffn_norm  -> gate, up    norm gain g / s,   columns W diag(s)                      (dim)
 *   v -> o                   W_v rows / s,      W_o columns * s (heads sharing a kv head share s)  (kv width)
 *   up -> down               W_up rows / s,     W_down columns * s                     (hidden)
 * OmniQuant's channel shift is not used: LLaMA's RMSNorm and linears have no bias in llama.cpp's graph
 * (OmniQuant itself turns the shift off for LLaMA with weight-only quantization), and the q/k scale is
 * not used (normal RoPE mixes the pairs (2i, 2i+1), so only pair-tied scales would commute with it).
 * Everything folds into the norms and linears: the file is a plain model llama.cpp runs.
 *
 * LWC: per codec block a clip ratio alpha in [alphaMin, 1]: the block's grid is the codec's own grid for
 * the block w' * alpha (K-quants keep choosing their scales), and w' is rounded to its nearest level
 * (elements beyond the shrunk range clip), so the bytes are the codec's exactly.
 *
 * Gradients (straight-through, OmniQuant's): dq/dw' = 1 inside the grid, 0 where clipped; dq/dalpha =
 * (q - w') / alpha inside (the grid's step scales with alpha, LSQ's estimate), q / alpha where clipped.
 * d/dtheta: sum of dL/dw' * w' over the columns a scale multiplies, minus over the rows it divides, minus
 * dL/dg' * g' for a norm. Adam on theta and alpha (OmniQuant uses AdamW), linear decay, seeded minibatches
 * of calibration windows. The start is s = 1, alpha = 1 (round to nearest; starting from the clip ratio
 * of least squared error per block measured 1.51 instead of 1.05 block error on tinyllama256's first
 * layer at Q3_K: clipping the largest weights costs the block output); the result is the best of the start, the last iterate and the best minibatch iterate on the whole calibration set: never worse than the start.
 */
import { fail } from '../errors.js';
import { BlockGrids, setCodes, type BlockCodec } from '../algos/block-codec.js';
import type { ModelConfig } from '../model/family.js';
import { rngStream } from '../rng.js';
import type { Vec } from '../train/gemm.js';
import { BLOCK_TENSORS, type BlockRunner } from './block-round.js';

/** Adam's first step for the log-scales and clip ratios (OmniQuant: 5e-3 for LET, 1e-2 for LWC; it runs 20 epochs, lowbit tens of steps), decayed linearly */
export const OMNI_LR = 0.01;

type TensorName = (typeof BLOCK_TENSORS)[number];
const LINEARS = BLOCK_TENSORS.filter((n) => !n.endsWith('_norm'));

export interface OmniOptions {
  iters: number;
  /** Adam's first step (decayed linearly to 0); 0 = OMNI_LR */
  lr: number;
  /** calibration windows per step */
  batch: number;
  seed: number;
  /** learn the equivalent transforms (LET) */
  let: boolean;
  /** learn the clip ratios (LWC) */
  clip: boolean;
  /** smallest clip ratio (default 0.5) */
  alphaMin?: number;
}

export interface OmniResult {
  /** every tensor of the layer after the transforms are folded (norm gains, float linears) */
  readonly floats: Map<TensorName, Float32Array>;
  /** the quantized linears: bytes and their exact values */
  readonly linears: Map<TensorName, { bytes: Uint8Array; q: Float32Array }>;
  readonly lossStart: number;
  readonly loss: number;
  readonly pick: 'start' | 'last' | 'best';
  /** range of the learned scales and clip ratios (for the report) */
  readonly scaleRange: [number, number];
  readonly alphaMean: number;
  readonly seconds: number;
}

/** how each tensor of the layer is transformed: indices into theta for its columns / rows (-1: none) */
interface Wiring {
  readonly nTheta: number;
  readonly col: Map<TensorName, Int32Array>;
  readonly row: Map<TensorName, Int32Array>;
  /** norms: gain / s */
  readonly norm: Map<TensorName, Int32Array>;
}

/** The LET wiring of a LLaMA layer: theta = [attn (dim) | ffn (dim) | v>o (kv width) | up>down (hidden)]. */
export function letWiring(config: ModelConfig): Wiring {
  const { dim, hiddenDim: hid, nHeads, nKvHeads, headDim } = config;
  const kv = nKvHeads * headDim;
  const attn = 0;
  const ffn = dim;
  const vo = 2 * dim;
  const ud = 2 * dim + kv;
  const range = (n: number, at: number) => Int32Array.from({ length: n }, (_, i) => at + i);
  const group = nHeads / nKvHeads;
  const oCols = Int32Array.from({ length: nHeads * headDim }, (_, c) => vo + Math.floor(Math.floor(c / headDim) / group) * headDim + (c % headDim));
  const col = new Map<TensorName, Int32Array>([
    ['attn_q', range(dim, attn)],
    ['attn_k', range(dim, attn)],
    ['attn_v', range(dim, attn)],
    ['attn_output', oCols],
    ['ffn_gate', range(dim, ffn)],
    ['ffn_up', range(dim, ffn)],
    ['ffn_down', range(hid, ud)],
  ]);
  const row = new Map<TensorName, Int32Array>([
    ['attn_v', range(kv, vo)],
    ['ffn_up', range(hid, ud)],
  ]);
  const norm = new Map<TensorName, Int32Array>([
    ['attn_norm', range(dim, attn)],
    ['ffn_norm', range(dim, ffn)],
  ]);
  return { nTheta: 2 * dim + kv + hid, col, row, norm };
}

/** The layer's tensors with the scales exp(theta) folded in (function-preserving in float). */
export function foldLet(w: Wiring, theta: Float32Array, get: (n: TensorName) => Float32Array, out?: Map<TensorName, Float32Array>): Map<TensorName, Float32Array> {
  const res = out ?? new Map<TensorName, Float32Array>();
  const s = Float32Array.from(theta, Math.exp);
  for (const n of BLOCK_TENSORS) {
    const src = get(n);
    let dst = res.get(n);
    if (!dst) res.set(n, (dst = new Float32Array(src.length)));
    const nIdx = w.norm.get(n);
    if (nIdx) {
      for (let j = 0; j < src.length; j++) dst[j] = Math.fround(src[j] / s[nIdx[j]]);
      continue;
    }
    const cIdx = w.col.get(n);
    const rIdx = w.row.get(n);
    const cols = cIdx ? cIdx.length : 0;
    const rows = src.length / cols;
    for (let r = 0; r < rows; r++) {
      const d = rIdx ? 1 / s[rIdx[r]] : 1;
      for (let j = 0; j < cols; j++) dst[r * cols + j] = Math.fround(src[r * cols + j] * s[cIdx![j]] * d);
    }
  }
  return res;
}

/** one quantized linear's LWC state */
interface Lwc {
  readonly name: TensorName;
  readonly codec: BlockCodec;
  readonly grids: BlockGrids;
  readonly alpha: Float32Array;
  readonly bytes: Uint8Array;
  /** dq/dw' (1 inside the grid, 0 clipped) and dq/dalpha per element */
  readonly dw: Uint8Array;
  readonly da: Float32Array;
}

/**
 * Round w' (rows of the codec's blocks) onto the grids of w' * alpha (one ratio per block): writes the
 * codec's bytes, the values into q, and the straight-through derivatives.
 */
function fakeQuant(s: Lwc, w: Float32Array, q: Vec, shrunk: Float32Array, codes: Uint16Array): void {
  const { codec: c, grids: g, alpha, bytes, dw, da } = s;
  const bs = c.blockSize;
  const nC = g.nCodes;
  for (let b = 0; b < alpha.length; b++) {
    const xo = b * bs;
    const a = alpha[b];
    const at = b * c.blockBytes;
    for (let j = 0; j < bs; j++) shrunk[j] = Math.fround(w[xo + j] * a);
    c.quantize(shrunk, 0, bytes, at);
    g.load(0, bytes, at);
    for (let j = 0; j < bs; j++) {
      const x = w[xo + j];
      const i = g.nearest(0, j, x);
      const v = g.values[i];
      const first = j * nC;
      const last = first + g.count[j] - 1;
      const clipped = (i === last && x > v) || (i === first && x < v);
      q[xo + j] = v;
      codes[j] = g.codes[i];
      dw[xo + j] = clipped ? 0 : 1;
      da[xo + j] = clipped ? v / a : (v - x) / a;
    }
    setCodes(g.layout, bytes, at, codes, bs);
  }
}

/** Adam (no weight decay) on one parameter vector */
class Adam {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private t = 0;
  constructor(n: number) {
    this.m = new Float32Array(n);
    this.v = new Float32Array(n);
  }
  step(p: Float32Array, g: Float32Array, lr: number, lo = -Infinity, hi = Infinity): void {
    this.t++;
    const b1 = 0.9;
    const b2 = 0.999;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i];
      this.m[i] = b1 * this.m[i] + (1 - b1) * gi;
      this.v[i] = b2 * this.v[i] + (1 - b2) * gi * gi;
      const x = p[i] - (lr * (this.m[i] / c1)) / (Math.sqrt(this.v[i] / c2) + 1e-12);
      p[i] = x < lo ? lo : x > hi ? hi : x;
    }
  }
}

/**
 * Learn LET scales and LWC clip ratios of one layer. `get` gives the layer's float tensors (the
 * runner's own loaded tensors are replaced), `codecs` the planned codec of each quantized linear
 * (others stay float), xIn the layer's input in the partly quantized model and target the float
 * layer's output on the float input (nSeq x ctx x dim each).
 */
export function omniquantLayer(runner: BlockRunner, get: (n: TensorName) => Float32Array, codecs: ReadonlyMap<TensorName, BlockCodec>, xIn: Float32Array, target: Float32Array, o: OmniOptions): OmniResult {
  const t0 = performance.now();
  const { ctx, config } = runner;
  const n = ctx * config.dim;
  const nSeq = xIn.length / n;
  if (!Number.isInteger(nSeq) || nSeq < 1 || target.length !== xIn.length) fail('OmniQuant: input and target must be whole windows of the same size');
  if (!(Number.isInteger(o.iters) && o.iters >= 0)) fail(`OmniQuant: iterations must be a whole number >= 0, got ${o.iters}`);
  if (!(Number.isInteger(o.batch) && o.batch >= 1)) fail(`OmniQuant: the minibatch must be at least one window, got ${o.batch}`);
  const lr = o.lr || OMNI_LR;
  const aMin = o.alphaMin ?? 0.5;
  const batch = Math.min(o.batch, nSeq);
  const wiring = letWiring(config);
  const theta = new Float32Array(wiring.nTheta);
  const m = runner.model;
  runner.unlearn();
  runner.load((x) => get(x as TensorName));
  const folded = new Map<TensorName, Float32Array>();
  const lwc: Lwc[] = [];
  let maxBs = 1;
  for (const [name, codec] of codecs) {
    const N = get(name).length;
    if (N % codec.blockSize !== 0) fail(`OmniQuant: ${name} (${N} values) is not whole blocks of ${codec.name}`);
    const nb = N / codec.blockSize;
    maxBs = Math.max(maxBs, codec.blockSize);
    lwc.push({ name, codec, grids: new BlockGrids(codec, 1), alpha: new Float32Array(nb).fill(1), bytes: new Uint8Array(nb * codec.blockBytes), dw: new Uint8Array(N), da: new Float32Array(N) });
  }
  const shrunk = new Float32Array(maxBs);
  const codes = new Uint16Array(maxBs);
  const values = new Map<TensorName, Vec>();
  for (const name of LINEARS) values.set(name, runner.learn(name, get(name)));
  /** the runner's layer = the quantized layer of the current theta and alphas */
  const apply = () => {
    foldLet(wiring, theta, get, folded);
    for (const nm of ['attn_norm', 'ffn_norm'] as const) m.view(`blk.0.${nm}.weight`).set(folded.get(nm)!);
    for (const name of LINEARS) {
      const s = lwc.find((x) => x.name === name);
      const vals = values.get(name)!;
      if (!s) vals.set(folded.get(name)!);
      else fakeQuant(s, folded.get(name)!, vals, shrunk, codes);
    }
  };
  const snapshot = () => ({ theta: Float32Array.from(theta), alpha: lwc.map((s) => Float32Array.from(s.alpha)) });
  const restore = (x: ReturnType<typeof snapshot>) => {
    theta.set(x.theta);
    lwc.forEach((s, i) => s.alpha.set(x.alpha[i]));
    apply();
  };
  apply();
  const start = snapshot();
  const lossStart = runner.loss(xIn, target);
  let best = start;
  let bestMini = Infinity;
  const rand = rngStream('omniquantOrder', o.seed);
  const order = Array.from({ length: nSeq }, (_, i) => i);
  const gTheta = new Float32Array(wiring.nTheta);
  const adamT = new Adam(wiring.nTheta);
  const adamA = lwc.map((s) => new Adam(s.alpha.length));
  const gA = lwc.map((s) => new Float32Array(s.alpha.length));
  for (let it = 0; it < o.iters; it++) {
    const step = lr * (1 - it / o.iters);
    m.zeroGrads();
    const mini = runner.minibatchError(xIn, target, order, rand, it, batch);
    if (mini < bestMini) (bestMini = mini), (best = snapshot());
    // gradients of theta and alpha (straight-through)
    gTheta.fill(0);
    for (const name of LINEARS) {
      const g = m.view(`blk.0.${name}.weight`, m.grads);
      const s = lwc.find((x) => x.name === name);
      const si = lwc.indexOf(s!);
      const wf = folded.get(name)!;
      const cIdx = wiring.col.get(name)!;
      const rIdx = wiring.row.get(name);
      const cols = cIdx.length;
      const ga = s ? gA[si].fill(0) : undefined;
      const bs = s?.codec.blockSize ?? 1;
      for (let e = 0; e < g.length; e++) {
        const ge = g[e];
        if (ge === 0) continue;
        if (s) ga![Math.floor(e / bs)] += ge * s.da[e];
        if (!o.let) continue;
        const gw = s ? (s.dw[e] ? ge : 0) : ge;
        if (gw === 0) continue;
        const x = gw * wf[e];
        const r = Math.floor(e / cols);
        gTheta[cIdx[e - r * cols]] += x;
        if (rIdx) gTheta[rIdx[r]] -= x;
      }
    }
    if (o.let) {
      for (const nm of ['attn_norm', 'ffn_norm'] as const) {
        const g = m.view(`blk.0.${nm}.weight`, m.grads);
        const gn = folded.get(nm)!;
        const idx = wiring.norm.get(nm)!;
        for (let j = 0; j < g.length; j++) gTheta[idx[j]] -= g[j] * gn[j];
      }
      adamT.step(theta, gTheta, step, -3, 3);
    }
    if (o.clip) lwc.forEach((s, i) => adamA[i].step(s.alpha, gA[i], step, aMin, 1));
    apply();
  }
  // the best of: the last iterate, the best minibatch iterate, the start (whole calibration set)
  let pick: OmniResult['pick'] = 'start';
  let loss = lossStart;
  let chosen = start;
  if (o.iters > 0) {
    const last = snapshot();
    const ll = runner.loss(xIn, target);
    if (ll < loss) (loss = ll), (pick = 'last'), (chosen = last);
    restore(best);
    const lb = runner.loss(xIn, target);
    if (lb < loss) (loss = lb), (pick = 'best'), (chosen = best);
  }
  restore(chosen);
  const linears = new Map<TensorName, { bytes: Uint8Array; q: Float32Array }>();
  const back = new Float32Array(maxBs);
  for (const s of lwc) {
    const q = Float32Array.from(values.get(s.name)!);
    const bs = s.codec.blockSize;
    // exact bytes: the codec's own dequantizer gives the values the layer ran with
    for (let b = 0; b < s.alpha.length; b++) {
      s.codec.dequantize(s.bytes, b * s.codec.blockBytes, back, 0);
      for (let j = 0; j < bs; j++) if (back[j] !== q[b * bs + j]) fail(`internal error: OmniQuant's ${s.name} block ${b} does not decode to its values`);
    }
    linears.set(s.name, { bytes: Uint8Array.from(s.bytes), q });
  }
  let sMin = Infinity;
  let sMax = -Infinity;
  for (const t of theta) (sMin = Math.min(sMin, Math.exp(t))), (sMax = Math.max(sMax, Math.exp(t)));
  const nA = lwc.reduce((a, s) => a + s.alpha.length, 0);
  const alphaMean = lwc.reduce((a, s) => a + s.alpha.reduce((x, y) => x + y, 0), 0) / Math.max(1, nA);
  return { floats: new Map([...folded].map(([k, v]) => [k, Float32Array.from(v)])), linears, lossStart, loss, pick, scaleRange: [sMin, sMax], alphaMean, seconds: (performance.now() - t0) / 1000 };
}
