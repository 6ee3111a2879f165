/**
 * The integer-dot matmul (llama.cpp's vec_dot path: activations rounded to Q8_0 / Q8_K, int32 block sums,
 * wasm/matmul.ts intMatmulChunk) against its scalar TypeScript reference (src/kernels/int-dot.ts):
 * bit for bit in both builds, on 1 and 2 threads; and within the stated bound of the exact product of
 * the same operands (float64).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { intBlockOf, intMatmulErrorFactor, intMatmulRef, quantizeActsRef, unpackIntRow } from '../src/kernels/int-dot.js';
import { MatmulEngine, type KernelWeight } from '../src/kernels/matmul.js';
import { KernelThreads } from '../src/kernels/threads.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName, type GgmlTypeInfo } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { repeatUntil, untilReady } from './worker-wait.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);
const TYPES = ['Q8_0', 'Q4_0', 'Q5_0', 'IQ4_NL', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_XS'];

function normals(n: number, seed: number, scale = 1): Float32Array {
  const next = xorshift32(seed);
  const u = () => (next() + 0.5) / 2 ** 32;
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

function quantized(type: GgmlTypeInfo, n: number, k: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(n * ggmlRowBytes(type, k));
  ggmlCodec(type)!.quantize!(normals(n * k, seed), n, k, bytes);
  return bytes;
}

/** exact (float64) product of the dequantized operands, and sum |w x| (with the minimums' terms) */
function exact(type: GgmlTypeInfo, bytes: Uint8Array, x: Float32Array, nTok: number, k: number, n: number): { y: Float64Array; abs: Float64Array } {
  const bl = intBlockOf(type.id);
  const a = quantizeActsRef(bl, x, nTok, k);
  const rb = ggmlRowBytes(type, k);
  const y = new Float64Array(nTok * n);
  const abs = new Float64Array(nTok * n);
  for (let r = 0; r < n; r++) {
    const row = unpackIntRow(type, bytes.subarray(r * rb, (r + 1) * rb), k);
    for (let t = 0; t < nTok; t++) {
      let s = 0;
      let sa = 0;
      for (let i = 0; i < k; i++) {
        const b = Math.floor(i / bl);
        const xv = a.q[t * k + i] * a.d[t * (k / bl) + b];
        const p = row.w[i] * row.scale[b] * xv;
        s += p;
        sa += Math.abs(p);
        if (row.mins) {
          const m = row.mins[b * 8 + ((i % 256) >> 5)] * row.dmin![b] * xv;
          s -= m;
          sa += Math.abs(m);
        }
      }
      y[t * n + r] = s;
      abs[t * n + r] = sa;
    }
  }
  return { y, abs };
}


/** y = x Wᵀ by the engine's integer path on 1 and then 2 threads, each bit for bit intMatmulRef; returns the number of checks (2) */
function agreesOnThreads(e: MatmulEngine, type: GgmlTypeInfo, bytes: Uint8Array, x: Float32Array, nTok: number, k: number, n: number, label: string): number {
  const ref = new Float32Array(nTok * n);
  intMatmulRef(ref, x, type, bytes, nTok, k, n);
  for (const threads of [1, 2]) {
    e.setThreads(threads);
    const kw = e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes)!;
    const y = new Float32Array(nTok * n);
    try {
      e.matmulInt(y, x, kw, nTok);
    } finally {
      e.setThreads(1);
    }
    assert.deepEqual(y, ref, `${label} threads=${threads}`);
  }
  return 2;
}

