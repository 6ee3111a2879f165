// build: shared-memory
import { cholDiag, cholPanelRows, cholTrailingRows, trilInverseCols, zeroUpperRows } from './_linalg';
// Matrix multiplication against weights in their stored GGML type, and batched causal attention (below).
// The TypeScript side is src/kernels/matmul.ts; its scalar references define the results.
//
//   y[t][n] = sum_k x[t][k] * W[n][k]     x: T x K (f32, row stride xStride bytes, K padded to Kx,
//                                          a multiple of 4, with zeros), W: N rows in GGML type `type`
//
// Each output is one dot product in a fixed order, whatever T, the tiling or the thread computing it:
// lane j of a 4-lane f32 accumulator sums x[k] * w[k] for k = j, j + 4, j + 8, ... in increasing k,
// then y = (lane0 + lane2) + (lane1 + lane3). With plain SIMD each step is round(acc + round(x * w));
// with relaxed SIMD f32x4.relaxed_madd may fuse it (one rounding). So results do not depend on the
// batch size or the number of threads.
//
// Work is split into chunks of `chunkRows` output rows (threads claim chunks). A chunk first
// dequantizes its rows into the thread's scratch (f32, row stride Kx) - bit-exact with the TypeScript
// dequantizers of src/quant/ggml - unless W is F32 with K % 4 == 0 (used in place), then multiplies
// them with the tokens in blocks of TOKEN_BLOCK (x block and W chunk stay in L2), in register tiles of
// 3 rows x 3 tokens (9 accumulators: as many as V8 keeps in xmm registers without spilling).

// @ts-ignore: decorator
@inline const TOKEN_BLOCK: i32 = 63; // a multiple of 3: full 3 x 3 tiles inside a block

export function heapBase(): usize {
  return __heap_base;
}

/** Does this build use relaxed SIMD? */
export function relaxed(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

// @ts-ignore: decorator
@inline function fma(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** (lane0 + lane2) + (lane1 + lane3) */
// @ts-ignore: decorator
@inline function hsum(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

// ---------------------------------------------------------------------------------------------------
// Register tiles. w: first weight row (stride ws bytes), x: first token (stride xs bytes), n: Kx * 4
// bytes, y: output of (first token, first row), ys: output row stride in bytes.

function tile3x3(w: usize, ws: usize, x: usize, xs: usize, n: usize, y: usize, ys: usize): void {
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a02 = f32x4.splat(0);
  let a10 = f32x4.splat(0), a11 = f32x4.splat(0), a12 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a22 = f32x4.splat(0);
  const w1 = w + ws, w2 = w + 2 * ws;
  const x1 = x + xs, x2 = x + 2 * xs;
  for (let k: usize = 0; k < n; k += 16) {
    const v0 = v128.load(w + k), v1 = v128.load(w1 + k), v2 = v128.load(w2 + k);
    let u = v128.load(x + k);
    a00 = fma(v0, u, a00); a10 = fma(v1, u, a10); a20 = fma(v2, u, a20);
    u = v128.load(x1 + k);
    a01 = fma(v0, u, a01); a11 = fma(v1, u, a11); a21 = fma(v2, u, a21);
    u = v128.load(x2 + k);
    a02 = fma(v0, u, a02); a12 = fma(v1, u, a12); a22 = fma(v2, u, a22);
  }
  store<f32>(y, hsum(a00)); store<f32>(y, hsum(a10), 4); store<f32>(y, hsum(a20), 8);
  y += ys;
  store<f32>(y, hsum(a01)); store<f32>(y, hsum(a11), 4); store<f32>(y, hsum(a21), 8);
  y += ys;
  store<f32>(y, hsum(a02)); store<f32>(y, hsum(a12), 4); store<f32>(y, hsum(a22), 8);
}

function tile3x2(w: usize, ws: usize, x: usize, xs: usize, n: usize, y: usize, ys: usize): void {
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0);
  let a10 = f32x4.splat(0), a11 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0);
  const w1 = w + ws, w2 = w + 2 * ws;
  const x1 = x + xs;
  for (let k: usize = 0; k < n; k += 16) {
    const v0 = v128.load(w + k), v1 = v128.load(w1 + k), v2 = v128.load(w2 + k);
    let u = v128.load(x + k);
    a00 = fma(v0, u, a00); a10 = fma(v1, u, a10); a20 = fma(v2, u, a20);
    u = v128.load(x1 + k);
    a01 = fma(v0, u, a01); a11 = fma(v1, u, a11); a21 = fma(v2, u, a21);
  }
  store<f32>(y, hsum(a00)); store<f32>(y, hsum(a10), 4); store<f32>(y, hsum(a20), 8);
  y += ys;
  store<f32>(y, hsum(a01)); store<f32>(y, hsum(a11), 4); store<f32>(y, hsum(a21), 8);
}

function tile3x1(w: usize, ws: usize, x: usize, n: usize, y: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0);
  const w1 = w + ws, w2 = w + 2 * ws;
  for (let k: usize = 0; k < n; k += 16) {
    const u = v128.load(x + k);
    a0 = fma(v128.load(w + k), u, a0);
    a1 = fma(v128.load(w1 + k), u, a1);
    a2 = fma(v128.load(w2 + k), u, a2);
  }
  store<f32>(y, hsum(a0)); store<f32>(y, hsum(a1), 4); store<f32>(y, hsum(a2), 8);
}

/**
 * 4 rows x 1 token on F32 rows interleaved by 4 floats (interleave4 with 16-byte blocks: floats 4b..4b+3
 * of row i at w + (4 b + i) * 16): one sequential stream; each row's lanes sum in tile1x1's order.
 */
function tile4x1i(w: usize, x: usize, n: usize, y: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  for (let k: usize = 0; k < n; k += 16, w += 64) {
    const u = v128.load(x + k);
    a0 = fma(v128.load(w), u, a0);
    a1 = fma(v128.load(w, 16), u, a1);
    a2 = fma(v128.load(w, 32), u, a2);
    a3 = fma(v128.load(w, 48), u, a3);
  }
  store<f32>(y, hsum(a0)); store<f32>(y, hsum(a1), 4); store<f32>(y, hsum(a2), 8); store<f32>(y, hsum(a3), 12);
}

/**
 * 4 rows x 1 token on F32 rows ws bytes apart (a chunk's 4 strands: 4 sequential streams), outputs ys
 * bytes apart; each row's lanes sum in tile1x1's order.
 */
function tile4x1s(w: usize, ws: usize, x: usize, n: usize, y: usize, ys: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  const w1 = w + ws, w2 = w + 2 * ws, w3 = w + 3 * ws;
  for (let k: usize = 0; k < n; k += 16) {
    const u = v128.load(x + k);
    a0 = fma(v128.load(w + k), u, a0);
    a1 = fma(v128.load(w1 + k), u, a1);
    a2 = fma(v128.load(w2 + k), u, a2);
    a3 = fma(v128.load(w3 + k), u, a3);
  }
  store<f32>(y, hsum(a0)); store<f32>(y + ys, hsum(a1)); store<f32>(y + 2 * ys, hsum(a2)); store<f32>(y + 3 * ys, hsum(a3));
}

function tile1x3(w: usize, x: usize, xs: usize, n: usize, y: usize, ys: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0);
  const x1 = x + xs, x2 = x + 2 * xs;
  for (let k: usize = 0; k < n; k += 16) {
    const v = v128.load(w + k);
    a0 = fma(v, v128.load(x + k), a0);
    a1 = fma(v, v128.load(x1 + k), a1);
    a2 = fma(v, v128.load(x2 + k), a2);
  }
  store<f32>(y, hsum(a0)); store<f32>(y + ys, hsum(a1)); store<f32>(y + 2 * ys, hsum(a2));
}

function tile1x1(w: usize, x: usize, n: usize, y: usize): void {
  let a = f32x4.splat(0);
  for (let k: usize = 0; k < n; k += 16) a = fma(v128.load(w + k), v128.load(x + k), a);
  store<f32>(y, hsum(a));
}

/**
 * Rows (or tokens) in triples: row r of a triple's three at 16-byte steps interleaved, 48 bytes per step
 * (4 values of each). tile3x3p reads its 3 rows and 3 tokens as two such streams with immediate offsets:
 * fewer address computations per multiply-add than tile3x3's six streams (each output the same dot
 * product, in the same order, as tile3x3's).
 */
export function packTriples(src: usize, ss: usize, rows: i32, n: usize, dst: usize): void {
  for (let r = 0; r + 3 <= rows; r += 3) {
    const s0 = src + <usize>r * ss, s1 = s0 + ss, s2 = s1 + ss;
    for (let k: usize = 0; k < n; k += 16, dst += 48) {
      v128.store(dst, v128.load(s0 + k));
      v128.store(dst, v128.load(s1 + k), 16);
      v128.store(dst, v128.load(s2 + k), 32);
    }
  }
}

// job kind 14: packTriples of triples [chunk * c, (chunk + 1) * c) of the rows, the threads' share:
//   1 src | 2 src row stride (bytes) | 3 rows | 4 n (bytes per row) | 5 dst | 6 triples per chunk c
function packTriplesChunk(job: usize, chunk: i32): void {
  const ss = <usize>param(job, 2), n = <usize>param(job, 4), c = param(job, 6);
  const t0 = chunk * c, t1 = min(param(job, 3) / 3, t0 + c);
  if (t0 < t1) packTriples(<usize>param(job, 1) + <usize>(3 * t0) * ss, ss, 3 * (t1 - t0), n, <usize>param(job, 5) + <usize>(3 * t0) * n);
}

/** tile3x3 on packed triples: w (3 rows), x (3 tokens), n bytes per row; y[t][r] at y (row stride ys) */
function tile3x3p(w: usize, x: usize, n: usize, y: usize, ys: usize): void {
  let a00 = f32x4.splat(0), a01 = f32x4.splat(0), a02 = f32x4.splat(0);
  let a10 = f32x4.splat(0), a11 = f32x4.splat(0), a12 = f32x4.splat(0);
  let a20 = f32x4.splat(0), a21 = f32x4.splat(0), a22 = f32x4.splat(0);
  const end = w + 3 * n;
  for (; w < end; w += 48, x += 48) {
    const v0 = v128.load(w), v1 = v128.load(w, 16), v2 = v128.load(w, 32);
    let u = v128.load(x);
    a00 = fma(v0, u, a00); a10 = fma(v1, u, a10); a20 = fma(v2, u, a20);
    u = v128.load(x, 16);
    a01 = fma(v0, u, a01); a11 = fma(v1, u, a11); a21 = fma(v2, u, a21);
    u = v128.load(x, 32);
    a02 = fma(v0, u, a02); a12 = fma(v1, u, a12); a22 = fma(v2, u, a22);
  }
  store<f32>(y, hsum(a00)); store<f32>(y, hsum(a10), 4); store<f32>(y, hsum(a20), 8);
  y += ys;
  store<f32>(y, hsum(a01)); store<f32>(y, hsum(a11), 4); store<f32>(y, hsum(a21), 8);
  y += ys;
  store<f32>(y, hsum(a02)); store<f32>(y, hsum(a12), 4); store<f32>(y, hsum(a22), 8);
}

/** rows x tokens outputs: W rows at w (stride ws), tokens at x (stride xs), y[t][r] at y (row stride ys) */
function multiply(w: usize, ws: usize, rows: i32, x: usize, xs: usize, tokens: i32, n: usize, y: usize, ys: usize): void {
  let r = 0;
  for (; r + 3 <= rows; r += 3) {
    const wr = w + <usize>r * ws;
    const yr = y + <usize>r * 4;
    let t = 0;
    for (; t + 3 <= tokens; t += 3) tile3x3(wr, ws, x + <usize>t * xs, xs, n, yr + <usize>t * ys, ys);
    if (t + 2 == tokens) tile3x2(wr, ws, x + <usize>t * xs, xs, n, yr + <usize>t * ys, ys);
    else if (t < tokens) tile3x1(wr, ws, x + <usize>t * xs, n, yr + <usize>t * ys);
  }
  for (; r < rows; r++) {
    const wr = w + <usize>r * ws;
    const yr = y + <usize>r * 4;
    let t = 0;
    for (; t + 3 <= tokens; t += 3) tile1x3(wr, x + <usize>t * xs, xs, n, yr + <usize>t * ys, ys);
    for (; t < tokens; t++) tile1x1(wr, x + <usize>t * xs, n, yr + <usize>t * ys);
  }
}

// ---------------------------------------------------------------------------------------------------
// Dequantizers: one row of k elements (a multiple of the block size) from src to f32 at dst, with the
// same float32 operations, in the same order, as src/quant/ggml (so bit for bit the same values;
// mul and add are never fused here). Scalar f16 scales; the elements 16 at a time.

/** fp16 bits -> f32: the magnitude bits shifted into place, rescaled by 2^112 (exact, also for
 *  subnormals); exponent 31 becomes 255 (inf, NaN with its payload). */
// @ts-ignore: decorator
@inline function f16(h: u32): f32 {
  const o = (h & 0x7fff) << 13;
  let v = reinterpret<f32>(o) * reinterpret<f32>(0x77800000); // 2^112
  if ((h & 0x7c00) == 0x7c00) v = reinterpret<f32>(o | 0x7f800000);
  return reinterpret<f32>(reinterpret<u32>(v) | ((h & 0x8000) << 16));
}

// @ts-ignore: decorator
@inline function f16At(p: usize): f32 {
  return f16(<u32>load<u16>(p));
}

/** 4 fp16 values (u32 lanes) -> f32 lanes, as f16() */
// @ts-ignore: decorator
@inline function f16x4(h: v128): v128 {
  const o = i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13);
  const v = f32x4.mul(o, f32x4.splat(reinterpret<f32>(0x77800000)));
  const special = i32x4.eq(v128.and(h, i32x4.splat(0x7c00)), i32x4.splat(0x7c00));
  const r = v128.bitselect(v128.or(o, i32x4.splat(0x7f800000)), v, special);
  return v128.or(r, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

/** 16 signed bytes q -> dst[0..16) = f32(q) * d */
// @ts-ignore: decorator
@inline function put16(dst: usize, q: v128, d: v128): void {
  const lo = i16x8.extend_low_i8x16_s(q);
  const hi = i16x8.extend_high_i8x16_s(q);
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), d));
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), d), 16);
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), d), 32);
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), d), 48);
}

/** 16 signed bytes q -> dst[0..16) = f32(q) * d - m  (two roundings) */
// @ts-ignore: decorator
@inline function put16sub(dst: usize, q: v128, d: v128, m: v128): void {
  const lo = i16x8.extend_low_i8x16_s(q);
  const hi = i16x8.extend_high_i8x16_s(q);
  v128.store(dst, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), d), m));
  v128.store(dst, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), d), m), 16);
  v128.store(dst, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), d), m), 32);
  v128.store(dst, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), d), m), 48);
}

/** 16 signed bytes q -> dst[0..16) = f32(q) * d + m  (two roundings) */
// @ts-ignore: decorator
@inline function put16add(dst: usize, q: v128, d: v128, m: v128): void {
  const lo = i16x8.extend_low_i8x16_s(q);
  const hi = i16x8.extend_high_i8x16_s(q);
  v128.store(dst, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), d), m));
  v128.store(dst, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), d), m), 16);
  v128.store(dst, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), d), m), 32);
  v128.store(dst, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), d), m), 48);
}

// @ts-ignore: decorator
@inline function lowNibbles(b: v128): v128 {
  return v128.and(b, i8x16.splat(0x0f));
}

// @ts-ignore: decorator
@inline function highNibbles(b: v128): v128 {
  return v128.and(i16x8.shr_u(b, 4), i8x16.splat(0x0f)); // (i8x16.shr_u: V8 rebuilds its mask every time)
}

/** byte i of the result = 0x10 where bit i (of 16) of `bits` is set, else 0 */
// @ts-ignore: decorator
@inline function bit16(bits: u32): v128 {
  const spread = i8x16.swizzle(i32x4.splat(bits), i8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  const clear = i8x16.eq(v128.and(spread, i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128)), i8x16.splat(0));
  return v128.andnot(i8x16.splat(0x10), clear);
}

// F32 with K % 4 != 0 (or not used in place): copy, zeros after k
function rowF32(src: usize, dst: usize, k: i32): void {
  memory.copy(dst, src, <usize>k * 4);
}

function rowF16(src: usize, dst: usize, k: i32): void {
  let i = 0;
  for (; i + 8 <= k; i += 8) {
    const h = v128.load(src + <usize>i * 2);
    v128.store(dst + <usize>i * 4, f16x4(i32x4.extend_low_i16x8_u(h)));
    v128.store(dst + <usize>i * 4, f16x4(i32x4.extend_high_i16x8_u(h)), 16);
  }
  for (; i < k; i++) store<f32>(dst + <usize>i * 4, f16At(src + <usize>i * 2));
}

function rowBF16(src: usize, dst: usize, k: i32): void {
  let i = 0;
  for (; i + 8 <= k; i += 8) {
    const h = v128.load(src + <usize>i * 2);
    v128.store(dst + <usize>i * 4, i32x4.shl(i32x4.extend_low_i16x8_u(h), 16));
    v128.store(dst + <usize>i * 4, i32x4.shl(i32x4.extend_high_i16x8_u(h), 16), 16);
  }
  for (; i < k; i++) store<u32>(dst + <usize>i * 4, (<u32>load<u16>(src + <usize>i * 2)) << 16);
}

// Q4_0 (18 B): d:f16 | qs[16]; x[j] = (qs[j] & 15) - 8, x[j + 16] = (qs[j] >> 4) - 8, times d
function rowQ4_0(src: usize, dst: usize, k: i32): void {
  const eight = i8x16.splat(8);
  for (let b = 0; b < k; b += 32, src += 18, dst += 128) {
    const d = f32x4.splat(f16At(src));
    const q = v128.load(src + 2);
    put16(dst, i8x16.sub(lowNibbles(q), eight), d);
    put16(dst + 64, i8x16.sub(highNibbles(q), eight), d);
  }
}

// Q4_1 (20 B): d:f16 | m:f16 | qs[16]; x = q * d + m
function rowQ4_1(src: usize, dst: usize, k: i32): void {
  for (let b = 0; b < k; b += 32, src += 20, dst += 128) {
    const d = f32x4.splat(f16At(src));
    const m = f32x4.splat(f16At(src + 2));
    const q = v128.load(src + 4);
    put16add(dst, lowNibbles(q), d, m);
    put16add(dst + 64, highNibbles(q), d, m);
  }
}

// Q5_0 (22 B): d:f16 | qh:u32 (bit 4 of element j) | qs[16]; x = q - 16, times d
function rowQ5_0(src: usize, dst: usize, k: i32): void {
  const sixteen = i8x16.splat(16);
  for (let b = 0; b < k; b += 32, src += 22, dst += 128) {
    const d = f32x4.splat(f16At(src));
    const qh = load<u32>(src + 2);
    const q = v128.load(src + 6);
    put16(dst, i8x16.sub(v128.or(lowNibbles(q), bit16(qh)), sixteen), d);
    put16(dst + 64, i8x16.sub(v128.or(highNibbles(q), bit16(qh >> 16)), sixteen), d);
  }
}

// Q5_1 (24 B): d:f16 | m:f16 | qh:u32 | qs[16]; x = q * d + m
function rowQ5_1(src: usize, dst: usize, k: i32): void {
  for (let b = 0; b < k; b += 32, src += 24, dst += 128) {
    const d = f32x4.splat(f16At(src));
    const m = f32x4.splat(f16At(src + 2));
    const qh = load<u32>(src + 4);
    const q = v128.load(src + 8);
    put16add(dst, v128.or(lowNibbles(q), bit16(qh)), d, m);
    put16add(dst + 64, v128.or(highNibbles(q), bit16(qh >> 16)), d, m);
  }
}

// Q8_0 (34 B): d:f16 | qs:i8[32]
function rowQ8_0(src: usize, dst: usize, k: i32): void {
  for (let b = 0; b < k; b += 32, src += 34, dst += 128) {
    const d = f32x4.splat(f16At(src));
    put16(dst, v128.load(src + 2), d);
    put16(dst + 64, v128.load(src + 18), d);
  }
}

// Q8_1 (36 B): d:f16 | s:f16 | qs:i8[32]
function rowQ8_1(src: usize, dst: usize, k: i32): void {
  for (let b = 0; b < k; b += 32, src += 36, dst += 128) {
    const d = f32x4.splat(f16At(src));
    put16(dst, v128.load(src + 4), d);
    put16(dst + 64, v128.load(src + 20), d);
  }
}

// Q2_K (84 B): scales[16] (low nibble scale, high nibble min) | qs[64] (2 bit) | d:f16 | dmin:f16
// 16 sub-blocks of 16: x = (d * sc) * q - (dmin * m)
function rowQ2_K(src: usize, dst: usize, k: i32): void {
  const three = i8x16.splat(3);
  for (let b = 0; b < k; b += 256, src += 84) {
    const d = f16At(src + 80);
    const min = f16At(src + 82);
    let is: usize = 0;
    for (let q = src + 16; q < src + 80; q += 32) {
      for (let shift: u32 = 0; shift < 8; shift += 2) {
        for (let half: usize = 0; half < 32; half += 16, is++, dst += 64) {
          const sc = <u32>load<u8>(src + is);
          const dl = f32x4.splat(d * <f32>(sc & 0xf));
          const ml = f32x4.splat(min * <f32>(sc >> 4));
          put16sub(dst, v128.and(i8x16.shr_u(v128.load(q + half), shift), three), dl, ml);
        }
      }
    }
  }
}

/** 6-bit scale j (0..15) of a Q3_K block (12 bytes at s), minus 32 */
// @ts-ignore: decorator
@inline function q3Scale(s: usize, j: u32): i32 {
  const lo = j < 8 ? <u32>load<u8>(s + j) & 0xf : <u32>load<u8>(s + j - 8) >> 4;
  return <i32>(lo | (((<u32>load<u8>(s + 8 + (j & 3)) >> (2 * (j >> 2))) & 3) << 4)) - 32;
}

// Q3_K (110 B): hmask[32] (bit 2) | qs[64] (bits 0-1) | scales[12] (16 x 6 bit) | d:f16
// x = (d * (sc - 32)) * (q - (hmask bit ? 0 : 4))
function rowQ3_K(src: usize, dst: usize, k: i32): void {
  const three = i8x16.splat(3);
  const four = i8x16.splat(4);
  for (let b = 0; b < k; b += 256, src += 110) {
    const dAll = f16At(src + 108);
    let is: u32 = 0;
    let m: i32 = 1;
    for (let q = src + 32; q < src + 96; q += 32) {
      for (let shift: u32 = 0; shift < 8; shift += 2, m <<= 1) {
        const mask = i8x16.splat(<i8>m);
        for (let half: usize = 0; half < 32; half += 16, is++, dst += 64) {
          const dl = f32x4.splat(dAll * <f32>q3Scale(src + 96, is));
          const lo = v128.and(i8x16.shr_u(v128.load(q + half), shift), three);
          const noHigh = i8x16.eq(v128.and(v128.load(src + half), mask), i8x16.splat(0));
          put16(dst, i8x16.sub(lo, v128.and(noHigh, four)), dl);
        }
      }
    }
  }
}

/** get_scale_min_k4: 6-bit scale (mins: minK4) of sub-block j from the 12 bytes at s */
// @ts-ignore: decorator
@inline function scaleK4(s: usize, j: usize): u32 {
  return j < 4 ? <u32>load<u8>(s + j) & 63 : (<u32>load<u8>(s + j + 4) & 0xf) | ((<u32>load<u8>(s + j - 4) >> 6) << 4);
}
// @ts-ignore: decorator
@inline function minK4(s: usize, j: usize): u32 {
  return j < 4 ? <u32>load<u8>(s + j + 4) & 63 : (<u32>load<u8>(s + j + 4) >> 4) | ((<u32>load<u8>(s + j) >> 6) << 4);
}

// Q4_K (144 B): d:f16 | dmin:f16 | scales[12] | qs[128]; 8 sub-blocks of 32: x = (d * sc) * q - (dmin * m)
function rowQ4_K(src: usize, dst: usize, k: i32): void {
  for (let b = 0; b < k; b += 256, src += 144) {
    const d = f16At(src);
    const min = f16At(src + 2);
    for (let is: usize = 0, q = src + 16; is < 8; is += 2, q += 32, dst += 256) {
      const d1 = f32x4.splat(d * <f32>scaleK4(src + 4, is));
      const m1 = f32x4.splat(min * <f32>minK4(src + 4, is));
      const d2 = f32x4.splat(d * <f32>scaleK4(src + 4, is + 1));
      const m2 = f32x4.splat(min * <f32>minK4(src + 4, is + 1));
      const q0 = v128.load(q);
      const q1 = v128.load(q + 16);
      put16sub(dst, lowNibbles(q0), d1, m1);
      put16sub(dst + 64, lowNibbles(q1), d1, m1);
      put16sub(dst + 128, highNibbles(q0), d2, m2);
      put16sub(dst + 192, highNibbles(q1), d2, m2);
    }
  }
}

// Q5_K (176 B): d:f16 | dmin:f16 | scales[12] | qh[32] (bit 4) | qs[128] (bits 0-3)
function rowQ5_K(src: usize, dst: usize, k: i32): void {
  const zero = i8x16.splat(0);
  const sixteen = i8x16.splat(16);
  for (let b = 0; b < k; b += 256, src += 176) {
    const d = f16At(src);
    const min = f16At(src + 2);
    const h0 = v128.load(src + 16);
    const h1 = v128.load(src + 32);
    let u1: i32 = 1;
    for (let is: usize = 0, q = src + 48; is < 8; is += 2, q += 32, dst += 256, u1 <<= 2) {
      const d1 = f32x4.splat(d * <f32>scaleK4(src + 4, is));
      const m1 = f32x4.splat(min * <f32>minK4(src + 4, is));
      const d2 = f32x4.splat(d * <f32>scaleK4(src + 4, is + 1));
      const m2 = f32x4.splat(min * <f32>minK4(src + 4, is + 1));
      const b1 = i8x16.splat(<i8>u1);
      const b2 = i8x16.splat(<i8>(u1 << 1));
      const q0 = v128.load(q);
      const q1 = v128.load(q + 16);
      put16sub(dst, v128.or(lowNibbles(q0), v128.andnot(sixteen, i8x16.eq(v128.and(h0, b1), zero))), d1, m1);
      put16sub(dst + 64, v128.or(lowNibbles(q1), v128.andnot(sixteen, i8x16.eq(v128.and(h1, b1), zero))), d1, m1);
      put16sub(dst + 128, v128.or(highNibbles(q0), v128.andnot(sixteen, i8x16.eq(v128.and(h0, b2), zero))), d2, m2);
      put16sub(dst + 192, v128.or(highNibbles(q1), v128.andnot(sixteen, i8x16.eq(v128.and(h1, b2), zero))), d2, m2);
    }
  }
}

// Q6_K (210 B): ql[128] (bits 0-3) | qh[64] (bits 4-5) | scales:i8[16] | d:f16; x = (d * sc) * (q - 32)
// per 128 outputs: ql 64 bytes, qh 32 bytes, 8 scales; element l (0..31) of each quarter:
//   q1 = ql[l] & 15 | (qh[l] & 3) << 4         -> out[l],      scale 0 + l / 16
//   q2 = ql[l + 32] & 15 | (qh[l] >> 2 & 3) << 4 -> out[l + 32], scale 2 + l / 16
//   q3 = ql[l] >> 4 | (qh[l] >> 4 & 3) << 4     -> out[l + 64], scale 4 + l / 16
//   q4 = ql[l + 32] >> 4 | (qh[l] >> 6) << 4    -> out[l + 96], scale 6 + l / 16
function rowQ6_K(src: usize, dst: usize, k: i32): void {
  const three = i8x16.splat(3);
  const off = i8x16.splat(32);
  for (let b = 0; b < k; b += 256, src += 210) {
    const d = f16At(src + 208);
    for (let h: usize = 0; h < 2; h++) {
      const ql = src + h * 64;
      const qh = src + 128 + h * 32;
      const sc = src + 192 + h * 8;
      const o = dst + h * 512;
      for (let l: usize = 0; l < 32; l += 16) {
        const is = l >> 4;
        const a = v128.load(ql + l);
        const c = v128.load(ql + l + 32);
        const hb = v128.load(qh + l);
        const q1 = v128.or(lowNibbles(a), i8x16.shl(v128.and(hb, three), 4));
        const q2 = v128.or(lowNibbles(c), i8x16.shl(v128.and(i8x16.shr_u(hb, 2), three), 4));
        const q3 = v128.or(highNibbles(a), i8x16.shl(v128.and(i8x16.shr_u(hb, 4), three), 4));
        const q4 = v128.or(highNibbles(c), i8x16.shl(i8x16.shr_u(hb, 6), 4));
        put16(o + l * 4, i8x16.sub(q1, off), f32x4.splat(d * <f32>load<i8>(sc + is)));
        put16(o + (l + 32) * 4, i8x16.sub(q2, off), f32x4.splat(d * <f32>load<i8>(sc + is + 2)));
        put16(o + (l + 64) * 4, i8x16.sub(q3, off), f32x4.splat(d * <f32>load<i8>(sc + is + 4)));
        put16(o + (l + 96) * 4, i8x16.sub(q4, off), f32x4.splat(d * <f32>load<i8>(sc + is + 6)));
      }
    }
    dst += 1024;
  }
}

// Q8_K (292 B): d:f32 | qs:i8[256] | bsums:i16[16]
function rowQ8_K(src: usize, dst: usize, k: i32): void {
  for (let b = 0; b < k; b += 256, src += 292, dst += 1024) {
    const d = f32x4.splat(load<f32>(src));
    for (let j: usize = 0; j < 256; j += 16) put16(dst + j * 4, v128.load(src + 4 + j), d);
  }
}

// IQ4_NL (18 B): d:f16 | qs[16]; x = d * kvalues[q], the non-linear 16-level grid of ggml
// IQ4_XS (136 B): d:f16 | scales_h:u16 | scales_l[4] | qs[128]; 8 sub-blocks of 32, 6-bit scales - 32
// @ts-ignore: decorator
@inline function iq4Grid(): v128 {
  return i8x16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
}

function rowIQ4_NL(src: usize, dst: usize, k: i32): void {
  const grid = iq4Grid();
  for (let b = 0; b < k; b += 32, src += 18, dst += 128) {
    const d = f32x4.splat(f16At(src));
    const q = v128.load(src + 2);
    put16(dst, i8x16.swizzle(grid, lowNibbles(q)), d);
    put16(dst + 64, i8x16.swizzle(grid, highNibbles(q)), d);
  }
}

