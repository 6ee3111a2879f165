// Multi-threaded quantization (src/cli/quantize-pool.ts, `lowbit quantize --threads N`): the bytes do
// not depend on the number of threads or on how rows are split, with and without importance, for the
// WebAssembly-backed types and for reference-only types; worker errors read as the codec's own.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { QuantizePool } from '../src/cli/quantize-pool.js';
import { LowbitError } from '../src/errors.js';
import { gguf, GgufWriter } from '../src/io/gguf.js';
import { memorySink } from '../src/io/sink.js';
import { installWasmQuantizers } from '../src/kernels/ggml-quant.js';
import { ggmlCodec, ggmlTypeByName } from '../src/quant/ggml/index.js';

installWasmQuantizers();
const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-threads-'));

function normalRows(rows: number, rowLength: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const x = new Float32Array(rows * rowLength);
  for (let i = 0; i < x.length; i++) x[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) * (1 + (i % 97) / 20);
  return x;
}

test('QuantizePool: 1, 2 and 3 threads (caller working or not) write the bytes of the in-thread codec', async () => {
  const rows = 37; // uneven splits
  const rowLength = 512;
  const x = normalRows(rows, rowLength, 7);
  const importance = new Float32Array(rowLength).map((_, j) => 0.5 + (j % 13));
  const pools = [new QuantizePool(1), new QuantizePool(2, { minParallel: 0 }), new QuantizePool(3, { minParallel: 0, callerWorks: false }), new QuantizePool(2, { minParallel: 0, callerWorks: false })];
  try {
    const cases: [string, Float32Array | undefined][] = [
      ['Q8_0', undefined], ['Q4_0', undefined], ['Q4_K', undefined], ['Q6_K', undefined], ['MXFP4', undefined], ['NVFP4', undefined],
      ['Q4_K', importance], ['Q3_K', importance], ['IQ4_XS', undefined], ['TQ2_0', undefined],
    ];
    for (const [name, imp] of cases) {
      const type = ggmlTypeByName(name)!;
      const want = new Uint8Array((x.length / type.blockSize) * type.typeSize);
      ggmlCodec(type)!.quantize!(x, rows, rowLength, want, imp);
      for (const [k, pool] of pools.entries()) {
        const got = await pool.quantizeRows(type, x, rows, rowLength, imp);
        assert.deepEqual(got, want, `${name}${imp ? ' with importance' : ''}, pool ${k} (${pool.threads} threads)`);
        if (k >= 2) assert.deepEqual(pool.lastSplit, { byWorkers: pool.lastSplit.ranges, ranges: Math.min(rows, 8 * pool.threads) }, `pool ${k}: the workers ran every range`);
      }
    }
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
});

test('QuantizePool.errorRows: every type\'s ΔW (the sensitivity costs\' candidates in one job) equals the in-thread quantize + decode - rows, for any split', async () => {
  const rows = 37;
  const rowLength = 512;
  const x = normalRows(rows, rowLength, 11);
  const importance = new Float32Array(rowLength).map((_, j) => 0.5 + (j % 13));
  const types = ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_0'].map((n) => ggmlTypeByName(n)!);
  const pools = [new QuantizePool(1), new QuantizePool(2, { minParallel: 0 }), new QuantizePool(3, { minParallel: 0, callerWorks: false })];
  try {
    for (const weighted of [undefined, types.map((_, t) => t % 2 === 1)]) {
      const want = types.map((type, t) => {
        const blocks = new Uint8Array((x.length / type.blockSize) * type.typeSize);
        ggmlCodec(type)!.quantize!(x, rows, rowLength, blocks, weighted?.[t] ? importance : undefined);
        const d = new Float32Array(x.length);
        ggmlCodec(type)!.dequantize(blocks, x.length, d);
        for (let i = 0; i < d.length; i++) d[i] -= x[i];
        return d;
      });
      for (const [k, pool] of pools.entries()) {
        const got = await pool.errorRows(types, x, rows, rowLength, importance, weighted);
        assert.equal(got.length, types.length * x.length);
        types.forEach((type, t) => assert.deepEqual(got.subarray(t * x.length, (t + 1) * x.length), want[t], `${type.name}${weighted?.[t] ? ' with importance' : ''}, pool ${k} (${pool.threads} threads)`));
        if (k === 2) assert.equal(pool.lastSplit.byWorkers, pool.lastSplit.ranges, 'the workers ran every item');
      }
    }
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
});

test('QuantizePool: a worker error is reported exactly as the codec reports it', async () => {
  const pool = new QuantizePool(2, { minParallel: 0, callerWorks: false });
  try {
    const x = normalRows(8, 256, 3);
    x[7 * 256 + 5] = NaN;
    const type = ggmlTypeByName('Q4_K')!;
    let direct = '';
    try {
      ggmlCodec(type)!.quantize!(x, 8, 256, new Uint8Array(8 * 144));
    } catch (e) {
      direct = (e as Error).message;
    }
    assert.match(direct, /1797/);
    await assert.rejects(pool.quantizeRows(type, x, 8, 256), (e: unknown) => e instanceof LowbitError && e.message === direct);
  } finally {
    await pool.close();
  }
});

test('lowbit quantize --threads 1 and --threads 2 write identical files', async () => {
  // a GGUF with tensors large enough for the pool to split (> 65536 elements)
  const tensors = [
    { name: 'blk.0.ffn_up.weight', ne: [512, 384] },
    { name: 'blk.0.attn_q.weight', ne: [256, 300] },
    { name: 'output_norm.weight', ne: [512] },
  ];
  const sink = memorySink();
  const f32 = ggmlTypeByName('F32')!;
  const w = new GgufWriter(sink, [['general.architecture', gguf.str('llama')], ['general.name', gguf.str('threads-test')]], tensors.map((t) => ({ ...t, type: f32 })));
  await w.begin();
  for (const [k, t] of tensors.entries()) {
    const x = normalRows(t.ne.reduce((a, b) => a * b, 1) / t.ne[0], t.ne[0], 11 + k);
    await w.write(new Uint8Array(x.buffer));
  }
  await w.end();
  const input = path.join(tmp, 'in.gguf');
  fs.writeFileSync(input, sink.bytes());
  for (const type of ['q4_K', 'q8_0', 'ggml_mxfp4']) {
    const outs = ['1', '2'].map((n) => {
      const out = path.join(tmp, `out-${type}-${n}.gguf`);
      const r = spawnSync(process.execPath, [BIN, 'quantize', input, out, '--type', type, '--threads', n, '--json'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return fs.readFileSync(out);
    });
    assert.ok(outs[0].length > 100000, `${type}: output size ${outs[0].length}`);
    assert.ok(outs[0].equals(outs[1]), `${type}: --threads 1 and --threads 2 differ`);
  }
  const bad = spawnSync(process.execPath, [BIN, 'quantize', input, path.join(tmp, 'x.gguf'), '--type', 'q4_K', '--threads', '0'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /threads/);
});
