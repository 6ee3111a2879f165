/**
 * The learned PTQ methods (issue 21): AutoRound alone and after GPTQ.
 *  - on a synthetic layer with correlated inputs, for GGML K-quants, IQ4_XS, Q4_0 and a lowbit scheme:
 *    the exact bytes decode to the chosen values (checked inside), AutoRound's output error
 *    tr(E H E^T) is below RTN's, and after GPTQ it is never above GPTQ's (the flips are accepted only
 *    when they lower it);
 *  - stories260K end to end: `autoround` and `gptq+autoround` through quantize(); same seed, same
 *    bytes; the report names the algorithm; KLD on held-out text beats RTN;
 *  - bad input: a learned method without calibration text is one line, exit 2.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { affineGrid, autoRoundBlocks, bracketBlock, newLevels } from '../src/algos/autoround.js';
import { autoRoundWork } from '../src/kernels/autoround.js';
import { wasmVariant } from '../src/kernels/wasm.js';
import { autoRoundBlocksParallel, type GptqWorkers } from '../src/pipeline/gptq-parts.js';
import { BlockGrids, blockCodecFor } from '../src/algos/block-codec.js';
import { rtnBlocks } from '../src/algos/blockwise.js';
import { gptqBlocks } from '../src/algos/gptq.js';
import { defineRecipe, llamaRecipe, type Algorithm, type Recipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { evaluateAgainst, evaluateBase } from '../src/pipeline/evaluate.js';
import { quantize } from '../src/pipeline/quantize.js';
import { setBlockTargetsOnEveryWindow } from '../src/pipeline/passes/layer-driver.js';
import { resolveScheme } from '../src/quant/registry.js';
import { assertRefused } from './cli-refusal.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const TEXT = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8');
const CALIB = TEXT.slice(0, 60000);
const HELD_OUT = TEXT.slice(500000, 540000);

function rng(seed: number) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return { u, n: () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) };
}

/** a layer: w (n x k) and H = 2 X^T X / T of inputs with a shared component and a few large channels */
function layer(n: number, k: number, seed: number) {
  const r = rng(seed);
  const w = Float32Array.from({ length: n * k }, () => r.n() * 0.05);
  const T = 512;
  const mix = Float32Array.from({ length: k }, (_, i) => 0.2 + (i % 17 === 0 ? 5 : 1) * r.u());
  const x = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const z = r.n();
    for (let i = 0; i < k; i++) x[t * k + i] = mix[i] * (r.n() + 0.7 * z);
  }
  const h = new Float64Array(k * k);
  for (let t = 0; t < T; t++)
    for (let i = 0; i < k; i++) {
      const a = (2 * x[t * k + i]) / T;
      for (let j = 0; j < k; j++) h[i * k + j] += a * x[t * k + j];
    }
  const loss = (q: Float32Array) => {
    let L = 0;
    const e = new Float64Array(k);
    for (let row = 0; row < n; row++) {
      for (let i = 0; i < k; i++) e[i] = q[row * k + i] - w[row * k + i];
      for (let i = 0; i < k; i++) {
        let a = 0;
        for (let j = 0; j < k; j++) a += h[i * k + j] * e[j];
        L += e[i] * a;
      }
    }
    return L;
  };
  const diag = Float32Array.from({ length: k }, (_, i) => h[i * k + i]);
  return { w, h, loss, diag };
}