test('integer matmul = intMatmulRef bit for bit (both builds) and within gamma(R nb) sum|w x| of the exact product', () => {
  let checked = 0;
  let seed = 1;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    e.setThreads(1);
    for (const name of TYPES) {
      const type = ggmlTypeByName(name)!;
      const bl = intBlockOf(type.id);
      for (const k of [bl, 3 * bl]) {
        for (const [nTok, n] of [[1, 1], [3, 2], [1, 9], [5, 7], [17, 5]]) {
          const label = `${variant} ${name} T=${nTok} K=${k} N=${n}`;
          const bytes = quantized(type, n, k, seed++);
          const kw = e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes)!;
          assert.equal(e.intBlock(kw), bl, label);
          const x = normals(nTok * k, seed++, 3);
          const y = new Float32Array(nTok * n);
          e.matmulInt(y, x, kw, nTok);
          const ref = new Float32Array(nTok * n);
          intMatmulRef(ref, x, type, bytes, nTok, k, n);
          assert.deepEqual(y, ref, `${label}: kernel = intMatmulRef`);
          const ex = exact(type, bytes, x, nTok, k, n);
          const g = intMatmulErrorFactor(type.id, k);
          for (let i = 0; i < y.length; i++) {
            const bound = g * ex.abs[i] + 1e-30;
            assert.ok(Math.abs(y[i] - ex.y[i]) <= bound, `${label} [${i}]: |${y[i]} - ${ex.y[i]}| > ${bound}`);
          }
          checked++;
        }
      }
    }
  }
  assert.equal(checked, variants.length * TYPES.length * 10);
});

test('integer matmul: 2 threads give the same bits; the bound can fail (one quant off)', () => {
  useNodeThreads();
  const e = MatmulEngine.get(variants[0])!;
  const type = ggmlTypeByName('Q4_K')!;
  const [nTok, k, n] = [37, 512, 300];
  const bytes = quantized(type, n, k, 99);
  const kw = e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes)!;
  const x = normals(nTok * k, 5);
  const one = new Float32Array(nTok * n);
  e.setThreads(1);
  e.matmulInt(one, x, kw, nTok);
  const two = new Float32Array(nTok * n);
  e.setThreads(2);
  try {
    e.matmulInt(two, x, kw, nTok);
  } finally {
    e.setThreads(1);
  }
  assert.deepEqual(two, one);
  // a changed quant (one nibble of row 0) moves y[0][0] by ~d * sc * |x| >> the bound
  const bad = bytes.slice();
  bad[16] ^= 0x0f;
  const ex = exact(type, bad, x, 1, k, 1);
  const bound = intMatmulErrorFactor(type.id, k) * ex.abs[0];
  assert.ok(Math.abs(one[0] - ex.y[0]) > bound, `${one[0]} vs ${ex.y[0]}`);
});

test('one-token matmul on the weight copy interleaved by 4 rows: the same bits as row by row, 1 and 2 threads, every decode type', () => {
  useNodeThreads();
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q8_0', 'Q4_0', 'Q5_0', 'IQ4_NL', 'Q4_K', 'Q6_K']) {
      const type = ggmlTypeByName(name)!;
      const k = 2 * intBlockOf(type.id);
      // 4 full groups and a tail of 3 rows; 2 threads split the groups (the matmul is >= 2^20 flops)
      for (const [n, k2] of [[19, k], [1030, 512]]) {
        const bytes = quantized(type, n, k2, 7);
        const x = normals(2 * k2, 8, 3);
        const ref = new Float32Array(2 * n);
        intMatmulRef(ref, x, type, bytes, 2, k2, n);
        for (const [interleave, threads] of [[false, 1], [true, 1], [true, 2]] as const) {
          e.setDecodeInterleave(interleave);
          e.setThreads(threads);
          const kw = e.storeWeight(type, n, k2, ggmlRowBytes(type, k2), bytes)!;
          const y = new Float32Array(2 * n);
          try {
            e.matmulInt(y, x, kw, 2);
          } finally {
            e.setThreads(1);
            e.setDecodeInterleave(true);
          }
          assert.deepEqual(y, ref, `${variant} ${name} N=${n} K=${k2} interleave ${interleave} threads ${threads}`);
        }
      }
    }
  }
});

