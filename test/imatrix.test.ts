/**
 * Importance matrices: the statistic against an independent oracle and against llama-imatrix's committed
 * output (test/golden/llama-quantize/stories260K.imatrix.*: llama-imatrix -c 128 --chunks 16 with f32
 * attention on data/tinystories-valid-head.txt), byte-exact rewriting of llama-imatrix's files, an
 * enumerated list of bad files, and the CLI (lowbit imatrix; lowbit quantize --imatrix with imatrices
 * that do not match the model).
 *
 * Tolerance against llama-imatrix: 1e-4 relative per column. llama.cpp sums x^2 in f32 (lowbit in f64):
 * over 2048 tokens that alone moves a sum by up to ~1e-5 relative; the activations themselves agree to
 * f32 rounding (~1e-6). Token counts must be identical.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { emptyImatrix, imatrixDifference, importanceOf, type Imatrix } from '../src/algos/imatrix.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { gguf, writeGguf } from '../src/io/gguf.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { toFloat32 } from '../src/io/tensor-data.js';
import { collectImatrix } from '../src/pipeline/imatrix-collect.js';
import { readImatrix, writeImatrix, writeImatrixDat, writeImatrixGguf } from '../src/pipeline/imatrix-file.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DATA = path.join(ROOT, 'data');
const GOLDEN = path.join(ROOT, 'test', 'golden', 'llama-quantize');
const GGUF = path.join(DATA, 'stories260K.gguf');
const TEXT = path.join(DATA, 'tinystories-valid-head.txt');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-imatrix-'));

const fileBytes = (f: string) => new Uint8Array(fs.readFileSync(f));
const readFile = (f: string) => readImatrix(bytesSource(fileBytes(f), f));
async function gguBytes(m: Imatrix): Promise<Uint8Array> {
  const s = memorySink();
  await writeImatrixGguf(m, s);
  return s.bytes();
}

async function stories(ctx: number) {
  const m = await loadModel(bytesSource(fileBytes(GGUF), 'stories260K.gguf'), { contextLength: ctx, batch: Math.min(ctx, 512) });
  const tokens = m.tokenizer!.encode(fs.readFileSync(TEXT, 'utf8'));
  return { m, tokens };
}

test('collector: every token of every chunk, BOS first; blk.0.attn_q against an oracle from the raw weights', async () => {
  const ctx = 64;
  const chunks = 3;
  const { m, tokens } = await stories(ctx);
  const bos = m.tokenizer!.vocab.bos;
  const r = collectImatrix(m.model, tokens, { ctx, chunks, bos, addBos: true, dataset: 'calib.txt' });
  assert.equal(r.imatrix.entries.size, 35, '5 layers x 7 weights, no output.weight');
  assert.equal(r.imatrix.chunkCount, chunks);
  assert.equal(r.imatrix.chunkSize, ctx);
  assert.deepEqual(r.imatrix.datasets, ['calib.txt']);
  for (const e of r.imatrix.entries.values()) assert.deepEqual([...e.counts], [chunks * ctx], e.name);

  // oracle: attn_q's input is rmsnorm(token_embd[token]) * attn_norm, independent of attention
  const f = await openModelFile(bytesSource(fileBytes(GGUF), 'stories260K.gguf'));
  const emb = toFloat32('F32', await f.read(f.tensor('token_embd.weight')));
  const norm = toFloat32('F32', await f.read(f.tensor('blk.0.attn_norm.weight')));
  const dim = 64;
  const eps = m.model.config.normEps;
  const sums = new Float64Array(dim);
  for (let c = 0; c < chunks; c++)
    for (let i = 0; i < ctx; i++) {
      const tok = i === 0 ? bos : tokens[c * ctx + i];
      let ss = 0;
      for (let j = 0; j < dim; j++) ss += emb[tok * dim + j] ** 2;
      const scale = 1 / Math.sqrt(ss / dim + eps);
      for (let j = 0; j < dim; j++) sums[j] += Math.fround(emb[tok * dim + j] * scale * norm[j]) ** 2;
    }
  const got = r.imatrix.entries.get('blk.0.attn_q.weight')!.sums;
  for (let j = 0; j < dim; j++) assert.ok(Math.abs(got[j] - sums[j]) <= 1e-12 * sums[j], `column ${j}: ${got[j]} vs oracle ${sums[j]}`);
  // q, k and v see the same input
  assert.deepEqual(r.imatrix.entries.get('blk.0.attn_k.weight')!.sums, got);

  const withOutput = collectImatrix(m.model, tokens, { ctx, chunks: 1, bos, addBos: true, processOutput: true });
  assert.equal(withOutput.imatrix.entries.size, 36);
  assert.deepEqual([...withOutput.imatrix.entries.get('output.weight')!.counts], [ctx]);
  assert.throws(() => collectImatrix(m.model, tokens.slice(0, 100), { ctx, bos, addBos: true }), /needs at least 128/);
});

test('collector agrees with llama-imatrix (committed file) within 1e-4 relative, identical token counts', async () => {
  const theirs = await readFile(path.join(GOLDEN, 'stories260K.imatrix.gguf'));
  const { m, tokens } = await stories(theirs.chunkSize);
  const ours = collectImatrix(m.model, tokens, { ctx: theirs.chunkSize, chunks: theirs.chunkCount, bos: m.tokenizer!.vocab.bos, addBos: m.tokenizer!.vocab.addBos }).imatrix;
  const d = imatrixDifference(ours, theirs);
  assert.deepEqual([d.onlyA, d.onlyB], [[], []]);
  assert.equal(d.entries.length, 35);
  for (const e of d.entries) {
    assert.equal(e.countA, e.countB, `${e.name} token count`);
    assert.ok(e.maxRelative < 1e-4, `${e.name}: max relative difference ${e.maxRelative}`);
  }
  console.log(`# vs llama-imatrix (ctx ${theirs.chunkSize}, ${theirs.chunkCount} chunks): max relative difference ${Math.max(...d.entries.map((e) => e.maxRelative)).toExponential(2)}`);
});

test("llama-imatrix's files are read and written back byte for byte; GGUF and .dat agree", async () => {
  const gBytes = fileBytes(path.join(GOLDEN, 'stories260K.imatrix.gguf'));
  const dBytes = fileBytes(path.join(GOLDEN, 'stories260K.imatrix.dat'));
  const g = await readImatrix(bytesSource(gBytes, 'im.gguf'));
  const d = await readImatrix(bytesSource(dBytes, 'im.dat'));
  assert.deepEqual(await gguBytes(g), gBytes, 'GGUF form rewritten identically');
  assert.deepEqual(writeImatrixDat(d), dBytes, '.dat form rewritten identically');
  assert.deepEqual(d.datasets, g.datasets);
  assert.equal(d.chunkCount, g.chunkCount);
  for (const [name, e] of g.entries) {
    const a = importanceOf(e);
    const b = importanceOf(d.entries.get(name)!);
    for (let j = 0; j < a.length; j++) assert.ok(Math.abs(a[j] - b[j]) <= 2 ** -22 * a[j], `${name}[${j}] ${a[j]} vs ${b[j]}`);
  }
  // lowbit's own .dat of the GGUF equals llama-imatrix's .dat of the same run (same f32 formula)
  assert.deepEqual(writeImatrixDat(g), dBytes);
  // round trip of a collected imatrix through both forms
  const { m, tokens } = await stories(64);
  const ours = collectImatrix(m.model, tokens, { ctx: 64, chunks: 2, bos: 1, addBos: true, dataset: 'x.txt' }).imatrix;
  for (const format of ['gguf', 'dat'] as const) {
    const s = memorySink();
    await writeImatrix(ours, format, s);
    const back = await readImatrix(bytesSource(s.bytes(), format));
    assert.deepEqual([...back.entries.keys()].sort(), [...ours.entries.keys()].sort());
    for (const [name, e] of ours.entries) {
      const a = importanceOf(e);
      const b = importanceOf(back.entries.get(name)!);
      for (let j = 0; j < a.length; j++) assert.ok(Math.abs(a[j] - b[j]) <= 2 ** -22 * a[j], `${format} ${name}[${j}]`);
    }
  }
});

/** a GGUF imatrix from explicit tensors (for the bad-file list) */
async function imatrixGguf(tensors: { name: string; ne: number[]; type?: string; values: number[] }[], meta: [string, ReturnType<typeof gguf.str>][] = [['general.type', gguf.str('imatrix')]]): Promise<Uint8Array> {
  const s = memorySink();
  await writeGguf(
    s,
    meta,
    tensors.map((t) => {
      const type = ggmlTypeByName(t.type ?? 'F32')!;
      const data = type.name === 'F16' ? new Uint8Array(new Uint16Array(t.values.map(() => 0x3c00)).buffer) : new Uint8Array(new Float32Array(t.values).buffer);
      return { name: t.name, ne: t.ne, type, data };
    }),
  );
  return s.bytes();
}

