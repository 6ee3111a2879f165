import * as fs from 'node:fs';
import * as path from 'node:path';
import { convertModel } from '../../io/convert.js';
import { openModelFile } from '../../io/model-file.js';
import { bytesSource } from '../../io/source.js';
import { fail, LowbitError } from '../../errors.js';
import { readVocab } from '../../io/vocab.js';
import { memorySink } from '../../io/sink.js';
import { Tokenizer } from '../../model/tokenizer.js';
import type { Vocab } from '../../model/types.js';
import { type TrainConfig } from '../../train/llama-grad.js';
import { llamaGgufMetadata, paramTensors, writeLlamaGguf } from '../../io/llama-writer.js';
import { PRECISIONS, type Precision } from '../../train/precision.js';
import { checkpointBytes, DEFAULT_TRAIN, NonFiniteLoss, restoreCheckpoint, Trainer, type TrainOptions } from '../../train/trainer.js';
import type { Command, ParsedArgs } from '../args.js';
import { checkOutput, noteInput, readInputBytes, readInputText, writeFileAtomic, writeHfConfigBeside } from '../files.js';
import { fileSource } from '../node-source.js';
import { threadsFrom } from '../threads.js';
import { trainingReportHtml, type RunCurve } from '../../train/report-html.js';

/** the training losses of a --log file (JSON lines with step and loss) */
function readLossLog(text: string, name: string): number[] {
  const losses: number[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line.trim()) continue;
    let r: { step?: unknown; loss?: unknown };
    try {
      r = JSON.parse(line) as typeof r;
    } catch {
      fail(`${name}: line ${i + 1} is not JSON (--compare takes the --log file of a run)`);
    }
    if (typeof r.loss !== 'number') fail(`${name}: line ${i + 1} has no loss (--compare takes the --log file of a run)`);
    losses.push(r.loss);
  }
  if (!losses.length) fail(`${name}: no steps (--compare takes the --log file of a run)`);
  return losses;
}

