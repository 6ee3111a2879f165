/**
 * The quantize report: the text table and totals, --eval (PPL, KLD, top-1 of the output against the
 * input on shipped text; Q8_0 must lose less than Q4_0), --report (a self-contained HTML page written
 * atomically, with a row per tensor and the two plots), and quiet stderr with --json.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { kldHistogramSvg, quantizeReportHtml, sqnrPerLayerSvg } from '../src/pipeline/report-html.js';
import type { QuantizeReport } from '../src/pipeline/quantize.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const TEXT = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-report-'));

const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
const EVAL = ['--eval', TEXT, '--eval-ctx', '128', '--eval-chunks', '4'];

test('--eval adds PPL, KLD and top-1 to the JSON and the table; Q8_0 loses less than Q4_0', () => {
  const runs = new Map<string, any>();
  for (const type of ['Q8_0', 'Q4_0']) {
    const r = cli('quantize', GGUF, path.join(tmp, `${type}.gguf`), '--type', type, ...EVAL, '--json');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', '--json is quiet on stderr');
    runs.set(type, JSON.parse(r.stdout));
  }
  const q8 = runs.get('Q8_0').evaluation;
  const q4 = runs.get('Q4_0').evaluation;
  for (const e of [q8, q4]) {
    assert.deepEqual([e.ctx, e.chunks, e.tokens], [128, 4, 4 * 63]);
    assert.ok(e.pplBase > 1 && e.pplBase < 20, `base PPL ${e.pplBase}`);
    assert.ok(e.kld.mean >= 0 && e.kld.p99 >= e.kld.median && e.kld.max >= e.kld.p99, JSON.stringify(e.kld));
    assert.ok(e.top1 > 0.5 && e.top1 <= 1, `top-1 ${e.top1}`);
    assert.equal(e.kldValues, undefined, 'per-token values stay out of the JSON');
  }
  assert.equal(q8.pplBase, q4.pplBase, 'same base run');
  assert.ok(q8.kld.mean < q4.kld.mean / 5, `KLD Q8_0 ${q8.kld.mean} vs Q4_0 ${q4.kld.mean}`);
  assert.ok(q8.kld.p99 < q4.kld.p99, `p99 Q8_0 ${q8.kld.p99} vs Q4_0 ${q4.kld.p99}`);
  assert.ok(Math.abs(q8.ppl / q8.pplBase - 1) < 0.01, `Q8_0 PPL ${q8.ppl} vs ${q8.pplBase}`);
  assert.ok(q4.ppl > q8.ppl, `PPL Q4_0 ${q4.ppl} vs Q8_0 ${q8.ppl}`);
  assert.ok(q8.top1 >= q4.top1, `top-1 Q8_0 ${q8.top1} vs Q4_0 ${q4.top1}`);
  console.log(`# stories260K ctx 128 x 4 chunks: Q8_0 KLD ${q8.kld.mean.toExponential(3)} top-1 ${q8.top1.toFixed(3)}; Q4_0 KLD ${q4.kld.mean.toExponential(3)} top-1 ${q4.top1.toFixed(3)}`);

  const text = cli('quantize', GGUF, path.join(tmp, 'table.gguf'), '--type', 'Q4_0', ...EVAL);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^blk\.0\.attn_q\.weight\s+64x64\s+Q4_0\s+4\.50\s+\d+\.\d\d$/m);
  assert.match(text.stdout, /^total: 292800 parameters, [\d.]+ MiB \(\d+ bytes\) of tensor data, [\d.]+ bits per weight, [\d.]+ s$/m);
  assert.match(text.stdout, /PPL [\d.]+ -> [\d.]+/);
  assert.match(text.stdout, /KLD mean [\d.]+ \+\/- [\d.]+, median [\d.]+, p99 [\d.]+/);
  assert.match(text.stdout, /same top-1 token [\d.]+ %/);
});

test('--report writes a self-contained HTML page atomically, with every tensor and both plots', () => {
  const html = path.join(tmp, 'report.html');
  const out = path.join(tmp, 'r.gguf');
  const r = cli('quantize', GGUF, out, '--type', 'Q4_K_M', ...EVAL, '--report', html, '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).report, html);
  const page = fs.readFileSync(html, 'utf8');
  assert.match(page, /^<!doctype html>/);
  const rep = JSON.parse(r.stdout);
  for (const t of rep.tensors) assert.ok(page.includes(`<td>${t.name}</td><td>`), `row for ${t.name}`);
  assert.equal((page.match(/<svg /g) ?? []).length, 2, 'SQNR plot + KLD histogram');
  assert.match(page, /aria-label="SQNR per layer"/);
  assert.match(page, /aria-label="KLD distribution"/);
  assert.ok(!/<script|<link|<img|src=|url\(|@import/i.test(page), 'no scripts or external assets');
  assert.deepEqual(page.match(/https?:\/\/[^"]*/g)?.filter((u) => u !== 'http://www.w3.org/2000/svg') ?? [], [], 'no links out');
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), []);

  // without --eval: tables and the SQNR plot, no histogram
  const plain = cli('quantize', GGUF, out, '--type', 'Q8_0', '--report', html, '--json');
  assert.equal(plain.status, 0, plain.stderr);
  const page2 = fs.readFileSync(html, 'utf8');
  assert.equal((page2.match(/<svg /g) ?? []).length, 1);
  assert.ok(!page2.includes('KLD'));

  // a failing run leaves the previous report as it was, and no temp file
  const before = fs.readFileSync(html);
  const bad = cli('quantize', GGUF, path.join(tmp, 'bad.gguf'), '--type', 'Q4_0', '--imatrix', path.join(ROOT, 'test', 'golden', 'llama-quantize', 'synthetic.imatrix.gguf'), '--report', html);
  assert.equal(bad.status, 2);
  assert.deepEqual(fs.readFileSync(html), before);
  for (const [args, re] of [
    [['--report', path.join(tmp, 'r.txt')], /name it \.html/],
    [['--report', GGUF], /name it \.html/],
    [['--eval', path.join(tmp, 'missing.txt')], /--eval text .* does not exist/],
  ] as [string[], RegExp][]) {
    const e = cli('quantize', GGUF, path.join(tmp, 'e.gguf'), '--type', 'Q4_0', ...args);
    assert.equal(e.status, 2, e.stderr);
    assert.match(e.stderr, re);
    assert.ok(!fs.existsSync(path.join(tmp, 'e.gguf')));
  }
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), []);
});

