/**
 * Keeping PGD feasible for the searched types (K-quants, IQ4), every step rather than once at the end
 * (issue 16, session 29):
 *
 *   1. the fit's null space: a searched type's sub-block scale (and minimum) is a weighted least-squares
 *      fit of the sub-block's values to its codes (Q4_K/Q5_K: scale and minimum, weights sqrt(mean x²) +
 *      |x|; Q6_K, IQ4_NL, IQ4_XS: a scale alone, weights x²). With the codes held, the fit is (to first
 *      order) a linear function of the values, so a move of the sub-block orthogonal to the fit's
 *      gradients leaves the fitted scale/min, and so their stored 6-bit (or 8-bit, f16) codes, where
 *      they are. `fitDirections` builds those gradients (orthonormal, over the free elements of the box)
 *      from the malicious model's levels; `projectFit` removes their component from each sub-block's
 *      displacement (alternating with the box clamp, so the result is inside the box);
 *   2. the bytes, every step: `keepBytes` re-quantizes every block; a block whose bytes differ from the
 *      target goes back to its last values that gave them (the previous step's), then takes its new
 *      values sub-block by sub-block (all of the step, else half, a quarter, else none) as long as the bytes hold.
 *      The weights therefore give the target bytes after every step, and later steps build on the moves
 *      that were kept (the repair after PGD has nothing left to do).
 */
import { BlockGrids, type BlockCodec } from '../algos/block-codec.js';
import { subBlockOf } from './boxes.js';
import type { Box } from './pgd.js';

export interface FitDirections {
  sub: number;
  /** per element, one or two orthonormal directions per sub-block (0 on pinned elements) */
  u: Float32Array[];
}

/**
 * The fit gradients of every sub-block of `wm` (the malicious weights) for `codec`, restricted to the
 * elements the box leaves free, orthonormalized per sub-block.
 */
export function fitDirections(codec: BlockCodec, wm: Float32Array, box: Box): FitDirections {
  const bs = codec.blockSize;
  const sub = subBlockOf(codec);
  const withMin = /^Q[45]_K$/i.test(codec.name);
  const nDir = withMin ? 2 : 1;
  const u = Array.from({ length: nDir }, () => new Float32Array(wm.length));
  const grids = new BlockGrids(codec);
  const bytes = new Uint8Array(codec.blockBytes);
  const lv = new Float64Array(sub);
  const a = new Float64Array(sub);
  const b = new Float64Array(sub);
  for (let xo = 0; xo < wm.length; xo += bs) {
    codec.quantize(wm, xo, bytes, 0);
    grids.load(0, bytes, 0);
    for (let s0 = xo; s0 < xo + bs; s0 += sub) {
      let ss = 0;
      for (let j = 0; j < sub; j++) {
        const x = wm[s0 + j];
        lv[j] = grids.values[grids.nearest(0, s0 - xo + j, x)];
        ss += x * x;
      }
      const free = (j: number) => box.hi[s0 + j] > box.lo[s0 + j];
      if (withMin) {
        // scale and min of a weighted affine fit: gradients span{ω, ω·level}, ω = sqrt(mean x²) + |x|
        const av = Math.sqrt(ss / sub);
        for (let j = 0; j < sub; j++) {
          const om = free(j) ? av + Math.abs(wm[s0 + j]) : 0;
          a[j] = om;
          b[j] = om * lv[j];
        }
      } else {
        // s = Σ x³ q / Σ x² q² (weights x², q ∝ level): ∂s/∂x_i ∝ 3 x_i² q_i S2 − 2 x_i q_i² S1
        let s1 = 0;
        let s2 = 0;
        for (let j = 0; j < sub; j++) {
          const x = wm[s0 + j];
          s1 += x * x * x * lv[j];
          s2 += x * x * lv[j] * lv[j];
        }
        for (let j = 0; j < sub; j++) {
          const x = wm[s0 + j];
          a[j] = free(j) ? 3 * x * x * lv[j] * s2 - 2 * x * lv[j] * lv[j] * s1 : 0;
        }
      }
      // Gram-Schmidt
      let na = 0;
      for (let j = 0; j < sub; j++) na += a[j] * a[j];
      na = Math.sqrt(na);
      if (na > 0) for (let j = 0; j < sub; j++) a[j] /= na;
      for (let j = 0; j < sub; j++) u[0][s0 + j] = a[j];
      if (withMin) {
        let d = 0;
        for (let j = 0; j < sub; j++) d += a[j] * b[j];
        let nb = 0;
        for (let j = 0; j < sub; j++) {
          b[j] -= d * a[j];
          nb += b[j] * b[j];
        }
        nb = Math.sqrt(nb);
        // a second direction only when it is not (numerically) the first
        for (let j = 0; j < sub; j++) u[1][s0 + j] = nb > 1e-6 * (na || 1) ? b[j] / nb : 0;
      }
    }
  }
  return { sub, u };
}

