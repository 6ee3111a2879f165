// f64 dense kernels shared by wasm/gptq.ts (one thread) and wasm/matmul.ts (the kernel threads): the
// pieces of the blocked Cholesky factor and of the lower-triangular inverse, cut so that a piece
// covers a range of rows (Cholesky) or of columns (inverse) and any thread can run any range. Every
// element goes through the same operations in the same order whatever the ranges, so the results do
// not depend on how the work is split (nor on the thread count), and equal the one-call versions
// (wasm/gptq.ts cholesky / trilInverse) bit for bit. f64x2 lanes, multiply and add never fused.
// References: choleskyRef / trilInverseRef in src/kernels/gptq.ts.

/** panel width of the blocked Cholesky factor */
export const CHOL_PANEL: i32 = 64;

/** sum_{p < n} a[p] b[p] (f64), two lanes */
// @ts-ignore: decorator
@inline export function dot64(a: usize, b: usize, n: i32): f64 {
  let c0 = f64x2.splat(0);
  let c1 = f64x2.splat(0);
  const n4 = n & ~3;
  let p = 0;
  for (; p < n4; p += 4) {
    const o = <usize>p << 3;
    c0 = f64x2.add(c0, f64x2.mul(v128.load(a + o), v128.load(b + o)));
    c1 = f64x2.add(c1, f64x2.mul(v128.load(a + o + 16), v128.load(b + o + 16)));
  }
  const c = f64x2.add(c0, c1);
  let s = f64x2.extract_lane(c, 0) + f64x2.extract_lane(c, 1);
  for (; p < n; p++) s += load<f64>(a + (<usize>p << 3)) * load<f64>(b + (<usize>p << 3));
  return s;
}

/**
 * rows i, i+1 and j, j+1 of a (row stride `row` bytes) from column c0 over n columns: the 2 x 2 tile
 * a[i..i+1][j..j+1] -= sum_p a[i'][c0+p] a[j'][c0+p]
 */
// @ts-ignore: decorator
@inline function tile22Sub(a: usize, row: usize, i: i32, j: i32, c0: i32, n: i32): void {
  const ai = a + <usize>i * row + (<usize>c0 << 3);
  const ai1 = ai + row;
  const aj = a + <usize>j * row + (<usize>c0 << 3);
  const aj1 = aj + row;
  let c00 = f64x2.splat(0), c01 = f64x2.splat(0), c10 = f64x2.splat(0), c11 = f64x2.splat(0);
  const n2 = n & ~1;
  for (let p = 0; p < n2; p += 2) {
    const o = <usize>p << 3;
    const x0 = v128.load(ai + o), x1 = v128.load(ai1 + o), y0 = v128.load(aj + o), y1 = v128.load(aj1 + o);
    c00 = f64x2.add(c00, f64x2.mul(x0, y0));
    c01 = f64x2.add(c01, f64x2.mul(x0, y1));
    c10 = f64x2.add(c10, f64x2.mul(x1, y0));
    c11 = f64x2.add(c11, f64x2.mul(x1, y1));
  }
  let s00 = f64x2.extract_lane(c00, 0) + f64x2.extract_lane(c00, 1);
  let s01 = f64x2.extract_lane(c01, 0) + f64x2.extract_lane(c01, 1);
  let s10 = f64x2.extract_lane(c10, 0) + f64x2.extract_lane(c10, 1);
  let s11 = f64x2.extract_lane(c11, 0) + f64x2.extract_lane(c11, 1);
  if (n2 < n) {
    const o = <usize>n2 << 3;
    const x0 = load<f64>(ai + o), x1 = load<f64>(ai1 + o), y0 = load<f64>(aj + o), y1 = load<f64>(aj1 + o);
    s00 += x0 * y0;
    s01 += x0 * y1;
    s10 += x1 * y0;
    s11 += x1 * y1;
  }
  const p = a + <usize>i * row + (<usize>j << 3);
  store<f64>(p, load<f64>(p) - s00);
  store<f64>(p + 8, load<f64>(p + 8) - s01);
  store<f64>(p + row, load<f64>(p + row) - s10);
  store<f64>(p + row + 8, load<f64>(p + row + 8) - s11);
}

