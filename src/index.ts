/**
 * lowbit: model quantization for JavaScript and TypeScript. Runs in Node and in browsers.
 */
export * from './formats/index.js';
export { encode, decode, fakeQuant } from './kernels/cast.js';
import { installWasmQuantizers } from './kernels/ggml-quant.js';
export { initQuantKernels, installWasmQuantizers, wasmQuantizer } from './kernels/ggml-quant.js';
export { installSchemeFastPaths } from './kernels/scheme-quant.js';
installWasmQuantizers(); // the library's entry installs the fast paths: WebAssembly GGML quantizers (type-traits table), MX / NVFP4 (scheme registry)
export { LowbitError } from './errors.js';
export { isNode, hasSimd, hasRelaxedSimd } from './env.js';
export { sqnrDb } from './eval/metrics.js';
export * from './quant/index.js';
export { Llama, f32KvStorage, llamaConfigFromGguf, type KvStorage, type ForwardHooks } from './model/llama.js';
export { packedKvStorage, PackedKvStorage, type KvCacheOptions } from './model/kv/cache.js';
export { parseKvCacheType, cacheTypeBits, KV_CACHE_TYPES, type KvCacheType } from './model/kv/types.js';
export { Tokenizer, TokenTextStream } from './model/tokenizer.js';
export { setMatmul, matmulRef, type MatmulFn } from './model/matmul.js';
export { MatmulEngine, initMatmulKernels } from './kernels/matmul.js';
export { setStartWorker, kernelWorkerMain, type KernelWorkerInit, type StartWorker } from './kernels/threads.js';
export { loadModel, llamaFromSafetensors } from './eval/load.js';
export { perplexity, modelBase, logitsFileBase, type PerplexityResult } from './eval/perplexity.js';
export { generate } from './eval/generate.js';
// model files (byte-range sources in, byte sinks out; no file system in the core)
export { bytesSource, blobSource, type ByteSource } from './io/source.js';
export { memorySink, type ByteSink, type MemorySink } from './io/sink.js';
export { openModelFile, sniffFormat, type ModelFile, type ModelTensor } from './io/model-file.js';
export { readGguf, readGgufTensor, GgufWriter, writeGguf, type GgufFile } from './io/gguf.js';
export { openGgufSplit, ggufSplitParts, writeGgufPart, splitPath, parseSplitPath, type GgufPart, type SplitSource } from './io/gguf-split.js';
export { readSafetensors, readShardedSafetensors, SafetensorsWriter, type SafetensorsFile } from './io/safetensors.js';
export { findPackedInt4 } from './io/packed-int4.js';
export { readLlama2c } from './io/llama2c.js';
export { convertModel } from './io/convert.js';
// quantize(model, recipe)
export { defineRecipe, recipeToJSON, recipeFromJSON, llamaRecipe, schemeRecipe, RECIPE_VERSION, type Recipe, type RecipeRule } from './algos/recipe.js';
export { quantize, planQuantization, quantizeModel, type QuantizePlan, type QuantizeReport, type TensorReport } from './pipeline/quantize.js';
export { readImatrix, writeImatrixGguf } from './pipeline/imatrix-file.js';
// Hugging Face checkpoints with GPTQ / AWQ packed int4 layers: quantize(m, recipe, sink, { layout: 'gptq' }) writes them
export { hfLlamaTensors } from './eval/load.js';
export { dequantizePackedInt4, packInt4Linear, int4LinearFromScheme, packedInt4ConfigOf, PACKED_INT4_LAYOUTS, type PackedInt4Layout, type PackedInt4Group } from './io/packed-int4.js';
// training: backward pass, AdamW, low-precision training, QAT (src/train)
export * from './train/index.js';
export { llamaGgufMetadata, llamaTensorShapes, writeLlamaGguf, paramTensors, type OutTensor } from './io/llama-writer.js';
export { runQat, writeQatModel, ggmlWeightCodec, type QatOptions, type QatRun } from './pipeline/qat.js';
