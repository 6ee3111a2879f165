/**
 * y = x · Wᵀ against weights in their stored GGML type, in WebAssembly SIMD (wasm/matmul.ts), on one
 * or more threads (threads.ts).
 *
 *   x: T x K activations (f32), W: N x K weights (N rows of K in type `type`), y: T x N.
 *
 * A MatmulEngine owns one WebAssembly.Memory (shared between threads where SharedArrayBuffer exists)
 * that holds the weights (copied in by storeWeight, or read straight into allocBytes arrays by the
 * loader), the runtime's buffers (allocF32: KV cache, run state; used in place) and the buffers of a
 * call: x when it lives elsewhere (rows padded to Kx = K rounded up to 4, zeros after K), y, and each
 * thread's f32 scratch for dequantized rows. It also runs causal attention, SwiGLU and log-sum-exp.
 * Types the kernel cannot dequantize (the IQ grid types, ternary, FP4...) are dequantized here, a row
 * block at a time, with their TypeScript codec, then multiplied as F32.
 *
 * Order of operations (the spec is matmulLanesRef below): each output is a dot product in 4 lanes,
 * lane j summing x[k] * w[k] for k = j, j + 4, ... in increasing k, then (lane0 + lane2) + (lane1 + lane3).
 * The plain SIMD build rounds each product and each sum to f32: bit for bit matmulLanesRef. The relaxed
 * build may fuse them (f32x4.relaxed_madd). Against the exact dot product both are within
 *   |y - x·w| <= gamma(K/4 + 2) * sum_k |x[k] w[k]|,   gamma(m) = m u / (1 - m u), u = 2^-24
 * (m sequential roundings per lane plus two for the lane sum; Higham, Accuracy and Stability, 3.1).
 * No result depends on T, the tiling or the number of threads.
 */
import { fail } from '../errors.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import type { GgmlTypeInfo } from '../quant/ggml/types.js';
import { CONTROL_BYTES, JOB_OFFSET, KernelThreads, hostNow, MAX_CHUNKS, PRIVATE_BYTES, PRIVATE_SCRATCH } from './threads.js';
import { wasmVariant, type KernelSource } from './wasm.js';
import * as matmulWasm from './wasm/matmul.generated.js';

interface MatmulExports {
  heapBase(): number;
  relaxed(): number;
  hasType(type: number): number;
  dequantize(type: number, src: number, rowBytes: number, rows: number, k: number, dst: number, kx: number): void;
  kiviRows(perChannel: number, src: number, rowBytes: number, bits: number, G: number, rec: number, from: number, to: number, kvDim: number, dst: number): void;
  runChunk(job: number, chunk: number, thread: number): void;
  siluMul(g: number, u: number, n: number): void;
  logSumExp(x: number, n: number, max: number): number;
  firstNonFinite(x: number, n: number): number;
  expArray(x: number, y: number, n: number): void;
  intBlock(type: number): number;
  intRowScratch(type: number, k: number): number;
  quantizeActs(kind: number, x: number, xs: number, nTok: number, k: number, q: number, d: number, s: number): void;
  actBytes8(k: number): number;
  prepActs8(q: number, nTok: number, k: number, dst: number, splats: number): void;
  prefillRowBytes(type: number, k: number): number;
  quadBytes(k: number): number;
  quadBytes16(k: number): number;
  prepQuads16(q: number, nTok: number, k: number, dst: number): void;
  prepQuads(q: number, s32: number, nTok: number, k: number, dst: number): void;
  interleave4(src: number, dst: number, rows: number, rowBytes: number, bs: number, type: number): void;
  decodeBlockBytes(type: number): number;
  decodeExtra32(type: number): number;
  decodeGroupRows(type: number): number;
  cholDiag(a: number, k: number, kb: number, e: number): number;
  zeroUpperRows(a: number, k: number, i0: number, i1: number): void;
  transposePad(x: number, nTok: number, k: number, xt: number, ld: number): void;
  transposePacked(x: number, nTok: number, k: number, xt: number, ld: number): void;
  packTriples(src: number, srcStride: number, rows: number, bytes: number, dst: number): void;
  rmsnormRows(x: number, w: number, out: number, nTok: number, size: number, eps: number): void;
  addInto(a: number, b: number, n: number): void;
  ropeRows(v: number, nTok: number, nHeads: number, headDim: number, half: number, pos0: number, cs: number, sn: number, normal: number): void;
}

const PAGE = 65536;
/** f32 per thread scratch for the dequantized rows of a chunk: 192 KiB, L2-resident */
const SCRATCH_FLOATS = 48 * 1024;
/** most rows per chunk */
const MAX_CHUNK_ROWS = 48;
/** below this many flops (2 T K N) a call runs on the calling thread only (waking workers costs ~10 µs) */
const MIN_PARALLEL_FLOPS = 1 << 20;
/** prefill attention from this many queries gathers each head's cache rows side by side first (wasm attentionChunk) */
const ATTENTION_GATHER_TOKENS = 16;
/** activations (tokens x K) from which matmulInt rounds them on every thread (a chunk of 8 tokens of K = 768 is ~10 µs) */
const MIN_PARALLEL_ROUNDING = 1 << 15;
/** element-wise work (SwiGLU, log-softmax rows) on every thread from this many values */
const MIN_PARALLEL_ELEMENTS = 1 << 16;
/**
 * Rows per chunk of a one-token matmul on a copy interleaved by 4 rows: one chunk per thread (whole
 * groups of 4 rows), no more rows than a worker's private area holds (so the chunk stays stealable,
 * threads.ts). One chunk per thread, not ~8: a chunk of a 768-row Q4_0 matvec was ~1.5 µs, and the
 * claims, the private copies and the late worker's tail cost as much as the second thread saved
 * (session 29: 2 threads decoded no faster than 1). A matmul with more rows than the threads' areas
 * hold gets the same number of chunks on every thread, in whole groups of 8 rows: the 1.1B model's
 * gate | up (11264 rows) on 2 threads was 3 chunks of up to 4096 rows, one thread ran two of them
 * (7168 rows against 5632) while the other waited; now 4 of 2816.
 */
export function decodeChunkRows(rows: number, threads: number): number {
  const per = Math.ceil(rows / Math.max(1, threads) / 4) * 4;
  if (threads <= 1) return per;
  const cap = ((PRIVATE_BYTES - PRIVATE_SCRATCH) >> 4) << 2;
  if (per <= cap) return Math.max(4, per);
  return Math.min(cap, Math.ceil(rows / (threads * Math.ceil(per / cap)) / 8) * 8);
}
/**
 * One token's attention runs on the workers from this many flops (4 x heads x head size x positions:
 * ~21 positions of the 155M model). Its time is reading the cache (rows of a head 3 KiB apart on the
 * 155M model, ~0.4 MB a layer at 70 positions): ~35 µs a layer on one thread, 6-11 % of a token on two
 * threads when it ran on the calling thread alone; the workers are awake (spinning) from the q/k/v
 * matmul just before.
 */
const MIN_PARALLEL_ATTENTION_FLOPS = 1 << 16;
/** f32 of a row block for types dequantized in TypeScript: 4 MiB */
const FALLBACK_FLOATS = 1 << 20;

/** The f32 reference for the kernel's order of operations, with plain (unfused) f32 rounding. */
export function matmulLanesRef(out: Float32Array, x: Float32Array, w: Float32Array, nTok: number, k: number, n: number): void {
  const fr = Math.fround;
  for (let t = 0; t < nTok; t++) {
    for (let j = 0; j < n; j++) {
      const lanes = [0, 0, 0, 0];
      for (let i = 0; i < k; i++) lanes[i & 3] = fr(lanes[i & 3] + fr(x[t * k + i] * w[j * k + i]));
      out[t * n + j] = fr(fr(lanes[0] + lanes[2]) + fr(lanes[1] + lanes[3]));
    }
  }
}

/**
 * The reference for the attention kernel (and the runtime's TypeScript path): causal attention of nTok
 * query rows (nHeads * headDim each) at positions pos0.., against keys/values of positions
 * [0, pos0 + nTok) (kvDim per position; query head h uses kv head h / (nHeads / nKvHeads)). Float64
 * scores and softmax; out accumulates in f32. `scores` holds at least pos0 + nTok values.
 */
export function attentionRef(
  q: Float32Array, keys: Float32Array, values: Float32Array, nTok: number, pos0: number, nHeads: number, nKvHeads: number,
  headDim: number, scale: number, out: Float32Array, scores: Float64Array,
): void {
  const kvDim = nKvHeads * headDim;
  const qDim = nHeads * headDim;
  const group = nHeads / nKvHeads;
  for (let t = 0; t < nTok; t++) {
    const nPos = pos0 + t + 1;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qDim + h * headDim;
      const ko = Math.floor(h / group) * headDim; // this head's kv head
      let max = -Infinity;
      for (let p = 0; p < nPos; p++) {
        let dot = 0;
        const kp = p * kvDim + ko;
        for (let i = 0; i < headDim; i++) dot += q[qo + i] * keys[kp + i];
        const score = dot * scale;
        scores[p] = score;
        if (score > max) max = score;
      }
      let sum = 0;
      for (let p = 0; p < nPos; p++) {
        const ex = Math.exp(scores[p] - max);
        scores[p] = ex;
        sum += ex;
      }
      const o = out.subarray(qo, qo + headDim);
      o.fill(0);
      for (let p = 0; p < nPos; p++) {
        const a = scores[p] / sum;
        const vp = p * kvDim + ko;
        for (let i = 0; i < headDim; i++) o[i] += a * values[vp + i];
      }
    }
  }
}

const f64Bits = new Float64Array(1);
const f64Int = new BigInt64Array(f64Bits.buffer);

/**
 * f32(a * b + c) rounded once, for f32 a, b, c (relaxed SIMD's fused multiply-add): a * b is exact in f64;
 * the f64 sum is made round-to-odd (nudged one ulp toward the TwoSum error when inexact and even), and
 * rounding that to f32 is then the correct rounding of the exact sum (53 >= 24 + 2 bits).
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  if (err === 0 || !Number.isFinite(s)) return Math.fround(s);
  f64Bits[0] = s;
  if ((f64Int[0] & 1n) === 0n) f64Int[0] += (err > 0) === (s > 0) ? 1n : -1n;
  return Math.fround(f64Bits[0]);
}

/** wasm/matmul.ts exp4 on one f32 (the same operations, each rounded to f32) */
export function exp4Ref(x: number): number {
  const fr = Math.fround;
  x = x < -87 ? -87 : x; // pmax(x, -87); x <= 0 or NaN here
  let n = fr(x * fr(1.4426950408889634));
  const fl = Math.floor(n);
  n = n - fl === 0.5 ? (fl % 2 === 0 ? fl : fl + 1) : Math.round(n); // nearest, ties to even
  let r = fr(x - fr(n * fr(0.693359375)));
  r = fr(r - fr(n * fr(-2.1219444e-4)));
  let p = fr(1 / 5040);
  for (const c of [1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1, 1]) p = fr(fr(p * r) + fr(c));
  f32Bits[0] = p;
  i32Bits[0] = (i32Bits[0] + ((Number.isNaN(n) ? 0 : n) << 23)) | 0;
  return f32Bits[0];
}
const f32Bits = new Float32Array(1);
const i32Bits = new Int32Array(f32Bits.buffer);

/**
 * The exact reference for the attention kernel (wasm/matmul.ts attentionChunk, job kind 2): the inputs
 * and the bits of attentionRef's computation in the kernel's order. Each score: 4 f32 lanes, lane j
 * summing q[i] k[i] for i = j, j + 4, .. in increasing i, then ((l0 + l2) + (l1 + l3)) * scale; e[p] =
 * exp4(s[p] - max); sum in f64 adding ((e[p] + e[p+1]) + e[p+2]) + e[p+3] for each 4 in turn, then the
 * tail one by one; out[i] = (the chain acc = e[p] v[p][i] + acc over p = 0, 1, ..) * f32(1 / sum).
 * `fused`: the multiply-adds rounded once (relaxed SIMD's fma), else product and sum each rounded.
 */
