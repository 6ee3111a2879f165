/**
 * Baseline JPEG (ITU-T T.81, sequential DCT with Huffman coding; JFIF / Adobe colour) to RGBA8:
 * calibration inputs for image models. Browser-safe (bytes in, pixels out).
 *
 * File: markers 0xFF xx; SOI, then segments (u16 BE length including itself): DQT (8- or 16-bit tables,
 * zigzag order), SOF0/SOF1 (8-bit precision; height, width, components with sampling factors H x V and a
 * table), DHT (class DC/AC, 16 code-length counts, symbols), DRI (restart interval in MCUs), APP14 Adobe
 * (colour transform flag), SOS (the scan's components and tables) followed by entropy-coded data where
 * 0xFF is stuffed as 0xFF 0x00 and RST0..7 markers separate restart intervals; EOI.
 * A block: DC difference (category by the DC table, then that many bits, sign by the top bit) added to the
 * component's predictor; AC run/size pairs (0x00 end of block, 0xF0 sixteen zeros) in zigzag order; values
 * times the quantization table; inverse DCT (separable, float); + 128.
 * Interleaved scans go by MCUs of H_i x V_i blocks per component; a single-component scan by the
 * component's own blocks. Chroma planes are upsampled by linear interpolation with centred samples (what
 * libjpeg's "fancy" upsampling does for 2x), YCbCr to RGB by JFIF's equations; one component is gray;
 * Adobe transform 0 (or components named R, G, B) is RGB as stored.
 * Refused by name: progressive (SOF2), lossless, arithmetic coding, 12-bit samples, CMYK / 4 components,
 * a height given later by DNL.
 */
import { fail } from '../errors.js';
import type { RgbaImage } from './png.js';

export const isJpeg = (b: Uint8Array): boolean => b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** zigzag index -> natural (row-major) index */
const ZIGZAG = Uint8Array.from([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52,
  45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]);

/** cos((2x + 1) u pi / 16) * C(u) / 2, [x * 8 + u] */
const IDCT = (() => {
  const t = new Float64Array(64);
  for (let x = 0; x < 8; x++) for (let u = 0; u < 8; u++) t[x * 8 + u] = (u === 0 ? Math.SQRT1_2 : 1) * Math.cos(((2 * x + 1) * u * Math.PI) / 16) / 2;
  return t;
})();

interface Huffman {
  /** per code length 1..16: the largest code, the index of its first symbol, the first code */
  maxCode: Int32Array;
  valPtr: Int32Array;
  minCode: Int32Array;
  symbols: Uint8Array;
}

function buildHuffman(counts: Uint8Array, symbols: Uint8Array, name: string): Huffman {
  const maxCode = new Int32Array(18).fill(-1);
  const valPtr = new Int32Array(17);
  const minCode = new Int32Array(17);
  let code = 0;
  let k = 0;
  for (let len = 1; len <= 16; len++) {
    valPtr[len] = k;
    minCode[len] = code;
    code += counts[len - 1];
    k += counts[len - 1];
    if (counts[len - 1]) maxCode[len] = code - 1;
    if (code > 1 << len) fail(`${name}: a Huffman table has more codes of length ${len} than fit (corrupt file)`);
    code <<= 1;
  }
  maxCode[17] = 0x7fffffff;
  return { maxCode, valPtr, minCode, symbols };
}

interface Component {
  id: number;
  h: number;
  v: number;
  tq: number;
  /** blocks per line / column in this component's plane (padded to whole MCUs) */
  bw: number;
  bh: number;
  /** samples, bw * 8 wide */
  plane: Uint8Array;
  pred: number;
  td: number;
  ta: number;
}

