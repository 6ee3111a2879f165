/**
 * Generic scaled schemes: any element format (intN, uintN, minifloat, codebook) with a scale shared
 * per tensor, per channel (row or column), per group of G elements along a row, or per 2-D tile.
 *
 *   symmetric   (intN, floats, codebooks):  scale = t / qmax;  x ~= decode(q) * scale
 *               t = clip threshold on |x| (absmax by default); qmax = 2^(N-1) - 1, or the format's max
 *   asymmetric, integer zero-point (uintN): lo = min(min x, 0), hi = max(max x, 0) (clipped),
 *               scale = (hi - lo) / (2^N - 1), z = round(-lo / scale) in [0, 2^N - 1] stored as an integer,
 *               q = clamp(round(x / scale) + z), x ~= (q - z) * scale
 *   asymmetric, float zero-point (uintN, as ggml's Q4_1 "min"): m = stored(lo), scale = (hi - m) / (2^N - 1),
 *               q = clamp(round((x - m) / scale)), x ~= q * scale + m      (m in the scale format)
 * The scale (and a float zero-point) are rounded to the scale format first; elements are quantized with
 * the stored (decoded) values, so dequantize(quantize(x)) is what a reader of the bytes reconstructs.
 *
 * Clip selection per scale group: absmax; mse (grid search of clip ratios 1.00, 0.99, ..., 0.50 of the
 * range, keeping the one with least squared error); percentile (|x| at the given percentile).
 *
 * Packed layout
 *   group / channel (rows): blocks in row order, each [scale][zero-point][codes]; codes bit-packed
 *       little-endian (4-bit: low nibble first; 6-bit: four per three bytes). Integer zero-points take
 *       1 byte (2 above 8 bits); float zero-points take the scale format's bytes.
 *   tensor / column / block2d: [all scales][all zero-points][codes row by row, each row padded to a byte].
 *       Scale order: tensor 1; column c; block2d tiles in row-major tile order.
 */
import { fail } from '../../errors.js';
import { decodeOne, encodeOne } from '../../formats/cast.js';
import type { Format } from '../../formats/descriptor.js';
import { defineInt } from '../../formats/int.js';
import { randomWord, roundingCode, roundMagnitude, Rounding, seedKey, type RoundingMode } from '../../formats/rounding.js';
import {
  bitsPerWeightOf,
  checkFinite,
  checkPackedLength,
  checkShape,
  packCodes,
  packedCodeBytes,
  readLE,
  scaleFormat,
  unpackCodes,
  writeLE,
  type QuantScheme,
  type ScaleFormat,
  type ScaleFormatName,
} from '../scheme.js';

export const GRANULARITIES = ['tensor', 'channel', 'column', 'group', 'block2d'] as const;
export type Granularity = (typeof GRANULARITIES)[number];
export const CLIP_METHODS = ['absmax', 'mse', 'percentile'] as const;
export type ClipMethod = (typeof CLIP_METHODS)[number];

export interface GenericSchemeConfig {
  element: Format;
  granularity: Granularity;
  /** elements per group along a row (granularity 'group') */
  groupSize?: number;
  /** tile edge (granularity 'block2d'), e.g. 32 for Jetfire's 32 x 32 blocks */
  tileSize?: number;
  /** min/max with a zero-point (integer elements only; signed intN becomes uintN) */
  asymmetric?: boolean;
  zeroPoint?: 'int' | 'float';
  scaleFormat?: ScaleFormatName;
  clip?: ClipMethod;
  /** percentile for clip 'percentile' (default 99.9) */
  percentile?: number;
  rounding?: RoundingMode;
  seed?: number;
}

interface Params {
  scale: number;
  zero: number; // integer zero-point, or float offset m
  scaleCode: number;
  zeroCode: number;
}

const NEAREST = { rounding: Rounding.NearestEven, saturate: true, nanToZero: false };
const CLIP_RATIOS = Array.from({ length: 51 }, (_, i) => 1 - i / 100);

