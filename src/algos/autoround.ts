/**
 * AutoRound (Cheng et al. 2023, "Optimize Weight Rounding via Signed Gradient Descent"): learn, per
 * element, a rounding offset v in [-0.5, 0.5] (the element rounds up or down: q = lo or hi, the two grid
 * levels around w, hi when t + v >= 0.5 with t = (w - lo) / (hi - lo)) and, per block, a clip ratio
 * alpha (the block's grid is the codec's own grid for the block w * alpha, so the codec keeps choosing
 * its scales: any block codec, GGML K-quants and IQ4_XS included), by signed gradient descent on the
 * layer's output error over the calibration inputs:
 *
 *   L(Q) = sum_rows (q - w) H (q - w)^T,   H = 2 X^T X / N           (|| X W^T - X Q^T ||^2 up to scale)
 *   dL/dv  = 2 G (hi - lo)   (straight-through: q = lo + (hi - lo) (t + v)),   G = (Q - W) H
 *   dL/dalpha_b = 2 sum_{j in b} G_j q_j / alpha   (the grid scales with alpha)
 *   v -= lr_i sign(dL/dv),  alpha -= lr_i sign(dL/dalpha),  lr_i = lr (1 - i / iters)  (AutoRound's decay)
 *
 * The exact gradient is kept as G = E H (E = Q - W): one product at the start, then every flip of an
 * element (r, c) by delta adds delta H[c, :] to row r of G (Gauss-Seidel within a sweep), so a sweep
 * costs n k plus k per flip instead of a product. L is a sum over rows (each row's error through H),
 * so every decision is a row's own: each row's L is tracked exactly (delta L = 2 delta G_rc +
 * delta^2 H_cc), each row keeps its best choice of each phase (AutoRound keeps its best iterate). The
 * clip ratios move continuously and the grids are rebuilt `regrids` times: a block takes its new grid
 * when that lowers L with the rest of its row fixed, and a row's rebuild that raises its L is undone.
 * A row's result therefore depends on that row alone: autoRoundBlocksParallel (pipeline/gptq-parts.ts)
 * splits the rows over threads with the same bytes. The sweep and G = E H run in WebAssembly SIMD
 * (kernels/autoround.ts, bit-exact with its scalar reference).
 *
 * The loss is the linear's own output error (AutoRound's objective applied per linear, with the exact
 * full-batch gradient from H, not per transformer block on minibatches): what GPTQ minimizes greedily.
 * `init` starts from another method's grids and choices (GPTQ's bytes: "gptq+autoround"); the clip
 * ratios are then not learned (GPTQ chose the grids).
 */
import { fail } from '../errors.js';
import { BlockGrids, codeLayout, setCodes, type BlockCodec } from './block-codec.js';
import { CLIP_RATIOS } from './blockwise.js';
import { autoRoundWork } from '../kernels/autoround.js';
import { clipSearchKernel } from '../kernels/gptq.js';

export interface AutoRoundOptions {
  /** sign-gradient iterations (sweeps over the matrix); default 200 (the paper's; the pipeline's default is 100) */
  iters?: number;
  /** step of v and alpha at the first iteration, decayed linearly to 0; default 1 / iters */
  lr?: number;
  /** learn per-block clip ratios (default true; off with `init`) */
  clip?: boolean;
  /** how many times the clip ratios' grids are rebuilt during the run (default 4) */
  regrids?: number;
  /** range of the clip ratio (default [0.5, 1.25]: 1 is the codec's own choice of scales) */
  alphaMin?: number;
  alphaMax?: number;
  /** per-column importance for codecs that have an importance path (diag H) */
  importance?: Float32Array;
  /** start from these blocks and values (another method's result, e.g. GPTQ's) */
  init?: { bytes: Uint8Array; q: Float32Array };
  /** the WebAssembly kernels (default: unless turned off by setAutoRoundKernelsFast); false: the references */
  fast?: boolean;
}

export interface AutoRoundStats {
  /** L at the start (round to nearest on the initial grids, or the init's values) and at the end */
  lossStart: number;
  loss: number;
  /** elements that end on a level other than their start */
  changed: number;
  seconds: number;
}

