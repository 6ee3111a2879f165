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
import { LLAMA_FTYPES, planLlamaTypes, llamaFtype, allowsQuantization, requiresImatrix, type PlanTensor } from '../algos/llama-types.js';
import { importanceOf, type Imatrix } from '../algos/imatrix.js';
import { ruleFor, type Recipe, type RecipeRule } from '../algos/recipe.js';
import { ggmlCodec, ggmlCodecs } from '../quant/ggml/registry.js';
import '../quant/ggml/index.js';
import '../kernels/scheme-quant.js'; // fast paths of the MX / NVFP4 schemes
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { quantizeScheme, resolveScheme } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';
import { gguf, GgufWriter, plainValue, type GgufValue } from '../io/gguf.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import { SafetensorsWriter } from '../io/safetensors.js';
import type { ByteSink } from '../io/sink.js';
import { fromFloat32, toFloat32 } from '../io/tensor-data.js';
import { sqnrDb } from '../eval/metrics.js';
import { quantizeRowsMeasured } from '../kernels/ggml-quant.js';
import { rowErrorSums } from '../quant/ggml/row-error.js';
import type { PackedInt4Layout } from '../io/packed-int4.js';
import { planPackedLayout, quantizePackedModel, type PackedPlanInfo } from './quantize-packed.js';

export interface TensorPlan {
  name: string;
  /** ggml order: ne[0] is the row length */
  ne: number[];
  from: string;
  /** target: a GGML type name (GGUF) or a scheme id (safetensors), or a float kind */
  to: string;
  scheme?: QuantScheme;
  ggml?: GgmlTypeInfo;
  /** set when llama.cpp's shape fallback replaced the first choice */
  fallbackFrom?: string;
  rule?: RecipeRule;
}

export interface QuantizePlan {
  output: 'gguf' | 'safetensors';
  recipe: Recipe;
  tensors: TensorPlan[];
  ftypeId?: number;
  /** set for a Hugging Face checkpoint with GPTQ/AWQ packed int4 layers (see quantize-packed.ts) */
  packed?: PackedPlanInfo;
}

export interface TensorReport {
  name: string;
  shape: number[];
  type: string;
  bytes: number;
  bitsPerWeight: number;
  /** SQNR of the stored tensor against the input, dB (Infinity when copied exactly) */
  sqnrDb: number;
  fallbackFrom?: string;
}

export interface QuantizeReport {
  output: 'gguf' | 'safetensors';
  recipe: string;
  tensors: TensorReport[];
  parameters: number;
  bytes: number;
  bitsPerWeight: number;
  seconds: number;
  /** the config.json object to write beside a GPTQ/AWQ checkpoint */
  hfConfig?: Record<string, unknown>;
}

/**
 * Quantizes whole rows of a GGML type on other threads (injected by the Node layer, e.g. the CLI's
 * worker pool; the core never starts threads). Rows are independent, so the bytes must equal
 * ggmlCodec(type).quantize's in this thread for any split. With rowErr (2 values per row), it also
 * fills each row's error sums exactly as quantizeRowsMeasured (kernels/ggml-quant.ts) does.
 */
export interface RowQuantizer {
  /** the blocks go into `out` when given (returned cut to length), else into a fresh array */
  quantizeRows(type: GgmlTypeInfo, src: Float32Array, nRows: number, rowLength: number, importance?: Float32Array, rowErr?: Float64Array, out?: Uint8Array): Promise<Uint8Array>;
  /** a float array the rows are best read into (e.g. shared memory the threads see without a copy) */
  allocate?(n: number): Float32Array;
  /** a byte array the blocks are best quantized into */
  allocateBytes?(n: number): Uint8Array;
}

