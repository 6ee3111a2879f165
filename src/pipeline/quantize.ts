/**
 * quantize(model, recipe): the main job. Plans every tensor's target (llama.cpp's mixing rules for
 * file-type recipes, recipe rules otherwise), quantizes into GGUF (GGML block types) or safetensors
 * (generic schemes), and reports what each tensor lost (SQNR dB) and what it costs (bits per weight).
 *
 * Memory: GGUF output streams a slab of whole rows at a time (at most SLAB_ELEMENTS values, never
 * crossing an expert's matrix), so peak memory is a few slabs whatever the model size. The slabs
 * rotate through SLAB_BUFFERS input and output buffers: while one slab is quantized, the next ones
 * are read (ModelFile.readInto, straight into the workers' shared memory when they offer it) and
 * the sink writes the previous ones. The SQNR is summed per row while each row is quantized
 * (quantizeRowsMeasured), so it does not depend on the threads or slabs either. Safetensors output
 * holds one tensor at a time (some schemes, e.g. NVFP4, have a tensor-wide scale).
 *
 * safetensors layout for generic schemes: a quantized weight `W` ([rows, rowLength] floats) is stored
 * as one U8 tensor `W` of shape [packedBytes] holding the scheme's packed blocks in row order (see
 * `lowbit schemes` for each layout), and `__metadata__["lowbit.quant.W"]` = JSON
 * {"scheme": id, "shape": [rows, rowLength]}. `__metadata__["lowbit.recipe"]` holds the recipe.
 * Unquantized tensors keep their float dtype.
 */
import { fail, LowbitError } from '../errors.js';
import { importanceOf, type Imatrix } from '../algos/imatrix.js';
import { ptqOptions, type PtqOptions } from '../algos/ptq-options.js';
import type { Recipe } from '../algos/recipe.js';
import { ggmlCodec, ggmlTypeTraits } from '../quant/ggml/registry.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { quantizeScheme } from '../quant/registry.js';
import { gguf, ggufFileSize, GgufWriter, plainValue, type GgufValue } from '../io/gguf.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import { SafetensorsWriter } from '../io/safetensors.js';
import type { ByteSink } from '../io/sink.js';
import { fromFloat32, isFloatKind, toFloat32 } from '../io/tensor-data.js';
import { sqnrDb } from '../eval/metrics.js';
import { installWasmQuantizers, quantizeRowsMeasured } from '../kernels/ggml-quant.js';
import { rowErrorSums } from '../quant/ggml/row-error.js';
import { planPackedLayout, writePacked } from './quantize-packed.js';
import { writeOnnxModel } from './quantize-onnx.js';
import { runPtq, type PtqOutput } from './calibrate.js';
import { calibrationNeeds, codecOf, isQuantized } from './passes/load.js';
import { algorithmsOf, extraTensorSpecs, learnsLayer, needsHandler, roundWeight } from './algorithms.js';
import { checkRank } from '../algos/lorc.js';
import type { GptqWorkers } from './gptq-parts.js';
import { checkImatrix, matrices, planOnnx, planTensors, readFloats, resolveOptionsOf, rows, type LayoutOptions, type OutputKind, type QuantizeOptions, type QuantizePlan, type QuantizeReport, type RowQuantizer, type StoredExtra, type TensorPlan, type TensorReport } from './plan.js';

export { checkImatrix, readFloats, resolveOptionsOf, planTensors, planOnnx };
export type { LayoutOptions, QuantizeOptions, QuantizePlan, QuantizeReport, RowQuantizer, TensorPlan, TensorReport };

/** Decide each tensor's target without reading any tensor data (`--dry-run`); `layout` gptq/awq plans a packed HF checkpoint; ONNX plans the graph rewrite. */
export function planQuantization(m: ModelFile, recipe: Recipe, output: OutputKind, opts: { hasImatrix?: boolean; mixLayers?: number } & LayoutOptions = {}): QuantizePlan {
  if (output === 'onnx') return planOnnx(m, recipe);
  if (m.format === 'onnx') fail(`${m.name}: an ONNX model is written as ONNX (an output ending in .onnx)`);
  const plan = planTensors(m, recipe, output, { hasImatrix: opts.hasImatrix, mixLayers: opts.mixLayers });
  return opts.layout && opts.layout !== 'lowbit' ? planPackedLayout(m, plan, { layout: opts.layout, keepUnpackable: opts.keepUnpackable }) : plan;
}

