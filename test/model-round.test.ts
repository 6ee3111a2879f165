/**
 * AutoRound end to end (src/pipeline/model-round.ts, --autoround-e2e-iters): the KL gradient with respect
 * to the logits matches finite differences; on a small random model quantized to Q4_0 by round to
 * nearest, the learned rounding lowers the whole model's KL divergence from the float model on the
 * calibration windows, every tensor keeps exact codec bytes (its values are its bytes' dequantization),
 * the same seed gives the same bytes, and 0 steps keep the start.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { rtnBlocks } from '../src/algos/blockwise.js';
import type { ModelConfig } from '../src/model/family.js';
import { klRows, modelRoundRefusal, refineModel, type ModelTensor } from '../src/pipeline/model-round.js';
import { mulberry32 } from '../src/rng.js';
import { paramLayout, type TrainConfig } from '../src/train/llama-grad.js';
import { assertRefused } from './cli-refusal.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');

const config: ModelConfig = { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 48, seqLen: 16, headDim: 16, normEps: 1e-5, ropeTheta: 10000, ropeDim: 16, ropeStyle: 'normal' };
const ctx = 16;

function randomWeights(seed: number): Map<string, Float32Array> {
  const tc: TrainConfig = { ...config, seqLen: ctx, tiedOutput: false };
  const rand = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const out = new Map<string, Float32Array>();
  for (const t of paramLayout(tc).tensors) out.set(t.name, Float32Array.from({ length: t.size }, () => (t.decay ? normal() * 0.3 : 1 + 0.1 * normal())));
  return out;
}

test('model round: the KL gradient of klRows matches finite differences', () => {
  const V = 7;
  const rows = 3;
  const rand = mulberry32(5);
  const z = Float64Array.from({ length: rows * V }, () => 3 * (rand() - 0.5));
  const f = Float64Array.from({ length: rows * V }, () => 3 * (rand() - 0.5));
  const lf = new Float32Array(rows * V);
  for (let t = 0; t < rows; t++) {
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(f[t * V + i]);
    for (let i = 0; i < V; i++) lf[t * V + i] = f[t * V + i] - Math.log(s);
  }
  const dz = new Float64Array(rows * V);
  klRows(z, lf, rows, V, dz, 1);
  const h = 1e-5;
  for (let e = 0; e < z.length; e++) {
    const zp = Float64Array.from(z);
    const zm = Float64Array.from(z);
    zp[e] += h;
    zm[e] -= h;
    const fd = (klRows(zp, lf, rows, V) - klRows(zm, lf, rows, V)) / (2 * h);
    assert.ok(Math.abs(fd - dz[e]) < 1e-6, `element ${e}: gradient ${dz[e]} vs finite difference ${fd}`);
  }
  // KL of a distribution from itself is 0
  const same = Float64Array.from(lf);
  assert.ok(Math.abs(klRows(same, lf, rows, V)) < 1e-6);
});

test('model round: the end-to-end KL falls, bytes stay exact codec bytes, deterministic', () => {
  const weights = randomWeights(3);
  const rand = mulberry32(9);
  const windows = Array.from({ length: 6 }, () => Int32Array.from({ length: ctx }, () => Math.floor(rand() * config.vocabSize)));
  const codec = blockCodecFor('Q4_0', 64);
  const learned: ModelTensor[] = [];
  const current = new Map(weights);
  for (const [name, w] of weights) {
    if (name.includes('norm')) continue;
    const r = rtnBlocks(codec, w, w.length / 64, 64);
    learned.push({ name, codec, w, start: { bytes: r.bytes, q: r.q } });
    current.set(name, r.q);
  }
  const run = (iters: number) => refineModel(config, (n) => weights.get(n), (n) => current.get(n), learned, windows, ctx, { iters, lr: 0.05, batch: 2, seed: 1, evalEvery: 5 });
  const a = run(30);
  assert.ok(a.loss < 0.9 * a.lossStart, `KL ${a.lossStart} -> ${a.loss}`);
  assert.notEqual(a.pick, 'start');
  for (const t of learned) {
    const r = a.tensors.get(t.name)!;
    const back = new Float32Array(t.w.length);
    for (let b = 0; b < back.length / 32; b++) codec.dequantize(r.bytes, b * codec.blockBytes, back, b * 32);
    assert.deepEqual(back, r.q, `${t.name}: values are the bytes' dequantization`);
  }
  assert.ok(learned.some((t) => !a.tensors.get(t.name)!.bytes.every((x, i) => x === t.start.bytes[i])), 'some bytes changed');
  const again = run(30);
  for (const t of learned) assert.deepEqual(again.tensors.get(t.name)!.bytes, a.tensors.get(t.name)!.bytes);
  // greedy flips: the evaluation loss never rises over the kept steps, the bytes stay exact
  const g = refineModel(config, (n) => weights.get(n), (n) => current.get(n), learned, windows, ctx, { iters: 12, lr: 0, batch: 6, seed: 1, flips: 0.002 });
  assert.equal(g.pick, 'last');
  assert.ok(g.loss < 0.95 * g.lossStart, `greedy KL ${g.lossStart} -> ${g.loss}`);
  assert.equal(g.loss, Math.min(...g.trace));
  for (const t of learned) {
    const r = g.tensors.get(t.name)!;
    const back = new Float32Array(t.w.length);
    for (let b = 0; b < back.length / 32; b++) codec.dequantize(r.bytes, b * codec.blockBytes, back, b * 32);
    assert.deepEqual(back, r.q, `${t.name}: values are the bytes' dequantization (greedy)`);
  }
  const none = run(0);
  assert.equal(none.pick, 'start');
  for (const t of learned) assert.deepEqual(none.tensors.get(t.name)!.bytes, t.start.bytes);
});

test('model round: refused on layers the training engine does not run', () => {
  const names = [...randomWeights(1).keys()];
  assert.equal(modelRoundRefusal(config, names), undefined);
  assert.match(modelRoundRefusal({ ...config, ropeStyle: 'neox' }, names)!, /RoPE layout neox/);
});

test('quantize CLI: the end-to-end stage and the block objective\'s options refused where they do not apply: one line, exit 2', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-e2e-'));
  const out = path.join(tmp, 'bad.gguf');
  const gguf = path.join(ROOT, 'data', 'stories260K.gguf');
  const calib = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
  const q = (algo: string, ...args: string[]) => ['quantize', gguf, out, '--type', 'Q4_0', '--algo', algo, '--calib', calib, ...args];
  for (const [args, re] of [
    [q('gptq', '--autoround-e2e-iters', '10'), /--autoround-e2e-iters applies to --algo autoround \(this run uses gptq\)/],
    [q('gptq', '--autoround-head-iters', '10'), /--autoround-head-iters applies to --algo autoround/],
    [q('gptq', '--autoround-block-fisher', '2'), /--autoround-block-fisher applies to --algo autoround/],
    [q('autoround', '--autoround-e2e-lr', '0.01'), /--autoround-e2e-lr applies with --autoround-e2e-iters/],
    [q('autoround', '--autoround-e2e-batch', '2'), /--autoround-e2e-batch applies with --autoround-e2e-iters/],
    [q('autoround', '--autoround-head-lr', '0.01'), /--autoround-head-lr applies with --autoround-head-iters/],
    [q('autoround', '--autoround-objective', 'linear', '--autoround-e2e-iters', '5'), /--autoround-e2e-iters applies to AutoRound's block objective/],
    [q('autoround', '--autoround-e2e-iters', '-1'), /--autoround-e2e-iters: -1 is below the minimum 0/],
    [q('autoround', '--autoround-e2e-iters', '3', '--autoround-e2e-lr', '0.9'), /--autoround-e2e-lr/],
    [['quantize', gguf, out, '--type', 'Q4_0', '--embedding-fisher', '2'], /--embedding-fisher applies with --calib/],
    [q('autoround', '--autoround-e2e-iters', '3', '--autoround-e2e-flips', '0.01', '--autoround-e2e-lr', '0.01'), /--autoround-e2e-flips replaces them/],
    [q('autoround', '--autoround-e2e-flips', '0.01'), /--autoround-e2e-flips applies with --autoround-e2e-iters/],
  ] as [string[], RegExp][])
    assertRefused(BIN, args, re, out);
});
