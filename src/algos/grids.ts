/**
 * Quantization grids for the calibrated algorithms (GPTQ, AWQ search, HQQ): a group of consecutive
 * values of one row shares parameters; `quant` returns the nearest representable value. For the
 * 32-element GGML types, `pack` writes ggml's exact block bytes for values already on the grid, so a
 * GPTQ result becomes a GGUF tensor that llama.cpp dequantizes to the same numbers.
 */
import { fail } from '../errors.js';
import { f16ToF32, f32ToF16 } from '../quant/ggml/half.js';
import type { GptqGrid } from './gptq.js';

const r16 = (x: number) => f16ToF32(f32ToF16(x));

/** Integer grid per group: symmetric (scale = absmax / qmax, codes -qmax-1..qmax) or asymmetric (min/max, zero-point). */
export function intGrid(bits: number, groupSize: number, asym = false): GptqGrid {
  if (!(bits >= 2 && bits <= 8)) fail(`integer grid bits must be 2..8, got ${bits}`);
  const qmaxS = 2 ** (bits - 1) - 1;
  const qmaxA = 2 ** bits - 1;
  return {
    name: `int${bits}${asym ? '_asym' : ''}_g${groupSize}`,
    groupSize,
    paramCount: 2,
    fit(x, off, p, o) {
      let lo = 0;
      let hi = 0;
      let amax = 0;
      for (let j = 0; j < groupSize; j++) {
        const v = x[off + j];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (Math.abs(v) > amax) amax = Math.abs(v);
      }
      if (asym) {
        const s = hi > lo ? (hi - lo) / qmaxA : 1;
        p[o] = Math.fround(s);
        p[o + 1] = Math.round(-lo / s);
      } else {
        p[o] = Math.fround(amax > 0 ? amax / qmaxS : 1);
        p[o + 1] = 0;
      }
    },
    quant(x, p, o) {
      const s = p[o];
      if (asym) {
        const z = p[o + 1];
        const q = Math.min(qmaxA, Math.max(0, Math.round(x / s) + z));
        return Math.fround((q - z) * s);
      }
      const q = Math.min(qmaxS, Math.max(-qmaxS - 1, Math.round(x / s)));
      return Math.fround(q * s);
    },
  };
}

/** IQ4_NL / IQ4_XS non-linear levels (ggml-common.h kvalues_iq4nl). */
export const IQ4_LEVELS = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

export interface PackableGrid extends GptqGrid {
  /** GGML type name */
  readonly ggmlType: string;
  readonly blockBytes: number;
  /** write one block (groupSize on-grid values of a row) to out at outOff */
  pack(q: Float32Array, off: number, p: Float64Array, pOff: number, out: Uint8Array, outOff: number): void;
}

function signedMax(x: Float32Array, off: number, n: number): number {
  let m = 0;
  let a = 0;
  for (let j = 0; j < n; j++) {
    const v = x[off + j];
    if (Math.abs(v) > a) {
      a = Math.abs(v);
      m = v;
    }
  }
  return m;
}

function nibbles(codes: ArrayLike<number>, out: Uint8Array, o: number): void {
  // ggml's 32-element nibble layout: byte j holds element j (low) and element j + 16 (high)
  for (let j = 0; j < 16; j++) out[o + j] = (codes[j] & 15) | ((codes[j + 16] & 15) << 4);
}

const codesBuf = new Int32Array(32);

