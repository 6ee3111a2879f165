/**
 * Quantization boxes: for the closed-form GGML types, every point inside a tensor's box quantizes to the
 * same bytes, and an element moved just past its interval changes them (unless pinned to its value).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { quantizationBox, type QuantBox } from '../src/audit/boxes.js';
import { behaviourTest, tQuantile, tUpperTail } from '../src/audit/audit.js';
import { xorshift32 } from '../src/rng.js';

function quantizeAll(type: string, x: Float32Array, cols: number): Uint8Array {
  const c = blockCodecFor(type, cols);
  const out = new Uint8Array((x.length / c.blockSize) * c.blockBytes);
  for (let k = 0; k < x.length / c.blockSize; k++) c.quantize(x, k * c.blockSize, out, k * c.blockBytes);
  return out;
}

/** of 8 random points inside the box (u: uniform in [0, 1)), how many blocks quantize to other bytes, and how many were tried */
function randomPointsOff(type: string, w: Float32Array, cols: number, box: QuantBox, u: () => number): [number, number] {
  const bb = blockCodecFor(type, cols).blockBytes;
  let bad = 0, n = 0;
  for (let s = 0; s < 8; s++) {
    const x = Float32Array.from(w, (_, i) => Math.fround(box.lo[i] + u() * (box.hi[i] - box.lo[i])));
    const q = quantizeAll(type, x, cols);
    for (let b = 0; b < box.blocks; b++, n++) if (q.subarray(b * bb, (b + 1) * bb).some((v, k) => v !== box.bytes[b * bb + k])) bad++;
  }
  return [bad, n];
}

test('boxes of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 are exact: inside keeps the bytes, just outside does not', () => {
  const r = xorshift32(11);
  const u = () => r() / 2 ** 32;
  for (const type of ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1']) {
    const rows = 6, cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
    const box = quantizationBox(type, w, rows, cols, { seed: 3 });
    assert.equal(box.pinnedBlocks, 0, `${type}: every block keeps a box`);
    assert.deepEqual(box.bytes, quantizeAll(type, w, cols));
    for (let s = 0; s < 30; s++) {
      const x = Float32Array.from(w, (_, i) => box.lo[i] + u() * (box.hi[i] - box.lo[i]));
      assert.deepEqual(quantizeAll(type, x, cols), box.bytes, `${type}: a random point of the box`);
    }
    // an element moved past its interval by a tenth of the interval's width changes the bytes
    let moved = 0, changed = 0;
    const bs = blockCodecFor(type, cols).blockSize;
    for (let i = 0; i < w.length; i += 7) {
      const width = box.hi[i] - box.lo[i];
      const block = w.subarray(i - (i % bs), i - (i % bs) + bs);
      // pinned elements, and ones whose box reaches the block's maximum (moving past it moves the scale,
      // which may or may not change the bytes) are not "just outside" cases
      if (width === 0 || box.hi[i] + 0.1 * width >= Math.max(...block)) continue;
      const x = Float32Array.from(w);
      x[i] = box.hi[i] + 0.1 * width;
      moved++;
      if (quantizeAll(type, x, cols).some((v, k) => v !== box.bytes[k])) changed++;
    }
    assert.ok(changed >= 0.9 * moved, `${type}: ${changed}/${moved} moves past the box changed the bytes`);
    const mean = box.hi.reduce((a, h, i) => a + h - box.lo[i], 0) / w.length;
    assert.ok(mean > 0, `${type}: boxes have width`);
  }
});

