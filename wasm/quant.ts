// GGML block quantizers (no importance matrix), bit-exact with the scalar TypeScript references in
// src/quant/ggml/{legacy,kquants,fp4}.ts, which are byte-identical to llama.cpp's quantize_row_X_ref.
//
// Float32 semantics: every step is the same IEEE float32 operation, in the same order, as the scalar
// code; no fused multiply-add and no relaxed instruction is used, so the relaxed-SIMD build and the
// plain-SIMD build compute the same bytes. Where the scalar code reduces within a block in an order
// that matters (sequential float32 sums, first-occurrence maxima), the lanes of a vector run four
// independent sub-blocks side by side (a 4x4 transpose puts element j of sub-blocks 0..3 into one
// vector), and each lane follows the scalar order exactly. Where the order does not matter (max of
// |x|, the element-wise rounding after the scale is known) the lanes run along the elements.
//
// JavaScript semantics mirrored here:
//   - `d ? a : b` on a float32 d is false for 0 and NaN;
//   - `v | 0` (ToInt32) is 0 for NaN and +-inf; the kernels meet infinite products only when
//     1/d overflows, handled per block;
//   - nearest_int(v) = bits(v + 1.5 * 2^23) & 0x7fffff - 0x400000, exactly C's trick (also outside
//     |v| <= 2^22, where the TypeScript nearestInt reads the same bits).
//
// Every kernel takes (src, nBlocks, dst) pointers into this module's memory, and returns 1 without
// finishing when the input holds a NaN or an infinity (the caller then runs the reference, which
// reports the bad element), else 0.

export function heapBase(): usize {
  return __heap_base;
}

// ---------------------------------------------------------------- shared helpers

const F32_MAX: f32 = 3.4028234663852886e38;
const GROUP_MAX_EPS: f32 = 1e-15;
/** 1.5 * 2^23: v + MAGIC puts round-half-even(v) into the low mantissa bits */
const MAGIC: f32 = 12582912.0;

// @ts-ignore: decorator
@inline function sel(a: v128, b: v128, m: v128): v128 {
  return v128.bitselect(a, b, m);
}

/** lanes holding NaN or +-inf (as all-ones) */
// @ts-ignore: decorator
@inline function nonFinite(x: v128): v128 {
  return i32x4.gt_s(v128.and(x, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f7fffff));
}

/** nearest_int per lane: C's bit trick, exact for every input */
// @ts-ignore: decorator
@inline function nearestIntV(v: v128): v128 {
  return i32x4.sub(v128.and(f32x4.add(v, f32x4.splat(MAGIC)), i32x4.splat(0x007fffff)), i32x4.splat(0x00400000));
}

/** (v + MAGIC) - MAGIC: round half to even as float32 (what the TypeScript inner loops use; |v| <= 2^22) */
// @ts-ignore: decorator
@inline function rintV(v: v128): v128 {
  return f32x4.sub(f32x4.add(v, f32x4.splat(MAGIC)), f32x4.splat(MAGIC));
}

// @ts-ignore: decorator
@inline function nearestInt(v: f32): i32 {
  return (reinterpret<i32>(v + MAGIC) & 0x007fffff) - 0x00400000;
}

/** JavaScript truthiness of a float32 */
// @ts-ignore: decorator
@inline function truthy(v: f32): bool {
  return v != 0 && v == v;
}

// @ts-ignore: decorator
@inline function hpmin(m: v128): f32 {
  m = f32x4.pmin(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
  m = f32x4.pmin(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
  return f32x4.extract_lane(m, 0);
}

// @ts-ignore: decorator
@inline function hpmax(m: v128): f32 {
  m = f32x4.pmax(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
  m = f32x4.pmax(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
  return f32x4.extract_lane(m, 0);
}

/** float32 -> fp16 bits, round to nearest even (src/quant/ggml/half.ts f32ToF16) */
function f32ToF16(x: f32): u32 {
  const u = reinterpret<u32>(x);
  const sign = (u >>> 16) & 0x8000;
  const exp = <i32>((u >>> 23) & 0xff);
  let man = u & 0x7fffff;
  if (exp == 0xff) return sign | (man ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = <u32>(14 - e);
    const half: u32 = 1 << (shift - 1);
    const rest = man & ((<u32>1 << shift) - 1);
    let m = man >>> shift;
    if (rest > half || (rest == half && (m & 1) != 0)) m++;
    return sign | m;
  }
  let h = (<u32>e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1) != 0)) h++;
  return sign | h;
}

/** fp16 bits -> float32 (exact; NaNs as the canonical NaN, like the TypeScript table) */
function f16ToF32(h: u32): f32 {
  const s: u32 = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e == 0) {
    const v = <f32>m * <f32>5.9604644775390625e-8; // m * 2^-24, exact
    return s ? -v : v;
  }
  if (e == 31) return m ? NaN : reinterpret<f32>(s | 0x7f800000);
  return reinterpret<f32>(s | ((e + 112) << 23) | (m << 13));
}

/** stores fp16(v) at p and returns the float32 value of the stored half */
// @ts-ignore: decorator
@inline function storeF16(p: usize, v: f32): f32 {
  const h = f32ToF16(v);
  store<u16>(p, <u16>h);
  return f16ToF32(h);
}

/**
 * 32 float32 at p: the largest |x|, as the integer maximum of the magnitude bits (non-negative floats
 * order like their bits); NaN or infinity give bits above 0x7f7fffff, returned as a NaN.
 */
// @ts-ignore: decorator
@inline function absMax32(p: usize): f32 {
  const mask = i32x4.splat(0x7fffffff);
  const m0 = i32x4.max_s(v128.and(v128.load(p), mask), v128.and(v128.load(p, 16), mask));
  const m1 = i32x4.max_s(v128.and(v128.load(p, 32), mask), v128.and(v128.load(p, 48), mask));
  const m2 = i32x4.max_s(v128.and(v128.load(p, 64), mask), v128.and(v128.load(p, 80), mask));
  const m3 = i32x4.max_s(v128.and(v128.load(p, 96), mask), v128.and(v128.load(p, 112), mask));
  return absBitsMax(i32x4.max_s(i32x4.max_s(m0, m1), i32x4.max_s(m2, m3)));
}

/** the float of the largest lane of magnitude bits m; NaN when it is not finite */
// @ts-ignore: decorator
@inline function absBitsMax(m: v128): f32 {
  m = i32x4.max_s(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
  m = i32x4.max_s(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
  const bits = i32x4.extract_lane(m, 0);
  return bits > 0x7f7fffff ? NaN : reinterpret<f32>(bits);
}

/** bit j set when x[j] == v (float compare), j < 32 */
// @ts-ignore: decorator
@inline function eqMask32(p: usize, v: v128): u32 {
  return <u32>(i32x4.bitmask(f32x4.eq(v128.load(p), v)) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 16), v)) << 4) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 32), v)) << 8) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 48), v)) << 12) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 64), v)) << 16) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 80), v)) << 20) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 96), v)) << 24) |
    (i32x4.bitmask(f32x4.eq(v128.load(p, 112), v)) << 28));
}

/** bit j set when |x[j]| == v */
// @ts-ignore: decorator
@inline function absEqMask32(p: usize, v: v128): u32 {
  return <u32>(i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p)), v)) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 16)), v)) << 4) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 32)), v)) << 8) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 48)), v)) << 12) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 64)), v)) << 16) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 80)), v)) << 20) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 96)), v)) << 24) |
    (i32x4.bitmask(f32x4.eq(f32x4.abs(v128.load(p, 112)), v)) << 28));
}

/**
 * The signed value of largest magnitude in a 32-element block, first occurrence
 * (`if (amax < |v|) { amax = |v|; max = v; }` from amax = max = 0). Returns NaN for non-finite input.
 * The sign is found from the largest and smallest signed values; only a block holding both +amax and
 * -amax needs the index of the first.
 */
// @ts-ignore: decorator
@inline function signedMax32(p: usize): f32 {
  const amax = absMax32(p);
  if (!(amax <= F32_MAX)) return NaN;
  if (amax == 0) return 0;
  const x0 = v128.load(p), x1 = v128.load(p, 16), x2 = v128.load(p, 32), x3 = v128.load(p, 48);
  const x4 = v128.load(p, 64), x5 = v128.load(p, 80), x6 = v128.load(p, 96), x7 = v128.load(p, 112);
  const hi = hpmax(f32x4.pmax(f32x4.pmax(f32x4.pmax(x0, x1), f32x4.pmax(x2, x3)), f32x4.pmax(f32x4.pmax(x4, x5), f32x4.pmax(x6, x7))));
  const lo = hpmin(f32x4.pmin(f32x4.pmin(f32x4.pmin(x0, x1), f32x4.pmin(x2, x3)), f32x4.pmin(f32x4.pmin(x4, x5), f32x4.pmin(x6, x7))));
  if (hi != amax) return -amax;
  if (lo != -amax) return amax;
  return load<f32>(p + (<usize>ctz(absEqMask32(p, f32x4.splat(amax))) << 2));
}

/** packs the 32 codes c0..c7 (i32 lanes, each < 16) of one block as qs[j] = c[j] | c[j + 16] << 4 */
// @ts-ignore: decorator
@inline function packNibbles32(c0: v128, c1: v128, c2: v128, c3: v128, c4: v128, c5: v128, c6: v128, c7: v128): v128 {
  const lo0 = i16x8.narrow_i32x4_u(c0, c1);
  const lo1 = i16x8.narrow_i32x4_u(c2, c3);
  const hi0 = i16x8.narrow_i32x4_u(c4, c5);
  const hi1 = i16x8.narrow_i32x4_u(c6, c7);
  return i8x16.narrow_i16x8_u(v128.or(lo0, i16x8.shl(hi0, 4)), v128.or(lo1, i16x8.shl(hi1, 4)));
}

/** 16 byte lanes from 4 vectors of i32 codes in 0..255 */
// @ts-ignore: decorator
@inline function bytes16(c0: v128, c1: v128, c2: v128, c3: v128): v128 {
  return i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(c0, c1), i16x8.narrow_i32x4_u(c2, c3));
}

/** qs nibbles of bytes a (elements 0..15) and b (elements 16..31): (a & 15) | (b & 15) << 4 */
// @ts-ignore: decorator
@inline function nibbles(a: v128, b: v128): v128 {
  const m = i8x16.splat(15);
  return v128.or(v128.and(a, m), i16x8.shl(v128.and(b, m), 4));
}

// ---------------------------------------------------------------- Q8_0

/**
 * roundf (half away from zero) per lane, as i32, for |v| <= 2^23: trunc(v + copysign(0.49999997, v))
 * (the largest float below 0.5: v + 0.5 would round 0.49999997 up; checked against roundf for every
 * float32 of magnitude <= 2^23). Q8_0's |x / d| stays below 128.
 */
// @ts-ignore: decorator
@inline function roundAwayI(v: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.add(v, v128.or(v128.and(v, i32x4.splat(0x80000000)), f32x4.splat(0.49999997))));
}