/**
 * Remove the fit gradients' component from each sub-block's displacement w − wm, clamp to the box;
 * `iters` rounds (the clamp breaks the projection a little, the next round repairs most of it).
 */
export function projectFit(dirs: FitDirections, w: Float32Array, wm: Float32Array, box: Box, iters = 3): void {
  const { sub, u } = dirs;
  for (let s0 = 0; s0 < w.length; s0 += sub)
    for (let it = 0; it < iters; it++) {
      for (const v of u) {
        let d = 0;
        for (let j = s0; j < s0 + sub; j++) d += v[j] * (w[j] - wm[j]);
        if (d === 0) continue;
        for (let j = s0; j < s0 + sub; j++) if (v[j] !== 0) w[j] = Math.fround(w[j] - d * v[j]);
      }
      for (let j = s0; j < s0 + sub; j++) w[j] = w[j] < box.lo[j] ? box.lo[j] : w[j] > box.hi[j] ? box.hi[j] : w[j];
    }
}

export interface KeepStats {
  /** blocks whose bytes differed after the step */
  changed: number;
  /** sub-blocks that went back to their previous values */
  reverted: number;
  /** sub-blocks that kept half or a quarter of their step */
  halved: number;
}

/**
 * Every block of `w` whose bytes (by `codec`) differ from `want` returns to `prev` (its last values that
 * gave `want`) and then takes its new values sub-block by sub-block (all of the move, else half, else
 * none) while the bytes hold. Afterwards `prev` = `w`, and every block of `w` quantizes to `want`.
 * `raw` (optional): the values before a projection; a block whose raw values give `want` takes them.
 */
export function keepBytes(codec: BlockCodec, w: Float32Array, prev: Float32Array, want: Uint8Array, stats: KeepStats, raw?: Float32Array): void {
  const bs = codec.blockSize;
  const nb = codec.blockBytes;
  const sub = subBlockOf(codec);
  const q = new Uint8Array(nb);
  const moved = new Float32Array(bs);
  const same = (xo: number, bo: number): boolean => {
    codec.quantize(w, xo, q, 0);
    for (let i = 0; i < nb; i++) if (q[i] !== want[bo + i]) return false;
    return true;
  };
  for (let xo = 0, bo = 0; xo < w.length; xo += bs, bo += nb) {
    if (raw) {
      // the move before projectFit, where it keeps the bytes (a block that gives them anyway)
      const p = w.slice(xo, xo + bs);
      w.set(raw.subarray(xo, xo + bs), xo);
      if (same(xo, bo)) {
        prev.set(w.subarray(xo, xo + bs), xo);
        continue;
      }
      w.set(p, xo);
    }
    if (same(xo, bo)) {
      prev.set(w.subarray(xo, xo + bs), xo);
      continue;
    }
    stats.changed++;
    moved.set(w.subarray(xo, xo + bs));
    w.set(prev.subarray(xo, xo + bs), xo);
    for (let s0 = 0; s0 < bs; s0 += sub) {
      let moves = false;
      for (let j = s0; j < s0 + sub; j++) if (moved[j] !== prev[xo + j]) moves = true;
      if (!moves) continue;
      let ok = false;
      for (let t = 1; t >= 0.25 && !ok; t /= 2) {
        for (let j = s0; j < s0 + sub; j++) w[xo + j] = t === 1 ? moved[j] : Math.fround(prev[xo + j] + t * (moved[j] - prev[xo + j]));
        ok = same(xo, bo);
        if (ok && t < 1) stats.halved++;
      }
      if (!ok) {
        for (let j = s0; j < s0 + sub; j++) w[xo + j] = prev[xo + j];
        stats.reverted++;
      }
    }
    prev.set(w.subarray(xo, xo + bs), xo);
  }
}
