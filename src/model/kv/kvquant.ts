/**
 * KVQuant (Hooper et al. 2024) as a cache side, `kvquant3` / `kvquant4`:
 *
 *   keys      quantized per channel BEFORE RoPE (RoPE is applied to the dequantized keys): channel c is
 *             normalized with a calibrated centre m_c and range s_c (the 99.9th percentile of |k_c - m_c|
 *             on the calibration text), u_c = (k_c - m_c) / s_c;
 *   values    per token: the row's own centre and half-range (f16 each) after its outliers are removed;
 *   datatype  a per-layer non-uniform grid of 2^b levels fitted by 1-D k-means (Lloyd, started from the
 *             quantiles) to the normalized calibration values, each weighted by its Fisher information
 *             (the squared loss gradient of the entry, from the training model's backward pass on the
 *             calibration text, times the square of its normalization range); without gradients by
 *             the squared value (magnitude), or unweighted (samples.weighting);
 *   sparse    the ceil(1 %) entries of largest |u| per vector kept exactly (f16 value + u8 channel index);
 *   sink      the first position kept in f32.
 *
 * Row layout (kvDim values, b bits): [values: f16 centre, f16 half-range] codes (kvDim * b bits, packed
 * little-endian), then nOutliers x (u8 index, f16 value). Bits per element: b + 24 * nOutliers / kvDim
 * (+ 32 / kvDim for values): kvquant3 on a 128-wide row: keys 3.19, values 3.44.
 */
import { fail } from '../../errors.js';
import { f16Table, f32ToF16 } from '../../formats/half.js';
import type { KvSide } from './sides.js';
import type { KvCacheType } from './types.js';

/** Pre-RoPE keys and values seen on a calibration text, per layer: rows of kvDim. */
export interface KvSamples {
  readonly kvDim: number;
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** the loss gradient of each entry of keys / values (same layout): KVQuant's Fisher weights are their squares */
  readonly keyGrads?: Float32Array[];
  readonly valueGrads?: Float32Array[];
  /**
   * how the k-means weighs a calibration entry: 'fisher' (the default when gradients are given: its
   * squared gradient times the square of its normalization range, i.e. the Fisher information of the
   * entry's error in the model's units), 'magnitude' (its normalized value squared, the default without
   * gradients), 'none' (plain k-means)
   */
  readonly weighting?: KvQuantWeighting;
}

export type KvQuantWeighting = 'fisher' | 'magnitude' | 'none';

/** One layer's fitted grid and (keys) channel normalization. */
interface LayerFit {
  levels: Float32Array; // (2^b) ascending
  centre?: Float32Array; // (kvDim) keys only
  range?: Float32Array; // (kvDim)
}

/** ceil(1 %) of a row: the sparse entries kept exactly */
export function kvquantOutliers(kvDim: number): number {
  return Math.ceil(kvDim / 100);
}

/**
 * 1-D weighted k-means of x into k levels (ascending), started from the quantiles: weight(v) of the
 * value, or an array of per-entry weights (aligned with x).
 */
export function fitLevels(x: Float32Array, k: number, weight: ((v: number) => number) | Float32Array, iters = 25): Float32Array {
  if (x.length === 0) fail('KVQuant: no calibration values to fit a datatype to');
  let sorted: Float32Array;
  let ws: Float32Array;
  if (typeof weight === 'function') {
    sorted = Float32Array.from(x).sort();
    ws = sorted.map(weight);
  } else {
    if (weight.length !== x.length) fail(`KVQuant: ${weight.length} weights for ${x.length} values`);
    const order = Array.from({ length: x.length }, (_, i) => i).sort((a, b) => x[a] - x[b]);
    sorted = Float32Array.from(order, (i) => x[i]);
    ws = Float32Array.from(order, (i) => weight[i]);
  }
  const levels = new Float64Array(k);
  for (let j = 0; j < k; j++) levels[j] = sorted[Math.min(sorted.length - 1, Math.floor(((j + 0.5) / k) * sorted.length))];
  const sum = new Float64Array(k);
  const wsum = new Float64Array(k);
  for (let it = 0; it < iters; it++) {
    sum.fill(0);
    wsum.fill(0);
    let j = 0;
    for (let i = 0; i < sorted.length; i++) {
      const v = sorted[i];
      while (j + 1 < k && Math.abs(levels[j + 1] - v) <= Math.abs(levels[j] - v)) j++;
      const w = ws[i] + 1e-12;
      sum[j] += w * v;
      wsum[j] += w;
    }
    for (let c = 0; c < k; c++) if (wsum[c] > 0) levels[c] = sum[c] / wsum[c];
    levels.sort();
  }
  return Float32Array.from(levels);
}

