/**
 * GPTQ's lazy block update in WebAssembly (wasm/gptq.ts lazyUpdate: U's block copied in strips of 32
 * columns side by side, read by every pair of rows; the tail columns and an odd last row one element at
 * a time; blocks past the strip buffer read U in place) against its TypeScript reference lazyUpdateRef,
 * bit for bit: every element gets the same multiplies and subtracts in the same order.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gptqWorkspace, lazyUpdateRef } from '../src/kernels/gptq.js';
import { wasmVariant } from '../src/kernels/wasm.js';

const bits = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

test('GPTQ lazy update: bit for bit lazyUpdateRef (strips and their remainder, tail columns, odd rows, blocks wider than the strip buffer)', () => {
  assert.notEqual(wasmVariant(), 'off', 'the WebAssembly kernels are on (else nothing is compared)');
  let s = 11;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
  // k - i2: 32 strips and a short one (8..24 columns), then 0..7 tail columns; n odd and even; count
  // below, at and above the 128 rows the strip buffer holds
  const cases: [n: number, k: number, block: number, count: number, i1: number, i2: number][] = [
    [6, 200, 64, 64, 0, 64],
    [7, 203, 64, 50, 10, 60],
    [5, 301, 128, 128, 0, 128],
    [4, 301, 160, 150, 3, 153],
    [9, 300, 200, 200, 0, 200],
    [3, 77, 16, 1, 40, 41],
  ];
  let compared = 0;
  for (const [n, k, block, count, i1, i2] of cases) {
    const ws = gptqWorkspace(n, k, block, undefined, false);
    for (let i = 0; i < k * k; i++) ws.u[i] = rnd() * (i % 13 === 0 ? 1e3 : 1);
    for (let i = 0; i < n * k; i++) ws.w[i] = rnd();
    for (let i = 0; i < n * block; i++) ws.err[i] = i % 7 === 3 ? 0 : rnd();
    const w = Float64Array.from(ws.w);
    const e = Float64Array.from(ws.err);
    const u = Float64Array.from(ws.u);
    ws.lazyUpdate(count, i1, i2);
    lazyUpdateRef(w, n, k, e, block, count, u, i1, i2);
    assert.ok(bits(ws.w.subarray(0, n * k)).equals(bits(w)), `n ${n} k ${k} count ${count} i1 ${i1} i2 ${i2}: the reference's bits`);
    assert.ok(bits(ws.u.subarray(0, k * k)).equals(bits(u)), 'U is left as it was');
    compared += n * (k - i2);
  }
  assert.ok(compared > 4000);
});
