/**
 * The WebAssembly matmul / attention kernels (src/kernels/matmul.ts, wasm/matmul.ts) against their
 * references, for every registered GGML type, in both builds (relaxed SIMD where the engine has it,
 * plain SIMD), on odd shapes; threads give the same bits as one thread.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { readLlama2c } from '../src/io/llama2c.js';
import { bytesSource } from '../src/io/source.js';
import { attentionLanesRef, attentionRef, fmaF32, MatmulEngine, matmulErrorFactor, matmulLanesRef, type KernelWeight } from '../src/kernels/matmul.js';
import { Llama } from '../src/model/llama.js';
import { matmulRef } from '../src/model/matmul.js';
import { ggmlCodecs } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, type GgmlTypeInfo } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { repeatUntil, untilReady } from './worker-wait.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);
const U = 2 ** -24;

function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 2 ** 32;
}

function normals(n: number, r: () => number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()));
}

/**
 * The causal attention kernel (job kind 2) on normal queries (times qScale), keys and values (in kernel
 * memory): nTok queries after pos0 cached positions, scale 1 / sqrt(hd)
 */
function attentionCase(e: MatmulEngine, r: () => number, nHeads: number, nKvHeads: number, hd: number, pos0: number, nTok: number, qScale = 1) {
  const kvDim = nKvHeads * hd;
  const q = normals(nTok * nHeads * hd, r).map((v) => qScale * v);
  const keysVals = e.allocF32(2 * (pos0 + nTok) * kvDim, q)!;
  const keys = keysVals.array.subarray(0, (pos0 + nTok) * kvDim);
  const values = keysVals.array.subarray((pos0 + nTok) * kvDim);
  keys.set(normals(keys.length, r));
  values.set(normals(values.length, r));
  const out = new Float32Array(nTok * nHeads * hd);
  e.attention(q, nTok, pos0, nHeads, nKvHeads, hd, keysVals.at, keysVals.at + keys.length * 4, kvDim, 1 / Math.sqrt(hd), out);
  return { q, keys, values, out };
}

/**
 * Stored bytes of an n x k weight in `type`: quantized normals where the codec quantizes (without an
 * importance matrix), else random blocks kept only when they decode to finite values below 1e4.
 */
function storedWeight(type: GgmlTypeInfo, n: number, k: number, r: () => number): { bytes: Uint8Array; f32: Float32Array } {
  const codec = ggmlCodecs.find((c) => c.type.id === type.id)!;
  const rowBytes = ggmlRowBytes(type, k);
  const bytes = new Uint8Array(n * rowBytes);
  let quantized = false;
  if (codec.quantize) {
    try {
      codec.quantize(normals(n * k, r), n, k, bytes);
      quantized = true;
    } catch {
      // types whose quantizer needs an importance matrix (IQ1/IQ2 grids): random blocks below
    }
  }
  if (!quantized) {
    const block = new Float32Array(type.blockSize);
    for (let o = 0; o < bytes.length; o += type.typeSize) {
      const b = bytes.subarray(o, o + type.typeSize);
      do {
        for (let i = 0; i < b.length; i++) b[i] = (r() * 256) | 0;
        codec.dequantize(b, type.blockSize, block);
      } while (!block.every((v) => Number.isFinite(v) && Math.abs(v) < 1e4));
    }
  }
  const f32 = new Float32Array(n * k);
  codec.dequantize(bytes, n * k, f32);
  return { bytes, f32 };
}

/** row lengths to try: odd ones for the float types (not a multiple of 4 or 16), two block counts else */
function rowLengths(type: GgmlTypeInfo): number[] {
  return type.blockSize === 1 ? [10, 36, 64] : [type.blockSize, 3 * type.blockSize];
}

