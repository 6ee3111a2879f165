/**
 * GPTQ (Frantar et al. 2023): quantize a weight matrix column by column, spreading each column's
 * rounding error over the columns not yet quantized with the inverse Hessian H = 2 X^T X / N of the
 * layer's calibration inputs:
 *
 *   for each column i (in order, or by decreasing diag H with actOrder):
 *     q_i = Q(w_i)                       (nearest grid value; the group's grid fixed when it starts)
 *     e   = (w_i - q_i) / U_ii            (U: upper Cholesky factor of H^-1)
 *     w_j -= e * U_ij   for every later column j
 *
 * Dampening: H += percDamp * mean(diag H) * I. Lazy batch updates: the update of later columns is
 * applied inside a block of `blockSize` columns at once, and to the rest of the matrix when the block
 * ends (one matrix product). actOrder processes columns by decreasing diag(H); groups are then "static"
 * (their grids fitted on the original weights before any update), so the file keeps natural order.
 * Without actOrder, a group's grid is fitted on the updated weights when its first column is reached,
 * and the lazy block is aligned to the groups so that every column of a group is fully updated then.
 *
 * Layout: W is n x k row-major (n outputs, k inputs: GGML's layout, a row is an output channel);
 * groups run along rows (k), as every GGML block and grouped scheme does.
 *
 * The grid is a block codec (block-codec.ts: every GGML type and per-block lowbit scheme, with the
 * codec's own scale choice per block and the exact block bytes).
 */
import { fail } from '../errors.js';
import { BlockGrids, nearestLevel, setCodes, type BlockCodec } from './block-codec.js';
import { CLIP_RATIOS } from './blockwise.js';
import { clipSearchKernel, factorMemory, gptqColumnLoopFast, gptqWorkspace, lowerTriangleTiles, syrkLowerRef, type FactorMemory } from '../kernels/gptq.js';

/** What the GPTQ loop needs from a grid: fit a group, round one element of it. */
export interface GroupQuantizer {
  readonly name: string;
  readonly groupSize: number;
  /** fit the grid of group `grp` of row r on x[xo .. xo + groupSize) */
  fit(r: number, grp: number, x: Float32Array, xo: number): void;
  /** the grid value of element j of group grp of row r nearest to x (records the choice) */
  quant(r: number, grp: number, j: number, x: number): number;
  /**
   * Optional, for the WebAssembly column loop: the grids as arrays. Element j of group grp of row r has
   * count[s * groupSize + j] levels, sorted, at values[(s * groupSize + j) * nCodes ..], s = slot(r, grp);
   * `quant` returns the one nearest to x (ties go down). perGroup: every element of a group has the same
   * levels, at values[s * nCodes ..], count[s].
   */
  readonly levels?: { readonly values: Float32Array; readonly count: Uint16Array; readonly nCodes: number; slot(r: number, grp: number): number; readonly perGroup?: boolean };
  /** with levels: record the level at values[at] as element j of group grp of row r's choice (what quant does after its search) */
  choose?(r: number, grp: number, j: number, at: number): void;
}

export interface GptqOptions {
  /** dampening as a fraction of mean(diag H) (default 0.01) */
  percDamp?: number;
  /** lazy-update block width (default 128) */
  blockSize?: number;
  actOrder?: boolean;
}

export interface GptqStats {
  /** sum over rows of the GPTQ objective sum_i (w_i - q_i)^2 / U_ii^2 (GPTQ's "error") */
  loss: number;
  seconds: number;
}

// ---------------------------------------------------------------------------------------------------
// Hessian (the fast accumulation: hessianAccumulator in src/kernels/gptq.ts)

/** Accumulate the lower triangle of X^T X for nTok rows of x (k wide) into h; then finishHessian. */
export function accumulateHessian(h: Float64Array, x: Float32Array, nTok: number, k: number): void {
  syrkLowerRef(h, x, nTok, k);
}

