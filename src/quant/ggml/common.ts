/**
 * Shared pieces of the GGML block quantizers (llama.cpp ggml-quants.c): float32 rounding helpers,
 * fp16 field access, argument checks, and the scale-search routines the K-quants and the imatrix
 * paths of the legacy types are built on (make_qx_quants, make_q3_quants, make_qkx2_quants,
 * make_qkx3_quants, make_qp_quants).
 *
 * Float32 semantics: C evaluates every float operation in float32 (built with -ffp-contract=off, so no
 * fused multiply-add). Here every such operation is wrapped in Math.fround; double rounding through a
 * float64 intermediate is innocuous for + - * / and sqrt, so each wrapped step is bit-identical.
 * Comments below write the C expression next to the float32 sequence it becomes.
 */
import { fail } from '../../errors.js';
import { f16Table, f32ToF16 } from '../../formats/half.js';
import type { GgmlTypeInfo } from './types.js';
import { ggmlRowBytes } from './types.js';

export const fround = Math.fround;

/** QK_K: elements per K-quant super-block */
export const QK_K = 256;

/** GROUP_MAX_EPS = 1e-15f: below this a group counts as all zero */
export const GROUP_MAX_EPS = fround(1e-15);

/** 0.1f */
export const F0_1 = fround(0.1);

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * nearest_int(fval): adds 1.5 * 2^23 = 12582912 in float32 so the integer lands in the low mantissa bits
 * (round half to even), then reads them back. Inside |fval| <= 4194303 this is rint(fval); outside,
 * the C code reads garbage bits, which the slow path reproduces exactly.
 * `v` must already be a float32 value.
 */
export function nearestInt(v: number): number {
  if (v <= 4194303 && v >= -4194303) return fround(v + 12582912) - 12582912;
  scratchF32[0] = v + 12582912;
  return (scratchU32[0] & 0x007fffff) - 0x00400000;
}

