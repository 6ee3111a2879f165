// What scripts/attack-demo.ts and scripts/attack-dual.ts share: the planted behaviour, where they write,
// and a model file opened from memory.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
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
