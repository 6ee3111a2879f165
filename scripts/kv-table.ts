/**
 * The tables of docs/kv-cache.md (needs llama-perplexity):
 *
 *   node dist/scripts/kv-table.js [chunks=20] [--model F] [--ctx C] [--part all|llama|kv|act] [--rows I-J] [--kv35 'K V']
 *
 * KV cache schemes against an f32-cache base written by llama-perplexity on the held-out TinyStories text
 * (from character 500 000; the models of data/ trained on the text before it): llama.cpp's types measured by
 * llama.cpp (`--part llama`: as shipped, and with LLAMA_ATTN_ROT_DISABLE=1 — the pinned llama.cpp rotates
 * Q/K/V of a quantized cache when the head size is a multiple of 64, so with heads of 64 its `-ctk T` is
 * lowbit's `rot-T`), lowbit's schemes by lowbit (`--part kv`; `--rows I-J`: rows I..J of the list, to run the
 * table in pieces), then activation schemes (`--part act`: KLD vs activation bits, with and without
 * --rotate-act). Default model: data/tinyllama256.gguf at ctx 256 (its whole context); the long-context
 * tables: `--model data/tinyllama-ctx1024.gguf --ctx 512` and `--ctx 1024`. `--kv35`: the per-layer KIVI
 * widths of scripts/kv-alloc.ts for the model (default: tinyllama256's).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LLAMA_KLD, heldOutText, runLlama } from '../bench/kld.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const lowbit = root + 'bin/lowbit.js';
const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string', default: root + 'data/tinyllama256.gguf' },
    ctx: { type: 'string', default: '256' },
    part: { type: 'string', default: 'all' },
    rows: { type: 'string' },
    kv35: { type: 'string', default: 'pre-kivi3.2.4.4g128 kivi4.2.3.4g128' },
  },
});
const chunks = positionals[0] ?? '20';
const model = o.model!;
const ctx = o.ctx!;
const calib = root + 'data/tinystories-valid-head.txt'; // its first part: the models' training text, not the held-out part
const dir = root + '.cache/bench/kld/';
mkdirSync(dir, { recursive: true });
const held = heldOutText(dir);
const base = dir + `${basename(model, '.gguf')}-c${ctx}-n${chunks}-base.kld`;
if (!existsSync(base)) runLlama(['-m', model, '-f', held, '-c', ctx, '--chunks', chunks, '-ctk', 'f32', '-ctv', 'f32', '-fa', 'on', '--kl-divergence-base', base], /Final estimate: PPL = ([\d.]+)/);
const part = o.part!;
const [r0, r1] = o.rows ? o.rows.split('-').map(Number) : [0, Infinity];

interface EvalJson {
  ppl: number;
  kld: { mean: number };
  top1: number;
  kvBytesPerToken: number;
}
function evalJson(args: string[]): EvalJson {
  return JSON.parse(execFileSync(process.execPath, [lowbit, 'eval', ...args, '--base-logits', base, '--json'], { encoding: 'utf8' }));
}
const f32Bytes = evalJson([model, '-ctk', 'f32', '-ctv', 'f32']).kvBytesPerToken;
const bitsOf = (r: EvalJson) => (32 * r.kvBytesPerToken) / f32Bytes;
const e = (x: number) => x.toExponential(2);
console.log(`${basename(model)}, ctx ${ctx}, ${chunks} chunks of the held-out text; base: llama-perplexity, f32 cache`);

if (part === 'all' || part === 'llama') {
  console.log('| cache (keys = values) | bits | llama.cpp KLD as shipped | PPL | top-1 | llama.cpp KLD, LLAMA_ATTN_ROT_DISABLE=1 | PPL | top-1 |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const bits: Record<string, number> = { f16: 16, bf16: 16, q8_0: 8.5, q5_1: 6, q5_0: 5.5, q4_1: 5, q4_0: 4.5, iq4_nl: 4.5 };
  // -c ctx: without it llama-perplexity takes n_ctx 2048 as 2048 / ctx sequences of one batch, which a model
  // trained at 1024 cannot hold at ctx 1024 ("failed to find a memory slot")
  for (const t of Object.keys(bits)) {
    const m = runLlama(['-m', model, '-c', ctx, '--kl-divergence-base', base, '--kl-divergence', '-ctk', t, '-ctv', t, '-fa', 'on'], LLAMA_KLD);
    const d = ['f16', 'bf16'].includes(t) ? null : runLlama(['-m', model, '-c', ctx, '--kl-divergence-base', base, '--kl-divergence', '-ctk', t, '-ctv', t, '-fa', 'on'], LLAMA_KLD, { LLAMA_ATTN_ROT_DISABLE: '1' });
    const row = (x: RegExpMatchArray | null) => (x ? `${Number(x[2]).toExponential(3)} | ${Number(x[1]).toFixed(3)} | ${Number(x[4]).toFixed(2)} %` : ' | | ');
    console.log(`| ${t} | ${bits[t]} | ${row(m)} | ${row(d)} |`);
  }
  console.log();
}

if (part === 'all' || part === 'kv') {
  const [k35, v35] = o.kv35!.split(/\s+/);
  const R0 = ['--kv-residual', '0'];
  const configs: ([string, string] | [string, string, string[]])[] = [
    ['f32', 'f32'], ['f16', 'f16'], ['q8_0', 'q8_0'], ['q5_1', 'q5_1'], ['q5_0', 'q5_0'], ['q4_1', 'q4_1'], ['q4_0', 'q4_0'], ['iq4_nl', 'iq4_nl'],
    ['rot-q8_0', 'rot-q8_0'], ['rot-q4_0', 'rot-q4_0'], ['rot-iq4_nl', 'rot-iq4_nl'],
    ['kivi4', 'kivi4'], ['rot-kivi4', 'rot-kivi4'], ['kvquant4', 'kvquant4'], ['kivi4', 'kivi2'],
    ['kvquant3', 'kvquant3'], ['rot-kvquant3', 'rot-kvquant3'], ['kvquant3', 'kivi2'], ['kivi2', 'kivi2'], ['rot-kivi2', 'rot-kivi2'],
    // no f32 positions (docs: "≤ 3.5 bits, honestly"); the per-layer widths are scripts/kv-alloc.ts's choice on the calibration text
    ['kivi3g64', 'kivi3g64'], ['kivi3g64', 'kivi3g64', R0], ['kivi2', 'kivi2', R0], ['rot-kivi2', 'rot-kivi2', R0], ['kivi4', 'kivi4', R0],
    [k35, v35, R0], [k35.replace(/^pre-/, ''), v35, R0], [k35, v35],
  ];
  console.log('| keys / values | bits per element | KLD | PPL | top-1 |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  configs.forEach(([k, v, extra = []], i) => {
    if (i < r0 || i > r1) return;
    const r = evalJson([model, '-ctk', k, '-ctv', v, ...extra, ...(k.includes('kvquant') || v.includes('kvquant') ? ['--calib', calib] : [])]);
    console.log(`| ${k} / ${v}${extra.length ? ' ' + extra.join(' ') : ''} | ${bitsOf(r).toFixed(2)} | ${e(r.kld.mean)} | ${r.ppl.toFixed(3)} | ${(100 * r.top1).toFixed(2)} % |`);
  });
  console.log();
}

if (part === 'all' || part === 'act') {
  console.log('| weights | activations | KLD | KLD with --rotate-act | ratio | top-1 | top-1 rotated |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
  const row = (w: string, file: string, act: string) => {
    const a = evalJson([file, '--act', act, '--activations', 'f32']);
    const b = act === 'none' ? null : evalJson([file, '--act', act, '--activations', 'f32', '--rotate-act']);
    console.log(`| ${w} | ${act} | ${e(a.kld.mean)} | ${b ? e(b.kld.mean) : ''} | ${b ? (b.kld.mean / a.kld.mean).toFixed(2) : ''} | ${(100 * a.top1).toFixed(2)} % | ${b ? (100 * b.top1).toFixed(2) + ' %' : ''} |`);
  };
  for (const act of ['int8', 'fp8', 'mxfp8', 'int6', 'int4', 'mxfp4', 'nvfp4']) row('f32', model, act);
  const q4 = dir + `${basename(model, '.gguf')}-q4_0-gptq-rot.gguf`;
  if (!existsSync(q4)) execFileSync(process.execPath, [lowbit, 'quantize', model, q4, '--type', 'Q4_0', '--algo', 'gptq', '--rotate', 'hadamard', '--calib', calib, '--json'], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (const act of ['none', 'int8', 'int4']) row('Q4_0 GPTQ + rotate hadamard (QuaRot)', q4, act);
}
