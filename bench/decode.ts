/**
 * `npm run bench -- decode [reps=3] [threads=2, or a list: 1,2] [types=F32,Q8_0,Q4_K_M,Q4_0] [tokens=128] [model=155m|1.1b]`:
 * single-token decode speed against llama.cpp in the same run, on the synthetic ~155M llama
 * (bench/_llama-synth.ts; quantized by `lowbit quantize --type T`); model 1.1b (or LOWBIT_SYNTH=1.1b): the
 * 1.1B shapes (TinyLlama's, 4.4 GB in F32).
 *
 *   lowbit:    `lowbit generate MODEL --prompt "Once upon a time" -n N --temp 0 --threads T --stats`
 *              (its "generated: ... tok/s": one-token forward passes per second, with sampling, without
 *              writing the text out: llama-bench's tg times its llama_decode calls only)
 *   llama.cpp: `llama-bench -m MODEL -n N -p 0 -t T -r 1 -o json` (avg_ts: decode only)
 *
 * Runs alternate (lowbit, llama.cpp, lowbit, ...) `reps` times; the table shows the best of each and
 * the median ratio of the pairs. LOWBIT_BASE=DIR (a checkout or copy with its own bin/lowbit.js and build,
 * e.g. main's): its lowbit runs too, in the same alternation (lowbit, base, llama.cpp, ...), with its ratio
 * to llama.cpp and this tree's to it (median of the triples): an A/B of two builds in one run, on a machine
 * whose speed drifts between runs. GB/s = bytes of weights a decode step reads (every linear layer and the
 * output layer; one embedding row) x tokens/s, printed next to the machine's memory bandwidth measured
 * here (a 512 MiB copy: read + write bytes per second, one thread).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileSource } from '../src/cli/node-source.js';
import { readGguf } from '../src/io/gguf.js';
import { modelFile } from './profile.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** read + write GB/s of copying 512 MiB (best of 3), one thread */
export function memoryBandwidth(): number {
  const n = 512 << 20;
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i += 4096) a[i] = i & 255; // touch every page
  const b = new Uint8Array(n);
  b.set(a);
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    b.set(a);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return (2 * n) / best / 1e9;
}

/** bytes of weights one decode step reads: every tensor but the embedding table, plus one of its rows */
async function decodeBytes(file: string): Promise<number> {
  const src = fileSource(file);
  try {
    const g = await readGguf(src);
    let bytes = 0;
    for (const t of g.tensors) bytes += t.name === 'token_embd.weight' ? t.byteLength / t.ne[1] : t.byteLength;
    return bytes;
  } finally {
    await src.close?.();
  }
}

function lowbitDecode(model: string, tokens: number, threads: number, at = root): number | null {
  const r = spawnSync(process.execPath, [join(at, 'bin/lowbit.js'), 'generate', model, '--prompt', 'Once upon a time', '-n', String(tokens), '--temp', '0', '--threads', String(threads), '--stats'], { encoding: 'utf8' });
  const m = /generated: (\d+) tokens, \d+ one-token forward passes in [0-9.]+ s \(([0-9.]+) tok\/s\)/.exec(r.stderr);
  if (r.status !== 0 || !m) {
    console.log(`  lowbit generate failed: ${r.stderr.trim().split('\n').pop()}`);
    return null;
  }
  if (Number(m[1]) < tokens - 1) console.log(`  (lowbit stopped after ${m[1]} tokens at end-of-sequence)`);
  return Number(m[2]);
}

