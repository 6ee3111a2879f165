/**
 * Quantization boxes: for the closed-form GGML types, every point inside a tensor's box quantizes to the
 * same bytes, and an element moved just past its interval changes them (unless pinned to its value).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { quantizationBox } from '../src/audit/boxes.js';
import { xorshift32 } from '../src/rng.js';

function quantizeAll(type: string, x: Float32Array, cols: number): Uint8Array {
  const c = blockCodecFor(type, cols);
  const out = new Uint8Array((x.length / c.blockSize) * c.blockBytes);
  for (let k = 0; k < x.length / c.blockSize; k++) c.quantize(x, k * c.blockSize, out, k * c.blockBytes);
  return out;
}

test('boxes of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 are exact: inside keeps the bytes, just outside does not', () => {
  const r = xorshift32(11);
  const u = () => r() / 2 ** 32;
  for (const type of ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1']) {
    const rows = 6, cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => (u() - 0.5) * 0.1 * (1 + 3 * u() * u()));
    const box = quantizationBox(type, w, rows, cols, { seed: 3 });
    assert.equal(box.pinnedBlocks, 0, `${type}: every block keeps a box`);
    assert.deepEqual(box.bytes, quantizeAll(type, w, cols));
    for (let s = 0; s < 30; s++) {
      const x = Float32Array.from(w, (_, i) => box.lo[i] + u() * (box.hi[i] - box.lo[i]));
      assert.deepEqual(quantizeAll(type, x, cols), box.bytes, `${type}: a random point of the box`);
    }
    // an element moved past its interval by a tenth of the interval's width changes the bytes
    let moved = 0, changed = 0;
    const bs = blockCodecFor(type, cols).blockSize;
    for (let i = 0; i < w.length; i += 7) {
      const width = box.hi[i] - box.lo[i];
      const block = w.subarray(i - (i % bs), i - (i % bs) + bs);
      // pinned elements, and ones whose box reaches the block's maximum (moving past it moves the scale,
      // which may or may not change the bytes) are not "just outside" cases
      if (width === 0 || box.hi[i] + 0.1 * width >= Math.max(...block)) continue;
      const x = Float32Array.from(w);
      x[i] = box.hi[i] + 0.1 * width;
      moved++;
      if (quantizeAll(type, x, cols).some((v, k) => v !== box.bytes[k])) changed++;
    }
    assert.ok(changed >= 0.9 * moved, `${type}: ${changed}/${moved} moves past the box changed the bytes`);
    const mean = box.hi.reduce((a, h, i) => a + h - box.lo[i], 0) / w.length;
    assert.ok(mean > 0, `${type}: boxes have width`);
  }
});
