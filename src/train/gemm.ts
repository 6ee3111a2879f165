/**
 * The products of training: C (+)= A·B on row-major arrays with row strides, and transposes
 * (wasm/train.ts; this file holds the scalar references and the backends).
 *
 * A backend owns the arrays it multiplies. `wasmBackend` puts them in one WebAssembly memory reserved
 * up front (the kernels use them in place; growing would detach the views, so the size is fixed at
 * creation), `referenceBackend('f32')` is the scalar spec of the kernel's order of operations, and
 * `referenceBackend('f64')` runs the same model code in double precision (finite-difference checks,
 * the f64 reference the kernels are compared against).
 *
 * Order of operations (the spec): C[i][j] = acc (or C[i][j] + acc), acc = sum over p = 0, 1, ... of
 * A[i][p] * B[p][j] in increasing p, each product and sum rounded to the array's precision. The plain
 * SIMD build is bit for bit gemmRef in f32; the relaxed build may fuse multiply and add, which keeps it
 * within gamma(k) * sum_p |A[i][p] B[p][j]| of the exact sum (gamma(k) = k u / (1 - k u), u = 2^-24).
 */
import { fail } from '../errors.js';
import { newKernelInstance, newSharedKernelInstance, wasmVariant } from '../kernels/wasm.js';
import { CONTROL_BYTES, JOB_OFFSET, KernelThreads } from '../kernels/threads.js';
import * as trainWasm from '../kernels/wasm/train.generated.js';

export type Vec = Float32Array | Float64Array;

export interface Backend {
  readonly name: 'wasm' | 'reference-f32' | 'reference-f64';
  readonly f64: boolean;
  /** a zeroed array of n values (from the reserved space for wasm) */
  alloc(n: number): Vec;
  /** C[co + i*ldc + j] (+)= sum_p A[ao + i*lda + p] * B[bo + p*ldb + j], i < m, p < k, j < n */
  gemm(c: Vec, co: number, ldc: number, a: Vec, ao: number, lda: number, b: Vec, bo: number, ldb: number, m: number, k: number, n: number, accumulate: boolean): void;
  /**
   * gemm with A read transposed in place: C[co + i*ldc + j] (+)= sum_p A[ao + p*lda + i] * B[bo + p*ldb + j]
   * (dW = dyᵀ x without a copy of dyᵀ), the same bits as transpose then gemm; false where this backend
   * cannot (the caller transposes)
   */
  gemmTA?(c: Vec, co: number, ldc: number, a: Vec, ao: number, lda: number, b: Vec, bo: number, ldb: number, m: number, k: number, n: number, accumulate: boolean): boolean;
  /** D[do + j*ldd + i] = S[so + i*lds + j], i < rows, j < cols */
  transpose(d: Vec, dOff: number, ldd: number, s: Vec, sOff: number, lds: number, rows: number, cols: number): void;
  /** threads the products run on (1 unless the wasm backend started workers) */
  readonly threads?: number;
  /** stop the worker threads */
  close?(): void;
  /**
   * AutoRound's signed-gradient step (signStepRef) in WebAssembly SIMD, when every array lives in this
   * backend's memory (else the reference); the same bytes either way
   */
  signStep?(g: Vec, lo: Vec, hi: Vec, t: Vec, v: Vec, ch: Uint8Array, values: Vec, step: number, transposed?: { t: Vec; rows: number; cols: number }): void;
  /** siluForwardRef in WebAssembly (on the worker threads too), when every array lives in this backend's memory */
  silu?(g: Vec, u: Vec, h: Vec, n: number): void;
  /** siluBackwardRef in WebAssembly, likewise */
  siluBackward?(g: Vec, u: Vec, dh: Vec, dg: Vec, du: Vec, n: number): void;
  /** softmaxRowsRef on `blocks` consecutive T x T score blocks at p[pOff ..] (every row of each) in WebAssembly, likewise */
  softmax?(p: Vec, pOff: number, T: number, blocks: number, scale: number): void;
  /**
   * The training layer's causal attention (TrainModel's attention forward: S, softmax, P V) in WebAssembly,
   * a head per chunk on the threads, when every array lives in this backend's memory and a head's scratch
   * fits the threads' (else false: the caller runs its own path, which this computes bit for bit)
   */
  attention?(d: AttentionShape, q: Vec, k: Vec, v: Vec, p: Vec, o: Vec): boolean;
  /** its backward (dq, dk, dv from dO and the forward's P; dk and dv accumulate: the caller zeroes them), a kv group of heads per chunk; likewise */
  attentionBackward?(d: AttentionShape, q: Vec, k: Vec, v: Vec, p: Vec, dO: Vec, dq: Vec, dk: Vec, dv: Vec): boolean;
  /** an f64 array of n values in this backend's memory (the wasm backend: RoPE's tables for `rope`) */
  allocF64?(n: number): Float64Array;
  /**
   * The training layer's per-token parts in WebAssembly, on the threads, when every array lives in this
   * backend's memory (else false: the caller runs its TypeScript, which these compute bit for bit):
   * rmsnormForward (llama-grad.ts), RoPE (TrainModel's rope: tokens of heads x hd, pairs i < half rotated
   * by the T x half tables at position token % T, sin times sign), and a[i] += b[i]
   */
  rmsnorm?(out: Vec, r: Vec, x: Vec, w: Vec, n: number, d: number, eps: number): boolean;
  rope?(v: Vec, cos: Float64Array, sin: Float64Array, n: number, T: number, heads: number, hd: number, half: number, sign: number): boolean;
  addInto?(a: Vec, b: Vec, n: number): boolean;
  /** row blocks the worker threads (not the calling one) have computed so far */
  workerChunks?(): number;
  /** resolves when the worker threads have started (at most `timeoutMs`; products work before, on fewer threads) */
  ready?(timeoutMs?: number): Promise<void>;
}

