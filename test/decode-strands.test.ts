/**
 * The block-32 one-token tiles in strands (wasm/matmul.ts rtileQ4Lanes8x4, rtileQ8Lanes8x4;
 * MatmulEngine.q32Strands): each thread's full groups of 8 rows are read 4 groups at a time from
 * distant parts of its chunk. Every row keeps its integers and f32 steps, so 1 and 4 strands give
 * intMatmulRef's bits on every group count (the groups left over when the count is not a multiple of 4,
 * a chunk starting or ending at a half group, the last group of 4, a tail row), 1 and 2 tokens, 1 and 2
 * threads.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { intMatmulRef } from '../src/kernels/int-dot.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

test('one-token Q4_0 / Q8_0 tiles in 1 and 4 strands: intMatmulRef bit for bit on every group count, half groups and tails, 1 and 2 tokens, 1 and 2 threads', () => {
  useNodeThreads();
  const next = xorshift32(41);
  let checked = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q4_0', 'Q8_0']) {
      const type = ggmlTypeByName(name)!;
      // K = 64, one thread: 1..9 full groups (every count mod 4; under 4 one group at a time), with a last
      // group of 4 and a tail row; K = 512, 1028 rows on 2 threads: chunks of 516 rows, the second starting at a
      // half group (64 and 63 full groups: 0 and 3 left over from 4 strands), the last group of 4
      const shapes: [number, number][] = [[8, 64], [16, 64], [24, 64], [32, 64], [44, 64], [53, 64], [61, 64], [72, 64], [1028, 512]];
      for (const [n, k] of shapes) {
        const rb = ggmlRowBytes(type, k);
        const src = Float32Array.from({ length: n * k }, () => next() / 2 ** 32 - 0.5);
        const bytes = new Uint8Array(n * rb);
        ggmlCodec(type)!.quantize!(src, n, k, bytes);
        // rows at the quants' extremes in the first group and in the last strand's groups
        for (const r of [1, 2, n - 13, n - 9]) {
          if (r < 0) continue;
          for (let b = 0; b < rb; b += type.typeSize) {
            if (name === 'Q8_0') bytes.fill(r & 1 ? 0x7f : 0x80, r * rb + b + 2, r * rb + b + 34);
            else bytes.fill(r & 1 ? 0xff : 0x00, r * rb + b + 2, r * rb + b + 18);
          }
        }
        const kw = e.storeWeight(type, n, k, rb, bytes)!;
        for (const nTok of [1, 2]) {
          const x = Float32Array.from({ length: nTok * k }, (_, i) => Math.sin(i * 0.7 + n) * 3);
          const ref = new Float32Array(nTok * n);
          intMatmulRef(ref, x, type, bytes, nTok, k, n);
          for (const strands of [1, 4]) {
            for (const threads of [1, 2]) {
              e.setThreads(threads);
              e.q32Strands = strands;
              const y = new Float32Array(nTok * n).fill(NaN);
              try {
                e.matmulInt(y, x, kw, nTok);
              } finally {
                e.setThreads(1);
                e.q32Strands = 4;
              }
              assert.deepEqual(y, ref, `${variant} ${name} ${n} x ${k} T=${nTok} strands ${strands} threads ${threads}`);
              checked++;
            }
          }
        }
      }
    }
  }
  assert.equal(checked, variants.length * 2 * 9 * 2 * 2 * 2);
});
