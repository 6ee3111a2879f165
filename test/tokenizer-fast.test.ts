/**
 * The sentencepiece tokenizer's fast path (words found by the string's search for U+2581, their ids
 * cached, short words merged by a scan of their pairs) against encodeReference (the bigram heap over each
 * whole fragment, no words, no cache): the same ids on the shipped texts with both shipped vocabularies,
 * on edge cases, and on small vocabularies built to exercise the merge order (equal scores: the leftmost
 * pair first; a piece scored -Infinity; no word split).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseSentencepieceModel } from '../src/io/vocab.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { TokenType, type Vocab } from '../src/model/types.js';

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));
const text = (f: string) => readFileSync(new URL(`../../data/${f}`, import.meta.url), 'utf8');

/** encode and encodeReference agree (and encode again, from the cache, too) */
function same(tok: Tokenizer, s: string, what: string): void {
  const ref = tok.encodeReference(s);
  assert.deepEqual(tok.encode(s), ref, what);
  assert.deepEqual(tok.encode(s), ref, `${what} (words from the cache)`);
}

const EDGE = [
  '', ' ', '  ', '   x', 'x   ', ' a b  c   d    ', '\n', '\n\n a\n\nb \n', '\ta\t b', '▁', '▁▁a', 'a▁b', 'a ▁ b', '▁ ▁',
  'héllo wörld — ✓ 日本語 🙂🙂 a🙂b', 'e\u0301 combining', 'lone \ud800 high, lone \udc00 low, pair \ud83d\ude42', '\ud83d',
  'a'.repeat(47), 'a'.repeat(48), 'a'.repeat(49), 'b'.repeat(300), 'x'.repeat(47) + '🙂', 'supercalifragilisticexpialidocious'.repeat(3),
  '12345 678901 3.14159 1,000,000', 'Hello, World! "quoted" (paren) [bracket] {brace} <angle> #hash @at $dollar %pct ^caret &amp *star',
  'the the the the the', 'Once upon a time, there was a little girl named Lily.',
];

test('encode = encodeReference on the shipped texts (whole files, both vocabularies)', () => {
  for (const model of ['tokenizer.model', 'tok512.model']) {
    const tok = new Tokenizer(parseSentencepieceModel(data(model)));
    for (const f of ['tinystories-valid-head.txt', 'wikitext-2-test.raw']) {
      const s = text(f);
      const ref = tok.encodeReference(s, { bos: false });
      const ids = tok.encode(s, { bos: false });
      assert.equal(ids.length, ref.length, `${model} ${f}: ${ids.length} ids, the reference ${ref.length}`);
      assert.deepEqual(ids, ref, `${model} ${f}`);
    }
  }
});

test('encode = encodeReference on edge cases, with and without BOS, and past the word cache\'s size', () => {
  for (const model of ['tokenizer.model', 'tok512.model']) {
    const tok = new Tokenizer(parseSentencepieceModel(data(model)));
    for (const s of EDGE) same(tok, s, `${model}: ${JSON.stringify(s.slice(0, 60))}`);
    assert.deepEqual(tok.encode('a b', { bos: true, eos: true }), tok.encodeReference('a b', { bos: true, eos: true }));
    // more distinct words than the cache holds (65536): it is emptied on the way, the ids do not change
    const many = Array.from({ length: 70000 }, (_, i) => (i * 7919).toString(36)).join(' ');
    assert.deepEqual(tok.encode(many), tok.encodeReference(many), `${model}: 70000 distinct words`);
  }
});

/** a small sentencepiece vocabulary: control pieces, the 256 byte pieces, then `pieces` with their scores */
function vocab(pieces: [string, number][]): Vocab {
  const tokens = ['<unk>', '<s>', '</s>'];
  const scores = [0, 0, 0];
  const types: number[] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    scores.push(0);
    types.push(TokenType.BYTE);
  }
  for (const [p, s] of pieces) {
    tokens.push(p);
    scores.push(s);
    types.push(TokenType.NORMAL);
  }
  return { tokens, scores: Float32Array.from(scores), types: Int32Array.from(types), bos: 1, eos: 2, unk: 0, addBos: false, addSpacePrefix: true };
}

test('merge order: the highest score first, equal scores from the left, a -Infinity score still merges', () => {
  const id = (v: Vocab, p: string) => v.tokens.indexOf(p);
  // equal scores: "▁aba" has the pairs ▁a (-9), ab (-5) and ba (-5): ab, the left one of the best two, merges
  const tied = vocab([['▁', -1], ['a', -1], ['b', -1], ['ab', -5], ['ba', -5], ['▁a', -9], ['▁b', -9]]);
  const tok = new Tokenizer(tied);
  assert.deepEqual(tok.encode('aba'), [id(tied, '▁'), id(tied, 'ab'), id(tied, 'a')]);
  assert.deepEqual(tok.encode('bab'), [id(tied, '▁'), id(tied, 'ba'), id(tied, 'b')]);
  for (const s of ['aba', 'bab', 'abab', 'babab', 'ab ba ab', 'aaaa bbbb', 'a'.repeat(60), 'ab'.repeat(40)]) same(tok, s, `tied: ${s}`);
  // a piece whose score is -Infinity is still a piece (the reference queues it): "xy" merges when nothing else does
  const inf = vocab([['▁', 0], ['x', 0], ['y', 0], ['xy', -Infinity], ['▁x', -3]]);
  const t2 = new Tokenizer(inf);
  same(t2, 'xy', '-Infinity piece');
  assert.deepEqual(t2.encode('yxy'), [id(inf, '▁'), id(inf, 'y'), id(inf, 'xy')]);
  // longer pieces built from shorter ones, with scores that make the order matter
  const chain = vocab([['▁', -1], ['h', -1], ['e', -1], ['l', -1], ['o', -1], ['he', -4], ['ll', -2], ['lo', -3], ['llo', -6], ['hell', -7], ['hello', -8], ['▁he', -5], ['▁hello', -9]]);
  const t3 = new Tokenizer(chain);
  for (const s of ['hello', 'hello hello', 'helllo', 'hehello', 'llollo', 'hello'.repeat(12), 'ohell']) same(t3, s, `chain: ${s}`);
});

test('a vocabulary with a piece holding U+2581 after another character: no word split, the same ids', () => {
  const v = parseSentencepieceModel(data('tok512.model'));
  const noSplit: Vocab = { ...v, tokens: [...v.tokens, '\u0001\u2581'], scores: Float32Array.from([...v.scores, -1e9]), types: Int32Array.from([...v.types, TokenType.NORMAL]) };
  const tok = new Tokenizer(noSplit);
  for (const s of [...EDGE, text('tinystories-valid-head.txt').slice(0, 20000)]) same(tok, s, `no split: ${JSON.stringify(s.slice(0, 40))}`);
});
