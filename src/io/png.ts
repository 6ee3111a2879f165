/**
 * PNG images (ISO/IEC 15948, the W3C PNG spec) to RGBA8: calibration inputs for image models.
 *
 * File: 8-byte signature | chunks (u32 BE length | 4-char type | data | u32 BE CRC-32 of type + data).
 * IHDR: width, height (u32 BE), bit depth, colour type (0 gray, 2 RGB, 3 palette, 4 gray + alpha,
 * 6 RGBA), compression 0, filter 0, interlace 0 (Adam7, 1, is refused by name). PLTE: RGB entries;
 * tRNS: palette alphas. The IDAT chunks concatenated are one zlib stream (the caller supplies inflate,
 * so this file stays browser-safe) of scanlines, each a filter byte (0 none, 1 sub, 2 up, 3 average,
 * 4 Paeth) then the row's bytes; filters work on bytes with bpp = ceil(bits per pixel / 8).
 * Depths: 1/2/4/8 (gray, palette), 8/16 (others); 16-bit samples keep their high byte.
 */
import { fail } from '../errors.js';
import { concatParts } from './sink.js';

export interface RgbaImage {
  width: number;
  height: number;
  /** RGBA, 8 bits per sample, row-major */
  data: Uint8Array;
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
export function crc32(b: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 255] ^ (c >>> 8);
  return ~c >>> 0;
}

const paeth = (a: number, b: number, c: number) => {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
};

export function isPng(b: Uint8Array): boolean {
  return b.length >= 8 && SIGNATURE.every((v, i) => b[i] === v);
}

export function decodePng(b: Uint8Array, name: string, inflate: (zlib: Uint8Array) => Uint8Array): RgbaImage {
  if (!isPng(b)) fail(`${name}: not a PNG file (bad signature)`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = 8;
  let ihdr: { width: number; height: number; depth: number; color: number } | undefined;
  let palette: Uint8Array | undefined;
  let trns: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  let ended = false;
  while (!ended) {
    if (o + 12 > b.length) fail(`${name}: truncated PNG (chunk header at byte ${o} past the end)`);
    const len = dv.getUint32(o);
    const type = String.fromCharCode(b[o + 4], b[o + 5], b[o + 6], b[o + 7]);
    if (o + 12 + len > b.length) fail(`${name}: truncated PNG (chunk ${type} of ${len} bytes past the end)`);
    const data = b.subarray(o + 8, o + 8 + len);
    if (crc32(b.subarray(o + 4, o + 8 + len)) !== dv.getUint32(o + 8 + len)) fail(`${name}: PNG chunk ${type} fails its CRC check (corrupt file)`);
    if (!ihdr && type !== 'IHDR') fail(`${name}: PNG does not start with IHDR`);
    switch (type) {
      case 'IHDR': {
        if (len !== 13) fail(`${name}: IHDR of ${len} bytes (13 expected)`);
        const d = new DataView(data.buffer, data.byteOffset, 13);
        ihdr = { width: d.getUint32(0), height: d.getUint32(4), depth: data[8], color: data[9] };
        if (!ihdr.width || !ihdr.height || ihdr.width * ihdr.height > 2 ** 28) fail(`${name}: impossible PNG size ${ihdr.width} x ${ihdr.height}`);
        if (!(ihdr.color in CHANNELS)) fail(`${name}: unknown PNG colour type ${ihdr.color}`);
        const depths = ihdr.color === 0 ? [1, 2, 4, 8, 16] : ihdr.color === 3 ? [1, 2, 4, 8] : [8, 16];
        if (!depths.includes(ihdr.depth)) fail(`${name}: bit depth ${ihdr.depth} is invalid for colour type ${ihdr.color}`);
        if (data[10] !== 0 || data[11] !== 0) fail(`${name}: unknown PNG compression/filter method`);
        if (data[12] !== 0) fail(`${name}: interlaced (Adam7) PNG is not supported; save it without interlacing`);
        break;
      }
      case 'PLTE':
        palette = data;
        break;
      case 'tRNS':
        trns = data;
        break;
      case 'IDAT':
        idat.push(data);
        break;
      case 'IEND':
        ended = true;
        break;
      default:
        if (!(b[o + 4] & 0x20)) fail(`${name}: unknown critical PNG chunk ${type}`);
    }
    o += 12 + len;
  }
  const { width, height, depth, color } = ihdr!;
  if (color === 3 && !palette) fail(`${name}: palette PNG without PLTE`);
  const zlib = concatParts(idat);
  let raw: Uint8Array;
  try {
    raw = inflate(zlib);
  } catch (e) {
    fail(`${name}: PNG image data does not inflate (${(e as Error).message})`);
  }
  const bitsPerPixel = CHANNELS[color] * depth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const stride = Math.ceil((width * bitsPerPixel) / 8);
  if (raw.length < height * (stride + 1)) fail(`${name}: PNG image data holds ${raw.length} bytes, ${height * (stride + 1)} needed`);
  // unfilter in place, row by row
  const rows = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = rows.subarray(y * stride, (y + 1) * stride);
    const up = y ? rows.subarray((y - 1) * stride, y * stride) : undefined;
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? row[i - bpp] : 0;
      const bUp = up ? up[i] : 0;
      const c = up && i >= bpp ? up[i - bpp] : 0;
      const x = src[i];
      switch (f) {
        case 0:
          row[i] = x;
          break;
        case 1:
          row[i] = x + a;
          break;
        case 2:
          row[i] = x + bUp;
          break;
        case 3:
          row[i] = x + ((a + bUp) >> 1);
          break;
        case 4:
          row[i] = x + paeth(a, bUp, c);
          break;
        default:
          fail(`${name}: unknown PNG filter type ${f} on row ${y}`);
      }
    }
  }
  // samples to RGBA8
  const out = new Uint8Array(width * height * 4);
  const sample = (row: number, k: number): number => {
    // k-th sample of the row (k counts samples, not pixels)
    const base = row * stride;
    if (depth === 8) return rows[base + k];
    if (depth === 16) return rows[base + 2 * k];
    const bit = k * depth;
    const v = (rows[base + (bit >> 3)] >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
    return color === 3 ? v : Math.round((v * 255) / ((1 << depth) - 1));
  };
  const ch = CHANNELS[color];
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const d = (y * width + x) * 4;
      if (color === 3) {
        const i = sample(y, x);
        if (3 * i + 2 >= palette!.length) fail(`${name}: palette index ${i} past the ${palette!.length / 3} entries`);
        out[d] = palette![3 * i];
        out[d + 1] = palette![3 * i + 1];
        out[d + 2] = palette![3 * i + 2];
        out[d + 3] = trns && i < trns.length ? trns[i] : 255;
        continue;
      }
      const s0 = sample(y, x * ch);
      if (ch <= 2) {
        out[d] = out[d + 1] = out[d + 2] = s0;
        out[d + 3] = ch === 2 ? sample(y, x * ch + 1) : 255;
      } else {
        out[d] = s0;
        out[d + 1] = sample(y, x * ch + 1);
        out[d + 2] = sample(y, x * ch + 2);
        out[d + 3] = ch === 4 ? sample(y, x * ch + 3) : 255;
      }
    }
  return { width, height, data: out };
}

