/**
 * Quantization boxes ("Exploiting LLM Quantization", Egashira et al. 2024; "Mind the Gap", 2025): for
 * every weight, an interval [lo, hi] such that any tensor whose values all lie inside their intervals
 * quantizes to exactly the same bytes as the original. An attacker plants a model inside the box of a
 * malicious model; an auditor asks where a model's weights sit inside their intervals.
 *
 * Construction, for any block codec whose element grid lowbit can learn (block-codec.ts: every legacy
 * type, K-quants, IQ4_NL/IQ4_XS, MXFP4, ...):
 *   1. quantize the block; with its scales fixed, each element's grid of values is known, and its
 *      rounding interval is the half-way points to the neighbouring levels (nearest rounding);
 *   2. the elements that set the scales (largest magnitude, minimum, maximum) are pinned; each other
 *      element's interval ends are found by bisection with the block's real quantizer (the others at
 *      their values): quantizers round with the unrounded f32 scale, not the stored f16 one, so the
 *      true ends sit near, not at, the grid's half-way points;
 *   3. the box of the whole block is validated by re-quantizing at its corners (all low, all high) and
 *      at seeded random points inside; on a mismatch every interval of the block is halved and the
 *      validation repeated; a block that never validates keeps only its exact values (reported).
 * Quantizers with a search over scales (K-quants, IQ4) are where step 3 matters; for the closed-form
 * legacy types the box after step 2 validates at once. For the searched types ("Mind the Gap", 2025)
 * step 2 is replaced by a cheaper construction that keeps each sub-block's chosen scale and minimum:
 * the elements that start the search (each sub-block's minimum, maximum and largest magnitude) are
 * pinned, every other element keeps `gridFraction` of its rounding interval around its level (its code
 * is then the same given the same scales), never past its sub-block's minimum or maximum; the scales'
 * search sees nearly the same data and picks the same scales, which step 3 validates by re-quantizing. Rounding intervals here are the conservative
 * "strictly inside" ones: both ends are moved one float32 ulp inwards.
 */
import { fail } from '../errors.js';
import { BlockGrids, blockCodecFor, type BlockCodec } from '../algos/block-codec.js';
import { hasElementGrid } from './audit.js';
import { rngStream } from '../rng.js';

export interface QuantBox {
  /** the GGML type (or scheme) the box is for */
  readonly type: string;
  readonly rows: number;
  readonly cols: number;
  readonly lo: Float32Array;
  readonly hi: Float32Array;
  /** the bytes every point of the box quantizes to */
  readonly bytes: Uint8Array;
  /** blocks whose box could not be validated and keep only their exact values */
  readonly pinnedBlocks: number;
  readonly blocks: number;
}

export interface BoxOptions {
  /** random points inside each block's box checked by re-quantizing (default 8) */
  samples?: number;
  /** halvings before an element (or block) is pinned to its value (default 10) */
  shrinkSteps?: number;
  /** bisection steps finding each element's interval end (default 16: 2^-16 of the search range) */
  bisections?: number;
  seed?: number;
  /**
   * searched types (K-quants, IQ4; default: by name): the fraction of each element's rounding interval
   * kept around its level, instead of bisection (default 0.25)
   */
  gridFraction?: number;
  /**
   * searched types: 'corners' (default) also re-quantizes with every element of a sub-block / block at the
   * same end of its interval (the worst case for the scale search's fit, so boxes shrink a lot); 'random'
   * only at random points inside (wider boxes; a caller that moves weights coherently, e.g. PGD, must
   * re-check: src/audit/run.ts shrinkChangedBlocks); 'none' skips the re-quantizing validation (the
   * boxes are then only the construction's, a diagnostic upper bound: the caller must check every block)
   */
  validate?: 'corners' | 'random' | 'none';
  /**
   * searched types: each element's interval runs from its value to its level (dequantized value) and
   * `beyond` times that distance past the level ("Mind the Gap"'s error-based interval: moving toward the
   * levels moves each sub-block's least-squares scale and minimum toward the stored ones), instead of
   * `gridFraction` around the level
   */
  towardLevel?: { beyond: number };
  /**
   * searched types: pin whole the sub-blocks that set the super-block's f16 scales (largest sub-block
   * scale and minimum; default true). false leaves them their element intervals: a caller that checks
   * every block's bytes itself (run.ts keepEvery) can let them move where the f16 scales hold
   */
  pinSuperScales?: boolean;
}