/** quantize_row_q8_0_ref: 34-byte blocks, d = amax / 127, q = roundf(x / d) */
export function quantizeQ8_0(src: usize, nb: i32, dst: usize): i32 {
  for (let b = 0; b < nb; b++, src += 128, dst += 34) {
    const amax = absMax32(src);
    if (!(amax <= F32_MAX)) return 1;
    const d: f32 = amax / 127;
    const id: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(dst, d);
    if (!(Mathf.abs(id) <= F32_MAX)) {
      // 1/d overflowed: every x * id is +-inf or NaN, which (v +- 0.5) | 0 maps to 0
      v128.store(dst, i32x4.splat(0), 2);
      v128.store(dst, i32x4.splat(0), 18);
      continue;
    }
    const vid = f32x4.splat(id);
    const q0 = roundAwayI(f32x4.mul(v128.load(src), vid));
    const q1 = roundAwayI(f32x4.mul(v128.load(src, 16), vid));
    const q2 = roundAwayI(f32x4.mul(v128.load(src, 32), vid));
    const q3 = roundAwayI(f32x4.mul(v128.load(src, 48), vid));
    const q4 = roundAwayI(f32x4.mul(v128.load(src, 64), vid));
    const q5 = roundAwayI(f32x4.mul(v128.load(src, 80), vid));
    const q6 = roundAwayI(f32x4.mul(v128.load(src, 96), vid));
    const q7 = roundAwayI(f32x4.mul(v128.load(src, 112), vid));
    // |q| <= 127: the saturating narrows are exact
    v128.store(dst, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)), 2);
    v128.store(dst, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7)), 18);
  }
  return 0;
}

// ---------------------------------------------------------------- Q4_0 / Q5_0

/** min((int)(x * id + offset), top) per lane; x * id + offset >= 0 here */
// @ts-ignore: decorator
@inline function symCode(x: v128, vid: v128, off: v128, top: v128): v128 {
  return i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(x, vid), off)), top);
}

/** quantize_row_q4_0_ref (18-byte blocks, d = max / -8) or quantize_row_q5_0_ref (22 bytes, d = max / -16) */
// @ts-ignore: decorator
@inline function quantizeSym(src: usize, nb: i32, dst: usize, five: bool): i32 {
  const bytes: usize = five ? 22 : 18;
  const qs: usize = five ? 6 : 2;
  const off = f32x4.splat(five ? 16.5 : 8.5);
  const top = i32x4.splat(five ? 31 : 15);
  for (let b = 0; b < nb; b++, src += 128, dst += bytes) {
    const max = signedMax32(src);
    if (max != max) return 1;
    const d: f32 = max / (five ? <f32>-16 : <f32>-8);
    const id: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(dst, d);
    if (!(Mathf.abs(id) <= F32_MAX)) {
      // 1/d overflowed: (x * id + offset) | 0 is 0 for every +-inf / NaN product
      if (five) store<u32>(dst, 0, 2);
      v128.store(dst + qs, i32x4.splat(0));
      continue;
    }
    const vid = f32x4.splat(id);
    const c0 = symCode(v128.load(src), vid, off, top);
    const c1 = symCode(v128.load(src, 16), vid, off, top);
    const c2 = symCode(v128.load(src, 32), vid, off, top);
    const c3 = symCode(v128.load(src, 48), vid, off, top);
    const c4 = symCode(v128.load(src, 64), vid, off, top);
    const c5 = symCode(v128.load(src, 80), vid, off, top);
    const c6 = symCode(v128.load(src, 96), vid, off, top);
    const c7 = symCode(v128.load(src, 112), vid, off, top);
    if (five) {
      const lo = bytes16(c0, c1, c2, c3);
      const hi = bytes16(c4, c5, c6, c7);
      // bit 4 of q[j] -> bit j of qh (j < 32): move it to the byte's sign bit and collect
      const qh = <u32>i8x16.bitmask(i16x8.shl(lo, 3)) | (<u32>i8x16.bitmask(i16x8.shl(hi, 3)) << 16);
      store<u32>(dst, qh, 2);
      v128.store(dst + qs, nibbles(lo, hi));
    } else {
      v128.store(dst + qs, packNibbles32(c0, c1, c2, c3, c4, c5, c6, c7));
    }
  }
  return 0;
}

export function quantizeQ4_0(src: usize, nb: i32, dst: usize): i32 {
  return quantizeSym(src, nb, dst, false);
}

export function quantizeQ5_0(src: usize, nb: i32, dst: usize): i32 {
  return quantizeSym(src, nb, dst, true);
}

// ---------------------------------------------------------------- Q4_1 / Q5_1

// @ts-ignore: decorator
@inline function asymCode(x: v128, vmin: v128, vid: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.add(f32x4.mul(f32x4.sub(x, vmin), vid), f32x4.splat(0.5)));
}

/** quantize_row_q4_1_ref (20-byte blocks, d = (max - min) / 15) or quantize_row_q5_1_ref (24 bytes, / 31) */
// @ts-ignore: decorator
@inline function quantizeAsym(src: usize, nb: i32, dst: usize, five: bool): i32 {
  const bytes: usize = five ? 24 : 20;
  const qs: usize = five ? 8 : 4;
  for (let b = 0; b < nb; b++, src += 128, dst += bytes) {
    const x0 = v128.load(src), x1 = v128.load(src, 16), x2 = v128.load(src, 32), x3 = v128.load(src, 48);
    const x4 = v128.load(src, 64), x5 = v128.load(src, 80), x6 = v128.load(src, 96), x7 = v128.load(src, 112);
    const bad = v128.or(v128.or(v128.or(nonFinite(x0), nonFinite(x1)), v128.or(nonFinite(x2), nonFinite(x3))), v128.or(v128.or(nonFinite(x4), nonFinite(x5)), v128.or(nonFinite(x6), nonFinite(x7))));
    if (v128.any_true(bad)) return 1;
    // `if (v < min) min = v` keeps the first of equal values: only +-0 compare equal with other bits
    let min = hpmin(f32x4.pmin(f32x4.pmin(f32x4.pmin(x0, x1), f32x4.pmin(x2, x3)), f32x4.pmin(f32x4.pmin(x4, x5), f32x4.pmin(x6, x7))));
    let max = hpmax(f32x4.pmax(f32x4.pmax(f32x4.pmax(x0, x1), f32x4.pmax(x2, x3)), f32x4.pmax(f32x4.pmax(x4, x5), f32x4.pmax(x6, x7))));
    if (min == 0) min = load<f32>(src + (<usize>ctz(eqMask32(src, f32x4.splat(0))) << 2));
    if (max == 0) max = load<f32>(src + (<usize>ctz(eqMask32(src, f32x4.splat(0))) << 2));
    const d: f32 = (max - min) / (five ? <f32>31 : <f32>15);
    const id: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(dst, d);
    storeF16(dst + 2, min);
    if (!(Mathf.abs(id) <= F32_MAX)) {
      if (five) store<u32>(dst, 0, 4);
      v128.store(dst + qs, i32x4.splat(0));
      continue;
    }
    const vmin = f32x4.splat(min), vid = f32x4.splat(id);
    let c0 = asymCode(x0, vmin, vid), c1 = asymCode(x1, vmin, vid), c2 = asymCode(x2, vmin, vid), c3 = asymCode(x3, vmin, vid);
    let c4 = asymCode(x4, vmin, vid), c5 = asymCode(x5, vmin, vid), c6 = asymCode(x6, vmin, vid), c7 = asymCode(x7, vmin, vid);
    if (five) {
      // (uint8_t)(v + 0.5f): no clamp, keep the low byte
      const ff = i32x4.splat(0xff);
      const lo = bytes16(v128.and(c0, ff), v128.and(c1, ff), v128.and(c2, ff), v128.and(c3, ff));
      const hi = bytes16(v128.and(c4, ff), v128.and(c5, ff), v128.and(c6, ff), v128.and(c7, ff));
      const qh = <u32>i8x16.bitmask(i16x8.shl(v128.and(lo, i8x16.splat(0x10)), 3)) | (<u32>i8x16.bitmask(i16x8.shl(v128.and(hi, i8x16.splat(0x10)), 3)) << 16);
      store<u32>(dst, qh, 4);
      v128.store(dst + qs, nibbles(lo, hi));
    } else {
      const top = i32x4.splat(15);
      c0 = i32x4.min_s(c0, top); c1 = i32x4.min_s(c1, top); c2 = i32x4.min_s(c2, top); c3 = i32x4.min_s(c3, top);
      c4 = i32x4.min_s(c4, top); c5 = i32x4.min_s(c5, top); c6 = i32x4.min_s(c6, top); c7 = i32x4.min_s(c7, top);
      v128.store(dst + qs, packNibbles32(c0, c1, c2, c3, c4, c5, c6, c7));
    }
  }
  return 0;
}

export function quantizeQ4_1(src: usize, nb: i32, dst: usize): i32 {
  return quantizeAsym(src, nb, dst, false);
}

export function quantizeQ5_1(src: usize, nb: i32, dst: usize): i32 {
  return quantizeAsym(src, nb, dst, true);
}

// ---------------------------------------------------------------- MXFP4 / NVFP4 (ggml)

/**
 * floor(fround(log2(a))) as the TypeScript reference computes it with Math.log2: the exact floor of
 * log2 from the exponent bits, plus one where the float32 rounding of log2 reaches the next integer
 * (the top few values below a power of two). LOG2_UP[ex + 149] holds the bits of the smallest float32
 * in [2^ex, 2^(ex+1)) whose rounded log2 reaches ex + 1 (0xffffffff: none); the caller loads the table.
 */
const LOG2_UP = memory.data(280 * 4, 16);

export function log2Table(): usize {
  return LOG2_UP;
}

// @ts-ignore: decorator
@inline function floorLog2f(a: f32): i32 {
  const bits = reinterpret<u32>(a);
  const ex: i32 = bits >= 0x800000 ? <i32>(bits >>> 23) - 127 : 31 - <i32>clz(bits) - 149;
  return ex + (bits >= load<u32>(LOG2_UP + (<usize>(ex + 149) << 2)) ? 1 : 0);
}

/**
 * best_index_mxfp4 for 4 elements, given the products p_m = kvalues[m] * d (m = 1..7; kvalues
 * doubled e2m1 magnitudes 0 1 2 3 4 6 8 12). The reference keeps the first code of least
 * |fl(p_m - |x|)|; fl(p_m - |x|) is non-decreasing in m, so the error falls then rises and the winner
 * is the last m whose error is strictly below its predecessor's. Sign bit for x < 0 unless the code is 0.
 */
