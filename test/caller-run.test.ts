// The caller's side of a threaded job in WebAssembly (wasm/matmul.ts callerRun) against its JavaScript reference
// (src/kernels/threads.ts KernelThreads.runJs): the same chunks run once each, the same bits as one thread, the
// chunks the caller takes from a late worker counted. No timing is asserted: a loaded machine only changes who runs
// which chunk.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { useNodeThreads } from '../src/cli/threads.js';
import '../src/index.js';
import { MatmulEngine, type KernelWeight } from '../src/kernels/matmul.js';
import { KernelThreads } from '../src/kernels/threads.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';
import { untilReady } from './worker-wait.js';

function normals(n: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  const u = () => (next() + 0.5) / 2 ** 32;
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

interface Case {
  w: KernelWeight;
  x: Float32Array;
  nTok: number;
  int: boolean;
  ref: Float32Array;
}

for (const caller of ['WebAssembly', 'JavaScript']) {
  for (const steal of ['waited for', 'taken (forced)']) {
    test(`2 threads = 1 thread, bit for bit, with the caller's side in ${caller} (one-token and 8-token jobs, F32 and integer; the workers' chunks ${steal})`, async () => {
      useNodeThreads();
      const e = MatmulEngine.get();
      if (!e) return;
      e.setThreads(1);
      const cases: Case[] = [];
      for (const [i, name] of ['Q4_0', 'Q8_0', 'Q4_K', 'F32'].entries()) {
        const type = ggmlTypeByName(name)!;
        const [n, k] = [1032 + 4 * i, 512];
        const rb = ggmlRowBytes(type, k);
        const bytes = new Uint8Array(n * rb);
        const v = normals(n * k, 31 + i);
        if (name === 'F32') bytes.set(new Uint8Array(v.buffer));
        else ggmlCodec(type)!.quantize!(v, n, k, bytes);
        const w = e.storeWeight(type, n, k, rb, bytes)!;
        e.prepareDecode(w);
        for (const nTok of [1, 8]) {
          const x = normals(nTok * k, 41 + i + nTok);
          const ref = new Float32Array(nTok * n);
          if (name === 'F32') e.matmul(ref, x, w, nTok);
          else e.matmulInt(ref, x, w, nTok);
          cases.push({ w, x, nTok, int: name !== 'F32', ref });
        }
      }
      // count the calls of the module's callerRun: the engine's exports seen through an object that wraps it
      const eng = e as unknown as { exports: Record<string, unknown> };
      const real = eng.exports;
      let calls = 0;
      const callerRun = real.callerRun as (...a: number[]) => number;
      eng.exports = Object.create(real, { callerRun: { value: (...a: number[]) => (calls++, callerRun(...a)) } }) as Record<string, unknown>;
      KernelThreads.jsCallerRun = caller === 'JavaScript';
      KernelThreads.stealWaitMs = steal === 'waited for' ? 5000 : -1;
      const s0 = e.threadStats();
      try {
        e.setThreads(2);
        await untilReady(() => e.threadStats().ready);
        for (let rep = 0; rep < 20; rep++) {
          for (const c of cases) {
            const y = new Float32Array(c.ref.length).fill(NaN);
            if (c.int) e.matmulInt(y, c.x, c.w, c.nTok);
            else e.matmul(y, c.x, c.w, c.nTok);
            assert.deepEqual(y, c.ref, `rep ${rep} ${c.w.type.name} ${c.nTok} token(s)`);
          }
        }
        const s1 = e.threadStats();
        if (caller === 'WebAssembly') assert.ok(calls >= 20 * cases.length, `every dispatch through callerRun (${calls})`);
        else assert.equal(calls, 0, 'the JavaScript loop, not callerRun');
        // forced: the caller claims nothing and takes every chunk no worker has finished (counted by both sides)
        if (steal === 'taken (forced)') assert.ok(s1.stolen > s0.stolen, `the caller took chunks (${s1.stolen - s0.stolen})`);
        else assert.ok(s1.workerChunks > s0.workerChunks, 'the worker ran chunks');
      } finally {
        eng.exports = real;
        KernelThreads.jsCallerRun = false;
        KernelThreads.stealWaitMs = undefined;
        e.setThreads(1);
      }
    });
  }
}
