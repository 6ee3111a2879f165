/**
 * GPTQ over ranges of rows: given the factor of the Hessian (gptqFactor), every row is quantized on its
 * own, so a weight can be split into row ranges quantized on other threads (a host-provided
 * GptqWorkers, e.g. the CLI's worker pool) and put back together: the same bytes as one call.
 */
import { gptqBlocksWithFactor, gptqFactor, type GptqBlockOptions, type GptqFactor } from '../algos/gptq.js';
import { blockCodecFor, type BlockCodec } from '../algos/block-codec.js';
import { resolveScheme } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';

/** One range of rows: `target` is 'ggml:' + a GGML type name, or 'scheme:' + an id resolveScheme knows. */
export interface GptqPartJob {
  target: string;
  rowLength: number;
  rows: number;
  w: Float32Array;
  factor: GptqFactor;
  blockSize: number;
  actOrder: boolean;
  importance?: Float32Array;
  clipWeights?: Float32Array;
}

export interface GptqPartResult {
  bytes: Uint8Array;
  q: Float32Array;
}

/** Threads that run GptqPartJobs (the calling thread works too). */
export interface GptqWorkers {
  readonly count: number;
  /** split only weights of at least this many elements (default 65 536) */
  readonly minWeights?: number;
  run(job: GptqPartJob): Promise<GptqPartResult>;
}

/** the codec of a job's target ('ggml:Q4_K', 'scheme:int4_g128') */
export function partCodec(target: string, rowLength: number): BlockCodec {
  const [kind, name] = [target.slice(0, target.indexOf(':')), target.slice(target.indexOf(':') + 1)];
  if (kind === 'ggml') return blockCodecFor(name, rowLength);
  if (kind === 'scheme') return blockCodecFor(resolveScheme(name), rowLength);
  throw new Error(`GPTQ part: unknown target ${target}`);
}

/** the job target of a planned codec target, when another thread can rebuild it (else undefined) */
export function partTarget(scheme: QuantScheme | undefined, ggmlName: string | undefined): string | undefined {
  if (!scheme) return ggmlName ? `ggml:${ggmlName}` : undefined;
  if (scheme.family === 'ggml') return `ggml:${scheme.name.replace(/^ggml_/i, '')}`;
  try {
    return resolveScheme(scheme.id).id === scheme.id ? `scheme:${scheme.id}` : undefined;
  } catch {
    return undefined;
  }
}

/** Quantize the rows of one job (in any thread). */
export function gptqPartRun(job: GptqPartJob, codec = partCodec(job.target, job.rowLength)): GptqPartResult {
  const { bytes, q } = gptqBlocksWithFactor(job.w, job.rows, job.rowLength, job.factor, codec, job);
  return { bytes, q };
}

/** below this many weights a matrix is quantized on the calling thread only */
const MIN_PARALLEL_WEIGHTS = 1 << 16;

/**
 * GPTQ of w (n x k) into `codec`'s bytes, its rows split over the workers and this thread when it is big
 * enough: the same bytes and values as gptqBlocks.
 */
export async function gptqBlocksParallel(
  w: Float32Array,
  n: number,
  k: number,
  hessian: Float64Array,
  codec: BlockCodec,
  target: string | undefined,
  opts: GptqBlockOptions,
  workers: GptqWorkers | undefined,
): Promise<GptqPartResult> {
  const minWeights = workers?.minWeights ?? MIN_PARALLEL_WEIGHTS;
  const factor: GptqFactor = gptqFactor(hessian, k, opts);
  const job = (r0: number, r1: number): GptqPartJob => ({
    target: target ?? '',
    rowLength: k,
    rows: r1 - r0,
    w: w.subarray(r0 * k, r1 * k),
    factor,
    blockSize: opts.blockSize ?? 128,
    actOrder: !!opts.actOrder,
    importance: opts.importance,
    clipWeights: opts.clipWeights,
  });
  const parts = workers && target && n * k >= minWeights ? Math.min(n, workers.count + 1) : 1;
  if (parts === 1) return gptqPartRun(job(0, n), codec);
  const per = Math.ceil(n / parts);
  const ranges: [number, number][] = [];
  for (let r0 = 0; r0 < n; r0 += per) ranges.push([r0, Math.min(n, r0 + per)]);
  const remote = ranges.slice(1).map(([a, b]) => workers!.run(job(a, b)));
  let local: GptqPartResult;
  try {
    local = gptqPartRun(job(ranges[0][0], ranges[0][1]), codec);
  } finally {
    // every part settles before an error surfaces
    await Promise.allSettled(remote);
  }
  const results = [local, ...(await Promise.all(remote))];
  const bytes = new Uint8Array(results.reduce((a, r) => a + r.bytes.length, 0));
  const q = new Float32Array(n * k);
  let at = 0;
  results.forEach((r, i) => {
    bytes.set(r.bytes, at);
    at += r.bytes.length;
    q.set(r.q, ranges[i][0] * k);
  });
  return { bytes, q };
}