test('AutoRound: exact codec bytes, output error below RTN; after GPTQ never above GPTQ (K-quants, IQ4_XS, Q4_0, int3 g32)', (t) => {
  const n = 8;
  const k = 256;
  const { w, h, loss, diag } = layer(n, k, 3);
  for (const target of ['Q3_K', 'Q2_K', 'Q4_K', 'IQ4_XS', 'Q4_0', resolveScheme('int3', { groupSize: 32 })] as const) {
    const c = blockCodecFor(target, k);
    const imp = c.usesImportance ? diag : undefined;
    const lRtn = loss(rtnBlocks(c, w, n, k, imp).q);
    const ar = autoRoundBlocks(c, w, n, k, h, { iters: 60, importance: imp });
    // the returned values are the bytes' values
    const back = new Float32Array(n * k);
    for (let b = 0; b < (n * k) / c.blockSize; b++) c.dequantize(ar.bytes, b * c.blockBytes, back, b * c.blockSize);
    assert.deepEqual(back, ar.q, `${c.name}: bytes decode to AutoRound's values`);
    const lAr = loss(ar.q);
    assert.ok(Math.abs(lAr - ar.stats.loss) <= 1e-3 * lAr, `${c.name}: tracked loss ${ar.stats.loss} vs exact ${lAr}`);
    assert.ok(lAr < 0.95 * lRtn, `${c.name}: AutoRound ${lAr} vs RTN ${lRtn}`);
    const g = gptqBlocks(w, n, k, h, c, { importance: imp, clipWeights: diag });
    const lG = loss(g.q);
    const both = autoRoundBlocks(c, w, n, k, h, { iters: 60, importance: imp, init: g });
    const lBoth = loss(both.q);
    assert.ok(lBoth <= lG * (1 + 1e-6), `${c.name}: gptq+autoround ${lBoth} vs GPTQ ${lG}`);
    t.diagnostic(`${c.name}: output error RTN ${lRtn.toFixed(3)}, GPTQ ${lG.toFixed(3)}, AutoRound ${lAr.toFixed(3)}, GPTQ+AutoRound ${lBoth.toFixed(3)}`);
  }
  assert.throws(() => autoRoundBlocks(blockCodecFor('Q4_K', 256), w.subarray(0, 128 * n), n, 128, h), /not a multiple of the block size 256/);
});

async function quantizeWith(recipe: Recipe, calib = true, gptqWorkers?: GptqWorkers): Promise<{ bytes: Uint8Array; labels: string[] }> {
  const src = fileSource(GGUF);
  try {
    const sink = memorySink();
    const r = await quantize(await openModelFile(src), recipe, sink, { output: 'gguf', calibText: calib ? CALIB : undefined, gptqWorkers });
    return { bytes: sink.bytes(), labels: Object.values(r.ptq?.algorithms ?? {}) };
  } finally {
    src.close();
  }
}

const withAlgo = (r: Recipe, algorithm: Algorithm, ptq: Record<string, unknown> = {}) =>
  defineRecipe({ ...JSON.parse(JSON.stringify(r)), algorithm, ptq: { calibTokens: 1024, calibCtx: 128, seed: 1, autoroundIters: 20, ...ptq } });

test('stories260K: autoround and gptq+autoround end to end beat RTN; same seed, same bytes', async (t) => {
  const q4 = llamaRecipe('Q4_0');
  const base = await evaluateBase(fileSource(GGUF), HELD_OUT, { ctx: 128, chunks: 4 });
  const kld = async (bytes: Uint8Array, label: string) => {
    const r = await evaluateAgainst(bytesSource(bytes, label), base, { ctx: 128, chunks: 4 });
    t.diagnostic(`${label}: KLD ${r.kld!.mean.toFixed(5)}`);
    return r.kld!.mean;
  };
  const kRtn = await kld((await quantizeWith(q4, false)).bytes, 'Q4_0 RTN');
  const ar = await quantizeWith(withAlgo(q4, 'autoround'));
  assert.ok(ar.labels.includes('autoround (block)'), `labels ${ar.labels}`);
  assert.deepEqual((await quantizeWith(withAlgo(q4, 'autoround'))).bytes, ar.bytes, 'same seed -> same bytes');
  const both = await quantizeWith(withAlgo(q4, 'gptq+autoround'));
  assert.ok(both.labels.includes('gptq+autoround (block)'), `labels ${both.labels}`);
  const kAr = await kld(ar.bytes, 'Q4_0 AutoRound');
  const kBoth = await kld(both.bytes, 'Q4_0 GPTQ+AutoRound');
  assert.ok(kAr < 0.9 * kRtn, `AutoRound ${kAr} vs RTN ${kRtn}`);
  assert.ok(kBoth < 0.9 * kRtn, `GPTQ+AutoRound ${kBoth} vs RTN ${kRtn}`);
});

