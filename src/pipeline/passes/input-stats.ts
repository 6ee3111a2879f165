/**
 * Pass "statistics": what calibration knows about a linear's input. InputStats holds H = 2 X^T X / N
 * (or X itself), mean |x|, max |x| and the per-channel range; ExpertStats the same per expert of a 3-D
 * expert tensor, with the pooled fallback. The stages (stages.ts) fill them, the algorithms read them.
 */
import { finishHessian } from '../../algos/gptq.js';
import { hessianCost } from '../../alloc/cost.js';
import { gemmABt, hessianAccumulator, type HessianAccumulator } from '../../kernels/gptq.js';
import type { MatmulEngine } from '../../kernels/matmul.js';
import { matmul } from '../../model/matmul.js';
import type { InputStatistics } from '../algorithms.js';

/** A weight as float32, row-major rows x cols. */
export interface FloatTensor {
  data: Float32Array;
  rows: number;
  cols: number;
}

/**
 * Whether statistics of inputs k wide keep X itself rather than H = XᵀX: always when asked, else when
 * fewer tokens than channels (X is then the smaller, and the costs' products the cheaper)
 */
export function keepsInputs(keep: { tokens: number; always?: boolean } | undefined, k: number): boolean {
  return !!keep && (!!keep.always || keep.tokens < k);
}

/** rowCosts' products, reused from call to call (fresh memory costs a page fault per 4 KiB) */
let rowCostScratch = new Float32Array(0);

/**
 * Statistics of one linear layer input: H = 2 X^T X / N and, when `magnitudes` (AWQ, SmoothQuant),
 * mean |x| and max |x| per channel. With `keepInputs` (the sensitivity pass) and fewer tokens than
 * channels (or `always`), X itself is kept instead of H (N x k rather than k x k; `h` stays empty):
 * tr(ΔW H ΔWᵀ) = 2/N ‖X ΔWᵀ‖², the same number (`cost`).
 */
