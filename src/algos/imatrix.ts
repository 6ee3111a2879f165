/**
 * Importance matrices, as llama-imatrix defines them: for every linear layer (weight W, n_in columns)
 * the sum over calibration tokens of x_j^2 for each input column j, and the number of tokens summed.
 * The quantizers weight column j by sums_j / count (the mean squared activation).
 *
 * Files: llama-imatrix's legacy `.dat` format and its GGUF form (tensors `<name>.in_sum2` [n_in, n_mat]
 * and `<name>.counts` [1, n_mat], keys imatrix.datasets / imatrix.chunk_count / imatrix.chunk_size).
 *
 * Legacy .dat layout (little-endian):
 *   i32 n_entries; n_entries x { i32 len; name[len]; i32 ncall; i32 nval; f32 values[nval] }
 *   i32 last_chunk; i32 len; dataset[len]
 * where values = (sum / count) * ncall, so values / ncall is the mean. An imatrix read from a .dat has
 * chunkSize 0 (as llama.cpp reads it), sums = those values and counts = [ncall].
 */
import { fail } from '../errors.js';

export interface ImatrixEntry {
  /** weight tensor name, e.g. blk.0.attn_q.weight */
  name: string;
  /** per input column sums of x^2 (n_in * n_mat; one matrix unless experts) */
  sums: Float64Array;
  /** tokens summed, per matrix */
  counts: Float64Array;
}

export interface Imatrix {
  entries: Map<string, ImatrixEntry>;
  datasets: string[];
  chunkCount: number;
  chunkSize: number;
}

export function emptyImatrix(chunkSize: number, datasets: string[] = []): Imatrix {
  return { entries: new Map(), datasets, chunkCount: 0, chunkSize };
}

/** Add the activations x (nTok rows of nIn) that enter weight `name`. */
export function accumulateImatrix(m: Imatrix, name: string, x: Float32Array, nTok: number, nIn: number, expert?: { index: number; count: number }): void {
  // experts (a 3-D ffn_*_exps tensor): one block of nIn sums and one count per expert, as llama-imatrix
  // keeps them for MUL_MAT_ID (each routed row counts for its expert only)
  const nMat = expert?.count ?? 1;
  const at = expert?.index ?? 0;
  let e = m.entries.get(name);
  if (!e) {
    e = { name, sums: new Float64Array(nIn * nMat), counts: new Float64Array(nMat) };
    m.entries.set(name, e);
  }
  if (e.sums.length !== nIn * nMat || e.counts.length !== nMat) fail(`imatrix entry ${name} has ${e.sums.length} values for ${e.counts.length} matrices, activations have ${nIn} columns for ${nMat}`);
  if (!(at >= 0 && at < nMat)) fail(`imatrix entry ${name}: expert ${at} is outside 0..${nMat - 1}`);
  const s = e.sums.subarray(at * nIn, (at + 1) * nIn);
  for (let t = 0; t < nTok; t++) {
    const o = t * nIn;
    for (let j = 0; j < nIn; j++) s[j] += x[o + j] * x[o + j];
  }
  e.counts[at] += nTok;
}

/** The importance vector the quantizer sees: mean x^2 per column (float32). */
export function importanceOf(e: ImatrixEntry): Float32Array {
  const nMat = e.counts.length;
  const nIn = e.sums.length / nMat;
  const out = new Float32Array(e.sums.length);
  for (let k = 0; k < nMat; k++) {
    const c = Math.fround(e.counts[k]);
    for (let j = 0; j < nIn; j++) out[k * nIn + j] = c > 0 ? Math.fround(e.sums[k * nIn + j]) / c : 1;
  }
  return out;
}

export function writeImatrixDat(m: Imatrix): Uint8Array {
  const names = [...m.entries.keys()].sort();
  const enc = new TextEncoder();
  const dataset = enc.encode(m.datasets[m.datasets.length - 1] ?? '');
  let size = 4 + 8 + dataset.length;
  const encoded = names.map((n) => enc.encode(n));
  names.forEach((n, i) => (size += 12 + encoded[i].length + 4 * m.entries.get(n)!.sums.length));
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let p = 0;
  dv.setInt32(p, names.length, true);
  p += 4;
  names.forEach((n, i) => {
    const e = m.entries.get(n)!;
    dv.setInt32(p, encoded[i].length, true);
    out.set(encoded[i], p + 4);
    p += 4 + encoded[i].length;
    const nMat = e.counts.length;
    const nIn = e.sums.length / nMat;
    const maxCount = e.counts.reduce((a, b) => Math.max(a, b), 0);
    // ceiling division as llama-imatrix does; an imatrix read from a .dat (chunkSize 0) counts in calls already
    const ncall = m.chunkSize > 0 ? Math.trunc((maxCount + (m.chunkSize - 1)) / m.chunkSize) : Math.round(maxCount);
    dv.setInt32(p, ncall, true);
    dv.setInt32(p + 4, e.sums.length, true);
    p += 8;
    for (let j = 0; j < e.sums.length; j++) {
      let count = Math.fround(e.counts[Math.trunc(j / nIn)]);
      let value = Math.fround(e.sums[j]);
      if (count === 0) {
        value = 1;
        count = 1;
      }
      // an imatrix read from a .dat already holds (sum / count) * ncall with count = ncall: keep it as is
      dv.setFloat32(p, m.chunkSize > 0 ? Math.fround(Math.fround(value / count) * ncall) : value, true);
      p += 4;
    }
  });
  dv.setInt32(p, m.chunkCount, true);
  dv.setInt32(p + 4, dataset.length, true);
  out.set(dataset, p + 8);
  return out;
}

