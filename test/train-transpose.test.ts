/**
 * The training engine's transpose (wasm/train.ts: 4 x 4 tiles in registers, edges element by element)
 * moves every element where transposeRef does and touches nothing else: shapes with and without
 * multiples of 4, row strides wider than the rows, offsets, every bit pattern kept.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { transposeRef, wasmBackend } from '../src/train/gemm.js';

test('train transpose: the WebAssembly kernel is transposeRef exactly (edges, strides, offsets, bit patterns)', () => {
  const be = wasmBackend(1 << 16, 1);
  if (!be) return;
  let s = 7;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const src = be.alloc(20000) as Float32Array;
  const dst = be.alloc(20000) as Float32Array;
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const dBits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < bits.length; i++) bits[i] = next() & 0xbf7fffff; // finite values of every size and sign (exponent below 255)
  let cases = 0;
  for (const rows of [1, 3, 4, 5, 8, 13, 67])
    for (const cols of [1, 2, 4, 7, 12, 65]) {
      const lds = cols + (rows % 3);
      const ldd = rows + (cols % 2) * 3;
      const sOff = (rows * 5) % 11;
      const dOff = (cols * 3) % 7;
      for (let i = 0; i < dBits.length; i++) dBits[i] = 0x7fc00000 + (i & 0xffff); // marked: what the kernel must not touch
      const want = dst.slice();
      const wantBits = new Uint32Array(want.buffer);
      transposeRef(want, dOff, ldd, src, sOff, lds, rows, cols);
      // transposeRef copies through JavaScript numbers: the values moved are finite, so their bits are kept
      be.transpose(dst, dOff, ldd, src, sOff, lds, rows, cols);
      for (let i = 0; i < dBits.length; i++) if (dBits[i] !== wantBits[i]) assert.fail(`${rows} x ${cols} (lds ${lds}, ldd ${ldd}): element ${i} is ${dBits[i].toString(16)}, want ${wantBits[i].toString(16)}`);
      cases++;
    }
  assert.equal(cases, 42);
  be.close?.();
});
