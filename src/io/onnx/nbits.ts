/**
 * Weight-only quantization of ONNX MatMul/Gemm to onnxruntime's com.microsoft MatMulNBits.
 *
 * MatMulNBits(A, B, scales[, zero_points]) = A @ dequant(B)^T with attributes K, N, bits, block_size,
 * accuracy_level. The weight is stored transposed (one row per output channel n), cut along K into
 * blocks of block_size:
 *   B           uint8 [N, nBlocks, blobSize], blobSize = block_size * bits / 8; codes packed low bits
 *               first (4-bit: element 2j in the low nibble of byte j, 2j+1 in the high nibble)
 *   scales      float [N * nBlocks]
 *   zero_points uint8 [N * ceil(nBlocks * bits / 8)] packed the same way per row (absent: 2^(bits-1)),
 *               or float [N * nBlocks] (HQQ's float zero)
 *   w[n][k] = (code - zero) * scale
 * The grids come from lowbit's registry: RTN and GPTQ on intGrid (symmetric: scale = absmax / (2^(b-1)-1),
 * codes -2^(b-1)..2^(b-1)-1 stored + 2^(b-1); asymmetric: min/max scale and integer zero), HQQ on hqqGrid.
 * Gemm(A, B, C) with transA = 0 becomes MatMulNBits on alpha * op(B), then Add(beta * C).
 */
import { fail } from '../../errors.js';
import type { GptqOptions } from '../../algos/gptq.js';
import { gptq, hqqGrid, intGrid, rtnWithGrid, type GptqGrid } from '../../algos/grids.js';
import { node as mkNode } from './build.js';
import { addInitializer, ensureOpset, indexGraph, nodeLabel, removeIfUnused, replaceNode, useCounts } from './graph-edit.js';
import { allGraphs, attrFloat, attrInt, isFloatType, makeTensor, tensorFloat32, tensorShape, type OnnxModel, type WeightRef } from './model.js';
import { DataType, type GraphProto, type NodeProto } from './schema.js';

export type NBitsAlgorithm = 'rtn' | 'gptq' | 'hqq';
export const NBITS_BITS = [2, 4, 8] as const;

export interface NBitsOptions {
  bits: number;
  blockSize: number;
  /** symmetric codes, no zero_points input (default); false: integer zero points (HQQ: float zeros) */
  symmetric?: boolean;
  accuracyLevel?: number;
  algorithm?: NBitsAlgorithm;
  /** GPTQ: Hessians 2 X^T X / n (K x K) by the name of the node's activation input */
  hessians?: Map<string, Float64Array>;
  gptq?: GptqOptions;
  /** nodes to leave in float (names or op(output) labels) */
  keep?: ReadonlySet<string>;
}

export interface MatMulTarget {
  readonly node: NodeProto;
  readonly graph: GraphProto;
  readonly graphPath: string;
  readonly weight: WeightRef;
  /** the activation input (A) */
  readonly activation: string;
  readonly K: number;
  readonly N: number;
  readonly op: 'MatMul' | 'Gemm';
}

export interface NodeReport {
  node: string;
  op: string;
  K: number;
  N: number;
  action: string;
  sqnrDb?: number;
  reason?: string;
}

/** MatMul / Gemm nodes whose B is a constant 2-D float weight (every graph). */
export function matmulTargets(m: OnnxModel, warn: (msg: string) => void = () => {}): MatMulTarget[] {
  const idx = indexGraph(m.proto);
  const out: MatMulTarget[] = [];
  for (const { graph, path } of allGraphs(m.proto)) {
    for (const n of graph.node ?? []) {
      if ((n.domain ?? '') !== '' || (n.op_type !== 'MatMul' && n.op_type !== 'Gemm')) continue;
      const w = idx.constants.get(n.input?.[1] ?? '');
      if (!w || !isFloatType(w.tensor.data_type)) continue;
      const shape = tensorShape(w.tensor);
      if (shape.length !== 2) continue;
      if (n.op_type === 'Gemm' && attrInt(n, 'transA', 0) !== 0) {
        warn(`${nodeLabel(n)}: Gemm with transA = 1 left in float`);
        continue;
      }
      const transB = n.op_type === 'Gemm' && attrInt(n, 'transB', 0) !== 0;
      const [K, N] = transB ? [shape[1], shape[0]] : shape;
      out.push({ node: n, graph, graphPath: path, weight: w, activation: n.input![0], K, N, op: n.op_type });
    }
  }
  return out;
}

