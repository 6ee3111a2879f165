/**
 * AutoRound's per-linear kernels (src/algos/autoround.ts): the signed-gradient sweep over one row and
 * the gradient G = E H of rows of the error E. WebAssembly SIMD (wasm/autoround.ts) with scalar
 * references here; the two agree bit for bit (test/ptq-learned.test.ts): the scalar decisions are the
 * same f64 operations in the same order, the row updates of G are f32 products rounded, then f32 sums
 * (Math.fround here, separate f32x4 multiply and add there), in the same order.
 *
 * A row's results depend on nothing but that row (and H): splitting a matrix's rows over threads gives
 * the same bytes as one call.
 *
 * Memory: the WebAssembly version keeps the state in its own instance's memory (one per workspace);
 * the workspace hands out typed-array views of it, allocated once (the memory never grows after).
 */
import { newKernelInstance, wasmVariant, type KernelInstance } from './wasm.js';
import * as autoroundWasm from './wasm/autoround.generated.js';

interface AutoRoundExports {
  heapBase(): number;
  sweepRow(g: number, h: number, hd: number, v: number, t: number, lo: number, hi: number, ch: number, k: number, step: number, ga: number, bs: number): number;
  gradRows(g: number, e: number, h: number, m: number, k: number, pk: number): void;
  packDiag(h: number, k: number, bs: number, dst: number): void;
  packBlock(h: number, k: number, c0: number, bs: number, dst: number): void;
  quadBlockD(hb: number, delta: number, d64: number, bs: number): number;
  bracketAffine(w: number, gv: number, gc: number, nAff: number, lo: number, hi: number, loC: number, hiC: number, t: number, bs: number): void;
  regridDelta(cL: number, cU: number, cT: number, v: number, ch: number, lo: number, hi: number, g: number, delta: number, bs: number): number;
  takeBlock(cL: number, cU: number, cLC: number, cUC: number, cT: number, lo: number, hi: number, loC: number, hiC: number, t: number, v: number, ch: number, bs: number): void;
  startAffine(w: number, q: number, gv: number, gc: number, nAff: number, lo: number, hi: number, loC: number, hiC: number, t: number, v: number, ch: number, bs: number, margin: number): void;
}

// ---------------------------------------------------------------------------------------------------
// References

/**
 * One sweep over the row of k elements at offset o of G, v, t, lo, hi, ch (H: k x k, hd its diagonal):
 * every offset steps against its gradient's sign; a proposed flip is taken when it lowers the row's
 * loss exactly and the row of G follows it at once. With ga, sum_j g_j q_j per block of bs is added to
 * ga[gao + block]. Returns the sum of the taken changes of the loss.
 */
export function sweepRowRef(G: Float32Array, H: Float32Array, hd: Float32Array, v: Float32Array, t: Float32Array, lo: Float32Array, hi: Float32Array, ch: Uint8Array, o: number, k: number, step: number, ga: Float64Array | null, gao: number, bs: number): number {
  let loss = 0;
  for (let col = 0; col < k; col++) {
    const e = o + col;
    const g = G[e];
    if (g === 0) continue;
    if (ga) ga[gao + ((col / bs) | 0)] += g * (ch[e] ? hi[e] : lo[e]);
    let vv = v[e] - (g > 0 ? step : -step);
    vv = vv > 0.5 ? 0.5 : vv < -0.5 ? -0.5 : vv;
    v[e] = vv;
    const nc = t[e] + vv >= 0.5 ? 1 : 0;
    if (nc === ch[e]) continue;
    const d = nc ? hi[e] - lo[e] : lo[e] - hi[e];
    const dl = 2 * d * g + d * d * hd[col];
    if (!(dl < 0)) continue; // the offset proposes, the exact change of the loss decides
    ch[e] = nc;
    loss += dl;
    const df = Math.fround(d);
    const hr = col * k;
    for (let j = 0; j < k; j++) G[o + j] += Math.fround(df * H[hr + j]);
  }
  return loss;
}

/** G[r0..r1) = E[r0..r1) H (rows k wide, H k x k symmetric), f32: each product rounded, then each sum */
export function gradRowsRef(G: Float32Array, E: Float32Array, H: Float32Array, r0: number, r1: number, k: number): void {
  for (let r = r0; r < r1; r++) {
    const o = r * k;
    G.fill(0, o, o + k);
    for (let c = 0; c < k; c++) {
      const a = E[o + c];
      const hr = c * k;
      for (let j = 0; j < k; j++) G[o + j] += Math.fround(a * H[hr + j]);
    }
  }
}

