/**
 * Element conversions between stored tensor bytes and float32: GGML types (F32/F16/BF16/F64/I*,
 * block types through the codec registry) and safetensors dtypes. Little-endian bytes throughout.
 */
import { fail } from '../errors.js';
import { decodeFloat } from '../formats/float.js';
import { fp8_e4m3fn, fp8_e5m2 } from '../formats/registry.js';
import { bf16ToF32 } from '../formats/half.js';
import { ggmlCodec, ggmlTypeTraits } from '../quant/ggml/registry.js';
import { ggmlTypeByName, isGgmlFloat, type GgmlTypeInfo } from '../quant/ggml/types.js';

/** An element kind: a GGML type name ('F32', 'Q4_0', ...) or a safetensors dtype ('F8_E4M3', 'BOOL', ...). */
export type ElementKind = string;

const FP8_E4M3 = Float32Array.from({ length: 256 }, (_, c) => decodeFloat(fp8_e4m3fn as never, c));
const FP8_E5M2 = Float32Array.from({ length: 256 }, (_, c) => decodeFloat(fp8_e5m2 as never, c));

/** safetensors dtype <-> GGML type for the kinds both know */
export const DTYPE_TO_GGML: Readonly<Record<string, string>> = Object.freeze({ F32: 'F32', F16: 'F16', BF16: 'BF16', F64: 'F64', I8: 'I8', I16: 'I16', I32: 'I32', I64: 'I64' });
export const GGML_TO_DTYPE: Readonly<Record<string, string>> = Object.freeze({ F32: 'F32', F16: 'F16', BF16: 'BF16', F64: 'F64', I8: 'I8', I16: 'I16', I32: 'I32', I64: 'I64' });

function aligned(bytes: Uint8Array, size: number): ArrayBuffer {
  if (bytes.byteOffset % size === 0 && bytes.buffer instanceof ArrayBuffer) return bytes.buffer;
  return bytes.slice().buffer;
}
function view<T>(bytes: Uint8Array, size: number, C: new (b: ArrayBuffer, o: number, n: number) => T): T {
  const buf = aligned(bytes, size);
  return new C(buf, buf === bytes.buffer ? bytes.byteOffset : 0, bytes.length / size);
}

/** Decode `bytes` of kind `kind` to float32 (out may be given; its length is the element count). */
export function toFloat32(kind: ElementKind, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const k = kind.toUpperCase();
  const simple: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I8: 1, I16: 2, I32: 4, I64: 8, U8: 1, U16: 2, U32: 4, U64: 8, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };
  if (k in simple) {
    const size = simple[k];
    if (bytes.length % size) fail(`${kind} data of ${bytes.length} bytes is not a whole number of elements`);
    const n = bytes.length / size;
    const o = out ?? new Float32Array(n);
    if (o.length < n) fail(`output buffer too small`);
    const float = ggmlTypeTraits(k);
    if (float?.float && float.toFloat && float.type.name === k) {
      float.toFloat(bytes, n, o); // F32, F16, BF16: the type-traits row's conversion
      return o;
    }
    switch (k) {
      case 'F64':
        o.set(view(bytes, 8, Float64Array));
        break;
      case 'I8':
        o.set(new Int8Array(bytes.buffer, bytes.byteOffset, n));
        break;
      case 'U8':
      case 'BOOL':
        o.set(bytes);
        break;
      case 'I16':
        o.set(view(bytes, 2, Int16Array));
        break;
      case 'U16':
        o.set(view(bytes, 2, Uint16Array));
        break;
      case 'I32':
        o.set(view(bytes, 4, Int32Array));
        break;
      case 'U32':
        o.set(view(bytes, 4, Uint32Array));
        break;
      case 'I64': {
        const v = view(bytes, 8, BigInt64Array);
        for (let i = 0; i < n; i++) o[i] = Number(v[i]);
        break;
      }
      case 'U64': {
        const v = view(bytes, 8, BigUint64Array);
        for (let i = 0; i < n; i++) o[i] = Number(v[i]);
        break;
      }
      case 'F8_E4M3':
        for (let i = 0; i < n; i++) o[i] = FP8_E4M3[bytes[i]];
        break;
      case 'F8_E5M2':
        for (let i = 0; i < n; i++) o[i] = FP8_E5M2[bytes[i]];
        break;
    }
    return o;
  }
  const t = ggmlTypeByName(k);
  if (!t) fail(`unknown element type ${kind}`);
  const codec = ggmlCodec(t);
  if (!codec) fail(`no dequantizer for GGML type ${t.name} is registered`);
  if (bytes.length % t.typeSize) fail(`${t.name} data of ${bytes.length} bytes is not a whole number of blocks`);
  const n = (bytes.length / t.typeSize) * t.blockSize;
  const o = out ?? new Float32Array(n);
  codec.dequantize(bytes, n, o);
  return o;
}

/** Encode float32 to a float type's bytes (F32/F16/BF16: the type-traits row's fromFloat, round to nearest even). */
export function fromFloat32(kind: string, x: Float32Array, out?: Uint8Array): Uint8Array {
  const r = ggmlTypeTraits(kind);
  if (!r?.float || !r.fromFloat) fail(`cannot encode float32 as ${kind} (a float type: F32, F16 or BF16)`);
  const o = out ?? new Uint8Array(x.length * r.typeSize);
  r.fromFloat(x, 1, x.length, o);
  return o;
}

/** Bytes per element of the float target kinds */
export const FLOAT_KIND_BYTES = Object.freeze({ F32: 4, F16: 2, BF16: 2 });

/** fast paths F16->F32 etc. are not needed: toFloat32 + fromFloat32 handle every pair. */
export function isFloatKind(kind: string): kind is 'F32' | 'F16' | 'BF16' {
  return isGgmlFloat(kind) && ggmlTypeByName(kind)!.name === kind; // the type-traits table's float rows, names as written
}

export function ggmlInfo(name: string): GgmlTypeInfo {
  const t = ggmlTypeByName(name);
  if (!t) fail(`unknown GGML type ${name}`);
  return t;
}

export { bf16ToF32 };
