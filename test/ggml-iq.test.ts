/**
 * GGML non-linear, ternary, FP4, Q1_0/Q2_0 and grid codecs (src/quant/ggml/ggmlb.ts): byte-identical
 * to llama.cpp on the golden vectors (test/golden/ggml, produced by tools/ggml-golden from llama.cpp's
 * own C code), SQNR on random normal data, and clear errors for bad input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadGolden } from './ggml-golden.js';
import { IQ_NEEDS_IMPORTANCE } from '../src/quant/ggml/iq-quant.js';
import { ggmlbCodecs, quantizeIq4NlRef, quantizeIq4XsRef } from '../src/quant/ggml/ggmlb.js';
import { f32ToUe4m3, mxfp4Codec, nvfp4Codec, quantizeMxfp4Scan, quantizeNvfp4Scan, ue4m3ToF32Half } from '../src/quant/ggml/fp4.js';
import { bestIndexIq4, bestIndexIq4Ref } from '../src/quant/ggml/iq.js';
import { ggmlRowBytes } from '../src/quant/ggml/types.js';
import type { GgmlCodec } from '../src/quant/ggml/types.js';
import { LowbitError } from '../src/errors.js';
import { sqnrDb } from '../src/eval/metrics.js';

/** index of the first differing byte, or -1 */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** llama.cpp's quantize_row_X_ref, row by row (for IQ4_NL it differs from quantize_X(NULL)) */
function quantizeRef(c: GgmlCodec, x: Float32Array, rows: number, rowLength: number, out: Uint8Array): void {
  if (c.type.name === 'IQ4_NL') return quantizeIq4NlRef(x, rows, rowLength, out);
  if (c.type.name === 'IQ4_XS') return quantizeIq4XsRef(x, rows, rowLength, out);
  const rowBytes = ggmlRowBytes(c.type, rowLength);
  for (let r = 0; r < rows; r++) c.quantize!(x.subarray(r * rowLength, (r + 1) * rowLength), 1, rowLength, out.subarray(r * rowBytes, (r + 1) * rowBytes));
}

for (const codec of ggmlbCodecs) {
  const name = codec.type.name;
  test(`${name}: byte-identical to llama.cpp golden vectors`, () => {
    const entries = loadGolden({ type: name });
    assert.ok(entries.length > 0, `no golden entries for ${name}`);
    const report: string[] = [];
    const failures: string[] = [];
    for (const e of entries) {
      const label = `${e.dataset}.${e.variant}`;
      const n = e.rows * e.rowLength;
      const parts: string[] = [];
      // quantize: ref / noimatrix / imatrix (the grid types are dequantize-only)
      if (e.variant !== 'dequant' && codec.quantize) {
        const out = new Uint8Array(e.bytes.length);
        if (e.variant === 'ref') quantizeRef(codec, e.input!, e.rows, e.rowLength, out);
        else codec.quantize(e.input!, e.rows, e.rowLength, out, e.variant === 'imatrix' ? e.importance : undefined);
        const at = firstDiff(out, e.bytes);
        if (at < 0) parts.push('quant ok');
        else {
          parts.push('quant DIFF');
          const ts = codec.type.typeSize;
          failures.push(`${label}: quantized bytes differ first at byte ${at} (block ${Math.floor(at / ts)}, offset ${at % ts}): got ${out[at]}, want ${e.bytes[at]}`);
        }
      }
      // dequantize llama.cpp's bytes; compare float bit patterns
      if (e.dequant) {
        const y = new Float32Array(n);
        codec.dequantize(e.bytes, n, y);
        const at = firstDiff(new Uint8Array(y.buffer), new Uint8Array(e.dequant.buffer, e.dequant.byteOffset, e.dequant.byteLength));
        if (at < 0) parts.push('dequant ok');
        else {
          parts.push('dequant DIFF');
          failures.push(`${label}: dequantized element ${at >> 2} is ${y[at >> 2]}, want ${e.dequant[at >> 2]}`);
        }
      }
      report.push(`${label}: ${parts.join(', ')}`);
    }
    console.log(`# ${name}: ${report.join('; ')}`);
    assert.deepEqual(failures, [], `${name} differs from llama.cpp:\n  ${failures.join('\n  ')}`);
  });
}

