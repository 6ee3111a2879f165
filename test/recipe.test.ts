import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accumulateImatrix, emptyImatrix, importanceOf, readImatrixDat, writeImatrixDat } from '../src/algos/imatrix.js';
import { planLlamaTypes, type PlanTensor } from '../src/algos/llama-types.js';
import { defineRecipe, llamaRecipe, recipeFromJSON, recipeToJSON, ruleFor, schemeRecipe } from '../src/algos/recipe.js';

/** stories260K's tensors in GGUF file order (dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads) */
function stories(layers = 5, dim = 64, hidden = 172, kv = 32, tied = false): PlanTensor[] {
  const t: PlanTensor[] = [{ name: 'token_embd.weight', shape: [dim, 512], type: 'F32' }];
  if (!tied) t.push({ name: 'output.weight', shape: [dim, 512], type: 'F32' });
  t.push({ name: 'output_norm.weight', shape: [dim], type: 'F32' });
  for (let i = 0; i < layers; i++)
    t.push(
      { name: `blk.${i}.attn_norm.weight`, shape: [dim], type: 'F32' },
      { name: `blk.${i}.attn_q.weight`, shape: [dim, dim], type: 'F32' },
      { name: `blk.${i}.attn_k.weight`, shape: [dim, kv], type: 'F32' },
      { name: `blk.${i}.attn_v.weight`, shape: [dim, kv], type: 'F32' },
      { name: `blk.${i}.attn_output.weight`, shape: [dim, dim], type: 'F32' },
      { name: `blk.${i}.ffn_gate.weight`, shape: [dim, hidden], type: 'F32' },
      { name: `blk.${i}.ffn_down.weight`, shape: [hidden, dim], type: 'F32' },
      { name: `blk.${i}.ffn_up.weight`, shape: [dim, hidden], type: 'F32' },
      { name: `blk.${i}.ffn_norm.weight`, shape: [dim], type: 'F32' },
    );
  return t;
}
const model = { arch: 'llama', nLayer: 5, nHead: 8, nHeadKv: 4 };
const typeOf = (plan: { name: string; to: string }[], name: string) => plan.find((p) => p.name === name)?.to;

test('llama.cpp planning: norms stay F32, fallbacks for 64-wide rows, mixing rules', () => {
  const q40 = planLlamaTypes(stories(), model, { ftype: 'Q4_0' });
  assert.equal(typeOf(q40, 'blk.0.attn_norm.weight'), 'F32');
  assert.equal(typeOf(q40, 'blk.0.attn_q.weight'), 'Q4_0');
  assert.equal(typeOf(q40, 'output.weight'), 'Q8_0', 'output: row 64 not a multiple of 256 -> Q8_0');
  assert.equal(typeOf(q40, 'token_embd.weight'), 'Q4_0');
  // Q4_K_M on 64-wide rows: Q4_K falls back to Q5_0, the attn_v/ffn_down Q6_K picks fall back to Q8_0
  const km = planLlamaTypes(stories(), model, { ftype: 'Q4_K_M' });
  assert.equal(typeOf(km, 'blk.1.attn_q.weight'), 'Q5_0');
  assert.equal(km.find((p) => p.name === 'blk.1.attn_q.weight')?.fallbackFrom, 'Q4_K');
  // use_more_bits(i, 5): i < 0 || i >= 4 || (i - 0) % 3 == 2 -> layers 2 and 4
  assert.deepEqual([0, 1, 2, 3, 4].map((i) => typeOf(km, `blk.${i}.attn_v.weight`)), ['Q5_0', 'Q5_0', 'Q8_0', 'Q5_0', 'Q8_0']);
  // ffn_down rows are 172 wide: not a multiple of 32 -> F16 whatever the pick
  assert.equal(typeOf(km, 'blk.0.ffn_down.weight'), 'F16');
  // a 256-multiple model exercises the K rules directly
  const big = stories(8, 256, 512, 128);
  const km8 = planLlamaTypes(big, { ...model, nLayer: 8 }, { ftype: 'Q4_K_M' });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => typeOf(km8, `blk.${i}.ffn_down.weight`)), ['Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q6_K']);
  assert.equal(typeOf(km8, 'output.weight'), 'Q6_K');
  const pure = planLlamaTypes(big, { ...model, nLayer: 8 }, { ftype: 'Q4_K_M', pure: true });
  assert.ok(pure.filter((p) => p.name.endsWith('weight') && !p.name.includes('norm')).every((p) => p.to === 'Q4_K'));
  const q2 = planLlamaTypes(big, { ...model, nLayer: 8 }, { ftype: 'Q2_K' });
  assert.equal(typeOf(q2, 'blk.0.attn_v.weight'), 'Q3_K');
  assert.equal(typeOf(q2, 'blk.0.ffn_down.weight'), 'Q3_K');
  assert.equal(typeOf(q2, 'blk.0.attn_output.weight'), 'Q3_K');
  const lo = planLlamaTypes(big, { ...model, nLayer: 8 }, { ftype: 'Q4_K_S', leaveOutputTensor: true, tokenEmbeddingType: 'Q8_0' });
  assert.equal(typeOf(lo, 'output.weight'), 'F32');
  assert.equal(typeOf(lo, 'token_embd.weight'), 'Q8_0');
  const f16 = planLlamaTypes(stories(), model, { ftype: 'F16' });
  assert.equal(typeOf(f16, 'blk.0.ffn_down.weight'), 'F16');
  assert.equal(typeOf(f16, 'output_norm.weight'), 'F32');
  assert.throws(() => planLlamaTypes(stories(), model, { ftype: 'Q9_X' }), /unknown llama.cpp file type 'Q9_X'/);
});