/**
 * AutoRound of w (n x k, row-major, a row an output channel) into codec blocks, with the input Hessian
 * h (k x k, f64). Returns the codec's bytes and their exact values.
 */
export function autoRoundBlocks(c: BlockCodec, w: Float32Array, n: number, k: number, h: Float64Array | Float32Array, opts: AutoRoundOptions = {}): { bytes: Uint8Array; q: Float32Array; stats: AutoRoundStats } {
  const t0 = performance.now();
  const bs = c.blockSize;
  if (k % bs !== 0) fail(`AutoRound: row length ${k} is not a multiple of the block size ${bs} of ${c.name}`);
  if (w.length !== n * k || h.length !== k * k) fail('AutoRound: weight or Hessian has the wrong size');
  const iters = opts.iters ?? 200;
  if (!(iters >= 0 && Number.isInteger(iters))) fail(`AutoRound: iterations must be a whole number >= 0, got ${iters}`);
  const lr = opts.lr || 1 / Math.max(1, iters);
  const aMin = opts.alphaMin ?? 0.5;
  const aMax = opts.alphaMax ?? 1.25;
  const init = opts.init;
  const learnClip = (opts.clip ?? true) && !init;
  const regrids = learnClip ? Math.max(0, opts.regrids ?? 4) : 0;
  const nb = k / bs;
  const nbytes = c.blockBytes;
  const imp = opts.importance;
  if (imp && imp.length !== k) fail(`AutoRound: importance has ${imp.length} values for rows of ${k}`);
  const work = autoRoundWork(n, k, bs, opts.fast);
  const { H, hd, G, E, v, ch, gAlpha } = work;
  H.set(h);
  for (let i = 0; i < k; i++) hd[i] = H[i * k + i];
  const grids = new BlockGrids(c, 1);
  const N = n * k;

  // per element: the two levels around w and their codes, t, v, the choice (1 = hi)
  // an affine grid's brackets and regrid's terms on the WebAssembly workspace (aw): the weights copied there
  const aw = work.affine;
  aw?.W.set(w);
  const lv: Levels = { lo: work.lo, hi: work.hi, t: work.t, loC: aw ? aw.loC : new Uint16Array(N), hiC: aw ? aw.hiC : new Uint16Array(N) };
  const { lo, hi, loC, hiC, t } = lv;
  const bytes = init ? Uint8Array.from(init.bytes) : new Uint8Array(n * nb * nbytes);
  if (init && (init.bytes.length !== n * nb * nbytes || init.q.length !== N)) fail('AutoRound: the initial blocks have the wrong size');
  const alpha = new Float32Array(n * nb).fill(1);
  const shrunk = new Float32Array(bs);

  /** the codec's header (scales) for block blk of w shrunk by ratio a, into out[oo ..] */
  const header = (blk: number, a: number, out: Uint8Array, oo: number) => {
    const xo = blk * bs;
    const im = imp?.subarray((blk % nb) * bs, (blk % nb + 1) * bs);
    if (a === 1) return c.quantize(w, xo, out, oo, im);
    if (c.snap && c.clipHeader) return c.clipHeader(w, xo, a, out, oo);
    for (let j = 0; j < bs; j++) shrunk[j] = Math.fround(w[xo + j] * a);
    c.quantize(shrunk, 0, out, oo, im);
  };
  // ---- start: grids (the init's, or the best clip ratio by diag(H)-weighted error), choices ----------
  const cand = new Uint8Array(nbytes);
  const cl: Levels = aw ? aw.cl : newLevels(bs);
  const { lo: cL, hi: cU, loC: cLC, hiC: cUC, t: cT } = cl;
  /** block blk's levels into the element arrays (out = lv, o = its first element) or into cl (o = 0) */
  const bracket = (blk: number, src: Uint8Array, so: number, out: Levels, o: number, around?: Float32Array) => {
    const g = aw && !around ? affineGrid(c, grids.nCodes, src, so) : undefined;
    if (!aw || !g?.n) return bracketBlock(grids, w, blk, src, so, out, o, around);
    aw.gv.set(g.gv.subarray(0, g.n));
    aw.gc.set(g.gc.subarray(0, g.n));
    aw.bracket(blk * bs, g.n, out === cl);
  };
  const blockErr = (xo: number, cl: Float32Array, cu: Float32Array, ct: Float32Array) => {
    let e = 0;
    const c0 = xo % k; // a block lies within one row (k % bs = 0)
    for (let j = 0; j < bs; j++) {
      const q = ct[j] >= 0.5 ? cu[j] : cl[j];
      const d = q - w[xo + j];
      e += hd[c0 + j] * d * d;
    }
    return e;
  };
  /** the candidate's levels (cl) into the element arrays at xo (loops: faster than five typed-array copies of one block) */
  const takeLevels = (xo: number) => {
    for (let j = 0; j < bs; j++) {
      lo[xo + j] = cL[j];
      hi[xo + j] = cU[j];
      loC[xo + j] = cLC[j];
      hiC[xo + j] = cUC[j];
      t[xo + j] = cT[j];
    }
  };
  const ratios = learnClip && codeLayout(c).bits <= 6 ? CLIP_RATIOS : [1];
  // codecs with a closed-form grid rank the ratios by their nearest values (snap) and bracket the winner only
  const snapped = c.snap && c.clipHeader && ratios.length > 1 ? new Float32Array(bs) : undefined;
  // an affine grid ranks them in WebAssembly (GPTQ's clip search: the same errors, the first least)
  const affine = snapped && work.fast ? c.affine : undefined;
  const ks = affine ? clipSearchKernel(bs, ratios.length) : null;
  const heads = ks ? new Uint8Array(ratios.length * nbytes) : undefined;
  /** the winning ratio of block blk by the kernel, or -1 where it does not apply (see rankAffine) */
  const rankAffine = (blk: number, xo: number): number => {
    if (!ks || !affine || !heads) return -1;
    const c0 = xo % k;
    for (let j = 0; j < bs; j++) {
      const x = w[xo + j];
      const d = hd[c0 + j];
      // finite errors (the loop's first least is then the kernel's): finite x and weights of sane size
      if (!(Math.abs(x) <= 1e15) || !(Math.abs(d) <= 1e30)) return -1;
      ks.x[j] = x;
      ks.w[j] = d;
    }
    affine.clipHeaders(w, xo, ratios, heads, 0);
    for (let r = 0; r < ratios.length; r++) {
      affine.params(heads, r * nbytes, ks.cand, 2 * r);
      const sc = ks.cand[2 * r];
      if (!(sc > 0) || sc === Infinity) return -1;
    }
    return ks.run(bs, ratios.length, affine.lo, affine.hi);
  };
  for (let blk = 0; blk < n * nb; blk++) {
    const at = blk * nbytes;
    const xo = blk * bs;
    if (init) {
      bracket(blk, bytes, at, lv, xo, init.q);
      chooseStart(lv, init.q, ch, v, xo, bs);
      continue;
    }
    let best = Infinity;
    if (snapped) {
      const won = rankAffine(blk, xo);
      if (won >= 0) alpha[blk] = ratios[won];
      else for (const r of ratios) {
        c.clipHeader!(w, xo, r, cand, 0);
        c.snap!(cand, 0, w, xo, snapped, 0);
        let e = 0;
        const c0 = xo % k;
        for (let j = 0; j < bs; j++) {
          const d = snapped[j] - w[xo + j];
          e += hd[c0 + j] * d * d;
        }
        if (e < best) (best = e), (alpha[blk] = r);
      }
      header(blk, alpha[blk], cand, 0);
      bracket(blk, cand, 0, lv, xo); // the winner's levels straight into the element arrays
      bytes.set(cand, at);
      for (let j = 0; j < bs; j++) ch[xo + j] = t[xo + j] >= 0.5 ? 1 : 0;
      continue;
    }
    for (const r of ratios) {
      header(blk, r, cand, 0);
      bracket(blk, cand, 0, cl, 0);
      const e = blockErr(xo, cL, cU, cT);
      if (e < best) {
        best = e;
        alpha[blk] = r;
        bytes.set(cand, at);
        takeLevels(xo);
      }
    }
    for (let j = 0; j < bs; j++) ch[xo + j] = t[xo + j] >= 0.5 ? 1 : 0;
  }
  const startChoice = scratch('startChoice', Uint8Array, N, ch);
  const startLo = scratch('startLo', Float32Array, N, lo);

  // ---- exact loss and gradient, per row (every decision below is a row's own: rows split over threads
  // give the same bytes) ----------------------------------------------------------------------------------
  const rowLoss = new Float64Array(n);
  /** E and G of rows r0..r1 from their choices; their exact losses */
  const refresh = (r0: number, r1: number): void => {
    for (let e = r0 * k; e < r1 * k; e++) E[e] = (ch[e] ? hi[e] : lo[e]) - w[e];
    work.gradRows(r0, r1); // G = E H (H symmetric)
    for (let r = r0; r < r1; r++) {
      let s = 0;
      for (let e = r * k; e < (r + 1) * k; e++) s += E[e] * G[e];
      rowLoss[r] = s;
    }
  };
  const total = () => rowLoss.reduce((a, b) => a + b, 0);
  refresh(0, n);
  const lossStart = total();
  const best = scratch('best', Uint8Array, N, ch);
  const bestLoss = Float64Array.from(rowLoss);
  const gridAlpha = Float32Array.from(alpha);
  /** regrid's copy of the state before a rebuild (allocated at the first) */
  let saved: { bytes: Uint8Array; lo: Float32Array; hi: Float32Array; loC: Uint16Array; hiC: Uint16Array; t: Float32Array; ch: Uint8Array } | undefined;
  const phase = regrids > 0 ? Math.max(1, Math.floor(iters / (regrids + 1))) : iters + 1;

  /**
   * Every row back to the best choice of this phase, with exact G and L. A sweep only takes flips that
   * lower its row's L, so a row is nearly always at its best already: its G and L, followed flip by flip,
   * stay as they are (no product for it).
   */
  const restoreBest = () => {
    const back = new Uint8Array(n);
    for (let r = 0; r < n; r++)
      if (bestLoss[r] < rowLoss[r]) {
        ch.set(best.subarray(r * k, (r + 1) * k), r * k);
        back[r] = 1;
      }
    runs(back, refresh);
    best.set(ch);
    bestLoss.set(rowLoss);
  };
  /** f on each run of consecutive marked rows */
  function runs(mark: Uint8Array, f: (r0: number, r1: number) => void): void {
    for (let r = 0; r < n; ) {
      if (!mark[r]) {
        r++;
        continue;
      }
      let r1 = r;
      while (r1 < n && mark[r1]) r1++;
      f(r, r1);
      r = r1;
    }
  }

  for (let it = 0; it < iters; it++) {
    const step = lr * (1 - it / iters);
    if (learnClip) gAlpha.fill(0);
    // one sweep per row: every element's offset steps against its gradient's sign; a proposed flip is
    // taken when it lowers the row's L, and row r of G follows it at once
    for (let r = 0; r < n; r++) {
      rowLoss[r] += work.sweepRow(r, step, learnClip);
      if (rowLoss[r] < bestLoss[r]) {
        bestLoss[r] = rowLoss[r];
        best.set(ch.subarray(r * k, (r + 1) * k), r * k);
      }
    }
    if (learnClip) for (let b = 0; b < n * nb; b++) {
      const g = gAlpha[b];
      if (g !== 0) alpha[b] = Math.min(aMax, Math.max(aMin, alpha[b] - (g > 0 ? step : -step)));
    }
    if (learnClip && (it + 1) % phase === 0 && it + 1 < iters) {
      restoreBest();
      regrid();
      best.set(ch);
      bestLoss.set(rowLoss);
    }
  }
  restoreBest();

  /**
   * Rebuild the grids of the blocks whose clip ratio moved; a block takes its new grid when that lowers
   * L with the rest of its row fixed (exact within the row: 2 delta.G + delta^T H_bb delta); a row's
   * rebuild is undone when its L rose (blocks of a row interact through H off the block diagonal).
   */
  function regrid(): void {
    // the state before the rebuild, copied into arrays allocated once (fresh arrays of the whole matrix
    // on every rebuild cost more than the copies: the first touch of their pages)
    saved ??= { bytes: scratch('savedBytes', Uint8Array, bytes.length), lo: scratch('savedLo', Float32Array, N), hi: scratch('savedHi', Float32Array, N), loC: scratch('savedLoC', Uint16Array, N), hiC: scratch('savedHiC', Uint16Array, N), t: scratch('savedT', Float32Array, N), ch: scratch('savedCh', Uint8Array, N) };
    saved.bytes.set(bytes), saved.lo.set(lo), saved.hi.set(hi), saved.loC.set(loC), saved.hiC.set(hiC), saved.t.set(t), saved.ch.set(ch);
    const before = Float64Array.from(rowLoss);
    const delta = work.delta;
    const moved = new Uint8Array(n);
    for (let blk = 0; blk < n * nb; blk++) {
      if (alpha[blk] === gridAlpha[blk]) continue;
      const xo = blk * bs;
      const c0 = (blk % nb) * bs;
      cand.set(bytes.subarray(blk * nbytes, (blk + 1) * nbytes));
      header(blk, alpha[blk], cand, 0);
      bracket(blk, cand, 0, cl, 0);
      let dl = 0;
      if (aw) dl = aw.regridDelta(xo);
      else
        for (let j = 0; j < bs; j++) {
          const e = xo + j;
          delta[j] = (cT[j] + v[e] >= 0.5 ? cU[j] : cL[j]) - (ch[e] ? hi[e] : lo[e]);
          dl += 2 * delta[j] * G[e];
        }
      dl += work.quadBlock(c0);
      if (!(dl < 0)) {
        alpha[blk] = gridAlpha[blk];
        continue;
      }
      moved[(blk / nb) | 0] = 1;
      gridAlpha[blk] = alpha[blk];
      bytes.set(cand, blk * nbytes);
      if (aw) aw.take(xo);
      else {
        takeLevels(xo);
        for (let j = 0; j < bs; j++) ch[xo + j] = cT[j] + v[xo + j] >= 0.5 ? 1 : 0;
      }
    }
    // the moved rows' exact L (runs of consecutive rows at once); undo the rows whose L rose
    runs(moved, refresh);
    const undo = new Uint8Array(n);
    for (let r = 0; r < n; r++) {
      if (!moved[r] || rowLoss[r] <= before[r]) continue;
      undo[r] = 1;
      const e0 = r * k;
      const e1 = e0 + k;
      bytes.set(saved.bytes.subarray(r * nb * nbytes, (r + 1) * nb * nbytes), r * nb * nbytes);
      lo.set(saved.lo.subarray(e0, e1), e0), hi.set(saved.hi.subarray(e0, e1), e0), loC.set(saved.loC.subarray(e0, e1), e0), hiC.set(saved.hiC.subarray(e0, e1), e0);
      t.set(saved.t.subarray(e0, e1), e0), ch.set(saved.ch.subarray(e0, e1), e0);
      alpha.set(gridAlpha.subarray(r * nb, (r + 1) * nb), r * nb);
    }
    runs(undo, refresh);
  }

  // ---- write the codes; the codec's dequantizer must give back every chosen value ---------------------
  const q = writeChoices(c, grids, bytes, lv, ch, n * nb);
  let changed = 0;
  for (let e = 0; e < N; e++) if (ch[e] !== startChoice[e] || lo[e] !== startLo[e]) changed++;
  return { bytes, q, stats: { lossStart, loss: total(), changed, seconds: (performance.now() - t0) / 1000 } };
}

