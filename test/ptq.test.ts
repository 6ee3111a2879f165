/**
 * Calibrated PTQ end to end on stories260K, and the kernels under it.
 *  - kernels: WebAssembly syrk/gemm/lazy update/Cholesky/triangular inverse against the scalar
 *    references, within the bounds stated in src/kernels/gptq.ts;
 *  - block codecs: every quantizable GGML type (and the per-block schemes) has a probed per-element
 *    grid whose chosen codes decode exactly; the nearest-level RTN equals the codec's own;
 *  - stories260K: GPTQ (Q4_0 GGUF, int4 g32 safetensors), AWQ and rotation+GPTQ beat RTN's KLD and HQQ
 *    beats asymmetric RTN on held-out TinyStories text; same seed -> same bytes; the rotated float model
 *    computes the original's logits (bound 1e-4 x max |logit|); llama.cpp (node-llama-cpp) loads the
 *    GPTQ GGUF and reproduces lowbit's logits on it and on the rotated F32 GGUF.
 * Calibration: 2048 tokens in sequences of 128 from the head of tinystories-valid-head.txt; evaluation:
 * 6 chunks of 128 tokens from a disjoint later part. Measured values are printed as diagnostics.
 */
import { IQ_NEEDS_IMPORTANCE } from '../src/quant/ggml/iq-quant.js';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { blockCodecFor, BlockGrids, codeLayout, setCodes } from '../src/algos/block-codec.js';
import { defineRecipe, llamaRecipe, schemeRecipe, type Algorithm, type Recipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import {
  choleskyRef, clipSearchKernel, clipSearchRef, gemmABt, gemmABtRef, gptqWorkspace, hessianAccumulator, inverseCholeskyUpper, lazyUpdateRef, setGptqColumnLoopFast, syrkLowerRef, trilInverseRef,
} from '../src/kernels/gptq.js';
import { gptqBlocksWithFactor, gptqFactor } from '../src/algos/gptq.js';
import { actQuantLinear, llmInt8Linear } from '../src/model/act-quant.js';
import { linear } from '../src/model/matmul.js';
import { transposePadRef } from '../src/kernels/matmul.js';
import type { GptqWorkers } from '../src/pipeline/gptq-parts.js';
import { evaluateAgainst, evaluateBase, type BaseEvaluation } from '../src/pipeline/evaluate.js';
import { quantize } from '../src/pipeline/quantize.js';
import { ggmlCodecs } from '../src/quant/ggml/index.js';
import { resolveScheme, schemes } from '../src/quant/registry.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';
import { assertRefused } from './cli-refusal.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DATA = path.join(ROOT, 'data');
const GGUF = path.join(DATA, 'stories260K.gguf');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-ptq-'));
const TEXT = fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8');
const CALIB = TEXT.slice(0, 60000);
const HELD_OUT = TEXT.slice(500000, 540000);
const CALIB_OPTS = { calibTokens: 2048, calibCtx: 128, seed: 1 };

/** the matmul engine with Node's worker threads installed */
async function nodeEngine() {
  const { MatmulEngine } = await import('../src/kernels/matmul.js');
  const { useNodeThreads } = await import('../src/node.js');
  useNodeThreads();
  const engine = MatmulEngine.get();
  assert.ok(engine, 'the matmul engine is available');
  return engine;
}

function rng(seed: number) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

test('X^T X on the matmul engine (any thread count) agrees with syrkLowerRef within the stated bound, bit-identical across threads', async () => {
  const engine = await nodeEngine();
  const normal = rng(11);
  const results: Float64Array[] = [];
  // k = 301: several column blocks, odd edges; 5 adds of up to 1000 rows cross the gathering size
  const k = 301;
  const adds = [512, 37, 512, 512, 1000].map((n) => Float32Array.from({ length: n * k }, normal));
  for (const threads of [1, 2]) {
    engine.setThreads(threads);
    const acc = hessianAccumulator(k, 1000, engine);
    const ref = new Float64Array(k * k);
    for (const x of adds) {
      acc.add(x, x.length / k);
      syrkLowerRef(ref, x, x.length / k, k);
    }
    const fast = acc.result();
    const terms = adds.reduce((a, x) => a + x.length / k, 0);
    for (let i = 0; i < k; i++)
      for (let j = 0; j <= i; j++) {
        let bound = 0;
        for (const x of adds) for (let t = 0; t < x.length / k; t++) bound += Math.abs(x[t * k + i] * x[t * k + j]);
        bound *= terms * 2 ** -22;
        assert.ok(Math.abs(fast[i * k + j] - ref[i * k + j]) <= bound, `engine X^T X [${i},${j}] (${threads} threads): ${fast[i * k + j]} vs ${ref[i * k + j]}`);
      }
    for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) assert.equal(fast[i * k + j], 0, 'upper triangle stays zero');
    results.push(fast);
  }
  assert.deepEqual(results[1], results[0], 'same bytes on 1 and 2 threads');
  engine.setThreads(1);
});