/** delta^T H[c0.., c0..] delta over bs elements (f64): per i, the sum over even j and over odd j, then added */
export function quadBlockRef(H: Float32Array, k: number, c0: number, delta: Float32Array, bs: number): number {
  let dl = 0;
  for (let i = 0; i < bs; i++) {
    const di = delta[i];
    if (di === 0) continue;
    const hr = (c0 + i) * k + c0;
    let s0 = 0;
    let s1 = 0;
    let j = 0;
    for (; j + 1 < bs; j += 2) {
      s0 += H[hr + j] * delta[j];
      s1 += H[hr + j + 1] * delta[j + 1];
    }
    if (j < bs) s0 += H[hr + j] * delta[j];
    dl += di * (s0 + s1);
  }
  return dl;
}

// ---------------------------------------------------------------------------------------------------
// Workspace

/** The state of one AutoRound run over n rows of k, blocks of bs (views into WebAssembly memory when fast). */
export interface AutoRoundWork {
  readonly fast: boolean;
  /** k x k and its diagonal */
  readonly H: Float32Array;
  readonly hd: Float32Array;
  /** n x k each: gradient, error (input of gradRows), offsets, positions between the levels, levels */
  readonly G: Float32Array;
  readonly E: Float32Array;
  readonly v: Float32Array;
  readonly t: Float32Array;
  readonly lo: Float32Array;
  readonly hi: Float32Array;
  /** the choice per element (1 = hi) */
  readonly ch: Uint8Array;
  /** the clip ratios' gradient per block (n x k / bs) */
  readonly gAlpha: Float64Array;
  /** one sweep over row r (see sweepRowRef); `clip`: accumulate gAlpha */
  sweepRow(r: number, step: number, clip: boolean): number;
  /** G[r0..r1) = E[r0..r1) H */
  gradRows(r0: number, r1: number): void;
  /** a block's scratch of bs floats (delta for quadBlock) */
  readonly delta: Float32Array;
  /** delta^T H[c0.., c0..] delta (see quadBlockRef); H must not change after the first call (the WebAssembly workspace keeps a copy of its diagonal blocks) */
  quadBlock(c0: number): number;
  /**
   * The WebAssembly workspace only: the element codes, the linear's weights (set by the caller), a block's
   * candidate levels (cl) and an affine grid's levels (gv, gc), and the kernels on them (algos/autoround.ts
   * bracketBlock's affine path and regrid's loops are their references)
   */
  readonly affine?: AffineWork;
}

export interface AffineWork {
  /** n x k: the levels' codes, and the weights */
  readonly loC: Uint16Array;
  readonly hiC: Uint16Array;
  readonly W: Float32Array;
  /** one block's candidate levels */
  readonly cl: { lo: Float32Array; hi: Float32Array; loC: Uint16Array; hiC: Uint16Array; t: Float32Array };
  /** an affine grid's levels (strictly increasing) and their codes, up to 256 */
  readonly gv: Float32Array;
  readonly gc: Uint16Array;
  /** bracket the bs weights from element xo on the grid gv[0 .. nAff) into the element arrays at xo, or into cl */
  bracket(xo: number, nAff: number, intoCl: boolean): void;
  /** regrid's delta of the block at xo (cl against the current values) into delta; returns sum 2 delta G */
  regridDelta(xo: number): number;
  /** cl into the element arrays at xo, choices from t + v */
  take(xo: number): void;
}

let useFast = true;

/** Turn the WebAssembly version off (tests compare against the references). */
export function setAutoRoundKernelsFast(on: boolean): void {
  useFast = on;
}

/**
 * The thread's WebAssembly instance of the workspace, reused by every call: a new memory for every
 * linear took its pages from the system at their first touch (~25 us a 4 KiB page on the bench machine:
 * ~0.4 s per 100 MB, more than the sweeps over a small linear), where zeroing used ones costs ~1 %
 */
let reused: KernelInstance | null = null;

/**
 * A workspace for n rows of k (blocks of bs); the WebAssembly one when available and enabled. The
 * WebAssembly workspace lives in the thread's one instance, zeroed (as a new memory would be): it is
 * valid until the next call on this thread.
 */
