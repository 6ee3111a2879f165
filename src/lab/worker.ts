/**
 * The Lab's worker script. One bundle, three roles, chosen by the worker's name:
 *   'job'    (the page's worker) opens models from File objects (lazily, File.slice), plans, quantizes
 *            into a streamed sink, evaluates, generates; every step is a call into the library;
 *   'row'    quantizes row ranges of a shared tensor for the job worker's RowPool (kernels/row-pool.ts);
 *   'kernel' runs the matmul engine's chunks (kernels/threads.ts) during evaluation and generation.
 * Cancelling = the page terminates the job worker, which ends its nested workers with it.
 */
import { LowbitError } from '../errors.js';
import { blobSource, type ByteSource } from '../io/source.js';
import { openModelFile, type ModelFile } from '../io/model-file.js';
import { openLlama2c } from '../io/llama2c.js';
import { plainValue } from '../io/gguf.js';
import { convertModel, tokenizerFromLlama2c } from '../io/convert.js';
import { convertHfFolder, type HfTokenizerFiles } from '../io/hf-families.js';
import { memorySink, type ByteSink } from '../io/sink.js';
import { setWasmVariant, type WasmVariant } from '../kernels/wasm.js';
import { installWasmQuantizers } from '../kernels/ggml-quant.js';
import { RowPool, runPoolJob, type PoolJob, type RowWorkerPort } from '../kernels/row-pool.js';
import { kernelWorkerMain, setStartWorker, type KernelWorkerInit } from '../kernels/threads.js';
import { MatmulEngine } from '../kernels/matmul.js';
import { dequantizeScheme, quantizeScheme, resolveScheme } from '../quant/registry.js';
import type { RoundingMode } from '../formats/rounding.js';
import { algorithmName } from '../algos/recipe.js';
import { loadModel } from '../eval/load.js';
import { generate } from '../eval/generate.js';
import { sqnrDb } from '../eval/metrics.js';
import { checkImatrix, planQuantization, quantize, readFloats, type QuantizePlan, type QuantizeReport } from '../pipeline/quantize.js';
import type { RowQuantizer } from '../pipeline/plan.js';
import { evaluateQuantization } from '../pipeline/evaluate.js';
import { readImatrix } from '../pipeline/imatrix-file.js';
import type { EvaluateResult, ModelSummary, PlanSummary, QuantizeResult, Reply, Request, SinkKind, TensorSqnrResult } from './protocol.js';
import { recipeFromForm } from './recipe-form.js';
import { allocateForBpw } from './allocate.js';

interface WorkerScope {
  name: string;
  postMessage(m: unknown, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent) => void) | null;
  location: { href: string; search: string };
  crossOriginIsolated?: boolean;
  navigator: Navigator;
}
const scope = globalThis as unknown as WorkerScope;
const selfUrl = import.meta.url;

// ---- nested workers -----------------------------------------------------------------------------

function rowWorker(variant: WasmVariant): RowWorkerPort {
  const w = new Worker(selfUrl, { type: 'module', name: 'row' });
  w.postMessage({ variant });
  return {
    post: (job) => w.postMessage(job),
    listen(onMessage, onError) {
      w.onmessage = (e) => onMessage(e.data as { id: number; error?: string });
      w.onerror = (e) => onError(new Error(e.message || 'a quantize worker failed'));
    },
    terminate: () => w.terminate(),
  };
}

function startKernelWorker(init: KernelWorkerInit) {
  const w = new Worker(selfUrl, { type: 'module', name: 'kernel' });
  w.postMessage(init);
  return w;
}

installWasmQuantizers(); // the WebAssembly quantizers into the GGML type-traits table (every worker kind)

if (scope.name === 'row') {
  let ready = false;
  scope.onmessage = (e) => {
    if (!ready) {
      setWasmVariant((e.data as { variant: WasmVariant }).variant);
      ready = true;
      return;
    }
    const job = e.data as PoolJob & { id: number };
    try {
      runPoolJob(job);
      scope.postMessage({ id: job.id });
    } catch (err) {
      scope.postMessage({ id: job.id, error: (err as Error)?.message ?? String(err) });
    }
  };
} else if (scope.name === 'kernel') {
  scope.onmessage = (e) => {
    scope.onmessage = null;
    kernelWorkerMain(e.data as KernelWorkerInit);
  };
} else {
  startJobWorker();
}