/** Symmetrize (the accumulation fills the lower triangle) and scale by 2 / nTok. */
export function finishHessian(h: Float64Array, k: number, nTok: number): void {
  const s = 2 / Math.max(1, nTok);
  // in tiles of the lower triangle (the plain loop's column writes missed the cache on every element at
  // k = 2816); every element is the same product of its lower value, as in finishHessianRef
  lowerTriangleTiles(k, true, (i, j0, j1) => {
    for (let j = j0; j < j1; j++) {
      const v = h[i * k + j] * s;
      h[i * k + j] = v;
      h[j * k + i] = v;
    }
  });
}

/** finishHessian row by row (the reference its tiles must match bit for bit) */
export function finishHessianRef(h: Float64Array, k: number, nTok: number): void {
  const s = 2 / Math.max(1, nTok);
  for (let i = 0; i < k; i++)
    for (let j = 0; j <= i; j++) {
      const v = h[i * k + j] * s;
      h[i * k + j] = v;
      h[j * k + i] = v;
    }
}

// ---------------------------------------------------------------------------------------------------
// The GPTQ loop

/**
 * the last inverse Cholesky factor, by Hessian identity (the caller must not modify a Hessian it passed);
 * held only as long as that Hessian is (a weak map of one entry): a layer's factor goes with its statistics
 */
let lastFactor = new WeakMap<Float64Array, { fingerprint: number; percDamp: number; actOrder: boolean; factor: GptqFactor }>();

/**
 * What GPTQ needs of the Hessian, shared by every row: the upper Cholesky factor U of the dampened
 * inverse (columns in processing order), the act-order permutation, the dead inputs. Rows are
 * independent given it, so ranges of rows can be quantized separately (gptqRows) with the same result.
 */
export interface GptqFactor {
  readonly k: number;
  readonly u: Float64Array;
  /** where u lives (gptqFactor's factors; not sent to other threads): the rows' workspaces are made there, U not copied */
  readonly memory?: FactorMemory;
  /** perm[position] = original column (act-order) */
  readonly perm?: Int32Array;
  /** inputs never active in calibration (their weights are quantized as zeros) */
  readonly dead: Uint8Array;
}

export function gptqFactor(hessian: Float64Array, k: number, opts: GptqOptions = {}): GptqFactor {
  if (hessian.length !== k * k) fail('GPTQ: the Hessian has the wrong size');
  const percDamp = opts.percDamp ?? 0.01;
  if (!(percDamp >= 0)) fail(`GPTQ: dampening must be >= 0, got ${percDamp}`);
  // layers that share an input (q/k/v, gate/up) share H: reuse its factor
  let fingerprint = 0; // guards against a Hessian modified in place since
  for (let i = 0; i < k; i++) fingerprint += hessian[i * k + i] + 0.5 * hessian[i * k + ((i * 7) % k)];
  const last = lastFactor.get(hessian);
  if (last && last.fingerprint === fingerprint && last.percDamp === percDamp && last.actOrder === !!opts.actOrder && last.factor.memory?.live !== false) return last.factor;
  // Only the diagonal changes (dead inputs, dampening): without act-order it is changed in the caller's
  // Hessian and restored bit for bit afterwards, instead of copying k x k values (63 MB at k = 2816)
  const diagonal = Float64Array.from({ length: k }, (_, i) => hessian[i * k + i]);
  let H = hessian;
  const dead = new Uint8Array(k);
  for (let i = 0; i < k; i++) if (diagonal[i] === 0) dead[i] = 1;
  let perm: Int32Array | undefined;
  if (opts.actOrder) {
    const d = (i: number) => (dead[i] ? 1 : diagonal[i]);
    perm = Int32Array.from({ length: k }, (_, i) => i).sort((a, b) => d(b) - d(a) || a - b);
    H = new Float64Array(k * k);
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) H[i * k + j] = perm[i] === perm[j] ? d(perm[i]) : hessian[perm[i] * k + perm[j]];
  } else for (let i = 0; i < k; i++) if (dead[i]) H[i * k + i] = 1;
  let mean = 0;
  for (let i = 0; i < k; i++) mean += H[i * k + i];
  const damp = (percDamp * mean) / k;
  for (let i = 0; i < k; i++) H[i * k + i] += damp;
  // the factor is computed in a kernel memory of its own, where the rows' workspaces then read it
  lastFactor = new WeakMap(); // the previous factor's memory can go before this one is made
  let inverse: ReturnType<typeof factorMemory>;
  try {
    inverse = factorMemory(H, k);
  } finally {
    if (H === hessian) for (let i = 0; i < k; i++) hessian[i * k + i] = diagonal[i];
  }
  const { bad, factor: memory } = inverse;
  if (bad >= 0 || !memory) fail(`GPTQ: the Hessian is not positive definite (pivot ${bad}); increase the dampening (--damp)`);
  const factor = { k, get u() { return memory.u; }, perm, dead } as GptqFactor;
  Object.defineProperty(factor, 'memory', { value: memory, enumerable: false });
  lastFactor.set(hessian, { fingerprint, percDamp, actOrder: !!opts.actOrder, factor });
  return factor;
}

