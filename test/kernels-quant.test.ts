// The WebAssembly GGML quantizers (wasm/quant.ts via src/kernels/ggml-quant.ts) against the scalar
// TypeScript references (quantize_row_X_ref ports in src/quant/ggml/), byte for byte, in both builds
// (relaxed SIMD and plain SIMD): llama.cpp's golden vectors, random normal / heavy-tailed / sparse
// rows, all-zero and signed-zero rows, constants, tiny scales down to float32 subnormals, values near
// the fp16 maximum and beyond, ties of every rounding step, MXFP4's exponent boundaries, and random
// bit patterns. The dequantizers likewise, float for float (NaN results only need to be NaN), on
// llama.cpp's random blocks, on quantized rows and on random bytes. Plus: the fast paths sit behind
// the registered codecs, decline what they cannot do (the reference then reports it), and are
// bypassed with setWasmVariant('off').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasRelaxedSimd, hasSimd } from '../src/env.js';
import { LowbitError } from '../src/errors.js';
import { installWasmQuantizers, quantizationErrorsFast, WASM_QUANTIZERS, wasmDequantizer, wasmQuantizer } from '../src/kernels/ggml-quant.js';
import { setWasmVariant, type WasmVariant } from '../src/kernels/wasm.js';
import { ggmlTypeByName, kquantRefQuantizers, legacyRefQuantizers } from '../src/quant/ggml/index.js';
import { ggmlCodec, ggmlFastQuantizer, ggmlReferenceDequantizer, ggmlReferenceQuantizer } from '../src/quant/ggml/registry.js';
import { loadGolden } from './ggml-golden.js';
import { xorshift32 } from '../src/rng.js';

installWasmQuantizers();
const TYPES = Object.keys(WASM_QUANTIZERS);
const VARIANTS: WasmVariant[] = hasSimd() ? (hasRelaxedSimd() ? ['relaxed', 'simd'] : ['simd']) : [];

type Quantize = (src: Float32Array, nRows: number, rowLength: number, out: Uint8Array) => void;
const REFS: Record<string, Quantize> = { ...legacyRefQuantizers, ...kquantRefQuantizers };

/** the scalar reference quantize_row_X_ref of a covered type */
function reference(type: string): Quantize {
  return REFS[type] ?? (ggmlReferenceQuantizer(type)! as Quantize);
}

function bytesFor(type: string, n: number): Uint8Array {
  const t = ggmlTypeByName(type)!;
  return new Uint8Array((n / t.blockSize) * t.typeSize);
}

function withVariant<T>(v: WasmVariant, f: () => T): T {
  setWasmVariant(v);
  try {
    return f();
  } finally {
    setWasmVariant(undefined);
  }
}

/** first differing byte, described, or null */
function firstDiff(type: string, got: Uint8Array, want: Uint8Array): string | null {
  const ts = ggmlTypeByName(type)!.typeSize;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) return `byte ${i} (block ${Math.floor(i / ts)}, offset ${i % ts}): wasm ${got[i]}, reference ${want[i]}`;
  }
  return null;
}

/** wasm vs reference on x (rows x rowLength) in every build; returns failure lines */
function compare(label: string, x: Float32Array, rows: number, rowLength: number, types = TYPES): string[] {
  const failures: string[] = [];
  for (const type of types) {
    const want = bytesFor(type, x.length);
    reference(type)(x, rows, rowLength, want);
    for (const v of VARIANTS) {
      const got = bytesFor(type, x.length).fill(0xa5);
      const done = withVariant(v, () => wasmQuantizer(type)!(x, rows, rowLength, got));
      if (!done) failures.push(`${type} ${label} (${v}): the kernel declined`);
      else {
        const d = firstDiff(type, got, want);
        if (d) failures.push(`${type} ${label} (${v}): ${d}`);
      }
    }
  }
  return failures;
}

/** xorshift32 + Box-Muller, deterministic */
function rng(seed: number) {
  const next = xorshift32(seed);
  const uniform = () => next() / 4294967296;
  const normal = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { next, uniform, normal };
}

const ROWS = 4;
const ROW = 512; // a multiple of every block size (32, 64, 256)
const N = ROWS * ROW;

function dataset(fill: (i: number, r: ReturnType<typeof rng>) => number, seed = 1): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(N);
  for (let i = 0; i < N; i++) x[i] = fill(i, r);
  return x;
}

