/**
 * Calibration from media: PNG decoding (every filter, RGB/RGBA/palette/gray, CRC and truncation errors),
 * image preprocessing, WAV decoding and resampling, and `lowbit quantize --calib` with a folder of PNGs
 * (activation ranges from the normalized pixels) and with WAV audio on Silero VAD v5 (static QDQ inside
 * its If branches, state carried across frames), checked in onnxruntime-node.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { deflateSync, inflateSync } from 'node:zlib';
import { buildModel, floatTensor, node, valueInfo } from '../src/io/onnx/build.js';
import { encodeOnnx, parseOnnx, tensorFloat32 } from '../src/io/onnx/model.js';
import { activationParams } from '../src/io/onnx/qdq.js';
import { crc32, decodePng, encodePng, type RgbaImage } from '../src/io/png.js';
import { decodeWav, encodeWav16, imageTensor, resample } from '../src/io/calib-media.js';
import { ortSession } from '../src/cli/onnx-runtime.js';
import { readCalibration } from '../src/cli/onnx-calib.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'bin', 'lowbit.js');
const VAD = path.join(root, 'node_modules/@ricky0123/vad-web/dist/silero_vad_v5.onnx');
const inflate = (d: Uint8Array) => new Uint8Array(inflateSync(d));
const deflate = (d: Uint8Array) => new Uint8Array(deflateSync(d));

const image = (w: number, h: number, f: (x: number, y: number, c: number) => number): RgbaImage => {
  const data = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 4; c++) data[(y * w + x) * 4 + c] = f(x, y, c) & 255;
  return { width: w, height: h, data };
};

test('PNG: round trips through every filter (RGB, RGBA), a real file, and named errors', () => {
  const img = image(13, 9, (x, y, c) => (c === 3 ? 200 + x : x * 17 + y * 29 + c * 71));
  for (const rgb of [false, true]) {
    const png = encodePng(img, deflate, { rgb, filter: (y) => y % 5 });
    const back = decodePng(png, 'x.png', inflate);
    assert.equal(back.width, 13);
    assert.equal(back.height, 9);
    for (let i = 0; i < img.data.length; i++) assert.equal(back.data[i], i % 4 === 3 && rgb ? 255 : img.data[i], `byte ${i} (rgb ${rgb})`);
  }
  // a PNG written by another encoder: playwright's icon
  const icon = new Uint8Array(fs.readFileSync(path.join(root, 'node_modules/playwright-core/lib/server/chromium/appIcon.png')));
  const dv = new DataView(icon.buffer, icon.byteOffset);
  const decoded = decodePng(icon, 'appIcon.png', inflate);
  assert.equal(decoded.width, dv.getUint32(16));
  assert.equal(decoded.height, dv.getUint32(20));
  assert.ok(decoded.data.some((v, i) => i % 4 !== 3 && v > 0 && v < 255), 'real pixels');
  // errors
  const good = encodePng(img, deflate);
  const bad = (b: Uint8Array, re: RegExp) => assert.throws(() => decodePng(b, 'bad.png', inflate), re);
  bad(good.slice(0, 40), /truncated PNG/);
  const flipped = good.slice();
  flipped[40] ^= 1;
  bad(flipped, /fails its CRC check/);
  bad(new Uint8Array(20), /not a PNG file/);
  const interlaced = good.slice();
  interlaced[28] = 1; // IHDR interlace byte
  new DataView(interlaced.buffer).setUint32(29, crc32(interlaced.subarray(12, 29)));
  bad(interlaced, /interlaced \(Adam7\) PNG is not supported/);
});

test('image preprocessing: normalization, NCHW/NHWC, BGR, bilinear stretch and fit with padding', () => {
  const img = image(2, 2, (x, y, c) => (c === 3 ? 255 : [0, 250, 51, 102][y * 2 + x] + c));
  const mean = [0.5, 0.25, 0];
  const std = [0.5, 0.25, 1];
  const t = imageTensor(img, { height: 2, width: 2, mean, std, layout: 'nchw', resize: 'stretch' });
  for (let c = 0; c < 3; c++) for (let i = 0; i < 4; i++) assert.ok(Math.abs(t[c * 4 + i] - (([0, 250, 51, 102][i] + c) / 255 - mean[c]) / std[c]) < 1e-6);
  const h = imageTensor(img, { height: 2, width: 2, mean, std, layout: 'nhwc', bgr: true, resize: 'stretch' });
  assert.ok(Math.abs(h[0] - ((0 + 2) / 255 - mean[0]) / std[0]) < 1e-6, 'BGR: channel 0 is blue');
  // 2x2 -> 4x4 stretch: half-pixel centres, the corners keep the corner pixels
  const up = imageTensor(img, { height: 4, width: 4, mean: [0, 0, 0], std: [1, 1, 1], layout: 'nchw', resize: 'stretch' });
  assert.ok(Math.abs(up[0] - 0) < 1e-6 && Math.abs(up[3] - 250 / 255) < 1e-6 && Math.abs(up[1] - (0.25 * 250) / 255) < 1e-6, `${up.subarray(0, 4)}`);
  // fit: a 2x4 (w x h) image into 4x4 keeps the aspect (2 wide) and pads the right with 0
  const tall = image(1, 2, (_x, _y, c) => (c === 3 ? 255 : 255));
  const fit = imageTensor(tall, { height: 4, width: 4, mean: [0, 0, 0], std: [1, 1, 1], layout: 'nchw', resize: 'fit' });
  assert.deepEqual(Array.from(fit.subarray(0, 4)), [1, 1, 0, 0]);
});

test('WAV: 16-bit round trip, float32 stereo mixed down, resampling', () => {
  const x = Float32Array.from({ length: 1000 }, (_, i) => 0.8 * Math.sin(i * 0.05));
  const w = decodeWav(encodeWav16(x, 22050), 'a.wav');
  assert.equal(w.sampleRate, 22050);
  assert.ok(w.samples.every((v, i) => Math.abs(v - x[i]) <= 1 / 32768));
  // float32 stereo, built by hand: L = 0.5, R = -0.25 -> mono 0.125
  const n = 10;
  const b = new Uint8Array(44 + n * 8);
  const dv = new DataView(b.buffer);
  const put = (o: number, s: string) => [...s].forEach((ch, i) => (b[o + i] = ch.charCodeAt(0)));
  put(0, 'RIFF');
  dv.setUint32(4, 36 + n * 8, true);
  put(8, 'WAVEfmt ');
  dv.setUint32(16, 16, true);
  dv.setUint16(20, 3, true);
  dv.setUint16(22, 2, true);
  dv.setUint32(24, 8000, true);
  dv.setUint16(34, 32, true);
  put(36, 'data');
  dv.setUint32(40, n * 8, true);
  for (let i = 0; i < n; i++) {
    dv.setFloat32(44 + 8 * i, 0.5, true);
    dv.setFloat32(48 + 8 * i, -0.25, true);
  }
  const st = decodeWav(b, 'st.wav');
  assert.equal(st.channels, 2);
  assert.ok(st.samples.every((v) => v === 0.125));
  dv.setUint16(34, 24, true);
  assert.throws(() => decodeWav(b, 'bad.wav'), /format 3 with 24-bit samples is not supported/);
  assert.throws(() => decodeWav(new Uint8Array(12), 'z.wav'), /not a WAV file/);
  const r = resample(Float32Array.from([0, 1, 2, 3]), 2, 4);
  assert.deepEqual(Array.from(r), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]);
});

test('lowbit quantize --calib a folder of PNGs: the activation range is that of the normalized pixels', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-calib-png-'));
  try {
    const p = buildModel({
      nodes: [node('Conv', ['x', 'W'], ['y'], { kernel_shape: [1, 1] }, 'conv')],
      inputs: [valueInfo('x', 1, [1, 3, 8, 8])],
      outputs: [valueInfo('y', 1, [1, 2, 8, 8])],
      initializers: [floatTensor('W', [2, 3, 1, 1], [1, 0.5, -1, 0.25, 2, -0.5])],
      opset: 13,
    });
    fs.writeFileSync(path.join(tmp, 'm.onnx'), encodeOnnx(p));
    fs.mkdirSync(path.join(tmp, 'imgs'));
    // pixel values 10..240 over two images of different sizes (resized to 8 x 8)
    fs.writeFileSync(path.join(tmp, 'imgs', 'a.png'), encodePng(image(16, 16, (x, y, c) => (c === 3 ? 255 : 10 + ((x * 7 + y * 3 + c * 5) % 100))), deflate, { filter: (y) => y % 5 }));
    fs.writeFileSync(path.join(tmp, 'imgs', 'b.png'), encodePng(image(8, 8, (_x, _y, c) => (c === 3 ? 255 : 240)), deflate, { rgb: true }));
    const r = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'q.onnx'), '--qdq', 'int8', '--calib', path.join(tmp, 'imgs'), '--calib-mean', '0.5,0.5,0.5', '--calib-std', '0.5,0.5,0.5', '--no-bias-correction', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).nodes[0].action, /uint8 static/);
    const q = parseOnnx(new Uint8Array(fs.readFileSync(path.join(tmp, 'q.onnx'))));
    const scale = (await tensorFloat32(q, q.proto.graph!.initializer!.find((t) => t.name === 'x_scale')!))[0];
    // the largest value is 240 (image b), the smallest what image a's bilinear downsampling leaves
    const a = imageTensor(decodePng(fs.readFileSync(path.join(tmp, 'imgs', 'a.png')), 'a', inflate), { height: 8, width: 8, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], layout: 'nchw', resize: 'stretch' });
    const lo = Math.min(...a);
    const hi = (240 / 255 - 0.5) / 0.5;
    assert.equal(scale, activationParams(lo, hi).scale);
    const bad = spawnSync(process.execPath, [bin, 'quantize', path.join(tmp, 'm.onnx'), path.join(tmp, 'never.onnx'), '--qdq', 'int8', '--calib', path.join(tmp, 'imgs'), '--calib-std', '1,0,1'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--calib-std: a std of 0/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('lowbit quantize Silero VAD v5 --qdq int8 --calib speech.wav: static QDQ inside the If branch, state carried', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-calib-wav-'));
  try {
    // 1.5 s at 22.05 kHz: a voiced-like harmonic tone, gated, plus noise (resampled to 16 kHz by --calib-rate)
    let s = 12345;
    const noise = () => ((s = (s * 1103515245 + 12345) >>> 0) / 4294967296 - 0.5) * 0.02;
    const audio = Float32Array.from({ length: 33075 }, (_, i) => {
      const t = i / 22050;
      const gate = Math.sin(t * Math.PI * 2) > 0 ? 1 : 0;
      return gate * 0.3 * (Math.sin(2 * Math.PI * 150 * t) + 0.5 * Math.sin(2 * Math.PI * 450 * t) + 0.25 * Math.sin(2 * Math.PI * 1200 * t)) + noise();
    });
    fs.writeFileSync(path.join(tmp, 'speech.wav'), encodeWav16(audio, 22050));
    // the calibration feeds: 512-sample frames at 16 kHz, sr = 16000, the state of frame k+1 = stateN of frame k
    const args = { positionals: [], values: { 'calib-rate': 16000 }, given: new Set<string>(), repeated: [] };
    const feeds = await readCalibration(path.join(tmp, 'speech.wav'), parseOnnx(new Uint8Array(fs.readFileSync(VAD))).proto, args, Infinity, VAD);
    assert.equal(feeds.length, Math.floor(Math.floor((33075 * 16000) / 22050) / 512));
    assert.equal(new BigInt64Array(feeds[0].sr.data.slice().buffer)[0], 16000n);
    const st = (k: number) => new Float32Array(feeds[k].state.data.slice().buffer);
    assert.ok(st(0).every((v) => v === 0) && st(3).some((v) => v !== 0), 'state carried');
    const out = path.join(tmp, 'vad-q.onnx');
    const r = spawnSync(process.execPath, [bin, 'quantize', VAD, out, '--qdq', 'int8', '--calib', path.join(tmp, 'speech.wav'), '--calib-method', 'percentile', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    const statics = rep.nodes.filter((n: { node: string; action: string }) => /then_branch/.test(n.node) && /uint8 static/.test(n.action));
    assert.ok(statics.length >= 5, `static QDQ in the 16 kHz branch: ${JSON.stringify(rep.nodes.map((n: { action: string }) => n.action))}`);
    // run float and quantized over the same audio at 16 kHz, state carried: probabilities stay close
    const x16 = resample(audio, 22050, 16000);
    const scores = async (file: string) => {
      const sess = await ortSession(file);
      let state = new Float32Array(256);
      const sr = { type: 'int64' as const, shape: [], data: new Uint8Array(BigInt64Array.of(16000n).buffer) };
      const ps: number[] = [];
      for (let i = 0; i + 512 <= x16.length; i += 512) {
        const o = await sess.run({ input: { type: 'float32', shape: [1, 512], data: new Uint8Array(x16.slice(i, i + 512).buffer) }, state: { type: 'float32', shape: [2, 1, 128], data: new Uint8Array(state.buffer) }, sr });
        ps.push(o.get('output')!.data[0]);
        state = Float32Array.from(o.get('stateN')!.data);
      }
      await sess.release();
      return ps;
    };
    const a = await scores(VAD);
    const b = await scores(out);
    const err = a.reduce((acc, v, i) => acc + Math.abs(v - b[i]), 0) / a.length;
    assert.ok(err < 0.05, `mean |Δp| ${err}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
