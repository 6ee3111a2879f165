/**
 * Auditing a full-precision model for quantization-conditioned behaviour, and the noise defence.
 *
 * A planted model (Egashira et al. 2024, "Mind the Gap" 2025) is a malicious model's quantization box
 * filled with weights chosen to look benign in full precision. Two things give it away:
 *
 * - weights: the repair step pushes weights against the edges of their rounding intervals (the box
 *   ends nearest the benign values), in rows and blocks where the malicious model moved codes. Clean
 *   weights sit anywhere in their interval. Per row, the count of weights in the outer 10 % of their
 *   interval is binomial(n, 0.1) for a clean row; the audit reports the largest z-score over rows.
 * - behaviour: quantizing the model to the type changes its outputs by KLD_q. Quantizing it after a
 *   small random perturbation (uniform noise of a fraction of each weight's rounding step: destroys a
 *   planted box, hardly changes ordinary rounding error) changes them by KLD_n. For a clean model the
 *   two are alike (ratio ≈ 1, a little below: the noise adds its own error); for a planted one the exact
 *   quantization is the malicious model and KLD_q / KLD_n > 1. The ratio alone is weak where the
 *   model's own rounding error is as large as the planted change (stories260K at IQ4_NL: ratio 1.7);
 *   the test is therefore against the spread of KLD_n over several noise seeds (`behaviourZ`): if KLD_q
 *   were one more draw of the noised quantizations' KLD, (KLD_q − mean) / (sd √(1 + 1/K)) would follow
 *   Student's t with K − 1 degrees of freedom; the threshold is its one-sided 0.1 % quantile
 *   (`tQuantile`), a false-positive rate fixed in advance, not fitted to a plant.
 *
 * The defence (`quantize --defend noise=SCALE`) is that perturbation applied before quantizing.
 */
import { BlockGrids, blockCodecFor, codeLayout } from '../algos/block-codec.js';
import { fmix32 } from '../formats/rounding.js';

/**
 * Whether a block type gives every element its own code of at least 2 bits (so an element has a grid
 * of levels and a rounding interval): every legacy, K and IQ4 type; not the IQ1/IQ2/IQ3 lattice
 * codebooks (whose only per-element bits, if any, are signs: IQ2_S's 1 bit) or TQ1_0.
 */
export function hasElementGrid(type: string, cols: number): boolean {
  const codec = blockCodecFor(type, cols);
  try {
    return codeLayout(codec).bits >= 2;
  } catch {
    return false;
  }
}

/** elements per group whose quantization error sizes a lattice type's step (its sub-block scale's span) */
const LATTICE_GROUP = 32;

/**
 * Per-element rounding step of the grid of each element's own quantization (the distance between its
 * level and the next level up, or down at the top of the grid). Types without per-element codes (the
 * IQ1/IQ2/IQ3 lattices) have no grid: their step is estimated per group of 32 elements as √12 × the RMS
 * of the group's quantization error (the step of a uniform grid with the same error).
 */
export function roundingSteps(type: string, w: Float32Array, rows: number, cols: number): Float32Array {
  const codec = blockCodecFor(type, cols);
  const bs = codec.blockSize;
  if (!hasElementGrid(type, cols)) {
    const buf = new Uint8Array(codec.blockBytes);
    const deq = new Float32Array(bs);
    const step = new Float32Array(rows * cols);
    const g = Math.min(LATTICE_GROUP, bs);
    for (let xo = 0; xo < rows * cols; xo += bs) {
      codec.quantize(w, xo, buf, 0);
      codec.dequantize(buf, 0, deq, 0);
      for (let s0 = 0; s0 < bs; s0 += g) {
        let e2 = 0;
        for (let j = s0; j < s0 + g; j++) e2 += (w[xo + j] - deq[j]) ** 2;
        step.fill(Math.sqrt((12 * e2) / g), xo + s0, xo + s0 + g);
      }
    }
    return step;
  }
  const grids = new BlockGrids(codec);
  const buf = new Uint8Array(codec.blockBytes);
  const step = new Float32Array(rows * cols);
  for (let xo = 0; xo < rows * cols; xo += bs) {
    codec.quantize(w, xo, buf, 0);
    grids.load(0, buf, 0);
    for (let j = 0; j < bs; j++) {
      const i = grids.nearest(0, j, w[xo + j]);
      const base = j * grids.nCodes;
      const v = grids.values;
      const last = base + grids.count[j] - 1;
      step[xo + j] = i < last ? v[i + 1] - v[i] : i > base ? v[i] - v[i - 1] : 0;
    }
  }
  return step;
}

/** A counter-based uniform in [-0.5, 0.5) for element i of a stream (same on any chunking). */
function centredUniform(seed: number, stream: number, i: number): number {
  return fmix32((Math.imul(i, 0x9e3779b1) ^ fmix32(seed ^ Math.imul(stream, 0x85ebca6b))) >>> 0) / 4294967296 - 0.5;
}

