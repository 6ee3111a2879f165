/**
 * OmniQuant (src/pipeline/omniquant.ts): learnable weight clipping + learnable equivalent transforms on
 * a layer's output.
 *  - the folded transforms (random scales on every LET pair) leave the float layer's output unchanged;
 *  - on a synthetic LLaMA layer (GQA, SwiGLU, one outlier input channel) at Q4_0 the learned result has a
 *    lower block output error than its start (round to nearest), never worse, exact bytes, seeded;
 *  - end to end on stories260K the GGUF holds exactly the input's tensors (a plain model llama.cpp runs);
 *  - --lorc with a method learned on whole layers is refused with one line.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { defineRecipe, llamaRecipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import type { ModelConfig } from '../src/model/family.js';
import { BLOCK_TENSORS, BlockRunner } from '../src/pipeline/block-round.js';
import { foldLet, letWiring, omniquantLayer } from '../src/pipeline/omniquant.js';
import { quantize } from '../src/pipeline/quantize.js';
import { mulberry32 } from '../src/rng.js';
import { assertRefused } from './cli-refusal.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const CALIB = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 60000);

const config: ModelConfig = { dim: 64, hiddenDim: 128, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 1, seqLen: 16, headDim: 16, normEps: 1e-5, ropeTheta: 10000, ropeDim: 16, ropeStyle: 'normal' };
const ctx = 16;
const nSeq = 6;
type Name = (typeof BLOCK_TENSORS)[number];

function setup(seed: number) {
  const { dim, hiddenDim: h, nHeads, nKvHeads, headDim } = config;
  const shapes: Record<string, [number, number]> = { attn_norm: [1, dim], ffn_norm: [1, dim], attn_q: [nHeads * headDim, dim], attn_k: [nKvHeads * headDim, dim], attn_v: [nKvHeads * headDim, dim], attn_output: [dim, nHeads * headDim], ffn_gate: [h, dim], ffn_up: [h, dim], ffn_down: [dim, h] };
  const r = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const w = new Map<Name, Float32Array>();
  for (const [n, [rows, cols]] of Object.entries(shapes)) w.set(n as Name, Float32Array.from({ length: rows * cols }, () => (rows === 1 ? 1 + 0.1 * normal() : normal() / Math.sqrt(cols))));
  // an outlier channel in the norm gain: the equivalent transform has something to move
  w.get('attn_norm')![5] = 6;
  w.get('ffn_norm')![9] = 5;
  const x = Float32Array.from({ length: nSeq * ctx * dim }, (_, i) => normal() * (i % dim === 3 ? 4 : 1));
  return { w, x };
}

test('OmniQuant LET: the folded scales leave the float layer output unchanged', () => {
  const { w, x } = setup(3);
  const runner = new BlockRunner(config, ctx);
  runner.load((n) => w.get(n as Name)!);
  const ref = runner.outputs(x);
  const wiring = letWiring(config);
  const r = mulberry32(9);
  const theta = Float32Array.from({ length: wiring.nTheta }, () => (r() - 0.5) * 1.6); // scales in [0.45, 2.2]
  const folded = foldLet(wiring, theta, (n) => w.get(n)!);
  assert.ok([...folded].some(([n, v]) => v.some((a, i) => a !== w.get(n)![i])), 'the fold changes the tensors');
  runner.load((n) => folded.get(n as Name)!);
  const out = runner.outputs(x);
  let d = 0;
  let m = 0;
  for (let i = 0; i < ref.length; i++) (d = Math.max(d, Math.abs(out[i] - ref[i]))), (m = Math.max(m, Math.abs(ref[i])));
  assert.ok(d <= 1e-4 * (1 + m), `max |output difference| ${d} at max |output| ${m}`);
  runner.close();
});

function learn(iters: number, seed = 1, letOn = true) {
  const { w, x } = setup(7);
  const runner = new BlockRunner(config, ctx);
  runner.load((n) => w.get(n as Name)!);
  const target = runner.outputs(x);
  const codecs = new Map(BLOCK_TENSORS.filter((n) => !n.endsWith('_norm')).map((n) => [n, blockCodecFor('Q4_0', 64)] as const));
  const res = omniquantLayer(runner, (n) => w.get(n)!, codecs, x, target, { iters, lr: 0, batch: 2, seed, let: letOn, clip: true });
  // recompute: a fresh layer with the folded norms and the quantized linears has the reported error
  const check = new BlockRunner(config, ctx);
  check.load((n) => res.linears.get(n as Name)?.q ?? res.floats.get(n as Name)!);
  const loss = check.loss(x, target);
  for (const [n, { bytes, q }] of res.linears) {
    const c = codecs.get(n)!;
    const back = new Float32Array(q.length);
    for (let b = 0; b < q.length / 32; b++) c.dequantize(bytes, b * c.blockBytes, back, b * 32);
    assert.deepEqual(back, q, `${n}: the bytes decode to the learned values`);
  }
  runner.close();
  check.close();
  return { res, loss };
}

test('OmniQuant: lower block output error than its start (round to nearest), never worse, exact bytes, seeded', (t) => {
  const a = learn(30);
  t.diagnostic(`block output error ${a.res.lossStart.toFixed(4)} -> ${a.res.loss.toFixed(4)} (${a.res.pick}); scales ${a.res.scaleRange.map((x) => x.toFixed(3)).join('..')}, mean clip ${a.res.alphaMean.toFixed(3)}`);
  assert.ok(Math.abs(a.loss - a.res.loss) <= 1e-4 * a.res.loss, `reported ${a.res.loss}, recomputed ${a.loss}`);
  assert.ok(a.res.loss < 0.9 * a.res.lossStart, `block output error ${a.res.lossStart} -> ${a.res.loss}`);
  assert.ok(a.res.scaleRange[0] < 0.99 || a.res.scaleRange[1] > 1.01, 'the equivalent transforms moved');
  assert.deepEqual(learn(30).res.linears, a.res.linears, 'same seed, same bytes');
  const clipOnly = learn(30, 1, false);
  assert.deepEqual(clipOnly.res.scaleRange, [1, 1], 'without LET the scales stay 1');
  assert.ok(clipOnly.res.loss <= clipOnly.res.lossStart);
  const none = learn(0);
  assert.equal(none.res.pick, 'start');
  assert.equal(none.res.loss, none.res.lossStart);
});

test('stories260K: omniquant, omniquant+gptq and omniquant+autoround write plain GGUF (the input\'s tensors, no extras)', async () => {
  const src = fileSource(GGUF);
  try {
    const m = await openModelFile(src);
    const names = m.tensors.map((x) => x.name).sort();
    const want = { omniquant: 'omniquant (block)', 'omniquant+gptq': 'omniquant+gptq', 'omniquant+autoround': 'omniquant+autoround (block)' } as const;
    for (const algorithm of ['omniquant', 'omniquant+gptq', 'omniquant+autoround'] as const) {
      const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(llamaRecipe('Q4_0'))), algorithm, ptq: { calibTokens: 256, calibCtx: 128, seed: 1, omniquantIters: 3, autoroundIters: 3 } });
      const sink = memorySink();
      const r = await quantize(m, recipe, sink, { output: 'gguf', calibText: CALIB });
      const labels = Object.values(r.ptq?.algorithms ?? {});
      assert.ok(labels.some((x) => x === want[algorithm]), `${algorithm}: labels ${labels}`);
      const out = await openModelFile(bytesSource(sink.bytes(), 'out.gguf'));
      assert.deepEqual(out.tensors.map((x) => x.name).sort(), names, `${algorithm}: the same tensors as the input`);
    }
  } finally {
    src.close();
  }
});

test('quantize CLI: --lorc with a method learned on whole layers, OmniQuant without calibration: one line, exit 2', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-omni-'));
  const out = path.join(tmp, 'bad.safetensors');
  const calib = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
  assertRefused(BIN, ['quantize', GGUF, out, '--type', 'int4', '--algo', 'omniquant', '--calib', calib, '--calib-tokens', '256', '--lorc', '2'], /--lorc applies after each linear's own rounding; OmniQuant learns a whole layer/, out);
  assertRefused(BIN, ['quantize', GGUF, out, '--type', 'int4', '--algo', 'autoround', '--calib', calib, '--calib-tokens', '256', '--lorc', '2'], /AutoRound's block objective learns a whole layer at once/, out);
  assertRefused(BIN, ['quantize', GGUF, out.replace('.safetensors', '.gguf'), '--type', 'Q4_0', '--algo', 'omniquant'], /omniquant needs calibration text: --calib FILE/, out);
  assertRefused(BIN, ['quantize', GGUF, out.replace('.safetensors', '.gguf'), '--type', 'Q4_0', '--algo', 'gptq', '--calib', calib, '--omniquant-iters', '3'], /--omniquant-iters applies to --algo omniquant/, out);
});
