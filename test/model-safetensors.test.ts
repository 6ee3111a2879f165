import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { generate } from '../src/eval/generate.js';
import { llamaFromSafetensors, loadModel } from '../src/eval/load.js';
import { convertModel } from '../src/io/convert.js';
import { hfConfigFromHparams } from '../src/io/hf-llama.js';
import { openLlama2c } from '../src/io/llama2c.js';
import { openModelFile } from '../src/io/model-file.js';
import { bytesSource } from '../src/io/source.js';
import { parseTokenizerBin } from '../src/io/vocab.js';
import { Tokenizer } from '../src/model/tokenizer.js';

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));

test('a Hugging Face safetensors checkpoint (q/k rows in HF order) runs like the original', async () => {
  // stories260K.bin -> HF safetensors + config.json, written by lowbit's converter (q/k permuted to HF order)
  const src = await openModelFile(bytesSource(data('stories260K.bin'), 'stories260K.bin'), { llama2c: openLlama2c });
  const parts: Uint8Array[] = [];
  await convertModel(src, { write: (b) => void parts.push(b.slice()) }, { to: 'safetensors' });
  const hfConfig = hfConfigFromHparams({ vocabSize: 512, dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, seqLen: 512, normEps: 1e-5 });
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((o, p) => (bytes.set(p, o), o + p.length), 0);
  const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
  assert.equal(st.format, 'safetensors');
  assert.ok(st.tensors.some((t) => t.name === 'model.layers.0.self_attn.q_proj.weight'));
  // the stored q rows really are in HF order (differ from the llama2.c/GGUF order)
  const q = await st.read(st.tensor('model.layers.0.self_attn.q_proj.weight'));
  const qGguf = (await src.read(src.tensor('blk.0.attn_q.weight')));
  assert.equal(q.length, qGguf.length);
  assert.notDeepEqual(new Uint8Array(q), new Uint8Array(qGguf));
  const model = await llamaFromSafetensors(st, hfConfig);
  const tok = new Tokenizer(parseTokenizerBin(data('tok512.bin')));
  const orig = await loadModel(bytesSource(data('stories260K.bin'), 'stories260K.bin'), { tokenizer: bytesSource(data('tok512.bin'), 'tok512.bin') });
  const prompt = tok.encode('Once upon a time, there was a little girl');
  assert.deepEqual(model.forward(prompt, 0, 0), orig.model.forward(prompt, 0, 0));
  const a = generate(model, tok, 'Once upon a time', { steps: 40, temperature: 0 });
  assert.ok(a.text.startsWith(', there was a little girl named Lily.'));
  // through loadModel, which needs the config
  await assert.rejects(loadModel(bytesSource(bytes, 'model.safetensors')), /needs its config.json/);
  const viaLoad = await loadModel(bytesSource(bytes, 'model.safetensors'), { hfConfig: hfConfig });
  assert.equal(viaLoad.format, 'safetensors');
});
