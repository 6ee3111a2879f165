/**
 * ViT activation quantizers (vit-act.ts): post-softmax uniform / log2 / twin, post-GELU (swish and Erf
 * GELU) uniform / twin, LayerNorm-input tensor / PTF / per-channel, at 8 and 4 bits. Each is written into a
 * small generated model, run in onnxruntime-node, and its output compared with the reference quantizer
 * applied to the float model's activation; the site finder on the PP-OCRv4 recognizer's SVTR neck.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { buildModel, floatTensor, node, valueInfo } from '../src/io/onnx/build.js';
import { encodeOnnx, parseOnnx } from '../src/io/onnx/model.js';
import { actSites, ActCollector, fakeQuant, fakeQuantLog2, fakeQuantTwin, insertActQuantizer, siteParams, type ActSite } from '../src/io/onnx/vit-act.js';
import { indexGraph } from '../src/io/onnx/graph-edit.js';
import { captureActivations, ortSession } from '../src/cli/onnx-runtime.js';
import { feedOf, ocr, root } from '../scripts/onnx-testbed.js';
import { writeNpy } from '../src/io/npy.js';
import { assertRefused } from './cli-refusal.js';
import { spawnSync } from 'node:child_process';

const bin = path.join(root, 'bin', 'lowbit.js');
const T = 12;
const C = 16;
const eye = Float32Array.from({ length: C * C }, (_, i) => (i % (C + 1) === 0 ? 1 : 0));

/** X [2, T, C] -> (site) -> MatMul by the identity: the output is the site's (quantized) activation */
function siteModel(kind: 'softmax' | 'swish' | 'gelu' | 'layernorm') {
  const nodes =
    kind === 'softmax'
      ? [node('Mul', ['x', 'temp'], ['xt']), node('Softmax', ['xt'], ['a'], { axis: -1 })]
      : kind === 'swish'
        ? [node('Mul', ['x', 'beta'], ['xb']), node('Sigmoid', ['xb'], ['sg']), node('Mul', ['x', 'sg'], ['a'])]
        : kind === 'gelu'
          ? [node('Div', ['x', 'sqrt2'], ['xd']), node('Erf', ['xd'], ['e']), node('Add', ['e', 'one'], ['e1']), node('Mul', ['x', 'e1'], ['xe']), node('Mul', ['xe', 'half'], ['a'])]
          : [node('ReduceMean', ['x'], ['mu'], { axes: [-1] }), node('Sub', ['x', 'mu'], ['a'])];
  return buildModel({
    nodes: [...nodes, node('MatMul', ['a', 'I'], ['y'])],
    inputs: [valueInfo('x', 1, [2, T, C])],
    outputs: [valueInfo('y', 1, [2, T, C])],
    initializers: [floatTensor('I', [C, C], eye), floatTensor('beta', [], [1.0]), floatTensor('sqrt2', [], [Math.SQRT2]), floatTensor('one', [], [1]), floatTensor('half', [], [0.5]), floatTensor('temp', [], [0.25])],
    opset: 13,
  });
}

/** inputs with a few outlier channels (LayerNorm inputs) and a wide spread (softmax logits) */
const FEEDS = feedOf('x', [2, T, C], (i) => 3 * Math.sin(i * 0.71) + 2 * Math.cos(i * 0.13) + (i % C === 3 ? 25 : i % C === 11 ? -12 : 0));

/** softmax inputs without the outlier channels (so the probabilities spread over the whole range) */
const FEEDS_SOFTMAX = feedOf('x', [2, T, C], (i) => 3 * Math.sin(i * 0.71) + 2 * Math.cos(i * 0.13));

async function run(bytes: Uint8Array, feeds = FEEDS): Promise<Float32Array> {
  const s = await ortSession(bytes);
  const y = [...(await s.run(feeds)).values()][0].data;
  await s.release();
  return y;
}

