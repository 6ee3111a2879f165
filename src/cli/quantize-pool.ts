/**
 * A pool of worker threads that quantizes the rows of a tensor in parallel (RowQuantizer for
 * pipeline/quantize.ts; `lowbit quantize --threads N`). The tensor is copied once into shared memory,
 * cut into ranges of whole rows (a few per thread, each taken by the next free worker), and each worker
 * writes its rows' blocks into a shared output. Rows are independent in every GGML quantizer, so the bytes do not depend on the
 * number of threads. A worker error (e.g. a non-finite value) makes the pool quantize the tensor in
 * this thread instead, so that the error reads exactly as it does without threads.
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import '../kernels/ggml-quant.js';
import { wasmVariant } from '../kernels/wasm.js';
import '../quant/ggml/index.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import type { GgmlTypeInfo } from '../quant/ggml/types.js';
import type { RowQuantizer } from '../pipeline/quantize.js';

/** Tensors smaller than this (elements) are quantized in this thread by default: not worth the hand-off. */
const MIN_PARALLEL = 1 << 16;
/** row ranges per thread (dynamic balancing) */
const CHUNKS_PER_THREAD = 4;

export interface RowTask {
  id: number;
  type: string;
  input: SharedArrayBuffer;
  inputOffset: number;
  output: SharedArrayBuffer;
  outputOffset: number;
  outputBytes: number;
  nRows: number;
  rowLength: number;
  importance?: Float32Array;
}

interface Pending {
  resolve(): void;
  reject(e: Error): void;
}

/** Default thread count: every core the process may use. */
export function defaultThreads(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

export class QuantizePool implements RowQuantizer {
  private workers: Worker[] = [];
  /** tasks in flight per worker: a worker holds the process open only while it has some */
  private busy: number[] = [];
  private pending = new Map<number, Pending>();
  private nextId = 0;
  /** shared copy of the input, reused across tensors (fresh pages cost as much as the copy) */
  private inputBuffer: SharedArrayBuffer | undefined;

  /** minParallel: tensors with fewer elements stay in this thread */
  constructor(readonly threads: number, private readonly minParallel = MIN_PARALLEL) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`thread count ${threads} is not a positive integer`);
  }

  private start(): void {
    if (this.workers.length) return;
    const variant = wasmVariant();
    for (let i = 0; i < this.threads; i++) {
      const w = new Worker(new URL('./quantize-worker.js', import.meta.url), { workerData: { variant } });
      w.on('message', (m: { id: number; error?: string }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.error !== undefined) p.reject(new Error(m.error));
        else p.resolve();
      });
      w.on('error', (e) => {
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
      });
      w.unref();
      this.workers.push(w);
      this.busy.push(0);
    }
  }

  private run(k: number, task: Omit<RowTask, 'id'>): Promise<void> {
    const id = this.nextId++;
    const w = this.workers[k];
    if (this.busy[k]++ === 0) w.ref();
    const done = () => {
      if (--this.busy[k] === 0) w.unref();
    };
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve: () => (done(), resolve()), reject: (e) => (done(), reject(e)) });
      w.postMessage({ ...task, id });
    });
  }

  async quantizeRows(type: GgmlTypeInfo, src: Float32Array, nRows: number, rowLength: number, importance?: Float32Array): Promise<Uint8Array> {
    const codec = ggmlCodec(type);
    if (!codec?.quantize) throw new Error(`no quantizer for ${type.name}`);
    const rowBytes = (rowLength / type.blockSize) * type.typeSize;
    const n = nRows * rowLength;
    const parts = Math.min(this.threads, nRows);
    const inThread = (): Uint8Array => {
      const out = new Uint8Array(nRows * rowBytes);
      codec.quantize!(src, nRows, rowLength, out, importance);
      return out;
    };
    if (parts < 2 || n < this.minParallel || !Number.isInteger(rowBytes)) return inThread();
    this.start();
    let input: SharedArrayBuffer;
    if (src.buffer instanceof SharedArrayBuffer && src.byteOffset % 4 === 0) input = src.buffer;
    else {
      if (!this.inputBuffer || this.inputBuffer.byteLength < n * 4) this.inputBuffer = new SharedArrayBuffer(n * 4);
      input = this.inputBuffer;
      new Float32Array(input, 0, n).set(src.subarray(0, n));
    }
    const base = input === src.buffer ? src.byteOffset : 0;
    const output = new SharedArrayBuffer(nRows * rowBytes);
    // CHUNKS_PER_THREAD row ranges per thread, each given to whichever worker is free: a thread that
    // the OS delays takes fewer ranges
    const ranges = Math.min(nRows, parts * CHUNKS_PER_THREAD);
    let next = 0;
    let failed = false;
    const worker = async (k: number): Promise<void> => {
      while (next < ranges && !failed) {
        const i = next++;
        const row = Math.floor((i * nRows) / ranges);
        const rows = Math.floor(((i + 1) * nRows) / ranges) - row;
        try {
          await this.run(k, {
            type: type.name, input, inputOffset: base + row * rowLength * 4, output, outputOffset: row * rowBytes,
            outputBytes: rows * rowBytes, nRows: rows, rowLength, importance,
          });
        } catch {
          failed = true;
        }
      }
    };
    await Promise.all(Array.from({ length: parts }, (_, k) => worker(k)));
    if (failed) return inThread(); // reports the problem as the codec does
    return new Uint8Array(output);
  }

  /** Stop the workers (idle workers do not keep the process alive either way). */
  async close(): Promise<void> {
    const ws = this.workers;
    this.workers = [];
    this.busy = [];
    this.inputBuffer = undefined;
    await Promise.all(ws.map((w) => w.terminate()));
  }
}