function rowIQ4_XS(src: usize, dst: usize, k: i32): void {
  const grid = iq4Grid();
  for (let b = 0; b < k; b += 256, src += 136) {
    const d = f16At(src);
    const sh = <u32>load<u16>(src + 2);
    for (let ib: u32 = 0; ib < 8; ib++, dst += 128) {
      const ls = (((<u32>load<u8>(src + 4 + (ib >> 1)) >> (4 * (ib & 1))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4));
      const dl = f32x4.splat(d * <f32>(<i32>ls - 32));
      const q = v128.load(src + 8 + 16 * ib);
      put16(dst, i8x16.swizzle(grid, lowNibbles(q)), dl);
      put16(dst + 64, i8x16.swizzle(grid, highNibbles(q)), dl);
    }
  }
}

/** Does this module dequantize GGML type `type`? */
export function hasType(type: i32): i32 {
  switch (type) {
    case 0: case 1: case 2: case 3: case 6: case 7: case 8: case 9: case 10: case 11: case 12: case 13: case 14: case 15:
    case 20: case 23: case 30:
      return 1;
  }
  return 0;
}

/** Dequantize `rows` rows of k elements (stored rowBytes apart) to f32 rows kx floats apart (zeros after k). */
export function dequantize(type: i32, src: usize, rowBytes: usize, rows: i32, k: i32, dst: usize, kx: i32): void {
  for (let r = 0; r < rows; r++, src += rowBytes, dst += <usize>kx * 4) {
    switch (type) {
      case 0: rowF32(src, dst, k); break;
      case 1: rowF16(src, dst, k); break;
      case 2: rowQ4_0(src, dst, k); break;
      case 3: rowQ4_1(src, dst, k); break;
      case 6: rowQ5_0(src, dst, k); break;
      case 7: rowQ5_1(src, dst, k); break;
      case 8: rowQ8_0(src, dst, k); break;
      case 9: rowQ8_1(src, dst, k); break;
      case 10: rowQ2_K(src, dst, k); break;
      case 11: rowQ3_K(src, dst, k); break;
      case 12: rowQ4_K(src, dst, k); break;
      case 13: rowQ5_K(src, dst, k); break;
      case 14: rowQ6_K(src, dst, k); break;
      case 15: rowQ8_K(src, dst, k); break;
      case 20: rowIQ4_NL(src, dst, k); break;
      case 23: rowIQ4_XS(src, dst, k); break;
      case 30: rowBF16(src, dst, k); break;
      default: unreachable();
    }
    if (kx > k) memory.fill(dst + <usize>k * 4, 0, <usize>(kx - k) * 4);
  }
}

// ---------------------------------------------------------------------------------------------------
// Jobs. A job is a block of i32 parameters in memory; threads call runChunk(job, chunk, thread) for
// the chunks they claim (src/kernels/threads.ts). Matmul job (i32 words):
//   0 kind = 1 | 1 type | 2 w | 3 rowBytes | 4 x | 5 xStride (bytes) | 6 T | 7 K | 8 Kx | 9 y
//   10 N (y row stride, floats) | 11 rows | 12 chunkRows | 13 scratch | 14 scratch bytes per thread
//   16 (F32, one token) 1: W is the copy interleaved by 4 rows (interleave4, 16-byte blocks; chunkRows
//      a multiple of 4), 0: row by row, 2: rows in place, the chunk in 4 strands (tile4x1s)
// Rows [c * chunkRows, min(rows, (c + 1) * chunkRows)) of W (row r at w + r * rowBytes) go to columns
// r of y (y[t][r] at y + (t * N + r) * 4).

// @ts-ignore: decorator
@inline function param(job: usize, i: usize): i32 {
  return load<i32>(job + i * 4);
}

function matmulChunk(job: usize, chunk: i32, thread: i32): void {
  const type = param(job, 1);
  const rowBytes = <usize>param(job, 3);
  const T = param(job, 6);
  const K = param(job, 7);
  const Kx = param(job, 8);
  const N = <usize>param(job, 10);
  const rows = param(job, 11);
  const chunkRows = param(job, 12);
  const r0 = chunk * chunkRows;
  const nr = min(chunkRows, rows - r0);
  if (nr <= 0) return;
  let w = <usize>param(job, 2) + <usize>r0 * rowBytes;
  let ws = rowBytes;
  if (type == 0 && T == 1 && param(job, 16) == 1) {
    // one token on the interleaved copy: full groups of 4 rows as one stream, the last < 4 rows row by row
    const x = <usize>param(job, 4);
    const y = <usize>param(job, 9) + <usize>r0 * 4;
    const full = (rows & ~3) - r0;
    const n = <usize>K * 4;
    let r = 0;
    for (; r + 4 <= nr && r + 4 <= full; r += 4) tile4x1i(w + <usize>r * rowBytes, x, n, y + <usize>r * 4);
    for (; r < nr; r++) tile1x1(w + <usize>r * rowBytes, x, n, y + <usize>r * 4);
    return;
  }
  if (type == 0 && T == 1 && (K & 3) == 0 && param(job, 16) == 2) {
    // one token on F32 rows in place, the chunk cut into 4 strands of nr / 4 rows read side by side: 4 long
    // sequential streams (tile3x1's 3 adjacent rows restart their streams every row); the last nr % 4 rows
    // one by one
    const x = <usize>param(job, 4);
    const y = <usize>param(job, 9) + <usize>r0 * 4;
    const n = <usize>K * 4;
    const sr = nr >> 2;
    const ss = <usize>sr * rowBytes;
    let r = 0;
    for (; r < sr; r++) tile4x1s(w + <usize>r * rowBytes, ss, x, n, y + <usize>r * 4, <usize>sr * 4);
    for (r = 4 * sr; r < nr; r++) tile1x1(w + <usize>r * rowBytes, x, n, y + <usize>r * 4);
    return;
  }
  const xp = <usize>param(job, 15);
  if (type == 0 && (K & 3) == 0 && xp != 0) {
    // F32 rows in place, tokens packed (packTriples, word 15): the chunk's full row triples are packed into
    // the thread's scratch and multiplied in packed 3 x 3 tiles; the remaining rows and tokens as before
    const scratch = <usize>param(job, 13) + <usize>thread * <usize>param(job, 14);
    const n = <usize>K * 4;
    const r3 = nr - nr % 3;
    packTriples(w, ws, r3, n, scratch);
    const x = <usize>param(job, 4);
    const xs = <usize>param(job, 5);
    const y = <usize>param(job, 9) + <usize>r0 * 4;
    const T3 = T - T % 3;
    for (let t = 0; t < T; t += TOKEN_BLOCK) {
      const tb = min(TOKEN_BLOCK, T - t);
      const y0 = y + <usize>t * N * 4;
      for (let r = 0; r < r3; r += 3) {
        const wp = scratch + <usize>r * n;
        const yr = y0 + <usize>r * 4;
        let u = 0;
        for (; u + 3 <= tb && t + u + 3 <= T3; u += 3) tile3x3p(wp, xp + <usize>(t + u) * n, n, yr + <usize>u * N * 4, N * 4);
        // the last tokens (fewer than 3): unpacked
        if (u < tb) multiply(w + <usize>r * ws, ws, 3, x + <usize>(t + u) * xs, xs, tb - u, n, yr + <usize>u * N * 4, N * 4);
      }
      if (r3 < nr) multiply(w + <usize>r3 * ws, ws, nr - r3, x + <usize>t * xs, xs, tb, n, y0 + <usize>r3 * 4, N * 4);
    }
    return;
  }
  if (type != 0 || (K & 3) != 0) {
    const scratch = <usize>param(job, 13) + <usize>thread * <usize>param(job, 14);
    dequantize(type, w, rowBytes, nr, K, scratch, Kx);
    w = scratch;
    ws = <usize>Kx * 4;
  }
  const x = <usize>param(job, 4);
  const xs = <usize>param(job, 5);
  const y = <usize>param(job, 9) + <usize>r0 * 4;
  const n = <usize>Kx * 4;
  for (let t = 0; t < T; t += TOKEN_BLOCK) {
    multiply(w, ws, nr, x + <usize>t * xs, xs, min(TOKEN_BLOCK, T - t), n, y + <usize>t * N * 4, N * 4);
  }
}

// ---------------------------------------------------------------------------------------------------
// Integer dot products (llama.cpp's vec_dot path). The activations are rounded as llama.cpp's CPU backend
// rounds them (Q8_0 per 32 or Q8_K per 256, bit for bit the TypeScript codecs) into int16 lanes, the
// weight rows of a chunk are unpacked into int16 (sub-block scales folded in where they are integers),
// and each block's products are summed exactly in int32 lanes (i32x4.dot_i16x8_s): lane j of a block
// sums the elements e with (e mod 8) >> 1 == j. Per block, in f32, in this order:
//   acc[j] = acc[j] + f32(I[j]) * (dw * dx)                    (mul, then add: never fused)
//   acc[j] = acc[j] - f32(M[j]) * (dmin * dx)                  (Q4_K, Q5_K: the sub-block minimums)
// where M[j] = m[2j] * s[2j] + m[2j+1] * s[2j+1] over the 8 minimums m of the super-block and the sums
// s of its 8 sub-blocks of activations; then y = (acc0 + acc2) + (acc1 + acc3). Both builds (relaxed
// and plain SIMD) give the same bits, and so does intMatmulRef in src/kernels/matmul.ts.
//
// Weight kinds (the unpacked int16 value w, the block's f32 scale):
//   block 32 (activations Q8_0): Q8_0 q; Q4_0 q - 8; Q5_0 q - 16; IQ4_NL grid[q]          scale d
//   block 256 (activations Q8_K): Q4_K sc*q, Q5_K sc*q (mins m, dmin); Q6_K sc*(q - 32);
//                                 IQ4_XS (ls - 32)*grid[q]; Q3_K (sc - 32)*(q - 4 or q)    scale d
// Chunk scratch: w int16 rows x K | block scales f32 rows x nb | (K-quants with mins) m int16 rows x
// nb x 8 | dmin f32 rows x nb.

/** block length of the integer path for a weight type, 0 when it has none */
export function intBlock(type: i32): i32 {
  switch (type) {
    case 2: case 6: case 8: case 20: return 32;
    case 11: case 12: case 13: case 14: case 23: return 256;
  }
  return 0;
}

/** does the type carry sub-block minimums (the M term)? */
// @ts-ignore: decorator
@inline function hasMins(type: i32): bool {
  return type == 12 || type == 13;
}

/** f32 -> fp16 -> f32 (round to nearest even, subnormals, overflow to inf), as GGML_FP32_TO_FP16 */
function roundF16(x: f32): f32 {
  const u = reinterpret<u32>(x);
  const sign = (u >> 16) & 0x8000;
  const exp = <i32>((u >> 23) & 0xff);
  let man = u & 0x7fffff;
  let h: u32;
  if (exp == 0xff) h = sign | (man ? 0x7e00 : 0x7c00);
  else {
    const e = exp - 127 + 15;
    if (e >= 0x1f) h = sign | 0x7c00;
    else if (e <= 0) {
      if (e < -10) h = sign;
      else {
        man |= 0x800000;
        const shift = <u32>(14 - e);
        const half = (<u32>1) << (shift - 1);
        const rest = man & ((<u32>1 << shift) - 1);
        let m = man >> shift;
        if (rest > half || (rest == half && (m & 1))) m++;
        h = sign | m;
      }
    } else {
      h = ((<u32>e) << 10) | (man >> 13);
      const rest = man & 0x1fff;
      if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
      h |= sign;
    }
  }
  return f16(h);
}

/**
 * roundF16 of 4 lanes x >= 0 (not NaN; +inf allowed), the same values: normal halves by rounding the f32 bits
 * to 10 mantissa bits (ties to even; a carry moves into the exponent), 65536 and up (rounded) to inf; under
 * 2^-14 (fp16 subnormals, multiples of 2^-24) by (x + 0.5) - 0.5, whose sum has an ulp of 2^-24 and is
 * rounded to nearest even by the addition itself, the subtraction exact.
 */
// @ts-ignore: decorator
@inline function roundF16x4(x: v128): v128 {
  let r = i32x4.add(x, i32x4.add(i32x4.splat(0xfff), v128.and(i32x4.shr_u(x, 13), i32x4.splat(1))));
  r = v128.and(r, i32x4.splat(~0x1fff));
  r = v128.bitselect(i32x4.splat(0x7f800000), r, i32x4.ge_s(r, i32x4.splat(0x47800000)));
  const half = f32x4.splat(0.5);
  return v128.bitselect(f32x4.sub(f32x4.add(x, half), half), r, i32x4.lt_s(x, i32x4.splat(0x38800000)));
}

/** Q8_0 rounding of one block of 32 (xb, f32) with 1 / d in every lane of id: int16 q at q (quantize_row_q8_0_ref) */
// @ts-ignore: decorator
@inline function q8Block(xb: usize, id: v128, q: usize): void {
  // roundf (ties away from zero): trunc, plus sign(v) where |v - trunc v| >= 0.5 (exact in f32)
  const half = f32x4.splat(0.5), one = f32x4.splat(1), sign = i32x4.splat(0x80000000);
  for (let j = 0; j < 32; j += 8) {
    const v0 = f32x4.mul(v128.load(xb + <usize>j * 4), id), v1 = f32x4.mul(v128.load(xb + <usize>j * 4, 16), id);
    const t0 = f32x4.trunc(v0), t1 = f32x4.trunc(v1);
    const r0 = f32x4.add(t0, v128.and(f32x4.ge(f32x4.abs(f32x4.sub(v0, t0)), half), v128.or(one, v128.and(v0, sign))));
    const r1 = f32x4.add(t1, v128.and(f32x4.ge(f32x4.abs(f32x4.sub(v1, t1)), half), v128.or(one, v128.and(v1, sign))));
    v128.store(q + <usize>j * 2, i16x8.narrow_i32x4_s(i32x4.trunc_sat_f32x4_s(r0), i32x4.trunc_sat_f32x4_s(r1)));
  }
}

/** the lanes' maximum of |v| over the 8 vectors of a block of 32 at xb (pmax: NaN skipped, as the scalar `a > amax`) */
// @ts-ignore: decorator
@inline function absMax8(xb: usize): v128 {
  let m4 = f32x4.splat(0);
  for (let j = 0; j < 32; j += 4) m4 = f32x4.pmax(m4, f32x4.abs(v128.load(xb + <usize>j * 4)));
  return m4;
}

/**
 * Round T rows of K activations (x, row stride xs bytes) as llama.cpp's vec_dot type: kind 32 = Q8_0
 * (quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d), d stored as fp16), kind 256 = Q8_K
 * (quantize_row_q8_K_ref: d = 1 / (-127 / max), q = nearest(x * -127 / max) <= 127). Writes int16 q
 * (Tp x K at q, Tp = T rounded up to 4, rows after T zero), the block scales (f32, block-major: block b
 * of token t at d + (b * Tp + t) * 4) and the sums of the quants of every 32 (int16, Tp x K / 32 at s).
 */
export function quantizeActs(kind: i32, x: usize, xs: usize, T: i32, K: i32, q: usize, d: usize, s: usize): void {
  quantizeActRows(kind, x, xs, T, K, q, d, s, 0, (T + 3) & ~3);
}

/**
 * quantizeActs for tokens [t0, t1) of the Tp (T rounded up to 4) it writes: the same operations per token,
 * so any split of the tokens gives the same bytes (rounding job, kind 10)
 */
function quantizeActRows(kind: i32, x: usize, xs: usize, T: i32, K: i32, q: usize, d: usize, s: usize, t0: i32, t1: i32): void {
  const Tp = (T + 3) & ~3;
  const nb = K / kind;
  q += <usize>t0 * <usize>K * 2;
  s += <usize>t0 * <usize>(K / 32) * 2;
  const ones = i16x8.splat(1);
  for (let t = t0; t < t1; t++) {
    const xr = x + <usize>t * xs;
    let b0 = 0;
    if (kind == 32 && t < T) {
      // Q8_0, 4 blocks at a time: their maximums, d = amax / 127, 1 / d and fp16(d) in the lanes of one
      // vector each (the scalar steps below, lane by lane: the same values)
      for (; b0 + 4 <= nb; b0 += 4) {
        const xb = xr + <usize>(b0 * 32) * 4;
        const m0 = absMax8(xb), m1 = absMax8(xb + 128), m2 = absMax8(xb + 256), m3 = absMax8(xb + 384);
        const P = f32x4.pmax(v128.shuffle<f32>(m0, m1, 0, 4, 1, 5), v128.shuffle<f32>(m0, m1, 2, 6, 3, 7));
        const Q = f32x4.pmax(v128.shuffle<f32>(m2, m3, 0, 4, 1, 5), v128.shuffle<f32>(m2, m3, 2, 6, 3, 7));
        const amax = f32x4.pmax(v128.shuffle<f32>(P, Q, 0, 1, 4, 5), v128.shuffle<f32>(P, Q, 2, 3, 6, 7));
        const dd = f32x4.div(amax, f32x4.splat(127));
        const id = v128.and(f32x4.div(f32x4.splat(1), dd), f32x4.ne(dd, f32x4.splat(0)));
        const h = roundF16x4(dd);
        const db = d + (<usize>b0 * <usize>Tp + <usize>t) * 4, ds = <usize>Tp * 4;
        store<f32>(db, f32x4.extract_lane(h, 0));
        store<f32>(db + ds, f32x4.extract_lane(h, 1));
        store<f32>(db + 2 * ds, f32x4.extract_lane(h, 2));
        store<f32>(db + 3 * ds, f32x4.extract_lane(h, 3));
        q8Block(xb, v128.shuffle<f32>(id, id, 0, 0, 0, 0), q);
        q8Block(xb + 128, v128.shuffle<f32>(id, id, 1, 1, 1, 1), q + 64);
        q8Block(xb + 256, v128.shuffle<f32>(id, id, 2, 2, 2, 2), q + 128);
        q8Block(xb + 384, v128.shuffle<f32>(id, id, 3, 3, 3, 3), q + 192);
        for (let j: usize = 0; j < 256; j += 64, s += 2) {
          const qj = q + j;
          const a = i32x4.add(i32x4.add(i32x4.dot_i16x8_s(v128.load(qj), ones), i32x4.dot_i16x8_s(v128.load(qj, 16), ones)), i32x4.add(i32x4.dot_i16x8_s(v128.load(qj, 32), ones), i32x4.dot_i16x8_s(v128.load(qj, 48), ones)));
          store<i16>(s, <i16>(i32x4.extract_lane(a, 0) + i32x4.extract_lane(a, 1) + i32x4.extract_lane(a, 2) + i32x4.extract_lane(a, 3)));
        }
        q += 256;
      }
    }
    for (let b = b0; b < nb; b++) {
      const db = d + (<usize>b * <usize>Tp + <usize>t) * 4;
      if (t >= T) {
        store<f32>(db, 0);
        memory.fill(q, 0, <usize>kind * 2);
      } else {
        // amax in f32 lanes (pmax skips NaN as the scalar `a > amax` does), the first |v| = amax for Q8_K
        const xb = xr + <usize>(b * kind) * 4;
        let m4 = f32x4.splat(0);
        for (let j = 0; j < kind; j += 4) m4 = f32x4.pmax(m4, f32x4.abs(v128.load(xb + <usize>j * 4)));
        let amax: f32 = f32x4.extract_lane(m4, 0);
        if (f32x4.extract_lane(m4, 1) > amax) amax = f32x4.extract_lane(m4, 1);
        if (f32x4.extract_lane(m4, 2) > amax) amax = f32x4.extract_lane(m4, 2);
        if (f32x4.extract_lane(m4, 3) > amax) amax = f32x4.extract_lane(m4, 3);
        if (kind == 32) {
          const dd: f32 = amax / 127;
          store<f32>(db, roundF16(dd));
          q8Block(xb, f32x4.splat(dd != 0 ? <f32>1 / dd : 0), q);
        } else if (amax == 0) {
          store<f32>(db, 0);
          memory.fill(q, 0, 512);
        } else {
          // the first v with |v| == amax (4 lanes at a time; the first lane of the first vector that has one)
          let max: f32 = 0;
          const am = f32x4.splat(amax);
          for (let j = 0; j < 256; j += 4) {
            const v = v128.load(xb + <usize>j * 4);
            const hit = i32x4.bitmask(f32x4.eq(f32x4.abs(v), am));
            if (hit != 0) {
              max = load<f32>(xb + <usize>(j + ctz(hit)) * 4);
              break;
            }
          }
          const iscale: f32 = <f32>-127 / max;
          const sc = f32x4.splat(iscale), top = i32x4.splat(127);
          for (let j = 0; j < 256; j += 8) {
            const v0 = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(sc, v128.load(xb + <usize>j * 4)))), top);
            const v1 = i32x4.min_s(i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(sc, v128.load(xb + <usize>j * 4, 16)))), top);
            v128.store(q + <usize>j * 2, i16x8.narrow_i32x4_s(v0, v1));
          }
          store<f32>(db, <f32>1 / iscale);
        }
      }
      for (let j = 0; j < kind; j += 32, s += 2) {
        const qj = q + <usize>j * 2;
        const a = i32x4.add(i32x4.add(i32x4.dot_i16x8_s(v128.load(qj), ones), i32x4.dot_i16x8_s(v128.load(qj, 16), ones)), i32x4.add(i32x4.dot_i16x8_s(v128.load(qj, 32), ones), i32x4.dot_i16x8_s(v128.load(qj, 48), ones)));
        store<i16>(s, <i16>(i32x4.extract_lane(a, 0) + i32x4.extract_lane(a, 1) + i32x4.extract_lane(a, 2) + i32x4.extract_lane(a, 3)));
      }
      q += <usize>kind * 2;
    }
  }
}

/** 16 bytes (signed values) -> 16 int16 at dst, times the integer scale sc */
// @ts-ignore: decorator
@inline function put16i(dst: usize, v: v128, sc: v128): void {
  v128.store(dst, i16x8.mul(i16x8.extend_low_i8x16_s(v), sc));
  v128.store(dst, i16x8.mul(i16x8.extend_high_i8x16_s(v), sc), 16);
}

/** Unpack `rows` weight rows (stored rowBytes apart) of K elements into the chunk scratch (see above). */
function unpackInt(type: i32, src: usize, rowBytes: usize, rows: i32, K: i32, w: usize, sc: usize, m: usize, dm: usize): void {
  const one = i16x8.splat(1);
  const nb = K / intBlock(type);
  for (let r = 0; r < rows; r++, src += rowBytes) {
    let p = src;
    let o = w + <usize>r * <usize>K * 2;
    let so = sc + <usize>r * <usize>nb * 4;
    let mo = m + <usize>r * <usize>nb * 16;
    let dmo = dm + <usize>r * <usize>nb * 4;
    for (let b = 0; b < nb; b++, so += 4) {
      switch (type) {
        case 8: { // Q8_0
          store<f32>(so, f16At(p));
          put16i(o, v128.load(p + 2), one);
          put16i(o + 32, v128.load(p + 18), one);
          p += 34; o += 64;
          break;
        }
        case 2: { // Q4_0
          store<f32>(so, f16At(p));
          const q = v128.load(p + 2);
          const eight = i8x16.splat(8);
          put16i(o, i8x16.sub(lowNibbles(q), eight), one);
          put16i(o + 32, i8x16.sub(highNibbles(q), eight), one);
          p += 18; o += 64;
          break;
        }
        case 6: { // Q5_0
          store<f32>(so, f16At(p));
          const qh = load<u32>(p + 2);
          const q = v128.load(p + 6);
          const sixteen = i8x16.splat(16);
          put16i(o, i8x16.sub(v128.or(lowNibbles(q), bit16(qh)), sixteen), one);
          put16i(o + 32, i8x16.sub(v128.or(highNibbles(q), bit16(qh >> 16)), sixteen), one);
          p += 22; o += 64;
          break;
        }
        case 20: { // IQ4_NL
          store<f32>(so, f16At(p));
          const q = v128.load(p + 2);
          const grid = iq4Grid();
          put16i(o, i8x16.swizzle(grid, lowNibbles(q)), one);
          put16i(o + 32, i8x16.swizzle(grid, highNibbles(q)), one);
          p += 18; o += 64;
          break;
        }
        case 12: { // Q4_K
          store<f32>(so, f16At(p));
          store<f32>(dmo, f16At(p + 2));
          for (let is: usize = 0, q = p + 16; is < 8; is += 2, q += 32, o += 128) {
            const s1 = i16x8.splat(<i16>scaleK4(p + 4, is));
            const s2 = i16x8.splat(<i16>scaleK4(p + 4, is + 1));
            store<i16>(mo + is * 2, <i16>minK4(p + 4, is));
            store<i16>(mo + is * 2 + 2, <i16>minK4(p + 4, is + 1));
            const q0 = v128.load(q), q1 = v128.load(q + 16);
            put16i(o, lowNibbles(q0), s1);
            put16i(o + 32, lowNibbles(q1), s1);
            put16i(o + 64, highNibbles(q0), s2);
            put16i(o + 96, highNibbles(q1), s2);
          }
          p += 144; mo += 16; dmo += 4;
          break;
        }
        case 13: { // Q5_K
          store<f32>(so, f16At(p));
          store<f32>(dmo, f16At(p + 2));
          const zero = i8x16.splat(0);
          const sixteen = i8x16.splat(16);
          const h0 = v128.load(p + 16), h1 = v128.load(p + 32);
          let u1: i32 = 1;
          for (let is: usize = 0, q = p + 48; is < 8; is += 2, q += 32, o += 128, u1 <<= 2) {
            const s1 = i16x8.splat(<i16>scaleK4(p + 4, is));
            const s2 = i16x8.splat(<i16>scaleK4(p + 4, is + 1));
            store<i16>(mo + is * 2, <i16>minK4(p + 4, is));
            store<i16>(mo + is * 2 + 2, <i16>minK4(p + 4, is + 1));
            const b1 = i8x16.splat(<i8>u1), b2 = i8x16.splat(<i8>(u1 << 1));
            const q0 = v128.load(q), q1 = v128.load(q + 16);
            put16i(o, v128.or(lowNibbles(q0), v128.andnot(sixteen, i8x16.eq(v128.and(h0, b1), zero))), s1);
            put16i(o + 32, v128.or(lowNibbles(q1), v128.andnot(sixteen, i8x16.eq(v128.and(h1, b1), zero))), s1);
            put16i(o + 64, v128.or(highNibbles(q0), v128.andnot(sixteen, i8x16.eq(v128.and(h0, b2), zero))), s2);
            put16i(o + 96, v128.or(highNibbles(q1), v128.andnot(sixteen, i8x16.eq(v128.and(h1, b2), zero))), s2);
          }
          p += 176; mo += 16; dmo += 4;
          break;
        }
        case 14: { // Q6_K
          store<f32>(so, f16At(p + 208));
          const three = i8x16.splat(3);
          const off = i8x16.splat(32);
          for (let h: usize = 0; h < 2; h++) {
            const ql = p + h * 64, qh = p + 128 + h * 32, scp = p + 192 + h * 8;
            const oh = o + h * 256;
            for (let l: usize = 0; l < 32; l += 16) {
              const is = l >> 4;
              const a = v128.load(ql + l), c = v128.load(ql + l + 32), hb = v128.load(qh + l);
              const q1 = v128.or(lowNibbles(a), i8x16.shl(v128.and(hb, three), 4));
              const q2 = v128.or(lowNibbles(c), i8x16.shl(v128.and(i8x16.shr_u(hb, 2), three), 4));
              const q3 = v128.or(highNibbles(a), i8x16.shl(v128.and(i8x16.shr_u(hb, 4), three), 4));
              const q4 = v128.or(highNibbles(c), i8x16.shl(i8x16.shr_u(hb, 6), 4));
              put16i(oh + l * 2, i8x16.sub(q1, off), i16x8.splat(<i16>load<i8>(scp + is)));
              put16i(oh + (l + 32) * 2, i8x16.sub(q2, off), i16x8.splat(<i16>load<i8>(scp + is + 2)));
              put16i(oh + (l + 64) * 2, i8x16.sub(q3, off), i16x8.splat(<i16>load<i8>(scp + is + 4)));
              put16i(oh + (l + 96) * 2, i8x16.sub(q4, off), i16x8.splat(<i16>load<i8>(scp + is + 6)));
            }
          }
          p += 210; o += 512;
          break;
        }
        case 23: { // IQ4_XS
          store<f32>(so, f16At(p));
          const grid = iq4Grid();
          const sh = <u32>load<u16>(p + 2);
          for (let ib: u32 = 0; ib < 8; ib++, o += 64) {
            const ls = (((<u32>load<u8>(p + 4 + (ib >> 1)) >> (4 * (ib & 1))) & 0xf) | (((sh >> (2 * ib)) & 3) << 4));
            const s = i16x8.splat(<i16>(<i32>ls - 32));
            const q = v128.load(p + 8 + 16 * ib);
            put16i(o, i8x16.swizzle(grid, lowNibbles(q)), s);
            put16i(o + 32, i8x16.swizzle(grid, highNibbles(q)), s);
          }
          p += 136;
          break;
        }
        case 11: { // Q3_K
          store<f32>(so, f16At(p + 108));
          const three = i8x16.splat(3);
          const four = i8x16.splat(4);
          let is: u32 = 0;
          let mk: i32 = 1;
          for (let q = p + 32; q < p + 96; q += 32) {
            for (let shift: u32 = 0; shift < 8; shift += 2, mk <<= 1) {
              const mask = i8x16.splat(<i8>mk);
              for (let half: usize = 0; half < 32; half += 16, is++, o += 32) {
                const s = i16x8.splat(<i16>q3Scale(p + 96, is));
                const lo = v128.and(i8x16.shr_u(v128.load(q + half), shift), three);
                const noHigh = i8x16.eq(v128.and(v128.load(p + half), mask), i8x16.splat(0));
                put16i(o, i8x16.sub(lo, v128.and(noHigh, four)), s);
              }
            }
          }
          p += 110;
          break;
        }
        default: unreachable();
      }
    }
  }
}

// @ts-ignore: decorator
@inline function cvt(v: v128): v128 {
  return f32x4.convert_i32x4_s(v);
}

// @ts-ignore: decorator
@inline function scaleAdd(acc: v128, i: v128, s: f32): v128 {
  return f32x4.add(acc, f32x4.mul(cvt(i), f32x4.splat(s)));
}

/** [sum a, sum b, sum c, sum d] of four int32x4 (exact) */
// @ts-ignore: decorator
@inline function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const p = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  const q = i32x4.add(v128.shuffle<i32>(c, d, 0, 4, 1, 5), v128.shuffle<i32>(c, d, 2, 6, 3, 7));
  return i32x4.add(v128.shuffle<i32>(p, q, 0, 1, 4, 5), v128.shuffle<i32>(p, q, 2, 3, 6, 7));
}

/**
 * Integer tile: 2 weight rows (w0, w1: int16, block scales wsc0 / wsc1, f32 per block) x 4 tokens (x,
 * row stride xs bytes; their block scales at xd + b * xdStride, one f32 per token). f32 lanes are the 4
 * tokens: per block, the exact int32 block sums of the 4 tokens are gathered into one vector (hsum4),
 * converted and scaled by dw * dx[t]. With mins (Q4_K, Q5_K): wm0 / wm1 (8 int16 per block), wdm0 / wdm1
 * (f32 per block), xsum (the tokens' sums of 32 quants, int16, 8 per block, row stride xsumStride).
 * Results of rows < nr and tokens < nt go to y (token stride ys bytes, row r at y + 4 r).
 */
function itile(
  w0: usize, w1: usize, wsc0: usize, wsc1: usize, nr: i32,
  x: usize, xs: usize, xd: usize, xdStride: usize, nt: i32, nb: i32, bl: i32,
  mins: bool, wm0: usize, wm1: usize, wdm0: usize, wdm1: usize, xsum: usize, xsumStride: usize,
  y: usize, ys: usize,
): void {
  const x1 = x + xs, x2 = x1 + xs, x3 = x2 + xs;
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0);
  const bb = <usize>bl * 2;
  for (let b = 0; b < nb; b++) {
    let a00 = i32x4.splat(0), a01 = i32x4.splat(0), a02 = i32x4.splat(0), a03 = i32x4.splat(0);
    let a10 = i32x4.splat(0), a11 = i32x4.splat(0), a12 = i32x4.splat(0), a13 = i32x4.splat(0);
    const o0 = <usize>b * bb;
    // 32 elements per iteration (a block of 32 in one: no loop overhead per Q8_0 block)
    for (let k = o0; k < o0 + bb; k += 64) {
      for (let s: usize = 0; s < 64; s += 16) {
        const ks = k + s;
        const v0 = v128.load(w0 + ks), v1 = v128.load(w1 + ks);
        let u = v128.load(x + ks);
        a00 = i32x4.add(a00, i32x4.dot_i16x8_s(v0, u)); a10 = i32x4.add(a10, i32x4.dot_i16x8_s(v1, u));
        u = v128.load(x1 + ks);
        a01 = i32x4.add(a01, i32x4.dot_i16x8_s(v0, u)); a11 = i32x4.add(a11, i32x4.dot_i16x8_s(v1, u));
        u = v128.load(x2 + ks);
        a02 = i32x4.add(a02, i32x4.dot_i16x8_s(v0, u)); a12 = i32x4.add(a12, i32x4.dot_i16x8_s(v1, u));
        u = v128.load(x3 + ks);
        a03 = i32x4.add(a03, i32x4.dot_i16x8_s(v0, u)); a13 = i32x4.add(a13, i32x4.dot_i16x8_s(v1, u));
      }
    }
    const so = <usize>b * 4;
    const dx = v128.load(xd + <usize>b * xdStride);
    f0 = f32x4.add(f0, f32x4.mul(cvt(hsum4(a00, a01, a02, a03)), f32x4.mul(v128.load32_splat(wsc0 + so), dx)));
    f1 = f32x4.add(f1, f32x4.mul(cvt(hsum4(a10, a11, a12, a13)), f32x4.mul(v128.load32_splat(wsc1 + so), dx)));
    if (mins) {
      const mo = <usize>b * 16;
      const s0 = v128.load(xsum + mo), s1 = v128.load(xsum + xsumStride + mo);
      const s2 = v128.load(xsum + 2 * xsumStride + mo), s3 = v128.load(xsum + 3 * xsumStride + mo);
      const m0 = v128.load(wm0 + mo), m1 = v128.load(wm1 + mo);
      const M0 = hsum4(i32x4.dot_i16x8_s(m0, s0), i32x4.dot_i16x8_s(m0, s1), i32x4.dot_i16x8_s(m0, s2), i32x4.dot_i16x8_s(m0, s3));
      const M1 = hsum4(i32x4.dot_i16x8_s(m1, s0), i32x4.dot_i16x8_s(m1, s1), i32x4.dot_i16x8_s(m1, s2), i32x4.dot_i16x8_s(m1, s3));
      f0 = f32x4.sub(f0, f32x4.mul(cvt(M0), f32x4.mul(v128.load32_splat(wdm0 + so), dx)));
      f1 = f32x4.sub(f1, f32x4.mul(cvt(M1), f32x4.mul(v128.load32_splat(wdm1 + so), dx)));
    }
  }
  store<f32>(y, f32x4.extract_lane(f0, 0));
  if (nr > 1) store<f32>(y, f32x4.extract_lane(f1, 0), 4);
  if (nt > 1) {
    y += ys;
    store<f32>(y, f32x4.extract_lane(f0, 1));
    if (nr > 1) store<f32>(y, f32x4.extract_lane(f1, 1), 4);
  }
  if (nt > 2) {
    y += ys;
    store<f32>(y, f32x4.extract_lane(f0, 2));
    if (nr > 1) store<f32>(y, f32x4.extract_lane(f1, 2), 4);
  }
  if (nt > 3) {
    y += ys;
    store<f32>(y, f32x4.extract_lane(f0, 3));
    if (nr > 1) store<f32>(y, f32x4.extract_lane(f1, 3), 4);
  }
}

/**
 * Integer tile for one token (decode): 4 weight rows (w0..w3, block scales at wsc + r * sw) x token x
 * (block scales at xd + b * xdStride). f32 lanes are the 4 rows; same operations per output as itile.
 */
function itile4x1(
  w0: usize, w1: usize, w2: usize, w3: usize, wsc: usize, sw: usize, nr: i32,
  x: usize, xd: usize, xdStride: usize, nb: i32, bl: i32,
  mins: bool, wm: usize, wdm: usize, xsum: usize, y: usize,
): void {
  let f = f32x4.splat(0);
  const bb = <usize>bl * 2;
  const r1 = <usize>min(1, nr - 1), r2 = <usize>min(2, nr - 1), r3 = <usize>min(3, nr - 1);
  for (let b = 0; b < nb; b++) {
    let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
    const o0 = <usize>b * bb;
    for (let k = o0; k < o0 + bb; k += 16) {
      const u = v128.load(x + k);
      a0 = i32x4.add(a0, i32x4.dot_i16x8_s(v128.load(w0 + k), u));
      a1 = i32x4.add(a1, i32x4.dot_i16x8_s(v128.load(w1 + k), u));
      a2 = i32x4.add(a2, i32x4.dot_i16x8_s(v128.load(w2 + k), u));
      a3 = i32x4.add(a3, i32x4.dot_i16x8_s(v128.load(w3 + k), u));
    }
    const so = <usize>b * 4;
    let dw = v128.load32_splat(wsc + so);
    dw = f32x4.replace_lane(dw, 1, load<f32>(wsc + r1 * sw + so));
    dw = f32x4.replace_lane(dw, 2, load<f32>(wsc + r2 * sw + so));
    dw = f32x4.replace_lane(dw, 3, load<f32>(wsc + r3 * sw + so));
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    f = f32x4.add(f, f32x4.mul(cvt(hsum4(a0, a1, a2, a3)), f32x4.mul(dw, dx)));
    if (mins) {
      const mo = <usize>b * 16;
      const sv = v128.load(xsum + mo);
      const ms = sw * 4;
      const M = hsum4(
        i32x4.dot_i16x8_s(v128.load(wm + mo), sv), i32x4.dot_i16x8_s(v128.load(wm + r1 * ms + mo), sv),
        i32x4.dot_i16x8_s(v128.load(wm + r2 * ms + mo), sv), i32x4.dot_i16x8_s(v128.load(wm + r3 * ms + mo), sv),
      );
      let dm = v128.load32_splat(wdm + so);
      dm = f32x4.replace_lane(dm, 1, load<f32>(wdm + r1 * sw + so));
      dm = f32x4.replace_lane(dm, 2, load<f32>(wdm + r2 * sw + so));
      dm = f32x4.replace_lane(dm, 3, load<f32>(wdm + r3 * sw + so));
      f = f32x4.sub(f, f32x4.mul(cvt(M), f32x4.mul(dm, dx)));
    }
  }
  store<f32>(y, f32x4.extract_lane(f, 0));
  if (nr > 1) store<f32>(y, f32x4.extract_lane(f, 1), 4);
  if (nr > 2) store<f32>(y, f32x4.extract_lane(f, 2), 8);
  if (nr > 3) store<f32>(y, f32x4.extract_lane(f, 3), 12);
}

/** 32 quants of a block-32 weight block at p as two i8x16 (elements 0..15, 16..31), signed values */
// @ts-ignore: decorator
@inline function block32(type: i32, p: usize, hi: bool): v128 {
  switch (type) {
    case 8: return v128.load(p + (hi ? 18 : 2));
    case 2: {
      const q = v128.load(p + 2);
      return i8x16.sub(hi ? highNibbles(q) : lowNibbles(q), i8x16.splat(8));
    }
    case 6: {
      const q = v128.load(p + 6);
      const qh = load<u32>(p + 2);
      return i8x16.sub(v128.or(hi ? highNibbles(q) : lowNibbles(q), bit16(hi ? qh >> 16 : qh)), i8x16.splat(16));
    }
    default: { // 20: IQ4_NL
      const q = v128.load(p + 2);
      return i8x16.swizzle(iq4Grid(), hi ? highNibbles(q) : lowNibbles(q));
    }
  }
}

/** int32x4 lane sums of a block-32 weight block at p times 32 int16 activations at x */
// @ts-ignore: decorator
@inline function dot32(type: i32, p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const lo = block32(type, p, false), hi = block32(type, p, true);
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(lo), x0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(lo), x1)),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(hi), x2), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(hi), x3)),
  );
}

/**
 * Decode (one token) for the block-32 types, straight from the stored blocks (no unpacked copy): 4 rows
 * (p0..p3, stored rowBytes apart) x token x; the same operations per output as itile / itile4x1.
 */
function dtile4x1q32(type: i32, p0: usize, p1: usize, p2: usize, p3: usize, nr: i32, bs: usize, x: usize, xd: usize, xdStride: usize, nb: i32, y: usize): void {
  let f = f32x4.splat(0);
  for (let b = 0; b < nb; b++, p0 += bs, p1 += bs, p2 += bs, p3 += bs) {
    const xb = x + <usize>b * 64;
    const x0 = v128.load(xb), x1 = v128.load(xb, 16), x2 = v128.load(xb, 32), x3 = v128.load(xb, 48);
    const I = hsum4(dot32(type, p0, x0, x1, x2, x3), dot32(type, p1, x0, x1, x2, x3), dot32(type, p2, x0, x1, x2, x3), dot32(type, p3, x0, x1, x2, x3));
    let dw = f32x4.splat(f16At(p0));
    dw = f32x4.replace_lane(dw, 1, f16At(p1));
    dw = f32x4.replace_lane(dw, 2, f16At(p2));
    dw = f32x4.replace_lane(dw, 3, f16At(p3));
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(dw, v128.load32_splat(xd + <usize>b * xdStride))));
  }
  store<f32>(y, f32x4.extract_lane(f, 0));
  if (nr > 1) store<f32>(y, f32x4.extract_lane(f, 1), 4);
  if (nr > 2) store<f32>(y, f32x4.extract_lane(f, 2), 8);
  if (nr > 3) store<f32>(y, f32x4.extract_lane(f, 3), 12);
}

/** int32x4 lane sums of 16 weights (u8 or i8 lanes of v, `signed`) times 16 int16 activations at x */
// @ts-ignore: decorator
@inline function dot16(v: v128, x: usize, signed: bool): v128 {
  const lo = signed ? i16x8.extend_low_i8x16_s(v) : i16x8.extend_low_i8x16_u(v);
  const hi = signed ? i16x8.extend_high_i8x16_s(v) : i16x8.extend_high_i8x16_u(v);
  return i32x4.add(i32x4.dot_i16x8_s(lo, v128.load(x)), i32x4.dot_i16x8_s(hi, v128.load(x, 16)));
}

/**
 * One Q4_K / Q6_K super-block (256 weights at p) times 256 int16 activations at x: int32x4 lanes whose
 * sum is I = sum_e (sc * q)[e] * x[e], the integer unpackInt + itile4x1 sum (exact, so the same value).
 */
// @ts-ignore: decorator
@inline function kdot(type: i32, p: usize, x: usize): v128 {
  let acc = i32x4.splat(0);
  if (type == 12) {
    // Q4_K: sub-block j (32 weights) = low (j even) or high (j odd) nibbles of qs[32 (j >> 1) ..][0..32)
    for (let j: usize = 0; j < 8; j += 2) {
      const q0 = v128.load(p + 16 + j * 16), q1 = v128.load(p + 32 + j * 16);
      const xj = x + j * 64;
      const lo = i32x4.add(dot16(lowNibbles(q0), xj, false), dot16(lowNibbles(q1), xj + 32, false));
      const hi = i32x4.add(dot16(highNibbles(q0), xj + 64, false), dot16(highNibbles(q1), xj + 96, false));
      acc = i32x4.add(acc, i32x4.add(i32x4.mul(lo, i32x4.splat(scaleK4(p + 4, j))), i32x4.mul(hi, i32x4.splat(scaleK4(p + 4, j + 1)))));
    }
  } else {
    // Q6_K: halves of 128; quarter qq of a half (32 weights, two sub-blocks of 16 with scales
    // sc[2 qq], sc[2 qq + 1]) = nibbles of ql and 2 bits of qh, minus 32
    const three = i8x16.splat(3);
    const off = i8x16.splat(32);
    for (let h: usize = 0; h < 2; h++) {
      const ql = p + h * 64, qh = p + 128 + h * 32, scp = p + 192 + h * 8, xh = x + h * 256;
      for (let l: usize = 0; l < 32; l += 16) {
        const is = l >> 4;
        const a = v128.load(ql + l), c = v128.load(ql + l + 32), hb = v128.load(qh + l);
        const q1 = i8x16.sub(v128.or(lowNibbles(a), i8x16.shl(v128.and(hb, three), 4)), off);
        const q2 = i8x16.sub(v128.or(lowNibbles(c), i8x16.shl(v128.and(i8x16.shr_u(hb, 2), three), 4)), off);
        const q3 = i8x16.sub(v128.or(highNibbles(a), i8x16.shl(v128.and(i8x16.shr_u(hb, 4), three), 4)), off);
        const q4 = i8x16.sub(v128.or(highNibbles(c), i8x16.shl(i8x16.shr_u(hb, 6), 4)), off);
        const xl = xh + l * 2;
        acc = i32x4.add(acc, i32x4.add(
          i32x4.add(i32x4.mul(dot16(q1, xl, true), i32x4.splat(<i32>load<i8>(scp + is))), i32x4.mul(dot16(q2, xl + 64, true), i32x4.splat(<i32>load<i8>(scp + is + 2)))),
          i32x4.add(i32x4.mul(dot16(q3, xl + 128, true), i32x4.splat(<i32>load<i8>(scp + is + 4))), i32x4.mul(dot16(q4, xl + 192, true), i32x4.splat(<i32>load<i8>(scp + is + 6)))),
        ));
      }
    }
  }
  return acc;
}

/** Q4_K: M = sum_j m_j * s_j over the 8 sub-block minimums of the super-block at p, s: 8 int16 at xsum */
// @ts-ignore: decorator
@inline function kmins(p: usize, xsum: usize): i32 {
  let M: i32 = 0;
  for (let j: usize = 0; j < 8; j++) M += <i32>minK4(p + 4, j) * <i32>load<i16>(xsum + j * 2);
  return M;
}

/**
 * Decode (one token) for Q4_K and Q6_K straight from the stored super-blocks (no unpacked copy): 4 rows
 * (p0..p3, stored rowBytes apart) x token x; the same operations per output as itile4x1.
 */
function dtile4x1k(type: i32, p0: usize, p1: usize, p2: usize, p3: usize, nr: i32, bs: usize, x: usize, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize): void {
  let f = f32x4.splat(0);
  const dOff: usize = type == 12 ? 0 : 208;
  for (let b = 0; b < nb; b++, p0 += bs, p1 += bs, p2 += bs, p3 += bs) {
    const xb = x + <usize>b * 512;
    const I = hsum4(kdot(type, p0, xb), kdot(type, p1, xb), kdot(type, p2, xb), kdot(type, p3, xb));
    let dw = f32x4.splat(f16At(p0 + dOff));
    dw = f32x4.replace_lane(dw, 1, f16At(p1 + dOff));
    dw = f32x4.replace_lane(dw, 2, f16At(p2 + dOff));
    dw = f32x4.replace_lane(dw, 3, f16At(p3 + dOff));
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(dw, dx)));
    if (type == 12) {
      const xs = xsum + <usize>b * 16;
      let M = i32x4.splat(kmins(p0, xs));
      M = i32x4.replace_lane(M, 1, kmins(p1, xs));
      M = i32x4.replace_lane(M, 2, kmins(p2, xs));
      M = i32x4.replace_lane(M, 3, kmins(p3, xs));
      let dm = f32x4.splat(f16At(p0 + 2));
      dm = f32x4.replace_lane(dm, 1, f16At(p1 + 2));
      dm = f32x4.replace_lane(dm, 2, f16At(p2 + 2));
      dm = f32x4.replace_lane(dm, 3, f16At(p3 + 2));
      f = f32x4.sub(f, f32x4.mul(cvt(M), f32x4.mul(dm, dx)));
    }
  }
  store<f32>(y, f32x4.extract_lane(f, 0));
  if (nr > 1) store<f32>(y, f32x4.extract_lane(f, 1), 4);
  if (nr > 2) store<f32>(y, f32x4.extract_lane(f, 2), 8);
  if (nr > 3) store<f32>(y, f32x4.extract_lane(f, 3), 12);
}

