/**
 * Constant-memory streaming of fixed-size records from a file or stdin to an atomic file or stdout.
 */
import * as fs from 'node:fs';
import { fail } from '../errors.js';
import { AtomicFile, openInput, refuseSameFile } from './files.js';

export interface StreamJob {
  input?: string;
  output?: string;
  /** bytes per input record (4 for float32) */
  unit: number;
  /** transform whole records; `index` counts records before this chunk */
  transform(chunk: Uint8Array, index: number): Uint8Array;
}

const CHUNK = 1 << 22;

/**
 * Read, transform and write with reading, transforming and writing overlapped: each transformed chunk
 * is copied into one of two rotating buffers (the transform may reuse its output buffer) and written
 * asynchronously while the next chunk is read and transformed.
 */
export async function runStream(job: StreamJob): Promise<number> {
  refuseSameFile(job.input, job.output);
  if (job.input) {
    const { fd, size } = openInput(job.input);
    fs.closeSync(fd);
    if (size % job.unit !== 0) fail(`input ${job.input} has ${size} bytes, not a multiple of ${job.unit}`);
  }
  const source: AsyncIterable<Uint8Array> = job.input ? fs.createReadStream(job.input, { highWaterMark: CHUNK }) : process.stdin;
  const sink = job.output ? new AtomicFile(job.output) : undefined;
  const pool = [new Uint8Array(0), new Uint8Array(0)];
  let which = 0;
  let pending: Promise<void> | undefined;
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
      const out = job.transform(buf.subarray(0, whole), records);
      records += whole / job.unit;
      if (pool[which].length < out.length) pool[which] = new Uint8Array(Math.max(out.length, CHUNK));
      const held = pool[which].subarray(0, out.length);
      held.set(out);
      which ^= 1;
      if (pending) await pending; // the write before last used the buffer we fill next
      pending = sink ? writeAt(sink, held) : writeStdout(held);
    }
    if (pending) await pending;
    pending = undefined;
    if (carry.length) fail(`input has ${total} bytes, not a multiple of ${job.unit}`);
    sink?.commit();
  } catch (e) {
    if (pending) await pending.catch(() => undefined);
    sink?.abort();
    throw e;
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
