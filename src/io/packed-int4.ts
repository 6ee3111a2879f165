/**
 * GPTQ and AWQ packed int4 linear layers: the safetensors layouts that AutoGPTQ / GPTQModel and
 * AutoAWQ (GEMM) write, read and written here. A linear layer W [out, in] (y = W x) groups its input
 * features by G:
 *
 *   w[n][k] = scale[g][n] * (q[n][k] - zero[g][n]),   g = g_idx[k]  (= floor(k / G) without act-order)
 *   q, zero in 0..15
 *
 * GPTQ (checkpoint_format "gptq", the v1 convention):
 *   P.qweight I32 [in/8, out]   word (k/8, n) holds q[n][k] in bits 4*(k%8)          (packed along inputs)
 *   P.qzeros  I32 [in/G, out/8] word (g, n/8) holds zero[g][n] - 1 in bits 4*(n%8)   ("gptq_v2": zero itself)
 *   P.scales  F16 [in/G, out]
 *   P.g_idx   I32 [in]          group of each input feature
 * AWQ (version "gemm"):
 *   P.qweight I32 [in, out/8]   word (k, n/8) holds q[n][k] in nibble SLOT[n%8]      (packed along outputs)
 *   P.qzeros  I32 [in/G, out/8] the same nibble order
 *   P.scales  F16 [in/G, out]
 *   nibble j of a word holds column 8w + ORDER[j], ORDER = 0,2,4,6,1,3,5,7 (SLOT is its inverse)
 *
 * The v1 "- 1" means a zero-point of 0 cannot be stored (it would read back as 16); the writer refuses
 * such a group rather than write a wrong file.
 */
import { fail, LowbitError } from '../errors.js';
import { f16ToF32 } from '../formats/half.js';
import { genericConfigOf, unpackGroupedCodes } from '../quant/schemes/generic.js';
import type { QuantScheme } from '../quant/scheme.js';
import { toHfRows } from './hf-llama.js';
import type { SafetensorsTensorInfo } from './safetensors.js';

export type PackedInt4Layout = 'gptq' | 'awq';

/** safetensors __metadata__ key holding the GGUF tokenizer.* entries as JSON (lowbit's GPTQ/AWQ writer) */
export const LOWBIT_TOKENIZER_KEY = 'lowbit.tokenizer';
export const PACKED_INT4_LAYOUTS: readonly PackedInt4Layout[] = ['gptq', 'awq'];

/** nibble j of an AWQ word holds column 8w + AWQ_ORDER[j] */
export const AWQ_ORDER: readonly number[] = [0, 2, 4, 6, 1, 3, 5, 7];
/** column c % 8 sits in nibble AWQ_SLOT[c] */
const AWQ_SLOT: readonly number[] = AWQ_ORDER.map((_, c) => AWQ_ORDER.indexOf(c));

// ---- reading -----------------------------------------------------------------------------------

export interface PackedInt4Group {
  /** tensor name prefix, e.g. 'model.layers.0.self_attn.q_proj' */
  readonly prefix: string;
  readonly layout: PackedInt4Layout;
  readonly bits: 4;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly groupSize: number;
  readonly qweight: SafetensorsTensorInfo;
  readonly scales: SafetensorsTensorInfo;
  readonly qzeros?: SafetensorsTensorInfo;
  readonly gIdx?: SafetensorsTensorInfo;
}

const SCALE_DTYPES = ['F16', 'BF16', 'F32'];
const shapeOf = (t: SafetensorsTensorInfo) => `[${t.shape.join(', ')}]`;

/**
 * Recognize packed int4 linear layers: every `P.qweight` with its `P.scales` (and `P.qzeros`, `P.g_idx`).
 * The layout follows from the shapes (GPTQ: scales has qweight's columns; AWQ: 8 times as many).
 * A `P.qweight` whose companions do not fit fails with the names and shapes involved, or, with
 * `onProblem`, is reported there and skipped (listing a file need not understand every layer).
 */
export function findPackedInt4(tensors: readonly SafetensorsTensorInfo[], onProblem?: (message: string) => void): PackedInt4Group[] {
  const by = new Map(tensors.map((t) => [t.name, t]));
  const out: PackedInt4Group[] = [];
  for (const t of tensors) {
    if (!t.name.endsWith('.qweight')) continue;
    try {
      out.push(packedGroup(t, by));
    } catch (e) {
      if (!onProblem || !(e instanceof LowbitError)) throw e;
      onProblem(e.message);
    }
  }
  return out;
}

