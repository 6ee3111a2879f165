import { fail } from '../../errors.js';
import { generate } from '../../eval/generate.js';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadModel, type LoadedModel, type LoadModelOptions } from '../../eval/load.js';
import { isLowbitSafetensors } from '../../eval/load-lowbit.js';
import { sniffFormat } from '../../io/model-file.js';
import type { Command } from '../args.js';
import { openModelSource, readSiblingConfig } from '../model-open.js';
import { fileSet } from '../node-source.js';
import { threadsFrom, threadsOption } from '../threads.js';
import type { KvCacheOptions } from '../../model/kv/cache.js';
import { collectKvSamples } from '../../eval/kv-calibrate.js';
import { noteInput, readInputText } from '../files.js';
import { KV_CACHE_TYPES, parseKvCacheType } from '../../model/kv/types.js';
import { collectKvGrads } from '../../eval/kv-calibrate.js';
import type { KvQuantWeighting } from '../../model/kv/kvquant.js';
import { openModelFile } from '../../io/model-file.js';
import { loadTrainParams, trainConfigOf } from '../../pipeline/qat.js';
import { referenceBackend, wasmBackend } from '../../train/gemm.js';
import { TrainModel, trainModelFloats } from '../../train/llama-grad.js';

/**
 * Load a model file for the runtime. A safetensors checkpoint takes config.json from its folder, and
 * tokenizer.model from there too when no tokenizer is given.
 */
export async function loadModelPath(file: string, tokenizer: string | undefined, opts: Omit<LoadModelOptions, 'tokenizer' | 'hfConfig'>): Promise<LoadedModel> {
  const files = fileSet();
  const open = files.open;
  let keepOpen = false;
  try {
    const src = await openModelSource(open, file); // a split GGUF: all its parts
    const format = await sniffFormat(src); // (reports a damaged file as what it is named and looks like)
    const safetensors = format === 'safetensors';
    // --activations default: llama.cpp's rounding for the files llama.cpp runs (GGUF), f32 for the others
    const isGgufFile = format === 'gguf';
    if (opts.activations === undefined) opts = { ...opts, activations: isGgufFile ? 'ggml' : 'f32' };
    const hfConfig = safetensors ? readSiblingConfig(file) : undefined;
    // lowbit's own safetensors carry their hyper-parameters; Hugging Face checkpoints need config.json
    if (safetensors && hfConfig === undefined && !(await isLowbitSafetensors(src))) fail(`${file}: a safetensors checkpoint needs config.json in the same folder`);
    const sibling = join(dirname(file), 'tokenizer.model');
    const tok = tokenizer ?? (safetensors && existsSync(sibling) ? sibling : undefined);
    const m = await loadModel(src, { ...opts, hfConfig, tokenizer: tok ? open(tok) : undefined });
    // lazyEmbedding: the model reads token_embd rows from its file while it runs (closed at exit)
    if (opts.lazyEmbedding && m.model.weights.tokenEmbedding.fill) keepOpen = true;
    return m;
  } finally {
    if (!keepOpen) files.close();
  }
}

/** --activations: how linear layers multiply (shared by eval and generate) */
export const activationsOption = {
  name: 'activations',
  type: 'string',
  choices: ['ggml', 'f32'],
  help: "ggml (the default for GGUF files): as llama.cpp's CPU backend, linear-layer inputs rounded to the weight type's vec_dot type (Q8_0/Q8_K/F16) and integer dot products on the stored blocks; f32 (the default for other files): float activations",
} as const;

