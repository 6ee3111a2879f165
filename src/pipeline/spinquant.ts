/**
 * SpinQuant's learned residual rotation R1 (Liu et al. 2024), `--rotate learned`: starting from the
 * random-sign Hadamard rotation (algos/hadamard.ts), R1 is optimized on calibration windows by Cayley
 * SGD (Li et al. 2020: the update stays exactly orthogonal) on the quantized model's output error, then
 * folded into the weights like the Hadamard rotation (llama.cpp runs the file unchanged).
 *
 *   weights reading the residual (token_embd, q/k/v, gate/up, output): W' = W R    (norms folded first)
 *   weights writing it (attn_output, ffn_down):                         W' = R^T W
 *   loss   L(R) = mean over tokens KL(p_float || p_Q(R)),  Q = round to nearest of each W' with its planned codec
 *   grad   straight-through (dQ/dW' = 1): G_R = sum W^T dL/dW'  +  sum W (dL/dW')^T      (the training engine's backward)
 *   Cayley A = G_R R^T - R G_R^T (skew),  R <- (I + a/2 A)^-1 (I - a/2 A) R,  a = lr_i / ||A||_F,  lr_i linear decay
 *
 * The float model's logits do not depend on R (computational invariance), so they are computed once.
 * The result is the best of the start (Hadamard) and the iterates checked on the whole calibration set
 * (every `checkEvery` steps and the last), so it is never worse than the Hadamard rotation on that objective.
 */
import { fail } from '../errors.js';
import type { BlockCodec } from '../algos/block-codec.js';
import { fwht, type Rotation } from '../algos/hadamard.js';
import { gemmABt } from '../kernels/gptq.js';
import type { LlamaConfig } from '../model/types.js';
import { rngStream } from '../rng.js';
import { referenceBackend, wasmBackend } from '../train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';

export interface SpinOptions {
  iters: number;
  /** Frobenius norm of the first Cayley step's a A (decayed linearly) */
  lr: number;
  /** calibration windows per step */
  batch: number;
  seed: number;
  /** check the whole calibration set every this many steps (and after the last) */
  checkEvery?: number;
  /** the weights inside a layer that write the residual stream (their rows rotate, R^T W): the family's, residualWiring(f).writers */
  writers: readonly string[];
  threads?: number;
  /** called with every whole-set check (step, loss) */
  trace?: (step: number, loss: number) => void;
}

export interface SpinResult {
  /** the learned rotation, n x n row-major (f64): a residual row vector v becomes v R */
  readonly matrix: Float64Array;
  /** mean KL divergence per token of the quantized model on the calibration windows: Hadamard start, result */
  readonly lossStart: number;
  readonly loss: number;
  /** the step the result was taken at (0 = the start) */
  readonly step: number;
  readonly seconds: number;
}

/** a dense rotation as a matrix: R = I R0 */
export function rotationMatrix(r: Rotation): Float64Array {
  const n = r.n;
  if (r.matrix) return Float64Array.from(r.matrix);
  // row i = e_i D H / sqrt(n), in f64 (orthogonal to ~1e-16)
  const m = new Float64Array(n * n);
  const s = 1 / Math.sqrt(n);
  for (let i = 0; i < n; i++) {
    m[i * n + i] = r.signs[i];
    fwht(m, i * n, n);
    for (let j = 0; j < n; j++) m[i * n + j] *= s;
  }
  return m;
}

/** max |R R^T - I| */
export function orthogonalityError(r: Float64Array, n: number): number {
  let e = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += r[i * n + k] * r[j * n + k];
      e = Math.max(e, Math.abs(s - (i === j ? 1 : 0)));
    }
  return e;
}

/** (I + a/2 A)^-1 (I - a/2 A) R for a skew A (n x n, f64), by Gauss-Jordan elimination with partial pivoting */
export function cayleyStep(R: Float64Array, A: Float64Array, a: number, n: number): Float64Array {
  const M = new Float64Array(n * n);
  const B = new Float64Array(n * n);
  // B = (I - a/2 A) R ; M = I + a/2 A
  const h = a / 2;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) M[i * n + j] = (i === j ? 1 : 0) + h * A[i * n + j];
    for (let k = 0; k < n; k++) {
      const c = (i === k ? 1 : 0) - h * A[i * n + k];
      if (c === 0) continue;
      for (let j = 0; j < n; j++) B[i * n + j] += c * R[k * n + j];
    }
  }
  for (let col = 0; col < n; col++) {
    let p = col;
    for (let i = col + 1; i < n; i++) if (Math.abs(M[i * n + col]) > Math.abs(M[p * n + col])) p = i;
    if (p !== col)
      for (let j = 0; j < n; j++) {
        [M[p * n + j], M[col * n + j]] = [M[col * n + j], M[p * n + j]];
        [B[p * n + j], B[col * n + j]] = [B[col * n + j], B[p * n + j]];
      }
    const d = M[col * n + col];
    if (!(Math.abs(d) > 1e-300)) fail('internal error: singular Cayley system');
    for (let i = 0; i < n; i++) {
      if (i === col) continue;
      const f = M[i * n + col] / d;
      if (f === 0) continue;
      for (let j = col; j < n; j++) M[i * n + j] -= f * M[col * n + j];
      for (let j = 0; j < n; j++) B[i * n + j] -= f * B[col * n + j];
    }
  }
  for (let i = 0; i < n; i++) {
    const d = M[i * n + i];
    for (let j = 0; j < n; j++) B[i * n + j] /= d;
  }
  return B;
}

