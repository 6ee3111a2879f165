/**
 * OCP Microscaling (MX) formats, OCP MX specification v1.0 (Sept 2023), sections 5 and 6.3.
 *
 * A block of k = 32 elements V_i shares one scale X stored as E8M0 (2^(E - 127), 0xFF = NaN):
 *
 *   shared_exp = floor(log2(max_i |V_i|)) - emax_elem        (clamped to the E8M0 range [-127, 127])
 *   X          = 2^shared_exp
 *   P_i        = quantize_to_element_format(V_i / X)         (round to nearest even, saturating to ±max)
 *
 * (The reference emulation library microsoft/microxcaling defaults to ties-away-from-zero for its
 * "nearest" mode; ties are rare on real data. Its shared-exponent clamp matches the one here: overflow
 * -> NaN scale, underflow -> 2^-127.)
 *
 * emax_elem is the exponent of the element type's largest normal number:
 *   FP8 E4M3 448 = 1.75 * 2^8 -> 8;  FP8 E5M2 57344 = 1.75 * 2^15 -> 15;  FP6 E2M3 7.5 = 1.875 * 2^2 -> 2;
 *   FP6 E3M2 28 = 1.75 * 2^4 -> 4;   FP4 E2M1 6 = 1.5 * 2^2 -> 2;         INT8 (1.6 fixed point) -> 0.
 * A decoded element is X * P_i. MXINT8 elements are two's complement int8 with an implicit scale of
 * 2^-6 (values k/64, k in [-128, 127]); the quantizer clamps to the symmetric range [-127, 127] as the
 * reference emulation library (microsoft/microxcaling) does; code 0x80 decodes to -2.
 *
 * Special cases (chosen as the spec and its reference emulation define them):
 *   - amax = 0: log2(0) is undefined; the scale exponent is then the smallest, X = 2^-127 (byte 0x00),
 *     and every element is +0.
 *   - a block holding NaN or ±inf gets the NaN scale 0xFF (X = NaN); the spec makes every element of a
 *     block with a NaN scale NaN, so the whole block decodes to NaN. Element codes are written as 0.
 *   - decoding: X = NaN -> all NaN; element NaN/inf (e5m2, e4m3 NaN codes) decode to NaN/inf.
 *
 * Packed layout of one block (blocks in row order, a row holds rowLength / 32 blocks):
 *   byte 0        E8M0 scale
 *   bytes 1..     32 element codes, bit-packed little-endian:
 *                   FP8 / INT8: one byte each (32 bytes)            -> 33 bytes per block, 8.25 bpw
 *                   FP6: four codes per three bytes (e0 | e1<<6 | e2<<12 | e3<<18, 24 bytes)
 *                                                                   -> 25 bytes per block, 6.25 bpw
 *                   FP4: two codes per byte, low nibble first (16 bytes) -> 17 bytes, 4.25 bpw
 * (ggml's MXFP4 block has the same 17 bytes but puts element j and j + 16 in one byte: `ggml_mxfp4`.)
 */
import { encodeOne, decodeOne } from '../../formats/cast.js';
import type { Format } from '../../formats/descriptor.js';
import { floorLog2 } from '../../formats/float.js';
import { fp4_e2m1fn, fp6_e2m3fn, fp6_e3m2fn, fp8_e4m3fn, fp8_e5m2 } from '../../formats/registry.js';
import { Rounding } from '../../formats/rounding.js';
import { checkPackedLength, checkShape, packCodes, packedCodeBytes, unpackCodes, type QuantScheme } from '../scheme.js';

export const MX_BLOCK = 32;
const SCALE_EMIN = -127;
const SCALE_EMAX = 127;
const SCALE_NAN = 0xff;

export interface MxElement {
  /** element format, or 'int8' for MXINT8 */
  readonly format: Format | 'int8';
  readonly bits: number;
  /** exponent of the largest normal element value */
  readonly emax: number;
}

const LOWERED = { rounding: Rounding.NearestEven, saturate: true, nanToZero: false };

/** The shared exponent of a block with largest magnitude amax (finite): floor(log2 amax) - emax, clamped. */
export function mxSharedExponent(amax: number, emax: number): number {
  if (amax === 0) return SCALE_EMIN;
  const e = floorLog2(amax) - emax;
  return e < SCALE_EMIN ? SCALE_EMIN : e > SCALE_EMAX ? SCALE_EMAX : e;
}

function encodeElement(el: MxElement, v: number): number {
  if (el.format === 'int8') {
    // v in units of 2^-6, round half to even, clamp to the symmetric range
    const n = v * 64;
    let q = Math.round(n);
    if (Math.abs(n - Math.trunc(n)) === 0.5) q = 2 * Math.round(n / 2);
    if (q > 127) q = 127;
    else if (q < -127) q = -127;
    return q & 0xff;
  }
  return encodeOne(el.format, v, LOWERED, 0);
}