/** -ctk / -ctv / --kv-residual: the KV cache types (shared by eval and generate) */
export const kvCacheOptions = [
  { name: 'cache-type-k', short: 'ctk', type: 'string', default: 'f32', help: `key cache type: ${KV_CACHE_TYPES.join(', ')}, or rot-<type> (a Hadamard rotation of each head first)` },
  { name: 'cache-type-v', short: 'ctv', type: 'string', default: 'f32', help: 'value cache type (as --cache-type-k)' },
  { name: 'kvquant-weights', type: 'string', choices: ['fisher', 'magnitude', 'none'], default: 'fisher', help: "kvquant caches: how the k-means weighs each calibration entry: fisher (KVQuant's: its squared loss gradient, from a backward pass over --calib; GGUF llama models), magnitude (its squared value), none (plain k-means)" },
  { name: 'kv-residual', type: 'int', min: 0, help: 'KIVI caches: the most recent positions kept in f32 until a chunk of this many fills (a multiple of 32, of G for kivi<b>g<G> keys; default 32 or G); 0: none, every position quantized when written (a partial key group re-quantized as it grows)' },
] as const;

/** --calib for generate (eval declares its own, shared with --act flexq) */
export const kvCalibOption = { name: 'calib', type: 'string', help: 'calibration text for KV caches fitted to activations (kvquant3, kvquant4)' } as const;

/**
 * The runtime's KV cache options from the parsed flags (a bad type is an error before the model loads).
 * KVQuant types run the model once with its f32 cache over --calib (4 chunks of the context) first.
 */
export async function kvCacheFrom(values: Record<string, unknown>, model: string, tokenizer: string | undefined, ctx: number | undefined): Promise<KvCacheOptions> {
  const o: KvCacheOptions = { k: values['cache-type-k'] as string, v: values['cache-type-v'] as string, residual: values['kv-residual'] as number | undefined };
  const types = [parseKvCacheType(o.k!), parseKvCacheType(o.v!)];
  const calib = values.calib as string | undefined;
  if (calib !== undefined) noteInput(calib);
  if (calib === undefined || !types.some((t) => t.family === 'kvquant')) return o;
  const m = await loadModelPath(model, tokenizer, { contextLength: ctx, batch: ctx === undefined ? undefined : Math.min(ctx, 512) });
  if (!m.tokenizer) fail(`${model} carries no vocabulary: give --tokenizer to read --calib`);
  const c = Math.min(ctx ?? 512, m.model.kv.capacity);
  const tokens = m.tokenizer.encodeAtLeast(readInputText(calib, 'calibration text (--calib)'), 4 * c);
  const chunking = { ctx: c, chunks: 4, bos: m.tokenizer.vocab.bos, addBos: m.tokenizer.vocab.addBos };
  const samples = collectKvSamples(m.model, tokens, chunking);
  const weighting = (values['kvquant-weights'] as KvQuantWeighting | undefined) ?? 'fisher';
  if (weighting !== 'fisher') return { ...o, calibration: { ...samples, weighting } };
  const grads = await kvGradients(model, tokens, chunking);
  return { ...o, calibration: { ...samples, weighting, keyGrads: grads.keys, valueGrads: grads.values } };
}

/** KVQuant's Fisher weights: the loss gradients of keys and values over the calibration chunks, from the training model's backward pass. */
async function kvGradients(file: string, tokens: ArrayLike<number>, chunking: { ctx: number; chunks: number; bos: number; addBos: boolean }): Promise<{ keys: Float32Array[]; values: Float32Array[] }> {
  const files = fileSet();
  try {
    const src = await openModelSource(files.open, file);
    if ((await sniffFormat(src)) !== 'gguf') fail(`${file}: kvquant's Fisher weights need a GGUF llama model (its backward pass); give --kvquant-weights magnitude`);
    const mf = await openModelFile(src);
    if (!mf.gguf) fail(`${file}: kvquant's Fisher weights need a GGUF llama model (its backward pass); give --kvquant-weights magnitude`);
    let config: ReturnType<typeof trainConfigOf>;
    try {
      config = trainConfigOf(mf, chunking.ctx);
    } catch {
      fail(`${file}: kvquant's Fisher weights need the backward pass of a llama model with normal RoPE; give --kvquant-weights magnitude`);
    }
    const mo = { batch: 1, ctx: chunking.ctx };
    const tm = new TrainModel(config, wasmBackend(trainModelFloats(config, mo)) ?? referenceBackend('f32'), mo);
    try {
      await loadTrainParams(tm, mf);
      return collectKvGrads(tm, tokens, chunking);
    } finally {
      tm.be.close?.();
    }
  } finally {
    files.close();
  }
}

