/**
 * `npm run bench -- profile [chunks=4] [ctx=128] [threads=1] [activations=f32|ggml] [types=F32,Q8_0,Q4_K_M]`
 * (chunks < 0: decode -chunks tokens one at a time, as `lowbit generate`):
 * where a forward pass spends its time, per op, on the synthetic ~100M llama (bench/_llama-synth.ts)
 * in its stored types, as `lowbit eval` runs it (chunks of ctx tokens, logits of the second half).
 *
 * Exclusive CPU time per op (process.cpuUsage: on a shared machine wall time counts other jobs; with
 * threads > 1 it sums the workers' time), by wrapping the model's and the engine's methods with a timer stack (no
 * change to the code measured): matmul by layer kind (q/k/v, o, gate/up, down, output), activation
 * rounding (--activations ggml), attention kernel, SwiGLU, log-sum-exp, and the rest of each block
 * (RMSNorm, RoPE, KV-cache store, residual adds). Also GFLOP/s of each matmul kind.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useNodeThreads } from '../src/cli/threads.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { perplexity } from '../src/eval/perplexity.js';
import '../src/index.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { Llama } from '../src/model/llama.js';
import { cpuMs } from './_kernels.js';
import { LLAMA_100M, LLAMA_1B, syntheticLlama } from './_llama-synth.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

interface Stat {
  ms: number;
  /** exclusive wall ms (with threads > 1, the serial parts cost their CPU time in wall time while the workers wait) */
  wall: number;
  calls: number;
  flops: number;
}

class Profiler {
  readonly stats = new Map<string, Stat>();
  private stack: { name: string; t0: number; w0: number; child: number; childWall: number }[] = [];
  enter(name: string): void {
    this.stack.push({ name, t0: cpuMs(), w0: performance.now(), child: 0, childWall: 0 });
  }
  leave(flops = 0): void {
    const f = this.stack.pop()!;
    const total = cpuMs() - f.t0;
    const wall = performance.now() - f.w0;
    const s = this.stats.get(f.name) ?? { ms: 0, wall: 0, calls: 0, flops: 0 };
    s.ms += total - f.child;
    s.wall += wall - f.childWall;
    s.calls++;
    s.flops += flops;
    this.stats.set(f.name, s);
    const parent = this.stack[this.stack.length - 1];
    if (parent) {
      parent.child += total;
      parent.childWall += wall;
    }
  }
  wrap<T extends object>(obj: T, method: string, name: (...args: any[]) => string, flops: (...args: any[]) => number = () => 0): () => void {
    const o = obj as Record<string, any>;
    const orig = o[method];
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const prof = this;
    o[method] = function (this: unknown, ...args: any[]) {
      prof.enter(name(...args));
      try {
        return orig.apply(this, args);
      } finally {
        prof.leave(flops(...args));
      }
    };
    return () => {
      o[method] = orig;
    };
  }
}

function kindOf(name: string): string {
  if (/attn_[qkv]\./.test(name)) return 'matmul q/k/v';
  if (/attn_output/.test(name)) return 'matmul o';
  if (/ffn_(gate|up)/.test(name)) return 'matmul gate/up';
  if (/ffn_down/.test(name)) return 'matmul down';
  return 'matmul output';
}

/** the synthetic model in `type` (quantized by lowbit quantize on first use); LOWBIT_SYNTH=1.1b: the 1.1B shapes */
export async function modelFile(type: string): Promise<string> {
  const synth = await syntheticLlama(root, process.env.LOWBIT_SYNTH === '1.1b' ? LLAMA_1B : LLAMA_100M);
  if (type === 'F32') return synth;
  const file = synth.replace(/-f32\.gguf$/, `-${type.toLowerCase()}.gguf`);
  if (!existsSync(file)) {
    const r = spawnSync(process.execPath, [join(root, 'bin/lowbit.js'), 'quantize', synth, file, '--type', type], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`quantize failed: ${r.stderr}`);
  }
  return file;
}