/** Quantize w (n x k) with GPTQ; returns the quantized values (n x k, on the quantizer's grids). */
export function gptqQuantize(w: Float32Array, n: number, k: number, hessian: Float64Array, qz: GroupQuantizer, opts: GptqOptions = {}): { q: Float32Array; stats: GptqStats } {
  return gptqRows(w, n, k, gptqFactor(hessian, k, opts), qz, opts);
}

/** GPTQ of the n rows of w (n x k) with a factor of their Hessian (gptqFactor). */
export function gptqRows(w: Float32Array, n: number, k: number, f: GptqFactor, qz: GroupQuantizer, opts: GptqOptions = {}): { q: Float32Array; stats: GptqStats } {
  const t0 = performance.now();
  const g = qz.groupSize;
  if (k % g !== 0) fail(`GPTQ: row length ${k} is not a multiple of the group size ${g} of ${qz.name}`);
  if (w.length !== n * k || f.k !== k) fail('GPTQ: weight or Hessian has the wrong size');
  let B = Math.max(1, opts.blockSize ?? 128);
  // align the lazy blocks with the groups (a group is fitted when its first column is reached)
  if (!opts.actOrder && g % B !== 0 && B % g !== 0) B = g * Math.max(1, Math.floor(B / g));
  const lv = f.perm ? undefined : qz.levels; // act-order (columns permuted, static groups) stays in TypeScript
  const ws = gptqWorkspace(n, k, B, lv && qz.choose ? { len: Math.min(B, g), nCodes: lv.nCodes } : undefined, false, f.memory, true);
  if (!(f.memory && ws.u.buffer === f.u.buffer)) ws.u.set(f.u); // else U is read where the factor left it
  const W = ws.w;
  W.set(w.subarray(0, n * k)); // f32 -> f64, exact
  // dead inputs (never active in calibration): any value works; quantize them as zero weights
  for (let i = 0; i < k; i++) if (f.dead[i]) for (let r = 0; r < n; r++) W[r * k + i] = 0;
  const nGroups = k / g;
  const row32 = new Float32Array(k);
  /** fit group grp of row r on its current values (W still in natural column order where this is called) */
  const fitGroup = (r: number, grp: number) => {
    for (let j = 0; j < g; j++) row32[j] = W[r * k + grp * g + j];
    qz.fit(r, grp, row32, 0);
  };
  const perm = f.perm; // perm[position] = original column
  if (perm) {
    for (let r = 0; r < n; r++) for (let grp = 0; grp < nGroups; grp++) fitGroup(r, grp); // static groups
    const Wp = new Float64Array(n * k);
    for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) Wp[r * k + c] = W[r * k + perm[c]];
    W.set(Wp);
  }
  const U = ws.u;
  const Q = new Float32Array(n * k);
  const err = ws.err;
  let loss = 0;
  const fast = ws.columns;
  for (let i1 = 0; i1 < k; i1 += B) {
    const i2 = Math.min(i1 + B, k);
    const count = i2 - i1;
    if (fast && lv) {
      // the same loop in WebAssembly, one group's columns of the block at a time: every row's group is
      // fitted first (a row's fit reads only its own columns, which the loop over other rows leaves alone),
      // then each row runs through the columns as below (the same f64 operations in the same order)
      for (let c0 = i1, c1 = i1; c0 < i2; c0 = c1) {
        const grp = Math.floor(c0 / g);
        const j0 = c0 - grp * g;
        c1 = Math.min(i2, (grp + 1) * g);
        const len = c1 - c0;
        if (j0 === 0) for (let r = 0; r < n; r++) fitGroup(r, grp);
        // per group (perGroup: one set of levels for the group's elements) or per element
        const pg = !!lv.perGroup;
        const nc = lv.nCodes;
        for (let r0 = 0; r0 < n; r0 += fast.rows) {
          const rows = Math.min(fast.rows, n - r0);
          for (let rr = 0; rr < rows; rr++) {
            const s0 = lv.slot(r0 + rr, grp);
            if (pg) {
              fast.lv.set(lv.values.subarray(s0 * nc, (s0 + 1) * nc), rr * nc);
              fast.cnt[rr] = lv.count[s0];
            } else {
              const e0 = s0 * g + j0;
              fast.lv.set(lv.values.subarray(e0 * nc, (e0 + len) * nc), rr * len * nc);
              fast.cnt.set(lv.count.subarray(e0, e0 + len), rr * len);
            }
          }
          loss = fast.run(r0, rows, i1, c0, c1, i2, loss, pg);
          for (let rr = 0; rr < rows; rr++) {
            const r = r0 + rr;
            const s0 = lv.slot(r, grp);
            const base = pg ? s0 * nc : (s0 * g + j0) * nc;
            const step = pg ? 0 : nc;
            for (let i = 0; i < len; i++) {
              const at = base + i * step + fast.out[rr * len + i];
              qz.choose!(r, grp, j0 + i, at);
              Q[r * k + c0 + i] = lv.values[at];
            }
          }
        }
      }
      if (i2 < k) ws.lazyUpdate(count, i1, i2);
      continue;
    }
    // rows are independent: each row runs through the block's columns in turn (its slice of W stays in
    // cache; the block of U is shared by every row)
    for (let r = 0; r < n; r++) {
      const wr = r * k;
      for (let i = 0; i < count; i++) {
        const col = i1 + i;
        const orig = perm ? perm[col] : col;
        const grp = Math.floor(orig / g);
        const j = orig - grp * g;
        if (!perm && j === 0) fitGroup(r, grp);
        const ur = col * k;
        const x = W[wr + col];
        const q = qz.quant(r, grp, j, x);
        Q[wr + orig] = q;
        const e = (x - q) / U[ur + col];
        loss += e * e;
        err[r * B + i] = e;
        if (e === 0) continue;
        for (let c = col + 1; c < i2; c++) W[wr + c] -= e * U[ur + c];
      }
    }
    if (i2 < k) ws.lazyUpdate(count, i1, i2);
  }
  return { q: Q, stats: { loss: loss / 2, seconds: (performance.now() - t0) / 1000 } };
}