// ---------------------------------------------------------------------------------------------------
// Decode with 8-bit products (relaxed build only). i16x8.relaxed_dot_i8x16_i7x16_s(a, b) multiplies 16
// signed bytes a by 16 bytes b and adds pairs into int16 lanes; it is deterministic (the same on every
// engine) when b is in 0..127, as |a0 b0 + a1 b1| <= 2 * 128 * 127 < 2^15 never saturates. (The i32x4
// ..._add_s form is not used: V8 11 on x64 returns twice the sums.) So the weights' unsigned quants are
// the b operand straight from the stored bytes (Q4_0 and Q4_K nibbles, Q5_0 5 bits, Q6_K 6 bits) and
// their offsets (-8, -16, -32) are taken out once per block through the activations' sums; signed
// weights (Q8_0, IQ4_NL grid values) are the a operand against the activations split into
// max(q, 0) - max(-q, 0). Every int16 lane sum below is bounded under 2^15 (stated where formed), the
// integers are exact, so each block's I is the same integer as the int16 path's (and intMatmulRef's)
// and the f32 steps after it are unchanged: the same bits.
// The activations of a token, prepared once per matmul (prepActs8), at xa + t * (8 K + K / 8 + K / 4):
//   q (int8, K) | max(q, 0) (K) | max(-q, 0) (K) | sums of every 16 q (int16, K / 16) | Q6_K's offsets
//   (K / 4) | splat records (5 K, at splatsAt(K); prepActs8 with splats = 1, for the Q8_K types)
// (q is in -127..127: Q8_0 and Q8_K never round to -128.) Q6_K's offsets, per 16 elements e..e+15, two
// int16: 32 (x[e] + x[e+1] + x[e+4] + x[e+5] + .. + x[e+13]) and 32 (x[e+2] + x[e+3] + .. + x[e+15]), the
// sums of the elements in the even and the odd int16 lanes of Q6_K's lanes tile (r6lanes), times 32
// (each |.| <= 32 * 8 * 127 = 32512). The splat record of elements e..e+15 (80 bytes at 5 e): q[e..e+3]
// repeated in the 4 int32 lanes, q[e+4..e+7] likewise, q[e+8..], q[e+12..], then the two offsets as an
// int16 pair in every int32 lane: the Q6_K lanes tiles load each as a vector at a constant offset from one
// pointer (v128.load32_splat costs V8 an address computation per load, and the offsets a second pointer).

/** bytes of prepared activations per token (prepActs8) */
export function actBytes8(K: i32): i32 {
  return 3 * K + K / 8 + K / 4 + 5 * K;
}

/** offset of the splat records in a token's prepared activations (prepActs8) */
// @ts-ignore: decorator
@inline function splatsAt(K: usize): usize {
  return 3 * K + (K >> 3) + (K >> 2);
}

/** prepare T tokens of int16 activations (q, K per token) for the 8-bit decode tiles, at dst (splats: with the splat records) */
export function prepActs8(q: usize, T: i32, K: i32, dst: usize, splats: i32): void {
  const P = <usize>actBytes8(K);
  const kk = <usize>K;
  const ones = i16x8.splat(1);
  const zero = i8x16.splat(0);
  for (let t = 0; t < T; t++) {
    const src = q + <usize>t * kk * 2;
    const o = dst + <usize>t * P;
    for (let k: usize = 0; k < kk; k += 16) {
      const a = v128.load(src + k * 2), b = v128.load(src + k * 2 + 16);
      const v = i8x16.narrow_i16x8_s(a, b);
      v128.store(o + k, v);
      v128.store(o + kk + k, i8x16.max_s(v, zero));
      v128.store(o + 2 * kk + k, i8x16.max_s(i8x16.neg(v), zero));
      const s = i32x4.dot_i16x8_s(i16x8.add(a, b), ones);
      const s0 = i32x4.extract_lane(s, 0), s1 = i32x4.extract_lane(s, 1), s2 = i32x4.extract_lane(s, 2), s3 = i32x4.extract_lane(s, 3);
      store<i16>(o + 3 * kk + (k >> 3), <i16>(s0 + s1 + s2 + s3));
      // Q6_K's offsets: lanes 0, 2 of s sum elements {0, 1, 8, 9} and {4, 5, 12, 13}; lanes 1, 3 the rest
      store<i16>(o + 3 * kk + (kk >> 3) + (k >> 2), <i16>((s0 + s2) << 5));
      store<i16>(o + 3 * kk + (kk >> 3) + (k >> 2), <i16>((s1 + s3) << 5), 2);
      // the splat record of elements k..k+15 (80 bytes): each 4 q as i32 splat, then Q6_K's two offsets as a splat pair
      if (!splats) continue;
      const r = o + splatsAt(kk) + k * 5;
      v128.store(r, v128.shuffle<i32>(v, v, 0, 0, 0, 0));
      v128.store(r, v128.shuffle<i32>(v, v, 1, 1, 1, 1), 16);
      v128.store(r, v128.shuffle<i32>(v, v, 2, 2, 2, 2), 32);
      v128.store(r, v128.shuffle<i32>(v, v, 3, 3, 3, 3), 48);
      v128.store(r, i32x4.splat((((s0 + s2) << 5) & 0xffff) | ((s1 + s3) << 21)), 64);
    }
  }
}

/** int16 lanes: a[2i] b[2i] + a[2i+1] b[2i+1] (b in 0..127) */
// @ts-ignore: decorator
@inline function rdot(a: v128, b: v128): v128 {
  return i16x8.relaxed_dot_i8x16_i7x16_s(a, b);
}

/** int16 lanes -> int32 lanes, pairs summed (exact) */
// @ts-ignore: decorator
@inline function widen(v: v128): v128 {
  return i32x4.dot_i16x8_s(v, i16x8.splat(1));
}

/** the fp16 values at p0..p3 as f32 lanes (f16x4) */
// @ts-ignore: decorator
@inline function f16x4At(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  let h = v128.load16_lane(p0, i32x4.splat(0), 0);
  h = v128.load16_lane(p1, h, 2);
  h = v128.load16_lane(p2, h, 4);
  h = v128.load16_lane(p3, h, 6);
  return f16x4(h);
}

/**
 * one block-32 weight block at p against the block's activations (X0, X1: q, 16 + 16 bytes; signed kinds
 * X0..X3: max(q, 0) and max(-q, 0), 16 + 16 bytes each, loaded once per block for the 4 rows): int32x4
 * whose lane sum is sum q x (unsigned kinds: before the offset)
 */
// @ts-ignore: decorator
@inline function rdot32(type: i32, p: usize, X0: v128, X1: v128, X2: v128, X3: v128): v128 {
  if (type == 8 || type == 20) {
    let w0: v128, w1: v128;
    if (type == 8) {
      w0 = v128.load(p + 2);
      w1 = v128.load(p + 18);
    } else {
      const q = v128.load(p + 2);
      w0 = i8x16.swizzle(iq4Grid(), lowNibbles(q));
      w1 = i8x16.swizzle(iq4Grid(), highNibbles(q));
    }
    // per lane one of the two terms is 0: |.| <= 2 * 128 * 127
    const s0 = i16x8.sub(rdot(w0, X0), rdot(w0, X2));
    const s1 = i16x8.sub(rdot(w1, X1), rdot(w1, X3));
    return i32x4.add(widen(s0), widen(s1));
  }
  if (type == 2) return widen(q4s16(p, X0, X1));
  // 6: Q5_0, <= 4 * 31 * 127
  const q = v128.load(p + 6);
  const qh = load<u32>(p + 2);
  return widen(i16x8.add(rdot(X0, v128.or(lowNibbles(q), bit16(qh))), rdot(X1, v128.or(highNibbles(q), bit16(qh >> 16)))));
}

/** Q4_0: the block at p against activations X0, X1 as int16 lanes (each <= 2 * 2 * 15 * 127 = 7620) */
// @ts-ignore: decorator
@inline function q4s16(p: usize, X0: v128, X1: v128): v128 {
  const q = v128.load(p + 2);
  return i16x8.add(rdot(X0, lowNibbles(q)), rdot(X1, highNibbles(q)));
}

/**
 * The lane sums of 4 int16 vectors a..d (each lane |.| <= 7620) as int32x4: the pairwise adds stay in
 * int16 (partial sums <= 4 * 7620 = 30480 < 2^15), one widening at the end. The same integers as hsum4 of
 * the widened vectors, in 10 operations instead of 13.
 */
// @ts-ignore: decorator
@inline function hsum4s16(a: v128, b: v128, c: v128, d: v128): v128 {
  const p = i16x8.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  const q = i16x8.add(v128.shuffle<i32>(c, d, 0, 4, 1, 5), v128.shuffle<i32>(c, d, 2, 6, 3, 7));
  return widen(i16x8.add(v128.shuffle<i32>(p, q, 0, 1, 4, 5), v128.shuffle<i32>(p, q, 2, 3, 6, 7)));
}

/** store the 4 lanes of f (rows) to y, as many as nr */
// @ts-ignore: decorator
@inline function store4(y: usize, f: v128, nr: i32): void {
  store<f32>(y, f32x4.extract_lane(f, 0));
  if (nr > 1) store<f32>(y, f32x4.extract_lane(f, 1), 4);
  if (nr > 2) store<f32>(y, f32x4.extract_lane(f, 2), 8);
  if (nr > 3) store<f32>(y, f32x4.extract_lane(f, 3), 12);
}

/**
 * decode tile for the block-32 types with 8-bit products: 4 rows x the token prepared at xa (inlined per
 * type). f32s: the interleaved copy with f32 scales (interleave4): group blocks bs bytes apart of the 4
 * scales (f32) at p0 - 14, then the 4 rows' blocks without their scale bytes, row i's at p0 + i (B - 2)
 * (B: the type's block bytes; constant offsets from one pointer); else rows at p0..p3 with fp16 scales.
 */
// @ts-ignore: decorator
@inline function rtile4x1q32(type: i32, p0: usize, p1: usize, p2: usize, p3: usize, nr: i32, bs: usize, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize, f32s: bool): void {
  let f = f32x4.splat(0);
  const kk = <usize>K;
  const off = type == 2 ? 8 : type == 6 ? 16 : 0;
  const B: usize = type == 8 ? 32 : type == 6 ? 20 : 16; // block bytes without the scale
  const signed = type == 8 || type == 20;
  for (let b = 0; b < nb; b++, p0 += bs, p1 += bs, p2 += bs, p3 += bs) {
    const xb = xa + <usize>b * 32;
    const X0 = v128.load(signed ? xb + kk : xb), X1 = v128.load(signed ? xb + kk : xb, 16);
    const X2 = signed ? v128.load(xb + 2 * kk) : X0, X3 = signed ? v128.load(xb + 2 * kk, 16) : X1;
    const q1 = f32s ? p0 + B : p1, q2 = f32s ? p0 + 2 * B : p2, q3 = f32s ? p0 + 3 * B : p3;
    let I: v128;
    if (type == 2) I = hsum4s16(q4s16(p0, X0, X1), q4s16(q1, X0, X1), q4s16(q2, X0, X1), q4s16(q3, X0, X1));
    else I = hsum4(rdot32(type, p0, X0, X1, X2, X3), rdot32(type, q1, X0, X1, X2, X3), rdot32(type, q2, X0, X1, X2, X3), rdot32(type, q3, X0, X1, X2, X3));
    if (off != 0) I = i32x4.sub(I, i32x4.splat(off * <i32>load<i16>(xsum + <usize>b * 2)));
    // f32s: the group's 4 scales as f32 at p0 - 14 (interleave4 with f32 scales), else fp16 in the blocks
    const dw = f32s ? v128.load(p0 - 14) : f16x4At(p0, p1, p2, p3);
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(dw, v128.load32_splat(xd + <usize>b * xdStride))));
  }
  store4(y, f, nr);
}

/**
 * Q4_0's interleaved copy (interleave4, relaxed build) puts one row per 32-bit lane. Rows in full groups
 * of 8 (rows 8g..8g+7, the two halves h = 0, 1 of 4 rows): per block b, a group block of 160 bytes:
 *   scales of half 0 (f32 x 4) | scales of half 1 (f32 x 4) | for v = 0..3: [half 0 vector v | half 1 vector v]
 * where the 16-byte vector v of a half holds bytes 4v..4v+3 of each of its rows' 16 quant bytes, row i
 * in bytes 4i..4i+3. A last group of 4 rows (rows % 8 >= 4): group blocks of 80 bytes, its scales then
 * its 4 vectors; the rows after it (rows % 4) stay row by row. The low nibbles of vector v are elements
 * 4v..4v+3 of each row, the high nibbles elements 16 + 4v..; each is multiplied by those 4 activations
 * splat to every lane, so int16 lanes 2i, 2i + 1 hold row i's pair sums (8 products summed: each lane
 * <= 8 * 2 * 15 * 127 = 30480 < 2^15) and one widening gives the 4 rows' I with no horizontal sums.
 * The same integer I per block and the same f32 steps as rtile4x1q32: the same bits.
 */

/** Q4_0 decode, 4 rows (one half or a last group of 4): scales at ps, vectors at pq + v vs, blocks bs apart */
function rtileQ4Lanes(ps: usize, pq: usize, vs: usize, bs: usize, nr: i32, xa: usize, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize): void {
  let f = f32x4.splat(0);
  const m = i8x16.splat(0x0f);
  for (let b = 0; b < nb; b++, ps += bs, pq += bs) {
    const xb = xa + <usize>b * 32;
    let s = i16x8.splat(0);
    for (let v: usize = 0; v < 4; v++) {
      const q = v128.load(pq + v * vs);
      s = i16x8.add(s, rdot(v128.load32_splat(xb + v * 4), v128.and(q, m)));
      s = i16x8.add(s, rdot(v128.load32_splat(xb + 16 + v * 4), v128.and(i16x8.shr_u(q, 4), m)));
    }
    const I = i32x4.sub(widen(s), i32x4.splat(8 * <i32>load<i16>(xsum + <usize>b * 2)));
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(v128.load(ps), v128.load32_splat(xd + <usize>b * xdStride))));
  }
  store4(y, f, nr);
}

/** Q4_0 decode, a full group of 8 rows (group blocks of 160 bytes at p): each activation splat loaded once for both halves */
function rtileQ4Lanes8(p: usize, xa: usize, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize): void {
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0);
  const m = i8x16.splat(0x0f);
  for (let b = 0; b < nb; b++, p += 160) {
    const xb = xa + <usize>b * 32;
    let X = v128.load32_splat(xb);
    let qa = v128.load(p, 32), qb = v128.load(p, 48);
    let s0 = rdot(X, v128.and(qa, m));
    let s1 = rdot(X, v128.and(qb, m));
    X = v128.load32_splat(xb + 16);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    X = v128.load32_splat(xb + 4);
    qa = v128.load(p, 64); qb = v128.load(p, 80);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    X = v128.load32_splat(xb + 20);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    X = v128.load32_splat(xb + 8);
    qa = v128.load(p, 96); qb = v128.load(p, 112);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    X = v128.load32_splat(xb + 24);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    X = v128.load32_splat(xb + 12);
    qa = v128.load(p, 128); qb = v128.load(p, 144);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    X = v128.load32_splat(xb + 28);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m)));
    s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    const off = i32x4.splat(8 * <i32>load<i16>(xsum + <usize>b * 2));
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    f0 = f32x4.add(f0, f32x4.mul(cvt(i32x4.sub(widen(s0), off)), f32x4.mul(v128.load(p), dx)));
    f1 = f32x4.add(f1, f32x4.mul(cvt(i32x4.sub(widen(s1), off)), f32x4.mul(v128.load(p, 16), dx)));
  }
  v128.store(y, f0);
  v128.store(y, f1, 16);
}


/**
 * Q4_0 decode, four full groups of 8 rows at once (group blocks of 160 bytes at p, q, u, w: the 4 strands of one
 * chunk, far apart, so 4 sequential streams from memory are in flight instead of one; one thread's Q4_0 reads
 * from DRAM 6.8 -> 11.9 GB/s, bench matvec dram). Block b of the groups at p and q, then of those at u and w,
 * each activation splat serving 2 groups' 4 halves. Every row's integers and f32 steps are rtileQ4Lanes8's: the
 * same bits. Rows of the group at p to y, q to z, u to yu, w to yw. The two pairs' steps stay written out in one
 * loop body: the pairs taking turns through one copy of the step (sums and pointers swapped each step) read
 * 0.84-0.87x as fast, the sums kept in y 0.82-0.86x.
 */
function rtileQ4Lanes8x4(p: usize, q: usize, u: usize, w: usize, xa: usize, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize, z: usize, yu: usize, yw: usize): void {
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0), g0 = f32x4.splat(0), g1 = f32x4.splat(0);
  let h0 = f32x4.splat(0), h1 = f32x4.splat(0), k0 = f32x4.splat(0), k1 = f32x4.splat(0);
  const m = i8x16.splat(0x0f);
  for (let b = 0; b < nb; b++, p += 160, q += 160, u += 160, w += 160) {
    const xb = xa + <usize>b * 32;
    let qa: v128, qb: v128, ra: v128, rb: v128, X: v128, s0: v128, s1: v128, t0: v128, t1: v128;
    const off = i32x4.splat(8 * <i32>load<i16>(xsum + <usize>b * 2));
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    qa = v128.load(p, 32); qb = v128.load(p, 48); ra = v128.load(q, 32); rb = v128.load(q, 48);
    X = v128.load32_splat(xb + 0);
    s0 = rdot(X, v128.and(qa, m)); s1 = rdot(X, v128.and(qb, m));
    t0 = rdot(X, v128.and(ra, m)); t1 = rdot(X, v128.and(rb, m));
    X = v128.load32_splat(xb + 16);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    qa = v128.load(p, 64); qb = v128.load(p, 80); ra = v128.load(q, 64); rb = v128.load(q, 80);
    X = v128.load32_splat(xb + 4);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m))); s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(ra, m))); t1 = i16x8.add(t1, rdot(X, v128.and(rb, m)));
    X = v128.load32_splat(xb + 20);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    qa = v128.load(p, 96); qb = v128.load(p, 112); ra = v128.load(q, 96); rb = v128.load(q, 112);
    X = v128.load32_splat(xb + 8);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m))); s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(ra, m))); t1 = i16x8.add(t1, rdot(X, v128.and(rb, m)));
    X = v128.load32_splat(xb + 24);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    qa = v128.load(p, 128); qb = v128.load(p, 144); ra = v128.load(q, 128); rb = v128.load(q, 144);
    X = v128.load32_splat(xb + 12);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m))); s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(ra, m))); t1 = i16x8.add(t1, rdot(X, v128.and(rb, m)));
    X = v128.load32_splat(xb + 28);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    f0 = f32x4.add(f0, f32x4.mul(cvt(i32x4.sub(widen(s0), off)), f32x4.mul(v128.load(p), dx)));
    f1 = f32x4.add(f1, f32x4.mul(cvt(i32x4.sub(widen(s1), off)), f32x4.mul(v128.load(p, 16), dx)));
    g0 = f32x4.add(g0, f32x4.mul(cvt(i32x4.sub(widen(t0), off)), f32x4.mul(v128.load(q), dx)));
    g1 = f32x4.add(g1, f32x4.mul(cvt(i32x4.sub(widen(t1), off)), f32x4.mul(v128.load(q, 16), dx)));
    qa = v128.load(u, 32); qb = v128.load(u, 48); ra = v128.load(w, 32); rb = v128.load(w, 48);
    X = v128.load32_splat(xb + 0);
    s0 = rdot(X, v128.and(qa, m)); s1 = rdot(X, v128.and(qb, m));
    t0 = rdot(X, v128.and(ra, m)); t1 = rdot(X, v128.and(rb, m));
    X = v128.load32_splat(xb + 16);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    qa = v128.load(u, 64); qb = v128.load(u, 80); ra = v128.load(w, 64); rb = v128.load(w, 80);
    X = v128.load32_splat(xb + 4);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m))); s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(ra, m))); t1 = i16x8.add(t1, rdot(X, v128.and(rb, m)));
    X = v128.load32_splat(xb + 20);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    qa = v128.load(u, 96); qb = v128.load(u, 112); ra = v128.load(w, 96); rb = v128.load(w, 112);
    X = v128.load32_splat(xb + 8);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m))); s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(ra, m))); t1 = i16x8.add(t1, rdot(X, v128.and(rb, m)));
    X = v128.load32_splat(xb + 24);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    qa = v128.load(u, 128); qb = v128.load(u, 144); ra = v128.load(w, 128); rb = v128.load(w, 144);
    X = v128.load32_splat(xb + 12);
    s0 = i16x8.add(s0, rdot(X, v128.and(qa, m))); s1 = i16x8.add(s1, rdot(X, v128.and(qb, m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(ra, m))); t1 = i16x8.add(t1, rdot(X, v128.and(rb, m)));
    X = v128.load32_splat(xb + 28);
    s0 = i16x8.add(s0, rdot(X, v128.and(i16x8.shr_u(qa, 4), m))); s1 = i16x8.add(s1, rdot(X, v128.and(i16x8.shr_u(qb, 4), m)));
    t0 = i16x8.add(t0, rdot(X, v128.and(i16x8.shr_u(ra, 4), m))); t1 = i16x8.add(t1, rdot(X, v128.and(i16x8.shr_u(rb, 4), m)));
    h0 = f32x4.add(h0, f32x4.mul(cvt(i32x4.sub(widen(s0), off)), f32x4.mul(v128.load(u), dx)));
    h1 = f32x4.add(h1, f32x4.mul(cvt(i32x4.sub(widen(s1), off)), f32x4.mul(v128.load(u, 16), dx)));
    k0 = f32x4.add(k0, f32x4.mul(cvt(i32x4.sub(widen(t0), off)), f32x4.mul(v128.load(w), dx)));
    k1 = f32x4.add(k1, f32x4.mul(cvt(i32x4.sub(widen(t1), off)), f32x4.mul(v128.load(w, 16), dx)));
  }
  v128.store(y, f0);
  v128.store(y, f1, 16);
  v128.store(z, g0);
  v128.store(z, g1, 16);
  v128.store(yu, h0);
  v128.store(yu, h1, 16);
  v128.store(yw, k0);
  v128.store(yw, k1, 16);
}

/**
 * Q8_0's interleaved copy (interleave4, relaxed build) has Q4_0's layout with 8 vectors per block: one row per
 * 32-bit lane, rows in full groups of 8, per block b a group block of 288 bytes:
 *   scales of half 0 (f32 x 4) | scales of half 1 (f32 x 4) | for v = 0..7: [half 0 vector v | half 1 vector v]
 * where vector v of a half holds elements 4v..4v+3 of each of its 4 rows (row i in bytes 4i..4i+3); a last
 * group of 4 rows: group blocks of 144 bytes (its scales, then its 8 vectors); the rows after it stay row by
 * row (rtile4x1q32). Each vector is multiplied by the 4 activations max(q, 0) and by max(-q, 0) of those
 * elements splat to every lane (prepActs8: both in 0..127, the 7-bit operand); per int16 lane one of the two
 * pair sums is 0 for each element, so the difference is the pair's w x sum (|.| <= 2 * 128 * 127 < 2^15),
 * widened to int32 lanes 4 rows at a time: no horizontal sums. The same integer I per block and the same f32
 * steps as rtile4x1q32: the same bits.
 */

/** Q8_0: one vector of 4 rows x 4 elements against the activations' positive parts P and negative parts N (splats) */
// @ts-ignore: decorator
@inline function q8lanes(q: v128, P: v128, N: v128): v128 {
  return widen(i16x8.sub(rdot(q, P), rdot(q, N)));
}

/**
 * Q8_0 decode, 4 rows (a half of a group of 8, or the last group of 4): scales at ps, vector v at pq + v vs,
 * blocks bs apart; xp: the token's max(q, 0) bytes (prepActs8), max(-q, 0) K bytes after them
 */
function rtileQ8Lanes(ps: usize, pq: usize, vs: usize, bs: usize, xp: usize, K: i32, xd: usize, xdStride: usize, nb: i32, y: usize): void {
  let f = f32x4.splat(0);
  const kk = <usize>K;
  for (let b = 0; b < nb; b++, ps += bs, pq += bs, xp += 32) {
    let I = i32x4.splat(0);
    for (let h: usize = 0; h < 32; h += 16) {
      // elements h..h + 15: vectors h / 4 .. h / 4 + 3
      const xq = xp + h, xn = xp + kk + h;
      const q = pq + (h >> 2) * vs;
      I = i32x4.add(I, q8lanes(v128.load(q), v128.load32_splat(xq), v128.load32_splat(xn)));
      I = i32x4.add(I, q8lanes(v128.load(q + vs), v128.load32_splat(xq + 4), v128.load32_splat(xn + 4)));
      I = i32x4.add(I, q8lanes(v128.load(q + 2 * vs), v128.load32_splat(xq + 8), v128.load32_splat(xn + 8)));
      I = i32x4.add(I, q8lanes(v128.load(q + 3 * vs), v128.load32_splat(xq + 12), v128.load32_splat(xn + 12)));
    }
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(v128.load(ps), v128.load32_splat(xd + <usize>b * xdStride))));
  }
  store4(y, f, 4);
}

/**
 * Q8_0 decode, a full group of 8 rows (group blocks of 288 bytes at p): each activation splat serves both
 * halves (load32_splat: 0.90x the time of shuffles of one loaded vector, in cache). TurboFan emits a loop
 * body's loads ahead of its arithmetic (q4kBlock8): the sums are stored to y (overwritten at the end)
 * after every 2 vectors of both halves, so the next loads come after them and a step's values fit V8's vector
 * registers (no stores: 1.09x the time; one pair of stores in the middle: 1.04x).
 */
function rtileQ8Lanes8(p: usize, xp: usize, K: i32, xd: usize, xdStride: usize, nb: i32, y: usize): void {
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0);
  const kk = <usize>K;
  for (let b = 0; b < nb; b++, p += 288, xp += 32) {
    let I0 = i32x4.splat(0), I1 = i32x4.splat(0);
    let xq = xp, xn = xp + kk; // max(q, 0), max(-q, 0)
    let Ps = v128.load32_splat(xq), Ns = v128.load32_splat(xn);
    I0 = q8lanes(v128.load(p, 32), Ps, Ns);
    I1 = q8lanes(v128.load(p, 48), Ps, Ns);
    Ps = v128.load32_splat(xq + 4); Ns = v128.load32_splat(xn + 4);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 64), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 80), Ps, Ns));
    v128.store(y, I0); // a store orders the loads after it
    v128.store(y, I1, 16);
    Ps = v128.load32_splat(xq + 8); Ns = v128.load32_splat(xn + 8);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 96), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 112), Ps, Ns));
    Ps = v128.load32_splat(xq + 12); Ns = v128.load32_splat(xn + 12);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 128), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 144), Ps, Ns));
    v128.store(y, I0);
    v128.store(y, I1, 16);
    xq += 16; xn += 16;
    Ps = v128.load32_splat(xq); Ns = v128.load32_splat(xn);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 160), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 176), Ps, Ns));
    Ps = v128.load32_splat(xq + 4); Ns = v128.load32_splat(xn + 4);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 192), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 208), Ps, Ns));
    v128.store(y, I0);
    v128.store(y, I1, 16);
    Ps = v128.load32_splat(xq + 8); Ns = v128.load32_splat(xn + 8);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 224), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 240), Ps, Ns));
    Ps = v128.load32_splat(xq + 12); Ns = v128.load32_splat(xn + 12);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 256), Ps, Ns));
    I1 = i32x4.add(I1, q8lanes(v128.load(p, 272), Ps, Ns));
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    f0 = f32x4.add(f0, f32x4.mul(cvt(I0), f32x4.mul(v128.load(p), dx)));
    f1 = f32x4.add(f1, f32x4.mul(cvt(I1), f32x4.mul(v128.load(p, 16), dx)));
  }
  v128.store(y, f0);
  v128.store(y, f1, 16);
}


/**
 * Q8_0 decode, four full groups of 8 rows at once (group blocks of 288 bytes at p, q, u, w: 4 strands of one
 * chunk, as rtileQ4Lanes8x4); each activation splat serves 2 groups' 4 halves, the loads are ordered by stores
 * of the sums as in rtileQ8Lanes8. Every row's integers and f32 steps are rtileQ8Lanes8's: the same bits.
 */
function rtileQ8Lanes8x4(p: usize, q: usize, u: usize, w: usize, xp: usize, K: i32, xd: usize, xdStride: usize, nb: i32, y: usize, z: usize, yu: usize, yw: usize): void {
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0), g0 = f32x4.splat(0), g1 = f32x4.splat(0);
  let h0 = f32x4.splat(0), h1 = f32x4.splat(0), k0 = f32x4.splat(0), k1 = f32x4.splat(0);
  const kk = <usize>K;
  for (let b = 0; b < nb; b++, p += 288, q += 288, u += 288, w += 288, xp += 32) {
    const xn = xp + kk; // max(q, 0) at xp, max(-q, 0) at xn
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    let I0: v128, I1: v128, J0: v128, J1: v128, Ps: v128, Ns: v128;
    Ps = v128.load32_splat(xp + 0); Ns = v128.load32_splat(xn + 0);
    I0 = q8lanes(v128.load(p, 32), Ps, Ns); I1 = q8lanes(v128.load(p, 48), Ps, Ns);
    J0 = q8lanes(v128.load(q, 32), Ps, Ns); J1 = q8lanes(v128.load(q, 48), Ps, Ns);
    Ps = v128.load32_splat(xp + 4); Ns = v128.load32_splat(xn + 4);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 64), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 80), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 64), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 80), Ps, Ns));
    v128.store(y, I0); // a store orders the loads after it
    v128.store(y, I1, 16);
    v128.store(z, J0);
    v128.store(z, J1, 16);
    Ps = v128.load32_splat(xp + 8); Ns = v128.load32_splat(xn + 8);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 96), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 112), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 96), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 112), Ps, Ns));
    Ps = v128.load32_splat(xp + 12); Ns = v128.load32_splat(xn + 12);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 128), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 144), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 128), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 144), Ps, Ns));
    v128.store(y, I0); // a store orders the loads after it
    v128.store(y, I1, 16);
    v128.store(z, J0);
    v128.store(z, J1, 16);
    Ps = v128.load32_splat(xp + 16); Ns = v128.load32_splat(xn + 16);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 160), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 176), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 160), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 176), Ps, Ns));
    Ps = v128.load32_splat(xp + 20); Ns = v128.load32_splat(xn + 20);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 192), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 208), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 192), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 208), Ps, Ns));
    v128.store(y, I0); // a store orders the loads after it
    v128.store(y, I1, 16);
    v128.store(z, J0);
    v128.store(z, J1, 16);
    Ps = v128.load32_splat(xp + 24); Ns = v128.load32_splat(xn + 24);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 224), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 240), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 224), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 240), Ps, Ns));
    Ps = v128.load32_splat(xp + 28); Ns = v128.load32_splat(xn + 28);
    I0 = i32x4.add(I0, q8lanes(v128.load(p, 256), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(p, 272), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(q, 256), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(q, 272), Ps, Ns));
    f0 = f32x4.add(f0, f32x4.mul(cvt(I0), f32x4.mul(v128.load(p), dx)));
    f1 = f32x4.add(f1, f32x4.mul(cvt(I1), f32x4.mul(v128.load(p, 16), dx)));
    g0 = f32x4.add(g0, f32x4.mul(cvt(J0), f32x4.mul(v128.load(q), dx)));
    g1 = f32x4.add(g1, f32x4.mul(cvt(J1), f32x4.mul(v128.load(q, 16), dx)));
    Ps = v128.load32_splat(xp + 0); Ns = v128.load32_splat(xn + 0);
    I0 = q8lanes(v128.load(u, 32), Ps, Ns); I1 = q8lanes(v128.load(u, 48), Ps, Ns);
    J0 = q8lanes(v128.load(w, 32), Ps, Ns); J1 = q8lanes(v128.load(w, 48), Ps, Ns);
    Ps = v128.load32_splat(xp + 4); Ns = v128.load32_splat(xn + 4);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 64), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 80), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 64), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 80), Ps, Ns));
    v128.store(yu, I0); // a store orders the loads after it
    v128.store(yu, I1, 16);
    v128.store(yw, J0);
    v128.store(yw, J1, 16);
    Ps = v128.load32_splat(xp + 8); Ns = v128.load32_splat(xn + 8);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 96), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 112), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 96), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 112), Ps, Ns));
    Ps = v128.load32_splat(xp + 12); Ns = v128.load32_splat(xn + 12);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 128), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 144), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 128), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 144), Ps, Ns));
    v128.store(yu, I0); // a store orders the loads after it
    v128.store(yu, I1, 16);
    v128.store(yw, J0);
    v128.store(yw, J1, 16);
    Ps = v128.load32_splat(xp + 16); Ns = v128.load32_splat(xn + 16);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 160), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 176), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 160), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 176), Ps, Ns));
    Ps = v128.load32_splat(xp + 20); Ns = v128.load32_splat(xn + 20);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 192), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 208), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 192), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 208), Ps, Ns));
    v128.store(yu, I0); // a store orders the loads after it
    v128.store(yu, I1, 16);
    v128.store(yw, J0);
    v128.store(yw, J1, 16);
    Ps = v128.load32_splat(xp + 24); Ns = v128.load32_splat(xn + 24);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 224), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 240), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 224), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 240), Ps, Ns));
    Ps = v128.load32_splat(xp + 28); Ns = v128.load32_splat(xn + 28);
    I0 = i32x4.add(I0, q8lanes(v128.load(u, 256), Ps, Ns)); I1 = i32x4.add(I1, q8lanes(v128.load(u, 272), Ps, Ns));
    J0 = i32x4.add(J0, q8lanes(v128.load(w, 256), Ps, Ns)); J1 = i32x4.add(J1, q8lanes(v128.load(w, 272), Ps, Ns));
    h0 = f32x4.add(h0, f32x4.mul(cvt(I0), f32x4.mul(v128.load(u), dx)));
    h1 = f32x4.add(h1, f32x4.mul(cvt(I1), f32x4.mul(v128.load(u, 16), dx)));
    k0 = f32x4.add(k0, f32x4.mul(cvt(J0), f32x4.mul(v128.load(w), dx)));
    k1 = f32x4.add(k1, f32x4.mul(cvt(J1), f32x4.mul(v128.load(w, 16), dx)));
  }
  v128.store(y, f0);
  v128.store(y, f1, 16);
  v128.store(z, g0);
  v128.store(z, g1, 16);
  v128.store(yu, h0);
  v128.store(yu, h1, 16);
  v128.store(yw, k0);
  v128.store(yw, k1, 16);
}

