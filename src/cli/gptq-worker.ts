/**
 * Worker thread of the GPTQ pool (gptq-pool.ts): quantizes a range of rows of one weight with GPTQ (the
 * factor of its Hessian) or AutoRound (the Hessian), exactly as the calling thread does (rows are
 * independent: pipeline/gptq-parts.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { gptqPartRun, type RowPartJob } from '../pipeline/gptq-parts.js';
import { setWasmVariant, type WasmVariant } from '../kernels/wasm.js';
import { installWasmQuantizers } from '../kernels/ggml-quant.js';

setWasmVariant((workerData as { variant: WasmVariant }).variant);
installWasmQuantizers();

parentPort!.on('message', (job: RowPartJob & { id: number }) => {
  try {
    const r = gptqPartRun(job);
    parentPort!.postMessage({ id: job.id, bytes: r.bytes, q: r.q, stats: r.stats }, [r.bytes.buffer as ArrayBuffer, r.q.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error)?.message ?? String(e) });
  }
});