test('every GGML type: kernel dequantization is bit-exact; matmul = matmulLanesRef (plain SIMD: bit-exact) and within the bound of matmulRef', () => {
  const r = rng(7);
  let checked = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    assert.ok(e, `${variant} engine`);
    e.setThreads(1);
    for (const codec of ggmlCodecs) {
      const type = codec.type;
      for (const k of rowLengths(type)) {
        for (const [nTok, n] of [[1, 5], [3, 7], [17, 13]]) {
          const w = storedWeight(type, n, k, r);
          const kw = e.storeWeight(type, n, k, ggmlRowBytes(type, k), w.bytes)!;
          const label = `${variant} ${type.name} T=${nTok} K=${k} N=${n}`;
          if (e.hasType(type)) assert.deepEqual(e.dequantizeRows(kw, 0, n), w.f32, `${label}: dequantization`);
          const x = normals(nTok * k, r);
          const y = new Float32Array(nTok * n);
          e.matmul(y, x, kw, nTok);
          const lanes = new Float32Array(nTok * n);
          matmulLanesRef(lanes, x, w.f32, nTok, k, n);
          const ref = new Float32Array(nTok * n);
          matmulRef(ref, x, w.f32, nTok, k, n);
          if (variant === 'simd') assert.deepEqual(y, lanes, `${label}: plain SIMD = matmulLanesRef bit for bit`);
          const g = matmulErrorFactor(k);
          for (let t = 0; t < nTok; t++) {
            for (let j = 0; j < n; j++) {
              let abs = 0;
              for (let i = 0; i < k; i++) abs += Math.abs(x[t * k + i] * w.f32[j * k + i]);
              const bound = g * abs + 2 * U * Math.abs(ref[t * n + j]) + 1e-30;
              const d = Math.abs(y[t * n + j] - ref[t * n + j]);
              assert.ok(d <= bound, `${label} [${t}][${j}]: |${y[t * n + j]} - ${ref[t * n + j]}| = ${d} > ${bound}`);
              assert.ok(Math.abs(lanes[t * n + j] - ref[t * n + j]) <= bound);
            }
          }
          checked++;
        }
      }
    }
  }
  assert.ok(checked >= variants.length * 25 * 6, `${checked} cases`);
});

test('the bound can fail: a wrong element is caught', () => {
  const e = MatmulEngine.get(variants[0])!;
  const k = 64;
  const r = rng(3);
  const x = normals(k, r);
  const w = normals(2 * k, r);
  const y = new Float32Array(2);
  e.matmulF32(y, x, w, 1, k, 2);
  w[5] += 1e-3; // one weight off by 1e-3 moves the output by ~1e-3 |x[5]|, far above gamma * sum |x w| ~ 1e-6
  const ref = new Float32Array(2);
  matmulRef(ref, x, w, 1, k, 2);
  let abs = 0;
  for (let i = 0; i < k; i++) abs += Math.abs(x[i] * w[i]);
  assert.ok(Math.abs(y[0] - ref[0]) > matmulErrorFactor(k) * abs + 2 * U * Math.abs(ref[0]));
});

test('exp: within 4 ulp of Math.exp on [-87, 88]; attention kernel = attentionRef within 1e-5 max|v|', () => {
  const r = rng(11);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const x = Float32Array.from({ length: 4099 }, (_, i) => (i < 4096 ? -87 + (175 * i) / 4095 : r() * 20 - 10));
    const y = e.exp(x);
    for (let i = 0; i < x.length; i++) {
      const want = Math.exp(x[i]);
      assert.ok(Math.abs(y[i] - want) <= 4 * 2 ** -23 * want, `${variant} exp(${x[i]}) = ${y[i]}, want ${want}`);
    }
    // attention: 2 kv heads shared by 4 query heads, head size 12, 5 new tokens after 9 cached
    const [nHeads, nKvHeads, hd, pos0, nTok] = [4, 2, 12, 9, 5];
    const { q, keys, values, out } = attentionCase(e, r, nHeads, nKvHeads, hd, pos0, nTok);
    const ref = new Float32Array(out.length);
    attentionRef(q, keys, values, nTok, pos0, nHeads, nKvHeads, hd, 1 / Math.sqrt(hd), ref, new Float64Array(pos0 + nTok));
    const vmax = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - ref[i]) <= 1e-5 * vmax, `${variant} attention[${i}]: ${out[i]} vs ${ref[i]}`);
  }
});

