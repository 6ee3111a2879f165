/**
 * The packed KV cache: keys and values each in their own cache type (src/model/kv/types.ts), stored
 * packed (GgmlSide / KiviSide), with attention computed over the stored rows.
 *
 * Attention of a batch: query t (position p = pos + t) sees the cache as it stood after position p was
 * written, so a KIVI side shows [0, floor((p+1)/R)*R) quantized and the rest f32 (queries are grouped by
 * that boundary); llama.cpp's types show every position quantized, the batch's own included, as
 * llama.cpp writes the batch's keys and values into its cache before attending. Queries are rounded to
 * the key type's vec_dot type (Q8_0 for q4_0, Q8_1 for q4_1, F16 for f16, ...). With the WebAssembly
 * engine the visible rows are dequantized by the kernel into kernel memory and the f32 attention kernel
 * runs on them; without it, attentionGgmlRef (llama.cpp's flash-attention loop, f16 accumulation for an
 * f16 value cache).
 */
import { fail } from '../../errors.js';
import { fwht } from '../../algos/hadamard.js';
import type { MatmulEngine, PackedAttentionSide } from '../../kernels/matmul.js';
import { ggmlRoundActivations } from '../ggml-activations.js';
import { kernelsEnabled } from '../matmul.js';
import { attentionGgmlRef } from './attention.js';
import { GgmlSide, KiviSide, type KvSide } from './sides.js';
import { KvQuantSide, type KvSamples } from './kvquant.js';
import type { AttentionShape, KvGeometry, KvRopeTable, KvStorage } from './storage.js';
import { checkKvCacheType, parseKvCacheType, type KvCacheType } from './types.js';

export interface KvCacheOptions {
  /** key cache type (default f32) */
  k?: string;
  /** value cache type (default f32) */
  v?: string;
  /** KIVI: positions kept in f32 until a chunk of this many fills (a multiple of 32; default 32) */
  residual?: number;
  /** KVQuant: pre-RoPE keys and values seen on a calibration text (eval/kv-calibrate.ts) */
  calibration?: KvSamples;
}

/** Is this the plain f32 cache (the runtime's default store)? */
export function isDefaultKvCache(o: KvCacheOptions | undefined): boolean {
  return !o || ((o.k ?? 'f32').toLowerCase() === 'f32' && (o.v ?? 'f32').toLowerCase() === 'f32');
}

/** Check a cache configuration against a head size without building it (the CLI's early check). */
export function checkKvCache(o: KvCacheOptions, headDim: number): { k: KvCacheType; v: KvCacheType } {
  const k = parseKvCacheType(o.k ?? 'f32');
  const v = parseKvCacheType(o.v ?? 'f32');
  checkKvCacheType(k, 'keys', headDim);
  checkKvCacheType(v, 'values', headDim);
  if (o.calibration === undefined) for (const [t, flag] of [[k, '--cache-type-k'], [v, '--cache-type-v']] as const) if (t.family === 'kvquant') fail(`${flag} ${t.name}: KVQuant fits its datatypes to calibration activations; give --calib FILE (a text)`);
  if (o.residual !== undefined && k.family !== 'kivi' && v.family !== 'kivi') fail(`--kv-residual applies to KIVI caches (kivi2, kivi4); the cache types are ${k.name} / ${v.name}`);
  return { k, v };
}

/** In-place orthonormal Walsh-Hadamard transform (H / sqrt(n), its own inverse) of every head of nRows rows. */
function rotateHeads(x: Float32Array, nRows: number, rowLength: number, headDim: number): void {
  const norm = 1 / Math.sqrt(headDim);
  for (let o = 0; o < nRows * rowLength; o += headDim) {
    fwht(x, o, headDim);
    for (let i = 0; i < headDim; i++) x[o + i] *= norm;
  }
}

