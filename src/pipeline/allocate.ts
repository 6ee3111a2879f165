/**
 * Mixed precision to a size budget: per-tensor GGML types chosen from measured sensitivities
 * (pipeline/sensitivity.ts) so that the GGUF file is at most `targetBytes` — every byte counted:
 * header, metadata, tensor infos, alignment padding and the tensors left unquantized.
 *
 *   greedy: the Lagrangian solution of the multiple-choice knapsack with a repair pass (alloc/solve.ts)
 *   ilp:    exact branch and bound (optimal for the additive cost model; falls back to the best found
 *           with its proven gap when the node limit is hit)
 *   evo:    EvoPress-style search (Sieberling et al. 2024): starting from the ilp solution, offspring
 *           made by level-switch mutations that keep the budget, selected in stages on growing numbers
 *           of calibration tokens with the model's KL divergence as fitness (no additive assumption)
 *
 * The result is a recipe: the base llama.cpp file type (for metadata and every tensor not allocated)
 * plus one exact-name rule per allocated tensor, which `quantize()` writes like any other recipe.
 */
import { isGgmlFloat } from '../quant/ggml/types.js';
import { fail } from '../errors.js';
import { allocateExact, allocateLagrangian, sizeRange, type AllocItem, type Allocation } from '../alloc/solve.js';
import { defineRecipe, type Recipe } from '../algos/recipe.js';
import { GGUF_DEFAULT_ALIGNMENT, ggufTensorBytes } from '../io/gguf.js';
import type { Imatrix } from '../algos/imatrix.js';
import type { ModelFile } from '../io/model-file.js';
import { rngStream } from '../rng.js';
import { ggufOutputBytes, planQuantization, type QuantizePlan } from './quantize.js';
import type { SensitivityDb } from './sensitivity.js';

export type AllocateMethod = 'greedy' | 'ilp' | 'evo';

const align = (n: number, a = GGUF_DEFAULT_ALIGNMENT) => Math.ceil(n / a) * a;

/** The exact size of the GGUF `quantize()` writes for a plan (the writer's own metadata and layout). */
export function ggufFileBytes(m: ModelFile, plan: QuantizePlan, imatrix?: Imatrix): number {
  if (!m.gguf) fail('allocation to a file size needs a GGUF input');
  return ggufOutputBytes(m, plan, imatrix);
}

/** aligned bytes of a planned tensor's data */
const planBytes = (p: QuantizePlan['tensors'][number]) => align(ggufTensorBytes({ name: p.name, ne: p.ne, type: p.ggml! }));

export interface AllocationRow {
  name: string;
  type: string;
  bytes: number;
  cost: number;
  /** the type the base file type gives this tensor */
  baseType: string;
}

export interface AllocationResult {
  recipe: Recipe;
  /** predicted size of the output file */
  fileBytes: number;
  targetBytes: number;
  parameters: number;
  bitsPerWeight: number;
  /** Σ cost of the chosen candidates (additive model) */
  cost: number;
  /** Σ cost of the base file type's choices, where the database has them */
  baseCost?: number;
  optimal: boolean;
  lowerBound: number;
  rows: AllocationRow[];
  /** evo: fitness (KLD) of the start and of the result, evaluations used */
  evo?: { startKld: number; kld: number; evaluations: number };
}

export interface AllocateOptions {
  method?: AllocateMethod;
  /** evo: fitness of an assignment (tensor name -> type), e.g. the model's KLD on `tokens` calibration tokens */
  fitness?: (types: ReadonlyMap<string, string>, stage: number) => number;
  /** evo: generations, offspring per generation, stages (token budgets grow per stage) */
  generations?: number;
  offspring?: number;
  seed?: number;
  maxNodes?: number;
  /** the imatrix the file will be written with (its summary is part of the file's metadata) */
  imatrix?: Imatrix;
  onProgress?: (message: string) => void;
}

/**
 * Per-tensor types for a target file size. `base` is a llama.cpp file-type recipe; the tensors of the
 * database are allocated, all others keep the base plan's type.
 */
