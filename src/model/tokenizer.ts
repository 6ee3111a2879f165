/**
 * The llama / sentencepiece BPE tokenizer as llama.cpp runs it (llm_tokenizer_spm):
 *  1. the text is split around user-defined tokens (control and unknown pieces are not parsed from text);
 *  2. each raw fragment that starts the input or follows a special token gets a leading space
 *     ("add dummy prefix"), then every ' ' becomes U+2581;
 *  3. the fragment starts as one symbol per Unicode character; the adjacent pair whose concatenation is a
 *     vocabulary piece with the highest score is merged (ties: leftmost first), repeatedly;
 *  4. each final symbol is emitted as its piece id, or, when it is no piece, as its UTF-8 bytes through
 *     the byte-fallback pieces <0xNN>.
 * No whitespace collapsing or Unicode normalization is applied (llama.cpp applies none either).
 *
 * Speed, with the same result: when no vocabulary piece holds U+2581 right after another character
 * (true of sentencepiece vocabularies trained with whitespace splitting, such as Llama 2's), no merge
 * can join the symbols on both sides of a position where U+2581 follows another character; step 3 then
 * runs on each "word" between such positions separately (merges in one word never change the bigrams
 * of another, and within a word the order by score, then position, is the same), and the ids of
 * recent words are cached. The words' ends are found by the string's own search for U+2581, and a short
 * run's merges pick the best pair by a scan of the current pairs instead of a heap (the same pair: the
 * highest score, then the leftmost). `encodeReference` is the plain algorithm (the
 * heap over the whole fragment, no words, no cache): the fast path is tested against it.
 */
import { fail } from '../errors.js';
import { BpeEncoder } from './bpe.js';
import { CHAR_TO_BYTE } from './pretokenize.js';
import { TokenType, type Vocab } from './types.js';

const SPACE = '\u2581';

interface Bigram {
  left: number;
  right: number;
  score: number;
  /** combined length of the two symbols when queued; a mismatch later means they changed */
  size: number;
}