function packedGroup(t: SafetensorsTensorInfo, by: ReadonlyMap<string, SafetensorsTensorInfo>): PackedInt4Group {
  const prefix = t.name.slice(0, -'.qweight'.length);
  const scales = by.get(prefix + '.scales');
  const qzeros = by.get(prefix + '.qzeros');
  const gIdx = by.get(prefix + '.g_idx');
  if (!scales) fail(`${t.name}: packed int4 weight without ${prefix}.scales`);
  if (t.dtype !== 'I32') fail(`${t.name}: packed int4 weights are I32 (8 values per word), not ${t.dtype}`);
  if (t.shape.length !== 2) fail(`${t.name}: packed int4 weight must be 2-D, got shape ${shapeOf(t)}`);
  if (!SCALE_DTYPES.includes(scales.dtype)) fail(`${scales.name}: scales must be F16, BF16 or F32, not ${scales.dtype}`);
  if (scales.shape.length !== 2) fail(`${scales.name}: scales must be 2-D, got shape ${shapeOf(scales)}`);
  const [r, c] = t.shape;
  const [groups, sc] = scales.shape;
  let layout: PackedInt4Layout;
  let inFeatures: number, outFeatures: number;
  if (sc === c) [layout, inFeatures, outFeatures] = ['gptq', r * 8, c];
  else if (sc === c * 8) [layout, inFeatures, outFeatures] = ['awq', r, c * 8];
  else
    fail(
      `${t.name} ${shapeOf(t)} does not match ${scales.name} ${shapeOf(scales)}: GPTQ has qweight [in/8, out] with scales [in/G, out], AWQ has qweight [in, out/8] with scales [in/G, out]`,
    );
  if (groups < 1 || groups > inFeatures) fail(`${scales.name} ${shapeOf(scales)}: ${groups} groups for ${inFeatures} input features`);
  if (inFeatures % groups !== 0 && !gIdx) fail(`${scales.name} ${shapeOf(scales)}: ${groups} groups do not divide ${inFeatures} input features (and there is no ${prefix}.g_idx)`);
  if (qzeros) {
    if (qzeros.dtype !== 'I32') fail(`${qzeros.name}: packed zero-points are I32, not ${qzeros.dtype}`);
    if (outFeatures % 8 !== 0 || qzeros.shape.length !== 2 || qzeros.shape[0] !== groups || qzeros.shape[1] !== outFeatures / 8)
      fail(`${qzeros.name} ${shapeOf(qzeros)} does not match ${groups} groups x ${outFeatures} outputs (expected [${groups}, ${outFeatures / 8}])`);
  }
  if (gIdx && (gIdx.dtype !== 'I32' || gIdx.shape.length !== 1 || gIdx.shape[0] !== inFeatures))
    fail(`${gIdx.name}: g_idx must be I32 [${inFeatures}], got ${gIdx.dtype} ${shapeOf(gIdx)}`);
  return { prefix, layout, bits: 4, inFeatures, outFeatures, groupSize: Math.ceil(inFeatures / groups), qweight: t, scales, qzeros, gIdx };
}

export interface DequantizeInt4Options {
  /** GPTQ zero-point offset: 1 for checkpoint_format "gptq" (v1, the default), 0 for "gptq_v2" */
  readonly gptqZeroOffset?: 0 | 1;
}

/**
 * Dequantize a packed int4 layer to float32 [outFeatures, inFeatures] (row-major, like a Linear weight).
 * GPTQ: w = scale * (q - (z + offset)); AWQ: w = scale * (q - z). Without qzeros the zero-point is 8.
 */