test('fuseDecode: weights stacked for one dispatch give each member\'s bits (every decode type and F32, 1 and 2 threads); refused when they do not stack', () => {
  useNodeThreads();
  const f32 = ggmlTypeByName('F32')!;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q8_0', 'Q4_0', 'Q5_0', 'IQ4_NL', 'Q4_K', 'Q6_K', 'F32']) {
      const type = ggmlTypeByName(name)!;
      const k = name === 'F32' ? 260 : 2 * intBlockOf(type.id);
      // q | k | v-like shapes (the last one a different row count); 2 threads split the stacked rows
      const shapes = [[1024, k], [64, k], [516, k]];
      const members = shapes.map(([n, kk], i) => {
        const bytes = name === 'F32' ? new Uint8Array(normals(n * kk, 30 + i).buffer) : quantized(type, n, kk, 30 + i);
        return { n, kw: e.storeWeight(type, n, kk, ggmlRowBytes(type, kk), bytes)! };
      });
      const x = normals(k, 40, 3);
      const refs = members.map(({ n, kw }) => {
        const y = new Float32Array(n);
        if (name === 'F32') e.matmul(y, x, kw, 1);
        else e.matmulInt(y, x, kw, 1);
        return y;
      });
      const fused = e.fuseDecode(members.map((m) => m.kw))!;
      assert.ok(fused, `${variant} ${name}: fused`);
      assert.equal(fused.rows, 1024 + 64 + 516);
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        const y = new Float32Array(fused.rows).fill(NaN);
        try {
          if (name === 'F32') e.matmul(y, x, fused, 1);
          else e.matmulInt(y, x, fused, 1);
        } finally {
          e.setThreads(1);
        }
        let o = 0;
        for (const [i, r] of refs.entries()) {
          assert.deepEqual(y.subarray(o, o + r.length), r, `${variant} ${name} member ${i} threads ${threads}`);
          o += r.length;
        }
      }
      // more than one token: it has no row-by-row bytes
      assert.throws(() => (name === 'F32' ? e.matmul(new Float32Array(4 * fused.rows), normals(4 * k, 41), fused, 4) : e.matmulInt(new Float32Array(4 * fused.rows), normals(4 * k, 41), fused, 4)), /one token|under 4 tokens/);
    }
    // refused: different types, different columns, rows not a multiple of 4, a single weight
    const q4 = ggmlTypeByName('Q4_0')!;
    const q8 = ggmlTypeByName('Q8_0')!;
    const w = (t: GgmlTypeInfo, n: number, kk: number) => e.storeWeight(t, n, kk, ggmlRowBytes(t, kk), quantized(t, n, kk, 50))!;
    assert.equal(e.fuseDecode([w(q4, 8, 64), w(q8, 8, 64)]), null);
    assert.equal(e.fuseDecode([w(q4, 8, 64), w(q4, 8, 96)]), null);
    assert.equal(e.fuseDecode([w(q4, 8, 64), w(q4, 6, 64)]), null);
    // Q4_0's relaxed copy has groups of 8 rows: a member before the last needs a multiple of 8
    assert.equal(e.fuseDecode([w(q4, 12, 64), w(q4, 8, 64)]) === null, variant === 'relaxed', variant);
    assert.ok(e.fuseDecode([w(q4, 8, 64), w(q4, 12, 64)]), variant);
    assert.equal(e.fuseDecode([w(q4, 8, 64)]), null);
    assert.equal(e.fuseDecode([w(f32, 8, 6), w(f32, 8, 6)]), null);
  }
});