/** time spent in reads of the opened files (summed over reads, which overlap the rest) */
const clock = { read: 0 };
function timedSource(f: Blob, name: string): ByteSource {
  const src = blobSource(f, name);
  const timed = async <T>(p: Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await p;
    } finally {
      clock.read += performance.now() - t0;
    }
  };
  return { size: src.size, name: src.name, read: (o, n) => timed(src.read(o, n)), readInto: (o, d) => timed(src.readInto!(o, d)) };
}

// ---- the job worker -----------------------------------------------------------------------------

interface Opened {
  files: File[];
  model: ModelFile;
  /** the file the runtime loads (the GGUF or llama2.c checkpoint) */
  main: File;
  /** a tokenizer file given alongside a llama2.c checkpoint */
  tokenizer?: File;
  /** a Hugging Face checkpoint's config.json (parsed) and tokenizer files, chosen with its safetensors */
  hf?: { config: unknown; tokenizer: HfTokenizerFiles };
  label: string;
}

function startJobWorker(): void {
  const params = new URLSearchParams(scope.location.search);
  const isolated = scope.crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
  const asked = Number(params.get('threads'));
  const threads = isolated ? (Number.isInteger(asked) && asked >= 1 ? asked : Math.max(1, scope.navigator.hardwareConcurrency || 1)) : 1;
  if (threads > 1) setStartWorker(startKernelWorker);
  let pool: RowPool | undefined;
  let opened: Opened | undefined;

  const post = (r: Reply) => scope.postMessage(r);

  scope.onmessage = async (e) => {
    const { id, req } = e.data as { id: number; req: Request };
    try {
      const value = await handle(id, req);
      post({ id, kind: 'result', value });
    } catch (err) {
      post({ id, kind: 'error', message: messageOf(err) });
    }
  };

  /** progress messages, at most ~10 a second */
  function progress(id: number) {
    let last = 0;
    return (fraction: number, message: string, rate?: string, force = false) => {
      const now = performance.now();
      if (!force && now - last < 100) return;
      last = now;
      post({ id, kind: 'progress', fraction, message, rate });
    };
  }

  async function handle(id: number, req: Request): Promise<unknown> {
    switch (req.op) {
      case 'open':
        opened = await open(req.files, req.label);
        return summarize(opened);
      case 'plan':
        return planSummary(await planFor(req.form));
      case 'quantize':
        return quantizeJob(id, req);
      case 'evaluate':
        return evaluateJob(id, req);
      case 'generate':
        return generateJob(id, req);
      case 'tensor-sqnr':
        return tensorSqnr(req);
    }
  }

  function need(): Opened {
    if (!opened) throw new LowbitError('open a model first');
    return opened;
  }

  /**
   * The matmul engine on all threads, once its workers have started: nested workers start only while
   * this worker's event loop runs, and a worker that joined in the middle of a job would make the
   * first calls single-threaded (or worse, instantiate its module while the others compute).
   */
  async function engineThreads(): Promise<void> {
    const e = MatmulEngine.get();
    if (!e || e.setThreads(threads) < 2) return;
    for (let i = 0; i < 250 && e.threadStats().ready < e.threads - 1; i++) await new Promise((r) => setTimeout(r, 20));
  }

  async function open(files: File[], label?: string): Promise<Opened> {
    if (!files.length) throw new LowbitError('no file chosen');
    const byName = new Map(files.map((f) => [f.name, f]));
    // the model file: a GGUF, the safetensors index, a single safetensors, or a llama2.c .bin (with tokenizer.bin)
    const index = files.find((f) => /\.index\.json$/i.test(f.name));
    const config = byName.get('config.json');
    const tokenizer = config ? undefined : files.find((f) => /^tok.*\.(bin|model)$/i.test(f.name) && files.length > 1);
    const hfFile = (n: string) => byName.get(n);
    const hf = config
      ? {
          config: parseJsonFile(await config.text(), 'config.json'),
          tokenizer: {
            tokenizerJson: await hfFile('tokenizer.json')?.text(),
            tokenizerConfig: await hfFile('tokenizer_config.json')?.text(),
            sentencepiece: hfFile('tokenizer.model') && new Uint8Array(await hfFile('tokenizer.model')!.arrayBuffer()),
          },
        }
      : undefined;
    const main = index ?? files.find((f) => f !== tokenizer && !/\.json$/i.test(f.name) && !(hf && /^tokenizer\.model$/.test(f.name))) ?? files[0];
    const model = await openModelFile(timedSource(main, main.name), {
      openSibling: async (name) => {
        const f = byName.get(name);
        if (!f) throw new LowbitError(`${main.name} needs ${name}: choose it together with the index (select all shard files at once)`);
        return timedSource(f, f.name);
      },
      llama2c: async (src) => openLlama2c(src),
    });
    return { files, model, main, tokenizer, hf, label: label ?? main.name };
  }

  function summarize(o: Opened): ModelSummary {
    const m = o.model;
    const parameters = m.tensors.reduce((s, t) => s + t.nElements, 0);
    const tensorBytes = m.tensors.reduce((s, t) => s + t.byteLength, 0);
    const metadata: [string, string][] = [];
    for (const [k, v] of m.metadata) {
      const p = typeof v === 'object' && v !== null && 'type' in v ? plainValue(v) : v;
      metadata.push([k, displayValue(p)]);
    }
    return {
      name: o.label,
      format: m.format + (m.version ? ` v${m.version}` : ''),
      size: o.files.reduce((s, f) => s + f.size, 0),
      parameters,
      bitsPerWeight: parameters ? (tensorBytes * 8) / parameters : 0,
      metadata,
      tensors: m.tensors.map((t) => ({ name: t.name, shape: [...t.shape], type: t.type, bytes: t.byteLength, elements: t.nElements })),
      runnable: m.format === 'gguf' || (m.format === 'llama2c' && !!o.tokenizer),
    };
  }

  /** The model the quantizer reads: the opened one, or (GGUF output from another format) a GGUF conversion of it. */
  async function planFor(form: Request & { op: 'plan' } extends { form: infer F } ? F : never, withImatrix = false): Promise<{ plan: QuantizePlan; converts: boolean }> {
    const o = need();
    const { recipe, output } = recipeFromForm(form);
    const converts = output === 'gguf' && o.model.format !== 'gguf';
    const model = converts ? await convertedForPlan(o) : o.model;
    return { plan: planQuantization(model, recipe, output, { hasImatrix: withImatrix }), converts };
  }

  /** A GGUF view of a llama2.c / safetensors model, converted in memory for planning (small) or into OPFS. */
  let converted: { of: Opened; model: ModelFile; blob: Blob } | undefined;
  async function convertedForPlan(o: Opened): Promise<ModelFile> {
    if (converted?.of === o) return converted.model;
    const tok = o.tokenizer ? tokenizerFromLlama2c(new Uint8Array(await o.tokenizer.arrayBuffer()), Math.abs(Number(o.model.metadata.get('vocab_size') ?? 0)) || vocabOf(o.model), o.tokenizer.name) : undefined;
    const sink = await opfsSink(`convert-${Date.now()}.gguf`).catch(() => undefined);
    const target: ByteSink & { finish?(): Promise<Blob> } = sink ?? memoryBlobSink();
    // a Hugging Face checkpoint (config.json chosen with it) converts as lowbit convert DIR does; others as lowbit convert FILE
    if (o.hf && o.model.format === 'safetensors') await convertHfFolder(o.model, o.hf.config, target, { tokenizer: o.hf.tokenizer });
    else await convertModel(o.model, target, { to: 'gguf', tokenizer: tok ? [...tok.head, ...tok.special] : undefined });
    const blob = await target.finish!();
    const model = await openModelFile(blobSource(blob, o.main.name.replace(/\.\w+$/, '') + '.gguf'));
    converted = { of: o, model, blob };
    return model;
  }

  function planSummary({ plan, converts }: { plan: QuantizePlan; converts: boolean }): PlanSummary {
    const tensors = plan.tensors.map((p) => {
      const n = p.ne.reduce((a, b) => a * b, 1);
      const rows = n / p.ne[0];
      const bytes = p.scheme ? p.scheme.packedBytes(rows, p.ne[0]) : p.ggml ? (n / p.ggml.blockSize) * p.ggml.typeSize : n * 4;
      return { name: p.name, shape: [...p.ne].reverse(), from: p.from, to: p.to, bytes, ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) };
    });
    const bytes = tensors.reduce((s, t) => s + t.bytes, 0);
    const parameters = plan.tensors.reduce((s, p) => s + p.ne.reduce((a, b) => a * b, 1), 0);
    if (plan.output === 'onnx') throw new Error('internal: the Lab plans no ONNX output');
    return { output: plan.output, recipe: plan.recipe.name, algorithm: algorithmName(plan.recipe.algorithm), tensors, bytes, parameters, bitsPerWeight: (bytes * 8) / parameters, converts };
  }

  async function quantizeJob(id: number, req: Request & { op: 'quantize' }): Promise<QuantizeResult> {
    const o = need();
    const t0 = performance.now();
    const say = progress(id);
    const imatrix = req.imatrix ? await readImatrix(blobSource(req.imatrix, req.imatrix.name)) : undefined;
    let { plan } = await planFor(req.form, !!imatrix);
    const model = plan.output === 'gguf' && o.model.format !== 'gguf' ? await convertedForPlan(o) : o.model;
    if (req.form.targetBpw) {
      // mixed precision: per-tensor types for the size, from costs measured on the calibration text
      await engineThreads();
      const src = blobSource(o.model.format === 'gguf' ? o.main : converted!.blob, o.main.name);
      const allocation = await allocateForBpw(src, model, plan.recipe, req.form.targetBpw, req.calibText, threads, (msg) => say(0, msg));
      plan = planQuantization(model, allocation.recipe, 'gguf', { hasImatrix: !!imatrix });
    }
    if (imatrix) checkImatrix(model, plan, imatrix, `imatrix ${req.imatrix!.name}`);
    const recipe = plan.recipe;
    MatmulEngine.get()?.setThreads(threads); // the calibration's matmuls, when the recipe has some
    const planned = planSummary({ plan, converts: false }).bytes;
    const inputBytes = plan.tensors.reduce((s, p) => s + model.tensor(p.name).byteLength, 0);
    // T row workers quantize; this thread only hands out slabs: a Blob read is drained by the event loop
    // of the thread that asked for it, so a job thread busy in a quantizer stalls its own read-ahead
    // (measured: reads overlapped nothing, 0.36x the CLI on Q8_0)
    if (threads > 1) pool ??= new RowPool(threads + 1, rowWorker, { callerWorks: false });
    const sink = await openSink(req.sink, req.outputName, req.handle);
    let written = 0;
    const tq = performance.now();
    const timing = { read: 0, quantize: 0, write: 0 };
    const read0 = clock.read;
    const workers = timedPool(pool ?? new RowPool(1, rowWorker), timing); // one thread: RowPool quantizes in this thread
    const counting: ByteSink = {
      async write(b) {
        const t1 = performance.now();
        written += b.length;
        const f = Math.min(1, written / Math.max(1, planned));
        const s = (performance.now() - tq) / 1000;
        say(f, `quantizing ${(100 * f).toFixed(0)} %`, s > 0.2 ? `${((f * inputBytes) / 1e6 / s).toFixed(0)} MB/s` : undefined);
        try {
          await sink.write(b);
        } finally {
          timing.write += (performance.now() - t1) / 1000;
        }
      },
    };
    let report: QuantizeReport;
    try {
      // the one verb: runs the recipe's algorithms (calibration with req.calibText) and writes the file
      report = await quantize(model, recipe, counting, {
        output: plan.output,
        imatrix,
        workers,
        threads,
        calibText: req.calibText,
        onProgress: (msg) => say(0, `calibrating: ${msg}`, undefined, true),
        onTensor: (i, n, r) => say(Math.min(1, written / Math.max(1, planned)), `${i}/${n} ${r.name}`),
      });
    } catch (e) {
      await sink.abort();
      throw e;
    }
    const t2 = performance.now();
    const file = await sink.finish();
    timing.write += (performance.now() - t2) / 1000;
    timing.read = (clock.read - read0) / 1000;
    say(1, 'done', undefined, true);
    return { report, outputName: req.outputName, file, sink: req.sink, seconds: (performance.now() - t0) / 1000, threads, timing };
  }

  async function evaluateJob(id: number, req: Request & { op: 'evaluate' }): Promise<EvaluateResult> {
    const o = need();
    if (!req.text.trim()) throw new LowbitError('the evaluation text is empty');
    const say = progress(id);
    await engineThreads();
    const original = blobSource(o.model.format !== 'gguf' && converted?.of === o ? converted.blob : o.main, o.main.name);
    const quantized = blobSource(req.quantized, req.quantizedName);
    say(0, 'running the original model…', undefined, true);
    const ev = await evaluateQuantization(original, quantized, req.text, { ctx: req.ctx, chunks: req.chunks, textName: req.textName, onChunk: (d, n) => say(d / n, `chunk ${d}/${n}`) });
    return { evaluation: ev };
  }

  async function generateJob(id: number, req: Request & { op: 'generate' }): Promise<{ text: string; tokensPerSecond: number }> {
    const o = need();
    const src = req.which === 'quantized' ? (req.quantized ? blobSource(req.quantized, req.quantizedName ?? 'quantized') : undefined) : blobSource(o.main, o.main.name);
    if (!src) throw new LowbitError('quantize a model first (or generate with the original)');
    await engineThreads();
    const loaded = await loadModel(src, { tokenizer: req.which === 'original' && o.tokenizer ? blobSource(o.tokenizer, o.tokenizer.name) : undefined });
    if (!loaded.tokenizer) throw new LowbitError(`${src.name} carries no vocabulary`);
    const r = generate(loaded.model, loaded.tokenizer, req.prompt, { steps: req.steps, temperature: req.temperature, seed: req.seed, onText: (text) => post({ id, kind: 'text', text }) });
    return { text: r.text, tokensPerSecond: r.decodeSteps / Math.max(1e-9, r.decodeSeconds) };
  }

  async function tensorSqnr(req: Request & { op: 'tensor-sqnr' }): Promise<TensorSqnrResult> {
    const o = need();
    const t0 = performance.now();
    const t = o.model.tensor(req.tensor);
    const x = await readFloats(o.model, t);
    const rowLength = t.shape[t.shape.length - 1];
    const rows = t.nElements / rowLength;
    const granularity = req.granularity === 'tensor' ? 'tensor' : req.granularity === 'row' ? 'channel' : 'group';
    const scheme = resolveScheme(req.format, { granularity, groupSize: req.granularity === 'block32' ? 32 : undefined, rounding: req.rounding as RoundingMode, seed: req.seed });
    if (scheme.blockSize > 0 && rowLength % scheme.blockSize !== 0) throw new LowbitError(`${t.name}: rows of ${rowLength} values do not split into blocks of ${scheme.blockSize}`);
    const y = dequantizeScheme(scheme, quantizeScheme(scheme, x, rows, rowLength), rows, rowLength);
    const sample: [number, number][] = [];
    const step = Math.max(1, Math.floor(x.length / 2000));
    for (let i = 0; i < x.length; i += step) sample.push([x[i], y[i]]);
    let amax = 0;
    for (let i = 0; i < x.length; i++) amax = Math.max(amax, Math.abs(x[i]));
    return { tensor: t.name, format: scheme.id, sqnrDb: sqnrDb(x, y), elements: x.length, sample, scale: amax, seconds: (performance.now() - t0) / 1000 };
  }
}

