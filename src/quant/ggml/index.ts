/**
 * GGML block types: the type table, the codec registry, fp16/bf16 helpers, and the built-in codecs.
 * Importing this module registers every codec, so `ggmlCodec('Q4_K')` works afterwards.
 */
import { ggmlbCodecs } from './ggmlb.js';
import { kquantCodecs } from './kquants.js';
import { legacyCodecs } from './legacy.js';
import { registerGgmlCodecs } from './registry.js';

export * from './types.js';
export * from './registry.js';
export * from './half.js';
export * from './legacy.js';
export * from './kquants.js';

registerGgmlCodecs(legacyCodecs);
registerGgmlCodecs(kquantCodecs);
registerGgmlCodecs(ggmlbCodecs);