export interface QuantizeOptions {
  /** importance matrix for the weighted quantizers (checked against the model first: see checkImatrix) */
  imatrix?: Imatrix;
  /** quantize GGML tensors on these threads (default: this thread) */
  workers?: RowQuantizer;
  /**
   * Results of the calibrated algorithms (calibrate.ts runPtq): tensors already quantized (their bytes
   * are written as given) and transformed float weights (rotation, AWQ/SmoothQuant scales) that replace
   * the file's values for everything else.
   */
  ptq?: {
    floats: ReadonlyMap<string, Float32Array>;
    quantized: ReadonlyMap<string, { bytes: Uint8Array; sqnrDb: number }>;
  };
  /** called after each tensor */
  onTensor?(done: number, total: number, r: TensorReport): void;
}

const FLOAT_KEEP: Record<string, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

function neOf(t: ModelTensor): number[] {
  return t.ne ? [...t.ne] : [...t.shape].reverse();
}

function hparams(m: ModelFile) {
  const num = (k: string) => {
    const v = m.metadata.get(k);
    if (v === undefined) return undefined;
    return Number(typeof v === 'object' ? (v as GgufValue).value : v);
  };
  const arch = String((m.metadata.get('general.architecture') as GgufValue | undefined)?.value ?? 'llama');
  return {
    arch,
    nLayer: num(`${arch}.block_count`) ?? m.tensors.filter((t) => /^blk\.\d+\.attn_norm\.weight$/.test(t.name)).length,
    nHead: num(`${arch}.attention.head_count`) ?? 1,
    nHeadKv: num(`${arch}.attention.head_count_kv`) ?? num(`${arch}.attention.head_count`) ?? 1,
    nExpert: num(`${arch}.expert_count`) ?? 0,
  };
}

/** Decide each tensor's target without reading any tensor data (`--dry-run`). */
export function planQuantization(m: ModelFile, recipe: Recipe, output: 'gguf' | 'safetensors', opts: { hasImatrix?: boolean; mixLayers?: number } & LayoutOptions = {}): QuantizePlan {
  if (opts.layout && opts.layout !== 'lowbit') return planPackedLayout(m, planQuantization(m, recipe, output, { hasImatrix: opts.hasImatrix }), { layout: opts.layout, keepUnpackable: opts.keepUnpackable });
  const tensors: TensorPlan[] = [];
  let ftypeId: number | undefined;
  if (recipe.llama) {
    if (output !== 'gguf') fail(`recipe ${recipe.name} is a llama.cpp file type: write a .gguf`);
    const ft = llamaFtype(recipe.llama.ftype);
    ftypeId = ft.id;
    const overrides = recipe.rules.filter((r) => r.scheme).map((r) => [new RegExp(r.match), normalizeGgml(r.scheme as string)] as const);
    const planned = planLlamaTypes(
      m.tensors.map((t): PlanTensor => ({ name: t.name, shape: neOf(t), type: t.type })),
      // after --prune-layers, llama-quantize's ffn counters still use the input model's layer count
      { ...hparams(m), ...(opts.mixLayers !== undefined ? { nLayer: opts.mixLayers } : {}) },
      { ftype: ft.name, pure: recipe.llama.pure, hasImatrix: opts.hasImatrix, outputTensorType: recipe.llama.outputTensorType, tokenEmbeddingType: recipe.llama.tokenEmbeddingType, leaveOutputTensor: recipe.llama.leaveOutputTensor, overrides },
    );
    planned.forEach((p, i) => {
      const t = m.tensors[i];
      const ggml = ggmlTypeByName(p.to);
      if (!ggml) fail(`unknown GGML type ${p.to} for ${p.name}`);
      if (!opts.hasImatrix && requiresImatrix(p.name, p.to, ft.name)) fail(`${p.name}: ${p.to} in a ${ft.name} file needs an importance matrix (--imatrix)`);
      tensors.push({ name: p.name, ne: neOf(t), from: p.from, to: p.to, ggml, ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) });
    });
  } else {
    for (const t of m.tensors) {
      const ne = neOf(t);
      const rule = ruleFor(recipe, t.name);
      const quantizable = allowsQuantization(t.name, ne.length);
      if (!rule || rule.keep || !quantizable) {
        const keep = rule?.keep ? FLOAT_KEEP[rule.keep] : t.type;
        tensors.push({ name: t.name, ne, from: t.type, to: keep, ggml: ggmlTypeByName(keep), rule });
        continue;
      }
      if (output === 'gguf') {
        const name = normalizeGgml(rule.scheme as string);
        const ggml = ggmlTypeByName(name);
        if (!ggml) {
          let isScheme = false;
          try {
            resolveScheme(rule.scheme as string, resolveOptionsOf(rule));
            isScheme = true;
          } catch {
            /* not a scheme either */
          }
          if (isScheme) fail(`scheme ${rule.scheme} has no GGUF type: write a .safetensors, or choose a GGML type (ggml_q4_0, ggml_mxfp4, ...)`);
          fail(`unknown type '${rule.scheme}' (llama.cpp file types: ${Object.keys(LLAMA_FTYPES).join(', ')}; GGML types: ${ggmlCodecs.filter((c) => c.quantize).map((c) => c.type.name).join(', ')}; schemes: see lowbit schemes)`);
        }
        if (!ggmlCodec(ggml)?.quantize) fail(`lowbit can read ${ggml.name} but cannot quantize to it yet`);
        if (ne[0] % ggml.blockSize !== 0) {
          // like llama-quantize: a row that does not fit the block size is kept in F16
          tensors.push({ name: t.name, ne, from: t.type, to: 'F16', ggml: ggmlTypeByName('F16'), rule, fallbackFrom: ggml.name });
          continue;
        }
        tensors.push({ name: t.name, ne, from: t.type, to: ggml.name, ggml, rule });
      } else {
        const scheme = resolveScheme(rule.scheme as string, resolveOptionsOf(rule));
        if (scheme.blockSize > 0 && ne[0] % scheme.blockSize !== 0) {
          tensors.push({ name: t.name, ne, from: t.type, to: 'F16', rule, fallbackFrom: scheme.id });
          continue;
        }
        scheme.packedBytes(rows(ne), ne[0]); // validates the shape
        tensors.push({ name: t.name, ne, from: t.type, to: scheme.id, scheme, rule });
      }
    }
  }
  return { output, recipe, tensors, ftypeId };
}

