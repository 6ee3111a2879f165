/**
 * Seeded synthetic llama-shaped F32 GGUF models (no tokenizer): for llama-quantize parity tests
 * (dimensions that are multiples of 256, so the k-quants do not fall back) and for the quantize
 * benchmark (~1B parameters). Written tensor by tensor through lowbit's GGUF writer, a slab at a time,
 * so a 4 GB file never sits in memory. Same options -> same bytes.
 *
 * Weights: approximately normal (Irwin-Hall of 4 uniforms), std 0.02, times a per-column scale drawn
 * from [0.25, 4) log-uniformly so columns differ in magnitude as real weights do; norms 1 +- 0.1.
 */
import { gguf, GgufWriter, type GgufValue } from '../src/io/gguf.js';
import { emptyImatrix, type Imatrix } from '../src/algos/imatrix.js';
import type { ByteSink } from '../src/io/sink.js';
import { ggmlTypeByName, type GgmlTypeInfo } from '../src/quant/ggml/types.js';
import { xorshift32 } from '../src/rng.js';

export interface SyntheticLlama {
  dim: number;
  hidden: number;
  layers: number;
  vocab: number;
  heads: number;
  kvHeads: number;
  seed: number;
  /** separate output.weight (default true) */
  untiedOutput?: boolean;
}

/** ggml order: ne[0] = row length */
export function syntheticTensors(o: SyntheticLlama): { name: string; ne: number[] }[] {
  const head = o.dim / o.heads;
  const kv = head * o.kvHeads;
  const t: { name: string; ne: number[] }[] = [{ name: 'token_embd.weight', ne: [o.dim, o.vocab] }, { name: 'output_norm.weight', ne: [o.dim] }];
  if (o.untiedOutput !== false) t.push({ name: 'output.weight', ne: [o.dim, o.vocab] });
  for (let l = 0; l < o.layers; l++) {
    const p = `blk.${l}.`;
    t.push(
      { name: `${p}attn_norm.weight`, ne: [o.dim] },
      { name: `${p}attn_q.weight`, ne: [o.dim, o.dim] },
      { name: `${p}attn_k.weight`, ne: [o.dim, kv] },
      { name: `${p}attn_v.weight`, ne: [o.dim, kv] },
      { name: `${p}attn_output.weight`, ne: [o.dim, o.dim] },
      { name: `${p}ffn_norm.weight`, ne: [o.dim] },
      { name: `${p}ffn_gate.weight`, ne: [o.dim, o.hidden] },
      { name: `${p}ffn_up.weight`, ne: [o.dim, o.hidden] },
      { name: `${p}ffn_down.weight`, ne: [o.hidden, o.dim] },
    );
  }
  return t;
}

export function syntheticMetadata(o: SyntheticLlama): [string, GgufValue][] {
  return [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str(`synthetic-${o.dim}x${o.layers}`)],
    ['llama.context_length', gguf.u32(2048)],
    ['llama.embedding_length', gguf.u32(o.dim)],
    ['llama.feed_forward_length', gguf.u32(o.hidden)],
    ['llama.block_count', gguf.u32(o.layers)],
    ['llama.attention.head_count', gguf.u32(o.heads)],
    ['llama.attention.head_count_kv', gguf.u32(o.kvHeads)],
    ['llama.rope.dimension_count', gguf.u32(o.dim / o.heads)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(1e-5)],
    ['general.file_type', gguf.u32(0)],
  ];
}

/** FNV-1a of a string, mixed with the seed: each tensor has its own stream (order-independent). */
function streamSeed(name: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0 || 1;
}

/** xorshift32 uniform in [0, 1) */
function rng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 4294967296;
}

/** Fill one tensor's values, rows [row0, row0 + out.length / rowLength). */
function fillRows(name: string, seed: number, ne: number[], row0: number, out: Float32Array, colScale: Float32Array | undefined): void {
  const rowLength = ne[0];
  if (ne.length === 1) {
    const r = rng(streamSeed(name, seed));
    for (let i = 0; i < out.length; i++) out[i] = 1 + 0.2 * (r() - 0.5);
    return;
  }
  for (let k = 0; k < out.length / rowLength; k++) {
    // one stream per row so slabs can start anywhere
    const r = rng(streamSeed(`${name}#${row0 + k}`, seed));
    const o = k * rowLength;
    for (let j = 0; j < rowLength; j++) {
      const n = (r() + r() + r() + r() - 2) * 1.7320508; // variance 4/12 -> 1
      out[o + j] = 0.02 * n * (colScale ? colScale[j] : 1);
    }
  }
}

function columnScales(name: string, seed: number, rowLength: number): Float32Array {
  const r = rng(streamSeed(`${name}#columns`, seed));
  return Float32Array.from({ length: rowLength }, () => Math.pow(2, 4 * r() - 2));
}

/** Write the model as F32 GGUF to `sink`. `slabElements` bounds the memory used (default 4 Mi floats). */
export async function writeSyntheticLlama(sink: ByteSink, o: SyntheticLlama, slabElements = 1 << 22): Promise<void> {
  const f32 = ggmlTypeByName('F32') as GgmlTypeInfo;
  const tensors = syntheticTensors(o);
  const w = new GgufWriter(sink, syntheticMetadata(o), tensors.map((t) => ({ name: t.name, ne: t.ne, type: f32 })));
  await w.begin();
  for (const t of tensors) {
    const rowLength = t.ne[0];
    const rows = t.ne.length > 1 ? t.ne[1] : 1;
    const colScale = t.ne.length > 1 ? columnScales(t.name, o.seed, rowLength) : undefined;
    const slabRows = Math.max(1, Math.floor(slabElements / rowLength));
    for (let r0 = 0; r0 < rows; r0 += slabRows) {
      const n = Math.min(slabRows, rows - r0);
      const buf = new Float32Array(n * rowLength);
      fillRows(t.name, o.seed, t.ne, r0, buf, colScale);
      await w.write(new Uint8Array(buf.buffer));
    }
  }
  await w.end();
}

/**
 * A seeded importance matrix for a synthetic model: every blk.* weight gets mean x^2 values
 * 2^(6u - 3) for u uniform in [0, 1) (three decades), over 1000 rows; like llama-imatrix's output it
 * has no entries for token_embd / output.
 */
export function syntheticImatrix(o: SyntheticLlama): Imatrix {
  const m = emptyImatrix(500, ['synthetic']);
  m.chunkCount = 2;
  for (const t of syntheticTensors(o)) {
    if (!t.name.startsWith('blk.') || t.ne.length < 2) continue;
    const r = rng(streamSeed(`${t.name}#imatrix`, o.seed));
    m.entries.set(t.name, { name: t.name, sums: Float64Array.from({ length: t.ne[0] }, () => Math.fround(1000 * Math.pow(2, 6 * r() - 3))), counts: new Float64Array([1000]) });
  }
  return m;
}