// @ts-ignore: decorator
@inline function fp4Code(x: v128, p1: v128, p2: v128, p3: v128, p4: v128, p5: v128, p6: v128, p7: v128): v128 {
  const a = f32x4.abs(x);
  // best = max over m of (m if err_m < err_(m-1)): the m are increasing, so the last drop wins
  let e1 = f32x4.abs(f32x4.sub(p1, a));
  let best = v128.and(f32x4.lt(e1, a), i32x4.splat(1));
  let e2 = f32x4.abs(f32x4.sub(p2, a));
  best = i32x4.max_s(best, v128.and(f32x4.lt(e2, e1), i32x4.splat(2)));
  e1 = f32x4.abs(f32x4.sub(p3, a));
  best = i32x4.max_s(best, v128.and(f32x4.lt(e1, e2), i32x4.splat(3)));
  e2 = f32x4.abs(f32x4.sub(p4, a));
  best = i32x4.max_s(best, v128.and(f32x4.lt(e2, e1), i32x4.splat(4)));
  e1 = f32x4.abs(f32x4.sub(p5, a));
  best = i32x4.max_s(best, v128.and(f32x4.lt(e1, e2), i32x4.splat(5)));
  e2 = f32x4.abs(f32x4.sub(p6, a));
  best = i32x4.max_s(best, v128.and(f32x4.lt(e2, e1), i32x4.splat(6)));
  e1 = f32x4.abs(f32x4.sub(p7, a));
  best = i32x4.max_s(best, v128.and(f32x4.lt(e1, e2), i32x4.splat(7)));
  const zero = i32x4.splat(0);
  const neg = v128.andnot(f32x4.lt(x, zero), i32x4.eq(best, zero));
  return v128.or(best, v128.and(neg, i32x4.splat(8)));
}

/** quantize_row_mxfp4_ref: 17-byte blocks, e = floor(log2 amax) - 2 + 127, d = 2^(e - 128) */
export function quantizeMxfp4(src: usize, nb: i32, dst: usize): i32 {
  for (let b = 0; b < nb; b++, src += 128, dst += 17) {
    const amax = absMax32(src);
    if (!(amax <= F32_MAX)) return 1;
    const e: i32 = amax > 0 ? (floorLog2f(amax) - 2 + 127) & 0xff : 0;
    const d = reinterpret<f32>(e >= 2 ? <u32>(e - 1) << 23 : <u32>0x200000 << <u32>e); // 2^(e-128)
    store<u8>(dst, <u8>e);
    const p1 = f32x4.splat(d), p2 = f32x4.splat(<f32>2 * d), p3 = f32x4.splat(<f32>3 * d), p4 = f32x4.splat(<f32>4 * d);
    const p5 = f32x4.splat(<f32>6 * d), p6 = f32x4.splat(<f32>8 * d), p7 = f32x4.splat(<f32>12 * d);
    const c0 = fp4Code(v128.load(src), p1, p2, p3, p4, p5, p6, p7);
    const c1 = fp4Code(v128.load(src, 16), p1, p2, p3, p4, p5, p6, p7);
    const c2 = fp4Code(v128.load(src, 32), p1, p2, p3, p4, p5, p6, p7);
    const c3 = fp4Code(v128.load(src, 48), p1, p2, p3, p4, p5, p6, p7);
    const c4 = fp4Code(v128.load(src, 64), p1, p2, p3, p4, p5, p6, p7);
    const c5 = fp4Code(v128.load(src, 80), p1, p2, p3, p4, p5, p6, p7);
    const c6 = fp4Code(v128.load(src, 96), p1, p2, p3, p4, p5, p6, p7);
    const c7 = fp4Code(v128.load(src, 112), p1, p2, p3, p4, p5, p6, p7);
    v128.store(dst, packNibbles32(c0, c1, c2, c3, c4, c5, c6, c7), 1);
  }
  return 0;
}

/** ggml_fp32_to_ue4m3 (src/quant/ggml/fp4.ts f32ToUe4m3): mantissa rounded half up, saturating at 448 */
function f32ToUe4m3(x: f32): i32 {
  if (!(x > 0)) return 0;
  if (x > 448) x = 448;
  const bits = reinterpret<u32>(x);
  let exp = <i32>((bits >>> 23) & 0xff) - 127 + 7;
  if (exp <= 0) {
    const man = <i32>(x * <f32>512 + <f32>0.5); // < 8 here: truncation is Math.trunc
    if (man < 1) return 0;
    return man > 7 ? 7 : man;
  }
  if (exp >= 15) return 0x7e;
  let man = <i32>(((bits >>> 20) & 7) + ((bits >>> 19) & 1));
  if (man > 7) {
    man = 0;
    exp++;
    if (exp >= 15) return 0x7e;
  }
  return (exp << 3) | man;
}

/** ggml_ue4m3_to_fp32 halved: the scale d of an NVFP4 sub-block (exact in float32) */
function ue4m3Half(u: i32): f32 {
  if (u == 0 || u == 0x7f) return 0;
  const exp = (u >>> 3) & 0xf;
  const man = u & 7;
  if (exp == 0) return <f32>man * <f32>0.0009765625; // man * 2^-10
  return <f32>(man + 8) * reinterpret<f32>(<u32>(exp - 11 + 127) << 23); // (1 + man/8) 2^(exp-7) / 2
}

/** quantize_row_nvfp4_ref: 36-byte blocks of 64 = 4 UE4M3 scales (one per 16) + 32 bytes of nibbles */
export function quantizeNvfp4(src: usize, nb: i32, dst: usize): i32 {
  for (let b = 0; b < nb; b++, dst += 36) {
    for (let s = 0; s < 4; s++, src += 64) {
      const x0 = v128.load(src), x1 = v128.load(src, 16), x2 = v128.load(src, 32), x3 = v128.load(src, 48);
      const mask = i32x4.splat(0x7fffffff);
      const amax = absBitsMax(i32x4.max_s(i32x4.max_s(v128.and(x0, mask), v128.and(x1, mask)), i32x4.max_s(v128.and(x2, mask), v128.and(x3, mask))));
      if (!(amax <= F32_MAX)) return 1;
      const ue = f32ToUe4m3(amax / <f32>6);
      store<u8>(dst + <usize>s, <u8>ue);
      const d = ue4m3Half(ue);
      const p1 = f32x4.splat(d), p2 = f32x4.splat(<f32>2 * d), p3 = f32x4.splat(<f32>3 * d), p4 = f32x4.splat(<f32>4 * d);
      const p5 = f32x4.splat(<f32>6 * d), p6 = f32x4.splat(<f32>8 * d), p7 = f32x4.splat(<f32>12 * d);
      const lo = i16x8.narrow_i32x4_u(fp4Code(x0, p1, p2, p3, p4, p5, p6, p7), fp4Code(x1, p1, p2, p3, p4, p5, p6, p7));
      const hi = i16x8.narrow_i32x4_u(fp4Code(x2, p1, p2, p3, p4, p5, p6, p7), fp4Code(x3, p1, p2, p3, p4, p5, p6, p7));
      const packed = v128.or(lo, i16x8.shl(hi, 4));
      store<u64>(dst + 4 + (<usize>s << 3), i64x2.extract_lane(i8x16.narrow_i16x8_u(packed, packed), 0));
    }
  }
  return 0;
}

// ---------------------------------------------------------------- K-quants: lane-parallel scale searches
//
// Scratch for one super-block, in the transposed layout: vector j of group g holds element j of
// sub-blocks 4g..4g+3. Q3_K: group g starts at g * n vectors; Q2_K, Q4_K, Q5_K, Q6_K: groups 2p and
// 2p + 1 alternate vector by vector (makeQkxPair / makeQxPair). Levels are kept as float32.

const TX = memory.data(1024, 16); // x
const TW = memory.data(1024, 16); // weights
const TXM = memory.data(1024, 16); // x - min (make_qkx2_quants), w * x (make_qx_quants)
const TL = memory.data(1024, 16); // best levels
const TLA = memory.data(1024, 16); // levels of the current trial
const LB = memory.data(256, 16); // final levels, one byte per element, natural order
const SCALES = memory.data(64, 16);
const MINS = memory.data(64, 16);

/**
 * group of 4 sub-blocks of n floats (sub-block k at src + k * stride bytes) -> n vectors at dst,
 * vector j at dst + j * vstride (16: consecutive; 32: alternating with another group's)
 */