test('ViT activation quantizers in onnxruntime equal the reference quantizers (softmax uniform/log2/twin, swish and Erf GELU uniform/twin, LayerNorm tensor/PTF/channel; 8 and 4 bits)', async () => {
  const cases: ['softmax' | 'swish' | 'gelu' | 'layernorm', string][] = [
    ['softmax', 'uniform'],
    ['softmax', 'log2'],
    ['softmax', 'logsqrt2'],
    ['softmax', 'twin'],
    ['swish', 'uniform'],
    ['swish', 'twin'],
    ['gelu', 'twin'],
    ['layernorm', 'tensor'],
    ['layernorm', 'ptf'],
    ['layernorm', 'channel'],
  ];
  for (const bits of [8, 4])
    for (const [kind, q] of cases) {
      const proto = siteModel(kind);
      const bytes = encodeOnnx(proto);
      const m = parseOnnx(bytes);
      const sites = actSites(m.proto, new Set([kind === 'softmax' ? 'softmax' : kind === 'layernorm' ? 'layernorm' : 'gelu']));
      assert.equal(sites.length, 1, `${kind}: one site`);
      const site: ActSite = sites[0];
      // the float activation, and the site's parameters from it
      const feeds = kind === 'softmax' ? FEEDS_SOFTMAX : FEEDS;
      const c = new ActCollector();
      await captureActivations(m.proto, [site.name], [feeds], (_, t) => c.observe(site, t.data, t.dims));
      const a = kind === 'layernorm' ? new Float32Array(feeds.x.data.buffer.slice(0)) : await run(bytes, feeds);
      const p = siteParams(c, site, q as never, bits);
      insertActQuantizer(m.proto, indexGraph(m.proto), site, p, bits);
      const y = await run(encodeOnnx(m.proto), feeds);
      const f = fakeQuant(p, bits);
      const want = Float64Array.from(a, (v, i) => f(v, i % C));
      if (kind === 'layernorm') {
        // the output is q(x) - mean(q(x)) over the last axis
        for (let r = 0; r < want.length / C; r++) {
          let mu = 0;
          for (let j = 0; j < C; j++) mu += want[r * C + j] / C;
          for (let j = 0; j < C; j++) want[r * C + j] -= mu;
        }
      }
      let bad = 0;
      let maxErr = 0;
      const mag = want.reduce((x, v) => Math.max(x, Math.abs(v)), 0);
      want.forEach((v, i) => {
        const e = Math.abs(v - y[i]);
        maxErr = Math.max(maxErr, e);
        if (e > (kind === 'layernorm' ? 1e-6 * mag : 1e-6 * Math.abs(v) + 1e-12)) bad++;
      });
      // log2: a value within float32 rounding of a code boundary (2^-(k+1/2)) may land one code away
      assert.ok(bad <= (q.startsWith('log') ? 1 : 0), `${kind} ${q} ${bits}-bit: ${bad} values differ (max ${maxErr} of ${mag})`);
      // and the quantizer did something: fewer distinct values than the input
      if (kind !== 'layernorm') assert.ok(new Set(y).size <= 2 ** bits + 1, `${kind} ${q} ${bits}: ${new Set(y).size} levels`);
    }
});

test('reference quantizers: log2 codes are powers of two of the scale, 0 beyond 2^b codes; twin uses the fine step below its threshold', () => {
  assert.equal(fakeQuantLog2(0.25, 1, 4), 0.25);
  assert.equal(fakeQuantLog2(0.3, 1, 4), 0.25); // -log2 0.3 = 1.74 -> 2
  assert.equal(fakeQuantLog2(0.4, 1, 4), 0.5); // 1.32 -> 1
  assert.equal(fakeQuantLog2(2 ** -15, 1, 4), 2 ** -15);
  assert.equal(fakeQuantLog2(2 ** -16, 1, 4), 0);
  assert.equal(fakeQuantLog2(0, 1, 4), 0);
  assert.equal(fakeQuantLog2(3, 1, 4), 1); // above the scale: the top code
  assert.equal(fakeQuantLog2(0.7, 1, 4, 2), 2 ** -0.5); // base sqrt 2: -2 log2 0.7 = 1.03 -> 1
  assert.equal(fakeQuantLog2(0.3, 1, 4, 2), 2 ** -1.5); // 3.47 -> 3
  // softmax twin, 4 bits: d1 = 1/56, d2 = 1/7, threshold 7.5 d1
  const d1 = 1 / 56;
  const d2 = 1 / 7;
  assert.equal(fakeQuantTwin(0.03, d1, d2, 7.5 * d1, 4), 2 * d1);
  assert.equal(fakeQuantTwin(0.45, d1, d2, 7.5 * d1, 4), 3 * d2);
  // GELU twin: negative values use d1, codes down to -2^(b-1)
  assert.equal(fakeQuantTwin(-0.1, 0.02, 0.5, 0, 4), -0.1);
  assert.equal(fakeQuantTwin(-0.5, 0.02, 0.5, 0, 4), -8 * 0.02);
  assert.equal(fakeQuantTwin(10, 0.02, 0.5, 0, 4), 7 * 0.5);
});

