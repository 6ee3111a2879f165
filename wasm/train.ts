// build: shared-memory
// Kernels of the training engine (src/train/gemm.ts holds the TypeScript side and the scalar reference).
//
//   C[i][j] (+)= sum_k A[i][k] * B[k][j]      A: m x k (row stride lda floats), B: k x n (ldb), C: m x n (ldc)
//
// Every product of training is this one kernel on row-major f32 arrays (a transposed B is made explicit
// with `transpose`, O(size) against the O(m k n) product; a transposed A is read in place by the packed
// path, gemmT): y = x Wᵀ, dx = dy W, dW = dyᵀ x (gemmT), and attention's S = Q Kᵀ, O = P V, dP = dO Vᵀ,
// dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q.
//
// Order of operations (the spec is gemmRef in src/train/gemm.ts): each C[i][j] is one sequential sum
// acc = 0; for k = 0, 1, ...: acc = acc + A[i][k] * B[k][j]; then C = acc (or C + acc when accumulating).
// The plain SIMD build rounds each product and each sum to f32: bit for bit gemmRef. The relaxed build
// may fuse them (f32x4.relaxed_madd): within gamma(k) * sum_k |A B| of the exact sum. No result depends
// on the tiling, m, or which thread computed a row block, so training is the same on any thread count.
//
// Tiles: 4 rows of C x 8 columns (8 f32x4 accumulators), the columns blocked by 64 so a k x 64 panel
// of B stays in L2 while all row blocks pass over it. Columns past a multiple of 4 and rows past a
// multiple of 4 take the narrower paths below (same order of operations).
// Packing: with a scratch area of at least k x 68 floats (the caller's thread's own) and 8 or more rows,
// each panel's whole 8-column groups are first copied into it, group after group, each k rows of 8
// contiguous floats: a tile then reads B sequentially instead of one row of B (ldb apart: a new cache
// line and often a new page) per step of k. Each tile's 4 rows of A are interleaved behind them (k x 4
// floats, once per panel) so the tile reads them at fixed offsets. The same products and sums in the
// same order: the same bits.
import { choiceHalf, chosen4, hiHalf, mask4, stepHalf } from './_sign-step';

export function heapBase(): usize {
  return __heap_base;
}

/** Does this build use relaxed SIMD? */
export function relaxed(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

// @ts-ignore: decorator
@inline function fma(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

// @ts-ignore: decorator
@inline function put(c: usize, v: v128, acc: i32): void {
  v128.store(c, acc ? f32x4.add(v128.load(c), v) : v);
}

/** 4 rows x 8 columns: a -> A[i][0], b -> B[0][j], c -> C[i][j]; strides in bytes */
function tile4x8(a: usize, lda: usize, b: usize, ldb: usize, c: usize, ldc: usize, k: i32, acc: i32): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const a1 = a + lda, a2 = a + 2 * lda, a3 = a + 3 * lda;
  for (let p: i32 = 0; p < k; p++) {
    const o = <usize>p << 2;
    const b0 = v128.load(b), b1 = v128.load(b, 16);
    let s = v128.load32_splat(a + o);
    c00 = fma(s, b0, c00); c01 = fma(s, b1, c01);
    s = v128.load32_splat(a1 + o);
    c10 = fma(s, b0, c10); c11 = fma(s, b1, c11);
    s = v128.load32_splat(a2 + o);
    c20 = fma(s, b0, c20); c21 = fma(s, b1, c21);
    s = v128.load32_splat(a3 + o);
    c30 = fma(s, b0, c30); c31 = fma(s, b1, c31);
    b += ldb;
  }
  put(c, c00, acc); put(c + 16, c01, acc); c += ldc;
  put(c, c10, acc); put(c + 16, c11, acc); c += ldc;
  put(c, c20, acc); put(c + 16, c21, acc); c += ldc;
  put(c, c30, acc); put(c + 16, c31, acc);
}

/**
 * 4 rows x 8 columns from packed operands: a -> 4 rows of A interleaved (A[i..i+3][p] at a + 16 p),
 * b -> a packed group of B (B[p][j..j+7] at b + 32 p). The same products and sums in the same order as
 * tile4x8; the row values are splat from immediate offsets, so the loop does no address arithmetic
 * beyond two pointer steps (the unpacked loop's four row addresses per step of k were most of the
 * instructions the front end could not issue beside the 16 vector operations).
 */
function tile4x8p(a: usize, b: usize, c: usize, ldc: usize, k: i32, acc: i32): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const end = a + (<usize>k << 4);
  for (; a < end; a += 16) {
    const b0 = v128.load(b), b1 = v128.load(b, 16);
    let s = v128.load32_splat(a);
    c00 = fma(s, b0, c00); c01 = fma(s, b1, c01);
    s = v128.load32_splat(a, 4);
    c10 = fma(s, b0, c10); c11 = fma(s, b1, c11);
    s = v128.load32_splat(a, 8);
    c20 = fma(s, b0, c20); c21 = fma(s, b1, c21);
    s = v128.load32_splat(a, 12);
    c30 = fma(s, b0, c30); c31 = fma(s, b1, c31);
    b += 32;
  }
  put(c, c00, acc); put(c + 16, c01, acc); c += ldc;
  put(c, c10, acc); put(c + 16, c11, acc); c += ldc;
  put(c, c20, acc); put(c + 16, c21, acc); c += ldc;
  put(c, c30, acc); put(c + 16, c31, acc);
}

/** rows a, a + la, a + 2 la, a + 3 la of A (k values each) interleaved into dst: A[r][p] at dst + 16 p + 4 r */
function packRows4(a: usize, la: usize, k: i32, dst: usize): void {
  const a1 = a + la, a2 = a + 2 * la, a3 = a + 3 * la;
  let p: i32 = 0;
  for (; p + 4 <= k; p += 4) {
    const o = <usize>p << 2;
    const r0 = v128.load(a + o), r1 = v128.load(a1 + o), r2 = v128.load(a2 + o), r3 = v128.load(a3 + o);
    const t0 = v128.shuffle<i32>(r0, r1, 0, 4, 1, 5), t1 = v128.shuffle<i32>(r0, r1, 2, 6, 3, 7);
    const t2 = v128.shuffle<i32>(r2, r3, 0, 4, 1, 5), t3 = v128.shuffle<i32>(r2, r3, 2, 6, 3, 7);
    const d = dst + (<usize>p << 4);
    v128.store(d, v128.shuffle<i32>(t0, t2, 0, 1, 4, 5));
    v128.store(d, v128.shuffle<i32>(t0, t2, 2, 3, 6, 7), 16);
    v128.store(d, v128.shuffle<i32>(t1, t3, 0, 1, 4, 5), 32);
    v128.store(d, v128.shuffle<i32>(t1, t3, 2, 3, 6, 7), 48);
  }
  for (; p < k; p++) {
    const o = <usize>p << 2;
    const d = dst + (<usize>p << 4);
    store<f32>(d, load<f32>(a + o));
    store<f32>(d, load<f32>(a1 + o), 4);
    store<f32>(d, load<f32>(a2 + o), 8);
    store<f32>(d, load<f32>(a3 + o), 12);
  }
}