/** C roundf: round half away from zero. */
export function roundAway(v: number): number {
  // for float32 |v| < 2^29, v +- 0.5 is exact in float64, so truncating it is roundf
  if (v < 536870912 && v > -536870912) return (v < 0 ? v - 0.5 : v + 0.5) | 0;
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

/** The fp16 field at byte offset o, as float32 (GGML_FP16_TO_FP32). */
export function readF16(buf: Uint8Array, o: number): number {
  return f16Table[buf[o] | (buf[o + 1] << 8)];
}

/** Stores float32 value v as fp16 at byte offset o (GGML_FP32_TO_FP16) and returns the fp16 bits. */
export function writeF16(buf: Uint8Array, o: number, v: number): number {
  const h = f32ToF16(v);
  buf[o] = h & 0xff;
  buf[o + 1] = h >>> 8;
  return h;
}

/** Reads a little-endian float32 at byte offset o. */
export function readF32(buf: Uint8Array, o: number): number {
  scratchU32[0] = buf[o] | (buf[o + 1] << 8) | (buf[o + 2] << 16) | (buf[o + 3] << 24);
  return scratchF32[0];
}

/** Writes float32 value v little-endian at byte offset o. */
export function writeF32(buf: Uint8Array, o: number, v: number): void {
  scratchF32[0] = v;
  const u = scratchU32[0];
  buf[o] = u & 0xff;
  buf[o + 1] = (u >>> 8) & 0xff;
  buf[o + 2] = (u >>> 16) & 0xff;
  buf[o + 3] = u >>> 24;
}

/**
 * Validates quantize arguments and returns the bytes per row. Block types reject non-finite input
 * (llama.cpp would write garbage scales); `allowNonFinite` is for F32/F16/BF16, which represent them.
 */
export function checkQuantizeArgs(
  type: GgmlTypeInfo,
  src: Float32Array,
  nRows: number,
  rowLength: number,
  out: Uint8Array,
  importance: Float32Array | undefined,
  allowNonFinite = false,
): number {
  if (!Number.isInteger(nRows) || nRows < 0) fail(`${type.name} quantize: row count ${nRows} is not a non-negative integer`);
  if (!Number.isInteger(rowLength) || rowLength <= 0) fail(`${type.name} quantize: row length ${rowLength} is not a positive integer`);
  const rowBytes = ggmlRowBytes(type, rowLength);
  const n = nRows * rowLength;
  if (src.length < n) fail(`${type.name} quantize: source has ${src.length} floats, ${nRows} rows of ${rowLength} need ${n}`);
  if (out.length < nRows * rowBytes) fail(`${type.name} quantize: output has ${out.length} bytes, ${nRows} rows need ${nRows * rowBytes}`);
  if (importance !== undefined) {
    if (importance.length !== rowLength) fail(`${type.name} quantize: importance has ${importance.length} values, expected one per column (${rowLength})`);
    for (let i = 0; i < rowLength; i++) {
      const w = importance[i];
      if (!(w >= 0 && w < Infinity)) fail(`${type.name} quantize: importance[${i}] = ${w} is not a finite non-negative number`);
    }
  }
  if (!allowNonFinite) {
    for (let i = 0; i < n; i++) {
      const v = src[i];
      if (v - v !== 0) fail(`${type.name} quantize: input element ${i} (row ${Math.floor(i / rowLength)}, column ${i % rowLength}) is ${v}; block formats need finite values`);
    }
  }
  return rowBytes;
}

/** Validates dequantize arguments. */
export function checkDequantizeArgs(type: GgmlTypeInfo, src: Uint8Array, n: number, out: Float32Array): void {
  if (!Number.isInteger(n) || n < 0) fail(`${type.name} dequantize: element count ${n} is not a non-negative integer`);
  if (n % type.blockSize !== 0) fail(`${type.name} dequantize: ${n} elements is not a multiple of the block size ${type.blockSize}`);
  const bytes = (n / type.blockSize) * type.typeSize;
  if (src.length < bytes) fail(`${type.name} dequantize: source has ${src.length} bytes, ${n} elements need ${bytes}`);
  if (out.length < n) fail(`${type.name} dequantize: output has room for ${out.length} floats, need ${n}`);
}

const qxX = new Float64Array(256);
const qxW = new Float64Array(256);
const qxWX = new Float64Array(256);

/**
 * make_qx_quants: symmetric quantization of x[xo..xo+n) to L in [0, 2*nmax) (stored as l + nmax), returns
 * the scale. rmseType 0: plain rounding at scale max/-nmax; otherwise a weighted least-squares scale and
 * a search over 18 nearby iscales (weights: qw if given, else x^2 / 1 / |x| / sqrt|x| for rmseType 1/2/3/4;
 * a negative rmseType returns early after the first fit).
 */
export function makeQxQuants(
  n: number, nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number,
  rmseType: number, qw: Float32Array | null, qwo: number,
): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) { amax = ax; max = x[xo + i]; }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  // |iscale * x| <= nmax + 1 below, so nearest_int is the plain float32 rint
  let iscale = fround(-nmax / max);
  if (rmseType === 0) {
    for (let i = 0; i < n; i++) {
      const l = nearestInt(fround(iscale * x[xo + i]));
      L[lo + i] = nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l);
    }
    return fround(1 / iscale);
  }
  let returnEarly = false;
  if (rmseType < 0) { rmseType = -rmseType; returnEarly = true; }
  const xs = qxX;
  const ws = qxW;
  const wx = qxWX;
  for (let i = 0; i < n; i++) {
    const xi = x[xo + i];
    const w = qw ? qw[qwo + i] : rmseType === 1 ? fround(xi * xi) : rmseType === 2 ? 1 : rmseType === 3 ? Math.abs(xi) : fround(Math.sqrt(Math.abs(xi)));
    xs[i] = xi;
    ws[i] = w;
    wx[i] = fround(w * xi);
  }
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    let l = fround(fround(iscale * xs[i]) + 12582912) - 12582912;
    l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
    L[lo + i] = l + nmax;
    sumlx = fround(sumlx + fround(wx[i] * l)); // sumlx += w*x[i]*l
    suml2 = fround(suml2 + fround(fround(ws[i] * l) * l)); // suml2 += w*l*l
  }
  let scale = suml2 ? fround(sumlx / suml2) : 0;
  if (returnEarly) return suml2 > 0 ? fround(0.5 * fround(scale + fround(1 / iscale))) : fround(1 / iscale);
  let best = fround(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fround(-fround(nmax + fround(F0_1 * is)) / max); // -(nmax + 0.1f*is) / max
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      let l = fround(fround(iscale * xs[i]) + 12582912) - 12582912;
      l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
      sumlx = fround(sumlx + fround(wx[i] * l));
      suml2 = fround(suml2 + fround(fround(ws[i] * l) * l));
    }
    if (suml2 > 0 && fround(sumlx * sumlx) > fround(best * suml2)) {
      for (let i = 0; i < n; i++) {
        const l = fround(fround(iscale * xs[i]) + 12582912) - 12582912;
        L[lo + i] = nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l);
      }
      scale = fround(sumlx / suml2);
      best = fround(scale * sumlx);
    }
  }
  return scale;
}

/**
 * make_q3_quants: symmetric quantization to [-nmax, nmax) stored as l + nmax; with doRmse, up to 5 passes
 * of coordinate descent on the x^2-weighted error, each element moved to its best level in turn.
 */
