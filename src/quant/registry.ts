/**
 * The scheme registry: every named scheme by stable id, name resolution for users, and the slot for
 * fast paths. Tests iterate `schemes()`, so a scheme is tested the moment it is registered.
 *
 * resolveScheme(name, options):
 *   1. with scheme options (group, granularity, tile, asym, scale format, clip): `name` is an element
 *      format (int4, fp8_e4m3fn, nf4, ...) and a generic scheme is built (`int4 --group 128 --asym`);
 *   2. a registered id, case-insensitive (mxfp4, nvfp4, mxfp8_e4m3, nf4_dq, int4_g32, ...);
 *   3. `ggml_<type>`: the GGML block type (ggml_q4_k, ggml_mxfp4, ggml_nvfp4);
 *   4. a bare element format name (int4, fp8_e4m3fn, e3m4): one code per byte, fixed scale;
 *   5. a bare llama.cpp type name (q4_0, q4_K, iq4_xs) when its codec is registered. Names that are
 *      also lowbit schemes or formats keep lowbit's meaning (mxfp4, nvfp4, f16, bf16, f32).
 */
import { fail, LowbitError } from '../errors.js';
import type { CastOptions } from '../formats/cast.js';
import { formats, parseFormat } from '../formats/registry.js';
import type { RoundingMode } from '../formats/rounding.js';
import { ggmlCodec, ggmlCodecs } from './ggml/registry.js';
import { ggmlTypeByName } from './ggml/types.js';
import type { QuantScheme, SchemeFastPath, ScaleFormatName } from './scheme.js';
import { makeElementScheme } from './schemes/element.js';
import { GRANULARITIES, makeGenericScheme, type ClipMethod, type Granularity } from './schemes/generic.js';
import { ggmlScheme } from './schemes/ggml.js';
import { mxSchemes } from './schemes/mx.js';
import { nf4DqScheme } from './schemes/nf4.js';
import { nvfp4Scheme } from './schemes/nvfp4.js';
import { makeOliveScheme } from './schemes/olive.js';

const builtins: QuantScheme[] = [];
const byId = new Map<string, QuantScheme>();
const fastPaths = new Map<string, SchemeFastPath>();

export function registerScheme(s: QuantScheme): void {
  if (byId.has(s.id)) throw new Error(`scheme ${s.id} registered twice`);
  builtins.push(s);
  byId.set(s.id, s);
}

const fmt = (n: string) => parseFormat(n);
for (const s of mxSchemes) registerScheme(s);
registerScheme(nvfp4Scheme);
registerScheme(nf4DqScheme);
registerScheme(makeGenericScheme({ element: fmt('nf4'), granularity: 'group', groupSize: 64, scaleFormat: 'f32' }, 'nf4_g64', 'NF4 codes, f32 absmax per 64 (bitsandbytes without double quant; low nibble first)'));
registerScheme(makeGenericScheme({ element: fmt('int8'), granularity: 'channel', scaleFormat: 'f32' }, 'int8_ch', 'int8 symmetric, f32 scale per row (per output channel)'));
registerScheme(makeGenericScheme({ element: fmt('int8'), granularity: 'tensor', scaleFormat: 'f32' }, 'int8_tensor', 'int8 symmetric, one f32 scale per tensor'));
registerScheme(makeGenericScheme({ element: fmt('int8'), granularity: 'group', groupSize: 32, scaleFormat: 'f16' }, 'int8_g32', 'int8 symmetric, f16 scale per 32 (Q8_0-like, 8.5 bpw)'));
registerScheme(makeGenericScheme({ element: fmt('int4'), granularity: 'group', groupSize: 32, scaleFormat: 'f16' }, 'int4_g32', 'int4 symmetric, f16 scale per 32 (4.5 bpw)'));
registerScheme(makeGenericScheme({ element: fmt('int4'), granularity: 'group', groupSize: 128, scaleFormat: 'f16' }, 'int4_g128', 'int4 symmetric, f16 scale per 128'));
registerScheme(makeGenericScheme({ element: fmt('int4'), granularity: 'group', groupSize: 128, asymmetric: true, scaleFormat: 'f16' }, 'uint4_g128_asym', 'uint4 with integer zero-point, f16 scale per 128 (GPTQ/AWQ-like)'));
registerScheme(makeGenericScheme({ element: fmt('int4'), granularity: 'group', groupSize: 32, asymmetric: true, zeroPoint: 'float', scaleFormat: 'f16' }, 'uint4_g32_fzp', 'uint4 with f16 scale and f16 min per 32 (Q4_1-like, 5 bpw)'));
registerScheme(makeGenericScheme({ element: fmt('int4'), granularity: 'channel', scaleFormat: 'f32', clip: 'mse' }, 'int4_ch_mse', 'int4 symmetric per row, MSE-searched clip, f32 scale'));
registerScheme(makeGenericScheme({ element: fmt('int4'), granularity: 'block2d', tileSize: 32, scaleFormat: 'f16' }, 'int4_b32x32', 'int4 symmetric, f16 scale per 32x32 tile (Jetfire-style 2-D blocks)'));
// FlexQ's INT6 weights: uniform 6-bit, symmetric, one f16 scale per group along the row
registerScheme(makeGenericScheme({ element: fmt('int6'), granularity: 'group', groupSize: 128, scaleFormat: 'f16' }, 'int6_g128', 'int6 symmetric, f16 scale per 128 (FlexQ W6, 6.125 bpw)'));
registerScheme(makeGenericScheme({ element: fmt('int6'), granularity: 'group', groupSize: 32, scaleFormat: 'f16' }, 'int6_g32', 'int6 symmetric, f16 scale per 32 (FlexQ W6 for short rows, 6.5 bpw)'));
// ZeroQuant-FP's W4: FP4 E2M1 with power-of-two (E8M0) scales, the scale rounded to the nearest power of
// two (MXFP4 takes floor(log2 absmax) - 2 instead); run with FP8 activations (lowbit eval --act fp8)
registerScheme(makeGenericScheme({ element: fmt('fp4_e2m1fn'), granularity: 'group', groupSize: 32, scaleFormat: 'e8m0' }, 'fp4_g32_pow2', 'FP4 E2M1, power-of-two (e8m0) scale per 32 rounded to nearest (ZeroQuant-FP W4, 4.25 bpw)'));
// OliVe's outlier-victim pairs (4-bit as the paper; 3- and 2-bit by the same construction)
for (const b of [4, 3, 2] as const) registerScheme(makeOliveScheme(b, 32));
registerScheme(makeGenericScheme({ element: fmt('int2'), granularity: 'group', groupSize: 16, asymmetric: true, scaleFormat: 'f16' }, 'uint2_g16_asym', 'uint2 with integer zero-point, f16 scale per 16'));
registerScheme(makeGenericScheme({ element: fmt('fp8_e4m3fn'), granularity: 'channel', scaleFormat: 'f32' }, 'fp8_e4m3_ch', 'FP8 E4M3 with f32 scale per row'));

