/**
 * One side (keys or values) of a packed KV cache: per layer, `capacity` positions of kvDim values.
 *
 *   GgmlSide   each position's row as GGML blocks (llama.cpp's cache layout: a row of nKvHeads heads,
 *              blocks never straddle heads since the block size divides headDim), quantized with the
 *              type's from_float as llama.cpp's CPU backend writes its cache.
 *   KiviSide   KIVI records of 32 values: f16 scale, f16 minimum, 32 codes of b bits (asymmetric,
 *              value = minimum + code * scale). Keys: one record per channel per group of 32 positions;
 *              values: one record per 32 channels of a position. Positions stay f32 until a chunk of R
 *              (--kv-residual, a multiple of 32) fills; a cache holding n positions has [0, floor(n/R)*R)
 *              quantized and the rest f32 (as KIVI's decoding keeps X_r, the residual).
 */
import { fail } from '../../errors.js';
import type { MatmulEngine } from '../../kernels/matmul.js';
import { quantizeIq4NlRef } from '../../quant/ggml/iq.js';
import { bf16ToF32, f16Table, f32ToBf16, f32ToF16 } from '../../quant/ggml/half.js';
import { ggmlCodec } from '../../quant/ggml/registry.js';
import '../../quant/ggml/index.js';
import '../../quant/ggml/ggmlb.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../../quant/ggml/types.js';
import type { KvCacheType } from './types.js';

export interface KvSide {
  readonly type: KvCacheType;
  /** packed bytes per position of one layer */
  readonly rowBytes: number;
  /** KIVI: positions per quantized chunk (R); 0: every position is quantized when written */
  readonly residual: number;
  /** write positions [pos, pos + n) of a layer from n rows of kvDim (a position before the end rewinds the layer) */
  write(layer: number, pos: number, n: number, rows: Float32Array): void;
  /** the quantized positions [from, to) dequantized into out (position p at out[p * kvDim]) */
  readQuantized(layer: number, from: number, to: number, out: Float32Array): void;
  /** the f32 positions [from, to) (the residual) into out (position p at out[p * kvDim]) */
  readFull(layer: number, from: number, to: number, out: Float32Array): void;
}

/** llama.cpp's from_float for a cache type: n rows of k floats into packed rows. */
export function quantizeCacheRows(type: GgmlTypeInfo, src: Float32Array, n: number, k: number, out: Uint8Array): void {
  const m = n * k;
  switch (type.name) {
    case 'F32':
      new Uint8Array(out.buffer, out.byteOffset, m * 4).set(new Uint8Array(src.buffer, src.byteOffset, m * 4));
      return;
    case 'F16':
    case 'BF16': {
      const dv = new DataView(out.buffer, out.byteOffset, m * 2);
      const enc = type.name === 'F16' ? f32ToF16 : f32ToBf16;
      for (let i = 0; i < m; i++) dv.setUint16(2 * i, enc(src[i]), true);
      return;
    }
    case 'IQ4_NL':
      // ggml-cpu's quantize_row_iq4_nl is quantize_row_iq4_nl_ref: no scale search (ntry -1)
      quantizeIq4NlRef(src.subarray(0, m), n, k, out);
      return;
  }
  const codec = ggmlCodec(type);
  if (!codec?.quantize) fail(`no quantizer for the cache type ${type.name}`);
  codec.quantize(src.subarray(0, m), n, k, out);
}

/** Dequantize n elements of a cache type (the codec's dequantizer; f32/f16/bf16 by hand). */
export function dequantizeCacheRows(type: GgmlTypeInfo, src: Uint8Array, m: number, out: Float32Array): void {
  switch (type.name) {
    case 'F32':
      out.set(new Float32Array(src.buffer.slice(src.byteOffset, src.byteOffset + m * 4)));
      return;
    case 'F16':
    case 'BF16': {
      const dv = new DataView(src.buffer, src.byteOffset, m * 2);
      if (type.name === 'F16') for (let i = 0; i < m; i++) out[i] = f16Table[dv.getUint16(2 * i, true)];
      else for (let i = 0; i < m; i++) out[i] = bf16ToF32(dv.getUint16(2 * i, true));
      return;
    }
  }
  ggmlCodec(type)!.dequantize(src, m, out);
}

