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
