/** The models `npm run quickstart` writes; test/quantize.test.ts loads every GGUF one in llama.cpp. */
import { defineRecipe, llamaRecipe, schemeRecipe, type Recipe } from '../src/algos/recipe.js';

export const QUICKSTART_VARIANTS: readonly [label: string, recipe: Recipe, output: 'gguf' | 'safetensors'][] = [
  ['Q8_0', llamaRecipe('Q8_0'), 'gguf'],
  ['Q6_K', llamaRecipe('Q6_K'), 'gguf'],
  ['Q4_K_M', llamaRecipe('Q4_K_M'), 'gguf'],
  ['Q4_0', llamaRecipe('Q4_0'), 'gguf'],
  ['MXFP4', schemeRecipe('ggml_mxfp4'), 'gguf'],
  ['NVFP4', schemeRecipe('ggml_nvfp4'), 'gguf'],
  ['int4_g32', schemeRecipe('int4', { groupSize: 32 }), 'safetensors'],
  // calibrated: GPTQ into the same Q4_0 mixture (calibration text disjoint from the evaluation text)
  ['Q4_0+GPTQ', defineRecipe({ ...llamaRecipe('Q4_0'), name: 'Q4_0 gptq', algorithm: 'gptq', ptq: { calibTokens: 8192, calibCtx: 256, seed: 1 } }), 'gguf'],
];