export function decodeJpeg(b: Uint8Array, name: string): RgbaImage {
  if (!isJpeg(b)) fail(`${name}: not a JPEG file (no SOI marker)`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const qt: (Uint16Array | undefined)[] = [];
  const dc: (Huffman | undefined)[] = [];
  const ac: (Huffman | undefined)[] = [];
  let comps: Component[] = [];
  let width = 0;
  let height = 0;
  let hmax = 1;
  let vmax = 1;
  let restart = 0;
  let adobe = -1;
  let scans = 0;
  let p = 2;
  const need = (n: number, what: string) => {
    if (p + n > b.length) fail(`${name}: truncated JPEG (${what} runs past the end of the file)`);
  };
  for (;;) {
    // next marker (fill bytes 0xFF allowed)
    need(2, 'a marker');
    if (b[p] !== 0xff) fail(`${name}: expected a JPEG marker at byte ${p}, found 0x${b[p].toString(16)} (corrupt file)`);
    while (p < b.length && b[p] === 0xff) p++;
    need(1, 'a marker');
    const marker = b[p++];
    if (marker === 0xd9) break; // EOI
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) continue;
    need(2, 'a segment length');
    const len = dv.getUint16(p);
    if (len < 2) fail(`${name}: segment 0xFF${marker.toString(16)} has length ${len} (corrupt file)`);
    need(len, `segment 0xFF${marker.toString(16).toUpperCase()}`);
    const seg = b.subarray(p + 2, p + len);
    const end = p + len;
    p += 2;
    if (marker === 0xdb) {
      // DQT
      let o = 0;
      while (o < seg.length) {
        const pq = seg[o] >> 4;
        const tq = seg[o] & 15;
        if (tq > 3 || pq > 1) fail(`${name}: bad quantization table header 0x${seg[o].toString(16)}`);
        const n = 64 * (pq + 1);
        if (o + 1 + n > seg.length) fail(`${name}: truncated quantization table`);
        const t = new Uint16Array(64);
        for (let k = 0; k < 64; k++) t[k] = pq ? (seg[o + 1 + 2 * k] << 8) | seg[o + 2 + 2 * k] : seg[o + 1 + k];
        qt[tq] = t;
        o += 1 + n;
      }
    } else if (marker === 0xc4) {
      // DHT
      let o = 0;
      while (o < seg.length) {
        if (o + 17 > seg.length) fail(`${name}: truncated Huffman table`);
        const tc = seg[o] >> 4;
        const th = seg[o] & 15;
        if (tc > 1 || th > 3) fail(`${name}: bad Huffman table header 0x${seg[o].toString(16)}`);
        const counts = seg.subarray(o + 1, o + 17);
        const n = counts.reduce((a, c) => a + c, 0);
        if (o + 17 + n > seg.length) fail(`${name}: truncated Huffman table`);
        (tc ? ac : dc)[th] = buildHuffman(counts, seg.slice(o + 17, o + 17 + n), name);
        o += 17 + n;
      }
    } else if (marker === 0xc0 || marker === 0xc1) {
      if (seg.length < 6) fail(`${name}: truncated frame header`);
      if (seg[0] !== 8) fail(`${name}: ${seg[0]}-bit samples; only 8-bit JPEG is decoded`);
      height = (seg[1] << 8) | seg[2];
      width = (seg[3] << 8) | seg[4];
      const nf = seg[5];
      if (!height) fail(`${name}: the image height is given later (DNL marker), which is not supported`);
      if (!width) fail(`${name}: image width 0`);
      if (width * height > 1 << 28) fail(`${name}: ${width} x ${height} is too large to decode`);
      if (nf !== 1 && nf !== 3) fail(`${name}: ${nf} colour components (${nf === 4 ? 'CMYK' : 'unsupported'}); JPEG calibration images must be gray or YCbCr/RGB`);
      if (seg.length < 6 + 3 * nf) fail(`${name}: truncated frame header`);
      comps = [];
      for (let i = 0; i < nf; i++) {
        const h = seg[7 + 3 * i] >> 4;
        const v = seg[7 + 3 * i] & 15;
        if (h < 1 || h > 4 || v < 1 || v > 4) fail(`${name}: bad sampling factors ${h}x${v}`);
        comps.push({ id: seg[6 + 3 * i], h, v, tq: seg[8 + 3 * i] & 3, bw: 0, bh: 0, plane: new Uint8Array(0), pred: 0, td: 0, ta: 0 });
      }
      hmax = Math.max(...comps.map((c) => c.h));
      vmax = Math.max(...comps.map((c) => c.v));
      const mx = Math.ceil(width / (8 * hmax));
      const my = Math.ceil(height / (8 * vmax));
      for (const c of comps) {
        c.bw = mx * c.h;
        c.bh = my * c.v;
        c.plane = new Uint8Array(c.bw * 8 * c.bh * 8);
      }
    } else if (marker === 0xc2 || marker === 0xc6 || marker === 0xca || marker === 0xce) {
      fail(`${name}: progressive JPEG is not decoded (baseline only): re-save it as baseline JPEG or PNG`);
    } else if (marker === 0xc3 || marker === 0xc7 || marker === 0xcb || marker === 0xcf) {
      fail(`${name}: lossless JPEG is not decoded (baseline only)`);
    } else if (marker >= 0xc9 && marker <= 0xcb) {
      fail(`${name}: arithmetic-coded JPEG is not decoded (baseline only)`);
    } else if (marker === 0xc5) {
      fail(`${name}: hierarchical JPEG is not decoded (baseline only)`);
    } else if (marker === 0xdd) {
      if (seg.length < 2) fail(`${name}: truncated DRI segment`);
      restart = (seg[0] << 8) | seg[1];
    } else if (marker === 0xee) {
      if (seg.length >= 12 && String.fromCharCode(...seg.subarray(0, 5)) === 'Adobe') adobe = seg[11];
    } else if (marker === 0xda) {
      if (!comps.length) fail(`${name}: scan before the frame header (SOF)`);
      const ns = seg[0];
      if (!ns || ns > comps.length || seg.length < 1 + 2 * ns + 3) fail(`${name}: bad scan header`);
      const sc: Component[] = [];
      for (let i = 0; i < ns; i++) {
        const c = comps.find((x) => x.id === seg[1 + 2 * i]) ?? fail(`${name}: the scan names component ${seg[1 + 2 * i]}, not in the frame`);
        c.td = seg[2 + 2 * i] >> 4;
        c.ta = seg[2 + 2 * i] & 15;
        if (!dc[c.td] || !ac[c.ta]) fail(`${name}: the scan uses a Huffman table that was not defined`);
        if (!qt[c.tq]) fail(`${name}: component ${c.id} uses quantization table ${c.tq}, not defined`);
        sc.push(c);
      }
      p = end;
      p = decodeScan(b, p, sc, width, height, hmax, vmax, restart, { qt: qt as Uint16Array[], dc: dc as Huffman[], ac: ac as Huffman[] }, name);
      scans++;
      continue;
    }
    p = end;
  }
  if (!scans) fail(`${name}: no image data (no scan before EOI)`);
  // to RGBA
  const out = new Uint8Array(width * height * 4);
  const planes = comps.map((c) => upsample(c, width, height, hmax, vmax));
  const rgb = comps.length === 3 && (adobe === 0 || (adobe < 0 && comps[0].id === 82 && comps[1].id === 71 && comps[2].id === 66));
  const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));
  for (let i = 0; i < width * height; i++) {
    const o = i * 4;
    if (comps.length === 1) out[o] = out[o + 1] = out[o + 2] = planes[0][i];
    else if (rgb) [out[o], out[o + 1], out[o + 2]] = [planes[0][i], planes[1][i], planes[2][i]];
    else {
      const y = planes[0][i];
      const cb = planes[1][i] - 128;
      const cr = planes[2][i] - 128;
      out[o] = clamp(y + 1.402 * cr);
      out[o + 1] = clamp(y - 0.344136 * cb - 0.714136 * cr);
      out[o + 2] = clamp(y + 1.772 * cb);
    }
    out[o + 3] = 255;
  }
  return { width, height, data: out };
}

