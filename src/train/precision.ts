/**
 * Training precisions: how each linear layer's three products are computed. A product C = A Bᵀ over a
 * reduction dimension K quantizes both operands along K first (fake quantization: the values a
 * low-precision unit would see, multiplied and accumulated in f32 as tensor cores accumulate):
 *
 *   forward      y  = x · Wᵀ        K = in-features    operands x (tokens x in), W (out x in)
 *   input grad   dx = dy · W        K = out-features   operands dy (tokens x out), Wᵀ (in x out)
 *   weight grad  dW = dyᵀ · x       K = tokens         operands dyᵀ (out x tokens), xᵀ (in x tokens)
 *
 * Master weights, optimizer state and the gradient accumulation stay f32 in every mode, and so does the
 * output layer (the LM head over the vocabulary), as low-precision training recipes keep it (Jetfire,
 * Transformer Engine's FP8 recipes): only the transformer blocks' linear layers are quantized.
 *
 *   fp32        reference: exact f32 products
 *   bf16        every operand rounded to bfloat16 (RNE)
 *   int8-block  Jetfire (Xi et al. 2024): INT8 with one scale per 32 x 32 block of every operand
 *               (activations, weights, gradients), scale = block amax / 127, round to nearest even
 *   switchback  SwitchBack (Wortsman et al. 2023): forward and input-gradient products in INT8, row-wise
 *               scales for x and dy (per token), one tensor-wise scale for W; weight gradient in 16 bits (bf16)
 *   fp8         e4m3 for x and W, e5m2 for gradients, per-tensor current scaling (scale = amax / max finite)
 *   fp4         forward in MXFP4 (e2m1, one E8M0 scale per 32 along K); weights with the differentiable
 *               gradient estimator (DGE, Wang et al. 2025: dW = dW_q · f'(w), f a smooth approximation of the
 *               quantizer, k = 5, derivative clipped at 3); activations clamped at their 99.9 % |x| quantile
 *               with the clamped-off residual added back through a sparse f32 product (outlier
 *               compensation); backward products in bf16
 *   quartet     Quartet (Castro et al. 2025): MXFP4 forward and backward; each operand is rotated by a
 *               normalized 32-point Hadamard transform along K before quantizing (the rotations cancel in
 *               the product); forward rounds to nearest, backward rounds stochastically (unbiased)
 */
import { fail } from '../errors.js';
import { fakeQuant } from '../kernels/cast.js';
import { parseFormat } from '../formats/registry.js';
import type { Format } from '../formats/descriptor.js';
import type { Backend, Vec } from './gemm.js';
import { exactLinear, type LinearOp, type TrainModel } from './llama-grad.js';

export const PRECISIONS = ['fp32', 'bf16', 'int8-block', 'switchback', 'fp8', 'fp4', 'quartet'] as const;
export type Precision = (typeof PRECISIONS)[number];

const BF16 = parseFormat('bf16');
const E4M3 = parseFormat('fp8_e4m3fn');
const E5M2 = parseFormat('fp8_e5m2');
const E2M1 = parseFormat('fp4_e2m1fn');
const INT8 = parseFormat('int8');

/** how one operand (rows x K, K contiguous) is quantized; `seed` feeds stochastic rounding */
export type OperandQuant =
  | { kind: 'none' }
  | { kind: 'bf16' }
  | { kind: 'tensor'; format: 'e4m3' | 'e5m2' | 'int8' }
  | { kind: 'int8-rows' }
  | { kind: 'int8-block'; block: number }
  | { kind: 'mxfp4'; hadamard: boolean; stochastic: boolean }
  | { kind: 'nvfp4' };

