import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allocateBruteForce, allocateExact, allocateLagrangian, convexHull, hullSteps, lpBound, sizeRange, suffixBounds, type AllocItem } from '../src/alloc/solve.js';
import { LowbitError } from '../src/errors.js';
import { xorshift32 } from '../src/rng.js';

/** Toy problems shaped like real ones: more bytes usually means less cost, with noise and dominated points. */
function toy(seed: number, n: number, k: number): AllocItem[] {
  const r = xorshift32(seed);
  const u = () => r() / 2 ** 32;
  return Array.from({ length: n }, (_, i) => {
    const size = 100 + Math.floor(u() * 900);
    const sens = 0.1 + u() * 10;
    return {
      name: `t${i}`,
      candidates: Array.from({ length: k }, (_, j) => {
        const bits = 2 + j + (u() < 0.3 ? 0.5 : 0);
        return { label: `b${bits}`, bytes: Math.round((size * bits) / 8), cost: sens * 2 ** (-2 * bits) * (0.7 + 0.6 * u()) };
      }),
    };
  });
}

test('alloc: exact branch and bound equals brute force on 300 seeded toy problems; Lagrangian is feasible and bounded', () => {
  let lagrangianOptimal = 0;
  for (let seed = 1; seed <= 300; seed++) {
    const items = toy(seed, 2 + (seed % 6), 2 + (seed % 4));
    const { min, max } = sizeRange(items);
    const budget = Math.round(min + ((seed * 0.37) % 1) * (max - min));
    const bf = allocateBruteForce(items, budget)!;
    const ex = allocateExact(items, budget);
    const lg = allocateLagrangian(items, budget);
    assert.ok(ex.optimal);
    assert.ok(Math.abs(ex.cost - bf.cost) <= 1e-12 * Math.max(1, bf.cost), `seed ${seed}: exact ${ex.cost} vs brute force ${bf.cost}`);
    assert.ok(ex.bytes <= budget && lg.bytes <= budget);
    assert.ok(lg.cost >= bf.cost - 1e-12 * bf.cost);
    assert.ok(lg.lowerBound <= bf.cost + 1e-12 * bf.cost, `seed ${seed}: LP bound above the optimum`);
    if (lg.cost <= bf.cost * (1 + 1e-12)) lagrangianOptimal++;
  }
  // the repair pass makes the Lagrangian solution optimal on most toy problems
  assert.ok(lagrangianOptimal >= 240, `Lagrangian optimal on ${lagrangianOptimal}/300`);
});

test('alloc: convex hull drops dominated and non-convex candidates', () => {
  const c = [
    { label: 'a', bytes: 10, cost: 10 },
    { label: 'b', bytes: 20, cost: 9.5 }, // above the segment a-c: not on the hull
    { label: 'c', bytes: 30, cost: 2 },
    { label: 'd', bytes: 40, cost: 3 }, // dominated by c
    { label: 'e', bytes: 50, cost: 1 },
  ];
  assert.deepEqual(convexHull(c), [0, 2, 4]);
});

test('alloc: an unreachable budget is a clear error', () => {
  const items = toy(7, 4, 3);
  assert.throws(() => allocateLagrangian(items, sizeRange(items).min - 1), (e: unknown) => e instanceof LowbitError && /unreachable/.test((e as Error).message));
  assert.throws(() => allocateExact(items, -5), LowbitError);
});

test('alloc: a larger problem (200 tensors × 7 types) solves fast and the exact solver proves optimality or a small gap', () => {
  const items = toy(99, 200, 7);
  const { min, max } = sizeRange(items);
  const budget = (min + max) / 2;
  const lg = allocateLagrangian(items, budget);
  const ex = allocateExact(items, budget, { maxNodes: 200_000 });
  assert.ok(ex.cost <= lg.cost);
  assert.ok((lg.cost - lg.lowerBound) / lg.lowerBound < 0.01, `gap ${(lg.cost - lg.lowerBound) / lg.lowerBound}`);
});

