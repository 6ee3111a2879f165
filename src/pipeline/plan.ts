/**
 * The plan of a quantization: each tensor's target, decided without reading any tensor data (llama.cpp's
 * mixing rules for file-type recipes, the recipe's rules otherwise), and the types every stage of the
 * pipeline shares (plan, options, report).
 */
import { fail } from '../errors.js';
import { LLAMA_FTYPES, planLlamaTypes, llamaFtype, allowsQuantization, requiresImatrix, type PlanTensor } from '../algos/llama-types.js';
import type { Imatrix } from '../algos/imatrix.js';
import { ruleFor, type OnnxRecipe, type Recipe, type RecipeRule } from '../algos/recipe.js';
import { ggmlCodec, ggmlCodecs } from '../quant/ggml/registry.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { resolveScheme } from '../quant/registry.js';
import type { QuantScheme } from '../quant/scheme.js';
import type { GgufValue } from '../io/gguf.js';
import { familyOf, KNOWN_ARCHITECTURES, roleOfTensor } from '../model/family.js';
import type { ModelFile, ModelTensor } from '../io/model-file.js';
import type { LlamaHparams } from '../io/hf-llama.js';
import type { PackedInt4Layout } from '../io/packed-int4.js';
import { toFloat32 } from '../io/tensor-data.js';
import { nodeLabel } from '../io/onnx/graph-edit.js';
import { onnxOf, onnxTensorName } from '../io/onnx/model-file.js';
import { gatherTargets } from '../io/onnx/gather.js';
import { matmulTargets, type NodeReport } from '../io/onnx/nbits.js';
import { qdqTargets } from '../io/onnx/qdq.js';
import type { Float16Report } from '../io/onnx/float16.js';
import type { ModelProto } from '../io/onnx/schema.js';
import type { NpyArray } from '../io/npy.js';

/** a tensor stored beside a weight (algorithms.ts ExtraTensor: LoRC factors, EasyQuant outliers) */
export interface StoredExtra {
  readonly suffix: string;
  readonly data?: Uint8Array;
}

/** What the packed writer needs beyond the tensor plan. */
export interface PackedPlanInfo {
  readonly layout: PackedInt4Layout;
  /** the model family's name (model/family.ts FAMILIES) */
  readonly family: string;
  readonly hparams: LlamaHparams;
  /** config.json hyper-parameters of a non-llama family (io/hf-families.ts hfConfigFromGguf); llama: from hparams */
  readonly config?: Record<string, unknown>;
  readonly groupSize: number;
  readonly symmetric: boolean;
  /** no output.weight: lm_head is the embedding (tie_word_embeddings) */
  readonly tieEmbeddings: boolean;
  /** GGUF tokenizer.* entries as plain JSON values, carried in __metadata__ */
  readonly tokenizer?: Record<string, unknown>;
}

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

/** the output containers: GGUF, lowbit safetensors (or a packed HF checkpoint), ONNX */
export type OutputKind = 'gguf' | 'safetensors' | 'onnx';