/** 1 row x 8 columns; the row's values `ap` bytes apart (4, or a column of a transposed A) */
function tile1x8(a: usize, ap: usize, b: usize, ldb: usize, c: usize, k: i32, acc: i32): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0);
  for (let p: i32 = 0; p < k; p++) {
    const s = v128.load32_splat(a);
    c0 = fma(s, v128.load(b), c0); c1 = fma(s, v128.load(b, 16), c1);
    a += ap;
    b += ldb;
  }
  put(c, c0, acc); put(c + 16, c1, acc);
}

/** 1 row x 4 columns */
function tile1x4(a: usize, ap: usize, b: usize, ldb: usize, c: usize, k: i32, acc: i32): void {
  let c0 = f32x4.splat(0);
  for (let p: i32 = 0; p < k; p++) {
    c0 = fma(v128.load32_splat(a), v128.load(b), c0);
    a += ap;
    b += ldb;
  }
  put(c, c0, acc);
}

/** one output (the column tail past a multiple of 4): the same sequential order, in scalar f32 */
function dot1(a: usize, ap: usize, b: usize, ldb: usize, c: usize, k: i32, acc: i32): void {
  let s: f32 = 0;
  for (let p: i32 = 0; p < k; p++) {
    if (ASC_FEATURE_RELAXED_SIMD) s = f32x4.extract_lane(f32x4.relaxed_madd(f32x4.splat(load<f32>(a)), f32x4.splat(load<f32>(b)), f32x4.splat(s)), 0);
    else s = s + load<f32>(a) * load<f32>(b);
    a += ap;
    b += ldb;
  }
  store<f32>(c, acc ? load<f32>(c) + s : s);
}

/**
 * C (+)= A B for rows [i0, i1) of C; pointers to element 0, strides in floats; pk: the calling thread's
 * scratch of pkFloats floats for packed panels (0: none)
 */
export function gemm(a: usize, lda: i32, b: usize, ldb: i32, c: usize, ldc: i32, i0: i32, i1: i32, k: i32, n: i32, acc: i32, pk: usize, pkFloats: i32): void {
  gemmCore(a, lda, 0, b, ldb, c, ldc, i0, i1, k, n, acc, pk, pkFloats);
}

/**
 * gemm on A's transpose read in place (A[i][p] at a + (p lda + i) floats: dW = dyᵀ x without the copy of
 * dyᵀ): the same products and sums in the same order as gemm on the transposed copy. Needs the packed
 * path: pk a scratch of at least k x 68 floats (the caller checks).
 */
export function gemmT(a: usize, lda: i32, b: usize, ldb: i32, c: usize, ldc: i32, i0: i32, i1: i32, k: i32, n: i32, acc: i32, pk: usize, pkFloats: i32): void {
  gemmCore(a, lda, 1, b, ldb, c, ldc, i0, i1, k, n, acc, pk, pkFloats);
}

/**
 * gemm, or with aT = 1 on A's transpose: A[i][p] at a + (p lda + i) floats (attention's Pᵀ and dSᵀ, read
 * in place). The same products and sums in the same order either way. aT needs the packed path (a
 * scratch of k x 68 floats or more): its tiles read A's 4 rows as one vector per step of k.
 */
function gemmCore(a: usize, lda: i32, aT: i32, b: usize, ldb: i32, c: usize, ldc: i32, i0: i32, i1: i32, k: i32, n: i32, acc: i32, pk: usize, pkFloats: i32): void {
  const la = <usize>lda << 2, lb = <usize>ldb << 2, lc = <usize>ldc << 2;
  // element A[i][p] at a + i ai + p ap
  const ai: usize = aT ? 4 : la, ap: usize = aT ? la : 4;
  const n8 = n & ~7;
  // the scratch: the panel's groups of B (k x 64 floats), then one tile's 4 rows of A (k x 4 floats)
  const pack = pk != 0 && (aT != 0 || i1 - i0 >= 8) && <i64>k * 68 <= <i64>pkFloats;
  if (aT && !pack) unreachable();
  const gs = <usize>k << 5; // bytes of one packed group (k rows of 8 floats)
  const apk = pk + (<usize>k << 8);
  for (let j0: i32 = 0; j0 < n; j0 += 64) {
    const j1 = min(j0 + 64, n);
    // the panel's whole groups of 8 columns (the unpacked loop's `j + 8 <= j1 && j < n8`)
    const groups = (min(j1, n8) - j0) >> 3;
    if (pack) packPanel(b + (<usize>j0 << 2), lb, k, groups, pk, gs);
    let i = i0;
    for (; i + 4 <= i1; i += 4) {
      let j = j0;
      if (pack) {
        if (groups > 0) {
          if (aT) packColumns4(a + (<usize>i << 2), la, k, apk);
          else packRows4(a + <usize>i * la, la, k, apk);
        }
        for (let q = 0; q < groups; q++, j += 8) tile4x8p(apk, pk + <usize>q * gs, c + <usize>i * lc + (<usize>j << 2), lc, k, acc);
      } else for (; j + 8 <= j1 && j < n8; j += 8) tile4x8(a + <usize>i * la, la, b + (<usize>j << 2), lb, c + <usize>i * lc + (<usize>j << 2), lc, k, acc);
      for (let r = i; r < i + 4; r++) tail(a + <usize>r * ai, ap, b, lb, c + <usize>r * lc, j, j1, k, acc);
    }
    for (; i < i1; i++) {
      let j = j0;
      if (pack) for (let q = 0; q < groups; q++, j += 8) tile1x8(a + <usize>i * ai, ap, pk + <usize>q * gs, 32, c + <usize>i * lc + (<usize>j << 2), k, acc);
      else for (; j + 8 <= j1; j += 8) tile1x8(a + <usize>i * ai, ap, b + (<usize>j << 2), lb, c + <usize>i * lc + (<usize>j << 2), k, acc);
      tail(a + <usize>i * ai, ap, b, lb, c + <usize>i * lc, j, j1, k, acc);
    }
  }
}

/** 4 columns of A (a transposed operand: a, a + 4, a + 8, a + 12 on each of k rows la bytes apart) into dst as packRows4 lays out 4 rows */
function packColumns4(a: usize, la: usize, k: i32, dst: usize): void {
  for (let p: i32 = 0; p < k; p++) v128.store(dst + (<usize>p << 4), v128.load(a + <usize>p * la));
}

/** groups x 8 columns of B from b (k rows, lb bytes apart) into pk: group q's row p at pk + q gs + 32 p */
function packPanel(b: usize, lb: usize, k: i32, groups: i32, pk: usize, gs: usize): void {
  for (let p: i32 = 0; p < k; p++) {
    const src = b + <usize>p * lb;
    let dst = pk + (<usize>p << 5);
    for (let q: i32 = 0; q < groups; q++) {
      v128.store(dst, v128.load(src + (<usize>q << 5)));
      v128.store(dst, v128.load(src + (<usize>q << 5), 16), 16);
      dst += gs;
    }
  }
}

