/**
 * The GGML type-traits table (in the style of ggml's type_traits): one row per GGML type, every type
 * including F32/F16/BF16, holding
 *
 *   type        id, block size and bytes per block (types.ts, as ggml-common.h)
 *   quantized   a block type (ggml's is_quantized): every type but the floats and integers
 *   float       stored as is (F32, F16, BF16), no block codec's choices
 *   exactF32    a float row that holds every f32 value exactly (F32): no rounding to model, SQNR infinite
 *   vecDot      the type llama.cpp's CPU backend converts activations to for a dot product (types.ts)
 *   toFloat     the scalar reference dequantizer
 *   fromFloat   the scalar reference quantizer (absent for dequantize-only types)
 *   usesImportance  fromFloat takes an importance vector (llama.cpp has an imatrix path)
 *   fast        the fast paths installed into the row by the kernels (kernels/ggml-quant.ts:
 *               installWasmQuantizers(), called explicitly by the entry points; nothing registers
 *               itself on import): a quantizer tried first for calls without importance, a dequantizer
 *
 * The rows are built here, from the built-in codec lists (legacy.ts, kquants.ts, ggmlb.ts): importing
 * the table is enough for `ggmlCodec('Q4_K')`, and no other module fills it as a side effect of being
 * imported. The block types' codecs (`ggmlCodec('Q4_K')`) are these rows seen as codecs: `quantize` and
 * `dequantize` try the row's fast paths first and fall back to the references; a fast path must give
 * the reference's bytes (floats) exactly, and tests iterate the registered codecs against them.
 */
import { ggmlbCodecs } from './ggmlb.js';
import { bf16ToF32Row, f16ToF32Row, f32ToBf16Row, f32ToF16Row, u16View } from '../../formats/half.js';
import { kquantCodecs } from './kquants.js';
import { legacyCodecs } from './legacy.js';
import type { GgmlCodec, GgmlTypeInfo } from './types.js';
import { GGML_TYPES, ggmlTypeById, ggmlTypeByName, ggmlVecDotType, isGgmlFloat } from './types.js';

/** quantize whole rows (no importance) into out; returns false to decline (the reference then runs) */
export type GgmlFastQuantize = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array) => boolean;
/** dequantize n elements into out; returns false to decline (the reference then runs) */
export type GgmlFastDequantize = (src: Uint8Array, n: number, out: Float32Array) => boolean;

type Quantize = NonNullable<GgmlCodec['quantize']>;
type Dequantize = GgmlCodec['dequantize'];

export interface GgmlTypeTraits {
  readonly type: GgmlTypeInfo;
  readonly blockSize: number;
  readonly typeSize: number;
  /** a block type (ggml's is_quantized): false for F32/F16/BF16/F64 and the integer types */
  readonly quantized: boolean;
  readonly float: boolean;
  /** a float row holding every f32 exactly (F32): f32 -> type -> f32 is the identity */
  readonly exactF32: boolean;
  /** llama.cpp's vec_dot_type (undefined for the integer and F64 types, never weights) */
  readonly vecDot?: string;
  readonly toFloat?: Dequantize;
  readonly fromFloat?: Quantize;
  readonly usesImportance: boolean;
  readonly fast: { quantize?: GgmlFastQuantize; dequantize?: GgmlFastDequantize };
}

interface Row {
  type: GgmlTypeInfo;
  toFloat?: Dequantize;
  fromFloat?: Quantize;
  usesImportance: boolean;
  fast: { quantize?: GgmlFastQuantize; dequantize?: GgmlFastDequantize };
  /** the row as a block codec (block types with a registered codec) */
  codec?: GgmlCodec;
}

/** the float types' conversions (formats/half.ts; elementwise, rows do not matter) */
function floatConversions(name: string): { toFloat: Dequantize; fromFloat: Quantize } | undefined {
  const w16 = (out: Uint8Array, n: number, f: (x: Float32Array, h: Uint16Array) => void, src: Float32Array) => {
    if (out.byteOffset % 2 === 0) return f(src.subarray(0, n), new Uint16Array(out.buffer, out.byteOffset, n));
    const h = new Uint16Array(n);
    f(src.subarray(0, n), h);
    out.set(new Uint8Array(h.buffer));
  };
  if (name === 'F32')
    return {
      toFloat: (src, n, out) => out.set(new Float32Array(src.byteOffset % 4 === 0 ? src.buffer : src.slice(0, 4 * n).buffer, src.byteOffset % 4 === 0 ? src.byteOffset : 0, n)),
      fromFloat: (src, nRows, rowLength, out) => out.set(new Uint8Array(src.buffer, src.byteOffset, 4 * nRows * rowLength)),
    };
  if (name === 'F16')
    return {
      toFloat: (src, n, out) => f16ToF32Row(u16View(src, n), out),
      fromFloat: (src, nRows, rowLength, out) => w16(out, nRows * rowLength, f32ToF16Row, src),
    };
  if (name === 'BF16')
    return {
      toFloat: (src, n, out) => bf16ToF32Row(u16View(src, n), out),
      fromFloat: (src, nRows, rowLength, out) => w16(out, nRows * rowLength, f32ToBf16Row, src),
    };
  return undefined;
}

const rows = new Map<number, Row>(
  GGML_TYPES.map((type) => {
    const f = floatConversions(type.name);
    return [type.id, { type, toFloat: f?.toFloat, fromFloat: f?.fromFloat, usesImportance: false, fast: {} }];
  }),
);
const codecs: GgmlCodec[] = [];

