/**
 * Node helpers shared by tests, benchmarks and generators that run llama.cpp's tools (built by
 * scripts/build-llama-cpp.mjs into .cache/llama.cpp-build/bin) next to lowbit.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** the repository root (this file is compiled to dist/scripts/) */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Path of a llama.cpp tool built by scripts/build-llama-cpp.mjs, or undefined when it is not built
 * (the comparisons then skip). Single-config generators put it in bin/, Visual Studio in bin/Release/.
 */
export function llamaBin(name: 'llama-quantize' | 'llama-imatrix' | 'llama-perplexity'): string | undefined {
  const exe = process.platform === 'win32' ? `${name}.exe` : name;
  const bin = path.join(ROOT, '.cache', 'llama.cpp-build', 'bin');
  for (const p of [path.join(bin, exe), path.join(bin, 'Release', exe)]) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).size > 0) return p;
    } catch {
      /* not built */
    }
  }
  return undefined;
}

/** where scripts/setup-llama-cpp.mjs installs node-llama-cpp (not a dependency of lowbit) */
const NODE_LLAMA_CPP_DIR = path.join(ROOT, '.cache', 'node-llama-cpp', 'node_modules', 'node-llama-cpp');

/**
 * node-llama-cpp's folder: the private install of scripts/setup-llama-cpp.mjs, else one in node_modules
 * (a user who installed it), else undefined.
 */
export function nodeLlamaCppDir(): string | undefined {
  for (const d of [NODE_LLAMA_CPP_DIR, path.join(ROOT, 'node_modules', 'node-llama-cpp')]) if (fs.existsSync(path.join(d, 'package.json'))) return d;
  return undefined;
}

/** llama.cpp's source (a git bundle inside node-llama-cpp), or undefined when node-llama-cpp is absent */
export function llamaCppBundle(): string | undefined {
  const d = nodeLlamaCppDir();
  const b = d && path.join(d, 'llama', 'gitRelease.bundle');
  return b && fs.existsSync(b) ? b : undefined;
}

/**
 * The node-llama-cpp module (llama.cpp's own code through its Node binding), typed loosely: it is not a
 * dependency, so its types are not available at compile time. Throws when it is not installed; callers
 * skip then. Load the model with `getLlama({ gpu: false, build: 'never' })` so nothing is compiled.
 */
export async function importNodeLlamaCpp(): Promise<any> {
  const d = nodeLlamaCppDir();
  if (!d) throw new Error('node-llama-cpp is not installed (node scripts/setup-llama-cpp.mjs)');
  const pkg = JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')) as { exports?: { '.'?: { import?: { default?: string } | string; default?: string } } };
  const e = pkg.exports?.['.'];
  const entry = (typeof e?.import === 'string' ? e.import : e?.import?.default) ?? e?.default ?? './dist/index.js';
  return import(pathToFileURL(path.join(d, entry)).href);
}

/** getLlama() on the CPU with nothing built, or a reason to skip (a string). */
export async function loadLlamaCpp(): Promise<{ llama: any; mod: any } | string> {
  try {
    const mod = await importNodeLlamaCpp();
    const llama = await mod.getLlama({ gpu: false, build: 'never', logLevel: mod.LlamaLogLevel?.error ?? 'error' });
    return { llama, mod };
  } catch (e) {
    return `node-llama-cpp cannot load its binary here: ${(e as Error).message}`;
  }
}

/**
 * The logits llama.cpp (node-llama-cpp, CPU) gives after the tokens [1, 2] of the GGUF at `file`: the check
 * that it loads and runs a file, or a reason to skip (a string) where node-llama-cpp is missing.
 */
export async function llamaCppLogits(file: string): Promise<number[] | string> {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') return loaded;
  const lm = await loaded.llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    const ctx = await lm.createContext({ contextSize: 64, threads: 1 });
    const ev: { next: { logits: Map<number, number> } }[] = await ctx.getSequence().controlledEvaluate([1, [2, { generateNext: { logits: true } }]]);
    await ctx.dispose();
    return [...ev[1].next.logits.values()];
  } finally {
    await lm.dispose();
  }
}

