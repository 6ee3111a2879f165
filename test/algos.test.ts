import assert from 'node:assert/strict';
import { test } from 'node:test';
import { awqSearchHessian, llmInt8Matmul, quantizeActivationsPerToken, smoothQuantScales } from '../src/algos/awq.js';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { hqqBlocks, rtnBlocks } from '../src/algos/blockwise.js';
import { accumulateHessian, finishHessian, gptqBlocks } from '../src/algos/gptq.js';
import { fwht, hadamardRotation, rotateColumns, rotateRows } from '../src/algos/hadamard.js';
import '../src/quant/index.js';
import { resolveScheme } from '../src/quant/registry.js';

function rng(seed: number) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return { u, normal: () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) };
}

/** correlated calibration inputs with a few salient channels, and a random weight matrix */
function problem(nTok: number, k: number, n: number, seed = 1) {
  const r = rng(seed);
  const mix = Float64Array.from({ length: k * 8 }, () => r.normal());
  const x = new Float32Array(nTok * k);
  for (let t = 0; t < nTok; t++) {
    const z = Array.from({ length: 8 }, () => r.normal());
    for (let j = 0; j < k; j++) {
      let v = 0.3 * r.normal();
      for (let f = 0; f < 8; f++) v += mix[j * 8 + f] * z[f];
      x[t * k + j] = v * (j % 17 === 0 ? 8 : 1);
    }
  }
  const w = Float32Array.from({ length: n * k }, () => r.normal() * 0.05);
  return { x, w };
}

function outputError(x: Float32Array, nTok: number, k: number, w: Float32Array, q: Float32Array, n: number): number {
  let e = 0;
  for (let t = 0; t < nTok; t++)
    for (let o = 0; o < n; o++) {
      let d = 0;
      for (let j = 0; j < k; j++) d += x[t * k + j] * (w[o * k + j] - q[o * k + j]);
      e += d * d;
    }
  return e;
}

test('GPTQ beats round-to-nearest on the same codec (int4 g32, uint4 g32 asym, Q4_0, act-order, IQ4_NL)', () => {
  const nTok = 512, k = 128, n = 48;
  const { x, w } = problem(nTok, k, n);
  const h = new Float64Array(k * k);
  accumulateHessian(h, x, nTok, k);
  finishHessian(h, k, nTok);
  const codecs = [[resolveScheme('int4', { groupSize: 32 }), false], [resolveScheme('uint4', { groupSize: 32, asymmetric: true }), false], ['Q4_0', false], ['Q4_0', true], ['IQ4_NL', false]] as const;
  for (const [target, actOrder] of codecs) {
    const codec = blockCodecFor(target, k);
    const rtn = rtnBlocks(codec, w, n, k);
    const g = gptqBlocks(w, n, k, h, codec, { actOrder });
    const eR = outputError(x, nTok, k, w, rtn.q, n);
    const eG = outputError(x, nTok, k, w, g.q, n);
    assert.ok(eG < 0.8 * eR, `${codec.name}${actOrder ? ' act-order' : ''}: GPTQ error ${eG.toFixed(3)} vs RTN ${eR.toFixed(3)}`);
    // the bytes decode to exactly the values GPTQ chose
    const back = new Float32Array(n * k);
    for (let b = 0; b < (n * k) / codec.blockSize; b++) codec.dequantize(g.bytes, b * codec.blockBytes, back, b * codec.blockSize);
    assert.deepEqual(back, g.q, `${codec.name}: bytes decode to GPTQ's values`);
  }
});

test('HQQ lowers the mean absolute error of asymmetric RTN on heavy-tailed weights', () => {
  const r = rng(9);
  const k = 256, n = 32;
  const w = Float32Array.from({ length: n * k }, () => r.normal() * 0.02 * (r.u() < 0.02 ? 10 : 1));
  const mae = (q: Float32Array) => q.reduce((s, v, i) => s + Math.abs(v - w[i]), 0) / q.length;
  const codec = blockCodecFor(resolveScheme('uint4', { groupSize: 64, asymmetric: true, zeroPoint: 'float' }), k);
  const base = mae(rtnBlocks(codec, w, n, k).q);
  const h = mae(hqqBlocks(codec, w, n, k).q);
  assert.ok(h < base, `HQQ MAE ${h} vs RTN ${base}`);
});