/** The target's weight as W (N x K row-major, one row per output channel), alpha folded in. */
export async function targetWeightRows(m: OnnxModel, t: MatMulTarget): Promise<Float32Array> {
  const b = await tensorFloat32(m, t.weight.tensor);
  const alpha = t.op === 'Gemm' ? attrFloat(t.node, 'alpha', 1) : 1;
  const transB = t.op === 'Gemm' && attrInt(t.node, 'transB', 0) !== 0;
  const { K, N } = t;
  const w = new Float32Array(N * K);
  if (transB) for (let i = 0; i < N * K; i++) w[i] = b[i] * alpha;
  else for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) w[n * K + k] = b[k * N + n] * alpha;
  return w;
}

export function nbitsGrid(opts: NBitsOptions): GptqGrid {
  const alg = opts.algorithm ?? 'rtn';
  return alg === 'hqq' ? hqqGrid(opts.bits, opts.blockSize) : intGrid(opts.bits, opts.blockSize, opts.symmetric === false);
}

/** pack `count` codes of `bits` each, low bits first, into out at byte offset o */
export function packCodes(codes: ArrayLike<number>, from: number, count: number, bits: number, out: Uint8Array, o: number): void {
  let acc = 0;
  let nb = 0;
  for (let i = 0; i < count; i++) {
    acc |= codes[from + i] << nb;
    nb += bits;
    while (nb >= 8) {
      out[o++] = acc & 255;
      acc >>>= 8;
      nb -= 8;
    }
  }
  if (nb > 0) out[o] = acc & 255;
}

export interface NBitsWeight {
  b: Uint8Array; // [N, nBlocks, blobSize]
  scales: Float32Array; // [N * nBlocks]
  /** uint8 packed (integer zeros) or float (HQQ); absent for symmetric */
  zeroPoints?: Uint8Array | Float32Array;
  /** the dequantized weight, N x K */
  q: Float32Array;
}

/**
 * Encode on-grid values q (N x K, from the grid's quant) with their group parameters into MatMulNBits
 * tensors; checks that every code decodes back to its value exactly.
 */
export function encodeNBits(q: Float32Array, params: Float64Array, N: number, K: number, opts: NBitsOptions): NBitsWeight {
  const { bits, blockSize: bs } = opts;
  const alg = opts.algorithm ?? 'rtn';
  const sym = opts.symmetric !== false && alg !== 'hqq';
  const nBlocks = K / bs;
  const blob = (bs * bits) / 8;
  const qmax = 2 ** bits - 1;
  const half = 2 ** (bits - 1);
  const b = new Uint8Array(N * nBlocks * blob);
  const scales = new Float32Array(N * nBlocks);
  const zpBytes = Math.ceil((nBlocks * bits) / 8);
  const intZeros = !sym && alg !== 'hqq' ? new Uint8Array(N * zpBytes) : undefined;
  const floatZeros = alg === 'hqq' ? new Float32Array(N * nBlocks) : undefined;
  const codes = new Uint8Array(bs);
  const rowZeros = new Uint8Array(nBlocks);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < nBlocks; g++) {
      const p = (n * nBlocks + g) * 2;
      const s = params[p];
      const z = sym ? half : params[p + 1];
      scales[n * nBlocks + g] = s;
      if (floatZeros) floatZeros[n * nBlocks + g] = z;
      else rowZeros[g] = z;
      for (let j = 0; j < bs; j++) {
        const v = q[n * K + g * bs + j];
        if (floatZeros) {
          // HQQ: a float zero; the stored value is what onnxruntime computes in float32
          const c = Math.min(qmax, Math.max(0, Math.round(v / s + z)));
          codes[j] = c;
          q[n * K + g * bs + j] = Math.fround(Math.fround(c - Math.fround(z)) * Math.fround(s));
          continue;
        }
        const c = Math.round(v / s) + (sym ? half : z);
        if (!(c >= 0 && c <= qmax) || Math.fround((c - z) * Math.fround(s)) !== v)
          fail(`internal error: MatMulNBits code ${c} of row ${n} block ${g} does not decode to ${v}`);
        codes[j] = c;
      }
      packCodes(codes, 0, bs, bits, b, (n * nBlocks + g) * blob);
    }
    if (intZeros) packCodes(rowZeros, 0, nBlocks, bits, intZeros, n * zpBytes);
  }
  return { b, scales, zeroPoints: intZeros ?? floatZeros, q };
}

