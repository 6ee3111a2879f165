/**
 * Worker thread of the quantize pool (quantize-pool.ts): claims row ranges of a shared tensor and
 * quantizes them with the registered codec (the WebAssembly kernels without importance, the scalar
 * references with it), exactly as the calling thread does.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { installWasmQuantizers } from '../kernels/ggml-quant.js';
import { setWasmVariant, type WasmVariant } from '../kernels/wasm.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import { workOn, type RowJob } from './quantize-pool.js';

setWasmVariant((workerData as { variant: WasmVariant }).variant);
installWasmQuantizers();

parentPort!.on('message', (job: RowJob & { id: number }) => {
  try {
    const codec = ggmlCodec(job.type);
    if (!codec?.quantize) throw new Error(`cannot quantize to ${job.type}`);
    workOn(job, codec, true);
    parentPort!.postMessage({ id: job.id });
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error)?.message ?? String(e) });
  }
});
