import { IQ_NEEDS_IMPORTANCE } from '../src/quant/ggml/iq-quant.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LowbitError } from '../src/errors.js';
import { decodeOne } from '../src/formats/cast.js';
import { fp4_e2m1fn, fp6_e2m3fn, fp8_e4m3fn, NF4_LEVELS, parseFormat } from '../src/formats/registry.js';
import { ggmlCodec, registerGgmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import {
  compareClipMethods,
  DYNAMIC_MAP,
  makeGenericScheme,
  packCodes,
  resolveScheme,
  schemes,
  SCALE_FORMATS,
  scaleFormats,
  unpackCodes,
  type QuantScheme,
} from '../src/quant/index.js';

/** Seeded standard normal samples (Box-Muller over a 32-bit LCG). */
function normal(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return x;
}

function sqnr(x: Float32Array, y: Float32Array): number {
  let sig = 0;
  let noise = 0;
  for (let i = 0; i < x.length; i++) {
    sig += x[i] * x[i];
    noise += (x[i] - y[i]) ** 2;
  }
  return noise === 0 ? Infinity : 10 * Math.log10(sig / noise);
}

// Minimum SQNR (dB) of dequant(quant(x)) on 8 x 1024 standard normal values. Schemes registered later
// (GGML codecs) get min(6.02 * bpw - 12, 40): about 6 dB per bit, 12 dB of slack.
const FLOORS: Record<string, number> = {
  mxfp8_e4m3: 28,
  mxfp8_e5m2: 23,
  mxfp6_e2m3: 28,
  mxfp6_e3m2: 23,
  mxfp4: 17,
  mxint8: 39,
  nvfp4: 19.5,
  nf4_dq: 19.5,
  nf4_g64: 19.5,
  int8_ch: 40,
  int8_tensor: 36,
  int8_g32: 43,
  int4_g32: 19.5,
  int4_g128: 17.5,
  uint4_g128_asym: 18.5,
  uint4_g32_fzp: 20.5,
  int4_ch_mse: 18.5,
  int4_b32x32: 17,
  uint2_g16_asym: 8,
  fp8_e4m3_ch: 30,
};

const ROWS = 8;
const ROW = 1024;
const X = normal(ROWS * ROW, 12345);

function quantizable(s: QuantScheme): boolean {
  if (s.family !== 'ggml') return true;
  // these quantize only with an importance matrix, as in llama.cpp (tested in ggml-iq.test.ts)
  if (IQ_NEEDS_IMPORTANCE.has(s.name)) return false;
  const c = ggmlCodec(s.name);
  return c?.quantize !== undefined;
}

test('every registered scheme round-trips above its SQNR floor, deterministically, with the stated size', () => {
  const all = schemes();
  assert.ok(all.length >= 20);
  for (const s of all) {
    if (!quantizable(s)) continue;
    const p = s.quantizeRef(X, ROWS, ROW);
    assert.equal(p.length, s.packedBytes(ROWS, ROW), `${s.id} packed size`);
    const y = s.dequantizeRef(p, ROWS, ROW);
    const floor = FLOORS[s.id] ?? Math.min(6.02 * s.bitsPerWeight - 12, 40);
    const db = sqnr(X, y);
    assert.ok(db >= floor, `${s.id}: SQNR ${db.toFixed(2)} dB below its floor ${floor}`);
    assert.deepEqual(s.quantizeRef(X, ROWS, ROW), p, `${s.id} is not deterministic`);
    // re-quantizing the reconstruction is stable to within the first pass's error
    if (s.blockSize > 1 && !s.tensorScoped) assert.equal(p.length, ((ROWS * ROW) / s.blockSize) * s.bytesPerBlock, `${s.id} bytes per block`);
    if (s.blockSize > 1 && !s.tensorScoped) assert.ok(Math.abs((s.bytesPerBlock * 8) / s.blockSize - s.bitsPerWeight) < 1e-9, `${s.id} bits per weight`);
  }
});

test('row-local schemes: quantizing rows one at a time gives the same bytes (blocks in row order)', () => {
  for (const s of schemes()) {
    if (s.tensorScoped || !quantizable(s)) continue;
    const whole = s.quantizeRef(X, ROWS, ROW);
    const rowBytes = s.packedBytes(1, ROW);
    for (const r of [0, 3, 7]) {
      const one = s.quantizeRef(X.subarray(r * ROW, (r + 1) * ROW), 1, ROW);
      assert.deepEqual(one, whole.subarray(r * rowBytes, (r + 1) * rowBytes), `${s.id} row ${r}`);
    }
  }
});

test('a row length that is not a multiple of the block size is refused', () => {
  for (const s of schemes()) {
    if (s.blockSize <= 1) continue;
    const L = s.blockSize + 1;
    assert.throws(() => s.quantizeRef(new Float32Array(L), 1, L), LowbitError, s.id);
    assert.throws(() => s.packedBytes(2, L), LowbitError, s.id);
  }
});

test('NaN and infinity: refused where the scheme cannot hold them', () => {
  for (const id of ['nvfp4', 'nf4_dq', 'int4_g32', 'int8_ch', 'uint4_g128_asym', 'fp8_e4m3_ch']) {
    const s = resolveScheme(id);
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = new Float32Array(256);
      x[37] = bad;
      assert.throws(() => s.quantizeRef(x, 1, 256), (e: unknown) => e instanceof LowbitError && /cannot hold/.test(e.message), `${id} ${bad}`);
    }
  }
});