export function genericSchemeId(c: GenericSchemeConfig): string {
  const e = effectiveElement(c);
  const g =
    c.granularity === 'group' ? `g${c.groupSize}` : c.granularity === 'block2d' ? `b${c.tileSize}x${c.tileSize}` : c.granularity === 'channel' ? 'ch' : c.granularity === 'column' ? 'col' : 'tensor';
  const parts = [e.name, g];
  if (c.asymmetric) parts.push(c.zeroPoint === 'float' ? 'asym_fzp' : 'asym');
  parts.push(c.scaleFormat ?? defaultScaleFormat(c.granularity));
  if (c.clip && c.clip !== 'absmax') parts.push(c.clip === 'percentile' ? `p${c.percentile ?? 99.9}` : c.clip);
  if (c.rounding && c.rounding !== 'nearest-even') parts.push(c.rounding);
  return parts.join('_').toLowerCase();
}

export function defaultScaleFormat(g: Granularity): ScaleFormatName {
  return g === 'group' || g === 'block2d' ? 'f16' : 'f32';
}

function effectiveElement(c: GenericSchemeConfig): Format {
  const f = c.element;
  if (!c.asymmetric) return f;
  if (f.kind !== 'int') fail(`--asym needs an integer element format, not ${f.name}`);
  return f.signed ? defineInt(f.bits, false) : f;
}