/** Bytes in the engine's memory when it has room (the attention kernel dequantizes them in place), else on the heap. */
function packedBytes(n: number, engine: MatmulEngine | null): Uint8Array {
  return engine?.allocBytes(n) ?? new Uint8Array(n);
}

export class GgmlSide implements KvSide {
  readonly rowBytes: number;
  readonly residual = 0;
  /** (layer, position, rowBytes) */
  readonly bytes: Uint8Array;
  private readonly ggml: GgmlTypeInfo;
  constructor(readonly type: KvCacheType, nLayers: number, private readonly capacity: number, private readonly kvDim: number, private readonly engine: MatmulEngine | null) {
    this.ggml = type.ggml!;
    this.rowBytes = ggmlRowBytes(this.ggml, kvDim);
    this.bytes = packedBytes(nLayers * capacity * this.rowBytes, engine);
  }
  private at(layer: number, pos: number): number {
    return (layer * this.capacity + pos) * this.rowBytes;
  }
  write(layer: number, pos: number, n: number, rows: Float32Array): void {
    quantizeCacheRows(this.ggml, rows, n, this.kvDim, this.bytes.subarray(this.at(layer, pos), this.at(layer, pos + n)));
  }
  readQuantized(layer: number, from: number, to: number, out: Float32Array): void {
    if (to <= from) return;
    const src = this.bytes.subarray(this.at(layer, from), this.at(layer, to));
    const dst = out.subarray(from * this.kvDim, to * this.kvDim);
    if (this.engine?.dequantizeInto(this.ggml, src, this.rowBytes, to - from, this.kvDim, dst)) return;
    dequantizeCacheRows(this.ggml, src, (to - from) * this.kvDim, dst);
  }
  readFull(): void {
    fail('a GGML cache side keeps no f32 positions');
  }
}

/** KIVI record: f16 scale, f16 minimum, then 32 codes of `bits` bits, little-endian within bytes. */
export function kiviRecordBytes(bits: number): number {
  return 4 + 4 * bits;
}

/** Quantize 32 values x[xo + i * stride] into a KIVI record at out[oo..]. */
export function kiviQuantize(bits: number, x: Float32Array, xo: number, stride: number, out: Uint8Array, oo: number): void {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < 32; i++) {
    const v = x[xo + i * stride];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const levels = (1 << bits) - 1;
  const sh = f32ToF16(Math.fround((hi - lo) / levels));
  const mh = f32ToF16(lo);
  const scale = f16Table[sh];
  const min = f16Table[mh];
  out[oo] = sh & 0xff;
  out[oo + 1] = sh >>> 8;
  out[oo + 2] = mh & 0xff;
  out[oo + 3] = mh >>> 8;
  const codes = oo + 4;
  out.fill(0, codes, codes + 4 * bits);
  const inv = scale > 0 ? 1 / scale : 0;
  for (let i = 0; i < 32; i++) {
    const c = Math.max(0, Math.min(levels, Math.round((x[xo + i * stride] - min) * inv)));
    const bit = i * bits;
    out[codes + (bit >> 3)] |= c << (bit & 7);
  }
}

/** Dequantize a KIVI record into out[oo + i * stride], i < 32. */
export function kiviDequantize(bits: number, rec: Uint8Array, ro: number, out: Float32Array, oo: number, stride: number): void {
  const scale = f16Table[rec[ro] | (rec[ro + 1] << 8)];
  const min = f16Table[rec[ro + 2] | (rec[ro + 3] << 8)];
  const mask = (1 << bits) - 1;
  for (let i = 0; i < 32; i++) {
    const bit = i * bits;
    const c = (rec[ro + 4 + (bit >> 3)] >> (bit & 7)) & mask;
    out[oo + i * stride] = Math.fround(min + Math.fround(c * scale));
  }
}

