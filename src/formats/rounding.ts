/**
 * Rounding modes and the seeded random source of stochastic rounding.
 *
 * Every quantizer reduces to rounding a non-negative magnitude n (already divided by the quantum)
 * to an integer; `neg` says whether the original value was negative, which matters only for the
 * directed modes `up` (toward +inf) and `down` (toward -inf).
 */
import { fail } from '../errors.js';

export const ROUNDING_MODES = ['nearest-even', 'nearest-away', 'toward-zero', 'up', 'down', 'stochastic'] as const;
export type RoundingMode = (typeof ROUNDING_MODES)[number];

export const enum Rounding {
  NearestEven = 0,
  NearestAway = 1,
  TowardZero = 2,
  Up = 3,
  Down = 4,
  Stochastic = 5,
}

export function roundingCode(mode: RoundingMode | undefined): Rounding {
  if (mode === undefined) return Rounding.NearestEven;
  const i = ROUNDING_MODES.indexOf(mode);
  if (i < 0) fail(`unknown rounding mode '${String(mode)}' (valid: ${ROUNDING_MODES.join(', ')})`);
  return i as Rounding;
}

/** 2^32, the scale of the uniform random word used by stochastic rounding. */
const TWO32 = 4294967296;

/**
 * Round magnitude n >= 0 to an integer.
 * Stochastic: round up iff u < frac * 2^32 for a uniform 32-bit word u, so P(up) = ceil(frac*2^32)/2^32:
 * unbiased up to 2^-32 of one quantum.
 */
export function roundMagnitude(n: number, mode: Rounding, neg: boolean, u: number): number {
  const f = Math.floor(n);
  const frac = n - f; // exact: n has at most 53 significant bits
  if (frac === 0) return f;
  switch (mode) {
    case Rounding.NearestEven:
      return frac > 0.5 ? f + 1 : frac < 0.5 ? f : f % 2 === 0 ? f : f + 1;
    case Rounding.NearestAway:
      return frac >= 0.5 ? f + 1 : f;
    case Rounding.TowardZero:
      return f;
    case Rounding.Up:
      return neg ? f : f + 1;
    case Rounding.Down:
      return neg ? f + 1 : f;
    case Rounding.Stochastic:
      return u < frac * TWO32 ? f + 1 : f;
  }
}

/** Does this mode round magnitudes toward zero for this sign (so it can never overflow to inf)? */
export function roundsMagnitudeDown(mode: Rounding, neg: boolean): boolean {
  return mode === Rounding.TowardZero || (mode === Rounding.Down && !neg) || (mode === Rounding.Up && neg);
}

/** murmur3's 32-bit finalizer: a bijective avalanche mix. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Mix a user seed (any safe integer) once per call. */
export function seedKey(seed: number): number {
  if (!Number.isSafeInteger(seed)) fail(`seed must be an integer, got ${seed}`);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / TWO32) >>> 0;
  return fmix32(lo ^ fmix32(hi + 0x9e3779b9));
}

/**
 * The random word for element `index` (counter based, so results do not depend on how an array is
 * chunked or split over threads): fmix32(key ^ fmix32(index_lo * golden + index_hi)).
 */
export function randomWord(key: number, index: number): number {
  const lo = index >>> 0;
  const hi = Math.floor(index / TWO32) >>> 0;
  return fmix32((key ^ fmix32((Math.imul(lo, 0x9e3779b1) + hi) >>> 0)) >>> 0);
}
