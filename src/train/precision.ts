/**
 * Training precisions: how the linear layers multiply. 'fp32' is the reference (exact f32 products).
 */
import { fail } from '../errors.js';
import type { TrainModel } from './llama-grad.js';

export const PRECISIONS = ['fp32'] as const;
export type Precision = (typeof PRECISIONS)[number];

export function applyPrecision(m: TrainModel, p: Precision, seed: number): void {
  void seed;
  if (p === 'fp32') return;
  void m;
  fail(`unknown precision '${String(p)}' (${PRECISIONS.join(', ')})`);
}
