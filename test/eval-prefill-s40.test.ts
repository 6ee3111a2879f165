/**
 * Prefill paths of `lowbit eval` added in session 40, each against the path it replaces, bit for bit:
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

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

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
  const t0 = Date.now();
  while (threads > 1 && e.threadStats().ready < 1 && Date.now() - t0 < 20000) await new Promise((res) => setTimeout(res, 10));
}

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