test('K-quant boxes (Q4_K, Q6_K) keep each block\'s scales and codes: most blocks keep a box, points inside re-quantize to the same bytes', () => {
  const r = xorshift32(5);
  const u = () => r() / 2 ** 32;
  for (const type of ['Q4_K', 'Q6_K']) {
    const rows = 16, cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
    const box = quantizationBox(type, w, rows, cols, { seed: 3 });
    assert.deepEqual(box.bytes, quantizeAll(type, w, cols));
    // measured on 32 such rows: Q4_K 16/32 blocks pinned, 38 % of weights free; Q6_K 3/32, 74 %
    assert.ok(box.pinnedBlocks <= 0.7 * box.blocks, `${type}: ${box.pinnedBlocks}/${box.blocks} blocks pinned`);
    const free = box.hi.reduce((a, h, i) => a + (h > box.lo[i] ? 1 : 0), 0);
    assert.ok(free > 0.2 * w.length, `${type}: ${free} of ${w.length} weights free`);
    // statistical: points the validation never saw (another seed) keep the bytes of almost every block
    const [bad, n] = randomPointsOff(type, w, cols, box, u);
    assert.ok(bad <= 0.1 * n, `${type}: ${bad}/${n} random points changed their block`);
  }
  // the other constructions (random-point validation; intervals from each value to its level): the same check
  for (const o of [{ validate: 'random' as const }, { towardLevel: { beyond: 1 } }]) {
    const rows = 8, cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
    const box = quantizationBox('Q4_K', w, rows, cols, { seed: 3, ...o });
    const c = blockCodecFor('Q4_K', cols);
    const free = box.hi.reduce((a, h, i) => a + (h > box.lo[i] ? 1 : 0), 0);
    assert.ok(free > 0.2 * w.length, `${JSON.stringify(o)}: ${free} of ${w.length} weights free`);
    let bad = 0, n = 0;
    for (let s = 0; s < 8; s++) {
      const x = Float32Array.from(w, (_, i) => Math.fround(box.lo[i] + u() * (box.hi[i] - box.lo[i])));
      const q = quantizeAll('Q4_K', x, cols);
      for (let b = 0; b < box.blocks; b++, n++) if (q.subarray(b * c.blockBytes, (b + 1) * c.blockBytes).some((v, k) => v !== box.bytes[b * c.blockBytes + k])) bad++;
    }
    // measured: towardLevel 11/64 (its validation sees only 10 points per block)
    assert.ok(bad <= 0.25 * n, `${JSON.stringify(o)}: ${bad}/${n} random points changed their block`);
  }
});

test('PGD check for K-quant boxes: wide boxes whose corners change blocks are halved toward the malicious values until every block keeps its bytes', () => {
  const r = xorshift32(9);
  const u = () => r() / 2 ** 32;
  const rows = 8, cols = 256;
  const wm = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
  const box = quantizationBox('Q4_K', wm, rows, cols, { seed: 3, gridFraction: 1 });
  const c = blockCodecFor('Q4_K', cols);
  // a point far from the validated ones: every weight at a random end of its box
  const w = Float32Array.from(wm, (_, i) => (u() < 0.5 ? box.lo[i] : box.hi[i]));
  const halvings = new Uint8Array(box.blocks);
  const first = shrinkChangedBlocks(c, w, wm, box.bytes, box, halvings);
  let rounds = 1;
  while (shrinkChangedBlocks(c, w, wm, box.bytes, box, halvings) > 0) rounds++;
  assert.ok(rounds <= 5, `${rounds} rounds (pinned after 4 halvings)`);
  assert.deepEqual(quantizeAll('Q4_K', w, cols), box.bytes, 'after the checks every block gives the malicious bytes');
  for (let i = 0; i < w.length; i++) assert.ok(box.lo[i] <= w[i] && w[i] <= box.hi[i] && box.lo[i] <= wm[i] && wm[i] <= box.hi[i]);
  // the blocks that never changed kept their whole box
  const free = box.hi.reduce((a, h, i) => a + (h > box.lo[i] ? 1 : 0), 0);
  assert.ok(free > 0.2 * w.length, `${free} weights keep room (${first} blocks changed at first)`);
});

// ---------------------------------------------------------------------------------------------------
// the attack end to end on a synthetic model: a trainer-made malicious model, PGD through all layers

import { fineTune } from '../src/audit/malicious.js';
import { plantAttack, shrinkChangedBlocks, writeWithReplacements } from '../src/audit/run.js';
import { llamaGgufMetadata, paramTensors, writeLlamaGguf } from '../src/io/llama-writer.js';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { readFloats } from '../src/pipeline/quantize.js';
import { DEFAULT_TRAIN, Trainer } from '../src/train/trainer.js';
import type { TrainConfig } from '../src/train/llama-grad.js';

const SYN: TrainConfig = {
  dim: 32, hiddenDim: 32, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 32, seqLen: 32, headDim: 8, normEps: 1e-5, ropeTheta: 10000, ropeDim: 8, ropeStyle: 'normal', tiedOutput: false,
};
function synStream(n: number, seed: number, mul: number): Int32Array {
  const r = xorshift32(seed);
  const s = new Int32Array(n);
  for (let i = 1; i < n; i++) s[i] = r() % 4 === 0 ? r() % 32 : (s[i - 1] * mul + 1) % 32;
  return s;
}

