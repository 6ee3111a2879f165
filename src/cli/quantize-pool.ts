/**
 * Node's row quantizer pool (`lowbit quantize --threads N`): the platform-free RowPool
 * (src/kernels/row-pool.ts) with worker_threads running quantize-worker.ts.
 */
import { Worker } from 'node:worker_threads';
import { RowPool, type QuantizePoolOptions, type RowWorkerPort } from '../kernels/row-pool.js';
import type { RowQuantizer } from '../pipeline/quantize.js';

export { workOn, NEXT, FAILED, BY_WORKERS, type RowJob, type QuantizePoolOptions } from '../kernels/row-pool.js';

function nodeRowWorker(variant: string): RowWorkerPort {
  const w = new Worker(new URL('./quantize-worker.js', import.meta.url), { workerData: { variant } });
  return {
    post: (job) => w.postMessage(job),
    listen(onMessage, onError) {
      w.on('message', onMessage);
      w.on('error', onError);
    },
    ref: () => w.ref(),
    unref: () => w.unref(),
    terminate: () => w.terminate(),
  };
}

export class QuantizePool extends RowPool implements RowQuantizer {
  /** threads: this one plus threads - 1 workers */
  constructor(threads: number, o: QuantizePoolOptions = {}) {
    super(threads, nodeRowWorker, o);
  }
}