test('one-token matmuls on 2 threads with chunks taken from the worker (forced): the same bits, no stale writes', async () => {
  useNodeThreads();
  const e = MatmulEngine.get(variants[0])!;
  const f32 = ggmlTypeByName('F32')!;
  const weights: { kw: KernelWeight; ref: Float32Array; x: Float32Array; n: number; int: boolean }[] = [];
  e.setThreads(1);
  for (const [i, name] of ['Q4_K', 'Q8_0', 'Q6_K', 'Q4_0'].entries()) {
    const type = ggmlTypeByName(name)!;
    const [n, k] = [1030 + 4 * i, 512];
    const bytes = quantized(type, n, k, 11 + i);
    const x = normals(k, 12 + i, 3);
    const ref = new Float32Array(n);
    intMatmulRef(ref, x, type, bytes, 1, k, n);
    weights.push({ kw: e.storeWeight(type, n, k, ggmlRowBytes(type, k), bytes)!, ref, x, n, int: true });
  }
  {
    const [n, k] = [2000, 768];
    const w = normals(n * k, 21);
    const x = normals(k, 22);
    const kw = e.storeWeight(f32, n, k, k * 4, new Uint8Array(w.buffer))!;
    const ref = new Float32Array(n);
    e.matmul(ref, x, kw, 1);
    weights.push({ kw, ref, x, n, int: false });
  }
  const owner = {};
  const out = e.allocF32(2100, owner)!.array; // in the kernels' memory: the workers' commits write into it directly
  const stolen0 = e.threadStats().stolen;
  KernelThreads.stealWaitMs = -1;
  try {
    e.setThreads(2);
    await untilReady(() => e.threadStats().ready);
    // 60 rounds at least, then on until both sides took chunks (a loaded machine may not schedule the worker)
    let rep = 0;
    await repeatUntil(() => {
      for (const w of weights) {
        const y = out.subarray(0, w.n);
        y.fill(NaN);
        if (w.int) e.matmulInt(y, w.x, w.kw, 1);
        else e.matmul(y, w.x, w.kw, 1);
        assert.deepEqual(y, w.ref, `rep ${rep} ${w.kw.type.name}`);
      }
      rep++;
    }, () => rep >= 60 && e.threadStats().stolen > stolen0 && e.threadStats().workerChunks > 0);
    const stats = e.threadStats();
    assert.ok(stats.stolen > stolen0, `the caller took chunks (${JSON.stringify(stats)})`);
    assert.ok(stats.workerChunks > 0, 'workers committed chunks');
  } finally {
    KernelThreads.stealWaitMs = undefined;
    e.setThreads(1);
  }
});

test('intBlock: 0 for types without an integer path and for rows that are not whole blocks', () => {
  const e = MatmulEngine.get(variants[0])!;
  const q8 = ggmlTypeByName('Q8_0')!;
  const f32 = ggmlTypeByName('F32')!;
  assert.equal(e.intBlock(e.storeWeight(f32, 2, 8, 32, new Uint8Array(64))!), 0);
  assert.equal(e.intBlock(e.storeWeight(q8, 1, 32, 34, new Uint8Array(34))!), 32);
  const q4k = ggmlTypeByName('Q4_K')!;
  assert.equal(intBlockOf(q4k.id), 256);
  assert.throws(() => e.matmulInt(new Float32Array(2), new Float32Array(16), e.storeWeight(f32, 2, 8, 32, new Uint8Array(64))!, 1), /no integer matmul/);
});

test('activation rounding in the kernel: ties (x.5 -> away from zero for Q8_0, to even for Q8_K), signed amax, bit for bit', () => {
  const edge = [2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 0.49999997, -0.49999997, 1.5, -1.5, 3.5, 0, -0, 64.5];
  const k = 256;
  const x = Float32Array.from({ length: 2 * k }, (_, i) => (i % 32 === 0 ? 127 : edge[i % edge.length] * (i % 3 === 0 ? 1 : 0.999)));
  x[5] = -127; // Q8_K: the first |v| = amax is negative
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    e.setThreads(1);
    for (const name of ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K']) {
      const type = ggmlTypeByName(name)!;
      const bytes = quantized(type, 8, k, 99);
      const kw = e.storeWeight(type, 8, k, ggmlRowBytes(type, k), bytes)!;
      for (const nTok of [1, 2, 5]) {
        const xs = Float32Array.from({ length: nTok * k }, (_, i) => x[i % x.length]);
        const y = new Float32Array(nTok * 8);
        e.matmulInt(y, xs, kw, nTok);
        const r = new Float32Array(nTok * 8);
        intMatmulRef(r, xs, type, bytes, nTok, k, 8);
        assert.deepEqual(y, r, `${variant} ${name} T=${nTok}`);
      }
    }
  }
});