const transpose = (a: Float32Array, rows: number, cols: number, out = new Float32Array(rows * cols)) => {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
};

/**
 * Learn R1 for a model whose norms are folded (gains 1): `weights` by GGUF name (untied output),
 * `codecOf` the planned codec of each tensor (undefined: float), `r0` the start, windows of ctx tokens.
 */
export function learnRotation(config: LlamaConfig, weights: ReadonlyMap<string, { data: Float32Array; rows: number; cols: number }>, codecOf: (name: string) => BlockCodec | undefined, r0: Float64Array, windows: readonly Int32Array[], o: SpinOptions): SpinResult {
  const t0 = performance.now();
  const n = config.dim;
  const ctx = windows[0]?.length ?? 0;
  if (!windows.length || windows.some((w) => w.length !== ctx)) fail('--rotate learned needs calibration windows of one length');
  if (!weights.has('output.weight')) fail('--rotate learned: the model ties its output to token_embd; untie it first');
  if (r0.length !== n * n) fail('internal: the start rotation has the wrong size');
  const batch = Math.min(o.batch, windows.length);
  const tc: TrainConfig = { ...config, seqLen: ctx, tiedOutput: false, nExperts: undefined };
  const mo = { batch, ctx };
  const overrideFloats = [...weights].filter(([nm, t]) => t.rows > 1 && nm !== 'rope_freqs.weight').reduce((a, [, t]) => a + t.data.length + 16, 0);
  const be = wasmBackend(trainModelFloats(tc, mo) + overrideFloats + 64 * 16, o.threads ?? 1) ?? referenceBackend('f32');
  const m = new TrainModel(tc, be, mo);
  try {
    // the norm-folded float model
    for (const t of m.tensors) {
      const w = weights.get(t.name);
      if (!w) fail(`--rotate learned: the model has no ${t.name}`);
      m.view(t.name).set(w.data);
    }
    const V = config.vocabSize;
    const nTok = batch * ctx;
    const nBatches = Math.ceil(windows.length / batch);
    const tokensOf = (b: number, order: readonly number[]) => {
      const t = new Int32Array(nTok);
      for (let i = 0; i < batch; i++) t.set(windows[order[(b * batch + i) % windows.length]], i * ctx);
      return t;
    };
    const natural = windows.map((_, i) => i);
    // the float model's log-probabilities per batch of the natural order (R-independent)
    const refLogp: Float32Array[] = [];
    for (let b = 0; b < nBatches; b++) {
      m.forward(tokensOf(b, natural));
      refLogp.push(logSoftmax(m.logits(), nTok, V));
    }
    // the rotated tensors: inputs W R, outputs R^T W
    const names = m.tensors.filter((t) => t.rows > 1).map((t) => t.name);
    const writes = (nm: string) => /^blk\.\d+\./.test(nm) && o.writers.includes(nm.replace(/^blk\.\d+\./, ''));
    const overrides = new Map(names.map((nm) => [nm, be.alloc(weights.get(nm)!.data.length)]));
    for (const [nm, v] of overrides) m.weightOverride.set(nm, v);
    const Rt32 = new Float32Array(n * n);
    const R32 = new Float32Array(n * n);
    const rotated = new Map(names.map((nm) => [nm, new Float32Array(weights.get(nm)!.data.length)]));
    const wT = new Map(names.filter(writes).map((nm) => [nm, transpose(weights.get(nm)!.data, n, weights.get(nm)!.cols)]));
    const qbuf = new Float32Array(256 * 64);
    const bbuf = new Uint8Array(4096);
    const apply = (R: Float64Array) => {
      R32.set(R);
      transpose(R32, n, n, Rt32);
      for (const nm of names) {
        const w = weights.get(nm)!;
        const out = rotated.get(nm)!;
        if (writes(nm)) {
          // (R^T W) = R^T (W^T)^T: rows of R^T against rows of W^T
          gemmABt(out, Rt32, wT.get(nm)!, n, n, w.cols);
        } else gemmABt(out, w.data, Rt32, w.rows, n, n); // W R = W (R^T)^T
        const v = overrides.get(nm)!;
        const c = codecOf(nm);
        if (!c) {
          v.set(out);
          continue;
        }
        const bs = c.blockSize;
        const q = qbuf.length >= bs ? qbuf : new Float32Array(bs);
        const bytes = bbuf.length >= c.blockBytes ? bbuf : new Uint8Array(c.blockBytes);
        for (let b = 0; b < out.length / bs; b++) {
          c.quantize(out, b * bs, bytes, 0);
          c.dequantize(bytes, 0, q, 0);
          for (let j = 0; j < bs; j++) v[b * bs + j] = q[j];
        }
      }
    };
    /** mean KL per token of batch b (order), optionally leaving its logit gradient for backward */
    const kl = (b: number, order: readonly number[], ref: Float32Array, grad: boolean): number => {
      m.forward(tokensOf(b, order));
      const lg = m.logits();
      const dl = m.logitGrads();
      let s = 0;
      for (let t = 0; t < nTok; t++) {
        const row = t * V;
        const lse = logSumExp(lg, row, V);
        for (let i = 0; i < V; i++) {
          const lp = ref[row + i];
          const p = Math.exp(lp);
          const lq = lg[row + i] - lse;
          s += p * (lp - lq);
          if (grad) dl[row + i] = (Math.exp(lq) - p) / nTok;
        }
      }
      return s / nTok;
    };
    const fullLoss = () => {
      let s = 0;
      for (let b = 0; b < nBatches; b++) s += kl(b, natural, refLogp[b], false);
      return s / nBatches;
    };
    /** the reference rows of a shuffled batch */
    const refFor = (b: number, order: readonly number[]) => {
      if (order === natural) return refLogp[b];
      const out = new Float32Array(nTok * V);
      for (let i = 0; i < batch; i++) {
        const w = order[(b * batch + i) % windows.length];
        const src = refLogp[Math.floor(w / batch)];
        const at = (w % batch) * ctx * V;
        out.set(src.subarray(at, at + ctx * V), i * ctx * V);
      }
      return out;
    };
    let R: Float64Array = Float64Array.from(r0);
    apply(R);
    const lossStart = fullLoss();
    let best = { R: Float64Array.from(R), loss: lossStart, step: 0 };
    const rand = rngStream('spinquantOrder', o.seed);
    const order = windows.map((_, i) => i);
    const G = new Float64Array(n * n);
    const g32 = new Float32Array(n * n);
    const every = o.checkEvery ?? 10;
    for (let it = 0; it < o.iters; it++) {
      if ((it * batch) % windows.length < batch)
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rand() * (i + 1));
          [order[i], order[j]] = [order[j], order[i]];
        }
      m.zeroGrads();
      kl(it, order, refFor(it, order), true);
      m.backward();
      // G_R = sum_in W^T G' + sum_out W G'^T
      G.fill(0);
      for (const nm of names) {
        const w = weights.get(nm)!;
        const gw = Float32Array.from(m.view(nm, m.grads));
        if (writes(nm)) {
          // W (n x k), G' (n x k): W G'^T
          gemmABt(g32, w.data, gw, n, w.cols, n);
        } else {
          // W (rows x n), G' (rows x n): W^T G' = (W^T)(G'^T)^T
          gemmABt(g32, transpose(w.data, w.rows, n), transpose(gw, w.rows, n), n, w.rows, n);
        }
        for (let i = 0; i < g32.length; i++) G[i] += g32[i];
      }
      // A = G R^T - R G^T
      const A = new Float64Array(n * n);
      let fro = 0;
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let k = 0; k < n; k++) s += G[i * n + k] * R[j * n + k];
          A[i * n + j] = s;
        }
      for (let i = 0; i < n; i++)
        for (let j = i; j < n; j++) {
          const x = A[i * n + j] - A[j * n + i];
          A[i * n + j] = x;
          A[j * n + i] = -x;
          if (i !== j) fro += 2 * x * x;
        }
      fro = Math.sqrt(fro);
      if (!(fro > 0)) break;
      R = cayleyStep(R, A, (o.lr * (1 - it / o.iters)) / fro, n);
      apply(R);
      if ((it + 1) % every === 0 || it + 1 === o.iters) {
        const l = fullLoss();
        o.trace?.(it + 1, l);
        if (l < best.loss) best = { R: Float64Array.from(R), loss: l, step: it + 1 };
      }
    }
    return { matrix: best.R, lossStart, loss: best.loss, step: best.step, seconds: (performance.now() - t0) / 1000 };
  } finally {
    be.close?.();
  }
}

function logSoftmax(lg: ArrayLike<number>, rows: number, V: number): Float32Array {
  const out = new Float32Array(rows * V);
  for (let t = 0; t < rows; t++) {
    const row = t * V;
    const lse = logSumExp(lg, row, V);
    for (let i = 0; i < V; i++) out[row + i] = lg[row + i] - lse;
  }
  return out;
}

/** log Σ exp over lg[row .. row + V), shifted by the row's maximum */
function logSumExp(lg: ArrayLike<number>, row: number, V: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, lg[row + i]);
  let z = 0;
  for (let i = 0; i < V; i++) z += Math.exp(lg[row + i] - max);
  return max + Math.log(z);
}
