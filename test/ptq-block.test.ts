/**
 * AutoRound on the transformer block's output (src/pipeline/block-round.ts):
 *  - a synthetic LLaMA layer (GQA, SwiGLU), every linear Q4_0 from RTN: the learned rounding lowers the
 *    block's output error well below RTN's, the bytes decode to the values the layer ran with, the
 *    result is never worse than the start, and the same seed gives the same bytes;
 *  - the layer's backward without its input gradient gives the linears the same gradients;
 *  - with checkpoints (evalEvery) the result is no worse than the last iterate and is judged on the same windows;
 *  - the output head's rounding learned on the logits' KL divergence (refineHead): its KL, recomputed
 *    from the bytes, falls well below the start's; seeded; 0 steps keep the start;
 *  - the default schedules of the two objectives;
 *  - layers the training engine cannot run (other families, biases) are named;
 *  - bad options: one line, exit 2.
 */
import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { rtnBlocks } from '../src/algos/blockwise.js';
import type { ModelConfig } from '../src/model/family.js';
import { autoroundSchedule, BLOCK_TENSORS, BlockRunner, blockObjectiveRefusal, blockWindowsUsed, refineBlock, refineHead, type BlockLinear } from '../src/pipeline/block-round.js';
import { mulberry32 } from '../src/rng.js';
import { assertRefused } from './cli-refusal.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');

const config: ModelConfig = { dim: 64, hiddenDim: 128, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 1, seqLen: 16, headDim: 16, normEps: 1e-5, ropeTheta: 10000, ropeDim: 16, ropeStyle: 'normal' };
const ctx = 16;
const nSeq = 6;

function shapes(): Record<string, [number, number]> {
  const { dim, hiddenDim: h, nHeads, nKvHeads, headDim } = config;
  return { attn_norm: [1, dim], ffn_norm: [1, dim], attn_q: [nHeads * headDim, dim], attn_k: [nKvHeads * headDim, dim], attn_v: [nKvHeads * headDim, dim], attn_output: [dim, nHeads * headDim], ffn_gate: [h, dim], ffn_up: [h, dim], ffn_down: [dim, h] };
}

function setup(seed: number, windows = nSeq) {
  const r = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const w = new Map<string, Float32Array>();
  for (const [n, [rows, cols]] of Object.entries(shapes())) w.set(n, Float32Array.from({ length: rows * cols }, () => (rows === 1 ? 1 + 0.1 * normal() : normal() / Math.sqrt(cols))));
  const x = Float32Array.from({ length: windows * ctx * config.dim }, (_, i) => normal() * (i % config.dim === 3 ? 4 : 1));
  return { w, x };
}

function run(seed: number, iters: number, onlyUsed = false, windows = nSeq, lr = 0, evalEvery = 0) {
  const { w, x } = setup(7, windows);
  const runner = new BlockRunner(config, ctx);
  runner.load((n) => w.get(n)!);
  // onlyUsed: the target of the windows refineBlock does not read is NaN (the layer driver leaves it out in the last layer)
  const used = blockWindowsUsed(windows, { iters, batch: 2, seed });
  const target = runner.keepTransposes(() => runner.outputs(x, onlyUsed ? used : undefined));
  if (onlyUsed) for (let s = 0; s < windows; s++) if (!used.includes(s)) target.fill(NaN, s * ctx * config.dim, (s + 1) * ctx * config.dim);
  const codec = blockCodecFor('Q4_0', 64);
  const specs: BlockLinear[] = BLOCK_TENSORS.filter((n) => !n.endsWith('norm')).map((name) => {
    const [rows, cols] = shapes()[name];
    const r = rtnBlocks(codec, w.get(name)!, rows, cols);
    return { name, codec, w: w.get(name)!, start: { bytes: r.bytes, q: r.q } };
  });
  runner.load((n) => specs.find((s) => s.name === n)?.start.q ?? w.get(n)!);
  const res = refineBlock(runner, specs, x, target, { iters, lr, batch: 2, seed, evalEvery });
  // the bytes decode to the values; the layer with them has the reported loss
  const q = new Map<string, Float32Array>();
  for (const s of specs) {
    const { bytes, q: values } = res.linears.get(s.name)!;
    const back = new Float32Array(values.length);
    for (let b = 0; b < values.length / 32; b++) codec.dequantize(bytes, b * codec.blockBytes, back, b * 32);
    assert.deepEqual(back, values, `${s.name}: bytes decode to the learned values`);
    q.set(s.name, values);
  }
  const check = new BlockRunner(config, ctx);
  check.load((n) => q.get(n) ?? w.get(n)!);
  const loss = check.loss(x, target, onlyUsed ? used : undefined);
  return { res, loss, bytes: specs.map((s) => res.linears.get(s.name)!.bytes) };
}

