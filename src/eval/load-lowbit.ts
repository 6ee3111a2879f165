/**
 * Reading back what `lowbit quantize` writes to safetensors: generic-scheme tensors are dequantized
 * once (fake-quant: the runtime then sees the exact values the scheme stores), float tensors are
 * converted to f32, and the GGUF metadata carried in `__metadata__["lowbit.gguf"]` gives the
 * architecture, hyper-parameters and tokenizer. Tensors stored beside a weight (listed in
 * `lowbit.extras.W`: LoRC's f16 factors A, B and EasyQuant's f16 outliers) are applied to its
 * dequantized values here: W[row, index] = value, then W += A B (the order the quantizer used).
 */
import { fail } from '../errors.js';
import { readSafetensors } from '../io/safetensors.js';
import { openModelFile } from '../io/model-file.js';
import type { ByteSource } from '../io/source.js';
import { toFloat32 } from '../io/tensor-data.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { resolveScheme } from '../quant/registry.js';
import type { StoredTensor } from '../model/types.js';
import { applyOutliers } from '../algos/easyquant.js';
import { addLowRank } from '../algos/lorc.js';

/** Is this a safetensors file written by `lowbit quantize` (it carries `lowbit.gguf` metadata)? */
export async function isLowbitSafetensors(src: ByteSource): Promise<boolean> {
  if (src.size < 16) return false;
  const head = await src.read(0, 8);
  const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
  if (n < 2 || n > src.size - 8) return false;
  if ((await src.read(8, 1))[0] !== 0x7b) return false; // '{'
  return (await readSafetensors(src)).metadata['lowbit.gguf'] !== undefined;
}

export async function readLowbitSafetensors(src: ByteSource): Promise<{ metadata: Map<string, unknown>; tensors: StoredTensor[] }> {
  const m = await openModelFile(src); // the safetensors reader behind ModelFile
  const fileMeta = (k: string) => m.metadata.get(k) as string | undefined;
  const meta = fileMeta('lowbit.gguf');
  if (!meta) fail(`${src.name}: safetensors without lowbit.gguf metadata (architecture and tokenizer); convert it to GGUF to run it`);
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(meta);
  } catch {
    fail(`${src.name}: lowbit.gguf metadata is not valid JSON`);
  }
  const metadata = new Map<string, unknown>(Object.entries(parsed));
  const f32 = ggmlTypeByName('F32') as GgmlTypeInfo;
  const tensors: StoredTensor[] = [];
  // name -> suffixes of the tensors stored beside it
  const extrasOf = new Map<string, string[]>();
  for (const [k, v] of m.metadata)
    if (k.startsWith('lowbit.extras.')) {
      const list = JSON.parse(String(v)) as unknown;
      if (!Array.isArray(list) || !list.every((x) => typeof x === 'string')) fail(`${src.name}: ${k} is not a list of tensor suffixes`);
      extrasOf.set(k.slice('lowbit.extras.'.length), list as string[]);
    }
  const extraNames = new Set([...extrasOf].flatMap(([n, l]) => l.map((x) => n + x)));
  const byName = new Map(m.tensors.map((t) => [t.name, t]));
  const extra = async (name: string, suffix: string, dtype: string, shape0: number) => {
    const t = byName.get(name + suffix);
    if (!t) fail(`${src.name}: ${name}${suffix} is listed in lowbit.extras but missing`);
    if (t.type !== dtype || t.shape.length !== 2 || t.shape[0] !== shape0) fail(`${src.name}: ${name}${suffix} has dtype ${t.type} shape [${t.shape.join(', ')}], expected ${dtype} with ${shape0} rows`);
    const bytes = await m.read(t);
    return { values: dtype === 'U16' ? new Uint16Array(bytes.slice().buffer) : toFloat32(dtype, bytes), cols: t.shape[1] };
  };
  const threeD = new Map<string, number[]>();
  for (const t of m.tensors) {
    if (extraNames.has(t.name)) continue;
    const bytes = await m.read(t);
    const q = fileMeta(`lowbit.quant.${t.name}`);
    let values: Float32Array;
    let dims: number[];
    if (q) {
      const info = JSON.parse(q) as { scheme: string; resolve: [string, Record<string, unknown>]; shape: [number, number]; ne?: number[] };
      const scheme = resolveScheme(info.resolve[0], info.resolve[1]);
      if (scheme.id !== info.scheme) fail(`${src.name}: ${t.name} was written with scheme ${info.scheme}, which resolves to ${scheme.id} here`);
      const [rows, cols] = info.shape;
      values = scheme.dequantizeRef(bytes, rows, cols);
      dims = [cols, rows];
      // a 3-D tensor (MoE experts) records its ggml dims; the rows are its experts' rows one after the other
      if (info.ne !== undefined) {
        if (!Array.isArray(info.ne) || info.ne[0] !== cols || info.ne.reduce((a, b) => a * b, 1) !== rows * cols) fail(`${src.name}: ${t.name}'s dims [${String(info.ne)}] do not hold ${rows} rows of ${cols}`);
        threeD.set(t.name, info.ne);
      }
    } else {
      values = toFloat32(t.type, bytes);
      dims = [...t.shape].reverse();
    }
    const extras = extrasOf.get(t.name);
    if (extras) {
      const [cols, rows] = dims;
      if (extras.includes('.outlier_index')) {
        const index = await extra(t.name, '.outlier_index', 'U16', rows);
        const value = await extra(t.name, '.outlier_value', 'F16', rows);
        if (value.cols !== index.cols) fail(`${src.name}: ${t.name}'s outlier tensors disagree in shape`);
        applyOutliers(values, cols, { perRow: index.cols, index: index.values as Uint16Array, value: value.values as Float32Array });
      }
      if (extras.includes('.lorc_a')) {
        const a = await extra(t.name, '.lorc_a', 'F16', rows);
        const b = await extra(t.name, '.lorc_b', 'F16', a.cols);
        if (b.cols !== cols) fail(`${src.name}: ${t.name}.lorc_b has ${b.cols} columns, the weight ${cols}`);
        addLowRank(values, rows, cols, { a: a.values as Float32Array, b: b.values as Float32Array, rank: a.cols });
      }
    }
    tensors.push({ name: t.name, type: f32, dims: threeD.get(t.name) ?? dims, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) });
  }
  return { metadata, tensors };
}
