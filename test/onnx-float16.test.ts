/**
 * --float16: weights and activations in float16 with Casts at the float32 boundaries (model inputs and
 * outputs, float32-only slots, ops left in float32, constants beyond float16's range), checked in
 * onnxruntime-node against the float model: a synthetic graph, PP-OCRv4 rec and det, and q4f16 through the CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { buildModel, floatTensor, int64Tensor, node, valueInfo } from '../src/io/onnx/build.js';
import { convertFloat16, inferElementTypes } from '../src/io/onnx/float16.js';
import { encodeOnnx, parseOnnx } from '../src/io/onnx/model.js';
import { ortSession, type Feeds, type OutTensor } from '../src/cli/onnx-runtime.js';
import { feedOf, ocr, root } from '../scripts/onnx-testbed.js';

const bin = path.join(root, 'bin', 'lowbit.js');
const run = async (bytes: Uint8Array, feeds: Feeds): Promise<Map<string, OutTensor>> => {
  const s = await ortSession(bytes);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
};
const sqnr = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  let e = 0;
  for (let i = 0; i < a.length; i++) {
    s += a[i] ** 2;
    e += (a[i] - b[i]) ** 2;
  }
  return 10 * Math.log10(s / e);
};

test('float16: synthetic graph (Conv, BatchNorm with wide variances, Resize scales, ConstantOfShape, Cast, shared constant) runs in onnxruntime as float does', async () => {
  const C = 4;
  const H = 6;
  const w = Float32Array.from({ length: C * C * 9 }, (_, i) => Math.sin(i * 0.7) * 0.3);
  const p = buildModel({
    nodes: [
      node('Conv', ['x', 'W', 'B'], ['c'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv'),
      // variances of 1e6: beyond float16, so this node stays float32
      node('BatchNormalization', ['c', 'g', 'b', 'mu', 'var'], ['bn'], { epsilon: { float: 1e-5 } }, 'bn'),
      node('Resize', ['bn', '', 'scales'], ['up'], { mode: 'nearest' }, 'resize'),
      node('Shape', ['up'], ['shape'], {}, 'shape'),
      node('ConstantOfShape', ['shape'], ['ones'], { value: floatTensor('v', [1], [0.5]) }, 'cos'),
      node('Add', ['up', 'ones'], ['sum'], {}, 'add'),
      node('Cast', ['shape'], ['shapef'], { to: 1 }, 'castf'),
      node('ReduceSum', ['shapef', 'axes'], ['nel'], { keepdims: 0 }, 'rs'),
      node('Mul', ['sum', 'g4'], ['y'], {}, 'mul'),
      // the same constant read by a float32-only slot (QuantizeLinear's scale) and a float16 one (Mul)
      node('QuantizeLinear', ['y', 'half', 'zp'], ['yq'], {}, 'ql'),
      node('Mul', ['nel', 'half'], ['nelh'], {}, 'mulh'),
    ],
    inputs: [valueInfo('x', 1, [1, C, H, H])],
    outputs: [valueInfo('y', 1, [1, C, 2 * H, 2 * H]), valueInfo('yq', 2, [1, C, 2 * H, 2 * H]), valueInfo('nelh', 1, [])],
    initializers: [
      floatTensor('W', [C, C, 3, 3], w),
      floatTensor('B', [C], [0.1, -0.2, 0.3, 0]),
      floatTensor('g', [C], [1, 2, 0.5, 1]),
      floatTensor('b', [C], [0, 1, 0, -1]),
      floatTensor('mu', [C], [0, 10, -5, 3]),
      floatTensor('var', [C], [1e6, 4e6, 2.5e5, 1e6]),
      floatTensor('scales', [4], [1, 1, 2, 2]),
      floatTensor('g4', [1], [1.5]),
      floatTensor('half', [], [0.5]),
      { name: 'zp', data_type: 2, dims: [], raw_data: Uint8Array.of(0) },
      int64Tensor('axes', [1], [0]),
    ],
    opset: 17,
  });
  const feeds = feedOf('x', [1, C, H, H], (i) => 300 * Math.cos(i * 0.37));
  const ref = await run(encodeOnnx(p), feeds);
  const m = parseOnnx(encodeOnnx(p));
  const rep = await convertFloat16(m);
  const types = inferElementTypes(m.proto.graph!);
  assert.equal(rep.keptOps.BatchNormalization, 1);
  assert.equal(rep.keptOps.QuantizeLinear, 1);
  assert.equal(types.get('W'), 10, 'Conv weight in float16');
  assert.equal(types.get('var'), 1, 'wide variances stay float32');
  assert.equal(types.get('scales'), 1, "Resize's scales stay float32");
  assert.equal(types.get('half'), 1, 'a constant also read as float32 stays float32 (a Cast for the float16 reader)');
  assert.equal(types.get('x'), 1);
  for (const o of m.proto.graph!.output!) assert.notEqual(o.type?.tensor_type?.elem_type, 10, 'outputs keep their types');
  const got = await run(encodeOnnx(m.proto), feeds);
  const db = sqnr(ref.get('y')!.data, got.get('y')!.data);
  assert.ok(db > 50, `y SQNR ${db.toFixed(1)} dB`);
  assert.equal(got.get('nelh')!.data[0], ref.get('nelh')!.data[0]);
  // without the wide-constant rule BatchNorm's variances would clamp to 65504 and y would be wrong
  const clamped = parseOnnx(encodeOnnx(p));
  clamped.proto.graph!.initializer!.find((t) => t.name === 'var')!.raw_data = new Uint8Array(Float32Array.of(65504, 65504, 65504, 65504).buffer);
  const bad = await run(encodeOnnx(clamped.proto), feeds);
  assert.ok(sqnr(ref.get('y')!.data, bad.get('y')!.data) < 20);
});

test('float16: PP-OCRv4 rec and det in onnxruntime (half the size; output SQNR against float)', async () => {
  const mean = [0.485, 0.456, 0.406];
  const std = [0.229, 0.224, 0.225];
  const H = 96;
  // a page of dark strokes on white (ImageNet normalization, as PaddleOCR's det preprocessing)
  const page = (i: number) => {
    const c = Math.floor(i / (H * H));
    const y = Math.floor(i / H) % H;
    const x = i % H;
    const ink = y % 20 >= 6 && y % 20 < 14 && x > 10 && x < 40 + Math.floor(y / 20) * 12 && (x * 7 + y * 3) % 5 < 3;
    return ((ink ? 0.1 : 0.95) - mean[c]) / std[c];
  };
  for (const [file, shape, f, minDb] of [
    ['ch_PP-OCRv4_rec_infer.onnx', [1, 3, 48, 160], (i: number) => Math.sin(i * 0.013) * 0.8, 40],
    ['ch_PP-OCRv4_det_infer.onnx', [1, 3, H, H], page, 40],
  ] as const) {
    const bytes = new Uint8Array(fs.readFileSync(ocr(file)));
    const m = parseOnnx(bytes);
    const rep = await convertFloat16(m);
    const half = encodeOnnx(m.proto);
    assert.ok(half.length < 0.51 * bytes.length, `${file}: ${half.length} of ${bytes.length} bytes`);
    const feeds = feedOf('x', [...shape], f);
    const a = [...(await run(bytes, feeds)).values()][0].data;
    const b = [...(await run(half, feeds)).values()][0].data;
    const db = sqnr(a, b);
    assert.ok(db > minDb, `${file}: SQNR ${db.toFixed(1)} dB (kept ${JSON.stringify(rep.keptOps)})`);
  }
});

test('lowbit quantize --type int4 --float16 (q4f16): MatMulNBits with float16 activations and scales in onnxruntime', async () => {
  const K = 64;
  const N = 32;
  const w = Float32Array.from({ length: K * N }, (_, i) => ((Math.sin(i * 12.9898) * 43758.5453) % 1) * 0.1);
  const p = buildModel({
    nodes: [node('MatMul', ['x', 'W'], ['h'], {}, 'mm'), node('Relu', ['h'], ['y'], {}, 'relu')],
    inputs: [valueInfo('x', 1, [2, K])],
    outputs: [valueInfo('y', 1, [2, N])],
    initializers: [floatTensor('W', [K, N], w)],
    opset: 17,
  });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-f16-'));
  try {
    fs.writeFileSync(path.join(tmp, 'm.onnx'), encodeOnnx(p));
    const r = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'q.onnx'), '--type', 'int4', '--float16', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.equal(rep.onnxruntimeLoads, true);
    assert.ok(rep.float16.tensors >= 1);
    const q = parseOnnx(new Uint8Array(fs.readFileSync(path.join(tmp, 'q.onnx'))));
    const mm = q.proto.graph!.node!.find((n) => n.op_type === 'MatMulNBits')!;
    assert.equal(inferElementTypes(q.proto.graph!).get(mm.input![2]), 10, 'scales in float16');
    // the same int4 model without --float16: float16 adds little to int4's error
    const r4 = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'q4.onnx'), '--type', 'int4', '--json'], { encoding: 'utf8' });
    assert.equal(r4.status, 0, r4.stderr);
    const feeds = feedOf('x', [2, K], (i) => Math.cos(i * 0.7));
    const a = (await run(encodeOnnx(p), feeds)).get('y')!.data;
    const b = (await run(encodeOnnx(q.proto), feeds)).get('y')!.data;
    const c = (await run(new Uint8Array(fs.readFileSync(path.join(tmp, 'q4.onnx'))), feeds)).get('y')!.data;
    // measured: float vs q4 18.3 dB, float vs q4f16 18.3 dB, q4 vs q4f16 67.9 dB
    assert.ok(sqnr(a, b) > 15, `q4f16 output SQNR ${sqnr(a, b).toFixed(1)} dB`);
    assert.ok(sqnr(c, b) > 50, `q4f16 against q4: ${sqnr(c, b).toFixed(1)} dB`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('float16: Silero VAD v5 (LSTM weights read by nested If branches) stored float16, runs in onnxruntime with the same decisions', async () => {
  const file = path.join(root, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx');
  const bytes = new Uint8Array(fs.readFileSync(file));
  const m = parseOnnx(bytes);
  const rep = await convertFloat16(m);
  assert.ok(rep.subgraphs >= 50);
  const half = encodeOnnx(m.proto);
  // the LSTM weights (Constants of the outer If branches, read by nested ones) are float16 too:
  // 54.7 % of the float file (77.3 % while they stayed float32)
  assert.ok(half.length < 0.56 * bytes.length, `${half.length} of ${bytes.length} bytes`);
  // 60 frames of 512 samples at 16 kHz: 220 Hz tone bursts over low noise, the state carried
  let rnd = 7;
  const noise = () => ((rnd = (rnd * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.02;
  const probs = async (model: Uint8Array): Promise<number[]> => {
    const s = await ortSession(model);
    rnd = 7;
    try {
      let state = new Float32Array(2 * 128);
      const p: number[] = [];
      for (let f = 0; f < 60; f++) {
        const x = Float32Array.from({ length: 512 }, (_, i) => (Math.floor(f / 10) % 2 ? 0.5 * Math.sin((2 * Math.PI * 220 * (f * 512 + i)) / 16000) * (1 + 0.5 * Math.sin(i / 40)) : 0) + noise());
        const o = await s.run({
          input: { type: 'float32', shape: [1, 512], data: new Uint8Array(x.buffer) },
          state: { type: 'float32', shape: [2, 1, 128], data: new Uint8Array(state.buffer) },
          sr: { type: 'int64', shape: [1], data: new Uint8Array(BigInt64Array.of(16000n).buffer) },
        });
        p.push(o.get('output')!.data[0]);
        state = Float32Array.from(o.get('stateN')!.data);
      }
      return p;
    } finally {
      await s.release();
    }
  };
  const a = await probs(bytes);
  const b = await probs(half);
  const dmax = Math.max(...a.map((v, i) => Math.abs(v - b[i])));
  const agree = a.filter((v, i) => v > 0.5 === b[i] > 0.5).length;
  assert.ok(a.some((v) => v > 0.5) && a.some((v) => v < 0.5), `the float model decides both ways: ${a.map((v) => v.toFixed(2))}`);
  assert.equal(agree, 60, `decisions agree on ${agree}/60 frames`);
  assert.ok(dmax < 0.05, `max |Δp| ${dmax}`);
  console.log(`# Silero VAD v5 float16: ${half.length} / ${bytes.length} bytes (${((100 * half.length) / bytes.length).toFixed(1)} %), max |Δp| ${dmax.toExponential(2)}, ${agree}/60 decisions`);
});