test('twin and PTF lose less than uniform where the ViT papers say they should (SQNR on the calibration data)', async () => {
  const sq = (xs: ArrayLike<number>, f: (x: number, c: number) => number, Cn: number) => {
    let s = 0;
    let e = 0;
    for (let i = 0; i < xs.length; i++) {
      s += xs[i] ** 2;
      e += (xs[i] - f(xs[i], i % Cn)) ** 2;
    }
    return 10 * Math.log10(s / e);
  };
  // softmax probabilities: many near 0, a few near 1 (4 bits)
  const probs = Float32Array.from({ length: 4096 }, (_, i) => (i % 64 === 0 ? 0.9 : Math.exp(-8 - 4 * Math.abs(Math.sin(i)))));
  const sm: ActSite = { kind: 'softmax', name: 'p', graph: {}, graphPath: '', consumers: [] };
  const c = new ActCollector();
  c.observe(sm, probs, [probs.length]);
  const small = probs.filter((v) => v < 0.1);
  const uni = fakeQuant(siteParams(c, sm, 'uniform', 4), 4);
  const twin = fakeQuant(siteParams(c, sm, 'twin', 4), 4);
  const log2 = fakeQuant(siteParams(c, sm, 'log2', 4), 4);
  // the small probabilities (most of attention) vanish with uniform, are kept by log2 and twin; logsqrt2
  // halves log2's relative error on the large ones
  const big = probs.filter((v) => v > 0.1);
  const ls2 = fakeQuant(siteParams(c, sm, 'logsqrt2', 4), 4);
  assert.ok(sq(big, (x) => ls2(x), 1) >= sq(big, (x) => log2(x), 1));
  assert.ok(sq(small, (x) => log2(x), 1) > sq(small, (x) => uni(x), 1) + 10);
  assert.ok(sq(small, (x) => twin(x), 1) > sq(small, (x) => uni(x), 1) + 10);
  // LayerNorm input with an outlier channel: PTF and per-channel beat one range
  const rows = 256;
  const ln: ActSite = { kind: 'layernorm', name: 'h', graph: {}, graphPath: '', consumers: [] };
  const x = Float32Array.from({ length: rows * C }, (_, i) => Math.sin(i * 0.37) * (i % C === 5 ? 40 : 1));
  const cl = new ActCollector();
  cl.observe(ln, x, [rows, C]);
  const t = sq(x, fakeQuant(siteParams(cl, ln, 'tensor', 8), 8), C);
  const ptf = sq(x, fakeQuant(siteParams(cl, ln, 'ptf', 8), 8), C);
  const ch = sq(x, fakeQuant(siteParams(cl, ln, 'channel', 8), 8), C);
  assert.ok(ptf > t + 3 && ch > t + 3, `tensor ${t} ptf ${ptf} channel ${ch}`);
});

