import * as fs from 'node:fs';
import { fail } from '../../errors.js';
import { openModelFile } from '../../io/model-file.js';
import { memorySink } from '../../io/sink.js';
import { bytesSource } from '../../io/source.js';
import { vocabFromGgufMetadata } from '../../io/vocab.js';
import { plainMetadata } from '../../io/model-file.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { evaluateQuantization } from '../../pipeline/evaluate.js';
import { runQat, writeQatModel } from '../../pipeline/qat.js';
import { QAT_METHODS, type QatMethod } from '../../train/qat.js';
import { NonFiniteLoss } from '../../train/trainer.js';
import type { Command } from '../args.js';
import { refuseSameFile, writeFileAtomic } from '../files.js';
import { fileSource } from '../node-source.js';
import { threadsFrom } from '../threads.js';

export const qatCommand: Command = {
  name: 'qat',
  summary: 'quantization-aware fine-tuning toward a GGML type (GGUF) or a scheme (int-N groups, NVFP4, MXFP4: lowbit safetensors), then write it',
  usage: 'lowbit qat IN.gguf OUT.gguf|OUT.safetensors --type T [--pure | --group G] --text F --steps N [--lr X] [--method ste|dge|lsq [--scale-lr R]] [--loss kd|ce] [--init rtn|gptq --calib F | --init-from Q.gguf] [--seed S] [--eval F] [--save-at N,M]',
  positionals: [2, 2],
  options: [
    { name: 'type', short: 't', type: 'string', help: 'target: a llama.cpp type (Q4_0, Q2_K, Q4_K_M, ...) for .gguf, a scheme (int4, int3, nvfp4, mxfp4, ...) for .safetensors' },
    { name: 'group', type: 'int', help: 'safetensors schemes: elements per scale group (int-N)', min: 1 },
    { name: 'pure', type: 'boolean', help: 'every tensor in --type (no mixture), as llama-quantize --pure', default: false },
    { name: 'text', short: 'f', type: 'string', help: 'UTF-8 training text' },
    { name: 'steps', type: 'int', help: 'optimizer steps', min: 1 },
    { name: 'lr', type: 'number', help: 'peak learning rate (cosine to 0, no weight decay)', default: 5e-4, min: 0 },
    { name: 'warmup', type: 'int', help: 'warm-up steps', default: 0, min: 0 },
    { name: 'method', type: 'string', help: 'gradient through the quantizer: straight-through, DGE, or LSQ (also learns each block\'s scale; Q4_0, Q5_0, Q8_0, Q2_0, Q1_0, IQ4_NL)', default: 'ste', choices: QAT_METHODS },
    { name: 'scale-lr', type: 'number', help: 'LSQ: learning rate of the scales relative to --lr', default: 0.1, min: 0 },
    { name: 'loss', type: 'string', help: 'kd: KL to the original model\'s logits; ce: next-token loss', default: 'kd', choices: ['kd', 'ce'] },
    { name: 'init', type: 'string', help: 'starting point of the quantized weights', default: 'rtn', choices: ['rtn', 'gptq'] },
    { name: 'calib', type: 'string', help: 'calibration text for --init gptq' },
    { name: 'init-from', type: 'string', help: 'start from this GGUF of the target type (e.g. lowbit quantize --algo gptq output): its values and, for LSQ, its scales' },
    { name: 'calib-tokens', type: 'int', help: 'GPTQ calibration tokens', default: 16384, min: 1 },
    { name: 'batch', short: 'b', type: 'int', help: 'sequences per step', default: 8, min: 1 },
    { name: 'ctx', short: 'c', type: 'int', help: 'tokens per sequence', default: 128, min: 2 },
    { name: 'seed', type: 'int', help: 'seed of the batches', default: 1, min: 0 },
    { name: 'eval', type: 'string', help: 'held-out text: PPL and KLD of the result against IN (as llama-perplexity --kl-divergence)' },
    { name: 'eval-chunks', type: 'int', help: 'chunks of 128 tokens for --eval', default: 64, min: 1 },
    { name: 'threads', type: 'int', help: 'threads for the products (default: hardware threads, at most 8; the same bytes on any count)', min: 1, max: 256 },
    { name: 'save-at', type: 'string', help: 'also write the model after these steps (comma-separated) as OUT.stepN.gguf (a KLD-vs-steps curve from one run)' },
    { name: 'json', type: 'boolean', help: 'print one JSON object, no progress', default: false },
  ],
  async run(a) {
    const [input, output] = a.positionals;
    refuseSameFile(input, output);
    const type = a.values.type as string | undefined;
    if (!type) fail('qat needs --type T');
    const textFile = a.values.text as string | undefined;
    if (!textFile) fail('qat needs --text FILE');
    const steps = a.values.steps as number | undefined;
    if (!steps) fail('qat needs --steps N');
    const saveAt = new Set<number>();
    for (const x of ((a.values['save-at'] as string | undefined) ?? '').split(',').filter((x) => x.trim() !== '')) {
      const n = Number(x);
      if (!Number.isInteger(n) || n < 1 || n > steps) fail(`--save-at: ${x} is not a step between 1 and --steps ${steps}`);
      saveAt.add(n);
    }
    const m = await openModelFile(fileSource(input));
    if (!m.gguf) fail(`${input}: qat needs a GGUF model`);
    const vocab = vocabFromGgufMetadata(plainMetadata(m.metadata));
    const tok = new Tokenizer(vocab);
    const data = Int32Array.from(tok.encode(fs.readFileSync(textFile, 'utf8')));
    const json = a.values.json as boolean;
    const tty = !json && process.stderr.isTTY;
    const calib = a.values.calib as string | undefined;
    const container = /\.safetensors$/i.test(output) ? 'safetensors' : /\.gguf$/i.test(output) ? 'gguf' : fail(`output ${output}: QAT writes .gguf (llama.cpp types) or .safetensors (schemes)`);
    if (container === 'safetensors' && a.given.has('pure')) fail('--pure applies to llama.cpp types (GGUF output)');
    const run = await runQat(m, data, vocab.bos, {
      type,
      container,
      groupSize: a.values.group as number | undefined,
      pure: a.values.pure as boolean,
      method: a.values.method as QatMethod,
      loss: a.values.loss as 'kd' | 'ce',
      init: a.values.init as 'rtn' | 'gptq',
      steps,
      lr: a.values.lr as number,
      scaleLr: a.values['scale-lr'] as number,
      warmup: a.values.warmup as number,
      batch: a.values.batch as number,
      ctx: a.values.ctx as number,
      seed: a.values.seed as number,
      threads: threadsFrom(a.values.threads),
      initFrom: a.values['init-from'] ? await openModelFile(fileSource(a.values['init-from'] as string)) : undefined,
      calibText: calib ? fs.readFileSync(calib, 'utf8') : undefined,
      calibTokens: a.values['calib-tokens'] as number,
      onProgress: tty ? (s) => process.stderr.write(`\r${s.slice(0, 78).padEnd(78)}`) : undefined,
    });
    const t = run.trainer;
    await t.model.be.ready?.();
    try {
      while (t.step < steps) {
        const r = t.trainStep();
        if (tty) process.stderr.write(`\rstep ${r.step}/${steps} loss ${r.loss.toFixed(5)} lr ${r.lr.toExponential(2)}   `);
        else if (!json && (r.step % 10 === 0 || r.step === steps)) process.stderr.write(`step ${r.step}/${steps} loss ${r.loss.toFixed(5)}\n`);
        if (saveAt.has(r.step) && r.step < steps) {
          const sink = memorySink();
          await writeQatModel(m, run, sink);
          const at = output.replace(/(\.[^./\\]+)$/, `.step${r.step}$1`);
          writeFileAtomic(at, sink.bytes(), 'output', true); // at once: the run may still be stopped
          if (!json) process.stderr.write(`${tty ? '\n' : ''}step ${r.step}: wrote ${at}\n`);
        }
      }
    } catch (e) {
      if (e instanceof NonFiniteLoss) fail(`${e.message}; no model written`);
      throw e;
    }
    if (tty) process.stderr.write('\n');
    const sink = memorySink();
    const report = await writeQatModel(m, run, sink);
    const bytes = sink.bytes();
    writeFileAtomic(output, bytes);
    const evalFile = a.values.eval as string | undefined;
    let evaluation: { ppl: number; kld?: number; top1?: number } | undefined;
    if (evalFile) {
      const ev = await evaluateQuantization(fileSource(input), bytesSource(bytes, output), fs.readFileSync(evalFile, 'utf8'), { ctx: 128, chunks: a.values['eval-chunks'] as number });
      evaluation = { ppl: ev.ppl, kld: ev.kld.mean, top1: ev.top1 };
    }
    const first = t.history[0]?.loss;
    const last = t.history[t.history.length - 1]?.loss;
    if (json) process.stdout.write(JSON.stringify({ output, type, steps: t.step, firstLoss: first, finalLoss: last, bitsPerWeight: report.bitsPerWeight, bytes: report.bytes, evaluation }) + '\n');
    else
      process.stdout.write(
        `${output}: ${type}${a.values.pure ? ' (pure)' : ''}, ${report.bitsPerWeight.toFixed(3)} bpw, ${t.step} steps of ${a.values.method}/${a.values.loss}: loss ${first?.toFixed(5)} -> ${last?.toFixed(5)}` +
          (evaluation ? `; held-out PPL ${evaluation.ppl.toFixed(4)}, KLD ${evaluation.kld?.toExponential(4)}` : '') + '\n',
      );
  },
};
