/**
 * Randomized Hadamard rotations (QuaRot, SpinQuant): R = D H / sqrt(n), D a random ±1 diagonal, H the
 * Sylvester Hadamard matrix (n a power of two). R is orthogonal, so a model whose residual stream is
 * rotated computes the same function, while outliers are spread over all channels.
 *
 * Row-vector convention: a residual vector v becomes v R. With GGML's weights (rows = outputs):
 *   weights reading the residual (attn_q/k/v, ffn_gate/up, output, token_embd rows): W' = W R, i.e.
 *     every row w becomes w R;
 *   weights writing the residual (attn_output, ffn_down): W' = R^T W, i.e. every column u becomes R^T u.
 * Both are "multiply by the signs, then a fast Walsh-Hadamard transform, then scale by 1/sqrt(n)".
 * RMSNorm gains must be folded into the following linear layers first (a diagonal does not commute
 * with R); RMSNorm itself commutes because ||v R|| = ||v||.
 */
import { fail } from '../errors.js';
import { fmix32 } from '../formats/rounding.js';

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** In-place unnormalized fast Walsh-Hadamard transform of x[off .. off+n), n a power of two. */
export function fwht(x: Float64Array | Float32Array, off: number, n: number): void {
  for (let h = 1; h < n; h <<= 1)
    for (let i = 0; i < n; i += h << 1)
      for (let j = i; j < i + h; j++) {
        const a = x[off + j];
        const b = x[off + j + h];
        x[off + j] = a + b;
        x[off + j + h] = a - b;
      }
}

/** The random signs of D, from a seed (deterministic). */
export function randomSigns(n: number, seed: number): Float64Array {
  const d = new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = fmix32((seed * 0x9e3779b1 + i) >>> 0) & 1 ? -1 : 1;
  return d;
}

export interface Rotation {
  readonly n: number;
  readonly signs: Float64Array;
  /** a dense orthogonal R (n x n row-major) instead of D H / sqrt(n): a learned rotation (SpinQuant) */
  readonly matrix?: Float64Array;
}

export function hadamardRotation(n: number, seed: number): Rotation {
  if (!isPowerOfTwo(n)) fail(`Hadamard rotation needs a power-of-two width, got ${n}`);
  return { n, signs: randomSigns(n, seed) };
}

const scratch = { buf: new Float64Array(0) };
function buffer(n: number): Float64Array {
  if (scratch.buf.length < n) scratch.buf = new Float64Array(n);
  return scratch.buf;
}

/** v -> v R for every row of an m x n row-major matrix (in place). */
export function rotateRows(r: Rotation, w: Float32Array, m: number): void {
  const n = r.n;
  if (w.length !== m * n) fail(`rotateRows: matrix is not ${m} x ${n}`);
  const t = buffer(n);
  const s = 1 / Math.sqrt(n);
  const R = r.matrix;
  if (R) {
    for (let i = 0; i < m; i++) {
      t.fill(0, 0, n);
      for (let k = 0; k < n; k++) {
        const a = w[i * n + k];
        if (a !== 0) for (let j = 0; j < n; j++) t[j] += a * R[k * n + j];
      }
      for (let j = 0; j < n; j++) w[i * n + j] = t[j];
    }
    return;
  }
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) t[j] = w[i * n + j] * r.signs[j];
    fwht(t, 0, n);
    for (let j = 0; j < n; j++) w[i * n + j] = t[j] * s;
  }
}

/** u -> R^T u for every column of an n x m row-major matrix (in place). */
export function rotateColumns(r: Rotation, w: Float32Array, m: number): void {
  const n = r.n;
  if (w.length !== m * n) fail(`rotateColumns: matrix is not ${n} x ${m}`);
  const t = buffer(n);
  const s = 1 / Math.sqrt(n);
  const R = r.matrix;
  if (R) {
    for (let c = 0; c < m; c++) {
      // (R^T u)_i = sum_k R[k, i] u_k
      t.fill(0, 0, n);
      for (let k = 0; k < n; k++) {
        const a = w[k * m + c];
        if (a !== 0) for (let i = 0; i < n; i++) t[i] += R[k * n + i] * a;
      }
      for (let i = 0; i < n; i++) w[i * m + c] = t[i];
    }
    return;
  }
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) t[i] = w[i * m + c] * r.signs[i];
    fwht(t, 0, n);
    for (let i = 0; i < n; i++) w[i * m + c] = t[i] * s;
  }
}

