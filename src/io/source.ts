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
  /**
   * optional: readInto, synchronously (a Node file's positioned reads, an in-memory array): lets a
   * tensor be read piece by piece when it is used (storedTensors' `lazy`), e.g. the embedding rows of
   * the tokens a run meets
   */
  readIntoSync?(offset: number, dest: Uint8Array): void;
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
    readIntoSync(offset, dest) {
      checkRange(this, offset, dest.length);
      dest.set(bytes.subarray(offset, offset + dest.length));
    },
  };
}

/** Reads of at least this many bytes stream through the Blob's BYOB reader (see blobSource). */
const STREAM_MIN = 1 << 20;
/** a stream skips forward over at most this many bytes (e.g. a small tensor read apart) before it restarts */
const SKIP_MAX = 4 << 20;
/** the private buffer a caller's (possibly shared) array is filled from */
const CHUNK = 8 << 20;

/**
 * A Blob (browser File) as a byte source. Small reads are `blob.slice(...).arrayBuffer()`; large ones
 * (a tensor's slab) continue one BYOB stream of the Blob from where the last one ended, one read at a
 * time in the order they were asked. In Chromium a slice's arrayBuffer() is drained in small pieces by
 * the reading thread's event loop and crawled at 11-18 MB/s while two workers quantized on a loaded
 * 2-core machine, where the BYOB stream read 136-168 MB/s (the same file, the same load).
 */
export function blobSource(blob: Blob, name = 'blob'): ByteSource {
  const stream = blobStreamReader(blob, name);
  const sliced = async (offset: number, length: number) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
  return {
    size: blob.size,
    name,
    async read(offset, length) {
      checkRange(this, offset, length);
      return (length >= STREAM_MIN && (await stream?.(offset, length))) || sliced(offset, length);
    },
    async readInto(offset, dest) {
      checkRange(this, offset, dest.length);
      if (dest.length >= STREAM_MIN && stream) await stream(offset, dest.length, dest);
      else dest.set(await sliced(offset, dest.length));
    },
  };
}

/**
 * Sequential BYOB reads of a Blob: read(offset, length, dest?) fills dest (or a fresh array, returned)
 * with the bytes at offset, continuing the open stream when offset is at or a little past its position
 * and opening a new one at offset otherwise. Undefined where Blob streams have no BYOB reader.
 */
function blobStreamReader(blob: Blob, name: string): ((offset: number, length: number, dest?: Uint8Array) => Promise<Uint8Array>) | undefined {
  try {
    blob.slice(0, 0).stream().getReader({ mode: 'byob' }).releaseLock();
  } catch {
    return undefined;
  }
  let reader: ReadableStreamBYOBReader | undefined;
  let pos = 0;
  let scratch = new ArrayBuffer(0);
  let queue: Promise<unknown> = Promise.resolve();
  /** fill view (a private buffer, transferred by the read) from the stream; returns it in its new buffer */
  const fill = async (view: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> => {
    const { byteOffset, length } = view; // the view detaches at the first read
    let buf = view.buffer;
    for (let off = 0; off < length; ) {
      const { done, value } = await reader!.read(new Uint8Array(buf, byteOffset + off, length - off));
      if (done || !value) fail(`${name}: the file ended at byte ${pos + off} (it changed while being read?)`);
      buf = value.buffer as ArrayBuffer;
      off += value.length;
    }
    pos += length;
    return new Uint8Array(buf, byteOffset, length);
  };
  const chunk = (n: number) => {
    if (scratch.byteLength < Math.min(n, CHUNK)) scratch = new ArrayBuffer(Math.min(n, CHUNK));
    return new Uint8Array(scratch, 0, Math.min(n, scratch.byteLength));
  };
  const readAt = async (offset: number, length: number, dest?: Uint8Array): Promise<Uint8Array> => {
    if (!reader || offset < pos || offset - pos > SKIP_MAX) {
      void reader?.cancel().catch(() => undefined);
      reader = blob.slice(offset).stream().getReader({ mode: 'byob' });
      pos = offset;
    }
    try {
      while (pos < offset) scratch = (await fill(chunk(offset - pos))).buffer;
      if (!dest) return await fill(new Uint8Array(length)); // a fresh array of ours: filled in place
      for (let done = 0; done < length; ) {
        const got = await fill(chunk(length - done));
        scratch = got.buffer;
        dest.set(got, done);
        done += got.length;
      }
      return dest;
    } catch (e) {
      reader = undefined; // the next read starts a fresh stream
      throw e;
    }
  };
  return (offset, length, dest) => {
    const r = queue.then(() => readAt(offset, length, dest));
    queue = r.catch(() => undefined);
    return r;
  };
}
