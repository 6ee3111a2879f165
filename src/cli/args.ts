/**
 * Declarative command-line options: each option is declared once (name, type, default, help) and that
 * table drives parsing, validation and `--help`.
 */
import { fail } from '../errors.js';
import { SCHEME_OPTIONS } from '../quant/scheme-options.js';

export type OptionType = 'string' | 'number' | 'int' | 'boolean';

export interface OptionSpec {
  readonly name: string; // long name without dashes, e.g. 'row-length'
  readonly type: OptionType;
  readonly help: string;
  readonly short?: string; // e.g. 'n', 'o'
  readonly default?: string | number | boolean;
  /** for string options: the allowed values */
  readonly choices?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** may be given several times: every value is kept, in order, in ParsedArgs.repeated */
  readonly repeatable?: boolean;
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly options: readonly OptionSpec[];
  /** number of positional arguments accepted: [min, max] */
  readonly positionals?: readonly [number, number];
  run(args: ParsedArgs): Promise<number | void>;
}

export interface ParsedArgs {
  readonly positionals: string[];
  readonly values: Record<string, string | number | boolean | undefined>;
  /** options the user actually passed */
  readonly given: Set<string>;
  /** the values of repeatable options, [option name, value] in command-line order */
  readonly repeated: [string, string][];
}

/**
 * The CLI's one option table of what an option *name* means in every command that has it: its range,
 * and which options it cannot be combined with or applies only with. A command's own spec may narrow a
 * range further (both apply). So --threads, --seed or --ctx take the same values everywhere.
 */
export const OPTION_RULES: Readonly<Record<string, { readonly min?: number; readonly max?: number; readonly conflicts?: readonly string[]; readonly requires?: readonly string[] }>> = {
  // the scheme options (--group, --tile, --zero-point, --percentile ...): ranges and dependencies from their table
  ...Object.fromEntries(SCHEME_OPTIONS.map((o) => [o.flag, { min: o.min, max: o.max, requires: o.requires ? [o.requires] : undefined }])),
  threads: { min: 1, max: 256 },
  seed: { min: 0, max: 2 ** 32 - 1 },
  ctx: { min: 1, max: 1 << 20 },
  chunks: { min: 1, max: 1 << 24 },
  'calib-tokens': { min: 1, max: 1 << 22 },
  'calib-ctx': { min: 2, max: 1 << 20 },
  'row-length': { min: 1, max: 2 ** 31 - 1 },
  n: { min: 0, max: 1 << 20 },
  'gptq-block': { min: 1, max: 1 << 16 },
  'hqq-iters': { min: 1, max: 100000 },
  steps: { min: 1, max: 1e9 },
  // incompatible pairs (each option names the other) and options that apply only with another
  base: { conflicts: ['base-logits'] },
  'base-logits': { conflicts: ['base'] },
  act: { conflicts: ['llm-int8'] },
  'llm-int8': { conflicts: ['act'] },
  type: { conflicts: ['recipe'] },
  recipe: { conflicts: ['type'] },
  to: { conflicts: ['from'] },
  from: { conflicts: ['to'] },
  'rotate-heads': { requires: ['rotate'] },
  'eval-ctx': { min: 4, max: 1 << 20, requires: ['eval'] },
  'eval-chunks': { min: 1, max: 1 << 24, requires: ['eval'] },
  'calib-samples': { requires: ['calib'] },
};

function checkRange(spec: OptionSpec, v: number): void {
  const rule = OPTION_RULES[spec.name];
  const min = Math.max(spec.min ?? -Infinity, rule?.min ?? -Infinity);
  const max = Math.min(spec.max ?? Infinity, rule?.max ?? Infinity);
  if (v < min) fail(`--${spec.name}: ${v} is below the minimum ${min}`);
  if (v > max) fail(`--${spec.name}: ${v} is above the maximum ${max}`);
}

function parseValue(spec: OptionSpec, raw: string): string | number | boolean {
  switch (spec.type) {
    case 'string':
      if (spec.choices && !spec.choices.includes(raw)) fail(`--${spec.name}: '${raw}' is not one of ${spec.choices.join(', ')}`);
      return raw;
    case 'number':
    case 'int': {
      const v = raw.trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(v)) fail(`--${spec.name}: '${raw}' is not a number`);
      if (spec.type === 'int' && !Number.isSafeInteger(v)) fail(`--${spec.name}: '${raw}' is not an integer`);
      checkRange(spec, v);
      return v;
    }
    case 'boolean':
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      fail(`--${spec.name}: '${raw}' is not true or false`);
  }
}