/** importance vector of a tensor (n_in per matrix, all matrices), undefined when the imatrix lacks it */
function importanceFor(imatrix: Imatrix | undefined, name: string): Float32Array | undefined {
  const e = imatrix?.entries.get(name);
  return e ? importanceOf(e) : undefined;
}

/** values per slab of rows: 4 Mi floats = 16 MiB of f32 input */
export const SLAB_ELEMENTS = 1 << 22;

/** bytes of one row of `rowLength` values stored as `type` (a GGML type name) */
function rowBytesOf(type: string, rowLength: number): number {
  const g = ggmlTypeByName(type);
  if (!g) fail(`cannot read tensor type ${type}`);
  return (rowLength / g.blockSize) * g.typeSize;
}

/** one slab of a tensor: rows [r0, r0 + k) of one matrix (an expert's rows never straddle slabs) */
interface Slab {
  r0: number;
  k: number;
  matrix: number;
}

/** bytes of a tensor's largest slab as stored (its plan's GGML type) */
function slabBytes(p: TensorPlan): number {
  const g = p.ggml as GgmlTypeInfo;
  const rowLength = p.ne[0];
  const n = p.ne.reduce((a, b) => a * b, 1);
  return Math.max(0, ...slabsOf(rowLength, n / rowLength, matrices(p.ne)).map((s) => ((s.k * rowLength) / g.blockSize) * g.typeSize));
}

/** The slabs of a tensor of nRows rows of rowLength values, `matrices` matrices of rows. */
function slabsOf(rowLength: number, nRows: number, nMatrices: number): Slab[] {
  const rowsPerMatrix = nRows / nMatrices; // an expert's rows share one importance vector
  const slabRows = Math.max(1, Math.floor(SLAB_ELEMENTS / rowLength));
  const out: Slab[] = [];
  for (let r0 = 0; r0 < nRows; ) {
    const matrix = Math.floor(r0 / rowsPerMatrix);
    const k = Math.min(slabRows, (matrix + 1) * rowsPerMatrix - r0);
    out.push({ r0, k, matrix });
    r0 += k;
  }
  return out;
}

/** rows [row0, row0 + nRows) of a tensor as float32, into dest (nRows * rowLength values) */
async function readRowsInto(m: ModelFile, t: ModelTensor, rowLength: number, row0: number, nRows: number, dest: Float32Array): Promise<Float32Array> {
  const rb = rowBytesOf(t.type, rowLength);
  const n = nRows * rowLength;
  const out = dest.subarray(0, n);
  if (t.type === 'F32') {
    const view = new Uint8Array(out.buffer, out.byteOffset, n * 4);
    if (m.readInto) await m.readInto(t, row0 * rb, view); // straight into dest (no intermediate buffer)
    else view.set(await m.read(t, row0 * rb, nRows * rb));
    return out;
  }
  return toFloat32(t.type, await m.read(t, row0 * rb, nRows * rb), out); // the type's row: float conversion or block codec
}

/** slab buffers on each side of the quantizer: up to 2 slabs read ahead, up to 2 slabs waiting to be written */
const SLAB_BUFFERS = 3;

/**
 * Reads a list of slabs in order into `depth` rotating buffers: while the caller quantizes slab i,
 * slabs i + 1 .. i + depth - 1 are read (e.g. on the file system's threads). The array next()
 * returns stays valid until the following call to next().
 */
class SlabReader {
  private started = 0;
  private returned = 0;
  private readonly pending: Promise<Float32Array>[] = [];
  private readonly buffers: Float32Array[] = [];
  private readonly capacity: number;

  constructor(
    private readonly m: ModelFile,
    private readonly slabs: readonly { t: ModelTensor; rowLength: number; slab: Slab }[],
    private readonly allocate: (n: number) => Float32Array,
    private readonly depth = SLAB_BUFFERS,
  ) {
    this.capacity = Math.max(0, ...slabs.map((s) => s.slab.k * s.rowLength));
  }