// ---------------------------------------------------------------------------------------------------
// Grids

/**
 * A block codec as a GroupQuantizer: at a group's start the codec itself quantizes the group's current
 * values (with `importance`, e.g. diag H, when the codec has an importance path) and that block's
 * scales are kept; elements are rounded on the block's grid; `finish` writes the chosen codes into the
 * blocks and checks that the codec's dequantizer reproduces every chosen value exactly.
 */
export class BlockQuantizer implements GroupQuantizer {
  readonly name: string;
  readonly groupSize: number;
  /** the output: n rows of k / blockSize blocks, as the codec stores them */
  readonly bytes: Uint8Array;
  private readonly grids: BlockGrids;
  private readonly nGroups: number;
  private readonly codes: Uint16Array;
  private readonly chosen: Float32Array;
  private readonly importance?: Float32Array;
  private readonly clipWeights?: Float32Array;
  private readonly ratios: readonly number[];
  private readonly shrunk: Float32Array;
  private readonly snapped: Float32Array;
  private readonly cand: Uint8Array;

  /**
   * importance: passed to codecs that have an importance path (llama.cpp's imatrix quantizers);
   * clipWeights: when given, each group's grid is the best of the codec's grids for the shrunk group
   * x * r, r in `ratios` (GPTQ's "mse" grid search), by sum_j clipWeights_j (x_j - q_j)^2.
   */
  constructor(readonly codec: BlockCodec, readonly n: number, readonly k: number, opts: { staticGroups?: boolean; importance?: Float32Array; clipWeights?: Float32Array; ratios?: readonly number[] } = {}) {
    this.name = codec.name;
    this.groupSize = codec.blockSize;
    if (k % codec.blockSize !== 0) fail(`${codec.name}: row length ${k} is not a multiple of its block size ${codec.blockSize}`);
    this.nGroups = k / codec.blockSize;
    this.bytes = new Uint8Array(n * this.nGroups * codec.blockBytes);
    // static groups (act-order) keep every block's grid; otherwise one slot per row
    this.grids = new BlockGrids(codec, opts.staticGroups ? n * this.nGroups : n);
    this.staticGroups = !!opts.staticGroups;
    this.codes = new Uint16Array(n * k);
    this.chosen = new Float32Array(n * k);
    if (opts.importance && opts.importance.length !== k) fail(`importance has ${opts.importance.length} values for rows of ${k}`);
    if (opts.clipWeights && opts.clipWeights.length !== k) fail(`clip weights have ${opts.clipWeights.length} values for rows of ${k}`);
    this.importance = opts.importance;
    this.clipWeights = opts.clipWeights;
    this.ratios = opts.ratios ?? CLIP_RATIOS;
    this.shrunk = new Float32Array(codec.blockSize);
    this.snapped = new Float32Array(codec.blockSize);
    this.cand = new Uint8Array(codec.blockBytes);
    this.candRatios = [1, ...this.ratios.filter((r) => r !== 1)];
    this.candBytes = new Uint8Array(this.candRatios.length * codec.blockBytes);
    const slots = opts.staticGroups ? n * this.nGroups : n;
    this.nCodes = this.grids.nCodes;
    // affine grids with the WebAssembly column loop: one set of levels per block, not per element
    this.perGroup = !!codec.affine && gptqColumnLoopFast();
    this.gv = new Float32Array(this.perGroup ? slots * this.nCodes : 0);
    this.gc = new Uint16Array(this.perGroup ? slots * this.nCodes : 0);
    this.gn = new Uint16Array(this.perGroup ? slots : 0);
    this.lvValues = this.perGroup ? this.gv : this.grids.values;
    this.lvCodes = this.perGroup ? this.gc : this.grids.codes;
  }
  private readonly nCodes: number;
  /** levels per block (slot), not per element: gv/gc/gn as BlockGrids' values/codes/count of element 0 */
  private readonly perGroup: boolean;
  private readonly gv: Float32Array;
  private readonly gc: Uint16Array;
  private readonly gn: Uint16Array;
  private readonly sz = new Float64Array(2);
  /** the arrays `choose` indexes: gv/gc, or the grids' */
  private readonly lvValues: Float32Array;
  private readonly lvCodes: Uint16Array;
  /** fitAffine's candidates: ratio 1 (the codec's own grid), then the others in order; their bytes */
  private readonly candRatios: readonly number[];
  private readonly candBytes: Uint8Array;
  private readonly staticGroups: boolean;