test('X^T X layout: the kernel transposePad moves x into transposePadRef exactly (edges, zero padding)', async () => {
  const engine = await nodeEngine();
  const normal = rng(17);
  // T and k multiples of 4 (the 4 x 4 blocks only) and not (the element-by-element edges, the padding)
  // (517 x 601 and 2048 x 130: large enough to be split between the threads, rows per chunk past the edge)
  for (const threads of [1, 2])
    for (const [nTok, k] of [[8, 12], [13, 7], [517, 301], [2048, 64], [3, 5], [517, 601], [2048, 130]] as const) {
      engine.setThreads(threads);
      const x = Float32Array.from({ length: nTok * k }, normal);
      const ld = (nTok + 3) & ~3;
      // garbage in the output first: the padding must be written, not assumed
      engine.transposeForTest(Float32Array.from({ length: ld * k }, () => NaN), ld, k);
      const got = engine.transposeForTest(x, nTok, k);
      const want = transposePadRef(x, nTok, k, ld);
      let bad = 0;
      for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) bad++;
      assert.equal(bad, 0, `${nTok} x ${k}, ${threads} threads: ${bad} of ${want.length} values differ`);
    }
  engine.setThreads(1);
});

test('gramUpper is gramLower transposed, bit for bit, on 1 and 2 threads (the accumulator reads its faster layout)', async () => {
  const engine = await nodeEngine();
  const normal = rng(13);
  // k = 1031 (over 1024: bands of 252 rows, the last partial) and 301 (bands of 126); odd token counts
  for (const [k, nTok] of [[301, 1001], [1031, 517]] as const) {
    const x = Float32Array.from({ length: nTok * k }, normal);
    for (const threads of [1, 2]) {
      engine.setThreads(threads);
      const lower = Float32Array.from(engine.gramLower(x, nTok, k));
      const upper = engine.gramUpper(x, nTok, k);
      let bad = 0;
      for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) if (!Object.is(upper[j * k + i], lower[i * k + j])) bad++;
      assert.equal(bad, 0, `k ${k}, ${nTok} rows, ${threads} threads: ${bad} elements of the upper triangle differ from the lower one's`);
    }
  }
  engine.setThreads(1);
});

test('gramAccumulate adds gramUpper\'s products into an f64 upper triangle, bit for bit, on 1 and 2 threads', async () => {
  const engine = await nodeEngine();
  const normal = rng(19);
  // k = 1031 (bands of 252, k % 3 = 2), 301 (bands of 126, k % 3 = 1), 12; odd token counts (padding), two adds
  for (const [k, nTok] of [[301, 1001], [1031, 517], [12, 5]] as const) {
    const xs = [0, 1].map(() => Float32Array.from({ length: nTok * k }, normal));
    const owner = {};
    const slot = engine.allocF32(2 * k * k, owner)!;
    const h = new Float64Array(slot.array.buffer, slot.at, k * k);
    for (const threads of [1, 2]) {
      engine.setThreads(threads);
      // the reference: gramUpper's upper triangle added element by element in f64
      const want = new Float64Array(k * k).fill(0.25);
      h.fill(0.25);
      for (const x of xs) {
        const g = engine.gramUpper(x, nTok, k);
        for (let i = 0; i < k; i++) for (let j = i; j < k; j++) want[i * k + j] += g[i * k + j];
        engine.gramAccumulate(x, nTok, k, slot.at);
      }
      let bad = 0;
      for (let i = 0; i < k * k; i++) if (!Object.is(h[i], want[i])) bad++;
      assert.equal(bad, 0, `k ${k}, ${nTok} rows, ${threads} threads: ${bad} elements differ (the lower triangle must stay as it was)`);
    }
    // the packed layout: transposePadRef's rows in triples, 4 terms at a time; rows past k zero
    const got = engine.transposePackedForTest(xs[0], nTok, k);
    const ld = (nTok + 3) & ~3;
    const ref = transposePadRef(xs[0], nTok, k, ld);
    let bad = 0;
    for (let i = 0; i < Math.ceil(k / 3) * 3; i++)
      for (let t = 0; t < ld; t++) if (!Object.is(got[Math.floor(i / 3) * 3 * ld + (t >> 2) * 12 + (i % 3) * 4 + (t & 3)], i < k ? ref[i * ld + t] : 0)) bad++;
    assert.equal(bad, 0, `packed Xt, k ${k}: ${bad} values misplaced`);
  }
  engine.setThreads(1);
});