test('attention kernel: T queries at once (six at a time: three per key load, two per value load) = one query at a time, bit for bit', () => {
  const r = rng(12);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    // head sizes 64 (16-value blocks) and 20 (4-value tail); odd and even token counts, with and without a cache
    for (const [nHeads, nKvHeads, hd, pos0, nTok] of [[4, 2, 64, 0, 37], [3, 3, 20, 6, 8], [2, 1, 64, 13, 2], [2, 2, 36, 5, 1]]) {
      const kvDim = nKvHeads * hd;
      const q = normals(nTok * nHeads * hd, r).map((v) => 3 * v);
      const keysVals = e.allocF32(2 * (pos0 + nTok) * kvDim, q)!;
      const keys = keysVals.array.subarray(0, (pos0 + nTok) * kvDim);
      const values = keysVals.array.subarray((pos0 + nTok) * kvDim);
      keys.set(normals(keys.length, r));
      values.set(normals(values.length, r));
      const vAt = keysVals.at + keys.length * 4;
      const all = new Float32Array(nTok * nHeads * hd);
      e.attention(q, nTok, pos0, nHeads, nKvHeads, hd, keysVals.at, vAt, kvDim, 1 / Math.sqrt(hd), all);
      const qd = nHeads * hd;
      const one = new Float32Array(all.length);
      for (let t = 0; t < nTok; t++) {
        const o = new Float32Array(qd);
        e.attention(q.slice(t * qd, (t + 1) * qd), 1, pos0 + t, nHeads, nKvHeads, hd, keysVals.at, vAt, kvDim, 1 / Math.sqrt(hd), o);
        one.set(o, t * qd);
      }
      let bad = 0;
      for (let i = 0; i < all.length; i++) if (!Object.is(all[i], one[i])) bad++;
      assert.equal(bad, 0, `${variant} ${nHeads}/${nKvHeads} heads of ${hd}, ${nTok} tokens after ${pos0}: ${bad} values differ`);
    }
  }
});

test('attention kernel = attentionLanesRef bit for bit (plain SIMD: product and sum rounded; relaxed: fused or not, as the engine runs it), odd T, a cache, GQA, head sizes 4, 12, 20 and 36, 1 and 2 threads', async () => {
  useNodeThreads();
  const r = rng(14);
  // fmaF32 is the correctly rounded f32 fma: 1 + 2^-24 (a tie) plus a 2^-60 nudge rounds up, unfused it rounds to even
  assert.equal(fmaF32(1 + 2 ** -12, 1 + 2 ** -12, 2 ** -60), Math.fround(1 + 2 ** -11 + 2 ** -23));
  assert.equal(Math.fround(Math.fround((1 + 2 ** -12) * (1 + 2 ** -12)) + 2 ** -60), Math.fround(1 + 2 ** -11));
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    // [heads, kv heads, head size, pos0, tokens, q scale]: tokens mod 2, 3, 4 and 6 all met (head sizes below 16 take the
    // separate softmax sums); a large q scale puts scores
    // below max - 87 (exp's clamp); the 2-thread cases are above the parallel threshold
    const cases = [[4, 2, 64, 0, 37, 3], [3, 3, 20, 6, 8, 3], [2, 1, 64, 13, 2, 3], [2, 2, 36, 5, 1, 3], [5, 5, 36, 3, 13, 40], [6, 2, 20, 0, 6, 3], [4, 1, 64, 9, 11, 3], [2, 2, 64, 0, 7, 3], [3, 1, 36, 2, 15, 3], [4, 2, 12, 3, 14, 3], [2, 2, 4, 0, 19, 3]];
    const big = [[8, 2, 64, 5, 45, 3], [6, 6, 36, 0, 50, 3], [4, 4, 20, 17, 39, 3]];
    for (const threads of [1, 2]) {
      assert.equal(e.setThreads(threads), threads);
      if (threads > 1) await untilReady(() => e.threadStats().ready);
      for (const [nHeads, nKvHeads, hd, pos0, nTok, qs] of threads > 1 ? big : [...cases, ...big]) {
        const { q, keys, values, out: got } = attentionCase(e, r, nHeads, nKvHeads, hd, pos0, nTok, qs);
        const name = `${variant} ${threads} thread(s), ${nHeads}/${nKvHeads} heads of ${hd}, ${nTok} tokens after ${pos0}`;
        const differ = (fused: boolean) => {
          const want = new Float32Array(got.length);
          attentionLanesRef(q, keys, values, nTok, pos0, nHeads, nKvHeads, hd, 1 / Math.sqrt(hd), want, fused);
          let bad = 0;
          for (let i = 0; i < got.length; i++) if (!Object.is(got[i], want[i])) bad++;
          return bad;
        };
        const unfused = differ(false);
        if (variant === 'simd') assert.equal(unfused, 0, `${name}: ${unfused} values differ`);
        else if (unfused !== 0) assert.equal(differ(true), 0, `${name}: ${unfused} values differ from the unfused and some from the fused reference`);
      }
    }
    e.setThreads(1);
  }
});