test('AutoRound block objective: output error well below RTN, exact bytes, never worse than the start, seeded', () => {
  const a = run(1, 60);
  assert.ok(Math.abs(a.loss - a.res.loss) <= 1e-4 * a.res.loss, `reported ${a.res.loss}, recomputed ${a.loss}`);
  assert.ok(a.res.loss < 0.7 * a.res.lossStart, `block output error ${a.res.lossStart} -> ${a.res.loss}`);
  assert.deepEqual(run(1, 60).bytes, a.bytes, 'same seed, same bytes');
  // 24 windows: 8 judged and 4 steps of 2: some are never read, and their targets do not matter
  assert.ok(blockWindowsUsed(24, { iters: 4, batch: 2, seed: 1 }).length < 24);
  const few = run(1, 4, true, 24, 0.02);
  assert.ok(Number.isFinite(few.res.loss) && Number.isFinite(few.res.lossStart), `loss ${few.res.lossStart} -> ${few.res.loss}`);
  const all = run(1, 4, false, 24, 0.02);
  assert.notEqual(all.res.pick, 'start', 'the steps moved the rounding');
  assert.deepEqual([few.res.pick, few.res.lossStart, few.res.loss], [all.res.pick, all.res.lossStart, all.res.loss]);
  assert.deepEqual(few.bytes, all.bytes, 'the windows not read do not matter');
  const none = run(1, 0);
  assert.equal(none.res.pick, 'start');
  assert.equal(none.res.loss, none.res.lossStart);
  assert.throws(() => refineBlock(new BlockRunner(config, ctx), [], new Float32Array(ctx * config.dim), new Float32Array(ctx * config.dim), { iters: 1, lr: 0, batch: 0, seed: 0 }), /minibatch must be at least one window/);
});

test('AutoRound block objective: checkpoints every few steps keep the best judged iterate, exact bytes', () => {
  const a = run(1, 60, false, nSeq, 0, 10);
  assert.ok(Math.abs(a.loss - a.res.loss) <= 1e-4 * a.res.loss, `reported ${a.res.loss}, recomputed ${a.loss}`);
  assert.ok(a.res.loss < 0.7 * a.res.lossStart, `block output error ${a.res.lossStart} -> ${a.res.loss}`);
  assert.deepEqual(run(1, 60, false, nSeq, 0, 10).bytes, a.bytes, 'same seed, same bytes');
  // no checkpoint is judged worse than what it keeps: with checkpoints the loss is at most the last iterate's
  const last = run(1, 60, false, nSeq, 0, 1000);
  assert.ok(a.res.loss <= last.res.loss + 1e-12 || a.res.pick === 'last', `checkpoints ${a.res.loss} vs last ${last.res.loss}`);
  // the checkpoints read no window beyond blockWindowsUsed (the last layer's target is computed for those only)
  const few = run(1, 10, true, 24, 0.03, 1);
  const all = run(1, 10, false, 24, 0.03, 1);
  assert.equal(all.res.pick, 'best', 'a checkpoint is kept');
  assert.deepEqual([few.res.pick, few.res.lossStart, few.res.loss], [all.res.pick, all.res.lossStart, all.res.loss]);
  assert.deepEqual(few.bytes, all.bytes, 'the windows not read do not matter (checkpoints)');
});

/** KL(softmax(W h_f) || softmax(Q h_q)) summed over the tokens, in f64 */
function headKl(w: Float32Array, q: Float32Array, hF: Float32Array, hQ: Float32Array, dim: number): number {
  const vocab = w.length / dim;
  let kl = 0;
  for (let t = 0; t < hF.length / dim; t++) {
    const zf = Array.from({ length: vocab }, (_, r) => { let s = 0; for (let j = 0; j < dim; j++) s += w[r * dim + j] * hF[t * dim + j]; return s; });
    const zq = Array.from({ length: vocab }, (_, r) => { let s = 0; for (let j = 0; j < dim; j++) s += q[r * dim + j] * hQ[t * dim + j]; return s; });
    const lse = (z: number[]) => { const m = Math.max(...z); return m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)); };
    const lf = lse(zf);
    const lq = lse(zq);
    for (let r = 0; r < vocab; r++) kl += Math.exp(zf[r] - lf) * (zf[r] - lf - zq[r] + lq);
  }
  return kl;
}

