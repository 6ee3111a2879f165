/**
 * GPTQ and AutoRound over ranges of rows: given the factor of the Hessian (gptqFactor), every row is
 * quantized on its own by GPTQ, and AutoRound's per-linear loss and all its decisions are per row
 * (algos/autoround.ts), so a weight can be split into row ranges quantized on other threads (a
 * host-provided GptqWorkers, e.g. the CLI's worker pool) and put back together: the same bytes as one
 * call.
 */
import { autoRoundBlocks, type AutoRoundOptions, type AutoRoundStats } from '../algos/autoround.js';
import { gptqBlocksWithFactor, gptqFactor, type GptqBlockOptions, type GptqFactor } from '../algos/gptq.js';
import { blockCodecFor, type BlockCodec } from '../algos/block-codec.js';
import { resolveScheme, type ResolveOptions } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';

/**
 * One range of rows: `target` is 'ggml:' + a GGML type name, 'scheme:' + an id resolveScheme knows, or
 * 'resolve:' + the JSON of [name, options] that resolveScheme(name, options) turns into the scheme (a
 * scheme made from options, e.g. int4 with group 128: its id int4_g128_f16 does not resolve by itself).
 */
export interface GptqPartJob {
  kind?: 'gptq';
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
  /** AutoRound's statistics of the range */
  stats?: AutoRoundStats;
}

/** One range of rows for AutoRound: the rows' weights, the whole input Hessian (f32), the options. */
export interface AutoRoundPartJob {
  kind: 'autoround';
  target: string;
  rowLength: number;
  rows: number;
  w: Float32Array;
  h: Float32Array;
  options: Pick<AutoRoundOptions, 'iters' | 'lr' | 'clip' | 'regrids' | 'alphaMin' | 'alphaMax'>;
  importance?: Float32Array;
  /** the start's bytes and values of these rows (gptq+autoround) */
  init?: { bytes: Uint8Array; q: Float32Array };
}

export type RowPartJob = GptqPartJob | AutoRoundPartJob;

/** Threads that run GptqPartJobs and AutoRoundPartJobs (the calling thread works too). */
export interface GptqWorkers {
  readonly count: number;
  /** split only weights of at least this many elements (default 65 536) */
  readonly minWeights?: number;
  run(job: RowPartJob): Promise<GptqPartResult>;
}

/** the codec of a job's target ('ggml:Q4_K', 'scheme:int4_g128', 'resolve:["int4",{"groupSize":128}]') */
export function partCodec(target: string, rowLength: number): BlockCodec {
  const [kind, name] = [target.slice(0, target.indexOf(':')), target.slice(target.indexOf(':') + 1)];
  if (kind === 'ggml') return blockCodecFor(name, rowLength);
  if (kind === 'scheme') return blockCodecFor(resolveScheme(name), rowLength);
  if (kind === 'resolve') {
    const [scheme, options] = JSON.parse(name) as [string, ResolveOptions];
    return blockCodecFor(resolveScheme(scheme, options), rowLength);
  }
  throw new Error(`GPTQ part: unknown target ${target}`);
}

/**
 * the job target of a planned codec target, when another thread can rebuild it (else undefined): `from`
 * is what the plan resolved the scheme from (resolveScheme(from.name, from.options)), for schemes whose
 * id alone does not resolve. Either way the rebuilt scheme's id must be the planned one.
 */
export function partTarget(scheme: QuantScheme | undefined, ggmlName: string | undefined, from?: { name: string; options: ResolveOptions }): string | undefined {
  if (!scheme) return ggmlName ? `ggml:${ggmlName}` : undefined;
  if (scheme.family === 'ggml') return `ggml:${scheme.name.replace(/^ggml_/i, '')}`;
  const rebuilds = (f: () => QuantScheme) => {
    try {
      return f().id === scheme.id;
    } catch {
      return false;
    }
  };
  if (rebuilds(() => resolveScheme(scheme.id))) return `scheme:${scheme.id}`;
  if (from && rebuilds(() => resolveScheme(from.name, from.options))) return `resolve:${JSON.stringify([from.name, from.options])}`;
  return undefined;
}

/** Quantize the rows of one job (in any thread). */
export function gptqPartRun(job: RowPartJob, codec = partCodec(job.target, job.rowLength)): GptqPartResult {
  if (job.kind === 'autoround') return autoRoundBlocks(codec, job.w, job.rows, job.rowLength, job.h, { ...job.options, importance: job.importance, init: job.init });
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
  const parts = rowParts(n, k, target, workers);
  if (parts === 1) return gptqPartRun(job(0, n), codec);
  // the other threads get U in one shared array (posted without a copy; the calling thread reads its own)
  const remote = portableFactor(factor);
  return splitRows(n, k, parts, workers!, (r0, r1, other) => (other ? { ...job(r0, r1), factor: remote } : job(r0, r1)), (j) => gptqPartRun(j, codec));
}

const portable = new WeakMap<GptqFactor, GptqFactor>();

/** a factor other threads can take: plain fields, U in a SharedArrayBuffer where there is one (one copy per factor) */
function portableFactor(f: GptqFactor): GptqFactor {
  let p = portable.get(f);
  if (!p) {
    const u = f.u;
    // U in a shared memory already (the factor memory, when shared): a view of it goes as it is -- the
    // factor stays until this weight's rows are done (the next factor is made after), and the rows'
    // workspaces on this thread lie above U
    const inShared = typeof SharedArrayBuffer !== 'undefined' && u.buffer instanceof SharedArrayBuffer;
    const shared = inShared ? u : typeof SharedArrayBuffer !== 'undefined' ? new Float64Array(new SharedArrayBuffer(u.byteLength)) : new Float64Array(u.length);
    if (!inShared) shared.set(u);
    p = { k: f.k, u: shared, dead: f.dead, ...(f.perm ? { perm: f.perm } : {}) };
    portable.set(f, p);
  }
  return p;
}