export async function dequantizePackedInt4(g: PackedInt4Group, toFloat: (t: SafetensorsTensorInfo) => Promise<Float32Array>, opts: DequantizeInt4Options = {}): Promise<Float32Array> {
  const read32 = async (t: SafetensorsTensorInfo) => new Uint32Array((await t.source.read(t.fileOffset, t.byteLength)).slice().buffer);
  const q = await read32(g.qweight);
  const z = g.qzeros ? await read32(g.qzeros) : undefined;
  const s = await toFloat(g.scales);
  const { inFeatures: K, outFeatures: N, groupSize } = g;
  const nGroups = g.scales.shape[0];
  let gidx: Int32Array | undefined;
  if (g.gIdx) {
    gidx = new Int32Array((await read32(g.gIdx)).buffer);
    for (let k = 0; k < K; k++) if (!(gidx[k] >= 0 && gidx[k] < nGroups)) fail(`${g.gIdx.name}: entry ${k} is ${gidx[k]}, outside the ${nGroups} groups`);
  }
  const offset = g.layout === 'gptq' ? (opts.gptqZeroOffset ?? 1) : 0;
  const N8 = N >> 3;
  const out = new Float32Array(N * K);
  for (let k = 0; k < K; k++) {
    const grp = gidx ? gidx[k] : Math.floor(k / groupSize);
    for (let n = 0; n < N; n++) {
      let qv: number, zv: number;
      if (g.layout === 'gptq') {
        qv = (q[(k >> 3) * N + n] >>> ((k & 7) * 4)) & 15;
        zv = z ? ((z[grp * N8 + (n >> 3)] >>> ((n & 7) * 4)) & 15) + offset : 8;
      } else {
        const shift = AWQ_SLOT[n & 7] * 4;
        qv = (q[k * N8 + (n >> 3)] >>> shift) & 15;
        zv = z ? (z[grp * N8 + (n >> 3)] >>> shift) & 15 : 8;
      }
      out[n * K + k] = s[grp * N + n] * (qv - zv);
    }
  }
  return out;
}

/** How a Hugging Face config.json says its packed layers are stored. */
export interface PackedInt4Config {
  readonly method: PackedInt4Layout;
  readonly bits: 4;
  readonly groupSize?: number;
  readonly gptqZeroOffset: 0 | 1;
}

/**
 * Read `quantization_config` of a config.json object: undefined when absent (or another method, which the
 * caller may reject); fails on packed variants lowbit does not read (bits other than 4, AWQ GEMV, Marlin).
 */
export function packedInt4ConfigOf(hfConfig: unknown): PackedInt4Config | undefined {
  if (typeof hfConfig !== 'object' || hfConfig === null) return undefined;
  const qc = (hfConfig as Record<string, unknown>).quantization_config;
  if (qc === undefined) return undefined;
  if (typeof qc !== 'object' || qc === null) fail('config.json: quantization_config is not an object');
  const c = qc as Record<string, unknown>;
  const method = String(c.quant_method ?? '').toLowerCase();
  if (method !== 'gptq' && method !== 'awq') fail(`config.json: quantization_config.quant_method '${String(c.quant_method)}' is not one lowbit reads (gptq, awq)`);
  const bits = c.bits ?? c.w_bit;
  if (bits !== 4) fail(`config.json: ${method} with ${String(bits)} bits; lowbit reads 4-bit packed layers only`);
  const g = c.group_size ?? c.q_group_size;
  const groupSize = typeof g === 'number' && g > 0 ? g : undefined;
  if (method === 'awq') {
    const version = String(c.version ?? 'gemm').toLowerCase();
    if (version !== 'gemm') fail(`config.json: AWQ version '${version}' is not supported (lowbit reads the GEMM layout)`);
    if (c.zero_point === false) fail('config.json: AWQ without zero-points (zero_point: false) is not supported');
    return { method, bits: 4, groupSize, gptqZeroOffset: 1 };
  }
  const fmt = String(c.checkpoint_format ?? 'gptq').toLowerCase();
  if (fmt !== 'gptq' && fmt !== 'gptq_v2') fail(`config.json: GPTQ checkpoint_format '${fmt}' is not supported (gptq, gptq_v2)`);
  return { method, bits: 4, groupSize, gptqZeroOffset: fmt === 'gptq_v2' ? 0 : 1 };
}

// ---- writing -----------------------------------------------------------------------------------

/** A 4-bit grouped linear weight [outFeatures, inFeatures], unpacked. */
export interface Int4Linear {
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly groupSize: number;
  readonly symmetric: boolean;
  /** codes 0..15, [out, in] */
  readonly q: Uint8Array;
  /** zero-points 0..15, [out, in / G] */
  readonly zeros: Uint8Array;
  /** f16 scale bits, [out, in / G] */
  readonly scales: Uint16Array;
}

