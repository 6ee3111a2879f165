/**
 * `npm run quickstart`: the main job on the model shipped in data/.
 *   1. the number formats, and the real stories260K weights cast to each (SQNR);
 *   2. stories260K quantized to Q8_0, Q6_K, Q4_K_M, Q4_0 (llama.cpp's mixtures), GGML MXFP4 and NVFP4
 *      (GGUF) and int4 g32 (safetensors); each evaluated against the original on shipped text
 *      (PPL, KL divergence, top-1), with size and bits per weight;
 *   3. a greedy sample from the best 4-bit file.
 * Files go to out/quickstart/. `--quick` evaluates fewer chunks.
 */
import { QUICKSTART_VARIANTS } from './quickstart-variants.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAtomicFile } from '../src/cli/files.js';
import { fileSource } from '../src/cli/node-source.js';
import { formatsTable, num, renderTable } from '../src/cli/commands/formats.js';
import { generate } from '../src/eval/generate.js';
import { loadModel } from '../src/eval/load.js';
import { sqnrDb } from '../src/eval/metrics.js';
import { parseFormat } from '../src/formats/registry.js';
import { openModelFile } from '../src/io/model-file.js';
import { fakeQuant } from '../src/kernels/cast.js';
import { evaluateAgainst, evaluateBase } from '../src/pipeline/evaluate.js';
import { quantize } from '../src/pipeline/quantize.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const data = (f: string) => path.join(root, 'data', f);
const outDir = path.join(root, 'out', 'quickstart');
const quick = process.argv.includes('--quick');
const log = (s = '') => process.stdout.write(s + '\n');

log('lowbit quickstart\n\n== 1. number formats\n');
log(formatsTable());

// the float32 weights of the llama2.c checkpoint: 7 int32 header values, then the tensors
const bin = fs.readFileSync(data('stories260K.bin'));
const weights = new Float32Array(bin.buffer.slice(bin.byteOffset + 28, bin.byteOffset + bin.length));
const rows: string[][] = [];
for (const name of ['fp16', 'bf16', 'fp8_e4m3fn', 'fp8_e5m2', 'fp6_e2m3fn', 'fp6_e3m2fn', 'int8', 'e3m4', 'fp4_e2m1fn', 'nf4', 'int4']) {
  const f = parseFormat(name);
  let amax = 0;
  for (const v of weights) amax = Math.max(amax, Math.abs(v));
  // one absmax scale for the whole model for narrow formats; wide formats need none
  const scale = f.kind === 'float' && f.maxFinite > 1e4 ? 1 : amax / f.maxFinite;
  const y = fakeQuant(f, weights, { scale });
  rows.push([f.name, String(f.bits), num(f.maxFinite), sqnrDb(weights, y).toFixed(2)]);
}
log(`\nstories260K's ${weights.length} weights cast to each format (one absmax scale), SQNR:\n`);
log(renderTable(['format', 'bits', 'max finite', 'SQNR dB'], rows, [false, true, true, true]));

log('\n== 2. quantized models, evaluated against the original\n');
fs.mkdirSync(outDir, { recursive: true });
const variants = QUICKSTART_VARIANTS;
const text = fs.readFileSync(data('tinystories-valid-head.txt'), 'utf8');
const setup = { ctx: 128, chunks: quick ? 10 : 40 };
const input = fileSource(data('stories260K.gguf'));
const t0 = performance.now();
const base = await evaluateBase(input, text, setup);
log(`original (F32): PPL ${base.result.ppl.toFixed(4)} over ${base.result.tokens} scored tokens (ctx ${setup.ctx}, ${base.result.chunks} chunks of tinystories-valid-head.txt)\n`);
const model = await openModelFile(input);
const table: string[][] = [['F32 (original)', String(input.size), '32.00', base.result.ppl.toFixed(4), '0', '1.000', '-']];
const results: { label: string; file: string; kld: number; bpw: number }[] = [];
for (const [label, recipe, kind] of variants) {
  const file = path.join(outDir, `stories260K-${label}.${kind}`);
  const calibrated = recipe.algorithm !== undefined && recipe.algorithm !== 'rtn';
  // calibration text: TinyStories from character 300 000 on, disjoint from the evaluated head
  const rep = await withAtomicFile(file, (f) => quantize(model, recipe, { write: (b) => f.write(b) }, { output: kind, ...(calibrated ? { calibText: text.slice(300000) } : {}) }));
  const src = fileSource(file);
  const r = await evaluateAgainst(src, base, setup);
  src.close();
  const size = fs.statSync(file).size;
  table.push([label, String(size), rep.bitsPerWeight.toFixed(2), r.ppl.toFixed(4), (r.kld?.mean ?? NaN).toFixed(5), (r.top1 ?? NaN).toFixed(3), path.relative(root, file)]);
  results.push({ label, file, kld: r.kld?.mean ?? Infinity, bpw: rep.bitsPerWeight });
}
log(renderTable(['type', 'file bytes', 'bpw', 'PPL', 'KLD', 'top-1', 'file'], table, [false, true, true, true, true, true, false]));
log(`\n(bpw counts every tensor, norms in F32 included; rows of 172 do not fit 32-blocks and stay F16: see lowbit quantize --dry-run)`);
log(`quantize + evaluate: ${((performance.now() - t0) / 1000).toFixed(1)} s`);

log('\n== 3. a greedy sample from the best 4-bit file\n');
const fourBit = results.filter((r) => ['Q4_K_M', 'Q4_0', 'Q4_0+GPTQ', 'MXFP4', 'NVFP4', 'int4_g32'].includes(r.label)).sort((a, b) => a.kld - b.kld)[0];
const src = fileSource(fourBit.file);
const m = await loadModel(src, { contextLength: 512 });
src.close();
const g = generate(m.model, m.tokenizer!, 'Once upon a time', { steps: 120, temperature: 0 });
log(`${fourBit.label} (KLD ${fourBit.kld.toFixed(5)}): Once upon a time${g.text}`);
input.close();
