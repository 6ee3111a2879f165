/**
 * Node-side file handling for the CLI: the one policy every input and output of every command goes
 * through.
 *
 * Inputs: opened by `openInput` / `readInputText`, which give clear errors (missing, a directory, a
 * symlink loop, unreadable) and record the file's identity (device + inode) for the run.
 *
 * Outputs: `checkOutput` refuses, before anything is computed, an output that
 *   - is an input of the same run (by identity: also through symlinks, `./`, `..` and hard links),
 *   - is another output of the same run,
 *   - is a directory, or an existing FIFO, device node or socket (a rename would swap it for a file),
 *   - lies in a directory that does not exist or cannot be written.
 * Each output is written to a temp file beside its target (`.NAME.PID.RAND.tmp`) and *staged*; the
 * staged files are renamed into place together by `commitRun` once the whole command succeeded, and
 * removed by `abortRun` (or on exit / SIGINT / SIGTERM / SIGHUP) otherwise. So a run that exits
 * non-zero leaves every existing file as it was. A later run into the same folder removes stale temp
 * files of this naming scheme whose process is gone (a SIGKILLed run cannot clean up after itself).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fail, LowbitError } from '../errors.js';

// ---------------------------------------------------------------------------------------------------
// Errors of the file system, as one clear line naming the file

const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'does not exist',
  ENOTDIR: 'has a parent that is not a directory',
  ELOOP: 'is a symlink loop (too many levels of symbolic links)',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large for the file system',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
  ENAMETOOLONG: 'name too long',
  EMFILE: 'too many open files',
  EXDEV: 'cross-device rename',
};

/** A file-system error as a LowbitError naming the file: `writing out.gguf: no space left on device (ENOSPC)`. */
export function fileError(e: unknown, file: string, doing: string): Error {
  if (e instanceof LowbitError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return new LowbitError(`${doing} ${file}: ${ERRNO_TEXT[code] ?? (e as Error).message} (${code})`);
  return e as Error;
}

// ---------------------------------------------------------------------------------------------------
// The files of this run

interface Identity {
  dev: number;
  ino: number;
}
const idKey = (s: Identity) => `${s.dev}:${s.ino}`;
/** inputs opened by this run: identity -> the path it was opened by */
const inputs = new Map<string, string>();
/** outputs checked for this run: resolved path -> the name given */
const outputs = new Map<string, string>();

/** whether finished outputs wait for commitRun (inside a command run by main) or are renamed at once */
let deferring = false;

/**
 * Start a run (main calls it before each command): forget the files of a previous one; outputs
 * finished from now on are renamed into place by commitRun, not at once.
 */
export function beginRun(): void {
  abortRun();
  inputs.clear();
  outputs.clear();
  deferring = true;
}

function statInput(file: string, what: string): fs.Stats {
  if (!file) fail(`${what}: empty file name`);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      let dangling = false;
      try {
        dangling = fs.lstatSync(file).isSymbolicLink();
      } catch {
        /* not there at all */
      }
      fail(`${what} ${file} ${dangling ? 'is a symlink to a file that does not exist' : 'does not exist'}`);
    }
    if (code === 'ELOOP') fail(`${what} ${file} is a symlink loop`);
    if (code === 'ENOTDIR') fail(`${what} ${file}: a parent of it is not a directory`);
    throw fileError(e, file, `${what}`);
  }
  if (st.isDirectory()) fail(`${what} ${file} is a directory, not a file`);
  if (!st.isFile()) fail(`${what} ${file} is not a regular file (${kindOf(st)})`);
  return st;
}

/** Record `file` as an input of this run (when it exists), so no output may replace it. */
export function noteInput(file: string | undefined): void {
  if (!file) return;
  try {
    const st = fs.statSync(file);
    if (st.isFile()) inputs.set(idKey(st), file);
  } catch {
    /* reported when it is opened */
  }
}

/**
 * Open an input file for reading, with a clear error when it is missing or not a file. It is noted as
 * an input of the run unless `protect` is false (a file read whole and then rewritten on purpose).
 */