test('GPTQ factor on the matmul engine threads: the one-thread kernels bit for bit on 1 and 2 threads, the reference within 1e-12', async () => {
  const engine = await nodeEngine();
  const normal = rng(21);
  // k = 203: 4 panels of 64 (the last partial), odd trailing rows, column chunks of 16 and a partial one;
  // block structure gives exact zeros in the factor (the kernels skip them in the inverse)
  const k = 203;
  const n = k + 9;
  const g = Float64Array.from({ length: k * n }, normal);
  const h = new Float64Array(k * k);
  for (let i = 0; i < k; i++)
    for (let j = 0; j <= i; j++) {
      let s = 0;
      if ((i >> 6) === (j >> 6) || (i + j) % 3 === 0) for (let p = 0; p < n; p++) s += g[i * n + p] * g[j * n + p];
      h[i * k + j] = h[j * k + i] = s;
    }
  for (let i = 0; i < k; i++) h[i * k + i] += n; // diagonally dominant: positive definite
  const ws = gptqWorkspace(0, k, 1);
  assert.equal(ws.inverseCholesky(h), -1);
  const one = Float64Array.from(ws.u);
  for (const threads of [1, 2]) {
    engine.setThreads(threads);
    const { bad, u } = inverseCholeskyUpper(h, k, engine);
    assert.equal(bad, -1);
    assert.deepEqual(u, one, `engine factor on ${threads} thread(s) = the one-thread kernels`);
  }
  engine.setThreads(1);
  // against the scalar references
  const m = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) m[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
  assert.equal(choleskyRef(m, k), -1);
  const x = new Float64Array(k * k);
  trilInverseRef(m, x, k);
  let maxU = 0;
  for (let i = 0; i < k * k; i++) maxU = Math.max(maxU, Math.abs(x[i]));
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) assert.ok(Math.abs(one[i * k + j] - x[(k - 1 - i) * k + (k - 1 - j)]) <= 1e-12 * maxU, `U[${i},${j}]`);
  // a matrix that is not positive definite: the same failing pivot on both paths
  const bad = Float64Array.from(h);
  bad[(k - 1 - 100) * k + (k - 1 - 100)] = -1;
  assert.equal(inverseCholeskyUpper(bad, k, engine).bad, gptqWorkspace(0, k, 1).inverseCholesky(bad));
  assert.equal(inverseCholeskyUpper(bad, k, engine).bad, k - 1 - 100);
});

test('WebAssembly kernels agree with the scalar references within their stated bounds', () => {
  const normal = rng(7);
  // syrk: nTok = 37 rows of k = 23 (odd sizes exercise the edges)
  for (const [nTok, k] of [[37, 23], [64, 64], [5, 172]]) {
    const x = Float32Array.from({ length: nTok * k }, normal);
    const ref = new Float64Array(k * k);
    syrkLowerRef(ref, x, nTok, k);
    const acc = hessianAccumulator(k, 64);
    acc.add(x, nTok);
    const fast = acc.result();
    for (let i = 0; i < k; i++)
      for (let j = 0; j <= i; j++) {
        let bound = 0;
        for (let t = 0; t < nTok; t++) bound += Math.abs(x[t * k + i] * x[t * k + j]);
        bound *= nTok * 2 ** -22;
        assert.ok(Math.abs(fast[i * k + j] - ref[i * k + j]) <= bound, `syrk ${nTok}x${k} [${i},${j}]: ${fast[i * k + j]} vs ${ref[i * k + j]}`);
      }
  }
  // gemm: out = x w^T
  for (const [m, n, k] of [[7, 9, 12], [16, 33, 64], [3, 2, 172]]) {
    const a = Float32Array.from({ length: m * k }, normal);
    const b = Float32Array.from({ length: n * k }, normal);
    const ref = new Float32Array(m * n);
    const fast = new Float32Array(m * n);
    gemmABtRef(ref, a, b, m, n, k);
    gemmABt(fast, a, b, m, k, n);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let bound = 0;
        for (let p = 0; p < k; p++) bound += Math.abs(a[i * k + p] * b[j * k + p]);
        assert.ok(Math.abs(fast[i * n + j] - ref[i * n + j]) <= k * 2 ** -22 * bound + 1e-30, `gemm ${m}x${n}x${k}`);
      }
  }
  // f64 kernels: workspace (WebAssembly) against the references
  const k = 45;
  const n = 11;
  const B = 8;
  const h = new Float64Array(k * k);
  const g = Float64Array.from({ length: k * k }, normal);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) for (let p = 0; p < k; p++) h[i * k + j] += g[i * k + p] * g[j * k + p];
  for (let i = 0; i < k; i++) h[i * k + i] += 1;
  const ws = gptqWorkspace(n, k, B);
  assert.equal(ws.inverseCholesky(h), -1);
  const m = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) m[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
  assert.equal(choleskyRef(m, k), -1);
  const x = new Float64Array(k * k);
  trilInverseRef(m, x, k);
  let maxU = 0;
  for (let i = 0; i < k * k; i++) maxU = Math.max(maxU, Math.abs(x[i]));
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) assert.ok(Math.abs(ws.u[i * k + j] - x[(k - 1 - i) * k + (k - 1 - j)]) <= 1e-12 * maxU, `U[${i},${j}]`);
  // U^T U = H^-1: (U^T U) H = I
  for (let i = 0; i < k; i += 7)
    for (let j = 0; j < k; j += 5) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        let uu = 0;
        for (let q = 0; q <= Math.min(i, p); q++) uu += ws.u[q * k + i] * ws.u[q * k + p];
        s += uu * h[p * k + j];
      }
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-9, `(U^T U H)[${i},${j}] = ${s}`);
    }
  for (let i = 0; i < n * k; i++) ws.w[i] = normal();
  for (let i = 0; i < n * B; i++) ws.err[i] = normal();
  const w0 = Float64Array.from(ws.w);
  ws.lazyUpdate(B, 8, 16);
  lazyUpdateRef(w0, n, k, ws.err, B, B, ws.u, 8, 16);
  for (let i = 0; i < n * k; i++) assert.ok(Math.abs(ws.w[i] - w0[i]) <= 1e-12 * (1 + Math.abs(w0[i])), `lazy update ${i}`);
});

