/**
 * QDQ: opset upgrade (13 and 21) keeps PP-OCRv4's outputs bit-identical; per-channel int8 Conv weights +
 * uint8 activations, and float8e4m3fn weights + activations (every code checked against onnxruntime),
 * run in onnxruntime-node with the numbers of an emulation; calibration range methods; CLI errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { buildModel, floatTensor, node, valueInfo } from '../src/io/onnx/build.js';
import { encodeOnnx, makeTensor, parseOnnx } from '../src/io/onnx/model.js';
import { upgradeOpset } from '../src/io/onnx/opset.js';
import { activationParams, activationQuantizer, correctedConvBias, fp8Code, fp8Value, quantizePerChannel, quantizeQdq, RangeCollector, type QdqOptions } from '../src/io/onnx/qdq.js';
import { captureActivations, ortSession } from '../src/cli/onnx-runtime.js';
import { sequentialBiasMeans } from '../src/pipeline/quantize-onnx.js';
import type { OnnxCalibration } from '../src/pipeline/plan.js';
import { feedOf, ocr, root } from '../scripts/onnx-testbed.js';
import { writeNpy } from '../src/io/npy.js';
import { assertRefused } from './cli-refusal.js';

const bin = path.join(root, 'bin', 'lowbit.js');

test('opset 9/11 -> 13 (Slice, Clip, Squeeze, Softmax, Resize...) and 11 -> 21: PP-OCRv4 rec and det outputs bit-identical', async () => {
  for (const [file, shape, target] of [
    ['ch_PP-OCRv4_rec_infer.onnx', [1, 3, 48, 96], 13],
    ['ch_PP-OCRv4_det_infer.onnx', [1, 3, 96, 96], 13],
    ['ch_PP-OCRv4_det_infer.onnx', [1, 3, 64, 64], 21],
  ] as const) {
    const bytes = new Uint8Array(fs.readFileSync(ocr(file)));
    const m = parseOnnx(bytes);
    assert.ok(upgradeOpset(m.proto, target));
    const feeds = feedOf('x', [...shape], (i) => Math.sin(i * 0.013));
    const a = await ortSession(bytes);
    const b = await ortSession(encodeOnnx(m.proto));
    const ya = [...(await a.run(feeds)).values()][0];
    const yb = [...(await b.run(feeds)).values()][0];
    await a.release();
    await b.release();
    assert.deepEqual(yb.dims, ya.dims);
    assert.equal(ya.data.findIndex((v, i) => v !== yb.data[i]), -1, `${file}: outputs differ`);
  }
});

/** a 3x3 Conv (pads 1, no bias) of fake-quantized input xq [C, H, H] and weights dq [O, C, 3, 3], float64 sums */
function conv3x3(xq: Float32Array, dq: Float32Array, C: number, O: number, H: number): Float64Array {
  const y = new Float64Array(O * H * H);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < H; i++)
      for (let j = 0; j < H; j++) {
        let acc = 0;
        for (let c = 0; c < C; c++)
          for (let di = 0; di < 3; di++)
            for (let dj = 0; dj < 3; dj++) {
              const ii = i + di - 1;
              const jj = j + dj - 1;
              if (ii >= 0 && ii < H && jj >= 0 && jj < H) acc += xq[(c * H + ii) * H + jj] * dq[((o * C + c) * 3 + di) * 3 + dj];
            }
        y[(o * H + i) * H + j] = acc;
      }
  return y;
}

