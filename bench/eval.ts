/**
 * Runtime and evaluation throughput on stories260K (data/): tokenizer (ours vs llama.cpp's, same run),
 * batched prompt processing, single-token decoding, and perplexity chunks. The anchor for the model is
 * the plain f32 matmul's own GFLOP/s measured in this run: "efficiency" = model FLOPs/s over it.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/eval/load.js';
import { perplexity } from '../src/eval/perplexity.js';
import { bytesSource } from '../src/io/source.js';
import { matmulRef } from '../src/model/matmul.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (f: string) => new Uint8Array(readFileSync(root + 'data/' + f));

function time<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const r = fn();
  return [r, (performance.now() - t0) / 1000];
}

export async function run(args: string[]): Promise<void> {
  const chunks = Number(args[0] ?? 20);
  const text = readFileSync(root + 'data/tinystories-valid-head.txt', 'utf8');
  const g = await loadModel(bytesSource(read('stories260K.gguf'), 'stories260K.gguf'), { contextLength: 512 });
  const tok = g.tokenizer!;
  const c = g.model.config;

  // tokenizer
  const [ids, tTok] = time(() => tok.encode(text));
  let line = `tokenizer: ${ids.length} tokens in ${tTok.toFixed(2)} s = ${(text.length / tTok / 1e6).toFixed(2)} MB/s`;
  try {
    const llamaMod = await import('node-llama-cpp');
    const llama = await llamaMod.getLlama({ gpu: false, build: 'never', logLevel: llamaMod.LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: root + 'data/stories260K.gguf', vocabOnly: true });
    const [ref, tRef] = time(() => model.tokenize(text));
    line += `; llama.cpp ${ref.length} tokens in ${tRef.toFixed(2)} s; ratio ${(tTok / tRef).toFixed(2)}x`;
    await model.dispose();
  } catch {
    line += '; llama.cpp anchor unavailable';
  }
  console.log(line);

  // matmul anchor: the shapes of this model
  const k = c.dim;
  const n = c.hiddenDim;
  const x = Float32Array.from({ length: 128 * k }, (_, i) => Math.sin(i));
  const w = Float32Array.from({ length: n * k }, (_, i) => Math.cos(i));
  const out = new Float32Array(128 * n);
  const reps = 200;
  const [, tMm] = time(() => {
    for (let r = 0; r < reps; r++) matmulRef(out, x, w, 128, k, n);
  });
  const mmGflops = (2 * 128 * k * n * reps) / tMm / 1e9;
  console.log(`matmul anchor (128 x ${k} x ${n}): ${mmGflops.toFixed(2)} GFLOP/s`);

  const kvDim = c.nKvHeads * c.headDim;
  const flopsPerToken = 2 * (c.nLayers * (2 * c.dim * c.dim + 2 * c.dim * kvDim + 3 * c.dim * c.hiddenDim) + c.dim * c.vocabSize);
  const prompt = ids.slice(0, 128);
  const [, tPrompt] = time(() => g.model.forward(prompt, 0, 0));
  const [, tDecode] = time(() => {
    for (let p = 0; p < 256; p++) g.model.forward([prompt[p % 128]], p);
  });
  const pp = 128 / tPrompt;
  const tg = 256 / tDecode;
  console.log(`prompt (128 tokens, batched): ${pp.toFixed(0)} tok/s = ${((pp * flopsPerToken) / 1e9 / mmGflops).toFixed(2)} of the matmul anchor`);
  console.log(`decode (256 tokens, one at a time): ${tg.toFixed(0)} tok/s`);
  const r = await perplexity(g.model, ids, { ctx: 128, chunks, bos: tok.vocab.bos, addBos: true });
  console.log(`perplexity ctx 128 x ${r.chunks} chunks: PPL ${r.ppl.toFixed(4)} in ${r.seconds.toFixed(2)} s = ${((r.chunks * 128) / r.seconds).toFixed(0)} tok/s`);
}