  private start(i: number): Promise<Float32Array> {
    const s = this.slabs[i];
    const j = i % this.depth;
    this.buffers[j] ??= this.allocate(this.capacity);
    const p = readRowsInto(this.m, s.t, s.rowLength, s.slab.r0, s.slab.k, this.buffers[j]);
    p.catch(() => undefined); // the caller may fail first; next() or settle() still sees the error
    return p;
  }

  /** the next slab's values */
  async next(): Promise<Float32Array> {
    // the caller is done with the slab returned last: its buffer takes the read depth slabs after it
    while (this.started < this.slabs.length && this.started < this.returned + this.depth) this.pending.push(this.start(this.started++));
    const p = this.pending.shift();
    if (!p) fail('internal: no slab left to read');
    this.returned++;
    return p;
  }

  /** wait for the reads still in flight (before the source is closed) */
  async settle(): Promise<void> {
    for (const p of this.pending.splice(0)) await p.catch(() => undefined);
  }
}

/**
 * Quantize a slab of nRows rows to a GGML type (on `workers` when given; same bytes) into `out`,
 * filling rowErr with each row's error sums (quantizeRowsMeasured); returns out cut to length.
 */
async function quantizeSlab(x: Float32Array, rowLength: number, nRows: number, type: GgmlTypeInfo, importance: Float32Array | undefined, workers: RowQuantizer | undefined, what: string, firstRow: number, rowErr: Float64Array, out: Uint8Array): Promise<Uint8Array> {
  const n = nRows * rowLength;
  if (isFloatKind(type.name)) {
    const bytes = fromFloat32(type.name, x.subarray(0, n), out.subarray(0, (n * type.typeSize) / type.blockSize));
    rowErrorSums(x, toFloat32(type.name, bytes), nRows, rowLength, rowErr);
    return bytes;
  }
  const c = ggmlCodec(type);
  if (!c?.quantize) fail(`lowbit cannot quantize to ${type.name} yet (dequantize only)`);
  // the codecs reject NaN and infinities themselves, naming the element, row and column
  if (workers) return named(what, firstRow, () => workers.quantizeRows(type, x, nRows, rowLength, importance, rowErr, out));
  const bytes = out.subarray(0, (n / type.blockSize) * type.typeSize);
  named(what, firstRow, () => quantizeRowsMeasured(c, x, nRows, rowLength, bytes, rowErr, importance));
  return bytes;
}

/** runs fn, prefixing lowbit errors with the tensor (and the slab's first row) */
function named<T>(what: string, firstRow: number, fn: () => T): T {
  const rename = (e: unknown): never => {
    if (e instanceof LowbitError) fail(`${what}${firstRow ? ` (rows counted from ${firstRow})` : ''}: ${e.message}`);
    throw e;
  };
  try {
    const r = fn();
    return (r instanceof Promise ? r.catch(rename) : r) as T;
  } catch (e) {
    return rename(e);
  }
}

/** What a writer reports each tensor with (quantizeModel collects the reports). */
export type TensorDone = (r: TensorReport) => void;

/**
 * One writer per output container, one interface: write every planned tensor of m into sink (the
 * bytes of opts.ptq / opts.roundTensor where the algorithms produced them, quantized here otherwise),
 * reporting each tensor; container-specific results (a config.json) come back as report fields.
 */
export type ModelWriter = (m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions, done: TensorDone) => Promise<Partial<QuantizeReport> | void>;

/** The metadata of the GGUF writeGguf writes for a plan: the input's, with the file type and the imatrix's summary. */
export function ggufOutputMetadata(m: ModelFile, plan: QuantizePlan, imatrix?: Imatrix): Map<string, GgufValue> {
  if (m.format !== 'gguf' || !m.gguf) fail(`quantizing to GGUF needs a GGUF input (convert first: lowbit convert ${m.name} model.gguf)`);
  const meta = new Map<string, GgufValue>(m.gguf.metadata);
  // llama-quantize's order: the input's keys, then (replaced in place where present) these two
  meta.set('general.quantization_version', gguf.u32(2));
  if (plan.ftypeId !== undefined) meta.set('general.file_type', gguf.u32(plan.ftypeId));
  if (imatrix) {
    meta.set('quantize.imatrix.entries_count', gguf.u32(imatrix.entries.size));
    meta.set('quantize.imatrix.chunks_count', gguf.u32(imatrix.chunkCount));
    if (imatrix.datasets.length) meta.set('quantize.imatrix.dataset', gguf.str(imatrix.datasets[imatrix.datasets.length - 1]));
  }
  return meta;
}

