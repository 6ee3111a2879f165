import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { generate } from '../src/eval/generate.js';
import { loadModel } from '../src/eval/load.js';
import { sqnrDb } from '../src/eval/metrics.js';
import { readLlama2c } from '../src/io/llama2c.js';
import { bytesSource } from '../src/io/source.js';
import { parseTokenizerBin } from '../src/io/vocab.js';
import { f32KvStorage, Llama, rmsnorm, type KvStorage } from '../src/model/llama.js';
import { matmulRef, setMatmul } from '../src/model/matmul.js';
import { Sampler } from '../src/model/sampler.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import type { LlamaConfig, StoredTensor } from '../src/model/types.js';
import { f32ToF16 } from '../src/formats/half.js';
import { ggmlTypeByName } from '../src/quant/ggml/types.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import '../src/index.js';

const data = (f: string) => new Uint8Array(readFileSync(new URL(`../../data/${f}`, import.meta.url)));

test('rmsnorm: rows normalized four at a time = the per-row formula bit for bit (also in place)', () => {
  let seed = 5;
  const u = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 4 - 2;
  for (const [nTok, size] of [[11, 37], [4, 768], [1, 5]]) {
    const x = Float32Array.from({ length: nTok * size }, u);
    const g = Float32Array.from({ length: size }, u);
    const want = new Float32Array(x.length);
    for (let t = 0; t < nTok; t++) {
      let ss = 0;
      for (let i = 0; i < size; i++) ss += x[t * size + i] * x[t * size + i];
      const c = 1 / Math.sqrt(ss / size + 1e-5);
      for (let i = 0; i < size; i++) want[t * size + i] = x[t * size + i] * c * g[i];
    }
    const out = new Float32Array(x.length);
    rmsnorm(out, x, g, nTok, size, 1e-5);
    assert.deepEqual(out, want, `${nTok} x ${size}`);
    const inPlace = Float32Array.from(x);
    rmsnorm(inPlace, inPlace, g, nTok, size, 1e-5);
    assert.deepEqual(inPlace, want, `${nTok} x ${size} in place`);
  }
});

/**
 * Greedy continuation of "Once upon a time" by stories260K with tok512, 252 new tokens: the known answer of
 * data/README.md, printed identically by llama.cpp's llama-completion --temp 0 and llama2.c's run.c -t 0.
 */
const GREEDY_252 =
  ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n' +
  'Lily\'s mom said, "Lily, let\'s go to the park." Lily was sad and didn\'t know what to do. She said, "I want to play with your ball, but I can\'t find it."\n' +
  'Lily was sad and didn\'t know what to do. She said, "I\'m sorry, Lily. I didn\'t know what to do."\n' +
  'Lily didn\'t want to help her mom, so she said, "I\'m sorry, mom. I didn\'t know what to do." Her mom said, "Don\'t worry, Lily. We can help you.';

const bin = await readLlama2c(bytesSource(data('stories260K.bin'), 'stories260K.bin'));
const tok = new Tokenizer(parseTokenizerBin(data('tok512.bin')));
const prompt = tok.encode('Once upon a time, there was a little girl named Lily. She loved to play');

function tokenByToken(m: Llama, ids: number[]): Float32Array {
  const n = m.config.vocabSize;
  const out = new Float32Array(ids.length * n);
  ids.forEach((id, p) => out.set(m.forward([id], p), p * n));
  return out;
}