/**
 * Cholesky, panel [kb, e), step 1: the diagonal block (rows and columns kb..e-1), in place. Returns the
 * first non-positive pivot, or -1. a[i][j] = (a[i][j] - sum_{kb<=p<j} a[i][p] a[j][p]) / a[j][j].
 */
export function cholDiag(a: usize, k: i32, kb: i32, e: i32): i32 {
  const row = <usize>k << 3;
  for (let j = kb; j < e; j++) {
    const aj = a + <usize>j * row;
    const s = load<f64>(aj + (<usize>j << 3)) - dot64(aj + (<usize>kb << 3), aj + (<usize>kb << 3), j - kb);
    if (!(s > 0)) return j;
    const d = Math.sqrt(s);
    store<f64>(aj + (<usize>j << 3), d);
    const inv = 1 / d;
    for (let i = j + 1; i < e; i++) {
      const ai = a + <usize>i * row;
      store<f64>(ai + (<usize>j << 3), (load<f64>(ai + (<usize>j << 3)) - dot64(ai + (<usize>kb << 3), aj + (<usize>kb << 3), j - kb)) * inv);
    }
  }
  return -1;
}

/** Cholesky, panel [kb, e), step 2: columns kb..e-1 of rows [i0, i1) (rows >= e; needs step 1) */
export function cholPanelRows(a: usize, k: i32, kb: i32, e: i32, i0: i32, i1: i32): void {
  const row = <usize>k << 3;
  for (let j = kb; j < e; j++) {
    const aj = a + <usize>j * row;
    const inv = 1 / load<f64>(aj + (<usize>j << 3));
    for (let i = i0; i < i1; i++) {
      const ai = a + <usize>i * row;
      store<f64>(ai + (<usize>j << 3), (load<f64>(ai + (<usize>j << 3)) - dot64(ai + (<usize>kb << 3), aj + (<usize>kb << 3), j - kb)) * inv);
    }
  }
}

/**
 * Cholesky, panel [kb, e), step 3: the trailing update of rows [i0, i1) (e <= i0, i0 - e even; needs
 * step 2 of every row up to i1): a[i][j] -= sum_{kb<=p<e} a[i][p] a[j][p] for e <= j <= i, rows in pairs
 * and columns in pairs (2 x 2 tiles), the last column of a pair of rows and a last odd row k - 1 by
 * single dot products.
 */
export function cholTrailingRows(a: usize, k: i32, kb: i32, e: i32, i0: i32, i1: i32): void {
  const row = <usize>k << 3;
  const w = e - kb;
  let i = i0;
  for (; i + 1 < i1; i += 2) {
    let j = e;
    for (; j + 1 <= i; j += 2) tile22Sub(a, row, i, j, kb, w);
    for (; j <= i + 1; j++) {
      // the last column(s): row i (if j <= i) and row i + 1
      const aj = a + <usize>j * row + (<usize>kb << 3);
      if (j <= i) {
        const p = a + <usize>i * row + (<usize>j << 3);
        store<f64>(p, load<f64>(p) - dot64(a + <usize>i * row + (<usize>kb << 3), aj, w));
      }
      const q = a + <usize>(i + 1) * row + (<usize>j << 3);
      store<f64>(q, load<f64>(q) - dot64(a + <usize>(i + 1) * row + (<usize>kb << 3), aj, w));
    }
  }
  for (; i < i1; i++)
    for (let j = e; j <= i; j++) {
      const p = a + <usize>i * row + (<usize>j << 3);
      store<f64>(p, load<f64>(p) - dot64(a + <usize>i * row + (<usize>kb << 3), a + <usize>j * row + (<usize>kb << 3), w));
    }
}

/** zero the upper triangle of rows [i0, i1) of the k x k matrix at a */
export function zeroUpperRows(a: usize, k: i32, i0: i32, i1: i32): void {
  const row = <usize>k << 3;
  for (let i = i0; i < i1; i++) memory.fill(a + <usize>i * row + (<usize>(i + 1) << 3), 0, <usize>(k - i - 1) << 3);
}

/**
 * Columns [j0, j1) of X = M^-1 (k x k, lower triangular; X zero on entry): for each row i >= j0,
 *   X[i][j] = (delta_ij - sum_{j<=p<i, M[i][p] != 0} M[i][p] X[p][j]) / M[i][i]
 * subtracting in increasing p, then adding the 1 on the diagonal, then multiplying by 1 / M[i][i] (the
 * operations, per element, of wasm/gptq.ts trilInverse). Columns j > p of a row p of X are zero and
 * are never touched (so a zero keeps its sign). Full chunks of 16 columns keep the row in registers.
 */
