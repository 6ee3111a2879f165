/**
 * TensorFlow.js graph models: model.json + binary weight shards (tfjs-converter's layout), read and
 * written with TFJS's own weight quantization.
 *
 * model.json: { format?, generatedBy?, convertedBy?, modelTopology, weightsManifest: [{ paths: [shard
 * files], weights: [{ name, shape, dtype, quantization? }] }], ... }. A group's shards concatenated hold
 * its weights back to back in manifest order, each `prod(shape)` elements of its stored type:
 *   float32 / int32: 4 bytes little-endian; bool: 1 byte; string: not supported here;
 *   quantization { dtype: 'uint8' | 'uint16', scale, min }: 1 or 2 bytes q, value = q * scale + min;
 *   quantization { dtype: 'float16' }: IEEE half.
 * Quantizing (uint8 / uint16): per tensor, the range [min(w, 0), max(w, 0)] with min nudged so that 0 is
 * a code (scale = (max - min) / (2^bits - 1), min = -round(-min / scale) * scale), q = round((w - min) / scale).
 * Shards are written at most 4 MiB each, as tfjs-converter does.
 *
 * lowbit's own formats (int4 groups, NF4, MXFP4, GGML blocks, ...: any scheme of quant/registry.ts) are
 * written as quantization { dtype: 'lowbit', scheme, options?, transposed?, original_dtype: 'float32' }:
 * the weight viewed as a [rows, last dim] matrix (transposed: its transpose, so blocks run along the
 * first axis, the reduction axis of a TF MatMul kernel [K, N]) packed by the scheme. TensorFlow.js itself
 * refuses that dtype by name; lowbit reads it back to float32 (readTfjs, browser-safe) and hands TFJS the
 * float model (tfjsMemoryArtifacts -> tf.io.fromMemory), so the download is the packed size.
 */
import { fail } from '../errors.js';
import { concatParts } from './sink.js';
import { f16ToF32, f32ToF16 } from '../formats/half.js';
import { dequantizeScheme, quantizeScheme, resolveScheme, type ResolveOptions } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';

export type TfjsQuantization = 'uint8' | 'uint16' | 'float16';

export interface TfjsWeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32' | 'bool' | string;
  quantization?: { dtype: TfjsQuantization | 'lowbit'; scale?: number; min?: number; original_dtype?: string; scheme?: string; options?: LowbitSchemeOptions; transposed?: boolean };
}

/** the scheme options a lowbit-quantized weight records (enough for resolveScheme to rebuild it) */
export type LowbitSchemeOptions = Pick<ResolveOptions, 'groupSize' | 'asymmetric' | 'granularity'>;

/** the [rows, cols] matrix view of a weight: the last axis against the rest */
const matrixOf = (shape: number[]): [number, number] => (shape.length < 2 ? [1, shape[0] ?? 1] : [shape.slice(0, -1).reduce((a, b) => a * b, 1), shape[shape.length - 1]]);

function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
  return out;
}

/** a recorded lowbit scheme, resolved (a clear line when this build does not know it) */
function lowbitScheme(name: string, options: LowbitSchemeOptions | undefined, where: string): QuantScheme {
  try {
    return resolveScheme(name, options ?? {});
  } catch (e) {
    fail(`${where}: lowbit scheme ${name} ${JSON.stringify(options ?? {})}: ${(e as Error).message}`);
  }
}

export interface TfjsWeight {
  spec: TfjsWeightSpec;
  /** float32 weights: the values (dequantized when stored quantized) */
  values?: Float32Array;
  /** other dtypes: the stored bytes */
  raw?: Uint8Array;
}

export interface TfjsModel {
  /** model.json without weightsManifest */
  json: Record<string, unknown>;
  weights: TfjsWeight[];
}

const elements = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Parse model.json and its shards. `shard(path)` returns a shard's bytes (the caller resolves paths
 * next to model.json; '..' and absolute paths are refused here).
 */