test('sameInput: a rounding reused across matmuls of one input (q/k/v, gate/up) gives the reference bits; another input, block type or token count is rounded anew', () => {
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const k = 512;
    const x1 = normals(2 * k, 21);
    const x2 = normals(2 * k, 22);
    // Q4_K and Q6_K round to Q8_K, Q4_0 and Q8_0 to Q8_0; 1 and 2 tokens (the decode tiles)
    const ws = ['Q4_K', 'Q6_K', 'Q4_0', 'Q8_0'].map((name, i) => {
      const type = ggmlTypeByName(name)!;
      const bytes = quantized(type, 12, k, 30 + i);
      return { name, type, bytes, kw: e.storeWeight(type, 12, k, ggmlRowBytes(type, k), bytes)! };
    });
    const check = (x: Float32Array, w: (typeof ws)[number], nTok: number, same: boolean) => {
      const ref = new Float32Array(nTok * 12);
      intMatmulRef(ref, x, w.type, w.bytes, nTok, k, 12);
      const y = new Float32Array(nTok * 12);
      e.matmulInt(y, x, w.kw, nTok, same);
      assert.deepEqual(y, ref, `${variant} ${w.name} T=${nTok} sameInput ${same}`);
    };
    for (const nTok of [1, 2]) {
      check(x1, ws[0], nTok, false);
      check(x1, ws[1], nTok, true); // reused (Q8_K of x1)
      check(x1, ws[2], nTok, true); // Q8_0: rounded anew
      check(x1, ws[3], nTok, true); // reused (Q8_0 of x1)
      check(x2, ws[3], nTok, true); // another array: rounded anew
      check(x2, ws[0], 1, true); // another token count / block: rounded anew
    }
  }
});

test('prefill tiles (4 tokens and more): operands at their extremes (int16 lane bounds, wrapping sums), odd rows and quads, many chunks, 1 and 2 threads (rounding on both from 16 tokens: odd quads at T = 66) = intMatmulRef', () => {
  useNodeThreads();
  let checked = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q8_0', 'Q4_0', 'Q4_K', 'Q6_K']) {
      const type = ggmlTypeByName(name)!;
      const k = 512;
      const n = 301;
      const rb = ggmlRowBytes(type, k);
      // random bytes everywhere (every quant and scale pattern, Q8_0's -128 too), fp16 scales fixed at 1.0 / 0.5
      const next = xorshift32(11);
      const bytes = Uint8Array.from({ length: n * rb }, () => next() & 255);
      const dAt = name === 'Q6_K' ? [208] : name === 'Q4_K' ? [0, 2] : [0];
      const bs = type.typeSize;
      for (let b = 0; b < bytes.length; b += bs) for (const o of dAt) { bytes[b + o] = 0; bytes[b + o + 1] = o === 2 ? 0x38 : 0x3c; }
      // extreme rows: all quants at the top (Q6_K 63, Q4_K 15, Q8_0 127) or the bottom
      for (let r = 0; r < 8; r++) {
        for (let b = 0; b < rb; b += bs) {
          const blk = bytes.subarray(r * rb + b, r * rb + b + bs);
          if (name === 'Q6_K') blk.fill(r & 1 ? 0xff : 0x00, 0, 192);
          else if (name === 'Q4_K') blk.fill(r & 1 ? 0xff : 0x00, 16, 144);
          else if (name === 'Q4_0') blk.fill(r & 1 ? 0xff : 0x00, 2, 18);
          else blk.fill(r & 1 ? 0x7f : 0x81, 2, 34);
        }
      }
      for (const nTok of [4, 9, 66, 70]) {
        // activations of equal magnitude (every quant +-127) in half the tokens, normals in the others
        const x = normals(nTok * k, nTok, 2);
        for (let t = 0; t < nTok; t += 2) for (let i = 0; i < k; i++) x[t * k + i] = (t >> 1) % 3 === 0 ? 1 : (t >> 1) % 3 === 1 ? -1 : x[t * k + i] < 0 ? -1 : 1;
        checked += agreesOnThreads(e, type, bytes, x, nTok, k, n, `${variant} ${name} T=${nTok}`);
      }
    }
  }
  assert.equal(checked, variants.length * 4 * 4 * 2);
});