test('GPTQ clip search in WebAssembly: its TypeScript reference bit for bit (halves, clamps, ties between candidates)', () => {
  const ks = clipSearchKernel(128, 12);
  assert.ok(ks, 'the WebAssembly clip search is available (else nothing is compared)');
  const rnd = rng(77);
  const n = 128;
  const x = new Float32Array(n);
  const w = new Float32Array(n);
  const cand = new Float64Array(24);
  let nonZero = 0;
  for (let t = 0; t < 400; t++) {
    const asym = t % 2 === 1;
    const s0 = 2 ** -(4 + (t % 7));
    for (let j = 0; j < n; j++) {
      // some x exactly half a step from two levels (Math.round's halves up, not to even), some far out (clamps)
      const m = Math.round(rnd() * 6);
      x[j] = j % 5 === 0 ? Math.fround((m + 0.5) * s0) : Math.fround(rnd() * s0 * (j % 17 === 3 ? 20 : 4));
      w[j] = j % 11 === 0 ? 0 : Math.fround(Math.abs(rnd()) + 0.1);
    }
    const nCand = 1 + (t % 12);
    for (let c = 0; c < nCand; c++) {
      // candidate 1 repeats candidate 0 sometimes: equal errors keep the first
      cand[2 * c] = c === 1 && t % 3 === 0 ? cand[0] : s0 * (1 - 0.05 * ((c * 7 + t) % 11));
      cand[2 * c + 1] = asym ? 8 - ((c + t) % 3) : 0;
    }
    const [lo, hi] = asym ? [0, 15] : [-8, 7];
    const ref = clipSearchRef(x, w, n, cand, nCand, lo, hi);
    ks.x.set(x);
    ks.w.set(w);
    ks.cand.set(cand.subarray(0, 2 * nCand));
    assert.equal(ks.run(n, nCand, lo, hi), ref, `case ${t}`);
    if (ref !== 0) nonZero++;
  }
  assert.ok(nonZero > 100, `the cases pick other candidates than the first (${nonZero})`);
});

