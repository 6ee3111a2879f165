import { formats } from '../../formats/registry.js';
import type { Format } from '../../formats/descriptor.js';
import type { Command } from '../args.js';

export interface FormatRow {
  name: string;
  kind: Format['kind'];
  bits: number;
  expBits: number;
  manBits: number;
  bias: number;
  maxFinite: number;
  minNormal: number;
  minSubnormal: number;
  inf: boolean;
  nan: boolean;
  finiteValues: number;
  description: string;
}

export function formatRow(f: Format): FormatRow {
  return {
    name: f.name,
    kind: f.kind,
    bits: f.bits,
    expBits: f.expBits,
    manBits: f.manBits,
    bias: f.bias,
    maxFinite: f.maxFinite,
    minNormal: f.minNormal,
    minSubnormal: f.minSubnormal,
    inf: f.hasInf,
    nan: f.hasNaN,
    finiteValues: f.finiteCount,
    description: f.description,
  };
}

/** Short exact-ish rendering of a number for tables. */
export function num(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e7) return String(v);
  const e = Math.floor(Math.log2(a));
  if (a === 2 ** e && (a < 1e-3 || a >= 1e7)) return `2^${e}`;
  return a >= 1e-3 && a < 1e7 ? String(Number(v.toPrecision(6))) : v.toExponential(4);
}

export function renderTable(header: string[], rows: string[][], rightAlign: boolean[] = []): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (rightAlign[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(header), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

export function formatsTable(list: readonly Format[] = formats): string {
  const rows = list.map((f) => [
    f.name,
    String(f.bits),
    f.kind === 'float' ? String(f.expBits) : '-',
    f.kind === 'float' ? String(f.manBits) : '-',
    f.kind === 'float' ? String(f.bias) : '-',
    num(f.maxFinite),
    num(f.minNormal),
    num(f.minSubnormal),
    f.hasInf ? 'yes' : 'no',
    f.hasNaN ? 'yes' : 'no',
    String(f.finiteCount),
  ]);
  return renderTable(['format', 'bits', 'exp', 'man', 'bias', 'max finite', 'min normal', 'min subnormal', 'inf', 'NaN', 'finite values'], rows, [false, true, true, true, true, true, true, true, false, false, true]);
}

export const formatsCommand: Command = {
  name: 'formats',
  summary: 'list every number format with its limits',
  usage: 'lowbit formats [--json]',
  options: [{ name: 'json', type: 'boolean', help: 'print JSON' }],
  async run(args) {
    if (args.values.json) process.stdout.write(JSON.stringify(formats.map(formatRow), null, 1) + '\n');
    else process.stdout.write(formatsTable() + '\n');
  },
};
