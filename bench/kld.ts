/**
 * `npm run bench -- kld [chunks]`: lowbit's KL divergence against llama-perplexity's on the same quantized
 * files (issue 6: agree within 2 %). stories260K.gguf is quantized by `lowbit quantize` to Q8_0, Q4_0 and
 * Q4_K_M; llama-perplexity writes the base log-probabilities of the F32 model (--kl-divergence-base) and
 * measures each quantized file (--kl-divergence); lowbit measures the same file twice: against llama.cpp's
 * base file (--base-logits) and against the F32 model run by lowbit (--base). Needs the llama.cpp tools
 * (node scripts/build-llama-cpp.mjs); prints the ratios.
 *
 * `npm run bench -- kld cache [chunks]` (issue 14: agree within 5 %): KV cache types on tinyllama256.gguf
 * (head size 32) at its context 256, on the held-out TinyStories text (from character 500 000):
 * llama-perplexity -ctk T -ctv T -fa on --kl-divergence against the base of the f32 cache, and lowbit eval
 * -ctk T -ctv T against the same base file.
 *
 * `npm run bench -- kld cache512 [chunks=3] [types=f16,bf16,q8_0,q5_1,q5_0,q4_1,q4_0,iq4_nl] [shipped]`: the same at ctx 512 on the synthetic ~155 M-parameter llama
 * of bench eval (bench/_llama-synth.ts: random weights, 12 layers, heads of 64, context 2048) - no trained
 * model of lowbit's data holds 512 positions (tinyllama256 was trained at 256 and lowbit refuses a longer
 * context). Random weights make the KLDs small and say nothing about which scheme a trained model
 * prefers; what they check is the numerics at 512 positions with heads of 64, where llama.cpp rotates Q/K/V
 * by a 64 x 64 Hadamard matrix for a quantized cache: llama-perplexity as shipped against lowbit's
 * matching variant (rot-T for a quantized type, T for f16 / bf16) and, unless `shipped`, llama-perplexity
 * with LLAMA_ATTN_ROT_DISABLE=1 against lowbit's T.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = root + '.cache/llama.cpp-build/bin/llama-perplexity';
const lowbit = root + 'bin/lowbit.js';
const text = root + 'data/tinystories-valid-head.txt';
const model = root + 'data/stories260K.gguf';


export function runLlama(args: string[], want: RegExp, env?: Record<string, string>): RegExpMatchArray {
  for (let attempt = 0; attempt < 3; attempt++) {
    const p = spawnSync(bin, [...args, '-t', '2'], { encoding: 'utf8', maxBuffer: 1 << 28, env: env ? { ...process.env, ...env } : process.env });
    if (p.status !== 0) throw new Error(`llama-perplexity failed (${p.status}): ${p.stderr.slice(-400)}`);
    const m = (p.stdout + p.stderr).match(want);
    if (m) return m;
  }
  throw new Error(`llama-perplexity output never matched ${want}`);
}

function lowbitEval(args: string[]): { ppl: number; kld: { mean: number; stderr: number; p99: number }; top1: number } {
  const out = execFileSync(process.execPath, [lowbit, 'eval', ...args, '--json'], { encoding: 'utf8' });
  return JSON.parse(out);
}

/** tinyllama256's held-out text (it was trained on the first 500 000 characters) */
export function heldOutText(dir: string): string {
  const file = dir + 'tinystories-heldout.txt';
  if (!existsSync(file)) writeFileSync(file, readFileSync(text, 'utf8').slice(500000));
  return file;
}