/** deterministic normal samples (splitmix32 + Box-Muller) */
function normals(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return out;
}

// SQNR floors (dB) on N(0,1) data, 16 rows x 1024, a little under the measured values
const SQNR_FLOOR: Record<string, number> = {
  IQ4_NL: 21.5, // 22.39
  IQ4_XS: 21.5, // 22.33
  TQ1_0: 1.5, // 1.90 (absmax ternary)
  TQ2_0: 1.5, // 1.90
  MXFP4: 17.5, // 18.81
  NVFP4: 19.5, // 20.46
  Q1_0: 4, // 4.46
  Q2_0: 2.5, // 2.86 (absmax scale, levels -1..2)
  IQ2_XXS: 8, // 8.79 (with importance)
  IQ2_XS: 9, // 9.90 (with importance)
  IQ2_S: 11, // 11.59
  IQ3_XXS: 13, // 13.53
  IQ3_S: 15, // 15.63
  IQ1_S: 5, // 5.67 (with importance)
  IQ1_M: 4.2, // 4.72 (6.14 with importance)
};

test('SQNR on random normal data', () => {
  const rows = 16;
  const rowLength = 1024;
  const x = normals(rows * rowLength, 12345);
  const importance = new Float32Array(rowLength);
  const imp = normals(rowLength, 777);
  for (let j = 0; j < rowLength; j++) importance[j] = Math.exp(imp[j]);
  const lines: string[] = [];
  for (const c of ggmlbCodecs) {
    if (!c.quantize) continue;
    const q = new Uint8Array(rows * ggmlRowBytes(c.type, rowLength));
    const y = new Float32Array(rows * rowLength);
    // IQ2_XXS / IQ2_XS / IQ1_S need an importance matrix (as in llama.cpp): measured with it
    const needs = IQ_NEEDS_IMPORTANCE.has(c.type.name);
    if (needs) assert.throws(() => c.quantize!(x, rows, rowLength, q), /needs an importance matrix/);
    c.quantize(x, rows, rowLength, q, needs ? importance : undefined);
    c.dequantize(q, rows * rowLength, y);
    const db = sqnrDb(x, y);
    let line = `${c.type.name} ${db.toFixed(2)} dB${needs ? ' (with importance)' : ''}`;
    if (c.usesImportance && !needs) {
      c.quantize(x, rows, rowLength, q, importance);
      c.dequantize(q, rows * rowLength, y);
      line += ` (with importance: ${sqnrDb(x, y).toFixed(2)} dB unweighted)`;
    }
    lines.push(line);
    const floor = SQNR_FLOOR[c.type.name];
    assert.ok(floor !== undefined, `no SQNR floor for ${c.type.name}`);
    assert.ok(db >= floor, `${c.type.name}: SQNR ${db.toFixed(2)} dB below ${floor} dB`);
    // determinism
    const q1 = new Uint8Array(q.length);
    const q2 = new Uint8Array(q.length);
    c.quantize(x, rows, rowLength, q1, needs ? importance : undefined);
    c.quantize(x, rows, rowLength, q2, needs ? importance : undefined);
    assert.deepEqual(q1, q2, `${c.type.name}: quantize is not deterministic`);
  }
  console.log(`# SQNR N(0,1): ${lines.join('; ')}`);
});

