/**
 * `npm run bench -- allocate [--layers N] [--calib-tokens T (default 256)] [--sample-rows R] [--threads 2] [--pairs N] [--out DIR] [--no-warm]`: the cost
 * of mixed precision on a synthetic ~1.1B llama (dim 2048, ffn 5632, 22 layers, vocabulary 32000 from
 * data/tokenizer.model; seeded, cached under .cache/bench/). In the same run, each in its own process:
 *
 *   A. lowbit quantize IN a.gguf --type Q4_K_M                                   (the anchor)
 *   B. lowbit sensitivity IN --calib TEXT --db costs.json (hessian estimator on R sampled rows per
 *      tensor, only those rows read; costs of the plain quantizers, as C writes a file without imatrix)
 *   C. lowbit quantize IN c.gguf --type Q4_K_M --db costs.json --target-size |a.gguf|
 *   D. lowbit quantize IN d.gguf --type Q4_K_M --calib TEXT (B's options) --target-size |a.gguf|: B and C
 *      fused in one command (the file opened and tokenized once, the costs kept in memory)
 *
 * Target (issue 13): (B + C) / A <= 2 and D / A <= 2, i.e. measuring costs is a streaming pass, not a
 * rerun per type. Also prints the file sizes (C and D must not exceed A's size; D's equals C's: the
 * same costs) and B's profile. `--pairs N` repeats the set A B C D N times, alternating, and prints
 * each set's ratios with their median and maximum (the streaming pass's forward stages, statistics, weight reads, costs).
 * `--out DIR` (default .cache/bench/allocate-out, shared by every checkout of the machine): where the
 * files and the database are written.
 *
 * Before each set the model file is read once, untimed (`--no-warm`: not), so that A, B, C and D all
 * start with it in the page cache: this machine's kernel pages out file cache that has not been seen in
 * use for about a minute (DAMON, `pageout` of cold unmapped pages), so the first step after a pause
 * read the 5 GB model from the disk (A: +5-7 s wall, +4-5 CPU-s), which moved every ratio. The warm
 * read's seconds are printed (a few seconds: it was cold). Each step's user / system CPU seconds and
 * minor page faults are printed too (a first touch of memory costs ~16 us per 4 KiB page here).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { measure, ROOT } from '../scripts/llama-tools.js';
import { syntheticLlama } from './_llama-synth.js';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

/**
 * `npm run bench -- allocate --kld`: the end-to-end estimator on the 256-aligned trained model
 * (data/tinyllama256.gguf; every tensor x type quantized alone, the model's KLD on 4 windows of 256),
 * with its defaults (4096 calibration tokens, importance-weighted quantizers), against the hessian
 * estimator with the KLD output factor on the same model in the same run. Goal (issue 13): <= 10 min
 * on 2 cores.
 */
async function kldEstimator(threads: string, out: string): Promise<void> {
  const model = path.join(ROOT, 'data', 'tinyllama256.gguf');
  const text = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
  fs.mkdirSync(out, { recursive: true });
  const bin = path.join(ROOT, 'bin', 'lowbit.js');
  const runs: [string, string[]][] = [
    ['hessian + KLD output factor (default)', []],
    ['kld (every tensor x type)', ['--estimator', 'kld']],
  ];
  const secs: number[] = [];
  for (const [label, flags] of runs) {
    const db = path.join(out, 'kld-costs.json');
    fs.rmSync(db, { force: true });
    const r = await measure(process.execPath, [bin, 'sensitivity', model, '--calib', text, ...flags, '--threads', threads, '--db', db, '--json']);
    if (r.status !== 0) throw new Error(`sensitivity ${flags.join(' ')} failed: ${r.stderr}`);
    const d = JSON.parse(fs.readFileSync(db, 'utf8')) as { tensors: { candidates: unknown[] }[]; timings?: Record<string, number> };
    const n = d.tensors.reduce((a, t) => a + t.candidates.length, 0);
    secs.push(r.seconds);
    console.log(`${label.padEnd(40)} ${r.seconds.toFixed(1).padStart(7)} s  ${(r.peakRss / 1e6).toFixed(0).padStart(5)} MB  ${d.tensors.length} tensors, ${n} costs${d.timings ? ` (statistics pass ${d.timings.pass.toFixed(1)} s, KLDs ${d.timings.kld.toFixed(1)} s)` : ''}`);
  }
  console.log(`kld / hessian = ${(secs[1] / secs[0]).toFixed(2)}x; kld estimator ${(secs[1] / 60).toFixed(2)} min (goal <= 10 min on 2 cores)`);
}

