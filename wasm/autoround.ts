// AutoRound's per-linear kernels (src/algos/autoround.ts), 128-bit SIMD. Scalar references, bit-exact:
// src/kernels/autoround.ts (sweepRowRef, gradRowsRef).
//
//   sweepRow  one signed-gradient sweep over one row of W (k elements): offsets v step against the sign
//             of their gradient G, a proposed flip between the two levels lo/hi is taken when it lowers
//             the row's loss exactly (dl = 2 d g + d^2 H_cc), and the row of G follows it at once
//             (G += d H[c, :]); returns the sum of the taken dl. With ga != 0 the clip ratios'
//             gradient sum_j g_j q_j per block of bs is added to ga (f64).
//   gradRows  G (m x k) = E (m x k) H (k x k, symmetric), in strips of 16 columns, two rows at a time.
//
// Scalar parts in f64 exactly as the reference's JavaScript arithmetic; the row updates of G in f32
// lanes with separate multiply and add (no fused multiply-add in either build: the reference rounds the
// product, then the sum).

export function heapBase(): usize {
  return __heap_base;
}

// @ts-ignore: decorator
@inline function axpyRow(g: usize, h: usize, d: f32, k: i32): void {
  const k4 = k & ~3;
  const dv = f32x4.splat(d);
  for (let j = 0; j < k4; j += 4) {
    const p = g + (<usize>j << 2);
    v128.store(p, f32x4.add(v128.load(p), f32x4.mul(dv, v128.load(h + (<usize>j << 2)))));
  }
  for (let j = k4; j < k; j++) {
    const p = g + (<usize>j << 2);
    store<f32>(p, load<f32>(p) + d * load<f32>(h + (<usize>j << 2)));
  }
}

export function sweepRow(g: usize, h: usize, hd: usize, v: usize, t: usize, lo: usize, hi: usize, ch: usize, k: i32, step: f64, ga: usize, bs: i32): f64 {
  let loss: f64 = 0;
  const row = <usize>k << 2;
  for (let col = 0; col < k; col++) {
    const o = <usize>col << 2;
    const gv = <f64>load<f32>(g + o);
    if (gv == 0) continue;
    const c = load<u8>(ch + <usize>col);
    const l = <f64>load<f32>(lo + o);
    const u = <f64>load<f32>(hi + o);
    if (ga) {
      const p = ga + (<usize>(col / bs) << 3);
      store<f64>(p, load<f64>(p) + gv * (c ? u : l));
    }
    let vv = <f64>load<f32>(v + o) - (gv > 0 ? step : -step);
    vv = vv > 0.5 ? 0.5 : vv < -0.5 ? -0.5 : vv;
    store<f32>(v + o, <f32>vv);
    const nc: u8 = <f64>load<f32>(t + o) + vv >= 0.5 ? 1 : 0;
    if (nc == c) continue;
    const d = nc ? u - l : l - u;
    const dl = 2 * d * gv + d * d * <f64>load<f32>(hd + o);
    if (!(dl < 0)) continue;
    store<u8>(ch + <usize>col, nc);
    loss += dl;
    axpyRow(g, h + <usize>col * row, <f32>d, k);
  }
  return loss;
}