/** a model trained `steps` steps on rule (1, 3) of synStream(n), as a GGUF ModelFile */
async function trainedModel(cfg: TrainConfig, n: number, steps: number, batch: number): Promise<ModelFile> {
  const t = new Trainer(cfg, { ...DEFAULT_TRAIN, steps, batch, ctx: 16, lr: 1e-2 }, synStream(n, 1, 3));
  while (t.step < steps) t.trainStep();
  const sink = memorySink();
  await writeLlamaGguf(sink, llamaGgufMetadata(cfg, undefined, 'syn'), paramTensors(t.model.tensors, t.model.params as Float32Array));
  return openModelFile(bytesSource(sink.bytes(), 'benign.gguf'));
}

/** benign: trainedModel; malicious: the benign one fine-tuned `ftSteps` steps on another rule (2, 5) */
async function benignAndMalicious(cfg: TrainConfig, n: number, steps: number, ftSteps: number, batch: number): Promise<{ benign: ModelFile; malicious: ModelFile }> {
  const benign = await trainedModel(cfg, n, steps, batch);
  const evil = await fineTune(benign, synStream(n, 2, 5), undefined, { steps: ftSteps, lr: 1e-2, batch, ctx: 16 });
  const ms = memorySink();
  await writeWithReplacements(ms, benign, evil);
  return { benign, malicious: await openModelFile(bytesSource(ms.bytes(), 'malicious.gguf')) };
}

test('attack: a trainer-made malicious model planted by PGD through all layers quantizes to its exact bytes, PGD lowers the KL', async () => {
  // benign: trained on one rule; malicious: fine-tuned on another
  const { benign, malicious } = await benignAndMalicious(SYN, 4000, 30, 20, 4);
  const types = ['Q4_0', 'Q4_1'];
  const planted = await plantAttack({ benign, malicious, types, pure: true, pgd: { data: synStream(4000, 1, 3), steps: 24, lr: 0.5, batch: 8, ctx: 16 } });
  assert.ok(planted.pgdKl && planted.pgdKl.fixedAfter < 0.85 * planted.pgdKl.fixedBefore, `PGD KL ${JSON.stringify(planted.pgdKl)}`);
  for (const r of planted.report) assert.equal(r.repairedBlocks, 0, `${r.type}: exact boxes need no repair`);
  // every quantized tensor gives the malicious bytes for both types; the norms are the malicious ones
  const floats = async (m: ModelFile, name: string) => Float32Array.from(await readFloats(m, m.tensor(name)));
  let moved = 0;
  for (const tensor of malicious.tensors) {
    const wm = await floats(malicious, tensor.name);
    const w = planted.tensors.get(tensor.name) ?? (await floats(benign, tensor.name));
    if (tensor.shape.length === 1) {
      assert.deepEqual(w, wm, `${tensor.name} is held at the malicious values`);
      continue;
    }
    const cols = tensor.shape[tensor.shape.length - 1];
    for (const type of types) assert.deepEqual(quantizeAll(type, w, cols), quantizeAll(type, wm, cols), `${tensor.name} ${type}`);
    for (let i = 0; i < w.length; i++) if (w[i] !== wm[i]) moved++;
  }
  assert.ok(moved > 3000, `the attack moved ${moved} weights off the malicious values`);
});