export function makeGenericScheme(config: GenericSchemeConfig, id?: string, description?: string): QuantScheme {
  const f = effectiveElement(config);
  const g = config.granularity;
  if (!GRANULARITIES.includes(g)) fail(`unknown granularity '${g}' (valid: ${GRANULARITIES.join(', ')})`);
  const asym = config.asymmetric ?? false;
  const floatZero = asym && config.zeroPoint === 'float';
  const sf: ScaleFormat = scaleFormat(config.scaleFormat ?? defaultScaleFormat(g));
  const clip = config.clip ?? 'absmax';
  if (!CLIP_METHODS.includes(clip)) fail(`unknown clip method '${clip}' (valid: ${CLIP_METHODS.join(', ')})`);
  const pct = config.percentile ?? 99.9;
  if (!(pct > 0 && pct <= 100)) fail(`percentile must be in (0, 100], got ${pct}`);
  const G = config.groupSize ?? 0;
  const T = config.tileSize ?? 0;
  if (g === 'group' && !(Number.isSafeInteger(G) && G >= 1)) fail(`group size must be a positive integer, got ${config.groupSize}`);
  if (g === 'group' && (G * f.bits) % 8 !== 0) fail(`group size ${G} x ${f.bits} bits is not a whole number of bytes`);
  if (g === 'block2d' && !(Number.isSafeInteger(T) && T >= 1)) fail(`tile size must be a positive integer, got ${config.tileSize}`);
  const rounding = roundingCode(config.rounding);
  const key = seedKey(config.seed ?? 0);
  const lowered = { rounding, saturate: true, nanToZero: false };
  const bits = f.bits;
  const zb = !asym ? 0 : floatZero ? sf.bytes : bits <= 8 ? 1 : 2;
  const sb = sf.bytes;
  // symmetric: largest code magnitude; asymmetric: 2^N - 1
  const qmax = f.kind === 'int' ? f.qmax : f.maxFinite;
  const zeroCode = encodeOne(f, 0, NEAREST, 0);
  const interleaved = g === 'group' || g === 'channel';
  const name = id ?? genericSchemeId(config);

  function nGroups(rows: number, rowLength: number): number {
    switch (g) {
      case 'tensor':
        return 1;
      case 'channel':
        return rows;
      case 'column':
        return rowLength;
      case 'group':
        return (rows * rowLength) / G;
      case 'block2d':
        return Math.ceil(rows / T) * Math.ceil(rowLength / T);
    }
  }
  function groupOf(r: number, c: number, rowLength: number): number {
    switch (g) {
      case 'tensor':
        return 0;
      case 'channel':
        return r;
      case 'column':
        return c;
      case 'group':
        return r * (rowLength / G) + Math.floor(c / G);
      case 'block2d':
        return Math.floor(r / T) * Math.ceil(rowLength / T) + Math.floor(c / T);
    }
  }
  function blockElems(rowLength: number): number {
    return g === 'group' ? G : rowLength;
  }
  function packedBytes(rows: number, rowLength: number): number {
    checkShape(scheme, rows * rowLength, rows, rowLength);
    if (g === 'channel' && (rowLength * bits) % 8 !== 0) fail(`${name}: row of ${rowLength} x ${bits} bits is not a whole number of bytes`);
    const ng = nGroups(rows, rowLength);
    if (interleaved) return ng * (sb + zb + packedCodeBytes(blockElems(rowLength), bits));
    return ng * (sb + zb) + rows * packedCodeBytes(rowLength, bits);
  }

  // --- fitting one scale group -------------------------------------------------------------
  function paramsFor(lo: number, hi: number): Params {
    if (!asym) {
      const sc = sf.encode(Math.fround(hi / qmax));
      return { scale: sf.decode(sc), zero: 0, scaleCode: sc, zeroCode: 0 };
    }
    if (floatZero) {
      const zc = sf.encode(lo);
      const m = sf.decode(zc);
      const sc = sf.encode(Math.fround(Math.max(0, hi - m) / qmax));
      return { scale: sf.decode(sc), zero: m, scaleCode: sc, zeroCode: zc };
    }
    const sc = sf.encode(Math.fround((hi - lo) / qmax));
    const s = sf.decode(sc);
    let z = s > 0 && Number.isFinite(s) ? Math.round(-lo / s) : 0;
    z = Math.min(qmax, Math.max(0, z));
    return { scale: s, zero: z, scaleCode: sc, zeroCode: z };
  }
  function encodeValue(p: Params, x: number, u: number, o = lowered): number {
    const s = p.scale;
    if (!(s > 0) || !Number.isFinite(s)) return floatZero ? 0 : asym ? p.zero : zeroCode;
    if (!asym) return encodeOne(f, Math.fround(x / s), o, u);
    if (floatZero) return encodeOne(f, Math.fround((x - p.zero) / s), o, u);
    return encodeOne(f, Math.fround(x / s) + p.zero, o, u);
  }
  function decodeValue(scale: number, zero: number, code: number): number {
    if (!asym) return decodeOne(f, code) * scale;
    if (floatZero) return Math.fround(code * scale) + zero;
    return (code - zero) * scale;
  }
  function sse(v: Float32Array, p: Params): number {
    let e = 0;
    for (let i = 0; i < v.length; i++) {
      const d = v[i] - Math.fround(decodeValue(p.scale, p.zero, encodeValue(p, v[i], 0, NEAREST)));
      e += d * d;
    }
    return e;
  }
  function fit(v: Float32Array): Params {
    let lo = 0;
    let hi = 0;
    if (asym) {
      lo = Infinity;
      hi = -Infinity;
      for (let i = 0; i < v.length; i++) {
        lo = Math.min(lo, v[i]);
        hi = Math.max(hi, v[i]);
      }
      if (!floatZero) {
        lo = Math.min(lo, 0);
        hi = Math.max(hi, 0);
      }
    } else {
      for (let i = 0; i < v.length; i++) hi = Math.max(hi, Math.abs(v[i]));
    }
    if (clip === 'absmax') return paramsFor(lo, hi);
    if (clip === 'percentile') {
      const sorted = Float32Array.from(asym ? v : v.map(Math.abs)).sort();
      const m = sorted.length;
      const upper = sorted[Math.min(m - 1, Math.max(0, Math.ceil((pct / 100) * m) - 1))];
      if (!asym) return paramsFor(0, upper);
      const lower = sorted[Math.min(m - 1, Math.max(0, Math.floor((1 - pct / 100) * m)))];
      return floatZero ? paramsFor(lower, upper) : paramsFor(Math.min(lower, 0), Math.max(upper, 0));
    }
    let best = paramsFor(lo, hi);
    let bestErr = sse(v, best);
    for (let k = 1; k < CLIP_RATIOS.length; k++) {
      const r = CLIP_RATIOS[k];
      const p = asym ? paramsFor(lo * r, hi * r) : paramsFor(0, hi * r);
      const e = sse(v, p);
      if (e < bestErr) {
        bestErr = e;
        best = p;
      }
    }
    return best;
  }

  const scheme: QuantScheme = {
    id: name,
    name,
    description:
      description ??
      `${f.name} ${asym ? (floatZero ? 'asymmetric (float zero-point)' : 'asymmetric (integer zero-point)') : 'symmetric'}, scale per ${g === 'group' ? `group of ${G}` : g === 'block2d' ? `${T}x${T} tile` : g === 'channel' ? 'row' : g}, ${sf.name} scale, ${clip} clip`,
    family: 'generic',
    blockSize: g === 'group' ? G : g === 'channel' ? 0 : 1,
    blockRule: g === 'group' ? String(G) : g === 'channel' ? 'row' : g === 'block2d' ? `${T}x${T}` : g,
    bytesPerBlock: g === 'group' ? sb + zb + packedCodeBytes(G, bits) : 0,
    bitsPerWeight: 0,
    tensorScoped: !interleaved,
    packedBytes,
    quantizeRef(src, rows, rowLength) {
      const total = packedBytes(rows, rowLength);
      if (src.length !== rows * rowLength) checkShape(scheme, src.length, rows, rowLength);
      checkFinite(name, src);
      const ng = nGroups(rows, rowLength);
      // counting sort of element indices by group
      const count = new Int32Array(ng + 1);
      for (let r = 0; r < rows; r++) for (let c = 0; c < rowLength; c++) count[groupOf(r, c, rowLength) + 1]++;
      for (let k = 0; k < ng; k++) count[k + 1] += count[k];
      const order = new Int32Array(src.length);
      const fillAt = count.slice(0, ng);
      for (let r = 0; r < rows; r++) for (let c = 0; c < rowLength; c++) order[fillAt[groupOf(r, c, rowLength)]++] = r * rowLength + c;
      const codes = new Uint16Array(src.length);
      const out = new Uint8Array(total);
      const stochastic = rounding === Rounding.Stochastic;
      let maxLen = 0;
      for (let k = 0; k < ng; k++) maxLen = Math.max(maxLen, count[k + 1] - count[k]);
      const buf = new Float32Array(maxLen);
      const params: Params[] = new Array(ng);
      for (let k = 0; k < ng; k++) {
        const a = count[k];
        const m = count[k + 1] - a;
        const v = buf.subarray(0, m);
        for (let i = 0; i < m; i++) v[i] = src[order[a + i]];
        const p = fit(v);
        params[k] = p;
        for (let i = 0; i < m; i++) {
          const idx = order[a + i];
          codes[idx] = encodeValue(p, src[idx], stochastic ? randomWord(key, idx) : 0);
        }
      }
      if (interleaved) {
        const E = blockElems(rowLength);
        const bb = sb + zb + packedCodeBytes(E, bits);
        for (let k = 0; k < ng; k++) {
          const at = k * bb;
          writeLE(out, at, params[k].scaleCode, sb);
          if (zb) writeLE(out, at + sb, params[k].zeroCode, zb);
          packCodes(codes.subarray(k * E, (k + 1) * E), E, bits, out, at + sb + zb);
        }
      } else {
        for (let k = 0; k < ng; k++) {
          writeLE(out, k * sb, params[k].scaleCode, sb);
          if (zb) writeLE(out, ng * sb + k * zb, params[k].zeroCode, zb);
        }
        const rowBytes = packedCodeBytes(rowLength, bits);
        const base = ng * (sb + zb);
        for (let r = 0; r < rows; r++) packCodes(codes.subarray(r * rowLength, (r + 1) * rowLength), rowLength, bits, out, base + r * rowBytes);
      }
      return out;
    },
    dequantizeRef(packed, rows, rowLength, out) {
      checkPackedLength(name, packed, packedBytes(rows, rowLength));
      const n = rows * rowLength;
      const dst = out ?? new Float32Array(n);
      const ng = nGroups(rows, rowLength);
      const scales = new Float64Array(ng);
      const zeros = new Float64Array(ng);
      const codes = new Uint16Array(rowLength);
      const readParams = (k: number, sAt: number, zAt: number) => {
        scales[k] = sf.decode(readLE(packed, sAt, sb));
        zeros[k] = !zb ? 0 : floatZero ? sf.decode(readLE(packed, zAt, zb)) : readLE(packed, zAt, zb);
      };
      if (interleaved) {
        const E = blockElems(rowLength);
        const bb = sb + zb + packedCodeBytes(E, bits);
        const ec = new Uint16Array(E);
        for (let k = 0; k < ng; k++) {
          const at = k * bb;
          readParams(k, at, at + sb);
          unpackCodes(packed, at + sb + zb, E, bits, ec);
          for (let i = 0; i < E; i++) dst[k * E + i] = decodeValue(scales[k], zeros[k], ec[i]);
        }
        return dst;
      }
      for (let k = 0; k < ng; k++) readParams(k, k * sb, ng * sb + k * zb);
      const rowBytes = packedCodeBytes(rowLength, bits);
      const base = ng * (sb + zb);
      for (let r = 0; r < rows; r++) {
        unpackCodes(packed, base + r * rowBytes, rowLength, bits, codes);
        for (let c = 0; c < rowLength; c++) {
          const k = groupOf(r, c, rowLength);
          dst[r * rowLength + c] = decodeValue(scales[k], zeros[k], codes[c]);
        }
      }
      return dst;
    },
  };
  // one group at a time without the general machinery (the calibrated algorithms quantize blocks one by
  // one, many times): integer elements, absmax scales, deterministic rounding. Same bytes as quantizeRef
  // (test/schemes.test.ts); anything else, non-finite input included, goes to the reference.
  if (g === 'group' && f.kind === 'int' && clip === 'absmax' && rounding !== Rounding.Stochastic && !floatZero) {
    const E = G;
    const bb = sb + zb + packedCodeBytes(E, bits);
    const codes = new Uint16Array(E);
    const wrap = 2 ** bits;
    const half = wrap / 2;
    const lo = f.qmin;
    const hi = f.qmax;
    const even = rounding === Rounding.NearestEven;
    const ref = (x: Float32Array, xo: number, out: Uint8Array, oo: number) => out.set(scheme.quantizeRef(x.subarray(xo, xo + E), 1, E), oo);
    const ext = new Float64Array(2);
    /** ext = [min(0, x), max(0, x)] (asymmetric) or [0, max |x|] of the group; false if it holds NaN or an infinity */
    const extremes = (x: Float32Array, xo: number): boolean => {
      let mn = 0;
      let mx = 0;
      let finite = true;
      for (let i = xo; i < xo + E; i++) {
        const v = x[i];
        if (asym) {
          if (v < mn) mn = v;
          if (v > mx) mx = v;
        } else if (Math.abs(v) > mx) mx = Math.abs(v);
        if (v - v !== 0) finite = false;
      }
      ext[0] = mn;
      ext[1] = mx;
      return finite;
    };
    blockPaths.set(scheme, {
      blockBytes: bb,
      quantize(x, xo, out, oo) {
        if (!extremes(x, xo)) return ref(x, xo, out, oo); // NaN or infinite: the reference reports it
        const p = paramsFor(ext[0], ext[1]);
        const sc = p.scale;
        const z = p.zero;
        if (!(sc > 0) || !Number.isFinite(sc)) codes.fill(asym ? z : zeroCode);
        else
          for (let i = 0; i < E; i++) {
            const y = asym ? Math.fround(x[xo + i] / sc) + z : Math.fround(x[xo + i] / sc);
            const neg = y < 0;
            const a = neg ? -y : y;
            let q: number;
            if (even) {
              const fl = Math.floor(a);
              const frac = a - fl;
              q = frac > 0.5 ? fl + 1 : frac < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
            } else q = roundMagnitude(a, rounding, neg, 0);
            if (neg) q = -q;
            if (q < lo) q = lo;
            else if (q > hi) q = hi;
            codes[i] = q < 0 ? q + wrap : q;
          }
        writeLE(out, oo, p.scaleCode, sb);
        if (zb) writeLE(out, oo + sb, p.zeroCode, zb);
        packCodes(codes, E, bits, out, oo + sb + zb);
      },
      dequantize(bytes, bo, out, oo) {
        const sc = sf.decode(readLE(bytes, bo, sb));
        const z = zb ? readLE(bytes, bo + sb, zb) : 0;
        unpackCodes(bytes, bo + sb + zb, E, bits, codes);
        // decodeValue without the format dispatch: (code - zero) * scale, signed codes wrapped
        for (let i = 0; i < E; i++) {
          const c = codes[i];
          out[oo + i] = asym ? (c - z) * sc : (c >= half ? c - wrap : c) * sc;
        }
      },
      clipHeader(x, xo, ratio, out, oo) {
        // the extremes of fround(x * ratio) are fround(extreme * ratio): rounding is monotonic
        extremes(x, xo);
        const p = paramsFor(Math.fround(ext[0] * ratio), Math.fround(ext[1] * ratio));
        writeLE(out, oo, p.scaleCode, sb);
        if (zb) writeLE(out, oo + sb, p.zeroCode, zb);
      },
      affine: {
        lo,
        hi,
        bits,
        signed: !asym,
        params(bytes, bo, out, oo) {
          out[oo] = sf.decode(readLE(bytes, bo, sb));
          out[oo + 1] = zb ? readLE(bytes, bo + sb, zb) : 0;
        },
        clipHeaders(x, xo, ratios, out, oo) {
          // clipHeader for each ratio, the extremes found once
          extremes(x, xo);
          const mn = ext[0];
          const mx = ext[1];
          for (let c = 0; c < ratios.length; c++) {
            const p = paramsFor(Math.fround(mn * ratios[c]), Math.fround(mx * ratios[c]));
            writeLE(out, oo + c * bb, p.scaleCode, sb);
            if (zb) writeLE(out, oo + c * bb + sb, p.zeroCode, zb);
          }
        },
      },
      snap(bytes, bo, x, xo, out, oo) {
        const sc = sf.decode(readLE(bytes, bo, sb));
        const z = zb ? readLE(bytes, bo + sb, zb) : 0;
        if (!(sc > 0) || !Number.isFinite(sc)) {
          const v = asym ? decodeValue(sc, z, z) : decodeValue(sc, 0, zeroCode);
          out.fill(v, oo, oo + E);
          return;
        }
        for (let i = 0; i < E; i++) {
          let q = Math.round(x[xo + i] / sc + z);
          if (q < lo) q = lo;
          else if (q > hi) q = hi;
          out[oo + i] = asym ? (q - z) * sc : q * sc;
        }
      },
    });
  }
  (scheme as { bitsPerWeight: number }).bitsPerWeight = bitsPerWeightOf((r, c) => (g === 'group' && c % G !== 0 ? NaN : packedBytes(r, c)));
  Object.freeze(scheme);
  configs.set(scheme, Object.freeze({ ...config }));
  return scheme;
}

