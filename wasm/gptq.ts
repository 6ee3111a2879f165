// build: shared-memory
import { CHOL_PANEL, cholDiag, cholPanelRows, cholTrailingRows, trilInverseCols, trilInverseRow, zeroUpperRows } from './_linalg';

// Dense kernels of the calibrated algorithms (GPTQ) and of calibration forward passes, 128-bit SIMD.
// Scalar references and the bounds these kernels are tested against: src/kernels/gptq.ts.
//
//   transposePad  x (rows x cols, f32) -> xt (cols x ld, f32), ld >= rows a multiple of 4, zero padded
//   syrkLower     H (f64, k x k) lower triangle += XT XT^T     (XT: k x ld, f32; H = X^T X)
//   gemmABt       C (f32, m x n) = A B^T                        (A: m x K, B: n x K, f32, K % 4 == 0)
//   lazyUpdate    W[:, i2:k] -= E[:, 0:count] U[i1:i1+count, i2:k]   (f64; GPTQ's block update)
//   columnLoop    GPTQ's column loop inside a lazy block (f64; the same operations in the same order as
//                 the TypeScript loop in src/algos/gptq.ts, so the same bits)
//   cholesky      lower Cholesky factor in place (f64)
//   trilInverse   X = M^-1 for lower-triangular M (f64)
//
// Dot products of f32 rows run 4 lanes wide in f32 (relaxed builds fuse the multiply-add) and are
// summed into f64 once per tile: H entries carry a relative error of about K * 2^-24 of sum |x_i x_j|.
// The f64 kernels use f64x2 lanes with separate multiply and add in both builds.

export function heapBase(): usize {
  return __heap_base;
}

