/**
 * Per-tensor overrides and llama-quantize's model edits (issue 13 part 1, issue 12 part 4): parsing as
 * llama-quantize parses (lowercased patterns, any-case type names, first match wins), the recipe carries
 * the overrides (a recipe file is a tensor-type file), --prune-layers renumbering, --override-kv values,
 * and the bad inputs: one clear line, exit 2, nothing written; a pattern matching nothing is a warning.
 * Byte parity with llama-quantize for these flags is in llama-quantize-parity.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { llamaRecipe, recipeFromJSON, recipeToJSON } from '../src/algos/recipe.js';
import { GgufType } from '../src/io/gguf.js';
import { openModelFile } from '../src/io/model-file.js';
import { bytesSource } from '../src/io/source.js';
import { editModel, parseKvOverride, parsePruneLayers, parseTensorTypeFile, parseTensorTypeOverride, recipeWithOverrides, unmatchedOverrides } from '../src/pipeline/model-edit.js';
import { planQuantization } from '../src/pipeline/quantize.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

test('--tensor-type parses as llama-quantize: lowercased pattern, any-case type, clear errors', () => {
  assert.deepEqual(parseTensorTypeOverride('ATTN_V=q8_0'), { pattern: 'attn_v', type: 'Q8_0' });
  assert.deepEqual(parseTensorTypeOverride('blk\\.1\\.ffn_down=IQ3_s'), { pattern: 'blk\\.1\\.ffn_down', type: 'IQ3_S' });
  assert.deepEqual(parseTensorTypeOverride('a=b=q4_0'.replace('=b', '')), { pattern: 'a', type: 'Q4_0' });
  assert.throws(() => parseTensorTypeOverride('attn_v'), /expected PATTERN=TYPE/);
  assert.throws(() => parseTensorTypeOverride('=q8_0'), /missing tensor name pattern/);
  assert.throws(() => parseTensorTypeOverride('attn_v='), /missing quantization type/);
  assert.throws(() => parseTensorTypeOverride('attn_v=q9_0'), /unknown or unwritable GGML type 'q9_0'/);
  assert.throws(() => parseTensorTypeOverride('attn_v=i32'), /unknown or unwritable GGML type/);
  assert.throws(() => parseTensorTypeOverride('attn_(v=q8_0'), /not a valid regular expression/);
  assert.deepEqual(parseTensorTypeFile(' attn_q=q5_0\n\nffn_up=Q6_K  attn_k=f16\n', 'f.txt'), [
    { pattern: 'attn_q', type: 'Q5_0' },
    { pattern: 'ffn_up', type: 'Q6_K' },
    { pattern: 'attn_k', type: 'F16' },
  ]);
  assert.throws(() => parseTensorTypeFile('attn_q=q5_0 oops', 'f.txt'), /--tensor-type-file f.txt: 'oops': expected PATTERN=TYPE/);
  assert.deepEqual(unmatchedOverrides(['blk.0.attn_q.weight'], [{ pattern: 'attn_q', type: 'Q8_0' }, { pattern: 'attn_z', type: 'Q8_0' }]), [{ pattern: 'attn_z', type: 'Q8_0' }]);
});

test('overrides: first match wins, they beat the mix and --pure, fall back for shapes that do not fit, and ride in the recipe', async () => {
  const m = await openModelFile(bytesSource(new Uint8Array(fs.readFileSync(GGUF)), 'stories260K.gguf'));
  const r = recipeWithOverrides(llamaRecipe('Q4_0', { pure: true }), [
    { pattern: 'attn_v', type: 'Q8_0' },
    { pattern: 'blk\\.0\\.', type: 'Q5_1' }, // blk.0.attn_v matched the first entry already
    { pattern: 'ffn_down', type: 'Q4_K' }, // 172-wide rows: Q4_K falls back to Q5_0, then F16 (172 % 32 != 0)
  ]);
  const types = Object.fromEntries(planQuantization(m, r, 'gguf').tensors.map((t) => [t.name, t.to]));
  assert.equal(types['blk.0.attn_v.weight'], 'Q8_0');
  assert.equal(types['blk.3.attn_v.weight'], 'Q8_0');
  assert.equal(types['blk.0.attn_q.weight'], 'Q5_1');
  assert.equal(types['blk.1.attn_q.weight'], 'Q4_0');
  assert.equal(types['blk.2.ffn_down.weight'], 'F16');
  // the recipe file carries them; reading it back gives the same plan
  const again = recipeFromJSON(recipeToJSON(r));
  assert.deepEqual(again, r);
  assert.deepEqual(again.rules.slice(0, 3).map((x) => [x.match, x.scheme]), [['attn_v', 'Q8_0'], ['blk\\.0\\.', 'Q5_1'], ['ffn_down', 'Q4_K']]);
  assert.throws(() => recipeFromJSON(JSON.stringify({ ...JSON.parse(recipeToJSON(r)), rules: [{ match: 'attn_v', scheme: 'Q9_9' }] })), /unknown GGML type 'Q9_9'/);
});

test('--prune-layers renumbers like llama-quantize, --override-kv writes its value types', async () => {
  assert.deepEqual(parsePruneLayers('3,1,3'), [1, 3]);
  assert.throws(() => parsePruneLayers('1,x'), /invalid layer id 'x'/);
  assert.throws(() => parsePruneLayers('-1'), /invalid layer id/);
  const m = await openModelFile(bytesSource(new Uint8Array(fs.readFileSync(GGUF)), 'stories260K.gguf'));
  const e = editModel(m, { pruneLayers: [1, 3], kvOverrides: [parseKvOverride('general.name=str:pruned'), parseKvOverride('llama.context_length=int:-300'), parseKvOverride('x.f=float:0.5'), parseKvOverride('x.b=bool:true')] });
  const layers = [...new Set(e.model.tensors.map((t) => /^blk\.(\d+)\./.exec(t.name)?.[1]).filter(Boolean))];
  assert.deepEqual(layers, ['0', '1', '2']);
  assert.equal(e.originalName.get('blk.1.attn_q.weight'), 'blk.2.attn_q.weight');
  assert.equal(e.originalName.get('blk.2.ffn_up.weight'), 'blk.4.ffn_up.weight');
  const meta = e.model.gguf!.metadata;
  assert.equal(meta.get('llama.block_count')!.value, 3);
  assert.deepEqual(meta.get('llama.context_length'), { type: GgufType.UINT32, value: 300 });
  assert.deepEqual(meta.get('general.name'), { type: GgufType.STRING, value: 'pruned' });
  assert.deepEqual(meta.get('x.f'), { type: GgufType.FLOAT32, value: 0.5 });
  assert.deepEqual(meta.get('x.b'), { type: GgufType.BOOL, value: true });
  // the bytes read through the view are the original layer's
  assert.deepEqual(await e.model.read(e.model.tensor('blk.1.attn_q.weight')), await m.read(m.tensor('blk.2.attn_q.weight')));
  assert.throws(() => editModel(m, { pruneLayers: [7] }), /no layer 7/);
  assert.throws(() => editModel(m, { pruneLayers: [0, 1, 2, 3, 4] }), /leaves no model/);
  for (const bad of ['k', '=int:1', 'k=int:x', 'k=bool:yes', 'k=float:abc', 'k=blob:1', `k=str:${'x'.repeat(128)}`]) assert.throws(() => parseKvOverride(bad), /--override-kv/, bad);
});

test('CLI: overrides, a tensor-type file, pruning and metadata end to end; bad input exits 2 and writes nothing', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-ovr-'));
  try {
    const out = path.join(dir, 'o.gguf');
    const file = path.join(dir, 'types.txt');
    fs.writeFileSync(file, 'ATTN_Q=q5_1\nffn_gate=q8_0\n');
    const ok = cli('quantize', GGUF, out, '--type', 'Q4_0', '--tensor-type', 'attn_v=q8_0', '--tensor-type-file', file, '--tensor-type', 'nothing_here=q8_0', '--prune-layers', '4', '--override-kv', 'general.name=str:ovr', '--json');
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stderr, /warning: --tensor-type nothing_here=Q8_0 matches no tensor/);
    const rep = JSON.parse(ok.stdout) as { tensors: { name: string; type: string }[] };
    const types = Object.fromEntries(rep.tensors.map((t) => [t.name, t.type]));
    assert.equal(types['blk.0.attn_v.weight'], 'Q8_0');
    assert.equal(types['blk.3.attn_q.weight'], 'Q5_1');
    assert.equal(types['blk.1.ffn_gate.weight'], 'Q8_0');
    assert.equal(types['blk.4.attn_q.weight'], undefined, 'layer 4 pruned');
    const insp = cli('inspect', out);
    assert.match(insp.stdout, /general\.name = "ovr"/);
    assert.match(insp.stdout, /llama\.block_count = 4/);
    fs.rmSync(out);
    for (const [args, msg] of [
      [['--tensor-type', 'attn_v=q9_0'], /unknown or unwritable GGML type 'q9_0'/],
      [['--tensor-type', 'attn_v'], /expected PATTERN=TYPE/],
      [['--tensor-type-file', path.join(dir, 'missing.txt')], /missing\.txt/],
      [['--prune-layers', '9'], /no layer 9/],
      [['--override-kv', 'general.name=blob:x'], /unknown value type 'blob'/],
    ] as [string[], RegExp][]) {
      const r = cli('quantize', GGUF, out, '--type', 'Q4_0', ...args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.ok(!fs.existsSync(out), `${args.join(' ')} wrote ${out}`);
    }
    const scheme = cli('quantize', GGUF, path.join(dir, 'o.safetensors'), '--type', 'int4', '--tensor-type', 'attn_v=q8_0');
    assert.equal(scheme.status, 2);
    assert.match(scheme.stderr, /use them with a llama\.cpp file type/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