const ggufOutputTensors = (plan: QuantizePlan) => plan.tensors.map((p) => ({ name: p.name, ne: p.ne, type: p.ggml as GgmlTypeInfo }));

/** The exact size of the GGUF file `quantize()` writes for a plan (header, metadata, aligned tensor data). */
export function ggufOutputBytes(m: ModelFile, plan: QuantizePlan, imatrix?: Imatrix): number {
  return ggufFileSize(ggufOutputMetadata(m, plan, imatrix), ggufOutputTensors(plan));
}

/** GGUF: slab by slab, reads and writes overlapped, GGML types on the host's threads. */
async function writeGguf(m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions, done: TensorDone): Promise<void> {
  const w = new GgufWriter(sink, ggufOutputMetadata(m, plan, opts.imatrix), ggufOutputTensors(plan));
  // every tensor is either given (PTQ), copied, or quantized slab by slab from the transformed floats
  // (PTQ) or from the file; the file's slabs are read one ahead, across tensors
  const kindOf = (p: TensorPlan, t: ModelTensor) => (opts.ptq?.quantized.has(p.name) || opts.roundTensor?.(p) ? 'given' : opts.ptq?.floats.has(p.name) ? 'transformed' : p.to === t.type ? 'copy' : 'read');
  const toRead = plan.tensors.flatMap((p) => {
    const t = m.tensor(p.name);
    return kindOf(p, t) === 'read' ? slabsOf(p.ne[0], t.nElements / p.ne[0], matrices(p.ne)).map((slab) => ({ t, rowLength: p.ne[0], slab })) : [];
  });
  const reader = new SlabReader(m, toRead, (n) => opts.workers?.allocate?.(n) ?? new Float32Array(n));
  // output buffers: a slab is quantized into one while the sink writes the slabs before it (in order)
  const outBytes = Math.max(0, ...plan.tensors.map((p) => (['read', 'transformed'].includes(kindOf(p, m.tensor(p.name))) ? slabBytes(p) : 0)));
  const outs: Uint8Array[] = [];
  const outFree: Promise<void>[] = []; // when the write that last took outs[j] is done
  let slabNo = 0;
  let written: Promise<void> = Promise.resolve(); // all writes so far (rejects once one failed)
  /** queue bytes after the writes before (the sink may reuse nothing of ours before its write resolves) */
  const enqueue = (bytes: Uint8Array): Promise<void> => {
    written = written.then(() => w.write(bytes));
    written.catch(() => undefined); // seen by whoever awaits it next
    return written;
  };
  try {
    await w.begin();
    for (const p of plan.tensors) {
      const t = m.tensor(p.name);
      const n = t.nElements;
      const kind = kindOf(p, t);
      if (kind === 'given') {
        const pre = opts.ptq?.quantized.get(p.name) ?? (await roundWhole(m, t, p, opts.roundTensor!(p)!));
        await enqueue(pre.bytes);
        done({ name: p.name, shape: p.ne, type: p.to, bytes: pre.bytes.length, bitsPerWeight: (pre.bytes.length * 8) / n, sqnrDb: pre.sqnrDb, ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) });
        continue;
      }
      if (kind === 'copy') {
        for (let off = 0; off < t.byteLength; off += 4 * SLAB_ELEMENTS) await enqueue(await m.read(t, off, Math.min(4 * SLAB_ELEMENTS, t.byteLength - off)));
        done({ name: p.name, shape: p.ne, type: p.to, bytes: t.byteLength, bitsPerWeight: (t.byteLength * 8) / n, sqnrDb: Infinity });
        continue;
      }
      const transformed = opts.ptq?.floats.get(p.name);
      const type = p.ggml as GgmlTypeInfo;
      const rowLength = p.ne[0];
      const importance = ggmlCodec(type)?.usesImportance ? importanceFor(opts.imatrix, p.name) : undefined;
      const slabs = slabsOf(rowLength, n / rowLength, matrices(p.ne));
      const rowErr = new Float64Array(2 * Math.max(0, ...slabs.map((s) => s.k)));
      let signal = 0;
      let noise = 0;
      let bytesOut = 0;
      for (const { r0, k, matrix } of slabs) {
        const x = transformed ? transformed.subarray(r0 * rowLength, (r0 + k) * rowLength) : reader.next();
        const imp = importance?.subarray(matrix * rowLength, (matrix + 1) * rowLength);
        const j = slabNo++ % SLAB_BUFFERS;
        await outFree[j]; // the write of the slab that used this buffer before
        const out = (outs[j] ??= opts.workers?.allocateBytes?.(outBytes) ?? new Uint8Array(outBytes));
        const bytes = await quantizeSlab(await x, rowLength, k, type, imp, opts.workers, p.name, r0, rowErr, out);
        for (let r = 0; r < k; r++) {
          signal += rowErr[2 * r];
          noise += rowErr[2 * r + 1];
        }
        outFree[j] = enqueue(bytes);
        bytesOut += bytes.length;
      }
      const sqnr = noise === 0 ? Infinity : 10 * Math.log10(signal / noise);
      done({ name: p.name, shape: p.ne, type: p.to, bytes: bytesOut, bitsPerWeight: (bytesOut * 8) / n, sqnrDb: sqnr, ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) });
    }
    await written;
  } finally {
    await reader.settle();
    await written.catch(() => undefined);
  }
  await w.end();
}

