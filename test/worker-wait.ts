/**
 * Tests on 2 threads that must see the worker take part repeat their work until it has: a loaded machine may
 * leave every chunk to the caller for a while (the worker not scheduled yet). No fixed count of rounds and no
 * fixed wait: `step` runs until `done()` or `capMs` have passed, yielding to the event loop between rounds after
 * the first `eager` ones. Returns whether `done()` held; the caller asserts it.
 */
export async function repeatUntil(step: () => void | Promise<void>, done: () => boolean, capMs = 30000, eager = 200): Promise<boolean> {
  const t0 = Date.now();
  for (let rep = 0; ; rep++) {
    await step();
    if (done()) return true;
    if (Date.now() - t0 > capMs) return false;
    if (rep >= eager) await new Promise((res) => setTimeout(res, 2));
  }
}

/** Wait until a pool reports a started worker (`ready()` ≥ 1), polling every 10 ms for at most `capMs`; the caller asserts what it needs. */
export async function untilReady(ready: () => number, capMs = 20000): Promise<void> {
  const t0 = Date.now();
  while (ready() < 1 && Date.now() - t0 < capMs) await new Promise((res) => setTimeout(res, 10));
}
