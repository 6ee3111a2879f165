/**
 * Byte-range sources: how core code reads files without touching `fs`. A Node file source lives in
 * src/cli/node-source.ts; in browsers a Blob/File or an in-memory array gives one.
 */
import { fail } from '../errors.js';

export interface ByteSource {
  /** total size in bytes */
  readonly size: number;
  /** a label for error messages (file name) */
  readonly name: string;
  /** read exactly `length` bytes at `offset` (fails clearly when the range is outside the source) */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** optional: read exactly dest.length bytes at `offset` into dest (no intermediate buffer) */
  readInto?(offset: number, dest: Uint8Array): Promise<void>;
}

export function checkRange(src: { size: number; name: string }, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > src.size)
    fail(`${src.name}: read of ${length} bytes at offset ${offset} is outside the file (${src.size} bytes)`);
}

export function bytesSource(bytes: Uint8Array, name = 'buffer'): ByteSource {
  // a plain view: a Node Buffer's slice() shares memory where readers expect Uint8Array's copy
  bytes = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  return {
    size: bytes.length,
    name,
    async read(offset, length) {
      checkRange(this, offset, length);
      return bytes.subarray(offset, offset + length);
    },
    async readInto(offset, dest) {
      checkRange(this, offset, dest.length);
      dest.set(bytes.subarray(offset, offset + dest.length));
    },
  };
}

/** A Blob (browser File) as a byte source. */
export function blobSource(blob: Blob, name = 'blob'): ByteSource {
  return {
    size: blob.size,
    name,
    async read(offset, length) {
      checkRange(this, offset, length);
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}
