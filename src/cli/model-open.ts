/**
 * Node-side opening of model files for the CLI: file sources for the input and its siblings
 * (safetensors shards), the lazy llama2.c view, and config.json next to HF checkpoints.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';
import { openLlama2c } from '../io/llama2c.js';
import { isGguf, readGguf } from '../io/gguf.js';
import { ggufSplitParts, openGgufSplit, splitPath, writeGgufPart } from '../io/gguf-split.js';
import { openModelFile, type ModelFile } from '../io/model-file.js';
import type { ByteSource } from '../io/source.js';
import type { ByteSink } from '../io/sink.js';
import { AtomicFile, noteInput, withAtomicFile } from './files.js';
import { fileSet, fileSource } from './node-source.js';

/**
 * A sink over an AtomicFile whose writes run on the thread pool, at most `depth` in flight (bounded
 * memory) besides the one just given. With depth > 0, write resolves before its bytes are written, so
 * buffers passed to it must not be reused by the caller (the converters allocate fresh ones); with
 * depth 0 it resolves once they are written (the caller overlaps its work with the write itself).
 * Call flush() before commit, and settle() before abort (no write may still run on the file).
 *
 * With `syncEvery` (bytes), a background fdatasync starts each time that much more has been written
 * (one at a time), so the disk takes the data while the caller keeps computing and the fsync of
 * commit() finds little left to do. Its errors are left to that final fsync.
 */
export function pipelinedSink(f: AtomicFile, depth = 2, syncEvery = 0): ByteSink & { flush(): Promise<void>; settle(): Promise<void> } {
  const inFlight: Promise<void>[] = [];
  let failed: unknown;
  let unsynced = 0;
  let syncing: Promise<void> | undefined;
  const writeAll = async (b: Uint8Array, pos: number) => {
    let off = 0;
    while (off < b.length) {
      off += await new Promise<number>((resolve, reject) => fs.write(f.fd, b, off, b.length - off, pos + off, (err, n) => (err ? reject(err) : resolve(n))));
    }
  };
  const settle = async () => {
    while (inFlight.length) await inFlight.shift();
    await syncing;
  };
  return {
    async write(b) {
      if (failed) throw failed;
      const p = writeAll(b, f.position).catch((e) => {
        failed = e;
      });
      f.position += b.length;
      inFlight.push(p);
      unsynced += b.length;
      if (syncEvery > 0 && unsynced >= syncEvery && !syncing) {
        unsynced = 0;
        const written = Promise.all(inFlight);
        syncing = written.then(() => new Promise<void>((resolve) => fs.fdatasync(f.fd, () => resolve()))).finally(() => (syncing = undefined));
      }
      while (inFlight.length > depth) await inFlight.shift();
      if (failed) throw failed;
    },
    async flush() {
      await settle();
      if (failed) throw failed;
    },
    settle,
  };
}

/**
 * A model input through `open`: a split GGUF (the first part, PREFIX-00001-of-0000N.gguf) becomes one
 * virtual GGUF over all its parts (src/io/gguf-split.ts), every other file is returned as opened.
 */
export async function openModelSource(open: (file: string) => ByteSource, file: string): Promise<ByteSource> {
  const src = open(file);
  if (!(await isGguf(src))) return src;
  const dir = path.dirname(file);
  return openGgufSplit(src, async (name) => open(path.join(dir, name)));
}

/**
 * Write a GGUF as llama-quantize --keep-split does: `fill` writes the whole file (to a temp file that is
 * removed afterwards), which is then cut into PREFIX-0000i-of-0000N.gguf, one per input part (`parts`:
 * each input part's tensor names; one part when the input was not split), each written atomically.
 * Returns fill's result and the files written.
 */
export async function withSplitOutput<T>(prefix: string, parts: readonly (readonly string[])[], fill: (f: AtomicFile) => Promise<T>): Promise<{ result: T; files: string[] }> {
  const whole = new AtomicFile(`${prefix}.gguf`, 'output (before --keep-split)');
  try {
    const result = await fill(whole);
    const src = fileSource(whole.temp);
    try {
      const g = await readGguf(src);
      const cut = ggufSplitParts(g, parts);
      const files = cut.map((_, i) => splitPath(prefix, i, cut.length));
      for (let i = 0; i < cut.length; i++)
        await withAtomicFile(files[i], async (f) => {
          const sink = pipelinedSink(f, 2);
          try {
            await writeGgufPart(g, cut[i], sink);
            await sink.flush();
          } catch (e) {
            await sink.settle();
            throw e;
          }
        });
      return { result, files };
    } finally {
      src.close();
    }
  } finally {
    whole.abort();
  }
}

export async function openModelPath(file: string): Promise<{ model: ModelFile; close(): void }> {
  const files = fileSet('async');
  const open = files.open;
  const close = files.close;
  try {
    const dir = path.dirname(file);
    const model = await openModelFile(await openModelSource(open, file), {
      openSibling: async (name: string): Promise<ByteSource> => open(path.join(dir, name)),
      llama2c: async (src) => openLlama2c(src),
    });
    return { model, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** config.json beside a model file, parsed, or undefined. */
export function readSiblingConfig(file: string): unknown {
  const p = path.join(path.dirname(file), 'config.json');
  if (!fs.existsSync(p)) return undefined;
  noteInput(p);
  try {
    return JSON.parse(fs.readFileSync(p, 'utf8'));
  } catch (e) {
    fail(`${p}: not valid JSON (${(e as Error).message})`);
  }
}