const DATASETS: [string, Float32Array][] = [
  ['normal', dataset((_, r) => r.normal())],
  ['normal 0.02', dataset((_, r) => 0.02 * r.normal(), 2)],
  ['heavy tail', dataset((_, r) => r.normal() / (Math.abs(r.normal()) + 0.05), 3)],
  ['outlier per block', dataset((i, r) => ((i * 7919) % 29 === 0 ? 40 : 1) * r.normal(), 4)],
  ['sparse', dataset((_, r) => (r.uniform() < 0.1 ? r.normal() : 0), 5)],
  ['all zero', new Float32Array(N)],
  ['signed zeros', dataset((i) => (i % 3 === 1 ? -0 : 0))],
  ['zeros and -tiny', dataset((i) => (i % 5 === 0 ? -1e-45 : i % 2 ? -0 : 0))],
  ['constant', new Float32Array(N).fill(0.7)],
  ['constant negative', new Float32Array(N).fill(-3.25)],
  ['constant per 16', dataset((i) => ((i >> 4) % 3 - 1) * 2 ** ((i >> 4) % 9 - 4))],
  ['tiny 1e-8', dataset((_, r) => 1e-8 * r.normal(), 6)],
  ['tiny 1e-30', dataset((_, r) => 1e-30 * r.normal(), 7)],
  ['tiny 1e-38', dataset((_, r) => 1e-38 * r.normal(), 8)],
  ['subnormal 1e-40', dataset((_, r) => 1e-40 * r.normal(), 9)],
  ['subnormal 1e-44', dataset((_, r) => 1e-44 * r.normal(), 10)],
  ['near f16 max', dataset((i, r) => (i % 61 === 0 ? (i & 1 ? -65504 : 65504) : (r.uniform() * 2 - 1) * 6e4), 11)],
  ['beyond f16 1e5', dataset((_, r) => 1e5 * r.normal(), 12)],
  ['near f32 max', dataset((_, r) => 3e38 * (r.uniform() * 2 - 1), 13)],
  ['integers', dataset((_, r) => Math.round(4 * r.normal()), 14)],
  ['halves', dataset((_, r) => Math.round(8 * r.normal()) / 2, 15)],
  ['quarter steps', dataset((_, r) => Math.round(30 * r.uniform()) / 4 - 3, 16)],
  ['powers of two', dataset((_, r) => (r.uniform() < 0.5 ? -1 : 1) * 2 ** Math.floor(r.uniform() * 12 - 6), 17)],
  ['mixed blocks', dataset((i, r) => [0, 1e-8 * r.normal(), 0.05 * r.normal(), 300 * r.normal(), -0.25, (i & 31) === 7 ? 4 : 0][((i >> 5) + (i >> 9)) % 6], 18)],
  ['random bits', dataset((_, r) => {
    for (;;) {
      const f = new Float32Array(new Uint32Array([r.next()]).buffer)[0];
      if (Number.isFinite(f)) return f;
    }
  }, 19)],
  ['random bits, small exponents', dataset((_, r) => new Float32Array(new Uint32Array([(r.next() & 0x8fffffff) | 0x30000000]).buffer)[0], 20)],
];

test('wasm quantizers: some WebAssembly build is available to test', () => {
  assert.ok(VARIANTS.length > 0, 'this engine has no WebAssembly SIMD');
});

test('wasm quantizers equal the references (and llama.cpp) on the golden datasets', () => {
  const failures: string[] = [];
  let checked = 0;
  for (const e of loadGolden({ variant: 'ref' })) {
    if (!TYPES.includes(e.type)) continue;
    failures.push(...compare(`golden ${e.dataset}`, e.input!, e.rows, e.rowLength, [e.type]));
    for (const v of VARIANTS) {
      const got = bytesFor(e.type, e.input!.length);
      withVariant(v, () => wasmQuantizer(e.type)!(e.input!, e.rows, e.rowLength, got));
      const d = firstDiff(e.type, got, e.bytes);
      if (d) failures.push(`${e.type} golden ${e.dataset} (${v}) vs llama.cpp: ${d}`);
    }
    checked++;
  }
  assert.deepEqual(failures, []);
  assert.ok(checked >= TYPES.length * 7, `only ${checked} golden entries`);
});

test('wasm quantizers equal the references on random, degenerate and extreme rows', () => {
  const failures: string[] = [];
  for (const [label, x] of DATASETS) failures.push(...compare(label, x, ROWS, ROW));
  assert.deepEqual(failures, []);
});

