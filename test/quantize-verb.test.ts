/**
 * The one verb: quantize(model, recipe, sink, { calibText }) runs what the recipe says (GPTQ, AWQ,
 * rotation, HQQ) and gives the CLI's bytes; a calibrated recipe without calibration text is a clear
 * error, never a silent RTN; an algorithm list equals the older 'awq+gptq' spelling. Also the model
 * family table (model/family.ts) the calibration, rotation and converters read.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { recipeFromJSON } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { FAMILIES, familyOf, ggufNameOf, hfNameOf, LLAMA, linearName, residualReaders, residualWriters } from '../src/model/family.js';
import { algorithmsOf } from '../src/pipeline/algorithms.js';
import { quantize } from '../src/pipeline/quantize.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-verb-'));
const CALIB = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 60000);
const calibFile = path.join(tmp, 'calib.txt');
fs.writeFileSync(calibFile, CALIB);
const PTQ = { calibTokens: 512, calibCtx: 128, seed: 3 };

async function library(recipeJson: object, output: 'gguf' | 'safetensors', calibText?: string): Promise<{ bytes: Uint8Array; algorithms: Record<string, string> }> {
  const src = fileSource(GGUF);
  try {
    const m = await openModelFile(src);
    const sink = memorySink();
    const r = await quantize(m, recipeFromJSON(JSON.stringify(recipeJson)), sink, { output, calibText });
    return { bytes: sink.bytes(), algorithms: r.ptq?.algorithms ?? {} };
  } finally {
    src.close();
  }
}

function cli(recipeJson: object, ext: string, name: string): Uint8Array {
  const recipeFile = path.join(tmp, `${name}.json`);
  fs.writeFileSync(recipeFile, JSON.stringify(recipeJson));
  const out = path.join(tmp, `${name}.${ext}`);
  const r = spawnSync(process.execPath, [BIN, 'quantize', GGUF, out, '--recipe', recipeFile, '--calib', calibFile, '--json', '--threads', '2'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return fs.readFileSync(out);
}

const q4_0 = (algorithm: unknown, ptq: object = {}) => ({ lowbitRecipe: 1, name: 'q4_0-calibrated', llama: { ftype: 'Q4_0' }, rules: [], algorithm, ptq: { ...PTQ, ...ptq } });
const int4 = (algorithm: unknown) => ({ lowbitRecipe: 1, name: 'int4-g32', rules: [{ match: '(_norm\\.weight|\\.bias)$', keep: 'f32' }, { match: '\\.weight$', scheme: 'int4', groupSize: 32 }], algorithm, ptq: PTQ });

test('quantize() with GPTQ, AWQ and rotation+GPTQ recipes gives the CLI\'s bytes, and differs from RTN', async () => {
  const rtn = (await library(q4_0('rtn'), 'gguf')).bytes;
  for (const [name, recipe, kind] of [
    ['gptq', q4_0('gptq'), 'gguf'],
    ['awq', int4('awq'), 'safetensors'],
    ['rot-gptq', q4_0('gptq', { rotate: 'hadamard' }), 'gguf'],
  ] as const) {
    const lib = await library(recipe, kind, CALIB);
    const viaCli = cli(recipe, kind, name);
    assert.ok(Buffer.from(lib.bytes).equals(Buffer.from(viaCli)), `${name}: quantize() and the CLI wrote different bytes`);
    if (kind === 'gguf') assert.ok(!Buffer.from(lib.bytes).equals(Buffer.from(rtn)), `${name}: same bytes as RTN`);
    assert.ok(Object.values(lib.algorithms).some((a) => a.startsWith(name === 'awq' ? 'awq' : 'gptq')), `${name}: the report names the algorithm (${JSON.stringify(lib.algorithms)})`);
  }
});

test('a recipe JSON with "algorithm": "gptq" and no calibration text is a clear error, not a silent RTN', async () => {
  await assert.rejects(library(q4_0('gptq'), 'gguf'), /gptq needs calibration text/);
  await assert.rejects(library(int4('awq'), 'safetensors'), /awq needs calibration text/);
  await assert.rejects(library({ ...q4_0('rtn'), ptq: { ...PTQ, smooth: 0.5 } }, 'gguf'), /SmoothQuant needs calibration text/);
  assert.throws(() => recipeFromJSON(JSON.stringify(q4_0(['awq', 'gtpq']))), /unknown algorithm "gtpq"/);
  assert.throws(() => recipeFromJSON(JSON.stringify(q4_0([]))), /algorithm list is empty/);
});

test('an algorithm list ["awq", "gptq"] is the older "awq+gptq": same bytes; HQQ runs without calibration', async () => {
  const list = await library(q4_0(['awq', 'gptq']), 'gguf', CALIB);
  const plus = await library(q4_0('awq+gptq'), 'gguf', CALIB);
  assert.ok(Buffer.from(list.bytes).equals(Buffer.from(plus.bytes)));
  assert.equal(list.algorithms['blk.0.attn_q.weight'], 'awq+gptq');
  assert.deepEqual(algorithmsOf(recipeFromJSON(JSON.stringify(q4_0(['awq', 'gptq']))), 'blk.0.attn_q.weight').map((a) => a.name), ['awq', 'gptq']);
  const hqqRecipe = { lowbitRecipe: 1, name: 'uint4-hqq', rules: [{ match: '(_norm\\.weight|\\.bias)$', keep: 'f32' }, { match: '\\.weight$', scheme: 'uint4', groupSize: 32, asym: true, zeroPoint: 'float' }], algorithm: 'hqq' };
  const hqq = await library(hqqRecipe, 'safetensors');
  const plain = await library({ ...hqqRecipe, algorithm: 'rtn' }, 'safetensors');
  assert.equal(hqq.algorithms['blk.0.attn_q.weight'], 'hqq');
  assert.notDeepEqual(hqq.bytes, plain.bytes);
});

test('model families: one row per architecture; HF names round-trip; groups cover every linear once', () => {
  for (const f of FAMILIES) {
    const roles = f.inputGroups.flatMap((g) => g.linears);
    assert.deepEqual([...roles].sort(), f.linears.map((s) => s.role).sort(), `${f.name}: every linear reads exactly one input group`);
    const stored = (r: string) => roles.includes(r as never) || f.linears.some((s) => roles.includes(s.role) && s.parts?.includes(r as never));
    for (const p of f.foldPairs) assert.ok(stored(p.producer) && stored(p.consumer), `${f.name}: fold pair ${p.producer}>${p.consumer}`);
    for (const a of f.architectures) assert.equal(familyOf(a, f.moe !== undefined), f);
    const names = ['token_embd.weight', 'output_norm.weight', 'output.weight', ...f.linears.map((s) => linearName(f, 3, s.role)), ...f.layerTensors.map((t) => `blk.3.${t.gguf}`)];
    for (const n of names) assert.equal(ggufNameOf(f, hfNameOf(f, n)!), n, `${f.name}: ${n} round-trips through its HF name`);
  }
  assert.equal(hfNameOf(LLAMA, 'blk.2.attn_q.weight'), 'model.layers.2.self_attn.q_proj.weight');
  assert.deepEqual(residualReaders(LLAMA), ['q', 'k', 'v', 'gate', 'up']);
  assert.deepEqual(residualWriters(LLAMA), ['o', 'down']);
  assert.throws(() => familyOf('mamba'), /architecture 'mamba' is not supported/);
  assert.equal(familyOf('llama', true).name, 'mixtral');
  assert.equal(hfNameOf(familyOf('qwen3moe'), 'blk.1.ffn_down_exps.weight'), 'model.layers.1.mlp.experts.{e}.down_proj.weight');
  assert.equal(ggufNameOf(familyOf('qwen3moe'), 'model.layers.1.mlp.experts.7.down_proj.weight'), 'blk.1.ffn_down_exps.weight');
});

/** The test model's weights (F32), its llama config and 64-token calibration windows from a fixed token stream */
async function calibrationInputs(src: ReturnType<typeof fileSource>) {
  const { loadWeights, calibrationWindows } = await import('../src/pipeline/passes/load.js');
  const { llamaConfigFromGguf } = await import('../src/model/llama.js');
  const { plainValue } = await import('../src/io/gguf.js');
  const { ggmlTypeByName } = await import('../src/quant/ggml/types.js');
  const m = await openModelFile(src);
  const weights = await loadWeights(m);
  const meta = new Map([...m.gguf!.metadata].map(([k, v]) => [k, plainValue(v)]));
  const f32 = ggmlTypeByName('F32')!;
  const stored = [...weights].map(([name, t]) => ({ name, type: f32, dims: [...m.tensor(name).ne!], data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) }));
  const config = llamaConfigFromGguf(meta, stored);
  const stream = Int32Array.from({ length: 4000 }, (_, i) => (i * 7919 + 13) % config.vocabSize);
  return { weights, stored, config, windows: calibrationWindows(stream, 256, 64, 1, 1) };
}