const D = DEFAULT_TRAIN;

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a LLaMA model from scratch on a text file (backward pass in WebAssembly SIMD, AdamW), write GGUF or safetensors (+ config.json)',
  usage:
    'lowbit train (--config FILE | --dim D --layers L --heads H [--kv-heads K] --hidden F) --vocab-from TOKENIZER --text F --steps N [--batch B --ctx C --lr X] [--precision P] OUT.gguf|OUT.safetensors',
  positionals: [1, 1],
  options: [
    { name: 'config', type: 'string', help: 'JSON with dim, hidden, layers, heads, kvHeads, ctx (flags override it)' },
    { name: 'dim', type: 'int', help: 'model width', min: 1 },
    { name: 'layers', type: 'int', help: 'transformer blocks', min: 1 },
    { name: 'heads', type: 'int', help: 'attention heads', min: 1 },
    { name: 'kv-heads', type: 'int', help: 'key/value heads (grouped-query attention; default = heads)', min: 1 },
    { name: 'hidden', type: 'int', help: 'SwiGLU width', min: 1 },
    { name: 'tied', type: 'boolean', help: 'share the output layer with the token embedding', default: false },
    { name: 'vocab-from', type: 'string', help: 'tokenizer.model or tokenizer.bin: the vocabulary (its size is the model\'s)' },
    { name: 'text', short: 'f', type: 'string', help: 'UTF-8 training text' },
    { name: 'train-chars', type: 'int', help: 'train on the first N characters of --text; the rest is held out for evaluation', min: 1 },
    { name: 'eval-text', type: 'string', help: 'held-out UTF-8 text for evaluation' },
    { name: 'steps', type: 'int', help: 'optimizer steps', min: 1 },
    { name: 'batch', short: 'b', type: 'int', help: 'sequences per micro-batch', default: D.batch, min: 1 },
    { name: 'ctx', short: 'c', type: 'int', help: 'tokens per sequence', default: D.ctx, min: 2 },
    { name: 'model-ctx', type: 'int', help: 'context length written into the model (default --ctx)', min: 2 },
    { name: 'accum', type: 'int', help: 'micro-batches accumulated per step', default: D.accum, min: 1 },
    { name: 'lr', type: 'number', help: 'peak learning rate', default: D.lr, min: 0 },
    { name: 'min-lr-ratio', type: 'number', help: 'final lr as a fraction of --lr', default: D.minLrRatio, min: 0, max: 1 },
    { name: 'warmup', type: 'int', help: 'linear warm-up steps', default: 0, min: 0 },
    { name: 'schedule', type: 'string', help: 'learning-rate schedule after warm-up', default: D.schedule, choices: ['cosine', 'linear', 'constant'] },
    { name: 'wd', type: 'number', help: 'AdamW weight decay (matrices only)', default: D.weightDecay, min: 0 },
    { name: 'clip', type: 'number', help: 'clip the global gradient norm (0 = off)', default: D.clip, min: 0 },
    { name: 'beta2', type: 'number', help: 'Adam beta2', default: D.beta2, min: 0, max: 0.999999 },
    { name: 'seed', type: 'int', help: 'seed of initialization and batches', default: D.seed, min: 0 },
    { name: 'precision', type: 'string', help: 'arithmetic of the linear layers', default: 'fp32', choices: PRECISIONS },
    { name: 'checkpoint-activations', type: 'boolean', help: 'keep only layer inputs, recompute the rest in the backward pass', default: false },
    { name: 'checkpoint', type: 'string', help: 'write a resumable checkpoint here (atomically) every --checkpoint-every steps and at the end' },
    { name: 'checkpoint-every', type: 'int', help: 'steps between checkpoints', default: 100, min: 1 },
    { name: 'resume', type: 'string', help: 'continue from this checkpoint (same model and options)' },
    { name: 'stop-at', type: 'int', help: 'stop after this step (the schedule still spans --steps; resume later)', min: 0 },
    { name: 'eval-every', type: 'int', help: 'evaluate the held-out loss every N steps (0 = only at the end)', default: 0, min: 0 },
    { name: 'eval-chunks', type: 'int', help: 'held-out chunks of --ctx tokens per evaluation', default: 64, min: 1 },
    { name: 'log', type: 'string', help: 'write the loss curve (JSON lines per step) here' },
    { name: 'report', type: 'string', help: 'write an HTML page: loss vs step of this run (and of the --compare runs) and a table of final losses' },
    { name: 'compare', type: 'string', repeatable: true, help: 'with --report: the --log file of another run, drawn beside this one' },
    { name: 'threads', type: 'int', help: 'threads for the products (default: hardware threads, at most 8; the same bytes on any count)', min: 1, max: 256 },
    { name: 'json', type: 'boolean', help: 'print one JSON object at the end, no progress', default: false },
  ],
  async run(a) {
    const out = a.positionals[0];
    // validate everything, then write: inputs noted, outputs checked before training
    const ckpt = a.values.checkpoint as string | undefined;
    const resume = a.values.resume as string | undefined;
    const logFile = a.values.log as string | undefined;
    for (const f of [a.values.text, a.values['eval-text'], a.values.config, a.values['vocab-from']] as (string | undefined)[]) noteInput(f);
    // resuming from the checkpoint that is written again is fine (it is read whole first); anything else is not
    const resumeIsCheckpoint = !!resume && !!ckpt && sameFile(resume, ckpt);
    if (resume && !resumeIsCheckpoint) noteInput(resume);
    const toSafetensors = /\.safetensors$/i.test(out);
    if (!toSafetensors && !/\.gguf$/i.test(out)) fail(`output ${out}: extension must be .gguf or .safetensors`);
    checkOutput(out, 'output');
    if (toSafetensors) checkOutput(path.join(path.dirname(out), 'config.json'), 'config.json');
    if (ckpt) checkOutput(ckpt, 'checkpoint (--checkpoint)');
    if (logFile) checkOutput(logFile, 'log (--log)');
    const reportFile = a.values.report as string | undefined;
    const compare = a.repeated.filter(([n]) => n === 'compare').map(([, v]) => v);
    for (const f of compare) noteInput(f);
    if (compare.length && !reportFile) fail('--compare needs --report FILE');
    if (reportFile) checkOutput(reportFile, 'report (--report)');
    const compared: RunCurve[] = compare.map((f) => ({ label: path.basename(f).replace(/\.[^.]*$/, ''), losses: readLossLog(readInputText(f, 'run log (--compare)'), f) }));
    const { config, vocab } = await modelConfig(a);
    const tok = new Tokenizer(vocab);
    const textFile = a.values.text as string | undefined;
    if (!textFile) fail('train needs --text FILE');
    const text = readInputText(textFile, 'training text (--text)');
    const trainChars = a.values['train-chars'] as number | undefined;
    const trainText = trainChars ? text.slice(0, trainChars) : text;
    const evalFile = a.values['eval-text'] as string | undefined;
    const evalText = evalFile ? readInputText(evalFile, 'held-out text (--eval-text)') : trainChars ? text.slice(trainChars) : '';
    const data = Int32Array.from(tok.encode(trainText));
    const held = evalText ? Int32Array.from(tok.encode(evalText)) : undefined;
    const steps = a.values.steps as number | undefined;
    if (!steps) fail('train needs --steps N');
    const opts: TrainOptions = {
      ...D,
      steps,
      batch: a.values.batch as number,
      ctx: a.values.ctx as number,
      accum: a.values.accum as number,
      lr: a.values.lr as number,
      minLrRatio: a.values['min-lr-ratio'] as number,
      warmup: a.values.warmup as number,
      schedule: a.values.schedule as TrainOptions['schedule'],
      weightDecay: a.values.wd as number,
      clip: a.values.clip as number,
      beta2: a.values.beta2 as number,
      seed: a.values.seed as number,
      precision: a.values.precision as Precision,
      checkpointActivations: a.values['checkpoint-activations'] as boolean,
      bos: vocab.bos,
      threads: threadsFrom(a.values.threads),
    };
    if (data.length < opts.ctx + 1) fail(`the training text has ${data.length} tokens, fewer than one sequence of --ctx ${opts.ctx} + 1`);
    if (held && held.length < opts.ctx) fail(`the held-out text has ${held.length} tokens, fewer than one chunk of --ctx ${opts.ctx}`);
    const t = new Trainer(config, opts, data);
    await t.model.be.ready?.();
    if (resume) restoreCheckpoint(t, readInputBytes(resume, 'checkpoint (--resume)', !resumeIsCheckpoint), resume);
    const ckptEvery = a.values['checkpoint-every'] as number;
    const evalEvery = a.values['eval-every'] as number;
    const evalChunks = a.values['eval-chunks'] as number;
    const json = a.values.json as boolean;
    const tty = !json && process.stderr.isTTY;
    const log: string[] = [];
    const t0 = performance.now();
    const startStep = t.step;
    try {
      const stopAt = Math.min(steps, (a.values['stop-at'] as number | undefined) ?? steps);
      while (t.step < stopAt) {
        const r = t.trainStep();
        let line = `step ${r.step}/${steps} loss ${r.loss.toFixed(4)} lr ${r.lr.toExponential(2)} |g| ${r.gradNorm.toFixed(3)}`;
        if (held && evalEvery > 0 && r.step % evalEvery === 0 && r.step < steps) {
          const h = t.evaluate(held, evalChunks);
          t.evals.push({ step: r.step, loss: h });
          line += ` held-out ${h.toFixed(4)}`;
        }
        log.push(JSON.stringify(r));
        if (tty) {
          const tps = ((r.step - startStep) * opts.batch * opts.ctx * opts.accum) / ((performance.now() - t0) / 1000);
          process.stderr.write(`\r${line} ${tps.toFixed(0)} tok/s   `);
        } else if (!json && (r.step % 10 === 0 || r.step === steps)) process.stderr.write(line + '\n');
        // a checkpoint is renamed into place at once: it must outlive a run killed later
        if (ckpt && r.step % ckptEvery === 0 && r.step < steps) writeFileAtomic(ckpt, checkpointBytes(t), 'checkpoint (--checkpoint)', true);
      }
    } catch (e) {
      if (e instanceof NonFiniteLoss) {
        if (tty) process.stderr.write('\n');
        fail(`${e.message}${ckpt && fs.existsSync(ckpt) ? `; the last good checkpoint is ${ckpt}` : ''}; no model written`);
      }
      throw e;
    }
    if (tty) process.stderr.write('\n');
    const seconds = (performance.now() - t0) / 1000;
    let heldOut: number | undefined;
    if (held) {
      heldOut = t.evaluate(held, evalChunks);
      t.evals.push({ step: t.step, loss: heldOut });
    }
    if (ckpt) writeFileAtomic(ckpt, checkpointBytes(t), 'checkpoint (--checkpoint)');
    if (logFile) writeFileAtomic(logFile, log.join('\n') + '\n', 'log (--log)');
    if (reportFile) {
      const self: RunCurve = { label: path.basename(out).replace(/\.[^.]*$/, ''), losses: t.history.map((r) => r.loss), heldOut: t.evals[t.evals.length - 1]?.loss, extra: { precision: opts.precision } };
      writeFileAtomic(reportFile, trainingReportHtml(`lowbit train: ${self.label}`, [self, ...compared], Math.max(1, Math.min(10, Math.floor(t.history.length / 10)))), 'report (--report)');
    }
    const sink = memorySink();
    await writeLlamaGguf(sink, llamaGgufMetadata(config, vocab, `lowbit-train-${config.dim}x${config.nLayers}`), paramTensors(t.model.tensors, t.model.params));
    if (toSafetensors) {
      // the same tensors in Hugging Face's names and row order, with config.json beside them
      const st = memorySink();
      const r = await convertModel(await openModelFile(bytesSource(sink.bytes(), out)), st, { to: 'safetensors' });
      writeFileAtomic(out, st.bytes(), 'output');
      if (r.hfConfig) writeHfConfigBeside(out, r.hfConfig, true);
    } else writeFileAtomic(out, sink.bytes(), 'output');
    const last = t.history[t.history.length - 1];
    const tokensPerSecond = ((t.step - startStep) * opts.batch * opts.ctx * opts.accum) / seconds;
    const result = { output: out, steps: t.step, loss: last?.loss, heldOut, tokensPerSecond, seconds, params: t.model.params.length, precision: opts.precision, backend: t.model.be.name, threads: t.model.be.threads ?? 1 };
    t.close();
    if (json) process.stdout.write(JSON.stringify(result) + '\n');
    else
      process.stdout.write(
        `${out}: ${result.params} parameters, ${t.step} steps, final loss ${last?.loss.toFixed(4)}${heldOut !== undefined ? `, held-out loss ${heldOut.toFixed(4)} (PPL ${Math.exp(heldOut).toFixed(3)})` : ''}, ${tokensPerSecond.toFixed(0)} tokens/s\n`,
      );
  },
};

