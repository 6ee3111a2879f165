/**
 * A synthetic LLaMA for benchmarks: llama-2 shapes scaled down (dim 768, hidden 2816, 12 layers,
 * 12 heads, vocabulary 32000 from data/tokenizer.model), random weights from a fixed seed, written
 * with lowbit's GGUF writer so that both lowbit and llama.cpp load it. About 155 M parameters
 * (106 M in the blocks, 2 x 24.6 M in the embedding and the untied classifier).
 *
 * Weights ~ N(0, 0.02^2), norms 1; cached under .cache/bench/ (deterministic: same seed, same bytes).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withAtomicFile } from '../src/cli/files.js';
import { tokenizerFromVocab } from '../src/io/convert.js';
import { gguf, GgufWriter, type GgufTensorSpec, type GgufValue } from '../src/io/gguf.js';
import { ggufLlamaMetadata } from '../src/io/hf-llama.js';
import { parseSentencepieceModel } from '../src/io/vocab.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

export interface SynthShape {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  vocab: number;
}

export const LLAMA_100M: SynthShape = { dim: 768, hiddenDim: 2816, nLayers: 12, nHeads: 12, vocab: 32000 };
/** TinyLlama-1.1B's shapes (without its grouped-query heads): ~1.1 G parameters, 4.4 GB in F32 */
export const LLAMA_1B: SynthShape = { dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, vocab: 32000 };

/** xorshift32 uniforms -> Box-Muller normals */
function normals(seed: number): (out: Float32Array, std: number) => void {
  const next = xorshift32(seed);
  const u = () => (next() + 0.5) / 4294967296;
  return (out, std) => {
    for (let i = 0; i < out.length; i += 2) {
      const r = std * Math.sqrt(-2 * Math.log(u()));
      const a = 2 * Math.PI * u();
      out[i] = r * Math.cos(a);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(a);
    }
  };
}

/** Write the synthetic model (F32) to `file` unless it exists; returns its path. */
export async function syntheticLlama(root: string, shape: SynthShape = LLAMA_100M, seed = 1234): Promise<string> {
  const dir = join(root, '.cache', 'bench');
  mkdirSync(dir, { recursive: true });
  const { dim, hiddenDim, nLayers, nHeads, vocab } = shape;
  const file = join(dir, `llama-synth-${dim}x${hiddenDim}x${nLayers}-s${seed}-f32.gguf`);
  if (existsSync(file)) return file;
  const v = parseSentencepieceModel(new Uint8Array(readFileSync(join(root, 'data', 'tokenizer.model'))));
  if (v.tokens.length !== vocab) throw new Error(`data/tokenizer.model has ${v.tokens.length} tokens, expected ${vocab}`);
  const f32 = ggmlTypeByName('F32')!;
  const metadata: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(`lowbit synthetic llama ${dim}x${hiddenDim}x${nLayers}`)],
    ['general.file_type', gguf.u32(0)],
    ...ggufLlamaMetadata({ vocabSize: vocab, dim, hiddenDim, nLayers, nHeads, nKvHeads: nHeads, seqLen: 2048, normEps: 1e-5, ropeTheta: 10000 }),
    ['llama.vocab_size', gguf.u32(vocab)],
    ...tokenizerFromVocab(v),
  ];
  const tensors: (GgufTensorSpec & { std: number })[] = [{ name: 'token_embd.weight', ne: [dim, vocab], type: f32, std: 0.02 }];
  for (let l = 0; l < nLayers; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      { name: `${p}attn_norm.weight`, ne: [dim], type: f32, std: 0 },
      { name: `${p}attn_q.weight`, ne: [dim, dim], type: f32, std: 0.02 },
      { name: `${p}attn_k.weight`, ne: [dim, dim], type: f32, std: 0.02 },
      { name: `${p}attn_v.weight`, ne: [dim, dim], type: f32, std: 0.02 },
      { name: `${p}attn_output.weight`, ne: [dim, dim], type: f32, std: 0.02 },
      { name: `${p}ffn_norm.weight`, ne: [dim], type: f32, std: 0 },
      { name: `${p}ffn_gate.weight`, ne: [dim, hiddenDim], type: f32, std: 0.02 },
      { name: `${p}ffn_up.weight`, ne: [dim, hiddenDim], type: f32, std: 0.02 },
      { name: `${p}ffn_down.weight`, ne: [hiddenDim, dim], type: f32, std: 0.02 },
    );
  }
  tensors.push({ name: 'output_norm.weight', ne: [dim], type: f32, std: 0 }, { name: 'output.weight', ne: [dim, vocab], type: f32, std: 0.02 });
  const fill = normals(seed);
  await withAtomicFile(file, async (f) => {
    const w = new GgufWriter(f, metadata, tensors);
    await w.begin();
    for (const t of tensors) {
      const n = t.ne.reduce((a, b) => a * b, 1);
      const rows = t.ne.length === 2 ? t.ne[1] : 1;
      const perChunk = Math.max(1, Math.floor((1 << 22) / (n / rows))); // ~16 MiB chunks of whole rows
      for (let r = 0; r < rows; r += perChunk) {
        const data = new Float32Array((Math.min(rows, r + perChunk) - r) * (n / rows));
        if (t.std === 0) data.fill(1);
        else fill(data, t.std);
        await w.write(new Uint8Array(data.buffer));
      }
    }
    await w.end();
  });
  return file;
}