test('bad input is rejected with clear errors', () => {
  for (const c of ggmlbCodecs) {
    const bs = c.type.blockSize;
    const rb = c.type.typeSize;
    // dequantize: element count not a multiple of the block size, short input
    assert.throws(() => c.dequantize(new Uint8Array(rb), bs + 1, new Float32Array(bs + 1)), (e: unknown) => e instanceof LowbitError && /block size/.test(e.message));
    assert.throws(() => c.dequantize(new Uint8Array(rb - 1), bs, new Float32Array(bs)), LowbitError);
    if (!c.quantize) continue;
    const x = normals(2 * bs, 1);
    const out = new Uint8Array(2 * rb);
    assert.throws(() => c.quantize!(x, 1, bs + 1, out), (e: unknown) => e instanceof LowbitError && /not a multiple/.test(e.message));
    assert.throws(() => c.quantize!(x, 1, 0, out), LowbitError);
    assert.throws(() => c.quantize!(x, 3, bs, out), LowbitError); // input too short
    assert.throws(() => c.quantize!(x, 2, bs, new Uint8Array(rb)), LowbitError); // output too short
    for (const bad of [NaN, Infinity, -Infinity]) {
      const xb = x.slice();
      xb[bs + 3] = bad;
      assert.throws(() => c.quantize!(xb, 2, bs, out), (e: unknown) => e instanceof LowbitError && e.message.includes(c.type.name) && e.message.includes(String(bad)));
    }
    assert.throws(() => c.quantize!(x, 2, bs, out, new Float32Array(bs - 1)), (e: unknown) => e instanceof LowbitError && /importance/.test(e.message));
    const imp = new Float32Array(bs).fill(1);
    imp[2] = NaN;
    assert.throws(() => c.quantize!(x, 2, bs, out, imp), LowbitError);
  }
});

test('UE4M3 scale: codes re-encode to themselves below 256; ggml saturates [256, 448] to 0x7E', () => {
  // the decoder returns scale/2; 0x7F is the NaN slot and decodes to 0
  for (let code = 1; code < 0x7f; code++) {
    const v = 2 * ue4m3ToF32Half(code);
    assert.equal(f32ToUe4m3(v), code < 0x78 ? code : 0x7e, `code 0x${code.toString(16)} (${v})`);
  }
  assert.equal(f32ToUe4m3(255.9), 0x7e); // rounds up into exponent 15 -> saturates
  assert.equal(f32ToUe4m3(1.0625), 0x39); // tie between 1 and 1.125: ggml rounds the mantissa half up (RNE would give 0x38)
  assert.equal(f32ToUe4m3(2 ** -10), 1); // (int)(0.5 + 0.5): the subnormal half rounds up
  assert.equal(f32ToUe4m3(2 ** -11), 0); // (int)(0.25 + 0.5) = 0
  assert.equal(f32ToUe4m3(3 * 2 ** -10), 2); // (int)(1.5 + 0.5) = 2
  assert.equal(f32ToUe4m3(0), 0);
  assert.equal(f32ToUe4m3(-1), 0);
  assert.equal(f32ToUe4m3(NaN), 0);
  assert.equal(f32ToUe4m3(1e9), 0x7e); // saturates at 448
});

test('IQ4 codebook lookup table agrees with the bisection reference', () => {
  // every float32 within 4096 ulps of each codebook value and each midpoint, plus random values
  const f = new Float32Array(1);
  const u = new Int32Array(f.buffer);
  const check = (x: number): void => assert.equal(bestIndexIq4(x), bestIndexIq4Ref(x), `x = ${x}`);
  const kv = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
  const centres = [...kv, ...kv.slice(1).map((v, k) => (v + kv[k]) / 2)];
  for (const c of centres) {
    f[0] = c;
    const base = u[0];
    for (let d = -4096; d <= 4096; d++) {
      u[0] = base + d;
      check(f[0]);
    }
  }
  for (const v of normals(100000, 99)) check(Math.fround(v * 60));
  for (const v of [NaN, Infinity, -Infinity, 0, -0, 1e30, -1e30]) check(v);
});