export function attentionLanesRef(
  q: Float32Array, keys: Float32Array, values: Float32Array, nTok: number, pos0: number, nHeads: number, nKvHeads: number,
  headDim: number, scale: number, out: Float32Array, fused: boolean,
): void {
  const fr = Math.fround;
  const madd = fused ? fmaF32 : (a: number, b: number, c: number) => fr(fr(a * b) + c);
  const kvDim = nKvHeads * headDim;
  const qDim = nHeads * headDim;
  const group = nHeads / nKvHeads;
  const sc = fr(scale);
  const e = new Float32Array(pos0 + nTok);
  for (let t = 0; t < nTok; t++) {
    const np = pos0 + t + 1;
    for (let h = 0; h < nHeads; h++) {
      const qo = t * qDim + h * headDim;
      const ko = Math.floor(h / group) * headDim;
      let max = -Infinity;
      let nan = false;
      for (let p = 0; p < np; p++) {
        const l = [0, 0, 0, 0];
        for (let i = 0; i < headDim; i++) l[i & 3] = madd(q[qo + i], keys[p * kvDim + ko + i], l[i & 3]);
        const s = fr(fr(fr(l[0] + l[2]) + fr(l[1] + l[3])) * sc);
        e[p] = s;
        if (Number.isNaN(s)) nan = true;
        else if (s > max) max = s;
      }
      if (nan) max = NaN;
      let sum = 0;
      let p = 0;
      for (; p < np; p++) e[p] = exp4Ref(fr(e[p] - max));
      for (p = 0; p + 4 <= np; p += 4) sum += e[p] + e[p + 1] + e[p + 2] + e[p + 3];
      for (; p < np; p++) sum += e[p];
      const inv = fr(1 / sum);
      for (let i = 0; i < headDim; i++) {
        let acc = 0;
        for (p = 0; p < np; p++) acc = madd(e[p], values[p * kvDim + ko + i], acc);
        out[qo + i] = fr(acc * inv);
      }
    }
  }
}

/** The reference for wasm/matmul.ts transposePad: xt[i * ld + t] = x[t * k + i] for t < nTok, 0 for nTok <= t < ld. */
export function transposePadRef(x: Float32Array, nTok: number, k: number, ld: number): Float32Array {
  const xt = new Float32Array(k * ld);
  for (let t = 0; t < nTok; t++) for (let i = 0; i < k; i++) xt[i * ld + t] = x[t * k + i];
  return xt;
}

/** gamma(K/4 + 2) of the error bound above, for K inputs */
export function matmulErrorFactor(k: number): number {
  const m = Math.ceil(k / 4) + 2;
  const u = 2 ** -24;
  return (m * u) / (1 - m * u);
}

/** A weight matrix held in kernel memory. */
export interface KernelWeight {
  readonly engine: MatmulEngine;
  readonly type: GgmlTypeInfo;
  /** N */
  readonly rows: number;
  /** K */
  readonly cols: number;
  readonly rowBytes: number;
  /** byte offset in the engine's memory */
  readonly ptr: number;
  /** the allocBytes array this weight took over (it owns the allocation) */
  readonly owner?: Uint8Array;
}

/**
 * Weights stop going into kernel memory this far below its 4 GiB end (they stay in JavaScript memory
 * and are copied in a block at a time), so that activations, scratch and thread control still fit.
 */
const WEIGHT_HEADROOM = 256 * 2 ** 20;

/** First-fit allocator over [base, memory end), growing the memory as needed. */
class Heap {
  private readonly free: { at: number; size: number }[] = [];
  private readonly sizes = new Map<number, number>();
  private top: number;
  /**
   * the end of the memory ever handed out: above it the memory is as WebAssembly grew it, zeros (no
   * module code writes above the heap base but through blocks of this heap)
   */
  high: number;

  constructor(private readonly memory: WebAssembly.Memory, base: number, private readonly maxBytes: number) {
    this.top = base;
    this.high = base;
  }

  /** `keep`: fail rather than leave less than this many bytes for later allocations at the top */
  alloc(bytes: number, keep = 0): number | null {
    const size = Math.max(64, Math.ceil(bytes / 64) * 64);
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i];
      if (f.size < size) continue;
      const at = f.at;
      if (f.size === size) this.free.splice(i, 1);
      else {
        f.at += size;
        f.size -= size;
      }
      this.sizes.set(at, size);
      return at;
    }
    const at = this.top;
    const end = at + size;
    if (end > this.maxBytes - keep) return null;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        return null;
      }
    }
    this.top = end;
    if (end > this.high) this.high = end;
    this.sizes.set(at, size);
    return at;
  }

  release(at: number): void {
    const size = this.sizes.get(at);
    if (size === undefined) return;
    this.sizes.delete(at);
    let i = this.free.findIndex((f) => f.at > at);
    if (i < 0) i = this.free.length;
    this.free.splice(i, 0, { at, size });
    // merge with the neighbours; a free block at the top returns to the top
    const next = this.free[i + 1];
    if (next && at + size === next.at) {
      this.free[i].size += next.size;
      this.free.splice(i + 1, 1);
    }
    const prev = this.free[i - 1];
    if (prev && prev.at + prev.size === at) {
      prev.size += this.free[i].size;
      this.free.splice(i, 1);
      i--;
    }
    const last = this.free[this.free.length - 1];
    if (last && last.at + last.size === this.top) {
      this.top = last.at;
      this.free.pop();
    }
  }
}

/** A growable buffer in kernel memory. */
/** a one-token matmulInt call as decodeInt repeats it (MatmulEngine.decodeCalls) */
interface DecodeCall {
  readonly out: Float32Array;
  readonly x: Float32Array;
  /** MatmulEngine.callStamp when it was made */
  readonly stamp: number;
  /** the job's words (matmulInt's) */
  readonly words: Int32Array;
  readonly chunks: number;
  readonly threads: number;
  /** roundFor's arguments for one token: x's address, block, columns, the rounding's buffers, prepActs8 or not */
  readonly xAt: number;
  readonly bl: number;
  readonly k: number;
  readonly xq: number;
  readonly xd: number;
  readonly xs: number;
  readonly xa: number;
  readonly prep: boolean;
  /** MatmulEngine.rounded after this call's rounding (reused: no allocation a token) */
  readonly rounded: { x: Float32Array | null; nTok: number; k: number; block: number; xq: number; xa: number };
}

interface Buffer {
  at: number;
  bytes: number;
}

/** Packed rows of one KV-cache side as the attention kernel reads them (wasm/matmul.ts fillHead). */
export interface PackedKvSource {
  /** 1 GGML rows, 2 KIVI per channel (groups of G positions), 3 KIVI per token (groups of G channels) */
  readonly mode: 1 | 2 | 3;
  /** position 0's packed bytes, in the engine's memory */
  readonly bytes: Uint8Array;
  /** bytes per position */
  readonly rowBytes: number;
  /** GGML type id, or KIVI bits per code */
  readonly type: number;
  /** KIVI: values per record (G); bytes per record */
  readonly group: number;
  readonly record: number;
}

/** One side of attentionPacked: positions [0, b) packed in `source`, [b, n) f32 rows in `tail` (position p at p * kvDim). */
export interface PackedAttentionSide {
  readonly source: PackedKvSource | null;
  readonly b: number;
  readonly tail: Float32Array;
  /**
   * keys only: the rows are stored before RoPE; the kernel applies RoPE to each dequantized head (rows
   * [0, n) at positions [0, n)) from f64 tables in this memory (allocBytes): `half` cos / sin per
   * position; normal: pairs (2i, 2i + 1), else (i, i + half). As ropeTabled of src/model/llama.ts, bit for bit.
   */
  readonly rope?: { readonly cos: Uint8Array; readonly sin: Uint8Array; readonly half: number; readonly normal: boolean; readonly positions: number };
  /**
   * keys only (a partial KIVI key group, --kv-residual 0): query t sees positions [b, pos0 + t + 1) as the
   * f32 rows at rows[t * stride + (p - b) * kvDim] (allocF32), positions [0, b) from `source`; `tail` unused
   */
  readonly partial?: { readonly rows: Float32Array; readonly stride: number };
}

export class MatmulEngine {
  readonly memory: WebAssembly.Memory;
  readonly variant: 'relaxed' | 'simd';
  /** is the memory shared (threads possible)? */
  readonly shared: boolean;
  private readonly exports: MatmulExports;
  private readonly module: WebAssembly.Module;
  private readonly heap: Heap;
  /** control block of the current pool (a new one per pool: old workers may still look at theirs) */
  private control: number;
  private pool: KernelThreads | null = null;
  private threadCount = 1;
  private readonly buffers = new Map<string, Buffer>();
  private readonly finalizer = new FinalizationRegistry<number>((at) => this.heap.release(at));
  /** arrays from allocBytes (each owns its allocation) */
  private readonly adoptable = new WeakSet<Uint8Array>();
  /** the memory's buffer objects seen so far (a shared memory hands out a new one after growing) */
  private readonly ours = new WeakSet<ArrayBufferLike>();
  /** a job's parameters, written into the control block by dispatch (reused: no allocation per call) */
  private readonly job = new Int32Array(17);
  /** the input matmulInt rounded last (its xq/xd/xsum/xa buffers hold it; x: null when none) */
  private rounded: { x: Float32Array | null; nTok: number; k: number; block: number; xq: number; xa: number } = { x: null, nTok: 0, k: 0, block: 0, xq: 0, xa: 0 };
  /**
   * One-token matmulInt calls as matmulInt last ran them (decodeInt): the weight's job words, its input,
   * output and rounding buffers, valid while `callStamp` is unchanged
   */
  private readonly decodeCalls = new WeakMap<KernelWeight, DecodeCall>();
  /** bumped when a buffer moves, the memory grows or the threads change: every DecodeCall made before is stale */
  private callStamp = 0;
  /** decodeInt and attentionOne may run (default on; off: they decline, and every call goes through matmulInt and attention: tests) */
  decodeCache = true;
  /** one-token matmulInts run from cached words by decodeInt, and one-token attentions by attentionOne (statistics, tests) */
  readonly decodeRuns = { int: 0, attention: 0 };
  /** weights' copies interleaved by 4 rows for one-token matmuls (0: none) */
  private readonly interleaved = new WeakMap<KernelWeight, number>();
  /** fused F32 weights whose copy holds the members' rows end to end, not interleaved (fuseDecode with f32Strands) */
  private readonly rowCopies = new WeakSet<KernelWeight>();
  private interleave = true;
  /**
   * The engine over a second memory (the same module, its own heap, control block and threads) that
   * holds the weights this one has no room for (allocBytes(n, true), storeWeight): a weight lives in one
   * memory, and a call on it runs on its engine (KernelWeight.engine), whose inputs and outputs are
   * copied across when they live in this memory (a token's activations: a few KiB). Made on first need.
   */
  private spillEngine: MatmulEngine | null = null;
  private spillFailed = false;
  private f32View = new Float32Array(0);
  private u8View = new Uint8Array(0);
  private i32View = new Int32Array(0);

  private constructor(variant: 'relaxed' | 'simd', memory: WebAssembly.Memory, shared: boolean, module: WebAssembly.Module) {
    this.variant = variant;
    this.memory = memory;
    this.shared = shared;
    this.module = module;
    const instance = new WebAssembly.Instance(this.module, { env: { memory: this.memory, now: hostNow } });
    this.exports = instance.exports as unknown as MatmulExports;
    const base = (this.exports.heapBase() + 63) & ~63;
    this.heap = new Heap(this.memory, base, 65536 * PAGE);
    const control = this.heap.alloc(CONTROL_BYTES);
    if (control === null) throw new Error('kernel memory: no room for the control block');
    this.control = control;
  }

