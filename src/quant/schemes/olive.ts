/**
 * OliVe (Guo et al., ISCA 2023): outlier-victim pair quantization. Elements are taken in adjacent
 * pairs (2i, 2i + 1) of a group. A normal value is a b-bit two's-complement integer in
 * [-(2^(b-1) - 1), 2^(b-1) - 1] times the group's scale s; the one code left over, -2^(b-1)
 * (binary 10..0), is the identifier. When a pair holds an outlier, its neighbour (the victim) is pruned
 * to 0 and its slot holds the identifier, and the outlier's slot holds an "abfloat" (adaptive biased
 * float): a sign bit and b - 1 magnitude bits m = (exponent e, one mantissa bit u), value
 * (1 + u / 2) 2^e 2^(b-1) s, so the outlier range starts just above the normal one:
 *   b = 4: normal -7..7, outliers ±{8, 12, 16, 24, 32, 48, 64, 96} s
 *   b = 3: normal -3..3, outliers ±{4, 6, 8, 12} s;   b = 2: normal -1..1, outliers ±{2, 3} s
 * Decoding a pair: slot 0 holds the identifier -> slot 0 is 0, slot 1 is an abfloat; else slot 1 holds
 * it -> slot 1 is 0, slot 0 an abfloat; else both are normal. (A pair whose slot-0 outlier would be
 * coded 10..0, i.e. -2^(b-1) s, is stored as a normal pair instead, so the rule never misreads one.)
 * Per pair the encoder keeps whichever of "both normal (clamped)" and "larger one as outlier, other
 * pruned" has the smaller squared error; per group the scale is searched over 16 candidates from
 * absmax / (2^(b-1) - 1) (no outliers) down to absmax / max abfloat, by the group's squared error.
 *
 * Packed layout, per group of G elements along a row: the f16 scale (2 bytes, little-endian), then
 * G codes of b bits, packed LSB-first (element 0 in the lowest bits of the first byte).
 * b + 16 / G bits per weight (olive4_g32: 4.5, as int4 g32).
 */
import { fail } from '../../errors.js';
import { f16ToF32, f32ToF16 } from '../../formats/half.js';
import { bitsPerWeightOf, checkFinite, checkPackedLength, checkShape, type QuantScheme } from '../scheme.js';

const SCALE_CANDIDATES = 16;

