/**
 * Mixed precision to a target size in the Lab: the per-tensor types of a llama.cpp file type chosen
 * for a bits-per-weight target, as `lowbit quantize --type T --target-bpw B --calib FILE` does with its
 * defaults (Hessian costs scaled by a KLD probe per tensor, 4 KLD windows, exact branch-and-bound
 * allocation; calibration windows from the PTQ options: 16384 tokens of 512, seed 0).
 */
import { fail } from '../errors.js';
import { ptqOptions } from '../algos/ptq-options.js';
import type { Recipe } from '../algos/recipe.js';
import type { ModelFile } from '../io/model-file.js';
import type { ByteSource } from '../io/source.js';
import { loadModel } from '../eval/load.js';
import { calibrationWindows } from '../pipeline/passes/load.js';
import { allocateToSize, bytesForBpw, parameterCount, type AllocationResult } from '../pipeline/allocate.js';
import { DEFAULT_SENSITIVITY_TYPES, measureSensitivity } from '../pipeline/sensitivity.js';

export async function allocateForBpw(src: ByteSource, m: ModelFile, base: Recipe, targetBpw: number, calibText: string | undefined, threads: number, say: (msg: string) => void): Promise<AllocationResult> {
  if (!base.llama) fail('a target size chooses among GGML types: start from a llama.cpp file type (Q4_K_M, ...)');
  if (!calibText) fail('a target size needs costs measured on a calibration text: choose one');
  const o = ptqOptions(base.ptq ?? {});
  const loaded = await loadModel(src, { contextLength: o.calibCtx, batch: Math.min(o.calibCtx, 512), threads });
  if (!loaded.tokenizer) fail(`${src.name} carries no vocabulary to tokenize the calibration text`);
  const ctx = Math.min(o.calibCtx, loaded.model.config.seqLen);
  const stream = loaded.tokenizer.encode(calibText, { bos: false });
  const windows = calibrationWindows(stream, o.calibTokens, ctx, o.seed, loaded.tokenizer.vocab.bos);
  const db = await measureSensitivity({
    model: loaded.model,
    file: m,
    windows,
    kldWindows: windows.slice(0, Math.min(windows.length, 4)),
    types: [...DEFAULT_SENSITIVITY_TYPES],
    estimator: 'hessian',
    outputFactor: 'kld',
    seed: o.seed,
    onProgress: (msg, done, total) => say(`sensitivity [${done}/${total}] ${msg}`),
  });
  return allocateToSize(m, base, db, bytesForBpw(parameterCount(m), targetBpw), { method: 'ilp', seed: o.seed, onProgress: say });
}