// @ts-ignore: decorator
@inline function transposeGroup(src: usize, n: i32, stride: usize, dst: usize, vstride: usize = 16): void {
  for (let j = 0; j < n; j += 4, src += 16, dst += 4 * vstride) {
    const a = v128.load(src), b = v128.load(src + stride), c = v128.load(src + 2 * stride), d = v128.load(src + 3 * stride);
    const t0 = i32x4.shuffle(a, b, 0, 4, 1, 5), t1 = i32x4.shuffle(a, b, 2, 6, 3, 7);
    const t2 = i32x4.shuffle(c, d, 0, 4, 1, 5), t3 = i32x4.shuffle(c, d, 2, 6, 3, 7);
    v128.store(dst, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
    v128.store(dst + vstride, i32x4.shuffle(t0, t2, 2, 3, 6, 7));
    v128.store(dst + 2 * vstride, i32x4.shuffle(t1, t3, 0, 1, 4, 5));
    v128.store(dst + 3 * vstride, i32x4.shuffle(t1, t3, 2, 3, 6, 7));
  }
}

/** any NaN or infinity among the 256 floats of a super-block */
function superBlockBad(src: usize): bool {
  let bad = i32x4.splat(0);
  for (let o: usize = 0; o < 1024; o += 64) {
    bad = v128.or(bad, v128.or(v128.or(nonFinite(v128.load(src + o)), nonFinite(v128.load(src + o, 16))), v128.or(nonFinite(v128.load(src + o, 32)), nonFinite(v128.load(src + o, 48)))));
  }
  return v128.any_true(bad);
}

/**
 * the levels a make_* search left for sub-block sb (n elements per sub-block) -> LB, as bytes; paired:
 * the alternating layout of makeQkxPair (groups 2p and 2p + 1 interleaved)
 */
function levelsFromSearch(sb: i32, n: i32, paired: bool = false): void {
  const g = sb >> 2;
  const lane = <usize>(sb & 3) << 2;
  const base = paired ? TL + <usize>((g >> 1) * n) * 32 + (<usize>(g & 1) << 4) + lane : TL + <usize>(g * n) * 16 + lane;
  const step: usize = paired ? 32 : 16;
  for (let i = 0; i < n; i++) store<u8>(LB + <usize>(sb * n + i), <u8><i32>load<f32>(base + <usize>i * step));
}

/**
 * make_qkx2_quants (src/quant/ggml/common.ts makeQkxQuants) for two groups A and B of 4 sub-blocks:
 * x ~ scale * L + min, L in [0, nmax], min <= 0. The groups' vectors alternate in memory (vector j of
 * A at 32 j, of B at 32 j + 16): each lane follows the scalar order, and the two groups' independent
 * float32 chains overlap in the CPU. X, W: x and weights; the levels are left in L (same layout),
 * the scales of A and B stored at scalesOut and scalesOut + 16, -min at minsOut and minsOut + 16.
 * Lanes whose max <= min (an early return in the reference) get levels 0 and scale 0.
 */
// @ts-ignore: decorator
@inline function makeQkxPair(X: usize, W: usize, XM: usize, L: usize, LA: usize, n: i32, nmax: f32, rmin: f32, rdelta: f32, nstep: i32, useMad: bool, scalesOut: usize, minsOut: usize): void {
  const zero = f32x4.splat(0);
  const vnmax = f32x4.splat(nmax);
  const nb = <usize>n << 5;
  let xa = v128.load(X), xb = v128.load(X, 16);
  let wa = v128.load(W), wb = v128.load(W, 16);
  let minA = xa, maxA = xa, minB = xb, maxB = xb;
  let sumWA = wa, sumWB = wb;
  let sumXA = f32x4.mul(wa, xa), sumXB = f32x4.mul(wb, xb);
  for (let o: usize = 32; o < nb; o += 32) {
    xa = v128.load(X + o); xb = v128.load(X + o, 16);
    wa = v128.load(W + o); wb = v128.load(W + o, 16);
    minA = f32x4.pmin(minA, xa); minB = f32x4.pmin(minB, xb); // if (x < min) min = x
    maxA = f32x4.pmax(maxA, xa); maxB = f32x4.pmax(maxB, xb);
    sumWA = f32x4.add(sumWA, wa); sumWB = f32x4.add(sumWB, wb);
    sumXA = f32x4.add(sumXA, f32x4.mul(wa, xa)); sumXB = f32x4.add(sumXB, f32x4.mul(wb, xb));
  }
  minA = sel(zero, minA, f32x4.gt(minA, zero));
  minB = sel(zero, minB, f32x4.gt(minB, zero));
  const liveA = f32x4.gt(maxA, minA), liveB = f32x4.gt(maxB, minB); // lanes with max <= min return early in the reference
  for (let o: usize = 0; o < nb; o += 32) {
    v128.store(XM + o, f32x4.sub(v128.load(X + o), minA));
    v128.store(XM + o, f32x4.sub(v128.load(X + o, 16), minB), 16);
  }
  let iscaleA = f32x4.div(vnmax, f32x4.sub(maxA, minA)), iscaleB = f32x4.div(vnmax, f32x4.sub(maxB, minB));
  let scaleA = f32x4.div(f32x4.splat(1), iscaleA), scaleB = f32x4.div(f32x4.splat(1), iscaleB);
  let bestA = zero, bestB = zero;
  for (let o: usize = 0; o < nb; o += 32) {
    const la = f32x4.pmin(f32x4.pmax(rintV(f32x4.mul(iscaleA, v128.load(XM + o))), zero), vnmax);
    const lb = f32x4.pmin(f32x4.pmax(rintV(f32x4.mul(iscaleB, v128.load(XM + o, 16))), zero), vnmax);
    v128.store(L + o, la);
    v128.store(L + o, lb, 16);
    let da = f32x4.sub(f32x4.add(f32x4.mul(scaleA, la), minA), v128.load(X + o));
    let db = f32x4.sub(f32x4.add(f32x4.mul(scaleB, lb), minB), v128.load(X + o, 16));
    da = useMad ? f32x4.abs(da) : f32x4.mul(da, da);
    db = useMad ? f32x4.abs(db) : f32x4.mul(db, db);
    bestA = f32x4.add(bestA, f32x4.mul(v128.load(W + o), da));
    bestB = f32x4.add(bestB, f32x4.mul(v128.load(W + o, 16), db));
  }
  for (let is = 0; is <= nstep; is++) {
    const num = f32x4.splat((rmin + rdelta * <f32>is) + nmax);
    iscaleA = f32x4.div(num, f32x4.sub(maxA, minA));
    iscaleB = f32x4.div(num, f32x4.sub(maxB, minB));
    for (let o: usize = 0; o < nb; o += 32) {
      v128.store(LA + o, f32x4.pmin(f32x4.pmax(rintV(f32x4.mul(iscaleA, v128.load(XM + o))), zero), vnmax));
      v128.store(LA + o, f32x4.pmin(f32x4.pmax(rintV(f32x4.mul(iscaleB, v128.load(XM + o, 16))), zero), vnmax), 16);
    }
    let sumLA = zero, sumL2A = zero, sumXLA = zero, sumLB = zero, sumL2B = zero, sumXLB = zero;
    for (let o: usize = 0; o < nb; o += 32) {
      const la = v128.load(LA + o), lb = v128.load(LA + o, 16);
      const wla = f32x4.mul(v128.load(W + o), la), wlb = f32x4.mul(v128.load(W + o, 16), lb);
      sumLA = f32x4.add(sumLA, wla);
      sumLB = f32x4.add(sumLB, wlb);
      sumL2A = f32x4.add(sumL2A, f32x4.mul(wla, la));
      sumL2B = f32x4.add(sumL2B, f32x4.mul(wlb, lb));
      sumXLA = f32x4.add(sumXLA, f32x4.mul(wla, v128.load(X + o)));
      sumXLB = f32x4.add(sumXLB, f32x4.mul(wlb, v128.load(X + o, 16)));
    }
    const DA = f32x4.sub(f32x4.mul(sumWA, sumL2A), f32x4.mul(sumLA, sumLA));
    const DB = f32x4.sub(f32x4.mul(sumWB, sumL2B), f32x4.mul(sumLB, sumLB));
    const validA = v128.and(f32x4.gt(DA, zero), liveA), validB = v128.and(f32x4.gt(DB, zero), liveB);
    if (!v128.any_true(v128.or(validA, validB))) continue;
    let thisScaleA = f32x4.div(f32x4.sub(f32x4.mul(sumWA, sumXLA), f32x4.mul(sumXA, sumLA)), DA);
    let thisScaleB = f32x4.div(f32x4.sub(f32x4.mul(sumWB, sumXLB), f32x4.mul(sumXB, sumLB)), DB);
    let thisMinA = f32x4.div(f32x4.sub(f32x4.mul(sumL2A, sumXA), f32x4.mul(sumLA, sumXLA)), DA);
    let thisMinB = f32x4.div(f32x4.sub(f32x4.mul(sumL2B, sumXB), f32x4.mul(sumLB, sumXLB)), DB);
    const posA = f32x4.gt(thisMinA, zero), posB = f32x4.gt(thisMinB, zero);
    thisMinA = sel(zero, thisMinA, posA);
    thisMinB = sel(zero, thisMinB, posB);
    thisScaleA = sel(f32x4.div(sumXLA, sumL2A), thisScaleA, posA);
    thisScaleB = sel(f32x4.div(sumXLB, sumL2B), thisScaleB, posB);
    let errA = zero, errB = zero;
    for (let o: usize = 0; o < nb; o += 32) {
      let da = f32x4.sub(f32x4.add(f32x4.mul(thisScaleA, v128.load(LA + o)), thisMinA), v128.load(X + o));
      let db = f32x4.sub(f32x4.add(f32x4.mul(thisScaleB, v128.load(LA + o, 16)), thisMinB), v128.load(X + o, 16));
      da = useMad ? f32x4.abs(da) : f32x4.mul(da, da);
      db = useMad ? f32x4.abs(db) : f32x4.mul(db, db);
      errA = f32x4.add(errA, f32x4.mul(v128.load(W + o), da));
      errB = f32x4.add(errB, f32x4.mul(v128.load(W + o, 16), db));
    }
    const winA = v128.and(validA, f32x4.lt(errA, bestA)), winB = v128.and(validB, f32x4.lt(errB, bestB));
    if (!v128.any_true(v128.or(winA, winB))) continue;
    for (let o: usize = 0; o < nb; o += 32) {
      v128.store(L + o, sel(v128.load(LA + o), v128.load(L + o), winA));
      v128.store(L + o, sel(v128.load(LA + o, 16), v128.load(L + o, 16), winB), 16);
    }
    bestA = sel(errA, bestA, winA);
    bestB = sel(errB, bestB, winB);
    scaleA = sel(thisScaleA, scaleA, winA);
    scaleB = sel(thisScaleB, scaleB, winB);
    const movesA = v128.and(winA, f32x4.ne(minA, thisMinA)), movesB = v128.and(winB, f32x4.ne(minB, thisMinB));
    if (v128.any_true(v128.or(movesA, movesB))) {
      minA = sel(thisMinA, minA, movesA);
      minB = sel(thisMinB, minB, movesB);
      for (let o: usize = 0; o < nb; o += 32) {
        v128.store(XM + o, f32x4.sub(v128.load(X + o), minA));
        v128.store(XM + o, f32x4.sub(v128.load(X + o, 16), minB), 16);
      }
    }
  }
  v128.store(minsOut, f32x4.neg(minA));
  v128.store(minsOut, f32x4.neg(minB), 16);
  for (let o: usize = 0; o < nb; o += 32) {
    v128.store(L + o, v128.and(v128.load(L + o), liveA));
    v128.store(L + o, v128.and(v128.load(L + o, 16), liveB), 16);
  }
  v128.store(scalesOut, v128.and(scaleA, liveA));
  v128.store(scalesOut, v128.and(scaleB, liveB), 16);
}

/**
 * make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL) for two groups A and B in the alternating
 * layout of makeQkxPair (weights x^2): levels l + nmax in [0, 2 nmax) left in L, scales of A and B
 * stored at scalesOut and scalesOut + 16. Lanes with max |x| < 1e-15 get levels 0 and scale 0.
 */
// @ts-ignore: decorator
@inline function makeQxPair(X: usize, W: usize, WX: usize, L: usize, LA: usize, n: i32, nmax: f32, scalesOut: usize): void {
  const zero = f32x4.splat(0);
  const nb = <usize>n << 5;
  let amaxA = zero, maxA = zero, amaxB = zero, maxB = zero;
  for (let o: usize = 0; o < nb; o += 32) {
    const xa = v128.load(X + o), xb = v128.load(X + o, 16);
    const axa = f32x4.abs(xa), axb = f32x4.abs(xb);
    const upA = f32x4.gt(axa, amaxA), upB = f32x4.gt(axb, amaxB);
    amaxA = sel(axa, amaxA, upA);
    amaxB = sel(axb, amaxB, upB);
    maxA = sel(xa, maxA, upA);
    maxB = sel(xb, maxB, upB);
    const wa = f32x4.mul(xa, xa), wb = f32x4.mul(xb, xb);
    v128.store(W + o, wa);
    v128.store(W + o, wb, 16);
    v128.store(WX + o, f32x4.mul(wa, xa));
    v128.store(WX + o, f32x4.mul(wb, xb), 16);
  }
  const liveA = f32x4.ge(amaxA, f32x4.splat(GROUP_MAX_EPS)), liveB = f32x4.ge(amaxB, f32x4.splat(GROUP_MAX_EPS));
  const lo = f32x4.splat(-nmax), hi = f32x4.splat(nmax - 1), vnmax = f32x4.splat(nmax);
  let iscaleA = f32x4.div(f32x4.splat(-nmax), maxA), iscaleB = f32x4.div(f32x4.splat(-nmax), maxB);
  let lxA = zero, l2A = zero, lxB = zero, l2B = zero;
  for (let o: usize = 0; o < nb; o += 32) {
    const la = f32x4.pmax(f32x4.pmin(rintV(f32x4.mul(iscaleA, v128.load(X + o))), hi), lo);
    const lb = f32x4.pmax(f32x4.pmin(rintV(f32x4.mul(iscaleB, v128.load(X + o, 16))), hi), lo);
    v128.store(L + o, f32x4.add(la, vnmax));
    v128.store(L + o, f32x4.add(lb, vnmax), 16);
    lxA = f32x4.add(lxA, f32x4.mul(v128.load(WX + o), la));
    lxB = f32x4.add(lxB, f32x4.mul(v128.load(WX + o, 16), lb));
    l2A = f32x4.add(l2A, f32x4.mul(f32x4.mul(v128.load(W + o), la), la));
    l2B = f32x4.add(l2B, f32x4.mul(f32x4.mul(v128.load(W + o, 16), lb), lb));
  }
  let scaleA = v128.and(f32x4.div(lxA, l2A), f32x4.ne(l2A, zero)), scaleB = v128.and(f32x4.div(lxB, l2B), f32x4.ne(l2B, zero));
  let bestA = f32x4.mul(scaleA, lxA), bestB = f32x4.mul(scaleB, lxB);
  for (let is = -9; is <= 9; is++) {
    if (is == 0) continue;
    const num = f32x4.splat(-(nmax + <f32>0.1 * <f32>is));
    iscaleA = f32x4.div(num, maxA);
    iscaleB = f32x4.div(num, maxB);
    lxA = zero; l2A = zero; lxB = zero; l2B = zero;
    for (let o: usize = 0; o < nb; o += 32) {
      const la = f32x4.pmax(f32x4.pmin(rintV(f32x4.mul(iscaleA, v128.load(X + o))), hi), lo);
      const lb = f32x4.pmax(f32x4.pmin(rintV(f32x4.mul(iscaleB, v128.load(X + o, 16))), hi), lo);
      v128.store(LA + o, la);
      v128.store(LA + o, lb, 16);
      lxA = f32x4.add(lxA, f32x4.mul(v128.load(WX + o), la));
      lxB = f32x4.add(lxB, f32x4.mul(v128.load(WX + o, 16), lb));
      l2A = f32x4.add(l2A, f32x4.mul(f32x4.mul(v128.load(W + o), la), la));
      l2B = f32x4.add(l2B, f32x4.mul(f32x4.mul(v128.load(W + o, 16), lb), lb));
    }
    const winA = v128.and(v128.and(f32x4.gt(l2A, zero), f32x4.gt(f32x4.mul(lxA, lxA), f32x4.mul(bestA, l2A))), liveA);
    const winB = v128.and(v128.and(f32x4.gt(l2B, zero), f32x4.gt(f32x4.mul(lxB, lxB), f32x4.mul(bestB, l2B))), liveB);
    if (!v128.any_true(v128.or(winA, winB))) continue;
    for (let o: usize = 0; o < nb; o += 32) {
      v128.store(L + o, sel(f32x4.add(v128.load(LA + o), vnmax), v128.load(L + o), winA));
      v128.store(L + o, sel(f32x4.add(v128.load(LA + o, 16), vnmax), v128.load(L + o, 16), winB), 16);
    }
    scaleA = sel(f32x4.div(lxA, l2A), scaleA, winA);
    scaleB = sel(f32x4.div(lxB, l2B), scaleB, winB);
    bestA = sel(f32x4.mul(scaleA, lxA), bestA, winA);
    bestB = sel(f32x4.mul(scaleB, lxB), bestB, winB);
  }
  for (let o: usize = 0; o < nb; o += 32) {
    v128.store(L + o, v128.and(v128.load(L + o), liveA));
    v128.store(L + o, v128.and(v128.load(L + o, 16), liveB), 16);
  }
  v128.store(scalesOut, v128.and(scaleA, liveA));
  v128.store(scalesOut, v128.and(scaleB, liveB), 16);
}

/**
 * make_q3_quants(n, nmax, x, L, do_rmse = true) for one group: symmetric levels in [-nmax, nmax),
 * refined by up to 5 passes of coordinate descent on the x^2-weighted error (each lane moves its
 * elements in order; a pass without a change in any lane ends the search, and a lane without a
 * change would not change in a further pass either). Levels l + nmax left in TL; returns the scales.
 */
// @ts-ignore: decorator
@inline function makeQ3Group(X: usize, L: usize, LI: usize, n: i32, nmax: i32): v128 {
  const zero = f32x4.splat(0);
  const nb = <usize>n << 4;
  let amax = zero, max = zero;
  for (let o: usize = 0; o < nb; o += 16) {
    const x = v128.load(X + o);
    const ax = f32x4.abs(x);
    const up = f32x4.gt(ax, amax);
    amax = sel(ax, amax, up);
    max = sel(x, max, up);
  }
  const live = f32x4.ge(amax, f32x4.splat(GROUP_MAX_EPS));
  const lo = i32x4.splat(-nmax), hi = i32x4.splat(nmax - 1);
  const iscale = f32x4.div(f32x4.splat(<f32>-nmax), max);
  let sumlx = zero, suml2 = zero;
  for (let o: usize = 0; o < nb; o += 16) {
    const x = v128.load(X + o);
    const l = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.mul(iscale, x)), hi), lo);
    v128.store(LI + o, l);
    const lf = f32x4.convert_i32x4_s(l);
    const w = f32x4.mul(x, x);
    sumlx = f32x4.add(sumlx, f32x4.mul(f32x4.mul(w, x), lf));
    suml2 = f32x4.add(suml2, f32x4.mul(f32x4.mul(w, lf), lf));
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = i32x4.splat(0);
    for (let o: usize = 0; o < nb; o += 16) {
      const x = v128.load(X + o);
      const w = f32x4.mul(x, x);
      const wx = f32x4.mul(w, x);
      const li = v128.load(LI + o);
      const lif = f32x4.convert_i32x4_s(li);
      let slx = f32x4.sub(sumlx, f32x4.mul(wx, lif));
      let sl2 = f32x4.sub(suml2, f32x4.mul(f32x4.mul(w, lif), lif));
      const newL = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.mul(x, sl2), slx)), hi), lo);
      const nf = f32x4.convert_i32x4_s(newL);
      slx = f32x4.add(slx, f32x4.mul(wx, nf));
      sl2 = f32x4.add(sl2, f32x4.mul(f32x4.mul(w, nf), nf));
      // slx > 0 (before the move), newL != li, sl2 > 0 and slx^2 suml2 > sumlx^2 sl2 (after)
      const better = f32x4.gt(f32x4.mul(f32x4.mul(slx, slx), suml2), f32x4.mul(f32x4.mul(sumlx, sumlx), sl2));
      const take = v128.and(v128.and(v128.and(f32x4.gt(f32x4.sub(sumlx, f32x4.mul(wx, lif)), zero), v128.not(i32x4.eq(newL, li))), v128.and(f32x4.gt(sl2, zero), better)), live);
      v128.store(LI + o, sel(newL, li, take));
      sumlx = sel(slx, sumlx, take);
      suml2 = sel(sl2, suml2, take);
      changed = v128.or(changed, take);
    }
    if (!v128.any_true(changed)) break;
  }
  const vnmax = i32x4.splat(nmax);
  for (let o: usize = 0; o < nb; o += 16) v128.store(L + o, v128.and(f32x4.convert_i32x4_s(i32x4.add(v128.load(LI + o), vnmax)), live));
  return v128.and(v128.and(f32x4.div(sumlx, suml2), f32x4.gt(suml2, zero)), live);
}

