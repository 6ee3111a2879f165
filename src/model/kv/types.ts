/**
 * KV-cache types: what `-ctk` / `-ctv` (--cache-type-k / --cache-type-v) accept.
 *
 *   llama.cpp's types   f32 f16 bf16 q8_0 q4_0 q4_1 iq4_nl q5_0 q5_1: each row of a head's keys or
 *                       values stored as GGML blocks of that type, quantized as llama.cpp's CPU backend
 *                       does (ggml_set_rows -> the type's from_float), with llama.cpp's numerics in
 *                       attention (queries rounded to the key type's vec_dot type).
 *   KIVI (Liu et al. 2024)  kivi2 kivi3 kivi4, kivi<b>g<G>: asymmetric b-bit integers with an f16 scale
 *                       and an f16 minimum per group of G (default 32; 16, 32, 64 or 128); keys per
 *                       channel (a group = G positions of one channel), values per token (a group = G
 *                       channels of one position); the most recent positions stay f32 until a chunk
 *                       of --kv-residual R positions fills.
 *   KVQuant (Hooper et al. 2024)  kvquant3 kvquant4: keys per channel before RoPE, values per token,
 *                       per-layer non-uniform grids fitted on calibration activations (--calib), 1 % of
 *                       each vector kept exactly, the first position in f32 (src/model/kv/kvquant.ts).
 *   rot-<type>          any of the above after a Hadamard rotation of each head (QuaRot / RotateKV):
 *                       keys and queries are rotated alike (q.k is unchanged), values are rotated and
 *                       the attention output rotated back.
 *
 * Bits per element, scales counted: q8_0 8.5, q4_0 4.5, q4_1 5, iq4_nl 4.5, q5_0 5.5, q5_1 6,
 * kivi<b>g<G> b + 32/G (kivi2 3, kivi3 4, kivi3g64 3.5, kivi4 5), plus the f32 residual (< R positions).
 */
import { fail } from '../../errors.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../../quant/ggml/types.js';

export const GGML_CACHE_TYPES: readonly string[] = Object.freeze(['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'iq4_nl', 'q5_0', 'q5_1']);
export const RESEARCH_CACHE_TYPES: readonly string[] = Object.freeze(['kivi2', 'kivi3', 'kivi4', 'kivi<b>g<G>', 'kvquant3', 'kvquant4']);
export const KV_CACHE_TYPES: readonly string[] = Object.freeze([...GGML_CACHE_TYPES, ...RESEARCH_CACHE_TYPES]);

export interface KvCacheType {
  /** as given, e.g. 'rot-q4_0' */
  readonly name: string;
  /** without the rotation prefix, e.g. 'q4_0', 'kivi2' */
  readonly scheme: string;
  readonly rotate: boolean;
  /** `pre-<type>` (KIVI keys): quantized before RoPE, RoPE applied to the dequantized keys (as KVQuant) */
  readonly preRope: boolean;
  readonly family: 'ggml' | 'kivi' | 'kvquant';
  /** llama.cpp's types: the GGML block type of a row */
  readonly ggml?: GgmlTypeInfo;
  /** KIVI, KVQuant: bits per code (KIVI with per-layer widths: their mean) */
  readonly bits?: number;
  /** KIVI `kivi<b0>.<b1>...`: bits per code of each layer */
  readonly layerBits?: readonly number[];
  /** elements that share a scale (GGML: along the head dimension, 1 for f32/f16/bf16; KIVI: the group G) */
  readonly blockSize: number;
}

/** A cache type by name, or a clear error listing the known ones. */
export function parseKvCacheType(name: string): KvCacheType {
  const lower = name.toLowerCase();
  const m0 = /^(rot-)?(pre-)?(.*)$/.exec(lower)!;
  const rotate = m0[1] !== undefined;
  const preRope = m0[2] !== undefined;
  const scheme = m0[3];
  const unknown = () => fail(`unknown KV cache type '${name}' (known: ${KV_CACHE_TYPES.join(', ')}, kivi<b0>.<b1>...[g<G>] (bits per layer), rot-<type> for any of them, pre-kivi* for pre-RoPE keys)`);
  if (GGML_CACHE_TYPES.includes(scheme)) {
    if (preRope) unknown();
    const ggml = ggmlTypeByName(scheme)!;
    return Object.freeze({ name: lower, scheme, rotate, preRope, family: 'ggml', ggml, blockSize: ggml.blockSize });
  }
  const m = /^kivi([234](?:\.[234])*)(?:g(16|32|64|128))?$/.exec(scheme);
  if (m) {
    const layerBits = m[1].split('.').map(Number);
    const bits = layerBits.reduce((a, b) => a + b, 0) / layerBits.length;
    return Object.freeze({ name: lower, scheme, rotate, preRope, family: 'kivi', bits, layerBits: layerBits.length > 1 ? Object.freeze(layerBits) : undefined, blockSize: Number(m[2] ?? 32) });
  }
  const q = /^kvquant([34])$/.exec(scheme);
  if (q && !preRope) return Object.freeze({ name: lower, scheme, rotate, preRope: false, family: 'kvquant', bits: Number(q[1]), blockSize: 1 });
  return unknown();
}

/** Is the type quantized (anything but f32/f16/bf16)? */
export function isQuantizedCacheType(t: KvCacheType): boolean {
  return t.family !== 'ggml' || t.ggml!.blockSize > 1;
}

/**
 * Refuse a type that cannot store a head of `headDim` values: a block (or KIVI's value group of 32)
 * must divide the head size, and a rotation needs a power-of-two head size.
 */
export function checkKvCacheType(t: KvCacheType, side: 'keys' | 'values', headDim: number): void {
  const flag = side === 'keys' ? '--cache-type-k' : '--cache-type-v';
  // KIVI keys are grouped over positions (G of one channel), values over a row (checked by the side)
  const block = t.family === 'kivi' ? 1 : t.blockSize;
  if (t.preRope && side === 'values') fail(`${flag} ${t.name}: pre- (quantize before RoPE) applies to keys`);
  if (headDim % block !== 0) fail(`${flag} ${t.name}: blocks of ${block} values do not divide the model's head size ${headDim}`);
  if (t.rotate && (headDim & (headDim - 1)) !== 0) fail(`${flag} ${t.name}: a Hadamard rotation needs a power-of-two head size, the model's is ${headDim}`);
}

/** Bits a type stores per element of a kvDim-wide row (scales and outliers included; KIVI's f32 residual and KVQuant's f32 first position not counted). */
export function cacheTypeBits(t: KvCacheType, side: 'keys' | 'values' = 'values', kvDim = 128): number {
  if (t.family === 'kivi') return t.bits! + 32 / t.blockSize;
  if (t.family === 'kvquant') return t.bits! + (24 * Math.ceil(kvDim / 100) + (side === 'values' ? 32 : 0)) / kvDim;
  return (8 * t.ggml!.typeSize) / t.ggml!.blockSize;
}
