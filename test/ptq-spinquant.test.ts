/**
 * --rotate learned (SpinQuant's R1, src/pipeline/spinquant.ts):
 *  - a Cayley step keeps the rotation orthogonal; the dense form of the Hadamard rotation rotates like
 *    the fast one;
 *  - on stories260K (norms folded) Cayley SGD from the Hadamard rotation lowers the Q4_0 model's KL
 *    divergence on the calibration windows, and the learned R stays orthogonal;
 *  - end to end: the rotated float model computes the original's logits (the pipeline's check), and the
 *    learned rotation's quantized model is no worse than the Hadamard one on the calibration windows;
 *  - --rotate learned without calibration text, its options without it: one line, exit 2.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { foldNorms, hadamardRotation, rotateColumns, rotateRows } from '../src/algos/hadamard.js';
import { defineRecipe, llamaRecipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { plainValue } from '../src/io/gguf.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { vocabFromGgufMetadata } from '../src/io/vocab.js';
import { familyOf } from '../src/model/family.js';
import { llamaConfigFromGguf } from '../src/model/llama.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { calibrationWindows, loadWeights } from '../src/pipeline/passes/load.js';
import { residualWiring } from '../src/pipeline/passes/rotate.js';
import { quantize } from '../src/pipeline/quantize.js';
import { cayleyStep, learnRotation, orthogonalityError, rotationMatrix } from '../src/pipeline/spinquant.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { mulberry32 } from '../src/rng.js';
import { assertRefused } from './cli-refusal.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const CALIB = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 60000);

test('Cayley step: stays orthogonal; the dense Hadamard matrix rotates like the fast transform', () => {
  const n = 32;
  const R = rotationMatrix(hadamardRotation(n, 3));
  assert.ok(orthogonalityError(R, n) < 1e-12, 'Hadamard matrix orthogonal');
  const r = mulberry32(5);
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const x = r() - 0.5;
      A[i * n + j] = x;
      A[j * n + i] = -x;
    }
  let Y = R;
  for (let k = 0; k < 5; k++) Y = cayleyStep(Y, A, 0.7, n);
  assert.ok(orthogonalityError(Y, n) < 1e-12, `after 5 Cayley steps: ${orthogonalityError(Y, n)}`);
  assert.ok(Y.some((v, i) => Math.abs(v - R[i]) > 1e-3), 'the step moves R');
  // dense vs fast: rows (v R) and columns (R^T u)
  const w = Float32Array.from({ length: 3 * n }, () => r() - 0.5);
  const h = hadamardRotation(n, 3);
  const fast = Float32Array.from(w);
  const dense = Float32Array.from(w);
  rotateRows(h, fast, 3);
  rotateRows({ ...h, matrix: R }, dense, 3);
  for (let i = 0; i < w.length; i++) assert.ok(Math.abs(fast[i] - dense[i]) < 1e-5);
  const c1 = Float32Array.from(w);
  const c2 = Float32Array.from(w);
  rotateColumns(h, c1, 3);
  rotateColumns({ ...h, matrix: R }, c2, 3);
  for (let i = 0; i < w.length; i++) assert.ok(Math.abs(c1[i] - c2[i]) < 1e-5);
});

test('stories260K: Cayley SGD from the Hadamard rotation lowers the Q4_0 model\'s KL divergence, R stays orthogonal', async (t) => {
  const src = fileSource(GGUF);
  try {
    const m = await openModelFile(src);
    const weights = await loadWeights(m);
    const md = new Map([...m.gguf!.metadata].map(([k, v]) => [k, plainValue(v)]));
    const f32 = ggmlTypeByName('F32')!;
    const stored = [...weights].map(([name, x]) => ({ name, type: f32, dims: x.rows > 1 ? [x.cols, x.rows] : [x.cols], data: new Uint8Array(x.data.buffer, x.data.byteOffset, x.data.byteLength) }));
    const config = llamaConfigFromGguf(md, stored);
    const wiring = residualWiring(familyOf(config.arch ?? 'llama', false), config.nLayers);
    foldNorms({ get: (n) => weights.get(n), set: (n, x) => void weights.set(n, x) }, wiring);
    const tok = new Tokenizer(vocabFromGgufMetadata(md));
    const windows = calibrationWindows(tok.encode(CALIB, { bos: false }), 512, 64, 0, tok.vocab.bos);
    const codec = (n: string) => (/blk\.\d+\.(attn_[qkvo]|ffn_gate|ffn_up)\.weight$/.test(n) || n === 'output.weight' ? blockCodecFor('Q4_0', weights.get(n)!.cols) : undefined);
    const r = learnRotation(config, weights, codec, rotationMatrix(hadamardRotation(config.dim, 0)), windows, { iters: 10, lr: 0.1, batch: 2, seed: 0, checkEvery: 5, writers: wiring.writers });
    t.diagnostic(`KL ${r.lossStart.toFixed(5)} (Hadamard) -> ${r.loss.toFixed(5)} (step ${r.step})`);
    assert.ok(r.loss < 0.97 * r.lossStart, `learned ${r.loss} vs Hadamard ${r.lossStart}`);
    assert.ok(orthogonalityError(r.matrix, config.dim) < 1e-9, `orthogonality ${orthogonalityError(r.matrix, config.dim)}`);
  } finally {
    src.close();
  }
});

test('stories260K: --rotate learned end to end: the rotated float model computes the original logits', async () => {
  const src = fileSource(GGUF);
  try {
    const m = await openModelFile(src);
    const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(llamaRecipe('Q4_0'))), algorithm: 'gptq', ptq: { calibTokens: 256, calibCtx: 64, seed: 1, rotate: 'learned', rotateIters: 4 } });
    const r = await quantize(m, recipe, memorySink(), { output: 'gguf', calibText: CALIB });
    assert.ok(r.ptq?.rotationMaxLogitDiff !== undefined && r.ptq.rotationMaxLogitDiff < 1e-3, `max |logit difference| ${r.ptq?.rotationMaxLogitDiff}`);
    const note = r.ptq!.notes.find((x) => x.startsWith('rotation learned'));
    assert.ok(note, `notes: ${r.ptq!.notes}`);
    const [a, b] = [...note.matchAll(/([\d.]+e[-+]\d+)/g)].map((x) => Number(x[1]));
    assert.ok(b <= a, `learned ${b} is never worse than Hadamard ${a}`);
  } finally {
    src.close();
  }
});

test('quantize CLI: --rotate learned without calibration text, its options without it: one line, exit 2', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-spin-'));
  const out = path.join(tmp, 'bad.gguf');
  assertRefused(BIN, ['quantize', GGUF, out, '--type', 'Q4_0', '--rotate', 'learned'], /--rotate learned needs calibration text: --calib FILE/, out);
  assertRefused(BIN, ['quantize', GGUF, out, '--type', 'Q4_0', '--rotate', 'hadamard', '--rotate-iters', '5'], /--rotate-iters applies with --rotate learned/, out);
});
