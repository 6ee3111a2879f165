/**
 * The options that turn an element format into a block scheme (int4 -> int4 per group of 32, asymmetric,
 * float zero-point ...), declared once as microxcaling's spec table: name, type, range, help, and the
 * recipe field that carries it. This table feeds the `cast` and `quantize` flags, recipe validation
 * (algos/recipe.ts) and the browser Lab's forms; resolveScheme (registry.ts) takes the values.
 */
import { fail } from '../errors.js';
import { SCALE_FORMATS } from './scheme.js';
import { CLIP_METHODS, GRANULARITIES } from './schemes/generic.js';

/** The ResolveOptions fields a scheme option sets. */
export type SchemeOptionKey = 'groupSize' | 'granularity' | 'tileSize' | 'asymmetric' | 'zeroPoint' | 'scaleFormat' | 'clip' | 'percentile';

export interface SchemeOptionSpec {
  readonly key: SchemeOptionKey;
  /** CLI flag (without --) and Lab field name */
  readonly flag: string;
  /** the recipe rule field that carries it (RecipeRule), when recipes carry it */
  readonly recipeField?: 'groupSize' | 'asym' | 'zeroPoint';
  readonly type: 'int' | 'number' | 'boolean' | 'string';
  readonly help: string;
  readonly choices?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** only meaningful together with this flag */
  readonly requires?: string;
}

export const SCHEME_OPTIONS: readonly SchemeOptionSpec[] = Object.freeze([
  { key: 'groupSize', flag: 'group', recipeField: 'groupSize', type: 'int', min: 1, max: 1 << 16, help: 'element format as a scheme: one scale per group of G values along a row' },
  { key: 'granularity', flag: 'granularity', type: 'string', choices: GRANULARITIES, help: 'element format as a scheme: what shares a scale (channel = row)' },
  { key: 'tileSize', flag: 'tile', type: 'int', min: 1, max: 1 << 16, help: 'granularity block2d: tile edge (default 32)' },
  { key: 'asymmetric', flag: 'asym', recipeField: 'asym', type: 'boolean', help: 'element format as a scheme: min/max with a zero-point (intN becomes uintN)' },
  { key: 'zeroPoint', flag: 'zero-point', recipeField: 'zeroPoint', type: 'string', choices: ['int', 'float'], requires: 'asym', help: 'with --asym: an integer zero-point (default) or a float minimum (as Q4_1, HQQ)' },
  { key: 'scaleFormat', flag: 'scale-format', type: 'string', choices: SCALE_FORMATS, help: 'element format as a scheme: storage of scales' },
  { key: 'clip', flag: 'clip', type: 'string', choices: CLIP_METHODS, help: 'element format as a scheme: scale selection' },
  { key: 'percentile', flag: 'percentile', type: 'number', min: 0, max: 100, requires: 'clip', help: 'with --clip percentile (default 99.9)' },
] as const satisfies readonly SchemeOptionSpec[]);

/** The spec of a flag. */
export function schemeOption(flag: string): SchemeOptionSpec {
  const s = SCHEME_OPTIONS.find((o) => o.flag === flag);
  if (!s) fail(`internal: no scheme option --${flag}`);
  return s;
}

/** A CLI option declaration ({ name, type, help, choices, min, max }) of a scheme option. */
export function schemeOptionFlag(flag: string): { name: string; type: SchemeOptionSpec['type']; help: string; choices?: readonly string[]; min?: number; max?: number } {
  const s = schemeOption(flag);
  return { name: s.flag, type: s.type, help: s.help, ...(s.choices ? { choices: s.choices } : {}), ...(s.min !== undefined ? { min: s.min } : {}), ...(s.max !== undefined ? { max: s.max } : {}) };
}

/** Check one value against its spec; `where` names it in the error (e.g. "recipe: rule 2 groupSize"). */
export function checkSchemeOption(s: SchemeOptionSpec, v: unknown, where: string): void {
  const kind = s.type === 'boolean' ? 'boolean' : s.type === 'string' ? 'string' : 'number';
  if (typeof v !== kind || (kind === 'number' && !Number.isFinite(v))) fail(`${where} must be a ${s.type === 'int' ? 'positive integer' : s.type}, got ${JSON.stringify(v)}`);
  if (s.type === 'int' && !Number.isSafeInteger(v)) fail(`${where} must be a positive integer, got ${JSON.stringify(v)}`);
  if (typeof v === 'number' && ((s.min !== undefined && v < s.min) || (s.max !== undefined && v > s.max))) fail(`${where} = ${v} is outside [${s.min ?? '-inf'}, ${s.max ?? 'inf'}]${s.type === 'int' && s.min === 1 ? ' (must be a positive integer)' : ''}`);
  if (s.choices && !s.choices.includes(v as string)) fail(`${where} must be ${s.choices.join(' or ')}`);
}