const configs = new WeakMap<QuantScheme, Readonly<GenericSchemeConfig>>();

/** One group of a grouped scheme: quantize/dequantize a block of groupSize values (bytes = blockBytes). */
export interface GroupBlockPath {
  readonly blockBytes: number;
  quantize(x: Float32Array, xo: number, out: Uint8Array, oo: number): void;
  dequantize(bytes: Uint8Array, bo: number, out: Float32Array, oo: number): void;
  /** the scale (and zero-point) bytes quantize writes for fround(x * ratio); codes untouched */
  clipHeader(x: Float32Array, xo: number, ratio: number, out: Uint8Array, oo: number): void;
  /** x's nearest values on the grid of a block (its scales kept; ties may go either way) */
  snap(bytes: Uint8Array, bo: number, x: Float32Array, xo: number, out: Float32Array, oo: number): void;
  /** the grid as snap and dequantize use it (see AffineGrid) */
  readonly affine?: AffineGrid;
}

/**
 * A block grid of integer codes with one scale and zero-point: code c (0 <= c < 2^bits) decodes to
 * f32((v - z) s), v = c, or c's two's complement value when `signed` (then z = 0); `snap` rounds x to
 * clamp(Math.round(x / s + z), lo, hi) when s > 0 and finite (else every element to the code-0-ish
 * value of its degenerate branch). `params` reads s and z of a block into out[oo], out[oo + 1].
 */