/** Every scheme: lowbit's own, then the GGML block types whose codecs are registered. */
export function schemes(): readonly QuantScheme[] {
  return [...builtins, ...ggmlCodecs.map(ggmlScheme)];
}

export interface ResolveOptions {
  granularity?: Granularity;
  groupSize?: number;
  tileSize?: number;
  asymmetric?: boolean;
  zeroPoint?: 'int' | 'float';
  scaleFormat?: ScaleFormatName;
  clip?: ClipMethod;
  percentile?: number;
  rounding?: RoundingMode;
  seed?: number;
  /** element formats without scheme options: fixed scale, rounding, saturation (as `lowbit cast`) */
  cast?: CastOptions;
}

function tryFormat(name: string) {
  try {
    return parseFormat(name);
  } catch (e) {
    if (e instanceof LowbitError) return undefined;
    throw e;
  }
}

function unknown(name: string): never {
  fail(`unknown scheme '${name}' (schemes: ${schemes().map((s) => s.id).join(', ')}; or an element format such as ${formats.slice(0, 4).map((f) => f.name).join(', ')}, see lowbit formats)`);
}

export function resolveScheme(name: string, o: ResolveOptions = {}): QuantScheme {
  const key = name.trim().toLowerCase();
  const wantsGeneric =
    o.granularity !== undefined || o.groupSize !== undefined || o.tileSize !== undefined || o.asymmetric || o.scaleFormat !== undefined || o.clip !== undefined;
  if (wantsGeneric) {
    const f = tryFormat(key);
    if (!f) {
      if (byId.has(key) || key.startsWith('ggml_')) fail(`${name} has a fixed layout; --group, --granularity, --tile, --asym, --scale-format and --clip apply to element formats (int4, fp8_e4m3fn, ...)`);
      unknown(name);
    }
    const granularity = o.granularity ?? (o.groupSize !== undefined ? 'group' : o.tileSize !== undefined ? 'block2d' : 'channel');
    if (!GRANULARITIES.includes(granularity)) fail(`unknown granularity '${granularity}' (valid: ${GRANULARITIES.join(', ')})`);
    if (granularity === 'group' && o.groupSize === undefined) fail('--granularity group needs --group G');
    if (granularity !== 'group' && o.groupSize !== undefined) fail(`--group applies to --granularity group, not ${granularity}`);
    return makeGenericScheme({
      element: f,
      granularity,
      groupSize: o.groupSize,
      tileSize: granularity === 'block2d' ? (o.tileSize ?? 32) : undefined,
      asymmetric: o.asymmetric,
      zeroPoint: o.zeroPoint,
      scaleFormat: o.scaleFormat,
      clip: o.clip,
      percentile: o.percentile,
      rounding: o.rounding,
      seed: o.seed,
    });
  }
  const own = byId.get(key);
  if (own) return own;
  if (key.startsWith('ggml_')) {
    const t = ggmlTypeByName(key);
    if (!t) unknown(name);
    const c = ggmlCodec(t);
    if (!c) fail(`GGML type ${t.name} has no codec in this build (available: ${ggmlCodecs.map((x) => `ggml_${x.type.name.toLowerCase()}`).join(', ') || 'none'})`);
    return ggmlScheme(c);
  }
  const f = tryFormat(key);
  if (f) return makeElementScheme(f, o.cast);
  const t = ggmlTypeByName(key);
  if (t) {
    const c = ggmlCodec(t);
    if (c) return ggmlScheme(c);
    fail(`GGML type ${t.name} has no codec in this build`);
  }
  unknown(name);
}

/** Attach a fast implementation (e.g. WebAssembly) to a scheme id; tested against the reference. */
export function registerFastPath(id: string, fast: SchemeFastPath): void {
  fastPaths.set(id, fast);
}

export function fastPath(id: string): SchemeFastPath | undefined {
  return fastPaths.get(id);
}

/** Quantize with the fast path when one is registered, else the reference. */
export function quantizeScheme(s: QuantScheme, src: Float32Array, rows: number, rowLength: number): Uint8Array {
  const fp = fastPaths.get(s.id);
  return fp?.quantize ? fp.quantize(src, rows, rowLength) : s.quantizeRef(src, rows, rowLength);
}

export function dequantizeScheme(s: QuantScheme, packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array): Float32Array {
  const fp = fastPaths.get(s.id);
  return fp?.dequantize ? fp.dequantize(packed, rows, rowLength, out) : s.dequantizeRef(packed, rows, rowLength, out);
}
