import * as fs from 'node:fs';
import { checkRange, type ByteSource } from '../io/source.js';
import { openInput } from './files.js';

/** A file as a byte source (positioned reads; nothing is loaded up front). Close when done. */
export interface FileSource extends ByteSource {
  close(): void;
}

type ReadAt = (fd: number, buf: Uint8Array, off: number, len: number, pos: number) => number | Promise<number>;

function sourceOver(file: string, readAt: ReadAt): FileSource {
  const { fd, size } = openInput(file);
  let open = true;
  return {
    size,
    name: file,
    async read(offset, length) {
      const buf = new Uint8Array(length);
      await this.readInto!(offset, buf);
      return buf;
    },
    async readInto(offset, buf) {
      const length = buf.length;
      checkRange(this, offset, length);
      let got = 0;
      while (got < length) {
        const n = await readAt(fd, buf, got, length - got, offset + got);
        if (n === 0) break;
        got += n;
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
  return sourceOver(file, (fd, buf, off, len, pos) => fs.readSync(fd, buf, off, len, pos));
}

/**
 * Reads on libuv's thread pool (fs.read), so a converter can have the next chunk read while it
 * converts and writes the current one.
 */
export function asyncFileSource(file: string): FileSource {
  return sourceOver(file, (fd, buf, off, len, pos) => new Promise<number>((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)))));
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