type ScratchArray = Uint8Array | Uint16Array | Float32Array;
/** autoRoundBlocks' working copies, kept between calls on this thread (see scratch) */
const scratchArrays = new Map<string, ScratchArray>();

/**
 * The thread's working array `name` of n elements (a view of one kept between calls, grown when short),
 * holding `from` when given. Fresh arrays of a whole matrix on every linear took their pages from the
 * system at the first touch (~25 us a 4 KiB page on the bench machine). autoRoundBlocks returns none of
 * them and is not reentrant.
 */
function scratch<T extends ScratchArray>(name: string, type: { new (n: number): T }, n: number, from?: ArrayLike<number>): T {
  let a = scratchArrays.get(name) as T | undefined;
  if (!a || a.length < n || !(a instanceof type)) scratchArrays.set(name, (a = new type(n)));
  const view = a.subarray(0, n) as T;
  if (from) view.set(from);
  return view;
}

/** Per element: the two grid levels it may round to (lo <= hi), their codes, and t = (w - lo) / (hi - lo). */
export interface Levels {
  lo: Float32Array;
  hi: Float32Array;
  loC: Uint16Array;
  hiC: Uint16Array;
  t: Float32Array;
}

export const newLevels = (n: number): Levels => ({ lo: new Float32Array(n), hi: new Float32Array(n), loC: new Uint16Array(n), hiC: new Uint16Array(n), t: new Float32Array(n) });

