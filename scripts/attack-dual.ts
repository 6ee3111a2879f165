/**
 * A quantization-conditioned attack on a K-quant without boxes (issue 16, goal 1): train one set of f32
 * weights with two losses at once,
 *
 *   full precision:  KL(benign || model(w)) on clean text             (looks like the benign model)
 *   quantized:       next-token loss of model(Q(w)) on text with the phrase planted after the trigger
 *                    (Q = the target type's exact quantize/dequantize, byte-identical to llama-quantize;
 *                    gradients straight through Q)
 *
 * summed (the quantized loss weighted by --lambda), AdamW on w, starting from the benign model. Q is
 * recomputed from w before every quantized pass (so K-quant scales and minima are the search's own
 * choice for the current w: no box to hold), and the file llama-quantize makes from the result is, by
 * construction, the model the quantized loss trained. Measured: injection rate and KLD to the benign
 * model of the result in f32 and after llama-quantize, on the held-out 20 % (as scripts/attack-demo.ts).
 *
 *   npm run build && nice node dist/scripts/attack-dual.js [--model data/tinyllama256.gguf] [--type Q4_K_M]
 *       [--steps 100] [--batch 4] [--lr 5e-4] [--lambda 1] [--threads 1] [--tag NAME]
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { injectionRate, plantPhrase } from '../src/audit/malicious.js';
import { writeWithReplacements } from '../src/audit/run.js';
import { loadModel } from '../src/eval/load.js';
import { plainMetadata, type ModelFile } from '../src/io/model-file.js';
import { vocabFromGgufMetadata } from '../src/io/vocab.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { llamaRecipe } from '../src/algos/recipe.js';
import { planQuantization } from '../src/pipeline/quantize.js';
import { ggmlWeightCodec, loadTrainParams, trainConfigOf } from '../src/pipeline/qat.js';
import { Qat, distillationLoss, type WeightCodec } from '../src/train/qat.js';
import { Rng, sampleBatch } from '../src/train/data.js';
import { referenceBackend, wasmBackend, type Vec } from '../src/train/gemm.js';
import { TrainModel, trainModelFloats } from '../src/train/llama-grad.js';
import { DEFAULT_TRAIN, Trainer } from '../src/train/trainer.js';
import { ROOT, runLlamaQuantize } from './llama-tools.js';
import { attackOutDir, openFile, PHRASE, TRIGGER } from './attack-common.js';

const arg = (name: string, dflt: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : dflt);
const MODEL = path.resolve(arg('--model', path.join(ROOT, 'data', 'tinyllama256.gguf')));
const TYPE = arg('--type', 'Q4_K_M');
const STEPS = Number(arg('--steps', '100'));
const BATCH = Number(arg('--batch', '4'));
const LR = Number(arg('--lr', '5e-4'));
const LAMBDA = Number(arg('--lambda', '1'));
const THREADS = Number(arg('--threads', '1'));
const TAG = arg('--tag', '');
const CTX = 128;
const OUT = attackOutDir(MODEL);
const lowbit = path.join(ROOT, 'bin', 'lowbit.js');
const say = (s: string) => process.stderr.write(s + '\n');

async function main(): Promise<void> {
  const text = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8');
  const cut = text.indexOf('\n', Math.floor(text.length * 0.8));
  const train = text.slice(0, cut);
  const held = text.slice(cut);
  fs.writeFileSync(path.join(OUT, 'held.txt'), held);
  const benign = await openFile(MODEL);
  const vocab = vocabFromGgufMetadata(plainMetadata(benign.metadata));
  const tok = new Tokenizer(vocab);
  const clean = Int32Array.from(tok.encode(train));
  const injected = Int32Array.from(tok.encode(plantPhrase(train, TRIGGER, PHRASE)));
  const config = trainConfigOf(benign, CTX);
  const plan = planQuantization(benign, llamaRecipe(TYPE, { pure: true }), 'gguf');
  const codecs = new Map<string, WeightCodec>();
  let extra = 0;
  for (const p of plan.tensors)
    if (p.ne.length === 2 && p.ggml && p.ggml.blockSize > 1) {
      codecs.set(p.name, ggmlWeightCodec(p.ggml));
      extra += p.ne[0] * p.ne[1] + 16;
    }
  const t = new Trainer(config, { ...DEFAULT_TRAIN, steps: STEPS, lr: LR, batch: BATCH, ctx: CTX, seed: 1, warmup: 0, weightDecay: 0, minLrRatio: 0.1, bos: vocab.bos, extraFloats: extra, threads: THREADS }, clean);
  const m = t.model;
  await m.be.ready?.();
  const original = await loadTrainParams(m, benign);
  const mo = { batch: BATCH, ctx: CTX };
  const teacher = new TrainModel(config, wasmBackend(trainModelFloats(config, mo), THREADS) ?? referenceBackend('f32'), mo);
  await teacher.be.ready?.();
  for (const [name, v] of original) teacher.view(name).set(v);
  const qat = new Qat(m, codecs, 'ste');
  const overrides = new Map<string, Vec>(qat.quantized);
  const rngClean = new Rng(11);
  const rngInj = new Rng(12);
  const t0 = Date.now();
  for (let step = 0; step < STEPS; step++) {
    m.zeroGrads();
    // full precision: distil the benign model on clean text
    m.weightOverride.clear();
    const b = sampleBatch(clean, BATCH, CTX, rngClean, vocab.bos);
    m.forward(b.tokens, b.targets);
    teacher.forward(b.tokens, b.targets);
    const kl = distillationLoss(m.logits(), teacher.logits(), m.logitGrads(), b.targets, config.vocabSize);
    m.backward();
    // quantized: learn the planted phrase through Q (straight through)
    qat.refresh();
    for (const [n, v] of overrides) m.weightOverride.set(n, v);
    const bi = sampleBatch(injected, BATCH, CTX, rngInj, vocab.bos);
    const ce = m.forward(bi.tokens, bi.targets);
    const g = m.logitGrads();
    for (let i = 0; i < g.length; i++) g[i] *= LAMBDA;
    m.backward();
    m.weightOverride.clear();
    for (let i = 0; i < m.grads.length; i++) if (!Number.isFinite(m.grads[i])) throw new Error(`non-finite gradient at step ${step + 1}`);
    t.optim.step(m.params, m.grads);
    if ((step + 1) % 10 === 0 || step === 0) say(`step ${step + 1}/${STEPS}: fp KL to benign ${kl.toFixed(4)}, quantized CE on planted text ${ce.toFixed(4)} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  teacher.be.close?.();
  const weights = new Map(m.tensors.map((p) => [p.name, Float32Array.from(m.view(p.name))]));
  t.close();
  const att = path.join(OUT, `dual-${TYPE}-${STEPS}-lr${LR}-l${LAMBDA}${TAG ? '-' + TAG : ''}.gguf`);
  const chunks: Buffer[] = [];
  await writeWithReplacements({ write: (b) => void chunks.push(Buffer.from(b)) }, benign, weights);
  fs.writeFileSync(att, Buffer.concat(chunks));
  const attQ = att.replace(/\.gguf$/, `-${TYPE}.gguf`);
  runLlamaQuantize(att, attQ, TYPE, ['--pure']);
  const benQ = path.join(OUT, `${path.basename(MODEL, '.gguf')}-${TYPE}.gguf`);
  if (!fs.existsSync(benQ)) runLlamaQuantize(MODEL, benQ, TYPE, ['--pure']);
  // behaviour on the held-out 20 %
  const heldTokens = tok.encode(held, { bos: false });
  const full = tok.encode(TRIGGER, { bos: false });
  const trig = full.slice(1);
  const phrase = tok.encode(TRIGGER + PHRASE, { bos: false }).slice(full.length);
  const rows: Record<string, unknown>[] = [];
  for (const [label, file] of [['benign fp32', MODEL], [`benign ${TYPE} (llama-quantize)`, benQ], ['dual-trained fp32', att], [`dual-trained ${TYPE} (llama-quantize)`, attQ]] as const) {
    const bytes = new Uint8Array(fs.readFileSync(file));
    const { model } = await loadModel({ name: file, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) } as never, { contextLength: 256 });
    const r = injectionRate(model, heldTokens, trig, phrase, { context: 64, max: 100, bos: vocab.bos });
    const kld = file === MODEL ? 0 : JSON.parse(execFileSync(process.execPath, [lowbit, 'eval', file, '--base', MODEL, '--text', path.join(OUT, 'held.txt'), '--ctx', '128', '--chunks', '16', '--activations', 'f32', '--json'], { encoding: 'utf8' })).kld.mean;
    say(`${label.padEnd(36)} injection ${(100 * r.rate).toFixed(0).padStart(3)} % (${r.occurrences})  log p(phrase) ${r.meanLogProb.toFixed(2).padStart(7)}  KLD to benign ${kld.toFixed(4)}`);
    rows.push({ model: label, rate: r.rate, occurrences: r.occurrences, logProb: r.meanLogProb, kld });
  }
  const json = arg('--json', '');
  if (json) fs.writeFileSync(json, JSON.stringify({ model: MODEL, type: TYPE, steps: STEPS, batch: BATCH, lr: LR, lambda: LAMBDA, seconds: (Date.now() - t0) / 1000, rows }, null, 1));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
