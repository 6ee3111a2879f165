import { actQuantFloatLinear, actQuantLinear, actQuantSchemeLinear, isOnlineRotated, llmInt8Linear, rotatedInputLinear } from '../../model/act-quant.js';
import { fp8_e4m3fn } from '../../formats/registry.js';
import { flexqSensitivity } from '../../pipeline/flexq.js';
import { fail } from '../../errors.js';
import { isDefaultKvCache } from '../../model/kv/cache.js';
import { resolveScheme } from '../../quant/registry.js';
import { logitsFileBase, modelBase, perplexity, type BaseSource, type PerplexityResult } from '../../eval/perplexity.js';
import type { Command } from '../args.js';
import { checkOutput, noteInput, readInputText, withAtomicFile } from '../files.js';
import { fileSet } from '../node-source.js';
import { threadsFrom, threadsOption } from '../threads.js';
import { activationsOption, kvCacheFrom, kvCacheLine, kvCacheOptions, loadModelPath } from './generate.js';

function report(r: PerplexityResult): string {
  const lines = [`PPL = ${r.ppl.toFixed(4)} +/- ${r.pplStderr.toFixed(5)}  (${r.chunks} chunks of ${r.ctx}, ${r.tokens} scored tokens, ${r.seconds.toFixed(1)} s)`];
  if (r.kld && r.dp && r.top1 !== undefined) {
    const k = r.kld;
    lines.push(
      `PPL(base) = ${r.pplBase!.toFixed(4)}`,
      `KLD: mean ${k.mean.toFixed(6)} +/- ${k.stderr.toFixed(6)}, median ${k.median.toFixed(6)}, p90 ${k.p90.toFixed(6)}, p95 ${k.p95.toFixed(6)}, p99 ${k.p99.toFixed(6)}, max ${k.max.toFixed(6)}`,
      `same top token: ${(100 * r.top1).toFixed(3)} %`,
      `Δp: mean ${(100 * r.dp.mean).toFixed(3)} %, RMS ${(100 * r.dp.rms).toFixed(3)} %, max |Δp| ${(100 * r.dp.max).toFixed(3)} %`,
    );
  }
  return lines.join('\n') + '\n';
}

