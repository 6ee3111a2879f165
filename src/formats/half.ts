/**
 * float32 <-> IEEE half and bfloat16 bit conversions (round to nearest even), as ggml stores scales.
 * Shared scratch views keep these allocation-free.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> fp16 bits, round to nearest even; overflow -> inf; NaN -> sign | 0x7e00 (as ggml_compute_fp32_to_fp16). */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let man = u & 0x7fffff;
  if (exp === 0xff) return sign | (man ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half of the smallest subnormal: rounds to zero
    man |= 0x800000;
    const shift = 14 - e; // 14..24
    const half = 1 << (shift - 1);
    const rest = man & ((1 << shift) - 1);
    let m = man >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let h = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // carry may roll into the exponent / to inf: correct
  return sign | h;
}

/**
 * fp16 bits -> float32 bits, exact including NaN payloads (ggml_compute_fp16_to_fp32: its NaN path
 * scales by 2^-112, which quiets a signaling NaN, i.e. sets bit 22). The value table below is a view
 * of the same memory (one 256 KiB table).
 */
const F16_BITS = /* @__PURE__ */ (() => {
  const t = new Uint32Array(65536);
  const f = new Float32Array(t.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 31) t[h] = (sign | 0x7f800000 | (m ? 0x400000 | (m << 13) : 0)) >>> 0;
    else if (e === 0) {
      f[h] = m * 2 ** -24;
      t[h] = (t[h] | sign) >>> 0;
    } else t[h] = (sign | ((e - 15 + 127) << 23) | (m << 13)) >>> 0;
  }
  return t;
})();
const F16_TABLE = /* @__PURE__ */ new Float32Array(F16_BITS.buffer);

/** fp16 bits -> float32 value (exact). */
export function f16ToF32(h: number): number {
  return F16_TABLE[h & 0xffff];
}

/** The 65536-entry fp16 -> float32 table (read-only by convention). */
export const f16Table: Float32Array = F16_TABLE;

/** The same table as float32 bits (NaN payloads as ggml keeps them; read-only by convention). */
export const f16BitsTable: Uint32Array = F16_BITS;

/** float32 -> bf16 bits, round to nearest even; NaN -> quiet NaN. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + (0x7fff + ((u >>> 16) & 1))) >>> 16) & 0xffff;
}

/** bf16 bits -> float32 value (exact). */
export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0];
}

// ---------------------------------------------------------------- rows (the bulk conversions every layer uses)

const bitsOf = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);

/**
 * float32 -> fp16 bits for a row (ggml_fp32_to_fp16_row), bit-identical to f32ToF16 except that a NaN
 * keeps its sign (sign | 0x7e00, read from the bits: a JS number may not keep a NaN's sign). The
 * normal-range case is inlined on the bits (f32 exponent 113..142 <=> half exponent 1..30).
 */
export function f32ToF16Row(x: Float32Array, h: Uint16Array): void {
  const u = bitsOf(x);
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const b = u[i];
    if ((((b >>> 23) & 0xff) - 113) >>> 0 <= 29) {
      // rebias the exponent (127 -> 15), then round the 13 dropped bits to nearest even without a
      // branch: + 0xfff + lsb carries exactly when the rest is > half, or = half with an odd lsb;
      // a carry out of the mantissa bumps the exponent (up to inf), as it should
      const m = (b & 0x7fffffff) - (112 << 23);
      h[i] = ((b >>> 16) & 0x8000) | ((m + 0xfff + ((m >>> 13) & 1)) >>> 13);
    } else if ((b & 0x7fffffff) > 0x7f800000) h[i] = ((b >>> 16) & 0x8000) | 0x7e00;
    else h[i] = f32ToF16(x[i]);
  }
}

/** fp16 bits -> float32 for a row (ggml_fp16_to_fp32_row): exact, NaN payloads kept as ggml keeps them. */
export function f16ToF32Row(h: Uint16Array, out: Float32Array): void {
  const o = bitsOf(out);
  for (let i = 0; i < h.length; i++) o[i] = F16_BITS[h[i]];
}

/** float32 -> bf16 bits for a row (ggml_fp32_to_bf16_row_ref): round to nearest even; a NaN is quieted, its sign and payload kept. */
export function f32ToBf16Row(x: Float32Array, h: Uint16Array): void {
  const u = bitsOf(x);
  for (let i = 0; i < x.length; i++) {
    const b = u[i];
    h[i] = (b & 0x7fffffff) > 0x7f800000 ? ((b >>> 16) | 64) & 0xffff : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  }
}

/** bf16 bits -> float32 for a row (exact). */
export function bf16ToF32Row(h: Uint16Array, out: Float32Array): void {
  const o = bitsOf(out);
  for (let i = 0; i < h.length; i++) o[i] = h[i] << 16;
}

/** Little-endian 16-bit values of `bytes` (n of them) as a Uint16Array: a view when aligned, else a copy. */
export function u16View(bytes: Uint8Array, n = bytes.length >>> 1): Uint16Array {
  return bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice(0, 2 * n).buffer);
}