/**
 * Why a scheme cannot be stored as GPTQ/AWQ int4, or undefined when it can: lowbit's generic schemes with
 * int4 (symmetric, zero-point 8) or uint4 with an integer zero-point, an f16 scale per group along a row.
 */
export function int4SchemeProblem(s: QuantScheme): string | undefined {
  const c = genericConfigOf(s);
  if (!c || c.element.kind !== 'int' || c.element.bits !== 4) return `scheme ${s.id} is not a 4-bit integer scheme (use int4 with --group G, optionally --asym)`;
  if (c.granularity !== 'group') return `scheme ${s.id} has a scale per ${c.granularity}, not per group (use --group G)`;
  if (c.asymmetric && c.zeroPoint === 'float') return `scheme ${s.id} has a float zero-point; GPTQ/AWQ store integer zero-points`;
  if (!c.asymmetric && !c.element.signed) return `scheme ${s.id}: symmetric uint4 has no zero-point 8 equivalent (use int4)`;
  if ((c.scaleFormat ?? 'f16') !== 'f16') return `scheme ${s.id} has ${c.scaleFormat} scales; GPTQ/AWQ store F16 scales`;
  return undefined;
}

/** The q / zero / scale parts of a lowbit generic int4 tensor ([rows = out, rowLength = in]). */
export function int4LinearFromScheme(s: QuantScheme, packed: Uint8Array, rows: number, rowLength: number): Int4Linear {
  const problem = int4SchemeProblem(s);
  if (problem) fail(problem);
  const g = unpackGroupedCodes(s, packed, rows, rowLength);
  const symmetric = g.zeroPoints === undefined;
  // int4 two's complement c in -8..7 is q - 8 with q = c ^ 8 (the nibble with its top bit flipped)
  const q = Uint8Array.from(g.codes, (c) => (symmetric ? c ^ 8 : c));
  const zeros = symmetric ? new Uint8Array(g.scaleCodes.length).fill(8) : Uint8Array.from(g.zeroPoints!);
  return { outFeatures: rows, inFeatures: rowLength, groupSize: g.groupSize, symmetric, q, zeros, scales: Uint16Array.from(g.scaleCodes) };
}

/** w = scale * (q - zero), float32 [out, in]: the values a reader of either layout reconstructs. */
export function dequantizeInt4Linear(w: Int4Linear): Float32Array {
  const { outFeatures: N, inFeatures: K, groupSize: G } = w;
  const ng = K / G;
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const j = n * ng + Math.floor(k / G);
      out[n * K + k] = f16ToF32(w.scales[j]) * (w.q[n * K + k] - w.zeros[j]);
    }
  return out;
}

