/**
 * IEEE-like minifloats of any exponent/mantissa width (Pychop-style emulation), from one descriptor.
 * References: IEEE 754-2019; OCP 8-bit Floating Point Specification (OFP8) rev 1.0; OCP Microscaling
 * Formats (MX) v1.0 section 5 (FP6, FP4, E8M0).
 *
 * Value of a code with exponent field E and mantissa field M (m stored bits):
 *   E > 0 (or no zero binade):  (1 + M / 2^m) * 2^(E - bias)
 *   E = 0 with subnormals:       (M / 2^m) * 2^(1 - bias)
 */
import { fail } from '../errors.js';
import type { FloatFormat, FloatSpec } from './descriptor.js';
import { Rounding, roundMagnitude, roundsMagnitudeDown } from './rounding.js';

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // little-endian: high word at index 1

/** floor(log2(a)) for finite a > 0, exactly, from the float64 exponent field. */
export function floorLog2(a: number): number {
  f64[0] = a;
  const e = (u32[HI] >>> 20) & 0x7ff;
  if (e === 0) return floorLog2(a * 18446744073709551616) - 64; // float64 subnormal
  return e - 1023;
}

/** 2^k for integer k, exact for -1074 <= k <= 1023. */
export function exp2(k: number): number {
  return Math.pow(2, k);
}

export function defineFloat(spec: FloatSpec): FloatFormat {
  const { name, expBits, manBits, bias, specials } = spec;
  const signed = spec.signed ?? true;
  const subnormals = spec.subnormals ?? true;
  const hasZero = spec.hasZero ?? true;
  if (!Number.isInteger(expBits) || expBits < 1 || expBits > 11) fail(`${name}: exponent bits must be 1..11, got ${expBits}`);
  if (!Number.isInteger(manBits) || manBits < 0 || manBits > 52) fail(`${name}: mantissa bits must be 0..52, got ${manBits}`);
  if (!Number.isInteger(bias) || Math.abs(bias) > 1022) fail(`${name}: bias must be an integer in -1022..1022, got ${bias}`);
  const bits = (signed ? 1 : 0) + expBits + manBits;
  if (bits > 32) fail(`${name}: at most 32 bits in all, got ${bits}`);
  if (specials === 'ieee' && manBits === 0) fail(`${name}: 'ieee' specials need at least one mantissa bit (inf and NaN share the top exponent)`);
  if (specials === 'fnuz' && !signed) fail(`${name}: 'fnuz' needs a sign bit (its NaN is the negative-zero pattern)`);
  if (specials === 'ieee' && expBits < 2) fail(`${name}: 'ieee' specials need at least 2 exponent bits`);

  const maxE = 2 ** expBits - 1;
  const maxM = 2 ** manBits - 1;
  const emin = hasZero ? 1 - bias : -bias;
  // largest finite positive code
  let topE = maxE;
  let topM = maxM;
  if (specials === 'ieee') topE = maxE - 1;
  else if (specials === 'fn') {
    if (manBits > 0) topM = maxM - 1;
    else topE = maxE - 1;
  }
  const maxFinite = (1 + topM / 2 ** manBits) * exp2(topE - bias);
  const minNormal = exp2(emin);
  const minSubnormal = subnormals && hasZero && manBits > 0 ? exp2(emin - manBits) : minNormal;
  const specialsPerSign = specials === 'ieee' ? 2 ** manBits : specials === 'fn' ? 1 : 0;
  const zeroCodesPerSign = hasZero ? (subnormals ? 1 : 2 ** manBits) : 0;
  const positives = 2 ** (expBits + manBits) - specialsPerSign - zeroCodesPerSign;
  const finiteCount = (signed ? 2 * positives : positives) + (hasZero ? 1 : 0);
  const nanCode =
    specials === 'ieee' ? maxE * 2 ** manBits + 2 ** (manBits - 1)
    : specials === 'fn' ? maxE * 2 ** manBits + maxM
    : specials === 'fnuz' ? 2 ** (bits - 1)
    : -1;
  const infCode = specials === 'ieee' ? maxE * 2 ** manBits : -1;
  return Object.freeze({
    kind: 'float',
    name,
    description: spec.description ?? `e${expBits}m${manBits} minifloat, bias ${bias}`,
    bits,
    signed,
    expBits,
    manBits,
    bias,
    subnormals,
    hasZero,
    specials,
    emin,
    maxFinite,
    minNormal,
    minSubnormal,
    hasInf: specials === 'ieee',
    hasNaN: specials !== 'none',
    hasNegZero: signed && hasZero && specials !== 'fnuz',
    finiteCount,
    nanCode,
    infCode,
  });
}