export interface QuantizePlan {
  output: OutputKind;
  recipe: Recipe;
  tensors: TensorPlan[];
  ftypeId?: number;
  /** set for a Hugging Face checkpoint with GPTQ/AWQ packed int4 layers (see quantize-packed.ts) */
  packed?: PackedPlanInfo;
  /** ONNX output: the graph rewrite the ONNX writer runs (pipeline/quantize-onnx.ts) */
  onnx?: OnnxRecipe;
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

/** What the ONNX writer did, node by node (quantize-onnx.ts). */
export interface OnnxWriteReport {
  inputBytes: number;
  nodes: NodeReport[];
  float16?: Float16Report;
  /** the sensitivity pass's ranking (output SQNR of each node quantized alone, worst first) */
  sensitivity?: { node: string; sqnrDb: number }[];
  warnings: string[];
}

export interface QuantizeReport {
  output: OutputKind;
  recipe: string;
  tensors: TensorReport[];
  parameters: number;
  bytes: number;
  bitsPerWeight: number;
  seconds: number;
  /** the config.json object to write beside a GPTQ/AWQ checkpoint */
  hfConfig?: Record<string, unknown>;
  /** ONNX output: the rewrite's node reports */
  onnx?: OnnxWriteReport;
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
  /**
   * ΔW = dequantize(quantize(rows)) - rows for each of `types` (type t's rows at t * nRows * rowLength;
   * `weighted[t]`: type t gets the importance), the values of the codecs in this thread for any split;
   * a view of a scratch the next call reuses
   */
  errorRows?(types: readonly GgmlTypeInfo[], src: Float32Array, nRows: number, rowLength: number, importance?: Float32Array, weighted?: readonly boolean[]): Promise<Float32Array>;
}

/** one ONNX calibration sample: the model's inputs by name */
export type OnnxFeeds = Record<string, NpyArray>;
/** a float value an ONNX runtime hands back */
export interface OnnxValue {
  dims: number[];
  data: Float32Array;
}

/** How the ONNX writer runs the model on calibration data (the host's runtime: onnxruntime-node in the CLI). */
export interface OnnxCalibration {
  readonly samples: readonly OnnxFeeds[];
  /** run `proto` on `samples`, handing each named intermediate value to sink (sample by sample) */
  capture(proto: ModelProto, names: readonly string[], samples: readonly OnnxFeeds[], sink: (name: string, t: OnnxValue) => void): Promise<void>;
  /** a session over a model's bytes (the sensitivity pass compares whole-model outputs) */
  session(model: Uint8Array): Promise<{ run(feeds: OnnxFeeds): Promise<Map<string, OnnxValue>>; release(): Promise<void> }>;
}

export interface QuantizeOptions {
  /**
   * ONNX output: calibration samples and the runtime that runs them (GPTQ's Hessians, static QDQ
   * ranges, bias correction, the sensitivity pass, the activation quantizers)
   */
  onnxCalibration?: OnnxCalibration;
  /** each warning as it happens (ONNX output; also in report.onnx.warnings) */
  onWarning?(message: string): void;
  /** progress messages of long passes */
  onProgress?(message: string): void;
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
    quantized: ReadonlyMap<string, { bytes: Uint8Array; sqnrDb: number; extras?: readonly StoredExtra[] }>;
    /** new f32 tensors (OS+ biases), written after the model's own */
    added?: ReadonlyMap<string, Float32Array>;
  };
  /**
   * Per-tensor algorithms (HQQ; scope 'tensor' in algorithms.ts) streamed inside the writer: for a
   * planned tensor, a function rounding its float values into the planned type's bytes (one tensor in
   * memory at a time), or undefined to quantize it as usual.
   */
  roundTensor?(p: TensorPlan): ((x: Float32Array) => Promise<{ bytes: Uint8Array; q: Float32Array; label: string; extras?: readonly StoredExtra[] }>) | undefined;
  /** called after each tensor */
  onTensor?(done: number, total: number, r: TensorReport): void;
}

const FLOAT_KEEP: Record<string, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export function neOf(t: ModelTensor): number[] {
  return t.ne ? [...t.ne] : [...t.shape].reverse();
}

function hparams(m: ModelFile) {
  const num = (k: string) => {
    const v = m.metadata.get(k);
    if (v === undefined) return undefined;
    return Number(typeof v === 'object' ? (v as GgufValue).value : v);
  };
  const arch = String((m.metadata.get('general.architecture') as GgufValue | undefined)?.value ?? 'llama');
  // the layer linears' roles from the family table, when the architecture has a row (llama.cpp's name rules otherwise)
  const family = KNOWN_ARCHITECTURES.includes(arch) ? familyOf(arch, (num(`${arch}.expert_count`) ?? 0) > 0) : undefined;
  return {
    arch,
    roleOf: family && ((name: string) => roleOfTensor(family, name)?.spec.role),
    nLayer: num(`${arch}.block_count`) ?? m.tensors.filter((t) => /^blk\.\d+\.attn_norm\.weight$/.test(t.name)).length,
    nHead: num(`${arch}.attention.head_count`) ?? 1,
    nHeadKv: num(`${arch}.attention.head_count_kv`) ?? num(`${arch}.attention.head_count`) ?? 1,
    nExpert: num(`${arch}.expert_count`) ?? 0,
  };
}

