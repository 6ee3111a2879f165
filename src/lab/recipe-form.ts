/**
 * The Lab's quantize form as data, and the recipe it means: the same choices as `lowbit quantize`'s
 * flags (--type, --group, --asym, --zero-point, --keep-embeddings, --pure, --output-tensor-type,
 * --token-embedding-type, --leave-output-tensor, --algo and the PTQ options), so the same form gives
 * the same recipe and therefore the same bytes as the CLI.
 */
import { fail } from '../errors.js';
import { LLAMA_FTYPES } from '../algos/llama-types.js';
import { PTQ_OPTIONS, type PtqOptions } from '../algos/ptq-options.js';
import { defineRecipe, llamaRecipe, schemeRecipe, type Algorithm, type Recipe } from '../algos/recipe.js';
import { ggmlCodecs } from '../quant/ggml/registry.js';
import { schemes } from '../quant/registry.js';
import { SCHEME_OPTIONS, type SchemeOptionSpec } from '../quant/scheme-options.js';

export interface QuantizeForm {
  /** a llama.cpp file type (Q4_K_M), a GGML block type (MXFP4) or a lowbit scheme / element format (nvfp4, int4) */
  type: string;
  /** output container; 'auto': GGUF for llama.cpp and GGML types, safetensors for lowbit schemes */
  container: 'auto' | 'gguf' | 'safetensors';
  group?: number;
  asym?: boolean;
  zeroPoint?: 'int' | 'float';
  keepEmbeddings?: boolean;
  pure?: boolean;
  outputTensorType?: string;
  tokenEmbeddingType?: string;
  leaveOutputTensor?: boolean;
  /** mixed precision: per-tensor GGML types for this many bits per weight (llama.cpp file types; needs a calibration text) */
  targetBpw?: number;
  /** --algo: rtn, gptq, awq, hqq, awq+gptq, autoround, gptq+autoround, ... (recipe.ts ALGORITHMS) */
  algo?: string;
  /** PTQ options that were set (the rest take PTQ_OPTIONS' defaults) */
  ptq?: Partial<Record<keyof PtqOptions, number | boolean | string>>;
}

export const isLlamaFtype = (type: string): boolean => Object.keys(LLAMA_FTYPES).some((k) => k.toLowerCase() === type.toLowerCase());

const ggmlName = (type: string) => type.replace(/^ggml_/i, '').toUpperCase();
export const isGgmlType = (type: string): boolean => ggmlCodecs.some((c) => c.quantize && c.type.name === ggmlName(type));

/**
 * The container a form writes. 'auto' goes by the name as the menu spells it: llama.cpp file types and
 * GGML block types are upper case (Q4_K_M, MXFP4, NVFP4) and write GGUF; lowbit schemes are lower case
 * (mxfp4, nvfp4, int4_g32) and write safetensors. (Names that are both differ only in case.)
 */
export function containerOf(f: QuantizeForm): 'gguf' | 'safetensors' {
  if (f.container !== 'auto') return f.container;
  const t = f.type.trim();
  const upper = t === t.toUpperCase();
  return upper && (isLlamaFtype(t) || isGgmlType(t)) ? 'gguf' : 'safetensors';
}

/** The recipe of a form, as `lowbit quantize` builds it from the same flags (commands/quantize.ts). */
export function recipeFromForm(f: QuantizeForm): { recipe: Recipe; output: 'gguf' | 'safetensors' } {
  const output = containerOf(f);
  const type = f.type.trim();
  if (!type) fail('choose a type');
  let base: Recipe;
  if (output === 'gguf' && isLlamaFtype(type)) {
    base = llamaRecipe(type, {
      pure: f.pure || undefined,
      outputTensorType: f.outputTensorType?.toUpperCase() || undefined,
      tokenEmbeddingType: f.tokenEmbeddingType?.toUpperCase() || undefined,
      leaveOutputTensor: f.leaveOutputTensor || undefined,
    });
  } else {
    if (f.zeroPoint && !f.asym) fail('a zero-point type applies to asymmetric schemes');
    base = schemeRecipe(type, { groupSize: f.group, asym: f.asym, zeroPoint: f.zeroPoint, keepEmbeddings: f.keepEmbeddings });
  }
  const algo = f.algo && f.algo !== 'rtn' ? f.algo : undefined;
  const given = PTQ_OPTIONS.filter((o) => f.ptq && f.ptq[o.key] !== undefined);
  if (!algo && !given.length) return { recipe: base, output };
  const ptq = { ...(base.ptq ?? {}), ...Object.fromEntries(given.map((o) => [o.key, f.ptq![o.key]])) };
  return { recipe: defineRecipe({ ...JSON.parse(JSON.stringify(base)), ...(algo ? { algorithm: algo as Algorithm } : {}), ...(Object.keys(ptq).length ? { ptq } : {}) }), output };
}