export function allocateToSize(m: ModelFile, base: Recipe, db: SensitivityDb, targetBytes: number, o: AllocateOptions = {}): AllocationResult {
  if (!base.llama) fail('allocation starts from a llama.cpp file type (--type Q4_K_M etc.)');
  if (base.llama.pure) fail('--target-size/--target-bpw choose the type of each tensor: they cannot be combined with --pure');
  if (!Number.isFinite(targetBytes) || targetBytes <= 0) fail(`target size ${targetBytes} is not a positive number of bytes`);
  const plan = planQuantization(m, base, 'gguf', { hasImatrix: true });
  const byName = new Map(plan.tensors.map((p) => [p.name, p]));
  const allocated = db.tensors.filter((t) => byName.has(t.name) && byName.get(t.name)!.ggml && !isGgmlFloat(byName.get(t.name)!.to));
  if (allocated.length === 0) fail('none of the sensitivity database\'s tensors is quantized by this file type');
  for (const t of allocated) {
    const p = byName.get(t.name)!;
    if (p.ne[0] !== t.shape[1] || p.ne.reduce((a, b) => a * b, 1) !== t.shape[0] * t.shape[1]) fail(`sensitivity database: ${t.name} has shape ${t.shape.join('x')}, the model's is ${[...p.ne].reverse().join('x')}`);
  }
  const allocatedNames = new Set(allocated.map((t) => t.name));
  // fixed part: the header and every tensor not allocated, in the base plan's types
  const header = ggufFileBytes(m, plan, o.imatrix) - plan.tensors.reduce((a, p) => a + planBytes(p), 0);
  let fixed = header;
  for (const p of plan.tensors) if (!allocatedNames.has(p.name)) fixed += planBytes(p);
  const items: AllocItem[] = allocated.map((t) => ({ name: t.name, candidates: t.candidates.map((c) => ({ label: c.type, bytes: align(c.bytes), cost: c.cost })) }));
  const budget = targetBytes - fixed;
  const range = sizeRange(items);
  const f32Bytes = fixed + allocated.reduce((a, t) => a + align(4 * t.shape[0] * t.shape[1]), 0);
  if (targetBytes > f32Bytes) fail(`target size ${targetBytes} bytes is larger than the model in F32 (${f32Bytes} bytes): nothing to allocate`);
  if (budget < range.min) fail(`target size ${targetBytes} bytes is unreachable: the smallest candidate mix makes a ${fixed + range.min}-byte file`);
  const parameters = plan.tensors.reduce((a, p) => a + p.ne.reduce((x, y) => x * y, 1), 0);
  const method = o.method ?? 'ilp';
  let sol: Allocation = method === 'greedy' ? allocateLagrangian(items, budget) : allocateExact(items, budget, { maxNodes: o.maxNodes });
  let evo: AllocationResult['evo'];
  if (method === 'evo') {
    if (!o.fitness) fail('allocation method evo needs a fitness function (calibration text)');
    const r = evolve(items, budget, sol.picks, o.fitness, o);
    evo = { startKld: r.startFitness, kld: r.fitness, evaluations: r.evaluations };
    let bytes = 0;
    let cost = 0;
    r.picks.forEach((j, i) => {
      bytes += items[i].candidates[j].bytes;
      cost += items[i].candidates[j].cost;
    });
    sol = { picks: r.picks, bytes, cost, optimal: false, lowerBound: sol.lowerBound };
  }
  const rows: AllocationRow[] = allocated.map((t, i) => {
    const c = t.candidates[sol.picks[i]];
    return { name: t.name, type: c.type, bytes: align(c.bytes), cost: c.cost, baseType: byName.get(t.name)!.to };
  });
  let baseCost: number | undefined = 0;
  for (const t of allocated) {
    const c = t.candidates.find((x) => x.type === byName.get(t.name)!.to);
    if (!c) {
      baseCost = undefined;
      break;
    }
    baseCost += c.cost;
  }
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const recipe = defineRecipe({
    ...JSON.parse(JSON.stringify(base)),
    name: `${base.name}-alloc-${targetBytes}`,
    description: `${base.llama.ftype} with per-tensor types allocated (${method}) to at most ${targetBytes} bytes from ${db.estimator} sensitivities`,
    rules: [...rows.map((r) => ({ match: `^${escape(r.name)}$`, scheme: r.type })), ...base.rules],
  });
  const fileBytes = fixed + sol.bytes;
  return { recipe, fileBytes, targetBytes, parameters, bitsPerWeight: (8 * fileBytes) / parameters, cost: sol.cost, baseCost, optimal: sol.optimal, lowerBound: sol.lowerBound, rows, ...(evo ? { evo } : {}) };
}