/** Fake-quantize src (rows x K) into dst (may be the same array). */
export function quantizeOperand(q: OperandQuant, dst: Vec, src: Vec, rows: number, K: number, seed = 0): void {
  const n = rows * K;
  if (dst !== src) for (let i = 0; i < n; i++) dst[i] = src[i];
  const v = dst.subarray(0, n) as Float32Array;
  switch (q.kind) {
    case 'none':
      return;
    case 'bf16':
      fakeQuant(BF16, v, {}, v);
      return;
    case 'tensor': {
      const [f, max] = q.format === 'e4m3' ? [E4M3, 448] : q.format === 'e5m2' ? [E5M2, 57344] : [INT8, 127];
      const amax = absMax(v, 0, n);
      if (amax === 0 || !Number.isFinite(amax)) return;
      scaledCast(v, f, amax / max, 0, n);
      return;
    }
    case 'int8-rows': {
      const scales = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        const amax = absMax(v, r * K, (r + 1) * K);
        scales[r] = amax > 0 && Number.isFinite(amax) ? amax / 127 : 1;
        multiply(v, r * K, (r + 1) * K, 1 / scales[r]);
      }
      fakeQuant(INT8, v, {}, v);
      for (let r = 0; r < rows; r++) multiply(v, r * K, (r + 1) * K, scales[r]);
      return;
    }
    case 'int8-block':
      int8Blocks(v, rows, K, q.block);
      return;
    case 'mxfp4':
      mxfp4(v, rows, K, q.hadamard, q.stochastic, seed);
      return;
    case 'nvfp4':
      nvfp4(v, rows, K);
      return;
  }
}

function absMax(v: Vec, a: number, b: number): number {
  let m = 0;
  for (let i = a; i < b; i++) {
    const x = Math.abs(v[i]);
    if (x > m) m = x;
  }
  return m;
}

function multiply(v: Vec, a: number, b: number, s: number): void {
  for (let i = a; i < b; i++) v[i] *= s;
}

/** v[a..b) = fakeQuant(f, v / s) * s */
function scaledCast(v: Float32Array, f: Format, s: number, a: number, b: number): void {
  const part = v.subarray(a, b);
  fakeQuant(f, part, { scale: s, saturate: true }, part);
}

/** Jetfire: one scale per bs x bs block of the (rows x K) matrix */
function int8Blocks(v: Float32Array, rows: number, K: number, bs: number): void {
  const nbr = Math.ceil(rows / bs);
  const nbc = Math.ceil(K / bs);
  const scales = new Float64Array(nbr * nbc);
  for (let br = 0; br < nbr; br++) {
    for (let bc = 0; bc < nbc; bc++) {
      let m = 0;
      for (let r = br * bs; r < Math.min(rows, (br + 1) * bs); r++)
        for (let c = bc * bs; c < Math.min(K, (bc + 1) * bs); c++) {
          const x = Math.abs(v[r * K + c]);
          if (x > m) m = x;
        }
      const s = m > 0 ? m / 127 : 1;
      scales[br * nbc + bc] = s;
      for (let r = br * bs; r < Math.min(rows, (br + 1) * bs); r++) for (let c = bc * bs; c < Math.min(K, (bc + 1) * bs); c++) v[r * K + c] /= s;
    }
  }
  fakeQuant(INT8, v, {}, v);
  for (let br = 0; br < nbr; br++)
    for (let bc = 0; bc < nbc; bc++) {
      const s = scales[br * nbc + bc];
      for (let r = br * bs; r < Math.min(rows, (br + 1) * bs); r++) for (let c = bc * bs; c < Math.min(K, (bc + 1) * bs); c++) v[r * K + c] *= s;
    }
}

const HAD = 32;
const INV_SQRT_HAD = 1 / Math.sqrt(HAD);

/** normalized Walsh-Hadamard transform of v[o .. o + 32) */
function hadamard32(v: Float32Array, o: number): void {
  for (let h = 1; h < HAD; h <<= 1)
    for (let i = 0; i < HAD; i += h << 1)
      for (let j = i; j < i + h; j++) {
        const a = v[o + j];
        const b = v[o + j + h];
        v[o + j] = a + b;
        v[o + j + h] = a - b;
      }
  for (let j = 0; j < HAD; j++) v[o + j] *= INV_SQRT_HAD;
}

/**
 * MXFP4 (OCP MX v1.0): blocks of 32 along K share the scale 2^(floor(log2 amax) - 2) (E8M0; 2 = emax of
 * e2m1), elements e2m1 with saturation at ±6. A tail block shorter than 32 keeps its own scale (and no rotation).
 */
