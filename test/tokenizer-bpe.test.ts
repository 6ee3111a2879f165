/**
 * Byte-level BPE tokenizers against llama.cpp (node-llama-cpp 3.22.1, vocab-only load of a GGUF written here).
 * The vocabularies are learned on the shipped texts (src/model/bpe-train.ts), one per llama.cpp
 * pre-tokenizer: llama-bpe (Llama 3), qwen2, gpt-2, tekken (Mistral Nemo). Compared: TinyStories and
 * WikiText-2 (first 120k characters each), adversarial strings and seeded random strings over Unicode
 * classes (letters of several scripts, digits, marks, emoji with ZWJ, whitespace kinds, CR/LF,
 * apostrophes, unassigned and private-use code points).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { tokenizerFromVocab } from '../src/io/convert.js';
import { gguf, writeGguf, type GgufValue } from '../src/io/gguf.js';
import { memorySink } from '../src/io/sink.js';
import { vocabFromGgufMetadata } from '../src/io/vocab.js';
import { trainByteBpe } from '../src/model/bpe-train.js';
import { preTokenize } from '../src/model/pretokenize.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import type { Vocab } from '../src/model/types.js';
import { LowbitError } from '../src/errors.js';
import { xorshift32 } from '../src/rng.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const text = (f: string) => readFileSync(new URL(`../../data/${f}`, import.meta.url), 'utf8');
const STORIES = text('tinystories-valid-head.txt');
const WIKI = text('wikitext-2-test.raw');

const PRES = ['llama-bpe', 'qwen2', 'gpt-2', 'tekken'] as const;

/** a learned vocabulary: 600 merges over 80k characters of each shipped text */
function learned(pre: string): Vocab {
  return trainByteBpe(STORIES.slice(0, 80_000) + WIKI.slice(0, 80_000), { pre, merges: 600, specials: ['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>'] });
}

/** a GGUF with the tokenizer and a token llama architecture block (llama.cpp's vocab-only load reads both) */
async function vocabGguf(v: Vocab): Promise<Uint8Array> {
  const meta: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['llama.context_length', gguf.u32(2048)],
    ['llama.embedding_length', gguf.u32(64)],
    ['llama.feed_forward_length', gguf.u32(128)],
    ['llama.block_count', gguf.u32(1)],
    ['llama.attention.head_count', gguf.u32(4)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(1e-5)],
    ...tokenizerFromVocab(v),
  ];
  const sink = memorySink();
  await writeGguf(sink, meta, []);
  return sink.bytes();
}

const ADVERSARIAL = [
  '',
  ' ',
  '   ',
  ' a',
  'a ',
  '\n',
  '\n\n\n',
  ' \n \n ',
  '\r\n\r\n',
  '\t\t tab\t',
  "don't I'M we'Re THEY'LL it'S 'd 'x '",
  '1 12 123 1234 12345 123456 1234567',
  '١٢٣٤ ४५६ ⅷⅸ ½¾ ²³ 𝟙𝟚',
  'ÀÉÎõü ΑΒΓ αβγ Привет мир ÉCOLEécole',
  'e\u0301 a\u0308 combining marks',
  '日本語のテキスト 中文文本 한국어',
  '🎉🎉 👨‍👩‍👧 🏳️‍🌈 ❤️',
  '\u00a0\u2003x\u3000y\u2028z\u0085w',
  'a/b//c\\d http://x.org/a?b=c&d',
  'CamelCaseWordsHTTPServer iPhone McDonald',
  '<|begin_of_text|>hi<|end_of_text|> <|eot_id|>',
  '\u0378\u0379 unassigned \ue000 private',
  'x'.repeat(300) + ' ' + ' '.repeat(50) + 'y',
  '!!!???... ---- ==== ****\n\n',
];

/** seeded random strings over the character classes that pre-tokenizers treat differently */
function randomStrings(n: number, seed: number): string[] {
  const pieces = [' ', '  ', '\n', '\r\n', '\t', '\u00a0', '\u3000', "'", "'s", "'LL", 'a', 'Z', 'the', 'The', 'THE', 'é', 'Ä', 'ß', 'ǅ', 'я', 'Ж', 'ω', '日', 'ア', '한', 'ا', '5', '42', '٣', '½', 'Ⅻ', '.', ',', '!', '?', '-', '/', '$', '+', '€', '©', '\u0301', '\u200d', '😀', '👍🏽', '\ue000', '\u0378', '\u200b', '_', '@'];
  const next = xorshift32(seed);
  const rng = { next: () => next() / 2 ** 32 };
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    let s = '';
    const len = 1 + Math.floor(rng.next() * 24);
    for (let j = 0; j < len; j++) s += pieces[Math.floor(rng.next() * pieces.length)];
    out.push(s);
  }
  return out;
}