test('MXFP4: the shared exponent follows Math.log2 rounding at every binade edge', () => {
  // blocks whose largest magnitude is one of the float32 values just below 2^k (where float32 log2
  // rounds up to k), at 2^k itself, and at random points, for every exponent including subnormals
  const values: number[] = [];
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let bits = 1; bits < 0x7f800000; bits = bits < 0x800000 ? bits * 2 : bits + 0x800000) {
    for (const d of [-40, -3, -2, -1, 0, 1, 2, 3, 1000]) {
      u[0] = bits + d;
      if (u[0] > 0 && u[0] < 0x7f800000) values.push(f[0]);
    }
  }
  for (let i = 0; i < 40; i++) {
    u[0] = 0x800000 - 1 - i; // largest subnormals
    values.push(f[0]);
  }
  while (values.length % 8) values.push(1);
  const r = rng(21);
  const x = new Float32Array(values.length * 32);
  values.forEach((v, b) => {
    for (let j = 0; j < 32; j++) x[b * 32 + j] = Math.fround(v * (r.uniform() * 2 - 1));
    x[b * 32 + (b % 32)] = b & 1 ? -v : v;
  });
  assert.deepEqual(compare('exponent edges', x, values.length / 8, 256, ['MXFP4', 'NVFP4', 'Q8_0', 'Q4_0', 'Q4_K']), []);
});

test('the registered codecs run the kernels without importance and the references with it', () => {
  const x = DATASETS[0][1];
  for (const type of TYPES) {
    const codec = ggmlCodec(type)!;
    assert.ok(ggmlFastQuantizer(type), `${type}: no fast quantizer registered`);
    const want = bytesFor(type, N);
    reference(type)(x, ROWS, ROW, want);
    const got = bytesFor(type, N);
    codec.quantize!(x, ROWS, ROW, got);
    assert.equal(firstDiff(type, got, want), null, type);
    if (codec.usesImportance) {
      // the imatrix path stays in TypeScript: same bytes as the reference codec with importance
      const importance = new Float32Array(ROW).map((_, j) => 1 + (j % 7));
      const a = bytesFor(type, N);
      const b = bytesFor(type, N);
      codec.quantize!(x, ROWS, ROW, a, importance);
      ggmlReferenceQuantizer(type)!(x, ROWS, ROW, b, importance);
      assert.equal(firstDiff(type, a, b), null, `${type} with importance`);
    }
  }
});

test("setWasmVariant('off') makes the kernels decline, and the codecs fall back to the references", () => {
  const x = DATASETS[2][1];
  for (const type of TYPES) {
    const want = bytesFor(type, N);
    reference(type)(x, ROWS, ROW, want);
    withVariant('off', () => {
      const got = bytesFor(type, N);
      assert.equal(wasmQuantizer(type)!(x, ROWS, ROW, got), false, type);
      ggmlCodec(type)!.quantize!(x, ROWS, ROW, got);
      assert.equal(firstDiff(type, got, want), null, type);
    });
  }
});

test('non-finite input and bad shapes: the kernel declines, the reference reports the problem', () => {
  for (const type of TYPES) {
    const bs = ggmlTypeByName(type)!.blockSize;
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = new Float32Array(2 * 256).fill(0.5);
      x[300] = bad;
      for (const v of VARIANTS) assert.equal(withVariant(v, () => wasmQuantizer(type)!(x, 2, 256, bytesFor(type, 512))), false, `${type} ${bad} (${v})`);
      assert.throws(() => ggmlCodec(type)!.quantize!(x, 2, 256, bytesFor(type, 512)), (e: unknown) => e instanceof LowbitError && /300/.test(e.message), `${type} ${bad}`);
    }
    const x = new Float32Array(4 * bs);
    assert.equal(wasmQuantizer(type)!(x, 1, bs + 1, bytesFor(type, 4 * bs)), false, `${type} row length`);
    assert.equal(wasmQuantizer(type)!(x, 8, bs, bytesFor(type, 4 * bs)), false, `${type} short input`);
    assert.equal(wasmQuantizer(type)!(x, 4, bs, new Uint8Array(3)), false, `${type} short output`);
    assert.throws(() => ggmlCodec(type)!.quantize!(x, 1, bs + 1, bytesFor(type, 4 * bs)), LowbitError);
  }
});

