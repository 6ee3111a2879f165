/**
 * Threads for the WebAssembly kernels, without any platform API: the host injects how a thread is
 * started (Node: worker_threads, see src/cli/threads.ts; browsers: Web Workers), and each started
 * thread calls `kernelWorkerMain(init)` with the message it was given.
 *
 * All threads share one WebAssembly.Memory. A job is a block of parameters in that memory, cut into
 * chunks that every thread (the calling one included) claims one at a time, so a thread that the OS
 * delays simply takes fewer chunks. Results never depend on which thread ran a chunk.
 *
 * Control block (i32 words at `control`):
 *   GEN    job number (15 bits), bumped to wake the workers
 *   CLAIM  GEN << 16 | next chunk           (compare-and-swap to claim a chunk of job GEN)
 *   LIMIT  GEN << 16 | chunk count
 *   DONE   chunks finished
 *   QUIT   non-zero: workers return
 *   READY  workers that have started
 *   ERROR  non-zero: a worker failed
 *   WORKED chunks run by workers (statistics)
 *   STEAL  GEN of the current job when its chunks may be stolen (see below), else 0
 *   AREA   byte address of the workers' private areas (AREA_BYTES each, worker i at AREA + (i - 1) x AREA_BYTES)
 *   SLEEPS times a worker found no job after its spin and went to sleep (Atomics.wait; statistics)
 *   the job's parameters follow at control + JOB_OFFSET; a worker's private copy of them at word
 *   PRIV_JOB + 32 i; the chunk states of a stealable job at word STATE + chunk.
 *
 * Stealable jobs (one-token matmuls: each chunk writes only its own rows of y). On a loaded machine a
 * worker descheduled while it holds a chunk made the caller wait for a time slice at the end of every
 * matmul (~85 per token in decode). In a stealable job a worker runs its chunk on a private copy of the
 * parameters that sends the chunk's rows (and the tile's scratch) into its private area, then commits:
 * compare-and-swap of the chunk's state RUNNING -> FINAL, copy of the rows into y, DONE + 1. The caller,
 * out of chunks to claim and after waiting about two chunks' time, takes every chunk that is not FINAL
 * (OPEN or RUNNING -> FINAL) and runs it itself into y. A chunk is thus written into y once, by whoever
 * won its state; the loser's rows stay in its private area (a worker that wakes up late computes into
 * its own area only and loses the swap: the state words carry the job's GEN). The bits are the same
 * whoever runs a chunk.
 * The caller waits with Atomics.wait, which Node allows on its main thread and browsers only in workers.
 */

export const GEN = 0;
export const CLAIM = 1;
export const LIMIT = 2;
export const DONE = 3;
export const QUIT = 4;
export const READY = 5;
export const ERROR = 6;
export const WORKED = 7;
export const STEAL = 8;
export const AREA = 9;
export const AREA_BYTES_WORD = 10;
export const SLEEPS = 11;
export const PRIV_JOB = 48;
export const STATE = PRIV_JOB + 32 * 16;
/** most chunks of a stealable job */
export const MAX_STEAL_CHUNKS = 64;
/** job parameter words copied for a stealable chunk */
const JOB_WORDS = 17;
/** chunk states (low 16 bits; GEN in the high ones) */
const OPEN = 0;
const RUNNING = 1;
const FINAL = 2;
/** bytes of a worker's private area: tile scratch, then a chunk's rows of y */
export const PRIVATE_SCRATCH = 512;
export const PRIVATE_BYTES = PRIVATE_SCRATCH + 16384;
/** byte offset of the job parameters in the control block */
export const JOB_OFFSET = 64;
/** bytes of the control block (parameters included) */
export const CONTROL_BYTES = (STATE + MAX_STEAL_CHUNKS) * 4;
/** most chunks per job (16 bits of CLAIM, with room for over-claims) */
export const MAX_CHUNKS = 65000;

