import * as fs from 'node:fs';
import { checkRange, type ByteSource } from '../io/source.js';
import { openInput } from './files.js';

/** A file as a byte source (positioned reads; nothing is loaded up front). Close when done. */
export interface FileSource extends ByteSource {
  close(): void;
}

export function fileSource(file: string): FileSource {
  const { fd, size } = openInput(file);
  let open = true;
  return {
    size,
    name: file,
    async read(offset, length) {
      checkRange(this, offset, length);
      const buf = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const n = fs.readSync(fd, buf, got, length - got, offset + got);
        if (n === 0) break;
        got += n;
      }
      if (got !== length) throw new Error(`${file}: short read (${got} of ${length} bytes at ${offset})`);
      return buf;
    },
    close() {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}