test('AutoRound block objective: the float stream carried on the windows the block stages read only gives the bytes of every window', async () => {
  // 64 windows of 64 tokens, 4 block steps: each layer reads the 8 judged windows and at most 4 more, and the
  // float stream at layer l is computed on the windows of layers l, l + 1, ... only
  const recipe = withAlgo(llamaRecipe('Q4_0'), 'autoround', { calibTokens: 4096, calibCtx: 64, autoroundIters: 10, autoroundBlockIters: 4 });
  const few = await quantizeWith(recipe);
  assert.ok(few.labels.includes('autoround (block)'), `labels ${few.labels}`);
  setBlockTargetsOnEveryWindow(true);
  try {
    assert.deepEqual((await quantizeWith(recipe)).bytes, few.bytes, 'the same bytes with the float stream on every window');
  } finally {
    setBlockTargetsOnEveryWindow(false);
  }
});

test('quantize CLI: a learned method without calibration text, or its option without it: one line, exit 2', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-learned-'));
  const out = path.join(tmp, 'bad.gguf');
  const cases: [string[], RegExp][] = [
    [['--type', 'Q4_0', '--algo', 'autoround'], /autoround needs calibration text: --calib FILE/],
    [['--type', 'Q4_0', '--algo', 'gptq+autoround'], /needs calibration text: --calib FILE/],
    [['--type', 'Q4_0', '--algo', 'gptq', '--autoround-iters', '10'], /--autoround-iters applies to --algo autoround/],
    [['--type', 'Q4_0', '--algo', 'autoround', '--autoround-iters', '-1'], /autoround-iters/],
  ];
  for (const [args, re] of cases) assertRefused(BIN, ['quantize', GGUF, out, ...args], re, out);
});