/** What a worker thread receives. */
export interface KernelWorkerInit {
  readonly memory: WebAssembly.Memory;
  readonly module: WebAssembly.Module;
  /** byte offset of the control block */
  readonly control: number;
  /** thread index (the caller is 0; workers 1, 2, ...) */
  readonly index: number;
  /** run the JavaScript loop even when the module has one in WebAssembly (tests: the reference) */
  readonly jsLoop?: boolean;
}

/** A started thread, as the host returns it. */
export interface WorkerHandle {
  terminate(): unknown;
}

/** Starts a thread that calls kernelWorkerMain(init). */
export type StartWorker = (init: KernelWorkerInit) => WorkerHandle;

let startWorker: StartWorker | undefined;

/** Install (or remove) the host's way to start threads. Without one, kernels run on the calling thread. */
export function setStartWorker(fn: StartWorker | undefined): void {
  startWorker = fn;
}

export function hasStartWorker(): boolean {
  return startWorker !== undefined;
}

interface ChunkRunner {
  runChunk(job: number, chunk: number, thread: number): void;
  /**
   * The module's caller side of `KernelThreads.run` in WebAssembly (wasm/matmul.ts callerRun: run's loops, word
   * for word), when it has one: returns the chunks it took from the workers, + 0x10000 when the workers had
   * finished first; callerWaitMs() its wait for the workers when timing was asked for
   */
  callerRun?: (control: number, n: number, gen: number, stealable: number, waitMs: number, timing: number) => number;
  callerWaitMs?: () => number;
}

/** A module's worker loop in WebAssembly (wasm/matmul.ts workerLoop: this file's loop, word for word). */
interface WasmWorkerLoop {
  workerLoop(control: number, index: number, seen: number, resume: number): void;
  /** the job the loop saw last, and the plain chunk it was running (-1 none, -2 a stolen one): read after a trap */
  workerSeen(): number;
  workerChunk(): number;
}

/**
 * Run the worker's loop in the module's WebAssembly (when it has one, and `init.jsLoop` is not set): no
 * JavaScript on the hot path for the engine to compile while both cores are busy. A trap in a plain chunk
 * is counted here as the JavaScript loop counts it (ERROR, then the chunk done) and the loop re-entered
 * on the same job; a trap in a stolen chunk is left to the caller. Returns false when there is no such loop.
 */
function wasmWorkerLoop(init: KernelWorkerInit, exports: WebAssembly.Exports, seen: number): boolean {
  const w = exports as unknown as Partial<WasmWorkerLoop>;
  if (init.jsLoop || typeof w.workerLoop !== 'function' || typeof w.workerSeen !== 'function' || typeof w.workerChunk !== 'function') return false;
  const ctrl = new Int32Array(init.memory.buffer);
  const base = init.control >>> 2;
  let resume = 0;
  for (;;) {
    try {
      w.workerLoop(init.control, init.index, seen, resume);
      return true;
    } catch {
      seen = w.workerSeen();
      if (w.workerChunk() >= 0) {
        Atomics.store(ctrl, base + ERROR, 1);
        Atomics.add(ctrl, base + WORKED, 1);
        const n = Atomics.load(ctrl, base + LIMIT) & 0xffff;
        if (Atomics.add(ctrl, base + DONE, 1) + 1 === n) Atomics.notify(ctrl, base + DONE);
      }
      resume = 1;
    }
  }
}

/**
 * The job number after g: 1..0x7fff, never 0. 0 is what STEAL holds for a job that may not be stolen (and
 * what the zeroed STATE words say), so a job numbered 0 looked stealable to the workers: a worker marked
 * its claimed chunk RUNNING, found the job not stealable and left it to a caller that was not waiting to
 * take it over, and the caller waited for that chunk forever (every 32768th job, when a worker claimed a
 * chunk of it: long AutoRound runs hung with every thread in a futex wait).
 */
