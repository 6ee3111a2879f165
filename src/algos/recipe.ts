/**
 * Quantization recipes: frozen, versioned, JSON-round-trippable objects applied by one verb,
 * quantize(model, recipe). A recipe is either a llama.cpp file type (its mixing rules decide each
 * tensor's GGML type; written to GGUF) or a list of rules for generic schemes (written to safetensors,
 * or to GGUF when every scheme is a GGML type). Rules match tensor names; the first match wins.
 */
import { ggmlTypeByName } from '../quant/ggml/types.js';
import { fail } from '../errors.js';
import { checkSchemeOption, SCHEME_OPTIONS } from '../quant/scheme-options.js';
import { LLAMA_FTYPES } from './llama-types.js';
import { ptqOptions, type PtqOptions } from './ptq-options.js';

export const RECIPE_VERSION = 1;

/** The algorithms (pipeline/algorithms.ts holds their handlers). */
export type BaseAlgorithm = 'rtn' | 'gptq' | 'awq' | 'hqq' | 'easyquant' | 'autoround' | 'omniquant';
export const BASE_ALGORITHMS: readonly BaseAlgorithm[] = ['rtn', 'gptq', 'awq', 'hqq', 'easyquant', 'autoround', 'omniquant'];
/**
 * A recipe's algorithm: one, or a list applied in order (every member's input transform, then the
 * last one rounds: ["awq", "gptq"] folds AWQ's scales in first, then GPTQ, as the AWQ paper combines
 * them). 'awq+gptq' is the same list in the spelling of older recipes and of `--algo`.
 */
export type Algorithm = BaseAlgorithm | 'awq+gptq' | 'gptq+autoround' | 'awq+autoround' | 'omniquant+autoround' | 'omniquant+gptq' | readonly BaseAlgorithm[];
/** the names `--algo` accepts */
export const ALGORITHMS: readonly string[] = [...BASE_ALGORITHMS, 'awq+gptq', 'gptq+autoround', 'awq+autoround', 'omniquant+autoround', 'omniquant+gptq'];

/** An algorithm's name as `--algo` spells it ('gptq', 'awq+gptq') */
export function algorithmName(a: Algorithm | undefined): string {
  return a === undefined ? 'rtn' : typeof a === 'string' ? a : a.join('+');
}

/** An algorithm as its list of base algorithms (validated). */
export function algorithmList(a: unknown, where = 'recipe'): readonly BaseAlgorithm[] {
  const list = typeof a === 'string' && a.includes('+') ? a.split('+') : Array.isArray(a) ? a : [a];
  if (!list.length) fail(`${where}: the algorithm list is empty`);
  for (const x of list) if (!BASE_ALGORITHMS.includes(x as BaseAlgorithm)) fail(`${where}: unknown algorithm ${JSON.stringify(x)} (valid: ${BASE_ALGORITHMS.join(', ')}, or a list such as ["awq", "gptq"])`);
  return list as readonly BaseAlgorithm[];
}

export interface RecipeRule {
  /** regular expression over tensor names (GGUF naming) */
  readonly match: string;
  /** scheme or GGML type name (see `lowbit schemes`); absent with `keep` */
  readonly scheme?: string;
  /** group size for grouped generic schemes */
  readonly groupSize?: number;
  /** asymmetric (zero-point) for integer schemes */
  readonly asym?: boolean;
  /** with asym: an integer zero-point (default) or a float minimum ('float', as Q4_1 / HQQ) */
  readonly zeroPoint?: 'int' | 'float';
  readonly algorithm?: Algorithm;
  /** leave the tensor unquantized, stored in this float type */
  readonly keep?: 'f32' | 'f16' | 'bf16';
}

export interface LlamaRecipe {
  readonly ftype: string;
  readonly pure?: boolean;
  readonly outputTensorType?: string;
  readonly tokenEmbeddingType?: string;
  readonly leaveOutputTensor?: boolean;
}