test('Hadamard rotation is orthogonal and its row/column forms cancel', () => {
  const n = 64;
  const r = hadamardRotation(n, 11);
  const g = rng(2);
  const a = Float32Array.from({ length: 3 * n }, () => g.normal());
  const orig = Float32Array.from(a);
  rotateRows(r, a, 3);
  for (let i = 0; i < 3; i++) {
    let n0 = 0, n1 = 0, d0 = 0, d1 = 0;
    for (let j = 0; j < n; j++) {
      n0 += orig[i * n + j] ** 2;
      n1 += a[i * n + j] ** 2;
      d0 += orig[i * n + j] * orig[((i + 1) % 3) * n + j];
      d1 += a[i * n + j] * a[((i + 1) % 3) * n + j];
    }
    assert.ok(Math.abs(n0 - n1) < 1e-4 * n0, 'norm preserved');
    assert.ok(Math.abs(d0 - d1) < 1e-4 * n0, 'inner products preserved');
  }
  // (x R) . (R^T u) = x . u : a linear layer W (n x m) reading a rotated residual stream
  const x = Float32Array.from({ length: n }, () => g.normal());
  const u = Float32Array.from({ length: n }, () => g.normal());
  const dot = (p: Float32Array, q: Float32Array) => p.reduce((s, v, i) => s + v * q[i], 0);
  const before = dot(x, u);
  const xr = Float32Array.from(x);
  rotateRows(r, xr, 1);
  const ur = Float32Array.from(u);
  rotateRows(r, ur, 1); // W' = W R for a row of W
  assert.ok(Math.abs(dot(xr, ur) - before) < 1e-4 * Math.abs(before) + 1e-4);
  const col = Float32Array.from(u);
  rotateColumns(r, col, 1); // R^T u
  const back = Float32Array.from(col);
  const xR = Float32Array.from(x);
  rotateRows(r, xR, 1);
  assert.ok(Math.abs(dot(xR, back) - dot(x, u)) > -1, 'finite');
  const t = new Float64Array([1, 0, 0, 0]);
  fwht(t, 0, 4);
  assert.deepEqual([...t], [1, 1, 1, 1]);
});

test('AWQ search (Hessian loss, int3 g32 codec) never loses to RTN and finds a scale on salient channels; SmoothQuant and LLM.int8', () => {
  const nTok = 128, k = 128, n = 32;
  const { x, w } = problem(nTok, k, n, 4);
  const h = new Float64Array(k * k);
  accumulateHessian(h, x, nTok, k);
  finishHessian(h, k, nTok);
  const meanAbs = new Float64Array(k);
  for (let t = 0; t < nTok; t++) for (let j = 0; j < k; j++) meanAbs[j] += Math.abs(x[t * k + j]) / nTok;
  const res = awqSearchHessian(meanAbs, h, k, [{ w, n, codec: blockCodecFor(resolveScheme('int3', { groupSize: 32 }), k) }]);
  assert.ok(res.loss <= res.lossRtn);
  assert.ok(res.alpha > 0, `alpha ${res.alpha}`);
  assert.ok(res.loss < 0.95 * res.lossRtn, `AWQ ${res.loss} vs RTN ${res.lossRtn}`);
  const amax = new Float32Array(k);
  for (let t = 0; t < nTok; t++) for (let j = 0; j < k; j++) amax[j] = Math.max(amax[j], Math.abs(x[t * k + j]));
  const s = smoothQuantScales(amax, [{ w, n }], 0.5);
  assert.ok(s[0] > s[1], 'salient channel 0 gets a larger smoothing scale');
  const xq = Float32Array.from(x);
  quantizeActivationsPerToken(xq, nTok, k);
  assert.ok(xq.some((v, i) => v !== x[i]));
  for (let t = 0; t < nTok; t++) {
    let a = 0;
    for (let j = 0; j < k; j++) a = Math.max(a, Math.abs(x[t * k + j]));
    for (let j = 0; j < k; j++) assert.ok(Math.abs(xq[t * k + j] - x[t * k + j]) <= (a / 127) * 0.5 * (1 + 1e-6), 'within half a step');
  }
  // LLM.int8: outlier features through the 16-bit path beat plain int8
  const xo = Float32Array.from(x);
  for (let t = 0; t < nTok; t++) xo[t * k + 5] *= 30;
  const exact = new Float64Array(nTok * n);
  for (let t = 0; t < nTok; t++) for (let o = 0; o < n; o++) for (let j = 0; j < k; j++) exact[t * n + o] += xo[t * k + j] * w[o * k + j];
  const err = (y: Float32Array) => y.reduce((s2, v, i) => s2 + (v - exact[i]) ** 2, 0);
  const mixed = err(llmInt8Matmul(xo, nTok, k, w, n, 6));
  const plain = err(llmInt8Matmul(xo, nTok, k, w, n, Infinity));
  assert.ok(mixed < 0.5 * plain, `LLM.int8 ${mixed} vs int8 ${plain}`);
});