/** max-heap on (score, then lower left index) */
class BigramQueue {
  private readonly heap: Bigram[] = [];
  get length(): number {
    return this.heap.length;
  }
  private static before(a: Bigram, b: Bigram): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }
  push(b: Bigram): void {
    const h = this.heap;
    let i = h.length;
    h.push(b);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!BigramQueue.before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }
  pop(): Bigram {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && BigramQueue.before(h[l], h[m])) m = l;
        if (r < h.length && BigramQueue.before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

/** runs of at most this many characters are merged by scanning their pairs (longer: the bigram heap) */
const SCAN_MAX = 48;

export interface EncodeOptions {
  /** prepend BOS (default: the vocabulary's addBos) */
  bos?: boolean;
  /** append EOS (default false) */
  eos?: boolean;
  /** parse control tokens written in the text (e.g. "<|eot_id|>") as themselves (llama.cpp parse_special; default false) */
  special?: boolean;
}

export class Tokenizer {
  readonly vocab: Vocab;
  private readonly pieceToId = new Map<string, number>();
  private readonly byteIds = new Int32Array(256).fill(-1);
  /** user-defined pieces, longest first: matched in raw text before BPE */
  private readonly userDefined: { piece: string; id: number }[] = [];
  /** user-defined, control and unknown pieces, longest first (matched with `special: true`) */
  private readonly specials: { piece: string; id: number }[] = [];
  /** byte-level BPE (tokenizer.ggml.model = gpt2); null for sentencepiece */
  private readonly bpe: BpeEncoder | null;
  private readonly utf8 = new TextEncoder();
  /** no piece holds U+2581 after another character: words can be encoded separately (see top) */
  private readonly splitWords: boolean;
  /** ids of recently encoded words */
  private readonly wordCache = new Map<string, number[]>();
  /** the scores of the pieces (as numbers) */
  private readonly scores: Float64Array;

  constructor(vocab: Vocab) {
    this.vocab = vocab;
    const n = vocab.tokens.length;
    if (vocab.scores.length !== n || vocab.types.length !== n) fail(`vocabulary arrays disagree: ${n} tokens, ${vocab.scores.length} scores, ${vocab.types.length} types`);
    vocab.tokens.forEach((t, i) => this.pieceToId.set(t, i)); // a repeated piece maps to its last id, as in llama.cpp
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      const id = this.pieceToId.get(hex) ?? this.pieceToId.get(String.fromCharCode(b));
      if (id !== undefined) this.byteIds[b] = id;
    }
    vocab.types.forEach((t, i) => {
      if (vocab.tokens[i].length === 0) return;
      if (t === TokenType.USER_DEFINED) this.userDefined.push({ piece: vocab.tokens[i], id: i });
      if (t === TokenType.USER_DEFINED || t === TokenType.CONTROL || t === TokenType.UNKNOWN) this.specials.push({ piece: vocab.tokens[i], id: i });
    });
    this.userDefined.sort((a, b) => b.piece.length - a.piece.length);
    this.specials.sort((a, b) => b.piece.length - a.piece.length);
    this.bpe = vocab.model === 'gpt2' ? new BpeEncoder(vocab, this.pieceToId) : null;
    this.splitWords = this.bpe === null && !vocab.tokens.some((t) => /[^\u2581]\u2581/u.test(t));
    this.scores = Float64Array.from(vocab.scores);
  }

  /** Token ids of `text`. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.encodeWith(text, opts, false);
  }

  /**
   * The same ids by the plain algorithm (every fragment merged whole with the bigram heap, no word split,
   * no cache): the reference `encode` is tested against; slow on long texts.
   */
  encodeReference(text: string, opts: EncodeOptions = {}): number[] {
    return this.encodeWith(text, opts, true);
  }

  private encodeWith(text: string, opts: EncodeOptions, reference: boolean): number[] {
    const out: number[] = [];
    if (opts.bos ?? this.vocab.addBos) out.push(this.vocab.bos);
    let prevSpecial = true;
    for (const frag of this.splitSpecial(text, opts.special ? this.specials : this.userDefined)) {
      if (typeof frag === 'number') {
        out.push(frag);
        prevSpecial = true;
        continue;
      }
      if (this.bpe) {
        this.bpe.encode(frag, out);
        continue;
      }
      const t = (this.vocab.addSpacePrefix && prevSpecial ? ' ' : '') + frag;
      if (reference) this.encodeSymbolsReference(t.replaceAll(' ', SPACE), out);
      else this.encodeFragment(t.replaceAll(' ', SPACE), out);
      prevSpecial = false;
    }
    if (opts.eos) out.push(this.vocab.eos);
    return out;
  }

  /**
   * The first ids of encode(text): at least `minTokens` of them (or all, for a shorter text), from
   * growing prefixes of the text instead of all of it. A prefix ends before a space that starts a word:
   * with a word-split vocabulary and no user-defined pieces, words are encoded independently (see top),
   * so the prefix's ids are the first ids of the whole text's. Otherwise the whole text is encoded.
   */
  encodeAtLeast(text: string, minTokens: number, opts: EncodeOptions = {}): number[] {
    if (!this.splitWords || this.userDefined.length > 0 || opts.eos || opts.special) return this.encode(text, opts);
    for (let len = Math.max(4096, 8 * minTokens); ; len *= 2) {
      let cut = len;
      while (cut < text.length && !(text.charCodeAt(cut) === 0x20 && text.charCodeAt(cut - 1) !== 0x20)) cut++;
      if (cut >= text.length) return this.encode(text, opts);
      const ids = this.encode(text.slice(0, cut), opts);
      if (ids.length >= minTokens) return ids;
    }
  }

  private splitSpecial(text: string, specials: readonly { piece: string; id: number }[]): (string | number)[] {
    if (text.length === 0) return [];
    let frags: (string | number)[] = [text];
    for (const { piece, id } of specials) {
      const next: (string | number)[] = [];
      for (const f of frags) {
        if (typeof f === 'number' || !f.includes(piece)) {
          next.push(f);
          continue;
        }
        const parts = f.split(piece);
        parts.forEach((p, i) => {
          if (i > 0) next.push(id);
          if (p.length > 0) next.push(p);
        });
      }
      frags = next;
    }
    return frags;
  }

  private encodeFragment(text: string, out: number[]): void {
    if (!this.splitWords) {
      this.encodeSymbols(text, 0, text.length, out);
      return;
    }
    const cache = this.wordCache;
    const n = text.length;
    for (let from = 0; from < n; ) {
      // the word ends before the next U+2581 that follows another character (found by the string's own search)
      let end = text.indexOf(SPACE, from + 1);
      while (end > 0 && text.charCodeAt(end - 1) === 0x2581) end = text.indexOf(SPACE, end + 1);
      if (end < 0) end = n;
      const word = text.slice(from, end);
      let ids = cache.get(word);
      if (ids === undefined) {
        ids = [];
        this.encodeSymbols(word, 0, word.length, ids);
        if (cache.size >= 1 << 16) cache.clear();
        cache.set(word, ids);
      }
      for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      from = end;
    }
  }

  /** steps 3 and 4 on text[from, to): a short run by scanning its pairs, a long one with the bigram heap (the same merges) */
  private encodeSymbols(text: string, from: number, to: number, out: number[]): void {
    if (to <= from) return;
    if (to - from > SCAN_MAX) {
      this.encodeSymbolsReference(text.slice(from, to), out);
      return;
    }
    // symbols: [start, start + len) in UTF-16 units of text, in a linked list (next; -1 ends it); score[i]:
    // the score of the piece symbol i + its next would make, when there is one (isPiece[i])
    const start = this.scanStart;
    const len = this.scanLen;
    const next = this.scanNext;
    const score = this.scanScore;
    const isPiece = this.scanIsPiece;
    let n = 0;
    for (let i = from; i < to; n++) {
      const c = text.charCodeAt(i);
      const w = c >= 0xd800 && c < 0xdc00 && i + 1 < to && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1; // a surrogate pair is one character
      start[n] = i;
      len[n] = w;
      next[n] = n + 1;
      i += w;
    }
    next[n - 1] = -1;
    const pair = (a: number): void => {
      const b = next[a];
      const id = b < 0 ? undefined : this.pieceToId.get(text.substr(start[a], len[a] + len[b]));
      isPiece[a] = id === undefined ? 0 : 1;
      if (id !== undefined) score[a] = this.scores[id];
    };
    for (let a = 0; a < n; a++) pair(a);
    for (;;) {
      // the highest score, the leftmost of equal ones (the order of the bigram heap)
      let best = -1;
      for (let a = 0; a >= 0; a = next[a]) if (isPiece[a] && (best < 0 || score[a] > score[best])) best = a;
      if (best < 0) break;
      const b = next[best];
      len[best] += len[b];
      next[best] = next[b];
      pair(best);
      // (the symbol before best: the one whose next is best)
      for (let a = 0; a >= 0 && a !== best; a = next[a])
        if (next[a] === best) {
          pair(a);
          break;
        }
    }
    for (let a = 0; a >= 0; a = next[a]) this.emit(text.substr(start[a], len[a]), out);
  }

  private readonly scanStart = new Int32Array(SCAN_MAX);
  private readonly scanLen = new Int32Array(SCAN_MAX);
  private readonly scanNext = new Int32Array(SCAN_MAX);
  private readonly scanScore = new Float64Array(SCAN_MAX);
  private readonly scanIsPiece = new Uint8Array(SCAN_MAX);

  /** a final symbol's id, or its UTF-8 bytes' byte-fallback ids when it is no piece (step 4) */
  private emit(s: string, out: number[]): void {
    const id = this.pieceToId.get(s);
    if (id !== undefined) {
      out.push(id);
      return;
    }
    // merged symbols are always pieces, so this is a single character outside the vocabulary
    for (const byte of this.utf8.encode(s)) {
      const bid = this.byteIds[byte];
      if (bid < 0) fail(`cannot encode byte 0x${byte.toString(16)}: the vocabulary has no byte-fallback piece for it`);
      out.push(bid);
    }
  }

  /** steps 3 and 4 on one run of text with the bigram heap: the reference */
  private encodeSymbolsReference(text: string, out: number[]): void {
    // symbols: [start, length) in UTF-16 units of `text`, a doubly linked list
    const chars = Array.from(text);
    const n = chars.length;
    if (n === 0) return;
    const start = new Int32Array(n);
    const len = new Int32Array(n);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    let off = 0;
    for (let i = 0; i < n; i++) {
      start[i] = off;
      len[i] = chars[i].length;
      off += len[i];
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const queue = new BigramQueue();
    const tryAdd = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const id = this.pieceToId.get(text.substr(start[left], len[left] + len[right]));
      if (id === undefined) return;
      queue.push({ left, right, score: this.vocab.scores[id], size: len[left] + len[right] });
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (queue.length > 0) {
      const b = queue.pop();
      if (len[b.left] === 0 || len[b.right] === 0 || len[b.left] + len[b.right] !== b.size) continue; // stale
      len[b.left] += len[b.right];
      len[b.right] = 0;
      next[b.left] = next[b.right];
      if (next[b.right] >= 0) prev[next[b.right]] = b.left;
      tryAdd(prev[b.left], b.left);
      tryAdd(b.left, next[b.left]);
    }
    for (let i = 0; i !== -1; i = next[i]) {
      const s = text.substr(start[i], len[i]);
      const id = this.pieceToId.get(s);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      // merged symbols are always pieces, so this is a single character outside the vocabulary
      for (const byte of this.utf8.encode(s)) {
        const bid = this.byteIds[byte];
        if (bid < 0) fail(`cannot encode byte 0x${byte.toString(16)}: the vocabulary has no byte-fallback piece for it`);
        out.push(bid);
      }
    }
  }

  /** The bytes one token stands for (byte pieces give one byte; control tokens give none). */
  tokenBytes(id: number): Uint8Array {
    const v = this.vocab;
    if (!(id >= 0 && id < v.tokens.length)) fail(`token id ${id} is outside the ${v.tokens.length}-token vocabulary`);
    const t = v.types[id];
    if (t === TokenType.BYTE) return Uint8Array.of(parseInt(v.tokens[id].slice(3, 5), 16));
    if (t === TokenType.CONTROL || t === TokenType.UNUSED) return new Uint8Array(0);
    if (this.bpe) {
      if (t === TokenType.USER_DEFINED) return this.utf8.encode(v.tokens[id]);
      // byte-level piece: each character stands for one byte (llama.cpp drops characters outside the map)
      const bytes: number[] = [];
      for (const ch of v.tokens[id]) {
        const b = CHAR_TO_BYTE.get(ch);
        if (b !== undefined) bytes.push(b);
      }
      return Uint8Array.from(bytes);
    }
    if (t === TokenType.UNKNOWN) return this.utf8.encode(' \u2047 ');
    return this.utf8.encode(v.tokens[id].replaceAll(SPACE, ' '));
  }

  /**
   * Text of a token sequence. Byte pieces are re-assembled into UTF-8. The leading space that the dummy
   * prefix added is dropped when the sequence starts the text (after an optional BOS), as llama.cpp does.
   */
  decode(ids: readonly number[], opts: { stripLeadingSpace?: boolean } = {}): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let first = true;
    for (const id of ids) {
      let b = this.tokenBytes(id);
      if (first && b.length > 0) {
        if ((opts.stripLeadingSpace ?? this.vocab.addSpacePrefix) && b[0] === 0x20) b = b.subarray(1);
        first = false;
      }
      parts.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return new TextDecoder('utf-8').decode(all);
  }
}

/**
 * Streaming decoder for generation: feed ids one at a time, get back the text that is complete so far
 * (a UTF-8 character split over byte pieces is held until its last byte arrives).
 */
export class TokenTextStream {
  private readonly decoder = new TextDecoder('utf-8');
  private first = true;
  constructor(
    private readonly tok: Tokenizer,
    /** true when the first token fed starts the text (its dummy-prefix space is dropped) */
    atStart: boolean,
  ) {
    this.first = atStart;
  }
  push(id: number): string {
    let b = this.tok.tokenBytes(id);
    if (this.first && b.length > 0) {
      if (this.tok.vocab.addSpacePrefix && b[0] === 0x20) b = b.subarray(1);
      this.first = false;
    }
    return this.decoder.decode(b, { stream: true });
  }
  flush(): string {
    return this.decoder.decode();
  }
}
