/**
 * Mixed precision end to end on the shipped stories260K (rows of 64: the legacy 32-blocks are the
 * candidates): `lowbit sensitivity` writes a database, `quantize --target-size` allocates per-tensor
 * types to the exact file size of llama.cpp's Q4_0 mix, the file is no larger than the target and
 * predicted byte for byte, and its KLD on held-out text is well below the fixed mix's. Bad input: one
 * clear line, exit 2, nothing written.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const CALIB = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
const HELDOUT = path.join(ROOT, 'data', 'wikitext-2-test.raw');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-alloc-'));
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
const TYPES = ['--types', 'Q4_0,Q4_1,Q5_0,Q5_1,Q8_0,IQ4_NL'];
const CAL = ['--calib', CALIB, '--calib-tokens', '2048', '--calib-ctx', '128'];
const EVAL = ['--eval', CALIB, '--eval-ctx', '128', '--eval-chunks', '12'];
void HELDOUT;

test('sensitivity writes a database and an HTML report; quantize --target-size allocates to the byte and beats the fixed mix', () => {
  const db = path.join(tmp, 'db.json');
  const html = path.join(tmp, 'sens.html');
  const s = cli('sensitivity', GGUF, ...CAL, ...TYPES, '--db', db, '--report', html, '--json');
  assert.equal(s.status, 0, s.stderr);
  const parsed = JSON.parse(s.stdout);
  assert.equal(parsed.tensors.length, 32, 'every matrix whose rows fit a 32-block (ffn_down rows are 172)');
  assert.deepEqual(JSON.parse(fs.readFileSync(db, 'utf8')).modelHash, parsed.modelHash);
  assert.match(fs.readFileSync(html, 'utf8'), /<svg[^>]*aria-label="cost against bits per weight/);
  for (const t of parsed.tensors) {
    const c = Object.fromEntries(t.candidates.map((x: any) => [x.type, x.cost]));
    assert.ok(c.Q8_0 < c.Q5_0 && c.Q5_0 < c.Q4_0, `${t.name}: more bits, less cost`);
  }
  const fixed = cli('quantize', GGUF, path.join(tmp, 'fixed.gguf'), '--type', 'Q4_0', '--calib', CALIB, '--calib-tokens', '2048', '--calib-ctx', '128', ...EVAL, '--json');
  assert.equal(fixed.status, 0, fixed.stderr);
  const target = fs.statSync(path.join(tmp, 'fixed.gguf')).size;
  const out = path.join(tmp, 'alloc.gguf');
  const r = cli('quantize', GGUF, out, '--type', 'Q4_0', ...CAL, '--db', db, '--target-size', String(target), ...EVAL, '--json');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  const size = fs.statSync(out).size;
  assert.ok(size <= target, `${size} > ${target}`);
  assert.equal(j.allocation.predictedBytes, size, 'the allocator predicts the file size exactly');
  assert.ok(size > 0.97 * target, 'the budget is used');
  const kFixed = JSON.parse(fixed.stdout).evaluation.kld.mean;
  const kAlloc = j.evaluation.kld.mean;
  assert.ok(kAlloc < 0.7 * kFixed, `allocated KLD ${kAlloc} vs fixed ${kFixed}`);
  // same options, same bytes
  const again = cli('quantize', GGUF, path.join(tmp, 'again.gguf'), '--type', 'Q4_0', ...CAL, '--db', db, '--target-size', String(target), '--json');
  assert.equal(again.status, 0, again.stderr);
  assert.ok(fs.readFileSync(out).equals(fs.readFileSync(path.join(tmp, 'again.gguf'))));
});

test('allocation bad input: one clear line, exit 2, nothing written', () => {
  const out = path.join(tmp, 'bad.gguf');
  const db = path.join(tmp, 'db2.json');
  const cases: [string[], RegExp][] = [
    [['--target-size', '1000', ...CAL, ...TYPES], /unreachable/],
    [['--target-size', '99000000', ...CAL, ...TYPES], /larger than the model in F32/],
    [['--target-size', '300000', '--pure', ...CAL, ...TYPES], /--pure/],
    [['--target-size', '300000', '--target-bpw', '4'], /either --target-size or --target-bpw/],
    [['--target-bpw', '99'], /target-bpw/],
    [['--target-size', '300000', ...TYPES], /--calib/],
    [['--allocate', 'ilp'], /applies with --target-size/],
    [['--target-size', '300000', ...CAL, '--types', 'Q4_0,Q9_9'], /unknown GGML type 'Q9_9'/],
  ];
  for (const [args, re] of cases) {
    const r = cli('quantize', GGUF, out, '--type', 'Q4_0', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!fs.existsSync(out), `${args.join(' ')} wrote the output`);
  }
  // a database of another model
  fs.writeFileSync(db, JSON.stringify({ lowbitSensitivity: 1, modelHash: '0000', estimator: 'hessian', outputFactor: 'kld', calibration: {}, tensors: [] }));
  const r = cli('quantize', GGUF, out, '--type', 'Q4_0', '--target-size', '300000', '--db', db);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /measured on another model/);
  assert.ok(!fs.existsSync(out));
});

test('allocation with the IQ2 types: only where an importance exists (not the token embedding, not plain costs), and quantize --calib writes them', () => {
  // tinyllama256: rows of 256, so the 256-blocks IQ2_XS (needs an importance matrix, as in llama.cpp) fits every matrix
  const model = path.join(ROOT, 'data', 'tinyllama256.gguf');
  const cal = ['--calib', CALIB, '--calib-tokens', '512', '--calib-ctx', '128', '--output-factor', 'none', '--types', 'Q2_K,Q4_K,IQ2_XS'];
  const db = path.join(tmp, 'iq2.json');
  const s = cli('sensitivity', model, ...cal, '--db', db, '--json');
  assert.equal(s.status, 0, s.stderr);
  const byName = new Map<string, string[]>(JSON.parse(s.stdout).tensors.map((t: any) => [t.name, t.candidates.map((c: any) => c.type)]));
  assert.deepEqual(byName.get('token_embd.weight'), ['Q2_K', 'Q4_K'], 'the embedding has no importance: no IQ2_XS');
  assert.deepEqual(byName.get('blk.0.attn_q.weight'), ['Q2_K', 'Q4_K', 'IQ2_XS']);
  const plain = cli('sensitivity', model, ...cal, '--plain-costs', '--json');
  assert.equal(plain.status, 0, plain.stderr);
  for (const t of JSON.parse(plain.stdout).tensors) assert.ok(!t.candidates.some((c: any) => c.type === 'IQ2_XS'), `${t.name}: plain costs offer IQ2_XS`);
  // a budget below Q2_K everywhere needs IQ2_XS on some tensors; --calib gives their importance
  const out = path.join(tmp, 'iq2.gguf');
  const r = cli('quantize', model, out, '--type', 'Q4_K_M', '--calib', CALIB, '--calib-tokens', '512', '--calib-ctx', '128', '--db', db, '--target-bpw', '2.6', '--json');
  assert.equal(r.status, 0, r.stderr);
  const inspect = JSON.parse(cli('inspect', out, '--json').stdout);
  const types = JSON.stringify(inspect);
  assert.match(types, /IQ2_XS/, 'some tensors are IQ2_XS');
  assert.ok(fs.statSync(out).size <= Math.floor((2.6 * inspect.totals.parameters) / 8), 'within the budget');
});
