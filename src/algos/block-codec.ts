/**
 * Block codecs as element grids, for the calibrated algorithms (GPTQ, AWQ, HQQ, clip search).
 *
 * A block codec quantizes `blockSize` consecutive values of a row into `blockBytes` bytes, independently
 * of every other block: every GGML type, and every lowbit scheme whose packed rows are a concatenation
 * of per-block (or per-row) records (int4_g32, uint4_g128_asym, mxfp4, nf4_g64, int8_ch, ...).
 *
 * GPTQ must choose each element's value itself while keeping the block's scales as the codec chose them.
 * Rather than re-implementing every layout, the element grid is learned from the codec:
 *
 *   layout (once per codec): quantize a few random blocks; flip each bit of the bytes and dequantize.
 *     A bit that changes exactly one element j (in every probe where it changes anything) is a code bit
 *     of element j; bits that change many elements are scales, minima, signs of shared fields.
 *   levels (per block): with the scale bits of a block fixed, set every element's code bits to c and
 *     dequantize: element j's value for code c, for all 2^bits codes.
 *   write: set the chosen codes into the block bytes. The codec's own dequantizer then reproduces the
 *     chosen values exactly (checked after every GPTQ block write).
 *
 * Types whose code bits are shared between elements (TQ1_0's base-3 packing, the IQ2/IQ3 lattice
 * codebooks) have no per-element grid and are refused with a clear error.
 */
import { fail } from '../errors.js';
import { fmix32 } from '../formats/rounding.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import type { GgmlCodec } from '../quant/ggml/types.js';
import type { QuantScheme } from '../quant/scheme.js';
import { groupBlockPath, type AffineGrid } from '../quant/schemes/generic.js';

export interface BlockCodec {
  /** the GGML type name or scheme id */
  readonly name: string;
  /** elements per block */
  readonly blockSize: number;
  readonly blockBytes: number;
  /** true when `quantize` uses an importance vector (llama.cpp's imatrix path) */
  readonly usesImportance: boolean;
  /** the real quantizer for one block: x[xo .. xo+blockSize) -> out[oo .. oo+blockBytes) */
  quantize(x: Float32Array, xo: number, out: Uint8Array, oo: number, importance?: Float32Array): void;
  /** the real dequantizer for one block */
  dequantize(bytes: Uint8Array, bo: number, out: Float32Array, oo: number): void;
  /**
   * Optional, for codecs with a closed-form grid: x's nearest values on the grid of the block at
   * bytes[bo ..] (its scales kept), ties either way. Clip searches rank candidates with it instead of
   * building each candidate's grid.
   */
  snap?(bytes: Uint8Array, bo: number, x: Float32Array, xo: number, out: Float32Array, oo: number): void;
  /**
   * Optional, with snap: the parameter bytes (scales, zero-points) `quantize` writes for the block
   * fround(x * ratio), without its element codes (left as they were): a clip candidate's grid.
   */
  clipHeader?(x: Float32Array, xo: number, ratio: number, out: Uint8Array, oo: number): void;
  /** Optional, with snap: the grid is affine in the codes (one scale and zero-point per block; generic.ts AffineGrid) */
  readonly affine?: AffineGrid;
}

/** A GGML type's codec as a block codec. */
export function ggmlBlockCodec(c: GgmlCodec): BlockCodec {
  const q = c.quantize;
  if (!q) fail(`lowbit cannot quantize to ${c.type.name} yet`);
  const bs = c.type.blockSize;
  const nb = c.type.typeSize;
  const xbuf = new Float32Array(bs);
  return {
    name: c.type.name,
    blockSize: bs,
    blockBytes: nb,
    usesImportance: !!c.usesImportance,
    quantize(x, xo, out, oo, importance) {
      xbuf.set(x.subarray(xo, xo + bs));
      q(xbuf, 1, bs, out.subarray(oo, oo + nb), c.usesImportance ? importance : undefined);
    },
    dequantize(bytes, bo, out, oo) {
      c.dequantize(bytes.subarray(bo, bo + nb), bs, out.subarray(oo, oo + bs));
    },
  };
}

