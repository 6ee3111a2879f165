import * as fs from 'node:fs';
import { fail } from '../../errors.js';
import { convertModel, tokenizerFromGguf, tokenizerFromLlama2c, tokenizerFromVocab, type FloatType } from '../../io/convert.js';
import { parseSentencepieceModel } from '../../io/vocab.js';
import type { GgufValue } from '../../io/gguf.js';
import { openModelFile } from '../../io/model-file.js';
import type { Command } from '../args.js';
import { checkOutput, noteInput, withAtomicFile } from '../files.js';
import { openModelPath, pipelinedSink, readSiblingConfig } from '../model-open.js';
import { fileSource } from '../node-source.js';

async function loadTokenizer(file: string, vocabSize: number): Promise<[string, GgufValue][]> {
  const src = fileSource(file);
  try {
    const head = await src.read(0, Math.min(4, src.size));
    if (head.length === 4 && String.fromCharCode(...head) === 'GGUF') {
      const m = await openModelFile(src);
      const tok = tokenizerFromGguf(m.gguf!.metadata);
      if (!tok.length) fail(`${file}: GGUF has no tokenizer.* metadata`);
      return tok;
    }
    if (/\.model$/i.test(file)) return tokenizerFromVocab(parseSentencepieceModel(await src.read(0, src.size), file));
    const t = tokenizerFromLlama2c(await src.read(0, src.size), vocabSize, file);
    return [...t.head, ...t.special];
  } finally {
    src.close();
  }
}

export const convertCommand: Command = {
  name: 'convert',
  summary: 'convert a model (GGUF, safetensors (+index), llama2.c) to GGUF or safetensors (by OUT extension), streaming and atomic',
  usage: 'lowbit convert IN OUT [--type f32|f16|bf16] [--tokenizer FILE]',
  positionals: [2, 2],
  options: [
    { name: 'type', type: 'string', help: 'type of 2-D float tensors (1-D stay f32 in GGUF); default: keep', choices: ['f32', 'f16', 'bf16'] },
    { name: 'tokenizer', type: 'string', help: 'embed this tokenizer in a GGUF output: llama2.c tokenizer.bin, sentencepiece .model, or a GGUF (tokenizer.* copied)' },
  ],
  async run(a) {
    const [input, output] = a.positionals;
    const to = /\.gguf$/i.test(output) ? 'gguf' : /\.safetensors$/i.test(output) ? 'safetensors' : fail(`output ${output}: extension must be .gguf or .safetensors`);
    const tokFile = a.values.tokenizer as string | undefined;
    if (tokFile && to !== 'gguf') fail('--tokenizer only applies to GGUF output');
    noteInput(input);
    noteInput(tokFile);
    checkOutput(output, 'output');
    const { model, close } = await openModelPath(input);
    try {
      const embd = model.tensors.find((t) => t.name === 'token_embd.weight' || t.name === 'model.embed_tokens.weight');
      const vocabSize = embd?.shape[0] ?? 0;
      const tokenizer = tokFile ? await loadTokenizer(tokFile, vocabSize) : undefined;
      const tokens = tokenizer?.find(([k]) => k === 'tokenizer.ggml.tokens')?.[1];
      const nTokens = tokens && typeof tokens === 'object' && 'value' in tokens ? (tokens.value as { values: unknown[] }).values.length : undefined;
      if (nTokens !== undefined && vocabSize > 0 && nTokens !== vocabSize) fail(`--tokenizer ${tokFile} has ${nTokens} tokens, but the model's vocabulary is ${vocabSize}: give the model's own tokenizer`);
      const type = (a.values.type as string | undefined)?.toUpperCase() as FloatType | undefined;
      const hfConfig = model.format === 'safetensors' ? readSiblingConfig(input) : undefined;
      const r = await withAtomicFile(output, async (f) => {
        const sink = pipelinedSink(f);
        const res = await convertModel(model, sink, { to, type, tokenizer, hfConfig });
        await sink.flush();
        return res;
      });
      process.stderr.write(`${output}: ${to}, ${r.tensors} tensors, ${r.bytesWritten} bytes\n`);
    } finally {
      close();
    }
  },
};