/** The CLI command that makes the same file (shown in the page, so a result can be reproduced). */
export function cliCommand(f: QuantizeForm, input: string, output: string, extra: { calib?: string; imatrix?: string } = {}): string {
  const parts = ['lowbit', 'quantize', input, output, '--type', f.type];
  if (f.group) parts.push('--group', String(f.group));
  if (f.asym) parts.push('--asym');
  if (f.asym && f.zeroPoint === 'float') parts.push('--zero-point', 'float');
  if (f.keepEmbeddings) parts.push('--keep-embeddings');
  if (f.pure) parts.push('--pure');
  if (f.outputTensorType) parts.push('--output-tensor-type', f.outputTensorType);
  if (f.tokenEmbeddingType) parts.push('--token-embedding-type', f.tokenEmbeddingType);
  if (f.leaveOutputTensor) parts.push('--leave-output-tensor');
  if (f.targetBpw) parts.push('--target-bpw', String(f.targetBpw));
  if (f.algo && f.algo !== 'rtn') parts.push('--algo', f.algo);
  if (extra.calib) parts.push('--calib', extra.calib);
  if (extra.imatrix) parts.push('--imatrix', extra.imatrix);
  for (const o of PTQ_OPTIONS) {
    const v = f.ptq?.[o.key];
    if (v === undefined) continue;
    if (o.type === 'boolean') {
      if (v !== o.default) parts.push(v ? `--${o.flag}` : `--no-${o.flag}`);
    } else parts.push(`--${o.flag}`, String(v));
  }
  return parts.map((p) => (/^[\w./:=+-]+$/.test(p) ? p : `'${p.replace(/'/g, "'\\''")}'`)).join(' ');
}

/** the Lab's labels of the scheme options' choices (the values are the table's) */
const CHOICE_LABELS: Readonly<Record<string, string>> = { int: 'integer', float: 'float minimum' };

/**
 * The scheme-option fields of the Lab's form, from the one scheme-options table (quant/scheme-options.ts):
 * the options a recipe carries (group, asym, zero-point), with the table's help, range and choices; the
 * page's inputs (ids = the CLI flags) take these at start.
 */
export function schemeFields(): { id: string; spec: SchemeOptionSpec; choices?: { value: string; label: string }[] }[] {
  return SCHEME_OPTIONS.filter((o) => o.recipeField !== undefined).map((spec) => ({
    id: spec.flag,
    spec,
    ...(spec.choices ? { choices: spec.choices.map((c) => ({ value: c, label: CHOICE_LABELS[c] ?? c })) } : {}),
  }));
}

export interface TypeChoice {
  value: string;
  label: string;
  group: 'llama.cpp file types' | 'GGML block types (every tensor)' | 'lowbit schemes (safetensors)';
}

/** Every choice of the type menu: llama.cpp file types, GGML block types, lowbit schemes. */
export function typeChoices(): TypeChoice[] {
  const out: TypeChoice[] = [];
  const quantizable = new Set(ggmlCodecs.filter((c) => c.quantize).map((c) => c.type.name));
  for (const [name, [, t]] of Object.entries(LLAMA_FTYPES)) if (quantizable.has(t)) out.push({ value: name, label: name, group: 'llama.cpp file types' });
  for (const c of ggmlCodecs) if (c.quantize && !isLlamaFtype(c.type.name)) out.push({ value: c.type.name, label: c.type.name, group: 'GGML block types (every tensor)' });
  for (const s of schemes()) if (!s.id.startsWith('ggml_')) out.push({ value: s.id, label: `${s.id} — ${s.description}`, group: 'lowbit schemes (safetensors)' });
  for (const e of ['int8', 'int4', 'int3', 'int2', 'uint4', 'fp8_e4m3fn', 'fp8_e5m2', 'fp6_e2m3fn', 'fp4_e2m1fn', 'nf4'])
    out.push({ value: e, label: `${e} — element format (choose a group size)`, group: 'lowbit schemes (safetensors)' });
  return out;
}
