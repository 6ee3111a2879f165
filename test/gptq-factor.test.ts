/**
 * gptqFactor damps the Hessian's diagonal in place (no k x k copy) and must give it back bit for bit:
 * after a factor, after act-order, and after a Hessian that is not positive definite (the error path).
 * The factor itself equals the one of an explicitly damped copy.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gptqFactor } from '../src/algos/gptq.js';
import { inverseCholeskyUpper } from '../src/kernels/gptq.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { LowbitError } from '../src/errors.js';

function hessian(k: number, dead: number[]): Float64Array {
  let s = 5;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
  const h = new Float64Array(k * k);
  for (let t = 0; t < 2 * k; t++) {
    const x = Float64Array.from({ length: k }, (_, i) => (dead.includes(i) ? 0 : rnd() * (i % 5 === 0 ? 3 : 1)));
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j] += x[i] * x[j];
  }
  return h;
}
const bits = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

test('gptqFactor leaves the Hessian as it found it and equals the factor of a damped copy', () => {
  const k = 96;
  const h = hessian(k, [3, 40]);
  const before = Float64Array.from(h);
  for (const actOrder of [false, true]) {
    const f = gptqFactor(h, k, { actOrder, percDamp: 0.02 });
    assert.ok(bits(h).equals(bits(before)), `the Hessian is restored (actOrder ${actOrder})`);
    assert.deepEqual([...f.dead].flatMap((d, i) => (d ? [i] : [])), [3, 40]);
    if (!actOrder) {
      // the reference: a copy with the dead diagonal set to 1 and damped
      const c = Float64Array.from(h);
      for (const i of [3, 40]) c[i * k + i] = 1;
      let mean = 0;
      for (let i = 0; i < k; i++) mean += c[i * k + i];
      for (let i = 0; i < k; i++) c[i * k + i] += (0.02 * mean) / k;
      assert.ok(bits(f.u).equals(bits(inverseCholeskyUpper(c, k, MatmulEngine.get()).u)));
    }
  }
  // not positive definite: the error, and the Hessian still restored
  const bad = Float64Array.from(h);
  bad[10 * k + 10] = -1e6;
  const badBefore = Float64Array.from(bad);
  assert.throws(() => gptqFactor(bad, k, { percDamp: 0 }), LowbitError);
  assert.ok(bits(bad).equals(bits(badBefore)));
});