test('long inputs stream through the kernel memory in chunks with the same bytes', () => {
  // 3 chunks and a partial one (65536 floats per chunk)
  const r = rng(22);
  const rows = 3 * 128 + 37;
  const x = new Float32Array(rows * 512);
  for (let i = 0; i < x.length; i++) x[i] = r.normal() * (1 + (i % 1000) / 100);
  assert.deepEqual(compare('chunked', x, rows, 512, ['Q8_0', 'Q4_K', 'NVFP4']), []);
});

test('quantization errors in the kernel (quantizationErrorsFast) equal reference quantize, reference dequantize, minus the input, bit for bit', () => {
  // the sensitivity pass's candidates: dequantize(quantize(x)) - x, in 2 chunks and a partial one
  const r = rng(31);
  const rows = 2 * 32 + 5;
  const cols = 2048;
  const x = new Float32Array(rows * cols);
  for (let i = 0; i < x.length; i++) x[i] = r.normal() * 0.02 * (1 + (i % 777) / 300);
  for (let i = 0; i < cols; i++) x[7 * cols + i] = 0; // an all-zero row
  const n = x.length;
  for (const type of TYPES) {
    const want = new Float32Array(n);
    const blocks = bytesFor(type, n);
    reference(type)(x, rows, cols, blocks);
    ggmlReferenceDequantizer(type)!(blocks, n, want);
    for (let i = 0; i < n; i++) want[i] -= x[i];
    const wb = new Uint32Array(want.buffer);
    for (const v of VARIANTS) {
      const got = new Float32Array(n).fill(12345);
      assert.equal(withVariant(v, () => quantizationErrorsFast(ggmlTypeByName(type)!, x, rows, cols, got)), true, `${type} (${v}) declined`);
      const gb = new Uint32Array(got.buffer);
      let bad = -1;
      for (let i = 0; i < n && bad < 0; i++) if (gb[i] !== wb[i]) bad = i;
      assert.equal(bad, -1, `${type} (${v}): element ${bad} is ${got[bad]}, reference ${want[bad]}`);
    }
  }
  // declines what it cannot do: no kernel for the type, a NaN, a row that is not whole blocks, the kernels off
  const out = new Float32Array(n);
  assert.equal(quantizationErrorsFast(ggmlTypeByName('IQ4_XS')!, x, rows, cols, out), false);
  const bad = x.slice();
  bad[5000] = NaN;
  assert.equal(quantizationErrorsFast(ggmlTypeByName('Q4_K')!, bad, rows, cols, out), false);
  assert.equal(quantizationErrorsFast(ggmlTypeByName('Q4_K')!, x, 1, 100, out), false);
  assert.equal(withVariant('off', () => quantizationErrorsFast(ggmlTypeByName('Q4_K')!, x, rows, cols, out)), false);
});