/**
 * lowbit's safetensors: one tensor at a time (some schemes, e.g. NVFP4, have a tensor-wide scale);
 * a weight's extra tensors (algorithms.ts ExtraTensor: LoRC factors, EasyQuant outliers) follow it.
 */
async function writeLowbitSafetensors(m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions, done: TensorDone): Promise<void> {
  // the tensors stored beside a weight (LoRC factors, EasyQuant outliers): shapes known from the recipe
  const options = ptqOptions(plan.recipe.ptq ?? {});
  const extrasOf = (p: TensorPlan) => (isQuantized(p) ? extraTensorSpecs(algorithmsOf(plan.recipe, p.name), rows(p.ne), p.ne[0], options) : []);
  const specs = plan.tensors.flatMap((p) => {
    const shape = [...p.ne].reverse();
    const extra = extrasOf(p).map((x) => ({ name: p.name + x.suffix, dtype: x.dtype, shape: [...x.shape] }));
    if (p.scheme) return [{ name: p.name, dtype: 'U8', shape: [p.scheme.packedBytes(rows(p.ne), p.ne[0])] }, ...extra];
    return [{ name: p.name, dtype: isFloatKind(p.to) ? p.to : fail(`${p.name}: type ${p.to} cannot be stored in safetensors unquantized`), shape }, ...extra];
  });
  // new tensors of the transforms (OS+ biases), after the model's own
  const added = [...(opts.ptq?.added ?? [])];
  for (const [name, v] of added) {
    if (specs.some((x) => x.name === name)) fail(`internal: ${name} is both a model tensor and a new one`);
    specs.push({ name, dtype: 'F32', shape: [v.length] });
  }
  const metadata: Record<string, string> = { 'lowbit.recipe': JSON.stringify(plan.recipe), format: 'lowbit-quantized' };
  // the GGUF metadata (architecture, hyper-parameters, tokenizer) travels along, so lowbit can run the file
  if (m.gguf) metadata['lowbit.gguf'] = JSON.stringify(Object.fromEntries([...m.gguf.metadata].map(([k, v]) => [k, plainValue(v)])), (_k, v) => (typeof v === 'bigint' ? Number(v) : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v));
  for (const p of plan.tensors)
    // 3-D tensors (MoE experts) also record their ggml dims (2-D ones do not: their bytes stay as before)
    if (p.scheme) metadata[`lowbit.quant.${p.name}`] = JSON.stringify({ scheme: p.scheme.id, resolve: [p.rule?.scheme ?? p.scheme.id, resolveOptionsOf(p.rule)], shape: [rows(p.ne), p.ne[0]], ...(p.ne.length > 2 ? { ne: p.ne } : {}) });
  for (const p of plan.tensors) {
    const extra = extrasOf(p);
    if (extra.length) metadata[`lowbit.extras.${p.name}`] = JSON.stringify(extra.map((x) => x.suffix));
  }
  const w = new SafetensorsWriter(sink, specs, metadata);
  await w.begin();
  for (const p of plan.tensors) {
    const t = m.tensor(p.name);
    const round = opts.ptq ? undefined : opts.roundTensor?.(p);
    const pre = opts.ptq?.quantized.get(p.name) ?? (round ? await roundWhole(m, t, p, round) : undefined);
    const extra = extrasOf(p);
    if (extra.length && !pre) fail(`internal: ${p.name} needs ${extra.map((x) => x.suffix).join(', ')} but no algorithm produced them`);
    if (pre) {
      await w.write(pre.bytes);
      let bytes = pre.bytes.length;
      for (const x of extra) {
        const data = pre.extras?.find((e) => e.suffix === x.suffix)?.data;
        if (!data) fail(`internal: ${p.name}${x.suffix} was not produced`);
        await w.write(data);
        bytes += data.length;
      }
      done({ name: p.name, shape: p.ne, type: p.scheme?.id ?? p.to, bytes, bitsPerWeight: (bytes * 8) / t.nElements, sqnrDb: pre.sqnrDb });
      continue;
    }
    const x = opts.ptq?.floats.get(p.name) ?? (await readFloats(m, t));
    if (p.scheme) {
      for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) fail(`${p.name}: non-finite value at element ${i}`);
      const packed = quantizeScheme(p.scheme, x, rows(p.ne), p.ne[0]);
      const dq = p.scheme.dequantizeRef(packed, rows(p.ne), p.ne[0]);
      await w.write(packed);
      done({ name: p.name, shape: p.ne, type: p.scheme.id, bytes: packed.length, bitsPerWeight: (packed.length * 8) / x.length, sqnrDb: sqnrDb(x, dq) });
    } else {
      const kind = p.to;
      const bytes = fromFloat32(kind, x);
      await w.write(bytes);
      done({ name: p.name, shape: p.ne, type: kind, bytes: bytes.length, bitsPerWeight: (bytes.length * 8) / x.length, sqnrDb: ggmlTypeTraits(kind)?.exactF32 ? Infinity : sqnrDb(x, toFloat32(kind, bytes)), ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) });
    }
  }
  for (const [name, v] of added) {
    const bytes = fromFloat32('F32', v);
    await w.write(bytes);
    done({ name, shape: [v.length], type: 'F32', bytes: bytes.length, bitsPerWeight: 32, sqnrDb: Infinity });
  }
  await w.end();
}