/** "KV cache q4_0/q4_0: 2304 bytes per token" */
export function kvCacheLine(m: LoadedModel): string {
  const kv = m.model.kv as { keyType?: { name: string }; valueType?: { name: string }; bytesPerToken?: number };
  const types = kv.keyType ? `${kv.keyType.name}/${kv.valueType!.name}` : 'f32/f32';
  return `KV cache ${types}: ${kv.bytesPerToken ?? '?'} bytes per token`;
}

export const generateCommand: Command = {
  name: 'generate',
  summary: 'generate text with a LLaMA-family model (GGUF or llama2.c); prints prompt + continuation',
  usage: 'lowbit generate MODEL [--tokenizer F] --prompt TEXT [-n N] [--temp T] [--top-p P] [--seed S] [--activations ggml|f32] [-ctk T] [-ctv T] [--kv-residual R] [--calib F] [--threads N]',
  positionals: [1, 1],
  options: [
    { name: 'prompt', short: 'p', type: 'string', help: 'prompt text', default: '' },
    { name: 'tokenizer', short: 'z', type: 'string', help: 'tokenizer.bin or tokenizer.model (required for llama2.c checkpoints)' },
    { name: 'n', short: 'n', type: 'int', help: 'new tokens to generate', default: 256, min: 0 },
    { name: 'temp', type: 'number', help: 'temperature; 0 = greedy', default: 1, min: 0 },
    { name: 'top-p', type: 'number', help: 'nucleus sampling threshold (1 = off)', default: 0.9, min: 0, max: 1 },
    { name: 'seed', type: 'int', help: 'random seed (default: time)' },
    { name: 'ctx', type: 'int', help: 'context length (default: the model\'s, at most 4096)', min: 1 },
    { name: 'dequantize', type: 'boolean', help: 'dequantize all weights to f32 once at load', default: false },
    { name: 'stats', type: 'boolean', help: "print tokens per second to stderr (decode: one-token forward passes per second, with sampling, without writing the text out, as llama-bench's tg)", default: false },
    activationsOption,
    ...kvCacheOptions,
    kvCalibOption,
    threadsOption,
  ],
  async run(a) {
    {
      const kvCache = await kvCacheFrom(a.values, a.positionals[0], a.values.tokenizer as string | undefined, a.values.ctx as number | undefined);
      const m = await loadModelPath(a.positionals[0], a.values.tokenizer as string | undefined, {
        contextLength: a.values.ctx as number | undefined,
        dequantize: a.values.dequantize as boolean,
        threads: threadsFrom(a.values.threads),
        activations: a.values.activations as 'f32' | 'ggml' | undefined,
        kvCache,
      });
      if (!m.tokenizer) fail(`${a.positionals[0]} carries no vocabulary: give --tokenizer tokenizer.bin or tokenizer.model`);
      const prompt = a.values.prompt as string;
      const r = generate(m.model, m.tokenizer, prompt, {
        onStart: () => process.stdout.write(prompt), // once the prompt fits the context: nothing printed before an error
        steps: a.values.n as number,
        temperature: a.values.temp as number,
        topP: a.values['top-p'] as number,
        seed: (a.values.seed as number | undefined) ?? Date.now(),
        onText: (t) => process.stdout.write(t),
      });
      process.stdout.write('\n');
      if (a.values.stats) {
        const gen = r.tokens.length - r.promptTokens;
        process.stderr.write(
          `prompt: ${r.promptTokens} tokens in ${r.promptSeconds.toFixed(3)} s (${(r.promptTokens / r.promptSeconds).toFixed(1)} tok/s); ` +
            `generated: ${gen} tokens, ${r.decodeSteps} one-token forward passes in ${r.decodeSeconds.toFixed(3)} s (${(r.decodeSteps / r.decodeSeconds).toFixed(1)} tok/s); ${kvCacheLine(m)}\n`,
        );
      }
    }
  },
};