test('alloc: suffixBounds gives lpBound bit for bit, and the branch and bound the same picks as the per-node version (node limits hit or not, integer and fractional sizes)', () => {
  let bounds = 0;
  let aborted = 0;
  for (let seed = 1; seed <= 120; seed++) {
    const fractional = seed % 3 === 0;
    const items = toy(seed, 5 + (seed % 40), 2 + (seed % 6)).map((it) => (fractional ? { ...it, candidates: it.candidates.map((c) => ({ ...c, bytes: c.bytes * 1.37 + 0.1 })) } : it));
    const { min, max } = sizeRange(items);
    const budget = fractional ? min + ((seed * 0.61) % 1) * (max - min) : Math.round(min + ((seed * 0.61) % 1) * (max - min));
    const hulls = items.map((it) => convexHull(it.candidates));
    const steps = hullSteps(items, hulls, 0);
    // (maxIndices 0: the one shared step list of very large problems)
    for (const fast of [suffixBounds(items, hulls, steps), suffixBounds(items, hulls, steps, 0)])
      for (let first = 0; first <= items.length; first++)
        for (const b of [budget, Math.floor(budget * 0.9), budget * 0.93, min / 2]) {
          const a = lpBound(items, hulls, steps, first, b);
          assert.ok(Object.is(fast(first, b), a), `seed ${seed} first ${first} budget ${b}: ${fast(first, b)} vs ${a}`);
          bounds++;
        }
    for (const maxNodes of [50, 2000, 250_000]) {
      const ref = allocateExact(items, budget, { maxNodes, lpPerNode: true });
      const ex = allocateExact(items, budget, { maxNodes });
      assert.deepEqual(ex.picks, ref.picks, `seed ${seed}, ${maxNodes} nodes`);
      assert.equal(ex.optimal, ref.optimal);
      if (!ref.optimal) aborted++;
    }
  }
  assert.ok(bounds > 5000 && aborted >= 20, `${bounds} bounds compared, ${aborted} searches stopped by the node limit`);
});

test('alloc: hessianCost equals ||X ΔWᵀ||² computed directly (f64), and diagonalCost its diagonal part', async () => {
  const { hessianCost, diagonalCost, ggmlQuantizationError } = await import('../src/alloc/cost.js');
  const r = xorshift32(5);
  const u = () => r() / 2 ** 32 - 0.5;
  const nTok = 300, rows = 48, cols = 256;
  const x = Float32Array.from({ length: nTok * cols }, u);
  const w = Float32Array.from({ length: rows * cols }, () => u() * 0.2);
  const h = new Float32Array(cols * cols);
  for (let t = 0; t < nTok; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] += x[t * cols + i] * x[t * cols + j];
  for (const type of ['Q4_K', 'Q2_K', 'Q8_0']) {
    const { delta, bytes } = ggmlQuantizationError(type, w, rows, cols);
    assert.ok(bytes > 0);
    let direct = 0;
    for (let t = 0; t < nTok; t++)
      for (let o = 0; o < rows; o++) {
        let s = 0;
        for (let j = 0; j < cols; j++) s += x[t * cols + j] * delta[o * cols + j];
        direct += s * s;
      }
    const c = hessianCost(delta, rows, cols, h);
    assert.ok(Math.abs(c - direct) / direct < 1e-4, `${type}: ${c} vs ${direct}`);
    const hd = Float32Array.from({ length: cols }, (_, j) => h[j * cols + j]);
    let diag = 0;
    for (let o = 0; o < rows; o++) for (let j = 0; j < cols; j++) diag += hd[j] * delta[o * cols + j] ** 2;
    assert.ok(Math.abs(diagonalCost(delta, rows, cols, hd) - diag) / diag < 1e-9);
  }
  const q2 = hessianCost(ggmlQuantizationError('Q2_K', w, rows, cols).delta, rows, cols, h);
  const q8 = hessianCost(ggmlQuantizationError('Q8_0', w, rows, cols).delta, rows, cols, h);
  assert.ok(q2 > 100 * q8, 'more bits, much less cost');
});

/** stories260K loaded (runtime and model file from the same bytes), TinyStories tokens, the sensitivity pass */
async function stories260K(name = 'stories260K.gguf') {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { loadModel } = await import('../src/eval/load.js');
  const { openModelFile } = await import('../src/io/model-file.js');
  const { measureSensitivity } = await import('../src/pipeline/sensitivity.js');
  const { initMatmulKernels } = await import('../src/kernels/matmul.js');
  await initMatmulKernels();
  const file = path.resolve(import.meta.dirname, '../../data', name);
  const bytes = new Uint8Array(fs.readFileSync(file));
  const src = { name: file, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) };
  const { model, tokenizer } = await loadModel(src as never, { contextLength: 64 });
  const m = await openModelFile(src as never);
  const ids = tokenizer!.encode(fs.readFileSync(path.resolve(import.meta.dirname, '../../data/tinystories-valid-head.txt'), 'utf8').slice(0, 4000));
  return { model, m, ids, measureSensitivity };
}