/** the pool, with the time its calls take (this thread quantizes ranges too) added to timing.quantize */
function timedPool(pool: RowPool, timing: { quantize: number }): RowQuantizer {
  return {
    ...(pool.threads > 1 ? { allocate: (n: number) => pool.allocate(n), allocateBytes: (n: number) => pool.allocateBytes(n) } : {}),
    async quantizeRows(...a) {
      const t0 = performance.now();
      try {
        return await pool.quantizeRows(...a);
      } finally {
        timing.quantize += (performance.now() - t0) / 1000;
      }
    },
  };
}

// ---- sinks --------------------------------------------------------------------------------------

interface FinishingSink extends ByteSink {
  /** the whole output, once written (a disk-backed File for OPFS / FSA) */
  finish(): Promise<Blob>;
  /** drop what was written */
  abort(): Promise<void>;
}

/** a non-shared copy when the bytes live in shared memory (file APIs take only unshared buffers) */
let staging = new Uint8Array(0);
function unshared(b: Uint8Array): Uint8Array {
  if (typeof SharedArrayBuffer !== 'function' || !(b.buffer instanceof SharedArrayBuffer)) return b;
  if (staging.length < b.length) staging = new Uint8Array(b.length);
  const s = staging.subarray(0, b.length);
  s.set(b);
  return s;
}