  /** The engine of a variant (one per process), or null when WebAssembly SIMD is off or missing. */
  static get(variant = wasmVariant()): MatmulEngine | null {
    if (variant === 'off') return null;
    let e = engines.get(variant);
    if (e === undefined) {
      if (failed.has(variant)) return null;
      const memory = newMemory();
      const k = moduleKey(variant, memory.shared);
      try {
        let module = modules.get(k);
        if (!module) {
          module = new WebAssembly.Module(decodeBase64(moduleBytes(variant, memory.shared)) as BufferSource);
          modules.set(k, module);
        }
        e = new MatmulEngine(variant, memory.memory, memory.shared, module);
      } catch {
        // e.g. synchronous compilation refused on a browser main thread: null until initMatmulKernels()
        failed.add(variant);
        return null;
      }
      engines.set(variant, e);
    }
    return e;
  }

  /** threads used by calls big enough to share (the calling one included) */
  get threads(): number {
    return this.threadCount;
  }

  /**
   * Use `n` threads (the calling one and n - 1 workers started by the host's StartWorker, see
   * threads.ts). Without a shared memory or a thread starter the engine stays on one thread.
   */
  setThreads(n: number): number {
    n = Math.max(1, Math.floor(n));
    this.spillEngine?.setThreads(n);
    if (n === this.threadCount && (n === 1 || this.pool)) return n;
    this.callStamp++; // the cached one-token calls' chunks and control block (decodeInt)
    this.pool?.close();
    this.pool = null;
    this.threadCount = 1;
    if (n > 1 && this.shared) {
      const control = this.heap.alloc(CONTROL_BYTES);
      if (control === null) return 1;
      this.control = control;
      // the workers' private areas for stealable one-token chunks (threads.ts; like the control block,
      // never released: a worker of an old pool may still write into its area)
      const area = this.heap.alloc((n - 1) * PRIVATE_BYTES) ?? 0;
      this.pool = KernelThreads.start(this.memory, this.module, control, n, area);
      if (this.pool) this.threadCount = n;
    }
    return this.threadCount;
  }

  /**
   * The engine over the next memory for weights that do not fit this one (see spillEngine), made now
   * with this engine's threads and settings; null when a memory of the same kind cannot be made.
   */
  private spill(): MatmulEngine | null {
    if (this.spillEngine || this.spillFailed) return this.spillEngine;
    try {
      const m = newMemory();
      if (m.shared !== this.shared) throw new Error('another kind of memory');
      const e = new MatmulEngine(this.variant, m.memory, m.shared, this.module);
      e.interleave = this.interleave;
      e.packTokens = this.packTokens;
      e.prefillTile = this.prefillTile;
      e.attentionRows = this.attentionRows;
      e.f32Strands = this.f32Strands;
      e.kStrands = this.kStrands;
      e.q32Strands = this.q32Strands;
      e.setThreads(this.threadCount);
      this.spillEngine = e;
    } catch {
      this.spillFailed = true;
    }
    return this.spillEngine;
  }

  /** Workers started and ready, chunks they ran, times they slept so far; the hand-off statistics (KernelThreads.timing). */
  threadStats(): { ready: number; workerChunks: number; stolen: number; workerSleeps: number; handOff: { runs: number; waitMs: number; workersFirst: number } } {
    const p = this.pool;
    return { ready: p?.ready() ?? 0, workerChunks: p?.workerChunks() ?? 0, stolen: p?.stolen ?? 0, workerSleeps: p?.workerSleeps() ?? 0, handOff: { ...(p?.handOff ?? { runs: 0, waitMs: 0, workersFirst: 0 }) } };
  }

  /** Stop the worker threads. */
  close(): void {
    this.setThreads(1);
  }

  /** Does the kernel dequantize this GGML type itself? */
  hasType(type: GgmlTypeInfo): boolean {
    return this.exports.hasType(type.id) === 1;
  }

  private views(): void {
    const buf = this.memory.buffer;
    if (this.u8View.buffer !== buf) {
      this.callStamp++;
      this.ours.add(buf);
      this.u8View = new Uint8Array(buf);
      this.f32View = new Float32Array(buf);
      this.i32View = new Int32Array(buf);
    }
  }

  /**
   * Copy a weight matrix into kernel memory (null when the memory is full: 4 GiB at most). Bytes from
   * allocBytes are taken over in place, without a copy.
   */
  storeWeight(type: GgmlTypeInfo, rows: number, cols: number, rowBytes: number, data: Uint8Array): KernelWeight | null {
    const bytes = rows * rowBytes;
    if (data.length !== bytes) throw new Error(`weight of ${data.length} bytes, expected ${bytes}`);
    if (this.adoptable.has(data)) {
      // the allocation lives as long as `data`, which the weight keeps
      return { engine: this, type, rows, cols, rowBytes, ptr: data.byteOffset, owner: data };
    }
    // bytes from the next memory's allocBytes, or no room here: the weight goes there
    if (this.spillEngine?.adoptable.has(data)) return this.spillEngine.storeWeight(type, rows, cols, rowBytes, data);
    const ptr = this.heap.alloc(bytes, WEIGHT_HEADROOM);
    if (ptr === null) return this.spill()?.storeWeight(type, rows, cols, rowBytes, data) ?? null;
    this.views();
    this.u8View.set(data, ptr);
    const w: KernelWeight = { engine: this, type, rows, cols, rowBytes, ptr };
    this.finalizer.register(w, ptr);
    return w;
  }

  /**
   * n bytes in kernel memory, for a loader to read weights into (storeWeight then takes them over
   * without a copy); released when the returned array is garbage collected. Null when the memory is
   * full or not shared. `spill`: from the next memory (spillEngine) when this one is full (weights only:
   * the runtime's buffers must live in this memory).
   */
  allocBytes(n: number, spill = false): Uint8Array | null {
    if (!this.shared) return null;
    const at = this.heap.alloc(n, WEIGHT_HEADROOM);
    if (at === null) return spill ? (this.spill()?.allocBytes(n, true) ?? null) : null;
    this.views();
    const view = new Uint8Array(this.u8View.buffer, at, n);
    this.finalizer.register(view, at);
    this.adoptable.add(view);
    return view;
  }

  /**
   * The stored bytes of a weight, as a view into this memory. With a shared memory the view stays
   * valid; an unshared memory's buffer is replaced (and old views emptied) whenever it grows.
   */
  weightBytes(w: KernelWeight): Uint8Array {
    if (w.engine !== this) return w.engine.weightBytes(w);
    this.views();
    return new Uint8Array(this.u8View.buffer, w.ptr, w.rows * w.rowBytes);
  }

  private buffer(name: string, bytes: number): number {
    let b = this.buffers.get(name);
    if (b && b.bytes >= bytes) return b.at;
    if (b) this.heap.release(b.at);
    this.callStamp++; // a cached one-token call may hold the old address (decodeInt)
    const want = Math.max(bytes, Math.ceil((b?.bytes ?? 0) * 1.5));
    const at = this.heap.alloc(want);
    if (at === null) throw new Error(`kernel memory is full (${name}: ${bytes} bytes)`);
    b = { at, bytes: want };
    this.buffers.set(name, b);
    return at;
  }

  /** y (nTok x w.rows) = x (nTok x w.cols) · Wᵀ. Arrays in this memory (allocF32) are used in place. */
  matmul(out: Float32Array, x: Float32Array, w: KernelWeight, nTok: number): void {
    if (w.engine !== this) throw new Error('weight belongs to another kernel engine');
    const k = w.cols;
    const n = w.rows;
    const kx = (k + 3) & ~3;
    const xAt = this.activations(x, nTok, k, kx);
    const yOwn = this.ptrOf(out, nTok * n);
    const yAt = yOwn >= 0 ? yOwn : this.buffer('y', nTok * n * 4);
    // one token on F32 rows: the copy interleaved by 4 rows when prepareDecode made one
    const il = nTok === 1 && (this.interleave || w.ptr === 0) && w.type.id === 0 && k === kx ? (this.interleaved.get(w) ?? 0) : 0;
    if (!il && w.ptr === 0) throw new Error('a fused one-token weight (fuseDecode) multiplies one token only');
    if (il) this.run(0, il, w.rowBytes, k, kx, xAt, nTok, yAt, n, n, !this.rowCopies.has(w));
    else if (this.hasType(w.type)) this.run(w.type.id, w.ptr, w.rowBytes, k, kx, xAt, nTok, yAt, n, n);
    else {
      // TypeScript dequantizer: row blocks to f32 (stride kx), then the F32 kernel
      const codec = ggmlCodec(w.type);
      if (!codec) fail(`no dequantizer for GGML type ${w.type.name} (its codec is not registered)`);
      const block = Math.max(1, Math.min(n, Math.floor(FALLBACK_FLOATS / kx)));
      const at = this.buffer('fallback', block * kx * 4);
      const tmp = kx === k ? null : new Float32Array(k);
      for (let r0 = 0; r0 < n; r0 += block) {
        const nr = Math.min(block, n - r0);
        this.views();
        const src = this.weightBytes(w).subarray(r0 * w.rowBytes, (r0 + nr) * w.rowBytes);
        if (!tmp) codec.dequantize(src, nr * k, this.f32View.subarray(at >>> 2, (at >>> 2) + nr * k));
        else {
          for (let r = 0; r < nr; r++) {
            codec.dequantize(src.subarray(r * w.rowBytes, (r + 1) * w.rowBytes), k, tmp);
            const o = (at >>> 2) + r * kx;
            this.f32View.set(tmp, o);
            this.f32View.fill(0, o + k, o + kx);
          }
        }
        this.run(0, at, kx * 4, kx, kx, xAt, nTok, yAt + r0 * 4, n, nr);
      }
    }
    if (yOwn < 0) this.copyOut(out, yAt, nTok * n);
  }

  /**
   * Block length of the integer path for this weight (32: activations rounded to Q8_0, 256: to Q8_K),
   * 0 when there is none (other types, or K not a multiple of the block).
   */
  intBlock(w: KernelWeight): number {
    const bl = this.exports.intBlock(w.type.id);
    return bl > 0 && w.cols % bl === 0 ? bl : 0;
  }

  /**
   * matmulInt's rounding of x for w (the buffers it leaves them in); reused when sameInput and the last
   * rounding was of x for the same block type and buffers. u != 0 (kernel address of nTok x w.cols f32):
   * x = silu(x) * u first, in place (siluMul's bits), on the threads that then round each token (x must
   * live in this memory)
   */
  private roundFor(x: Float32Array, w: KernelWeight, nTok: number, sameInput: boolean, u: number) {
    if (w.engine !== this) throw new Error('weight belongs to another kernel engine');
    const bl = this.intBlock(w);
    if (bl === 0) throw new Error(`no integer matmul for ${w.type.name} with ${w.cols} columns`);
    const k = w.cols;
    const n = w.rows;
    const nb = k / bl;
    const tp = (nTok + 3) & ~3;
    const xq = this.buffer('xq', tp * k * 2 + 16);
    const xd = this.buffer('xd', tp * nb * 4 + 16);
    const xs = this.buffer('xsum', tp * (k / 16) + 16);
    // relaxed build: 8-bit products on activations prepared once, for decode (under 4 tokens) and for the
    // Q4_K / Q6_K prefill tiles (all tp tokens: the padding ones are zero)
    // prefill (4 tokens and more): tokens packed by quads, of bytes for the Q4_K / Q6_K tiles (relaxed
    // build), of int16 pairs for the block-32 types' tiles (both builds)
    const quads = this.variant === 'relaxed' && nTok >= 4 && this.exports.prefillRowBytes(w.type.id, k) > 0;
    const quads16 = nTok >= 4 && bl === 32;
    const prep = (nTok < 4 && this.variant === 'relaxed') || quads || quads16;
    const xa = !prep ? 0 : quads ? this.buffer('xa', (((tp / 4 + 1) >> 1) << 1) * this.exports.quadBytes(k) + 64)
      : quads16 ? this.buffer('xa', (((tp / 4 + 1) >> 1) << 1) * this.exports.quadBytes16(k) + 64) : this.buffer('xa', nTok * this.exports.actBytes8(k) + 64);
    const r = this.rounded;
    // another engine's matmulInt in between (a weight in the other memory, spillEngine): this one's rounding is stale
    const reuse = sameInput && lastIntEngine === this;
    lastIntEngine = this;
    if (!(reuse && r.x === x && r.nTok === nTok && r.k === k && r.block === bl && r.xq === xq && r.xa === xa)) {
      // round (and prepare) x; kept for the next call on the same input (q/k/v, gate/up: sameInput)
      this.rounded.x = null;
      const xAt = this.activations(x, nTok, k, k);
      const roundThreads = this.pool && nTok >= 16 && nTok * k >= MIN_PARALLEL_ROUNDING ? this.threadCount : 1;
      // u: SwiGLU first (x = silu(x) * u in place, siluMul's bits), token by token on the threads that round
      if (roundThreads > 1 && !(prep && !quads && !quads16)) this.roundActivations(bl, xAt, nTok, k, xq, xd, xs, quads ? 1 : quads16 ? 2 : 0, xa, roundThreads, u);
      else {
        if (u !== 0) this.exports.siluMul(xAt, u, nTok * k);
        this.exports.quantizeActs(bl, xAt, k * 4, nTok, k, xq, xd, xs);
        if (quads) this.exports.prepQuads(xq, xs, tp, k, xa);
        else if (quads16) this.exports.prepQuads16(xq, tp, k, xa);
        else if (prep) this.exports.prepActs8(xq, nTok, k, xa, bl === 256 ? 1 : 0); // the splat records: Q8_K types (the Q4_K / Q6_K tiles)
      }
      this.rounded = { x, nTok, k, block: bl, xq, xa };
    }
    return { bl, k, n, nb, tp, xq, xd, xs, xa, quads, quads16 };
  }