/** Reads the whole file once (sequentially, 16 MiB at a time) and returns the seconds it took. */
function warmRead(file: string): number {
  const t0 = performance.now();
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(1 << 24);
  try {
    while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
  } finally {
    fs.closeSync(fd);
  }
  return (performance.now() - t0) / 1000;
}

export async function run(args: string[]): Promise<void> {
  const out = path.resolve(arg(args, 'out', path.join(ROOT, '.cache', 'bench', 'allocate-out')));
  if (args.includes('--kld')) return kldEstimator(arg(args, 'threads', '2'), out);
  const layers = Number(arg(args, 'layers', '22'));
  const threads = arg(args, 'threads', '2');
  const calibTokens = arg(args, 'calib-tokens', '256');
  const sampleRows = arg(args, 'sample-rows', '64');
  const input = await syntheticLlama(ROOT, { dim: 2048, hiddenDim: 5632, nLayers: layers, nHeads: 32, vocab: 32000 });
  const text = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
  fs.mkdirSync(out, { recursive: true });
  const bin = path.join(ROOT, 'bin', 'lowbit.js');
  const db = path.join(out, 'costs.json');
  const pairs = Math.max(1, Number(arg(args, 'pairs', '1')));
  console.log(`model ${path.relative(ROOT, input)} (${(fs.statSync(input).size / 1e9).toFixed(2)} GB F32); calibration ${calibTokens} tokens, ${sampleRows} sampled rows per tensor, ${threads} threads; ${pairs} alternating set(s) A B C D`);
  const costFlags = ['--calib', text, '--calib-tokens', calibTokens, '--calib-ctx', '128', '--seed', '1', '--sample-rows', sampleRows, '--output-factor', 'none', '--plain-costs', '--types', 'Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0'];
  const bc: number[] = [];
  const da: number[] = [];
  const warm = !args.includes('--no-warm');
  for (let s = 0; s < pairs; s++) {
    const warmSeconds = warm ? warmRead(input) : undefined;
    const load0 = os.loadavg()[0];
    fs.rmSync(db, { force: true });
    const a = await measure(process.execPath, [bin, 'quantize', input, path.join(out, 'a.gguf'), '--type', 'Q4_K_M', '--threads', threads, '--json']);
    if (a.status !== 0) throw new Error(`plain quantize failed: ${a.stderr}`);
    const target = fs.statSync(path.join(out, 'a.gguf')).size;
    const b = await measure(process.execPath, [bin, 'sensitivity', input, ...costFlags, '--threads', threads, '--db', db, '--json']);
    if (b.status !== 0) throw new Error(`sensitivity failed: ${b.stderr}`);
    const c = await measure(process.execPath, [bin, 'quantize', input, path.join(out, 'c.gguf'), '--type', 'Q4_K_M', '--db', db, '--target-size', String(target), '--threads', threads, '--json']);
    if (c.status !== 0) throw new Error(`allocated quantize failed: ${c.stderr}`);
    const d = await measure(process.execPath, [bin, 'quantize', input, path.join(out, 'd.gguf'), '--type', 'Q4_K_M', ...costFlags, '--target-size', String(target), '--threads', threads, '--json']);
    if (d.status !== 0) throw new Error(`fused quantize failed: ${d.stderr}`);
    const size = fs.statSync(path.join(out, 'c.gguf')).size;
    const sizeD = fs.statSync(path.join(out, 'd.gguf')).size;
    const t = (JSON.parse(fs.readFileSync(db, 'utf8')) as { timings?: Record<string, number> }).timings;
    console.log(`set ${s + 1}/${pairs} (load ${load0.toFixed(1)} -> ${os.loadavg()[0].toFixed(1)}${warmSeconds !== undefined ? `; model read first, untimed, in ${warmSeconds.toFixed(1)} s` : ''})`);
    console.log(`A  quantize Q4_K_M              ${a.seconds.toFixed(1).padStart(7)} s  ${(a.peakRss / 1e6).toFixed(0).padStart(6)} MB  ${target} bytes`);
    console.log(`B  sensitivity (hessian)        ${b.seconds.toFixed(1).padStart(7)} s  ${(b.peakRss / 1e6).toFixed(0).padStart(6)} MB`);
    console.log(`C  quantize --target-size       ${c.seconds.toFixed(1).padStart(7)} s  ${(c.peakRss / 1e6).toFixed(0).padStart(6)} MB  ${size} bytes (${size <= target ? 'within' : 'OVER'} target)`);
    console.log(`D  quantize --calib --target-size ${d.seconds.toFixed(1).padStart(5)} s  ${(d.peakRss / 1e6).toFixed(0).padStart(6)} MB  ${sizeD} bytes (${sizeD <= target ? 'within' : 'OVER'} target${sizeD === size ? ', = C' : ''})`);
    if (t) console.log(`B profile: streaming pass ${t.pass.toFixed(1)} s = set-up ${(t.setup ?? 0).toFixed(1)} + forward stages ${t.forward.toFixed(1)} + statistics ${t.statistics.toFixed(1)} + weight reads ${t.read.toFixed(1)} + costs ${t.costs.toFixed(1)}${t.rounding !== undefined ? ` [rounding ${t.rounding.toFixed(2)} + products ${t.products!.toFixed(2)}]` : ''} (+ rest ${(t.pass - (t.setup ?? 0) - t.forward - t.statistics - t.read - t.costs).toFixed(1)})`);
    bc.push((b.seconds + c.seconds) / a.seconds);
    da.push(d.seconds / a.seconds);
    console.log(`(B + C) / A = ${bc[s].toFixed(2)}x   D / A = ${da[s].toFixed(2)}x   (target <= 2x)`);
    // CPU seconds (user + system, /usr/bin/time) move far less than wall time when the machine is shared
    if (a.cpuSeconds && b.cpuSeconds !== undefined && c.cpuSeconds !== undefined && d.cpuSeconds !== undefined)
      console.log(`CPU seconds: A ${a.cpuSeconds.toFixed(1)}  B ${b.cpuSeconds.toFixed(1)}  C ${c.cpuSeconds.toFixed(1)}  D ${d.cpuSeconds.toFixed(1)}:  (B + C) / A = ${((b.cpuSeconds + c.cpuSeconds) / a.cpuSeconds).toFixed(2)}x   D / A = ${(d.cpuSeconds / a.cpuSeconds).toFixed(2)}x`);
    const detail = (m: typeof a) => (m.userSeconds !== undefined ? `${m.userSeconds.toFixed(1)} + ${m.sysSeconds!.toFixed(1)} s, ${(m.minorFaults! / 1000).toFixed(0)}k faults${m.majorFaults ? ` (${m.majorFaults} major)` : ''}` : '');
    if (a.userSeconds !== undefined) console.log(`user + system CPU, minor page faults: A ${detail(a)};  B ${detail(b)};  C ${detail(c)};  D ${detail(d)}`);
  }
  if (pairs > 1) {
    const med = (v: number[]) => [...v].sort((x, y) => x - y)[v.length >> 1];
    console.log(`over ${pairs} sets: (B + C) / A ${bc.map((x) => x.toFixed(2)).join(' ')} (median ${med(bc).toFixed(2)}x, max ${Math.max(...bc).toFixed(2)}x); D / A ${da.map((x) => x.toFixed(2)).join(' ')} (median ${med(da).toFixed(2)}x, max ${Math.max(...da).toFixed(2)}x)`);
  }
  for (const f of ['a.gguf', 'c.gguf', 'd.gguf']) fs.rmSync(path.join(out, f), { force: true });
}
