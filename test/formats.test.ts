import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allocCodes, decodeRef, encodeRef, fakeQuantRef, type CastOptions } from '../src/formats/cast.js';
import type { Format } from '../src/formats/descriptor.js';
import { decodeFloat, isCanonicalFloatCode } from '../src/formats/float.js';
import { formats, parseFormat } from '../src/formats/registry.js';
import { bf16ToF32, bf16ToF32Row, f16BitsTable, f16ToF32, f16ToF32Row, f32ToBf16, f32ToBf16Row, f32ToF16, f32ToF16Row } from '../src/formats/half.js';
import { LowbitError } from '../src/errors.js';

const fmt = (n: string) => parseFormat(n);
const q = (f: Format | string, x: number, o: CastOptions = {}) =>
  fakeQuantRef(typeof f === 'string' ? fmt(f) : f, new Float32Array([x]), o)[0];
const code = (f: string, x: number, o: CastOptions = {}) => encodeRef(fmt(f), new Float32Array([x]), o)[0];

const generic = ['e3m4', 'e5m10', 'e4m3', 'e2m2', 'e6m5'].map((n) => parseFormat(n));
const extra = [
  parseFormat('e4m3', { specials: 'fn', bias: 7 }),
  parseFormat('e3m3', { subnormals: false }),
  parseFormat('e4m3', { specials: 'fnuz', bias: 8 }),
  parseFormat('e3m2', { specials: 'none' }),
];

test('exhaustive: every code of every format of <= 19 bits decodes and re-encodes to itself', () => {
  for (const f of [...formats, ...generic, ...extra]) {
    if (f.bits > 19) continue;
    const n = 2 ** f.bits;
    const codes = Array.from({ length: n }, (_, c) => c);
    const values = decodeRef(f, f.kind === 'codebook' ? codes.filter((c) => c < f.levels.length) : codes);
    const back = encodeRef(f, values);
    let checked = 0;
    let nan = 0;
    const seen = new Set<number>();
    for (let c = 0; c < values.length; c++) {
      const v = values[c];
      if (v !== v) {
        nan++;
        assert.ok(f.hasNaN, `${f.name}: code ${c} decodes to NaN but the format has no NaN`);
        assert.ok(Number.isNaN(decodeRef(f, [back[c]])[0]), `${f.name}: NaN re-encodes to a non-NaN code`);
        continue;
      }
      if (f.kind === 'float' && !isCanonicalFloatCode(f, c)) continue;
      if (f.kind === 'codebook' && seen.has(v)) continue; // duplicate level: lowest code wins
      seen.add(v);
      assert.equal(back[c], c, `${f.name}: code 0x${c.toString(16)} (${v}) re-encodes to 0x${back[c].toString(16)}`);
      checked++;
    }
    if (f.kind === 'float') {
      // finite values counted once for ±0
      const distinct = new Set(Array.from(values).filter((v) => v === v && Math.abs(v) !== Infinity).map((v) => (v === 0 ? 0 : v)));
      assert.equal(distinct.size, f.finiteCount, `${f.name}: finiteCount`);
      if (!f.hasNaN) assert.equal(nan, 0);
    }
    assert.ok(checked > 0);
  }
});

test('fp32: random bit patterns round-trip unchanged', () => {
  const f = fmt('fp32');
  const u = new Uint32Array(100000);
  let s = 12345;
  for (let i = 0; i < u.length; i++) u[i] = s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  const x = new Float32Array(u.buffer);
  const y = fakeQuantRef(f, x, { saturate: false });
  const yu = new Uint32Array(y.buffer);
  for (let i = 0; i < x.length; i++) if (x[i] === x[i]) assert.equal(yu[i], u[i]);
});

