// build: shared-memory
// Kernels of the training engine (src/train/gemm.ts holds the TypeScript side and the scalar reference).
//
//   C[i][j] (+)= sum_k A[i][k] * B[k][j]      A: m x k (row stride lda floats), B: k x n (ldb), C: m x n (ldc)
//
// Every product of training is this one kernel on row-major f32 arrays (transposed operands are made
// explicit with `transpose`, O(size) against the O(m k n) product): y = x Wᵀ, dx = dy W, dW = dyᵀ x, and
// attention's S = Q Kᵀ, O = P V, dP = dO Vᵀ, dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q.
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
    let s = f32x4.splat(load<f32>(a + o));
    c00 = fma(s, b0, c00); c01 = fma(s, b1, c01);
    s = f32x4.splat(load<f32>(a1 + o));
    c10 = fma(s, b0, c10); c11 = fma(s, b1, c11);
    s = f32x4.splat(load<f32>(a2 + o));
    c20 = fma(s, b0, c20); c21 = fma(s, b1, c21);
    s = f32x4.splat(load<f32>(a3 + o));
    c30 = fma(s, b0, c30); c31 = fma(s, b1, c31);
    b += ldb;
  }
  put(c, c00, acc); put(c + 16, c01, acc); c += ldc;
  put(c, c10, acc); put(c + 16, c11, acc); c += ldc;
  put(c, c20, acc); put(c + 16, c21, acc); c += ldc;
  put(c, c30, acc); put(c + 16, c31, acc);
}

/** 1 row x 8 columns */
function tile1x8(a: usize, b: usize, ldb: usize, c: usize, k: i32, acc: i32): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0);
  for (let p: i32 = 0; p < k; p++) {
    const s = f32x4.splat(load<f32>(a + (<usize>p << 2)));
    c0 = fma(s, v128.load(b), c0); c1 = fma(s, v128.load(b, 16), c1);
    b += ldb;
  }
  put(c, c0, acc); put(c + 16, c1, acc);
}

/** 1 row x 4 columns */
function tile1x4(a: usize, b: usize, ldb: usize, c: usize, k: i32, acc: i32): void {
  let c0 = f32x4.splat(0);
  for (let p: i32 = 0; p < k; p++) {
    c0 = fma(f32x4.splat(load<f32>(a + (<usize>p << 2))), v128.load(b), c0);
    b += ldb;
  }
  put(c, c0, acc);
}

/** one output (the column tail past a multiple of 4): the same sequential order, in scalar f32 */
function dot1(a: usize, b: usize, ldb: usize, c: usize, k: i32, acc: i32): void {
  let s: f32 = 0;
  for (let p: i32 = 0; p < k; p++) {
    if (ASC_FEATURE_RELAXED_SIMD) s = f32x4.extract_lane(f32x4.relaxed_madd(f32x4.splat(load<f32>(a + (<usize>p << 2))), f32x4.splat(load<f32>(b)), f32x4.splat(s)), 0);
    else s = s + load<f32>(a + (<usize>p << 2)) * load<f32>(b);
    b += ldb;
  }
  store<f32>(c, acc ? load<f32>(c) + s : s);
}

/** C (+)= A B for rows [i0, i1) of C; pointers to element 0, strides in floats */
export function gemm(a: usize, lda: i32, b: usize, ldb: i32, c: usize, ldc: i32, i0: i32, i1: i32, k: i32, n: i32, acc: i32): void {
  const la = <usize>lda << 2, lb = <usize>ldb << 2, lc = <usize>ldc << 2;
  const n8 = n & ~7;
  for (let j0: i32 = 0; j0 < n; j0 += 64) {
    const j1 = min(j0 + 64, n);
    let i = i0;
    for (; i + 4 <= i1; i += 4) {
      let j = j0;
      for (; j + 8 <= j1 && j < n8; j += 8) tile4x8(a + <usize>i * la, la, b + (<usize>j << 2), lb, c + <usize>i * lc + (<usize>j << 2), lc, k, acc);
      for (let r = i; r < i + 4; r++) tail(a + <usize>r * la, b, lb, c + <usize>r * lc, j, j1, k, acc);
    }
    for (; i < i1; i++) {
      let j = j0;
      for (; j + 8 <= j1; j += 8) tile1x8(a + <usize>i * la, b + (<usize>j << 2), lb, c + <usize>i * lc + (<usize>j << 2), k, acc);
      tail(a + <usize>i * la, b, lb, c + <usize>i * lc, j, j1, k, acc);
    }
  }
}

/** columns [j, j1) of one row */
function tail(a: usize, b: usize, lb: usize, c: usize, j: i32, j1: i32, k: i32, acc: i32): void {
  for (; j + 4 <= j1; j += 4) tile1x4(a, b + (<usize>j << 2), lb, c + (<usize>j << 2), k, acc);
  for (; j < j1; j++) dot1(a, b + (<usize>j << 2), lb, c + (<usize>j << 2), k, acc);
}

/** dst (cols x rows) = srcᵀ, src rows x cols; strides in floats */
export function transpose(dst: usize, ldd: i32, src: usize, lds: i32, rows: i32, cols: i32): void {
  // 8 x 8 blocks keep both sides in cache lines
  for (let i0: i32 = 0; i0 < rows; i0 += 8) {
    const i1 = min(i0 + 8, rows);
    for (let j0: i32 = 0; j0 < cols; j0 += 8) {
      const j1 = min(j0 + 8, cols);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) store<f32>(dst + ((<usize>j * ldd + i) << 2), load<f32>(src + ((<usize>i * lds + j) << 2)));
      }
    }
  }
}

/**
 * One chunk of a threaded product (src/train/gemm.ts): rows [chunk * r, (chunk + 1) * r) of C for the
 * job's parameters (i32 at job): a, lda, b, ldb, c, ldc, m, k, n, acc, r. Each row is computed whole by
 * one thread, in the same order of operations as gemm: the bytes do not depend on the thread count.
 */
export function runChunk(job: usize, chunk: i32, thread: i32): void {
  const r = load<i32>(job + 40);
  const i0 = chunk * r;
  const i1 = min(i0 + r, load<i32>(job + 24));
  if (i0 >= i1) return;
  gemm(<usize>load<u32>(job), load<i32>(job + 4), <usize>load<u32>(job + 8), load<i32>(job + 12), <usize>load<u32>(job + 16), load<i32>(job + 20), i0, i1, load<i32>(job + 28), load<i32>(job + 32), load<i32>(job + 36));
}