/** Output layout of a safetensors file: lowbit's own (any scheme) or a Hugging Face GPTQ/AWQ checkpoint. */
export interface LayoutOptions {
  layout?: 'lowbit' | PackedInt4Layout;
  /** GPTQ/AWQ: keep linear layers whose shape cannot be packed in F16 instead of failing */
  keepUnpackable?: boolean;
}

/** The scheme options a rule implies (stored in safetensors metadata so readers rebuild the scheme). */
export function resolveOptionsOf(rule: RecipeRule | undefined): { groupSize?: number; asymmetric?: boolean; zeroPoint?: 'int' | 'float' } {
  const o: { groupSize?: number; asymmetric?: boolean; zeroPoint?: 'int' | 'float' } = {};
  if (rule?.groupSize) o.groupSize = rule.groupSize;
  if (rule?.asym) o.asymmetric = true;
  if (rule?.asym && rule.zeroPoint === 'float') o.zeroPoint = 'float';
  return o;
}

function normalizeGgml(s: string): string {
  return s.replace(/^ggml_/i, '').toUpperCase().replace(/_K$/, '_K');
}

const rows = (ne: number[]) => ne.slice(1).reduce((a, b) => a * b, 1);

export async function readFloats(m: ModelFile, t: ModelTensor, allocate?: (n: number) => Float32Array): Promise<Float32Array> {
  const bytes = await m.read(t);
  if (t.type === 'F32' || t.type === 'F16' || t.type === 'BF16' || t.type === 'F64') return toFloat32(t.type, bytes, allocate?.(t.nElements));
  const c = ggmlCodec(t.type);
  if (!c) fail(`${t.name}: cannot read tensor type ${t.type}`);
  const out = allocate ? allocate(t.nElements) : new Float32Array(t.nElements);
  c.dequantize(bytes, t.nElements, out);
  return out;
}

const matrices = (ne: readonly number[]) => ne.slice(2).reduce((a, b) => a * b, 1);