/**
 * A lowbit scheme as a block codec for rows of `rowLength`: its own block size, or the whole row for
 * per-row schemes. Tensor-scoped schemes (a scale shared across rows: nvfp4's tensor scale, per-tensor,
 * per-column, 2-D tiles) are refused.
 */
export function schemeBlockCodec(s: QuantScheme, rowLength: number): BlockCodec {
  if (s.tensorScoped) fail(`${s.id} shares scales across rows; GPTQ/AWQ/HQQ need a per-block or per-row scheme (for NVFP4 use ggml_nvfp4)`);
  const bs = s.blockSize > 1 ? s.blockSize : rowLength;
  if (rowLength % bs !== 0) fail(`${s.id}: row length ${rowLength} is not a multiple of its block size ${bs}`);
  const nb = s.packedBytes(1, bs);
  // the scheme's rows must be concatenations of independent blocks: check on a small random matrix
  if (bs < rowLength) {
    const r = 2;
    const x = probeValues(r * 2 * bs, 7);
    const whole = s.quantizeRef(x, r, 2 * bs);
    const parts = new Uint8Array(whole.length);
    if (whole.length !== r * 2 * nb) fail(`${s.id}: packed rows are not whole blocks`);
    for (let b = 0; b < 2 * r; b++) parts.set(s.quantizeRef(x.subarray(b * bs, (b + 1) * bs), 1, bs), b * nb);
    if (whole.some((v, i) => v !== parts[i])) fail(`${s.id}: blocks are not stored independently; GPTQ/AWQ/HQQ cannot drive it`);
  }
  const fast = groupBlockPath(s);
  if (fast && fast.blockBytes === nb) return { name: s.id, blockSize: bs, blockBytes: nb, usesImportance: false, quantize: fast.quantize, dequantize: fast.dequantize, snap: fast.snap, clipHeader: fast.clipHeader, ...(fast.affine ? { affine: fast.affine } : {}) };
  return {
    name: s.id,
    blockSize: bs,
    blockBytes: nb,
    usesImportance: false,
    quantize(x, xo, out, oo) {
      out.set(s.quantizeRef(x.subarray(xo, xo + bs), 1, bs), oo);
    },
    dequantize(bytes, bo, out, oo) {
      s.dequantizeRef(bytes.subarray(bo, bo + nb), 1, bs, out.subarray(oo, oo + bs));
    },
  };
}

/** A GGML type name (Q4_K, ggml_q4_k) or a resolved scheme, as a block codec for rows of rowLength. */
export function blockCodecFor(target: string | QuantScheme, rowLength: number): BlockCodec {
  if (typeof target === 'string') {
    const c = ggmlCodec(target.replace(/^ggml_/i, ''));
    if (!c) fail(`no GGML codec for ${target}`);
    return ggmlBlockCodec(c);
  }
  if (target.family === 'ggml') return blockCodecFor(target.name, rowLength);
  if (target.family === 'olive') fail(`${target.id}: OliVe's outlier-victim pairs have no per-element grid (an outlier prunes its neighbour), so only round-to-nearest writes it (--algo rtn)`);
  return schemeBlockCodec(target, rowLength);
}

/** deterministic normal-ish values with varied magnitudes (probing input) */
function probeValues(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = (fmix32((seed * 0x9e3779b1 + 2 * i) >>> 0) + 0.5) / 4294967296;
    const u2 = (fmix32((seed * 0x9e3779b1 + 2 * i + 1) >>> 0) + 0.5) / 4294967296;
    x[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2) * (i % 7 === 3 ? 3 : 1);
  }
  return x;
}

