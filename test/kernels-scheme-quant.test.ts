// Fast paths of the OCP MX schemes and NVFP4 (src/kernels/scheme-quant.ts) against the scalar
// references (quant/schemes/{mx,nvfp4}.ts), byte for byte, in both WebAssembly builds and with the
// kernels off: normal and heavy-tailed rows, zeros and signed zeros, tiny and huge scales (E8M0 clamp
// at both ends), exact ties of every element grid, non-finite values (MX: NaN-scale blocks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasRelaxedSimd, hasSimd } from '../src/env.js';
import { LowbitError } from '../src/errors.js';
import { installSchemeFastPaths } from '../src/kernels/scheme-quant.js';
import { setWasmVariant, type WasmVariant } from '../src/kernels/wasm.js';
import { fastPath, quantizeScheme, resolveScheme } from '../src/quant/registry.js';
import { xorshift32 } from '../src/rng.js';

installSchemeFastPaths();

const IDS = ['mxfp8_e4m3', 'mxfp8_e5m2', 'mxfp6_e2m3', 'mxfp6_e3m2', 'mxfp4', 'nvfp4'];
const VARIANTS: WasmVariant[] = [...(hasSimd() ? (hasRelaxedSimd() ? ['relaxed', 'simd'] : ['simd']) : []), 'off'] as WasmVariant[];

function rng(seed: number) {
  const next = xorshift32(seed);
  const u = () => next() / 4294967296;
  return { u, normal: () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u()) };
}

const ROWS = 3;
const ROW = 8192 + 256; // more than one chunk of the fast path
function data(fill: (i: number, r: ReturnType<typeof rng>) => number, seed = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: ROWS * ROW }, (_, i) => fill(i, r));
}

const SETS: [string, Float32Array][] = [
  ['normal', data((_, r) => r.normal())],
  ['heavy tail', data((_, r) => r.normal() / (Math.abs(r.normal()) + 0.05), 2)],
  ['zeros and signed zeros', data((i) => (i % 3 === 1 ? -0 : 0))],
  ['sparse', data((_, r) => (r.u() < 0.05 ? r.normal() : 0), 3)],
  ['tiny', data((_, r) => 1e-41 * r.normal(), 4)],
  ['huge', data((_, r) => 3e38 * (r.u() * 2 - 1), 5)],
  ['per-block scales', data((i, r) => r.normal() * 2 ** (((i >> 5) % 60) - 30), 6)],
  ['grid ties', data((_, r) => (Math.round(r.u() * 64) / 16 - 2) * 2 ** Math.floor(r.u() * 6 - 3), 7)],
];

test('MX and NVFP4 fast paths equal the references', () => {
  const failures: string[] = [];
  for (const id of IDS) {
    const s = resolveScheme(id);
    assert.ok(fastPath(id)?.quantize, `${id}: no fast path registered`);
    for (const [label, x] of SETS) {
      const want = s.quantizeRef(x, ROWS, ROW);
      for (const v of VARIANTS) {
        setWasmVariant(v);
        try {
          const got = quantizeScheme(s, x, ROWS, ROW);
          const at = want.findIndex((b, i) => got[i] !== b);
          if (got.length !== want.length || at >= 0) failures.push(`${id} ${label} (${v}): byte ${at}: ${got[at]} vs ${want[at]}`);
        } finally {
          setWasmVariant(undefined);
        }
      }
    }
  }
  assert.deepEqual(failures, []);
});

test('MX fast paths give NaN or infinite blocks the NaN scale; NVFP4 reports them', () => {
  const x = data((_, r) => r.normal(), 8);
  x[40] = NaN;
  x[100] = -Infinity;
  for (const id of IDS) {
    const s = resolveScheme(id);
    if (id === 'nvfp4') {
      assert.throws(() => quantizeScheme(s, x, ROWS, ROW), LowbitError);
      continue;
    }
    const got = quantizeScheme(s, x, ROWS, ROW);
    assert.deepEqual(got, s.quantizeRef(x, ROWS, ROW), id);
    assert.equal(got[s.bytesPerBlock], 0xff, `${id}: block 1 scale`);
  }
  assert.throws(() => quantizeScheme(resolveScheme('mxfp4'), x, 1, 100), LowbitError);
});