function makeSide(t: KvCacheType, perChannel: boolean, o: KvCacheOptions, g: KvGeometry, engine: MatmulEngine | null): KvSide {
  const kvDim = g.nKvHeads * g.headDim;
  if (t.family === 'kivi') return new KiviSide(t, perChannel, o.residual ?? (perChannel ? Math.max(32, t.blockSize) : 32), g.nLayers, g.capacity, kvDim, engine);
  if (t.family === 'kvquant') {
    // a rotated side stores rotated rows: its grids are fitted to rotated calibration rows
    const rot = (rows: Float32Array) => {
      const r = rows.slice();
      rotateHeads(r, rows.length / kvDim, kvDim, g.headDim);
      return r;
    };
    const c = o.calibration;
    // (a gradient rotates like its entry: d/d(Hx) = H d/dx)
    const samples = c && t.rotate ? { ...c, keys: c.keys.map(rot), values: c.values.map(rot), keyGrads: c.keyGrads?.map(rot), valueGrads: c.valueGrads?.map(rot) } : c;
    return new KvQuantSide(t, perChannel, samples, g.nLayers, g.capacity, kvDim);
  }
  return new GgmlSide(t, g.nLayers, g.capacity, kvDim, engine);
}

/** GGML type ids of the block-32 key types whose vec_dot type is Q8_0 (Q4_0, Q5_0, Q8_0, IQ4_NL): scored by the kernel's integer dot */
const INT_KEY_TYPES = new Set([2, 6, 8, 20]);

export class PackedKvStorage implements KvStorage {
  readonly capacity: number;
  readonly bytesPerToken: number;
  readonly keyType: KvCacheType;
  readonly valueType: KvCacheType;
  private readonly kSide: KvSide;
  private readonly vSide: KvSide;
  private readonly kvDim: number;
  /** one layer's visible keys / values as f32 (capacity, kvDim), in kernel memory when there is an engine */
  private readonly kRows: Float32Array;
  private readonly vRows: Float32Array;
  private readonly kAt: number;
  private readonly vAt: number;
  /** KVQuant keys are stored before RoPE: the runtime appends them unrotated and hands over its RoPE */
  readonly preRopeKeys: boolean;
  private ropeKeys: ((layer: number, rows: Float32Array, n: number, pos0: number) => void) | null = null;
  private ropeTable: ((layer: number) => KvRopeTable) | null = null;
  /** the RoPE tables copied into kernel memory (per source table; null: the kernel cannot take them) */
  private readonly kernelRope = new Map<Float64Array, PackedAttentionSide['rope'] | null>();
  /** rotated copies of written rows, queries (rotated, rounded), attention output (rotated) */
  private scratch: Float32Array = new Float32Array(0);
  private qScratch: Float32Array = new Float32Array(0);

  constructor(o: KvCacheOptions, private readonly g: KvGeometry, private readonly engine: MatmulEngine | null) {
    const { k, v } = checkKvCache(o, g.headDim);
    this.keyType = k;
    this.valueType = v;
    this.capacity = g.capacity;
    this.kvDim = g.nKvHeads * g.headDim;
    this.kSide = makeSide(k, true, o, g, engine);
    this.vSide = makeSide(v, false, o, g, engine);
    this.bytesPerToken = g.nLayers * (this.kSide.rowBytes + this.vSide.rowBytes);
    this.preRopeKeys = k.family === 'kvquant' || k.preRope;
    const n = g.capacity * this.kvDim;
    const kk = engine?.allocF32(n, this);
    const vv = kk && engine!.allocF32(n, this);
    this.kRows = kk && vv ? kk.array : new Float32Array(n);
    this.vRows = kk && vv ? vv.array : new Float32Array(n);
    this.kAt = kk && vv ? kk.at : -1;
    this.vAt = kk && vv ? vv.at : -1;
  }

  setRope(fn: (layer: number, rows: Float32Array, n: number, pos0: number) => void, table?: (layer: number) => KvRopeTable): void {
    this.ropeKeys = fn;
    this.ropeTable = table ?? null;
  }