/** The reference dequantizer of MatMulNBits tensors (N x K), as onnxruntime defines it. */
export function decodeNBits(w: Omit<NBitsWeight, 'q'>, N: number, K: number, bits: number, bs: number): Float32Array {
  const nBlocks = Math.ceil(K / bs);
  const blob = (bs * bits) / 8;
  const zpBytes = Math.ceil((nBlocks * bits) / 8);
  const mask = 2 ** bits - 1;
  const code = (bytes: Uint8Array, o: number, i: number) => {
    const bit = i * bits;
    const v = bytes[o + (bit >> 3)] | ((bytes[o + (bit >> 3) + 1] ?? 0) << 8);
    return (v >> (bit & 7)) & mask;
  };
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++)
    for (let g = 0; g < nBlocks; g++) {
      const s = w.scales[n * nBlocks + g];
      const z = w.zeroPoints === undefined ? 2 ** (bits - 1) : w.zeroPoints instanceof Float32Array ? w.zeroPoints[n * nBlocks + g] : code(w.zeroPoints, n * zpBytes, g);
      for (let j = 0; j < bs && g * bs + j < K; j++) out[n * K + g * bs + j] = Math.fround(Math.fround(code(w.b, (n * nBlocks + g) * blob, j) - z) * s);
    }
  return out;
}

export function sqnrDb(w: Float32Array, q: Float32Array): number {
  let s = 0;
  let e = 0;
  for (let i = 0; i < w.length; i++) {
    s += w[i] * w[i];
    e += (w[i] - q[i]) ** 2;
  }
  return e === 0 ? Infinity : 10 * Math.log10(s / e);
}

/**
 * Round-to-nearest on intGrid's grid, in one tight loop: the same parameters and values as
 * rtnWithGrid(w, n, k, intGrid(bits, g, asym)) (tested), without a closure call per element.
 */
export function rtnInt(w: Float32Array, n: number, k: number, bits: number, g: number, asym: boolean): { q: Float32Array; params: Float64Array } {
  const qmaxS = 2 ** (bits - 1) - 1;
  const qmaxA = 2 ** bits - 1;
  const nGroups = k / g;
  const params = new Float64Array(n * nGroups * 2);
  const q = new Float32Array(n * k);
  for (let grp = 0; grp < n * nGroups; grp++) {
    const off = grp * g;
    let lo = 0;
    let hi = 0;
    let amax = 0;
    for (let j = 0; j < g; j++) {
      const v = w[off + j];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      const a = Math.abs(v);
      if (a > amax) amax = a;
    }
    if (asym) {
      const s = hi > lo ? (hi - lo) / qmaxA : 1;
      const sf = Math.fround(s);
      const z = Math.round(-lo / s);
      params[grp * 2] = sf;
      params[grp * 2 + 1] = z;
      for (let j = 0; j < g; j++) q[off + j] = Math.fround((Math.min(qmaxA, Math.max(0, Math.round(w[off + j] / sf) + z)) - z) * sf);
    } else {
      const s = Math.fround(amax > 0 ? amax / qmaxS : 1);
      params[grp * 2] = s;
      for (let j = 0; j < g; j++) q[off + j] = Math.fround(Math.min(qmaxS, Math.max(-qmaxS - 1, Math.round(w[off + j] / s))) * s);
    }
  }
  return { q, params };
}

