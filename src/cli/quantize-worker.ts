/**
 * Worker thread of the quantize pool (quantize-pool.ts): claims row ranges of a shared tensor and
 * quantizes them with the registered codec (the WebAssembly kernels without importance, the scalar
 * references with it), exactly as the calling thread does.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { installWasmQuantizers } from '../kernels/ggml-quant.js';
import { setWasmVariant, type WasmVariant } from '../kernels/wasm.js';
import { runPoolJob, type PoolJob } from '../kernels/row-pool.js';

setWasmVariant((workerData as { variant: WasmVariant }).variant);
installWasmQuantizers();

parentPort!.on('message', (job: PoolJob & { id: number }) => {
  try {
    runPoolJob(job);
    parentPort!.postMessage({ id: job.id });
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error)?.message ?? String(e) });
  }
});
