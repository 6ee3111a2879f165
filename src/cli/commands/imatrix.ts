import { fail } from '../../errors.js';
import { collectImatrix } from '../../pipeline/imatrix-collect.js';
import { writeImatrix, type ImatrixFormat } from '../../pipeline/imatrix-file.js';
import type { Command } from '../args.js';
import { checkOutput, noteInput, readInputText, withAtomicFile } from '../files.js';
import { loadModelPath } from './generate.js';

export const imatrixCommand: Command = {
  name: 'imatrix',
  summary: 'importance matrix (per-column mean squared activations of every linear layer) as llama-imatrix computes it',
  usage: 'lowbit imatrix MODEL --text FILE [-o imatrix.gguf] [--ctx 512] [--chunks N] [--output-format gguf|dat] [--process-output] [--json]',
  positionals: [1, 1],
  options: [
    { name: 'text', short: 'f', type: 'string', help: 'UTF-8 calibration text' },
    { name: 'output', short: 'o', type: 'string', help: 'output file (llama-imatrix GGUF form, or legacy .dat)', default: 'imatrix.gguf' },
    { name: 'output-format', type: 'string', help: 'file form (default: dat for a .dat name, else gguf)', choices: ['gguf', 'dat'] },
    { name: 'ctx', short: 'c', type: 'int', help: 'tokens per chunk (llama-imatrix -c); every token of a chunk counts', default: 512, min: 2 },
    { name: 'chunks', type: 'int', help: 'process at most this many chunks (default all)', min: 1 },
    { name: 'tokenizer', short: 'z', type: 'string', help: 'tokenizer.bin or tokenizer.model (for llama2.c checkpoints)' },
    { name: 'process-output', type: 'boolean', help: 'also collect output.weight (llama-imatrix --process-output)', default: false },
    { name: 'json', type: 'boolean', help: 'print one JSON object, no progress', default: false },
  ],
  async run(a) {
    const [modelPath] = a.positionals;
    const text = a.values.text as string | undefined;
    if (!text) fail('imatrix needs --text FILE (the calibration text)');
    const out = a.values.output as string;
    const format = ((a.values['output-format'] as string | undefined) ?? (/\.dat$/i.test(out) ? 'dat' : 'gguf')) as ImatrixFormat;
    for (const f of [modelPath, text, a.values.tokenizer as string | undefined]) noteInput(f);
    checkOutput(out, 'output (-o)');
    const ctx = a.values.ctx as number;
    const m = await loadModelPath(modelPath, a.values.tokenizer as string | undefined, { contextLength: ctx, batch: Math.min(ctx, 512) });
    if (!m.tokenizer) fail(`${modelPath} carries no vocabulary: give --tokenizer tokenizer.bin or tokenizer.model`);
    const tokens = m.tokenizer.encode(readInputText(text, 'text (--text)'));
    const json = a.values.json as boolean;
    const tty = !json && process.stderr.isTTY;
    const r = collectImatrix(m.model, tokens, {
      ctx,
      chunks: a.values.chunks as number | undefined,
      bos: m.tokenizer.vocab.bos,
      addBos: m.tokenizer.vocab.addBos,
      processOutput: a.values['process-output'] as boolean,
      dataset: text,
      onChunk: tty ? (done, total, ppl) => process.stderr.write(`\r[${done}/${total}] PPL ${ppl.toFixed(4)}`) : undefined,
    });
    if (tty) process.stderr.write('\n');
    await withAtomicFile(out, (f) => writeImatrix(r.imatrix, format, { write: (b) => f.write(b) }), 'output (-o)');
    const entries = r.imatrix.entries.size;
    if (json) process.stdout.write(JSON.stringify({ output: out, format, entries, chunks: r.chunks, ctx: r.ctx, tokens: r.tokens, ppl: r.ppl, seconds: r.seconds }) + '\n');
    else process.stdout.write(`${out}: ${entries} entries (${format}) from ${r.chunks} chunks of ${r.ctx} tokens (${r.tokens} tokens), PPL ${r.ppl.toFixed(4)}, ${r.seconds.toFixed(1)} s\n`);
  },
};
