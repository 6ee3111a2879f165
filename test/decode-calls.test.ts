// A decoded token's matmulInt and attention calls from their cached set-up (MatmulEngine.decodeInt: the job words
// matmulInt wrote for the same weight, input and output at the last token; attentionOne: attention()'s one-token
// job without its closure) against the calls themselves (decodeCache off), on 1 and 2 threads, bit for bit: a
// prompt, one-token forwards past the position where attention goes to the threads, a prefill between tokens
// (the rounding buffers grow and move), the threads changed between tokens. No timing is asserted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { useNodeThreads } from '../src/cli/threads.js';
import '../src/index.js';
import { MatmulEngine } from '../src/kernels/matmul.js';
import { Llama } from '../src/model/llama.js';
import type { LlamaConfig, StoredTensor } from '../src/model/types.js';
import { ggmlCodec } from '../src/quant/ggml/registry.js';
import { ggmlRowBytes, ggmlTypeByName } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

// big enough that q|k|v, gate|up, down and the output go to the threads (2 K N >= 2^20) and attention does from
// position 31 on (4 x 8 heads x 64 x positions >= 2^16); o (512 x 512) stays on the calling thread
const config: LlamaConfig = { dim: 512, hiddenDim: 1536, nLayers: 2, nHeads: 8, nKvHeads: 4, vocabSize: 1024, seqLen: 128, headDim: 64, normEps: 1e-5, ropeTheta: 10000, ropeDim: 64, ropeStyle: 'normal' };

function tensors(typeName: string): StoredTensor[] {
  const next = xorshift32(1234);
  const u = () => (next() + 0.5) / 2 ** 32;
  const f32 = ggmlTypeByName('F32')!;
  const type = ggmlTypeByName(typeName)!;
  const out: StoredTensor[] = [];
  const add = (name: string, dims: number[], std: number, quantize: boolean) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const v = Float32Array.from({ length: n }, () => (quantize ? std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) : 1 + (u() - 0.5) * std));
    if (!quantize) return out.push({ name, type: f32, dims, data: new Uint8Array(v.buffer) });
    const rb = ggmlRowBytes(type, dims[0]);
    const bytes = new Uint8Array(dims[1] * rb);
    ggmlCodec(type)!.quantize!(v, dims[1], dims[0], bytes);
    out.push({ name, type, dims, data: bytes });
  };
  const { dim, hiddenDim, vocabSize } = config;
  const qDim = config.nHeads * config.headDim;
  const kvDim = config.nKvHeads * config.headDim;
  add('token_embd.weight', [dim, vocabSize], 0.5, false);
  add('output_norm.weight', [dim], 0.2, false);
  add('output.weight', [dim, vocabSize], 0.05, true);
  for (let l = 0; l < config.nLayers; l++) {
    const p = `blk.${l}.`;
    add(`${p}attn_norm.weight`, [dim], 0.2, false);
    add(`${p}attn_q.weight`, [dim, qDim], 0.05, true);
    add(`${p}attn_k.weight`, [dim, kvDim], 0.05, true);
    add(`${p}attn_v.weight`, [dim, kvDim], 0.05, true);
    add(`${p}attn_output.weight`, [qDim, dim], 0.05, true);
    add(`${p}ffn_norm.weight`, [dim], 0.2, false);
    add(`${p}ffn_gate.weight`, [dim, hiddenDim], 0.05, true);
    add(`${p}ffn_up.weight`, [dim, hiddenDim], 0.05, true);
    add(`${p}ffn_down.weight`, [hiddenDim, dim], 0.05, true);
  }
  return out;
}

const ids = Array.from({ length: 80 }, (_, i) => 1 + ((i * 7919) % 1000));

/** logits of: a 5-token prompt, one-token forwards at 5..49, a 16-token prefill at 50, one-token forwards at 66..79 (threads 2 -> 1 -> 2 at 60 and 70) */
function run(e: MatmulEngine, ts: StoredTensor[], threads: number, switchThreads: boolean): Float32Array[] {
  e.setThreads(threads);
  const m = new Llama(config, ts, { activations: 'ggml', contextLength: 96 });
  m.prepareDecode();
  const out: Float32Array[] = [Float32Array.from(m.forward(ids.slice(0, 5), 0))];
  for (let p = 5; p < 50; p++) out.push(Float32Array.from(m.forward([ids[p]], p)));
  out.push(Float32Array.from(m.forward(ids.slice(50, 66), 50)));
  for (let p = 66; p < 80; p++) {
    if (switchThreads && (p === 70 || p === 74)) e.setThreads(p === 70 ? 1 : 2);
    out.push(Float32Array.from(m.forward([ids[p]], p)));
  }
  return out;
}

for (const type of ['Q4_0', 'Q8_0', 'Q4_K']) {
  test(`decoded tokens from cached calls (decodeInt, attentionOne) = matmulInt and attention themselves, bit for bit, 1 and 2 threads (${type})`, () => {
    useNodeThreads();
    const e = MatmulEngine.get();
    if (!e?.shared) return;
    const ts = tensors(type);
    const was = e.decodeCache;
    try {
      e.decodeCache = false;
      const before = { ...e.decodeRuns };
      const ref = run(e, ts, 1, false);
      assert.deepEqual(e.decodeRuns, before, 'decodeCache off: no cached call runs');
      for (const [threads, switchThreads] of [[1, false], [2, false], [2, true]] as const) {
        e.decodeCache = true;
        const r0: { int: number; attention: number } = { ...e.decodeRuns };
        const got = run(e, ts, threads, switchThreads);
        // 59 one-token forwards x (2 layers x 4 matmuls + output); each cached call but those right after a buffer
        // moved (the prefill, the attention scratch growing) or the threads changed; 59 x 2 attentions
        const ints = e.decodeRuns.int - r0.int;
        assert.ok(ints > 59 * 9 * 0.8 && ints <= 59 * 9, `${type}, ${threads} threads: ${ints} cached matmuls`);
        assert.equal(e.decodeRuns.attention - r0.attention, 59 * 2, `${type}, ${threads} threads: one-token attentions`);
        assert.equal(got.length, ref.length);
        for (let i = 0; i < ref.length; i++) assert.deepEqual(got[i], ref[i], `${type}, ${threads} threads${switchThreads ? ' (switched)' : ''}: forward ${i}`);
      }
    } finally {
      e.decodeCache = was;
      e.setThreads(1);
    }
  });
}
