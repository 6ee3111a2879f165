/**
 * The one-token (decode) copies of Q4_K and Q6_K weights (wasm/matmul.ts interleave4, relaxed build): decode
 * reads every weight byte once per token from memory, so the copy's size is the decode's cost. The tiles'
 * results are checked bit for bit in kernels-int-dot; here the bytes: scales stored once (the tiles double
 * them with a shuffle), d and dmin as f32 only.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

test('decode copies of Q4_K and Q6_K (relaxed build): 32 and 8 bytes more than the rows per 4 rows and super-block (5.6 % and 1 %)', { skip: !hasRelaxedSimd() && 'no relaxed SIMD' }, () => {
  useNodeThreads();
  const e = MatmulEngine.get('relaxed')!;
  const k = 768;
  for (const [name, extra] of [['Q4_K', 32], ['Q6_K', 8]] as const) {
    const type = ggmlTypeByName(name)!;
    const rb = ggmlRowBytes(type, k);
    // 8-row groups and a last group of 4 (1028 rows); the bytes themselves do not matter here
    for (const n of [1024, 1028]) {
      const w = e.storeWeight(type, n, k, rb, new Uint8Array(n * rb))!;
      const copy = e.prepareDecode(w);
      assert.equal(copy, n * rb + (n >> 2) * (k / 256) * extra, `${name} ${n} rows`);
    }
  }
});