  /**
   * SwiGLU and then matmulInt's rounding of its result for w, token by token in one pass (prefill: the
   * FFN's down-projection input): g = silu(g) * u in place (siluMul's bits), rounded as matmulInt(out, g,
   * w, nTok) rounds it; the next matmulInt(out, g, w, nTok, true) reuses that. False (nothing done) when g
   * or u do not live in this memory, w has no integer path, or under 16 tokens.
   */
  siluMulRound(g: Float32Array, u: Float32Array, nTok: number, w: KernelWeight): boolean {
    const n = nTok * w.cols;
    const uAt = this.ptrOf(u, n);
    if (nTok < 16 || w.engine !== this || this.intBlock(w) === 0 || this.ptrOf(g, n) < 0 || uAt < 0) return false;
    this.roundFor(g, w, nTok, false, uAt);
    return true;
  }

  /**
   * y (nTok x w.rows) = q(x) · Wᵀ with integer dot products, llama.cpp's CPU path: each row of x is
   * rounded to the weight type's vec_dot type (Q8_0 or Q8_K, bit for bit the TypeScript codecs) and
   * multiplied block by block with the stored quants in int32; block scales in f32 (the order of
   * operations is intMatmulRef's). Needs intBlock(w) > 0. sameInput: x holds the same values as in this
   * engine's previous matmulInt call (q/k/v, gate/up of one input): its rounding is reused when that
   * call rounded the same array to the same block type (the same bits as rounding it again).
   */
  matmulInt(out: Float32Array, x: Float32Array, w: KernelWeight, nTok: number, sameInput = false): void {
    const { bl, k, n, nb, xq, xd, xs, xa, quads16 } = this.roundFor(x, w, nTok, sameInput, 0);
    const yOwn = this.ptrOf(out, nTok * n);
    const yAt = yOwn >= 0 ? yOwn : this.buffer('y', nTok * n * 4);
    const rowScratch = this.exports.intRowScratch(w.type.id, k);
    const threads = this.pool && 2 * nTok * k * n >= MIN_PARALLEL_FLOPS ? this.threadCount : 1;
    // decode (under 4 tokens) reads the weight's copy interleaved by 4 rows when there is one
    const il = nTok < 4 ? this.interleavedCopy(w) : 0;
    if (!il && w.ptr === 0) throw new Error('a fused one-token weight (fuseDecode) multiplies under 4 tokens only');
    let chunkRows: number;
    if (il) {
      // chunks and the 4-row tiles start at groups of 4 rows; no row scratch; one chunk per thread (one
      // thread: not one call into the kernel per 48 rows, ~3000 calls per token on the 155M model)
      chunkRows = decodeChunkRows(n, threads);
    } else {
      chunkRows = Math.min(MAX_CHUNK_ROWS, Math.max(3, Math.floor((SCRATCH_FLOATS * 4) / rowScratch / 3) * 3));
      if (threads > 1) chunkRows = Math.min(chunkRows, Math.max(3, Math.ceil(n / (8 * threads) / 3) * 3));
      chunkRows = Math.max(chunkRows, Math.ceil(n / MAX_CHUNKS));
      // the block-32 prefill panel (wasm unpackPanel32) holds whole groups of 4 rows
      if (quads16) {
        const g = this.prefillTile === 'rows' ? 8 : 4;
        chunkRows = (chunkRows + g - 1) & ~(g - 1);
      }
    }
    const scratchBytes = (il ? 0 : chunkRows * rowScratch) + 512;
    const scratch = this.buffer('scratch', scratchBytes * this.threadCount);
    this.setJob(3, w.type.id, il || w.ptr, w.rowBytes, xq, xd, nTok, k, xs, yAt, n, n, chunkRows, scratch, scratchBytes);
    // decode: 1 + the copy's extra bytes per group block, the tiles' strands above bit 8 (q32Strands; Q4_K, Q6_K: kStrands)
    this.job[16] = il ? (1 + this.exports.decodeExtra32(w.type.id)) | ((w.type.id === 12 || w.type.id === 14 ? Math.min(8, Math.max(1, this.kStrands)) : this.q32Strands) << 8) : quads16 && this.prefillTile === 'rows' ? 1 : 0;
    this.job[15] = xa;
    const chunks = Math.ceil(n / chunkRows);
    // one token with x and out in this memory: the call as decodeInt repeats it (the same words) at the next token
    const xAt = nTok === 1 ? this.ptrOf(x, k) : -1;
    if (xAt >= 0 && yOwn >= 0) {
      const prep = this.variant === 'relaxed'; // roundFor's prepActs8 (one token: no quads)
      this.decodeCalls.set(w, { out, x, stamp: this.callStamp, words: this.job.slice(), chunks, threads, xAt, bl, k, xq, xd, xs, xa, prep, rounded: { x, nTok: 1, k, block: bl, xq, xa } });
    }
    this.dispatch(chunks, threads, nTok === 1);
    if (yOwn < 0) this.copyOut(out, yAt, nTok * n);
  }

  /**
   * matmulInt(out, x, w, 1, sameInput) from the words its last one-token call on (w, x, out) wrote: the same
   * rounding (reused under the same conditions) and the same job, without roundFor's and matmulInt's
   * set-up, so that a decoded token runs almost no JavaScript of its own for the engine to compile on a busy
   * core (the first tokens; matmulInt and roundFor took 20-40 ms of TurboFan compiles there). False
   * (nothing done) when there is no such call, a buffer moved or the threads changed since (callStamp), or
   * decodeCache is off: the caller runs matmulInt, which records the call for the next token.
   */
  decodeInt(out: Float32Array, x: Float32Array, w: KernelWeight, sameInput: boolean): boolean {
    this.views(); // (a grown memory bumps the stamp)
    const c = this.decodeCalls.get(w);
    if (c === undefined || c.out !== out || c.x !== x || c.stamp !== this.callStamp || !this.decodeCache) return false;
    const r = this.rounded;
    // roundFor's reuse test (the buffers are the call's: the stamp holds)
    const reuse = sameInput && lastIntEngine === this && r.x === x && r.nTok === 1 && r.k === c.k && r.block === c.bl && r.xq === c.xq && r.xa === c.xa;
    lastIntEngine = this;
    if (!reuse) {
      r.x = null;
      const e = this.exports;
      e.quantizeActs(c.bl, c.xAt, c.k * 4, 1, c.k, c.xq, c.xd, c.xs);
      if (c.prep) e.prepActs8(c.xq, 1, c.k, c.xa, c.bl === 256 ? 1 : 0);
      const o = c.rounded;
      o.x = x;
      this.rounded = o;
    }
    this.i32View.set(c.words, (this.control + JOB_OFFSET) >>> 2);
    this.runJob(c.chunks, c.threads, true);
    this.decodeRuns.int++;
    return true;
  }

  /**
   * matmulInt's activation rounding and packing on `threads` threads (wasm/matmul.ts roundActsChunk, job
   * kind 10: 8 tokens per chunk): the bytes quantizeActs and prepQuads (pack 1) / prepQuads16 (pack 2)
   * write on one thread
   */
  private roundActivations(bl: number, xAt: number, nTok: number, k: number, xq: number, xd: number, xs: number, pack: number, xa: number, threads: number, u = 0): void {
    const p = this.job;
    p.fill(0);
    p[0] = 10; p[1] = bl; p[2] = xAt; p[3] = k * 4; p[4] = nTok; p[5] = k; p[6] = xq; p[7] = xd; p[8] = xs; p[9] = pack; p[10] = xa; p[11] = u;
    this.dispatch(Math.ceil(((nTok + 3) & ~3) / 8), threads);
  }

  /**
   * The byte offset of w's copy interleaved by 4 rows (wasm/matmul.ts interleave4), made on first use:
   * the layout the one-token tiles read as a single stream (about 2x the DRAM throughput of 4 rows read
   * side by side, on rows of 1.5 KiB and more). 0 when the type has no one-token tile, the weight has
   * under 4 rows, interleaving is off, or the memory has no room (the copy doubles the weight's bytes;
   * it is released with the weight).
   */
  private interleavedCopy(w: KernelWeight): number {
    const have = this.interleaved.get(w);
    if (have !== undefined) return have;
    let at = 0;
    const bs = this.exports.decodeBlockBytes(w.type.id);
    if (this.interleave && bs > 0 && w.rows >= 4 && w.rowBytes % bs === 0) {
      at = this.heap.alloc(this.interleavedBytes(w), WEIGHT_HEADROOM) ?? 0;
      if (at) {
        this.exports.interleave4(w.ptr, at, w.rows, w.rowBytes, bs, w.type.id);
        this.finalizer.register(w, at);
      }
    }
    this.interleaved.set(w, at);
    return at;
  }

  /** bytes of w's interleaved copy: block-32 types carry their 4 rows' scales as f32 (relaxed build) */
  private interleavedBytes(w: KernelWeight): number {
    const bs = this.exports.decodeBlockBytes(w.type.id);
    return w.rows * w.rowBytes + (w.rows >> 2) * (w.rowBytes / bs) * this.exports.decodeExtra32(w.type.id);
  }

  /**
   * Make w's copy for one-token matmuls now (as the first one would): a loader or `generate` calls this
   * before timing decode, as llama.cpp repacks its weights at load. Returns its bytes (0: no copy).
   */
  prepareDecode(w: KernelWeight): number {
    if (w.engine !== this) throw new Error('weight belongs to another kernel engine');
    if (w.ptr === 0) return this.interleaved.get(w) ? this.interleavedBytes(w) : 0; // fuseDecode's copy
    // F32: copies only from here (a one-token matmul never makes one: it doubles the weight's bytes), and
    // none with f32Strands (its rows in place read as fast as a copy)
    if (this.intBlock(w) === 0 && !(w.type.id === 0 && w.cols % 4 === 0 && !this.f32Strands)) return 0;
    return this.interleavedCopy(w) ? this.interleavedBytes(w) : 0;
  }