test('attention kernel: one token row by row (attentionRows, decode on one thread) = head by head, bit for bit (2 threads: head by head above the parallel threshold)', async () => {
  useNodeThreads();
  const r = rng(13);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    // 4-head groups and a tail, grouped kv heads (GQA 8:1 like the 1.1B model), head sizes 64, 20, 36, 12;
    // positions 1..4 mod 4 (the kernel scores two positions at a time and sums the values of four in one pass)
    // and head rows of 32 bytes plus 16 (sizes 20, 36, 12)
    const cases = [[12, 12, 64, 69], [32, 4, 64, 40], [7, 7, 20, 0], [6, 3, 36, 17], [5, 1, 64, 130], [9, 3, 12, 71], [3, 1, 20, 2]];
    const run = (nHeads: number, nKvHeads: number, hd: number, pos0: number, q: Float32Array, at: number) => {
      const o = new Float32Array(nHeads * hd);
      e.attention(q, 1, pos0, nHeads, nKvHeads, hd, at, at + (pos0 + 1) * nKvHeads * hd * 4, nKvHeads * hd, 1 / Math.sqrt(hd), o);
      return o;
    };
    for (const threads of [1, 2]) {
      assert.equal(e.setThreads(threads), threads);
      if (threads > 1) await untilReady(() => e.threadStats().ready);
      for (const [nHeads, nKvHeads, hd, pos0] of cases) {
        const q = normals(nHeads * hd, r).map((v) => 3 * v);
        const kv = e.allocF32(2 * (pos0 + 1) * nKvHeads * hd, q)!;
        kv.array.set(normals(kv.array.length, r));
        e.attentionRows = false;
        const want = run(nHeads, nKvHeads, hd, pos0, q, kv.at);
        e.attentionRows = true;
        for (let rep = 0; rep < (threads > 1 ? 20 : 1); rep++) {
          const got = run(nHeads, nKvHeads, hd, pos0, q, kv.at);
          let bad = 0;
          for (let i = 0; i < got.length; i++) if (!Object.is(got[i], want[i])) bad++;
          assert.equal(bad, 0, `${variant} ${threads} thread(s), ${nHeads}/${nKvHeads} heads of ${hd} after ${pos0}: ${bad} values differ`);
        }
      }
    }
    e.close();
  }
});

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));

test('model: the WebAssembly path is batch-independent bit for bit and close to the TypeScript path', async () => {
  const bin = await readLlama2c(bytesSource(data('stories260K.bin'), 'stories260K.bin'));
  const prompt = [1, 403, 407, 261, 378, 29892, 727, 471, 263, 2217, 7826, 4257].map((t) => t % 512);
  const wasm = new Llama(bin.config, bin.tensors, { batch: 64 });
  const batched = wasm.forward(prompt, 0, 0);
  const single = new Llama(bin.config, bin.tensors, { batch: 1 });
  const oneByOne = new Float32Array(batched.length);
  prompt.forEach((id, p) => oneByOne.set(single.forward([id], p), p * 512));
  assert.deepEqual(batched, oneByOne);
  const ref = new Llama(bin.config, bin.tensors, { kernels: 'reference' }).forward(prompt, 0, 0);
  let err = 0;
  let sig = 0;
  for (let i = 0; i < ref.length; i++) {
    err += (batched[i] - ref[i]) ** 2;
    sig += ref[i] ** 2;
  }
  const sqnr = 10 * Math.log10(sig / err);
  assert.ok(sqnr > 100 && Number.isFinite(sqnr), `wasm vs TypeScript logits: ${sqnr} dB`);
});