/** The shape of a training layer's attention: batch sequences of T tokens, heads of hd values, causal blocks of `rows` query rows, scores scaled by `scale`. */
export interface AttentionShape {
  readonly batch: number;
  readonly T: number;
  readonly hd: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly rows: number;
  readonly scale: number;
}

/** The scalar spec of the kernel, in f32 (Math.fround at each step) or f64. */
export function gemmRef(c: Vec, co: number, ldc: number, a: Vec, ao: number, lda: number, b: Vec, bo: number, ldb: number, m: number, k: number, n: number, accumulate: boolean): void {
  const f32 = c instanceof Float32Array;
  const fr = f32 ? Math.fround : (x: number) => x;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      if (f32) for (let p = 0; p < k; p++) acc = fr(acc + fr(a[ao + i * lda + p] * b[bo + p * ldb + j]));
      else for (let p = 0; p < k; p++) acc += a[ao + i * lda + p] * b[bo + p * ldb + j];
      const at = co + i * ldc + j;
      c[at] = accumulate ? c[at] + acc : acc;
    }
  }
}

/**
 * One signed-gradient step of AutoRound's rounding offsets (pipeline/block-round.ts; straight-through:
 * dL/dv = g (hi - lo), hi >= lo): v -= step sign(g), clamped to [-0.5, 0.5]; an element whose choice
 * t + v >= 0.5 (ch, 1 = hi) changes takes its new level in `values` (and in `transposed`, the values'
 * transpose, rows x cols of values). Elements with one level (hi = lo) or no gradient stay. The scalar
 * spec of the wasm kernel (wasm/train.ts signStep): f64 arithmetic, v stored in f32.
 */
export function signStepRef(g: Vec, lo: Vec, hi: Vec, t: Vec, v: Vec, ch: Uint8Array, values: Vec, step: number, transposed?: { t: Vec; rows: number; cols: number }): void {
  const n = v.length;
  for (let e = 0; e < n; e++) {
    const ge = g[e];
    const h = hi[e];
    const l = lo[e];
    if (ge === 0 || h === l) continue;
    const vv = Math.min(0.5, Math.max(-0.5, v[e] - step * Math.sign(ge)));
    v[e] = vv;
    const c = t[e] + vv >= 0.5 ? 1 : 0;
    if (c !== ch[e]) {
      ch[e] = c;
      const q = c ? h : l;
      values[e] = q;
      if (transposed) {
        const r = (e / transposed.cols) | 0;
        transposed.t[(e - r * transposed.cols) * transposed.rows + r] = q;
      }
    }
  }
}