/** columns [j, j1) of one row (its values ap bytes apart) */
function tail(a: usize, ap: usize, b: usize, lb: usize, c: usize, j: i32, j1: i32, k: i32, acc: i32): void {
  for (; j + 4 <= j1; j += 4) tile1x4(a, ap, b + (<usize>j << 2), lb, c + (<usize>j << 2), k, acc);
  for (; j < j1; j++) dot1(a, ap, b + (<usize>j << 2), lb, c + (<usize>j << 2), k, acc);
}

/** dst (cols x rows) = srcᵀ, src rows x cols; strides in floats */
// @ts-ignore: decorator
@inline function tile4(s0: usize, sRow: usize, dj: usize, dRow: usize): void {
  // a 4 x 4 tile transposed in registers: two rounds of lane shuffles
  const a = v128.load(s0);
  const b = v128.load(s0 + sRow);
  const c = v128.load(s0 + 2 * sRow);
  const d = v128.load(s0 + 3 * sRow);
  const t0 = i8x16.shuffle(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23); // a0 b0 a1 b1
  const t1 = i8x16.shuffle(a, b, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31); // a2 b2 a3 b3
  const t2 = i8x16.shuffle(c, d, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23); // c0 d0 c1 d1
  const t3 = i8x16.shuffle(c, d, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31); // c2 d2 c3 d3
  v128.store(dj, i8x16.shuffle(t0, t2, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23));
  v128.store(dj + dRow, i8x16.shuffle(t0, t2, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31));
  v128.store(dj + 2 * dRow, i8x16.shuffle(t1, t3, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23));
  v128.store(dj + 3 * dRow, i8x16.shuffle(t1, t3, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31));
}

export function transpose(dst: usize, ldd: i32, src: usize, lds: i32, rows: i32, cols: i32): void {
  // strips of 8 rows (then one of 4), 4 x 4 tiles in registers (tile4), the two tiles of a strip's 4
  // columns written side by side (32 bytes of each destination row); a strip's last cols % 4 columns
  // and the last rows % 4 rows element by element (a data move: the same bits)
  const r8 = rows & ~7;
  const r4 = rows & ~3;
  const c4 = cols & ~3;
  const sRow = <usize>lds << 2;
  const dRow = <usize>ldd << 2;
  for (let i0: i32 = 0; i0 < r4; i0 += i0 < r8 ? 8 : 4) {
    const s0 = src + <usize>i0 * sRow;
    const d0 = dst + (<usize>i0 << 2);
    const two = i0 < r8;
    for (let j: i32 = 0; j < c4; j += 4) {
      const dj = d0 + <usize>j * dRow;
      tile4(s0 + (<usize>j << 2), sRow, dj, dRow);
      if (two) tile4(s0 + 4 * sRow + (<usize>j << 2), sRow, dj + 16, dRow);
    }
    for (let i = i0; i < i0 + (two ? 8 : 4); i++)
      for (let j = c4; j < cols; j++) store<f32>(dst + ((<usize>j * ldd + i) << 2), load<f32>(src + ((<usize>i * lds + j) << 2)));
  }
  for (let i = r4; i < rows; i++)
    for (let j: i32 = 0; j < cols; j++) store<f32>(dst + ((<usize>j * ldd + i) << 2), load<f32>(src + ((<usize>i * lds + j) << 2)));
}

/**
 * One chunk of a threaded product (src/train/gemm.ts): rows [chunk * r, (chunk + 1) * r) of C for the
 * job's parameters (i32 at job): a, lda, b, ldb, c, ldc, m, k, n, acc, r, (11: kind 0), 12: A read
 * transposed (gemmT). Each row is computed whole by one thread, in the same order of operations as gemm:
 * the bytes do not depend on the thread count.
 */
export function runChunk(job: usize, chunk: i32, thread: i32): void {
  const kind = load<i32>(job + 44);
  if (kind == 5 || kind == 6) {
    // the thread's scratch (words 14, 15), as the products below take it
    const pkFloats = load<i32>(job + 60);
    const pk = <usize>load<u32>(job + 56) + ((<usize>thread * <usize>pkFloats) << 2);
    if (kind == 5) attentionForwardChunk(job, chunk, pk, pkFloats);
    else attentionBackwardChunk(job, chunk, pk, pkFloats);
    return;
  }
  if (kind != 0) {
    elementwiseChunk(job, kind, chunk);
    return;
  }
  const r = load<i32>(job + 40);
  const i0 = chunk * r;
  const i1 = min(i0 + r, load<i32>(job + 24));
  if (i0 >= i1) return;
  // each thread's packing scratch: word 14 the first one's address (0: none), word 15 floats per thread
  const pkFloats = load<i32>(job + 60);
  const pk0 = <usize>load<u32>(job + 56);
  const pk = pk0 ? pk0 + ((<usize>thread * <usize>pkFloats) << 2) : 0;
  gemmCore(<usize>load<u32>(job), load<i32>(job + 4), load<i32>(job + 48), <usize>load<u32>(job + 8), load<i32>(job + 12), <usize>load<u32>(job + 16), load<i32>(job + 20), i0, i1, load<i32>(job + 28), load<i32>(job + 32), load<i32>(job + 36), pk, pkFloats);
}

// ---------------------------------------------------------------------------------------------------
// AutoRound's block objective (src/pipeline/block-round.ts): one signed-gradient step of every rounding
// offset. Scalar reference: signStepRef in src/train/gemm.ts (bit for bit: the same f64 operations).

// @ts-ignore: decorator
@inline function signStepOne(g: usize, lo: usize, hi: usize, t: usize, v: usize, ch: usize, values: usize, e: i32, step: f64, tr: usize, rows: i32, cols: i32): void {
  const o = <usize>e << 2;
  const ge = <f64>load<f32>(g + o);
  const h = load<f32>(hi + o);
  const l = load<f32>(lo + o);
  if (ge == 0 || h == l) return;
  const sg: f64 = ge > 0 ? 1 : ge < 0 ? -1 : ge; // Math.sign (NaN stays NaN)
  let vv = <f64>load<f32>(v + o) - step * sg;
  vv = vv > 0.5 ? 0.5 : vv < -0.5 ? -0.5 : vv;
  store<f32>(v + o, <f32>vv);
  const c: u8 = <f64>load<f32>(t + o) + vv >= 0.5 ? 1 : 0;
  if (c == load<u8>(ch + <usize>e)) return;
  store<u8>(ch + <usize>e, c);
  const q = c ? h : l;
  store<f32>(values + o, q);
  if (tr) {
    const r = e / cols;
    store<f32>(tr + ((<usize>(e - r * cols) * <usize>rows + <usize>r) << 2), q);
  }
}