/**
 * The levels of an affine block (affineLevels: sorted values and their codes, views valid until the next
 * call), or n = 0 where there are none (BlockGrids must list them)
 */
export function affineGrid(c: BlockCodec, nc: number, src: Uint8Array, so: number): { n: number; gv: Float32Array; gc: Uint16Array } {
  return { n: affineLevels(c, nc, src, so), gv: affineScratch.gv, gc: affineScratch.gc };
}

/** bracketBlock's levels of an affine block (sorted values, their codes) */
const affineScratch = { sz: new Float64Array(2), gv: new Float32Array(256), gc: new Uint16Array(256) };

/**
 * The levels of the block at src[so ..] of a codec with an affine grid (one scale and zero-point),
 * computed as its dequantizer does (GPTQ's loadGroup): sorted increasing, into affineScratch.gv / .gc;
 * returns their number, or 0 where BlockGrids must list them (no affine grid, a scale not > 0 and
 * finite, levels not finite and strictly increasing).
 */
function affineLevels(c: BlockCodec, nc: number, src: Uint8Array, so: number): number {
  const a = c.affine;
  if (!a || nc > affineScratch.gv.length) return 0;
  const { sz, gv, gc } = affineScratch;
  a.params(src, so, sz, 0);
  const s = sz[0];
  const z = sz[1];
  if (!(s > 0 && s !== Infinity)) return 0;
  const half = nc >> 1;
  for (let i = 0; i < nc; i++) {
    // sorted by value: signed codes from the most negative (half .. nc - 1, then 0 .. half - 1)
    const code = a.signed ? (i + half) % nc : i;
    const v = Math.fround((a.signed ? (code >= half ? code - nc : code) : code - z) * s);
    gv[i] = v;
    gc[i] = code;
    if (!(v - v === 0) || (i > 0 && !(v > gv[i - 1]))) return 0;
  }
  return nc;
}

