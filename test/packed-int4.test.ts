/**
 * GPTQ / AWQ packed int4 checkpoints: hand-checked packing of tiny layers, repacking lowbit's generic
 * int4 schemes bit for bit, stories260K written in both layouts and read back by the runtime, bad input.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { defineRecipe, llamaRecipe, schemeRecipe, type Recipe } from '../src/algos/recipe.js';
import { hfLlamaTensors, llamaFromSafetensors, loadModel } from '../src/eval/load.js';
import { readLowbitSafetensors } from '../src/eval/load-lowbit.js';
import { openModelFile, type ModelFile } from '../src/io/model-file.js';
import {
  AWQ_ORDER,
  dequantizeInt4Linear,
  dequantizePackedInt4,
  findPackedInt4,
  int4LinearFromScheme,
  int4RowsToHf,
  packedInt4ConfigOf,
  packInt4Linear,
  type Int4Linear,
  type PackedInt4Layout,
} from '../src/io/packed-int4.js';
import { readSafetensors, writeSafetensors, type SafetensorsTensorInfo } from '../src/io/safetensors.js';
import { memorySink } from '../src/io/sink.js';
import { bytesSource } from '../src/io/source.js';
import { toFloat32 } from '../src/io/tensor-data.js';
import { Llama, llamaConfigFromGguf } from '../src/model/llama.js';
import { f32ToF16 } from '../src/formats/half.js';
import { resolveScheme } from '../src/quant/registry.js';
import { quantize } from '../src/pipeline/quantize.js';

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));
const u32 = (t: { data: Uint8Array }) => Array.from(new Uint32Array(t.data.slice().buffer));
const toF = async (t: SafetensorsTensorInfo) => toFloat32(t.dtype, await t.source.read(t.fileOffset, t.byteLength));

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** 8 x 8, one group of 8: q[n][k] = (n + k) % 16, zero[n] = n + 1, scale[n] = 1 + n/8 (exact in f16). */
function tinyLayer(): Int4Linear {
  const q = new Uint8Array(64);
  for (let n = 0; n < 8; n++) for (let k = 0; k < 8; k++) q[n * 8 + k] = (n + k) & 15;
  return {
    outFeatures: 8,
    inFeatures: 8,
    groupSize: 8,
    symmetric: false,
    q,
    zeros: Uint8Array.from({ length: 8 }, (_, n) => n + 1),
    scales: Uint16Array.from({ length: 8 }, (_, n) => f32ToF16(1 + n / 8)),
  };
}

async function writeParts(prefix: string, parts: ReturnType<typeof packInt4Linear>): Promise<SafetensorsTensorInfo[]> {
  const s = memorySink();
  await writeSafetensors(s, parts.map((p) => ({ name: `${prefix}.${p.suffix}`, dtype: p.dtype, shape: p.shape, data: p.data })));
  return [...(await readSafetensors(bytesSource(s.bytes(), 'tiny.safetensors'))).tensors];
}

test('GPTQ packing of a hand-checked 8x8 layer: inputs along the word, zero - 1, transposed scales', async () => {
  const w = tinyLayer();
  const [qweight, qzeros, scales, gIdx] = packInt4Linear('gptq', w, 'tiny');
  assert.deepEqual(qweight.shape, [1, 8]);
  // word n holds q[n][0..7] from the low nibble up: n = 0 -> 7 6 5 4 3 2 1 0
  assert.deepEqual(u32(qweight), [0x76543210, 0x87654321, 0x98765432, 0xa9876543, 0xba987654, 0xcba98765, 0xdcba9876, 0xedcba987]);
  // one word for outputs 0..7, nibble n = zero[n] - 1 = n
  assert.deepEqual(qzeros.shape, [1, 1]);
  assert.deepEqual(u32(qzeros), [0x76543210]);
  assert.deepEqual(Array.from(new Uint16Array(scales.data.slice().buffer)), [0x3c00, 0x3c80, 0x3d00, 0x3d80, 0x3e00, 0x3e80, 0x3f00, 0x3f80]);
  assert.deepEqual(Array.from(new Int32Array(gIdx.data.slice().buffer)), [0, 0, 0, 0, 0, 0, 0, 0]);
  const [g] = findPackedInt4(await writeParts('tiny', [qweight, qzeros, scales, gIdx]));
  assert.deepEqual([g.layout, g.inFeatures, g.outFeatures, g.groupSize], ['gptq', 8, 8, 8]);
  const x = await dequantizePackedInt4(g, toF);
  assert.deepEqual(x, dequantizeInt4Linear(w));
  assert.equal(x[3 * 8 + 5], (1 + 3 / 8) * (8 - 4), 'w[3][5] = scale 1.375 x (q 8 - zero 4)');
  // the v2 convention stores the zero-point itself
  assert.deepEqual(u32(packInt4Linear('gptq', w, 'tiny', { gptqZeroOffset: 0 })[1]), [0x87654321]);
});

