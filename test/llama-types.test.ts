/**
 * llama.cpp's type mixing (algos/llama-types.ts) reads a layer linear's role from the model-family
 * table: for every family's linears the category of the role is the one llama.cpp's name matching
 * gives the tensor (so the types chosen stay llama-quantize's: test/llama-quantize-parity.test.ts), and
 * a plan made with the roles equals one made by names alone on every family's tensor list.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { llamaCategory, LLAMA_FTYPES, planLlamaTypes, ROLE_CATEGORY, type PlanTensor } from '../src/algos/llama-types.js';
import { FAMILIES, roleOfTensor } from '../src/model/family.js';
import { ggmlTypeTraits } from '../src/quant/ggml/registry.js';

test('llama-types: every family role maps to the category llama.cpp\'s name matching gives its tensor', () => {
  let n = 0;
  for (const f of FAMILIES)
    for (const spec of f.linears) {
      const name = `blk.3.${spec.gguf}.weight`;
      assert.equal(roleOfTensor(f, name)?.spec.role, spec.role);
      assert.equal(llamaCategory(name, spec.role), llamaCategory(name), `${f.name} ${spec.role} (${name})`);
      n++;
    }
  assert.ok(n >= 40, `${n} linears checked`);
  // every role the table maps is a role some family has (no stale rows)
  const roles = new Set(FAMILIES.flatMap((f) => f.linears.map((s) => s.role)));
  for (const r of Object.keys(ROLE_CATEGORY)) assert.ok(roles.has(r as never), `ROLE_CATEGORY row ${r} is no family's role`);
  assert.throws(() => llamaCategory('blk.0.x.weight', 'nope'), /no llama.cpp category/);
});

test('llama-types: plans with the family roles equal plans by name for every family and file type', () => {
  const nLayer = 8;
  for (const f of FAMILIES) {
    const tensors: PlanTensor[] = [{ name: 'token_embd.weight', shape: [256, 1000], type: 'F32' }];
    for (let l = 0; l < nLayer; l++) {
      tensors.push({ name: `blk.${l}.attn_norm.weight`, shape: [256], type: 'F32' });
      for (const s of f.linears) tensors.push({ name: `blk.${l}.${s.gguf}.weight`, shape: s.perExpert ? [256, 512, 4] : [256, 512], type: 'F16' });
    }
    tensors.push({ name: 'output.weight', shape: [256, 1000], type: 'F16' });
    const model = { arch: f.architectures[0], nLayer, nHead: 8, nHeadKv: 2, nExpert: f.moe ? 4 : 0 };
    for (const ftype of Object.keys(LLAMA_FTYPES)) {
      const hasImatrix = true;
      const byName = planLlamaTypes(tensors, model, { ftype, hasImatrix });
      const byRole = planLlamaTypes(tensors, { ...model, roleOf: (n) => roleOfTensor(f, n)?.spec.role }, { ftype, hasImatrix });
      assert.deepEqual(byRole, byName, `${f.name} ${ftype}`);
    }
  }
  // the mixing applies to block-type defaults only (ggml's is_quantized, a type-traits row)
  assert.equal(ggmlTypeTraits('F16')!.quantized, false);
  assert.equal(ggmlTypeTraits('I32')!.quantized, false);
  assert.equal(ggmlTypeTraits('Q4_K')!.quantized, true);
});