test('calibration stages: "measure KLD" is 0 against the model\'s own logits and grows with a quantized layer; "collect Hessians" gives a symmetric PSD-diagonal H', async () => {
  const { LayerCalibration } = await import('../src/pipeline/passes/stages.js');
  const { rtnBlocks } = await import('../src/algos/blockwise.js');
  const { blockCodecFor } = await import('../src/algos/block-codec.js');
  const src = fileSource(GGUF);
  try {
    const { weights, stored, config, windows } = await calibrationInputs(src);
    const lc = new LayerCalibration(config, LLAMA, weights, stored, windows, 64, undefined, false);
    lc.embed();
    const reference = lc.referenceLogits(lc.X, 0);
    assert.ok(lc.measureKld(reference, lc.X, 0) < 1e-9, 'the model against itself');
    const st = lc.collectHessians(0, 'attnNorm');
    for (let i = 0; i < st.k; i++) {
      assert.ok(st.h[i * st.k + i] >= 0);
      for (let j = 0; j < i; j++) assert.equal(st.h[i * st.k + j], st.h[j * st.k + i]);
    }
    const w = weights.get('blk.0.attn_output.weight')!;
    w.data.set(rtnBlocks(blockCodecFor('Q4_0', w.cols), w.data, w.rows, w.cols).q);
    const kld = lc.measureKld(reference, lc.X, 0);
    assert.ok(kld > 1e-6 && kld < 1, `KLD with blk.0.attn_output in Q4_0: ${kld}`);
  } finally {
    src.close();
  }
});

