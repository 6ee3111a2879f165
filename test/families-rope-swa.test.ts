/**
 * RoPE scaling and the sliding-window KV memory, on the seeded family models (scripts/family-models.ts):
 *  - YaRN (rope.scaling.type yarn, factor 4, original context 32) on Qwen 2 and on Llama's layout:
 *    lowbit's perplexity equals llama-perplexity's (f32 KV cache, flash attention off) within 0.01 %,
 *    and differs from the unscaled model's (the scaling is not a no-op);
 *  - `lowbit convert` writes YaRN's metadata as convert_hf_to_gguf does;
 *  - Gemma 3 (5 of 6 layers slide, window 8): the sliding layers keep window + batch - 1 positions in a
 *    ring; with batch 4 the ring wraps many times over 64 tokens, and the logits equal those of a full
 *    cache (a caller's KvStorage) bit for bit.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { familyModel, familyVocab, type Family } from '../scripts/family-models.js';
import { llamaBin } from '../scripts/llama-tools.js';
import { gguf, writeGguf, type GgufValue } from '../src/io/gguf.js';
import { hfGgufMetadata } from '../src/io/hf-families.js';
import { memorySink } from '../src/io/sink.js';
import { f32KvStorage, Llama, llamaConfigFromGguf } from '../src/model/llama.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

const DATA = new URL('../../data/', import.meta.url);
const TEXT = readFileSync(new URL('tinystories-valid-head.txt', DATA), 'utf8').slice(0, 20_000);
const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;

async function write(file: string, f: Family, extra: (arch: string) => [string, GgufValue][]): Promise<void> {
  const m = familyModel(f, familyVocab(f, DATA), 3);
  const sink = memorySink();
  await writeGguf(sink, [...m.metadata.filter(([k]) => !k.includes('.rope.scaling.')), ...extra(m.arch)], m.tensors);
  writeFileSync(file, sink.bytes());
}

const yarn = (arch: string): [string, GgufValue][] => [
  [`${arch}.rope.scaling.type`, gguf.str('yarn')],
  [`${arch}.rope.scaling.factor`, gguf.f32(4)],
  [`${arch}.rope.scaling.original_context_length`, gguf.u32(32)],
];

function lowbitPpl(file: string, text: string): number {
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', CLI, 'eval', file, '--text', text, '--ctx', '64', '--chunks', '6', '--threads', '1', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { ppl: number }).ppl;
}

test('YaRN RoPE scaling: perplexity = llama-perplexity (f32 KV) within 0.01 %, and not the unscaled model', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-yarn-'));
  try {
    const text = join(dir, 'text.txt');
    writeFileSync(text, TEXT);
    const bin = llamaBin('llama-perplexity');
    for (const f of ['qwen2', 'llama3'] as const) {
      const scaled = join(dir, `${f}-yarn.gguf`);
      const plain = join(dir, `${f}.gguf`);
      await write(scaled, f, yarn);
      await write(plain, f, () => []);
      const ours = lowbitPpl(scaled, text);
      const unscaled = lowbitPpl(plain, text);
      assert.ok(Math.abs(ours / unscaled - 1) > 0.01, `${f}: YaRN changes the perplexity (${ours} vs ${unscaled})`);
      if (!bin) {
        t.diagnostic('llama-perplexity is not built: the comparison is skipped');
        continue;
      }
      const r = spawnSync(bin, ['-m', scaled, '-f', text, '-c', '64', '--chunks', '6', '-t', '1', '-ctk', 'f32', '-ctv', 'f32', '-fa', 'off'], { encoding: 'utf8' });
      const m = /Final estimate: PPL = ([\d.]+)/.exec(r.stdout + r.stderr);
      if (!m) {
        t.diagnostic(`${f}: llama-perplexity printed no estimate (its log thread can drop the last line)`);
        continue;
      }
      const theirs = Number(m[1]);
      t.diagnostic(`${f} YaRN x4: lowbit PPL ${ours.toFixed(4)}, llama-perplexity ${theirs.toFixed(4)} (unscaled ${unscaled.toFixed(2)})`);
      assert.ok(Math.abs(ours / theirs - 1) < 1e-4, `${f}: lowbit ${ours} vs llama-perplexity ${theirs}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('convert: a YaRN rope_scaling in config.json becomes rope.scaling.{type,factor,original_context_length}', () => {
  const cfg = { architectures: ['Qwen2ForCausalLM'], hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 96, rms_norm_eps: 1e-6, max_position_embeddings: 131072, rope_theta: 1e6, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } };
  const meta = new Map(hfGgufMetadata(cfg).metadata.map(([k, v]) => [k, (v as { value: unknown }).value]));
  assert.equal(meta.get('qwen2.rope.scaling.type'), 'yarn');
  assert.equal(meta.get('qwen2.rope.scaling.factor'), 4);
  assert.equal(meta.get('qwen2.rope.scaling.original_context_length'), 32768);
});

test('sliding-window layers keep window + batch - 1 positions in a ring; logits = a full cache bit for bit', async () => {
  const m = familyModel('gemma3', familyVocab('gemma3', DATA), 3);
  const f32 = ggmlTypeByName('F32')!;
  const tensors = m.tensors.map((x) => ({ name: x.name, type: f32, dims: x.ne, data: x.data }));
  const meta = new Map(m.metadata.map(([k, v]) => [k, (v as { value: unknown }).value]));
  const c = llamaConfigFromGguf(meta, tensors);
  assert.ok(c.slidingWindow && c.swaLayers!.filter(Boolean).length === 5, 'gemma3: 5 sliding layers of 6');
  const tokens = Int32Array.from({ length: 64 }, (_, i) => (i * 7919 + 11) % c.vocabSize);
  const ring = new Llama(c, tensors, { contextLength: 64, batch: 4, kernels: 'reference' });
  assert.deepEqual(ring.swaCache, { positions: c.slidingWindow! + 3, layers: 5 });
  const kvDim = c.nKvHeads * c.headDim;
  const full = new Llama(c, tensors, { contextLength: 64, batch: 4, kernels: 'reference', kv: f32KvStorage(c.nLayers, 64, kvDim) });
  assert.equal(full.swaCache, undefined);
  const a = ring.forward(tokens, 0, 0);
  const b = full.forward(tokens, 0, 0);
  assert.deepEqual(a, b);
  // decode one token at a time past the window: the same logits too
  const step = new Llama(c, tensors, { contextLength: 64, batch: 4, kernels: 'reference' });
  for (let p = 0; p < 40; p++) step.forward(tokens.subarray(p, p + 1), p);
  assert.deepEqual(step.forward(tokens.subarray(40, 41), 40), a.subarray(40 * c.vocabSize, 41 * c.vocabSize));
});
