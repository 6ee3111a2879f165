// The public library surface (what `import ... from 'lowbit'` gives): open a model from bytes,
// quantize(model, recipe) into a memory sink, read the result back and run it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import * as lowbit from '../src/index.js';

const bytes = new Uint8Array(readFileSync(new URL('../../data/stories260K.gguf', import.meta.url)));

test('library: quantize(model, llamaRecipe) writes a GGUF that loads and runs', async () => {
  const m = await lowbit.openModelFile(lowbit.bytesSource(bytes, 'stories260K.gguf'));
  const recipe = lowbit.llamaRecipe('Q8_0');
  assert.deepEqual(lowbit.recipeFromJSON(lowbit.recipeToJSON(recipe)), recipe);
  const sink = lowbit.memorySink();
  const report = await lowbit.quantize(m, recipe, sink);
  assert.equal(report.output, 'gguf');
  const out = sink.bytes();
  const g = await lowbit.readGguf(lowbit.bytesSource(out, 'q8.gguf'));
  const q = g.tensors.find((t) => t.name === 'blk.0.attn_q.weight')!;
  assert.equal(q.type.name, 'Q8_0');
  assert.ok(report.bitsPerWeight > 8 && report.bitsPerWeight < 16, `bpw ${report.bitsPerWeight}`);
  for (const t of report.tensors) if (t.type === 'Q8_0') assert.ok(t.sqnrDb > 35, `${t.name} ${t.sqnrDb} dB`);
  const { model } = await lowbit.loadModel(lowbit.bytesSource(out, 'q8.gguf'));
  const logits = model.forward([1, 403, 407], 0, 2);
  assert.ok(logits.every(Number.isFinite));
  // determinism: same input and recipe -> same bytes
  const again = lowbit.memorySink();
  await lowbit.quantize(m, recipe, again);
  assert.deepEqual(again.bytes(), out);
});

test('library: a generic scheme recipe goes to safetensors and reads back', async () => {
  const m = await lowbit.openModelFile(lowbit.bytesSource(bytes, 'stories260K.gguf'));
  const sink = lowbit.memorySink();
  const report = await lowbit.quantize(m, lowbit.schemeRecipe('int4', { groupSize: 32 }), sink);
  assert.equal(report.output, 'safetensors');
  const st = await lowbit.readSafetensors(lowbit.bytesSource(sink.bytes(), 'q.safetensors'));
  assert.ok(st.metadata['lowbit.quant.blk.0.attn_q.weight'], 'quant metadata present');
  assert.throws(() => lowbit.defineRecipe({ lowbitRecipe: 1, name: 'bad', llama: { ftype: 'Q9_X' } }), /unknown llama.cpp file type 'Q9_X'/);
});
