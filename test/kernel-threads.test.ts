// The chunk-claiming protocol of the kernel threads (src/kernels/threads.ts). A worker that claims past
// the last chunk of a job must not take the next job's chunk count for its claim: that ran a chunk of
// the next job twice and counted it done twice, so the caller read that chunk's rows before they were
// written (the Lab's evaluation in Chromium differed from Node's about once in 20 runs under load).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { CLAIM, claim, claimed, CONTROL_BYTES, LIMIT, nextGen } from '../src/kernels/threads.js';

function control(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(CONTROL_BYTES));
}

/** the caller's side of starting job `gen` with `n` chunks (the order of KernelThreads.run) */
function startJob(ctrl: Int32Array, gen: number, n: number): void {
  Atomics.store(ctrl, LIMIT, (gen << 16) | n);
  Atomics.store(ctrl, CLAIM, gen << 16);
}

test('claim hands out each chunk of a job once, then -1; a stale generation gets nothing', () => {
  const ctrl = control();
  startJob(ctrl, 5, 3);
  assert.deepEqual([claim(ctrl, 0, 5), claim(ctrl, 0, 5), claim(ctrl, 0, 5), claim(ctrl, 0, 5), claim(ctrl, 0, 5)], [0, 1, 2, -1, -1]);
  startJob(ctrl, 6, 2);
  assert.equal(claim(ctrl, 0, 5), -1, 'a worker still on job 5 claims nothing of job 6');
  assert.equal(claim(ctrl, 0, 6), 0);
});

test('an over-claim whose job ended before it read LIMIT gets -1, not a chunk of the next job', () => {
  const ctrl = control();
  startJob(ctrl, 7, 8);
  for (let c = 0; c < 8; c++) assert.equal(claim(ctrl, 0, 7), c);
  // a worker swaps CLAIM (7, 8) -> (7, 9) (past the end) and is descheduled before reading LIMIT ...
  const v = Atomics.load(ctrl, CLAIM);
  assert.equal(Atomics.compareExchange(ctrl, CLAIM, v, v + 1), v);
  // ... meanwhile every chunk of job 7 is done and the caller starts job 8 with 16 chunks
  startJob(ctrl, 8, 16);
  assert.equal(claimed(ctrl, 0, 7, v & 0xffff), -1, 'chunk 8 of job 8 would run twice and count twice');
  // the same claim while job 7 is still current is simply past its end
  startJob(ctrl, 9, 8);
  assert.equal(claimed(ctrl, 0, 9, 8), -1);
  assert.equal(claimed(ctrl, 0, 9, 7), 7);
});

test('job numbers run 1..0x7fff and wrap past 0: 0 is the STEAL word of a job that may not be stolen', () => {
  const seen = new Set<number>();
  let g = 0;
  for (let i = 0; i < 0x7fff * 2 + 5; i++) {
    g = nextGen(g);
    assert.ok(g >= 1 && g <= 0x7fff, `job number ${g}`);
    seen.add(g);
  }
  assert.equal(seen.size, 0x7fff);
});

