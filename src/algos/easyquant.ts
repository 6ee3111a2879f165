/**
 * EasyQuant (Tang et al. 2023): data-free weight quantization in two steps.
 *   1. Outlier isolation: per output channel (row), the weights farthest from the row mean are kept in
 *      full precision (f16 here). The paper keeps |w - mean| > n sigma (n ~ 3, under 1 % of weights);
 *      lowbit keeps a fixed budget per row, the round(fraction x k) largest |w - mean| (at least one),
 *      so the file's outlier tensors have a fixed shape [rows, perRow] and the writer knows it in advance.
 *   2. Scale optimization for the rest: the quantization range of every block is optimized for the
 *      reconstruction error of its non-outlier weights, sum (w - Q(w; s))^2. The paper descends the
 *      gradient of that error in s; here the codec chooses its scale for the block shrunk by r, the
 *      block is rounded onto that grid, and the best r of a fine grid (1.00, 0.98, ..., 0.50) is kept:
 *      the same 1-D objective, searched exhaustively at 2 % resolution, and the scale the file stores
 *      is the codec's own (any block type of the registry).
 * Outliers do not take part in choosing a block's range: they are replaced by the mean of the block's
 * other weights when the codec picks its scales, and their codes are whatever that block gives them
 * (the runtime overwrites them with the f16 values).
 */
import { fail } from '../errors.js';
import { fakeQuantRef } from '../formats/cast.js';
import { fp16 } from '../formats/registry.js';
import { BlockGrids, snapToBlock, type BlockCodec } from './block-codec.js';
import type { BlockResult } from './blockwise.js';

/** EasyQuant's range grid: 1.00, 0.98, ..., 0.50 */
export const EASYQUANT_RATIOS: readonly number[] = Array.from({ length: 26 }, (_, i) => 1 - i * 0.02);

/** outliers kept per row of k values for a fraction (at least one when the fraction is positive) */
export const outliersPerRow = (fraction: number, k: number) => (fraction > 0 ? Math.min(k, Math.max(1, Math.round(fraction * k))) : 0);

export interface Outliers {
  perRow: number;
  /** rows x perRow column indices (ascending within a row) */
  index: Uint16Array;
  /** rows x perRow f16 values */
  value: Float32Array;
}

export interface EasyQuantResult extends BlockResult {
  outliers: Outliers;
}

/** the perRow columns of row r with the largest |w - mean| (ascending) */
function rowOutliers(w: Float32Array, r: number, k: number, perRow: number): number[] {
  let mean = 0;
  for (let j = 0; j < k; j++) mean += w[r * k + j];
  mean /= k;
  const order = Array.from({ length: k }, (_, j) => j).sort((a, b) => Math.abs(w[r * k + b] - mean) - Math.abs(w[r * k + a] - mean) || a - b);
  return order.slice(0, perRow).sort((a, b) => a - b);
}

export function easyQuantBlocks(c: BlockCodec, w: Float32Array, n: number, k: number, fraction: number, ratios: readonly number[] = EASYQUANT_RATIOS): EasyQuantResult {
  if (w.length !== n * k) fail(`${c.name}: ${w.length} values are not ${n} x ${k}`);
  if (k % c.blockSize !== 0) fail(`${c.name}: row length ${k} is not a multiple of its block size ${c.blockSize}`);
  if (k > 65536) fail(`EasyQuant: rows of ${k} values are longer than its u16 outlier indices allow`);
  const bs = c.blockSize;
  const nb = k / bs;
  const perRow = outliersPerRow(fraction, k);
  const grids = new BlockGrids(c, 1);
  const bytes = new Uint8Array(n * nb * c.blockBytes);
  const q = new Float32Array(n * k);
  const index = new Uint16Array(n * perRow);
  const value = new Float32Array(n * perRow);
  const isOutlier = new Uint8Array(k);
  const filled = new Float32Array(bs);
  const shrunk = new Float32Array(bs);
  const cand = new Uint8Array(c.blockBytes);
  const candQ = new Float32Array(bs);
  const codes = new Uint16Array(bs);
  for (let r = 0; r < n; r++) {
    isOutlier.fill(0);
    rowOutliers(w, r, k, perRow).forEach((j, i) => {
      isOutlier[j] = 1;
      index[r * perRow + i] = j;
      value[r * perRow + i] = w[r * k + j];
    });
    for (let b = 0; b < nb; b++) {
      const xo = r * k + b * bs;
      let sum = 0;
      let count = 0;
      for (let j = 0; j < bs; j++) if (!isOutlier[b * bs + j]) (sum += w[xo + j]), count++;
      const fill = count ? Math.fround(sum / count) : 0;
      for (let j = 0; j < bs; j++) filled[j] = isOutlier[b * bs + j] ? fill : w[xo + j];
      let best = Infinity;
      for (const ratio of ratios) {
        for (let j = 0; j < bs; j++) shrunk[j] = Math.fround(filled[j] * ratio);
        c.quantize(shrunk, 0, cand, 0);
        snapToBlock(grids, cand, 0, filled, 0, candQ, 0, codes);
        let loss = 0;
        for (let j = 0; j < bs; j++) if (!isOutlier[b * bs + j]) loss += (filled[j] - candQ[j]) ** 2;
        if (loss < best) {
          best = loss;
          bytes.set(cand, (r * nb + b) * c.blockBytes);
          q.set(candQ, xo);
        }
      }
    }
  }
  const v16 = fakeQuantRef(fp16, value);
  applyOutliers(q, k, { perRow, index, value: v16 });
  return { bytes, q, outliers: { perRow, index, value: v16 } };
}

/** q[r, index] = value: what the runtime does with a file's outliers */
export function applyOutliers(q: Float32Array, k: number, o: Outliers): void {
  const n = o.perRow ? o.index.length / o.perRow : 0;
  for (let r = 0; r < n; r++)
    for (let i = 0; i < o.perRow; i++) {
      const j = o.index[r * o.perRow + i];
      if (j >= k) fail(`EasyQuant outlier index ${j} is outside a row of ${k}`);
      q[r * k + j] = o.value[r * o.perRow + i];
    }
}