/** Decide each tensor's target without reading any tensor data, in lowbit's own layouts (see planQuantization for the packed ones). */
export function planTensors(m: ModelFile, recipe: Recipe, output: 'gguf' | 'safetensors', opts: { hasImatrix?: boolean; mixLayers?: number } = {}): QuantizePlan {
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

/**
 * The plan of an ONNX output, read from the graph (no tensor data): every constant tensor of the model
 * (io/onnx/model-file.ts) with its target: the MatMul/Gemm weights MatMulNBits takes, the Gather tables
 * GatherBlockQuantized takes, the weights QDQ takes (the op types of recipe.onnx.qdq.ops not already
 * MatMulNBits), the float32 rest to the float16 pass when asked; nodes in recipe.onnx.keep stay. Choices
 * that depend on data (the sensitivity pass's --keep-sensitive / --act16 nodes, calibration ranges) are
 * the writer's, reported per node.
 */
export function planOnnx(m: ModelFile, recipe: Recipe): QuantizePlan {
  const o = recipe.onnx ?? fail(`recipe ${recipe.name} has no onnx part: an ONNX output needs one (e.g. --type int4, --qdq int8, --float16)`);
  const model = onnxOf(m) ?? fail(`${m.name}: an ONNX output needs an ONNX input`);
  const keep = new Set(o.keep ?? []);
  const kept = (n: Parameters<typeof nodeLabel>[0]) => keep.has(nodeLabel(n)) || keep.has(n.name ?? '');
  const to = new Map<string, string>();
  const nbitsNodes = new Set<unknown>();
  if (o.nbits) {
    const n = o.nbits;
    const label = `MatMulNBits int${n.bits} g${n.blockSize}${n.symmetric && n.algorithm !== 'hqq' ? '' : ' +zp'} ${n.algorithm}`;
    for (const t of matmulTargets(model))
      if (!kept(t.node)) {
        to.set(onnxTensorName(t.weight.name, t.weight.graphPath), label);
        nbitsNodes.add(t.node);
      }
    if (n.gather) for (const t of gatherTargets(model)) if (!kept(t.node)) to.set(onnxTensorName(t.table.name, t.table.graphPath), `GatherBlockQuantized int${n.bits} g${n.blockSize}`);
  }
  if (o.qdq) {
    const q = o.qdq;
    const act = q.activations === 'none' ? 'weights only' : q.activations === 'dynamic' ? 'uint8 dynamic' : `${q.format === 'fp8' ? 'fp8' : 'uint8'} static ${q.method}${q.granularity === 'channel' ? ' per channel' : ''}`;
    for (const t of qdqTargets(model, new Set(q.ops)))
      if (!kept(t.node) && !nbitsNodes.has(t.node)) to.set(onnxTensorName(t.weight.name, t.weight.graphPath), `QDQ ${q.format}/ch + ${act}`);
  }
  const tensors = m.tensors.map((t): TensorPlan => ({ name: t.name, ne: neOf(t), from: t.type, to: to.get(t.name) ?? (o.float16 && t.type === 'F32' ? 'F16 (float16 pass)' : t.type) }));
  if (o.nbits && !o.qdq && !matmulTargets(model).length && !(o.nbits.gather && gatherTargets(model).length))
    fail(`${m.name}: no MatMul or Gemm with a constant 2-D float weight to quantize`);
  return { output: 'onnx', recipe, tensors, onnx: o };
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

export const rows = (ne: number[]) => ne.slice(1).reduce((a, b) => a * b, 1);

/** A whole tensor as float32 (any stored type lowbit can read), into `allocate(n)` when given. */
export async function readFloats(m: ModelFile, t: ModelTensor, allocate?: (n: number) => Float32Array): Promise<Float32Array> {
  return toFloat32(t.type, await m.read(t), allocate?.(t.nElements));
}

export const matrices = (ne: readonly number[]) => ne.slice(2).reduce((a, b) => a * b, 1);

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