/**
 * EvoPress-style (1+λ) search. A mutation raises one random tensor by one level (next larger
 * candidate) and lowers random others until the budget holds again. Offspring are ranked on stage 0's
 * fitness (few tokens); the best few go on to stage 1 (more tokens), whose best replaces the parent
 * when it is better on stage 1 (the parent is re-measured there too).
 */
function evolve(items: readonly AllocItem[], budget: number, start: readonly number[], fitness: NonNullable<AllocateOptions['fitness']>, o: AllocateOptions): { picks: number[]; fitness: number; startFitness: number; evaluations: number } {
  const rand = rngStream('allocateSearch', o.seed ?? 1);
  const pick = (n: number) => Math.floor((rand() / 4294967296) * n);
  // levels: candidates of each item by increasing bytes
  const levels = items.map((it) => it.candidates.map((_, j) => j).sort((a, b) => it.candidates[a].bytes - it.candidates[b].bytes || it.candidates[a].cost - it.candidates[b].cost));
  const typesOf = (p: readonly number[]) => new Map(items.map((it, i) => [it.name, it.candidates[p[i]].label]));
  const bytesOf = (p: readonly number[]) => p.reduce((a, j, i) => a + items[i].candidates[j].bytes, 0);
  let evaluations = 0;
  const fit = (p: readonly number[], stage: number) => {
    evaluations++;
    return fitness(typesOf(p), stage);
  };
  let parent = start.slice();
  let parentFit = fit(parent, 1);
  const startFitness = parentFit;
  const generations = o.generations ?? 20;
  const lambda = o.offspring ?? 8;
  const survivors = Math.max(1, Math.floor(lambda / 4));
  for (let g = 0; g < generations; g++) {
    const kids: number[][] = [];
    for (let k = 0; k < lambda; k++) {
      const child = parent.slice();
      for (let tries = 0; tries < 20; tries++) {
        const i = pick(items.length);
        const li = levels[i].indexOf(child[i]);
        if (li + 1 >= levels[i].length) continue;
        child[i] = levels[i][li + 1];
        break;
      }
      let guard = 0;
      while (bytesOf(child) > budget && guard++ < 10 * items.length) {
        const i = pick(items.length);
        const li = levels[i].indexOf(child[i]);
        if (li > 0) child[i] = levels[i][li - 1];
      }
      if (bytesOf(child) <= budget && child.some((j, i) => j !== parent[i])) kids.push(child);
    }
    if (kids.length === 0) continue;
    const ranked = kids.map((c) => ({ c, f: fit(c, 0) })).sort((a, b) => a.f - b.f).slice(0, survivors);
    const finals = ranked.map((r) => ({ c: r.c, f: fit(r.c, 1) })).sort((a, b) => a.f - b.f);
    if (finals[0].f < parentFit) {
      parent = finals[0].c;
      parentFit = finals[0].f;
    }
    o.onProgress?.(`evo generation ${g + 1}/${generations}: KLD ${parentFit.toExponential(4)}`);
  }
  return { picks: parent, fitness: parentFit, startFitness, evaluations };
}

/** bytes for a target bits-per-weight over all parameters */
export function bytesForBpw(parameters: number, bpw: number): number {
  if (!(Number.isFinite(bpw) && bpw > 0 && bpw <= 32)) fail(`--target-bpw ${bpw} must be in (0, 32]`);
  return Math.floor((bpw * parameters) / 8);
}

/** number of parameters of a model (every tensor) */
export function parameterCount(m: ModelFile): number {
  return m.tensors.reduce((a, t) => a + t.nElements, 0);
}

