/**
 * Prefill paths of `lowbit eval` added in session 39, each against the path it replaces, bit for bit, in
 * both builds and on 1 and 2 threads:
 *  - the causal attention kernel (job kind 2) with each head's keys and values gathered into rows side by
 *    side (16 queries and more; MatmulEngine.attentionGather) = read in place from the cache's rows;
 *  - SwiGLU fused with the down-projection's activation rounding (MatmulEngine.siluMulRound, job kind 10
 *    with word 11) then matmulInt(…, sameInput) = siluMul then matmulInt: the same SwiGLU values and the
 *    same products.
 * And of session 40:
 *  - job kind 20 (MatmulEngine.allFinite / addInto on large arrays, split into ranges over the threads) =
 *    the one-thread kernels: the same answer wherever the non-finite value sits (first value, each range's
 *    first and last, the last value), the same sums;
 *  - a batch's keys and values written by the matmuls straight into the kernel KV cache's rows (RoPE, bias
 *    applied there) = computed in the run state and copied (the path a kvInput hook keeps): the same
 *    logits and the same cache, from position 0 and from a later position.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { readLlama2c } from '../src/io/llama2c.js';
import { bytesSource } from '../src/io/source.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { Llama } from '../src/model/llama.js';
import { ggmlCodecs } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { untilReady } from './worker-wait.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

function normals(n: number, seed: number, scale = 1): Float32Array {
  const next = xorshift32(seed);
  const r = () => next() / 2 ** 32;
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()));
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  let bad = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      bad++;
      if (first < 0) first = i;
    }
  }
  assert.equal(bad, 0, `${what}: ${bad} values differ, the first at ${first} (${a[first]} vs ${b[first]})`);
}

async function withThreads(e: MatmulEngine, threads: number): Promise<void> {
  assert.equal(e.setThreads(threads), threads);
  if (threads > 1) await untilReady(() => e.threadStats().ready);
}

test('attention kernel: keys and values gathered per head (16 queries and more) = read in place, bit for bit (GQA, a cache before the queries, 1 and 2 threads)', async () => {
  useNodeThreads();
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    // [heads, kv heads, head size, pos0, tokens]: tokens mod 6 and 2 all met, head sizes with and without the 64-byte steps
    const cases = [[4, 2, 64, 0, 37], [3, 3, 20, 6, 16], [4, 1, 36, 9, 23], [6, 2, 64, 31, 50], [2, 2, 12, 0, 64]];
    for (const threads of [1, 2]) {
      await withThreads(e, threads);
      for (const [nHeads, nKvHeads, hd, pos0, nTok] of cases) {
        const kvDim = nKvHeads * hd;
        const q = normals(nTok * nHeads * hd, nHeads * 100 + nTok, 3);
        const kv = e.allocF32(2 * (pos0 + nTok) * kvDim, q)!;
        kv.array.set(normals(kv.array.length, hd + pos0));
        const run = (gather: boolean) => {
          e.attentionGather = gather;
          const out = new Float32Array(nTok * nHeads * hd);
          e.attention(q, nTok, pos0, nHeads, nKvHeads, hd, kv.at, kv.at + (pos0 + nTok) * kvDim * 4, kvDim, 1 / Math.sqrt(hd), out);
          return out;
        };
        try {
          const inPlace = run(false);
          const gathered = run(true);
          sameBits(gathered, inPlace, `${variant} ${threads} thread(s), ${nHeads}/${nKvHeads} heads of ${hd}, ${nTok} tokens after ${pos0}`);
          assert.ok(inPlace.some((v) => v !== 0));
        } finally {
          e.attentionGather = true;
        }
      }
    }
    e.setThreads(1);
  }
});

test('SwiGLU fused with the activation rounding (siluMulRound, then matmulInt reusing it) = siluMul then matmulInt, bit for bit (Q8_0, Q4_0, Q4_K, Q6_K; 16 to 130 tokens; 1 and 2 threads)', async () => {
  useNodeThreads();
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K']) {
      const type = ggmlTypeByName(name)!;
      const codec = ggmlCodecs.find((c) => c.type.id === type.id)!;
      const [k, n] = [512, 40];
      const rowBytes = ggmlRowBytes(type, k);
      const bytes = new Uint8Array(n * rowBytes);
      codec.quantize!(normals(n * k, 7), n, k, bytes);
      const w = e.storeWeight(type, n, k, rowBytes, bytes)!;
      for (const threads of [1, 2]) {
        await withThreads(e, threads);
        for (const nTok of [16, 37, 70, 130]) {
          const what = `${variant} ${name} ${threads} thread(s), ${nTok} tokens`;
          const gate = normals(nTok * k, nTok, 4);
          const up = normals(nTok * k, nTok + 1);
          const owner = {};
          const g1 = e.allocF32(nTok * k, owner)!.array;
          const u1 = e.allocF32(nTok * k, owner)!.array;
          const y1 = e.allocF32(nTok * n, owner)!.array;
          g1.set(gate);
          u1.set(up);
          // the reference: SwiGLU alone, then the matmul rounding its input
          e.siluMul(g1, u1, nTok * k);
          e.matmulInt(y1, g1, w, nTok);
          const g2 = e.allocF32(nTok * k, owner)!.array;
          const y2 = e.allocF32(nTok * n, owner)!.array;
          g2.set(gate);
          assert.equal(e.siluMulRound(g2, u1, nTok, w), true, what);
          e.matmulInt(y2, g2, w, nTok, true);
          sameBits(g2, g1, `${what}: SwiGLU values`);
          sameBits(y2, y1, `${what}: products`);
          // the rounding was reused, not redone: rounding g2 again from its (equal) values gives the same products
          e.matmulInt(y2, g2, w, nTok);
          sameBits(y2, y1, `${what}: products rounded again`);
        }
      }
      e.setThreads(1);
    }
    // not taken under 16 tokens or for arrays outside the kernel memory
    const type = ggmlTypeByName('Q8_0')!;
    const w = e.storeWeight(type, 8, 64, ggmlRowBytes(type, 64), new Uint8Array(8 * ggmlRowBytes(type, 64)))!;
    const g = e.allocF32(15 * 64, {})!.array;
    assert.equal(e.siluMulRound(g, e.allocF32(15 * 64, {})!.array, 15, w), false);
    assert.equal(e.siluMulRound(new Float32Array(16 * 64), e.allocF32(16 * 64, {})!.array, 16, w), false);
  }
});

test('job kind 20: allFinite and addInto of large arrays on 2 threads = on one thread (every range checked, every sum the f32 add)', async () => {
  useNodeThreads();
  // 2^18 values and more go to the threads: 4 ranges per thread of a multiple of 16 values, the last one short
  const n = (1 << 19) + 37;
  let seed = 9;
  const u = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 200 - 100;
  const b0 = Float32Array.from({ length: n }, u);
  const a0 = Float32Array.from({ length: n }, u);
  const want = new Float32Array(n);
  for (let i = 0; i < n; i++) want[i] = a0[i] + b0[i];
  const per = Math.ceil(n / 8 / 16) * 16; // rangeJob's split on 2 threads
  const spots = [0, per - 1, per, 3 * per + 5, 7 * per - 1, 7 * per, n - 1];
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const x = e.allocF32(n, b0)!;
    const y = e.allocF32(n, b0)!;
    for (const threads of [1, 2]) {
      await withThreads(e, threads);
      x.array.set(a0);
      y.array.set(b0);
      assert.equal(e.addInto(x.array, y.array, n), true);
      sameBits(x.array.subarray(0, n), want, `${variant} addInto, ${threads} thread(s)`);
      assert.equal(e.allFinite(x.array, n), true, `${variant} allFinite of finite values, ${threads} thread(s)`);
      for (const at of spots) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const keep = x.array[at];
          x.array[at] = bad;
          assert.equal(e.allFinite(x.array, n), false, `${variant} ${bad} at ${at} of ${n}, ${threads} thread(s)`);
          x.array[at] = keep;
        }
      }
      // a non-finite value past n is not looked at
      x.array[n] = NaN;
      assert.equal(e.allFinite(x.array, n), true);
    }
    e.setThreads(1);
  }
});

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));
const bin = await readLlama2c(bytesSource(data('stories260K.bin'), 'stories260K.bin'));

test('prefill keys and values written in the kernel KV cache = computed apart and copied in (logits and cache bit for bit, from position 0 and 37)', () => {
  const tokens = Array.from({ length: 60 }, (_, i) => 1 + ((i * 97) % 500));
  const run = (hooked: boolean) => {
    const m = new Llama(bin.config, bin.tensors);
    assert.ok((m.kv as { engine?: unknown }).engine, 'the kernel KV storage');
    // a kvInput hook keeps the run state's keys and values (the copy path)
    if (hooked) m.hooks = { kvInput: () => {} };
    const first = m.forward(tokens.slice(0, 37), 0, 0).slice();
    const second = m.forward(tokens.slice(37), 37, 0).slice();
    const kv: Float32Array[] = [];
    for (let l = 0; l < bin.config.nLayers; l++) kv.push(m.kv.keys(l, 60).slice(), m.kv.values(l, 60).slice());
    return { first, second, kv };
  };
  const direct = run(false);
  const copied = run(true);
  sameBits(direct.first, copied.first, 'logits of positions 0..36');
  sameBits(direct.second, copied.second, 'logits of positions 37..59');
  direct.kv.forEach((a, i) => sameBits(a, copied.kv[i], `cache ${i & 1 ? 'values' : 'keys'} of layer ${i >> 1}`));
  assert.ok(direct.kv[0].some((v) => v !== 0));
});
