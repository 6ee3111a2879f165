// AutoRound's per-linear kernels (src/algos/autoround.ts), 128-bit SIMD. Scalar references, bit-exact:
// src/kernels/autoround.ts (sweepRowRef, gradRowsRef).
//
//   sweepRow  one signed-gradient sweep over one row of W (k elements): offsets v step against the sign
//             of their gradient G, a proposed flip between the two levels lo/hi is taken when it lowers
//             the row's loss exactly (dl = 2 d g + d^2 H_cc), and the row of G follows it at once
//             (G += d H[c, :]); returns the sum of the taken dl. With ga != 0 the clip ratios'
//             gradient sum_j g_j q_j per block of bs is added to ga (f64).
//   gradRows  G (m x k) = E (m x k) H (k x k, symmetric), in strips of 16 columns (H's strip copied
//             contiguous first), two rows at a time.
//
// Scalar parts in f64 exactly as the reference's JavaScript arithmetic; the row updates of G in f32
// lanes with separate multiply and add (no fused multiply-add in either build: the reference rounds the
// product, then the sum).
import { choiceHalf, chosen4, hiHalf, mask4, stepHalf } from './_sign-step';

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

// @ts-ignore: decorator
@inline function sweepOne(g: usize, h: usize, hd: usize, v: usize, t: usize, lo: usize, hi: usize, ch: usize, k: i32, step: f64, ga: usize, bs: i32, col: i32): f64 {
  // one element, exactly the reference's operations (ga's sum in memory); returns the taken dl, or 0
  const row = <usize>k << 2;
  const o = <usize>col << 2;
  const gv = <f64>load<f32>(g + o);
  if (gv == 0) return 0;
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
  if (nc == c) return 0;
  const d = nc ? u - l : l - u;
  const dl = 2 * d * gv + d * d * <f64>load<f32>(hd + o);
  if (!(dl < 0)) return 0;
  store<u8>(ch + <usize>col, nc);
  axpyRow(g, h + <usize>col * row, <f32>d, k);
  return dl;
}

// @ts-ignore: decorator
@inline function takenHalf(pm: v128, nm: v128, gv: v128, l: v128, u: v128, hdv: v128): v128 {
  // lanes of pm whose exact change of the loss dl = 2 d g + d^2 H_cc is < 0 (f64, no fused multiply-add),
  // d = u - l towards hi (nm), l - u towards lo. As l - u = -(u - l) exactly, (2 d) g = +-((2 (u - l)) g)
  // and d d = (u - l)(u - l) bit for bit: the product is computed once and its sign flipped towards lo
  const ul = f64x2.sub(u, l);
  const a = f64x2.mul(f64x2.mul(f64x2.splat(2), ul), gv);
  const sa = v128.xor(a, v128.andnot(i64x2.splat(0x8000000000000000), nm)); // -a where the choice goes to lo
  const dl = f64x2.add(sa, f64x2.mul(f64x2.mul(ul, ul), hdv));
  return v128.and(pm, f64x2.lt(dl, f64x2.splat(0)));
}

/**
 * The sweep, four elements at a time: their steps and proposed choices in f64 lanes (the reference's
 * f64 operations, lane by lane: promote, subtract, compare-select, demote); when none of the four takes
 * a flip (none proposes one, or the exact change of the loss rejects each proposal: dl computed as the
 * reference's, in f64 lanes without fused multiply-add), G is unchanged over them and the four are
 * committed at once (offsets; gradient of the clip ratio
 * summed in order, g q exact in f64); a group with a proposal runs element by element (sweepOne), since a
 * taken flip changes the G of the elements after it. The clip gradient's sum of a block stays in a local
 * between groups. Elements past the last group of four in a block: sweepOne.
 */