/** KLD of every llama.cpp cache type by llama-perplexity and by lowbit eval, against one f32-cache base. */
export async function cacheTypes(chunks: string, types: readonly string[], log = console.log): Promise<{ type: string; llama: number; lowbit: number }[]> {
  const dir = root + '.cache/bench/kld/';
  mkdirSync(dir, { recursive: true });
  const tiny = root + 'data/tinyllama256.gguf';
  const held = heldOutText(dir);
  const base = dir + 'tinyllama256-base.kld';
  runLlama(['-m', tiny, '-f', held, '-c', '256', '--chunks', chunks, '-ctk', 'f32', '-ctv', 'f32', '-fa', 'on', '--kl-divergence-base', base], /Final estimate: PPL = ([\d.]+)/);
  log(`tinyllama256.gguf, ctx 256, ${chunks} chunks of the held-out TinyStories text; base: f32 cache (llama-perplexity)`);
  log('cache      bits   llama.cpp KLD          lowbit KLD    ratio    llama.cpp PPL  lowbit PPL   llama top-1  lowbit top-1');
  const out: { type: string; llama: number; lowbit: number }[] = [];
  for (const t of types) {
    const m = runLlama(['-m', tiny, '--kl-divergence-base', base, '--kl-divergence', '-ctk', t, '-ctv', t, '-fa', 'on'], /Mean PPL\(Q\)\s+:\s+([\d.]+)[\s\S]*Mean\s+KLD:\s+([-\d.e]+)\s+±\s+([-\d.e]+)[\s\S]*Same top p:\s+([\d.]+)/);
    const r = lowbitEval([tiny, '--base-logits', base, '-ctk', t, '-ctv', t]) as ReturnType<typeof lowbitEval> & { kvBytesPerToken: number };
    const ref = Number(m[2]);
    const bits = (8 * r.kvBytesPerToken) / (2 * 4 * 128); // 4 layers x 128 values, keys and values
    log(`${t.padEnd(9)} ${bits.toFixed(2).padStart(5)}   ${ref.toExponential(4)} ± ${Number(m[3]).toExponential(1)}   ${r.kld.mean.toExponential(4)}   ${(r.kld.mean / ref).toFixed(4)}   ${Number(m[1]).toFixed(4).padStart(12)}  ${r.ppl.toFixed(4).padStart(10)}   ${Number(m[4]).toFixed(3).padStart(9)} %  ${(100 * r.top1).toFixed(3).padStart(9)} %`);
    out.push({ type: t, llama: ref, lowbit: r.kld.mean });
  }
  return out;
}

export const LLAMA_KLD = /Mean PPL\(Q\)\s+:\s+([\d.]+)[\s\S]*Mean\s+KLD:\s+([-\d.e]+)\s+±\s+([-\d.e]+)[\s\S]*Same top p:\s+([\d.]+)/;

/** does the pinned llama.cpp rotate a cache of this type (ggml_is_quantized, heads a multiple of 64)? lowbit's matching variant is rot-T then */
export function llamaRotates(type: string): boolean {
  return !['f32', 'f16', 'bf16'].includes(type.toLowerCase());
}

/**
 * ctx 512 on the synthetic llama: llama.cpp as shipped vs lowbit's matching variant (rot-T for the
 * types llama.cpp rotates, T for f16 / bf16), and (unless `shippedOnly`) llama.cpp with
 * LLAMA_ATTN_ROT_DISABLE=1 vs lowbit T.
 */
export async function cacheTypes512(chunks: string, types: readonly string[], shippedOnly = false, log = console.log): Promise<{ type: string; variant: string; llama: number; lowbit: number }[]> {
  const rows: { type: string; variant: string; llama: number; lowbit: number }[] = [];
  const { modelFile } = await import('./profile.js');
  const synth = await modelFile('F32');
  const dir = root + '.cache/bench/kld/';
  mkdirSync(dir, { recursive: true });
  const held = heldOutText(dir);
  const base = dir + `synth-512-${chunks}-base.kld`;
  if (!existsSync(base)) runLlama(['-m', synth, '-f', held, '-c', '512', '--chunks', chunks, '-ctk', 'f32', '-ctv', 'f32', '-fa', 'on', '--kl-divergence-base', base], /Final estimate: PPL = ([\d.]+)/);
  log(`synthetic llama 155M (heads of 64), ctx 512, ${chunks} chunks of the held-out TinyStories text; base: f32 cache (llama-perplexity)`);
  log('cache    llama.cpp KLD (as shipped)  lowbit variant   KLD       ratio   llama.cpp KLD (LLAMA_ATTN_ROT_DISABLE)  lowbit T   ratio   top-1 llama / lowbit (as shipped)');
  for (const t of types) {
    const v = llamaRotates(t) ? `rot-${t}` : t;
    const rot = runLlama(['-m', synth, '--kl-divergence-base', base, '--kl-divergence', '-ctk', t, '-ctv', t, '-fa', 'on'], LLAMA_KLD);
    const a = lowbitEval([synth, '--base-logits', base, '-ctk', v, '-ctv', v]);
    const e = (x: number) => x.toExponential(3);
    let rest = '';
    if (!shippedOnly && llamaRotates(t)) {
      const plain = runLlama(['-m', synth, '--kl-divergence-base', base, '--kl-divergence', '-ctk', t, '-ctv', t, '-fa', 'on'], LLAMA_KLD, { LLAMA_ATTN_ROT_DISABLE: '1' });
      const b = lowbitEval([synth, '--base-logits', base, '-ctk', t, '-ctv', t]);
      rest = `${e(Number(plain[2])).padStart(12)} ± ${Number(plain[3]).toExponential(1)}              ${e(b.kld.mean)}   ${(b.kld.mean / Number(plain[2])).toFixed(3)}`;
    } else rest = ' '.repeat(52);
    log(`${t.padEnd(8)} ${e(Number(rot[2])).padStart(12)} ± ${Number(rot[3]).toExponential(1)}      ${v.padEnd(10)} ${e(a.kld.mean)}   ${(a.kld.mean / Number(rot[2])).toFixed(3)}   ${rest}   ${Number(rot[4]).toFixed(2)} % / ${(100 * a.top1).toFixed(2)} %`);
    rows.push({ type: t, variant: v, llama: Number(rot[2]), lowbit: a.kld.mean });
  }
  return rows;
}