test('limits match the OCP FP8 and MX v1.0 specifications', () => {
  const expect: Record<string, [number, number, number]> = {
    fp8_e4m3fn: [448, 2 ** -6, 2 ** -9],
    fp8_e5m2: [57344, 2 ** -14, 2 ** -16],
    fp8_e4m3fnuz: [240, 2 ** -7, 2 ** -10],
    fp8_e5m2fnuz: [57344, 2 ** -15, 2 ** -17],
    fp6_e2m3fn: [7.5, 1, 0.125],
    fp6_e3m2fn: [28, 0.25, 0.0625],
    fp4_e2m1fn: [6, 1, 0.5],
    e8m0: [2 ** 127, 2 ** -127, 2 ** -127],
    fp16: [65504, 2 ** -14, 2 ** -24],
    bf16: [(2 - 2 ** -7) * 2 ** 127, 2 ** -126, 2 ** -133],
    tf32: [(2 - 2 ** -10) * 2 ** 127, 2 ** -126, 2 ** -136],
    int4: [7, 1, 1],
    uint8: [255, 1, 1],
    nf4: [1, 0.07958029955625534, 0.07958029955625534],
  };
  for (const [name, [max, minNormal, minSub]] of Object.entries(expect)) {
    const f = fmt(name);
    assert.equal(f.maxFinite, max, `${name} max`);
    assert.equal(f.minNormal, Math.fround(minNormal), `${name} min normal`);
    assert.equal(f.minSubnormal, Math.fround(minSub), `${name} min subnormal`);
  }
  const e4 = fmt('fp8_e4m3fn');
  assert.equal(e4.hasInf, false);
  assert.equal(e4.hasNaN, true);
  assert.equal(decodeFloat(e4 as never, 0x7f), NaN);
  assert.equal(decodeFloat(e4 as never, 0xff), NaN);
  assert.equal(decodeFloat(e4 as never, 0x7e), 448);
  assert.equal(decodeFloat(fmt('fp8_e5m2') as never, 0x7c), Infinity);
  assert.equal(decodeFloat(fmt('e8m0') as never, 0xff), NaN);
  assert.equal(decodeFloat(fmt('e8m0') as never, 127), 1);
  assert.equal(decodeFloat(fmt('fp8_e4m3fnuz') as never, 0x80), NaN);
});

test('rounding table: fp8_e4m3fn', () => {
  const F = 'fp8_e4m3fn';
  // 1 + 1/16 lies halfway between 1.000 (0b0_0111_000) and 1.125 (0b0_0111_001)
  const tie = 1 + 1 / 16;
  assert.equal(code(F, tie), 0b0_0111_000, 'tie to even: down');
  assert.equal(code(F, tie, { rounding: 'nearest-away' }), 0b0_0111_001, 'tie away');
  assert.equal(code(F, tie, { rounding: 'toward-zero' }), 0b0_0111_000);
  assert.equal(code(F, tie, { rounding: 'up' }), 0b0_0111_001);
  assert.equal(code(F, tie, { rounding: 'down' }), 0b0_0111_000);
  assert.equal(code(F, 1 + 3 / 16), 0b0_0111_010, 'tie to even: up');
  assert.equal(code(F, -tie, { rounding: 'up' }), 0b1_0111_000, '-1.0625 up -> -1');
  assert.equal(code(F, -tie, { rounding: 'down' }), 0b1_0111_001, '-1.0625 down -> -1.125');
  assert.equal(code(F, -tie, { rounding: 'toward-zero' }), 0b1_0111_000);
  // subnormals: quantum 2^-9
  assert.equal(code(F, 2 ** -10), 0b0_0000_000, 'half the smallest subnormal ties to zero');
  assert.equal(code(F, 2 ** -10, { rounding: 'nearest-away' }), 0b0_0000_001);
  assert.equal(code(F, 1.5 * 2 ** -10), 0b0_0000_001);
  assert.equal(code(F, 2 ** -11), 0, 'underflow to zero');
  assert.equal(code(F, 2 ** -11, { rounding: 'up' }), 0b0_0000_001, 'up never underflows to zero');
  assert.equal(code(F, -(2 ** -11)), 0b1_0000_000, 'negative underflow keeps the sign: -0');
  assert.equal(code(F, 2 ** -6 - 2 ** -10), 0b0_0001_000, '7.5 subnormal quanta tie up to the smallest normal');
  assert.equal(code(F, 3 * 2 ** -10), 0b0_0000_010, '1.5 quanta tie to even 2');
  // saturation: 464 is halfway between 448 and 480 (480 does not exist: 0x7F is NaN)
  assert.equal(code(F, 464), 0b0_1111_110, 'tie to even stays at max');
  assert.equal(code(F, 464, { rounding: 'nearest-away' }), 0b0_1111_110, 'saturate');
  assert.equal(code(F, 464, { rounding: 'nearest-away', saturate: false }), 0b0_1111_111, 'overflow -> NaN');
  assert.equal(code(F, 1e6), 0b0_1111_110);
  assert.equal(code(F, -1e6), 0b1_1111_110);
  assert.equal(code(F, 1e6, { saturate: false }), 0b0_1111_111);
  assert.equal(code(F, 1e6, { saturate: false, rounding: 'toward-zero' }), 0b0_1111_110, 'toward zero never overflows');
  assert.equal(code(F, Infinity), 0b0_1111_110, 'inf saturates');
  assert.equal(code(F, NaN), 0b0_1111_111);
  assert.equal(code(F, -0), 0b1_0000_000, '-0 kept');
  assert.ok(Object.is(q(F, -0), -0));
});