/**
 * The training layer's SiLU-gated product, the spec of the wasm kernel (wasm/train.ts siluForward):
 * h[i] = (g / (1 + e^-g)) u in f64, stored in the array's precision, for i < n.
 */
export function siluForwardRef(g: Vec, u: Vec, h: Vec, n: number): void {
  for (let i = 0; i < n; i++) {
    const x = g[i];
    h[i] = (x / (1 + Math.exp(-x))) * u[i];
  }
}

/** Its backward (wasm/train.ts siluBackward): s = 1 / (1 + e^-g), dg = dh u s (1 + g (1 - s)), du = dh g s. */
export function siluBackwardRef(g: Vec, u: Vec, dh: Vec, dg: Vec, du: Vec, n: number): void {
  for (let i = 0; i < n; i++) {
    const x = g[i];
    const s = 1 / (1 + Math.exp(-x));
    dg[i] = dh[i] * u[i] * s * (1 + x * (1 - s));
    du[i] = dh[i] * x * s;
  }
}

/**
 * Attention's causal softmax on rows t0..t1 of the T x T scores at p[pOff ..] (wasm/train.ts softmaxRows):
 * row t scaled (z = P scale stored, the maximum of the unrounded z), P = e^(P - max), divided by their
 * (unrounded) sum on positions 0..t, 0 past t.
 */
export function softmaxRowsRef(p: Vec, pOff: number, T: number, t0: number, t1: number, scale: number): void {
  for (let t = t0; t < t1; t++) {
    const r = pOff + t * T;
    let max = -Infinity;
    for (let s = 0; s <= t; s++) {
      const z = p[r + s] * scale;
      p[r + s] = z;
      if (z > max) max = z;
    }
    let sum = 0;
    for (let s = 0; s <= t; s++) {
      const e = Math.exp(p[r + s] - max);
      p[r + s] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let s = 0; s <= t; s++) p[r + s] *= inv;
    for (let s = t + 1; s < T; s++) p[r + s] = 0;
  }
}

export function transposeRef(d: Vec, dOff: number, ldd: number, s: Vec, sOff: number, lds: number, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) d[dOff + j * ldd + i] = s[sOff + i * lds + j];
}

export function referenceBackend(precision: 'f32' | 'f64' = 'f32'): Backend {
  const f64 = precision === 'f64';
  return {
    name: f64 ? 'reference-f64' : 'reference-f32',
    f64,
    alloc: (n) => (f64 ? new Float64Array(n) : new Float32Array(n)),
    gemm: gemmRef,
    transpose: transposeRef,
  };
}

interface TrainExports {
  heapBase(): number;
  relaxed(): number;
  gemm(a: number, lda: number, b: number, ldb: number, c: number, ldc: number, i0: number, i1: number, k: number, n: number, acc: number, pk: number, pkFloats: number): void;
  gemmT(a: number, lda: number, b: number, ldb: number, c: number, ldc: number, i0: number, i1: number, k: number, n: number, acc: number, pk: number, pkFloats: number): void;
  transpose(d: number, ldd: number, s: number, lds: number, rows: number, cols: number): void;
  runChunk(job: number, chunk: number, thread: number): void;
  signStep(g: number, lo: number, hi: number, t: number, v: number, ch: number, values: number, n: number, step: number, tr: number, rows: number, cols: number): void;
  siluForward(g: number, u: number, h: number, i0: number, i1: number): void;
  siluBackward(g: number, u: number, dh: number, dg: number, du: number, i0: number, i1: number): void;
  softmaxRows(p: number, T: number, t0: number, t1: number, scale: number): void;
  exp64(x: number): number;
  rmsnormRows(out: number, r: number, x: number, w: number, t0: number, t1: number, d: number, eps: number): void;
  ropeRows(v: number, cos: number, sin: number, t0: number, t1: number, T: number, heads: number, hd: number, half: number, sign: number): void;
  addRows(a: number, b: number, i0: number, i1: number): void;
  exp64x2(a: number, b: number): number;
  exp64x2b(a: number, b: number): number;
}