test('AutoRound output head on the logits\' KL divergence: well below the start, exact bytes, seeded', () => {
  const r = mulberry32(11);
  const normal = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const dim = 64;
  const vocab = 48;
  const w = Float32Array.from({ length: vocab * dim }, () => (2 * normal()) / Math.sqrt(dim));
  const hF = Float32Array.from({ length: nSeq * ctx * dim }, () => normal());
  const hQ = Float32Array.from(hF, (v) => v + 0.05 * normal()); // the quantized model's final-norm output differs a little
  const codec = blockCodecFor('Q4_0', dim);
  const start = rtnBlocks(codec, w, vocab, dim);
  const learn = (iters: number, seed = 1) => refineHead({ codec, w, start: { bytes: start.bytes, q: start.q } }, hQ, hF, dim, ctx, { iters, lr: 0.02, batch: 2, seed });
  const a = learn(60);
  const back = new Float32Array(w.length);
  for (let b = 0; b < w.length / 32; b++) codec.dequantize(a.bytes, b * codec.blockBytes, back, b * 32);
  assert.deepEqual(back, a.q, 'bytes decode to the learned values');
  // judged on all the windows here (nSeq <= EVAL_WINDOWS): the reported KL is the recomputed one
  const tokens = nSeq * ctx;
  const klStart = headKl(w, start.q, hF, hQ, dim) / tokens;
  const klEnd = headKl(w, a.q, hF, hQ, dim) / tokens;
  assert.ok(Math.abs(klStart - a.lossStart) <= 1e-4 * klStart, `start KL ${a.lossStart} vs ${klStart}`);
  assert.ok(Math.abs(klEnd - a.loss) <= 1e-4 * klEnd, `end KL ${a.loss} vs ${klEnd}`);
  assert.ok(klEnd < 0.8 * klStart, `head KL ${klStart} -> ${klEnd}`);
  assert.deepEqual(learn(60).bytes, a.bytes, 'same seed, same bytes');
  const none = learn(0);
  assert.equal(none.pick, 'start');
  assert.deepEqual(none.bytes, start.bytes);
});

test('AutoRound block objective: the backward without the input gradient gives the same weight gradients', () => {
  const { w, x } = setup(3);
  const runner = new BlockRunner(config, ctx);
  runner.load((n) => w.get(n)!);
  const n = ctx * config.dim;
  const target = Float32Array.from(x.subarray(0, n), (v) => v * 0.9);
  const m = runner.model;
  const grads = () => {
    m.zeroGrads();
    runner.error(runner.forward(x.subarray(0, n)), target, true);
    return BLOCK_TENSORS.filter((t) => !t.endsWith('norm')).map((t) => Float32Array.from(m.view(`blk.0.${t}.weight`, m.grads)));
  };
  const full = grads();
  m.inputGradient = false;
  const partial = grads();
  m.inputGradient = true;
  assert.ok(full.every((g) => g.some((v) => v !== 0)), 'every linear has a gradient');
  assert.deepEqual(partial, full);
});

test('AutoRound block objective: a metric M measures the output error as d^T M d (M = I: the squared error and its gradient; M = diag(c): each column weighted)', () => {
  const { w, x } = setup(3);
  const runner = new BlockRunner(config, ctx);
  runner.load((n) => w.get(n)!);
  const n = ctx * config.dim;
  const dim = config.dim;
  const target = Float32Array.from(x.subarray(0, n), (v) => v * 0.9);
  const m = runner.model;
  const run = (M: Float64Array | null) => {
    runner.metric = M;
    m.zeroGrads();
    const e = runner.error(runner.forward(x.subarray(0, n)), target, true);
    runner.metric = null;
    return { e, g: Float32Array.from(m.view('blk.0.ffn_down.weight', m.grads)) };
  };
  const plain = run(null);
  const eye = new Float64Array(dim * dim);
  for (let j = 0; j < dim; j++) eye[j * dim + j] = 1;
  const id = run(eye);
  assert.ok(Math.abs(id.e / plain.e - 1) < 1e-9);
  for (let i = 0; i < plain.g.length; i++) assert.ok(Math.abs(id.g[i] - plain.g[i]) <= 1e-5 * (Math.abs(plain.g[i]) + 1e-6));
  // weight column 5 by 3: its squared error counted three times
  const y = Float32Array.from(runner.forward(x.subarray(0, n)));
  let col5 = 0;
  for (let t = 0; t < ctx; t++) col5 += (y[t * dim + 5] - target[t * dim + 5]) ** 2;
  const c = Float64Array.from(eye);
  c[5 * dim + 5] = 3;
  assert.ok(Math.abs(run(c).e - (plain.e + 2 * col5)) < 1e-6 * plain.e);
});

