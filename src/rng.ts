/** One step of xorshift32 (Marsaglia): the next non-zero uint32 state after x (x != 0). */
export function xorshift32Step(x: number): number {
  x ^= x << 13;
  x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
}

/** xorshift32: a tiny seeded generator of non-zero uint32 values, for reproducible test data. */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => (s = xorshift32Step(s));
}

/** mulberry32: a small seeded generator of uniform numbers in [0, 1) (calibration windows, LoRC's start) */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