export function parseArgs(cmd: Command, argv: readonly string[]): ParsedArgs {
  const byLong = new Map(cmd.options.map((o) => [o.name, o]));
  const byShort = new Map(cmd.options.filter((o) => o.short).map((o) => [o.short as string, o]));
  const values: Record<string, string | number | boolean | undefined> = {};
  const given = new Set<string>();
  const positionals: string[] = [];
  const repeated: [string, string][] = [];
  for (const o of cmd.options) values[o.name] = o.default;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    let spec: OptionSpec | undefined;
    let inline: string | undefined;
    let negated = false;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      inline = eq >= 0 ? a.slice(eq + 1) : undefined;
      spec = byLong.get(name);
      if (!spec && name.startsWith('no-')) {
        spec = byLong.get(name.slice(3));
        if (spec && spec.type === 'boolean' && inline === undefined) negated = true;
        else spec = undefined;
      }
      if (!spec) fail(`${cmd.name}: unknown option --${name} (see lowbit ${cmd.name} --help)`);
    } else if (a.length > 1 && a.startsWith('-') && !/^-\d/.test(a)) {
      spec = byShort.get(a.slice(1));
      if (!spec) fail(`${cmd.name}: unknown option ${a} (see lowbit ${cmd.name} --help)`);
    } else {
      positionals.push(a);
      continue;
    }
    given.add(spec.name);
    if (spec.type === 'boolean') {
      values[spec.name] = negated ? false : inline !== undefined ? parseValue(spec, inline) : true;
      continue;
    }
    let raw = inline;
    if (raw === undefined) {
      if (i + 1 >= argv.length) fail(`--${spec.name} needs a value`);
      const next = argv[i + 1];
      // `--text --ctx 64`: the value is missing (a value that starts with -- is given as --text=--x)
      if (next === '--' || (next.startsWith('--') && (byLong.has(next.slice(2).split('=')[0]) || byLong.has(next.slice(5).split('=')[0]))))
        fail(`--${spec.name} needs a value, but is followed by the option ${next.split('=')[0]} (write --${spec.name}=${next} for a value that starts with --)`);
      raw = argv[++i];
    }
    values[spec.name] = parseValue(spec, raw);
    if (spec.repeatable) repeated.push([spec.name, raw]);
  }
  for (const name of given) {
    const rule = OPTION_RULES[name];
    for (const other of rule?.conflicts ?? []) if (given.has(other)) fail(`${cmd.name}: give either --${name} or --${other}, not both`);
    const req = rule?.requires?.filter((r) => byLong.has(r));
    if (req?.length && !req.some((r) => given.has(r) && values[r] !== false)) fail(`${cmd.name}: --${name} applies only with ${req.map((r) => `--${r}`).join(' or ')}`);
  }
  const [lo, hi] = cmd.positionals ?? [0, 0];
  if (positionals.length < lo || positionals.length > hi)
    fail(`${cmd.name}: expected ${lo === hi ? lo : `${lo} to ${hi}`} argument(s), got ${positionals.length}; usage: ${cmd.usage}`);
  return { positionals, values, given, repeated };
}

export function helpText(cmd: Command): string {
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary, '', 'options:'];
  for (const o of cmd.options) {
    const flag = (o.short ? `-${o.short}, ` : '    ') + `--${o.name}` + (o.type === 'boolean' ? '' : ` <${o.type === 'string' ? 'value' : o.type}>`);
    const rule = OPTION_RULES[o.name];
    const min = Math.max(o.min ?? -Infinity, rule?.min ?? -Infinity);
    const max = Math.min(o.max ?? Infinity, rule?.max ?? Infinity);
    const range = o.type === 'int' || o.type === 'number' ? (Number.isFinite(min) || Number.isFinite(max) ? `${Number.isFinite(min) ? min : ''}..${Number.isFinite(max) ? max : ''}` : '') : '';
    const extra = [o.choices ? `one of ${o.choices.join('|')}` : '', range, o.default !== undefined ? `default ${o.default}` : '', rule?.conflicts ? `not with ${rule.conflicts.map((c) => `--${c}`).join(', ')}` : '', rule?.requires ? `with ${rule.requires.map((c) => `--${c}`).join(' or ')}` : '', o.repeatable ? 'repeatable' : '']
      .filter(Boolean)
      .join('; ');
    lines.push(`  ${flag.padEnd(30)} ${o.help}${extra ? ` (${extra})` : ''}`);
  }
  return lines.join('\n');
}