function decodeElement(el: MxElement, code: number): number {
  if (el.format === 'int8') return (code >= 128 ? code - 256 : code) / 64;
  return decodeOne(el.format, code);
}

/** An MX scheme, with its element for fast paths (kernels/scheme-quant.ts). */
export interface MxScheme extends QuantScheme {
  readonly element: MxElement;
}

export function makeMxScheme(id: string, name: string, el: MxElement, description: string): MxScheme {
  const codeBytes = packedCodeBytes(MX_BLOCK, el.bits);
  const bytesPerBlock = 1 + codeBytes;
  const scheme: MxScheme = {
    id,
    name,
    description,
    element: el,
    family: 'mx',
    blockSize: MX_BLOCK,
    bytesPerBlock,
    bitsPerWeight: (bytesPerBlock * 8) / MX_BLOCK,
    tensorScoped: false,
    packedBytes(rows, rowLength) {
      checkShape(scheme, rows * rowLength, rows, rowLength);
      return ((rows * rowLength) / MX_BLOCK) * bytesPerBlock;
    },
    quantizeRef(src, rows, rowLength) {
      checkShape(scheme, src.length, rows, rowLength);
      const nBlocks = src.length / MX_BLOCK;
      const out = new Uint8Array(nBlocks * bytesPerBlock);
      const codes = new Uint8Array(MX_BLOCK);
      for (let b = 0; b < nBlocks; b++) {
        const base = b * MX_BLOCK;
        let amax = 0;
        let special = false;
        for (let i = 0; i < MX_BLOCK; i++) {
          const a = Math.abs(src[base + i]);
          if (!(a <= 3.4028234663852886e38)) special = true; // NaN or inf
          else if (a > amax) amax = a;
        }
        const at = b * bytesPerBlock;
        if (special) {
          out[at] = SCALE_NAN;
          continue; // element codes stay 0
        }
        const e = mxSharedExponent(amax, el.emax);
        out[at] = e + 127;
        const inv = 2 ** -e; // V / X = V * 2^-e (exact unless it underflows)
        for (let i = 0; i < MX_BLOCK; i++) codes[i] = encodeElement(el, Math.fround(src[base + i] * inv));
        packCodes(codes, MX_BLOCK, el.bits, out, at + 1);
      }
      return out;
    },
    dequantizeRef(packed, rows, rowLength, out) {
      checkShape(scheme, rows * rowLength, rows, rowLength);
      const n = rows * rowLength;
      const nBlocks = n / MX_BLOCK;
      checkPackedLength(name, packed, nBlocks * bytesPerBlock);
      const dst = out ?? new Float32Array(n);
      const codes = new Uint8Array(MX_BLOCK);
      for (let b = 0; b < nBlocks; b++) {
        const at = b * bytesPerBlock;
        const E = packed[at];
        const base = b * MX_BLOCK;
        if (E === SCALE_NAN) {
          dst.fill(NaN, base, base + MX_BLOCK);
          continue;
        }
        const X = 2 ** (E - 127);
        unpackCodes(packed, at + 1, MX_BLOCK, el.bits, codes);
        for (let i = 0; i < MX_BLOCK; i++) dst[base + i] = decodeElement(el, codes[i]) * X;
      }
      return dst;
    },
  };
  return Object.freeze(scheme);
}

export const mxSchemes: readonly MxScheme[] = [
  makeMxScheme('mxfp8_e4m3', 'MXFP8 (E4M3)', { format: fp8_e4m3fn, bits: 8, emax: 8 }, 'OCP MX v1.0: 32 x FP8 E4M3 + E8M0 scale'),
  makeMxScheme('mxfp8_e5m2', 'MXFP8 (E5M2)', { format: fp8_e5m2, bits: 8, emax: 15 }, 'OCP MX v1.0: 32 x FP8 E5M2 + E8M0 scale'),
  makeMxScheme('mxfp6_e2m3', 'MXFP6 (E2M3)', { format: fp6_e2m3fn, bits: 6, emax: 2 }, 'OCP MX v1.0: 32 x FP6 E2M3 (4 per 3 bytes) + E8M0 scale'),
  makeMxScheme('mxfp6_e3m2', 'MXFP6 (E3M2)', { format: fp6_e3m2fn, bits: 6, emax: 4 }, 'OCP MX v1.0: 32 x FP6 E3M2 (4 per 3 bytes) + E8M0 scale'),
  makeMxScheme('mxfp4', 'MXFP4', { format: fp4_e2m1fn, bits: 4, emax: 2 }, 'OCP MX v1.0: 32 x FP4 E2M1 (low nibble first) + E8M0 scale'),
  makeMxScheme('mxint8', 'MXINT8', { format: 'int8', bits: 8, emax: 0 }, 'OCP MX v1.0: 32 x INT8 (1.6 fixed point) + E8M0 scale'),
];

export { decodeElement as mxDecodeElement };
