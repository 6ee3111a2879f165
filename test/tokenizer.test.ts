import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseSentencepieceModel, parseTokenizerBin } from '../src/io/vocab.js';
import { TokenTextStream, Tokenizer } from '../src/model/tokenizer.js';

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));

test('tok512: "Once upon a time" -> [1, 403, 407, 261, 378] (README, llama2.c run.c)', () => {
  const tok = new Tokenizer(parseTokenizerBin(data('tok512.bin')));
  assert.deepEqual(tok.encode('Once upon a time'), [1, 403, 407, 261, 378]);
  assert.deepEqual(tok.encode('Once upon a time', { bos: false }), [403, 407, 261, 378]);
  assert.equal(tok.decode([1, 403, 407, 261, 378]), 'Once upon a time');
});

test('byte fallback and UTF-8 round trip (characters outside the vocabulary)', () => {
  for (const model of ['tok512.model', 'tokenizer.model']) {
    const tok = new Tokenizer(parseSentencepieceModel(data(model)));
    for (const s of ['héllo wörld — ✓ 日本語 🙂', '  two  spaces\nand\ttabs ', 'a']) {
      const ids = tok.encode(s);
      assert.equal(tok.decode(ids), s, `${model}: ${JSON.stringify(s)}`);
      const stream = new TokenTextStream(tok, true);
      let out = '';
      for (const id of ids) out += stream.push(id);
      out += stream.flush();
      assert.equal(out, s);
    }
    // the emoji is no piece in either vocabulary: its 4 UTF-8 bytes come out as <0xF0><0x9F><0x99><0x82>
    const ids = tok.encode('🙂', { bos: false });
    assert.deepEqual(ids.slice(-4).map((i) => tok.vocab.tokens[i]), ['<0xF0>', '<0x9F>', '<0x99>', '<0x82>']);
  }
});

test('merges follow scores: every merged piece is in the vocabulary and the encoding is no longer than characters', () => {
  const tok = new Tokenizer(parseSentencepieceModel(data('tokenizer.model')));
  const s = 'The quick brown fox jumps over the lazy dog.';
  const ids = tok.encode(s, { bos: false });
  assert.equal(tok.decode(ids), s);
  assert.ok(ids.length < s.length / 2, `${ids.length} tokens for ${s.length} characters`);
  assert.deepEqual(tok.encode('', { bos: false }), []);
  assert.deepEqual(tok.encode(''), [1]);
});

test('word-by-word encoding (with its cache) equals BPE over the whole text', () => {
  // a piece with U+2581 after another character turns the word split off; "\u0001" never occurs in the texts
  const noSplit = (v: ReturnType<typeof parseSentencepieceModel>) => ({
    ...v,
    tokens: [...v.tokens, '\u0001\u2581'],
    scores: Float32Array.from([...v.scores, -1e9]),
    types: Int32Array.from([...v.types, 1]),
  });
  const texts = ['tinystories-valid-head.txt', 'wikitext-2-test.raw'].map((f) => readFileSync(new URL(`../../data/${f}`, import.meta.url), 'utf8').slice(0, 40000));
  for (const model of ['tok512.model', 'tokenizer.model']) {
    const v = parseSentencepieceModel(data(model));
    const fast = new Tokenizer(v);
    const whole = new Tokenizer(noSplit(v));
    for (const text of [...texts, '  two  spaces\n\nand ▁ a lone mark, héllo 🙂']) {
      const a = fast.encode(text);
      assert.deepEqual(a, whole.encode(text), model);
      assert.deepEqual(fast.encode(text), a, 'cached words give the same ids');
    }
  }
});

test('encodeAtLeast: the first ids of the whole text from a prefix (what eval --chunks tokenizes)', () => {
  const texts = ['tinystories-valid-head.txt', 'wikitext-2-test.raw'].map((f) => readFileSync(new URL(`../../data/${f}`, import.meta.url), 'utf8').slice(0, 300000));
  texts.push('a  b   c    d ' + 'word '.repeat(3000) + '  tail');
  for (const model of ['tok512.model', 'tokenizer.model']) {
    const tok = new Tokenizer(parseSentencepieceModel(data(model)));
    for (const text of texts) {
      const all = tok.encode(text);
      for (const n of [1, 100, 1000, 5000, 20000, all.length, all.length + 1]) {
        const some = tok.encodeAtLeast(text, n);
        assert.ok(some.length >= Math.min(n, all.length), `${model}: ${some.length} ids for at least ${n}`);
        assert.deepEqual(some, all.slice(0, some.length), `${model}: prefix of ${n}`);
      }
    }
  }
});