test('greedy generation reproduces llama.cpp / llama2.c exactly (llama2.c checkpoint and GGUF)', async () => {
  const a = generate(new Llama(bin.config, bin.tensors), tok, 'Once upon a time', { steps: 252, temperature: 0 });
  assert.equal(a.tokens.length, 5 + 252);
  assert.equal(a.text, GREEDY_252);
  const g = await loadModel(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  assert.equal(g.format, 'gguf');
  const b = generate(g.model, g.tokenizer!, 'Once upon a time', { steps: 252, temperature: 0 });
  assert.deepEqual(b.tokens, a.tokens);
});

test('generate times its one-token forward passes, not the caller\'s onText (as llama-bench times llama_decode)', () => {
  const m = new Llama(bin.config, bin.tensors);
  let calls = 0;
  const forward = m.forward.bind(m);
  m.forward = (...a: Parameters<Llama['forward']>) => (calls++, forward(...a));
  let pieces = 0;
  const r = generate(m, tok, 'Once upon a time', {
    steps: 12,
    temperature: 0,
    onText: () => {
      pieces++;
      const until = performance.now() + 40; // a slow output: 40 ms per piece, none of it decoding
      while (performance.now() < until);
    },
  });
  assert.equal(r.tokens.length - r.promptTokens, 12);
  assert.equal(r.decodeSteps, 11); // the first token comes from the prompt's logits
  assert.equal(calls, 1 + 1 + 11); // the warm-up decode, the prompt, the passes
  assert.ok(pieces >= 5, `${pieces} pieces of text`);
  assert.ok(r.decodeSeconds < (pieces * 40) / 1000 / 2, `decodeSeconds ${r.decodeSeconds} counts the output's ${pieces * 40} ms`);
  assert.ok(r.decodeSeconds > 0);
});

test('generate runs one warm-up decode before its clock, as llama-bench does: one token at position 0, then the prompt; the same text', () => {
  const m = new Llama(bin.config, bin.tensors);
  const seen: string[] = [];
  const forward = m.forward.bind(m);
  let first = true;
  m.forward = (...a: Parameters<Llama['forward']>) => {
    seen.push(`${a[0].length}@${a[1]}`);
    if (first) {
      first = false;
      const until = performance.now() + 300; // a slow warm-up: none of it is the prompt's or the decode's time
      while (performance.now() < until);
    }
    return forward(...a);
  };
  const r = generate(m, tok, 'Once upon a time', { steps: 40, temperature: 0 });
  assert.deepEqual(seen.slice(0, 3), ['1@0', `${r.promptTokens}@0`, `1@${r.promptTokens}`]);
  assert.equal(seen.length, 2 + 39);
  assert.ok(r.promptSeconds + r.decodeSeconds < 0.3, `the warm-up was timed: prompt ${r.promptSeconds} s, decode ${r.decodeSeconds} s`);
  assert.equal(r.text, GREEDY_252.slice(0, r.text.length));
  assert.ok(r.text.length > 60);
  // one step decodes nothing: no warm-up; nor on a packed cache (its groups of positions keep state)
  const one: string[] = [];
  const m1 = new Llama(bin.config, bin.tensors);
  const f1 = m1.forward.bind(m1);
  m1.forward = (...a: Parameters<Llama['forward']>) => (one.push(`${a[0].length}@${a[1]}`), f1(...a));
  generate(m1, tok, 'Once upon a time', { steps: 1, temperature: 0 });
  assert.deepEqual(one, ['5@0']);
  const packed: string[] = [];
  const m2 = new Llama(bin.config, bin.tensors, { kvCache: { k: 'f16', v: 'f16' } });
  const f2 = m2.forward.bind(m2);
  m2.forward = (...a: Parameters<Llama['forward']>) => (packed.push(`${a[0].length}@${a[1]}`), f2(...a));
  generate(m2, tok, 'Once upon a time', { steps: 3, temperature: 0 });
  assert.deepEqual(packed, ['5@0', '1@5', '1@6']);
  // nor with hooks (they would observe a forward that is not the text's)
  const hooked: number[] = [];
  const m3 = new Llama(bin.config, bin.tensors);
  m3.hooks = { kvInput: (_l, pos, nTok) => void hooked.push(pos * 100 + nTok) };
  generate(m3, tok, 'Once upon a time', { steps: 3, temperature: 0 });
  assert.deepEqual([...new Set(hooked)], [5, 501, 601]);
});

test('reserveKv maps the positions generate will use and changes no value of the cache (kernel and f32 storage)', () => {
  for (const kernel of [true, false]) {
    const kv = kernel ? undefined : f32KvStorage(5, 64, 32);
    const m = new Llama(bin.config, bin.tensors, kv ? { kv } : {});
    m.forward(tok.encode('Once upon a time'), 0);
    const cap = m.kv.capacity;
    // odd bits in the positions written and in the ones not yet written: NaN payloads, -0, subnormals
    const odd = new Uint32Array([0x7fc01234, 0xffa00001, 0x80000000, 0x00000001, 0x3f800000]);
    for (let l = 0; l < 5; l++) {
      for (const a of [m.kv.keys(l, cap), m.kv.values(l, cap)]) {
        const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
        for (let i = 0; i < u.length; i += 37) u[i] = odd[i % odd.length];
      }
    }
    const before = [0, 1, 2, 3, 4].flatMap((l) => [m.kv.keys(l, cap).slice(), m.kv.values(l, cap).slice()]);
    m.reserveKv(cap + 100); // past the capacity: clamped
    m.reserveKv(3);
    const after = [0, 1, 2, 3, 4].flatMap((l) => [m.kv.keys(l, cap), m.kv.values(l, cap)]);
    for (let i = 0; i < before.length; i++) {
      assert.deepEqual(new Uint32Array(after[i].buffer, after[i].byteOffset, after[i].length), new Uint32Array(before[i].buffer), `kernel ${kernel}, array ${i}`);
    }
  }
  // generate reserves prompt + steps positions, and its text is the same as without
  const inner = f32KvStorage(5, 512, 32);
  const asked: number[] = [];
  const kv: KvStorage = { ...inner, reserve: (n) => (asked.push(n), inner.reserve!(n)) };
  const a = generate(new Llama(bin.config, bin.tensors, { kv }), tok, 'Once upon a time', { steps: 40, temperature: 0 });
  assert.deepEqual(asked, [a.promptTokens + 40]);
  assert.equal(a.text, GREEDY_252.slice(0, a.text.length));
  assert.ok(a.text.length > 60);
});

test('GGUF and llama2.c checkpoints give bit-identical logits; config from GGUF metadata', async () => {
  const g = await loadModel(bytesSource(data('stories260K.gguf'), 'stories260K.gguf'));
  const c = g.model.config;
  assert.deepEqual([c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.vocabSize, c.headDim, c.ropeDim, c.ropeStyle], [64, 172, 5, 8, 4, 512, 8, 8, 'normal']);
  const m = new Llama(bin.config, bin.tensors);
  assert.deepEqual(g.model.forward(prompt, 0, 0), m.forward(prompt, 0, 0));
});

test('batched prompt processing equals token-by-token decoding, for every batch size', () => {
  const ref = tokenByToken(new Llama(bin.config, bin.tensors), prompt);
  for (const batch of [1, 3, 7, 64]) {
    const m = new Llama(bin.config, bin.tensors, { batch });
    const all = m.forward(prompt, 0, 0);
    assert.ok(sqnrDb(ref, all) > 120, `batch ${batch}: ${sqnrDb(ref, all)} dB`);
    // continuing after a batched prefix
    const m2 = new Llama(bin.config, bin.tensors, { batch });
    m2.forward(prompt.slice(0, 9), 0);
    const rest = m2.forward(prompt.slice(9), 9, 0);
    assert.ok(sqnrDb(ref.subarray(9 * 512), rest) > 120);
  }
});

test('forward(..., reuse): the same logits as a fresh array, in one buffer the next call overwrites', () => {
  const m = new Llama(bin.config, bin.tensors);
  const fresh = Float32Array.from(m.forward(prompt, 0, 4));
  const a = m.forward(prompt, 0, 4, true);
  assert.deepEqual(a, fresh);
  const b = m.forward(prompt.slice(0, 12), 0, 2, true);
  assert.deepEqual(b, new Llama(bin.config, bin.tensors).forward(prompt.slice(0, 12), 0, 2));
  // one buffer: b is a's storage, so a now reads b's first rows
  assert.equal(a.buffer, b.buffer);
  assert.equal(a.byteOffset, b.byteOffset);
  assert.deepEqual(a.subarray(0, b.length), b);
  // without reuse every call returns a new array
  assert.notEqual(m.forward(prompt, 0, 4).buffer, m.forward(prompt, 0, 4).buffer);
});

/** the test model with its 2-D tensors whose rows are whole blocks of 32 (not the embedding) stored as `name` */
function quantizedAs(name: string, blockBytes: number): StoredTensor[] {
  const type = ggmlTypeByName(name)!;
  return bin.tensors.map((t): StoredTensor => {
    if (t.dims.length !== 2 || t.dims[0] % 32 !== 0 || t.name === 'token_embd.weight') return t;
    const x = new Float32Array(t.data.buffer, t.data.byteOffset, t.data.length / 4);
    const bytes = new Uint8Array((x.length / 32) * blockBytes);
    ggmlCodec(type)!.quantize!(x, t.dims[1], t.dims[0], bytes);
    return { ...t, type, data: bytes };
  });
}

test('the last layer leaves out the rows whose logits are not asked for (past their keys and values): the same logits bit for bit, F32, Q8_0 and Q4_0, kernels and TypeScript', () => {
  // Q8_0 / Q4_0 where rows are whole blocks (K = 64); down (K = 172) and the embedding stay F32
  const ids = Array.from({ length: 100 }, (_, i) => 1 + ((i * 7919) % 511));
  const P = MatmulEngine.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const attention = P.attention;
  for (const [label, tensors] of [['F32', bin.tensors], ['Q8_0', quantizedAs('Q8_0', 34)], ['Q4_0', quantizedAs('Q4_0', 18)]] as const) {
    for (const kernels of ['wasm', 'reference'] as const) {
      const opts = { batch: 64, activations: 'ggml' as const, kernels };
      const all = new Llama(bin.config, tensors, opts).forward(ids, 0, 0);
      const m = new Llama(bin.config, tensors, opts);
      // batches of 64 (100 tokens): the last layer's attention in each batch takes the queries of the rows
      // kept (a multiple of 16 left out, at least 16 kept): [from, batch 1 (count@position), batch 2]
      for (const [from, first, second] of [[40, '32@32', '36@64'], [70, '16@48', '36@64'], [90, '16@48', '20@80'], [99, '16@48', '20@80']] as const) {
        const calls: string[] = [];
        P.attention = function (this: unknown, ...a: unknown[]) {
          calls.push(`${a[1]}@${a[2]}`);
          return attention.apply(this, a);
        };
        let got: Float32Array;
        try {
          got = Float32Array.from(m.forward(ids, 0, from, true));
        } finally {
          P.attention = attention;
        }
        assert.deepEqual(got, all.subarray(from * 512), `${label} ${kernels}: logits from ${from}`);
        if (kernels === 'wasm') assert.deepEqual([calls.length, calls[4], calls[9]], [10, first, second], `${label}, from ${from}: ${calls.join(' ')}`);
      }
    }
  }
});

test('kvOneLayer (perplexity chunks from position 0 in one batch): a KV cache of one layer, the same logits bit for bit chunk after chunk; other positions fail', () => {
  const chunk = (c: number) => Array.from({ length: 48 }, (_, i) => 1 + ((c * 131 + i * 7919) % 511));
  const full = new Llama(bin.config, bin.tensors, { batch: 48, contextLength: 64, activations: 'ggml' });
  const one = new Llama(bin.config, bin.tensors, { batch: 48, contextLength: 64, activations: 'ggml', kvOneLayer: true });
  for (let c = 0; c < 3; c++) assert.deepEqual(Float32Array.from(one.forward(chunk(c), 0, 24, true)), full.forward(chunk(c), 0, 24), `chunk ${c}`);
  const kvDim = bin.config.nKvHeads * bin.config.headDim;
  const span = (m: Llama) => {
    const kv = m.kv as unknown as { keysAt(l: number): number; valuesAt(l: number): number; bytesPerToken: number };
    return [kv.valuesAt(0) - kv.keysAt(0), kv.bytesPerToken];
  };
  // the keys of one layer (64 positions, a little alignment) before the values; bytes per token as the whole model's cache
  const [oneSpan, oneBytes] = span(one);
  assert.ok(oneSpan >= 64 * kvDim * 4 && oneSpan < 2 * 64 * kvDim * 4, `one layer: ${oneSpan}`);
  assert.ok(span(full)[0] >= bin.config.nLayers * 64 * kvDim * 4);
  assert.equal(oneBytes, span(full)[1]);
  assert.throws(() => one.forward(chunk(0).slice(0, 4), 4), /one-layer KV cache/);
  assert.throws(() => one.forward(chunk(0).concat(chunk(1)).slice(0, 60), 0), /one-layer KV cache/);
});

function toF16(tensors: StoredTensor[]): StoredTensor[] {
  const f16 = ggmlTypeByName('F16')!;
  return tensors.map((t) => {
    if (t.dims.length !== 2) return t;
    const x = new Float32Array(t.data.buffer, t.data.byteOffset, t.data.length / 4);
    const h = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) h[i] = f32ToF16(x[i]);
    return { ...t, type: f16, data: new Uint8Array(h.buffer) };
  });
}

