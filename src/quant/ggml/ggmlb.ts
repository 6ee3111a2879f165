/**
 * The GGML codecs of the non-linear, ternary, FP4 and grid block types (IQ*, TQ*, MXFP4, NVFP4,
 * Q1_0, Q2_0), for registration in registry.ts.
 */
import type { GgmlCodec } from './types.js';
import { iqCodecs } from './iq.js';
import { ternaryCodecs } from './ternary.js';
import { fp4Codecs } from './fp4.js';
import { lowbitQCodecs } from './lowbit-q.js';

export const ggmlbCodecs: readonly GgmlCodec[] = Object.freeze([...iqCodecs, ...ternaryCodecs, ...fp4Codecs, ...lowbitQCodecs]);

/** llama.cpp quantize_row_X_ref variants that differ from quantize_X(..., NULL) */
export { quantizeIq4NlRef, quantizeIq4XsRef } from './iq.js';