test('AWQ packing of a hand-checked 8x8 layer: outputs along the word in the order 0,2,4,6,1,3,5,7', async () => {
  assert.deepEqual(AWQ_ORDER, [0, 2, 4, 6, 1, 3, 5, 7]);
  const w = tinyLayer();
  const [qweight, qzeros, scales] = packInt4Linear('awq', w, 'tiny');
  assert.deepEqual(qweight.shape, [8, 1]);
  // word k: nibble j holds q[ORDER[j]][k] = ORDER[j] + k; k = 0 -> 7 5 3 1 6 4 2 0
  assert.deepEqual(u32(qweight), [0x75316420, 0x86427531, 0x97538642, 0xa8649753, 0xb975a864, 0xca86b975, 0xdb97ca86, 0xeca8db97]);
  assert.deepEqual(u32(qzeros), [0x86427531], 'zero[ORDER[j]] = ORDER[j] + 1, not reduced by one');
  const parts = await writeParts('tiny', [qweight, qzeros, scales]);
  const [g] = findPackedInt4(parts);
  assert.deepEqual([g.layout, g.inFeatures, g.outFeatures, g.groupSize], ['awq', 8, 8, 8]);
  assert.deepEqual(await dequantizePackedInt4(g, toF), dequantizeInt4Linear(w));
});

test('lowbit int4 schemes repack to GPTQ and AWQ and dequantize to the same floats, bit for bit', async () => {
  const rand = rng(7);
  // the CLI's `--type int4 --group 128 --asym` resolves to a scheme equal to the registered uint4_g128_asym
  const rows = 16;
  const cols = 256;
  const x = Float32Array.from({ length: rows * cols }, () => (rand() - 0.5) * (rand() < 0.05 ? 8 : 1));
  const cli = resolveScheme('int4', { groupSize: 128, asymmetric: true });
  const reg = resolveScheme('uint4_g128_asym');
  assert.deepEqual(cli.quantizeRef(x, rows, cols), reg.quantizeRef(x, rows, cols));
  for (const [name, opts] of [
    ['uint4_g128_asym', {}],
    ['int4', { groupSize: 32, asymmetric: true }],
    ['int4', { groupSize: 64 }],
    ['int4', { groupSize: 32, clip: 'mse' as const }],
  ] as const) {
    const s = resolveScheme(name, opts);
    const packed = s.quantizeRef(x, rows, cols);
    const want = s.dequantizeRef(packed, rows, cols);
    const w = int4LinearFromScheme(s, packed, rows, cols);
    assert.deepEqual(dequantizeInt4Linear(w), want, `${s.id}: unpacked`);
    for (const layout of ['gptq', 'awq'] as const) {
      const [g] = findPackedInt4(await writeParts('l', packInt4Linear(layout, w, s.id)));
      assert.deepEqual(await dequantizePackedInt4(g, toF), want, `${s.id} as ${layout}`);
    }
    if (!opts.asymmetric && name === 'int4') assert.ok(w.zeros.every((z) => z === 8), 'symmetric: zero-point 8');
  }
  assert.throws(() => int4LinearFromScheme(resolveScheme('mxfp4'), new Uint8Array(0), 1, 32), /not a 4-bit integer scheme/);
  assert.throws(() => int4LinearFromScheme(resolveScheme('uint4_g32_fzp'), new Uint8Array(0), 1, 32), /float zero-point/);
  assert.throws(() => int4LinearFromScheme(resolveScheme('int4', { groupSize: 32, scaleFormat: 'bf16' }), new Uint8Array(0), 1, 32), /bf16 scales/);
});

