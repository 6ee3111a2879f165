/**
 * Calibration per family on the seeded random models of scripts/family-models.ts (pre-norm gains with
 * outlier channels, as trained models have):
 *  - GPTQ and AWQ (Q4_0, 512 calibration tokens) beat plain RTN in KL divergence against the F32 model
 *    for Llama 3 (rope_freqs), Qwen 2 (q/k/v biases: AWQ's v->o scale divides v's bias too), Gemma 2
 *    (post-attention / post-FFN norms in the residual updates), Phi-3 (fused attn_qkv and gate|up: one
 *    Hessian per fused tensor, AWQ's v->o and up->down scales into row ranges of the fused tensors) and
 *    Qwen3-MoE (each expert calibrated with the rows routed to it; the router stays F32 and takes the
 *    ffn_norm scales), and the GPTQ file loads and runs in llama.cpp;
 *  - mixture of experts: lowbit imatrix keeps one block of statistics and one count per expert (llama-
 *    imatrix's layout), the counts add up to tokens x experts used, and a per-expert-weighted IQ4_XS
 *    file loads in llama.cpp;
 *  - refusals (exit 2, nothing written): Hadamard rotation of Gemma (post-norms make it not
 *    function-preserving), of MoE and of fused tensors (the rotation does not cover them).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { familyModel, familyVocab, type Family } from '../scripts/family-models.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { writeGguf } from '../src/io/gguf.js';
import { memorySink } from '../src/io/sink.js';
import { collectImatrix } from '../src/pipeline/imatrix-collect.js';
import type { Vocab } from '../src/model/types.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const DATA = (f: string) => new URL(`../../data/${f}`, import.meta.url);
const STORIES = readFileSync(DATA('tinystories-valid-head.txt'), 'utf8');
const WIKI = readFileSync(DATA('wikitext-2-test.raw'), 'utf8');
const CLI = new URL('../../bin/lowbit.js', import.meta.url).pathname;

const vocabFor = (f: Family): Vocab => familyVocab(f, new URL('../../data/', import.meta.url));

async function writeFamily(dir: string, f: Family): Promise<string> {
  const m = familyModel(f, vocabFor(f), 3);
  const sink = memorySink();
  await writeGguf(sink, m.metadata, m.tensors);
  const file = join(dir, `${f}.gguf`);
  writeFileSync(file, sink.bytes());
  return file;
}

function lowbit(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

async function loadsInLlamaCpp(file: string): Promise<string | undefined> {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') return loaded;
  const llama = loaded.llama;
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    const ctx = await model.createContext({ contextSize: 64, threads: 1 });
    const seq = ctx.getSequence();
    const r: { next: { logits: Map<number, number> } }[] = await seq.controlledEvaluate([1, [2, { generateNext: { logits: true } }]]);
    const logits = [...r[1].next.logits.values()];
    assert.ok(logits.length > 0 && logits.every(Number.isFinite), `${file}: llama.cpp gives finite logits`);
    await ctx.dispose();
  } finally {
    await model.dispose();
  }
  return undefined;
}

test('GPTQ and AWQ beat RTN on Llama 3, Qwen 2, Gemma 2, Phi-3 and Qwen3-MoE, and the GPTQ files run in llama.cpp', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-famcal-'));
  try {
    const calib = join(dir, 'calib.txt');
    writeFileSync(calib, STORIES.slice(0, 30_000));
    for (const f of ['llama3', 'qwen2', 'gemma2', 'phi3', 'qwen3moe'] as const) {
      const file = await writeFamily(dir, f);
      const kld: Record<string, number> = {};
      for (const algo of ['rtn', 'gptq', 'awq']) {
        const out = join(dir, `${f}-${algo}.gguf`);
        const calibArgs = algo === 'rtn' ? [] : ['--calib', calib, '--calib-tokens', '512', '--calib-ctx', '128'];
        const r = lowbit(['quantize', file, out, '--type', 'Q4_0', '--algo', algo, ...calibArgs, '--eval', calib, '--eval-ctx', '128', '--eval-chunks', '3', '--threads', '2', '--json']);
        assert.equal(r.status, 0, `${f} ${algo}: ${r.stderr}`);
        kld[algo] = (JSON.parse(r.stdout) as { evaluation: { kld: { mean: number } } }).evaluation.kld.mean;
        if (algo === 'gptq') {
          const skip = await loadsInLlamaCpp(out);
          if (skip) t.diagnostic(skip);
        }
      }
      t.diagnostic(`${f}: KLD vs F32 (Q4_0): RTN ${kld.rtn.toFixed(4)}, GPTQ ${kld.gptq.toFixed(4)}, AWQ ${kld.awq.toFixed(4)}`);
      assert.ok(kld.gptq < kld.rtn, `${f}: GPTQ ${kld.gptq} should beat RTN ${kld.rtn}`);
      assert.ok(kld.awq < kld.rtn, `${f}: AWQ ${kld.awq} should beat RTN ${kld.rtn}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('MoE: imatrix per expert (llama-imatrix layout), weighted quantization runs in llama.cpp', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-famcal-moe-'));
  try {
    const file = await writeFamily(dir, 'qwen3moe');
    const { model, tokenizer } = await loadModel(fileSource(file), { kernels: 'reference', contextLength: 64 });
    const tokens = tokenizer!.encode(STORIES.slice(0, 6000));
    const r = collectImatrix(model, tokens, { ctx: 64, chunks: 4, bos: tokenizer!.vocab.bos, addBos: tokenizer!.vocab.addBos });
    const nExp = model.config.nExperts!;
    const used = model.config.nExpertsUsed!;
    for (let l = 0; l < model.config.nLayers; l++) {
      const router = r.imatrix.entries.get(`blk.${l}.ffn_gate_inp.weight`)!;
      assert.deepEqual(Array.from(router.counts), [r.tokens], 'the router sees every token');
      const gate = r.imatrix.entries.get(`blk.${l}.ffn_gate_exps.weight`)!;
      const up = r.imatrix.entries.get(`blk.${l}.ffn_up_exps.weight`)!;
      const down = r.imatrix.entries.get(`blk.${l}.ffn_down_exps.weight`)!;
      assert.equal(gate.counts.length, nExp);
      assert.equal(gate.sums.length, model.config.dim * nExp);
      assert.equal(down.sums.length, model.config.expertHiddenDim! * nExp);
      assert.equal(gate.counts.reduce((a, b) => a + b, 0), r.tokens * used, 'each token counts for each expert it is routed to');
      assert.deepEqual(Array.from(up.sums), Array.from(gate.sums), 'gate and up read the same rows');
      assert.deepEqual(Array.from(down.counts), Array.from(gate.counts));
      t.diagnostic(`layer ${l}: tokens per expert ${Array.from(gate.counts).join(', ')}`);
    }
    const im = join(dir, 'imatrix.gguf');
    const text = join(dir, 'text.txt');
    writeFileSync(text, STORIES.slice(0, 6000));
    let q = lowbit(['imatrix', file, '--text', text, '-o', im, '--ctx', '64', '--chunks', '4']);
    assert.equal(q.status, 0, q.stderr);
    const out = join(dir, 'iq4.gguf');
    q = lowbit(['quantize', file, out, '--type', 'IQ4_XS', '--imatrix', im]);
    assert.equal(q.status, 0, q.stderr);
    const skip = await loadsInLlamaCpp(out);
    if (skip) t.diagnostic(skip);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('calibration refusals: Hadamard rotation of MoE, fused Phi-3 and Gemma: exit 2, nothing written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-famcal-bad-'));
  try {
    const calib = join(dir, 'calib.txt');
    writeFileSync(calib, STORIES.slice(0, 20_000));
    const cases: [Family, string[], RegExp][] = [
      ['qwen3moe', ['--rotate', 'hadamard'], /--rotate hadamard: qwen3moe is a mixture of experts; the rotation does not cover its router and experts/],
      ['phi3', ['--rotate', 'hadamard'], /--rotate hadamard: phi3 stores fused attn_qkv; the rotation does not cover fused tensors/],
      ['gemma2', ['--rotate', 'hadamard'], /--rotate hadamard: (gemma2's post-attention and post-FFN RMSNorms .*not function-preserving|the model ties its output)/],
    ];
    for (const [f, args, pattern] of cases) {
      const file = await writeFamily(dir, f);
      const out = join(dir, `${f}-out.gguf`);
      const r = lowbit(['quantize', file, out, '--type', 'Q4_0', ...args, '--calib', calib, '--calib-tokens', '256', '--calib-ctx', '64']);
      assert.equal(r.status, 2, `${f}: exit ${r.status}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.ok(!existsSync(out), `${f}: nothing written`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
