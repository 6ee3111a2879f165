// The WebAssembly cast kernels against the scalar reference (formats/cast.ts), bit for bit, in both
// builds (relaxed SIMD and plain SIMD): every special float32 class, every code of every covered
// format, every rounding boundary (midpoints between neighbouring values, and one float32 ulp either
// side), and random bit patterns; with and without saturation and scale.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocCastArray, decode, encode, fakeQuant, wasmCovers } from '../src/kernels/cast.js';
import { setWasmVariant, wasmVariant } from '../src/kernels/wasm.js';
import { hasRelaxedSimd } from '../src/env.js';
import { decodeRef, encodeRef, fakeQuantRef, allocCodes, type CastOptions } from '../src/formats/cast.js';
import { decodeOne } from '../src/formats/cast.js';
import type { Format } from '../src/formats/descriptor.js';
import { parseFormat } from '../src/formats/registry.js';
import { xorshift32 } from '../src/rng.js';

const FORMATS: Format[] = [
  'fp8_e4m3fn', 'fp8_e4m3fnuz', 'fp8_e5m2', 'fp8_e5m2fnuz', 'fp4_e2m1fn', 'fp6_e2m3fn', 'fp6_e3m2fn',
  'bf16', 'fp16', 'tf32', 'fp32', 'int8', 'int4', 'int2', 'uint8', 'uint4', 'e3m4', 'e2m5', 'e6m9', 'e4m2',
].map((n) => parseFormat(n));
FORMATS.push(
  parseFormat('e4m3', { subnormals: false }),
  parseFormat('e5m2', { specials: 'fn' }),
  parseFormat('e4m3', { specials: 'fnuz', bias: 9 }),
  parseFormat('e3m2', { bias: 1, specials: 'none', subnormals: false }),
  parseFormat('e8m2', { specials: 'none' }),
);

const u32 = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
const bitsToF32 = (bits: number[]) => new Float32Array(new Uint32Array(bits).buffer);

const rng = xorshift32;

const SPECIAL_BITS = [
  0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00800000, 0x80800000, 0x00400000,
  0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff,
  0x3f800000, 0xbf800000, 0x3effffff, 0x3f000000, 0x3f000001, 0x3fc00000, 0x40200000, 0x40600000, 0x4b800000,
];

/** Every positive value of the format when it has few codes, else a sample of them. */
function positives(f: Format): number[] {
  const n = f.bits > 16 ? 2 ** 12 : 2 ** f.bits;
  const step = f.bits > 16 ? 2 ** (f.bits - 12) + 1 : 1;
  const out = new Set<number>();
  for (let i = 0; i < n; i++) {
    const v = decodeOne(f, (i * step) % 2 ** f.bits);
    if (v > 0 && v < Infinity) out.add(v);
  }
  return [...out].sort((a, b) => a - b);
}

/** Input covering every rounding boundary of f: values, midpoints, +-1 float32 ulp, over/underflow edges. */
function boundaryInput(f: Format): Float32Array {
  const vals = positives(f);
  const base: number[] = [0, vals[0] / 2, vals[vals.length - 1] * 1.5, vals[vals.length - 1] * 2, 3.4e38, 1e-45];
  for (let i = 0; i < vals.length; i++) {
    base.push(vals[i]);
    if (i + 1 < vals.length) base.push((vals[i] + vals[i + 1]) / 2);
  }
  base.push(vals[vals.length - 1] + (vals[vals.length - 1] - (vals[vals.length - 2] ?? 0)) / 2);
  const x = new Float32Array(base.length * 6);
  const b = u32(x);
  for (let i = 0; i < base.length; i++) {
    x[6 * i] = base[i];
    const c = b[6 * i];
    b[6 * i + 1] = c + 1;
    b[6 * i + 2] = c === 0 ? 0x80000001 : c - 1;
  }
  for (let i = 0; i < base.length; i++) for (let j = 0; j < 3; j++) x[6 * i + 3 + j] = -x[6 * i + j];
  return x;
}

function randomInput(seed: number, n: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(n);
  const b = u32(x);
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) b[i] = r();
    else x[i] = ((r() / 2 ** 32) * 2 - 1) * 2 ** ((r() % 40) - 20);
  }
  return x;
}

