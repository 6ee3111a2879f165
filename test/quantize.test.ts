/**
 * lowbit quantize: planning, the bytes it writes, determinism, read-back by lowbit's runtime, the
 * CLI's error handling, and that llama.cpp (node-llama-cpp 3.22.1) loads every GGUF type the quickstart
 * writes and computes the same next-token distribution as lowbit's runtime on the same file.
 * Tolerance for that comparison: llama.cpp quantizes activations to 8 bits inside its quantized
 * matmuls (vec_dot with Q8_0/Q8_K activations) while lowbit multiplies in f32, so logits agree only
 * approximately: max |Δlogit| < 0.5 and the same argmax on a 9-token prompt (measured values printed).
 */
import { QUICKSTART_VARIANTS } from '../scripts/quickstart-variants.js';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { llamaRecipe, schemeRecipe, type Recipe } from '../src/algos/recipe.js';
import { fileSource } from '../src/cli/node-source.js';
import { loadModel } from '../src/eval/load.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { toFloat32 } from '../src/io/tensor-data.js';
import { planQuantization, quantize } from '../src/pipeline/quantize.js';
import { ggmlCodec } from '../src/quant/ggml/index.js';
import { evaluateAgainst, evaluateBase } from '../src/pipeline/evaluate.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DATA = path.join(ROOT, 'data');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-quantize-'));
const GGUF = path.join(DATA, 'stories260K.gguf');

async function quantizeBytes(recipe: Recipe, kind: 'gguf' | 'safetensors'): Promise<Uint8Array> {
  const src = fileSource(GGUF);
  try {
    const m = await openModelFile(src);
    const sink = memorySink();
    await quantize(m, recipe, sink, { output: kind });
    return sink.bytes();
  } finally {
    src.close();
  }
}

// every round-to-nearest GGUF the quickstart writes, plus IQ4_NL (the GPTQ one: test/ptq.test.ts loads GPTQ GGUFs in llama.cpp)
const RECIPES: [string, Recipe][] = [
  ...QUICKSTART_VARIANTS.filter((v) => v[2] === 'gguf' && !v[1].algorithm).map(([label, recipe]): [string, Recipe] => [label, recipe]),
  ['IQ4_NL', schemeRecipe('ggml_iq4_nl')],
];

test('every quantized tensor holds exactly the codec bytes of its float rows; output is deterministic', async () => {
  const orig = await openModelFile(fileSource(GGUF));
  for (const [label, recipe] of RECIPES) {
    const bytes = await quantizeBytes(recipe, 'gguf');
    assert.deepEqual(await quantizeBytes(recipe, 'gguf'), bytes, `${label}: same input and recipe -> same bytes`);
    const q = await openModelFile(bytesSource(bytes, label));
    assert.equal(q.tensors.length, orig.tensors.length);
    for (const t of q.tensors) {
      const o = orig.tensor(t.name);
      assert.deepEqual(t.ne, o.ne, `${label} ${t.name} shape`);
      const x = toFloat32('F32', await orig.read(o));
      const stored = await q.read(t);
      if (t.type === 'F32') assert.deepEqual(stored, await orig.read(o));
      else if (t.type !== 'F16') {
        const c = ggmlCodec(t.type)!;
        const expect = new Uint8Array(stored.length);
        c.quantize!(x, x.length / t.ne![0], t.ne![0], expect);
        assert.deepEqual(stored, expect, `${label} ${t.name} (${t.type})`);
      }
    }
    if (recipe.llama) assert.ok(q.metadata.has('general.file_type'));
  }
});

test('llama.cpp mixtures on stories260K: shape fallbacks as llama-quantize chooses them', async () => {
  const m = await openModelFile(fileSource(GGUF));
  const plan = planQuantization(m, llamaRecipe('Q4_K_M'), 'gguf');
  const to = (n: string) => plan.tensors.find((t) => t.name === n)!.to;
  assert.equal(to('blk.0.attn_q.weight'), 'Q5_0'); // Q4_K needs rows of 256: falls back to Q5_0
  assert.equal(to('blk.2.attn_v.weight'), 'Q8_0'); // use_more_bits layer: Q6_K -> Q8_0
  assert.equal(to('blk.0.ffn_down.weight'), 'F16'); // rows of 172 fit no block
  assert.equal(to('output.weight'), 'Q8_0');
  assert.equal(to('output_norm.weight'), 'F32');
});

