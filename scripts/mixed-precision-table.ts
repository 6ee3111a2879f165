/**
 * The mixed-precision table (issue 13), judged by llama.cpp itself: `llama-perplexity --kl-divergence`
 * of every file against the F32 model on held-out text.
 *
 *   model:        MODEL (default data/llama256.gguf, the 256-aligned trained model) — rows multiples of 256
 *   calibration:  CALIB (default: the first 300 000 characters of data/tinystories-valid-head.txt)
 *   held-out:     EVAL (default: TinyStories from character 500 000 on), ctx 128
 *   llama.cpp:    llama-imatrix on the calibration text; llama-quantize Q2_K..Q6_K mixes with and without
 *                 the imatrix
 *   lowbit:       fixed recipes with GPTQ; `quantize --target-size` at llama.cpp's Q3_K_M / Q4_K_M /
 *                 Q5_K_M sizes and at more sizes from 2.5 to 6.5 bpw (imatrix-RTN and GPTQ on the
 *                 allocated types), from one sensitivity database
 *
 *   npm run build && node dist/scripts/mixed-precision-table.js [--model F] [--json out.json] [--quick]
 *     [--chunks N] (held-out chunks of 128 for every row; default 120, --quick 24)
 *     [--algos rtn,gptq] (the allocated files' rounding; default both)
 *     [--calib-tokens N] (lowbit's calibration tokens; default 16384 for GPTQ, 8192 for the costs, --quick 4096)
 *     [--reuse] (keep llama.cpp's quantized files and the imatrix from an earlier run: only their KLD is re-measured)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { llamaBin, ROOT } from './llama-tools.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt?: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const quick = args.includes('--quick');
const MODEL = path.resolve(opt('model', path.join(ROOT, 'data', 'llama256.gguf'))!);
const OUT = path.join(ROOT, '.cache', 'mixed-precision');
const lowbit = path.join(ROOT, 'bin', 'lowbit.js');
const say = (s: string) => process.stderr.write(s + '\n');
fs.mkdirSync(OUT, { recursive: true });

const stories = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8');
const calib = path.join(OUT, 'calib.txt');
const heldout = path.join(OUT, 'heldout.txt');
fs.writeFileSync(calib, stories.slice(0, 300000));
fs.writeFileSync(heldout, stories.slice(500000));
const CHUNKS = opt('chunks', quick ? '24' : '120')!;
const ALGOS = opt('algos', 'rtn,gptq')!.split(',');
const reuse = args.includes('--reuse');

function llama(tool: 'llama-perplexity' | 'llama-imatrix' | 'llama-quantize', a: string[], want?: RegExp): RegExpMatchArray | null {
  const bin = llamaBin(tool);
  if (!bin) throw new Error(`${tool} is not built: node scripts/build-llama-cpp.mjs`);
  for (let attempt = 0; attempt < 3; attempt++) {
    const p = spawnSync(bin, a, { encoding: 'utf8', maxBuffer: 1 << 28 });
    if (p.status !== 0) throw new Error(`${tool} failed (${p.status}): ${(p.stderr + p.stdout).slice(-600)}`);
    if (!want) return null;
    const m = (p.stdout + p.stderr).match(want);
    if (m) return m; // the tools' log thread can drop the last lines: retry
  }
  throw new Error(`${tool}: output never matched ${want}`);
}

const base = path.join(OUT, `base-${CHUNKS}.kld`);
const kldCache = path.join(OUT, `kld-cache.json`);
function kld(file: string): { kld: number; stderr: number; ppl: number } {
  // measured once per file content (size and modification time) and chunk count: --reuse runs skip it
  const st = fs.statSync(file);
  const key = `${path.basename(file)}|${st.size}|${st.mtimeMs}|${CHUNKS}`;
  const cache: Record<string, { kld: number; stderr: number; ppl: number }> = fs.existsSync(kldCache) ? JSON.parse(fs.readFileSync(kldCache, 'utf8')) : {};
  if (reuse && cache[key]) return cache[key];
  // one run: the KLD line (retried when the log lost it) and the PPL line of the same output when present
  const m = llama('llama-perplexity', ['-m', file, '--kl-divergence-base', base, '--kl-divergence', '-t', '2'], /Mean\s+KLD:\s+([-\d.e]+)\s+±\s+([-\d.e]+)/)!;
  const p = m.input!.match(/Mean PPL\(Q\)\s*:\s*([\d.]+)/);
  const r = { kld: Number(m[1]), stderr: Number(m[2]), ppl: p ? Number(p[1]) : NaN };
  cache[key] = r;
  fs.writeFileSync(kldCache, JSON.stringify(cache, null, 1) + '\n');
  return r;
}

function lowbitRun(a: string[]): any {
  return JSON.parse(execFileSync(process.execPath, [lowbit, ...a, '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 }));
}

interface Row {
  tool: string;
  method: string;
  file: string;
  bytes: number;
  bpw: number;
  kld: number;
  stderr: number;
  ppl: number;
}

async function main(): Promise<void> {
  const nParams = lowbitRun(['inspect', MODEL]).totals.parameters as number;
  say(`model ${path.relative(ROOT, MODEL)}; base logits on held-out text (${CHUNKS} chunks of 128)`);
  if (!(reuse && fs.existsSync(base))) llama('llama-perplexity', ['-m', MODEL, '-f', heldout, '-c', '128', '--chunks', CHUNKS, '--kl-divergence-base', base, '-t', '2'], /Final estimate: PPL = ([\d.]+)/);
  const imatrix = path.join(OUT, 'imatrix.gguf');
  if (!(reuse && fs.existsSync(imatrix))) llama('llama-imatrix', ['-m', MODEL, '-f', calib, '-o', imatrix, '-c', '256', '--chunks', quick ? '16' : '64', '-t', '2', '--no-ppl']);
  const rows: Row[] = [];
  const add = (tool: string, method: string, file: string) => {
    const bytes = fs.statSync(file).size;
    const k = kld(file);
    rows.push({ tool, method, file: path.basename(file), bytes, bpw: (8 * bytes) / nParams, ...k });
    say(`${tool.padEnd(9)} ${method.padEnd(34)} ${bytes} bytes  KLD ${k.kld.toExponential(3)}`);
    const json = opt('json'); // rows so far, so that a stopped run keeps them
    if (json) fs.writeFileSync(json, JSON.stringify({ model: path.relative(ROOT, MODEL), chunks: Number(CHUNKS), rows, partial: true }, null, 1) + '\n');
  };
  const FTYPES = quick ? ['Q3_K_M', 'Q4_K_M', 'Q5_K_M'] : ['Q2_K', 'Q3_K_S', 'Q3_K_M', 'Q4_K_S', 'Q4_K_M', 'Q5_K_M', 'Q6_K'];
  const sizes = new Map<string, number>();
  for (const ft of FTYPES) {
    const f = path.join(OUT, `llama-${ft}-imatrix.gguf`);
    if (!(reuse && fs.existsSync(f))) llama('llama-quantize', ['--imatrix', imatrix, MODEL, f, ft, '2']);
    sizes.set(ft, fs.statSync(f).size);
    add('llama.cpp', `${ft} + imatrix`, f);
    const g = path.join(OUT, `llama-${ft}.gguf`);
    if (!(reuse && fs.existsSync(g))) llama('llama-quantize', [MODEL, g, ft, '2']);
    add('llama.cpp', ft, g);
  }
  const calibArgs = ['--calib', calib, '--calib-tokens', opt('calib-tokens', quick ? '4096' : '16384')!, '--calib-ctx', '256'];
  for (const ft of ['Q3_K_M', 'Q4_K_M', 'Q5_K_M']) {
    const f = path.join(OUT, `lowbit-${ft}-gptq.gguf`);
    if (!(reuse && fs.existsSync(f))) lowbitRun(['quantize', MODEL, f, '--type', ft, '--algo', 'gptq', ...calibArgs]);
    add('lowbit', `${ft} GPTQ (fixed recipe)`, f);
  }
  const db = path.join(OUT, 'costs.json');
  if (!reuse) fs.rmSync(db, { force: true });
  if (!fs.existsSync(db)) lowbitRun(['sensitivity', MODEL, '--calib', calib, '--calib-tokens', opt('calib-tokens', quick ? '4096' : '8192')!, '--calib-ctx', '256', '--types', 'Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,IQ4_XS', '--db', db]);
  // the curve's points first (2.75 to 6.5 bpw: Q2_K everywhere, the smallest candidate, is ~2.7 bpw with
  // the norms in F32), then llama.cpp's three sizes
  const targets: [string, number][] = quick ? [] : [2.75, 3.5, 4.5, 5.5, 6.5].map((bpw) => [`${bpw} bpw`, Math.floor((bpw * nParams) / 8)] as [string, number]);
  targets.push(...['Q3_K_M', 'Q4_K_M', 'Q5_K_M'].filter((t) => sizes.has(t)).map((t) => [`at ${t} size`, sizes.get(t)!] as [string, number]));
  for (const [label, bytes] of targets) {
    for (const algo of ALGOS) {
      const f = path.join(OUT, `lowbit-alloc-${bytes}-${algo}.gguf`);
      if (!(reuse && fs.existsSync(f))) lowbitRun(['quantize', MODEL, f, '--type', 'Q4_K_M', '--db', db, '--target-size', String(bytes), '--algo', algo, ...calibArgs]);
      add('lowbit', `allocated ${label} (${algo === 'rtn' ? 'imatrix-RTN' : 'GPTQ'})`, f);
    }
  }
  const json = opt('json');
  if (json) fs.writeFileSync(json, JSON.stringify({ model: path.relative(ROOT, MODEL), chunks: Number(CHUNKS), rows }, null, 1) + '\n');
  console.log('| tool | method | bytes | bpw | KLD (llama-perplexity) | PPL |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: |');
  for (const r of rows.sort((a, b) => a.bytes - b.bytes)) console.log(`| ${r.tool} | ${r.method} | ${r.bytes} | ${r.bpw.toFixed(2)} | ${r.kld.toFixed(5)} ± ${r.stderr.toFixed(5)} | ${r.ppl.toFixed(3)} |`);
  for (const ft of ['Q3_K_M', 'Q4_K_M', 'Q5_K_M']) {
    const ref = rows.find((r) => r.method === `${ft} + imatrix`);
    const ours = rows.filter((r) => r.method.startsWith(`allocated at ${ft} size`));
    if (!ref || !ours.length) continue;
    const best = ours.reduce((a, b) => (a.kld < b.kld ? a : b));
    console.log(`${ft}: llama.cpp + imatrix KLD ${ref.kld.toFixed(5)} (${ref.bytes} bytes); lowbit allocated ${best.kld.toFixed(5)} (${best.bytes} bytes, ${best.method}): ${(best.kld / ref.kld).toFixed(2)}x`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
