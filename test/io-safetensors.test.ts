import assert from 'node:assert/strict';
import { test } from 'node:test';
import { convertModel } from '../src/io/convert.js';
import { ggufToHfName, hfToGgufName, toGgufRows, toHfRows } from '../src/io/hf-llama.js';
import { openModelFile } from '../src/io/model-file.js';
import { readSafetensors, SAFETENSORS_DTYPES, writeSafetensors } from '../src/io/safetensors.js';
import { dequantizePackedInt4, findPackedInt4 } from '../src/io/packed-int4.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource, type ByteSource } from '../src/io/source.js';
import { toFloat32 } from '../src/io/tensor-data.js';
import { f16ToF32, f32ToF16 } from '../src/formats/half.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

test('safetensors round trip: every dtype, __metadata__, 8-byte aligned data, contiguous offsets', async () => {
  const rand = rng(3);
  const tensors = Object.entries(SAFETENSORS_DTYPES).map(([dtype, size], i) => {
    const shape = [1 + Math.floor(rand() * 4), 1 + Math.floor(rand() * 5)];
    const data = Uint8Array.from({ length: shape[0] * shape[1] * size }, () => Math.floor(rand() * 256));
    return { name: `t${i}.${dtype}`, dtype, shape, data };
  });
  tensors.push({ name: 'empty', dtype: 'F32', shape: [0, 3], data: new Uint8Array(0) });
  const s = memorySink();
  await writeSafetensors(s, tensors, { format: 'pt', note: 'ünïcode' });
  const bytes = s.bytes();
  const f = await readSafetensors(bytesSource(bytes));
  assert.equal(f.dataOffset % 8, 0);
  assert.deepEqual(f.metadata, { format: 'pt', note: 'ünïcode' });
  assert.equal(f.tensors.length, tensors.length);
  for (const t of tensors) {
    const got = f.tensors.find((x) => x.name === t.name)!;
    assert.equal(got.dtype, t.dtype);
    assert.deepEqual(got.shape, t.shape);
    assert.deepEqual(await got.source.read(got.fileOffset, got.byteLength), t.data);
  }
});

test('float dtypes decode exactly (F16, BF16, F8_E4M3, F8_E5M2 spot values)', () => {
  assert.deepEqual(Array.from(toFloat32('F16', new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00]))), [1, -2, 2 ** -24]);
  assert.deepEqual(Array.from(toFloat32('BF16', new Uint8Array([0x80, 0x3f, 0xc0, 0x40]))), [1, 6]);
  assert.deepEqual(Array.from(toFloat32('F8_E4M3', new Uint8Array([0x38, 0x7e, 0x01]))), [1, 448, 2 ** -9]);
  assert.ok(Number.isNaN(toFloat32('F8_E4M3', new Uint8Array([0x7f]))[0]));
  assert.deepEqual(Array.from(toFloat32('F8_E5M2', new Uint8Array([0x3c, 0x7b, 0x7c]))), [1, 57344, Infinity]);
});