/**
 * Quantize one weight (N x K rows) by the chosen algorithm. K that is not a multiple of the block size
 * is padded with zero columns (the last block's padding codes decode to 0, as MatMulNBits allows);
 * the returned q is N x K.
 */
export function quantizeRows(w: Float32Array, N: number, K: number, opts: NBitsOptions, hessian?: Float64Array): NBitsWeight {
  const grid = nbitsGrid(opts);
  const bs = opts.blockSize;
  const Kp = Math.ceil(K / bs) * bs;
  let wp = w;
  let hp = hessian;
  if (Kp !== K) {
    wp = new Float32Array(N * Kp);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wp[n * Kp + k] = w[n * K + k];
    if (hessian) {
      hp = new Float64Array(Kp * Kp);
      for (let i = 0; i < K; i++) hp.set(hessian.subarray(i * K, (i + 1) * K), i * Kp);
    }
  }
  const alg = opts.algorithm ?? 'rtn';
  const { q, params } =
    alg === 'gptq' ? gptq(wp, N, Kp, hp ?? fail('GPTQ needs calibration data (a Hessian per MatMul)'), grid, opts.gptq) : alg === 'rtn' ? rtnInt(wp, N, Kp, opts.bits, bs, opts.symmetric === false) : rtnWithGrid(wp, N, Kp, grid);
  const enc = encodeNBits(q, params, N, Kp, opts);
  if (Kp === K) return enc;
  const qk = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) qk[n * K + k] = enc.q[n * Kp + k];
  return { ...enc, q: qk };
}

export function checkNBitsOptions(o: NBitsOptions): void {
  if (!(NBITS_BITS as readonly number[]).includes(o.bits)) fail(`MatMulNBits: ${o.bits} bits is not supported by onnxruntime (valid: ${NBITS_BITS.join(', ')})`);
  if (!(o.blockSize >= 16 && o.blockSize <= 256 && (o.blockSize & (o.blockSize - 1)) === 0)) fail(`--group ${o.blockSize}: MatMulNBits needs a power of two from 16 to 256`);
  if (o.accuracyLevel !== undefined && !(Number.isInteger(o.accuracyLevel) && o.accuracyLevel >= 0 && o.accuracyLevel <= 4)) fail(`--accuracy-level ${o.accuracyLevel}: must be 0 to 4`);
  if (o.algorithm === 'hqq' && o.symmetric !== false) o.symmetric = false;
}

/**
 * Rewrite every eligible MatMul/Gemm of the model into MatMulNBits (in place). Nodes that cannot be
 * rewritten stay in float with a warning; their reasons are in the report.
 */
