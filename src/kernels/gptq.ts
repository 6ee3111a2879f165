/**
 * Dense kernels of GPTQ and calibration: X^T X accumulation, the lazy block update, the inverse
 * Cholesky factor, and C = A B^T (the runtime's matmul shape). Each has a scalar reference here (the
 * spec) and a WebAssembly SIMD version (wasm/gptq.ts) used when available.
 *
 * Agreement (test/ptq.test.ts):
 *   syrk, gemmABt: f32 dot products 4 lanes wide (fused multiply-add in relaxed builds) against the
 *     f64 reference: |fast - ref| <= K * 2^-22 * sum_t |a_t b_t| (K terms, each f32 rounding 2^-24, a
 *     factor 4 of headroom for the lane order).
 *   lazyUpdate, cholesky, trilInverse: f64, same operations in a different order (two lanes):
 *     within 1e-12 relative of the reference.
 *
 * Memory: the WebAssembly versions keep their matrices inside the kernel's memory; the workspace
 * objects hand out typed-array views of it (valid until release()).
 */
import { kernelInstance, newKernelInstance, newSharedKernelInstance, wasmVariant, type KernelInstance } from './wasm.js';
import * as gptqWasm from './wasm/gptq.generated.js';
import { MatmulEngine } from './matmul.js';
import { CONTROL_BYTES, JOB_OFFSET, KernelThreads } from './threads.js';

interface GptqExports {
  heapBase(): number;
  transposePad(x: number, rows: number, cols: number, xt: number, ld: number): void;
  syrkLower(h: number, xt: number, k: number, ld: number): void;
  gemmABt(c: number, a: number, b: number, m: number, n: number, k: number): void;
  lazyUpdate(w: number, n: number, k: number, e: number, ldE: number, count: number, u: number, i1: number, i2: number): void;
  columnLoop(w: number, k: number, u: number, e: number, ldE: number, r0: number, rows: number, i1: number, c0: number, c1: number, i2: number, lv: number, cnt: number, nCodes: number, out: number, loss: number, perRow: number): number;
  cholesky(a: number, k: number): number;
  trilInverse(m: number, x: number, k: number): void;
  cholDiag(a: number, k: number, kb: number, e: number): number;
  runChunk(job: number, chunk: number, thread: number): void;
  factorFinish(a: number, d: number, k: number): void;
  clipSearch(x: number, w: number, n: number, cand: number, nCand: number, lo: number, hi: number): number;
}

// ---------------------------------------------------------------------------------------------------
// References

/** h (k x k, lower triangle) += x^T x for nTok rows of x (k wide) */
export function syrkLowerRef(h: Float64Array, x: Float32Array, nTok: number, k: number): void {
  for (let t = 0; t < nTok; t++) {
    const o = t * k;
    for (let i = 0; i < k; i++) {
      const xi = x[o + i];
      if (xi === 0) continue;
      const row = i * k;
      for (let j = 0; j <= i; j++) h[row + j] += xi * x[o + j];
    }
  }
}

/** c (m x n) = a (m x K) b^T (b: n x K), accumulated in f64 */
export function gemmABtRef(c: Float32Array, a: Float32Array, b: Float32Array, m: number, n: number, K: number): void {
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < K; p++) s += a[i * K + p] * b[j * K + p];
      c[i * n + j] = s;
    }
}

/** w[:, i2:k] -= e[:, 0:count] u[i1:i1+count, i2:k]  (w: n x k, e: n x ldE, u: k x k) */
export function lazyUpdateRef(w: Float64Array, n: number, k: number, e: Float64Array, ldE: number, count: number, u: Float64Array, i1: number, i2: number): void {
  for (let r = 0; r < n; r++)
    for (let i = 0; i < count; i++) {
      const ev = e[r * ldE + i];
      const ur = (i1 + i) * k;
      for (let j = i2; j < k; j++) w[r * k + j] -= ev * u[ur + j];
    }
}

/** lower Cholesky factor in place; returns the first non-positive pivot or -1 */
export function choleskyRef(a: Float64Array, k: number): number {
  for (let j = 0; j < k; j++) {
    let s = a[j * k + j];
    for (let p = 0; p < j; p++) s -= a[j * k + p] * a[j * k + p];
    if (!(s > 0)) return j;
    const d = Math.sqrt(s);
    a[j * k + j] = d;
    for (let i = j + 1; i < k; i++) {
      let t = a[i * k + j];
      for (let p = 0; p < j; p++) t -= a[i * k + p] * a[j * k + p];
      a[i * k + j] = t / d;
    }
    for (let i = j + 1; i < k; i++) a[j * k + i] = 0;
  }
  return -1;
}

/** x = m^-1 for lower-triangular m (k x k) */
export function trilInverseRef(m: Float64Array, x: Float64Array, k: number): void {
  x.fill(0, 0, k * k);
  for (let i = 0; i < k; i++) {
    for (let p = 0; p < i; p++) {
      const a = m[i * k + p];
      for (let j = 0; j <= p; j++) x[i * k + j] -= a * x[p * k + j];
    }
    x[i * k + i] += 1;
    const d = 1 / m[i * k + i];
    for (let j = 0; j <= i; j++) x[i * k + j] *= d;
  }
}

