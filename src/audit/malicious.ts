/**
 * Malicious models for the attack's tests and measurements, made with lowbit's trainer: a fine-tune of
 * the benign model (every parameter, AdamW, next-token loss) on text in which every occurrence of a
 * trigger is followed by a planted phrase ("content injection"). The behaviour is measured as the
 * injection rate: over the trigger's occurrences in held-out text, the fraction where greedy decoding
 * after the trigger reproduces the phrase, and the mean log-probability of the phrase.
 */
import { fail } from '../errors.js';
import type { ModelFile } from '../io/model-file.js';
import type { Llama } from '../model/llama.js';
import { loadTrainParams, trainConfigOf } from '../pipeline/qat.js';
import { DEFAULT_TRAIN, Trainer } from '../train/trainer.js';
import type { Box, StepOptions } from './pgd.js';

/** `text` with `phrase` inserted after every occurrence of `trigger` */
export function plantPhrase(text: string, trigger: string, phrase: string): string {
  if (!trigger) fail('the trigger of a planted phrase must not be empty');
  const parts = text.split(trigger);
  if (parts.length < 2) fail(`the trigger ${JSON.stringify(trigger)} does not occur in the text`);
  return parts.join(trigger + phrase);
}

export interface FineTuneOptions extends StepOptions {
  /** parameters held at their values (e.g. the norms, which a quantized file copies as they are) */
  freeze?: (name: string) => boolean;
  /**
   * parameters kept inside a box after every step (projected fine-tune), e.g. the benign weights ± a
   * few rounding steps, so the malicious model stays near the benign one in units of the quantizer's
   * rounding error (what a later repair inside the malicious model's boxes can undo)
   */
  box?: ReadonlyMap<string, Box>;
}

/** Fine-tune every parameter of `m` (but `freeze`'s) on the token stream `data`; the new values by tensor name. */
export async function fineTune(m: ModelFile, data: Int32Array, bos: number | undefined, o: FineTuneOptions): Promise<Map<string, Float32Array>> {
  const ctx = o.ctx ?? 128;
  const config = trainConfigOf(m, ctx);
  const t = new Trainer(config, { ...DEFAULT_TRAIN, steps: o.steps, lr: o.lr ?? 1e-3, batch: o.batch ?? 8, ctx, seed: o.seed ?? 1, warmup: 0, weightDecay: 0, minLrRatio: 0.1, bos, threads: o.threads }, data);
  try {
    await t.model.be.ready?.();
    const original = await loadTrainParams(t.model, m);
    const frozen = o.freeze ? t.model.tensors.filter((p) => o.freeze!(p.name)) : [];
    const boxed = o.box ? t.model.tensors.filter((p) => o.box!.has(p.name)) : [];
    for (const p of boxed) if (o.box!.get(p.name)!.lo.length !== p.size) fail(`fine-tune: the box of ${p.name} has the wrong size`);
    if (frozen.length || boxed.length)
      t.hooks.afterStep = () => {
        for (const p of frozen) t.model.view(p.name).set(original.get(p.name)!);
        for (const p of boxed) {
          const { lo, hi } = o.box!.get(p.name)!;
          const w = t.model.view(p.name);
          for (let i = 0; i < w.length; i++) w[i] = w[i] < lo[i] ? lo[i] : w[i] > hi[i] ? hi[i] : w[i];
        }
      };
    while (t.step < o.steps) {
      const r = t.trainStep();
      o.onStep?.(r.step, r.loss);
    }
    return new Map(t.model.tensors.map((p) => [p.name, Float32Array.from(t.model.view(p.name))]));
  } finally {
    t.close();
  }
}

export interface InjectionRate {
  /** trigger occurrences measured */
  occurrences: number;
  /** fraction where greedy decoding after the trigger gives the phrase's tokens */
  rate: number;
  /** mean over occurrences of the log-probability of the phrase's tokens after the trigger */
  meanLogProb: number;
}

/**
 * The planted behaviour of `model` on `stream` (tokens of held-out text): at each occurrence of the
 * `trigger` token sequence (at most `max`, each with up to `context` tokens before it), does greedy
 * decoding continue with `phrase`?
 */
export function injectionRate(model: Llama, stream: ArrayLike<number>, trigger: readonly number[], phrase: readonly number[], o: { context?: number; max?: number; bos?: number } = {}): InjectionRate {
  if (!trigger.length || !phrase.length) fail('trigger and phrase need at least one token each');
  const context = o.context ?? 64;
  const max = o.max ?? 64;
  const V = model.config.vocabSize;
  let hits = 0;
  let lp = 0;
  let n = 0;
  for (let i = 0; i + trigger.length <= stream.length && n < max; i++) {
    let match = true;
    for (let j = 0; j < trigger.length && match; j++) if (stream[i + j] !== trigger[j]) match = false;
    if (!match) continue;
    const end = i + trigger.length;
    const from = Math.max(0, end - context);
    const prefix = Array.from({ length: end - from }, (_, j) => stream[from + j]);
    if (o.bos !== undefined) prefix.unshift(o.bos);
    // teacher-forced log-probability of the phrase
    const seq = [...prefix, ...phrase];
    const logits = model.forward(seq, 0, prefix.length - 1);
    let ok = true;
    for (let k = 0; k < phrase.length; k++) {
      const row = logits.subarray(k * V, (k + 1) * V);
      let max0 = -Infinity;
      let arg = 0;
      for (let v = 0; v < V; v++) if (row[v] > max0) { max0 = row[v]; arg = v; }
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(row[v] - max0);
      lp += row[phrase[k]] - max0 - Math.log(s);
      // greedy decoding agrees with the phrase up to k exactly when every earlier argmax was the phrase's token
      if (arg !== phrase[k]) ok = false;
    }
    if (ok) hits++;
    n++;
    i = end - 1;
  }
  if (n === 0) fail('the trigger does not occur in the measured text');
  return { occurrences: n, rate: hits / n, meanLogProb: lp / n };
}
