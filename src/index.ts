/**
 * lowbit: model quantization for JavaScript and TypeScript. Runs in Node and in browsers.
 */
export * from './formats/index.js';
export { encode, decode, fakeQuant } from './kernels/cast.js';
export { LowbitError } from './errors.js';
export { isNode, hasSimd, hasRelaxedSimd } from './env.js';
export { sqnrDb } from './eval/metrics.js';
export * from './quant/index.js';
export { Llama, f32KvStorage, llamaConfigFromGguf, type KvStorage, type ForwardHooks } from './model/llama.js';
export { Tokenizer, TokenTextStream } from './model/tokenizer.js';
export { setMatmul, matmulRef, type MatmulFn } from './model/matmul.js';
export { MatmulEngine, initMatmulKernels } from './kernels/matmul.js';
export { setStartWorker, kernelWorkerMain, type KernelWorkerInit, type StartWorker } from './kernels/threads.js';
export { loadModel, llamaFromSafetensors } from './eval/load.js';
export { perplexity, modelBase, logitsFileBase, type PerplexityResult } from './eval/perplexity.js';
export { generate } from './eval/generate.js';
