/**
 * NumPy .npy and .npz files (numpy/lib/format.py): calibration inputs for ONNX models.
 *
 * .npy: "\x93NUMPY" | major | minor | header length (u16 LE for v1, u32 LE for v2/v3) | header, a
 * Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 48, 320), } padded
 * with spaces and a newline | data (C order unless fortran_order).
 * .npz: a zip archive of .npy files, one per array (stored, or deflated: the caller supplies inflate).
 */
import { fail } from '../errors.js';
import { crc32 } from './png.js';
import { concatParts } from './sink.js';

export type NpyType = 'float32' | 'float64' | 'float16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';
export interface NpyArray {
  readonly type: NpyType;
  readonly shape: number[];
  /** little-endian element bytes, C order */
  readonly data: Uint8Array;
}

const DESCR: Record<string, NpyType> = {
  '<f4': 'float32',
  '<f8': 'float64',
  '<f2': 'float16',
  '<i8': 'int64',
  '<i4': 'int32',
  '<i2': 'int16',
  '|i1': 'int8',
  '|u1': 'uint8',
  '|b1': 'bool',
};
export const NPY_BYTES: Record<NpyType, number> = { float32: 4, float64: 8, float16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 };

export function readNpy(b: Uint8Array, name = 'array.npy'): NpyArray {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (b.length < 10 || magic.some((m, i) => b[i] !== m)) fail(`${name}: not a .npy file (bad magic)`);
  const major = b[6];
  if (major < 1 || major > 3) fail(`${name}: .npy version ${major} is not supported`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  if (start + hlen > b.length) fail(`${name}: header of ${hlen} bytes is past the end of the file`);
  const header = new TextDecoder().decode(b.subarray(start, start + hlen));
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) fail(`${name}: unreadable .npy header ${JSON.stringify(header.trim())}`);
  const type = DESCR[descr] ?? fail(`${name}: dtype '${descr}' is not supported (little-endian float/int/uint8/bool)`);
  if (fortran === 'True') fail(`${name}: Fortran-order arrays are not supported (save with np.ascontiguousarray)`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => (/^\d+$/.test(s) ? Number(s) : fail(`${name}: bad shape (${shapeText})`)));
  const n = shape.reduce((a, c) => a * c, 1);
  const bytes = n * NPY_BYTES[type];
  const at = start + hlen;
  if (at + bytes !== b.length) fail(`${name}: ${b.length - at} data bytes for shape (${shape.join(', ')}) of ${type} (${bytes} expected)`);
  return { type, shape, data: b.slice(at, at + bytes) };
}

export function writeNpy(a: NpyArray): Uint8Array {
  const descr = Object.entries(DESCR).find(([, t]) => t === a.type)![0];
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${a.shape.join(', ')}${a.shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + a.data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(a.data, 10 + header.length);
  return out;
}

/** An .npz archive (zip, entries stored uncompressed with their CRC-32) of named arrays. */
export function writeNpz(arrays: Readonly<Record<string, NpyArray>>): Uint8Array {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [key, a] of Object.entries(arrays)) {
    const data = writeNpy(a);
    const name = enc.encode(`${key}.npy`);
    const crc = crc32(data);
    const local = new Uint8Array(30 + name.length + data.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    local.set(data, 30 + name.length);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    central.set(name, 46);
    locals.push(local);
    centrals.push(central);
    offset += local.length;
  }
  const dirSize = centrals.reduce((n, c) => n + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, centrals.length, true);
  ev.setUint16(10, centrals.length, true);
  ev.setUint32(12, dirSize, true);
  ev.setUint32(16, offset, true);
  return concatParts([...locals, ...centrals, end]);
}

/** The arrays of an .npz (zip) archive by name (without '.npy'). */
export function readNpz(b: Uint8Array, name = 'arrays.npz', inflateRaw?: (d: Uint8Array) => Uint8Array): Map<string, NpyArray> {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  // the end-of-central-directory record: last 22 bytes (no archive comment) or further back
  let eocd = -1;
  for (let i = b.length - 22; i >= Math.max(0, b.length - 22 - 65535); i--)
    if (dv.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) fail(`${name}: not an .npz (zip) file`);
  const count = dv.getUint16(eocd + 10, true);
  let p = dv.getUint32(eocd + 16, true);
  const out = new Map<string, NpyArray>();
  for (let i = 0; i < count; i++) {
    if (p + 46 > b.length || dv.getUint32(p, true) !== 0x02014b50) fail(`${name}: broken zip central directory`);
    const method = dv.getUint16(p + 10, true);
    const csize = dv.getUint32(p + 20, true);
    const nlen = dv.getUint16(p + 28, true);
    const elen = dv.getUint16(p + 30, true);
    const clen = dv.getUint16(p + 32, true);
    const local = dv.getUint32(p + 42, true);
    const entry = new TextDecoder().decode(b.subarray(p + 46, p + 46 + nlen));
    p += 46 + nlen + elen + clen;
    if (local + 30 > b.length || dv.getUint32(local, true) !== 0x04034b50) fail(`${name}: broken zip entry ${entry}`);
    const dataAt = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    if (dataAt + csize > b.length) fail(`${name}: entry ${entry} is past the end of the file`);
    const raw = b.subarray(dataAt, dataAt + csize);
    const data = method === 0 ? raw : method === 8 ? (inflateRaw ?? fail(`${name}: ${entry} is deflated; no inflater here`))(raw) : fail(`${name}: zip method ${method} is not supported`);
    out.set(entry.replace(/\.npy$/, ''), readNpy(data, `${name}:${entry}`));
  }
  return out;
}
