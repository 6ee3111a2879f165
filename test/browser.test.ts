/**
 * Browser smoke test: bundle the library with esbuild, load it in Debian's Chromium through
 * playwright-core, cast there, and compare with Node bit for bit. Without Chromium the test is
 * skipped when CI is unset and fails when CI is set (.ci/run installs chromium).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as lowbit from '../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));

function inputs(): Float32Array {
  const x = new Float32Array(4096);
  let s = 42;
  for (let i = 0; i < x.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = ((s / 2 ** 32) * 2 - 1) * 2 ** ((i % 24) - 12);
  }
  x[0] = NaN;
  x[1] = -0;
  x[2] = Infinity;
  x[3] = 1e30;
  return x;
}

const CASES: [string, lowbit.CastOptions][] = [
  ['fp8_e4m3fn', {}],
  ['fp8_e5m2', { saturate: false }],
  ['fp4_e2m1fn', { scale: 0.25, nanToZero: true }],
  ['bf16', {}],
  ['fp16', { rounding: 'toward-zero', saturate: false }],
  ['int8', { scale: 0.01, nanToZero: true }],
  ['nf4', { rounding: 'stochastic', seed: 3, nanToZero: true }],
  ['e3m4', { rounding: 'stochastic', seed: 9 }],
];

test('browser: the bundled library casts bit-identically to Node in Chromium', { timeout: 120000 }, async (t) => {
  if (!chromium) {
    if (process.env.CI) assert.fail('Chromium is not installed (apt-get install chromium); CI requires the browser test');
    t.skip('Chromium not installed: browser smoke test skipped (set CI=1 to make this a failure)');
    return;
  }
  const esbuild = await import('esbuild');
  const bundle = await esbuild.build({
    entryPoints: [path.join(root, 'dist', 'src', 'index.js')],
    bundle: true,
    format: 'iife',
    globalName: 'lowbit',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
  });
  const code = bundle.outputFiles[0].text;
  assert.ok(!/require\(["']node:/.test(code), 'browser bundle must not pull node: modules');
  const { chromium: pw } = await import('playwright-core');
  const browser = await pw.launch({
    executablePath: chromium,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.setContent('<!doctype html><title>lowbit</title>');
    await page.addScriptTag({ content: code });
    const x = inputs();
    const results = (await page.evaluate(
      ({ xs, cases }) => {
        const lb = (globalThis as unknown as { lowbit: typeof lowbit }).lowbit;
        const xv = new Float32Array(xs);
        return cases.map(([name, o]) => {
          const f = lb.parseFormat(name);
          const y = lb.fakeQuant(f, xv, o);
          const c = lb.encode(f, xv, o);
          return { y: Array.from(new Uint32Array(y.buffer)), c: Array.from(c) };
        });
      },
      { xs: Array.from(x), cases: CASES },
    )) as { y: number[]; c: number[] }[];
    for (let i = 0; i < CASES.length; i++) {
      const [name, o] = CASES[i];
      const f = lowbit.parseFormat(name);
      const y = lowbit.fakeQuant(f, x, o);
      const c = lowbit.encode(f, x, o);
      assert.deepEqual(results[i].y, Array.from(new Uint32Array(y.buffer)), `${name}: fake-quant bits differ between browser and Node`);
      assert.deepEqual(results[i].c, Array.from(c), `${name}: codes differ between browser and Node`);
    }
    // fp16 against the platform's Float16Array where the browser has it
    const platform = (await page.evaluate((xs) => {
      const F16 = (globalThis as { Float16Array?: Float32ArrayConstructor }).Float16Array;
      return F16 ? Array.from(new Uint16Array(new F16(xs).buffer)) : null;
    }, Array.from(x))) as number[] | null;
    t.diagnostic(platform ? `fp16 checked against Chromium Float16Array on ${x.length} values` : "this browser has no Float16Array");
    if (platform) {
      const ours = lowbit.encode(lowbit.parseFormat('fp16'), x, { saturate: false });
      for (let i = 0; i < x.length; i++) if (x[i] === x[i]) assert.equal(ours[i], platform[i], `fp16 of ${x[i]} vs Float16Array`);
    }
  } finally {
    await browser.close();
  }
});
