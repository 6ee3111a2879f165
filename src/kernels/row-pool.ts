/**
 * Multi-threaded quantization of GGML tensors (RowQuantizer for pipeline/quantize.ts), without any
 * platform API: the host passes how a worker is started (Node: worker_threads, src/cli/quantize-pool.ts;
 * browsers: Web Workers, src/lab/). N threads = this thread + N - 1 workers, each of which runs
 * `workOn(job, codec, true)` for every job message it receives and answers `{ id }` or `{ id, error }`.
 *
 * The tensor lives in shared memory (allocate() hands the pipeline shared arrays to read tensors into;
 * other inputs are copied once). Its rows are cut into ranges that every thread, this one included,
 * claims one at a time from an atomic counter, so a thread the OS delays simply takes fewer ranges;
 * each range's blocks go into a shared output (the caller's, when it passes one from allocateBytes)
 * and, when asked, each row's error sums into a shared array. Rows are independent in every GGML
 * quantizer (and in the error sums), so the bytes do not depend on the number of threads or on who
 * ran which range. A failure (e.g. a non-finite value) stops the claiming, and the tensor is then
 * quantized in this thread alone so that the error reads exactly as it does without threads.
 */
import { quantizationErrorsFast, quantizeRowsMeasured } from './ggml-quant.js';
import { wasmVariant, type WasmVariant } from './wasm.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import { ggmlTypeByName, type GgmlCodec, type GgmlTypeInfo } from '../quant/ggml/types.js';

/** Tensors smaller than this (elements) are quantized in this thread by default: not worth the hand-off. */
const MIN_PARALLEL = 1 << 16;
/** row ranges per thread */
const RANGES_PER_THREAD = 8;

/** control words (Int32Array over job.control) */
export const NEXT = 0; // next range to claim
export const FAILED = 1; // non-zero: stop claiming
export const BY_WORKERS = 2; // ranges quantized by worker threads (statistics)

/** One tensor's work, as every thread sees it. */
export interface RowJob {
  type: string;
  input: SharedArrayBuffer;
  /** byte offset of row 0 in input */
  inputOffset: number;
  output: SharedArrayBuffer;
  /** byte offset of row 0's blocks in output */
  outputOffset: number;
  nRows: number;
  rowLength: number;
  rowBytes: number;
  ranges: number;
  control: SharedArrayBuffer;
  importance?: Float32Array;
  /** when set: 2 float64 per row, the row's error sums (quantizeRowsMeasured) */
  errors?: SharedArrayBuffer;
}

/** Claims and quantizes ranges until none is left or another thread failed. */
export function workOn(job: RowJob, codec: GgmlCodec, isWorker: boolean): void {
  const ctl = new Int32Array(job.control);
  try {
    for (;;) {
      if (Atomics.load(ctl, FAILED)) return;
      const i = Atomics.add(ctl, NEXT, 1);
      if (i >= job.ranges) return;
      const row = Math.floor((i * job.nRows) / job.ranges);
      const rows = Math.floor(((i + 1) * job.nRows) / job.ranges) - row;
      const src = new Float32Array(job.input, job.inputOffset + row * job.rowLength * 4, rows * job.rowLength);
      const out = new Uint8Array(job.output, job.outputOffset + row * job.rowBytes, rows * job.rowBytes);
      if (job.errors) quantizeRowsMeasured(codec, src, rows, job.rowLength, out, new Float64Array(job.errors, row * 16, rows * 2), job.importance);
      else codec.quantize!(src, rows, job.rowLength, out, job.importance);
      if (isWorker) Atomics.add(ctl, BY_WORKERS, 1);
    }
  } catch (e) {
    Atomics.store(ctl, FAILED, 1);
    throw e;
  }
}

/**
 * Several types' quantization errors of the same rows (RowPool.errorRows), as every thread sees it: the
 * work is cut into (type, row range) items claimed from an atomic counter; each item's rows are
 * quantized to the type, decoded, and minus the input written to the output (type t's rows at
 * t * nRows * rowLength floats). Rows are independent in every GGML quantizer, so the values do not
 * depend on the split.
 */
export interface ErrorJob {
  kind: 'errors';
  types: string[];
  /** per type: does its codec get the importance */
  weighted: boolean[];
  importance?: Float32Array;
  input: SharedArrayBuffer;
  inputOffset: number;
  /** float32 ΔW, types.length x nRows x rowLength */
  output: SharedArrayBuffer;
  nRows: number;
  rowLength: number;
  /** row ranges per type */
  ranges: number;
  control: SharedArrayBuffer;
}