test('edge sweep: a row planted against Q5_0\'s interval edges is found when auditing other types (Q4_0 alone does not see it); a clean model is not flagged', async () => {
  const { edgeSweep } = await import('../src/audit/run.js');
  const { ggmlRoundTrip } = await import('../src/alloc/cost.js');
  const { roundingSteps } = await import('../src/audit/audit.js');
  const t = new Trainer(SYN, { ...DEFAULT_TRAIN, steps: 1, batch: 1, ctx: 16 }, synStream(200, 1, 3));
  const params = Float32Array.from(t.model.params as Float32Array);
  const write = async (p: Float32Array) => {
    const s = memorySink();
    await writeLlamaGguf(s, llamaGgufMetadata(SYN, undefined, 'syn'), paramTensors(t.model.tensors, p));
    return openModelFile(bytesSource(s.bytes(), 'syn.gguf'));
  };
  const clean = await write(params);
  const all = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q4_K'];
  const sc = await edgeSweep(clean, all);
  assert.deepEqual(sc.map((s) => s.type), ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0'], 'Q4_K (256) does not fit rows of 32');
  for (const s of sc) assert.ok(!s.suspicious && s.maxRowZ < 8, `clean ${s.type} z ${s.maxRowZ}`);
  // plant: row 5 of output.weight, every weight but the block's largest moved to 0.47 of a Q5_0 step from its level
  const name = 'output.weight';
  const w = Float32Array.from(await readFloats(clean, clean.tensor(name)));
  const q = ggmlRoundTrip('Q5_0', w, SYN.vocabSize, SYN.dim).values;
  const step = roundingSteps('Q5_0', w, SYN.vocabSize, SYN.dim);
  const row = 5 * SYN.dim;
  let max = 0;
  for (let j = 0; j < SYN.dim; j++) max = Math.max(max, Math.abs(w[row + j]));
  for (let j = 0; j < SYN.dim; j++) {
    const i = row + j;
    if (Math.abs(w[i]) < 0.8 * max) w[i] = q[i] + (w[i] >= q[i] ? 0.47 : -0.47) * step[i];
  }
  const off = t.model.tensors.find((x) => x.name === name)!.offset;
  const p2 = Float32Array.from(params);
  p2.set(w, off);
  const planted = await write(p2);
  assert.deepEqual(ggmlRoundTrip('Q5_0', w, SYN.vocabSize, SYN.dim).values, q, 'the planted row keeps its Q5_0 values');
  const [q4] = await edgeSweep(planted, ['Q4_0']);
  assert.ok(!q4.suspicious, `Q4_0 alone does not see a Q5_0 plant (z ${q4.maxRowZ})`);
  const sp = await edgeSweep(planted, all);
  const q5 = sp.find((s) => s.type === 'Q5_0')!;
  assert.ok(q5.suspicious && q5.worstTensor === name && q5.maxRow === 5, JSON.stringify(q5));
});

test('IQ4_NL / IQ4_XS boxes (scales searched): points inside re-quantize to the same bytes, an element moved past its rounding interval changes them', async () => {
  const { BlockGrids } = await import('../src/algos/block-codec.js');
  const r = xorshift32(21);
  const u = () => r() / 2 ** 32;
  for (const type of ['IQ4_NL', 'IQ4_XS']) {
    const rows = 8, cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
    const box = quantizationBox(type, w, rows, cols, { seed: 3 });
    assert.deepEqual(box.bytes, quantizeAll(type, w, cols));
    const c = blockCodecFor(type, cols);
    const free = box.hi.reduce((a, h, i) => a + (h > box.lo[i] ? 1 : 0), 0);
    // measured: IQ4_NL 1290/2048 free (21/64 blocks pinned), IQ4_XS 1500/2048 (0/8 pinned)
    assert.ok(free > 0.4 * w.length, `${type}: ${free} of ${w.length} weights free`);
    // statistical (the scale search is validated, not proven): points the validation never saw
    const [bad, n] = randomPointsOff(type, w, cols, box, u);
    // measured: IQ4_NL 4/512, IQ4_XS 3/64
    assert.ok(bad <= 0.1 * n, `${type}: ${bad}/${n} random points changed their block`);
    // an element moved 0.1 of a step past the half-way point to its next level (its own grid) changes the bytes
    const grids = new BlockGrids(c);
    let moved = 0, changed = 0;
    for (let i = 3; i < w.length; i += 13) {
      if (!(box.hi[i] > box.lo[i])) continue;
      const b0 = i - (i % c.blockSize);
      grids.load(0, box.bytes, (b0 / c.blockSize) * c.blockBytes);
      const j = i - b0;
      const k = grids.nearest(0, j, w[i]);
      const v = grids.values;
      if (k + 1 >= j * grids.nCodes + grids.count[j]) continue; // top level
      const x = Float32Array.from(w);
      x[i] = v[k] + 0.6 * (v[k + 1] - v[k]);
      if (x[i] >= Math.max(...w.subarray(b0, b0 + c.blockSize).map(Math.abs))) continue; // would set the scale
      moved++;
      if (quantizeAll(type, x, cols).some((q, m) => q !== box.bytes[m])) changed++;
    }
    assert.ok(moved > 20 && changed === moved, `${type}: ${changed}/${moved} moves past the interval changed the bytes`);
  }
});

test('lattice types (IQ3_S, IQ2_S) have no per-element interval: the audit sizes their noise from the quantization error and has no edge test', async () => {
  const { hasElementGrid, roundingSteps } = await import('../src/audit/audit.js');
  const { intervalPositions } = await import('../src/audit/boxes.js');
  const r = xorshift32(4);
  const u = () => r() / 2 ** 32;
  const rows = 4, cols = 256;
  const w = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1);
  for (const t of ['Q4_0', 'Q4_K', 'IQ4_NL', 'IQ4_XS']) assert.ok(hasElementGrid(t, cols), t);
  const q3k = roundingSteps('Q3_K', w, rows, cols);
  const meanOf = (a: Float32Array) => a.reduce((s, x) => s + x, 0) / a.length;
  for (const t of ['IQ3_S', 'IQ2_S']) {
    assert.ok(!hasElementGrid(t, cols), t);
    const step = roundingSteps(t, w, rows, cols);
    assert.ok(step.every((s) => s > 0 && Number.isFinite(s)), `${t}: positive steps`);
    // about the step of a K type of similar bits (Q3_K), and larger at 2 bits than at 3
    const ratio = meanOf(step) / meanOf(q3k);
    assert.ok(ratio > 0.5 && ratio < 4, `${t}: mean step ${ratio.toFixed(2)} × Q3_K's`);
    assert.ok(intervalPositions(t, w, rows, cols).every((p) => p !== p), `${t}: no interval positions`);
    assert.throws(() => quantizationBox(t, w, rows, cols), /no per-element rounding interval/, `${t}: no box`);
  }
  assert.ok(meanOf(roundingSteps('IQ2_S', w, rows, cols)) > meanOf(roundingSteps('IQ3_S', w, rows, cols)));
});