export const ggmlCodecs: readonly GgmlCodec[] = codecs;

function typeInfo(t: GgmlTypeInfo | number | string): GgmlTypeInfo | undefined {
  return typeof t === 'number' ? ggmlTypeById(t) : typeof t === 'string' ? ggmlTypeByName(t) : t;
}

function rowOf(t: GgmlTypeInfo | number | string): Row | undefined {
  const info = typeInfo(t);
  return info ? rows.get(info.id) : undefined;
}

/** The row seen as a codec: `quantize` and `dequantize` try the row's fast paths first. */
function asCodec(row: Row, c: GgmlCodec): GgmlCodec {
  const ref = row.toFloat!;
  const dequantize = (src: Uint8Array, n: number, out: Float32Array): void => {
    const fast = row.fast.dequantize;
    if (fast !== undefined && fast(src, n, out)) return;
    ref(src, n, out);
  };
  const q = row.fromFloat;
  if (!q) return Object.freeze({ ...c, dequantize });
  return Object.freeze({
    ...c,
    quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
      if (importance === undefined) {
        const fast = row.fast.quantize;
        if (fast !== undefined && fast(src, nRows, rowLength, out)) return;
      }
      q(src, nRows, rowLength, out, importance);
    },
    dequantize,
  });
}

function register(c: GgmlCodec): void {
  const row = rows.get(c.type.id);
  if (!row) throw new Error(`GGML codec for unknown type ${c.type.name}`);
  row.toFloat = c.dequantize;
  row.fromFloat = c.quantize;
  row.usesImportance = c.usesImportance === true;
  row.codec = asCodec(row, c);
  codecs.push(row.codec);
}

export function registerGgmlCodec(c: GgmlCodec): void {
  if (rows.get(c.type.id)?.codec) throw new Error(`GGML codec for ${c.type.name} registered twice`);
  register(c);
}

/** The registered codec of a block type (undefined for the float types and unregistered ones). */
export function ggmlCodec(t: GgmlTypeInfo | number | string): GgmlCodec | undefined {
  return rowOf(t)?.codec;
}

/** Registers each codec whose type has none yet (idempotent for repeated imports of a codec list). */
export function registerGgmlCodecs(list: readonly GgmlCodec[]): void {
  for (const c of list) if (!rows.get(c.type.id)?.codec) register(c);
}

// the table's own rows: every built-in codec (the references), in llama.cpp's type order of the lists
registerGgmlCodecs(legacyCodecs);
registerGgmlCodecs(kquantCodecs);
registerGgmlCodecs(ggmlbCodecs);

/** The traits row of a type (every GGML type has one). */
export function ggmlTypeTraits(t: GgmlTypeInfo | number | string): GgmlTypeTraits | undefined {
  const r = rowOf(t);
  if (!r) return undefined;
  const float = isGgmlFloat(r.type);
  const exactF32 = float && (8 * r.type.typeSize) / r.type.blockSize >= 32;
  const vecDot = r.type.name === 'F64' || /^I\d+$/.test(r.type.name) ? undefined : ggmlVecDotType(r.type);
  return Object.freeze({ type: r.type, blockSize: r.type.blockSize, typeSize: r.type.typeSize, quantized: r.type.blockSize > 1, float, exactF32, vecDot, toFloat: r.toFloat, fromFloat: r.fromFloat, usesImportance: r.usesImportance, fast: Object.freeze({ ...r.fast }) });
}

/** A float row that rounds f32 values (F16, BF16): what the file holds differs from the f32 given. */
export function ggmlRoundsFloats(t: GgmlTypeInfo | number | string): boolean {
  const r = ggmlTypeTraits(t);
  return r !== undefined && r.float && !r.exactF32;
}

/** The whole table, in type-id order. */
export function ggmlTypeTraitsTable(): GgmlTypeTraits[] {
  return GGML_TYPES.map((t) => ggmlTypeTraits(t)!);
}

/** Install (or with undefined, remove) a fast quantizer in a type's row; see the module comment. */
export function registerGgmlFastQuantizer(t: GgmlTypeInfo | number | string, fast: GgmlFastQuantize | undefined): void {
  const r = rowOf(t);
  if (!r) throw new Error(`unknown GGML type ${String(t)}`);
  r.fast.quantize = fast;
}

/** Install (or with undefined, remove) a fast dequantizer in a type's row. */
export function registerGgmlFastDequantizer(t: GgmlTypeInfo | number | string, fast: GgmlFastDequantize | undefined): void {
  const r = rowOf(t);
  if (!r) throw new Error(`unknown GGML type ${String(t)}`);
  r.fast.dequantize = fast;
}

/** The scalar reference dequantizer of a registered codec. */
export function ggmlReferenceDequantizer(t: GgmlTypeInfo | number | string): GgmlCodec['dequantize'] | undefined {
  const r = rowOf(t);
  return r?.codec ? r.toFloat : undefined;
}

/** The fast quantizer installed for a type, if any. */
export function ggmlFastQuantizer(t: GgmlTypeInfo | number | string): GgmlFastQuantize | undefined {
  return rowOf(t)?.fast.quantize;
}

/** The scalar reference quantizer of a registered codec (what `quantize` does without fast paths). */
export function ggmlReferenceQuantizer(t: GgmlTypeInfo | number | string): Quantize | undefined {
  const r = rowOf(t);
  return r?.codec ? r.fromFloat : undefined;
}