/** a job message: a tensor's rows to quantize (RowJob) or several types' errors of rows (ErrorJob) */
export type PoolJob = RowJob | ErrorJob;

/** grow-only blocks of one item (per thread: every thread has its own module instance) */
let errorBlocks = new Uint8Array(0);

/**
 * out = dequantize(quantize(src)) - src for nRows rows in `type`: the kernel's quantize, decode and
 * subtract in its own memory when no importance is given (the blocks never travel through JavaScript;
 * the same values), else the codec's, its blocks in this thread's grow-only scratch
 */
function quantizationErrors(type: GgmlTypeInfo, codec: GgmlCodec, src: Float32Array, nRows: number, rowLength: number, out: Float32Array, importance: Float32Array | undefined): void {
  if (importance === undefined && quantizationErrorsFast(type, src, nRows, rowLength, out)) return;
  const n = nRows * rowLength;
  const bytes = nRows * (rowLength / type.blockSize) * type.typeSize;
  if (errorBlocks.length < bytes) errorBlocks = new Uint8Array(bytes);
  const blocks = errorBlocks.subarray(0, bytes);
  codec.quantize!(src.subarray(0, n), nRows, rowLength, blocks, importance); // (the callers checked it has one)
  codec.dequantize(blocks, n, out);
  for (let k = 0; k < n; k++) out[k] -= src[k];
}

/** Claims and runs (type, row range) items of an error job until none is left or another thread failed. */
export function errorsOn(job: ErrorJob, isWorker: boolean): void {
  const ctl = new Int32Array(job.control);
  const { nRows, rowLength, ranges } = job;
  const items = job.types.length * ranges;
  try {
    for (;;) {
      if (Atomics.load(ctl, FAILED)) return;
      const i = Atomics.add(ctl, NEXT, 1);
      if (i >= items) return;
      const t = Math.floor(i / ranges);
      const r = i - t * ranges;
      const row = Math.floor((r * nRows) / ranges);
      const rows = Math.floor(((r + 1) * nRows) / ranges) - row;
      const info = ggmlTypeByName(job.types[t]);
      const codec = info && ggmlCodec(info);
      if (!info || !codec?.quantize) throw new Error(`cannot quantize to ${job.types[t]}`);
      const src = new Float32Array(job.input, job.inputOffset + row * rowLength * 4, rows * rowLength);
      const out = new Float32Array(job.output, (t * nRows + row) * rowLength * 4, rows * rowLength);
      quantizationErrors(info, codec, src, rows, rowLength, out, job.weighted[t] ? job.importance : undefined);
      if (isWorker) Atomics.add(ctl, BY_WORKERS, 1);
    }
  } catch (e) {
    Atomics.store(ctl, FAILED, 1);
    throw e;
  }
}

/** A worker's handling of one job message (both kinds); throws what the codec throws. */
export function runPoolJob(job: PoolJob): void {
  if ('kind' in job && job.kind === 'errors') return errorsOn(job, true);
  const j = job as RowJob;
  const codec = ggmlCodec(j.type);
  if (!codec?.quantize) throw new Error(`cannot quantize to ${j.type}`);
  workOn(j, codec, true);
}

/** A started row worker, as the host's spawn function returns it. */
export interface RowWorkerPort {
  post(job: PoolJob & { id: number }): void;
  /** register the handlers of the worker's answers and of its failure */
  listen(onMessage: (m: { id: number; error?: string }) => void, onError: (e: Error) => void): void;
  /** hold the process open while the worker has work (Node); optional */
  ref?(): void;
  unref?(): void;
  terminate(): unknown;
}

/** Starts one row worker that quantizes with the given WebAssembly build. */
export type SpawnRowWorker = (variant: WasmVariant) => RowWorkerPort;

interface Pending {
  resolve(): void;
  reject(e: Error): void;
}

export interface QuantizePoolOptions {
  /** tensors with fewer elements stay in this thread (default 65536) */
  minParallel?: number;
  /** false: this thread only waits, the workers do every range (for tests); default true */
  callerWorks?: boolean;
}

export class RowPool {
  private workers: RowWorkerPort[] = [];
  private pending = new Map<number, Pending>();
  private nextId = 0;
  private readonly minParallel: number;
  private readonly callerWorks: boolean;
  /** ranges the worker threads quantized in the last parallel call, of how many */
  lastSplit = { byWorkers: 0, ranges: 0 };

