/**
 * GGML block types: the type table, the type-traits table (registry.ts, which holds the built-in
 * codecs from its own module), fp16/bf16 helpers, and the codecs. Re-exports only: importing this
 * module registers nothing.
 */

export * from './types.js';
export * from './registry.js';
export * from '../../formats/half.js';
export * from './legacy.js';
export * from './kquants.js';