// bs 33: the sweep's groups of four elements end short of a block (element-by-element tails); bs 32 with
// small steps: most groups commit four at once (no taken flip), some run element by element (a taken flip)
for (const [bs, step0] of [[33, 0.2], [32, 0.02]] as const)
test(`AutoRound kernels: the WebAssembly sweep, G = E H and delta^T H delta agree bit for bit with the references (blocks of ${bs}, first step ${step0})`, () => {
  const n = 7; // one group of four rows and three single rows in gradRows
  const k = 132; // not a multiple of 8: the lanes' tail
  const fast = autoRoundWork(n, k, bs, true);
  const ref = autoRoundWork(n, k, bs, false);
  assert.equal(ref.fast, false);
  if (wasmVariant() !== 'off') assert.equal(fast.fast, true, 'the WebAssembly workspace loads');
  const { h } = layer(1, k, 12);
  for (const x of [fast, ref]) {
    const r2 = rng(5);
    x.H.set(h);
    // two dead input channels (their rows and columns of H zero): their elements' gradient stays 0 (they never step)
    for (const c of [5, 70]) for (let j = 0; j < k; j++) x.H[c * k + j] = x.H[j * k + c] = 0;
    for (let i = 0; i < k; i++) x.hd[i] = x.H[i * k + i];
    for (let e = 0; e < n * k; e++) {
      const lo = r2.n() * 0.1;
      x.lo[e] = lo;
      x.hi[e] = lo + (e % 29 === 0 ? 0 : 0.02 + 0.05 * r2.u()); // some elements with one level
      x.t[e] = r2.u();
      x.v[e] = 0;
      x.ch[e] = x.t[e] >= 0.5 ? 1 : 0;
      x.E[e] = (x.ch[e] ? x.hi[e] : x.lo[e]) - (x.lo[e] + x.t[e] * (x.hi[e] - x.lo[e]));
    }
  }
  fast.gradRows(0, n);
  ref.gradRows(0, n);
  assert.deepEqual(fast.G, ref.G, 'G = E H');
  fast.gradRows(2, 3);
  ref.gradRows(2, 3);
  assert.deepEqual(fast.G, ref.G, 'one row alone: the same values as with the others');
  let flipped = 0;
  for (let it = 0; it < 12; it++) {
    const before = Uint8Array.from(ref.ch);
    for (let row = 0; row < n; row++) {
      const step = step0 * (1 - it / 12);
      const a = fast.sweepRow(row, step, it % 2 === 0);
      const b = ref.sweepRow(row, step, it % 2 === 0);
      assert.equal(a, b, `sweep ${it} row ${row}: loss change`);
    }
    for (let e = 0; e < n * k; e++) if (before[e] !== ref.ch[e]) flipped++;
    assert.deepEqual(fast.ch, ref.ch, `sweep ${it}: choices`);
    assert.deepEqual(fast.v, ref.v, `sweep ${it}: offsets`);
    assert.deepEqual(fast.G, ref.G, `sweep ${it}: gradient`);
    assert.deepEqual(fast.gAlpha, ref.gAlpha, `sweep ${it}: clip gradient`);
  }
  assert.ok(flipped > 20, `the sweeps flipped ${flipped} elements`);
  for (const c0 of [0, bs, 3 * bs]) {
    for (const x of [fast, ref]) for (let j = 0; j < bs; j++) x.delta[j] = j % 5 === 3 ? 0 : (((j * 7919) % 13) - 6) * 0.01;
    assert.equal(fast.quadBlock(c0), ref.quadBlock(c0), `delta^T H delta at ${c0}`);
    assert.ok(ref.quadBlock(c0) > 0);
  }
  // fewer non-zero deltas than a group of four rows, and counts past it (the kernel takes four rows at a time)
  for (const nz of [0, 1, 2, 3, 4, 5, 6, 7, 9]) {
    for (const x of [fast, ref]) {
      x.delta.fill(0);
      for (let m = 0; m < nz; m++) x.delta[(m * 37 + 5) % bs] = ((m % 3) - 1.3) * 0.02;
    }
    assert.equal(fast.quadBlock(bs), ref.quadBlock(bs), `delta^T H delta with ${nz} non-zero deltas`);
  }
});

