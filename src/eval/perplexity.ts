/**
 * Perplexity and KL divergence the way llama.cpp's llama-perplexity computes them
 * (tools/perplexity/perplexity.cpp, functions perplexity and kl_divergence):
 *  - the whole text is tokenized once, BOS first; it is cut into non-overlapping chunks of `ctx` tokens
 *    (chunks = min(requested, floor(tokens / ctx))); the first token of each chunk is replaced by BOS;
 *  - each chunk runs from position 0 with an empty cache; only the second half is scored: the logits
 *    at positions first = ctx/2 .. ctx-2 predict tokens first+1 .. ctx-1 (ctx - 1 - ctx/2 per chunk);
 *  - PPL = exp(mean NLL), ± PPL * sqrt((mean NLL² - mean NLL²) / (count - 1)).
 * Against a base model, for each scored token:
 *  - KLD = sum_i p_base(i) (log p_base(i) - log p(i)) over the vocabulary,
 *  - Δp = p(correct token) - p_base(correct token), top-1 agreement = argmax p == argmax p_base,
 *  - mean ± stderr, median and percentiles (llama.cpp's linear interpolation) of KLD; mean and RMS of Δp.
 * The base comes from a model run in the same process (exact log-probabilities) or from a llama.cpp
 * `--kl-divergence-base` file (log-probabilities quantized to 16 bits per token, as llama.cpp writes them).
 *
 * llama.cpp logits file: "_logits_", u32 n_ctx, i32 n_vocab, i32 n_chunk, i32 tokens[n_chunk * n_ctx],
 * then per chunk (n_ctx - 1 - n_ctx/2) rows of nv = 2*((n_vocab+1)/2) + 4 uint16: a row starts with two
 * float32 (scale, min_log_prob) and holds log p(i) = scale * q[i] + min_log_prob.
 */
import { fail } from '../errors.js';
import type { ByteSource } from '../io/source.js';
import { MatmulEngine } from '../kernels/matmul.js';
import type { Llama } from '../model/llama.js';

/** log-probabilities of one scored position */
export interface BaseRow {
  /** log p_base(i) for every token i */
  logProb(i: number): number;
  /** vocabulary size */
  readonly n: number;
}

/** Where base log-probabilities come from: one call per chunk with that chunk's scored rows. */
export interface BaseSource {
  /** the evaluation tokens, when the base dictates them (a logits file) */
  readonly tokens?: Int32Array;
  readonly ctx?: number;
  readonly chunks?: number;
  chunkRows(chunk: number, tokens: ArrayLike<number>): Promise<BaseRow[]>;
}

export interface KldStats {
  mean: number;
  stderr: number;
  median: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export interface PerplexityResult {
  ppl: number;
  /** llama.cpp's ± of PPL */
  pplStderr: number;
  /** mean negative log-likelihood (nats) */
  nll: number;
  /** scored tokens */
  tokens: number;
  chunks: number;
  ctx: number;
  seconds: number;
  /** with a base: */
  pplBase?: number;
  kld?: KldStats;
  /** fraction of scored tokens where both models rank the same token first */
  top1?: number;
  dp?: { mean: number; rms: number; max: number };
  /** with a base and `keepKld`: the KLD of every scored token, in evaluation order */
  kldValues?: Float32Array;
}

export interface PerplexityOptions {
  ctx: number;
  /** at most this many chunks (default all) */
  chunks?: number;
  bos: number;
  addBos: boolean;
  base?: BaseSource;
  /** receives the llama.cpp logits file, piece by piece (for --save-logits) */
  saveLogits?: (bytes: Uint8Array) => void | Promise<void>;
  onChunk?: (done: number, total: number, pplSoFar: number) => void;
  /** return every scored token's KLD (result.kldValues), e.g. for a histogram */
  keepKld?: boolean;
}

/** llama.cpp's mean_and_uncertainty */
function meanAndUncertainty(sum: number, sum2: number, count: number): [number, number] {
  if (count < 1) return [0, 0];
  const f = sum / count;
  let df = sum2 / count - f * f;
  df = df > 0 && count > 10 ? Math.sqrt(df / (count - 1)) : 0;
  return [f, df];
}

/** llama.cpp's percentile over sorted values */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  const n = sorted.length;
  if (fraction <= 0) return sorted[0];
  if (fraction >= 1) return sorted[n - 1];
  let p = Math.fround(fraction * (n - 1));
  const ip = Math.floor(p);
  p -= ip;
  return (1 - p) * sorted[ip] + p * sorted[Math.min(ip + 1, n - 1)];
}

