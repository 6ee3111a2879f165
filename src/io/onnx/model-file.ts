/**
 * An ONNX model as a `ModelFile`: every constant tensor (graph initializers and Constant-node values, in
 * every graph: If branches, Loop/Scan bodies, functions) is a tensor, read through a byte-range source
 * (the model's own bytes, or its external data file opened by `OnnxModel.openExternal`). Tensor names
 * are the ONNX names; a tensor of a subgraph is named `<graph path>/<name>` (the same name may live in
 * two branches). Types are named as safetensors dtypes (F32, F16, BF16, F64, I8, U8, I64, ...).
 * The pipeline's ONNX writer (pipeline/quantize-onnx.ts) rewrites the graph the file holds
 * (`ModelFile.onnx`).
 */
import { fail } from '../../errors.js';
import { modelFileOf, type ModelFile, type ModelTensor } from '../model-file.js';
import type { ByteSource } from '../source.js';
import { checkRange } from '../source.js';
import { onnxWeights, opsetVersion, readOnnx, tensorByteLength, tensorBytes, tensorElements, tensorShape, type OnnxModel, type OnnxReadOptions } from './model.js';
import { DataType, dataTypeName } from './schema.js';

/** ONNX element type -> the dtype name ModelFile tensors use (safetensors' names) */
const DTYPE: Readonly<Record<number, string>> = Object.freeze({
  [DataType.FLOAT]: 'F32',
  [DataType.FLOAT16]: 'F16',
  [DataType.BFLOAT16]: 'BF16',
  [DataType.DOUBLE]: 'F64',
  [DataType.INT8]: 'I8',
  [DataType.UINT8]: 'U8',
  [DataType.INT16]: 'I16',
  [DataType.UINT16]: 'U16',
  [DataType.INT32]: 'I32',
  [DataType.UINT32]: 'U32',
  [DataType.INT64]: 'I64',
  [DataType.UINT64]: 'U64',
  [DataType.BOOL]: 'BOOL',
});

/** a tensor's dtype name (ONNX's own name, upper case, for types without a safetensors name) */
export const onnxDtype = (type: number | undefined): string => DTYPE[type ?? 0] ?? dataTypeName(type).toUpperCase();

/** The ModelFile name of a weight: its ONNX name, prefixed by its graph's path inside a subgraph. */
export const onnxTensorName = (name: string, graphPath: string): string => (graphPath ? `${graphPath}/${name}` : name);

/** One tensor's bytes as a byte-range source (read lazily: inline data is a view, external data is read from its file). */
function tensorSource(model: OnnxModel, t: Parameters<typeof tensorBytes>[1], name: string, size: number): ByteSource {
  return {
    size,
    name,
    async read(offset, length) {
      checkRange(this, offset, length);
      return (await tensorBytes(model, t)).subarray(offset, offset + length);
    },
  };
}

/** An ONNX model's ModelFile: the parsed model beside its tensors. */
export interface OnnxModelFile extends ModelFile {
  readonly format: 'onnx';
  readonly onnx: OnnxModel;
}

/** the parsed ONNX model of a ModelFile, or undefined for other containers */
export const onnxOf = (m: ModelFile): OnnxModel | undefined => (m.format === 'onnx' ? (m as OnnxModelFile).onnx : undefined);

/** The ModelFile of a parsed ONNX model (see the module comment). */
export function onnxModelFile(model: OnnxModel, sources: readonly ByteSource[] = []): OnnxModelFile {
  const tensors: ModelTensor[] = [];
  const seen = new Set<string>();
  for (const w of onnxWeights(model.proto)) {
    const name = onnxTensorName(w.name, w.graphPath);
    if (seen.has(name)) continue; // a name defined twice in one graph: onnxruntime refuses such a model; list it once
    seen.add(name);
    if (w.tensor.data_type === DataType.STRING) continue; // no numeric data
    const byteLength = tensorByteLength(w.tensor);
    tensors.push({ name, shape: tensorShape(w.tensor), type: onnxDtype(w.tensor.data_type), nElements: tensorElements(w.tensor), byteOffset: 0, byteLength, source: tensorSource(model, w.tensor, `${model.name}: ${name}`, byteLength) });
  }
  const p = model.proto;
  const metadata = new Map<string, string | number>();
  if (p.ir_version !== undefined) metadata.set('onnx.ir_version', Number(p.ir_version));
  if (p.producer_name) metadata.set('onnx.producer_name', p.producer_name);
  if (p.producer_version) metadata.set('onnx.producer_version', p.producer_version);
  for (const o of p.opset_import ?? []) metadata.set(`onnx.opset.${o.domain || 'ai.onnx'}`, opsetVersion(p, o.domain ?? '') ?? 0);
  return Object.assign(modelFileOf('onnx', model.name, metadata, tensors, [...sources]), { format: 'onnx' as const, onnx: model });
}

/** Read an ONNX model from a byte-range source as a ModelFile (external data through opts.openExternal). */
export async function openOnnxModelFile(src: ByteSource, opts: OnnxReadOptions = {}): Promise<OnnxModelFile> {
  return onnxModelFile(await readOnnx(src, opts), [src]);
}

/**
 * A fresh copy of the model a ModelFile holds, to rewrite (the file's own model stays as read): decoded
 * again from its source when it has one.
 */
export async function onnxModelToRewrite(m: ModelFile): Promise<OnnxModel> {
  const model = onnxOf(m) ?? fail(`${m.name}: not an ONNX model (ONNX output needs an ONNX input)`);
  const src = m.sources[0];
  if (!src) fail(`${m.name}: the ONNX model's bytes are not available to rewrite (open it with openOnnxModelFile)`);
  return readOnnx(src, { openExternal: model.openExternal });
}