  /**
   * pre-RoPE keys read packed by the attention kernel, which applies RoPE itself: a layer's table in
   * kernel memory, or null (no table, an unrotated side only; KVQuant rows are not read by the kernel)
   */
  private kernelRopeOf(layer: number): PackedAttentionSide['rope'] | null {
    if (!this.engine || !this.ropeTable || this.keyType.rotate) return null;
    const t = this.ropeTable(layer);
    let r = this.kernelRope.get(t.cos);
    if (r === undefined) {
      const n = t.cos.length * 8;
      const cos = this.engine.allocBytes(n);
      const sin = cos && this.engine.allocBytes(n);
      if (cos && sin && 2 * t.half <= this.g.headDim) {
        cos.set(new Uint8Array(t.cos.buffer, t.cos.byteOffset, n));
        sin.set(new Uint8Array(t.sin.buffer, t.sin.byteOffset, n));
        r = { cos, sin, half: t.half, normal: t.normal, positions: t.positions };
      } else r = null;
      this.kernelRope.set(t.cos, r);
    }
    return r ?? null;
  }

  /** pre-RoPE keys of positions [from, to) in rows (position p at p * kvDim): rotate back (a rotated side), then RoPE */
  private ropeRows(layer: number, rows: Float32Array, from: number, to: number): void {
    if (!this.preRopeKeys || to <= from) return;
    if (!this.ropeKeys) fail('a pre-RoPE key cache (KVQuant, pre-kivi) needs the runtime\'s RoPE (setRope)');
    const r = rows.subarray(from * this.kvDim, to * this.kvDim);
    if (this.keyType.rotate) rotateHeads(r, to - from, this.kvDim, this.g.headDim);
    this.ropeKeys(layer, r, to - from, from);
  }

  store(layer: number, pos: number, key: Float32Array, value: Float32Array): void {
    this.append(layer, pos, 1, key, value);
  }

  append(layer: number, pos: number, n: number, k: Float32Array, v: Float32Array): void {
    if (pos < 0 || pos + n > this.capacity) fail(`positions ${pos}..${pos + n - 1} do not fit the cache of ${this.capacity}`);
    this.kSide.write(layer, pos, n, this.rotated(k, n, this.keyType.rotate));
    this.vSide.write(layer, pos, n, this.rotated(v, n, this.valueType.rotate));
  }

  private rotated(rows: Float32Array, n: number, rotate: boolean): Float32Array {
    if (!rotate) return rows;
    const m = n * this.kvDim;
    if (this.scratch.length < m) this.scratch = new Float32Array(m);
    const r = this.scratch.subarray(0, m);
    r.set(rows.subarray(0, m));
    rotateHeads(r, n, this.kvDim, this.g.headDim);
    return r;
  }

  /** first position a side does not show final-quantized (f32 residual, or a partial KIVI group) when the cache holds n positions */
  private static fullFrom(side: KvSide, n: number): number {
    const chunk = side.residual || side.partial;
    return chunk > 0 ? Math.floor(n / chunk) * chunk : n;
  }

  /**
   * rows [0, n) of a side as the cache holding `state` positions shows them, into `rows`; qEnd: rows
   * [0, qEnd) already hold quantized values. tailOnly: leave the quantized rows to the attention kernel.
   * Returns the end of the quantized rows.
   */
  private fill(side: KvSide, layer: number, rows: Float32Array, n: number, state: number, qEnd: number, tailOnly = false): number {
    const b = Math.min(PackedKvStorage.fullFrom(side, state), n);
    if (b > qEnd && !tailOnly) side.readQuantized(layer, qEnd, b, rows);
    if (n > b) {
      if (side.partial) side.readPartial!(layer, b, n, rows);
      else side.readFull(layer, b, n, rows);
    }
    return tailOnly ? b : Math.max(b, qEnd);
  }