export interface AffineGrid {
  readonly lo: number;
  readonly hi: number;
  readonly bits: number;
  readonly signed: boolean;
  params(bytes: Uint8Array, bo: number, out: Float64Array, oo: number): void;
  /** clipHeader for each of the ratios, block c's header at out[oo + c blockBytes] */
  clipHeaders(x: Float32Array, xo: number, ratios: readonly number[], out: Uint8Array, oo: number): void;
}
const blockPaths = new WeakMap<QuantScheme, GroupBlockPath>();

/** The one-group fast path of a generic scheme (integer elements, absmax, deterministic rounding), if it has one. */
export function groupBlockPath(s: QuantScheme): GroupBlockPath | undefined {
  return blockPaths.get(s);
}

/** The configuration a generic scheme was built from (undefined for other schemes). */
export function genericConfigOf(s: QuantScheme): Readonly<GenericSchemeConfig> | undefined {
  return configs.get(s);
}

/** The stored parts of a group-granularity generic scheme, element by element and group by group. */
export interface GroupedCodes {
  readonly rows: number;
  readonly rowLength: number;
  readonly groupSize: number;
  /** element codes, row-major [rows, rowLength] (two's complement N-bit patterns for signed intN) */
  readonly codes: Uint16Array;
  /** scale codes in the scale format, [rows, rowLength / groupSize] */
  readonly scaleCodes: Uint32Array;
  /** integer zero-points, [rows, rowLength / groupSize]; undefined for symmetric schemes */
  readonly zeroPoints?: Uint16Array;
}

