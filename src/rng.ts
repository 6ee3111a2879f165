/**
 * Every seeded random number in lowbit comes from this module: three generators, and one table of
 * named streams saying which generator each consumer draws from and the salt that separates its
 * sequence from the others' for the same user seed.
 *
 * The generators stay three because their outputs are pinned: xorshift32 makes the synthetic models and
 * test data whose llama-quantize parity files and golden outputs are stored (test/golden/llama-quantize),
 * mulberry32 the calibration windows (every GPTQ/AWQ file of a given seed, and the measured tables in
 * docs/, depend on them), and xorshift64* is llama2.c's run.c generator (the same tokens as run.c for a
 * seed). Folding them into one would change those outputs; the streams table is the one place that says
 * who uses which.
 */

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

/** mulberry32: a small seeded generator of uniform numbers in [0, 1) */
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

const MASK64 = (1n << 64n) - 1n;

/** xorshift64* as llama2.c's run.c: uint32 values (the upper 32 bits); the seed is taken as a 64-bit integer */
export function xorshift64star(seed: number): () => number {
  let s = BigInt.asUintN(64, BigInt(Math.trunc(seed))) || 1n; // xorshift needs a non-zero state
  return () => {
    s ^= s >> 12n;
    s ^= (s << 25n) & MASK64;
    s ^= s >> 27n;
    return Number(((s * 0x2545f4914f6cdd1dn) & MASK64) >> 32n);
  };
}

export type RngGenerator = 'xorshift32' | 'mulberry32' | 'xorshift64*';

export interface RngStreamSpec {
  readonly generator: RngGenerator;
  /** xored into the user's seed (0: none) */
  readonly salt: number;
  /** what a call returns: a uint32, or a uniform number in [0, 1) */
  readonly yields: 'u32' | 'unit';
  /** who draws from it */
  readonly user: string;
}

/** The named streams: one row per consumer of seeded randomness in src/. */
export const RNG_STREAMS = Object.freeze({
  calibrationWindows: { generator: 'mulberry32', salt: 0x5eed, yields: 'unit', user: 'pipeline/calibrate.ts: the calibration windows\' offsets' },
  omniquantOrder: { generator: 'mulberry32', salt: 0x0a1c, yields: 'unit', user: 'pipeline/omniquant.ts: the minibatch order' },
  spinquantOrder: { generator: 'mulberry32', salt: 0x5919, yields: 'unit', user: 'pipeline/spinquant.ts: the minibatch order' },
  blockRoundOrder: { generator: 'mulberry32', salt: 0xb10c, yields: 'unit', user: 'pipeline/block-round.ts: the minibatch order' },
  embeddingFisher: { generator: 'mulberry32', salt: 0xf15e, yields: 'unit', user: 'pipeline/embedding-fisher.ts: the sampled next tokens' },
  lorcStart: { generator: 'mulberry32', salt: 0x10bc, yields: 'unit', user: 'algos/lorc.ts: the power iteration\'s start' },
  allocateSearch: { generator: 'xorshift32', salt: 0x9e3779b9, yields: 'u32', user: 'pipeline/allocate.ts: the evolutionary search\'s mutations' },
  auditBoxes: { generator: 'xorshift32', salt: 0xb0c5, yields: 'u32', user: 'audit/boxes.ts: the sampled points inside a box' },
  auditProbe: { generator: 'mulberry32', salt: 0xa0d1, yields: 'unit', user: 'audit/run.ts: the audit\'s sampled continuations and random token windows' },
  sampler: { generator: 'xorshift64*', salt: 0, yields: 'u32', user: 'model/sampler.ts: the sampling coin (llama2.c\'s run.c)' },
} satisfies Record<string, RngStreamSpec>);

export type RngStreamName = keyof typeof RNG_STREAMS;

/** The generator of a named stream for a user seed (the same numbers as the generator seeded with seed ^ salt). */
export function rngStream(name: RngStreamName, seed: number): () => number {
  const s: RngStreamSpec = RNG_STREAMS[name];
  const salted = s.salt === 0 ? seed : seed ^ s.salt;
  return s.generator === 'xorshift32' ? xorshift32(salted) : s.generator === 'mulberry32' ? mulberry32(salted) : xorshift64star(salted);
}