function mxfp4(v: Float32Array, rows: number, K: number, hadamard: boolean, stochastic: boolean, seed: number): void {
  const nb = Math.ceil(K / 32);
  const scales = new Float64Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const a = r * K + b * 32;
      const e = Math.min(r * K + K, a + 32);
      if (hadamard && e - a === 32) hadamard32(v, a);
      const m = absMax(v, a, e);
      const s = m > 0 && Number.isFinite(m) ? Math.pow(2, Math.floor(Math.log2(m)) - 2) : 1;
      scales[r * nb + b] = s;
      for (let i = a; i < e; i++) v[i] /= s;
    }
  }
  fakeQuant(E2M1, v, stochastic ? { rounding: 'stochastic', seed, saturate: true } : { saturate: true }, v);
  for (let r = 0; r < rows; r++)
    for (let b = 0; b < nb; b++) {
      const s = scales[r * nb + b];
      const a = r * K + b * 32;
      const e = Math.min(r * K + K, a + 32);
      for (let i = a; i < e; i++) v[i] *= s;
    }
}

/** NVFP4: blocks of 16 along K, e4m3 block scale of amax/6 relative to an f32 tensor scale amax / (448 * 6) */
function nvfp4(v: Float32Array, rows: number, K: number): void {
  const amax = absMax(v, 0, rows * K);
  if (!(amax > 0) || !Number.isFinite(amax)) return;
  const st = amax / (448 * 6);
  const nb = Math.ceil(K / 16);
  const raw = new Float32Array(rows * nb);
  for (let r = 0; r < rows; r++) for (let b = 0; b < nb; b++) raw[r * nb + b] = absMax(v, r * K + b * 16, Math.min(r * K + K, r * K + b * 16 + 16)) / 6 / st;
  const sb = fakeQuant(E4M3, raw, { saturate: true });
  for (let r = 0; r < rows; r++)
    for (let b = 0; b < nb; b++) {
      const s = sb[r * nb + b] * st;
      const a = r * K + b * 16;
      const e = Math.min(r * K + K, a + 16);
      for (let i = a; i < e; i++) v[i] = s > 0 ? v[i] / s : 0;
    }
  fakeQuant(E2M1, v.subarray(0, rows * K), { saturate: true }, v.subarray(0, rows * K));
  for (let r = 0; r < rows; r++)
    for (let b = 0; b < nb; b++) {
      const s = sb[r * nb + b] * st;
      const a = r * K + b * 16;
      const e = Math.min(r * K + K, a + 16);
      for (let i = a; i < e; i++) v[i] *= s;
    }
}

/** e2m1 magnitudes, ascending */
const E2M1_LEVELS = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

/**
 * DGE derivative of the MXFP4 weight quantizer at each weight (same block scales as the forward pass):
 * within the interval [lo, hi] between adjacent levels, u = (|w|/s - lo) / (hi - lo) and
 * f'(u) = (1/k) |2u - 1|^(1/k - 1), k = 5, clipped at 3; 0 beyond the largest level (saturated).
 */
export function dgeFactors(out: Vec, w: Vec, rows: number, K: number, k = 5, clip = 3): void {
  const nb = Math.ceil(K / 32);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const a = r * K + b * 32;
      const e = Math.min(r * K + K, a + 32);
      const m = absMax(w, a, e);
      const s = m > 0 && Number.isFinite(m) ? Math.pow(2, Math.floor(Math.log2(m)) - 2) : 1;
      for (let i = a; i < e; i++) {
        const x = Math.abs(w[i]) / s;
        if (x >= 6) {
          out[i] = 0;
          continue;
        }
        let j = 0;
        while (j < 6 && x >= E2M1_LEVELS[j + 1]) j++;
        const lo = E2M1_LEVELS[j];
        const hi = E2M1_LEVELS[j + 1];
        const u = (x - lo) / (hi - lo);
        const d = Math.abs(2 * u - 1);
        out[i] = d === 0 ? clip : Math.min(clip, Math.pow(d, 1 / k - 1) / k);
      }
    }
  }
}

