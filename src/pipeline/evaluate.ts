/**
 * Evaluate quantized models against their original: the base model's logits are computed once
 * (kept as an in-memory llama.cpp logits file) and every candidate is scored against them
 * (perplexity, KL divergence, top-1 agreement), as llama-perplexity --kl-divergence does.
 */
import { fail } from '../errors.js';
import { loadModel } from '../eval/load.js';
import { logitsFileBase, perplexity, type BaseSource, type KldStats, type PerplexityResult } from '../eval/perplexity.js';
import { memorySink } from '../io/sink.js';
import { bytesSource, type ByteSource } from '../io/source.js';

export interface EvalSetup {
  ctx: number;
  chunks?: number;
}

export interface BaseEvaluation {
  result: PerplexityResult;
  base: BaseSource;
  tokens: ArrayLike<number>;
}

/** Score the original model on `text` and keep its logits as the base for later comparisons. */
export async function evaluateBase(model: ByteSource, text: string, s: EvalSetup): Promise<BaseEvaluation> {
  const m = await loadModel(model, { contextLength: s.ctx, batch: Math.min(s.ctx, 512) });
  if (!m.tokenizer) fail(`${model.name} carries no vocabulary`);
  const tokens = m.tokenizer.encode(text);
  const sink = memorySink();
  const result = await perplexity(m.model, tokens, { ctx: s.ctx, chunks: s.chunks, bos: m.tokenizer.vocab.bos, addBos: m.tokenizer.vocab.addBos, saveLogits: (b) => sink.write(b) });
  const base = await logitsFileBase(bytesSource(sink.bytes(), `${model.name} logits`));
  return { result, base, tokens: base.tokens ?? tokens };
}

/** Score a candidate against the base's logits (same tokens, same chunks). */
export async function evaluateAgainst(model: ByteSource, base: BaseEvaluation, s: EvalSetup): Promise<PerplexityResult> {
  const m = await loadModel(model, { contextLength: s.ctx, batch: Math.min(s.ctx, 512) });
  const vocab = m.tokenizer?.vocab;
  return perplexity(m.model, base.tokens, { ctx: s.ctx, chunks: s.chunks, bos: vocab?.bos ?? 1, addBos: vocab?.addBos ?? true, base: base.base });
}

/** What a quantization cost, measured against the original model on a text (the quantize report's eval). */
export interface QuantizeEvaluation {
  /** the text's name (a file path in the CLI) */
  text: string;
  ctx: number;
  chunks: number;
  /** scored tokens (the second half of each chunk) */
  tokens: number;
  pplBase: number;
  ppl: number;
  pplStderr: number;
  kld: KldStats;
  top1: number;
  dp: { mean: number; rms: number; max: number };
  /** every scored token's KLD (for the histogram); omitted from JSON by the CLI */
  kldValues: Float32Array;
  seconds: number;
}

/** Run the original and the quantized model on `text` and compare them (PPL, KLD, top-1, Δp). */
export async function evaluateQuantization(original: ByteSource, quantized: ByteSource, text: string, s: EvalSetup & { textName?: string; onChunk?: (done: number, total: number) => void }): Promise<QuantizeEvaluation> {
  const t0 = performance.now();
  const base = await evaluateBase(original, text, s);
  const m = await loadModel(quantized, { contextLength: s.ctx, batch: Math.min(s.ctx, 512) });
  const vocab = m.tokenizer?.vocab;
  const r = await perplexity(m.model, base.tokens, {
    ctx: s.ctx,
    chunks: s.chunks,
    bos: vocab?.bos ?? 1,
    addBos: vocab?.addBos ?? true,
    base: base.base,
    keepKld: true,
    onChunk: s.onChunk ? (done, total) => s.onChunk!(done, total) : undefined,
  });
  return {
    text: s.textName ?? 'text',
    ctx: r.ctx,
    chunks: r.chunks,
    tokens: r.tokens,
    pplBase: base.result.ppl,
    ppl: r.ppl,
    pplStderr: r.pplStderr,
    kld: r.kld!,
    top1: r.top1!,
    dp: r.dp!,
    kldValues: r.kldValues!,
    seconds: (performance.now() - t0) / 1000,
  };
}
