// The GGUF quantize loop's streaming (src/pipeline/quantize.ts): slabs read one ahead into two buffers
// (ModelFile.readInto, or read + copy), quantized in this thread or on the pool, with per-row error
// sums (quantizeRowsMeasured / rowErrorSums) for the SQNR. Checks that every path writes the bytes of
// one whole-tensor codec call and reports the same SQNR, that the WebAssembly and the JavaScript error
// sums agree bit for bit, and that a failure in the middle of the file (read error, NaN) rejects
// cleanly with no read left in flight and, in the CLI, leaves no output file; and the CLI's O_DIRECT
// sink (src/cli/direct-sink.ts) writes the same bytes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { llamaRecipe, schemeRecipe } from '../src/algos/recipe.js';
import { directSink } from '../src/cli/direct-sink.js';
import { withAtomicFile, type AtomicFile } from '../src/cli/files.js';
import { QuantizePool } from '../src/cli/quantize-pool.js';
import { gguf, GgufWriter } from '../src/io/gguf.js';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
import { memorySink, type MemorySink } from '../src/io/sink.js';
import { bytesSource, type ByteSource } from '../src/io/source.js';
import { fromFloat32, toFloat32 } from '../src/io/tensor-data.js';
import { quantizeRowsMeasured } from '../src/kernels/ggml-quant.js';
import { setWasmVariant } from '../src/kernels/wasm.js';
import { quantize, SLAB_ELEMENTS, type QuantizeReport, type RowQuantizer } from '../src/pipeline/quantize.js';
import { ggmlCodec, ggmlTypeByName } from '../src/quant/ggml/index.js';
import { rowErrorSums } from '../src/quant/ggml/row-error.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'lowbit.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-stream-'));

function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const x = new Float32Array(n);
  for (let i = 0; i < x.length; i++) x[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) * (1 + (i % 89) / 30);
  return x;
}

/** a GGUF whose big tensor spans 2 slabs (4096 x 1100 > SLAB_ELEMENTS), with F32 and F16 inputs */
const BIG = 'blk.0.ffn_up.weight';
const TENSORS = [
  { name: 'token_embd.weight', ne: [256, 64], type: 'F32' },
  { name: 'blk.0.attn_norm.weight', ne: [256], type: 'F32' },
  { name: BIG, ne: [4096, 1100], type: 'F32' },
  { name: 'blk.0.attn_k.weight', ne: [256, 96], type: 'F16' },
  { name: 'blk.0.attn_q.weight', ne: [256, 256], type: 'F32' },
];

async function makeGguf(poison?: (name: string, x: Float32Array) => void): Promise<{ bytes: Uint8Array; floats: Map<string, Float32Array> }> {
  const sink = memorySink();
  const floats = new Map<string, Float32Array>();
  const w = new GgufWriter(sink, [['general.architecture', gguf.str('llama')], ['general.name', gguf.str('stream-test')]], TENSORS.map((t) => ({ name: t.name, ne: t.ne, type: ggmlTypeByName(t.type)! })));
  await w.begin();
  for (const [k, t] of TENSORS.entries()) {
    let x = values(t.ne.reduce((a, b) => a * b, 1), 5 + k);
    poison?.(t.name, x);
    const bytes = fromFloat32(t.type as 'F32' | 'F16', x);
    x = toFloat32(t.type, bytes); // the values as stored
    floats.set(t.name, x);
    await w.write(bytes);
  }
  await w.end();
  return { bytes: sink.bytes(), floats };
}

/** the SQNR of rowErrorSums over the whole tensor, rows added in order */
function expectedSqnr(x: Float32Array, y: Float32Array, rowLength: number): number {
  const rows = x.length / rowLength;
  const e = new Float64Array(2 * rows);
  rowErrorSums(x, y, rows, rowLength, e);
  let s = 0;
  let n = 0;
  for (let r = 0; r < rows; r++) {
    s += e[2 * r];
    n += e[2 * r + 1];
  }
  return n === 0 ? Infinity : 10 * Math.log10(s / n);
}

/** a sink that takes its bytes only when its write resolves, a little later (buffers must not be reused before) */
function slowSink(): MemorySink {
  const inner = memorySink();
  return {
    get length() {
      return inner.length;
    },
    bytes: () => inner.bytes(),
    async write(b) {
      await new Promise((r) => setTimeout(r, 2));
      inner.write(b);
    },
  };
}

/** a byte source without readInto that counts reads in flight and can fail or delay some */
function countingSource(inner: ByteSource, o: { failAt?: number; delayMs?: number } = {}) {
  const state = { inFlight: 0, reads: 0 };
  const src: ByteSource = {
    size: inner.size,
    name: inner.name,
    async read(offset, length) {
      state.inFlight++;
      state.reads++;
      try {
        if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
        if (o.failAt !== undefined && offset + length > o.failAt) throw new Error(`simulated I/O error at ${offset}`);
        return (await inner.read(offset, length)).slice();
      } finally {
        state.inFlight--;
      }
    },
  };
  return { src, state };
}

