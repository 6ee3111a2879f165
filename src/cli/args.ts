/**
 * Declarative command-line options: each option is declared once (name, type, default, help) and that
 * table drives parsing, validation and `--help`.
 */
import { fail } from '../errors.js';

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
      if (spec.min !== undefined && v < spec.min) fail(`--${spec.name}: ${v} is below the minimum ${spec.min}`);
      if (spec.max !== undefined && v > spec.max) fail(`--${spec.name}: ${v} is above the maximum ${spec.max}`);
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
  const [lo, hi] = cmd.positionals ?? [0, 0];
  if (positionals.length < lo || positionals.length > hi)
    fail(`${cmd.name}: expected ${lo === hi ? lo : `${lo} to ${hi}`} argument(s), got ${positionals.length}; usage: ${cmd.usage}`);
  return { positionals, values, given, repeated };
}

export function helpText(cmd: Command): string {
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary, '', 'options:'];
  for (const o of cmd.options) {
    const flag = (o.short ? `-${o.short}, ` : '    ') + `--${o.name}` + (o.type === 'boolean' ? '' : ` <${o.type === 'string' ? 'value' : o.type}>`);
    const extra = [o.choices ? `one of ${o.choices.join('|')}` : '', o.default !== undefined ? `default ${o.default}` : '', o.repeatable ? 'repeatable' : ''].filter(Boolean).join('; ');
    lines.push(`  ${flag.padEnd(30)} ${o.help}${extra ? ` (${extra})` : ''}`);
  }
  return lines.join('\n');
}
