/**
 * The learned-PTQ table (issue 21), judged by llama.cpp: `llama-perplexity --kl-divergence` of each
 * file against the F32 model on held-out text, GPTQ against the learned methods at the same type.
 *
 *   model:       MODEL (default data/tinyllama256.gguf, the 256-aligned trained model)
 *   calibration: the first 300 000 characters of data/tinystories-valid-head.txt, 4096 tokens in
 *                windows of 256 (the same for every method)
 *                (--calib-mix: the same 300 000 characters of TinyStories and 150 000 of WikiText-2 test from
 *                character 700 000 on, far past the judged part; every method gets the same file)
 *   held-out:    TinyStories from character 500 000 on (ctx 128, CHUNKS chunks), and WikiText-2 test
 *   types:       Q3_K --pure (Q3_K_S --pure: every tensor Q3_K), Q2_K --pure, Q4_K_M
 *
 *   npm run build && node dist/scripts/learned-ptq-table.js [--model F] [--chunks N] [--only SUBSTRING]
 *     [--methods gptq,omniquant,...] [--types 'Q3_K pure,Q2_K pure'] [--extra 'ARGS for every quantize'] [--ar 'ARGS for the autoround methods'] [--tag NAME] [--calib-mix]
 *     [--reuse]   (judge a file this script wrote before, with its .json beside it, instead of quantizing again;
 *                 the F32 logits of an earlier run too: same --chunks only)
 *     [--wiki-chunks N]  (also judge N chunks of WikiText-2, the "480" column of docs/ptq.md's sessions 31-32)
 *     [--calib-tokens N] (calibration tokens for every method, default 4096; name the run with --tag / --gptq-tag)
 *     [--gptq-tag T]     (the GPTQ row's file is the one of tag T, default --tag: variants of the learned
 *                         methods with the same calibration and seed share one GPTQ file)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { llamaBin, ROOT } from './llama-tools.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt?: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : dflt);
const MODEL = path.resolve(opt('model', path.join(ROOT, 'data', 'tinyllama256.gguf'))!);
const CHUNKS = opt('chunks', '120')!;
const only = opt('only');
const reuse = args.includes('--reuse');
const OUT = path.join(ROOT, '.cache', 'learned-ptq');
const lowbit = path.join(ROOT, 'bin', 'lowbit.js');
const say = (s: string) => process.stderr.write(s + '\n');
fs.mkdirSync(OUT, { recursive: true });
const stories = fs.readFileSync(path.join(ROOT, 'data', 'tinystories-valid-head.txt'), 'utf8');
const mix = args.includes('--calib-mix');
const wikiText = fs.readFileSync(path.join(ROOT, 'data', 'wikitext-2-test.raw'), 'utf8');
const WIKI_CALIB_FROM = 700000;
// the judged WikiText-2 part is its first CHUNKS x 128 tokens (well under 700 000 characters)
if (mix && wikiText.length < WIKI_CALIB_FROM + 150000) throw new Error('wikitext-2-test.raw is too short for --calib-mix');
const calib = path.join(OUT, mix ? 'calib-mix.txt' : 'calib.txt');
fs.writeFileSync(calib, stories.slice(0, 300000) + (mix ? '\n' + wikiText.slice(WIKI_CALIB_FROM, WIKI_CALIB_FROM + 150000) : ''));
const texts = { ts: path.join(OUT, 'heldout.txt'), wiki: path.join(ROOT, 'data', 'wikitext-2-test.raw') };
fs.writeFileSync(texts.ts, stories.slice(500000));

function llama(tool: 'llama-perplexity', a: string[], want: RegExp): RegExpMatchArray {
  const bin = llamaBin(tool);
  if (!bin) throw new Error(`${tool} is not built: node scripts/build-llama-cpp.mjs`);
  for (let attempt = 0; attempt < 4; attempt++) {
    const p = spawnSync(bin, a, { encoding: 'utf8', maxBuffer: 1 << 28 });
    if (p.status !== 0) throw new Error(`${tool} failed (${p.status}): ${(p.stderr + p.stdout).slice(-600)}`);
    const m = (p.stdout + p.stderr).match(want);
    if (m) return m; // the tools' log thread can drop the last lines: retry
  }
  throw new Error(`${tool}: output never matched ${want}`);
}

const bases = Object.fromEntries(Object.entries(texts).map(([k, f]) => {
  const base = path.join(OUT, `base-${k}.kld`);
  if (reuse && fs.existsSync(base)) return [k, base]; // the F32 model's logits on the same text and chunks
  llama('llama-perplexity', ['-m', MODEL, '-f', f, '-c', '128', '--chunks', CHUNKS, '--kl-divergence-base', base, '-t', '2'], /Final estimate: PPL = ([\d.]+)/);
  return [k, base];
}));
const wikiChunks = opt('wiki-chunks');
const baseWikiN = wikiChunks ? path.join(OUT, `base-wiki${wikiChunks}.kld`) : undefined;
if (baseWikiN && !(reuse && fs.existsSync(baseWikiN)))
  llama('llama-perplexity', ['-m', MODEL, '-f', texts.wiki, '-c', '128', '--chunks', wikiChunks!, '--kl-divergence-base', baseWikiN, '-t', '2'], /Final estimate: PPL = ([\d.]+)/);
const kld = (file: string, base: string) => {
  const m = llama('llama-perplexity', ['-m', file, '--kl-divergence-base', base, '--kl-divergence', '-t', '2'], /Mean\s+KLD:\s+([-\d.e]+)\s+±\s+([-\d.e]+)/);
  return { kld: Number(m[1]), se: Number(m[2]) };
};

const TYPES: [string, string[]][] = [
  ['Q3_K pure', ['--type', 'Q3_K_S', '--pure']],
  ['Q2_K pure', ['--type', 'Q2_K', '--pure']],
  ['Q4_K_M', ['--type', 'Q4_K_M']],
];
const METHODS = opt('methods', 'gptq,autoround,gptq+autoround,omniquant,omniquant+gptq')!.split(',');
const typesWanted = opt('types')?.split(',');
const extra = opt('extra', '')!.split(' ').filter(Boolean);
/** --tag T: a name for the --extra variant (file names and the method column); the ratios are to the GPTQ row of the same run */
const tag = opt('tag', '')!;
/** --ar 'ARGS': options for the AutoRound methods only (GPTQ refuses them) */
const arExtra = opt('ar', '')!.split(' ').filter(Boolean);
const gptqTag = opt('gptq-tag', tag)!;
const calibTokens = opt('calib-tokens', '4096')!;
console.log(`| type | method | KLD TinyStories | KLD WikiText-2 | × GPTQ (ts / wiki) |${wikiChunks ? ` WikiText-2, ${wikiChunks} chunks | × GPTQ (${wikiChunks}) |` : ''} seconds |`);
console.log(`| --- | --- | ---: | ---: | ---: |${wikiChunks ? ' ---: | ---: |' : ''} ---: |`);
for (const [tname, targs] of TYPES) {
  if (typesWanted && !typesWanted.includes(tname)) continue;
  let ref: { ts: number; wiki: number; wikiN: number } | undefined;
  for (const algo of METHODS) {
    if (only && !`${tname} ${algo}`.includes(only)) continue;
    const t = algo === 'gptq' ? gptqTag : tag;
    const file = path.join(OUT, `${tname.replace(/ /g, '-')}-${algo}${t ? `-${t}` : ''}${mix ? '-mix' : ''}.gguf`);
    const t0 = performance.now();
    const jsonFile = file.replace(/\.gguf$/, '.json');
    let secs: number;
    if (reuse && fs.existsSync(file) && fs.existsSync(jsonFile)) {
      const j = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
      secs = Number(j.ptq?.seconds ?? j.seconds); // the calibrated part only (not the file write)
      say(`${file}: reused (quantized before in ${secs.toFixed(0)} s)`);
    } else {
      const json = execFileSync(process.execPath, [lowbit, 'quantize', MODEL, file, ...targs, '--algo', algo, '--calib', calib, '--calib-tokens', calibTokens, '--calib-ctx', '256', ...extra, ...(algo.includes('autoround') ? arExtra : []), '--json'], { maxBuffer: 1 << 26 });
      secs = (performance.now() - t0) / 1000;
      fs.writeFileSync(jsonFile, json);
    }
    const ts = kld(file, bases.ts);
    const wiki = kld(file, bases.wiki);
    const wikiN = baseWikiN ? kld(file, baseWikiN) : undefined;
    if (algo === 'gptq') ref = { ts: ts.kld, wiki: wiki.kld, wikiN: wikiN?.kld ?? NaN };
    const x = ref ? `${(ts.kld / ref.ts).toFixed(2)} / ${(wiki.kld / ref.wiki).toFixed(2)}` : '';
    const n = wikiN ? ` ${wikiN.kld.toFixed(6)} ± ${wikiN.se.toFixed(6)} | ${ref ? (wikiN.kld / ref.wikiN).toFixed(2) : ''} |` : '';
    console.log(`| ${tname} | ${algo}${t ? ` ${t}` : ''}${mix ? ' (calib-mix)' : ''} | ${ts.kld.toFixed(6)} ± ${ts.se.toFixed(6)} | ${wiki.kld.toFixed(6)} ± ${wiki.se.toFixed(6)} | ${x} |${n} ${secs.toFixed(0)} |`);
    say(`${tname} ${algo}: ${ts.kld} / ${wiki.kld}`);
  }
}