/** the |x| value at quantile q, from at most 65536 evenly spaced samples (deterministic) */
export function absQuantile(v: Vec, n: number, q: number): number {
  const step = Math.max(1, Math.floor(n / 65536));
  const s: number[] = [];
  for (let i = 0; i < n; i += step) s.push(Math.abs(v[i]));
  s.sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

interface ModeSpec {
  fwd: [OperandQuant, OperandQuant]; // x, W
  dgrad: [OperandQuant, OperandQuant]; // dy, Wᵀ
  wgrad: [OperandQuant, OperandQuant]; // dyᵀ, xᵀ
  dge?: boolean;
  /** clamp forward activations at this |x| quantile, compensating the residual */
  outlierQuantile?: number;
}

const NONE: OperandQuant = { kind: 'none' };
const B16: OperandQuant = { kind: 'bf16' };

export function modeSpec(p: Precision): ModeSpec {
  switch (p) {
    case 'fp32':
      return { fwd: [NONE, NONE], dgrad: [NONE, NONE], wgrad: [NONE, NONE] };
    case 'bf16':
      return { fwd: [B16, B16], dgrad: [B16, B16], wgrad: [B16, B16] };
    case 'int8-block': {
      const q: OperandQuant = { kind: 'int8-block', block: 32 };
      return { fwd: [q, q], dgrad: [q, q], wgrad: [q, q] };
    }
    case 'switchback':
      return { fwd: [{ kind: 'int8-rows' }, { kind: 'tensor', format: 'int8' }], dgrad: [{ kind: 'int8-rows' }, { kind: 'tensor', format: 'int8' }], wgrad: [B16, B16] };
    case 'fp8': {
      const e4: OperandQuant = { kind: 'tensor', format: 'e4m3' };
      const e5: OperandQuant = { kind: 'tensor', format: 'e5m2' };
      return { fwd: [e4, e4], dgrad: [e5, e4], wgrad: [e5, e4] };
    }
    case 'fp4': {
      const q: OperandQuant = { kind: 'mxfp4', hadamard: false, stochastic: false };
      return { fwd: [q, q], dgrad: [B16, B16], wgrad: [B16, B16], dge: true, outlierQuantile: 0.999 };
    }
    case 'quartet': {
      const f: OperandQuant = { kind: 'mxfp4', hadamard: true, stochastic: false };
      const b: OperandQuant = { kind: 'mxfp4', hadamard: true, stochastic: true };
      return { fwd: [f, f], dgrad: [b, b], wgrad: [b, b] };
    }
  }
  fail(`unknown precision '${String(p)}' (${PRECISIONS.join(', ')})`);
}

/** Scratch floats a quantized LinearOp needs for a model with these widths and tokens per micro-batch. */
export function precisionScratchFloats(tokens: number, widest: number): number {
  return 4 * Math.max(tokens * widest, widest * widest) + 4 * 64;
}

/** A LinearOp that quantizes the operands of every product as `p` prescribes. */
export interface PrecisionOp extends LinearOp {
  /** start micro-batch `index` (seeds stochastic rounding: the same index gives the same rounding) */
  beginStep(index: number): void;
}

export function quantizedLinear(be: Backend, p: Precision, scratchFloats: number, seed: number): PrecisionOp {
  const spec = modeSpec(p);
  const size = Math.ceil(scratchFloats / 4);
  const s1 = be.alloc(size), s2 = be.alloc(size), s3 = be.alloc(size), s4 = be.alloc(size);
  let calls = 0;
  let step = 0;
  const exact = exactLinear(be, () => ({ t1: s3, t2: s4 }));
  const head = (name: string) => name === 'output.weight' || name === 'token_embd.weight';
  const op: PrecisionOp = {
    beginStep(index: number) {
      step = index;
      calls = 0;
    },
    forward(name: string, y: Vec, x: Vec, w: Vec, n: number, rows: number, cols: number) {
      if (head(name)) return exact.forward(name, y, x, w, n, rows, cols);
      need(n * Math.max(rows, cols), rows * cols);
      const sd = seedOf(step, calls++);
      let src = x;
      if (spec.outlierQuantile !== undefined) {
        // clamp to the quantile; the residual goes through an exact sparse product below
        const thr = absQuantile(x, n * cols, spec.outlierQuantile);
        for (let i = 0; i < n * cols; i++) s3[i] = Math.max(-thr, Math.min(thr, x[i]));
        src = s3;
        quantizeOperand(spec.fwd[0], s1, src, n, cols, sd);
        quantizeOperand(spec.fwd[1], s2, w, rows, cols, sd + 1);
        be.transpose(s4, 0, rows, s2, 0, cols, rows, cols); // q(W)ᵀ: cols x rows
        be.gemm(y, 0, rows, s1, 0, cols, s4, 0, rows, n, cols, rows, false);
        for (let t = 0; t < n; t++)
          for (let i = 0; i < cols; i++) {
            const r = x[t * cols + i] - s3[t * cols + i];
            if (r !== 0) for (let j = 0; j < rows; j++) y[t * rows + j] += r * w[j * cols + i];
          }
        return;
      }
      quantizeOperand(spec.fwd[0], s1, src, n, cols, sd);
      quantizeOperand(spec.fwd[1], s2, w, rows, cols, sd + 1);
      be.transpose(s4, 0, rows, s2, 0, cols, rows, cols);
      be.gemm(y, 0, rows, s1, 0, cols, s4, 0, rows, n, cols, rows, false);
    },
    backward(name: string, dx: Vec | null, dw: Vec, dy: Vec, x: Vec, w: Vec, n: number, rows: number, cols: number) {
      if (head(name)) return exact.backward(name, dx, dw, dy, x, w, n, rows, cols);
      need(n * Math.max(rows, cols), rows * cols);
      const sd = seedOf(step, calls++);
      if (dx) {
        // dx = q(dy) · q(Wᵀ)ᵀ, K = rows
        quantizeOperand(spec.dgrad[0], s1, dy, n, rows, sd);
        be.transpose(s3, 0, rows, w, 0, cols, rows, cols); // Wᵀ: cols x rows
        quantizeOperand(spec.dgrad[1], s2, s3, cols, rows, sd + 1);
        be.transpose(s4, 0, cols, s2, 0, rows, cols, rows); // back to rows x cols
        be.gemm(dx, 0, cols, s1, 0, rows, s4, 0, cols, n, rows, cols, false);
      }
      // dW = q(dyᵀ) · q(xᵀ)ᵀ, K = n
      be.transpose(s3, 0, n, dy, 0, rows, n, rows); // dyᵀ: rows x n
      quantizeOperand(spec.wgrad[0], s1, s3, rows, n, sd + 2);
      be.transpose(s3, 0, n, x, 0, cols, n, cols); // xᵀ: cols x n
      quantizeOperand(spec.wgrad[1], s2, s3, cols, n, sd + 3);
      be.transpose(s4, 0, cols, s2, 0, n, cols, n); // n x cols
      if (spec.dge) {
        // dW = dW_q ⊙ f'(w): the product into s3, then scaled into dw
        be.gemm(s3, 0, cols, s1, 0, n, s4, 0, cols, rows, n, cols, false);
        dgeFactors(s2, w, rows, cols);
        for (let i = 0; i < rows * cols; i++) dw[i] += s3[i] * s2[i];
      } else be.gemm(dw, 0, cols, s1, 0, n, s4, 0, cols, rows, n, cols, true);
    },
  };
  function need(act: number, wt: number) {
    if (Math.max(act, wt) > size) fail(`precision ${p}: scratch of ${size} floats is too small for ${Math.max(act, wt)}`);
  }
  function seedOf(step: number, call: number): number {
    return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b) ^ Math.imul(call + 1, 0xc2b2ae35)) >>> 0;
  }
  return op;
}

/** Install precision p's LinearOp on a model (fp32 keeps the exact products). */
export function applyPrecision(m: TrainModel, p: Precision, seed: number): PrecisionOp | undefined {
  if (!PRECISIONS.includes(p)) fail(`unknown precision '${String(p)}' (${PRECISIONS.join(', ')})`);
  if (p === 'fp32') return undefined;
  const c = m.config;
  const widest = Math.max(c.dim, c.hiddenDim, c.vocabSize, c.nHeads * c.headDim);
  const op = quantizedLinear(m.be, p, precisionScratchFloats(m.batch * m.ctx, widest), seed);
  m.linear = op;
  return op;
}