test('2 threads keep working across the wrap of the job number (a job numbered 0 hung the caller)', () => {
  // in a child process: with the bug the calling thread waits forever in Atomics.wait (no test timeout fires)
  const root = new URL('../../', import.meta.url).pathname;
  const script = `
    import { useNodeThreads } from '${root}dist/src/cli/threads.js';
    import { MatmulEngine } from '${root}dist/src/kernels/matmul.js';
    useNodeThreads();
    const e = MatmulEngine.get();
    if (!e) { console.log('no engine'); process.exit(0); }
    const [k, n, t] = [256, 600, 16];
    const w = new Float32Array(n * k).map((_, i) => Math.sin(i * 0.37));
    const x = new Float32Array(t * k).map((_, i) => Math.cos(i * 0.11));
    const one = new Float32Array(t * n);
    e.setThreads(1);
    e.matmulF32(one, x, w, t, k, n);
    e.setThreads(2);
    const t0 = Date.now();
    while (e.threadStats().ready < 1 && Date.now() - t0 < 20000) await new Promise((r) => setTimeout(r, 10));
    const before = e.threadStats().workerChunks;
    let wraps = 0;
    // cross the wrap 60 times (back to just before it each time): a worker that claims a chunk of a job
    // numbered 0 loses it, and it claims one in most jobs
    for (let rep = 0; rep < 60; rep++) {
      e.pool.gen = 0x7fff - 1;
      for (let j = 0; j < 3; j++) {
        const y = new Float32Array(t * n);
        e.matmulF32(y, x, w, t, k, n);
        for (let i = 0; i < y.length; i++) if (y[i] !== one[i]) { console.log('differs at', rep, i); process.exit(1); }
      }
      if (e.pool.gen < 0x7fff - 1) wraps++;
    }
    if (wraps !== 60) { console.log('did not wrap', wraps); process.exit(1); }
    console.log('worker chunks', e.threadStats().workerChunks - before, 'job number', e.pool.gen);
    e.close();
  `;
  // a file, not --eval: the workers inherit the process's flags, and --input-type is refused there
  const file = join(mkdtempSync(join(tmpdir(), 'lowbit-wrap-')), 'wrap.mjs');
  writeFileSync(file, script);
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', file], { encoding: 'utf8', timeout: 60000 });
  rmSync(dirname(file), { recursive: true, force: true });
  assert.equal(r.signal, null, `the run hung (killed by the timeout): ${r.stdout}${r.stderr}`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const m = /worker chunks (\d+) job number (\d+)/.exec(r.stdout);
  if (m) {
    assert.ok(Number(m[2]) < 200, `the job number wrapped (${m[2]})`);
  } else assert.match(r.stdout, /no engine/);
});

test('one-token matmuls: one chunk per thread, in whole groups of 4 rows, each chunk stealable', async () => {
  const { decodeChunkRows } = await import('../src/kernels/matmul.js');
  const { PRIVATE_BYTES, PRIVATE_SCRATCH } = await import('../src/kernels/threads.js');
  assert.equal(decodeChunkRows(768, 1), 768);
  assert.equal(decodeChunkRows(770, 1), 772);
  assert.equal(decodeChunkRows(768, 2), 384);
  assert.equal(decodeChunkRows(2816, 2), 1408);
  assert.equal(decodeChunkRows(2818, 2), 1412);
  assert.equal(decodeChunkRows(6, 4), 4);
  // the 32000-row output layer: as many chunks as fit a worker's private area, not 2 unstealable ones
  const big = decodeChunkRows(32000, 2);
  assert.ok(big * 4 <= PRIVATE_BYTES - PRIVATE_SCRATCH && big % 4 === 0 && big >= 4000, `${big}`);
  for (const [rows, t] of [[768, 2], [2816, 2], [32000, 2], [5632, 3], [100, 8]]) {
    const r = decodeChunkRows(rows, t);
    // at most one chunk per thread unless the private area caps it; never a chunk under 4 rows
    const cap = Math.ceil(rows / t / 4) * 4 * 4 > PRIVATE_BYTES - PRIVATE_SCRATCH;
    assert.ok(r >= 4 && r % 4 === 0 && (cap || Math.ceil(rows / r) <= t), `${rows} rows on ${t} threads: ${r} per chunk`);
  }
});

for (const loop of ['WebAssembly', 'JavaScript']) test(`a worker commits a stolen chunk above 2 GiB of kernel memory into y (the address read unsigned): 2 threads = 1 thread, bit for bit (the worker loop in ${loop})`, () => {
  // the 1.1B Q8_0 model's two-thread decode differed run to run: its interleaved copies put y above 2 GiB,
  // the worker read y's address as a negative i32 and copyWithin counted it from the memory's end (the
  // chunk's rows went elsewhere, y kept the previous call's). Here 2.1 GiB of never-touched memory
  // (allocF32 does not write fresh pages) puts the weights and y there.
  const root = new URL('../../', import.meta.url).pathname;
  const script = `
    import { useNodeThreads } from '${root}dist/src/cli/threads.js';
    import { MatmulEngine } from '${root}dist/src/kernels/matmul.js';
    import { KernelThreads } from '${root}dist/src/kernels/threads.js';
    import { ggmlCodecs } from '${root}dist/src/quant/ggml/registry.js';
    import { ggmlRowBytes } from '${root}dist/src/quant/ggml/types.js';
    useNodeThreads();
    const e = MatmulEngine.get();
    if (!e) { console.log('no engine'); process.exit(0); }
    const owner = {};
    const pad = e.allocF32(540 * 2 ** 20, owner);
    if (!pad) { console.log('no room'); process.exit(0); }
    const [k, n] = [1024, 1024]; // 2 K N over MIN_PARALLEL_FLOPS: two chunks of 512 rows
    const codec = ggmlCodecs.find((c) => c.type.name === 'Q8_0');
    const rb = ggmlRowBytes(codec.type, k);
    const bytes = new Uint8Array(n * rb);
    codec.quantize(new Float32Array(n * k).map((_, i) => Math.sin(i * 0.37)), n, k, bytes);
    const wq = e.storeWeight(codec.type, n, k, rb, bytes);
    e.prepareDecode(wq);
    const wf = e.storeWeight(ggmlCodecs.find((c) => c.type.name === 'F32').type, n, k, k * 4, new Uint8Array(new Float32Array(n * k).map((_, i) => Math.cos(i * 0.23)).buffer));
    e.prepareDecode(wf);
    const xs = [0.11, 0.29, 0.53].map((s) => new Float32Array(k).map((_, i) => Math.cos(i * s)));
    const runAll = () => xs.flatMap((x) => {
      const a = new Float32Array(n), b = new Float32Array(n);
      e.matmulInt(a, x, wq, 1);
      e.matmul(b, x, wf, 1);
      return [a, b];
    });
    e.setThreads(1);
    const one = runAll();
    KernelThreads.jsWorkerLoop = ${loop === 'JavaScript'};
    e.setThreads(2);
    const t0 = Date.now();
    while (e.threadStats().ready < 1 && Date.now() - t0 < 20000) await new Promise((r) => setTimeout(r, 10));
    KernelThreads.stealWaitMs = 5000; // the caller waits for the worker's chunk: the worker commits it
    const before = e.threadStats().workerChunks;
    for (let rep = 0; rep < 30; rep++) {
      runAll().forEach((y, j) => {
        for (let i = 0; i < n; i++) if (!Object.is(y[i], one[j][i])) { console.log('differs: rep', rep, 'output', j, 'row', i, y[i], one[j][i]); process.exit(1); }
      });
    }
    console.log('worker chunks', e.threadStats().workerChunks - before, 'y above 2 GiB', e.buffer('y', 4) >= 2 ** 31);
    e.close();
  `;
  const file = join(mkdtempSync(join(tmpdir(), 'lowbit-high-')), 'high.mjs');
  writeFileSync(file, script);
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', file], { encoding: 'utf8', timeout: 60000 });
  rmSync(dirname(file), { recursive: true, force: true });
  assert.equal(r.signal, null, `the run hung: ${r.stdout}${r.stderr}`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const m = /worker chunks (\d+) y above 2 GiB (\w+)/.exec(r.stdout);
  if (m) {
    assert.ok(Number(m[1]) > 0, 'the worker committed chunks');
    assert.equal(m[2], 'true', 'y above 2 GiB');
  } else assert.match(r.stdout, /no engine|no room/);
});