export function nextGen(g: number): number {
  return (g % 0x7fff) + 1;
}

/** Claim the next chunk of job `gen`: its index, or -1 when none is left (or the job is over). */
export function claim(ctrl: Int32Array, base: number, gen: number): number {
  for (;;) {
    const v = Atomics.load(ctrl, base + CLAIM);
    if (v >>> 16 !== gen) return -1;
    if (Atomics.compareExchange(ctrl, base + CLAIM, v, v + 1) !== v) continue;
    return claimed(ctrl, base, gen, v & 0xffff);
  }
}

/**
 * After a successful compare-and-swap of CLAIM from (gen, c): c if it is a chunk of job `gen`, else -1.
 * A claim past the last chunk does not hold the job open: every real chunk may be done, the job over
 * and the next one started (LIMIT rewritten) between the swap and this check, so LIMIT counts only if
 * it is still this job's. (Taking the next job's count for this over-claim ran one chunk twice and
 * counted it done twice: the caller read that chunk's rows before they were written. Seen in Chromium
 * under load, ~1 evaluation in 20.)
 */
export function claimed(ctrl: Int32Array, base: number, gen: number, c: number): number {
  const limit = Atomics.load(ctrl, base + LIMIT);
  if (limit >>> 16 !== gen) return -1;
  return c < (limit & 0xffff) ? c : -1;
}

/** The clock a module's WebAssembly reads (import env.now: wasm/matmul.ts callerRun's wait before it takes the workers' chunks). */
export function hostNow(): number {
  return performance.now();
}

/** Loop of a worker thread: wait for a job, run the chunks it can claim, repeat until QUIT. */
export function kernelWorkerMain(init: KernelWorkerInit): void {
  const instance = new WebAssembly.Instance(init.module, { env: { memory: init.memory, now: hostNow } });
  const run = instance.exports as unknown as ChunkRunner;
  const ctrl = new Int32Array(init.memory.buffer);
  const base = init.control >>> 2;
  const job = init.control + JOB_OFFSET;
  let seen = Atomics.load(ctrl, base + GEN);
  Atomics.add(ctrl, base + READY, 1);
  if (wasmWorkerLoop(init, instance.exports, seen)) return;
  for (;;) {
    let g = Atomics.load(ctrl, base + GEN);
    for (let spin = 0; g === seen && spin < 20000; spin++) g = Atomics.load(ctrl, base + GEN);
    if (g === seen) {
      if (Atomics.load(ctrl, base + QUIT)) return;
      Atomics.add(ctrl, base + SLEEPS, 1);
      Atomics.wait(ctrl, base + GEN, seen, 1000);
      continue;
    }
    if (Atomics.load(ctrl, base + QUIT)) return;
    seen = g;
    const steal = Atomics.load(ctrl, base + STEAL) === g;
    for (let c = claim(ctrl, base, g); c >= 0; c = claim(ctrl, base, g)) {
      if (steal) {
        stolenChunk(ctrl, base, init, run, g, c);
        continue;
      }
      try {
        run.runChunk(job, c, init.index);
      } catch {
        Atomics.store(ctrl, base + ERROR, 1);
      }
      Atomics.add(ctrl, base + WORKED, 1);
      const n = Atomics.load(ctrl, base + LIMIT) & 0xffff;
      if (Atomics.add(ctrl, base + DONE, 1) + 1 === n) Atomics.notify(ctrl, base + DONE);
    }
  }
}

/**
 * A worker's chunk c of stealable job g (see the top): mark it RUNNING, run it on a private copy of the
 * job's parameters (one-token matmul jobs of src/kernels/matmul.ts: word 0 kind, 1 type, 6 tokens, 7 K,
 * 9 y, 12 rows per chunk, 13/14 scratch and its bytes per thread) whose y and scratch point into this
 * worker's private area, then commit it if the caller has not taken it meanwhile. The copy is checked
 * (a worker late by a job may read the next job's words, torn): anything but a one-token chunk that fits
 * the area is left to the caller, which takes every chunk that is not FINAL.
 */
