import * as fs from 'node:fs';
import { checkRange, type ByteSource } from '../io/source.js';
import { openInput } from './files.js';

/** A file as a byte source (positioned reads; nothing is loaded up front). Close when done. */
export interface FileSource extends ByteSource {
  close(): void;
}

type ReadAt = (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => number | Promise<number>;

/** reads of at least this many bytes are split into READ_PARTS parts read concurrently */
const PARALLEL_READ_BYTES = 4 << 20;
/**
 * reads of at least this many bytes go to libuv's thread pool even from a sync source (fileSource), so
 * that a model's tensors, read all at once (io/model-file.ts storedTensors), are copied and their pages
 * first touched on every core: with positioned reads on the calling thread, the 1-4 MB tensors of a
 * quantized 155M model were read one after the other (~0.8 s of a 3.2 s `lowbit eval`)
 */
const POOL_READ_BYTES = 256 << 10;
const READ_PARTS = 4;
const threadPoolRead: ReadAt = (fd, buf, off, len, pos) => new Promise<number>((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));

function sourceOver(file: string, readAt: ReadAt, sync = false): FileSource {
  const { fd, size } = openInput(file);
  let open = true;
  /** synchronous positioned reads of dest.length bytes at offset (fileSource only) */
  const readIntoSync = (offset: number, dest: Uint8Array): void => {
    checkRange({ size, name: file }, offset, dest.length);
    if (!open) throw new Error(`${file}: read after close`);
    let got = 0;
    while (got < dest.length) {
      const n = fs.readSync(fd, dest, got, dest.length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    if (got !== dest.length) throw new Error(`${file}: short read (${got} of ${dest.length} bytes at ${offset})`);
  };
  return {
    size,
    name: file,
    ...(sync ? { readIntoSync } : {}),
    async read(offset, length) {
      const buf = new Uint8Array(length);
      await this.readInto!(offset, buf);
      return buf;
    },
    async readInto(offset, buf) {
      const length = buf.length;
      checkRange(this, offset, length);
      /** bytes [from, to) of the range, by readAt; the count read */
      const span = async (from: number, to: number, read: ReadAt) => {
        let got = from;
        while (got < to) {
          const n = await read(fd, buf, got, to - got, offset + got);
          if (n === 0) break;
          got += n;
        }
        return got - from;
      };
      let got: number;
      if (length < POOL_READ_BYTES) got = await span(0, length, readAt);
      else if (length < PARALLEL_READ_BYTES) got = await span(0, length, threadPoolRead);
      else {
        // a big range (a model's tensor): parts read at once on libuv's thread pool, so copying and the
        // first touch of the destination pages run on several cores
        const step = Math.ceil(length / READ_PARTS / 4096) * 4096;
        const parts: Promise<number>[] = [];
        for (let from = 0; from < length; from += step) parts.push(span(from, Math.min(length, from + step), threadPoolRead));
        got = 0;
        for (const r of await Promise.allSettled(parts)) {
          if (r.status === 'rejected') throw r.reason; // after every part settled: no read outlives the call
          got += r.value;
        }
      }
      if (got !== length) throw new Error(`${file}: short read (${got} of ${length} bytes at ${offset})`);
    },
    close() {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

/** Synchronous positioned reads (lowest latency for many small reads). */
export function fileSource(file: string): FileSource {
  return sourceOver(file, (fd, buf, off, len, pos) => fs.readSync(fd, buf, off, len, pos), true);
}

/**
 * Reads on libuv's thread pool (fs.read), so a converter can have the next chunk read while it
 * converts and writes the current one.
 */
export function asyncFileSource(file: string): FileSource {
  return sourceOver(file, threadPoolRead);
}

/** Files opened on demand and closed together: `open` (sync reads or thread-pool reads), `close()`. */
export function fileSet(kind: 'sync' | 'async' = 'sync'): { open(file: string): FileSource; close(): void } {
  const opened: FileSource[] = [];
  return {
    open(file) {
      const s = kind === 'sync' ? fileSource(file) : asyncFileSource(file);
      opened.push(s);
      return s;
    },
    close() {
      for (const s of opened) s.close();
      opened.length = 0;
    },
  };
}
