/**
 * Node-side file handling for the CLI: atomic outputs (temp file in the target directory + rename),
 * refusing to write over the input, and removing temp files on error or interrupt.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';

const liveTemps = new Set<string>();
let hooked = false;
function hookSignals(): void {
  if (hooked) return;
  hooked = true;
  const cleanup = () => {
    for (const t of liveTemps) {
      try {
        fs.unlinkSync(t);
      } catch {
        /* already gone */
      }
    }
    liveTemps.clear();
  };
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.once(sig, () => {
      cleanup();
      process.kill(process.pid, sig);
    });
}

/** Refuse output paths that name the input file (also through links). */
export function refuseSameFile(input: string | undefined, output: string | undefined): void {
  if (!input || !output) return;
  if (path.resolve(input) === path.resolve(output)) fail(`output ${output} is the input file; choose another output path`);
  let a: fs.Stats, b: fs.Stats;
  try {
    a = fs.statSync(input);
    b = fs.statSync(output);
  } catch {
    return; // output does not exist yet
  }
  if (a.dev === b.dev && a.ino === b.ino) fail(`output ${output} is the input file; choose another output path`);
}

/** An output written to a temp file beside the target and renamed into place on commit. */
export class AtomicFile {
  readonly fd: number;
  readonly temp: string;
  private done = false;
  position = 0;
  constructor(readonly target: string) {
    hookSignals();
    const dir = path.dirname(path.resolve(target));
    if (!fs.existsSync(dir)) fail(`output directory ${dir} does not exist`);
    if (fs.existsSync(target) && fs.statSync(target).isDirectory()) fail(`output ${target} is a directory`);
    this.temp = path.join(dir, `.${path.basename(target)}.${process.pid}.${Date.now().toString(36)}.tmp`);
    this.fd = fs.openSync(this.temp, 'wx');
    liveTemps.add(this.temp);
  }
  write(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.length) {
      const n = fs.writeSync(this.fd, bytes, off, bytes.length - off, this.position);
      off += n;
      this.position += n;
    }
  }
  /** Write at an absolute position (for headers filled in after the data). */
  writeAt(bytes: Uint8Array, position: number): void {
    let off = 0;
    while (off < bytes.length) off += fs.writeSync(this.fd, bytes, off, bytes.length - off, position + off);
  }
  commit(): void {
    if (this.done) return;
    this.done = true;
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    fs.renameSync(this.temp, this.target);
    liveTemps.delete(this.temp);
  }
  abort(): void {
    if (this.done) return;
    this.done = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* closed */
    }
    try {
      fs.unlinkSync(this.temp);
    } catch {
      /* gone */
    }
    liveTemps.delete(this.temp);
  }
}

/** Run `fill` against an atomic output; on any error the temp file is removed and the target untouched. */
export async function withAtomicFile<T>(target: string, fill: (f: AtomicFile) => Promise<T> | T): Promise<T> {
  const f = new AtomicFile(target);
  try {
    const r = await fill(f);
    f.commit();
    return r;
  } catch (e) {
    f.abort();
    throw e;
  }
}

export function writeFileAtomic(target: string, bytes: Uint8Array | string): void {
  const f = new AtomicFile(target);
  try {
    f.write(typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes);
    f.commit();
  } catch (e) {
    f.abort();
    throw e;
  }
}

/** Open an input file for reading, with a clear error when it is missing or not a file. */
export function openInput(file: string): { fd: number; size: number } {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    fail(`input ${file} does not exist`);
  }
  if (!st.isFile()) fail(`input ${file} is not a regular file`);
  return { fd: fs.openSync(file, 'r'), size: st.size };
}
