/**
 * A bare element format as a scheme: one fixed scale (default 1) for every element and one code per
 * byte (2 or 4 little-endian bytes above 8 bits), the layout of `lowbit cast --codes`.
 */
import { allocCodes, decodeRef, encodeRef, type CastOptions } from '../../formats/cast.js';
import type { Format } from '../../formats/descriptor.js';
import { checkPackedLength, checkShape, type QuantScheme } from '../scheme.js';

export interface ElementScheme extends QuantScheme {
  readonly family: 'element';
  readonly format: Format;
  readonly cast: CastOptions;
}

export function codeWidth(f: Format): number {
  return f.bits <= 8 ? 1 : f.bits <= 16 ? 2 : 4;
}

export function makeElementScheme(f: Format, cast: CastOptions = {}): ElementScheme {
  const w = codeWidth(f);
  const scale = cast.scale ?? 1;
  const scheme: ElementScheme = {
    id: f.name,
    name: f.name,
    description: `${f.description} (element format, scale ${scale}, one code per ${w === 1 ? 'byte' : `${w} bytes`})`,
    family: 'element',
    format: f,
    cast,
    blockSize: 1,
    bytesPerBlock: w,
    bitsPerWeight: 8 * w,
    tensorScoped: false,
    packedBytes(rows, rowLength) {
      checkShape(scheme, rows * rowLength, rows, rowLength);
      return rows * rowLength * w;
    },
    quantizeRef(src, rows, rowLength) {
      checkShape(scheme, src.length, rows, rowLength);
      const codes = encodeRef(f, src, cast, allocCodes(f, src.length));
      return new Uint8Array(codes.buffer, codes.byteOffset, codes.byteLength);
    },
    dequantizeRef(packed, rows, rowLength, out) {
      checkShape(scheme, rows * rowLength, rows, rowLength);
      checkPackedLength(f.name, packed, rows * rowLength * w);
      const bytes = packed.slice();
      const codes = w === 1 ? bytes : w === 2 ? new Uint16Array(bytes.buffer) : new Uint32Array(bytes.buffer);
      return decodeRef(f, codes, out, scale);
    },
  };
  return Object.freeze(scheme);
}
