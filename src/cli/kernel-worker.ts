// Entry of a kernel worker thread (started by src/cli/threads.ts).
import { workerData } from 'node:worker_threads';
import { kernelWorkerMain, type KernelWorkerInit } from '../kernels/threads.js';

kernelWorkerMain(workerData as KernelWorkerInit);