// ----------------------------------------------------------------------------------------------
// OCP MX

const MX_EMAX: Record<string, number> = { mxfp8_e4m3: 8, mxfp8_e5m2: 15, mxfp6_e2m3: 2, mxfp6_e3m2: 4, mxfp4: 2, mxint8: 0 };

test('MX shared scale is 2^(floor(log2 amax) - emax_elem) stored as E8M0, clamped at 2^-127', () => {
  for (const [id, emax] of Object.entries(MX_EMAX)) {
    const s = resolveScheme(id);
    for (const amax of [1, 0.75, 6, 7.99, 8, 448, 1000.5, 3e-5, 2 ** -100, 3e38, 2 ** -130]) {
      const x = new Float32Array(32);
      x[5] = -amax;
      x[9] = amax / 3;
      const p = s.quantizeRef(x, 1, 32);
      const expected = Math.max(-127, Math.floor(Math.log2(Math.fround(amax))) - emax);
      assert.equal(p[0], expected + 127, `${id} amax ${amax}`);
      const y = s.dequantizeRef(p, 1, 32);
      // the largest element is within one element quantum (saturation included) of amax
      assert.ok(Math.abs(y[5] + Math.fround(amax)) <= Math.fround(amax) * 0.34 || expected === -127, `${id} amax ${amax}: got ${y[5]}`);
    }
  }
});

test('MX special blocks: zero block, NaN/inf block, saturation', () => {
  for (const id of Object.keys(MX_EMAX)) {
    const s = resolveScheme(id);
    const zero = s.quantizeRef(new Float32Array(64), 1, 64);
    assert.equal(zero[0], 0, `${id}: amax 0 gives the smallest scale`);
    assert.ok(s.dequantizeRef(zero, 1, 64).every((v) => v === 0));
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = normal(64, 3);
      x[40] = bad;
      const p = s.quantizeRef(x, 1, 64);
      assert.equal(p[s.bytesPerBlock], 0xff, `${id}: block with ${bad} gets the NaN scale`);
      const y = s.dequantizeRef(p, 1, 64);
      assert.ok(y.subarray(32).every((v) => Number.isNaN(v)), `${id}: NaN-scale block decodes to NaN`);
      assert.ok(y.subarray(0, 32).every((v) => Number.isFinite(v)), `${id}: other blocks unaffected`);
    }
  }
  // MXFP4: amax 7 -> X = 2^(2 - 2) = 1, 7 saturates to 6; amax 8 -> X = 2, 8 / 2 = 4 exact
  const mxfp4 = resolveScheme('mxfp4');
  const x = new Float32Array(32);
  x[0] = 7;
  x[1] = -3;
  let y = mxfp4.dequantizeRef(mxfp4.quantizeRef(x, 1, 32), 1, 32);
  assert.equal(y[0], 6);
  assert.equal(y[1], -3);
  x[0] = 8;
  y = mxfp4.dequantizeRef(mxfp4.quantizeRef(x, 1, 32), 1, 32);
  assert.equal(y[0], 8);
  assert.equal(y[1], -3); // X = 2: -3 / 2 = -1.5 is an E2M1 value
});