/** Decode one code to its value (NaN for NaN codes, ±Infinity for inf codes). */
export function decodeFloat(f: FloatFormat, code: number): number {
  const m = f.manBits;
  const maxE = 2 ** f.expBits - 1;
  const s = f.signed ? Math.floor(code / 2 ** (f.bits - 1)) & 1 : 0;
  const E = Math.floor(code / 2 ** m) & maxE;
  const M = code % 2 ** m;
  if (f.specials === 'ieee' && E === maxE) return M === 0 ? (s ? -Infinity : Infinity) : NaN;
  if (f.specials === 'fn' && E === maxE && M === 2 ** m - 1) return NaN;
  if (f.specials === 'fnuz' && s === 1 && E === 0 && M === 0) return NaN;
  let v: number;
  if (f.hasZero && E === 0) v = f.subnormals ? M * exp2(f.emin - m) : 0;
  else v = (2 ** m + M) * exp2(E - f.bias - m);
  return s ? -v : v;
}

/** Is `code` the canonical encoding of its value (false for flushed subnormal patterns and duplicate NaNs)? */
export function isCanonicalFloatCode(f: FloatFormat, code: number): boolean {
  const v = decodeFloat(f, code);
  if (v !== v) return true; // every NaN pattern is a NaN; NaN codes are checked separately
  if (f.hasZero && !f.subnormals) {
    const E = Math.floor(code / 2 ** f.manBits) & (2 ** f.expBits - 1);
    if (E === 0 && code % 2 ** f.manBits !== 0) return false;
  }
  return true;
}

/** Positive code of an exactly representable magnitude r (0 < r <= maxFinite) on the format's grid. */
function magnitudeCode(f: FloatFormat, r: number): number {
  const m = f.manBits;
  if (f.hasZero && r < f.minNormal) return r / exp2(f.emin - m); // subnormal: E = 0
  const e = floorLog2(r);
  return (e + f.bias) * 2 ** m + (r / exp2(e - m) - 2 ** m);
}

/** Options already validated and lowered to numbers (see cast.ts). */
export interface LoweredCast {
  rounding: Rounding;
  saturate: boolean;
  nanToZero: boolean;
}

/**
 * Encode one value (a float32 value held in a JS number). `u` is the uniform 32-bit random word used
 * only by stochastic rounding.
 */
export function encodeFloat(f: FloatFormat, x: number, o: LoweredCast, u: number): number {
  const signBit = f.signed ? 2 ** (f.bits - 1) : 0;
  if (x !== x) {
    if (f.hasNaN) return f.nanCode;
    if (o.nanToZero) return 0;
    fail(`NaN in input, and ${f.name} has no NaN (use --nan-to-zero to map NaN to 0)`);
  }
  const neg = x < 0 || (x === 0 && 1 / x < 0);
  let a = Math.abs(x);
  if (neg && !f.signed && a !== 0) {
    // below the range of an unsigned format
    if (o.saturate || !f.hasNaN) return 0; // code 0: zero, or the smallest value when there is no zero
    return f.nanCode;
  }
  const sgn = neg && f.signed ? signBit : 0;
  if (a === Infinity) {
    if (f.hasInf) return sgn + f.infCode;
    if (o.saturate) return sgn + magnitudeCode(f, f.maxFinite);
    return f.specials === 'fnuz' ? f.nanCode : sgn + f.nanCode;
  }
  let r: number;
  const m = f.manBits;
  if (a >= f.minNormal) {
    const q = exp2(floorLog2(a) - m);
    r = roundMagnitude(a / q, o.rounding, neg, u) * q;
  } else if (f.hasZero) {
    const q = f.subnormals ? exp2(f.emin - m) : f.minNormal;
    r = roundMagnitude(a / q, o.rounding, neg, u) * q;
  } else {
    r = f.minNormal; // no zero: the smallest value is the nearest in every mode
  }
  if (r > f.maxFinite) {
    if (o.saturate || roundsMagnitudeDown(o.rounding, neg)) r = f.maxFinite;
    else if (f.hasInf) return sgn + f.infCode;
    else return f.specials === 'fnuz' ? f.nanCode : sgn + f.nanCode;
  }
  if (r === 0) return f.hasNegZero ? sgn : 0;
  return sgn + magnitudeCode(f, r);
}
