/**
 * Real client: every GGUF lowbit writes must load in llama.cpp (node-llama-cpp 3.22.1, CPU build) and
 * give the reference file's next-token logits.
 *  - F32 (llama2.c -> GGUF with tok512.bin or tok512.model, and GGUF -> HF safetensors -> GGUF through
 *    the q/k permutation both ways):
 *    same weights, same graph -> logits must be bit-identical (tolerance 0).
 *  - F16 / BF16: weights are rounded (RNE, like ggml's own conversion), so logits differ from F32;
 *    bound: max |Δlogit| < 0.05 (F16) / 0.25 (BF16), and the same argmax token. Measured values are printed.
 *    When python3 + numpy and llama.cpp's gguf-py are available, scripts/gguf-f16-reference.py makes
 *    llama.cpp's own F16/BF16 conversion (convert_hf_to_gguf's casts); then every tensor must be
 *    byte-identical to ours and the logits exactly equal (tolerance 0).
 */
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { convertModel, tokenizerFromLlama2c, tokenizerFromVocab, type ConvertOptions } from '../src/io/convert.js';
import { parseSentencepieceModel } from '../src/io/vocab.js';
import { memorySink } from '../src/io/sink.js';
import { openModelPath } from '../src/cli/model-open.js';
import { loadLlamaCpp } from '../scripts/llama-tools.js';

const DATA = path.resolve(import.meta.dirname, '../../data');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-llama-cpp-'));

async function convertFile(input: string, output: string, opts: ConvertOptions): Promise<void> {
  const { model, close } = await openModelPath(input);
  try {
    const sink = memorySink();
    await convertModel(model, sink, opts);
    fs.writeFileSync(output, sink.bytes());
  } finally {
    close();
  }
}

async function loadLlama(): Promise<unknown> {
  const loaded = await loadLlamaCpp();
  return typeof loaded === 'string' ? loaded : loaded.llama;
}

const PROMPT_TOKENS = [1, 403, 407, 261, 378, 285, 271, 434, 320]; // BOS + a few tokens of the 512 vocab

async function logits(llama: any, file: string): Promise<Float64Array> {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    const ctx = await model.createContext({ contextSize: 64, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
    try {
      const seq = ctx.getSequence();
      const items = PROMPT_TOKENS.map((t, i) => (i === PROMPT_TOKENS.length - 1 ? [t, { generateNext: { logits: true } }] : t));
      const res = await seq.controlledEvaluate(items);
      const map: Map<number, number> = res[PROMPT_TOKENS.length - 1].next.logits;
      const out = new Float64Array(model.tokens ? 512 : 512);
      for (const [tok, v] of map) out[tok] = v;
      return out;
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
const argmax = (a: Float64Array) => a.reduce((bi, v, i) => (v > a[bi] ? i : bi), 0);

test('GGUF files lowbit writes load in llama.cpp with the reference logits', async (t) => {
  const llama = await loadLlama();
  if (typeof llama === 'string') {
    t.skip(llama);
    return;
  }
  const tok = tokenizerFromLlama2c(fs.readFileSync(path.join(DATA, 'tok512.bin')), 512);
  const files = {
    f32: path.join(tmp, 'f32.gguf'),
    st: path.join(tmp, 'model.safetensors'),
    back: path.join(tmp, 'back.gguf'),
    f16: path.join(tmp, 'f16.gguf'),
    bf16: path.join(tmp, 'bf16.gguf'),
    spm: path.join(tmp, 'spm.gguf'),
  };
  await convertFile(path.join(DATA, 'stories260K.bin'), files.spm, { to: 'gguf', tokenizer: tokenizerFromVocab(parseSentencepieceModel(fs.readFileSync(path.join(DATA, 'tok512.model')))) });
  await convertFile(path.join(DATA, 'stories260K.bin'), files.f32, { to: 'gguf', tokenizer: [...tok.head, ...tok.special] });
  await convertFile(path.join(DATA, 'stories260K.gguf'), files.st, { to: 'safetensors' });
  fs.writeFileSync(
    path.join(tmp, 'config.json'),
    JSON.stringify({ model_type: 'llama', vocab_size: 512, hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 2048, rms_norm_eps: 1e-5 }),
  );
  await convertFile(files.st, files.back, { to: 'gguf', tokenizer: [...tok.head, ...tok.special], hfConfig: JSON.parse(fs.readFileSync(path.join(tmp, 'config.json'), 'utf8')) });
  await convertFile(path.join(DATA, 'stories260K.gguf'), files.f16, { to: 'gguf', type: 'F16' });
  await convertFile(path.join(DATA, 'stories260K.gguf'), files.bf16, { to: 'gguf', type: 'BF16' });

  const ref = await logits(llama, path.join(DATA, 'stories260K.gguf'));
  assert.ok(ref.some((v) => v !== 0), 'reference logits are all zero');
  const f32 = await logits(llama, files.f32);
  const back = await logits(llama, files.back);
  const f16 = await logits(llama, files.f16);
  const bf16 = await logits(llama, files.bf16);
  const spm = await logits(llama, files.spm);
  assert.equal(maxAbsDiff(ref, spm), 0, 'llama2.c + sentencepiece tokenizer.model must give identical logits');
  const d = { f32: maxAbsDiff(ref, f32), back: maxAbsDiff(ref, back), f16: maxAbsDiff(ref, f16), bf16: maxAbsDiff(ref, bf16) };
  t.diagnostic(`max |Δlogit| vs stories260K.gguf: llama2c->F32 ${d.f32}, via safetensors ${d.back}, F16 ${d.f16.toExponential(3)}, BF16 ${d.bf16.toExponential(3)}`);
  assert.equal(d.f32, 0, 'F32 conversion of llama2.c must give identical logits');
  assert.equal(d.back, 0, 'GGUF -> safetensors -> GGUF (q/k permuted both ways) must give identical logits');
  assert.ok(d.f16 < 0.05, `F16 max |Δlogit| ${d.f16}`);
  assert.ok(d.bf16 < 0.25, `BF16 max |Δlogit| ${d.bf16}`);
  assert.equal(argmax(f16), argmax(ref));
  assert.equal(argmax(bf16), argmax(ref));

  const script = path.resolve(import.meta.dirname, '../../scripts/gguf-f16-reference.py');
  for (const [kind, ours, ourLogits] of [['f16', files.f16, f16], ['bf16', files.bf16, bf16]] as const) {
    const refFile = path.join(tmp, `llama-cpp-${kind}.gguf`);
    const py = spawnSync('python3', [script, path.join(DATA, 'stories260K.gguf'), refFile, kind], { encoding: 'utf8' });
    if (py.status !== 0) {
      t.diagnostic(`llama.cpp ${kind} reference not made (python3/numpy/gguf-py unavailable): ${py.stderr?.split('\n').filter(Boolean).pop() ?? py.error}`);
      continue;
    }
    const { model: a, close: ca } = await openModelPath(ours);
    const { model: b, close: cb } = await openModelPath(refFile);
    for (const x of a.tensors) {
      const y = b.tensor(x.name);
      assert.equal(x.type, y.type, x.name);
      assert.deepEqual(await a.read(x), await b.read(y), `${kind} ${x.name} differs from llama.cpp's conversion`);
    }
    ca();
    cb();
    const d2 = maxAbsDiff(await logits(llama, refFile), ourLogits);
    t.diagnostic(`${kind}: all tensors byte-identical to llama.cpp's gguf-py conversion; max |Δlogit| ${d2}`);
    assert.equal(d2, 0);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});
