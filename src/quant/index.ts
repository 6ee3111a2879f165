export * from './scheme.js';
export { registerScheme, schemes, resolveScheme, registerFastPath, fastPath, quantizeScheme, dequantizeScheme, type ResolveOptions } from './registry.js';
export { makeGenericScheme, compareClipMethods, genericSchemeId, GRANULARITIES, CLIP_METHODS, type GenericSchemeConfig, type Granularity, type ClipMethod } from './schemes/generic.js';
export { makeMxScheme, mxSchemes, mxSharedExponent, MX_BLOCK } from './schemes/mx.js';
export { nvfp4Scheme, NVFP4_BLOCK } from './schemes/nvfp4.js';
export { nf4DqScheme, DYNAMIC_MAP, NF4_BLOCK, NF4_DQ_GROUP } from './schemes/nf4.js';
export { makeElementScheme, type ElementScheme } from './schemes/element.js';
export { ggmlScheme } from './schemes/ggml.js';