  private slot(r: number, grp: number): number {
    return this.staticGroups ? r * this.nGroups + grp : r;
  }

  fit(r: number, grp: number, x: Float32Array, xo: number): void {
    const at = (r * this.nGroups + grp) * this.codec.blockBytes;
    const slot = this.slot(r, grp);
    if (!(this.clipWeights && this.fitAffine(grp, x, xo, at))) this.fitBytes(grp, slot, x, xo, at);
    if (this.perGroup) this.loadGroup(slot, at);
    else this.grids.load(slot, this.bytes, at);
  }

  /** the block's bytes at `at` (the codec's, or the best clip candidate's); the slot's grid is scratch here */
  private fitBytes(grp: number, slot: number, x: Float32Array, xo: number, at: number): void {
    const bs = this.groupSize;
    const imp = this.importance?.subarray(grp * bs, (grp + 1) * bs);
    this.codec.quantize(x, xo, this.bytes, at, imp);
    const w = this.clipWeights;
    if (!w) return;
    const codec = this.codec;
    const snap = !!codec.snap;
    const err = (bytes: Uint8Array, bo: number) => {
      let e = 0;
      if (snap) {
        codec.snap!(bytes, bo, x, xo, this.snapped, 0);
        for (let j = 0; j < bs; j++) {
          const d = x[xo + j] - this.snapped[j];
          e += w[grp * bs + j] * d * d;
        }
        return e;
      }
      this.grids.load(slot, bytes, bo);
      for (let j = 0; j < bs; j++) {
        const d = x[xo + j] - this.grids.values[this.grids.nearest(slot, j, x[xo + j])];
        e += w[grp * bs + j] * d * d;
      }
      return e;
    };
    let best = err(this.bytes, at);
    for (const ratio of this.ratios) {
      if (ratio === 1) continue;
      if (snap && codec.clipHeader) codec.clipHeader(x, xo, ratio, this.cand, 0); // the grid is all snap needs
      else {
        for (let j = 0; j < bs; j++) this.shrunk[j] = Math.fround(x[xo + j] * ratio);
        codec.quantize(this.shrunk, 0, this.cand, 0, imp);
      }
      const e = err(this.cand, 0);
      if (e < best) {
        best = e;
        this.bytes.set(this.cand, at);
      }
    }
  }

