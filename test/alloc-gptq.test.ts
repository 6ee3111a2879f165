/**
 * GPTQ candidates for bit allocation (`sensitivity --algo gptq`, `quantize --calib --target-size --algo gptq`):
 *  - each candidate's cost is tr(ΔW H ΔWᵀ) with ΔW from GPTQ at that type (the Hessians of the statistics
 *    pass): lower than RTN's cost of the same type for every linear of the 256-aligned trained model, the
 *    token embedding (a lookup, no Hessian) keeps RTN's;
 *  - the database says so, and quantize refuses it for another algorithm; --plain-costs is refused with GPTQ;
 *  - (LOWBIT_FULL) the fused allocation with GPTQ candidates writes a file within the budget that
 *    llama.cpp loads, whose KLD against the F32 model on held-out text is at most the imatrix-RTN
 *    allocation's at the same budget.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { llamaCppLogits } from '../scripts/llama-tools.js';

const DATA = (f: string) => new URL(`../../data/${f}`, import.meta.url).pathname;
const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;
const MODEL = DATA('tinyllama256.gguf');
const TEXT = readFileSync(DATA('tinystories-valid-head.txt'), 'utf8');

interface Db {
  algo?: string;
  tensors: { name: string; candidates: { type: string; cost: number; bytes: number }[] }[];
}

function cli(args: string[], status = 0) {
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', CLI, ...args], { encoding: 'utf8' });
  assert.equal(r.status, status, r.stderr);
  return r;
}

test('alloc-gptq: GPTQ candidates cost less than RTN\'s of the same type; the database is refused for RTN files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-alloc-gptq-'));
  try {
    const calib = join(dir, 'calib.txt');
    writeFileSync(calib, TEXT.slice(0, 100000));
    const cost = ['--calib', calib, '--calib-tokens', '256', '--calib-ctx', '128', '--seed', '1', '--output-factor', 'none', '--sample-rows', '16', '--types', 'Q3_K,Q4_K', '--threads', '2'];
    const rtnDb = join(dir, 'rtn.json');
    const gptqDb = join(dir, 'gptq.json');
    cli(['sensitivity', MODEL, ...cost, '--db', rtnDb, '--json']);
    cli(['sensitivity', MODEL, ...cost, '--algo', 'gptq', '--db', gptqDb, '--json']);
    const rtn = JSON.parse(readFileSync(rtnDb, 'utf8')) as Db;
    const gptq = JSON.parse(readFileSync(gptqDb, 'utf8')) as Db;
    assert.equal(rtn.algo, undefined);
    assert.equal(gptq.algo, 'gptq');
    assert.equal(gptq.tensors.length, rtn.tensors.length);
    let ratio = 0;
    let n = 0;
    for (const t of rtn.tensors) {
      const g = gptq.tensors.find((x) => x.name === t.name)!;
      for (const c of t.candidates) {
        const d = g.candidates.find((x) => x.type === c.type)!;
        assert.equal(d.bytes, c.bytes);
        if (t.name === 'token_embd.weight') assert.equal(d.cost, c.cost, 'the embedding is a lookup: RTN in both');
        else {
          assert.ok(d.cost < c.cost, `${t.name} ${c.type}: GPTQ ${d.cost} vs RTN ${c.cost}`);
          ratio += d.cost / c.cost;
          n++;
        }
      }
    }
    assert.ok(ratio / n < 0.8, `GPTQ's costs are ${(ratio / n).toFixed(2)} of RTN's on average`);

    // a database of GPTQ costs describes a GPTQ file only; GPTQ candidates are no plain quantizers
    const size = String(1900000);
    let r = cli(['quantize', MODEL, join(dir, 'x.gguf'), '--type', 'Q4_K_M', '--db', gptqDb, '--target-size', size], 2);
    assert.match(r.stderr, /^lowbit: --db \S+ holds the costs of GPTQ's candidates .*--algo gptq\n$/);
    r = cli(['sensitivity', MODEL, ...cost, '--algo', 'gptq', '--plain-costs', '--db', join(dir, 'p.json')], 2);
    assert.match(r.stderr, /^lowbit: --plain-costs .*--algo gptq\)\n$/);
    r = cli(['sensitivity', MODEL, ...cost.map((x) => (x === 'Q3_K,Q4_K' ? 'Q4_K,IQ3_XXS' : x)), '--algo', 'gptq', '--db', join(dir, 'p.json')], 2);
    assert.match(r.stderr, /^lowbit: GPTQ cannot round IQ3_XXS .*\n$/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    for (const f of ['x.gguf', 'p.json']) assert.ok(!existsSync(join(dir, f)), `${f}: nothing written`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('alloc-gptq: allocation with GPTQ candidates has a KLD at most the imatrix-RTN allocation\'s at the same budget; llama.cpp loads it', { skip: process.env.LOWBIT_FULL ? false : 'LOWBIT_FULL=1 (GPTQ of every tensor, ~2 min)' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-alloc-gptq-'));
  try {
    const calib = join(dir, 'calib.txt');
    const held = join(dir, 'held.txt');
    writeFileSync(calib, TEXT.slice(0, 300000));
    writeFileSync(held, TEXT.slice(500000, 600000));
    const budget = 1703168; // llama.cpp's Q3_K_M size of this model (docs/mixed-precision.md)
    const common = ['--type', 'Q4_K_M', '--calib', calib, '--calib-tokens', '2048', '--calib-ctx', '256', '--types', 'Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0', '--sample-rows', '64', '--target-size', String(budget), '--threads', '2', '--json'];
    const kld: Record<string, number> = {};
    for (const algo of ['rtn', 'gptq']) {
      const out = join(dir, `${algo}.gguf`);
      cli(['quantize', MODEL, out, ...common, '--algo', algo]);
      assert.ok(readFileSync(out).length <= budget, `${algo}: within the budget`);
      const ev = JSON.parse(cli(['eval', out, '--text', held, '--base', MODEL, '--ctx', '128', '--chunks', '24', '--json']).stdout) as { kld?: { mean: number }; kldMean?: number };
      kld[algo] = ev.kld?.mean ?? ev.kldMean ?? NaN;
      assert.ok(Number.isFinite(kld[algo]), JSON.stringify(ev).slice(0, 300));
    }
    t.diagnostic(`KLD at ${budget} bytes: imatrix-RTN allocation ${kld.rtn}, GPTQ allocation ${kld.gptq}`);
    assert.ok(kld.gptq <= kld.rtn, `GPTQ allocation ${kld.gptq} vs RTN ${kld.rtn}`);
    const logits = await llamaCppLogits(join(dir, 'gptq.gguf'));
    if (typeof logits === 'string') return t.diagnostic(logits);
    assert.ok(logits.length > 0 && logits.every(Number.isFinite), 'llama.cpp gives finite logits');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
