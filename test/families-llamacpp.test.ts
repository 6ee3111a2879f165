/**
 * Every architecture family against llama.cpp (node-llama-cpp 3.22.1, CPU, f32 KV cache, no flash
 * attention): seeded random-weight models written by lowbit's GGUF writer with the metadata
 * convert_hf_to_gguf writes (scripts/family-models.ts), with a learned BPE vocabulary (Llama 3: llama-bpe,
 * Qwen: qwen2) or the tok512 sentencepiece vocabulary. Per family: perplexity of lowbit's logits within
 * 0.1 % of llama.cpp's on 48 tokens of TinyStories, the same argmax at every position, and 12 greedy
 * tokens identical. Bad input: an unknown architecture and inconsistent expert counts fail clearly.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FAMILIES, familyModel, familyVocab, type Family, type FamilyModel } from '../scripts/family-models.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { gguf, writeGguf } from '../src/io/gguf.js';
import { memorySink } from '../src/io/sink.js';
import type { Vocab } from '../src/model/types.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const DATA = (f: string) => new URL(`../../data/${f}`, import.meta.url);
const STORIES = readFileSync(DATA('tinystories-valid-head.txt'), 'utf8');
const WIKI = readFileSync(DATA('wikitext-2-test.raw'), 'utf8');
const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;

const vocabFor = (f: Family): Vocab => familyVocab(f, new URL('../../data/', import.meta.url));

async function ggufBytes(m: Pick<FamilyModel, 'metadata' | 'tensors'>): Promise<Uint8Array> {
  const sink = memorySink();
  await writeGguf(sink, m.metadata, m.tensors);
  return sink.bytes();
}

function logSumExp(a: ArrayLike<number>, o: number, n: number): number {
  let m = -Infinity;
  for (let j = 0; j < n; j++) m = Math.max(m, a[o + j]);
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(a[o + j] - m);
  return m + Math.log(s);
}
const argmax = (a: ArrayLike<number>, o: number, n: number) => {
  let b = 0;
  for (let j = 1; j < n; j++) if (a[o + j] > a[o + b]) b = j;
  return b;
};

test('every family matches llama.cpp: perplexity within 0.1 %, argmax everywhere, greedy tokens identical', async (t) => {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') {
    t.skip(loaded);
    return;
  }
  const llama = loaded.llama;
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-families-'));
  try {
    for (const family of FAMILIES) {
      const vocab = vocabFor(family);
      const V = vocab.tokens.length;
      const file = join(dir, `${family}.gguf`);
      writeFileSync(file, await ggufBytes(familyModel(family, vocab, 3)));
      const ours = await loadModel(fileSource(file), { kernels: 'reference' });
      assert.ok(ours.tokenizer, `${family}: tokenizer from the GGUF`);
      const toks = ours.tokenizer.encode(STORIES.slice(0, 400)).slice(0, 48);
      const N = toks.length;
      const mine = ours.model.forward(toks, 0, 0);
      const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
      const ctx = await model.createContext({ contextSize: 256, threads: 2, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
      try {
        // lowbit's greedy continuation of 12 tokens first; then llama.cpp evaluates prompt + continuation in
        // one batch, and its argmax after each token must be lowbit's next token (= llama.cpp's greedy run)
        const greedy: number[] = [];
        let last = ours.model.forward(toks, 0);
        for (let step = 0; step < 12; step++) {
          const next = argmax(last, 0, V);
          greedy.push(next);
          last = ours.model.forward([next], N + step);
        }
        const all = [...toks, ...greedy.slice(0, -1)];
        const seq = ctx.getSequence();
        const res = await seq.controlledEvaluate(all.map((tok) => [tok, { generateNext: { logits: true } }]));
        const ref = new Float64Array(all.length * V);
        res.forEach((r: { next: { logits: Map<number, number> } } | undefined, i: number) => {
          for (const [tok, v] of r!.next.logits!) ref[i * V + tok] = v;
        });
        let maxDiff = 0;
        let nllOurs = 0;
        let nllRef = 0;
        for (let i = 0; i < N; i++) {
          for (let j = 0; j < V; j++) maxDiff = Math.max(maxDiff, Math.abs(mine[i * V + j] - ref[i * V + j]));
          assert.equal(argmax(mine, i * V, V), argmax(ref, i * V, V), `${family}: argmax differs at position ${i}`);
          if (i + 1 < N) {
            nllOurs += logSumExp(mine, i * V, V) - mine[i * V + toks[i + 1]];
            nllRef += logSumExp(ref, i * V, V) - ref[i * V + toks[i + 1]];
          }
        }
        const pplOurs = Math.exp(nllOurs / (N - 1));
        const pplRef = Math.exp(nllRef / (N - 1));
        const rel = Math.abs(pplOurs / pplRef - 1);
        assert.ok(rel < 1e-3, `${family}: PPL ${pplOurs} vs llama.cpp ${pplRef} (${(rel * 100).toFixed(4)} %)`);
        const refGreedy = greedy.map((_, step) => argmax(ref, (N - 1 + step) * V, V));
        assert.deepEqual(greedy, refGreedy, `${family}: greedy tokens`);
        t.diagnostic(`${family}: PPL ${pplOurs.toFixed(3)} vs llama.cpp ${pplRef.toFixed(3)} (rel ${rel.toExponential(1)}), max |dlogit| ${maxDiff.toExponential(1)}, 48 argmax + 12 greedy tokens identical`);
      } finally {
        await ctx.dispose();
        await model.dispose();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unknown architecture, inconsistent expert counts, unknown pre-tokenizer: exit 2, a line naming the problem, nothing written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-families-bad-'));
  try {
    const vocab = vocabFor('qwen3moe');
    const m = familyModel('qwen3moe', vocab, 1);
    // architecture renamed
    const unknown = join(dir, 'unknown.gguf');
    writeFileSync(unknown, await ggufBytes({ metadata: m.metadata.map(([k, v]) => [k.replace(/^qwen3moe\./, 'mamba9.'), k === 'general.architecture' ? gguf.str('mamba9') : v]), tensors: m.tensors }));
    // expert_count 5 against tensors of 4 experts
    const badMoe = join(dir, 'bad-moe.gguf');
    writeFileSync(badMoe, await ggufBytes({ metadata: m.metadata.map(([k, v]) => [k, k === 'qwen3moe.expert_count' ? gguf.u32(5) : v]), tensors: m.tensors }));
    // a byte-level BPE tokenizer with a pre-tokenizer llama.cpp's list has but lowbit's does not
    const badPre = join(dir, 'bad-pre.gguf');
    const q = familyModel('qwen2', vocabFor('qwen2'), 1);
    writeFileSync(badPre, await ggufBytes({ metadata: q.metadata.map(([k, v]) => [k, k === 'tokenizer.ggml.pre' ? gguf.str('chatglm-bpe') : v]), tensors: q.tensors }));
    const text = join(dir, 'text.txt');
    writeFileSync(text, STORIES.slice(0, 2000));
    for (const [file, pattern] of [
      [unknown, /architecture 'mamba9' is not supported.*llama.*qwen2.*qwen3moe.*phi3.*gemma2.*gemma3/],
      [badMoe, /blk\.0\.ffn_gate_inp\.weight has dims \[64, 4\]: 4 experts, but qwen3moe\.expert_count is 5 \(inconsistent expert counts\)/],
      [badPre, /unknown pre-tokenizer 'chatglm-bpe'.*known: .*llama-bpe/],
    ] as const) {
      const out = join(dir, 'out.json');
      const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', CLI, 'eval', file, '--text', text, '--ctx', '32', '--chunks', '1', '--json', '--save-logits', out], { encoding: 'utf8' });
      assert.equal(r.status, 2, `${file}: exit ${r.status}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.ok(!r.stderr.includes('    at '), 'no stack trace');
      assert.ok(!existsSync(out), 'nothing written');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
