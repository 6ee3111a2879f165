/**
 * Byte-level BPE (GPT-2 style, GGUF `tokenizer.ggml.model = gpt2`) as llama.cpp runs it
 * (llm_tokenizer_bpe_session):
 *  1. the text (a fragment between special tokens) is cut into words by the pre-tokenizer (pretokenize.ts);
 *  2. each word's UTF-8 bytes become BYTE_TO_CHAR characters ("Ġ" for a space);
 *  3. with `ignore_merges` (llama3, tekken) a word that is itself a vocabulary token is emitted whole;
 *  4. otherwise the word starts as one symbol per character; the adjacent pair with the lowest merge rank
 *     (its index in tokenizer.ggml.merges, "left right") is merged, ties leftmost first, until none is left;
 *  5. each symbol is emitted as its token id; a symbol with no id (a vocabulary that lacks a base byte)
 *     falls back to one token per byte of its text, dropping bytes with no token, as llama.cpp does.
 */
import { fail } from '../errors.js';
import { byteEncode, preTokenize, preTokenizerKind, preTokenizerTraits, type PreTokenizerKind } from './pretokenize.js';
import type { Vocab } from './types.js';

const UTF8 = new TextEncoder();

/** min-heap on (rank, then left index) */
class RankQueue {
  private readonly rank: number[] = [];
  private readonly left: number[] = [];
  private readonly right: number[] = [];
  private readonly text: string[] = [];
  get length(): number {
    return this.rank.length;
  }
  private before(i: number, j: number): boolean {
    return this.rank[i] < this.rank[j] || (this.rank[i] === this.rank[j] && this.left[i] < this.left[j]);
  }
  private swap(i: number, j: number): void {
    [this.rank[i], this.rank[j]] = [this.rank[j], this.rank[i]];
    [this.left[i], this.left[j]] = [this.left[j], this.left[i]];
    [this.right[i], this.right[j]] = [this.right[j], this.right[i]];
    [this.text[i], this.text[j]] = [this.text[j], this.text[i]];
  }
  push(rank: number, left: number, right: number, text: string): void {
    let i = this.rank.length;
    this.rank.push(rank);
    this.left.push(left);
    this.right.push(right);
    this.text.push(text);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  /** remove the top; returns [left, right, text] */
  pop(): [number, number, string] {
    const top: [number, number, string] = [this.left[0], this.right[0], this.text[0]];
    const last = this.rank.length - 1;
    this.swap(0, last);
    this.rank.pop();
    this.left.pop();
    this.right.pop();
    this.text.pop();
    const n = this.rank.length;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.before(l, m)) m = l;
      if (r < n && this.before(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}

export class BpeEncoder {
  readonly kind: PreTokenizerKind;
  readonly ignoreMerges: boolean;
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();

  constructor(
    vocab: Vocab,
    private readonly pieceToId: ReadonlyMap<string, number>,
  ) {
    this.kind = preTokenizerKind(vocab.pre);
    this.ignoreMerges = preTokenizerTraits(this.kind).ignoreMerges;
    const merges = vocab.merges ?? fail('a byte-level BPE vocabulary needs tokenizer.ggml.merges');
    merges.forEach((m, i) => {
      const sp = m.indexOf(' ', 1);
      if (sp < 0) fail(`BPE merge ${i} '${m}' is not two pieces separated by a space`);
      if (!this.ranks.has(m)) this.ranks.set(m, i); // the first (lowest) rank of a repeated merge, as llama.cpp's map insert
    });
  }

  /** Append the ids of a raw text fragment (no special tokens in it). */
  encode(text: string, out: number[]): void {
    for (const word of preTokenize(text, this.kind)) {
      let ids = this.cache.get(word);
      if (ids === undefined) {
        ids = this.encodeWord(byteEncode(word));
        if (this.cache.size >= 1 << 16) this.cache.clear();
        this.cache.set(word, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  private encodeWord(word: string): number[] {
    if (this.ignoreMerges) {
      const id = this.pieceToId.get(word);
      if (id !== undefined) return [id];
    }
    // symbols: [start, len) in UTF-16 units, a doubly linked list; every BYTE_TO_CHAR char is one unit
    const n = word.length;
    const start = new Int32Array(n);
    const len = new Int32Array(n);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      start[i] = i;
      len[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const q = new RankQueue();
    const tryAdd = (l: number, r: number) => {
      if (l < 0 || r < 0) return;
      const a = word.substr(start[l], len[l]);
      const b = word.substr(start[r], len[r]);
      const rank = this.ranks.get(a + ' ' + b);
      if (rank !== undefined) q.push(rank, l, r, a + b);
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (q.length > 0) {
      const [l, r, text] = q.pop();
      if (len[l] === 0 || len[r] === 0 || word.substr(start[l], len[l] + len[r]) !== text || next[l] !== r) continue; // stale
      len[l] += len[r];
      len[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryAdd(prev[l], l);
      tryAdd(l, next[l]);
    }
    const ids: number[] = [];
    for (let i = 0; i !== -1; i = next[i]) {
      const s = word.substr(start[i], len[i]);
      const id = this.pieceToId.get(s);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // llama.cpp looks each byte of the symbol's (byte-encoded, UTF-8) text up as a one-byte token
      for (const b of UTF8.encode(s)) {
        if (b >= 0x80) continue; // a lone UTF-8 byte is never a token text
        const bid = this.pieceToId.get(String.fromCharCode(b));
        if (bid !== undefined) ids.push(bid);
      }
    }
    return ids;
  }
}
