/**
 * Our tokenizer against llama.cpp (node-llama-cpp 3.22.1, CPU prebuilt) on the two evaluation texts, for both
 * vocabularies. llama.cpp loads stories260K.gguf for tok512, and a vocab-only GGUF written here from
 * tokenizer.model for the Llama 2 vocabulary. Skipped when node-llama-cpp cannot load.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseSentencepieceModel } from '../src/io/vocab.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import type { Vocab } from '../src/model/types.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const dataPath = (f: string) => new URL(`../../data/${f}`, import.meta.url);
const data = (f: string) => new Uint8Array(readFileSync(dataPath(f)));
const text = (f: string) => readFileSync(dataPath(f), 'utf8');

/** A GGUF v3 file with metadata only (no tensors): enough for llama.cpp's vocab-only load. */
export function vocabOnlyGguf(v: Vocab): Uint8Array {
  const chunks: Uint8Array[] = [];
  const u32 = (x: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, x, true); chunks.push(b); };
  const u64 = (x: number) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(x), true); chunks.push(b); };
  const f32 = (x: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, x, true); chunks.push(b); };
  const str = (s: string) => { const b = new TextEncoder().encode(s); u64(b.length); chunks.push(b); };
  const kv: [string, number, (() => void)][] = [
    ['general.architecture', 8, () => str('llama')],
    ['llama.context_length', 4, () => u32(2048)],
    ['llama.embedding_length', 4, () => u32(64)],
    ['llama.feed_forward_length', 4, () => u32(172)],
    ['llama.block_count', 4, () => u32(5)],
    ['llama.attention.head_count', 4, () => u32(8)],
    ['llama.attention.head_count_kv', 4, () => u32(4)],
    ['llama.rope.dimension_count', 4, () => u32(8)],
    ['llama.attention.layer_norm_rms_epsilon', 6, () => f32(1e-5)],
    ['tokenizer.ggml.model', 8, () => str('llama')],
    ['tokenizer.ggml.tokens', 9, () => { u32(8); u64(v.tokens.length); v.tokens.forEach(str); }],
    ['tokenizer.ggml.scores', 9, () => { u32(6); u64(v.scores.length); v.scores.forEach(f32); }],
    ['tokenizer.ggml.token_type', 9, () => { u32(5); u64(v.types.length); v.types.forEach(u32); }],
    ['tokenizer.ggml.bos_token_id', 4, () => u32(v.bos)],
    ['tokenizer.ggml.eos_token_id', 4, () => u32(v.eos)],
    ['tokenizer.ggml.unknown_token_id', 4, () => u32(v.unk)],
  ];
  chunks.push(new TextEncoder().encode('GGUF'));
  u32(3);
  u64(0);
  u64(kv.length);
  for (const [k, type, write] of kv) { str(k); u32(type); write(); }
  let n = chunks.reduce((a, c) => a + c.length, 0);
  chunks.push(new Uint8Array((32 - (n % 32)) % 32));
  n = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) { out.set(c, o); o += c.length; }
  return out;
}

function firstDiff(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

test('tokenizer matches llama.cpp on TinyStories and WikiText-2 with tok512 and the Llama 2 vocabulary', async (t) => {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') {
    t.skip(loaded);
    return;
  }
  const llama = loaded.llama;
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-tok-'));
  try {
    const llama2Vocab = parseSentencepieceModel(data('tokenizer.model'));
    const llama2Gguf = join(dir, 'llama2-vocab.gguf');
    writeFileSync(llama2Gguf, vocabOnlyGguf(llama2Vocab));
    const cases: [string, string, Vocab][] = [
      ['tok512', dataPath('stories260K.gguf').pathname, parseSentencepieceModel(data('tok512.model'))],
      ['llama2', llama2Gguf, llama2Vocab],
    ];
    for (const [vname, ggufPath, vocab] of cases) {
      const model = await llama.loadModel({ modelPath: ggufPath, vocabOnly: true });
      const ours = new Tokenizer(vocab);
      for (const f of ['tinystories-valid-head.txt', 'wikitext-2-test.raw']) {
        // the whole files with LOWBIT_FULL=1 (about 20 s); the first 150k characters otherwise
        const s = process.env.LOWBIT_FULL ? text(f) : text(f).slice(0, 150_000);
        const ref = Array.from(model.tokenize(s), Number);
        const got = ours.encode(s, { bos: false });
        const d = firstDiff(got, ref);
        assert.equal(d, -1, `${vname} ${f}: first difference at token ${d}: ours ${got.slice(d, d + 5)} llama.cpp ${ref.slice(d, d + 5)}`);
        t.diagnostic(`${vname} ${f}: ${got.length} tokens identical to llama.cpp`);
        // line by line too (each line starts a text, so it gets the dummy prefix)
        const lines = s.split('\n').slice(0, 200);
        let same = 0;
        for (const line of lines) {
          const a = ours.encode(line, { bos: false });
          const b = line === '' ? [] : Array.from(model.tokenize(line), Number);
          if (firstDiff(a, b) === -1) same++;
        }
        assert.equal(same, lines.length, `${vname} ${f}: ${lines.length - same} of ${lines.length} lines differ`);
      }
      await model.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
