/**
 * Calibrated post-training quantization as passes (src/pipeline/passes/), run in order by runPtq:
 *
 *   load       passes/load.ts         the model's shape and family (model/family.ts) and every tensor as float32
 *   tokenize   passes/load.ts         the calibration windows (seeded), each starting with BOS; a plan that
 *                                     needs calibration text and has none is an error
 *   rotate     passes/rotate.ts       (--rotate) fold the norms, rotate the residual stream (and each head's
 *                                     values), check the rotated float model computes the original's logits
 *   per tensor passes/round.ts        without calibration: the algorithms with a handler (HQQ, ...), tensor by tensor
 *   layers     passes/layer-driver.ts the layer-by-layer driver over the family's input groups: statistics
 *                                     (passes/stages.ts, passes/input-stats.ts), scale folds (passes/fold.ts),
 *                                     rounding with the algorithm table (passes/round.ts)
 *   timings    passes/timing.ts       seconds per phase of the layer pass
 *
 * Outputs the transformed float weights and the bytes of every tensor quantized here; the writer
 * (quantize.ts) writes the file from them, quantizing the remaining tensors as usual.
 */
import type { PtqOptions } from '../algos/ptq-options.js';
import type { Recipe } from '../algos/recipe.js';
import type { ModelFile } from '../io/model-file.js';
import { releaseFactorMemory } from '../kernels/gptq.js';
import type { GptqWorkers } from './gptq-parts.js';
import type { QuantizePlan } from './plan.js';
import { blockObjective, layerPass } from './passes/layer-driver.js';
import { calibrationNeeds, codecOf, loadPass, tokenizePass } from './passes/load.js';
import { rotatePass, rotationRefusal } from './passes/rotate.js';
import { tensorPass, WeightRounder, type PtqTensor } from './passes/round.js';

export interface PtqInput {
  recipe: Recipe;
  options: PtqOptions;
  /** calibration text (needed by GPTQ, AWQ, SmoothQuant and imatrix-RTN) */
  calibText?: string;
  /** or calibration tokens directly (synthetic models without a vocabulary) */
  calibStream?: ArrayLike<number>;
  /** threads for the runtime's matmul and the X^T X accumulation (needs a thread starter, see lowbit/node) */
  threads?: number;
  /** threads that quantize row ranges of a weight with GPTQ (the bytes do not depend on them) */
  gptqWorkers?: GptqWorkers;
  onProgress?: (message: string) => void;
}

export interface PtqOutput {
  /** every tensor as float after the equivalence transforms (rotation, AWQ/SmoothQuant scales) */
  floats: Map<string, Float32Array>;
  /** tensors quantized here, in their planned type's bytes */
  quantized: Map<string, PtqTensor>;
  /** new f32 tensors the transforms created (OS+: norm biases and the q/k/v/gate/up biases that undo the shift) */
  added?: Map<string, Float32Array>;
  /** what happened, for the report: rotation check, AWQ alphas, GPTQ times */
  notes: string[];
  /** max |logit difference| of the rotated float model against the original (with --rotate) */
  rotationMaxLogitDiff?: number;
  calibrationTokens?: number;
  seconds: number;
  /** seconds per phase of the layer loop: statistics pass (forward + X^T X), quantization, forward pass */
  phases?: { statistics: number; quantization: number; forward: number };
}

export async function runPtq(m: ModelFile, plan: QuantizePlan, input: PtqInput): Promise<PtqOutput> {
  const t0 = performance.now();
  let o = input.options;
  const say = input.onProgress ?? (() => {});
  const notes: string[] = [];
  const planOf = new Map(plan.tensors.map((p) => [p.name, p]));

  const needs = calibrationNeeds(plan, o, input.calibText !== undefined || input.calibStream !== undefined);
  // the layers' matrices read one layer at a time where the pass allows it (peak memory: one layer's f32, not the model's)
  const model = await loadPass(m, needs.layerPass ? { plan, options: o } : undefined);
  rotationRefusal(o, model);
  const { windows, ctx } = tokenizePass(m, model, o, input, needs);
  const rotationMaxLogitDiff = rotatePass(model, o, windows, ctx, (n) => { const p = planOf.get(n); return p && codecOf(p); }, input.threads, notes);

  // AutoRound on the block output: the float model's residual stream beside the quantized one
  const block = needs.layerPass ? blockObjective(plan, input.recipe, o, model.config, [...model.names], notes) : undefined;
  const blockAutoround = !!block && o.autoroundObjective === 'block';
  if (!blockAutoround && o.autoroundObjective === 'block') o = { ...o, autoroundObjective: 'linear' };
  const rounder = new WeightRounder(plan, model.weights, input.recipe, o, input.gptqWorkers, blockAutoround ? block.before : undefined);
  const { quantized, floats } = rounder;

  if (!needs.layerPass) {
    await tensorPass(plan, rounder);
    return { floats, quantized, notes, rotationMaxLogitDiff, seconds: (performance.now() - t0) / 1000 };
  }
  const { added, phases } = await layerPass({ plan, model, options: o, windows, ctx, threads: input.threads, rounder, block, notes, say });
  releaseFactorMemory(); // GPTQ's factors are done: their memory (and its threads) go
  return { floats, quantized, ...(added.size ? { added } : {}), notes, rotationMaxLogitDiff, calibrationTokens: windows.length * ctx, seconds: (performance.now() - t0) / 1000, phases };
}