function outcome(fn: () => Float32Array | Uint8Array | Uint16Array | Uint32Array): { bits?: Uint32Array | Uint8Array | Uint16Array; error?: string } {
  try {
    const r = fn();
    return { bits: r instanceof Float32Array ? u32(r) : r };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

function sameAs(what: string, ref: ReturnType<typeof outcome>, fast: ReturnType<typeof outcome>): void {
  if (ref.error !== undefined || fast.error !== undefined) {
    assert.equal(fast.error, ref.error, `${what}: errors differ`);
    return;
  }
  const a = ref.bits!;
  const b = fast.bits!;
  assert.equal(b.length, a.length, `${what}: lengths`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) assert.fail(`${what}: element ${i}: reference 0x${a[i].toString(16)}, kernel 0x${b[i].toString(16)}`);
  }
}

function optionSets(f: Format): CastOptions[] {
  const sets: CastOptions[] = [];
  for (const scale of [1, 0.1, 0.375, 3])
    for (const saturate of f.hasInf || f.hasNaN ? [true, false] : [true]) sets.push({ saturate, scale, nanToZero: !f.hasNaN });
  return sets;
}

const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

/** Run `fast` under each build (relaxed and plain SIMD) and compare with the reference outcome. */
function eachVariant(what: string, ref: ReturnType<typeof outcome>, fast: () => Float32Array | Uint8Array | Uint16Array | Uint32Array): void {
  for (const v of variants) {
    setWasmVariant(v);
    try {
      assert.equal(wasmVariant(), v);
      sameAs(`${what} [${v}]`, ref, outcome(fast));
    } finally {
      setWasmVariant(undefined);
    }
  }
}

test(`cast kernels (${variants.join(' and ')} SIMD) match the reference bit for bit`, () => {
  let covered = 0;
  for (const f of FORMATS) {
    const x = new Float32Array([...bitsToF32(SPECIAL_BITS), ...boundaryInput(f), ...randomInput(f.bits * 7919, 4099)]);
    if (wasmCovers(f, 'fakeQuant')) covered++;
    for (const o of optionSets(f)) {
      const what = `${f.name} ${JSON.stringify(o)}`;
      eachVariant(`fakeQuant ${what}`, outcome(() => fakeQuantRef(f, x, o)), () => fakeQuant(f, x, o));
      if (f.bits <= 16) eachVariant(`encode ${what}`, outcome(() => encodeRef(f, x, o)), () => encode(f, x, o));
    }
    if (f.bits <= 16) {
      const codes = allocCodes(f, 2 ** f.bits);
      for (let c = 0; c < codes.length; c++) codes[c] = c;
      for (const scale of [1, 0.1, 3])
        eachVariant(`decode ${f.name} scale ${scale}`, outcome(() => decodeRef(f, codes, undefined, scale)), () => decode(f, codes, undefined, scale));
    }
  }
  assert.ok(covered >= 20, `the kernel covers ${covered} of ${FORMATS.length} test formats`);
});

test('cast kernels cover the required formats', () => {
  for (const name of ['fp8_e4m3fn', 'fp8_e5m2', 'fp4_e2m1fn', 'fp6_e2m3fn', 'fp6_e3m2fn', 'bf16', 'fp16', 'int8', 'uint4', 'e3m4']) {
    const f = parseFormat(name);
    for (const op of ['fakeQuant', 'encode', 'decode'] as const) assert.ok(wasmCovers(f, op), `${name} ${op}`);
  }
  assert.ok(!wasmCovers(parseFormat('fp8_e4m3fn'), 'fakeQuant', 5), 'stochastic rounding stays on the reference');
});

test('cast kernels: NaN into a format without NaN, and codes out of range, fail like the reference', () => {
  const f = parseFormat('fp4_e2m1fn');
  const x = new Float32Array(40000).fill(1);
  x[33333] = NaN;
  assert.throws(() => fakeQuant(f, x), /NaN in input/);
  assert.throws(() => encode(f, x), /NaN in input/);
  const int8 = parseFormat('int8');
  assert.throws(() => fakeQuant(int8, x), /NaN in input/);
  const codes = new Uint8Array(100);
  codes[77] = 16;
  assert.throws(() => decode(f, codes), /does not fit in 4 bits/);
});

test('cast kernels: long arrays, odd lengths, subarrays and explicit outputs', () => {
  const f = parseFormat('fp8_e4m3fn');
  const big = randomInput(5, 50001);
  for (const [s, e] of [[0, 50001], [3, 40000], [1, 18]] as const) {
    const x = big.subarray(s, e);
    sameAs(`fakeQuant [${s},${e})`, outcome(() => fakeQuantRef(f, x, { nanToZero: true })), outcome(() => fakeQuant(f, x, {}, new Float32Array(x.length))));
    const out = new Uint8Array(x.length + 5).subarray(5);
    sameAs(`encode [${s},${e})`, outcome(() => encodeRef(f, x)), outcome(() => encode(f, x, {}, out)));
  }
  // in place
  const x = big.slice(0, 1000);
  const want = fakeQuantRef(f, x);
  fakeQuant(f, x, {}, x);
  assert.deepEqual(u32(x), u32(want));
});

test('cast kernels: zero-copy fake quantization of arrays in kernel memory', () => {
  for (const name of ['fp8_e4m3fn', 'bf16', 'int8', 'fp8_e4m3fnuz']) {
    const f = parseFormat(name);
    const x = new Float32Array([...bitsToF32(SPECIAL_BITS), ...boundaryInput(f).subarray(0, 3000), ...randomInput(11, 1001)]);
    for (const o of [{ nanToZero: true }, { nanToZero: true, scale: 0.1 }]) {
      const want = fakeQuantRef(f, x, o);
      const a = allocCastArray(x.length + 7);
      const view = a.subarray(3, 3 + x.length);
      view.set(x);
      fakeQuant(f, view, o, view);
      sameAs(`${name} in place`, { bits: u32(want) }, { bits: u32(view) });
      assert.equal(a[0], 0);
      assert.equal(a[x.length + 3], 0, 'values after the view are untouched');
      const b = allocCastArray(x.length);
      fakeQuant(f, x, o, b);
      sameAs(`${name} into kernel memory`, { bits: u32(want) }, { bits: u32(b) });
    }
  }
  const nan = allocCastArray(100);
  nan[50] = NaN;
  assert.throws(() => fakeQuant(parseFormat('int8'), nan, {}, nan), /NaN in input/);
});

/**
 * Values every element of which the kernels' fast paths take (16 at a time): no NaN and, for minifloats,
 * magnitudes <= maxFinite (ints clamp anything but NaN); the rounding boundaries of the format (ties,
 * +-1 ulp), zeros of both signs, float32 subnormals and random values of every binade, in a seeded
 * shuffle so that blocks mix signs, binades and subnormals.
 */
function fastPathInput(f: Format, seed: number): Float32Array {
  const r = rng(seed);
  const max = f.kind === 'float' ? f.maxFinite : Infinity;
  const pool = [...bitsToF32(SPECIAL_BITS), ...boundaryInput(f)];
  const extra = new Float32Array(20000);
  const b = u32(extra);
  for (let i = 0; i < extra.length; i++) {
    const sign = r() & 0x80000000;
    if (i % 4 === 0) b[i] = sign | (r() & 0x7fffff); // float32 subnormal
    else if (i % 4 === 1) b[i] = sign | ((r() % 255) << 23) | (r() & 0x7fffff); // any binade
    else extra[i] = ((r() / 2 ** 32) * 2 - 1) * 2 ** ((r() % 24) - 12);
  }
  pool.push(...extra, 0, -0, max, -max);
  const keep = pool.filter((v) => Math.abs(v) <= max);
  for (let i = keep.length - 1; i > 0; i--) {
    const j = r() % (i + 1);
    [keep[i], keep[j]] = [keep[j], keep[i]];
  }
  return new Float32Array(keep);
}

test('cast kernels: the fast paths (blocks of values in range) match the reference bit for bit', () => {
  for (const f of FORMATS) {
    if (!wasmCovers(f, 'fakeQuant')) continue;
    const x = fastPathInput(f, f.bits * 104729 + f.manBits);
    assert.ok(x.length > 1000 && x.every((v) => v === v), `${f.name}: input`);
    for (const saturate of f.hasInf || f.hasNaN ? [true, false] : [true]) {
      const o = { saturate };
      const what = `fakeQuant fast path ${f.name} ${JSON.stringify(o)}`;
      eachVariant(what, outcome(() => fakeQuantRef(f, x, o)), () => fakeQuant(f, x, o));
      // the same through the plain-array chunks at an odd offset, and in kernel memory
      const y = x.subarray(5);
      eachVariant(`${what} offset 5`, outcome(() => fakeQuantRef(f, y, o)), () => fakeQuant(f, y, o, new Float32Array(y.length)));
      eachVariant(`${what} in kernel memory`, outcome(() => fakeQuantRef(f, x, o)), () => {
        const a = allocCastArray(x.length);
        a.set(x);
        return fakeQuant(f, a, o, a);
      });
    }
  }
});