test('calibration stages: with reuseHessians a stage\'s H is finished into the array of the same stage in an earlier layer (the same bits); collected again in the same layer, into a fresh one', async () => {
  const { LayerCalibration } = await import('../src/pipeline/passes/stages.js');
  const src = fileSource(GGUF);
  try {
    const { weights, stored, config, windows } = await calibrationInputs(src);
    const bits = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    const run = (reuse: boolean) => {
      const lc = new LayerCalibration(config, LLAMA, weights, stored, windows, 64, undefined, false);
      lc.reuseHessians = reuse;
      lc.embed();
      // each H as it was when collected (a reused array is overwritten by the same stage of the next layer)
      const kept = new Map<string, { h: Float64Array; buffer: ArrayBufferLike }>();
      const collect = (key: string, l: number, input: 'attnNorm' | 'ffn') => {
        const st = lc.collectHessians(l, input);
        kept.set(key, { h: Float64Array.from(st.h), buffer: st.h.buffer });
        return st;
      };
      const first = collect('first', 0, 'attnNorm');
      const firstBits = Float64Array.from(first.h);
      collect('again', 0, 'attnNorm');
      assert.ok(bits(first.h).equals(bits(firstBits)), 'collected again in the same layer: the first statistics are left as they were');
      collect('ffn', 0, 'ffn');
      collect('next', 1, 'attnNorm');
      collect('nextFfn', 1, 'ffn');
      return kept;
    };
    const fresh = run(false);
    const reused = run(true);
    for (const key of ['first', 'again', 'ffn', 'next', 'nextFfn']) assert.ok(bits(reused.get(key)!.h).equals(bits(fresh.get(key)!.h)), `${key}: the same H`);
    assert.ok(!bits(reused.get('next')!.h).equals(bits(reused.get('first')!.h)), 'layer 1 has an H of its own');
    assert.notEqual(reused.get('again')!.buffer, reused.get('first')!.buffer, 'the same stage again in the same layer: a fresh array');
    assert.equal(reused.get('next')!.buffer, reused.get('again')!.buffer, 'layer 1 finishes into layer 0\'s array of the stage');
    assert.equal(reused.get('nextFfn')!.buffer, reused.get('ffn')!.buffer, 'layer 1 finishes into layer 0\'s array of the stage (ffn)');
    assert.notEqual(fresh.get('next')!.buffer, fresh.get('again')!.buffer, 'without reuseHessians: fresh arrays');
  } finally {
    src.close();
  }
});

