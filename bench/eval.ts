/**
 * `npm run bench -- eval [chunks260K=50] [chunks100M=8] [reps=3] [threads=2, or a list: 1,2] [ctx=128, or a list: 128,512]
 *  [types=F32,Q8_0,Q4_K_M]`: runtime and evaluation
 * throughput, each next to its anchor measured in the same run.
 *
 *  1. tokenizer on TinyStories: ours vs llama.cpp's (node-llama-cpp); stories260K prompt and decode speed;
 *  2. matmul, one thread, T = 64 tokens x K = 768 x N = 2816: the WebAssembly kernel (relaxed and
 *     plain SIMD) on F32, Q8_0 and Q4_K weights (f32 activations, and the integer-dot path with
 *     activations rounded to Q8_0 / Q8_K) vs the scalar TypeScript reference (matmulRef on f32);
 *  3. `lowbit eval MODEL --text data/tinystories-valid-head.txt --ctx C --chunks N --threads T`
 *     vs `llama-perplexity -m MODEL -f ... -c C --chunks N -t T`, whole commands as a user runs them
 *     (start-up, loading and tokenization included), best wall time of `reps` alternating runs:
 *     tokens/s = chunks * C / seconds, and per CPU second (GNU time: user + system), on stories260K
 *     (F32, ctx 128) and a synthetic ~155 M-parameter llama (bench/_llama-synth.ts) in F32, Q8_0 and
 *     Q4_K_M (quantized by `lowbit quantize --type T`). lowbit eval rounds the activations as llama.cpp
 *     does (its default for GGUF files), so both print the same PPL up to float rounding.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useNodeThreads } from '../src/cli/threads.js';
import { loadModel } from '../src/eval/load.js';
import '../src/index.js';
import { bytesSource } from '../src/io/source.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { matmulRef } from '../src/model/matmul.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { modelFile } from './profile.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (f: string) => new Uint8Array(readFileSync(root + 'data/' + f));

function time<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const r = fn();
  return [r, (performance.now() - t0) / 1000];
}

/**
 * best GFLOP/s of `fn` (`flops` per call, one thread) over a few timed windows, per second of this
 * process's CPU time: on a machine shared with other jobs the wall clock also counts their time slices
 */
function gflops(fn: () => void, flops: number, windows = 5, ms = 250): number {
  fn();
  let best = 0;
  for (let w = 0; w < windows; w++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let n = 0;
    while (performance.now() - t0 < ms) {
      fn();
      n++;
    }
    const c = process.cpuUsage(c0);
    best = Math.max(best, (flops * n) / ((c.user + c.system) / 1e6) / 1e9);
  }
  return best;
}

async function tokenizer(): Promise<void> {
  const text = readFileSync(root + 'data/tinystories-valid-head.txt', 'utf8');
  const g = await loadModel(bytesSource(read('stories260K.gguf'), 'stories260K.gguf'), { contextLength: 512 });
  const [ids, tTok] = time(() => g.tokenizer!.encode(text));
  let line = `tokenizer: ${ids.length} tokens in ${tTok.toFixed(2)} s = ${(text.length / tTok / 1e6).toFixed(2)} MB/s`;
  try {
    const loaded = await loadLlamaCpp();
    if (typeof loaded === 'string') throw new Error(loaded);
    const llama = loaded.llama;
    const model = await llama.loadModel({ modelPath: root + 'data/stories260K.gguf', vocabOnly: true });
    const [ref, tRef] = time(() => model.tokenize(text));
    line += `; llama.cpp ${ref.length} tokens in ${tRef.toFixed(2)} s; speed ratio ${(tRef / tTok).toFixed(2)}x`;
    await model.dispose();
  } catch {
    line += '; llama.cpp anchor unavailable';
  }
  console.log(line);
  const prompt = ids.slice(0, 128);
  const [, tPrompt] = time(() => g.model.forward(prompt, 0, 0));
  const [, tDecode] = time(() => {
    for (let p = 0; p < 256; p++) g.model.forward([prompt[p % 128]], p);
  });
  console.log(`stories260K in process: prompt (128 tokens, batched) ${(128 / tPrompt).toFixed(0)} tok/s; decode (256 tokens, one at a time) ${(256 / tDecode).toFixed(0)} tok/s`);
}