  /** threads: this one plus threads - 1 workers */
  constructor(readonly threads: number, private readonly spawn: SpawnRowWorker, o: QuantizePoolOptions = {}) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`thread count ${threads} is not a positive integer`);
    this.minParallel = o.minParallel ?? MIN_PARALLEL;
    this.callerWorks = o.callerWorks ?? true;
  }

  /** start the worker threads (done on first parallel use; earlier, their start-up overlaps the caller's work) */
  start(): void {
    if (this.workers.length || this.threads < 2) return;
    const variant = wasmVariant();
    for (let i = 1; i < this.threads; i++) {
      const w = this.spawn(variant);
      w.listen(
        (m) => {
          const p = this.pending.get(m.id);
          if (!p) return;
          this.pending.delete(m.id);
          if (m.error !== undefined) p.reject(new Error(m.error));
          else p.resolve();
        },
        (e) => {
          for (const p of this.pending.values()) p.reject(e);
          this.pending.clear();
        },
      );
      w.unref?.(); // idle workers do not hold the process open; run() refs them while they work
      this.workers.push(w);
    }
  }

  private run(w: RowWorkerPort, job: PoolJob): Promise<void> {
    const id = this.nextId++;
    w.ref?.();
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve: () => (w.unref?.(), resolve()), reject: (e) => (w.unref?.(), reject(e)) });
      w.post({ ...job, id });
    });
  }

  // created on first parallel use: a one-thread pool must work where SharedArrayBuffer does not exist
  private scratchIn?: SharedArrayBuffer;
  private scratchOut?: SharedArrayBuffer;
  private scratchErr?: SharedArrayBuffer;

  /** A zero-filled float array in shared memory: tensors read into it reach the workers without a copy. */
  allocate(n: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(n * 4));
  }

  /** A zero-filled byte array in shared memory: blocks quantized into it need no copy from the workers. */
  allocateBytes(n: number): Uint8Array {
    return new Uint8Array(new SharedArrayBuffer(n));
  }

  /**
   * Quantize rows (bytes of codec.quantize for any split); with rowErr, also each row's error sums
   * (quantizeRowsMeasured). The blocks go into `out` when given (and it is returned, cut to length),
   * else into a fresh array.
   */
  async quantizeRows(type: GgmlTypeInfo, src: Float32Array, nRows: number, rowLength: number, importance?: Float32Array, rowErr?: Float64Array, out?: Uint8Array): Promise<Uint8Array> {
    const codec = ggmlCodec(type);
    if (!codec?.quantize) throw new Error(`no quantizer for ${type.name}`);
    const rowBytes = (rowLength / type.blockSize) * type.typeSize;
    const n = nRows * rowLength;
    if (out && out.length < nRows * rowBytes) throw new Error(`quantizeRows: output has ${out.length} bytes, ${nRows} rows need ${nRows * rowBytes}`);
    const inThread = (): Uint8Array => {
      const o = out ? out.subarray(0, nRows * rowBytes) : new Uint8Array(nRows * rowBytes);
      if (rowErr) quantizeRowsMeasured(codec, src, nRows, rowLength, o, rowErr, importance);
      else codec.quantize!(src, nRows, rowLength, o, importance);
      return o;
    };
    const ranges = Math.min(nRows, this.threads * RANGES_PER_THREAD);
    if (this.threads < 2 || ranges < 2 || n < this.minParallel || !Number.isInteger(rowBytes) || src.length < n) return inThread();
    this.start();
    const { input, inputOffset } = this.sharedInput(src, n);
    const direct = out !== undefined && out.buffer instanceof SharedArrayBuffer; // the workers write into out
    if (!direct && (this.scratchOut?.byteLength ?? -1) < nRows * rowBytes) this.scratchOut = new SharedArrayBuffer(nRows * rowBytes);
    if (rowErr && (this.scratchErr?.byteLength ?? -1) < nRows * 16) this.scratchErr = new SharedArrayBuffer(nRows * 16);
    const job: RowJob = {
      type: type.name, input, inputOffset, output: direct ? (out.buffer as SharedArrayBuffer) : this.scratchOut!, outputOffset: direct ? out.byteOffset : 0, nRows, rowLength, rowBytes, ranges,
      control: new SharedArrayBuffer(16), importance, ...(rowErr ? { errors: this.scratchErr } : {}),
    };
    const workers = this.workers.map((w) => this.run(w, job));
    let failed = false;
    try {
      if (this.callerWorks) workOn(job, codec, false); // this thread claims ranges too
    } catch {
      failed = true;
    }
    const results = await Promise.allSettled(workers);
    this.lastSplit = { byWorkers: new Int32Array(job.control)[BY_WORKERS], ranges };
    if (failed || results.some((r) => r.status === 'rejected')) return inThread(); // reports the problem as the codec does
    if (rowErr) rowErr.set(new Float64Array(this.scratchErr!, 0, 2 * nRows));
    const blocks = new Uint8Array(job.output, job.outputOffset, nRows * rowBytes);
    if (direct) return blocks;
    if (out) {
      out.set(blocks);
      return out.subarray(0, blocks.length);
    }
    return blocks.slice(); // the caller may keep it; the scratch is reused
  }

  /**
   * The first n values of src where the workers can read them: src itself when it lives in shared memory,
   * else a copy in one grow-only shared scratch (fresh SharedArrayBuffers per slab are external memory
   * the GC frees late, and peak RSS grew by gigabytes on a 4.4 GB model).
   */
  private sharedInput(src: Float32Array, n: number): { input: SharedArrayBuffer; inputOffset: number } {
    if (src.buffer instanceof SharedArrayBuffer && src.byteOffset % 4 === 0) return { input: src.buffer, inputOffset: src.byteOffset };
    if ((this.scratchIn?.byteLength ?? -1) < n * 4) this.scratchIn = new SharedArrayBuffer(n * 4);
    new Float32Array(this.scratchIn!, 0, n).set(src.subarray(0, n));
    return { input: this.scratchIn!, inputOffset: 0 };
  }

  /**
   * The quantization errors ΔW = dequantize(quantize(rows)) - rows of `nRows` rows for each of `types`
   * (type t's rows at t * nRows * rowLength of the result), every thread quantizing and decoding
   * (type, row range) items: the values of codec.quantize and codec.dequantize in this thread for any
   * split. `weighted[t]`: type t's codec gets the importance. The result is a view of a scratch the
   * next call reuses.
   */
  async errorRows(types: readonly GgmlTypeInfo[], src: Float32Array, nRows: number, rowLength: number, importance?: Float32Array, weighted?: readonly boolean[]): Promise<Float32Array> {
    const n = nRows * rowLength;
    const total = types.length * n;
    const w = types.map((_, t) => weighted?.[t] ?? false);
    // (grow-only: fresh memory costs a page fault per 4 KiB)
    if ((this.scratchDelta?.length ?? -1) < total) this.scratchDelta = this.threads < 2 ? new Float32Array(total) : new Float32Array(new SharedArrayBuffer(total * 4));
    const out = this.scratchDelta!.subarray(0, total);
    const inThread = (): Float32Array => {
      types.forEach((type, t) => {
        const codec = ggmlCodec(type);
        if (!codec?.quantize) throw new Error(`no quantizer for ${type.name}`);
        quantizationErrors(type, codec, src, nRows, rowLength, out.subarray(t * n, (t + 1) * n), w[t] ? importance : undefined);
      });
      return out;
    };
    const ranges = Math.min(nRows, Math.max(1, Math.ceil((this.threads * RANGES_PER_THREAD) / Math.max(1, types.length))));
    if (this.threads < 2 || types.length * ranges < 2 || total < this.minParallel || src.length < n || types.some((t) => !Number.isInteger(rowLength / t.blockSize))) return inThread();
    this.start();
    const { input, inputOffset } = this.sharedInput(src, n);
    const job: ErrorJob = { kind: 'errors', types: types.map((t) => t.name), weighted: w, importance, input, inputOffset, output: this.scratchDelta!.buffer as SharedArrayBuffer, nRows, rowLength, ranges, control: new SharedArrayBuffer(16) };
    const workers = this.workers.map((wk) => this.run(wk, job));
    let failed = false;
    try {
      if (this.callerWorks) errorsOn(job, false);
    } catch {
      failed = true;
    }
    const results = await Promise.allSettled(workers);
    this.lastSplit = { byWorkers: new Int32Array(job.control)[BY_WORKERS], ranges: types.length * ranges };
    if (failed || results.some((r) => r.status === 'rejected')) return inThread(); // reports the problem as the codec does
    return out;
  }

  private scratchDelta?: Float32Array;

  /** Stop the workers (idle workers do not keep the process alive either way). */
  async close(): Promise<void> {
    const ws = this.workers;
    this.workers = [];
    for (const p of this.pending.values()) p.reject(new Error('the quantize pool was closed'));
    this.pending.clear();
    await Promise.all(ws.map((w) => w.terminate()));
  }

  /** worker threads started so far */
  get started(): number {
    return this.workers.length;
  }
}