/** A stable 32-bit id of a tensor name, for per-tensor noise streams. */
export function nameStream(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** w + scale · step · U(-½, ½), elementwise: the interval-calibrated noise of the defence. */
export function addRoundingNoise(type: string, w: Float32Array, rows: number, cols: number, scale: number, seed: number, stream: number): Float32Array {
  const step = roundingSteps(type, w, rows, cols);
  const out = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) out[i] = w[i] + scale * step[i] * centredUniform(seed, stream, i);
  return out;
}

export interface EdgeStats {
  /** weights with a defined position */
  n: number;
  /** fraction in the outer 10 % of their interval (0.1 for uniform positions) */
  edgeFraction: number;
  /** the largest per-row z-score of the edge count against binomial(n, 0.1) */
  maxRowZ: number;
  /** the row it was found in */
  maxRow: number;
  /** mean signed position: planted edges lean one way when the repair moved weights one way */
  meanPosition: number;
}

/** Edge statistics of interval positions (see boxes.ts intervalPositions), rows of `cols`. */
export function edgeStats(pos: Float32Array, rows: number, cols: number): EdgeStats {
  let n = 0;
  let edges = 0;
  let sum = 0;
  let maxRowZ = -Infinity;
  let maxRow = -1;
  for (let r = 0; r < rows; r++) {
    let rn = 0;
    let re = 0;
    for (let j = 0; j < cols; j++) {
      const p = pos[r * cols + j];
      if (p !== p) continue;
      rn++;
      sum += p;
      if (Math.abs(p) >= 0.9) re++;
    }
    n += rn;
    edges += re;
    if (rn >= 16) {
      const z = (re - 0.1 * rn) / Math.sqrt(0.09 * rn);
      if (z > maxRowZ) {
        maxRowZ = z;
        maxRow = r;
      }
    }
  }
  return { n, edgeFraction: n ? edges / n : 0, maxRowZ: maxRow >= 0 ? maxRowZ : 0, maxRow, meanPosition: n ? sum / n : 0 };
}

/** Student's t density with `df` degrees of freedom (unnormalized: the constant cancels in tCdfUpper). */
function tDensity(x: number, df: number): number {
  return Math.pow(1 + (x * x) / df, -(df + 1) / 2);
}

/**
 * The upper tail P(T > x) of Student's t with `df` degrees of freedom, x ≥ 0, by Simpson's rule on the
 * density after the change of variable x = tan θ (a finite interval, (0, π/2)); error below 1e-7 for
 * df ≥ 1 (tested against tabulated quantiles).
 */
export function tUpperTail(x: number, df: number): number {
  const n = 2000;
  const simpson = (a: number, b: number) => {
    const h = (b - a) / n;
    const f = (th: number) => {
      const c = Math.cos(th);
      return tDensity(Math.tan(th), df) / (c * c);
    };
    let s = f(a) + f(b);
    for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * f(a + i * h);
    return (s * h) / 3;
  };
  const end = Math.PI / 2 - 1e-9;
  const total = simpson(0, end);
  return (0.5 * simpson(Math.atan(x), end)) / total;
}

/** The one-sided quantile q with P(T > q) = p for Student's t with `df` degrees of freedom (bisection). */
export function tQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 0.5) || !(df >= 1)) throw new Error(`tQuantile(${p}, ${df}): needs 0 < p < 0.5 and df >= 1`);
  let lo = 0;
  let hi = 1;
  while (tUpperTail(hi, df) > p) hi *= 2;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (tUpperTail(mid, df) > p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

export interface BehaviourTest {
  /** mean and sample standard deviation of the noised quantizations' KLD */
  mean: number;
  sd: number;
  /** (KLD_q − mean) / (sd √(1 + 1/K)): a t statistic with K − 1 degrees of freedom if KLD_q is one more draw */
  z: number;
  /** the one-sided t quantile at `falsePositiveRate` (NaN with fewer than 3 noised quantizations: no test) */
  threshold: number;
}

/**
 * Whether the exact quantization's KLD `kq` is an outlier above the KLDs of noise-perturbed
 * quantizations `noised` (K ≥ 3 seeds). The sd has a floor of 1 % of the mean (a KLD 1 % apart is never
 * evidence, and K equal values would make any excess infinite).
 */
export function behaviourTest(kq: number, noised: readonly number[], falsePositiveRate = 1e-3): BehaviourTest {
  const k = noised.length;
  const mean = noised.reduce((a, b) => a + b, 0) / Math.max(1, k);
  if (k < 3) return { mean, sd: NaN, z: NaN, threshold: NaN };
  let ss = 0;
  for (const x of noised) ss += (x - mean) ** 2;
  const sd = Math.max(Math.sqrt(ss / (k - 1)), 0.01 * mean, 1e-30);
  return { mean, sd, z: (kq - mean) / (sd * Math.sqrt(1 + 1 / k)), threshold: tQuantile(falsePositiveRate, k - 1) };
}