// ---------------------------------------------------------------- level packing

/** two 2-bit level planes: out[j/4 + l] = L[j+l] | L[j+l+32] << 2 | L[j+l+64] << 4 | L[j+l+96] << 6 (from LB) */
function pack2(out: usize): void {
  for (let j: usize = 0; j < 256; j += 128) {
    for (let l: usize = 0; l < 32; l += 16) {
      const p = LB + j + l;
      const v = v128.or(
        v128.or(v128.load(p), i16x8.shl(v128.load(p, 32), 2)),
        v128.or(i16x8.shl(v128.load(p, 64), 4), i16x8.shl(v128.load(p, 96), 6)),
      );
      v128.store(out + (j >> 2) + l, v);
    }
  }
}

// ---------------------------------------------------------------- Q4_K / Q5_K

/** quantize_row_q4_K_ref (144-byte blocks) or quantize_row_q5_K_ref (176 bytes) */
// @ts-ignore: decorator
@inline function quantizeK4(src: usize, nb: i32, dst: usize, five: bool): i32 {
  const nmax: f32 = five ? 31 : 15;
  const rmin: f32 = five ? -0.5 : -1;
  const nstep = five ? 15 : 20;
  const bytes: usize = five ? 176 : 144;
  const top = i32x4.splat(five ? 31 : 15);
  for (let b = 0; b < nb; b++, src += 1024, dst += bytes) {
    if (superBlockBad(src)) return 1;
    // sub-blocks 0-3 and 4-7 as two alternating groups
    transposeGroup(src, 32, 128, TX, 32);
    transposeGroup(src + 512, 32, 128, TX + 16, 32);
    // weights: sqrt(mean x^2) + |x| (sum of squares in order, per sub-block)
    let sa = f32x4.splat(0), sb = f32x4.splat(0);
    for (let o: usize = 0; o < 1024; o += 32) {
      const xa = v128.load(TX + o), xb = v128.load(TX + o, 16);
      sa = f32x4.add(sa, f32x4.mul(xa, xa));
      sb = f32x4.add(sb, f32x4.mul(xb, xb));
    }
    const avA = f32x4.sqrt(f32x4.div(sa, f32x4.splat(32))), avB = f32x4.sqrt(f32x4.div(sb, f32x4.splat(32)));
    for (let o: usize = 0; o < 1024; o += 32) {
      v128.store(TW + o, f32x4.add(avA, f32x4.abs(v128.load(TX + o))));
      v128.store(TW + o, f32x4.add(avB, f32x4.abs(v128.load(TX + o, 16))), 16);
    }
    makeQkxPair(TX, TW, TXM, TL, TLA, 32, nmax, rmin, <f32>0.1, nstep, false, SCALES, MINS);
    // 6-bit sub-block scales and mins, by the largest of each
    let maxScale: f32 = 0, maxMin: f32 = 0;
    for (let j = 0; j < 8; j++) {
      const sc = load<f32>(SCALES + (<usize>j << 2)), mn = load<f32>(MINS + (<usize>j << 2));
      if (sc > maxScale) maxScale = sc;
      if (mn > maxMin) maxMin = mn;
    }
    const invScale: f32 = maxScale > 0 ? <f32>63 / maxScale : 0;
    const invMin: f32 = maxMin > 0 ? <f32>63 / maxMin : 0;
    const so = dst + 4;
    for (let j = 0; j < 8; j++) {
      let ls = nearestInt(invScale * load<f32>(SCALES + (<usize>j << 2))) & 0xff;
      let lm = nearestInt(invMin * load<f32>(MINS + (<usize>j << 2))) & 0xff;
      if (ls > 63) ls = 63;
      if (lm > 63) lm = 63;
      store<i32>(SCALES + (<usize>j << 2), ls); // reused: the 6-bit values
      store<i32>(MINS + (<usize>j << 2), lm);
      if (j < 4) {
        store<u8>(so + j, <u8>ls);
        store<u8>(so + j + 4, <u8>lm);
      } else {
        store<u8>(so + j + 4, <u8>((ls & 0xf) | ((lm & 0xf) << 4)));
        store<u8>(so + j - 4, load<u8>(so + j - 4) | <u8>((ls >> 4) << 6));
        store<u8>(so + j, load<u8>(so + j) | <u8>((lm >> 4) << 6));
      }
    }
    const dAll = storeF16(dst, maxScale / <f32>63);
    const mAll = storeF16(dst + 2, maxMin / <f32>63);
    // requantize every sub-block with its stored scale and min
    for (let j = 0; j < 8; j++) {
      const d = dAll * <f32>load<i32>(SCALES + (<usize>j << 2));
      if (!truthy(d)) {
        levelsFromSearch(j, 32, true);
        continue;
      }
      const dm = mAll * <f32>load<i32>(MINS + (<usize>j << 2));
      const vd = f32x4.splat(d), vdm = f32x4.splat(dm), zero = i32x4.splat(0);
      const p = src + (<usize>j << 7);
      for (let o: usize = 0; o < 128; o += 64) {
        const l0 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p + o), vdm), vd)), top), zero);
        const l1 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p + o, 16), vdm), vd)), top), zero);
        const l2 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p + o, 32), vdm), vd)), top), zero);
        const l3 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p + o, 48), vdm), vd)), top), zero);
        v128.store(LB + (<usize>j << 5) + (o >> 2), bytes16(l0, l1, l2, l3));
      }
    }
    if (five) {
      // qh[32] (bit 4 of each level, plane by plane) | ql[128] (low nibbles)
      let qh0 = i32x4.splat(0), qh1 = i32x4.splat(0);
      const bit4 = i8x16.splat(0x10);
      for (let n = 0; n < 4; n++) {
        const p = LB + (<usize>n << 6);
        const a0 = v128.load(p), a1 = v128.load(p, 16), b0 = v128.load(p, 32), b1 = v128.load(p, 48);
        // bit 4 of a -> bit 2n, of b -> bit 2n + 1 (shifts stay inside each byte)
        let ha0 = v128.and(a0, bit4), ha1 = v128.and(a1, bit4), hb0 = v128.and(b0, bit4), hb1 = v128.and(b1, bit4);
        if (n == 0) {
          ha0 = i16x8.shr_u(ha0, 4); ha1 = i16x8.shr_u(ha1, 4); hb0 = i16x8.shr_u(hb0, 3); hb1 = i16x8.shr_u(hb1, 3);
        } else if (n == 1) {
          ha0 = i16x8.shr_u(ha0, 2); ha1 = i16x8.shr_u(ha1, 2); hb0 = i16x8.shr_u(hb0, 1); hb1 = i16x8.shr_u(hb1, 1);
        } else if (n == 3) {
          ha0 = i16x8.shl(ha0, 2); ha1 = i16x8.shl(ha1, 2); hb0 = i16x8.shl(hb0, 3); hb1 = i16x8.shl(hb1, 3);
        } else {
          hb0 = i16x8.shl(hb0, 1); hb1 = i16x8.shl(hb1, 1);
        }
        qh0 = v128.or(qh0, v128.or(ha0, hb0));
        qh1 = v128.or(qh1, v128.or(ha1, hb1));
        v128.store(dst + 48 + (<usize>n << 5), nibbles(a0, b0));
        v128.store(dst + 48 + (<usize>n << 5), nibbles(a1, b1), 16);
      }
      v128.store(dst, qh0, 16);
      v128.store(dst, qh1, 32);
    } else {
      for (let n: usize = 0; n < 4; n++) {
        const p = LB + (n << 6);
        v128.store(dst + 16 + (n << 5), v128.or(v128.load(p), i16x8.shl(v128.load(p, 32), 4)));
        v128.store(dst + 16 + (n << 5), v128.or(v128.load(p, 16), i16x8.shl(v128.load(p, 48), 4)), 16);
      }
    }
  }
  return 0;
}