test('threads: 2 threads give the same bits as 1, workers run chunks, and stop', async () => {
  useNodeThreads();
  const r = rng(5);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const cases: [GgmlTypeInfo, KernelWeight, Float32Array][] = [];
    for (const name of ['F32', 'Q4_K', 'IQ2_XS']) {
      const type = ggmlCodecs.find((c) => c.type.name === name)!.type;
      const [k, n] = [512, 301];
      const w = storedWeight(type, n, k, r);
      cases.push([type, e.storeWeight(type, n, k, ggmlRowBytes(type, k), w.bytes)!, normals(17 * k, r)]);
    }
    e.setThreads(1);
    const one = cases.map(([, kw, x]) => {
      const y = new Float32Array(17 * kw.rows);
      e.matmul(y, x, kw, 17);
      return y;
    });
    // one token's attention (on the workers from 2^16 flops: 12 heads of 64 after 40 positions)
    const [nH, hd, pos0] = [12, 64, 40];
    const qAtt = normals(nH * hd, r);
    const kv = e.allocF32(2 * (pos0 + 1) * nH * hd, qAtt)!;
    kv.array.set(normals(kv.array.length, r));
    const attention = () => {
      const o = new Float32Array(nH * hd);
      e.attention(qAtt, 1, pos0, nH, nH, hd, kv.at, kv.at + (pos0 + 1) * nH * hd * 4, nH * hd, 0.125, o);
      return o;
    };
    const attOne = attention();
    assert.equal(e.setThreads(2), 2);
    await untilReady(() => e.threadStats().ready);
    assert.equal(e.threadStats().ready, 1, 'the worker started');
    let rounds = 0;
    await repeatUntil(() => {
      rounds++;
      cases.forEach(([, kw, x], i) => {
        const y = new Float32Array(17 * kw.rows);
        e.matmul(y, x, kw, 17);
        assert.deepEqual(y, one[i], `${variant} ${cases[i][0].name}: 2 threads`);
      });
      assert.deepEqual(attention(), attOne, `${variant} one token's attention: 2 threads`);
    }, () => rounds >= 3 && e.threadStats().workerChunks > 0);
    assert.ok(e.threadStats().workerChunks > 0, 'the worker ran chunks');
    e.close();
    assert.equal(e.threads, 1);
  }
});

test('lowbit eval --threads 2 exits cleanly and agrees with LOWBIT_WASM=off (the TypeScript path)', () => {
  const root = new URL('../../', import.meta.url).pathname;
  const run = (env: Record<string, string>, ...extra: string[]) => {
    const r = spawnSync(process.execPath, [root + 'bin/lowbit.js', 'eval', 'data/stories260K.gguf', '--text', 'data/tinystories-valid-head.txt', '--ctx', '64', '--chunks', '4', '--json', ...extra], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, ...env },
      timeout: 60000,
    });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { ppl: number; nll: number };
  };
  const threaded = run({}, '--threads', '2');
  const reference = run({ LOWBIT_WASM: 'off' });
  assert.ok(Math.abs(threaded.nll - reference.nll) < 1e-5, `${threaded.nll} vs ${reference.nll}`);
  assert.deepEqual(run({ LOWBIT_WASM: 'simd' }, '--threads', '1').nll.toFixed(5), threaded.nll.toFixed(5));
});