export function makeOliveScheme(bits: 2 | 3 | 4, groupSize: number): QuantScheme {
  if (groupSize % 8 !== 0) fail(`olive: group size ${groupSize} must be a multiple of 8`);
  const id = `olive${bits}_g${groupSize}`;
  const normalMax = 2 ** (bits - 1) - 1;
  const ident = 1 << (bits - 1); // the code of -2^(b-1)
  const mask = (1 << bits) - 1;
  const nMag = 1 << (bits - 1);
  /** outlier magnitudes in units of s, ascending */
  const mags = Float64Array.from({ length: nMag }, (_, m) => (1 + (m & 1) / 2) * 2 ** (m >> 1) * 2 ** (bits - 1));
  const blockBytes = 2 + (groupSize * bits) / 8;

  const normalCode = (v: number) => Math.max(-normalMax, Math.min(normalMax, roundEven(v))) & mask;
  const normalValue = (c: number) => (c & ident ? c - (1 << bits) : c);
  /** nearest abfloat code of v (units of s), sign in the top bit */
  const outlierCode = (v: number) => {
    const a = Math.abs(v);
    let m = 0;
    for (let j = 1; j < nMag; j++) if (Math.abs(mags[j] - a) < Math.abs(mags[m] - a)) m = j;
    return (v < 0 ? ident : 0) | m;
  };
  const outlierValue = (c: number) => (c & ident ? -1 : 1) * mags[c & (nMag - 1)];

  /** the codes of one pair (x0, x1 in units of s) and their squared error */
  function encodePair(x0: number, x1: number, out: number[]): number {
    const n0 = normalCode(x0);
    const n1 = normalCode(x1);
    let best = (x0 - normalValue(n0)) ** 2 + (x1 - normalValue(n1)) ** 2;
    out[0] = n0;
    out[1] = n1;
    if (Math.abs(x0) > normalMax || Math.abs(x1) > normalMax) {
      const first = Math.abs(x0) >= Math.abs(x1);
      const [xo, xv] = first ? [x0, x1] : [x1, x0];
      const c = outlierCode(xo);
      const err = (xo - outlierValue(c)) ** 2 + xv ** 2;
      if (err < best && !(first && c === ident)) {
        best = err;
        out[0] = first ? c : ident;
        out[1] = first ? ident : c;
      }
    }
    return best;
  }

  function decodePair(c0: number, c1: number, out: number[]): void {
    if (c0 === ident) (out[0] = 0), (out[1] = outlierValue(c1));
    else if (c1 === ident) (out[0] = outlierValue(c0)), (out[1] = 0);
    else (out[0] = normalValue(c0)), (out[1] = normalValue(c1));
  }

  const putCode = (buf: Uint8Array, at: number, j: number, c: number) => {
    const bit = j * bits;
    for (let k = 0; k < bits; k++) if ((c >> k) & 1) buf[at + ((bit + k) >> 3)] |= 1 << ((bit + k) & 7);
  };
  const getCode = (buf: Uint8Array, at: number, j: number) => {
    const bit = j * bits;
    let c = 0;
    for (let k = 0; k < bits; k++) c |= ((buf[at + ((bit + k) >> 3)] >> ((bit + k) & 7)) & 1) << k;
    return c;
  };

  const packedBytes = (rows: number, rowLength: number) => {
    checkShape(scheme, rows * rowLength, rows, rowLength);
    return rows * (rowLength / groupSize) * blockBytes;
  };
  const pair = [0, 0];
  const scheme: QuantScheme = Object.freeze({
    id,
    name: id,
    description: `OliVe outlier-victim pairs: int${bits} normal values, abfloat outliers with a pruned neighbour, f16 scale per ${groupSize}`,
    family: 'olive',
    blockSize: groupSize,
    blockRule: String(groupSize),
    bytesPerBlock: blockBytes,
    bitsPerWeight: bitsPerWeightOf((r, k) => r * (k / groupSize) * blockBytes),
    tensorScoped: false,
    packedBytes,
    quantizeRef(src: Float32Array, rows: number, rowLength: number): Uint8Array {
      const out = new Uint8Array(packedBytes(rows, rowLength));
      checkFinite(id, src);
      const nb = (rows * rowLength) / groupSize;
      for (let b = 0; b < nb; b++) {
        const x0 = b * groupSize;
        const at = b * blockBytes;
        let absmax = 0;
        for (let j = 0; j < groupSize; j++) absmax = Math.max(absmax, Math.abs(src[x0 + j]));
        if (absmax === 0) continue; // scale 0, codes 0
        // geometric candidates from "no outliers" to "everything within the abfloat range"
        let bestErr = Infinity;
        let bestH = 0;
        for (let i = 0; i < SCALE_CANDIDATES; i++) {
          const t = i / (SCALE_CANDIDATES - 1);
          const h = f32ToF16((absmax / normalMax) * (normalMax / mags[nMag - 1]) ** t);
          const s = f16ToF32(h);
          if (!(s > 0) || !Number.isFinite(s)) continue;
          let err = 0;
          for (let j = 0; j < groupSize; j += 2) err += encodePair(src[x0 + j] / s, src[x0 + j + 1] / s, pair) * s * s;
          if (err < bestErr) (bestErr = err), (bestH = h);
        }
        out[at] = bestH & 0xff;
        out[at + 1] = bestH >> 8;
        const s = f16ToF32(bestH);
        if (!(s > 0)) continue;
        for (let j = 0; j < groupSize; j += 2) {
          encodePair(src[x0 + j] / s, src[x0 + j + 1] / s, pair);
          putCode(out, at + 2, j, pair[0]);
          putCode(out, at + 2, j + 1, pair[1]);
        }
      }
      return out;
    },
    dequantizeRef(packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array): Float32Array {
      checkPackedLength(id, packed, packedBytes(rows, rowLength));
      const dst = out ?? new Float32Array(rows * rowLength);
      const nb = (rows * rowLength) / groupSize;
      for (let b = 0; b < nb; b++) {
        const at = b * blockBytes;
        const s = f16ToF32(packed[at] | (packed[at + 1] << 8));
        for (let j = 0; j < groupSize; j += 2) {
          decodePair(getCode(packed, at + 2, j), getCode(packed, at + 2, j + 1), pair);
          dst[b * groupSize + j] = Math.fround(pair[0] * s);
          dst[b * groupSize + j + 1] = Math.fround(pair[1] * s);
        }
      }
      return dst;
    },
  });
  return scheme;
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}
