/**
 * Node's GptqWorkers (src/pipeline/gptq-parts.ts): worker_threads that quantize row ranges of a weight
 * with GPTQ or AutoRound. `lowbit quantize --threads N` starts N - 1 of them for calibrated algorithms.
 */
import { Worker } from 'node:worker_threads';
import { wasmVariant } from '../kernels/wasm.js';
import type { AutoRoundStats } from '../algos/autoround.js';
import type { GptqPartResult, GptqWorkers, RowPartJob } from '../pipeline/gptq-parts.js';

export class GptqPool implements GptqWorkers {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (r: GptqPartResult) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private turn = 0;

  constructor(readonly count: number, readonly minWeights?: number) {
    if (!Number.isInteger(count) || count < 1) throw new Error(`GPTQ worker count ${count} is not a positive integer`);
  }

  private start(): void {
    if (this.workers.length) return;
    const variant = wasmVariant();
    for (let i = 0; i < this.count; i++) {
      const w = new Worker(new URL('./gptq-worker.js', import.meta.url), { workerData: { variant } });
      w.on('message', (m: { id: number; error?: string; bytes?: Uint8Array; q?: Float32Array; stats?: AutoRoundStats }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        w.unref();
        if (m.error !== undefined) p.reject(new Error(m.error));
        else p.resolve(m.stats ? { bytes: m.bytes!, q: m.q!, stats: m.stats } : { bytes: m.bytes!, q: m.q! });
      });
      w.on('error', (e) => {
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
      });
      w.unref();
      this.workers.push(w);
    }
  }

  run(job: RowPartJob): Promise<GptqPartResult> {
    this.start();
    const w = this.workers[this.turn++ % this.workers.length];
    const id = this.nextId++;
    w.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ ...job, id });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }
}
