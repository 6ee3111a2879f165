/**
 * Text generation: encode the prompt (BOS first), run it as one batch, then decode one token at a time.
 */
import { fail } from '../errors.js';
import type { Llama } from '../model/llama.js';
import { Sampler } from '../model/sampler.js';
import { TokenTextStream, type Tokenizer } from '../model/tokenizer.js';

export interface GenerateOptions {
  /** new tokens to generate */
  steps: number;
  /** 0 = greedy */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** called once the prompt and the options are checked, before anything is generated (a CLI prints the prompt here) */
  onStart?: () => void;
  /** called with each piece of text as soon as it is complete UTF-8 */
  onText?: (text: string) => void;
  /** stop at the end-of-sequence token (default true) */
  stopAtEos?: boolean;
}

export interface GenerateResult {
  /** prompt tokens (with BOS) followed by the generated ones */
  tokens: number[];
  /** the generated text (without the prompt) */
  text: string;
  promptTokens: number;
  /** seconds spent on the prompt (its forward pass) */
  promptSeconds: number;
  /**
   * seconds spent generating: the one-token forward passes (`decodeSteps` of them), every sampling and
   * detokenization; not the caller's onText (the output: llama-bench times its llama_decode calls only,
   * llama-completion's "eval time" likewise)
   */
  decodeSeconds: number;
  /** one-token forward passes run (the first generated token comes from the prompt's logits) */
  decodeSteps: number;
}

export function generate(model: Llama, tok: Tokenizer, prompt: string, opts: GenerateOptions): GenerateResult {
  const c = model.config;
  const tokens = tok.encode(prompt);
  if (tokens.length === 0) fail('empty prompt and the vocabulary adds no BOS');
  if (tokens.length + opts.steps > model.kv.capacity)
    fail(`prompt (${tokens.length} tokens) + ${opts.steps} new tokens exceed the context of ${model.kv.capacity}`);
  const sampler = new Sampler(c.vocabSize, opts.temperature ?? 0, opts.topP ?? 0.9, opts.seed ?? 0);
  opts.onStart?.();
  const stream = new TokenTextStream(tok, tokens.length === (tok.vocab.addBos ? 1 : 0));
  const promptTokens = tokens.length;
  let text = '';
  let outputMs = 0; // time in the caller's onText (writing the text out), not counted as decoding
  const emit = (s: string) => {
    if (!s) return;
    text += s;
    if (!opts.onText) return;
    const a = performance.now();
    opts.onText(s);
    outputMs += performance.now() - a;
  };
  if (opts.steps > 1) model.prepareDecode(); // the decode layout of the weights, as llama.cpp repacks at load
  model.reserveKv(tokens.length + opts.steps); // the cache's pages mapped now, not one token at a time (llama.cpp clears its KV buffer at load)
  // One warm-up decode before the clock, as llama-bench runs one (`test_gen(ctx, 1, ...)`, then clears its
  // cache) before it times: a one-token forward at position 0, which the prompt's pass then rewrites before
  // anything reads it. The first one-token forward of a process costs 8-15 one-token forwards (its
  // buffers' first pages, the workers' first stealable chunks, the JavaScript's first runs). Only on the
  // f32 caches (those with `reserve`): their rows are plain overwrites; packed caches keep state per
  // group of positions. Not with hooks set: they would observe a forward that is not the text's.
  const h = model.hooks;
  if (opts.steps > 1 && model.kv.reserve && !h.linear && !h.linearInput && !h.kvInput) model.forward([tokens[0]], 0);
  const t0 = performance.now();
  let logits = model.forward(tokens, 0);
  const t1 = performance.now();
  let decodeSteps = 0;
  for (let i = 0; i < opts.steps; i++) {
    const next = sampler.sample(logits);
    if ((opts.stopAtEos ?? true) && next === tok.vocab.eos) break;
    tokens.push(next);
    emit(stream.push(next));
    if (i + 1 < opts.steps) {
      logits = model.forward([next], tokens.length - 1);
      decodeSteps++;
    }
  }
  emit(stream.flush());
  const t2 = performance.now();
  return { tokens, text, promptTokens, promptSeconds: (t1 - t0) / 1000, decodeSeconds: (t2 - t1 - outputMs) / 1000, decodeSteps };
}