// IQ1/IQ2/IQ3 lattice codebooks share code bits between elements: refused by block-codec (documented there)
test('GPTQ column loop in WebAssembly: the TypeScript loop bit for bit (bytes, values; loss to rounding)', () => {
  // rows of different scales (some groups clip), a Hessian with correlated inputs, one dead input
  const k = 256;
  const n = 37;
  const rnd = rng(31);
  const x = Float32Array.from({ length: 300 * k }, () => rnd());
  for (let t = 0; t < 300; t++) x[t * k + 5] = 0;
  for (let t = 0; t < 300; t++) x[t * k + 7] = x[t * k + 6] * 0.9 + x[t * k + 7] * 0.1;
  const h = new Float64Array(k * k);
  syrkLowerRef(h, x, 300, k);
  for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) h[j * k + i] = h[i * k + j];
  const w = Float32Array.from({ length: n * k }, (_, i) => rnd() * (1 + (Math.floor(i / k) % 5)) * 0.02);
  w.fill(0, 3 * k + 128, 3 * k + 160); // a zero group in the g32 schemes: a degenerate grid (scale 0)
  assert.ok(gptqWorkspace(n, k, 128, { len: 128, nCodes: 16 }).columns, 'the WebAssembly column loop is available (else this test compares the TypeScript loop with itself)');
  let compared = 0;
  const cases = [['int4_g128', 128], ['int4_g32', 128], ['int4_g32', 16], ['uint4_g128_asym', 128], ['Q4_0', 128], ['Q4_K', 128], ['Q6_K', 64]] as const;
  for (const [target, blockSize] of cases) {
    const codec = target.startsWith('Q') ? blockCodecFor(target, k) : blockCodecFor(resolveScheme(target), k);
    const diag = Float32Array.from({ length: k }, (_, i) => h[i * k + i]);
    const opts = { blockSize, clipWeights: codec.usesImportance ? undefined : diag, importance: codec.usesImportance ? diag : undefined };
    const f = gptqFactor(h, k, opts);
    setGptqColumnLoopFast(false);
    let ref;
    try {
      ref = gptqBlocksWithFactor(w, n, k, f, codec, opts);
    } finally {
      setGptqColumnLoopFast(true);
    }
    const fast = gptqBlocksWithFactor(w, n, k, f, codec, opts);
    assert.ok(Buffer.from(fast.bytes).equals(Buffer.from(ref.bytes)), `${codec.name} block ${blockSize}: bytes differ`);
    assert.ok(Buffer.from(fast.q.buffer).equals(Buffer.from(ref.q.buffer)), `${codec.name} block ${blockSize}: values differ`);
    assert.ok(Math.abs(fast.stats.loss - ref.stats.loss) <= 1e-12 * ref.stats.loss, `${codec.name}: loss ${fast.stats.loss} vs ${ref.stats.loss}`);
    compared++;
  }
  assert.equal(compared, cases.length);
});

test('every block codec has a per-element grid whose codes decode exactly', () => {
  const normal = rng(3);
  const targets = [
    ...ggmlCodecs.filter((c) => c.quantize && !['F32', 'F16', 'BF16', 'TQ1_0'].includes(c.type.name) && !IQ_NEEDS_IMPORTANCE.has(c.type.name) && !/^IQ[123]_/.test(c.type.name)).map((c) => c.type.name as string | ReturnType<typeof resolveScheme>),
    ...schemes().filter((s) => s.family !== 'ggml' && s.family !== 'olive' && !s.tensorScoped && s.id !== 'fp8_e4m3_ch' && s.id !== 'int8_ch'),
    resolveScheme('int3', { groupSize: 32 }),
    resolveScheme('int2', { groupSize: 32 }),
  ];
  for (const t of targets) {
    const c = blockCodecFor(t, 256);
    const grids = new BlockGrids(c, 1);
    const x = Float32Array.from({ length: c.blockSize }, () => 0.02 * normal());
    const bytes = new Uint8Array(c.blockBytes);
    c.quantize(x, 0, bytes, 0);
    const rtn = new Float32Array(c.blockSize);
    c.dequantize(bytes, 0, rtn, 0);
    grids.load(0, bytes, 0);
    const codes = new Uint16Array(c.blockSize);
    const chosen = new Float32Array(c.blockSize);
    // the nearest level is never farther than the codec's own choice (llama.cpp rounds x / d before d
    // is rounded to f16, so its choice is occasionally not the nearest stored value)
    for (let j = 0; j < c.blockSize; j++) {
      const i = grids.nearest(0, j, x[j]);
      assert.ok(Math.abs(x[j] - grids.values[i]) <= Math.abs(x[j] - rtn[j]), `${c.name}: element ${j}: nearest ${grids.values[i]}, codec ${rtn[j]}, x ${x[j]}`);
      assert.ok(grids.values.subarray(j * grids.nCodes, j * grids.nCodes + grids.count[j]).includes(rtn[j]), `${c.name}: the codec's value is on the grid`);
    }
    // arbitrary codes (random levels) decode exactly
    for (let j = 0; j < c.blockSize; j++) {
      const i = j * grids.nCodes + Math.floor(((j * 7919) % 1000) / 1000 * grids.count[j]);
      codes[j] = grids.codes[i];
      chosen[j] = grids.values[i];
    }
    setCodes(grids.layout, bytes, 0, codes, c.blockSize);
    const back = new Float32Array(c.blockSize);
    c.dequantize(bytes, 0, back, 0);
    assert.deepEqual(back, chosen, `${c.name}: chosen codes decode exactly`);
  }
  assert.throws(() => codeLayout(blockCodecFor('TQ1_0', 256)), /do not have independent codes/);
  assert.throws(() => blockCodecFor(resolveScheme('nvfp4'), 64), /shares scales across rows/);
  assert.throws(() => blockCodecFor(resolveScheme('olive4_g32'), 64), /outlier-victim pairs have no per-element grid/);
});