/** Where each element's code lives: codeBits[j * bits + b] = bit index (byte * 8 + bit) of code bit b. */
export interface CodeLayout {
  readonly bits: number;
  readonly codeBits: Int32Array;
  /** byte offsets of the bytes holding anything but code bits, and the mask of their non-code bits */
  readonly paramBytes: Int32Array;
  readonly paramMasks: Uint8Array;
}

const layouts = new Map<string, CodeLayout>();

function sameValue(a: number, b: number): boolean {
  return a === b || (a !== a && b !== b);
}

/** Probe (and cache) the code layout of a block codec. */
export function codeLayout(c: BlockCodec): CodeLayout {
  const key = `${c.name}/${c.blockSize}`;
  const hit = layouts.get(key);
  if (hit) return hit;
  const bs = c.blockSize;
  const nBits = c.blockBytes * 8;
  // owner[b]: -1 never changes anything, -2 changes several elements, j: only ever element j
  const owner = new Int32Array(nBits).fill(-1);
  const probes = bs * nBits > 1 << 22 ? 2 : 4;
  const bytes = new Uint8Array(c.blockBytes);
  const base = new Float32Array(bs);
  const out = new Float32Array(bs);
  for (let p = 0; p < probes; p++) {
    const x = probeValues(bs, 101 + p);
    for (let i = 0; i < bs; i++) x[i] *= 0.01 * (p + 1);
    c.quantize(x, 0, bytes, 0);
    c.dequantize(bytes, 0, base, 0);
    for (let b = 0; b < nBits; b++) {
      if (owner[b] === -2) continue;
      bytes[b >> 3] ^= 1 << (b & 7);
      c.dequantize(bytes, 0, out, 0);
      bytes[b >> 3] ^= 1 << (b & 7);
      let changed = -1;
      for (let j = 0; j < bs; j++) {
        if (sameValue(out[j], base[j])) continue;
        changed = changed === -1 ? j : -2;
        if (changed === -2) break;
      }
      if (changed === -1) continue;
      if (changed === -2 || (owner[b] >= 0 && owner[b] !== changed)) owner[b] = -2;
      else owner[b] = changed;
    }
  }
  const perElement: number[][] = Array.from({ length: bs }, () => []);
  for (let b = 0; b < nBits; b++) if (owner[b] >= 0) perElement[owner[b]].push(b);
  const bits = perElement[0].length;
  if (bits === 0 || bits > 8 || perElement.some((l) => l.length !== bits))
    fail(`${c.name}: its elements do not have independent codes (found ${Math.min(...perElement.map((l) => l.length))}..${Math.max(...perElement.map((l) => l.length))} code bits per element); GPTQ/AWQ/HQQ cannot drive it`);
  const codeBits = new Int32Array(bs * bits);
  perElement.forEach((l, j) => l.forEach((b, i) => (codeBits[j * bits + i] = b)));
  const codeMask = new Uint8Array(c.blockBytes);
  for (const b of codeBits) codeMask[b >> 3] |= 1 << (b & 7);
  const params = [...codeMask.keys()].filter((i) => codeMask[i] !== 0xff);
  const layout = { bits, codeBits, paramBytes: Int32Array.from(params), paramMasks: Uint8Array.from(params, (i) => ~codeMask[i] & 0xff) };
  layouts.set(key, layout);
  return layout;
}

/**
 * Clip searches (clipBlocks, GPTQ's per-group search) run for codes of at most this many bits: at 8
 * bits round-to-nearest with the absmax scale is already close to the best clip, and a grid of 256
 * levels per element makes the search costly.
 */
export const CLIP_SEARCH_MAX_BITS = 6;

const packedStarts = new WeakMap<CodeLayout, number>();

/**
 * The first code bit when element j's code is bits b0 + j bits .. + bits - 1 of the block, lowest first
 * (bits dividing 8: a code never spans two bytes); -1 for any other layout (setCodes bit by bit)
 */
