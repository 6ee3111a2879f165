/**
 * Integer formats intN (two's complement, [-2^(N-1), 2^(N-1)-1]) and uintN ([0, 2^N-1]).
 * Codes: the N-bit pattern (two's complement for signed).
 */
import { fail } from '../errors.js';
import type { IntFormat } from './descriptor.js';
import type { LoweredCast } from './float.js';
import { roundMagnitude } from './rounding.js';

export function defineInt(bits: number, signed: boolean): IntFormat {
  if (!Number.isInteger(bits) || bits < 2 || bits > 16) fail(`integer formats have 2..16 bits, got ${bits}`);
  const qmin = signed ? -(2 ** (bits - 1)) : 0;
  const qmax = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  return Object.freeze({
    kind: 'int',
    name: `${signed ? 'int' : 'uint'}${bits}`,
    description: `${signed ? 'signed two\'s complement' : 'unsigned'} ${bits}-bit integer`,
    bits,
    signed,
    qmin,
    qmax,
    expBits: 0,
    manBits: signed ? bits - 1 : bits,
    bias: 0,
    maxFinite: qmax,
    minNormal: 1,
    minSubnormal: 1,
    hasInf: false,
    hasNaN: false,
    hasNegZero: false,
    finiteCount: qmax - qmin + 1,
  });
}

export function decodeInt(f: IntFormat, code: number): number {
  return f.signed && code >= 2 ** (f.bits - 1) ? code - 2 ** f.bits : code;
}

/** Round to an integer in the chosen mode and clamp to [qmin, qmax] (integers always saturate). */
export function encodeInt(f: IntFormat, x: number, o: LoweredCast, u: number): number {
  if (x !== x) {
    if (o.nanToZero) return 0;
    fail(`NaN in input, and ${f.name} has no NaN (use --nan-to-zero to map NaN to 0)`);
  }
  const neg = x < 0;
  const a = Math.abs(x);
  let q = a === Infinity ? Infinity : roundMagnitude(a, o.rounding, neg, u);
  if (neg) q = -q;
  if (q < f.qmin) q = f.qmin;
  else if (q > f.qmax) q = f.qmax;
  return q < 0 ? q + 2 ** f.bits : q === 0 ? 0 : q;
}
