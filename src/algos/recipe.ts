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

/**
 * What an ONNX output does to the graph (pipeline/quantize-onnx.ts runs it; `lowbit quantize model.onnx`'s
 * flags map to it). Parts apply in this order: MatMulNBits (and GatherBlockQuantized), QDQ, activation
 * quantizers, float16.
 */
export interface OnnxRecipe {
  /** MatMul/Gemm weights -> com.microsoft MatMulNBits, blockwise along K */
  readonly nbits?: {
    readonly bits: 2 | 4 | 8;
    readonly blockSize: number;
    readonly symmetric: boolean;
    readonly accuracyLevel?: number;
    /** gptq needs calibration samples */
    readonly algorithm: 'rtn' | 'gptq' | 'hqq';
    /** Gather embedding tables -> com.microsoft GatherBlockQuantized, the same bits and blocks */
    readonly gather?: boolean;
  };
  /** QuantizeLinear/DequantizeLinear on `ops` (weights per output channel) */
  readonly qdq?: {
    readonly format: 'int8' | 'fp8';
    readonly ops: readonly string[];
    /** static (calibrated ranges), dynamic (DynamicQuantizeLinear) or none (weights only) */
    readonly activations: 'static' | 'dynamic' | 'none';
    readonly method: 'minmax' | 'percentile' | 'mse' | 'entropy';
    readonly granularity: 'tensor' | 'channel';
    /** Conv biases corrected on the calibration data (when there is calibration data) */
    readonly biasCorrection: boolean;
    /** leave the N nodes the sensitivity pass ranks worst in float */
    readonly keepSensitive?: number;
    /** the next N worst nodes get uint16 activations */
    readonly act16?: number;
  };
  /** calibrated activation quantizers (post-softmax, post-GELU/swish, LayerNorm inputs) */
  readonly act?: {
    readonly softmax?: 'uniform' | 'log2' | 'logsqrt2' | 'twin';
    readonly gelu?: 'uniform' | 'twin';
    readonly layernorm?: 'tensor' | 'ptf' | 'channel';
    readonly bits: number;
  };
  /** the rest of the graph in float16 (inputs/outputs stay float32) */
  readonly float16?: boolean;
  /** node names (or op(output) labels) left in float */
  readonly keep?: readonly string[];
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
  /** an ONNX output's graph rewrite (the rules do not apply to ONNX models) */
  readonly onnx?: OnnxRecipe;
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
  const known = new Set(['lowbitRecipe', 'name', 'description', 'llama', 'rules', 'algorithm', 'ptq', 'onnx']);
  for (const k of Object.keys(r)) if (!known.has(k)) fail(`recipe: unknown field '${k}'`);
  if (r.algorithm !== undefined) algorithmList(r.algorithm);
  if (r.ptq !== undefined) ptqOptions(r.ptq);
  if (r.llama !== undefined) {
    const l = r.llama as Record<string, unknown>;
    if (!l || typeof l !== 'object' || typeof l.ftype !== 'string') fail('recipe: llama.ftype must be a string');
    if (!Object.keys(LLAMA_FTYPES).some((k) => k.toLowerCase() === (l.ftype as string).toLowerCase()))
      fail(`recipe: unknown llama.cpp file type '${l.ftype}' (valid: ${Object.keys(LLAMA_FTYPES).join(', ')})`);
  }
  if (r.onnx !== undefined) checkOnnxRecipe(r.onnx);
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

/** one of `choices`, or a clear error naming the field */
function oneOf<T extends string | number>(v: unknown, choices: readonly T[], where: string): T {
  if (!choices.includes(v as T)) fail(`recipe: ${where} must be one of ${choices.join(', ')} (got ${JSON.stringify(v)})`);
  return v as T;
}

function fields(o: unknown, known: readonly string[], where: string): Record<string, unknown> {
  if (!o || typeof o !== 'object' || Array.isArray(o)) fail(`recipe: ${where} must be an object`);
  for (const k of Object.keys(o)) if (!known.includes(k)) fail(`recipe: unknown field '${where}.${k}'`);
  return o as Record<string, unknown>;
}

const intIn = (v: unknown, lo: number, hi: number, where: string) => {
  if (!Number.isInteger(v) || (v as number) < lo || (v as number) > hi) fail(`recipe: ${where} must be an integer in ${lo}..${hi} (got ${JSON.stringify(v)})`);
};

/** Validate a recipe's `onnx` part (the combinations the ONNX writer cannot honour fail here, before any work). */
export function checkOnnxRecipe(o: unknown): void {
  const r = fields(o, ['nbits', 'qdq', 'act', 'float16', 'keep'], 'onnx');
  if (r.nbits !== undefined) {
    const n = fields(r.nbits, ['bits', 'blockSize', 'symmetric', 'accuracyLevel', 'algorithm', 'gather'], 'onnx.nbits');
    if (n.bits === 3) fail("recipe: onnx.nbits.bits 3: onnxruntime's MatMulNBits runs 2, 4 and 8 bits only (its CPU kernel refuses bits = 3): use 2, 4 or 8");
    oneOf(n.bits, [2, 4, 8], 'onnx.nbits.bits');
    intIn(n.blockSize, 1, 1 << 20, 'onnx.nbits.blockSize'); // MatMulNBits' own rule (a power of two, 16..256) is checked by the writer
    if (typeof n.symmetric !== 'boolean') fail('recipe: onnx.nbits.symmetric must be true or false');
    if (n.accuracyLevel !== undefined) intIn(n.accuracyLevel, 0, 4, 'onnx.nbits.accuracyLevel');
    oneOf(n.algorithm, ['rtn', 'gptq', 'hqq'], 'onnx.nbits.algorithm');
    if (n.gather !== undefined && typeof n.gather !== 'boolean') fail('recipe: onnx.nbits.gather must be true or false');
  }
  if (r.qdq !== undefined) {
    const q = fields(r.qdq, ['format', 'ops', 'activations', 'method', 'granularity', 'biasCorrection', 'keepSensitive', 'act16'], 'onnx.qdq');
    oneOf(q.format, ['int8', 'fp8'], 'onnx.qdq.format');
    if (!Array.isArray(q.ops) || !q.ops.length) fail('recipe: onnx.qdq.ops must be a non-empty list of op types');
    for (const op of q.ops) oneOf(op, ['Conv', 'MatMul', 'Gemm'], 'onnx.qdq.ops[]');
    oneOf(q.activations, ['static', 'dynamic', 'none'], 'onnx.qdq.activations');
    oneOf(q.method, ['minmax', 'percentile', 'mse', 'entropy'], 'onnx.qdq.method');
    oneOf(q.granularity, ['tensor', 'channel'], 'onnx.qdq.granularity');
    if (typeof q.biasCorrection !== 'boolean') fail('recipe: onnx.qdq.biasCorrection must be true or false');
    if (q.keepSensitive !== undefined) intIn(q.keepSensitive, 1, 1e6, 'onnx.qdq.keepSensitive');
    if (q.act16 !== undefined) intIn(q.act16, 1, 1e6, 'onnx.qdq.act16');
    if (q.granularity === 'channel' && q.activations !== 'static') fail('recipe: onnx.qdq.granularity channel is for static activations');
    if (q.format === 'fp8' && q.activations === 'dynamic') fail('recipe: onnx.qdq fp8 has no dynamic activations (DynamicQuantizeLinear is uint8)');
    if (q.format === 'fp8' && (q.method === 'mse' || q.method === 'entropy')) fail(`recipe: onnx.qdq.method ${q.method} searches a uint8 grid; fp8 takes minmax or percentile`);
    if (q.act16 !== undefined && (q.activations !== 'static' || q.format !== 'int8')) fail('recipe: onnx.qdq.act16 applies to static int8 QDQ (calibrated uint8 activations)');
  }
  if (r.act !== undefined) {
    const a = fields(r.act, ['softmax', 'gelu', 'layernorm', 'bits'], 'onnx.act');
    if (a.softmax !== undefined) oneOf(a.softmax, ['uniform', 'log2', 'logsqrt2', 'twin'], 'onnx.act.softmax');
    if (a.gelu !== undefined) oneOf(a.gelu, ['uniform', 'twin'], 'onnx.act.gelu');
    if (a.layernorm !== undefined) oneOf(a.layernorm, ['tensor', 'ptf', 'channel'], 'onnx.act.layernorm');
    intIn(a.bits, 2, 8, 'onnx.act.bits');
    if (a.softmax === undefined && a.gelu === undefined && a.layernorm === undefined) fail('recipe: onnx.act needs softmax, gelu or layernorm');
  }
  if (r.float16 !== undefined && typeof r.float16 !== 'boolean') fail('recipe: onnx.float16 must be true or false');
  if (r.keep !== undefined && (!Array.isArray(r.keep) || r.keep.some((k) => typeof k !== 'string'))) fail('recipe: onnx.keep must be a list of node names');
  if (r.nbits === undefined && r.qdq === undefined && r.act === undefined && !r.float16) fail('recipe: onnx needs nbits, qdq, act or float16');
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