function nearestLevel(levels: Float32Array, u: number): number {
  let lo = 0;
  let hi = levels.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (levels[mid] <= u) lo = mid;
    else hi = mid;
  }
  return Math.abs(levels[hi] - u) < Math.abs(levels[lo] - u) ? hi : lo;
}

/** indices of the n largest |u[i]| (ties: lower index first) into idx */
function largest(u: Float64Array, n: number, idx: Int32Array): void {
  for (let j = 0; j < n; j++) idx[j] = -1;
  for (let i = 0; i < u.length; i++) {
    const a = Math.abs(u[i]);
    for (let j = 0; j < n; j++) {
      if (idx[j] < 0 || a > Math.abs(u[idx[j]])) {
        for (let m = n - 1; m > j; m--) idx[m] = idx[m - 1];
        idx[j] = i;
        break;
      }
    }
  }
}

export class KvQuantSide implements KvSide {
  readonly rowBytes: number;
  readonly residual = 0;
  readonly partial = 0;
  private readonly bits: number;
  private readonly nOut: number;
  private readonly header: number;
  private readonly codeBytes: number;
  private readonly fits: LayerFit[];
  private readonly packed: Uint8Array[];
  private readonly sink: Float32Array[];
  private readonly u: Float64Array;
  private readonly idx: Int32Array;
  /** how the k-means weighed the calibration entries */
  readonly weighting: KvQuantWeighting;
  constructor(readonly type: KvCacheType, private readonly isKeys: boolean, samples: KvSamples | undefined, nLayers: number, capacity: number, private readonly kvDim: number) {
    if (!samples) fail(`${isKeys ? '--cache-type-k' : '--cache-type-v'} ${type.name}: KVQuant fits its datatypes to calibration activations; give --calib FILE (a text)`);
    if (samples.kvDim !== kvDim || samples.keys.length !== nLayers) fail(`KVQuant calibration of ${samples.keys.length} layers x ${samples.kvDim} does not fit the model (${nLayers} x ${kvDim})`);
    if (kvDim > 256) fail(`KVQuant: rows of ${kvDim} values are wider than the u8 outlier index`);
    this.bits = type.bits!;
    this.nOut = kvquantOutliers(kvDim);
    this.header = isKeys ? 0 : 4;
    this.codeBytes = Math.ceil((kvDim * this.bits) / 8);
    this.rowBytes = this.header + this.codeBytes + 3 * this.nOut;
    this.u = new Float64Array(kvDim);
    this.idx = new Int32Array(this.nOut);
    const grads = isKeys ? samples.keyGrads : samples.valueGrads;
    this.weighting = samples.weighting ?? (grads ? 'fisher' : 'magnitude');
    if (this.weighting === 'fisher' && (!grads || grads.length !== nLayers)) fail('KVQuant: Fisher weights need the loss gradients of the calibration keys and values');
    this.fits = (isKeys ? samples.keys : samples.values).map((rows, l) => this.fit(rows, grads?.[l]));
    this.packed = Array.from({ length: nLayers }, () => new Uint8Array(capacity * this.rowBytes));
    this.sink = Array.from({ length: nLayers }, () => new Float32Array(kvDim));
  }

