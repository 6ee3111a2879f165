/**
 * gptqFactor damps the Hessian's diagonal in place (no k x k copy) and must give it back bit for bit:
 * after a factor, after act-order, and after a Hessian that is not positive definite (the error path).
 * The factor itself equals the one of an explicitly damped copy. The factor kept in a kernel memory of
 * its own (rows quantized there without a copy of U), and the layer pass reading one layer's f32
 * matrices at a time: the same bits and bytes as the paths they replace.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { finishHessian, finishHessianRef, gptqBlocksWithFactor, gptqFactor, type GptqFactor } from '../src/algos/gptq.js';
import { blockCodecFor } from '../src/algos/block-codec.js';
import { factorMemory, factorRef, factorThreadStats, gptqWorkspace, hessianAccumulator, hessianProductsInPlace, inverseCholeskyUpper, releaseFactorMemory } from '../src/kernels/gptq.js';
import { resolveScheme } from '../src/quant/registry.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { LowbitError } from '../src/errors.js';
import { untilReady } from './worker-wait.js';

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

test('the factor kept in its own kernel memory: the bits of the other paths, and rows quantized there (U not copied) as with a copied U', () => {
  const k = 96;
  const h = hessian(k, [7]);
  const f = gptqFactor(h, k, { percDamp: 0.01 });
  assert.ok(f.memory, 'gptqFactor keeps U in a kernel memory (WebAssembly kernels on)');
  // the same bits as the one-thread workspace and the matmul engine's threaded factor
  const c = Float64Array.from(h);
  c[7 * k + 7] = 1;
  let mean = 0;
  for (let i = 0; i < k; i++) mean += c[i * k + i];
  for (let i = 0; i < k; i++) c[i * k + i] += (0.01 * mean) / k;
  const ws = gptqWorkspace(0, k, 1);
  assert.equal(ws.inverseCholesky(c), -1);
  assert.ok(bits(f.u).equals(bits(ws.u)), 'factor memory = workspace factor');
  assert.ok(bits(f.u).equals(bits(inverseCholeskyUpper(c, k, MatmulEngine.get()).u)), 'factor memory = engine factor');
  const plain: GptqFactor = { k, u: Float64Array.from(f.u), dead: f.dead };
  const uBefore = Float64Array.from(f.u);
  // weights of fewer rows than k (the workspace fits in the factor's scratch) and more (it grows the memory), in turns
  let s = 9;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
  const w40 = Float32Array.from({ length: 40 * k }, rnd);
  const w300 = Float32Array.from({ length: 300 * k }, rnd);
  for (const [w, n] of [[w40, 40], [w300, 300], [w40, 40]] as const)
    for (const target of ['Q4_0', 'int4_g32']) {
      const codec = target === 'Q4_0' ? blockCodecFor(target, k) : blockCodecFor(resolveScheme(target), k);
      const a = gptqBlocksWithFactor(w, n, k, f, codec, { clipWeights: Float32Array.from({ length: k }, (_, i) => h[i * k + i]) });
      const b = gptqBlocksWithFactor(w, n, k, plain, codec, { clipWeights: Float32Array.from({ length: k }, (_, i) => h[i * k + i]) });
      assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), `${target} ${n} rows: bytes`);
      assert.ok(bits(new Float64Array(a.q)).equals(bits(new Float64Array(b.q))), `${target} ${n} rows: values`);
    }
  assert.ok(bits(f.u).equals(bits(uBefore)), 'U is left as it was');
  // the cache: the same Hessian gives the same factor object
  assert.equal(gptqFactor(h, k, { percDamp: 0.01 }), f);
  // ... until a newer factor took its memory: then a new one, the same bits
  factorMemory(hessian(k, []), k, 1);
  assert.equal(f.memory!.live, false);
  const again = gptqFactor(h, k, { percDamp: 0.01 });
  assert.notEqual(again, f);
  assert.ok(bits(again.u).equals(bits(uBefore)), 'the factor made again: the same bits');
});

test('the factor computed in place on threads (factorMemory): bit for bit its scalar reference factorRef, on 1 and 2 threads, every size', async () => {
  const { useNodeThreads } = await import('../src/node.js');
  useNodeThreads();
  // start the factor's worker and wait for it (else the calling thread may run every chunk itself)
  factorMemory(hessian(130, []), 130, 2);
  await untilReady(() => factorThreadStats().ready, 10000);
  assert.equal(factorThreadStats().ready, 1, 'the factor memory has a worker thread');
  const chunks0 = factorThreadStats().workerChunks;
  // sizes around the 64-column panels, the 16-column inverse chunks, odd trailing rows; 300 > 128: threaded
  for (const k of [1, 5, 17, 64, 65, 130, 300, 700]) {
    const h = hessian(k, k > 40 ? [3, 40] : []);
    for (let i = 0; i < k; i++) h[i * k + i] += 1e-3; // dead inputs as gptqFactor leaves them: > 0
    for (const i of k > 40 ? [3, 40] : []) h[i * k + i] = 1;
    const ref = factorRef(h, k);
    assert.equal(ref.bad, -1);
    for (const threads of [1, 2]) {
      const f = factorMemory(h, k, threads);
      assert.equal(f.bad, -1);
      assert.ok(bits(f.factor!.u).equals(bits(ref.u)), `k ${k}, ${threads} thread(s): U = factorRef`);
    }
    // the one-thread kernels (wasm/gptq.ts cholesky + trilInverse) and the engine's threaded ones agree too
    if (k === 130) {
      const ws = gptqWorkspace(0, k, 1);
      assert.equal(ws.inverseCholesky(h), -1);
      assert.ok(bits(ws.u).equals(bits(ref.u)), 'workspace factor = factorRef');
      assert.ok(bits(inverseCholeskyUpper(h, k, MatmulEngine.get()).u).equals(bits(ref.u)), 'engine factor = factorRef');
    }
  }
  assert.ok(factorThreadStats().workerChunks > chunks0, 'the worker ran chunks of the factors');
  // U is upper triangular with the lower triangle zeroed (the memory held M there)
  const k = 130;
  const f = factorMemory(hessian(k, []), k, 2).factor!;
  for (let i = 1; i < k; i++) for (let j = 0; j < i; j++) assert.ok(Object.is(f.u[i * k + j], 0), `U[${i}][${j}] = 0`);
  // a factor replaced by the next one can no longer be read (it lives in the same memory)
  factorMemory(hessian(k, []), k, 1);
  assert.throws(() => f.u, /replaced/);
  // not positive definite: the failing pivot in the Hessian's order, as the reference
  const bad = hessian(k, []);
  bad[100 * k + 100] = -1;
  assert.equal(factorMemory(bad, k, 2).bad, factorRef(bad, k).bad);
  assert.equal(factorRef(bad, k).bad, 100);
  releaseFactorMemory();
  assert.ok(bits(factorMemory(hessian(k, []), k, 2).factor!.u).equals(bits(factorRef(hessian(k, []), k).u)), 'a new memory after releaseFactorMemory');
});

test('the layer pass reading each layer\'s matrices when it reaches the layer: the bytes of the whole f32 model loaded first (1 and 2 threads)', async () => {
  const { writeSyntheticLlama } = await import('../scripts/synthetic-model.js');
  const { memorySink } = await import('../src/io/sink.js');
  const { bytesSource } = await import('../src/io/source.js');
  const { openModelFile } = await import('../src/io/model-file.js');
  const { defineRecipe, schemeRecipe } = await import('../src/algos/recipe.js');
  const { quantize } = await import('../src/pipeline/quantize.js');
  const { setLayerByLayerLoading } = await import('../src/pipeline/passes/load.js');
  const { GptqPool } = await import('../src/cli/gptq-pool.js');
  const { useNodeThreads } = await import('../src/node.js');
  const { createHash } = await import('node:crypto');
  useNodeThreads();
  const sink = memorySink();
  await writeSyntheticLlama(sink, { dim: 128, hidden: 384, layers: 3, vocab: 512, heads: 4, kvHeads: 2, seed: 3 });
  const m = await openModelFile(bytesSource(sink.bytes(), 'tiny.gguf'));
  let s = 17;
  const stream = Int32Array.from({ length: 4 * 64 + 1 }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 23) & 511);
  const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(schemeRecipe('int4', { groupSize: 32 }))), algorithm: 'gptq', ptq: { calibTokens: 4 * 64, calibCtx: 64, seed: 0 } });
  const run = async (threads: number) => {
    const h = createHash('sha256');
    const pool = threads > 1 ? new GptqPool(threads - 1, 0) : undefined;
    try {
      await quantize(m, recipe, { write: (b) => void h.update(b) }, { output: 'safetensors', calibStream: stream, threads, gptqWorkers: pool });
    } finally {
      await pool?.close();
    }
    return h.digest('hex');
  };
  const { stagedWeightCounts } = await import('../src/pipeline/passes/stages.js');
  const before = stagedWeightCounts();
  const layered = await run(1);
  const after = stagedWeightCounts();
  // every matrix a pass multiplies is staged in kernel memory, also those read when the pass reached their layer
  assert.ok(after.staged > before.staged, 'weights were staged in kernel memory');
  assert.equal(after.missed, before.missed, 'no linear call multiplied a weight from outside kernel memory for want of arena room');
  try {
    setLayerByLayerLoading(false);
    assert.equal(await run(1), layered, 'whole model loaded first: the same bytes');
  } finally {
    setLayerByLayerLoading(true);
  }
  assert.equal(await run(2), layered, '2 threads: the same bytes');
});

test('finishHessian in tiles: bit for bit the row-by-row reference (symmetric, scaled), sizes around the tile', () => {
  for (const k of [1, 31, 32, 33, 65, 100]) {
    let s = 11;
    const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
    const lower = new Float64Array(k * k);
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) lower[i * k + j] = j <= i ? rnd() * 1e3 : rnd(); // the upper triangle is overwritten
    const a = Float64Array.from(lower);
    const b = Float64Array.from(lower);
    finishHessian(a, k, 77);
    finishHessianRef(b, k, 77);
    assert.deepEqual(a, b, `k = ${k}`);
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) assert.equal(a[i * k + j], a[j * k + i]);
  }
});

test('the accumulator\'s addInPlace: rows multiplied where they lie in kernel memory, the same bits as add() of the same rows in steps; refused (nothing done) with rows gathered, another count of rows or rows outside kernel memory', (t) => {
  const engine = MatmulEngine.get();
  if (!engine) return t.skip('no WebAssembly SIMD');
  const owner = {};
  for (const k of [33, 100]) {
    const ref = hessianAccumulator(k, 256, engine);
    const cap = ref.productRows;
    if (cap === undefined) return t.skip('the kernel memory is not shared');
    assert.ok(cap >= 256 && cap % 256 === 0, `${cap} rows a product`);
    const n = 2 * cap + 300; // two whole products and a partial one
    const x: Float32Array = engine.allocF32(n * k, owner)!.array;
    let s = 7 + k;
    for (let i = 0; i < x.length; i++) x[i] = ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296 - 0.5) * 4;
    const steps = (acc: ReturnType<typeof hessianAccumulator>, from: number, to: number) => {
      for (let r = from; r < to; r += 256) acc.add(x.subarray(r * k, Math.min(to, r + 256) * k), Math.min(256, to - r));
    };
    steps(ref, 0, n);
    const acc = hessianAccumulator(k, 256, engine);
    const before = hessianProductsInPlace();
    assert.equal(acc.addInPlace!(Float32Array.from(x.subarray(0, cap * k)), cap), false, 'rows outside kernel memory');
    assert.equal(acc.addInPlace!(x.subarray(0, (cap - 1) * k), cap - 1), false, 'fewer rows than a product');
    assert.equal(acc.addInPlace!(x.subarray(0, cap * k), cap), true);
    acc.add(x.subarray(cap * k, (cap + 256) * k), 256);
    assert.equal(acc.addInPlace!(x.subarray((cap + 256) * k, (2 * cap + 256) * k), cap), false, 'rows gathered already');
    steps(acc, cap + 256, 2 * cap);
    assert.equal(acc.addInPlace!(x.subarray(2 * cap * k, (3 * cap) * k), cap), false, 'past x: outside its kernel array');
    steps(acc, 2 * cap, n);
    assert.equal(hessianProductsInPlace() - before, 1, 'one product taken in place');
    assert.ok(bits(acc.finished!(n)).equals(bits(ref.finished!(n))), `k = ${k}`);
  }
});

test('the accumulator\'s finished(): bit for bit finishHessian(result()) (sizes around the tile, in and out of kernel memory)', () => {
  const engine = MatmulEngine.get();
  for (const k of [1, 31, 33, 65, 100]) {
    for (const nTok of [5, 300]) {
      let s = 3 + k;
      const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296) - 0.5;
      const x = Float32Array.from({ length: nTok * k }, () => rnd() * 8);
      const count = 2 * nTok;
      for (const e of [engine, null]) {
        const a = hessianAccumulator(k, nTok, e);
        const b = hessianAccumulator(k, nTok, e);
        const c = hessianAccumulator(k, nTok, e);
        for (const acc of [a, b, c]) {
          acc.add(x, nTok);
          acc.add(x.map((v) => v * 0.5), nTok);
        }
        const ref = b.result();
        finishHessian(ref, k, count);
        const got = a.finished ? a.finished(count) : (() => { const h = a.result(); finishHessian(h, k, count); return h; })();
        assert.ok(bits(got).equals(bits(ref)), `k = ${k}, ${nTok} rows, ${e ? 'engine' : 'no engine'}`);
        if (!c.finished) continue;
        // into a reused buffer (larger, full of an earlier matrix's values): every element overwritten, a new view each time
        const into = Float64Array.from({ length: k * k + 7 }, () => rnd() * 1e6);
        const again = c.finished(count, into);
        assert.equal(again.length, k * k);
        assert.equal(again.buffer, into.buffer, 'finished into the given buffer');
        assert.notEqual(again, into, 'a new view (gptqFactor keeps its factor by array identity)');
        assert.ok(bits(again).equals(bits(ref)), `into a reused buffer: k = ${k}, ${nTok} rows, ${e ? 'engine' : 'no engine'}`);
      }
    }
  }
});