/** the 3x3 Conv of the QDQ Conv tests: C -> O channels on H x H, a weight scale growing per output channel */
const CONV = (() => {
  const C = 3;
  const O = 4;
  const H = 6;
  const w = Float32Array.from({ length: O * C * 9 }, (_, i) => Math.sin(i * 0.9) * (1 + Math.floor(i / 27)));
  const wShape = [O, C, 3, 3];
  /** a fresh opset-13 model of the Conv alone (x -> y, padded to keep H x H) */
  const model = () =>
    buildModel({
      nodes: [node('Conv', ['x', 'W'], ['y'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv')],
      inputs: [valueInfo('x', 1, [1, C, H, H])],
      outputs: [valueInfo('y', 1, [1, O, H, H])],
      initializers: [floatTensor('W', wShape, w)],
      opset: 13,
    });
  return { C, O, H, wShape, w, model };
})();

test('QDQ Conv (int8 per channel + uint8 static activation) in onnxruntime equals the emulated int8 numbers', async () => {
  const { C, O, H, wShape, w } = CONV;
  const p = CONV.model();
  const feeds = feedOf('x', [1, C, H, H], (i) => Math.cos(i * 0.37) * 2 + 0.5);
  const x = new Float32Array(feeds.x.data.buffer);
  const rc = new RangeCollector();
  rc.observeMinMax('x', x);
  const range = rc.range('x', 'minmax');
  const m = parseOnnx(encodeOnnx(p));
  const rep = await quantizeQdq(m, { ops: new Set(['Conv']), activations: 'static', ranges: new Map([['x', range]]) });
  assert.match(rep[0].action, /QDQ int8\/ch \+ uint8 static/);
  const s = await ortSession(encodeOnnx(m.proto));
  const y = [...(await s.run(feeds)).values()][0].data;
  await s.release();
  // emulation: fake-quantized x and w, float conv
  const { scale, zeroPoint } = activationParams(range[0], range[1]);
  const xq = x.map((v) => (Math.max(0, Math.min(255, Math.round(v / scale) + zeroPoint)) - zeroPoint) * scale);
  const { dq } = quantizePerChannel(w, wShape, 0);
  let err = 0;
  let mag = 0;
  conv3x3(xq, dq, C, O, H).forEach((acc, k) => {
    err = Math.max(err, Math.abs(acc - y[k]));
    mag = Math.max(mag, Math.abs(acc));
  });
  assert.ok(err < 1e-4 * mag, `max |ort - emulation| ${err} of ${mag}`);
});

test('bias correction: an edge kernel (sum ~0) on a bright page keeps its output mean in onnxruntime (grouped Conv, static activations)', async () => {
  // 2 groups of 2 channels; each output's kernel sums to ~0, the input sits at 20 +- a small signal,
  // as PP-OCRv4's first depthwise convolution sees a white page
  const C = 4;
  const H = 8;
  const wShape = [C, 2, 3, 3];
  const w = Float32Array.from({ length: C * 2 * 9 }, (_, i) => {
    const k = i % 9;
    return (k === 4 ? -8.37 : 1.0 + 0.11 * Math.sin(i)) * (1 + (i % 18 >= 9 ? 0.5 : 0));
  });
  // make each (oc, ic) kernel sum to exactly 1e-3
  for (let r = 0; r < C * 2; r++) {
    let sum = 0;
    for (let k = 0; k < 9; k++) sum += w[r * 9 + k];
    w[r * 9 + 4] -= sum - 1e-3;
  }
  const bias = Float32Array.from({ length: C }, (_, i) => 0.1 * i);
  const p = buildModel({
    nodes: [node('Conv', ['x', 'W', 'B'], ['y'], { kernel_shape: [3, 3], group: 2 }, 'conv')],
    inputs: [valueInfo('x', 1, [1, C, H, H])],
    outputs: [valueInfo('y', 1, [1, C, H - 2, H - 2])],
    initializers: [floatTensor('W', wShape, w), floatTensor('B', [C], bias)],
    opset: 13,
  });
  const feeds = feedOf('x', [1, C, H, H], (i) => 20 + 0.3 * Math.sin(i * 0.7));
  const x = new Float32Array(feeds.x.data.buffer);
  const rc = new RangeCollector();
  rc.observeMinMax('x', x);
  const ranges = new Map([['x', rc.range('x', 'minmax')]]);
  rc.observeChannels('x', x, [1, C, H, H], ranges.get('x'));
  const means = new Map([['x', rc.channelMeans('x')!]]);
  const outMeans = async (bytes: Uint8Array) => {
    const s = await ortSession(bytes);
    const y = [...(await s.run(feeds)).values()][0].data;
    await s.release();
    const n = (H - 2) * (H - 2);
    return Array.from({ length: C }, (_, c) => y.subarray(c * n, (c + 1) * n).reduce((a, b) => a + b, 0) / n);
  };
  const ref = await outMeans(encodeOnnx(p));
  const errs: number[] = [];
  for (const withMeans of [false, true]) {
    const m = parseOnnx(encodeOnnx(p));
    await quantizeQdq(m, { ops: new Set(['Conv']), activations: 'static', ranges, means: withMeans ? means : undefined });
    const got = await outMeans(encodeOnnx(m.proto));
    errs.push(Math.max(...got.map((v, c) => Math.abs(v - ref[c]))));
  }
  // the weight error times the input level (20) moves every output by ~1e-2; corrected: float rounding
  assert.ok(errs[0] > 3e-3, `uncorrected mean error ${errs[0]}`);
  assert.ok(errs[1] < errs[0] / 20, `corrected ${errs[1]} vs uncorrected ${errs[0]}`);
  // the CLI: --weights-only with --calib writes int8 weights, float activations, corrected biases
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-qdq-'));
  try {
    fs.writeFileSync(path.join(tmp, 'm.onnx'), encodeOnnx(p));
    fs.writeFileSync(path.join(tmp, 'x.npy'), writeNpy(feeds.x));
    const r = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'q.onnx'), '--qdq', 'int8', '--weights-only', '--calib', path.join(tmp, 'x.npy'), '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).nodes[0].action, /weights only/);
    const got = await outMeans(new Uint8Array(fs.readFileSync(path.join(tmp, 'q.onnx'))));
    assert.ok(Math.max(...got.map((v, c) => Math.abs(v - ref[c]))) < errs[0] / 20, `CLI --weights-only: ${got} vs ${ref}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  // the group indexing: output channel c reads input channels of its own group only
  const dq = quantizePerChannel(w, wShape, 0).dq;
  const onlyGroup1 = correctedConvBias(w, dq, wShape, 2, undefined, { x: Float64Array.of(0, 0, 1, 1), q: Float64Array.of(0, 0, 1, 1) })!;
  assert.deepEqual([onlyGroup1[0], onlyGroup1[1]], [0, 0]);
  assert.ok(onlyGroup1[2] !== 0 && onlyGroup1[3] !== 0);
});

test('quantizePerChannel: per-channel scales along any axis (against a direct reference)', () => {
  const shape = [3, 4, 5];
  const w = Float32Array.from({ length: 60 }, (_, i) => Math.sin(i * 1.3) * (i + 1));
  for (const axis of [0, 1, 2]) {
    const { q, scales } = quantizePerChannel(w, shape, axis);
    const strides = [20, 5, 1];
    for (let c = 0; c < shape[axis]; c++) {
      let amax = 0;
      for (let i = 0; i < 60; i++) if (Math.floor(i / strides[axis]) % shape[axis] === c) amax = Math.max(amax, Math.abs(w[i]));
      assert.equal(scales[c], Math.fround(amax / 127));
    }
    for (let i = 0; i < 60; i++) assert.equal(q[i], Math.max(-127, Math.min(127, Math.round(w[i] / scales[Math.floor(i / strides[axis]) % shape[axis]]))));
  }
});

test('calibration ranges: percentile, mse and entropy clip the long tail that minmax keeps', () => {
  // Laplace(0, 1) samples (a heavy tail: where clipping pays)
  const x = Float32Array.from({ length: 100000 }, (_, i) => {
    const u = (((Math.sin(i * 12.9898) * 43758.5453) % 1) + 1) % 1;
    return u < 0.5 ? Math.log(2 * u + 1e-12) : -Math.log(2 - 2 * u + 1e-12);
  });
  const rc = new RangeCollector();
  rc.observeMinMax('a', x);
  rc.observeHistogram('a', x);
  const [loMinmax, hiMinmax] = rc.range('a', 'minmax');
  assert.ok(hiMinmax > 8, `max ${hiMinmax}`);
  for (const m of ['percentile', 'mse'] as const) {
    const [lo, hi] = rc.range('a', m);
    assert.ok(hi < 0.8 * hiMinmax && lo <= 0 && hi > 2, `${m}: [${lo}, ${hi}] (minmax max ${hiMinmax})`);
  }
  // entropy (KL) clips less: the range only has to be narrower
  const [lo, hi] = rc.range('a', 'entropy');
  assert.ok(hi - lo < 0.95 * (hiMinmax - loMinmax) && hi > 2 && lo < -2, `entropy: [${lo}, ${hi}]`);
  // a one-sided post-activation tail (post-ReLU Gaussian): entropy must keep at least one histogram
  // bin per uint8 level (without that rule it clipped to 1 % of the range and PP-OCRv4 read 0/200 lines)
  const r = Float32Array.from({ length: 100000 }, (_, i) => {
    const u = (((Math.sin(i * 12.9898) * 43758.5453) % 1) + 1) % 1;
    return Math.max(0, Math.sqrt(-2 * Math.log(u + 1e-12)) * Math.cos(u * 1e4));
  });
  const rr = new RangeCollector();
  rr.observeMinMax('r', r);
  rr.observeHistogram('r', r);
  const [, rMax] = rr.range('r', 'minmax');
  const [, eHi] = rr.range('r', 'entropy');
  assert.ok(eHi >= (256 / 2048) * rMax && eHi > 1.5, `entropy on post-ReLU: ${eHi} of ${rMax}`);
});

test('lowbit quantize --qdq: clear errors (int8 and fp8)', () => {
  const out = '/tmp/never-written.onnx';
  const cases: [string[], RegExp][] = [
    [['--type', 'qdq'], /needs --qdq int8/],
    [['--qdq', 'int8'], /needs --calib/],
    [['--qdq', 'int8', '--dynamic', '--qdq-ops', 'LSTM'], /QDQ handles Conv, MatMul, Gemm/],
    [['--qdq', 'int4'], /not one of int8/],
    [['--qdq', 'int8', '--weights-only', '--dynamic'], /exclude each other/],
    [['--qdq', 'fp8', '--dynamic'], /has no --dynamic/],
    [['--qdq', 'fp8'], /needs --calib \(static activation ranges\) or --weights-only/],
    [['--qdq', 'fp8', '--calib', '/tmp', '--calib-method', 'entropy'], /takes minmax or percentile/],
    [['--type', 'int3'], /2, 4 and 8 bits only/],
    [['--qdq', 'int8', '--dynamic', '--act-granularity', 'channel'], /--act-granularity channel is for static QDQ/],
  ];
  for (const [args, re] of cases) assertRefused(bin, ['quantize', ocr('ch_PP-OCRv4_det_infer.onnx'), out, ...args], re, out);
});

test('FP8 QDQ (opset 19, float8e4m3fn): every code decodes in onnxruntime as lowbit decodes it, QuantizeLinear rounds as lowbit encodes', async () => {
  // DequantizeLinear of all 256 codes (scale 1) against fp8Value; QuantizeLinear of values on and
  // between codes (ties, subnormals, saturation beyond 448) against fp8Code
  const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
  const xs = Float32Array.from([0, 1, 1.0625, 1.125, 1.1875, -1.0625, 0.001953125, 0.0029296875, 0.0009765625, 448, 464, 480, 1e4, -1e4, 0.3, -7.77, 240, 232, 3.1e-3]);
  const p = buildModel({
    // QuantizeLinear's codes are read back through DequantizeLinear (scale 1: the value of the code)
    nodes: [node('DequantizeLinear', ['c', 'one', 'zc'], ['decoded']), node('QuantizeLinear', ['x', 'one', 'zc'], ['q']), node('DequantizeLinear', ['q', 'one', 'zc'], ['qvalues'])],
    inputs: [valueInfo('x', 1, [xs.length])],
    outputs: [valueInfo('decoded', 1, [256]), valueInfo('qvalues', 1, [xs.length])],
    initializers: [makeTensor('c', 17, [256], codes), floatTensor('one', [], [1]), makeTensor('zc', 17, [], new Uint8Array(1))],
    opset: 19,
    irVersion: 9,
  });
  const s = await ortSession(encodeOnnx(p));
  const out = await s.run({ x: { type: 'float32', shape: [xs.length], data: new Uint8Array(xs.buffer) } });
  await s.release();
  const decoded = out.get('decoded')!.data;
  for (let c = 0; c < 256; c++) {
    const v = fp8Value(c);
    if (Number.isNaN(v)) assert.ok(Number.isNaN(decoded[c]), `code ${c}`);
    else assert.equal(decoded[c], v, `code 0x${c.toString(16)}`);
  }
  const q = out.get('qvalues')!.data;
  xs.forEach((x, i) => assert.equal(q[i], fp8Value(fp8Code(x)), `QuantizeLinear(${x})`));
});

test('FP8 QDQ Conv (e4m3fn weights per channel + static e4m3fn activation, opset 11 -> 21) in onnxruntime equals the emulation', async () => {
  const { C, O, H, wShape, w } = CONV;
  // a ReduceMean with an axes attribute (an input from opset 18 on) rides along
  const p = buildModel({
    nodes: [node('Conv', ['x', 'W'], ['y0'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv'), node('ReduceMean', ['y0'], ['y'], { axes: [3], keepdims: 1 }, 'mean')],
    inputs: [valueInfo('x', 1, [1, C, H, H])],
    outputs: [valueInfo('y', 1, [1, O, H, 1])],
    initializers: [floatTensor('W', wShape, w)],
    opset: 11,
  });
  const feeds = feedOf('x', [1, C, H, H], (i) => Math.cos(i * 0.37) * 2 + 0.5);
  const x = new Float32Array(feeds.x.data.buffer);
  const range: [number, number] = [-1.5, 2.5];
  const m = parseOnnx(encodeOnnx(p));
  const rep = await quantizeQdq(m, { ops: new Set(['Conv']), activations: 'static', ranges: new Map([['x', range]]), format: 'fp8' });
  assert.match(rep[0].action, /QDQ fp8\/ch \+ fp8 static/);
  assert.equal(m.proto.opset_import![0].version, 21);
  assert.ok(Number(m.proto.ir_version) >= 10);
  assert.ok(m.proto.graph!.initializer!.some((t) => t.data_type === 17 && t.dims!.length === 4), 'weights stored as float8e4m3fn');
  const s = await ortSession(encodeOnnx(m.proto));
  const y = [...(await s.run(feeds)).values()][0].data;
  await s.release();
  const { fq } = activationQuantizer(range[0], range[1], 'fp8');
  assert.equal(activationQuantizer(range[0], range[1], 'fp8').scale, Math.fround(2.5 / 448));
  const xq = x.map(fq);
  const { dq, scales } = quantizePerChannel(w, wShape, 0, 'fp8');
  assert.equal(scales[0], Math.fround(Math.max(...w.subarray(0, 27).map(Math.abs)) / 448));
  let err = 0;
  let mag = 0;
  const full = conv3x3(xq, dq, C, O, H);
  for (let r = 0; r < O * H; r++) {
    // ReduceMean over the last axis
    const row = full.subarray(r * H, (r + 1) * H).reduce((x0, x1) => x0 + x1, 0) / H;
    err = Math.max(err, Math.abs(row - y[r]));
    mag = Math.max(mag, Math.abs(row));
  }
  assert.ok(err < 1e-4 * mag, `max |ort - emulation| ${err} of ${mag}`);
  // fp8 has no dynamic activations
  await assert.rejects(quantizeQdq(parseOnnx(encodeOnnx(p)), { ops: new Set(['Conv']), activations: 'dynamic', format: 'fp8' }), /no dynamic activations/);
});

test('per-channel static activations (QuantizeLinear axis 1): onnxruntime equals the per-channel emulation; channels of very different ranges keep their precision', async () => {
  const C = 3;
  const O = 2;
  const H = 5;
  const wShape = [O, C, 1, 1];
  // output 1 reads only the small channels
  const w = Float32Array.from([0.5, -1, 2, 0, 1, -2]);
  const p = buildModel({
    nodes: [node('Conv', ['x', 'W'], ['y'], { kernel_shape: [1, 1] }, 'conv')],
    inputs: [valueInfo('x', 1, [1, C, H, H])],
    outputs: [valueInfo('y', 1, [1, O, H, H])],
    initializers: [floatTensor('W', wShape, w)],
    opset: 13,
  });
  // channel 0 spans +-100, channels 1 and 2 +-0.1: one per-tensor range would flatten them
  const feeds = feedOf('x', [1, C, H, H], (i) => Math.sin(i * 0.77) * (i < H * H ? 100 : 0.1));
  const x = new Float32Array(feeds.x.data.buffer);
  const rc = new RangeCollector();
  rc.observePerChannel('x', x, [1, C, H, H], 'minmax');
  rc.observeMinMax('x', x);
  const perChannel = rc.channelRanges('x', 'minmax')!;
  assert.ok(perChannel[1][0] > 50 && perChannel[1][1] < 0.2);
  const run = async (range: [number, number] | [Float32Array, Float32Array]) => {
    const m = parseOnnx(encodeOnnx(p));
    const rep = await quantizeQdq(m, { ops: new Set(['Conv']), activations: 'static', ranges: new Map([['x', range]]) });
    const s = await ortSession(encodeOnnx(m.proto));
    const y = [...(await s.run(feeds)).values()][0].data;
    await s.release();
    return { y, action: rep[0].action };
  };
  const { y, action } = await run(perChannel);
  assert.match(action, /uint8 static per channel/);
  const { dq } = quantizePerChannel(w, wShape, 0);
  const fqs = Array.from({ length: C }, (_, c) => activationQuantizer(perChannel[0][c], perChannel[1][c]).fq);
  const emu = new Float32Array(O * H * H);
  const exact = new Float32Array(O * H * H);
  for (let o = 0; o < O; o++)
    for (let k = 0; k < H * H; k++)
      for (let c = 0; c < C; c++) {
        emu[o * H * H + k] += dq[o * C + c] * fqs[c](x[c * H * H + k]);
        exact[o * H * H + k] += dq[o * C + c] * x[c * H * H + k]; // weights' error left out: the activations' only
      }
  let err = 0;
  for (let i = 0; i < emu.length; i++) err = Math.max(err, Math.abs(emu[i] - y[i]));
  assert.ok(err < 1e-4, `max |ort - emulation| ${err}`);
  // against per-tensor: the small channels' contribution survives (error on the output much lower)
  const tensor = await run(rc.range('x', 'minmax'));
  const e = (a: Float32Array) => a.reduce((s, v, i) => s + (i >= H * H ? (v - exact[i]) ** 2 : 0), 0);
  const signal = exact.reduce((s, v, i) => s + (i >= H * H ? v * v : 0), 0);
  // per tensor (scale 200/255 > the small channels' range) rounds them to 0: output 1 is lost
  assert.ok(e(tensor.y) > 0.5 * signal, `per tensor ${e(tensor.y)} of ${signal}`);
  assert.ok(e(y) < 1e-3 * signal, `per channel ${e(y)} of ${signal}`);
});

test('--act16: uint16 static activation (opset 21) in onnxruntime equals the 16-bit emulation, 256x finer than uint8', async () => {
  const { C, O, H, wShape, w } = CONV;
  const p = CONV.model();
  // a wide activation: most values near 0, a few up to 30
  const feeds = feedOf('x', [1, C, H, H], (i) => Math.cos(i * 0.37) * 0.3 + (i % 97 === 0 ? 30 : 0));
  const x = new Float32Array(feeds.x.data.buffer);
  const rc = new RangeCollector();
  rc.observeMinMax('x', x);
  const range = rc.range('x', 'minmax');
  const run = async (act16: boolean) => {
    const m = parseOnnx(encodeOnnx(p));
    const rep = await quantizeQdq(m, { ops: new Set(['Conv']), activations: 'static', ranges: new Map([['x', range]]), act16: act16 ? new Set(['conv']) : undefined });
    assert.match(rep[0].action, act16 ? /uint16 static/ : /uint8 static/);
    const s = await ortSession(encodeOnnx(m.proto));
    const y = [...(await s.run(feeds)).values()][0].data;
    await s.release();
    return y;
  };
  const y16 = await run(true);
  const y8 = await run(false);
  const { scale, zeroPoint } = activationParams(range[0], range[1], 16);
  const xq = x.map((v) => (Math.max(0, Math.min(65535, Math.round(v / scale) + zeroPoint)) - zeroPoint) * scale);
  const { dq } = quantizePerChannel(w, wShape, 0);
  const emu = conv3x3(xq, dq, C, O, H);
  const wOnly = conv3x3(x, dq, C, O, H);
  let err = 0;
  let mag = 0;
  let e16 = 0;
  let e8 = 0;
  emu.forEach((acc, k) => {
    err = Math.max(err, Math.abs(acc - y16[k]));
    mag = Math.max(mag, Math.abs(acc));
    e16 += (y16[k] - wOnly[k]) ** 2;
    e8 += (y8[k] - wOnly[k]) ** 2;
  });
  assert.ok(err < 1e-4 * mag, `max |ort - emulation| ${err} of ${mag}`);
  // the activation error (against int8 weights with a float activation) drops by ~256^2 in power
  assert.ok(e8 / e16 > 1e3, `activation error uint8 / uint16: ${e8 / e16}`);
});

test('sequential bias correction: a Conv behind a uint16 Conv keeps its output mean where the float-model correction misses it', async () => {
  // conv1 (uint16 input) -> a -> conv2 (uint8 input, a 1x1 mix of large sum). `a` sits near
  // one level; conv1's int8 weights move it by a fraction of a uint8 step, so E[q(a)] measured on the
  // float model is not the E[q(a')] conv2 sees in the quantized model (docs/onnx.md, PP-OCRv4 det).
  const C = 2;
  const H = 10;
  const w1 = Float32Array.from({ length: C * C * 9 }, (_, i) => 0.05 + 0.013 * Math.sin(1.7 * i));
  const w2 = Float32Array.from({ length: C * C }, (_, i) => 3.1 + 0.7 * Math.cos(0.9 * i));
  const p = buildModel({
    nodes: [node('Conv', ['x', 'W1', 'B1'], ['a'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv1'), node('Conv', ['a', 'W2'], ['y'], { kernel_shape: [1, 1] }, 'conv2')],
    inputs: [valueInfo('x', 1, [1, C, H, H])],
    outputs: [valueInfo('y', 1, [1, C, H, H])],
    initializers: [floatTensor('W1', [C, C, 3, 3], w1), floatTensor('B1', [C], Float32Array.of(0.3, -0.2)), floatTensor('W2', [C, C, 1, 1], w2)],
    opset: 13,
  });
  const samples = [0, 1, 2].map((s) => feedOf('x', [1, C, H, H], (i) => 10 + 0.8 * Math.sin(i * 0.37 + s) + (i % 17 === 0 ? 40 : 0)));
  const cal: OnnxCalibration = { samples, capture: (proto, names, s, sink) => captureActivations(proto, names, s, sink), session: (b) => ortSession(b) };
  const rc = new RangeCollector();
  const mc = new RangeCollector();
  await cal.capture(p, ['x', 'a'], samples, (n, t) => rc.observeMinMax(n, t.data));
  const ranges = new Map((['x', 'a'] as const).map((n) => [n, rc.range(n, 'minmax')] as [string, [number, number]]));
  await cal.capture(p, ['x', 'a'], samples, (n, t) => mc.observeChannels(n, t.data, t.dims, ranges.get(n)));
  const means = new Map(['x', 'a'].map((n) => [n, mc.channelMeans(n)!]));
  const opts: QdqOptions = { ops: new Set(['Conv']), activations: 'static', ranges, means, act16: new Set(['conv1']) };
  const outMeans = async (bytes: Uint8Array) => {
    const s = await ortSession(bytes);
    const acc = new Float64Array(C);
    for (const f of samples) {
      const y = [...(await s.run(f)).values()][0].data;
      const n = y.length / C;
      for (let c = 0; c < C; c++) for (let j = 0; j < n; j++) acc[c] += y[c * n + j] / n / samples.length;
    }
    await s.release();
    return acc;
  };
  const ref = await outMeans(encodeOnnx(p));
  const err = async (o: QdqOptions) => {
    const m = parseOnnx(encodeOnnx(p));
    await quantizeQdq(m, o);
    const got = await outMeans(encodeOnnx(m.proto));
    return Math.max(...got.map((v, c) => Math.abs(v - ref[c])));
  };
  const nodeMeans = await sequentialBiasMeans(cal, encodeOnnx(p), 'm', opts, means, samples);
  assert.deepEqual([...nodeMeans.keys()], ['conv1', 'conv2']);
  // conv1 sees the graph input: the same terms as the float-model ones (its input is the float input)
  assert.deepEqual(nodeMeans.get('conv1')!.x, means.get('x')!.x);
  const oneShot = await err(opts);
  const sequential = await err({ ...opts, nodeMeans });
  // conv2 is 1x1: its output mean is exactly the float model's once E[q(a')] is the real one
  const scale = Math.max(...ref.map(Math.abs));
  assert.ok(sequential < 1e-5 * scale, `sequential ${sequential} of ${scale}`);
  assert.ok(oneShot > 30 * sequential && oneShot > 1e-4 * scale, `one-shot ${oneShot} vs sequential ${sequential} (of ${scale})`);
});