  /** normalize one row into this.u (values: also returns centre and half-range); outliers in this.idx */
  private normalize(fit: LayerFit | null, x: Float32Array, xo: number): { centre: number; range: number } {
    const kd = this.kvDim;
    if (this.isKeys) {
      for (let c = 0; c < kd; c++) this.u[c] = (x[xo + c] - fit!.centre![c]) / fit!.range![c];
      largest(this.u, this.nOut, this.idx);
      return { centre: 0, range: 1 };
    }
    for (let c = 0; c < kd; c++) this.u[c] = x[xo + c];
    // value outliers: the largest deviations from the row's median-free centre (its mean)
    let mean = 0;
    for (let c = 0; c < kd; c++) mean += this.u[c];
    mean /= kd;
    for (let c = 0; c < kd; c++) this.u[c] -= mean;
    largest(this.u, this.nOut, this.idx);
    let lo = Infinity;
    let hi = -Infinity;
    for (let c = 0; c < kd; c++) {
      if (this.idx.includes(c)) continue;
      const v = x[xo + c];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const centre = f16Table[f32ToF16((hi + lo) / 2)];
    const range = f16Table[f32ToF16(Math.max((hi - lo) / 2, 1e-6))];
    for (let c = 0; c < kd; c++) this.u[c] = (x[xo + c] - centre) / range;
    return { centre, range };
  }

  private fit(rows: Float32Array, grads: Float32Array | undefined): LayerFit {
    const kd = this.kvDim;
    const n = rows.length / kd;
    const fit: LayerFit = { levels: new Float32Array(0) };
    if (this.isKeys) {
      fit.centre = new Float32Array(kd);
      fit.range = new Float32Array(kd);
      const col = new Float32Array(n);
      for (let c = 0; c < kd; c++) {
        let mean = 0;
        for (let t = 0; t < n; t++) mean += rows[t * kd + c];
        mean /= n;
        for (let t = 0; t < n; t++) col[t] = Math.abs(rows[t * kd + c] - mean);
        col.sort();
        fit.centre[c] = mean;
        fit.range[c] = Math.max(col[Math.min(n - 1, Math.floor(0.999 * n))], 1e-6);
      }
    }
    // the normalized calibration values without each row's outliers
    const vals: number[] = [];
    const weights: number[] = [];
    const fisher = this.weighting === 'fisher';
    const stride = Math.max(1, Math.floor(n / 4096)); // at most ~4096 rows
    for (let t = 1; t < n; t += stride) {
      const { range } = this.normalize(fit, rows, t * kd);
      for (let c = 0; c < kd; c++) {
        if (this.idx.includes(c)) continue;
        vals.push(this.u[c]);
        // an error e in u is e * s in the model's units (s: the channel's range for keys, the row's half-range for values)
        if (fisher) weights.push((grads![t * kd + c] * (this.isKeys ? fit.range![c] : range)) ** 2);
      }
    }
    const x = Float32Array.from(vals);
    const k = 1 << this.bits;
    fit.levels = fisher ? fitLevels(x, k, Float32Array.from(weights)) : fitLevels(x, k, this.weighting === 'none' ? () => 1 : (v) => v * v);
    return fit;
  }

  write(layer: number, pos: number, n: number, rows: Float32Array): void {
    const kd = this.kvDim;
    const fit = this.fits[layer];
    const out = this.packed[layer];
    for (let t = 0; t < n; t++) {
      const p = pos + t;
      if (p === 0) {
        this.sink[layer].set(rows.subarray(t * kd, (t + 1) * kd));
        continue;
      }
      const o = p * this.rowBytes;
      out.fill(0, o, o + this.rowBytes);
      const { centre, range } = this.normalize(fit, rows, t * kd);
      if (!this.isKeys) {
        const ch = f32ToF16(centre);
        const rh = f32ToF16(range);
        out[o] = ch & 0xff;
        out[o + 1] = ch >>> 8;
        out[o + 2] = rh & 0xff;
        out[o + 3] = rh >>> 8;
      }
      const codes = o + this.header;
      for (let c = 0; c < kd; c++) {
        const q = nearestLevel(fit.levels, this.u[c]);
        const bit = c * this.bits;
        // a code may straddle two bytes (3 bits)
        out[codes + (bit >> 3)] |= (q << (bit & 7)) & 0xff;
        if ((bit & 7) + this.bits > 8) out[codes + (bit >> 3) + 1] |= q >> (8 - (bit & 7));
      }
      const so = codes + this.codeBytes;
      for (let j = 0; j < this.nOut; j++) {
        const c = this.idx[j];
        const h = f32ToF16(rows[t * kd + c]);
        out[so + 3 * j] = c;
        out[so + 3 * j + 1] = h & 0xff;
        out[so + 3 * j + 2] = h >>> 8;
      }
    }
  }

  readQuantized(layer: number, from: number, to: number, out: Float32Array): void {
    const kd = this.kvDim;
    const fit = this.fits[layer];
    const pk = this.packed[layer];
    const mask = (1 << this.bits) - 1;
    for (let p = from; p < to; p++) {
      const dst = p * kd;
      if (p === 0) {
        out.set(this.sink[layer], dst);
        continue;
      }
      const o = p * this.rowBytes;
      const centre = this.isKeys ? 0 : f16Table[pk[o] | (pk[o + 1] << 8)];
      const range = this.isKeys ? 1 : f16Table[pk[o + 2] | (pk[o + 3] << 8)];
      const codes = o + this.header;
      for (let c = 0; c < kd; c++) {
        const bit = c * this.bits;
        const q = ((pk[codes + (bit >> 3)] | (pk[codes + (bit >> 3) + 1] << 8)) >> (bit & 7)) & mask;
        const u = fit.levels[q];
        out[dst + c] = this.isKeys ? Math.fround(fit.centre![c] + u * fit.range![c]) : Math.fround(centre + u * range);
      }
      const so = codes + this.codeBytes;
      for (let j = 0; j < this.nOut; j++) out[dst + pk[so + 3 * j]] = f16Table[pk[so + 3 * j + 1] | (pk[so + 3 * j + 2] << 8)];
    }
  }

  readFull(): void {
    fail('a KVQuant cache side keeps no f32 positions but the first');
  }
}