test('recipes round-trip through JSON and reject bad input', () => {
  for (const r of [llamaRecipe('q4_k_m'), schemeRecipe('int4', { groupSize: 32 }), schemeRecipe('mxfp4', { keepEmbeddings: true })]) {
    const back = recipeFromJSON(recipeToJSON(r));
    assert.deepEqual(back, r);
    assert.ok(Object.isFrozen(back) && Object.isFrozen(back.rules));
  }
  const r = schemeRecipe('int4', { groupSize: 32 });
  assert.equal(ruleFor(r, 'blk.0.attn_norm.weight')?.keep, 'f32');
  assert.equal(ruleFor(r, 'blk.0.attn_q.weight')?.scheme, 'int4');
  assert.throws(() => recipeFromJSON('{'), /not valid JSON/);
  assert.throws(() => defineRecipe({ lowbitRecipe: 2, name: 'x', rules: [] }), /lowbitRecipe must be 1/);
  assert.throws(() => defineRecipe({ lowbitRecipe: 1, name: 'x', rules: [{ match: '(' , scheme: 'q4_0'}] }), /not a valid regular expression/);
  assert.throws(() => defineRecipe({ lowbitRecipe: 1, name: 'x', rules: [{ match: 'a' }] }), /needs 'scheme' or 'keep'/);
  assert.throws(() => defineRecipe({ lowbitRecipe: 1, name: 'x', rules: [], extra: 1 }), /unknown field 'extra'/);
  assert.throws(() => defineRecipe({ lowbitRecipe: 1, name: 'x', llama: { ftype: 'Q4_Z' }, rules: [] }), /unknown llama.cpp file type/);
});

test('imatrix: legacy .dat round trip keeps the importance vector', () => {
  const m = emptyImatrix(128, ['calib.txt']);
  const x = new Float32Array(3 * 4).map((_, i) => (i % 5) - 2);
  accumulateImatrix(m, 'blk.0.attn_q.weight', x, 3, 4);
  accumulateImatrix(m, 'blk.0.attn_q.weight', x, 3, 4);
  accumulateImatrix(m, 'blk.0.ffn_down.weight', x, 2, 6);
  m.chunkCount = 2;
  const back = readImatrixDat(writeImatrixDat(m));
  assert.deepEqual([...back.entries.keys()].sort(), ['blk.0.attn_q.weight', 'blk.0.ffn_down.weight']);
  for (const [name, e] of m.entries) assert.deepEqual(importanceOf(back.entries.get(name)!), importanceOf(e));
  assert.deepEqual(back.datasets, ['calib.txt']);
  assert.equal(back.chunkCount, 2);
  assert.throws(() => readImatrixDat(new Uint8Array([1, 0, 0, 0, 5, 0])), /truncated|implausible/);
  assert.throws(() => accumulateImatrix(m, 'blk.0.attn_q.weight', x, 2, 6), /columns/);
});