test('rounding table: fp8_e5m2 (IEEE overflow), fnuz, e8m0, fp4, fp6', () => {
  // max 57344 = 1.11b * 2^15; 61440 = halfway to 2^16 -> RNE carries to the inf exponent
  assert.equal(code('fp8_e5m2', 61440, { saturate: false }), 0b0_11111_00, 'RNE overflow -> +inf');
  assert.equal(code('fp8_e5m2', 61439, { saturate: false }), 0b0_11110_11);
  assert.equal(code('fp8_e5m2', 61440), 0b0_11110_11, 'saturate');
  assert.equal(code('fp8_e5m2', -Infinity, { saturate: false }), 0b1_11111_00);
  assert.equal(code('fp8_e5m2', -Infinity), 0b1_11111_00, 'inf stays inf in a format with inf');
  assert.equal(code('fp8_e5m2', 1e9, { saturate: false, rounding: 'toward-zero' }), 0b0_11110_11);
  assert.equal(code('fp8_e5m2', -1e9, { saturate: false, rounding: 'up' }), 0b1_11110_11, 'up: -huge -> -max');
  assert.equal(code('fp8_e5m2', -1e9, { saturate: false, rounding: 'down' }), 0b1_11111_00, 'down: -huge -> -inf');
  assert.equal(code('fp8_e4m3fnuz', -0), 0, 'fnuz has no -0');
  assert.equal(code('fp8_e4m3fnuz', -(2 ** -12)), 0, 'negative underflow -> +0 in fnuz');
  assert.equal(code('fp8_e4m3fnuz', NaN), 0x80);
  assert.equal(code('fp8_e4m3fnuz', 1e6, { saturate: false }), 0x80);
  // e8m0: powers of two; 3 is halfway between 2 and 4 -> ties to even exponent code? integer n=1.5 -> 2 (even) -> 4
  assert.equal(code('e8m0', 3), 129);
  assert.equal(code('e8m0', 2.9), 128);
  assert.equal(code('e8m0', 0), 0, 'no zero: the smallest value 2^-127');
  assert.equal(code('e8m0', 2 ** 130), 254, 'saturate to 2^127');
  assert.equal(code('e8m0', 2 ** 130, { saturate: false }), 255, 'overflow -> NaN');
  // e2m1 grid 0 .5 1 1.5 2 3 4 6
  const e2m1 = [0.25, 0.75, 1.25, 2.5, 3.5, 5, 7, -5, 100];
  assert.deepEqual(e2m1.map((x) => q('fp4_e2m1fn', x)), [0, 1, 1, 2, 4, 4, 6, -4, 6]);
  assert.deepEqual(e2m1.map((x) => q('fp4_e2m1fn', x, { rounding: 'nearest-away' })), [0.5, 1, 1.5, 3, 4, 6, 6, -6, 6]);
  assert.equal(code('fp4_e2m1fn', -0), 0b1_00_0);
  assert.equal(q('fp6_e2m3fn', 7.6), 7.5);
  assert.equal(q('fp6_e3m2fn', 30), 28);
  assert.equal(q('fp6_e3m2fn', 0.0625 * 1.5), 0.125, 'subnormal tie to even');
  assert.throws(() => q('fp4_e2m1fn', 1, { saturate: false }), LowbitError);
  assert.throws(() => q('fp4_e2m1fn', NaN), /NaN/);
  assert.equal(q('fp4_e2m1fn', NaN, { nanToZero: true }), 0);
});