/** The writer table: the container of a plan -> its writer. */
export const WRITERS: Readonly<Record<'gguf' | 'safetensors' | 'gptq' | 'awq' | 'onnx', ModelWriter>> = Object.freeze({ gguf: writeGguf, safetensors: writeLowbitSafetensors, gptq: writePacked, awq: writePacked, onnx: writeOnnxModel });

/** The plan's container: GGUF, lowbit safetensors, a Hugging Face GPTQ/AWQ checkpoint, or ONNX. */
export const containerOf = (plan: QuantizePlan): keyof typeof WRITERS => plan.packed?.layout ?? plan.output;

export async function quantizeModel(m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions = {}): Promise<QuantizeReport> {
  const t0 = performance.now();
  const reports: TensorReport[] = [];
  const total = plan.tensors.length;
  if (opts.imatrix) checkImatrix(m, plan, opts.imatrix);
  const done = (r: TensorReport) => {
    reports.push(r);
    opts.onTensor?.(reports.length, total, r);
  };
  const extra = (await WRITERS[containerOf(plan)](m, plan, sink, opts, done)) ?? {};
  const parameters = reports.reduce((s, r) => s + r.shape.reduce((a, b) => a * b, 1), 0);
  const bytes = reports.reduce((s, r) => s + r.bytes, 0);
  return { output: plan.output, recipe: plan.recipe.name, tensors: reports, parameters, bytes, bitsPerWeight: (bytes * 8) / parameters, seconds: (performance.now() - t0) / 1000, ...extra };
}

/** a whole tensor rounded by a per-tensor algorithm (QuantizeOptions.roundTensor): its bytes and SQNR */
async function roundWhole(m: ModelFile, t: ModelTensor, p: TensorPlan, round: NonNullable<ReturnType<NonNullable<QuantizeOptions['roundTensor']>>>): Promise<{ bytes: Uint8Array; sqnrDb: number; extras?: readonly StoredExtra[] }> {
  const x = await readFloats(m, t);
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) fail(`${p.name}: non-finite value at element ${i}`);
  const r = await round(x);
  return { bytes: r.bytes, sqnrDb: sqnrDb(x, r.q), ...(r.extras ? { extras: r.extras } : {}) };
}