test('MXFP4 / NVFP4 threshold fast path equals the plain scan', () => {
  // blocks at scales from 1e-42 to 1e30, with outliers, zeros, subnormals and exact ties (k/4 multiples)
  const n = 64 * 4096;
  const x = normals(n, 4242);
  const u = normals(n, 4343);
  for (let i = 0; i < n; i++) {
    const block = i >> 6;
    const scale = 10 ** ((block % 73) - 42);
    let v = x[i] * scale;
    if (block % 7 === 3 && (i & 63) === 5) v *= 1e6; // one outlier: saturates NVFP4 scale
    if (block % 11 === 4) v = Math.round(u[i] * 16) / 4 * scale; // ties between codes
    if (block % 13 === 6 && (i & 1)) v = 0;
    x[i] = v;
  }
  for (const [codec, scan] of [[mxfp4Codec, quantizeMxfp4Scan], [nvfp4Codec, quantizeNvfp4Scan]] as const) {
    const bytes = ggmlRowBytes(codec.type, n);
    const fast = new Uint8Array(bytes);
    const ref = new Uint8Array(bytes);
    codec.quantize!(x, 1, n, fast);
    scan(x, n, ref);
    const at = firstDiff(fast, ref);
    assert.equal(at, -1, `${codec.type.name}: fast path differs at byte ${at}`);
  }
});

test('MXFP4 / NVFP4 fast path at every decision boundary of every scale', () => {
  // for each scale: blocks whose first element fixes the scale and whose others sit on the midpoints
  // between adjacent e2m1 products, and 1 and 2 float32 ulps either side, both signs
  const f = new Float32Array(1);
  const u = new Int32Array(f.buffer);
  const nudge = (v: number, ulps: number): number => {
    f[0] = v;
    u[0] += ulps;
    return f[0];
  };
  const kv = [0, 1, 2, 3, 4, 6, 8, 12];
  const build = (blockSize: number, scales: Array<{ amax: number; d: number }>): Float32Array => {
    const vals: number[] = [];
    for (const { amax, d } of scales) {
      const probes: number[] = [];
      for (let m = 0; m < 7; m++) {
        const mid = Math.fround((Math.fround(kv[m] * d) + Math.fround(kv[m + 1] * d)) / 2);
        for (const off of [-2, -1, 0, 1, 2]) probes.push(nudge(mid, off), -nudge(mid, off));
      }
      for (let i = 0; i < probes.length; i += blockSize - 1) {
        const chunk = probes.slice(i, i + blockSize - 1);
        while (chunk.length < blockSize - 1) chunk.push(0);
        vals.push(amax, ...chunk);
      }
    }
    return Float32Array.from(vals);
  };
  const mx: Array<{ amax: number; d: number }> = [];
  for (let e = 0; e <= 252; e++) mx.push({ amax: 1.5 * 2 ** (e - 125), d: 2 ** (e - 128) });
  const nv: Array<{ amax: number; d: number }> = [];
  for (let c = 1; c < 0x78; c++) nv.push({ amax: Math.fround(12 * ue4m3ToF32Half(c)), d: ue4m3ToF32Half(c) });
  for (const [codec, scan, scales] of [[mxfp4Codec, quantizeMxfp4Scan, mx], [nvfp4Codec, quantizeNvfp4Scan, nv]] as const) {
    const bs = codec === mxfp4Codec ? 32 : 16;
    let x = build(bs, scales);
    const pad = (codec.type.blockSize - (x.length % codec.type.blockSize)) % codec.type.blockSize;
    if (pad) x = Float32Array.from([...x, ...new Array<number>(pad).fill(0)]);
    const bytes = ggmlRowBytes(codec.type, x.length);
    const fast = new Uint8Array(bytes);
    const ref = new Uint8Array(bytes);
    codec.quantize!(x, 1, x.length, fast);
    scan(x, x.length, ref);
    assert.equal(firstDiff(fast, ref), -1, `${codec.type.name}: fast path differs from the scan`);
  }
});