/** Q4_K: the 8 six-bit scales (bytes 0..7) and minimums (8..15) of the super-block at p, as u8 lanes */
// @ts-ignore: decorator
@inline function k4ScalesMins(p: usize): v128 {
  const v = v128.load(p + 4);
  const A = i8x16.swizzle(v, i8x16(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const B = i8x16.swizzle(v, i8x16(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  const lo = v128.and(A, i8x16(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
  const hi = v128.and(i8x16.shr_u(A, 4), i8x16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
  const top = v128.and(i8x16.shr_u(B, 2), i8x16(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48));
  return v128.or(v128.or(lo, hi), top);
}

/**
 * Q4_K sub-blocks 2 jj and 2 jj + 1 (64 weights at q; activations x0..x3; int16 lanes <= 4 * 15 * 127)
 * times their scales (s0, s1: int16 splats): int32x4
 */
// @ts-ignore: decorator
@inline function q4kPair(q: usize, x0: v128, x1: v128, x2: v128, x3: v128, s0: v128, s1: v128): v128 {
  const q0 = v128.load(q), q1 = v128.load(q, 16);
  const lo = i16x8.add(rdot(x0, lowNibbles(q0)), rdot(x1, lowNibbles(q1)));
  const hi = i16x8.add(rdot(x2, highNibbles(q0)), rdot(x3, highNibbles(q1)));
  return i32x4.add(i32x4.dot_i16x8_s(lo, s0), i32x4.dot_i16x8_s(hi, s1));
}

/** the int8 at p as int16 in every lane */
// @ts-ignore: decorator
@inline function splat8(p: usize): v128 {
  return i16x8.extend_low_i8x16_s(v128.load8_splat(p));
}

/**
 * Q6_K: quarter-rows l (0, 1) of half h of the super-block at p times activations x1..x4 (q in 0..63 is
 * the b operand; int16 lanes <= 2 * 63 * 127), each 16 times its sub-block scale: int32x4
 */
// @ts-ignore: decorator
@inline function q6kQuad(p: usize, h: usize, l: usize, x1: v128, x2: v128, x3: v128, x4: v128): v128 {
  const bits = i8x16.splat(0x30); // bits 4, 5 of q, from 2 bits of hb (16-bit shifts: no cross-byte bits survive the mask)
  const lb = l * 16;
  const ql = p + h * 64 + lb, sc = p + 192 + h * 8 + l;
  const a = v128.load(ql), c = v128.load(ql, 32), hb = v128.load(p + 128 + h * 32 + lb);
  const q1 = v128.or(lowNibbles(a), v128.and(i16x8.shl(hb, 4), bits));
  const q2 = v128.or(lowNibbles(c), v128.and(i16x8.shl(hb, 2), bits));
  const q3 = v128.or(highNibbles(a), v128.and(hb, bits));
  const q4 = v128.or(highNibbles(c), v128.and(i16x8.shr_u(hb, 2), bits));
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(rdot(x1, q1), splat8(sc)), i32x4.dot_i16x8_s(rdot(x2, q2), splat8(sc + 2))),
    i32x4.add(i32x4.dot_i16x8_s(rdot(x3, q3), splat8(sc + 4)), i32x4.dot_i16x8_s(rdot(x4, q4), splat8(sc + 6))),
  );
}

/** Q6_K: 32 sum_s sc_s S_s over the 16 sub-blocks (16 int8 scales at sp, activation sums of 16 at s16): int32x4 */
// @ts-ignore: decorator
@inline function q6kOffset(sp: usize, s16: usize): v128 {
  const sc = v128.load(sp);
  return i32x4.shl(i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(sc), v128.load(s16)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(sc), v128.load(s16, 16))), 5);
}

/** Q4_K: the scales (int16 x 8) and minimums (int16 x 8) of a super-block (sm: k4ScalesMins), to t */
// @ts-ignore: decorator
@inline function q4kSmTo(sm: v128, t: usize): void {
  v128.store(t, i16x8.extend_low_i8x16_u(sm));
  v128.store(t, i16x8.extend_high_i8x16_u(sm), 16);
}

/**
 * Decode tile for Q4_K and Q6_K with 8-bit products: 4 rows x the token prepared at xa (same f32 steps
 * as dtile4x1k; inlined per type). The rows are the inner loop, so each 16 activations are loaded once
 * for the 4 rows and few vectors are live (Q4_K scales go through tmp: 128 bytes).
 */
// @ts-ignore: decorator
@inline function rtile4x1k(type: i32, p0: usize, p1: usize, p2: usize, p3: usize, nr: i32, bs: usize, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize, tmp: usize): void {
  let f = f32x4.splat(0);
  const dOff: usize = type == 12 ? 0 : 208;
  const s16 = xa + 3 * <usize>K;
  for (let b = 0; b < nb; b++, p0 += bs, p1 += bs, p2 += bs, p3 += bs) {
    const xb = xa + <usize>b * 256;
    let a0 = i32x4.splat(0), a1 = i32x4.splat(0), a2 = i32x4.splat(0), a3 = i32x4.splat(0);
    if (type == 12) {
      q4kSmTo(k4ScalesMins(p0), tmp); q4kSmTo(k4ScalesMins(p1), tmp + 32); q4kSmTo(k4ScalesMins(p2), tmp + 64); q4kSmTo(k4ScalesMins(p3), tmp + 96);
      for (let jj: usize = 0; jj < 4; jj++) {
        const xj = xb + jj * 64, o = 16 + jj * 32, t = tmp + jj * 4;
        const x0 = v128.load(xj), x1 = v128.load(xj, 16), x2 = v128.load(xj, 32), x3 = v128.load(xj, 48);
        a0 = i32x4.add(a0, q4kPair(p0 + o, x0, x1, x2, x3, v128.load16_splat(t), v128.load16_splat(t, 2)));
        a1 = i32x4.add(a1, q4kPair(p1 + o, x0, x1, x2, x3, v128.load16_splat(t, 32), v128.load16_splat(t, 34)));
        a2 = i32x4.add(a2, q4kPair(p2 + o, x0, x1, x2, x3, v128.load16_splat(t, 64), v128.load16_splat(t, 66)));
        a3 = i32x4.add(a3, q4kPair(p3 + o, x0, x1, x2, x3, v128.load16_splat(t, 96), v128.load16_splat(t, 98)));
      }
    } else {
      for (let h: usize = 0; h < 2; h++) {
        for (let l: usize = 0; l < 2; l++) {
          const xl = xb + h * 128 + l * 16;
          const x1 = v128.load(xl), x2 = v128.load(xl, 32), x3 = v128.load(xl, 64), x4 = v128.load(xl, 96);
          a0 = i32x4.add(a0, q6kQuad(p0, h, l, x1, x2, x3, x4));
          a1 = i32x4.add(a1, q6kQuad(p1, h, l, x1, x2, x3, x4));
          a2 = i32x4.add(a2, q6kQuad(p2, h, l, x1, x2, x3, x4));
          a3 = i32x4.add(a3, q6kQuad(p3, h, l, x1, x2, x3, x4));
        }
      }
      const sb = s16 + <usize>b * 32;
      a0 = i32x4.sub(a0, q6kOffset(p0 + 192, sb));
      a1 = i32x4.sub(a1, q6kOffset(p1 + 192, sb));
      a2 = i32x4.sub(a2, q6kOffset(p2 + 192, sb));
      a3 = i32x4.sub(a3, q6kOffset(p3 + 192, sb));
    }
    const I = hsum4(a0, a1, a2, a3);
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    const dw = f16x4At(p0 + dOff, p1 + dOff, p2 + dOff, p3 + dOff);
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(dw, dx)));
    if (type == 12) {
      const xs = v128.load(xsum + <usize>b * 16);
      const M = hsum4(
        i32x4.dot_i16x8_s(v128.load(tmp, 16), xs), i32x4.dot_i16x8_s(v128.load(tmp, 48), xs),
        i32x4.dot_i16x8_s(v128.load(tmp, 80), xs), i32x4.dot_i16x8_s(v128.load(tmp, 112), xs),
      );
      const dm = f16x4At(p0 + 2, p1 + 2, p2 + 2, p3 + 2);
      f = f32x4.sub(f, f32x4.mul(cvt(M), f32x4.mul(dm, dx)));
    }
  }
  store4(y, f, nr);
}

/**
 * Q4_K's interleaved copy with one row per 32-bit lane (interleave4, relaxed build). Rows in full groups of
 * 8 (halves h = 0, 1 of 4 rows), per super-block a group block of 1216 bytes:
 *   d (f32 x 4) of half 0, of half 1 | dmin (f32 x 4) of half 0, of half 1 | scales of half 0, of half 1:
 *   4 pairs jj x [sc_0,2jj, sc_1,2jj, sc_2,2jj, sc_3,2jj, sc_0,2jj+1, .., sc_3,2jj+1] (u8, 8 bytes; the halves' pairs
 *   side by side: 16 bytes a pair) | minimums of half 0,
 *   of half 1: 4 pairs p x [m_0,2p, m_0,2p+1, m_1,2p, m_1,2p+1, .., m_3,2p+1] (u8, 32 bytes) | quants:
 *   for jj = 0..3 (elements 64jj..64jj+63), v = 0..7: [half 0 vector v | half 1 vector v]
 * where the 16-byte vector v of a half holds bytes 32jj + 4v.. + 3 of each of its rows' 128 quant bytes,
 * row i in bytes 4i..4i+3. A last group of 4 rows (rows % 8 >= 4): group blocks of 608 bytes, the same
 * fields for its 4 rows (d 16 | dmin 16 | scales 32 | minimums 32 | vectors 16 bytes apart); the rows
 * after it stay row by row. The low nibbles of vector v are elements 64jj + 4v.. of sub-block 2jj, the
 * high nibbles those of sub-block 2jj + 1; times those 4 activations splat to every lane, int16 lanes
 * 2i, 2i + 1 hold row i's pair sums (8 products a sub-block: <= 8 * 2 * 15 * 127 = 30480 < 2^15); one
 * i32x4.dot_i16x8_s with the scales widens and scales them for the 4 rows at once (a pair's 8 scales loaded
 * as int16 and doubled into [s0, s0, s1, s1, ..] by one shuffle each: 32 bytes of scales per 4 rows and
 * super-block instead of 64, the copy 5.6 % larger than the rows instead of 11 %). The minimums' term M
 * takes the activation sums of two sub-blocks per dot. The same integers I and M per super-block and the
 * same f32 steps as rtile4x1k: the same bits.
 */

/**
 * Q4_K decode, 4 rows (a half or a last group of 4): d at pd, dmin at pd + 16 h2 (h2: 2 for a half,
 * 1 for a group of 4: the fields of a half are interleaved with the other half's), scales of pair jj at
 * psc + jj ss, minimums at pmn, vectors at pq + (8 jj + v) vs; group blocks bs apart
 */
function rtileQ4KLanes(pd: usize, h2: usize, psc: usize, ss: usize, pmn: usize, pq: usize, vs: usize, bs: usize, nr: i32, xa: usize, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize): void {
  let f = f32x4.splat(0);
  const m = i8x16.splat(0x0f);
  for (let b = 0; b < nb; b++, pd += bs, psc += bs, pmn += bs, pq += bs) {
    const xb = xa + <usize>b * 256;
    let I = i32x4.splat(0);
    for (let jj: usize = 0; jj < 4; jj++) {
      const xj = xb + jj * 64;
      let sl = i16x8.splat(0), sh = i16x8.splat(0);
      for (let v: usize = 0; v < 8; v++) {
        const q = v128.load(pq + (jj * 8 + v) * vs);
        sl = i16x8.add(sl, rdot(v128.load32_splat(xj + v * 4), v128.and(q, m)));
        sh = i16x8.add(sh, rdot(v128.load32_splat(xj + 32 + v * 4), v128.and(i16x8.shr_u(q, 4), m)));
      }
      const S = v128.load8x8_u(psc + jj * ss);
      I = i32x4.add(I, i32x4.add(i32x4.dot_i16x8_s(sl, v128.shuffle<i16>(S, S, 0, 0, 1, 1, 2, 2, 3, 3)), i32x4.dot_i16x8_s(sh, v128.shuffle<i16>(S, S, 4, 4, 5, 5, 6, 6, 7, 7))));
    }
    const xs = xsum + <usize>b * 16;
    let M = i32x4.splat(0);
    for (let k: usize = 0; k < 4; k++) M = i32x4.add(M, i32x4.dot_i16x8_s(v128.load8x8_u(pmn + k * 8), v128.load32_splat(xs + k * 4)));
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(v128.load(pd), dx)));
    f = f32x4.sub(f, f32x4.mul(cvt(M), f32x4.mul(v128.load(pd + 16 * h2), dx)));
  }
  store4(y, f, nr);
}

/**
 * Q6_K's interleaved copy (interleave4, relaxed build) puts one row per 32-bit lane, in the file's 6 bits
 * per quant. For 4 rows (a half h of a group of 8, or a last group of 4) and a super-block:
 *   d (f32 x 4) | scales: 16 sub-blocks s x [sc_0s, sc_1s, sc_2s, sc_3s] (int8, 4 bytes)
 *   | quants: 16 sub-blocks s x 3 vectors V0, V1, V2 (16 bytes each)
 * where byte j of lane i (row i) of sub-block s's vectors holds, with q(e) the row's quant (0..63) of
 * element 16 s + e: V0 = q(j) | (q(4 + j) >> 4) << 6, V1 = q(8 + j) | (q(12 + j) >> 4) << 6,
 * V2 = (q(4 + j) & 15) | (q(12 + j) & 15) << 4. So elements j, 8 + j are V0 & 63, V1 & 63, and elements
 * 4 + j, 12 + j are (V2 & 15) | (V0 >> 2 & 48), (V2 >> 4 & 15) | (V1 >> 2 & 48) (11 operations per 64
 * weights; 16-bit shifts: the masks drop the bits from the neighbouring byte).
 * Rows in full groups of 8, per super-block a group block of 1696 bytes, the two halves' fields side by
 * side: d of half 0, of half 1 (32) | per sub-block the scales of half 0, of half 1 (16 x 8) | per
 * sub-block V0 of half 0, V0 of half 1, V1 .., V1 .., V2 .., V2 .. (16 x 96). A last group of 4 rows
 * (rows % 8 >= 4): group blocks of 848 bytes (d 16 | scales 16 x 4 | quants 16 x 48); the rows after it
 * stay row by row (rtile4x1k). The copy is 8 bytes per 4 rows and super-block (1 %) larger than the
 * rows (f32 d). A sub-block's scales are read as 8 bytes (the next 4 belong to the block: scales come
 * before quants) widened to int16 and doubled into [sc_0s, sc_0s, sc_1s, sc_1s, ..] by one shuffle
 * (q6Scales): 64 bytes fewer per 4 rows and super-block (7 % of the copy) for one operation per 64 weights.
 * Times the 4 activations of elements 4k.. splat to every lane (i16x8.relaxed_dot_i8x16_i7x16_s, q in
 * 0..63 the 7-bit operand: each pair sum <= 2 * 63 * 127 < 2^15), int16 lanes 2i, 2i + 1 hold row i's
 * sums over the elements {0, 1, 4, 5, ..} and {2, 3, 6, 7, ..} of the sub-block: 8 products each, whose
 * sum of q x can exceed 2^15: the adds wrap (i16x8.add is modulo 2^16) and the offsets 32 sum x of the same
 * lanes (prepActs8) are subtracted, which leaves sum (q - 32) x, |.| <= 8 * 32 * 127 = 32512 < 2^15: the
 * wrapped value is exact. One i32x4.dot_i16x8_s with the doubled scales then gives sc_s sum (q - 32) x per
 * row; summed over the 16 sub-blocks that is the integer I of rtile4x1k (sum_s sc_s (q . x)_s -
 * 32 sum_s sc_s S_s), and the f32 step per block is the same: the same bits.
 */

/** Q6_K: the int16 lane sums sum (q - 32) x of sub-block vectors V0, V1, V2 against the splat record at x */
// @ts-ignore: decorator
@inline function q6lanes(V0: v128, V1: v128, V2: v128, x: usize): v128 {
  const m6 = i8x16.splat(63), m4 = i8x16.splat(15), h2 = i8x16.splat(48);
  let S = rdot(v128.load(x), v128.and(V0, m6));
  S = i16x8.add(S, rdot(v128.load(x, 16), v128.or(v128.and(V2, m4), v128.and(i16x8.shr_u(V0, 2), h2))));
  S = i16x8.add(S, rdot(v128.load(x, 32), v128.and(V1, m6)));
  S = i16x8.add(S, rdot(v128.load(x, 48), v128.or(v128.and(i16x8.shr_u(V2, 4), m4), v128.and(i16x8.shr_u(V1, 2), h2))));
  return i16x8.sub(S, v128.load(x, 64));
}

/** Q6_K: a sub-block's 4 int8 scales at p (one a row; 4 more bytes readable after them) doubled into int16 lanes [s0, s0, s1, s1, ..] */
// @ts-ignore: decorator
@inline function q6Scales(p: usize): v128 {
  const s = v128.load8x8_s(p);
  return v128.shuffle<i16>(s, s, 0, 0, 1, 1, 2, 2, 3, 3);
}

/**
 * Q6_K decode, 4 rows (a half of a group of 8, or a last group of 4): d at pd, the scales of sub-block s at
 * psc + s ss, its V0 at pq + s qs, V1 at + vs, V2 at + 2 vs; group blocks bs bytes apart
 */
function r6lanes(pd: usize, psc: usize, pq: usize, ss: usize, qs: usize, vs: usize, bs: usize, nr: i32, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, y: usize): void {
  let f = f32x4.splat(0);
  const xr = xa + splatsAt(<usize>K);
  for (let b = 0; b < nb; b++, pd += bs, psc += bs, pq += bs) {
    const xb = xr + <usize>b * 1280;
    let I = i32x4.splat(0);
    for (let s: usize = 0; s < 16; s++) {
      const v = pq + s * qs;
      const S = q6lanes(v128.load(v), v128.load(v + vs), v128.load(v + 2 * vs), xb + s * 80);
      I = i32x4.add(I, i32x4.dot_i16x8_s(S, q6Scales(psc + s * ss)));
    }
    const dx = v128.load32_splat(xd + <usize>b * xdStride);
    f = f32x4.add(f, f32x4.mul(cvt(I), f32x4.mul(v128.load(pd), dx)));
  }
  store4(y, f, nr);
}

/** Q6_K: one half's I over the 16 sub-blocks of a group block (q6Round): vectors at v, splat records x, scales sc */
// @ts-ignore: decorator
@inline function r6half(v: usize, x: usize, sc: usize): v128 {
  const m6 = i8x16.splat(63), m4 = i8x16.splat(15), h2 = i8x16.splat(48);
  let I = i32x4.splat(0);
  const ve = v + 16 * 96;
  for (; v < ve; v += 96, x += 80, sc += 8) {
    const U = v128.load(v), W = v128.load(v, 32), Z = v128.load(v, 64);
    let S = rdot(v128.load(x), v128.and(U, m6));
    S = i16x8.add(S, rdot(v128.load(x, 16), v128.or(v128.and(Z, m4), v128.and(i16x8.shr_u(U, 2), h2))));
    S = i16x8.add(S, rdot(v128.load(x, 32), v128.and(W, m6)));
    S = i16x8.add(S, rdot(v128.load(x, 48), v128.or(v128.and(i16x8.shr_u(Z, 4), m4), v128.and(i16x8.shr_u(W, 2), h2))));
    I = i32x4.add(I, i32x4.dot_i16x8_s(i16x8.sub(S, v128.load(x, 64)), q6Scales(sc)));
  }
  return I;
}

/**
 * Q4_K decode, one group block of a full group of 8 rows (1216 bytes at p; xr: the block's splat records, xs:
 * its activation sums, dx: its activation scale): each activation vector serves both halves; the rows' f32 sums
 * f0, f1 are kept at fa, fa + 16 between group blocks (read, updated, written back: exact). Written for few
 * machine instructions per weight (V8's code for this loop is bound by the instructions it issues). TurboFan
 * emits a loop body's loads ahead of its arithmetic (and merges loads of one address), so a body holding 16
 * weight vectors and 16 activation splats spilled most of them: here a half's sums are stored to t (scratch)
 * before the other half's vectors are loaded (a store orders the loads after it), and the 4-byte activation
 * splats are whole vectors of the splat records (prepActs8) at constant offsets from one pointer: loads
 * instead of one shuffle (an ALU operation) per 32 weights, 12-17 % less time in L2 than shuffling vectors of
 * 16 activations.
 */