export async function run(args: string[]): Promise<void> {
  if (!existsSync(bin)) {
    console.log(`llama-perplexity not built (${bin}); run node scripts/build-llama-cpp.mjs`);
    return;
  }
  if (args[0] === 'cache512') {
    await cacheTypes512(String(Number(args[1] ?? 3)), args[2]?.split(',') ?? ['f16', 'bf16', 'q8_0', 'q5_1', 'q5_0', 'q4_1', 'q4_0', 'iq4_nl'], args[3] === 'shipped');
    return;
  }
  if (args[0] === 'cache') {
    await cacheTypes(String(Number(args[1] ?? 40)), ['f16', 'bf16', 'q8_0', 'q5_1', 'q5_0', 'q4_1', 'q4_0', 'iq4_nl']);
    return;
  }
  const chunks = String(Number(args[0] ?? 200));
  const dir = root + '.cache/bench/kld/';
  mkdirSync(dir, { recursive: true });
  const base = dir + 'base.kld';
  runLlama(['-m', model, '-f', text, '-c', '128', '--chunks', chunks, '--kl-divergence-base', base], /Final estimate: PPL = ([\d.]+)/);
  console.log(`ctx 128, ${chunks} chunks, ${text.slice(root.length)}`);
  console.log('lowbit runs with --activations ggml (activations rounded to Q8_0/Q8_K/F16 as llama.cpp\'s CPU backend does) and with f32 activations');
  console.log('type     llama.cpp KLD         ggml act, llama base   ratio    ggml act, own base   ratio    f32 act (weights only)');
  for (const type of ['Q8_0', 'Q4_0', 'Q4_K_M']) {
    const q = dir + `stories260K-${type}.gguf`;
    execFileSync(process.execPath, [lowbit, 'quantize', model, q, '--type', type, '--json'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const m = runLlama(['-m', q, '--kl-divergence-base', base, '--kl-divergence'], /Mean\s+KLD:\s+([-\d.e]+)\s+±\s+([-\d.e]+)/);
    const ref = Number(m[1]);
    const a = lowbitEval([q, '--base-logits', base, '--activations', 'ggml']);
    const b = lowbitEval([q, '--base', model, '--text', text, '--ctx', '128', '--chunks', chunks, '--activations', 'ggml']);
    const w = lowbitEval([q, '--base-logits', base]);
    const f = (x: number) => x.toFixed(6);
    console.log(`${type.padEnd(8)} ${f(ref)} ± ${Number(m[2]).toFixed(6)}   ${f(a.kld.mean).padEnd(21)}  ${(a.kld.mean / ref).toFixed(4)}   ${f(b.kld.mean).padEnd(19)}  ${(b.kld.mean / ref).toFixed(4)}   ${f(w.kld.mean)} (${(w.kld.mean / ref).toFixed(4)})`);
  }
}
