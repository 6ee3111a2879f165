/**
 * Driving the Quantization Lab from Node (the test and `npm run bench -- lab`): the static server,
 * Debian's Chromium through playwright-core, the page's status line, and the resident memory of the
 * renderer processes (the page and every worker: JS heaps, WebAssembly memories, buffers).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { BrowserContext, Page } from 'playwright-core';
import { ROOT } from './llama-tools.js';

export const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
/** a switch on the browser's command line that finds its processes in /proc */
const MARK = `--lowbit-lab-harness=${process.pid}`;

export interface LabServer {
  url: string;
  close(): Promise<void>;
}

/** The Lab's static server; isolate: false serves it without the cross-origin-isolation headers. */
export async function startServer(o: { isolate?: boolean } = {}): Promise<LabServer> {
  const mod = (await import(pathToFileURL(path.join(ROOT, 'scripts', 'lab-server.mjs')).href)) as { startLabServer(o?: object): Promise<LabServer> };
  return mod.startLabServer(o);
}

/** A Chromium with its own on-disk profile (see launchChromium); pages open in it. */
export interface LabBrowser {
  newPage(o?: { viewport?: { width: number; height: number } }): Promise<Page>;
  close(): Promise<void>;
}

/**
 * Chromium with a fresh on-disk profile (a temp directory, removed on close) rather than Playwright's
 * default incognito context: incognito keeps the Origin Private File System in memory in the browser
 * process, behind an IPC call per read and write (measured 14 MB/s written, vs 110 MB/s on disk, on a
 * loaded 2-core machine), which is neither what a person's browser does nor a fair benchmark.
 */
export async function launchChromium(extra: string[] = []): Promise<LabBrowser> {
  if (!CHROMIUM) throw new Error('Chromium is not installed (apt-get install chromium)');
  const { chromium } = await import('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      acceptDownloads: true,
      viewport: null,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', MARK, ...extra],
    });
  } catch (e) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  const blank = context.pages()[0]; // the window a persistent context opens with
  return {
    async newPage(o = {}) {
      const page = await context.newPage();
      await page.setViewportSize(o.viewport ?? { width: 1280, height: 800 });
      await blank?.close().catch(() => undefined);
      return page;
    },
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Wait until the page is idle with a final status (done, error: ..., cancelled); returns the status. */
export async function statusDone(page: Page, timeout = 120000): Promise<string> {
  await page.waitForFunction(
    () => {
      const s = document.querySelector('[data-testid=status]')?.textContent ?? '';
      return (/done$/.test(s) || s.startsWith('error:') || s === 'cancelled') && !document.body.hasAttribute('aria-busy');
    },
    null,
    { timeout },
  );
  return (await page.getByTestId('status').textContent()) ?? '';
}

/** Resident memory (bytes) of the renderer processes of browsers launched by launchChromium. */
export function rendererRss(): number {
  const parent = new Map<number, number>();
  const cmd = new Map<number, string>();
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      cmd.set(Number(p), fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'));
    } catch {
      /* the process ended */
    }
  }
  const mains = new Set([...cmd].filter(([, c]) => c.includes(MARK)).map(([p]) => p));
  let rss = 0;
  for (const [p, c] of cmd) {
    if (!c.includes('--type=renderer')) continue;
    let q = p;
    while (q > 1 && !mains.has(q)) q = parent.get(q) ?? 0;
    if (q <= 1) continue;
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) rss += Number(m[1]) * 1024;
    } catch {
      /* the process ended */
    }
  }
  return rss;
}

/** Sample rendererRss every `ms` until stop(); returns the peak. */
export function peakRss(ms = 100): { stop(): number } {
  let peak = rendererRss();
  const timer = setInterval(() => (peak = Math.max(peak, rendererRss())), ms);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rendererRss());
    },
  };
}

/**
 * Read `length` bytes at `offset` of the page's last output (window.lowbitLab.output(), the disk-backed
 * Blob behind the download link; nothing else is copied).
 */
export async function readDownloadRange(page: Page, offset: number, length: number): Promise<Uint8Array> {
  const b64 = await page.evaluate(
    async ({ offset, length }) => {
      const blob = (globalThis as unknown as { lowbitLab: { output(): Blob } }).lowbitLab.output();
      const u = new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
      let s = '';
      for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
      return btoa(s);
    },
    { offset, length },
  );
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/** The size of the file behind the page's download link. */
export async function downloadSize(page: Page): Promise<number> {
  return page.evaluate(() => (globalThis as unknown as { lowbitLab: { output(): Blob } }).lowbitLab.output().size);
}