export async function quantizeMatMulNBits(m: OnnxModel, opts: NBitsOptions, warn: (msg: string) => void = () => {}, onProgress?: (done: number, total: number) => void): Promise<NodeReport[]> {
  checkNBitsOptions(opts);
  const targets = matmulTargets(m, warn);
  const idx = indexGraph(m.proto);
  const reports: NodeReport[] = [];
  const done = new Map<string, { b: string; scales: string; zp?: string; sqnr: number }>();
  let i = 0;
  for (const t of targets) {
    onProgress?.(i++, targets.length);
    const label = nodeLabel(t.node);
    const base = { node: label, op: t.op, K: t.K, N: t.N };
    if (opts.keep?.has(label) || opts.keep?.has(t.node.name ?? '')) {
      reports.push({ ...base, action: 'kept', reason: '--keep' });
      continue;
    }
    const gemm = t.op === 'Gemm';
    const c = gemm ? t.node.input?.[2] : undefined;
    const beta = gemm ? attrFloat(t.node, 'beta', 1) : 1;
    let biasName: string | undefined;
    if (c) {
      if (beta === 1) biasName = c;
      else {
        const cw = idx.constants.get(c);
        if (!cw) {
          warn(`${label}: Gemm with beta ${beta} and a computed C left in float`);
          reports.push({ ...base, action: 'kept', reason: 'beta != 1 with computed C' });
          continue;
        }
        const cv = await tensorFloat32(m, cw.tensor);
        biasName = idx.fresh(`${c}_beta`);
        addInitializer(m.proto, t.graph, makeTensor(biasName, DataType.FLOAT, tensorShape(cw.tensor), cv.map((x) => x * beta)));
      }
    }
    // a weight shared by several nodes (same alpha/transB) is quantized once
    const key = `${t.weight.name}|${gemm ? `${attrFloat(t.node, 'alpha', 1)}|${attrInt(t.node, 'transB', 0)}` : ''}|${t.graphPath}`;
    let q = done.get(key);
    if (!q) {
      const w = await targetWeightRows(m, t);
      const h = opts.hessians?.get(t.activation);
      if ((opts.algorithm ?? 'rtn') === 'gptq' && !h) {
        warn(`${label}: no calibration activations reached this node (inside a subgraph?); RTN used`);
      }
      const enc = quantizeRows(w, t.N, t.K, (opts.algorithm === 'gptq' && !h ? { ...opts, algorithm: 'rtn' } : opts), h);
      const nBlocks = Math.ceil(t.K / opts.blockSize);
      const bName = idx.fresh(`${t.weight.name}_Q${opts.bits}`);
      const sName = idx.fresh(`${t.weight.name}_scales`);
      addInitializer(m.proto, t.graph, makeTensor(bName, DataType.UINT8, [t.N, nBlocks, (opts.blockSize * opts.bits) / 8], enc.b));
      addInitializer(m.proto, t.graph, makeTensor(sName, DataType.FLOAT, [t.N * nBlocks], enc.scales));
      let zpName: string | undefined;
      if (enc.zeroPoints) {
        zpName = idx.fresh(`${t.weight.name}_zero_points`);
        addInitializer(m.proto, t.graph, makeTensor(zpName, enc.zeroPoints instanceof Float32Array ? DataType.FLOAT : DataType.UINT8, [enc.zeroPoints.length], enc.zeroPoints));
      }
      q = { b: bName, scales: sName, zp: zpName, sqnr: sqnrDb(w, enc.q) };
      done.set(key, q);
    }
    const attrs = { K: t.K, N: t.N, bits: opts.bits, block_size: opts.blockSize, ...(opts.accuracyLevel !== undefined ? { accuracy_level: opts.accuracyLevel } : {}) };
    const out = t.node.output![0];
    const mmOut = biasName ? idx.fresh(`${out}_nobias`) : out;
    const nodes = [mkNode('MatMulNBits', [t.activation, q.b, q.scales, ...(q.zp ? [q.zp] : [])], [mmOut], attrs, `${t.node.name || out}_Q${opts.bits}`, 'com.microsoft')];
    if (biasName) nodes.push(mkNode('Add', [mmOut, biasName], [out], {}, `${t.node.name || out}_bias`));
    replaceNode(t.graph, t.node, nodes);
    reports.push({ ...base, action: `MatMulNBits int${opts.bits} g${opts.blockSize}${q.zp ? ' +zp' : ''}`, sqnrDb: q.sqnr });
  }
  onProgress?.(targets.length, targets.length);
  if (reports.some((r) => r.action.startsWith('MatMulNBits'))) ensureOpset(m.proto, 'com.microsoft', 1);
  const uses = useCounts(m.proto);
  for (const t of targets) removeIfUnused(m.proto, t.weight, uses);
  return reports;
}