/** a component's plane at full resolution (width x height), linear interpolation between centred samples */
function upsample(c: Component, width: number, height: number, hmax: number, vmax: number): Float32Array {
  const out = new Float32Array(width * height);
  const stride = c.bw * 8;
  const cw = Math.ceil((width * c.h) / hmax);
  const ch = Math.ceil((height * c.v) / vmax);
  const fx = c.h / hmax;
  const fy = c.v / vmax;
  for (let y = 0; y < height; y++) {
    const sy = Math.min(ch - 1, Math.max(0, (y + 0.5) * fy - 0.5));
    const y0 = Math.floor(sy);
    const y1 = Math.min(ch - 1, y0 + 1);
    const wy = sy - y0;
    for (let x = 0; x < width; x++) {
      if (fx === 1 && fy === 1) {
        out[y * width + x] = c.plane[y * stride + x];
        continue;
      }
      const sx = Math.min(cw - 1, Math.max(0, (x + 0.5) * fx - 0.5));
      const x0 = Math.floor(sx);
      const x1 = Math.min(cw - 1, x0 + 1);
      const wx = sx - x0;
      const top = c.plane[y0 * stride + x0] * (1 - wx) + c.plane[y0 * stride + x1] * wx;
      const bot = c.plane[y1 * stride + x0] * (1 - wx) + c.plane[y1 * stride + x1] * wx;
      out[y * width + x] = top * (1 - wy) + bot * wy;
    }
  }
  return out;
}