test('one-token F32 matmul on the copy interleaved by 4 rows (prepareDecode): the same bits as row by row (plain SIMD: matmulLanesRef), 1 and 2 threads, a tail group', () => {
  useNodeThreads();
  const f32 = ggmlCodecs.find((c) => c.type.name === 'F32')!.type;
  const r = rng(41);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const [n, k] of [[19, 64], [1030, 512]]) {
      const w = normals(n * k, r);
      const x = normals(k, r);
      const bytes = new Uint8Array(w.buffer.slice(0));
      const rowByRow = e.storeWeight(f32, n, k, 4 * k, bytes)!;
      const ref = new Float32Array(n);
      e.matmul(ref, x, rowByRow, 1);
      if (variant === 'simd') {
        const lanes = new Float32Array(n);
        matmulLanesRef(lanes, x, w, 1, k, n);
        assert.deepEqual(ref, lanes);
      }
      const kw = e.storeWeight(f32, n, k, 4 * k, bytes)!;
      e.f32Strands = false; // (with strands, the default, F32 weights get no copy)
      try {
        assert.equal(e.prepareDecode(kw), n * k * 4, 'the copy: the weight bytes again');
      } finally {
        e.f32Strands = true;
      }
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        const y = new Float32Array(n);
        try {
          e.matmul(y, x, kw, 1);
        } finally {
          e.setThreads(1);
        }
        assert.deepEqual(y, ref, `${variant} N=${n} K=${k} threads ${threads}`);
      }
    }
  }
});

test('F32 matmul in packed 3 x 3 tiles (tokens and a chunk\'s rows in triples): the row-by-row tiles bit for bit (plain SIMD: matmulLanesRef), 1 and 2 threads, edges', () => {
  useNodeThreads();
  const f32 = ggmlCodecs.find((c) => c.type.name === 'F32')!.type;
  const r = rng(43);
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    // tokens % 3 = 0, 1, 2 and past a token block (63); rows % 3 = 0, 1, 2 and past a chunk (48); k from 4;
    // 602 x 112: tokens packed on both threads (job kind 13)
    for (const [nTok, n, k] of [[3, 3, 4], [64, 49, 64], [130, 100, 68], [200, 770, 128], [5, 7, 8], [602, 50, 112]]) {
      const w = normals(n * k, r);
      const x = normals(nTok * k, r);
      const kw = e.storeWeight(f32, n, k, 4 * k, new Uint8Array(w.buffer.slice(0)))!;
      const want = new Float32Array(nTok * n);
      e.packTokens = false;
      try {
        e.matmul(want, x, kw, nTok);
      } finally {
        e.packTokens = true;
      }
      if (variant === 'simd') {
        const lanes = new Float32Array(nTok * n);
        matmulLanesRef(lanes, x, w, nTok, k, n);
        assert.deepEqual(want, lanes);
      }
      for (const threads of [2, 1]) { // (2 first: the tokens packed by the threads, not left there by a 1-thread call)
        e.setThreads(threads);
        const y = new Float32Array(nTok * n).fill(NaN);
        try {
          e.matmul(y, x, kw, nTok);
        } finally {
          e.setThreads(1);
        }
        let bad = 0;
        for (let i = 0; i < y.length; i++) if (!Object.is(y[i], want[i])) bad++;
        assert.equal(bad, 0, `${variant} T=${nTok} N=${n} K=${k} threads ${threads}: ${bad} outputs differ`);
      }
    }
  }
});

test('allFinite: the kernel finds every NaN and infinity the TypeScript check does (each position of the SIMD and tail loops)', () => {
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const owner = {};
    const a = e.allocF32(83, owner)?.array;
    if (!a) continue; // an unshared memory has no arrays of its own
    const ref = (x: Float32Array, n: number) => x.subarray(0, n).every((v) => Number.isFinite(v));
    const r = rng(11);
    for (let i = 0; i < a.length; i++) a[i] = (r() - 0.5) * 1e38;
    a[5] = 3.4028234663852886e38; // the largest finite f32, both signs
    a[6] = -3.4028234663852886e38;
    for (const n of [0, 1, 15, 16, 17, 64, 83]) assert.equal(e.allFinite(a, n), ref(a, n), `${variant} all finite, n ${n}`);
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const at of [0, 3, 15, 16, 31, 47, 63, 64, 70, 82]) {
        const keep = a[at];
        a[at] = bad;
        for (const n of [at, at + 1, 83]) assert.equal(e.allFinite(a, n), ref(a, n), `${variant} ${bad} at ${at}, n ${n}`);
        a[at] = keep;
      }
    }
    assert.equal(e.allFinite(new Float32Array(8), 8), null); // not in the kernels' memory
  }
});
