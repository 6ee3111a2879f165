/**
 * Constant-memory streaming of fixed-size records from a file or stdin to an atomic file or stdout.
 */
import * as fs from 'node:fs';
import { fail } from '../errors.js';
import { AtomicFile, checkOutput, fileError, noteInput, openInput } from './files.js';

export interface StreamJob {
  input?: string;
  output?: string;
  /** bytes per input record (4 for float32) */
  unit: number;
  /**
   * Transform whole records; `index` counts records before this chunk. `dest(bytes)` lends the buffer
   * the output will be written from: a result inside it is written without a copy.
   */
  transform(chunk: Uint8Array, index: number, dest: (bytes: number) => Uint8Array): Uint8Array;
}

const CHUNK = 1 << 22;
/** Start flushing the output to disk in the background after this many more bytes are written. */
const SYNC_EVERY = 1 << 25;

/**
 * A file in chunks of CHUNK bytes, read on libuv's thread pool one chunk ahead into two reused buffers
 * (fresh buffers per chunk, as fs.createReadStream allocates, cost page faults and garbage collection).
 * Each chunk is valid until the next one is requested.
 */
async function* fileChunks(file: string): AsyncGenerator<Uint8Array> {
  const fd = fs.openSync(file, 'r');
  const bufs = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
  const readInto = (buf: Uint8Array, position: number) =>
    new Promise<number>((resolve, reject) => fs.read(fd, buf, 0, buf.length, position, (err, n) => (err ? reject(err) : resolve(n))));
  let next = readInto(bufs[0], 0);
  try {
    let position = 0;
    let which = 0;
    for (;;) {
      const n = await next;
      if (n === 0) break;
      position += n;
      const chunk = bufs[which].subarray(0, n);
      which ^= 1;
      next = readInto(bufs[which], position);
      yield chunk;
    }
  } finally {
    await next.catch(() => 0); // no read in flight on a closed descriptor
    fs.closeSync(fd);
  }
}

/**
 * Read, transform and write with reading, transforming and writing overlapped: each transformed chunk
 * is in one of two rotating buffers (the transform writes into the one lent by `dest`, else its output
 * is copied there, since the transform may reuse its output buffer) and written asynchronously while
 * the next chunk is read and transformed.
 */
export async function runStream(job: StreamJob): Promise<number> {
  noteInput(job.input);
  if (job.output) checkOutput(job.output, 'output (--out)');
  if (job.input) {
    const { fd, size } = openInput(job.input);
    fs.closeSync(fd);
    if (size % job.unit !== 0) fail(`input ${job.input} has ${size} bytes, not a multiple of ${job.unit}`);
  }
  const source: AsyncIterable<Uint8Array> = job.input ? fileChunks(job.input) : process.stdin;
  const sink = job.output ? new AtomicFile(job.output, 'output (--out)') : undefined;
  const pool = [new Uint8Array(0), new Uint8Array(0)];
  let which = 0;
  const dest = (bytes: number): Uint8Array => {
    if (pool[which].length < bytes) pool[which] = new Uint8Array(Math.max(bytes, CHUNK));
    return pool[which].subarray(0, bytes);
  };
  let pending: Promise<void> | undefined;
  // The output is fsync'ed on commit; flushing it in the background as it grows (fdatasync on the thread
  // pool) overlaps that disk write with reading and transforming, instead of waiting for all of it at the end.
  let syncing: Promise<void> | undefined;
  let syncError: Error | undefined;
  let syncedTo = 0;
  const syncAhead = (): void => {
    if (!sink || syncing || sink.position - syncedTo < SYNC_EVERY) return;
    syncedTo = sink.position;
    syncing = new Promise<void>((resolve) =>
      fs.fdatasync(sink.fd, (err) => {
        if (err) syncError ??= err;
        syncing = undefined;
        resolve();
      }),
    );
  };
  let carry = new Uint8Array(0);
  let records = 0;
  let total = 0;
  try {
    for await (const piece of source) {
      total += piece.length;
      let buf = piece;
      if (carry.length) {
        buf = new Uint8Array(carry.length + piece.length);
        buf.set(carry);
        buf.set(piece, carry.length);
      }
      const whole = buf.length - (buf.length % job.unit);
      carry = buf.slice(whole);
      if (whole === 0) continue;
      const out = job.transform(buf.subarray(0, whole), records, dest);
      records += whole / job.unit;
      let held = out;
      if (out.buffer !== pool[which].buffer) {
        held = dest(out.length);
        held.set(out);
      }
      which ^= 1;
      if (pending) await pending; // the write before last used the buffer we fill next
      syncAhead();
      pending = sink ? writeAt(sink, held) : writeStdout(held);
    }
    if (pending) await pending;
    pending = undefined;
    if (carry.length) fail(`input has ${total} bytes, not a multiple of ${job.unit}`);
    if (syncing) await syncing;
    if (syncError) throw syncError;
    sink?.commit();
  } catch (e) {
    if (pending) await pending.catch(() => undefined);
    if (syncing) await syncing;
    sink?.abort();
    throw job.output ? fileError(e, job.output, 'writing') : e;
  }
  return records;
}

/** Asynchronous write of all bytes at the sink's position, advancing it. */
async function writeAt(sink: AtomicFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.write(sink.fd, bytes, off, bytes.length - off, sink.position, (err, written) => (err ? reject(err) : resolve(written))),
    );
    off += n;
    sink.position += n;
  }
}

function writeStdout(bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), (err) => (err ? reject(err) : resolve()));
  });
}

/** A Float32Array over the bytes, copying into `scratch` when they are not 4-byte aligned. */
export function f32View(bytes: Uint8Array, scratch: { buf?: Float32Array }): Float32Array {
  const n = bytes.length >>> 2;
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  if (!scratch.buf || scratch.buf.length < n) scratch.buf = new Float32Array(n);
  const v = scratch.buf.subarray(0, n);
  new Uint8Array(v.buffer, v.byteOffset, n * 4).set(bytes);
  return v;
}
