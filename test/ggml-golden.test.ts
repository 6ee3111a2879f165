import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GGML_TYPES, ggmlTypeById } from '../src/quant/ggml/types.js';
import { loadGolden, loadGoldenManifest, readGoldenFile, sha256Hex } from './ggml-golden.js';

const NOT_BLOCK_TYPES = new Set(['F32', 'I8', 'I16', 'I32', 'I64', 'F64']);

test('golden manifest: every file has its recorded size and sha256, and no content is stored twice', () => {
  const m = loadGoldenManifest();
  assert.ok(m.files.length > 0);
  const seen = new Set<string>();
  for (const f of m.files) {
    const data = readGoldenFile(f.name);
    assert.equal(data.length, f.bytes, `${f.name} size`);
    assert.equal(sha256Hex(data), f.sha256, `${f.name} sha256`);
    assert.ok(!seen.has(f.sha256), `${f.name} duplicates another file`);
    seen.add(f.sha256);
  }
});

test('golden manifest: entry sizes follow rows * rowLength / blockSize * typeSize', () => {
  const m = loadGoldenManifest();
  const sizes = new Map(m.files.map((f) => [f.name, f.bytes]));
  assert.equal(m.failures.length, 0, `llama.cpp failed on: ${JSON.stringify(m.failures)}`);
  for (const e of m.entries) {
    const what = `${e.type} ${e.dataset} ${e.variant}`;
    const n = e.rows * e.rowLength;
    assert.equal(n % e.blockSize, 0, what);
    assert.equal(sizes.get(e.bytes), (n / e.blockSize) * e.typeSize, `${what} bytes`);
    if (e.dequant !== null) assert.equal(sizes.get(e.dequant), n * 4, `${what} dequant`);
    if (e.variant === 'dequant') assert.equal(e.input, undefined, what);
    else assert.equal(sizes.get(e.input!), n * 4, `${what} input`);
    if (e.variant === 'imatrix') assert.equal(sizes.get(e.importance!), e.rowLength * 4, `${what} importance`);
    else assert.equal(e.importance, undefined, what);
  }
});

test('golden type table agrees with ggml type traits and src/quant/ggml/types.ts', () => {
  const m = loadGoldenManifest();
  const ggmlIds = new Set(m.ggmlTypes.map((t) => t.id));
  for (const g of m.ggmlTypes) {
    const t = ggmlTypeById(g.id);
    assert.equal(t.name, g.name, `type ${g.id} name`);
    assert.equal(t.blockSize, g.blockSize, `${g.name} block size`);
    assert.equal(t.typeSize, g.typeSize, `${g.name} bytes per block`);
  }
  for (const t of GGML_TYPES) assert.ok(ggmlIds.has(t.id), `${t.name} (id ${t.id}) is not a ggml type`);
  for (const e of m.entries) {
    const t = ggmlTypeById(e.id);
    assert.equal(t.name, e.type);
    assert.equal(t.blockSize, e.blockSize);
    assert.equal(t.typeSize, e.typeSize);
  }
});

test('golden vectors cover every block type in src/quant/ggml/types.ts', () => {
  const m = loadGoldenManifest();
  for (const t of GGML_TYPES) {
    if (NOT_BLOCK_TYPES.has(t.name)) continue;
    const variants = new Set(m.entries.filter((e) => e.id === t.id).map((e) => e.variant));
    assert.ok(variants.size > 0, `${t.name} has no golden vectors`);
    const g = m.ggmlTypes.find((x) => x.id === t.id)!;
    if (g.hasRef) assert.ok(variants.has('ref'), `${t.name} lacks ref vectors`);
    if (t.name !== 'F16' && t.name !== 'BF16') assert.ok(variants.has('dequant'), `${t.name} lacks random-block dequant vectors`);
  }
});

test('golden loader returns typed arrays of consistent lengths; zero input dequantizes to zero', () => {
  const entries = loadGolden();
  assert.equal(entries.length, loadGoldenManifest().entries.length);
  for (const e of entries) {
    const n = e.rows * e.rowLength;
    assert.equal(e.bytes.length, (n / e.blockSize) * e.typeSize);
    if (e.input) assert.equal(e.input.length, n);
    if (e.dequant) assert.equal(e.dequant.length, n);
    if (e.dataset === 'zero' && e.dequant) assert.ok(e.dequant.every((v) => v === 0), `${e.type} ${e.variant}: zero row`);
  }
  assert.ok(loadGolden({ type: 'q4_k', variant: 'imatrix' }).every((e) => e.type === 'Q4_K' && e.importance !== undefined));
});