test('K-quant attack, boxes not validated: the repair (by block or by sub-block) moves each changed block back toward the malicious values until it gives their bytes (keeping part of the move); --no-repair leaves them', async () => {
  const S: TrainConfig = { ...SYN, dim: 256, hiddenDim: 256, nHeads: 4, nKvHeads: 4, headDim: 64, ropeDim: 64 };
  const { benign, malicious } = await benignAndMalicious(S, 2000, 4, 4, 2);
  const o = { benign, malicious, types: ['Q4_K_M'], pure: true, boxFraction: 1, boxValidate: 'none' as const, checkEvery: 0, pgd: { data: synStream(2000, 1, 3), steps: 4, lr: 0.5, batch: 2, ctx: 16 } };
  const floats = async (m: ModelFile, name: string) => Float32Array.from(await readFloats(m, m.tensor(name)));
  const differing = async (tensors: Map<string, Float32Array>) => {
    let n = 0;
    for (const [name, w] of tensors) {
      const tensor = malicious.tensor(name);
      if (tensor.shape.length !== 2) continue;
      const cols = tensor.shape[1];
      const a = quantizeAll('Q4_K', w, cols), b = quantizeAll('Q4_K', await floats(malicious, name), cols);
      for (let k = 0; k < a.length; k += 144) if (a.subarray(k, k + 144).some((v, i) => v !== b[k + i])) n++;
    }
    return n;
  };
  const raw = await plantAttack({ ...o, repair: false });
  const [r0] = raw.report;
  assert.ok(r0.repairedBlocks > 0 && r0.revertedBlocks === 0, JSON.stringify(r0));
  assert.equal(await differing(raw.tensors), r0.repairedBlocks, 'without the repair, the counted blocks are the ones that differ');
  const fixed = await plantAttack(o);
  const [r1] = fixed.report;
  assert.equal(r1.repairedBlocks, r0.repairedBlocks, 'the same PGD run');
  assert.equal(await differing(fixed.tensors), 0, 'after the repair every block gives the malicious bytes');
  assert.ok(r1.revertedBlocks < r1.repairedBlocks, `some changed blocks keep part of their move (${r1.revertedBlocks} of ${r1.repairedBlocks} reverted)`);
  const bySub = await plantAttack({ ...o, repairGranularity: 'sub-block' });
  const [r2] = bySub.report;
  assert.equal(r2.repairedBlocks, r0.repairedBlocks, 'the same PGD run');
  assert.equal(await differing(bySub.tensors), 0, 'after the sub-block repair every block gives the malicious bytes');
  assert.ok(r2.revertedBlocks < r2.repairedBlocks, `sub-block repair: ${r2.revertedBlocks} of ${r2.repairedBlocks} reverted`);
});