// ---------------------------------------------------------------------------------------------------
// stories260K

async function quantizeWith(recipe: Recipe, kind: 'gguf' | 'safetensors', calib = true, gptqWorkers?: GptqWorkers): Promise<{ bytes: Uint8Array; notes: string[]; rotationMaxLogitDiff?: number }> {
  const src = fileSource(GGUF);
  try {
    const m = await openModelFile(src);
    const sink = memorySink();
    const r = await quantize(m, recipe, sink, { output: kind, calibText: calib ? CALIB : undefined, gptqWorkers });
    return { bytes: sink.bytes(), notes: r.ptq?.notes ?? [], rotationMaxLogitDiff: r.ptq?.rotationMaxLogitDiff };
  } finally {
    src.close();
  }
}

const withAlgo = (r: Recipe, algorithm: Algorithm, ptq: Record<string, unknown> = {}) =>
  defineRecipe({ ...JSON.parse(JSON.stringify(r)), algorithm, ptq: { ...CALIB_OPTS, ...ptq } });

let baseEval: BaseEvaluation | undefined;
async function kld(bytes: Uint8Array, label: string, t: { diagnostic(s: string): void }): Promise<number> {
  baseEval ??= await evaluateBase(fileSource(GGUF), HELD_OUT, { ctx: 128, chunks: 6 });
  const r = await evaluateAgainst(bytesSource(bytes, label), baseEval, { ctx: 128, chunks: 6 });
  t.diagnostic(`${label}: KLD ${r.kld!.mean.toFixed(5)}, PPL ${r.ppl.toFixed(3)} (base ${r.pplBase!.toFixed(3)}), top-1 ${(100 * r.top1!).toFixed(1)} %`);
  return r.kld!.mean;
}

const written = new Map<string, Uint8Array>();

test('GPTQ split over worker threads by rows: the same bytes as on one thread (GGML type, scheme, act-order)', async () => {
  const { GptqPool } = await import('../src/cli/gptq-pool.js');
  const pool = new GptqPool(2, 0); // every matrix split, even stories260K's small ones
  // the jobs the workers got: every matrix must really be split (a scheme made from options, int4 with a
  // group size, has an id of its own -- int4_g32_f16 -- that the workers must be able to rebuild)
  let jobs = 0;
  const counted: GptqWorkers = { count: pool.count, minWeights: pool.minWeights, run: (j) => (jobs++, pool.run(j)) };
  try {
    for (const [recipe, kind, ptq] of [
      [llamaRecipe('Q4_0'), 'gguf', {}],
      [schemeRecipe('int4', { groupSize: 32 }), 'safetensors', { actOrder: true }],
      [schemeRecipe('int4', { groupSize: 32 }), 'safetensors', {}],
      [schemeRecipe('uint3', { groupSize: 32, asym: true }), 'safetensors', {}],
    ] as const) {
      const r = withAlgo(recipe, 'gptq', ptq);
      const one = await quantizeWith(r, kind);
      jobs = 0;
      const split = await quantizeWith(r, kind, true, counted);
      assert.ok(jobs >= 2 * 6 * 5, `${r.name ?? kind}: ${jobs} row ranges went to the workers (2 per matrix expected)`);
      assert.ok(Buffer.from(one.bytes).equals(Buffer.from(split.bytes)), `${r.name ?? kind}: bytes differ when split over threads`);
    }
  } finally {
    await pool.close();
  }
});