export const evalCommand: Command = {
  name: 'eval',
  summary: 'perplexity of a model on a text as llama-perplexity computes it; KL divergence etc. against a base',
  usage:
    'lowbit eval MODEL --text FILE [--ctx 128] [--chunks N] [--tokenizer F] [--base MODEL | --base-logits FILE] [--save-logits FILE] [--threads N] [--activations ggml|f32] [--act int8|int6|int4|fp8 | --act flexq --calib FILE | --llm-int8 6.0] [-ctk T] [-ctv T] [--kv-residual R] [--json]  (--calib FILE also fits kvquant caches)',
  positionals: [1, 1],
  options: [
    { name: 'text', short: 'f', type: 'string', help: 'UTF-8 text to evaluate on (not needed with --base-logits)' },
    { name: 'ctx', short: 'c', type: 'int', help: 'tokens per chunk; the second half of each chunk is scored', default: 512, min: 4 },
    { name: 'chunks', type: 'int', help: 'evaluate at most this many chunks (default all)', min: 1 },
    { name: 'tokenizer', short: 'z', type: 'string', help: 'tokenizer.bin or tokenizer.model (for llama2.c checkpoints)' },
    { name: 'base', type: 'string', help: 'base model to compare with (KLD, top-1, Δp), run in this process' },
    { name: 'base-logits', type: 'string', help: 'base log-probabilities from --save-logits or llama-perplexity --kl-divergence-base' },
    { name: 'save-logits', type: 'string', help: 'write this model\'s log-probabilities (llama.cpp --kl-divergence-base format)' },
    { name: 'dequantize', type: 'boolean', help: 'dequantize all weights to f32 once at load', default: false },
    threadsOption,
    activationsOption,
    ...kvCacheOptions,
    { name: 'act', type: 'string', choices: ['none', 'int8', 'int6', 'int4', 'fp8', 'flexq', 'mxfp8', 'mxfp4', 'nvfp4'], default: 'none', help: 'quantize every linear input per token (dynamic symmetric intN; W8A8 with an int8 file, SmoothQuant with one written by quantize --smooth; fp8: E4M3 with scale absmax/448, ZeroQuant-FP; flexq: int6, int8 for the linears --calib finds most sensitive; mxfp8/mxfp4/nvfp4: the block schemes along the input features)' },
    { name: 'rotate-act', type: 'boolean', default: false, help: 'with --act: online Hadamard of the FFN down-projection input and the attention output (QuaRot; the weights rotated alike at load)' },
    { name: 'calib', type: 'string', help: 'calibration text: for --act flexq (layer-wise sensitivity) and for KV caches fitted to activations (kvquant3, kvquant4)' },
    { name: 'a8-fraction', type: 'number', min: 0, max: 1, default: 0.2, help: 'with --act flexq: fraction of the linears whose inputs stay int8' },
    { name: 'llm-int8', type: 'number', min: 0, help: 'LLM.int8(): input features above this magnitude in 16 bits, the rest int8 x int8 (e.g. 6.0)' },
    { name: 'json', type: 'boolean', help: 'print one JSON object', default: false },
  ],
  async run(a) {
    const files = fileSet();
    const open = files.open;
    try {
      if (a.values.base && a.values['base-logits']) fail('give either --base or --base-logits, not both');
      // validate everything, then write: the inputs are noted and the output checked before any work
      const saveLogits = a.values['save-logits'] as string | undefined;
      for (const f of [a.positionals[0], a.values.text, a.values.base, a.values['base-logits'], a.values.tokenizer, a.values.calib] as (string | undefined)[]) noteInput(f);
      if (saveLogits) checkOutput(saveLogits, 'logits file (--save-logits)');
      const tokFile = a.values.tokenizer as string | undefined;
      const dequantize = a.values.dequantize as boolean;
      const threads = threadsFrom(a.values.threads);
      const activations = a.values.activations as 'f32' | 'ggml' | undefined;
      const baseLogits = a.values['base-logits'] ? await logitsFileBase(open(a.values['base-logits'] as string)) : undefined;
      let ctx = a.values.ctx as number;
      if (baseLogits) {
        if (a.given.has('ctx') && ctx !== baseLogits.ctx) fail(`--ctx ${ctx} differs from the base logits file's context ${baseLogits.ctx}`);
        ctx = baseLogits.ctx!;
      }
      const kvCache = await kvCacheFrom(a.values, a.positionals[0], tokFile, ctx);
      // token_embd rows are read as the tokens use them (lazyEmbedding): a run meets a few hundred of them;
      // a chunk that fits one batch runs from position 0 in one forward: the f32 KV cache holds one layer (kvOneLayer)
      const kvOneLayer = ctx <= 512 && isDefaultKvCache(kvCache);
      const m = await loadModelPath(a.positionals[0], tokFile, { contextLength: ctx, batch: Math.min(ctx, 512), dequantize, activations, threads, kvCache, lazyEmbedding: true, kvOneLayer });
      const kv = m.model.kv as { bytesPerToken?: number };
      if (a.values.act !== 'none' && a.values['llm-int8'] !== undefined) fail('give either --act or --llm-int8, not both');
      const act = a.values.act as string;
      if (act !== 'flexq' && a.given.has('a8-fraction')) fail('--a8-fraction applies with --act flexq');
      if (act !== 'flexq' && a.given.has('calib') && !a.given.has('cache-type-k') && !a.given.has('cache-type-v')) fail('--calib applies with --act flexq or a KV cache type (-ctk/-ctv; kvquant3 and kvquant4 fit to it)');
      if (act === 'fp8') m.model.hooks.linear = actQuantFloatLinear(fp8_e4m3fn);
      else if (act === 'flexq') {
        if (!a.values.calib) fail('--act flexq needs calibration text for its sensitivity analysis: --calib FILE');
        if (!m.tokenizer) fail(`${a.positionals[0]} carries no vocabulary to tokenize the calibration text`);
        const chunks = 8;
        const calib = m.tokenizer.encodeAtLeast(readInputText(a.values.calib as string, 'calibration text (--calib)'), chunks * ctx);
        const s = await flexqSensitivity(m.model, calib, { ctx, chunks, bos: m.tokenizer.vocab.bos, addBos: m.tokenizer.vocab.addBos, fraction: a.values['a8-fraction'] as number });
        const keep = new Set(s.keep8);
        if (!a.values.json) process.stderr.write(`flexq: int8 inputs for ${s.keep8.join(', ') || 'none'}\n`);
        m.model.hooks.linear = actQuantLinear(6, (name) => keep.has(name));
      } else if (act !== 'none') m.model.hooks.linear = actQuantLinear(Number(act.slice(3)));
      if (a.values['llm-int8'] !== undefined) m.model.hooks.linear = llmInt8Linear(a.values['llm-int8'] as number);
      if (act === 'mxfp8' || act === 'mxfp4' || act === 'nvfp4') m.model.hooks.linear = actQuantSchemeLinear(resolveScheme(act === 'mxfp8' ? 'mxfp8_e4m3' : act));
      if (a.values['rotate-act']) {
        if (act === 'none') fail('--rotate-act applies with --act (the rotation spreads outliers before the activations are quantized)');
        m.model.hooks.linear = rotatedInputLinear(m.model.hooks.linear!, isOnlineRotated);
      }
      let tokens: ArrayLike<number>;
      if (baseLogits) tokens = baseLogits.tokens!;
      else {
        if (!a.values.text) fail('eval needs --text FILE (or --base-logits FILE, which carries its tokens)');
        if (!m.tokenizer) fail(`${a.positionals[0]} carries no vocabulary: give --tokenizer tokenizer.bin or tokenizer.model`);
        const text = readInputText(a.values.text as string, 'text (--text)');
        // with --chunks, only the tokens of those chunks are needed (the same ids as encoding it all)
        const chunks = a.values.chunks as number | undefined;
        tokens = chunks !== undefined ? m.tokenizer.encodeAtLeast(text, chunks * ctx) : m.tokenizer.encode(text);
      }
      const vocab = m.tokenizer?.vocab;
      const bos = vocab?.bos ?? 1;
      const addBos = vocab?.addBos ?? true;
      let base: BaseSource | undefined = baseLogits;
      if (a.values.base) {
        const b = await loadModelPath(a.values.base as string, tokFile, { contextLength: ctx, batch: Math.min(ctx, 512), dequantize, activations, threads, lazyEmbedding: true, kvOneLayer });
        if (b.model.config.vocabSize !== m.model.config.vocabSize) fail(`base vocabulary ${b.model.config.vocabSize} differs from the model's ${m.model.config.vocabSize}`);
        base = modelBase(b.model, ctx, bos, addBos);
      }
      const tty = process.stderr.isTTY;
      const onChunk = tty ? (done: number, total: number, ppl: number) => process.stderr.write(`\r[${done}/${total}] PPL ${ppl.toFixed(4)}`) : undefined;
      const run = (saveLogits?: (b: Uint8Array) => void) =>
        perplexity(m.model, tokens, { ctx, chunks: a.values.chunks as number | undefined, bos, addBos, base, saveLogits, onChunk });
      const r = saveLogits ? await withAtomicFile(saveLogits, (f) => run((b) => f.write(b)), 'logits file (--save-logits)') : await run();
      if (tty) process.stderr.write('\n');
      if (a.values.json) {
        const { ppl, pplStderr, nll, tokens: n, chunks, ctx: c, seconds, pplBase, kld, top1, dp } = r;
        process.stdout.write(JSON.stringify({ ppl, pplStderr, nll, tokens: n, chunks, ctx: c, seconds, tokensPerSecond: (chunks * c) / seconds, pplBase, kld, top1, dp, cacheTypeK: kvCache.k, cacheTypeV: kvCache.v, kvBytesPerToken: kv.bytesPerToken }) + '\n');
      } else process.stdout.write(report(r) + kvCacheLine(m) + '\n');
    } finally {
      files.close();
    }
  },
};