/** Options of the one verb: the writer's (imatrix, workers, onTensor, layout) and the calibration's. */
export interface QuantizeRunOptions extends QuantizeOptions, LayoutOptions {
  /** container: 'gguf' (GGML types), 'safetensors' or 'onnx'; default: ONNX for an ONNX model, GGUF for llama.cpp file types */
  output?: OutputKind;
  /** calibration text: GPTQ, AWQ and SmoothQuant need it; with RTN it makes the rounding imatrix-weighted */
  calibText?: string;
  /** or calibration tokens directly (synthetic models without a vocabulary) */
  calibStream?: ArrayLike<number>;
  /** threads for the calibration's matmuls (needs a thread starter, see lowbit/node) */
  threads?: number;
  /** threads that quantize row ranges of a weight with GPTQ (same bytes) */
  gptqWorkers?: GptqWorkers;
  /** the layer count llama.cpp's type mixing counts (a model with pruned layers: the original count, model-edit.ts) */
  mixLayers?: number;
}

/** What the calibration pass did, attached to the report when it ran. */
export interface PtqSummary {
  notes: string[];
  seconds: number;
  calibrationTokens?: number;
  rotationMaxLogitDiff?: number;
  /** tensor name -> what rounded it ('gptq', 'awq+clip', 'imatrix-rtn', 'hqq', ...) */
  algorithms: Record<string, string>;
  phases?: PtqOutput['phases'];
}

/**
 * The one verb: `quantize(model, recipe, sink, { calibText, imatrix, threads, onProgress })` runs
 * everything the recipe says: it plans every tensor (llama.cpp's rules for file-type recipes, the
 * recipe's rules otherwise), runs the recipe's algorithms (algorithms.ts: rotation, SmoothQuant, AWQ,
 * GPTQ layer by layer on the calibration text; HQQ per tensor), and writes the container tensor by
 * tensor into `sink`, returning the report. A recipe whose algorithm needs calibration fails clearly
 * without `calibText` (never a silent round-to-nearest). The output container follows the recipe: GGML
 * block types -> GGUF, generic schemes -> safetensors; `layout: 'gptq' | 'awq'` writes a Hugging Face
 * checkpoint with packed int4 layers instead (same values; report.hfConfig is its config.json).
 */
export async function quantize(m: ModelFile, recipe: Recipe, sink: ByteSink, opts: QuantizeRunOptions = {}): Promise<QuantizeReport & { ptq?: PtqSummary }> {
  installWasmQuantizers();
  const output = opts.output ?? (m.format === 'onnx' ? 'onnx' : recipe.llama ? 'gguf' : 'safetensors');
  // ONNX: the recipe's onnx part is the plan (the graph rewrite); its calibration runs inside the writer
  if (output === 'onnx') return quantizeModel(m, planOnnx(m, recipe), sink, opts);
  const hasCalib = opts.calibText !== undefined || opts.calibStream !== undefined;
  // calibration text gives every linear its importance (the calibration pass's diag(H), imatrix-RTN), so
  // the types llama-quantize allows only with an imatrix (IQ2_XXS, IQ2_XS, ...) are allowed with it too
  const plan = planQuantization(m, recipe, output, { hasImatrix: opts.imatrix !== undefined || hasCalib, layout: opts.layout, keepUnpackable: opts.keepUnpackable, mixLayers: opts.mixLayers });
  if (opts.imatrix) checkImatrix(m, plan, opts.imatrix);
  const options = ptqOptions(recipe.ptq ?? {});
  checkExtras(plan, options);
  const needs = calibrationNeeds(plan, options, hasCalib);
  let ptq: PtqOutput | undefined;
  if (!opts.ptq && (needs.layerPass || options.rotate !== 'none')) {
    if (needs.needsText && !hasCalib) fail(`${needs.algorithms.join('/') || 'SmoothQuant'} needs calibration text: --calib FILE (or { calibText } in quantize())`);
    ptq = await runPtq(m, plan, { recipe, options, calibText: opts.calibText, calibStream: opts.calibStream, threads: opts.threads, gptqWorkers: opts.gptqWorkers, onProgress: opts.onProgress });
  }
  // per-tensor algorithms (HQQ) without a layer pass: streamed by the writer, one tensor at a time
  const labels: Record<string, string> = {};
  const roundTensor = !ptq && !opts.ptq && needs.tensorPass ? perTensorRounding(plan, options, labels) : undefined;
  const report = await quantizeModel(m, plan, sink, { ...opts, ...(ptq ? { ptq } : {}), ...(roundTensor ? { roundTensor } : {}) });
  if (roundTensor) return { ...report, ptq: { notes: [], seconds: 0, algorithms: labels } };
  if (!ptq) return report;
  const summary: PtqSummary = {
    notes: ptq.notes,
    seconds: ptq.seconds,
    ...(ptq.calibrationTokens !== undefined ? { calibrationTokens: ptq.calibrationTokens } : {}),
    ...(ptq.rotationMaxLogitDiff !== undefined ? { rotationMaxLogitDiff: ptq.rotationMaxLogitDiff } : {}),
    algorithms: Object.fromEntries([...ptq.quantized].map(([n, t]) => [n, t.algorithm])),
    ...(ptq.phases ? { phases: ptq.phases } : {}),
  };
  return { ...report, ptq: summary };
}