export function trilInverseCols(m: usize, x: usize, k: i32, j0: i32, j1: i32): void {
  const row = <usize>k << 3;
  const xs = x + (<usize>j0 << 3);
  for (let i = j0; i < k; i++) trilInverseRow(m + <usize>i * row, xs, row, i, j0, j1);
}

/**
 * Row i of trilInverseCols' columns [j0, j1): M's row i at mi, row p of X's chunk at xs + p stride (its
 * column j0 first). The one body of trilInverseCols and wasm/gptq.ts inverseColsUpper (which keeps the
 * chunk's rows 128 bytes apart in a scratch), so both do the same operations in the same order.
 */
// @ts-ignore: decorator
@inline export function trilInverseRow(mi: usize, xs: usize, stride: usize, i: i32, j0: i32, j1: i32): void {
  const xi = xs + <usize>i * stride;
  // p < j1 - 1: columns j0..p only (the triangle), one element at a time
  const pt = min(i, j1 - 1);
  for (let p = j0; p < pt; p++) {
    const av = load<f64>(mi + (<usize>p << 3));
    if (av == 0) continue;
    const xp = xs + <usize>p * stride;
    for (let j: usize = 0; j <= <usize>(p - j0); j++) store<f64>(xi + (j << 3), load<f64>(xi + (j << 3)) - av * load<f64>(xp + (j << 3)));
  }
  if (pt < i) {
    // p >= j1 - 1: the whole chunk
    if (j1 - j0 == 16) {
      let r0 = v128.load(xi), r1 = v128.load(xi, 16), r2 = v128.load(xi, 32), r3 = v128.load(xi, 48);
      let r4 = v128.load(xi, 64), r5 = v128.load(xi, 80), r6 = v128.load(xi, 96), r7 = v128.load(xi, 112);
      for (let p = pt; p < i; p++) {
        const av = load<f64>(mi + (<usize>p << 3));
        if (av == 0) continue;
        const a = f64x2.splat(av);
        const xp = xs + <usize>p * stride;
        r0 = f64x2.sub(r0, f64x2.mul(a, v128.load(xp)));
        r1 = f64x2.sub(r1, f64x2.mul(a, v128.load(xp, 16)));
        r2 = f64x2.sub(r2, f64x2.mul(a, v128.load(xp, 32)));
        r3 = f64x2.sub(r3, f64x2.mul(a, v128.load(xp, 48)));
        r4 = f64x2.sub(r4, f64x2.mul(a, v128.load(xp, 64)));
        r5 = f64x2.sub(r5, f64x2.mul(a, v128.load(xp, 80)));
        r6 = f64x2.sub(r6, f64x2.mul(a, v128.load(xp, 96)));
        r7 = f64x2.sub(r7, f64x2.mul(a, v128.load(xp, 112)));
      }
      v128.store(xi, r0); v128.store(xi, r1, 16); v128.store(xi, r2, 32); v128.store(xi, r3, 48);
      v128.store(xi, r4, 64); v128.store(xi, r5, 80); v128.store(xi, r6, 96); v128.store(xi, r7, 112);
    } else {
      const n = <usize>(j1 - j0);
      for (let p = pt; p < i; p++) {
        const av = load<f64>(mi + (<usize>p << 3));
        if (av == 0) continue;
        const xp = xs + <usize>p * stride;
        for (let j: usize = 0; j < n; j++) store<f64>(xi + (j << 3), load<f64>(xi + (j << 3)) - av * load<f64>(xp + (j << 3)));
      }
    }
  }
  const last = min(i, j1 - 1); // columns j0..last of row i are set
  if (i < j1) store<f64>(xi + (<usize>(i - j0) << 3), load<f64>(xi + (<usize>(i - j0) << 3)) + 1);
  const d = 1 / load<f64>(mi + (<usize>i << 3));
  for (let j: usize = 0; j <= <usize>(last - j0); j++) store<f64>(xi + (j << 3), load<f64>(xi + (j << 3)) * d);
}