export function gradRows(g: usize, e: usize, h: usize, m: i32, k: i32): void {
  // strips of 16 columns of G (H's strip, k x 16, stays in cache over all rows), two rows at a time with
  // their 2 x 16 sums in registers; each sum runs over c in order, as the reference's
  const row = <usize>k << 2;
  const k16 = k & ~15;
  const m2 = m & ~1;
  for (let j = 0; j < k16; j += 16) {
    const hj = h + (<usize>j << 2);
    for (let r = 0; r < m2; r += 2) {
      const e0 = e + <usize>r * row;
      const e1 = e0 + row;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
      for (let c = 0; c < k; c++) {
        const hp = hj + <usize>c * row;
        const h0 = v128.load(hp), h1 = v128.load(hp + 16), h2 = v128.load(hp + 32), h3 = v128.load(hp + 48);
        const s0 = f32x4.splat(load<f32>(e0 + (<usize>c << 2)));
        const s1 = f32x4.splat(load<f32>(e1 + (<usize>c << 2)));
        a0 = f32x4.add(a0, f32x4.mul(s0, h0));
        a1 = f32x4.add(a1, f32x4.mul(s0, h1));
        a2 = f32x4.add(a2, f32x4.mul(s0, h2));
        a3 = f32x4.add(a3, f32x4.mul(s0, h3));
        b0 = f32x4.add(b0, f32x4.mul(s1, h0));
        b1 = f32x4.add(b1, f32x4.mul(s1, h1));
        b2 = f32x4.add(b2, f32x4.mul(s1, h2));
        b3 = f32x4.add(b3, f32x4.mul(s1, h3));
      }
      const g0 = g + <usize>r * row + (<usize>j << 2);
      const g1 = g0 + row;
      v128.store(g0, a0), v128.store(g0 + 16, a1), v128.store(g0 + 32, a2), v128.store(g0 + 48, a3);
      v128.store(g1, b0), v128.store(g1 + 16, b1), v128.store(g1 + 32, b2), v128.store(g1 + 48, b3);
    }
    if (m2 < m) {
      const e0 = e + <usize>m2 * row;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let c = 0; c < k; c++) {
        const hp = hj + <usize>c * row;
        const s0 = f32x4.splat(load<f32>(e0 + (<usize>c << 2)));
        a0 = f32x4.add(a0, f32x4.mul(s0, v128.load(hp)));
        a1 = f32x4.add(a1, f32x4.mul(s0, v128.load(hp + 16)));
        a2 = f32x4.add(a2, f32x4.mul(s0, v128.load(hp + 32)));
        a3 = f32x4.add(a3, f32x4.mul(s0, v128.load(hp + 48)));
      }
      const g0 = g + <usize>m2 * row + (<usize>j << 2);
      v128.store(g0, a0), v128.store(g0 + 16, a1), v128.store(g0 + 32, a2), v128.store(g0 + 48, a3);
    }
  }
  // the last k % 16 columns, one sum at a time
  for (let r = 0; r < m; r++)
    for (let j = k16; j < k; j++) {
      let s: f32 = 0;
      const er = e + <usize>r * row;
      for (let c = 0; c < k; c++) s += load<f32>(er + (<usize>c << 2)) * load<f32>(h + <usize>c * row + (<usize>j << 2));
      store<f32>(g + <usize>r * row + (<usize>j << 2), s);
    }
}

/**
 * delta^T H[c0.., c0..] delta over bs elements (f64; delta f32): per i, the sum over j in two lanes
 * (even j, odd j) added at the end, as the reference's.
 */
export function quadBlock(h: usize, k: i32, c0: i32, delta: usize, bs: i32): f64 {
  let dl: f64 = 0;
  const b2 = bs & ~1;
  for (let i = 0; i < bs; i++) {
    const di = <f64>load<f32>(delta + (<usize>i << 2));
    if (di == 0) continue;
    const hr = h + ((<usize>(c0 + i) * <usize>k + <usize>c0) << 2);
    let s = f64x2.splat(0);
    for (let j = 0; j < b2; j += 2) {
      const hv = f64x2.promote_low_f32x4(v128.load64_zero(hr + (<usize>j << 2)));
      const dv = f64x2.promote_low_f32x4(v128.load64_zero(delta + (<usize>j << 2)));
      s = f64x2.add(s, f64x2.mul(hv, dv));
    }
    let s0 = f64x2.extract_lane(s, 0);
    const s1 = f64x2.extract_lane(s, 1);
    if (b2 < bs) s0 += <f64>load<f32>(hr + (<usize>b2 << 2)) * <f64>load<f32>(delta + (<usize>b2 << 2));
    dl += di * (s0 + s1);
  }
  return dl;
}
