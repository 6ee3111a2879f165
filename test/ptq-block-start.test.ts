/**
 * The block objective's set-up (src/pipeline/block-round.ts), against its references:
 *  - roundingStart on affine grids (WebAssembly startAffine, in chunks) gives the levels, codes, offsets
 *    and choices of the TypeScript loop (bracketBlock around the start, chooseStart) bit for bit:
 *    several chunks with a short last one, a block size that does not divide the chunk, blocks of zero
 *    scale (no affine grid: the loop's path), clipped blocks, weights on levels, starts on either side;
 *  - BlockRunner keeps each weight's transpose over the windows of one keepTransposes (the parameters'
 *    views are new arrays on every call) and the outputs are those of the plain forward.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeChoices } from '../src/algos/autoround.js';
import { BlockGrids, blockCodecFor } from '../src/algos/block-codec.js';
import { setAutoRoundKernelsFast, startChunksKernel } from '../src/kernels/autoround.js';
import { wasmVariant } from '../src/kernels/wasm.js';
import type { ModelConfig } from '../src/model/family.js';
import { BlockRunner, roundingStart } from '../src/pipeline/block-round.js';
import { resolveScheme } from '../src/quant/registry.js';

function rng(seed: number) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return { u, n: () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) };
}

test('roundingStart: the WebAssembly start on affine grids is the TypeScript loop\'s, bit for bit (chunks, zero-scale blocks, clipped blocks, starts on either side)', () => {
  if (wasmVariant() === 'off') return;
  const chunk = startChunksKernel(true)!.chunk;
  const r = rng(5);
  for (const target of [resolveScheme('int4', { groupSize: 128 }), resolveScheme('uint4', { groupSize: 64, asymmetric: true }), resolveScheme('int3', { groupSize: 32 }), resolveScheme('int4', { groupSize: 96 })]) {
    const c = blockCodecFor(target, 384);
    assert.ok(c.affine, `${c.name} has an affine grid`);
    const bs = c.blockSize;
    // a little over two chunks: the last one short
    const nBlocks = Math.ceil((2 * chunk + 5 * bs) / bs);
    const N = nBlocks * bs;
    const w = Float32Array.from({ length: N }, (_, i) => r.n() * (i % 7 === 0 ? 0.3 : 0.05));
    const zero = [0, Math.floor(chunk / bs) + 1, nBlocks - 1]; // all zero: scale 0, no affine grid
    for (const b of zero) w.fill(0, b * bs, (b + 1) * bs);
    const bytes = new Uint8Array(nBlocks * c.blockBytes);
    const q = new Float32Array(N);
    for (let b = 0; b < nBlocks; b++) {
      c.quantize(w, b * bs, bytes, b * c.blockBytes);
      if (b % 3 === 1) c.clipHeader!(w, b * bs, 0.8, bytes, b * c.blockBytes); // clipped: elements past the grid's ends
      c.dequantize(bytes, b * c.blockBytes, q, b * bs);
    }
    for (let i = 0; i < N; i += 5) w[i] = q[i]; // weights on a level
    // a start that is not round to nearest: some elements on the neighbouring level (GPTQ's choices)
    const grids = new BlockGrids(c);
    let moved = 0;
    for (let b = 0; b < nBlocks; b++) {
      if (zero.includes(b) || b % 2 === 0) continue;
      grids.load(0, bytes, b * c.blockBytes);
      for (let j = 0; j < bs; j += 3) {
        const e = b * bs + j;
        const i = grids.nearest(0, j, q[e]);
        const base = j * grids.nCodes;
        const k = Math.min(base + grids.count[j] - 1, Math.max(base, i + (r.u() < 0.5 ? 1 : -1)));
        if (grids.values[k] !== q[e]) moved++;
        q[e] = grids.values[k];
      }
    }
    assert.ok(moved > 100, `${c.name}: the start has elements off round to nearest (${moved})`);
    const start = { bytes, q };
    setAutoRoundKernelsFast(false);
    const ref = roundingStart(c, w, start);
    setAutoRoundKernelsFast(true);
    const fast = roundingStart(c, w, start);
    for (const key of ['lo', 'hi', 'loC', 'hiC', 't'] as const) assert.deepEqual(fast.lv[key], ref.lv[key], `${c.name}: ${key}`);
    assert.deepEqual(fast.v, ref.v, `${c.name}: offsets`);
    assert.deepEqual(fast.ch, ref.ch, `${c.name}: choices`);
    let hi = 0;
    for (let e = 0; e < N; e++) hi += ref.ch[e];
    assert.ok(hi > N / 10 && hi < N - N / 10, `${c.name}: starts on both levels (${hi} of ${N} on hi)`);
    // into step arrays (the block stage's): the same
    const into = { lo: new Float32Array(N), hi: new Float32Array(N), t: new Float32Array(N), v: new Float32Array(N), ch: new Uint8Array(N), loC: new Uint16Array(N), hiC: new Uint16Array(N), startCh: new Uint8Array(N), bestCh: new Uint8Array(N) };
    roundingStart(c, w, start, into);
    assert.deepEqual(into.t, ref.lv.t, `${c.name}: into the step arrays`);
    assert.deepEqual(into.v, ref.v, `${c.name}: offsets into the step arrays`);
  }
});

test('BlockRunner: one transpose per weight over the windows of keepTransposes, outputs as the plain forward', () => {
  const config: ModelConfig = { dim: 32, hiddenDim: 64, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 1, seqLen: 8, headDim: 8, normEps: 1e-5, ropeTheta: 10000, ropeDim: 8, ropeStyle: 'normal' };
  const ctx = 8;
  const nSeq = 3;
  const r = rng(11);
  const { dim, hiddenDim: h } = config;
  const shapes: Record<string, number> = { attn_norm: dim, ffn_norm: dim, attn_q: dim * dim, attn_k: (dim / 2) * dim, attn_v: (dim / 2) * dim, attn_output: dim * dim, ffn_gate: h * dim, ffn_up: h * dim, ffn_down: dim * h };
  const w = new Map(Object.entries(shapes).map(([n, size]) => [n, Float32Array.from({ length: size }, () => (size === dim ? 1 + 0.1 * r.n() : r.n() / Math.sqrt(dim)))]));
  const x = Float32Array.from({ length: nSeq * ctx * dim }, () => r.n());
  const runner = new BlockRunner(config, ctx);
  runner.load((n) => w.get(n)!);
  const plain = runner.outputs(x);
  const be = runner.model.be;
  const transpose = be.transpose.bind(be);
  let calls = 0;
  be.transpose = (...a) => {
    calls++;
    transpose(...a);
  };
  const kept = runner.keepTransposes(() => runner.outputs(x));
  assert.equal(calls, 7, 'each of the 7 linears transposed once for 3 windows');
  assert.deepEqual(kept, plain);
  // new weights (load): transposed again, and the outputs follow them
  for (const v of w.values()) for (let i = 0; i < v.length; i++) v[i] *= 0.5;
  runner.load((n) => w.get(n)!);
  calls = 0;
  const again = runner.keepTransposes(() => runner.outputs(x));
  assert.equal(calls, 7);
  assert.deepEqual(again, runner.outputs(x));
  assert.notDeepEqual(again, kept);
});

test('writeChoices: each block\'s chosen codes and values (mask-picked) are the plain loop\'s, and the codec decodes them', () => {
  const r = rng(3);
  for (const target of [resolveScheme('int4', { groupSize: 128 }), resolveScheme('uint4', { groupSize: 64, asymmetric: true })]) {
    const c = blockCodecFor(target, 256);
    const bs = c.blockSize;
    const nBlocks = 40;
    const N = nBlocks * bs;
    const w = Float32Array.from({ length: N }, () => r.n() * 0.05);
    const bytes = new Uint8Array(nBlocks * c.blockBytes);
    const q = new Float32Array(N);
    for (let b = 0; b < nBlocks; b++) {
      c.quantize(w, b * bs, bytes, b * c.blockBytes);
      c.dequantize(bytes, b * c.blockBytes, q, b * bs);
    }
    const s = roundingStart(c, w, { bytes, q });
    const ch = Uint8Array.from({ length: N }, () => (r.u() < 0.5 ? 1 : 0));
    const got = Uint8Array.from(bytes);
    const values = writeChoices(c, s.grids, got, s.lv, ch, nBlocks);
    // the plain loop: the chosen level's value, and its code written through the codec's own quantizer of those values
    const want = Float32Array.from({ length: N }, (_, e) => (ch[e] ? s.lv.hi[e] : s.lv.lo[e]));
    assert.deepEqual(values, want, `${c.name}: values`);
    const back = new Float32Array(N);
    for (let b = 0; b < nBlocks; b++) c.dequantize(got, b * c.blockBytes, back, b * bs);
    assert.deepEqual(back, want, `${c.name}: the bytes decode to the chosen values`);
    let moved = 0;
    for (let e = 0; e < N; e++) if (want[e] !== q[e]) moved++;
    assert.ok(moved > N / 10, `${c.name}: choices off the start (${moved})`);
    // a value the codec cannot give back: refused
    const bad = { ...s.lv, hi: Float32Array.from(s.lv.hi) };
    const e = ch.indexOf(1) + bs;
    bad.hi[ch.indexOf(1, e)] += 1e-3;
    assert.throws(() => writeChoices(c, s.grids, Uint8Array.from(bytes), bad, ch, nBlocks), /decodes element/);
  }
});