test('PP-OCRv4 rec: the SVTR neck has 2 post-softmax, 2 post-swish and 5 LayerNorm-input sites; lowbit quantize --act-quantizer twin --ln-quantizer ptf runs in onnxruntime', async () => {
  const file = ocr('ch_PP-OCRv4_rec_infer.onnx');
  const m = parseOnnx(new Uint8Array(fs.readFileSync(file)));
  const sites = actSites(m.proto, new Set(['softmax', 'gelu', 'layernorm']));
  const count = (k: string) => sites.filter((s) => s.kind === k).length;
  assert.deepEqual([count('softmax'), count('gelu'), count('layernorm')], [2, 2, 5]);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-vit-'));
  try {
    const calib = path.join(tmp, 'c.npy');
    fs.writeFileSync(calib, writeNpy(feedOf('x', [2, 3, 48, 160], (i) => Math.sin(i * 0.01) * 0.8).x));
    const out = path.join(tmp, 'o.onnx');
    const r = spawnSync(process.execPath, [bin, 'quantize', file, out, '--act-quantizer', 'twin', '--ln-quantizer', 'ptf', '--act-bits', '6', '--calib', calib, '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.equal(rep.onnxruntimeLoads, true);
    assert.equal(rep.nodes.filter((n: { action: string }) => /^twin 6-bit/.test(n.action)).length, 4);
    assert.equal(rep.nodes.filter((n: { action: string }) => /^ptf 6-bit/.test(n.action)).length, 5);
    // with --float16 as well (the quantizers' Div/Log/Pow/Where in float16, QDQ kept float32): loads in
    // onnxruntime-node, half the size, the output close to the float32 quantized model's
    const o16 = path.join(tmp, 'o16.onnx');
    const r16 = spawnSync(process.execPath, [bin, 'quantize', file, o16, '--act-quantizer', 'softmax:log2,gelu:twin', '--ln-quantizer', 'ptf', '--float16', '--calib', calib, '--json'], { encoding: 'utf8' });
    assert.equal(r16.status, 0, r16.stderr);
    const rep16 = JSON.parse(r16.stdout);
    assert.equal(rep16.onnxruntimeLoads, true);
    assert.ok(rep16.outputBytes < 0.51 * fs.statSync(file).size);
    const o32 = path.join(tmp, 'o32.onnx');
    assert.equal(spawnSync(process.execPath, [bin, 'quantize', file, o32, '--act-quantizer', 'softmax:log2,gelu:twin', '--ln-quantizer', 'ptf', '--calib', calib, '--json'], { encoding: 'utf8' }).status, 0);
    const probe = feedOf('x', [1, 3, 48, 160], (i) => Math.cos(i * 0.013) * 0.7);
    const [yf, y32, y16] = [await run(new Uint8Array(fs.readFileSync(file)), probe), await run(new Uint8Array(fs.readFileSync(o32)), probe), await run(new Uint8Array(fs.readFileSync(o16)), probe)];
    const db = (a: Float32Array, b: Float32Array) => 10 * Math.log10(a.reduce((s, v) => s + v * v, 0) / a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0));
    console.log(`# rec log2/twin/ptf 8-bit: output SQNR against float ${db(yf, y32).toFixed(1)} dB, with --float16 ${db(yf, y16).toFixed(1)} dB, float16 against float32 quantized ${db(y32, y16).toFixed(1)} dB`);
    assert.ok(db(yf, y16) > db(yf, y32) - 6, 'float16 adds little to the quantizers\' error');
    // after QDQ's opset upgrade (Softmax -> Flatten/Softmax/Reshape) the post-softmax sites are still found;
    // the post-swish MatMul inputs are left to --act-quantizer
    const r2 = spawnSync(process.execPath, [bin, 'quantize', file, path.join(tmp, 'o2.onnx'), '--qdq', 'int8', '--qdq-ops', 'MatMul', '--act-quantizer', 'softmax:log2,gelu:twin', '--calib', calib, '--json'], { encoding: 'utf8' });
    assert.equal(r2.status, 0, r2.stderr);
    const rep2 = JSON.parse(r2.stdout);
    assert.deepEqual([/^log2 8-bit/, /^twin 8-bit/, /activation by --act-quantizer/].map((re) => rep2.nodes.filter((n: { action: string }) => re.test(n.action)).length), [2, 2, 2]);
    // bad input: log2 on GELU, no calibration
    assertRefused(bin, ['quantize', file, path.join(tmp, 'q.onnx'), '--act-quantizer', 'gelu:log2', '--calib', calib], /post-GELU takes uniform or twin/, path.join(tmp, 'q.onnx'));
    assertRefused(bin, ['quantize', file, path.join(tmp, 'p.onnx'), '--act-quantizer', 'log2'], /need --calib/, path.join(tmp, 'p.onnx'));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
