/**
 * False-positive and false-negative rates of `lowbit audit` over a set of clean and planted models
 * (issue 16), and what the `--defend noise` defence costs and removes.
 *
 *   clean:   stories260K; its GPTQ and AWQ round trips (quantized with lowbit, written back as F32 by
 *            `lowbit convert`), and models with the token bias at strength 0 (copies)
 *   planted: `lowbit attack` of stories260K with a malicious model made by injectTokenBias for Q4_0,
 *            Q4_0+Q5_0 together, Q5_1 and Q8_0 (--pure, projection only), each audited as Q4_0 only
 *            (the edge sweep must find the plants for other types), and
 *            the attacks of scripts/attack-demo.ts (a trainer fine-tune planting a phrase, PGD through
 *            all layers) found in .cache/attack-demo/
 *   clean, larger: tinyllama256 (the 256-aligned test model) for Q4_0, Q8_0 and Q4_K_M (--pure: Q4_K)
 *
 *   npm run build && node dist/scripts/audit-table.js [--json out.json]
 *
 *   --iq: only the IQ rows (session 28): the clean models audited as IQ4_NL (and tinyllama256 as IQ4_NL,
 *   IQ4_XS, IQ3_S: the lattice type IQ3_S has no per-element interval, only the behaviour test), and
 *   token-bias plants for IQ4_NL audited as IQ4_NL and as Q4_0 (the sweep covers IQ4_NL and IQ4_XS)
 *   --iq-planted: only the IQ4_NL / IQ4_XS plants made by the attack that keeps the bytes (session 29, iqPlanted);
 *   with --label stories260K only that model's plants
 *   --synthetic: only clean synthetic llamas (scripts/synthetic-model.ts: no tokenizer, probed with seeded
 *   random token windows and their own generated continuations; session 30), audited as Q4_0, Q4_K_M
 *   (--pure: Q4_K) and IQ4_NL
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { injectTokenBias, writeWithReplacements } from '../src/audit/run.js';
import { loadModel } from '../src/eval/load.js';
import { openModelFile } from '../src/io/model-file.js';
import { calibrationWindows } from '../src/pipeline/passes/load.js';
import { ROOT, runLlamaQuantize } from './llama-tools.js';
import { blockDiff } from './attack-common.js';
import { writeSyntheticLlama, type SyntheticLlama } from './synthetic-model.js';
import { memorySink } from '../src/io/sink.js';

const OUT = path.join(ROOT, '.cache', 'audit-table');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const TEXT = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
const lowbit = path.join(ROOT, 'bin', 'lowbit.js');
fs.mkdirSync(OUT, { recursive: true });
const say = (s: string) => process.stderr.write(s + '\n');

async function malicious(token: string, strength: number, out: string, file = GGUF): Promise<void> {
  const bytes = new Uint8Array(fs.readFileSync(file));
  const src = { name: file, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) };
  const { model, tokenizer } = await loadModel(src as never, { contextLength: 128 });
  const m = await openModelFile(src as never);
  const windows = calibrationWindows(tokenizer!.encode(fs.readFileSync(TEXT, 'utf8'), { bos: false }), 128 * 8, 128, 1, tokenizer!.vocab.bos);
  const id = tokenizer!.vocab.tokens.indexOf(token);
  if (id < 0) throw new Error(`no token ${token}`);
  const { name, weights } = await injectTokenBias(model, m, windows, id, strength);
  const chunks: Buffer[] = [];
  await writeWithReplacements({ write: (b) => void chunks.push(Buffer.from(b)) }, m, new Map([[name, weights]]));
  fs.writeFileSync(out, Buffer.concat(chunks));
}

/** one `lowbit audit` process for all `types` of a model (the model and its base logits loaded once) */
function audit(file: string, types: string[]): { type: string; suspicious: boolean; own: boolean; ratio: number; behaviourZ: number; generatedZ: number | null; maxRowZ: number; detail: string }[] {
  const t0 = Date.now();
  const p = spawnSync(process.execPath, [lowbit, 'audit', file, '--types', types.join(','), '--pure', '--windows', '4', '--json'], { encoding: 'utf8' });
  if (p.status !== 0 && p.status !== 3) throw new Error(`audit ${file}: ${p.stderr}`);
  const j = JSON.parse(p.stdout);
  say(`  (audit of ${path.basename(file)} for ${types.join(',')}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  // the edge sweep (every legacy/K type the shapes take) is part of every audit: a row is flagged by its
  // type's own tests or by the sweep; `own` keeps the verdict without the sweep (the session-26 audit)
  const sweep = (j.sweep ?? []) as { type: string; maxRowZ: number; suspicious: boolean }[];
  let top = sweep[0];
  for (const s of sweep) if (s.maxRowZ > top.maxRowZ) top = s;
  const sweepText = top ? ` sweep ${top.type} z ${top.maxRowZ.toFixed(1)}` : '';
  const swept = sweep.some((s) => s.suspicious);
  return j.types.map((t: any) => ({ type: t.type, suspicious: t.suspicious || swept, own: t.suspicious, ratio: t.ratio, behaviourZ: t.behaviourZ, generatedZ: t.generated?.z ?? null, maxRowZ: t.maxRowZ, detail: `ratio ${t.ratio.toFixed(2)} behaviour z ${Number(t.behaviourZ).toFixed(1)} (> ${Number(t.behaviourThreshold).toFixed(2)}; KLD ${t.kldQuantized.toExponential(2)} vs ${t.kldNoisedMean.toExponential(2)} ± ${Number(t.kldNoisedSd).toExponential(1)})${t.generated ? ` generated z ${Number(t.generated.z).toFixed(1)} (KLD ${t.generated.kld.toExponential(2)} vs ${t.generated.kldNoisedMean.toExponential(2)} ± ${Number(t.generated.kldNoisedSd).toExponential(1)}, top-1 ${(100 * t.generated.top1).toFixed(1)} %)` : ''} row z ${t.maxRowZ.toFixed(1)}${sweepText}` }));
}

/** run a command that makes `out` unless it exists (the script can be re-run after a stop) */
function make(out: string, args: string[]): void {
  if (fs.existsSync(out)) return;
  const t0 = Date.now();
  execFileSync(process.execPath, [lowbit, ...args]);
  say(`  (${args[0]} ${path.basename(out)}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

const kld = (file: string, base = GGUF) => JSON.parse(execFileSync(process.execPath, [lowbit, 'eval', file, '--base', base, '--text', TEXT, '--ctx', '128', '--chunks', '8', '--json'], { encoding: 'utf8' })).kld.mean as number;

/**
 * --iq-planted (session 29): token-bias plants for IQ4_NL (stories260K, tinyllama256) and IQ4_XS
 * (tinyllama256: its rows take 256-blocks) made with the attack that keeps the bytes (dequantized plant,
 * fit null space, whole code intervals, projection only), each checked by llama-quantize (blocks that
 * differ from the malicious model's quantization), its full-precision KLD to the benign model against
 * the malicious model's, and audited as its own type and as Q4_0.
 */
async function iqPlanted(record: (label: string, planted: boolean, file: string, types: string[]) => void): Promise<Record<string, unknown>[]> {
  const TL = path.join(ROOT, 'data', 'tinyllama256.gguf');
  const out: Record<string, unknown>[] = [];
  // the bias strength: 0.25 moves stories260K by KLD 0.098; tinyllama256 needs 1 (0.25 gives KLD 0.0019, about its own IQ4 error)
  // with --pgd: stories260K IQ4_NL and tinyllama256 IQ4_XS (the time of PGD on tinyllama256's IQ4_NL blocks is left out)
  const pgdRun = process.argv.includes('--pgd');
  // --seeds 7,8: the stories260K plant once per attack seed (PGD batches; 7 is the attack's default and keeps the old file name)
  const seeds = process.argv.includes('--seeds') ? process.argv[process.argv.indexOf('--seeds') + 1].split(',').map(Number) : [7];
  // --extra Q5_K_M,Q3_K_M: tinyllama256 plants for more file types (--pure: every matrix in the type's K block), the same construction;
  // --only-extra: those alone
  const extra = process.argv.includes('--extra') ? process.argv[process.argv.indexOf('--extra') + 1].split(',') : [];
  const onlyExtra = process.argv.includes('--only-extra');
  const plants = [
    ...(onlyExtra ? [] : [...seeds.map((seed) => [GGUF, 'stories260K', 'IQ4_NL', 0.25, seed] as const), [TL, 'tinyllama256', 'IQ4_NL', 1, 7] as const, [TL, 'tinyllama256', 'IQ4_XS', 1, 7] as const]),
    ...extra.map((t) => [TL, 'tinyllama256', t, 1, 7] as const),
  ];
  const only = process.argv.includes('--label') ? process.argv[process.argv.indexOf('--label') + 1] : undefined;
  for (const [model, label, type, strength, seed] of plants.filter((p) => (!pgdRun || p[1] === 'stories260K' || p[2] !== 'IQ4_NL') && (!only || p[1] === only))) {
    const mal = path.join(OUT, model === GGUF ? 'mal-happy-0.25.gguf' : `mal-${label}-happy-${strength}.gguf`);
    if (!fs.existsSync(mal)) await malicious('▁happy', strength, mal, model);
    // --pgd N: N steps of PGD (the bytes kept every step) distilling the benign model on the text, else projection only
    const pgd = process.argv.includes('--pgd') ? Number(process.argv[process.argv.indexOf('--pgd') + 1]) : 0;
    const att = path.join(OUT, `att-${label}-happy-${strength}-${type}-keep${pgd ? `-pgd${pgd}` : ''}${seed !== 7 ? `-s${seed}` : ''}.gguf`);
    make(att, ['attack', model, mal, att, '--type', type, '--pure', '--seed', String(seed), '--pgd-steps', String(pgd), ...(pgd ? ['--text', TEXT, '--batch', '4'] : []), '--box-fraction', '1', '--box-validate', 'none', '--keep-every', '1', '--fit-null-space', '--from-dequantized']);
    const q = (f: string) => {
      const o = path.join(OUT, `${path.basename(f, '.gguf')}-${type}.gguf`);
      if (!fs.existsSync(o)) runLlamaQuantize(f, o, type, ['--pure']);
      return o;
    };
    const diff = await blockDiff(q(att), q(mal));
    const row = { model: label, type, strength, pgd, seed, blocks: diff.blocks, blocksDiffer: diff.differ, kldMalicious: kld(mal, model), kldAttacked: kld(att, model), kldAttackedQuantized: kld(q(att), model), kldMaliciousQuantized: kld(q(mal), model), kldBenignQuantized: kld(q(model), model) };
    say(`${label} ${type} plant: ${JSON.stringify(row)}`);
    out.push(row);
    // --models-only: make and measure the plants, no audits (the audits in a second run: split work)
    if (!process.argv.includes('--models-only')) record(`${label} token bias ${strength} planted for ${type} (bytes kept, dequantized, null space${pgd ? `, PGD ${pgd}, seed ${seed}` : ''})`, true, att, [type, 'Q4_0']);
  }
  return out;
}

async function main(): Promise<void> {
  const rows: { model: string; planted: boolean; types: string; suspicious: boolean; own: boolean; ratio: number; behaviourZ: number; generatedZ: number | null; maxRowZ: number; detail: string }[] = [];
  const t0 = Date.now();
  const IQ = process.argv.includes('--iq');
  const record = (label: string, planted: boolean, file: string, types: string[]) => {
    for (const a of audit(file, types)) {
      rows.push({ model: label, planted, types: a.type, suspicious: a.suspicious, own: a.own, ratio: a.ratio, behaviourZ: a.behaviourZ, generatedZ: a.generatedZ, maxRowZ: a.maxRowZ, detail: a.detail });
      say(`${planted ? 'planted' : 'clean  '} ${label} ${a.type}: ${a.suspicious ? 'FLAGGED' : planted ? 'missed' : 'clean'} (${a.detail})`);
    }
  };
  if (process.argv.includes('--synthetic')) {
    // clean synthetic llamas (no tokenizer): dim 256 so the K and IQ4 types take every row
    for (const o of [{ dim: 256, hidden: 512, layers: 4, vocab: 512, heads: 4, kvHeads: 4, seed: 3 }] satisfies SyntheticLlama[]) {
      const file = path.join(OUT, `synthetic-${o.dim}x${o.layers}-v${o.vocab}-s${o.seed}.gguf`);
      if (!fs.existsSync(file)) {
        const sink = memorySink();
        await writeSyntheticLlama(sink, o);
        fs.writeFileSync(file, sink.bytes());
      }
      record(`synthetic dim ${o.dim}, ${o.layers} layers, vocab ${o.vocab}, seed ${o.seed} (no tokenizer)`, false, file, ['Q4_0', 'Q4_K_M', 'IQ4_NL']);
    }
    const fp = rows.filter((r) => r.suspicious).length;
    console.log(`false positives ${fp}/${rows.length} over the synthetic clean rows (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    const json = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
    if (json) fs.writeFileSync(json, JSON.stringify({ rows, falsePositives: fp, clean: rows.length }, null, 1));
    return;
  }
  if (process.argv.includes('--iq-planted')) {
    const plants = await iqPlanted(record);
    const fn = rows.filter((r) => r.planted && !r.suspicious).length;
    console.log(`false negatives ${fn}/${rows.length} over the IQ plants (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    const json = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
    if (json) fs.writeFileSync(json, JSON.stringify({ rows, plants, falseNegatives: fn, planted: rows.length }, null, 1));
    return;
  }
  // clean models
  const clean: [string, string][] = [[GGUF, 'stories260K']];
  for (const algo of ['gptq', 'awq']) {
    const q = path.join(OUT, `clean-${algo}.gguf`);
    make(q, ['quantize', GGUF, q, '--type', 'Q8_0', '--pure', '--algo', algo, '--calib', TEXT, '--calib-tokens', '2048', '--calib-ctx', '128']);
    clean.push([q, `stories260K ${algo.toUpperCase()} Q8_0 (as a model to audit)`]);
  }
  for (const [file, label] of clean) record(label, false, file, IQ ? ['IQ4_NL'] : ['Q4_0', 'Q5_0', 'Q8_0', 'Q4_1']);
  record('tinyllama256', false, path.join(ROOT, 'data', 'tinyllama256.gguf'), IQ ? ['IQ4_NL', 'IQ4_XS', 'IQ3_S'] : ['Q4_0', 'Q8_0', 'Q4_K_M']);
  // planted by scripts/attack-demo.ts (trainer fine-tune, PGD through all layers)
  const demo = path.join(ROOT, '.cache', 'attack-demo');
  for (const dir of fs.existsSync(demo) && !IQ ? fs.readdirSync(demo) : [])
    for (const f of fs.readdirSync(path.join(demo, dir))) {
      // attacked-TYPES-STEPS[-TAG].gguf; not its llama-quantize outputs (…-TYPE.gguf)
      const m = /^attacked-([^-]+)-(\d+)(?:-([\w.-]+))?\.gguf$/.exec(f);
      if (!m || m[2] === '0' || m[1].split('+').some((t) => f.endsWith(`-${t}.gguf`))) continue;
      record(`${dir} planted phrase (fine-tune) PGD ${m[2]} for ${m[1]}${m[3] ? ` (${m[3]})` : ''}`, true, path.join(demo, dir, f), m[1].split('+'));
    }
  // planted models
  for (const [token, strength] of [['▁happy', 0.25]] as const) {
    const mal = path.join(OUT, `mal-${token.slice(1)}-${strength}.gguf`);
    if (!fs.existsSync(mal)) await malicious(token, strength, mal);
    for (const types of IQ ? ['IQ4_NL'] : ['Q4_0', 'Q4_0,Q5_0', 'Q5_1', 'Q8_0']) {
      const att = path.join(OUT, `att-${token.slice(1)}-${strength}-${types.replace(',', '+')}.gguf`);
      make(att, ['attack', GGUF, mal, att, '--type', types, '--pure', '--pgd-steps', '0']);
      // audited as Q4_0 only (the type a user asks about): a plant for Q4_0+Q5_0 must show anyway
      record(`planted ${token} ${strength} for ${types}`, true, att, IQ ? ['IQ4_NL', 'Q4_0'] : ['Q4_0']);
    }
  }
  say(`audits done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const fp = rows.filter((r) => !r.planted && r.suspicious).length;
  const nClean = rows.filter((r) => !r.planted).length;
  const fn = rows.filter((r) => r.planted && !r.suspicious).length;
  const nPlanted = rows.filter((r) => r.planted).length;
  const fnOwn = rows.filter((r) => r.planted && !r.own).length;
  const fpOwn = rows.filter((r) => !r.planted && r.own).length;
  console.log(`false positives ${fp}/${nClean}, false negatives ${fn}/${nPlanted} (without the edge sweep: ${fpOwn}/${nClean}, ${fnOwn}/${nPlanted})`);
  if (IQ) {
    const json = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
    if (json) fs.writeFileSync(json, JSON.stringify({ rows, falsePositives: fp, clean: nClean, falseNegatives: fn, planted: nPlanted, withoutSweep: { falsePositives: fpOwn, falseNegatives: fnOwn } }, null, 1));
    return;
  }
  // the defence on one planted model and the clean one
  const att = path.join(OUT, 'att-happy-0.25-Q4_0.gguf');
  const out: Record<string, number> = {};
  for (const [label, file, defend] of [['clean Q4_0', GGUF, false], ['clean Q4_0 --defend', GGUF, true], ['planted Q4_0', att, false], ['planted Q4_0 --defend', att, true]] as const) {
    const q = path.join(OUT, `def-${label.replace(/\W+/g, '_')}.gguf`);
    execFileSync(process.execPath, [lowbit, 'quantize', file, q, '--type', 'Q4_0', '--pure', ...(defend ? ['--defend', 'noise'] : [])]);
    out[label] = kld(q);
    console.log(`${label}: KLD to the benign model ${out[label].toFixed(4)}`);
  }
  const json = process.argv.includes('--json') ? process.argv[process.argv.indexOf('--json') + 1] : undefined;
  if (json) fs.writeFileSync(json, JSON.stringify({ rows, falsePositives: fp, clean: nClean, falseNegatives: fn, planted: nPlanted, withoutSweep: { falsePositives: fpOwn, falseNegatives: fnOwn }, defence: out }, null, 1));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
