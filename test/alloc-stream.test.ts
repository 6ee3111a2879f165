/**
 * The streaming statistics pass (pipeline/stats-pass.ts) that sensitivity measures its Hessian costs
 * in: one forward pass over the calibration windows, layer by layer, the weights read per layer.
 *  - its statistics equal those of the whole-model forward pass (the runtime loaded with every weight,
 *    each linear's input captured by the linearInput hook: what sensitivity used before) within f32
 *    rounding, on Llama (stories260K), Phi-3 (fused attn_qkv, gate|up), Gemma 2 (post-norms in the
 *    residual updates, tied classifier) and Qwen3-MoE (each expert's own routed rows);
 *  - a mixture of experts is measured per stacked expert tensor: its cost is 2/N Σ_e ‖X_e ΔW_eᵀ‖², and
 *    WeightSwap replaces each expert's matrix of a 3-D tensor;
 *  - `quantize --calib --target-size --plain-costs` (one command) writes the bytes that `sensitivity
 *    --db` followed by `quantize --db --target-size` write;
 *  - matmulF32 on weights in kernel memory (multiplied in place) equals the copying path bit for bit.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { test } from 'node:test';
import { familyModel, familyVocab, type Family } from '../scripts/family-models.js';
import { llamaCppLogits } from '../scripts/llama-tools.js';
import { loadModel } from '../src/eval/load.js';
import { writeGguf } from '../src/io/gguf.js';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { initMatmulKernels, MatmulEngine } from '../src/kernels/matmul.js';
import { Llama } from '../src/model/llama.js';
import { readLlama2c } from '../src/io/llama2c.js';
import { bytesSource } from '../src/io/source.js';
import type { InputStats } from '../src/pipeline/passes/input-stats.js';
import { calibrationWindows } from '../src/pipeline/passes/load.js';
import { measureSensitivity, WeightSwap } from '../src/pipeline/sensitivity.js';
import { streamStatistics, type StreamedLinear } from '../src/pipeline/stats-pass.js';
import { xorshift32 } from '../src/rng.js';

const DATA = (f: string) => new URL(`../../data/${f}`, import.meta.url);
const STORIES = readFileSync(DATA('tinystories-valid-head.txt'), 'utf8');
const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;

const memorySource = (name: string, bytes: Uint8Array) => ({ name, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) });

async function opened(name: string, bytes: Uint8Array): Promise<{ model: Llama; m: ModelFile; windows: Int32Array[] }> {
  await initMatmulKernels();
  const src = memorySource(name, bytes);
  const { model, tokenizer } = await loadModel(src as never, { contextLength: 64 });
  const m = await openModelFile(src as never);
  const ids = tokenizer!.encode(STORIES.slice(0, 8000), { bos: false });
  return { model, m, windows: calibrationWindows(ids, 192, 64, 3, tokenizer!.vocab.bos) };
}

async function familyBytes(f: Family): Promise<Uint8Array> {
  const fm = familyModel(f, familyVocab(f, new URL('../../data/', import.meta.url)), 3);
  const sink = memorySink();
  await writeGguf(sink, fm.metadata, fm.tensors);
  return sink.bytes();
}

/** every linear's inputs from whole-model forward passes (the hook), by name and expert (-1: not an expert) */
function hookInputs(model: Llama, windows: readonly Int32Array[]): Map<string, Map<number, Float32Array[]>> {
  const seen = new Map<string, Map<number, Float32Array[]>>();
  let last: Float32Array | undefined;
  const prev = model.hooks;
  model.hooks = {
    ...prev,
    linearInput: (name, x, nTok, k, expert) => {
      let byExpert = seen.get(name);
      if (!byExpert) seen.set(name, (byExpert = new Map()));
      const e = expert ?? -1;
      if (!byExpert.has(e)) byExpert.set(e, []);
      last = Float32Array.from(x.subarray(0, nTok * k));
      byExpert.get(e)!.push(last);
    },
  };
  try {
    for (const w of windows) model.forward(w, 0, 0);
  } finally {
    model.hooks = prev;
  }
  return seen;
}

/** 2/N ‖X Dᵀ‖² for rows of X (k wide) and m rows of D, in f64 */
function refCost(xs: readonly Float32Array[], k: number, d: Float32Array, m: number, n: number): number {
  let s = 0;
  for (const x of xs)
    for (let t = 0; t < x.length / k; t++)
      for (let r = 0; r < m; r++) {
        let y = 0;
        for (let j = 0; j < k; j++) y += x[t * k + j] * d[r * k + j];
        s += y * y;
      }
  return (2 * s) / n;
}