function sameFile(a: string, b: string): boolean {
  try {
    const x = fs.statSync(a);
    const y = fs.statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

async function modelConfig(a: ParsedArgs): Promise<{ config: TrainConfig; vocab: Vocab }> {
  const file = a.values.config as string | undefined;
  let base: Record<string, unknown> = {};
  if (file) {
    try {
      base = JSON.parse(readInputText(file, '--config')) as Record<string, unknown>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code || e instanceof LowbitError) throw e;
      fail(`--config ${file} is not valid JSON`);
    }
    const known = new Set(['dim', 'hidden', 'layers', 'heads', 'kvHeads', 'ctx', 'tied', 'ropeTheta', 'normEps', 'vocabSize']);
    for (const k of Object.keys(base)) if (!known.has(k)) fail(`--config ${file}: unknown key '${k}' (${[...known].join(', ')})`);
  }
  const pick = (flag: string, key: string): number | undefined => (a.given.has(flag) ? (a.values[flag] as number) : (base[key] as number | undefined));
  const dim = pick('dim', 'dim');
  const layers = pick('layers', 'layers');
  const heads = pick('heads', 'heads');
  const hidden = pick('hidden', 'hidden');
  if (dim === undefined || layers === undefined || heads === undefined || hidden === undefined) fail('train needs the model shape: --dim, --layers, --heads and --hidden (or --config FILE)');
  const kvHeads = pick('kv-heads', 'kvHeads') ?? heads;
  const vf = a.values['vocab-from'] as string | undefined;
  if (!vf) fail('train needs --vocab-from TOKENIZER (tokenizer.model or tokenizer.bin)');
  const vocab = await readVocab(fileSource(vf));
  if (base.vocabSize !== undefined && base.vocabSize !== vocab.tokens.length) fail(`--config says vocabSize ${String(base.vocabSize)} but ${vf} has ${vocab.tokens.length} tokens`);
  if (dim % heads !== 0) fail(`--heads ${heads} does not divide --dim ${dim}`);
  const headDim = dim / heads;
  const ctx = a.values.ctx as number;
  const config: TrainConfig = {
    dim,
    hiddenDim: hidden,
    nLayers: layers,
    nHeads: heads,
    nKvHeads: kvHeads,
    vocabSize: vocab.tokens.length,
    seqLen: (a.values['model-ctx'] as number | undefined) ?? (base.ctx as number | undefined) ?? ctx,
    headDim,
    normEps: (base.normEps as number | undefined) ?? 1e-5,
    ropeTheta: (base.ropeTheta as number | undefined) ?? 10000,
    ropeDim: headDim,
    ropeStyle: 'normal',
    tiedOutput: a.given.has('tied') ? (a.values.tied as boolean) : ((base.tied as boolean | undefined) ?? false),
  };
  return { config, vocab };
}