interface SyncAccessHandle {
  write(b: BufferSource, o: { at: number }): number;
  flush(): void;
  close(): void;
}

async function openSink(kind: SinkKind, name: string, handle?: FileSystemFileHandle): Promise<FinishingSink> {
  if (kind === 'fsa') {
    if (!handle) throw new LowbitError('no file chosen to save to');
    return fsaSink(handle);
  }
  if (kind === 'opfs') return opfsSink(name);
  return memoryBlobSink();
}

/** Origin Private File System: a sync access handle on a temp name, renamed when complete. */
async function opfsSink(name: string): Promise<FinishingSink> {
  const dir = await navigator.storage.getDirectory();
  const tmp = `.partial-${Date.now()}-${Math.random().toString(36).slice(2)}-${name}`;
  const fh = await dir.getFileHandle(tmp, { create: true });
  const ah = (await (fh as unknown as { createSyncAccessHandle(): Promise<SyncAccessHandle> }).createSyncAccessHandle()) as SyncAccessHandle;
  let at = 0;
  return {
    async write(b) {
      // a sync write blocks this thread: let the pipeline first hand the next slab to the row workers
      // (they quantize it meanwhile; the caller reuses b only once this write has resolved)
      await new Promise((r) => setTimeout(r, 0));
      let off = 0;
      const u = unshared(b);
      while (off < u.length) off += ah.write(u.subarray(off) as Uint8Array<ArrayBuffer>, { at: at + off });
      at += u.length;
    },
    async finish() {
      ah.flush();
      ah.close();
      await dir.removeEntry(name).catch(() => undefined);
      await (fh as unknown as { move(n: string): Promise<void> }).move(name);
      return (await dir.getFileHandle(name)).getFile();
    },
    async abort() {
      ah.close();
      await dir.removeEntry(tmp).catch(() => undefined);
    },
  };
}

