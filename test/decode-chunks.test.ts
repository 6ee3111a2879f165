/**
 * One-token matmuls with more rows than the workers' private areas hold (the 1.1B model's fused gate | up,
 * 11264 rows; the 32000-row output layer): decodeChunkRows gives every thread the same number of chunks,
 * in whole groups of 8 rows, and the integer path on 2 threads keeps intMatmulRef's bits there.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { intMatmulRef } from '../src/kernels/int-dot.js';
import { decodeChunkRows, MatmulEngine } from '../src/kernels/matmul.js';
import { PRIVATE_BYTES, PRIVATE_SCRATCH } from '../src/kernels/threads.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

test('decodeChunkRows past a private area: the same number of chunks on every thread, whole groups of 8 rows, none over the area', () => {
  const area = (PRIVATE_BYTES - PRIVATE_SCRATCH) / 4;
  // 11264 rows on 2 threads were 3 chunks (4096, 4096, 3072): one thread ran two while the other waited
  assert.equal(decodeChunkRows(11264, 2), 2816);
  assert.equal(decodeChunkRows(32000, 2), 4000);
  for (const [rows, t] of [[11264, 2], [32000, 2], [9004, 2], [8200, 2], [32000, 3], [262144, 2], [100000, 4]]) {
    const r = decodeChunkRows(rows, t);
    const chunks = Math.ceil(rows / r);
    assert.ok(r <= area && r % 8 === 0, `${rows} rows on ${t} threads: ${r} per chunk`);
    assert.equal(chunks % t, 0, `${rows} rows on ${t} threads: ${chunks} chunks of ${r}`);
  }
});

test('one-token integer matmul past a private area (9004 rows: 4 chunks, a last group of 4): 2 threads = 1 thread = intMatmulRef, bit for bit', () => {
  useNodeThreads();
  const next = xorshift32(11);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q4_0', 'Q8_0', 'Q4_K']) {
      const type = ggmlTypeByName(name)!;
      const [n, k] = [9004, name === 'Q4_K' ? 256 : 64];
      const src = Float32Array.from({ length: n * k }, () => next() / 2 ** 32 - 0.5);
      const bytes = new Uint8Array(n * ggmlRowBytes(type, k));
      ggmlCodec(type)!.quantize!(src, n, k, bytes);
      const x = Float32Array.from({ length: k }, (_, i) => Math.sin(i + 1) * 3);
      const ref = new Float32Array(n);
      intMatmulRef(ref, x, type, bytes, 1, k, n);
      const kw = e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes)!;
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        const y = new Float32Array(n).fill(NaN);
        try {
          e.matmulInt(y, x, kw, 1);
        } finally {
          e.setThreads(1);
        }
        assert.deepEqual(y, ref, `${variant} ${name} ${threads} threads`);
      }
    }
  }
});
