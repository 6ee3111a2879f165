// The signed-gradient step of learned rounding offsets, two elements in f64 lanes, shared by
// wasm/autoround.ts (the per-linear sweep) and wasm/train.ts (the block objective's step): the
// reference's f64 operations lane by lane (promote, subtract, compare-select), no fused multiply-add.

/** v - step sign(g) clamped to [-0.5, 0.5]: v, g as f64x2 (sp = splat(step), sn = splat(-step)) */
// @ts-ignore: decorator
@inline export function stepHalf(v: v128, g: v128, sp: v128, sn: v128): v128 {
  const half = f64x2.splat(0.5);
  const nhalf = f64x2.splat(-0.5);
  const s = f64x2.sub(v, v128.bitselect(sp, sn, f64x2.gt(g, f64x2.splat(0))));
  return v128.bitselect(half, v128.bitselect(nhalf, s, f64x2.lt(s, nhalf)), f64x2.gt(s, half));
}

/** the choices t + v >= 0.5 of two elements as f64x2 masks (t, v: f64x2) */
// @ts-ignore: decorator
@inline export function choiceHalf(t: v128, v: v128): v128 {
  return f64x2.ge(f64x2.add(t, v), f64x2.splat(0.5));
}
