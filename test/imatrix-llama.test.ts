/**
 * Opt-in (LOWBIT_FULL=1 and .cache/llama.cpp-build/bin/llama-imatrix built): run llama-imatrix itself on
 * stories260K with data/tinystories-valid-head.txt at ctx 512, 20 chunks (f32 KV cache, flash attention
 * off, so its attention is f32 like lowbit's) and compare with lowbit's collector: identical entries and
 * token counts, statistic within 1e-4 relative per column (f32 vs f64 summation over 10240 tokens moves
 * llama.cpp's sums by ~2e-5), and lowbit rewrites llama-imatrix's GGUF and .dat byte for byte.
 * The normal suite does the same against committed llama-imatrix output (test/imatrix.test.ts).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { imatrixDifference } from '../src/algos/imatrix.js';
import { loadModel } from '../src/eval/load.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { collectImatrix } from '../src/pipeline/imatrix-collect.js';
import { readImatrix, writeImatrixDat, writeImatrixGguf } from '../src/pipeline/imatrix-file.js';
import { llamaBin, ROOT, runLlamaImatrix } from '../scripts/llama-tools.js';

const full = process.env.LOWBIT_FULL === '1';
const bin = llamaBin('llama-imatrix');
const skip = !full ? 'set LOWBIT_FULL=1 to run llama-imatrix' : !bin ? 'llama-imatrix is not built (node scripts/build-llama-cpp.mjs)' : false;

test('lowbit imatrix vs llama-imatrix on stories260K (ctx 512, 20 chunks)', { skip }, async (t) => {
  const ctx = 512;
  const chunks = 20;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-imatrix-llama-'));
  const run = { model: 'data/stories260K.gguf', text: 'data/tinystories-valid-head.txt', ctx, chunks, cwd: ROOT };
  runLlamaImatrix({ ...run, out: path.join(tmp, 'llama.gguf') });
  runLlamaImatrix({ ...run, out: path.join(tmp, 'llama.dat'), format: 'dat' });
  const gBytes = new Uint8Array(fs.readFileSync(path.join(tmp, 'llama.gguf')));
  const dBytes = new Uint8Array(fs.readFileSync(path.join(tmp, 'llama.dat')));
  const theirs = await readImatrix(bytesSource(gBytes, 'llama.gguf'));
  const s = memorySink();
  await writeImatrixGguf(theirs, s);
  assert.deepEqual(s.bytes(), gBytes, 'GGUF rewritten byte for byte');
  assert.deepEqual(writeImatrixDat(await readImatrix(bytesSource(dBytes, 'llama.dat'))), dBytes, '.dat rewritten byte for byte');

  const m = await loadModel(bytesSource(new Uint8Array(fs.readFileSync(path.join(ROOT, run.model))), 'stories260K.gguf'), { contextLength: ctx, batch: ctx });
  const tokens = m.tokenizer!.encode(fs.readFileSync(path.join(ROOT, run.text), 'utf8'));
  const ours = collectImatrix(m.model, tokens, { ctx, chunks, bos: m.tokenizer!.vocab.bos, addBos: m.tokenizer!.vocab.addBos, dataset: run.text }).imatrix;
  const d = imatrixDifference(ours, theirs);
  assert.deepEqual([d.onlyA, d.onlyB], [[], []]);
  let worst = 0;
  for (const e of d.entries) {
    assert.equal(e.countA, e.countB, `${e.name} token count`);
    assert.ok(e.maxRelative < 1e-4, `${e.name}: max relative difference ${e.maxRelative}`);
    worst = Math.max(worst, e.maxRelative);
  }
  assert.equal(ours.chunkCount, theirs.chunkCount);
  t.diagnostic(`max relative difference over ${d.entries.length} tensors: ${worst.toExponential(2)}`);
  fs.rmSync(tmp, { recursive: true, force: true });
});
