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
 *   the job's parameters follow at control + JOB_OFFSET.
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
/** byte offset of the job parameters in the control block */
export const JOB_OFFSET = 64;
/** bytes of the control block (parameters included) */
export const CONTROL_BYTES = 512;
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

/** Loop of a worker thread: wait for a job, run the chunks it can claim, repeat until QUIT. */
export function kernelWorkerMain(init: KernelWorkerInit): void {
  const instance = new WebAssembly.Instance(init.module, { env: { memory: init.memory } });
  const run = instance.exports as unknown as ChunkRunner;
  const ctrl = new Int32Array(init.memory.buffer);
  const base = init.control >>> 2;
  const job = init.control + JOB_OFFSET;
  let seen = Atomics.load(ctrl, base + GEN);
  Atomics.add(ctrl, base + READY, 1);
  for (;;) {
    let g = Atomics.load(ctrl, base + GEN);
    for (let spin = 0; g === seen && spin < 20000; spin++) g = Atomics.load(ctrl, base + GEN);
    if (g === seen) {
      if (Atomics.load(ctrl, base + QUIT)) return;
      Atomics.wait(ctrl, base + GEN, seen, 1000);
      continue;
    }
    if (Atomics.load(ctrl, base + QUIT)) return;
    seen = g;
    for (let c = claim(ctrl, base, g); c >= 0; c = claim(ctrl, base, g)) {
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
 * The calling thread's side: `size` threads in all (size - 1 workers), sharing `memory`.
 */
export class KernelThreads {
  private readonly workers: WorkerHandle[] = [];
  private gen = 0;
  private readonly base: number;

  private constructor(
    private readonly memory: WebAssembly.Memory,
    private readonly control: number,
    readonly size: number,
  ) {
    this.base = control >>> 2;
  }

  /** Start size - 1 workers (null without a host thread starter or a shared memory). */
  static start(memory: WebAssembly.Memory, module: WebAssembly.Module, control: number, size: number): KernelThreads | null {
    if (!startWorker || size < 2) return null;
    const t = new KernelThreads(memory, control, size);
    const ctrl = t.ctrl();
    for (let i = 0; i < CONTROL_BYTES / 4; i++) ctrl[t.base + i] = 0;
    for (let i = 1; i < size; i++) t.workers.push(startWorker({ memory, module, control, index: i }));
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

  /**
   * Run chunks [0, n) of the job whose parameters are at control + JOB_OFFSET on all threads; returns
   * when all are done. `self` runs a chunk on this thread (thread index 0).
   */
  run(n: number, self: ChunkRunner): void {
    const ctrl = this.ctrl();
    const b = this.base;
    const job = this.control + JOB_OFFSET;
    const gen = (this.gen = (this.gen + 1) & 0x7fff);
    Atomics.store(ctrl, b + LIMIT, (gen << 16) | n);
    Atomics.store(ctrl, b + DONE, 0);
    Atomics.store(ctrl, b + CLAIM, gen << 16);
    Atomics.store(ctrl, b + GEN, gen);
    Atomics.notify(ctrl, b + GEN);
    let mine = 0;
    for (let c = claim(ctrl, b, gen); c >= 0; c = claim(ctrl, b, gen)) {
      self.runChunk(job, c, 0);
      mine++;
    }
    let done = Atomics.add(ctrl, b + DONE, mine) + mine;
    for (let spin = 0; done < n; spin++) {
      if (spin < 100000) done = Atomics.load(ctrl, b + DONE);
      else {
        Atomics.wait(ctrl, b + DONE, done, 100);
        done = Atomics.load(ctrl, b + DONE);
      }
    }
    if (Atomics.load(ctrl, b + ERROR)) {
      Atomics.store(ctrl, b + ERROR, 0);
      throw new Error('a kernel worker thread failed');
    }
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
