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
import { autoRoundBlocks } from '../src/algos/autoround.js';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { rtnBlocks } from '../src/algos/blockwise.js';
import { gptqBlocks } from '../src/algos/gptq.js';
import { defineRecipe, llamaRecipe, type Algorithm, type Recipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { evaluateAgainst, evaluateBase } from '../src/pipeline/evaluate.js';
import { quantize } from '../src/pipeline/quantize.js';
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

async function quantizeWith(recipe: Recipe, calib = true): Promise<{ bytes: Uint8Array; labels: string[] }> {
  const src = fileSource(GGUF);
  try {
    const sink = memorySink();
    const r = await quantize(await openModelFile(src), recipe, sink, { output: 'gguf', calibText: calib ? CALIB : undefined });
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
