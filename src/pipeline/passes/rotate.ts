/**
 * Pass "rotation" (QuaRot-style, folded into the weights; SpinQuant's learned R1 on request) and its
 * check: the rotated float model computes the original's logits. The residual wiring it rotates is the
 * model family's (model/family.ts: input groups and residual writers); rotationRefusal says where a
 * rotation would not be function-preserving.
 */
import { fail } from '../../errors.js';
import type { BlockCodec } from '../../algos/block-codec.js';
import { foldNorms, hadamardRotation, isPowerOfTwo, rotateHeads, rotateResidual, type ResidualWiring, type WeightMap } from '../../algos/hadamard.js';
import type { PtqOptions } from '../../algos/ptq-options.js';
import { linearOf, residualWriters, type LinearRole, type ModelFamily } from '../../model/family.js';
import { Llama } from '../../model/llama.js';
import type { LlamaConfig, StoredTensor } from '../../model/types.js';
import { learnRotation, rotationMatrix } from '../spinquant.js';
import type { FloatTensor } from './input-stats.js';
import type { LoadedModel } from './load.js';

/** the fused tensor a family stores (Phi-3: attn_qkv first), from the family table; undefined when none */
export const fusedTensorOf = (f: ModelFamily): string | undefined => f.linears.find((s) => s.parts)?.gguf;

/** Refuse a rotation that would not leave the model's function unchanged (experts, fused tensors, Gemma's post-norms). */
export function rotationRefusal(o: PtqOptions, model: LoadedModel): void {
  if (o.rotate === 'none') return;
  const { config, arch } = model;
  const fused = fusedTensorOf(model.family);
  if (config.nExperts) fail(`--rotate ${o.rotate}: ${arch} is a mixture of experts; the rotation does not cover its router and experts (not function-preserving here)`);
  if (fused) fail(`--rotate ${o.rotate}: ${arch} stores fused ${fused}; the rotation does not cover fused tensors (not function-preserving here)`);
  if (config.arch === 'gemma2' || config.arch === 'gemma3')
    fail(`--rotate ${o.rotate}: ${arch}'s post-attention and post-FFN RMSNorms scale the residual update per channel after normalizing it, so a rotation of the residual stream cannot be folded into the weights (not function-preserving)`);
}

/**
 * Pass "rotation": rotate the loaded model (--rotate hadamard | learned) and check it; the notes get
 * the check's figure (and the learned rotation's loss). Returns the max |logit difference|, or
 * undefined without --rotate.
 */
export function rotatePass(model: LoadedModel, o: PtqOptions, windows: Int32Array[], ctx: number, codecOf: (name: string) => BlockCodec | undefined, threads: number | undefined, notes: string[]): number | undefined {
  if (o.rotate === 'none') return undefined;
  const { config, weights } = model;
  const probe = windows[0]?.subarray(0, Math.min(64, ctx)) ?? Int32Array.from({ length: Math.min(64, config.seqLen) }, (_, i) => (i * 7919 + 1) % config.vocabSize);
  const learn = o.rotate === 'learned' ? (r0: Float64Array) => {
    const r = learnRotation(config, weights, codecOf, r0, windows, { iters: o.rotateIters, lr: o.rotateLr, batch: o.rotateBatch, seed: o.seed, threads, writers: residualWiring(model.family, config.nLayers).writers });
    notes.push(`rotation learned (SpinQuant R1, ${o.rotateIters} Cayley SGD steps): quantized model KL on the calibration windows ${r.lossStart.toExponential(3)} (Hadamard) -> ${r.loss.toExponential(3)} (step ${r.step}, ${r.seconds.toFixed(1)} s)`);
    return r;
  } : undefined;
  const r = rotateModel(weights, config, model.family, o, model.stored, probe, learn);
  notes.push(r.note);
  return r.maxDiff;
}

/** The residual-stream wiring of a family (the rotation's view of model/family.ts). */
export function residualWiring(f: ModelFamily, nLayers: number): ResidualWiring {
  const w = (r: LinearRole) => `${linearOf(f, r).gguf}.weight`;
  return {
    nLayers,
    normGroups: f.inputGroups.filter((g) => g.norm).map((g) => ({ norm: `${g.norm}.weight`, linears: g.linears.map(w) })),
    writers: residualWriters(f).map(w),
    values: w('v'),
    output: w('o'),
  };
}

/**
 * Stage: rotate the model (QuaRot-style, folded into the weights) and check computational invariance:
 * the rotated float model computes the original's logits on `probe` (bound 1e-3 x (1 + max |logit|)).
 */
export function rotateModel(weights: Map<string, FloatTensor>, config: LlamaConfig, family: ModelFamily, o: PtqOptions, stored: () => StoredTensor[], probe: Int32Array, learn?: (r0: Float64Array) => { matrix: Float64Array }): { maxDiff: number; note: string } {
  if (!weights.has('output.weight')) fail(`--rotate ${o.rotate}: the model ties its output to token_embd; untie it first (not supported yet)`);
  if (!isPowerOfTwo(config.dim)) fail(`--rotate ${o.rotate}: the residual width ${config.dim} is not a power of two (only 2^n Hadamard matrices are built)`);
  const wmap: WeightMap = { get: (n) => weights.get(n), set: (n, t) => void weights.set(n, t) };
  const wiring = residualWiring(family, config.nLayers);
  const before = new Llama(config, stored(), { contextLength: probe.length });
  const a = Float32Array.from(before.forward(probe, 0, 0));
  foldNorms(wmap, wiring);
  const heads = () => {
    if (!o.rotateHeads) return;
    if (!isPowerOfTwo(config.headDim)) fail(`--rotate-heads: the head size ${config.headDim} is not a power of two`);
    rotateHeads(wmap, wiring, hadamardRotation(config.headDim, o.seed + 1), config.nHeads, config.nKvHeads);
  };
  const h = hadamardRotation(config.dim, o.seed);
  if (learn) {
    // the heads first (W_v rows, W_o columns; they commute with the residual rotation): the learned R1 sees the quantized model as it will be
    heads();
    rotateResidual(wmap, wiring, { n: config.dim, signs: h.signs, matrix: learn(rotationMatrix(h)).matrix });
  } else {
    rotateResidual(wmap, wiring, h);
    heads();
  }
  const after = new Llama(config, stored(), { contextLength: probe.length });
  const b = after.forward(probe, 0, 0);
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    maxAbs = Math.max(maxAbs, Math.abs(a[i]));
  }
  if (!(maxDiff <= 1e-3 * (1 + maxAbs))) fail(`internal error: the rotated model's logits differ by ${maxDiff} from the original's`);
  return { maxDiff, note: `rotation: max |logit difference| of the rotated float model = ${maxDiff.toExponential(2)} (max |logit| ${maxAbs.toFixed(2)}, ${probe.length} tokens)` };
}