function matmulGflops(): void {
  const T = 64;
  const K = 768;
  const N = 2816;
  const flops = 2 * T * K * N;
  let seed = 1;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from({ length: T * K }, rnd);
  const w = Float32Array.from({ length: N * K }, rnd);
  const out = new Float32Array(T * N);
  const ref = gflops(() => matmulRef(out, x, w, T, K, N), flops, 2, 1000);
  console.log(`matmul T=${T} x K=${K} x N=${N}, one thread (GFLOP/s of CPU time): scalar TypeScript reference (f32 weights) ${ref.toFixed(2)}`);
  for (const variant of ['relaxed', 'simd'] as const) {
    const e = MatmulEngine.get(variant);
    if (!e) continue;
    e.setThreads(1);
    const cells: string[] = [];
    for (const name of ['F32', 'Q8_0', 'Q4_K']) {
      const type = ggmlTypeByName(name)!;
      const rowBytes = ggmlRowBytes(type, K);
      const q = new Uint8Array(rowBytes * N);
      if (name === 'F32') q.set(new Uint8Array(w.buffer));
      else ggmlCodec(type)!.quantize!(w, N, K, q);
      const kw = e.storeWeight(type, N, K, rowBytes, q)!;
      const g = gflops(() => e.matmul(out, x, kw, T), flops);
      cells.push(`${name} ${g.toFixed(1)} (${(g / ref).toFixed(0)}x)`);
      if (e.intBlock(kw) > 0) {
        const gi = gflops(() => e.matmulInt(out, x, kw, T), flops);
        cells.push(`${name} integer dot ${gi.toFixed(1)} (${(gi / ref).toFixed(0)}x)`);
      }
    }
    console.log(`  wasm ${variant.padEnd(7)}: ${cells.join(', ')}`);
  }
}

interface Run {
  /** wall-clock seconds */
  seconds: number;
  /** user + system CPU seconds of the process (NaN without /usr/bin/time) */
  cpu: number;
  ppl: number;
}

const GNU_TIME = '/usr/bin/time';
const timeFile = join(tmpdir(), `lowbit-bench-time-${process.pid}.txt`);

/** run a command; wall time, and CPU time through GNU time when installed */
function timed(cmd: string, args: string[]): { stdout: string; stderr: string; status: number | null; signal: string | null; seconds: number; cpu: number } {
  const useTime = existsSync(GNU_TIME);
  const t0 = performance.now();
  const r = useTime
    ? spawnSync(GNU_TIME, ['-f', '%U %S', '-o', timeFile, cmd, ...args], { encoding: 'utf8' })
    : spawnSync(cmd, args, { encoding: 'utf8' });
  const seconds = (performance.now() - t0) / 1000;
  let cpu = NaN;
  if (useTime && existsSync(timeFile)) {
    const [u, s] = readFileSync(timeFile, 'utf8').trim().split(/\s+/).slice(-2).map(Number);
    cpu = u + s;
    rmSync(timeFile, { force: true });
  }
  return { stdout: r.stdout, stderr: r.stderr, status: r.status, signal: r.signal, seconds, cpu };
}

function runLowbit(model: string, chunks: number, threads: number, ctx: number): Run | null {
  const r = timed(process.execPath, [join(root, 'bin/lowbit.js'), 'eval', model, '--text', join(root, 'data/tinystories-valid-head.txt'), '--ctx', String(ctx), '--chunks', String(chunks), '--threads', String(threads), '--json']);
  if (r.status !== 0) {
    console.log(`  lowbit failed: ${r.stderr.trim().split('\n').pop()}`);
    return null;
  }
  return { seconds: r.seconds, cpu: r.cpu, ppl: JSON.parse(r.stdout).ppl as number };
}

/**
 * llama-perplexity's extra arguments for the rest of the run: `-nr` (no extra buffer types: no AMX, no
 * repacked weights) once a run as shipped died of a signal. A native build on an AMX CPU puts quantized
 * weights in its AMX buffer, and that path dies at its first tile instruction on some machines (the
 * session 38 Xeon VM: SIGILL / SIGSEGV at `ldtilecfg` in ggml_backend_amx_mul_mat, llama.cpp PR #26954).
 */
let llamaExtra: string[] = [];

function runLlamaCpp(bin: string, model: string, chunks: number, threads: number, ctx: number): Run | null {
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = timed(bin, ['-m', model, '-f', join(root, 'data/tinystories-valid-head.txt'), '-c', String(ctx), '--chunks', String(chunks), '-t', String(threads), ...llamaExtra]);
    const m = /Final estimate: PPL = ([0-9.]+)/.exec(r.stdout + r.stderr);
    if (r.status === 0 && m) return { seconds: r.seconds, cpu: r.cpu, ppl: Number(m[1]) };
    if (llamaExtra.length === 0 && (r.signal !== null || (r.status ?? 0) >= 128)) {
      llamaExtra = ['-nr'];
      console.log(`  llama-perplexity died (${r.signal ?? `status ${r.status}`}): from here on with -nr (no AMX, no repacked weights)`);
      attempt--;
    }
    // its log thread can drop the last lines at exit: retry
  }
  console.log('  llama-perplexity gave no final estimate');
  return null;
}

