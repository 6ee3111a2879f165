/**
 * Node-side opening of ONNX files: the model through a file source, its external data files (paths
 * relative to the model's folder) opened on first use and closed with the model.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';
import type { OnnxModel } from '../io/onnx/model.js';
import { openOnnxModelFile } from '../io/onnx/model-file.js';
import type { ModelFile } from '../io/model-file.js';
import type { ByteSource } from '../io/source.js';
import { fileSet } from './node-source.js';

export const isOnnxPath = (file: string | undefined): boolean => !!file && /\.onnx$/i.test(file);

/** the model (parsed) and its ModelFile (initializers as tensors, io/onnx/model-file.ts) */
export async function openOnnxPath(file: string): Promise<{ model: OnnxModel; file: ModelFile; close(): void }> {
  const files = fileSet('async');
  const dir = path.dirname(file);
  const cache = new Map<string, ByteSource>();
  try {
    const mf = await openOnnxModelFile(files.open(file), {
      openExternal(location) {
        let s = cache.get(location);
        if (!s) {
          const p = path.join(dir, location);
          if (!fs.existsSync(p)) fail(`${file}: external data file '${location}' does not exist (looked in ${dir})`);
          cache.set(location, (s = files.open(p)));
        }
        return s;
      },
    });
    return { model: mf.onnx!, file: mf, close: files.close };
  } catch (e) {
    files.close();
    throw e;
  }
}