/** the streamed statistics of every linear agree with the hook's inputs: diag(H) and tr(D H Dᵀ) for a random D */
async function checkStreamAgainstHook(name: string, bytes: Uint8Array): Promise<number> {
  const { model, m, windows } = await opened(name, bytes);
  const ref = hookInputs(model, windows);
  const tokens = windows.length * windows[0].length;
  const rand = xorshift32(11);
  let checked = 0;
  const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) <= 2e-3 * Math.abs(b) + 1e-9, `${name} ${what}: streamed ${a} vs whole-model ${b}`);
  const check = (x: StreamedLinear, st: InputStats, xs: readonly Float32Array[], n: number, what: string) => {
    const k = st.k;
    const d = Float32Array.from({ length: 3 * k }, () => rand() / 2 ** 32 - 0.5);
    close(st.cost(d, 3), refCost(xs, k, d, 3, n), `${what} cost`);
    const diag = st.diag();
    const rd = new Float64Array(k);
    for (const v of xs) for (let i = 0; i < v.length; i++) rd[i % k] += v[i] * v[i];
    for (let j = 0; j < k; j += 7) close(diag[j], (2 * rd[j]) / n, `${what} diag[${j}]`);
    checked++;
  };
  for (const form of ['inputs', 'hessian'] as const) {
    await streamStatistics(m, {
      windows,
      statForm: form,
      onLinear: (x) => {
        // a fused tensor's row views are multiplied by the runtime under their own names: same input
        const own = ref.get(x.name) ?? ref.get(x.name.replace('attn_qkv', 'attn_q').replace(/ffn_up(?=\.)/, 'ffn_gate'));
        assert.ok(own, `${name}: the whole model multiplies with ${x.name}`);
        if (x.experts) {
          for (let e = 0; e < x.experts.perExpert.length; e++) {
            const xs: Float32Array[] = own.get(e) ?? [];
            const st: InputStats = x.experts.perExpert[e];
            assert.equal(st.count, xs.reduce((a, v) => a + v.length / st.k, 0), `${x.name} expert ${e}: routed rows`);
            if (st.count > 0) check(x, st, xs, st.count, `${x.name} expert ${e} (${form})`);
          }
        } else {
          const xs = own.get(-1)!;
          assert.equal(x.stats.count, tokens);
          check(x, x.stats, xs, tokens, `${x.name} (${form})`);
        }
      },
    });
  }
  return checked;
}

test('alloc-stream: the streaming pass\'s statistics equal the whole-model forward pass\'s (stories260K)', async () => {
  const n = await checkStreamAgainstHook('stories260K', new Uint8Array(readFileSync(DATA('stories260K.gguf'))));
  assert.ok(n >= 2 * (5 * 7 + 1), `${n} tensors checked`);
});

for (const f of ['phi3', 'gemma2', 'qwen3moe'] as const)
  test(`alloc-stream: streamed statistics equal the whole-model pass's on ${f}`, async () => {
    const n = await checkStreamAgainstHook(f, await familyBytes(f));
    assert.ok(n > 8, `${n} statistics checked`);
  });

test('alloc-stream: a runtime whose KV cache holds one layer (kvOneLayer, the pass\'s) gives the stages\' outputs of one with a slot per layer, bit for bit', async () => {
  await initMatmulKernels();
  const bin = await readLlama2c(bytesSource(new Uint8Array(readFileSync(DATA('stories260K.bin'))), 'stories260K.bin'));
  const c = bin.config;
  const models = [false, true].map((one) => new Llama(c, bin.tensors, { contextLength: 48, batch: 16, kvOneLayer: one }));
  const kvDim = c.nKvHeads * c.headDim;
  // the kernel cache's keys span: one layer's 48 positions (and a little alignment) against every layer's
  const span = (m: Llama) => {
    const kv = m.kv as unknown as { keysAt(l: number): number; valuesAt(l: number): number };
    return kv.valuesAt(0) - kv.keysAt(0);
  };
  assert.ok(span(models[0]) >= c.nLayers * 48 * kvDim * 4, `a slot per layer: ${span(models[0])}`);
  assert.ok(span(models[1]) >= 48 * kvDim * 4 && span(models[1]) < 2 * 48 * kvDim * 4, `one layer of keys and values: ${span(models[1])}`);
  // the cost of the format is still every layer's
  assert.equal(models[1].kv.bytesPerToken, models[0].kv.bytesPerToken);
  // as the calibration stages run them: every window through layer l (its attention over the whole
  // window, in batches of 16 positions), then layer l + 1; the windows differ, so a stale cache shows
  const rand = xorshift32(5);
  const windows = Array.from({ length: 2 }, () => Float32Array.from({ length: 48 * c.dim }, () => rand() / 2 ** 32 - 0.5));
  const outs = models.map((model) => {
    const xs = windows.map((w) => Float32Array.from(w));
    const att = new Float32Array(48 * c.nHeads * c.headDim);
    for (let l = 0; l < c.nLayers; l++)
      for (const x of xs) {
        model.runStage('attention', l, x, att);
        for (let i = 0; i < x.length; i++) x[i] += att[i % att.length] * 0.5;
      }
    return xs;
  });
  for (let s = 0; s < windows.length; s++) assert.deepEqual(outs[1][s], outs[0][s], `window ${s}`);
});