test('MX packed layout: scale byte, FP4 low nibble first, FP6 four per three bytes, MXINT8 1.6 fixed point', () => {
  // [1, 2, 0, ...]: amax 2 -> X = 2^(1 - 2) = 0.5; 1 / 0.5 = 2 = E2M1 0b0100, 2 / 0.5 = 4 = 0b0110
  const x = new Float32Array(32);
  x[0] = 1;
  x[1] = 2;
  const p = resolveScheme('mxfp4').quantizeRef(x, 1, 32);
  assert.equal(p.length, 17);
  assert.equal(p[0], 127 - 1);
  assert.equal(p[1], 0b0100 | (0b0110 << 4));
  assert.ok(p.subarray(2).every((b) => b === 0));
  assert.equal(decodeOne(fp4_e2m1fn, 0b0110), 4);

  // FP6 E2M3: amax 4 -> X = 2^(2 - 2) = 1; codes of 0.125 (subnormal 1/8: 0b000001), 1, 4, 7.5 (0b011111)
  const v = new Float32Array(32);
  v.set([0.125, 1, 4, 7.5]);
  const q = resolveScheme('mxfp6_e2m3').quantizeRef(v, 1, 32);
  assert.equal(q.length, 25);
  assert.equal(q[0], 127);
  const codes = [0.125, 1, 4, 7.5].map((t) => {
    for (let c = 0; c < 64; c++) if (decodeOne(fp6_e2m3fn, c) === t) return c;
    throw new Error(`no code for ${t}`);
  });
  const word = codes[0] + codes[1] * 2 ** 6 + codes[2] * 2 ** 12 + codes[3] * 2 ** 18;
  assert.deepEqual([q[1], q[2], q[3]], [word & 255, (word >>> 8) & 255, (word >>> 16) & 255]);

  // MXINT8: amax 1.5 -> X = 1; 1.5 = 96 / 64; -1.999 rounds to -128 and clamps to -127
  const m = new Float32Array(32);
  m[0] = 1.5;
  m[1] = -1.999;
  m[2] = 0.5 / 64; // exactly half a quantum: ties to even -> 0
  const r = resolveScheme('mxint8').quantizeRef(m, 1, 32);
  assert.equal(r[0], 127);
  assert.equal(r[1], 96);
  assert.equal(r[2], 256 - 127);
  assert.equal(r[3], 0);
});

test('bit packing round-trips for 2..8 bits and puts element i at bits [i*b, (i+1)*b)', () => {
  for (let bits = 2; bits <= 8; bits++) {
    const n = 40;
    const codes = Array.from({ length: n }, (_, i) => (i * 7 + 3) % 2 ** bits);
    const out = new Uint8Array(Math.ceil((n * bits) / 8));
    packCodes(codes, n, bits, out, 0);
    const back = new Uint16Array(n);
    unpackCodes(out, 0, n, bits, back);
    assert.deepEqual(Array.from(back), codes);
    for (let i = 0; i < n; i++) {
      let c = 0;
      for (let b = 0; b < bits; b++) c |= ((out[(i * bits + b) >> 3] >> ((i * bits + b) & 7)) & 1) << b;
      assert.equal(c, codes[i]);
    }
  }
});

// ----------------------------------------------------------------------------------------------
// NVFP4

test('NVFP4 layout: f32 tensor scale amax/(6*448), E4M3 block scale, E2M1 low nibble first', () => {
  const s = resolveScheme('NVFP4');
  const x = new Float32Array(32);
  x[0] = 2688; // 6 * 448: tensor scale 1.0
  x[1] = -448;
  x[16] = 3; // second block: scale e4m3(3 / 6) = 0.5 (code 0x30), element 3 / 0.5 = 6
  x[17] = 1;
  const p = s.quantizeRef(x, 2, 16);
  assert.equal(p.length, 4 + 2 * 9);
  assert.equal(new DataView(p.buffer).getFloat32(0, true), 1);
  assert.equal(p[4], 0x7e); // 448
  assert.equal(decodeOne(fp8_e4m3fn, 0x7e), 448);
  assert.equal(p[5], 0b0111 | (0b1010 << 4)); // 6 and -1 (sign 8 | 0b010 = 1.0)
  assert.equal(p[13], 0x30);
  assert.equal(decodeOne(fp8_e4m3fn, 0x30), 0.5);
  assert.equal(p[14], 0b0111 | (0b0100 << 4)); // 6 and 2 (1 / 0.5)
  const y = s.dequantizeRef(p, 2, 16);
  assert.deepEqual([y[0], y[1], y[16], y[17]], [2688, -448, 3, 1]);
  const z = s.quantizeRef(new Float32Array(16), 1, 16);
  assert.ok(s.dequantizeRef(z, 1, 16).every((v) => v === 0));
});