function decodeScan(b: Uint8Array, start: number, sc: Component[], width: number, height: number, hmax: number, vmax: number, restart: number, t: { qt: Uint16Array[]; dc: Huffman[]; ac: Huffman[] }, name: string): number {
  let p = start;
  let acc = 0;
  let nbits = 0;
  let hitMarker = false;
  const bit = (): number => {
    if (nbits === 0) {
      let byte = 0;
      if (!hitMarker) {
        if (p >= b.length) fail(`${name}: truncated JPEG (the scan data runs past the end of the file)`);
        byte = b[p];
        if (byte === 0xff) {
          const next = b[p + 1];
          if (next === 0x00) p += 2;
          else if (next === 0xff) p += 1; // fill byte
          else {
            hitMarker = true;
            byte = 0;
          }
        } else p++;
      }
      acc = byte;
      nbits = 8;
    }
    nbits--;
    return (acc >> nbits) & 1;
  };
  const bits = (n: number): number => {
    let v = 0;
    for (let i = 0; i < n; i++) v = (v << 1) | bit();
    return v;
  };
  const decode = (h: Huffman): number => {
    let code = bit();
    let len = 1;
    while (code > h.maxCode[len]) {
      code = (code << 1) | bit();
      if (++len > 16) fail(`${name}: bad Huffman code in the scan data (corrupt file)`);
    }
    return h.symbols[h.valPtr[len] + code - h.minCode[len]];
  };
  const extend = (v: number, s: number) => (s === 0 ? 0 : v < 1 << (s - 1) ? v - (1 << s) + 1 : v);
  const coef = new Float64Array(64);
  const tmp = new Float64Array(64);
  const block = (c: Component, bx: number, by: number) => {
    coef.fill(0);
    const q = t.qt[c.tq];
    const s = decode(t.dc[c.td]);
    if (s > 11) fail(`${name}: bad DC difference category ${s} (corrupt file)`);
    c.pred += extend(bits(s), s);
    coef[0] = c.pred * q[0];
    const h = t.ac[c.ta];
    for (let k = 1; k < 64; ) {
      const rs = decode(h);
      const r = rs >> 4;
      const sz = rs & 15;
      if (!sz) {
        if (r !== 15) break;
        k += 16;
        continue;
      }
      k += r;
      if (k > 63) fail(`${name}: AC coefficients run past the end of a block (corrupt file)`);
      coef[ZIGZAG[k]] = extend(bits(sz), sz) * q[k];
      k++;
    }
    // inverse DCT: rows (over u) then columns (over v)
    for (let v = 0; v < 8; v++)
      for (let x = 0; x < 8; x++) {
        let s2 = 0;
        for (let u = 0; u < 8; u++) s2 += IDCT[x * 8 + u] * coef[v * 8 + u];
        tmp[v * 8 + x] = s2;
      }
    const stride = c.bw * 8;
    for (let y = 0; y < 8; y++)
      for (let x = 0; x < 8; x++) {
        let s2 = 0;
        for (let v = 0; v < 8; v++) s2 += IDCT[y * 8 + v] * tmp[v * 8 + x];
        const val = Math.round(s2 + 128);
        c.plane[(by * 8 + y) * stride + bx * 8 + x] = val < 0 ? 0 : val > 255 ? 255 : val;
      }
  };
  const single = sc.length === 1;
  // a single-component scan covers the component's own blocks (not padded to MCUs)
  const c0 = sc[0];
  const unitsX = single ? Math.ceil(Math.ceil((width * c0.h) / hmax) / 8) : Math.ceil(width / (8 * hmax));
  const unitsY = single ? Math.ceil(Math.ceil((height * c0.v) / vmax) / 8) : Math.ceil(height / (8 * vmax));
  const total = unitsX * unitsY;
  for (const c of sc) c.pred = 0;
  for (let n = 0; n < total; n++) {
    if (restart && n > 0 && n % restart === 0) {
      // byte-align, expect RSTn, reset predictors
      nbits = 0;
      hitMarker = false;
      while (p + 1 < b.length && !(b[p] === 0xff && b[p + 1] >= 0xd0 && b[p + 1] <= 0xd7)) p++;
      if (p + 1 >= b.length) fail(`${name}: truncated JPEG (restart marker missing)`);
      p += 2;
      for (const c of sc) c.pred = 0;
    }
    const mx = n % unitsX;
    const my = Math.floor(n / unitsX);
    if (single) block(c0, mx, my);
    else for (const c of sc) for (let v = 0; v < c.v; v++) for (let h = 0; h < c.h; h++) block(c, mx * c.h + h, my * c.v + v);
  }
  // to the marker after the scan
  while (p + 1 < b.length && !(b[p] === 0xff && b[p + 1] !== 0x00 && !(b[p + 1] >= 0xd0 && b[p + 1] <= 0xd7))) p++;
  if (p + 1 >= b.length) fail(`${name}: truncated JPEG (no marker after the scan data)`);
  return p;
}