/** elementwise jobs below this many elements stay on the calling thread */
const ELEMENTWISE_THREADED_MIN = 1 << 15;
/** elements (SiLU) and score rows (softmax) per chunk of a threaded elementwise job */
const ELEMENTWISE_CHUNK = 1 << 14;
const SOFTMAX_CHUNK_ROWS = 64;
/** values per chunk of the per-token parts (job kind 7: whole tokens of rmsnorm and RoPE, elements of the add) */
const ROWS_CHUNK_VALUES = 1 << 15;
/** AutoRound's signed-gradient step (signStep) on the threads from this many elements, in chunks of SIGN_STEP_CHUNK */
const SIGN_STEP_THREADED_MIN = 1 << 17;
const SIGN_STEP_CHUNK = 1 << 16;

let expProbe: TrainExports | null | undefined;
/** the wasm kernels' exp (fdlibm's), for the agreement test against Math.exp; null without WebAssembly SIMD */
export function wasmExp(x: number): number | null {
  if (expProbe === undefined) expProbe = (newKernelInstance('train', trainWasm, 1)?.exports as unknown as TrainExports | undefined) ?? null;
  return expProbe ? expProbe.exp64(x) : null;
}

/** the kernels' two-lane exp (expFd2: SiLU and softmax) on (a, b), for the agreement test; null without WebAssembly SIMD */
export function wasmExp2(a: number, b: number): [number, number] | null {
  if (expProbe === undefined) expProbe = (newKernelInstance('train', trainWasm, 1)?.exports as unknown as TrainExports | undefined) ?? null;
  return expProbe ? [expProbe.exp64x2(a, b), expProbe.exp64x2b(a, b)] : null;
}

/** products below this many multiply-adds stay on the calling thread (waking workers costs more) */
const THREADED_MIN = 1 << 18;
/**
 * each thread's scratch for the gemm kernel's packed operands (wasm/train.ts): a panel of B (k x 64
 * floats) and a tile's 4 rows of A (k x 4), so products with k up to PACK_K are packed (larger ones read
 * A and B in place: the same bits either way)
 */
const PACK_K = 8192;
const PACK_FLOATS = PACK_K * 68;

/**
 * The WebAssembly backend with room for `floats` f32 values (all the arrays it will ever hand out);
 * null where WebAssembly SIMD is unavailable or turned off (LOWBIT_WASM=off). With `threads` > 1 (and
 * a host thread starter, src/kernels/threads.ts) the memory is shared and large products are cut
 * into row blocks that threads claim: every row is still one thread's sequential sums, so the results
 * are the same bytes on any thread count.
 */
