/**
 * The quantization-attack workflow on stories260K: a malicious model (the output row of "▁happy" moved by
 * 0.35 × its norm toward the mean final hidden state: it says "happy" where the original does not), planted inside the
 * benign model's weights for Q4_0 (`lowbit attack`), is
 *  - exact: the planted model quantizes to the malicious model's Q4_0 bytes;
 *  - benign-looking in full precision: small KLD to the benign model, while the malicious one is far;
 *  - flagged by `lowbit audit` (exit 3) while the clean model is not (exit 0);
 *  - partly defused by `quantize --defend noise` (half-step noise), at a small cost to the clean model.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { generateContinuations, injectTokenBias, randomTokenWindows, writeWithReplacements } from '../src/audit/run.js';
import { writeSyntheticLlama } from '../scripts/synthetic-model.js';
import { memorySink } from '../src/io/sink.js';
import { loadModel } from '../src/eval/load.js';
import { openModelFile } from '../src/io/model-file.js';
import { calibrationWindows } from '../src/pipeline/passes/load.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const GGUF = path.join(ROOT, 'data', 'stories260K.gguf');
const TEXT = path.join(ROOT, 'data', 'tinystories-valid-head.txt');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-audit-'));
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
const kldTo = (model: string, base: string): number => {
  // weights alone (eval's default for GGUF also rounds activations as llama.cpp, which adds its own KLD)
  const r = cli('eval', model, '--base', base, '--text', TEXT, '--ctx', '128', '--chunks', '6', '--activations', 'f32', '--json');
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).kld.mean;
};

async function makeMalicious(out: string, strength = 0.35): Promise<void> {
  const bytes = new Uint8Array(fs.readFileSync(GGUF));
  const src = { name: GGUF, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) };
  const { model, tokenizer } = await loadModel(src as never, { contextLength: 128 });
  const m = await openModelFile(src as never);
  const windows = calibrationWindows(tokenizer!.encode(fs.readFileSync(TEXT, 'utf8'), { bos: false }), 128 * 8, 128, 1, tokenizer!.vocab.bos);
  const happy = tokenizer!.vocab.tokens.indexOf('▁happy');
  assert.ok(happy > 0);
  const { name, weights } = await injectTokenBias(model, m, windows, happy, strength);
  const chunks: Buffer[] = [];
  await writeWithReplacements({ write: (b) => void chunks.push(Buffer.from(b)) }, m, new Map([[name, weights]]));
  fs.writeFileSync(out, Buffer.concat(chunks));
}

test('attack plants Q4_0 exactly, audit flags it and not the clean model, --defend removes it', async () => {
  const mal = path.join(tmp, 'malicious.gguf');
  await makeMalicious(mal);
  const att = path.join(tmp, 'attacked.gguf');
  const r = cli('attack', GGUF, mal, att, '--type', 'Q4_0', '--pure', '--pgd-steps', '0', '--json');
  assert.equal(r.status, 0, r.stderr);
  // the keep's options without --keep-every: one clear line, exit 2, nothing written
  for (const flag of ['--free-super-scales', '--fit-null-space']) {
    const out = path.join(tmp, 'never.gguf');
    const b = cli('attack', GGUF, mal, out, '--type', 'Q4_0', '--pure', '--pgd-steps', '0', flag);
    assert.equal(b.status, 2, b.stderr);
    assert.match(b.stderr.trim(), new RegExp(`^[^\\n]*${flag} needs --keep-every`));
    assert.ok(!fs.existsSync(out));
  }
  // exact: the planted model quantizes to the malicious model's bytes
  for (const [src, out] of [[att, 'att-q.gguf'], [mal, 'mal-q.gguf'], [GGUF, 'benign-q.gguf']]) assert.equal(cli('quantize', src, path.join(tmp, out), '--type', 'Q4_0', '--pure').status, 0);
  assert.ok(fs.readFileSync(path.join(tmp, 'att-q.gguf')).equals(fs.readFileSync(path.join(tmp, 'mal-q.gguf'))), 'planted Q4_0 = malicious Q4_0');
  // full precision: the planted model is close to the benign one, the malicious one is not
  const kAtt = kldTo(att, GGUF);
  const kMal = kldTo(mal, GGUF);
  const kAttQ = kldTo(path.join(tmp, 'att-q.gguf'), GGUF);
  const kBenQ = kldTo(path.join(tmp, 'benign-q.gguf'), GGUF);
  // measured: planted fp 0.087, malicious fp 0.159, planted Q4_0 0.260, benign Q4_0 0.116
  assert.ok(kAtt < 0.7 * kMal && kAttQ > 1.5 * kBenQ, `planted fp ${kAtt}, malicious fp ${kMal}, planted Q4_0 ${kAttQ}, benign Q4_0 ${kBenQ}`);
  // the audit: clean exit 0, planted exit 3
  const clean = cli('audit', GGUF, '--types', 'Q4_0', '--pure', '--windows', '4', '--json');
  assert.equal(clean.status, 0, clean.stdout + clean.stderr);
  assert.equal(JSON.parse(clean.stdout).suspicious, false);
  // the second behaviour test, on 256 tokens the model generated (default --generate 256), at half the rate
  const cg = JSON.parse(clean.stdout).types[0];
  assert.equal(cg.generated.tokens, 256);
  assert.equal(cg.testFalsePositiveRate, 0.0005);
  assert.equal(cg.generated.kldNoisedAll.length, 16);
  assert.ok(cg.generated.kld > 0 && cg.generated.top1 > 0.5 && cg.generated.top1 < 1 && cg.generated.z < cg.generated.threshold, JSON.stringify(cg.generated));
  // the default edge sweep checks every legacy type stories260K's rows take and IQ4_NL (K types and IQ4_XS need rows of 256)
  assert.deepEqual(JSON.parse(clean.stdout).sweep.map((s: { type: string; suspicious: boolean }) => `${s.type} ${s.suspicious}`), ['Q4_0 false', 'Q4_1 false', 'Q5_0 false', 'Q5_1 false', 'Q8_0 false', 'IQ4_NL false']);
  const bad = cli('audit', GGUF, '--types', 'Q4_0', '--sweep', 'Q4_0,Q9_9');
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr.trim(), /^[^\n]*--sweep: Q9_9 is not one of/);
  const planted = cli('audit', att, '--types', 'Q4_0', '--pure', '--windows', '4', '--json');
  assert.equal(planted.status, 3, planted.stdout + planted.stderr);
  assert.equal(JSON.parse(planted.stdout).suspicious, true);
  // (this projection-only plant does not hide: flagged by its edges, its behaviour z is below zero on
  // the probe text and on the generated tokens alike: measured −2.4 and −1.2)
  assert.ok(Number.isFinite(JSON.parse(planted.stdout).types[0].generated.z));
  // the defence: noise before quantizing brings the quantized planted model back near the benign one
  const def = path.join(tmp, 'att-defended.gguf');
  assert.equal(cli('quantize', att, def, '--type', 'Q4_0', '--pure', '--defend', 'noise').status, 0);
  const kDef = kldTo(def, GGUF);
  assert.ok(kDef < 0.9 * kAttQ, `defended ${kDef} vs undefended ${kAttQ}`); // measured 0.210 vs 0.260
  // and costs a clean model little
  const cleanDef = path.join(tmp, 'benign-defended.gguf');
  assert.equal(cli('quantize', GGUF, cleanDef, '--type', 'Q4_0', '--pure', '--defend', 'noise').status, 0);
  assert.ok(kldTo(cleanDef, GGUF) < 1.3 * kBenQ); // measured 0.133 vs 0.116
});

test('a hidden IQ4_NL plant (PGD with the bytes kept) is flagged by the behaviour z-test, which the ratio and edge tests miss; clean IQ4_NL is not flagged', async () => {
  // stories260K's own IQ4_NL error is about as large as the planted change (KLD ~0.1 each), so the
  // quantized plant's KLD is only ~1.5x the noised quantizations' (ratio < 2) and PGD with keeps leaves
  // no edge pile-up: only the test against the spread of the noised KLDs over 16 seeds sees it
  const mal = path.join(tmp, 'malicious-0.25.gguf');
  await makeMalicious(mal, 0.25);
  const att = path.join(tmp, 'attacked-iq4nl.gguf');
  const r = cli('attack', GGUF, mal, att, '--type', 'IQ4_NL', '--pure', '--pgd-steps', '12', '--batch', '2', '--text', TEXT, '--box-fraction', '1', '--box-validate', 'none', '--keep-every', '1', '--fit-null-space', '--from-dequantized', '--json');
  assert.equal(r.status, 0, r.stderr);
  // a real plant: the malicious bytes under quantization, close to the benign model in full precision
  for (const [src, out] of [[att, 'att-iq.gguf'], [mal, 'mal-iq.gguf']]) assert.equal(cli('quantize', src, path.join(tmp, out), '--type', 'IQ4_NL', '--pure').status, 0);
  assert.ok(fs.readFileSync(path.join(tmp, 'att-iq.gguf')).equals(fs.readFileSync(path.join(tmp, 'mal-iq.gguf'))), 'planted IQ4_NL = malicious IQ4_NL');
  const kAtt = kldTo(att, GGUF);
  const kMal = kldTo(mal, GGUF);
  assert.ok(kAtt < 0.5 * kMal, `hidden: planted fp ${kAtt} vs malicious fp ${kMal}`); // measured 0.019 vs 0.098 (8 chunks)
  const audit = (file: string) => {
    const a = cli('audit', file, '--types', 'IQ4_NL', '--pure', '--windows', '4', '--sweep', 'none', '--json');
    assert.ok(a.status === 0 || a.status === 3, a.stderr);
    const j = JSON.parse(a.stdout);
    assert.equal(j.suspicious, a.status === 3);
    return j.types[0] as { suspicious: boolean; ratio: number; maxRowZ: number; behaviourZ: number; behaviourThreshold: number; kldNoisedAll: number[] };
  };
  const clean = audit(GGUF);
  assert.equal(clean.kldNoisedAll.length, 16);
  // two behaviour tests (probe text, generated continuations), each at half the 0.1 % rate: the t_15 quantile at 0.05 %
  assert.ok(clean.behaviourThreshold > 4.0 && clean.behaviourThreshold < 4.15, `t_15 quantile at 0.05 %: ${clean.behaviourThreshold}`);
  assert.ok(!clean.suspicious && clean.behaviourZ < 0, `clean IQ4_NL: z ${clean.behaviourZ}`); // measured -1.8
  const planted = audit(att);
  assert.ok(planted.ratio < 2 && planted.maxRowZ < 8, `ratio ${planted.ratio}, row z ${planted.maxRowZ}: the older tests alone would miss this plant`); // measured 1.48, 2.9
  assert.ok(planted.suspicious && planted.behaviourZ > planted.behaviourThreshold, `planted IQ4_NL: z ${planted.behaviourZ}`); // measured 6.2 (threshold 3.73)
});

test('generated continuations: the model\'s own samples, seeded; a tokenizer-less synthetic model audits clean on token ids', async () => {
  // a small synthetic llama (no tokenizer, no vocabulary)
  const synth = path.join(tmp, 'synthetic.gguf');
  const sink = memorySink();
  await writeSyntheticLlama(sink, { dim: 64, hidden: 128, layers: 2, vocab: 256, heads: 4, kvHeads: 4, seed: 5 });
  fs.writeFileSync(synth, sink.bytes());
  // generateContinuations samples from the model: its tokens are far likelier under the model than random ones
  const bytes = new Uint8Array(fs.readFileSync(GGUF));
  const src = { name: GGUF, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) };
  const { model } = await loadModel(src as never, { contextLength: 128 });
  const v = model.config.vocabSize;
  const prompts = randomTokenWindows(v, 2, 8, 3);
  const gen = generateContinuations(model, prompts, 100, 50, 4, 9);
  assert.deepEqual(gen.map((g) => g.length), [54, 54]);
  assert.deepEqual(gen.map((g) => Array.from(g.subarray(0, 4))), prompts.map((p) => Array.from(p.subarray(0, 4))));
  assert.deepEqual(generateContinuations(model, prompts, 100, 50, 4, 9), gen, 'same seed, same tokens');
  assert.notDeepEqual(generateContinuations(model, prompts, 100, 50, 4, 10), gen, 'another seed, other tokens');
  const meanLogProb = (seqs: Int32Array[]) => {
    let s = 0;
    let n = 0;
    for (const q of seqs) {
      const lg = model.forward(q, 0, 0);
      for (let t = 3; t < q.length - 1; t++) {
        const row = lg.subarray(t * v, (t + 1) * v);
        const mx = row.reduce((a, b) => Math.max(a, b), -Infinity);
        const lse = mx + Math.log(row.reduce((a, b) => a + Math.exp(b - mx), 0));
        s += row[q[t + 1]] - lse;
        n++;
      }
    }
    return s / n;
  };
  const random = gen.map((g, i) => Int32Array.from(g, (x, t) => (t < 4 ? x : randomTokenWindows(v, 1, g.length, 77 + i)[0][t])));
  const lpGen = meanLogProb(gen);
  const lpRandom = meanLogProb(random);
  assert.ok(lpGen > lpRandom + 3, `generated ${lpGen} vs random ${lpRandom} nats/token`);
  // the CLI on the synthetic model: random token windows and generated continuations, clean, the same bytes twice
  const args = ['audit', synth, '--types', 'Q4_0,IQ4_NL', '--pure', '--windows', '2', '--ctx', '64', '--generate', '96', '--sweep', 'none', '--json'];
  const a = cli(...args);
  assert.equal(a.status, 0, a.stdout + a.stderr);
  const j = JSON.parse(a.stdout);
  assert.equal(j.suspicious, false);
  assert.equal(j.probe, 'random tokens');
  for (const t of j.types) {
    assert.equal(t.generated.tokens, 96);
    assert.ok(Number.isFinite(t.behaviourZ) && t.behaviourZ < t.behaviourThreshold && t.generated.z < t.generated.threshold, `${t.type}: z ${t.behaviourZ}, generated z ${t.generated.z}`);
  }
  assert.equal(cli(...args).stdout, a.stdout, 'deterministic');
  // --generate 0: no generated test, the probe test at the whole rate
  const off = JSON.parse(cli('audit', synth, '--types', 'Q4_0', '--pure', '--windows', '2', '--ctx', '64', '--generate', '0', '--sweep', 'none', '--json').stdout).types[0];
  assert.equal(off.generated, undefined);
  assert.equal(off.testFalsePositiveRate, 0.001);
  // --text on a model without a tokenizer: one line, exit 2
  const bad = cli('audit', synth, '--types', 'Q4_0', '--text', TEXT);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr.trim(), /^[^\n]*carries no vocabulary to tokenize --text/);
});