// @ts-ignore: decorator
@inline function q4kBlock8(p: usize, xr: usize, xs: usize, dx: v128, t: usize, fa: usize): void {
  const m = i8x16.splat(0x0f);
  let I0 = i32x4.splat(0), I1 = i32x4.splat(0);
  let qj = p + 192, sc = p + 64;
  const qe = qj + 1024;
  for (; qj < qe; xr += 320, qj += 256, sc += 16) {
    let sl: v128, sh: v128;
    {
      const q0 = v128.load(qj, 0); const q1 = v128.load(qj, 32); const q2 = v128.load(qj, 64); const q3 = v128.load(qj, 96);
      sl = rdot(v128.load(xr), v128.and(q0, m));
      sh = rdot(v128.load(xr, 160), v128.and(i16x8.shr_u(q0, 4), m));
      sl = i16x8.add(sl, rdot(v128.load(xr, 16), v128.and(q1, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 176), v128.and(i16x8.shr_u(q1, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 32), v128.and(q2, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 192), v128.and(i16x8.shr_u(q2, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 48), v128.and(q3, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 208), v128.and(i16x8.shr_u(q3, 4), m)));
      v128.store(t, sl);
      v128.store(t, sh, 16);
    }
    {
      const q4 = v128.load(qj, 128); const q5 = v128.load(qj, 160); const q6 = v128.load(qj, 192); const q7 = v128.load(qj, 224);
      sl = i16x8.add(sl, rdot(v128.load(xr, 80), v128.and(q4, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 240), v128.and(i16x8.shr_u(q4, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 96), v128.and(q5, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 256), v128.and(i16x8.shr_u(q5, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 112), v128.and(q6, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 272), v128.and(i16x8.shr_u(q6, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 128), v128.and(q7, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 288), v128.and(i16x8.shr_u(q7, 4), m)));
      const S = v128.load8x8_u(sc, 0);
      I0 = i32x4.add(I0, i32x4.dot_i16x8_s(sl, v128.shuffle<i16>(S, S, 0, 0, 1, 1, 2, 2, 3, 3)));
      I0 = i32x4.add(I0, i32x4.dot_i16x8_s(sh, v128.shuffle<i16>(S, S, 4, 4, 5, 5, 6, 6, 7, 7)));
      v128.store(t, I0, 0);
    }
    {
      const q0 = v128.load(qj, 16); const q1 = v128.load(qj, 48); const q2 = v128.load(qj, 80); const q3 = v128.load(qj, 112);
      sl = rdot(v128.load(xr), v128.and(q0, m));
      sh = rdot(v128.load(xr, 160), v128.and(i16x8.shr_u(q0, 4), m));
      sl = i16x8.add(sl, rdot(v128.load(xr, 16), v128.and(q1, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 176), v128.and(i16x8.shr_u(q1, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 32), v128.and(q2, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 192), v128.and(i16x8.shr_u(q2, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 48), v128.and(q3, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 208), v128.and(i16x8.shr_u(q3, 4), m)));
      v128.store(t, sl);
      v128.store(t, sh, 16);
    }
    {
      const q4 = v128.load(qj, 144); const q5 = v128.load(qj, 176); const q6 = v128.load(qj, 208); const q7 = v128.load(qj, 240);
      sl = i16x8.add(sl, rdot(v128.load(xr, 80), v128.and(q4, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 240), v128.and(i16x8.shr_u(q4, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 96), v128.and(q5, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 256), v128.and(i16x8.shr_u(q5, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 112), v128.and(q6, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 272), v128.and(i16x8.shr_u(q6, 4), m)));
      sl = i16x8.add(sl, rdot(v128.load(xr, 128), v128.and(q7, m)));
      sh = i16x8.add(sh, rdot(v128.load(xr, 288), v128.and(i16x8.shr_u(q7, 4), m)));
      const S = v128.load8x8_u(sc, 8);
      I1 = i32x4.add(I1, i32x4.dot_i16x8_s(sl, v128.shuffle<i16>(S, S, 0, 0, 1, 1, 2, 2, 3, 3)));
      I1 = i32x4.add(I1, i32x4.dot_i16x8_s(sh, v128.shuffle<i16>(S, S, 4, 4, 5, 5, 6, 6, 7, 7)));
      v128.store(t, I1, 16);
    }
  }
  let X = v128.load32_splat(xs);
  let M0 = i32x4.dot_i16x8_s(v128.load8x8_u(p + 128), X), M1 = i32x4.dot_i16x8_s(v128.load8x8_u(p + 160), X);
  X = v128.load32_splat(xs + 4);
  M0 = i32x4.add(M0, i32x4.dot_i16x8_s(v128.load8x8_u(p + 136), X));
  M1 = i32x4.add(M1, i32x4.dot_i16x8_s(v128.load8x8_u(p + 168), X));
  X = v128.load32_splat(xs + 8);
  M0 = i32x4.add(M0, i32x4.dot_i16x8_s(v128.load8x8_u(p + 144), X));
  M1 = i32x4.add(M1, i32x4.dot_i16x8_s(v128.load8x8_u(p + 176), X));
  X = v128.load32_splat(xs + 12);
  M0 = i32x4.add(M0, i32x4.dot_i16x8_s(v128.load8x8_u(p + 152), X));
  M1 = i32x4.add(M1, i32x4.dot_i16x8_s(v128.load8x8_u(p + 184), X));
  let f0 = v128.load(fa), f1 = v128.load(fa, 16);
  f0 = f32x4.add(f0, f32x4.mul(cvt(I0), f32x4.mul(v128.load(p), dx)));
  f0 = f32x4.sub(f0, f32x4.mul(cvt(M0), f32x4.mul(v128.load(p, 32), dx)));
  f1 = f32x4.add(f1, f32x4.mul(cvt(I1), f32x4.mul(v128.load(p, 16), dx)));
  f1 = f32x4.sub(f1, f32x4.mul(cvt(M1), f32x4.mul(v128.load(p, 48), dx)));
  v128.store(fa, f0);
  v128.store(fa, f1, 16);
}

/**
 * Q4_K decode, one round of S strands (rtileStrands): the full group of 8 rows at p and the S - 1 groups sb,
 * 2 sb, .. bytes after it (outputs y, y + sy, ..), one group block of each in turn, so S sequential streams
 * are read at once. The rows' f32 sums are kept in tmp (32 S bytes; 32 more for q4kBlock8's ordering stores).
 * (Steps of 64 elements of every strand in turn instead of whole group blocks: 0.89-0.98x from DRAM.)
 */
function q4kRound(p: usize, sb: usize, S: i32, y: usize, sy: usize, xr: usize, xs: usize, dp: usize, xdStride: usize, nb: i32, tmp: usize): void {
  const t = tmp + <usize>S * 32;
  memory.fill(tmp, 0, <usize>S * 32);
  for (let b = 0; b < nb; b++, xr += 1280, xs += 16, dp += xdStride, p += 1216) {
    const dx = v128.load32_splat(dp);
    let ps = p;
    for (let fa = tmp; fa < t; fa += 32, ps += sb) q4kBlock8(ps, xr, xs, dx, t, fa);
  }
  roundOut(tmp, t, y, sy);
}

/**
 * Q6_K decode, one round of S strands (as q4kRound), by halves: per group block, half 0's 4 rows of every
 * strand in turn (r6half reads the 16 sub-blocks' vectors of its half: it is the first to touch all the
 * block's lines), then half 1's (the lines already read). Each row's operations are r6lanes's, in its order.
 * Written for few machine instructions per weight (V8's code for this loop is bound by the instructions it
 * issues, not by its vector arithmetic): TurboFan emits a loop body's loads first and its arithmetic after
 * them, so one iteration of r6half is one half's sub-block (its 9 loads and the arithmetic on them fit V8's
 * 16 vector registers: no spills), its pointers stepped and every vector load at a constant offset. From DRAM
 * 1.03-1.15x the whole group blocks' lockstep, in cache the same; halves cut in segments of 4 or 8 sub-blocks:
 * 1.09-1.21x from DRAM, 0.89x in cache (bench matvec-dram).
 */
function q6Round(p: usize, sb: usize, S: i32, y: usize, sy: usize, xr: usize, dp: usize, xdStride: usize, nb: i32, tmp: usize): void {
  const t = tmp + <usize>S * 32;
  memory.fill(tmp, 0, <usize>S * 32);
  for (let b = 0; b < nb; b++, xr += 1280, dp += xdStride, p += 1696) {
    const dx = v128.load32_splat(dp);
    let ps = p;
    for (let fa = tmp; fa < t; fa += 32, ps += sb) {
      const I0 = r6half(ps + 160, xr, ps + 32);
      v128.store(fa, f32x4.add(v128.load(fa), f32x4.mul(cvt(I0), f32x4.mul(v128.load(ps), dx))));
    }
    ps = p;
    for (let fa = tmp; fa < t; fa += 32, ps += sb) {
      const I1 = r6half(ps + 176, xr, ps + 36);
      v128.store(fa, f32x4.add(v128.load(fa, 16), f32x4.mul(cvt(I1), f32x4.mul(v128.load(ps, 16), dx))), 16);
    }
  }
  roundOut(tmp, t, y, sy);
}

/** a round's sums (32 bytes a group from tmp to t) to the outputs y, y + sy, .. */
// @ts-ignore: decorator
@inline function roundOut(tmp: usize, t: usize, y: usize, sy: usize): void {
  for (let fa = tmp; fa < t; fa += 32, y += sy) {
    v128.store(y, v128.load(fa));
    v128.store(y, v128.load(fa, 16), 16);
  }
}

/**
 * Q4_K (type 12) or Q6_K (14) decode, G full groups of 8 rows (group blocks of 1216 / 1696 bytes, nb per group,
 * groups gb bytes apart from p; outputs y, 32 bytes a group) read in S strands (1 <= S <= G): strand s holds
 * groups s q .. s q + q - 1 (q = G / S), their rounds (q4kRound / q6Round) one after another; the G % S groups after the
 * strands one by one (rounds of 1). One thread's single stream was ~1/3 of the tile's speed from cache when
 * its weights came from DRAM: S streams keep more of the hardware prefetcher's lines in flight (bench
 * matvec-dram). Every row's operations, and their order, do not depend on S: the same bits.
 * tmp: 32 (S + 1) bytes of scratch.
 */
// @ts-ignore: decorator
@inline function rtileStrands(type: i32, p: usize, gb: usize, G: i32, S: i32, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize, tmp: usize): void {
  const q = G / S;
  const sb = <usize>q * gb, sy = <usize>q * 32;
  const xr0 = xa + splatsAt(<usize>K);
  for (let i = 0; i < q; i++, p += gb, y += 32) {
    if (type == 12) q4kRound(p, sb, S, y, sy, xr0, xsum, xd, xdStride, nb, tmp);
    else q6Round(p, sb, S, y, sy, xr0, xd, xdStride, nb, tmp);
  }
  p += <usize>(S - 1) * sb;
  y += <usize>(S - 1) * sy;
  for (let g = q * S; g < G; g++, p += gb, y += 32) {
    if (type == 12) q4kRound(p, 0, 1, y, 0, xr0, xsum, xd, xdStride, nb, tmp);
    else q6Round(p, 0, 1, y, 0, xr0, xd, xdStride, nb, tmp);
  }
}

function rtileQ4KStrands(p: usize, gb: usize, G: i32, S: i32, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize, tmp: usize): void {
  rtileStrands(12, p, gb, G, S, xa, K, xd, xdStride, nb, xsum, y, tmp);
}

function r6Strands(p: usize, gb: usize, G: i32, S: i32, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, y: usize, tmp: usize): void {
  rtileStrands(14, p, gb, G, S, xa, K, xd, xdStride, nb, 0, y, tmp);
}

/** rtile4x1q32 / rtile4x1k / r6lanes compiled once per weight type and layout (no type branches in the loops) */
function rtile(type: i32, p0: usize, p1: usize, p2: usize, p3: usize, nr: i32, bs: usize, xa: usize, K: i32, xd: usize, xdStride: usize, nb: i32, xsum: usize, y: usize, tmp: usize): void {
  switch (type) {
    case 8: rtile4x1q32(8, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, false); break;
    case 2: rtile4x1q32(2, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, false); break;
    case 6: rtile4x1q32(6, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, false); break;
    case 20: rtile4x1q32(20, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, false); break;
    case 106: rtile4x1q32(6, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, true); break;
    case 120: rtile4x1q32(20, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, true); break;
    case 12: rtile4x1k(12, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, tmp); break;
    case 114: r6lanes(p0, p0 + 16, p0 + 80, 4, 48, 16, bs, nr, xa, K, xd, xdStride, nb, y); break;
    default: rtile4x1k(14, p0, p1, p2, p3, nr, bs, xa, K, xd, xdStride, nb, xsum, y, tmp);
  }
}

/** bytes of int scratch per weight row of K elements */
export function intRowScratch(type: i32, K: i32): i32 {
  const nb = K / intBlock(type);
  return max(K * 2 + nb * 4 + (hasMins(type) ? nb * 20 : 0) + 16, prefillRowBytes(type, K));
}

/**
 * Q4_K's copy (rtileQ4KLanes): of the 4 super-blocks at blk, blk + rb, .. (4 rows), d and dmin as f32 at pd,
 * pdm, the scales at psc and the minimums at pmn in the tile's order; tmp: 64 bytes of scratch (the
 * 6-bit values unpacked, k4ScalesMins), which the quants overwrite afterwards
 */
function q4kFields(blk: usize, rb: usize, pd: usize, pdm: usize, psc: usize, ss: usize, pmn: usize, tmp: usize): void {
  for (let i: usize = 0; i < 4; i++) {
    const r = blk + i * rb;
    store<f32>(pd + i * 4, f16At(r));
    store<f32>(pdm + i * 4, f16At(r + 2));
    v128.store(tmp + i * 16, k4ScalesMins(r));
  }
  for (let i: usize = 0; i < 4; i++) {
    const sm = tmp + i * 16;
    for (let j: usize = 0; j < 8; j++) {
      store<u8>(psc + (j >> 1) * ss + (j & 1) * 4 + i, load<u8>(sm + j));
      store<u8>(pmn + (j >> 1) * 8 + i * 2 + (j & 1), load<u8>(sm + 8 + j));
    }
  }
}

/** Q4_K's copy: the quants of the 4 super-blocks at blk, blk + rb, .., vector v of jj at pq + (8 jj + v) vs */
function q4kQuants(blk: usize, rb: usize, pq: usize, vs: usize): void {
  for (let jj: usize = 0; jj < 4; jj++)
    for (let v: usize = 0; v < 8; v++)
      for (let i: usize = 0; i < 4; i++) store<u32>(pq + (jj * 8 + v) * vs + i * 4, load<u32>(blk + i * rb + 16 + jj * 32 + v * 4));
}

/**
 * Copy `rows` rows of W (GGML type `type`, rowBytes each, blocks of bs bytes) from src to dst interleaved by 4 rows, the
 * decode tiles' layout: rows 4g..4g+3 occupy dst + 4 g rowBytes, block b of row 4g + i at
 * (4 b + i) bs within it; a last group of fewer than 4 rows stays row by row. The same bytes, in the
 * order the 4-row tile reads them (one sequential stream instead of 4: about 2x the DRAM throughput
 * for rows of 1.5 KiB and more on this machine).
 */
export function interleave4(src: usize, dst: usize, rows: i32, rowBytes: i32, bs: i32, type: i32): void {
  const rb = <usize>rowBytes, b = <usize>bs;
  const nb = rb / b;
  const full = rows & ~3;
  if (b == 18 || b == 22 || b == 34) {
    if (ASC_FEATURE_RELAXED_SIMD) {
      // block-32 types in the relaxed build: per block of a group, the 4 rows' fp16 scales as f32
      // (exact), then the 4 blocks without their scales (decodeExtra32: 8 bytes more per group block)
      let d = dst;
      let g0 = 0;
      // Q4_0 and Q8_0: one row per 32-bit lane (4 and 8 vectors of 4 bytes per block), groups of 8 rows then
      // one of 4 (rtileQ4Lanes, rtileQ8Lanes)
      const nv: usize = (b - 2) >> 2;
      if (type == 2 || type == 8) {
        const full8 = rows & ~7;
        for (let g = 0; g < full8; g += 8) {
          const s0 = src + <usize>g * rb;
          for (let k: usize = 0; k < nb; k++) {
            for (let i: usize = 0; i < 8; i++) store<f32>(d + i * 4, f16At(s0 + i * rb + k * b));
            d += 32;
            for (let v: usize = 0; v < nv; v++)
              for (let i: usize = 0; i < 8; i++, d += 4) store<u32>(d, load<u32>(s0 + i * rb + k * b + 2 + v * 4));
          }
        }
        g0 = full8;
      }
      for (let g = g0; g < full; g += 4) {
        const s0 = src + <usize>g * rb;
        for (let k: usize = 0; k < nb; k++) {
          for (let i: usize = 0; i < 4; i++) store<f32>(d + i * 4, f16At(s0 + i * rb + k * b));
          d += 16;
          if (type == 2 || type == 8) {
            for (let v: usize = 0; v < nv; v++)
              for (let i: usize = 0; i < 4; i++, d += 4) store<u32>(d, load<u32>(s0 + i * rb + k * b + 2 + v * 4));
          } else {
            for (let i: usize = 0; i < 4; i++, d += b - 2) memory.copy(d, s0 + i * rb + k * b + 2, b - 2);
          }
        }
      }
      if (full < rows) memory.copy(d, src + <usize>full * rb, <usize>(rows - full) * rb);
      return;
    }
  }
  if (b == 144 || b == 210) {
    if (ASC_FEATURE_RELAXED_SIMD) {
      // Q4_K / Q6_K in the relaxed build: per super-block of a group, the 4 rows' d (and dmin) as f32
      // (exact), then Q4_K: the layout of rtileQ4KLanes; Q6_K: the layout of r6lanes (decodeExtra32: 32 /
      // 8 bytes more per group block)
      let d = dst;
      let g0 = 0;
      if (b == 210) {
        // Q6_K: groups of 8 rows (q6Round, r6Strands), then one of 4
        const full8 = rows & ~7;
        for (let g = 0; g < full8; g += 8) {
          const s0 = src + <usize>g * rb;
          for (let k: usize = 0; k < nb; k++, d += 1696)
            for (let h: usize = 0; h < 2; h++) q6Fields(s0 + h * 4 * rb + k * b, rb, d + h * 16, d + 32 + h * 4, 8, d + 160 + h * 16, 96, 32);
        }
        g0 = full8;
      }
      if (b == 144) {
        // Q4_K: groups of 8 rows (q4kBlock8, rtileQ4KStrands), then one of 4
        const full8 = rows & ~7;
        for (let g = 0; g < full8; g += 8) {
          const s0 = src + <usize>g * rb;
          for (let k: usize = 0; k < nb; k++, d += 1216) {
            const blk = s0 + k * b;
            for (let h: usize = 0; h < 2; h++) q4kFields(blk + h * 4 * rb, rb, d + h * 16, d + 32 + h * 16, d + 64 + h * 8, 16, d + 128 + h * 32, d + 192 + h * 64);
            for (let h: usize = 0; h < 2; h++) q4kQuants(blk + h * 4 * rb, rb, d + 192 + h * 16, 32);
          }
        }
        g0 = full8;
      }
      for (let g = g0; g < full; g += 4) {
        const s0 = src + <usize>g * rb;
        for (let k: usize = 0; k < nb; k++) {
          if (b == 144) {
            // Q4_K: the layout of rtileQ4KLanes (groups of 4 here; interleaveQ4K makes the groups of 8)
            const blk = s0 + k * b;
            q4kFields(blk, rb, d, d + 16, d + 32, 8, d + 64, d + 96);
            q4kQuants(blk, rb, d + 96, 16);
            d += 608;
          } else {
            // Q6_K: the layout of r6lanes (a last group of 4)
            q6Fields(s0 + k * b, rb, d, d + 16, 4, d + 80, 48, 16);
            d += 848;
          }
        }
      }
      if (full < rows) memory.copy(d, src + <usize>full * rb, <usize>(rows - full) * rb);
      return;
    }
  }
  for (let g = 0; g < full; g += 4) {
    const s0 = src + <usize>g * rb;
    let d = dst + <usize>g * rb;
    for (let k: usize = 0; k < nb; k++)
      for (let i: usize = 0; i < 4; i++, d += b) {
        // 16-byte pieces, the last one ending at the block's end (blocks are >= 16 bytes)
        const s = s0 + i * rb + k * b;
        let o: usize = 0;
        for (; o + 16 < b; o += 16) v128.store(d + o, v128.load(s + o));
        v128.store(d + b - 16, v128.load(s + b - 16));
      }
  }
  if (full < rows) memory.copy(dst + <usize>full * rb, src + <usize>full * rb, <usize>(rows - full) * rb);
}

/**
 * Q6_K's copy (r6lanes): of the 4 super-blocks at blk, blk + rb, .. (4 rows), d as f32 at pd, the scales of
 * sub-block s at psc + s ss, its vectors V0, V1, V2 at pq + s qs, + vs, + 2 vs
 */
function q6Fields(blk: usize, rb: usize, pd: usize, psc: usize, ss: usize, pq: usize, qs: usize, vs: usize): void {
  for (let i: usize = 0; i < 4; i++) {
    const r = blk + i * rb;
    store<f32>(pd + i * 4, f16At(r + 208));
    for (let sb: usize = 0; sb < 16; sb++) {
      store<u8>(psc + sb * ss + i, load<u8>(r + 192 + sb));
      const v = pq + sb * qs + i * 4, e = sb * 16;
      for (let j: usize = 0; j < 4; j++) {
        const qa = q6At(r, e + j), qb = q6At(r, e + 4 + j), qc = q6At(r, e + 8 + j), qd = q6At(r, e + 12 + j);
        store<u8>(v + j, <u8>(qa | (qb >> 4) << 6));
        store<u8>(v + vs + j, <u8>(qc | (qd >> 4) << 6));
        store<u8>(v + 2 * vs + j, <u8>((qb & 15) | (qd & 15) << 4));
      }
    }
  }
}

/** the quant (0..63) of element e (0..255) of the Q6_K super-block at blk (rowQ6_K's layout) */
function q6At(blk: usize, e: usize): u32 {
  const h = e >> 7, quarter = (e & 127) >> 5, l = e & 31;
  const lb = <u32>load<u8>(blk + h * 64 + l + (quarter & 1) * 32);
  const nib = quarter >= 2 ? lb >> 4 : lb & 15;
  const hb = (<u32>load<u8>(blk + 128 + h * 32 + l) >> (2 * <u32>quarter)) & 3;
  return nib | (hb << 4);
}

/**
 * Bytes the interleaved copy adds per full group of 4 rows and block, 0 for none (relaxed build: the
 * block-32 types' f32 scales 8; Q4_K's f32 d and dmin, unpacked scales and minimums 32; Q6_K's f32 d 8): the
 * copy takes rows x rowBytes + (rows >> 2) x blocks x this.
 */
export function decodeExtra32(type: i32): i32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  if (type == 2 || type == 6 || type == 8 || type == 20) return 8;
  return type == 12 ? 32 : type == 14 ? 8 : 0;
}

/**
 * Rows of the interleaved copy's full groups (interleave4): 8 for Q4_0, Q4_K and Q6_K in the relaxed build, else 4. Weights
 * stacked end to end for one dispatch (fuseDecode) must each have a multiple of this many rows.
 */
export function decodeGroupRows(type: i32): i32 {
  return ASC_FEATURE_RELAXED_SIMD && (type == 2 || type == 8 || type == 12 || type == 14) ? 8 : 4;
}

/** block bytes of the decode tiles' weight types (interleave4), 0 for the others */
export function decodeBlockBytes(type: i32): i32 {
  switch (type) {
    case 8: return 34;
    case 2: case 20: return 18;
    case 6: return 22;
    case 12: return 144;
    case 14: return 210;
    case 0: return 16; // F32 (one-token matmul, copies made by prepareDecode only)
    default: return 0;
  }
}

// ---------------------------------------------------------------------------------------------------
// Prefill (4 tokens and more) for Q4_K and Q6_K with 8-bit products (relaxed build only).
// The tokens are packed by quads (prepQuads, once per matmul): per quad of 4 tokens, every 4 consecutive
// elements of the 4 tokens as 16 bytes [t0 e..e+3 | t1 e..e+3 | t2 .. | t3 ..] (int8 q), then the quad's
// sums of 16 and of 32 quants, by pairs of sub-blocks: 16 bytes [t0 S(s), t0 S(s+1) | t1 .. | t2 .. | t3 ..]
// (int16). Two quads side by side form an octet (session 36): every 16-byte vector of quad 2h at
// 32 i, of quad 2h + 1 at 32 i + 16 (quants, then the sums of 16, then those of 32), so a tile's step
// reads both quads at one pointer. A chunk's weight rows are unpacked into a panel (kpanel) by pairs of
// rows, per pair and super-block KP2 bytes: each row's header of 64 bytes, 0 d (f32) | 4 dmin (f32,
// Q4_K) | 16 the sub-block scales as int16 (Q6_K 16, Q4_K 8) | 48 Q4_K's 8 minimums (int16), then the
// 2 x 256 quants as bytes (Q4_K 0..15, Q6_K 0..63) interleaved by 4 elements (element e of row i at
// 128 + 8 (e / 4) + 4 i + e % 4): one pointer per step for the two rows' splats too. With one
// pointer per stream the step has no address arithmetic (the 4-stream version spent ~6 scalar lea per
// 4 products; session 36: 1.12-1.18x Q4_K, 1.26-1.35x Q6_K).
// Then 4 bytes of a row (loaded as a splat) against a quad vector: i16x8.relaxed_dot_i8x16_i7x16_s (q in
// 0..63 is its 7-bit operand) gives int16 lanes 2t, 2t + 1 of token t, so lanes stay tokens: no horizontal
// sums. The int16 lanes are summed over a sub-block's steps (Q4_K 8 steps of 4: <= 8 * 2 * 15 * 127 =
// 30480; Q6_K 2 steps: <= 2 * 2 * 63 * 127 = 32004) and multiplied by the sub-block's scale into int32
// lanes (i32x4.dot_i16x8_s with the scale splat: also adds lanes 2t and 2t + 1). Q6_K's -32 offset is
// 32 sum_s sc(s) S16(s), Q4_K's M = sum_j m(j) S32(j), both exact in int32: every block's I and M is the
// integer itile and intMatmulRef sum, and the f32 steps per block are itile's (f32 lanes = 4 tokens):
// the same bits.

// @ts-ignore: decorator
@inline const KP: usize = 320;
// @ts-ignore: decorator
@inline const KP2: usize = 640;


/** bytes per quad of 4 tokens of K elements (prepQuads) */
export function quadBytes(K: i32): i32 {
  return 5 * K + K / 4;
}

/**
 * pack Tp tokens (a multiple of 4) of int16 q (K per token at q) and their sums of 32 (int16, K / 32 per
 * token at s32) by quads at dst (above)
 */
export function prepQuads(q: usize, s32: usize, Tp: i32, K: i32, dst: usize): void {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const kk = <usize>K;
    const QS = <usize>quadBytes(K);
    for (let g = 0; g < Tp; g += 4) {
      const q0 = q + <usize>g * kk * 2, q1 = q0 + kk * 2, q2 = q1 + kk * 2, q3 = q2 + kk * 2;
      // quad g / 4: half (g / 4) & 1 of octet g / 8 (every 16-byte vector of the quad 32 bytes apart)
      const d = dst + <usize>(g >> 3) * 2 * QS + <usize>((g >> 2) & 1) * 16;
      const s16 = d + 8 * kk, s32o = s16 + 2 * kk;
      const one = i8x16.splat(1);
      for (let e: usize = 0; e < kk; e += 16) {
        const a0 = v128.load(q0 + e * 2), b0 = v128.load(q0 + e * 2, 16);
        const a1 = v128.load(q1 + e * 2), b1 = v128.load(q1 + e * 2, 16);
        const a2 = v128.load(q2 + e * 2), b2 = v128.load(q2 + e * 2, 16);
        const a3 = v128.load(q3 + e * 2), b3 = v128.load(q3 + e * 2, 16);
        const v0 = i8x16.narrow_i16x8_s(a0, b0), v1 = i8x16.narrow_i16x8_s(a1, b1);
        const v2 = i8x16.narrow_i16x8_s(a2, b2), v3 = i8x16.narrow_i16x8_s(a3, b3);
        const A = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), B = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
        const C = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7), D = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
        const o = d + e * 8;
        v128.store(o, v128.shuffle<i32>(A, B, 0, 1, 4, 5));
        v128.store(o, v128.shuffle<i32>(A, B, 2, 3, 6, 7), 32);
        v128.store(o, v128.shuffle<i32>(C, D, 0, 1, 4, 5), 64);
        v128.store(o, v128.shuffle<i32>(C, D, 2, 3, 6, 7), 96);
        // Q6_K's offsets of the sub-block of 16 at e: 32 times the lane sums of its 4 steps (int16 lanes 2t,
        // 2t + 1: 8 quants of token t each, <= 32 * 8 * 127 = 32512)
        const O = i16x8.add(
          i16x8.add(rdot(v128.shuffle<i32>(A, B, 0, 1, 4, 5), one), rdot(v128.shuffle<i32>(A, B, 2, 3, 6, 7), one)),
          i16x8.add(rdot(v128.shuffle<i32>(C, D, 0, 1, 4, 5), one), rdot(v128.shuffle<i32>(C, D, 2, 3, 6, 7), one)),
        );
        v128.store(s16 + e * 2, i16x8.shl(O, 5));
      }
      const ns = kk >> 5;
      for (let t: usize = 0; t < 4; t++) {
        const st = s32 + (<usize>g + t) * ns * 2;
        for (let j: usize = 0; j < ns; j++) store<i16>(s32o + (j >> 1) * 32 + t * 4 + (j & 1) * 2, load<i16>(st + j * 2));
      }
    }
  }
}

/** 16 bytes [A0 B0 A1 B1] and [A2 B2 A3 B3] (32-bit words of A and B alternating) at o and o + 16 */
// @ts-ignore: decorator
@inline function store2(o: usize, A: v128, B: v128): void {
  v128.store(o, v128.shuffle<i32>(A, B, 0, 4, 1, 5));
  v128.store(o, v128.shuffle<i32>(A, B, 2, 6, 3, 7), 16);
}

/** the quants 16 i .. 16 i + 15 (0..15) of the Q4_K block at p, as bytes */
// @ts-ignore: decorator
@inline function q4kVec(p: usize, i: usize): v128 {
  const b = v128.load(p + 16 + (i >> 2) * 32 + (i & 1) * 16);
  return i & 2 ? highNibbles(b) : lowNibbles(b);
}

/** the quants 16 i .. 16 i + 15 (0..63) of the Q6_K block at p, as bytes */
// @ts-ignore: decorator
@inline function q6kVec(p: usize, i: usize): v128 {
  const h = i >> 3, w = i & 7;
  const L = v128.load(p + h * 64 + (w & 3) * 16);
  const H = v128.load(p + 128 + h * 32 + (w & 1) * 16);
  const lo = w < 4 ? lowNibbles(L) : highNibbles(L);
  return v128.or(lo, i8x16.shl(v128.and(i8x16.shr_u(H, <i32>((w >> 1) * 2)), i8x16.splat(3)), 4));
}

/** a Q4_K / Q6_K block's panel header (64 bytes at dst, above) */
// @ts-ignore: decorator
@inline function kheader(type: i32, p: usize, dst: usize): void {
  if (type == 12) {
    store<f32>(dst, f16At(p));
    store<f32>(dst, f16At(p + 2), 4);
    const sm = k4ScalesMins(p);
    v128.store(dst, i16x8.extend_low_i8x16_u(sm), 16);
    v128.store(dst, i64x2.splat(0), 32);
    v128.store(dst, i16x8.extend_high_i8x16_u(sm), 48);
  } else {
    store<f32>(dst, f16At(p + 208));
    store<f32>(dst, 0, 4);
    const sc = v128.load(p + 192);
    v128.store(dst, i16x8.extend_low_i8x16_s(sc), 16);
    v128.store(dst, i16x8.extend_high_i8x16_s(sc), 32);
    v128.store(dst, i64x2.splat(0), 48);
  }
}

/**
 * unpack `rows` Q4_K / Q6_K rows (rowBytes apart) of nb super-blocks into the panel at dst, by pairs of rows
 * (a last odd row repeated): per pair and super-block KP2 bytes, the two rows' headers (64 bytes each, above)
 * then their quants interleaved by 4 elements (element e of row i at 128 + 8 (e / 4) + 4 i + e % 4)
 */
function kpanel(type: i32, src: usize, rowBytes: usize, rows: i32, nb: i32, dst: usize): void {
  for (let r = 0; r < rows; r += 2) {
    let pa = src + <usize>r * rowBytes, pb = src + <usize>min(r + 1, rows - 1) * rowBytes;
    const bs = <usize>(type == 12 ? 144 : 210);
    for (let b = 0; b < nb; b++, dst += KP2, pa += bs, pb += bs) {
      kheader(type, pa, dst);
      kheader(type, pb, dst + 64);
      for (let i: usize = 0; i < 16; i++) {
        if (type == 12) store2(dst + 128 + i * 32, q4kVec(pa, i), q4kVec(pb, i));
        else store2(dst + 128 + i * 32, q6kVec(pa, i), q6kVec(pb, i));
      }
    }
  }
}

/** store the 4 token lanes of f (row r's outputs) to y (token stride ys), as many as nt */
// @ts-ignore: decorator
@inline function storeTok(y: usize, ys: usize, f: v128, nt: i32): void {
  store<f32>(y, f32x4.extract_lane(f, 0));
  if (nt > 1) store<f32>(y + ys, f32x4.extract_lane(f, 1));
  if (nt > 2) store<f32>(y + 2 * ys, f32x4.extract_lane(f, 2));
  if (nt > 3) store<f32>(y + 3 * ys, f32x4.extract_lane(f, 3));
}

/**
 * Prefill tile: a pair of panel rows (kpanel, at wp) x an octet of 2 token quads (prepQuads, at xo; their
 * block scales at d0 / d1 + b * xdStride). Per step of 4 elements one pointer each: the octet's 2 quad
 * vectors at xo + 0 / 16 and the 2 rows' 4 bytes at wp + 0 / 4 (splats). Outputs of rows < nr, quads < nq
 * (the last one's tokens < nt) to y (row r at y + 4 r, token stride ys; quad 1 at y + 4 ys).
 */
// @ts-ignore: decorator
@inline function qtile(
  type: i32, wp: usize, nr: i32, xo: usize, K: usize, d0: usize, d1: usize, xdStride: usize, nq: i32, nt: i32, nb: i32,
  y: usize, ys: usize,
): void {
  let f00 = f32x4.splat(0), f01 = f32x4.splat(0), f10 = f32x4.splat(0), f11 = f32x4.splat(0);
  const s16: usize = 8 * K, s32: usize = s16 + 2 * K;
  let px = xo;
  for (let b = 0; b < nb; b++, wp += KP2) {
    let a00 = i32x4.splat(0), a01 = i32x4.splat(0), a10 = i32x4.splat(0), a11 = i32x4.splat(0);
    let pw = wp + 128;
    if (type == 12) {
      for (let j: usize = 0; j < 8; j++) {
        // sub-block j: 8 steps of 4 elements
        let u = v128.load32_splat(pw), v = v128.load32_splat(pw, 4);
        let x = v128.load(px), z = v128.load(px, 16);
        let c00 = rdot(x, u), c01 = rdot(z, u), c10 = rdot(x, v), c11 = rdot(z, v);
        const end = pw + 64;
        for (pw += 8, px += 32; pw < end; pw += 8, px += 32) {
          u = v128.load32_splat(pw); v = v128.load32_splat(pw, 4);
          x = v128.load(px); z = v128.load(px, 16);
          c00 = i16x8.add(c00, rdot(x, u)); c01 = i16x8.add(c01, rdot(z, u));
          c10 = i16x8.add(c10, rdot(x, v)); c11 = i16x8.add(c11, rdot(z, v));
        }
        const sa = v128.load16_splat(wp + 16 + j * 2), sb = v128.load16_splat(wp + 80 + j * 2);
        a00 = i32x4.add(a00, i32x4.dot_i16x8_s(c00, sa)); a01 = i32x4.add(a01, i32x4.dot_i16x8_s(c01, sa));
        a10 = i32x4.add(a10, i32x4.dot_i16x8_s(c10, sb)); a11 = i32x4.add(a11, i32x4.dot_i16x8_s(c11, sb));
      }
    } else {
      for (let j: usize = 0; j < 16; j++) {
        // sub-block j (16 weights) in 4 steps: int16 lanes added modulo 2^16 (i16x8.add wraps) minus the
        // offsets 32 sum x: the true sum of (q - 32) x, |.| <= 8 * 32 * 127 = 32512, is what remains
        let u = v128.load32_splat(pw), v = v128.load32_splat(pw, 4);
        let x = v128.load(px), z = v128.load(px, 16);
        let c00 = rdot(x, u), c01 = rdot(z, u), c10 = rdot(x, v), c11 = rdot(z, v);
        const end = pw + 32;
        for (pw += 8, px += 32; pw < end; pw += 8, px += 32) {
          u = v128.load32_splat(pw); v = v128.load32_splat(pw, 4);
          x = v128.load(px); z = v128.load(px, 16);
          c00 = i16x8.add(c00, rdot(x, u)); c01 = i16x8.add(c01, rdot(z, u));
          c10 = i16x8.add(c10, rdot(x, v)); c11 = i16x8.add(c11, rdot(z, v));
        }
        const so = xo + s16 + <usize>b * 512 + j * 32;
        const O0 = v128.load(so), O1 = v128.load(so, 16);
        const sa = v128.load16_splat(wp + 16 + j * 2), sb = v128.load16_splat(wp + 80 + j * 2);
        a00 = i32x4.add(a00, i32x4.dot_i16x8_s(i16x8.sub(c00, O0), sa)); a01 = i32x4.add(a01, i32x4.dot_i16x8_s(i16x8.sub(c01, O1), sa));
        a10 = i32x4.add(a10, i32x4.dot_i16x8_s(i16x8.sub(c10, O0), sb)); a11 = i32x4.add(a11, i32x4.dot_i16x8_s(i16x8.sub(c11, O1), sb));
      }
    }
    const dx0 = v128.load(d0 + <usize>b * xdStride), dx1 = v128.load(d1 + <usize>b * xdStride);
    const dw0 = v128.load32_splat(wp), dw1 = v128.load32_splat(wp, 64);
    f00 = f32x4.add(f00, f32x4.mul(cvt(a00), f32x4.mul(dw0, dx0)));
    f01 = f32x4.add(f01, f32x4.mul(cvt(a01), f32x4.mul(dw0, dx1)));
    f10 = f32x4.add(f10, f32x4.mul(cvt(a10), f32x4.mul(dw1, dx0)));
    f11 = f32x4.add(f11, f32x4.mul(cvt(a11), f32x4.mul(dw1, dx1)));
    if (type == 12) {
      // M = sum_j m(j) S32(j): 4 pairs of sub-blocks
      let m00 = i32x4.splat(0), m01 = i32x4.splat(0), m10 = i32x4.splat(0), m11 = i32x4.splat(0);
      const sb = xo + s32 + <usize>b * 128;
      for (let p: usize = 0; p < 4; p++) {
        const S0 = v128.load(sb + p * 32), S1 = v128.load(sb + p * 32, 16);
        const c0 = v128.load32_splat(wp + 48 + p * 4), c1 = v128.load32_splat(wp + 112 + p * 4);
        m00 = i32x4.add(m00, i32x4.dot_i16x8_s(S0, c0)); m01 = i32x4.add(m01, i32x4.dot_i16x8_s(S1, c0));
        m10 = i32x4.add(m10, i32x4.dot_i16x8_s(S0, c1)); m11 = i32x4.add(m11, i32x4.dot_i16x8_s(S1, c1));
      }
      const dm0 = v128.load32_splat(wp, 4), dm1 = v128.load32_splat(wp, 68);
      f00 = f32x4.sub(f00, f32x4.mul(cvt(m00), f32x4.mul(dm0, dx0)));
      f01 = f32x4.sub(f01, f32x4.mul(cvt(m01), f32x4.mul(dm0, dx1)));
      f10 = f32x4.sub(f10, f32x4.mul(cvt(m10), f32x4.mul(dm1, dx0)));
      f11 = f32x4.sub(f11, f32x4.mul(cvt(m11), f32x4.mul(dm1, dx1)));
    }
  }
  storeTok(y, ys, f00, nq > 1 ? 4 : nt);
  if (nr > 1) storeTok(y + 4, ys, f10, nq > 1 ? 4 : nt);
  if (nq > 1) {
    storeTok(y + 4 * ys, ys, f01, nt);
    if (nr > 1) storeTok(y + 4 * ys + 4, ys, f11, nt);
  }
}

/** qtile compiled once per type */
function qtileQ4K(wp: usize, nr: i32, xo: usize, K: usize, d0: usize, d1: usize, xdStride: usize, nq: i32, nt: i32, nb: i32, y: usize, ys: usize): void {
  qtile(12, wp, nr, xo, K, d0, d1, xdStride, nq, nt, nb, y, ys);
}
function qtileQ6K(wp: usize, nr: i32, xo: usize, K: usize, d0: usize, d1: usize, xdStride: usize, nq: i32, nt: i32, nb: i32, y: usize, ys: usize): void {
  qtile(14, wp, nr, xo, K, d0, d1, xdStride, nq, nt, nb, y, ys);
}

/** bytes of the prefill panel per row (kpanel), 0 when the type has none (relaxed build: Q4_K, Q6_K) */
export function prefillRowBytes(type: i32, K: i32): i32 {
  if (!ASC_FEATURE_RELAXED_SIMD) return 0;
  return type == 12 || type == 14 ? (K / 256) * <i32>KP : 0;
}

// ---------------------------------------------------------------------------------------------------
// Prefill (4 tokens and more) for the block-32 types (Q8_0, Q4_0, Q5_0, IQ4_NL), both builds: the chunk's
// rows unpacked to int16 (unpackInt) against tokens packed by quads of int16 pairs (prepQuads16: per quad,
// every 2 elements of the 4 tokens as 16 bytes [t0 e, e+1 | t1 | t2 | t3]). i32x4.dot_i16x8_s of a quad
// vector and a row's 2 weights (a 32-bit splat) gives lane t = token t's 2 products: lanes stay tokens,
// the block's exact int32 sum I needs no horizontal sum, and the f32 steps per block are itile's.

/** bytes per quad of 4 tokens of K elements (prepQuads16) */
export function quadBytes16(K: i32): i32 {
  return 8 * K;
}

/**
 * pack Tp tokens (a multiple of 4) of int16 q (K per token at q) by quads of int16 pairs, two quads side by
 * side (octets: step s of quads 2h and 2h + 1 at dst + h * 2 quadBytes16(K) + s * 32, + 16); with an odd
 * number of quads the last octet's second half is left as it was
 */
export function prepQuads16(q: usize, Tp: i32, K: i32, dst: usize): void {
  const kk = <usize>K;
  for (let g = 0; g < Tp; g += 4) {
    const q0 = q + <usize>g * kk * 2, q1 = q0 + kk * 2, q2 = q1 + kk * 2, q3 = q2 + kk * 2;
    const d = dst + <usize>(g >> 3) * 16 * kk + <usize>((g >> 2) & 1) * 16;
    for (let e: usize = 0; e < kk; e += 8) {
      const v0 = v128.load(q0 + e * 2), v1 = v128.load(q1 + e * 2), v2 = v128.load(q2 + e * 2), v3 = v128.load(q3 + e * 2);
      const A = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), B = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
      const C = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7), D = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
      const o = d + e * 16;
      v128.store(o, v128.shuffle<i32>(A, B, 0, 1, 4, 5));
      v128.store(o, v128.shuffle<i32>(A, B, 2, 3, 6, 7), 32);
      v128.store(o, v128.shuffle<i32>(C, D, 0, 1, 4, 5), 64);
      v128.store(o, v128.shuffle<i32>(C, D, 2, 3, 6, 7), 96);
    }
  }
}

/** the transposed quarter j (pairs 4j..4j+3) of 4 rows' int16 vectors a..d, stored at o (64 bytes) */
// @ts-ignore: decorator
@inline function store4x4(o: usize, v0: v128, v1: v128, v2: v128, v3: v128): void {
  const A = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), B = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
  const C = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7), D = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
  v128.store(o, v128.shuffle<i32>(A, B, 0, 1, 4, 5));
  v128.store(o, v128.shuffle<i32>(A, B, 2, 3, 6, 7), 16);
  v128.store(o, v128.shuffle<i32>(C, D, 0, 1, 4, 5), 32);
  v128.store(o, v128.shuffle<i32>(C, D, 2, 3, 6, 7), 48);
}

// @ts-ignore: decorator
@inline function panel32(type: i32, src: usize, rowBytes: usize, rows: i32, K: i32, w: usize, sc: usize): void {
  const nb = K / 32;
  const bs = <usize>(type == 8 ? 34 : type == 6 ? 22 : 18);
  for (let g = 0; g < rows; g += 4, w += <usize>K * 8) {
    const n = min(4, rows - g);
    const p0 = src + <usize>g * rowBytes;
    const p1 = p0 + <usize>min(1, n - 1) * rowBytes, p2 = p0 + <usize>min(2, n - 1) * rowBytes, p3 = p0 + <usize>(n - 1) * rowBytes;
    for (let b: usize = 0; b < <usize>nb; b++) {
      const o = w + b * 256, q = b * bs;
      for (let i = 0; i < n; i++) store<f32>(sc + (<usize>(g + i) * <usize>nb + b) * 4, f16At(p0 + <usize>i * rowBytes + q));
      let a = block32(type, p0 + q, false), c = block32(type, p1 + q, false), d = block32(type, p2 + q, false), e = block32(type, p3 + q, false);
      store4x4(o, i16x8.extend_low_i8x16_s(a), i16x8.extend_low_i8x16_s(c), i16x8.extend_low_i8x16_s(d), i16x8.extend_low_i8x16_s(e));
      store4x4(o + 64, i16x8.extend_high_i8x16_s(a), i16x8.extend_high_i8x16_s(c), i16x8.extend_high_i8x16_s(d), i16x8.extend_high_i8x16_s(e));
      a = block32(type, p0 + q, true); c = block32(type, p1 + q, true); d = block32(type, p2 + q, true); e = block32(type, p3 + q, true);
      store4x4(o + 128, i16x8.extend_low_i8x16_s(a), i16x8.extend_low_i8x16_s(c), i16x8.extend_low_i8x16_s(d), i16x8.extend_low_i8x16_s(e));
      store4x4(o + 192, i16x8.extend_high_i8x16_s(a), i16x8.extend_high_i8x16_s(c), i16x8.extend_high_i8x16_s(d), i16x8.extend_high_i8x16_s(e));
    }
  }
}

/**
 * Unpack `rows` block-32 rows (Q8_0, Q4_0, Q5_0, IQ4_NL; rowBytes apart) into a panel of int16 pairs
 * interleaved by 4 rows: for the group of rows 4g..4g+3, the pair (e, e + 1) of row 4g + i at
 * w + 4g K 2 + (e / 2) 16 + 4 i (a last group of fewer rows repeats its last row); the values are
 * unpackInt's, the block scales too (f32, row r at sc + r nb 4).
 */
function unpackPanel32(type: i32, src: usize, rowBytes: usize, rows: i32, K: i32, w: usize, sc: usize): void {
  if (type == 8) panel32(8, src, rowBytes, rows, K, w, sc);
  else if (type == 2) panel32(2, src, rowBytes, rows, K, w, sc);
  else if (type == 6) panel32(6, src, rowBytes, rows, K, w, sc);
  else panel32(20, src, rowBytes, rows, K, w, sc);
}

/**
 * Prefill tile for the block-32 types: 4 panel rows (unpackPanel32 group at wp; block scales f32 at
 * sc0..sc3) x 2 quads (one octet of prepQuads16 at xo; block scales at d0 / d1 + b * xdStride). Each step
 * loads the octet's 2 quad vectors and the 4 rows' weight pairs (32-bit splats at one address + 0, 4, 8,
 * 12): 8 i32x4.dot_i16x8_s on 6 loads and two pointer increments. Per output, the block sum I and the f32
 * steps are qtile16's (the same bits). The 8 f32 accumulators live at fa (8 x 16 bytes): in registers
 * with the 8 int32 ones V8 spills. Outputs of rows < nr, quads < nq (the last one's tokens < nt).
 */
function qtile16p(
  wp: usize, sc0: usize, sc1: usize, sc2: usize, sc3: usize, nr: i32,
  xo: usize, d0: usize, d1: usize, xdStride: usize, nq: i32, nt: i32, nb: i32, y: usize, ys: usize, fa: usize,
): void {
  const zero = f32x4.splat(0);
  for (let i: usize = 0; i < 128; i += 16) v128.store(fa + i, zero);
  for (let b = 0; b < nb; b++) {
    let a00 = i32x4.splat(0), a01 = i32x4.splat(0), a10 = i32x4.splat(0), a11 = i32x4.splat(0);
    let a20 = i32x4.splat(0), a21 = i32x4.splat(0), a30 = i32x4.splat(0), a31 = i32x4.splat(0);
    const end = xo + 512;
    for (; xo < end; xo += 32, wp += 16) {
      const x = v128.load(xo), z = v128.load(xo, 16);
      let u = v128.load32_splat(wp);
      a00 = i32x4.add(a00, i32x4.dot_i16x8_s(x, u)); a01 = i32x4.add(a01, i32x4.dot_i16x8_s(z, u));
      u = v128.load32_splat(wp, 4);
      a10 = i32x4.add(a10, i32x4.dot_i16x8_s(x, u)); a11 = i32x4.add(a11, i32x4.dot_i16x8_s(z, u));
      u = v128.load32_splat(wp, 8);
      a20 = i32x4.add(a20, i32x4.dot_i16x8_s(x, u)); a21 = i32x4.add(a21, i32x4.dot_i16x8_s(z, u));
      u = v128.load32_splat(wp, 12);
      a30 = i32x4.add(a30, i32x4.dot_i16x8_s(x, u)); a31 = i32x4.add(a31, i32x4.dot_i16x8_s(z, u));
    }
    const so = <usize>b * 4;
    const dx0 = v128.load(d0 + <usize>b * xdStride), dx1 = v128.load(d1 + <usize>b * xdStride);
    let dw = v128.load32_splat(sc0 + so);
    v128.store(fa, f32x4.add(v128.load(fa), f32x4.mul(cvt(a00), f32x4.mul(dw, dx0))));
    v128.store(fa, f32x4.add(v128.load(fa, 16), f32x4.mul(cvt(a01), f32x4.mul(dw, dx1))), 16);
    dw = v128.load32_splat(sc1 + so);
    v128.store(fa, f32x4.add(v128.load(fa, 32), f32x4.mul(cvt(a10), f32x4.mul(dw, dx0))), 32);
    v128.store(fa, f32x4.add(v128.load(fa, 48), f32x4.mul(cvt(a11), f32x4.mul(dw, dx1))), 48);
    dw = v128.load32_splat(sc2 + so);
    v128.store(fa, f32x4.add(v128.load(fa, 64), f32x4.mul(cvt(a20), f32x4.mul(dw, dx0))), 64);
    v128.store(fa, f32x4.add(v128.load(fa, 80), f32x4.mul(cvt(a21), f32x4.mul(dw, dx1))), 80);
    dw = v128.load32_splat(sc3 + so);
    v128.store(fa, f32x4.add(v128.load(fa, 96), f32x4.mul(cvt(a30), f32x4.mul(dw, dx0))), 96);
    v128.store(fa, f32x4.add(v128.load(fa, 112), f32x4.mul(cvt(a31), f32x4.mul(dw, dx1))), 112);
  }
  const n0 = nq > 1 ? 4 : nt;
  for (let i = 0; i < nr; i++) {
    storeTok(y + <usize>i * 4, ys, v128.load(fa + <usize>i * 32), n0);
    if (nq > 1) storeTok(y + 4 * ys + <usize>i * 4, ys, v128.load(fa + <usize>i * 32, 16), nt);
  }
}

// Rows in lanes (session 35, the mirror of qtile16p): the chunk's rows unpacked into a panel of "row
// octets" (unpackPanel32r: for the rows 8h..8h+7 and the pair (e, e + 1), 32 bytes [rows 8h..8h+3 | rows
// 8h+4..8h+7], one int16 pair per row, at w + 16 h K + 32 (e / 2)), their block scales 8 rows side by side
// (f32, row 8h + i of block b at sc + (h nb + b) 32 + 4 i), against one token quad of the prepQuads16
// octets, whose pairs are 32-bit splats. Lanes are rows; per output the block sum I and the f32 steps
// (f + f32(I) * (dw * dx), dw * dx the same product) are qtile16p's: the same bits.

/** the transposed quarter of 4 rows' int16 vectors, its 4 steps stored `st` bytes apart from o */
// @ts-ignore: decorator
@inline function store4x4s(o: usize, st: usize, v0: v128, v1: v128, v2: v128, v3: v128): void {
  const A = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), B = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
  const C = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7), D = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
  v128.store(o, v128.shuffle<i32>(A, B, 0, 1, 4, 5));
  v128.store(o + st, v128.shuffle<i32>(A, B, 2, 3, 6, 7));
  v128.store(o + 2 * st, v128.shuffle<i32>(C, D, 0, 1, 4, 5));
  v128.store(o + 3 * st, v128.shuffle<i32>(C, D, 2, 3, 6, 7));
}

// @ts-ignore: decorator
@inline function panel32r(type: i32, src: usize, rowBytes: usize, rows: i32, K: i32, w: usize, sc: usize, G: i32): void {
  const nb = K / 32;
  const bs = <usize>(type == 8 ? 34 : type == 6 ? 22 : 18);
  const rowsG = (rows + G - 1) & ~(G - 1);
  const st = <usize>G * 4; // bytes per step (G int16 pairs)
  for (let g = 0; g < rowsG; g += 4) {
    // 4 rows of the group (a last group repeats the chunk's last row)
    const p0 = src + <usize>min(g, rows - 1) * rowBytes;
    const p1 = src + <usize>min(g + 1, rows - 1) * rowBytes, p2 = src + <usize>min(g + 2, rows - 1) * rowBytes, p3 = src + <usize>min(g + 3, rows - 1) * rowBytes;
    const wg = w + <usize>(g / G) * 2 * <usize>G * <usize>K + <usize>(g % G) * 4;
    const sg = sc + <usize>(g / G) * <usize>nb * st + <usize>(g % G) * 4;
    for (let b: usize = 0; b < <usize>nb; b++) {
      const o = wg + b * 16 * st, q = b * bs, so = sg + b * st;
      store<f32>(so, f16At(p0 + q));
      store<f32>(so, f16At(p1 + q), 4);
      store<f32>(so, f16At(p2 + q), 8);
      store<f32>(so, f16At(p3 + q), 12);
      let a = block32(type, p0 + q, false), c = block32(type, p1 + q, false), d = block32(type, p2 + q, false), e = block32(type, p3 + q, false);
      store4x4s(o, st, i16x8.extend_low_i8x16_s(a), i16x8.extend_low_i8x16_s(c), i16x8.extend_low_i8x16_s(d), i16x8.extend_low_i8x16_s(e));
      store4x4s(o + 4 * st, st, i16x8.extend_high_i8x16_s(a), i16x8.extend_high_i8x16_s(c), i16x8.extend_high_i8x16_s(d), i16x8.extend_high_i8x16_s(e));
      a = block32(type, p0 + q, true); c = block32(type, p1 + q, true); d = block32(type, p2 + q, true); e = block32(type, p3 + q, true);
      store4x4s(o + 8 * st, st, i16x8.extend_low_i8x16_s(a), i16x8.extend_low_i8x16_s(c), i16x8.extend_low_i8x16_s(d), i16x8.extend_low_i8x16_s(e));
      store4x4s(o + 12 * st, st, i16x8.extend_high_i8x16_s(a), i16x8.extend_high_i8x16_s(c), i16x8.extend_high_i8x16_s(d), i16x8.extend_high_i8x16_s(e));
    }
  }
}

/** unpack `rows` block-32 rows into row octets and their scales (above; rows rounded up to 8) */
function unpackPanel32r(type: i32, src: usize, rowBytes: usize, rows: i32, K: i32, w: usize, sc: usize): void {
  if (type == 8) panel32r(8, src, rowBytes, rows, K, w, sc, 8);
  else if (type == 2) panel32r(2, src, rowBytes, rows, K, w, sc, 8);
  else if (type == 6) panel32r(6, src, rowBytes, rows, K, w, sc, 8);
  else panel32r(20, src, rowBytes, rows, K, w, sc, 8);
}

/**
 * Rows-in-lanes tile: 8 panel rows (a row octet stream at wp, their scales at sp) x 4 tokens (one quad:
 * its pairs at xo, 32 bytes a step, as in prepQuads16's octets; block scales at d + b * xdStride). Per
 * step 2 vector loads (the 8 rows' pairs) and 4 32-bit splats (the 4 tokens' pairs), 8 dot products.
 * The 8 f32 accumulators (2 row halves x 4 tokens) at fa; outputs of rows < nr, tokens < nt to y (token
 * stride ys): 4 consecutive rows are one v128 store.
 */
function qtile16r(wp: usize, sp: usize, nr: i32, xo: usize, d: usize, xdStride: usize, nt: i32, nb: i32, y: usize, ys: usize, fa: usize): void {
  const zero = f32x4.splat(0);
  for (let i: usize = 0; i < 128; i += 16) v128.store(fa + i, zero);
  for (let b = 0; b < nb; b++) {
    // the block's first step starts the 8 int32 sums (no zeros to add)
    const v0 = v128.load(wp), z0 = v128.load(wp, 16);
    let u0 = v128.load32_splat(xo);
    let a00 = i32x4.dot_i16x8_s(v0, u0), a10 = i32x4.dot_i16x8_s(z0, u0);
    u0 = v128.load32_splat(xo, 4);
    let a01 = i32x4.dot_i16x8_s(v0, u0), a11 = i32x4.dot_i16x8_s(z0, u0);
    u0 = v128.load32_splat(xo, 8);
    let a02 = i32x4.dot_i16x8_s(v0, u0), a12 = i32x4.dot_i16x8_s(z0, u0);
    u0 = v128.load32_splat(xo, 12);
    let a03 = i32x4.dot_i16x8_s(v0, u0), a13 = i32x4.dot_i16x8_s(z0, u0);
    const end = wp + 512;
    for (wp += 32, xo += 32; wp < end; wp += 32, xo += 32) {
      const v = v128.load(wp), z = v128.load(wp, 16);
      let u = v128.load32_splat(xo);
      a00 = i32x4.add(a00, i32x4.dot_i16x8_s(v, u)); a10 = i32x4.add(a10, i32x4.dot_i16x8_s(z, u));
      u = v128.load32_splat(xo, 4);
      a01 = i32x4.add(a01, i32x4.dot_i16x8_s(v, u)); a11 = i32x4.add(a11, i32x4.dot_i16x8_s(z, u));
      u = v128.load32_splat(xo, 8);
      a02 = i32x4.add(a02, i32x4.dot_i16x8_s(v, u)); a12 = i32x4.add(a12, i32x4.dot_i16x8_s(z, u));
      u = v128.load32_splat(xo, 12);
      a03 = i32x4.add(a03, i32x4.dot_i16x8_s(v, u)); a13 = i32x4.add(a13, i32x4.dot_i16x8_s(z, u));
    }
    const dd = d + <usize>b * xdStride;
    const dw0 = v128.load(sp), dw1 = v128.load(sp, 16);
    sp += 32;
    let dx = v128.load32_splat(dd);
    v128.store(fa, f32x4.add(v128.load(fa), f32x4.mul(cvt(a00), f32x4.mul(dw0, dx))));
    v128.store(fa, f32x4.add(v128.load(fa, 16), f32x4.mul(cvt(a10), f32x4.mul(dw1, dx))), 16);
    dx = v128.load32_splat(dd, 4);
    v128.store(fa, f32x4.add(v128.load(fa, 32), f32x4.mul(cvt(a01), f32x4.mul(dw0, dx))), 32);
    v128.store(fa, f32x4.add(v128.load(fa, 48), f32x4.mul(cvt(a11), f32x4.mul(dw1, dx))), 48);
    dx = v128.load32_splat(dd, 8);
    v128.store(fa, f32x4.add(v128.load(fa, 64), f32x4.mul(cvt(a02), f32x4.mul(dw0, dx))), 64);
    v128.store(fa, f32x4.add(v128.load(fa, 80), f32x4.mul(cvt(a12), f32x4.mul(dw1, dx))), 80);
    dx = v128.load32_splat(dd, 12);
    v128.store(fa, f32x4.add(v128.load(fa, 96), f32x4.mul(cvt(a03), f32x4.mul(dw0, dx))), 96);
    v128.store(fa, f32x4.add(v128.load(fa, 112), f32x4.mul(cvt(a13), f32x4.mul(dw1, dx))), 112);
  }
  for (let t = 0; t < nt; t++, y += ys) {
    const f = fa + <usize>t * 32;
    if (nr >= 8) {
      v128.store(y, v128.load(f));
      v128.store(y, v128.load(f, 16), 16);
    } else {
      for (let i = 0; i < nr; i++) store<f32>(y + <usize>i * 4, load<f32>(f + <usize>(i >> 2) * 16 + <usize>(i & 3) * 4));
    }
  }
}