/** the sub-block whose scale a searched type fits: 32 for Q4_K/Q5_K/IQ4, 16 for the other K types, else the block */
export function subBlockOf(c: BlockCodec): number {
  return /^(Q[45]_K|IQ4)/i.test(c.name) ? Math.min(32, c.blockSize) : /_K$/i.test(c.name) ? Math.min(16, c.blockSize) : c.blockSize;
}

/** the types whose quantizer searches its scales (their boxes are built and validated differently) */
export function searchesScales(type: string): boolean {
  return /_K$|^IQ/i.test(type);
}

const nextUp = (() => {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  return (x: number, dir: 1 | -1): number => {
    f[0] = x;
    if (x === 0) {
      u[0] = dir > 0 ? 1 : 0x80000001;
      return f[0];
    }
    if ((x > 0) === (dir > 0)) u[0]++;
    else u[0]--;
    return f[0];
  };
})();

function sameBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/** The box of a rows × cols tensor for a GGML type name (or block codec). */
export function quantizationBox(type: string | BlockCodec, w: Float32Array, rows: number, cols: number, o: BoxOptions = {}): QuantBox {
  const codec = typeof type === 'string' ? blockCodecFor(type, cols) : type;
  const bs = codec.blockSize;
  if (cols % bs !== 0) fail(`${codec.name}: rows of ${cols} are not a multiple of its block size ${bs}`);
  if (typeof type === 'string' && !hasElementGrid(type, cols)) fail(`${codec.name}: a lattice codebook type has no per-element rounding interval, so it has no quantization box (attackable types: the legacy, K and IQ4 types)`);
  const nb = codec.blockBytes;
  const blocks = (rows * cols) / bs;
  const bytes = new Uint8Array(blocks * nb);
  const lo = new Float32Array(rows * cols);
  const hi = new Float32Array(rows * cols);
  const grids = new BlockGrids(codec);
  const rand = rngStream('auditBoxes', o.seed ?? 7);
  const samples = o.samples ?? 8;
  const searched = searchesScales(codec.name);
  const fraction = o.gridFraction ?? 0.25;
  const corners = !searched || o.validate !== 'random';
  const sub = searched ? subBlockOf(codec) : bs;
  const steps = o.shrinkSteps ?? (searched ? 6 : 10);
  const bisections = o.bisections ?? 16;
  const trial = new Float32Array(bs);
  const tb = new Uint8Array(nb);
  let pinned = 0;
  const same = (b: number): boolean => {
    codec.quantize(trial, 0, tb, 0);
    return sameBytes(tb, 0, bytes, b * nb, nb);
  };
  for (let b = 0; b < blocks; b++) {
    const xo = b * bs;
    codec.quantize(w, xo, bytes, b * nb);
    grids.load(0, bytes, b * nb);
    // 1. rounding intervals on the block's grid
    for (let j = 0; j < bs; j++) {
      const x = w[xo + j];
      const i = grids.nearest(0, j, x);
      const base = j * grids.nCodes;
      const first = base;
      const last = base + grids.count[j] - 1;
      const v = grids.values;
      let l = i > first ? (v[i - 1] + v[i]) / 2 : -Infinity;
      let h = i < last ? (v[i] + v[i + 1]) / 2 : Infinity;
      // the outermost levels: allow as far as the other side of the level (beyond it the scale changes)
      if (l === -Infinity) l = v[i] - (h === Infinity ? 0 : h - v[i]);
      if (h === Infinity) h = v[i] + (v[i] - l);
      if (searched && o.towardLevel) {
        const e = x - v[i];
        const past = Math.min(Math.abs(e) * o.towardLevel.beyond, e > 0 ? v[i] - l : h - v[i]);
        l = e > 0 ? v[i] - past : x;
        h = e > 0 ? x : v[i] + past;
      } else if (searched) {
        l = v[i] - fraction * (v[i] - l);
        h = v[i] + fraction * (h - v[i]);
      }
      l = Math.fround(l);
      h = Math.fround(h);
      lo[xo + j] = Math.min(x, nextUp(l, 1));
      hi[xo + j] = Math.max(x, nextUp(h, -1));
    }
    // 2. every other element alone at both ends of its interval (the ones that set the scales, and those the
    //    quantizer rounds with an unrounded scale, shrink here)
    //    The elements that set the scales are pinned first: the largest magnitude (symmetric types),
    //    the minimum and the maximum (types with a minimum). Moving them moves every element's grid.
    //    (searched types: per sub-block, whose scale and minimum the search derives from them)
    let wMin = 0;
    let wMax = 0;
    for (let s0 = 0; s0 < bs; s0 += sub) {
      let jAbs = s0;
      let jMin = s0;
      let jMax = s0;
      for (let j = s0 + 1; j < s0 + sub; j++) {
        if (Math.abs(w[xo + j]) > Math.abs(w[xo + jAbs])) jAbs = j;
        if (w[xo + j] < w[xo + jMin]) jMin = j;
        if (w[xo + j] > w[xo + jMax]) jMax = j;
      }
      for (const j of [jAbs, jMin, jMax]) lo[xo + j] = hi[xo + j] = w[xo + j];
      // and no other element may become the new minimum or maximum
      wMin = nextUp(w[xo + jMin], 1);
      wMax = nextUp(w[xo + jMax], -1);
      for (let j = s0; j < s0 + sub; j++) {
        if (lo[xo + j] === hi[xo + j]) continue;
        lo[xo + j] = Math.min(w[xo + j], Math.max(lo[xo + j], wMin));
        hi[xo + j] = Math.max(w[xo + j], Math.min(hi[xo + j], wMax));
      }
    }
    if (searched && sub < bs && o.pinSuperScales !== false) {
      // the super-block's f16 scales are the largest sub-block scale and minimum over 63 (or the like):
      // a continuous function of those sub-blocks' values, so they are pinned whole
      let sBest = 0;
      let mBest = 0;
      let sMax = -Infinity;
      let mMax = -Infinity;
      const v = grids.values;
      for (let s0 = 0; s0 < bs; s0 += sub) {
        const base = s0 * grids.nCodes;
        const step = grids.count[s0] > 1 ? Math.abs(v[base + 1] - v[base]) : 0;
        const off = -v[base];
        if (step > sMax) { sMax = step; sBest = s0; }
        if (off > mMax) { mMax = off; mBest = s0; }
      }
      for (const s0 of new Set([sBest, mBest])) for (let j = s0; j < s0 + sub; j++) lo[xo + j] = hi[xo + j] = w[xo + j];
    }
    trial.set(w.subarray(xo, xo + bs));
    for (let j = 0; j < bs && !searched; j++) {
      const x = w[xo + j];
      for (const side of [0, 1] as const) {
        const arr = side ? hi : lo;
        if (arr[xo + j] === x) continue;
        // bisect between x (same bytes) and twice the grid's half-way point (a different level),
        // never past the block's minimum or maximum
        let pass = x;
        let bad = Math.fround(x + 2 * (arr[xo + j] - x));
        bad = side ? Math.min(bad, wMax) : Math.max(bad, wMin);
        trial[j] = bad;
        if (same(b)) pass = bad;
        else
          for (let k = 0; k < bisections; k++) {
            const mid = Math.fround((pass + bad) / 2);
            if (mid === pass || mid === bad) break;
            trial[j] = mid;
            if (same(b)) pass = mid;
            else bad = mid;
          }
        arr[xo + j] = pass;
        trial[j] = x;
      }
    }
    // 2b. searched types: each sub-block alone (the others at their values), since a sub-block's scale
    //     and minimum codes depend on its own values: corners and two random points; a sub-block that
    //     fails is halved up to 3 times, then pinned, so one sensitive sub-block does not pin the block
    if (searched && sub < bs && o.validate !== 'none')
      for (let s0 = 0; s0 < bs; s0 += sub) {
        let okS = false;
        for (let k = 0; k <= 3 && !okS; k++) {
          okS = true;
          for (let smp = 0; smp < 4 && okS; smp++) {
            trial.set(w.subarray(xo, xo + bs));
            for (let j = s0; j < s0 + sub; j++) {
              const u = smp === 0 && corners ? 0 : smp === 1 && corners ? 1 : rand() / 4294967296;
              trial[j] = Math.min(hi[xo + j], Math.max(lo[xo + j], Math.fround(lo[xo + j] + u * (hi[xo + j] - lo[xo + j]))));
            }
            okS = same(b);
          }
          if (!okS)
            for (let j = s0; j < s0 + sub; j++) {
              const x = w[xo + j];
              lo[xo + j] = k === 3 ? x : Math.fround(x - (x - lo[xo + j]) / 2);
              hi[xo + j] = k === 3 ? x : Math.fround(x + (hi[xo + j] - x) / 2);
            }
        }
      }
    // 3. the whole box: corners and random points
    let ok = searched && o.validate === 'none';
    for (let k = 0; k <= steps && !ok; k++) {
      ok = true;
      for (let s = 0; s < samples + 2 && ok; s++) {
        for (let j = 0; j < bs; j++) {
          const u = s === 0 && corners ? 0 : s === 1 && corners ? 1 : rand() / 4294967296;
          trial[j] = Math.fround(lo[xo + j] + u * (hi[xo + j] - lo[xo + j]));
          if (trial[j] < lo[xo + j]) trial[j] = lo[xo + j];
          if (trial[j] > hi[xo + j]) trial[j] = hi[xo + j];
        }
        ok = same(b);
      }
      if (!ok)
        for (let j = 0; j < bs; j++) {
          const x = w[xo + j];
          lo[xo + j] = k === steps ? x : Math.fround(x - (x - lo[xo + j]) / 2);
          hi[xo + j] = k === steps ? x : Math.fround(x + (hi[xo + j] - x) / 2);
        }
    }
    if (!ok) pinned++;
  }
  return { type: codec.name, rows, cols, lo, hi, bytes, pinnedBlocks: pinned, blocks };
}

