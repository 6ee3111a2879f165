import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadModel } from '../src/eval/load.js';
import { logitsFileBase, modelBase, percentile, perplexity } from '../src/eval/perplexity.js';
import { readLlama2c } from '../src/io/llama2c.js';
import { bytesSource } from '../src/io/source.js';
import { parseTokenizerBin } from '../src/io/vocab.js';
import { Llama } from '../src/model/llama.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import type { StoredTensor } from '../src/model/types.js';
import { f32ToF16 } from '../src/formats/half.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

const dataUrl = (f: string) => new URL(`../../data/${f}`, import.meta.url);
const data = (f: string) => new Uint8Array(readFileSync(dataUrl(f)));

const bin = await readLlama2c(bytesSource(data('stories260K.bin'), 'stories260K.bin'));
const tok = new Tokenizer(parseTokenizerBin(data('tok512.bin')));
const text = readFileSync(dataUrl('tinystories-valid-head.txt'), 'utf8');
const tokens = tok.encode(text.slice(0, 20000)); // about 10k tokens
const CTX = 128;
const CHUNKS = 4;

/** An independent computation: one token at a time, plain log-softmax in float64, second half scored. */
function referenceNll(ids: number[], ctx: number, chunks: number): { nll: number; count: number } {
  let sum = 0;
  let count = 0;
  for (let c = 0; c < chunks; c++) {
    const m = new Llama(bin.config, bin.tensors, { contextLength: ctx });
    const chunk = ids.slice(c * ctx, (c + 1) * ctx);
    chunk[0] = 1; // BOS
    for (let p = 0; p < ctx - 1; p++) {
      const logits = Array.from(m.forward([chunk[p]], p));
      if (p < ctx / 2) continue;
      const max = Math.max(...logits);
      const lse = max + Math.log(logits.reduce((s, v) => s + Math.exp(v - max), 0));
      sum += lse - logits[ids[c * ctx + p + 1]];
      count++;
    }
  }
  return { nll: sum / count, count };
}

test('perplexity follows llama-perplexity: BOS per chunk, second half scored; equals an independent computation', async () => {
  const m = new Llama(bin.config, bin.tensors, { contextLength: CTX });
  const r = await perplexity(m, tokens, { ctx: CTX, chunks: CHUNKS, bos: 1, addBos: true });
  const ref = referenceNll(tokens, CTX, CHUNKS);
  assert.equal(r.tokens, ref.count);
  assert.equal(r.tokens, CHUNKS * (CTX - 1 - CTX / 2));
  assert.ok(Math.abs(r.nll - ref.nll) < 1e-6, `${r.nll} vs ${ref.nll}`);
  assert.ok(Math.abs(r.ppl - Math.exp(ref.nll)) < 1e-5);
  assert.ok(r.pplStderr > 0 && r.pplStderr < r.ppl);
  assert.ok(r.ppl > 2 && r.ppl < 8, `stories260K on TinyStories: ${r.ppl}`);
  // chunks are capped by the text; too little text fails
  const capped = await perplexity(m, tokens.slice(0, 3 * CTX + 5), { ctx: CTX, chunks: 100, bos: 1, addBos: true });
  assert.equal(capped.chunks, 3);
  await assert.rejects(perplexity(m, tokens.slice(0, CTX), { ctx: CTX, bos: 1, addBos: true }), /needs at least 256/);
});

