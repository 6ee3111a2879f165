/**
 * The integer path's activation rounding (wasm/matmul.ts quantizeActs: Q8_0 four blocks at a time with
 * their scales in vector lanes, roundF16x4; Q8_K's first |v| == amax found 4 lanes at a time) against the
 * TypeScript codecs (src/kernels/int-dot.ts quantizeActsRef): the int16 quants, the scales and the sums of
 * 32, bit for bit, in both builds. The rows are built so that the blocks' d = amax / 127 lands on fp16's
 * edges: subnormal halves and their ties, ties between normal halves (even and odd), the largest half,
 * the first value that overflows to inf, values under the smallest subnormal, zero blocks; and blocks
 * whose maximum appears first at every position of a Q8_K super-block, with either sign.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { quantizeActsRef } from '../src/kernels/int-dot.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

interface Inner {
  memory: WebAssembly.Memory;
  exports: { quantizeActs(kind: number, x: number, xs: number, nTok: number, k: number, q: number, d: number, s: number): void };
  buffer(name: string, bytes: number): number;
}

/** the d values (amax / 127) the blocks of the Q8_0 rows are built around */
function edgeScales(): number[] {
  const f = Math.fround;
  const out = [0, 2 ** -26, 2 ** -25, 3 * 2 ** -25, 5 * 2 ** -25, 2 ** -24, 7 * 2 ** -25, 1023 * 2 ** -24, 2047 * 2 ** -25, 2 ** -14, f(2 ** -14 - 2 ** -30)];
  for (const e of [-14, -3, 0, 7, 15]) for (const m of [2049, 2051, 4095]) out.push(m * 2 ** (e - 11)); // ties between normal halves (to even: down, up, into the next binade)
  out.push(65504, 65519, 65520, 65536, f(1e30), 1e-3, 0.1, 1 / 3);
  return out;
}

/** T rows of K activations: block j of row t has its maximum |v| = 127 d (d from edgeScales, in turn) at a varying position and sign */
function rows(T: number, K: number, block: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  const scales = edgeScales();
  const x = new Float32Array(T * K);
  let n = 0;
  for (let t = 0; t < T; t++) {
    for (let b = 0; b < K / block; b++, n++) {
      const amax = Math.fround(127 * scales[n % scales.length]);
      const at = block === 32 ? n % 32 : (n * 37) % 256;
      for (let j = 0; j < block; j++) {
        const i = t * K + b * block + j;
        x[i] = j === at ? (n & 1 ? -amax : amax) : Math.fround(amax * ((next() / 2 ** 32) * 2 - 1));
      }
      // the maximum twice, with the other sign: later in the same 4 lanes, or in a later vector (Q8_K keeps the first)
      const o = t * K + b * block;
      if (block === 256 && n % 3 === 0) x[o + (at | 3)] = at % 4 === 3 ? x[o + at] : -x[o + at];
      if (block === 256 && n % 3 === 1) x[o + ((at + 100) % 256)] = -x[o + at];
    }
  }
  return x;
}

function check(variant: 'relaxed' | 'simd', block: number, T: number, K: number, seed: number): void {
  const e = MatmulEngine.get(variant);
  assert.ok(e, `no ${variant} engine`);
  const inner = e as unknown as Inner;
  const x = rows(T, K, block, seed);
  const ref = quantizeActsRef(block, x, T, K);
  const Tp = (T + 3) & ~3;
  const nb = K / block;
  const xAt = inner.buffer('test-x', T * K * 4);
  const q = inner.buffer('test-q', Tp * K * 2);
  const d = inner.buffer('test-d', Tp * nb * 4);
  const s = inner.buffer('test-s', Tp * (K / 32) * 2);
  new Float32Array(inner.memory.buffer, xAt, T * K).set(x);
  inner.exports.quantizeActs(block, xAt, K * 4, T, K, q, d, s);
  const gotQ = new Int16Array(inner.memory.buffer, q, Tp * K);
  const gotD = new Float32Array(inner.memory.buffer, d, Tp * nb); // block-major: block b of token t at b Tp + t
  const gotS = new Int16Array(inner.memory.buffer, s, Tp * (K / 32));
  const label = `${variant} block ${block} T ${T} K ${K}`;
  for (let t = 0; t < T; t++) {
    for (let b = 0; b < nb; b++) {
      const want = ref.d[t * nb + b];
      const got = gotD[b * Tp + t];
      assert.ok(Object.is(got, want), `${label}: d of token ${t} block ${b}: ${got} vs ${want} (amax / 127 = ${Math.fround(Math.max(...Array.from(x.subarray(t * K + b * block, t * K + (b + 1) * block), Math.abs)) / 127)})`);
    }
    for (let i = 0; i < K; i++) if (gotQ[t * K + i] !== ref.q[t * K + i]) assert.fail(`${label}: q[${t}][${i}] ${gotQ[t * K + i]} vs ${ref.q[t * K + i]}`);
    for (let i = 0; i < K / 32; i++) assert.equal(gotS[t * (K / 32) + i], ref.sums[t * (K / 32) + i], `${label}: sum ${i} of token ${t}`);
  }
  for (let t = T; t < Tp; t++) for (let b = 0; b < nb; b++) assert.equal(gotD[b * Tp + t], 0, `${label}: padding token ${t}`);
}

test('Q8_0 activation rounding (4 blocks in lanes, roundF16x4) equals the codec bit for bit at fp16 edges', () => {
  for (const variant of variants) {
    // nb = 24 (groups of 4 only), 6 (a group and 2 single blocks), 3 (single blocks only); T with padding
    for (const [T, K] of [[5, 768], [9, 192], [4, 96], [3, 384]]) check(variant, 32, T, K, 3 + T);
  }
});

test('Q8_K activation rounding (first |v| == amax, 4 lanes at a time) equals the codec bit for bit', () => {
  for (const variant of variants) for (const [T, K] of [[5, 512], [7, 768]]) check(variant, 256, T, K, 17 + T);
});