  /**
   * perGroup: the levels of the block at `at` into the slot (an affine grid is the same for every element):
   * computed from its scale and zero-point as the codec's dequantizer does, or, where they are degenerate
   * (levels not finite and increasing), element 0's grid from BlockGrids.
   */
  private loadGroup(slot: number, at: number): void {
    const a = this.codec.affine!;
    const nc = this.nCodes;
    const o = slot * nc;
    const gv = this.gv;
    const gc = this.gc;
    a.params(this.bytes, at, this.sz, 0);
    const s = this.sz[0];
    const z = this.sz[1];
    if (s > 0 && s !== Infinity) {
      const half = nc >> 1;
      let ok = true;
      for (let i = 0; i < nc; i++) {
        // sorted by value: signed codes from the most negative (half .. nc - 1, then 0 .. half - 1)
        const c = a.signed ? (i + half) % nc : i;
        const v = Math.fround((a.signed ? (c >= half ? c - nc : c) : c - z) * s);
        gv[o + i] = v;
        gc[o + i] = c;
        if (!(v - v === 0) || (i > 0 && !(v > gv[o + i - 1]))) ok = false;
      }
      if (ok) {
        this.gn[slot] = nc;
        return;
      }
    }
    const g = this.grids;
    g.load(slot, this.bytes, at);
    const e = slot * this.groupSize * nc;
    const n = g.count[slot * this.groupSize];
    gv.set(g.values.subarray(e, e + n), o);
    gc.set(g.codes.subarray(e, e + n), o);
    this.gn[slot] = n;
  }

