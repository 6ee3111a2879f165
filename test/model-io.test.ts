import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { LowbitError } from '../src/errors.js';
import { readLlama2c } from '../src/io/llama2c.js';
import { bytesSource } from '../src/io/source.js';
import { parseSentencepieceModel, parseTokenizerBin, readVocab, vocabFromGgufMetadata } from '../src/io/vocab.js';
import { TokenType } from '../src/model/types.js';

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));

test('llama2.c stories260K: header, GGUF names and dims, every tensor byte-identical to the GGUF copy', async () => {
  const m = await readLlama2c(bytesSource(data('stories260K.bin'), 'stories260K.bin'));
  assert.deepEqual(
    [m.config.dim, m.config.hiddenDim, m.config.nLayers, m.config.nHeads, m.config.nKvHeads, m.config.vocabSize, m.config.seqLen],
    [64, 172, 5, 8, 4, 512, 512],
  );
  assert.equal(m.sharedClassifier, true);
  assert.equal(m.tensors.length, 2 + 5 * 9);
  const k = m.tensors.find((t) => t.name === 'blk.3.attn_k.weight')!;
  assert.deepEqual(k.dims, [64, 32]);
  assert.equal(k.data.length, 64 * 32 * 4);
  const gguf = Buffer.from(data('stories260K.gguf'));
  for (const t of m.tensors) assert.ok(gguf.indexOf(Buffer.from(t.data)) >= 0, `${t.name} not found in the GGUF file`);
});

test('llama2.c reader rejects bad files with clear errors', async () => {
  const good = data('stories260K.bin');
  const bad = async (bytes: Uint8Array, re: RegExp) => assert.rejects(readLlama2c(bytesSource(bytes, 'x.bin')), (e: unknown) => e instanceof LowbitError && re.test(e.message));
  await bad(good.subarray(0, 10), /too short/);
  await bad(good.subarray(0, good.length - 4), /does not match the header/);
  const extra = new Uint8Array(good.length + 4);
  extra.set(good);
  await bad(extra, /does not match the header/);
  const h = good.slice(0, 4096);
  new DataView(h.buffer).setInt32(12, 7, true); // n_heads 7 does not divide dim 64
  await bad(h, /n_heads/);
  const magic = good.slice(0, 64);
  new DataView(magic.buffer).setUint32(0, 0x616b3432, true);
  await bad(magic, /ak42/);
});

test('tokenizer.bin and tokenizer.model give the same vocabulary (tok512 and Llama 2)', async () => {
  for (const [bin, model, n] of [['tok512.bin', 'tok512.model', 512], ['tokenizer.bin', 'tokenizer.model', 32000]] as const) {
    const a = parseTokenizerBin(data(bin), bin, n);
    const b = parseSentencepieceModel(data(model), model);
    assert.equal(b.tokens.length, n);
    assert.deepEqual(a.tokens, b.tokens);
    assert.deepEqual(a.scores, b.scores);
    assert.deepEqual(a.types, b.types);
    assert.deepEqual([b.unk, b.bos, b.eos, b.addSpacePrefix], [0, 1, 2, true]);
    assert.equal(b.types[3], TokenType.BYTE);
    assert.equal(b.tokens[3], '<0x00>');
    const c = await readVocab(bytesSource(data(model), model));
    assert.deepEqual(c.tokens, b.tokens);
  }
  assert.throws(() => parseTokenizerBin(data('tok512.bin').subarray(0, 100), 'tok512.bin', 512), /truncated|bad length|has [0-9]+ tokens/);
  assert.throws(() => parseSentencepieceModel(data('tok512.model').subarray(0, 100)), /protobuf|runs past/);
});

test('vocabulary from GGUF metadata', () => {
  const sp = parseSentencepieceModel(data('tok512.model'));
  const v = vocabFromGgufMetadata({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': sp.tokens,
    'tokenizer.ggml.scores': Array.from(sp.scores),
    'tokenizer.ggml.token_type': Array.from(sp.types),
    'tokenizer.ggml.bos_token_id': 1,
    'tokenizer.ggml.eos_token_id': 2,
    'tokenizer.ggml.unknown_token_id': 0,
  });
  assert.deepEqual(v.tokens, sp.tokens);
  assert.deepEqual(v.types, sp.types);
  assert.throws(() => vocabFromGgufMetadata({ 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['a'] }), /not supported/);
  assert.throws(() => vocabFromGgufMetadata({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'] }), /no tokenizer.ggml.pre/);
  assert.throws(() => vocabFromGgufMetadata({ 'tokenizer.ggml.tokens': ['a', 'b'], 'tokenizer.ggml.scores': [1] }), /array of 2/);
});

test('runtime loading goes through the one reader per container: llama2.c and GGUF via ModelFile, same logits', async () => {
  const { loadModel } = await import('../src/eval/load.js');
  const { Llama } = await import('../src/model/llama.js');
  const { openModelFile, storedTensors } = await import('../src/io/model-file.js');
  const { openLlama2c } = await import('../src/io/llama2c.js');
  const prompt = [1, 403, 407, 261, 378];
  const bin = await loadModel(bytesSource(data('stories260K.bin'), 'stories260K.bin'));
  const gguf = await loadModel(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  assert.equal(bin.format, 'llama2c');
  // the runtime built by hand from the reader's tensors (kernel memory not involved: plain arrays)
  const m = await openModelFile(bytesSource(data('stories260K.bin'), 'stories260K.bin'), { llama2c: openLlama2c });
  const tensors = await storedTensors(m);
  assert.equal(tensors.length, 2 + 5 * 9);
  const byHand = new Llama((await readLlama2c(bytesSource(data('stories260K.bin'), 'x.bin'))).config, tensors);
  const a = Float32Array.from(bin.model.forward(prompt, 0));
  assert.deepEqual(a, Float32Array.from(byHand.forward(prompt, 0)));
  assert.deepEqual(a, Float32Array.from(gguf.model.forward(prompt, 0)), 'the llama2.c file and its GGUF copy run the same');
  // a tensor type the runtime cannot take is one clear error
  await assert.rejects(storedTensors({ ...m, tensors: [{ ...m.tensors[0], type: 'F8_E4M3' }] }), /not a GGML tensor/);
});