function llamaBench(bin: string, model: string, tokens: number, threads: number): number | null {
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = spawnSync(bin, ['-m', model, '-n', String(tokens), '-p', '0', '-t', String(threads), '-r', '1', '-o', 'json'], { encoding: 'utf8' });
    try {
      const j = JSON.parse(r.stdout) as { avg_ts: number }[];
      if (r.status === 0 && j.length > 0) return j[0].avg_ts;
    } catch {
      // its log thread can drop output at exit: retry
    }
  }
  console.log('  llama-bench gave no result');
  return null;
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function run(args: string[]): Promise<void> {
  const reps = Number(args[0] ?? 3);
  const threadCounts = (args[1] ?? '2').split(',').map(Number);
  const types = (args[2] ?? 'F32,Q8_0,Q4_K_M,Q4_0').split(',');
  const tokens = Number(args[3] ?? 128);
  if (args[4] !== undefined) {
    if (args[4] !== '155m' && args[4] !== '1.1b') throw new Error(`model ${args[4]}: 155m or 1.1b`);
    process.env.LOWBIT_SYNTH = args[4] === '1.1b' ? '1.1b' : '';
  }
  const bin = join(root, '.cache/llama.cpp-build/bin/llama-bench');
  const bw = memoryBandwidth();
  console.log(`memory bandwidth (512 MiB copy, one thread): ${bw.toFixed(1)} GB/s read + write`);
  if (!existsSync(bin)) {
    console.log('llama-bench not built (node scripts/build-llama-cpp.mjs): skipping the decode comparison');
    return;
  }
  const base = process.env.LOWBIT_BASE;
  if (base && !existsSync(join(base, 'bin/lowbit.js'))) throw new Error(`LOWBIT_BASE=${base}: no bin/lowbit.js there`);
  console.log(`decode, ${tokens} tokens, greedy: lowbit generate --stats vs llama-bench -n ${tokens} -p 0; best of ${reps} alternating runs, ratio = median of the pairs`);
  if (base) console.log(`  base: ${base} (its lowbit alternates with this one's; "vs base": this tree's tok/s / the base's, median of the runs)`);
  console.log(
    `  ${'model'.padEnd(18)} ${'threads'.padStart(7)} ${'lowbit tok/s'.padStart(12)} ${'GB/s'.padStart(6)} ${'llama.cpp'.padStart(10)} ${'GB/s'.padStart(6)} ${'ratio'.padStart(6)}` +
      (base ? ` ${'base tok/s'.padStart(10)} ${'ratio'.padStart(6)} ${'vs base'.padStart(7)}` : ''),
  );
  for (const t of threadCounts) {
    for (const type of types) {
      const file = await modelFile(type);
      const bytes = await decodeBytes(file);
      const ours: number[] = [];
      const theirs: number[] = [];
      const bases: number[] = [];
      const ratios: number[] = [];
      const baseRatios: number[] = [];
      const vsBase: number[] = [];
      for (let i = 0; i < reps; i++) {
        const a = lowbitDecode(file, tokens, t);
        const c = base ? lowbitDecode(file, tokens, t, base) : null;
        const b = llamaBench(bin, file, tokens, t);
        if (a) ours.push(a);
        if (b) theirs.push(b);
        if (c) bases.push(c);
        if (a && b) ratios.push(a / b);
        if (c && b) baseRatios.push(c / b);
        if (a && c) vsBase.push(a / c);
      }
      if (!ours.length || !theirs.length) continue;
      const a = Math.max(...ours);
      const b = Math.max(...theirs);
      const gb = (v: number) => ((v * bytes) / 1e9).toFixed(1).padStart(6);
      console.log(
        `  ${`llama ${process.env.LOWBIT_SYNTH === '1.1b' ? '1.1B' : '155M'} ${type}`.padEnd(18)} ${String(t).padStart(7)} ${a.toFixed(1).padStart(12)} ${gb(a)} ${b.toFixed(1).padStart(10)} ${gb(b)} ${median(ratios).toFixed(2).padStart(6)}` +
          (bases.length ? ` ${Math.max(...bases).toFixed(1).padStart(10)} ${median(baseRatios).toFixed(2).padStart(6)} ${median(vsBase).toFixed(2).padStart(7)}` : ''),
      );
    }
  }
}
