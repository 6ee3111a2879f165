/**
 * Fast paths for lowbit's OCP MX schemes (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e2m3, mxfp6_e3m2, mxfp4) and
 * NVFP4 (quant/schemes/{mx,nvfp4}.ts), installed into the scheme registry's fast-path slots by
 * installSchemeFastPaths() (called by installWasmQuantizers(), kernels/ggml-quant.ts, which the entry
 * points call); importing this module installs nothing.
 * The block scales are computed here exactly as the references do; the elements, already scaled in
 * float32 as the references scale them, are rounded by the WebAssembly cast kernel (kernels/cast.ts
 * `encode`, bit-exact with the scalar element encoder: round to nearest even, saturating), then
 * packed. Same bytes as quantizeRef; input holding NaN or infinities goes to the reference (MX
 * schemes give such blocks the NaN scale, NVFP4 reports them).
 */
import { fp4_e2m1fn, fp8_e4m3fn } from '../formats/registry.js';
import { decodeOne } from '../formats/cast.js';
import { registerFastPath } from '../quant/registry.js';
import { mxSchemes, mxSharedExponent, MX_BLOCK, type MxScheme } from '../quant/schemes/mx.js';
import { nvfp4Scheme, NVFP4_BLOCK } from '../quant/schemes/nvfp4.js';
import { packCodes } from '../quant/scheme.js';
import { encode } from './cast.js';

/** elements per chunk (a multiple of 32) */
const CHUNK = 8192;
const F32_MAX = 3.4028234663852886e38;
const SATURATE = { saturate: true };

/** codes (one per byte) of `count` elements -> the schemes' bit-packed layout at out[at] */
function pack(codes: Uint8Array, from: number, count: number, bits: number, out: Uint8Array, at: number): void {
  if (bits === 8) out.set(codes.subarray(from, from + count), at);
  else if (bits === 4) for (let i = 0; i < count; i += 2) out[at + (i >>> 1)] = codes[from + i] | (codes[from + i + 1] << 4);
  else packCodes(codes.subarray(from, from + count), count, bits, out, at);
}

function mxQuantize(s: MxScheme) {
  const el = s.element;
  const format = el.format;
  if (format === 'int8') return undefined; // MXINT8 rounds on its own grid: reference only
  const bpb = s.bytesPerBlock;
  return (src: Float32Array, rows: number, rowLength: number): Uint8Array => {
    const out = new Uint8Array(s.packedBytes(rows, rowLength)); // validates the shape
    if (src.length !== rows * rowLength) return s.quantizeRef(src, rows, rowLength);
    const scaled = new Float32Array(CHUNK);
    const codes = new Uint8Array(CHUNK);
    const special = new Uint8Array(CHUNK / MX_BLOCK);
    for (let c = 0; c < src.length; c += CHUNK) {
      const m = Math.min(CHUNK, src.length - c);
      for (let b = 0; b < m; b += MX_BLOCK) {
        const base = c + b;
        let amax = 0;
        let bad = false;
        for (let i = 0; i < MX_BLOCK; i++) {
          const a = Math.abs(src[base + i]);
          if (!(a <= F32_MAX)) bad = true;
          else if (a > amax) amax = a;
        }
        const at = (base / MX_BLOCK) * bpb;
        special[b / MX_BLOCK] = bad ? 1 : 0;
        if (bad) {
          out[at] = 0xff; // NaN scale, element codes 0
          scaled.fill(0, b, b + MX_BLOCK);
          continue;
        }
        const e = mxSharedExponent(amax, el.emax);
        out[at] = e + 127;
        const inv = 2 ** -e;
        for (let i = 0; i < MX_BLOCK; i++) scaled[b + i] = Math.fround(src[base + i] * inv);
      }
      encode(format, scaled.subarray(0, m), SATURATE, codes);
      for (let b = 0; b < m; b += MX_BLOCK) {
        if (special[b / MX_BLOCK]) continue;
        pack(codes, b, MX_BLOCK, el.bits, out, ((c + b) / MX_BLOCK) * bpb + 1);
      }
    }
    return out;
  };
}

const E2M1_MAX = 6;
const E4M3_MAX = 448;
const NV_HEADER = 4;
const NV_BLOCK_BYTES = 9;

function nvfp4Quantize(src: Float32Array, rows: number, rowLength: number): Uint8Array {
  const s = nvfp4Scheme;
  const out = new Uint8Array(s.packedBytes(rows, rowLength)); // validates the shape
  if (src.length !== rows * rowLength) return s.quantizeRef(src, rows, rowLength);
  let amax = 0;
  for (let i = 0; i < src.length; i++) {
    const a = Math.abs(src[i]);
    if (!(a <= F32_MAX)) return s.quantizeRef(src, rows, rowLength); // reports the value
    amax = Math.max(amax, a);
  }
  const tensorScale = Math.fround(amax / (E2M1_MAX * E4M3_MAX));
  new DataView(out.buffer).setFloat32(0, tensorScale, true);
  if (tensorScale === 0) return out;
  const nBlocks = src.length / NVFP4_BLOCK;
  // block scales: e4m3(bmax / 6 / tensorScale), one kernel call for all blocks
  const want = new Float32Array(nBlocks);
  for (let b = 0; b < nBlocks; b++) {
    const base = b * NVFP4_BLOCK;
    let bmax = 0;
    for (let i = 0; i < NVFP4_BLOCK; i++) bmax = Math.max(bmax, Math.abs(src[base + i]));
    want[b] = Math.fround(Math.fround(bmax / E2M1_MAX) / tensorScale);
  }
  const sc = encode(fp8_e4m3fn, want, SATURATE) as Uint8Array;
  const decoded = new Float32Array(256);
  for (let c = 0; c < 256; c++) decoded[c] = decodeOne(fp8_e4m3fn, c) * tensorScale; // fround on store
  const scaled = new Float32Array(CHUNK);
  const codes = new Uint8Array(CHUNK);
  for (let c = 0; c < src.length; c += CHUNK) {
    const m = Math.min(CHUNK, src.length - c);
    for (let b = 0; b < m; b += NVFP4_BLOCK) {
      const blk = (c + b) / NVFP4_BLOCK;
      const scale = decoded[sc[blk]];
      if (scale === 0) scaled.fill(0, b, b + NVFP4_BLOCK); // the reference leaves the codes 0
      else for (let i = 0; i < NVFP4_BLOCK; i++) scaled[b + i] = Math.fround(src[c + b + i] / scale);
    }
    encode(fp4_e2m1fn, scaled.subarray(0, m), SATURATE, codes);
    for (let b = 0; b < m; b += NVFP4_BLOCK) {
      const blk = (c + b) / NVFP4_BLOCK;
      const at = NV_HEADER + blk * NV_BLOCK_BYTES;
      out[at] = sc[blk];
      pack(codes, b, NVFP4_BLOCK, 4, out, at + 1);
    }
  }
  return out;
}

let installed = false;

/** Install the MX / NVFP4 fast quantizers into the scheme registry (quant/registry.ts), once. */
export function installSchemeFastPaths(): void {
  if (installed) return;
  installed = true;
  for (const s of mxSchemes) {
    const q = mxQuantize(s);
    if (q) registerFastPath(s.id, { quantize: q });
  }
  registerFastPath(nvfp4Scheme.id, { quantize: nvfp4Quantize });
}
