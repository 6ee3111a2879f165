// Emulating llama.cpp's activation rounding (vec_dot_type) in the runtime.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadModel } from '../src/eval/load.js';
import { bytesSource } from '../src/io/source.js';
import { openModelFile } from '../src/io/model-file.js';
import { memorySink } from '../src/io/sink.js';
import { llamaRecipe } from '../src/algos/recipe.js';
import { quantize } from '../src/pipeline/quantize.js';
import { ggmlRoundActivations, ggmlVecDotType } from '../src/model/ggml-activations.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import '../src/quant/ggml/index.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';

const gguf = new Uint8Array(readFileSync(new URL('../../data/stories260K.gguf', import.meta.url)));

test('vec_dot types follow llama.cpp: legacy -> Q8_0/Q8_1, k-quants and IQ -> Q8_K, floats stay', () => {
  const want: Record<string, string> = { F32: 'F32', F16: 'F16', BF16: 'BF16', Q4_0: 'Q8_0', Q4_1: 'Q8_1', Q5_0: 'Q8_0', Q5_1: 'Q8_1', Q8_0: 'Q8_0', Q2_K: 'Q8_K', Q3_K: 'Q8_K', Q4_K: 'Q8_K', Q5_K: 'Q8_K', Q6_K: 'Q8_K', IQ4_NL: 'Q8_0', IQ4_XS: 'Q8_K', TQ1_0: 'Q8_K', TQ2_0: 'Q8_K', MXFP4: 'Q8_0', IQ2_XXS: 'Q8_K' };
  for (const [w, v] of Object.entries(want)) assert.equal(ggmlVecDotType(ggmlTypeByName(w)!), v, w);
});

test('activation rounding is the Q8 codec round trip (idempotent), f16 rounding for F16, identity for F32', () => {
  const k = 256;
  const x = Float32Array.from({ length: 2 * k }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 17)));
  const out = new Float32Array(x.length);
  assert.equal(ggmlRoundActivations(ggmlTypeByName('F32')!, x, 2, k, out), false);
  assert.ok(ggmlRoundActivations(ggmlTypeByName('Q4_K')!, x, 2, k, out));
  const q8k = ggmlCodec('Q8_K')!;
  const b = new Uint8Array(2 * 292);
  q8k.quantize!(x, 2, k, b);
  const ref = new Float32Array(x.length);
  q8k.dequantize(b, x.length, ref);
  assert.deepEqual(out, ref);
  assert.notDeepEqual(out, x);
  const again = new Float32Array(x.length);
  ggmlRoundActivations(ggmlTypeByName('Q4_K')!, out, 2, k, again);
  assert.deepEqual(again, out);
  assert.ok(ggmlRoundActivations(ggmlTypeByName('F16')!, x, 2, k, out));
  for (let i = 0; i < x.length; i++) assert.equal(out[i], f16Round(x[i])[0]);
});

// f16 rounding oracle through a DataView round trip (Node 20 has no Float16Array)
function f16Round(v: number): Float32Array {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0];
  // round-to-nearest-even to 10 mantissa bits in the normal range used here
  const lsb = (u >>> 13) & 1;
  const r = (u + 0xfff + lsb) & ~0x1fff;
  return new Float32Array(new Uint32Array([r >>> 0]).buffer);
}

test("'ggml' activations: F32 model unchanged; Q8_0 model moves further from the base", async () => {
  const m = await openModelFile(bytesSource(gguf, 'stories260K.gguf'));
  const sink = memorySink();
  await quantize(m, llamaRecipe('Q8_0'), sink);
  const q8 = sink.bytes();
  const toks = [1, 403, 407, 261, 378, 415, 287, 266, 383];
  const f32a = (await loadModel(bytesSource(gguf, 'a'))).model.forward(toks, 0, 0);
  const f32b = (await loadModel(bytesSource(gguf, 'b'), { activations: 'ggml' })).model.forward(toks, 0, 0);
  assert.deepEqual(f32a, f32b);
  const qa = (await loadModel(bytesSource(q8, 'q'))).model.forward(toks, 0, 0);
  const qb = (await loadModel(bytesSource(q8, 'q'), { activations: 'ggml' })).model.forward(toks, 0, 0);
  const err = (y: Float32Array) => y.reduce((s, v, i) => s + (v - f32a[i]) ** 2, 0);
  assert.ok(err(qb) > err(qa), `ggml-rounded activations should add error: ${err(qb)} vs ${err(qa)}`);
});