test('block-32 prefill tiles, rows in lanes (8 x 4, default) and tokens in lanes (4 x 8): = intMatmulRef bit for bit on odd shapes (rows not a multiple of 8 or 4, T not a multiple of 4, odd quads), 1 and 2 threads', () => {
  useNodeThreads();
  let checked = 0;
  let seed = 500;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const dflt = e.prefillTile;
    assert.equal(dflt, 'rows');
    for (const name of ['Q8_0', 'Q4_0', 'Q5_0', 'IQ4_NL']) {
      const type = ggmlTypeByName(name)!;
      for (const [nTok, k, n] of [[4, 32, 1], [5, 96, 3], [7, 64, 8], [11, 160, 13], [66, 256, 301], [18, 2816, 21]]) {
        const bytes = quantized(type, n, k, seed++);
        const x = normals(nTok * k, seed++, 3);
        for (const tile of ['rows', 'tokens'] as const) {
          e.prefillTile = tile;
          try {
            checked += agreesOnThreads(e, type, bytes, x, nTok, k, n, `${variant} ${name} T=${nTok} K=${k} N=${n} prefillTile=${tile}`);
          } finally {
            e.prefillTile = dflt;
          }
        }
      }
    }
  }
  assert.equal(checked, variants.length * 4 * 6 * 2 * 2);
});

test('decode tiles (1 and 2 tokens) on the interleaved copies: operands at their extremes (wrapping int16 sums of Q6_K, Q8_0 pair sums at +-128 x 127), groups, half groups and tails, 1 and 2 threads = intMatmulRef', () => {
  useNodeThreads();
  let checked = 0;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    for (const name of ['Q4_K', 'Q6_K', 'Q8_0', 'Q4_0']) {
      const type = ggmlTypeByName(name)!;
      const k = 512;
      const rb = ggmlRowBytes(type, k);
      // 301 rows: groups of 8, the last group of 4 and a tail row; 1028 rows on 2 threads: the second chunk starts at a half group
      for (const n of [301, 1028]) {
        // random bytes everywhere (every quant and scale pattern), fp16 scales fixed at 1.0 / 0.5
        const next = xorshift32(n);
        const bytes = Uint8Array.from({ length: n * rb }, () => next() & 255);
        const dAt = name === 'Q6_K' ? [208] : name === 'Q4_K' ? [0, 2] : [0];
        const bs = type.typeSize;
        for (let b = 0; b < bytes.length; b += bs) for (const o of dAt) { bytes[b + o] = 0; bytes[b + o + 1] = o === 2 ? 0x38 : 0x3c; }
        // extreme rows: all quants at the top (Q6_K 63, Q4_K and Q4_0 15, Q8_0 127) or the bottom (Q8_0 -128), in the first groups and the tail
        for (const r of [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, n - 2, n - 1]) {
          for (let b = 0; b < rb; b += bs) {
            const blk = bytes.subarray(r * rb + b, r * rb + b + bs);
            if (name === 'Q6_K') blk.fill(r & 1 ? 0xff : 0x00, 0, 192);
            else if (name === 'Q4_K') blk.fill(r & 1 ? 0xff : 0x00, 16, 144);
            else if (name === 'Q8_0') blk.fill(r & 1 ? 0x7f : 0x80, 2, 34);
            else blk.fill(r & 1 ? 0xff : 0x00, 2, 18);
          }
        }
        for (const nTok of [1, 2]) {
          for (const sign of [1, -1, 0]) {
            // activations of equal magnitude (every quant +-127: the largest int16 lane sums), or normals
            const x = normals(nTok * k, n + nTok, 2);
            if (sign !== 0) for (let i = 0; i < x.length; i++) x[i] = sign;
            checked += agreesOnThreads(e, type, bytes, x, nTok, k, n, `${variant} ${name} N=${n} T=${nTok} x=${sign}`);
          }
        }
      }
    }
  }
  assert.equal(checked, variants.length * 4 * 2 * 2 * 3 * 2);
});