  /**
   * One weight for one-token matmuls that stands for `ws` stacked by rows (q | k | v, gate | up of one
   * input): their copies interleaved by 4 rows (interleaved4, as prepareDecode makes for each) laid end
   * to end, so one dispatch runs them all. Every row is the same dot product, with the same operations,
   * as in its own matrix (the tiles start at groups of 4 rows; no weight has a tail group): the same
   * bits. It has no row-by-row bytes (ptr 0): matmulInt / matmul take it for one token only (under 4 for
   * matmulInt). null when the weights differ in type, columns or engine, a weight's rows are not a
   * multiple of 4 (but the last one's, of 8 for Q4_0 in the relaxed build: decodeGroupRows), the type has no one-token copy (F32: columns a multiple of 4; quantized: an integer
   * path), or the memory is full. The copy is released with the returned weight; the members' own
   * copies are not made (a member's own one-token matmul would make it).
   */
  fuseDecode(ws: readonly KernelWeight[]): KernelWeight | null {
    if (ws.length < 2) return null;
    const w0 = ws[0];
    const bs = this.exports.decodeBlockBytes(w0.type.id);
    if (bs === 0 || w0.rowBytes % bs !== 0 || w0.ptr === 0) return null;
    if (w0.type.id === 0 ? w0.cols % 4 !== 0 : this.intBlock(w0) === 0) return null;
    const group = this.exports.decodeGroupRows(w0.type.id); // rows of the copy's groups (Q4_0: 8)
    for (const w of ws) {
      if (w.engine !== this || w.type.id !== w0.type.id || w.cols !== w0.cols || w.rowBytes !== w0.rowBytes || w.rows % (w === ws[ws.length - 1] ? 4 : group) !== 0 || w.rows === 0 || w.ptr === 0) return null;
    }
    const sizes = ws.map((w) => this.interleavedBytes(w));
    const at = this.heap.alloc(sizes.reduce((a, b) => a + b, 0), WEIGHT_HEADROOM);
    if (!at) return null;
    let o = at;
    // F32 with f32Strands: the members' rows end to end (read in strands as rows in place), else interleaved
    const rowMajor = w0.type.id === 0 && this.f32Strands;
    ws.forEach((w, i) => {
      if (rowMajor) this.copyWithin(o, w.ptr, sizes[i]);
      else this.exports.interleave4(w.ptr, o, w.rows, w.rowBytes, bs, w.type.id);
      o += sizes[i];
    });
    const fused: KernelWeight = { engine: this, type: w0.type, rows: ws.reduce((a, w) => a + w.rows, 0), cols: w0.cols, rowBytes: w0.rowBytes, ptr: 0 };
    if (rowMajor) this.rowCopies.add(fused);
    this.interleaved.set(fused, at);
    this.finalizer.register(fused, at);
    return fused;
  }

  /**
   * block-32 prefill tiles (4 tokens and more): 'rows' (default), weight rows in the lanes (8 rows x 4
   * tokens, qtile16r); 'tokens', tokens in the lanes (4 rows x 8 tokens, qtile16p: bench prefill-tile's
   * anchor). The same bits either way.
   */
  prefillTile: 'rows' | 'tokens' = 'rows';
  /** prefill attention gathers each head's keys and values first (bench A/B) */
  attentionGather = true;

  /**
   * one token's attention on one thread reads the cache row by row for all heads (default on); off: head by
   * head, as a batch does (the same bits; for tests)
   */
  attentionRows = true;

  /** the packed 3 x 3 tiles for F32 weights (on by default; off: the row-by-row tiles, for tests) */
  packTokens = true;

  /**
   * one token on F32 rows without an interleaved copy: each chunk read in 4 strands of rows side by side
   * (wasm tile4x1s: 4 long sequential streams; default on). Off: tile3x1's 3 adjacent rows. The same bits.
   */
  f32Strands = true;

  /**
   * one token on the Q4_0 / Q8_0 copies (relaxed build): each chunk's full groups of 8 rows read in 4 strands side
   * by side (4, default: wasm rtileQ4Lanes8x4 / rtileQ8Lanes8x4, 4 sequential streams from DRAM instead of one);
   * 1: one group after another (rtileQ4Lanes8 / rtileQ8Lanes8). The same bits either way.
   */
  q32Strands = 4;

  /**
   * one token on Q4_K and Q6_K copies (relaxed build): each chunk's full groups of 8 rows read in this many
   * strands side by side (wasm rtileQ4KStrands / r6Strands: as many sequential streams, 1..8; 1: one
   * stream). The same bits for every value. 4, from DRAM (bench matvec-dram, 600 MB cycled): Q4_K 7.0-7.6 ->
   * 9.7 GB/s on 1 thread, 13.1-13.7 -> 18.1-18.6 on 2; Q6_K 7.1-8.0 -> 8.8-9.9, 13.0-14.2 -> 16.0-17.5.
   */
  kStrands = 4;

  /**
   * Let one-token matmuls read a copy of each quantized weight interleaved by 4 rows (default on; the
   * results are the same bits either way). Off: no copies, half the memory, slower decode.
   */
  setDecodeInterleave(on: boolean): void {
    this.interleave = on;
    this.spillEngine?.setDecodeInterleave(on);
  }

  /** the 15 parameter words of a matmul job (see wasm/matmul.ts) */
  // plain parameters, not a destructured rest array: TurboFan took ~13 ms to compile that form, on a busy core while
  // the first tokens decode
  private setJob(a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number, i: number, j: number, k: number, l: number, m: number, n: number, o: number): void {
    const p = this.job;
    p[0] = a; p[1] = b; p[2] = c; p[3] = d; p[4] = e; p[5] = f; p[6] = g; p[7] = h;
    p[8] = i; p[9] = j; p[10] = k; p[11] = l; p[12] = m; p[13] = n; p[14] = o;
  }

  /** write the job's parameters into the control block and run its chunks (on the pool when threads > 1) */
  private dispatch(chunks: number, threads: number, oneToken = false): void {
    this.views();
    this.i32View.set(this.job, (this.control + JOB_OFFSET) >>> 2);
    this.runJob(chunks, threads, oneToken);
  }

  /** the job whose words are in the control block, as `chunks` chunks: on the pool (threads > 1), else on this thread */
  private runJob(chunks: number, threads: number, oneToken = false): void {
    if (threads > 1 && chunks > 1) this.pool!.run(chunks, this.exports, oneToken);
    else {
      const job = this.control + JOB_OFFSET;
      for (let c = 0; c < chunks; c++) this.exports.runChunk(job, c, 0);
    }
  }

  /**
   * GPTQ's factor on every thread (wasm/_linalg.ts): the lower Cholesky factor M of the k x k symmetric
   * matrix a (row-major f64, its lower triangle read; a is not modified), then x = M^-1 (lower
   * triangular). Returns -1, or the first non-positive pivot (x then undefined). Bit for bit the
   * one-thread kernels (wasm/gptq.ts cholesky, trilInverse) on any number of threads: the Cholesky
   * panels' rows and the inverse's columns are split into chunks, and every element goes through the
   * same operations in the same order whichever thread runs it.
   */
  choleskyInverse(a: Float64Array, k: number, x: Float64Array): number {
    if (a.length < k * k || x.length < k * k) throw new Error(`choleskyInverse: ${k} x ${k} matrices expected`);
    const bytes = k * k * 8;
    const aAt = this.buffer('linalg-a', bytes + 64);
    const xAt = this.buffer('linalg-x', bytes + 64);
    this.views();
    new Float64Array(this.u8View.buffer, aAt, k * k).set(a.subarray(0, k * k));
    const threads = this.pool && k >= 128 ? this.threadCount : 1;
    const p = this.job;
    const PANEL = 64; // wasm/_linalg.ts CHOL_PANEL
    for (let kb = 0; kb < k; kb += PANEL) {
      const e = Math.min(kb + PANEL, k);
      const bad = this.exports.cholDiag(aAt, k, kb, e);
      if (bad >= 0) return bad;
      if (e === k) break;
      // rows per chunk: even (the trailing update pairs rows from e), ~8 chunks per thread
      const rows = k - e;
      const r = Math.max(2, Math.ceil(rows / (8 * threads) / 2) * 2);
      const chunks = Math.ceil(rows / r);
      p.fill(0);
      p[1] = aAt; p[2] = k; p[3] = kb; p[4] = e; p[5] = r;
      p[0] = 5;
      this.dispatch(chunks, threads);
      p[0] = 6;
      this.dispatch(chunks, threads);
    }
    this.exports.zeroUpperRows(aAt, k, 0, k);
    this.views();
    this.u8View.fill(0, xAt, xAt + bytes);
    p.fill(0);
    p[0] = 7; p[1] = aAt; p[2] = xAt; p[3] = k; p[4] = 16;
    this.dispatch(Math.ceil(k / 16), threads);
    this.views();
    x.set(new Float64Array(this.u8View.buffer, xAt, k * k));
    return -1;
  }

  /** y (nTok x n) = x (nTok x k) · wᵀ for f32 arrays (w copied in, a row block at a time). */
  matmulF32(out: Float32Array, x: Float32Array, w: Float32Array, nTok: number, k: number, n: number): void {
    const kx = (k + 3) & ~3;
    const xAt = this.activations(x, nTok, k, kx);
    const yOwn = this.ptrOf(out, nTok * n);
    const yAt = yOwn >= 0 ? yOwn : this.buffer('y', nTok * n * 4);
    const wOwn = kx === k ? this.ptrOf(w, n * k) : -1;
    if (wOwn >= 0) {
      // the weights live in this memory already (allocF32): multiplied in place
      this.run(0, wOwn, k * 4, k, k, xAt, nTok, yAt, n, n);
      if (yOwn < 0) this.copyOut(out, yAt, nTok * n);
      return;
    }
    const block = Math.max(1, Math.min(n, Math.floor(FALLBACK_FLOATS / kx)));
    const at = this.buffer('fallback', block * kx * 4);
    for (let r0 = 0; r0 < n; r0 += block) {
      const nr = Math.min(block, n - r0);
      this.views();
      const f = this.f32View;
      if (kx === k) f.set(w.subarray(r0 * k, (r0 + nr) * k), at >>> 2);
      else {
        for (let r = 0; r < nr; r++) {
          const o = (at >>> 2) + r * kx;
          f.set(w.subarray((r0 + r) * k, (r0 + r + 1) * k), o);
          f.fill(0, o + k, o + kx);
        }
      }
      this.run(0, at, kx * 4, kx, kx, xAt, nTok, yAt + r0 * 4, n, nr);
    }
    if (yOwn < 0) this.copyOut(out, yAt, nTok * n);
  }

  /**
   * X^T X of nTok rows of x (k wide), lower triangle, with the matmul kernel on every thread: the rows
   * are transposed into kernel memory (Xt: k x nTok, zero-padded to a multiple of 4) and Xt Xt^T is
   * computed a block of columns at a time, only for rows at or below the block (the lower triangle plus
   * the block's own upper part, ~(1 + 1/blocks)/2 of the full product). Returns a view of the k x k
   * result in kernel memory (valid until the next call): element (i, j) for j <= i. f32 dot products
   * over the nTok terms, like matmulF32.
   */
  gramLower(x: Float32Array, nTok: number, k: number): Float32Array {
    if (x.length < nTok * k) throw new Error(`gramLower: ${x.length} values, expected ${nTok} x ${k}`);
    const { ld, xtAt, gAt } = this.gramTranspose(x, nTok, k);
    const blocks = Math.max(1, Math.min(16, Math.floor(k / 96)));
    const step = Math.max(3, Math.ceil(k / blocks / 3) * 3);
    for (let r0 = 0; r0 < k; r0 += step) {
      const r1 = Math.min(k, r0 + step);
      const at = xtAt + r0 * ld * 4;
      this.run(0, at, ld * 4, ld, ld, at, k - r0, gAt + (r0 * k + r0) * 4, k, r1 - r0);
    }
    this.views();
    return this.f32View.subarray(gAt >>> 2, (gAt >>> 2) + k * k);
  }

