/** `lowbit quantize --layout gptq|awq` through the real CLI: a checkpoint folder that inspect, eval and generate read. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(import.meta.dirname, '../..');
const bin = path.join(root, 'bin/lowbit.js');
const data = (f: string) => path.join(root, 'data', f);
const lowbit = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

test('quantize --layout gptq / awq writes model + config.json; inspect lists the layers; eval matches the native layout exactly', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-packed-'));
  try {
    const recipe = path.join(dir, 'attn.json');
    fs.writeFileSync(
      recipe,
      JSON.stringify({
        lowbitRecipe: 1,
        name: 'attn_int4_g32_asym',
        rules: [
          { match: '(_norm\\.weight|\\.bias)$', keep: 'f32' },
          { match: '^(token_embd|output)\\.weight$', keep: 'f16' },
          { match: 'ffn_', keep: 'f16' },
          { match: '\\.weight$', scheme: 'int4', groupSize: 32, asym: true },
        ],
      }),
    );
    const native = path.join(dir, 'native.safetensors');
    let r = lowbit('quantize', data('stories260K.gguf'), native, '--recipe', recipe);
    assert.equal(r.status, 0, r.stderr);
    for (const layout of ['gptq', 'awq']) {
      const sub = path.join(dir, layout);
      fs.mkdirSync(sub);
      const out = path.join(sub, 'model.safetensors');
      r = lowbit('quantize', data('stories260K.gguf'), out, '--recipe', recipe, '--layout', layout);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`${layout}:uint4_g32_asym_f16`));
      const config = JSON.parse(fs.readFileSync(path.join(sub, 'config.json'), 'utf8'));
      assert.equal(config.quantization_config.quant_method, layout);
      assert.equal(config.model_type, 'llama');
      const text = lowbit('inspect', out);
      assert.equal(text.status, 0, text.stderr);
      assert.match(text.stdout, /packed int4 layers \(20\):/);
      assert.match(text.stdout, new RegExp(`model\\.layers\\.4\\.self_attn\\.o_proj +${layout} +4 +64 x 64 +32`));
      const j = JSON.parse(lowbit('inspect', '--json', out).stdout);
      assert.equal(j.quantizationConfig.quant_method, layout);
      assert.equal(j.totals.parameters, 292800, 'packed layers count in x out weights');
      // the tokenizer travels in the file: eval needs neither --tokenizer nor tokenizer.model
      const e = lowbit('eval', out, '--base', native, '--text', data('tinystories-valid-head.txt'), '--ctx', '64', '--chunks', '2', '--json');
      assert.equal(e.status, 0, e.stderr);
      const res = JSON.parse(e.stdout);
      assert.equal(res.kld.max, 0);
      assert.equal(res.ppl, res.pplBase);
      const g = lowbit('generate', out, '--prompt', 'Once upon a time', '-n', '12', '--temp', '0');
      assert.equal(g.status, 0, g.stderr);
      assert.match(g.stdout, /^Once upon a time, there was a little girl named Lily/);
    }
    // bad requests: exit 2, one line
    r = lowbit('quantize', data('stories260K.gguf'), path.join(dir, 'x.safetensors'), '--type', 'int4', '--group', '32', '--asym', '--layout', 'gptq');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^lowbit: blk\.0\.ffn_gate\.weight \[172, 64\] cannot be stored in the gptq layout: 172 output features are not a multiple of 8.*--keep-unpackable/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.ok(!fs.existsSync(path.join(dir, 'x.safetensors')));
    r = lowbit('quantize', data('stories260K.gguf'), path.join(dir, 'x.gguf'), '--type', 'int4', '--layout', 'awq');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /OUT must end in \.safetensors/);
    r = lowbit('quantize', data('stories260K.gguf'), path.join(dir, 'x.safetensors'), '--type', 'int4', '--group', '32', '--asym', '--layout', 'awq', '--keep-unpackable');
    assert.equal(r.status, 0, r.stderr);
    // a safetensors checkpoint with packed layers but no config.json says what is missing
    fs.rmSync(path.join(dir, 'config.json'));
    r = lowbit('generate', path.join(dir, 'x.safetensors'), '--prompt', 'x');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /needs config\.json/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
