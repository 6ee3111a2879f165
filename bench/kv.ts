/**
 * `npm run bench -- kv [rounds=3] [caches=f32,q8_0,q4_0,kivi2,kivi4,kv3.5]`: quantized KV caches must
 * not make the runtime slow (issue 14: >= 0.8x the f32 cache), on tinyllama256.gguf at its full context
 * (256).
 *
 *   decode  every cache's model (as `lowbit generate` loads it: the WebAssembly kernels, default
 *           threads) runs the prompt "Once upon a time", then 240 greedy decoding steps, the caches
 *           taking turns token by token in this one process: a change of machine load hits all of
 *           them alike (whole `lowbit generate` commands, 0.5 s of decoding each, swing 3x between runs
 *           at the shared machine's load). Per round the ratio to the f32 cache; the median of the
 *           rounds is printed, with the per-op timers: the store's attention call (query rounding,
 *           the packed kernel) and its KV write (quantizing the new row), in µs per token.
 *   eval    whole `lowbit eval --ctx 256 --chunks 12` commands, the caches in turn (interleaved rounds).
 *
 * Prints the KV bytes per token next to the ratios. Packed rows are dequantized inside the WebAssembly
 * attention kernel (MatmulEngine.attentionPacked).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadModelPath } from '../src/cli/commands/generate.js';
import { threadsFrom } from '../src/cli/threads.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import type { KvCacheOptions } from '../src/model/kv/cache.js';
import type { KvStorage } from '../src/model/kv/storage.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const lowbit = root + 'bin/lowbit.js';
const model = root + 'data/tinyllama256.gguf';
const text = root + 'data/tinystories-valid-head.txt';
const STEPS = 240;

/** a cache by its label: the runtime's options and the same as flags */
const CACHES: Record<string, { o: KvCacheOptions; flags: string[] }> = {
  f32: { o: { k: 'f32', v: 'f32' }, flags: ['-ctk', 'f32', '-ctv', 'f32'] },
  q8_0: { o: { k: 'q8_0', v: 'q8_0' }, flags: ['-ctk', 'q8_0', '-ctv', 'q8_0'] },
  q4_0: { o: { k: 'q4_0', v: 'q4_0' }, flags: ['-ctk', 'q4_0', '-ctv', 'q4_0'] },
  kivi2: { o: { k: 'kivi2', v: 'kivi2' }, flags: ['-ctk', 'kivi2', '-ctv', 'kivi2'] },
  kivi4: { o: { k: 'kivi4', v: 'kivi4' }, flags: ['-ctk', 'kivi4', '-ctv', 'kivi4'] },
  'kv3.5': { o: { k: 'pre-kivi3.2.4.4g128', v: 'kivi4.2.3.4g128', residual: 0 }, flags: ['-ctk', 'pre-kivi3.2.4.4g128', '-ctv', 'kivi4.2.3.4g128', '--kv-residual', '0'] },
};

interface Timed {
  name: string;
  forward: (tokens: number[], pos: number) => Float32Array;
  logits: Float32Array;
  /** ms in forward, in the store's attention, in its writes */
  ms: number;
  att: number;
  write: number;
  bytes: number;
}

/** the cache whose step runs (the engine's attention kernel is wrapped once, for every round) */
const current: { t: Timed | null } = { t: null };

/** Wrap a store's attention / append (or, for the default f32 store, the engine's attention kernel) with timers. */
function timeStore(kv: KvStorage, t: Timed, engine: MatmulEngine | null): void {
  const wrap = <F extends (...a: never[]) => unknown>(f: F, add: (ms: number) => void): F =>
    ((...a: Parameters<F>) => {
      const t0 = performance.now();
      const r = f(...a);
      add(performance.now() - t0);
      return r;
    }) as F;
  const s = kv as { attention?: KvStorage['attention']; append?: KvStorage['append'] };
  if (s.attention) s.attention = wrap(s.attention.bind(kv), (ms) => (t.att += ms));
  else if (engine && !(engine as { timed?: boolean }).timed) {
    const a = engine.attention.bind(engine);
    engine.attention = wrap(a, (ms) => current.t && (current.t.att += ms));
    (engine as { timed?: boolean }).timed = true;
  }
  if (s.append) s.append = wrap(s.append.bind(kv), (ms) => (t.write += ms));
}