function median(sorted: ArrayLike<number>): number {
  const n = sorted.length;
  return n % 2 === 0 ? 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]) : sorted[(n - 1) / 2];
}

/**
 * log-softmax of one logits row: returns [max, logSumExp, argmax] so that log p(i) = x[i] - max - logSumExp.
 * The sum of exponentials runs in the WebAssembly kernel where available (f32 exp within ~2 ulp, f64
 * sum: log p within ~1e-7 of the float64 computation), else in float64 here.
 */
export function logSoftmaxParts(x: Float32Array, off: number, n: number, engine = MatmulEngine.get()): [number, number, number] {
  let max = x[off];
  let imax = 0;
  for (let i = 1; i < n; i++) {
    if (x[off + i] > max) {
      max = x[off + i];
      imax = i;
    }
  }
  if (engine) return [max, engine.logSumExp(x, off, n, max), imax];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  return [max, Math.log(sum), imax];
}

/** round to nearest, ties to even, as ggml's nearest_int */
function nearestInt(v: number): number {
  return Math.fround(Math.fround(v) + 12582912) - 12582912;
}

/** One row of a llama.cpp logits file (nv uint16) from logits, as llama.cpp's log_softmax writes it. */
function quantizeLogProbs(x: Float32Array, off: number, n: number, out: Uint16Array): void {
  let maxLogit = x[off];
  let minLogit = x[off];
  for (let i = 1; i < n; i++) {
    maxLogit = Math.max(maxLogit, x[off + i]);
    minLogit = Math.min(minLogit, x[off + i]);
  }
  minLogit = Math.max(minLogit, maxLogit - 16);
  let sumExp = 0;
  for (let i = 0; i < n; i++) sumExp += Math.fround(Math.exp(x[off + i] - maxLogit));
  const logSumExp = Math.fround(Math.log(sumExp));
  const minLogProb = Math.fround(Math.fround(minLogit - maxLogit) - logSumExp); // float ops as in C
  const scale = Math.fround((maxLogit - minLogit) / 65535);
  const head = new Float32Array(out.buffer, out.byteOffset, 2);
  head[0] = scale;
  head[1] = minLogProb;
  if (scale) {
    const inv = Math.fround(1 / scale);
    for (let i = 0; i < n; i++) out[4 + i] = x[off + i] > minLogit ? nearestInt(inv * Math.fround(x[off + i] - minLogit)) : 0;
  } else out.fill(0, 4, 4 + n);
  out.fill(0, 4 + n);
}