export interface Recipe {
  readonly lowbitRecipe: typeof RECIPE_VERSION;
  readonly name: string;
  readonly description?: string;
  /** llama.cpp file type: per-tensor GGML types by llama-quantize's rules; rules below override them */
  readonly llama?: LlamaRecipe;
  readonly rules: readonly RecipeRule[];
  /** default algorithm for rules that do not name one */
  readonly algorithm?: Algorithm;
  /** options of the calibrated algorithms (see ptq-options.ts; absent fields take their defaults) */
  readonly ptq?: Partial<PtqOptions>;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

const NOT_QUANTIZED = '(_norm\\.weight|\\.bias)$';

/** Validate an object (parsed JSON) as a recipe and freeze it. */
export function defineRecipe(o: unknown): Recipe {
  if (!o || typeof o !== 'object' || Array.isArray(o)) fail('recipe must be a JSON object');
  const r = o as Record<string, unknown>;
  if (r.lowbitRecipe !== RECIPE_VERSION) fail(`recipe: lowbitRecipe must be ${RECIPE_VERSION} (got ${JSON.stringify(r.lowbitRecipe)})`);
  if (typeof r.name !== 'string' || !r.name) fail('recipe: name must be a non-empty string');
  const known = new Set(['lowbitRecipe', 'name', 'description', 'llama', 'rules', 'algorithm', 'ptq']);
  for (const k of Object.keys(r)) if (!known.has(k)) fail(`recipe: unknown field '${k}'`);
  if (r.algorithm !== undefined) algorithmList(r.algorithm);
  if (r.ptq !== undefined) ptqOptions(r.ptq);
  if (r.llama !== undefined) {
    const l = r.llama as Record<string, unknown>;
    if (!l || typeof l !== 'object' || typeof l.ftype !== 'string') fail('recipe: llama.ftype must be a string');
    if (!Object.keys(LLAMA_FTYPES).some((k) => k.toLowerCase() === (l.ftype as string).toLowerCase()))
      fail(`recipe: unknown llama.cpp file type '${l.ftype}' (valid: ${Object.keys(LLAMA_FTYPES).join(', ')})`);
  }
  if (!Array.isArray(r.rules)) fail('recipe: rules must be an array');
  r.rules.forEach((rule: unknown, i: number) => {
    if (!rule || typeof rule !== 'object') fail(`recipe: rule ${i} must be an object`);
    const x = rule as Record<string, unknown>;
    if (typeof x.match !== 'string') fail(`recipe: rule ${i} needs a 'match' regular expression`);
    try {
      new RegExp(x.match);
    } catch {
      fail(`recipe: rule ${i} match '${x.match}' is not a valid regular expression`);
    }
    if (x.scheme === undefined && x.keep === undefined) fail(`recipe: rule ${i} needs 'scheme' or 'keep'`);
    if (x.keep !== undefined && !['f32', 'f16', 'bf16'].includes(x.keep as string)) fail(`recipe: rule ${i} keep must be f32, f16 or bf16`);
    // the scheme options a rule carries, checked against their one declaration (quant/scheme-options.ts)
    for (const s of SCHEME_OPTIONS) if (s.recipeField && x[s.recipeField] !== undefined) checkSchemeOption(s, x[s.recipeField], `recipe: rule ${i} ${s.recipeField}`);
    if (x.algorithm !== undefined) algorithmList(x.algorithm, `recipe: rule ${i}`);
    // in a llama.cpp recipe, a rule with a scheme is a per-tensor type override (llama-quantize --tensor-type)
    if (r.llama !== undefined && x.scheme !== undefined && !ggmlTypeByName(String(x.scheme)))
      fail(`recipe: rule ${i} (${x.match}): unknown GGML type '${x.scheme}' for a llama.cpp recipe`);
  });
  return deepFreeze(JSON.parse(JSON.stringify(r)) as Recipe);
}

export function recipeToJSON(r: Recipe): string {
  return JSON.stringify(r, null, 2);
}

export function recipeFromJSON(text: string): Recipe {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    fail(`recipe is not valid JSON: ${(e as Error).message}`);
  }
  return defineRecipe(o);
}

/** A llama.cpp file type as a recipe. */
export function llamaRecipe(ftype: string, opts: Omit<LlamaRecipe, 'ftype'> = {}): Recipe {
  const key = Object.keys(LLAMA_FTYPES).find((k) => k.toLowerCase() === ftype.toLowerCase()) ?? ftype;
  return defineRecipe({ lowbitRecipe: RECIPE_VERSION, name: key, description: `llama.cpp ${key} mixture`, llama: { ftype: key, ...opts }, rules: [] });
}

/** A generic scheme for every quantizable weight matrix; norms, biases (and optionally embeddings) kept. */
export function schemeRecipe(scheme: string, opts: { groupSize?: number; asym?: boolean; zeroPoint?: 'int' | 'float'; algorithm?: Algorithm; keepEmbeddings?: boolean } = {}): Recipe {
  const rules: RecipeRule[] = [{ match: NOT_QUANTIZED, keep: 'f32' }];
  if (opts.keepEmbeddings) rules.push({ match: '^(token_embd|output)\\.weight$', keep: 'f16' });
  rules.push({ match: '\\.weight$', scheme, ...(opts.groupSize ? { groupSize: opts.groupSize } : {}), ...(opts.asym ? { asym: true } : {}), ...(opts.asym && opts.zeroPoint === 'float' ? { zeroPoint: 'float' } : {}), ...(opts.algorithm ? { algorithm: opts.algorithm } : {}) });
  const name = scheme + (opts.groupSize ? `_g${opts.groupSize}` : '') + (opts.asym ? (opts.zeroPoint === 'float' ? '_asym_fzp' : '_asym') : '');
  return defineRecipe({ lowbitRecipe: RECIPE_VERSION, name, rules });
}

/** The rule for a tensor, or undefined when no rule matches (the tensor is copied unchanged). */
export function ruleFor(r: Recipe, tensorName: string): RecipeRule | undefined {
  return r.rules.find((rule) => new RegExp(rule.match).test(tensorName));
}
