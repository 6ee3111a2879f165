/**
 * Learn a byte-level BPE vocabulary from text (Sennrich et al. 2016, with GPT-2's byte alphabet): words
 * come from a llama.cpp pre-tokenizer, the 256 byte characters are the base pieces, and the most frequent
 * adjacent pair (ties: the smaller "left right" string) is merged `merges` times. Special tokens are
 * appended as CONTROL pieces. Deterministic. Used to make small real vocabularies for tests and demos.
 */
import { fail } from '../errors.js';
import { BYTE_TO_CHAR, byteEncode, preTokenize, preTokenizerKind } from './pretokenize.js';
import { TokenType, type Vocab } from './types.js';

export interface BpeTrainOptions {
  /** tokenizer.ggml.pre of the result (default 'llama-bpe') */
  pre?: string;
  /** number of merges to learn */
  merges: number;
  /** control tokens appended after the learned pieces; the first is BOS, the second EOS */
  specials?: readonly string[];
  /** tokenizer.ggml.add_bos_token (default: the pre-tokenizer's llama.cpp default) */
  addBos?: boolean;
}

export function trainByteBpe(text: string, opts: BpeTrainOptions): Vocab {
  const pre = opts.pre ?? 'llama-bpe';
  const kind = preTokenizerKind(pre);
  if (!(Number.isInteger(opts.merges) && opts.merges >= 0)) fail(`merges must be a non-negative integer, got ${opts.merges}`);
  // unique words (byte-encoded) with their counts, each a list of symbols
  const counts = new Map<string, number>();
  for (const w of preTokenize(text, kind)) {
    const e = byteEncode(w);
    counts.set(e, (counts.get(e) ?? 0) + 1);
  }
  const words: { syms: string[]; count: number }[] = [...counts].map(([w, count]) => ({ syms: Array.from(w), count }));
  const tokens: string[] = [...BYTE_TO_CHAR];
  const seen = new Set(tokens);
  const merges: string[] = [];
  // pair counts and the words holding each pair, updated word by word as merges apply
  const pairCount = new Map<string, number>();
  const pairWords = new Map<string, Set<number>>();
  const addPairs = (wi: number, sign: 1 | -1) => {
    const { syms, count } = words[wi];
    for (let i = 0; i + 1 < syms.length; i++) {
      const k = syms[i] + ' ' + syms[i + 1];
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * count);
      if (sign > 0) {
        let set = pairWords.get(k);
        if (!set) pairWords.set(k, (set = new Set()));
        set.add(wi);
      }
    }
  };
  words.forEach((_, wi) => addPairs(wi, 1));
  for (let m = 0; m < opts.merges; m++) {
    let best = '';
    let bestCount = 0;
    for (const [k, c] of pairCount) if (c > bestCount || (c === bestCount && k < best)) [best, bestCount] = [k, c];
    if (bestCount < 2) break;
    const sp = best.indexOf(' ');
    const [a, b] = [best.slice(0, sp), best.slice(sp + 1)];
    const ab = a + b;
    merges.push(best);
    if (!seen.has(ab)) {
      seen.add(ab);
      tokens.push(ab);
    }
    for (const wi of pairWords.get(best) ?? []) {
      addPairs(wi, -1);
      const s = words[wi].syms;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) s.splice(i, 2, ab);
      addPairs(wi, 1);
    }
    pairWords.delete(best);
    pairCount.delete(best);
  }
  const nNormal = tokens.length;
  const specials = opts.specials ?? ['<|begin_of_text|>', '<|end_of_text|>'];
  tokens.push(...specials);
  const types = new Int32Array(tokens.length).fill(TokenType.NORMAL);
  types.fill(TokenType.CONTROL, nNormal);
  return {
    model: 'gpt2',
    pre,
    merges,
    tokens,
    scores: new Float32Array(tokens.length),
    types,
    bos: specials.length > 0 ? nNormal : 0,
    eos: specials.length > 1 ? nNormal + 1 : 0,
    unk: 0,
    addBos: opts.addBos ?? (kind === 'llama3' || kind === 'tekken'),
    addSpacePrefix: false,
  };
}