test('q/k rows go back to HF order in the packed tensors as in float ones', () => {
  const w = tinyLayer();
  const hf = int4RowsToHf(w, 2); // 2 heads of 4 rows: GGUF [0 1 2 3] -> HF [0 2 1 3] per head
  const rowsOf = (a: Uint8Array, n: number) => Array.from({ length: 8 }, (_, r) => a[r * n]);
  assert.deepEqual(rowsOf(hf.q, 8), [0, 2, 1, 3, 4, 6, 5, 7]);
  assert.deepEqual(Array.from(hf.zeros), [1, 3, 2, 4, 5, 7, 6, 8]);
  assert.deepEqual(Array.from(hf.scales), [0, 2, 1, 3, 4, 6, 5, 7].map((n) => w.scales[n]));
});

// ---- stories260K ------------------------------------------------------------------------------

/** int4 g32 asym on the attention layers; embeddings/lm_head and the MLP (172 wide: not packable) in F16. */
const recipe: Recipe = defineRecipe({
  lowbitRecipe: 1,
  name: 'attn_int4_g32_asym',
  rules: [
    { match: '(_norm\\.weight|\\.bias)$', keep: 'f32' },
    { match: '^(token_embd|output)\\.weight$', keep: 'f16' },
    { match: 'ffn_(gate|up|down)\\.weight$', keep: 'f16' },
    { match: '\\.weight$', scheme: 'int4', groupSize: 32, asym: true },
  ],
});

async function write(m: ModelFile, r: Recipe, layout: 'lowbit' | PackedInt4Layout, keepUnpackable = false) {
  const sink = memorySink();
  const report = await quantize(m, r, sink, { layout, keepUnpackable });
  return { bytes: sink.bytes(), report };
}