// ----------------------------------------------------------------------------------------------
// NF4 double quantization

test('bitsandbytes dynamic map: 256 sorted values in [-1, 1] with 0 and 1', () => {
  assert.equal(DYNAMIC_MAP.length, 256);
  for (let i = 1; i < 256; i++) assert.ok(DYNAMIC_MAP[i] >= DYNAMIC_MAP[i - 1]);
  assert.equal(DYNAMIC_MAP[255], 1);
  assert.ok(DYNAMIC_MAP.includes(0));
  assert.ok(DYNAMIC_MAP[0] > -1 && DYNAMIC_MAP[0] < -0.99);
  // smallest magnitudes: 10^-6 * mean(linspace(0.1, 1, 2)) = 0.55e-6
  assert.ok(DYNAMIC_MAP.some((v) => Math.abs(v - 0.55e-6) < 1e-12));
});

test('NF4-DQ layout: offset = mean absmax, 8-bit absmax per block, NF4 codes high nibble first', () => {
  const s = resolveScheme('nf4_dq');
  const x = new Float32Array(128);
  x[0] = 1;
  x[1] = -0.5;
  x[64] = 0.25;
  const p = s.quantizeRef(x, 2, 64);
  // offset f32 | absmax2 f32 x ceil(2/256) | q x 2 | codes x 64
  assert.equal(p.length, 4 + 4 + 2 + 64);
  const dv = new DataView(p.buffer);
  assert.equal(dv.getFloat32(0, true), 0.625); // (1 + 0.25) / 2
  assert.equal(dv.getFloat32(4, true), 0.375); // max |absmax - offset|
  assert.equal(p[8], 255); // (1 - 0.625) / 0.375 = 1 -> DYN[255] = 1
  assert.equal(p[9], 0); // -1 -> nearest is the smallest entry
  const nf4 = NF4_LEVELS;
  assert.equal(p[10], (15 << 4) | 2); // 1 -> NF4[15]; -0.5 -> NF4[2] = -0.525
  assert.equal(p[11], (7 << 4) | 7); // zeros -> NF4[7] = 0
  const y = s.dequantizeRef(p, 2, 64);
  assert.equal(y[0], 1);
  assert.equal(y[1], Math.fround(nf4[2]));
  const absmax1 = Math.fround(Math.fround(DYNAMIC_MAP[0] * 0.375) + 0.625);
  assert.equal(y[64], Math.fround(nf4[15] * absmax1));
  assert.equal(s.packedBytes(4096, 4096), 4 + 4 * 1024 + 262144 + 8388608);
});

// ----------------------------------------------------------------------------------------------
// Generic schemes