export function makeQ3Quants(n: number, nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number, doRmse: boolean): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) { amax = ax; max = x[xo + i]; }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  const iscale = fround(-nmax / max);
  if (doRmse) {
    let sumlx = 0;
    let suml2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i];
      let l = nearestInt(fround(iscale * xi));
      l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
      L[lo + i] = l;
      const w = fround(xi * xi);
      sumlx = fround(sumlx + fround(fround(w * xi) * l));
      suml2 = fround(suml2 + fround(fround(w * l) * l));
    }
    for (let itry = 0; itry < 5; itry++) {
      let nChanged = 0;
      for (let i = 0; i < n; i++) {
        const xi = x[xo + i];
        const w = fround(xi * xi);
        const li = L[lo + i];
        let slx = fround(sumlx - fround(fround(w * xi) * li));
        if (slx > 0) {
          let sl2 = fround(suml2 - fround(fround(w * li) * li));
          let newL = nearestInt(fround(fround(xi * sl2) / slx));
          newL = newL < -nmax ? -nmax : newL > nmax - 1 ? nmax - 1 : newL;
          if (newL !== li) {
            slx = fround(slx + fround(fround(w * xi) * newL));
            sl2 = fround(sl2 + fround(fround(w * newL) * newL));
            // slx*slx*suml2 > sumlx*sumlx*sl2
            if (sl2 > 0 && fround(fround(slx * slx) * suml2) > fround(fround(sumlx * sumlx) * sl2)) {
              L[lo + i] = newL;
              sumlx = slx;
              suml2 = sl2;
              nChanged++;
            }
          }
        }
      }
      if (!nChanged) break;
    }
    for (let i = 0; i < n; i++) L[lo + i] += nmax;
    return suml2 > 0 ? fround(sumlx / suml2) : 0;
  }
  for (let i = 0; i < n; i++) {
    let l = nearestInt(fround(iscale * x[xo + i]));
    l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
    L[lo + i] = l + nmax;
  }
  return fround(1 / iscale);
}

const qkxX = new Float64Array(256);
const qkxW = new Float64Array(256);
const qkxXm = new Float64Array(256);
const qkxLaux = new Float64Array(256);

/**
 * make_qkx2_quants / make_qkx3_quants (identical for non-null weights): asymmetric quantization
 * x ~ scale * L + min with L in [0, nmax], min <= 0. Starts from the min/max grid, then tries nstep+1
 * iscales (rmin + rdelta*is + nmax)/(max - min), refitting scale and min by weighted least squares and
 * keeping the lowest weighted error (|diff| when useMad, else diff^2). Writes -min to mins[mi].
 * (qkx2 tests max == min, qkx3 max <= min: the same for finite x, since max >= min after min <= 0.)
 */
export function makeQkxQuants(
  n: number, nmax: number, x: Float32Array, xo: number, weights: Float32Array, wo: number,
  L: Uint8Array, lo: number, mins: Float32Array, mi: number,
  rmin: number, rdelta: number, nstep: number, useMad: boolean,
): number {
  // local float64 copies: x, w, and x - min (recomputed whenever min changes); Laux as float64 too
  const Laux = qkxLaux;
  const xs = qkxX;
  const ws = qkxW;
  const xm = qkxXm;
  let min = x[xo];
  let max = x[xo];
  let sumW = weights[wo];
  let sumX = fround(sumW * x[xo]);
  xs[0] = min;
  ws[0] = sumW;
  for (let i = 1; i < n; i++) {
    const xi = x[xo + i];
    xs[i] = xi;
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[wo + i];
    ws[i] = w;
    sumW = fround(sumW + w);
    sumX = fround(sumX + fround(w * xi));
  }
  if (min > 0) min = 0;
  if (max <= min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    mins[mi] = -min;
    return 0;
  }
  for (let i = 0; i < n; i++) xm[i] = fround(xs[i] - min);
  let iscale = fround(nmax / fround(max - min));
  let scale = fround(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    // nearest_int(iscale*(x[i] - min)); |argument| <= ~nmax here, so the fast rint is exact
    let l = fround(fround(iscale * xm[i]) + 12582912) - 12582912;
    l = l < 0 ? 0 : l > nmax ? nmax : l;
    L[lo + i] = l;
    let diff = fround(fround(fround(scale * l) + min) - xs[i]); // scale*L[i] + min - x[i]
    diff = useMad ? Math.abs(diff) : fround(diff * diff);
    bestError = fround(bestError + fround(ws[i] * diff));
  }
  if (nstep < 1) {
    mins[mi] = -min;
    return scale;
  }
  // A step whose levels equal the previous step's (with min unchanged) reproduces its sums, D, scale,
  // min and error exactly, and an equal error never wins: such steps are skipped.
  let prevValid = false;
  for (let is = 0; is <= nstep; is++) {
    // min is updated whenever a step wins, so later steps use the new (max - min) and offset
    iscale = fround(fround(fround(rmin + fround(rdelta * is)) + nmax) / fround(max - min));
    let same = prevValid;
    for (let i = 0; i < n; i++) {
      let l = fround(fround(iscale * xm[i]) + 12582912) - 12582912;
      l = l < 0 ? 0 : l > nmax ? nmax : l;
      if (Laux[i] !== l) { same = false; Laux[i] = l; }
    }
    if (same) continue;
    prevValid = true;
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Laux[i];
      const wl = fround(ws[i] * l);
      sumL = fround(sumL + wl);
      sumL2 = fround(sumL2 + fround(wl * l));
      sumXL = fround(sumXL + fround(wl * xs[i]));
    }
    const D = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (D > 0) {
      let thisScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / D);
      let thisMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fround(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = fround(fround(fround(thisScale * Laux[i]) + thisMin) - xs[i]);
        diff = useMad ? Math.abs(diff) : fround(diff * diff);
        curError = fround(curError + fround(ws[i] * diff));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i];
        bestError = curError;
        scale = thisScale;
        if (min !== thisMin) {
          min = thisMin;
          for (let i = 0; i < n; i++) xm[i] = fround(xs[i] - min);
          prevValid = false;
        }
      }
    }
  }
  mins[mi] = -min;
  return scale;
}

