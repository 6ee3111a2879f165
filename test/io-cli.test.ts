/** `lowbit inspect` and `lowbit convert` end to end through the real CLI. */
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

test('inspect --json: GGUF, llama2.c and safetensors report tensors and totals', () => {
  const g = JSON.parse(lowbit('inspect', '--json', data('stories260K.gguf')).stdout);
  assert.equal(g.format, 'gguf');
  assert.equal(g.version, 3);
  assert.equal(g.architecture, 'llama');
  assert.equal(g.hyperParameters.nLayers, 5);
  assert.equal(g.metadata['tokenizer.ggml.tokens'].length, 512);
  assert.equal(g.tensors.length, 48);
  assert.deepEqual(g.tensors[0], { name: 'token_embd.weight', shape: [512, 64], type: 'F32', bytes: 131072, offset: 14176 });
  assert.equal(g.totals.bitsPerWeight, 32);
  assert.equal(g.totals.parameters, g.tensors.reduce((a: number, t: { shape: number[] }) => a + t.shape.reduce((x, y) => x * y, 1), 0));
  const l = JSON.parse(lowbit('inspect', '--json', data('stories260K.bin')).stdout);
  assert.equal(l.format, 'llama2c');
  assert.equal(l.totals.bytes + 28 + 512 * 8 * 4, fs.statSync(data('stories260K.bin')).size, 'tensors + header + freq_cis = file size');
});

test('convert: llama2.c -> GGUF equals the llama.cpp-made file; GGUF -> safetensors -> inspect; refuses OUT == IN', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-cli-'));
  const out = path.join(dir, 'm.gguf');
  let r = lowbit('convert', data('stories260K.bin'), '--tokenizer', data('tok512.bin'), out);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(fs.readFileSync(out), fs.readFileSync(data('stories260K.gguf')));
  const st = path.join(dir, 'model.safetensors');
  r = lowbit('convert', out, st, '--type', 'bf16');
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(lowbit('inspect', '--json', st).stdout);
  assert.equal(s.format, 'safetensors');
  assert.equal(s.tensors.find((t: { name: string }) => t.name === 'model.layers.0.self_attn.k_proj.weight').type, 'BF16');
  assert.equal(s.totals.bitsPerWeight, 16);
  r = lowbit('convert', out, out);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /is the input file/);
  r = lowbit('convert', out, path.join(dir, 'x.bin'));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /extension must be .gguf or .safetensors/);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'm.gguf', 'model.safetensors'], 'no temp files left (config.json: the safetensors checkpoint reads back)');
  fs.rmSync(dir, { recursive: true, force: true });
});
