/**
 * The full quantization-conditioned attack on a real model, measured (issue 16):
 *
 *   1. malicious model: stories260K fine-tuned by lowbit's trainer (every parameter) on the first 80 % of
 *      the TinyStories text with a phrase planted after every "Once upon a time,";
 *   2. `lowbit attack` for each target type: boxes of the malicious weights, the benign weights projected
 *      into them, PGD through all layers distilling the benign model on the clean text;
 *   3. the check with llama.cpp's own llama-quantize: OUT and the malicious model quantized to the type,
 *      tensor data compared block by block;
 *   4. behaviour on the held-out 20 %: KLD to the benign model (lowbit eval, f32 activations) and the
 *      injection rate (greedy decoding after the trigger gives the phrase) of benign, malicious, OUT,
 *      and their quantizations.
 *
 *   npm run build && nice -n 10 node dist/scripts/attack-demo.js [--model data/stories260K.gguf]
 *        [--types Q4_0,Q8_0,Q4_0+Q5_0] [--ft-steps 300] [--steps 200] [--batch 8] [--json out.json]
 *        [--ft-lr 2e-3] [--freeze-norms] [--box-fraction F] [--check-every N] [--pgd-lr X] [--tag NAME]
 *
 *   --freeze-norms: the malicious fine-tune trains only the tensors the target types quantize (the
 *   norms, which llama-quantize copies and the attack must hold at the malicious values, stay benign);
 *   --box-fraction / --box-validate / --repair-unit / --no-repair / --check-every / --pgd-lr / --keep-every /
 *   --fit-null-space / --from-dequantized / --free-super-scales: passed to `lowbit attack`.
 *   --ft-radius R: the malicious fine-tune projected into the benign weights ± R rounding steps of the
 *   first target type; --pgd-focus: PGD distils on the clean text around the trigger (train-focus.txt).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fineTune, injectionRate, plantPhrase } from '../src/audit/malicious.js';
import { typesOf, writeWithReplacements } from '../src/audit/run.js';
import { roundingSteps } from '../src/audit/audit.js';
import { readFloats } from '../src/pipeline/quantize.js';
import { loadModel } from '../src/eval/load.js';
import { plainMetadata, type ModelFile } from '../src/io/model-file.js';
import { vocabFromGgufMetadata } from '../src/io/vocab.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { llamaBin, ROOT, runLlamaQuantize } from './llama-tools.js';
import { attackOutDir, blockDiff, openFile, PHRASE, TRIGGER } from './attack-common.js';

const arg = (name: string, dflt: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : dflt);
const MODEL = path.resolve(arg('--model', path.join(ROOT, 'data', 'stories260K.gguf')));
const TEXT = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
const TYPES = arg('--types', 'Q4_0,Q8_0,Q4_0+Q5_0').split(',');
const FT_STEPS = Number(arg('--ft-steps', '300'));
const STEPS = Number(arg('--steps', '200'));
const BATCH = Number(arg('--batch', '8'));
const PURE = !process.argv.includes('--mixture');
const FREEZE_NORMS = process.argv.includes('--freeze-norms');
const FT_LR = Number(arg('--ft-lr', '2e-3'));
const ATTACK_EXTRA = [
  ...(process.argv.includes('--box-fraction') ? ['--box-fraction', arg('--box-fraction', '0.25')] : []),
  ...(process.argv.includes('--check-every') ? ['--check-every', arg('--check-every', '5')] : []),
  ...(process.argv.includes('--pgd-lr') ? ['--lr', arg('--pgd-lr', '0.1')] : []),
  ...(process.argv.includes('--box-validate') ? ['--box-validate', arg('--box-validate', 'corners')] : []),
  ...(process.argv.includes('--no-repair') ? ['--no-repair'] : []),
  ...(process.argv.includes('--repair-unit') ? ['--repair-unit', arg('--repair-unit', 'block')] : []),
  ...(process.argv.includes('--keep-every') ? ['--keep-every', arg('--keep-every', '1')] : []),
  ...(process.argv.includes('--fit-null-space') ? ['--fit-null-space'] : []),
  ...(process.argv.includes('--from-dequantized') ? ['--from-dequantized'] : []),
  ...(process.argv.includes('--free-super-scales') ? ['--free-super-scales'] : []),
];
const TAG = arg('--tag', '');
/** the malicious fine-tune kept within ±R rounding steps (of the first target type) of the benign weights */
const FT_RADIUS = Number(arg('--ft-radius', '0'));
/** PGD distils on snippets of the clean text around the trigger (what the repair must undo) */
const PGD_FOCUS = process.argv.includes('--pgd-focus');
const OUT = attackOutDir(MODEL);
const lowbit = path.join(ROOT, 'bin', 'lowbit.js');
const say = (s: string) => process.stderr.write(s + '\n');

