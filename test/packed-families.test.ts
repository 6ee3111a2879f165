/**
 * GPTQ / AWQ packed int4 checkpoints of every family (src/pipeline/quantize-packed.ts), on the seeded
 * random models of scripts/family-models.ts: quantize(model, recipe, sink, { layout }) writes the HF
 * checkpoint (fused Phi-3 qkv_proj / gate_up_proj packed whole, one packed module per expert, Gemma's
 * norms as w - 1, the family's config.json), and `convert` (io/hf-families.ts convertHfFolder) reads it
 * back to GGUF: every tensor equals what lowbit's own int4 scheme gives (bit for bit), the metadata and
 * tokenizer are the model's, and the runtime's loadModel (config.json only) gives the logits of lowbit's
 * native layout of the same recipe exactly. The HF names are checked against the independent HF folder of the test
 * models (familyHfFolder), not only against the family table both directions read.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { familyHfFolder, familyModel, familyVocab, type Family } from '../scripts/family-models.js';
import { defineRecipe } from '../src/algos/recipe.js';
import { plainValue, readGguf, readGgufTensor, writeGguf } from '../src/io/gguf.js';
import { loadModel } from '../src/eval/load.js';
import { convertHfFolder, hfGgufMetadata, llama3RopeFreqs, llama3RopeScaling } from '../src/io/hf-families.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { toFloat32 } from '../src/io/tensor-data.js';
import type { Vocab } from '../src/model/types.js';
import { quantize } from '../src/pipeline/quantize.js';
import { resolveScheme } from '../src/quant/registry.js';

const vocabFor = (f: Family): Vocab => familyVocab(f, new URL('../../data/', import.meta.url));

/** int4 g16 (asym or sym) on every linear (16 divides 48, 64, 96 and 128), embeddings / lm_head F16, the rest F32 */
const recipeOf = (asym: boolean) =>
  defineRecipe({
    lowbitRecipe: 1,
    name: `int4_g16${asym ? '_asym' : ''}`,
    rules: [
      { match: '(norm\\.weight|\\.bias|ffn_gate_inp\\.weight|^rope_freqs\\.weight)$', keep: 'f32' },
      { match: '^(token_embd|output)\\.weight$', keep: 'f16' },
      { match: '\\.weight$', scheme: 'int4', groupSize: 16, asym },
    ],
  });
const recipe = recipeOf(true);

const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;
const lowbit = (args: string[]) => spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
const TOKENS = [1, 5, 9, 17, 33, 65, 2, 3];
const FAMILIES: readonly Family[] = ['llama3', 'mistral', 'mixtral', 'qwen2', 'qwen3', 'qwen3moe', 'phi3', 'gemma2', 'gemma3'];

async function familyFile(f: Family) {
  const fm = familyModel(f, vocabFor(f), 5);
  const sink = memorySink();
  await writeGguf(sink, fm.metadata, fm.tensors);
  return { fm, model: await openModelFile(bytesSource(sink.bytes(), `${f}.gguf`)) };
}

const f32 = (data: Uint8Array) => new Float32Array(new Uint8Array(data).buffer);
const f32Of = (v: unknown) => (typeof v === 'number' ? Math.fround(v) : v);
const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