test('generic schemes to safetensors read back by the runtime, and quality is measured', async () => {
  const file = path.join(tmp, 'int4.safetensors');
  fs.writeFileSync(file, await quantizeBytes(schemeRecipe('int4', { groupSize: 32 }), 'safetensors'));
  const base = await evaluateBase(fileSource(GGUF), fs.readFileSync(path.join(DATA, 'tinystories-valid-head.txt'), 'utf8').slice(0, 20000), { ctx: 128, chunks: 4 });
  const r = await evaluateAgainst(fileSource(file), base, { ctx: 128, chunks: 4 });
  assert.ok(r.kld && r.kld.mean > 0.01 && r.kld.mean < 0.5, `int4 g32 KLD ${r.kld?.mean}`);
  assert.ok(r.top1! > 0.7, `top-1 ${r.top1}`);
  const q8 = path.join(tmp, 'q8.gguf');
  fs.writeFileSync(q8, await quantizeBytes(llamaRecipe('Q8_0'), 'gguf'));
  const r8 = await evaluateAgainst(fileSource(q8), base, { ctx: 128, chunks: 4 });
  assert.ok(r8.kld!.mean < r.kld!.mean / 10, `Q8_0 KLD ${r8.kld!.mean} vs int4 ${r.kld!.mean}`);
});

function cli(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
}

test('quantize CLI: clear errors, exit 2, nothing written', () => {
  const out = path.join(tmp, 'bad.gguf');
  const cases: [string[], RegExp][] = [
    [[GGUF, out, '--type', 'Q9_Z'], /unknown type 'Q9_Z' \(llama.cpp file types: .*Q4_K_M/],
    [[GGUF, GGUF, '--type', 'Q8_0'], /is the input file/],
    [[GGUF, out], /needs --type/],
    [[GGUF, path.join(tmp, 'x.bin'), '--type', 'Q8_0'], /extension must be .gguf or .safetensors/],
    [[GGUF, out, '--type', 'Q8_0', '--imatrix', path.join(tmp, 'missing.dat')], /does not exist/],
    [[GGUF, out, '--type', 'Q4_0', '--tensor-type', 'attn_v=q9_0'], /unknown or unwritable GGML type 'q9_0'/],
    [[path.join(tmp, 'nope.gguf'), out, '--type', 'Q8_0'], /does not exist/],
  ];
  for (const [args, re] of cases) {
    const r = cli('quantize', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: exit ${r.status} ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.ok(!fs.existsSync(out), 'no output file');
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), [], 'no temp file left');
  }
  const dry = cli('quantize', GGUF, '--type', 'Q4_K_M', '--dry-run', '--json');
  assert.equal(dry.status, 0, dry.stderr);
  assert.equal(JSON.parse(dry.stdout).tensors.length, 48);
  const ok = cli('quantize', GGUF, path.join(tmp, 'ok.gguf'), '--type', 'Q4_0', '--json');
  assert.equal(ok.status, 0, ok.stderr);
  const rep = JSON.parse(ok.stdout);
  assert.ok(rep.bitsPerWeight > 4 && rep.bitsPerWeight < 8 && rep.tensors.length === 48);
});

test('llama.cpp loads every quantized GGUF and agrees with lowbit on the next-token logits', async (t) => {
  const loaded = await loadLlamaCpp();
  if (typeof loaded === 'string') {
    t.skip(loaded);
    return;
  }
  const llama = loaded.llama;
  const prompt = [1, 403, 407, 261, 378, 285, 271, 434, 320];
  for (const [label, recipe] of RECIPES) {
    const file = path.join(tmp, `${label}.gguf`);
    fs.writeFileSync(file, await quantizeBytes(recipe, 'gguf'));
    const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
    let theirs: Float64Array;
    try {
      const ctx = await model.createContext({ contextSize: 64, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
      const seq = ctx.getSequence();
      const res = await seq.controlledEvaluate(prompt.map((tk, i) => (i === prompt.length - 1 ? [tk, { generateNext: { logits: true } }] : tk)));
      theirs = new Float64Array(512);
      for (const [tok, v] of res[prompt.length - 1].next.logits as Map<number, number>) theirs[tok] = v;
      await ctx.dispose();
    } finally {
      await model.dispose();
    }
    const ours = await loadModel(fileSource(file), { contextLength: 64 });
    const logits = ours.model.forward(prompt, 0, prompt.length - 1);
    let maxDiff = 0;
    let a = 0;
    let b = 0;
    for (let i = 0; i < 512; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(logits[i] - theirs[i]));
      if (logits[i] > logits[a]) a = i;
      if (theirs[i] > theirs[b]) b = i;
    }
    t.diagnostic(`${label}: max |Δlogit| lowbit vs llama.cpp = ${maxDiff.toFixed(4)}`);
    assert.ok(maxDiff < 0.5, `${label}: max |Δlogit| ${maxDiff}`);
    assert.equal(a, b, `${label}: argmax differs`);
  }
});
