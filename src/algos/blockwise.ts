/**
 * Whole-matrix quantization with a block codec (block-codec.ts) other than GPTQ:
 *   rtnBlocks      the codec itself on every block (optionally with an importance vector)
 *   clipBlocks     per block, a search over clip ratios: the codec quantizes the shrunk block x * r (so
 *                  it picks smaller scales), the block is rounded onto that grid, and the ratio with the
 *                  least output error e^T H_bb e (H_bb: the block's diagonal sub-block of the Hessian,
 *                  or a diagonal importance) wins (AWQ's clipping search, GPTQ's `mse` grid)
 *   hqqBlocks      HQQ's zero/scale for asymmetric targets, stored through the codec (see hqq.ts)
 * Each returns the codec's bytes and their exact dequantized values.
 */
import { fail } from '../errors.js';
import { BlockGrids, snapToBlock, type BlockCodec } from './block-codec.js';
import { hqqFit, type HqqOptions } from './hqq.js';

export interface BlockResult {
  bytes: Uint8Array;
  /** dequantized values, n x k */
  q: Float32Array;
}

function checkShape(c: BlockCodec, w: Float32Array, n: number, k: number): number {
  if (w.length !== n * k) fail(`${c.name}: ${w.length} values are not ${n} x ${k}`);
  if (k % c.blockSize !== 0) fail(`${c.name}: row length ${k} is not a multiple of its block size ${c.blockSize}`);
  return k / c.blockSize;
}

/** Round to nearest with the codec (with `importance` per column when the codec uses one). */
export function rtnBlocks(c: BlockCodec, w: Float32Array, n: number, k: number, importance?: Float32Array): BlockResult {
  const nb = checkShape(c, w, n, k);
  const bs = c.blockSize;
  const bytes = new Uint8Array(n * nb * c.blockBytes);
  const q = new Float32Array(n * k);
  for (let r = 0; r < n; r++)
    for (let b = 0; b < nb; b++) {
      const blk = r * nb + b;
      c.quantize(w, r * k + b * bs, bytes, blk * c.blockBytes, importance?.subarray(b * bs, (b + 1) * bs));
      c.dequantize(bytes, blk * c.blockBytes, q, r * k + b * bs);
    }
  return { bytes, q };
}

/** clip ratios searched by clipBlocks: 1.00, 0.95, ..., 0.50 (AWQ's grid of 20 over [0.5, 1]) */
export const CLIP_RATIOS: readonly number[] = Array.from({ length: 11 }, (_, i) => 1 - i * 0.05);

/**
 * Per block, the clip ratio minimizing e^T H_bb e (h: k x k Hessian) or sum_j imp_j e_j^2 (imp: k).
 */
export function clipBlocks(c: BlockCodec, w: Float32Array, n: number, k: number, weight: { h?: Float64Array; importance?: Float32Array }, ratios: readonly number[] = CLIP_RATIOS): BlockResult {
  const nb = checkShape(c, w, n, k);
  const bs = c.blockSize;
  const grids = new BlockGrids(c, 1);
  const bytes = new Uint8Array(n * nb * c.blockBytes);
  const q = new Float32Array(n * k);
  const shrunk = new Float32Array(bs);
  const cand = new Uint8Array(c.blockBytes);
  const candQ = new Float32Array(bs);
  const codes = new Uint16Array(bs);
  const e = new Float64Array(bs);
  const { h, importance } = weight;
  for (let r = 0; r < n; r++)
    for (let b = 0; b < nb; b++) {
      const xo = r * k + b * bs;
      const blk = r * nb + b;
      let best = Infinity;
      for (const ratio of ratios) {
        for (let j = 0; j < bs; j++) shrunk[j] = Math.fround(w[xo + j] * ratio);
        c.quantize(shrunk, 0, cand, 0);
        snapToBlock(grids, cand, 0, w, xo, candQ, 0, codes);
        for (let j = 0; j < bs; j++) e[j] = w[xo + j] - candQ[j];
        let loss = 0;
        if (h) {
          const c0 = b * bs;
          for (let i = 0; i < bs; i++) {
            if (e[i] === 0) continue;
            let s = 0;
            const hr = (c0 + i) * k + c0;
            for (let j = 0; j < bs; j++) s += h[hr + j] * e[j];
            loss += e[i] * s;
          }
        } else for (let j = 0; j < bs; j++) loss += (importance ? importance[b * bs + j] : 1) * e[j] * e[j];
        if (loss < best) {
          best = loss;
          bytes.set(cand, blk * c.blockBytes);
          q.set(candQ, xo);
        }
      }
    }
  return { bytes, q };
}

/**
 * HQQ through a codec: per block, HQQ's (step, zero) for `bits`-bit codes; the codec then quantizes a
 * block spanning exactly [(0 - z) * step, (qmax - z) * step] (so a min/max codec stores that range) and
 * the real values are rounded onto the stored grid. Only for asymmetric (zero-point / min) targets.
 */
export function hqqBlocks(c: BlockCodec, w: Float32Array, n: number, k: number, opts: HqqOptions = {}): BlockResult {
  const nb = checkShape(c, w, n, k);
  const bs = c.blockSize;
  const grids = new BlockGrids(c, 1);
  const bits = grids.layout.bits;
  const qmax = 2 ** bits - 1;
  const bytes = new Uint8Array(n * nb * c.blockBytes);
  const q = new Float32Array(n * k);
  const params = new Float64Array(2);
  const span = new Float32Array(bs);
  const codes = new Uint16Array(bs);
  for (let r = 0; r < n; r++)
    for (let b = 0; b < nb; b++) {
      const xo = r * k + b * bs;
      const at = (r * nb + b) * c.blockBytes;
      hqqFit(w, xo, bs, bits, params, 0, opts);
      const [step, z] = params;
      const lo = Math.fround(-z * step);
      const hi = Math.fround((qmax - z) * step);
      for (let j = 0; j < bs; j++) span[j] = j % 2 ? hi : lo;
      c.quantize(span, 0, bytes, at);
      snapToBlock(grids, bytes, at, w, xo, q, xo, codes);
    }
  return { bytes, q };
}

/** Does HQQ apply to this target (a zero-point or min to optimize)? */
export function hqqApplies(name: string): boolean {
  return /_asym|^Q4_1$|^Q5_1$/i.test(name);
}
