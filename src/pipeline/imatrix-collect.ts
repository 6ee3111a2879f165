/**
 * Collect an importance matrix by running the model on calibration text, as llama-imatrix does
 * (tools/imatrix/imatrix.cpp, compute_imatrix and IMatrixCollector::collect_imatrix):
 *  - the text is tokenized once with BOS first and cut into non-overlapping chunks of `ctx` tokens
 *    (chunks = min(requested, floor(tokens / ctx)); at least 2 * ctx tokens are needed);
 *  - the first token of every chunk is replaced by BOS (when the vocabulary adds BOS), and each chunk
 *    runs from position 0 with an empty KV cache;
 *  - every token of the chunk counts (not only the second half, which only the PPL figure uses): for
 *    every linear layer whose weight is named blk.* (and output.weight with processOutput) it adds
 *    x_j^2 of each input row to sums_j and the number of rows to the entry's count;
 *  - the result has chunkSize = ctx and chunkCount = chunks processed;
 *  - mixture-of-experts tensors (ffn_*_exps) get one block of sums and one count per expert: each token
 *    routed to an expert adds its input row to that expert's block (llama-imatrix's MUL_MAT_ID path).
 *    An expert no calibration token reached keeps count 0; llama-quantize (and lowbit quantize) then
 *    quantizes it without importance weights (importanceOf gives 1s for it).
 * The PPL it reports is llama-imatrix's: the second half of each chunk, as llama-perplexity scores it.
 *
 * Differences from llama-imatrix, all below float rounding of the statistic: llama.cpp sums in f32 in
 * its own order (this sums in f64), and skips matmuls of fewer than 16 rows (which only happens to the
 * odd tail of a micro-batch when ctx is not a multiple of 512 and above it).
 */
import { fail } from '../errors.js';
import { accumulateImatrix, emptyImatrix, type Imatrix } from '../algos/imatrix.js';
import type { Llama } from '../model/llama.js';

export interface CollectImatrixOptions {
  ctx: number;
  /** at most this many chunks (default: all) */
  chunks?: number;
  bos: number;
  addBos: boolean;
  /** also collect output.weight (llama-imatrix --process-output) */
  processOutput?: boolean;
  /** recorded in the file (llama-imatrix stores the --file path) */
  dataset?: string;
  onChunk?: (done: number, total: number, pplSoFar: number) => void;
}

export interface CollectImatrixResult {
  imatrix: Imatrix;
  chunks: number;
  ctx: number;
  /** tokens run through the model */
  tokens: number;
  /** llama-imatrix's perplexity estimate (second half of each chunk) */
  ppl: number;
  seconds: number;
}

function logSoftmaxAt(logits: Float32Array, off: number, n: number, target: number): number {
  let max = logits[off];
  for (let i = 1; i < n; i++) if (logits[off + i] > max) max = logits[off + i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[off + i] - max);
  return logits[off + target] - max - Math.log(sum);
}

export function collectImatrix(model: Llama, tokens: ArrayLike<number>, opts: CollectImatrixOptions): CollectImatrixResult {
  const t0 = performance.now();
  const ctx = opts.ctx;
  if (!(Number.isInteger(ctx) && ctx >= 2)) fail(`context ${ctx} must be an integer of at least 2`);
  if (ctx > model.config.seqLen) fail(`context ${ctx} is longer than the model's ${model.config.seqLen}`);
  if (ctx > model.kv.capacity) fail(`context ${ctx} is longer than the KV cache (${model.kv.capacity} positions)`);
  if (tokens.length < 2 * ctx) fail(`the text has ${tokens.length} tokens; a context of ${ctx} needs at least ${2 * ctx}`);
  const maxChunks = Math.floor(tokens.length / ctx);
  const nChunk = opts.chunks === undefined || opts.chunks < 0 ? maxChunks : Math.min(opts.chunks, maxChunks);
  const imatrix = emptyImatrix(ctx, opts.dataset !== undefined ? [opts.dataset] : []);
  const wanted = (name: string) => name.startsWith('blk.') || (opts.processOutput === true && name === 'output.weight');
  const n = model.config.vocabSize;
  const first = ctx >> 1;
  let nll = 0;
  let count = 0;
  const previous = model.hooks;
  model.hooks = {
    ...previous,
    linearInput: (name, x, nTok, k, expert) => {
      previous.linearInput?.(name, x, nTok, k, expert);
      if (wanted(name)) accumulateImatrix(imatrix, name, x, nTok, k, expert === undefined ? undefined : { index: expert, count: model.config.nExperts! });
    },
  };
  try {
    for (let c = 0; c < nChunk; c++) {
      const ids = Array.from({ length: ctx }, (_, i) => tokens[c * ctx + i]);
      if (opts.addBos) ids[0] = opts.bos;
      // logits from position `first` on (the PPL half); every position when output.weight is collected
      const from = opts.processOutput ? 0 : first;
      const logits = model.forward(ids, 0, from);
      for (let i = first; i < ctx - 1; i++) {
        nll -= logSoftmaxAt(logits, (i - from) * n, n, tokens[c * ctx + i + 1]);
        count++;
      }
      imatrix.chunkCount = c + 1;
      opts.onChunk?.(c + 1, nChunk, Math.exp(nll / count));
    }
  } finally {
    model.hooks = previous;
  }
  for (const e of imatrix.entries.values())
    for (let j = 0; j < e.sums.length; j++) if (!Number.isFinite(e.sums[j])) fail(`non-finite activations in ${e.name}: the model overflows on this text`);
  return { imatrix, chunks: nChunk, ctx, tokens: nChunk * ctx, ppl: Math.exp(nll / count), seconds: (performance.now() - t0) / 1000 };
}