export function quantizeQ4_K(src: usize, nb: i32, dst: usize): i32 {
  return quantizeK4(src, nb, dst, false);
}

export function quantizeQ5_K(src: usize, nb: i32, dst: usize): i32 {
  return quantizeK4(src, nb, dst, true);
}

// ---------------------------------------------------------------- Q6_K

/** quantize_row_q6_K_ref: 210-byte blocks; ql[128] | qh[64] | scales:i8[16] | d:f16 */
export function quantizeQ6_K(src: usize, nb: i32, dst: usize): i32 {
  for (let b = 0; b < nb; b++, src += 1024, dst += 210) {
    if (superBlockBad(src)) return 1;
    for (let p: usize = 0; p < 2; p++) {
      // groups 2p and 2p + 1 (sub-blocks 8p..8p+7) alternate
      const X = TX + p * 512;
      transposeGroup(src + p * 512, 16, 64, X, 32);
      transposeGroup(src + p * 512 + 256, 16, 64, X + 16, 32);
      makeQxPair(X, TW + p * 512, TXM + p * 512, TL + p * 512, TLA + p * 512, 16, 32, SCALES + (p << 5));
    }
    let maxScale: f32 = 0, maxAbsScale: f32 = 0;
    for (let ib = 0; ib < 16; ib++) {
      const sc = load<f32>(SCALES + (<usize>ib << 2));
      const a = Mathf.abs(sc);
      if (a > maxAbsScale) {
        maxAbsScale = a;
        maxScale = sc;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) {
      memory.fill(dst, 0, 210);
      continue;
    }
    const iscale: f32 = <f32>-128 / maxScale;
    const dAll = storeF16(dst + 208, <f32>1 / iscale);
    for (let ib = 0; ib < 16; ib++) {
      const l = nearestInt(iscale * load<f32>(SCALES + (<usize>ib << 2)));
      store<u8>(dst + 192 + ib, <u8>(l < 127 ? l : 127));
    }
    const lo = i32x4.splat(-32), hi = i32x4.splat(31), off = i32x4.splat(32);
    for (let j = 0; j < 16; j++) {
      const d = dAll * <f32>load<i8>(dst + 192 + j);
      if (!truthy(d)) {
        levelsFromSearch(j, 16, true);
        continue;
      }
      const vd = f32x4.splat(d);
      const p = src + (<usize>j << 6);
      const l0 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p), vd)), hi), lo), off);
      const l1 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p, 16), vd)), hi), lo), off);
      const l2 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p, 32), vd)), hi), lo), off);
      const l3 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p, 48), vd)), hi), lo), off);
      v128.store(LB + (<usize>j << 4), bytes16(l0, l1, l2, l3));
    }
    // ql: low nibbles of levels j and j + 64 (j + 32 and j + 96) per 128; qh: bits 4-5 of four levels
    const m15 = i8x16.splat(15), m48 = i8x16.splat(0x30);
    for (let h: usize = 0; h < 2; h++) {
      for (let l: usize = 0; l < 32; l += 16) {
        const p = LB + (h << 7) + l;
        const a = v128.load(p), bb = v128.load(p, 32), c = v128.load(p, 64), e = v128.load(p, 96);
        v128.store(dst + (h << 6) + l, v128.or(v128.and(a, m15), i16x8.shl(v128.and(c, m15), 4)));
        v128.store(dst + (h << 6) + l, v128.or(v128.and(bb, m15), i16x8.shl(v128.and(e, m15), 4)), 32);
        const qh = v128.or(
          v128.or(i16x8.shr_u(v128.and(a, m48), 4), i16x8.shr_u(v128.and(bb, m48), 2)),
          v128.or(v128.and(c, m48), i16x8.shl(v128.and(e, m48), 2)),
        );
        v128.store(dst + 128 + (h << 5) + l, qh);
      }
    }
  }
  return 0;
}

// ---------------------------------------------------------------- Q3_K

/** quantize_row_q3_K_ref: 110-byte blocks; hmask[32] | qs[64] | scales[12] (6 bit, offset 32) | d:f16 */
export function quantizeQ3_K(src: usize, nb: i32, dst: usize): i32 {
  for (let b = 0; b < nb; b++, src += 1024, dst += 110) {
    if (superBlockBad(src)) return 1;
    for (let g: usize = 0; g < 4; g++) {
      const X = TX + g * 256;
      transposeGroup(src + g * 256, 16, 64, X);
      v128.store(SCALES + (g << 4), makeQ3Group(X, TL + g * 256, TLA + g * 256, 16, 4));
    }
    let maxScale: f32 = 0, amax: f32 = 0;
    for (let j = 0; j < 16; j++) {
      const sc = load<f32>(SCALES + (<usize>j << 2));
      const a = Mathf.abs(sc);
      if (a > amax) {
        amax = a;
        maxScale = sc;
      }
    }
    const so = dst + 96;
    memory.fill(so, 0, 12);
    let dAll: f32 = 0;
    if (truthy(maxScale)) {
      const iscale: f32 = <f32>-32 / maxScale;
      for (let j = 0; j < 16; j++) {
        let l = <i32><i8>nearestInt(iscale * load<f32>(SCALES + (<usize>j << 2))); // int8_t l = nearest_int(...)
        l = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
        if (j < 8) store<u8>(so + j, <u8>(l & 0xf));
        else store<u8>(so + j - 8, load<u8>(so + j - 8) | <u8>((l & 0xf) << 4));
        store<u8>(so + 8 + (j & 3), load<u8>(so + 8 + (j & 3)) | <u8>((l >> 4) << (2 * (j >> 2))));
        store<i32>(MINS + (<usize>j << 2), l - 32); // the stored scale minus 32
      }
      dAll = storeF16(dst + 108, <f32>1 / iscale);
    } else {
      store<u16>(dst + 108, 0);
      for (let j = 0; j < 16; j++) store<i32>(MINS + (<usize>j << 2), -32);
    }
    const lo = i32x4.splat(-4), hi = i32x4.splat(3), off = i32x4.splat(4);
    for (let j = 0; j < 16; j++) {
      const d = dAll * <f32>load<i32>(MINS + (<usize>j << 2));
      if (!truthy(d)) {
        levelsFromSearch(j, 16);
        continue;
      }
      const vd = f32x4.splat(d);
      const p = src + (<usize>j << 6);
      const l0 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p), vd)), hi), lo), off);
      const l1 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p, 16), vd)), hi), lo), off);
      const l2 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p, 32), vd)), hi), lo), off);
      const l3 = i32x4.add(i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(v128.load(p, 48), vd)), hi), lo), off);
      v128.store(LB + (<usize>j << 4), bytes16(l0, l1, l2, l3));
    }
    // hmask[m] bit k = bit 2 of level 32k + m; the low two bits go to qs
    let h0 = i32x4.splat(0), h1 = i32x4.splat(0);
    const one = i8x16.splat(1), three = i8x16.splat(3);
    for (let k = 0; k < 8; k++) {
      const p = LB + (<usize>k << 5);
      const v0 = v128.load(p), v1 = v128.load(p, 16);
      h0 = v128.or(h0, i8x16.shl(v128.and(i8x16.shr_u(v0, 2), one), k));
      h1 = v128.or(h1, i8x16.shl(v128.and(i8x16.shr_u(v1, 2), one), k));
      v128.store(p, v128.and(v0, three));
      v128.store(p, v128.and(v1, three), 16);
    }
    v128.store(dst, h0);
    v128.store(dst, h1, 16);
    pack2(dst + 32);
  }
  return 0;
}

