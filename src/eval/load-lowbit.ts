/**
 * Reading back what `lowbit quantize` writes to safetensors: generic-scheme tensors are dequantized
 * once (fake-quant: the runtime then sees the exact values the scheme stores), float tensors are
 * converted to f32, and the GGUF metadata carried in `__metadata__["lowbit.gguf"]` gives the
 * architecture, hyper-parameters and tokenizer.
 */
import { fail } from '../errors.js';
import { readSafetensors } from '../io/safetensors.js';
import type { ByteSource } from '../io/source.js';
import { toFloat32 } from '../io/tensor-data.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../quant/ggml/types.js';
import { resolveScheme } from '../quant/registry.js';
import type { StoredTensor } from '../model/types.js';

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
  const f = await readSafetensors(src);
  const meta = f.metadata['lowbit.gguf'];
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
  for (const t of f.tensors) {
    const bytes = await t.source.read(t.fileOffset, t.byteLength);
    const q = f.metadata[`lowbit.quant.${t.name}`];
    let values: Float32Array;
    let dims: number[];
    if (q) {
      const info = JSON.parse(q) as { scheme: string; resolve: [string, Record<string, unknown>]; shape: [number, number] };
      const scheme = resolveScheme(info.resolve[0], info.resolve[1]);
      if (scheme.id !== info.scheme) fail(`${src.name}: ${t.name} was written with scheme ${info.scheme}, which resolves to ${scheme.id} here`);
      const [rows, cols] = info.shape;
      values = scheme.dequantizeRef(bytes, rows, cols);
      dims = [cols, rows];
    } else {
      values = toFloat32(t.dtype, bytes);
      dims = [...t.shape].reverse();
    }
    tensors.push({ name: t.name, type: f32, dims, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) });
  }
  return { metadata, tensors };
}