  /**
   * X^T X of nTok rows of x (k wide), upper triangle: element (i, j) for j >= i of the returned view
   * (valid until the next call), each the same f32 dot product, bit for bit, as gramLower's (j, i) --
   * the two factors of every product swap sides, and a product and a fused multiply-add do not depend
   * on the order of their factors. The faster layout: a band of `step` rows of Xt (a multiple of the
   * kernel's token block) is multiplied with every row from the band on, and the threads split those
   * long rows; gramLower's threads split the band instead, each re-reading all the rows below it.
   */
  gramUpper(x: Float32Array, nTok: number, k: number): Float32Array {
    if (x.length < nTok * k) throw new Error(`gramUpper: ${x.length} values, expected ${nTok} x ${k}`);
    const { ld, xtAt, gAt } = this.gramTranspose(x, nTok, k);
    const step = k > 1024 ? 252 : 126; // multiples of wasm/matmul.ts TOKEN_BLOCK (63)
    for (let r0 = 0; r0 < k; r0 += step) {
      const r1 = Math.min(k, r0 + step);
      const at = xtAt + r0 * ld * 4;
      // "weights": rows r0..k of Xt, "tokens": the band's rows: y[t][n] = G[r0 + t][r0 + n]
      this.run(0, at, ld * 4, ld, ld, at, r1 - r0, gAt + (r0 * k + r0) * 4, k, k - r0);
    }
    this.views();
    return this.f32View.subarray(gAt >>> 2, (gAt >>> 2) + k * k);
  }

  /**
   * h[i * k + j] += X^T X [i][j] for j >= i (nTok rows of x, k wide; h: k x k f64 at byte hAt in this
   * memory, its lower triangle untouched): gramUpper's f32 dot products, bit for bit, each added to its
   * f64 element as `h + g` -- what adding gramUpper's upper triangle into h element by element gives,
   * without the k x k f32 product in between (wasm/matmul.ts gramChunk: Xt packed in row triples, tiles
   * below the diagonal skipped). The same bits on any number of threads.
   */
  gramAccumulate(x: Float32Array, nTok: number, k: number, hAt: number): void {
    if (x.length < nTok * k) throw new Error(`gramAccumulate: ${x.length} values, expected ${nTok} x ${k}`);
    if (hAt % 8 !== 0) throw new Error('gramAccumulate: h must be 8-byte aligned');
    const { ld, xtAt } = this.gramTranspose(x, nTok, k, true);
    const step = k > 1024 ? 252 : 126; // as gramUpper's bands
    const scratch = this.buffer('gramTile', 64 * this.threadCount);
    for (let r0 = 0; r0 < k; r0 += step) {
      const r1 = Math.min(k, r0 + step);
      const rows = k - r0;
      // as run()'s chunks for these rows ("weights": rows r0..k of Xt, ld long)
      const threads = this.pool && 2 * (r1 - r0) * ld * rows >= MIN_PARALLEL_FLOPS ? this.threadCount : 1;
      let chunkRows = Math.min(MAX_CHUNK_ROWS, Math.max(3, Math.floor(SCRATCH_FLOATS / ld / 3) * 3));
      if (threads > 1) chunkRows = Math.min(chunkRows, Math.max(3, Math.ceil(rows / (8 * threads) / 3) * 3));
      chunkRows = Math.max(chunkRows, Math.ceil(rows / MAX_CHUNKS / 3) * 3);
      const p = this.job;
      p.fill(0);
      p[0] = 9; p[1] = xtAt; p[2] = ld; p[3] = k; p[4] = hAt; p[5] = r0; p[6] = r1; p[7] = chunkRows; p[8] = scratch;
      this.dispatch(Math.ceil(rows / chunkRows), threads);
    }
  }

  /**
   * x (nTok x k) transposed into kernel memory (Xt: k x ld, ld = nTok rounded up to 4, zero-padded) and
   * the k x k output; x in this memory (allocF32) is read in place, else copied in first. The values are
   * only moved (wasm/matmul.ts transposePad; transposePadRef is its reference). `packed`: Xt in row
   * triples (wasm/matmul.ts transposePacked; rows up to k rounded up to 3, zero), no output.
   */
  private gramTranspose(x: Float32Array, nTok: number, k: number, packed = false): { ld: number; xtAt: number; gAt: number } {
    const ld = (nTok + 3) & ~3;
    const xtAt = this.buffer(packed ? 'gramP' : 'gramX', Math.ceil(k / 3) * 3 * ld * 4);
    const gAt = packed ? 0 : this.buffer('gram', k * k * 4);
    const own = this.ptrOf(x, nTok * k);
    const xAt = own >= 0 ? own : this.copyIn('gramIn', x, nTok * k);
    const threads = this.pool && nTok * k >= 1 << 18 ? this.threadCount : 1;
    if (threads > 1) {
      // rows of Xt split between the threads (wasm/matmul.ts job kind 8), ~4 chunks per thread
      const r = Math.max(4, Math.ceil(k / (4 * threads) / 4) * 4);
      const p = this.job;
      p.fill(0);
      p[0] = 8; p[1] = xAt; p[2] = nTok; p[3] = k; p[4] = xtAt; p[5] = ld; p[6] = r; p[7] = packed ? 1 : 0;
      this.dispatch(Math.ceil(k / r), threads);
    } else if (packed) this.exports.transposePacked(xAt, nTok, k, xtAt, ld);
    else this.exports.transposePad(xAt, nTok, k, xtAt, ld);
    return { ld, xtAt, gAt };
  }

  /** Xt of gramAccumulate (packed in row triples), for tests */
  transposePackedForTest(x: Float32Array, nTok: number, k: number): Float32Array {
    const { ld, xtAt } = this.gramTranspose(x, nTok, k, true);
    this.views();
    return this.f32View.slice(xtAt >>> 2, (xtAt >>> 2) + Math.ceil(k / 3) * 3 * ld);
  }

  /** Xt (k x ld) of gramTranspose, for tests: rows of x (nTok x k) transposed, zeros after nTok */
  transposeForTest(x: Float32Array, nTok: number, k: number): Float32Array {
    const { ld, xtAt } = this.gramTranspose(x, nTok, k);
    this.views();
    return this.f32View.slice(xtAt >>> 2, (xtAt >>> 2) + k * ld);
  }

  /** SwiGLU in place: g[i] = silu(g[i]) * u[i] for i < n (f32, exp by wasm/matmul.ts exp4). */
  siluMul(g: Float32Array, u: Float32Array, n: number): void {
    const gOwn = this.ptrOf(g, n);
    const gAt = gOwn >= 0 ? gOwn : this.copyIn('g', g, n);
    const uOwn = this.ptrOf(u, n);
    const uAt = uOwn >= 0 ? uOwn : this.copyIn('u', u, n);
    const threads = this.pool && n >= MIN_PARALLEL_ELEMENTS ? this.threadCount : 1;
    if (threads > 1) {
      // element ranges of a multiple of 4 (the same lanes as one call): job kind 11, ~4 per thread
      const per = Math.max(4096, Math.ceil(n / (4 * threads) / 4) * 4);
      const p = this.job;
      p.fill(0);
      p[0] = 11; p[1] = gAt; p[2] = uAt; p[3] = n; p[4] = per;
      this.dispatch(Math.ceil(n / per), threads);
    } else this.exports.siluMul(gAt, uAt, n);
    if (gOwn < 0) this.copyOut(g, gAt, n);
  }

  /**
   * RMSNorm of nTok rows of `size` (model/llama.ts rmsnorm, bit for bit: wasm/matmul.ts rmsnormRows, the
   * same f64 operations in the same order): out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w; out may be x.
   * Arrays in this memory are read and written in place, others copied.
   */
  rmsnorm(out: Float32Array, x: Float32Array, w: Float32Array, nTok: number, size: number, eps: number): void {
    const n = nTok * size;
    const xOwn = this.ptrOf(x, n);
    const xAt = xOwn >= 0 ? xOwn : this.copyIn('normX', x, n);
    const wOwn = this.ptrOf(w, size);
    const wAt = wOwn >= 0 ? wOwn : this.copyIn('normW', w, size);
    const oOwn = this.ptrOf(out, n);
    const oAt = oOwn >= 0 ? oOwn : xOwn >= 0 ? this.buffer('normOut', n * 4 + 16) : xAt; // never into the caller's x
    const threads = this.pool && n >= MIN_PARALLEL_ELEMENTS && nTok >= 8 ? this.threadCount : 1;
    if (threads > 1) {
      // rows split between the threads (job kind 15, ~4 chunks per thread, multiples of 4 rows): each row is
      // the same operations wherever it runs
      const r = Math.max(4, Math.ceil(nTok / (4 * threads) / 4) * 4);
      const p = this.job;
      p.fill(0);
      p[0] = 15; p[1] = xAt; p[2] = wAt; p[3] = oAt; p[4] = nTok; p[5] = size; p[6] = r;
      new Float64Array(p.buffer, 32, 1)[0] = eps; // words 8, 9
      this.dispatch(Math.ceil(nTok / r), threads);
    } else this.exports.rmsnormRows(xAt, wAt, oAt, nTok, size, eps);
    if (oOwn < 0) this.copyOut(out, oAt, n);
  }

  /** a[i] += b[i] for i < n in f32 (the same bits as the TypeScript loop); false (nothing done) unless both live in this memory */
  addInto(a: Float32Array, b: Float32Array, n: number): boolean {
    const aAt = this.ptrOf(a, n);
    const bAt = this.ptrOf(b, n);
    if (aAt < 0 || bAt < 0) return false;
    if (this.rangeJob(1, aAt, bAt, n) === 0) this.exports.addInto(aAt, bAt, n);
    return true;
  }

  /** a RoPE table's cos / sin in this memory (one copy per table, kept as long as the table) */
  private readonly ropeCopies = new WeakMap<Float64Array, { cs: number; sn: number }>();

  /**
   * RoPE from a table (model/llama.ts ropeTabled, bit for bit: wasm/matmul.ts ropeRows) on nTok rows of
   * nHeads x headDim at positions pos0.. of vec (in this memory); false (nothing done) where it does not
   * apply (vec elsewhere, an odd number of pairs, the table's copy not made).
   */
  ropeTabled(vec: Float32Array, nTok: number, nHeads: number, headDim: number, half: number, pos0: number, cos: Float64Array, sin: Float64Array, normal: boolean): boolean {
    const vAt = this.ptrOf(vec, nTok * nHeads * headDim);
    if (vAt < 0 || half % 2 !== 0 || cos.length < (pos0 + nTok) * half) return false;
    let c = this.ropeCopies.get(cos);
    if (!c) {
      const a = this.allocF32(2 * cos.length, cos);
      const b = this.allocF32(2 * sin.length, cos);
      if (!a || !b) return false;
      new Float64Array(a.array.buffer, a.at, cos.length).set(cos);
      new Float64Array(b.array.buffer, b.at, sin.length).set(sin);
      this.ropeCopies.set(cos, (c = { cs: a.at, sn: b.at }));
    }
    const threads = this.pool && nTok >= 8 && nTok * nHeads * headDim >= MIN_PARALLEL_ELEMENTS ? this.threadCount : 1;
    if (threads > 1) {
      // tokens split between the threads (job kind 19, ~4 chunks per thread): each token the same operations wherever it runs
      const r = Math.max(2, Math.ceil(nTok / (4 * threads)));
      const p = this.job;
      p.fill(0);
      p[0] = 19; p[1] = vAt; p[2] = nTok; p[3] = nHeads; p[4] = headDim; p[5] = half; p[6] = pos0; p[7] = c.cs; p[8] = c.sn; p[9] = normal ? 1 : 0; p[10] = r;
      this.dispatch(Math.ceil(nTok / r), threads);
    } else this.exports.ropeRows(vAt, nTok, nHeads, headDim, half, pos0, c.cs, c.sn, normal ? 1 : 0);
    return true;
  }

