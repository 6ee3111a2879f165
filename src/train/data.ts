/**
 * Training batches from a token stream: windows of ctx + 1 tokens at seeded random offsets, inputs are
 * the first ctx, targets the next ctx; the first input is replaced by BOS, as llama-perplexity scores
 * its chunks, so the model learns the context it is evaluated in. The generator's state is one u32
 * (saved in checkpoints): same seed and state -> same batches.
 */
import { fail } from '../errors.js';
import { xorshift32Step } from '../rng.js';

/** xorshift32 (rng.ts) with its state visible (for checkpoints) */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0 || 0x9e3779b9;
  }
  nextU32(): number {
    return (this.state = xorshift32Step(this.state));
  }
  /** uniform in [0, n) (n < 2^32) */
  below(n: number): number {
    return Math.floor((this.nextU32() / 4294967296) * n);
  }
  /** standard normal (Box-Muller) */
  normal(): number {
    const u = (this.nextU32() + 1) / 4294967297;
    const v = (this.nextU32() + 1) / 4294967297;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

export interface Batch {
  tokens: Int32Array; // (batch, ctx)
  targets: Int32Array; // (batch, ctx)
}

export function sampleBatch(stream: ArrayLike<number>, batch: number, ctx: number, rng: Rng, bos: number | undefined): Batch {
  if (stream.length < ctx + 1) fail(`the text has ${stream.length} tokens, fewer than one sequence of ctx + 1 = ${ctx + 1}`);
  const tokens = new Int32Array(batch * ctx);
  const targets = new Int32Array(batch * ctx);
  for (let b = 0; b < batch; b++) {
    const s = rng.below(stream.length - ctx);
    for (let t = 0; t < ctx; t++) {
      tokens[b * ctx + t] = stream[s + t];
      targets[b * ctx + t] = stream[s + t + 1];
    }
    if (bos !== undefined) tokens[b * ctx] = bos;
  }
  return { tokens, targets };
}

/**
 * Held-out batches as llama-perplexity scores: consecutive chunks of ctx tokens, BOS first, the second
 * half of each chunk scored (targets of the first half are -1). At most `maxChunks` chunks, grouped
 * `batch` at a time (the last group padded with unscored rows).
 */
export function evalBatches(stream: ArrayLike<number>, batch: number, ctx: number, bos: number | undefined, maxChunks = Infinity): Batch[] {
  const chunks = Math.min(Math.floor(stream.length / ctx), maxChunks);
  const out: Batch[] = [];
  for (let c0 = 0; c0 < chunks; c0 += batch) {
    const tokens = new Int32Array(batch * ctx);
    const targets = new Int32Array(batch * ctx).fill(-1);
    for (let b = 0; b < batch && c0 + b < chunks; b++) {
      const s = (c0 + b) * ctx;
      for (let t = 0; t < ctx; t++) tokens[b * ctx + t] = stream[s + t];
      if (bos !== undefined) tokens[b * ctx] = bos;
      for (let t = Math.floor(ctx / 2); t < ctx - 1; t++) targets[b * ctx + t] = stream[s + t + 1];
    }
    out.push({ tokens, targets });
  }
  return out;
}