test('one-token decode with q|k|v and gate|up fused into one dispatch each (prepareDecode, activations ggml): the same logits bit for bit, F32, Q8_0 and Q4_0', () => {
  // Q8_0 / Q4_0 where rows are whole blocks (q, k, v, o, gate, up: K = 64); down (K = 172) and the embedding stay F32
  const ids = prompt.slice(0, 12);
  const P = MatmulEngine.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const [label, tensors] of [['F32', bin.tensors], ['Q8_0', quantizedAs('Q8_0', 34)], ['Q4_0', quantizedAs('Q4_0', 18)]] as const) {
    const ref = tokenByToken(new Llama(bin.config, tensors, { activations: 'ggml' }), ids);
    const m = new Llama(bin.config, tensors, { activations: 'ggml' });
    assert.ok(m.prepareDecode() > 0, label);
    // count the matmuls of one token: 5 layers x (q|k|v, o, gate|up, down) + output
    let calls = 0;
    // (decodeInt: a one-token matmulInt from its cached words, when it runs: true)
    const orig = { matmul: P.matmul, matmulInt: P.matmulInt, decodeInt: P.decodeInt };
    for (const k of ['matmul', 'matmulInt', 'decodeInt'] as const) {
      P[k] = function (this: unknown, ...a: unknown[]) {
        const r = orig[k].apply(this, a);
        if (k !== 'decodeInt' || r === true) calls++;
        return r;
      };
    }
    let got: Float32Array;
    try {
      got = tokenByToken(m, ids);
      calls = 0;
      m.forward([ids[0]], ids.length);
    } finally {
      P.matmul = orig.matmul;
      P.matmulInt = orig.matmulInt;
      P.decodeInt = orig.decodeInt;
    }
    // Q4_0's and Q8_0's relaxed copies have groups of 8 rows (decodeGroupRows): gate (172 rows) does not stack before up
    const gateUp = label !== 'F32' && MatmulEngine.get()!.variant === 'relaxed' ? 2 : 1;
    assert.equal(calls, 5 * (3 + gateUp) + 1, `${label}: one dispatch for q|k|v and ${gateUp} for gate|up per layer`);
    assert.deepEqual(got, ref, label);
  }
});