function firstDiff(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

test('pre-tokenizers cut words as llama.cpp does (hand-checked)', () => {
  const s = "CamelCaseWordsHTTPServer x1234 ÉCOLEécole  \n ";
  assert.deepEqual(preTokenize(s, 'tekken'), ['Camel', 'Case', 'Words', 'HTTPServer', ' x', '1', '2', '3', '4', ' ÉCOLEécole', '  \n', ' ']);
  assert.deepEqual(preTokenize(s, 'qwen2'), ['CamelCaseWordsHTTPServer', ' x', '1', '2', '3', '4', ' ÉCOLEécole', '  \n', ' ']);
  assert.deepEqual(preTokenize(s, 'llama3'), ['CamelCaseWordsHTTPServer', ' x', '123', '4', ' ÉCOLEécole', '  \n', ' ']);
  assert.deepEqual(preTokenize(s, 'gpt2'), ['CamelCaseWordsHTTPServer', ' x', '1234', ' ÉCOLEécole', '  \n ']);
  assert.deepEqual(preTokenize("we'RE it's", 'gpt2'), ['we', "'", 'RE', ' it', "'s"]);
  assert.deepEqual(preTokenize("we'RE it's", 'llama3'), ['we', "'RE", ' it', "'s"]);
  assert.deepEqual(preTokenize('a   b', 'llama3'), ['a', '  ', ' b']);
});

test('byte-level BPE: learned vocabulary round-trips through GGUF metadata, decodes to the text, parses specials', async () => {
  const v = learned('llama-bpe');
  const meta = new Map(tokenizerFromVocab(v).map(([k, val]) => [k, val.type === 9 ? (val.value as { values: unknown[] }).values : val.value] as [string, unknown]));
  const back = vocabFromGgufMetadata(meta);
  assert.equal(back.model, 'gpt2');
  assert.equal(back.pre, 'llama-bpe');
  assert.deepEqual(back.merges, v.merges);
  assert.equal(back.addBos, true);
  const tok = new Tokenizer(back);
  for (const s of ADVERSARIAL) assert.equal(tok.decode(tok.encode(s, { bos: false })), s, `round trip of ${JSON.stringify(s)}`);
  const ids = tok.encode('<|begin_of_text|>hi<|eot_id|>', { bos: false, special: true });
  assert.equal(ids[0], v.tokens.indexOf('<|begin_of_text|>'));
  assert.equal(ids.at(-1), v.tokens.indexOf('<|eot_id|>'));
  assert.equal(tok.encode('hi')[0], v.bos, 'llama-bpe adds BOS by default');
  assert.notEqual(new Tokenizer(learned('qwen2')).encode('hi')[0], v.bos, 'qwen2 adds no BOS by default');
});

test('byte-level BPE: an unknown pre-tokenizer or missing merges is a clear error', () => {
  const base = { 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a', 'b', 'ab'], 'tokenizer.ggml.merges': ['a b'] };
  assert.throws(() => vocabFromGgufMetadata({ ...base, 'tokenizer.ggml.pre': 'nonesuch' }), (e: Error) => e instanceof LowbitError && /unknown pre-tokenizer 'nonesuch'.*llama-bpe.*qwen2.*tekken/.test(e.message));
  assert.throws(() => vocabFromGgufMetadata(base), /no tokenizer.ggml.pre/);
  assert.throws(() => vocabFromGgufMetadata({ ...base, 'tokenizer.ggml.pre': 'qwen2', 'tokenizer.ggml.merges': undefined }), /merges/);
  assert.throws(() => vocabFromGgufMetadata({ ...base, 'tokenizer.ggml.model': 'bert' }), /'bert' is not supported/);
});

test('byte-level BPE ids equal llama.cpp for llama-bpe, qwen2, gpt-2 and tekken', async (t) => {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') {
    t.skip(loaded);
    return;
  }
  const llama = loaded.llama;
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-bpe-'));
  try {
    for (const pre of PRES) {
      const v = learned(pre);
      const file = join(dir, `${pre}.gguf`);
      writeFileSync(file, await vocabGguf(v));
      const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
      const ours = new Tokenizer(v);
      let tokens = 0;
      for (const s of [STORIES.slice(0, 120_000), WIKI.slice(0, 120_000), ...ADVERSARIAL, ...randomStrings(300, 7)]) {
        const ref = s === '' ? [] : Array.from(model.tokenize(s), Number);
        const got = ours.encode(s, { bos: false });
        const d = firstDiff(got, ref);
        assert.equal(d, -1, `${pre} ${JSON.stringify(s.slice(0, 60))}: first difference at token ${d}: ours ${got.slice(d, d + 5)} llama.cpp ${ref.slice(d, d + 5)}`);
        tokens += got.length;
        // specials parsed as llama.cpp's parse_special does
        if (s.includes('<|')) assert.deepEqual(ours.encode(s, { bos: false, special: true }), Array.from(model.tokenize(s, true), Number), `${pre} specials in ${JSON.stringify(s)}`);
      }
      t.diagnostic(`${pre}: ${v.tokens.length}-token learned vocabulary, ${tokens} tokens identical to llama.cpp`);
      await model.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