test('calibration stages: "collect Hessians" over windows whose outputs make whole products in place (kept stage outputs, and the ring of a norm stage) gives the bits of adding every window\'s rows in turn', async (t) => {
  const { LayerCalibration } = await import('../src/pipeline/passes/stages.js');
  const { calibrationWindows } = await import('../src/pipeline/passes/load.js');
  const { hessianAccumulator, hessianProductsInPlace } = await import('../src/kernels/gptq.js');
  const { MatmulEngine } = await import('../src/kernels/matmul.js');
  const engine = MatmulEngine.get();
  if (!engine) return t.skip('no WebAssembly SIMD');
  const src = fileSource(GGUF);
  try {
    const { weights, stored, config } = await calibrationInputs(src);
    const stream = Int32Array.from({ length: 4000 }, (_, i) => (i * 7919 + 13) % config.vocabSize);
    const windows = calibrationWindows(stream, 43 * 64, 64, 1, 1); // whole products of 32 windows and a rest
    const lc = new LayerCalibration(config, LLAMA, weights, stored, windows, 64, undefined, false);
    lc.embed();
    const bits = (a: Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    for (const input of ['attnNorm', 'attention', 'ffn'] as const) {
      const before = hessianProductsInPlace();
      const st = lc.collectHessians(0, input);
      const inPlace = hessianProductsInPlace() - before;
      // the reference: each window's output rows added in turn (gathered, then multiplied)
      const acc = hessianAccumulator(st.k, 64, engine);
      const out = new Float32Array(64 * st.k);
      for (let s = 0; s < windows.length; s++) {
        lc.model.runStage(input, 0, lc.seq(s), out);
        acc.add(out, 64);
      }
      if (acc.productRows === undefined) return t.skip('the kernel memory is not shared');
      assert.equal(inPlace, Math.floor((windows.length * 64) / acc.productRows), `${input}: whole products taken in place`);
      assert.ok(bits(st.h).equals(bits(acc.finished!(windows.length * 64))), `${input}: the same H`);
    }
  } finally {
    src.close();
  }
});

test('the Hugging Face GPTQ layout holds the GPTQ values (the same as lowbit\'s layout), not round-to-nearest', async () => {
  const { dequantizePackedInt4 } = await import('../src/io/packed-int4.js');
  const { toFloat32 } = await import('../src/io/tensor-data.js');
  const { resolveScheme } = await import('../src/quant/registry.js');
  // embeddings kept in f16 as the packed layout keeps them, so both plans give layer 0 the same input
  const recipe = { ...int4('gptq'), rules: [{ match: '(_norm\\.weight|\\.bias)$', keep: 'f32' }, { match: '^(token_embd|output)\\.weight$', keep: 'f16' }, { match: '\\.weight$', scheme: 'int4', groupSize: 32 }] };
  const run = async (layout: 'lowbit' | 'gptq', algorithm: string) => {
    const src = fileSource(GGUF);
    try {
      const m = await openModelFile(src);
      const sink = memorySink();
      await quantize(m, recipeFromJSON(JSON.stringify({ ...recipe, algorithm })), sink, { output: 'safetensors', layout, keepUnpackable: true, calibText: CALIB });
      return openModelFile((await import('../src/io/source.js')).bytesSource(sink.bytes(), `${layout}.safetensors`));
    } finally {
      src.close();
    }
  };
  const valuesOf = async (m: Awaited<ReturnType<typeof run>>) => {
    const g = m.packedInt4!.find((x) => x.prefix === 'model.layers.0.self_attn.v_proj')!;
    return dequantizePackedInt4(g, async (t) => toFloat32(t.dtype, await t.source.read(t.fileOffset, t.byteLength)));
  };
  const lowbit = await run('lowbit', 'gptq');
  const t = lowbit.tensor('blk.0.attn_v.weight');
  const [rows, cols] = JSON.parse(String(lowbit.metadata.get('lowbit.quant.blk.0.attn_v.weight'))).shape;
  const want = resolveScheme('int4', { groupSize: 32 }).dequantizeRef(await lowbit.read(t), rows, cols);
  const packed = await valuesOf(await run('gptq', 'gptq'));
  const rtn = await valuesOf(await run('gptq', 'rtn'));
  assert.deepEqual(packed, want, 'packed GPTQ = lowbit-layout GPTQ values');
  assert.notDeepEqual(packed, rtn, 'and not RTN');
});