  keys(layer: number, n: number): Float32Array {
    this.fill(this.kSide, layer, this.kRows, n, n, 0);
    const out = this.kRows.slice(0, n * this.kvDim);
    if (this.preRopeKeys) this.ropeRows(layer, out, 0, n);
    else if (this.keyType.rotate) rotateHeads(out, n, this.kvDim, this.g.headDim);
    return out;
  }

  values(layer: number, n: number): Float32Array {
    this.fill(this.vSide, layer, this.vRows, n, n, 0);
    const out = this.vRows.slice(0, n * this.kvDim);
    if (this.valueType.rotate) rotateHeads(out, n, this.kvDim, this.g.headDim);
    return out;
  }

  attention(layer: number, q: Float32Array, nTok: number, pos: number, shape: AttentionShape, out: Float32Array): void {
    const qDim = shape.nHeads * shape.headDim;
    const m = nTok * qDim;
    if (this.qScratch.length < 2 * m) this.qScratch = this.engine?.allocF32(2 * m, this)?.array ?? new Float32Array(2 * m);
    let qq = this.qScratch.subarray(0, m);
    qq.set(q.subarray(0, m));
    if (this.keyType.rotate && !this.preRopeKeys) rotateHeads(qq, nTok, qDim, shape.headDim);
    // llama.cpp's CPU flash attention takes one of two loops (ggml-cpu ops.cpp):
    //  - tiled (..._ext_tiled): keys and values both F16 or both F32 and a batch of >= 64 queries
    //    (GGML_FA_TILE_Q): queries stay f32 (keys widened to f32), accumulation in f32;
    //  - one row at a time (..._ext_f16_one_chunk; decoding, small batches, every other type pair):
    //    queries rounded to the key type's vec_dot type, an F16 value cache accumulated in f16.
    // lowbit's batch (default 128) stands for llama.cpp's ubatch (a whole eval chunk up to 512).
    const kf = this.keyType.ggml?.name;
    const tiled = nTok >= 64 && kf === this.valueType.ggml?.name && (kf === 'F16' || kf === 'F32');
    const accF16 = this.valueType.ggml?.name === 'F16' && !tiled;
    // the kernels accumulate in f32: an f16 accumulator runs llama.cpp's loop (attentionGgmlRef)
    const fast = this.kAt >= 0 && kernelsEnabled() && shape.headDim % 4 === 0 && !accF16;
    // the kernel dequantizes packed rows itself; pre-RoPE keys: with RoPE from the runtime's table
    // (pre-kivi), else filled and roped here and read as f32 rows (KVQuant, rotated sides)
    const kRope = fast && this.preRopeKeys ? this.kernelRopeOf(layer) : null;
    const kSource = fast && (!this.preRopeKeys || kRope) ? (this.kSide.kernelSource?.(layer, shape.headDim) ?? null) : null;
    const ropeHere = this.preRopeKeys && !(kSource && kRope);
    const vSource = fast ? (this.vSide.kernelSource?.(layer, shape.headDim) ?? null) : null;
    const packed = fast && !!vSource && (!!kSource || this.preRopeKeys);
    // Q4_0 / Q5_0 / Q8_0 / IQ4_NL keys: the kernel rounds the query to Q8_0 and takes integer dot
    // products on the stored blocks; every other key type gets the query rounded here
    const intKeys = packed && kSource?.mode === 1 && INT_KEY_TYPES.has(kSource.type) && shape.headDim % 32 === 0;
    if (this.keyType.family === 'ggml' && !intKeys && !tiled) {
      const rounded = this.qScratch.subarray(m, 2 * m);
      if (ggmlRoundActivations(this.keyType.ggml!, qq, nTok, qDim, rounded)) qq = rounded;
    }
    // a partial KIVI key group (--kv-residual 0) looks different to every query: with the kernel, one
    // call for the queries of a key group, each query's partial rows in a snapshot of its own
    const G = this.kSide.partial;
    const snapRows = packed && !!kSource && G > 0 && nTok > 1 ? snapshotRows(this.engine!, Math.min(nTok, G) * G * this.kvDim) : null;
    const snapshots = !!snapRows;
    // group the queries by what they see: the boundaries only grow with t
    let kq = 0;
    let vq = 0;
    for (let t0 = 0; t0 < nTok; ) {
      const bK = this.kSide.residual > 0 || this.kSide.partial > 0 ? PackedKvStorage.fullFrom(this.kSide, pos + t0 + 1) : -1;
      const bV = this.vSide.residual > 0 ? PackedKvStorage.fullFrom(this.vSide, pos + t0 + 1) : -1;
      let t1 = t0 + 1;
      // a partial KIVI key group looks different to every query: one query at a time
      while (
        t1 < nTok &&
        (!this.kSide.partial || snapshots) &&
        (bK < 0 || PackedKvStorage.fullFrom(this.kSide, pos + t1 + 1) === bK) &&
        (bV < 0 || PackedKvStorage.fullFrom(this.vSide, pos + t1 + 1) === bV)
      )
        t1++;
      const n = pos + t1;
      // every position is quantized for a side without residual (state = n); a KIVI side as of query t0
      // (pre-RoPE keys get RoPE below: refilled whole for every group of queries, never roped twice)
      // pre-RoPE keys: rows [0, kq) hold final quantized keys with RoPE from an earlier group of queries;
      // what fill writes from kq on (quantized rows, then the residual or partial group) gets RoPE here
      const kFrom = kq;
      if (snapshots) {
        kq = bK;
        for (let t = t0; t < t1; t++) this.kSide.readPartial!(layer, bK, pos + t + 1, snapRows!, (t - t0) * G * this.kvDim);
      } else kq = this.fill(this.kSide, layer, this.kRows, n, bK < 0 ? n : pos + t0 + 1, kq, !!kSource);
      vq = this.fill(this.vSide, layer, this.vRows, n, bV < 0 ? n : pos + t0 + 1, vq, packed);
      if (ropeHere) this.ropeRows(layer, this.kRows, kFrom, n);
      const qs = qq.subarray(t0 * qDim, t1 * qDim);
      const os = out.subarray(t0 * qDim, t1 * qDim);
      if (packed) {
        const partial = snapRows ? { rows: snapRows, stride: G * this.kvDim } : undefined;
        const k = { source: kSource, b: kSource ? kq : 0, tail: this.kRows, rope: kSource && kRope ? kRope : undefined, partial };
        const v = { source: vSource, b: vq, tail: this.vRows };
        if (!this.engine!.attentionPacked(qs, t1 - t0, pos + t0, shape.nHeads, shape.nKvHeads, shape.headDim, this.kvDim, shape.scale, k, v, os, intKeys)) fail('packed attention: the cache is not in kernel memory');
      } else if (fast) this.engine!.attention(qs, t1 - t0, pos + t0, shape.nHeads, shape.nKvHeads, shape.headDim, this.kAt, this.vAt, this.kvDim, shape.scale, os);
      else attentionGgmlRef(qs, this.kRows, this.vRows, t1 - t0, pos + t0, shape, os, accF16);
      t0 = t1;
    }
    if (this.valueType.rotate) rotateHeads(out, nTok, qDim, shape.headDim);
  }
}

/** per engine: the partial KIVI key group of each query of a batch (kernel memory, reused by every cache of the engine) */
const snapshotBuffers = new WeakMap<MatmulEngine, Float32Array>();
function snapshotRows(engine: MatmulEngine, n: number): Float32Array | null {
  let rows = snapshotBuffers.get(engine);
  if (!rows || rows.length < n) {
    rows = engine.allocF32(n, engine)?.array;
    if (!rows) return null;
    snapshotBuffers.set(engine, rows);
  }
  return rows;
}

/** A packed KV cache for a model's geometry (engine: the WebAssembly kernels, when in use). */
export function packedKvStorage(o: KvCacheOptions, g: KvGeometry, engine: MatmulEngine | null): PackedKvStorage {
  return new PackedKvStorage(o, g, engine);
}
