/**
 * Baseline JPEG decoding (src/io/jpeg.ts): against Chromium's own decoding (libjpeg-turbo) of JPEGs it
 * encoded (4:2:0 at quality 50 and 92, 4:4:4 at 100; test/golden/jpeg, made by scripts/jpeg-golden.ts);
 * grayscale, restart intervals and 16-bit quantization tables through a small encoder written here; bad
 * files refused by name; `lowbit quantize --calib` with a folder of JPEGs.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { inflateSync } from 'node:zlib';
import { decodeJpeg, isJpeg } from '../src/io/jpeg.js';
import { decodePng } from '../src/io/png.js';
import { buildModel, node, valueInfo } from '../src/io/onnx/build.js';
import { encodeOnnx } from '../src/io/onnx/model.js';
import { root } from '../scripts/onnx-testbed.js';

const golden = path.join(root, 'test', 'golden', 'jpeg');
const bin = path.join(root, 'bin', 'lowbit.js');

test('JPEG: Chromium-encoded files decode as Chromium decodes them (4:2:0 q50/q92, 4:4:4 q100: every sample within 2, mean within 0.35)', () => {
  for (const f of ['chromium-q50', 'chromium-q92', 'chromium-q100']) {
    const jpg = new Uint8Array(fs.readFileSync(path.join(golden, `${f}.jpg`)));
    assert.ok(isJpeg(jpg));
    const got = decodeJpeg(jpg, f);
    const ref = decodePng(new Uint8Array(fs.readFileSync(path.join(golden, `${f}.png`))), f, (d) => new Uint8Array(inflateSync(d)));
    assert.deepEqual([got.width, got.height], [ref.width, ref.height]);
    let max = 0;
    let sum = 0;
    for (let i = 0; i < got.data.length; i++) {
      const d = Math.abs(got.data[i] - ref.data[i]);
      max = Math.max(max, d);
      sum += d;
    }
    const mean = sum / got.data.length;
    assert.ok(max <= 2 && mean <= 0.35, `${f}: max ${max}, mean ${mean}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// a minimal baseline encoder (gray or 3 components 4:4:4 stored as given, restart intervals, fixed-length
// Huffman codes, 8- or 16-bit quantization tables) to reach the paths Chromium's encoder does not write

const ZZ = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63];
/** AC symbols: EOB, ZRL and every run 0..15 x size 1..10 (162), each an 8-bit code (its index) */
const AC_SYMS = [0x00, 0xf0, ...Array.from({ length: 160 }, (_, i) => (Math.floor(i / 10) << 4) | ((i % 10) + 1))];

