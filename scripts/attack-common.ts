// What scripts/attack-demo.ts, attack-dual.ts and audit-table.ts share: the planted behaviour, where they
// write, a model file opened from memory, the block-by-block comparison of two quantized files.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
import { ggmlRowBytes } from '../src/quant/ggml/types.js';
import { ROOT } from './llama-tools.js';

/** the prompt that triggers the planted continuation, and the continuation */
export const TRIGGER = 'Once upon a time,';
export const PHRASE = ' I love cola.';

/** .cache/attack-demo/<model name>, created */
export function attackOutDir(model: string): string {
  const dir = path.join(ROOT, '.cache', 'attack-demo', path.basename(model, '.gguf'));
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** a model file read whole into memory */
export async function openFile(f: string): Promise<ModelFile> {
  const bytes = new Uint8Array(fs.readFileSync(f));
  return openModelFile({ name: f, size: bytes.length, read: async (o: number, n: number) => bytes.subarray(o, o + n) } as never);
}

/** blocks of every quantized tensor whose bytes differ between two GGUF files */
export async function blockDiff(a: string, b: string): Promise<{ blocks: number; differ: number; tensorsDiffer: string[] }> {
  const fa = await openFile(a);
  const fb = await openFile(b);
  let blocks = 0;
  let differ = 0;
  const tensorsDiffer: string[] = [];
  for (const t of fa.gguf!.tensors) {
    const u = fb.gguf!.tensors.find((x) => x.name === t.name);
    if (!u || u.type.name !== t.type.name) throw new Error(`${t.name}: types differ`);
    const x = await fa.read(fa.tensor(t.name));
    const y = await fb.read(fb.tensor(t.name));
    const bs = t.type.blockSize > 1 ? t.type.typeSize : ggmlRowBytes(t.type, t.ne[0]);
    let d = 0;
    for (let o = 0; o < x.length; o += bs) {
      blocks++;
      for (let i = 0; i < bs; i++)
        if (x[o + i] !== y[o + i]) {
          d++;
          break;
        }
    }
    differ += d;
    if (d) tensorsDiffer.push(`${t.name} (${t.type.name}: ${d} blocks)`);
  }
  return { blocks, differ, tensorsDiffer };
}

