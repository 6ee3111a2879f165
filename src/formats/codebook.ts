/**
 * Codebook (lookup-table) formats: a code is an index into a table of levels. NF4 is the QLoRA
 * table (Dettmers et al. 2023): the 16 levels at normal quantiles, normalized to [-1, 1], with an exact
 * zero. Rounding picks between the two levels around a value: nearest (ties to the even code of the
 * two, or away from zero), toward zero, up, down, or stochastic with P(upper) = (x - lo) / (hi - lo),
 * which is unbiased.
 */
import { fail } from '../errors.js';
import type { CodebookFormat } from './descriptor.js';
import type { LoweredCast } from './float.js';
import { Rounding } from './rounding.js';

export function defineCodebook(name: string, values: ArrayLike<number>, description?: string): CodebookFormat {
  const n = values.length;
  if (n < 2 || n > 65536) fail(`codebook ${name}: needs 2..65536 levels, got ${n}`);
  const levels = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = Number(values[i]);
    if (!Number.isFinite(v)) fail(`codebook ${name}: level ${i} is not a finite number (${values[i]})`);
    levels[i] = v;
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => levels[a] - levels[b] || a - b);
  const sortedValues = new Float64Array(n);
  const sortedCodes = new Uint16Array(n);
  let hasNegZero = false;
  let distinct = 0;
  for (let i = 0; i < n; i++) {
    sortedValues[i] = levels[order[i]];
    sortedCodes[i] = order[i];
    if (Object.is(levels[i], -0)) hasNegZero = true;
    if (i === 0 || sortedValues[i] !== sortedValues[i - 1]) distinct++;
  }
  const bits = Math.max(1, Math.ceil(Math.log2(n)));
  let maxAbs = 0;
  let minPos = Infinity;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(levels[i]);
    if (a > maxAbs) maxAbs = a;
    if (a > 0 && a < minPos) minPos = a;
  }
  return Object.freeze({
    kind: 'codebook',
    name,
    description: description ?? `codebook of ${n} levels`,
    bits,
    levels,
    sortedValues,
    sortedCodes,
    expBits: 0,
    manBits: 0,
    bias: 0,
    maxFinite: maxAbs,
    minNormal: minPos,
    minSubnormal: minPos,
    hasInf: false,
    hasNaN: false,
    hasNegZero,
    finiteCount: distinct,
  });
}

export function decodeCodebook(f: CodebookFormat, code: number): number {
  if (code >= f.levels.length) return NaN;
  return f.levels[code];
}

export function encodeCodebook(f: CodebookFormat, x: number, o: LoweredCast, u: number): number {
  if (x !== x) {
    if (o.nanToZero) x = 0;
    else fail(`NaN in input, and ${f.name} has no NaN (use --nan-to-zero to map NaN to 0)`);
  }
  const v = f.sortedValues;
  const n = v.length;
  if (x <= v[0]) return f.sortedCodes[0];
  if (x >= v[n - 1]) return f.sortedCodes[lastOf(v, n - 1)];
  // binary search: v[lo] <= x < v[lo + 1]
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >>> 1;
    if (v[mid] <= x) lo = mid;
    else hi = mid;
  }
  if (v[lo] === x) return f.sortedCodes[firstOf(v, lo)];
  hi = lo + 1;
  let up: boolean;
  switch (o.rounding) {
    case Rounding.NearestEven:
    case Rounding.NearestAway: {
      const mid = (v[lo] + v[hi]) / 2;
      if (x !== mid) up = x > mid;
      else if (o.rounding === Rounding.NearestAway) up = x > 0;
      else up = f.sortedCodes[hi] % 2 === 0 && f.sortedCodes[lo] % 2 !== 0 ? true : f.sortedCodes[lo] % 2 === 0 ? false : x > 0;
      break;
    }
    case Rounding.TowardZero:
      up = x < 0;
      break;
    case Rounding.Up:
      up = true;
      break;
    case Rounding.Down:
      up = false;
      break;
    case Rounding.Stochastic:
      up = u < ((x - v[lo]) / (v[hi] - v[lo])) * 4294967296;
      break;
  }
  return up ? f.sortedCodes[hi] : f.sortedCodes[lo];
}

function firstOf(v: Float64Array, i: number): number {
  while (i > 0 && v[i - 1] === v[i]) i--;
  return i;
}
function lastOf(v: Float64Array, i: number): number {
  return firstOf(v, i);
}