  /**
   * The perplexity's log-softmax parts of `rows` rows of n logits (x, row-major): each row's largest value
   * (the first index holding it) and log sum_i exp(x_i - max) as logSumExp computes it (the same bits), the
   * rows split over the threads (job kind 12). The returned arrays are reused by the next call.
   */
  logSoftmaxRows(x: Float32Array, rows: number, n: number): { max: Float32Array; lse: Float64Array; argmax: Int32Array } {
    const own = this.ptrOf(x, rows * n);
    const xAt = own >= 0 ? own : this.copyIn('lsm', x, rows * n);
    const out = this.buffer('lsm-out', rows * 16 + 64);
    const lseAt = out, maxAt = out + rows * 8, argAt = maxAt + rows * 4;
    const threads = this.pool && rows * n >= MIN_PARALLEL_ELEMENTS ? this.threadCount : 1;
    const per = Math.max(1, Math.ceil(rows / (4 * threads)));
    const p = this.job;
    p.fill(0);
    p[0] = 12; p[1] = xAt; p[2] = n; p[3] = rows; p[4] = per; p[5] = maxAt; p[6] = lseAt; p[7] = argAt;
    this.dispatch(Math.ceil(rows / per), threads);
    this.views();
    const buf = this.u8View.buffer;
    return { max: new Float32Array(buf, maxAt, rows), lse: new Float64Array(buf, lseAt, rows), argmax: new Int32Array(buf, argAt, rows) };
  }

  /**
   * Are a[0, n) all finite (no NaN, no infinity)? null when a does not live in this memory (allocF32):
   * the caller checks in TypeScript.
   */
  allFinite(a: Float32Array, n: number): boolean | null {
    const own = this.ptrOf(a, n);
    if (own < 0) return null;
    const ranges = this.rangeJob(0, own, 0, n);
    if (ranges === 0) return this.exports.firstNonFinite(own, n) < 0;
    const at = this.buffer('ranges', ranges * 4 + 16) >>> 2;
    for (let c = 0; c < ranges; c++) if (this.i32View[at + c] >= 0) return false;
    return true;
  }

  /**
   * job kind 20 on the threads when n is large enough: op 0 firstNonFinite of a (each range's result in
   * the 'ranges' buffer), 1 a += b; the number of ranges, or 0 (nothing done: run it on this thread).
   * The ranges are multiples of 16 values; every value goes through the one-thread kernel's operations.
   */
  private rangeJob(op: number, aAt: number, bAt: number, n: number): number {
    if (!this.pool || n < 4 * MIN_PARALLEL_ELEMENTS) return 0;
    const threads = this.threadCount;
    const per = Math.max(MIN_PARALLEL_ELEMENTS, Math.ceil(n / (4 * threads) / 16) * 16);
    const ranges = Math.ceil(n / per);
    const res = this.buffer('ranges', ranges * 4 + 16);
    const p = this.job;
    p.fill(0);
    p[0] = 20; p[1] = op; p[2] = aAt; p[3] = bAt; p[4] = n; p[5] = per; p[6] = res;
    this.dispatch(ranges, threads);
    return ranges;
  }

  /** log sum_i exp(x[off + i] - max) over n values, max being their largest (f32 exp4, f64 sum). */
  logSumExp(x: Float32Array, off: number, n: number, max: number): number {
    const row = x.subarray(off, off + n);
    const own = this.ptrOf(row, n);
    return this.exports.logSumExp(own >= 0 ? own : this.copyIn('lse', row, n), n, max);
  }

  /** exp of each value (the kernel's exp4; for tests) */
  exp(x: Float32Array): Float32Array {
    const at = this.copyIn('expIn', x, x.length);
    const y = this.buffer('expOut', x.length * 4 + 16);
    this.exports.expArray(at, y, x.length);
    this.views();
    return this.f32View.slice(y >>> 2, (y >>> 2) + x.length);
  }

  /** copy `bytes` bytes inside this memory from srcAt to dstAt (no allocation) */
  copyWithin(dstAt: number, srcAt: number, bytes: number): void {
    this.views();
    this.u8View.copyWithin(dstAt, srcAt, srcAt + bytes);
  }

  /** byte offset of a in this memory when it lives there (allocF32) and holds n values, else -1 */
  ptrOf(a: Float32Array, n: number): number {
    return this.ours.has(a.buffer) && a.length >= n ? a.byteOffset : -1;
  }

  private copyIn(name: string, a: Float32Array, n: number): number {
    const at = this.buffer(name, n * 4 + 16);
    this.views();
    this.f32View.set(a.subarray(0, n), at >>> 2);
    return at;
  }

  private copyOut(out: Float32Array, at: number, n: number): void {
    this.views();
    out.set(this.f32View.subarray(at >>> 2, (at >>> 2) + n));
  }

  /**
   * n zeroed f32 values in kernel memory, released when `owner` is garbage collected; null when the
   * memory is full or not shared. The array stays valid (a shared memory only grows).
   */
  allocF32(n: number, owner: object): { at: number; array: Float32Array } | null {
    if (!this.shared) return null; // an unshared memory detaches its views when it grows
    const high = this.heap.high;
    const at = this.heap.alloc(n * 4);
    if (at === null) return null;
    this.views();
    const array = new Float32Array(this.u8View.buffer, at, n);
    // only the part below the heap's high-water mark can hold old values: memory never handed out is
    // still zeros, and writing them again would only fault its pages in here (a page fault per 4 KiB
    // of fresh memory, ~10-20 µs in a virtual machine) instead of where the memory is first used
    array.fill(0, 0, Math.max(0, Math.min(n, (high - at) >> 2)));
    this.finalizer.register(owner, at);
    return { at, array };
  }

  /**
   * Causal attention of nTok tokens at positions pos0.. (wasm/matmul.ts attentionChunk): q is nTok rows
   * of nHeads * headDim, the cache holds keys and values of positions [0, pos0 + nTok) at keysAt /
   * valuesAt (kvDim floats per position, in this memory); out receives nTok rows of nHeads * headDim.
   * headDim must be a multiple of 4.
   */
  attention(q: Float32Array, nTok: number, pos0: number, nHeads: number, nKvHeads: number, headDim: number, keysAt: number, valuesAt: number, kvDim: number, scale: number, out: Float32Array): void {
    if (nTok === 1 && this.attentionRows && !this.oneTokenParallel(nHeads, headDim, pos0)) {
      // one token (decode) on one thread: the cache read row by row for all heads (wasm/matmul.ts
      // attentionRowsChunk, job kind 13: the same bits; 155M Q4_0, 1 thread: 2.6 % less time a token). On 2
      // threads head by head stays faster (12 chunks balance a late worker; row by row, 1 to 6 heads a
      // chunk, was 3-10 % slower a token)
      const perChunk = nHeads;
      const sp = ((pos0 + 1) * 4 + 15) & ~15;
      const scratchBytes = perChunk * (sp + headDim * 4 + 8) + 64;
      this.attentionJob(q, out, 1, pos0, nHeads, headDim, 'scores', scratchBytes, (p, j, qAt, oAt, scratch) => {
        const qDim = nHeads * headDim;
        p.set([13, qAt, qDim * 4, keysAt, valuesAt, kvDim * 4, 1, pos0, headDim, nHeads / nKvHeads, 0, oAt, qDim * 4, scratch, scratchBytes, perChunk, nHeads], j);
        this.f32View[j + 10] = scale;
      }, Math.ceil(nHeads / perChunk));
      return;
    }
    // six rows of scores (the kernel runs six queries at a time), each a multiple of 16 bytes; from
    // ATTENTION_GATHER_TOKENS queries on, the head's keys and values gathered into rows side by side
    const copyBytes = this.attentionGather && nTok >= ATTENTION_GATHER_TOKENS && kvDim !== headDim ? 2 * (pos0 + nTok) * headDim * 4 : 0;
    const scratchBytes = 6 * ((((pos0 + nTok) * 4 + 15) & ~15) + 16) + copyBytes;
    this.attentionJob(q, out, nTok, pos0, nHeads, headDim, 'scores', scratchBytes, (p, j, qAt, oAt, scratch) => {
      const qDim = nHeads * headDim;
      // wasm/matmul.ts attention job words 0..15 (10: the scale's f32 bits)
      p.set([2, qAt, qDim * 4, keysAt, valuesAt, kvDim * 4, nTok, pos0, headDim, nHeads / nKvHeads, 0, oAt, qDim * 4, scratch, scratchBytes, copyBytes], j);
      this.f32View[j + 10] = scale;
    });
  }

  /**
   * attention() of one token at position pos0 with q and out in this memory, the same job words and threads
   * without attentionJob's closure and array literals (the decoded token's path: TurboFan compiled
   * attentionJob for ~10-17 ms during the first tokens). False (nothing done) when q or out live elsewhere,
   * the head size is not a multiple of 4 or decodeCache is off: the caller runs attention().
   */
  attentionOne(q: Float32Array, pos0: number, nHeads: number, nKvHeads: number, headDim: number, keysAt: number, valuesAt: number, kvDim: number, scale: number, out: Float32Array): boolean {
    const qDim = nHeads * headDim;
    const qAt = this.ptrOf(q, qDim);
    const oAt = this.ptrOf(out, qDim);
    if (qAt < 0 || oAt < 0 || headDim % 4 !== 0 || !this.decodeCache) return false;
    // attention()'s choice for one token: row by row on one thread below MIN_PARALLEL_ATTENTION_FLOPS on a pool
    const threads = this.oneTokenParallel(nHeads, headDim, pos0) ? this.threadCount : 1;
    const rows = this.attentionRows && threads === 1;
    const sp = ((pos0 + 1) * 4 + 15) & ~15;
    // kind 13: all heads in one chunk; kind 2: six rows of scores a chunk (no gathering for one token)
    const scratchBytes = rows ? nHeads * (sp + headDim * 4 + 8) + 64 : 6 * (sp + 16);
    const scratch = this.buffer('scores', scratchBytes * this.threadCount);
    this.views();
    const p = this.i32View;
    const j = (this.control + JOB_OFFSET) >>> 2;
    p[j] = rows ? 13 : 2;
    p[j + 1] = qAt; p[j + 2] = qDim * 4; p[j + 3] = keysAt; p[j + 4] = valuesAt; p[j + 5] = kvDim * 4; p[j + 6] = 1; p[j + 7] = pos0;
    p[j + 8] = headDim; p[j + 9] = nHeads / nKvHeads; p[j + 11] = oAt; p[j + 12] = qDim * 4; p[j + 13] = scratch; p[j + 14] = scratchBytes;
    p[j + 15] = rows ? nHeads : 0;
    if (rows) p[j + 16] = nHeads;
    this.f32View[j + 10] = scale;
    this.runJob(rows ? 1 : nHeads, threads);
    this.decodeRuns.attention++;
    return true;
  }

  /** does one token's attention at position pos0 go to the pool (attentionJob's test for nTok = 1)? */
  private oneTokenParallel(nHeads: number, headDim: number, pos0: number): boolean {
    return this.pool !== null && 4 * nHeads * headDim * (pos0 + 1) >= MIN_PARALLEL_ATTENTION_FLOPS;
  }

  /** An attention job of nHeads chunks: q and out in this memory (copied when elsewhere), `words` fills the job's parameters (at p[j..]). */
  private attentionJob(q: Float32Array, out: Float32Array, nTok: number, pos0: number, nHeads: number, headDim: number, scratchName: string, scratchBytes: number, words: (p: Int32Array, j: number, qAt: number, oAt: number, scratch: number) => void, chunks = nHeads): void {
    if (headDim % 4 !== 0) throw new Error(`attention kernel: head size ${headDim} is not a multiple of 4`);
    const qDim = nHeads * headDim;
    const qOwn = this.ptrOf(q, nTok * qDim);
    const qAt = qOwn >= 0 ? qOwn : this.copyIn('q', q, nTok * qDim);
    const oOwn = this.ptrOf(out, nTok * qDim);
    const oAt = oOwn >= 0 ? oOwn : this.buffer('att', nTok * qDim * 4);
    const flops = 4 * nHeads * headDim * (nTok * pos0 + (nTok * (nTok + 1)) / 2);
    const threads = this.pool && flops >= (nTok === 1 ? MIN_PARALLEL_ATTENTION_FLOPS : MIN_PARALLEL_FLOPS) ? this.threadCount : 1;
    const scratch = this.buffer(scratchName, scratchBytes * this.threadCount);
    this.views();
    words(this.i32View, (this.control + JOB_OFFSET) >>> 2, qAt, oAt, scratch);
    this.runJob(chunks, threads);
    if (oOwn < 0) this.copyOut(out, oAt, nTok * qDim);
  }

