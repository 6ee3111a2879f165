/**
 * The layer pass's phase clock (src/pipeline/passes/timing.ts): a phase timed inside another counts
 * for the inner phase only (AutoRound's block stage, timed as quantization, runs the layer forward
 * timed as forward), for synchronous and asynchronous calls; the phases add up to the wall time.
 * A clock the test advances by hand: exact seconds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PhaseClock } from '../src/pipeline/passes/timing.js';

test('phase clock: nested timed calls count for the inner phase only', async () => {
  let ms = 0;
  const c = new PhaseClock(() => ms);
  await c.timed('quantization', async () => {
    ms += 3000;
    c.timed('forward', () => void (ms += 6000));
    await Promise.resolve();
    ms += 2000;
    await c.timed('statistics', async () => {
      await Promise.resolve();
      ms += 4000;
      c.timed('forward', () => void (ms += 1000));
    });
    ms += 500;
  });
  assert.deepEqual(c.phases, { quantization: 5.5, forward: 7, statistics: 4 });
  // a throw still closes its call: what follows is not counted as nested in it
  assert.throws(() => c.timed('statistics', () => { ms += 1000; throw new Error('x'); }));
  c.timed('quantization', () => void (ms += 1000));
  assert.deepEqual(c.phases, { quantization: 6.5, forward: 7, statistics: 5 });
  assert.equal(c.phases.quantization + c.phases.forward + c.phases.statistics, ms / 1000); // nothing counted twice
});