export class KiviSide implements KvSide {
  readonly rowBytes: number;
  private readonly bits: number;
  private readonly record: number;
  /** per layer: packed records, (group of 32 positions, channel) for keys, (position, group of 32 channels) for values */
  private readonly packed: Uint8Array[];
  /** per layer: f32 rows from fullStart[layer] on (the residual and the last batch) */
  private full: Float32Array[];
  private readonly fullStart: Int32Array;
  private readonly end: Int32Array;
  constructor(readonly type: KvCacheType, private readonly perChannel: boolean, readonly residual: number, nLayers: number, capacity: number, private readonly kvDim: number) {
    if (!(Number.isInteger(residual) && residual >= 32 && residual % 32 === 0)) fail(`--kv-residual ${residual}: KIVI keeps whole groups of 32 positions in full precision; give a positive multiple of 32`);
    this.bits = type.bits!;
    this.record = kiviRecordBytes(this.bits);
    this.rowBytes = (kvDim / 32) * this.record;
    const groups = Math.ceil(capacity / 32);
    this.packed = Array.from({ length: nLayers }, () => new Uint8Array(groups * 32 * this.rowBytes));
    this.full = Array.from({ length: nLayers }, () => new Float32Array(0));
    this.fullStart = new Int32Array(nLayers);
    this.end = new Int32Array(nLayers);
  }
  write(layer: number, pos: number, n: number, rows: Float32Array): void {
    const kd = this.kvDim;
    const R = this.residual;
    if (pos > this.end[layer]) fail(`KIVI cache: position ${pos} written before ${this.end[layer]}`);
    const start = Math.floor(pos / R) * R; // first position this write may need in f32
    if (start < this.fullStart[layer]) fail(`KIVI cache: cannot rewind layer ${layer} to position ${pos} (positions before ${this.fullStart[layer]} are only kept quantized)`);
    // drop f32 rows before `start`, append the new ones
    const old = this.full[layer];
    const keepFrom = (start - this.fullStart[layer]) * kd;
    const keepTo = (pos - this.fullStart[layer]) * kd;
    const need = (pos + n - start) * kd;
    let buf = old;
    if (buf.length < need) {
      buf = new Float32Array(Math.max(need, 2 * old.length));
      buf.set(old.subarray(keepFrom, keepTo));
    } else buf.copyWithin(0, keepFrom, keepTo);
    buf.set(rows.subarray(0, n * kd), (pos - start) * kd);
    this.full[layer] = buf;
    this.fullStart[layer] = start;
    this.end[layer] = pos + n;
    // quantize every chunk of R positions completed by this write
    const qEnd = Math.floor((pos + n) / R) * R;
    const out = this.packed[layer];
    for (let g = start; g < qEnd; g += 32) {
      const rowsAt = (g - start) * kd;
      if (this.perChannel) for (let c = 0; c < kd; c++) kiviQuantize(this.bits, buf, rowsAt + c, kd, out, g * this.rowBytes + c * this.record);
      else for (let p = 0; p < 32; p++) for (let c = 0; c < kd; c += 32) kiviQuantize(this.bits, buf, rowsAt + p * kd + c, 1, out, (g + p) * this.rowBytes + (c / 32) * this.record);
    }
  }
  readQuantized(layer: number, from: number, to: number, out: Float32Array): void {
    const kd = this.kvDim;
    const pk = this.packed[layer];
    if (this.perChannel) {
      if (from % 32 !== 0 || to % 32 !== 0) fail(`KIVI keys: positions ${from}..${to} are not whole groups`);
      for (let g = from; g < to; g += 32) for (let c = 0; c < kd; c++) kiviDequantize(this.bits, pk, g * this.rowBytes + c * this.record, out, g * kd + c, kd);
    } else {
      for (let p = from; p < to; p++) for (let c = 0; c < kd; c += 32) kiviDequantize(this.bits, pk, p * this.rowBytes + (c / 32) * this.record, out, p * kd + c, 1);
    }
  }
  readFull(layer: number, from: number, to: number, out: Float32Array): void {
    const kd = this.kvDim;
    const s = this.fullStart[layer];
    if (from < s || to > this.end[layer]) fail(`KIVI cache: f32 positions ${from}..${to} are not held (${s}..${this.end[layer]})`);
    out.set(this.full[layer].subarray((from - s) * kd, (to - s) * kd), from * kd);
  }
}
