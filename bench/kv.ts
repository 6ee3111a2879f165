/**
 * `npm run bench -- kv`: quantized KV caches must not make the runtime slow (issue 14: >= 0.8x the f32
 * cache). `lowbit generate` (decode tokens/s, greedy, filling the context) and `lowbit eval` (tokens/s)
 * on tinyllama256.gguf at its full context (256) with f32, q8_0, q4_0, kivi2 and the 3.5-bit scheme of
 * docs/kv-cache.md (pre-kivi3.2.4.4g128 / kivi4.2.3.4g128, --kv-residual 0), run in turn in the same
 * process tree (whole commands, start-up included); prints the ratios to the f32 cache and the KV bytes
 * per token. Packed rows are dequantized inside the WebAssembly attention kernel (MatmulEngine.attentionPacked).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const lowbit = root + 'bin/lowbit.js';
const model = root + 'data/tinyllama256.gguf';
const text = root + 'data/tinystories-valid-head.txt';

/** a cache by its label: 'T' for -ctk T -ctv T, or the flags themselves */
const CACHES: Record<string, string[]> = {
  f32: ['-ctk', 'f32', '-ctv', 'f32'],
  q8_0: ['-ctk', 'q8_0', '-ctv', 'q8_0'],
  q4_0: ['-ctk', 'q4_0', '-ctv', 'q4_0'],
  kivi2: ['-ctk', 'kivi2', '-ctv', 'kivi2'],
  'kv3.5': ['-ctk', 'pre-kivi3.2.4.4g128', '-ctv', 'kivi4.2.3.4g128', '--kv-residual', '0'],
};

function decode(type: string): { tps: number; bytes: number } {
  const p = spawnSync(process.execPath, [lowbit, 'generate', model, '--prompt', 'Once upon a time', '-n', '240', '--temp', '0', '--stats', ...CACHES[type]], { encoding: 'utf8' });
  if (p.status !== 0) throw new Error(p.stderr);
  const m = p.stderr.match(/generated: (\d+) tokens in ([\d.]+) s .*: (\d+) bytes per token/);
  if (!m) throw new Error(`no stats in: ${p.stderr}`);
  return { tps: Number(m[1]) / Number(m[2]), bytes: Number(m[3]) };
}

function evalSpeed(type: string): number {
  const t0 = performance.now();
  const out = execFileSync(process.execPath, [lowbit, 'eval', model, '--text', text, '--ctx', '256', '--chunks', '12', '--json', ...CACHES[type]], { encoding: 'utf8' });
  const r = JSON.parse(out) as { chunks: number; ctx: number };
  return (r.chunks * r.ctx) / ((performance.now() - t0) / 1000);
}

export async function run(args: string[]): Promise<void> {
  const rounds = Number(args[0] ?? 2);
  const types = Object.keys(CACHES);
  const dec = new Map(types.map((t) => [t, [] as number[]]));
  const ev = new Map(types.map((t) => [t, [] as number[]]));
  const bytes = new Map<string, number>();
  // interleaved rounds, so that a change of machine load hits every type alike; the median is kept
  for (let r = 0; r < rounds; r++) {
    for (const t of types) {
      const d = decode(t);
      dec.get(t)!.push(d.tps);
      bytes.set(t, d.bytes);
      ev.get(t)!.push(evalSpeed(t));
    }
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(`tinyllama256.gguf, ctx 256, ${rounds} interleaved rounds (median); whole commands, start-up included`);
  console.log('cache   KV bytes/token   decode tok/s  vs f32    eval tok/s  vs f32');
  for (const t of types) {
    const d = med(dec.get(t)!);
    const e = med(ev.get(t)!);
    console.log(`${t.padEnd(7)} ${String(bytes.get(t)).padStart(14)}   ${d.toFixed(1).padStart(12)}  ${(d / med(dec.get('f32')!)).toFixed(2).padStart(6)}x  ${e.toFixed(0).padStart(10)}  ${(e / med(ev.get('f32')!)).toFixed(2).padStart(6)}x`);
  }
}
