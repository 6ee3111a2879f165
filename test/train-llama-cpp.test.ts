/**
 * The shipped test model data/tinyllama256.gguf (made by `lowbit train`, see data/README.md) in
 * llama.cpp (node-llama-cpp through scripts/llama-tools.ts, its own CPU code): it loads, and the perplexity computed from
 * llama.cpp's logits over held-out chunks (BOS first, second half scored, as llama-perplexity) equals
 * lowbit's own within 0.1 %.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { perplexity } from '../src/eval/perplexity.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const DATA = path.resolve(import.meta.dirname, '../../data');
const MODEL = path.join(DATA, 'tinyllama256.gguf');
const CTX = 128;
const CHUNKS = 6;

test('data/tinyllama256.gguf: llama.cpp loads it and agrees with lowbit on held-out perplexity', async (t) => {
  if (!fs.existsSync(MODEL)) {
    t.skip('data/tinyllama256.gguf not present');
    return;
  }
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') {
    t.skip(loaded);
    return;
  }
  const llama = loaded.llama;
  const m = await loadModel(fileSource(MODEL), { contextLength: CTX, batch: CTX });
  const text = fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8').slice(500000, 540000);
  const tokens = m.tokenizer!.encode(text);
  const ours = await perplexity(m.model, tokens, { ctx: CTX, chunks: CHUNKS, bos: m.tokenizer!.vocab.bos, addBos: true });
  const model = await llama.loadModel({ modelPath: MODEL, gpuLayers: 0 });
  let nll = 0;
  let count = 0;
  try {
    for (let c = 0; c < CHUNKS; c++) {
      const chunk = tokens.slice(c * CTX, (c + 1) * CTX);
      chunk[0] = m.tokenizer!.vocab.bos;
      const ctx = await model.createContext({ contextSize: CTX, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
      try {
        const items = chunk.map((tk, i) => (i >= CTX / 2 && i < CTX - 1 ? [tk, { generateNext: { logits: true } }] : tk));
        const res = await ctx.getSequence().controlledEvaluate(items);
        for (let i = CTX / 2; i < CTX - 1; i++) {
          const logits: Map<number, number> = res[i].next.logits;
          let max = -Infinity;
          for (const v of logits.values()) max = Math.max(max, v);
          let sum = 0;
          for (const v of logits.values()) sum += Math.exp(v - max);
          nll += max + Math.log(sum) - logits.get(chunk[i + 1])!;
          count++;
        }
      } finally {
        await ctx.dispose();
      }
    }
  } finally {
    await model.dispose();
  }
  const pplCpp = Math.exp(nll / count);
  t.diagnostic(`held-out PPL over ${count} tokens: llama.cpp ${pplCpp.toFixed(5)}, lowbit ${ours.ppl.toFixed(5)}`);
  assert.equal(count, ours.tokens ?? count);
  assert.ok(Math.abs(pplCpp - ours.ppl) < 1e-3 * ours.ppl, `llama.cpp ${pplCpp} vs lowbit ${ours.ppl}`);
});
