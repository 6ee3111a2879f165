/** lowbit train / lowbit qat from the command line: a tiny run end to end, and bad input (one line, exit 2). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { openModelFile } from '../src/io/model-file.js';
import { bytesSource } from '../src/io/source.js';
import { readCheckpointHead } from '../src/train/trainer.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const TOK = path.join(ROOT, 'data', 'tok512.model');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-train-'));
const text = path.join(tmp, 'text.txt');
fs.writeFileSync(text, fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 20000));

function lowbit(...args: string[]) {
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', BIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const SHAPE = ['--dim', '32', '--layers', '1', '--heads', '4', '--kv-heads', '2', '--hidden', '64', '--vocab-from', TOK, '--batch', '2', '--ctx', '16'];

function badInput(r: { status: number | null; stderr: string }, pattern: RegExp) {
  assert.equal(r.status, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], pattern);
}

test('lowbit train: a tiny model end to end, checkpoint + resume = one run, the GGUF runs in lowbit eval', () => {
  const out = path.join(tmp, 'a.gguf');
  const r = lowbit('train', ...SHAPE, '--text', text, '--train-chars', '15000', '--steps', '6', '--json', out);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.steps, 6);
  assert.ok(Number.isFinite(j.heldOut));
  const ck = path.join(tmp, 'ck.bin');
  const b = path.join(tmp, 'b.gguf');
  assert.equal(lowbit('train', ...SHAPE, '--text', text, '--train-chars', '15000', '--steps', '6', '--stop-at', '3', '--checkpoint', ck, b).status, 0);
  assert.equal(lowbit('train', ...SHAPE, '--text', text, '--train-chars', '15000', '--steps', '6', '--resume', ck, b).status, 0);
  assert.deepEqual(fs.readFileSync(b), fs.readFileSync(out), 'resumed run gives the same bytes');
  const ev = lowbit('eval', out, '--text', text, '--ctx', '16', '--chunks', '4', '--json');
  assert.equal(ev.status, 0, ev.stderr);
  // safetensors output: the same weights as converting the GGUF, with config.json beside them
  fs.mkdirSync(path.join(tmp, 'st'));
  fs.mkdirSync(path.join(tmp, 'conv'));
  const st = path.join(tmp, 'st', 'model.safetensors');
  assert.equal(lowbit('train', ...SHAPE, '--text', text, '--train-chars', '15000', '--steps', '6', st).status, 0);
  const conv = path.join(tmp, 'conv', 'model.safetensors');
  assert.equal(lowbit('convert', out, conv).status, 0);
  assert.deepEqual(fs.readFileSync(st), fs.readFileSync(conv));
  assert.deepEqual(fs.readFileSync(path.join(tmp, 'st', 'config.json')), fs.readFileSync(path.join(tmp, 'conv', 'config.json')));
  badInput(lowbit('train', ...SHAPE, '--text', text, '--steps', '2', path.join(tmp, 'x.bin')), /extension must be \.gguf or \.safetensors/);
  // the HTML report: this run's curve beside another run's --log
  const logA = path.join(tmp, 'runA.log');
  assert.equal(lowbit('train', ...SHAPE, '--text', text, '--train-chars', '15000', '--steps', '6', '--log', logA, path.join(tmp, 'la.gguf')).status, 0);
  const html = path.join(tmp, 'report.html');
  const rr = lowbit('train', ...SHAPE, '--text', text, '--train-chars', '15000', '--steps', '6', '--lr', '3e-3', '--report', html, '--compare', logA, path.join(tmp, 'lb.gguf'));
  assert.equal(rr.status, 0, rr.stderr);
  const page = fs.readFileSync(html, 'utf8');
  assert.equal(page.match(/<polyline/g)?.length, 2);
  assert.match(page, /runA/);
  assert.match(page, /<td>lb<\/td>/);
  badInput(lowbit('train', ...SHAPE, '--text', text, '--steps', '2', '--report', html, '--compare', text, path.join(tmp, 'lc.gguf')), /line 1 is not JSON/);
});

test('lowbit train: bad input is one line and exit 2, and never leaves a half-written file', () => {
  const out = path.join(tmp, 'bad.gguf');
  badInput(lowbit('train', ...SHAPE, '--heads', '5', '--text', text, '--steps', '2', out), /heads 5 does not divide --dim 32/);
  badInput(lowbit('train', ...SHAPE, '--kv-heads', '3', '--text', text, '--steps', '2', out), /kv heads do not divide/);
  const short = path.join(tmp, 'short.txt');
  fs.writeFileSync(short, 'Once upon a time');
  badInput(lowbit('train', ...SHAPE, '--text', short, '--steps', '2', out), /fewer than one sequence/);
  const cfg = path.join(tmp, 'cfg.json');
  fs.writeFileSync(cfg, JSON.stringify({ dim: 32, layers: 1, heads: 4, hidden: 64, vocabSize: 1000 }));
  badInput(lowbit('train', '--config', cfg, '--vocab-from', TOK, '--text', text, '--steps', '2', out), /vocabSize 1000 but .* has 512 tokens/);
  // a diverging run stops with a clear message and keeps the last good checkpoint
  const ck = path.join(tmp, 'nan.bin');
  const r = lowbit('train', ...SHAPE, '--text', text, '--steps', '50', '--lr', '1e30', '--clip', '0', '--checkpoint', ck, '--checkpoint-every', '1', out);
  badInput(r, /became (NaN|Infinity|-Infinity) at step \d+.*last good checkpoint/);
  assert.ok(fs.existsSync(ck));
  // the checkpoint kept is a good one: the step before the bad loss, every parameter and moment finite
  const badStep = Number(/at step (\d+)/.exec(r.stderr)![1]);
  const { head, start } = readCheckpointHead(new Uint8Array(fs.readFileSync(ck)), 'nan.bin');
  assert.ok(head.step >= 1 && head.step < badStep, `checkpoint at step ${head.step}, loss went bad at ${badStep}`);
  const state = new Float32Array(fs.readFileSync(ck).buffer.slice(start));
  assert.ok(state.length === 3 * head.size && state.every(Number.isFinite), 'finite parameters and Adam moments');
  // a checkpoint of another shape is refused, and left as it was
  const before = fs.readFileSync(ck);
  badInput(lowbit('train', ...SHAPE, '--hidden', '96', '--text', text, '--steps', '50', '--lr', '1e30', '--clip', '0', '--resume', ck, out), /different model \(hiddenDim 64 vs 96\)/);
  // same shape, other options (precision, batch): refused too
  badInput(lowbit('train', ...SHAPE, '--text', text, '--steps', '50', '--lr', '1e30', '--clip', '0', '--precision', 'bf16', '--resume', ck, out), /different options \(precision fp32 vs bf16\)/);
  badInput(lowbit('train', ...SHAPE, '--batch', '3', '--text', text, '--steps', '50', '--lr', '1e30', '--clip', '0', '--resume', ck, out), /different options \(batch 2 vs 3\)/);
  assert.deepEqual(fs.readFileSync(ck), before);
  assert.ok(!fs.existsSync(out), 'no model written');
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), [], 'no temp files left');
});

test('lowbit qat --method lsq: a short run writes the type; a type without a learnable block scale is refused in one line', () => {
  const model = path.join(ROOT, 'data', 'stories260K.gguf');
  const out = path.join(tmp, 'qat-q2.gguf');
  const r = lowbit('qat', model, out, '--type', 'Q2_0', '--pure', '--method', 'lsq', '--text', text, '--steps', '2', '--batch', '2', '--ctx', '32', '--json');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.steps, 2);
  assert.ok(j.bitsPerWeight < 6, `${j.bitsPerWeight} bpw`);
  badInput(lowbit('qat', model, path.join(tmp, 'qat-bad.gguf'), '--type', 'Q4_1', '--pure', '--method', 'lsq', '--text', text, '--steps', '2'), /--method lsq learns one f16 scale per block .*use ste or dge/);
  assert.ok(!fs.existsSync(path.join(tmp, 'qat-bad.gguf')));
  // targets and containers that do not go together
  badInput(lowbit('qat', model, path.join(tmp, 'qat-bad.safetensors'), '--type', 'Q4_0', '--text', text, '--steps', '2'), /Q4_0 is a llama.cpp type: QAT writes it as GGUF/);
  badInput(lowbit('qat', model, path.join(tmp, 'qat-bad.gguf'), '--type', 'Q4_0', '--group', '32', '--text', text, '--steps', '2'), /--group applies to the generic schemes/);
  badInput(lowbit('qat', model, path.join(tmp, 'qat-bad.bin'), '--type', 'int4', '--text', text, '--steps', '2'), /QAT writes \.gguf .* or \.safetensors/);
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.startsWith('qat-bad')), []);
});

test('lowbit qat --init-from: starting from a quantized file with lr 1e-30 (no move in f32) gives its tensors back; --save-at writes the steps asked; a file of another type is refused', async () => {
  const model = path.join(ROOT, 'data', 'stories260K.gguf');
  const q = path.join(tmp, 'init-q2.gguf');
  assert.equal(lowbit('quantize', model, q, '--type', 'Q2_0', '--pure').status, 0);
  const out = path.join(tmp, 'from-q2.gguf');
  const r = lowbit('qat', model, out, '--type', 'Q2_0', '--pure', '--method', 'lsq', '--init-from', q, '--lr', '1e-30', '--text', text, '--steps', '2', '--batch', '2', '--ctx', '32', '--save-at', '1', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.ok(fs.existsSync(path.join(tmp, 'from-q2.step1.gguf')), 'the model after step 1');
  assert.ok(!fs.existsSync(path.join(tmp, 'from-q2.step2.gguf')), 'the last step is OUT itself');
  const fa = await openModelFile(bytesSource(new Uint8Array(fs.readFileSync(q)), 'a.gguf'));
  const fb = await openModelFile(bytesSource(new Uint8Array(fs.readFileSync(out)), 'b.gguf'));
  assert.equal(fb.tensors.length, fa.tensors.length);
  let q2 = 0;
  for (const t of fa.tensors) {
    const u = fb.tensor(t.name);
    assert.equal(u.type, t.type, t.name);
    if (t.type === 'Q2_0') q2++;
    assert.deepEqual(await fb.read(u), await fa.read(t), `lr 0 keeps ${t.name} (${t.type}) byte for byte`);
  }
  assert.ok(q2 > 0);
  badInput(lowbit('qat', model, path.join(tmp, 'qat-bad.gguf'), '--type', 'Q4_0', '--pure', '--method', 'lsq', '--init-from', q, '--text', text, '--steps', '2'), /--init-from .*is Q2_0, the plan quantizes it to Q4_0/);
  badInput(lowbit('qat', model, path.join(tmp, 'qat-bad.gguf'), '--type', 'Q2_0', '--pure', '--text', text, '--steps', '2', '--save-at', '5'), /--save-at: 5 is not a step between 1 and --steps 2/);
  assert.ok(!fs.existsSync(path.join(tmp, 'qat-bad.gguf')));
});
