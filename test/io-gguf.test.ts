import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { convertModel, tokenizerFromLlama2c } from '../src/io/convert.js';
import { GgufType, plainValue, readGguf, readGgufTensor, writeGguf, type GgufArray, type GgufValue } from '../src/io/gguf.js';
import { openLlama2c } from '../src/io/llama2c.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { f32ToBf16, f32ToF16 } from '../src/formats/half.js';
import { GGML_TYPES } from '../src/quant/ggml/types.js';

const DATA = path.resolve(import.meta.dirname, '../../data');
const read = (f: string) => new Uint8Array(fs.readFileSync(path.join(DATA, f)));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

test('stories260K.gguf: parse, then rewrite byte-identically', async () => {
  const bytes = read('stories260K.gguf');
  const f = await readGguf(bytesSource(bytes, 'stories260K.gguf'));
  assert.equal(f.version, 3);
  assert.equal(f.tensors.length, 48);
  assert.equal((f.metadata.get('tokenizer.ggml.tokens')!.value as GgufArray).values.length, 512);
  assert.equal(plainValue(f.metadata.get('llama.block_count')!), 5);
  const s = memorySink();
  const ts = [];
  for (const t of f.tensors) ts.push({ name: t.name, ne: t.ne, type: t.type, data: await readGgufTensor(f, t) });
  await writeGguf(s, f.metadata, ts);
  assert.deepEqual(s.bytes(), bytes);
});

test('random write-then-read round trip: every value type, nested arrays, every GGML type, alignments', async () => {
  const rand = rng(7);
  for (let round = 0; round < 20; round++) {
    const alignment = [1, 8, 32, 64, 256][round % 5];
    const meta: [string, GgufValue][] = [['general.alignment', { type: GgufType.UINT32, value: alignment }]];
    const int = (n: number) => Math.floor(rand() * n);
    meta.push(['u8', { type: GgufType.UINT8, value: int(256) }]);
    meta.push(['i8', { type: GgufType.INT8, value: int(256) - 128 }]);
    meta.push(['u16', { type: GgufType.UINT16, value: int(65536) }]);
    meta.push(['i16', { type: GgufType.INT16, value: int(65536) - 32768 }]);
    meta.push(['u32', { type: GgufType.UINT32, value: int(2 ** 32) }]);
    meta.push(['i32', { type: GgufType.INT32, value: int(2 ** 32) - 2 ** 31 }]);
    meta.push(['f32', { type: GgufType.FLOAT32, value: Math.fround(rand() * 100 - 50) }]);
    meta.push(['f64', { type: GgufType.FLOAT64, value: rand() }]);
    meta.push(['bool', { type: GgufType.BOOL, value: rand() < 0.5 }]);
    meta.push(['u64', { type: GgufType.UINT64, value: 2n ** 63n + BigInt(int(1000)) }]);
    meta.push(['i64', { type: GgufType.INT64, value: -(2n ** 62n) }]);
    meta.push(['str', { type: GgufType.STRING, value: 'héllo ▁ 🙂' }]);
    meta.push(['bad-utf8', { type: GgufType.STRING, value: '\ufffd', raw: new Uint8Array([0xff]) }]);
    meta.push(['arr.f32', { type: GgufType.ARRAY, value: { itemType: GgufType.FLOAT32, values: Float32Array.from({ length: int(50) }, () => rand()) } }]);
    meta.push(['arr.u64', { type: GgufType.ARRAY, value: { itemType: GgufType.UINT64, values: BigUint64Array.from({ length: 3 }, () => BigInt(int(1e9))) } }]);
    meta.push(['arr.bool', { type: GgufType.ARRAY, value: { itemType: GgufType.BOOL, values: new Uint8Array([1, 0, 1, 1]) } }]);
    meta.push(['arr.str', { type: GgufType.ARRAY, value: { itemType: GgufType.STRING, values: ['', 'a', 'xyz'.repeat(int(10))] } }]);
    // strings read from the reader's buffer and across its 64 KiB refills (a vocabulary), some not UTF-8
    const enc = new TextEncoder();
    const vocab = Array.from({ length: 9000 + int(2000) }, (_, i) => '▁tok' + i + 'x'.repeat(int(12)));
    const vocabRaw = vocab.map((v) => enc.encode(v));
    vocab[17] = '\ufffd\ufffd';
    vocabRaw[17] = new Uint8Array([0xff, 0xfe]);
    meta.push(['arr.vocab', { type: GgufType.ARRAY, value: { itemType: GgufType.STRING, values: vocab, rawStrings: vocabRaw } }]);
    meta.push([
      'arr.nested',
      { type: GgufType.ARRAY, value: { itemType: GgufType.ARRAY, values: [{ itemType: GgufType.INT32, values: new Int32Array([1, 2]) }, { itemType: GgufType.ARRAY, values: [] }] } },
    ]);
    const tensors = GGML_TYPES.filter(() => rand() < 0.5).map((type, i) => {
      const ne = [type.blockSize * (1 + int(3)), 1 + int(3), ...(rand() < 0.3 ? [2] : [])];
      const n = ne.reduce((a, b) => a * b, 1);
      const data = Uint8Array.from({ length: (n / type.blockSize) * type.typeSize }, () => int(256));
      return { name: `t${i}.${type.name}`, ne, type, data };
    });
    const s = memorySink();
    await writeGguf(s, meta, tensors);
    const bytes = s.bytes();
    const f = await readGguf(bytesSource(bytes));
    assert.equal(f.alignment, alignment);
    assert.equal(f.dataOffset % alignment, 0);
    for (const [k, v] of meta) {
      const got = f.metadata.get(k)!;
      assert.equal(got.type, v.type, k);
      assert.deepEqual(plainValue(got), plainValue(v), k);
    }
    assert.deepEqual(f.metadata.get('bad-utf8')!.raw, new Uint8Array([0xff]));
    const gotVocab = f.metadata.get('arr.vocab')!.value as { values: string[]; rawStrings?: Uint8Array[] };
    assert.deepEqual(gotVocab.values, vocab);
    assert.deepEqual(gotVocab.rawStrings![17], new Uint8Array([0xff, 0xfe]));
    assert.deepEqual(gotVocab.rawStrings![18], vocabRaw[18]);
    let expectEnd = f.dataOffset;
    for (let i = 0; i < tensors.length; i++) {
      const t = f.tensors[i];
      assert.equal(t.name, tensors[i].name);
      assert.deepEqual(t.ne, tensors[i].ne);
      assert.equal(t.type.id, tensors[i].type.id);
      assert.equal(t.fileOffset, expectEnd, 'tensors are contiguous with padding');
      assert.equal(t.offset % alignment, 0);
      assert.deepEqual(await readGgufTensor(f, t), tensors[i].data);
      expectEnd += Math.ceil(t.byteLength / alignment) * alignment;
    }
    assert.equal(bytes.length, expectEnd, 'last tensor padded too');
    // rewrite is byte-identical
    const s2 = memorySink();
    await writeGguf(s2, f.metadata, await Promise.all(f.tensors.map(async (t) => ({ ...t, data: await readGgufTensor(f, t) }))));
    assert.deepEqual(s2.bytes(), bytes);
  }
});