  /**
   * Causal attention over a packed cache (wasm/matmul.ts packedAttentionChunk): the chunk of each key /
   * value head dequantizes it for positions [0, pos0 + nTok) inside the kernel, once for its query heads (positions
   * [0, side.b) from the packed bytes, the rest from the side's f32 rows `tail`, kvDim apart, position p at
   * p * kvDim), then runs the f32 attention of attention() on them: the result is bit-identical to
   * dequantizing the rows first and calling attention(). False (nothing done) when a packed side or a
   * tail lives outside this memory.
   */
  attentionPacked(q: Float32Array, nTok: number, pos0: number, nHeads: number, nKvHeads: number, headDim: number, kvDim: number, scale: number, k: PackedAttentionSide, v: PackedAttentionSide, out: Float32Array, intKeys = false): boolean {
    const positions = pos0 + nTok;
    // integer keys: the query rows are rounded to Q8_0 in the kernel (int16 rows, block scales, block sums)
    const tp = (nTok + 3) & ~3;
    const intBytes = intKeys ? tp * headDim * 2 + (headDim / 32) * tp * 6 + 64 : 0;
    const sides = [k, v];
    for (const side of sides) {
      if (this.ptrOf(side.tail, positions * kvDim) < 0) return false;
      if (side.b > 0 && (!side.source || !this.ours.has(side.source.bytes.buffer))) return false;
    }
    const snap = k.partial;
    if (snap && (intKeys || this.ptrOf(snap.rows, nTok * snap.stride) < 0)) return false;
    const rope = k.rope;
    if (rope && (intKeys || !this.ours.has(rope.cos.buffer) || !this.ours.has(rope.sin.buffer) || rope.positions < positions || 2 * rope.half > headDim)) return false;
    const scratchBytes = positions * 4 + 64 + 2 * positions * headDim * 4 + intBytes;
    this.attentionJob(q, out, nTok, pos0, nHeads, headDim, 'packed-attention', scratchBytes, (p, j, qAt, oAt, scratch) => {
      // wasm/matmul.ts packed attention job words 0..11 (7: the scale's f32 bits), sides at 12 and 20, kvDim at 28
      p.set([4, qAt, nHeads * headDim * 4, nTok, pos0, headDim, nHeads / nKvHeads, 0, oAt, nHeads * headDim * 4, scratch, scratchBytes], j);
      this.f32View[j + 7] = scale;
      sides.forEach((side, i) => {
        const d = j + 12 + 8 * i;
        const src = side.b > 0 ? side.source! : null;
        p.set(src ? [src.mode, src.bytes.byteOffset, src.rowBytes, src.type, src.group, src.record] : [0, 0, 0, 0, 0, 0], d);
        p[d + 6] = side.b;
        p[d + 7] = side.tail.byteOffset;
      });
      p[j + 28] = kvDim;
      p[j + 29] = intKeys ? 1 : 0;
      // words 30..33: RoPE of the keys (cos table, sin table, half, normal); 0: none
      p.set(rope ? [rope.cos.byteOffset, rope.sin.byteOffset, rope.half, rope.normal ? 1 : 0] : [0, 0, 0, 0], j + 30);
      // words 34, 35: per-query partial key rows (address, bytes per query); 0: none
      p.set(snap ? [snap.rows.byteOffset, snap.stride * 4] : [0, 0], j + 34);
    }, nKvHeads); // a chunk per key / value head, dequantized once for its group of query heads
    return true;
  }

  /**
   * Dequantize `rows` rows (rowBytes apart, `cols` elements each) of bytes in this memory (allocBytes)
   * into f32 rows in this memory (allocF32), in place; false (nothing done) when either array lives
   * elsewhere or the kernel has no dequantizer for the type.
   */
  dequantizeInto(type: GgmlTypeInfo, src: Uint8Array, rowBytes: number, rows: number, cols: number, out: Float32Array): boolean {
    if (!this.ours.has(src.buffer) || src.length < rows * rowBytes || this.ptrOf(out, rows * cols) < 0 || !this.hasType(type)) return false;
    this.exports.dequantize(type.id, src.byteOffset, rowBytes, rows, cols, out.byteOffset, cols);
    return true;
  }

  /**
   * KIVI positions [from, to) of a layer's records (`packed`, from allocBytes; rowBytes per position) as
   * f32 rows of kvDim into `out` (allocF32; position p at p * kvDim), bit-exactly as kiviDequantize.
   * perChannel (keys): records of G positions of a channel, [from, to) whole groups; else records of G
   * channels of a position. False (nothing done) when either array lives elsewhere.
   */
  kiviRowsInto(perChannel: boolean, packed: Uint8Array, rowBytes: number, bits: number, G: number, record: number, from: number, to: number, kvDim: number, out: Float32Array): boolean {
    if (!this.ours.has(packed.buffer) || packed.length < to * rowBytes || this.ptrOf(out, to * kvDim) < 0) return false;
    this.exports.kiviRows(perChannel ? 1 : 0, packed.byteOffset, rowBytes, bits, G, record, from, to, kvDim, out.byteOffset);
    return true;
  }

  /** Dequantize rows with the kernel (for tests): `rows` rows of w from row `r0`, k floats each. */
  dequantizeRows(w: KernelWeight, r0: number, rows: number): Float32Array {
    const at = this.buffer('dequantize', rows * w.cols * 4 + 64);
    this.exports.dequantize(w.type.id, w.ptr + r0 * w.rowBytes, w.rowBytes, rows, w.cols, at, w.cols);
    this.views();
    return this.f32View.slice(at >>> 2, (at >>> 2) + rows * w.cols);
  }

  /** x rows in kernel memory with stride kx (zeros after k): in place when possible, else copied */
  private activations(x: Float32Array, nTok: number, k: number, kx: number): number {
    if (x.length < nTok * k) throw new Error(`activations: ${x.length} values, expected ${nTok} x ${k}`);
    const own = this.ptrOf(x, nTok * k);
    if (own >= 0 && kx === k) return own;
    const at = this.buffer('x', nTok * kx * 4);
    this.views();
    const f = this.f32View;
    const o = at >>> 2;
    if (kx === k) f.set(x.subarray(0, nTok * k), o);
    else {
      for (let t = 0; t < nTok; t++) {
        f.set(x.subarray(t * k, (t + 1) * k), o + t * kx);
        f.fill(0, o + t * kx + k, o + (t + 1) * kx);
      }
    }
    return at;
  }

  /** One matmul job: rows [0, rows) of W at w go to columns [0, rows) of y (row stride n); x rows kx apart. */
  private run(type: number, w: number, rowBytes: number, k: number, kx: number, x: number, nTok: number, y: number, n: number, rows: number, interleaved = false): void {
    const threads = this.pool && 2 * nTok * k * rows >= MIN_PARALLEL_FLOPS ? this.threadCount : 1;
    let chunkRows: number;
    // one token on F32 rows in place: the chunk read in 4 strands (f32Strands, wasm tile4x1s), one chunk per thread
    const strands = !interleaved && nTok === 1 && type === 0 && k === kx && this.f32Strands;
    if (interleaved || strands) {
      // F32 copy interleaved by 4 rows (one token): chunks of whole groups, no scratch
      chunkRows = decodeChunkRows(rows, threads);
    } else {
      chunkRows = Math.min(MAX_CHUNK_ROWS, Math.max(3, Math.floor(SCRATCH_FLOATS / kx / 3) * 3));
      if (threads > 1) chunkRows = Math.min(chunkRows, Math.max(3, Math.ceil(rows / (8 * threads) / 3) * 3));
      chunkRows = Math.max(chunkRows, Math.ceil(rows / MAX_CHUNKS));
    }
    const chunks = Math.ceil(rows / chunkRows);
    const scratchBytes = interleaved || strands ? 64 : chunkRows * kx * 4 + 64;
    const scratch = this.buffer('scratch', scratchBytes * this.threadCount);
    // F32 rows with k % 4 == 0 (multiplied in place): the tokens packed in triples (wasm/matmul.ts
    // packTriples) for the packed 3 x 3 tiles; the same dot products, bit for bit
    let xp = 0;
    if (this.packTokens && type === 0 && k === kx && !interleaved && nTok >= 3 && rows >= 3) {
      xp = this.buffer('xPacked', Math.floor(nTok / 3) * 3 * kx * 4);
      if (threads > 1 && nTok * kx >= MIN_PARALLEL_ELEMENTS) {
        // the triples split between the threads (job kind 14, ~4 chunks per thread): the same bytes
        const triples = Math.floor(nTok / 3);
        const per = Math.max(1, Math.ceil(triples / (4 * threads)));
        const p = this.job;
        p.fill(0);
        p[0] = 14; p[1] = x; p[2] = kx * 4; p[3] = nTok; p[4] = kx * 4; p[5] = xp; p[6] = per;
        this.dispatch(Math.ceil(triples / per), threads);
      } else this.exports.packTriples(x, kx * 4, nTok, kx * 4, xp);
    }
    this.setJob(1, type, w, rowBytes, x, kx * 4, nTok, k, kx, y, n, rows, chunkRows, scratch, scratchBytes);
    this.job[15] = xp;
    this.job[16] = interleaved ? 1 : strands ? 2 : 0;
    this.dispatch(chunks, threads, nTok === 1);
  }
}

const engines = new Map<string, MatmulEngine>();
/** the engine of the last matmulInt call (its sameInput reuses that call's rounding only on the same engine) */
let lastIntEngine: MatmulEngine | null = null;
/** variants whose synchronous set-up failed (retried after initMatmulKernels) */
const failed = new Set<string>();
const modules = new Map<string, WebAssembly.Module>();
const source: KernelSource & Partial<Record<'wasmRelaxedShared' | 'wasmSimdShared', string>> = matmulWasm;

let sharedWorks: boolean | undefined;

/** A memory for an engine: shared (threads possible) where SharedArrayBuffer exists, else unshared. */
function newMemory(): { memory: WebAssembly.Memory; shared: boolean } {
  if (sharedWorks !== false && source.wasmRelaxedShared !== undefined && typeof SharedArrayBuffer !== 'undefined') {
    try {
      const memory = new WebAssembly.Memory({ initial: 2, maximum: 65536, shared: true });
      if (memory.buffer instanceof SharedArrayBuffer) {
        sharedWorks = true;
        return { memory, shared: true };
      }
    } catch {
      // not cross-origin isolated (browsers): unshared
    }
  }
  sharedWorks = false;
  return { memory: new WebAssembly.Memory({ initial: 2, maximum: 65536 }), shared: false };
}

/** Would newMemory() give a shared memory? */
function sharedMemory(): boolean {
  if (sharedWorks === undefined) newMemory();
  return sharedWorks!;
}

function moduleKey(variant: string, shared: boolean): string {
  return `${variant}:${shared ? 'shared' : 'unshared'}`;
}

function moduleBytes(variant: 'relaxed' | 'simd', shared: boolean): string {
  if (shared) return variant === 'relaxed' ? source.wasmRelaxedShared! : source.wasmSimdShared!;
  return variant === 'relaxed' ? source.wasmRelaxed : source.wasmSimd;
}

/**
 * Compile the matmul kernels asynchronously: browsers refuse synchronous compilation on their main
 * thread, so await this once before using the runtime there (Node compiles on first use anyway).
 */
export async function initMatmulKernels(variant = wasmVariant()): Promise<MatmulEngine | null> {
  if (variant === 'off') return null;
  const shared = sharedMemory();
  const k = moduleKey(variant, shared);
  if (!modules.has(k)) {
    try {
      modules.set(k, await WebAssembly.compile(decodeBase64(moduleBytes(variant, shared)) as BufferSource));
    } catch {
      return null;
    }
  }
  failed.delete(variant);
  return MatmulEngine.get(variant);
}

function decodeBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