/** Legacy 32-element GGML block types and IQ4_NL as GPTQ grids with exact ggml packing. */
export function ggmlGrid(type: string): PackableGrid {
  const T = type.toUpperCase();
  const write16 = (out: Uint8Array, o: number, v: number) => {
    const h = f32ToF16(v);
    out[o] = h & 255;
    out[o + 1] = h >>> 8;
  };
  switch (T) {
    case 'Q4_0':
    case 'Q5_0': {
      const half = T === 'Q4_0' ? 8 : 16;
      return {
        name: T, ggmlType: T, groupSize: 32, paramCount: 1, blockBytes: T === 'Q4_0' ? 18 : 22,
        fit(x, off, p, o) { p[o] = r16(signedMax(x, off, 32) / -half); },
        quant(x, p, o) {
          const d = p[o];
          if (d === 0) return 0;
          const q = Math.min(half - 1, Math.max(-half, Math.round(x / d))) + 0; // + 0: an integer code has no sign, as in C
          return Math.fround(q * d);
        },
        pack(q, off, p, o, out, oo) {
          const d = p[o];
          write16(out, oo, d);
          for (let j = 0; j < 32; j++) codesBuf[j] = d === 0 ? half : Math.round(q[off + j] / d) + half;
          if (T === 'Q4_0') nibbles(codesBuf, out, oo + 2);
          else {
            let qh = 0;
            for (let j = 0; j < 32; j++) qh |= ((codesBuf[j] >> 4) & 1) << j;
            new DataView(out.buffer, out.byteOffset).setUint32(oo + 2, qh >>> 0, true);
            nibbles(codesBuf, out, oo + 6);
          }
        },
      };
    }
    case 'Q4_1':
    case 'Q5_1': {
      const top = T === 'Q4_1' ? 15 : 31;
      return {
        name: T, ggmlType: T, groupSize: 32, paramCount: 2, blockBytes: T === 'Q4_1' ? 20 : 24,
        fit(x, off, p, o) {
          let lo = Infinity;
          let hi = -Infinity;
          for (let j = 0; j < 32; j++) {
            lo = Math.min(lo, x[off + j]);
            hi = Math.max(hi, x[off + j]);
          }
          p[o] = r16((hi - lo) / top);
          p[o + 1] = r16(lo);
        },
        quant(x, p, o) {
          const d = p[o];
          const m = p[o + 1];
          const q = d === 0 ? 0 : Math.min(top, Math.max(0, Math.round((x - m) / d)));
          return Math.fround(Math.fround(q * d) + m);
        },
        pack(q, off, p, o, out, oo) {
          const d = p[o];
          const m = p[o + 1];
          write16(out, oo, d);
          write16(out, oo + 2, m);
          for (let j = 0; j < 32; j++) codesBuf[j] = d === 0 ? 0 : Math.round((q[off + j] - m) / d);
          if (T === 'Q4_1') nibbles(codesBuf, out, oo + 4);
          else {
            let qh = 0;
            for (let j = 0; j < 32; j++) qh |= ((codesBuf[j] >> 4) & 1) << j;
            new DataView(out.buffer, out.byteOffset).setUint32(oo + 4, qh >>> 0, true);
            nibbles(codesBuf, out, oo + 8);
          }
        },
      };
    }
    case 'Q8_0':
      return {
        name: T, ggmlType: T, groupSize: 32, paramCount: 1, blockBytes: 34,
        fit(x, off, p, o) {
          let a = 0;
          for (let j = 0; j < 32; j++) a = Math.max(a, Math.abs(x[off + j]));
          p[o] = r16(a / 127);
        },
        quant(x, p, o) {
          const d = p[o];
          return d === 0 ? 0 : Math.fround((Math.min(127, Math.max(-128, Math.round(x / d))) + 0) * d);
        },
        pack(q, off, p, o, out, oo) {
          const d = p[o];
          write16(out, oo, d);
          for (let j = 0; j < 32; j++) out[oo + 2 + j] = (d === 0 ? 0 : Math.round(q[off + j] / d)) & 255;
        },
      };
    case 'IQ4_NL': {
      const nearest = (v: number) => {
        let best = 0;
        for (let i = 1; i < 16; i++) if (Math.abs(IQ4_LEVELS[i] - v) < Math.abs(IQ4_LEVELS[best] - v)) best = i;
        return best;
      };
      return {
        name: T, ggmlType: T, groupSize: 32, paramCount: 1, blockBytes: 18,
        fit(x, off, p, o) {
          const max = signedMax(x, off, 32);
          if (max === 0) return void (p[o] = 0);
          // scan a few scales around max / -127 and keep the best squared error (as llama.cpp's search does)
          let bestD = 0;
          let bestErr = Infinity;
          for (let t = -7; t <= 7; t++) {
            const d = r16(max / (IQ4_LEVELS[0] + t));
            if (d === 0) continue;
            let e = 0;
            for (let j = 0; j < 32; j++) {
              const v = x[off + j];
              const dq = d * IQ4_LEVELS[nearest(v / d)];
              e += (v - dq) * (v - dq);
            }
            if (e < bestErr) {
              bestErr = e;
              bestD = d;
            }
          }
          p[o] = bestD;
        },
        quant(x, p, o) {
          const d = p[o];
          return d === 0 ? 0 : Math.fround(d * IQ4_LEVELS[nearest(x / d)]);
        },
        pack(q, off, p, o, out, oo) {
          const d = p[o];
          write16(out, oo, d);
          for (let j = 0; j < 32; j++) codesBuf[j] = d === 0 ? 8 : nearest(q[off + j] / d);
          nibbles(codesBuf, out, oo + 2);
        },
      };
    }
  }
  fail(`GPTQ/AWQ grids exist for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and intN; not for ${type}`);
}

/** Pack a whole n x k result into GGML rows. */
export function packRows(grid: PackableGrid, q: Float32Array, params: Float64Array, n: number, k: number): Uint8Array {
  const nb = k / grid.groupSize;
  const out = new Uint8Array(n * nb * grid.blockBytes);
  for (let r = 0; r < n; r++)
    for (let b = 0; b < nb; b++) grid.pack(q, r * k + b * grid.groupSize, params, (r * nb + b) * grid.paramCount, out, (r * nb + b) * grid.blockBytes);
  return out;
}
