/**
 * Per-layer KIVI bit widths under a bits-per-element budget, fitted on a calibration text:
 *
 *   node dist/scripts/kv-alloc.js [MODEL] [--calib F] [--budget 3.5] [--group 128] [--chunks 8] [--ctx 256]
 *
 * Sensitivity of each (side, layer): lowbit's KLD against the model's own f32 cache on the calibration
 * text when that one layer's keys (values) drop to 3 and to 2 bits while every other layer of that side
 * stays at 4 bits and the other side is f32 (keys pre-RoPE, --kv-residual 0: no f32 positions). KLDs of
 * separate layers add up nearly (tinyllama256: q4_0 keys + q4_0 values 4.8e-4 + 1.3e-4, both 6.0e-4),
 * so a greedy pass lowers, one bit at a time, the (side, layer) whose next bit costs the least until the
 * mean code width fits the budget minus the scale overhead (32 bits per group of G). Prints the flags.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('../../', import.meta.url));
const lowbit = root + 'bin/lowbit.js';
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    calib: { type: 'string', default: root + 'data/tinystories-valid-head.txt' },
    budget: { type: 'string', default: '3.5' },
    group: { type: 'string', default: '128' },
    chunks: { type: 'string', default: '8' },
    ctx: { type: 'string', default: '256' },
  },
});
const model = positionals[0] ?? root + 'data/tinyllama256.gguf';
const G = Number(values.group);
const budget = Number(values.budget);
const dir = mkdtempSync(join(tmpdir(), 'lowbit-kv-alloc-'));
const base = join(dir, 'base.kld');
const run = (args: string[]) => JSON.parse(execFileSync(process.execPath, [lowbit, 'eval', model, '--text', values.calib!, '--ctx', values.ctx!, '--chunks', values.chunks!, '--json', ...args], { encoding: 'utf8' }));
try {
  run(['--save-logits', base]);
  const info = JSON.parse(execFileSync(process.execPath, [lowbit, 'inspect', model, '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 }));
  const nLayers: number = info.hyperParameters?.nLayers;
  if (!Number.isInteger(nLayers)) throw new Error(`no layer count in lowbit inspect ${model} --json`);
  const typeName = (side: 'k' | 'v', bits: number[]) => `${side === 'k' ? 'pre-' : ''}kivi${bits.join('.')}g${G}`;
  const kld = (side: 'k' | 'v', bits: number[]) => {
    const t = typeName(side, bits);
    return run(['--base-logits', base, '--kv-residual', '0', side === 'k' ? '-ctk' : '-ctv', t]).kld.mean as number;
  };
  // cost[side][layer][b]: KLD with that layer at b bits, the others at 4
  const cost: Record<'k' | 'v', number[][]> = { k: [], v: [] };
  for (const side of ['k', 'v'] as const) {
    const all4 = kld(side, new Array(nLayers).fill(4));
    for (let l = 0; l < nLayers; l++) {
      const c: number[] = [];
      c[4] = all4;
      for (const b of [3, 2]) c[b] = kld(side, Array.from({ length: nLayers }, (_, i) => (i === l ? b : 4)));
      cost[side][l] = c;
      console.error(`${side} layer ${l}: KLD at 4/3/2 bits ${c[4].toExponential(2)} ${c[3].toExponential(2)} ${c[2].toExponential(2)}`);
    }
  }
  const bits: Record<'k' | 'v', number[]> = { k: new Array(nLayers).fill(4), v: new Array(nLayers).fill(4) };
  const maxCodeBits = Math.floor((budget - 32 / G) * 2 * nLayers + 1e-9);
  let total = 8 * nLayers;
  while (total > maxCodeBits) {
    let best: ['k' | 'v', number] | null = null;
    let bestCost = Infinity;
    for (const side of ['k', 'v'] as const)
      for (let l = 0; l < nLayers; l++) {
        const b = bits[side][l];
        if (b <= 2) continue;
        const d = cost[side][l][b - 1] - cost[side][l][b];
        if (d < bestCost) (bestCost = d), (best = [side, l]);
      }
    if (!best) throw new Error(`budget ${budget} bits is below 2 bits per code + the scales`);
    bits[best[0]][best[1]]--;
    total--;
  }
  const estimate = (['k', 'v'] as const).reduce((s, side) => s + cost[side].reduce((a, c, l) => a + c[bits[side][l]] - c[4], cost[side][0][4]), 0);
  const perElement = total / (2 * nLayers) + 32 / G;
  console.log(`-ctk ${typeName('k', bits.k)} -ctv ${typeName('v', bits.v)} --kv-residual 0   # ${perElement.toFixed(3)} bits per element, estimated calibration KLD ${estimate.toExponential(2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