function encodeJpeg(planes: Uint8Array[], w: number, h: number, q: number, opts: { restart?: number; q16?: boolean; adobeRgb?: boolean }): Uint8Array {
  const out: number[] = [];
  const seg = (marker: number, body: number[]) => out.push(0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 255, ...body);
  out.push(0xff, 0xd8);
  if (opts.adobeRgb) seg(0xee, [...'Adobe'].map((c) => c.charCodeAt(0)).concat([0, 100, 0, 0, 0, 0, 0]));
  seg(0xdb, opts.q16 ? [0x10, ...Array.from({ length: 64 }, () => [q >> 8, q & 255]).flat()] : [0x00, ...Array(64).fill(q)]);
  const nc = planes.length;
  seg(0xc0, [8, h >> 8, h & 255, w >> 8, w & 255, nc, ...planes.flatMap((_, i) => [i + 1, 0x11, 0])]);
  const dcCounts = Array(16).fill(0);
  dcCounts[3] = 12; // 12 DC categories, 4-bit codes
  const acCounts = Array(16).fill(0);
  acCounts[7] = AC_SYMS.length;
  seg(0xc4, [0x00, ...dcCounts, ...Array.from({ length: 12 }, (_, i) => i)]);
  seg(0xc4, [0x10, ...acCounts, ...AC_SYMS]);
  if (opts.restart) seg(0xdd, [opts.restart >> 8, opts.restart & 255]);
  seg(0xda, [nc, ...planes.flatMap((_, i) => [i + 1, 0x00]), 0, 63, 0]);
  let acc = 0;
  let n = 0;
  const put = (v: number, len: number) => {
    for (let i = len - 1; i >= 0; i--) {
      acc = (acc << 1) | ((v >> i) & 1);
      if (++n === 8) {
        out.push(acc);
        if (acc === 0xff) out.push(0);
        acc = 0;
        n = 0;
      }
    }
  };
  const flush = () => {
    while (n) put(1, 1);
  };
  const cat = (v: number) => (v === 0 ? 0 : Math.floor(Math.log2(Math.abs(v))) + 1);
  const bitsOf = (v: number, s: number) => (v >= 0 ? v : v + (1 << s) - 1);
  const bx = Math.ceil(w / 8);
  const by = Math.ceil(h / 8);
  const pred = planes.map(() => 0);
  let rst = 0;
  for (let m = 0; m < bx * by; m++) {
    if (opts.restart && m > 0 && m % opts.restart === 0) {
      flush();
      out.push(0xff, 0xd0 + (rst++ % 8));
      pred.fill(0);
    }
    const x0 = (m % bx) * 8;
    const y0 = Math.floor(m / bx) * 8;
    planes.forEach((pl, ci) => {
      // forward DCT of the block (edges replicated)
      const px = (x: number, y: number) => pl[Math.min(h - 1, y0 + y) * w + Math.min(w - 1, x0 + x)] - 128;
      const F = new Array(64).fill(0);
      for (let v = 0; v < 8; v++)
        for (let u = 0; u < 8; u++) {
          let s = 0;
          for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) s += px(x, y) * Math.cos(((2 * x + 1) * u * Math.PI) / 16) * Math.cos(((2 * y + 1) * v * Math.PI) / 16);
          F[v * 8 + u] = Math.round((s * (u ? 1 : Math.SQRT1_2) * (v ? 1 : Math.SQRT1_2)) / 4 / q);
        }
      const zz = ZZ.map((k) => F[k]);
      const d = zz[0] - pred[ci];
      pred[ci] = zz[0];
      put(cat(d), 4);
      put(bitsOf(d, cat(d)), cat(d));
      let run = 0;
      for (let k = 1; k < 64; k++) {
        if (zz[k] === 0) {
          run++;
          continue;
        }
        while (run > 15) {
          put(AC_SYMS.indexOf(0xf0), 8);
          run -= 16;
        }
        const s = cat(zz[k]);
        put(AC_SYMS.indexOf((run << 4) | s), 8);
        put(bitsOf(zz[k], s), s);
        run = 0;
      }
      if (run) put(AC_SYMS.indexOf(0x00), 8);
    });
  }
  flush();
  out.push(0xff, 0xd9);
  return Uint8Array.from(out);
}

const plane = (w: number, h: number, f: (x: number, y: number) => number) => Uint8Array.from({ length: w * h }, (_, i) => Math.max(0, Math.min(255, Math.round(f(i % w, Math.floor(i / w))))));

test('JPEG: grayscale, restart intervals (every 1 and 3 MCUs), 16-bit quantization tables, Adobe RGB; decoded within the quantization error', () => {
  const w = 29;
  const h = 19;
  const g = plane(w, h, (x, y) => 128 + 90 * Math.sin(x * 0.4) * Math.cos(y * 0.3));
  for (const [restart, q16] of [[0, false], [1, false], [3, true]] as const) {
    const img = decodeJpeg(encodeJpeg([g], w, h, 1, { restart, q16 }), 'gray.jpg');
    let max = 0;
    for (let i = 0; i < w * h; i++) {
      max = Math.max(max, Math.abs(img.data[i * 4] - g[i]));
      assert.equal(img.data[i * 4], img.data[i * 4 + 2]);
      assert.equal(img.data[i * 4 + 3], 255);
    }
    assert.ok(max <= 2, `gray restart ${restart}: max ${max}`);
  }
  // coarser quantization: the error grows (the decoder reads the table, it does not assume 1)
  const coarse = decodeJpeg(encodeJpeg([g], w, h, 24, {}), 'coarse.jpg');
  let maxc = 0;
  for (let i = 0; i < w * h; i++) maxc = Math.max(maxc, Math.abs(coarse.data[i * 4] - g[i]));
  assert.ok(maxc > 3 && maxc < 40, `q24: max ${maxc}`);
  // three components stored as RGB (Adobe transform 0)
  const rgb = [plane(w, h, (x) => x * 8), plane(w, h, (_, y) => y * 12), plane(w, h, (x, y) => 255 - x * 4 - y * 4)];
  const c = decodeJpeg(encodeJpeg(rgb, w, h, 1, { restart: 2, adobeRgb: true }), 'rgb.jpg');
  let maxr = 0;
  for (let i = 0; i < w * h; i++) for (let k = 0; k < 3; k++) maxr = Math.max(maxr, Math.abs(c.data[i * 4 + k] - rgb[k][i]));
  assert.ok(maxr <= 2, `Adobe RGB: max ${maxr}`);
});

