/**
 * `npm run bench -- lab [--layers N] [--types Q8_0,Q4_K_M] [--threads T] [--runs R]`: the Quantization
 * Lab in headless Chromium against `lowbit quantize` on the same machine, in the same run, on the
 * synthetic F32 llama of `bench quantize` (~1.1B parameters, 4.4 GB; written once into .cache/bench/).
 *
 * The Lab reads the file through File.slice (picked through the file input), quantizes on T threads
 * (the job worker + T - 1 row workers, shared memory) and streams the GGUF into the Origin Private File
 * System; its time is the page's own from the click to `done` (start-up of the workers included). The
 * CLI is the whole command (`lowbit quantize IN OUT --type T --threads T`), start-up included.
 * Also: the peak resident memory of the renderer processes (page + workers) and of the CLI, and
 * whether both wrote the same bytes (sha-256 of the whole files; the Lab's downloaded).
 *
 * Target (issue 18): the Lab at >= 0.7x the CLI's speed, i.e. time ratio Lab / CLI <= 1.43.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { measure, ROOT } from '../scripts/llama-tools.js';
import { launchChromium, peakRss, startServer, statusDone } from '../scripts/lab-harness.js';
import { ensureModel, warmPageCache } from './quantize.js';
import type { SyntheticLlama } from '../scripts/synthetic-model.js';

function arg(args: string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
}

const MB = 1e6;

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 16 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function run(args: string[]): Promise<void> {
  const o: SyntheticLlama = { dim: 2048, hidden: 5632, layers: Number(arg(args, 'layers', '22')), vocab: 32000, heads: 32, kvHeads: 4, seed: 1234 };
  const types = arg(args, 'types', 'Q8_0,Q4_K_M').split(',');
  const threads = Number(arg(args, 'threads', '2'));
  const runs = Number(arg(args, 'runs', '1'));
  const input = await ensureModel(o);
  const size = fs.statSync(input).size;
  console.log(`model: ${path.relative(ROOT, input)}, ${(size / 1e9).toFixed(2)} GB F32; ${threads} threads; ${runs} run(s) each, alternating`);
  warmPageCache(input);
  const outDir = path.join(ROOT, '.cache', 'bench', 'lab-out');
  fs.mkdirSync(outDir, { recursive: true });
  const server = await startServer();
  const browser = await launchChromium();
  const rows: string[] = [];
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
    await page.goto(`${server.url}?sink=opfs&threads=${threads}`);
    await page.getByTestId('model-file').setInputFiles(input);
    const opened = await statusDone(page);
    if (!/done$/.test(opened)) throw new Error(opened);
    for (const type of types) {
      await page.getByTestId('type').selectOption(type);
      const cliOut = path.join(outDir, `cli-${type}.gguf`);
      const lab: number[] = [];
      const cli: number[] = [];
      let labPeak = 0;
      let cliPeak = 0;
      for (let r = 0; r < runs; r++) {
        const m = await measure(process.execPath, ['--experimental-wasm-relaxed-simd', path.join(ROOT, 'bin', 'lowbit.js'), 'quantize', input, cliOut, '--type', type, '--threads', String(threads), '--json']);
        if (m.status !== 0) throw new Error(`lowbit quantize ${type} failed: ${m.stderr}`);
        cli.push(m.seconds);
        cliPeak = Math.max(cliPeak, m.peakRss);
        const rss = peakRss();
        const t0 = performance.now();
        await page.getByTestId('quantize').click();
        const s = await statusDone(page, 3600000);
        const seconds = (performance.now() - t0) / 1000;
        labPeak = Math.max(labPeak, rss.stop());
        if (!/done$/.test(s)) throw new Error(`the Lab: ${s}`);
        lab.push(seconds);
        const run = await page.evaluate(() => (globalThis as unknown as { lowbitLab: { lastRun(): Record<string, number> } }).lowbitLab.lastRun());
        console.log(`  ${type} run ${r + 1}: CLI ${m.seconds.toFixed(1)} s, Lab ${seconds.toFixed(1)} s (${s.replace(/ — done$/, '')}); job worker: quantizing ${run.quantize.toFixed(1)} s (reads ${run.read.toFixed(1)} s, writes ${run.write.toFixed(1)} s overlap it)`);
      }
      // same bytes? the Lab's output downloaded (a file copy by the browser) against the CLI's file
      const labOut = path.join(outDir, `lab-${type}.gguf`);
      const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download').click()]);
      await dl.saveAs(labOut);
      const same = fs.statSync(labOut).size === fs.statSync(cliOut).size && (await sha256File(labOut)) === (await sha256File(cliOut));
      await dl.delete();
      fs.rmSync(labOut, { force: true });
      const best = (a: number[]) => Math.min(...a);
      const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
      rows.push(
        `${type.padEnd(7)} ${mean(cli).toFixed(1).padStart(7)} s ${mean(lab).toFixed(1).padStart(7)} s ${(mean(cli) / mean(lab)).toFixed(2).padStart(6)}x (best ${(best(cli) / best(lab)).toFixed(2)}x) ${(cliPeak / MB).toFixed(0).padStart(7)} MB ${(labPeak / MB).toFixed(0).padStart(7)} MB  ${same ? 'same bytes' : 'BYTES DIFFER'}`,
      );
      fs.rmSync(cliOut, { force: true });
    }
  } finally {
    await browser.close();
    await server.close();
  }
  console.log(`${'type'.padEnd(7)} ${'CLI'.padStart(9)} ${'Lab'.padStart(9)} ${'speed'.padStart(7)}          ${'CLI RSS'.padStart(10)} ${'page RSS'.padStart(10)}`);
  for (const r of rows) console.log(r);
  console.log('speed = CLI time / Lab time (target >= 0.7); page RSS = peak resident memory of the renderer processes (page and workers)');
}