/** Does this build use relaxed SIMD? */
export function relaxed(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

// @ts-ignore: decorator
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

export function transposePad(x: usize, rows: i32, cols: i32, xt: usize, ld: i32): void {
  for (let c = 0; c < cols; c++) {
    const dst = xt + (<usize>c * <usize>ld << 2);
    for (let r = 0; r < rows; r++) store<f32>(dst + (<usize>r << 2), load<f32>(x + ((<usize>r * <usize>cols + <usize>c) << 2)));
    for (let r = rows; r < ld; r++) store<f32>(dst + (<usize>r << 2), 0);
  }
}

/** 4 x 2 tile of dot products of rows a0..a3 with b0, b1 over n floats (n % 4 == 0) */
function tile42(a: usize, lda: usize, b: usize, ldb: usize, n: i32, out: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const a1 = a + lda, a2 = a + 2 * lda, a3 = a + 3 * lda, b1 = b + ldb;
  for (let t: usize = 0; t < <usize>n << 2; t += 16) {
    const x0 = v128.load(b + t);
    const x1 = v128.load(b1 + t);
    const y0 = v128.load(a + t);
    c00 = madd(y0, x0, c00);
    c01 = madd(y0, x1, c01);
    const y1 = v128.load(a1 + t);
    c10 = madd(y1, x0, c10);
    c11 = madd(y1, x1, c11);
    const y2 = v128.load(a2 + t);
    c20 = madd(y2, x0, c20);
    c21 = madd(y2, x1, c21);
    const y3 = v128.load(a3 + t);
    c30 = madd(y3, x0, c30);
    c31 = madd(y3, x1, c31);
  }
  store<f32>(out + 0, hsum(c00));
  store<f32>(out + 4, hsum(c01));
  store<f32>(out + 8, hsum(c10));
  store<f32>(out + 12, hsum(c11));
  store<f32>(out + 16, hsum(c20));
  store<f32>(out + 20, hsum(c21));
  store<f32>(out + 24, hsum(c30));
  store<f32>(out + 28, hsum(c31));
}

// static scratch for one tile (in the data segment: nothing is allocated at run time)
const T: usize = memory.data(32, 16);

/** one dot product of two rows over n floats (n % 4 == 0) */
// @ts-ignore: decorator
@inline function dot1(a: usize, b: usize, n: i32): f32 {
  let c = f32x4.splat(0);
  for (let t: usize = 0; t < <usize>n << 2; t += 16) c = madd(v128.load(a + t), v128.load(b + t), c);
  return hsum(c);
}

export function syrkLower(h: usize, xt: usize, k: i32, ld: i32): void {
  const row = <usize>ld << 2;
  const k4 = k & ~3;
  for (let i = 0; i < k4; i += 4) {
    const a = xt + <usize>i * row;
    // j in [0, i + 4): pairs of columns
    for (let j = 0; j < i + 4; j += 2) {
      tile42(a, row, xt + <usize>j * row, row, ld, T);
      for (let di = 0; di < 4; di++)
        for (let dj = 0; dj < 2; dj++) {
          const ii = i + di;
          const jj = j + dj;
          if (jj > ii) continue;
          const p = h + ((<usize>ii * <usize>k + <usize>jj) << 3);
          store<f64>(p, load<f64>(p) + <f64>load<f32>(T + ((di * 2 + dj) << 2)));
        }
    }
  }
  for (let i = k4; i < k; i++)
    for (let j = 0; j <= i; j++) {
      const p = h + ((<usize>i * <usize>k + <usize>j) << 3);
      store<f64>(p, load<f64>(p) + <f64>dot1(xt + <usize>i * row, xt + <usize>j * row, ld));
    }
}

export function gemmABt(c: usize, a: usize, b: usize, m: i32, n: i32, kk: i32): void {
  const row = <usize>kk << 2;
  const m4 = m & ~3;
  const n2 = n & ~1;
  for (let i = 0; i < m4; i += 4) {
    const ai = a + <usize>i * row;
    for (let j = 0; j < n2; j += 2) {
      tile42(ai, row, b + <usize>j * row, row, kk, T);
      for (let di = 0; di < 4; di++) {
        const p = c + ((<usize>(i + di) * <usize>n + <usize>j) << 2);
        store<f32>(p, load<f32>(T + ((di * 2) << 2)));
        store<f32>(p + 4, load<f32>(T + ((di * 2 + 1) << 2)));
      }
    }
    if (n2 < n)
      for (let di = 0; di < 4; di++) store<f32>(c + ((<usize>(i + di) * <usize>n + <usize>n2) << 2), dot1(ai + <usize>di * row, b + <usize>n2 * row, kk));
  }
  for (let i = m4; i < m; i++)
    for (let j = 0; j < n; j++) store<f32>(c + ((<usize>i * <usize>n + <usize>j) << 2), dot1(a + <usize>i * row, b + <usize>j * row, kk));
}

// lazyUpdate's strip of U (rows i1 .. i1 + count, LU_STRIP columns) copied side by side: read by every
// pair of rows from L1 (U's own rows lie k * 8 bytes apart: the same columns of 128 rows alias to a few
// L1 sets, and a whole block's rows did not fit in L2 at k = 2816). Static: one lazyUpdate at a time
// per memory (each thread's workspace has its own instance).
const LU_STRIP = 32;
const LU_ROWS = 128;
const LU: usize = memory.data(LU_ROWS * LU_STRIP * 8, 16);

export function lazyUpdate(w: usize, n: i32, k: i32, e: usize, ldE: i32, count: i32, u: usize, i1: i32, i2: i32): void {
  const width = k - i2;
  const w8 = width & ~7;
  if (count > LU_ROWS) {
    lazyUpdateCols(w, n, k, e, ldE, count, u, i1, i2, 0, w8, <usize>k << 3);
  } else {
    for (let s = 0; s < w8; s += LU_STRIP) {
      const sw = min(w8 - s, LU_STRIP);
      const sb = <usize>sw << 3;
      for (let i = 0; i < count; i++) memory.copy(LU + <usize>i * sb, u + ((<usize>(i1 + i) * <usize>k + <usize>(i2 + s)) << 3), sb);
      // U's strip as a count x sw matrix at LU, its column 0 = W's column i2 + s
      lazyUpdateCols(w, n, k, e, ldE, count, LU - (<usize>(i2 + s) << 3) - <usize>i1 * sb, i1, i2, s, s + sw, sb);
    }
  }
  lazyUpdateTail(w, n, k, e, ldE, count, u, i1, i2, w8);
}

/**
 * lazyUpdate's columns i2 + [j0, j1) (j1 - j0 a multiple of 8) for the pairs of rows: U's row i1 + i at
 * u + (i1 + i) us (bytes), its column i2 + j at + (i2 + j) 8. Per element: count multiplies and
 * subtracts in increasing i (the reference's operations, in f64x2 lanes).
 */
function lazyUpdateCols(w: usize, n: i32, k: i32, e: usize, ldE: i32, count: i32, u: usize, i1: i32, i2: i32, j0: i32, j1: i32, us: usize): void {
  const rowW = <usize>k << 3;
  const rowE = <usize>ldE << 3;
  for (let r = 0; r + 1 < n; r += 2) {
    const wr0 = w + <usize>r * rowW + (<usize>i2 << 3);
    const wr1 = wr0 + rowW;
    const er0 = e + <usize>r * rowE;
    const er1 = er0 + rowE;
    for (let j = j0; j < j1; j += 8) {
      const o = <usize>j << 3;
      let p0 = v128.load(wr0 + o), p1 = v128.load(wr0 + o + 16), p2 = v128.load(wr0 + o + 32), p3 = v128.load(wr0 + o + 48);
      let q0 = v128.load(wr1 + o), q1 = v128.load(wr1 + o + 16), q2 = v128.load(wr1 + o + 32), q3 = v128.load(wr1 + o + 48);
      let ur = u + <usize>i1 * us + (<usize>i2 << 3) + o;
      for (let i = 0; i < count; i++, ur += us) {
        const e0 = f64x2.splat(load<f64>(er0 + (<usize>i << 3)));
        const e1 = f64x2.splat(load<f64>(er1 + (<usize>i << 3)));
        const u0 = v128.load(ur), u1 = v128.load(ur + 16), u2 = v128.load(ur + 32), u3 = v128.load(ur + 48);
        p0 = f64x2.sub(p0, f64x2.mul(e0, u0));
        p1 = f64x2.sub(p1, f64x2.mul(e0, u1));
        p2 = f64x2.sub(p2, f64x2.mul(e0, u2));
        p3 = f64x2.sub(p3, f64x2.mul(e0, u3));
        q0 = f64x2.sub(q0, f64x2.mul(e1, u0));
        q1 = f64x2.sub(q1, f64x2.mul(e1, u1));
        q2 = f64x2.sub(q2, f64x2.mul(e1, u2));
        q3 = f64x2.sub(q3, f64x2.mul(e1, u3));
      }
      v128.store(wr0 + o, p0);
      v128.store(wr0 + o + 16, p1);
      v128.store(wr0 + o + 32, p2);
      v128.store(wr0 + o + 48, p3);
      v128.store(wr1 + o, q0);
      v128.store(wr1 + o + 16, q1);
      v128.store(wr1 + o + 32, q2);
      v128.store(wr1 + o + 48, q3);
    }
  }
}

/** lazyUpdate's columns i2 + [w8, k - i2) of the pairs of rows, and every column of an odd last row (one element at a time) */
function lazyUpdateTail(w: usize, n: i32, k: i32, e: usize, ldE: i32, count: i32, u: usize, i1: i32, i2: i32, w8: i32): void {
  const rowW = <usize>k << 3;
  const rowE = <usize>ldE << 3;
  const width = k - i2;
  let r = 0;
  for (; r + 1 < n; r += 2) {
    const wr0 = w + <usize>r * rowW + (<usize>i2 << 3);
    const wr1 = wr0 + rowW;
    const er0 = e + <usize>r * rowE;
    const er1 = er0 + rowE;
    for (let j = w8; j < width; j++) {
      let p = load<f64>(wr0 + (<usize>j << 3));
      let q = load<f64>(wr1 + (<usize>j << 3));
      for (let i = 0; i < count; i++) {
        const uv = load<f64>(u + ((<usize>(i1 + i) * <usize>k + <usize>(i2 + j)) << 3));
        p -= load<f64>(er0 + (<usize>i << 3)) * uv;
        q -= load<f64>(er1 + (<usize>i << 3)) * uv;
      }
      store<f64>(wr0 + (<usize>j << 3), p);
      store<f64>(wr1 + (<usize>j << 3), q);
    }
  }
  for (; r < n; r++) {
    const wr = w + <usize>r * rowW + (<usize>i2 << 3);
    const er = e + <usize>r * rowE;
    for (let j = 0; j < width; j++) {
      let p = load<f64>(wr + (<usize>j << 3));
      for (let i = 0; i < count; i++) p -= load<f64>(er + (<usize>i << 3)) * load<f64>(u + ((<usize>(i1 + i) * <usize>k + <usize>(i2 + j)) << 3));
      store<f64>(wr + (<usize>j << 3), p);
    }
  }
}

/**
 * Lower Cholesky factor of the k x k SPD matrix at a, in place (upper triangle zeroed), blocked
 * right-looking in panels of 64 columns (wasm/_linalg.ts): factor the diagonal block, solve the panel
 * below it, and subtract the panel's product from the trailing matrix (2 x 2 tiles of dot products).
 * Returns the index of the first non-positive pivot, or -1. The same bits as the threaded version
 * (MatmulEngine.cholesky).
 */
export function cholesky(a: usize, k: i32): i32 {
  for (let kb = 0; kb < k; kb += CHOL_PANEL) {
    const e = min(kb + CHOL_PANEL, k);
    const bad = cholDiag(a, k, kb, e);
    if (bad >= 0) return bad;
    cholPanelRows(a, k, kb, e, e, k);
    cholTrailingRows(a, k, kb, e, e, k);
  }
  zeroUpperRows(a, k, 0, k);
  return -1;
}

/** X = M^-1 for lower-triangular M (both k x k): trilInverseCols over all columns (wasm/_linalg.ts) */
export function trilInverse(m: usize, x: usize, k: i32): void {
  memory.fill(x, 0, <usize>k * <usize>k << 3);
  for (let j0 = 0; j0 < k; j0 += 16) trilInverseCols(m, x, k, j0, min(k, j0 + 16));
}

/**
 * GPTQ's column loop over columns [c0, c1) (inside one group and one lazy block [i1, i2)) for rows
 * [r0, r0 + rows) of W (f64, k wide), in the order of the TypeScript loop (src/algos/gptq.ts gptqRows):
 * per row, per column: the nearest level q of the element's sorted levels (ties go down), e = (x - q) /
 * U[col][col], E[r][col - i1] = e, loss += e^2, and W[r][col+1 .. i2) -= e U[col][col+1 .. i2) (f64x2
 * lanes, a multiply then a subtract per element: the scalar loop's bits).
 * lv: levels f32, element (r - r0, c - c0) at ((r - r0) * len + c - c0) * nCodes, len = c1 - c0;
 * cnt: u16 level counts, same element order; out: u16 index of the chosen level per element.
 * perRow != 0: every element of a row has the same levels, at (r - r0) * nCodes (count at r - r0).
 * Returns loss plus the e^2 of these elements, summed in that order.
 */
export function columnLoop(w: usize, k: i32, u: usize, e: usize, ldE: i32, r0: i32, rows: i32, i1: i32, c0: i32, c1: i32, i2: i32, lv: usize, cnt: usize, nCodes: i32, out: usize, loss: f64, perRow: i32): f64 {
  const len = c1 - c0;
  for (let rr = 0; rr < rows; rr++) {
    const wr = w + (<usize>(r0 + rr) * <usize>k << 3);
    const er = e + (<usize>(r0 + rr) * <usize>ldE << 3);
    for (let i = 0; i < len; i++) {
      const col = c0 + i;
      const el = <usize>(rr * len + i);
      const lel = perRow ? <usize>rr : el;
      const o = lv + (lel * <usize>nCodes << 2);
      const x = load<f64>(wr + (<usize>col << 3));
      // nearest level (src/algos/block-codec.ts BlockGrids.nearest)
      let lo = 0;
      let hi = <i32>load<u16>(cnt + (lel << 1)) - 1;
      let at = 0;
      if (!(x > <f64>load<f32>(o))) at = 0;
      else if (x >= <f64>load<f32>(o + (<usize>hi << 2))) at = hi;
      else {
        while (hi - lo > 1) {
          const mid = (lo + hi) >> 1;
          if (<f64>load<f32>(o + (<usize>mid << 2)) <= x) lo = mid;
          else hi = mid;
        }
        at = x - <f64>load<f32>(o + (<usize>lo << 2)) <= <f64>load<f32>(o + (<usize>hi << 2)) - x ? lo : hi;
      }
      store<u16>(out + (el << 1), <u16>at);
      const q = <f64>load<f32>(o + (<usize>at << 2));
      const ur = u + (<usize>col * <usize>k << 3);
      const ev = (x - q) / load<f64>(ur + (<usize>col << 3));
      loss += ev * ev;
      store<f64>(er + (<usize>(col - i1) << 3), ev);
      if (ev == 0) continue;
      const es = f64x2.splat(ev);
      let c = col + 1;
      for (; c + 1 < i2; c += 2) {
        const p = wr + (<usize>c << 3);
        v128.store(p, f64x2.sub(v128.load(p), f64x2.mul(es, v128.load(ur + (<usize>c << 3)))));
      }
      for (; c < i2; c++) {
        const p = wr + (<usize>c << 3);
        store<f64>(p, load<f64>(p) - ev * load<f64>(ur + (<usize>c << 3)));
      }
    }
  }
  return loss;
}

// ---------------------------------------------------------------------------------------------------
// GPTQ's factor in place, on threads (src/kernels/gptq.ts factorMemory; reference factorRef there).
// One k x k array A: the blocked Cholesky factor M of A's lower triangle in place (the pieces of
// wasm/_linalg.ts, as `cholesky` above), then X = M^-1 with X's strict lower triangle written transposed
// into A's upper triangle (which M does not use) and X's diagonal into a k-vector, then U = J X J
// (reversed rows and columns, upper triangular) moved into place. Every element goes through the
// operations of cholesky + trilInverse above in the same order, on any number of threads. Jobs (i32 words):
//   kind 5: Cholesky panel rows  | 1 a | 2 k | 3 kb | 4 e | 5 rows per chunk (even): rows e + c R ..
//   kind 6: Cholesky trailing update of those rows (same words)
//   kind 8: columns [16 c, 16 c + 16) of X | 1 a | 2 k | 3 diagonal | 4 scratch | 5 scratch bytes per thread

export { cholDiag };

// @ts-ignore: decorator
@inline function param(job: usize, i: i32): i32 {
  return load<i32>(job + (<usize>i << 2));
}

/** X's columns [j0, j1) (j1 - j0 <= 16), computed in rows of 16 at xt (trilInverseCols' operations), then stored: X[i][j] at A[j][i], X[j][j] at d[j] */
function inverseColsUpper(a: usize, k: i32, d: usize, xt: usize, j0: i32, j1: i32): void {
  const row = <usize>k << 3;
  memory.fill(xt, 0, <usize>(k - j0) << 7);
  // row i of the chunk at xt + (i - j0) 128
  const x0 = xt - (<usize>j0 << 7);
  for (let i = j0; i < k; i++) trilInverseRow(a + <usize>i * row, x0, 128, i, j0, j1);
  // X[i][j] (i > j) to A[j][i]; the diagonal to d
  for (let j = j0; j < j1; j++) {
    const src = x0 + (<usize>(j - j0) << 3);
    store<f64>(d + (<usize>j << 3), load<f64>(src + (<usize>j << 7)));
    const aj = a + <usize>j * row;
    for (let i = j + 1; i < k; i++) store<f64>(aj + (<usize>i << 3), load<f64>(src + (<usize>i << 7)));
  }
}

export function runChunk(job: usize, chunk: i32, thread: i32): void {
  const kind = param(job, 0);
  const a = <usize>param(job, 1), k = param(job, 2);
  if (kind == 8) {
    const j0 = chunk << 4;
    if (j0 < k) inverseColsUpper(a, k, <usize>param(job, 3), <usize>param(job, 4) + <usize>thread * <usize>param(job, 5), j0, min(k, j0 + 16));
    return;
  }
  const kb = param(job, 3), e = param(job, 4), r = param(job, 5);
  const i0 = e + chunk * r;
  if (i0 >= k) return;
  const i1 = min(k, i0 + r);
  if (kind == 5) cholPanelRows(a, k, kb, e, i0, i1);
  else cholTrailingRows(a, k, kb, e, i0, i1);
}

/**
 * The last step: A holds X transposed in its upper triangle (M below it), d X's diagonal. Makes A = U,
 * U[i][j] = X[k-1-i][k-1-j] for i <= j (so U[i][j] = A[k-1-j][k-1-i] for i < j: the upper triangle
 * mirrored on the anti-diagonal, swapped in place in tiles of 32 x 32), U[i][i] = d[k-1-i], zero below.
 */
export function factorFinish(a: usize, d: usize, k: i32): void {
  const row = <usize>k << 3;
  for (let i0 = 0; i0 < k; i0 += 32) {
    const i1 = min(k, i0 + 32);
    for (let j0 = i0; j0 < k; j0 += 32) {
      const j1 = min(k, j0 + 32);
      for (let i = i0; i < i1; i++) {
        // pairs (i, j) with i < j and i + j < k - 1; the partner (k-1-j, k-1-i)
        const jEnd = min(j1, k - 1 - i);
        const pc = <usize>(k - 1 - i) << 3;
        for (let j = max(j0, i + 1); j < jEnd; j++) {
          const p = a + <usize>i * row + (<usize>j << 3);
          const q = a + <usize>(k - 1 - j) * row + pc;
          const t = load<f64>(p);
          store<f64>(p, load<f64>(q));
          store<f64>(q, t);
        }
      }
    }
  }
  for (let i = 0; i < k; i++) {
    memory.fill(a + <usize>i * row, 0, <usize>i << 3);
    store<f64>(a + <usize>i * row + (<usize>i << 3), load<f64>(d + (<usize>(k - 1 - i) << 3)));
  }
}

/**
 * GPTQ's clip search for a group on an affine grid (src/kernels/gptq.ts clipSearchRef is the reference,
 * bit for bit): for each candidate c (scale s = cand[2c] > 0, zero z = cand[2c + 1]) the error
 * sum_j w_j (x_j - q_j)^2, q_j = f32((clamp(round(x_j / s + z), lo, hi) - z) s) with JavaScript's
 * Math.round (halves up), the terms computed two lanes at a time and summed in element order; returns
 * the first candidate with the smallest error (NaN errors never win; 0 when none is finite).
 * x, w: n f32 (n even).
 */
export function clipSearch(x: usize, w: usize, n: i32, cand: usize, nCand: i32, lo: f64, hi: f64): i32 {
  let best = 0;
  let bestErr: f64 = 0;
  const half = f64x2.splat(0.5);
  const one = f64x2.splat(1);
  const vlo = f64x2.splat(lo);
  const vhi = f64x2.splat(hi);
  for (let c = 0; c < nCand; c++) {
    const s = load<f64>(cand + (<usize>c << 4));
    const z = load<f64>(cand + (<usize>c << 4) + 8);
    const vs = f64x2.splat(s);
    const vz = f64x2.splat(z);
    let e: f64 = 0;
    for (let j = 0; j < n; j += 2) {
      const xv = f64x2.promote_low_f32x4(v128.load64_zero(x + (<usize>j << 2)));
      const wv = f64x2.promote_low_f32x4(v128.load64_zero(w + (<usize>j << 2)));
      const v = f64x2.add(f64x2.div(xv, vs), vz);
      const fl = f64x2.floor(v);
      // Math.round: floor, plus one when the fraction (exact) is at least one half
      let q = f64x2.add(fl, v128.and(f64x2.ge(f64x2.sub(v, fl), half), one));
      q = f64x2.pmax(q, vlo); // q < lo ? lo : q
      q = f64x2.pmin(q, vhi); // hi < q ? hi : q
      const sn = f64x2.promote_low_f32x4(f32x4.demote_f64x2_zero(f64x2.mul(f64x2.sub(q, vz), vs)));
      const d = f64x2.sub(xv, sn);
      const t = f64x2.mul(f64x2.mul(wv, d), d);
      e += f64x2.extract_lane(t, 0);
      e += f64x2.extract_lane(t, 1);
    }
    if (c == 0) bestErr = e;
    else if (e < bestErr) {
      bestErr = e;
      best = c;
    }
  }
  return best;
}