test('per-row, per-column and 2-D tile scales reconstruct scaled integer data exactly', () => {
  const rows = 64;
  const L = 96;
  const ints = normal(rows * L, 9).map((v) => Math.max(-127, Math.min(127, Math.round(v * 40))) + 0); // + 0: no -0 (int codes decode to +0)
  for (const r of [0, 1]) ints[r * L + 5] = 127; // make 127 the max of some rows
  const mk = (f: (r: number, c: number) => number) => {
    const x = new Float32Array(rows * L);
    for (let r = 0; r < rows; r++) for (let c = 0; c < L; c++) x[r * L + c] = ints[r * L + c] * f(r, c);
    return x;
  };
  const int8 = parseFormat('int8');
  const cases: [string, Parameters<typeof makeGenericScheme>[0], (r: number, c: number) => number][] = [
    ['rows', { element: int8, granularity: 'channel', scaleFormat: 'f32' }, (r) => 2 ** (r % 5)],
    ['columns', { element: int8, granularity: 'column', scaleFormat: 'f32' }, (_r, c) => 2 ** (c % 7)],
    ['tiles', { element: int8, granularity: 'block2d', tileSize: 32, scaleFormat: 'e8m0' }, (r, c) => 2 ** (((r >> 5) + 3 * (c >> 5)) % 6)],
  ];
  for (const [label, cfg, f] of cases) {
    // every scale group must contain its max 127: put one at the group's first element
    const x = mk(f);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < L; c++) {
        const first = label === 'rows' ? c === 0 : label === 'columns' ? r === 0 : r % 32 === 0 && c % 32 === 0;
        if (first) x[r * L + c] = 127 * f(r, c);
      }
    const s = makeGenericScheme(cfg);
    assert.equal(s.tensorScoped, label !== 'rows');
    const y = s.dequantizeRef(s.quantizeRef(x, rows, L), rows, L);
    assert.deepEqual(y, x, label);
  }
});

test('asymmetric uint4 with integer and float zero-points; layout [scale][zero][codes]', () => {
  const x = new Float32Array(16);
  for (let i = 0; i < 16; i++) x[i] = -0.5 + i * 0.1; // -0.5 .. 1.0
  const s = resolveScheme('int4', { groupSize: 16, asymmetric: true });
  assert.equal(s.id, 'uint4_g16_asym_f16');
  const p = s.quantizeRef(x, 1, 16);
  assert.equal(p.length, 2 + 1 + 8);
  const scale = scaleFormats.f16.decode(p[0] | (p[1] << 8));
  assert.ok(Math.abs(scale - 0.1) < 1e-3);
  assert.equal(p[2], 5); // zero-point = round(0.5 / 0.1)
  const y = s.dequantizeRef(p, 1, 16);
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(y[i] - x[i]) <= scale / 2 + 1e-6, `element ${i}`);
  const fz = resolveScheme('int4', { groupSize: 16, asymmetric: true, zeroPoint: 'float' });
  const q = fz.quantizeRef(x, 1, 16);
  assert.equal(q.length, 2 + 2 + 8);
  assert.ok(Math.abs(scaleFormats.f16.decode(q[2] | (q[3] << 8)) + 0.5) < 1e-3); // min stored as f16
  const z = fz.dequantizeRef(q, 1, 16);
  assert.ok(sqnr(x, z) > 30);
  assert.throws(() => resolveScheme('fp8_e4m3fn', { groupSize: 32, asymmetric: true }), LowbitError);
});

test('every scale format works; e8m0 scales are powers of two', () => {
  const x = normal(256, 5);
  for (const sf of SCALE_FORMATS) {
    const s = resolveScheme('int4', { groupSize: 32, scaleFormat: sf });
    const p = s.quantizeRef(x, 1, 256);
    assert.equal(p.length, 8 * (scaleFormats[sf].bytes + 16));
    assert.ok(sqnr(x, s.dequantizeRef(p, 1, 256)) > 15, sf);
    if (sf === 'e8m0') for (let b = 0; b < 8; b++) assert.ok(Number.isInteger(Math.log2(scaleFormats.e8m0.decode(p[b * 17]))));
  }
});

test('clip selection: MSE search never loses to absmax; percentile helps on outliers', () => {
  const x = normal(64 * 256, 77);
  for (let i = 0; i < x.length; i += 997) x[i] *= 12; // heavy outliers
  const cmp = compareClipMethods({ element: parseFormat('int4'), granularity: 'channel', scaleFormat: 'f32', percentile: 99 }, x, 64, 256);
  const by = Object.fromEntries(cmp.map((c) => [c.clip, c.sqnrDb]));
  assert.deepEqual(Object.keys(by), ['absmax', 'mse', 'percentile']);
  assert.ok(by.mse >= by.absmax, JSON.stringify(by));
  assert.ok(by.mse > by.absmax + 0.5, `MSE clipping should gain on outlier rows: ${JSON.stringify(by)}`);
});