test('rounding table: integers and codebooks', () => {
  assert.deepEqual([2.5, 3.5, -2.5, -0.5, 7.6, -8.5, -100, 0.49].map((x) => q('int4', x)), [2, 4, -2, 0, 7, -8, -8, 0]);
  assert.deepEqual([2.5, -2.5].map((x) => q('int4', x, { rounding: 'nearest-away' })), [3, -3]);
  assert.deepEqual([2.1, -2.1].map((x) => q('int4', x, { rounding: 'up' })), [3, -2]);
  assert.deepEqual([2.9, -2.9].map((x) => q('int4', x, { rounding: 'down' })), [2, -3]);
  assert.deepEqual([2.9, -2.9].map((x) => q('int4', x, { rounding: 'toward-zero' })), [2, -2]);
  assert.equal(code('int4', -1), 0b1111, 'two\'s complement pattern');
  assert.equal(code('int4', -8), 0b1000);
  assert.deepEqual([-3, 300, 3.5].map((x) => q('uint8', x)), [0, 255, 4]);
  assert.equal(q('int8', 10, { scale: 0.5 }), 10);
  assert.equal(q('int8', 1000, { scale: 0.5 }), 63.5, 'saturates at 127 * scale');
  assert.throws(() => q('int8', 1, { saturate: false }), /--no-saturate/);
  // nf4: nearest level; exact zero
  assert.equal(code('nf4', 0), 7);
  assert.equal(code('nf4', 1), 15);
  assert.equal(code('nf4', -2), 0);
  assert.equal(q('nf4', 0.03), 0);
  assert.equal(q('nf4', 0.05), Math.fround(0.07958029955625534));
  assert.equal(q('nf4', 0.05, { rounding: 'down' }), 0);
  const user = parseFormat('codebook:-1,0,0.5,2');
  assert.equal(q(user, 1.2), 0.5);
  assert.equal(q(user, 1.3), 2);
  assert.equal(q(user, 1.25), 0.5, 'tie goes to the even code: 0.5 is code 2, 2 is code 3');
});