// Integer matmul job (i32 words):
//   0 kind = 3 | 1 type | 2 w | 3 rowBytes | 4 xq (int16 T x K) | 5 xd (f32 T x nb) | 6 T | 7 K
//   8 xsum (int16 T x K/32) | 9 y | 10 N | 11 rows | 12 chunkRows | 13 scratch | 14 scratch bytes per thread
//   15 prepared activations (0: none): decode (T < 4, relaxed build) prepActs8; prefill (T >= 4) Q4_K / Q6_K
//      (relaxed build) prepQuads, block-32 types (both builds) prepQuads16 (Tp tokens, the padding ones zero)
//   16 decode: W interleaved by 4 rows (interleave4), chunkRows a multiple of 4; block-32 prefill: 1
//      rows in lanes (qtile16r; chunkRows a multiple of 8), 0 tokens in lanes (qtile16p)
function intMatmulChunk(job: usize, chunk: i32, thread: i32): void {
  const type = param(job, 1);
  const rowBytes = <usize>param(job, 3);
  const T = param(job, 6);
  const K = param(job, 7);
  const N = <usize>param(job, 10);
  const rows = param(job, 11);
  const chunkRows = param(job, 12);
  const r0 = chunk * chunkRows;
  const nr = min(chunkRows, rows - r0);
  if (nr <= 0) return;
  const bl = intBlock(type);
  const nb = K / bl;
  const mins = hasMins(type);
  const Tp = (T + 3) & ~3;
  const xdStride = <usize>Tp * 4;
  if (T < 4 && (bl == 32 || type == 12 || type == 14)) {
    // decode, block-32 types, Q4_K and Q6_K: straight from the stored blocks; with 8-bit products when
    // the activations were prepared (param 15: prepActs8, relaxed build)
    const p = <usize>param(job, 2) + <usize>r0 * rowBytes;
    const xq = <usize>param(job, 4);
    const xd = <usize>param(job, 5);
    const xsum = <usize>param(job, 8);
    const xa = <usize>param(job, 15);
    const y0 = <usize>param(job, 9) + <usize>r0 * 4;
    const bs = <usize>(type == 8 ? 34 : type == 6 ? 22 : type == 12 ? 144 : type == 14 ? 210 : 18);
    const sumStride = <usize>K / 16; // bytes of int16 sums of 32 per token
    // param 16: W interleaved by 4 rows (interleave4; chunks and tiles start at multiples of 4 rows):
    // 1 + the bytes each group block adds (decodeExtra32: f32 scales in front of the group's blocks)
    // (Q4_K, Q6_K: bits 8.. the strands of rtileQ4KStrands / r6Strands, 0 or 1: none)
    const il = param(job, 16) != 0;
    const extra = il ? <usize>((param(job, 16) & 255) - 1) : 0;
    // the Q4_0 / Q8_0 copies' full groups of 8 rows in 4 strands (MatmulEngine.q32Strands), else 1
    const strands = param(job, 16) >> 8;
    const full = rows & ~3;
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < nr; r += 4) {
        const rr = min(4, nr - r);
        let p0 = p + <usize>r * rowBytes + <usize>(min(r0 + r, full) >> 2) * <usize>nb * extra;
        if (ASC_FEATURE_RELAXED_SIMD && type == 2 && extra != 0 && xa != 0 && rr == 4) {
          // Q4_0's copy with one row per lane: a full group of 8 rows, half of one (a chunk starting or
          // ending inside it), or the last group of 4
          const R = r0 + r;
          const full8 = rows & ~7;
          const g4 = <usize>(4 * rowBytes) + <usize>nb * extra; // bytes of 4 rows in the copy
          const xt = xa + <usize>t * <usize>actBytes8(K), dt = xd + <usize>t * 4, xst = xsum + <usize>t * sumStride;
          const yt = y0 + <usize>t * N * 4 + <usize>r * 4;
          if ((R & 7) == 0 && R + 8 <= full8 && r + 8 <= nr) {
            // the chunk's full groups from here, G of them: groups i, i + G/4, i + G/2, i + 3G/4 side by side
            // (4 strands, q32Strands), the G mod 4 left one by one; or one group (1 strand)
            const G = strands >= 4 ? (min(r0 + nr, full8) - R) >> 3 : 1;
            const gb = 2 * g4; // bytes of a group of 8 rows
            const q4 = G >> 2;
            for (let i = 0; i < q4; i++)
              rtileQ4Lanes8x4(p0 + <usize>i * gb, p0 + <usize>(i + q4) * gb, p0 + <usize>(i + 2 * q4) * gb, p0 + <usize>(i + 3 * q4) * gb, xt, dt, xdStride, nb, xst,
                yt + <usize>i * 32, yt + <usize>(i + q4) * 32, yt + <usize>(i + 2 * q4) * 32, yt + <usize>(i + 3 * q4) * 32);
            for (let i = 4 * q4; i < G; i++) rtileQ4Lanes8(p0 + <usize>i * gb, xt, dt, xdStride, nb, xst, yt + <usize>i * 32);
            r += 8 * G - 4;
          } else if (R < full8) {
            const h = <usize>((R >> 2) & 1);
            const g = p0 - h * g4;
            rtileQ4Lanes(g + h * 16, g + 32 + h * 16, 32, 160, 4, xt, dt, xdStride, nb, xst, yt);
          } else {
            rtileQ4Lanes(p0, p0 + 16, 16, 80, 4, xt, dt, xdStride, nb, xst, yt);
          }
          continue;
        }
        if (ASC_FEATURE_RELAXED_SIMD && type == 8 && extra != 0 && xa != 0 && rr == 4) {
          // Q8_0's copy with one row per lane, the same groups as Q4_0's: a full group of 8 rows, half of
          // one, or the last group of 4
          const R = r0 + r;
          const full8 = rows & ~7;
          const g4 = <usize>(4 * rowBytes) + <usize>nb * extra; // bytes of 4 rows in the copy
          const xp = xa + <usize>t * <usize>actBytes8(K) + <usize>K, dt = xd + <usize>t * 4;
          const yt = y0 + <usize>t * N * 4 + <usize>r * 4;
          if ((R & 7) == 0 && R + 8 <= full8 && r + 8 <= nr) {
            // the chunk's full groups from here in 4 strands, as Q4_0's
            const G = strands >= 4 ? (min(r0 + nr, full8) - R) >> 3 : 1;
            const gb = 2 * g4;
            const q4 = G >> 2;
            for (let i = 0; i < q4; i++)
              rtileQ8Lanes8x4(p0 + <usize>i * gb, p0 + <usize>(i + q4) * gb, p0 + <usize>(i + 2 * q4) * gb, p0 + <usize>(i + 3 * q4) * gb, xp, K, dt, xdStride, nb,
                yt + <usize>i * 32, yt + <usize>(i + q4) * 32, yt + <usize>(i + 2 * q4) * 32, yt + <usize>(i + 3 * q4) * 32);
            for (let i = 4 * q4; i < G; i++) rtileQ8Lanes8(p0 + <usize>i * gb, xp, K, dt, xdStride, nb, yt + <usize>i * 32);
            r += 8 * G - 4;
          } else if (R < full8) {
            const h = <usize>((R >> 2) & 1);
            const g = p0 - h * g4;
            rtileQ8Lanes(g + h * 16, g + 32 + h * 16, 32, 288, xp, K, dt, xdStride, nb, yt);
          } else {
            rtileQ8Lanes(p0, p0 + 16, 16, 144, xp, K, dt, xdStride, nb, yt);
          }
          continue;
        }
        if (ASC_FEATURE_RELAXED_SIMD && type == 12 && extra != 0 && xa != 0 && rr == 4) {
          // Q4_K's copy with one row per lane, the same groups as Q4_0's: a full group of 8 rows, half
          // of one, or the last group of 4
          const R = r0 + r;
          const full8 = rows & ~7;
          const g4 = <usize>(4 * rowBytes) + <usize>nb * extra; // bytes of 4 rows in the copy
          const xt = xa + <usize>t * <usize>actBytes8(K), dt = xd + <usize>t * 4, xst = xsum + <usize>t * sumStride;
          const yt = y0 + <usize>t * N * 4 + <usize>r * 4;
          if ((R & 7) == 0 && R + 8 <= full8 && r + 8 <= nr) {
            // the full groups from here, in strands
            const G = min(full8 - R, nr - r) >> 3;
            rtileQ4KStrands(p0, 2 * g4, G, max(1, min(strands, G)), xt, K, dt, xdStride, nb, xst, yt, <usize>param(job, 13) + <usize>thread * <usize>param(job, 14));
            r += 8 * G - 4;
          } else if (R < full8) {
            const h = <usize>((R >> 2) & 1);
            const g = p0 - h * g4;
            rtileQ4KLanes(g + h * 16, 2, g + 64 + h * 8, 16, g + 128 + h * 32, g + 192 + h * 16, 32, 1216, 4, xt, dt, xdStride, nb, xst, yt);
          } else {
            rtileQ4KLanes(p0, 1, p0 + 32, 8, p0 + 64, p0 + 96, 16, 608, 4, xt, dt, xdStride, nb, xst, yt);
          }
          continue;
        }
        if (ASC_FEATURE_RELAXED_SIMD && type == 14 && extra != 0 && xa != 0 && rr == 4) {
          // Q6_K's copy with one row per lane: a full group of 8 rows, half of one, or the last group of 4
          const R = r0 + r;
          const full8 = rows & ~7;
          const g4 = <usize>(4 * rowBytes) + <usize>nb * extra; // bytes of 4 rows in the copy
          const xt = xa + <usize>t * <usize>actBytes8(K), dt = xd + <usize>t * 4;
          const yt = y0 + <usize>t * N * 4 + <usize>r * 4;
          if ((R & 7) == 0 && R + 8 <= full8 && r + 8 <= nr) {
            // the full groups from here, in strands
            const G = min(full8 - R, nr - r) >> 3;
            r6Strands(p0, 2 * g4, G, max(1, min(strands, G)), xt, K, dt, xdStride, nb, yt, <usize>param(job, 13) + <usize>thread * <usize>param(job, 14));
            r += 8 * G - 4;
          } else if (R < full8) {
            const h = <usize>((R >> 2) & 1);
            const g = p0 - h * g4;
            r6lanes(g + h * 16, g + 32 + h * 4, g + 160 + h * 16, 8, 96, 32, 1696, 4, xt, K, dt, xdStride, nb, yt);
          } else {
            r6lanes(p0, p0 + 16, p0 + 80, 4, 48, 16, 848, 4, xt, K, dt, xdStride, nb, yt);
          }
          continue;
        }
        let p1 = p0 + <usize>min(1, rr - 1) * rowBytes, p2 = p0 + <usize>min(2, rr - 1) * rowBytes, p3 = p0 + <usize>min(3, rr - 1) * rowBytes;
        let st = bs;
        let kind = type;
        if (extra != 0 && rr == 4 && bl == 256) {
          // Q4_K / Q6_K group blocks (interleave4): the tiles take the block's start (kinds 112, 114)
          st = 4 * bs + extra;
          kind = type + 100;
        } else if (extra != 0 && rr == 4) {
          // scales (f32 x 4) at the group block's start, then each row's block without its 2 scale bytes;
          // the tile finds row i's quants at p_i + 2 and the scales at p0 - 14
          p0 += 14;
          p1 = p0 + bs - 2;
          p2 = p0 + 2 * (bs - 2);
          p3 = p0 + 3 * (bs - 2);
          st = 4 * bs + extra;
          kind = type + 100;
        } else if (il && rr == 4) {
          // block b of row i of the group at p0 + (4 b + i) bs: one sequential stream for the tile
          p1 = p0 + bs;
          p2 = p0 + 2 * bs;
          p3 = p0 + 3 * bs;
          st = 4 * bs;
        }
        const x = xq + <usize>t * <usize>K * 2, d = xd + <usize>t * 4, y = y0 + <usize>t * N * 4 + <usize>r * 4;
        const xs = xsum + <usize>t * sumStride;
        if (ASC_FEATURE_RELAXED_SIMD && xa != 0) {
          const xt = xa + <usize>t * <usize>actBytes8(K);
          rtile(kind, p0, p1, p2, p3, rr, st, xt, K, d, xdStride, nb, xs, y, <usize>param(job, 13) + <usize>thread * <usize>param(job, 14));
        } else if (bl == 32) dtile4x1q32(type, p0, p1, p2, p3, rr, st, x, d, xdStride, nb, y);
        else dtile4x1k(type, p0, p1, p2, p3, rr, st, x, d, xdStride, nb, xs, y);
      }
    }
    return;
  }
  const scratch = <usize>param(job, 13) + <usize>thread * <usize>param(job, 14);
  if (ASC_FEATURE_RELAXED_SIMD && (type == 12 || type == 14) && param(job, 15) != 0) {
    // prefill, Q4_K / Q6_K: the chunk's panel (kpanel), 2 rows x 2 token quads tiles with 8-bit products
    kpanel(type, <usize>param(job, 2) + <usize>r0 * rowBytes, rowBytes, nr, nb, scratch);
    const xa = <usize>param(job, 15);
    const QS = <usize>quadBytes(K);
    const xd = <usize>param(job, 5);
    const y0 = <usize>param(job, 9) + <usize>r0 * 4;
    const ys = N * 4;
    const pr = <usize>nb * KP2; // bytes per pair of rows
    const nQ = Tp >> 2;
    // quads per block: their packed tokens within ~24 KiB (L1), a multiple of 2
    const qb = max(2, <i32>(<usize>24576 / QS) & ~1);
    for (let g0 = 0; g0 < nQ; g0 += qb) {
      const g1 = min(nQ, g0 + qb);
      for (let r = 0; r < nr; r += 2) {
        const rr = min(2, nr - r);
        const wp = scratch + <usize>(r >> 1) * pr;
        for (let g = g0; g < g1; g += 2) {
          const nq = min(2, g1 - g);
          const gl = g + nq - 1;
          const nt = min(4, T - 4 * gl);
          const xo = xa + <usize>(g >> 1) * 2 * QS;
          const dd0 = xd + <usize>g * 16, dd1 = xd + <usize>gl * 16;
          const yt = y0 + <usize>(4 * g) * ys + <usize>r * 4;
          if (type == 12) qtileQ4K(wp, rr, xo, <usize>K, dd0, dd1, xdStride, nq, nt, nb, yt, ys);
          else qtileQ6K(wp, rr, xo, <usize>K, dd0, dd1, xdStride, nq, nt, nb, yt, ys);
        }
      }
    }
    return;
  }
  const w = scratch;
  const sc = w + <usize>nr * <usize>K * 2;
  const m = sc + <usize>nr * <usize>nb * 4;
  const dm = m + <usize>nr * <usize>nb * 16;
  const xq = <usize>param(job, 4);
  const xd = <usize>param(job, 5);
  const xsum = <usize>param(job, 8);
  const y0 = <usize>param(job, 9) + <usize>r0 * 4;
  const ws = <usize>K * 2;
  const ys = N * 4;
  const sw = <usize>nb * 4;
  // tokens per block: their int16 rows within ~24 KiB (L1), a multiple of 4
  const tb = max(4, (24576 / (K * 2)) & ~3);
  const xsumStride = <usize>nb * 16;
  const ms = <usize>nb * 16;
  const xa = <usize>param(job, 15);
  if (bl == 32 && T >= 4 && xa != 0 && param(job, 16) == 1) {
    // prefill, block-32 types, rows in lanes (job word 16 = 1; chunkRows a multiple of 8): row octets
    // (unpackPanel32r) x one token quad of the octets, 8 x 4 tiles; f32 accumulators in the thread's
    // spare bytes
    const fa = scratch + <usize>param(job, 14) - 128;
    const nr8 = (nr + 7) & ~7;
    const sc8 = w + <usize>nr8 * <usize>K * 2;
    unpackPanel32r(type, <usize>param(job, 2) + <usize>r0 * rowBytes, rowBytes, nr, K, w, sc8);
    const OS = <usize>quadBytes16(K) * 2;
    const nQ = Tp >> 2;
    // quads per block: their packed tokens within ~24 KiB (L1), a multiple of 2
    const qb = max(2, <i32>(<usize>24576 / (OS >> 1)) & ~1);
    const gs = <usize>16 * <usize>K;
    for (let g0 = 0; g0 < nQ; g0 += qb) {
      const g1 = min(nQ, g0 + qb);
      for (let r = 0; r < nr; r += 8) {
        const wp = w + <usize>(r >> 3) * gs, sp = sc8 + <usize>(r >> 3) * <usize>nb * 32;
        for (let g = g0; g < g1; g++) {
          qtile16r(
            wp, sp, min(8, nr - r), xa + <usize>(g >> 1) * OS + <usize>(g & 1) * 16, xd + <usize>g * 16, xdStride, min(4, T - 4 * g), nb,
            y0 + <usize>(4 * g) * ys + <usize>r * 4, ys, fa,
          );
        }
      }
    }
    return;
  }
  if (bl == 32 && T >= 4 && xa != 0) {
    // prefill, block-32 types: the chunk's rows as a panel interleaved by 4 rows (unpackPanel32) x token
    // octets (prepQuads16), 4 rows x 2 quads tiles; their f32 accumulators in the 512 spare bytes of the
    // thread's scratch (its chunkRows is a multiple of 4: the panel's last group is whole)
    const fa = scratch + <usize>param(job, 14) - 128;
    const sc4 = w + <usize>((nr + 3) & ~3) * <usize>K * 2;
    unpackPanel32(type, <usize>param(job, 2) + <usize>r0 * rowBytes, rowBytes, nr, K, w, sc4);
    const OS = <usize>quadBytes16(K) * 2;
    const nQ = Tp >> 2;
    // quads per block: their packed tokens within ~24 KiB (L1), a multiple of 2
    const qb = max(2, <i32>(<usize>24576 / (OS >> 1)) & ~1);
    for (let g0 = 0; g0 < nQ; g0 += qb) {
      const g1 = min(nQ, g0 + qb);
      for (let r = 0; r < nr; r += 4) {
        const rr = min(4, nr - r);
        const s0 = sc4 + <usize>r * sw;
        const s1 = sc4 + <usize>(r + min(1, rr - 1)) * sw, s2 = sc4 + <usize>(r + min(2, rr - 1)) * sw, s3 = sc4 + <usize>(r + rr - 1) * sw;
        for (let g = g0; g < g1; g += 2) {
          const nq = min(2, g1 - g);
          const gl = g + nq - 1;
          qtile16p(
            w + <usize>r * ws, s0, s1, s2, s3, rr,
            xa + <usize>(g >> 1) * OS, xd + <usize>g * 16, xd + <usize>gl * 16, xdStride, nq, min(4, T - 4 * gl), nb,
            y0 + <usize>(4 * g) * ys + <usize>r * 4, ys, fa,
          );
        }
      }
    }
    return;
  }
  // the int16 rows of unpackInt for the tiles below (the panel paths above unpack their own layout)
  unpackInt(type, <usize>param(job, 2) + <usize>r0 * rowBytes, rowBytes, nr, K, w, sc, m, dm);
  if (T < 4) {
    // decode (and up to 3 tokens): 4 rows x 1 token tiles
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < nr; r += 4) {
        const rr = min(4, nr - r);
        const wr = w + <usize>r * ws;
        itile4x1(
          wr, wr + <usize>min(1, rr - 1) * ws, wr + <usize>min(2, rr - 1) * ws, wr + <usize>min(3, rr - 1) * ws, sc + <usize>r * sw, sw, rr,
          xq + <usize>t * ws, xd + <usize>t * 4, xdStride, nb, bl,
          mins, m + <usize>r * ms, dm + <usize>r * sw, xsum + <usize>t * xsumStride, y0 + <usize>t * ys + <usize>r * 4,
        );
      }
    }
    return;
  }
  for (let t0 = 0; t0 < T; t0 += tb) {
    const t1 = min(T, t0 + tb);
    for (let r = 0; r < nr; r += 2) {
      const rr = min(2, nr - r);
      const r1 = r + rr - 1;
      for (let t = t0; t < t1; t += 4) {
        itile(
          w + <usize>r * ws, w + <usize>r1 * ws, sc + <usize>r * sw, sc + <usize>r1 * sw, rr,
          xq + <usize>t * ws, ws, xd + <usize>t * 4, xdStride, min(4, t1 - t), nb, bl,
          mins, m + <usize>r * ms, m + <usize>r1 * ms, dm + <usize>r * sw, dm + <usize>r1 * sw, xsum + <usize>t * xsumStride, xsumStride,
          y0 + <usize>t * ys + <usize>r * 4, ys,
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Element-wise: exp in f32 lanes, SwiGLU, log-sum-exp.

/**
 * exp(x) for 4 lanes: x = n ln2 + r (n = round(x / ln2), ln2 split in two parts so that n ln2 is exact),
 * |r| <= ln2 / 2, exp(r) by its Taylor polynomial to r^7 (truncation < 2e-9), times 2^n through the
 * exponent bits. x is clamped to [-87, 88]: exp(-87) ~ 1.6e-38 is still normal, exp(88) ~ 1.7e38 finite.
 * Relative error about 2 ulp.
 */
// @ts-ignore: decorator
@inline function exp4(x: v128): v128 {
  x = f32x4.pmax(f32x4.pmin(x, f32x4.splat(88)), f32x4.splat(-87));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  // n lies in [-126, 127] (or is NaN), where the relaxed truncation (one cvttps2dq) gives the saturating
  // one's integers, and for NaN both shift 0 into the exponent (expScore4's argument)
  const k = ASC_FEATURE_RELAXED_SIMD ? i32x4.relaxed_trunc_f32x4_s(n) : i32x4.trunc_sat_f32x4_s(n);
  return i32x4.add(expPoly4(x, n), i32x4.shl(k, 23));
}

/**
 * exp4's and expScore4's mantissa part: r = x - n ln2 (ln2 in two parts, so n ln2 is exact), then the
 * Taylor polynomial of exp(r) to r^7 in Horner form; the caller adds n to the exponent bits.
 */
// @ts-ignore: decorator
@inline function expPoly4(x: v128, n: v128): v128 {
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375))); // ln2 high part, 9 bits
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4))); // ln2 - 0.693359375
  let p = f32x4.splat(1.0 / 5040);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 720));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 120));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 24));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 6));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1));
  return p;
}

/** exp of n values at x into y (tests) */
export function expArray(x: usize, y: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(y + <usize>i * 4, exp4(v128.load(x + <usize>i * 4)));
  for (; i < n; i++) store<f32>(y + <usize>i * 4, f32x4.extract_lane(exp4(f32x4.splat(load<f32>(x + <usize>i * 4))), 0));
}

/** SwiGLU in place: g[i] = g[i] / (1 + exp(-g[i])) * u[i] */
export function siluMul(g: usize, u: usize, n: i32): void {
  const one = f32x4.splat(1);
  let i = 0;
  // two vectors a step: two independent chains of exp4's dependent operations (each value's operations unchanged)
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i * 4;
    const x = v128.load(g + o), y = v128.load(g + o, 16);
    const ex = exp4(f32x4.neg(x)), ey = exp4(f32x4.neg(y));
    v128.store(g + o, f32x4.mul(f32x4.div(x, f32x4.add(one, ex)), v128.load(u + o)));
    v128.store(g + o, f32x4.mul(f32x4.div(y, f32x4.add(one, ey)), v128.load(u + o, 16)), 16);
  }
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i * 4;
    const x = v128.load(g + o);
    v128.store(g + o, f32x4.mul(f32x4.div(x, f32x4.add(one, exp4(f32x4.neg(x)))), v128.load(u + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i * 4;
    const x = load<f32>(g + o);
    store<f32>(g + o, (x / (1 + f32x4.extract_lane(exp4(f32x4.splat(-x)), 0))) * load<f32>(u + o));
  }
}

/**
 * The index of the first of n f32 values at x that is not finite (NaN or +-infinity: exponent bits all
 * ones), -1 when every one is finite (the runtime's check of each layer's output and of the logits).
 */
export function firstNonFinite(x: usize, n: i32): i32 {
  const mag = i32x4.splat(0x7fffffff);
  const big = i32x4.splat(0x7f7fffff); // the largest finite magnitude's bits
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const o = x + <usize>i * 4;
    // |x| bits above the largest finite value's (signed compare: |x| bits are non-negative)
    const a = i32x4.gt_s(v128.and(v128.load(o), mag), big);
    const b = i32x4.gt_s(v128.and(v128.load(o, 16), mag), big);
    const c = i32x4.gt_s(v128.and(v128.load(o, 32), mag), big);
    const d = i32x4.gt_s(v128.and(v128.load(o, 48), mag), big);
    if (v128.any_true(v128.or(v128.or(a, b), v128.or(c, d)))) break;
  }
  for (; i < n; i++) if ((load<u32>(x + <usize>i * 4) & 0x7fffffff) >= 0x7f800000) return i;
  return -1;
}

/** log sum_i exp(x[i] - max) of n values (max = the largest x, passed in), summed in f64 */
export function logSumExp(x: usize, n: i32, max: f32): f64 {
  const m = f32x4.splat(max);
  let a = f32x4.splat(0);
  let sum: f64 = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    a = f32x4.add(a, exp4(f32x4.sub(v128.load(x + <usize>i * 4), m)));
    if ((i & 255) == 252) {
      // flush the f32 lanes every 64 vectors (each lane holds at most 64 values <= 1)
      sum += <f64>f32x4.extract_lane(a, 0) + <f64>f32x4.extract_lane(a, 1) + <f64>f32x4.extract_lane(a, 2) + <f64>f32x4.extract_lane(a, 3);
      a = f32x4.splat(0);
    }
  }
  sum += <f64>f32x4.extract_lane(a, 0) + <f64>f32x4.extract_lane(a, 1) + <f64>f32x4.extract_lane(a, 2) + <f64>f32x4.extract_lane(a, 3);
  for (; i < n; i++) sum += <f64>f32x4.extract_lane(exp4(f32x4.splat(load<f32>(x + <usize>i * 4) - max)), 0);
  return Math.log(sum);
}

/**
 * The largest of n f32 values at x (finite: the runtime checked them) and the first index holding it: the
 * value and index of the scalar scan `if (x[i] > max)` from x[0] (max is exact in any order; the index is
 * the first element equal to it, as the scan keeps the first of equal values)
 */
function rowMax(x: usize, n: i32, at: usize): f32 {
  let m4 = v128.load32_splat(x);
  let i = 0;
  for (; i + 4 <= n; i += 4) m4 = f32x4.max(m4, v128.load(x + <usize>i * 4));
  let m = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
  for (; i < n; i++) m = max(m, load<f32>(x + <usize>i * 4));
  let j = 0;
  while (load<f32>(x + <usize>j * 4) != m) j++;
  store<i32>(at, j);
  return m;
}

// Log-softmax parts of logit rows (job kind 12, a run of rows per chunk), the perplexity's per-row max,
// first argmax and logSumExp (the same function: the same bits):
//   0 kind = 12 | 1 x | 2 n (values per row) | 3 rows | 4 rows per chunk | 5 out max (f32) | 6 out lse (f64) | 7 out argmax (i32)
function logSoftmaxChunk(job: usize, chunk: i32): void {
  const n = param(job, 2);
  const per = param(job, 4);
  const r1 = min(param(job, 3), (chunk + 1) * per);
  for (let r = chunk * per; r < r1; r++) {
    const row = <usize>param(job, 1) + <usize>r * <usize>n * 4;
    const m = rowMax(row, n, <usize>param(job, 7) + <usize>r * 4);
    store<f32>(<usize>param(job, 5) + <usize>r * 4, m);
    store<f64>(<usize>param(job, 6) + <usize>r * 8, logSumExp(row, n, m));
  }
}

// ---------------------------------------------------------------------------------------------------
// Causal attention of T tokens at positions pos0 .. pos0 + T - 1, one head per chunk. Token t sees
// positions 0 .. pos0 + t of the cache:
//   s[p] = (q · k[p]) * scale,  e[p] = exp(s[p] - max s),  out = (sum_p e[p] v[p]) / sum_p e[p]
// Query head h reads key/value head h / group. The dot products are in 4 lanes like the matmul's; the
// exponentials in f32 lanes (exp4, below), their sum in f64; the weighted sum of values in f32 lanes.
// Attention job (i32 words):
//   0 kind = 2 | 1 q | 2 q row stride (bytes) | 3 keys | 4 values | 5 cache row stride (bytes) | 6 T
//   7 pos0 | 8 headDim | 9 group | 10 scale (f32 bits) | 11 out | 12 out row stride (bytes)
//   13 scratch | 14 scratch bytes per thread (six rows of 4 bytes per position, each a multiple of 16 bytes,
//   then word 15's bytes) | 15 bytes for the head's keys and values gathered (2 (pos0 + T) headDim 4; 0: read in place)

/**
 * [hsum(a), hsum(b), hsum(c), hsum(d)] * scale stored at s: each lane sums its vector as hsum does,
 * (v0 + v2) + (v1 + v3), so the 4 scores are the bits of 4 hsum calls, in one store
 */
// @ts-ignore: decorator
@inline function hsumStore4(a: v128, b: v128, c: v128, d: v128, scale: f32, s: usize): void {
  // [a0 + a2, a1 + a3, b0 + b2, b1 + b3], [c.., d..]
  const p = f32x4.add(v128.shuffle<f32>(a, b, 0, 1, 4, 5), v128.shuffle<f32>(a, b, 2, 3, 6, 7));
  const q = f32x4.add(v128.shuffle<f32>(c, d, 0, 1, 4, 5), v128.shuffle<f32>(c, d, 2, 3, 6, 7));
  v128.store(s, f32x4.mul(f32x4.add(v128.shuffle<f32>(p, q, 0, 2, 4, 6), v128.shuffle<f32>(p, q, 1, 3, 5, 7)), f32x4.splat(scale)));
}

/** q · k over n bytes (a multiple of 16) for 4 keys k0 + j * ks, scaled, into s[0..4) */
// @ts-ignore: decorator
@inline function dot4(q: usize, k0: usize, ks: usize, n: usize, scale: f32, s: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  const k1 = k0 + ks, k2 = k0 + 2 * ks, k3 = k0 + 3 * ks;
  for (let i: usize = 0; i < n; i += 16) {
    const u = v128.load(q + i);
    a0 = fma(u, v128.load(k0 + i), a0);
    a1 = fma(u, v128.load(k1 + i), a1);
    a2 = fma(u, v128.load(k2 + i), a2);
    a3 = fma(u, v128.load(k3 + i), a3);
  }
  hsumStore4(a0, a1, a2, a3, scale, s);
}

/** rows rows of n bytes (a multiple of 16), src rows ss bytes apart, to dst one after another */
// @ts-ignore: decorator
@inline function gatherRows(src: usize, ss: usize, rows: i32, n: usize, dst: usize): void {
  for (let p = 0; p < rows; p++, src += ss) {
    let i: usize = 0;
    for (; i + 64 <= n; i += 64, dst += 64) {
      const a = v128.load(src + i), b = v128.load(src + i, 16), c = v128.load(src + i, 32), d = v128.load(src + i, 48);
      v128.store(dst, a); v128.store(dst, b, 16); v128.store(dst, c, 32); v128.store(dst, d, 48);
    }
    for (; i < n; i += 16, dst += 16) v128.store(dst, v128.load(src + i));
  }
}

function attentionChunk(job: usize, h: i32, thread: i32): void {
  const hd = <usize>param(job, 8);
  const n = hd * 4;
  const kvOff = <usize>(h / param(job, 9)) * n;
  const s = <usize>param(job, 13) + <usize>thread * <usize>param(job, 14);
  // word 15: bytes at the end of the thread's scratch for the head's keys and values side by side (0: none)
  const copy = <usize>param(job, 15);
  // six score rows in the thread's scratch, rs bytes apart (a multiple of 16)
  const rs = ((<usize>param(job, 14) - copy) / 6) & ~(<usize>15);
  let keys = <usize>param(job, 3) + kvOff, values = <usize>param(job, 4) + kvOff, cs = <usize>param(job, 5);
  if (copy != 0) {
    // the head's rows of the cache (cs bytes apart: a 4 KiB page every row or two, which the prefetchers
    // do not follow) gathered into n-byte rows once: the scores and value sums then read them as one
    // stream; the same values in the same operations (the same bits)
    const np = param(job, 7) + param(job, 6);
    const kc = s + <usize>param(job, 14) - copy, vc = kc + <usize>np * n;
    gatherRows(keys, cs, np, n, kc);
    gatherRows(values, cs, np, n, vc);
    keys = kc;
    values = vc;
    cs = n;
  }
  attendHeadSixes(
    <usize>param(job, 1) + <usize>h * n, <usize>param(job, 2), keys, values,
    cs, param(job, 6), param(job, 7), reinterpret<f32>(param(job, 10)), <usize>param(job, 11) + <usize>h * n,
    <usize>param(job, 12), s, rs, n,
  );
}

/** (q · k) * scale over n bytes for one query and one key, into s (the order of dot4's lanes) */
// @ts-ignore: decorator
@inline function dot1(q: usize, k: usize, n: usize, scale: f32, s: usize): void {
  let a = f32x4.splat(0);
  for (let i: usize = 0; i < n; i += 16) a = fma(v128.load(q + i), v128.load(k + i), a);
  store<f32>(s, hsum(a) * scale);
}

/** dot4 for two queries qa, qb at once (each key loaded once): scores into sa[0..4), sb[0..4) */
// @ts-ignore: decorator
@inline function dot4x2(qa: usize, qb: usize, k0: usize, ks: usize, n: usize, scale: f32, sa: usize, sb: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
  const k1 = k0 + ks, k2 = k0 + 2 * ks, k3 = k0 + 3 * ks;
  for (let i: usize = 0; i < n; i += 16) {
    const u = v128.load(qa + i), w = v128.load(qb + i);
    const c0 = v128.load(k0 + i), c1 = v128.load(k1 + i), c2 = v128.load(k2 + i), c3 = v128.load(k3 + i);
    a0 = fma(u, c0, a0); b0 = fma(w, c0, b0);
    a1 = fma(u, c1, a1); b1 = fma(w, c1, b1);
    a2 = fma(u, c2, a2); b2 = fma(w, c2, b2);
    a3 = fma(u, c3, a3); b3 = fma(w, c3, b3);
  }
  hsumStore4(a0, a1, a2, a3, scale, sa);
  hsumStore4(b0, b1, b2, b3, scale, sb);
}

/**
 * The value sums of two queries, a (np positions, e[p] at sa) and b (np + 1 positions, at sb): out =
 * sum_p e[p] v[p] * inv, each output element's fma chain over p = 0, 1, .. (b's last position after the
 * shared ones), 4 vectors (16 values) of the head for both queries at a time: each value row is loaded
 * once for both. From byte i0 of the head on (pairValuesSum did the first 64).
 */
// @ts-ignore: decorator
@inline function pairValues(sa: usize, sb: usize, np: i32, ia: f32, ib: f32, values: usize, cs: usize, oa: usize, ob: usize, n: usize, i0: usize): void {
  let p = 0;
  let i: usize = i0;
  for (; i + 64 <= n; i += 64) {
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
    for (p = 0; p < np; p++) {
      const ea = v128.load32_splat(sa + <usize>p * 4), eb = v128.load32_splat(sb + <usize>p * 4);
      const v = values + <usize>p * cs + i;
      const v0 = v128.load(v), v1 = v128.load(v, 16), v2 = v128.load(v, 32), v3 = v128.load(v, 48);
      a0 = fma(ea, v0, a0); b0 = fma(eb, v0, b0);
      a1 = fma(ea, v1, a1); b1 = fma(eb, v1, b1);
      a2 = fma(ea, v2, a2); b2 = fma(eb, v2, b2);
      a3 = fma(ea, v3, a3); b3 = fma(eb, v3, b3);
    }
    const eb = v128.load32_splat(sb + <usize>np * 4);
    const v = values + <usize>np * cs + i;
    b0 = fma(eb, v128.load(v), b0);
    b1 = fma(eb, v128.load(v, 16), b1);
    b2 = fma(eb, v128.load(v, 32), b2);
    b3 = fma(eb, v128.load(v, 48), b3);
    const va = f32x4.splat(ia), vb = f32x4.splat(ib);
    v128.store(oa + i, f32x4.mul(a0, va)); v128.store(oa + i, f32x4.mul(a1, va), 16);
    v128.store(oa + i, f32x4.mul(a2, va), 32); v128.store(oa + i, f32x4.mul(a3, va), 48);
    v128.store(ob + i, f32x4.mul(b0, vb)); v128.store(ob + i, f32x4.mul(b1, vb), 16);
    v128.store(ob + i, f32x4.mul(b2, vb), 32); v128.store(ob + i, f32x4.mul(b3, vb), 48);
  }
  for (; i < n; i += 16) {
    let a = f32x4.splat(0), b = f32x4.splat(0);
    for (p = 0; p < np; p++) {
      const v = v128.load(values + <usize>p * cs + i);
      a = fma(v128.load32_splat(sa + <usize>p * 4), v, a);
      b = fma(v128.load32_splat(sb + <usize>p * 4), v, b);
    }
    b = fma(v128.load32_splat(sb + <usize>np * 4), v128.load(values + <usize>np * cs + i), b);
    v128.store(oa + i, f32x4.mul(a, f32x4.splat(ia)));
    v128.store(ob + i, f32x4.mul(b, f32x4.splat(ib)));
  }
}

/**
 * attendHead two queries at a time (t and t + 1, which sees one position more): each key and value row
 * is loaded once for both. Every score, exponential, sum and output element goes through the same
 * operations in the same order as in attendHead (scores are separate dot products; the value sums run
 * over p = 0, 1, ... per output element, query t + 1's last position after the shared ones): the same
 * bits. s, s2: the two queries' score rows.
 */
function attendHeadPairs(q0: usize, qs: usize, keys: usize, values: usize, cs: usize, T: i32, pos0: i32, scale: f32, o0: usize, os: usize, s: usize, s2: usize, n: usize): void {
  let t = 0;
  for (; t + 2 <= T; t += 2) {
    const qa = q0 + <usize>t * qs, qb = qa + qs;
    const np = pos0 + t + 1; // query t + 1 sees np + 1 positions
    let p = 0;
    for (; p + 4 <= np; p += 4) dot4x2(qa, qb, keys + <usize>p * cs, cs, n, scale, s + <usize>p * 4, s2 + <usize>p * 4);
    for (; p < np; p++) {
      dot1(qa, keys + <usize>p * cs, n, scale, s + <usize>p * 4);
      dot1(qb, keys + <usize>p * cs, n, scale, s2 + <usize>p * 4);
    }
    dot1(qb, keys + <usize>np * cs, n, scale, s2 + <usize>np * 4);
    const ia = softmaxScores(s, np), ib = softmaxScores(s2, np + 1);
    const oa = o0 + <usize>t * os;
    pairValues(s, s2, np, ia, ib, values, cs, oa, oa + os, n, 0);
  }
  if (t < T) attendHead(q0 + <usize>t * qs, qs, keys, values, cs, 1, pos0 + t, scale, o0 + <usize>t * os, os, s, n);
}

/**
 * [hsum(a), hsum(b), hsum(c)] * scale stored at s[0..3) (hsumStore4's lanes: each (v0 + v2) + (v1 + v3))
 */
// @ts-ignore: decorator
@inline function hsumStore3(a: v128, b: v128, c: v128, scale: f32, s: usize): void {
  const p = f32x4.add(v128.shuffle<f32>(a, b, 0, 1, 4, 5), v128.shuffle<f32>(a, b, 2, 3, 6, 7));
  const q = f32x4.add(v128.shuffle<f32>(c, c, 0, 1, 0, 1), v128.shuffle<f32>(c, c, 2, 3, 2, 3));
  const r = f32x4.mul(f32x4.add(v128.shuffle<f32>(p, q, 0, 2, 4, 6), v128.shuffle<f32>(p, q, 1, 3, 5, 7)), f32x4.splat(scale));
  v128.store64_lane(s, r, 0);
  v128.store32_lane(s, r, 2, 8);
}

/**
 * The scores of 3 queries q0 + j qs (rows s0 + j rs) against 3 keys k0 + m ks (at s0 + j rs + 4m): 9
 * accumulators (dot4x2 has 8, each a chain as long as its FMAs take at 2 a cycle; 9 leave slack), each
 * key and query vector loaded once for 3 products. Each score is dot1's.
 */