test('rowErrorSums: the WebAssembly kernel and the JavaScript fallback give the same bits; within 1e-6 of the float64 sums', () => {
  const rowLength = 512;
  const rows = 37;
  const x = values(rows * rowLength, 3);
  const importance = new Float32Array(rowLength).map((_, j) => 0.5 + (j % 7));
  for (const [name, imp] of [['Q8_0'], ['Q4_0'], ['Q5_1'], ['Q4_K'], ['Q6_K'], ['Q3_K'], ['MXFP4'], ['NVFP4'], ['IQ4_XS'], ['Q4_K', importance]] as [string, Float32Array?][]) {
    const c = ggmlCodec(name)!;
    const want = new Uint8Array((x.length / c.type.blockSize) * c.type.typeSize);
    c.quantize!(x, rows, rowLength, want, imp);
    const y = new Float32Array(x.length);
    c.dequantize(want, x.length, y);
    const wantErr = new Float64Array(2 * rows);
    rowErrorSums(x, y, rows, rowLength, wantErr);
    for (const variant of [undefined, 'simd', 'off'] as const) {
      setWasmVariant(variant);
      try {
        const got = new Uint8Array(want.length);
        const err = new Float64Array(2 * rows);
        quantizeRowsMeasured(c, x, rows, rowLength, got, err, imp);
        assert.deepEqual(got, want, `${name} ${variant ?? 'wasm'} bytes`);
        assert.deepEqual(err, wantErr, `${name} ${variant ?? 'wasm'} error sums`);
      } finally {
        setWasmVariant(undefined);
      }
    }
    for (let r = 0; r < rows; r++) {
      let s = 0;
      let n = 0;
      for (let j = r * rowLength; j < (r + 1) * rowLength; j++) {
        s += x[j] * x[j];
        n += (x[j] - y[j]) ** 2;
      }
      assert.ok(Math.abs(wantErr[2 * r] - s) <= 1e-6 * s && Math.abs(wantErr[2 * r + 1] - n) <= 1e-6 * n, `${name} row ${r}`);
    }
  }
  // rows that are not a multiple of 8 (float targets): the tail goes to lane j mod 8
  const z = values(3 * 13, 9);
  const e = new Float64Array(6);
  rowErrorSums(z, new Float32Array(z.length), 3, 13, e);
  for (let r = 0; r < 3; r++) assert.ok(Math.abs(e[2 * r] - z.subarray(13 * r, 13 * r + 13).reduce((a, v) => a + v * v, 0)) < 1e-6 * e[2 * r]);
});

test('quantizeModel: read one slab ahead (readInto or read), in this thread or on the pool: the bytes of one codec call per tensor, same SQNR', async () => {
  assert.ok(4096 * 1100 > SLAB_ELEMENTS, 'the big tensor spans two slabs');
  const { bytes, floats } = await makeGguf();
  for (const type of ['ggml_q8_0', 'ggml_q4_k']) {
    const runs: [string, QuantizeReport, Uint8Array][] = [];
    const pool = new QuantizePool(2, { minParallel: 0 });
    try {
      const variants: [string, () => Promise<{ m: ModelFile; workers?: RowQuantizer; sink?: MemorySink }>][] = [
        ['readInto', async () => ({ m: await openModelFile(bytesSource(bytes)) })],
        ['read only', async () => {
          const m = await openModelFile(countingSource(bytesSource(bytes), { delayMs: 1 }).src);
          return { m: { ...m, readInto: undefined } };
        }],
        ['pool', async () => ({ m: await openModelFile(bytesSource(bytes)), workers: pool })],
        ['pool, slow sink', async () => ({ m: await openModelFile(bytesSource(bytes)), workers: pool, sink: slowSink() })],
      ];
      for (const [label, open] of variants) {
        const { m, workers, sink = memorySink() } = await open();
        const report = await quantize(m, schemeRecipe(type), sink, { output: 'gguf', workers });
        runs.push([label, report, sink.bytes()]);
      }
    } finally {
      await pool.close();
    }
    const [, first, out] = runs[0];
    for (const [label, report, b] of runs.slice(1)) {
      assert.ok(Buffer.from(b).equals(Buffer.from(out)), `${type}: ${label} wrote other bytes`);
      assert.deepEqual(report.tensors, first.tensors, `${type}: ${label} reported otherwise`);
    }
    const q = await openModelFile(bytesSource(out));
    for (const r of first.tensors) {
      const t = q.tensor(r.name);
      const x = floats.get(r.name)!;
      if (t.type === 'F32' || t.type === 'F16') continue;
      const c = ggmlCodec(t.type)!;
      const want = new Uint8Array(t.byteLength);
      c.quantize!(x, x.length / t.ne![0], t.ne![0], want);
      assert.ok(Buffer.from(await q.read(t)).equals(Buffer.from(want)), `${type} ${r.name}: the bytes of one codec call`);
      const y = new Float32Array(x.length);
      c.dequantize(want, x.length, y);
      assert.equal(r.sqnrDb, expectedSqnr(x, y, t.ne![0]), `${type} ${r.name} SQNR`);
    }
    assert.equal(first.tensors.find((r) => r.name === BIG)?.type, type.slice(5).toUpperCase());
  }
});