test('AutoRound: an affine grid\'s levels (bracketBlock) are the ones BlockGrids lists (int/uint schemes, with and without a start)', () => {
  const k = 256;
  const r = rng(9);
  for (const target of [resolveScheme('int4', { groupSize: 128 }), resolveScheme('uint4', { groupSize: 64, asymmetric: true }), resolveScheme('int3', { groupSize: 32 })]) {
    const c = blockCodecFor(target, k);
    assert.ok(c.affine, `${c.name} has an affine grid`);
    const generic = { ...c, affine: undefined };
    const bs = c.blockSize;
    const nBlocks = 12;
    const w = Float32Array.from({ length: nBlocks * bs }, (_, i) => (i < bs ? 0 : r.n() * (i % 7 === 0 ? 0.3 : 0.05))); // block 0 all zero: scale 0
    const bytes = new Uint8Array(nBlocks * c.blockBytes);
    const around = new Float32Array(w.length);
    for (let b = 0; b < nBlocks; b++) {
      c.quantize(w, b * bs, bytes, b * c.blockBytes);
      if (b % 3 === 1) c.clipHeader!(w, b * bs, 0.8, bytes, b * c.blockBytes); // clipped: elements past the grid's ends
      c.dequantize(bytes, b * c.blockBytes, around, b * bs);
    }
    for (let i = 0; i < w.length; i += 5) w[i] = around[i]; // elements on a level (ties of the bracket)
    for (const start of [undefined, around]) {
      const fast = newLevels(w.length);
      const ref = newLevels(w.length);
      for (let b = 0; b < nBlocks; b++) {
        bracketBlock(new BlockGrids(c), w, b, bytes, b * c.blockBytes, fast, b * bs, start);
        bracketBlock(new BlockGrids(generic), w, b, bytes, b * c.blockBytes, ref, b * bs, start);
      }
      for (const key of ['lo', 'hi', 'loC', 'hiC', 't'] as const) assert.deepEqual(fast[key], ref[key], `${c.name}${start ? ' around a start' : ''}: ${key}`);
    }
    // the WebAssembly bracket (per-linear stage: no start) into the element arrays and into a block's
    // candidate levels, regrid's delta and sum 2 delta G, and taking a candidate, against the TypeScript
    const work = autoRoundWork(1, w.length, bs, true);
    const aw = work.affine;
    if (wasmVariant() === 'off') continue;
    assert.ok(aw, 'the WebAssembly workspace has the affine kernels');
    const ref = newLevels(w.length);
    aw.W.set(w);
    let kernelBlocks = 0;
    const r2 = rng(3);
    for (let b = 0; b < nBlocks; b++) {
      const xo = b * bs;
      const grid = affineGrid(c, new BlockGrids(c).nCodes, bytes, b * c.blockBytes);
      if (!grid.n) continue; // block 0: scale 0, BlockGrids lists its levels
      kernelBlocks++;
      aw.gv.set(grid.gv.subarray(0, grid.n));
      aw.gc.set(grid.gc.subarray(0, grid.n));
      aw.bracket(xo, grid.n, false);
      bracketBlock(new BlockGrids(c), w, b, bytes, b * c.blockBytes, ref, xo);
      const lv: ReturnType<typeof newLevels> = { lo: work.lo, hi: work.hi, loC: aw.loC, hiC: aw.hiC, t: work.t };
      for (const key of ['lo', 'hi', 'loC', 'hiC', 't'] as const) assert.deepEqual(lv[key].subarray(xo, xo + bs), ref[key].subarray(xo, xo + bs), `${c.name} block ${b} (WebAssembly): ${key}`);
      // a candidate grid (the block clipped) into cl
      const cand = new Uint8Array(c.blockBytes);
      c.clipHeader!(w, xo, 0.7 + 0.05 * b, cand, 0);
      const cg = affineGrid(c, new BlockGrids(c).nCodes, cand, 0);
      if (!cg.n) continue;
      aw.gv.set(cg.gv.subarray(0, cg.n));
      aw.gc.set(cg.gc.subarray(0, cg.n));
      aw.bracket(xo, cg.n, true);
      const cref = newLevels(bs);
      bracketBlock(new BlockGrids(c), w.subarray(xo, xo + bs), 0, cand, 0, cref, 0);
      for (const key of ['lo', 'hi', 'loC', 'hiC', 't'] as const) assert.deepEqual(aw.cl[key], cref[key], `${c.name} block ${b} candidate (WebAssembly): ${key}`);
      for (let j = 0; j < bs; j++) {
        work.v[xo + j] = (r2.u() - 0.5) * (j % 9 === 0 ? 0 : 1);
        work.ch[xo + j] = r2.u() < 0.5 ? 1 : 0;
        work.G[xo + j] = r2.n() * (j % 11 === 0 ? 0 : 1);
      }
      const dRef = new Float32Array(bs);
      let dlRef = 0;
      for (let j = 0; j < bs; j++) {
        const e = xo + j;
        dRef[j] = (cref.t[j] + work.v[e] >= 0.5 ? cref.hi[j] : cref.lo[j]) - (work.ch[e] ? work.hi[e] : work.lo[e]);
        dlRef += 2 * dRef[j] * work.G[e];
      }
      assert.equal(aw.regridDelta(xo), dlRef, `${c.name} block ${b}: regrid's sum 2 delta G`);
      assert.deepEqual(work.delta, dRef, `${c.name} block ${b}: regrid's delta`);
      const chRef = Array.from({ length: bs }, (_, j) => (cref.t[j] + work.v[xo + j] >= 0.5 ? 1 : 0));
      aw.take(xo);
      for (const key of ['lo', 'hi', 'loC', 'hiC', 't'] as const) assert.deepEqual(lv[key].subarray(xo, xo + bs), cref[key], `${c.name} block ${b} taken: ${key}`);
      assert.deepEqual([...work.ch.subarray(xo, xo + bs)], chRef, `${c.name} block ${b} taken: choices`);
    }
    assert.ok(kernelBlocks >= nBlocks - 1, `${c.name}: ${kernelBlocks} blocks on the kernel`);
  }
});