function dat(entries: { name: string; ncall: number; values: number[] }[], trailer: Uint8Array | null = null): Uint8Array {
  const parts: number[] = [];
  const i32 = (v: number) => parts.push(...new Uint8Array(new Int32Array([v]).buffer));
  i32(entries.length);
  for (const e of entries) {
    const name = new TextEncoder().encode(e.name);
    i32(name.length);
    parts.push(...name);
    i32(e.ncall);
    i32(e.values.length);
    parts.push(...new Uint8Array(new Float32Array(e.values).buffer));
  }
  const out = Uint8Array.from(parts);
  if (!trailer) return out;
  const all = new Uint8Array(out.length + trailer.length);
  all.set(out);
  all.set(trailer, out.length);
  return all;
}

test('bad imatrix files: one clear error each', async () => {
  const good = fileBytes(path.join(GOLDEN, 'stories260K.imatrix.gguf'));
  const goodDat = fileBytes(path.join(GOLDEN, 'stories260K.imatrix.dat'));
  const e = { name: 'blk.0.attn_q.weight', ncall: 2, values: [1, 2, 3, 4] };
  const cases: [string, Uint8Array | Promise<Uint8Array>, RegExp][] = [
    ['empty', new Uint8Array(0), /empty file/],
    ['.dat with no entries', dat([]), /not an imatrix \(entry count 0/],
    ['text file', new TextEncoder().encode('Once upon a time there was a little girl.'), /not an imatrix \(implausible entry count/],
    ['truncated .dat', goodDat.subarray(0, 1000), /truncated|bad value count/],
    ['.dat with NaN', dat([{ ...e, values: [1, NaN, 3, 4] }]), /value 1 is NaN \(must be finite/],
    ['.dat with negative call count', dat([{ ...e, ncall: -1 }]), /negative call count/],
    ['.dat with a duplicate entry', dat([e, e]), /duplicate entry/],
    ['.dat with a stray byte', dat([e], new Uint8Array([7])), /stray bytes/],
    ['.dat with garbage after the dataset', dat([e], new Uint8Array([1, 0, 0, 0, 1, 0, 0, 0, 0x41, 9, 9])), /2 unexpected bytes/],
    ['.dat with a dataset past the end', dat([e], new Uint8Array([1, 0, 0, 0, 50, 0, 0, 0, 0x41])), /runs past the end/],
    ['a model GGUF', fileBytes(GGUF), /a GGUF model, not an imatrix/],
    ['GGUF of another general.type', imatrixGguf([{ name: 'x.in_sum2', ne: [2, 1], values: [1, 1] }], [['general.type', gguf.str('model')]]), /general.type is 'model'/],
    ['GGUF truncated', good.subarray(0, good.length - 100), /truncated|past the end/],
    ['GGUF without entries', imatrixGguf([]), /no imatrix entries/],
    ['in_sum2 without counts', imatrixGguf([{ name: 'a.in_sum2', ne: [2, 1], values: [1, 1] }]), /a.in_sum2 has no matching a.counts/],
    ['counts without in_sum2', imatrixGguf([{ name: 'a.counts', ne: [1, 1], values: [1] }]), /a.counts has no matching a.in_sum2/],
    ['counts of the wrong shape', imatrixGguf([{ name: 'a.in_sum2', ne: [2, 2], values: [1, 1, 1, 1] }, { name: 'a.counts', ne: [1, 1], values: [5] }]), /counts has shape \[1, 1\] but in_sum2 \[2, 2\] needs \[1, 2\]/],
    ['F16 sums', imatrixGguf([{ name: 'a.in_sum2', ne: [2, 1], type: 'F16', values: [1, 1] }, { name: 'a.counts', ne: [1, 1], values: [5] }]), /must be F32/],
    ['negative sum', imatrixGguf([{ name: 'a.in_sum2', ne: [2, 1], values: [1, -1] }, { name: 'a.counts', ne: [1, 1], values: [5] }]), /in_sum2\[1\] = -1/],
    ['infinite count', imatrixGguf([{ name: 'a.in_sum2', ne: [2, 1], values: [1, 1] }, { name: 'a.counts', ne: [1, 1], values: [Infinity] }]), /count Infinity/],
    ['a foreign tensor', imatrixGguf([{ name: 'a.weight', ne: [2, 1], values: [1, 1] }]), /unexpected tensor 'a.weight'/],
  ];
  for (const [what, bytes, re] of cases) await assert.rejects(readImatrix(bytesSource(await bytes, what)), re, what);
});

function cli(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
}

function expectError(args: string[], re: RegExp, noOutput: string) {
  const r = cli(...args);
  assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status} ${r.stderr}`);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  assert.ok(!fs.existsSync(noOutput), 'no output file');
  assert.deepEqual(fs.readdirSync(path.dirname(noOutput)).filter((f) => f.endsWith('.tmp')), [], 'no temp file left');
}

test('lowbit imatrix: both file forms, JSON, clear errors', async () => {
  const out = path.join(tmp, 'im.gguf');
  const r = cli('imatrix', GGUF, '-f', TEXT, '-o', out, '--ctx', '64', '--chunks', '4', '--json');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual([j.entries, j.chunks, j.ctx, j.tokens, j.format], [35, 4, 64, 256, 'gguf']);
  assert.ok(j.ppl > 1 && j.ppl < 50, `PPL ${j.ppl}`);
  const g = await readFile(out);
  assert.deepEqual([...g.entries.get('blk.3.ffn_down.weight')!.counts], [256]);
  assert.equal(g.entries.get('blk.3.ffn_down.weight')!.sums.length, 172);
  const outDat = path.join(tmp, 'im.dat');
  assert.equal(cli('imatrix', GGUF, '-f', TEXT, '-o', outDat, '--ctx', '64', '--chunks', '4').status, 0);
  const d = await readFile(outDat);
  assert.equal(d.chunkCount, 4);
  assert.deepEqual(writeImatrixDat(g), fileBytes(outDat), 'the .dat is the GGUF form converted');

  const bad = path.join(tmp, 'bad.gguf');
  const short = path.join(tmp, 'short.txt');
  fs.writeFileSync(short, 'Once upon a time.');
  expectError(['imatrix', GGUF, '-o', bad], /needs --text FILE/, bad);
  expectError(['imatrix', GGUF, '-f', short, '-o', bad, '--ctx', '64'], /needs at least 128/, bad);
  expectError(['imatrix', GGUF, '-f', TEXT, '-o', GGUF], /is the input file/, bad);
  expectError(['imatrix', GGUF, '-f', TEXT, '-o', bad, '--ctx', '4096'], /longer than the model's 2048/, bad);
});

test('lowbit quantize --imatrix: accepts both forms; an imatrix for another model is one clear error', async () => {
  const ok = path.join(tmp, 'q4.gguf');
  for (const f of ['stories260K.imatrix.gguf', 'stories260K.imatrix.dat']) {
    const r = cli('quantize', GGUF, ok, '--type', 'Q4_K_M', '--imatrix', path.join(GOLDEN, f), '--json');
    assert.equal(r.status, 0, `${f}: ${r.stderr}`);
    const q = await openModelFile(fileSource(ok));
    assert.equal(Number((q.metadata.get('quantize.imatrix.entries_count') as { value: number }).value), 35);
    fs.rmSync(ok);
  }
  const out = path.join(tmp, 'bad-q.gguf');
  const writeIm = async (name: string, m: Imatrix) => {
    const f = path.join(tmp, name);
    const s = memorySink();
    await writeImatrixGguf(m, s);
    fs.writeFileSync(f, s.bytes());
    return f;
  };
  const good = await readFile(path.join(GOLDEN, 'stories260K.imatrix.gguf'));
  const extra = emptyImatrix(128);
  for (const [k, v] of good.entries) extra.entries.set(k, v);
  extra.entries.set('blk.9.attn_q.weight', { name: 'blk.9.attn_q.weight', sums: new Float64Array(64).fill(1), counts: new Float64Array([1]) });
  const missing = emptyImatrix(128);
  for (const [k, v] of good.entries) if (k !== 'blk.4.ffn_up.weight') missing.entries.set(k, v);
  const corrupt = path.join(tmp, 'corrupt.dat');
  fs.writeFileSync(corrupt, 'not an imatrix at all, just text');
  const cases: [string, RegExp][] = [
    [path.join(GOLDEN, 'synthetic.imatrix.gguf'), /does not match this model: entry blk.0.attn_k.weight has 256 values, but the tensor's rows have 64 columns/],
    [await writeIm('extra.gguf', extra), /entries for tensors the model lacks \(blk.9.attn_q.weight\)/],
    [await writeIm('missing.gguf', missing), /no entry for blk.4.ffn_up.weight/],
    [corrupt, /not an imatrix/],
  ];
  for (const [im, re] of cases) expectError(['quantize', GGUF, out, '--type', 'Q4_K_M', '--imatrix', im], re, out);
});
