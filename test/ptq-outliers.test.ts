/**
 * The non-learned PTQ methods of issue 21 on stories260K: LoRC (low-rank compensation stored as f16
 * tensors in lowbit safetensors, applied by lowbit's loader), EasyQuant (f16 outliers + range search),
 * and their bad-input errors. Diagnostics print the measured values.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { easyQuantBlocks } from '../src/algos/easyquant.js';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { rtnBlocks } from '../src/algos/blockwise.js';
import { addLowRank, lowRankFactors } from '../src/algos/lorc.js';
import { defineRecipe, schemeRecipe, type Algorithm } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { readLowbitSafetensors } from '../src/eval/load-lowbit.js';
import { sqnrDb } from '../src/eval/metrics.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { evaluateAgainst, evaluateBase, type BaseEvaluation } from '../src/pipeline/evaluate.js';
import { quantize } from '../src/pipeline/quantize.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DATA = path.join(ROOT, 'data');
const GGUF = path.join(DATA, 'stories260K.gguf');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const TEXT = fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8');
const HELD_OUT = TEXT.slice(500000, 540000);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-ptq3-'));

function gaussian(seed: number) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

test('LoRC factors: a rank-3 matrix is recovered to f16 precision; on noise rank 4 keeps more than rank 1', () => {
  const g = gaussian(7);
  const [n, k, r] = [40, 24, 3];
  const u = Float32Array.from({ length: n * r }, g);
  const v = Float32Array.from({ length: r * k }, g);
  const e = new Float32Array(n * k);
  addLowRank(e, n, k, { a: u, b: v, rank: r });
  const f = lowRankFactors(e, n, k, r, { seed: 1 });
  const back = new Float32Array(n * k);
  addLowRank(back, n, k, f);
  const s = sqnrDb(e, back);
  console.log(`# rank-3 40x24 recovered at ${s.toFixed(1)} dB (f16 factors)`);
  assert.ok(s > 55, `rank-3 recovery ${s} dB`);
  // on noise, rank 4 of 24 keeps more energy than rank 1, and less than all of it
  const noise = Float32Array.from({ length: n * k }, g);
  const kept = (rank: number) => {
    const b = new Float32Array(n * k);
    addLowRank(b, n, k, lowRankFactors(noise, n, k, rank, { seed: 2 }));
    return sqnrDb(noise, b);
  };
  assert.ok(kept(4) > kept(1) + 0.5, `rank 4 ${kept(4)} dB vs rank 1 ${kept(1)} dB`);
  assert.throws(() => lowRankFactors(noise, n, k, 25), /--lorc 25: larger than the rank/);
});

test('EasyQuant: outliers kept exactly (f16), the rest at least as close as RTN on an outlier-heavy matrix', () => {
  const g = gaussian(3);
  const [n, k] = [16, 64];
  const w = Float32Array.from({ length: n * k }, (_, i) => g() * 0.02 + (i % 37 === 5 ? 0.5 : 0));
  const c = blockCodecFor('Q4_0', k);
  const rtn = rtnBlocks(c, w, n, k);
  const eq = easyQuantBlocks(c, w, n, k, 0.04);
  const { perRow, index, value } = eq.outliers;
  assert.equal(perRow, 3);
  for (let r = 0; r < n; r++) for (let i = 0; i < perRow; i++) assert.equal(eq.q[r * k + index[r * perRow + i]], value[r * perRow + i]);
  const [a, b] = [sqnrDb(w, rtn.q), sqnrDb(w, eq.q)];
  console.log(`# Q4_0 16x64 with outliers: RTN ${a.toFixed(2)} dB, EasyQuant ${b.toFixed(2)} dB`);
  assert.ok(b > a + 3, `EasyQuant ${b} dB vs RTN ${a} dB`);
});

let base: BaseEvaluation | undefined;
async function run(algorithm: Algorithm, ptq: Record<string, unknown>) {
  const m = await openModelFile(fileSource(GGUF));
  const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(schemeRecipe('int3', { groupSize: 32 }))), algorithm, ptq });
  const sink = memorySink();
  const report = await quantize(m, recipe, sink, {});
  base ??= await evaluateBase(fileSource(GGUF), HELD_OUT, { ctx: 128, chunks: 6 });
  const r = await evaluateAgainst(bytesSource(sink.bytes(), algorithm.toString()), base, { ctx: 128, chunks: 6 });
  return { bytes: sink.bytes(), report, kld: r.kld!.mean };
}

test('stories260K int3 g32: LoRC and EasyQuant files load with their extra tensors applied and beat RTN on held-out KLD', async () => {
  const rtn = await run('rtn', {});
  const lorc = await run('rtn', { lorc: 4 });
  const easy = await run('easyquant', {});
  console.log(`# int3 g32 KLD: RTN ${rtn.kld.toFixed(4)} (${rtn.report.bitsPerWeight.toFixed(2)} bpw), RTN+LoRC4 ${lorc.kld.toFixed(4)} (${lorc.report.bitsPerWeight.toFixed(2)} bpw), EasyQuant ${easy.kld.toFixed(4)} (${easy.report.bitsPerWeight.toFixed(2)} bpw)`);
  assert.ok(lorc.kld < 0.9 * rtn.kld, 'LoRC should lower the KLD');
  assert.ok(easy.kld < 0.7 * rtn.kld, 'EasyQuant should lower the KLD');
  assert.ok(lorc.report.bitsPerWeight > rtn.report.bitsPerWeight && easy.report.bitsPerWeight > rtn.report.bitsPerWeight, 'the extra tensors are counted in the size');
  // the loader's weights are exactly what the quantizer measured: same SQNR against the float weights
  const f32 = await readLowbitSafetensors(bytesSource(await quantF32(), 'f32'));
  for (const q of [lorc, easy]) {
    const { tensors } = await readLowbitSafetensors(bytesSource(q.bytes, 'q'));
    assert.ok(!tensors.some((t) => /\.(lorc_[ab]|outlier_(index|value))$/.test(t.name)), 'extra tensors are applied, not exposed');
    const name = 'blk.1.ffn_gate.weight';
    const got = tensors.find((t) => t.name === name)!;
    const ref = f32.tensors.find((t) => t.name === name)!;
    const f = (t: typeof got) => new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
    const reported = q.report.tensors.find((t) => t.name === name)!.sqnrDb;
    assert.ok(Math.abs(sqnrDb(f(ref), f(got)) - reported) < 1e-6, `${name}: loaded ${sqnrDb(f(ref), f(got))} dB vs reported ${reported} dB`);
  }
});

async function quantF32(): Promise<Uint8Array> {
  const m = await openModelFile(fileSource(GGUF));
  const sink = memorySink();
  await quantize(m, defineRecipe({ lowbitRecipe: 1, name: 'f32', rules: [{ match: '.', keep: 'f32' }] }), sink, { output: 'safetensors' });
  return sink.bytes();
}

test('bad input: --lorc or EasyQuant into GGUF, a rank larger than a matrix: one clear line, exit 2, no output', () => {
  const cases: [string[], RegExp][] = [
    [['--type', 'Q4_0', '--lorc', '4'], /--lorc 4: GGUF cannot hold its extra f16 tensors/],
    [['--type', 'Q4_0', '--algo', 'easyquant'], /--algo easyquant: GGUF cannot hold/],
    [['--type', 'int4', '--group', '32', '--lorc', '65'], /--lorc 65: larger than the rank of token_embd.weight \(512 x 64 has rank at most 64\)/],
  ];
  for (const [args, msg] of cases) {
    const out = path.join(tmp, args.includes('Q4_0') ? 'o.gguf' : 'o.safetensors');
    const r = spawnSync(process.execPath, [BIN, 'quantize', GGUF, out, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status} ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!fs.existsSync(out), 'no output file');
  }
});

test('FlexQ: layer-wise sensitivity keeps int8 inputs where int6 hurts most, and A6 with them beats plain A6; FP8 activations are exact E4M3 multiples of the token scale', async () => {
  const { loadModel } = await import('../src/eval/load.js');
  const { perplexity } = await import('../src/eval/perplexity.js');
  const { flexqSensitivity } = await import('../src/pipeline/flexq.js');
  const { actQuantLinear, quantizeActivationsFloat } = await import('../src/model/act-quant.js');
  const { fp8_e4m3fn } = await import('../src/formats/registry.js');
  const { fakeQuantRef } = await import('../src/formats/cast.js');
  const m = await loadModel(fileSource(GGUF), { contextLength: 128, batch: 128 });
  const tok = m.tokenizer!;
  const setup = { ctx: 128, chunks: 4, bos: tok.vocab.bos, addBos: tok.vocab.addBos };
  const s = await flexqSensitivity(m.model, tok.encode(TEXT.slice(0, 40000)), { ...setup, fraction: 0.2 });
  assert.equal(s.scores.length, 35);
  assert.equal(s.keep8.length, 7);
  assert.ok(s.scores[0].kld > 2 * s.scores[s.scores.length - 1].kld);
  base ??= await evaluateBase(fileSource(GGUF), HELD_OUT, { ctx: 128, chunks: 6 });
  const kld = async (hook: Parameters<typeof actQuantLinear>[1] | 'none') => {
    m.model.hooks.linear = hook === 'none' ? actQuantLinear(6) : actQuantLinear(6, hook);
    return (await perplexity(m.model, base!.tokens, { ctx: 128, chunks: 6, bos: 1, addBos: true, base: base!.base })).kld!.mean;
  };
  const keep = new Set(s.keep8);
  const [a6, flex] = [await kld('none'), await kld((n) => keep.has(n))];
  console.log(`# W32A6 KLD ${a6.toFixed(4)}, FlexQ A6 with int8 for ${s.keep8.join(' ')}: ${flex.toFixed(4)}`);
  assert.ok(flex < 0.8 * a6);
  // FP8: every quantized input value is an E4M3 value times the token's scale absmax / 448
  const x = Float32Array.from({ length: 2 * 64 }, (_, i) => Math.sin(i * 1.3) * (i < 64 ? 3 : 0.01));
  const q = Float32Array.from(x);
  quantizeActivationsFloat(q, 2, 64, fp8_e4m3fn);
  for (let t = 0; t < 2; t++) {
    const row = x.subarray(t * 64, (t + 1) * 64);
    const scale = Math.max(...row.map(Math.abs)) / 448;
    const qt = q.subarray(t * 64, (t + 1) * 64);
    assert.ok(qt.some((v, j) => v !== row[j]), 'some values round');
    assert.equal(Math.max(...qt.map(Math.abs)), Math.max(...row.map(Math.abs)), 'the absmax is exact (448 x scale)');
    for (let j = 0; j < 64; j++) assert.ok(Math.abs(qt[j] - row[j]) <= Math.abs(row[j]) * 2 ** -4 + scale * 2 ** -9, `E4M3 rounding error at ${j}`);
    assert.deepEqual(fakeQuantRef(fp8_e4m3fn, qt, { scale }), qt, 'E4M3 values are fixed points');
  }
});

test('bad input: eval --act flexq without calibration text: one clear line, exit 2', () => {
  const r = spawnSync(process.execPath, [BIN, 'eval', GGUF, '--text', path.join(DATA, 'tinystories-valid-head.txt'), '--chunks', '1', '--ctx', '64', '--act', 'flexq'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--act flexq needs calibration text for its sensitivity analysis: --calib FILE/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
});

test('OliVe olive4_g32: an outlier takes an abfloat code and prunes its neighbour, normal pairs stay int4; the bytes follow the documented layout', async () => {
  const { resolveScheme } = await import('../src/quant/registry.js');
  const s = resolveScheme('olive4_g32');
  assert.equal(s.bitsPerWeight, 4.5);
  // normal values on a grid of 0.01 (|x| <= 0.07), one outlier 0.96 = 96 s at element 5, victim element 4
  const x = Float32Array.from({ length: 32 }, (_, j) => (j === 5 ? 0.96 : j === 4 ? 0.03 : ((j % 15) - 7) * 0.01));
  const packed = s.quantizeRef(x, 1, 32);
  const y = s.dequantizeRef(packed, 1, 32);
  const scale = y[5] / 96;
  assert.ok(Math.abs(scale - 0.01) < 1e-5, `scale ${scale}`);
  assert.equal(y[4], 0, 'the victim is pruned');
  const code = (j: number) => (packed[2 + (j >> 1)] >> (4 * (j & 1))) & 15;
  assert.equal(code(4), 0b1000, 'the victim slot holds the identifier');
  assert.equal(code(5), 0b0111, 'the outlier is abfloat +96 (e = 3, u = 1)');
  for (let j = 0; j < 32; j++) if (j !== 4 && j !== 5) assert.ok(Math.abs(y[j] - x[j]) < 1e-4, `normal element ${j}: ${y[j]} vs ${x[j]}`);
  // int4 g32 at the same 4.5 bpw: the outlier forces scale 0.96 / 7 and every normal value rounds to 0
  const i4 = resolveScheme('int4', { groupSize: 32 });
  const z = i4.dequantizeRef(i4.quantizeRef(x, 1, 32), 1, 32);
  assert.ok(sqnrDb(x, y) > sqnrDb(x, z) + 6, `OliVe ${sqnrDb(x, y)} dB vs int4 ${sqnrDb(x, z)} dB`);
});

test('Outlier Suppression+ (--shift): the folded float model computes the original function, and W8A4 (int8_ch, per-token int4 inputs) loses less than without it', async () => {
  const { loadModel } = await import('../src/eval/load.js');
  const { perplexity } = await import('../src/eval/perplexity.js');
  const { actQuantLinear } = await import('../src/model/act-quant.js');
  const ptq = { calibTokens: 4096, calibCtx: 256, seed: 1 };
  const make = async (rules: unknown[], shift: boolean) => {
    const m = await openModelFile(fileSource(GGUF));
    const sink = memorySink();
    const recipe = defineRecipe({ lowbitRecipe: 1, name: 'shift', rules, ptq: { ...ptq, shift } });
    const report = await quantize(m, recipe, sink, { output: 'safetensors', calibText: TEXT.slice(0, 200000) });
    return { bytes: sink.bytes(), report };
  };
  const float = await make([{ match: '.', keep: 'f32' }], true);
  const int8 = schemeRecipe('int8_ch').rules;
  const plain = await make([...int8], false);
  const shifted = await make([...int8], true);
  const names = shifted.report.tensors.map((t) => t.name);
  assert.ok(names.includes('blk.0.attn_norm.bias') && names.includes('blk.4.ffn_up.bias') && names.includes('blk.2.attn_q.bias'), 'norm and linear biases were added');
  base ??= await evaluateBase(fileSource(GGUF), HELD_OUT, { ctx: 128, chunks: 6 });
  const kld = async (bytes: Uint8Array, bits?: number) => {
    const m = await loadModel(bytesSource(bytes, 'shift'), { contextLength: 128, batch: 128 });
    if (bits) m.model.hooks.linear = actQuantLinear(bits);
    return (await perplexity(m.model, base!.tokens, { ctx: 128, chunks: 6, bos: 1, addBos: true, base: base!.base })).kld!.mean;
  };
  const exact = await kld(float.bytes);
  const [a4, a4s] = [await kld(plain.bytes, 4), await kld(shifted.bytes, 4)];
  console.log(`# --shift float model KLD ${exact.toExponential(2)}; A4 KLD without ${a4.toFixed(4)}, with OS+ ${a4s.toFixed(4)}`);
  assert.ok(exact < 1e-6, `the shifted float model differs: KLD ${exact}`);
  assert.ok(a4s < 0.95 * a4, 'OS+ should lower the W8A4 KLD');
});

test('bad input: --shift into GGUF, or without calibration text: one clear line, exit 2', () => {
  const cases: [string[], RegExp][] = [
    [['o.gguf', '--type', 'Q8_0', '--shift', '--calib', path.join(DATA, 'tinystories-valid-head.txt')], /--shift: GGUF for llama.cpp has no RMSNorm bias/],
    [['o.safetensors', '--type', 'int8_ch', '--shift'], /Outlier Suppression\+ \(--shift\) needs calibration text: --calib FILE/],
  ];
  for (const [[out, ...args], msg] of cases) {
    const r = spawnSync(process.execPath, [BIN, 'quantize', GGUF, path.join(tmp, out), ...args], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status} ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});
