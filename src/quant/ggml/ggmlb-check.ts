/**
 * Argument checks and float32 helpers shared by the GGML codecs in ggmlb.ts (IQ, ternary, FP4,
 * Q1_0/Q2_0). Every quantizer rejects non-finite input: llama.cpp would silently write garbage.
 */
import { fail } from '../../errors.js';
import type { GgmlTypeInfo } from './types.js';

/** Validates a quantize call; returns the bytes per row. */
export function checkQuantize(
  t: GgmlTypeInfo,
  src: Float32Array,
  nRows: number,
  rowLength: number,
  out: Uint8Array,
  importance?: Float32Array,
): number {
  if (!Number.isInteger(nRows) || nRows < 0) fail(`${t.name}: bad row count ${nRows}`);
  if (!Number.isInteger(rowLength) || rowLength <= 0) fail(`${t.name}: bad row length ${rowLength}`);
  if (rowLength % t.blockSize !== 0) fail(`${t.name}: row length ${rowLength} is not a multiple of the block size ${t.blockSize}`);
  const rowBytes = (rowLength / t.blockSize) * t.typeSize;
  if (src.length < nRows * rowLength) fail(`${t.name}: input has ${src.length} floats, need ${nRows} x ${rowLength}`);
  if (out.length < nRows * rowBytes) fail(`${t.name}: output has ${out.length} bytes, need ${nRows * rowBytes}`);
  if (importance !== undefined) {
    if (importance.length !== rowLength) fail(`${t.name}: importance vector has ${importance.length} entries, row length is ${rowLength}`);
    for (let j = 0; j < rowLength; j++) {
      const w = importance[j];
      if (!(w >= 0 && w < Infinity)) fail(`${t.name}: importance[${j}] = ${w} is not a finite non-negative number`);
    }
  }
  const n = nRows * rowLength;
  for (let i = 0; i < n; i++) {
    const v = src[i];
    if (!(v - v === 0)) fail(`${t.name}: input element ${i} is ${v}; only finite values can be quantized`);
  }
  return rowBytes;
}

/** Validates a dequantize call; returns the number of blocks. */
export function checkDequantize(t: GgmlTypeInfo, src: Uint8Array, n: number, out: Float32Array): number {
  if (!Number.isInteger(n) || n < 0) fail(`${t.name}: bad element count ${n}`);
  if (n % t.blockSize !== 0) fail(`${t.name}: ${n} elements is not a multiple of the block size ${t.blockSize}`);
  const nb = n / t.blockSize;
  if (src.length < nb * t.typeSize) fail(`${t.name}: ${src.length} bytes of data, need ${nb * t.typeSize} for ${n} elements`);
  if (out.length < n) fail(`${t.name}: output has ${out.length} floats, need ${n}`);
  return nb;
}

/** C's roundf / lroundf on a float32 value: nearest integer, halves away from zero. */
export function roundHalfAway(v: number): number {
  return v < 0 ? -Math.floor(0.5 - v) : Math.floor(v + 0.5);
}
