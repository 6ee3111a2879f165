/**
 * Subgraphs: a generated model with MatMul weights inside an If branch, a Loop body (weight read from
 * the outer graph) and a Scan body. Activations are captured inside Loop/Scan bodies (stacked over the
 * iterations), static int8 QDQ reaches every MatMul, and --float16 converts the bodies; each result runs
 * in onnxruntime-node against the float model.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { buildModel, floatTensor, int64Tensor, node, valueInfo } from '../src/io/onnx/build.js';
import { allGraphs, encodeOnnx, parseOnnx } from '../src/io/onnx/model.js';
import { DataType, type GraphProto } from '../src/io/onnx/schema.js';
import { captureActivations, ortSession, type Feeds } from '../src/cli/onnx-runtime.js';
import { writeNpz, type NpyArray } from '../src/io/npy.js';
import { root } from '../scripts/onnx-testbed.js';

const bin = path.join(root, 'bin', 'lowbit.js');
const W = (seed: number) => Float32Array.from({ length: 64 }, (_, i) => Math.sin(i * 0.7 + seed) * 0.4);

function subgraphModel(): Uint8Array {
  const branch = (name: string, seed: number): GraphProto => ({
    name,
    node: [node('MatMul', ['x', `W_${name}`], [`y_${name}`])],
    initializer: [floatTensor(`W_${name}`, [8, 8], W(seed))],
    output: [valueInfo(`y_${name}`, 1)],
  });
  const loopBody: GraphProto = {
    name: 'loop_body',
    input: [valueInfo('i', DataType.INT64, []), valueInfo('cin', DataType.BOOL, []), valueInfo('h', 1)],
    node: [node('MatMul', ['h', 'W_loop'], ['hw']), node('Tanh', ['hw'], ['h2']), node('Identity', ['cin'], ['cout'])],
    output: [valueInfo('cout', DataType.BOOL, []), valueInfo('h2', 1)],
  };
  const scanBody: GraphProto = {
    name: 'scan_body',
    input: [valueInfo('s', 1, [8]), valueInfo('r', 1, [8])],
    node: [node('MatMul', ['r', 'W_scan'], ['rw']), node('Relu', ['rw'], ['rr']), node('Add', ['s', 'rr'], ['s2']), node('Identity', ['s2'], ['o'])],
    initializer: [floatTensor('W_scan', [8, 8], W(3))],
    output: [valueInfo('s2', 1, [8]), valueInfo('o', 1, [8])],
  };
  return encodeOnnx(
    buildModel({
      nodes: [
        node('If', ['c'], ['y1'], { then_branch: { graph: branch('then', 1) }, else_branch: { graph: branch('else', 2) } }),
        node('Loop', ['trips', 'go', 'y1'], ['hN'], { body: { graph: loopBody } }),
        node('Reshape', ['hN', 'rows'], ['seq']),
        node('Scan', ['s0', 'seq'], ['sN', 'outs'], { body: { graph: scanBody }, num_scan_inputs: 1 }),
      ],
      inputs: [valueInfo('x', 1, [1, 4, 8]), valueInfo('c', DataType.BOOL, [])],
      outputs: [valueInfo('outs', 1, [4, 8])],
      initializers: [floatTensor('W_loop', [8, 8], W(5)), int64Tensor('trips', [], [3]), { name: 'go', data_type: DataType.BOOL, dims: [], raw_data: Uint8Array.of(1) }, int64Tensor('rows', [2], [4, 8]), floatTensor('s0', [8], new Float32Array(8))],
      opset: 17,
    }),
  );
}

const f32 = (shape: number[], data: Float32Array): NpyArray => ({ type: 'float32', shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
const feeds = (seed: number, c: boolean): Feeds => ({ x: f32([1, 4, 8], Float32Array.from({ length: 32 }, (_, i) => Math.cos(i * 0.31 + seed) * 2)), c: { type: 'bool', shape: [], data: Uint8Array.of(c ? 1 : 0) } });

async function out(bytes: Uint8Array, f: Feeds): Promise<Float32Array> {
  const s = await ortSession(bytes);
  const y = (await s.run(f)).get('outs')!.data;
  await s.release();
  return y;
}

const sqnr = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  let e = 0;
  a.forEach((v, i) => {
    s += v * v;
    e += (v - b[i]) ** 2;
  });
  return 10 * Math.log10(s / e);
};

test('activations inside Loop and Scan bodies are captured, stacked over the iterations (body inputs and node outputs)', async () => {
  const m = parseOnnx(subgraphModel());
  const got = new Map<string, { data: Float32Array; dims: number[] }>();
  await captureActivations(m.proto, ['y1', 'h', 'hw', 'hN', 'r', 'rw'], [feeds(0, true)], (n, t) => got.set(n, { data: Float32Array.from(t.data), dims: t.dims }));
  // Loop: 3 iterations of h [1, 4, 8] -> [3, 4, 8]; the first is the If's output, the next ones tanh(h W)
  assert.deepEqual(got.get('h')!.dims, [3, 4, 8]);
  assert.deepEqual(got.get('h')!.data.subarray(0, 32), got.get('y1')!.data);
  const hw = got.get('hw')!.data;
  assert.deepEqual(got.get('h')!.data.subarray(32, 64), Float32Array.from(hw.subarray(0, 32), Math.tanh).map((v, i) => (Math.abs(v - got.get('h')!.data[32 + i]) < 1e-6 ? got.get('h')!.data[32 + i] : v)));
  // Scan: 4 slices r [8] -> [4, 8] equal to the Loop's final state reshaped
  assert.deepEqual(got.get('r')!.dims, [4, 8]);
  assert.deepEqual(got.get('r')!.data, got.get('hN')!.data);
  assert.deepEqual(got.get('rw')!.dims, [4, 8]);
});

test('static int8 QDQ reaches the MatMuls in If, Loop and Scan bodies; --float16 converts the bodies; both run in onnxruntime-node', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-subgraph-'));
  try {
    const file = path.join(tmp, 'sub.onnx');
    fs.writeFileSync(file, subgraphModel());
    const calib = path.join(tmp, 'calib');
    fs.mkdirSync(calib);
    for (let k = 0; k < 4; k++) fs.writeFileSync(path.join(calib, `c${k}.npz`), writeNpz(feeds(k + 10, k % 2 === 0) as Record<string, NpyArray>));
    const ref = [await out(fs.readFileSync(file), feeds(1, true)), await out(fs.readFileSync(file), feeds(2, false))];
    // QDQ, static activations
    const q = path.join(tmp, 'q.onnx');
    const r = spawnSync(process.execPath, [bin, 'quantize', file, q, '--qdq', 'int8', '--qdq-ops', 'MatMul', '--calib', calib, '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.deepEqual(rep.warnings, []);
    assert.equal(rep.nodes.filter((n: { action: string }) => n.action === 'QDQ int8/ch + uint8 static').length, 4, JSON.stringify(rep.nodes));
    const qm = parseOnnx(new Uint8Array(fs.readFileSync(q)));
    const bodyQ = allGraphs(qm.proto).filter((g) => g.path && (g.graph.node ?? []).some((n) => n.op_type === 'QuantizeLinear'));
    assert.equal(bodyQ.length, 4, 'a QuantizeLinear in each branch and body');
    for (const [k, f] of [feeds(1, true), feeds(2, false)].entries()) {
      const y = await out(fs.readFileSync(q), f);
      const db = sqnr(ref[k], y);
      assert.ok(db > 25 && db < 80, `QDQ output SQNR ${db} dB`);
    }
    // float16
    const h = path.join(tmp, 'h.onnx');
    const r2 = spawnSync(process.execPath, [bin, 'quantize', file, h, '--float16', '--json'], { encoding: 'utf8' });
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal(JSON.parse(r2.stdout).float16.subgraphs, 4);
    const hm = parseOnnx(new Uint8Array(fs.readFileSync(h)));
    // W_loop lives in the outer graph and is read by the Loop body: stored float16, a Cast to float32 feeds the body
    for (const w of ['W_then', 'W_else', 'W_scan', 'W_loop']) {
      const t = allGraphs(hm.proto).flatMap((g) => g.graph.initializer ?? []).find((x) => x.name === w);
      assert.equal(t?.data_type, DataType.FLOAT16, `${w} is float16`);
    }
    for (const [k, f] of [feeds(1, true), feeds(2, false)].entries()) {
      const db = sqnr(ref[k], await out(fs.readFileSync(h), f));
      assert.ok(db > 45 && db < 120, `float16 output SQNR ${db} dB`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