/**
 * The levels around w of block blk (w's elements blk*bs ..) on the grid of src[so ..], into out at
 * element o; with `around` (a start's values): the start's level and its neighbour towards w.
 */
export function bracketBlock(grids: BlockGrids, w: Float32Array, blk: number, src: Uint8Array, so: number, out: Levels, o: number, around?: Float32Array): void {
  const bs = grids.codec.blockSize;
  const nCodes = grids.nCodes;
  const xo = blk * bs;
  const nAff = affineLevels(grids.codec, nCodes, src, so);
  if (nAff) {
    // an affine grid: every element's levels are the block's (the values and codes BlockGrids would list)
    // the levels are strictly increasing: nearestLevel's pick and its neighbour towards p (the general path
    // below) are the pair gv[l] <= p < gv[l + 1] inside the grid; at or below the first level (or NaN) the
    // first (with the second when p is on it), at or above the last the last twice. The first level above p
    // is found from an estimate on the grid's mean spacing, corrected to the exact bracket.
    const gv = affineScratch.gv;
    const gc = affineScratch.gc;
    const last = nAff - 1;
    const v0 = gv[0];
    const vLast = gv[last];
    const perLevel = last / (vLast - v0);
    const { lo, hi, loC, hiC, t } = out;
    for (let j = 0; j < bs; j++) {
      const x = w[xo + j];
      let p = x;
      if (around) {
        const a = around[xo + j];
        p = a + (x > a ? 1 : -1) * Math.max(1e-30, Math.abs(a) * 1e-5);
      }
      let l: number;
      let u: number;
      if (!(p > v0)) {
        l = 0;
        u = p >= v0 ? Math.min(last, 1) : 0;
      } else if (p >= vLast) l = u = last;
      else {
        l = Math.min(last - 1, Math.max(0, Math.floor((p - v0) * perLevel)));
        while (gv[l] > p) l--;
        while (gv[l + 1] <= p) l++;
        u = l + 1;
      }
      const vl = gv[l];
      const vu = gv[u];
      lo[o + j] = vl;
      hi[o + j] = vu;
      loC[o + j] = gc[l];
      hiC[o + j] = gc[u];
      t[o + j] = vu > vl ? Math.min(1, Math.max(0, (x - vl) / (vu - vl))) : 0;
    }
    return;
  }
  grids.load(0, src, so);
  for (let j = 0; j < bs; j++) {
    const x = w[xo + j];
    const a = around ? around[xo + j] : x;
    const p = around ? a + (x > a ? 1 : -1) * Math.max(1e-30, Math.abs(a) * 1e-5) : x;
    const i = grids.nearest(0, j, p);
    const base = j * nCodes;
    const last = base + grids.count[j] - 1;
    const val = grids.values[i];
    const l = p >= val ? i : Math.max(base, i - 1);
    const u = p >= val ? Math.min(last, i + 1) : i;
    const vl = grids.values[l];
    const vu = grids.values[u];
    out.lo[o + j] = vl;
    out.hi[o + j] = vu;
    out.loC[o + j] = grids.codes[l];
    out.hiC[o + j] = grids.codes[u];
    out.t[o + j] = vu > vl ? Math.min(1, Math.max(0, (x - vl) / (vu - vl))) : 0;
  }
}