export class InputStats implements InputStatistics {
  h: Float64Array = new Float64Array(0);
  readonly sumAbs: Float64Array;
  readonly absMax: Float32Array;
  /** per channel minimum and maximum of x (OS+'s shift is their midpoint) */
  readonly min: Float32Array;
  readonly max: Float32Array;
  count = 0;
  private acc: HessianAccumulator | undefined;
  private x: Float32Array | undefined;
  private h32: Float32Array | undefined;
  /**
   * keepInputs: keep X itself instead of H where keepsInputs says so; keepInputs.buffer: where X goes (reused
   * from stage to stage by the caller; in kernel memory, the cost products take it in place), when it holds
   * every row. hessianInto: where finish() puts H (k x k or more, overwritten; a new view of it), instead of
   * a fresh array -- the caller's buffer, reused from layer to layer (fresh memory costs a page fault per 4 KiB)
   */
  constructor(readonly k: number, maxTok: number, private readonly engine?: MatmulEngine | null, readonly magnitudes = true, keepInputs?: { tokens: number; always?: boolean; buffer?: Float32Array }, private readonly hessianInto?: Float64Array) {
    // (X grows as rows come: an expert's matrix sees only the tokens routed to it, the pooled statistics of
    // experts more than `tokens` rows)
    if (keepInputs && keepsInputs(keepInputs, k)) this.x = keepInputs.buffer ?? new Float32Array(Math.min(keepInputs.tokens, 64) * k);
    else this.acc = hessianAccumulator(k, maxTok, engine);
    this.sumAbs = new Float64Array(k);
    this.absMax = new Float32Array(k);
    this.min = new Float32Array(k).fill(Infinity);
    this.max = new Float32Array(k).fill(-Infinity);
  }
  add(x: Float32Array, nTok: number): void {
    const k = this.k;
    if (this.x) {
      if ((this.count + nTok) * k > this.x.length) {
        const grown = new Float32Array(Math.max(2 * this.x.length, (this.count + nTok) * k));
        grown.set(this.x.subarray(0, this.count * k));
        this.x = grown;
      }
      this.x.set(x.subarray(0, nTok * k), this.count * k);
    }
    else this.acc!.add(x, nTok);
    this.addMagnitudes(x, nTok);
  }
  /**
   * rows whose H is added in one product where they lie (addInPlace: in the engine's memory), or 0 when
   * this statistics gathers every row (keeps X, or no engine)
   */
  get productRows(): number {
    return (!this.x && this.acc?.productRows) || 0;
  }
  /**
   * add nTok rows of x (nTok may exceed maxTok) without copying them where H allows it (see
   * HessianAccumulator.addInPlace: the same bits as add() of the same rows in steps); false, nothing done, otherwise
   */
  addInPlace(x: Float32Array, nTok: number): boolean {
    if (this.x || !this.acc?.addInPlace?.(x, nTok)) return false;
    this.addMagnitudes(x, nTok);
    return true;
  }
  private addMagnitudes(x: Float32Array, nTok: number): void {
    const k = this.k;
    this.count += nTok;
    if (!this.magnitudes) return;
    for (let t = 0; t < nTok; t++)
      for (let j = 0; j < k; j++) {
        const v = x[t * k + j];
        const a = Math.abs(v);
        this.sumAbs[j] += a;
        if (a > this.absMax[j]) this.absMax[j] = a;
        if (v < this.min[j]) this.min[j] = v;
        if (v > this.max[j]) this.max[j] = v;
      }
  }
  finish(): void {
    if (this.x && this.engine && this.engine.ptrOf(this.x, this.count * this.k) < 0) {
      // X moves into kernel memory once (when it is shared): the cost products then take it in place
      const slot = this.engine.allocF32(this.count * this.k, this);
      if (slot) {
        slot.array.set(this.x.subarray(0, this.count * this.k));
        this.x = slot.array;
      }
    }
    if (!this.acc) return;
    const acc = this.acc;
    this.acc = undefined;
    if (acc.finished) this.h = acc.finished(this.count, this.hessianInto); // result() and finishHessian in one pass, the same bits
    else {
      this.h = acc.result();
      finishHessian(this.h, this.k, this.count);
    }
  }
  /** tr(ΔW H ΔWᵀ) for ΔW of m rows (row-major m x k): the layer's output error energy on the calibration inputs */
  cost(delta: Float32Array, m: number): number {
    if (!this.x) return hessianCost(delta, m, this.k, (this.h32 ??= Float32Array.from(this.h)));
    return this.rowCosts(delta, m).reduce((a, b) => a + b, 0);
  }
  /**
   * δ_r H δ_rᵀ for each row r of ΔW (m rows): the costs of several candidates' rows in one product (the
   * sensitivity pass stacks every candidate type's error rows of a tensor)
   */
  rowCosts(delta: Float32Array, m: number): Float64Array {
    const k = this.k;
    const out = new Float64Array(m);
    if (!this.x) {
      const h = (this.h32 ??= Float32Array.from(this.h));
      const panel = Math.max(1, Math.min(m, Math.floor((1 << 22) / k)));
      const dh = new Float32Array(panel * k);
      for (let r0 = 0; r0 < m; r0 += panel) {
        const n = Math.min(panel, m - r0);
        const d = delta.subarray(r0 * k, (r0 + n) * k);
        gemmABt(dh, d, h, n, k, k); // (ΔW H)[r, j], H symmetric
        for (let r = 0; r < n; r++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += d[r * k + j] * dh[r * k + j];
          out[r0 + r] = s;
        }
      }
      return out;
    }
    const n = this.count;
    const panel = Math.max(1, Math.min(m, Math.floor((1 << 22) / Math.max(1, n))));
    if (rowCostScratch.length < panel * n) rowCostScratch = new Float32Array(panel * n);
    const y = rowCostScratch;
    for (let r0 = 0; r0 < m; r0 += panel) {
      const p = Math.min(panel, m - r0);
      matmul(y, delta.subarray(r0 * k, (r0 + p) * k), this.x, p, k, n); // (p x N) = ΔW Xᵀ, X the weights (in place when in kernel memory)
      for (let r = 0; r < p; r++) {
        let s = 0;
        for (let t = 0; t < n; t++) s += y[r * n + t] * y[r * n + t];
        out[r0 + r] = (2 * s) / Math.max(1, n);
      }
    }
    return out;
  }
  meanAbs(): Float64Array {
    return this.sumAbs.map((s) => s / Math.max(1, this.count));
  }
  diag(): Float32Array {
    const k = this.k;
    if (!this.x) return Float32Array.from({ length: k }, (_, i) => this.h[i * k + i]);
    const d = new Float32Array(k);
    for (let t = 0; t < this.count; t++) for (let j = 0; j < k; j++) d[j] += this.x[t * k + j] * this.x[t * k + j];
    for (let j = 0; j < k; j++) d[j] *= 2 / Math.max(1, this.count);
    return d;
  }
  /** the input becomes x / s (a fold of s into the previous op) */
  divideInput(s: Float32Array): void {
    const k = this.k;
    for (let i = 0; i < k; i++) {
      this.sumAbs[i] /= s[i];
      this.absMax[i] /= s[i];
      this.min[i] /= s[i];
      this.max[i] /= s[i];
      for (let j = 0; j < k; j++) this.h[i * k + j] /= s[i] * s[j];
    }
  }
}

/**
 * The input statistics of every expert's matrix of a 3-D tensor (each expert sees only the rows routed
 * to it) and of all experts pooled. An expert that saw fewer than `minTokens` rows (max(16, k/8): its
 * Hessian would be far from full rank) is calibrated with the pooled statistics instead -- the inputs
 * of its peers, the closest estimate of what it will see -- and listed in `fallbacks` (the report says so).
 */
export class ExpertStats {
  readonly minTokens: number;
  readonly fallbacks: number[] = [];
  constructor(readonly tensor: string, readonly perExpert: InputStats[], readonly pooled: InputStats) {
    this.minTokens = Math.max(16, Math.ceil(pooled.k / 8));
  }
  finish(): void {
    for (const st of this.perExpert) st.finish();
    this.pooled.finish();
    this.perExpert.forEach((st, e) => st.count < this.minTokens && this.fallbacks.push(e));
  }
  /** the statistics expert e is calibrated with */
  pick(e: number): InputStats {
    return this.perExpert[e].count < this.minTokens ? this.pooled : this.perExpert[e];
  }
  divideInput(s: Float32Array): void {
    for (const st of this.perExpert) st.divideInput(s);
    this.pooled.divideInput(s);
  }
}

/** expert e's matrix of a 3-D tensor (nExp matrices stacked by rows): a view */
export function expertView(t: FloatTensor, e: number, nExp: number): FloatTensor {
  const rows = t.rows / nExp;
  return { data: t.data.subarray(e * rows * t.cols, (e + 1) * rows * t.cols), rows, cols: t.cols };
}