export function openInput(file: string, what = 'input', protect = true): { fd: number; size: number } {
  const st = statInput(file, what);
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw fileError(e, file, `opening ${what}`);
  }
  if (protect) inputs.set(idKey(st), file);
  return { fd, size: st.size };
}

/** A UTF-8 text input (--text, --calib, --recipe, ...), read whole. */
export function readInputText(file: string, what: string): string {
  const { fd } = openInput(file, what);
  try {
    return fs.readFileSync(fd, 'utf8');
  } catch (e) {
    throw fileError(e, file, `reading ${what}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** A binary input read whole (a checkpoint, a small table). */
export function readInputBytes(file: string, what: string, protect = true): Uint8Array {
  const { fd } = openInput(file, what, protect);
  try {
    return new Uint8Array(fs.readFileSync(fd));
  } catch (e) {
    throw fileError(e, file, `reading ${what}`);
  } finally {
    fs.closeSync(fd);
  }
}

function kindOf(st: fs.Stats): string {
  return st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : st.isSocket() ? 'a socket' : st.isDirectory() ? 'a directory' : 'not a regular file';
}

/**
 * Check an output path against the policy (see the top of this file) and reserve it for this run.
 * Call it for every output before any work that takes time, after noting the run's inputs. Returns
 * the path to write: an existing symlink is written through (its target is replaced, the link stays).
 */
export function checkOutput(target: string, what = 'output', reserve = true): string {
  if (!target) fail(`${what}: empty file name`);
  let lst: fs.Stats | undefined;
  try {
    lst = fs.lstatSync(target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') fail(`${what} ${target}: a parent of it is not a directory`);
    if (code !== 'ENOENT') throw fileError(e, target, what);
  }
  let real = target;
  let st = lst;
  if (lst?.isSymbolicLink()) {
    try {
      real = fs.realpathSync(target);
      st = fs.statSync(real);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') fail(`${what} ${target} is a symlink loop`);
      if (code === 'ENOENT') fail(`${what} ${target} is a symlink to a file that does not exist; give the real path`);
      throw fileError(e, target, what);
    }
  }
  if (st) {
    if (st.isDirectory()) fail(`${what} ${target} is a directory; give a file name`);
    if (!st.isFile()) fail(`${what} ${target} is ${kindOf(st)}: lowbit writes regular files only (it would replace it with a file)`);
    const input = inputs.get(idKey(st));
    if (input !== undefined) fail(`${what} ${target} is the input file ${input} of this run${input === target ? "" : " (the same file)"}; choose another output path`);
  }
  const dir = path.dirname(path.resolve(real));
  let dst: fs.Stats;
  try {
    dst = fs.statSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') fail(`${what} ${target}: the directory ${path.dirname(target) || '.'} does not exist`);
    throw fileError(e, dir, `${what} directory`);
  }
  if (!dst.isDirectory()) fail(`${what} ${target}: ${path.dirname(target)} is not a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    fail(`${what} ${target}: cannot write in the directory ${path.dirname(target) || '.'} (permission denied)`);
  }
  // the same file under two names (./x, a/../x, a symlinked folder) is one key
  const key = path.join(fs.realpathSync(dir), path.basename(real));
  const other = outputs.get(key);
  if (reserve) {
    if (other !== undefined && other !== what) fail(`${what} ${target} is also the ${other} of this run; give them different paths`);
    outputs.set(key, what);
  }
  for (const f of openFiles) if (f.key === key) fail(`${what} ${target} is written twice in this run`);
  return real;
}

/** checkOutput for several outputs at once: [path or undefined, what] pairs. */
export function checkOutputs(...list: readonly (readonly [string | undefined, string])[]): void {
  for (const [p, what] of list) if (p !== undefined) checkOutput(p, what);
}

// ---------------------------------------------------------------------------------------------------
// Temp files: staged outputs, cleanup on exit and signals, stale temp files of killed runs

/** Temp files this process owns (removed on exit unless committed). */
const liveTemps = new Set<string>();
/** Written outputs waiting for the run to succeed. */
const staged: AtomicFile[] = [];
/** Outputs being written or staged (not yet renamed or removed). */
const openFiles = new Set<AtomicFile>();
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

/** `.NAME.PID.RAND.tmp`: the naming scheme of lowbit's temp files */
const TEMP_NAME = /^\.(.+)\.([1-9][0-9]{0,9})\.([0-9a-z]{4,16})\.tmp$/;

function tempName(target: string): string {
  return `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
}

function processGone(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH'; // EPERM: alive, another user's
  }
}

const cleanedDirs = new Set<string>();

/**
 * Remove temp files of lowbit's naming scheme in `dir` whose process no longer runs (left by a run
 * killed with SIGKILL or a power cut). Returns the names removed.
 */
export function removeStaleTemps(dir: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (!m || !processGone(Number(m[2]))) continue;
    const p = path.join(dir, name);
    try {
      if (!fs.lstatSync(p).isFile()) continue;
      fs.unlinkSync(p);
      removed.push(name);
    } catch {
      /* raced with another run, or not ours to remove */
    }
  }
  return removed;
}

/**
 * An output written to a temp file beside the target. `commit()` finishes it (fsync, close) and
 * stages it; `commitRun()` renames it into place when the command succeeded.
 */
export class AtomicFile {
  readonly fd: number;
  readonly temp: string;
  private done = false;
  private staged = false;
  position = 0;
  readonly target: string;
  /** the target's resolved path */
  readonly key: string;
  constructor(target: string, what = 'output') {
    hookSignals();
    this.target = checkOutput(target, what, false);
    const dir = path.dirname(path.resolve(this.target));
    this.key = path.join(fs.realpathSync(dir), path.basename(this.target));
    if (!cleanedDirs.has(dir)) {
      cleanedDirs.add(dir);
      removeStaleTemps(dir);
    }
    this.temp = path.join(dir, tempName(this.target));
    try {
      this.fd = fs.openSync(this.temp, 'wx', 0o644);
    } catch (e) {
      throw fileError(e, target, 'creating');
    }
    liveTemps.add(this.temp);
    openFiles.add(this);
  }
  write(bytes: Uint8Array): void {
    let off = 0;
    try {
      while (off < bytes.length) {
        const n = fs.writeSync(this.fd, bytes, off, bytes.length - off, this.position);
        off += n;
        this.position += n;
      }
    } catch (e) {
      throw fileError(e, this.target, 'writing');
    }
  }
  /** Write at an absolute position (for headers filled in after the data). */
  writeAt(bytes: Uint8Array, position: number): void {
    let off = 0;
    try {
      while (off < bytes.length) off += fs.writeSync(this.fd, bytes, off, bytes.length - off, position + off);
    } catch (e) {
      throw fileError(e, this.target, 'writing');
    }
  }
  /**
   * The file is complete: flush it to disk and stage it (renamed into place by commitRun). With `now`,
   * rename it at once (a checkpoint that must survive the run being killed later).
   */
  commit(now = false): void {
    if (this.done) return;
    this.done = true;
    try {
      fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
    } catch (e) {
      this.discard();
      throw fileError(e, this.target, 'writing');
    }
    this.staged = true;
    staged.push(this);
    if (now) {
      this.publish();
      staged.splice(staged.indexOf(this), 1);
    } else if (!deferring) commitRun(); // outside a run (library use, tests): rename at once
  }
  abort(): void {
    if (!this.done) {
      this.done = true;
      try {
        fs.closeSync(this.fd);
      } catch {
        /* closed */
      }
    }
    this.discard();
  }
  private discard(): void {
    try {
      fs.unlinkSync(this.temp);
    } catch {
      /* gone */
    }
    liveTemps.delete(this.temp);
    this.staged = false;
    openFiles.delete(this);
  }
  /** the path to read the finished file from before the run commits (the temp file) */
  get readPath(): string {
    return this.staged ? this.temp : this.target;
  }
  /** rename into place (commitRun) */
  publish(): void {
    if (!this.staged) return;
    // last look: the target may have changed since checkOutput (another process)
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(this.target);
    } catch {
      /* not there: fine */
    }
    if (st && !st.isFile()) fail(`output ${this.target} became ${kindOf(st)} during the run; not replaced`);
    if (st && inputs.has(idKey(st))) fail(`output ${this.target} is the input file ${inputs.get(idKey(st))} of this run; not replaced`);
    try {
      fs.renameSync(this.temp, this.target);
    } catch (e) {
      throw fileError(e, this.target, 'replacing');
    }
    liveTemps.delete(this.temp);
    this.staged = false;
    openFiles.delete(this);
    try {
      const dfd = fs.openSync(path.dirname(path.resolve(this.target)), 'r');
      try {
        fs.fsyncSync(dfd); // the rename itself survives a crash
      } finally {
        fs.closeSync(dfd);
      }
    } catch {
      /* some file systems cannot sync a directory */
    }
  }
}

/** The staged temp file of an output written in this run (to read it back before commit), else the path itself. */
export function stagedPath(target: string): string {
  const real = (() => {
    try {
      return fs.realpathSync(target);
    } catch {
      return path.resolve(target);
    }
  })();
  for (const f of staged) if (f.target === target || path.resolve(f.target) === real) return f.readPath;
  return target;
}

/** Rename every staged output into place (the command succeeded). */
export function commitRun(): void {
  try {
    while (staged.length) {
      staged[0].publish();
      staged.shift();
    }
  } catch (e) {
    abortRun();
    throw e;
  }
  deferring = false;
}

/** Remove every staged output (the command failed): existing files stay as they were. */
export function abortRun(): void {
  for (const f of staged.splice(0)) f.abort();
  deferring = false;
}

/** Run `fill` against an atomic output; on any error the temp file is removed and the target untouched. */
export async function withAtomicFile<T>(target: string, fill: (f: AtomicFile) => Promise<T> | T, what = 'output'): Promise<T> {
  const f = new AtomicFile(target, what);
  try {
    const r = await fill(f);
    f.commit();
    return r;
  } catch (e) {
    f.abort();
    throw fileError(e, target, 'writing');
  }
}

/** Write a whole file atomically: staged until the run succeeds, or with `now` renamed into place at once. */
export function writeFileAtomic(target: string, bytes: Uint8Array | string, what = 'output', now = false): void {
  const f = new AtomicFile(target, what);
  try {
    f.write(typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes);
    f.commit(now);
  } catch (e) {
    f.abort();
    throw e;
  }
}

/**
 * Older call sites' form: note `input` as an input of the run and check `output` against the output
 * policy (checkOutput). New code calls noteInput for every input, then checkOutput for every output.
 */
export function refuseSameFile(input: string | undefined, output: string | undefined): void {
  noteInput(input);
  if (output) checkOutput(output, 'output');
}

/**
 * A llama model written as safetensors gets its Hugging Face config.json beside it (else it cannot be
 * read back). The same model's config (differing only in torch_dtype) is left as it is; another
 * model's is refused unless `force`. Returns a note for the summary line ('' when nothing was written).
 */
export function writeHfConfigBeside(output: string, hfConfig: Record<string, unknown>, force = false): string {
  const configPath = path.join(path.dirname(output), 'config.json');
  const text = JSON.stringify(hfConfig, null, 2) + '\n';
  const existing = fs.existsSync(configPath) ? fs.readFileSync(configPath, 'utf8') : undefined;
  const sameModel = (x: string | undefined) => {
    try {
      const { torch_dtype: _a, ...o } = JSON.parse(x ?? '') as Record<string, unknown>;
      const { torch_dtype: _b, ...n } = hfConfig;
      return JSON.stringify(o) === JSON.stringify(n);
    } catch {
      return false;
    }
  };
  if (existing !== undefined && existing !== text && !sameModel(existing) && !force)
    fail(`${configPath} already exists and differs (it may belong to another checkpoint in this folder); write OUT into its own folder, or give --force to replace it`);
  if (existing !== undefined && (existing === text || sameModel(existing))) return '';
  writeFileAtomic(configPath, text, 'config.json');
  return `, ${configPath} written`;
}
