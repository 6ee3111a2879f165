export type { Format, FloatFormat, IntFormat, CodebookFormat, Specials } from './descriptor.js';
export { defineFloat, decodeFloat, encodeFloat, floorLog2, isCanonicalFloatCode } from './float.js';
export { defineInt } from './int.js';
export { defineCodebook } from './codebook.js';
export { formats, parseFormat, NF4_LEVELS, type FormatOverrides } from './registry.js';
export { ROUNDING_MODES, type RoundingMode } from './rounding.js';
export { encodeRef, decodeRef, fakeQuantRef, allocCodes, resolveCast, type CastOptions, type CodeArray } from './cast.js';
export { f32ToF16, f16ToF32, f16Table, f32ToBf16, bf16ToF32 } from './half.js';
