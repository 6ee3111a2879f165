// The 2-thread hand-off statistics of one-token matmuls (src/kernels/threads.ts KernelThreads.timing / handOff,
// the workers' SLEEPS word, both worker loops): what bench decode-profile prints for the hand-off per dispatch.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { useNodeThreads } from '../src/cli/threads.js';
import '../src/index.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { KernelThreads } from '../src/kernels/threads.js';
import { ggmlCodecs } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes } from '../src/quant/ggml/types.js';
import { untilReady } from './worker-wait.js';

for (const loop of ['WebAssembly', 'JavaScript']) {
  test(`hand-off statistics: every timed dispatch counted, none untimed; a worker idle past its spin counts a sleep (the worker loop in ${loop})`, async () => {
    useNodeThreads();
    const e = MatmulEngine.get();
    if (!e) return;
    KernelThreads.jsWorkerLoop = loop === 'JavaScript';
    e.setThreads(2);
    try {
      await untilReady(() => e.threadStats().ready);
      assert.equal(e.threadStats().ready, 1, 'the worker started');
      const [k, n] = [1024, 1024]; // 2 K N over MIN_PARALLEL_FLOPS: one chunk a thread
      const codec = ggmlCodecs.find((c) => c.type.name === 'Q8_0')!;
      const rb = ggmlRowBytes(codec.type, k);
      const bytes = new Uint8Array(n * rb);
      codec.quantize!(new Float32Array(n * k).map((_, i) => Math.sin(i * 0.37)), n, k, bytes);
      const w = e.storeWeight(codec.type, n, k, rb, bytes)!;
      e.prepareDecode(w);
      const x = new Float32Array(k).map((_, i) => Math.cos(i * 0.29));
      const y = new Float32Array(n);
      e.matmulInt(y, x, w, 1);
      // untimed: nothing counted
      const s0 = e.threadStats();
      for (let i = 0; i < 5; i++) e.matmulInt(y, x, w, 1);
      const s1 = e.threadStats();
      assert.deepEqual(s1.handOff, s0.handOff, 'no statistics without KernelThreads.timing');
      // timed: one run per dispatch, a wait of >= 0 ms, at most every run with the workers first
      KernelThreads.timing = true;
      for (let i = 0; i < 7; i++) e.matmulInt(y, x, w, 1);
      KernelThreads.timing = false;
      const s2 = e.threadStats();
      assert.equal(s2.handOff.runs - s1.handOff.runs, 7, 'seven dispatches');
      assert.ok(s2.handOff.waitMs >= s1.handOff.waitMs, 'waits add up');
      assert.ok(s2.handOff.workersFirst - s1.handOff.workersFirst <= 7);
      // idle: the worker's spin (20000 polls) ends and it sleeps (counted before its Atomics.wait); on a loaded
      // machine the worker may not be scheduled for a while, so wait for the count (up to 20 s), not a fixed time
      const sleeps = s2.workerSleeps;
      const t1 = Date.now();
      while (e.threadStats().workerSleeps === sleeps && Date.now() - t1 < 20000) await new Promise((res) => setTimeout(res, 10));
      assert.ok(e.threadStats().workerSleeps > sleeps, 'the idle worker went to sleep and the count says so');
      // then the next job wakes it and runs to the same bits
      const y2 = new Float32Array(n);
      e.matmulInt(y2, x, w, 1);
      assert.deepEqual(y2, y, 'the woken worker computes the same result');
    } finally {
      e.setThreads(1);
      KernelThreads.jsWorkerLoop = false;
      KernelThreads.timing = false;
    }
  });
}