function packedStart(layout: CodeLayout): number {
  let b0 = packedStarts.get(layout);
  if (b0 === undefined) {
    const { bits, codeBits } = layout;
    b0 = 8 % bits === 0 && codeBits.length > 0 && codeBits[0] % bits === 0 ? codeBits[0] : -1;
    for (let i = 0; b0 >= 0 && i < codeBits.length; i++) if (codeBits[i] !== b0 + i) b0 = -1;
    packedStarts.set(layout, b0);
  }
  return b0;
}

/** Write code `codes[j]` of every element j into a block's bytes. */
export function setCodes(layout: CodeLayout, bytes: Uint8Array, bo: number, codes: ArrayLike<number>, n: number): void {
  const { bits, codeBits } = layout;
  const packed = packedStart(layout);
  if (packed >= 0) {
    // the same bits, a code at a time: element j's code is bits packed + j bits .. of the block, within one byte
    const m = (1 << bits) - 1;
    for (let j = 0; j < n; j++) {
      const p = packed + j * bits;
      const at = bo + (p >> 3);
      const sh = p & 7;
      bytes[at] = (bytes[at] & ~(m << sh)) | ((codes[j] & m) << sh);
    }
    return;
  }
  for (let j = 0; j < n; j++) {
    const c = codes[j];
    for (let i = 0; i < bits; i++) {
      const b = codeBits[j * bits + i];
      const at = bo + (b >> 3);
      const m = 1 << (b & 7);
      if ((c >> i) & 1) bytes[at] |= m;
      else bytes[at] &= ~m;
    }
  }
}

/**
 * The grids of `slots` blocks: for each element j of the block in a slot, its distinct finite values in
 * increasing order and the code of each. Element (slot, j) uses values/codes at ((slot * blockSize + j)
 * * nCodes) .. + count[slot * blockSize + j].
 */
export class BlockGrids {
  readonly codec: BlockCodec;
  readonly layout: CodeLayout;
  readonly nCodes: number;
  readonly values: Float32Array;
  readonly codes: Uint16Array;
  readonly count: Uint16Array;
  private readonly raw: Float32Array;
  private readonly work: Uint8Array;
  private readonly codeBuf: Uint16Array;
  private readonly order: number[];

  constructor(codec: BlockCodec, slots = 1) {
    this.codec = codec;
    this.layout = codeLayout(codec);
    this.nCodes = 1 << this.layout.bits;
    const bs = codec.blockSize;
    this.values = new Float32Array(slots * bs * this.nCodes);
    this.codes = new Uint16Array(slots * bs * this.nCodes);
    this.count = new Uint16Array(slots * bs);
    this.raw = new Float32Array(bs * this.nCodes);
    this.work = new Uint8Array(codec.blockBytes);
    this.codeBuf = new Uint16Array(bs);
    this.order = Array.from({ length: this.nCodes }, (_, i) => i);
  }

  /**
   * Grids of blocks seen before, keyed by their parameter bits (scales, minima): a block's grid depends
   * on nothing else, and with 16-bit scales many blocks of a tensor share one.
   */
  private readonly cache = new Map<string | number, { values: Float32Array; codes: Uint16Array; count: Uint16Array }>();

  /** Compute the grids of the block at bytes[bo ..] into `slot`. */
  load(slot: number, bytes: Uint8Array, bo: number): void {
    const { codec, layout, nCodes } = this;
    const bs = codec.blockSize;
    const np = layout.paramBytes.length;
    // up to 6 parameter bytes: the key is their number (no string built per block)
    let key: string | number = 0;
    if (np <= 6) for (let i = 0; i < np; i++) key = key * 256 + (bytes[bo + layout.paramBytes[i]] & layout.paramMasks[i]);
    else {
      key = '';
      for (let i = 0; i < np; i++) key += String.fromCharCode(bytes[bo + layout.paramBytes[i]] & layout.paramMasks[i]);
    }
    const at = slot * bs * nCodes;
    const hit = this.cache.get(key);
    if (hit) {
      this.values.set(hit.values, at);
      this.codes.set(hit.codes, at);
      this.count.set(hit.count, slot * bs);
      return;
    }
    this.compute(slot, bytes, bo);
    if (this.cache.size >= 4096) this.cache.clear();
    this.cache.set(key, { values: this.values.slice(at, at + bs * nCodes), codes: this.codes.slice(at, at + bs * nCodes), count: this.count.slice(slot * bs, (slot + 1) * bs) });
  }

