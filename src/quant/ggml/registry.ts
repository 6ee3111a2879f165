/**
 * The GGML codec registry: one GgmlCodec per GGML type that lowbit can dequantize (and quantize).
 * Tests iterate it, so a type is tested the moment it is registered.
 *
 * Fast paths: a faster quantizer for a type (the WebAssembly kernels in kernels/ggml-quant.ts, which
 * register themselves when imported) sits behind the registered codec's `quantize`: calls without an
 * importance vector go to it, calls with one (the imatrix paths) and anything it declines go to the
 * scalar reference. Likewise a fast dequantizer behind `dequantize`. The references stay reachable
 * through ggmlReferenceQuantizer() / ggmlReferenceDequantizer(), and a fast path must produce the
 * reference's bytes (floats) exactly.
 */
import type { GgmlCodec, GgmlTypeInfo } from './types.js';
import { ggmlTypeById, ggmlTypeByName } from './types.js';

/** quantize whole rows (no importance) into out; returns false to decline (the reference then runs) */
export type GgmlFastQuantize = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array) => boolean;
/** dequantize n elements into out; returns false to decline (the reference then runs) */
export type GgmlFastDequantize = (src: Uint8Array, n: number, out: Float32Array) => boolean;

type Quantize = NonNullable<GgmlCodec['quantize']>;

const codecs: GgmlCodec[] = [];
const references = new Map<number, Quantize>();
const fastQuantizers = new Map<number, GgmlFastQuantize>();
const fastDequantizers = new Map<number, GgmlFastDequantize>();
const referenceDequantizers = new Map<number, GgmlCodec['dequantize']>();

export const ggmlCodecs: readonly GgmlCodec[] = codecs;

function typeInfo(t: GgmlTypeInfo | number | string): GgmlTypeInfo | undefined {
  return typeof t === 'number' ? ggmlTypeById(t) : typeof t === 'string' ? ggmlTypeByName(t) : t;
}

/** The codec as registered: `quantize` and `dequantize` try the type's fast paths first (when there are). */
function withFastPath(c: GgmlCodec): GgmlCodec {
  const id = c.type.id;
  const refDequantize = c.dequantize;
  referenceDequantizers.set(id, refDequantize);
  const dequantize = (src: Uint8Array, n: number, out: Float32Array): void => {
    const fast = fastDequantizers.get(id);
    if (fast !== undefined && fast(src, n, out)) return;
    refDequantize(src, n, out);
  };
  const ref = c.quantize;
  if (!ref) return Object.freeze({ ...c, dequantize });
  references.set(id, ref);
  return Object.freeze({
    ...c,
    quantize(src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array): void {
      if (importance === undefined) {
        const fast = fastQuantizers.get(id);
        if (fast !== undefined && fast(src, nRows, rowLength, out)) return;
      }
      ref(src, nRows, rowLength, out, importance);
    },
    dequantize,
  });
}

export function registerGgmlCodec(c: GgmlCodec): void {
  if (codecs.some((x) => x.type.id === c.type.id)) throw new Error(`GGML codec for ${c.type.name} registered twice`);
  codecs.push(withFastPath(c));
}

export function ggmlCodec(t: GgmlTypeInfo | number | string): GgmlCodec | undefined {
  const info = typeInfo(t);
  if (!info) return undefined;
  return codecs.find((c) => c.type.id === info.id);
}

/** Registers each codec whose type has none yet (idempotent for repeated imports of a codec list). */
export function registerGgmlCodecs(list: readonly GgmlCodec[]): void {
  for (const c of list) if (!codecs.some((x) => x.type.id === c.type.id)) codecs.push(withFastPath(c));
}

/** Attach (or with undefined, remove) a fast quantizer for a block type; see the module comment. */
export function registerGgmlFastQuantizer(t: GgmlTypeInfo | number | string, fast: GgmlFastQuantize | undefined): void {
  const info = typeInfo(t);
  if (!info) throw new Error(`unknown GGML type ${String(t)}`);
  if (fast) fastQuantizers.set(info.id, fast);
  else fastQuantizers.delete(info.id);
}

/** Attach (or with undefined, remove) a fast dequantizer for a block type. */
export function registerGgmlFastDequantizer(t: GgmlTypeInfo | number | string, fast: GgmlFastDequantize | undefined): void {
  const info = typeInfo(t);
  if (!info) throw new Error(`unknown GGML type ${String(t)}`);
  if (fast) fastDequantizers.set(info.id, fast);
  else fastDequantizers.delete(info.id);
}

/** The scalar reference dequantizer of a registered codec. */
export function ggmlReferenceDequantizer(t: GgmlTypeInfo | number | string): GgmlCodec['dequantize'] | undefined {
  const info = typeInfo(t);
  return info ? referenceDequantizers.get(info.id) : undefined;
}

/** The fast quantizer registered for a type, if any. */
export function ggmlFastQuantizer(t: GgmlTypeInfo | number | string): GgmlFastQuantize | undefined {
  const info = typeInfo(t);
  return info ? fastQuantizers.get(info.id) : undefined;
}

/** The scalar reference quantizer of a registered codec (what `quantize` does without fast paths). */
export function ggmlReferenceQuantizer(t: GgmlTypeInfo | number | string): Quantize | undefined {
  const info = typeInfo(t);
  return info ? references.get(info.id) : undefined;
}