test('quantizeModel: a read error or a NaN in the middle of a tensor rejects with no read left in flight', async () => {
  const { bytes } = await makeGguf();
  const m0 = await openModelFile(bytesSource(bytes));
  const big = m0.tensor(BIG);
  // fails on the big tensor's second slab, while the first is being quantized
  const { src, state } = countingSource(bytesSource(bytes), { failAt: big.byteOffset + 4 * SLAB_ELEMENTS + 4, delayMs: 2 });
  const m = await openModelFile(src);
  await assert.rejects(quantize(m, schemeRecipe('ggml_q8_0'), memorySink(), { output: 'gguf' }), /simulated I\/O error/);
  assert.equal(state.inFlight, 0);

  const poisoned = await makeGguf((name, x) => {
    if (name === BIG) x[4096 * 1030 + 17] = NaN; // row 1030: the second slab (rows 1024..)
  });
  const pool = new QuantizePool(2, { minParallel: 0 });
  try {
    for (const workers of [undefined, pool]) {
      const c = countingSource(bytesSource(poisoned.bytes), { delayMs: 1 });
      const pm = await openModelFile(c.src);
      await assert.rejects(quantize(pm, schemeRecipe('ggml_q8_0'), memorySink(), { output: 'gguf', workers }), /blk\.0\.ffn_up\.weight \(rows counted from 1024\): .*\(row 6, column 17\) is NaN/);
      assert.equal(c.state.inFlight, 0);
    }
  } finally {
    await pool.close();
  }
});

test('lowbit quantize: a NaN in a later slab fails cleanly, no output and no temp file left', async () => {
  const { bytes } = await makeGguf((name, x) => {
    if (name === BIG) x[4096 * 1090] = Infinity;
  });
  const input = path.join(tmp, 'in.gguf');
  fs.writeFileSync(input, bytes);
  const out = path.join(tmp, 'out.gguf');
  for (const threads of ['1', '2']) {
    const r = spawnSync(process.execPath, [BIN, 'quantize', input, out, '--type', 'q8_0', '--threads', threads], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /blk\.0\.ffn_up\.weight \(rows counted from 1024\)/);
    assert.ok(!fs.existsSync(out), 'no output file');
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), [], 'no temp file left');
  }
  fs.writeFileSync(input, (await makeGguf()).bytes);
  const outs = ['1', '2'].map((threads) => {
    const r = spawnSync(process.execPath, [BIN, 'quantize', input, out, '--type', 'q8_0', '--threads', threads, '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return [fs.readFileSync(out), JSON.parse(r.stdout).tensors] as const;
  });
  assert.ok(outs[0][0].equals(outs[1][0]), '--threads 1 and 2: same bytes');
  const m = await openModelFile(bytesSource(fs.readFileSync(input)));
  const mem = memorySink();
  await quantize(m, llamaRecipe('Q8_0'), mem, { output: 'gguf' }); // what --type q8_0 means for a .gguf
  assert.ok(outs[0][0].equals(mem.bytes()), 'the file (O_DIRECT where the file system takes it) holds what quantizeModel writes');
  assert.deepEqual(outs[0][1], outs[1][1], '--threads 1 and 2: same report (SQNR included)');
});

test('directSink: O_DIRECT staging writes the same bytes (pieces of any size, stage rotations, the last partial block); abort leaves nothing', async (t) => {
  let s = 99;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const sizes = [0, 1, 4095, 4096, 4097, 65536, 65535, 200000, 3, 131072, 70001, 12];
  const pieces = sizes.map((n) => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256)));
  const want = Buffer.concat(pieces);
  const target = path.join(tmp, 'direct.bin');
  let used = false;
  await withAtomicFile(target, async (f) => {
    const sink = directSink(f, 65536); // small stages: several rotations
    if (!sink) return f.write(want); // no O_DIRECT here: nothing to test
    used = true;
    for (const p of pieces) {
      const copy = p.slice();
      await sink.write(copy);
      copy.fill(0); // the sink copied it: reusing the buffer at once is fine
    }
    await sink.flush();
    assert.equal(f.position, want.length);
  });
  assert.ok(fs.readFileSync(target).equals(want), 'same bytes');
  if (!used) t.diagnostic(`O_DIRECT unavailable in ${tmp}: directSink not exercised`);
  assert.equal(directSink({ position: 1 } as AtomicFile), undefined, 'only from the start of a file');

  const aborted = path.join(tmp, 'aborted.bin');
  await assert.rejects(
    withAtomicFile(aborted, async (f) => {
      const sink = directSink(f, 65536);
      if (sink) {
        await sink.write(new Uint8Array(300000).fill(5));
        await sink.settle();
      }
      throw new Error('stop');
    }),
    /stop/,
  );
  assert.ok(!fs.existsSync(aborted));
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), []);
});