// ---------------------------------------------------------------- Q2_K

/** quantize_row_q2_K_ref: 84-byte blocks; scales[16] (scale | min << 4) | qs[64] | d:f16 | dmin:f16 */
export function quantizeQ2_K(src: usize, nb: i32, dst: usize): i32 {
  for (let b = 0; b < nb; b++, src += 1024, dst += 84) {
    if (superBlockBad(src)) return 1;
    for (let p: usize = 0; p < 2; p++) {
      // groups 2p and 2p + 1 (sub-blocks 8p..8p+7) alternate
      const X = TX + p * 512, W = TW + p * 512;
      transposeGroup(src + p * 512, 16, 64, X, 32);
      transposeGroup(src + p * 512 + 256, 16, 64, X + 16, 32);
      for (let o: usize = 0; o < 512; o += 16) v128.store(W + o, f32x4.abs(v128.load(X + o)));
      makeQkxPair(X, W, TXM + p * 512, TL + p * 512, TLA + p * 512, 16, 3, -0.5, <f32>0.1, 15, true, SCALES + (p << 5), MINS + (p << 5));
    }
    let maxScale: f32 = 0, maxMin: f32 = 0;
    for (let j = 0; j < 16; j++) {
      const sc = load<f32>(SCALES + (<usize>j << 2)), mn = load<f32>(MINS + (<usize>j << 2));
      if (sc > maxScale) maxScale = sc;
      if (mn > maxMin) maxMin = mn;
    }
    let dAll: f32 = 0, mAll: f32 = 0;
    if (maxScale > 0) {
      const iscale: f32 = <f32>15 / maxScale;
      for (let j = 0; j < 16; j++) store<u8>(dst + j, <u8>nearestInt(iscale * load<f32>(SCALES + (<usize>j << 2))));
      dAll = storeF16(dst + 80, maxScale / <f32>15);
    } else {
      memory.fill(dst, 0, 16);
      store<u16>(dst + 80, 0);
    }
    if (maxMin > 0) {
      const iscale: f32 = <f32>15 / maxMin;
      for (let j = 0; j < 16; j++) store<u8>(dst + j, load<u8>(dst + j) | <u8>(nearestInt(iscale * load<f32>(MINS + (<usize>j << 2))) << 4));
      mAll = storeF16(dst + 82, maxMin / <f32>15);
    } else {
      store<u16>(dst + 82, 0);
    }
    const top = i32x4.splat(3), zero = i32x4.splat(0);
    for (let j = 0; j < 16; j++) {
      const sc = <i32>load<u8>(dst + j);
      const d = dAll * <f32>(sc & 0xf);
      if (!truthy(d)) {
        levelsFromSearch(j, 16, true);
        continue;
      }
      const vdm = f32x4.splat(mAll * <f32>(sc >> 4)), vd = f32x4.splat(d);
      const p = src + (<usize>j << 6);
      const l0 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p), vdm), vd)), top), zero);
      const l1 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p, 16), vdm), vd)), top), zero);
      const l2 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p, 32), vdm), vd)), top), zero);
      const l3 = i32x4.max_s(i32x4.min_s(nearestIntV(f32x4.div(f32x4.add(v128.load(p, 48), vdm), vd)), top), zero);
      v128.store(LB + (<usize>j << 4), bytes16(l0, l1, l2, l3));
    }
    pack2(dst + 16);
  }
  return 0;
}

// ---------------------------------------------------------------- dequantizers
//
// dequantize_row_X, bit-exact with the TypeScript references: each value is the same float32 product
// (and difference) of the same float32 factors (NaN results: NaN, payload unspecified). Every kernel
// takes (src bytes, nBlocks, dst floats).

/** 16 bytes -> 4 x f32x4 of their unsigned values, stored at dst (64 bytes) after y = f(v) */
// @ts-ignore: decorator
@inline function u8x16ToF32(b: v128, k: i32): v128 {
  const h = k < 2 ? i16x8.extend_low_i8x16_u(b) : i16x8.extend_high_i8x16_u(b);
  return f32x4.convert_i32x4_s((k & 1) == 0 ? i32x4.extend_low_i16x8_u(h) : i32x4.extend_high_i16x8_u(h));
}

/** 16 bytes as signed values -> f32 lanes k*4..k*4+3 */
// @ts-ignore: decorator
@inline function i8x16ToF32(b: v128, k: i32): v128 {
  const h = k < 2 ? i16x8.extend_low_i8x16_s(b) : i16x8.extend_high_i8x16_s(b);
  return f32x4.convert_i32x4_s((k & 1) == 0 ? i32x4.extend_low_i16x8_s(h) : i32x4.extend_high_i16x8_s(h));
}

/** y[0..16) = f32(v[i]) * d for 16 byte lanes v (signed: i8, else u8) */
// @ts-ignore: decorator
@inline function storeScaled16(dst: usize, v: v128, d: v128, signed: bool): void {
  for (let k = 0; k < 4; k++) {
    const f = signed ? i8x16ToF32(v, k) : u8x16ToF32(v, k);
    v128.store(dst + (<usize>k << 4), f32x4.mul(f, d));
  }
}

/** y[0..16) = f32(v[i]) * d - m (two roundings, as fround(fround(q * d) - m)) */
// @ts-ignore: decorator
@inline function storeScaledSub16(dst: usize, v: v128, d: v128, m: v128): void {
  for (let k = 0; k < 4; k++) v128.store(dst + (<usize>k << 4), f32x4.sub(f32x4.mul(u8x16ToF32(v, k), d), m));
}

/** y[0..16) = f32(v[i]) * d + m */
// @ts-ignore: decorator
@inline function storeScaledAdd16(dst: usize, v: v128, d: v128, m: v128): void {
  for (let k = 0; k < 4; k++) v128.store(dst + (<usize>k << 4), f32x4.add(f32x4.mul(u8x16ToF32(v, k), d), m));
}

export function dequantizeQ8_0(src: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, src += 34, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(src)));
    storeScaled16(dst, v128.load(src, 2), d, true);
    storeScaled16(dst + 64, v128.load(src, 18), d, true);
  }
}

/** 16 bytes of nibbles -> (low nibbles, high nibbles) as bytes */
// @ts-ignore: decorator
@inline function lowNibbles(q: v128): v128 {
  return v128.and(q, i8x16.splat(15));
}
// @ts-ignore: decorator
@inline function highNibbles(q: v128): v128 {
  return v128.and(i16x8.shr_u(q, 4), i8x16.splat(15));
}

export function dequantizeQ4_0(src: usize, nb: i32, dst: usize): void {
  const eight = i8x16.splat(8);
  for (let b = 0; b < nb; b++, src += 18, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(src)));
    const q = v128.load(src, 2);
    storeScaled16(dst, i8x16.sub(lowNibbles(q), eight), d, true);
    storeScaled16(dst + 64, i8x16.sub(highNibbles(q), eight), d, true);
  }
}

export function dequantizeQ4_1(src: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, src += 20, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(src)));
    const m = f32x4.splat(f16ToF32(load<u16>(src, 2)));
    const q = v128.load(src, 4);
    storeScaledAdd16(dst, lowNibbles(q), d, m);
    storeScaledAdd16(dst + 64, highNibbles(q), d, m);
  }
}

/** bit 4 of element j (j < 32) from qh, as 0x10 bytes: lanes 0..15 (hi = false) or 16..31 */
// @ts-ignore: decorator
@inline function q5HighBits(qh: u32, hi: bool): v128 {
  // spread 16 bits of qh over 16 bytes: byte i tests bit i
  const bits = hi ? qh >>> 16 : qh & 0xffff;
  const v = i8x16.swizzle(i16x8.splat(<i16>bits), v128(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  const sel = v128(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  return v128.and(i8x16.eq(v128.and(v, sel), sel), i8x16.splat(0x10));
}

export function dequantizeQ5_0(src: usize, nb: i32, dst: usize): void {
  const sixteen = i8x16.splat(16);
  for (let b = 0; b < nb; b++, src += 22, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(src)));
    const qh = load<u32>(src, 2);
    const q = v128.load(src, 6);
    storeScaled16(dst, i8x16.sub(v128.or(lowNibbles(q), q5HighBits(qh, false)), sixteen), d, true);
    storeScaled16(dst + 64, i8x16.sub(v128.or(highNibbles(q), q5HighBits(qh, true)), sixteen), d, true);
  }
}

export function dequantizeQ5_1(src: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, src += 24, dst += 128) {
    const d = f32x4.splat(f16ToF32(load<u16>(src)));
    const m = f32x4.splat(f16ToF32(load<u16>(src, 2)));
    const qh = load<u32>(src, 4);
    const q = v128.load(src, 8);
    storeScaledAdd16(dst, v128.or(lowNibbles(q), q5HighBits(qh, false)), d, m);
    storeScaledAdd16(dst + 64, v128.or(highNibbles(q), q5HighBits(qh, true)), d, m);
  }
}

/** y = fround(fround(d * sc) * q) - the Q2_K / Q4_K style pair of sub-block factors */
// @ts-ignore: decorator
@inline function twoBits(q: v128, shift: i32): v128 {
  return v128.and(i16x8.shr_u(q, shift), i8x16.splat(3));
}

export function dequantizeQ2_K(src: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, src += 84) {
    const d = f16ToF32(load<u16>(src, 80));
    const min = f16ToF32(load<u16>(src, 82));
    let is: usize = 0;
    for (let qo: usize = 16; qo < 80; qo += 32) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (let half: usize = 0; half < 32; half += 16, dst += 64) {
          const sc = <u32>load<u8>(src + is++);
          const dl = f32x4.splat(d * <f32>(sc & 0xf));
          const ml = f32x4.splat(min * <f32>(sc >> 4));
          storeScaledSub16(dst, twoBits(v128.load(src + qo + half), shift), dl, ml);
        }
      }
    }
  }
}

export function dequantizeQ3_K(src: usize, nb: i32, dst: usize): void {
  const four = i8x16.splat(4);
  for (let b = 0; b < nb; b++, src += 110) {
    const dAll = f16ToF32(load<u16>(src, 108));
    const so = src + 96;
    let is = 0;
    let m: i32 = 1;
    for (let qo: usize = 32; qo < 96; qo += 32) {
      for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (let half: usize = 0; half < 32; half += 16, dst += 64) {
          const j = is++;
          const lo = j < 8 ? <i32>load<u8>(so + j) & 0xf : <i32>load<u8>(so + j - 8) >> 4;
          const sc = (lo | (((<i32>load<u8>(so + 8 + (j & 3)) >> (2 * (j >> 2))) & 3) << 4)) - 32;
          const dl = f32x4.splat(dAll * <f32>sc);
          // v = q - (hmask & m ? 0 : 4)
          const hm = v128.load(src + half);
          const off = v128.andnot(four, i8x16.eq(v128.and(hm, i8x16.splat(<i8>m)), i8x16.splat(<i8>m)));
          storeScaled16(dst, i8x16.sub(twoBits(v128.load(src + qo + half), shift), off), dl, true);
        }
      }
    }
  }
}