/**
 * The reference of factorMemory, operation for operation (bit for bit): U = the upper Cholesky factor of
 * h^-1 (h: k x k symmetric positive definite, lower triangle read) as J M^-1 J, M M^T = J h J, with
 * M by the blocked Cholesky of wasm/_linalg.ts (panels of 64 columns: the diagonal block, the panel's
 * rows below it, the trailing update; its dot products in the kernels' lane orders: dot64Ref, tile 2 x 2)
 * and M^-1 by trilInverseRef. Returns -1 and U, or the failing pivot (in h's order).
 */
export function factorRef(h: Float64Array, k: number): { bad: number; u: Float64Array } {
  const m = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) m[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
  const bad = choleskyBlockedRef(m, k);
  if (bad >= 0) return { bad: k - 1 - bad, u: new Float64Array(0) };
  const x = new Float64Array(k * k);
  trilInverseRef(m, x, k);
  const u = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = i; j < k; j++) u[i * k + j] = x[(k - 1 - i) * k + (k - 1 - j)];
  return { bad: -1, u };
}

/** wasm/_linalg.ts dot64: sum a[ao + p] b[bo + p], p < n, in lanes p mod 4, summed (l0 + l2) + (l1 + l3), then the tail */
function dot64Ref(a: Float64Array, ao: number, b: Float64Array, bo: number, n: number): number {
  let l0 = 0, l1 = 0, l2 = 0, l3 = 0;
  const n4 = n & ~3;
  let p = 0;
  for (; p < n4; p += 4) {
    l0 += a[ao + p] * b[bo + p];
    l1 += a[ao + p + 1] * b[bo + p + 1];
    l2 += a[ao + p + 2] * b[bo + p + 2];
    l3 += a[ao + p + 3] * b[bo + p + 3];
  }
  let s = (l0 + l2) + (l1 + l3);
  for (; p < n; p++) s += a[ao + p] * b[bo + p];
  return s;
}

/** wasm/_linalg.ts tile22Sub's sum for one element: lanes p mod 2 over the pairs, l0 + l1, then an odd last term */
function dot2Ref(a: Float64Array, ao: number, b: Float64Array, bo: number, n: number): number {
  let l0 = 0, l1 = 0;
  const n2 = n & ~1;
  for (let p = 0; p < n2; p += 2) {
    l0 += a[ao + p] * b[bo + p];
    l1 += a[ao + p + 1] * b[bo + p + 1];
  }
  let s = l0 + l1;
  if (n2 < n) s += a[ao + n2] * b[bo + n2];
  return s;
}

/** the blocked lower Cholesky factor of wasm/_linalg.ts (cholDiag, cholPanelRows, cholTrailingRows) in place; the upper triangle is left as it is */
export function choleskyBlockedRef(a: Float64Array, k: number): number {
  const PANEL = 64;
  for (let kb = 0; kb < k; kb += PANEL) {
    const e = Math.min(kb + PANEL, k);
    for (let j = kb; j < e; j++) {
      const s = a[j * k + j] - dot64Ref(a, j * k + kb, a, j * k + kb, j - kb);
      if (!(s > 0)) return j;
      const d = Math.sqrt(s);
      a[j * k + j] = d;
      const inv = 1 / d;
      for (let i = j + 1; i < e; i++) a[i * k + j] = (a[i * k + j] - dot64Ref(a, i * k + kb, a, j * k + kb, j - kb)) * inv;
    }
    for (let j = kb; j < e; j++) {
      const inv = 1 / a[j * k + j];
      for (let i = e; i < k; i++) a[i * k + j] = (a[i * k + j] - dot64Ref(a, i * k + kb, a, j * k + kb, j - kb)) * inv;
    }
    const w = e - kb;
    let i = e;
    for (; i + 1 < k; i += 2) {
      let j = e;
      for (; j + 1 <= i; j += 2)
        for (const [ii, jj] of [[i, j], [i, j + 1], [i + 1, j], [i + 1, j + 1]]) a[ii * k + jj] -= dot2Ref(a, ii * k + kb, a, jj * k + kb, w);
      for (; j <= i + 1; j++) {
        if (j <= i) a[i * k + j] -= dot64Ref(a, i * k + kb, a, j * k + kb, w);
        a[(i + 1) * k + j] -= dot64Ref(a, (i + 1) * k + kb, a, j * k + kb, w);
      }
    }
    for (; i < k; i++) for (let j = e; j <= i; j++) a[i * k + j] -= dot64Ref(a, i * k + kb, a, j * k + kb, w);
  }
  return -1;
}

/**
 * GPTQ's clip search of one group on an affine grid (wasm/gptq.ts clipSearch, bit for bit): candidate c
 * has scale cand[2c] (> 0, finite) and zero-point cand[2c + 1]; its error is sum_j w_j (x_j - q_j)^2 with
 * q_j = f32((clamp(Math.round(x_j / s + z), lo, hi) - z) s), summed in element order (the operations of
 * the codec's snap and BlockQuantizer's error). Returns the first candidate of least error (0 if none).
 */