export async function readTfjs(modelJson: string, name: string, shard: (path: string) => Promise<Uint8Array>): Promise<TfjsModel> {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(modelJson);
  } catch (e) {
    fail(`${name}: not JSON (${(e as Error).message})`);
  }
  if (!j || typeof j !== 'object' || !j.modelTopology) fail(`${name}: not a TensorFlow.js model (no modelTopology)`);
  const manifest = j.weightsManifest;
  if (!Array.isArray(manifest)) fail(`${name}: no weightsManifest`);
  const weights: TfjsWeight[] = [];
  for (const [g, group] of manifest.entries()) {
    const paths = group?.paths;
    if (!Array.isArray(paths) || !Array.isArray(group.weights)) fail(`${name}: weightsManifest[${g}] needs paths and weights`);
    const parts: Uint8Array[] = [];
    for (const p of paths) {
      if (typeof p !== 'string' || p.startsWith('/') || p.split(/[\\/]/).includes('..') || /^[a-z]+:/i.test(p)) fail(`${name}: shard path '${p}' must be relative, inside the model's folder`);
      parts.push(await shard(p));
    }
    const bytes = concatParts(parts);
    let o = 0;
    for (const spec of group.weights as TfjsWeightSpec[]) {
      if (typeof spec?.name !== 'string' || !Array.isArray(spec.shape) || spec.shape.some((d) => !Number.isInteger(d) || d < 0)) fail(`${name}: weight spec ${JSON.stringify(spec).slice(0, 80)} is malformed`);
      const n = elements(spec.shape);
      const q = spec.quantization;
      if (q && !['uint8', 'uint16', 'float16', 'lowbit'].includes(q.dtype)) fail(`${name}: weight ${spec.name}: unknown quantization ${q.dtype}`);
      const lb = q?.dtype === 'lowbit' ? lowbitScheme(q.scheme ?? fail(`${name}: weight ${spec.name}: lowbit quantization without scheme`), q.options, `${name}: weight ${spec.name}`) : undefined;
      const [R, C] = matrixOf(spec.shape);
      const size = lb ? (q!.transposed ? lb.packedBytes(C, R) : lb.packedBytes(R, C)) : q ? n * (q.dtype === 'uint8' ? 1 : 2) : n * (spec.dtype === 'bool' ? 1 : spec.dtype === 'float32' || spec.dtype === 'int32' ? 4 : fail(`${name}: weight ${spec.name} of dtype ${spec.dtype} is not supported`));
      if (o + size > bytes.length) fail(`${name}: weight ${spec.name} (${size} bytes at ${o}) is past the end of its shards (${bytes.length} bytes; truncated shard?)`);
      const b = bytes.slice(o, o + size);
      o += size;
      const dv = new DataView(b.buffer);
      if (spec.dtype === 'float32' || q?.original_dtype === 'float32') {
        const v = new Float32Array(n);
        if (!q) v.set(new Float32Array(b.buffer, 0, n)); // b is a fresh, aligned copy (little-endian hosts)
        else if (lb) v.set(q.transposed ? transpose(dequantizeScheme(lb, b, C, R), C, R) : dequantizeScheme(lb, b, R, C));
        else if (q.dtype === 'float16') for (let i = 0; i < n; i++) v[i] = f16ToF32(dv.getUint16(2 * i, true));
        else {
          const scale = q.scale ?? fail(`${name}: weight ${spec.name}: ${q.dtype} without scale`);
          const min = q.min ?? fail(`${name}: weight ${spec.name}: ${q.dtype} without min`);
          for (let i = 0; i < n; i++) v[i] = Math.fround((q.dtype === 'uint8' ? b[i] : dv.getUint16(2 * i, true)) * scale + min);
        }
        weights.push({ spec, values: v });
      } else {
        if (q) fail(`${name}: weight ${spec.name}: quantized ${spec.dtype} weights are not supported`);
        weights.push({ spec, raw: b });
      }
    }
    if (o !== bytes.length) fail(`${name}: weightsManifest[${g}] describes ${o} bytes, its shards hold ${bytes.length}`);
  }
  const { weightsManifest: _drop, ...rest } = j;
  return { json: rest, weights };
}

/** TFJS's affine quantization of one tensor (see the file header): codes, scale and nudged min */
export function tfjsAffine(w: Float32Array, bits: 8 | 16): { q: Uint8Array | Uint16Array; scale: number; min: number; dq: Float32Array } {
  let lo = 0;
  let hi = 0;
  for (const v of w) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const qmax = 2 ** bits - 1;
  const scale = hi > lo ? (hi - lo) / qmax : 1;
  const min = -Math.round(-lo / scale) * scale;
  const q = bits === 8 ? new Uint8Array(w.length) : new Uint16Array(w.length);
  const dq = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) {
    q[i] = Math.max(0, Math.min(qmax, Math.round((w[i] - min) / scale)));
    dq[i] = Math.fround(q[i] * scale + min);
  }
  return { q, scale, min, dq };
}

export interface TfjsWriteResult {
  /** model.json text */
  modelJson: string;
  /** shard files in order (names and bytes) */
  shards: { path: string; bytes: Uint8Array }[];
  /** per float32 weight: name, elements, SQNR (dB) of the stored values */
  report: { name: string; elements: number; sqnrDb: number }[];
}

const SHARD_BYTES = 4 * 1024 * 1024;

/**
 * Write the model with its float32 weights stored as `quantization` (undefined: float32), or as given
 * by `transform` (lowbit's own quantizers, dequantized back to float32 values TFJS can run).
 */
export interface LowbitTfjsOptions {
  /** a scheme name resolveScheme knows (int4_g32, nf4_g64, mxfp4, q4_0, or an element format with options) */
  name: string;
  options?: LowbitSchemeOptions;
  /**
   * blocks along the first axes (the transpose is packed): TF MatMul kernels [K, N] group along K;
   * 'auto': along the first axes where they divide into blocks, else along the last (an embedding table
   * [8002, 256] groups its rows)
   */
  transposed?: boolean | 'auto';
  /** weights with fewer elements, or fewer than 2 dimensions, are stored as `quantization` instead (default 4096) */
  minElements?: number;
}

