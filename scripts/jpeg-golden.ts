/**
 * Writes test/golden/jpeg/: JPEG files encoded by Chromium's canvas (libjpeg-turbo) and the RGBA pixels
 * Chromium decodes them to (as PNG), the reference for src/io/jpeg.ts. Run: `npm run build && node
 * dist/scripts/jpeg-golden.js` (needs Chromium; the outputs are checked in, the test does not need it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deflateSync } from 'node:zlib';
import { CHROMIUM, root } from './onnx-testbed.js';
import { encodePng } from '../src/io/png.js';

const out = path.join(root, 'test', 'golden', 'jpeg');

async function main(): Promise<void> {
  if (!CHROMIUM) throw new Error('Chromium is not installed');
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage();
    const jobs = [
      { file: 'chromium-q92', w: 61, h: 45, q: 0.92 },
      { file: 'chromium-q50', w: 77, h: 38, q: 0.5 },
      { file: 'chromium-q100', w: 40, h: 33, q: 1.0 },
    ];
    const res = (await page.evaluate(async (jobs) => {
      const enc = (d: Uint8Array | Uint8ClampedArray) => {
        let s = '';
        for (let i = 0; i < d.length; i += 32768) s += String.fromCharCode(...d.subarray(i, i + 32768));
        return btoa(s);
      };
      const results = [];
      for (const j of jobs) {
        const c = document.createElement('canvas');
        c.width = j.w;
        c.height = j.h;
        const ctx = c.getContext('2d')!;
        const g = ctx.createLinearGradient(0, 0, j.w, j.h);
        g.addColorStop(0, '#e03020');
        g.addColorStop(0.5, '#20c040');
        g.addColorStop(1, '#2040e0');
        ctx.fillStyle = g;
        ctx.fillRect(0, 0, j.w, j.h);
        ctx.fillStyle = '#fff';
        ctx.beginPath();
        ctx.arc(j.w * 0.3, j.h * 0.5, j.h * 0.3, 0, 7);
        ctx.fill();
        ctx.fillStyle = '#111';
        ctx.font = '16px sans-serif';
        ctx.fillText('Jpg 42', 4, j.h - 6);
        const url = c.toDataURL('image/jpeg', j.q);
        const bytes = atob(url.split(',')[1]);
        const img = new Image();
        img.src = url;
        await img.decode();
        const d = document.createElement('canvas');
        d.width = j.w;
        d.height = j.h;
        const dctx = d.getContext('2d')!;
        dctx.drawImage(img, 0, 0);
        results.push({ jpeg: btoa(bytes), rgba: enc(dctx.getImageData(0, 0, j.w, j.h).data) });
      }
      return results;
    }, jobs)) as { jpeg: string; rgba: string }[];
    jobs.forEach((j, i) => {
      fs.writeFileSync(path.join(out, `${j.file}.jpg`), Buffer.from(res[i].jpeg, 'base64'));
      const rgba = new Uint8Array(Buffer.from(res[i].rgba, 'base64'));
      fs.writeFileSync(path.join(out, `${j.file}.png`), encodePng({ width: j.w, height: j.h, data: rgba }, (r) => new Uint8Array(deflateSync(r))));
      console.log(`${j.file}: ${res[i].jpeg.length} base64 chars`);
    });
  } finally {
    await browser.close();
  }
}
await main();