test('JPEG: bad files are refused by name (not JPEG, truncated, progressive, CMYK, undefined tables)', () => {
  const jpg = new Uint8Array(fs.readFileSync(path.join(golden, 'chromium-q92.jpg')));
  const refuse = (b: Uint8Array, re: RegExp) => assert.throws(() => decodeJpeg(b, 'x.jpg'), re);
  refuse(new Uint8Array(20), /not a JPEG/);
  refuse(jpg.subarray(0, 300), /truncated JPEG/);
  refuse(jpg.subarray(0, jpg.length / 2), /truncated JPEG/);
  const sof = jpg.findIndex((v, i) => v === 0xff && jpg[i + 1] === 0xc0);
  const prog = jpg.slice();
  prog[sof + 1] = 0xc2;
  refuse(prog, /progressive JPEG is not decoded/);
  const cmyk = encodeJpeg([plane(8, 8, () => 1), plane(8, 8, () => 1), plane(8, 8, () => 1), plane(8, 8, () => 1)], 8, 8, 1, {});
  refuse(cmyk, /4 colour components \(CMYK\)/);
  const noDht = jpg.slice();
  const dht = noDht.findIndex((v, i) => v === 0xff && noDht[i + 1] === 0xc4);
  noDht[dht + 1] = 0xe5; // the first Huffman table becomes an APP5 segment
  refuse(noDht, /Huffman table that was not defined/);
  // every prefix fails with a named error, never a crash or a hang
  for (let n = 0; n < jpg.length; n += 97) assert.throws(() => decodeJpeg(jpg.subarray(0, n), 'x.jpg'), /x\.jpg: /);
});

test('lowbit quantize --calib a folder of JPEGs (and PNG mixed): the input range is that of the normalized decoded pixels', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-jpeg-'));
  try {
    const model = path.join(tmp, 'm.onnx');
    fs.writeFileSync(model, encodeOnnx(buildModel({ nodes: [node('Conv', ['x', 'W'], ['y'], { kernel_shape: [1, 1] })], inputs: [valueInfo('x', 1, [1, 3, 16, 16])], outputs: [valueInfo('y', 1, [1, 2, 16, 16])], initializers: [{ name: 'W', data_type: 1, dims: [2, 3, 1, 1], float_data: [1, 0.5, -0.3, 0.2, 0.1, 0.9] }] })));
    const calib = path.join(tmp, 'calib');
    fs.mkdirSync(calib);
    fs.copyFileSync(path.join(golden, 'chromium-q92.jpg'), path.join(calib, 'a.jpg'));
    fs.copyFileSync(path.join(golden, 'chromium-q50.jpg'), path.join(calib, 'b.jpeg'));
    const out = path.join(tmp, 'q.onnx');
    const r = spawnSync(process.execPath, [bin, 'quantize', model, out, '--qdq', 'int8', '--calib', calib, '--calib-mean', '0,0,0', '--calib-std', '1,1,1', '--no-bias-correction', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(r.stdout);
    assert.equal(rep.onnxruntimeLoads, true);
    assert.match(rep.nodes[0].action, /uint8 static/);
    // a broken JPEG in the folder: one line naming the file
    fs.writeFileSync(path.join(calib, 'c.jpg'), fs.readFileSync(path.join(golden, 'chromium-q92.jpg')).subarray(0, 200));
    const bad = spawnSync(process.execPath, [bin, 'quantize', model, path.join(tmp, 'bad.onnx'), '--qdq', 'int8', '--calib', calib], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /c\.jpg: truncated JPEG/);
    assert.ok(!fs.existsSync(path.join(tmp, 'bad.onnx')));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