  /**
   * fit's clip search in WebAssembly (clipSearchKernel) for an affine grid: the same candidates (ratio 1,
   * then the others in order), errors and choice as below, into this.bytes at `at`; false (nothing done)
   * where it does not apply: no kernel or affine grid, a non-finite x, a candidate scale not > 0 and finite.
   */
  private fitAffine(grp: number, x: Float32Array, xo: number, at: number): boolean {
    const codec = this.codec;
    const a = codec.affine;
    if (!a) return false;
    const bs = this.groupSize;
    const nb = codec.blockBytes;
    const nCand = this.candRatios.length;
    const ks = clipSearchKernel(bs, nCand);
    if (!ks) return false;
    const kx = ks.x;
    for (let j = 0; j < bs; j++) {
      const v = x[xo + j];
      if (v - v !== 0) return false;
      kx[j] = v;
    }
    const cb = this.candBytes;
    const cand = ks.cand;
    a.clipHeaders(x, xo, this.candRatios, cb, 0);
    for (let c = 0; c < nCand; c++) {
      a.params(cb, c * nb, cand, 2 * c);
      const s = cand[2 * c];
      if (!(s > 0) || s === Infinity) return false;
    }
    ks.w.set(this.clipWeights!.subarray(grp * bs, (grp + 1) * bs));
    const best = ks.run(bs, nCand, a.lo, a.hi);
    this.bytes.set(cb.subarray(best * nb, (best + 1) * nb), at);
    return true;
  }

  quant(r: number, grp: number, j: number, x: number): number {
    if (this.perGroup) {
      const slot = this.slot(r, grp);
      const i = nearestLevel(this.gv, slot * this.nCodes, this.gn[slot], x);
      this.choose(r, grp, j, i);
      return this.gv[i];
    }
    const i = this.grids.nearest(this.slot(r, grp), j, x);
    this.choose(r, grp, j, i);
    return this.grids.values[i];
  }

  get levels(): GroupQuantizer['levels'] {
    if (this.perGroup) return { values: this.gv, count: this.gn, nCodes: this.nCodes, slot: (r, grp) => this.slot(r, grp), perGroup: true };
    return { values: this.grids.values, count: this.grids.count, nCodes: this.grids.nCodes, slot: (r, grp) => this.slot(r, grp) };
  }

  choose(r: number, grp: number, j: number, at: number): void {
    const e = r * this.k + grp * this.groupSize + j;
    this.codes[e] = this.lvCodes[at];
    this.chosen[e] = this.lvValues[at];
  }

  /** Write the codes into the blocks; returns the bytes (checked to decode to the chosen values). */
  finish(): Uint8Array {
    const bs = this.groupSize;
    const nb = this.codec.blockBytes;
    const check = new Float32Array(bs);
    for (let b = 0; b < this.n * this.nGroups; b++) {
      setCodes(this.grids.layout, this.bytes, b * nb, this.codes.subarray(b * bs, (b + 1) * bs), bs);
      this.codec.dequantize(this.bytes, b * nb, check, 0);
      for (let j = 0; j < bs; j++)
        if (check[j] !== this.chosen[b * bs + j])
          fail(`internal error: ${this.codec.name} block ${b} decodes element ${j} to ${check[j]}, GPTQ chose ${this.chosen[b * bs + j]}`);
    }
    return this.bytes;
  }
}

/** GPTQ into a block codec's bytes (GGML types, per-block schemes): bytes and their exact values. */
export function gptqBlocks(w: Float32Array, n: number, k: number, hessian: Float64Array, codec: BlockCodec, opts: GptqBlockOptions = {}): { bytes: Uint8Array; q: Float32Array; stats: GptqStats } {
  if (hessian.length !== k * k) fail('GPTQ: weight or Hessian has the wrong size');
  return gptqBlocksWithFactor(w, n, k, gptqFactor(hessian, k, opts), codec, opts);
}

export type GptqBlockOptions = GptqOptions & { importance?: Float32Array; clipWeights?: Float32Array };

/** gptqBlocks of n rows with a factor of their Hessian (a range of a weight's rows: the same bytes as in the whole) */
export function gptqBlocksWithFactor(w: Float32Array, n: number, k: number, f: GptqFactor, codec: BlockCodec, opts: GptqBlockOptions = {}): { bytes: Uint8Array; q: Float32Array; stats: GptqStats } {
  const qz = new BlockQuantizer(codec, n, k, { staticGroups: opts.actOrder, importance: opts.importance, clipWeights: opts.clipWeights });
  const { q, stats } = gptqRows(w, n, k, f, qz, opts);
  return { bytes: qz.finish(), q, stats };
}