  private compute(slot: number, bytes: Uint8Array, bo: number): void {
    const { codec, layout, nCodes, raw } = this;
    const bs = codec.blockSize;
    for (let c = 0; c < nCodes; c++) {
      this.work.set(bytes.subarray(bo, bo + codec.blockBytes));
      this.codeBuf.fill(c);
      setCodes(layout, this.work, 0, this.codeBuf, bs);
      codec.dequantize(this.work, 0, raw, c * bs); // raw: nCodes x bs
    }
    const ord = this.order;
    for (let j = 0; j < bs; j++) {
      // the code order that sorts the values is nearly always the previous element's: check it first
      let sorted = true;
      for (let i = 1; i < nCodes && sorted; i++) {
        const va = raw[ord[i - 1] * bs + j];
        const vb = raw[ord[i] * bs + j];
        if (va > vb || (va === vb && ord[i - 1] > ord[i]) || va !== va || vb !== vb) sorted = false;
      }
      if (!sorted) {
        for (let c = 0; c < nCodes; c++) ord[c] = c;
        ord.sort((a, b) => {
          const va = raw[a * bs + j];
          const vb = raw[b * bs + j];
          if (va !== va || vb !== vb) return (va !== va ? 1 : 0) - (vb !== vb ? 1 : 0) || a - b;
          return va - vb || a - b;
        });
      }
      const e = slot * bs + j;
      const o = e * nCodes;
      let n = 0;
      for (let i = 0; i < nCodes; i++) {
        const c = ord[i];
        const v = raw[c * bs + j];
        if (!Number.isFinite(v)) continue;
        if (n > 0 && this.values[o + n - 1] === v) continue; // same value: keep the smaller code
        this.values[o + n] = v;
        this.codes[o + n] = c;
        n++;
      }
      if (n === 0) fail(`${codec.name}: a block has no finite value for element ${j}`);
      this.count[e] = n;
    }
  }

  /** index into values/codes of the level of element j of `slot` nearest to x; ties go down */
  nearest(slot: number, j: number, x: number): number {
    const e = slot * this.codec.blockSize + j;
    return nearestLevel(this.values, e * this.nCodes, this.count[e], x);
  }
}

/** index (o .. o + n - 1) of the level of v[o .. o + n] (n >= 1, sorted increasing) nearest to x; ties go down */
export function nearestLevel(v: Float32Array, o: number, n: number, x: number): number {
  let lo = o;
  let hi = o + n - 1;
  if (!(x > v[lo])) return lo;
  if (x >= v[hi]) return hi;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (v[mid] <= x) lo = mid;
    else hi = mid;
  }
  return x - v[lo] <= v[hi] - x ? lo : hi;
}

/**
 * Round x (one block) to the grid of the given block bytes (its scales kept): writes the codes into the
 * bytes and the values into q. The "requantize with fixed scales" step of clip searches and HQQ.
 */
export function snapToBlock(g: BlockGrids, bytes: Uint8Array, bo: number, x: Float32Array, xo: number, q: Float32Array, qo: number, codes: Uint16Array): void {
  g.load(0, bytes, bo);
  const bs = g.codec.blockSize;
  for (let j = 0; j < bs; j++) {
    const i = g.nearest(0, j, x[xo + j]);
    q[qo + j] = g.values[i];
    codes[j] = g.codes[i];
  }
  setCodes(g.layout, bytes, bo, codes, bs);
}