async function profile(file: string, label: string, chunks: number, ctx: number, threads: number, activations: 'f32' | 'ggml'): Promise<void> {
  const src = fileSource(file);
  const { model } = await loadModel(src, { contextLength: ctx, batch: ctx, threads, activations });
  const prof = new Profiler();
  const P = Llama.prototype as unknown as Record<string, unknown>;
  const E = MatmulEngine.prototype as unknown as Record<string, unknown>;
  let kind = '';
  const undo = [
    prof.wrap(P, 'lin', (_o, _x, w) => ((kind = kindOf(w.name)), 'activation rounding')),
    prof.wrap(P, 'attentionBlock', () => 'rmsnorm, rope, kv store'),
    prof.wrap(P, 'ffnBlock', () => 'rmsnorm (ffn)'),
    prof.wrap(P, 'layer', () => 'residual adds'),
    prof.wrap(P, 'embed', () => 'embedding'),
    prof.wrap(P, 'logits', () => 'rmsnorm (output)'),
    prof.wrap(E, 'matmul', (_o, _x, w) => `${kind} ${w.type.name}`, (_o, _x, w, n) => 2 * n * w.rows * w.cols),
    prof.wrap(E, 'matmulInt', (_o, _x, w) => `${kind} ${w.type.name} int`, (_o, _x, w, n) => 2 * n * w.rows * w.cols),
    prof.wrap(E, 'attention', () => 'attention', (_q, n, pos0, nHeads, _kv, hd) => 4 * nHeads * hd * (n * pos0 + (n * (n + 1)) / 2)),
    prof.wrap(E, 'siluMul', () => 'swiglu'),
    prof.wrap(E, 'logSumExp', () => 'log-sum-exp'),
    prof.wrap(E, 'roundActivations', () => 'quantize activations'), // rounding and packing on every thread
  ];
  // the engine's activation rounding and packing (WebAssembly, on the calling thread) apart from the
  // matmul's chunks: wrap them on a copy of its exports object (a module's own is frozen)
  const engine = (model as unknown as { engine: MatmulEngine | null }).engine as unknown as { exports: Record<string, unknown> } | null;
  const exportsBefore = engine?.exports;
  if (engine && exportsBefore) {
    engine.exports = { ...exportsBefore };
    undo.push(
      prof.wrap(engine.exports, 'quantizeActs', () => 'quantize activations'),
      prof.wrap(engine.exports, 'prepQuads', () => 'pack activations'),
      prof.wrap(engine.exports, 'prepQuads16', () => 'pack activations'),
      prof.wrap(engine.exports, 'prepActs8', () => 'pack activations'),
      () => {
        engine.exports = exportsBefore;
      },
    );
  }
  const tokens = Array.from({ length: ctx * (Math.abs(chunks) + 1) }, (_, i) => 1 + ((i * 7919) % 31000));
  const decode = chunks < 0; // decode: -chunks tokens one at a time (as lowbit generate)
  if (decode) for (let p = 0; p < 4; p++) model.forward([tokens[p]], p); // warm-up
  else await perplexity(model, tokens.slice(0, 2 * ctx), { ctx, chunks: 1, bos: 1, addBos: true }); // warm-up
  prof.stats.clear();
  const w0 = performance.now();
  const t0 = cpuMs();
  if (decode) for (let p = 0; p < -chunks; p++) model.forward([tokens[p]], p);
  else await perplexity(model, tokens, { ctx, chunks, bos: 1, addBos: true });
  const wall = performance.now() - w0;
  const total = cpuMs() - t0;
  for (const u of undo) u();
  await src.close?.();
  let accounted = 0;
  for (const st of prof.stats.values()) accounted += st.ms;
  let accountedWall = 0;
  for (const st of prof.stats.values()) accountedWall += st.wall;
  prof.stats.set('rest (log-softmax max, NLL)', { ms: total - accounted, wall: wall - accountedWall, calls: 1, flops: 0 });
  const rows = [...prof.stats.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const n = Math.abs(chunks);
  const unit = decode ? 'token' : 'chunk';
  const tokensRun = decode ? n : n * ctx;
  console.log(
    `${label}: ${decode ? `decode, ${n} tokens` : `${n} chunks of ${ctx}`}, ${threads} thread(s), activations ${activations}: ${(total / n).toFixed(1)} CPU-ms per ${unit}, ` +
      `${(tokensRun / (total / 1000)).toFixed(1)} tok/CPU-s (wall: ${(tokensRun / (wall / 1000)).toFixed(1)} tok/s)`,
  );
  for (const [name, s] of rows) {
    if (s.ms / total < 0.002) continue;
    const gf = s.flops > 0 ? `  ${(s.flops / (s.ms / 1000) / 1e9).toFixed(1).padStart(6)} GFLOP/s` : '';
    console.log(
      `  ${name.padEnd(26)} ${(s.ms / n).toFixed(2).padStart(8)} CPU-ms/${unit} ${((100 * s.ms) / total).toFixed(1).padStart(5)} %${gf}` +
        `   wall ${(s.wall / n).toFixed(2).padStart(8)} ms ${((100 * s.wall) / wall).toFixed(1).padStart(5)} %`,
    );
  }
}

export async function run(args: string[]): Promise<void> {
  const chunks = Number(args[0] ?? 4);
  const ctx = Number(args[1] ?? 128);
  const threads = Number(args[2] ?? 1);
  const activations = (args[3] ?? 'f32') as 'f32' | 'ggml';
  const types = (args[4] ?? 'F32,Q8_0,Q4_K_M').split(',');
  useNodeThreads();
  for (const t of types) await profile(await modelFile(t), `llama 155M ${t}`, chunks, ctx, threads, activations);
  for (const v of ['relaxed', 'simd'] as const) MatmulEngine.get(v)?.close();
}