test('fp16 and bf16 agree bit for bit with independent bit-level conversions (and Float16Array where present)', () => {
  const f16 = fmt('fp16');
  const b16 = fmt('bf16');
  const n = 200000;
  const u = new Uint32Array(n);
  let s = 987654321;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // spread exponents around the fp16 range and include specials
    u[i] = i < 64 ? [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x477fefff, 0x477ff000, 0x33000000, 0x33000001, 0x387fc000][i % 10] : (s & 0x807fffff) | (((s >>> 23) % 60 + 90) << 23);
  }
  const x = new Float32Array(u.buffer);
  const c16 = encodeRef(f16, x, { saturate: false });
  const cb = encodeRef(b16, x, { saturate: false });
  const F16 = (globalThis as { Float16Array?: Float32ArrayConstructor }).Float16Array;
  const plat = F16 ? new Uint16Array(new F16(x).buffer) : undefined;
  for (let i = 0; i < n; i++) {
    if (x[i] !== x[i]) {
      assert.ok(Number.isNaN(f16ToF32(c16[i])));
      continue;
    }
    assert.equal(c16[i], f32ToF16(x[i]), `fp16 of ${x[i]}`);
    assert.equal(cb[i], f32ToBf16(x[i]), `bf16 of ${x[i]}`);
    if (plat) assert.equal(c16[i], plat[i]);
    assert.equal(decodeRef(f16, [c16[i]])[0], f16ToF32(c16[i]));
    assert.equal(decodeRef(b16, [cb[i]])[0], bf16ToF32(cb[i]));
  }
});

test('stochastic rounding is unbiased within a stated bound and reproducible', () => {
  const f = fmt('fp8_e4m3fn');
  const v = 1 + 1 / 32; // a quarter of the way from 1 to 1.125
  const n = 200000;
  const x = new Float32Array(n).fill(v);
  const y = fakeQuantRef(f, x, { rounding: 'stochastic', seed: 7 });
  let sum = 0;
  let ups = 0;
  for (const t of y) {
    sum += t;
    if (t > v) ups++;
    assert.ok(t === 1 || t === 1.125);
  }
  // each draw has sd 0.125 * sqrt(p (1 - p)), p = 1/4; allow 5 standard errors
  const se = (0.125 * Math.sqrt(0.25 * 0.75)) / Math.sqrt(n);
  assert.ok(Math.abs(sum / n - v) < 5 * se, `mean ${sum / n} vs ${v} (5 se = ${5 * se})`);
  assert.ok(Math.abs(ups / n - 0.25) < 5 * Math.sqrt((0.25 * 0.75) / n));
  const again = fakeQuantRef(f, x, { rounding: 'stochastic', seed: 7 });
  assert.deepEqual(again, y, 'same seed -> same bytes');
  const other = fakeQuantRef(f, x, { rounding: 'stochastic', seed: 8 });
  assert.notDeepEqual(other, y, 'another seed -> other draws');
  // chunking does not change the draws
  const head = fakeQuantRef(f, x.subarray(0, 1000), { rounding: 'stochastic', seed: 7 });
  const tail = fakeQuantRef(f, x.subarray(1000, 2000), { rounding: 'stochastic', seed: 7, offset: 1000 });
  assert.deepEqual([...head, ...tail], [...y.subarray(0, 2000)]);
  // integers and codebooks too
  const yi = fakeQuantRef(fmt('int4'), new Float32Array(n).fill(0.3), { rounding: 'stochastic', seed: 1 });
  const mi = yi.reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(mi - 0.3) < 5 * Math.sqrt(0.21 / n), `int4 mean ${mi}`);
  const yc = fakeQuantRef(fmt('nf4'), new Float32Array(n).fill(0.2), { rounding: 'stochastic', seed: 1 });
  const mc = yc.reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(mc - Math.fround(0.2)) < 5 * (0.09 / Math.sqrt(n)), `nf4 mean ${mc}`);
});