function stolenChunk(ctrl: Int32Array, base: number, init: KernelWorkerInit, run: ChunkRunner, g: number, c: number): void {
  const st = base + STATE + c;
  if (init.index >= 16) return; // no private copy of the job: the caller takes the chunk
  if (Atomics.compareExchange(ctrl, st, (g << 16) | OPEN, (g << 16) | RUNNING) !== ((g << 16) | OPEN)) return;
  const job = base + JOB_OFFSET / 4;
  const mine = base + PRIV_JOB + 32 * init.index;
  for (let i = 0; i < JOB_WORDS; i++) ctrl[mine + i] = Atomics.load(ctrl, job + i);
  const rowsPerChunk = ctrl[mine + 12];
  // addresses are stored as i32 words: from 2 GiB of memory on they read back negative (>>> 0: unsigned)
  const area0 = Atomics.load(ctrl, base + AREA) >>> 0;
  if (area0 === 0 || !stealableJob(ctrl, mine)) return;
  const area = area0 + (init.index - 1) * Atomics.load(ctrl, base + AREA_BYTES_WORD);
  const out = area + PRIVATE_SCRATCH;
  ctrl[mine + 9] = (out - c * rowsPerChunk * 4) | 0;
  ctrl[mine + 13] = area;
  ctrl[mine + 14] = 0;
  try {
    run.runChunk(init.control + PRIV_JOB * 4 + 128 * init.index, c, init.index);
  } catch {
    return; // the caller runs it (and meets the error itself if the job was real)
  }
  if (Atomics.compareExchange(ctrl, st, (g << 16) | RUNNING, (g << 16) | FINAL) !== ((g << 16) | RUNNING)) return;
  // won: rows [c r, min(rows, (c + 1) r)) into y (the job cannot end before DONE counts this chunk)
  const rows = Atomics.load(ctrl, job + 11);
  const nr = Math.min(rowsPerChunk, rows - c * rowsPerChunk);
  // unsigned: y at 2 GiB and above read as a negative i32 made copyWithin count from the memory's end
  // (the rows went elsewhere and y kept stale values: the 1.1B Q8_0 model's two-thread decode)
  const y = (Atomics.load(ctrl, job + 9) >>> 0) + c * rowsPerChunk * 4;
  if (nr > 0) new Uint8Array(init.memory.buffer).copyWithin(y, out, out + nr * 4);
  Atomics.add(ctrl, base + WORKED, 1);
  const n = Atomics.load(ctrl, base + LIMIT) & 0xffff;
  if (Atomics.add(ctrl, base + DONE, 1) + 1 === n) Atomics.notify(ctrl, base + DONE);
}

/**
 * Can the job whose parameter words start at word `at` be stolen: one token, a kernel that writes only
 * the chunk's rows of y and at most PRIVATE_SCRATCH bytes of scratch (F32 rows; the one-token integer
 * tiles of Q4_0, Q5_0, Q8_0, IQ4_NL, Q4_K, Q6_K).
 */
export function stealableJob(words: Int32Array, at: number): boolean {
  const kind = words[at];
  const type = words[at + 1];
  if (words[at + 6] !== 1 || words[at + 12] < 1 || words[at + 12] * 4 > PRIVATE_BYTES - PRIVATE_SCRATCH) return false;
  if (kind === 1) return type === 0 && (words[at + 7] & 3) === 0;
  if (kind === 3) return type === 2 || type === 6 || type === 8 || type === 20 || type === 12 || type === 14;
  return false;
}

/**
 * The calling thread's side: `size` threads in all (size - 1 workers), sharing `memory`.
 */