const int32Bytes = (a: Int32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A base model run in this process (exact log-probabilities). */
export function modelBase(base: Llama, ctx: number, bos: number, addBos: boolean): BaseSource {
  const first = ctx >> 1;
  return {
    async chunkRows(_chunk, tokens) {
      const ids = Array.from(tokens);
      if (addBos) ids[0] = bos;
      const logits = base.forward(ids, 0, first);
      const n = base.config.vocabSize;
      const rows: BaseRow[] = [];
      for (let r = 0; r < ctx - 1 - first; r++) {
        const off = r * n;
        const [max, lse] = logSoftmaxParts(logits, off, n);
        rows.push({ n, logProb: (i) => logits[off + i] - max - lse });
      }
      return rows;
    },
  };
}

/** A llama.cpp logits file (from --save-logits here, or llama-perplexity --kl-divergence-base). */
export async function logitsFileBase(src: ByteSource): Promise<BaseSource> {
  if (src.size < 20) fail(`${src.name}: too short for a logits file`);
  const head = await src.read(0, 20);
  if (new TextDecoder().decode(head.subarray(0, 8)) !== '_logits_') fail(`${src.name}: not a llama.cpp logits file (no "_logits_" magic)`);
  const dv = new DataView(head.buffer, head.byteOffset, 20);
  const ctx = dv.getUint32(8, true);
  const nVocab = dv.getInt32(12, true);
  const nChunk = dv.getInt32(16, true);
  if (!(ctx >= 4 && ctx < 1 << 24 && nVocab > 0 && nChunk > 0)) fail(`${src.name}: bad logits file header (ctx ${ctx}, vocab ${nVocab}, chunks ${nChunk})`);
  const nv = 2 * ((nVocab + 1) >> 1) + 4;
  const rowsPerChunk = ctx - 1 - (ctx >> 1);
  const tokOff = 20;
  const dataOff = tokOff + 4 * ctx * nChunk;
  const chunkBytes = rowsPerChunk * nv * 2;
  if (src.size !== dataOff + nChunk * chunkBytes)
    fail(`${src.name}: size ${src.size} does not match its header (ctx ${ctx}, vocab ${nVocab}, ${nChunk} chunks need ${dataOff + nChunk * chunkBytes} bytes)`);
  const tokens = new Int32Array(new Uint8Array(await src.read(tokOff, 4 * ctx * nChunk)).buffer);
  return {
    tokens,
    ctx,
    chunks: nChunk,
    async chunkRows(chunk) {
      const bytes = new Uint8Array(await src.read(dataOff + chunk * chunkBytes, chunkBytes));
      const q = new Uint16Array(bytes.buffer);
      const f = new Float32Array(bytes.buffer);
      const rows: BaseRow[] = [];
      for (let r = 0; r < rowsPerChunk; r++) {
        const o = r * nv;
        const scale = f[o / 2];
        const minLogProb = f[o / 2 + 1];
        rows.push({ n: nVocab, logProb: (i) => Math.fround(scale * q[o + 4 + i] + minLogProb) });
      }
      return rows;
    },
  };
}

/** Evaluate `model` on `tokens` (the whole text, BOS first). With opts.base, also KLD & co. */
export async function perplexity(model: Llama, tokens: ArrayLike<number>, opts: PerplexityOptions): Promise<PerplexityResult> {
  const t0 = performance.now();
  const ctx = opts.ctx;
  if (!(ctx >= 4 && ctx % 2 === 0)) fail(`context ${ctx} must be an even number of at least 4`);
  if (ctx > model.kv.capacity) fail(`context ${ctx} is longer than the model's ${model.kv.capacity}`);
  // llama-perplexity asks for two chunks of text; scored against a base (its logits file carries the
  // tokens of the chunks it scored, as llama-perplexity --kl-divergence reads them) one chunk is enough
  const need = opts.base ? ctx : 2 * ctx;
  if (tokens.length < need) fail(`the text has ${tokens.length} tokens; a context of ${ctx} needs at least ${need}`);
  const maxChunks = Math.floor(tokens.length / ctx);
  const nChunk = opts.chunks === undefined || opts.chunks < 0 ? maxChunks : Math.min(opts.chunks, maxChunks);
  const n = model.config.vocabSize;
  const first = ctx >> 1;
  const rows = ctx - 1 - first;
  const base = opts.base;
  const nv = 2 * ((n + 1) >> 1) + 4;

  if (opts.saveLogits) {
    const head = new Uint8Array(20);
    head.set(new TextEncoder().encode('_logits_'));
    const dv = new DataView(head.buffer);
    dv.setUint32(8, ctx, true);
    dv.setInt32(12, n, true);
    dv.setInt32(16, nChunk, true);
    await opts.saveLogits(head);
    await opts.saveLogits(int32Bytes(Int32Array.from({ length: nChunk * ctx }, (_, i) => tokens[i])));
  }

  let count = 0;
  let sumNll = 0;
  let sumNll2 = 0;
  let sumNllBase = 0;
  let sumKld = 0;
  let sumKld2 = 0;
  let sumDp = 0;
  let sumDp2 = 0;
  let maxDp = 0;
  let sameTop = 0;
  const kldValues: number[] = [];
  const chunkTokens = new Int32Array(ctx);
  const qrow = new Uint16Array(nv * rows);
  for (let c = 0; c < nChunk; c++) {
    for (let i = 0; i < ctx; i++) chunkTokens[i] = tokens[c * ctx + i];
    const ids = Array.from(chunkTokens);
    if (opts.addBos) ids[0] = opts.bos;
    const logits = model.forward(ids, 0, first, true); // rows x vocab (the model's buffer, read before the next chunk), row r predicts chunkTokens[first + r + 1]
    const baseRows = base ? await base.chunkRows(c, chunkTokens) : undefined;
    // every row's max, argmax and log-sum-exp at once in the kernel (on its threads), else row by row
    const parts = MatmulEngine.get()?.logSoftmaxRows(logits, rows, n);
    for (let r = 0; r < rows; r++) {
      const off = r * n;
      const target = chunkTokens[first + r + 1];
      const [max, lse, imax] = parts ? [parts.max[r], parts.lse[r], parts.argmax[r]] : logSoftmaxParts(logits, off, n);
      const logP = logits[off + target] - max - lse;
      const nll = -logP;
      sumNll += nll;
      sumNll2 += nll * nll;
      if (opts.saveLogits) quantizeLogProbs(logits, off, n, qrow.subarray(r * nv, (r + 1) * nv));
      if (baseRows) {
        const b = baseRows[r];
        if (b.n !== n) fail(`base vocabulary ${b.n} differs from the model's ${n}`);
        let kld = 0;
        let imaxBase = 0;
        let best = -Infinity;
        for (let i = 0; i < n; i++) {
          const lb = b.logProb(i);
          if (lb > best) {
            best = lb;
            imaxBase = i;
          }
          if (lb > -16) kld += Math.exp(lb) * (lb - (logits[off + i] - max - lse));
        }
        const nllBase = -b.logProb(target);
        sumNllBase += nllBase;
        sumKld += kld;
        sumKld2 += kld * kld;
        kldValues.push(kld);
        if (imax === imaxBase) sameTop++;
        const dp = Math.exp(-nll) - Math.exp(-nllBase);
        sumDp += dp;
        sumDp2 += dp * dp;
        maxDp = Math.max(maxDp, Math.abs(dp));
      }
      count++;
    }
    if (opts.saveLogits) await opts.saveLogits(new Uint8Array(qrow.buffer));
    opts.onChunk?.(c + 1, nChunk, Math.exp(sumNll / count));
  }
  const nll = sumNll / count;
  const ppl = Math.exp(nll);
  const var2 = sumNll2 / count - nll * nll;
  const result: PerplexityResult = {
    ppl,
    pplStderr: var2 > 0 ? Math.sqrt(var2 / (count - 1)) * ppl : 0,
    nll,
    tokens: count,
    chunks: nChunk,
    ctx,
    seconds: (performance.now() - t0) / 1000,
  };
  if (base) {
    const sorted = Float64Array.from(kldValues).sort();
    const [kMean, kErr] = meanAndUncertainty(sumKld, sumKld2, count);
    result.pplBase = Math.exp(sumNllBase / count);
    result.kld = {
      mean: kMean,
      stderr: kErr,
      median: median(sorted),
      p90: percentile(sorted, 0.9),
      p95: percentile(sorted, 0.95),
      p99: percentile(sorted, 0.99),
      max: sorted[sorted.length - 1],
    };
    result.top1 = sameTop / count;
    result.dp = { mean: sumDp / count, rms: Math.sqrt(sumDp2 / count), max: maxDp };
    if (opts.keepKld) result.kldValues = Float32Array.from(kldValues);
  }
  return result;
}