/**
 * LoRC and EasyQuant store tensors beside the weights that only lowbit safetensors hold: refuse other
 * containers, and LoRC ranks a matrix cannot have, before any work (one clear line each).
 */
function checkExtras(plan: QuantizePlan, options: PtqOptions): void {
  const quantized = plan.tensors.filter(isQuantized);
  const easy = quantized.find((p) => extraTensorSpecs(algorithmsOf(plan.recipe, p.name), 1, p.ne[0], { ...options, lorc: 0 }).length);
  const container = containerOf(plan);
  if (container !== 'safetensors') {
    const what = options.lorc > 0 ? `--lorc ${options.lorc}` : easy ? '--algo easyquant' : undefined;
    if (what) fail(`${what}: ${container === 'gguf' ? 'GGUF' : `a Hugging Face ${container} checkpoint`} cannot hold its extra f16 tensors (llama.cpp would run the quantized weights without them); write lowbit safetensors instead (an output ending in .safetensors with a scheme such as --type int4 --group 32)`);
  }
  if (options.shift && container !== 'safetensors') fail(`--shift: ${container === 'gguf' ? 'GGUF for llama.cpp' : `a Hugging Face ${container} checkpoint`} has no RMSNorm bias (nor gate/up biases) to hold Outlier Suppression+'s channel shift; write lowbit safetensors instead (an output ending in .safetensors, e.g. --type int8_ch)`);
  if (options.lorc > 0) for (const p of quantized) checkRank(options.lorc, p.name, rows(p.ne), p.ne[0]);
  // LoRC's factors are fitted to each linear's own rounding: a method that learns whole layers has none
  if (options.lorc > 0) {
    const lists = quantized.map((p) => algorithmsOf(plan.recipe, p.name));
    const omni = lists.some(learnsLayer);
    if (omni || (options.autoroundObjective === 'block' && lists.some((l) => l.at(-1)?.name === 'autoround')))
      fail(`--lorc applies after each linear's own rounding; ${omni ? 'OmniQuant learns' : 'AutoRound\'s block objective learns'} a whole layer at once: use --lorc with gptq or rtn${omni ? '' : ', or with --autoround-objective linear'}`);
  }
}

/** QuantizeOptions.roundTensor for the per-tensor algorithms of a plan (tensors whose list is only RTN are left to the writer) */
function perTensorRounding(plan: QuantizePlan, options: PtqOptions, labels: Record<string, string>): NonNullable<QuantizeOptions['roundTensor']> {
  return (p) => {
    const list = algorithmsOf(plan.recipe, p.name);
    const codec = needsHandler(list, options) ? codecOf(p) : undefined;
    if (!codec) return undefined;
    const [rows, cols] = [p.ne.slice(1).reduce((a, b) => a * b, 1), p.ne[0]];
    return async (x) => {
      const r = await roundWeight(list, { name: p.name, codec, w: x, rows, cols, scheme: p.scheme, ggmlType: p.ggml?.name, options });
      labels[p.name] = r.label;
      return r;
    };
  };
}
