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

const F16_TABLE = /* @__PURE__ */ (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1024 + m) * 2 ** (e - 25);
  }
  return t;
})();

/** fp16 bits -> float32 value (exact). */
export function f16ToF32(h: number): number {
  return F16_TABLE[h & 0xffff];
}

/** The 65536-entry fp16 -> float32 table (read-only by convention). */
export const f16Table: Float32Array = F16_TABLE;

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