async function evalVsLlamaCpp(chunks260K: number, chunks100M: number, reps: number, threadCounts: number[], ctxs: number[], types: string[]): Promise<void> {
  const bin = join(root, '.cache/llama.cpp-build/bin/llama-perplexity');
  if (!existsSync(bin)) {
    console.log('llama-perplexity not built (node scripts/build-llama-cpp.mjs): skipping the eval comparison');
    return;
  }
  const models: [string, string, number, number][] = [];
  for (const ctx of ctxs) {
    if (ctx === 128) models.push(['stories260K F32', join(root, 'data/stories260K.gguf'), chunks260K, 128]);
    for (const type of types) models.push([`llama 155M ${type}`, await modelFile(type), chunks100M, ctx]);
  }
  console.log(`lowbit eval vs llama-perplexity: whole commands, best of ${reps} alternating runs; ratio of the pair medians in brackets`);
  console.log('  tok/s = chunks x ctx / wall seconds; tok/CPU-s = chunks x ctx / (user + system) CPU seconds (less sensitive to other jobs)');
  console.log(
    `  ${'model'.padEnd(18)} ${'ctx'.padStart(4)} ${'thr'.padStart(3)} ${'chunks'.padStart(6)} ${'lowbit tok/s'.padStart(13)} ${'llama.cpp'.padStart(10)} ${'ratio'.padStart(13)}  ${'lowbit tok/CPU-s'.padStart(16)} ${'llama.cpp'.padStart(10)} ${'ratio'.padStart(6)}   PPL lowbit / llama.cpp`,
  );
  for (const t of threadCounts) {
    for (const [label, file, chunks, ctx] of models) {
      let best: Run | null = null;
      let bestRef: Run | null = null;
      let cpu = Infinity;
      let cpuRef = Infinity;
      const pairs: number[] = [];
      for (let i = 0; i < reps; i++) {
        const a = runLowbit(file, chunks, t, ctx);
        const b = runLlamaCpp(bin, file, chunks, t, ctx);
        if (a && (!best || a.seconds < best.seconds)) best = a;
        if (b && (!bestRef || b.seconds < bestRef.seconds)) bestRef = b;
        if (a) cpu = Math.min(cpu, a.cpu);
        if (b) cpuRef = Math.min(cpuRef, b.cpu);
        if (a && b) pairs.push(b.seconds / a.seconds);
      }
      if (!best || !bestRef) continue;
      const tokens = chunks * ctx;
      const ours = tokens / best.seconds;
      const theirs = tokens / bestRef.seconds;
      pairs.sort((x, y) => x - y);
      const med = pairs[Math.floor((pairs.length - 1) / 2)];
      const f = (v: number, w: number) => (Number.isFinite(v) ? v.toFixed(1) : '-').padStart(w);
      console.log(
        `  ${label.padEnd(18)} ${String(ctx).padStart(4)} ${String(t).padStart(3)} ${String(chunks).padStart(6)} ${f(ours, 13)} ${f(theirs, 10)} ${`${(ours / theirs).toFixed(2)} [${med.toFixed(2)}]`.padStart(13)}  ` +
          `${f(tokens / cpu, 16)} ${f(tokens / cpuRef, 10)} ${Number.isFinite(cpu) ? (cpuRef / cpu).toFixed(2).padStart(6) : '     -'}   ${best.ppl.toFixed(4)} / ${bestRef.ppl.toFixed(4)}`,
      );
    }
  }
}

export async function run(args: string[]): Promise<void> {
  const [chunks260K, chunks100M, reps] = [Number(args[0] ?? 50), Number(args[1] ?? 8), Number(args[2] ?? 3)];
  const threadCounts = (args[3] ?? '2').split(',').map(Number);
  const ctxs = (args[4] ?? '128').split(',').map(Number);
  const types = (args[5] ?? 'F32,Q8_0,Q4_K_M').split(',');
  useNodeThreads();
  await tokenizer();
  matmulGflops();
  await evalVsLlamaCpp(chunks260K, chunks100M, reps, threadCounts, ctxs, types);
  for (const v of ['relaxed', 'simd'] as const) MatmulEngine.get(v)?.close();
}