test('alloc-stream: with sampled rows the classifier is not read by the pass; its sampled rows\' costs match the whole-model inputs (stories260K)', async () => {
  const { model, m, windows } = await opened('stories260K', new Uint8Array(readFileSync(DATA('stories260K.gguf'))));
  // the pass without the classifier: never handed over, its input statistics returned as `head`
  const given: string[] = [];
  let headGiven: InputStats | undefined;
  const withHead = await streamStatistics(m, { windows, statForm: 'inputs', onLinear: (x) => void (x.name === 'output.weight' && (headGiven = x.stats)) });
  const d = Float32Array.from({ length: 2 * 64 }, (_, i) => Math.sin(i * 0.7));
  const costWith = headGiven!.cost(d, 2);
  const without = await streamStatistics(m, { windows, statForm: 'inputs', headWeight: false, onLinear: (x) => void given.push(x.name) });
  assert.ok(!given.includes('output.weight') && given.length > 0, 'the classifier is not handed over');
  assert.equal(without.head.cost(d, 2), costWith, 'the same statistics of its input');
  assert.equal(withHead.head.cost(d, 2), costWith);
  // sensitivity with sampled rows: the classifier's costs from its sampled rows, scaled to all rows
  const db = await measureSensitivity({ file: m, windows, types: ['Q4_0', 'Q8_0'], outputFactor: 'none', weighted: false, maxRows: 16 });
  const out = db.tensors.find((t) => t.name === 'output.weight')!;
  const [rows, cols] = out.shape;
  const ids = Array.from({ length: 16 }, (_, i) => Math.floor((i * rows) / 16));
  const w = await m.readFloat32(m.tensor('output.weight'));
  const sample = new Float32Array(16 * cols);
  ids.forEach((r, i) => sample.set(w.subarray(r * cols, (r + 1) * cols), i * cols));
  const { ggmlQuantizationError } = await import('../src/alloc/cost.js');
  const xs = hookInputs(model, windows).get('output.weight')!.get(-1)!;
  const tokens = windows.length * windows[0].length;
  for (const type of ['Q4_0', 'Q8_0']) {
    const want = (refCost(xs, cols, ggmlQuantizationError(type, sample, 16, cols).delta, 16, tokens) * rows) / 16;
    const c = out.candidates.find((x) => x.type === type)!;
    assert.ok(Math.abs(c.hessian! - want) <= 2e-3 * want, `${type}: ${c.hessian} vs ${want}`);
    assert.equal(c.bytes, rows * (type === 'Q4_0' ? 18 : 34) * (cols / 32), `${type}: the bytes of every row`);
  }
});