test('stochastic rounding of generic schemes is seeded and unbiased-looking', () => {
  const x = normal(4096, 8);
  const a = resolveScheme('int4', { groupSize: 32, rounding: 'stochastic', seed: 1 });
  const b = resolveScheme('int4', { groupSize: 32, rounding: 'stochastic', seed: 2 });
  const pa = a.quantizeRef(x, 1, 4096);
  assert.deepEqual(a.quantizeRef(x, 1, 4096), pa);
  assert.notDeepEqual(b.quantizeRef(x, 1, 4096), pa);
  assert.ok(sqnr(x, a.dequantizeRef(pa, 1, 4096)) > 14);
});

// ----------------------------------------------------------------------------------------------
// Name resolution

test('resolveScheme: presets case-insensitive, element formats, generic options, unknown names', () => {
  assert.equal(resolveScheme('MXFP4').id, 'mxfp4');
  assert.equal(resolveScheme(' mxfp8_E4M3 ').id, 'mxfp8_e4m3');
  assert.equal(resolveScheme('nvfp4').family, 'nvfp4');
  assert.equal(resolveScheme('int4').family, 'element');
  assert.equal(resolveScheme('fp8_e4m3fn').family, 'element');
  assert.equal(resolveScheme('f16').family, 'element');
  assert.equal(resolveScheme('int4', { groupSize: 128, asymmetric: true }).id, 'uint4_g128_asym_f16');
  assert.equal(resolveScheme('int8', { granularity: 'channel' }).id, 'int8_ch_f32');
  assert.throws(() => resolveScheme('mxfp4', { groupSize: 64 }), /fixed layout/);
  assert.throws(() => resolveScheme('nope'), (e: unknown) => e instanceof LowbitError && /unknown scheme 'nope'.*mxfp4/.test(e.message));
  assert.throws(() => resolveScheme('int4', { granularity: 'group' }), /--group/);
});

test('GGML block types resolve by ggml_ prefix and by bare llama.cpp names, without shadowing MX/NVFP4', () => {
  // register stand-in codecs for types no other module registered in this process
  const fake = (name: string) => {
    const type = ggmlTypeByName(name)!;
    if (ggmlCodec(type)) return;
    registerGgmlCodec({
      type,
      dequantize: (_src: Uint8Array, n: number, out: Float32Array) => out.fill(0, 0, n),
    });
  };
  for (const n of ['Q4_K', 'IQ4_XS', 'MXFP4', 'NVFP4', 'Q4_0']) fake(n);
  assert.equal(resolveScheme('ggml_q4_k').id, 'ggml_q4_k');
  assert.equal(resolveScheme('GGML_Q4_K').family, 'ggml');
  assert.equal(resolveScheme('q4_K').id, 'ggml_q4_k');
  assert.equal(resolveScheme('q4_0').id, 'ggml_q4_0');
  assert.equal(resolveScheme('iq4_xs').id, 'ggml_iq4_xs');
  assert.equal(resolveScheme('mxfp4').family, 'mx');
  assert.equal(resolveScheme('nvfp4').family, 'nvfp4');
  assert.equal(resolveScheme('ggml_mxfp4').family, 'ggml');
  assert.equal(resolveScheme('ggml_nvfp4').bytesPerBlock, 36);
  assert.equal(resolveScheme('ggml_q4_k').bitsPerWeight, 4.5);
  assert.ok(schemes().some((s) => s.id === 'ggml_iq4_xs'));
  assert.throws(() => resolveScheme('ggml_q9_9'), LowbitError);
});

test('fast paths: dispatch when registered, and every registered fast path matches the reference bytes', async () => {
  const { registerFastPath, fastPath, quantizeScheme, dequantizeScheme, registerScheme } = await import('../src/quant/index.js');
  // a scheme of its own so the check does not replace a real fast path
  const base = makeGenericScheme({ element: parseFormat('int4'), granularity: 'group', groupSize: 32 }, 'test_fast_int4_g32');
  registerScheme(base);
  let calls = 0;
  registerFastPath(base.id, {
    quantize: (src, r, c) => {
      calls++;
      return base.quantizeRef(src, r, c);
    },
  });
  const x = normal(256, 2);
  assert.deepEqual(quantizeScheme(base, x, 1, 256), base.quantizeRef(x, 1, 256));
  assert.equal(calls, 1);
  assert.deepEqual(dequantizeScheme(base, base.quantizeRef(x, 1, 256), 1, 256), base.dequantizeRef(base.quantizeRef(x, 1, 256), 1, 256));
  for (const s of schemes()) {
    const fp = fastPath(s.id);
    if (!fp || !quantizable(s)) continue;
    const ref = s.quantizeRef(X, ROWS, ROW);
    if (fp.quantize) assert.deepEqual(fp.quantize(X, ROWS, ROW), ref, `${s.id} fast quantize`);
    if (fp.dequantize) assert.deepEqual(fp.dequantize(ref, ROWS, ROW), s.dequantizeRef(ref, ROWS, ROW), `${s.id} fast dequantize`);
  }
});

