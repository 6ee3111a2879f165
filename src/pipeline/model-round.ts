/**
 * AutoRound end to end (--autoround-e2e-iters): after the layer-by-layer stages, the rounding of every
 * learned tensor of the whole model at once, by signed gradient descent on the judge's own measure, the
 * KL divergence of the quantized model's next-token distributions from the float model's on the
 * calibration windows:
 *
 *   L = mean over tokens KL(p_f || p_q),   dL/dz_q = (p_q - p_f) / tokens   (z_q: the quantized logits)
 *
 * backpropagated through the whole quantized model on the training engine (src/train/llama-grad.ts) to
 * every learned tensor's values Q, then straight-through to its rounding offsets as in the block stage
 * (block-round.ts): each element keeps its two levels around the start's (the start's level and its
 * neighbour towards the float weight), v -= lr_i sign(dL/dQ), q = hi if t + v >= 0.5 else lo. The grids
 * (the start's scales) stay, so every tensor keeps exact codec bytes (writeChoices checks each block).
 * The per-layer stages see one layer's output error; this one sees the errors of all the layers, the
 * embedding and the head together, measured where the judge measures them. The result is the best of
 * the start, the checkpoints (every `evalEvery` steps) and the last iterate on EVAL_WINDOWS windows.
 */
import { fail } from '../errors.js';
import { logSumExp } from '../eval/metrics.js';
import { writeChoices } from '../algos/autoround.js';
import type { BlockCodec } from '../algos/block-codec.js';
import type { ModelConfig } from '../model/family.js';
import { rngStream } from '../rng.js';
import { referenceBackend, signStepRef, wasmBackend, type Backend, type Vec } from '../train/gemm.js';
import { paramLayout, TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';
import { blockObjectiveRefusal, evalWindows, minibatchWindows, roundingStart } from './block-round.js';

/** One tensor to learn: its GGUF name, codec, the float weight and its start (bytes and their exact values). */
export interface ModelTensor {
  readonly name: string;
  readonly codec: BlockCodec;
  readonly w: Float32Array;
  readonly start: { bytes: Uint8Array; q: Float32Array };
}

export interface ModelRoundOptions {
  iters: number;
  /** first step, decayed linearly to 0 (0 = 0.2 / iters: an offset moves at most 0.1 in all) */
  lr: number;
  /** calibration windows per step */
  batch: number;
  seed: number;
  /** every this many steps the iterate is judged on the evaluation windows and the best kept (0 = a tenth of the steps) */
  evalEvery?: number;
  /**
   * > 0: greedy flips instead of signed-gradient steps: each step flips the elements (at most this fraction
   * of all learned elements) whose flip the minibatch gradient predicts to lower L most (g (q_other - q) < 0,
   * most negative first), and keeps them only when the loss on the evaluation windows falls (else they are
   * undone and the fraction halved)
   */
  flips?: number;
  threads?: number;
}

export interface ModelRoundResult {
  /** per learned tensor: its bytes and their exact values */
  readonly tensors: Map<string, { bytes: Uint8Array; q: Float32Array }>;
  /** mean KL per token on the evaluation windows at the start and at the end */
  readonly lossStart: number;
  readonly loss: number;
  readonly pick: 'start' | 'last' | 'best';
  /** the evaluation loss at each checkpoint (after step evalEvery, 2 evalEvery, ...) */
  readonly trace: number[];
  readonly seconds: number;
}

/** Why the model cannot be learned end to end (the training engine runs plain LLaMA), or undefined. */
export function modelRoundRefusal(config: ModelConfig, names: readonly string[]): string | undefined {
  for (let l = 0; l < config.nLayers; l++) {
    const why = blockObjectiveRefusal(config, names, l);
    if (why) return why;
  }
  return undefined;
}

/**
 * KL(p_f || p_q) summed over the rows of zq (ctx x V logits) against the float model's log-probabilities
 * lf (ctx x V); with `dz`, dz = (p_q - p_f) * scale per row (the gradient of the sum times scale).
 */
export function klRows(zq: Vec, lf: Float32Array, ctx: number, V: number, dz?: Vec, scale = 1): number {
  let kl = 0;
  for (let t = 0; t < ctx; t++) {
    const r = t * V;
    const lse = logSumExp(zq, r, V);
    for (let i = 0; i < V; i++) {
      const lq = zq[r + i] - lse;
      const pf = Math.exp(lf[r + i]);
      kl += pf * (lf[r + i] - lq);
      if (dz) dz[r + i] = (Math.exp(lq) - pf) * scale;
    }
  }
  return kl;
}

/** log-softmax of each row of z (ctx x V) into out */
function logSoftmax(out: Float32Array, z: Vec, ctx: number, V: number): void {
  for (let t = 0; t < ctx; t++) {
    const r = t * V;
    const lse = logSumExp(z, r, V);
    for (let i = 0; i < V; i++) out[r + i] = z[r + i] - lse;
  }
}

/**
 * Learn the rounding of `learned` on the whole model's KL divergence from the float model. `float(name)`:
 * every tensor of the float model (GGUF names); `current(name)`: its value in the quantized model (the
 * tensors not learned keep theirs: norms, tensors of other algorithms).
 */
export function refineModel(config: ModelConfig, float: (name: string) => Float32Array | undefined, current: (name: string) => Float32Array | undefined, learned: readonly ModelTensor[], windows: readonly Int32Array[], ctx: number, o: ModelRoundOptions): ModelRoundResult {
  const t0 = performance.now();
  if (!(Number.isInteger(o.iters) && o.iters >= 0)) fail(`AutoRound (end to end): steps must be a whole number >= 0, got ${o.iters}`);
  if (!(Number.isInteger(o.batch) && o.batch >= 1)) fail(`AutoRound (end to end): the minibatch must be at least one window, got ${o.batch}`);
  if (!windows.length || windows.some((w) => w.length !== ctx)) fail('AutoRound (end to end): calibration windows must be ctx tokens each');
  const nSeq = windows.length;
  const batch = Math.min(o.batch, nSeq);
  const lr = o.lr || (0.2 / Math.max(1, o.iters));
  const evalEvery = o.evalEvery || Math.max(1, Math.ceil(o.iters / 10));
  const tied = float('output.weight') === undefined;
  const tc: TrainConfig = { ...config, seqLen: ctx, tiedOutput: tied, nExperts: undefined };
  const mo = { batch: 1, ctx };
  const names = new Set(learned.map((t) => t.name));
  if (names.size !== learned.length) fail('AutoRound (end to end): a tensor is listed twice');
  // the learned tensors' values and step state (levels, offsets, choices) in the backend's memory: its signStep kernel runs there
  const learnedFloats = learned.reduce((a, t) => a + 5 * t.w.length + Math.ceil(t.w.length / 4) + 64, 0);
  const otherFloats = paramLayout(tc).tensors.reduce((a, t) => a + (names.has(t.name) ? 0 : t.size + 16), 0);
  const be: Backend = wasmBackend(trainModelFloats(tc, mo) + learnedFloats + otherFloats, o.threads ?? 1) ?? referenceBackend('f32');
  try {
    const m = new TrainModel(tc, be, mo);
    for (const t of learned) if (!m.byName.has(t.name) || m.byName.get(t.name)!.size !== t.w.length) fail(`AutoRound (end to end): the model has no ${t.name} of ${t.w.length} values`);
    // params: the float model; overrides: every tensor whose quantized value differs from it
    const overrides = new Map<string, Vec>();
    for (const p of m.tensors) {
      const f = float(p.name);
      if (!f || f.length !== p.size) fail(`AutoRound (end to end): the float model has no ${p.name} of ${p.size} values`);
      m.view(p.name).set(f);
      if (names.has(p.name)) continue;
      const q = current(p.name);
      if (!q || q.length !== p.size) fail(`AutoRound (end to end): the quantized model has no ${p.name} of ${p.size} values`);
      let same = true;
      for (let i = 0; i < q.length && same; i++) same = Object.is(q[i], f[i]);
      if (!same) {
        const v = be.alloc(p.size);
        v.set(q);
        overrides.set(p.name, v);
      }
    }
    const state = learned.map((spec) => {
      const N = spec.w.length;
      const c = spec.codec;
      if (N % c.blockSize !== 0 || spec.start.q.length !== N || spec.start.bytes.length !== (N / c.blockSize) * c.blockBytes) fail(`AutoRound (end to end): ${spec.name}'s start has the wrong size`);
      const r = roundingStart(c, spec.w, spec.start);
      const chF = be.alloc(Math.ceil(N / 4));
      const lo = be.alloc(N), hi = be.alloc(N), t = be.alloc(N), v = be.alloc(N), values = be.alloc(N);
      lo.set(r.lv.lo), hi.set(r.lv.hi), t.set(r.lv.t), v.set(r.v), values.set(spec.start.q);
      const ch = be.f64 ? Uint8Array.from(r.ch) : new Uint8Array(chF.buffer, chF.byteOffset, N);
      ch.set(r.ch);
      overrides.set(spec.name, values);
      return { spec, r, lo, hi, t, v, ch, values, startCh: Uint8Array.from(r.ch), bestCh: Uint8Array.from(r.ch) };
    });
    const V = config.vocabSize;
    // the float model's log-probabilities per window (computed once, kept when they fit in 256 MiB)
    const keep = nSeq * ctx * V <= 2 ** 26;
    const cache = new Map<number, Float32Array>();
    const floatLogProbs = (w: number): Float32Array => {
      const c = cache.get(w);
      if (c) return c;
      m.weightOverride.clear();
      m.forward(windows[w]);
      const lf = new Float32Array(ctx * V);
      logSoftmax(lf, m.logits(), ctx, V);
      if (keep) cache.set(w, lf);
      return lf;
    };
    const quantized = () => {
      m.weightOverride.clear();
      for (const [n, v] of overrides) m.weightOverride.set(n, v);
    };
    /** the summed KL of window w; with `scale`, its gradient times scale added to grads */
    const windowKl = (w: number, scale = 0): number => {
      const lf = floatLogProbs(w);
      quantized();
      m.forward(windows[w]);
      if (!scale) return klRows(m.logits(), lf, ctx, V);
      const kl = klRows(m.logits(), lf, ctx, V, m.logitGrads(), scale);
      m.backward();
      return kl;
    };
    const evalSet = evalWindows(nSeq);
    const evalLoss = () => evalSet.reduce((a, w) => a + windowKl(w), 0) / (evalSet.length * ctx);
    const setValues = (from: 'ch' | 'startCh' | 'bestCh') => {
      for (const s of state) {
        const c = s[from];
        for (let e = 0; e < c.length; e++) s.values[e] = c[e] ? s.hi[e] : s.lo[e];
      }
    };
    /** the result with the choices `final`: exact codec bytes and their values */
    const finish = (final: 'ch' | 'startCh' | 'bestCh', pick: ModelRoundResult['pick'], loss: number): ModelRoundResult => {
      const out = new Map<string, { bytes: Uint8Array; q: Float32Array }>();
      for (const s of state) {
        const c = s.spec.codec;
        const bytes = Uint8Array.from(s.spec.start.bytes);
        const lv = { ...s.r.lv, lo: Float32Array.from(s.lo), hi: Float32Array.from(s.hi) };
        const q = writeChoices(c, s.r.grids, bytes, lv, Uint8Array.from(s[final]), s.spec.w.length / c.blockSize);
        out.set(s.spec.name, { bytes, q });
      }
      return { tensors: out, lossStart, loss, pick, trace, seconds: (performance.now() - t0) / 1000 };
    };
    const lossStart = evalLoss();
    let bestEval = Infinity;
    const trace: number[] = [];
    const rand = rngStream('blockRoundOrder', o.seed);
    const order = Array.from({ length: nSeq }, (_, i) => i);
    const flips = o.flips ?? 0;
    if (!(flips >= 0 && flips <= 1)) fail(`AutoRound (end to end): the flip fraction must be in [0, 1], got ${flips}`);
    if (flips > 0) {
      const total = state.reduce((a, s) => a + s.v.length, 0);
      let k = Math.max(1, Math.ceil(flips * total));
      let cur = lossStart;
      const gains = new Float32Array(total);
      const picked = new Int32Array(total);
      for (let it = 0; it < o.iters && k >= 1; it++) {
        const mini = minibatchWindows(order, rand, it, batch);
        for (const w of mini) floatLogProbs(w);
        m.zeroGrads();
        for (const w of mini) windowKl(w, 1 / (batch * ctx));
        // predicted change of L by each element's flip, first order
        let at = 0;
        let neg = 0;
        for (const s of state) {
          const g = m.view(s.spec.name, m.grads);
          for (let e = 0; e < s.v.length; e++, at++) {
            const d = s.ch[e] ? s.lo[e] - s.hi[e] : s.hi[e] - s.lo[e];
            const gain = g[e] * d;
            gains[at] = gain;
            if (gain < 0) neg++;
          }
        }
        if (!neg) break;
        const negs = new Float32Array(neg);
        for (let i = 0, j = 0; i < total; i++) if (gains[i] < 0) negs[j++] = gains[i];
        negs.sort();
        const thr = negs[Math.min(k, neg) - 1];
        let nPicked = 0;
        at = 0;
        const flip = (s: (typeof state)[number], e: number) => {
          const c = s.ch[e] ? 0 : 1;
          s.ch[e] = c;
          s.values[e] = c ? s.hi[e] : s.lo[e];
        };
        for (const s of state)
          for (let e = 0; e < s.v.length; e++, at++)
            if (gains[at] <= thr && gains[at] < 0 && nPicked < k) {
              picked[nPicked++] = at;
              flip(s, e);
            }
        const l = evalLoss();
        trace.push(l);
        if (l < cur) cur = l;
        else {
          // undo: the picked indices in order, walked against the tensors' offsets
          let si = 0;
          let base = 0;
          for (let i = 0; i < nPicked; i++) {
            while (picked[i] >= base + state[si].v.length) base += state[si++].v.length;
            flip(state[si], picked[i] - base);
          }
          k = Math.floor(k / 2);
        }
      }
      const pick: ModelRoundResult['pick'] = cur < lossStart ? 'last' : 'start';
      if (pick === 'start') setValues('startCh');
      return finish(pick === 'start' ? 'startCh' : 'ch', pick, pick === 'start' ? lossStart : cur);
    }
    for (let it = 0; it < o.iters; it++) {
      const step = lr * (1 - it / o.iters);
      const mini = minibatchWindows(order, rand, it, batch);
      for (const w of mini) floatLogProbs(w); // before zeroGrads: the float pass leaves no gradient, but keep the order plain
      m.zeroGrads();
      for (const w of mini) windowKl(w, 1 / (batch * ctx));
      for (const s of state) {
        const g = m.view(s.spec.name, m.grads);
        if (be.signStep) be.signStep(g, s.lo, s.hi, s.t, s.v, s.ch, s.values, step);
        else signStepRef(g, s.lo, s.hi, s.t, s.v, s.ch, s.values, step);
      }
      if ((it + 1) % evalEvery === 0 && it + 1 < o.iters) {
        const l = evalLoss();
        trace.push(l);
        if (l < bestEval) {
          bestEval = l;
          for (const s of state) s.bestCh.set(s.ch);
        }
      }
    }
    let pick: ModelRoundResult['pick'] = 'last';
    let loss = o.iters > 0 ? evalLoss() : lossStart;
    if (o.iters > 0) trace.push(loss);
    if (bestEval < loss) (loss = bestEval), (pick = 'best');
    if (!(loss < lossStart)) (loss = lossStart), (pick = 'start');
    const final = pick === 'start' ? 'startCh' : pick === 'best' ? 'bestCh' : 'ch';
    setValues(final);
    return finish(final, pick, loss);
  } finally {
    be.close?.();
  }
}
