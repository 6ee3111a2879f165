/**
 * Readers under attack: hand-made bad GGUF, safetensors and llama2.c files. Each must fail with a
 * LowbitError whose message names the problem: no hang, no crash trace, no allocation beyond the file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { LowbitError } from '../src/errors.js';
import { GgufType, readGguf } from '../src/io/gguf.js';
import { openLlama2c } from '../src/io/llama2c.js';
import { openModelFile } from '../src/io/model-file.js';
import { ByteWriter } from '../src/io/reader.js';
import { parseSafetensorsIndex, readSafetensors, readShardedSafetensors } from '../src/io/safetensors.js';
import { bytesSource } from '../src/io/source.js';

async function expectFail(p: Promise<unknown>, re: RegExp, label: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof LowbitError, `${label}: threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.match(e.message, re, `${label}: message "${e.message}"`);
    return;
  }
  assert.fail(`${label}: was accepted`);
}

// ---- GGUF builder: every field can be broken ----
interface RawTensor {
  name?: string;
  nameBytes?: Uint8Array;
  ne?: (number | bigint)[];
  nDims?: number;
  type?: number;
  offset?: number | bigint;
}
interface RawGguf {
  magic?: number;
  version?: number;
  nTensors?: number | bigint;
  nKv?: number | bigint;
  kv?: (w: ByteWriter) => void;
  tensors?: RawTensor[];
  data?: number; // bytes of data after the aligned header
  alignTo?: number;
}
const enc = new TextEncoder();
function str(w: ByteWriter, s: string | Uint8Array, len?: number | bigint): void {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  w.u64(len ?? b.length);
  w.bytes(b);
}
function kvU32(w: ByteWriter, k: string, v: number): void {
  str(w, k);
  w.u32(GgufType.UINT32);
  w.u32(v);
}
function gguf(o: RawGguf = {}): Uint8Array {
  const w = new ByteWriter();
  const tensors = o.tensors ?? [{ name: 'a', ne: [8, 2], type: 0, offset: 0 }];
  w.u32(o.magic ?? 0x46554747);
  w.u32(o.version ?? 3);
  w.u64(o.nTensors ?? tensors.length);
  w.u64(o.nKv ?? (o.kv ? 1 : 0));
  o.kv?.(w);
  for (const t of tensors) {
    str(w, t.nameBytes ?? t.name ?? 'a');
    const ne = t.ne ?? [8, 2];
    w.u32(t.nDims ?? ne.length);
    for (const d of ne) w.i64(d);
    w.u32(t.type ?? 0);
    w.u64(t.offset ?? 0);
  }
  const a = o.alignTo ?? 32;
  w.zeros((a - (w.length % a)) % a);
  w.zeros(o.data ?? 64);
  return w.result();
}
const g = (b: Uint8Array) => readGguf(bytesSource(b, 'bad.gguf'));

const GGUF_CASES: [string, () => Uint8Array, RegExp][] = [
  ['empty file', () => new Uint8Array(0), /too short/],
  ['bad magic', () => gguf({ magic: 0x12345678 }), /bad magic/],
  ['future version', () => gguf({ version: 4 }), /version 4 is newer/],
  ['version 1', () => gguf({ version: 1 }), /version 1 is not supported/],
  ['big-endian version', () => gguf({ version: 0x03000000 }), /big-endian/],
  ['version 0', () => gguf({ version: 0 }), /version 0 is invalid/],
  ['truncated header', () => gguf().subarray(0, 10), /truncated: header/],
  ['truncated in key', () => gguf({ tensors: [], kv: (w) => kvU32(w, 'general.alignment', 32) }).subarray(0, 42), /truncated|past the end/],
  ['truncated data', () => gguf({ data: 64 }).subarray(0, 96 + 40), /runs past the end|truncated/],
  ['duplicate key', () => gguf({ nKv: 2, kv: (w) => (kvU32(w, 'x', 1), kvU32(w, 'x', 2)) }), /duplicate metadata key 'x'/],
  ['key length past end', () => gguf({ kv: (w) => str(w, 'k', 1n << 40n) }), /runs past the end/],
  ['key length > 2^53', () => gguf({ kv: (w) => str(w, 'k', 1n << 62n) }), /impossibly large/],
  ['empty key', () => gguf({ kv: (w) => (str(w, ''), w.u32(4), w.u32(1)) }), /key #0 is empty/],
  ['n_tensors huge', () => gguf({ nTensors: 1n << 40n }), /tensor count .* larger than the file/],
  ['n_kv huge', () => gguf({ nKv: 1n << 50n }), /metadata count .* larger than the file/],
  ['unknown value type', () => gguf({ kv: (w) => (str(w, 'k'), w.u32(13)) }), /unknown value type 13/],
  ['unknown array item type', () => gguf({ kv: (w) => (str(w, 'k'), w.u32(9), w.u32(77), w.u64(1)) }), /array of unknown value type 77/],
  ['array count huge', () => gguf({ kv: (w) => (str(w, 'k'), w.u32(9), w.u32(GgufType.UINT32), w.u64(1n << 40n)) }), /runs past the end/],
  ['string array count huge', () => gguf({ kv: (w) => (str(w, 'k'), w.u32(9), w.u32(GgufType.STRING), w.u64(1n << 30n)) }), /runs past the end/],
  [
    'arrays nested too deep',
    () =>
      gguf({
        kv: (w) => {
          str(w, 'k');
          w.u32(9);
          for (let i = 0; i < 12; i++) (w.u32(9), w.u64(1));
          w.u32(0);
          w.u64(0);
        },
        data: 256,
      }),
    /deeper than/,
  ],
  ['non-UTF-8 key', () => gguf({ kv: (w) => (str(w, new Uint8Array([0xff, 0xfe])), w.u32(4), w.u32(1)) }), /not valid UTF-8/],
  ['non-UTF-8 tensor name', () => gguf({ tensors: [{ nameBytes: new Uint8Array([0xc3, 0x28]) }] }), /tensor name #0 is not valid UTF-8/],
  ['duplicate tensor name', () => gguf({ tensors: [{ name: 'a' }, { name: 'a', offset: 64 }], data: 128 }), /duplicate tensor name 'a'/],
  ['5 dimensions', () => gguf({ tensors: [{ ne: [1, 1, 1, 1, 1] }] }), /5 dimensions/],
  ['negative dimension', () => gguf({ tensors: [{ ne: [8, -2] }] }), /dimension 1 is negative/],
  ['overflowing shape product', () => gguf({ tensors: [{ ne: [1n << 40n, 1n << 40n] }] }), /too many elements|overflow/],
  ['unknown type id 99', () => gguf({ tensors: [{ type: 99 }] }), /unknown GGML type id 99/],
  ['removed type id 4 (Q4_2)', () => gguf({ tensors: [{ type: 4 }] }), /unknown GGML type id 4/],
  ['row not a multiple of the block size', () => gguf({ tensors: [{ type: 2, ne: [16, 2] }] }), /not a multiple of the block size 32/],
  ['misaligned offset', () => gguf({ tensors: [{ offset: 4 }] }), /not a multiple of the alignment/],
  ['tensor offset past end', () => gguf({ tensors: [{ offset: 1 << 20 }] }), /runs past the end/],
  ['overlapping tensors', () => gguf({ tensors: [{ name: 'a', ne: [16, 2] }, { name: 'b', ne: [8, 2], offset: 32 }], data: 256 }), /overlap/],
  ['alignment not a power of 2', () => gguf({ kv: (w) => kvU32(w, 'general.alignment', 24) }), /not a power of 2/],
  ['alignment of the wrong type', () => gguf({ kv: (w) => (str(w, 'general.alignment'), w.u32(GgufType.INT32), w.i32(32)) }), /general.alignment has type i32/],
  ['tensor info truncated', () => gguf().subarray(0, 54), /truncated: shape of tensor 'a'/],
];

test(`GGUF reader rejects ${GGUF_CASES.length} bad files with clear errors`, async () => {
  assert.ok(GGUF_CASES.length >= 20);
  for (const [label, make, re] of GGUF_CASES) await expectFail(g(make()), re, label);
});

test('the GGUF builder makes a valid file when nothing is broken', async () => {
  const f = await g(gguf({ kv: (w) => kvU32(w, 'general.alignment', 32) }));
  assert.equal(f.tensors.length, 1);
  assert.equal(f.tensors[0].byteLength, 64);
});

// ---- safetensors ----
function st(header: string | Uint8Array, data = 0, sizeOverride?: bigint): Uint8Array {
  const h = typeof header === 'string' ? enc.encode(header) : header;
  const out = new Uint8Array(8 + h.length + data);
  new DataView(out.buffer).setBigUint64(0, sizeOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  return out;
}
const T = (dtype: string, shape: unknown, offs: unknown) => ({ dtype, shape, data_offsets: offs });
const J = (o: unknown) => JSON.stringify(o);
const s = (b: Uint8Array) => readSafetensors(bytesSource(b, 'bad.safetensors'));

const ST_CASES: [string, () => Uint8Array, RegExp][] = [
  ['shorter than 8 bytes', () => new Uint8Array(5), /too short/],
  ['header size over the cap', () => st('{}', 0, 200_000_000n), /exceeds the 100000000-byte limit/],
  ['header size larger than the file', () => st('{}', 0, 1000n), /larger than the file/],
  ['header size 0', () => st('', 4), /too small/],
  ['header not UTF-8', () => st(new Uint8Array([0x7b, 0xff, 0x7d])), /not valid UTF-8/],
  ['header not JSON', () => st('{"a":'), /not valid JSON/],
  ['header is an array', () => st('[1]'), /does not start with '\{'/],
  ['header starts with whitespace', () => st(' {}'), /does not start with '\{'/],
  ['header is a JSON string', () => st('"{}"'), /does not start/],
  ['duplicate key', () => st(`{"a":${J(T('U8', [1], [0, 1]))},"a":${J(T('U8', [1], [1, 2]))}}`, 2), /duplicate key 'a'/],
  ['unknown dtype', () => st(J({ a: T('F12', [1], [0, 2]) }), 2), /unknown dtype "F12"/],
  ['shape not an array', () => st(J({ a: T('U8', 3, [0, 3]) }), 3), /invalid shape/],
  ['negative dimension', () => st(J({ a: T('U8', [-1], [0, 0]) })), /invalid shape/],
  ['fractional dimension', () => st(J({ a: T('U8', [1.5], [0, 1]) }), 1), /invalid shape/],
  ['data_offsets of wrong length', () => st(J({ a: T('U8', [1], [0]) }), 1), /invalid data_offsets/],
  ['end before begin', () => st(J({ a: T('U8', [0], [4, 2]) }), 4), /end 2 < begin 4/],
  ['offsets past the end (truncated data)', () => st(J({ a: T('F32', [4], [0, 16]) }), 8), /run past the end/],
  ['shape x dtype != byte length', () => st(J({ a: T('F32', [3], [0, 16]) }), 16), /is 12 bytes but data_offsets span 16/],
  ['overlapping ranges', () => st(J({ a: T('U8', [4], [0, 4]), b: T('U8', [4], [2, 6]) }), 6), /overlaps/],
  ['gap between tensors', () => st(J({ a: T('U8', [2], [0, 2]), b: T('U8', [2], [4, 6]) }), 6), /gap/],
  ['trailing bytes not covered', () => st(J({ a: T('U8', [2], [0, 2]) }), 5), /cover 2/],
  ['__metadata__ with a number', () => st(J({ __metadata__: { a: 1 } })), /__metadata__ 'a' is not a string/],
  ['__metadata__ not an object', () => st(J({ __metadata__: 'x' })), /__metadata__ is not an object/],
  ['overflowing shape', () => st(J({ a: T('F64', [2 ** 40, 2 ** 40], [0, 8]) }), 8), /overflows/],
  ['tensor entry not an object', () => st(J({ a: 5 })), /entry is not an object/],
];

test(`safetensors reader rejects ${ST_CASES.length} bad files with clear errors`, async () => {
  assert.ok(ST_CASES.length >= 20);
  for (const [label, make, re] of ST_CASES) await expectFail(s(make()), re, label);
});

test('sharded safetensors: bad index and inconsistent shards', async () => {
  assert.throws(() => parseSafetensorsIndex('{'), /not valid JSON/);
  assert.throws(() => parseSafetensorsIndex('{"metadata":{}}'), /no weight_map/);
  assert.throws(() => parseSafetensorsIndex('{"weight_map":{"a":"../x.safetensors"}}'), /invalid shard/);
  const shard = st(J({ a: T('U8', [1], [0, 1]) }), 1);
  const open = async () => bytesSource(shard, 's1.safetensors');
  await expectFail(readShardedSafetensors(parseSafetensorsIndex('{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}}'), open), /does not contain it/, 'missing tensor');
  await expectFail(readShardedSafetensors(parseSafetensorsIndex('{"weight_map":{"a":"s1.safetensors","x":"s2.safetensors"}}'), open), /also in shard|not mapped/, 'same shard twice');
  await expectFail(openModelFile(bytesSource(enc.encode('{"weight_map":{}}'), 'index.json')), /needs access to its shard files/, 'no opener');
});

// ---- llama2.c header ----
function l2c(h: number[], extraFloats?: number): Uint8Array {
  const [dim, hidden, layers, heads, kv, vocab, seq] = h;
  const head = dim / heads;
  const floats = extraFloats ?? Math.abs(vocab) * dim + layers * (2 * dim + 2 * dim * dim + 2 * (kv * head) * dim + 3 * hidden * dim) + dim + seq * head + (vocab < 0 ? -vocab * dim : 0);
  const out = new Uint8Array(28 + Math.max(0, floats) * 4);
  const dv = new DataView(out.buffer);
  h.forEach((v, i) => dv.setInt32(i * 4, v, true));
  return out;
}
const good = [8, 16, 2, 2, 1, 10, 4];
const L2C_CASES: [string, () => Uint8Array, RegExp][] = [
  ['too short', () => new Uint8Array(20), /too short/],
  ['dim 0', () => l2c([0, 16, 2, 2, 1, 10, 4], 0), /dim 0/],
  ['dim negative', () => l2c([-8, 16, 2, 2, 1, 10, 4], 0), /dim -8/],
  ['hidden_dim 0', () => l2c([8, 0, 2, 2, 1, 10, 4], 0), /hidden_dim 0/],
  ['negative layers', () => l2c([8, 16, -2, 2, 1, 10, 4], 0), /n_layers -2/],
  ['heads not dividing dim', () => l2c([8, 16, 2, 3, 1, 10, 4], 0), /n_heads 3/],
  ['kv heads not dividing heads', () => l2c([8, 16, 2, 4, 3, 10, 4], 0), /n_kv_heads 3/],
  ['kv heads 0', () => l2c([8, 16, 2, 2, 0, 10, 4], 0), /n_kv_heads 0/],
  ['vocab 0', () => l2c([8, 16, 2, 2, 1, 0, 4], 0), /vocab_size 0/],
  ['seq_len negative', () => l2c([8, 16, 2, 2, 1, 10, -4], 0), /seq_len -4/],
  ['ak42 magic', () => l2c([0x616b3432, 1, 1, 1, 1, 1, 1], 0), /ak42/],
  ['truncated weights', () => l2c(good).subarray(0, 100), /does not match/],
  ['extra bytes', () => new Uint8Array([...l2c(good), 0, 0, 0, 0]), /does not match/],
  ['negative vocab with shared-size file', () => l2c([8, 16, 2, 2, 1, -10, 4], 200), /does not match/],
];

test(`llama2.c header checks reject ${L2C_CASES.length} bad files`, async () => {
  for (const [label, make, re] of L2C_CASES) await expectFail(openLlama2c(bytesSource(make(), 'bad.bin')), re, label);
  const ok = await openLlama2c(bytesSource(l2c(good), 'ok.bin'));
  assert.equal(ok.tensors.length, 2 + 9 * 2); // shared classifier: no output.weight
});

test('the CLI exits with code 2 and a one-line message for bad files', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-bad-'));
  const bin = path.resolve(import.meta.dirname, '../../bin/lowbit.js');
  const cases: [string, Uint8Array, string[], RegExp][] = [
    ['a.gguf', gguf({ version: 9 }), ['inspect'], /version 9/],
    ['b.safetensors', st(J({ a: T('F32', [3], [0, 16]) }), 16), ['inspect'], /data_offsets span 16/],
    ['c.gguf', gguf({ tensors: [{ type: 99 }] }), ['convert', '@', path.join(dir, 'out.safetensors')], /unknown GGML type id 99/],
    ['d.bin', l2c([8, 16, 2, 3, 1, 10, 4], 0), ['inspect'], /n_heads 3/],
  ];
  for (const [name, bytes, args, re] of cases) {
    const f = path.join(dir, name);
    fs.writeFileSync(f, bytes);
    const argv = args.includes('@') ? args.map((a) => (a === '@' ? f : a)) : [...args, f];
    const r = spawnSync(process.execPath, [bin, ...argv], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${name}: exit ${r.status}, stderr ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, `${name}: ${r.stderr}`);
  }
  assert.ok(!fs.existsSync(path.join(dir, 'out.safetensors')), 'failed convert left an output');
  fs.rmSync(dir, { recursive: true, force: true });
});