export function autoRoundWork(n: number, k: number, bs: number, fast = useFast): AutoRoundWork {
  const N = n * k;
  const nb = Math.max(1, Math.ceil(k / bs));
  if (fast && reused?.variant !== wasmVariant()) reused = newKernelInstance('autoround', autoroundWasm, 1);
  const inst = fast ? reused : null;
  if (!inst) {
    const w = {
      fast: false,
      H: new Float32Array(k * k),
      hd: new Float32Array(k),
      G: new Float32Array(N),
      E: new Float32Array(N),
      v: new Float32Array(N),
      t: new Float32Array(N),
      lo: new Float32Array(N),
      hi: new Float32Array(N),
      ch: new Uint8Array(N),
      gAlpha: new Float64Array(n * nb),
      delta: new Float32Array(bs),
    };
    return {
      ...w,
      sweepRow: (r, step, clip) => sweepRowRef(w.G, w.H, w.hd, w.v, w.t, w.lo, w.hi, w.ch, r * k, k, step, clip ? w.gAlpha : null, r * nb, bs),
      gradRows: (r0, r1) => gradRowsRef(w.G, w.E, w.H, r0, r1, k),
      quadBlock: (c0) => quadBlockRef(w.H, k, c0, w.delta, bs),
    };
  }
  const x = inst.exports as unknown as AutoRoundExports;
  let top = (x.heapBase() + 63) & ~63;
  const alloc = (bytes: number) => {
    const at = top;
    top = (at + bytes + 63) & ~63;
    return at;
  };
  const at = {
    H: alloc(k * k * 4),
    hd: alloc(k * 4),
    G: alloc(N * 4),
    E: alloc(N * 4),
    v: alloc(N * 4),
    t: alloc(N * 4),
    lo: alloc(N * 4),
    hi: alloc(N * 4),
    gAlpha: alloc(n * nb * 8),
    delta: alloc(bs * 4),
    ch: alloc(N),
    loC: alloc(N * 2),
    hiC: alloc(N * 2),
    W: alloc(N * 4),
    cL: alloc(bs * 4),
    cU: alloc(bs * 4),
    cT: alloc(bs * 4),
    cLC: alloc(bs * 2),
    cUC: alloc(bs * 2),
    gv: alloc(256 * 4),
    gc: alloc(256 * 2),
    // gradRows' copy of a strip of H (k x 16), quadBlock's copy of H's diagonal blocks (k x bs, f64) and its delta (f64)
    strip: alloc(k * 16 * 4),
    diag: alloc(k * bs * 8),
    d64: alloc(bs * 8),
    one: alloc(bs * bs * 8),
  };
  const have = inst.memory.buffer.byteLength;
  if (top > have) inst.memory.grow(Math.ceil((top - have) / 65536));
  const buf = inst.memory.buffer;
  const first = (x.heapBase() + 63) & ~63;
  new Uint8Array(buf, first, top - first).fill(0); // what a new memory holds (v starts at 0, for one)
  const f32 = (p: number, len: number) => new Float32Array(buf, p, len);
  const row = k * 4;
  let diagPacked = false;
  return {
    fast: true,
    H: f32(at.H, k * k),
    hd: f32(at.hd, k),
    G: f32(at.G, N),
    E: f32(at.E, N),
    v: f32(at.v, N),
    t: f32(at.t, N),
    lo: f32(at.lo, N),
    hi: f32(at.hi, N),
    ch: new Uint8Array(buf, at.ch, N),
    gAlpha: new Float64Array(buf, at.gAlpha, n * nb),
    sweepRow: (r, step, clip) => x.sweepRow(at.G + r * row, at.H, at.hd, at.v + r * row, at.t + r * row, at.lo + r * row, at.hi + r * row, at.ch + r * k, k, step, clip ? at.gAlpha + r * nb * 8 : 0, bs),
    gradRows: (r0, r1) => x.gradRows(at.G + r0 * row, at.E + r0 * row, at.H, r1 - r0, k, at.strip),
    delta: f32(at.delta, bs),
    // H's diagonal blocks copied at the first call (H is set before and not changed after: autoRoundBlocks);
    // a block of whole bs columns reads the copy, any other c0 a copy of its block made for the call (the same values)
    quadBlock: (c0) => {
      if (k % bs !== 0 || c0 % bs !== 0) {
        x.packBlock(at.H, k, c0, bs, at.one);
        return x.quadBlockD(at.one, at.delta, at.d64, bs);
      }
      if (!diagPacked) {
        x.packDiag(at.H, k, bs, at.diag);
        diagPacked = true;
      }
      return x.quadBlockD(at.diag + c0 * bs * 8, at.delta, at.d64, bs);
    },
    affine: {
      loC: new Uint16Array(buf, at.loC, N),
      hiC: new Uint16Array(buf, at.hiC, N),
      W: f32(at.W, N),
      cl: { lo: f32(at.cL, bs), hi: f32(at.cU, bs), loC: new Uint16Array(buf, at.cLC, bs), hiC: new Uint16Array(buf, at.cUC, bs), t: f32(at.cT, bs) },
      gv: f32(at.gv, 256),
      gc: new Uint16Array(buf, at.gc, 256),
      bracket: (xo, nAff, intoCl) =>
        intoCl
          ? x.bracketAffine(at.W + xo * 4, at.gv, at.gc, nAff, at.cL, at.cU, at.cLC, at.cUC, at.cT, bs)
          : x.bracketAffine(at.W + xo * 4, at.gv, at.gc, nAff, at.lo + xo * 4, at.hi + xo * 4, at.loC + xo * 2, at.hiC + xo * 2, at.t + xo * 4, bs),
      regridDelta: (xo) => x.regridDelta(at.cL, at.cU, at.cT, at.v + xo * 4, at.ch + xo, at.lo + xo * 4, at.hi + xo * 4, at.G + xo * 4, at.delta, bs),
      take: (xo) => x.takeBlock(at.cL, at.cU, at.cLC, at.cUC, at.cT, at.lo + xo * 4, at.hi + xo * 4, at.loC + xo * 2, at.hiC + xo * 2, at.t + xo * 4, at.v + xo * 4, at.ch + xo, bs),
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// A learned tensor's start on affine grids (pipeline/block-round.ts roundingStart)

/**
 * Chunks of a tensor in WebAssembly memory for roundingStart's affine path: the weights w and start
 * values q of up to `chunk` elements (the caller copies them in), a block's grid (gv, gc), and the
 * levels, offsets and choices startAffine writes (the caller copies them out). References:
 * algos/autoround.ts bracketBlock (its affine path with `around`) and chooseStart.
 */
export interface StartChunks {
  readonly chunk: number;
  readonly w: Float32Array;
  readonly q: Float32Array;
  readonly gv: Float32Array;
  readonly gc: Uint16Array;
  readonly lo: Float32Array;
  readonly hi: Float32Array;
  readonly t: Float32Array;
  readonly v: Float32Array;
  readonly loC: Uint16Array;
  readonly hiC: Uint16Array;
  readonly ch: Uint8Array;
  /** the block of bs elements at chunk element o on the grid gv[0 .. nAff) (strictly increasing, scale > 0) */
  run(o: number, nAff: number, bs: number, margin: number): void;
}

/** elements per chunk of StartChunks (~1.9 MB of WebAssembly memory) */
const START_CHUNK = 1 << 16;
let startChunks: StartChunks | null = null;
let startVariant: string | undefined;

/** The thread's StartChunks (one instance, reused), or null without WebAssembly SIMD or with the kernels turned off. */
export function startChunksKernel(fast = useFast): StartChunks | null {
  if (!fast) return null;
  if (startChunks && startVariant === wasmVariant()) return startChunks;
  const n = START_CHUNK;
  const probe = newKernelInstance('autoround', autoroundWasm, 1);
  if (!probe) return null;
  const x = probe.exports as unknown as AutoRoundExports;
  let top = (x.heapBase() + 63) & ~63;
  const alloc = (bytes: number) => {
    const at = top;
    top = (at + bytes + 63) & ~63;
    return at;
  };
  const at = { w: alloc(n * 4), q: alloc(n * 4), gv: alloc(256 * 4), gc: alloc(256 * 2), lo: alloc(n * 4), hi: alloc(n * 4), t: alloc(n * 4), v: alloc(n * 4), loC: alloc(n * 2), hiC: alloc(n * 2), ch: alloc(n) };
  const have = probe.memory.buffer.byteLength;
  if (top > have) probe.memory.grow(Math.ceil((top - have) / 65536));
  const buf = probe.memory.buffer;
  const f32 = (p: number, len: number) => new Float32Array(buf, p, len);
  const u16 = (p: number, len: number) => new Uint16Array(buf, p, len);
  startVariant = probe.variant;
  startChunks = {
    chunk: n,
    w: f32(at.w, n),
    q: f32(at.q, n),
    gv: f32(at.gv, 256),
    gc: u16(at.gc, 256),
    lo: f32(at.lo, n),
    hi: f32(at.hi, n),
    t: f32(at.t, n),
    v: f32(at.v, n),
    loC: u16(at.loC, n),
    hiC: u16(at.hiC, n),
    ch: new Uint8Array(buf, at.ch, n),
    run: (o, nAff, bs, margin) => x.startAffine(at.w + o * 4, at.q + o * 4, at.gv, at.gc, nAff, at.lo + o * 4, at.hi + o * 4, at.loC + o * 2, at.hiC + o * 2, at.t + o * 4, at.v + o * 4, at.ch + o, bs, margin),
  };
  return startChunks;
}
