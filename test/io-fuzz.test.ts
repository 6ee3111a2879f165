/**
 * Seeded fuzz: random byte flips and truncations of valid GGUF, safetensors and llama2.c files.
 * Opening (and reading every tensor of) a damaged file must either work or throw a LowbitError;
 * anything else (RangeError, TypeError, a hang) is a reader bug.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LowbitError } from '../src/errors.js';
import { gguf, GgufType, writeGguf, type GgufValue } from '../src/io/gguf.js';
import { openLlama2c } from '../src/io/llama2c.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { bytesSource } from '../src/io/source.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function sampleGguf(): Promise<Uint8Array> {
  const nested: GgufValue = {
    type: GgufType.ARRAY,
    value: { itemType: GgufType.ARRAY, values: [{ itemType: GgufType.INT16, values: new Int16Array([1, -2]) }, { itemType: GgufType.STRING, values: ['a', 'bc'] }] },
  };
  const meta: [string, GgufValue][] = [
    ['general.architecture', gguf.str('llama')],
    ['u8', { type: GgufType.UINT8, value: 7 }],
    ['i64', { type: GgufType.INT64, value: -5n }],
    ['f64', { type: GgufType.FLOAT64, value: 0.1 }],
    ['flag', gguf.bool(true)],
    ['bools', { type: GgufType.ARRAY, value: { itemType: GgufType.BOOL, values: new Uint8Array([1, 0, 1]) } }],
    ['tokens', gguf.strings(['<unk>', 'a', 'b c'])],
    ['nested', nested],
  ];
  const t = (name: string, type: string, ne: number[]) => {
    const info = ggmlTypeByName(type)!;
    const n = ne.reduce((a, b) => a * b, 1);
    const data = new Uint8Array((n / info.blockSize) * info.typeSize);
    for (let i = 0; i < data.length; i++) data[i] = (i * 37) & 0x3f; // finite halves/floats
    return { name, ne, type: info, data };
  };
  const s = memorySink();
  await writeGguf(s, meta, [t('a', 'F32', [8, 2]), t('b', 'F16', [16]), t('c', 'BF16', [4, 2, 2]), t('d', 'Q8_0', [32, 2]), t('e', 'I8', [5])]);
  return s.bytes();
}

async function sampleSafetensors(): Promise<Uint8Array> {
  const s = memorySink();
  await writeSafetensors(
    s,
    [
      { name: 'w', dtype: 'F32', shape: [2, 3], data: new Uint8Array(24) },
      { name: 'h', dtype: 'F16', shape: [4], data: new Uint8Array(8) },
      { name: 'q', dtype: 'F8_E4M3', shape: [3], data: new Uint8Array(3) },
      { name: 'm', dtype: 'BOOL', shape: [2], data: new Uint8Array(2) },
    ],
    { format: 'pt' },
  );
  return s.bytes();
}

function sampleLlama2c(): Uint8Array {
  const h = [8, 16, 2, 2, 1, 10, 4];
  const floats = 10 * 8 + 2 * (16 + 128 + 2 * 32 + 3 * 128) + 8 + 4 * 4;
  const out = new Uint8Array(28 + floats * 4);
  h.forEach((v, i) => new DataView(out.buffer).setInt32(i * 4, v, true));
  return out;
}

async function attempt(bytes: Uint8Array, llama2c: boolean): Promise<'ok' | 'rejected'> {
  try {
    const m = await openModelFile(bytesSource(bytes, 'fuzz'), { llama2c: llama2c ? openLlama2c : undefined });
    for (const t of m.tensors) {
      await m.read(t);
      try {
        await m.readFloat32(t);
      } catch (e) {
        if (!(e instanceof LowbitError)) throw e;
      }
    }
    return 'ok';
  } catch (e) {
    if (e instanceof LowbitError) return 'rejected';
    throw new Error(`non-LowbitError ${(e as Error)?.name}: ${(e as Error)?.message}`, { cause: e });
  }
}

test('fuzz: damaged files only ever raise LowbitError', async () => {
  const samples: [string, Uint8Array, boolean][] = [
    ['gguf', await sampleGguf(), false],
    ['safetensors', await sampleSafetensors(), false],
    ['llama2c', sampleLlama2c(), true],
  ];
  const rand = rng(12345);
  const counts = { ok: 0, rejected: 0 };
  for (const [label, base, l2c] of samples) {
    assert.equal(await attempt(base, l2c), 'ok', `${label} sample must open`);
    const headerEnd = Math.min(base.length, label === 'llama2c' ? 28 : 700);
    for (let i = 0; i < 1200; i++) {
      let b = base.slice();
      const mode = rand();
      if (mode < 0.45) {
        const flips = 1 + Math.floor(rand() * 4);
        for (let k = 0; k < flips; k++) {
          const at = Math.floor(rand() * (rand() < 0.8 ? headerEnd : b.length));
          b[at] = rand() < 0.5 ? b[at] ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
        }
      } else if (mode < 0.75) {
        b = b.subarray(0, Math.floor(rand() * b.length));
      } else {
        const at = Math.floor(rand() * headerEnd);
        b[at] = 0xff;
        if (at + 1 < b.length) b[at + 1] = 0xff;
        b = b.subarray(0, b.length - Math.floor(rand() * 64));
      }
      try {
        counts[await attempt(b, l2c)]++;
      } catch (e) {
        assert.fail(`${label} case ${i}: ${(e as Error).message}`);
      }
    }
  }
  assert.ok(counts.rejected > 1000, `only ${counts.rejected} rejected`);
});