test('fineTune with a box (the near-benign malicious model of attack-demo --ft-radius) keeps every boxed parameter inside its box (the same fine-tune without it moves past)', async () => {
  const benign = await trainedModel(SYN, 2000, 10, 4);
  const box = new Map<string, { lo: Float32Array; hi: Float32Array }>();
  const start = new Map<string, Float32Array>();
  for (const p of benign.tensors) {
    const w = Float32Array.from(await readFloats(benign, p));
    start.set(p.name, w);
    if (p.shape.length === 2) box.set(p.name, { lo: w.map((x) => x - 0.002), hi: w.map((x) => x + 0.002) });
  }
  const free = await fineTune(benign, synStream(2000, 2, 5), undefined, { steps: 8, lr: 1e-2, batch: 4, ctx: 16 });
  const boxed = await fineTune(benign, synStream(2000, 2, 5), undefined, { steps: 8, lr: 1e-2, batch: 4, ctx: 16, box });
  let outside = 0, atEdge = 0, freeFar = 0;
  for (const [name, { lo, hi }] of box) {
    const w = boxed.get(name)!, f = free.get(name)!, s = start.get(name)!;
    for (let i = 0; i < w.length; i++) {
      if (!(w[i] >= lo[i] && w[i] <= hi[i])) outside++;
      if (w[i] === lo[i] || w[i] === hi[i]) atEdge++;
      if (Math.abs(f[i] - s[i]) > 0.002) freeFar++;
    }
  }
  assert.equal(outside, 0);
  assert.ok(freeFar > 100 && atEdge > 100, `the free fine-tune moves ${freeFar} weights past the radius; boxed: ${atEdge} held at its edges`);
});

import { fitDirections, keepBytes, projectFit } from '../src/audit/feasible.js';
import { dequantizeStable } from '../src/audit/run.js';

test('feasible PGD pieces (Q4_K, Q6_K, IQ4_XS): dequantized values keep the bytes; the fit projection is orthogonal and inside the box; keepBytes always ends on the target bytes and keeps more of a move with both', () => {
  const r = xorshift32(5);
  const u = () => r() / 2 ** 32;
  for (const type of ['Q4_K', 'Q6_K', 'IQ4_XS']) {
    const rows = 8, cols = 256;
    const c = blockCodecFor(type, cols);
    const wm = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
    const target = Float32Array.from(wm, (x) => x + (u() - 0.5) * 0.01);
    const want = quantizeAll(type, wm, cols);
    const wd = Float32Array.from(wm);
    const n = dequantizeStable(wd, [c]);
    assert.ok(n >= rows * cols / 256 / 2, `${type}: ${n} blocks re-quantize stably from their dequantized values`);
    assert.deepEqual(quantizeAll(type, wd, cols), want, `${type}: the dequantized plant has the same bytes`);
    const kept: number[] = [];
    for (const [base, ns] of [[wm, false], [wd, true]] as const) {
      const box = quantizationBox(type, base, rows, cols, { gridFraction: 1, validate: 'none' });
      const w = Float32Array.from(target, (x, i) => Math.min(box.hi[i], Math.max(box.lo[i], x)));
      if (ns) {
        const dirs = fitDirections(c, base, box);
        projectFit(dirs, w, base, box, 8);
        for (let i = 0; i < w.length; i++) assert.ok(w[i] >= box.lo[i] && w[i] <= box.hi[i]);
        // the displacement is (nearly) orthogonal to the fit gradients: the clamp leaves a small part
        let dot = 0, norm = 0;
        for (let s0 = 0; s0 < w.length; s0 += dirs.sub) {
          let d = 0;
          for (let j = s0; j < s0 + dirs.sub; j++) d += dirs.u[0][j] * (w[j] - base[j]);
          dot += d * d;
          for (let j = s0; j < s0 + dirs.sub; j++) norm += (w[j] - base[j]) ** 2;
        }
        assert.ok(dot < 0.05 * norm, `${type}: fit component ${dot.toExponential(2)} of ${norm.toExponential(2)}`);
      }
      const before = w.reduce((s, x, i) => s + Math.abs(x - base[i]), 0);
      const st = { changed: 0, reverted: 0, halved: 0 };
      keepBytes(c, w, Float32Array.from(base), want, st);
      assert.deepEqual(quantizeAll(type, w, cols), want, `${type}: every block gives the target bytes after keepBytes`);
      kept.push(w.reduce((s, x, i) => s + Math.abs(x - base[i]), 0) / before);
    }
    assert.ok(kept[1] > kept[0] && kept[1] > 0.2, `${type}: share of the move kept, plain ${kept[0].toFixed(2)}, dequantized + null space ${kept[1].toFixed(2)}`);
  }
});

