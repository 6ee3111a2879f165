/**
 * Closed-form grids for GPTQ: a group of values shares a few parameters (scale, zero-point) and a value
 * rounds in closed form (integer grids, HQQ's float zero-point). The ONNX MatMulNBits writer
 * (io/onnx/nbits.ts) quantizes with them; the pipeline's GGUF/safetensors paths use block codecs
 * (block-codec.ts, gptqBlocks) instead, which store exactly what a file holds.
 */
import { fail } from '../errors.js';
import { gptqQuantize, type GptqOptions, type GroupQuantizer } from './gptq.js';
import { hqqFit, type HqqOptions } from './hqq.js';

/**
 * A closed-form grid: a group of `groupSize` consecutive values of one row shares `paramCount`
 * parameters (scale, zero, ...) chosen by `fit`; `quant` maps one value to the nearest value
 * representable with those parameters.
 */
export interface GptqGrid {
  readonly name: string;
  readonly groupSize: number;
  readonly paramCount: number;
  fit(x: Float32Array, off: number, params: Float64Array, pOff: number): void;
  quant(x: number, params: Float64Array, pOff: number): number;
}

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
/** A closed-form grid as a GroupQuantizer (parameters of every group kept in `params`). */
export class ParamQuantizer implements GroupQuantizer {
  readonly name: string;
  readonly groupSize: number;
  readonly params: Float64Array;
  private readonly nGroups: number;
  constructor(readonly grid: GptqGrid, n: number, k: number) {
    this.name = grid.name;
    this.groupSize = grid.groupSize;
    this.nGroups = k / grid.groupSize;
    this.params = new Float64Array(n * this.nGroups * grid.paramCount);
  }
  fit(r: number, grp: number, x: Float32Array, xo: number): void {
    this.grid.fit(x, xo, this.params, (r * this.nGroups + grp) * this.grid.paramCount);
  }
  quant(r: number, grp: number, _j: number, x: number): number {
    return this.grid.quant(x, this.params, (r * this.nGroups + grp) * this.grid.paramCount);
  }
}

/** GPTQ with a closed-form grid (kept for the grid-level tests and experiments). */
export function gptq(w: Float32Array, n: number, k: number, hessian: Float64Array, grid: GptqGrid, opts: GptqOptions = {}): { q: Float32Array; params: Float64Array } {
  const qz = new ParamQuantizer(grid, n, k);
  const { q } = gptqQuantize(w, n, k, hessian, qz, opts);
  return { q, params: qz.params };
}

/** Round-to-nearest with the same grid (the baseline GPTQ is measured against). */
export function rtnWithGrid(w: Float32Array, n: number, k: number, grid: GptqGrid): { q: Float32Array; params: Float64Array } {
  const g = grid.groupSize;
  if (k % g !== 0) fail(`row length ${k} is not a multiple of the group size ${g} of ${grid.name}`);
  const nGroups = k / g;
  const params = new Float64Array(n * nGroups * grid.paramCount);
  const q = new Float32Array(n * k);
  for (let r = 0; r < n; r++)
    for (let grp = 0; grp < nGroups; grp++) {
      const pOff = (r * nGroups + grp) * grid.paramCount;
      grid.fit(w, r * k + grp * g, params, pOff);
      for (let j = 0; j < g; j++) q[r * k + grp * g + j] = grid.quant(w[r * k + grp * g + j], params, pOff);
    }
  return { q, params };
}

/** HQQ as a grid: asymmetric uint `bits` with a float zero-point, groups of `groupSize`. */
export function hqqGrid(bits: number, groupSize: number, opts: HqqOptions = {}): GptqGrid {
  if (!(bits >= 1 && bits <= 8)) fail(`HQQ bits must be 1..8, got ${bits}`);
  const qmax = 2 ** bits - 1;
  return {
    name: `hqq_int${bits}_g${groupSize}`,
    groupSize,
    paramCount: 2,
    fit: (x, off, out, o) => hqqFit(x, off, groupSize, bits, out, o, opts),
    quant(x, prm, o) {
      const step = prm[o];
      const z = prm[o + 1];
      const q = Math.min(qmax, Math.max(0, Math.round(x / step + z)));
      return Math.fround((q - z) * step);
    },
  };
}