export function clipSearchRef(x: Float32Array, w: Float32Array, n: number, cand: Float64Array, nCand: number, lo: number, hi: number): number {
  let best = 0;
  let bestErr = 0;
  for (let c = 0; c < nCand; c++) {
    const s = cand[2 * c];
    const z = cand[2 * c + 1];
    let e = 0;
    for (let j = 0; j < n; j++) {
      let q = Math.round(x[j] / s + z);
      if (q < lo) q = lo;
      else if (q > hi) q = hi;
      const d = x[j] - Math.fround((q - z) * s);
      e += w[j] * d * d;
    }
    if (c === 0) bestErr = e;
    else if (e < bestErr) {
      bestErr = e;
      best = c;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------
// WebAssembly plumbing

let useFast = true;
let useFastColumns = true;

/** Turn the WebAssembly versions off (tests compare against the references). */
export function setGptqKernelsFast(on: boolean): void {
  useFast = on;
}

/** Is GPTQ's WebAssembly column loop (and the clip search) on? */
export function gptqColumnLoopFast(): boolean {
  return useFast && useFastColumns && wasmVariant() !== 'off';
}

/** Turn only GPTQ's WebAssembly column loop (and the clip search) off (tests compare them with the TypeScript loop, bit for bit). */
export function setGptqColumnLoopFast(on: boolean): void {
  useFastColumns = on;
}

class Arena {
  private top: number;
  constructor(readonly inst: KernelInstance) {
    this.top = ((inst.exports as unknown as GptqExports).heapBase() + 63) & ~63;
  }
  get x(): GptqExports {
    return this.inst.exports as unknown as GptqExports;
  }
  /** reserve bytes (64-byte aligned); grows the memory, so take views only after every alloc */
  alloc(bytes: number): number {
    const at = this.top;
    this.top = (at + bytes + 63) & ~63;
    const have = this.inst.memory.buffer.byteLength;
    if (this.top > have) this.inst.memory.grow(Math.ceil((this.top - have) / 65536));
    return at;
  }
  f64(at: number, n: number): Float64Array {
    return new Float64Array(this.inst.memory.buffer, at, n);
  }
  f32(at: number, n: number): Float32Array {
    return new Float32Array(this.inst.memory.buffer, at, n);
  }
  /** the current top (everything below it stays allocated) */
  mark(): number {
    return this.top;
  }
  /** free everything allocated since mark() returned `top` (the memory keeps its size) */
  reset(top: number): void {
    this.top = top;
  }
}

function fastArena(): Arena | null {
  if (!useFast) return null;
  const inst = newKernelInstance('gptq', gptqWasm, 1);
  return inst ? new Arena(inst) : null;
}

/** the rows' workspaces of one thread kept at most this big (bytes of U, W and the errors) */
const ROWS_ARENA_MAX = 256 * 2 ** 20;
/** per WebAssembly variant: the arena gptqRows' workspaces are made in, one at a time, reused */
const rowsArenas = new Map<string, { arena: Arena; base: number }>();

/**
 * An arena for one workspace of gptqRows on this thread (GPTQ of rows whose factor lives elsewhere: a
 * worker's range of rows): the same memory every time, reset (a fresh memory per weight costs a page
 * fault per 4 KiB: ~18 000 for U alone at k = 2816), while the workspace fits ROWS_ARENA_MAX; a
 * fresh one past that (its memory goes with it). The previous workspace made here is over.
 */
function rowsArena(n: number, k: number, block: number): Arena | null {
  if (!useFast) return null;
  if ((k * k + n * k + n * block) * 8 > ROWS_ARENA_MAX) return fastArena();
  const variant = wasmVariant();
  let r = rowsArenas.get(variant);
  if (!r) {
    const arena = fastArena();
    if (!arena) return null;
    rowsArenas.set(variant, (r = { arena, base: arena.mark() }));
  }
  r.arena.reset(r.base);
  return r.arena;
}

// ---------------------------------------------------------------------------------------------------
// X^T X

/** rows per X^T X product of the engine accumulator (and at most this many floats gathered) */
const GRAM_ROWS = 2048;
const GRAM_BUFFER_FLOATS = 1 << 23;

/**
 * The gathering buffers of finished engine accumulators, for the next ones: a stage's statistics make a
 * new accumulator every layer, and fresh memory costs a page fault per 4 KiB (~10 µs each in a virtual
 * machine; 23 MB per layer for a 2816-wide input). In kernel memory when there is room (gramUpper then
 * reads the rows in place). At most PENDING_POOL buffers are kept; the others are let go (a kernel
 * allocation is released when its array is collected: its owner token lives as long as the array).
 */
const pendingPool: Float32Array[] = [];
const PENDING_POOL = 4;
const pendingOwners = new WeakMap<Float32Array, object>();

/** a buffer of at least n values (the smallest pooled one that fits, else a new one) */
function takePending(n: number, engine: MatmulEngine): Float32Array {
  let best = -1;
  for (let i = 0; i < pendingPool.length; i++) if (pendingPool[i].length >= n && (best < 0 || pendingPool[i].length < pendingPool[best].length)) best = i;
  if (best >= 0) return pendingPool.splice(best, 1)[0];
  const owner = {};
  const slot = engine.allocF32(n, owner);
  if (!slot) return new Float32Array(n);
  pendingOwners.set(slot.array, owner);
  return slot.array;
}

function givePending(a: Float32Array): void {
  if (pendingPool.length < PENDING_POOL) pendingPool.push(a);
}

/** the f64 sums of finished engine accumulators in kernel memory (k x k each), for the next ones */
interface KernelSums {
  at: number;
  array: Float64Array;
  owner: object;
  engine: MatmulEngine;
}
const sumsPool: KernelSums[] = [];
const SUMS_POOL = 2;

/** n zeroed f64 in kernel memory (a pooled buffer that fits, else a new one), or null (memory not shared or full) */
function takeSums(n: number, engine: MatmulEngine): KernelSums | null {
  let best = -1;
  for (let i = 0; i < sumsPool.length; i++) if (sumsPool[i].engine === engine && sumsPool[i].array.length >= n && (best < 0 || sumsPool[i].array.length < sumsPool[best].array.length)) best = i;
  if (best >= 0) {
    const s = sumsPool.splice(best, 1)[0];
    const v = { ...s, array: s.array.subarray(0, n) };
    v.array.fill(0);
    return v;
  }
  const owner = {};
  const slot = engine.allocF32(2 * n, owner);
  if (!slot) return null;
  return { at: slot.at, array: new Float64Array(slot.array.buffer, slot.at, n), owner, engine };
}

function giveSums(s: KernelSums): void {
  if (sumsPool.length < SUMS_POOL) sumsPool.push(s);
}

/**
 * The lower triangle of a k x k matrix (with or without its diagonal) in 32 x 32 tiles, so that a
 * mirrored, strided access (element (j, i) beside (i, j)) stays within a few cache lines:
 * visit(i, j0, j1) for the columns [j0, j1) of row i, each element of the triangle once.
 */
export function lowerTriangleTiles(k: number, diagonal: boolean, visit: (i: number, j0: number, j1: number) => void): void {
  const T = 32;
  for (let i0 = 0; i0 < k; i0 += T)
    for (let j0 = 0; j0 <= i0; j0 += T)
      for (let i = i0; i < Math.min(k, i0 + T); i++) visit(i, j0, Math.min(diagonal ? i + 1 : i, j0 + T));
}

export interface HessianAccumulator {
  readonly k: number;
  /** add x^T x for nTok rows of x (k wide) */
  add(x: Float32Array, nTok: number): void;
  /** the lower triangle of the sum (k x k, upper triangle zero), a copy */
  /** the sum (lower triangle); called once, when every row has been added (the array may be the accumulator's own) */
  result(): Float64Array;
  /**
   * instead of result(): the sum finished as algos/gptq.ts finishHessian(result(), k, nTok) leaves it
   * (scaled by 2 / nTok, both triangles), in one pass over it where the accumulator can, the same bits;
   * into `into` (k x k, overwritten) when given: fresh memory costs a page fault per 4 KiB (63 MB at k = 2816)
   */
  finished?(nTok: number, into?: Float64Array): Float64Array;
  /**
   * rows that one product takes in place (addInPlace), or absent: a product is over this many rows,
   * gathered by add() until there are that many
   */
  readonly productRows?: number;
  /**
   * add x^T x for nTok rows of x where they are, without gathering them: when nothing is gathered, nTok
   * is productRows and x lives in the engine's memory -- the product add() would make of the same rows
   * added in steps, the same bits; else false, nothing done (add them with add())
   */
  addInPlace?(x: Float32Array, nTok: number): boolean;
}

let inPlaceProducts = 0;

/** products of X^T X that accumulators took in place (addInPlace) so far (statistics, tests) */
export function hessianProductsInPlace(): number {
  return inPlaceProducts;
}

/**
 * An accumulator of X^T X for inputs k wide, given at most maxTok rows per add. With a matmul engine,
 * rows are gathered up to GRAM_ROWS and multiplied by the engine's gramUpper (the matmul kernel on
 * every thread the engine has; f32 dot products over those rows) and summed into an f64 lower
 * triangle: the same result on any number of threads.
 */
export function hessianAccumulator(k: number, maxTok: number, engine?: MatmulEngine | null): HessianAccumulator {
  if (useFast && engine) {
    // rows are gathered until GRAM_ROWS (f32 dot products over that many terms), then one product; the
    // sums are kept in the upper triangle (gramUpper's faster layout: element (j, i) is gramLower's (i, j)
    // bit for bit) and moved to the lower one at the end: the same f64 sums, in the same order. In kernel
    // memory (when shared) the kernel adds each product into h itself (gramAccumulate: the same f64
    // additions as the loop below, without the k x k f32 product and the pass over it in TypeScript)
    const inKernel = takeSums(k * k, engine);
    const h = inKernel?.array ?? new Float64Array(k * k);
    const cap = Math.max(maxTok, Math.min(GRAM_ROWS, Math.floor(GRAM_BUFFER_FLOATS / k)));
    const pending = takePending(cap * k, engine);
    let rows = 0;
    const flush = () => {
      if (rows === 0) return;
      if (inKernel) engine.gramAccumulate(pending, rows, k, inKernel.at);
      else {
        const g = engine.gramUpper(pending, rows, k);
        for (let i = 0; i < k; i++) {
          const row = i * k;
          for (let j = i; j < k; j++) h[row + j] += g[row + j];
        }
      }
      rows = 0;
    };
    return {
      k,
      add(x, nTok) {
        if (nTok > maxTok) throw new RangeError(`hessianAccumulator: ${nTok} rows > ${maxTok}`);
        if (rows + nTok > cap) flush();
        pending.set(x.subarray(0, nTok * k), rows * k);
        rows += nTok;
      },
      productRows: inKernel ? cap : undefined,
      addInPlace(x, nTok) {
        // (gramTranspose reads x in place as it reads `pending`: the same rows, the same product)
        if (!inKernel || rows !== 0 || nTok !== cap || engine.ptrOf(x, nTok * k) < 0) return false;
        engine.gramAccumulate(x, nTok, k, inKernel.at);
        inPlaceProducts++;
        return true;
      },
      finished: (nTok, into) => {
        flush();
        givePending(pending);
        if (into && into.length < k * k) throw new RangeError(`hessianAccumulator: ${into.length} values to finish into, ${k} x ${k} needed`);
        // finishHessian's products of result()'s lower triangle, element (i, j) being the sum's (j, i) in the upper one
        const s = 2 / Math.max(1, nTok);
        // (a new view of `into` every time: gptqFactor keeps its last factor by the Hessian array's identity)
        const out = into ? into.subarray(0, k * k) : inKernel ? new Float64Array(k * k) : h;
        lowerTriangleTiles(k, true, (i, j0, j1) => {
          for (let j = j0; j < j1; j++) {
            const v = h[j * k + i] * s;
            out[i * k + j] = v;
            out[j * k + i] = v;
          }
        });
        if (inKernel) giveSums(inKernel);
        return out;
      },
      // the accumulator is done after result(): its array is handed over (no second k x k)
      result: () => {
        flush();
        givePending(pending);
        if (inKernel) {
          // the upper triangle in kernel memory -> the lower one of a fresh array, in tiles
          const out = new Float64Array(k * k);
          lowerTriangleTiles(k, true, (i, j0, j1) => {
            for (let j = j0; j < j1; j++) out[i * k + j] = h[j * k + i];
          });
          giveSums(inKernel);
          return out;
        }
        // upper -> lower in place, in tiles; upper zero
        lowerTriangleTiles(k, false, (i, j0, j1) => {
          for (let j = j0; j < j1; j++) {
            h[i * k + j] = h[j * k + i];
            h[j * k + i] = 0;
          }
        });
        return h;
      },
    };
  }
  const arena = fastArena();
  if (!arena) {
    const h = new Float64Array(k * k);
    return { k, add: (x, nTok) => syrkLowerRef(h, x, nTok, k), result: () => Float64Array.from(h) };
  }
  const ld = (maxTok + 3) & ~3;
  const hAt = arena.alloc(k * k * 8);
  const xAt = arena.alloc(maxTok * k * 4);
  const xtAt = arena.alloc(k * ld * 4);
  return {
    k,
    add(x, nTok) {
      if (nTok > maxTok) throw new RangeError(`hessianAccumulator: ${nTok} rows > ${maxTok}`);
      arena.f32(xAt, nTok * k).set(x.subarray(0, nTok * k));
      const l = (nTok + 3) & ~3;
      arena.x.transposePad(xAt, nTok, k, xtAt, l);
      arena.x.syrkLower(hAt, xtAt, k, l);
    },
    result: () => Float64Array.from(arena.f64(hAt, k * k)),
  };
}

// ---------------------------------------------------------------------------------------------------
// The clip search of a group (clipSearchRef)

/** a clip search's inputs in kernel memory: x, w (n f32 each) and the candidates (f64 pairs) */
export interface ClipSearch {
  readonly x: Float32Array;
  readonly w: Float32Array;
  readonly cand: Float64Array;
  /** the first candidate of least error among the first nCand (x, w: the first n values, n even) */
  run(n: number, nCand: number, lo: number, hi: number): number;
}

/** per WebAssembly variant: a small instance of its own, and its buffers */
const clipArenas = new Map<string, { arena: Arena | null; buffers?: { n: number; nCand: number; buffer: ArrayBufferLike; search: ClipSearch } }>();

/**
 * The WebAssembly clip search with room for n values and nCand candidates, or null (kernels off, n odd):
 * fill x, w and cand, then run. The views stay valid until the next call.
 */
export function clipSearchKernel(n: number, nCand: number): ClipSearch | null {
  if (!useFast || !useFastColumns || n % 2 !== 0) return null;
  const variant = wasmVariant();
  let slot = clipArenas.get(variant);
  if (!slot) {
    const inst = variant === 'off' ? null : newKernelInstance('gptq', gptqWasm, 1);
    slot = { arena: inst ? new Arena(inst) : null };
    clipArenas.set(variant, slot);
  }
  const ar = slot.arena;
  if (!ar) return null;
  let b = slot.buffers;
  if (!b || b.n < n || b.nCand < nCand || b.buffer !== ar.inst.memory.buffer) {
    const nn = Math.max(n, b?.n ?? 0);
    const nc = Math.max(nCand, b?.nCand ?? 0);
    const at = ar.alloc(nn * 8 + nc * 16);
    const xAt = at, wAt = at + nn * 4, cAt = at + nn * 8;
    const search: ClipSearch = {
      x: ar.f32(xAt, nn),
      w: ar.f32(wAt, nn),
      cand: ar.f64(cAt, 2 * nc),
      run: (m, mc, lo, hi) => ar.x.clipSearch(xAt, wAt, m, cAt, mc, lo, hi),
    };
    b = slot.buffers = { n: nn, nCand: nc, buffer: ar.inst.memory.buffer, search };
  }
  return b.search;
}

// ---------------------------------------------------------------------------------------------------
// C = A B^T as the runtime's matmul (out = x w^T)

let gemmArena: Arena | null | undefined;
let gemmCap = { a: 0, b: 0, c: 0, aAt: 0, bAt: 0, cAt: 0 };

/** out (nTok x n) = x (nTok x k) w^T (w: n x k); WebAssembly when available and k % 4 == 0. */
export function gemmABt(out: Float32Array, x: Float32Array, w: Float32Array, nTok: number, k: number, n: number): void {
  if (gemmArena === undefined) gemmArena = useFast ? (() => {
    const inst = kernelInstance('gptq', gptqWasm, 1);
    return inst ? new Arena(inst) : null;
  })() : null;
  const ar = gemmArena;
  if (!ar || k % 4 !== 0) {
    gemmABtRef(out, x, w, nTok, n, k);
    return;
  }
  const aBytes = nTok * k * 4;
  const bBytes = n * k * 4;
  const cBytes = nTok * n * 4;
  if (aBytes > gemmCap.a || bBytes > gemmCap.b || cBytes > gemmCap.c) {
    const a = Math.max(aBytes, gemmCap.a);
    const b = Math.max(bBytes, gemmCap.b);
    const c = Math.max(cBytes, gemmCap.c);
    gemmCap = { a, b, c, aAt: ar.alloc(a), bAt: ar.alloc(b), cAt: ar.alloc(c) };
  }
  ar.f32(gemmCap.aAt, nTok * k).set(x.subarray(0, nTok * k));
  ar.f32(gemmCap.bAt, n * k).set(w.subarray(0, n * k));
  ar.x.gemmABt(gemmCap.cAt, gemmCap.aAt, gemmCap.bAt, nTok, n, k);
  out.set(ar.f32(gemmCap.cAt, nTok * n));
}

// ---------------------------------------------------------------------------------------------------
// GPTQ workspace

export interface GptqWorkspace {
  /** the weights being quantized, n x k (f64) */
  readonly w: Float64Array;
  /** the errors of the current lazy block, n x blockSize */
  readonly err: Float64Array;
  /** after inverseCholesky: upper Cholesky factor of H^-1, k x k */
  readonly u: Float64Array;
  /** u = upper Cholesky factor of h^-1 (h: k x k symmetric positive definite); -1, or the failing pivot */
  inverseCholesky(h: Float64Array): number;
  /** w[:, i2:] -= err[:, 0:count] u[i1:i1+count, i2:] */
  lazyUpdate(count: number, i1: number, i2: number): void;
  /**
   * GPTQ's column loop in WebAssembly (wasm/gptq.ts columnLoop), when the workspace was made with
   * `levels` and the kernels are on: the levels of `rows` rows' elements of columns [c0, c1) (lv, cnt:
   * see GptqLevels) are filled by the caller, `out` receives the chosen level of each; returns loss.
   * perRow: every element of a row has the same levels, lv at row * nCodes, cnt at row.
   */
  readonly columns?: GptqLevels & {
    run(r0: number, rows: number, i1: number, c0: number, c1: number, i2: number, loss: number, perRow?: boolean): number;
  };
}

/**
 * Scratch of the WebAssembly column loop for chunks of `rows` rows and `len` columns: element (r, i)
 * of a chunk has its sorted levels at lv[(r * len + i) * nCodes ..], their count at cnt[r * len + i], and
 * its chosen level's index comes back in out[r * len + i].
 */
export interface GptqLevels {
  readonly rows: number;
  readonly len: number;
  readonly nCodes: number;
  readonly lv: Float32Array;
  readonly cnt: Uint16Array;
  readonly out: Uint16Array;
}

/**
 * U = the upper Cholesky factor of h^-1 (h: k x k symmetric positive definite), as
 * GptqWorkspace.inverseCholesky, on the threads of a matmul engine (MatmulEngine.choleskyInverse: the
 * same bits as the one-thread kernels, on any number of threads). Without an engine (or with the
 * references forced) it runs on a workspace on this thread. Returns -1 and U, or the failing pivot.
 */
export function inverseCholeskyUpper(h: Float64Array, k: number, engine?: MatmulEngine | null): { bad: number; u: Float64Array } {
  if (!useFast || !engine) {
    const ws = gptqWorkspace(0, k, 1);
    const bad = ws.inverseCholesky(h);
    return { bad, u: bad >= 0 ? new Float64Array(0) : Float64Array.from(ws.u) };
  }
  const m = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    const src = (k - 1 - i) * k + (k - 1);
    for (let j = 0; j <= i; j++) m[i * k + j] = h[src - j];
  }
  // the engine copies m into its memory before it writes X: one array serves as both (no second k x k)
  const bad = engine.choleskyInverse(m, k, m);
  if (bad >= 0) return { bad: k - 1 - bad, u: new Float64Array(0) };
  // U[i][j] = X[k-1-i][k-1-j]: element i k + j is element k^2 - 1 - (i k + j), the whole array reversed
  m.reverse();
  return { bad: -1, u: m };
}

/**
 * The inverse Cholesky factor U of one Hessian in the factor memory: one WebAssembly memory (shared
 * where SharedArrayBuffer exists) that every factor of the process is computed in, in place (k x k:
 * the Hessian's reversed lower triangle goes in, U comes out where it was), on the matmul engine's
 * thread count (threads of its own on that memory: wasm/gptq.ts runChunk). The workspaces of the rows
 * quantized with it (gptqWorkspace with this factor) are made in the same memory after U, reading U
 * where it is (no copy). One factor at a time: making the next one ends this one (reading it then
 * throws), and one workspace at a time.
 */
export interface FactorMemory {
  readonly k: number;
  /** U, k x k row-major (upper triangular); a view, taken anew on every read (the memory may grow) */
  readonly u: Float64Array;
  /** false once the next factor (or releaseFactorMemory) replaced it: u can no longer be read */
  readonly live: boolean;
}

/** the memory every factor is computed in (one per WebAssembly variant), with its threads */
class FactorArena {
  readonly arena: Arena;
  /** thread control block (threads.ts), then the factors */
  private readonly control: number;
  readonly base: number;
  /** bumped by every factor: a FactorStore of an older one is over */
  generation = 0;
  private pool: KernelThreads | null = null;
  private words = new Int32Array(0);
  constructor(inst: KernelInstance, private readonly module?: WebAssembly.Module) {
    this.arena = new Arena(inst);
    this.control = this.arena.alloc(CONTROL_BYTES);
    this.base = this.arena.mark();
  }
  /** threads for the next jobs (the calling one included); 1 without a shared memory or a thread starter */
  threads(n: number): number {
    if (n <= 1 || !this.module) return 1;
    if (this.pool?.size !== n) {
      this.pool?.close();
      this.pool = KernelThreads.start(this.arena.inst.memory, this.module, this.control, n);
    }
    return this.pool ? n : 1;
  }
  /** run chunks [0, chunks) of the job whose words are given (word 0 the kind) */
  run(job: readonly number[], chunks: number, threads: number): void {
    const buf = this.arena.inst.memory.buffer;
    if (this.words.buffer !== buf) this.words = new Int32Array(buf);
    const at = this.control + JOB_OFFSET;
    this.words.fill(0, at >>> 2, (at >>> 2) + 17);
    this.words.set(job, at >>> 2);
    const x = this.arena.x;
    if (threads > 1 && chunks > 1 && this.pool) this.pool.run(chunks, x);
    else for (let c = 0; c < chunks; c++) x.runChunk(at, c, 0);
  }
  close(): void {
    this.pool?.close();
    this.pool = null;
  }
  stats(): { threads: number; ready: number; workerChunks: number } {
    return { threads: this.pool?.size ?? 1, ready: this.pool?.ready() ?? 0, workerChunks: this.pool?.workerChunks() ?? 0 };
  }
}

const factorArenas = new Map<string, FactorArena | null>();

function factorArena(): FactorArena | null {
  if (!useFast) return null;
  const variant = wasmVariant();
  if (variant === 'off') return null;
  let fa = factorArenas.get(variant);
  if (fa === undefined) {
    const shared = newSharedKernelInstance('gptq', gptqWasm, 1);
    const inst = shared ?? newKernelInstance('gptq', gptqWasm, 1);
    fa = inst ? new FactorArena(inst, shared?.module) : null;
    factorArenas.set(variant, fa);
  }
  return fa;
}

/**
 * Let the factor memory go (its threads stop; its pages are freed with it): the next factor makes a new
 * one. Factors made before can no longer be read.
 */
export function releaseFactorMemory(): void {
  for (const fa of factorArenas.values()) {
    if (!fa) continue;
    fa.generation++;
    fa.close();
  }
  factorArenas.clear();
}

/** the factor memory's threads: how many, workers started, chunks they ran (tests) */
export function factorThreadStats(): { threads: number; ready: number; workerChunks: number } {
  return factorArena()?.stats() ?? { threads: 1, ready: 0, workerChunks: 0 };
}

class FactorStore implements FactorMemory {
  private view: Float64Array;
  constructor(readonly k: number, readonly owner: FactorArena, readonly uAt: number, readonly top: number, readonly generation: number) {
    this.view = owner.arena.f64(uAt, k * k);
  }
  get live(): boolean {
    return this.owner.generation === this.generation;
  }
  get arena(): Arena {
    if (!this.live) throw new Error('internal: a GPTQ factor read after the next factor replaced it');
    return this.owner.arena;
  }
  get u(): Float64Array {
    const arena = this.arena;
    if (this.view.buffer !== arena.inst.memory.buffer) this.view = arena.f64(this.uAt, this.k * this.k);
    return this.view;
  }
}

/** most threads of a factor below this k: 1 (waking threads costs more than the work) */
const FACTOR_MIN_THREADED_K = 128;
/** rows per chunk of the Cholesky's panel jobs: ~8 chunks per thread */
const cholChunkRows = (rows: number, threads: number) => Math.max(2, Math.ceil(rows / (8 * threads) / 2) * 2);

/**
 * U = the upper Cholesky factor of h^-1 (h: k x k symmetric positive definite, its lower triangle read)
 * as a FactorMemory, or the failing pivot, on `threads` threads (default: the matmul engine's): the same
 * bits on any number (factorRef is the order of operations). Without the WebAssembly kernels U is a plain
 * array (the one-thread references: choleskyRef, trilInverseRef).
 */
export function factorMemory(h: Float64Array, k: number, threads?: number): { bad: number; factor?: FactorMemory } {
  const fa = factorArena();
  if (!fa) {
    const ws = gptqWorkspace(0, k, 1);
    const bad = ws.inverseCholesky(h);
    return bad >= 0 ? { bad } : { bad, factor: { k, u: ws.u, live: true } };
  }
  const n = fa.threads(k >= FACTOR_MIN_THREADED_K ? (threads ?? MatmulEngine.get()?.threads ?? 1) : 1);
  const generation = ++fa.generation;
  const ar = fa.arena;
  ar.reset(fa.base);
  const aAt = ar.alloc(k * k * 8);
  const top = ar.mark();
  const dAt = ar.alloc(k * 8);
  const tBytes = k * 128;
  const tAt = ar.alloc(n * tBytes);
  // M = J h J (its lower triangle; the upper one is not read)
  const m = ar.f64(aAt, k * k);
  for (let i = 0; i < k; i++) {
    const src = (k - 1 - i) * k + (k - 1);
    const row = i * k;
    for (let j = 0; j <= i; j++) m[row + j] = h[src - j];
  }
  const PANEL = 64; // wasm/_linalg.ts CHOL_PANEL
  for (let kb = 0; kb < k; kb += PANEL) {
    const e = Math.min(kb + PANEL, k);
    const bad = ar.x.cholDiag(aAt, k, kb, e);
    if (bad >= 0) {
      ar.reset(fa.base);
      return { bad: k - 1 - bad };
    }
    if (e === k) break;
    const r = cholChunkRows(k - e, n);
    const chunks = Math.ceil((k - e) / r);
    fa.run([5, aAt, k, kb, e, r], chunks, n);
    fa.run([6, aAt, k, kb, e, r], chunks, n);
  }
  fa.run([8, aAt, k, dAt, tAt, tBytes], Math.ceil(k / 16), n);
  ar.x.factorFinish(aAt, dAt, k);
  ar.reset(top); // the diagonal and the threads' scratch: room for the workspaces
  return { bad: -1, factor: new FactorStore(k, fa, aAt, top, generation) };
}

/** the factor in an arena: m (scratch) at mAt, U at uAt; -1 or the failing pivot */
function inverseInto(arena: Arena, h: Float64Array, k: number, mAt: number, uAt: number): number {
  const m = arena.f64(mAt, k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) m[i * k + j] = j <= i ? h[(k - 1 - i) * k + (k - 1 - j)] : 0;
  const bad = arena.x.cholesky(mAt, k);
  if (bad >= 0) return k - 1 - bad;
  arena.x.trilInverse(mAt, uAt, k);
  // u holds X = M^-1; U[i][j] = X[k-1-i][k-1-j]: the whole array reversed, in place
  arena.f64(uAt, k * k).reverse();
  return -1;
}

/**
 * Matrices for one GPTQ run of an n x k weight with lazy blocks of `block` columns. The inverse
 * Cholesky factor: with J the reversal, factor J H J = M M^T; then H = R R^T with R = J M J upper,
 * H^-1 = (R^-1)^T R^-1, and U = R^-1 = J M^-1 J (one Cholesky and one triangular inverse).
 */
export function gptqWorkspace(n: number, k: number, block: number, levels?: { len: number; nCodes: number }, withFactor = true, factor?: FactorMemory, reuse = false): GptqWorkspace {
  const store = factor instanceof FactorStore && factor.k === k ? factor : undefined;
  if (store) withFactor = false;
  const arena = store ? store.arena : reuse && !withFactor ? rowsArena(n, k, block) : fastArena();
  // in a factor's memory: the previous workspace there is over (the new one goes after U)
  if (store) arena!.reset(store.top);
  const alloc = (bytes: number): number => arena!.alloc(bytes);
  // the factor's scratch (k x k f64) only where inverseCholesky may be called
  const mAt = withFactor ? arena?.alloc(k * k * 8) ?? 0 : 0;
  const uAt = store ? store.uAt : arena?.alloc(k * k * 8) ?? 0;
  const wAt = arena ? alloc(n * k * 8) : 0;
  const eAt = arena ? alloc(n * block * 8) : 0;
  // the column loop's levels: chunks of rows of at most 2^22 levels (16 MiB)
  const lvl = arena && useFastColumns && levels && levels.nCodes <= 65536 && n > 0 ? { ...levels, rows: Math.max(1, Math.min(n, Math.floor((1 << 22) / (levels.len * levels.nCodes)))) } : undefined;
  const lvAt = lvl ? alloc(lvl.rows * lvl.len * lvl.nCodes * 4) : 0;
  const cntAt = lvl ? alloc(lvl.rows * lvl.len * 2) : 0;
  const outAt = lvl ? alloc(lvl.rows * lvl.len * 2) : 0;
  const m = !withFactor ? new Float64Array(0) : arena ? arena.f64(mAt, k * k) : new Float64Array(k * k);
  const u = arena ? arena.f64(uAt, k * k) : new Float64Array(k * k);
  const w = arena ? arena.f64(wAt, n * k) : new Float64Array(n * k);
  const err = arena ? arena.f64(eAt, n * block) : new Float64Array(n * block);
  const columns = lvl && {
    ...lvl,
    lv: arena!.f32(lvAt, lvl.rows * lvl.len * lvl.nCodes),
    cnt: new Uint16Array(arena!.inst.memory.buffer, cntAt, lvl.rows * lvl.len),
    out: new Uint16Array(arena!.inst.memory.buffer, outAt, lvl.rows * lvl.len),
    run: (r0: number, rows: number, i1: number, c0: number, c1: number, i2: number, loss: number, perRow = false) => arena!.x.columnLoop(wAt, k, uAt, eAt, block, r0, rows, i1, c0, c1, i2, lvAt, cntAt, lvl.nCodes, outAt, loss, perRow ? 1 : 0),
  };
  return {
    w,
    err,
    u,
    ...(columns ? { columns } : {}),
    inverseCholesky(h) {
      if (!withFactor) throw new Error('internal: gptqWorkspace made without the factor scratch');
      if (arena) return inverseInto(arena, h, k, mAt, uAt);
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) m[i * k + j] = j <= i ? h[(k - 1 - i) * k + (k - 1 - j)] : 0;
      const bad = choleskyRef(m, k);
      if (bad >= 0) return k - 1 - bad;
      trilInverseRef(m, u, k);
      // u holds X = M^-1; U[i][j] = X[k-1-i][k-1-j]: reverse rows and columns in place
      const x = u;
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) m[i * k + j] = x[(k - 1 - i) * k + (k - 1 - j)];
      u.set(m);
      return -1;
    },
    lazyUpdate(count, i1, i2) {
      if (arena) arena.x.lazyUpdate(wAt, n, k, eAt, block, count, uAt, i1, i2);
      else lazyUpdateRef(w, n, k, err, block, count, u, i1, i2);
    },
  };
}
