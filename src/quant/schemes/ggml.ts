/**
 * GGML block types (registered by the GGML codecs through quant/ggml/registry.ts) seen as schemes:
 * id `ggml_<name>` (lower case), blocks in row order exactly as llama.cpp stores them.
 */
import { fail } from '../../errors.js';
import type { GgmlCodec } from '../ggml/types.js';
import { checkPackedLength, checkShape, type QuantScheme } from '../scheme.js';

const cache = new Map<GgmlCodec, QuantScheme>();

export function ggmlScheme(codec: GgmlCodec): QuantScheme {
  const hit = cache.get(codec);
  if (hit) return hit;
  const t = codec.type;
  const id = `ggml_${t.name.toLowerCase()}`;
  const scheme: QuantScheme = Object.freeze({
    id,
    name: t.name,
    description: `GGML ${t.name} block type (llama.cpp layout)${codec.quantize ? '' : ', dequantize only'}`,
    family: 'ggml' as const,
    blockSize: t.blockSize,
    bytesPerBlock: t.typeSize,
    bitsPerWeight: (t.typeSize * 8) / t.blockSize,
    tensorScoped: false,
    packedBytes(rows: number, rowLength: number) {
      checkShape(scheme, rows * rowLength, rows, rowLength);
      return ((rows * rowLength) / t.blockSize) * t.typeSize;
    },
    quantizeRef(src: Float32Array, rows: number, rowLength: number) {
      checkShape(scheme, src.length, rows, rowLength);
      if (!codec.quantize) fail(`${id}: this build can dequantize ${t.name} but not quantize to it`);
      for (let i = 0; i < src.length; i++) if (!Number.isFinite(src[i])) fail(`${id} cannot hold ${src[i]} (input value ${i})`);
      const out = new Uint8Array(((rows * rowLength) / t.blockSize) * t.typeSize);
      codec.quantize(src, rows, rowLength, out);
      return out;
    },
    dequantizeRef(packed: Uint8Array, rows: number, rowLength: number, out?: Float32Array) {
      checkShape(scheme, rows * rowLength, rows, rowLength);
      checkPackedLength(id, packed, ((rows * rowLength) / t.blockSize) * t.typeSize);
      const dst = out ?? new Float32Array(rows * rowLength);
      codec.dequantize(packed, rows * rowLength, dst);
      return dst;
    },
  });
  cache.set(codec, scheme);
  return scheme;
}