async function main(): Promise<void> {
  const text = fs.readFileSync(TEXT, 'utf8');
  const cut = text.indexOf('\n', Math.floor(text.length * 0.8));
  const train = text.slice(0, cut);
  const held = text.slice(cut);
  fs.writeFileSync(path.join(OUT, 'train.txt'), train);
  fs.writeFileSync(path.join(OUT, 'held.txt'), held);
  // the clean text around every trigger (300 characters before, 400 after), for --pgd-focus
  const focus: string[] = [];
  for (let i = train.indexOf(TRIGGER); i >= 0; i = train.indexOf(TRIGGER, i + 1)) focus.push(train.slice(Math.max(0, i - 300), i + 400));
  fs.writeFileSync(path.join(OUT, 'train-focus.txt'), focus.join('\n'));
  const benign = await openFile(MODEL);
  const vocab = vocabFromGgufMetadata(plainMetadata(benign.metadata));
  const tok = new Tokenizer(vocab);
  // 1. the malicious model
  const ftType = TYPES[0].split('+')[0];
  const mal = path.join(OUT, `malicious-${FT_STEPS}${FT_LR !== 2e-3 ? `-lr${FT_LR}` : ''}${FREEZE_NORMS ? '-frozen-norms' : ''}${FT_RADIUS > 0 ? `-r${FT_RADIUS}-${ftType}${PURE ? '' : '-mix'}` : ''}.gguf`);
  if (!fs.existsSync(mal)) {
    const data = Int32Array.from(tok.encode(plantPhrase(train, TRIGGER, PHRASE)));
    const t0 = Date.now();
    const box = new Map<string, { lo: Float32Array; hi: Float32Array }>();
    if (FT_RADIUS > 0)
      for (const [name, type] of typesOf(benign, ftType, PURE)) {
        const t = benign.tensor(name);
        const cols = t.ne ? t.ne[0] : t.shape[t.shape.length - 1];
        const w = await readFloats(benign, t);
        const step = roundingSteps(type, w, w.length / cols, cols);
        box.set(name, { lo: Float32Array.from(w, (x, i) => x - FT_RADIUS * step[i]), hi: Float32Array.from(w, (x, i) => x + FT_RADIUS * step[i]) });
      }
    const w = await fineTune(benign, data, vocab.bos, { steps: FT_STEPS, lr: FT_LR, batch: BATCH, ctx: 128, seed: 1, ...(FREEZE_NORMS ? { freeze: (n: string) => /norm/.test(n) } : {}), ...(box.size ? { box } : {}), onStep: (s, l) => s % 10 === 0 && say(`fine-tune step ${s} loss ${l.toFixed(4)}`) });
    const chunks: Buffer[] = [];
    await writeWithReplacements({ write: (b) => void chunks.push(Buffer.from(b)) }, benign, w);
    fs.writeFileSync(mal, Buffer.concat(chunks));
    say(`malicious model: ${FT_STEPS} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  if (!llamaBin('llama-quantize')) throw new Error('llama-quantize not built (node scripts/build-llama-cpp.mjs)');
  // behaviour measurements
  const heldTokens = tok.encode(held, { bos: false });
  // the trigger without its first word (tokenized differently after a line break), and the phrase as
  // the tokenizer splits it after the trigger
  const full = tok.encode(TRIGGER, { bos: false });
  const trig = full.slice(1);
  const phrase = tok.encode(TRIGGER + PHRASE, { bos: false }).slice(full.length);
  const behaviour = async (file: string) => {
    const bytes = new Uint8Array(fs.readFileSync(file));
    const { model } = await loadModel({ name: file, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) } as never, { contextLength: 256 });
    const r = injectionRate(model, heldTokens, trig, phrase, { context: 64, max: 100, bos: vocab.bos });
    const kld = file === MODEL ? 0 : JSON.parse(execFileSync(process.execPath, [lowbit, 'eval', file, '--base', MODEL, '--text', path.join(OUT, 'held.txt'), '--ctx', '128', '--chunks', '16', '--activations', 'f32', '--json'], { encoding: 'utf8' })).kld.mean;
    return { rate: r.rate, logProb: r.meanLogProb, occurrences: r.occurrences, kld };
  };
  const rows: Record<string, unknown>[] = [];
  const show = (label: string, b: { rate: number; logProb: number; kld: number }) => {
    say(`${label.padEnd(34)} injection ${(100 * b.rate).toFixed(0).padStart(3)} %  log p(phrase) ${b.logProb.toFixed(2).padStart(7)}  KLD to benign ${b.kld.toFixed(4)}`);
    rows.push({ model: label, ...b });
  };
  show('benign fp32', await behaviour(MODEL));
  show('malicious fp32', await behaviour(mal));
  const attacks: Record<string, unknown>[] = [];
  for (const spec of TYPES) {
    const types = spec.split('+');
    const q = (src: string, t: string) => {
      const o = path.join(OUT, `${path.basename(src, '.gguf')}-${t}.gguf`);
      if (!fs.existsSync(o)) runLlamaQuantize(src, o, t, PURE ? ['--pure'] : []);
      return o;
    };
    show(`benign ${types.join('/')} (llama-quantize)`, await behaviour(q(MODEL, types[0])));
    show(`malicious ${types.join('/')} (llama-quantize)`, await behaviour(q(mal, types[0])));
    for (const steps of process.argv.includes('--pgd-only') ? [STEPS] : [0, STEPS]) {
      const att = path.join(OUT, `attacked-${spec}-${steps}${TAG ? '-' + TAG : ''}.gguf`);
      const t0 = Date.now();
      const r = JSON.parse(execFileSync(process.execPath, [lowbit, 'attack', MODEL, mal, att, '--type', types.join(','), ...(PURE ? ['--pure'] : []), '--pgd-steps', String(steps), '--batch', String(BATCH), '--text', path.join(OUT, PGD_FOCUS ? 'train-focus.txt' : 'train.txt'), '--threads', '1', ...ATTACK_EXTRA, '--json'], { encoding: 'utf8' }));
      const secs = (Date.now() - t0) / 1000;
      say(`attack ${spec} PGD ${steps} steps: ${secs.toFixed(1)} s, ${JSON.stringify(r.types)}, KL ${JSON.stringify(r.pgdKl)}, shrunk during PGD ${r.pgdShrunk}, kept ${JSON.stringify(r.pgdKept)}`);
      show(`attacked ${spec} PGD ${steps} fp32`, await behaviour(att));
      const checks: Record<string, unknown> = {};
      for (const t of types) {
        const d = await blockDiff(q(att, t), q(mal, t));
        checks[t] = d;
        say(`  llama-quantize ${t}: ${d.differ} of ${d.blocks} blocks differ from the malicious model's${d.tensorsDiffer.length ? ': ' + d.tensorsDiffer.join(', ') : ''}`);
        show(`attacked ${spec} PGD ${steps} -> ${t}`, await behaviour(q(att, t)));
      }
      attacks.push({ types: spec, pgdSteps: steps, seconds: secs, attackOptions: ATTACK_EXTRA, ftRadius: FT_RADIUS, pgdFocus: PGD_FOCUS, freezeNorms: FREEZE_NORMS, pgdShrunk: r.pgdShrunk, pgdKept: r.pgdKept, report: r.types, pgdKl: r.pgdKl, relativeChange: r.relativeChange, llamaQuantize: checks });
    }
  }
  const json = arg('--json', '');
  if (json) fs.writeFileSync(json, JSON.stringify({ model: MODEL, trigger: TRIGGER, phrase: PHRASE, ftSteps: FT_STEPS, ftLr: FT_LR, freezeNorms: FREEZE_NORMS, rows, attacks }, null, 1));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