/**
 * Split the packed bytes of a group-granularity generic scheme with an integer (or no) zero-point into
 * codes, scale codes and zero-points: the inverse of the block layout [scale][zero-point][codes].
 * Other layouts (float zero-points, channel/tensor/2-D scales, codebooks) fail.
 */
export function unpackGroupedCodes(s: QuantScheme, packed: Uint8Array, rows: number, rowLength: number): GroupedCodes {
  const c = configs.get(s);
  if (!c || c.granularity !== 'group') fail(`${s.id}: not a generic scheme with a scale per group`);
  if (c.asymmetric && c.zeroPoint === 'float') fail(`${s.id}: float zero-points have no integer code layout`);
  checkPackedLength(s.id, packed, s.packedBytes(rows, rowLength));
  const f = effectiveElement(c);
  const G = c.groupSize!;
  const sb = scaleFormat(c.scaleFormat ?? defaultScaleFormat('group')).bytes;
  const zb = c.asymmetric ? (f.bits <= 8 ? 1 : 2) : 0;
  const blockBytes = sb + zb + packedCodeBytes(G, f.bits);
  const nGroups = (rows * rowLength) / G;
  const codes = new Uint16Array(rows * rowLength);
  const scaleCodes = new Uint32Array(nGroups);
  const zeroPoints = zb ? new Uint16Array(nGroups) : undefined;
  for (let k = 0; k < nGroups; k++) {
    const at = k * blockBytes;
    scaleCodes[k] = readLE(packed, at, sb);
    if (zeroPoints) zeroPoints[k] = readLE(packed, at + sb, zb);
    unpackCodes(packed, at + sb + zb, G, f.bits, codes.subarray(k * G, (k + 1) * G));
  }
  return { rows, rowLength, groupSize: G, codes, scaleCodes, zeroPoints };
}

/** SQNR (dB) of dequantize(quantize(x)) for each clip method, for choosing one. */
export function compareClipMethods(
  config: Omit<GenericSchemeConfig, 'clip'>,
  src: Float32Array,
  rows: number,
  rowLength: number,
): { clip: ClipMethod; sqnrDb: number }[] {
  return CLIP_METHODS.map((clip) => {
    const s = makeGenericScheme({ ...config, clip });
    const y = s.dequantizeRef(s.quantizeRef(src, rows, rowLength), rows, rowLength);
    let sig = 0;
    let noise = 0;
    for (let i = 0; i < src.length; i++) {
      sig += src[i] * src[i];
      noise += (src[i] - y[i]) ** 2;
    }
    return { clip, sqnrDb: noise === 0 ? Infinity : 10 * Math.log10(sig / noise) };
  });
}