export function sweepRow(g: usize, h: usize, hd: usize, v: usize, t: usize, lo: usize, hi: usize, ch: usize, k: i32, step: f64, ga: usize, bs: i32): f64 {
  let loss: f64 = 0;
  const sp = f64x2.splat(step);
  const sn = f64x2.splat(-step);
  let col = 0;
  while (col < k) {
    const b = col / bs;
    const segEnd = ga ? min(k, (b + 1) * bs) : k;
    const gp = ga ? ga + (<usize>b << 3) : 0;
    let s: f64 = ga ? load<f64>(gp) : 0;
    for (; col + 4 <= segEnd; col += 4) {
      const o = <usize>col << 2;
      const g4 = v128.load(g + o);
      const gl = f64x2.promote_low_f32x4(g4);
      const gh = f64x2.promote_low_f32x4(hiHalf(g4));
      const cm = chosen4(ch + <usize>col); // lanes choosing hi
      const v4 = v128.load(v + o);
      const vl = stepHalf(f64x2.promote_low_f32x4(v4), gl, sp, sn);
      const vh = stepHalf(f64x2.promote_low_f32x4(hiHalf(v4)), gh, sp, sn);
      const t4 = v128.load(t + o);
      const nl = choiceHalf(f64x2.promote_low_f32x4(t4), vl);
      const nh = choiceHalf(f64x2.promote_low_f32x4(hiHalf(t4)), vh);
      // proposals: g != 0 and the new choice differs from the old one
      const n4 = mask4(nl, nh);
      const live = f32x4.ne(g4, f32x4.splat(0));
      const prop = v128.and(v128.xor(n4, cm), live);
      // a proposal is taken when dl = 2 d g + d^2 H_cc < 0 (d = hi - lo towards hi, lo - hi towards lo);
      // only a taken one changes G: the group then runs element by element. Proposals are common (an
      // offset past the threshold whose flip the loss rejects proposes again on every sweep), taken ones
      // rare: dl is computed for every group, one branch on the taken ones
      const l4 = v128.load(lo + o), u4 = v128.load(hi + o), h4 = v128.load(hd + o);
      const tl = takenHalf(i64x2.extend_low_i32x4_s(prop), nl, gl, f64x2.promote_low_f32x4(l4), f64x2.promote_low_f32x4(u4), f64x2.promote_low_f32x4(h4));
      const th = takenHalf(i64x2.extend_high_i32x4_s(prop), nh, gh, f64x2.promote_low_f32x4(hiHalf(l4)), f64x2.promote_low_f32x4(hiHalf(u4)), f64x2.promote_low_f32x4(hiHalf(h4)));
      if (v128.any_true(v128.or(tl, th))) {
        if (ga) store<f64>(gp, s);
        for (let e = col; e < col + 4; e++) loss += sweepOne(g, h, hd, v, t, lo, hi, ch, k, step, ga, bs, e);
        if (ga) s = load<f64>(gp);
        continue;
      }
      const vn = i8x16.shuffle(f32x4.demote_f64x2_zero(vl), f32x4.demote_f64x2_zero(vh), 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
      v128.store(v + o, v128.bitselect(vn, v4, live));
      if (ga) {
        // g q of each element in order (+-0 where g = 0: adding it leaves s as it is)
        const q4 = v128.bitselect(u4, l4, cm);
        const pl = f64x2.mul(gl, f64x2.promote_low_f32x4(q4));
        const ph = f64x2.mul(gh, f64x2.promote_low_f32x4(hiHalf(q4)));
        s += f64x2.extract_lane(pl, 0);
        s += f64x2.extract_lane(pl, 1);
        s += f64x2.extract_lane(ph, 0);
        s += f64x2.extract_lane(ph, 1);
      }
    }
    if (ga) store<f64>(gp, s);
    for (; col < segEnd; col++) loss += sweepOne(g, h, hd, v, t, lo, hi, ch, k, step, ga, bs, col);
  }
  return loss;
}

export function gradRows(g: usize, e: usize, h: usize, m: i32, k: i32, pk: usize): void {
  // strips of 16 columns of G, two rows at a time with their 2 x 16 sums in registers; each sum runs over c
  // in order, as the reference's. H's strip (k x 16) is first copied to pk, 64 contiguous bytes per c (it
  // stays in cache over all rows; read in place, each step of c was a new row of H, k floats apart: a new
  // page every step for k of 1024 and more)
  const row = <usize>k << 2;
  const k16 = k & ~15;
  const m2 = m & ~1;
  for (let j = 0; j < k16; j += 16) {
    for (let c = 0; c < k; c++) {
      const src = h + <usize>c * row + (<usize>j << 2);
      const dst = pk + (<usize>c << 6);
      v128.store(dst, v128.load(src));
      v128.store(dst, v128.load(src, 16), 16);
      v128.store(dst, v128.load(src, 32), 32);
      v128.store(dst, v128.load(src, 48), 48);
    }
    const hj = pk;
    for (let r = 0; r < m2; r += 2) {
      const e0 = e + <usize>r * row;
      const e1 = e0 + row;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
      for (let c = 0; c < k; c++) {
        const hp = hj + (<usize>c << 6);
        const h0 = v128.load(hp), h1 = v128.load(hp + 16), h2 = v128.load(hp + 32), h3 = v128.load(hp + 48);
        const s0 = v128.load32_splat(e0 + (<usize>c << 2));
        const s1 = v128.load32_splat(e1 + (<usize>c << 2));
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
        const hp = hj + (<usize>c << 6);
        const s0 = v128.load32_splat(e0 + (<usize>c << 2));
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
 * H's diagonal blocks (bs x bs at c0 = 0, bs, ..., k - bs) promoted to f64 (exact) one after another into
 * dst (k x bs f64): quadBlockD then reads a block's rows bs values apart instead of k, with no promotion
 * in its loop (the same products).
 */
export function packDiag(h: usize, k: i32, bs: i32, dst: usize): void {
  for (let c0 = 0; c0 < k; c0 += bs) packBlock(h, k, c0, bs, dst + ((<usize>c0 * <usize>bs) << 3));
}

/** the block H[c0 .. c0 + bs, c0 .. c0 + bs] promoted to f64 into dst (bs x bs) */
export function packBlock(h: usize, k: i32, c0: i32, bs: i32, dst: usize): void {
  const row = <usize>k << 2;
  for (let i = 0; i < bs; i++) {
    const src = h + <usize>(c0 + i) * row + (<usize>c0 << 2);
    const d = dst + ((<usize>i * <usize>bs) << 3);
    for (let j = 0; j < bs; j++) store<f64>(d + (<usize>j << 3), <f64>load<f32>(src + (<usize>j << 2)));
  }
}

/**
 * delta^T H[c0.., c0..] delta over bs elements (f64; delta f32) on the block promoted to f64 (hb: bs x bs,
 * packDiag / packBlock; a promoted f32 is exact, so the products are those of the f32 values): per i, the
 * sum over j in two lanes (even j, odd j) added at the end, as the reference's. Rows i with delta_i = 0 are
 * skipped; the others are taken four at a time (one pass over delta for four rows of H: four independent
 * sums), each row's sum in the same order as alone, and added to the result in increasing i. delta is
 * promoted once into d64 (bs f64).
 */
export function quadBlockD(hb: usize, delta: usize, d64: usize, bs: i32): f64 {
  for (let j = 0; j < bs; j++) store<f64>(d64 + (<usize>j << 3), <f64>load<f32>(delta + (<usize>j << 2)));
  let dl: f64 = 0;
  const b2 = bs & ~1;
  const rowBytes = <usize>bs << 3;
  let i: i32 = 0;
  while (true) {
    while (i < bs && load<f32>(delta + (<usize>i << 2)) == 0) i++;
    const ia = i++;
    while (i < bs && load<f32>(delta + (<usize>i << 2)) == 0) i++;
    const ib = i++;
    while (i < bs && load<f32>(delta + (<usize>i << 2)) == 0) i++;
    const ic = i++;
    while (i < bs && load<f32>(delta + (<usize>i << 2)) == 0) i++;
    const id = i++;
    if (id >= bs) {
      if (ia < bs) dl += quadRowD(hb + <usize>ia * rowBytes, d64, ia, bs, b2);
      if (ib < bs) dl += quadRowD(hb + <usize>ib * rowBytes, d64, ib, bs, b2);
      if (ic < bs) dl += quadRowD(hb + <usize>ic * rowBytes, d64, ic, bs, b2);
      break;
    }
    const ha = hb + <usize>ia * rowBytes, hbb = hb + <usize>ib * rowBytes;
    const hc = hb + <usize>ic * rowBytes, hd = hb + <usize>id * rowBytes;
    let sa = f64x2.splat(0), sb = f64x2.splat(0), sc = f64x2.splat(0), sd = f64x2.splat(0);
    for (let j = 0; j < b2; j += 2) {
      const o = <usize>j << 3;
      const dv = v128.load(d64 + o);
      sa = f64x2.add(sa, f64x2.mul(v128.load(ha + o), dv));
      sb = f64x2.add(sb, f64x2.mul(v128.load(hbb + o), dv));
      sc = f64x2.add(sc, f64x2.mul(v128.load(hc + o), dv));
      sd = f64x2.add(sd, f64x2.mul(v128.load(hd + o), dv));
    }
    dl += quadEndD(sa, ha, d64, ia, bs, b2);
    dl += quadEndD(sb, hbb, d64, ib, bs, b2);
    dl += quadEndD(sc, hc, d64, ic, bs, b2);
    dl += quadEndD(sd, hd, d64, id, bs, b2);
  }
  return dl;
}

/** row i's term delta_i (H[i, :] delta) from its two lanes (an odd bs's last element in lane 0) */
// @ts-ignore: decorator
@inline function quadEndD(s: v128, hr: usize, d64: usize, i: i32, bs: i32, b2: i32): f64 {
  let s0 = f64x2.extract_lane(s, 0);
  const s1 = f64x2.extract_lane(s, 1);
  if (b2 < bs) s0 += load<f64>(hr + (<usize>b2 << 3)) * load<f64>(d64 + (<usize>b2 << 3));
  return load<f64>(d64 + (<usize>i << 3)) * (s0 + s1);
}

/** one row's term alone (the rows past the last group of four) */
function quadRowD(hr: usize, d64: usize, i: i32, bs: i32, b2: i32): f64 {
  let s = f64x2.splat(0);
  for (let j = 0; j < b2; j += 2) {
    const o = <usize>j << 3;
    s = f64x2.add(s, f64x2.mul(v128.load(hr + o), v128.load(d64 + o)));
  }
  return quadEndD(s, hr, d64, i, bs, b2);
}

// ---------------------------------------------------------------------------------------------------
// The per-linear stage's block brackets on an affine grid and regrid's terms (src/algos/autoround.ts
// bracketBlock's affine path and regrid's loops, which are the references: the same f64 operations in
// the same order, each result rounded to f32 where the TypeScript stores it).

/**
 * Element j's bracket on the affine grid gv (last = the index of its last level, perLevel = last / (gv[last]
 * - gv[0])) around the value p: the levels gv[l] <= p < gv[l + 1] (at or below the first level, or NaN: the
 * first, with the second when p is on it; at or above the last: the last twice) into lo / hi and their
 * codes into loC / hiC. Shared by bracketAffine (p = the weight) and startAffine (p = just past the start).
 */
@inline function storeBracket(p: f64, j: i32, gv: usize, gc: usize, last: i32, v0: f64, vLast: f64, perLevel: f64, lo: usize, hi: usize, loC: usize, hiC: usize): void {
  let l: i32, u: i32;
  if (!(p > v0)) {
    l = 0;
    u = p >= v0 ? min(last, 1) : 0;
  } else if (p >= vLast) {
    l = last;
    u = last;
  } else {
    l = <i32>Math.min(<f64>(last - 1), Math.max(0, Math.floor((p - v0) * perLevel)));
    while (<f64>load<f32>(gv + (<usize>l << 2)) > p) l--;
    while (<f64>load<f32>(gv + (<usize>(l + 1) << 2)) <= p) l++;
    u = l + 1;
  }
  const o = <usize>j << 2;
  store<f32>(lo + o, load<f32>(gv + (<usize>l << 2)));
  store<f32>(hi + o, load<f32>(gv + (<usize>u << 2)));
  store<u16>(loC + (<usize>j << 1), load<u16>(gc + (<usize>l << 1)));
  store<u16>(hiC + (<usize>j << 1), load<u16>(gc + (<usize>u << 1)));
}

/**
 * The levels around each of bs elements w[..] on the affine grid gv (nAff f32 levels, strictly
 * increasing; gc their u16 codes): the pair gv[l] <= x < gv[l + 1] inside the grid (at or below the
 * first level, or NaN: the first, with the second when x is on it; at or above the last: the last
 * twice), into lo / hi / loC / hiC and t = clamp((x - lo) / (hi - lo), 0, 1) (0 when lo = hi).
 */
export function bracketAffine(w: usize, gv: usize, gc: usize, nAff: i32, lo: usize, hi: usize, loC: usize, hiC: usize, t: usize, bs: i32): void {
  const last = nAff - 1;
  const v0 = <f64>load<f32>(gv);
  const vLast = <f64>load<f32>(gv + (<usize>last << 2));
  const perLevel = <f64>last / (vLast - v0);
  for (let j = 0; j < bs; j++) {
    const x = <f64>load<f32>(w + (<usize>j << 2));
    const o = <usize>j << 2;
    storeBracket(x, j, gv, gc, last, v0, vLast, perLevel, lo, hi, loC, hiC);
    const vl = load<f32>(lo + o);
    const vu = load<f32>(hi + o);
    store<f32>(t + o, vu > vl ? <f32>Math.min(1, Math.max(0, (x - <f64>vl) / (<f64>vu - <f64>vl))) : 0);
  }
}

/**
 * regrid's change of one block: delta_j = (the candidate's choice at t_j + v_j) - (the current value),
 * stored f32, into delta; returns sum_j 2 delta_j G_j (in increasing j)
 */
export function regridDelta(cL: usize, cU: usize, cT: usize, v: usize, ch: usize, lo: usize, hi: usize, g: usize, delta: usize, bs: i32): f64 {
  let dl: f64 = 0;
  for (let j = 0; j < bs; j++) {
    const o = <usize>j << 2;
    const next = <f64>load<f32>(cT + o) + <f64>load<f32>(v + o) >= 0.5 ? load<f32>(cU + o) : load<f32>(cL + o);
    const now = load<u8>(ch + <usize>j) ? load<f32>(hi + o) : load<f32>(lo + o);
    const d = <f32>(<f64>next - <f64>now);
    store<f32>(delta + o, d);
    dl += 2 * <f64>d * <f64>load<f32>(g + o);
  }
  return dl;
}

/** the candidate block's levels into the element arrays, and the choices t + v >= 0.5 */
export function takeBlock(cL: usize, cU: usize, cLC: usize, cUC: usize, cT: usize, lo: usize, hi: usize, loC: usize, hiC: usize, t: usize, v: usize, ch: usize, bs: i32): void {
  memory.copy(lo, cL, <usize>bs << 2);
  memory.copy(hi, cU, <usize>bs << 2);
  memory.copy(loC, cLC, <usize>bs << 1);
  memory.copy(hiC, cUC, <usize>bs << 1);
  memory.copy(t, cT, <usize>bs << 2);
  for (let j = 0; j < bs; j++) store<u8>(ch + <usize>j, <f64>load<f32>(cT + (<usize>j << 2)) + <f64>load<f32>(v + (<usize>j << 2)) >= 0.5 ? 1 : 0);
}

/**
 * A learned tensor's start on an affine grid (src/pipeline/block-round.ts roundingStart: algos/autoround.ts
 * bracketBlock's affine path with `around`, then chooseStart, which are the references): for each of bs
 * elements, the levels around p = a +- max(1e-30, |a| 1e-5) (a = the start's value q, towards the weight
 * x) on the grid gv (as bracketAffine, t from x), then the choice ch = (q is hi and not lo) and the offset
 * v = clamp(ch ? max(0, 0.5 + margin - t) : min(0, 0.5 - margin - t), -0.5, 0.5), stored f32.
 */
export function startAffine(w: usize, q: usize, gv: usize, gc: usize, nAff: i32, lo: usize, hi: usize, loC: usize, hiC: usize, t: usize, v: usize, ch: usize, bs: i32, margin: f64): void {
  const last = nAff - 1;
  const v0 = <f64>load<f32>(gv);
  const vLast = <f64>load<f32>(gv + (<usize>last << 2));
  const perLevel = <f64>last / (vLast - v0);
  for (let j = 0; j < bs; j++) {
    const o = <usize>j << 2;
    const x = <f64>load<f32>(w + o);
    const a = <f64>load<f32>(q + o);
    const p = a + (x > a ? 1.0 : -1.0) * Math.max(1e-30, Math.abs(a) * 1e-5);
    storeBracket(p, j, gv, gc, last, v0, vLast, perLevel, lo, hi, loC, hiC);
    const vl = load<f32>(lo + o);
    const vu = load<f32>(hi + o);
    const tj = vu > vl ? <f32>Math.min(1, Math.max(0, (x - <f64>vl) / (<f64>vu - <f64>vl))) : <f32>0;
    store<f32>(t + o, tj);
    const qf = load<f32>(q + o);
    const c: u8 = qf == vu && qf != vl ? 1 : 0;
    store<u8>(ch + <usize>j, c);
    const off = c ? Math.max(0, 0.5 + margin - <f64>tj) : Math.min(0, 0.5 - margin - <f64>tj);
    store<f32>(v + o, <f32>Math.min(0.5, Math.max(-0.5, off)));
  }
}