/**
 * An RGBA8 (colour type 6) or RGB8 (2) PNG; row y uses filter type `filter(y)` (0-4), so every
 * filter is exercised by round trips. `deflate` makes a zlib stream.
 */
export function encodePng(img: RgbaImage, deflate: (raw: Uint8Array) => Uint8Array, opts: { rgb?: boolean; filter?: (y: number) => number } = {}): Uint8Array {
  const ch = opts.rgb ? 3 : 4;
  const { width, height } = img;
  const stride = width * ch;
  const rows = new Uint8Array(height * stride);
  for (let i = 0; i < width * height; i++) for (let c = 0; c < ch; c++) rows[i * ch + c] = img.data[i * 4 + c];
  const raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const f = opts.filter?.(y) ?? 0;
    raw[y * (stride + 1)] = f;
    for (let i = 0; i < stride; i++) {
      const x = rows[y * stride + i];
      const a = i >= ch ? rows[y * stride + i - ch] : 0;
      const b = y ? rows[(y - 1) * stride + i] : 0;
      const c = y && i >= ch ? rows[(y - 1) * stride + i - ch] : 0;
      const pred = f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : f === 4 ? paeth(a, b, c) : 0;
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 255;
    }
  }
  const chunk = (type: string, data: Uint8Array) => {
    const out = new Uint8Array(12 + data.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(data, 8);
    dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
    return out;
  };
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, width);
  dv.setUint32(4, height);
  ihdr[8] = 8;
  ihdr[9] = opts.rgb ? 2 : 6;
  return concatParts([Uint8Array.from(SIGNATURE), chunk('IHDR', ihdr), chunk('IDAT', deflate(raw)), chunk('IEND', new Uint8Array(0))]);
}
