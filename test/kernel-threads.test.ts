// The chunk-claiming protocol of the kernel threads (src/kernels/threads.ts). A worker that claims past
// the last chunk of a job must not take the next job's chunk count for its claim: that ran a chunk of
// the next job twice and counted it done twice, so the caller read that chunk's rows before they were
// written (the Lab's evaluation in Chromium differed from Node's about once in 20 runs under load).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLAIM, claim, claimed, CONTROL_BYTES, LIMIT } from '../src/kernels/threads.js';

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