export class KernelThreads {
  private readonly workers: WorkerHandle[] = [];
  private gen = 0;
  private readonly base: number;
  /** chunks of stealable jobs that this thread took from a worker (statistics) */
  stolen = 0;
  /**
   * ms the caller waits before taking the workers' chunks (undefined: about two chunks' time). Tests: -1
   * makes the caller claim nothing and take every chunk from the last one down while the workers claim
   * from the first one up (they meet on a chunk that both run).
   */
  static stealWaitMs: number | undefined;
  /** workers started from now on run the JavaScript loop even where the module has one in WebAssembly (tests) */
  static jsWorkerLoop = false;
  /** run the caller's side in JavaScript even where the module has it in WebAssembly (tests: the reference) */
  static jsCallerRun = false;
  /** time the hand-off of every run (bench decode-profile): `handOff` then counts; off, run reads no clock for it */
  static timing = false;
  /**
   * Hand-off statistics while `timing` is set: runs, ms the caller waited for the workers' chunks after running
   * (or finding none of) its own, and runs whose chunks were all done by then (the workers finished first)
   */
  readonly handOff = { runs: 0, waitMs: 0, workersFirst: 0 };

  private constructor(
    private readonly memory: WebAssembly.Memory,
    private readonly control: number,
    readonly size: number,
    private readonly area: number,
  ) {
    this.base = control >>> 2;
  }

  /** Start size - 1 workers (null without a host thread starter or a shared memory). */
  static start(memory: WebAssembly.Memory, module: WebAssembly.Module, control: number, size: number, area = 0): KernelThreads | null {
    if (!startWorker || size < 2) return null;
    const t = new KernelThreads(memory, control, size, area);
    const ctrl = t.ctrl();
    for (let i = 0; i < CONTROL_BYTES / 4; i++) ctrl[t.base + i] = 0;
    ctrl[t.base + AREA] = area;
    ctrl[t.base + AREA_BYTES_WORD] = PRIVATE_BYTES;
    for (let i = 1; i < size; i++) t.workers.push(startWorker({ memory, module, control, index: i, ...(KernelThreads.jsWorkerLoop ? { jsLoop: true } : {}) }));
    return t;
  }

  private view = new Int32Array(0);

  /** the memory as i32 words (a new view after the memory grew) */
  private ctrl(): Int32Array {
    const buf = this.memory.buffer;
    if (this.view.buffer !== buf) this.view = new Int32Array(buf);
    return this.view;
  }

  /** workers that have started and wait for jobs */
  ready(): number {
    return Atomics.load(this.ctrl(), this.base + READY);
  }

  /** chunks run by the workers so far */
  workerChunks(): number {
    return Atomics.load(this.ctrl(), this.base + WORKED);
  }

  /** times a worker went to sleep for want of a job so far (each costs a wake-up at the next job) */
  workerSleeps(): number {
    return Atomics.load(this.ctrl(), this.base + SLEEPS);
  }

  /**
   * Run chunks [0, n) of the job whose parameters are at control + JOB_OFFSET on all threads; returns
   * when all are done. `self` runs a chunk on this thread (thread index 0). `stealable`: a one-token
   * matmul whose chunks the caller may take from a late worker (see the top; needs the workers' private
   * areas given to start, at most MAX_STEAL_CHUNKS chunks and stealableJob).
   */
  run(n: number, self: ChunkRunner, stealable = false): void {
    const gen = (this.gen = nextGen(this.gen));
    const cr = self.callerRun;
    if (cr === undefined || KernelThreads.jsCallerRun) this.runJs(n, self, stealable, gen);
    else {
      // one call: no JavaScript loop for the engine to compile while both cores are busy (the first decode tokens)
      const timing = KernelThreads.timing;
      const r = cr(this.control, n, gen, stealable ? 1 : 0, KernelThreads.stealWaitMs ?? NaN, timing ? 1 : 0);
      this.stolen += r & 0xffff;
      if (timing) this.timed(r >>> 16, self.callerWaitMs?.() ?? 0);
    }
    const ctrl = this.ctrl();
    if (Atomics.load(ctrl, this.base + ERROR)) {
      Atomics.store(ctrl, this.base + ERROR, 0);
      throw new Error('a kernel worker thread failed');
    }
  }