export function wasmBackend(floats: number, threads = 1): Backend | null {
  if (wasmVariant() === 'off') return null;
  const scratchThreads = Math.max(1, threads);
  const bytes = floats * 4 + 65536 + CONTROL_BYTES + scratchThreads * PACK_FLOATS * 4;
  if (bytes > 4 * 2 ** 30 - 2 ** 20) fail(`training needs ${(bytes / 2 ** 30).toFixed(2)} GiB of WebAssembly memory (at most 4 GiB): use a smaller --batch or --ctx, or --checkpoint-activations`);
  const probe = newKernelInstance('train', trainWasm, 1);
  if (!probe) return null;
  const base = ((probe.exports as unknown as TrainExports).heapBase() + 63) & ~63;
  const need = Math.ceil((base + bytes) / 65536);
  const shared = threads > 1 ? newSharedKernelInstance('train', trainWasm, need) : null;
  const inst = shared ?? probe;
  const x = inst.exports as unknown as TrainExports;
  const have = inst.memory.buffer.byteLength / 65536;
  if (need > have) inst.memory.grow(need - have);
  const buffer = inst.memory.buffer;
  const control = base;
  let next = base + CONTROL_BYTES;
  const pool = shared ? KernelThreads.start(shared.memory, shared.module, control, threads) : null;
  // words 0..10 a product's parameters (runChunk), 11 the job's kind (0: product; elementwiseChunk), f64 at byte 48
  const job = new Int32Array(buffer, control + JOB_OFFSET, 16);
  const jobF64 = new Float64Array(buffer, control + JOB_OFFSET + 48, 1);
  // word 16 on (after the packing scratch's words 14, 15): signStep's columns
  const jobHi = new Int32Array(buffer, control + JOB_OFFSET + 64, 4);
  const end = base + bytes;
  // words 14, 15: the packing scratch of thread 0 (threads 1, 2, ... follow) and its floats per thread
  const pack = next;
  next += scratchThreads * PACK_FLOATS * 4;
  job[14] = pack;
  job[15] = PACK_FLOATS;
  /** an f32 array of at least n values in this backend's memory */
  const mine = (v: Vec, n: number): boolean => v.buffer === buffer && v instanceof Float32Array && v.length >= n;
  const ptr = (v: Vec, off: number): number => {
    if (v.buffer !== buffer || !(v instanceof Float32Array)) fail('wasm backend: array not allocated by this backend');
    return v.byteOffset + off * 4;
  };
  /** a head's scratch (K or V transposed, dS, the products' packing) fits each thread's */
  const attentionFits = (d: AttentionShape) => d.nHeads % d.nKvHeads === 0 && d.rows >= 1 && d.hd * d.T + d.T * d.T + 68 * d.T <= PACK_FLOATS;
  /** attention job `kind` (wasm/train.ts: 5 forward, 6 backward) on `chunks` chunks: q, k, v, p, o / dO at words 0..4, dq, dk, dv at 17..19 */
  const attentionJob = (kind: number, d: AttentionShape, arrays: Vec[], chunks: number, grads: Vec[] = []) => {
    job.set([...arrays.map((a) => a.byteOffset), d.T, d.hd, d.nHeads * d.hd, d.nKvHeads * d.hd, d.nHeads, d.nHeads / d.nKvHeads, kind]);
    jobF64[0] = d.scale;
    jobHi.set([d.rows, ...grads.map((a) => a.byteOffset)]);
    if (pool) pool.run(chunks, x);
    else for (let c = 0; c < chunks; c++) x.runChunk(control + JOB_OFFSET, c, 0);
  };
  /**
   * job kind 7, part `part` (wasm/train.ts rowsChunk): words 0..4 and 8, 9 from `words` (arrays as their
   * addresses), 5 the count, 6 the count per chunk, 7 the part, f64 at byte 48 `f`; on the threads from
   * ELEMENTWISE_THREADED_MIN values
   */
  const rowsJob = (part: number, words: (Vec | number)[], count: number, per: number, values: number, f: number) => {
    const w = words.map((a) => (typeof a === 'number' ? a : a.byteOffset));
    job.set([w[0] ?? 0, w[1] ?? 0, w[2] ?? 0, w[3] ?? 0, w[4] ?? 0, count, per, part, w[8] ?? 0, w[9] ?? 0, 0, 7]);
    jobF64[0] = f;
    const chunks = Math.ceil(count / per);
    if (pool && values >= ELEMENTWISE_THREADED_MIN && chunks > 1) pool.run(chunks, x);
    else if (part === 0) x.rmsnormRows(w[0], w[1], w[2], w[3], 0, count, w[4], f);
    else if (part === 1) x.ropeRows(w[0], w[1], w[2], 0, count, w[3], w[4], w[8], w[9], f);
    else x.addRows(w[0], w[1], 0, count);
  };
  /**
   * C (+)= A · B (transA: A read transposed in place, wasm gemmT), m, k, n > 0: on the threads in row blocks
   * of a multiple of 4 rows (the kernel's tile), a few per thread, from THREADED_MIN multiply-adds (job
   * word 12: transA), else on this thread
   */
  const product = (transA: boolean, c: Vec, co: number, ldc: number, a: Vec, ao: number, lda: number, b: Vec, bo: number, ldb: number, m: number, k: number, n: number, accumulate: boolean) => {
    if (pool && m >= 8 && m * k * n >= THREADED_MIN) {
      const rows = Math.max(4, Math.ceil(m / (4 * pool.size) / 4) * 4);
      job.set([ptr(a, ao), lda, ptr(b, bo), ldb, ptr(c, co), ldc, m, k, n, accumulate ? 1 : 0, rows, 0, transA ? 1 : 0]);
      pool.run(Math.ceil(m / rows), x);
    } else if (transA) x.gemmT(ptr(a, ao), lda, ptr(b, bo), ldb, ptr(c, co), ldc, 0, m, k, n, accumulate ? 1 : 0, pack, PACK_FLOATS);
    else x.gemm(ptr(a, ao), lda, ptr(b, bo), ldb, ptr(c, co), ldc, 0, m, k, n, accumulate ? 1 : 0, pack, PACK_FLOATS);
  };
  return {
    name: 'wasm',
    f64: false,
    alloc(n) {
      const at = next;
      const size = (n * 4 + 63) & ~63; // 64-byte aligned arrays
      if (at + size > end) fail(`wasm backend: out of reserved memory (${n} more floats)`);
      next += size;
      return new Float32Array(buffer, at, n);
    },
    gemm(c, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate) {
      if (m <= 0 || n <= 0) return;
      if (k <= 0) {
        if (!accumulate) for (let i = 0; i < m; i++) c.fill(0, co + i * ldc, co + i * ldc + n);
        return;
      }
      product(false, c, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate);
    },
    gemmTA(c, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate) {
      // A read in place needs the packed path: a scratch of k x 68 floats
      if (k > PACK_K || m <= 0 || n <= 0 || k <= 0) return false;
      product(true, c, co, ldc, a, ao, lda, b, bo, ldb, m, k, n, accumulate);
      return true;
    },
    threads: pool ? pool.size : 1,
    close() {
      pool?.close();
    },
    workerChunks: () => pool?.workerChunks() ?? 0,
    async ready(timeoutMs = 10000) {
      const t0 = Date.now();
      while (pool && pool.ready() < pool.size - 1 && Date.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 5));
    },
    transpose(d, dOff, ldd, s, sOff, lds, rows, cols) {
      x.transpose(ptr(d, dOff), ldd, ptr(s, sOff), lds, rows, cols);
    },
    silu(g, u, h, n) {
      if (![g, u, h].every((a) => mine(a, n))) return siluForwardRef(g, u, h, n);
      if (pool && n >= ELEMENTWISE_THREADED_MIN) {
        job.set([g.byteOffset, u.byteOffset, h.byteOffset, 0, 0, n, ELEMENTWISE_CHUNK, 0, 0, 0, 0, 1]);
        pool.run(Math.ceil(n / ELEMENTWISE_CHUNK), x);
        return;
      }
      x.siluForward(g.byteOffset, u.byteOffset, h.byteOffset, 0, n);
    },
    siluBackward(g, u, dh, dg, du, n) {
      if (![g, u, dh, dg, du].every((a) => mine(a, n))) return siluBackwardRef(g, u, dh, dg, du, n);
      if (pool && n >= ELEMENTWISE_THREADED_MIN) {
        job.set([g.byteOffset, u.byteOffset, dh.byteOffset, dg.byteOffset, du.byteOffset, n, ELEMENTWISE_CHUNK, 0, 0, 0, 0, 2]);
        pool.run(Math.ceil(n / ELEMENTWISE_CHUNK), x);
        return;
      }
      x.siluBackward(g.byteOffset, u.byteOffset, dh.byteOffset, dg.byteOffset, du.byteOffset, 0, n);
    },
    softmax(p, pOff, T, blocks, scale) {
      const size = T * T;
      if (!mine(p, pOff + blocks * size)) {
        for (let b = 0; b < blocks; b++) softmaxRowsRef(p, pOff + b * size, T, 0, T, scale);
        return;
      }
      const at = p.byteOffset + pOff * 4;
      if (pool && blocks * size >= ELEMENTWISE_THREADED_MIN) {
        job.set([at, 0, 0, 0, 0, blocks, SOFTMAX_CHUNK_ROWS, T, 0, 0, 0, 3]);
        jobF64[0] = scale;
        pool.run(blocks * Math.ceil(T / SOFTMAX_CHUNK_ROWS), x);
        return;
      }
      for (let b = 0; b < blocks; b++) x.softmaxRows(at + b * size * 4, T, 0, T, scale);
    },
    attention(d, q, k, v, p, o) {
      if (!attentionFits(d)) return false;
      const N = d.batch * d.T, qDim = d.nHeads * d.hd, kvDim = d.nKvHeads * d.hd;
      if (!mine(q, N * qDim) || !mine(k, N * kvDim) || !mine(v, N * kvDim) || !mine(p, d.batch * d.nHeads * d.T * d.T) || !mine(o, N * qDim)) return false;
      attentionJob(5, d, [q, k, v, p, o], d.batch * d.nHeads);
      return true;
    },
    attentionBackward(d, q, k, v, p, dO, dq, dk, dv) {
      if (!attentionFits(d)) return false;
      const N = d.batch * d.T, qDim = d.nHeads * d.hd, kvDim = d.nKvHeads * d.hd;
      if (![q, dO, dq].every((a) => mine(a, N * qDim)) || ![k, v, dk, dv].every((a) => mine(a, N * kvDim)) || !mine(p, d.batch * d.nHeads * d.T * d.T)) return false;
      attentionJob(6, d, [q, k, v, p, dO], d.batch * d.nKvHeads, [dq, dk, dv]);
      return true;
    },
    allocF64(n) {
      const f = this.alloc(2 * n);
      return new Float64Array(f.buffer, f.byteOffset, n);
    },
    rmsnorm(out, r, x, w, n, d, eps) {
      if (!mine(out, n * d) || !mine(r, n) || !mine(x, n * d) || !mine(w, d)) return false;
      rowsJob(0, [out, r, x, w, d], n, Math.max(1, Math.ceil(ROWS_CHUNK_VALUES / d)), n * d, eps);
      return true;
    },
    rope(v, cos, sin, n, T, heads, hd, half, sign) {
      const f64In = (a: Float64Array) => a.buffer === buffer && a.length >= T * half;
      if (!mine(v, n * heads * hd) || !f64In(cos) || !f64In(sin) || 2 * half > hd) return false;
      rowsJob(1, [v, cos, sin, T, heads, 0, 0, 0, hd, half], n, Math.max(1, Math.ceil(ROWS_CHUNK_VALUES / (heads * hd))), n * heads * hd, sign);
      return true;
    },
    addInto(a, b, n) {
      if (!mine(a, n) || !mine(b, n)) return false;
      rowsJob(2, [a, b], n, ROWS_CHUNK_VALUES, n, 0);
      return true;
    },
    signStep(g, lo, hi, t, v, ch, values, step, transposed) {
      const n = v.length;
      const inMemory = (a: Vec | Uint8Array) => a.buffer === buffer && !(a instanceof Float64Array); // any element type but f64 (ch is bytes)
      if (![g, lo, hi, t, v, values].every((a) => inMemory(a) && a.length >= n) || !inMemory(ch) || ch.length < n || (transposed && (!inMemory(transposed.t) || transposed.t.length < n)))
        return signStepRef(g, lo, hi, t, v, ch, values, step, transposed);
      const tr = transposed ? transposed.t.byteOffset : 0;
      if (pool && n >= SIGN_STEP_THREADED_MIN) {
        // element ranges on the threads (each element's step is its own: the same bytes)
        job.set([g.byteOffset, lo.byteOffset, hi.byteOffset, t.byteOffset, v.byteOffset, ch.byteOffset, values.byteOffset, tr, n, SIGN_STEP_CHUNK, transposed?.rows ?? 1, 4]);
        jobF64[0] = step;
        jobHi[0] = transposed?.cols ?? 1;
        pool.run(Math.ceil(n / SIGN_STEP_CHUNK), x);
        return;
      }
      x.signStep(g.byteOffset, lo.byteOffset, hi.byteOffset, t.byteOffset, v.byteOffset, ch.byteOffset, values.byteOffset, n, step, tr, transposed?.rows ?? 1, transposed?.cols ?? 1);
    },
  };
}

/** gamma(k) of the relaxed build's bound: |C - exact| <= gamma(k) * sum |A B| */
export function gemmErrorFactor(k: number): number {
  const u = 2 ** -24;
  return (k * u) / (1 - k * u);
}