test('stories260K: GPTQ, AWQ and rotation+GPTQ beat RTN, HQQ beats asymmetric RTN; same seed, same bytes', async (t) => {
  const q4 = llamaRecipe('Q4_0');
  const rtn = await quantizeWith(q4, 'gguf', false);
  const gptq = await quantizeWith(withAlgo(q4, 'gptq'), 'gguf');
  assert.deepEqual((await quantizeWith(withAlgo(q4, 'gptq'), 'gguf')).bytes, gptq.bytes, 'GPTQ: same seed -> same bytes');
  const otherSeed = await quantizeWith(withAlgo(q4, 'gptq', { seed: 2 }), 'gguf');
  assert.notDeepEqual(otherSeed.bytes, gptq.bytes, 'another seed picks other calibration windows');
  const awq = await quantizeWith(withAlgo(q4, 'awq'), 'gguf');
  const rot = await quantizeWith(withAlgo(q4, 'gptq', { rotate: 'hadamard' }), 'gguf');
  written.set('gptq', gptq.bytes);
  const kRtn = await kld(rtn.bytes, 'Q4_0 RTN', t);
  const kGptq = await kld(gptq.bytes, 'Q4_0 GPTQ', t);
  const kAwq = await kld(awq.bytes, 'Q4_0 AWQ', t);
  const kRot = await kld(rot.bytes, 'Q4_0 rotation+GPTQ', t);
  assert.ok(kGptq < 0.85 * kRtn, `GPTQ ${kGptq} vs RTN ${kRtn}`);
  assert.ok(kAwq < kRtn, `AWQ ${kAwq} vs RTN ${kRtn}`);
  assert.ok(kRot < kRtn, `rotation+GPTQ ${kRot} vs RTN ${kRtn}`);
  // generic scheme to safetensors
  const int4 = schemeRecipe('int4', { groupSize: 32 });
  const kIntRtn = await kld((await quantizeWith(int4, 'safetensors', false)).bytes, 'int4 g32 RTN', t);
  const kIntGptq = await kld((await quantizeWith(withAlgo(int4, 'gptq'), 'safetensors')).bytes, 'int4 g32 GPTQ', t);
  assert.ok(kIntGptq < 0.85 * kIntRtn, `int4 g32 GPTQ ${kIntGptq} vs RTN ${kIntRtn}`);
  // HQQ (calibration-free) against round-to-nearest on the same asymmetric scheme (float minimum). At
  // 4 bits the two are within noise on this model (see docs/ptq.md); at 3 bits HQQ's zero-points help.
  const u3 = schemeRecipe('int3', { groupSize: 64, asym: true, zeroPoint: 'float' });
  const kAsym = await kld((await quantizeWith(u3, 'safetensors', false)).bytes, 'uint3 g64 fzp RTN', t);
  const kHqq = await kld((await quantizeWith(withAlgo(u3, 'hqq'), 'safetensors', false)).bytes, 'uint3 g64 fzp HQQ', t);
  assert.ok(kHqq < kAsym, `HQQ ${kHqq} vs RTN ${kAsym}`);
});

test('rotation: the rotated float model computes the original logits; written GGUF runs unchanged', async () => {
  const r = await quantizeWith(withAlgo(llamaRecipe('F32'), 'rtn', { rotate: 'hadamard' }), 'gguf', false);
  assert.ok(r.rotationMaxLogitDiff !== undefined && r.rotationMaxLogitDiff < 1e-3, `max |Δlogit| ${r.rotationMaxLogitDiff}`);
  written.set('rotated', r.bytes);
  const a = await loadModel(fileSource(GGUF), { contextLength: 64 });
  const b = await loadModel(bytesSource(r.bytes, 'rotated.gguf'), { contextLength: 64 });
  const prompt = [1, 403, 407, 261, 378, 285, 271, 434, 320];
  const la = a.model.forward(prompt, 0, 0);
  const lb = b.model.forward(prompt, 0, 0);
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < la.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(la[i] - lb[i]));
    maxAbs = Math.max(maxAbs, Math.abs(la[i]));
  }
  assert.ok(maxDiff <= 1e-4 * maxAbs, `rotated GGUF max |Δlogit| ${maxDiff} (max |logit| ${maxAbs})`);
  // every norm gain was folded into the next linear layer
  const m = await openModelFile(bytesSource(r.bytes, 'rotated.gguf'));
  const norm = new Float32Array((await m.read(m.tensor('blk.0.attn_norm.weight'))).slice().buffer);
  assert.ok(norm.every((v) => v === 1));
});

