/**
 * The tables of docs/kv-cache.md: `node dist/scripts/kv-table.js [chunks]` (needs llama-perplexity).
 * KV cache schemes on tinyllama256.gguf (head size 32, context 256) against the f32-cache base written
 * by llama-perplexity: llama.cpp's types measured by llama.cpp and by lowbit, lowbit's research schemes
 * by lowbit; then activation schemes (KLD vs activation bits, with and without --rotate-act).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cacheTypes } from '../bench/kld.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const lowbit = root + 'bin/lowbit.js';
const tiny = root + 'data/tinyllama256.gguf';
const base = root + '.cache/bench/kld/tinyllama256-base.kld';
const calib = root + 'data/tinystories-valid-head.txt'; // its first part: tinyllama256's training text, not the held-out part

function evalJson(args: string[]): { ppl: number; kld: { mean: number }; top1: number; kvBytesPerToken: number } {
  return JSON.parse(execFileSync(process.execPath, [lowbit, 'eval', ...args, '--base-logits', base, '--json'], { encoding: 'utf8' }));
}

const chunks = process.argv[2] ?? '20';
const llama = new Map((await cacheTypes(chunks, ['f16', 'q8_0', 'q5_1', 'q5_0', 'q4_1', 'q4_0', 'iq4_nl'], () => {})).map((r) => [r.type, r.llama]));
if (!existsSync(base)) throw new Error('no base file');
const configs: ([string, string] | [string, string, string[]])[] = [
  ['f16', 'f16'], ['q8_0', 'q8_0'], ['q5_1', 'q5_1'], ['q5_0', 'q5_0'], ['q4_1', 'q4_1'], ['q4_0', 'q4_0'], ['iq4_nl', 'iq4_nl'],
  ['rot-q8_0', 'rot-q8_0'], ['rot-q4_0', 'rot-q4_0'], ['rot-iq4_nl', 'rot-iq4_nl'],
  ['kivi4', 'kivi4'], ['rot-kivi4', 'rot-kivi4'], ['kvquant4', 'kvquant4'], ['kivi4', 'kivi2'],
  ['kvquant3', 'kvquant3'], ['rot-kvquant3', 'rot-kvquant3'], ['kvquant3', 'kivi2'], ['kivi2', 'kivi2'], ['rot-kivi2', 'rot-kivi2'],
  // no f32 positions (docs: "≤ 3.5 bits, honestly"); the per-layer widths are scripts/kv-alloc.ts's choice on the calibration text
  ['kivi3g64', 'kivi3g64'], ['kivi3g64', 'kivi3g64', ['--kv-residual', '0']], ['kivi2', 'kivi2', ['--kv-residual', '0']],
  ['pre-kivi3.2.3.4g64', 'kivi3.2.3.4g64', ['--kv-residual', '0']], ['pre-kivi3.2.3.4g128', 'kivi4.2.3.4g128', ['--kv-residual', '0']],
  ['kivi3.2.4.4g128', 'kivi4.2.3.4g128', ['--kv-residual', '0']], ['pre-kivi3.2.4.4g128', 'kivi4.2.3.4g128', ['--kv-residual', '0']],
  ['pre-kivi3.2.4.4g128', 'kivi4.2.3.4g128'],
];
console.log(`| keys / values | bits per element | KLD (llama.cpp) | KLD (lowbit) | PPL | top-1 |`);
console.log(`| --- | ---: | ---: | ---: | ---: | ---: |`);
for (const [k, v, extra = []] of configs) {
  const r = evalJson([tiny, '-ctk', k, '-ctv', v, ...extra, ...(k.includes('kvquant') || v.includes('kvquant') ? ['--calib', calib] : [])]);
  const bits = (8 * r.kvBytesPerToken) / (2 * 4 * 128);
  const ref = k === v ? llama.get(k) : undefined;
  console.log(`| ${k} / ${v}${extra.length ? ' ' + extra.join(' ') : ''} | ${bits.toFixed(2)} | ${ref === undefined ? '' : ref.toExponential(2)} | ${r.kld.mean.toExponential(2)} | ${r.ppl.toFixed(3)} | ${(100 * r.top1).toFixed(2)} % |`);
}
console.log();
console.log('| weights | activations | KLD | KLD with --rotate-act | ratio | top-1 | top-1 rotated |');
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
for (const act of ['int8', 'fp8', 'mxfp8', 'int6', 'int4', 'mxfp4', 'nvfp4']) {
  const a = evalJson([tiny, '--act', act, '--activations', 'f32']);
  const b = evalJson([tiny, '--act', act, '--activations', 'f32', '--rotate-act']);
  console.log(`| f32 | ${act} | ${a.kld.mean.toExponential(2)} | ${b.kld.mean.toExponential(2)} | ${(b.kld.mean / a.kld.mean).toFixed(2)} | ${(100 * a.top1).toFixed(2)} % | ${(100 * b.top1).toFixed(2)} % |`);
}
const q4 = root + '.cache/bench/kld/tinyllama256-q4_0-gptq-rot.gguf';
if (!existsSync(q4)) execFileSync(process.execPath, [lowbit, 'quantize', tiny, q4, '--type', 'Q4_0', '--algo', 'gptq', '--rotate', 'hadamard', '--calib', calib, '--json'], { stdio: ['ignore', 'ignore', 'inherit'] });
for (const act of ['none', 'int8', 'int4']) {
  const a = evalJson([q4, '--act', act, '--activations', 'f32']);
  const b = act === 'none' ? a : evalJson([q4, '--act', act, '--activations', 'f32', '--rotate-act']);
  console.log(`| Q4_0 GPTQ + rotate hadamard | ${act} | ${a.kld.mean.toExponential(2)} | ${act === 'none' ? '' : b.kld.mean.toExponential(2)} | ${act === 'none' ? '' : (b.kld.mean / a.kld.mean).toFixed(2)} | ${(100 * a.top1).toFixed(2)} % | ${act === 'none' ? '' : (100 * b.top1).toFixed(2) + ' %'} |`);
}