test('alloc-stream: MoE costs per stacked expert tensor are 2/N Σ_e ‖X_e ΔW_eᵀ‖²; WeightSwap replaces expert matrices', async () => {
  const { model, m, windows } = await opened('qwen3moe', await familyBytes('qwen3moe'));
  const db = await measureSensitivity({ model, file: m, windows, types: ['Q4_0', 'Q8_0'], outputFactor: 'kld', weighted: false });
  const gate = db.tensors.find((t) => t.name === 'blk.1.ffn_gate_exps.weight');
  assert.ok(gate, 'the stacked expert tensor is measured as one unit');
  const nExp = model.config.nExperts!;
  const { ggmlQuantizationError } = await import('../src/alloc/cost.js');
  const t = m.tensor(gate.name);
  const w = await m.readFloat32(t);
  const [rows, cols] = gate.shape;
  const ref = hookInputs(model, windows).get(gate.name)!;
  const tokens = windows.length * windows[0].length;
  for (const type of ['Q4_0', 'Q8_0']) {
    const per = rows / nExp;
    let want = 0;
    for (let e = 0; e < nExp; e++) {
      const d = ggmlQuantizationError(type, w.subarray(e * per * cols, (e + 1) * per * cols), per, cols).delta;
      want += refCost(ref.get(e) ?? [], cols, d, per, tokens);
    }
    const c = gate.candidates.find((x) => x.type === type)!;
    assert.ok(Math.abs(c.hessian! - want) <= 2e-3 * want, `${type}: ${c.hessian} vs ${want}`);
  }
  assert.ok(gate.factor !== undefined && gate.factor > 0, 'the KLD probe of a stacked tensor measured a change of the outputs');
  // WeightSwap: the tensor's own values change nothing, another expert's rows do
  const probe = windows[0].subarray(0, 16);
  const base = model.forward(probe, 0, 0).slice();
  const swap = new WeightSwap(model);
  const maxDiff = (a: Float32Array) => a.reduce((mx, v, i) => Math.max(mx, Math.abs(v - base[i])), 0);
  assert.ok(maxDiff(swap.run(new Map([[gate.name, w]]), () => model.forward(probe, 0, 0).slice())) < 1e-4, 'its own values: the same logits');
  const shifted = new Float32Array(w.length); // expert e's matrix becomes expert e + 1's
  shifted.set(w.subarray((rows / nExp) * cols));
  shifted.set(w.subarray(0, (rows / nExp) * cols), w.length - (rows / nExp) * cols);
  assert.ok(maxDiff(swap.run(new Map([[gate.name, shifted]]), () => model.forward(probe, 0, 0).slice())) > 1e-2, 'the experts\' matrices swapped: other logits');
  assert.ok(maxDiff(model.forward(probe, 0, 0).slice()) === 0, 'restored');
});

test('alloc-stream: matmulF32 on weights in kernel memory equals the copying path', async () => {
  await initMatmulKernels();
  const e = MatmulEngine.get();
  if (!e) return;
  const [nTok, k, n] = [5, 68, 37];
  const rand = xorshift32(5);
  const x = Float32Array.from({ length: nTok * k }, () => rand() / 2 ** 32 - 0.5);
  const w = Float32Array.from({ length: n * k }, () => rand() / 2 ** 32 - 0.5);
  const a = new Float32Array(nTok * n);
  e.matmulF32(a, x, w, nTok, k, n);
  const owner = {};
  const inKernel = e.allocF32(n * k, owner);
  if (!inKernel) return; // an unshared memory: only the copying path exists
  inKernel.array.set(w);
  const b = new Float32Array(nTok * n);
  e.matmulF32(b, x, inKernel.array, nTok, k, n);
  assert.deepEqual(b, a);
});

test('alloc-stream: allocF32 hands out zeros, from fresh memory (not written again) and from released blocks (zeroed)', async () => {
  await initMatmulKernels();
  const e = MatmulEngine.get();
  if (!e) return;
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const n = 300_000; // > 1 MiB: past every small block of the heap
  // blocks written with non-zeros, then released (their owners collected: a FinalizationRegistry callback)
  const dirty: number[] = [];
  let owners: object[] = [];
  for (let i = 0; i < 4; i++) {
    const o = {};
    const b = e.allocF32(n, o);
    if (!b) return; // an unshared memory: plain arrays
    assert.ok(b.array.every((v) => v === 0), 'fresh block not zero');
    b.array.fill(1.5);
    owners.push(o);
    dirty.push(b.at);
  }
  owners = [];
  const keep: object[] = [];
  let reused = 0;
  for (let i = 0; i < 20 && reused === 0; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 10));
    for (let j = 0; j < 4; j++) {
      const o = {};
      keep.push(o);
      const b = e.allocF32(n, o)!;
      assert.ok(b.array.every((v) => v === 0), 'a block handed out again is not zero');
      if (dirty.some((at) => b.at < at + 4 * n && at < b.at + 4 * n)) reused++;
    }
  }
  assert.ok(reused > 0, 'no written block was handed out again (nothing checked)');
});

