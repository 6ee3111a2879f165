import * as fs from 'node:fs';
import * as path from 'node:path';
import { convertHfFolder } from '../../io/hf-families.js';
import { familyOfHfConfig, LLAMA } from '../../model/family.js';
import { fail } from '../../errors.js';
import { convertModel, tokenizerFromGguf, tokenizerFromLlama2c, tokenizerFromVocab, type FloatType } from '../../io/convert.js';
import { parseSentencepieceModel } from '../../io/vocab.js';
import type { GgufValue } from '../../io/gguf.js';
import { openModelFile } from '../../io/model-file.js';
import type { Command } from '../args.js';
import { checkOutput, noteInput, withAtomicFile, writeHfConfigBeside } from '../files.js';
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

/** lowbit convert HF-FOLDER OUT.gguf: config.json, the safetensors (index or single file), tokenizer files */
async function convertFolder(dir: string, output: string, type: FloatType | undefined): Promise<void> {
  const file = (n: string) => path.join(dir, n);
  if (!fs.existsSync(file('config.json'))) fail(`${dir}: no config.json (a Hugging Face folder has config.json, *.safetensors and tokenizer.json or tokenizer.model)`);
  const config = readSiblingConfig(file('config.json'));
  const weights = fs.existsSync(file('model.safetensors.index.json'))
    ? file('model.safetensors.index.json')
    : fs.existsSync(file('model.safetensors'))
      ? file('model.safetensors')
      : (() => {
          const st = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors'));
          if (st.length !== 1) fail(`${dir}: ${st.length === 0 ? 'no .safetensors file' : `${st.length} .safetensors files and no model.safetensors.index.json`}`);
          return file(st[0]);
        })();
  const read = (n: string) => (fs.existsSync(file(n)) ? (noteInput(file(n)), fs.readFileSync(file(n))) : undefined);
  const tokenizer = {
    tokenizerJson: read('tokenizer.json')?.toString('utf8'),
    tokenizerConfig: read('tokenizer_config.json')?.toString('utf8'),
    sentencepiece: (() => {
      const b = read('tokenizer.model');
      return b ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : undefined;
    })(),
  };
  const { model, close } = await openModelPath(weights);
  try {
    const r = await withAtomicFile(output, async (f) => {
      const sink = pipelinedSink(f);
      const res = await convertHfFolder(model, config, sink, { type, tokenizer });
      await sink.flush();
      return res;
    });
    process.stderr.write(`${output}: gguf (${r.arch}), ${r.tensors} tensors\n`);
  } finally {
    close();
  }
}

export const convertCommand: Command = {
  name: 'convert',
  summary: 'convert a model (GGUF, safetensors (+index), llama2.c) to GGUF or safetensors (by OUT extension), streaming and atomic',
  usage: 'lowbit convert IN OUT [--type f32|f16|bf16] [--tokenizer FILE]   (IN may be a Hugging Face folder: config.json + safetensors + tokenizer)',
  positionals: [2, 2],
  options: [
    { name: 'type', type: 'string', help: 'type of 2-D float tensors (1-D stay f32 in GGUF); default: keep', choices: ['f32', 'f16', 'bf16'] },
    { name: 'force', type: 'boolean', help: 'safetensors output: replace a different config.json beside OUT' },
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
    // a llama model written as safetensors gets its config.json beside it (else it cannot be read back)
    const configPath = path.join(path.dirname(output), 'config.json');
    if (to === 'safetensors' && !/\.safetensors$|\.json$/i.test(input)) checkOutput(configPath, 'config.json');
    if (fs.existsSync(input) && fs.statSync(input).isDirectory()) {
      if (to !== 'gguf') fail('a Hugging Face folder converts to GGUF (OUT must end in .gguf)');
      if (tokFile) fail('--tokenizer does not apply to a Hugging Face folder (its tokenizer.json / tokenizer.model is used)');
      await convertFolder(input, output, (a.values.type as string | undefined)?.toUpperCase() as FloatType | undefined);
      return;
    }
    // a checkpoint file of a non-llama family (float or GPTQ/AWQ packed) converts as its folder, by the family converter
    if (to === 'gguf' && !tokFile && /\.safetensors$/i.test(input)) {
      const sibling = readSiblingConfig(input);
      if (typeof sibling === 'object' && sibling !== null && familyOfHfConfig(sibling as Record<string, unknown>) !== LLAMA) {
        await convertFolder(path.dirname(input), output, (a.values.type as string | undefined)?.toUpperCase() as FloatType | undefined);
        return;
      }
    }
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
      const configNote = r.hfConfig ? writeHfConfigBeside(output, r.hfConfig, a.values.force as boolean) : '';
      process.stderr.write(`${output}: ${to}, ${r.tensors} tensors, ${r.bytesWritten} bytes${configNote}\n`);
    } finally {
      close();
    }
  },
};