test('sharded checkpoint through model.safetensors.index.json', async () => {
  const files = new Map<string, Uint8Array>();
  const mk = async (name: string, ts: { name: string; data: number[] }[]) => {
    const s = memorySink();
    await writeSafetensors(s, ts.map((t) => ({ name: t.name, dtype: 'F32', shape: [t.data.length], data: new Uint8Array(Float32Array.from(t.data).buffer) })));
    files.set(name, s.bytes());
  };
  await mk('model-00001-of-00002.safetensors', [{ name: 'a', data: [1, 2] }]);
  await mk('model-00002-of-00002.safetensors', [{ name: 'b', data: [3] }, { name: 'c', data: [4, 5, 6] }]);
  const index = JSON.stringify({ metadata: { total_size: 24 }, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' } });
  const m = await openModelFile(bytesSource(new TextEncoder().encode(index), 'model.safetensors.index.json'), {
    openSibling: async (n): Promise<ByteSource> => bytesSource(files.get(n)!, n),
  });
  assert.equal(m.format, 'safetensors');
  assert.deepEqual(m.tensors.map((t) => t.name), ['a', 'b', 'c']);
  assert.deepEqual(Array.from(await m.readFloat32(m.tensor('c'))), [4, 5, 6]);
  assert.equal(m.metadata.get('index.total_size'), 24);
});

/** Build packed int4 tensors the way GPTQ / AutoAWQ pack them, then check recognition + dequantization. */
test('packed int4 (GPTQ and AWQ) layouts are recognized and dequantized', async () => {
  const rand = rng(11);
  const K = 64; // in features
  const N = 16; // out features
  const G = 32; // group size
  const q = Array.from({ length: K }, () => Array.from({ length: N }, () => Math.floor(rand() * 16)));
  const z = Array.from({ length: K / G }, () => Array.from({ length: N }, () => Math.floor(rand() * 16)));
  const sc = Array.from({ length: K / G }, () => Array.from({ length: N }, () => f16ToF32(f32ToF16(0.01 + rand() * 0.1))));
  const scales = new Uint16Array((K / G) * N);
  for (let g = 0; g < K / G; g++) for (let n = 0; n < N; n++) scales[g * N + n] = f32ToF16(sc[g][n]);
  const u8 = (a: Uint32Array | Uint16Array) => new Uint8Array(a.buffer);

  // GPTQ: qweight[k/8][n], value k%8 in bits 4*(k%8); qzeros[g][n/8] stores (zero - 1), value n%8 in bits 4*(n%8)
  const gq = new Uint32Array((K / 8) * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) gq[(k >> 3) * N + n] |= q[k][n] << (4 * (k % 8));
  const gz = new Uint32Array((K / G) * (N / 8));
  for (let g = 0; g < K / G; g++) for (let n = 0; n < N; n++) gz[g * (N / 8) + (n >> 3)] |= ((z[g][n] - 1) & 15) << (4 * (n % 8));
  // AWQ: qweight[k][n/8], nibble i holds column 8*(n/8) + order[i]
  const order = [0, 2, 4, 6, 1, 3, 5, 7];
  const aq = new Uint32Array(K * (N / 8));
  for (let k = 0; k < K; k++) for (let c = 0; c < N / 8; c++) for (let i = 0; i < 8; i++) aq[k * (N / 8) + c] |= q[k][c * 8 + order[i]] << (4 * i);
  const az = new Uint32Array((K / G) * (N / 8));
  for (let g = 0; g < K / G; g++) for (let c = 0; c < N / 8; c++) for (let i = 0; i < 8; i++) az[g * (N / 8) + c] |= z[g][c * 8 + order[i]] << (4 * i);

  const s = memorySink();
  await writeSafetensors(s, [
    { name: 'gptq.qweight', dtype: 'I32', shape: [K / 8, N], data: u8(gq) },
    { name: 'gptq.qzeros', dtype: 'I32', shape: [K / G, N / 8], data: u8(gz) },
    { name: 'gptq.scales', dtype: 'F16', shape: [K / G, N], data: u8(scales) },
    { name: 'awq.qweight', dtype: 'I32', shape: [K, N / 8], data: u8(aq) },
    { name: 'awq.qzeros', dtype: 'I32', shape: [K / G, N / 8], data: u8(az) },
    { name: 'awq.scales', dtype: 'F16', shape: [K / G, N], data: u8(scales) },
  ]);
  const f = await readSafetensors(bytesSource(s.bytes()));
  const groups = findPackedInt4(f.tensors);
  assert.deepEqual(groups.map((g) => [g.prefix, g.layout, g.inFeatures, g.outFeatures, g.groupSize]), [
    ['gptq', 'gptq', K, N, G],
    ['awq', 'awq', K, N, G],
  ]);
  const toF = async (t: (typeof f.tensors)[number]) => toFloat32(t.dtype, await t.source.read(t.fileOffset, t.byteLength));
  for (const g of groups) {
    const w = await dequantizePackedInt4(g, toF);
    for (let n = 0; n < N; n++)
      for (let k = 0; k < K; k++) {
        const grp = Math.floor(k / G);
        const want = Math.fround(sc[grp][n] * (q[k][n] - z[grp][n]));
        assert.equal(w[n * K + k], want, `${g.layout} [${n}, ${k}]`);
      }
  }
});

test('HF llama names <-> GGUF names', () => {
  const pairs: [string, string][] = [
    ['model.embed_tokens.weight', 'token_embd.weight'],
    ['model.norm.weight', 'output_norm.weight'],
    ['lm_head.weight', 'output.weight'],
    ['model.layers.0.self_attn.q_proj.weight', 'blk.0.attn_q.weight'],
    ['model.layers.12.self_attn.k_proj.weight', 'blk.12.attn_k.weight'],
    ['model.layers.3.self_attn.v_proj.weight', 'blk.3.attn_v.weight'],
    ['model.layers.3.self_attn.o_proj.weight', 'blk.3.attn_output.weight'],
    ['model.layers.3.mlp.gate_proj.weight', 'blk.3.ffn_gate.weight'],
    ['model.layers.3.mlp.up_proj.weight', 'blk.3.ffn_up.weight'],
    ['model.layers.3.mlp.down_proj.weight', 'blk.3.ffn_down.weight'],
    ['model.layers.3.input_layernorm.weight', 'blk.3.attn_norm.weight'],
    ['model.layers.3.post_attention_layernorm.weight', 'blk.3.ffn_norm.weight'],
  ];
  for (const [h, g] of pairs) {
    assert.equal(hfToGgufName(h), g);
    assert.equal(ggufToHfName(g), h);
  }
  assert.equal(hfToGgufName('model.layers.0.self_attn.rotary_emb.inv_freq'), undefined);
  assert.throws(() => hfToGgufName('model.vision.x'), /not part of the Hugging Face llama layout/);
});

test('q/k permutation: matches numpy reshape(n_head, 2, d/2).swapaxes(1, 2) and inverts', () => {
  // 8 rows, 2 heads, head dim 4: rows of head h as [2, 2] = [[0, 1], [2, 3]] -> transposed [[0, 2], [1, 3]]
  const rows = Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(Array.from(toGgufRows(rows, 8, 1, 2)), [0, 2, 1, 3, 4, 6, 5, 7]);
  // 12 rows, 1 head: [2, 6] -> [6, 2]
  assert.deepEqual(Array.from(toGgufRows(Uint8Array.from({ length: 12 }, (_, i) => i), 12, 1, 1)), [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]);
  const rand = rng(5);
  const m = Uint8Array.from({ length: 32 * 3 }, () => Math.floor(rand() * 256));
  assert.deepEqual(toHfRows(toGgufRows(m, 32, 3, 4), 32, 3, 4), m);
  assert.throws(() => toGgufRows(m, 32, 3, 3), /cannot permute/);
});

test('GGUF -> HF safetensors -> GGUF restores every tensor bit-exactly', async () => {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const ref = new Uint8Array(fs.readFileSync(path.resolve(import.meta.dirname, '../../data/stories260K.gguf')));
  const g = await openModelFile(bytesSource(ref, 'ref.gguf'));
  const st = memorySink();
  await convertModel(g, st, { to: 'safetensors' });
  const sm = await openModelFile(bytesSource(st.bytes(), 'model.safetensors'));
  assert.ok(sm.tensors.some((t) => t.name === 'model.layers.0.self_attn.q_proj.weight'));
  // q is permuted: HF bytes differ from the GGUF ones
  assert.notDeepEqual(await sm.read(sm.tensor('model.layers.0.self_attn.q_proj.weight')), await g.read(g.tensor('blk.0.attn_q.weight')));
  const config = { model_type: 'llama', vocab_size: 512, hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 2048, rms_norm_eps: 1e-5 };
  const back = memorySink();
  await convertModel(sm, back, { to: 'gguf', hfConfig: config });
  const b = await openModelFile(bytesSource(back.bytes(), 'back.gguf'));
  for (const t of g.tensors) assert.deepEqual(await b.read(b.tensor(t.name)), await g.read(t), t.name);
  assert.equal(b.gguf!.metadata.get('llama.attention.head_count_kv')!.value, 4);
});