/** the 6-bit scale (min: +1) of sub-block j from a Q4_K/Q5_K scale field at so */
// @ts-ignore: decorator
@inline function scaleK4(so: usize, j: i32): i32 {
  return j < 4 ? <i32>load<u8>(so + j) & 63 : (<i32>load<u8>(so + j + 4) & 0xf) | ((<i32>load<u8>(so + j - 4) >> 6) << 4);
}
// @ts-ignore: decorator
@inline function minK4(so: usize, j: i32): i32 {
  return j < 4 ? <i32>load<u8>(so + j + 4) & 63 : (<i32>load<u8>(so + j + 4) >> 4) | ((<i32>load<u8>(so + j) >> 6) << 4);
}

// @ts-ignore: decorator
@inline function dequantizeK4(src: usize, nb: i32, dst: usize, five: bool): void {
  const bytes: usize = five ? 176 : 144;
  for (let b = 0; b < nb; b++, src += bytes) {
    const d = f16ToF32(load<u16>(src));
    const min = f16ToF32(load<u16>(src, 2));
    const so = src + 4;
    const qh = src + 16;
    let ql = src + (five ? 48 : 16);
    for (let is = 0; is < 8; is += 2, ql += 32) {
      const d1 = f32x4.splat(d * <f32>scaleK4(so, is)), m1 = f32x4.splat(min * <f32>minK4(so, is));
      const d2 = f32x4.splat(d * <f32>scaleK4(so, is + 1)), m2 = f32x4.splat(min * <f32>minK4(so, is + 1));
      for (let h: usize = 0; h < 32; h += 16) {
        let lo = lowNibbles(v128.load(ql + h)), hi = highNibbles(v128.load(ql + h));
        if (five) {
          const u1 = i8x16.splat(<i8>(<i32>1 << is)), u2 = i8x16.splat(<i8>(<i32>2 << is));
          const hb = v128.load(qh + h);
          lo = v128.or(lo, v128.and(i8x16.eq(v128.and(hb, u1), u1), i8x16.splat(16)));
          hi = v128.or(hi, v128.and(i8x16.eq(v128.and(hb, u2), u2), i8x16.splat(16)));
        }
        storeScaledSub16(dst + (h << 2), lo, d1, m1);
        storeScaledSub16(dst + 128 + (h << 2), hi, d2, m2);
      }
      dst += 256;
    }
  }
}

export function dequantizeQ4_K(src: usize, nb: i32, dst: usize): void {
  dequantizeK4(src, nb, dst, false);
}

export function dequantizeQ5_K(src: usize, nb: i32, dst: usize): void {
  dequantizeK4(src, nb, dst, true);
}

export function dequantizeQ6_K(src: usize, nb: i32, dst: usize): void {
  const m15 = i8x16.splat(15), m3 = i8x16.splat(3), k32 = i8x16.splat(32);
  for (let b = 0; b < nb; b++, src += 210) {
    const d = f16ToF32(load<u16>(src, 208));
    for (let h: usize = 0; h < 2; h++, dst += 512) {
      const ql = src + (h << 6), qh = src + 128 + (h << 5), sc = src + 192 + (h << 3);
      for (let l: usize = 0; l < 32; l += 16) {
        const is = l >> 4;
        const a = v128.load(ql + l), c = v128.load(ql + l + 32), hb = v128.load(qh + l);
        const q1 = i8x16.sub(v128.or(v128.and(a, m15), i16x8.shl(v128.and(hb, m3), 4)), k32);
        const q2 = i8x16.sub(v128.or(v128.and(c, m15), i16x8.shl(v128.and(i16x8.shr_u(hb, 2), m3), 4)), k32);
        const q3 = i8x16.sub(v128.or(highNibbles(a), i16x8.shl(v128.and(i16x8.shr_u(hb, 4), m3), 4)), k32);
        const q4 = i8x16.sub(v128.or(highNibbles(c), i16x8.shl(v128.and(i16x8.shr_u(hb, 6), m3), 4)), k32);
        storeScaled16(dst + (l << 2), q1, f32x4.splat(d * <f32>load<i8>(sc + is)), true);
        storeScaled16(dst + 128 + (l << 2), q2, f32x4.splat(d * <f32>load<i8>(sc + is + 2)), true);
        storeScaled16(dst + 256 + (l << 2), q3, f32x4.splat(d * <f32>load<i8>(sc + is + 4)), true);
        storeScaled16(dst + 384 + (l << 2), q4, f32x4.splat(d * <f32>load<i8>(sc + is + 6)), true);
      }
    }
  }
}

/** kvalues_mxfp4 (doubled e2m1 values) by nibble, as bytes */
// @ts-ignore: decorator
@inline function fp4Values(q: v128): v128 {
  return i8x16.swizzle(v128(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12), q);
}

export function dequantizeMxfp4(src: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, src += 17, dst += 128) {
    const e = <u32>load<u8>(src);
    const d = f32x4.splat(reinterpret<f32>(e >= 2 ? (e - 1) << 23 : <u32>0x200000 << e));
    const q = v128.load(src, 1);
    storeScaled16(dst, fp4Values(lowNibbles(q)), d, true);
    storeScaled16(dst + 64, fp4Values(highNibbles(q)), d, true);
  }
}

export function dequantizeNvfp4(src: usize, nb: i32, dst: usize): void {
  for (let b = 0; b < nb; b++, src += 36) {
    for (let s: usize = 0; s < 4; s++, dst += 64) {
      const d = f32x4.splat(ue4m3Half(<i32>load<u8>(src + s)));
      // 8 bytes: low nibbles are elements 0..7, high nibbles 8..15
      const q = v128.load64_zero(src + 4 + (s << 3));
      const codes = i8x16.shuffle(lowNibbles(q), highNibbles(q), 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
      storeScaled16(dst, fp4Values(codes), d, true);
    }
  }
}

// ---------------------------------------------------------------- per-row error sums
//
// The order of src/quant/ggml/row-error.ts rowErrorSums, exactly: per 8 elements x[i..i+8) of a row
// and their dequantized values y, in float32: e = x - y, then lane j (0..3) takes
// x[i+j]^2 + x[i+j+4]^2 (and e likewise) and adds it to its float64 sum; a row's sum is
// (l0 + l2) + (l1 + l3).

/** lanes 0, 1 and lanes 2, 3 of a float32 vector as float64 vectors */
// @ts-ignore: decorator
@inline function lowF64(v: v128): v128 {
  return f64x2.promote_low_f32x4(v);
}
// @ts-ignore: decorator
@inline function highF64(v: v128): v128 {
  return f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 2, 3));
}

/** a*a + b*b per lane, float32 */
// @ts-ignore: decorator
@inline function pairSq(a: v128, b: v128): v128 {
  return f32x4.add(f32x4.mul(a, a), f32x4.mul(b, b));
}

/** sum of the float64 lane pairs (l0, l1) + (l2, l3) as (l0 + l2) + (l1 + l3) */
// @ts-ignore: decorator
@inline function laneSum(lo: v128, hi: v128): f64 {
  const t = f64x2.add(lo, hi);
  return f64x2.extract_lane(t, 0) + f64x2.extract_lane(t, 1);
}

/**
 * For each of nRows rows of rowLength (a multiple of 8) float32 values x (at src) and y (at deq):
 * out[2r] = sum x^2, out[2r + 1] = sum (x - y)^2, float64, in the order above.
 */
export function rowErrors(src: usize, deq: usize, nRows: i32, rowLength: i32, out: usize): void {
  for (let r = 0; r < nRows; r++, out += 16) {
    let s01 = f64x2.splat(0);
    let s23 = f64x2.splat(0);
    let n01 = f64x2.splat(0);
    let n23 = f64x2.splat(0);
    for (let i = 0; i < rowLength; i += 8, src += 32, deq += 32) {
      const a = v128.load(src);
      const b = v128.load(src, 16);
      const sx = pairSq(a, b);
      const se = pairSq(f32x4.sub(a, v128.load(deq)), f32x4.sub(b, v128.load(deq, 16)));
      s01 = f64x2.add(s01, lowF64(sx));
      s23 = f64x2.add(s23, highF64(sx));
      n01 = f64x2.add(n01, lowF64(se));
      n23 = f64x2.add(n23, highF64(se));
    }
    store<f64>(out, laneSum(s01, s23));
    store<f64>(out, laneSum(n01, n23), 8);
  }
}

/** rowErrors with y = dequantizeQ8_0 of the blocks at q (rowLength a multiple of 32), without storing y */
export function rowErrorsQ8_0(src: usize, q: usize, nRows: i32, rowLength: i32, out: usize): void {
  for (let r = 0; r < nRows; r++, out += 16) {
    let s01 = f64x2.splat(0);
    let s23 = f64x2.splat(0);
    let n01 = f64x2.splat(0);
    let n23 = f64x2.splat(0);
    for (let i = 0; i < rowLength; i += 32, q += 34) {
      const d = f32x4.splat(f16ToF32(load<u16>(q)));
      const lo = v128.load(q, 2);
      const hi = v128.load(q, 18);
      for (let k = 0; k < 8; k += 2, src += 32) {
        const a = v128.load(src);
        const b = v128.load(src, 16);
        const v = k < 4 ? lo : hi;
        const ya = f32x4.mul(i8x16ToF32(v, k & 3), d);
        const yb = f32x4.mul(i8x16ToF32(v, (k & 3) + 1), d);
        const sx = pairSq(a, b);
        const se = pairSq(f32x4.sub(a, ya), f32x4.sub(b, yb));
        s01 = f64x2.add(s01, lowF64(sx));
        s23 = f64x2.add(s23, highF64(sx));
        n01 = f64x2.add(n01, lowF64(se));
        n23 = f64x2.add(n23, highF64(se));
      }
    }
    store<f64>(out, laneSum(s01, s23));
    store<f64>(out, laneSum(n01, n23), 8);
  }
}

// ---------------------------------------------------------------- quantization errors

/**
 * deq[i] = deq[i] - src[i] for i < n (in place): a quantizer's error rows, ΔW = dequantized - W (the
 * sensitivity pass's candidates). float32 subtraction, the value JavaScript's `out[i] -= src[i]` on
 * Float32Arrays stores (a float64 difference of two float32 rounded once to float32 is the float32
 * difference).
 */
export function errorsInPlace(deq: usize, src: usize, n: i32): void {
  let i = 0;
  for (; i + 8 <= n; i += 8, deq += 32, src += 32) {
    v128.store(deq, f32x4.sub(v128.load(deq), v128.load(src)));
    v128.store(deq, f32x4.sub(v128.load(deq, 16), v128.load(src, 16)), 16);
  }
  for (; i < n; i++, deq += 4, src += 4) store<f32>(deq, load<f32>(deq) - load<f32>(src));
}