test('AutoRound: the same bytes with the WebAssembly kernels or the references, and with the rows split (any codec, after GPTQ)', () => {
  const n = 9;
  const k = 256;
  const { w, h, diag } = layer(n, k, 4);
  // int/uint schemes: the start's clip ratios ranked by GPTQ's clip search kernel (fast) or the snap loop (reference)
  for (const target of ['Q3_K', 'IQ4_XS', resolveScheme('int3', { groupSize: 32 }), resolveScheme('int4', { groupSize: 128 }), resolveScheme('uint4', { groupSize: 64, asymmetric: true })] as const) {
    const c = blockCodecFor(target, k);
    const imp = c.usesImportance ? diag : undefined;
    const g = gptqBlocks(w, n, k, h, c, { importance: imp });
    for (const init of [undefined, g]) {
      const o = { iters: 24, importance: imp, init };
      const f = autoRoundBlocks(c, w, n, k, h, o);
      const ref = autoRoundBlocks(c, w, n, k, h, { ...o, fast: false });
      const label = `${c.name}${init ? ' after GPTQ' : ''}`;
      assert.deepEqual(f.bytes, ref.bytes, `${label}: WebAssembly vs reference`);
      assert.ok(f.stats.changed > 0, `${label}: AutoRound changed nothing`);
      const rb = (c.blockBytes * k) / c.blockSize;
      const parts = [0, 4, 5, 9].slice(1).map((r1, i, a) => {
        const r0 = i ? a[i - 1] : 0;
        const sub = init && { bytes: init.bytes.subarray(r0 * rb, r1 * rb), q: init.q.subarray(r0 * k, r1 * k) };
        return autoRoundBlocks(c, w.subarray(r0 * k, r1 * k), r1 - r0, k, h, { ...o, init: sub }).bytes;
      });
      assert.deepEqual(Uint8Array.from(parts.flatMap((p) => [...p])), f.bytes, `${label}: rows 0-4, 4-5, 5-9 apart vs together`);
    }
  }
});

test('AutoRound split over worker threads: the same bytes as on one thread (per linear and end to end)', async () => {
  const { GptqPool } = await import('../src/cli/gptq-pool.js');
  const pool = new GptqPool(1, 0); // 2 threads, every matrix split
  try {
    const n = 24;
    const k = 256;
    const { w, h, diag } = layer(n, k, 5);
    const c = blockCodecFor('Q3_K', k);
    const one = await autoRoundBlocksParallel(w, n, k, h, c, 'ggml:Q3_K', { iters: 20, importance: diag }, undefined);
    const two = await autoRoundBlocksParallel(w, n, k, h, c, 'ggml:Q3_K', { iters: 20, importance: diag }, pool);
    assert.deepEqual(two.bytes, one.bytes, 'per linear');
    assert.deepEqual(two.q, one.q);
    assert.ok(Math.abs(two.stats.loss - one.stats.loss) <= 1e-9 * one.stats.loss, `loss ${two.stats.loss} vs ${one.stats.loss}`);
    for (const [recipe, algorithm, objective] of [
      [llamaRecipe('Q4_0'), 'autoround', 'linear'],
      [llamaRecipe('Q4_0'), 'gptq+autoround', 'block'],
    ] as const) {
      const r = withAlgo(recipe, algorithm, { autoroundObjective: objective, autoroundIters: 8 });
      const a = await quantizeWith(r);
      const b = await quantizeWith(r, true, pool);
      assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), `${algorithm} (${objective}): bytes differ when split over threads`);
    }
  } finally {
    await pool.close();
  }
});