const argmax = (x: Float32Array) => {
  let b = 0;
  for (let j = 1; j < x.length; j++) if (x[j] > x[b]) b = j;
  return b;
};

/** one round of interleaved decoding: per cache tok/s and µs per token of attention and writes */
async function decodeRound(types: string[], round: number): Promise<Map<string, Timed>> {
  const engine = MatmulEngine.get();
  const ts: Timed[] = [];
  let prompt: number[] = [];
  for (const name of types) {
    const m = await loadModelPath(model, undefined, { threads: threadsFrom(undefined), kvCache: CACHES[name].o });
    prompt = m.tokenizer!.encode('Once upon a time');
    const t: Timed = { name, forward: (tok, pos) => m.model.forward(tok, pos), logits: new Float32Array(0), ms: 0, att: 0, write: 0, bytes: m.model.kv.bytesPerToken ?? 0 };
    timeStore(m.model.kv, t, engine);
    t.logits = m.model.forward(prompt, 0);
    t.att = t.write = 0;
    ts.push(t);
  }
  // the caches take turns; the order rotates with the round
  const order = ts.map((_, i) => ts[(i + round) % ts.length]);
  for (let i = 0, pos = prompt.length; i < STEPS && pos < 256; i++, pos++) {
    for (const t of order) {
      current.t = t;
      const next = argmax(t.logits);
      const t0 = performance.now();
      t.logits = t.forward([next], pos);
      t.ms += performance.now() - t0;
    }
  }
  return new Map(ts.map((t) => [t.name, t]));
}

function evalSpeed(type: string): number {
  const t0 = performance.now();
  const out = execFileSync(process.execPath, [lowbit, 'eval', model, '--text', text, '--ctx', '256', '--chunks', '12', '--json', ...CACHES[type].flags], { encoding: 'utf8' });
  const r = JSON.parse(out) as { chunks: number; ctx: number };
  return (r.chunks * r.ctx) / ((performance.now() - t0) / 1000);
}

export async function run(args: string[]): Promise<void> {
  const rounds = Number(args[0] ?? 3);
  const types = args[1] ? args[1].split(',') : Object.keys(CACHES);
  for (const t of types) if (!CACHES[t]) throw new Error(`bench kv: unknown cache ${t} (${Object.keys(CACHES).join(', ')})`);
  if (types[0] !== 'f32') types.unshift('f32');
  const dec = new Map(types.map((t) => [t, [] as { tps: number; ratio: number; att: number; write: number }[]]));
  const ev = new Map(types.map((t) => [t, [] as number[]]));
  const bytes = new Map<string, number>();
  for (let r = 0; r < rounds; r++) {
    const res = await decodeRound(types, r);
    const f32 = res.get('f32')!;
    for (const [name, t] of res) {
      dec.get(name)!.push({ tps: STEPS / (t.ms / 1000), ratio: f32.ms / t.ms, att: (1000 * t.att) / STEPS, write: (1000 * t.write) / STEPS });
      bytes.set(name, t.bytes);
    }
    for (const t of types) ev.get(t)!.push(evalSpeed(t));
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(`tinyllama256.gguf, ctx 256, ${rounds} rounds (median); decode: ${STEPS} steps in one process, the caches taking turns token by token; eval: whole commands, start-up included`);
  console.log('cache   KV bytes/token   decode tok/s  vs f32   attention µs/tok  KV write µs/tok    eval tok/s  vs f32');
  const e32 = med(ev.get('f32')!);
  for (const t of types) {
    const d = dec.get(t)!;
    const e = med(ev.get(t)!);
    console.log(
      `${t.padEnd(7)} ${String(bytes.get(t)).padStart(14)}   ${med(d.map((x) => x.tps)).toFixed(1).padStart(12)}  ${med(d.map((x) => x.ratio)).toFixed(2).padStart(5)}x` +
        `   ${med(d.map((x) => x.att)).toFixed(0).padStart(16)}  ${med(d.map((x) => x.write)).toFixed(0).padStart(15)}    ${e.toFixed(0).padStart(10)}  ${(e / e32).toFixed(2).padStart(5)}x`,
    );
  }
}
