// AutoRound's per-linear kernels (src/algos/autoround.ts), 128-bit SIMD. Scalar references, bit-exact:
// src/kernels/autoround.ts (sweepRowRef, gradRowsRef).
//
//   sweepRow  one signed-gradient sweep over one row of W (k elements): offsets v step against the sign
//             of their gradient G, a proposed flip between the two levels lo/hi is taken when it lowers
//             the row's loss exactly (dl = 2 d g + d^2 H_cc), and the row of G follows it at once
//             (G += d H[c, :]); returns the sum of the taken dl. With ga != 0 the clip ratios'
//             gradient sum_j g_j q_j per block of bs is added to ga (f64).
//   gradRows  G (m x k) = E (m x k) H (k x k, symmetric), four rows at a time.
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
  const row = <usize>k << 2;
  const k4 = k & ~3;
  let r = 0;
  for (; r + 3 < m; r += 4) {
    const g0 = g + <usize>r * row, g1 = g0 + row, g2 = g1 + row, g3 = g2 + row;
    const e0 = e + <usize>r * row, e1 = e0 + row, e2 = e1 + row, e3 = e2 + row;
    memory.fill(g0, 0, row * 4);
    for (let c = 0; c < k; c++) {
      const o = <usize>c << 2;
      const hr = h + <usize>c * row;
      const a0 = load<f32>(e0 + o), a1 = load<f32>(e1 + o), a2 = load<f32>(e2 + o), a3 = load<f32>(e3 + o);
      const s0 = f32x4.splat(a0), s1 = f32x4.splat(a1), s2 = f32x4.splat(a2), s3 = f32x4.splat(a3);
      for (let j = 0; j < k4; j += 4) {
        const jo = <usize>j << 2;
        const hv = v128.load(hr + jo);
        v128.store(g0 + jo, f32x4.add(v128.load(g0 + jo), f32x4.mul(s0, hv)));
        v128.store(g1 + jo, f32x4.add(v128.load(g1 + jo), f32x4.mul(s1, hv)));
        v128.store(g2 + jo, f32x4.add(v128.load(g2 + jo), f32x4.mul(s2, hv)));
        v128.store(g3 + jo, f32x4.add(v128.load(g3 + jo), f32x4.mul(s3, hv)));
      }
      for (let j = k4; j < k; j++) {
        const jo = <usize>j << 2;
        const hv = load<f32>(hr + jo);
        store<f32>(g0 + jo, load<f32>(g0 + jo) + a0 * hv);
        store<f32>(g1 + jo, load<f32>(g1 + jo) + a1 * hv);
        store<f32>(g2 + jo, load<f32>(g2 + jo) + a2 * hv);
        store<f32>(g3 + jo, load<f32>(g3 + jo) + a3 * hv);
      }
    }
  }
  for (; r < m; r++) {
    const gr = g + <usize>r * row;
    const er = e + <usize>r * row;
    memory.fill(gr, 0, row);
    for (let c = 0; c < k; c++) axpyRow(gr, h + <usize>c * row, load<f32>(er + (<usize>c << 2)), k);
  }
}
