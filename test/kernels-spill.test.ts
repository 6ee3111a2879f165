/**
 * F32 one-token matmuls on rows in place (4 strands: MatmulEngine.f32Strands, wasm tile4x1s),
 * and weights in the second memory (MatmulEngine's spill engine: what does not fit the first 4 GiB): the
 * same bits as the row-by-row tiles and as the same weights in the first memory.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import v8 from 'node:v8';
import { useNodeThreads } from '../src/cli/threads.js';
import { hasRelaxedSimd } from '../src/env.js';
import '../src/index.js';
import { MatmulEngine, matmulLanesRef } from '../src/kernels/matmul.js';
import { ggmlCodecs } from '../src/quant/ggml/registry.js';
import { xorshift32 } from '../src/rng.js';

v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const variants = hasRelaxedSimd() ? (['relaxed', 'simd'] as const) : (['simd'] as const);

function normals(n: number, seed: number): Float32Array {
  const next = xorshift32(seed);
  const r = () => next() / 2 ** 32;
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()));
}

test('one-token F32 matmul on rows in place, in 4 strands (f32Strands): tile3x1\'s bits (plain SIMD: matmulLanesRef), 1 and 2 threads, rows not a multiple of 4, chunks at the private-area cap', () => {
  useNodeThreads();
  const f32 = ggmlCodecs.find((c) => c.type.name === 'F32')!.type;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    // 9001 rows on 2 threads: past the private area (decodeChunkRows: 4 chunks of 2256 rows, a last one of 2233)
    for (const [n, k] of [[1, 8], [3, 16], [7, 64], [19, 64], [1030, 512], [9001, 16]]) {
      const w = normals(n * k, n + k);
      const x = normals(k, 7 * k);
      const kw = e.storeWeight(f32, n, k, 4 * k, new Uint8Array(w.buffer.slice(0)))!;
      const want = new Float32Array(n);
      e.f32Strands = false;
      try {
        e.matmul(want, x, kw, 1);
      } finally {
        e.f32Strands = true;
      }
      if (variant === 'simd') {
        const lanes = new Float32Array(n);
        matmulLanesRef(lanes, x, w, 1, k, n);
        assert.deepEqual(want, lanes);
      }
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        // y in kernel memory, written in place (a y copied out of the engine's buffer would show the previous call's rows)
        const y = e.allocF32(n, kw)!.array.fill(NaN);
        try {
          e.matmul(y, x, kw, 1);
        } finally {
          e.setThreads(1);
        }
        assert.deepEqual(y, want, `${variant} N=${n} K=${k} ${threads} threads`);
      }
    }
  }
});

test('fused F32 one-token weights (fuseDecode): rows end to end with f32Strands, interleaved without; each the members\' own bits, 1 and 2 threads', () => {
  useNodeThreads();
  const f32 = ggmlCodecs.find((c) => c.type.name === 'F32')!.type;
  for (const variant of variants) {
    const e = MatmulEngine.get(variant)!;
    const k = 96;
    const ws = [44, 12, 20].map((n, i) => e.storeWeight(f32, n, k, 4 * k, new Uint8Array(normals(n * k, 100 + i).buffer))!);
    const x = normals(k, 5);
    const want = ws.flatMap((w) => {
      const y = new Float32Array(w.rows);
      e.matmul(y, x, w, 1);
      return [...y];
    });
    for (const strands of [true, false]) {
      e.f32Strands = strands;
      try {
        const fused = e.fuseDecode(ws)!;
        assert.equal(e.prepareDecode(fused), 76 * k * 4);
        for (const threads of [1, 2]) {
          e.setThreads(threads);
          const y = e.allocF32(76, fused)!.array.fill(NaN);
          try {
            e.matmul(y, x, fused, 1);
          } finally {
            e.setThreads(1);
          }
          assert.deepEqual([...y], want, `${variant} strands ${strands} threads ${threads}`);
        }
      } finally {
        e.f32Strands = true;
      }
    }
  }
});

test('weights past the first memory (the spill engine): the same bits as in the first, F32 and Q8_0, 1 token (rows, interleaved, fused) and 70, 1 and 2 threads; a model loaded there decodes the same logits; a stale rounding is not reused across memories', () => {
  // in a child process: the first memory is filled to its weight limit with never-touched pages (allocBytes
  // does not write them), so what is stored next goes to a second memory
  const root = new URL('../../', import.meta.url).pathname;
  const script = `
    import { readFileSync } from 'node:fs';
    import { useNodeThreads } from '${root}dist/src/cli/threads.js';
    import '${root}dist/src/index.js';
    import { MatmulEngine } from '${root}dist/src/kernels/matmul.js';
    import { ggmlCodecs } from '${root}dist/src/quant/ggml/registry.js';
    import { ggmlRowBytes } from '${root}dist/src/quant/ggml/types.js';
    import { loadModel } from '${root}dist/src/eval/load.js';
    import { bytesSource } from '${root}dist/src/io/source.js';
    useNodeThreads();
    const e = MatmulEngine.get();
    if (!e || !e.shared) { console.log('no engine'); process.exit(0); }
    const type = (name) => ggmlCodecs.find((c) => c.type.name === name).type;
    const [k, n] = [256, 1028];
    const q8 = ggmlCodecs.find((c) => c.type.name === 'Q8_0');
    const rb = ggmlRowBytes(q8.type, k);
    const qBytes = new Uint8Array(n * rb);
    q8.quantize(new Float32Array(n * k).map((_, i) => Math.sin(i * 0.37)), n, k, qBytes);
    const fBytes = new Uint8Array(new Float32Array(n * k).map((_, i) => Math.cos(i * 0.23)).buffer);
    const xs = [0.11, 0.29].map((s) => new Float32Array(70 * k).map((_, i) => Math.cos(i * s)));
    // every product of the three weights (F32, F32 with its interleaved copy, Q8_0 with its copy), a fused
    // q|k|v-like weight of the two F32 ones, 1 and 70 tokens, on 1 then 2 threads
    const products = (store) => {
      const wf = store(type('F32'), k * 4, fBytes);
      const wi = store(type('F32'), k * 4, fBytes);
      const wq = store(q8.type, rb, qBytes);
      // F32: an interleaved copy and fused copy (f32Strands off), and the rows end to end (on, the default)
      const E = wf.engine;
      E.f32Strands = false;
      const copied = E.prepareDecode(wi);
      const fusedI = E.fuseDecode([wf, wi]);
      E.f32Strands = true;
      const fusedR = E.fuseDecode([wf, wi]);
      if (!copied || !wq.engine.prepareDecode(wq) || !fusedI || !fusedR) throw new Error('no decode copy');
      const out = [];
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        for (const x of xs) {
          for (const [w, int] of [[wf, false], [wi, false], [wq, true], [fusedI, false], [fusedR, false]]) {
            for (const t of w.ptr === 0 ? [1] : [1, 70]) {
              const y = new Float32Array(t * w.rows).fill(NaN);
              if (int) w.engine.matmulInt(y, x, w, t); else w.engine.matmul(y, x, w, t);
              out.push(y);
            }
          }
        }
      }
      e.setThreads(1);
      return { out, engines: [wf, wi, wq, fusedI, fusedR].map((w) => w.engine) };
    };
    const first = products((t, rowBytes, bytes) => e.storeWeight(t, n, k, rowBytes, bytes));
    if (first.engines.some((x) => x !== e)) throw new Error('not in the first memory');
    const model = () => loadModel(bytesSource(new Uint8Array(readFileSync('${root}data/stories260K.gguf')), 'stories260K.gguf'), { activations: 'ggml' });
    const logits = (m) => {
      if (m.model.prepareDecode() <= 0) throw new Error('no decode copies');
      const out = [];
      for (const threads of [1, 2]) {
        e.setThreads(threads);
        [1, 50, 7, 300].forEach((id, p) => out.push(Float32Array.from(m.model.forward([id], p))));
      }
      e.setThreads(1);
      return out;
    };
    const wA = e.storeWeight(q8.type, 8, k, rb, qBytes.slice(0, 8 * rb)); // for the rounding check below
    const m1 = await model();
    const l1 = logits(m1);
    // fill the first memory up to its weight limit (256 MiB allocations, then smaller ones down to 64 bytes), kept alive
    const pads = [];
    for (const size of [2 ** 28, 2 ** 20, 2 ** 16, 2 ** 12, 64]) for (let p; (p = e.allocBytes(size)); ) pads.push(p);
    const second = products((t, rowBytes, bytes) => {
      const b = e.allocBytes(bytes.length, true);
      b.set(bytes);
      return e.storeWeight(t, n, k, rowBytes, b);
    });
    if (second.engines.some((x) => x === e)) throw new Error('not in the second memory');
    const third = products((t, rowBytes, bytes) => e.storeWeight(t, n, k, rowBytes, bytes)); // copied there
    const differ = (a, b, what) => a.forEach((y, j) => { for (let i = 0; i < y.length; i++) if (!Object.is(y[i], b[j][i])) { console.log('differs:', what, 'product', j, 'value', i, y[i], b[j][i]); process.exit(1); } });
    differ(second.out, first.out, 'allocBytes');
    differ(third.out, first.out, 'storeWeight');
    // a rounding left in the second memory's engine is not reused after the first memory's engine rounded
    // the same array anew (sameInput: the caller's input is the previous call's, on another engine)
    const x = xs[0].slice(0, k);
    const bq = e.allocBytes(8 * rb, true); bq.set(qBytes.subarray(0, 8 * rb));
    const wB2 = e.storeWeight(q8.type, 8, k, rb, bq);
    if (wA.engine !== e || wB2.engine === e) throw new Error('not one weight in each memory');
    const y = new Float32Array(8), want = new Float32Array(8);
    wB2.engine.matmulInt(y, x, wB2, 1);
    x.set(xs[1].subarray(0, k));
    e.matmulInt(y, x, wA, 1);
    wB2.engine.matmulInt(y, x, wB2, 1, true);
    wB2.engine.matmulInt(want, x.slice(), wB2, 1);
    differ([y], [want], 'sameInput across memories');
    const m2 = await model();
    const wq0 = m2.model.weights.layers[0].wq.kernel;
    if (!wq0 || wq0.engine === e) throw new Error('the model is not in the second memory');
    differ(logits(m2), l1, 'model logits');
    console.log('second memory ok');
    e.close();
  `;
  const file = join(mkdtempSync(join(tmpdir(), 'lowbit-spill-')), 'spill.mjs');
  writeFileSync(file, script);
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', file], { encoding: 'utf8', timeout: 120000 });
  rmSync(dirname(file), { recursive: true, force: true });
  assert.equal(r.signal, null, `the run hung: ${r.stdout}${r.stderr}`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /second memory ok|no engine/);
});