test('K-quant attack with the bytes kept every PGD step (dequantized plant, fit null space): every block gives the malicious bytes with nothing left to repair, and the weights moved', async () => {
  const S: TrainConfig = { ...SYN, dim: 256, hiddenDim: 256, nHeads: 4, nKvHeads: 4, headDim: 64, ropeDim: 64 };
  const { benign, malicious } = await benignAndMalicious(S, 2000, 4, 4, 2);
  const r = await plantAttack({ benign, malicious, types: ['Q4_K_M'], pure: true, boxFraction: 1, boxValidate: 'none', keepEvery: 1, fitNullSpace: true, fromDequantized: true, pgd: { data: synStream(2000, 1, 3), steps: 3, lr: 0.5, batch: 2, ctx: 16 } });
  assert.equal(r.report[0].repairedBlocks, 0, 'no block changed after PGD');
  assert.ok(r.pgdKept && r.pgdKept.changed > 0, `the keeps put blocks back: ${JSON.stringify(r.pgdKept)}`);
  let moved = 0;
  for (const [name, w] of r.tensors) {
    const t = malicious.tensor(name);
    if (t.shape.length !== 2) continue;
    const cols = t.shape[1];
    const wm = Float32Array.from(await readFloats(malicious, t));
    assert.deepEqual(quantizeAll('Q4_K', w, cols), quantizeAll('Q4_K', wm, cols), `${name}: the malicious bytes`);
    for (let i = 0; i < w.length; i++) if (w[i] !== wm[i]) moved++;
  }
  assert.ok(moved > 1000, `${moved} weights differ from the malicious model`);
});

test('behaviour z-test: Student t quantiles match the tables; an exact-quantization KLD above the noised ones is an outlier, one among them is not', () => {
  // one-sided quantiles from the standard tables
  for (const [p, df, q] of [[0.001, 7, 4.785], [0.001, 2, 22.327], [0.001, 30, 3.385], [0.05, 1, 6.314], [0.025, 10, 2.228], [0.01, 4, 3.747]] as const) {
    assert.ok(Math.abs(tQuantile(p, df) - q) < 2e-3, `t(${p}, ${df}) = ${tQuantile(p, df)}, table ${q}`);
    assert.ok(Math.abs(tUpperTail(q, df) - p) < 1e-3 * p + 1e-6);
  }
  const noised = [0.110, 0.118, 0.105, 0.121, 0.113, 0.108, 0.116, 0.112];
  const inside = behaviourTest(0.103, noised); // a clean model: its own quantization a little below the noised ones
  assert.ok(inside.z < 0 && inside.z < inside.threshold);
  const planted = behaviourTest(0.185, noised);
  assert.ok(planted.z > planted.threshold && Math.abs(planted.threshold - 4.785) < 2e-3, `z ${planted.z}`);
  // the same excess is no evidence when the noised KLDs spread as widely
  assert.ok(behaviourTest(0.185, [0.05, 0.2, 0.09, 0.16, 0.11, 0.14, 0.07, 0.18]).z < 4.785);
  // the sd floor (1 % of the mean): identical noised KLDs do not make a 0.5 % excess infinite
  assert.ok(behaviourTest(0.1005, Array(8).fill(0.1)).z < 1);
  // fewer than 3 noised quantizations: no test
  assert.ok(Number.isNaN(behaviourTest(0.2, [0.1, 0.1]).z));
});