/** File System Access API: the user's chosen file, written through a swap file that replaces it on close. */
async function fsaSink(handle: FileSystemFileHandle): Promise<FinishingSink> {
  const w = await (handle as unknown as { createWritable(): Promise<FileSystemWritableFileStream> }).createWritable();
  return {
    async write(b) {
      await w.write(b.slice() as BufferSource);
    },
    async finish() {
      await w.close();
      return handle.getFile();
    },
    async abort() {
      await w.abort();
    },
  };
}

/** Small files without OPFS: in memory, handed over as a Blob. */
function memoryBlobSink(): FinishingSink {
  const m = memorySink();
  return {
    write: (b) => m.write(b),
    async finish() {
      return new Blob([m.bytes() as BlobPart]);
    },
    async abort() {},
  };
}

// ---- helpers ------------------------------------------------------------------------------------

function parseJsonFile(text: string, name: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new LowbitError(`${name} is not valid JSON: ${(e as Error).message}`);
  }
}

function vocabOf(m: ModelFile): number {
  const emb = m.tensors.find((t) => t.name === 'token_embd.weight');
  return emb ? emb.shape[0] : 0;
}

function displayValue(v: unknown): string {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return v.length > 200 ? `${v.slice(0, 200)}… (${v.length} chars)` : v;
  if (ArrayBuffer.isView(v) || Array.isArray(v)) {
    const a = Array.from(v as ArrayLike<unknown>);
    const head = a.slice(0, 8).map((x) => (typeof x === 'string' ? JSON.stringify(x) : String(x))).join(', ');
    return `[${head}${a.length > 8 ? `, … ${a.length} items` : ''}]`;
  }
  return String(v);
}

function messageOf(e: unknown): string {
  if (e instanceof LowbitError) return e.message;
  if (e instanceof Error) {
    if (e.name === 'QuotaExceededError') return `the browser's storage is full (${e.message})`;
    if (/memory/i.test(e.message) || e instanceof RangeError) return `out of memory or an impossible size: ${e.message}`;
    return e.message;
  }
  return String(e);
}