/**
 * make_qp_quants: quantizes non-negative values (sub-block scales or mins) to L in [0, nmax] with
 * weights qw: best of 9 iscales by weighted MSE, then up to 5 coordinate-descent passes.
 * L is uint8 as in C (a negative level would wrap, exactly as there).
 */
export function makeQpQuants(n: number, nmax: number, x: Float32Array, L: Uint8Array, qw: Float32Array): number {
  let max = 0;
  for (let i = 0; i < n; i++) max = max > x[i] ? max : x[i];
  if (max < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[i] = 0;
    return 0;
  }
  let iscale = fround(nmax / max);
  for (let i = 0; i < n; i++) L[i] = nearestInt(fround(iscale * x[i]));
  const scale = fround(1 / iscale);
  let bestMse = 0;
  for (let i = 0; i < n; i++) {
    const diff = fround(x[i] - fround(scale * L[i]));
    bestMse = fround(bestMse + fround(fround(qw[i] * diff) * diff));
  }
  for (let is = -4; is <= 4; is++) {
    if (is === 0) continue;
    const iscaleIs = fround(fround(fround(F0_1 * is) + nmax) / max);
    const scaleIs = fround(1 / iscaleIs);
    let mse = 0;
    for (let i = 0; i < n; i++) {
      let l = nearestInt(fround(iscaleIs * x[i]));
      if (l > nmax) l = nmax;
      const diff = fround(x[i] - fround(scaleIs * l));
      mse = fround(mse + fround(fround(qw[i] * diff) * diff));
    }
    if (mse < bestMse) {
      bestMse = mse;
      iscale = iscaleIs;
    }
  }
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    let l = nearestInt(fround(iscale * x[i]));
    if (l > nmax) l = nmax;
    L[i] = l;
    const w = qw[i];
    sumlx = fround(sumlx + fround(fround(w * x[i]) * l));
    suml2 = fround(suml2 + fround(fround(w * l) * l));
  }
  for (let itry = 0; itry < 5; itry++) {
    let nChanged = 0;
    for (let i = 0; i < n; i++) {
      const w = qw[i];
      const xi = x[i];
      const li = L[i];
      let slx = fround(sumlx - fround(fround(w * xi) * li));
      let sl2 = fround(suml2 - fround(fround(w * li) * li));
      if (slx > 0 && sl2 > 0) {
        let newL = nearestInt(fround(fround(xi * sl2) / slx));
        if (newL > nmax) newL = nmax;
        if (newL !== li) {
          slx = fround(slx + fround(fround(w * xi) * newL));
          sl2 = fround(sl2 + fround(fround(w * newL) * newL));
          if (fround(fround(slx * slx) * suml2) > fround(fround(sumlx * sumlx) * sl2)) {
            L[i] = newL;
            sumlx = slx;
            suml2 = sl2;
            nChanged++;
          }
        }
      }
    }
    if (!nChanged) break;
  }
  return suml2 > 0 ? fround(sumlx / suml2) : 0;
}