test('llama2.c + tok512.bin -> GGUF is byte-identical to llama.cpp convert-llama2c-to-ggml output', async () => {
  const m = await openModelFile(bytesSource(read('stories260K.bin'), 'stories260K.bin'), { llama2c: openLlama2c });
  const tok = tokenizerFromLlama2c(read('tok512.bin'), 512);
  const s = memorySink();
  await convertModel(m, s, { to: 'gguf', tokenizer: [...tok.head, ...tok.special] });
  const ref = read('stories260K.gguf');
  assert.equal(s.length, ref.length);
  assert.deepEqual(s.bytes(), ref);
});

test('convert GGUF F32 -> F16 / BF16: values rounded to nearest even, 1-D tensors stay F32, chunking invisible', async () => {
  const src = await openModelFile(bytesSource(read('stories260K.gguf')));
  for (const type of ['F16', 'BF16'] as const) {
    const a = memorySink();
    await convertModel(src, a, { to: 'gguf', type });
    const b = memorySink();
    await convertModel(src, b, { to: 'gguf', type, chunkBytes: 100 });
    assert.deepEqual(a.bytes(), b.bytes(), 'chunk size must not change the output');
    const out = await openModelFile(bytesSource(a.bytes()));
    assert.deepEqual(plainValue(out.gguf!.metadata.get('tokenizer.ggml.tokens')!), plainValue(src.gguf!.metadata.get('tokenizer.ggml.tokens')!));
    for (const t of src.tensors) {
      const o = out.tensor(t.name);
      const x = await src.readFloat32(t);
      if (t.shape.length === 1) {
        assert.equal(o.type, 'F32');
        continue;
      }
      assert.equal(o.type, type);
      const bits = new Uint16Array((await out.read(o)).slice().buffer);
      const conv = type === 'F16' ? f32ToF16 : f32ToBf16;
      for (let i = 0; i < x.length; i++) if (bits[i] !== conv(x[i])) assert.fail(`${t.name}[${i}]`);
    }
  }
});

test('bulk F16/BF16 encoders are bit-identical to the scalar ones on special and random values', async () => {
  const { fromFloat32 } = await import('../src/io/tensor-data.js');
  const rand = rng(99);
  const special = [0, -0, 1, -1, 65504, 65519, 65520, 1e6, -1e6, Infinity, -Infinity, NaN, 2 ** -14, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -15 * 1.5, 1e-40, 3.4e38, 1.0009765625, 1.00048828125];
  const u = new Uint32Array(20000);
  for (let i = 0; i < u.length; i++) u[i] = Math.floor(rand() * 2 ** 32);
  const x = new Float32Array([...special, ...new Float32Array(u.buffer)]);
  const h16 = new Uint16Array(fromFloat32('F16', x).buffer);
  const hb = new Uint16Array(fromFloat32('BF16', x).buffer);
  for (let i = 0; i < x.length; i++) {
    assert.equal(h16[i], f32ToF16(x[i]), `F16 of ${x[i]}`);
    assert.equal(hb[i], f32ToBf16(x[i]), `BF16 of ${x[i]}`);
  }
});

test('GGUF v2 files are read (same layout as v3)', async () => {
  const b = read('stories260K.gguf').slice();
  b[4] = 2;
  const f = await readGguf(bytesSource(b));
  assert.equal(f.version, 2);
  assert.equal(f.tensors.length, 48);
});