test('token embeddings from a table in kernel memory: the kernel dequantizer, bit for bit the TypeScript codecs (F16, Q8_0, Q4_0, Q5_1)', (t) => {
  const e = MatmulEngine.get();
  if (!e?.shared) return t.skip('no shared kernel memory');
  const emb = bin.tensors.find((x) => x.name === 'token_embd.weight')!;
  const [dim, vocab] = emb.dims;
  const x = new Float32Array(emb.data.buffer, emb.data.byteOffset, dim * vocab);
  const ids = [0, 1, 7, 100, 255, vocab - 1];
  const P = MatmulEngine.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const name of ['F16', 'Q8_0', 'Q4_0', 'Q5_1']) {
    const type = ggmlTypeByName(name)!;
    let bytes: Uint8Array;
    if (name === 'F16') {
      const h = new Uint16Array(x.length);
      for (let i = 0; i < x.length; i++) h[i] = f32ToF16(x[i]);
      bytes = new Uint8Array(h.buffer);
    } else {
      bytes = new Uint8Array((x.length / 32) * ({ Q8_0: 34, Q4_0: 18, Q5_1: 24 } as Record<string, number>)[name]);
      ggmlCodec(type)!.quantize!(x, vocab, dim, bytes);
    }
    const inKernel = e.allocBytes(bytes.length)!;
    inKernel.set(bytes);
    const withTable = (data: Uint8Array) => bin.tensors.map((t2): StoredTensor => (t2 === emb ? { ...t2, type, data } : t2));
    const ref = new Float32Array(ids.length * dim);
    new Llama(bin.config, withTable(bytes)).embed(ids, ref);
    const out: Float32Array = e.allocF32(ids.length * dim, ref)!.array;
    let used = 0;
    const orig = P.dequantizeInto;
    P.dequantizeInto = function (this: unknown, ...a: unknown[]) {
      const r = orig.apply(this, a);
      if (r) used++;
      return r;
    };
    try {
      new Llama(bin.config, withTable(inKernel)).embed(ids, out);
    } finally {
      P.dequantizeInto = orig;
    }
    assert.equal(used, ids.length, `${name}: each row by the kernel`);
    assert.deepEqual(out, ref, name);
  }
});

