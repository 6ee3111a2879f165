/**
 * A sink that writes an AtomicFile's data with O_DIRECT (Linux): bytes are copied into one of two
 * aligned staging buffers, and each full buffer goes from there to the device on the thread pool
 * while the caller goes on, without passing through the page cache. For a large output this saves
 * the kernel's copy into the page cache and the allocation of its pages (on virtual machines that
 * back guest memory lazily, the larger cost), and the final fsync finds the data already written.
 *
 * O_DIRECT needs block-aligned file offsets, lengths and memory: the staging buffers are
 * WebAssembly memories (page-aligned), the writes are whole multiples of ALIGN, and the last partial
 * block goes through the file's ordinary descriptor in flush(). Where O_DIRECT is missing or
 * refused (other platforms, tmpfs, some network file systems), directSink returns undefined, and a
 * write it refuses later (EINVAL) is done through the ordinary descriptor, as is every write after it.
 *
 * write() resolves once the bytes are copied (the caller may reuse them at once). Call flush() before
 * commit and settle() before abort.
 */
import * as fs from 'node:fs';
import type { ByteSink } from '../io/sink.js';
import type { AtomicFile } from './files.js';

/** file offsets and lengths of direct writes are multiples of this (any logical block size up to 4 KiB) */
const ALIGN = 4096;
/** bytes per staging buffer (a multiple of ALIGN and of the 64 KiB WebAssembly page) */
export const DIRECT_STAGE_BYTES = 8 << 20;

export interface FileSink extends ByteSink {
  /** write everything out (the file is then complete up to f.position) */
  flush(): Promise<void>;
  /** wait for the writes in flight, ignoring their errors (before the file is removed) */
  settle(): Promise<void>;
}

function writeAt(fd: number, b: Uint8Array, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, b, 0, b.length, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

/** An O_DIRECT sink over f (which must be at position 0), or undefined where O_DIRECT is unavailable. */
export function directSink(f: AtomicFile, stageBytes = DIRECT_STAGE_BYTES): FileSink | undefined {
  const O_DIRECT = (fs.constants as Record<string, number | undefined>).O_DIRECT;
  if (!O_DIRECT || f.position !== 0 || stageBytes % 65536 !== 0 || stageBytes <= 0) return undefined;
  let dfd: number | undefined;
  try {
    dfd = fs.openSync(f.temp, fs.constants.O_WRONLY | O_DIRECT);
  } catch {
    return undefined;
  }
  let direct = true;
  const stages = [0, 1].map(() => new Uint8Array(new WebAssembly.Memory({ initial: stageBytes / 65536, maximum: stageBytes / 65536 }).buffer));
  const inFlight: (Promise<void> | undefined)[] = [undefined, undefined];
  let cur = 0;
  let fill = 0;
  let base = 0; // file offset of stages[cur][0]
  let failed: unknown;

  /** all of b at pos: directly while the system takes it, else (and from then on) through f.fd */
  const writeOut = async (b: Uint8Array, pos: number): Promise<void> => {
    let off = 0;
    while (off < b.length) {
      if (direct && dfd !== undefined && off % ALIGN === 0 && (b.length - off) % ALIGN === 0) {
        try {
          off += await writeAt(dfd, b.subarray(off), pos + off);
          continue;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
          direct = false; // refused: this and every later write through the ordinary descriptor
        }
      }
      off += await writeAt(f.fd, b.subarray(off), pos + off);
    }
  };

  const closeDirect = () => {
    if (dfd === undefined) return;
    try {
      fs.closeSync(dfd);
    } catch {
      /* closed */
    }
    dfd = undefined;
  };

  /** send the current stage (fill bytes) and make the other one current once it is free */
  const rotate = async () => {
    const p = writeOut(stages[cur].subarray(0, fill), base);
    p.catch((e) => {
      failed ??= e;
    });
    inFlight[cur] = p;
    base += fill;
    cur ^= 1;
    fill = 0;
    await inFlight[cur];
    inFlight[cur] = undefined;
    if (failed) throw failed;
  };

  const settle = async () => {
    for (const p of inFlight) await p?.catch(() => undefined);
    inFlight.fill(undefined);
    closeDirect();
  };

  return {
    async write(bytes) {
      if (failed) throw failed;
      for (let off = 0; off < bytes.length; ) {
        const n = Math.min(stageBytes - fill, bytes.length - off);
        stages[cur].set(bytes.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === stageBytes) await rotate();
      }
      f.position = base + fill;
    },
    async flush() {
      for (const p of inFlight) await p;
      inFlight.fill(undefined);
      if (failed) throw failed;
      const whole = fill - (fill % ALIGN);
      await writeOut(stages[cur].subarray(0, whole), base);
      await writeOut(stages[cur].subarray(whole, fill), base + whole); // the last partial block: through f.fd
      base += fill;
      fill = 0;
      f.position = base;
      closeDirect();
    },
    settle,
  };
}