/**
 * Elements 0..n: v -= step sign(g), clamped to [-0.5, 0.5] (f64, stored f32), skipping g = 0 and one-level
 * elements (hi = lo); an element whose choice t + v >= 0.5 (ch) changes takes its level (hi or lo) in values
 * and, with tr != 0, in the transpose tr (rows x cols of values, transposed). Four elements at a time in f64
 * lanes; a group where a choice changes or a gradient is NaN runs element by element (signStepOne).
 */
export function signStep(g: usize, lo: usize, hi: usize, t: usize, v: usize, ch: usize, values: usize, n: i32, step: f64, tr: usize, rows: i32, cols: i32): void {
  signStepRange(g, lo, hi, t, v, ch, values, 0, n, step, tr, rows, cols);
}

/** signStep on elements e0..n (every element's step is its own: ranges on other threads give the same bytes) */
function signStepRange(g: usize, lo: usize, hi: usize, t: usize, v: usize, ch: usize, values: usize, e0: i32, n: i32, step: f64, tr: usize, rows: i32, cols: i32): void {
  const sp = f64x2.splat(step);
  const sn = f64x2.splat(-step);
  let e = e0;
  for (; e + 4 <= n; e += 4) {
    const o = <usize>e << 2;
    const g4 = v128.load(g + o);
    const live = v128.and(f32x4.ne(g4, f32x4.splat(0)), f32x4.ne(v128.load(hi + o), v128.load(lo + o)));
    const gl = f64x2.promote_low_f32x4(g4);
    const gh = f64x2.promote_low_f32x4(hiHalf(g4));
    const v4 = v128.load(v + o);
    const vl = stepHalf(f64x2.promote_low_f32x4(v4), gl, sp, sn);
    const vh = stepHalf(f64x2.promote_low_f32x4(hiHalf(v4)), gh, sp, sn);
    const t4 = v128.load(t + o);
    const nl = choiceHalf(f64x2.promote_low_f32x4(t4), vl);
    const nh = choiceHalf(f64x2.promote_low_f32x4(hiHalf(t4)), vh);
    const n4 = mask4(nl, nh);
    const cm = chosen4(ch + <usize>e);
    const odd = v128.or(v128.and(v128.xor(n4, cm), live), f32x4.ne(g4, g4));
    if (v128.any_true(odd)) {
      for (let i = e; i < e + 4; i++) signStepOne(g, lo, hi, t, v, ch, values, i, step, tr, rows, cols);
      continue;
    }
    const vn = i8x16.shuffle(f32x4.demote_f64x2_zero(vl), f32x4.demote_f64x2_zero(vh), 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    v128.store(v + o, v128.bitselect(vn, v4, live));
  }
  for (; e < n; e++) signStepOne(g, lo, hi, t, v, ch, values, e, step, tr, rows, cols);
}

// ---------------------------------------------------------------------------------------------------
// The training layer's elementwise parts (src/train/llama-grad.ts; the scalar references, run by the
// reference backends, are src/train/gemm.ts' siluForwardRef, siluBackwardRef and softmaxRowsRef): SiLU
// forward and backward, attention's causal softmax.
// Bit for bit the TypeScript: the same f64 operations in the same order, each result rounded to f32 where
// the TypeScript stores it, and exp is fdlibm's (expFd below), which is what V8's Math.exp computes.

const LN2_HI: f64 = 6.93147180369123816490e-01;
const LN2_LO: f64 = 1.90821492927058770002e-10;
const INV_LN2: f64 = 1.44269504088896338700e+00;
const EP1: f64 = 1.66666666666666019037e-01;
const EP2: f64 = -2.77777777770155933842e-03;
const EP3: f64 = 6.61375632143793436117e-05;
const EP4: f64 = -1.65339022054652515390e-06;
const EP5: f64 = 4.13813679705723846039e-08;
const O_THRESHOLD: f64 = 7.09782712893383973096e+02;
const U_THRESHOLD: f64 = -7.45133219101941108420e+02;
const TWO_M1000: f64 = 9.33263618503218878990e-302;

/**
 * e^x as fdlibm's e_exp.c computes it (argument reduction x = k ln2 + r with ln2 split in two, a degree-5
 * rational approximation on [-ln2/2, ln2/2], k added to the exponent): every step an IEEE f64 operation,
 * so the result is the same bits as any other faithful port, V8's Math.exp included (the agreement test
 * compares them on millions of arguments).
 */
// @ts-ignore: decorator
@inline function expFd(x: f64): f64 {
  const bits = reinterpret<u64>(x);
  let hx = <u32>(bits >> 32);
  const xsb = hx >> 31;
  hx &= 0x7fffffff;
  let hi: f64 = 0, lo: f64 = 0;
  let k: i32 = 0;
  if (hx >= 0x40862e42) {
    if (hx >= 0x7ff00000) {
      if (((hx & 0xfffff) | <u32>bits) != 0) return x + x; // NaN
      return xsb == 0 ? x : 0; // exp(+-inf) = inf, 0
    }
    if (x > O_THRESHOLD) return Infinity;
    if (x < U_THRESHOLD) return 0;
  }
  if (hx > 0x3fd62e42) {
    // |x| > ln2 / 2
    if (hx < 0x3ff0a2b2) {
      // and < 1.5 ln2
      hi = xsb ? x + LN2_HI : x - LN2_HI;
      lo = xsb ? -LN2_LO : LN2_LO;
      k = xsb ? -1 : 1;
    } else {
      k = <i32>(INV_LN2 * x + (xsb ? -0.5 : 0.5));
      const t = <f64>k;
      hi = x - t * LN2_HI; // exact
      lo = t * LN2_LO;
    }
    x = hi - lo;
  } else if (hx < 0x3e300000) {
    return 1 + x; // |x| < 2^-28
  }
  const t = x * x;
  const c = x - t * (EP1 + t * (EP2 + t * (EP3 + t * (EP4 + t * EP5))));
  if (k == 0) return 1 - ((x * c) / (c - 2.0) - x);
  const y = 1 - ((lo - (x * c) / (2.0 - c)) - hi);
  if (k >= -1021) return reinterpret<f64>(reinterpret<u64>(y) + (<u64>(<i64>k) << 52));
  return reinterpret<f64>(reinterpret<u64>(y) + (<u64>(<i64>(k + 1000)) << 52)) * TWO_M1000;
}

/**
 * expFd on two f64 lanes, bit for bit: the same IEEE f64 operations per lane, the paths chosen by masks.
 * |x| < 2^-28: 1 + x. Otherwise hi, lo, k of the path (|x| <= ln2 / 2: hi = x, lo = 0, k = 0; < 1.5 ln2:
 * x -+ LN2_HI, +-LN2_LO, +-1; else k = trunc(x / ln2 +- 0.5), x - k LN2_HI, k LN2_LO), r = hi - lo, the
 * rational approximation c, and y = 1 - ((lo - (r c) / (2 - c)) - hi) scaled by 2^k. For k = 0 fdlibm
 * writes 1 - ((r c) / (c - 2) - r): the same value, as (r c) / (c - 2) = -((r c) / (2 - c)) exactly, and
 * 0 - q differs from -q only for q = 0, where both give -r (r != 0 there). Lanes fdlibm treats apart
 * (|x| >= 709.78, inf, NaN, or k < -1021: a subnormal result) take expFd itself.
 */
// @ts-ignore: decorator
@inline function expFd2(x: v128): v128 {
  const hx = v128.and(i64x2.shr_u(x, 32), i64x2.splat(0x7fffffff));
  const neg = i64x2.shr_s(x, 63); // the sign bit: all ones for x < 0 (and -0)
  const big = i64x2.gt_s(hx, i64x2.splat(0x3ff0a2b1)); // |x| >= 1.5 ln2
  const mid = i64x2.gt_s(hx, i64x2.splat(0x3fd62e42)); // |x| > ln2 / 2
  // k = trunc(x / ln2 +- 0.5) on the big lanes, +-1 on the middle ones, 0 below
  const kBig = f64x2.convert_low_i32x4_s(i32x4.trunc_sat_f64x2_s_zero(f64x2.add(f64x2.mul(f64x2.splat(INV_LN2), x), v128.bitselect(f64x2.splat(-0.5), f64x2.splat(0.5), neg))));
  const kMid = v128.bitselect(f64x2.splat(-1), f64x2.splat(1), neg);
  const k = v128.and(v128.bitselect(kBig, kMid, big), mid);
  const hiBig = f64x2.sub(x, f64x2.mul(kBig, f64x2.splat(LN2_HI)));
  const hiMid = v128.bitselect(f64x2.add(x, f64x2.splat(LN2_HI)), f64x2.sub(x, f64x2.splat(LN2_HI)), neg);
  const hi = v128.bitselect(v128.bitselect(hiBig, hiMid, big), x, mid);
  const loBig = f64x2.mul(kBig, f64x2.splat(LN2_LO));
  const loMid = v128.bitselect(f64x2.splat(-LN2_LO), f64x2.splat(LN2_LO), neg);
  const lo = v128.and(v128.bitselect(loBig, loMid, big), mid);
  const r = f64x2.sub(hi, lo);
  const t = f64x2.mul(r, r);
  let p = f64x2.add(f64x2.splat(EP4), f64x2.mul(t, f64x2.splat(EP5)));
  p = f64x2.add(f64x2.splat(EP3), f64x2.mul(t, p));
  p = f64x2.add(f64x2.splat(EP2), f64x2.mul(t, p));
  p = f64x2.add(f64x2.splat(EP1), f64x2.mul(t, p));
  const c = f64x2.sub(r, f64x2.mul(t, p));
  const q = f64x2.div(f64x2.mul(r, c), f64x2.sub(f64x2.splat(2.0), c));
  const y = f64x2.sub(f64x2.splat(1), f64x2.sub(f64x2.sub(lo, q), hi));
  const scaled = i64x2.add(y, i64x2.shl(i64x2.extend_low_i32x4_s(i32x4.trunc_sat_f64x2_s_zero(k)), 52));
  let out = v128.bitselect(f64x2.add(f64x2.splat(1), x), scaled, i64x2.lt_s(hx, i64x2.splat(0x3e300000)));
  // fdlibm's own lanes: huge, inf, NaN, or a subnormal result
  const odd = v128.or(i64x2.gt_s(hx, i64x2.splat(0x40862e41)), f64x2.lt(k, f64x2.splat(-1021)));
  if (v128.any_true(odd)) {
    if (i64x2.extract_lane(odd, 0)) out = f64x2.replace_lane(out, 0, expFd(f64x2.extract_lane(x, 0)));
    if (i64x2.extract_lane(odd, 1)) out = f64x2.replace_lane(out, 1, expFd(f64x2.extract_lane(x, 1)));
  }
  return out;
}

/** expFd2 of (a, b) for the agreement test: lane 0 */
export function exp64x2(a: f64, b: f64): f64 {
  return f64x2.extract_lane(expFd2(f64x2.replace_lane(f64x2.splat(a), 1, b)), 0);
}

/** expFd2 of (a, b) for the agreement test: lane 1 */
export function exp64x2b(a: f64, b: f64): f64 {
  return f64x2.extract_lane(expFd2(f64x2.replace_lane(f64x2.splat(a), 1, b)), 1);
}

/** expFd for the agreement test (src/train/gemm.ts: wasmExp) */
export function exp64(x: f64): f64 {
  return expFd(x);
}

/** h[i] = silu(g[i]) u[i] = (g / (1 + e^-g)) u for i in [i0, i1) (f64, stored f32) */
export function siluForward(g: usize, u: usize, h: usize, i0: i32, i1: i32): void {
  // two elements at a time in f64 lanes (the same operations per element), then the odd one
  let i = i0;
  for (; i + 2 <= i1; i += 2) {
    const o = <usize>i << 2;
    const gv = f64x2.promote_low_f32x4(v128.load64_zero(g + o));
    const e = expFd2(f64x2.neg(gv));
    const r = f64x2.mul(f64x2.div(gv, f64x2.add(f64x2.splat(1), e)), f64x2.promote_low_f32x4(v128.load64_zero(u + o)));
    v128.store64_lane(h + o, f32x4.demote_f64x2_zero(r), 0);
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const gv = <f64>load<f32>(g + o);
    store<f32>(h + o, <f32>((gv / (1 + expFd(-gv))) * <f64>load<f32>(u + o)));
  }
}

/** dg = dh u s (1 + g (1 - s)), du = dh g s with s = 1 / (1 + e^-g), for i in [i0, i1) */
export function siluBackward(g: usize, u: usize, dh: usize, dg: usize, du: usize, i0: i32, i1: i32): void {
  // two elements at a time in f64 lanes (the same operations per element), then the odd one
  let i = i0;
  const one = f64x2.splat(1);
  for (; i + 2 <= i1; i += 2) {
    const o = <usize>i << 2;
    const gv = f64x2.promote_low_f32x4(v128.load64_zero(g + o));
    const s = f64x2.div(one, f64x2.add(one, expFd2(f64x2.neg(gv))));
    const d = f64x2.promote_low_f32x4(v128.load64_zero(dh + o));
    const a = f64x2.mul(f64x2.mul(f64x2.mul(d, f64x2.promote_low_f32x4(v128.load64_zero(u + o))), s), f64x2.add(one, f64x2.mul(gv, f64x2.sub(one, s))));
    v128.store64_lane(dg + o, f32x4.demote_f64x2_zero(a), 0);
    v128.store64_lane(du + o, f32x4.demote_f64x2_zero(f64x2.mul(f64x2.mul(d, gv), s)), 0);
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const gv = <f64>load<f32>(g + o);
    const s = 1 / (1 + expFd(-gv));
    const d = <f64>load<f32>(dh + o);
    store<f32>(dg + o, <f32>(d * <f64>load<f32>(u + o) * s * (1 + gv * (1 - s))));
    store<f32>(du + o, <f32>(d * gv * s));
  }
}

/**
 * Rows [t0, t1) of one head's T x T scores at p: row t scaled (z = P scale, stored f32; max over the
 * unrounded z), P = e^(P - max) (sum of the unrounded exponentials), P *= 1 / sum on 0..t, 0 past t.
 */
export function softmaxRows(p: usize, T: i32, t0: i32, t1: i32, scale: f64): void {
  for (let t = t0; t < t1; t++) {
    const r = p + ((<usize>t * <usize>T) << 2);
    // z two at a time, each lane keeping its larger z (z > max: NaN never taken), then the two lanes: the
    // largest z as the loop one by one finds it (a zero's sign aside, which no e^(z - max) sees)
    const sc = f64x2.splat(scale);
    let mx = f64x2.splat(-Infinity);
    let s0 = 0;
    for (; s0 + 1 <= t; s0 += 2) {
      const a = r + (<usize>s0 << 2);
      const z = f64x2.mul(f64x2.promote_low_f32x4(v128.load64_zero(a)), sc);
      v128.store64_lane(a, f32x4.demote_f64x2_zero(z), 0);
      mx = v128.bitselect(z, mx, f64x2.gt(z, mx));
    }
    let max: f64 = f64x2.extract_lane(mx, 0);
    const m1 = f64x2.extract_lane(mx, 1);
    if (m1 > max) max = m1;
    for (; s0 <= t; s0++) {
      const a = r + (<usize>s0 << 2);
      const z = <f64>load<f32>(a) * scale;
      store<f32>(a, <f32>z);
      if (z > max) max = z;
    }
    let sum: f64 = 0;
    // the exponentials two at a time (expFd2), summed one after the other in order
    const mv = f64x2.splat(max);
    let s = 0;
    for (; s + 1 <= t; s += 2) {
      const a = r + (<usize>s << 2);
      const e = expFd2(f64x2.sub(f64x2.promote_low_f32x4(v128.load64_zero(a)), mv));
      v128.store64_lane(a, f32x4.demote_f64x2_zero(e), 0);
      sum += f64x2.extract_lane(e, 0);
      sum += f64x2.extract_lane(e, 1);
    }
    for (; s <= t; s++) {
      const a = r + (<usize>s << 2);
      const e = expFd(<f64>load<f32>(a) - max);
      store<f32>(a, <f32>e);
      sum += e;
    }
    const inv = 1 / sum;
    const iv = f64x2.splat(inv);
    s = 0;
    for (; s + 1 <= t; s += 2) {
      const a = r + (<usize>s << 2);
      v128.store64_lane(a, f32x4.demote_f64x2_zero(f64x2.mul(f64x2.promote_low_f32x4(v128.load64_zero(a)), iv)), 0);
    }
    for (; s <= t; s++) {
      const a = r + (<usize>s << 2);
      store<f32>(a, <f32>(<f64>load<f32>(a) * inv));
    }
    for (let s = t + 1; s < T; s++) store<f32>(r + (<usize>s << 2), 0);
  }
}

/**
 * A chunk of an elementwise job (kind at word 11): words 0..4 pointers, 5 n (elements or score blocks),
 * 6 elements (or rows) per chunk, 7 T, f64 at byte 48 the softmax's scale.
 *   kind 1: siluForward(g, u, h)     kind 2: siluBackward(g, u, dh, dg, du)
 *   kind 3: softmaxRows over n blocks of T x T at word 0, chunk = block * (T / rows) + row block
 *   kind 4: signStep: words 0..7 g, lo, hi, t, v, ch, values, tr; 8 n, 9 elements per chunk, 10 rows,
 *           16 cols; f64 at byte 48 the step
 */
function elementwiseChunk(job: usize, kind: i32, chunk: i32): void {
  if (kind == 7) {
    rowsChunk(job, chunk);
    return;
  }
  if (kind == 4) {
    const n = load<i32>(job + 32);
    const e0 = chunk * load<i32>(job + 36);
    const e1 = min(n, e0 + load<i32>(job + 36));
    if (e0 >= e1) return;
    signStepRange(<usize>load<u32>(job), <usize>load<u32>(job + 4), <usize>load<u32>(job + 8), <usize>load<u32>(job + 12), <usize>load<u32>(job + 16), <usize>load<u32>(job + 20), <usize>load<u32>(job + 24), e0, e1, load<f64>(job + 48), <usize>load<u32>(job + 28), load<i32>(job + 40), load<i32>(job + 64));
    return;
  }
  const per = load<i32>(job + 24);
  const n = load<i32>(job + 20);
  if (kind == 3) {
    const T = load<i32>(job + 28);
    const perBlock = (T + per - 1) / per;
    const b = chunk / perBlock;
    const t0 = (chunk - b * perBlock) * per;
    if (b >= n) return;
    softmaxRows(<usize>load<u32>(job) + ((<usize>b * <usize>T * <usize>T) << 2), T, t0, min(T, t0 + per), load<f64>(job + 48));
    return;
  }
  const i0 = chunk * per;
  const i1 = min(n, i0 + per);
  if (i0 >= i1) return;
  if (kind == 1) siluForward(<usize>load<u32>(job), <usize>load<u32>(job + 4), <usize>load<u32>(job + 8), i0, i1);
  else if (kind == 2) siluBackward(<usize>load<u32>(job), <usize>load<u32>(job + 4), <usize>load<u32>(job + 8), <usize>load<u32>(job + 12), <usize>load<u32>(job + 16), i0, i1);
}

// ---------------------------------------------------------------------------------------------------
// Causal attention of the training layer (src/train/llama-grad.ts attentionForward / attentionBackward:
// the TypeScript path, the spec), one head (forward) or one group of heads sharing a kv head (backward)
// per chunk, all of it on the thread that claimed the chunk: the same products (gemmCore, in the same
// causal row blocks), softmax and dS as the TypeScript path's calls, so the same bits. The heads of a
// kv group accumulate dk and dv in their order within one chunk, as the TypeScript loop does.
//
// Job words: 0 q, 1 k, 2 v, 3 p (every head's T x T probabilities), 4 o (forward) or dO (backward),
// 5 T, 6 head size, 7 q row (nHeads x hd), 8 kv row, 9 nHeads, 10 heads per kv head, 11 kind (5, 6),
// f64 at byte 48 the scale, 14/15 the threads' scratch, 16 causal rows per block, 17 dq, 18 dk, 19 dv.
// Chunk: batch row b x nHeads + h (forward), b x nKvHeads + kv head (backward).
// Scratch of the thread: a head's K or V transposed (hd x T), then (backward) dS (T x T), then the
// products' packing scratch (the rest: at least 68 T floats, the caller checks).

/** row block [r0, r1) of C (+)= A B with the thread's scratch */
// @ts-ignore: decorator
@inline function blockProduct(a: usize, lda: i32, aT: i32, b: usize, ldb: i32, c: usize, ldc: i32, m: i32, k: i32, n: i32, acc: i32, pk: usize, pkFloats: i32): void {
  gemmCore(a, lda, aT, b, ldb, c, ldc, 0, m, k, n, acc, pk, pkFloats);
}

function attentionForwardChunk(job: usize, chunk: i32, scratch: usize, scratchFloats: i32): void {
  const T = load<i32>(job + 20), hd = load<i32>(job + 24), qDim = load<i32>(job + 28), kvDim = load<i32>(job + 32);
  const nHeads = load<i32>(job + 36), group = load<i32>(job + 40), rowsPer = load<i32>(job + 64);
  const scale = load<f64>(job + 48);
  const b = chunk / nHeads, h = chunk - b * nHeads, kvh = h / group;
  const row0 = <usize>b * <usize>T;
  const q = <usize>load<u32>(job), k = <usize>load<u32>(job + 4), v = <usize>load<u32>(job + 8);
  const p = <usize>load<u32>(job + 12) + ((<usize>chunk * <usize>T * <usize>T) << 2);
  const o = <usize>load<u32>(job + 16);
  const kt = scratch;
  const pk = scratch + ((<usize>hd * <usize>T) << 2), pkFloats = scratchFloats - hd * T;
  // S = q_h k_hᵀ, causal: rows r0..r1 up to column r1
  transpose(kt, T, k + ((row0 * <usize>kvDim + <usize>kvh * <usize>hd) << 2), kvDim, T, hd);
  for (let r0: i32 = 0; r0 < T; r0 += rowsPer) {
    const r1 = min(T, r0 + rowsPer);
    blockProduct(q + (((row0 + <usize>r0) * <usize>qDim + <usize>h * <usize>hd) << 2), qDim, 0, kt, T, p + ((<usize>r0 * <usize>T) << 2), T, r1 - r0, hd, r1, 0, pk, pkFloats);
  }
  softmaxRows(p, T, 0, T, scale);
  // o_h = P v_h
  for (let r0: i32 = 0; r0 < T; r0 += rowsPer) {
    const r1 = min(T, r0 + rowsPer);
    blockProduct(p + ((<usize>r0 * <usize>T) << 2), T, 0, v + ((row0 * <usize>kvDim + <usize>kvh * <usize>hd) << 2), kvDim, o + (((row0 + <usize>r0) * <usize>qDim + <usize>h * <usize>hd) << 2), qDim, r1 - r0, r1, hd, 0, pk, pkFloats);
  }
}

function attentionBackwardChunk(job: usize, chunk: i32, scratch: usize, scratchFloats: i32): void {
  const T = load<i32>(job + 20), hd = load<i32>(job + 24), qDim = load<i32>(job + 28), kvDim = load<i32>(job + 32);
  const nHeads = load<i32>(job + 36), group = load<i32>(job + 40), rowsPer = load<i32>(job + 64);
  const scale = load<f64>(job + 48);
  const nKv = nHeads / group;
  const b = chunk / nKv, kvh = chunk - b * nKv;
  const row0 = <usize>b * <usize>T;
  const q = <usize>load<u32>(job), k = <usize>load<u32>(job + 4), v = <usize>load<u32>(job + 8);
  const dO = <usize>load<u32>(job + 16), dq = <usize>load<u32>(job + 68), dk = <usize>load<u32>(job + 72), dv = <usize>load<u32>(job + 76);
  const tr = scratch;
  const dp = scratch + ((<usize>hd * <usize>T) << 2);
  const pk = dp + ((<usize>T * <usize>T) << 2), pkFloats = scratchFloats - hd * T - T * T;
  const kvAt = (row0 * <usize>kvDim + <usize>kvh * <usize>hd) << 2;
  transpose(tr, T, v + kvAt, kvDim, T, hd);
  for (let h = kvh * group; h < (kvh + 1) * group; h++) {
    const P = <usize>load<u32>(job + 12) + ((<usize>(b * nHeads + h) * <usize>T * <usize>T) << 2);
    const qh = <usize>h * <usize>hd;
    // dP = dO_h v_hᵀ, causal: rows r0..r1 up to column r1
    for (let r0: i32 = 0; r0 < T; r0 += rowsPer) {
      const r1 = min(T, r0 + rowsPer);
      blockProduct(dO + (((row0 + <usize>r0) * <usize>qDim + qh) << 2), qDim, 0, tr, T, dp + ((<usize>r0 * <usize>T) << 2), T, r1 - r0, hd, r1, 0, pk, pkFloats);
    }
    // dv_h += Pᵀ dO_h: rows r0..r1 of Pᵀ sum from position r0
    for (let r0: i32 = 0; r0 < T; r0 += rowsPer) {
      const r1 = min(T, r0 + rowsPer);
      blockProduct(P + ((<usize>r0 * <usize>T + <usize>r0) << 2), T, 1, dO + (((row0 + <usize>r0) * <usize>qDim + qh) << 2), qDim, dv + (((row0 + <usize>r0) * <usize>kvDim + <usize>kvh * <usize>hd) << 2), kvDim, r1 - r0, T - r0, hd, 1, pk, pkFloats);
    }
    // dS = P * (dP - sum_s P dP) * scale (into dp), in f64 as the TypeScript
    for (let t: i32 = 0; t < T; t++) {
      const r = (<usize>t * <usize>T) << 2;
      let dot: f64 = 0;
      for (let s: i32 = 0; s <= t; s++) {
        const e = r + (<usize>s << 2);
        dot += <f64>load<f32>(P + e) * <f64>load<f32>(dp + e);
      }
      for (let s: i32 = 0; s <= t; s++) {
        const e = r + (<usize>s << 2);
        store<f32>(dp + e, <f32>(<f64>load<f32>(P + e) * (<f64>load<f32>(dp + e) - dot) * scale));
      }
      for (let s: i32 = t + 1; s < T; s++) store<f32>(dp + r + (<usize>s << 2), 0);
    }
    // dq_h = dS k_h ; dk_h += dSᵀ q_h (causal as o_h and dv_h)
    for (let r0: i32 = 0; r0 < T; r0 += rowsPer) {
      const r1 = min(T, r0 + rowsPer);
      blockProduct(dp + ((<usize>r0 * <usize>T) << 2), T, 0, k + kvAt, kvDim, dq + (((row0 + <usize>r0) * <usize>qDim + qh) << 2), qDim, r1 - r0, r1, hd, 0, pk, pkFloats);
    }
    for (let r0: i32 = 0; r0 < T; r0 += rowsPer) {
      const r1 = min(T, r0 + rowsPer);
      blockProduct(dp + ((<usize>r0 * <usize>T + <usize>r0) << 2), T, 1, q + (((row0 + <usize>r0) * <usize>qDim + qh) << 2), qDim, dk + (((row0 + <usize>r0) * <usize>kvDim + <usize>kvh * <usize>hd) << 2), kvDim, r1 - r0, T - r0, hd, 1, pk, pkFloats);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The training layer's per-token parts (src/train/llama-grad.ts: rmsnormForward, rope and the residual
// adds, which are the references): the same f64 operations per element in the same order, each result
// rounded to f32 where the TypeScript stores it; tokens are independent, so rows on any thread give the
// same bytes.

/**
 * rmsnormForward on tokens [t0, t1) of d values: ss = sum x^2 in order (f64), s = 1 / sqrt(ss / d + eps),
 * r = s (f32), out = x s w (f64, stored f32). Two tokens at a time, one per f64 lane (each its own sum in
 * order), then the odd one.
 */
export function rmsnormRows(out: usize, r: usize, x: usize, w: usize, t0: i32, t1: i32, d: i32, eps: f64): void {
  const row = <usize>d << 2;
  const dd = f64x2.splat(<f64>d);
  const ev = f64x2.splat(eps);
  let t = t0;
  for (; t + 2 <= t1; t += 2) {
    const xa = x + <usize>t * row, xb = xa + row;
    let ss = f64x2.splat(0);
    for (let i = 0; i < d; i++) {
      const o = <usize>i << 2;
      const v = f64x2.promote_low_f32x4(f32x4.replace_lane(f32x4.splat(load<f32>(xa + o)), 1, load<f32>(xb + o)));
      ss = f64x2.add(ss, f64x2.mul(v, v));
    }
    const sv = f64x2.div(f64x2.splat(1), f64x2.sqrt(f64x2.add(f64x2.div(ss, dd), ev)));
    normRow(out + <usize>t * row, r + (<usize>t << 2), xa, w, d, f64x2.extract_lane(sv, 0));
    normRow(out + <usize>(t + 1) * row, r + (<usize>(t + 1) << 2), xb, w, d, f64x2.extract_lane(sv, 1));
  }
  for (; t < t1; t++) {
    const xa = x + <usize>t * row;
    let ss: f64 = 0;
    for (let i = 0; i < d; i++) {
      const v = <f64>load<f32>(xa + (<usize>i << 2));
      ss += v * v;
    }
    normRow(out + <usize>t * row, r + (<usize>t << 2), xa, w, d, 1 / Math.sqrt(ss / <f64>d + eps));
  }
}

/** one token's out = (x s) w (f64, stored f32) and r = s (f32) */
// @ts-ignore: decorator
@inline function normRow(out: usize, r: usize, x: usize, w: usize, d: i32, s: f64): void {
  store<f32>(r, <f32>s);
  const sv = f64x2.splat(s);
  let i = 0;
  for (; i + 4 <= d; i += 4) {
    const o = <usize>i << 2;
    const xv = v128.load(x + o), wv = v128.load(w + o);
    const lo = f64x2.mul(f64x2.mul(f64x2.promote_low_f32x4(xv), sv), f64x2.promote_low_f32x4(wv));
    const hi = f64x2.mul(f64x2.mul(f64x2.promote_low_f32x4(hiHalf(xv)), sv), f64x2.promote_low_f32x4(hiHalf(wv)));
    v128.store(out + o, i8x16.shuffle(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23));
  }
  for (; i < d; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, <f32>(<f64>load<f32>(x + o) * s * <f64>load<f32>(w + o)));
  }
}

/**
 * rope on tokens [t0, t1) (token g at position g % T): in each of `heads` heads of hd values, the pairs
 * (2i, 2i + 1), i < half, rotated: x0 cos - x1 sin, x0 sin + x1 cos with sin = sign * the table's (f64,
 * stored f32); cos, sin: T x half f64. Two pairs at a time (f64 lanes), then the odd one.
 */
export function ropeRows(v: usize, cosT: usize, sinT: usize, t0: i32, t1: i32, T: i32, heads: i32, hd: i32, half: i32, sign: f64): void {
  const row = <usize>(heads * hd) << 2;
  const sg = f64x2.splat(sign);
  for (let g = t0; g < t1; g++) {
    const pos = g % T;
    const cp = cosT + ((<usize>pos * <usize>half) << 3), sp = sinT + ((<usize>pos * <usize>half) << 3);
    for (let h = 0; h < heads; h++) {
      const base = v + <usize>g * row + ((<usize>h * <usize>hd) << 2);
      let i = 0;
      for (; i + 2 <= half; i += 2) {
        const a = base + (<usize>i << 3);
        const x4 = v128.load(a); // x0 x1 (pair i), x0 x1 (pair i + 1)
        const xs = i8x16.shuffle(x4, x4, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15); // x0 x0' x1 x1'
        const x0 = f64x2.promote_low_f32x4(xs), x1 = f64x2.promote_low_f32x4(hiHalf(xs));
        const c = v128.load(cp + (<usize>i << 3));
        const sn = f64x2.mul(sg, v128.load(sp + (<usize>i << 3)));
        const r0 = f32x4.demote_f64x2_zero(f64x2.sub(f64x2.mul(x0, c), f64x2.mul(x1, sn)));
        const r1 = f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(x0, sn), f64x2.mul(x1, c)));
        v128.store(a, i8x16.shuffle(r0, r1, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23));
      }
      for (; i < half; i++) {
        const a = base + (<usize>i << 3);
        const cs = load<f64>(cp + (<usize>i << 3));
        const sn = sign * load<f64>(sp + (<usize>i << 3));
        const x0 = <f64>load<f32>(a), x1 = <f64>load<f32>(a + 4);
        store<f32>(a, <f32>(x0 * cs - x1 * sn));
        store<f32>(a + 4, <f32>(x0 * sn + x1 * cs));
      }
    }
  }
}

/** a[i] += b[i] for i in [i0, i1) (f32: the f64 sum of two f32 rounded to f32 is their f32 sum) */
export function addRows(a: usize, b: usize, i0: i32, i1: i32): void {
  let i = i0;
  for (; i + 4 <= i1; i += 4) {
    const o = <usize>i << 2;
    v128.store(a + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    store<f32>(a + o, load<f32>(a + o) + load<f32>(b + o));
  }
}

/**
 * A chunk of job kind 7 (the per-token parts on the threads): word 7 the part, 6 tokens (elements for
 * the add) per chunk, 5 the count, f64 at byte 48 eps (rmsnorm) or the sign (rope).
 *   part 0 rmsnormRows: 0 out, 1 r, 2 x, 3 w, 4 d
 *   part 1 ropeRows: 0 v, 1 cos, 2 sin, 3 T, 4 heads, 8 hd, 9 half
 *   part 2 addRows: 0 a, 1 b
 */
function rowsChunk(job: usize, chunk: i32): void {
  const per = load<i32>(job + 24);
  const n = load<i32>(job + 20);
  const i0 = chunk * per;
  const i1 = min(n, i0 + per);
  if (i0 >= i1) return;
  const part = load<i32>(job + 28);
  const p0 = <usize>load<u32>(job), p1 = <usize>load<u32>(job + 4), p2 = <usize>load<u32>(job + 8);
  if (part == 0) rmsnormRows(p0, p1, p2, <usize>load<u32>(job + 12), i0, i1, load<i32>(job + 16), load<f64>(job + 48));
  else if (part == 1) ropeRows(p0, p1, p2, i0, i1, load<i32>(job + 12), load<i32>(job + 16), load<i32>(job + 32), load<i32>(job + 36), load<f64>(job + 48));
  else addRows(p0, p1, i0, i1);
}
