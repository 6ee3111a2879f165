/**
 * lowbit/node: Node-only helpers for library users (the main entry stays browser-safe).
 *   useNodeThreads(): lets the WebAssembly kernels start worker_threads, so that
 *   `new Llama(config, tensors, { threads: 2 })` or `loadModel(src, { threads: 2 })` use 2 threads.
 */
export { defaultThreads, useNodeThreads } from './cli/threads.js';
export { fileSource, type FileSource } from './cli/node-source.js';