/**
 * Check an importance matrix against the model and plan before anything is written, as one clear error:
 * an entry for a tensor the model does not have, an entry whose length is not the tensor's row length
 * (times its experts), or a blk.* weight that a weighted quantizer will use and the imatrix lacks (an
 * imatrix made for another model). token_embd / output may be absent: llama-imatrix does not collect
 * them by default, and llama-quantize then quantizes them unweighted.
 */
export function checkImatrix(m: ModelFile, plan: QuantizePlan, imatrix: Imatrix, label = 'the imatrix'): void {
  const byName = new Map(m.tensors.map((t) => [t.name, t]));
  const unknown = [...imatrix.entries.keys()].filter((n) => !byName.has(n)).sort();
  if (unknown.length) fail(`${label} does not match this model: it has entries for tensors the model lacks (${unknown.slice(0, 3).join(', ')}${unknown.length > 3 ? `, ... ${unknown.length} in all` : ''})`);
  for (const e of imatrix.entries.values()) {
    const t = byName.get(e.name)!;
    const ne = neOf(t);
    const want = ne[0] * matrices(ne);
    if (e.sums.length !== want)
      fail(`${label} does not match this model: entry ${e.name} has ${e.sums.length} values, but the tensor's rows have ${ne[0]} columns${matrices(ne) > 1 ? ` x ${matrices(ne)} experts` : ''}`);
  }
  for (const p of plan.tensors)
    if (p.ggml && ggmlCodec(p.ggml)?.usesImportance && p.name.startsWith('blk.') && !imatrix.entries.has(p.name))
      fail(`${label} does not match this model: no entry for ${p.name} (${p.to} would be quantized unweighted)`);
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
  const bytes = await m.read(t, row0 * rb, nRows * rb);
  if (t.type === 'F16' || t.type === 'BF16' || t.type === 'F64') return toFloat32(t.type, bytes, out);
  const c = ggmlCodec(t.type);
  if (!c) fail(`${t.name}: cannot read tensor type ${t.type}`);
  c.dequantize(bytes, n, out);
  return out;
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
  if (type.name === 'F32' || type.name === 'F16' || type.name === 'BF16') {
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

export async function quantizeModel(m: ModelFile, plan: QuantizePlan, sink: ByteSink, opts: QuantizeOptions = {}): Promise<QuantizeReport> {
  if (plan.packed) return quantizePackedModel(m, plan, sink, opts);
  const t0 = performance.now();
  const reports: TensorReport[] = [];
  const total = plan.tensors.length;
  if (opts.imatrix) checkImatrix(m, plan, opts.imatrix);
  const done = (r: TensorReport) => {
    reports.push(r);
    opts.onTensor?.(reports.length, total, r);
  };
  if (plan.output === 'gguf') {
    if (m.format !== 'gguf' || !m.gguf) fail(`quantizing to GGUF needs a GGUF input (convert first: lowbit convert ${m.name} model.gguf)`);
    const meta = new Map<string, GgufValue>(m.gguf.metadata);
    if (plan.ftypeId !== undefined) meta.set('general.file_type', gguf.u32(plan.ftypeId));
    meta.set('general.quantization_version', gguf.u32(2));
    if (opts.imatrix) {
      meta.set('quantize.imatrix.entries_count', gguf.u32(opts.imatrix.entries.size));
      meta.set('quantize.imatrix.chunks_count', gguf.u32(opts.imatrix.chunkCount));
      if (opts.imatrix.datasets.length) meta.set('quantize.imatrix.dataset', gguf.str(opts.imatrix.datasets[opts.imatrix.datasets.length - 1]));
    }
    const w = new GgufWriter(sink, meta, plan.tensors.map((p) => ({ name: p.name, ne: p.ne, type: p.ggml as GgmlTypeInfo })));
    // every tensor is either given (PTQ), copied, or quantized slab by slab from the transformed floats
    // (PTQ) or from the file; the file's slabs are read one ahead, across tensors
    const kindOf = (p: TensorPlan, t: ModelTensor) => (opts.ptq?.quantized.has(p.name) ? 'given' : opts.ptq?.floats.has(p.name) ? 'transformed' : p.to === t.type ? 'copy' : 'read');
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
          const pre = opts.ptq!.quantized.get(p.name)!;
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
  } else {
    const specs = plan.tensors.map((p) => {
      const shape = [...p.ne].reverse();
      if (p.scheme) return { name: p.name, dtype: 'U8', shape: [p.scheme.packedBytes(rows(p.ne), p.ne[0])] };
      return { name: p.name, dtype: p.to === 'F32' || p.to === 'F16' || p.to === 'BF16' ? p.to : fail(`${p.name}: type ${p.to} cannot be stored in safetensors unquantized`), shape };
    });
    const metadata: Record<string, string> = { 'lowbit.recipe': JSON.stringify(plan.recipe), format: 'lowbit-quantized' };
    // the GGUF metadata (architecture, hyper-parameters, tokenizer) travels along, so lowbit can run the file
    if (m.gguf) metadata['lowbit.gguf'] = JSON.stringify(Object.fromEntries([...m.gguf.metadata].map(([k, v]) => [k, plainValue(v)])), (_k, v) => (typeof v === 'bigint' ? Number(v) : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v));
    for (const p of plan.tensors)
      if (p.scheme) metadata[`lowbit.quant.${p.name}`] = JSON.stringify({ scheme: p.scheme.id, resolve: [p.rule?.scheme ?? p.scheme.id, resolveOptionsOf(p.rule)], shape: [rows(p.ne), p.ne[0]] });
    const w = new SafetensorsWriter(sink, specs, metadata);
    await w.begin();
    for (const p of plan.tensors) {
      const t = m.tensor(p.name);
      const pre = opts.ptq?.quantized.get(p.name);
      if (pre) {
        await w.write(pre.bytes);
        done({ name: p.name, shape: p.ne, type: p.scheme?.id ?? p.to, bytes: pre.bytes.length, bitsPerWeight: (pre.bytes.length * 8) / t.nElements, sqnrDb: pre.sqnrDb });
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
        const kind = p.to as 'F32' | 'F16' | 'BF16';
        const bytes = fromFloat32(kind, x);
        await w.write(bytes);
        done({ name: p.name, shape: p.ne, type: kind, bytes: bytes.length, bitsPerWeight: (bytes.length * 8) / x.length, sqnrDb: kind === 'F32' ? Infinity : sqnrDb(x, toFloat32(kind, bytes)), ...(p.fallbackFrom ? { fallbackFrom: p.fallbackFrom } : {}) });
      }
    }
    await w.end();
  }
  const parameters = reports.reduce((s, r) => s + r.shape.reduce((a, b) => a * b, 1), 0);
  const bytes = reports.reduce((s, r) => s + r.bytes, 0);
  return { output: plan.output, recipe: plan.recipe.name, tensors: reports, parameters, bytes, bitsPerWeight: (bytes * 8) / parameters, seconds: (performance.now() - t0) / 1000 };
}

/**
 * The one verb: `quantize(model, recipe, sink)` plans every tensor (llama.cpp's rules for file-type
 * recipes, the recipe's rules otherwise), quantizes tensor by tensor into `sink` and returns the report.
 * The output container follows the recipe: GGML block types -> GGUF, generic schemes -> safetensors.
 * `layout: 'gptq' | 'awq'` writes a Hugging Face checkpoint with packed int4 layers instead of lowbit's
 * safetensors layout (same values; report.hfConfig is its config.json).
 */
export async function quantize(m: ModelFile, recipe: Recipe, sink: ByteSink, opts: QuantizeOptions & LayoutOptions & { output?: 'gguf' | 'safetensors' } = {}): Promise<QuantizeReport> {
  const output = opts.output ?? (recipe.llama ? 'gguf' : 'safetensors');
  const plan = planQuantization(m, recipe, output, { hasImatrix: opts.imatrix !== undefined, layout: opts.layout, keepUnpackable: opts.keepUnpackable });
  return quantizeModel(m, plan, sink, opts);
}
