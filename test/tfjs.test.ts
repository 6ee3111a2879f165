/**
 * TensorFlow.js models (io/tfjs.ts): USE-lite's model.json + shards read and re-written byte-identically,
 * TFJS's uint8/uint16/float16 weight quantization read back as written, embeddings of the quantized model
 * in TensorFlow.js against the float model, the CLI, and bad input.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { concatParts } from '../src/io/sink.js';
import { readTfjs, tfjsAffine, tfjsMemoryArtifacts, writeTfjs, type TfjsModel } from '../src/io/tfjs.js';
import { dequantizeScheme, quantizeScheme, resolveScheme } from '../src/quant/registry.js';
import { cosine, sentences, USE_DIR, useEmbedder } from '../scripts/tfjs-testbed.js';
import { root } from '../scripts/onnx-testbed.js';

const bin = path.join(root, 'bin', 'lowbit.js');
const shardsOf = (dir: string) => async (p: string) => new Uint8Array(fs.readFileSync(path.join(dir, p)));
const readUse = () => readTfjs(fs.readFileSync(path.join(USE_DIR, 'model.json'), 'utf8'), 'model.json', shardsOf(USE_DIR));

test('TFJS: USE-lite round trip (float32 weights byte-identical), uint8/float16 read back as written, affine codes', async () => {
  const m = await readUse();
  assert.equal(m.weights.length, 61);
  const orig = JSON.parse(fs.readFileSync(path.join(USE_DIR, 'model.json'), 'utf8'));
  const plain = writeTfjs(m);
  assert.deepEqual(concatParts(plain.shards.map((s) => s.bytes)), concatParts(await Promise.all(orig.weightsManifest[0].paths.map(shardsOf(USE_DIR)))));
  assert.deepEqual(JSON.parse(plain.modelJson).modelTopology, orig.modelTopology);
  for (const q of ['uint8', 'float16'] as const) {
    const w = writeTfjs(m, q, { minElements: 16 });
    const files = new Map(w.shards.map((s) => [s.path, s.bytes]));
    const back = await readTfjs(w.modelJson, q, async (p) => files.get(p)!);
    const total = w.shards.reduce((a, s) => a + s.bytes.length, 0);
    assert.ok(total < (q === 'uint8' ? 0.26 : 0.51) * plain.shards.reduce((a, s) => a + s.bytes.length, 0), `${q}: ${total} bytes`);
    // what was read back is what the writer says it stored: its report's SQNR recomputed
    back.weights.forEach((bw, i) => {
      if (!bw.values) return;
      const a = m.weights[i].values!;
      let s = 0;
      let e = 0;
      for (let k = 0; k < a.length; k++) {
        s += a[k] ** 2;
        e += (a[k] - bw.values[k]) ** 2;
      }
      const r = w.report.find((x) => x.name === bw.spec.name)!;
      assert.ok(e === 0 ? r.sqnrDb === Infinity : Math.abs(10 * Math.log10(s / e) - r.sqnrDb) < 1e-6, `${q} ${bw.spec.name}`);
      if (a.length < 16) assert.equal(e, 0, 'small tensors stay float32');
    });
  }
  // affine: 0 is a code, codes span [0, 2^bits - 1]
  const a = tfjsAffine(Float32Array.from([-1, -0.3, 0, 0.7, 2]), 8);
  assert.equal(a.dq[2], 0);
  assert.deepEqual([Math.min(...a.q), Math.max(...a.q)], [0, 255]);
});

test('TFJS: USE-lite embeddings of the quantized models in TensorFlow.js, cosine to the float model', async () => {
  const m = await readUse();
  const S = sentences(30);
  const run = async (w: ReturnType<typeof writeTfjs>) => {
    const e = await useEmbedder(w.modelJson, concatParts(w.shards.map((s) => s.bytes)));
    const out = await e.embed(S);
    e.dispose();
    return out;
  };
  const ref = await run(writeTfjs(m));
  assert.equal(ref[0].length, 512);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  // measured on 300 sentences: float16 0.999999, uint16 1.000000, uint8 0.99716 (min 0.9927)
  for (const [q, min] of [['float16', 0.9999], ['uint8', 0.99]] as const) {
    const got = await run(writeTfjs(m, q, { minElements: 16 }));
    const c = mean(ref.map((r, i) => cosine(r, got[i])));
    assert.ok(c > min && c < 1 - 1e-9, `${q}: mean cosine ${c}`);
  }
  // and the embeddings mean something: different sentences are not all alike
  assert.ok(cosine(ref[0], ref[1]) < 0.95);
});

test('lowbit quantize model.json: writes shards + model.json; bad input is named', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-tfjs-'));
  try {
    const r = spawnSync(process.execPath, [bin, 'quantize', path.join(USE_DIR, 'model.json'), path.join(tmp, 'model.json'), '--type', 'uint8', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.deepEqual(rep.shards, ['group1-shard1of2.bin', 'group1-shard2of2.bin']);
    assert.ok(rep.outputWeightBytes < 0.26 * rep.inputWeightBytes);
    const back: TfjsModel = await readTfjs(fs.readFileSync(path.join(tmp, 'model.json'), 'utf8'), 'out', shardsOf(tmp));
    assert.equal(back.weights.filter((w) => w.spec.quantization?.dtype === 'uint8').length, rep.weights - back.weights.filter((w) => w.values && w.values.length < 16).length);
    // bad input on a tiny model: a truncated shard, a path outside the folder, not JSON, an unknown type
    const tiny = { modelTopology: { node: [] }, weightsManifest: [{ paths: ['w.bin'], weights: [{ name: 'w', shape: [64], dtype: 'float32' }] }] };
    fs.writeFileSync(path.join(tmp, 'tiny.json'), JSON.stringify(tiny));
    fs.writeFileSync(path.join(tmp, 'w.bin'), new Uint8Array(100));
    const bad = (args: string[], re: RegExp) => {
      const x = spawnSync(process.execPath, [bin, 'quantize', ...args], { encoding: 'utf8' });
      assert.equal(x.status, 2, x.stderr);
      assert.match(x.stderr, re);
    };
    bad([path.join(tmp, 'tiny.json'), path.join(tmp, 'o.json'), '--type', 'float16'], /past the end of its shards/);
    tiny.weightsManifest[0].paths[0] = '../../etc/passwd';
    fs.writeFileSync(path.join(tmp, 'evil.json'), JSON.stringify(tiny));
    bad([path.join(tmp, 'evil.json'), path.join(tmp, 'o.json'), '--type', 'float16'], /must be relative, inside the model's folder/);
    fs.writeFileSync(path.join(tmp, 'x.json'), '{"modelTopology": {');
    bad([path.join(tmp, 'x.json'), path.join(tmp, 'o.json'), '--type', 'float16'], /not JSON/);
    bad([path.join(tmp, 'tiny.json'), path.join(tmp, 'o.json'), '--type', 'q9_9'], /take uint8, uint16 or float16 .*or a lowbit scheme/);
    // a lowbit scheme through the CLI: written, read back by lowbit
    fs.mkdirSync(path.join(tmp, 'q4'));
    const r4 = spawnSync(process.execPath, [bin, 'quantize', path.join(USE_DIR, 'model.json'), path.join(tmp, 'q4', 'model.json'), '--type', 'int4', '--group', '64', '--json'], { encoding: 'utf8' });
    assert.equal(r4.status, 0, r4.stderr);
    assert.ok(JSON.parse(r4.stdout).outputWeightBytes < 0.16 * rep.inputWeightBytes);
    const b4 = await readTfjs(fs.readFileSync(path.join(tmp, 'q4', 'model.json'), 'utf8'), 'q4', shardsOf(path.join(tmp, 'q4')));
    assert.equal(b4.weights.filter((w) => w.spec.quantization?.dtype === 'lowbit').length, 11);
    assert.ok(!fs.existsSync(path.join(tmp, 'o.json')));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test("TFJS: lowbit's formats (q4_k, int4 groups) in the manifest, read back by lowbit, embeddings in TensorFlow.js", async () => {
  const m = await readUse();
  const S = sentences(30);
  const embed = async (back: TfjsModel) => {
    const a = tfjsMemoryArtifacts(back);
    const j = JSON.stringify({ modelTopology: a.modelTopology, weightsManifest: [{ paths: [], weights: a.weightSpecs }] });
    const e = await useEmbedder(j, new Uint8Array(a.weightData));
    const out = await e.embed(S);
    e.dispose();
    return out;
  };
  const ref = await embed(m);
  const plainBytes = writeTfjs(m).shards.reduce((a, s) => a + s.bytes.length, 0);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  // measured on 300 sentences: q4_k 0.97669 (min 0.950), q8_0 0.99986, int4_g32 0.95751 (14.2 % of the float bytes)
  for (const [name, options, min] of [['q4_k', undefined, 0.96], ['q8_0', undefined, 0.999], ['int4', { groupSize: 64 }, 0.93]] as const) {
    const w = writeTfjs(m, undefined, { lowbit: { name, options, transposed: 'auto' } });
    const specs = JSON.parse(w.modelJson).weightsManifest[0].weights as { name: string; shape: number[]; quantization?: { dtype: string; transposed?: boolean } }[];
    const lb = specs.filter((x) => x.quantization?.dtype === 'lowbit');
    assert.equal(lb.length, 11, `${name}: the 10 matrices and the embedding table`);
    // the embedding [8002, 256] groups its rows (8002 is no multiple of a block); kernels [K, N] group along K
    assert.equal(lb.find((x) => x.shape[0] === 8002)!.quantization!.transposed, undefined);
    assert.ok(lb.filter((x) => x.quantization!.transposed).length === 10);
    const bytes = w.shards.reduce((a, s) => a + s.bytes.length, 0);
    assert.ok(bytes < (name === 'q8_0' ? 0.28 : 0.16) * plainBytes, `${name}: ${bytes} of ${plainBytes} bytes`);
    const files = new Map(w.shards.map((s) => [s.path, s.bytes]));
    const back = await readTfjs(w.modelJson, name, async (p) => files.get(p)!);
    // what lowbit reads back is the scheme's own dequantization of the transposed kernel
    const i = back.weights.findIndex((x) => x.spec.quantization?.transposed);
    const [K, N] = back.weights[i].spec.shape.slice(-2);
    const sch = resolveScheme(name, options ?? {});
    const wt = Float32Array.from({ length: K * N }, (_, k) => m.weights[i].values![(k % K) * N + Math.floor(k / K)]);
    const dqt = dequantizeScheme(sch, quantizeScheme(sch, wt, N, K), N, K);
    assert.deepEqual(Float32Array.from({ length: K * N }, (_, k) => dqt[(k % N) * K + Math.floor(k / N)]), back.weights[i].values);
    const got = await embed(back);
    const c = mean(ref.map((r, k) => cosine(r, got[k])));
    assert.ok(c > min && c < 1 - 1e-7, `${name}: mean cosine ${c}`);
  }
  // TensorFlow.js alone refuses the format by name; lowbit names an unknown scheme
  const bad = JSON.parse(writeTfjs(m, undefined, { lowbit: { name: 'q8_0', transposed: 'auto' } }).modelJson);
  bad.weightsManifest[0].weights.find((x: { quantization?: { scheme?: string } }) => x.quantization?.scheme)!.quantization.scheme = 'q9_9';
  await assert.rejects(readTfjs(JSON.stringify(bad), 'bad.json', async () => new Uint8Array(0)), /lowbit scheme q9_9/);
});
