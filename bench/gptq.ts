/**
 * GPTQ at scale: int4 g128 on a synthetic ~100M-parameter llama (dim 768, hidden 2816, 12 layers,
 * 12 heads, vocabulary 4096, random seeded weights) with 128 calibration sequences of 512 tokens,
 * through the real pipeline (layer by layer: statistics pass with X^T X, GPTQ of the 7 linears, forward
 * pass). Prints wall time per phase and peak RSS. Anchor, measured in the same run: the forward pass
 * alone (all layers, the runtime's kernels on the same threads) over 8 of the sequences, scaled to 128; the ratio says
 * how many forward passes' worth of time GPTQ takes.
 *
 *   npm run bench -- gptq [sequences=128] [layers=12] [threads=2]
 */
import { createHash } from 'node:crypto';
import { defineRecipe, schemeRecipe } from '../src/algos/recipe.js';
import { gguf, GgufWriter, type GgufValue } from '../src/io/gguf.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { useNodeThreads } from '../src/node.js';
import { GptqPool } from '../src/cli/gptq-pool.js';
import { Llama } from '../src/model/llama.js';
import { quantize } from '../src/pipeline/quantize.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import type { StoredTensor } from '../src/model/types.js';

const DIM = 768;
const HIDDEN = 2816;
const HEADS = 12;
const VOCAB = 4096;
const CTX = 512;

function normal(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

export async function syntheticModel(layers: number): Promise<Uint8Array> {
  const f32 = ggmlTypeByName('F32')!;
  const specs: { name: string; ne: number[] }[] = [{ name: 'token_embd.weight', ne: [DIM, VOCAB] }, { name: 'output_norm.weight', ne: [DIM] }, { name: 'output.weight', ne: [DIM, VOCAB] }];
  for (let l = 0; l < layers; l++)
    specs.push(
      { name: `blk.${l}.attn_norm.weight`, ne: [DIM] },
      { name: `blk.${l}.attn_q.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.attn_k.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.attn_v.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.attn_output.weight`, ne: [DIM, DIM] },
      { name: `blk.${l}.ffn_norm.weight`, ne: [DIM] },
      { name: `blk.${l}.ffn_gate.weight`, ne: [DIM, HIDDEN] },
      { name: `blk.${l}.ffn_up.weight`, ne: [DIM, HIDDEN] },
      { name: `blk.${l}.ffn_down.weight`, ne: [HIDDEN, DIM] },
    );
  const meta: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['llama.embedding_length', gguf.u32(DIM)],
    ['llama.feed_forward_length', gguf.u32(HIDDEN)],
    ['llama.block_count', gguf.u32(layers)],
    ['llama.attention.head_count', gguf.u32(HEADS)],
    ['llama.attention.head_count_kv', gguf.u32(HEADS)],
    ['llama.context_length', gguf.u32(CTX)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(1e-5)],
  ];
  const sink = memorySink();
  const w = new GgufWriter(sink, meta, specs.map((s) => ({ name: s.name, ne: s.ne, type: f32 })));
  await w.begin();
  const rnd = normal(12345);
  for (const s of specs) {
    const n = s.ne.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    if (s.ne.length === 1) x.fill(1);
    else {
      const scale = 1 / Math.sqrt(s.ne[0]);
      for (let i = 0; i < n; i++) x[i] = rnd() * scale;
    }
    await w.write(new Uint8Array(x.buffer));
  }
  await w.end();
  return sink.bytes();
}

export async function run(args: string[]): Promise<void> {
  const nSeq = Number(args[0] ?? 128);
  const layers = Number(args[1] ?? 12);
  const threads = Number(args[2] ?? 2);
  useNodeThreads();
  const t0 = performance.now();
  const bytes = await syntheticModel(layers);
  const m = await openModelFile(bytesSource(bytes, 'synthetic.gguf'));
  const params = m.tensors.reduce((s, t) => s + t.nElements, 0);
  console.log(`synthetic llama: dim ${DIM}, hidden ${HIDDEN}, ${layers} layers, vocab ${VOCAB}: ${(params / 1e6).toFixed(1)} M parameters (built in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const rnd = normal(777);
  const stream = Int32Array.from({ length: nSeq * CTX + 1 }, () => Math.floor(((rnd() + 4) / 8) * VOCAB) & (VOCAB - 1));

  // anchor: the forward pass alone over 8 sequences, the runtime on the same threads
  const f32 = ggmlTypeByName('F32')!;
  const stored: StoredTensor[] = [];
  for (const t of m.tensors) stored.push({ name: t.name, type: f32, dims: [...t.ne!], data: await m.read(t) });
  const llama = new Llama({ dim: DIM, hiddenDim: HIDDEN, nLayers: layers, nHeads: HEADS, nKvHeads: HEADS, vocabSize: VOCAB, seqLen: CTX, headDim: DIM / HEADS, normEps: 1e-5, ropeTheta: 10000, ropeDim: DIM / HEADS, ropeStyle: 'normal' }, stored, { contextLength: CTX, batch: CTX, threads });
  const anchorSeqs = Math.min(8, nSeq);
  const ta = performance.now();
  for (let s = 0; s < anchorSeqs; s++) llama.forward(stream.subarray(s * CTX, (s + 1) * CTX), 0);
  const forwardAll = (((performance.now() - ta) / 1000) * nSeq) / anchorSeqs;
  console.log(`anchor: one forward pass over ${nSeq} x ${CTX} tokens = ${forwardAll.toFixed(1)} s (measured on ${anchorSeqs} sequences)`);

  const recipe = defineRecipe({ ...JSON.parse(JSON.stringify(schemeRecipe('int4', { groupSize: 128 }))), algorithm: 'gptq', ptq: { calibTokens: nSeq * CTX, calibCtx: CTX, seed: 0 } });
  const tp = performance.now();
  const gptqWorkers = threads > 1 ? new GptqPool(threads - 1) : undefined;
  let written = 0;
  const hash = createHash('sha256'); // the bytes must not change with the speed work (1 and 2 threads alike)
  const report = await quantize(m, recipe, { write: (b) => void ((written += b.length), hash.update(b)) }, {
    output: 'safetensors',
    calibStream: stream,
    threads,
    gptqWorkers,
    onProgress: (msg) => process.stderr.write(`  ${msg} [${((performance.now() - tp) / 1000).toFixed(0)} s]\n`),
  });
  await gptqWorkers?.close();
  const total = (performance.now() - tp) / 1000;
  const ph = report.ptq!.phases!;
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(
    `GPTQ int4 g128, ${nSeq} x ${CTX} calibration tokens: ${total.toFixed(1)} s wall ` +
      `(statistics pass ${ph.statistics.toFixed(1)} s, GPTQ ${ph.quantization.toFixed(1)} s, forward ${ph.forward.toFixed(1)} s, rest ${(total - ph.statistics - ph.quantization - ph.forward).toFixed(1)} s); ` +
      `${(written / 1e6).toFixed(1)} MB written (sha256 ${hash.digest('hex').slice(0, 16)}); peak RSS ${rss.toFixed(0)} MiB`,
  );
  console.log(`ratio: GPTQ pipeline / one forward pass = ${(total / forwardAll).toFixed(2)}x`);
}