test('alloc-stream: quantize --calib --target-size --plain-costs writes what sensitivity --db + quantize --db write; a MoE file allocated per expert tensor loads in llama.cpp', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-alloc-stream-'));
  try {
    const run = (args: string[]) => {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r;
    };
    const calib = join(dir, 'calib.txt');
    writeFileSync(calib, STORIES.slice(0, 20000));
    const model = DATA('stories260K.gguf').pathname;
    const cost = ['--calib', calib, '--calib-tokens', '512', '--calib-ctx', '64', '--seed', '1', '--output-factor', 'none', '--plain-costs', '--types', 'Q4_0,Q5_0,Q8_0'];
    const db = join(dir, 'costs.json');
    run(['sensitivity', model, ...cost, '--db', db, '--json']);
    const target = '290000';
    run(['quantize', model, join(dir, 'c.gguf'), '--type', 'Q4_0', '--db', db, '--target-size', target, '--json']);
    run(['quantize', model, join(dir, 'd.gguf'), '--type', 'Q4_0', ...cost, '--target-size', target, '--json']);
    const [c, d] = [readFileSync(join(dir, 'c.gguf')), readFileSync(join(dir, 'd.gguf'))];
    assert.ok(c.length <= Number(target));
    assert.ok(c.equals(d), 'one command, the same file');
    // without --plain-costs, --calib rounds with importance weights: another file
    run(['quantize', model, join(dir, 'e.gguf'), '--type', 'Q4_0', ...cost.filter((x) => x !== '--plain-costs'), '--target-size', target, '--json']);
    assert.ok(!readFileSync(join(dir, 'e.gguf')).equals(d));

    // MoE: the expert tensors get types of their own, the file stays within the budget and runs
    const moe = join(dir, 'qwen3moe.gguf');
    writeFileSync(moe, await familyBytes('qwen3moe'));
    const base = join(dir, 'moe-q8.gguf');
    run(['quantize', moe, base, '--type', 'Q8_0', '--json']);
    const budget = readFileSync(base).length - 6000;
    const out = join(dir, 'moe-alloc.gguf');
    const r = JSON.parse(run(['quantize', moe, out, '--type', 'Q8_0', '--calib', calib, '--calib-tokens', '512', '--calib-ctx', '64', '--types', 'Q4_0,Q5_0,Q8_0', '--output-factor', 'none', '--target-size', String(budget), '--json']).stdout) as { allocation: { types: Record<string, string> }; tensors: { name: string; type: string }[] };
    assert.ok(readFileSync(out).length <= budget);
    const alloc = r.allocation.types;
    assert.ok(new Set(Object.values(alloc)).size > 1, 'a mix of types');
    for (const l of [0, 1])
      for (const part of ['gate', 'up']) {
        const name = `blk.${l}.ffn_${part}_exps.weight`;
        assert.ok(alloc[name], `${name} is allocated as one unit`);
        assert.equal(r.tensors.find((x) => x.name === name)!.type, alloc[name]);
      }
    const logits = await llamaCppLogits(out);
    if (typeof logits === 'string') return t.diagnostic(logits);
    assert.ok(logits.length > 0 && logits.every(Number.isFinite), 'llama.cpp gives finite logits');
  } finally {
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  }
});

// the streaming pass computes no logits (where the runtime stops at a non-finite activation): a NaN in a
// norm gain must still end in one clear line, exit 2, no database
test('alloc-stream: a NaN weight gives a clear error, not a database of NaN costs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-alloc-nan-'));
  try {
    const bytes = new Uint8Array(readFileSync(DATA('stories260K.gguf')));
    const m = await openModelFile(memorySource('stories260K', bytes) as never);
    const t = m.tensor('blk.1.attn_norm.weight');
    new DataView(bytes.buffer, bytes.byteOffset + t.byteOffset).setFloat32(8, NaN, true);
    const model = join(dir, 'nan.gguf');
    writeFileSync(model, bytes);
    const calib = join(dir, 'calib.txt');
    writeFileSync(calib, STORIES.slice(0, 20000));
    const db = join(dir, 'costs.json');
    const r = spawnSync(process.execPath, [CLI, 'sensitivity', model, '--calib', calib, '--calib-tokens', '256', '--calib-ctx', '64', '--types', 'Q4_0,Q8_0', '--output-factor', 'none', '--plain-costs', '--db', db], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^lowbit: blk\.1\.\S+: the cost of Q4_0 is not finite/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.ok(!existsSync(db));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