test('stories260K: GPTQ and AWQ checkpoints dequantize and run exactly like lowbit\'s native layout', async () => {
  const gguf = await openModelFile(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const native = await write(gguf, recipe, 'lowbit');
  const nat = await readLowbitSafetensors(bytesSource(native.bytes, 'native.safetensors'));
  const natModel = new Llama(llamaConfigFromGguf(nat.metadata, nat.tensors), nat.tensors);
  const natByName = new Map(nat.tensors.map((t) => [t.name, toFloat32(t.type.name, t.data)]));
  const tokens = [1, 403, 407, 261, 378, 284, 263, 442, 404, 265];
  const want = natModel.forward(tokens, 0, 0);
  for (const layout of ['gptq', 'awq'] as const) {
    const { bytes, report } = await write(gguf, recipe, layout);
    const hfConfig = report.hfConfig!;
    const qc = hfConfig.quantization_config as Record<string, unknown>;
    if (layout === 'gptq') {
      assert.deepEqual({ ...qc, modules_in_block_to_quantize: undefined }, { quant_method: 'gptq', bits: 4, group_size: 32, desc_act: false, sym: false, true_sequential: true, checkpoint_format: 'gptq', modules_in_block_to_quantize: undefined });
      assert.deepEqual(qc.modules_in_block_to_quantize, [['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj']]);
    } else {
      assert.deepEqual(qc, { quant_method: 'awq', version: 'gemm', zero_point: true, bits: 4, group_size: 32, w_bit: 4, q_group_size: 32, modules_to_not_convert: ['mlp.gate_proj', 'mlp.down_proj', 'mlp.up_proj'] });
    }
    assert.equal(hfConfig.hidden_size, 64);
    assert.equal(hfConfig.num_key_value_heads, 4);
    const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
    const names = new Set(st.tensors.map((t) => t.name));
    const suffixes = layout === 'gptq' ? ['qweight', 'qzeros', 'scales', 'g_idx'] : ['qweight', 'qzeros', 'scales'];
    for (const s of suffixes) assert.ok(names.has(`model.layers.3.self_attn.k_proj.${s}`), `${layout}: ${s}`);
    assert.equal(st.tensor('model.layers.0.self_attn.q_proj.scales').type, 'F16');
    assert.equal(st.tensor('model.embed_tokens.weight').type, 'F16');
    assert.equal(st.tensor('model.layers.0.mlp.down_proj.weight').type, 'F16');
    assert.equal(st.packedInt4!.length, 20);
    assert.ok(st.packedInt4!.every((g) => g.layout === layout && g.groupSize === 32));
    // every weight the runtime gets equals the native file's dequantization, bit for bit
    const tensors = await hfLlamaTensors(st, hfConfig);
    assert.deepEqual(tensors.map((t) => t.name).sort(), [...natByName.keys()].sort());
    for (const t of tensors) assert.deepEqual(toFloat32(t.type.name, t.data), natByName.get(t.name), `${layout}: ${t.name}`);
    // and so do the logits
    const model = await llamaFromSafetensors(st, hfConfig);
    assert.deepEqual(model.forward(tokens, 0, 0), want, `${layout}: logits`);
    // the tokenizer travels in __metadata__, so loadModel needs only config.json
    const loaded = await loadModel(bytesSource(bytes, 'model.safetensors'), { hfConfig });
    assert.equal(loaded.tokenizer?.vocab.tokens.length, 512);
    // the same quantized values: q/k in HF order are not GGUF order
    const q = await st.read(st.tensor('model.layers.0.self_attn.q_proj.qweight'));
    assert.equal(q.length, layout === 'gptq' ? 8 * 64 * 4 : 64 * 8 * 4);
  }
});

test('stories260K: shapes that do not pack fail naming the tensor and sizes, or stay F16 with keepUnpackable', async () => {
  const gguf = await openModelFile(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const int4g32 = schemeRecipe('int4', { groupSize: 32, asym: true, keepEmbeddings: true });
  await assert.rejects(write(gguf, int4g32, 'gptq'), /blk\.0\.ffn_gate\.weight \[172, 64\] cannot be stored in the gptq layout: 172 output features are not a multiple of 8/);
  await assert.rejects(write(gguf, int4g32, 'awq'), /blk\.0\.ffn_gate\.weight \[172, 64\] cannot be stored in the awq layout: 172 output features/);
  await assert.rejects(write(gguf, schemeRecipe('int4', { groupSize: 128, asym: true }), 'gptq'), /blk\.0\.attn_q\.weight \[64, 64\].*64 input features are not a multiple of uint4_g128_asym_f16's group size/);
  await assert.rejects(write(gguf, schemeRecipe('mxfp4'), 'gptq'), /blk\.0\.attn_q\.weight: scheme mxfp4 is not a 4-bit integer scheme/);
  await assert.rejects(write(gguf, schemeRecipe('int4', { groupSize: 32, asym: true }), 'gptq', false), /ffn_gate/);
  await assert.rejects(write(gguf, llamaRecipe('Q4_0'), 'gptq'), /the gptq layout is a safetensors checkpoint of int4 layers/);
  // keepUnpackable: the MLP in F16, listed for the loaders; embeddings are never packed
  const { bytes, report } = await write(gguf, schemeRecipe('int4', { groupSize: 32, asym: true }), 'gptq', true);
  assert.deepEqual(report.tensors.filter((t) => t.fallbackFrom).map((t) => t.name).slice(0, 5), ['token_embd.weight', 'output.weight', 'blk.0.ffn_gate.weight', 'blk.0.ffn_down.weight', 'blk.0.ffn_up.weight']);
  const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
  assert.equal(st.packedInt4!.length, 20);
  const model = await llamaFromSafetensors(st, report.hfConfig);
  const logits = model.forward([1, 403], 0, 0);
  assert.ok(logits.length === 2 * 512 && logits.every(Number.isFinite));
  // symmetric int4: zero-point 8 (stored 7 in GPTQ v1), sym: true
  const sym = await write(gguf, defineRecipe({ ...recipe, rules: recipe.rules.map((r) => (r.scheme ? { match: r.match, scheme: 'int4', groupSize: 64 } : r)) }), 'gptq');
  assert.equal((sym.report.hfConfig!.quantization_config as { sym: boolean }).sym, true);
  const sst = await openModelFile(bytesSource(sym.bytes, 'sym.safetensors'));
  assert.deepEqual(Array.from(new Uint32Array((await sst.read(sst.tensor('model.layers.0.self_attn.q_proj.qzeros'))).slice().buffer)), new Array(8).fill(0x77777777));
});

test('AutoGPTQ-style zero biases on packed layers are dropped; a gptq_v2 config reads zeros without the +1', async () => {
  const gguf = await openModelFile(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const { bytes, report } = await write(gguf, recipe, 'gptq');
  const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
  const tensors = await Promise.all(st.tensors.map(async (t) => ({ name: t.name, dtype: t.type, shape: t.shape, data: await st.read(t) })));
  const biased = [...tensors];
  for (const g of st.packedInt4!) biased.push({ name: `${g.prefix}.bias`, dtype: 'F16', shape: [g.outFeatures], data: new Uint8Array(g.outFeatures * 2) });
  const sink = memorySink();
  await writeSafetensors(sink, biased);
  const withBias = await openModelFile(bytesSource(sink.bytes(), 'biased.safetensors'));
  const tokens = [1, 403, 407, 261];
  const want = (await llamaFromSafetensors(st, report.hfConfig)).forward(tokens, 0, 0);
  assert.deepEqual((await llamaFromSafetensors(withBias, report.hfConfig)).forward(tokens, 0, 0), want);
  // the same file under a gptq_v2 config decodes every zero-point one lower: different weights
  const v2 = { ...report.hfConfig, quantization_config: { ...(report.hfConfig!.quantization_config as object), checkpoint_format: 'gptq_v2' } };
  assert.notDeepEqual((await llamaFromSafetensors(st, v2)).forward(tokens, 0, 0), want);
});

// ---- bad input ----------------------------------------------------------------------------------

test('bad packed layers and configs fail with one line naming the problem', async () => {
  const w = tinyLayer();
  const good = packInt4Linear('gptq', w, 'l');
  const file = async (parts: { suffix: string; dtype: string; shape: readonly number[]; data: Uint8Array }[]) => {
    const s = memorySink();
    await writeSafetensors(s, parts.map((p) => ({ name: `l.${p.suffix}`, dtype: p.dtype, shape: p.shape, data: p.data })));
    return [...(await readSafetensors(bytesSource(s.bytes(), 'bad.safetensors'))).tensors];
  };
  const [qweight, qzeros, scales, gIdx] = good;
  const cases: [string, typeof good, RegExp][] = [
    ['F32 qweight', [{ ...qweight, dtype: 'F32' as never }, scales], /l\.qweight: packed int4 weights are I32 \(8 values per word\), not F32/],
    ['qweight vs scales', [{ ...qweight, shape: [2, 4] }, scales], /l\.qweight \[2, 4\] does not match l\.scales \[1, 8\]/],
    ['missing scales', [qweight, qzeros], /l\.qweight: packed int4 weight without l\.scales/],
    ['qzeros shape', [qweight, { ...qzeros, shape: [1, 1], data: new Uint8Array(4) }, { ...scales, shape: [2, 4] }], /l\.qweight \[1, 8\] does not match l\.scales \[2, 4\]/],
    ['qzeros groups', [qweight, { ...qzeros, shape: [2, 1], data: new Uint8Array(8) }, scales], /l\.qzeros \[2, 1\] does not match 1 groups x 8 outputs \(expected \[1, 1\]\)/],
    ['qzeros dtype', [qweight, { ...qzeros, dtype: 'F32' as never }, scales], /l\.qzeros: packed zero-points are I32, not F32/],
    ['scales dtype', [qweight, { ...scales, dtype: 'I16' as never }], /l\.scales: scales must be F16, BF16 or F32, not I16/],
    ['g_idx shape', [qweight, qzeros, scales, { ...gIdx, shape: [4], data: new Uint8Array(16) }], /l\.g_idx: g_idx must be I32 \[8\], got I32 \[4\]/],
  ];
  for (const [what, parts, re] of cases) {
    const tensors = await file(parts);
    assert.throws(() => findPackedInt4(tensors), re, what);
  }
  // opening the file lists what it can (inspect works); loading it fails with the problem
  const s = memorySink();
  await writeSafetensors(s, [{ name: 'model.layers.0.self_attn.q_proj.qweight', dtype: 'F32', shape: [1, 8], data: qweight.data }, { name: 'model.layers.0.self_attn.q_proj.scales', dtype: 'F16', shape: [1, 8], data: scales.data }]);
  const opened = await openModelFile(bytesSource(s.bytes(), 'bad.safetensors'));
  assert.deepEqual(opened.packedInt4, []);
  assert.match(opened.packedInt4Problems![0], /q_proj\.qweight: packed int4 weights are I32/);
  await assert.rejects(hfLlamaTensors(opened, { hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 1, vocab_size: 8 }), /bad\.safetensors: model\.layers\.0\.self_attn\.q_proj\.qweight: packed int4 weights are I32 \(8 values per word\), not F32/);
  const badIdx = await file([qweight, qzeros, scales, { ...gIdx, data: new Uint8Array(new Int32Array([0, 0, 0, 0, 0, 0, 0, 3]).buffer) }]);
  await assert.rejects(dequantizePackedInt4(findPackedInt4(badIdx)[0], toF), /l\.g_idx: entry 7 is 3, outside the 1 groups/);
  // GPTQ v1 cannot store a zero-point of 0
  const z0 = { ...w, zeros: Uint8Array.from([1, 1, 1, 0, 1, 1, 1, 1]) };
  assert.throws(() => packInt4Linear('gptq', z0, 'blk.0.attn_q.weight'), /blk\.0\.attn_q\.weight: group 0 of output 3 has zero-point 0, which GPTQ's v1 format/);
  assert.doesNotThrow(() => packInt4Linear('awq', z0, 'x'));
  assert.throws(() => packInt4Linear('awq', { ...w, outFeatures: 4, inFeatures: 16 }, 'x'), /x \[4, 16\]: 4 output features are not a multiple of 8/);
  // config.json quantization_config
  assert.equal(packedInt4ConfigOf({ model_type: 'llama' }), undefined);
  assert.deepEqual(packedInt4ConfigOf({ quantization_config: { quant_method: 'gptq', bits: 4, group_size: 128 } }), { method: 'gptq', bits: 4, groupSize: 128, gptqZeroOffset: 1 });
  assert.throws(() => packedInt4ConfigOf({ quantization_config: { quant_method: 'gptq', bits: 8 } }), /gptq with 8 bits; lowbit reads 4-bit packed layers only/);
  assert.throws(() => packedInt4ConfigOf({ quantization_config: { quant_method: 'awq', bits: 4, version: 'gemv' } }), /AWQ version 'gemv' is not supported/);
  assert.throws(() => packedInt4ConfigOf({ quantization_config: { quant_method: 'gptq', bits: 4, checkpoint_format: 'marlin' } }), /checkpoint_format 'marlin'/);
  assert.throws(() => packedInt4ConfigOf({ quantization_config: { quant_method: 'bitsandbytes' } }), /'bitsandbytes' is not one lowbit reads/);
  // a GPTQ-shaped file under an AWQ config
  const gguf = await openModelFile(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const { bytes, report } = await write(gguf, recipe, 'gptq');
  const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
  const awqConfig = { ...report.hfConfig, quantization_config: { quant_method: 'awq', bits: 4, group_size: 32, version: 'gemm' } };
  await assert.rejects(hfLlamaTensors(st, awqConfig), /model\.layers\.0\.self_attn\.q_proj\.qweight: shapes are gptq's layout but config\.json says awq/);
});

test('library: quantize(model, recipe, sink, { layout }) returns config.json in the report; same input, same bytes', async () => {
  const lowbit = await import('../src/index.js');
  const m = await lowbit.openModelFile(lowbit.bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const r = lowbit.schemeRecipe('int4', { groupSize: 64, asym: true });
  const a = lowbit.memorySink();
  const report = await lowbit.quantize(m, r, a, { layout: 'awq', keepUnpackable: true });
  assert.equal((report.hfConfig!.quantization_config as { q_group_size: number }).q_group_size, 64);
  const b = lowbit.memorySink();
  await lowbit.quantize(m, r, b, { layout: 'awq', keepUnpackable: true });
  assert.deepEqual(b.bytes(), a.bytes());
  const { model, tokenizer } = await lowbit.loadModel(lowbit.bytesSource(a.bytes(), 'model.safetensors'), { hfConfig: report.hfConfig });
  assert.ok(tokenizer);
  assert.ok(model.forward(tokenizer.encode('Once upon a time'), 0, 0).every(Number.isFinite));
  assert.deepEqual(lowbit.PACKED_INT4_LAYOUTS, ['gptq', 'awq']);
});

test('convert: a GPTQ / AWQ checkpoint dequantizes to a float GGUF (and HF safetensors) that runs the same', async () => {
  const { convertModel } = await import('../src/io/convert.js');
  const gguf = await openModelFile(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const tokens = [1, 403, 407, 261, 378];
  for (const layout of ['gptq', 'awq'] as const) {
    const { bytes, report } = await write(gguf, recipe, layout);
    const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
    const want = (await llamaFromSafetensors(st, report.hfConfig)).forward(tokens, 0, 0);
    const out = memorySink();
    await convertModel(st, out, { to: 'gguf', hfConfig: report.hfConfig });
    const g = await openModelFile(bytesSource(out.bytes(), 'dequantized.gguf'));
    assert.equal(g.tensors.length, 48);
    assert.equal(g.tensor('blk.2.attn_k.weight').type, 'F32');
    const { model } = await loadModel(bytesSource(out.bytes(), 'dequantized.gguf'));
    assert.deepEqual(model.forward(tokens, 0, 0), want, `${layout} -> GGUF`);
    const hf = memorySink();
    await convertModel(st, hf, { to: 'safetensors', type: 'F32' });
    const back = await openModelFile(bytesSource(hf.bytes(), 'dequantized.safetensors'));
    assert.ok(back.tensors.some((t) => t.name === 'model.layers.0.self_attn.q_proj.weight') && !back.tensors.some((t) => /qweight|qzeros|scales|g_idx/.test(t.name)));
    assert.deepEqual((await llamaFromSafetensors(back, { ...report.hfConfig, quantization_config: undefined })).forward(tokens, 0, 0), want, `${layout} -> safetensors`);
  }
});

test('synthetic llama with 128-wide layers: int4 --group 128 --asym (uint4_g128_asym) packs every linear layer, logits equal native', async () => {
  const { gguf: g, writeGguf } = await import('../src/io/gguf.js');
  const { ggufLlamaMetadata } = await import('../src/io/hf-llama.js');
  const { ggmlTypeByName } = await import('../src/quant/ggml/types.js');
  const hp = { vocabSize: 64, dim: 128, hiddenDim: 256, nLayers: 2, nHeads: 4, nKvHeads: 2, seqLen: 64, normEps: 1e-5 };
  const f32 = ggmlTypeByName('F32')!;
  const rand = rng(5);
  const t = (name: string, ne: number[], norm = false) => ({
    name,
    ne,
    type: f32,
    data: new Uint8Array(Float32Array.from({ length: ne.reduce((a, b) => a * b, 1) }, () => (norm ? 1 + (rand() - 0.5) * 0.2 : (rand() - 0.5) * 0.2)).buffer),
  });
  const tensors = [t('token_embd.weight', [128, 64]), t('output_norm.weight', [128], true), t('output.weight', [128, 64])];
  for (let l = 0; l < 2; l++)
    tensors.push(
      t(`blk.${l}.attn_norm.weight`, [128], true),
      t(`blk.${l}.attn_q.weight`, [128, 128]),
      t(`blk.${l}.attn_k.weight`, [128, 64]),
      t(`blk.${l}.attn_v.weight`, [128, 64]),
      t(`blk.${l}.attn_output.weight`, [128, 128]),
      t(`blk.${l}.ffn_norm.weight`, [128], true),
      t(`blk.${l}.ffn_gate.weight`, [128, 256]),
      t(`blk.${l}.ffn_down.weight`, [256, 128]),
      t(`blk.${l}.ffn_up.weight`, [128, 256]),
    );
  const sink = memorySink();
  await writeGguf(sink, [['general.architecture', g.str('llama')], ...ggufLlamaMetadata(hp)], tensors);
  const m = await openModelFile(bytesSource(sink.bytes(), 'synthetic.gguf'));
  const r = schemeRecipe('int4', { groupSize: 128, asym: true, keepEmbeddings: true });
  const native = await write(m, r, 'lowbit');
  const nat = await readLowbitSafetensors(bytesSource(native.bytes, 'native.safetensors'));
  const tokens = [1, 5, 9, 33, 60, 2];
  const want = new Llama(llamaConfigFromGguf(nat.metadata, nat.tensors), nat.tensors).forward(tokens, 0, 0);
  for (const layout of ['gptq', 'awq'] as const) {
    const { bytes, report } = await write(m, r, layout);
    assert.ok(report.tensors.filter((x) => /blk/.test(x.name) && !/norm/.test(x.name)).every((x) => x.type === `${layout}:uint4_g128_asym_f16`));
    const qc = report.hfConfig!.quantization_config as Record<string, unknown>;
    assert.equal(qc.modules_in_block_to_quantize ?? qc.modules_to_not_convert, undefined, 'every linear layer packed');
    const st = await openModelFile(bytesSource(bytes, 'model.safetensors'));
    assert.equal(st.packedInt4!.length, 14);
    assert.deepEqual((await llamaFromSafetensors(st, report.hfConfig)).forward(tokens, 0, 0), want, layout);
  }
});