test('full check (LOWBIT_FULL=1): stories260K.gguf, ctx 128, 200 chunks = llama-perplexity 4.0466 within 0.1 %', async (t) => {
  if (!process.env.LOWBIT_FULL) {
    t.skip('set LOWBIT_FULL=1 (about 30 s)');
    return;
  }
  const g = await loadModel(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'), { contextLength: 128 });
  const all = g.tokenizer!.encode(text);
  const r = await perplexity(g.model, all, { ctx: 128, chunks: 200, bos: 1, addBos: true });
  t.diagnostic(`PPL ${r.ppl} ± ${r.pplStderr}, ${r.seconds} s`);
  assert.ok(Math.abs(r.ppl / 4.0466 - 1) < 1e-3, `PPL ${r.ppl}`);
});

function toF16(tensors: StoredTensor[]): StoredTensor[] {
  const f16 = ggmlTypeByName('F16')!;
  return tensors.map((t) => {
    if (t.dims.length !== 2) return t;
    const x = new Float32Array(t.data.buffer, t.data.byteOffset, t.data.length / 4);
    const h = Uint16Array.from(x, f32ToF16);
    return { ...t, type: f16, data: new Uint8Array(h.buffer) };
  });
}

test('KLD against a base: zero against itself; F16 weights give a small positive KLD; the logits file round-trips', async () => {
  const base = new Llama(bin.config, bin.tensors, { contextLength: CTX });
  const same = await perplexity(new Llama(bin.config, bin.tensors, { contextLength: CTX }), tokens, {
    ctx: CTX, chunks: CHUNKS, bos: 1, addBos: true, base: modelBase(base, CTX, 1, true),
  });
  assert.ok(Math.abs(same.kld!.mean) < 1e-12 && same.kld!.max < 1e-12);
  assert.equal(same.top1, 1);
  assert.equal(same.dp!.rms, 0);
  assert.equal(same.pplBase, same.ppl);

  const q = new Llama(bin.config, toF16(bin.tensors), { contextLength: CTX });
  const r = await perplexity(q, tokens, { ctx: CTX, chunks: CHUNKS, bos: 1, addBos: true, base: modelBase(base, CTX, 1, true) });
  const k = r.kld!;
  assert.ok(k.mean > 0 && k.mean < 1e-3, `F16 KLD ${k.mean}`);
  assert.ok(k.stderr > 0 && k.stderr < k.mean);
  assert.ok(k.median <= k.p90 && k.p90 <= k.p95 && k.p95 <= k.p99 && k.p99 <= k.max);
  assert.ok(r.top1! > 0.95 && r.top1! <= 1);
  assert.ok(r.dp!.rms > 0 && r.dp!.rms < 0.01);
  assert.ok(Math.abs(r.pplBase! / same.ppl - 1) < 1e-12);

  // save the base's log-probabilities in llama.cpp's format, then compare against the file
  const parts: Uint8Array[] = [];
  const saved = await perplexity(new Llama(bin.config, bin.tensors, { contextLength: CTX }), tokens, {
    ctx: CTX, chunks: CHUNKS, bos: 1, addBos: true, saveLogits: (b) => void parts.push(b.slice()),
  });
  const file = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((o, p) => (file.set(p, o), o + p.length), 0);
  const nv = 2 * ((512 + 1) >> 1) + 4;
  assert.equal(file.length, 20 + 4 * CTX * CHUNKS + CHUNKS * (CTX - 1 - CTX / 2) * nv * 2);
  assert.equal(new TextDecoder().decode(file.subarray(0, 8)), '_logits_');
  const fileBase = await logitsFileBase(bytesSource(file, 'base.logits'));
  assert.deepEqual(Array.from(fileBase.tokens!), tokens.slice(0, CTX * CHUNKS));
  const viaFile = await perplexity(q, fileBase.tokens!, { ctx: CTX, bos: 1, addBos: true, base: fileBase });
  assert.equal(viaFile.chunks, CHUNKS);
  assert.ok(Math.abs(viaFile.ppl - r.ppl) < 1e-12);
  // 16-bit log-probabilities: PPL(base) and KLD agree to the quantization step
  assert.ok(Math.abs(viaFile.pplBase! / saved.ppl - 1) < 1e-3, `${viaFile.pplBase} vs ${saved.ppl}`);
  assert.ok(Math.abs(viaFile.kld!.mean - k.mean) < 2e-4, `${viaFile.kld!.mean} vs ${k.mean}`);

  await assert.rejects(logitsFileBase(bytesSource(file.subarray(0, file.length - 2), 'cut.logits')), /does not match its header/);
  await assert.rejects(logitsFileBase(bytesSource(new Uint8Array(64), 'zero.logits')), /_logits_/);
});

test('percentile interpolates as llama.cpp does', () => {
  const v = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.equal(percentile(v, 0.9), 9);
  assert.equal(percentile(v, 0), 0);
  assert.equal(percentile(v, 1), 10);
  assert.ok(Math.abs(percentile([0, 10], 0.95) - 9.5) < 1e-6);
});
