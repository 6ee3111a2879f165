/**
 * The repair step of a quantization-conditioned attack ("Exploiting LLM Quantization", Egashira et al.
 * 2024, §3): projected gradient descent through the whole model (the trainer's backward pass,
 * src/train/llama-grad.ts), distilling the benign model's next-token distributions on text, every
 * parameter kept inside its box after every step.
 *
 *   loss   KL(benign || attacked) of the next-token distributions at every position of a batch
 *   step   Adam direction scaled by each weight's box width: w -= lr_t · (hi - lo) · m̂ / (√v̂ + ε),
 *          then w = clamp(w, lo, hi) (a box of width 0, a pinned weight, never moves)
 *   lr_t   cosine from `lr` to lr/10 over the steps
 *
 * Scaling the step by the box width makes one learning rate fit every type: a Q8_0 box is 1/16 of a
 * Q4_0 one. The batches come from a seeded generator: same input, options and seed -> same weights.
 */
import { fail } from '../errors.js';
import { Rng, sampleBatch } from '../train/data.js';
import { referenceBackend, wasmBackend } from '../train/gemm.js';
import { TrainModel, trainModelFloats, type TrainConfig } from '../train/llama-grad.js';
import { distillationLoss } from '../train/qat.js';

export interface Box {
  lo: Float32Array;
  hi: Float32Array;
}

/** a training run's size (the malicious fine-tune and the PGD repair) */
export interface StepOptions {
  steps: number;
  lr?: number;
  batch?: number;
  ctx?: number;
  seed?: number;
  threads?: number;
  /** after each step: its loss (PGD: the distillation KL) */
  onStep?: (step: number, loss: number) => void;
}

export interface PgdOptions extends StepOptions {
  /** token stream of the distillation text */
  data: ArrayLike<number>;
  bos?: number;
  /**
   * every `every` steps (and after the last): `fn` may shrink a tensor's box in place where the current
   * weights no longer quantize to the target bytes, and move the weights into it; returns the blocks it
   * shrank (for boxes that are a heuristic, e.g. the K-quants': the repair during PGD, not only after)
   */
  check?: { every: number; fn: (name: string, w: Float32Array, box: Box) => number };
  /** (lr: the step as a fraction of each weight's box width, default 0.1) */
}

export interface PgdResult {
  weights: Map<string, Float32Array>;
  /** the distillation KL of each step (before its update) */
  kl: number[];
  /** KL on one fixed batch (its own seed) before the first step and after the last */
  fixedBefore: number;
  fixedAfter: number;
  /** with `check`: the blocks shrunk at each check */
  shrunk: number[];
}

function newModel(config: TrainConfig, batch: number, ctx: number, threads: number): TrainModel {
  const mo = { batch, ctx };
  return new TrainModel(config, wasmBackend(trainModelFloats(config, mo), threads) ?? referenceBackend('f32'), mo);
}

/**
 * Distil `teacher` (every parameter by name) into a model that starts at `start` and stays inside
 * `boxes` (tensors without a box are held at their start values).
 */
export async function pgdInsideBoxes(config: TrainConfig, teacherWeights: ReadonlyMap<string, Float32Array>, start: ReadonlyMap<string, Float32Array>, boxes: ReadonlyMap<string, Box>, o: PgdOptions): Promise<PgdResult> {
  const batch = o.batch ?? 8;
  const ctx = o.ctx ?? Math.min(128, config.seqLen);
  if (!(Number.isInteger(o.steps) && o.steps >= 0)) fail(`PGD steps must be a non-negative integer (got ${o.steps})`);
  const lr = o.lr ?? 0.1;
  if (!(lr > 0 && lr <= 1)) fail(`PGD step ${lr} must be in (0, 1] (a fraction of the box width)`);
  const student = newModel(config, batch, ctx, o.threads ?? 1);
  const teacher = newModel(config, batch, ctx, o.threads ?? 1);
  await student.be.ready?.();
  await teacher.be.ready?.();
  try {
    for (const t of student.tensors) {
      const s = start.get(t.name);
      const b = teacherWeights.get(t.name);
      if (!s || !b) fail(`PGD: no values for ${t.name}`);
      if (s.length !== t.size || b.length !== t.size) fail(`PGD: ${t.name} has the wrong number of values`);
      student.view(t.name).set(s);
      teacher.view(t.name).set(b);
    }
    // the boxed parameters: offsets into the flat array, box ends, Adam moments
    const boxed = student.tensors.filter((t) => boxes.has(t.name));
    for (const t of boxed) {
      const b = boxes.get(t.name)!;
      if (b.lo.length !== t.size || b.hi.length !== t.size) fail(`PGD: the box of ${t.name} has the wrong size`);
    }
    const total = boxed.reduce((s, t) => s + t.size, 0);
    const m = new Float32Array(total);
    const v = new Float32Array(total);
    const rng = new Rng(o.seed ?? 1);
    const beta1 = 0.9, beta2 = 0.999, eps = 1e-12;
    const kl: number[] = [];
    const fixed = sampleBatch(o.data, batch, ctx, new Rng((o.seed ?? 1) ^ 0x5eed), o.bos);
    const fixedKl = () => {
      student.forward(fixed.tokens, fixed.targets);
      teacher.forward(fixed.tokens, fixed.targets);
      return distillationLoss(student.logits(), teacher.logits(), student.logitGrads(), fixed.targets, config.vocabSize);
    };
    const fixedBefore = fixedKl();
    const shrunk: number[] = [];
    const check = () => {
      let n = 0;
      for (const t of boxed) n += o.check!.fn(t.name, student.view(t.name) as Float32Array, boxes.get(t.name)!);
      shrunk.push(n);
    };
    for (let step = 0; step < o.steps; step++) {
      student.zeroGrads();
      const b = sampleBatch(o.data, batch, ctx, rng, o.bos);
      student.forward(b.tokens, b.targets);
      teacher.forward(b.tokens, b.targets);
      const loss = distillationLoss(student.logits(), teacher.logits(), student.logitGrads(), b.targets, config.vocabSize);
      if (!Number.isFinite(loss)) fail(`PGD: the distillation loss is not finite at step ${step + 1}`);
      kl.push(loss);
      o.onStep?.(step + 1, loss);
      student.backward();
      const lrT = lr * (0.1 + 0.45 * (1 + Math.cos((Math.PI * step) / Math.max(1, o.steps))));
      const bc1 = 1 - Math.pow(beta1, step + 1);
      const bc2 = 1 - Math.pow(beta2, step + 1);
      let k = 0;
      for (const t of boxed) {
        const { lo, hi } = boxes.get(t.name)!;
        const w = student.view(t.name);
        const g = student.view(t.name, student.grads);
        for (let i = 0; i < t.size; i++, k++) {
          const width = hi[i] - lo[i];
          if (!(width > 0)) continue;
          m[k] = beta1 * m[k] + (1 - beta1) * g[i];
          v[k] = beta2 * v[k] + (1 - beta2) * g[i] * g[i];
          const x = w[i] - (lrT * width * (m[k] / bc1)) / (Math.sqrt(v[k] / bc2) + eps);
          w[i] = x < lo[i] ? lo[i] : x > hi[i] ? hi[i] : x;
        }
      }
      if (o.check && ((step + 1) % o.check.every === 0 || step + 1 === o.steps)) check();
    }
    const weights = new Map<string, Float32Array>();
    for (const t of student.tensors) weights.set(t.name, Float32Array.from(student.view(t.name)));
    return { weights, kl, fixedBefore, fixedAfter: fixedKl(), shrunk };
  } finally {
    student.be.close?.();
    teacher.be.close?.();
  }
}