test('weights stay in their stored type: F16 on the fly equals F16 dequantized once, and is close to F32', () => {
  const t16 = toF16(bin.tensors);
  const onTheFly = new Llama(bin.config, t16);
  assert.equal(onTheFly.weights.layers[0].wq.f32, undefined);
  assert.equal(onTheFly.weights.layers[0].wq.type.name, 'F16');
  const once = new Llama(bin.config, t16, { dequantize: true });
  assert.ok(once.weights.layers[0].wq.f32);
  const a = onTheFly.forward(prompt, 0, 0);
  const b = once.forward(prompt, 0, 0);
  assert.deepEqual(a, b);
  const f32 = new Llama(bin.config, bin.tensors).forward(prompt, 0, 0);
  const s = sqnrDb(f32, a);
  assert.ok(s > 40 && s < 120, `F16 vs F32 logits: ${s} dB`);
});

test('an unregistered block type fails clearly', () => {
  // a block type that no codec knows (every real GGML type has one registered once src/index.js is loaded)
  const q4 = ggmlTypeByName('Q4_0')!;
  const fake = Object.freeze({ ...q4, id: 9999, name: 'Q9_FAKE' });
  const t = bin.tensors.map((x) => (x.name === 'blk.0.attn_q.weight' ? { ...x, type: fake, data: new Uint8Array((64 * 64 / 32) * 18) } : x));
  assert.throws(() => new Llama(bin.config, t).forward([1], 0), /no dequantizer for GGML type Q9_FAKE/);
});