test('llama.cpp loads the GPTQ GGUF and the rotated GGUF and agrees with lowbit on their logits', async (t) => {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') {
    t.skip(loaded);
    return;
  }
  const llama = loaded.llama;
  if (!written.has('gptq')) written.set('gptq', (await quantizeWith(withAlgo(llamaRecipe('Q4_0'), 'gptq'), 'gguf')).bytes);
  if (!written.has('rotated')) written.set('rotated', (await quantizeWith(withAlgo(llamaRecipe('F32'), 'rtn', { rotate: 'hadamard' }), 'gguf', false)).bytes);
  const prompt = [1, 403, 407, 261, 378, 285, 271, 434, 320];
  // Q4_0: llama.cpp multiplies with 8-bit activations (Q8_0 vec_dot), lowbit in f32: bound 0.5, same argmax.
  // F32 (rotated): the same graph in f32, summation order aside: bound 1e-4. (llama.cpp's flash attention
  // rounds to f16 inside; it is off here, as it would move even the unrotated model's logits by ~0.02.)
  for (const [label, bound] of [['gptq', 0.5], ['rotated', 1e-4]] as const) {
    const file = path.join(tmp, `${label}.gguf`);
    fs.writeFileSync(file, written.get(label)!);
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    let theirs: Float64Array;
    try {
      const ctx = await model.createContext({ contextSize: 64, threads: 1, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
      const seq = ctx.getSequence();
      const res = await seq.controlledEvaluate(prompt.map((tk, i) => (i === prompt.length - 1 ? [tk, { generateNext: { logits: true } }] : tk)));
      theirs = new Float64Array(512);
      for (const [tok, v] of res[prompt.length - 1].next.logits as Map<number, number>) theirs[tok] = v;
      await ctx.dispose();
    } finally {
      await model.dispose();
    }
    const ours = (await loadModel(fileSource(file), { contextLength: 64 })).model.forward(prompt, 0, prompt.length - 1);
    let maxDiff = 0;
    let a = 0;
    let b = 0;
    for (let i = 0; i < 512; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(ours[i] - theirs[i]));
      if (ours[i] > ours[a]) a = i;
      if (theirs[i] > theirs[b]) b = i;
    }
    t.diagnostic(`${label}: max |Δlogit| lowbit vs llama.cpp = ${maxDiff.toExponential(3)}`);
    assert.ok(maxDiff < bound, `${label}: max |Δlogit| ${maxDiff}`);
    assert.equal(a, b, `${label}: argmax differs`);
  }
});

test('activation quantization modes: A8 << A4; SmoothQuant is an equivalence; LLM.int8() stays close', async (t) => {
  const prompt = Int32Array.from({ length: 64 }, (_, i) => [1, 403, 407, 261, 378, 285, 271, 434, 320, 261, 297][i % 11]);
  const ref = Float32Array.from((await loadModel(fileSource(GGUF), { contextLength: 64 })).model.forward(prompt, 0, 0));
  const rms = async (src: ReturnType<typeof bytesSource> | ReturnType<typeof fileSource>, linear: ReturnType<typeof actQuantLinear>) => {
    const m = await loadModel(src, { contextLength: 64 });
    m.model.hooks.linear = linear;
    const y = m.model.forward(prompt, 0, 0);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += (y[i] - ref[i]) ** 2;
    return Math.sqrt(s / y.length);
  };
  const a8 = await rms(fileSource(GGUF), actQuantLinear(8));
  const a4 = await rms(fileSource(GGUF), actQuantLinear(4));
  const i8 = await rms(fileSource(GGUF), llmInt8Linear(6));
  // SmoothQuant's scales are an equivalence transform of the float model (folded into the norms)
  const smoothed = await quantizeWith(withAlgo(llamaRecipe('F32'), 'rtn', { smooth: 0.5, calibTokens: 512 }), 'gguf');
  const sf = await rms(bytesSource(smoothed.bytes, 'smoothed.gguf'), (out, x, w, n) => linear(out, x, w, n));
  const s8 = await rms(bytesSource(smoothed.bytes, 'smoothed.gguf'), actQuantLinear(8));
  t.diagnostic(`RMS Δlogit: A8 ${a8.toFixed(4)}, A4 ${a4.toFixed(4)}, SmoothQuant(0.5) float ${sf.toExponential(2)}, +A8 ${s8.toFixed(4)}, LLM.int8(6) ${i8.toFixed(4)}`);
  assert.ok(a8 > 0 && a4 > 4 * a8, `A8 ${a8}, A4 ${a4}`);
  assert.ok(sf < 1e-4, `smoothed float model RMS Δlogit ${sf}`);
  assert.ok(s8 < 2 * a8, `SmoothQuant+A8 ${s8} vs A8 ${a8}`);
  assert.ok(i8 > 0 && i8 < 2 * a8, `LLM.int8 ${i8}`);
});

test('quantize CLI: calibrated algorithms fail clearly without what they need', () => {
  const out = path.join(tmp, 'bad.gguf');
  const cases: [string[], RegExp][] = [
    [['--type', 'Q4_0', '--algo', 'gptq'], /needs calibration text: --calib FILE/],
    [['--type', 'Q4_0', '--algo', 'hqq'], /HQQ optimizes a zero-point: .* Q4_0, which has none/],
    [['--type', 'Q4_0', '--algo', 'gptq', '--calib', path.join(tmp, 'none.txt')], /calibration file .* does not exist/],
    [['--type', 'Q4_0', '--algo', 'awq', '--calib', GGUF, '--calib-tokens', '100', '--calib-ctx', '128'], /less than one sequence/],
  ];
  for (const [args, re] of cases) assertRefused(BIN, ['quantize', GGUF, out, ...args], re, out);
});