export function writeTfjs(m: TfjsModel, quantization?: TfjsQuantization, opts: { minElements?: number; transform?: (w: Float32Array, spec: TfjsWeightSpec) => Float32Array; lowbit?: LowbitTfjsOptions } = {}): TfjsWriteResult {
  const lb = opts.lowbit ? lowbitScheme(opts.lowbit.name, opts.lowbit.options, 'writeTfjs') : undefined;
  const parts: Uint8Array[] = [];
  const specs: TfjsWeightSpec[] = [];
  const report: TfjsWriteResult['report'] = [];
  for (const w of m.weights) {
    const { quantization: _old, ...base } = w.spec;
    if (!w.values) {
      specs.push(base);
      parts.push(w.raw!);
      continue;
    }
    const n = w.values.length;
    const quantize = n >= (opts.minElements ?? 1);
    let stored: Float32Array = w.values;
    if (quantize && opts.transform) stored = opts.transform(w.values, w.spec);
    const [R, C] = matrixOf(w.spec.shape);
    const fits = (k: number) => !!lb && (lb.blockSize <= 1 || k % lb.blockSize === 0);
    const tr = opts.lowbit?.transposed === 'auto' ? fits(R) : !!opts.lowbit?.transposed;
    if (lb && w.spec.shape.length >= 2 && n >= (opts.lowbit!.minElements ?? 4096) && fits(tr ? R : C)) {
      const packed = tr ? quantizeScheme(lb, transpose(stored, R, C), C, R) : quantizeScheme(lb, stored, R, C);
      specs.push({ ...base, dtype: 'float32', quantization: { dtype: 'lowbit', scheme: opts.lowbit!.name, ...(opts.lowbit!.options ? { options: opts.lowbit!.options } : {}), ...(tr ? { transposed: true } : {}), original_dtype: 'float32' } });
      parts.push(packed);
      stored = tr ? transpose(dequantizeScheme(lb, packed, C, R), C, R) : dequantizeScheme(lb, packed, R, C);
    } else if (quantize && quantization === 'float16') {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = f32ToF16(Math.max(-65504, Math.min(65504, stored[i])));
      specs.push({ ...base, dtype: 'float32', quantization: { dtype: 'float16', original_dtype: 'float32' } });
      parts.push(new Uint8Array(h.buffer));
      stored = Float32Array.from(h, f16ToF32);
    } else if (quantize && (quantization === 'uint8' || quantization === 'uint16')) {
      const a = tfjsAffine(stored, quantization === 'uint8' ? 8 : 16);
      specs.push({ ...base, dtype: 'float32', quantization: { dtype: quantization, scale: a.scale, min: a.min, original_dtype: 'float32' } });
      parts.push(new Uint8Array(a.q.buffer));
      stored = a.dq;
    } else {
      specs.push({ ...base, dtype: 'float32' });
      parts.push(new Uint8Array(stored.buffer.slice(stored.byteOffset, stored.byteOffset + stored.byteLength)));
    }
    let s = 0;
    let e = 0;
    for (let i = 0; i < n; i++) {
      s += w.values[i] ** 2;
      e += (w.values[i] - stored[i]) ** 2;
    }
    report.push({ name: w.spec.name, elements: n, sqnrDb: e === 0 ? Infinity : 10 * Math.log10(s / e) });
  }
  const all = concatParts(parts);
  const total = all.length;
  const count = Math.max(1, Math.ceil(total / SHARD_BYTES));
  const shards = Array.from({ length: count }, (_, i) => ({ path: `group1-shard${i + 1}of${count}.bin`, bytes: all.subarray(i * SHARD_BYTES, Math.min(total, (i + 1) * SHARD_BYTES)) }));
  const json = { ...m.json, weightsManifest: [{ paths: shards.map((s) => s.path), weights: specs }] };
  return { modelJson: JSON.stringify(json), shards, report };
}

/**
 * The float32 model TensorFlow.js loads from memory (`tf.io.fromMemory(artifacts)`): what a browser does
 * with a model.json whose weights are in lowbit's formats, after readTfjs dequantized them.
 */
export function tfjsMemoryArtifacts(m: TfjsModel): { modelTopology: unknown; weightSpecs: TfjsWeightSpec[]; weightData: ArrayBuffer } {
  const w = writeTfjs(m);
  const j = JSON.parse(w.modelJson) as { modelTopology: unknown; weightsManifest: { weights: TfjsWeightSpec[] }[] };
  const data = concatParts(w.shards.map((s) => s.bytes));
  return { modelTopology: j.modelTopology, weightSpecs: j.weightsManifest.flatMap((g) => g.weights), weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer };
}