test('generic eXmY formats and options', () => {
  const e3m4 = parseFormat('e3m4');
  assert.equal(e3m4.bits, 8);
  assert.equal(e3m4.bias, 3);
  assert.equal(e3m4.maxFinite, (2 - 2 ** -4) * 2 ** 3);
  const e5m10 = parseFormat('e5m10');
  assert.equal(e5m10, parseFormat('fp16'), 'e5m10 is fp16');
  const nosub = parseFormat('e4m3', { subnormals: false, specials: 'fn', bias: 7 });
  assert.equal(q(nosub, 2 ** -7), 0, 'no subnormals: half of min normal ties to 0');
  assert.equal(q(nosub, 0.75 * 2 ** -6), 2 ** -6);
  assert.equal(parseFormat('e4m3', { bias: 4 }).maxFinite, (2 - 2 ** -3) * 2 ** 10);
  assert.throws(() => parseFormat('fp8_e4m3fn', { bias: 3 }), /generic/);
  assert.throws(() => parseFormat('int9x'), /unknown format 'int9x'.*fp8_e4m3fn/);
  assert.throws(() => parseFormat('codebook:1,x'), /not a finite/);
  assert.throws(() => fakeQuantRef(fmt('int8'), new Float32Array(1), { scale: 0 }), /scale/);
  assert.throws(() => fakeQuantRef(fmt('int8'), new Float32Array(1), { rounding: 'sideways' as never }), /rounding/);
  const codes = allocCodes(fmt('tf32'), 3);
  assert.ok(codes instanceof Uint32Array);
});

test('scale: x / scale rounded to f32, decoded value times scale', () => {
  const f = fmt('fp8_e4m3fn');
  const s = 0.1;
  const x = new Float32Array([0.1, 1.3, -44.8, 45, 1e-5]);
  const y = fakeQuantRef(f, x, { scale: s });
  for (let i = 0; i < x.length; i++) {
    const inner = fakeQuantRef(f, new Float32Array([Math.fround(x[i] / s)]))[0];
    assert.equal(y[i], Math.fround(inner * s));
  }
  assert.equal(y[3], Math.fround(448 * s));
});

test('half.ts rows (the one fp16/bf16 place): bit-identical to the scalar conversions, NaN sign and payload kept from the bits', () => {
  // every exponent, random mantissas, and the edges: zeros, subnormals, halfway ties, overflow, inf, NaNs of both signs
  const n = 1 << 16;
  const u = new Uint32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    u[i] = i < 256 ? [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x477fefff, 0x477ff000, 0x33000000, 0x33000001, 0x387fc000, 0x38800000, 0xb87fe000, 0x3f808000, 0x3f818000][i % 16] : ((s & 0x807fffff) | (((i >>> 8) & 0xff) << 23)) >>> 0;
  }
  const x = new Float32Array(u.buffer);
  const h = new Uint16Array(n);
  const b = new Uint16Array(n);
  f32ToF16Row(x, h);
  f32ToBf16Row(x, b);
  for (let i = 0; i < n; i++) {
    const nan = (u[i] & 0x7fffffff) > 0x7f800000;
    if (nan) {
      assert.equal(h[i], ((u[i] >>> 16) & 0x8000) | 0x7e00, `fp16 NaN sign of 0x${u[i].toString(16)}`);
      assert.equal(b[i], ((u[i] >>> 16) | 64) & 0xffff, `bf16 NaN of 0x${u[i].toString(16)}`);
      continue;
    }
    assert.equal(h[i], f32ToF16(x[i]), `fp16 of 0x${u[i].toString(16)}`);
    assert.equal(b[i], f32ToBf16(x[i]), `bf16 of 0x${u[i].toString(16)}`);
  }
  // back: every fp16 / bf16 code
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const y = new Float32Array(65536);
  const yb = new Uint32Array(y.buffer);
  f16ToF32Row(all, y);
  for (let c = 0; c < 65536; c++) {
    if (((c >>> 10) & 31) === 31 && c & 0x3ff) {
      assert.equal(yb[c], (((c & 0x8000) << 16) | 0x7fc00000 | ((c & 0x3ff) << 13)) >>> 0, `fp16 NaN 0x${c.toString(16)} keeps its payload, quieted`);
      continue;
    }
    assert.ok(Object.is(y[c], f16ToF32(c)), `fp16 0x${c.toString(16)}`);
    assert.equal(yb[c], f16BitsTable[c]);
  }
  bf16ToF32Row(all, y);
  for (let c = 0; c < 65536; c++) assert.equal(yb[c], (c << 16) >>> 0, `bf16 0x${c.toString(16)}`);
});