test('HTML pieces: names are escaped; the plots place what they are given', () => {
  const report: QuantizeReport = {
    output: 'gguf',
    recipe: 'Q4_0',
    parameters: 2 * 64 * 64,
    bytes: 2 * 2304,
    bitsPerWeight: 4.5,
    seconds: 0.1,
    tensors: [
      { name: 'blk.0.attn_q.weight', shape: [64, 64], type: 'Q4_0', bytes: 2304, bitsPerWeight: 4.5, sqnrDb: 20 },
      { name: 'blk.1.<b>&q', shape: [64, 64], type: 'Q4_0', bytes: 2304, bitsPerWeight: 4.5, sqnrDb: 30 },
    ],
  };
  const page = quantizeReportHtml({ report, input: 'in<1>.gguf', output: 'out.gguf' });
  assert.ok(page.includes('blk.1.&lt;b&gt;&amp;q') && !page.includes('<b>&q'));
  assert.ok(page.includes('in&lt;1&gt;.gguf'));
  const svg = sqnrPerLayerSvg(report.tensors);
  assert.equal((svg.match(/<circle /g) ?? []).length, 2);
  assert.equal((svg.match(/<polyline /g) ?? []).length, 2, 'one line per kind');
  const hist = kldHistogramSvg(Float32Array.from([1e-3, 1.1e-3, 0.5, 0]), { mean: 0.1, p99: 0.5 });
  assert.equal((hist.match(/<rect /g) ?? []).length, 3, 'bins for 1e-3 (2 tokens), 0.5 and the floor (0)');
  assert.match(hist, /2 tokens with KLD in \[1\.0e-3/);
});

test('progress bar on a terminal only, and never with --json', (t) => {
  if (!fs.existsSync('/usr/bin/script')) {
    t.skip('no /usr/bin/script to provide a pseudo-terminal');
    return;
  }
  const underTty = (...args: string[]) => {
    const cmd = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    return spawnSync('/usr/bin/script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8' });
  };
  const tty = underTty('quantize', GGUF, path.join(tmp, 'tty.gguf'), '--type', 'Q4_0');
  assert.equal(tty.status, 0, tty.stdout);
  assert.match(tty.stdout, /\r\[#+\.*\]\s+\d+% \d+\/48 /, 'bar with percent and tensor count');
  assert.match(tty.stdout, /\[#{24}\] 100% 48\/48/);
  const json = underTty('quantize', GGUF, path.join(tmp, 'tty.gguf'), '--type', 'Q4_0', '--json');
  assert.equal(json.status, 0, json.stdout);
  assert.ok(!json.stdout.includes('[#'), 'no bar with --json');
  assert.equal(JSON.parse(json.stdout.trim()).tensors.length, 48);
  // not a terminal: no bar either
  const pipe = cli('quantize', GGUF, path.join(tmp, 'tty.gguf'), '--type', 'Q4_0');
  assert.equal(pipe.stderr, '');
});