test('generic group schemes: the one-group fast path gives the reference bytes and values', async () => {
  const { groupBlockPath } = await import('../src/quant/schemes/generic.js');
  const { blockCodecFor } = await import('../src/algos/block-codec.js');
  let seed = 99;
  const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
  let checked = 0;
  for (const bits of [2, 3, 4, 8])
    for (const asymmetric of [false, true])
      for (const scaleFormat of SCALE_FORMATS)
        for (const rounding of ['nearest-even', 'nearest-away', 'toward-zero', 'up', 'down'] as const) {
          const G = bits === 3 ? 64 : 32;
          const s = makeGenericScheme({ element: parseFormat(`${asymmetric ? 'u' : ''}int${bits}`), granularity: 'group', groupSize: G, asymmetric, scaleFormat, rounding });
          const fast = groupBlockPath(s);
          assert.ok(fast, `${s.id} has a fast path`);
          const codec = blockCodecFor(s, 2 * G);
          const x = new Float32Array(G);
          for (let trial = 0; trial < 24; trial++) {
            const mag = 10 ** (rnd() * 8 - 4);
            for (let i = 0; i < G; i++) x[i] = Math.fround((rnd() - (asymmetric && trial % 3 === 0 ? 0.2 : 0.5)) * mag);
            if (trial === 1) x.fill(0);
            if (trial === 2) for (let i = 0; i < G; i++) x[i] = (i % 9) - 4; // exact ties on the grid
            if (trial === 3) x.fill(-0);
            if (trial === 4) x[5] = 3e38;
            if (trial === 5) x[7] = 1e-40;
            const want = s.quantizeRef(x, 1, G);
            const got = new Uint8Array(want.length + 3);
            codec.quantize(x, 0, got, 3);
            assert.deepEqual(got.subarray(3), want, `${s.id} trial ${trial}`);
            if (trial !== 4) {
              // a clip candidate's header: the parameter bytes of quantize(fround(x * ratio))
              const ratio = 1 - (trial % 11) * 0.05;
              const shrunk = x.map((v) => Math.fround(v * ratio));
              const head = new Uint8Array(want.length);
              fast.clipHeader(x, 0, ratio, head, 0);
              const pb = want.length - Math.ceil((G * bits) / 8);
              assert.deepEqual(head.subarray(0, pb), s.quantizeRef(shrunk, 1, G).subarray(0, pb), `${s.id} trial ${trial} clip header`);
            }
            const v = new Float32Array(G);
            codec.dequantize(want, 0, v, 0);
            assert.deepEqual(v, s.dequantizeRef(want, 1, G), `${s.id} trial ${trial} values`);
            checked++;
          }
          x[3] = NaN;
          assert.throws(() => codec.quantize(x, 0, new Uint8Array(fast.blockBytes), 0), (e: Error) => e instanceof LowbitError && /NaN|finite/i.test(e.message));
        }
  assert.ok(checked > 3000);
  // schemes the fast path does not cover stay on the reference
  assert.equal(groupBlockPath(makeGenericScheme({ element: parseFormat('int4'), granularity: 'group', groupSize: 32, clip: 'mse' })), undefined);
  assert.equal(groupBlockPath(makeGenericScheme({ element: parseFormat('int4'), granularity: 'group', groupSize: 32, rounding: 'stochastic' })), undefined);
  assert.equal(groupBlockPath(makeGenericScheme({ element: parseFormat('fp4_e2m1fn'), granularity: 'group', groupSize: 32 })), undefined);
});