  /** the hand-off statistics of one run (KernelThreads.timing): 1 when the workers finished first, the caller's wait */
  private timed(workersFirst: number, waitMs: number): void {
    this.handOff.runs++;
    this.handOff.workersFirst += workersFirst;
    this.handOff.waitMs += waitMs;
  }

  /** run's loops in JavaScript: the reference of wasm/matmul.ts callerRun, and for modules without it */
  private runJs(n: number, self: ChunkRunner, stealable: boolean, gen: number): void {
    const ctrl = this.ctrl();
    const b = this.base;
    const job = this.control + JOB_OFFSET;
    const steal = stealable && this.area !== 0 && n <= MAX_STEAL_CHUNKS && stealableJob(ctrl, job >>> 2);
    if (steal) for (let c = 0; c < n; c++) Atomics.store(ctrl, b + STATE + c, (gen << 16) | OPEN);
    Atomics.store(ctrl, b + STEAL, steal ? gen : 0);
    Atomics.store(ctrl, b + LIMIT, (gen << 16) | n);
    Atomics.store(ctrl, b + DONE, 0);
    Atomics.store(ctrl, b + CLAIM, gen << 16);
    Atomics.store(ctrl, b + GEN, gen);
    Atomics.notify(ctrl, b + GEN);
    let mine = 0;
    const t0 = steal ? performance.now() : 0;
    const takeAll = steal && KernelThreads.stealWaitMs !== undefined && KernelThreads.stealWaitMs < 0;
    for (let c = takeAll ? -1 : claim(ctrl, b, gen); c >= 0; c = claim(ctrl, b, gen)) {
      if (steal && Atomics.compareExchange(ctrl, b + STATE + c, (gen << 16) | OPEN, (gen << 16) | FINAL) !== ((gen << 16) | OPEN)) continue;
      self.runChunk(job, c, 0);
      mine++;
    }
    let done = Atomics.add(ctrl, b + DONE, mine) + mine;
    const timing = KernelThreads.timing;
    const tw = timing ? performance.now() : 0;
    const workersFirst = done >= n ? 1 : 0;
    if (steal && done < n) {
      // wait about two of our chunks' time for the workers' last chunks, then take what is not FINAL
      const now = performance.now();
      const until = now + (takeAll ? 0 : (KernelThreads.stealWaitMs ?? Math.max(0.005, (2 * (now - t0)) / Math.max(1, mine))));
      while (done < n && performance.now() < until) {
        for (let i = 0; i < 64 && done < n; i++) done = Atomics.load(ctrl, b + DONE);
      }
      for (let c = n - 1; c >= 0 && done < n; c--) {
        const v = Atomics.load(ctrl, b + STATE + c);
        if (v === ((gen << 16) | FINAL)) continue;
        if (Atomics.compareExchange(ctrl, b + STATE + c, v, (gen << 16) | FINAL) !== v) continue;
        self.runChunk(job, c, 0);
        this.stolen++;
        done = Atomics.add(ctrl, b + DONE, 1) + 1;
      }
    }
    for (let spin = 0; done < n; spin++) {
      if (spin < 100000) done = Atomics.load(ctrl, b + DONE);
      else {
        Atomics.wait(ctrl, b + DONE, done, 100);
        done = Atomics.load(ctrl, b + DONE);
      }
    }
    if (timing) this.timed(workersFirst, performance.now() - tw);
  }

  /** Stop the workers (they finish waiting and return) and terminate them. */
  close(): void {
    const ctrl = this.ctrl();
    Atomics.store(ctrl, this.base + QUIT, 1);
    Atomics.notify(ctrl, this.base + GEN);
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }
}
