// The signed-gradient step of learned rounding offsets, two elements in f64 lanes, shared by
// wasm/autoround.ts (the per-linear sweep) and wasm/train.ts (the block objective's step): the
// reference's f64 operations lane by lane (promote, subtract, compare-select), no fused multiply-add.

/** the high 8 bytes of x in both halves (f64x2.promote_low_f32x4 of it: lanes 2 and 3 of an f32x4) */
// @ts-ignore: decorator
@inline export function hiHalf(x: v128): v128 {
  return i8x16.shuffle(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
}

/** two f64x2 masks (elements 0-1, 2-3) as one i32x4 mask of the four elements */
// @ts-ignore: decorator
@inline export function mask4(lo: v128, hi: v128): v128 {
  return i8x16.shuffle(lo, hi, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
}

/** the four current choices (bytes at p, 0 = lo, else hi) as an i32x4 mask (lanes choosing hi) */
// @ts-ignore: decorator
@inline export function chosen4(p: usize): v128 {
  return i32x4.ne(i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(v128.load32_zero(p))), i32x4.splat(0));
}

/**
 * v - step sign(g) clamped to [-0.5, 0.5]: v, g as f64x2 (sp = splat(step), sn = splat(-step)). The clamp
 * s > 0.5 ? 0.5 : s < -0.5 ? -0.5 : s is pmax(pmin(s, 0.5), -0.5) lane by lane (pmin(a, b) = b < a ? b : a,
 * pmax(a, b) = a < b ? b : a: the same comparisons, a NaN kept), one instruction each instead of a compare
 * and a select.
 */
// @ts-ignore: decorator
@inline export function stepHalf(v: v128, g: v128, sp: v128, sn: v128): v128 {
  const s = f64x2.sub(v, v128.bitselect(sp, sn, f64x2.gt(g, f64x2.splat(0))));
  return f64x2.pmax(f64x2.pmin(s, f64x2.splat(0.5)), f64x2.splat(-0.5));
}

/** the choices t + v >= 0.5 of two elements as f64x2 masks (t, v: f64x2) */
// @ts-ignore: decorator
@inline export function choiceHalf(t: v128, v: v128): v128 {
  return f64x2.ge(f64x2.add(t, v), f64x2.splat(0.5));
}
