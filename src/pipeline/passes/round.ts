/**
 * Rounding a weight with its algorithms, read from the algorithm table (algorithms.ts: one rule's
 * algorithm, or a list applied in order): the per-weight step the layer driver calls with the weight's
 * input statistics, and the per-tensor pass (handlers that need no calibration) calls without. The
 * float weights then hold the quantized values, so the runtime (and later layers) see them; float
 * targets are rounded to their stored float type.
 */
import { fail } from '../../errors.js';
import type { PtqOptions } from '../../algos/ptq-options.js';
import type { Recipe } from '../../algos/recipe.js';
import { sqnrDb } from '../../eval/metrics.js';
import { fromFloat32, toFloat32 } from '../../io/tensor-data.js';
import { ggmlRoundsFloats } from '../../quant/ggml/registry.js';
import { algorithmsOf, needsHandler, roundWeight, type ExtraTensor, type InputStatistics } from '../algorithms.js';
import type { GptqWorkers } from '../gptq-parts.js';
import { resolveOptionsOf, type QuantizePlan, type TensorPlan } from '../plan.js';
import { expertView, type ExpertStats, type FloatTensor } from './input-stats.js';
import { codecOf } from './load.js';

export interface PtqTensor {
  bytes: Uint8Array;
  sqnrDb: number;
  algorithm: string;
  /** tensors stored beside it (LoRC, EasyQuant outliers) */
  extras?: readonly ExtraTensor[];
}

export class WeightRounder {
  /** tensors quantized here, in their planned type's bytes */
  readonly quantized = new Map<string, PtqTensor>();
  /** every tensor as float for the writer (a float target: its values before the rounding to its stored type) */
  readonly floats: Map<string, Float32Array>;
  readonly planOf: ReadonlyMap<string, TensorPlan>;

  /**
   * @param before with AutoRound on the block objective: where the float each blk.* AutoRound weight was
   *   rounded from is kept (the layer driver relearns those roundings on the layer's output)
   */
  constructor(plan: QuantizePlan, private readonly weights: Map<string, FloatTensor>, private readonly recipe: Recipe, readonly options: PtqOptions, private readonly gptqWorkers?: GptqWorkers, private readonly before?: Map<string, Float32Array>) {
    this.planOf = new Map(plan.tensors.map((p) => [p.name, p]));
    this.floats = new Map([...weights].map(([n, t]) => [n, t.data]));
  }

  algorithmsFor(name: string) {
    return algorithmsOf(this.recipe, name);
  }

  /** round a weight with its algorithms; the runtime (and later layers) then see the quantized values */
  async quantizeWeight(name: string, stats: InputStatistics | undefined): Promise<void> {
    const p = this.planOf.get(name);
    const t = this.weights.get(name);
    if (!p || !t) fail(`model has no tensor ${name}`);
    const codec = codecOf(p);
    if (!codec) return this.roundFloat(name);
    if (this.before && name.startsWith('blk.') && this.algorithmsFor(name).at(-1)?.name === 'autoround') this.before.set(name, Float32Array.from(t.data)); // the float its start was rounded from
    const r = await roundWeight(this.algorithmsFor(name), { name, codec, w: t.data, rows: t.rows, cols: t.cols, scheme: p.scheme, schemeFrom: schemeFrom(p), ggmlType: p.ggml?.name, stats, options: this.options, gptqWorkers: this.gptqWorkers });
    this.quantized.set(name, { bytes: r.bytes, sqnrDb: sqnrDb(t.data, r.q), algorithm: r.label, ...(r.extras ? { extras: r.extras } : {}) });
    t.data.set(r.q);
  }

  /** float targets: round to the stored float type so later layers see what the file holds */
  roundFloat(name: string): void {
    const p = this.planOf.get(name);
    const t = this.weights.get(name)!;
    if (p && ggmlRoundsFloats(p.to)) {
      this.floats.set(name, Float32Array.from(t.data)); // the file gets (and its report measures) the float values
      t.data.set(toFloat32(p.to, fromFloat32(p.to, t.data)));
    }
  }

  /** round each expert's matrix of a 3-D tensor with its own input statistics (experts.pick decides the fallback) */
  async quantizeExperts(tensor: string, ex: ExpertStats, nExp: number): Promise<void> {
    const p = this.planOf.get(tensor);
    const t = this.weights.get(tensor);
    if (!p || !t) fail(`model has no tensor ${tensor}`);
    const codec = codecOf(p);
    if (!codec) return this.roundFloat(tensor);
    const parts: Uint8Array[] = [];
    const original = Float32Array.from(t.data);
    let label = '';
    for (let e = 0; e < nExp; e++) {
      const v = expertView(t, e, nExp);
      const r = await roundWeight(this.algorithmsFor(tensor), { name: tensor, codec, w: v.data, rows: v.rows, cols: v.cols, scheme: p.scheme, schemeFrom: schemeFrom(p), ggmlType: p.ggml?.name, stats: ex.pick(e), options: this.options, gptqWorkers: this.gptqWorkers });
      parts.push(r.bytes);
      v.data.set(r.q);
      label = r.label;
    }
    const bytes = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
    parts.reduce((at, b) => (bytes.set(b, at), at + b.length), 0);
    this.quantized.set(tensor, { bytes, sqnrDb: sqnrDb(original, t.data), algorithm: label });
  }
}

/** Pass "per tensor" (no calibration): every planned tensor whose algorithms have a handler, rounded alone. */
export async function tensorPass(plan: QuantizePlan, rounder: WeightRounder): Promise<void> {
  for (const p of plan.tensors) if (needsHandler(rounder.algorithmsFor(p.name), rounder.options) && codecOf(p)) await rounder.quantizeWeight(p.name, undefined);
}

/** what a planned scheme was resolved from (plan.ts: resolveScheme(rule.scheme, resolveOptionsOf(rule))) */
function schemeFrom(p: TensorPlan): { name: string; options: ReturnType<typeof resolveOptionsOf> } | undefined {
  return p.scheme && typeof p.rule?.scheme === 'string' ? { name: p.rule.scheme, options: resolveOptionsOf(p.rule) } : undefined;
}
