/**
 * Next-token sampling as llama2.c's run.c does it: greedy at temperature 0, otherwise softmax(logits / T)
 * then plain sampling (topP >= 1 or <= 0) or nucleus (top-p) sampling. The random numbers come from
 * the 'sampler' stream of rng.ts (xorshift64*, as run.c) seeded by the caller, so the same seed gives
 * the same tokens.
 */
import { rngStream } from '../rng.js';

export class Sampler {
  private readonly randomU32: () => number;
  private readonly probs: Float64Array;
  private readonly order: Int32Array;
  constructor(
    readonly vocabSize: number,
    readonly temperature: number,
    readonly topP: number,
    seed: number,
  ) {
    this.randomU32 = rngStream('sampler', seed);
    this.probs = new Float64Array(vocabSize);
    this.order = new Int32Array(vocabSize);
  }

  /** uniform in [0, 1) with 24 bits, like llama2.c's random_f32 */
  private randomF32(): number {
    return (this.randomU32() >>> 8) / 16777216;
  }

  sample(logits: Float32Array): number {
    const n = this.vocabSize;
    if (this.temperature === 0) return argmax(logits, n);
    const p = this.probs;
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / this.temperature);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      p[i] = Math.exp(logits[i] / this.temperature - max);
      sum += p[i];
    }
    for (let i = 0; i < n; i++) p[i] /= sum;
    const coin = this.randomF32();
    if (this.topP <= 0 || this.topP >= 1) {
      let cdf = 0;
      for (let i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf) return i;
      }
      return n - 1;
    }
    // top-p: keep the most likely tokens whose cumulative probability first exceeds topP
    const cutoff = (1 - this.topP) / (n - 1); // tokens below this cannot be in the nucleus
    let m = 0;
    for (let i = 0; i < n; i++) if (p[i] >= cutoff) this.order[m++] = i;
    const kept = Array.from(this.order.subarray(0, m)).sort((a, b) => p[b] - p[a] || a - b);
    let cum = 0;
    let last = kept.length - 1;
    for (let i = 0; i < kept.length; i++) {
      cum += p[kept[i]];
      if (cum > this.topP) {
        last = i;
        break;
      }
    }
    const r = coin * cum;
    let cdf = 0;
    for (let i = 0; i <= last; i++) {
      cdf += p[kept[i]];
      if (r < cdf) return kept[i];
    }
    return kept[last];
  }
}

/** index of the largest logit (the first one on ties) */
export function argmax(x: ArrayLike<number>, n = x.length): number {
  let best = 0;
  let max = x[0]; // x[best], kept in a register (the same comparisons)
  for (let i = 1; i < n; i++) {
    const v = x[i];
    if (v > max) {
      max = v;
      best = i;
    }
  }
  return best;
}