/** how many row ranges an n x k matrix is split into: one per worker and this thread when there are workers, a target and enough weights */
function rowParts(n: number, k: number, target: string | undefined, workers: GptqWorkers | undefined): number {
  const minWeights = workers?.minWeights ?? MIN_PARALLEL_WEIGHTS;
  return workers && target && n * k >= minWeights ? Math.min(n, workers.count + 1) : 1;
}

/**
 * n rows in `parts` ranges: the first on this thread (runLocal), the others on the workers, joined in row
 * order. Every part settles before an error surfaces.
 */
async function splitRows<J extends RowPartJob>(n: number, k: number, parts: number, workers: GptqWorkers, job: (r0: number, r1: number, other: boolean) => J, runLocal: (j: J) => GptqPartResult): Promise<GptqPartResult> {
  const ranges = rowRanges(n, parts);
  const remote = ranges.slice(1).map(([a, b]) => workers.run(job(a, b, true)));
  let local: GptqPartResult;
  try {
    local = runLocal(job(ranges[0][0], ranges[0][1], false));
  } finally {
    await Promise.allSettled(remote);
  }
  return joinParts([local, ...(await Promise.all(remote))], ranges, n, k);
}

/** the rows' ranges of n rows in `parts` parts */
function rowRanges(n: number, parts: number): [number, number][] {
  const per = Math.ceil(n / parts);
  const ranges: [number, number][] = [];
  for (let r0 = 0; r0 < n; r0 += per) ranges.push([r0, Math.min(n, r0 + per)]);
  return ranges;
}

function joinParts(results: GptqPartResult[], ranges: [number, number][], n: number, k: number): GptqPartResult {
  const bytes = new Uint8Array(results.reduce((a, r) => a + r.bytes.length, 0));
  const q = new Float32Array(n * k);
  let at = 0;
  results.forEach((r, i) => {
    bytes.set(r.bytes, at);
    at += r.bytes.length;
    q.set(r.q, ranges[i][0] * k);
  });
  const st = results.map((r) => r.stats).filter((x): x is AutoRoundStats => !!x);
  const stats = st.length ? { lossStart: st.reduce((a, x) => a + x.lossStart, 0), loss: st.reduce((a, x) => a + x.loss, 0), changed: st.reduce((a, x) => a + x.changed, 0), seconds: Math.max(...st.map((x) => x.seconds)) } : undefined;
  return stats ? { bytes, q, stats } : { bytes, q };
}

/**
 * AutoRound of w (n x k) into `codec`'s bytes (algos/autoround.ts), its rows split over the workers and
 * this thread when it is big enough: the same bytes and values as one autoRoundBlocks call.
 */
export async function autoRoundBlocksParallel(
  w: Float32Array,
  n: number,
  k: number,
  hessian: Float64Array,
  codec: BlockCodec,
  target: string | undefined,
  opts: AutoRoundOptions,
  workers: GptqWorkers | undefined,
): Promise<GptqPartResult & { stats: AutoRoundStats }> {
  const parts = rowParts(n, k, target, workers);
  if (parts === 1) return autoRoundBlocks(codec, w, n, k, hessian, opts);
  // H in f32 and the other threads' rows in shared memory kept between calls: posted without a copy (a
  // view of w was posted with w's whole buffer), no new pages on either side (see postArrays)
  const mem = postArrays.inUse ? undefined : postArrays;
  if (mem) mem.inUse = true;
  try {
    const h = portableF32(mem, 'h', k * k);
    h.set(hessian);
    const remoteRows = portableF32(mem, 'w', n * k);
    const rowBytes = (k / codec.blockSize) * codec.blockBytes;
    const { importance, init, fast: _fast, ...options } = opts;
    const job = (r0: number, r1: number, other: boolean): AutoRoundPartJob => {
      let rows = w.subarray(r0 * k, r1 * k);
      if (other) (rows = remoteRows.subarray(r0 * k, r1 * k)).set(w.subarray(r0 * k, r1 * k));
      return {
        kind: 'autoround',
        target: target!,
        rowLength: k,
        rows: r1 - r0,
        w: rows,
        h,
        options,
        importance,
        init: init && { bytes: init.bytes.subarray(r0 * rowBytes, r1 * rowBytes), q: init.q.subarray(r0 * k, r1 * k) },
      };
    };
    const r = await splitRows(n, k, parts, workers!, job, (j) => autoRoundBlocks(codec, j.w, j.rows, k, h, { ...options, importance, init: j.init, fast: opts.fast }));
    return { ...r, stats: r.stats! };
  } finally {
    if (mem) mem.inUse = false;
  }
}

/**
 * autoRoundBlocksParallel's arrays for the other threads, kept from call to call (one call at a time
 * uses them; a concurrent one takes new arrays): in a SharedArrayBuffer where there is one. New arrays
 * for every linear took their pages from the system at the first touch, on both sides of the post.
 */
const postArrays: { inUse: boolean; f32: Map<string, Float32Array> } = { inUse: false, f32: new Map() };

/** the kept array `name` of n floats (grown when short), or a new one without `mem` */
function portableF32(mem: typeof postArrays | undefined, name: string, n: number): Float32Array {
  const make = (len: number) => (typeof SharedArrayBuffer !== 'undefined' ? new Float32Array(new SharedArrayBuffer(len * 4)) : new Float32Array(len));
  if (!mem) return make(n);
  let a = mem.f32.get(name);
  if (!a || a.length < n) mem.f32.set(name, (a = make(n)));
  return a.subarray(0, n);
}