test('AutoRound schedules: block 14 steps from 0.2 / 14, per-linear 100 from 1/100, after GPTQ the block one; flags win', () => {
  const o = { autoroundIters: 0, autoroundLr: 0, autoroundObjective: 'block' as const };
  assert.deepEqual(autoroundSchedule(o, 'block'), { iters: 14, lr: 0.2 / 14 });
  assert.deepEqual(autoroundSchedule({ ...o, autoroundIters: 40 }, 'block'), { iters: 40, lr: 0.005 });
  assert.deepEqual(autoroundSchedule(o, 'linear'), { iters: 100, lr: 0.01 });
  assert.deepEqual(autoroundSchedule(o, 'linear', true), { iters: 14, lr: 0.2 / 14 });
  assert.deepEqual(autoroundSchedule({ ...o, autoroundObjective: 'linear' }, 'linear', true), { iters: 100, lr: 0.01 });
  assert.deepEqual(autoroundSchedule({ ...o, autoroundIters: 10 }, 'linear'), { iters: 10, lr: 0.1 });
  assert.deepEqual(autoroundSchedule({ ...o, autoroundIters: 10, autoroundLr: 0.02 }, 'block'), { iters: 10, lr: 0.02 });
  // the block stage's own flags: only the block stage, never the per-linear start (after GPTQ or not)
  const b = { ...o, autoroundBlockIters: 80, autoroundBlockLr: 0 };
  assert.deepEqual(autoroundSchedule(b, 'block'), { iters: 80, lr: 0.0025 });
  assert.deepEqual(autoroundSchedule({ ...b, autoroundBlockLr: 0.01 }, 'block'), { iters: 80, lr: 0.01 });
  assert.deepEqual(autoroundSchedule({ ...b, autoroundIters: 40, autoroundLr: 0.02 }, 'block'), { iters: 80, lr: 0.02 });
  assert.deepEqual(autoroundSchedule(b, 'linear'), { iters: 100, lr: 0.01 });
  assert.deepEqual(autoroundSchedule(b, 'linear', true), { iters: 14, lr: 0.2 / 14 });
});

test('AutoRound block objective: layers the training engine cannot run are named', () => {
  const names = BLOCK_TENSORS.map((n) => `blk.0.${n}.weight`);
  assert.equal(blockObjectiveRefusal(config, names, 0), undefined);
  assert.match(blockObjectiveRefusal({ ...config, arch: 'qwen2' }, names, 0)!, /qwen2 is not a plain LLaMA block/);
  assert.match(blockObjectiveRefusal(config, [...names, 'blk.0.attn_q.bias'], 0)!, /has blk\.0\.attn_q\.bias/);
  assert.match(blockObjectiveRefusal({ ...config, ropeStyle: 'neox' }, names, 0)!, /RoPE layout neox/);
});

test('quantize CLI: bad AutoRound block options: one line, exit 2', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-block-'));
  const out = path.join(tmp, 'bad.gguf');
  const gguf = path.join(ROOT, 'data', 'stories260K.gguf');
  const calib = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
  for (const [args, re] of [
    [['--autoround-objective', 'output'], /--autoround-objective: 'output' is not one of block, linear/],
    [['--autoround-batch', '0'], /autoround-batch|autoroundBatch/],
  ] as [string[], RegExp][])
    assertRefused(BIN, ['quantize', gguf, out, '--type', 'Q4_0', '--algo', 'autoround', '--calib', calib, ...args], re, out);
  assertRefused(BIN, ['quantize', gguf, out, '--type', 'Q4_0', '--algo', 'gptq', '--calib', calib, '--autoround-batch', '2'], /--autoround-batch applies to --algo autoround/, out);
});
