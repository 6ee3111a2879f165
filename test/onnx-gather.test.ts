/**
 * GatherBlockQuantized: embedding tables quantized to com.microsoft GatherBlockQuantized (2/4/8 bits,
 * symmetric or with zero points, in float16 too) gather in onnxruntime-node exactly the rows of the
 * reference dequantizer; the CLI's --gather.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildModel, floatTensor, node, valueInfo } from '../src/io/onnx/build.js';
import { convertFloat16 } from '../src/io/onnx/float16.js';
import { quantizeGatherBlocks } from '../src/io/onnx/gather.js';
import { encodeOnnx, parseOnnx, tensorBytes } from '../src/io/onnx/model.js';
import { decodeNBits } from '../src/io/onnx/nbits.js';
import { ortSession } from '../src/cli/onnx-runtime.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'bin', 'lowbit.js');

const V = 50;
const D = 64;
const table = Float32Array.from({ length: V * D }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5)) * 0.02);
const ids = [0, 7, 49, 3, 7, -1];
/** Gather(E, ids) -> MatMul(., W) and the raw rows as a second output */
const model = () =>
  buildModel({
    nodes: [node('Gather', ['E', 'ids'], ['rows'], {}, 'embed'), node('MatMul', ['rows', 'W'], ['y'], {}, 'proj')],
    inputs: [valueInfo('ids', 7, [ids.length])],
    outputs: [valueInfo('rows', 1, [ids.length, D]), valueInfo('y', 1, [ids.length, 8])],
    initializers: [floatTensor('E', [V, D], table), floatTensor('W', [D, 8], Float32Array.from({ length: D * 8 }, (_, i) => Math.cos(i)))],
    opset: 17,
  });
const feeds = { ids: { type: 'int64' as const, shape: [ids.length], data: new Uint8Array(BigInt64Array.from(ids.map(BigInt)).buffer) } };

test('GatherBlockQuantized in onnxruntime-node gathers the reference-dequantized rows (2/4/8 bits, zero points)', async () => {
  for (const opts of [
    { bits: 4, blockSize: 32 },
    { bits: 4, blockSize: 16, symmetric: false },
    { bits: 8, blockSize: 32 },
    { bits: 2, blockSize: 64, symmetric: false },
  ]) {
    const m = parseOnnx(encodeOnnx(model()));
    const rep = await quantizeGatherBlocks(m, opts);
    assert.match(rep[0].action, new RegExp(`^GatherBlockQuantized int${opts.bits} g${opts.blockSize}`));
    assert.ok(!m.proto.graph!.initializer!.some((t) => t.name === 'E'), 'float table removed');
    const init = new Map(m.proto.graph!.initializer!.map((t) => [t.name, t]));
    const b = await tensorBytes(m, init.get(`E_Q${opts.bits}`)!);
    const scales = new Float32Array((await tensorBytes(m, init.get('E_scales')!)).slice().buffer);
    const zp = init.get('E_zero_points');
    const ref = decodeNBits({ b, scales, zeroPoints: zp && (await tensorBytes(m, zp)) }, V, D, opts.bits, opts.blockSize);
    const s = await ortSession(encodeOnnx(m.proto));
    const rows = (await s.run(feeds)).get('rows')!.data;
    await s.release();
    ids.forEach((id, r) => {
      const v = id < 0 ? V + id : id;
      for (let d = 0; d < D; d++) assert.equal(rows[r * D + d], ref[v * D + d], `${JSON.stringify(opts)}: row ${id} col ${d}`);
    });
    // and the rows are near the float table (the grid is a real quantizer, not a copy)
    let e = 0;
    let sig = 0;
    for (let i = 0; i < V * D; i++) {
      e += (ref[i] - table[i]) ** 2;
      sig += table[i] ** 2;
    }
    const db = 10 * Math.log10(sig / e);
    assert.ok(db > 6 * opts.bits - 12 && db < 6 * opts.bits + 12, `${opts.bits} bits: table SQNR ${db.toFixed(1)} dB`);
    assert.equal(rep[0].sqnrDb!.toFixed(6), db.toFixed(6));
  }
  // float16 after GatherBlockQuantized: float16 scales, the same rows to float16 precision
  const m = parseOnnx(encodeOnnx(model()));
  await quantizeGatherBlocks(m, { bits: 4, blockSize: 32 });
  const s0 = await ortSession(encodeOnnx(m.proto));
  const r0 = (await s0.run(feeds)).get('rows')!.data;
  await s0.release();
  await convertFloat16(m);
  assert.equal(m.proto.graph!.initializer!.find((t) => t.name === 'E_scales')!.data_type, 10);
  const s1 = await ortSession(encodeOnnx(m.proto));
  const r1 = (await s1.run(feeds)).get('rows')!.data;
  await s1.release();
  for (let i = 0; i < r0.length; i++) assert.ok(Math.abs(r0[i] - r1[i]) <= 1e-3 * Math.abs(r0[i]) + 1e-6, `fp16 row value ${i}: ${r1[i]} vs ${r0[i]}`);
});

test('lowbit quantize --type int4 --gather: MatMul -> MatMulNBits and Gather -> GatherBlockQuantized; a width off the group stays float', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-gbq-'));
  try {
    fs.writeFileSync(path.join(tmp, 'm.onnx'), encodeOnnx(model()));
    const r = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'q.onnx'), '--type', 'int4', '--gather', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.deepEqual(rep.nodes.map((n: { action: string }) => n.action.split(' ')[0]), ['MatMulNBits', 'GatherBlockQuantized']);
    assert.equal(rep.onnxruntimeLoads, true);
    const r48 = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'q48.onnx'), '--type', 'int4', '--gather', '--group', '128', '--json'], { encoding: 'utf8' });
    assert.equal(r48.status, 0, r48.stderr);
    assert.match(JSON.parse(r48.stdout).warnings.join('\n'), /embedding width 64 is not a multiple of --group 128/);
    const bad = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'never.onnx'), '--qdq', 'int8', '--dynamic', '--gather'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--gather needs --type/);
    assert.ok(!fs.existsSync(path.join(tmp, 'never.onnx')));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