for (const f of FAMILIES)
  test(`${f}: GPTQ and AWQ checkpoints read back to lowbit's int4 values, bit for bit, with the model's metadata`, async () => {
    const { fm, model } = await familyFile(f);
    const hfNames = new Set(familyHfFolder(fm, vocabFor(f)).tensors.map((t) => t.name));
    for (const [layout, asym] of [['gptq', true], ['awq', true], ['gptq', false]] as const) {
      const scheme = resolveScheme('int4', { groupSize: 16, asymmetric: asym });
      const sink = memorySink();
      const run = quantize(model, recipeOf(asym), sink, { layout });
      if (f === 'gemma3' && layout === 'gptq' && asym) {
        // a group whose max exceeds ~29x |min| gets zero-point 0, which GPTQ v1 cannot hold (docs/packed.md)
        await assert.rejects(run, /zero-point 0, which GPTQ's v1 format \(stored as zero - 1\) cannot hold/);
        continue;
      }
      const report = await run;
      const hfConfig = report.hfConfig!;
      const packed = await openModelFile(bytesSource(sink.bytes(), 'model.safetensors'));
      // HF names: each float tensor of the test model's HF folder is either stored or packed (qweight)
      const stored = new Set(packed.tensors.map((t) => t.name));
      for (const n of hfNames) {
        if (n === 'lm_head.weight' && f === 'gemma2') continue;
        const prefix = n.replace(/\.weight$/, '');
        assert.ok(stored.has(n) || stored.has(`${prefix}.qweight`), `${f} ${layout}: ${n} is in the checkpoint (${[...stored].slice(0, 6).join(', ')} ...)`);
      }
      const linears = packed.packedInt4 ?? [];
      assert.ok(linears.length > 0 && linears.every((g) => g.layout === layout), `${f} ${layout}: packed layers`);
      if (f === 'phi3') assert.ok(stored.has('model.layers.0.self_attn.qkv_proj.qweight') && stored.has('model.layers.1.mlp.gate_up_proj.qweight'), 'phi3: fused tensors packed whole');
      if (f === 'qwen3moe') assert.ok(stored.has('model.layers.1.mlp.experts.3.down_proj.qweight'), 'qwen3moe: one packed module per expert');
      if (f === 'mixtral') assert.ok(stored.has('model.layers.0.block_sparse_moe.experts.2.w3.qweight') && stored.has('model.layers.0.block_sparse_moe.gate.weight'), 'mixtral: experts packed, router float');
      assert.equal((hfConfig.quantization_config as Record<string, unknown>).quant_method, layout);

      // back to GGUF through the family converter
      const out = memorySink();
      await convertHfFolder(packed, hfConfig, out, { tokenizer: {} });
      const g = await readGguf(bytesSource(out.bytes(), 'back.gguf'));
      const back = new Map(g.tensors.map((t) => [t.name, t]));
      assert.deepEqual([...back.keys()].sort(), fm.tensors.map((t) => t.name).sort(), `${f} ${layout}: the same tensors`);
      for (const t of fm.tensors) {
        const x = f32(t.data);
        const bt = back.get(t.name)!;
        assert.deepEqual(bt.ne, t.ne, `${t.name}: shape`);
        const y = toFloat32(bt.type.name as 'F32' | 'F16', await readGgufTensor(g, bt));
        let want: Float32Array;
        if (/^(token_embd|output)\.weight$/.test(t.name)) want = toFloat32('F16', (await import('../src/io/tensor-data.js')).fromFloat32('F16', x));
        else if (t.ne.length === 1 || t.name.endsWith('ffn_gate_inp.weight')) want = x;
        else {
          const rows = x.length / t.ne[0];
          want = scheme.dequantizeRef(scheme.quantizeRef(x, rows, t.ne[0]), rows, t.ne[0]);
        }
        assert.ok(sameBits(y, want), `${f} ${layout}: ${t.name} reads back as lowbit's values`);
      }
      // metadata: the family's hyper-parameters survive config.json (hfGgufMetadata of the written config)
      const orig = new Map(fm.metadata.map(([k, v]) => [k, plainValue(v)]));
      const arch = fm.arch;
      for (const [k, v] of hfGgufMetadata(hfConfig).metadata) {
        if (k === 'general.name') continue;
        assert.deepEqual(f32Of(plainValue(v)), f32Of(orig.get(k)), `${f} ${layout}: ${k}`);
      }
      for (const [k, v] of orig) if (k.startsWith(`${arch}.`)) assert.deepEqual(f32Of(plainValue(g.metadata.get(k)!)), f32Of(v), `${f} ${layout}: ${k} after the round trip`);
      assert.deepEqual(plainValue(g.metadata.get('tokenizer.ggml.tokens')!), orig.get('tokenizer.ggml.tokens'), `${f} ${layout}: tokenizer`);
      if (layout === 'awq') {
        // the runtime reads the checkpoint (config.json only: the tokenizer travels in __metadata__) and
        // computes the logits of lowbit's native layout of the same recipe, exactly
        const native = memorySink();
        await quantize(model, recipeOf(asym), native);
        const want = (await loadModel(bytesSource(native.bytes(), 'native.safetensors'))).model.forward(TOKENS, 0, 0);
        const loaded = await loadModel(bytesSource(sink.bytes(), 'model.safetensors'), { hfConfig });
        assert.equal(loaded.tokenizer?.vocab.tokens.length, vocabFor(f).tokens.length, `${f}: the carried tokenizer`);
        assert.deepEqual(loaded.model.forward(TOKENS, 0, 0), want, `${f} ${layout}: logits`);
      }
    }
  });

test('llama 3: rope_freqs.weight becomes config.json rope_scaling (rope type llama3), not a tensor; the inverse of the converter\'s curve; a curve llama3 cannot express is refused', async () => {
  const { model } = await familyFile('llama3');
  const sink = memorySink();
  const report = await quantize(model, recipe, sink, { layout: 'gptq' });
  // Llama 3.1's values, as scripts/family-models.ts gave the converter
  assert.deepEqual(report.hfConfig!.rope_scaling, { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
  assert.equal(report.hfConfig!.rope_theta, 500000);
  const packed = await openModelFile(bytesSource(sink.bytes(), 'model.safetensors'));
  assert.ok(!packed.tensors.some((t) => /rope/.test(t.name)), 'no RoPE tensor in the HF checkpoint');
  // the inverse on other curves: Llama 3.2's factor 32, and thresholds that are not Llama 3.1's (fitted)
  const hd = 128;
  for (const rs of [
    { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 3, original_max_position_embeddings: 4096 },
    { rope_type: 'llama3', factor: 16, low_freq_factor: 2, high_freq_factor: 6, original_max_position_embeddings: 10000 },
  ]) {
    const freqs = llama3RopeFreqs(hd, { ...rs, rope_theta: 500000 });
    const back = llama3RopeScaling(freqs, hd, 500000)!;
    const again = llama3RopeFreqs(hd, { ...back, rope_theta: 500000 });
    assert.ok(again.every((v, i) => Math.abs(v - freqs[i]) <= 1e-6 * freqs[i]), `${JSON.stringify(rs)} -> ${JSON.stringify(back)}`);
    if (rs.low_freq_factor === 1) assert.deepEqual(back, rs, 'low_freq_factor 1: the same numbers');
  }
  assert.equal(llama3RopeScaling(new Float32Array(hd / 2).fill(1), hd, 500000), undefined, 'all factors 1: no rope_scaling');
  // factors that fall and rise again are no llama3 curve: one clear line, before any byte is written
  const bad = llama3RopeFreqs(hd, { factor: 8, rope_theta: 500000 });
  bad[3] = 5;
  assert.throws(() => llama3RopeScaling(bad, hd, 500000), /not a llama3 rope_scaling curve/);
  // (the HF llama loader reading rope_scaling back: the llama3 round trip of the test above, its logits)
});

test('CLI: quantize --layout gptq of a Qwen 2 GGUF; eval and convert (file or folder) read the checkpoint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-packed-fam-'));
  try {
    const { fm } = await familyFile('qwen2');
    const sink = memorySink();
    await writeGguf(sink, fm.metadata, fm.tensors);
    writeFileSync(join(dir, 'in.gguf'), sink.bytes());
    writeFileSync(join(dir, 't.txt'), readFileSync(new URL('../../data/tinystories-valid-head.txt', import.meta.url), 'utf8').slice(0, 3000));
    mkdirSync(join(dir, 'g'));
    const q = lowbit(['quantize', join(dir, 'in.gguf'), join(dir, 'g', 'model.safetensors'), '--type', 'int4', '--group', '16', '--asym', '--layout', 'gptq', '--json']);
    assert.equal(q.status, 0, q.stderr);
    const config = JSON.parse(readFileSync(join(dir, 'g', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual([config.architectures, config.model_type, (config.quantization_config as Record<string, unknown>).quant_method], [['Qwen2ForCausalLM'], 'qwen2', 'gptq']);
    const e = lowbit(['eval', join(dir, 'g', 'model.safetensors'), '--text', join(dir, 't.txt'), '--ctx', '32', '--chunks', '2', '--json']);
    assert.equal(e.status, 0, e.stderr);
    assert.ok(Number.isFinite((JSON.parse(e.stdout) as { ppl: number }).ppl), e.stdout.slice(0, 200));
    const a = lowbit(['convert', join(dir, 'g', 'model.safetensors'), join(dir, 'a.gguf')]);
    const b = lowbit(['convert', join(dir, 'g'), join(dir, 'b.gguf')]);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(b.status, 0, b.stderr);
    assert.ok(readFileSync(join(dir, 'a.gguf')).equals(readFileSync(join(dir, 'b.gguf'))), 'the file converts as its folder');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a non-llama HF checkpoint is streamed into the runtime as it is converted (no GGUF file in memory): the logits of its GGUF, with and without the kernels', async () => {
  const { SafetensorsWriter } = await import('../src/io/safetensors.js');
  const { fm } = await familyFile('qwen2');
  const hf = familyHfFolder(fm, vocabFor('qwen2'));
  const st = memorySink();
  const w = new SafetensorsWriter(st, hf.tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape })), { format: 'pt' });
  await w.begin();
  for (const t of hf.tensors) await w.write(t.data);
  await w.end();
  const conv = memorySink();
  await convertHfFolder(await openModelFile(bytesSource(st.bytes(), 'model.safetensors')), hf.config, conv, { tokenizer: {}, tokenizerOptional: true });
  for (const kernels of [undefined, 'reference'] as const) {
    const streamed = await loadModel(bytesSource(st.bytes(), 'model.safetensors'), { hfConfig: hf.config, ...(kernels ? { kernels } : {}) });
    const viaFile = await loadModel(bytesSource(conv.bytes(), 'qwen2.gguf'), kernels ? { kernels } : {});
    assert.equal(streamed.format, 'gguf');
    assert.deepEqual(streamed.model.forward(TOKENS, 0, 0), viaFile.model.forward(TOKENS, 0, 0), `kernels ${kernels ?? 'default'}`);
  }
});