export interface LlamaImatrixRun {
  model: string;
  text: string;
  out: string;
  ctx: number;
  chunks: number;
  threads?: number;
  /**
   * f32 KV cache and no flash attention: the attention then runs in f32 like lowbit's runtime.
   * llama.cpp's defaults (f16 KV cache, flash attention) round the attention output to f16, which moves
   * the attn_output / ffn statistics by up to ~1e-3 relative.
   */
  f32Attention?: boolean;
  format?: 'gguf' | 'dat';
  /** working directory (relative model/text paths are recorded as given in the file's dataset name) */
  cwd?: string;
}

/** Run llama-imatrix; throws with its log tail when it fails. Returns the wall time in seconds. */
export function runLlamaImatrix(r: LlamaImatrixRun): number {
  const bin = llamaBin('llama-imatrix');
  if (!bin) throw new Error('llama-imatrix is not built (node scripts/build-llama-cpp.mjs)');
  const args = ['-m', r.model, '-f', r.text, '-o', r.out, '-c', String(r.ctx), '--chunks', String(r.chunks), '-t', String(r.threads ?? 2), '--no-ppl'];
  if (r.f32Attention !== false) args.push('-fa', 'off', '-ctk', 'f32', '-ctv', 'f32');
  if (r.format) args.push('--output-format', r.format);
  const out = path.resolve(r.cwd ?? '.', r.out);
  fs.rmSync(out, { force: true });
  const t0 = performance.now();
  const p = spawnSync(bin, args, { encoding: 'utf8', maxBuffer: 64 << 20, cwd: r.cwd });
  const seconds = (performance.now() - t0) / 1000;
  if (p.status !== 0 || !fs.existsSync(out)) throw new Error(`llama-imatrix failed (exit ${p.status}): ${(p.stderr + p.stdout).split('\n').slice(-8).join('\n')}`);
  return seconds;
}

/** Run llama-quantize IN OUT TYPE [threads] with extra flags; throws with its log tail on failure. */
export function runLlamaQuantize(input: string, output: string, type: string, flags: string[] = [], threads = 2): void {
  const bin = llamaBin('llama-quantize');
  if (!bin) throw new Error('llama-quantize is not built (node scripts/build-llama-cpp.mjs)');
  fs.rmSync(output, { force: true });
  const p = spawnSync(bin, [...flags, input, output, type, String(threads)], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (p.status !== 0 || !fs.existsSync(output)) throw new Error(`llama-quantize ${type} ${flags.join(' ')} failed (exit ${p.status}): ${(p.stderr + p.stdout).split('\n').slice(-8).join('\n')}`);
}

export interface Measured {
  seconds: number;
  /** peak resident set (VmHWM), bytes */
  peakRss: number;
  /** user + system CPU seconds of the command and its children (/usr/bin/time; undefined without it) */
  cpuSeconds?: number;
  /** user and system CPU seconds, minor and major page faults (/usr/bin/time; undefined without it) */
  userSeconds?: number;
  sysSeconds?: number;
  minorFaults?: number;
  majorFaults?: number;
  status: number | null;
  stderr: string;
  stdout: string;
}

/**
 * Run a command and measure its wall time and peak RSS: /usr/bin/time's maxrss (getrusage, exact) when
 * available, else polling /proc/<pid>/status VmHWM every 20 ms.
 */
export function measure(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Measured> {
  const gnuTime = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
  const timeFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-measure-')), 'time');
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = gnuTime ? spawn(gnuTime, ['-o', timeFile, '-f', '%U %S %M %R %F', cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let peak = 0;
    const poll = () => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) * 1024);
      } catch {
        /* exited */
      }
    };
    const timer = gnuTime ? undefined : setInterval(poll, 20);
    child.on('error', (e) => {
      clearInterval(timer);
      reject(e);
    });
    child.on('exit', (status) => {
      clearInterval(timer);
      const seconds = (performance.now() - t0) / 1000;
      let cpu: Pick<Measured, 'cpuSeconds' | 'userSeconds' | 'sysSeconds' | 'minorFaults' | 'majorFaults'> = {};
      if (gnuTime) {
        const lines = fs.readFileSync(timeFile, 'utf8').trim().split('\n');
        const [user, sys, rss, minor, major] = lines[lines.length - 1].split(' ').map(Number);
        peak = rss * 1024;
        cpu = { cpuSeconds: user + sys, userSeconds: user, sysSeconds: sys, minorFaults: minor, majorFaults: major };
      }
      fs.rmSync(path.dirname(timeFile), { recursive: true, force: true });
      resolve({ seconds, peakRss: peak, ...cpu, status, stderr, stdout });
    });
  });
}