/** wasm dequantize vs the reference on the given bytes, every build; failure lines */
function compareDequant(label: string, type: string, bytes: Uint8Array, n: number): string[] {
  const failures: string[] = [];
  const want = new Float32Array(n);
  ggmlReferenceDequantizer(type)!(bytes, n, want);
  const wb = new Uint32Array(want.buffer);
  for (const v of VARIANTS) {
    const got = new Float32Array(n).fill(12345);
    const done = withVariant(v, () => wasmDequantizer(type)!(bytes, n, got));
    if (!done) {
      failures.push(`${type} ${label} (${v}): the kernel declined`);
      continue;
    }
    const gb = new Uint32Array(got.buffer);
    for (let i = 0; i < n; i++) {
      if (gb[i] !== wb[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
        failures.push(`${type} ${label} (${v}): element ${i} is ${got[i]}, reference ${want[i]}`);
        break;
      }
    }
  }
  return failures;
}

test('wasm dequantizers equal the references (and llama.cpp) on llama.cpp\'s random blocks and on quantized rows', () => {
  const failures: string[] = [];
  for (const e of loadGolden({ variant: 'dequant' })) {
    if (!TYPES.includes(e.type)) continue;
    const n = e.rows * e.rowLength;
    failures.push(...compareDequant(`golden ${e.dataset}`, e.type, e.bytes, n));
    const got = new Float32Array(n);
    wasmDequantizer(e.type)!(e.bytes, n, got);
    if (!new Uint32Array(got.buffer).every((b, i) => b === new Uint32Array(e.dequant!.buffer, e.dequant!.byteOffset, n)[i])) failures.push(`${e.type} golden ${e.dataset}: differs from llama.cpp`);
  }
  for (const [label, x] of DATASETS) {
    for (const type of TYPES) {
      const q = bytesFor(type, x.length);
      reference(type)(x, ROWS, ROW, q);
      failures.push(...compareDequant(label, type, q, x.length));
    }
  }
  assert.deepEqual(failures, []);
});

test('wasm dequantizers equal the references on random bytes (any scale bits: subnormal, inf, NaN)', () => {
  const r = rng(23);
  const failures: string[] = [];
  for (const type of TYPES) {
    const t = ggmlTypeByName(type)!;
    const n = 256 * 40 + 65536; // two chunks
    const bytes = new Uint8Array((n / t.blockSize) * t.typeSize).map(() => r.next() & 0xff);
    failures.push(...compareDequant('random bytes', type, bytes, n));
  }
  assert.deepEqual(failures, []);
});

test('dequantize: bad sizes decline in the kernel and fail in the reference; the codec uses the kernel', () => {
  for (const type of TYPES) {
    const t = ggmlTypeByName(type)!;
    assert.equal(wasmDequantizer(type)!(new Uint8Array(t.typeSize), t.blockSize + 1, new Float32Array(t.blockSize + 1)), false);
    assert.equal(wasmDequantizer(type)!(new Uint8Array(t.typeSize - 1), t.blockSize, new Float32Array(t.blockSize)), false);
    assert.throws(() => ggmlCodec(type)!.dequantize(new Uint8Array(t.typeSize - 1), t.blockSize, new Float32Array(t.blockSize)), LowbitError);
  }
});

// the type-traits table: one row per GGML type (floats included), the fast paths installed into the rows
test('GGML type traits: every type has a row; float rows round-trip; installed fast paths sit in their rows', async () => {
  const { ggmlTypeTraitsTable, ggmlTypeTraits, ggmlRoundsFloats } = await import('../src/quant/ggml/registry.js');
  const { GGML_TYPES } = await import('../src/quant/ggml/types.js');
  const table = ggmlTypeTraitsTable();
  assert.equal(table.length, GGML_TYPES.length);
  for (const r of table) {
    assert.equal(r.blockSize, r.type.blockSize);
    assert.equal(r.typeSize, r.type.typeSize);
    assert.equal(r.float, ['F32', 'F16', 'BF16'].includes(r.type.name), r.type.name);
    if (r.float || ggmlCodec(r.type)) assert.ok(r.toFloat, `${r.type.name}: a reference toFloat`);
    assert.equal(r.fast.quantize !== undefined, r.type.name in WASM_QUANTIZERS, `${r.type.name}: fast quantizer installed exactly for the kernel's types`);
  }
  assert.equal(ggmlTypeTraits('Q4_K')!.vecDot, 'Q8_K');
  assert.equal(ggmlTypeTraits('I32')!.vecDot, undefined);
  const x = Float32Array.from([1, -2.5, 65504, 1e-3, 3.14159, -0, 7, 1e5]);
  for (const name of ['F32', 'F16', 'BF16']) {
    const r = ggmlTypeTraits(name)!;
    const bytes = new Uint8Array(x.length * r.typeSize);
    r.fromFloat!(x, 1, x.length, bytes);
    const back = new Float32Array(x.length);
    r.toFloat!(bytes, x.length, back);
    // the scalar conversions element by element (io/tensor-data's toFloat32/fromFloat32 are these rows now)
    const { f16ToF32, bf16ToF32, f32ToF16, f32ToBf16 } = await import('../src/formats/half.js');
    const { fromFloat32, toFloat32 } = await import('../src/io/tensor-data.js');
    const u16 = new Uint16Array(bytes.buffer);
    if (name === 'F16') assert.deepEqual([...u16], [...x].map(f32ToF16));
    if (name === 'BF16') assert.deepEqual([...u16], [...x].map(f32ToBf16));
    if (name !== 'F32') assert.deepEqual([...back], [...u16].map(name === 'F16' ? f16ToF32 : bf16ToF32), `${name}: toFloat`);
    assert.deepEqual(fromFloat32(name, x), bytes);
    assert.deepEqual(toFloat32(name, bytes), back);
    // exactF32: the float rows that hold every f32 (no rounding to model, infinite SQNR); F16/BF16 round
    assert.equal(r.exactF32, name === 'F32');
    assert.equal(ggmlRoundsFloats(name), name !== 'F32');
    if (name === 'F32') assert.deepEqual(back, x);
  }
  assert.ok(!ggmlRoundsFloats('Q4_K') && !ggmlRoundsFloats('F64') && !ggmlRoundsFloats('int4'));
  assert.ok(table.every((r) => r.exactF32 === (r.type.name === 'F32')));
});
