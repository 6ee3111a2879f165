/**
 * The Q4_K / Q6_K one-token tiles reading a chunk's full groups of 8 rows in strands (wasm rtileQ4KStrands /
 * r6Strands, MatmulEngine.kStrands): every row the same bits as intMatmulRef for 1 (one stream) .. 4 and 8
 * strands (strands of unequal length: the groups after the last whole round of strands), 1 and 2 tokens,
 * 1 and 2 threads (a chunk that starts and ends at a half group), fused weights (fuseDecode).
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
import { ggmlRowBytes, ggmlTypeByName, type GgmlTypeInfo } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

/** values uniform in [-scale, scale) from seed */
function uniform(n: number, seed: number, scale: number): Float32Array {
  const next = xorshift32(seed);
  return Float32Array.from({ length: n }, () => scale * (next() / 2 ** 31 - 1));
}

/** an n x k weight of `type` (quantized from uniform values) */
function quantized(type: GgmlTypeInfo, n: number, k: number, seed: number): Uint8Array {
  const out = new Uint8Array(n * ggmlRowBytes(type, k));
  ggmlCodec(type)!.quantize!(uniform(n * k, seed, 1), n, k, out);
  return out;
}

test('Q4_K / Q6_K one-token tiles in 1..4 and 8 strands: = intMatmulRef bit for bit (groups, half groups, last group of 4, tail; 1 and 2 tokens, 1 and 2 threads)', { skip: !hasRelaxedSimd() && 'no relaxed SIMD' }, () => {
  useNodeThreads();
  const e = MatmulEngine.get('relaxed')!;
  const strands0 = e.kStrands;
  let checked = 0;
  for (const name of ['Q4_K', 'Q6_K']) {
    const type = ggmlTypeByName(name)!;
    const k = 768;
    // 1030: 128 groups, a last group of 4, 2 rows after it; 1028 on 2 threads: chunks of 516 rows (the first ends
    // at a half group, the second starts at one: 63 groups); 108: 13 groups (4 strands: 3 rounds and one left over)
    for (const n of [1030, 1028, 108]) {
      const bytes = quantized(type, n, k, n);
      for (const nTok of [1, 2]) {
        const x = uniform(nTok * k, n + nTok, 3);
        const ref = new Float32Array(nTok * n);
        intMatmulRef(ref, x, type, bytes, nTok, k, n);
        for (const strands of [1, 2, 3, 4, 8]) {
          for (const threads of [1, 2]) {
            e.setThreads(threads);
            e.kStrands = strands;
            const kw = e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes)!;
            const y = new Float32Array(nTok * n);
            try {
              assert.ok(e.prepareDecode(kw) > 0);
              e.matmulInt(y, x, kw, nTok);
            } finally {
              e.setThreads(1);
              e.kStrands = strands0;
            }
            assert.deepEqual(y, ref, `${name} N=${n} T=${nTok} strands ${strands} threads ${threads}`);
            checked++;
          }
        }
      }
    }
  }
  assert.equal(checked, 2 * 3 * 2 * 5 * 2);
});

test('Q4_K / Q6_K strands on fused weights (fuseDecode: gate | up, q | k | v shapes): each member\'s bits, 1 and 2 threads', { skip: !hasRelaxedSimd() && 'no relaxed SIMD' }, () => {
  useNodeThreads();
  const e = MatmulEngine.get('relaxed')!;
  const strands0 = e.kStrands;
  for (const name of ['Q4_K', 'Q6_K']) {
    const type = ggmlTypeByName(name)!;
    const k = 512;
    const rows = [520, 136, 136];
    const bytes = rows.map((n, i) => quantized(type, n, k, 40 + i));
    const x = uniform(k, 3, 2);
    const ref = rows.map((n, i) => {
      const r = new Float32Array(n);
      intMatmulRef(r, x, type, bytes[i], 1, k, n);
      return r;
    });
    for (const strands of [2, 4]) {
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        e.kStrands = strands;
        try {
          const ws = rows.map((n, i) => e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes[i])!);
          const f = e.fuseDecode(ws)!;
          assert.ok(f, 'fused');
          const y = new Float32Array(f.rows);
          e.matmulInt(y, x, f, 1);
          let o = 0;
          rows.forEach((n, i) => {
            assert.deepEqual(y.subarray(o, o + n), ref[i], `${name} member ${i} strands ${strands} threads ${threads}`);
            o += n;
          });
        } finally {
          e.setThreads(1);
          e.kStrands = strands0;
        }
      }
    }
  }
});
