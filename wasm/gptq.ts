// Dense kernels of the calibrated algorithms (GPTQ) and of calibration forward passes, 128-bit SIMD.
// Scalar references and the bounds these kernels are tested against: src/kernels/gptq.ts.
//
//   transposePad  x (rows x cols, f32) -> xt (cols x ld, f32), ld >= rows a multiple of 4, zero padded
//   syrkLower     H (f64, k x k) lower triangle += XT XT^T     (XT: k x ld, f32; H = X^T X)
//   gemmABt       C (f32, m x n) = A B^T                        (A: m x K, B: n x K, f32, K % 4 == 0)
//   lazyUpdate    W[:, i2:k] -= E[:, 0:count] U[i1:i1+count, i2:k]   (f64; GPTQ's block update)
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

export function lazyUpdate(w: usize, n: i32, k: i32, e: usize, ldE: i32, count: i32, u: usize, i1: i32, i2: i32): void {
  const rowW = <usize>k << 3;
  const rowE = <usize>ldE << 3;
  const width = k - i2;
  const w8 = width & ~7;
  let r = 0;
  for (; r + 1 < n; r += 2) {
    const wr0 = w + <usize>r * rowW + (<usize>i2 << 3);
    const wr1 = wr0 + rowW;
    const er0 = e + <usize>r * rowE;
    const er1 = er0 + rowE;
    for (let j = 0; j < w8; j += 8) {
      const o = <usize>j << 3;
      let p0 = v128.load(wr0 + o), p1 = v128.load(wr0 + o + 16), p2 = v128.load(wr0 + o + 32), p3 = v128.load(wr0 + o + 48);
      let q0 = v128.load(wr1 + o), q1 = v128.load(wr1 + o + 16), q2 = v128.load(wr1 + o + 32), q3 = v128.load(wr1 + o + 48);
      for (let i = 0; i < count; i++) {
        const ur = u + ((<usize>(i1 + i) * <usize>k + <usize>i2) << 3) + o;
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

/** sum_{p < n} a[p] b[p] (f64), two lanes */
// @ts-ignore: decorator
@inline function dot64(a: usize, b: usize, n: i32): f64 {
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

/** dot products of rows i, i+1 with rows j, j+1 over n doubles starting at column c0: a 2 x 2 tile */
// @ts-ignore: decorator
@inline function tile22(a: usize, row: usize, i: i32, j: i32, c0: i32, n: i32, out: usize): void {
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
  store<f64>(out, s00);
  store<f64>(out + 8, s01);
  store<f64>(out + 16, s10);
  store<f64>(out + 24, s11);
}

const T22: usize = memory.data(32, 16);

/**
 * Lower Cholesky factor of the k x k SPD matrix at a, in place (upper triangle zeroed), blocked
 * right-looking in panels of 64 columns: factor the diagonal block, solve the panel below it, and
 * subtract the panel's product from the trailing matrix (2 x 2 tiles of dot products). Returns the
 * index of the first non-positive pivot, or -1.
 */
export function cholesky(a: usize, k: i32): i32 {
  const row = <usize>k << 3;
  const nb = 64;
  for (let kb = 0; kb < k; kb += nb) {
    const e = min(kb + nb, k);
    // diagonal block and the panel below it: a[i][j] = (a[i][j] - sum_{kb<=p<j} a[i][p] a[j][p]) / a[j][j]
    for (let j = kb; j < e; j++) {
      const aj = a + <usize>j * row;
      const s = load<f64>(aj + (<usize>j << 3)) - dot64(aj + (<usize>kb << 3), aj + (<usize>kb << 3), j - kb);
      if (!(s > 0)) return j;
      const d = Math.sqrt(s);
      store<f64>(aj + (<usize>j << 3), d);
      const inv = 1 / d;
      for (let i = j + 1; i < k; i++) {
        const ai = a + <usize>i * row;
        store<f64>(ai + (<usize>j << 3), (load<f64>(ai + (<usize>j << 3)) - dot64(ai + (<usize>kb << 3), aj + (<usize>kb << 3), j - kb)) * inv);
      }
    }
    // trailing update: a[i][j] -= sum_{kb<=p<e} a[i][p] a[j][p]   for e <= j <= i
    const w = e - kb;
    let i = e;
    for (; i + 1 < k; i += 2) {
      let j = e;
      for (; j + 1 <= i; j += 2) {
        tile22(a, row, i, j, kb, w, T22);
        const p = a + <usize>i * row + (<usize>j << 3);
        store<f64>(p, load<f64>(p) - load<f64>(T22));
        store<f64>(p + 8, load<f64>(p + 8) - load<f64>(T22 + 8));
        store<f64>(p + row, load<f64>(p + row) - load<f64>(T22 + 16));
        store<f64>(p + row + 8, load<f64>(p + row + 8) - load<f64>(T22 + 24));
      }
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
    for (; i < k; i++)
      for (let j = e; j <= i; j++) {
        const p = a + <usize>i * row + (<usize>j << 3);
        store<f64>(p, load<f64>(p) - dot64(a + <usize>i * row + (<usize>kb << 3), a + <usize>j * row + (<usize>kb << 3), w));
      }
  }
  for (let i = 0; i < k; i++) memory.fill(a + <usize>i * row + (<usize>(i + 1) << 3), 0, <usize>(k - i - 1) << 3);
  return -1;
}

/** x_i[0 .. n) -= av * x_p[0 .. n) */
// @ts-ignore: decorator
@inline function axpyNeg(xi: usize, xp: usize, av: f64, n: i32): void {
  const a = f64x2.splat(av);
  const n2 = n & ~1;
  for (let j = 0; j < n2; j += 2) {
    const o = <usize>j << 3;
    v128.store(xi + o, f64x2.sub(v128.load(xi + o), f64x2.mul(a, v128.load(xp + o))));
  }
  if (n2 < n) store<f64>(xi + (<usize>n2 << 3), load<f64>(xi + (<usize>n2 << 3)) - av * load<f64>(xp + (<usize>n2 << 3)));
}

/**
 * X = M^-1 (both k x k, lower triangular): X[i] = (e_i - sum_{p<i} M[i][p] X[p]) / M[i][i], in row blocks
 * of 32: the contributions of earlier blocks are applied row p by row p to the whole block (X[p] is read
 * once per block), then the block is finished row by row.
 */
export function trilInverse(m: usize, x: usize, k: i32): void {
  const row = <usize>k << 3;
  const nb = 32;
  memory.fill(x, 0, <usize>k * row);
  for (let ib = 0; ib < k; ib += nb) {
    const e = min(ib + nb, k);
    for (let p = 0; p < ib; p++) {
      const xp = x + <usize>p * row;
      for (let i = ib; i < e; i++) {
        const av = load<f64>(m + <usize>i * row + (<usize>p << 3));
        if (av != 0) axpyNeg(x + <usize>i * row, xp, av, p + 1);
      }
    }
    for (let i = ib; i < e; i++) {
      const xi = x + <usize>i * row;
      const mi = m + <usize>i * row;
      for (let p = ib; p < i; p++) {
        const av = load<f64>(mi + (<usize>p << 3));
        if (av != 0) axpyNeg(xi, x + <usize>p * row, av, p + 1);
      }
      store<f64>(xi + (<usize>i << 3), load<f64>(xi + (<usize>i << 3)) + 1);
      const d = 1 / load<f64>(mi + (<usize>i << 3));
      for (let j = 0; j <= i; j++) store<f64>(xi + (<usize>j << 3), load<f64>(xi + (<usize>j << 3)) * d);
    }
  }
}
