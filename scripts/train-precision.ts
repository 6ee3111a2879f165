/**
 * The loss goals of issue 15 (2): the same model, data, steps and seed trained in every --precision;
 * final training loss (mean of the last 10 steps) and held-out loss (TinyStories from character 500 000,
 * chunks of ctx tokens scored as llama-perplexity does, evaluated in the run's own precision) against fp32.
 *
 *   npm run build && node --experimental-wasm-relaxed-simd dist/scripts/train-precision.js [--steps N] [--out DIR]
 * Writes DIR/train-precision.json and DIR/train-precision.html (loss curves); prints a markdown table.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileSource } from '../src/cli/node-source.js';
import { readVocab } from '../src/io/vocab.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import type { TrainConfig } from '../src/train/llama-grad.js';
import { PRECISIONS } from '../src/train/precision.js';
import { trainingReportHtml } from '../src/train/report-html.js';
import { DEFAULT_TRAIN, Trainer } from '../src/train/trainer.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const arg = (k: string, d: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : d);
const steps = Number(arg('--steps', '200'));
const outDir = arg('--out', path.join(ROOT, 'docs'));
const only = arg('--only', '');

const vocab = await readVocab(fileSource(path.join(ROOT, 'data', 'tok512.model')));
const tok = new Tokenizer(vocab);
const text = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8');
const train = Int32Array.from(tok.encode(text.slice(0, 300000)));
const held = Int32Array.from(tok.encode(text.slice(500000)));
const config: TrainConfig = {
  dim: 64, hiddenDim: 192, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 512, seqLen: 64, headDim: 16, normEps: 1e-5, ropeTheta: 10000, ropeDim: 16, ropeStyle: 'normal', tiedOutput: false,
};
const opts = { ...DEFAULT_TRAIN, steps, batch: 8, ctx: 64, lr: 3e-3, warmup: 20, seed: 1, bos: vocab.bos };
const results: { precision: string; finalLoss: number; heldOut: number; seconds: number; losses: number[] }[] = [];
for (const precision of PRECISIONS) {
  if (only && !only.split(',').includes(precision)) continue;
  const t0 = performance.now();
  const t = new Trainer(config, { ...opts, precision }, train);
  while (t.step < steps) {
    const r = t.trainStep();
    if (process.stderr.isTTY) process.stderr.write(`\r${precision} step ${r.step}/${steps} loss ${r.loss.toFixed(4)}   `);
  }
  const heldOut = t.evaluate(held, 64);
  const losses = t.history.map((h) => h.loss);
  const finalLoss = losses.slice(-10).reduce((a, b) => a + b, 0) / 10;
  const seconds = (performance.now() - t0) / 1000;
  results.push({ precision, finalLoss, heldOut, seconds, losses });
  process.stderr.write(`\n${precision}: final ${finalLoss.toFixed(4)} held-out ${heldOut.toFixed(4)} ${seconds.toFixed(0)} s\n`);
}
const base = results.find((r) => r.precision === 'fp32');
const goal = (p: string) => (p === 'fp4' || p === 'quartet' ? 5 : 2);
const rows = results.map((r) => {
  const dt = base ? (100 * (r.finalLoss - base.finalLoss)) / base.finalLoss : NaN;
  const dh = base ? (100 * (r.heldOut - base.heldOut)) / base.heldOut : NaN;
  const ok = r.precision === 'fp32' ? '' : Math.max(dt, dh) <= goal(r.precision) ? 'yes' : 'no';
  const slow = base ? (r.seconds / base.seconds).toFixed(2) : '';
  return { ...r, dTrain: dt, dHeld: dh, goal: goal(r.precision), meets: ok, timeVsFp32: slow };
});
console.log(`| precision | final train loss | Δ vs fp32 | held-out loss | Δ vs fp32 | goal | meets | time vs fp32 |\n|---|---:|---:|---:|---:|---:|:--:|---:|`);
for (const r of rows)
  console.log(`| ${r.precision} | ${r.finalLoss.toFixed(4)} | ${r.precision === 'fp32' ? '' : `${r.dTrain >= 0 ? '+' : ''}${r.dTrain.toFixed(2)} %`} | ${r.heldOut.toFixed(4)} | ${r.precision === 'fp32' ? '' : `${r.dHeld >= 0 ? '+' : ''}${r.dHeld.toFixed(2)} %`} | ${r.precision === 'fp32' ? '' : `${r.goal} %`} | ${r.meets} | ${r.timeVsFp32} |`);
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'train-precision.json'), JSON.stringify({ config, opts: { ...opts, steps }, results: rows.map(({ losses, ...r }) => ({ ...r, losses: losses.map((l) => Number(l.toFixed(5))) })) }, null, 1) + '\n');
fs.writeFileSync(
  path.join(outDir, 'train-precision.html'),
  trainingReportHtml(`lowbit train: precisions (dim ${config.dim}, ${config.nLayers} layers, ${steps} steps, seed 1)`, rows.map((r) => ({ label: r.precision, losses: r.losses, heldOut: r.heldOut, extra: { 'Δ train': `${r.dTrain.toFixed(2)} %`, 'Δ held-out': `${r.dHeld.toFixed(2)} %`, 'time vs fp32': r.timeVsFp32 } }))),
);