test('NeoX RoPE on half-split heads equals normal RoPE on interleaved heads', () => {
  // permute each head's rows of Wq and Wk from (0,1),(2,3).. pairs to (0,h/2),(1,h/2+1)..: q.k is unchanged
  const hd = bin.config.headDim;
  const perm = Array.from({ length: hd }, (_, i) => (i < hd / 2 ? 2 * i : 2 * (i - hd / 2) + 1));
  const permuted = bin.tensors.map((t) => {
    if (!/attn_[qk]\.weight$/.test(t.name)) return t;
    const [k, n] = t.dims;
    const src = new Float32Array(t.data.buffer, t.data.byteOffset, k * n);
    const dst = new Float32Array(k * n);
    for (let row = 0; row < n; row++) {
      const head = Math.floor(row / hd);
      const srcRow = head * hd + perm[row % hd];
      dst.set(src.subarray(srcRow * k, (srcRow + 1) * k), row * k);
    }
    return { ...t, data: new Uint8Array(dst.buffer) };
  });
  const neox: LlamaConfig = { ...bin.config, ropeStyle: 'neox' };
  const a = new Llama(bin.config, bin.tensors).forward(prompt, 0, 0);
  const b = new Llama(neox, permuted).forward(prompt, 0, 0);
  assert.ok(sqnrDb(a, b) > 120, `${sqnrDb(a, b)} dB`);
  const wrong = new Llama(neox, bin.tensors).forward(prompt, 0, 0);
  assert.ok(sqnrDb(a, wrong) < 60, 'the RoPE layout must matter');
});

test('hooks see the input of every linear layer; the matmul and the KV storage are pluggable', () => {
  const m = new Llama(bin.config, bin.tensors);
  const seen = new Map<string, number>();
  let firstQ: Float32Array | undefined;
  m.hooks.linearInput = (name, x, nTok, k) => {
    assert.equal(x.length, nTok * k);
    seen.set(name, (seen.get(name) ?? 0) + nTok);
    if (name === 'blk.0.attn_q.weight' && !firstQ) firstQ = x.slice(0, k);
  };
  m.forward(prompt, 0);
  assert.equal(seen.size, 5 * 7 + 1);
  assert.equal(seen.get('blk.4.ffn_down.weight'), prompt.length);
  assert.equal(seen.get('token_embd.weight'), 1); // tied classifier, last token only
  // input of attn_q at token 0 = rmsnorm(embedding row of BOS) * attn_norm
  const emb = new Float32Array(bin.tensors[0].data.buffer, bin.tensors[0].data.byteOffset + prompt[0] * 64 * 4, 64);
  const nw = new Float32Array(bin.tensors.find((t) => t.name === 'blk.0.attn_norm.weight')!.data.slice().buffer);
  const rms = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / 64 + 1e-5);
  const expect = Float32Array.from(emb, (v, i) => (v / rms) * nw[i]);
  assert.ok(sqnrDb(expect, firstQ!) > 120);

  let calls = 0;
  const prev = setMatmul((out, x, w, nTok, k, n) => {
    calls++;
    matmulRef(out, x, w, nTok, k, n);
  });
  try {
    const plain = new Llama(bin.config, bin.tensors).forward(prompt, 0, 0);
    assert.equal(calls, 5 * 7 + 1);
    let stores = 0;
    const inner = f32KvStorage(5, 64, 32);
    const kv: KvStorage = { ...inner, store: (...args) => (stores++, inner.store(...args)) };
    const custom = new Llama(bin.config, bin.tensors, { kv }).forward(prompt, 0, 0);
    assert.equal(stores, 5 * prompt.length);
    assert.deepEqual(custom, plain);
  } finally {
    setMatmul(prev);
  }
  assert.throws(() => new Llama(bin.config, bin.tensors, { contextLength: 8 }).forward(prompt, 0), /do not fit the context/);
  assert.throws(() => new Llama(bin.config, bin.tensors).forward([512], 0), /outside the 512-token vocabulary/);
});