/** Minimal view of a LLaMA model's weights by GGUF name: data row-major [rows][cols]. */
export interface WeightMap {
  get(name: string): { data: Float32Array; rows: number; cols: number } | undefined;
  set(name: string, t: { data: Float32Array; rows: number; cols: number }): void;
}

/**
 * How a model's layers use the residual stream, in GGUF names inside a layer (the pipeline fills it
 * from the model family, model/family.ts): the norms and the linears reading each norm's output, the
 * linears writing the residual, and the value / output projections of attention.
 */
export interface ResidualWiring {
  readonly nLayers: number;
  readonly normGroups: readonly { readonly norm: string; readonly linears: readonly string[] }[];
  readonly writers: readonly string[];
  readonly values: string;
  readonly output: string;
}

/** Fold every RMSNorm gain into the linear layers that read it; the gains become 1. */
export function foldNorms(w: WeightMap, wiring: ResidualWiring): void {
  const fold = (norm: string, targets: string[]) => {
    const g = w.get(norm);
    if (!g) fail(`foldNorms: missing ${norm}`);
    for (const name of targets) {
      const t = w.get(name);
      if (!t) fail(`foldNorms: missing ${name}`);
      if (t.cols !== g.data.length) fail(`foldNorms: ${name} has ${t.cols} columns, ${norm} has ${g.data.length}`);
      for (let r = 0; r < t.rows; r++) for (let c = 0; c < t.cols; c++) t.data[r * t.cols + c] = Math.fround(t.data[r * t.cols + c] * g.data[c]);
    }
    g.data.fill(1);
  };
  for (let l = 0; l < wiring.nLayers; l++) for (const g of wiring.normGroups) fold(`blk.${l}.${g.norm}`, g.linears.map((n) => `blk.${l}.${n}`));
  if (!w.get('output.weight')) {
    // tied embeddings: untie, since the output head gets the final norm folded in
    const e = w.get('token_embd.weight');
    if (!e) fail('foldNorms: missing token_embd.weight');
    w.set('output.weight', { data: Float32Array.from(e.data), rows: e.rows, cols: e.cols });
  }
  fold('output_norm.weight', ['output.weight']);
}

/**
 * Rotate the residual stream of a LLaMA model by R (after folding norms). The rotated model runs
 * unchanged in any runtime (llama.cpp included): nothing online is needed.
 */
export function rotateResidual(w: WeightMap, wiring: ResidualWiring, r: Rotation): void {
  const rows = (name: string) => {
    const t = w.get(name);
    if (!t) fail(`rotateResidual: missing ${name}`);
    if (t.cols !== r.n) fail(`rotateResidual: ${name} has ${t.cols} columns, the residual stream has ${r.n}`);
    rotateRows(r, t.data, t.rows);
  };
  const cols = (name: string) => {
    const t = w.get(name);
    if (!t) fail(`rotateResidual: missing ${name}`);
    if (t.rows !== r.n) fail(`rotateResidual: ${name} has ${t.rows} rows, the residual stream has ${r.n}`);
    rotateColumns(r, t.data, t.cols);
  };
  rows('token_embd.weight');
  for (let l = 0; l < wiring.nLayers; l++) {
    for (const g of wiring.normGroups) for (const n of g.linears) rows(`blk.${l}.${n}`);
    for (const n of wiring.writers) cols(`blk.${l}.${n}`);
  }
  rows('output.weight');
}

/**
 * Rotate every attention head's values by R (headDim wide), exactly: the value vector of a head becomes
 * v R, so W_v's rows of each kv head become R^T (rows), and each head's slice of W_o's input columns is
 * multiplied by R, undoing it after the attention average (which is linear in v). The same R for every
 * head keeps grouped-query heads consistent. Nothing is rotated at run time.
 */
export function rotateHeads(w: WeightMap, wiring: ResidualWiring, r: Rotation, nHeads: number, nKvHeads: number): void {
  const hd = r.n;
  for (let l = 0; l < wiring.nLayers; l++) {
    const v = w.get(`blk.${l}.${wiring.values}`);
    const o = w.get(`blk.${l}.${wiring.output}`);
    if (!v || !o) fail(`rotateHeads: layer ${l} lacks ${wiring.values} or ${wiring.output}`);
    if (v.rows !== nKvHeads * hd || o.cols !== nHeads * hd) fail(`rotateHeads: layer ${l} shapes do not match ${nHeads} heads of ${hd}`);
    for (let h = 0; h < nKvHeads; h++) rotateColumns(r, v.data.subarray(h * hd * v.cols, (h + 1) * hd * v.cols), v.cols);
    rotateRows(r, o.data, o.rows * nHeads);
  }
}
