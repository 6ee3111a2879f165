/**
 * GGML tensor types: ids as in ggml.h (never reused; removed ids stay unassigned), elements per block
 * and bytes per block as in ggml-common.h. Facts from llama.cpp (v0.5.0 bundle in node-llama-cpp 3.22.1).
 */
import { fail } from '../../errors.js';

export interface GgmlTypeInfo {
  readonly id: number;
  /** llama.cpp's name, e.g. 'Q4_K', 'IQ4_XS', 'F16' */
  readonly name: string;
  /** elements per block */
  readonly blockSize: number;
  /** bytes per block */
  readonly typeSize: number;
}

/**
 * The second kind of fact per type, in the same rows: the type llama.cpp's CPU backend converts
 * activations to before a dot product with a weight of this type (ggml-cpu's type_traits
 * vec_dot_type); none for the integer and F64 types (never weights).
 */
const vecDotOf = new Map<string, string>();
const T = (id: number, name: string, blockSize: number, typeSize: number, vecDot?: string): GgmlTypeInfo => {
  if (vecDot) vecDotOf.set(name, vecDot);
  return Object.freeze({ id, name, blockSize, typeSize });
};

export const GGML_TYPES: readonly GgmlTypeInfo[] = Object.freeze([
  T(0, 'F32', 1, 4, 'F32'),
  T(1, 'F16', 1, 2, 'F16'),
  T(2, 'Q4_0', 32, 18, 'Q8_0'),
  T(3, 'Q4_1', 32, 20, 'Q8_1'),
  // 4 (Q4_2) and 5 (Q4_3) were removed
  T(6, 'Q5_0', 32, 22, 'Q8_0'),
  T(7, 'Q5_1', 32, 24, 'Q8_1'),
  T(8, 'Q8_0', 32, 34, 'Q8_0'),
  T(9, 'Q8_1', 32, 36, 'Q8_1'),
  T(10, 'Q2_K', 256, 84, 'Q8_K'),
  T(11, 'Q3_K', 256, 110, 'Q8_K'),
  T(12, 'Q4_K', 256, 144, 'Q8_K'),
  T(13, 'Q5_K', 256, 176, 'Q8_K'),
  T(14, 'Q6_K', 256, 210, 'Q8_K'),
  T(15, 'Q8_K', 256, 292, 'Q8_K'),
  T(16, 'IQ2_XXS', 256, 66, 'Q8_K'),
  T(17, 'IQ2_XS', 256, 74, 'Q8_K'),
  T(18, 'IQ3_XXS', 256, 98, 'Q8_K'),
  T(19, 'IQ1_S', 256, 50, 'Q8_K'),
  T(20, 'IQ4_NL', 32, 18, 'Q8_0'),
  T(21, 'IQ3_S', 256, 110, 'Q8_K'),
  T(22, 'IQ2_S', 256, 82, 'Q8_K'),
  T(23, 'IQ4_XS', 256, 136, 'Q8_K'),
  T(24, 'I8', 1, 1),
  T(25, 'I16', 1, 2),
  T(26, 'I32', 1, 4),
  T(27, 'I64', 1, 8),
  T(28, 'F64', 1, 8),
  T(29, 'IQ1_M', 256, 56, 'Q8_K'),
  T(30, 'BF16', 1, 2, 'BF16'),
  // 31..33 (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) were removed from GGUF files
  T(34, 'TQ1_0', 256, 54, 'Q8_K'),
  T(35, 'TQ2_0', 256, 66, 'Q8_K'),
  // 36..38 (IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8) were removed
  T(39, 'MXFP4', 32, 17, 'Q8_0'),
  T(40, 'NVFP4', 64, 36, 'Q8_0'),
  T(41, 'Q1_0', 128, 18, 'Q8_0'),
  T(42, 'Q2_0', 64, 18, 'Q8_0'),
]);

const byId = new Map(GGML_TYPES.map((t) => [t.id, t]));
const byName = new Map(GGML_TYPES.map((t) => [t.name.toLowerCase(), t]));

export function ggmlTypeById(id: number): GgmlTypeInfo {
  const t = byId.get(id);
  if (!t) fail(`unknown GGML tensor type id ${id}`);
  return t;
}

export function ggmlTypeByIdOrUndefined(id: number): GgmlTypeInfo | undefined {
  return byId.get(id);
}

export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  return byName.get(name.toLowerCase().replace(/^ggml_/, ''));
}

/** The unquantized float types: stored as is, without a block codec's choices. */
const FLOAT_TYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);

/** Is a GGML type (name or info) an unquantized float type (F32, F16, BF16)? */
export function isGgmlFloat(t: GgmlTypeInfo | string | undefined): boolean {
  const name = typeof t === 'string' ? ggmlTypeByName(t)?.name : t?.name;
  return name !== undefined && FLOAT_TYPES.has(name);
}

/** llama.cpp's vec_dot_type of a weight type (the table above), Q8_K for types that have none */
export function ggmlVecDotType(weight: GgmlTypeInfo): string {
  return vecDotOf.get(weight.name) ?? 'Q8_K';
}

/** Bytes of a row of n elements, or a clear error when n is not a multiple of the block size. */
export function ggmlRowBytes(t: GgmlTypeInfo, n: number): number {
  if (n % t.blockSize !== 0) fail(`row of ${n} elements is not a multiple of ${t.name}'s block size ${t.blockSize}`);
  return (n / t.blockSize) * t.typeSize;
}

/**
 * A block type's codec. Quantizers take whole rows (rowLength a multiple of blockSize) so that
 * importance-weighted types can see a per-column importance vector (length rowLength).
 */
export interface GgmlCodec {
  readonly type: GgmlTypeInfo;
  /** quantize nRows rows of rowLength floats into out (nRows * rowBytes bytes); absent for dequantize-only types */
  readonly quantize?: (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array, importance?: Float32Array) => void;
  /** true when quantize uses `importance` (llama.cpp has an imatrix path for this type) */
  readonly usesImportance?: boolean;
  /** dequantize n elements (a multiple of blockSize) from src into out */
  readonly dequantize: (src: Uint8Array, n: number, out: Float32Array) => void;
}