// f32 products in both forms (the Gram matrix, then ΔW H; or X ΔWᵀ). With the plain quantizers ΔW is the same in
// both, so the costs agree to f32 rounding (≤ 1e-6; ~5e-8 measured in every build). The importance-weighted ones
// take diag(H) and Σx² summed in different orders: a last-bit difference flips a few blocks' rounding choices,
// 0.06 % (relaxed SIMD) to 0.34 % (plain SIMD, scalar) apart, so those are held to 1 %.
test('alloc: sensitivity costs are the same from H = XᵀX and from X itself (stories260K)', async () => {
  const { model, m, ids, measureSensitivity } = await stories260K();
  const windows = [Int32Array.from(ids.slice(0, 40)), Int32Array.from(ids.slice(40, 80))];
  for (const [weighted, bound] of [[false, 1e-6], [true, 1e-2]] as const) {
    const run = (statForm: 'hessian' | 'inputs') => measureSensitivity({ model, file: m, windows, types: ['Q4_0', 'Q8_0'], outputFactor: 'none', statForm, weighted });
    const [a, b] = [await run('hessian'), await run('inputs')];
    for (let i = 0; i < a.tensors.length; i++)
      for (let j = 0; j < a.tensors[i].candidates.length; j++) {
        const [x, y] = [a.tensors[i].candidates[j].cost, b.tensors[i].candidates[j].cost];
        assert.ok(Math.abs(x - y) <= bound * Math.abs(x) + 1e-12, `${weighted ? 'weighted' : 'plain'} ${a.tensors[i].name} ${a.tensors[i].candidates[j].type}: ${x} vs ${y}`);
      }
  }
});

// the audit and the sensitivity pass swap token_embd.weight in models whose embedding is stored quantized
test('alloc: WeightSwap replaces a Q8_0-stored token embedding and restores it', async () => {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { loadModel } = await import('../src/eval/load.js');
  const { WeightSwap } = await import('../src/pipeline/sensitivity.js');
  const { ggmlRoundTrip } = await import('../src/alloc/cost.js');
  const { ggmlCodec } = await import('../src/quant/ggml/registry.js');
  const { ggmlTypeByName, ggmlRowBytes } = await import('../src/quant/ggml/types.js');
  const { initMatmulKernels } = await import('../src/kernels/matmul.js');
  await initMatmulKernels();
  const file = path.resolve(import.meta.dirname, '../../data/stories260K.gguf');
  const bytes = new Uint8Array(fs.readFileSync(file));
  const src = { name: file, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) };
  const { model } = await loadModel(src as never, { contextLength: 64 });
  const { vocabSize: vocab, dim } = model.config;
  const emb = model.weights.tokenEmbedding;
  assert.equal(emb.type.name, 'F32');
  const f32 = new Float32Array(emb.data.slice().buffer, 0, vocab * dim);
  // store the embedding as Q8_0, as a quantized model to audit would
  const q8 = ggmlTypeByName('Q8_0')!;
  const packed = new Uint8Array(vocab * ggmlRowBytes(q8, dim));
  ggmlCodec(q8)!.quantize!(f32, vocab, dim, packed);
  model.weights.tokenEmbedding = { type: q8, data: packed, rowBytes: ggmlRowBytes(q8, dim) };
  const stored = model.weights.tokenEmbedding;
  const tokens = Int32Array.from([1, 200, 300, 17, 42, 99]);
  const base = model.forward(tokens, 0, 0).slice();
  const swap = new WeightSwap(model);
  const same = swap.run(new Map([['token_embd.weight', ggmlRoundTrip('Q8_0', f32, vocab, dim).values]]), () => model.forward(tokens, 0, 0).slice());
  assert.deepEqual(same, base, 'the dequantized Q8_0 table swapped in gives the Q8_0 model\'s logits');
  const other = swap.run(new Map([['token_embd.weight', f32]]), () => model.forward(tokens, 0, 0).slice());
  assert.notDeepEqual(other, base, 'the F32 table swapped in changes the logits');
  assert.equal(model.weights.tokenEmbedding, stored, 'the stored embedding is back');
  assert.deepEqual(model.forward(tokens, 0, 0), base);
});

// the allocator's file size is the writer's: same metadata (file type, the imatrix's summary), same layout
test('alloc: ggufFileBytes predicts the bytes quantize() writes, with and without an imatrix', async () => {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { openModelFile } = await import('../src/io/model-file.js');
  const { memorySink } = await import('../src/io/sink.js');
  const { llamaRecipe } = await import('../src/algos/recipe.js');
  const { accumulateImatrix, emptyImatrix } = await import('../src/algos/imatrix.js');
  const { planQuantization, quantize } = await import('../src/pipeline/quantize.js');
  const { ggufFileBytes } = await import('../src/pipeline/allocate.js');
  const bytes = new Uint8Array(fs.readFileSync(path.resolve(import.meta.dirname, '../../data/stories260K.gguf')));
  const m = await openModelFile({ name: 'stories260K.gguf', size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) } as never);
  const imatrix = emptyImatrix(64, ['a calibration text with a long name.txt']);
  imatrix.chunkCount = 3;
  const r = xorshift32(7);
  for (const t of m.tensors.filter((t) => t.shape.length === 2 && t.name !== 'token_embd.weight')) {
    const k = t.ne ? t.ne[0] : t.shape[1];
    accumulateImatrix(imatrix, t.name, Float32Array.from({ length: 4 * k }, () => r() / 2 ** 32 - 0.5), 4, k);
  }
  const recipe = llamaRecipe('Q4_0');
  for (const im of [undefined, imatrix]) {
    const sink = memorySink();
    await quantize(m, recipe, sink, { imatrix: im });
    const written = sink.bytes().length;
    assert.equal(ggufFileBytes(m, planQuantization(m, recipe, 'gguf', { hasImatrix: im !== undefined }), im), written, im ? 'with an imatrix' : 'without');
  }
});

