// Element-format casts (float32 -> minifloat / intN -> float32), round-to-nearest-even, 4 lanes at a
// time. Bit-exact with src/formats/cast.ts (encodeRef/decodeRef/fakeQuantRef); the TypeScript side
// (src/kernels/cast.ts) decides which formats qualify and lowers each format to the numbers below.
//
// All kernels work on buffers inside the imported memory, in place or buffer to buffer; counts are
// rounded up to a whole vector (16 elements) by the caller, which pads the tail with zeros.
//
// Rounding of a magnitude a (the float32 bits with the sign cleared) to a format with m stored
// mantissa bits and smallest normal exponent emin:
//   a >= 2^emin:  round the float32 mantissa to m bits, ties to even, on the integer bits:
//                 (a + (2^(s-1) - 1) + ((a >> s) & 1)) & ~(2^s - 1),  s = 23 - m
//                 (a carry out of the mantissa bumps the exponent, which is exactly right)
//   a <  2^emin:  the quantum is the constant q = 2^(emin - m); with C = 2^23 q the float32 sum
//                 a + C has ulp q, so (a + C) - C is a rounded to a multiple of q, ties to even,
//                 and bits(a + C) - bits(C) is that multiple, i.e. the subnormal code.
// Both are exact because the caller only sends formats with emin >= -126 and m <= 23 whose finite
// values are all float32 values.

// Lane select: relaxed laneselect (one blend) where available; every mask here is all-ones or
// all-zeros per lane, where both instructions agree.
// @ts-ignore: decorator
@inline function sel(a: v128, b: v128, m: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.relaxed_laneselect(a, b, m);
  return v128.bitselect(a, b, m);
}

export function heapBase(): usize {
  return __heap_base;
}