export function readImatrixDat(bytes: Uint8Array, name = 'imatrix'): Imatrix {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const need = (n: number, what: string) => {
    if (p + n > bytes.length) fail(`${name}: truncated legacy imatrix (${what} at byte ${p})`);
  };
  need(4, 'entry count');
  const n = dv.getInt32(p, true);
  p += 4;
  if (n < 1) fail(`${name}: not an imatrix (entry count ${n}; a legacy .dat starts with a positive count)`);
  if (n > bytes.length / 12) fail(`${name}: not an imatrix (implausible entry count ${n} for ${bytes.length} bytes)`);
  // llama.cpp reads a .dat with chunk_size 0: its counts are numbers of calls, not tokens
  const m = emptyImatrix(0);
  const dec = new TextDecoder('utf-8', { fatal: true });
  for (let i = 0; i < n; i++) {
    need(4, 'name length');
    const len = dv.getInt32(p, true);
    p += 4;
    if (len <= 0 || len > 4096) fail(`${name}: bad name length ${len} in entry ${i}`);
    need(len + 8, 'entry header');
    let tensor: string;
    try {
      tensor = dec.decode(bytes.subarray(p, p + len));
    } catch {
      fail(`${name}: entry ${i} name is not valid UTF-8`);
    }
    p += len;
    const ncall = dv.getInt32(p, true);
    const nval = dv.getInt32(p + 4, true);
    p += 8;
    if (nval <= 0 || nval > (bytes.length - p) / 4) fail(`${name}: entry ${tensor} has bad value count ${nval} (truncated or corrupt)`);
    if (ncall < 0) fail(`${name}: entry ${tensor} has a negative call count ${ncall}`);
    if (m.entries.has(tensor)) fail(`${name}: duplicate entry ${tensor}`);
    const sums = new Float64Array(nval);
    for (let j = 0; j < nval; j++) {
      sums[j] = dv.getFloat32(p + 4 * j, true);
      if (!(Number.isFinite(sums[j]) && sums[j] >= 0)) fail(`${name}: entry ${tensor} value ${j} is ${sums[j]} (must be finite and >= 0)`);
    }
    p += 4 * nval;
    m.entries.set(tensor, { name: tensor, sums, counts: new Float64Array([ncall]) });
  }
  // optional trailer: i32 chunk count, i32 length, dataset name
  if (p < bytes.length) {
    if (p + 8 > bytes.length) fail(`${name}: ${bytes.length - p} stray bytes after the last entry (truncated trailer)`);
    m.chunkCount = dv.getInt32(p, true);
    const len = dv.getInt32(p + 4, true);
    p += 8;
    if (len < 0 || p + len > bytes.length) fail(`${name}: dataset name of ${len} bytes runs past the end of the file (truncated)`);
    if (len > 0) m.datasets.push(new TextDecoder().decode(bytes.subarray(p, p + len)));
    p += len;
    if (p !== bytes.length) fail(`${name}: ${bytes.length - p} unexpected bytes after the dataset name`);
  }
  return m;
}

export interface ImatrixEntryDifference {
  name: string;
  /** rows summed in each (first matrix) */
  countA: number;
  countB: number;
  /** max over columns of |a - b| / max(|a|, |b|) of the mean x^2 (0 when both are 0) */
  maxRelative: number;
  /** max over columns of |a - b| / max over columns of |a| (error against the tensor's scale) */
  maxScaled: number;
}

/**
 * Compare two importance matrices entry by entry on the statistic the quantizers use (mean x^2 per
 * column). Entries present in only one of them are listed in `onlyA` / `onlyB`.
 */
export function imatrixDifference(a: Imatrix, b: Imatrix): { entries: ImatrixEntryDifference[]; onlyA: string[]; onlyB: string[] } {
  const entries: ImatrixEntryDifference[] = [];
  const onlyA = [...a.entries.keys()].filter((n) => !b.entries.has(n)).sort();
  const onlyB = [...b.entries.keys()].filter((n) => !a.entries.has(n)).sort();
  for (const name of [...a.entries.keys()].filter((n) => b.entries.has(n)).sort()) {
    const ea = a.entries.get(name)!;
    const eb = b.entries.get(name)!;
    if (ea.sums.length !== eb.sums.length || ea.counts.length !== eb.counts.length) fail(`imatrix entry ${name}: ${ea.sums.length} vs ${eb.sums.length} values`);
    const nIn = ea.sums.length / ea.counts.length;
    const mean = (e: ImatrixEntry, j: number) => {
      const c = e.counts[Math.trunc(j / nIn)];
      return c > 0 ? e.sums[j] / c : 0;
    };
    let scale = 0;
    for (let j = 0; j < ea.sums.length; j++) scale = Math.max(scale, Math.abs(mean(ea, j)));
    let maxRelative = 0;
    let maxScaled = 0;
    for (let j = 0; j < ea.sums.length; j++) {
      const x = mean(ea, j);
      const y = mean(eb, j);
      const d = Math.abs(x - y);
      const m = Math.max(Math.abs(x), Math.abs(y));
      if (m > 0) maxRelative = Math.max(maxRelative, d / m);
      if (scale > 0) maxScaled = Math.max(maxScaled, d / scale);
    }
    entries.push({ name, countA: ea.counts[0], countB: eb.counts[0], maxRelative, maxScaled });
  }
  return { entries, onlyA, onlyB };
}