/** The intersection of boxes of the same tensor for several types (empty intervals collapse to the value). */
export function intersectBoxes(w: Float32Array, boxes: readonly QuantBox[]): { lo: Float32Array; hi: Float32Array } {
  const lo = Float32Array.from(boxes[0].lo);
  const hi = Float32Array.from(boxes[0].hi);
  for (const b of boxes.slice(1))
    for (let i = 0; i < lo.length; i++) {
      lo[i] = Math.max(lo[i], b.lo[i]);
      hi[i] = Math.min(hi[i], b.hi[i]);
    }
  for (let i = 0; i < lo.length; i++) if (!(lo[i] <= w[i] && w[i] <= hi[i])) lo[i] = hi[i] = w[i];
  return { lo, hi };
}

/**
 * Where each weight sits in its rounding interval on the grid of its own quantization: -1 at the low
 * edge, 0 at the level, +1 at the high edge (relative to the half-way points). Clean weights spread
 * evenly over (-1, 1); a planted model piles weights against the edges. NaN for every element of a type
 * without per-element codes (IQ1/IQ2/IQ3 lattices), and outside the grid's range.
 */
export function intervalPositions(type: string, w: Float32Array, rows: number, cols: number): Float32Array {
  const codec = blockCodecFor(type, cols);
  // lattice codebooks (IQ1/IQ2/IQ3): no element has an interval of its own, every position is undefined
  if (!hasElementGrid(type, cols)) return new Float32Array(rows * cols).fill(NaN);
  const bs = codec.blockSize;
  const nb = codec.blockBytes;
  const grids = new BlockGrids(codec);
  const buf = new Uint8Array(nb);
  const pos = new Float32Array(rows * cols);
  for (let xo = 0; xo < rows * cols; xo += bs) {
    codec.quantize(w, xo, buf, 0);
    grids.load(0, buf, 0);
    for (let j = 0; j < bs; j++) {
      const x = w[xo + j];
      const i = grids.nearest(0, j, x);
      const base = j * grids.nCodes;
      const v = grids.values;
      const d = x - v[i];
      const half = d >= 0 ? (i < base + grids.count[j] - 1 ? (v[i + 1] - v[i]) / 2 : NaN) : i > base ? (v[i] - v[i - 1]) / 2 : NaN;
      pos[xo + j] = half > 0 ? Math.max(-1, Math.min(1, d / half)) : NaN; // NaN: outside the grid's range
    }
  }
  return pos;
}
