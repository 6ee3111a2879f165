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
import type { MatmulEngine, PackedKvSource } from '../../kernels/matmul.js';
import { quantizeIq4NlRef } from '../../quant/ggml/iq.js';
import { bf16ToF32, f16Table, f32ToBf16, f32ToF16 } from '../../formats/half.js';
import { ggmlCodec, ggmlReferenceQuantizer } from '../../quant/ggml/registry.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../../quant/ggml/types.js';
import type { KvCacheType } from './types.js';

export interface KvSide {
  readonly type: KvCacheType;
  /** packed bytes per position of one layer */
  readonly rowBytes: number;
  /** KIVI: positions per quantized chunk (R); 0: every position is quantized when written */
  readonly residual: number;
  /**
   * KIVI keys with R = 0: a group of G positions is final once full; before that, a cache holding n
   * positions shows its last group [floor(n/G)*G, n) quantized over the positions it has (readPartial).
   * 0 for every other side.
   */
  readonly partial: number;
  /** write positions [pos, pos + n) of a layer from n rows of kvDim (a position before the end rewinds the layer) */
  write(layer: number, pos: number, n: number, rows: Float32Array): void;
  /** the quantized positions [from, to) dequantized into out (position p at out[p * kvDim]) */
  readQuantized(layer: number, from: number, to: number, out: Float32Array): void;
  /** the f32 positions [from, to) (the residual) into out (position p at out[p * kvDim]) */
  readFull(layer: number, from: number, to: number, out: Float32Array): void;
  /** (partial > 0) the last, incomplete group [from, to) as a cache holding `to` positions stores it, into out from `at` (default from * kvDim) */
  readPartial?(layer: number, from: number, to: number, out: Float32Array, at?: number): void;
  /** a layer's packed rows as the attention kernel reads them, or null (not in kernel memory, or a layout it cannot read) */
  kernelSource?(layer: number, headDim: number): PackedKvSource | null;
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
  // a decoding step writes one row per layer: the scalar reference (bit-identical to the kernel's fast
  // path) costs less than a kernel call's set-up at that size
  const quantize = m <= 1024 ? ggmlReferenceQuantizer(type) ?? ggmlCodec(type)?.quantize : ggmlCodec(type)?.quantize;
  if (!quantize) fail(`no quantizer for the cache type ${type.name}`);
  quantize(src.subarray(0, m), n, k, out);
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

export class GgmlSide implements KvSide {
  readonly rowBytes: number;
  readonly residual = 0;
  readonly partial = 0;
  /** (layer, position, rowBytes) */
  readonly bytes: Uint8Array;
  private readonly ggml: GgmlTypeInfo;
  constructor(readonly type: KvCacheType, nLayers: number, private readonly capacity: number, private readonly kvDim: number, private readonly engine: MatmulEngine | null) {
    this.ggml = type.ggml!;
    this.rowBytes = ggmlRowBytes(this.ggml, kvDim);
    const inKernel = engine?.allocBytes(nLayers * capacity * this.rowBytes);
    this.inKernel = !!inKernel;
    this.bytes = inKernel ?? new Uint8Array(nLayers * capacity * this.rowBytes);
  }
  private readonly inKernel: boolean;
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
  kernelSource(layer: number): PackedKvSource | null {
    if (!this.engine || !this.inKernel) return null;
    return { mode: 1, bytes: this.bytes.subarray(this.at(layer, 0), this.at(layer + 1, 0)), rowBytes: this.rowBytes, type: this.ggml.id, group: 0, record: 0 };
  }
}

/** KIVI record of n values: f16 scale, f16 minimum, then n codes of `bits` bits, little-endian across bytes. */
export function kiviRecordBytes(bits: number, n = 32): number {
  return 4 + Math.ceil((n * bits) / 8);
}

/** Quantize n values x[xo + i * stride] into a KIVI record at out[oo..]. */
export function kiviQuantize(bits: number, x: Float32Array, xo: number, stride: number, out: Uint8Array, oo: number, n = 32): void {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n; i++) {
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
  out.fill(0, codes, codes + Math.ceil((n * bits) / 8));
  const inv = scale > 0 ? 1 / scale : 0;
  for (let i = 0; i < n; i++) {
    const c = Math.max(0, Math.min(levels, Math.round((x[xo + i * stride] - min) * inv)));
    const bit = i * bits;
    const at = codes + (bit >> 3);
    out[at] |= (c << (bit & 7)) & 0xff;
    if ((bit & 7) + bits > 8) out[at + 1] |= c >> (8 - (bit & 7)); // a 3-bit code may straddle two bytes
  }
}

/** Code i (of `bits` bits) of a KIVI record whose codes start at rec[codes]. */
export function kiviCode(rec: Uint8Array, codes: number, bits: number, i: number): number {
  const bit = i * bits;
  const at = codes + (bit >> 3);
  const two = (bit & 7) + bits > 8 ? rec[at] | (rec[at + 1] << 8) : rec[at];
  return (two >> (bit & 7)) & ((1 << bits) - 1);
}

/** Dequantize a KIVI record of n values into out[oo + i * stride]. */
export function kiviDequantize(bits: number, rec: Uint8Array, ro: number, out: Float32Array, oo: number, stride: number, n = 32): void {
  const scale = f16Table[rec[ro] | (rec[ro + 1] << 8)];
  const min = f16Table[rec[ro + 2] | (rec[ro + 3] << 8)];
  for (let i = 0; i < n; i++) out[oo + i * stride] = Math.fround(min + Math.fround(kiviCode(rec, ro + 4, bits, i) * scale));
}

export class KiviSide implements KvSide {
  /** packed bytes per position, the mean over layers (layers may differ in bits) */
  readonly rowBytes: number;
  /** per layer: bits per code, packed bytes per position, bytes per record */
  readonly layerBits: readonly number[];
  readonly layerRowBytes: readonly number[];
  readonly layerRecord: readonly number[];
  /** values per record: positions of a channel (keys), channels of a position (values) */
  readonly group: number;
  readonly partial: number;
  /** positions kept in f32 until quantized: R, or (R = 0) G for keys (re-quantized as a group grows), 1 for values */
  private readonly chunk: number;
  /**
   * per layer: the partial key group [from, from + n) as readPartial last showed it (rows, position
   * from + i at i * kvDim), each channel's range and record (scale, minimum, 1 / scale). A decoding step
   * adds a row: a channel whose range holds the new value keeps its record and codes, only the new
   * value is coded; a channel whose range grows is re-quantized whole. Same values as quantizing the
   * group from scratch.
   */
  private readonly partialCache: ({ from: number; n: number; lo: Float32Array; hi: Float32Array; rec: Float64Array; rows: Float32Array } | null)[];
  /** per layer: packed records, (group of G positions, channel) for keys, (position, group of G channels) for values */
  readonly packed: Uint8Array[];
  /** per layer: f32 rows from fullStart[layer] on (the residual and the last batch) */
  private full: Float32Array[];
  private readonly fullStart: Int32Array;
  private readonly end: Int32Array;
  constructor(readonly type: KvCacheType, private readonly perChannel: boolean, readonly residual: number, nLayers: number, capacity: number, private readonly kvDim: number, private readonly engine: MatmulEngine | null = null) {
    this.group = type.blockSize;
    const G = this.group;
    if (!(Number.isInteger(residual) && residual >= 0 && residual % 32 === 0)) fail(`--kv-residual ${residual}: KIVI keeps whole groups of 32 positions in full precision; give 0 or a positive multiple of 32`);
    if (perChannel && residual % G !== 0) fail(`--kv-residual ${residual}: ${type.name} keys are quantized in groups of ${G} positions; give a multiple of ${G}`);
    if (!perChannel && kvDim % G !== 0) fail(`--cache-type-v ${type.name}: groups of ${G} channels do not divide the model's rows of ${kvDim}`);
    const lb = type.layerBits;
    if (lb && lb.length !== nLayers) fail(`${perChannel ? '--cache-type-k' : '--cache-type-v'} ${type.name}: ${lb.length} per-layer bit widths for a model of ${nLayers} layers`);
    this.layerBits = lb ?? new Array<number>(nLayers).fill(type.bits!);
    this.layerRecord = this.layerBits.map((b) => kiviRecordBytes(b, G));
    this.layerRowBytes = this.layerRecord.map((r) => (kvDim / G) * r);
    this.rowBytes = this.layerRowBytes.reduce((a, b) => a + b, 0) / nLayers;
    this.chunk = residual > 0 ? residual : perChannel ? G : 1;
    this.partial = residual === 0 && perChannel ? G : 0;
    const groups = Math.ceil(capacity / G);
    // (+ 16: the kernel's KIVI decoder reads 16 bytes from the start of a run of 8 codes)
    const inKernel = this.layerRowBytes.map((rb) => engine?.allocBytes(groups * G * rb + 16) ?? null);
    this.inKernel = inKernel.every((b) => b !== null);
    this.packed = this.layerRowBytes.map((rb, l) => inKernel[l] ?? new Uint8Array(groups * G * rb));
    this.full = Array.from({ length: nLayers }, () => new Float32Array(0));
    this.fullStart = new Int32Array(nLayers);
    this.end = new Int32Array(nLayers);
    this.partialCache = new Array(nLayers).fill(null);
  }
  write(layer: number, pos: number, n: number, rows: Float32Array): void {
    const kd = this.kvDim;
    const R = this.chunk;
    const G = this.group;
    if (pos > this.end[layer]) fail(`KIVI cache: position ${pos} written before ${this.end[layer]}`);
    const pc = this.partialCache[layer];
    if (pc && pos < pc.from + pc.n) pc.n = 0; // a rewind: positions the cache showed change
    const start = Math.floor(pos / R) * R; // first position this write may need in f32
    if (start < this.fullStart[layer]) {
      // a restart at 0 (eval's next chunk after a chunk longer than one batch) needs nothing of the old rows
      if (pos !== 0) fail(`KIVI cache: cannot rewind layer ${layer} to position ${pos} (positions before ${this.fullStart[layer]} are only kept quantized)`);
      this.fullStart[layer] = 0;
    }
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
    // quantize every chunk of R positions completed by this write (R is a multiple of G for keys)
    const qEnd = Math.floor((pos + n) / R) * R;
    const out = this.packed[layer];
    const rec = this.layerRecord[layer];
    const bits = this.layerBits[layer];
    const rowBytes = this.layerRowBytes[layer];
    if (this.perChannel) {
      for (let g = start; g < qEnd; g += G) for (let c = 0; c < kd; c++) kiviQuantize(bits, buf, (g - start) * kd + c, kd, out, g * rowBytes + c * rec, G);
    } else {
      for (let p = start; p < qEnd; p++) for (let c = 0; c < kd; c += G) kiviQuantize(bits, buf, (p - start) * kd + c, 1, out, p * rowBytes + (c / G) * rec, G);
    }
  }
  readQuantized(layer: number, from: number, to: number, out: Float32Array): void {
    const kd = this.kvDim;
    const pk = this.packed[layer];
    const G = this.group;
    const rec = this.layerRecord[layer];
    const bits = this.layerBits[layer];
    const rowBytes = this.layerRowBytes[layer];
    if (this.perChannel && (from % G !== 0 || to % G !== 0)) fail(`KIVI keys: positions ${from}..${to} are not whole groups of ${G}`);
    if (to > from && this.engine?.kiviRowsInto(this.perChannel, pk, rowBytes, bits, G, rec, from, to, kd, out)) return;
    if (this.perChannel) {
      for (let g = from; g < to; g += G) for (let c = 0; c < kd; c++) kiviDequantize(bits, pk, g * rowBytes + c * rec, out, g * kd + c, kd, G);
    } else {
      for (let p = from; p < to; p++) for (let c = 0; c < kd; c += G) kiviDequantize(bits, pk, p * rowBytes + (c / G) * rec, out, p * kd + c, 1, G);
    }
  }
  readFull(layer: number, from: number, to: number, out: Float32Array): void {
    const kd = this.kvDim;
    const s = this.fullStart[layer];
    if (from < s || to > this.end[layer]) fail(`KIVI cache: f32 positions ${from}..${to} are not held (${s}..${this.end[layer]})`);
    out.set(this.full[layer].subarray((from - s) * kd, (to - s) * kd), from * kd);
  }
  private readonly inKernel: boolean;
  kernelSource(layer: number, headDim: number): PackedKvSource | null {
    const G = this.group;
    // per token, a head must span whole groups or lie inside one
    if (!this.inKernel || (!this.perChannel && headDim % G !== 0 && G % headDim !== 0)) return null;
    return { mode: this.perChannel ? 2 : 3, bytes: this.packed[layer], rowBytes: this.layerRowBytes[layer], type: this.layerBits[layer], group: G, record: this.layerRecord[layer] };
  }
  readPartial(layer: number, from: number, to: number, out: Float32Array, at = from * this.kvDim): void {
    const kd = this.kvDim;
    const s = this.fullStart[layer];
    if (!this.partial || from % this.group !== 0 || to - from >= this.group) fail(`KIVI cache: positions ${from}..${to} are not a partial group`);
    if (from < s || to > this.end[layer]) fail(`KIVI cache: positions ${from}..${to} are not held (${s}..${this.end[layer]})`);
    const n = to - from;
    const buf = this.full[layer];
    const bits = this.layerBits[layer];
    let pc = this.partialCache[layer];
    if (!pc) pc = this.partialCache[layer] = { from, n: 0, lo: new Float32Array(kd), hi: new Float32Array(kd), rec: new Float64Array(3 * kd), rows: new Float32Array(this.group * kd) };
    if (pc.from !== from || pc.n > n) {
      pc.from = from;
      pc.n = 0;
    }
    if (pc.n === 0) {
      pc.lo.fill(Infinity);
      pc.hi.fill(-Infinity);
    }
    const levels = (1 << bits) - 1;
    const x0 = (from - s) * kd;
    for (let c = 0; c < kd; c++) {
      let lo = pc.lo[c];
      let hi = pc.hi[c];
      for (let p = pc.n; p < n; p++) {
        const v = buf[x0 + p * kd + c];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      let from0 = pc.n;
      if (lo !== pc.lo[c] || hi !== pc.hi[c]) {
        // the range grew: the record changes (kiviQuantize's scale and minimum over the n values), every
        // code of the channel with it
        pc.lo[c] = lo;
        pc.hi[c] = hi;
        const scale = f16Table[f32ToF16(Math.fround((hi - lo) / levels))];
        pc.rec[3 * c] = scale;
        pc.rec[3 * c + 1] = f16Table[f32ToF16(lo)];
        pc.rec[3 * c + 2] = scale > 0 ? 1 / scale : 0;
        from0 = 0;
      }
      // code the values from from0 on (as kiviQuantize, read back as kiviDequantize)
      const scale = pc.rec[3 * c];
      const min = pc.rec[3 * c + 1];
      const inv = pc.rec[3 * c + 2];
      for (let p = from0; p < n; p++) {
        const code = Math.max(0, Math.min(levels, Math.round((buf[x0 + p * kd + c] - min) * inv)));
        pc.rows[p * kd + c] = Math.fround(min + Math.fround(code * scale));
      }
    }
    pc.n = n;
    out.set(pc.rows.subarray(0, n * kd), at);
  }
}