/** Does this build use relaxed SIMD? */
export function relaxed(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

// Format parameters, set once per call by setFloat()/setInt() (globals keep the kernel signatures short).
let shift: i32 = 0; // 23 - m
let roundBias: i32 = 0; // 2^(shift-1) - 1, or 0 when shift = 0
let oddBit: i32 = 0; // 1, or 0 when shift = 0
let keepMask: i32 = -1; // ~(2^shift - 1)
let minNormal: f32 = 0; // 2^emin
let subMagic: f32 = 0; // C = 2^(emin - m + 23); 0 when the format's grid is finer than float32's
let flushHalf: f32 = 0; // subnormals flushed: minNormal / 2, else -1
let maxFinite: f32 = 0;
let overValue: i32 = 0; // float32 bits of the result of a finite overflow (maxFinite, inf or NaN)
let infValue: i32 = 0; // float32 bits for an infinite input
let nanValue: i32 = 0; // float32 bits for a NaN input (NaN, or 0 with nan-to-zero)
let negZero: i32 = 1; // the format has -0
let codeOffset: i32 = 0; // (127 - bias) << m: float32 exponent field -> format exponent field
let signShift: i32 = 24; // 32 - bits
let overCode: i32 = 0; // code (without sign) of a finite overflow
let infCode: i32 = 0; // code (without sign) for an infinite input
let nanCode: i32 = 0; // code for a NaN input (sign never added)
let overSigned: i32 = 1; // add the sign bit to overCode / infCode (0 for fnuz NaN 0x80)
let codeMask: i32 = 0xff; // 2^bits - 1
let subQuantum: f32 = 0; // decode: 2^(emin - m)
let expMaxField: i32 = 0; // decode: 2^e - 1
let manMask: i32 = 0; // decode: 2^m - 1
let specials: i32 = 0; // decode: 0 none, 1 ieee, 2 fn, 3 fnuz
let decodeOffset: i32 = 0; // decode: (127 - bias) << 23
let magic: i32 = 0; // fast path rounds with x + C - C, C = 2^(max(e, emin) - m + 23) (needs m <= 22 and no C overflow)
let intMin: f32 = 0;
let intMax: f32 = 0;
let intSigned: i32 = 1;

export function setFloat(
  m: i32, emin: i32, bias: i32, bits: i32, subnormals: i32, maxF: f32,
  overV: i32, infV: i32, nanV: i32, hasNegZero: i32,
  overC: i32, infC: i32, nanC: i32, overSign: i32, spec: i32, expBits: i32,
): void {
  shift = 23 - m;
  roundBias = shift > 0 ? (1 << (shift - 1)) - 1 : 0;
  oddBit = shift > 0 ? 1 : 0;
  keepMask = ~((1 << shift) - 1);
  minNormal = reinterpret<f32>((emin + 127) << 23);
  const qe = emin - m;
  subMagic = qe <= -149 ? 0 : reinterpret<f32>((qe + 23 + 127) << 23);
  subQuantum = qe <= -149 ? reinterpret<f32>(1) : qe >= -126 ? reinterpret<f32>((qe + 127) << 23) : reinterpret<f32>(1 << (qe + 149));
  flushHalf = subnormals ? -1 : minNormal * 0.5;
  maxFinite = maxF;
  overValue = overV;
  infValue = infV;
  nanValue = nanV;
  negZero = hasNegZero;
  codeOffset = (127 - bias) << m;
  signShift = 32 - bits;
  overCode = overC;
  infCode = infC;
  nanCode = nanC;
  overSigned = overSign;
  codeMask = bits >= 32 ? -1 : (1 << bits) - 1;
  expMaxField = (1 << expBits) - 1;
  manMask = (1 << m) - 1;
  specials = spec;
  decodeOffset = (127 - bias) << 23;
  magic = m <= 22 && (reinterpret<i32>(maxF) >>> 23) + 23 - m <= 254 ? 1 : 0;
}

export function setInt(bits: i32, signed: i32): void {
  intSigned = signed;
  intMin = signed ? -<f32>(1 << (bits - 1)) : 0;
  intMax = signed ? <f32>((1 << (bits - 1)) - 1) : <f32>((1 << bits) - 1);
  codeMask = (1 << bits) - 1;
  signShift = 32 - bits;
}

// Rounded magnitude r (float32 bits, no sign) of magnitude a, before overflow and specials. The
// constants are splatted once per call by the caller (globals read inside loops are not hoisted).
// @ts-ignore: decorator
@inline function roundMag(a: v128, isSub: v128, sh: i32, vBias: v128, vOdd: v128, vKeep: v128, flush: bool, vHalf: v128, vMinN: v128, vC: v128): v128 {
  const rn = v128.and(i32x4.add(a, i32x4.add(vBias, v128.and(i32x4.shr_u(a, sh), vOdd))), vKeep);
  const rs = flush ? v128.and(f32x4.gt(a, vHalf), vMinN) : f32x4.sub(f32x4.add(a, vC), vC);
  return sel(rs, rn, isSub);
}

// General path of fakeQuantFloat for one vector (rare: NaN, inf, overflow, or - without `magic` -
// magnitudes below 2^emin). Reads the globals directly so that the fast loop keeps few registers.
// @ts-ignore: decorator
@inline function fakeQuantGeneral(x: v128): v128 {
  const absMask = i32x4.splat(0x7fffffff);
  const infBits = i32x4.splat(0x7f800000);
  const a = v128.and(x, absMask);
  const sign = v128.andnot(x, absMask);
  const vMin = f32x4.splat(minNormal);
  const isSub = f32x4.lt(a, vMin);
  let r = roundMag(a, isSub, shift, i32x4.splat(roundBias), i32x4.splat(oddBit), i32x4.splat(keepMask), flushHalf >= 0, f32x4.splat(flushHalf), vMin, f32x4.splat(subMagic));
  r = sel(i32x4.splat(overValue), r, f32x4.gt(r, f32x4.splat(maxFinite)));
  r = sel(i32x4.splat(infValue), r, i32x4.eq(a, infBits));
  const isNaN = i32x4.gt_s(a, infBits);
  r = sel(i32x4.splat(nanValue), r, isNaN);
  // sign: never on NaN; on zero only where the format has -0
  const rNaN = f32x4.ne(r, r);
  let s = v128.andnot(sign, v128.or(rNaN, isNaN));
  if (!negZero) s = v128.andnot(s, i32x4.eq(r, i32x4.splat(0)));
  return sel(i32x4.splat(0x7fc00000), v128.or(r, s), rNaN);
}

// @ts-ignore: decorator
@inline function anyNaN(x: v128): v128 {
  return i32x4.gt_s(v128.and(x, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f800000));
}

/**
 * In-place fake quantization of n float32 values at p (n a multiple of 16). Returns 1 if a NaN was seen.
 *
 * Each fast path takes a block of values whose magnitudes are all <= maxFinite (no NaN, inf or
 * overflow): 32 at a time (one test and branch per 8 vectors; a last 16 take the general path), 16 in
 * the last one below. Other blocks take the general path, one vector at a time. Fast paths:
 *   - `wide` (emin = -126 with subnormals and -0, e.g. bf16): the integer rounding of the header on
 *     the float32 bits is exact for every such value, float32 subnormals included (their bits are
 *     linear with the format's subnormal quantum 2^(-126 - m)); the sign rides along. The shift is a
 *     constant for bf16 (a variable vector shift costs V8 three instructions).
 *   - `magic`: with C = 2^(max(e, emin) - m + 23) for the binade e of |x|, (|x| + C) - C rounds |x|
 *     to m mantissa bits, ties to even, subnormals included (the sum has ulp 2^(max(e, emin) - m));
 *     the sign is put back (onto zero only where the format has -0: without -0, C takes x's sign, and
 *     (x + C) - C is +0 when x rounds to zero).
 *   - otherwise the integer rounding, for blocks whose magnitudes are also >= 2^emin (or 0 with -0 kept).
 */
export function fakeQuantFloat(p: usize, n: i32): i32 {
  // separate loops per mode: binaryen turns a small if/else inside a loop into a select of both sides
  if (flushHalf < 0 && negZero && reinterpret<i32>(minNormal) == 0x00800000) return shift == 16 ? fakeQuantWide(p, n, 16) : fakeQuantWide(p, n, shift);
  if (magic != 0 && flushHalf < 0) return negZero ? fakeQuantMagic(p, n, true) : fakeQuantMagic(p, n, false);
  return negZero ? fakeQuantBits(p, n, true) : fakeQuantBits(p, n, false);
}

// @ts-ignore: decorator
@inline function wideStore(q: usize, x: v128, sh: i32, vBias: v128, vOdd: v128, vKeep: v128): void {
  v128.store(q, v128.and(i32x4.add(x, i32x4.add(vBias, v128.and(i32x4.shr_u(x, sh), vOdd))), vKeep));
}
// @ts-ignore: decorator
@inline function fakeQuantWide(p: usize, n: i32, sh: i32): i32 {
  const absMask = i32x4.splat(0x7fffffff);
  const vBias = i32x4.splat(roundBias), vOdd = i32x4.splat(oddBit), vKeep = i32x4.splat(keepMask);
  const vMaxBits = i32x4.splat(reinterpret<i32>(maxFinite));
  let nanSeen = i32x4.splat(0);
  const end = p + (<usize>n << 2);
  let q = p;
  for (; q + 128 <= end; q += 128) {
    const x0 = v128.load(q), x1 = v128.load(q, 16), x2 = v128.load(q, 32), x3 = v128.load(q, 48);
    const x4 = v128.load(q, 64), x5 = v128.load(q, 80), x6 = v128.load(q, 96), x7 = v128.load(q, 112);
    const a = i32x4.max_s(i32x4.max_s(i32x4.max_s(v128.and(x0, absMask), v128.and(x1, absMask)), i32x4.max_s(v128.and(x2, absMask), v128.and(x3, absMask))),
      i32x4.max_s(i32x4.max_s(v128.and(x4, absMask), v128.and(x5, absMask)), i32x4.max_s(v128.and(x6, absMask), v128.and(x7, absMask))));
    if (!v128.any_true(i32x4.gt_s(a, vMaxBits))) {
      wideStore(q, x0, sh, vBias, vOdd, vKeep); wideStore(q + 16, x1, sh, vBias, vOdd, vKeep);
      wideStore(q + 32, x2, sh, vBias, vOdd, vKeep); wideStore(q + 48, x3, sh, vBias, vOdd, vKeep);
      wideStore(q + 64, x4, sh, vBias, vOdd, vKeep); wideStore(q + 80, x5, sh, vBias, vOdd, vKeep);
      wideStore(q + 96, x6, sh, vBias, vOdd, vKeep); wideStore(q + 112, x7, sh, vBias, vOdd, vKeep);
      continue;
    }
    nanSeen = generalRun(q, q + 128, nanSeen);
  }
  return v128.any_true(generalRun(q, end, nanSeen)) ? 1 : 0;
}

/** the general path over [q, end) (a multiple of 16 bytes); returns nanSeen with this run's NaNs */
// @ts-ignore: decorator
@inline function generalRun(q: usize, end: usize, nanSeen: v128): v128 {
  for (; q < end; q += 16) {
    const x = v128.load(q);
    nanSeen = v128.or(nanSeen, anyNaN(x));
    v128.store(q, fakeQuantGeneral(x));
  }
  return nanSeen;
}

// @ts-ignore: decorator
@inline function magicStore(q: usize, x: v128, a: v128, keepNegZero: bool, expMask: v128, vMinBits: v128, vExpShift: v128): void {
  const c = i32x4.add(i32x4.max_s(v128.and(a, expMask), vMinBits), vExpShift);
  const s = v128.xor(x, a);
  if (keepNegZero) {
    v128.store(q, v128.or(f32x4.sub(f32x4.add(a, c), c), s));
  } else {
    const d = v128.or(c, s);
    v128.store(q, f32x4.sub(f32x4.add(x, d), d));
  }
}

// @ts-ignore: decorator
@inline function fakeQuantMagic(p: usize, n: i32, keepNegZero: bool): i32 {
  const absMask = i32x4.splat(0x7fffffff);
  const expMask = i32x4.splat(0x7f800000);
  const vMinBits = i32x4.splat(reinterpret<i32>(minNormal));
  const vMaxBits = i32x4.splat(reinterpret<i32>(maxFinite));
  const vExpShift = i32x4.splat(shift << 23);
  let nanSeen = i32x4.splat(0);
  const end = p + (<usize>n << 2);
  let q = p;
  for (; q + 128 <= end; q += 128) {
    const x0 = v128.load(q), x1 = v128.load(q, 16), x2 = v128.load(q, 32), x3 = v128.load(q, 48);
    const x4 = v128.load(q, 64), x5 = v128.load(q, 80), x6 = v128.load(q, 96), x7 = v128.load(q, 112);
    const a0 = v128.and(x0, absMask), a1 = v128.and(x1, absMask), a2 = v128.and(x2, absMask), a3 = v128.and(x3, absMask);
    const a4 = v128.and(x4, absMask), a5 = v128.and(x5, absMask), a6 = v128.and(x6, absMask), a7 = v128.and(x7, absMask);
    const a = i32x4.max_s(i32x4.max_s(i32x4.max_s(a0, a1), i32x4.max_s(a2, a3)), i32x4.max_s(i32x4.max_s(a4, a5), i32x4.max_s(a6, a7)));
    if (!v128.any_true(i32x4.gt_s(a, vMaxBits))) {
      magicStore(q, x0, a0, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 16, x1, a1, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 32, x2, a2, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 48, x3, a3, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 64, x4, a4, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 80, x5, a5, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 96, x6, a6, keepNegZero, expMask, vMinBits, vExpShift);
      magicStore(q + 112, x7, a7, keepNegZero, expMask, vMinBits, vExpShift);
      continue;
    }
    nanSeen = generalRun(q, q + 128, nanSeen);
  }
  return v128.any_true(generalRun(q, end, nanSeen)) ? 1 : 0;
}

// @ts-ignore: decorator
@inline function fakeQuantBits(p: usize, n: i32, keepNegZero: bool): i32 {
  const absMask = i32x4.splat(0x7fffffff);
  const sh = shift;
  const vBias = i32x4.splat(roundBias), vOdd = i32x4.splat(oddBit), vKeep = i32x4.splat(keepMask);
  const vMinBits = i32x4.splat(reinterpret<i32>(minNormal));
  const vRange = i32x4.splat(reinterpret<i32>(maxFinite) - reinterpret<i32>(minNormal));
  const zero = i32x4.splat(0);
  let nanSeen = zero;
  const end = p + (<usize>n << 2);
  for (let q = p; q < end; q += 64) {
    const x0 = v128.load(q), x1 = v128.load(q, 16), x2 = v128.load(q, 32), x3 = v128.load(q, 48);
    const a0 = v128.and(x0, absMask), a1 = v128.and(x1, absMask), a2 = v128.and(x2, absMask), a3 = v128.and(x3, absMask);
    let b0 = i32x4.gt_u(i32x4.sub(a0, vMinBits), vRange), b1 = i32x4.gt_u(i32x4.sub(a1, vMinBits), vRange);
    let b2 = i32x4.gt_u(i32x4.sub(a2, vMinBits), vRange), b3 = i32x4.gt_u(i32x4.sub(a3, vMinBits), vRange);
    if (keepNegZero) {
      // 0 rounds to itself with its sign kept
      b0 = v128.andnot(b0, i32x4.eq(a0, zero));
      b1 = v128.andnot(b1, i32x4.eq(a1, zero));
      b2 = v128.andnot(b2, i32x4.eq(a2, zero));
      b3 = v128.andnot(b3, i32x4.eq(a3, zero));
    }
    if (!v128.any_true(v128.or(v128.or(b0, b1), v128.or(b2, b3)))) {
      // the sign bit rides along: no carry reaches it below maxFinite
      v128.store(q, v128.and(i32x4.add(x0, i32x4.add(vBias, v128.and(i32x4.shr_u(x0, sh), vOdd))), vKeep));
      v128.store(q, v128.and(i32x4.add(x1, i32x4.add(vBias, v128.and(i32x4.shr_u(x1, sh), vOdd))), vKeep), 16);
      v128.store(q, v128.and(i32x4.add(x2, i32x4.add(vBias, v128.and(i32x4.shr_u(x2, sh), vOdd))), vKeep), 32);
      v128.store(q, v128.and(i32x4.add(x3, i32x4.add(vBias, v128.and(i32x4.shr_u(x3, sh), vOdd))), vKeep), 48);
      continue;
    }
    nanSeen = v128.or(nanSeen, v128.or(v128.or(anyNaN(x0), anyNaN(x1)), v128.or(anyNaN(x2), anyNaN(x3))));
    for (let k: usize = 0; k < 64; k += 16) v128.store(q + k, fakeQuantGeneral(v128.load(q + k)));
  }
  return v128.any_true(nanSeen) ? 1 : 0;
}

// Codes (i32 lanes) of 4 float32 values; the constants come from the caller (see encodeFloat8).
// @ts-ignore: decorator
@inline function floatCodes(
  x: v128, sh: i32, vBias: v128, vOdd: v128, vKeep: v128, flush: bool, vHalf: v128, vMinN: v128, vC: v128,
  vMax: v128, vCodeOff: v128, vMinCode: v128, vOverC: v128, vInfC: v128, vNaNC: v128, sgnShift: i32, signedOver: bool, keepNegZero: bool,
): v128 {
  const absMask = i32x4.splat(0x7fffffff);
  const infBits = i32x4.splat(0x7f800000);
  const a = v128.and(x, absMask);
  const sign = i32x4.shr_u(v128.andnot(x, absMask), sgnShift);
  const isSub = f32x4.lt(a, vMinN);
  const r = roundMag(a, isSub, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC);
  let code = i32x4.sub(i32x4.shr_u(r, sh), vCodeOff);
  const sub = flush ? v128.and(f32x4.gt(a, vHalf), vMinCode) : i32x4.sub(f32x4.add(a, vC), vC);
  code = sel(sub, code, isSub);
  const isInf = i32x4.eq(a, infBits);
  const over = v128.andnot(f32x4.gt(r, vMax), isInf);
  code = sel(vOverC, code, over);
  code = sel(vInfC, code, isInf);
  const isNaN = i32x4.gt_s(a, infBits);
  code = sel(vNaNC, code, isNaN);
  let s = v128.andnot(sign, isNaN);
  if (!signedOver) s = v128.andnot(s, v128.or(over, isInf));
  if (!keepNegZero) s = v128.andnot(s, i32x4.eq(code, i32x4.splat(0)));
  return v128.or(code, s);
}

// @ts-ignore: decorator
@inline function nanLanes(x: v128): v128 {
  return i32x4.gt_s(v128.and(x, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f800000));
}

/** Encode n float32 at p to one byte per code at out. Returns 1 if a NaN was seen. */
export function encodeFloat8(p: usize, n: i32, out: usize): i32 {
  const sh = shift, flush = flushHalf >= 0, keepNegZero = negZero != 0, sgnShift = signShift, signedOver = overSigned != 0;
  const vBias = i32x4.splat(roundBias), vOdd = i32x4.splat(oddBit), vKeep = i32x4.splat(keepMask);
  const vHalf = f32x4.splat(flushHalf), vC = f32x4.splat(subMagic), vMinN = f32x4.splat(minNormal), vMax = f32x4.splat(maxFinite);
  const vCodeOff = i32x4.splat(codeOffset), vMinCode = i32x4.splat(1 << (23 - shift));
  const vOverC = i32x4.splat(overCode), vInfC = i32x4.splat(infCode), vNaNC = i32x4.splat(nanCode);
  let nanSeen = i32x4.splat(0);
  for (let i = 0; i < n; i += 16) {
    const q = p + (<usize>i << 2);
    const x0 = v128.load(q), x1 = v128.load(q, 16), x2 = v128.load(q, 32), x3 = v128.load(q, 48);
    nanSeen = v128.or(nanSeen, v128.or(v128.or(nanLanes(x0), nanLanes(x1)), v128.or(nanLanes(x2), nanLanes(x3))));
    const lo = i16x8.narrow_i32x4_u(floatCodes(x0, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC, vMax, vCodeOff, vMinCode, vOverC, vInfC, vNaNC, sgnShift, signedOver, keepNegZero), floatCodes(x1, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC, vMax, vCodeOff, vMinCode, vOverC, vInfC, vNaNC, sgnShift, signedOver, keepNegZero));
    const hi = i16x8.narrow_i32x4_u(floatCodes(x2, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC, vMax, vCodeOff, vMinCode, vOverC, vInfC, vNaNC, sgnShift, signedOver, keepNegZero), floatCodes(x3, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC, vMax, vCodeOff, vMinCode, vOverC, vInfC, vNaNC, sgnShift, signedOver, keepNegZero));
    v128.store(out + <usize>i, i8x16.narrow_i16x8_u(lo, hi));
  }
  return v128.any_true(nanSeen) ? 1 : 0;
}

/** Encode n float32 at p to one 16-bit code each at out. Returns 1 if a NaN was seen. */
export function encodeFloat16(p: usize, n: i32, out: usize): i32 {
  const sh = shift, flush = flushHalf >= 0, keepNegZero = negZero != 0, sgnShift = signShift, signedOver = overSigned != 0;
  const vBias = i32x4.splat(roundBias), vOdd = i32x4.splat(oddBit), vKeep = i32x4.splat(keepMask);
  const vHalf = f32x4.splat(flushHalf), vC = f32x4.splat(subMagic), vMinN = f32x4.splat(minNormal), vMax = f32x4.splat(maxFinite);
  const vCodeOff = i32x4.splat(codeOffset), vMinCode = i32x4.splat(1 << (23 - shift));
  const vOverC = i32x4.splat(overCode), vInfC = i32x4.splat(infCode), vNaNC = i32x4.splat(nanCode);
  let nanSeen = i32x4.splat(0);
  for (let i = 0; i < n; i += 8) {
    const q = p + (<usize>i << 2);
    const x0 = v128.load(q), x1 = v128.load(q, 16);
    nanSeen = v128.or(nanSeen, v128.or(nanLanes(x0), nanLanes(x1)));
    v128.store(out + (<usize>i << 1), i16x8.narrow_i32x4_u(floatCodes(x0, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC, vMax, vCodeOff, vMinCode, vOverC, vInfC, vNaNC, sgnShift, signedOver, keepNegZero), floatCodes(x1, sh, vBias, vOdd, vKeep, flush, vHalf, vMinN, vC, vMax, vCodeOff, vMinCode, vOverC, vInfC, vNaNC, sgnShift, signedOver, keepNegZero)));
  }
  return v128.any_true(nanSeen) ? 1 : 0;
}

// float32 values of 4 codes (i32 lanes); constants from the caller (see decodeFloat8).
// @ts-ignore: decorator
@inline function floatValues(c: v128, sh: i32, m: i32, signAt: i32, vMag: v128, vExpMax: v128, vMan: v128, vDecOff: v128, flush: bool, vSubQ: v128, spec: i32, vNaNPattern: v128): v128 {
  const mag = v128.and(c, vMag);
  const E = v128.and(i32x4.shr_u(c, m), vExpMax);
  const M = v128.and(c, vMan);
  const sign = i32x4.shl(i32x4.shr_u(c, signAt), 31);
  const normal = i32x4.add(i32x4.shl(mag, sh), vDecOff);
  const zero = i32x4.splat(0);
  const sub = flush ? zero : f32x4.mul(f32x4.convert_i32x4_s(M), vSubQ);
  let v = sel(sub, normal, i32x4.eq(E, zero));
  const nan = i32x4.splat(0x7fc00000);
  if (spec == 1) {
    v = sel(sel(i32x4.splat(0x7f800000), nan, i32x4.eq(M, zero)), v, i32x4.eq(E, vExpMax));
  } else if (spec == 2) {
    v = sel(nan, v, i32x4.eq(mag, vNaNPattern));
  } else if (spec == 3) {
    v = sel(nan, v, i32x4.eq(c, vNaNPattern));
  }
  return v128.or(v, v128.andnot(sign, f32x4.ne(v, v)));
}

/** Decode n one-byte codes at p to float32 at out. Returns 1 if a code does not fit the format. */
export function decodeFloat8(p: usize, n: i32, out: usize): i32 {
  const sh = shift, m = 23 - shift, signAt = 31 - signShift, flush = flushHalf >= 0, spec = specials;
  const vMag = i32x4.splat(codeMask >>> 1), vExpMax = i32x4.splat(expMaxField), vMan = i32x4.splat(manMask);
  const vDecOff = i32x4.splat(decodeOffset), vSubQ = f32x4.splat(subQuantum);
  const vNaNPattern = i32x4.splat(specials == 3 ? (codeMask >>> 1) + 1 : codeMask >>> 1);
  let bad = i32x4.splat(0);
  const outside = i32x4.splat(~codeMask);
  for (let i = 0; i < n; i += 16) {
    const b = v128.load(p + <usize>i);
    const lo = i16x8.extend_low_i8x16_u(b), hi = i16x8.extend_high_i8x16_u(b);
    const c0 = i32x4.extend_low_i16x8_u(lo), c1 = i32x4.extend_high_i16x8_u(lo);
    const c2 = i32x4.extend_low_i16x8_u(hi), c3 = i32x4.extend_high_i16x8_u(hi);
    bad = v128.or(bad, v128.and(v128.or(v128.or(c0, c1), v128.or(c2, c3)), outside));
    const q = out + (<usize>i << 2);
    v128.store(q, floatValues(c0, sh, m, signAt, vMag, vExpMax, vMan, vDecOff, flush, vSubQ, spec, vNaNPattern));
    v128.store(q, floatValues(c1, sh, m, signAt, vMag, vExpMax, vMan, vDecOff, flush, vSubQ, spec, vNaNPattern), 16);
    v128.store(q, floatValues(c2, sh, m, signAt, vMag, vExpMax, vMan, vDecOff, flush, vSubQ, spec, vNaNPattern), 32);
    v128.store(q, floatValues(c3, sh, m, signAt, vMag, vExpMax, vMan, vDecOff, flush, vSubQ, spec, vNaNPattern), 48);
  }
  return v128.any_true(bad) ? 1 : 0;
}

/** Decode n 16-bit codes at p to float32 at out. Returns 1 if a code does not fit the format. */
export function decodeFloat16(p: usize, n: i32, out: usize): i32 {
  const sh = shift, m = 23 - shift, signAt = 31 - signShift, flush = flushHalf >= 0, spec = specials;
  const vMag = i32x4.splat(codeMask >>> 1), vExpMax = i32x4.splat(expMaxField), vMan = i32x4.splat(manMask);
  const vDecOff = i32x4.splat(decodeOffset), vSubQ = f32x4.splat(subQuantum);
  const vNaNPattern = i32x4.splat(specials == 3 ? (codeMask >>> 1) + 1 : codeMask >>> 1);
  let bad = i32x4.splat(0);
  const outside = i32x4.splat(~codeMask);
  for (let i = 0; i < n; i += 8) {
    const h = v128.load(p + (<usize>i << 1));
    const c0 = i32x4.extend_low_i16x8_u(h), c1 = i32x4.extend_high_i16x8_u(h);
    bad = v128.or(bad, v128.and(v128.or(c0, c1), outside));
    const q = out + (<usize>i << 2);
    v128.store(q, floatValues(c0, sh, m, signAt, vMag, vExpMax, vMan, vDecOff, flush, vSubQ, spec, vNaNPattern));
    v128.store(q, floatValues(c1, sh, m, signAt, vMag, vExpMax, vMan, vDecOff, flush, vSubQ, spec, vNaNPattern), 16);
  }
  return v128.any_true(bad) ? 1 : 0;
}

// Integer formats: round half to even (f32x4.nearest), clamp to [qmin, qmax]; NaN -> 0 (reported).
// @ts-ignore: decorator
@inline function intRound(x: v128, vLo: v128, vHi: v128): v128 {
  // + 0 turns -0 into +0 (the reference returns code 0 for every zero)
  const q = f32x4.add(f32x4.nearest(x), f32x4.splat(0));
  const c = f32x4.pmin(f32x4.pmax(q, vLo), vHi);
  return v128.andnot(c, f32x4.ne(x, x));
}

// @ts-ignore: decorator
@inline function intFast(x: v128, vLo: v128, vHi: v128, vM: v128): v128 {
  return f32x4.sub(f32x4.add(f32x4.pmin(f32x4.pmax(x, vLo), vHi), vM), vM);
}

/**
 * In-place fake quantization to an integer format. Returns 1 if a NaN was seen.
 * Fast path, 32 values without NaN: clamp to [qmin, qmax] (integers), then round half to even with
 * (v + 1.5 * 2^23) - 1.5 * 2^23, exact for |v| <= 2^22 (here |v| <= 2^16); it also turns -0 into +0.
 */
export function fakeQuantInt(p: usize, n: i32): i32 {
  const vLo = f32x4.splat(intMin), vHi = f32x4.splat(intMax), vM = f32x4.splat(12582912);
  let nanSeen = i32x4.splat(0);
  const end = p + (<usize>n << 2);
  let q = p;
  for (; q + 128 <= end; q += 128) {
    const x0 = v128.load(q), x1 = v128.load(q, 16), x2 = v128.load(q, 32), x3 = v128.load(q, 48);
    const x4 = v128.load(q, 64), x5 = v128.load(q, 80), x6 = v128.load(q, 96), x7 = v128.load(q, 112);
    const nan = v128.or(v128.or(v128.or(f32x4.ne(x0, x0), f32x4.ne(x1, x1)), v128.or(f32x4.ne(x2, x2), f32x4.ne(x3, x3))),
      v128.or(v128.or(f32x4.ne(x4, x4), f32x4.ne(x5, x5)), v128.or(f32x4.ne(x6, x6), f32x4.ne(x7, x7))));
    if (!v128.any_true(nan)) {
      v128.store(q, intFast(x0, vLo, vHi, vM));
      v128.store(q, intFast(x1, vLo, vHi, vM), 16);
      v128.store(q, intFast(x2, vLo, vHi, vM), 32);
      v128.store(q, intFast(x3, vLo, vHi, vM), 48);
      v128.store(q, intFast(x4, vLo, vHi, vM), 64);
      v128.store(q, intFast(x5, vLo, vHi, vM), 80);
      v128.store(q, intFast(x6, vLo, vHi, vM), 96);
      v128.store(q, intFast(x7, vLo, vHi, vM), 112);
      continue;
    }
    nanSeen = v128.or(nanSeen, nan);
    for (let k: usize = 0; k < 128; k += 16) v128.store(q + k, intRound(v128.load(q + k), vLo, vHi));
  }
  for (; q < end; q += 16) {
    const x = v128.load(q);
    nanSeen = v128.or(nanSeen, f32x4.ne(x, x));
    v128.store(q, intRound(x, vLo, vHi));
  }
  return v128.any_true(nanSeen) ? 1 : 0;
}

// @ts-ignore: decorator
@inline function intCodes(x: v128, vLo: v128, vHi: v128, vMask: v128): v128 {
  return v128.and(i32x4.trunc_sat_f32x4_s(intRound(x, vLo, vHi)), vMask);
}

export function encodeInt8(p: usize, n: i32, out: usize): i32 {
  const vLo = f32x4.splat(intMin), vHi = f32x4.splat(intMax), vMask = i32x4.splat(codeMask);
  let nanSeen = i32x4.splat(0);
  for (let i = 0; i < n; i += 16) {
    const q = p + (<usize>i << 2);
    const x0 = v128.load(q), x1 = v128.load(q, 16), x2 = v128.load(q, 32), x3 = v128.load(q, 48);
    nanSeen = v128.or(nanSeen, v128.or(v128.or(f32x4.ne(x0, x0), f32x4.ne(x1, x1)), v128.or(f32x4.ne(x2, x2), f32x4.ne(x3, x3))));
    const lo = i16x8.narrow_i32x4_u(intCodes(x0, vLo, vHi, vMask), intCodes(x1, vLo, vHi, vMask));
    const hi = i16x8.narrow_i32x4_u(intCodes(x2, vLo, vHi, vMask), intCodes(x3, vLo, vHi, vMask));
    v128.store(out + <usize>i, i8x16.narrow_i16x8_u(lo, hi));
  }
  return v128.any_true(nanSeen) ? 1 : 0;
}

export function encodeInt16(p: usize, n: i32, out: usize): i32 {
  const vLo = f32x4.splat(intMin), vHi = f32x4.splat(intMax), vMask = i32x4.splat(codeMask);
  let nanSeen = i32x4.splat(0);
  for (let i = 0; i < n; i += 8) {
    const q = p + (<usize>i << 2);
    const x0 = v128.load(q), x1 = v128.load(q, 16);
    nanSeen = v128.or(nanSeen, v128.or(f32x4.ne(x0, x0), f32x4.ne(x1, x1)));
    v128.store(out + (<usize>i << 1), i16x8.narrow_i32x4_u(intCodes(x0, vLo, vHi, vMask), intCodes(x1, vLo, vHi, vMask)));
  }
  return v128.any_true(nanSeen) ? 1 : 0;
}

// @ts-ignore: decorator
@inline function intValues(c: v128, signedInt: bool, sgnShift: i32): v128 {
  const v = signedInt ? i32x4.shr_s(i32x4.shl(c, sgnShift), sgnShift) : c;
  return f32x4.convert_i32x4_s(v);
}

export function decodeInt8(p: usize, n: i32, out: usize): i32 {
  const signedInt = intSigned != 0, sgnShift = signShift;
  let bad = i32x4.splat(0);
  const outside = i32x4.splat(~codeMask);
  for (let i = 0; i < n; i += 16) {
    const b = v128.load(p + <usize>i);
    const lo = i16x8.extend_low_i8x16_u(b), hi = i16x8.extend_high_i8x16_u(b);
    const c0 = i32x4.extend_low_i16x8_u(lo), c1 = i32x4.extend_high_i16x8_u(lo);
    const c2 = i32x4.extend_low_i16x8_u(hi), c3 = i32x4.extend_high_i16x8_u(hi);
    bad = v128.or(bad, v128.and(v128.or(v128.or(c0, c1), v128.or(c2, c3)), outside));
    const q = out + (<usize>i << 2);
    v128.store(q, intValues(c0, signedInt, sgnShift));
    v128.store(q, intValues(c1, signedInt, sgnShift), 16);
    v128.store(q, intValues(c2, signedInt, sgnShift), 32);
    v128.store(q, intValues(c3, signedInt, sgnShift), 48);
  }
  return v128.any_true(bad) ? 1 : 0;
}

export function decodeInt16(p: usize, n: i32, out: usize): i32 {
  const signedInt = intSigned != 0, sgnShift = signShift;
  let bad = i32x4.splat(0);
  const outside = i32x4.splat(~codeMask);
  for (let i = 0; i < n; i += 8) {
    const h = v128.load(p + (<usize>i << 1));
    const c0 = i32x4.extend_low_i16x8_u(h), c1 = i32x4.extend_high_i16x8_u(h);
    bad = v128.or(bad, v128.and(v128.or(c0, c1), outside));
    const q = out + (<usize>i << 2);
    v128.store(q, intValues(c0, signedInt, sgnShift));
    v128.store(q, intValues(c1, signedInt, sgnShift), 16);
  }
  return v128.any_true(bad) ? 1 : 0;
}

// Scale steps, in float64 exactly as the reference: x -> fround(x / s), v -> fround(v * s).
export function divScale(p: usize, n: i32, s: f64): void {
  const vs = f64x2.splat(s);
  const end = p + (<usize>n << 2);
  for (let q = p; q < end; q += 16) {
    const x = v128.load(q);
    const lo = f32x4.demote_f64x2_zero(f64x2.div(f64x2.promote_low_f32x4(x), vs));
    const hi = f32x4.demote_f64x2_zero(f64x2.div(f64x2.promote_low_f32x4(i32x4.shuffle(x, x, 2, 3, 0, 1)), vs));
    v128.store(q, i32x4.shuffle(lo, hi, 0, 1, 4, 5));
  }
}

/** v * s; NaN lanes are written as the canonical quiet NaN 0x7fc00000. */
export function mulScale(p: usize, n: i32, s: f64): void {
  const vs = f64x2.splat(s);
  const canon = i32x4.splat(0x7fc00000);
  const end = p + (<usize>n << 2);
  for (let q = p; q < end; q += 16) {
    const x = v128.load(q);
    const lo = f32x4.demote_f64x2_zero(f64x2.mul(f64x2.promote_low_f32x4(x), vs));
    const hi = f32x4.demote_f64x2_zero(f64x2.mul(f64x2.promote_low_f32x4(i32x4.shuffle(x, x, 2, 3, 0, 1)), vs));
    const y = i32x4.shuffle(lo, hi, 0, 1, 4, 5);
    v128.store(q, sel(canon, y, f32x4.ne(y, y)));
  }
}
