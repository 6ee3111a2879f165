/**
 * Node's thread starter for the WebAssembly kernels: worker_threads running src/cli/kernel-worker.ts.
 * Workers are unref'd (they never keep the process alive) and stop with MatmulEngine.close().
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { setStartWorker, type KernelWorkerInit } from '../kernels/threads.js';

const workerUrl = new URL('./kernel-worker.js', import.meta.url);

/** Let the kernels start worker_threads. */
export function useNodeThreads(): void {
  setStartWorker((init: KernelWorkerInit) => {
    const w = new Worker(workerUrl, { workerData: init });
    w.unref();
    return w;
  });
}

/**
 * The one default thread count: the hardware threads this process may use, at most `max` (8 for the
 * matmul kernels, whose speed stops growing there; `lowbit quantize` passes Infinity: row quantization
 * uses every core).
 */
export function defaultThreads(max = 8): number {
  return Math.max(1, Math.min(max, availableParallelism()));
}

/** The --threads option of the commands that run a model. */
export const threadsOption = {
  name: 'threads',
  short: 't',
  type: 'int',
  help: 'threads for the WebAssembly matmul (default: hardware threads, at most 8)',
  min: 1,
  max: 256,
} as const;

/** Install the worker_threads starter and return the thread count asked for (or the default). */
export function threadsFrom(value: unknown): number {
  useNodeThreads();
  return typeof value === 'number' ? value : defaultThreads();
}
