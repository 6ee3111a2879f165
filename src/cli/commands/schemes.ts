import { schemes } from '../../quant/registry.js';
import type { QuantScheme } from '../../quant/scheme.js';
import type { Command } from '../args.js';
import { renderTable } from './formats.js';

export interface SchemeRow {
  id: string;
  name: string;
  family: string;
  bitsPerWeight: number;
  blockSize: string;
  bytesPerBlock: number | null;
  tensorScoped: boolean;
  description: string;
}

export function schemeBlock(s: QuantScheme): string {
  return s.blockRule ?? (s.blockSize === 0 ? 'row' : String(s.blockSize));
}

export function schemeRow(s: QuantScheme): SchemeRow {
  return {
    id: s.id,
    name: s.name,
    family: s.family,
    bitsPerWeight: Number(s.bitsPerWeight.toFixed(4)),
    blockSize: schemeBlock(s),
    bytesPerBlock: s.bytesPerBlock > 0 ? s.bytesPerBlock : null,
    tensorScoped: s.tensorScoped,
    description: s.description,
  };
}

export function schemesTable(list: readonly QuantScheme[] = schemes()): string {
  const rows = list.map((s) => [s.id, s.bitsPerWeight.toFixed(3), schemeBlock(s), s.bytesPerBlock > 0 ? String(s.bytesPerBlock) : '-', s.description]);
  return renderTable(['scheme', 'bpw', 'block', 'bytes/block', 'description'], rows, [false, true, true, true, false]);
}

export const schemesCommand: Command = {
  name: 'schemes',
  summary: 'list every quantization scheme (MX, NVFP4, NF4, int, GGML) with bits per weight and block layout',
  usage: 'lowbit schemes [--json]',
  options: [{ name: 'json', type: 'boolean', help: 'print JSON' }],
  async run(args) {
    if (args.values.json) process.stdout.write(JSON.stringify(schemes().map(schemeRow), null, 1) + '\n');
    else
      process.stdout.write(
        schemesTable() +
          '\n\nbpw: storage bits per weight of a 4096x4096 matrix. Any element format also works with --group/--granularity/--asym (e.g. lowbit cast --to int4 --group 128 --asym).\n',
      );
  },
};