// hessian costs on sampled rows read only those rows; the plain quantizers' costs ignore the importance
test('alloc: sampled rows estimate the whole tensor\'s cost; plain costs differ from weighted ones only where a quantizer weighs', async () => {
  const { model, m, ids, measureSensitivity } = await stories260K();
  const windows = [Int32Array.from(ids.slice(0, 64)), Int32Array.from(ids.slice(64, 128))];
  const run = (o: { maxRows?: number; weighted?: boolean }) => measureSensitivity({ model, file: m, windows, types: ['Q4_0', 'Q8_0'], outputFactor: 'none', ...o });
  const [all, half, plain] = [await run({}), await run({ maxRows: 32 }), await run({ weighted: false })];
  const cost = (db: typeof all, t: number, type: string) => db.tensors[t].candidates.find((c) => c.type === type)!.cost;
  let logErr = 0;
  for (let t = 0; t < all.tensors.length; t++) {
    const [a, b] = [cost(all, t, 'Q4_0'), cost(half, t, 'Q4_0')];
    if (all.tensors[t].shape[0] > 32) assert.notEqual(a, b, `${all.tensors[t].name}: a sample is not the whole tensor`);
    else assert.equal(a, b, `${all.tensors[t].name}: ${all.tensors[t].shape[0]} rows, all of them sampled`);
    logErr += Math.abs(Math.log(b / a));
    assert.ok(Math.abs(Math.log(b / a)) < Math.log(2), `${all.tensors[t].name}: 32 sampled rows ${b} vs all rows ${a}`);
    assert.equal(cost(plain, t, 'Q8_0'), cost(all, t, 'Q8_0'), 'Q8_0 weighs nothing');
  }
  assert.ok(logErr / all.tensors.length < 0.15, `mean |log| error of the sampled estimate ${logErr / all.tensors.length}`);
  assert.ok(all.tensors.some((_, t) => cost(plain, t, 'Q4_0') !== cost(all, t, 'Q4_0')), 'Q4_0 weighs its errors by the importance');
  assert.equal(plain.weighted, false);
});

// an untied token embedding's cost is Σ count(token) ‖Δ row‖²: sampled rows come from the tokens the text uses
test('alloc: with sampled rows the untied token embedding samples the tokens the calibration uses (exact when they fit, never all 0)', async () => {
  const { model, m, ids, measureSensitivity } = await stories260K('tinyllama256.gguf');
  assert.ok(m.tensors.some((t) => t.name === 'output.weight'), 'tinyllama256 has its own classifier (untied)');
  const windows = [Int32Array.from(ids.slice(0, 64)), Int32Array.from(ids.slice(64, 128))];
  const seen = new Set([...windows[0], ...windows[1]]).size;
  const vocab = model.config.vocabSize;
  assert.ok(seen < 256 && 256 < vocab && 16 < seen, `${seen} distinct tokens of ${vocab}`);
  const run = (maxRows?: number) => measureSensitivity({ model, file: m, windows, types: ['Q4_0', 'Q8_0'], outputFactor: 'none', weighted: false, ...(maxRows ? { maxRows } : {}) });
  const emb = (db: Awaited<ReturnType<typeof run>>) => db.tensors.find((t) => t.name === 'token_embd.weight')!.candidates;
  const [all, fits, few] = [emb(await run()), emb(await run(256)), emb(await run(16))];
  for (let c = 0; c < all.length; c++) {
    assert.ok(all[c].cost > 0, `${all[c].type}: a cost`);
    assert.equal(fits[c].cost, all[c].cost, `${all[c].type}: 256 sampled rows hold all ${seen} used tokens: the exact cost`);
    assert.equal(fits[c].bytes, all[c].bytes, 'the bytes of every row');
    assert.ok(few[c].cost > 0 && Math.abs(Math.log(few[c].cost / all[c].cost)) < Math.log(2), `${all[c].type}: 16 of ${seen} used tokens: ${few[c].cost} vs ${all[c].cost}`);
  }
});