/** Reorder output rows from GGUF's interleaved RoPE order to HF's (q/k projections; see hf-llama.ts). */
export function int4RowsToHf(w: Int4Linear, nHead: number): Int4Linear {
  const ng = w.inFeatures / w.groupSize;
  const bytes = (a: Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const scales = toHfRows(bytes(w.scales), w.outFeatures, ng * 2, nHead);
  return {
    ...w,
    q: toHfRows(w.q, w.outFeatures, w.inFeatures, nHead),
    zeros: toHfRows(w.zeros, w.outFeatures, ng, nHead),
    scales: new Uint16Array(scales.buffer, scales.byteOffset, scales.length / 2),
  };
}

/** Why [out, in] with group G cannot be packed in `layout`, or undefined. */
export function int4ShapeProblem(layout: PackedInt4Layout, outFeatures: number, inFeatures: number, groupSize: number): string | undefined {
  if (inFeatures % groupSize !== 0) return `${inFeatures} input features are not a multiple of the group size ${groupSize}`;
  if (layout === 'gptq' && inFeatures % 8 !== 0) return `${inFeatures} input features are not a multiple of 8 (GPTQ packs 8 inputs per I32)`;
  if (outFeatures % 8 !== 0) return `${outFeatures} output features are not a multiple of 8 (${layout === 'gptq' ? 'GPTQ packs zero-points' : 'AWQ packs weights and zero-points'} 8 outputs per I32)`;
  return undefined;
}

/** Packed tensors of one layer, in the order they are written, named by suffix (qweight, qzeros, scales, g_idx). */
export interface PackedInt4Tensors {
  readonly suffix: 'qweight' | 'qzeros' | 'scales' | 'g_idx';
  readonly dtype: 'I32' | 'F16';
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

const u8 = (a: Uint32Array | Int32Array | Uint16Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The tensor shapes `layout` writes for a layer (for the header, before any data exists). */
export function packedInt4Shapes(layout: PackedInt4Layout, outFeatures: number, inFeatures: number, groupSize: number): Omit<PackedInt4Tensors, 'data'>[] {
  const ng = inFeatures / groupSize;
  const common = [
    { suffix: 'qweight', dtype: 'I32', shape: layout === 'gptq' ? [inFeatures / 8, outFeatures] : [inFeatures, outFeatures / 8] },
    { suffix: 'qzeros', dtype: 'I32', shape: [ng, outFeatures / 8] },
    { suffix: 'scales', dtype: 'F16', shape: [ng, outFeatures] },
  ] as const;
  return layout === 'gptq' ? [...common, { suffix: 'g_idx', dtype: 'I32', shape: [inFeatures] }] : [...common];
}

/**
 * Pack one layer. `name` labels errors. GPTQ v1 stores zero - 1: a group whose zero-point is 0 fails
 * unless gptqZeroOffset is 0 (checkpoint_format gptq_v2).
 */
export function packInt4Linear(layout: PackedInt4Layout, w: Int4Linear, name: string, opts: DequantizeInt4Options = {}): PackedInt4Tensors[] {
  const { outFeatures: N, inFeatures: K, groupSize: G } = w;
  const problem = int4ShapeProblem(layout, N, K, G);
  if (problem) fail(`${name} [${N}, ${K}]: ${problem}`);
  const ng = K / G;
  const N8 = N / 8;
  const scales = new Uint16Array(ng * N); // [groups, out]: the transpose of w.scales
  for (let n = 0; n < N; n++) for (let j = 0; j < ng; j++) scales[j * N + n] = w.scales[n * ng + j];
  const qzeros = new Uint32Array(ng * N8);
  const qweight = new Uint32Array(K * N8);
  if (layout === 'gptq') {
    const offset = opts.gptqZeroOffset ?? 1;
    for (let n = 0; n < N; n++)
      for (let j = 0; j < ng; j++) {
        const z = w.zeros[n * ng + j] - offset;
        if (z < 0)
          fail(`${name}: group ${j} of output ${n} has zero-point 0, which GPTQ's v1 format (stored as zero - 1) cannot hold; write --layout awq, or a symmetric scheme`);
        qzeros[j * N8 + (n >> 3)] |= z << ((n & 7) * 4);
      }
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) qweight[(k >> 3) * N + n] |= w.q[n * K + k] << ((k & 7) * 4);
    const gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / G));
    const shapes = packedInt4Shapes('gptq', N, K, G);
    return [qweight, qzeros, scales, gIdx].map((a, i) => ({ ...shapes[i], data: u8(a) }));
  }
  for (let n = 0; n < N; n++) {
    const shift = AWQ_SLOT[n & 7] * 4;
    for (let j = 0; j < ng; j++) qzeros[j * N8 + (n >> 3)] |= w.zeros[n * ng + j] << shift;
    for (let k = 0; k < K; k++) qweight[k * N8 + (n >> 3)] |= w.q[n * K + k] << shift;
  }
  const shapes = packedInt4Shapes('awq', N, K, G);
  return [qweight, qzeros, scales].map((a, i) => ({ ...shapes[i], data: u8(a) }));
}

/** The `quantization_config` of config.json for a checkpoint written in `layout`. */
export function hfQuantizationConfig(layout: PackedInt4Layout, groupSize: number, symmetric: boolean, notConverted: readonly string[] = [], quantized?: readonly string[][]): Record<string, unknown> {
  if (layout === 'gptq')
    return {
      quant_method: 'gptq',
      bits: 4,
      group_size: groupSize,
      desc_act: false,
      sym: symmetric,
      true_sequential: true,
      checkpoint_format: 'gptq',
      ...(quantized ? { modules_in_block_to_quantize: quantized } : {}),
    };
  return {
    quant_method: 'awq',
    version: 'gemm',
    zero_point: true,
    bits: 4,
    group_size: groupSize,
    w_bit: 4,
    q_group_size: groupSize,
    ...(notConverted.length ? { modules_to_not_convert: notConverted } : {}),
  };
}