/**
 * The choices (1 = hi) and offsets v that reproduce the start's values q on elements xo .. xo+len: t + v
 * at least `margin` past the threshold 0.5 on the chosen side (a start's choice against the nearest
 * level then survives the first steps of a noisy gradient).
 */
export function chooseStart(lv: Levels, q: Float32Array, ch: Uint8Array, v: Float32Array, xo: number, len: number, margin = 1e-4): void {
  for (let e = xo; e < xo + len; e++) {
    ch[e] = q[e] === lv.hi[e] && q[e] !== lv.lo[e] ? 1 : 0;
    const off = ch[e] ? Math.max(0, 0.5 + margin - lv.t[e]) : Math.min(0, 0.5 - margin - lv.t[e]);
    v[e] = Math.min(0.5, Math.max(-0.5, off));
  }
}

/** the bits of an f32 array (a view of the same elements) */
const bitsOf = (a: Float32Array) => new Int32Array(a.buffer, a.byteOffset, a.length);

/** Set the chosen codes into every block of `bytes`; returns the values, checked against the codec's own dequantizer. */
export function writeChoices(c: BlockCodec, grids: BlockGrids, bytes: Uint8Array, lv: Levels, ch: Uint8Array, nBlocks: number): Float32Array {
  const bs = c.blockSize;
  const codes = new Uint16Array(bs);
  const q = new Float32Array(nBlocks * bs);
  const check = new Float32Array(bs);
  // the chosen code and value (the value's bits) picked by a mask, not a branch: choices are unpredictable
  const { loC, hiC } = lv;
  const lo = bitsOf(lv.lo);
  const hi = bitsOf(lv.hi);
  const qBits = bitsOf(q);
  for (let blk = 0; blk < nBlocks; blk++) {
    const xo = blk * bs;
    for (let j = 0; j < bs; j++) {
      const e = xo + j;
      const m = -((ch[e] + 255) >> 8); // -1 when chosen (ch != 0), else 0
      codes[j] = loC[e] ^ ((loC[e] ^ hiC[e]) & m);
      qBits[e] = lo[e] ^ ((lo[e] ^ hi[e]) & m);
    }
    setCodes(grids.layout, bytes, blk * c.blockBytes, codes, bs);
    c.dequantize(bytes, blk * c.blockBytes, check, 0);
    for (let j = 0; j < bs; j++)
      if (check[j] !== q[xo + j]) fail(`internal error: ${c.name} block ${blk} decodes element ${j} to ${check[j]}, AutoRound chose ${q[xo + j]}`);
  }
  return q;
}