// @ts-ignore: decorator
@inline function dot3x3(q0: usize, qs: usize, k0: usize, ks: usize, n: usize, scale: f32, s0: usize, rs: usize): void {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0);
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0);
  let d0 = f32x4.splat(0), d1 = f32x4.splat(0), d2 = f32x4.splat(0);
  const k1 = k0 + ks, k2 = k1 + ks, q1 = q0 + qs, q2 = q1 + qs;
  for (let i: usize = 0; i < n; i += 16) {
    const c0 = v128.load(k0 + i), c1 = v128.load(k1 + i), c2 = v128.load(k2 + i);
    let u = v128.load(q0 + i);
    a0 = fma(u, c0, a0); a1 = fma(u, c1, a1); a2 = fma(u, c2, a2);
    u = v128.load(q1 + i);
    b0 = fma(u, c0, b0); b1 = fma(u, c1, b1); b2 = fma(u, c2, b2);
    u = v128.load(q2 + i);
    d0 = fma(u, c0, d0); d1 = fma(u, c1, d1); d2 = fma(u, c2, d2);
  }
  hsumStore3(a0, a1, a2, scale, s0);
  hsumStore3(b0, b1, b2, scale, s0 + rs);
  hsumStore3(d0, d1, d2, scale, s0 + 2 * rs);
}

/** dot1 for 3 queries q0 + j qs and one key k, into s0 + j rs */
// @ts-ignore: decorator
@inline function dot1x3(q0: usize, qs: usize, k: usize, n: usize, scale: f32, s0: usize, rs: usize): void {
  let a = f32x4.splat(0), b = f32x4.splat(0), d = f32x4.splat(0);
  const q1 = q0 + qs, q2 = q1 + qs;
  for (let i: usize = 0; i < n; i += 16) {
    const c = v128.load(k + i);
    a = fma(v128.load(q0 + i), c, a);
    b = fma(v128.load(q1 + i), c, b);
    d = fma(v128.load(q2 + i), c, d);
  }
  store<f32>(s0, hsum(a) * scale);
  store<f32>(s0 + rs, hsum(b) * scale);
  store<f32>(s0 + 2 * rs, hsum(d) * scale);
}

/** The scores of queries q0 + j qs, j = 0..2, seeing np + j positions, into rows s0 + j rs */
// @ts-ignore: decorator
@inline function scoresTriple(q0: usize, qs: usize, keys: usize, cs: usize, np: i32, scale: f32, s0: usize, rs: usize, n: usize): void {
  let p = 0;
  for (; p + 3 <= np; p += 3) dot3x3(q0, qs, keys + <usize>p * cs, cs, n, scale, s0 + <usize>p * 4, rs);
  for (; p < np; p++) dot1x3(q0, qs, keys + <usize>p * cs, n, scale, s0 + <usize>p * 4, rs);
  const k = keys + <usize>np * cs;
  dot1(q0 + qs, k, n, scale, s0 + rs + <usize>np * 4);
  dot1(q0 + 2 * qs, k, n, scale, s0 + 2 * rs + <usize>np * 4);
  dot1(q0 + 2 * qs, k + cs, n, scale, s0 + 2 * rs + <usize>(np + 1) * 4);
}

/** softmaxScores' exponentials alone: s[p] = exp(s[p] - max) for the np scores at s (in place) */
// @ts-ignore: decorator
@inline function expScores(s: usize, np: i32, max: f32): void {
  const m = f32x4.splat(max);
  let p = 0;
  for (; p + 8 <= np; p += 8) {
    const e = expScore4(f32x4.sub(v128.load(s + <usize>p * 4), m));
    const g = expScore4(f32x4.sub(v128.load(s + <usize>p * 4, 16), m));
    v128.store(s + <usize>p * 4, e);
    v128.store(s + <usize>p * 4, g, 16);
  }
  for (; p + 4 <= np; p += 4) v128.store(s + <usize>p * 4, expScore4(f32x4.sub(v128.load(s + <usize>p * 4), m)));
  for (; p < np; p++) store<f32>(s + <usize>p * 4, f32x4.extract_lane(expScore4(f32x4.splat(load<f32>(s + <usize>p * 4) - max)), 0));
}

/**
 * pairValues with the rows' sums (n >= 64 bytes; e[p] at sa, sb already exponentials): the first 16 values
 * of the head, positions 4 at a time, also add each 4 of e into the rows' f64 sums (softmaxScores' order:
 * sum += ((e[p] + e[p+1]) + e[p+2]) + e[p+3], then the tail one by one; row b's np + 1 positions may end
 * in one more group of 4), then 1 / sum; the rest of the head by pairValues.
 */
// @ts-ignore: decorator
@inline function pairValuesSum(sa: usize, sb: usize, np: i32, values: usize, cs: usize, oa: usize, ob: usize, n: usize): void {
  let sumA: f64 = 0, sumB: f64 = 0;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
  let p = 0;
  for (; p + 4 <= np; p += 4) {
    // the two rows' 4-term sums side by side (softmaxScores' f64x2 step)
    const e = v128.load(sa + <usize>p * 4), g = v128.load(sb + <usize>p * 4);
    const lo = v128.shuffle<f32>(e, g, 0, 4, 1, 5), hi = v128.shuffle<f32>(e, g, 2, 6, 3, 7);
    const t = f64x2.add(
      f64x2.add(f64x2.add(f64x2.promote_low_f32x4(lo), f64x2.promote_low_f32x4(v128.shuffle<f32>(lo, lo, 2, 3, 2, 3))), f64x2.promote_low_f32x4(hi)),
      f64x2.promote_low_f32x4(v128.shuffle<f32>(hi, hi, 2, 3, 2, 3)),
    );
    sumA += f64x2.extract_lane(t, 0);
    sumB += f64x2.extract_lane(t, 1);
    for (let u = 0; u < 4; u++) {
      const q = p + u;
      const ea = v128.load32_splat(sa + <usize>q * 4), eb = v128.load32_splat(sb + <usize>q * 4);
      const v = values + <usize>q * cs;
      const v0 = v128.load(v), v1 = v128.load(v, 16), v2 = v128.load(v, 32), v3 = v128.load(v, 48);
      a0 = fma(ea, v0, a0); b0 = fma(eb, v0, b0);
      a1 = fma(ea, v1, a1); b1 = fma(eb, v1, b1);
      a2 = fma(ea, v2, a2); b2 = fma(eb, v2, b2);
      a3 = fma(ea, v3, a3); b3 = fma(eb, v3, b3);
    }
  }
  const g0 = p;
  for (; p < np; p++) {
    const ea = v128.load32_splat(sa + <usize>p * 4), eb = v128.load32_splat(sb + <usize>p * 4);
    const v = values + <usize>p * cs;
    const v0 = v128.load(v), v1 = v128.load(v, 16), v2 = v128.load(v, 32), v3 = v128.load(v, 48);
    a0 = fma(ea, v0, a0); b0 = fma(eb, v0, b0);
    a1 = fma(ea, v1, a1); b1 = fma(eb, v1, b1);
    a2 = fma(ea, v2, a2); b2 = fma(eb, v2, b2);
    a3 = fma(ea, v3, a3); b3 = fma(eb, v3, b3);
  }
  const eb = v128.load32_splat(sb + <usize>np * 4);
  const v = values + <usize>np * cs;
  b0 = fma(eb, v128.load(v), b0);
  b1 = fma(eb, v128.load(v, 16), b1);
  b2 = fma(eb, v128.load(v, 32), b2);
  b3 = fma(eb, v128.load(v, 48), b3);
  // the sums' tails: row a's positions g0 .. np - 1 one by one; row b's g0 .. np, one group of 4 when that is 4
  for (p = g0; p < np; p++) sumA += <f64>load<f32>(sa + <usize>p * 4);
  const tb = sb + <usize>g0 * 4;
  if (np + 1 - g0 == 4) sumB += <f64>load<f32>(tb) + <f64>load<f32>(tb, 4) + <f64>load<f32>(tb, 8) + <f64>load<f32>(tb, 12);
  else for (p = g0; p <= np; p++) sumB += <f64>load<f32>(sb + <usize>p * 4);
  const ia = <f32>(1 / sumA), ib = <f32>(1 / sumB);
  const va = f32x4.splat(ia), vb = f32x4.splat(ib);
  v128.store(oa, f32x4.mul(a0, va)); v128.store(oa, f32x4.mul(a1, va), 16);
  v128.store(oa, f32x4.mul(a2, va), 32); v128.store(oa, f32x4.mul(a3, va), 48);
  v128.store(ob, f32x4.mul(b0, vb)); v128.store(ob, f32x4.mul(b1, vb), 16);
  v128.store(ob, f32x4.mul(b2, vb), 32); v128.store(ob, f32x4.mul(b3, vb), 48);
  pairValues(sa, sb, np, ia, ib, values, cs, oa, ob, n, 64);
}

/**
 * attendHead six queries at a time (t + j sees np + j positions): the scores as two triples (dot3x3:
 * 3 queries x 3 keys), the value sums as three pairs (pairValuesSum: softmaxScores' f64 sums taken in
 * the first 16 values' loop, where they overlap the FMAs), the rest as attendHeadPairs. Every
 * score, exponential, sum and output element goes through attendHead's operations in its order: the same
 * bits. Rows s + j rs, j = 0..5 (rs a multiple of 16 holding pos0 + T scores).
 */
function attendHeadSixes(q0: usize, qs: usize, keys: usize, values: usize, cs: usize, T: i32, pos0: i32, scale: f32, o0: usize, os: usize, s: usize, rs: usize, n: usize): void {
  let t = 0;
  for (; t + 6 <= T; t += 6) {
    const q = q0 + <usize>t * qs;
    const np = pos0 + t + 1;
    scoresTriple(q, qs, keys, cs, np, scale, s, rs, n);
    scoresTriple(q + 3 * qs, qs, keys, cs, np + 3, scale, s + 3 * rs, rs, n);
    const o = o0 + <usize>t * os;
    for (let j = 0; j < 6; j += 2) {
      const sa = s + <usize>j * rs, sb = sa + rs, oa = o + <usize>j * os, ob = oa + os;
      if (n >= 64) {
        expScores(sa, np + j, scoresMax(sa, np + j));
        expScores(sb, np + j + 1, scoresMax(sb, np + j + 1));
        pairValuesSum(sa, sb, np + j, values, cs, oa, ob, n);
      } else {
        const ia = softmaxScores(sa, np + j), ib = softmaxScores(sb, np + j + 1);
        pairValues(sa, sb, np + j, ia, ib, values, cs, oa, ob, n, 0);
      }
    }
  }
  if (t < T) attendHeadPairs(q0 + <usize>t * qs, qs, keys, values, cs, T - t, pos0 + t, scale, o0 + <usize>t * os, os, s, s + rs, n);
}

/** One head of attention: T queries q0 + t * qs against keys / values cs bytes apart (n = headDim * 4 bytes); s: scores scratch */
function attendHead(q0: usize, qs: usize, keys: usize, values: usize, cs: usize, T: i32, pos0: i32, scale: f32, o0: usize, os: usize, s: usize, n: usize): void {
  for (let t = 0; t < T; t++) {
    const q = q0 + <usize>t * qs;
    const np = pos0 + t + 1;
    // scores
    let p = 0;
    for (; p + 4 <= np; p += 4) dot4(q, keys + <usize>p * cs, cs, n, scale, s + <usize>p * 4);
    for (; p < np; p++) {
      let a = f32x4.splat(0);
      const k = keys + <usize>p * cs;
      for (let i: usize = 0; i < n; i += 16) a = fma(v128.load(q + i), v128.load(k + i), a);
      store<f32>(s + <usize>p * 4, hsum(a) * scale);
    }
    attendScored(s, np, values, cs, o0 + <usize>t * os, n);
  }
}

/**
 * exp4 of x <= 0 or NaN (a score minus its row's largest score): the same operations and bits, without
 * what cannot change them there. pmin(x, 88) is x for x <= 88 and for NaN; n = nearest(x log2 e) lies in
 * [-126, 0], where the relaxed truncation (cvttps2dq) equals the saturating one, and for NaN both put 0
 * into the exponent (the relaxed 0x80000000 shifted left by 23 is 0). V8's trunc_sat is 5 instructions.
 */
// @ts-ignore: decorator
@inline function expScore4(x: v128): v128 {
  x = f32x4.pmax(x, f32x4.splat(-87));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.4426950408889634)));
  const k = ASC_FEATURE_RELAXED_SIMD ? i32x4.relaxed_trunc_f32x4_s(n) : i32x4.trunc_sat_f32x4_s(n);
  return i32x4.add(expPoly4(x, n), i32x4.shl(k, 23));
}

/**
 * The largest of the np scores at s, NaN when one is NaN (what the scalar Mathf.max scan gives, up to the
 * sign of a zero maximum, which changes no s[p] - max: +-0 - +-0 is +-0 and exp4(+-0) = 1 either way).
 * pmax is one maxps; f32x4.max's NaN and zero-sign handling was 8 instructions on a 13-cycle chain.
 */
// @ts-ignore: decorator
@inline function scoresMax(s: usize, np: i32): f32 {
  let p = 0;
  let m0 = f32x4.splat(-Infinity), m1 = f32x4.splat(-Infinity), nan = f32x4.splat(0);
  for (; p + 8 <= np; p += 8) {
    const a = v128.load(s + <usize>p * 4), b = v128.load(s + <usize>p * 4, 16);
    m0 = f32x4.pmax(m0, a);
    m1 = f32x4.pmax(m1, b);
    nan = v128.or(nan, v128.or(f32x4.ne(a, a), f32x4.ne(b, b)));
  }
  for (; p + 4 <= np; p += 4) {
    const a = v128.load(s + <usize>p * 4);
    m0 = f32x4.pmax(m0, a);
    nan = v128.or(nan, f32x4.ne(a, a));
  }
  m0 = f32x4.pmax(m0, m1);
  let max: f32 = Mathf.max(Mathf.max(f32x4.extract_lane(m0, 0), f32x4.extract_lane(m0, 1)), Mathf.max(f32x4.extract_lane(m0, 2), f32x4.extract_lane(m0, 3)));
  for (; p < np; p++) max = Mathf.max(max, load<f32>(s + <usize>p * 4));
  return v128.any_true(nan) ? NaN : max;
}

/**
 * the np scores at s replaced by e[p] = exp(s[p] - max) (in place); returns f32(1 / sum_p e[p]), the sum in
 * f64: sum += ((e[p] + e[p+1]) + e[p+2]) + e[p+3] for each 4 in turn, then each tail e[p] (the bits of the
 * scalar definition). Two vectors at a time, their two 4-term sums side by side in one f64x2.
 */
// @ts-ignore: decorator
@inline function softmaxScores(s: usize, np: i32): f32 {
  const max = scoresMax(s, np);
  const m = f32x4.splat(max);
  let sum: f64 = 0;
  let p = 0;
  for (; p + 8 <= np; p += 8) {
    const e = expScore4(f32x4.sub(v128.load(s + <usize>p * 4), m));
    const g = expScore4(f32x4.sub(v128.load(s + <usize>p * 4, 16), m));
    v128.store(s + <usize>p * 4, e);
    v128.store(s + <usize>p * 4, g, 16);
    // lanes (e_j, g_j) as f64x2 for j = 0..3 (promotion is exact), added in j order
    const lo = v128.shuffle<f32>(e, g, 0, 4, 1, 5), hi = v128.shuffle<f32>(e, g, 2, 6, 3, 7);
    const t = f64x2.add(
      f64x2.add(f64x2.add(f64x2.promote_low_f32x4(lo), f64x2.promote_low_f32x4(v128.shuffle<f32>(lo, lo, 2, 3, 2, 3))), f64x2.promote_low_f32x4(hi)),
      f64x2.promote_low_f32x4(v128.shuffle<f32>(hi, hi, 2, 3, 2, 3)),
    );
    sum += f64x2.extract_lane(t, 0);
    sum += f64x2.extract_lane(t, 1);
  }
  for (; p + 4 <= np; p += 4) {
    const e = expScore4(f32x4.sub(v128.load(s + <usize>p * 4), m));
    v128.store(s + <usize>p * 4, e);
    sum += <f64>f32x4.extract_lane(e, 0) + <f64>f32x4.extract_lane(e, 1) + <f64>f32x4.extract_lane(e, 2) + <f64>f32x4.extract_lane(e, 3);
  }
  for (; p < np; p++) {
    const e = f32x4.extract_lane(expScore4(f32x4.splat(load<f32>(s + <usize>p * 4) - max)), 0);
    store<f32>(s + <usize>p * 4, e);
    sum += <f64>e;
  }
  return <f32>(1 / sum);
}

/** softmax of the np scores at s (in place), then out o = sum_p e[p] v[p] / sum_p e[p] over values cs bytes apart (n = headDim * 4 bytes) */
function attendScored(s: usize, np: i32, values: usize, cs: usize, o: usize, n: usize): void {
  const inv = f32x4.splat(softmaxScores(s, np));
  let p = 0;
  // out = sum_p e[p] v[p] / sum, 8 vectors (32 values) of the head at a time
  let i: usize = 0;
  for (; i + 128 <= n; i += 128) {
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let a4 = f32x4.splat(0), a5 = f32x4.splat(0), a6 = f32x4.splat(0), a7 = f32x4.splat(0);
    for (p = 0; p < np; p++) {
      const e = v128.load32_splat(s + <usize>p * 4);
      const v = values + <usize>p * cs + i;
      a0 = fma(e, v128.load(v), a0);
      a1 = fma(e, v128.load(v, 16), a1);
      a2 = fma(e, v128.load(v, 32), a2);
      a3 = fma(e, v128.load(v, 48), a3);
      a4 = fma(e, v128.load(v, 64), a4);
      a5 = fma(e, v128.load(v, 80), a5);
      a6 = fma(e, v128.load(v, 96), a6);
      a7 = fma(e, v128.load(v, 112), a7);
    }
    v128.store(o + i, f32x4.mul(a0, inv));
    v128.store(o + i, f32x4.mul(a1, inv), 16);
    v128.store(o + i, f32x4.mul(a2, inv), 32);
    v128.store(o + i, f32x4.mul(a3, inv), 48);
    v128.store(o + i, f32x4.mul(a4, inv), 64);
    v128.store(o + i, f32x4.mul(a5, inv), 80);
    v128.store(o + i, f32x4.mul(a6, inv), 96);
    v128.store(o + i, f32x4.mul(a7, inv), 112);
  }
  for (; i < n; i += 16) {
    let a = f32x4.splat(0);
    for (p = 0; p < np; p++) a = fma(v128.load32_splat(s + <usize>p * 4), v128.load(values + <usize>p * cs + i), a);
    v128.store(o + i, f32x4.mul(a, inv));
  }
}


// ---------------------------------------------------------------------------------------------------
// One token's attention row by row (job kind 13, decode): the job words of kind 2 (T = 1), plus
//   15 query heads per chunk | 16 query heads
// Chunk c takes heads [c h, min(heads, (c + 1) h)) and reads the cache by positions: each position's row
// (its heads side by side, kvDim floats) once for all the chunk's heads, in increasing positions, so the
// keys and then the values of a layer are read as one stream instead of one head's 256 bytes every
// cache row (rows 3 KiB apart on the 155M model: a page crossing every read, ~11 GB/s). Each score is
// the dot product of attendHead (16-byte lanes in increasing i, (v0 + v2) + (v1 + v3), times scale), the
// softmax is softmaxScores on each head's row of scores, and each output element is the fma chain of
// attendScored over p = 0, 1, .. (its accumulator kept in the thread's scratch between positions), times
// 1 / sum: the bits of attendHead for T = 1.
// Scratch per thread: heads x score rows (sp bytes each, a multiple of 16) | heads x n accumulators | heads x f32 (1 / sum) | heads x u32 (the kv head's byte offset in a cache row)

/** (v0 + v2) + (v1 + v3) of a, b, c, d as lanes 0..3, times scale (hsumStore4's vector) */
// @ts-ignore: decorator
@inline function hsum4f(a: v128, b: v128, c: v128, d: v128, scale: f32): v128 {
  const p = f32x4.add(v128.shuffle<f32>(a, b, 0, 1, 4, 5), v128.shuffle<f32>(a, b, 2, 3, 6, 7));
  const q = f32x4.add(v128.shuffle<f32>(c, d, 0, 1, 4, 5), v128.shuffle<f32>(c, d, 2, 3, 6, 7));
  return f32x4.mul(f32x4.add(v128.shuffle<f32>(p, q, 0, 2, 4, 6), v128.shuffle<f32>(p, q, 1, 3, 5, 7)), f32x4.splat(scale));
}

function attentionRowsChunk(job: usize, c: i32, thread: i32): void {
  const hd = <usize>param(job, 8);
  const n = hd * 4;
  const group = param(job, 9);
  const hpc = param(job, 15);
  const h0 = c * hpc;
  const h1 = min(param(job, 16), h0 + hpc);
  if (h0 >= h1) return;
  const nh = <usize>(h1 - h0);
  const q0 = <usize>param(job, 1) + <usize>h0 * n;
  const keys = <usize>param(job, 3), values = <usize>param(job, 4), cs = <usize>param(job, 5);
  const np = param(job, 7) + 1;
  const scale = reinterpret<f32>(param(job, 10));
  const o0 = <usize>param(job, 11) + <usize>h0 * n;
  const sp = (<usize>np * 4 + 15) & ~(<usize>15);
  const s = <usize>param(job, 13) + <usize>thread * <usize>param(job, 14);
  const acc = s + nh * sp;
  const invs = acc + nh * n;
  // the kv head's offset in a cache row of query head h0 + j: ((h0 + j) / group) n, once per chunk (a division
  // per head and position cost more than the position's loads)
  const offs = invs + nh * 4;
  for (let j: usize = 0; j < nh; j++) store<u32>(offs + j * 4, <u32>(((h0 + <i32>j) / group) * <i32>n));
  // scores, two positions at a time: 4 heads x 2 positions (8 independent dot products, each head's query
  // vector loaded once for both), then the rest of the heads one by one; an odd last position runs as a pair
  // with itself (its second scores are not stored)
  for (let p0 = 0; p0 < np; p0 += 2) {
    const row = keys + <usize>p0 * cs;
    const two = p0 + 1 < np;
    const c2 = two ? cs : 0;
    let j: usize = 0;
    for (; j + 4 <= nh; j += 4) {
      const qa = q0 + j * n;
      const k0 = row + <usize>load<u32>(offs + j * 4), k1 = row + <usize>load<u32>(offs + j * 4, 4);
      const k2 = row + <usize>load<u32>(offs + j * 4, 8), k3 = row + <usize>load<u32>(offs + j * 4, 12);
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let b0 = f32x4.splat(0), b1 = f32x4.splat(0), b2 = f32x4.splat(0), b3 = f32x4.splat(0);
      for (let i: usize = 0; i < n; i += 16) {
        const u0 = v128.load(qa + i), u1 = v128.load(qa + n + i), u2 = v128.load(qa + 2 * n + i), u3 = v128.load(qa + 3 * n + i);
        a0 = fma(u0, v128.load(k0 + i), a0);
        b0 = fma(u0, v128.load(k0 + c2 + i), b0);
        a1 = fma(u1, v128.load(k1 + i), a1);
        b1 = fma(u1, v128.load(k1 + c2 + i), b1);
        a2 = fma(u2, v128.load(k2 + i), a2);
        b2 = fma(u2, v128.load(k2 + c2 + i), b2);
        a3 = fma(u3, v128.load(k3 + i), a3);
        b3 = fma(u3, v128.load(k3 + c2 + i), b3);
      }
      const r = hsum4f(a0, a1, a2, a3, scale);
      const at = s + j * sp + <usize>p0 * 4;
      v128.store32_lane(at, r, 0);
      v128.store32_lane(at + sp, r, 1);
      v128.store32_lane(at + 2 * sp, r, 2);
      v128.store32_lane(at + 3 * sp, r, 3);
      if (two) {
        const t = hsum4f(b0, b1, b2, b3, scale);
        v128.store32_lane(at, t, 0, 4);
        v128.store32_lane(at + sp, t, 1, 4);
        v128.store32_lane(at + 2 * sp, t, 2, 4);
        v128.store32_lane(at + 3 * sp, t, 3, 4);
      }
    }
    for (; j < nh; j++) {
      const qa = q0 + j * n;
      const k = row + <usize>load<u32>(offs + j * 4);
      let a = f32x4.splat(0), b = f32x4.splat(0);
      for (let i: usize = 0; i < n; i += 16) {
        const u = v128.load(qa + i);
        a = fma(u, v128.load(k + i), a);
        b = fma(u, v128.load(k + c2 + i), b);
      }
      store<f32>(s + j * sp + <usize>p0 * 4, hsum(a) * scale);
      if (two) store<f32>(s + j * sp + <usize>p0 * 4, hsum(b) * scale, 4);
    }
  }
  for (let j: usize = 0; j < nh; j++) store<f32>(invs + j * 4, softmaxScores(s + j * sp, np));
  // values, position by position: acc = fma(e[p], v[p], acc) per head (p = 0 on zeros)
  for (let j: usize = 0; j < nh; j++) {
    const a = acc + j * n;
    for (let i: usize = 0; i < n; i += 16) v128.store(a + i, f32x4.splat(0));
  }
  // four positions per pass over the accumulators: acc = fma(e[p + 3], v[p + 3], fma(.., fma(e[p], v[p], acc))), the
  // chain of one position at a time (the same bits) with a quarter of the accumulators' loads and stores
  let p = 0;
  for (; p + 4 <= np; p += 4) {
    const row = values + <usize>p * cs;
    for (let j: usize = 0; j < nh; j++) {
      const sc = s + j * sp + <usize>p * 4;
      const e0 = v128.load32_splat(sc), e1 = v128.load32_splat(sc, 4), e2 = v128.load32_splat(sc, 8), e3 = v128.load32_splat(sc, 12);
      const v = row + <usize>load<u32>(offs + j * 4);
      const a = acc + j * n;
      let i: usize = 0;
      for (; i + 32 <= n; i += 32) {
        let u = v128.load(a + i), w = v128.load(a + i, 16);
        u = fma(e0, v128.load(v + i), u);
        w = fma(e0, v128.load(v + i, 16), w);
        u = fma(e1, v128.load(v + cs + i), u);
        w = fma(e1, v128.load(v + cs + i, 16), w);
        u = fma(e2, v128.load(v + 2 * cs + i), u);
        w = fma(e2, v128.load(v + 2 * cs + i, 16), w);
        u = fma(e3, v128.load(v + 3 * cs + i), u);
        w = fma(e3, v128.load(v + 3 * cs + i, 16), w);
        v128.store(a + i, u);
        v128.store(a + i, w, 16);
      }
      if (i < n) {
        let u = v128.load(a + i);
        u = fma(e0, v128.load(v + i), u);
        u = fma(e1, v128.load(v + cs + i), u);
        u = fma(e2, v128.load(v + 2 * cs + i), u);
        v128.store(a + i, fma(e3, v128.load(v + 3 * cs + i), u));
      }
    }
  }
  for (; p < np; p++) {
    const row = values + <usize>p * cs;
    for (let j: usize = 0; j < nh; j++) {
      const e = v128.load32_splat(s + j * sp + <usize>p * 4);
      const v = row + <usize>load<u32>(offs + j * 4);
      const a = acc + j * n;
      for (let i: usize = 0; i < n; i += 16) v128.store(a + i, fma(e, v128.load(v + i), v128.load(a + i)));
    }
  }
  for (let j: usize = 0; j < nh; j++) {
    const inv = v128.load32_splat(invs + j * 4);
    const a = acc + j * n, o = o0 + j * n;
    for (let i: usize = 0; i < n; i += 16) v128.store(o + i, f32x4.mul(v128.load(a + i), inv));
  }
}

// ---------------------------------------------------------------------------------------------------
// Attention over a packed cache (job kind 4): chunk kvh first dequantizes key / value head kvh of
// every visible position into the thread's scratch (f32, headDim apart), bit-exactly as the
// TypeScript dequantizers of src/model/kv/sides.ts, then runs attendHead for each query head of its group. Each side (keys at word
// 12, values at word 20) is described by 8 words:
//   +0 mode: 1 GGML rows (type at +3, blocks never straddle heads), 2 KIVI per channel (groups of G
//      positions of one channel), 3 KIVI per token (groups of G channels of one position)
//   +1 packed bytes of position 0 | +2 bytes per position (KIVI keys: per position of a group's records)
//   +3 GGML type or KIVI bits | +4 KIVI G | +5 KIVI bytes per record
//   +6 b: positions [0, b) are read packed, [b, n) as f32 from +7 (rows kvDim apart, position p at +7 + p * kvDim * 4)
// Job words: 0 kind = 4 | 1 q | 2 q row stride | 3 T | 4 pos0 | 5 headDim | 6 group | 7 scale (f32 bits)
//   8 out | 9 out row stride | 10 scratch | 11 scratch bytes per thread | 12..19 keys | 20..27 values | 28 kvDim
//   29 integer keys: the query rows are unrounded; GGML keys of a block-32 type with a Q8_0 vec_dot
//      (Q4_0, Q5_0, Q8_0, IQ4_NL) are scored by integer dot products on the stored blocks

/** KIVI record at r (an f16 scale, an f16 minimum, then codes of `bits` bits): values first.. first + n - 1 to dst + i * ds */
// @ts-ignore: decorator
@inline function kiviRecord(r: usize, bits: i32, first: i32, n: i32, dst: usize, ds: usize): void {
  const scale = f16At(r);
  const min = f16At(r + 2);
  const mask = (1 << bits) - 1;
  const codes = r + 4;
  for (let i = 0; i < n; i++) {
    const bit = (first + i) * bits;
    const at = codes + <usize>(bit >> 3);
    const two = <i32>load<u8>(at) | (((bit & 7) + bits > 8 ? <i32>load<u8>(at, 1) : 0) << 8);
    store<f32>(dst + <usize>i * ds, min + <f32>((two >> (bit & 7)) & mask) * scale);
  }
}

/** lane j (of 4): the two bytes holding code j0 + j of a run of 8 codes of `bits` bits (zeros above), as a swizzle of the run */
// @ts-ignore: decorator
@inline function kiviBytes(bits: i32, j0: i32): v128 {
  let m = i32x4.splat(0);
  const a0 = (j0 * bits) >> 3, a1 = ((j0 + 1) * bits) >> 3, a2 = ((j0 + 2) * bits) >> 3, a3 = ((j0 + 3) * bits) >> 3;
  m = i32x4.replace_lane(m, 0, a0 | ((a0 + 1) << 8) | 0x80800000);
  m = i32x4.replace_lane(m, 1, a1 | ((a1 + 1) << 8) | 0x80800000);
  m = i32x4.replace_lane(m, 2, a2 | ((a2 + 1) << 8) | 0x80800000);
  return i32x4.replace_lane(m, 3, a3 | ((a3 + 1) << 8) | 0x80800000);
}

/** lane j: 2^(8 - s) where s is the bit offset of code j0 + j in its byte ((w << (8 - s)) >> 8 = w >> s) */
// @ts-ignore: decorator
@inline function kiviShifts(bits: i32, j0: i32): v128 {
  let m = i32x4.splat(0);
  m = i32x4.replace_lane(m, 0, 1 << (8 - ((j0 * bits) & 7)));
  m = i32x4.replace_lane(m, 1, 1 << (8 - (((j0 + 1) * bits) & 7)));
  m = i32x4.replace_lane(m, 2, 1 << (8 - (((j0 + 2) * bits) & 7)));
  return i32x4.replace_lane(m, 3, 1 << (8 - (((j0 + 3) * bits) & 7)));
}

/**
 * KIVI record at r, codes first.. first + n - 1 (first and n multiples of 8, bits <= 8), 8 at a time: a
 * run of 8 codes is `bits` bytes; each lane gathers the two bytes of its code (m0 / m1 for codes 0-3 /
 * 4-7 of a run), shifts by a multiply (k0 / k1) and masks; value = min + code * scale (two roundings, as
 * kiviRecord). Reads up to 16 bytes from a run's start (the KIVI sides allocate 16 bytes of slack).
 * Values to dst + i * ds (ds = 4: vector stores).
 */
// @ts-ignore: decorator
@inline function kiviRecord8(r: usize, bits: i32, first: i32, n: i32, dst: usize, ds: usize, m0: v128, m1: v128, k0: v128, k1: v128): void {
  const scale = f32x4.splat(f16At(r));
  const min = f32x4.splat(f16At(r + 2));
  const mask = i32x4.splat((1 << bits) - 1);
  let src = r + 4 + <usize>((first >> 3) * bits);
  for (let i = 0; i < n; i += 8, src += <usize>bits) {
    const w = v128.load(src);
    const c0 = v128.and(i32x4.shr_u(i32x4.mul(i8x16.swizzle(w, m0), k0), 8), mask);
    const c1 = v128.and(i32x4.shr_u(i32x4.mul(i8x16.swizzle(w, m1), k1), 8), mask);
    const v0 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_u(c0), scale), min);
    const v1 = f32x4.add(f32x4.mul(f32x4.convert_i32x4_u(c1), scale), min);
    const o = dst + <usize>i * ds;
    if (ds == 4) {
      v128.store(o, v0);
      v128.store(o, v1, 16);
    } else {
      store<f32>(o, f32x4.extract_lane(v0, 0));
      store<f32>(o + ds, f32x4.extract_lane(v0, 1));
      store<f32>(o + 2 * ds, f32x4.extract_lane(v0, 2));
      store<f32>(o + 3 * ds, f32x4.extract_lane(v0, 3));
      store<f32>(o + 4 * ds, f32x4.extract_lane(v1, 0));
      store<f32>(o + 5 * ds, f32x4.extract_lane(v1, 1));
      store<f32>(o + 6 * ds, f32x4.extract_lane(v1, 2));
      store<f32>(o + 7 * ds, f32x4.extract_lane(v1, 3));
    }
  }
}

/** head kvh of positions [0, n) of one side (descriptor d) as f32 rows of hd values at dst */
function fillHead(d: usize, kvh: i32, hd: i32, kvDim: i32, n: i32, dst: usize): void {
  const mode = load<i32>(d);
  const at = <usize>load<i32>(d, 4);
  const rowBytes = <usize>load<i32>(d, 8);
  const type = load<i32>(d, 12);
  const G = load<i32>(d, 16);
  const rec = <usize>load<i32>(d, 20);
  const b = min(load<i32>(d, 24), n);
  const tail = <usize>load<i32>(d, 28);
  const hb = <usize>hd * 4;
  const c0 = kvh * hd;
  // KIVI codes 8 at a time when the records' runs of 8 codes line up (kiviRecord8), else one by one
  const runs = mode > 1 && type <= 8 && (G & 7) == 0 && (mode == 2 || G <= hd || ((c0 % G) & 7) == 0 && (hd & 7) == 0);
  const m0 = kiviBytes(type, 0), m1 = kiviBytes(type, 4), k0 = kiviShifts(type, 0), k1 = kiviShifts(type, 4);
  if (mode == 1) {
    dequantize(type, at + rowBytes / <usize>(kvDim / hd) * <usize>kvh, rowBytes, b, hd, dst, hd); // past the heads before kvh
  } else if (mode == 2) {
    for (let g = 0; g < b; g += G) for (let c = 0; c < hd; c++) {
      const r = at + <usize>g * rowBytes + <usize>(c0 + c) * rec;
      const o = dst + <usize>g * hb + <usize>c * 4;
      if (runs) kiviRecord8(r, type, 0, G, o, hb, m0, m1, k0, k1);
      else kiviRecord(r, type, 0, G, o, hb);
    }
  } else if (mode == 3) {
    for (let p = 0; p < b; p++) {
      const row = at + <usize>p * rowBytes;
      const o = dst + <usize>p * hb;
      // the head's channels [c0, c0 + hd) span whole groups (G | hd) or lie inside one (hd | G)
      if (G <= hd) {
        for (let c = 0; c < hd; c += G) {
          if (runs) kiviRecord8(row + <usize>((c0 + c) / G) * rec, type, 0, G, o + <usize>c * 4, 4, m0, m1, k0, k1);
          else kiviRecord(row + <usize>((c0 + c) / G) * rec, type, 0, G, o + <usize>c * 4, 4);
        }
      } else if (runs) kiviRecord8(row + <usize>(c0 / G) * rec, type, c0 % G, hd, o, 4, m0, m1, k0, k1);
      else kiviRecord(row + <usize>(c0 / G) * rec, type, c0 % G, hd, o, 4);
    }
  }
  for (let p = max(b, 0); p < n; p++) memory.copy(dst + <usize>p * hb, tail + (<usize>p * <usize>kvDim + <usize>c0) * 4, hb);
}

/**
 * KIVI positions [from, to) of a layer (records at src, rowBytes per position; per channel: groups of G
 * positions, to - from whole groups) as f32 rows of kvDim at dst (position p at dst + p * kvDim * 4),
 * bit-exactly as kiviDequantize of src/model/kv/sides.ts.
 */
export function kiviRows(perChannel: i32, src: usize, rowBytes: usize, bits: i32, G: i32, rec: usize, from: i32, to: i32, kvDim: i32, dst: usize): void {
  const runs = bits <= 8 && (G & 7) == 0;
  const m0 = kiviBytes(bits, 0), m1 = kiviBytes(bits, 4), k0 = kiviShifts(bits, 0), k1 = kiviShifts(bits, 4);
  const rs = <usize>kvDim * 4;
  if (perChannel) {
    for (let g = from; g < to; g += G) for (let c = 0; c < kvDim; c++) {
      const r = src + <usize>g * rowBytes + <usize>c * rec;
      const o = dst + <usize>g * rs + <usize>c * 4;
      if (runs) kiviRecord8(r, bits, 0, G, o, rs, m0, m1, k0, k1);
      else kiviRecord(r, bits, 0, G, o, rs);
    }
  } else {
    for (let p = from; p < to; p++) for (let c = 0; c < kvDim; c += G) {
      const r = src + <usize>p * rowBytes + <usize>(c / G) * rec;
      const o = dst + <usize>p * rs + <usize>c * 4;
      if (runs) kiviRecord8(r, bits, 0, G, o, 4, m0, m1, k0, k1);
      else kiviRecord(r, bits, 0, G, o, 4);
    }
  }
}

/**
 * RoPE of n rows of hd values at dst (row p at position p) from f64 tables of `half` cos / sin per
 * position (row p at cos + p * half * 8), bit-identical to ropeTabled of src/model/llama.ts: x0 and x1
 * widened to f64, x0 * cos - x1 * sin and x0 * sin + x1 * cos in f64, rounded to f32. normal: pairs
 * (2i, 2i + 1), two f64 lanes per pair (x0 * cos + x1 * (-sin) is x0 * cos - x1 * sin exactly); else
 * (NeoX) pairs (i, i + half), two pairs per f64x2.
 */