test('sampling: deterministic per seed, greedy at temperature 0, top-p keeps the nucleus', () => {
  const logits = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i) * 4);
  const run = (seed: number, topP: number) => {
    const s = new Sampler(512, 1, topP, seed);
    return Array.from({ length: 50 }, () => s.sample(logits));
  };
  assert.deepEqual(run(42, 0.9), run(42, 0.9));
  assert.notDeepEqual(run(42, 0.9), run(43, 0.9));
  assert.equal(new Sampler(512, 0, 0.9, 1).sample(logits), logits.indexOf(Math.max(...logits)));
  // the top token has p ~ 0.0094 here: with top-p 0.005 only it survives
  assert.ok(run(7, 0.005).every((t) => t === logits.indexOf(Math.max(...logits))));
  const m = new Llama(bin.config, bin.tensors);
  const a = generate(m, tok, 'Once upon a time', { steps: 40, temperature: 1, topP: 0.9, seed: 133742 });
  const b = generate(new Llama(bin.config, bin.tensors), tok, 'Once upon a time', { steps: 40, temperature: 1, topP: 0.9, seed: 133742 });
  assert.equal(a.text, b.text);
});

test('lazyEmbedding: token_embd rows are read from the source when a token first uses them; the same logits bit for bit', async () => {
  const bytes = data('stories260K.gguf');
  const eager = await loadModel(bytesSource(bytes, 'stories260K.gguf'), { contextLength: 64 });
  assert.equal(eager.model.weights.tokenEmbedding.fill, undefined);
  // a source that counts its synchronous reads
  const base = bytesSource(bytes, 'stories260K.gguf');
  let reads = 0;
  let readBytes = 0;
  const counting = {
    ...base,
    read: base.read.bind(base),
    readInto: base.readInto!.bind(base),
    readIntoSync(offset: number, dest: Uint8Array) {
      reads++;
      readBytes += dest.length;
      base.readIntoSync!(offset, dest);
    },
  };
  const lazy = await loadModel(counting, { contextLength: 64, lazyEmbedding: true });
  const e = lazy.model.weights.tokenEmbedding;
  assert.ok(e.fill && e.loaded, 'token_embd is loaded by rows');
  assert.equal(reads, 0, 'nothing read at load');
  const tokens = [1, 403, 407, 403, 29, 1, 500, 407];
  const distinct = new Set(tokens).size;
  const a = Float32Array.from(eager.model.forward(tokens, 0));
  const b = Float32Array.from(lazy.model.forward(tokens, 0));
  assert.deepEqual(b, a);
  assert.equal(reads, distinct, 'one read per distinct token');
  assert.equal(readBytes, distinct * e.rowBytes);
  assert.equal(e.loaded!.reduce((s, v) => s + v, 0), distinct);
  // decode: a new token is read once, a known one not again
  assert.deepEqual(Float32Array.from(lazy.model.forward([403], tokens.length)), Float32Array.from(eager.model.forward([403], tokens.length)));
  assert.deepEqual(Float32Array.from(lazy.model.forward([77], tokens.length + 1)), Float32Array.from(eager.model.forward([77], tokens.length + 1)));
  assert.equal(reads, distinct + 1);
  // without synchronous reads the table is read at load
  const asyncOnly = { size: base.size, name: base.name, read: base.read.bind(base), readInto: base.readInto!.bind(base) };
  const whole = await loadModel(asyncOnly, { contextLength: 64, lazyEmbedding: true });
  assert.equal(whole.model.weights.tokenEmbedding.fill, undefined);
  assert.deepEqual(Float32Array.from(whole.model.forward(tokens, 0)), a);
});
