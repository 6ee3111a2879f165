/**
 * Worker thread of the quantize pool (quantize-pool.ts): quantizes a range of rows of a shared input
 * into a shared output with the registered codec (the WebAssembly kernels without importance, the
 * scalar references with it), exactly as the main thread would.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { LowbitError } from '../errors.js';
import '../kernels/ggml-quant.js';
import { setWasmVariant, type WasmVariant } from '../kernels/wasm.js';
import '../quant/ggml/index.js';
import { ggmlCodec } from '../quant/ggml/registry.js';
import type { RowTask } from './quantize-pool.js';

setWasmVariant((workerData as { variant: WasmVariant }).variant);

parentPort!.on('message', (task: RowTask) => {
  try {
    const codec = ggmlCodec(task.type);
    if (!codec?.quantize) throw new LowbitError(`cannot quantize to ${task.type}`);
    const n = task.nRows * task.rowLength;
    const src = new Float32Array(task.input, task.inputOffset, n);
    const out = new Uint8Array(task.output, task.outputOffset, task.outputBytes);
    codec.quantize(src, task.nRows, task.rowLength, out, task.importance);
    parentPort!.postMessage({ id: task.id });
  } catch (e) {
    parentPort!.postMessage({ id: task.id, error: (e as Error)?.message ?? String(e) });
  }
});