function ropeHead(dst: usize, n: i32, hd: i32, half: i32, normal: i32, cos: usize, sin: usize): void {
  const hb = <usize>hd * 4;
  const neg = f64x2(-1.0, 1.0);
  for (let p = 0; p < n; p++) {
    const row = dst + <usize>p * hb;
    const tc = cos + <usize>p * <usize>half * 8;
    const ts = sin + <usize>p * <usize>half * 8;
    if (normal) {
      for (let i = 0; i < half; i++) {
        const o = row + <usize>i * 8;
        const x = f64x2.promote_low_f32x4(v128.load64_zero(o));
        const c = f64x2.splat(load<f64>(tc + <usize>i * 8));
        const s = f64x2.mul(f64x2.splat(load<f64>(ts + <usize>i * 8)), neg);
        const r = f64x2.add(f64x2.mul(x, c), f64x2.mul(v128.shuffle<f64>(x, x, 1, 0), s));
        v128.store64_lane(o, f32x4.demote_f64x2_zero(r), 0);
      }
    } else {
      let i = 0;
      for (; i + 2 <= half; i += 2) {
        const oa = row + <usize>i * 4;
        const ob = oa + <usize>half * 4;
        const x0 = f64x2.promote_low_f32x4(v128.load64_zero(oa));
        const x1 = f64x2.promote_low_f32x4(v128.load64_zero(ob));
        const c = v128.load(tc + <usize>i * 8);
        const s = v128.load(ts + <usize>i * 8);
        v128.store64_lane(oa, f32x4.demote_f64x2_zero(f64x2.sub(f64x2.mul(x0, c), f64x2.mul(x1, s))), 0);
        v128.store64_lane(ob, f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(x0, s), f64x2.mul(x1, c))), 0);
      }
      for (; i < half; i++) {
        const oa = row + <usize>i * 4;
        const ob = oa + <usize>half * 4;
        const x0 = <f64>load<f32>(oa);
        const x1 = <f64>load<f32>(ob);
        const c = load<f64>(tc + <usize>i * 8);
        const s = load<f64>(ts + <usize>i * 8);
        store<f32>(oa, <f32>(x0 * c - x1 * s));
        store<f32>(ob, <f32>(x0 * s + x1 * c));
      }
    }
  }
}

/** chunk kvh: the key / value head kvh, dequantized once, then every query head of its group */
function packedAttentionChunk(job: usize, kvh: i32, thread: i32): void {
  const T = param(job, 3);
  const pos0 = param(job, 4);
  const hd = param(job, 5);
  const group = param(job, 6);
  const kvDim = param(job, 28);
  const np = pos0 + T;
  const n = <usize>hd * 4;
  const s = <usize>param(job, 10) + <usize>thread * <usize>param(job, 11);
  const keys = s + <usize>np * 4 + 64;
  const values = keys + <usize>np * n;
  const scale = reinterpret<f32>(param(job, 7));
  const kType = load<i32>(job + 48, 12);
  if (param(job, 29) != 0 && load<i32>(job + 48) == 1 && intBlock(kType) == 32 && load<i32>(job + 48, 24) >= np && (hd & 31) == 0) {
    // integer keys (llama.cpp's vec_dot): each query row rounded to Q8_0 here (quantizeActs, the
    // TypeScript codec's bits), scores taken on the stored blocks (dtile4x1q32: per block
    // f32(sum of int products) * (dk * dq), as the weight matmul's decode); only the values dequantized
    fillHead(job + 80, kvh, hd, kvDim, np, values);
    const Tp = (T + 3) & ~3;
    const nb = hd / 32;
    const qI = values + <usize>np * n;
    const qD = qI + <usize>Tp * n / 2;
    const qS = qD + <usize>(nb * Tp) * 4;
    const rowBytes = <usize>load<i32>(job + 48, 8);
    const k0 = <usize>load<i32>(job + 48, 4) + rowBytes / <usize>(kvDim / hd) * <usize>kvh; // head kvh of position 0
    const bs = rowBytes / <usize>(kvDim / 32); // bytes per block
    for (let h = kvh * group; h < (kvh + 1) * group; h++) {
      quantizeActs(32, <usize>param(job, 1) + <usize>h * n, <usize>param(job, 2), T, hd, qI, qD, qS);
      for (let t = 0; t < T; t++) {
        const npt = pos0 + t + 1;
        for (let p = 0; p < npt; p += 4) {
          const nr = min(4, npt - p);
          const p0 = k0 + <usize>p * rowBytes;
          // rows past the visible ones read row p again (their scores are not used)
          const p1 = nr > 1 ? p0 + rowBytes : p0, p2 = nr > 2 ? p0 + 2 * rowBytes : p0, p3 = nr > 3 ? p0 + 3 * rowBytes : p0;
          dtile4x1q32(kType, p0, p1, p2, p3, nr, bs, qI + <usize>t * n / 2, qD + <usize>t * 4, <usize>Tp * 4, nb, s + <usize>p * 4);
        }
        for (let p = 0; p < npt; p++) store<f32>(s + <usize>p * 4, load<f32>(s + <usize>p * 4) * scale);
        attendScored(s, npt, values, n, <usize>param(job, 8) + <usize>h * n + <usize>t * <usize>param(job, 9), n);
      }
    }
    return;
  }
  const cosAt = <usize>param(job, 30);
  const snap = <usize>param(job, 34);
  if (snap != 0) {
    // a partial KIVI key group per query (--kv-residual 0): keys [0, b) decoded (and roped) once; query t
    // sees positions [b, pos0 + t + 1) as its own snapshot (word 34, word 35 bytes apart, kvDim per
    // position), copied in and roped before its attention: what a call per query computes, bit for bit
    const b = min(load<i32>(job + 48, 24), np);
    const half = param(job, 32);
    fillHead(job + 48, kvh, hd, kvDim, b, keys);
    if (cosAt != 0) ropeHead(keys, b, hd, half, param(job, 33), cosAt, <usize>param(job, 31));
    fillHead(job + 80, kvh, hd, kvDim, np, values);
    const stride = <usize>param(job, 35);
    for (let t = 0; t < T; t++) {
      const npt = pos0 + t + 1;
      const src = snap + <usize>t * stride + <usize>(kvh * hd) * 4;
      for (let p = b; p < npt; p++) memory.copy(keys + <usize>p * n, src + <usize>(p - b) * <usize>kvDim * 4, n);
      if (cosAt != 0 && npt > b) ropeHead(keys + <usize>b * n, npt - b, hd, half, param(job, 33), cosAt + <usize>b * <usize>half * 8, <usize>param(job, 31) + <usize>b * <usize>half * 8);
      for (let h = kvh * group; h < (kvh + 1) * group; h++) {
        attendHead(<usize>param(job, 1) + <usize>h * n + <usize>t * <usize>param(job, 2), <usize>param(job, 2), keys, values, n, 1, pos0 + t, scale, <usize>param(job, 8) + <usize>h * n + <usize>t * <usize>param(job, 9), <usize>param(job, 9), s, n);
      }
    }
    return;
  }
  fillHead(job + 48, kvh, hd, kvDim, np, keys);
  // pre-RoPE keys (pre-kivi): RoPE on the dequantized head, from the runtime's cos / sin table (words 30..33)
  if (cosAt != 0) ropeHead(keys, np, hd, param(job, 32), param(job, 33), cosAt, <usize>param(job, 31));
  fillHead(job + 80, kvh, hd, kvDim, np, values);
  for (let h = kvh * group; h < (kvh + 1) * group; h++) {
    attendHead(<usize>param(job, 1) + <usize>h * n, <usize>param(job, 2), keys, values, n, T, pos0, scale, <usize>param(job, 8) + <usize>h * n, <usize>param(job, 9), s, n);
  }
}

// ---------------------------------------------------------------------------------------------------
// f64 linear algebra on the threads (GPTQ's factor; wasm/_linalg.ts). Jobs (i32 words):
//   kind 5: Cholesky panel rows  | 1 a | 2 k | 3 kb | 4 e | 5 rows per chunk (even): rows e + c R ..
//   kind 6: Cholesky trailing update of those rows (same words)
//   kind 7: triangular inverse   | 1 m | 2 x | 3 k | 4 columns per chunk
// The serial pieces (the diagonal block, zeroing the upper triangle) are exported below.

export { cholDiag, zeroUpperRows };

function linalgChunk(job: usize, chunk: i32): void {
  const kind = param(job, 0);
  if (kind == 7) {
    const k = param(job, 3), c = param(job, 4);
    const j0 = chunk * c;
    if (j0 < k) trilInverseCols(<usize>param(job, 1), <usize>param(job, 2), k, j0, min(k, j0 + c));
    return;
  }
  const k = param(job, 2), kb = param(job, 3), e = param(job, 4), r = param(job, 5);
  const i0 = e + chunk * r;
  if (i0 >= k) return;
  const i1 = min(k, i0 + r);
  if (kind == 5) cholPanelRows(<usize>param(job, 1), k, kb, e, i0, i1);
  else cholTrailingRows(<usize>param(job, 1), k, kb, e, i0, i1);
}

// Activation rounding job (i32 words), prefill of the integer matmul on every thread: chunk c rounds
// tokens [8c, 8c + 8) of the Tp and packs them as the tiles read them (the same bytes as quantizeActs then
// prepQuads / prepQuads16 on the calling thread: every token and quad is written by the same operations)
//   0 kind = 10 | 1 block (32 or 256) | 2 x | 3 x row stride (bytes) | 4 T | 5 K | 6 xq | 7 xd | 8 xsum
//   9 packing (0 none, 1 prepQuads, 2 prepQuads16) | 10 xa | 11 u: first x = silu(x) * u in place (siluMul,
//   the chunk's tokens; u rows K floats apart, x rows K floats apart too), 0: none
function roundActsChunk(job: usize, chunk: i32): void {
  const bl = param(job, 1);
  const T = param(job, 4);
  const K = param(job, 5);
  const Tp = (T + 3) & ~3;
  const t0 = chunk * 8;
  const t1 = min(Tp, t0 + 8);
  if (t0 >= t1) return;
  const u = <usize>param(job, 11);
  if (u != 0 && t0 < T) {
    const o = <usize>t0 * <usize>K * 4;
    siluMul(<usize>param(job, 2) + o, u + o, (min(T, t1) - t0) * K);
  }
  const xq = <usize>param(job, 6);
  const xs = <usize>param(job, 8);
  quantizeActRows(bl, <usize>param(job, 2), <usize>param(job, 3), T, K, xq, <usize>param(job, 7), xs, t0, t1);
  const pack = param(job, 9);
  const xa = <usize>param(job, 10);
  const kk = <usize>K;
  const q = xq + <usize>t0 * kk * 2;
  if (pack == 1) prepQuads(q, xs + <usize>t0 * (kk >> 5) * 2, t1 - t0, K, xa + <usize>(t0 >> 2) * <usize>quadBytes(K));
  else if (pack == 2) prepQuads16(q, t1 - t0, K, xa + <usize>(t0 >> 3) * <usize>quadBytes16(K) * 2);
}

// ---------------------------------------------------------------------------------------------------
// A kernel worker thread's loop (src/kernels/threads.ts kernelWorkerMain, whose JavaScript loop is the
// reference: the same protocol, word for word): wait for a job, claim its chunks and run them, a stolen
// chunk on the worker's private copy of the job's words, committed by the compare-and-swap of its state.
// In WebAssembly so that no JavaScript is compiled (and recompiled) by the engine on a busy core while
// the first tokens decode (the JavaScript loop's compiles took one of two busy cores ~50 ms). Shared
// builds only (atomics). Words of the control block: see threads.ts.

// @ts-ignore: decorator
@inline const W_GEN: usize = 0;
// @ts-ignore: decorator
@inline const W_CLAIM: usize = 4;
// @ts-ignore: decorator
@inline const W_LIMIT: usize = 8;
// @ts-ignore: decorator
@inline const W_DONE: usize = 12;
// @ts-ignore: decorator
@inline const W_QUIT: usize = 16;
// @ts-ignore: decorator
@inline const W_WORKED: usize = 28;
// @ts-ignore: decorator
@inline const W_STEAL: usize = 32;
// @ts-ignore: decorator
@inline const W_AREA: usize = 36;
// @ts-ignore: decorator
@inline const W_AREA_BYTES: usize = 40;
/** threads.ts SLEEPS */
// @ts-ignore: decorator
@inline const W_SLEEPS: usize = 44;
// @ts-ignore: decorator
@inline const W_JOB: usize = 64;
// @ts-ignore: decorator
@inline const W_PRIV_JOB: usize = 48 * 4;
// @ts-ignore: decorator
@inline const W_STATE: usize = (48 + 32 * 16) * 4;

/** the job this worker saw last (read by JavaScript after a trap) */
let workerGen: i32 = 0;
/** the plain chunk this worker is running (>= 0), -1 none, -2 a stolen chunk (read by JavaScript after a trap) */
let workerRunning: i32 = -1;

export function workerSeen(): i32 {
  return workerGen;
}

export function workerChunk(): i32 {
  return workerRunning;
}

/** threads.ts claim: the next chunk of job g, or -1 */
function workerClaim(b: usize, g: i32): i32 {
  if (ASC_FEATURE_THREADS) {
    for (;;) {
      const v = atomic.load<i32>(b + W_CLAIM);
      if (<u32>v >>> 16 != <u32>g) return -1;
      if (atomic.cmpxchg<i32>(b + W_CLAIM, v, v + 1) != v) continue;
      const limit = atomic.load<i32>(b + W_LIMIT);
      if (<u32>limit >>> 16 != <u32>g) return -1;
      const c = v & 0xffff;
      return c < (limit & 0xffff) ? c : -1;
    }
  }
  return -1;
}

/** threads.ts stealableJob on the job words at byte address at */
function workerStealable(at: usize): bool {
  const kind = load<i32>(at), type = load<i32>(at, 4), rows = load<i32>(at, 48);
  // rows * 4 <= PRIVATE_BYTES - PRIVATE_SCRATCH (16384)
  if (load<i32>(at, 24) != 1 || rows < 1 || rows > 4096) return false;
  if (kind == 1) return type == 0 && (load<i32>(at, 28) & 3) == 0;
  if (kind == 3) return type == 2 || type == 6 || type == 8 || type == 20 || type == 12 || type == 14;
  return false;
}

/** done one chunk: DONE + 1, waking the caller at the last */
function workerDone(b: usize): void {
  if (ASC_FEATURE_THREADS) {
    atomic.add<i32>(b + W_WORKED, 1);
    const n = atomic.load<i32>(b + W_LIMIT) & 0xffff;
    if (atomic.add<i32>(b + W_DONE, 1) + 1 == n) atomic.notify(b + W_DONE, -1);
  }
}

/** threads.ts stolenChunk: chunk c of stealable job g on the private copy of its words, committed if still RUNNING */
function workerStolen(b: usize, index: i32, g: i32, c: i32): void {
  if (ASC_FEATURE_THREADS) {
    if (index >= 16) return;
    const st = b + W_STATE + <usize>c * 4;
    const open = g << 16, running = (g << 16) | 1, final = (g << 16) | 2;
    if (atomic.cmpxchg<i32>(st, open, running) != open) return;
    const job = b + W_JOB, mine = b + W_PRIV_JOB + <usize>index * 128;
    for (let i: usize = 0; i < 17; i++) store<i32>(mine + i * 4, atomic.load<i32>(job + i * 4));
    const rpc = load<i32>(mine, 48);
    const area0 = <usize>atomic.load<i32>(b + W_AREA);
    if (area0 == 0 || !workerStealable(mine)) return;
    const area = area0 + <usize>(index - 1) * <usize>atomic.load<i32>(b + W_AREA_BYTES);
    const out = area + 512;
    store<i32>(mine, <i32>(out - <usize>c * <usize>rpc * 4), 36);
    store<i32>(mine, <i32>area, 52);
    store<i32>(mine, 0, 56);
    workerRunning = -2;
    runChunk(mine, c, index);
    workerRunning = -1;
    if (atomic.cmpxchg<i32>(st, running, final) != running) return;
    const rows = atomic.load<i32>(job + 44);
    const nr = min(rpc, rows - c * rpc);
    const y = <usize>atomic.load<i32>(job + 36) + <usize>c * <usize>rpc * 4;
    if (nr > 0) memory.copy(y, out, <usize>nr * 4);
    workerDone(b);
  }
}

/**
 * The loop of worker `index` on the control block at `control` until QUIT: jobs after `seen`; resume != 0:
 * first the chunks left of job `seen` (re-entered after a trap in a chunk, which JavaScript counted)
 */
export function workerLoop(control: usize, index: i32, seen: i32, resume: i32): void {
  if (ASC_FEATURE_THREADS) {
    const b = control;
    workerGen = seen;
    workerRunning = -1;
    let g = seen;
    let claimNow = resume != 0;
    for (;;) {
      if (!claimNow) {
        g = atomic.load<i32>(b + W_GEN);
        for (let spin = 0; g == workerGen && spin < 20000; spin++) g = atomic.load<i32>(b + W_GEN);
        if (g == workerGen) {
          if (atomic.load<i32>(b + W_QUIT)) return;
          atomic.add<i32>(b + W_SLEEPS, 1);
          atomic.wait<i32>(b + W_GEN, workerGen, 1000000000);
          continue;
        }
        if (atomic.load<i32>(b + W_QUIT)) return;
        workerGen = g;
      }
      claimNow = false;
      const steal = atomic.load<i32>(b + W_STEAL) == g;
      for (let c = workerClaim(b, g); c >= 0; c = workerClaim(b, g)) {
        if (steal) {
          workerStolen(b, index, g, c);
          continue;
        }
        workerRunning = c;
        runChunk(b + W_JOB, c, index);
        workerRunning = -1;
        workerDone(b);
      }
    }
  } else unreachable();
}

// ---------------------------------------------------------------------------------------------------
// The calling thread's side of a job (threads.ts KernelThreads.run, whose JavaScript is the reference: the
// same protocol, word for word), so that a dispatch runs no JavaScript but one call: at the first decode
// tokens the engine compiled (and deoptimized and recompiled) run's JavaScript on one of the two busy cores.

// @ts-ignore: decorator
@external("env", "now")
declare function hostNow(): f64;

/** ms the last callerRun with timing waited for the workers after its own chunks */
let callerWait: f64 = 0;

export function callerWaitMs(): f64 {
  return callerWait;
}

/**
 * threads.ts KernelThreads.run for job `gen` of n chunks on the control block at `control` (its parameters at
 * control + 64), thread 0: stealable != 0 asks for a stealable job (taken when the job's words allow it, n <=
 * 64 and the workers have private areas); waitMs: the wait before taking the workers' chunks (NaN: about two
 * of this thread's chunks' time; negative: claim nothing and take every chunk from the last one down, tests);
 * timing != 0: measure the wait for the workers (callerWaitMs). Returns the chunks taken from the workers, +
 * 0x10000 when the workers had finished every chunk by the time this thread was out of its own.
 */
export function callerRun(control: usize, n: i32, gen: i32, stealable: i32, waitMs: f64, timing: i32): i32 {
  if (ASC_FEATURE_THREADS) {
    const b = control;
    const job = b + W_JOB;
    const steal = stealable != 0 && n <= 64 && atomic.load<i32>(b + W_AREA) != 0 && workerStealable(job);
    const open = gen << 16, final = (gen << 16) | 2;
    if (steal) for (let c = 0; c < n; c++) atomic.store<i32>(b + W_STATE + <usize>c * 4, open);
    atomic.store<i32>(b + W_STEAL, steal ? gen : 0);
    atomic.store<i32>(b + W_LIMIT, (gen << 16) | n);
    atomic.store<i32>(b + W_DONE, 0);
    atomic.store<i32>(b + W_CLAIM, gen << 16);
    atomic.store<i32>(b + W_GEN, gen);
    atomic.notify(b + W_GEN, -1);
    let mine = 0;
    const t0 = steal ? hostNow() : 0;
    const takeAll = steal && waitMs < 0;
    for (let c = takeAll ? -1 : workerClaim(b, gen); c >= 0; c = workerClaim(b, gen)) {
      if (steal && atomic.cmpxchg<i32>(b + W_STATE + <usize>c * 4, open, final) != open) continue;
      runChunk(job, c, 0);
      mine++;
    }
    let done = atomic.add<i32>(b + W_DONE, mine) + mine;
    const tw = timing != 0 ? hostNow() : 0;
    let result = done >= n ? 0x10000 : 0;
    if (steal && done < n) {
      // wait about two of our chunks' time for the workers' last chunks, then take what is not FINAL
      const now = hostNow();
      const until = now + (takeAll ? 0 : isNaN(waitMs) ? max(0.005, (2 * (now - t0)) / <f64>max(1, mine)) : waitMs);
      while (done < n && hostNow() < until) {
        for (let i = 0; i < 64 && done < n; i++) done = atomic.load<i32>(b + W_DONE);
      }
      for (let c = n - 1; c >= 0 && done < n; c--) {
        const st = b + W_STATE + <usize>c * 4;
        const v = atomic.load<i32>(st);
        if (v == final) continue;
        if (atomic.cmpxchg<i32>(st, v, final) != v) continue;
        runChunk(job, c, 0);
        result++;
        done = atomic.add<i32>(b + W_DONE, 1) + 1;
      }
    }
    for (let spin = 0; done < n; spin++) {
      if (spin < 100000) done = atomic.load<i32>(b + W_DONE);
      else {
        atomic.wait<i32>(b + W_DONE, done, 100000000);
        done = atomic.load<i32>(b + W_DONE);
      }
    }
    if (timing != 0) callerWait = hostNow() - tw;
    return result;
  }
  unreachable();
  return 0;
}

export function runChunk(job: usize, chunk: i32, thread: i32): void {
  switch (param(job, 0)) {
    case 1: matmulChunk(job, chunk, thread); break;
    case 2: attentionChunk(job, chunk, thread); break;
    case 3: intMatmulChunk(job, chunk, thread); break;
    case 4: packedAttentionChunk(job, chunk, thread); break;
    case 5: case 6: case 7: linalgChunk(job, chunk); break;
    case 8: transposeChunk(job, chunk); break;
    case 9: gramChunk(job, chunk, thread); break;
    case 10: roundActsChunk(job, chunk); break;
    case 11: siluMul(<usize>param(job, 1) + <usize>chunk * <usize>param(job, 4) * 4, <usize>param(job, 2) + <usize>chunk * <usize>param(job, 4) * 4, min(param(job, 4), param(job, 3) - chunk * param(job, 4))); break;
    case 12: logSoftmaxChunk(job, chunk); break;
    case 13: attentionRowsChunk(job, chunk, thread); break;
    case 14: packTriplesChunk(job, chunk); break;
    case 15: rmsnormChunk(job, chunk); break;
    case 19: ropeChunk(job, chunk); break;
    case 20: rangesChunk(job, chunk); break;
    default: unreachable();
  }
}

// ---------------------------------------------------------------------------------------------------
// X^T X's layout (src/kernels/matmul.ts gramTranspose): xt[i * ld + t] = x[t * K + i] for t < T, zeros
// for T <= t < ld (ld >= T, a multiple of 4). Values are only moved: 4 x 4 blocks through shuffles,
// the edges (T or K not a multiple of 4) element by element.
export function transposePad(x: usize, T: i32, K: i32, xt: usize, ld: i32): void {
  transposeRows(x, T, K, xt, ld, 0, K, false);
}

/**
 * transposePad into the packed layout of the f64 X^T X (gramChunk): rows of Xt in triples, the triple's
 * three rows interleaved 16 bytes (4 terms) at a time -- term t of row i at
 * xt + ((i / 3) * 3 * ld + (t / 4) * 12 + (i % 3) * 4 + t % 4) * 4 -- and rows K .. (K rounded up to
 * a multiple of 3) zero. The values are only moved, as transposePad moves them.
 */
export function transposePacked(x: usize, T: i32, K: i32, xt: usize, ld: i32): void {
  transposeRows(x, T, K, xt, ld, 0, K, true);
}

/** row i's first 16 bytes in xt: row-major (stride ld floats), or packed in triples (transposePacked) */
// @ts-ignore: decorator
@inline function xtRow(xt: usize, ls: usize, i: i32, packed: bool): usize {
  return packed ? xt + <usize>(i / 3) * 3 * ls + <usize>(i % 3) * 16 : xt + <usize>i * ls;
}

/** transposePad (transposePacked) for rows [i0, i1) of xt (i0 a multiple of 4): the threads' share (job kind 8) */
function transposeRows(x: usize, T: i32, K: i32, xt: usize, ld: i32, i0: i32, i1: i32, packed: bool): void {
  const T4 = T & ~3, K4 = K & ~3;
  const xs = <usize>K * 4, ls = <usize>ld * 4;
  const step: usize = packed ? 48 : 16; // bytes from one 4-term block of a row to the next
  const e4 = min(i1, K4);
  for (let i = i0; i < e4; i += 4) {
    const o0 = xtRow(xt, ls, i, packed), o1 = xtRow(xt, ls, i + 1, packed), o2 = xtRow(xt, ls, i + 2, packed), o3 = xtRow(xt, ls, i + 3, packed);
    let p = x + <usize>i * 4;
    let b: usize = 0;
    for (let t = 0; t < T4; t += 4, p += 4 * xs, b += step) {
      const r0 = v128.load(p), r1 = v128.load(p + xs), r2 = v128.load(p + 2 * xs), r3 = v128.load(p + 3 * xs);
      const t0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5), t1 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7);
      const t2 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5), t3 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
      v128.store(o0 + b, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
      v128.store(o1 + b, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
      v128.store(o2 + b, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
      v128.store(o3 + b, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
    }
  }
  for (let i = i0; i < i1; i++) {
    const o = xtRow(xt, ls, i, packed);
    for (let t = i < K4 ? T4 : 0; t < T; t++) store<f32>(o + <usize>(t >> 2) * step + <usize>(t & 3) * 4, load<f32>(x + <usize>t * xs + <usize>i * 4));
    for (let t = T; t < ld; t++) store<f32>(o + <usize>(t >> 2) * step + <usize>(t & 3) * 4, 0);
  }
  if (packed && i1 == K) {
    // the last triple's rows past K: zeros
    for (let i = K; i % 3 != 0; i++) {
      const o = xtRow(xt, ls, i, true);
      for (let t = 0; t < ld; t += 4) v128.store(o + <usize>(t >> 2) * 48, f32x4.splat(0));
    }
  }
}

// job kind 8 (transposeRows): 1 x | 2 T | 3 K | 4 xt | 5 ld | 6 rows per chunk (a multiple of 4) | 7 packed (1) or not (0)
function transposeChunk(job: usize, chunk: i32): void {
  const K = param(job, 3), r = param(job, 6);
  const i0 = chunk * r;
  if (i0 < K) transposeRows(<usize>param(job, 1), param(job, 2), K, <usize>param(job, 4), param(job, 5), i0, min(K, i0 + r), param(job, 7) != 0);
}

// ---------------------------------------------------------------------------------------------------
// X^T X added into an f64 upper triangle (src/kernels/matmul.ts gramAccumulate; job kind 9):
//   h[i][j] += f64(G[i][j]) for j >= i, G[i][j] = sum_t x[t][i] x[t][j] (f32)
// with each G[i][j] the same f32 dot product, bit for bit, as gramUpper's (and matmulChunk's): lane l
// sums the terms t = l, l + 4, .. in increasing t (fused multiply-add with relaxed SIMD), then
// (lane0 + lane2) + (lane1 + lane3); products do not depend on the order of their factors. Xt is in
// the packed layout (transposePacked): a 3 x 3 tile reads two triples, each one stream of 48 bytes per
// 4 terms, with immediate offsets (fewer address computations per multiply-add than tile3x3's six
// streams). Work as gramUpper's: bands of `step` rows of Xt (the "tokens" i), chunks of rows j from
// the band on, token blocks of TOKEN_BLOCK; tiles wholly below the diagonal are skipped.
// Job words: 1 xt (packed) | 2 ld (floats per row) | 3 K | 4 h (f64, K x K) | 5 band start (a multiple
// of 3) | 6 band end | 7 rows per chunk (a multiple of 3) | 8 scratch (64 bytes per thread)

function gramChunk(job: usize, chunk: i32, thread: i32): void {
  const xt = <usize>param(job, 1);
  const ls = <usize>param(job, 2) * 4;
  const K = param(job, 3);
  const h = <usize>param(job, 4);
  const r0 = param(job, 5), r1 = param(job, 6), cr = param(job, 7);
  const j0 = r0 + chunk * cr;
  if (j0 >= K) return;
  const j1 = min(K, j0 + cr);
  const out = <usize>param(job, 8) + <usize>thread * 64;
  const hs = <usize>K * 8;
  for (let t0 = r0; t0 < r1; t0 += TOKEN_BLOCK) {
    const te = min(r1, t0 + TOKEN_BLOCK);
    for (let j = j0; j < j1; j += 3) {
      // "tokens" i of the band (rows of the result), at most j + 2 (the tile has elements on or above the diagonal)
      for (let i = t0; i < te && i <= j + 2; i += 3) {
        // out[3 i + j] = a_i . b_j, a = the triple at row j, b = at row i: tile3x3p with b as the weights
        // (products commute bit for bit, as fused multiply-adds do)
        tile3x3p(xt + <usize>i * ls, xt + <usize>j * ls, ls, out, 12);
        if (i + 2 <= j && j + 2 < K) {
          // wholly above the diagonal and inside: all nine
          for (let a = 0; a < 3; a++) {
            const p = h + <usize>(j + a) * 8;
            for (let b = 0; b < 3; b++) {
              const q = p + <usize>(i + b) * hs;
              store<f64>(q, load<f64>(q) + <f64>load<f32>(out + <usize>(3 * a + b) * 4));
            }
          }
        } else {
          for (let a = 0; a < 3; a++)
            for (let b = 0; b < 3; b++) {
              const jj = j + a, ii = i + b;
              if (jj >= K || ii >= K || jj < ii) continue;
              const q = h + <usize>ii * hs + <usize>jj * 8;
              store<f64>(q, load<f64>(q) + <f64>load<f32>(out + <usize>(3 * a + b) * 4));
            }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The forward's elementwise steps (model/llama.ts rmsnorm, ropeTabled; a residual add), bit for bit
// their TypeScript: every f64 operation of the reference in the same order (f64x2 lanes are two rows'
// or two pairs' independent chains), f32 stores rounding once, no fused multiply-add.

/** sum_i x[i]^2 in f64, i in order, for the rows at a and b (lanes 0, 1) */
// @ts-ignore: decorator
@inline function squares2(a: usize, b: usize, size: i32): v128 {
  let s = f64x2.splat(0);
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    const va = v128.load(a + <usize>i * 4);
    const vb = v128.load(b + <usize>i * 4);
    const p01 = v128.shuffle<f32>(va, vb, 0, 4, 1, 5);
    const p23 = v128.shuffle<f32>(va, vb, 2, 6, 3, 7);
    let p = f64x2.promote_low_f32x4(p01);
    s = f64x2.add(s, f64x2.mul(p, p));
    p = f64x2.promote_low_f32x4(v128.shuffle<f32>(p01, p01, 2, 3, 0, 1));
    s = f64x2.add(s, f64x2.mul(p, p));
    p = f64x2.promote_low_f32x4(p23);
    s = f64x2.add(s, f64x2.mul(p, p));
    p = f64x2.promote_low_f32x4(v128.shuffle<f32>(p23, p23, 2, 3, 0, 1));
    s = f64x2.add(s, f64x2.mul(p, p));
  }
  for (; i < size; i++) {
    const p = f64x2.replace_lane(f64x2.splat(<f64>load<f32>(a + <usize>i * 4)), 1, <f64>load<f32>(b + <usize>i * 4));
    s = f64x2.add(s, f64x2.mul(p, p));
  }
  return s;
}

/** out[i] = f32((x[i] * c) * w[i]) for one row */
// @ts-ignore: decorator
@inline function scaleRow(x: usize, w: usize, out: usize, size: i32, c: f64): void {
  const cc = f64x2.splat(c);
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    const o = <usize>i * 4;
    const vx = v128.load(x + o);
    const vw = v128.load(w + o);
    const lo = f32x4.demote_f64x2_zero(f64x2.mul(f64x2.mul(f64x2.promote_low_f32x4(vx), cc), f64x2.promote_low_f32x4(vw)));
    const hx = v128.shuffle<f32>(vx, vx, 2, 3, 0, 1);
    const hw = v128.shuffle<f32>(vw, vw, 2, 3, 0, 1);
    const hi = f32x4.demote_f64x2_zero(f64x2.mul(f64x2.mul(f64x2.promote_low_f32x4(hx), cc), f64x2.promote_low_f32x4(hw)));
    v128.store(out + o, v128.shuffle<f32>(lo, hi, 0, 1, 4, 5));
  }
  for (; i < size; i++) {
    const o = <usize>i * 4;
    store<f32>(out + o, <f32>((<f64>load<f32>(x + o) * c) * <f64>load<f32>(w + o)));
  }
}

// job kind 15: rmsnormRows of rows [chunk * r, (chunk + 1) * r) (r a multiple of 4), the threads' share:
//   1 x | 2 w | 3 out | 4 nTok | 5 size | 6 rows per chunk r | words 8, 9: eps (f64)
function rmsnormChunk(job: usize, chunk: i32): void {
  const size = param(job, 5), r = param(job, 6);
  const t0 = chunk * r, t1 = min(param(job, 4), t0 + r);
  const rb = <usize>size * 4 * <usize>t0;
  if (t0 < t1) rmsnormRows(<usize>param(job, 1) + rb, <usize>param(job, 2), <usize>param(job, 3) + rb, t1 - t0, size, load<f64>(job + 32));
}

/**
 * RMSNorm of nTok rows of `size` f32 at x into out (out may be x; rows contiguous):
 * out[t][i] = f32((x[t][i] * c_t) * w[i]), c_t = 1 / sqrt(s_t / size + eps), s_t = sum_i x[t][i]^2 in f64
 * in index order (model/llama.ts rmsnorm, bit for bit; four rows' sums at a time, two per f64x2).
 */
export function rmsnormRows(x: usize, w: usize, out: usize, nTok: i32, size: i32, eps: f64): void {
  const rb = <usize>size * 4;
  let t = 0;
  for (; t + 4 <= nTok; t += 4) {
    const r0 = x + <usize>t * rb;
    const s01 = squares2(r0, r0 + rb, size);
    const s23 = squares2(r0 + 2 * rb, r0 + 3 * rb, size);
    const n = <f64>size;
    const c0 = 1 / Math.sqrt(f64x2.extract_lane(s01, 0) / n + eps);
    const c1 = 1 / Math.sqrt(f64x2.extract_lane(s01, 1) / n + eps);
    const c2 = 1 / Math.sqrt(f64x2.extract_lane(s23, 0) / n + eps);
    const c3 = 1 / Math.sqrt(f64x2.extract_lane(s23, 1) / n + eps);
    const o0 = out + <usize>t * rb;
    scaleRow(r0, w, o0, size, c0);
    scaleRow(r0 + rb, w, o0 + rb, size, c1);
    scaleRow(r0 + 2 * rb, w, o0 + 2 * rb, size, c2);
    scaleRow(r0 + 3 * rb, w, o0 + 3 * rb, size, c3);
  }
  for (; t < nTok; t++) {
    const r = x + <usize>t * rb;
    const s = squares2(r, r, size);
    scaleRow(r, w, out + <usize>t * rb, size, 1 / Math.sqrt(f64x2.extract_lane(s, 0) / <f64>size + eps));
  }
}

/** a[i] = f32(a[i] + b[i]) for i < n (the residual add; an f32 sum is the f64 sum rounded once) */
export function addInto(a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const o = a + <usize>i * 4;
    const p = b + <usize>i * 4;
    v128.store(o, f32x4.add(v128.load(o), v128.load(p)));
    v128.store(o, f32x4.add(v128.load(o, 16), v128.load(p, 16)), 16);
    v128.store(o, f32x4.add(v128.load(o, 32), v128.load(p, 32)), 32);
    v128.store(o, f32x4.add(v128.load(o, 48), v128.load(p, 48)), 48);
  }
  for (; i < n; i++) store<f32>(a + <usize>i * 4, load<f32>(a + <usize>i * 4) + load<f32>(b + <usize>i * 4));
}

// job kind 20 (eval): an element-wise op on the values [chunk * per, min(n, (chunk + 1) * per)), the
// threads' share (each value the same operations wherever it runs):
//   1 op: 0 firstNonFinite of a (its index within the range, or -1, into results[chunk]), 1 addInto(a, b)
//   | 2 a | 3 b | 4 n | 5 per | 6 results (i32 per chunk)
function rangesChunk(job: usize, chunk: i32): void {
  const per = param(job, 5);
  const i0 = chunk * per;
  const m = min(per, param(job, 4) - i0);
  if (m <= 0) return;
  const a = <usize>param(job, 2) + <usize>i0 * 4;
  if (param(job, 1) == 0) store<i32>(<usize>param(job, 6) + <usize>chunk * 4, firstNonFinite(a, m));
  else addInto(a, <usize>param(job, 3) + <usize>i0 * 4, m);
}

/**
 * RoPE from a table (model/llama.ts ropeTabled): rows of nHeads heads of headDim f32 at v, nTok tokens at
 * positions pos0..; cos / sin of (position p, pair i) at cs / sn + (p * half + i) * 8 (f64). Pair i of a
 * head is (2i, 2i + 1) when `normal`, else (i, i + half); x0' = f32(x0 cos - x1 sin), x1' = f32(x0 sin +
 * x1 cos) in f64, as the reference. half even (two pairs per f64x2).
 */
// job kind 19 (gptq): ropeRows of tokens [chunk * r, (chunk + 1) * r), the threads' share (each token's
// rows the same operations wherever they run):
//   1 v | 2 nTok | 3 nHeads | 4 headDim | 5 half | 6 pos0 | 7 cos | 8 sin | 9 normal | 10 tokens per chunk r
function ropeChunk(job: usize, chunk: i32): void {
  const r = param(job, 10), nHeads = param(job, 3), headDim = param(job, 4);
  const t0 = chunk * r, t1 = min(param(job, 2), t0 + r);
  if (t0 < t1) ropeRows(<usize>param(job, 1) + <usize>t0 * <usize>(nHeads * headDim) * 4, t1 - t0, nHeads, headDim, param(job, 5), param(job, 6) + t0, <usize>param(job, 7), <usize>param(job, 8), param(job, 9));
}

export function ropeRows(v: usize, nTok: i32, nHeads: i32, headDim: i32, half: i32, pos0: i32, cs: usize, sn: usize, normal: i32): void {
  for (let t = 0; t < nTok; t++) {
    const at = <usize>(pos0 + t) * <usize>half * 8;
    for (let h = 0; h < nHeads; h++) {
      const row = v + (<usize>(t * nHeads + h) * <usize>headDim) * 4;
      for (let i = 0; i < half; i += 2) {
        const c = v128.load(cs + at + <usize>i * 8);
        const s = v128.load(sn + at + <usize>i * 8);
        if (normal) {
          const pa = row + <usize>(2 * i) * 4;
          const q = v128.load(pa); // x0_i x1_i x0_i+1 x1_i+1
          const x0 = f64x2.promote_low_f32x4(v128.shuffle<f32>(q, q, 0, 2, 1, 3));
          const x1 = f64x2.promote_low_f32x4(v128.shuffle<f32>(q, q, 1, 3, 0, 2));
          const y0 = f32x4.demote_f64x2_zero(f64x2.sub(f64x2.mul(x0, c), f64x2.mul(x1, s)));
          const y1 = f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(x0, s), f64x2.mul(x1, c)));
          v128.store(pa, v128.shuffle<f32>(y0, y1, 0, 4, 1, 5));
        } else {
          const pa = row + <usize>i * 4;
          const pb = row + <usize>(i + half) * 4;
          const x0 = f64x2.promote_low_f32x4(v128.load64_zero(pa));
          const x1 = f64x2.promote_low_f32x4(v128.load64_zero(pb));
          const y0 = f32x4.demote_f64x2_zero(f64x2.sub(f64x2.mul(x0, c), f64x2.mul(x1, s)));
          const y1 = f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(x0, s), f64x2.mul(x1, c)));
          store<f64>(pa, f64x2.extract_lane(y0, 0));
          store<f64>(pb, f64x2.extract_lane(y1, 0));
        }
      }
    }
  }
}
